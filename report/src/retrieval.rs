//! The retrieval benchmark's part of the report: vector-index engines that
//! build an index and then search it (`kind: retrieval` cells, whose
//! figures are a `RetrievalMetrics`, not LLM metrics).
//!
//! What a reader wants from such a run is the trade-off the ann-benchmarks
//! charts show: how many queries per second an engine answers at a given
//! recall. So, per scenario and data set:
//!
//! * a table of the cells: search setting, recall@k, latency percentiles
//!   per search call, QPS with its 95% interval, batch size and clients;
//! * the index builds, one row per build key (time, the engine's own
//!   account of the index's size, the RSS growth over the build, the
//!   vectors' size; MB = 10⁶ bytes, `n/a` where nothing could say);
//! * each engine's operating point: its fastest setting whose recall
//!   reaches [`OPERATING_RECALL`]. An engine none of whose settings does
//!   is said to miss it, with its best recall, rather than being ranked
//!   on a setting that answers wrongly;
//! * two charts per scenario, data set and index setup: QPS (log) against
//!   recall with each engine's Pareto front, and search p95 (log) against
//!   recall ([`charts`]).
//!
//! Only cells that answer the same question are put side by side: one
//! *setup* (k, index size, dimension, metric) per chart and operating
//! point, and cells of different batch sizes or client counts are
//! separate curves, since their QPS measure different things.
//!
//! Samples, as [`crate::analysis`] does for LLM cells: a cell's QPS is the
//! median over its measured passes (a pass is the whole query set) with one
//! repetition, over its repetitions' QPS with `run --repeat`. Recall is
//! deterministic for a given index up to build nondeterminism: the median
//! over repetitions, shown without an interval. Latency percentiles are
//! those of the first complete repetition (all its search calls).
//!
//! `compare` ([`compare`] here, called by [`crate::compare`]) judges QPS
//! and search p95 with the LLM figures' rule (significant *and* beyond
//! the noise threshold). p95 has one sample per repetition, so it is only
//! ever judged between `--repeat` runs; a single run's p95 is shown and
//! called `no change`, which is the honest answer with one sample. Recall
//! is judged on its absolute change: beyond [`RECALL_TOLERANCE`] it is a
//! change, within it (ties, a rebuilt graph) it is not.

use crate::analysis::{self, Group, Metric, Unit};
use crate::charts::{Body, Chart, Colors, Mark, RGBColor, Series};
use crate::slug;
use crate::table::{f, Table};
use engine_matrix_results::retrieval::{
    pareto_front, search_label, BuildRecord, RetrievalMetrics, OPERATING_RECALL,
};
use engine_matrix_results::{CellResult, Status};
use engine_matrix_stats::resample::{self, Change, Estimate, Verdict};
use engine_matrix_stats::stats::Distribution;

/// A recall change up to this (absolute) is `no change` in `compare`.
pub const RECALL_TOLERANCE: f64 = 0.005;

/// Bytes in a megabyte as the report shows them.
const MB: f64 = 1e6;

/// What the section says about its figures, under its heading.
pub(crate) const NOTE: &str = "recall@k: per query, the share of the k answers within the k-th true neighbour's distance, averaged over the queries of the measured passes (ann-benchmarks' definition). QPS: queries answered per second of the measured passes, all clients together; median over the passes (over repetitions with `--repeat`) with its 95% bootstrap interval. Latency: per search call (one query, or one batch), ms, over every call of the first complete repetition. Operating point: an engine's fastest setting whose recall@k reaches 0.95. MB = 10^6 bytes; `n/a`: the engine or the system could not say.";

/// The ok repetitions of a retrieval cell, with their figures.
fn ok_runs<'a, 'g>(
    g: &'g Group<'a>,
) -> impl Iterator<Item = (&'a CellResult, &'a RetrievalMetrics)> + 'g {
    g.runs
        .iter()
        .copied()
        .filter(|r| r.status == Status::Ok)
        .filter_map(|r| Some((r, r.retrieval.as_ref()?)))
}

/// The QPS samples of a cell: one per repetition when it has several ok
/// ones, else one per measured pass (the run's QPS when it recorded none).
pub fn qps_samples(g: &Group) -> (Vec<f64>, Unit) {
    let runs: Vec<&RetrievalMetrics> = ok_runs(g).map(|(_, m)| m).collect();
    let finite = |v: Vec<f64>| v.into_iter().filter(|x| x.is_finite()).collect();
    if runs.len() > 1 {
        return (
            finite(runs.iter().map(|m| m.qps).collect()),
            Unit::Repetition,
        );
    }
    let v = runs
        .first()
        .map(|m| {
            if m.per_pass_qps.is_empty() {
                vec![m.qps]
            } else {
                m.per_pass_qps.clone()
            }
        })
        .unwrap_or_default();
    (finite(v), Unit::Pass)
}

/// Each ok repetition's search p95, ms.
fn p95_samples(g: &Group) -> Vec<f64> {
    ok_runs(g)
        .map(|(_, m)| m.latency_ms.p95)
        .filter(|x| x.is_finite())
        .collect()
}

/// Each ok repetition's recall@k.
fn recall_samples(g: &Group) -> Vec<f64> {
    ok_runs(g)
        .map(|(_, m)| m.recall)
        .filter(|x| x.is_finite())
        .collect()
}

/// What a recall–QPS chart holds fixed: cells of one setup answer the
/// same question.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Setup {
    pub k: u32,
    pub index_size: u64,
    pub dim: u32,
    pub metric: String,
}

impl Setup {
    fn of(m: &RetrievalMetrics) -> Setup {
        Setup {
            k: m.k,
            index_size: m.index_size,
            dim: m.dim,
            metric: m.metric.clone(),
        }
    }

    /// `100000 vectors × 384 dims (l2), k = 10`.
    fn describe(&self) -> String {
        format!(
            "{} vectors × {} dims ({}), k = {}",
            self.index_size, self.dim, self.metric, self.k
        )
    }

    /// A file-name part: `k10`, or `k10-n100000-d384-l2` where the
    /// scenario has several setups of that k.
    fn tag(&self, long: bool) -> String {
        if long {
            format!(
                "k{}-n{}-d{}-{}",
                self.k, self.index_size, self.dim, self.metric
            )
        } else {
            format!("k{}", self.k)
        }
    }
}

/// One ok retrieval cell's figures, as the report shows them.
#[derive(Debug, Clone)]
pub struct Point<'a> {
    pub id: &'a str,
    pub engine: &'a str,
    /// The search setting in words (`ef_search=64`, `default`).
    pub search: String,
    /// Median recall@k over the ok repetitions.
    pub recall: f64,
    /// Median QPS with its interval, over [`qps_samples`].
    pub qps: Estimate,
    pub qps_unit: Unit,
    /// Per search call, of the first ok repetition.
    pub latency_ms: &'a Distribution,
    /// The first ok repetition's figures (setup, build, batch, clients).
    pub figures: &'a RetrievalMetrics,
}

impl Point<'_> {
    fn setup(&self) -> Setup {
        Setup::of(self.figures)
    }

    /// Batch size and clients.
    fn load(&self) -> (u32, u32) {
        (self.figures.batch_size, self.figures.concurrency)
    }
}

/// The figures of a retrieval cell; `None` when no repetition ran.
pub fn point<'a>(g: &Group<'a>) -> Option<Point<'a>> {
    let (r, first) = ok_runs(g).next()?;
    let recall = resample::median(&recall_samples(g))?;
    let (v, unit) = qps_samples(g);
    let qps = resample::median_ci(
        &v,
        resample::CONFIDENCE,
        resample::RESAMPLES,
        analysis::seed(&r.cell.id, "qps"),
    )?;
    Some(Point {
        id: &r.cell.id,
        engine: &r.cell.engine,
        search: search_label(&first.search),
        recall,
        qps,
        qps_unit: unit,
        latency_ms: &first.latency_ms,
        figures: first,
    })
}

/// An engine's operating point among its settings (indices into the
/// slice given to [`operating_point`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operating {
    /// The fastest setting (highest QPS) whose recall reaches
    /// [`OPERATING_RECALL`].
    Reached(usize),
    /// No setting reaches it: the one of best recall.
    Missed(usize),
}

/// The operating point of one engine's settings (of one setup and load):
/// the highest QPS among those with recall ≥ [`OPERATING_RECALL`] (ties
/// to the higher recall), else the best recall (ties to the higher QPS).
/// `None` for no settings.
pub fn operating_point(points: &[Point]) -> Option<Operating> {
    let by = |a: (f64, f64), b: (f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1));
    let fastest = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.recall >= OPERATING_RECALL)
        .max_by(|a, b| by((a.1.qps.point, a.1.recall), (b.1.qps.point, b.1.recall)))
        .map(|(i, _)| Operating::Reached(i));
    fastest.or_else(|| {
        points
            .iter()
            .enumerate()
            .max_by(|a, b| by((a.1.recall, a.1.qps.point), (b.1.recall, b.1.qps.point)))
            .map(|(i, _)| Operating::Missed(i))
    })
}

/// One engine's settings at one load (batch size, clients): a line of a
/// chart.
#[derive(Debug, Clone)]
pub struct Curve<'a> {
    pub engine: &'a str,
    pub batch_size: u32,
    pub concurrency: u32,
    pub points: Vec<Point<'a>>,
}

impl Curve<'_> {
    /// The engine, with its load when the panel has several.
    fn label(&self, several_loads: bool) -> String {
        if several_loads {
            format!(
                "{} bs{} c{}",
                self.engine, self.batch_size, self.concurrency
            )
        } else {
            self.engine.to_string()
        }
    }
}

/// The ok cells of one scenario and data set with one setup, as curves.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    pub setup: Setup,
    /// Whether the section has another setup with the same k (then chart
    /// names and labels say the index too).
    pub ambiguous: bool,
    pub curves: Vec<Curve<'a>>,
}

impl Panel<'_> {
    fn several_loads(&self) -> bool {
        let mut loads: Vec<(u32, u32)> = self
            .curves
            .iter()
            .map(|c| (c.batch_size, c.concurrency))
            .collect();
        loads.sort_unstable();
        loads.dedup();
        loads.len() > 1
    }
}

/// The retrieval cells of one scenario and data set.
#[derive(Debug, Clone)]
pub struct Scenario<'a> {
    pub scenario: &'a str,
    pub dataset: &'a str,
    pub groups: Vec<&'a Group<'a>>,
    pub panels: Vec<Panel<'a>>,
}

impl Scenario<'_> {
    /// The file names of a panel's two charts: (recall–QPS, p95–recall).
    fn chart_names(&self, p: &Panel) -> (String, String) {
        let tag = p.setup.tag(p.ambiguous);
        (
            slug(&["recall-qps", self.scenario, self.dataset, &tag]),
            slug(&["latency-recall", self.scenario, self.dataset, &tag]),
        )
    }
}

/// Retrieval groups by (scenario, data set), in the order the run met
/// them.
pub fn scenarios<'a>(groups: &'a [Group<'a>]) -> Vec<Scenario<'a>> {
    let mut out: Vec<Scenario<'a>> = Vec::new();
    for g in groups.iter().filter(|g| g.is_retrieval()) {
        let c = g.cell();
        match out
            .iter_mut()
            .find(|s| s.scenario == c.scenario && s.dataset == c.model)
        {
            Some(s) => s.groups.push(g),
            None => out.push(Scenario {
                scenario: &c.scenario,
                dataset: &c.model,
                groups: vec![g],
                panels: Vec::new(),
            }),
        }
    }
    for s in &mut out {
        s.panels = panels(&s.groups);
    }
    out
}

/// The groups' ok cells by setup, then by engine and load.
fn panels<'a>(groups: &[&'a Group<'a>]) -> Vec<Panel<'a>> {
    let mut out: Vec<Panel<'a>> = Vec::new();
    for p in groups.iter().filter_map(|g| point(g)) {
        let setup = p.setup();
        let i = match out.iter().position(|x| x.setup == setup) {
            Some(i) => i,
            None => {
                out.push(Panel {
                    setup,
                    ambiguous: false,
                    curves: Vec::new(),
                });
                out.len() - 1
            }
        };
        let (batch_size, concurrency) = p.load();
        let curves = &mut out[i].curves;
        match curves.iter_mut().find(|c| {
            c.engine == p.engine && (c.batch_size, c.concurrency) == (batch_size, concurrency)
        }) {
            Some(c) => c.points.push(p),
            None => curves.push(Curve {
                engine: p.engine,
                batch_size,
                concurrency,
                points: vec![p],
            }),
        }
    }
    let ks: Vec<u32> = out.iter().map(|p| p.setup.k).collect();
    for p in &mut out {
        p.ambiguous = ks.iter().filter(|k| **k == p.setup.k).count() > 1;
    }
    out
}

/// About three significant figures: 12345, 123, 12.3, 1.23, 0.123.
fn sig(x: f64) -> String {
    let a = x.abs();
    let digits = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    f(Some(x), digits)
}

/// `median [lo, hi]` of a QPS estimate.
fn qps_text(e: &Estimate) -> String {
    if e.n < 2 {
        return sig(e.point);
    }
    format!("{} [{}, {}]", sig(e.point), sig(e.lo), sig(e.hi))
}

/// Bytes as MB, `n/a` for none.
fn mb(bytes: Option<f64>) -> String {
    match bytes {
        Some(b) if b.is_finite() => sig(b / MB),
        _ => "n/a".into(),
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Unsupported => "unsupported",
        Status::Failed => "failed",
    }
}

/// A retrieval section of the report, as tables and chart names: the
/// Markdown and HTML reports render it in their own syntax.
pub(crate) struct Section {
    /// `ann · sift-128`.
    pub title: String,
    /// What the cells searched, one line per setup.
    pub about: Vec<String>,
    pub cells: Table,
    pub builds: Option<Table>,
    pub operating: Option<Table>,
    /// (file stem, what it shows), two per setup.
    pub charts: Vec<(String, String)>,
}

/// The report's retrieval sections (none when the run has no retrieval
/// cell).
pub(crate) fn sections(groups: &[Group]) -> Vec<Section> {
    scenarios(groups).iter().map(section).collect()
}

fn section(s: &Scenario) -> Section {
    let about = s
        .panels
        .iter()
        .filter_map(|p| {
            let first = p.curves.first()?.points.first()?.figures;
            Some(format!(
                "{}: {}; {} queries; exact neighbours {}",
                s.dataset,
                p.setup.describe(),
                first.queries,
                first.truth
            ))
        })
        .collect();
    let mut charts = Vec::new();
    for p in &s.panels {
        let (qps, lat) = s.chart_names(p);
        let k = p.setup.tag(p.ambiguous);
        charts.push((qps, format!("QPS against recall ({k})")));
        charts.push((lat, format!("search p95 against recall ({k})")));
    }
    Section {
        title: format!("{} · {}", s.scenario, s.dataset),
        about,
        cells: cells_table(s),
        builds: builds_table(&s.groups),
        operating: operating_table(s),
        charts,
    }
}

/// One row per cell: its figures, or its status and reason.
fn cells_table(s: &Scenario) -> Table {
    let index = s.panels.len() > 1;
    let mut headers = vec!["engine", "search"];
    if index {
        headers.push("index");
    }
    headers.extend([
        "k",
        "recall@k",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "QPS [95% CI]",
        "n",
        "batch",
        "concurrency",
        "status",
    ]);
    let rows = s
        .groups
        .iter()
        .map(|g| match point(g) {
            Some(p) => {
                let mut r = vec![p.engine.to_string(), p.search.clone()];
                if index {
                    let st = p.setup();
                    r.push(format!("n={} d={} {}", st.index_size, st.dim, st.metric));
                }
                r.extend([
                    p.figures.k.to_string(),
                    format!("{:.4}", p.recall),
                    sig(p.latency_ms.p50),
                    sig(p.latency_ms.p95),
                    sig(p.latency_ms.p99),
                    qps_text(&p.qps),
                    format!("{} {}", p.qps.n, p.qps_unit.as_str()),
                    p.figures.batch_size.to_string(),
                    p.figures.concurrency.to_string(),
                    status_text(g),
                ]);
                r
            }
            None => not_run_row(g, index),
        })
        .collect();
    Table { headers, rows }
}

/// The row of a cell without figures: what it was to search, and why it
/// did not.
fn not_run_row(g: &Group, index: bool) -> Vec<String> {
    let c = g.cell();
    let params = c.retrieval.as_ref();
    let search = params
        .map(|p| search_label(&serde_json::Value::Object(p.search.clone())))
        .unwrap_or_else(|| "default".into());
    let mut r = vec![c.engine.clone(), search];
    if index {
        r.push(
            params
                .map(|p| format!("n={} d={} {}", p.index_size, p.dim, p.metric))
                .unwrap_or_default(),
        );
    }
    r.push(params.map(|p| p.k.to_string()).unwrap_or_default());
    // recall, p50, p95, p99, QPS, n
    r.extend(std::iter::repeat_n("—".to_string(), 6));
    r.extend([
        c.params.batch_size.to_string(),
        c.params.concurrency.to_string(),
        status_text(g),
    ]);
    r
}

/// `ok`, or the status and its reason.
fn status_text(g: &Group) -> String {
    match g.status() {
        (Status::Ok, _) if ok_runs(g).next().is_none() => "ok (no figures recorded)".into(),
        (Status::Ok, _) => "ok".into(),
        (s, Some(why)) => format!("{}: {why}", status_word(s)),
        (s, None) => status_word(s).into(),
    }
}

/// One row per index build (by build key): the build that made it, or
/// the first record of it when every cell reused it.
fn builds_table(groups: &[&Group]) -> Option<Table> {
    let mut by_key: Vec<(&str, &str, Vec<&BuildRecord>, usize)> = Vec::new();
    for g in groups {
        let mut cell_counted = false;
        for (r, m) in ok_runs(g) {
            let b = &m.build;
            let i = match by_key.iter().position(|(k, ..)| *k == b.key) {
                Some(i) => i,
                None => {
                    by_key.push((&b.key, &r.cell.engine, Vec::new(), 0));
                    by_key.len() - 1
                }
            };
            by_key[i].2.push(b);
            if !cell_counted {
                by_key[i].3 += 1;
                cell_counted = true;
            }
        }
    }
    let rows: Vec<Vec<String>> = by_key
        .iter()
        .map(|(key, engine, records, cells)| build_row(key, engine, records, *cells))
        .collect();
    (!rows.is_empty()).then(|| Table {
        headers: vec![
            "engine",
            "index",
            "builds",
            "cells",
            "build s",
            "threads",
            "index MB (engine)",
            "RSS growth MB",
            "vectors MB",
        ],
        rows,
    })
}

fn build_row(key: &str, engine: &str, records: &[&BuildRecord], cells: usize) -> Vec<String> {
    let built: Vec<&BuildRecord> = records.iter().copied().filter(|b| b.built_here).collect();
    let Some(b) = built.first().or(records.first()).copied() else {
        return vec![engine.to_string(), key.to_string()];
    };
    let seconds: Vec<f64> = built.iter().map(|b| b.seconds).collect();
    let seconds = resample::median(&seconds).unwrap_or(b.seconds);
    // The key starts with the engine's name: the row says it already.
    let index = key.strip_prefix(engine).map(str::trim_start).unwrap_or(key);
    vec![
        engine.to_string(),
        index.to_string(),
        built.len().to_string(),
        cells.to_string(),
        f(Some(seconds), 2),
        if b.threads == 0 {
            "all".into()
        } else {
            b.threads.to_string()
        },
        mb(b.engine_bytes.map(|x| x as f64)),
        mb(b.rss_bytes.map(|x| x as f64)),
        mb(Some(b.data_bytes as f64)),
    ]
}

/// One row per engine, setup and load: its operating point, or the best
/// recall it reached.
fn operating_table(s: &Scenario) -> Option<Table> {
    let mut rows = Vec::new();
    for p in &s.panels {
        let loads = p.several_loads();
        for c in &p.curves {
            let mut what = format!("k={}", p.setup.k);
            if p.ambiguous {
                what = format!("{what}, n={} {}", p.setup.index_size, p.setup.metric);
            }
            if loads {
                what = format!("{what}, bs{} c{}", c.batch_size, c.concurrency);
            }
            rows.push(operating_row(c, what));
        }
    }
    (!rows.is_empty()).then(|| Table {
        headers: vec![
            "engine",
            "for",
            "operating point",
            "recall@k",
            "QPS",
            "p95 ms",
        ],
        rows,
    })
}

fn operating_row(c: &Curve, what: String) -> Vec<String> {
    let mut r = vec![c.engine.to_string(), what];
    match operating_point(&c.points) {
        Some(Operating::Reached(i)) => {
            let p = &c.points[i];
            r.extend([
                p.search.clone(),
                format!("{:.4}", p.recall),
                qps_text(&p.qps),
                sig(p.latency_ms.p95),
            ]);
        }
        Some(Operating::Missed(i)) => {
            r.push(missed_text(&c.points[i]));
            r.extend(std::iter::repeat_n("—".to_string(), 3));
        }
        None => r.extend(std::iter::repeat_n("—".to_string(), 4)),
    }
    r
}

/// `no setting reached recall 0.95 (best recall 0.9120 at ef_search=128)`.
fn missed_text(best: &Point) -> String {
    format!(
        "no setting reached recall {OPERATING_RECALL} (best recall {:.4} at {})",
        best.recall, best.search
    )
}

/// The executive summary's lines on the run's retrieval cells: per
/// scenario, data set, setup and load, the engines by QPS at their
/// operating points (findings), and which to use (recommendations).
pub(crate) fn executive(groups: &[Group]) -> (Vec<String>, Vec<String>) {
    let (mut findings, mut recommendations) = (Vec::new(), Vec::new());
    for s in scenarios(groups) {
        for p in &s.panels {
            let mut loads: Vec<(u32, u32)> = p
                .curves
                .iter()
                .map(|c| (c.batch_size, c.concurrency))
                .collect();
            loads.sort_unstable();
            loads.dedup();
            for load in loads {
                let curves: Vec<&Curve> = p
                    .curves
                    .iter()
                    .filter(|c| (c.batch_size, c.concurrency) == load)
                    .collect();
                let what = format!(
                    "**{}** (retrieval, {}, {}, batch {}, {} client{})",
                    s.scenario,
                    s.dataset,
                    p.setup.describe(),
                    load.0,
                    load.1,
                    if load.1 == 1 { "" } else { "s" }
                );
                let (f, r) = ranking(&curves, &what, &s, &p.setup);
                findings.push(f);
                recommendations.push(r);
            }
        }
    }
    (findings, recommendations)
}

/// The finding and recommendation of one set of comparable curves.
fn ranking(curves: &[&Curve], what: &str, s: &Scenario, setup: &Setup) -> (String, String) {
    let mut reached: Vec<(&str, &Point)> = Vec::new();
    let mut missed: Vec<(&str, &Point)> = Vec::new();
    for c in curves {
        match operating_point(&c.points) {
            Some(Operating::Reached(i)) => reached.push((c.engine, &c.points[i])),
            Some(Operating::Missed(i)) => missed.push((c.engine, &c.points[i])),
            None => {}
        }
    }
    reached.sort_by(|a, b| b.1.qps.point.total_cmp(&a.1.qps.point));
    let k = setup.k;
    let mut line = format!("{what}: at recall@{k} ≥ {OPERATING_RECALL}, ");
    let like = format!("`{}` on {} (k = {k})", s.scenario, s.dataset);
    let rec = match reached.first() {
        Some((e, p)) => {
            line.push_str(&format!(
                "**{e}** answers the most queries: {} QPS ({}: recall {:.4}, p95 {} ms)",
                sig(p.qps.point),
                p.search,
                p.recall,
                sig(p.latency_ms.p95)
            ));
            for (e2, p2) in reached.iter().skip(1) {
                line.push_str(&format!("; {e2} {} QPS ({})", sig(p2.qps.point), p2.search));
            }
            let close: Vec<String> = reached
                .iter()
                .skip(1)
                .filter(|(_, q)| q.qps.point >= p.qps.point * 0.95)
                .map(|(e, _)| format!("**{e}**"))
                .collect();
            if close.is_empty() {
                format!(
                    "For vector search like {like} at recall ≥ {OPERATING_RECALL}, use **{e}** with {}.",
                    p.search
                )
            } else {
                format!(
                    "For vector search like {like}, **{e}** and {} are within 5% of each other at recall ≥ {OPERATING_RECALL}: choose on build time and memory.",
                    close.join(", ")
                )
            }
        }
        None => {
            line.push_str("no engine reached it");
            format!(
                "No engine reached recall@{k} ≥ {OPERATING_RECALL} on {like}: widen the search settings (a larger search breadth) before choosing."
            )
        }
    };
    for (e, p) in &missed {
        line.push_str(&format!(
            "; no setting of {e} reached it (best recall {:.4} at {})",
            p.recall, p.search
        ));
    }
    (line + ".", rec)
}

/// The recall–QPS and p95–recall charts of every scenario, data set and
/// setup of the run's retrieval cells.
pub fn charts(groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let mut out = Vec::new();
    for s in scenarios(groups) {
        for p in &s.panels {
            let (qps_name, lat_name) = s.chart_names(p);
            out.push(qps_chart(&s, p, qps_name, colors));
            out.push(latency_chart(&s, p, lat_name, colors));
        }
    }
    out
}

/// A curve's points and its front as two series: markers for every
/// setting, a line through the front. `y` is the figure plotted;
/// `better` orients it so that higher is better for the front.
fn curve_series(
    c: &Curve,
    label: String,
    colors: &Colors,
    y: fn(&Point) -> f64,
    better: fn(f64) -> f64,
) -> [Series; 2] {
    let pts: Vec<(f64, f64)> = c.points.iter().map(|p| (p.recall, y(p))).collect();
    let oriented: Vec<(f64, f64)> = pts.iter().map(|&(r, v)| (r, better(v))).collect();
    let front: Vec<(f64, f64)> = pareto_front(&oriented)
        .into_iter()
        .map(|(r, v)| (r, better(v)))
        .collect();
    let color = colors.of(c.engine);
    [
        Series {
            label: format!("{label} settings"),
            color,
            width: 0,
            mark: Mark::Circle,
            points: pts.iter().map(|&(x, v)| (x, v, None)).collect(),
        },
        Series {
            label: format!("{label} Pareto front"),
            color,
            width: 2,
            mark: Mark::None,
            points: front.into_iter().map(|(x, v)| (x, v, None)).collect(),
        },
    ]
}

/// A thin vertical line at [`OPERATING_RECALL`] across the plotted
/// values, so the operating points can be read off the chart.
fn operating_line(series: &[Series]) -> Option<Series> {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = ys
        .filter(|y| y.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
    (lo <= hi).then(|| Series {
        label: format!("recall {OPERATING_RECALL} (operating point)"),
        color: RGBColor(150, 150, 150),
        width: 1,
        mark: Mark::None,
        points: vec![(OPERATING_RECALL, lo, None), (OPERATING_RECALL, hi, None)],
    })
}

/// The curves' series, then the operating recall's line.
fn panel_series(
    p: &Panel,
    colors: &Colors,
    y: fn(&Point) -> f64,
    better: fn(f64) -> f64,
) -> Vec<Series> {
    let loads = p.several_loads();
    let mut series: Vec<Series> = p
        .curves
        .iter()
        .flat_map(|c| curve_series(c, c.label(loads), colors, y, better))
        .collect();
    series.extend(operating_line(&series));
    series
}

fn qps_chart(s: &Scenario, p: &Panel, name: String, colors: &Colors) -> Chart {
    let series = panel_series(p, colors, |p| p.qps.point, |v| v);
    Chart {
        name,
        title: format!(
            "QPS against recall: {} ({}; {})",
            s.scenario,
            s.dataset,
            p.setup.describe()
        ),
        note: format!(
            "One point per search setting (median QPS, mean recall@{}); the line joins each engine's Pareto front (no other setting of that engine has both higher recall and higher QPS); up and right is better; grey: recall {OPERATING_RECALL}.",
            p.setup.k
        ),
        body: Body::Xy {
            x_desc: format!("recall@{}", p.setup.k),
            y_desc: "queries per second (log)".into(),
            log_x: false,
            log_y: true,
            series,
        },
    }
}

fn latency_chart(s: &Scenario, p: &Panel, name: String, colors: &Colors) -> Chart {
    // Lower latency is better: the front of (recall, −p95).
    let series = panel_series(p, colors, |p| p.latency_ms.p95, |v| -v);
    Chart {
        name,
        title: format!(
            "Search p95 against recall: {} ({}; {})",
            s.scenario,
            s.dataset,
            p.setup.describe()
        ),
        note: format!(
            "One point per search setting: p95 of the latency of one search call (ms) against mean recall@{}; the line joins each engine's settings that no other has beaten on both; down and right is better; grey: recall {OPERATING_RECALL}.",
            p.setup.k
        ),
        body: Body::Xy {
            x_desc: format!("recall@{}", p.setup.k),
            y_desc: "search call p95 (ms, log)".into(),
            log_x: false,
            log_y: true,
            series,
        },
    }
}

/// Why two matched retrieval cells do not answer the same question (then
/// `compare` refuses them), if they do not: the data set's size (a file
/// data set cut to `nall` may have changed), dimension, metric, k, the
/// query set, the search setting, batch size or clients.
pub(crate) fn refusal(b: &Group, c: &Group) -> Option<String> {
    let ((_, x), (_, y)) = (ok_runs(b).next()?, ok_runs(c).next()?);
    let mut why = Vec::new();
    let mut diff = |what: &str, a: String, z: String| {
        if a != z {
            why.push(format!("{what} differs (baseline {a}, candidate {z})"));
        }
    };
    diff(
        "index size",
        x.index_size.to_string(),
        y.index_size.to_string(),
    );
    diff("dimension", x.dim.to_string(), y.dim.to_string());
    diff("metric", x.metric.clone(), y.metric.clone());
    diff("k", x.k.to_string(), y.k.to_string());
    diff("queries", x.queries.to_string(), y.queries.to_string());
    diff(
        "search setting",
        search_label(&x.search),
        search_label(&y.search),
    );
    diff(
        "batch size",
        x.batch_size.to_string(),
        y.batch_size.to_string(),
    );
    diff(
        "concurrency",
        x.concurrency.to_string(),
        y.concurrency.to_string(),
    );
    (!why.is_empty()).then(|| why.join("; "))
}

/// One metric of a matched pair of retrieval cells (a row of `compare`).
#[derive(Debug, Clone)]
pub(crate) struct Compared {
    pub metric: Metric,
    pub baseline: Estimate,
    pub candidate: Estimate,
    pub unit: &'static str,
    pub change: Option<Change>,
}

/// QPS, search p95 and recall of cell `c` against `b` (see the module
/// docs for the rules); `id` seeds the bootstrap.
pub(crate) fn compare(b: &Group, c: &Group, noise: f64, id: &str) -> Vec<Compared> {
    let (bq, unit) = qps_samples(b);
    let (cq, _) = qps_samples(c);
    let mut out = Vec::new();
    out.extend(sampled(Metric::Qps, &bq, &cq, unit, noise, id));
    out.extend(sampled(
        Metric::SearchP95,
        &p95_samples(b),
        &p95_samples(c),
        Unit::Repetition,
        noise,
        id,
    ));
    out.extend(recall(&recall_samples(b), &recall_samples(c), id));
    out
}

/// A figure with samples, judged as `compare` judges LLM figures.
fn sampled(
    metric: Metric,
    xs: &[f64],
    ys: &[f64],
    unit: Unit,
    noise: f64,
    id: &str,
) -> Option<Compared> {
    let seed = analysis::seed(id, &format!("compare:{}", metric.key()));
    let (conf, n) = (resample::CONFIDENCE, resample::RESAMPLES);
    Some(Compared {
        metric,
        baseline: resample::median_ci(xs, conf, n, seed)?,
        candidate: resample::median_ci(ys, conf, n, seed ^ 1)?,
        unit: unit.as_str(),
        change: resample::compare(xs, ys, metric.higher_is_better(), noise, conf, n, seed),
    })
}

/// Recall, judged on its absolute change against [`RECALL_TOLERANCE`]
/// (the medians' difference); shown with the medians' intervals.
fn recall(xs: &[f64], ys: &[f64], id: &str) -> Option<Compared> {
    let seed = analysis::seed(id, "compare:recall");
    let (conf, n) = (resample::CONFIDENCE, resample::RESAMPLES);
    let baseline = resample::median_ci(xs, conf, n, seed)?;
    let candidate = resample::median_ci(ys, conf, n, seed ^ 1)?;
    Some(Compared {
        metric: Metric::Recall,
        change: Some(recall_change(baseline.point, candidate.point)),
        baseline,
        candidate,
        unit: Unit::Repetition.as_str(),
    })
}

/// The change from recall `b` to `c`: a verdict only beyond
/// [`RECALL_TOLERANCE`] (with a hair of slack for the decimal rounding of
/// the recalls themselves).
pub fn recall_change(b: f64, c: f64) -> Change {
    let delta = c - b;
    let beyond = delta.abs() > RECALL_TOLERANCE + 1e-9;
    let ratio = if b > 0.0 { c / b } else { 1.0 + delta };
    Change {
        ratio: Estimate {
            point: ratio,
            lo: ratio,
            hi: ratio,
            n: 1,
            confidence: resample::CONFIDENCE,
        },
        percent: (ratio - 1.0) * 100.0,
        significant: beyond,
        verdict: match (beyond, delta > 0.0) {
            (false, _) => Verdict::NoChange,
            (true, true) => Verdict::Improved,
            (true, false) => Verdict::Regressed,
        },
    }
}

/// `summary.csv`'s retrieval columns (empty on LLM cells): the setup, the
/// figures, the latency distribution per search call and the build, in
/// bytes and seconds.
pub(crate) const CSV_COLUMNS: [&str; 27] = [
    "index_size",
    "dim",
    "k",
    "distance_metric",
    "queries",
    "search",
    "recall",
    "recall_min",
    "queries_below_half",
    "qps",
    "search_latency_ms_mean",
    "search_latency_ms_p50",
    "search_latency_ms_p90",
    "search_latency_ms_p95",
    "search_latency_ms_p99",
    "search_latency_ms_p999",
    "passes",
    "search_calls",
    "search_duration_s",
    "build_key",
    "built_here",
    "build_s",
    "build_threads",
    "index_engine_bytes",
    "index_rss_bytes",
    "vectors_bytes",
    "truth",
];

/// A cell's values of [`CSV_COLUMNS`], unquoted (the CSV writer quotes).
pub(crate) fn csv_values(m: Option<&RetrievalMetrics>) -> Vec<String> {
    let Some(m) = m else {
        return vec![String::new(); CSV_COLUMNS.len()];
    };
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x}")
        } else {
            String::new()
        }
    };
    let d = &m.latency_ms;
    let b = &m.build;
    vec![
        m.index_size.to_string(),
        m.dim.to_string(),
        m.k.to_string(),
        m.metric.clone(),
        m.queries.to_string(),
        search_label(&m.search),
        num(m.recall),
        num(m.recall_min),
        num(m.queries_below_half),
        num(m.qps),
        num(d.mean),
        num(d.p50),
        num(d.p90),
        num(d.p95),
        num(d.p99),
        num(d.p999),
        m.passes.to_string(),
        m.calls.to_string(),
        num(m.duration_s),
        b.key.clone(),
        b.built_here.to_string(),
        num(b.seconds),
        b.threads.to_string(),
        b.engine_bytes.map(|x| x.to_string()).unwrap_or_default(),
        b.rss_bytes.map(|x| x.to_string()).unwrap_or_default(),
        b.data_bytes.to_string(),
        m.truth.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::{analysis, compare, figures};
    use engine_matrix_results::Summary;

    /// Engine `fast` and `exact`, four search settings each:
    /// `fast` reaches 0.95 at ef 64 and 128 (ef 64 the faster), `exact`
    /// never (best 0.93 at ef 128); one `broken` cell failed.
    fn sweep() -> Summary {
        let mut cells = Vec::new();
        for (ef, recall, qps, p95) in [
            (16, 0.80, 9000.0, 0.2),
            (32, 0.90, 6000.0, 0.3),
            (64, 0.955, 4000.0, 0.5),
            (128, 0.99, 2000.0, 0.9),
        ] {
            cells.push(retrieval_ok(
                retrieval_cell("fast", ef),
                recall,
                &around(qps, 0.01, 5, ef as u64),
                p95,
                ef == 16,
            ));
        }
        for (ef, recall, qps, p95) in [
            (16, 0.70, 900.0, 2.0),
            (32, 0.85, 800.0, 2.5),
            (64, 0.91, 500.0, 4.0),
            (128, 0.93, 300.0, 6.0),
        ] {
            cells.push(retrieval_ok(
                retrieval_cell("exact", ef),
                recall,
                &around(qps, 0.01, 5, 100 + ef as u64),
                p95,
                ef == 16,
            ));
        }
        cells.push(bad(
            retrieval_cell("broken", 16),
            Status::Failed,
            "building the index failed: out of memory",
        ));
        summary(None, cells)
    }

    fn curve<'a>(s: &'a [Scenario<'a>], engine: &str) -> &'a Curve<'a> {
        s[0].panels[0]
            .curves
            .iter()
            .find(|c| c.engine == engine)
            .unwrap()
    }

    #[test]
    fn the_operating_point_is_the_fastest_setting_that_reaches_the_recall() {
        let s = sweep();
        let groups = analysis::groups(&s);
        let scen = scenarios(&groups);
        let fast = curve(&scen, "fast");
        let Some(Operating::Reached(i)) = operating_point(&fast.points) else {
            panic!("fast reaches 0.95");
        };
        // ef 64 (0.955, ~4000 QPS), not ef 128 (more recall, slower) nor
        // ef 16 (faster, too little recall)
        assert_eq!(fast.points[i].search, "ef_search=64");
        let exact = curve(&scen, "exact");
        let Some(Operating::Missed(j)) = operating_point(&exact.points) else {
            panic!("exact never reaches 0.95");
        };
        assert_eq!(exact.points[j].search, "ef_search=128");
        assert_eq!(operating_point(&[]), None);

        // exactly the operating recall counts as reaching it
        let mut at = fast.points.clone();
        at[0].recall = OPERATING_RECALL;
        at[0].qps.point = 1e6;
        assert_eq!(operating_point(&at), Some(Operating::Reached(0)));

        let sec = &sections(&groups)[0];
        let op = sec.operating.as_ref().unwrap();
        let row = |e: &str| op.rows.iter().find(|r| r[0] == e).unwrap().clone();
        assert_eq!(row("fast")[2], "ef_search=64");
        assert_eq!(row("fast")[3], "0.9550");
        assert_eq!(row("fast")[5], "0.500", "its p95");
        assert_eq!(
            row("exact")[2],
            "no setting reached recall 0.95 (best recall 0.9300 at ef_search=128)"
        );
        assert!(row("exact")[3..].iter().all(|c| c == "—"));
    }

    #[test]
    fn each_engine_front_joins_only_its_undominated_settings() {
        let mut cells = Vec::new();
        // (0.55, 800) is beaten by (0.6, 900): a setting, not on the front
        for (ef, recall, qps, p95) in [
            (8, 0.5, 1000.0, 1.0),
            (16, 0.6, 900.0, 1.1),
            (24, 0.55, 800.0, 3.0),
            (32, 0.9, 300.0, 2.0),
        ] {
            cells.push(retrieval_ok(
                retrieval_cell("a", ef),
                recall,
                &[qps],
                p95,
                false,
            ));
        }
        // b beats a everywhere: a's front is still a's own
        for (ef, recall, qps) in [(8, 0.7, 5000.0), (16, 0.95, 4000.0)] {
            cells.push(retrieval_ok(
                retrieval_cell("b", ef),
                recall,
                &[qps],
                0.1,
                false,
            ));
        }
        let s = summary(None, cells);
        let groups = analysis::groups(&s);
        let charts = figures::all(&s, &groups);
        let series = |name: &str| -> Vec<Series> {
            match &charts.iter().find(|c| c.name == name).unwrap().body {
                Body::Xy { series, log_y, .. } => {
                    assert!(*log_y, "{name}: log y");
                    series.clone()
                }
                other => panic!("{other:?}"),
            }
        };
        let xy = |v: &[Series], label: &str| -> Vec<(f64, f64)> {
            v.iter()
                .find(|s| s.label == label)
                .unwrap()
                .points
                .iter()
                .map(|p| (p.0, p.1))
                .collect()
        };
        let qps = series("recall-qps-ann-vecs-k10");
        assert_eq!(xy(&qps, "a settings").len(), 4);
        assert_eq!(
            xy(&qps, "a Pareto front"),
            vec![(0.5, 1000.0), (0.6, 900.0), (0.9, 300.0)]
        );
        assert_eq!(
            xy(&qps, "b Pareto front"),
            vec![(0.7, 5000.0), (0.95, 4000.0)]
        );
        assert_eq!(
            qps.iter()
                .find(|s| s.label == "a Pareto front")
                .unwrap()
                .width,
            2
        );
        assert_eq!(
            qps.iter().find(|s| s.label == "a settings").unwrap().width,
            0
        );
        // p95 against recall: lower is better; (0.55, 3.0) is beaten by
        // (0.6, 1.1), and (0.9, 2.0) is on the front (the only one at 0.9)
        let lat = series("latency-recall-ann-vecs-k10");
        assert_eq!(
            xy(&lat, "a Pareto front"),
            vec![(0.5, 1.0), (0.6, 1.1), (0.9, 2.0)]
        );
        // no LLM chart for these cells
        assert_eq!(
            charts.len(),
            2,
            "{:?}",
            charts.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_section_lists_cells_builds_and_failures() {
        let s = sweep();
        let groups = analysis::groups(&s);
        let sec = &sections(&groups)[0];
        assert_eq!(sec.title, "ann · vecs");
        assert_eq!(sec.cells.rows.len(), 9, "8 ok cells and the failed one");
        let broken = sec.cells.rows.iter().find(|r| r[0] == "broken").unwrap();
        assert_eq!(
            broken.last().unwrap(),
            "failed: building the index failed: out of memory"
        );
        assert_eq!(broken[1], "ef_search=16");
        assert_eq!(broken.len(), sec.cells.headers.len());
        let fast64 = sec
            .cells
            .rows
            .iter()
            .find(|r| r[0] == "fast" && r[1] == "ef_search=64")
            .unwrap();
        assert_eq!(fast64[3], "0.9550");
        assert_eq!(fast64[8], "5 passes");
        // one build per engine (dedupe by key), built once, used by 4 cells
        let b = sec.builds.as_ref().unwrap();
        assert_eq!(b.rows.len(), 2);
        let fast = b.rows.iter().find(|r| r[0] == "fast").unwrap();
        assert_eq!(fast[1], "{} on vecs n=1000 d=8 l2 threads=0");
        assert_eq!(
            &fast[2..],
            ["1", "4", "2.00", "all", "4.00", "n/a", "0.032"]
        );
        assert_eq!(
            sec.charts.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            ["recall-qps-ann-vecs-k10", "latency-recall-ann-vecs-k10"]
        );
    }

    #[test]
    fn the_executive_summary_names_the_engine_to_use() {
        let s = sweep();
        let (findings, advice) = executive(&analysis::groups(&s));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].contains("**fast** answers the most queries"),
            "{findings:?}"
        );
        assert!(
            findings[0].contains("no setting of exact reached it (best recall 0.9300"),
            "{findings:?}"
        );
        assert_eq!(
            advice,
            ["For vector search like `ann` on vecs (k = 10) at recall ≥ 0.95, use **fast** with ef_search=64."]
        );
    }

    /// One retrieval cell, its passes' QPS around `qps` (±2%), in a run.
    fn one(recall: f64, qps: f64, p95: f64, phase: u64) -> Summary {
        summary(
            None,
            vec![retrieval_ok(
                retrieval_cell("hnsw", 64),
                recall,
                &around(qps, 0.02, 10, phase),
                p95,
                true,
            )],
        )
    }

    fn verdict(c: &compare::Comparison, m: Metric) -> Verdict {
        c.rows
            .iter()
            .find(|r| r.metric == m)
            .unwrap_or_else(|| panic!("no {m:?} row: {:?}", c.rows))
            .verdict()
    }

    #[test]
    fn compare_flags_a_faster_index_as_an_improvement() {
        let base = one(0.960, 1000.0, 0.5, 1);
        let cand = one(0.962, 1300.0, 0.5, 2);
        let c = compare::compare(&base, &cand, &compare::Options::default());
        assert_eq!(verdict(&c, Metric::Qps), Verdict::Improved);
        assert_eq!(verdict(&c, Metric::Recall), Verdict::NoChange, "+0.002");
        assert_eq!(verdict(&c, Metric::SearchP95), Verdict::NoChange);
        assert_eq!((c.improvements(), c.regressions()), (1, 0));
        let qps = c.rows.iter().find(|r| r.metric == Metric::Qps).unwrap();
        assert_eq!((qps.baseline.n, qps.unit), (10, "passes"));
    }

    #[test]
    fn compare_flags_slower_searches_and_lost_recall_as_regressions() {
        let base = one(0.960, 1000.0, 0.5, 1);
        let cand = one(0.940, 700.0, 0.5, 2);
        let c = compare::compare(&base, &cand, &compare::Options::default());
        assert_eq!(verdict(&c, Metric::Qps), Verdict::Regressed);
        assert_eq!(verdict(&c, Metric::Recall), Verdict::Regressed);
        assert_eq!(c.regressions(), 2);
        let md = compare::markdown(&c);
        assert!(
            md.contains("| recall@k | 0.9600 | 0.9400 | -0.0200 (tolerance ±0.005) | REGRESSED |"),
            "{md}"
        );

        // a cell that searched and now fails
        let mut broke = base.clone();
        broke.cells[0].status = Status::Failed;
        broke.cells[0].reason = Some("search failed: index corrupt".into());
        broke.cells[0].retrieval = None;
        let c = compare::compare(&base, &broke, &compare::Options::default());
        assert_eq!(c.regressions(), 1);
        assert!(c.broke[0].1.contains("index corrupt"), "{:?}", c.broke);
    }

    #[test]
    fn compare_calls_noise_no_change() {
        for phase in 0..20 {
            // ±2% pass-to-pass jitter, and a recall wobble within tolerance
            let base = one(0.960, 1000.0, 0.5, phase);
            let cand = one(0.956, 1000.0, 0.6, phase + 100);
            let c = compare::compare(&base, &cand, &compare::Options::default());
            assert_eq!(c.rows.len(), 3);
            assert_eq!(
                c.regressions(),
                0,
                "phase {phase}: {}",
                compare::markdown(&c)
            );
            assert_eq!(
                c.improvements(),
                0,
                "phase {phase}: {}",
                compare::markdown(&c)
            );
        }
        // a 3% faster index with almost no jitter: significant, but under
        // the 5% threshold
        let base = summary(
            None,
            vec![retrieval_ok(
                retrieval_cell("hnsw", 64),
                0.96,
                &around(1000.0, 0.001, 10, 1),
                0.5,
                true,
            )],
        );
        let cand = summary(
            None,
            vec![retrieval_ok(
                retrieval_cell("hnsw", 64),
                0.96,
                &around(1030.0, 0.001, 10, 2),
                0.5,
                true,
            )],
        );
        let c = compare::compare(&base, &cand, &compare::Options::default());
        let q = c.rows.iter().find(|r| r.metric == Metric::Qps).unwrap();
        assert!(q.change.unwrap().significant);
        assert_eq!(q.verdict(), Verdict::NoChange);
    }

    #[test]
    fn compare_judges_p95_only_on_repetitions() {
        let runs = |p95: f64, phase: u64| {
            summary(
                None,
                (0..4)
                    .map(|rep| {
                        let mut r = retrieval_ok(
                            retrieval_cell("hnsw", 64),
                            0.96,
                            &around(1000.0, 0.02, 5, phase + rep),
                            p95 * (1.0 + 0.01 * rep as f64),
                            true,
                        );
                        r.repeat = rep as u32;
                        r
                    })
                    .collect(),
            )
        };
        let c = compare::compare(&runs(0.5, 1), &runs(1.0, 20), &compare::Options::default());
        assert_eq!(verdict(&c, Metric::SearchP95), Verdict::Regressed);
        assert_eq!(verdict(&c, Metric::Qps), Verdict::NoChange);
        let qps = c.rows.iter().find(|r| r.metric == Metric::Qps).unwrap();
        assert_eq!((qps.baseline.n, qps.unit), (4, "runs"));
        // the same doubling in one run each: one sample, no verdict
        let c = compare::compare(
            &one(0.96, 1000.0, 0.5, 1),
            &one(0.96, 1000.0, 1.0, 2),
            &compare::Options::default(),
        );
        assert_eq!(verdict(&c, Metric::SearchP95), Verdict::NoChange);
    }

    #[test]
    fn compare_matches_retrieval_cells_by_id_and_refuses_other_data() {
        // two settings of one engine: the LLM key (scenario, data set,
        // engine, batch, clients) is the same for both
        let run = |phase: u64, qps64: f64| {
            summary(
                None,
                vec![
                    retrieval_ok(
                        retrieval_cell("hnsw", 32),
                        0.90,
                        &around(2000.0, 0.02, 10, phase),
                        0.3,
                        true,
                    ),
                    retrieval_ok(
                        retrieval_cell("hnsw", 64),
                        0.96,
                        &around(qps64, 0.02, 10, phase + 1),
                        0.5,
                        false,
                    ),
                ],
            )
        };
        let c = compare::compare(
            &run(1, 1000.0),
            &run(5, 600.0),
            &compare::Options::default(),
        );
        let ids: std::collections::BTreeSet<&str> =
            c.rows.iter().map(|r| r.cell.as_str()).collect();
        assert_eq!(ids.len(), 2, "{:?}", c.rows);
        let q = |id_part: &str| {
            c.rows
                .iter()
                .find(|r| r.metric == Metric::Qps && r.cell.ends_with(id_part))
                .unwrap()
                .verdict()
        };
        assert_eq!(q("ef_search32"), Verdict::NoChange);
        assert_eq!(q("ef_search64"), Verdict::Regressed);

        // a file data set cut to `nall` that changed size: not comparable
        let base = one(0.96, 1000.0, 0.5, 1);
        let mut cand = one(0.96, 1000.0, 0.5, 2);
        cand.cells[0].retrieval.as_mut().unwrap().index_size = 2000;
        let c = compare::compare(&base, &cand, &compare::Options::default());
        assert!(c.rows.is_empty());
        assert_eq!(c.refused.len(), 1);
        assert!(
            c.refused[0]
                .1
                .contains("index size differs (baseline 1000, candidate 2000)"),
            "{:?}",
            c.refused
        );
    }

    #[test]
    fn recall_changes_count_only_beyond_the_tolerance() {
        assert_eq!(recall_change(0.95, 0.945).verdict, Verdict::NoChange);
        assert_eq!(recall_change(0.95, 0.955).verdict, Verdict::NoChange);
        assert_eq!(recall_change(0.95, 0.9449).verdict, Verdict::Regressed);
        assert_eq!(recall_change(0.95, 0.9551).verdict, Verdict::Improved);
        assert_eq!(recall_change(0.0, 0.0).verdict, Verdict::NoChange);
    }

    #[test]
    fn csv_rows_carry_the_retrieval_figures() {
        let mut s = sweep();
        let t = around(100.0, 0.02, 8, 1);
        s.cells
            .push(ok(cell("llm", 32, 16, 1), metrics(&t, &t, 16), 0));
        let text = crate::csv::csv(&s);
        let rows: Vec<Vec<String>> = text.lines().map(split_csv).collect();
        let header = &rows[0];
        assert_eq!(rows.len(), 1 + 10);
        assert!(rows.iter().all(|r| r.len() == header.len()));
        assert_eq!(&header[header.len() - CSV_COLUMNS.len()..], CSV_COLUMNS);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let row = |id_end: &str| rows.iter().find(|r| r[0].ends_with(id_end)).unwrap();
        let fast64 = row("/fast/n1000-d8-k10-q100-l2-c1-bs1-ef_search64");
        assert_eq!(fast64[col("kind")], "retrieval");
        assert_eq!(fast64[col("recall")], "0.955");
        assert_eq!(fast64[col("search")], "ef_search=64");
        assert_eq!(fast64[col("search_latency_ms_p95")], "0.5");
        assert_eq!(fast64[col("built_here")], "false");
        assert_eq!(fast64[col("index_engine_bytes")], "4000000");
        assert_eq!(fast64[col("index_rss_bytes")], "", "unknown RSS");
        assert!(fast64[col("qps")].parse::<f64>().unwrap() > 3900.0);
        assert_eq!(fast64[col("output_throughput")], "", "no LLM figure");
        let llm = row("/llm/in32-out16-bs1");
        assert!(llm[col("output_throughput")].parse::<f64>().is_ok());
        assert!(CSV_COLUMNS.iter().all(|c| llm[col(c)].is_empty()));
        let broken = row("/broken/n1000-d8-k10-q100-l2-c1-bs1-ef_search16");
        assert_eq!(broken[col("status")], "failed");
        assert_eq!(broken[col("recall")], "");
    }

    /// Splits one CSV line (RFC 4180 quoting, no line breaks in fields).
    fn split_csv(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => out.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        out.push(cur);
        out
    }
}
