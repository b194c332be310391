//! End-to-end: engines run in worker processes; a run can be stopped
//! (Ctrl-C, run timeout) without losing a finished cell, and resumed.

use integration_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Eight cells of about half a second each on the tiny model.
const SLOW: &str = "\
name: slow
baseline: a
models:
  - {name: tiny, weights: synthetic, config: tiny, seed: 0}
engines:
  - {name: a, plugin: candle, options: {threads: 1}}
  - {name: b, plugin: candle, options: {threads: 1, kernels: stock}}
scenarios:
  - name: latency
    kind: latency
    warmup: 0
    iterations: 1
    min_duration_s: 0.5
    input_tokens: 16
    output_tokens: 8
    axes:
      batch_size: [1, 2, 3, 4]
";

fn ids(run_dir: &Path) -> Vec<String> {
    read_jsonl(&run_dir.join("results.jsonl"))
        .iter()
        .map(|l| format!("{}#{}", l["cell"]["id"].as_str().unwrap(), l["repeat"]))
        .collect()
}

#[test]
fn run_timeout_stops_cleanly_and_resume_finishes_the_run() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("resume");
    let (run_dir, o) = run_yaml(tmp.path(), SLOW, &["--run-timeout", "1.6"], plugins.path());
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--resume"), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    assert_eq!(summary["complete"], false);
    assert!(summary["stopped"].as_str().unwrap().contains("run timeout"));
    assert!(
        run_dir.join("report.html").is_file(),
        "the report of what ran"
    );
    let first = ids(&run_dir);
    assert!(!first.is_empty() && first.len() < 8, "{first:?}");

    let o = run(
        &["run", "--resume", run_dir.to_str().unwrap()],
        plugins.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let all = ids(&run_dir);
    assert_eq!(all.len(), 8, "{all:?}");
    assert_eq!(
        &all[..first.len()],
        &first[..],
        "earlier cells kept, not rerun"
    );
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "no cell twice: {all:?}");
    let summary = read_json(&run_dir.join("summary.json"));
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["cells"].as_array().unwrap().len(), 8);
    assert!(summary["cells"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "ok"));
}

#[test]
fn ctrl_c_saves_what_ran_and_stops_the_workers() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("sigint");
    let m = tmp.path().join("m.yaml");
    std::fs::write(&m, SLOW).unwrap();
    let run_dir = tmp.path().join("run");
    let mut child = Command::new(binary())
        .args([
            "run",
            m.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
        ])
        .arg("--plugins")
        .arg(plugins.path())
        .env("ENGINE_MATRIX_CACHE", cache_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let results = run_dir.join("results.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&results).map_or(true, |t| t.lines().count() < 2) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no cell finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "stopped promptly");
    assert_eq!(status.code(), Some(130));
    let summary = read_json(&run_dir.join("summary.json"));
    assert_eq!(summary["complete"], false);
    assert_eq!(summary["stopped"], "interrupted (Ctrl-C)");
    let done = ids(&run_dir);
    assert!(done.len() >= 2 && done.len() < 8, "{done:?}");
    assert_eq!(summary["cells"].as_array().unwrap().len(), done.len());
    assert!(run_dir.join("report.md").is_file());
}

const FAULTS: &str = "\
name: faults
baseline: candle
models:
  - {name: tiny, weights: synthetic, config: tiny, seed: 0}
engines:
  - {name: candle, plugin: candle, options: {threads: 1}}
  - {name: segv, plugin: fault, options: {fault: segfault, after_steps: 2}}
  - {name: abrt, plugin: fault, options: {fault: abort}}
  - {name: pan, plugin: fault, options: {fault: panic}}
  - {name: stuck, plugin: fault, options: {fault: hang}}
  - {name: short, plugin: fault, options: {fault: wrong_count}}
  - {name: oov, plugin: fault, options: {fault: out_of_vocab}}
  - {name: fine, plugin: fault}
scenarios:
  - name: latency
    kind: latency
    warmup: 0
    iterations: 2
    input_tokens: 8
    output_tokens: 4
    axes:
      batch_size: [1, 2]
";

#[test]
fn each_fault_is_recorded_with_its_reason_and_nothing_else_is_lost() {
    let plugins = plugin_dir(&["candle", "fault"]);
    let tmp = TempDir::new("faults");
    let (run_dir, o) = run_yaml(
        tmp.path(),
        FAULTS,
        &["--cell-timeout", "3", "--no-calibrate"],
        plugins.path(),
    );
    // Failed cells are results, and the run says so with its status.
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("cells failed"),
        "{}",
        text(&o.stderr)
    );
    let lines = read_jsonl(&run_dir.join("results.jsonl"));
    assert_eq!(lines.len(), 16, "every cell of every engine is recorded");
    let by = |engine: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["cell"]["engine"] == engine)
            .collect()
    };
    for engine in ["candle", "fine"] {
        for c in by(engine) {
            assert_eq!(c["status"], "ok", "{c}");
        }
    }
    let expect = [
        (
            "segv",
            vec!["signal 11", "SIGSEGV", "deliberate segfault in decode"],
        ),
        (
            "abrt",
            vec!["signal 6", "SIGABRT", "deliberate abort in decode"],
        ),
        ("pan", vec!["deliberate panic in decode"]),
        (
            "stuck",
            vec!["within 3 s (--cell-timeout)", "hanging in decode"],
        ),
        (
            "short",
            vec!["produced a different number of tokens than the 4 requested (e.g. 3)"],
        ),
        ("oov", vec!["outside the vocabulary"]),
    ];
    for (engine, needles) in expect {
        let cells = by(engine);
        assert_eq!(cells.len(), 2, "{engine}");
        for c in cells {
            assert_eq!(c["status"], "failed", "{engine}: {c}");
            let why = c["reason"].as_str().unwrap();
            for n in &needles {
                assert!(why.contains(n), "{engine}: {n:?} not in {why}");
            }
        }
    }
    // The broken engines' logs are kept beside the results.
    let log = std::fs::read_to_string(run_dir.join("workers/segv.log")).unwrap();
    assert!(log.contains("deliberate segfault"), "{log}");
    // The report of the run still comes out, naming the failures.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("SIGSEGV"), "{md}");
}

const LEAK: &str = "\
name: leak
models:
  - {name: tiny, weights: synthetic, config: tiny, seed: 0}
engines:
  - {name: candle, plugin: candle, options: {threads: 1}}
  - {name: leaky, plugin: fault, options: {fault: leak, leak_mb_per_step: 1}}
scenarios:
  - name: soak
    kind: latency
    warmup: 2
    iterations: 120
    input_tokens: 8
    output_tokens: 2
  - name: short
    kind: latency
    warmup: 0
    iterations: 40
    input_tokens: 8
    output_tokens: 2
";

#[test]
fn a_steady_leak_is_caught_and_real_engines_pass() {
    let plugins = plugin_dir(&["candle", "fault"]);
    let tmp = TempDir::new("leak");
    let (run_dir, o) = run_yaml(tmp.path(), LEAK, &["--no-calibrate"], plugins.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let cells = summary["cells"].as_array().unwrap();
    let leak_in = |scenario: &str, engine: &str| {
        cells
            .iter()
            .find(|c| c["cell"]["engine"] == engine && c["cell"]["scenario"] == scenario)
            .map(|c| c["memory"]["leak"].clone())
            .unwrap()
    };
    let leak = |engine: &str| leak_in("soak", engine);
    let (good, bad) = (leak("candle"), leak("leaky"));
    assert_eq!(good["verdict"], "no_leak", "{good}");
    assert!(good["samples"].as_u64().unwrap() >= 100, "{good}");
    assert_eq!(bad["verdict"], "leak", "{bad}");
    let slope = bad["slope_mb_per_hour"].as_f64().unwrap();
    assert!(
        slope > 1000.0,
        "1 MiB per iteration is a steep slope: {bad}"
    );
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("**memory leak** in `soak/tiny/leaky/"), "{md}");
    // 40 iterations leaking 1 MiB each: too short for a verdict, said in
    // the cell, and nothing in the executive summary.
    let short = leak_in("short", "leaky");
    assert_eq!(short["verdict"], "insufficient", "{short}");
    let note = short["note"].as_str().unwrap();
    assert!(
        note.contains("too short for a leak verdict: 40 measured iterations"),
        "{note}"
    );
    assert!(!md.contains("**memory leak** in `short/"), "{md}");
    assert!(
        md.contains("2 cells were too short for a leak verdict"),
        "{md}"
    );
}

/// A launched server that is ready and then dies of a signal at its first
/// request, as llama-server built with ggml's AMX kernels did (SIGILL) on
/// an Intel Xeon that had not granted AMX (`tests/fakes/dying_server.py`
/// does the same on any CPU): each cell fails with the signal and the
/// server's last log lines, the server is started again for the next
/// cell, and the run exits 5 (0 with `--allow-failures`).
#[test]
fn a_launched_server_that_dies_of_a_signal_fails_its_cells_naming_it() {
    let plugins = plugin_dir(&["http"]);
    let yaml = "\
name: dying
models:
  - {name: tiny, weights: synthetic, config: tiny, seed: 0}
engines:
  - name: dying
    plugin: http
    options: {base_url: \"http://127.0.0.1:${PORT}\", model: fake}
    launch:
      command: [\"${DYING_SERVER}\", --port, \"${PORT}\"]
      ready: /health
      ready_timeout_s: 60
scenarios:
  - name: latency
    kind: latency
    warmup: 0
    iterations: 1
    input_tokens: 8
    output_tokens: 4
    axes: {batch_size: [1, 2]}
";
    let fake = workspace_root().join("tests/fakes/dying_server.py");
    for (flags, status) in [(&[][..], 5), (&["--allow-failures"][..], 0)] {
        let tmp = TempDir::new("dying");
        let mut args = vec!["--no-calibrate"];
        args.extend_from_slice(flags);
        let (run_dir, o) = run_yaml_env(
            tmp.path(),
            yaml,
            &args,
            plugins.path(),
            &[("DYING_SERVER", &fake)],
        );
        assert_eq!(
            o.status.code(),
            Some(status),
            "{flags:?}: {}",
            text(&o.stderr)
        );
        let summary = read_json(&run_dir.join("summary.json"));
        let cells = summary["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 2, "{cells:?}");
        for c in cells {
            assert_eq!(c["status"], "failed", "{c}");
            let why = c["reason"].as_str().unwrap();
            assert!(
                why.contains("the launched server was killed by signal 4 (SIGILL")
                    && why.contains("fake server: first decode: raising SIGILL")
                    && why.contains("servers/dying.log"),
                "{why}"
            );
        }
        let log = std::fs::read_to_string(run_dir.join("servers/dying.log")).unwrap();
        assert_eq!(log.matches("starting: ").count(), 2, "started again: {log}");
    }
}

/// A latency cell on the tiny model under `pressure`, for `secs` seconds.
fn pressure_matrix(pressure: &str, secs: f64) -> String {
    format!(
        "\
name: pressure
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - {{name: candle, options: {{threads: 1}}}}
scenarios:
  - name: lat
    kind: latency
    warmup: 0
    iterations: 1
    min_duration_s: {secs}
    input_tokens: 16
    output_tokens: 8
    axes:
      pressure: [{pressure}]
"
    )
}

/// Processes whose command line holds every one of `words`, with their
/// parent's pid.
fn processes_with(words: &[&str]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if words.iter().all(|w| args.iter().any(|a| a == w)) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            out.push((pid, ppid));
        }
    }
    out
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cell under pressure and its twin alone: the child ran beside the
/// engine (its memory resident, its thread busy), was stopped with the
/// cell, and the report sets the two side by side.
#[test]
fn pressure_runs_beside_the_cell_and_is_reported_against_its_twin() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("pressure");
    // mem0.0625: 64 MiB, a size no other test asks for.
    let (run_dir, o) = run_yaml(
        tmp.path(),
        &pressure_matrix("none, cpu1-mem0.0625", 1.0),
        &["--no-calibrate"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let s = read_json(&run_dir.join("summary.json"));
    let cells = s["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    assert!(
        cells[0]["memory"]["pressure"].is_null(),
        "the twin ran alone"
    );
    let c = &cells[1];
    assert_eq!(c["status"], "ok", "{c}");
    assert!(c["cell"]["id"]
        .as_str()
        .unwrap()
        .ends_with("-pcpu1-mem0.0625"));
    let p = &c["memory"]["pressure"];
    assert_eq!(
        (p["cpu_threads"].as_u64(), p["memory_bytes"].as_u64()),
        (Some(1), Some(64 << 20))
    );
    assert!(p["resident_bytes"].as_u64().unwrap() >= 64 << 20, "{p}");
    let secs = p["seconds"].as_f64().unwrap();
    assert!(secs >= 1.0, "{p}");
    // One spinning thread on a shared 2-core machine: well above idle.
    assert!(p["cpu_seconds"].as_f64().unwrap() > 0.2 * secs, "{p}");
    assert!(
        processes_with(&["__pressure", "64"]).is_empty(),
        "stopped with the cell"
    );
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("## Resource pressure"), "{md}");
    assert!(
        md.contains("| lat/tiny/candle/in16-out8-bs1-c1-static-f32-none | cpu1-mem0.0625 |"),
        "{md}"
    );
}

/// However the run ends, the pressure child does not outlive it: its
/// worker killed outright (the child sees its lifeline close and its
/// parent die), or Ctrl-C.
#[test]
fn the_pressure_child_never_outlives_its_worker_or_the_run() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("pressure-kill");
    // mem0.09375: 96 MiB, a size no other test asks for.
    let m = tmp.path().join("m.yaml");
    std::fs::write(&m, pressure_matrix("cpu1-mem0.09375", 60.0)).unwrap();
    let start = |name: &str| {
        Command::new(binary())
            .args(["run", m.to_str().unwrap(), "--no-calibrate", "--out"])
            .arg(tmp.path().join(name))
            .arg("--plugins")
            .arg(plugins.path())
            .env("ENGINE_MATRIX_CACHE", cache_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let hog = || processes_with(&["__pressure", "96"]);

    // The worker killed with SIGKILL: no Drop runs in it.
    let mut run = start("killed");
    wait_for("the pressure child started", 60, || !hog().is_empty());
    let (child, worker) = hog()[0];
    assert_ne!(worker, run.id(), "the worker, not the run, starts it");
    // SAFETY: signals a process of this test's own run.
    unsafe {
        libc::kill(worker as i32, libc::SIGKILL);
    }
    wait_for("the child died with its worker", 10, || {
        !std::path::Path::new(&format!("/proc/{child}")).exists()
            || std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(5), "the cell failed: its worker died");
    assert!(hog().is_empty());

    // Ctrl-C of the run.
    let mut run = start("interrupted");
    wait_for("the pressure child started", 60, || !hog().is_empty());
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    wait_for("the child stopped with the run", 10, || hog().is_empty());
}
