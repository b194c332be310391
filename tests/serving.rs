//! End-to-end: the open-loop `serving` scenario on the tiny model in
//! candle: a sweep finds the highest sustainable rate, a later spike runs
//! at twice it, the report and charts show both, and `sustainable`
//! without a sweep fails with its reason.

use integration_tests::*;

#[test]
fn a_sweep_feeds_the_spike_that_follows_it() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("serving-sweep");
    let yaml = "\
name: sweep
models:
  - {name: tiny, weights: synthetic, config: tiny, seed: 0}
engines:
  - {name: candle, options: {threads: 1}}
  - {name: other, plugin: candle, options: {threads: 1}}
scenarios:
  - name: capacity
    kind: serving
    engines: [candle]
    load: sweep
    arrival: constant
    input_tokens: 8
    output_tokens: 4
    request_rate: 40
    duration_s: 0.5
    sweep_steps: 1
    slo_ttft_ms: 25
  - name: stress
    kind: serving
    input_tokens: 8
    output_tokens: 4
    request_rate: sustainable
    rate_scale: 0.5
    load: spike
    duration_s: 3
    spike_at_s: 1
    spike_s: 0.5
    slo_ttft_ms: 25
";
    let (run_dir, o) = run_yaml(tmp.path(), yaml, &["--no-calibrate"], plugins.path());
    // The other engine's spike has no sustainable rate to start from: its
    // cell fails, and so the run's status is 5.
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let cells = summary["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3);
    let sweep = &cells[0];
    assert_eq!(sweep["status"], "ok", "{sweep}");
    let sw = &sweep["metrics"]["serving"]["sweep"];
    let best = sw["max_sustainable_rate"]
        .as_f64()
        .unwrap_or_else(|| panic!("no rate passed: {sw}"));
    let steps = sw["steps"].as_array().unwrap();
    assert!(steps.len() >= 2, "{sw}");
    // The answer is the highest rate that passed, and every rate above
    // it that was tried failed.
    for st in steps {
        let rate = st["rate"].as_f64().unwrap();
        if st["passed"] == true {
            assert!(rate <= best, "{sw}");
        } else {
            assert!(rate > best, "{sw}");
        }
    }
    // The cell's own figures are those of that rate.
    let reported = sweep["metrics"]["serving"]["request_rate"]
        .as_f64()
        .unwrap();
    assert_eq!(reported, best);

    let spike = cells
        .iter()
        .find(|c| c["cell"]["scenario"] == "stress" && c["cell"]["engine"] == "candle")
        .unwrap();
    assert_eq!(spike["status"], "ok", "{spike}");
    let s = &spike["metrics"]["serving"];
    assert_eq!(s["request_rate"].as_f64().unwrap(), best * 0.5, "{s}");
    assert!(s["spike"]["baseline_ttft_p50_ms"].as_f64().is_some(), "{s}");
    // Half the sustainable rate, twice that for 0.5 s, in a 3 s run: the
    // schedule holds about best / 2 x (3 + 0.5) requests.
    let n = s["scheduled"].as_f64().unwrap();
    let expected = best * 0.5 * 3.5;
    assert!(
        (n - expected).abs() <= expected * 0.05 + 2.0,
        "{n} scheduled, ~{expected} expected"
    );

    // The engine without a sweep has no sustainable rate to run at.
    let other = cells
        .iter()
        .find(|c| c["cell"]["engine"] == "other")
        .unwrap();
    assert_eq!(other["status"], "failed");
    assert!(
        other["reason"]
            .as_str()
            .unwrap()
            .contains("needs the max_sustainable_rate of a `load: sweep` cell of model 'tiny' on engine 'other'"),
        "{other}"
    );

    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("### Sustainable-rate sweeps"), "{md}");
    assert!(
        md.contains("not recovered") || md.contains("| spike |"),
        "{md}"
    );
    let charts = run_dir.join("charts");
    for name in ["sweep-capacity-tiny.svg", "spike-stress-tiny.svg"] {
        let p = charts.join(name);
        let svg = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(svg.contains("<svg"), "{name}");
    }
}
