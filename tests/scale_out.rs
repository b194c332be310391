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
    let o = scale_out(&[
        "k8s",
        m.to_str().unwrap(),
        "--shards",
        "4",
        "--out",
        "/results/shards",
        "--mount",
        "/results",
        "--claim",
        "bench-results",
        "--image",
        "registry.example/em:1",
        "--files",
        files.to_str().unwrap(),
        "--gpus",
        "1",
        "--",
        "--quick",
    ]);
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
    // The results must be on the claim.
    let o = scale_out(&[
        "k8s",
        m.to_str().unwrap(),
        "--shards",
        "2",
        "--out",
        "/elsewhere",
        "--mount",
        "/results",
        "--claim",
        "c",
        "--image",
        "i",
        "--files",
        files.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("not under the claim's mount point"),
        "{}",
        text(&o.stderr)
    );
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

#[test]
fn a_real_slurm_runs_the_generated_array_and_merges_it() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("slurm");
    let m = write_matrix(tmp.path());
    let slurm = Slurm::up(&tmp.path().join("cluster"));
    let out = tmp.path().join("results");
    let o = scale_out(&[
        "slurm",
        m.to_str().unwrap(),
        "--shards",
        "3",
        "--cpus",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--",
        "--no-calibrate",
        "--plugins",
        plugins.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let sbatch = std::fs::read_to_string(out.join("run.sbatch")).unwrap();
    assert!(
        sbatch.contains("#SBATCH --array=0-2") && sbatch.contains("--shard auto"),
        "{sbatch}"
    );
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
    let merged = out.join("merged");
    let t0 = Instant::now();
    // The merge job writes summary.json last of all (after report.md).
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
        // Every job has ended without a merged run: fail now, with logs.
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
    drop(slurm);
}
