//! `engine-matrix tune` end to end on the fault plugin, whose step time is
//! a known function of two tunable options (`knob` 0..=15, `gear`
//! low|mid|high; fastest at knob 11, gear mid: see its `speed_factor`,
//! on with `speed_test: true`) with injected noise. Every trial is a real cell in a worker process.

use integration_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fault plugin's speed factor (kept in step with `speed_factor`).
fn factor(knob: i64, gear: &str) -> f64 {
    let g = match gear {
        "mid" => 1.0,
        "high" => 1.25,
        _ => 1.6,
    };
    (1.0 + 0.04 * ((knob - 11) as f64).powi(2)) * g
}

fn config_factor(c: &serde_json::Value) -> f64 {
    factor(c["knob"].as_i64().unwrap(), c["gear"].as_str().unwrap())
}

fn matrix(extra_engine_options: &str, tune: &str) -> String {
    format!(
        "\
name: tune-fault
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - {{name: fault, plugin: fault, options: {{speed_test: true, step_ms: 2, noise: 0.03{extra_engine_options}}}}}
scenarios:
  - name: decode
    kind: latency
    warmup: 1
    iterations: 3
    input_tokens: 4
    output_tokens: 12
{tune}"
    )
}

fn tune(
    dir: &Path,
    yaml: &str,
    extra: &[&str],
    plugins: &Path,
) -> (std::path::PathBuf, std::process::Output) {
    let m = dir.join("m.yaml");
    std::fs::write(&m, yaml).unwrap();
    let out = dir.join("tune");
    let mut args = vec![
        "tune",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-calibrate",
    ];
    args.extend_from_slice(extra);
    let o = run(&args, plugins);
    (out, o)
}

fn trials(dir: &Path) -> Vec<serde_json::Value> {
    read_jsonl(&dir.join("trials.jsonl"))
}

fn search_trials(t: &[serde_json::Value]) -> usize {
    t.iter()
        .filter(|t| t["step"]["phase"] != "validate")
        .count()
}

/// The tuner finds the optimum's neighbourhood with 14 search trials (29%
/// of the 48-point grid), proves the gain over the defaults in paired
/// rounds, records every trial as a cell, reports it, and its snippet
/// runs as a matrix engine that is faster than the defaults.
#[test]
fn tune_finds_the_fast_settings_and_its_snippet_runs() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("tune");
    let yaml = matrix("", "tune:\n  budget: 14trials\n");
    let (dir, o) = tune(tmp.path(), &yaml, &[], plugins.path());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let t = read_json(&dir.join("tune.json"));
    let out = &t["outcomes"];
    assert_eq!(out["grid_size"], 48);
    assert_eq!(out["winner_is_default"], false, "{}", out["verdict"]);
    let winner = &out["winner"];
    assert!(
        config_factor(winner) <= 1.17,
        "winner {winner} is not near knob 11, gear mid"
    );
    let imp = &out["improvement"]["ratio"];
    // The defaults (knob 0, gear low) are 9.3x slower in step time; with
    // the fixed per-token overheads the measured gain is smaller but large.
    assert!(imp["lo"].as_f64().unwrap() > 2.0, "{imp}");
    let recorded = trials(&dir);
    assert_eq!(search_trials(&recorded), 14);
    assert_eq!(recorded.len(), out["trials"].as_array().unwrap().len());
    // Every trial is a cell of the run folder, once.
    let lines = read_jsonl(&dir.join("results.jsonl"));
    assert_eq!(lines.len(), recorded.len());
    let mut ids: Vec<&str> = lines
        .iter()
        .map(|l| l["cell"]["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), lines.len(), "a trial ran twice");
    assert!(ids
        .iter()
        .all(|i| i.contains("#explore-") || i.contains("#promote-") || i.contains("#validate-")));
    let conv = &out["convergence"];
    assert!(conv["trials"].as_u64().unwrap() <= 14);
    // The report and the charts.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("## Tuning") && md.contains("beats the defaults"),
        "{md}"
    );
    assert!(
        md.contains("### Validation") && md.contains("validate-r6-s"),
        "{md}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"tuning\""));
    assert!(dir.join("charts/tune-convergence.svg").is_file());
    assert!(dir.join("charts/tune-convergence-time.svg").is_file());
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("14 search trials of a 48-point grid"),
        "{stdout}"
    );

    // tuned.yaml holds what differs from the defaults, for `run --tuned`
    // (here beside the defaults: `--settings both`).
    let tuned = std::fs::read_to_string(dir.join("tuned.yaml")).unwrap();
    assert!(
        tuned.contains("engine: \"fault\"\nplugin: \"fault\"\n") && tuned.contains("\"knob\":"),
        "{tuned}"
    );
    let dir_arg = dir.to_str().unwrap();
    let (run_dir, o) = run_yaml(
        tmp.path(),
        &yaml,
        &["--no-calibrate", "--tuned", dir_arg, "--settings", "both"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        md.contains("## Tuned settings")
            && md.contains("| fault-tuned | gear=")
            && md.contains(" knob="),
        "{md}"
    );
    let cells = summary_cells(&run_dir);
    let tput = |e: &str| {
        cells
            .iter()
            .find(|c| c["cell"]["engine"] == e)
            .map(|c| c["metrics"]["output_throughput"].as_f64().unwrap())
            .unwrap()
    };
    assert!(
        tput("fault-tuned") > 2.0 * tput("fault"),
        "{} vs {}",
        tput("fault-tuned"),
        tput("fault")
    );
    // The same through the matrix: `tuned:` under the engine runs it at
    // the tuned settings under its own name (`settings: tuned`, the
    // default), and `settings: default` ignores them.
    let in_matrix = yaml.replace(
        "noise: 0.03}}",
        &format!(
            "noise: 0.03}}, tuned: {}}}",
            serde_json::Value::from(dir_arg)
        ),
    );
    let tmp2 = TempDir::new("tune-tuned");
    let (tuned_dir, o) = run_yaml(tmp2.path(), &in_matrix, &["--no-calibrate"], plugins.path());
    assert_eq!(o.status.code(), Some(0), "{}\n{in_matrix}", text(&o.stderr));
    let cells = summary_cells(&tuned_dir);
    assert_eq!(cells.len(), 1);
    let fast = cells[0]["metrics"]["output_throughput"].as_f64().unwrap();
    assert!(fast > 2.0 * tput("fault"), "{fast} vs {}", tput("fault"));
    let s = read_json(&tuned_dir.join("summary.json"));
    assert!(
        s["tuned"]["tuned"]["fault"]["options"]["knob"].is_number(),
        "{}",
        s["tuned"]
    );
    let plain = in_matrix.replace(
        "name: tune-fault\n",
        "name: tune-fault\nsettings: default\n",
    );
    let tmp3 = TempDir::new("tune-untuned");
    let (plain_dir, o) = run_yaml(tmp3.path(), &plain, &["--no-calibrate"], plugins.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let slow = summary_cells(&plain_dir)[0]["metrics"]["output_throughput"]
        .as_f64()
        .unwrap();
    assert!(fast > 2.0 * slow, "{fast} vs {slow}");
}

/// A constraint makes trials infeasible (with the value that broke it),
/// the search goes on, and the winner is never a configuration that broke
/// it; a trial whose cell fails is infeasible with the cell's reason.
#[test]
fn constraints_and_failing_trials_are_infeasible_not_fatal() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("tune-constraint");
    let yaml = matrix("", "");
    // Step times under 5 ms break it: the optimum (2 ms) does.
    let (dir, o) = tune(
        tmp.path(),
        &yaml,
        &["--budget", "10trials", "--constraint", "tpot_ms.p50 > 5"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let recorded = trials(&dir);
    let lines = read_jsonl(&dir.join("results.jsonl"));
    let mut broke = 0;
    for (t, l) in recorded.iter().zip(&lines) {
        let tpot = l["metrics"]["tpot_ms"]["p50"].as_f64().unwrap();
        match t
            .get("broken")
            .and_then(|b| b.as_array())
            .filter(|b| !b.is_empty())
        {
            Some(b) => {
                broke += 1;
                assert!(tpot <= 5.0, "{t}");
                assert!(
                    b[0].as_str().unwrap().starts_with("tpot_ms.p50 > 5 (was "),
                    "{t}"
                );
            }
            None => assert!(tpot > 5.0, "{t}: feasible with tpot {tpot}"),
        }
    }
    assert!(
        broke > 0,
        "nothing broke the constraint: the test proves nothing"
    );
    assert_eq!(
        search_trials(&recorded),
        10,
        "the search stopped at an infeasible trial"
    );
    let t = read_json(&dir.join("tune.json"));
    let winner = &t["outcomes"]["winner"];
    let rounds: Vec<&serde_json::Value> = recorded
        .iter()
        .filter(|t| t["config"] == *winner && t["step"]["phase"] == "validate")
        .collect();
    let kept = rounds
        .iter()
        .filter(|t| t["broken"].as_array().is_some_and(|b| b.is_empty()))
        .count();
    assert!(
        kept * 2 > rounds.len(),
        "the winner {winner} broke the constraint in most rounds"
    );

    // Every trial's cell fails at load: all infeasible, each with the
    // cell's reason, and the defaults stay.
    let tmp = TempDir::new("tune-fail");
    let yaml = matrix(", fault: abort, at: load", "");
    let (dir, o) = tune(tmp.path(), &yaml, &["--budget", "4trials"], plugins.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let recorded = trials(&dir);
    // 4 trials: 3 explore and 1 promote, but nothing feasible to promote
    // or validate.
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    for t in &recorded {
        assert_eq!(t["outcome"], "infeasible", "{t}");
        assert!(t["reason"].as_str().unwrap().starts_with("failed: "), "{t}");
    }
    let t = read_json(&dir.join("tune.json"));
    assert_eq!(t["outcomes"]["winner_is_default"], true);
    assert!(
        text(&o.stdout).contains("no configuration"),
        "{}",
        text(&o.stdout)
    );
}

/// Options the engine does not declare, values outside their domain, and
/// objectives a cell cannot have are errors naming the file and field.
#[test]
fn a_bad_space_or_objective_is_an_error_that_names_it() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("tune-bad");
    let cases = [
        (
            matrix("", "tune:\n  space:\n    fault: {turbo: [1, 2]}\n"),
            vec![],
            vec![
                "m.yaml:",
                "engine fault: `turbo` is not one of its tunable options (knob, gear)",
            ],
        ),
        (
            matrix(
                "",
                "tune:\n  space:\n    fault: {knob: {min: 3, max: 20}}\n",
            ),
            vec![],
            vec!["knob: the range 3..=20 is not inside its domain (integers 0..=15)"],
        ),
        (
            matrix("", "tune:\n  objective: qps\n"),
            vec![],
            vec!["--objective qps: a latency cell has no qps"],
        ),
        (
            matrix("", "tune:\n  space:\n    fault: {knob: 3, gear: mid}\n"),
            vec![],
            vec!["nothing to search: every tunable option is fixed"],
        ),
        (
            matrix("", ""),
            vec!["--engine", "nope"],
            vec!["--engine nope", "engines: fault"],
        ),
        (
            matrix("", ""),
            vec!["--budget", "1trials"],
            vec!["at least 2 trials"],
        ),
    ];
    // `validate` checks the space against the plugin's declaration too.
    let m = tmp.path().join("v.yaml");
    std::fs::write(
        &m,
        matrix("", "tune:\n  space:\n    fault: {turbo: [1, 2]}\n"),
    )
    .unwrap();
    let o = run(&["validate", m.to_str().unwrap()], plugins.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("v.yaml:15:") && err.contains("tune.space.fault: engine fault: `turbo`"),
        "{err}"
    );
    for (yaml, extra, want) in cases {
        let (_, o) = tune(tmp.path(), &yaml, &extra, plugins.path());
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{yaml}\n{err}");
        for w in want {
            assert!(err.contains(w), "{yaml}: want {w:?} in {err}");
        }
    }
}

/// Ctrl-C keeps the trials that ended; `--resume` measures only the rest.
#[test]
fn an_interrupted_tuning_resumes_without_measuring_anything_twice() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("tune-resume");
    let m = tmp.path().join("m.yaml");
    std::fs::write(&m, matrix("", "tune:\n  budget: 12trials\n")).unwrap();
    let dir = tmp.path().join("tune");
    let mut child = Command::new(binary())
        .args([
            "tune",
            m.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--no-calibrate",
            "--plugins",
        ])
        .arg(plugins.path())
        .env("ENGINE_MATRIX_CACHE", cache_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let count = || {
        std::fs::read_to_string(dir.join("trials.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    while count() < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no trials recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let before = std::fs::read_to_string(dir.join("trials.jsonl")).unwrap();
    let n = before.lines().count();
    assert!((5..12).contains(&n), "{n} trials before the interrupt");
    let o = run(
        &["tune", "--resume", dir.to_str().unwrap(), "--no-calibrate"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let after = std::fs::read_to_string(dir.join("trials.jsonl")).unwrap();
    assert!(after.starts_with(&before), "recorded trials changed");
    let recorded = trials(&dir);
    assert_eq!(search_trials(&recorded), 12);
    let mut steps: Vec<String> = recorded.iter().map(|t| t["step"].to_string()).collect();
    steps.sort();
    let all = steps.len();
    steps.dedup();
    assert_eq!(steps.len(), all, "a step was measured twice");
    let lines = read_jsonl(&dir.join("results.jsonl"));
    assert_eq!(lines.len(), recorded.len());
    assert_eq!(
        read_json(&dir.join("tune.json"))["outcomes"]["stopped"],
        serde_json::Value::Null
    );
}

/// A quality floor is a constraint like any other: every trial whose
/// output differs (here q4_0 weights) is compared with the reference
/// (candle's f32, unquantized model) over the quality text, and one whose
/// top-1 agreement is under the floor is infeasible, while speed-only
/// options share one evaluation. A quality metric is no objective.
#[test]
fn a_quality_floor_makes_lossy_trials_infeasible() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("tune-quality");
    std::fs::write(
        tmp.path().join("g.json"),
        r#"{"model_type": "gpt2", "vocab_size": 2048, "n_positions": 256, "n_embd": 64,
            "n_layer": 2, "n_head": 2}"#,
    )
    .unwrap();
    let yaml = "name: tune-quality
quality: {tokens: 256, quick_tokens: 256, context: 128}
models:
  - {name: g, weights: synthetic, config: g.json}
engines:
  - {name: candle, options: {threads: 1}}
scenarios:
  - name: decode
    kind: latency
    warmup: 0
    iterations: 2
    input_tokens: 8
    output_tokens: 4
tune:
  space:
    candle: {quantization: [none, q4_0], kernels: [fused, stock], max_batch: 1, batch_policy: none, prefix_cache: false}
";
    let floor = "top1_agreement_pct>=99";
    let (dir, o) = tune(
        tmp.path(),
        yaml,
        &["--budget", "6trials", "--constraint", floor],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let recorded = trials(&dir);
    let lines = read_jsonl(&dir.join("results.jsonl"));
    assert_eq!(recorded.len(), lines.len());
    let mut seen = std::collections::BTreeSet::new();
    for (t, l) in recorded.iter().zip(&lines) {
        let q = &l["quality"];
        let agree = q["top1_agreement"]
            .as_f64()
            .unwrap_or_else(|| panic!("trial {t} has no agreement: {q}"));
        let quant = t["config"]["quantization"].as_str().unwrap();
        seen.insert(quant.to_string());
        let broken = t["broken"].as_array().cloned().unwrap_or_default();
        if quant == "none" {
            assert!(agree > 0.99, "{t}: {q}");
            assert!(broken.is_empty(), "{t}");
        } else {
            assert!(agree < 0.99, "q4_0 agrees {agree}: the test proves nothing");
            assert!(
                broken[0]
                    .as_str()
                    .unwrap()
                    .starts_with("top1_agreement_pct >= 99 (was "),
                "{t}"
            );
        }
    }
    assert_eq!(seen.len(), 2, "both quantizations tried: {recorded:?}");
    let t = read_json(&dir.join("tune.json"));
    assert_eq!(t["outcomes"]["winner"]["quantization"], "none");
    // One evaluation per output: the q4_0 and f32 ones, whatever the
    // kernels (the others are copies, identical to the last digit).
    let secs: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| l["quality"]["seconds"].to_string())
        .collect();
    assert_eq!(secs.len(), 2, "{secs:?}");

    let (_, o) = tune(
        tmp.path(),
        yaml,
        &["--objective", "top1_agreement_pct"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("a quality metric is a floor"),
        "{}",
        text(&o.stderr)
    );
}

/// A time budget through real cells: exploring starts no trial after half
/// of it, and validation runs the rounds the rest allows (3 to 7).
#[test]
fn a_time_budget_stops_exploring_at_half_and_sizes_the_validation() {
    let plugins = plugin_dir(&["fault"]);
    let tmp = TempDir::new("tune-time");
    let (dir, o) = tune(
        tmp.path(),
        &matrix("", ""),
        &["--budget", "8s"],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let t = read_json(&dir.join("tune.json"));
    assert_eq!(t["request"]["budget"], "8s");
    let recorded = trials(&dir);
    let explored: Vec<&serde_json::Value> = recorded
        .iter()
        .filter(|t| t["step"]["phase"] == "explore")
        .collect();
    assert!(explored.len() >= 3, "{} explore trials", explored.len());
    for pair in explored.windows(2) {
        let started = pair[0]["elapsed_s"].as_f64().unwrap();
        assert!(started < 4.0, "a trial started at {started:.1} s of 8");
    }
    let rounds: std::collections::BTreeSet<u64> = recorded
        .iter()
        .filter(|t| t["step"]["phase"] == "validate")
        .map(|t| t["step"]["round"].as_u64().unwrap())
        .collect();
    assert!((3..=7).contains(&rounds.len()), "{rounds:?}");
}
