//! Scale-out end to end: `run --shard I/N` on one machine, `merge`, and
//! the same through a real one-node Slurm cluster (Debian's slurm-wlm,
//! started and stopped by `scripts/slurm-local`) running the job array that
//! `scale-out slurm` writes. The Kubernetes manifests are checked
//! structurally (no cluster here).

use integration_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Three engines (one that fails its cells), two models, two scenarios:
/// 3 x 2 x (2 + 1) = 18 cells.
const MATRIX: &str = "\
name: shards
models:
  - {name: a, weights: synthetic, config: tiny, seed: 0}
  - {name: b, weights: synthetic, config: tiny, seed: 1}
engines:
  - {name: quick, plugin: fault, options: {step_ms: 1}}
  - {name: slow, plugin: fault, options: {step_ms: 3}}
  - {name: broken, plugin: fault, options: {fault: panic, at: decode, after_steps: 2}}
baseline: quick
scenarios:
  - name: lat
    kind: latency
    warmup: 0
    iterations: 2
    input_tokens: 4
    output_tokens: 6
    axes: {batch_size: [1, 2]}
  - name: conc
    kind: concurrency
    concurrency: 2
    requests: 4
    input_tokens: 4
    output_tokens: 4
";

/// What must match between a merged run and one machine's: per cell id,
/// status, requests, completed requests and output tokens.
fn outline(run_dir: &Path) -> BTreeMap<String, (String, Value, Value)> {
    summary_cells(run_dir)
        .into_iter()
        .map(|c| {
            let m = &c["metrics"];
            (
                c["cell"]["id"].as_str().unwrap().to_string(),
                (
                    c["status"].as_str().unwrap().to_string(),
                    m["requests"].clone(),
                    m["output_tokens"].clone(),
                ),
            )
        })
        .collect()
}

fn write_matrix(dir: &Path) -> PathBuf {
    let m = dir.join("m.yaml");
    std::fs::write(&m, MATRIX).unwrap();
    m
}

fn shard(m: &Path, i: u32, n: u32, out: &Path, plugins: &Path, extra: &[&str]) {
    let spec = format!("{i}/{n}");
    let mut args = vec![
        "run",
        m.to_str().unwrap(),
        "--shard",
        &spec,
        "--out",
        out.to_str().unwrap(),
        "--no-calibrate",
    ];
    args.extend_from_slice(extra);
    let o = run(&args, plugins);
    finished_status(&o);
}

/// The whole matrix on this machine, unsharded, into `out`.
fn single_run(m: &Path, out: &Path, plugins: &Path) -> std::process::Output {
    run(
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-calibrate",
        ],
        plugins,
    )
}

fn merge(dirs: &[PathBuf], out: &Path, extra: &[&str], plugins: &Path) -> std::process::Output {
    let mut args: Vec<String> = vec!["merge".into()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args, plugins)
}

#[test]
fn shards_merge_into_the_single_machine_run_and_bad_sets_are_refused() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("shards");
    let m = write_matrix(tmp.path());
    let single = tmp.path().join("single");
    let o = single_run(&m, &single, plugins.path());
    assert_eq!(finished_status(&o), 5, "the broken engine's cells fail");
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("s{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        shard(&m, i as u32, 3, d, plugins.path(), &[]);
    }
    // A share each, the same on every call, together the whole plan.
    let sizes: Vec<usize> = dirs.iter().map(|d| summary_cells(d).len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 18, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    let mark = read_json(&dirs[0].join("summary.json"))["shard"].clone();
    assert_eq!(
        (mark["index"].as_u64(), mark["count"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(mark["plan_cells"], 18);

    let merged = tmp.path().join("merged");
    let o = merge(&dirs, &merged, &[], plugins.path());
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert_eq!(outline(&merged), outline(&single));
    let s = read_json(&merged.join("summary.json"));
    assert_eq!(s["complete"], true);
    assert_eq!(s["merged"].as_array().unwrap().len(), 3);
    assert!(s["merged"][2]["system"]["cpu_model"].is_string());
    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(
        md.contains("## Machines") && md.contains("one class"),
        "{md}"
    );
    // Speedups against the baseline within the merged run, as in one
    // machine's (the classes are the same).
    assert!(md.contains("| baseline |"), "{md}");

    // Refusals, each naming the shard.
    let cases: Vec<(Vec<PathBuf>, &str)> = vec![
        (dirs[..2].to_vec(), "shard 2 of 3 missing"),
        (
            vec![
                dirs[0].clone(),
                dirs[0].clone(),
                dirs[1].clone(),
                dirs[2].clone(),
            ],
            "shard 0 is given twice",
        ),
        (vec![single.clone()], "not a shard"),
    ];
    for (i, (set, want)) in cases.into_iter().enumerate() {
        let o = merge(
            &set,
            &tmp.path().join(format!("bad{i}")),
            &[],
            plugins.path(),
        );
        assert_eq!(o.status.code(), Some(2), "{want}");
        assert!(
            text(&o.stderr).contains(want),
            "want {want:?}: {}",
            text(&o.stderr)
        );
    }
    // A shard of another plan (one more iteration) is refused.
    let other = tmp.path().join("other.yaml");
    std::fs::write(&other, MATRIX.replace("iterations: 2", "iterations: 3")).unwrap();
    let foreign = tmp.path().join("foreign");
    shard(&other, 2, 3, &foreign, plugins.path(), &[]);
    let o = merge(
        &[dirs[0].clone(), dirs[1].clone(), foreign.clone()],
        &tmp.path().join("bad-plan"),
        &[],
        plugins.path(),
    );
    assert!(
        text(&o.stderr).contains("of another plan"),
        "{}",
        text(&o.stderr)
    );
    // --partial merges what is there and says what is missing.
    let partial = tmp.path().join("partial");
    let o = merge(&dirs[..2], &partial, &["--partial"], plugins.path());
    assert!(
        matches!(o.status.code(), Some(0 | 5)),
        "{}",
        text(&o.stderr)
    );
    let s = read_json(&partial.join("summary.json"));
    assert_eq!(s["complete"], false);
    assert!(
        s["stopped"].as_str().unwrap().contains("without shard 2"),
        "{}",
        s["stopped"]
    );
    assert_eq!(summary_cells(&partial).len(), sizes[0] + sizes[1],);
}

/// Shards of different kinds of machine: every engine is labelled with
/// its class, and no speedup is computed across classes.
#[test]
fn shards_on_different_machines_are_never_compared() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("shards-machines");
    let m = write_matrix(tmp.path());
    // Four shards, two on each kind of machine: an engine-model pair
    // each, so that some engines meet the baseline on their machine and
    // some only on the other.
    let dirs: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("s{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        let class = if i < 2 { "box-one" } else { "box-two" };
        shard(
            &m,
            i as u32,
            4,
            d,
            plugins.path(),
            &["--machine-class", class],
        );
    }
    let merged = tmp.path().join("merged");
    let o = merge(&dirs, &merged, &[], plugins.path());
    assert!(
        matches!(o.status.code(), Some(0 | 5)),
        "{}",
        text(&o.stderr)
    );
    let cells = summary_cells(&merged);
    assert_eq!(cells.len(), 18);
    let engines: std::collections::BTreeSet<String> = cells
        .iter()
        .map(|c| c["cell"]["engine"].as_str().unwrap().to_string())
        .collect();
    assert!(
        engines
            .iter()
            .all(|e| e.ends_with(" @ A") || e.ends_with(" @ B")),
        "{engines:?}"
    );
    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(
        md.contains("2 kinds of machine") && md.contains("box-two"),
        "{md}"
    );
    // A speedup needs the baseline (quick) on the same class and model:
    // rows without one show none, rows with one show it.
    let mut without = 0;
    let mut with = 0;
    for c in &cells {
        let e = c["cell"]["engine"].as_str().unwrap();
        let model = c["cell"]["model"].as_str().unwrap();
        if e.starts_with("quick") || c["status"] != "ok" {
            continue;
        }
        let class = e.rsplit(" @ ").next().unwrap();
        let base = format!("quick @ {class}");
        let has_base = cells
            .iter()
            .any(|b| b["cell"]["engine"] == base.as_str() && b["cell"]["model"] == model);
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with(&format!("| {model} | {e} |")))
            .collect();
        assert!(!rows.is_empty(), "no row for {model} {e}");
        for row in rows {
            let speedup = row
                .trim_end()
                .trim_end_matches('|')
                .rsplit('|')
                .next()
                .unwrap()
                .trim();
            if has_base {
                with += 1;
                assert!(speedup != "—" && speedup.contains('x'), "no speedup: {row}");
            } else {
                without += 1;
                assert_eq!(speedup, "—", "a speedup across machines: {row}");
            }
        }
    }
    assert!(with > 0 && without > 0, "{with} rows with a baseline, {without} without: the partition changed, the test proves less");
}

#[test]
fn kubernetes_manifests_have_the_right_indexes_and_counts() {
    let tmp = TempDir::new("k8s");
    let m = write_matrix(tmp.path());
    let files = tmp.path().join("job");
    let o = k8s(
        &m,
        "/results/shards",
        &files,
        &["--shards", "4", "--gpus", "1", "--", "--quick"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let job = read_json(&files.join("job.json"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(
        (spec["completions"].as_u64(), spec["parallelism"].as_u64()),
        (Some(4), Some(4))
    );
    let c = &spec["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/em:1");
    assert_eq!(
        c["env"][0],
        serde_json::json!({"name": "ENGINE_MATRIX_SHARDS", "value": "4"})
    );
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    let cmd = c["command"][2].as_str().unwrap();
    assert!(
        cmd.contains(" run ")
            && cmd.contains("--shard auto")
            && cmd.contains("/results/shards/shard-\"$JOB_COMPLETION_INDEX\"")
            && cmd.ends_with(" --quick"),
        "{cmd}"
    );
    assert_eq!(
        spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "bench-results"
    );
    let merge = read_json(&files.join("merge-job.json"));
    let mcmd = merge["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..4 {
        assert!(
            mcmd.contains(&format!("/results/shards/shard-{i} ")),
            "{mcmd}"
        );
    }
    assert!(
        !mcmd.contains("shard-4") && mcmd.ends_with("--out /results/shards/merged"),
        "{mcmd}"
    );
    let submit = std::fs::read_to_string(files.join("submit.sh")).unwrap();
    assert!(
        submit.contains("kubectl apply -f") && submit.contains("wait --for=condition=complete")
    );
    // Load generators: the same Job runs `--load-shard auto` into gen-I,
    // and submit.sh writes the shared start into it as it applies it (run
    // here with a stand-in `kubectl` that keeps what it is given: there is
    // no cluster on this machine).
    let gen_files = tmp.path().join("k8s-gen");
    let o = k8s(
        &m,
        "/results/load",
        &gen_files,
        &["--shards", "3", "--load-shard", "--lead-s", "60"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let applied = tmp.path().join("applied");
    std::fs::write(
        bin.join("kubectl"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {0}.args\nif [ \"$*\" = \"apply -f -\" ]; then cat > {0}.json; fi\n",
            applied.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("kubectl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new(gen_files.join("submit.sh"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let job = read_json(&applied.with_extension("json"));
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let cmd = c["command"][2].as_str().unwrap();
    assert!(
        cmd.contains("--load-shard auto --start-at \"$ENGINE_MATRIX_START_AT\"")
            && cmd.contains("/results/load/gen-\"$JOB_COMPLETION_INDEX\""),
        "{cmd}"
    );
    let start = c["env"][1]["value"].as_str().unwrap();
    assert_eq!(c["env"][1]["name"], "ENGINE_MATRIX_START_AT");
    let at: u64 = start.strip_prefix('@').unwrap().parse().unwrap();
    assert!((now + 59..now + 65).contains(&at), "{start} (now {now})");
    let args = std::fs::read_to_string(applied.with_extension("args")).unwrap();
    assert!(args.contains("merge-job.json"), "{args}");
    let merge = std::fs::read_to_string(gen_files.join("merge-job.json")).unwrap();
    assert!(merge.contains("/results/load/gen-2 "), "{merge}");
    // The results must be on the claim.
    let o = k8s(&m, "/elsewhere", &files, &["--shards", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("not under the claim's mount point"),
        "{}",
        text(&o.stderr)
    );
}

/// `scale-out k8s MATRIX --out OUT` with the claim `bench-results` mounted
/// at `/results`, files into `files`, then `extra`.
fn k8s(m: &Path, out: &str, files: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "k8s",
        m.to_str().unwrap(),
        "--out",
        out,
        "--mount",
        "/results",
        "--claim",
        "bench-results",
        "--image",
        "registry.example/em:1",
        "--files",
        files.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    scale_out(&args)
}

/// `engine-matrix scale-out ARGS` (no plugins: it runs nothing).
fn scale_out(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("scale-out")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .current_dir(workspace_root())
        .output()
        .expect("run engine-matrix scale-out")
}

/// The one-node cluster, stopped on drop.
struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
}

impl Slurm {
    fn up(dir: &Path) -> Slurm {
        let o = Command::new(workspace_root().join("scripts/slurm-local"))
            .args(["up", dir.to_str().unwrap()])
            .output()
            .expect("run scripts/slurm-local");
        assert!(
            o.status.success(),
            "scripts/slurm-local up failed (run scripts/provision for slurm-wlm and munge):\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        Slurm {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("scripts/slurm-local"))
            .args(["down", self.dir.to_str().unwrap()])
            .output();
    }
}

/// Waits for `merged/report.md` (the merge job writes it last but the
/// summary), failing with the jobs' logs when every job has ended without
/// it.
fn wait_for_merge(slurm: &Slurm, out: &Path) {
    let merged = out.join("merged");
    let t0 = Instant::now();
    let queued = || {
        let q = Command::new("squeue")
            .arg("-h")
            .env("SLURM_CONF", &slurm.conf)
            .output()
            .expect("run squeue");
        !text(&q.stdout).trim().is_empty()
    };
    let mut idle_checks = 0;
    while !merged.join("report.md").is_file() {
        idle_checks = if queued() { 0 } else { idle_checks + 1 };
        if idle_checks > 10 || t0.elapsed() > Duration::from_secs(600) {
            let logs: String = std::fs::read_dir(out.join("logs"))
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            format!(
                                "{}:\n{}\n",
                                e.path().display(),
                                std::fs::read_to_string(e.path()).unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let q = Command::new("squeue")
                .env("SLURM_CONF", &slurm.conf)
                .output()
                .unwrap();
            panic!(
                "no merged run after {:.0} s; squeue:\n{}\n{logs}",
                t0.elapsed().as_secs_f64(),
                text(&q.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(500));
}

/// `scale-out slurm MATRIX EXTRA... --cpus 1 --out OUT` for the one-node
/// cluster, its runs uncalibrated with `plugins`.
fn slurm_job(m: &Path, out: &Path, plugins: &Path, extra: &[&str]) {
    let mut args = vec!["slurm", m.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend([
        "--cpus",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--",
        "--no-calibrate",
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    let o = scale_out(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

/// Runs a generated `submit.sh` against the cluster.
fn submit(slurm: &Slurm, out: &Path) {
    let submitted = Command::new(out.join("submit.sh"))
        .env("SLURM_CONF", &slurm.conf)
        .env("ENGINE_MATRIX_CACHE", cache_dir())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "{}{}",
        text(&submitted.stdout),
        text(&submitted.stderr)
    );
}

#[test]
fn a_real_slurm_runs_the_generated_array_and_merges_it() {
    let plugins = plugin_dir(&["fault", "http"]);
    let tmp = TempDir::new("slurm");
    let m = write_matrix(tmp.path());
    let slurm = Slurm::up(&tmp.path().join("cluster"));
    let out = tmp.path().join("results");
    slurm_job(&m, &out, plugins.path(), &["--shards", "3"]);
    let sbatch = std::fs::read_to_string(out.join("run.sbatch")).unwrap();
    assert!(
        sbatch.contains("#SBATCH --array=0-2") && sbatch.contains("--shard auto"),
        "{sbatch}"
    );
    submit(&slurm, &out);
    let merged = out.join("merged");
    wait_for_merge(&slurm, &out);
    // Each shard ran as its own array task.
    for i in 0..3 {
        let log =
            std::fs::read_to_string(out.join(format!("logs/shard-{i}.log"))).unwrap_or_default();
        assert!(log.contains("cells:"), "shard {i}'s log: {log}");
        let mark = read_json(&out.join(format!("shard-{i}/summary.json")))["shard"].clone();
        assert_eq!(mark["index"], i);
    }
    let single = tmp.path().join("single");
    let o = single_run(&m, &single, plugins.path());
    finished_status(&o);
    assert_eq!(outline(&merged), outline(&single));
    assert_eq!(read_json(&merged.join("summary.json"))["complete"], true);

    // Load generators as an array (2: the node has 2 CPUs, and generators
    // must run at once) against one `serve`, meeting 10 s after submission.
    let server = Server::start(&["--inject-first-token-ms", "50", "--inject-token-ms", "10"]);
    let m = tmp.path().join("serving.yaml");
    std::fs::write(
        &m,
        format!(
            "name: generators\nmodels: [{{name: tiny, weights: synthetic, config: tiny}}]\n\
             engines: [{{name: served, plugin: http, options: {{base_url: \"http://127.0.0.1:{}\", model: tiny}}}}]\n\
             scenarios: [{{name: open, kind: serving, warmup: 1, input_tokens: 8, output_tokens: 4, arrival: constant, request_rate: 10, duration_s: 2}}]\n",
            server.port
        ),
    )
    .unwrap();
    let out = tmp.path().join("load");
    slurm_job(
        &m,
        &out,
        plugins.path(),
        &["--shards", "2", "--load-shard", "--lead-s", "10"],
    );
    let sbatch = std::fs::read_to_string(out.join("run.sbatch")).unwrap();
    assert!(
        sbatch.contains("--load-shard auto --start-at \"$ENGINE_MATRIX_START_AT\""),
        "{sbatch}"
    );
    submit(&slurm, &out);
    wait_for_merge(&slurm, &out);
    for i in 0..2 {
        let mark = read_json(&out.join(format!("gen-{i}/summary.json")))["load_shard"].clone();
        assert_eq!(
            (mark["index"].as_u64(), mark["count"].as_u64()),
            (Some(i), Some(2))
        );
    }
    let c = &summary_cells(&out.join("merged"))[0];
    assert_eq!(c["status"], "ok", "{c}");
    let s = &c["metrics"]["serving"];
    assert_eq!(
        (s["scheduled"].as_u64(), s["completed"].as_u64()),
        (Some(20), Some(20)),
        "{s}"
    );
    let gens = s["generators"]["generators"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    for g in gens {
        assert_eq!(g["sent"], 10, "{g}");
        assert_eq!(g["saturated"], false, "{g}");
    }
    drop(slurm);
}

/// Distributed load generation: one schedule of 60 requests (15 per
/// second for 4 s, evenly spaced) against `serve` with a known timing
/// (first token 100 ms after the request, then one every 20 ms: 6 tokens
/// in 200 ms). Each generator's client allows 2 connections, so one
/// generator completes at most 10 requests a second: alone it cannot
/// sustain 15, and its lag grows. Three generators on loopback, meeting at
/// a shared start, each send every third arrival; merged, the cell holds
/// exactly the schedule's 60 requests at its rate, with the injected
/// latency from the scheduled times, and no generator saturated.
#[test]
fn three_load_generators_send_the_schedule_one_cannot() {
    let plugins = plugin_dir(&["http"]);
    let tmp = TempDir::new("load-shard");
    let server = Server::start(&["--inject-first-token-ms", "100", "--inject-token-ms", "20"]);
    let matrix = format!(
        "\
name: generators
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - name: served
    plugin: http
    options: {{base_url: \"http://127.0.0.1:{}\", model: tiny, max_connections: 2}}
scenarios:
  - name: open
    kind: serving
    warmup: 1
    iterations: 1
    input_tokens: 8
    output_tokens: 6
    arrival: constant
    request_rate: 15
    duration_s: 4
",
        server.port
    );
    let m = tmp.path().join("m.yaml");
    std::fs::write(&m, &matrix).unwrap();
    // Starts far enough ahead for every generator to be loaded and warm.
    let start_at = |lead_s: u64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!("@{}", now + lead_s)
    };
    let generate = |i: u32, n: u32, start: &str, out: &Path| {
        let spec = format!("{i}/{n}");
        run(
            &[
                "run",
                m.to_str().unwrap(),
                "--load-shard",
                &spec,
                "--start-at",
                start,
                "--out",
                out.to_str().unwrap(),
                "--no-calibrate",
            ],
            plugins.path(),
        )
    };
    let cell_of = |dir: &Path| {
        let cells = summary_cells(dir);
        assert_eq!(cells.len(), 1, "{cells:?}");
        cells[0].clone()
    };

    // One generator alone: saturated.
    let alone = tmp.path().join("alone");
    let o = generate(0, 1, &start_at(3), &alone);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let merged_alone = tmp.path().join("merged-alone");
    let o = merge(&[alone], &merged_alone, &[], plugins.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let c = cell_of(&merged_alone);
    let s = &c["metrics"]["serving"];
    let g = &s["generators"]["generators"][0];
    eprintln!("one generator: {g}");
    assert_eq!(g["sent"], 60);
    assert_eq!(g["saturated"], true, "{g}");
    assert!(g["send_lag_ms"]["p99"].as_f64().unwrap() > 500.0, "{g}");
    let warnings = s["generators"]["warnings"].to_string();
    assert!(warnings.contains("could not keep up"), "{warnings}");

    // Three generators together.
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("gen-{i}")))
        .collect();
    let start = start_at(8);
    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let start = start.clone();
                let generate = &generate;
                scope.spawn(move || generate(i as u32, 3, &start, d))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outputs {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    // Each generator's own cell holds its third of the arrivals.
    for (i, d) in dirs.iter().enumerate() {
        let lines = read_jsonl(&d.join("results.jsonl"));
        let arrivals: Vec<u64> = lines[0]["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["warmup"] == false)
            .map(|r| r["arrival"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (i as u64..60).step_by(3).collect();
        assert_eq!(arrivals, want, "generator {i}");
        assert_eq!(lines[0]["generator"]["index"], i as u64);
    }

    // Two of three: refused, unless --partial (which says so).
    let o = merge(&dirs[..2], &tmp.path().join("two"), &[], plugins.path());
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("load generator 2 of 3 missing"), "{err}");
    let o = merge(
        &dirs[..2],
        &tmp.path().join("two"),
        &["--partial"],
        plugins.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let c = cell_of(&tmp.path().join("two"));
    assert_eq!(c["metrics"]["serving"]["scheduled"], 40);
    let warnings = c["metrics"]["serving"]["generators"]["warnings"].to_string();
    assert!(warnings.contains("load generator 2 missing"), "{warnings}");

    let merged = tmp.path().join("merged");
    let o = merge(&dirs, &merged, &[], plugins.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let c = cell_of(&merged);
    assert_eq!(c["status"], "ok", "{c}");
    let s = &c["metrics"]["serving"];
    let gens = &s["generators"];
    eprintln!("three generators: {gens}");
    // The schedule's request count and rate.
    assert_eq!(s["scheduled"], 60, "{s}");
    assert_eq!(s["completed"], 60, "{s}");
    let offered = s["offered_rate"].as_f64().unwrap();
    assert!((offered - 15.0).abs() < 0.5, "offered rate {offered}");
    let achieved = s["achieved_rate"].as_f64().unwrap();
    assert!(
        (12.0..=16.0).contains(&achieved),
        "achieved rate {achieved}"
    );
    // Its latency: the injected 100 ms to the first token and 200 ms to
    // the last, from the scheduled times (the tolerance is for a shared
    // 2-core machine running the server and three generators).
    let ttft = &s["ttft_from_schedule_ms"];
    let e2el = &s["e2el_from_schedule_ms"];
    let (t50, t99) = (ttft["p50"].as_f64().unwrap(), ttft["p99"].as_f64().unwrap());
    let e50 = e2el["p50"].as_f64().unwrap();
    assert!((100.0..130.0).contains(&t50), "TTFT p50 {t50}");
    assert!(t99 < 200.0, "TTFT p99 {t99}");
    assert!((200.0..240.0).contains(&e50), "E2EL p50 {e50}");
    // No generator behind, one clock (one machine), no warning.
    assert_eq!(gens["count"], 3);
    for g in gens["generators"].as_array().unwrap() {
        assert_eq!(g["sent"], 20, "{g}");
        assert_eq!(g["saturated"], false, "{g}");
    }
    assert!(gens["clock_error_ms"].as_f64().unwrap() < 1.0, "{gens}");
    assert_eq!(gens["warnings"], serde_json::json!([]), "{gens}");
    // On the common clock, arrival k was due k/15 s after arrival 0,
    // whichever generator sent it.
    let lines = read_jsonl(&merged.join("results.jsonl"));
    let mut due: Vec<(u64, u64)> = lines[0]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["warmup"] == false)
        .map(|r| {
            (
                r["arrival"].as_u64().unwrap(),
                r["scheduled_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    due.sort();
    assert_eq!(due.len(), 60);
    for (k, t) in &due {
        let want = *k as f64 / 15.0 * 1e9;
        let got = (t - due[0].1) as f64;
        assert!(
            (got - want).abs() < 1e5,
            "arrival {k}: {got} ns, want {want}"
        );
    }
    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(md.contains("### Load generators"), "{md}");

    // The same generators as if on other machines (their records edited:
    // this machine has one clock): unsynchronized clocks are an unknown
    // error; synchronized ones 20 ms off each are up to 40 ms apart, past
    // the 10 ms bound. Either way the merged cell says so.
    let as_if = |name: &str, clock: serde_json::Value| {
        let dirs: Vec<PathBuf> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let copy = tmp.path().join(format!("{name}-{i}"));
                std::fs::create_dir_all(&copy).unwrap();
                for f in ["summary.json", "matrix.yaml"] {
                    std::fs::copy(d.join(f), copy.join(f)).unwrap();
                }
                let mut line = read_jsonl(&d.join("results.jsonl")).remove(0);
                let mut c = clock.clone();
                c["boot_id"] = format!("machine-{i}").into();
                line["generator"]["clock"] = c;
                std::fs::write(copy.join("results.jsonl"), format!("{line}\n")).unwrap();
                copy
            })
            .collect();
        let out = tmp.path().join(name);
        let o = merge(&dirs, &out, &[], plugins.path());
        assert!(o.status.success(), "{}", text(&o.stderr));
        cell_of(&out)["metrics"]["serving"]["generators"].clone()
    };
    let g = as_if(
        "unsynced",
        serde_json::json!({"source": "adjtimex", "synchronized": false, "max_error_us": 16000000}),
    );
    assert_eq!(g["clock_error_ms"], Value::Null, "{g}");
    assert!(
        g["warnings"].to_string().contains("clock error unknown"),
        "{g}"
    );
    let g = as_if(
        "synced",
        serde_json::json!({"source": "adjtimex", "synchronized": true, "max_error_us": 20000}),
    );
    let e = g["clock_error_ms"].as_f64().unwrap();
    assert!((40.0..40.1).contains(&e), "{g}");
    assert!(
        g["warnings"]
            .to_string()
            .contains("more than the 10 ms bound"),
        "{g}"
    );
}

/// What a load generator cannot split is refused before anything runs,
/// naming the cell or engine; --load-shard needs --start-at.
#[test]
fn load_generators_refuse_what_they_cannot_share() {
    let plugins = plugin_dir(&["http", "candle"]);
    let tmp = TempDir::new("load-shard-refusals");
    let m = tmp.path().join("m.yaml");
    std::fs::write(
        &m,
        "name: r\nmodels: [{name: tiny, weights: synthetic, config: tiny}]\n\
         engines: [{name: local, plugin: candle}]\n\
         scenarios: [{name: open, kind: serving, request_rate: 2, requests: 4}]\n",
    )
    .unwrap();
    let out = tmp.path().join("run");
    let args = |extra: &[&'static str]| {
        let mut a = vec!["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let go = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&a, plugins.path())
    };
    let o = go(args(&["--load-shard", "0/2"]));
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--start-at"),
        "{}",
        text(&o.stderr)
    );
    let o = go(args(&["--load-shard", "0/2", "--start-at", "noon"]));
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("'noon'"), "{}", text(&o.stderr));
    let o = go(args(&["--load-shard", "0/2", "--start-at", "@0"]));
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("engine 'local' (plugin candle) runs inside each generator"),
        "{err}"
    );
    assert!(!out.join("results.jsonl").exists(), "nothing ran");
}
