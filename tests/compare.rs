//! End-to-end: `run --repeat` interleaves engines, `--save-baseline` and
//! `--baseline` / `compare` detect a regression (exit 1), let noise pass
//! (exit 0) and refuse cells whose settings differ.

use integration_tests::*;
use serde_json::Value;
use std::path::Path;

const MATRIX: &str = "\
name: repeat
baseline: a
models:
  - {name: tiny, weights: synthetic, config: tiny, seed: 0}
engines:
  - {name: a, plugin: candle, options: {threads: 1}}
  - {name: b, plugin: candle, options: {threads: 1, kernels: stock}}
scenarios:
  - name: latency
    kind: latency
    warmup: 1
    iterations: 4
    input_tokens: 16
    output_tokens: 8
    axes:
      batch_size: [1, 2]
";

fn write(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

#[test]
fn repeat_baseline_and_compare() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("compare");
    let baselines = tmp.path().join("baselines");
    let matrix = tmp.path().join("m.yaml");
    std::fs::write(&matrix, MATRIX).unwrap();
    let env = [("ENGINE_MATRIX_BASELINES", baselines.as_path())];
    let run1 = tmp.path().join("run1");
    let o = run_env(
        &[
            "run",
            matrix.to_str().unwrap(),
            "--out",
            run1.to_str().unwrap(),
            "--repeat",
            "3",
            "--save-baseline",
            "main",
        ],
        plugins.path(),
        &env,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(baselines.join("main/summary.json").is_file());

    // Three repetitions, engines interleaved: a a b b | a a b b | a a b b.
    let lines = read_jsonl(&run1.join("results.jsonl"));
    let order: Vec<String> = lines
        .iter()
        .map(|l| format!("{}{}", l["cell"]["engine"].as_str().unwrap(), l["repeat"]))
        .collect();
    assert_eq!(
        order,
        ["a0", "a0", "b0", "b0", "a1", "a1", "b1", "b1", "a2", "a2", "b2", "b2"]
    );
    let summary = read_json(&run1.join("summary.json"));
    assert_eq!(summary["repeats"], 3);
    // Speedups from paired repetitions carry their sample count.
    let csv = std::fs::read_to_string(run1.join("summary.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "speedup_samples").unwrap();
    let b_rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains("latency/tiny/b/"))
        .collect();
    assert_eq!(b_rows.len(), 6, "{csv}");
    for r in b_rows {
        assert_eq!(r.split(',').nth(col), Some("3"), "{r}");
    }
    let md = std::fs::read_to_string(run1.join("report.md")).unwrap();
    assert!(md.contains("| 3 runs"), "{md}");

    // The same run against its saved baseline: nothing changed.
    let o = run_env(
        &["compare", "main", run1.to_str().unwrap()],
        plugins.path(),
        &env,
    );
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    assert!(out.contains("**0 regressions, 0 improvements**"), "{out}");
    assert!(run1.join("compare.html").is_file() && run1.join("compare.md").is_file());

    // A candidate whose engine b got 60% slower (well beyond run-to-run noise of a tiny model): exit 1, the cells named.
    let slow = tmp.path().join("slow");
    std::fs::create_dir_all(&slow).unwrap();
    let mut s = summary.clone();
    for c in s["cells"].as_array_mut().unwrap() {
        if c["cell"]["engine"] != "b" {
            continue;
        }
        let m = &mut c["metrics"];
        let t = m["output_throughput"].as_f64().unwrap();
        m["output_throughput"] = (t * 0.4).into();
        for it in m["per_iteration"].as_array_mut().unwrap() {
            let t = it["output_throughput"].as_f64().unwrap();
            it["output_throughput"] = (t * 0.4).into();
        }
    }
    write(&slow, "summary.json", &s);
    let o = run(
        &["compare", run1.to_str().unwrap(), slow.to_str().unwrap()],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("**2 regressions"), "{out}");
    assert!(
        out.lines()
            .filter(|l| l.contains("REGRESSED"))
            .all(|l| l.contains("latency/tiny/b/") && l.contains("output tok/s")),
        "{out}"
    );
    assert!(slow.join("charts/compare.svg").is_file());

    // Settings that differ are refused, with the reason, and no verdict.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut s = summary.clone();
    for c in s["cells"].as_array_mut().unwrap() {
        c["cell"]["params"]["dtype"] = "bf16".into();
    }
    write(&other, "summary.json", &s);
    let o = run(
        &["compare", run1.to_str().unwrap(), other.to_str().unwrap()],
        plugins.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("4 cells refused"), "{out}");
    assert!(
        out.contains("dtype differs (baseline f32, candidate bf16)"),
        "{out}"
    );

    // `run --baseline` with a name that does not exist fails before running.
    let o = run_env(
        &["run", matrix.to_str().unwrap(), "--baseline", "nope"],
        plugins.path(),
        &env,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("'nope' is neither a run folder"),
        "{}",
        text(&o.stderr)
    );
}
