//! `engine-matrix report RUN_DIR` (also run at the end of `run`): turns a
//! run folder's `summary.json` into what reviewers read.
//!
//! * `report.html`: self-contained (inline SVG charts, no script);
//! * `report.md`: the same summary and tables in Markdown (printed at the
//!   end of a run);
//! * `summary.csv`: one row per cell and repetition, for pandas (retrieval
//!   cells fill its last columns, [`retrieval`]);
//! * `charts/*.png` and `charts/*.svg`: every chart in both formats.
//!
//! Everything is computed from `summary.json` alone ([`analysis`]), so an
//! interrupted run, an old run or a saved baseline can be re-reported.
//! Charts are data first ([`figures`]) and drawing second ([`charts`]).

pub mod analysis;
mod breaking;
pub mod charts;
pub mod compare;
pub mod csv;
pub mod figures;
mod generators;
pub mod history;
pub mod html;
mod lifecycle;
mod machines;
mod markdown;
mod pressure;
mod quality;
pub mod retrieval;
mod serving;
mod table;
mod targets;
pub mod trend;
pub mod tune;
mod tuned;
mod workload;

pub use markdown::markdown;
pub use markdown::{cell as md_cell, status_name, with_ci};

use engine_matrix_results::{SchemaError, Summary};
use std::path::{Path, PathBuf};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `summary.json` is missing, unreadable or of another schema.
    #[error(transparent)]
    Summary(#[from] SchemaError),
    #[error("cannot write {path}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Reports' results.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// `std::fs` errors with the path they concern.
pub(crate) fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// A file-name-safe stem for files in a run folder (charts, logs):
/// lowercase ASCII letters, digits, `-` and `_`, at most 100 characters.
pub fn slug(parts: &[&str]) -> String {
    let s: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    s.chars().take(100).collect()
}

/// What [`write`] produced.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub charts: usize,
    /// Why charts are missing, when they are.
    pub chart_error: Option<String>,
    pub markdown: String,
}

/// Reports the run folder `dir` from its `summary.json`.
pub fn write(dir: &Path) -> Result<Written> {
    let summary = Summary::read(&dir.join("summary.json"))?;
    write_summary(&summary, dir)
}

/// The executive summary with the missed targets, the quality
/// recommendations (a variant per engine, the fastest that keeps 95% top-1
/// agreement with the reference) and the retrieval engines' operating
/// points, composed here, above the modules, so that none of them needs
/// another.
pub(crate) fn executive(summary: &Summary, groups: &[analysis::Group]) -> analysis::Executive {
    let mut ex = analysis::executive(summary, groups);
    let at = ex.recommendations.len();
    let (found, advised) = retrieval::executive(groups);
    ex.findings.extend(found);
    let mut q = targets::recommendations(summary);
    q.extend(quality::recommendations(groups, 0.95));
    q.extend(advised);
    // before the closing remarks on statuses and repetitions
    let closing = ex
        .recommendations
        .iter()
        .position(|r| r.contains("cells were unsupported") || r.contains("`run --repeat N`"))
        .unwrap_or(at);
    ex.recommendations.splice(closing..closing, q);
    ex
}

/// Writes the report of `summary` into `dir`.
pub fn write_summary(summary: &Summary, dir: &Path) -> Result<Written> {
    let groups = analysis::groups(summary);
    let executive = executive(summary, &groups);
    let colors = figures::colors(summary);
    let chart_dir = dir.join("charts");
    io(&chart_dir, std::fs::create_dir_all(&chart_dir))?;
    let mut files = Vec::new();
    let mut rendered = Vec::new();
    let mut chart_error = None;
    let tuning = tune::read(dir);
    let tune_charts = tuning.as_ref().map(tune::charts).unwrap_or_default();
    for chart in tune_charts
        .into_iter()
        .chain(figures::all(summary, &groups))
    {
        match charts::render(&chart, &chart_dir) {
            Ok(r) => {
                files.push(r.svg_path.clone());
                files.push(r.png_path.clone());
                rendered.push(r);
            }
            Err(e) => {
                chart_error.get_or_insert(e);
            }
        }
    }
    let mut md = markdown(summary);
    if let Some(t) = &tuning {
        md.push_str(&tune::markdown(t));
    }
    let out = |name: &str, text: &str, files: &mut Vec<PathBuf>| -> Result<()> {
        let p = dir.join(name);
        io(&p, std::fs::write(&p, text))?;
        files.push(p);
        Ok(())
    };
    out("report.md", &md, &mut files)?;
    out("summary.csv", &csv::csv(summary), &mut files)?;
    let matrix_text = std::fs::read_to_string(dir.join("matrix.yaml")).ok();
    let page = html::html(&html::Inputs {
        summary,
        groups: &groups,
        executive: &executive,
        charts: &rendered,
        chart_error: chart_error.as_deref(),
        colors: &colors,
        matrix_text: matrix_text.as_deref(),
        tuning: tuning.as_ref(),
    });
    out("report.html", &page, &mut files)?;
    Ok(Written {
        files,
        charts: rendered.len(),
        chart_error,
        markdown: md,
    })
}

/// Hand-made run summaries for unit tests of the report and `compare`.
#[cfg(test)]
pub(crate) mod fixtures {
    use engine_matrix_format::{Cell, CellParams, ScenarioKind};
    use engine_matrix_results::metrics::{CellMetrics, IterationFigures, MetricAliases};
    use engine_matrix_results::{CellResult, Status, Summary, SCHEMA_VERSION};
    use engine_matrix_stats::stats::summarize;

    pub fn cell(engine: &str, input: u32, output: u32, batch: u32) -> Cell {
        let params = CellParams {
            label: None,
            input_tokens: input,
            output_tokens: output,
            batch_size: batch,
            concurrency: 1,
            batch_policy: engine_api::BatchPolicy::Static,
            max_batch: batch,
            num_requests: batch,
            requests: batch,
            duration_s: 0.0,
            dtype: "f32".into(),
            quantization: "none".into(),
            serving: None,
            dataset: None,
            pressure: None,
        };
        Cell {
            id: format!("latency/m/{engine}/in{input}-out{output}-bs{batch}"),
            scenario: "latency".into(),
            kind: ScenarioKind::Latency,
            model: "m".into(),
            engine: engine.into(),
            params,
            warmup: 0,
            iterations: 1,
            min_duration_s: 0.0,
            max_duration_s: 0.0,
            breaking_point: None,
            retrieval: None,
        }
    }

    /// Metrics whose iterations have these output tokens/s and TTFTs (ms).
    pub fn metrics(throughput: &[f64], ttft: &[f64], output: u32) -> CellMetrics {
        let per_iteration: Vec<IterationFigures> = throughput
            .iter()
            .zip(ttft)
            .enumerate()
            .map(|(i, (&t, &l))| IterationFigures {
                index: i as u32,
                duration_s: output as f64 / t,
                completed: 1,
                output_tokens: output as u64,
                request_throughput: t / output as f64,
                output_throughput: t,
                ttft_p50_ms: Some(l),
                tpot_p50_ms: Some(1000.0 / t),
                itl_p50_ms: Some(1000.0 / t),
                e2el_p50_ms: Some(l + output as f64 * 1000.0 / t),
            })
            .collect();
        let n = throughput.len();
        let med = |v: Vec<f64>| summarize(&v).map(|d| d.p50).unwrap_or(0.0);
        CellMetrics {
            iterations: n,
            requests: n,
            completed: n,
            failed: 0,
            failure_reasons: Default::default(),
            output_length_mismatches: 0,
            out_of_vocab_tokens: 0,
            token_count_disagreements: 0,
            duration_s: per_iteration.iter().map(|i| i.duration_s).sum(),
            total_input_tokens: 0,
            total_output_tokens: output as u64 * n as u64,
            request_throughput: med(per_iteration.iter().map(|i| i.request_throughput).collect()),
            output_throughput: med(throughput.to_vec()),
            total_token_throughput: med(throughput.to_vec()),
            ttft_ms: summarize(ttft),
            tpot_ms: summarize(
                &per_iteration
                    .iter()
                    .filter_map(|i| i.tpot_p50_ms)
                    .collect::<Vec<_>>(),
            ),
            itl_ms: summarize(
                &per_iteration
                    .iter()
                    .filter_map(|i| i.itl_p50_ms)
                    .collect::<Vec<_>>(),
            ),
            e2el_ms: summarize(
                &per_iteration
                    .iter()
                    .filter_map(|i| i.e2el_p50_ms)
                    .collect::<Vec<_>>(),
            ),
            engine_queue_ms: None,
            engine_prefill_ms: None,
            aliases: MetricAliases::default(),
            per_iteration,
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

    pub fn ok(cell: Cell, metrics: CellMetrics, repeat: u32) -> CellResult {
        CellResult {
            plugin: "candle".into(),
            cell,
            status: Status::Ok,
            reason: None,
            started_at: String::new(),
            wall_s: 0.0,
            memory: None,
            metrics: Some(metrics),
            repeat,
            efficiency: None,
            quality: None,
            model_details: None,
            stability: None,
            retrieval: None,
            generator: None,
        }
    }

    pub fn bad(cell: Cell, status: Status, why: &str) -> CellResult {
        CellResult {
            plugin: "candle".into(),
            cell,
            status,
            reason: Some(why.into()),
            started_at: String::new(),
            wall_s: 0.0,
            memory: None,
            metrics: None,
            repeat: 0,
            efficiency: None,
            quality: None,
            model_details: None,
            stability: None,
            retrieval: None,
            generator: None,
        }
    }

    /// A retrieval cell of scenario `ann` on data set `vecs` (1000 vectors
    /// of 8 dims, l2, k 10, 100 queries, one client, one query per call)
    /// with the search setting `ef_search = ef`.
    pub fn retrieval_cell(engine: &str, ef: u32) -> Cell {
        let mut search = serde_json::Map::new();
        search.insert("ef_search".into(), ef.into());
        let mut c = cell(engine, 0, 0, 1);
        c.id = format!("ann/vecs/{engine}/n1000-d8-k10-q100-l2-c1-bs1-ef_search{ef}");
        c.scenario = "ann".into();
        c.kind = ScenarioKind::Retrieval;
        c.model = "vecs".into();
        c.params.batch_policy = engine_api::BatchPolicy::None;
        c.params.num_requests = 100;
        c.params.requests = 100;
        c.retrieval = Some(engine_matrix_format::retrieval::RetrievalParams {
            index_size: 1000,
            dim: 8,
            k: 10,
            queries: 100,
            metric: "l2".into(),
            build_threads: 0,
            search,
        });
        c
    }

    /// A retrieval cell's figures: its recall, its passes' QPS and its
    /// search p95 (ms); the index (of `engine`) built by this cell when
    /// `built_here`, in 2 s, 4 MB by the engine's account.
    pub fn retrieval_metrics(
        engine: &str,
        recall: f64,
        qps: &[f64],
        p95: f64,
        built_here: bool,
    ) -> engine_matrix_results::retrieval::RetrievalMetrics {
        let mut latency = summarize(&[p95 / 2.0, p95]).expect("finite latencies");
        (latency.p50, latency.p95, latency.p99) = (p95 / 2.0, p95, p95 * 1.5);
        let n = qps.len().max(1) as f64;
        engine_matrix_results::retrieval::RetrievalMetrics {
            index_size: 1000,
            dim: 8,
            metric: "l2".into(),
            k: 10,
            queries: 100,
            batch_size: 1,
            concurrency: 1,
            search: serde_json::json!({}),
            build: engine_matrix_results::retrieval::BuildRecord {
                key: format!("{engine} {{}} on vecs n=1000 d=8 l2 threads=0"),
                built_here,
                seconds: 2.0,
                threads: 0,
                engine_bytes: Some(4_000_000),
                rss_bytes: None,
                data_bytes: 32_000,
            },
            recall,
            recall_min: recall / 2.0,
            queries_below_half: 0.0,
            latency_ms: latency,
            qps: qps.iter().sum::<f64>() / n,
            passes: qps.len() as u32,
            calls: 100 * qps.len() as u64,
            duration_s: qps.iter().map(|q| 100.0 / q.max(1e-9)).sum(),
            per_pass_qps: qps.to_vec(),
            truth: "computed".into(),
        }
    }

    /// An ok retrieval cell: `retrieval_metrics` of `cell`'s engine, with
    /// its search setting copied from the cell.
    pub fn retrieval_ok(
        cell: Cell,
        recall: f64,
        qps: &[f64],
        p95: f64,
        built_here: bool,
    ) -> CellResult {
        let mut m = retrieval_metrics(&cell.engine, recall, qps, p95, built_here);
        if let Some(p) = &cell.retrieval {
            m.search = serde_json::Value::Object(p.search.clone());
        }
        let mut r = bad(cell, Status::Ok, "");
        r.reason = None;
        r.plugin = "index".into();
        r.retrieval = Some(m);
        r
    }

    pub fn summary(baseline: Option<&str>, cells: Vec<CellResult>) -> Summary {
        Summary {
            schema_version: SCHEMA_VERSION,
            tool: "engine-matrix".into(),
            matrix_name: "fixture".into(),
            matrix_path: "fixture.yaml".into(),
            baseline: baseline.map(String::from),
            quick: false,
            repeats: cells.iter().map(|c| c.repeat + 1).max().unwrap_or(1),
            only: vec![],
            stopped: None,
            idle_power: None,
            telemetry_unavailable: vec![],
            command: vec![],
            started_at: String::new(),
            finished_at: None,
            complete: true,
            system: system(),
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

    /// A machine for hand-made summaries.
    pub fn system() -> engine_matrix_results::SystemInfo {
        engine_matrix_results::SystemInfo {
            hostname: Some("test-host".into()),
            os: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            kernel: Some("6.1.0".into()),
            arch: "x86_64".into(),
            cpu_model: Some("test CPU".into()),
            physical_cores: Some(2),
            logical_cores: 2,
            memory_bytes: 8 << 30,
            engine_matrix_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: "test".into(),
            env: Default::default(),
            gpus: vec![],
            gpu_driver: None,
        }
    }

    /// `n` samples around `center` with ±`jitter` (a fraction), spread
    /// deterministically.
    pub fn around(center: f64, jitter: f64, n: usize, phase: u64) -> Vec<f64> {
        let mut s = phase;
        (0..n)
            .map(|_| {
                let u = engine_matrix_stats::rng::splitmix64(&mut s) as f64 / u64::MAX as f64;
                center * (1.0 + jitter * (2.0 * u - 1.0))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            super::slug(&["TTFT", "lat ency", "a/b"]),
            "ttft-lat_ency-a_b"
        );
        assert!(super::slug(&["x"; 200]).len() <= 100);
    }

    use super::fixtures::*;
    use super::*;
    use engine_matrix_results::Status;

    /// Engine `b` twice as fast as the baseline `a` at batch 1 and 4.
    fn two_engines() -> Summary {
        let mut cells = Vec::new();
        for (engine, speed) in [("a", 100.0), ("b", 200.0)] {
            for (i, bs) in [1u32, 4].into_iter().enumerate() {
                let t = around(speed * bs as f64 * 0.8, 0.02, 8, i as u64);
                let l = around(10.0, 0.02, 8, 50 + i as u64);
                cells.push(ok(cell(engine, 32, 16, bs), metrics(&t, &l, 16), 0));
            }
        }
        cells.push(bad(
            cell("c", 32, 16, 1),
            Status::Failed,
            "<b>boom</b> & \"quoted\"",
        ));
        summary(Some("a"), cells)
    }

    #[test]
    fn speedups_and_the_executive_summary_follow_the_numbers() {
        let s = two_engines();
        let groups = analysis::groups(&s);
        let b1 = groups
            .iter()
            .find(|g| g.cell().id.contains("/b/in32-out16-bs1"))
            .unwrap();
        let sp = analysis::speedup(&s, &groups, b1).unwrap();
        assert!((sp.est.point - 2.0).abs() < 0.1, "{sp:?}");
        assert!(sp.est.lo <= 2.0 && 2.0 <= sp.est.hi * 1.05);
        assert!(!sp.paired, "one repetition: unpaired iterations");
        assert_eq!(sp.est.n, 8);
        let ex = analysis::executive(&s, &groups);
        assert_eq!((ex.cells, ex.ok, ex.failed), (5, 4, 1));
        assert!(
            ex.recommendations.iter().any(|r| r.contains("use **b**")),
            "{:?}",
            ex.recommendations
        );
        assert!(
            ex.findings.iter().any(|f| f.contains("b 2.0")),
            "{:?}",
            ex.findings
        );
        // scaling from batch 1 to 4 at 4x the tokens/s (±2% jitter) is
        // about 100% efficient
        let eff: Vec<f64> = ex
            .findings
            .iter()
            .filter_map(|f| f.split("batch scaling efficiency ").nth(1))
            .filter_map(|r| r.split('%').next()?.parse().ok())
            .collect();
        assert_eq!(eff.len(), 2, "{:?}", ex.findings);
        assert!(eff.iter().all(|e| (95.0..=105.0).contains(e)), "{eff:?}");
    }

    #[test]
    fn charts_exist_for_what_the_run_has() {
        let s = two_engines();
        let groups = analysis::groups(&s);
        let charts = figures::all(&s, &groups);
        let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"speedup-latency-m"), "{names:?}");
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("scaling-batch_size-latency")),
            "{names:?}"
        );
        assert!(names.contains(&"pareto-latency-m"), "{names:?}");
        // no baseline: no speedup chart; no limits: no roofline
        let mut none = s.clone();
        none.baseline = None;
        let names: Vec<String> = figures::all(&none, &analysis::groups(&none))
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(!names
            .iter()
            .any(|n| n.starts_with("speedup") || n == "roofline"));
        let speedup = charts
            .iter()
            .find(|c| c.name == "speedup-latency-m")
            .unwrap();
        match &speedup.body {
            charts::Body::Bars {
                bars, reference, ..
            } => {
                assert_eq!(bars.len(), 2, "b at batch 1 and 4");
                assert_eq!(*reference, Some(1.0));
                assert!(bars
                    .iter()
                    .all(|b| (b.value - 2.0).abs() < 0.1 && b.interval.is_some()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dataset_workload_gets_its_length_histograms_once_for_all_engines() {
        use engine_matrix_results::metrics::WorkloadRecord;
        use engine_matrix_stats::stats::histogram;
        let t = around(50.0, 0.02, 5, 64);
        let mut cells = Vec::new();
        for e in ["a", "b"] {
            let mut m = metrics(&t, &t, 64);
            m.workload = Some(WorkloadRecord {
                dataset: "sharegpt".into(),
                ..Default::default()
            });
            m.input_histogram = histogram(&[5.0, 9.0, 9.0, 40.0], 3);
            m.output_histogram = histogram(&[100.0, 200.0], 2);
            cells.push(ok(cell(e, 128, 64, 1), m, 0));
        }
        // A random workload gets none.
        cells.push(ok(cell("a", 256, 64, 1), metrics(&t, &t, 64), 0));
        let s = summary(None, cells);
        let charts: Vec<charts::Chart> = figures::all(&s, &analysis::groups(&s))
            .into_iter()
            .filter(|c| c.name.starts_with("lengths"))
            .collect();
        assert_eq!(charts.len(), 1, "one chart for both engines' requests");
        let charts::Body::Bars { bars, .. } = &charts[0].body else {
            panic!("bars")
        };
        let got: Vec<(&str, f64)> = bars.iter().map(|b| (b.label.as_str(), b.value)).collect();
        assert_eq!(
            got,
            [
                ("input 5–16", 3.0),
                ("input 17–28", 0.0),
                ("input 29–40", 1.0),
                ("output 100–150", 1.0),
                ("output 151–200", 1.0)
            ]
        );
    }

    #[test]
    fn length_sweeps_follow_workloads_that_grow_both_lengths() {
        // the seeds' workloads: 128/64, 512/128
        let mut cells = Vec::new();
        for (input, output) in [(128, 64), (512, 128)] {
            let t = around(50.0, 0.02, 5, input as u64);
            let l = around(input as f64, 0.02, 5, output as u64);
            cells.push(ok(cell("a", input, output, 1), metrics(&t, &l, output), 0));
        }
        let s = summary(None, cells);
        let groups = analysis::groups(&s);
        let names: Vec<String> = figures::all(&s, &groups)
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("ttft-latency")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("e2el-latency")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("decode-latency")),
            "{names:?}"
        );
    }

    #[test]
    fn written_report_escapes_and_has_every_part() {
        let s = two_engines();
        let dir = engine_kit::testing::TempDir::new("report");
        let w = write_summary(&s, dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("&lt;b&gt;boom&lt;/b&gt; &amp; &quot;quoted&quot;"));
        assert!(!html.contains("<b>boom"));
        assert!(!html.contains("<script"));
        for id in [
            "summary", "charts", "results", "problems", "system", "matrix",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        if w.chart_error.is_none() {
            assert!(w.charts >= 3);
            assert_eq!(html.matches("<svg").count(), w.charts);
            assert!(dir.path().join("charts/speedup-latency-m.png").is_file());
        }
        let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 1 + 5);
        let width = rows[0].split(',').count();
        assert!(rows[1..].iter().all(|r| !r.contains('\n')));
        assert!(width > 40);
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| 8 iterations |"), "{md}");
        assert!(md.contains("## Failed and unsupported cells"));
        assert!(md.contains("&lt;b&gt;boom"), "{md}");
    }

    /// [`two_engines`] and a retrieval scenario: `hnsw` at two search
    /// settings, and a `flat` cell that failed.
    fn with_retrieval() -> Summary {
        let mut s = two_engines();
        for (ef, recall, qps) in [(32, 0.9, 5000.0), (64, 0.97, 3000.0)] {
            s.cells.push(retrieval_ok(
                retrieval_cell("hnsw", ef),
                recall,
                &around(qps, 0.02, 5, ef as u64),
                0.4,
                ef == 32,
            ));
        }
        s.cells.push(bad(
            retrieval_cell("flat", 1),
            Status::Unsupported,
            "engine 'flat' builds indexes for metrics [ip], not l2",
        ));
        s
    }

    #[test]
    fn llm_sections_ignore_retrieval_cells() {
        let s = with_retrieval();
        let groups = analysis::groups(&s);
        let md = markdown(&s);
        let (llm, rest) = md.split_once("## Retrieval").expect("a retrieval section");
        // no LLM table for the retrieval scenario, no row of its cells
        assert!(!llm.contains("## ann (retrieval)"), "{md}");
        assert!(!llm.lines().any(|l| l.starts_with("| vecs |")), "{md}");
        assert!(llm.contains("## latency (latency)"), "{md}");
        assert_eq!(
            llm.lines().filter(|l| l.starts_with("| m |")).count(),
            5,
            "the LLM cells' rows"
        );
        assert!(rest.contains("### ann · vecs"), "{md}");
        assert!(
            rest.contains("[QPS against recall (k10)](charts/recall-qps-ann-vecs-k10.svg)"),
            "{md}"
        );
        // the unsupported retrieval cell is listed with the others
        let failed = md.split_once("## Failed and unsupported cells").unwrap().1;
        assert!(failed.contains("| ann/vecs/flat/n1000-d8-k10-q100-l2-c1-bs1-ef_search1 | unsupported | engine 'flat' builds indexes for metrics [ip], not l2 |"), "{failed}");
        assert!(
            failed.contains("| latency/m/c/in32-out16-bs1 | failed |"),
            "{failed}"
        );

        // the executive summary counts every cell, ranks LLM engines on
        // tokens/s and retrieval engines on QPS at the operating recall
        let ex = executive(&s, &groups);
        assert_eq!((ex.cells, ex.ok, ex.unsupported, ex.failed), (8, 6, 1, 1));
        assert!(
            !ex.findings
                .iter()
                .any(|f| f.contains("output tokens/s") && f.contains("ann")),
            "{:?}",
            ex.findings
        );
        assert!(
            ex.findings
                .iter()
                .any(|f| f.starts_with("**ann** (retrieval, vecs")
                    && f.contains("**hnsw** answers the most queries")
                    && f.contains("(ef_search=64: recall 0.9700")),
            "{:?}",
            ex.findings
        );
        assert!(
            ex.recommendations.iter().any(|r| r.contains("use **b**")),
            "{:?}",
            ex.recommendations
        );

        // no LLM chart takes a retrieval engine or scenario
        let charts = figures::all(&s, &groups);
        for c in &charts {
            if c.name.starts_with("recall-qps") || c.name.starts_with("latency-recall") {
                continue;
            }
            assert!(!c.name.contains("ann"), "{}", c.name);
            let labels: Vec<String> = match &c.body {
                charts::Body::Bars { bars, legend, .. } => bars
                    .iter()
                    .map(|b| b.label.clone())
                    .chain(legend.iter().map(|l| l.0.clone()))
                    .collect(),
                charts::Body::Xy { series, .. } => series.iter().map(|s| s.label.clone()).collect(),
            };
            assert!(
                !labels
                    .iter()
                    .any(|l| l.contains("hnsw") || l.contains("flat")),
                "{}: {labels:?}",
                c.name
            );
        }
        assert_eq!(
            charts
                .iter()
                .filter(|c| c.name.ends_with("ann-vecs-k10"))
                .count(),
            2
        );

        // the HTML: the results table has the LLM cells only
        let dir = engine_kit::testing::TempDir::new("report-retrieval");
        write_summary(&s, dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        let results =
            &html[html.find("id=\"results\"").unwrap()..html.find("id=\"retrieval\"").unwrap()];
        assert!(
            results.contains("in32-out16") || results.contains("32/16"),
            "{results}"
        );
        assert!(
            !results.contains("hnsw") && !results.contains("vecs"),
            "{results}"
        );
        let retrieval =
            &html[html.find("id=\"retrieval\"").unwrap()..html.find("id=\"problems\"").unwrap()];
        assert!(retrieval.contains("<h3>ann · vecs</h3>"), "{retrieval}");
        assert!(
            retrieval.contains("href=\"#chart-recall-qps-ann-vecs-k10\""),
            "{retrieval}"
        );
        assert!(html.contains("<a href=\"#retrieval\">Retrieval</a>"));
        let csv = std::fs::read_to_string(dir.path().join("summary.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 8);
    }

    #[test]
    fn a_retrieval_only_run_has_no_llm_tables() {
        let s = summary(
            None,
            vec![retrieval_ok(
                retrieval_cell("hnsw", 64),
                0.97,
                &[1000.0, 1010.0],
                0.4,
                true,
            )],
        );
        let md = markdown(&s);
        assert!(!md.contains("| model | engine | workload |"), "{md}");
        assert!(!md.contains("speedup ="), "{md}");
        assert!(md.contains("## Retrieval"), "{md}");
        assert!(!md.contains("## Failed and unsupported cells"), "{md}");
        let dir = engine_kit::testing::TempDir::new("report-retrieval-only");
        let w = write_summary(&s, dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<p>No LLM cell in this run.</p>"));
        if w.chart_error.is_none() {
            assert_eq!(w.charts, 2);
            assert!(dir
                .path()
                .join("charts/recall-qps-ann-vecs-k10.svg")
                .is_file());
            assert!(dir
                .path()
                .join("charts/latency-recall-ann-vecs-k10.svg")
                .is_file());
        }
    }
}
