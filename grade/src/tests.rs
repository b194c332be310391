use super::*;
use engine_matrix_format::breaking::BreakingPoint;
use engine_matrix_format::Matrix;
use engine_matrix_results::metrics::{CellMetrics, MetricAliases};
use engine_matrix_results::{LeakCheck, MemoryRecord, SystemInfo, SCHEMA_VERSION};
use engine_matrix_stats::stats::summarize;
use proptest::prelude::*;
use std::path::Path;

const MATRIX: &str = r#"
baseline: a
models:
  - {name: m, weights: synthetic, config: tiny}
engines:
  - {name: a, plugin: candle}
  - {name: b, plugin: candle}
scenarios:
  - name: lat
    kind: latency
    axes: {batch_size: [1, 4]}
  - name: thr
    kind: throughput
"#;

fn matrix(targets: &str) -> Matrix {
    Matrix::parse(
        &format!("{MATRIX}targets: {targets}\n"),
        Path::new("t.yaml"),
    )
    .unwrap()
}

fn metrics(tok_s: f64, ttft: &[f64], itl: &[f64]) -> CellMetrics {
    CellMetrics {
        iterations: 1,
        requests: 10,
        completed: 10,
        failed: 0,
        failure_reasons: Default::default(),
        output_length_mismatches: 0,
        out_of_vocab_tokens: 0,
        token_count_disagreements: 0,
        duration_s: 1.0,
        total_input_tokens: 0,
        total_output_tokens: 0,
        request_throughput: tok_s / 10.0,
        output_throughput: tok_s,
        total_token_throughput: tok_s,
        ttft_ms: summarize(ttft),
        tpot_ms: None,
        itl_ms: summarize(itl),
        e2el_ms: None,
        engine_queue_ms: None,
        engine_prefill_ms: None,
        aliases: MetricAliases::default(),
        per_iteration: vec![],
        serving: None,
        input_lengths: None,
        output_lengths: None,
        input_histogram: None,
        output_histogram: None,
        cached_prompt_tokens: None,
        prefix_cache_hit_rate: None,
        per_turn: vec![],
        workload: None,
        server: None,
    }
}

fn result(cell: &engine_matrix_format::Cell, m: CellMetrics, repeat: u32) -> CellResult {
    CellResult {
        cell: cell.clone(),
        plugin: "candle".into(),
        status: Status::Ok,
        reason: None,
        started_at: String::new(),
        wall_s: 0.0,
        memory: None,
        metrics: Some(m),
        repeat,
        efficiency: None,
        quality: None,
        model_details: None,
        stability: None,
        retrieval: None,
        generator: None,
    }
}

fn summary(matrix: &Matrix, cells: Vec<CellResult>) -> Summary {
    Summary {
        schema_version: SCHEMA_VERSION,
        tool: "engine-matrix".into(),
        matrix_name: "t".into(),
        matrix_path: "t.yaml".into(),
        baseline: matrix.baseline.clone(),
        quick: false,
        repeats: 1,
        only: vec![],
        command: vec![],
        started_at: String::new(),
        finished_at: None,
        complete: true,
        stopped: None,
        idle_power: None,
        telemetry_unavailable: vec![],
        system: SystemInfo {
            hostname: None,
            os: None,
            os_version: None,
            kernel: None,
            arch: "x86_64".into(),
            cpu_model: None,
            physical_cores: None,
            logical_cores: 2,
            memory_bytes: 10_000_000_000,
            engine_matrix_version: "0".into(),
            git_commit: "0".into(),
            env: Default::default(),
            gpus: vec![],
            gpu_driver: None,
        },
        limits: None,
        engines: vec![],
        models: vec![],
        cells,
        targets: None,
        tuned: None,
        shard: None,
        merged: Vec::new(),
        load_shard: None,
    }
}

/// Every cell of the matrix, engine `a` at `a_tok_s` and `b` at `b_tok_s`,
/// TTFT `ttft` ms.
fn run(matrix: &Matrix, a_tok_s: f64, b_tok_s: f64, ttft: f64) -> Summary {
    let cells = matrix
        .cells(false)
        .iter()
        .map(|c| {
            let tok_s = if c.engine == "a" { a_tok_s } else { b_tok_s };
            result(c, metrics(tok_s, &[ttft], &[10.0; 128]), 0)
        })
        .collect();
    summary(matrix, cells)
}

fn target<'a>(r: &'a TargetsReport, name: &str) -> &'a TargetOutcome {
    r.targets.iter().find(|t| t.def.name == name).unwrap()
}

#[test]
fn verdicts_follow_the_bounds_and_the_acceptable_level() {
    let m = matrix("[{name: tok, metric: output_throughput, min: 30, acceptable: 20}]");
    let def = &m.targets.as_ref().unwrap().targets[0];
    assert_eq!(verdict(def, 30.0), Verdict::Met);
    assert_eq!(verdict(def, 29.9), Verdict::Acceptable);
    assert_eq!(verdict(def, 20.0), Verdict::Acceptable);
    assert_eq!(verdict(def, 19.9), Verdict::Missed);
    let m = matrix("[{metric: spike_rate_pct, min: 5, max: 15, acceptable: [2, 20]}]");
    let def = &m.targets.as_ref().unwrap().targets[0];
    assert_eq!(verdict(def, 4.0), Verdict::Acceptable);
    assert_eq!(verdict(def, 10.0), Verdict::Met);
    assert_eq!(verdict(def, 21.0), Verdict::Missed);
    assert_eq!(verdict(def, 1.0), Verdict::Missed);
}

#[test]
fn a_target_takes_its_worst_cell_and_engines_are_graded_apart() {
    let m = matrix(
        "[{name: tok, metric: output_throughput, min: 30, acceptable: 20}, {name: ttft, metric: ttft_ms.p50, max: 100}]",
    );
    // a at 25 tok/s (acceptable), b at 40 (met); TTFT 50 ms everywhere.
    let s = run(&m, 25.0, 40.0, 50.0);
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    let tok = target(&r, "tok");
    assert_eq!(tok.verdict, Some(Verdict::Acceptable));
    assert_eq!(tok.cells.len(), 6, "3 workloads x 2 engines");
    assert_eq!(target(&r, "ttft").verdict, Some(Verdict::Met));
    assert_eq!(
        (r.targets_met, r.total_targets, r.targets_missed),
        (1, 2, 0)
    );
    assert_eq!(r.grade, Some(Grade::Poor), "1 of 2 is 50%");
    let a = r.by_engine.iter().find(|e| e.engine == "a").unwrap();
    let b = r.by_engine.iter().find(|e| e.engine == "b").unwrap();
    assert_eq!(
        (a.targets_met, a.targets_acceptable, a.grade),
        (1, 1, Some(Grade::Poor))
    );
    assert_eq!(
        (b.targets_met, b.total_targets, b.grade),
        (2, 2, Some(Grade::Excellent))
    );
}

#[test]
fn filters_choose_the_cells() {
    let m = matrix("[{metric: output_throughput, min: 30, engines: [b], kinds: [latency]}]");
    let s = run(&m, 1.0, 40.0, 50.0);
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    let t = &r.targets[0];
    assert_eq!(
        t.verdict,
        Some(Verdict::Met),
        "engine a's 1 tok/s is not in scope"
    );
    assert!(t
        .cells
        .iter()
        .all(|c| c.engine == "b" && c.cell.starts_with("lat/")));
    assert_eq!(t.cells.len(), 2);
}

#[test]
fn a_target_naming_an_engine_selects_it_on_every_machine_class() {
    // A merged run whose shards ran on two kinds of machine: b's cells are
    // labelled `b @ A` and `b @ B`; a target on engine b grades both, and
    // each class is graded apart.
    let m = matrix("[{metric: output_throughput, min: 30, engines: [b], kinds: [latency]}]");
    let mut cells = Vec::new();
    for (class, tok_s) in [("A", 40.0), ("B", 20.0)] {
        for c in m.cells(false).iter().filter(|c| c.engine == "b") {
            let mut c = c.clone();
            c.engine = format!("b @ {class}");
            c.id = c.id.replacen("/b/", &format!("/b @ {class}/"), 1);
            cells.push(result(&c, metrics(tok_s, &[50.0], &[10.0; 128]), 0));
        }
    }
    let s = summary(&m, cells);
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    let t = &r.targets[0];
    assert_eq!(t.cells.len(), 4, "2 latency cells on each class");
    assert_eq!(t.verdict, Some(Verdict::Missed), "class B's 20 tok/s");
    let grade = |e: &str| r.by_engine.iter().find(|x| x.engine == e).unwrap().grade;
    assert_eq!(grade("b @ A"), Some(Grade::Excellent));
    assert_eq!(grade("b @ B"), Some(Grade::Poor));
}

#[test]
fn speedup_is_over_the_baseline_twin_and_skips_the_baseline() {
    let m = matrix("[{metric: speedup, min: 2, acceptable: 1.5}]");
    let s = run(&m, 10.0, 17.0, 50.0);
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    let t = &r.targets[0];
    assert_eq!(t.cells.len(), 3, "b's three cells; a is the baseline");
    for c in &t.cells {
        assert_eq!(c.engine, "b");
        assert!((c.value - 1.7).abs() < 1e-9, "{}", c.value);
    }
    assert_eq!(t.verdict, Some(Verdict::Acceptable));
}

#[test]
fn repeats_are_judged_on_their_median() {
    let m = matrix("[{metric: output_throughput, min: 30, engines: [a], kinds: [throughput]}]");
    let cell = m
        .cells(false)
        .into_iter()
        .find(|c| c.engine == "a" && c.scenario == "thr")
        .unwrap();
    // One slow repeat of three does not miss the target.
    let cells = [35.0, 12.0, 33.0]
        .iter()
        .enumerate()
        .map(|(i, &v)| result(&cell, metrics(v, &[1.0], &[1.0]), i as u32))
        .collect();
    let r = evaluate(m.targets.as_ref().unwrap(), &summary(&m, cells));
    let c = &r.targets[0].cells[0];
    assert_eq!((c.value, c.samples, c.verdict), (33.0, 3, Verdict::Met));
}

#[test]
fn unmeasured_cells_are_not_misses() {
    // No ITL samples: no spike rate; a leak check too short for a verdict.
    let m = matrix(
        "[{metric: spike_rate_pct, max: 15}, {metric: leak_mb_per_h, max: 0, acceptable: 10}]",
    );
    let mut s = run(&m, 10.0, 10.0, 5.0);
    for c in &mut s.cells {
        c.metrics.as_mut().unwrap().itl_ms = None;
        c.memory = Some(MemoryRecord {
            leak: Some(LeakCheck {
                samples: 3,
                window_s: 0.5,
                slope_mb_per_hour: 500.0,
                growth_mb: 0.1,
                first_half_mb_per_hour: 0.0,
                second_half_mb_per_hour: 0.0,
                observed_growth_mb: 0.1,
                verdict: LeakVerdict::Insufficient,
                note: Some("too short".into()),
            }),
            ..Default::default()
        });
    }
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    assert!(r
        .targets
        .iter()
        .all(|t| t.verdict.is_none() && t.unmeasured.len() == 6));
    assert_eq!((r.total_targets, r.grade), (0, None));
    assert_eq!(target(&r, "leak_mb_per_h").unmeasured[0].why, "too short");
}

#[test]
fn a_spike_rate_needs_enough_latencies() {
    let m = matrix("[{metric: spike_rate_pct, min: 5, max: 15}]");
    let mut s = run(&m, 10.0, 10.0, 5.0);
    // 1 spike in 120: 0.83%, judged; 1 in 20: too few to judge.
    let mut many = vec![10.0; 119];
    many.push(100.0);
    let mut few = vec![10.0; 19];
    few.push(100.0);
    for (i, c) in s.cells.iter_mut().enumerate() {
        c.metrics.as_mut().unwrap().itl_ms = summarize(if i == 0 { &many } else { &few });
    }
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    let t = &r.targets[0];
    assert_eq!(t.cells.len(), 1);
    assert!((t.cells[0].value - 100.0 / 120.0).abs() < 1e-9);
    assert_eq!(t.verdict, Some(Verdict::Missed));
    assert_eq!(t.unmeasured.len(), 5);
    assert!(t.unmeasured[0]
        .why
        .contains("20 inter-token latencies: too few"));
}

#[test]
fn a_leak_counts_only_when_the_check_finds_one() {
    let m = matrix("[{metric: leak_mb_per_h, max: 0, acceptable: 10}]");
    let mut s = run(&m, 10.0, 10.0, 5.0);
    for (i, c) in s.cells.iter_mut().enumerate() {
        let verdict = if i == 0 {
            LeakVerdict::Leak
        } else {
            LeakVerdict::NoLeak
        };
        c.memory = Some(MemoryRecord {
            leak: Some(LeakCheck {
                samples: 100,
                window_s: 60.0,
                // A noisy slope on the cleared cells is not growth.
                slope_mb_per_hour: if i == 0 { 40.0 } else { 3.0 },
                growth_mb: 0.7,
                first_half_mb_per_hour: 40.0,
                second_half_mb_per_hour: 40.0,
                observed_growth_mb: 0.7,
                verdict,
                note: None,
            }),
            ..Default::default()
        });
    }
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    let t = &r.targets[0];
    assert_eq!(
        t.cells.iter().filter(|c| c.verdict == Verdict::Met).count(),
        5
    );
    assert_eq!(t.cells[0].value, 40.0);
    assert_eq!(t.verdict, Some(Verdict::Missed));
}

#[test]
fn failed_cells_are_not_graded() {
    let m = matrix("[{metric: output_throughput, min: 30}]");
    let mut s = run(&m, 40.0, 40.0, 5.0);
    s.cells[0].status = Status::Failed;
    s.cells[0].metrics.as_mut().unwrap().output_throughput = 1.0;
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    assert_eq!(r.targets[0].cells.len(), 5);
    assert_eq!(r.grade, Some(Grade::Excellent));
}

#[test]
fn profiles_expand_and_a_written_target_replaces_one_of_theirs() {
    let m = matrix("[cpu_only, {name: cpu_only.ttft, metric: ttft_ms.p99, max: 40}]");
    let t = m.targets.as_ref().unwrap();
    assert_eq!(t.profiles, ["cpu_only"]);
    let names: Vec<&str> = t.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cpu_only.tok_s",
            "cpu_only.spike_rate",
            "cpu_only.memory",
            "cpu_only.retrieval_p95",
            "cpu_only.ttft"
        ]
    );
    assert_eq!(t.targets[4].metric, "ttft_ms.p99");
    assert_eq!(t.targets[4].source, "matrix");
    // cpu_only's memory target: peak RSS under 90% of the system's.
    let mut s = run(&m, 40.0, 40.0, 5.0);
    for c in &mut s.cells {
        c.memory = Some(MemoryRecord {
            peak_rss_bytes: Some(9_500_000_000),
            ..Default::default()
        });
    }
    let r = evaluate(t, &s);
    assert_eq!(target(&r, "cpu_only.memory").verdict, Some(Verdict::Missed));
    assert!((target(&r, "cpu_only.memory").cells[0].value - 95.0).abs() < 1e-9);
}

#[test]
fn a_profiles_target_the_matrix_cannot_have_is_not_applicable() {
    // No baseline: the plan's speedup target cannot be measured.
    let text = MATRIX.replace("baseline: a\n", "") + "targets: gpt2_plan\n";
    let m = Matrix::parse(&text, Path::new("t.yaml")).unwrap();
    let s = run(&m, 40.0, 40.0, 5.0);
    let r = evaluate(m.targets.as_ref().unwrap(), &s);
    let speedup = target(&r, "gpt2_plan.speedup");
    assert_eq!(speedup.verdict, None);
    assert!(
        speedup.note.as_deref().unwrap().contains("baseline"),
        "{:?}",
        speedup.note
    );
    // The request-throughput target is for batched scenarios only.
    let thr = target(&r, "gpt2_plan.throughput");
    assert!(thr.cells.iter().all(|c| c.cell.starts_with("thr/")));
}

#[test]
fn the_grade_table() {
    assert_eq!(grade(0, 0), None);
    assert_eq!(grade(9, 10), Some(Grade::Excellent));
    assert_eq!(grade(8, 10), Some(Grade::Good));
    assert_eq!(grade(89, 100), Some(Grade::Good));
    assert_eq!(grade(6, 10), Some(Grade::Acceptable));
    assert_eq!(grade(59, 100), Some(Grade::Poor));
    assert_eq!(grade(0, 3), Some(Grade::Poor));
    assert_eq!(grade(3, 3), Some(Grade::Excellent));
    assert_eq!(Grade::parse("good"), Some(Grade::Good));
    assert!(Grade::Excellent > Grade::Good && Grade::Acceptable > Grade::Poor);
}

proptest! {
    /// Meeting one more target never lowers the grade.
    #[test]
    fn the_grade_is_monotone(total in 1usize..200, met in 0usize..200) {
        let met = met.min(total - 1);
        prop_assert!(grade(met + 1, total) >= grade(met, total));
        prop_assert!(grade(met, total).is_some());
    }

    /// Inside the target is met, whatever the acceptable level.
    #[test]
    fn inside_the_target_is_met(lo in -1e6f64..1e6, width in 0f64..1e6, t in 0f64..=1.0) {
        let m = matrix(&format!("[{{metric: ttft_ms.p50, min: {lo}, max: {}, acceptable: [{}, {}]}}]", lo + width, lo - 1.0, lo + width + 1.0));
        let def = &m.targets.as_ref().unwrap().targets[0];
        prop_assert_eq!(verdict(def, lo + t * width), Verdict::Met);
        prop_assert_eq!(verdict(def, lo - 0.5), Verdict::Acceptable);
        prop_assert_eq!(verdict(def, lo - 2.0), Verdict::Missed);
    }
}

#[test]
fn a_level_is_stable_within_its_bounds() {
    let bp = BreakingPoint {
        max_error_rate_pct: 1.0,
        max_ttft_p99_ms: Some(100.0),
        max_e2el_p99_ms: None,
        max_peak_rss_pct: None,
    };
    let m = matrix("[{metric: output_throughput, min: 1}]");
    let cell = &m.cells(false)[0];
    let mut r = result(cell, metrics(10.0, &[50.0; 10], &[1.0]), 0);
    let s = stability(&bp, &r, 1 << 30).unwrap();
    assert!(s.stable, "{}", s.why);
    assert_eq!(s.why, "error rate 0.0%, TTFT p99 50 ms");
    r.metrics.as_mut().unwrap().ttft_ms = summarize(&[50.0, 150.0]);
    let s = stability(&bp, &r, 1 << 30).unwrap();
    assert!(!s.stable);
    assert!(s.why.contains("TTFT p99 149 ms > 100 ms"), "{}", s.why);
    // One failure in ten requests: 10% > 1%.
    r.metrics.as_mut().unwrap().ttft_ms = summarize(&[50.0]);
    r.metrics.as_mut().unwrap().failed = 1;
    let s = stability(&bp, &r, 1 << 30).unwrap();
    assert!(
        !s.stable && s.why.starts_with("error rate 10.0% > 1%"),
        "{}",
        s.why
    );
    r.status = Status::Failed;
    r.reason = Some("worker died".into());
    assert_eq!(
        stability(&bp, &r, 1 << 30).unwrap().why,
        "the cell failed: worker died"
    );
    r.status = Status::Unsupported;
    assert_eq!(stability(&bp, &r, 1 << 30), None);
}

#[test]
fn a_level_is_unstable_past_its_memory_share() {
    let bp = BreakingPoint {
        max_error_rate_pct: 1.0,
        max_ttft_p99_ms: None,
        max_e2el_p99_ms: None,
        max_peak_rss_pct: Some(50.0),
    };
    let m = matrix("[{metric: output_throughput, min: 1}]");
    let mut r = result(&m.cells(false)[0], metrics(10.0, &[5.0], &[1.0]), 0);
    r.memory = Some(MemoryRecord {
        peak_rss_bytes: Some(400),
        ..Default::default()
    });
    let s = stability(&bp, &r, 1000).unwrap();
    assert!(
        s.stable && s.why.ends_with("peak RSS 40.0% of memory"),
        "{}",
        s.why
    );
    r.memory.as_mut().unwrap().peak_rss_bytes = Some(600);
    let s = stability(&bp, &r, 1000).unwrap();
    assert!(
        !s.stable && s.why.ends_with("peak RSS 60.0% > 50% of memory"),
        "{}",
        s.why
    );
    r.memory = None;
    assert!(
        !stability(&bp, &r, 1000).unwrap().stable,
        "no reading: not judged stable"
    );
}

/// A retrieval cell of the sweep of `engine` at search setting `ef`.
fn retrieval_result(
    cell: &engine_matrix_format::Cell,
    recall: f64,
    qps: f64,
    p95: f64,
) -> CellResult {
    use engine_matrix_results::retrieval::{BuildRecord, RetrievalMetrics};
    let mut lat = summarize(&[p95 / 2.0, p95]).unwrap();
    lat.p95 = p95;
    let p = cell.retrieval.clone().unwrap();
    CellResult {
        metrics: None,
        retrieval: Some(RetrievalMetrics {
            index_size: p.index_size,
            dim: p.dim,
            metric: p.metric.clone(),
            k: p.k,
            queries: p.queries,
            batch_size: 1,
            concurrency: 1,
            search: serde_json::Value::Object(p.search.clone()),
            build: BuildRecord {
                key: "k".into(),
                built_here: true,
                seconds: 3.0,
                threads: 2,
                engine_bytes: None,
                rss_bytes: None,
                data_bytes: 0,
            },
            recall,
            recall_min: recall,
            queries_below_half: 0.0,
            latency_ms: lat,
            qps,
            passes: 1,
            calls: 10,
            duration_s: 1.0,
            per_pass_qps: vec![qps],
            truth: "computed".into(),
        }),
        ..result(cell, metrics(0.0, &[], &[]), 0)
    }
}

#[test]
fn retrieval_targets_judge_the_operating_point_and_llm_targets_skip_retrieval_cells() {
    let m = Matrix::parse(
        "vectors: [{name: v, synthetic: {}}]\n\
         engines: [{name: a, plugin: usearch}, {name: b, plugin: hnsw}]\n\
         targets: [retrieval, cpu_only, {name: fast, metric: qps, min: 1500}]\n\
         scenarios:\n\
         - {name: s, kind: retrieval, search: {a: {ef: [1, 2, 3]}, b: {ef: [1, 2]}}}\n",
        Path::new("t.yaml"),
    )
    .unwrap();
    let cells = m.cells(false);
    let sweep_a = [
        (0.90, 3000.0, 1.0),
        (0.96, 2000.0, 30.0),
        (0.99, 1000.0, 5.0),
    ];
    let mut results: Vec<CellResult> = cells[..3]
        .iter()
        .zip(sweep_a)
        .map(|(c, (r, q, p))| retrieval_result(c, r, q, p))
        .collect();
    // Engine b never reaches the recall: nothing of it is judged on p95.
    results.push(retrieval_result(&cells[3], 0.5, 4000.0, 0.5));
    results.push(retrieval_result(&cells[4], 0.7, 3500.0, 0.6));
    let s = summary(&m, results);
    let report = evaluate(m.targets.as_ref().unwrap(), &s);
    let t = |name: &str| report.targets.iter().find(|t| t.def.name == name).unwrap();
    let p95 = t("retrieval.retrieval_p95");
    // Only a's operating point (recall 0.96, the fastest at >= 0.95) is
    // judged: its p95 of 30 ms misses the 20 ms target, though the slower
    // setting's 5 ms would have met it.
    assert_eq!(p95.cells.len(), 1, "{:?}", p95.cells);
    assert_eq!(p95.cells[0].cell, cells[1].id);
    assert_eq!(p95.cells[0].value, 30.0);
    assert_eq!(p95.verdict, Some(Verdict::Missed));
    assert!(p95
        .unmeasured
        .iter()
        .any(|u| u.cell == cells[3].id && u.why.contains("no search setting")));
    // A per-cell metric judges every retrieval cell.
    let fast = t("fast");
    assert_eq!(fast.cells.len(), 5);
    assert_eq!(fast.verdict, Some(Verdict::Missed), "the 1000 QPS setting");
    // The LLM profile's tok/s and TTFT do not apply to retrieval cells at
    // all (no cell "unmeasured"); its memory target would, had the cells
    // a reading.
    let tok = t("cpu_only.tok_s");
    assert!(tok.cells.is_empty() && tok.unmeasured.is_empty(), "{tok:?}");
    assert!(
        tok.note
            .as_deref()
            .unwrap_or("")
            .contains("only retrieval cells"),
        "{tok:?}"
    );
    assert_eq!(
        t("cpu_only.memory").unmeasured.len(),
        5,
        "no RSS reading in these cells"
    );
}
