//! End-to-end: the real binary, real plugins, tiny models.

use integration_tests::*;
use serde_json::Value;
use std::path::Path;

fn cells(summary: &Value) -> &Vec<Value> {
    summary["cells"].as_array().expect("cells array")
}

fn write_matrix(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("matrix.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn tiny_matrix_runs_end_to_end_and_writes_raw_and_summary_json() {
    let plugins = plugin_dir(&["candle", "onnx", "torch", "example"]);
    let out = TempDir::new("run");
    let run_dir = out.path().join("run");
    let o = run_matrix(
        std::path::Path::new("matrices/tiny.yaml"),
        plugins.path(),
        &run_dir,
    );
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("| model | engine |"),
        "markdown table: {stdout}"
    );

    let summary = read_json(&run_dir.join("summary.json"));
    assert_eq!(summary["schema_version"], 1);
    assert_eq!(summary["complete"], true);
    assert!(summary["system"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(summary["system"]["git_commit"].as_str().unwrap().len() >= 7);
    let engine = &summary["engines"][0];
    assert_eq!(engine["info"]["name"], "candle");
    assert!(engine["info"]["runtime_version"]
        .as_str()
        .unwrap()
        .starts_with("candle 0.11"));
    let onnx = &summary["engines"][1];
    assert_eq!(onnx["info"]["name"], "onnx");
    let rt = onnx["info"]["runtime_version"].as_str().unwrap();
    assert!(
        rt.starts_with("onnxruntime 1.31.1 (") && rt.contains("libonnxruntime.so"),
        "{rt}"
    );
    let torch = &summary["engines"][2];
    assert_eq!(torch["info"]["name"], "torch");
    let rt = torch["info"]["runtime_version"].as_str().unwrap();
    assert!(rt.starts_with("libtorch 2.13.0 via tch 0.26"), "{rt}");
    // The plugin template runs every scenario too (its cells are checked
    // with the others below).
    let example = &summary["engines"][3];
    assert_eq!(example["info"]["name"], "example");
    assert!(example["info"]["runtime_version"]
        .as_str()
        .unwrap()
        .contains("bigram toy"));
    assert_eq!(
        cells(&summary)
            .iter()
            .filter(|c| c["cell"]["engine"] == "example")
            .count(),
        5
    );

    let cells = cells(&summary);
    assert!(cells.len() >= 3);
    let kinds: std::collections::BTreeSet<&str> = cells
        .iter()
        .map(|c| c["cell"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.len(),
        3,
        "latency, throughput and concurrency: {kinds:?}"
    );
    for c in cells {
        assert_eq!(c["status"], "ok", "{c}");
        let m = &c["metrics"];
        assert_eq!(m["failed"], 0);
        assert_eq!(m["output_length_mismatches"], 0, "{c}");
        assert_eq!(m["out_of_vocab_tokens"], 0);
        for k in ["ttft_ms", "e2el_ms", "itl_ms", "tpot_ms"] {
            let d = &m[k];
            for f in [
                "mean",
                "std",
                "min",
                "max",
                "p50",
                "p90",
                "p95",
                "p99",
                "p999",
                "spike_rate",
            ] {
                assert!(d[f].is_number(), "{k}.{f} in {c}");
            }
            assert!(d["min"].as_f64().unwrap() >= 0.0);
        }
        assert!(m["ttft_ms"]["p50"].as_f64().unwrap() <= m["e2el_ms"]["p50"].as_f64().unwrap());
        assert!(m["output_throughput"].as_f64().unwrap() > 0.0);
        assert!(m["request_throughput"].as_f64().unwrap() > 0.0);
        assert!(
            m["total_token_throughput"].as_f64().unwrap()
                > m["output_throughput"].as_f64().unwrap()
        );
        let mem = &c["memory"];
        assert!(mem["weight_bytes"].as_u64().unwrap() > 0);
        let kv = mem["kv_cache_peak_bytes"].as_u64().unwrap();
        if c["cell"]["engine"] == "example" {
            assert_eq!(kv, 0, "the bigram toy keeps no cache: {c}");
        } else {
            assert!(kv > 0, "{c}");
        }
        assert!(mem["peak_rss_bytes"].as_u64().unwrap() > 0);
    }

    // results.jsonl: one line per cell with raw per-request timestamps
    let lines = read_jsonl(&run_dir.join("results.jsonl"));
    assert_eq!(lines.len(), cells.len());
    for l in &lines {
        let out_tokens = l["cell"]["params"]["output_tokens"].as_u64().unwrap() as usize;
        let input = l["cell"]["params"]["input_tokens"].as_u64().unwrap();
        let reqs = l["requests"].as_array().unwrap();
        assert!(!reqs.is_empty());
        let measured = reqs.iter().filter(|r| r["warmup"] == false).count();
        assert_eq!(measured as u64, l["metrics"]["requests"].as_u64().unwrap());
        for r in reqs {
            let ts = r["token_ns"].as_array().unwrap();
            assert_eq!(ts.len(), out_tokens, "exact output length");
            assert_eq!(r["tokens"].as_array().unwrap().len(), out_tokens);
            assert_eq!(r["prompt_tokens"].as_u64().unwrap(), input);
            let submit = r["submit_ns"].as_u64().unwrap();
            let t: Vec<u64> = ts.iter().map(|v| v.as_u64().unwrap()).collect();
            assert!(t[0] > submit);
            assert!(t.windows(2).all(|w| w[0] <= w[1]), "monotonic");
            assert_eq!(r["finish_reason"], "length");
        }
    }
    assert!(run_dir.join("report.md").is_file());
    assert!(run_dir.join("matrix.yaml").is_file());
    assert!(run_dir.join("system.json").is_file());
}

const BROKEN: &str = r#"
name: broken
baseline: candle
models:
  - name: tiny
    weights: synthetic
    config: tiny
engines:
  - name: candle
    options: {threads: 1}
  - name: old
    plugin: bad_abi
  - name: relayout
    plugin: bad_layout
  - name: panicky
  - name: ghost
    plugin: nope
scenarios:
  - name: lat
    kind: latency
    warmup: 0
    iterations: 2
    axes:
      workload:
        - {input_tokens: 8, output_tokens: 4}
        - {label: too-long, input_tokens: 250, output_tokens: 16}
"#;

#[test]
fn broken_plugins_and_unknown_engines_fail_clearly_while_others_run() {
    let plugins = plugin_dir(&["candle", "bad_abi", "bad_layout", "panicky"]);
    let tmp = TempDir::new("broken");
    let m = write_matrix(tmp.path(), BROKEN);
    let run_dir = tmp.path().join("run");
    let o = run_matrix_status(&m, plugins.path(), &run_dir, 5);
    let stderr = text(&o.stderr);

    // one line per broken engine, naming the file and both versions
    let line = |needle: &str| {
        stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle} in: {stderr}"))
            .to_string()
    };
    let old = line("libem_bad_abi");
    assert!(
        old.contains("engine-api 0.0.9") && old.contains("engine-api 0.1.0"),
        "{old}"
    );
    let relayout = line("libem_bad_layout");
    assert!(
        relayout.contains("ABI-incompatible") && relayout.contains("--verbose"),
        "{relayout}"
    );
    assert!(
        stderr.lines().count() < 40,
        "abi_stable's report must be summarised: {stderr}"
    );
    let ghost = line("'nope'");
    assert!(
        ghost.contains("engines[4].plugin") && ghost.contains("matrix.yaml:"),
        "{ghost}"
    );

    let summary = read_json(&run_dir.join("summary.json"));
    let by = |engine: &str| -> Vec<&Value> {
        cells(&summary)
            .iter()
            .filter(|c| c["cell"]["engine"] == engine)
            .collect()
    };
    let candle = by("candle");
    assert_eq!(candle.len(), 2);
    assert_eq!(candle[0]["status"], "ok", "{}", candle[0]);
    // GPT-2-style context limit: 250 + 16 > 256 positions
    assert_eq!(candle[1]["status"], "unsupported", "{}", candle[1]);
    assert!(candle[1]["reason"].as_str().unwrap().contains("256"));
    for (engine, needle) in [
        ("old", "0.0.9"),
        ("relayout", "ABI-incompatible"),
        ("panicky", "panicked"),
        ("ghost", "not found"),
    ] {
        let cs = by(engine);
        assert_eq!(cs.len(), 2, "{engine}");
        for c in cs {
            assert_eq!(c["status"], "failed", "{c}");
            assert!(
                c["reason"].as_str().unwrap().contains(needle),
                "{engine}: {c}"
            );
        }
    }
    assert_eq!(read_jsonl(&run_dir.join("results.jsonl")).len(), 10);
}

#[test]
fn engines_lists_info_and_one_line_errors() {
    let plugins = plugin_dir(&["candle", "bad_layout", "panicky"]);
    let o = run(&["engines"], plugins.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    assert!(s.contains("runtime candle 0.11"), "{s}");
    assert!(s.contains("dtypes: f32"), "{s}");
    let err = s
        .lines()
        .find(|l| l.contains("error:"))
        .expect("error line");
    assert!(err.contains("ABI-incompatible"), "{err}");
    assert!(s.lines().count() < 30, "{s}");
    let verbose = run(&["engines", "--verbose"], plugins.path());
    assert!(text(&verbose.stdout).lines().count() > s.lines().count() + 20);
    let json = run(&["engines", "--json"], plugins.path());
    let v: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[test]
fn bad_matrices_are_rejected_with_file_line_and_column() {
    let plugins = plugin_dir(&[]);
    let tmp = TempDir::new("bad");
    let m = write_matrix(
        tmp.path(),
        "name: x\nmodels:\n  - name: tiny\n    weights: synthetic\n    config: tiny\nengines:\n  - name: candle\n    colour: blue\nscenarios: []\n",
    );
    let o = run(&["validate", m.to_str().unwrap()], plugins.path());
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("matrix.yaml:8:"), "{e}");
    assert!(e.contains("colour"), "{e}");

    let o = run(
        &["run", "matrices/tiny.yaml", "--only", "tensorrt"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(
        e.contains("--only tensorrt") && e.contains("engines: candle"),
        "{e}"
    );

    let missing = TempDir::new("missing-model");
    let m = write_matrix(
        tmp.path(),
        &format!(
            "name: x\nmodels:\n  - name: m\n    path: {}\nengines:\n  - name: candle\nscenarios:\n  - name: s\n    kind: latency\n    iterations: 1\n    warmup: 0\n",
            missing.path().display()
        ),
    );
    let plugins = plugin_dir(&["candle"]);
    // `validate` reads the model folder: missing, it is an error naming
    // the file, line, column and field.
    let o = run(&["validate", m.to_str().unwrap()], plugins.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
    let e = text(&o.stderr);
    assert!(
        e.contains("matrix.yaml:4:")
            && e.contains("models[0].path: model 'm': cannot read")
            && e.contains("config.json"),
        "{e}"
    );
    assert!(!text(&o.stdout).contains("valid"), "{}", text(&o.stdout));
    // `run` records the failed cell and exits 5; --allow-failures, 0.
    let run_dir = tmp.path().join("run");
    let args = [
        "run",
        m.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ];
    let o = run(&args, plugins.path());
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("config.json") && stderr.contains("model 'm'"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-failures"), "{stderr}");
    let s = read_json(&run_dir.join("summary.json"));
    assert_eq!(cells(&s)[0]["status"], "failed");
    let again = tmp.path().join("run-allowed");
    let mut args = args.to_vec();
    args[3] = again.to_str().unwrap();
    args.push("--allow-failures");
    let o = run(&args, plugins.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        cells(&read_json(&again.join("summary.json")))[0]["status"],
        "failed"
    );

    // An unknown engine, and a config that is neither a preset nor a file:
    // both errors, both located.
    let m = write_matrix(
        tmp.path(),
        "name: x\nmodels:\n  - {name: m, weights: synthetic, config: no-such-config.json}\nengines:\n  - name: candle\n  - name: tensorrt\nscenarios:\n  - name: s\n    kind: latency\n    iterations: 1\n    warmup: 0\n",
    );
    let o = run(&["validate", m.to_str().unwrap()], plugins.path());
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(
        e.contains("matrix.yaml:3:") && e.contains("models[0].config: model 'm'"),
        "{e}"
    );
    assert!(
        e.contains("matrix.yaml:6:") && e.contains("engines[1].plugin: engine 'tensorrt'"),
        "{e}"
    );
    assert!(e.contains("2 problems"), "{e}");
}

#[test]
fn shipped_matrices_validate_and_gpt2_long_workloads_are_unsupported() {
    let plugins = plugin_dir(&[
        "candle", "onnx", "torch", "http", "example", "flat", "hnsw", "usearch",
    ]);
    // What scripts/engine-matrix exports for the matrices that need it.
    let gguf = provisioned("smollm2-gguf");
    let env = [("SMOLLM2_GGUF", gguf.as_path())];
    let mut shipped = 0;
    for entry in std::fs::read_dir(workspace_root().join("matrices")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let o = run_env(&["validate", path.to_str().unwrap()], plugins.path(), &env);
            assert!(
                o.status.success(),
                "{}: {}",
                path.display(),
                text(&o.stderr)
            );
            assert!(text(&o.stdout).contains("valid; "));
            shipped += 1;
        }
    }
    assert!(shipped >= 4, "every shipped matrix validates");

    // `presets` lists the seeds' run types, one line each, and the
    // target profiles.
    let o = std::process::Command::new(binary())
        .args(["presets", "--dir"])
        .arg(workspace_root().join("matrices"))
        .env("SMOLLM2_GGUF", &gguf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for preset in [
        "quick",
        "full",
        "tok-throughput",
        "cpu-only",
        "rtx-4090",
        "production",
        "regression",
    ] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(preset))
            .unwrap_or_else(|| panic!("{preset} not listed: {out}"));
        assert!(line.contains(" cells, "), "{line}");
    }
    assert!(!out.contains("not valid"), "{out}");
    assert!(
        out.contains("targets cpu_only") && out.contains("targets rtx_4090"),
        "{out}"
    );
    assert!(out.contains("  gpt2_plan "), "{out}");

    // L3 (1024 + 256) and L4 (2048 + 512) exceed GPT-2's 1,024 positions:
    // the real gpt2 config (synthetic weights) must record them unsupported.
    let tmp = TempDir::new("gpt2");
    let m = write_matrix(
        tmp.path(),
        "name: long\nmodels:\n  - {name: gpt2, weights: synthetic, config: gpt2}\nengines:\n  - {name: candle, options: {threads: 1}}\nscenarios:\n  - name: latency\n    kind: latency\n    warmup: 0\n    iterations: 1\n    axes:\n      workload:\n        - {label: L3, input_tokens: 1024, output_tokens: 256}\n        - {label: L4, input_tokens: 2048, output_tokens: 512}\n",
    );
    let run_dir = tmp.path().join("run");
    let o = run_matrix(&m, plugins.path(), &run_dir);
    let s = read_json(&run_dir.join("summary.json"));
    assert_eq!(s["models"][0]["parameters"], 124_439_808);
    for c in cells(&s) {
        assert_eq!(c["status"], "unsupported", "{c}");
        assert!(
            c["reason"].as_str().unwrap().contains("1024 positions"),
            "{c}"
        );
    }
    assert!(text(&o.stdout).contains("unsupported"));

    // The rtx-4090 preset asks for a CUDA device: on this build (CPU
    // candle) its cells are unsupported, with the reason, and its targets
    // are left without a verdict rather than missed.
    let run_dir = tmp.path().join("rtx");
    let rtx = workspace_root().join("matrices/rtx-4090.yaml");
    let o = run(
        &[
            "run",
            rtx.to_str().unwrap(),
            "--quick",
            "--only",
            "candle",
            "--no-calibrate",
            "--out",
            run_dir.to_str().unwrap(),
        ],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let s = read_json(&run_dir.join("summary.json"));
    assert_eq!(cells(&s).len(), 2);
    for c in cells(&s) {
        assert_eq!(c["status"], "unsupported", "{c}");
        assert!(c["reason"].as_str().unwrap().contains("CUDA"), "{c}");
    }
    assert_eq!(s["targets"]["total_targets"], 0);
    assert!(s["targets"]["grade"].is_null());
}

/// A missing ONNX Runtime costs only the cells of the engine that needs
/// it: they are `failed` with a reason that says how to provision it, and
/// everything else is measured.
#[test]
fn missing_onnx_runtime_fails_only_its_cells() {
    let plugins = plugin_dir(&["candle", "onnx"]);
    let tmp = TempDir::new("noort");
    let m = write_matrix(
        tmp.path(),
        r#"
name: noort
baseline: candle
models:
  - {name: tiny, weights: synthetic, config: tiny}
engines:
  - {name: candle, options: {threads: 1}}
  - {name: onnx, options: {threads: 1}}
  - {name: onnx-gone, plugin: onnx, options: {library: /nonexistent/libonnxruntime.so.1.31.1}}
scenarios:
  - name: latency
    kind: latency
    warmup: 0
    iterations: 2
    input_tokens: 8
    output_tokens: 4
    axes:
      batch_size: [1, 2]
"#,
    );
    let run_dir = tmp.path().join("run");
    run_matrix_status(&m, plugins.path(), &run_dir, 5);
    let summary = read_json(&run_dir.join("summary.json"));
    let mut seen = std::collections::BTreeMap::new();
    for c in cells(&summary) {
        let engine = c["cell"]["engine"].as_str().unwrap().to_string();
        *seen.entry(engine.clone()).or_insert(0) += 1;
        if engine == "onnx-gone" {
            assert_eq!(c["status"], "failed", "{c}");
            let why = c["reason"].as_str().unwrap();
            assert!(
                why.contains("/nonexistent/libonnxruntime.so.1.31.1")
                    && why.contains("scripts/provision"),
                "{why}"
            );
        } else {
            assert_eq!(c["status"], "ok", "{c}");
            assert!(
                c["metrics"]["output_throughput"].as_f64().unwrap() > 0.0,
                "{c}"
            );
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 2), "{seen:?}");
}

/// A run graded against targets: one met, one that cannot be met (a TTFT
/// below a nanosecond), one on errors; the grade, the report's table and
/// the exit statuses of `--fail-on-targets` and `--min-grade`.
#[test]
fn targets_grade_the_run_and_gate_its_exit_status() {
    let plugins = plugin_dir(&["candle", "example"]);
    let tmp = TempDir::new("targets");
    let yaml = "\
name: graded
baseline: candle
models:
  - {name: tiny, weights: synthetic, config: tiny}
engines:
  - {name: candle, options: {threads: 1}}
  - {name: example, options: {threads: 1}}
scenarios:
  - name: lat
    kind: latency
    warmup: 0
    iterations: 2
    input_tokens: 16
    output_tokens: 8
targets:
  - {name: runs, metric: output_throughput, min: 1}
  - {name: impossible, metric: ttft_ms.p50, max: 0.000001, acceptable: 0.000002}
  - {name: clean, metric: error_rate_pct, max: 0}
";
    let (run_dir, o) = run_yaml(tmp.path(), yaml, &["--fail-on-targets"], plugins.path());
    assert_eq!(o.status.code(), Some(6), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("1 of 3 targets missed (impossible; grade ACCEPTABLE)"),
        "{stderr}"
    );
    let s = read_json(&run_dir.join("summary.json"));
    let t = &s["targets"];
    assert_eq!(t["grade"], "ACCEPTABLE", "{t}");
    assert_eq!(
        (t["targets_met"].as_u64(), t["total_targets"].as_u64()),
        (Some(2), Some(3))
    );
    let by_name = |n: &str| {
        t["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["def"]["name"] == n)
            .unwrap()
            .clone()
    };
    let impossible = by_name("impossible");
    assert_eq!(impossible["verdict"], "missed");
    // Both engines' cells were judged, each on its measured TTFT.
    let judged = impossible["cells"].as_array().unwrap();
    assert_eq!(judged.len(), 2, "{impossible}");
    for c in judged {
        let cell = cells(&s)
            .iter()
            .find(|x| x["cell"]["id"] == c["cell"])
            .unwrap();
        assert_eq!(c["value"], cell["metrics"]["ttft_ms"]["p50"]);
    }
    assert_eq!(by_name("runs")["verdict"], "met");
    assert_eq!(by_name("clean")["verdict"], "met");

    // The report: the grade on top, the table, the missed target's advice.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        md.contains("Grade: **ACCEPTABLE**: 2 of 3 targets met, 0 acceptable, 1 missed"),
        "{md}"
    );
    assert!(md.contains("## Targets"), "{md}");
    assert!(
        md.contains("Target **impossible**") && md.contains("missed by 2 of 2 cells"),
        "{md}"
    );
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(
        html.contains("<td class=\"missed\">missed</td>"),
        "colour-coded status"
    );
    assert!(html.contains("<td class=\"met\">met</td>"));

    // --min-grade: ACCEPTABLE passes, GOOD does not; no flag, exit 0.
    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (_, o) = run_yaml(
        &fresh("acceptable"),
        yaml,
        &["--min-grade", "acceptable"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (_, o) = run_yaml(
        &fresh("good"),
        yaml,
        &["--min-grade", "GOOD"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(6), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("grade ACCEPTABLE is below --min-grade GOOD"));

    // `validate` lists the targets.
    let o = run(
        &["validate", tmp.path().join("m.yaml").to_str().unwrap()],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("targets: 3") && out.contains("impossible: ttft_ms.p50 ≤ 0.000001"),
        "{out}"
    );
}

/// A closed-loop breaking-point search on the fault plugin with a fixed
/// 5 ms per step and one sequence at a time: each request takes about
/// 20 ms, so the k-th client in line waits about k × 20 ms for its first
/// token. Concurrency 1 stays far under a 40 ms TTFT p99 bound, 4 passes
/// it (about 65 ms), and 16 is not run.
#[test]
fn a_breaking_point_search_stops_at_the_first_level_past_a_bound() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("breaking");
    let yaml = "\
name: breaking
models:
  - {name: tiny, weights: synthetic, config: tiny}
engines:
  - {name: slow, plugin: fault, options: {step_ms: 5}}
scenarios:
  - name: ramp
    kind: concurrency
    warmup: 0
    iterations: 1
    input_tokens: 8
    output_tokens: 4
    max_batch: 1
    breaking_point: {max_ttft_p99_ms: 40}
    axes:
      concurrency: [1, 4, 16]
";
    let (run_dir, o) = run_yaml(tmp.path(), yaml, &["--no-calibrate"], plugins.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let s = read_json(&run_dir.join("summary.json"));
    let c = cells(&s);
    assert_eq!(c.len(), 3);
    let level = |i: usize| {
        (
            c[i]["cell"]["params"]["concurrency"].as_u64().unwrap(),
            &c[i],
        )
    };
    let (c1, one) = level(0);
    let (c4, four) = level(1);
    let (c16, sixteen) = level(2);
    assert_eq!((c1, c4, c16), (1, 4, 16));
    assert_eq!(one["status"], "ok");
    assert_eq!(one["stability"]["stable"], true, "{}", one["stability"]);
    assert_eq!(four["status"], "ok");
    assert_eq!(four["stability"]["stable"], false, "{}", four["stability"]);
    let why = four["stability"]["why"].as_str().unwrap();
    assert!(why.contains("TTFT p99") && why.contains("> 40 ms"), "{why}");
    assert_eq!(sixteen["status"], "unsupported");
    let reason = sixteen["reason"].as_str().unwrap();
    assert!(
        reason
            .starts_with("not run: past the breaking point, concurrency 4 already passed a bound"),
        "{reason}"
    );
    assert!(sixteen["metrics"].is_null(), "nothing was measured");
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("## Breaking point"), "{md}");
    assert!(
        md.contains("| ramp/tiny/slow | concurrency | error rate ≤ 1%, TTFT p99 ≤ 40 ms | 1, 4 | 1 | 1 | 4: "),
        "{md}"
    );

    // A bound on an open loop is an error.
    let bad = yaml.replace("kind: concurrency", "kind: serving");
    let m = tmp.path().join("bad.yaml");
    std::fs::write(&m, bad).unwrap();
    let o = run(&["validate", m.to_str().unwrap()], plugins.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("bad.yaml:14:21: scenarios[0].breaking_point: breaking_point raises the concurrency or the batch size of a closed loop"),
        "{}",
        text(&o.stderr)
    );
}
