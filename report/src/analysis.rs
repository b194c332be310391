//! What the report says, computed from a run's `summary.json` alone (so a
//! saved baseline or an old run can be re-reported): cells grouped across
//! repetitions, the samples behind every figure, speedups with confidence
//! intervals, scaling series, Pareto fronts and the executive summary.
//!
//! Sampling unit: with `run --repeat N` (N > 1) one sample per repetition
//! (the cell's whole-run figure), and speedups are *paired* ratios inside
//! each repetition, since the engines ran interleaved; with one repetition,
//! one sample per measured iteration, and speedups are unpaired ratios of
//! medians. Tokens are never the unit: tokens of one iteration share its
//! batch, its cache state and the machine's state at that moment.
//!
//! Retrieval cells (vector-index searches, [`crate::retrieval`]) have no
//! LLM figures (`metrics` is `None`): [`Group::ok_runs`] leaves them out,
//! the LLM sections take [`llm_groups`], and the executive summary's
//! rankings skip their scenarios; their own figures are read by
//! [`crate::retrieval`].

use engine_matrix_format::{Cell, CellParams, ScenarioKind};
use engine_matrix_results::metrics::{CellMetrics, IterationFigures};
use engine_matrix_results::{machine_class, CellResult, Status, Summary};
use engine_matrix_stats::resample::{self, Estimate, OutlierCounts};
use std::collections::BTreeMap;

/// A cell and all its repetitions.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub runs: Vec<&'a CellResult>,
}

impl<'a> Group<'a> {
    pub fn cell(&self) -> &'a Cell {
        &self.runs[0].cell
    }

    /// Whether this is a retrieval cell (figures in `retrieval`, none in
    /// `metrics`).
    pub fn is_retrieval(&self) -> bool {
        self.cell().kind == ScenarioKind::Retrieval
    }

    pub fn ok_runs(&self) -> impl Iterator<Item = &'a CellResult> + '_ {
        self.runs
            .iter()
            .copied()
            .filter(|r| r.status == Status::Ok && r.metrics.is_some())
    }

    /// `ok` when every repetition is; else the first other status, its
    /// reason, and how many repetitions it concerns.
    pub fn status(&self) -> (Status, Option<String>) {
        let bad: Vec<&CellResult> = self
            .runs
            .iter()
            .copied()
            .filter(|r| r.status != Status::Ok)
            .collect();
        match bad.first() {
            None => (Status::Ok, None),
            Some(first) => {
                let mut why = first.reason.clone().unwrap_or_default();
                if self.runs.len() > 1 {
                    why = format!("{why} ({} of {} repetitions)", bad.len(), self.runs.len());
                }
                (first.status, Some(why))
            }
        }
    }

    /// The first complete repetition's metrics (for figures that are not
    /// resampled, e.g. percentiles of one run).
    pub fn metrics(&self) -> Option<&'a CellMetrics> {
        self.ok_runs().next().and_then(|r| r.metrics.as_ref())
    }
}

/// Cells grouped by id, in the order the run first met them.
pub fn groups(summary: &Summary) -> Vec<Group<'_>> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_id: BTreeMap<&str, Vec<&CellResult>> = BTreeMap::new();
    for c in &summary.cells {
        let e = by_id.entry(c.cell.id.as_str()).or_default();
        if e.is_empty() {
            order.push(c.cell.id.as_str());
        }
        e.push(c);
    }
    order
        .into_iter()
        .map(|id| {
            let mut runs = by_id.remove(id).unwrap_or_default();
            runs.sort_by_key(|r| r.repeat);
            Group { runs }
        })
        .collect()
}

/// The groups of LLM cells (every kind but retrieval), for the sections
/// whose figures are tokens and requests.
pub fn llm_groups<'a>(groups: &[Group<'a>]) -> Vec<Group<'a>> {
    groups
        .iter()
        .filter(|g| !g.is_retrieval())
        .cloned()
        .collect()
}

/// The metrics a reader compares cells on, with their direction.
///
/// The last three are a retrieval cell's ([`Metric::RETRIEVAL`]): they are
/// read from its `RetrievalMetrics` by [`crate::retrieval`], never from
/// [`CellMetrics`] (so [`Metric::of_run`] and [`Metric::of_iteration`] have
/// none of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    OutputThroughput,
    RequestThroughput,
    TtftP50,
    TpotP50,
    ItlP50,
    E2elP50,
    /// Queries answered per second.
    Qps,
    /// p95 of the latency of one search call, ms.
    SearchP95,
    /// Mean recall@k.
    Recall,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::OutputThroughput,
        Metric::RequestThroughput,
        Metric::TtftP50,
        Metric::TpotP50,
        Metric::ItlP50,
        Metric::E2elP50,
    ];

    /// A retrieval cell's metrics.
    pub const RETRIEVAL: [Metric; 3] = [Metric::Qps, Metric::SearchP95, Metric::Recall];

    pub fn key(self) -> &'static str {
        match self {
            Metric::OutputThroughput => "output_throughput",
            Metric::RequestThroughput => "request_throughput",
            Metric::TtftP50 => "ttft_p50_ms",
            Metric::TpotP50 => "tpot_p50_ms",
            Metric::ItlP50 => "itl_p50_ms",
            Metric::E2elP50 => "e2el_p50_ms",
            Metric::Qps => "qps",
            Metric::SearchP95 => "search_p95_ms",
            Metric::Recall => "recall",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Metric::OutputThroughput => "output tok/s",
            Metric::RequestThroughput => "req/s",
            Metric::TtftP50 => "TTFT p50 (ms)",
            Metric::TpotP50 => "TPOT p50 (ms)",
            Metric::ItlP50 => "ITL p50 (ms)",
            Metric::E2elP50 => "E2EL p50 (ms)",
            Metric::Qps => "QPS",
            Metric::SearchP95 => "search p95 (ms)",
            Metric::Recall => "recall@k",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::OutputThroughput | Metric::RequestThroughput | Metric::Qps | Metric::Recall
        )
    }

    /// The figure of a whole run.
    pub fn of_run(self, m: &CellMetrics) -> Option<f64> {
        let p50 = |d: &Option<engine_matrix_stats::stats::Distribution>| d.as_ref().map(|d| d.p50);
        match self {
            Metric::OutputThroughput => Some(m.output_throughput),
            Metric::RequestThroughput => Some(m.request_throughput),
            Metric::TtftP50 => p50(&m.ttft_ms),
            Metric::TpotP50 => p50(&m.tpot_ms),
            Metric::ItlP50 => p50(&m.itl_ms),
            Metric::E2elP50 => p50(&m.e2el_ms),
            Metric::Qps | Metric::SearchP95 | Metric::Recall => None,
        }
        .filter(|x| x.is_finite())
    }

    /// The figure of one iteration.
    pub fn of_iteration(self, it: &IterationFigures) -> Option<f64> {
        match self {
            Metric::OutputThroughput => Some(it.output_throughput),
            Metric::RequestThroughput => Some(it.request_throughput),
            Metric::TtftP50 => it.ttft_p50_ms,
            Metric::TpotP50 => it.tpot_p50_ms,
            Metric::ItlP50 => it.itl_p50_ms,
            Metric::E2elP50 => it.e2el_p50_ms,
            Metric::Qps | Metric::SearchP95 | Metric::Recall => None,
        }
        .filter(|x| x.is_finite())
    }
}

/// What one sample stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Repetition,
    Iteration,
    /// A pass over a retrieval cell's query set.
    Pass,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Repetition => "runs",
            Unit::Iteration => "iterations",
            Unit::Pass => "passes",
        }
    }
}

/// The samples of `metric` in a cell: one per repetition when there are
/// several complete ones, else one per measured iteration.
pub fn samples(g: &Group, metric: Metric) -> (Vec<f64>, Unit) {
    let runs: Vec<&CellResult> = g.ok_runs().collect();
    if runs.len() > 1 {
        let v = runs
            .iter()
            .filter_map(|r| r.metrics.as_ref().and_then(|m| metric.of_run(m)))
            .collect();
        return (v, Unit::Repetition);
    }
    let v = runs
        .first()
        .and_then(|r| r.metrics.as_ref())
        .map(|m| {
            m.per_iteration
                .iter()
                .filter_map(|it| metric.of_iteration(it))
                .collect()
        })
        .unwrap_or_default();
    (v, Unit::Iteration)
}

/// A reproducible seed per cell and metric (the bootstrap is deterministic).
pub fn seed(id: &str, what: &str) -> u64 {
    engine_matrix_stats::rng::fnv1a(format!("{id}\n{what}").as_bytes())
}

/// A figure with its confidence interval and what its samples are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    pub est: Estimate,
    pub unit: Unit,
    pub outliers: OutlierCounts,
}

/// The median of `metric` over the cell's samples, with its bootstrap CI.
pub fn figure(g: &Group, metric: Metric) -> Option<Figure> {
    let (v, unit) = samples(g, metric);
    let est = resample::median_ci(
        &v,
        resample::CONFIDENCE,
        resample::RESAMPLES,
        seed(&g.cell().id, metric.key()),
    )?;
    Some(Figure {
        est,
        unit,
        outliers: resample::count_outliers(&v),
    })
}

/// A speedup (output tokens/s over the baseline's) with its CI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speedup {
    pub est: Estimate,
    /// Paired ratios of interleaved repetitions (else unpaired iterations).
    pub paired: bool,
}

/// `metric` of `g` over the same figure of `base`, as a ratio with its CI
/// (for latencies the ratio is inverted, so that > 1 always means faster).
pub fn ratio(g: &Group, base: &Group, metric: Metric) -> Option<Speedup> {
    let id = &g.cell().id;
    let what = format!("ratio:{}:{}", base.cell().id, metric.key());
    let s = seed(id, &what);
    let (c, r) = (resample::CONFIDENCE, resample::RESAMPLES);
    let run_figure = |x: &CellResult| x.metrics.as_ref().and_then(|m| metric.of_run(m));
    let mine: BTreeMap<u32, f64> = g
        .ok_runs()
        .filter_map(|x| Some((x.repeat, run_figure(x)?)))
        .collect();
    let theirs: BTreeMap<u32, f64> = base
        .ok_runs()
        .filter_map(|x| Some((x.repeat, run_figure(x)?)))
        .collect();
    let orient = |a: f64, b: f64| {
        if metric.higher_is_better() {
            (a, b)
        } else {
            (b, a)
        }
    };
    let pairs: Vec<(f64, f64)> = mine
        .iter()
        .filter_map(|(r, &a)| theirs.get(r).map(|&b| orient(a, b)))
        .collect();
    if pairs.len() > 1 {
        return resample::paired_ratio_ci(&pairs, c, r, s).map(|est| Speedup { est, paired: true });
    }
    let (a, _) = samples(g, metric);
    let (b, _) = samples(base, metric);
    let (num, den) = if metric.higher_is_better() {
        (a, b)
    } else {
        (b, a)
    };
    resample::ratio_ci(&num, &den, c, r, s).map(|est| Speedup { est, paired: false })
}

/// The baseline engine's group for `g` (same scenario, model and workload).
pub fn baseline_of<'a, 'b>(
    summary: &Summary,
    groups: &'b [Group<'a>],
    g: &Group,
) -> Option<&'b Group<'a>> {
    let base = summary.baseline.as_deref()?;
    let (engine, class) = machine_class(&g.cell().engine);
    if engine == base {
        return None;
    }
    // Only the baseline on the same kind of machine (a merged run).
    groups.iter().find(|b| {
        let (x, y) = (b.cell(), g.cell());
        machine_class(&x.engine) == (base, class)
            && x.scenario == y.scenario
            && x.model == y.model
            && x.params == y.params
    })
}

/// Output tokens/s over the baseline engine's, with its CI.
pub fn speedup(summary: &Summary, groups: &[Group], g: &Group) -> Option<Speedup> {
    let base = baseline_of(summary, groups, g)?;
    ratio(g, base, Metric::OutputThroughput)
}

/// A short description of a cell's workload.
pub fn workload(p: &CellParams, kind: ScenarioKind) -> String {
    let mut s = String::new();
    if let Some(l) = &p.label {
        s.push_str(l);
        s.push(' ');
    }
    match &p.dataset {
        Some(d) => s.push_str(&d.lengths_tag(p.input_tokens, p.output_tokens)),
        None => s.push_str(&format!("{}/{}", p.input_tokens, p.output_tokens)),
    }
    match kind {
        ScenarioKind::Latency => s.push_str(&format!(" bs{}", p.batch_size)),
        ScenarioKind::Throughput => s.push_str(&format!(" n{} bs{}", p.num_requests, p.max_batch)),
        ScenarioKind::Concurrency => s.push_str(&format!(" c{} bs{}", p.concurrency, p.max_batch)),
        ScenarioKind::Serving => {
            if let Some(sv) = &p.serving {
                s.push_str(&format!(
                    " {} {} req/s {}",
                    sv.load.as_str(),
                    sv.request_rate.tag(),
                    sv.arrival.as_str()
                ));
                if let Some(m) = sv.max_concurrency {
                    s.push_str(&format!(" mc{m}"));
                }
            }
        }
        // Retrieval cells have a section of their own (not grouped here).
        ScenarioKind::Retrieval => {}
    }
    s.push_str(&format!(" {} {}", p.batch_policy.as_str(), p.dtype));
    if p.quantization != "none" {
        s.push_str(&format!(" {}", p.quantization));
    }
    s
}

/// A workload parameter a chart puts on its x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    InputTokens,
    OutputTokens,
    /// `batch_size` of latency cells, `max_batch` of throughput cells.
    BatchSize,
    Concurrency,
}

impl Axis {
    pub fn label(self) -> &'static str {
        match self {
            Axis::InputTokens => "input length (tokens)",
            Axis::OutputTokens => "output length (tokens)",
            Axis::BatchSize => "batch size",
            Axis::Concurrency => "concurrency (clients)",
        }
    }

    pub fn value(self, c: &Cell) -> u32 {
        let p = &c.params;
        match self {
            Axis::InputTokens => p.input_tokens,
            Axis::OutputTokens => p.output_tokens,
            Axis::BatchSize => match c.kind {
                ScenarioKind::Latency => p.batch_size,
                _ => p.max_batch,
            },
            Axis::Concurrency => p.concurrency,
        }
    }

    /// The cell's other parameters, as a key (cells on one line share it).
    /// Only the parameters that define a cell of its kind count: derived
    /// ones (a latency cell's request count is its batch size; the batch
    /// limit follows the batch size or concurrency unless pinned) would
    /// otherwise split every sweep.
    fn rest(self, c: &Cell) -> String {
        let p = &c.params;
        let keep = |a: Axis, v: String| if a == self { String::new() } else { v };
        let label = match self {
            Axis::InputTokens | Axis::OutputTokens => String::new(),
            _ => p.label.clone().unwrap_or_default(),
        };
        // Along a length axis the other length may change with it: the
        // seeds' workloads grow both (128/64, 512/128, ...), and TTFT is a
        // function of the prompt, decode rate of the context.
        let lengths = matches!(self, Axis::InputTokens | Axis::OutputTokens);
        let mut k = vec![
            label,
            if lengths {
                String::new()
            } else {
                p.input_tokens.to_string()
            },
            if lengths {
                String::new()
            } else {
                p.output_tokens.to_string()
            },
            p.batch_policy.as_str().to_string(),
            p.dtype.clone(),
            p.quantization.clone(),
        ];
        match c.kind {
            ScenarioKind::Latency => k.push(keep(Axis::BatchSize, p.batch_size.to_string())),
            ScenarioKind::Throughput => {
                k.push(p.num_requests.to_string());
                k.push(keep(Axis::BatchSize, p.max_batch.to_string()));
            }
            ScenarioKind::Concurrency => {
                k.push(keep(Axis::Concurrency, p.concurrency.to_string()));
                k.push(p.requests.to_string());
                k.push(p.duration_s.to_string());
            }
            // Serving and retrieval cells are compared one to one: every
            // setting counts.
            ScenarioKind::Serving | ScenarioKind::Retrieval => {
                k.push(serde_json::to_string(&p.serving).unwrap_or_default());
                k.push(p.requests.to_string());
                k.push(p.duration_s.to_string());
            }
        }
        k.join("|")
    }
}

/// Cells of one scenario and model that differ only in `axis`: one line per
/// engine, for every setting of the other parameters that has at least two
/// points on the axis.
#[derive(Debug, Clone)]
pub struct Sweep<'a> {
    pub scenario: String,
    pub model: String,
    pub axis: Axis,
    /// What the other parameters are (for the title).
    pub fixed: String,
    /// Engine -> points (axis value, group), sorted by axis value.
    pub lines: Vec<(String, Vec<(u32, &'a Group<'a>)>)>,
}

pub fn sweeps<'a>(groups: &'a [Group<'a>], axis: Axis, kinds: &[ScenarioKind]) -> Vec<Sweep<'a>> {
    let mut keyed: BTreeMap<(String, String, String), Vec<&'a Group<'a>>> = BTreeMap::new();
    let mut order = Vec::new();
    for g in groups {
        let c = g.cell();
        if !kinds.contains(&c.kind) {
            continue;
        }
        let k = (c.scenario.clone(), c.model.clone(), axis.rest(c));
        if !keyed.contains_key(&k) {
            order.push(k.clone());
        }
        keyed.entry(k).or_default().push(g);
    }
    let mut out = Vec::new();
    for k in order {
        let gs = &keyed[&k];
        let mut values: Vec<u32> = gs.iter().map(|g| axis.value(g.cell())).collect();
        values.sort_unstable();
        values.dedup();
        if values.len() < 2 {
            continue;
        }
        let mut lines: Vec<(String, Vec<(u32, &'a Group<'a>)>)> = Vec::new();
        for g in gs {
            let e = &g.cell().engine;
            let pos = match lines.iter().position(|(n, _)| n == e) {
                Some(p) => p,
                None => {
                    lines.push((e.clone(), Vec::new()));
                    lines.len() - 1
                }
            };
            lines[pos].1.push((axis.value(g.cell()), g));
        }
        for (_, pts) in &mut lines {
            pts.sort_by_key(|(x, _)| *x);
        }
        let c = gs[0].cell();
        out.push(Sweep {
            scenario: k.0.clone(),
            model: k.1.clone(),
            axis,
            fixed: fixed_description(c, axis),
            lines,
        });
    }
    out
}

fn fixed_description(c: &Cell, axis: Axis) -> String {
    let p = &c.params;
    let mut parts = Vec::new();
    if let Some(d) = &p.dataset {
        parts.push(d.lengths_tag(p.input_tokens, p.output_tokens));
    } else if !matches!(axis, Axis::InputTokens | Axis::OutputTokens) {
        parts.push(format!("in {}", p.input_tokens));
        parts.push(format!("out {}", p.output_tokens));
    }
    match c.kind {
        ScenarioKind::Latency if axis != Axis::BatchSize => {
            parts.push(format!("bs {}", p.batch_size))
        }
        ScenarioKind::Throughput if axis != Axis::BatchSize => {
            parts.push(format!("max batch {}", p.max_batch))
        }
        ScenarioKind::Concurrency if axis != Axis::Concurrency => {
            parts.push(format!("c {}", p.concurrency))
        }
        _ => {}
    }
    parts.push(p.dtype.clone());
    if p.quantization != "none" {
        parts.push(p.quantization.clone());
    }
    parts.join(", ")
}

/// Output tokens/s at the largest axis value over ideal linear scaling from
/// the smallest: `(T(x_max) / T(x_min)) / (x_max / x_min)`.
pub fn scaling_efficiency(points: &[(u32, f64)]) -> Option<(u32, f64)> {
    let (x0, t0) = *points.first()?;
    let (x1, t1) = *points.last()?;
    if x1 <= x0 || x0 == 0 || t0 <= 0.0 {
        return None;
    }
    Some((x1, (t1 / t0) / (x1 as f64 / x0 as f64)))
}

/// Indices of the points on the Pareto front of (throughput up, latency
/// down), sorted by throughput.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    // Highest throughput first; among equal throughput, lowest latency.
    idx.sort_by(|&a, &b| {
        points[b]
            .0
            .total_cmp(&points[a].0)
            .then(points[a].1.total_cmp(&points[b].1))
    });
    let mut front = Vec::new();
    let mut best_latency = f64::INFINITY;
    for i in idx {
        if points[i].1 < best_latency {
            best_latency = points[i].1;
            front.push(i);
        }
    }
    front.reverse();
    front
}

/// The executive summary: who is fastest where, and how engines scale.
#[derive(Debug, Clone, Default)]
pub struct Executive {
    pub cells: usize,
    pub ok: usize,
    pub unsupported: usize,
    pub failed: usize,
    pub findings: Vec<String>,
    pub recommendations: Vec<String>,
}

fn geomean(xs: &[f64]) -> Option<f64> {
    let v: Vec<f64> = xs
        .iter()
        .copied()
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

pub fn executive(summary: &Summary, groups: &[Group]) -> Executive {
    let mut ex = Executive {
        cells: groups.len(),
        ..Default::default()
    };
    count_statuses(&mut ex, groups);
    // Retrieval scenarios rank on recall and QPS: `crate::retrieval`.
    for (s, m, kind) in scenarios(groups)
        .iter()
        .filter(|(.., k)| *k != ScenarioKind::Retrieval)
    {
        let in_scen: Vec<&Group> = groups
            .iter()
            .filter(|g| &g.cell().scenario == s && &g.cell().model == m)
            .collect();
        findings_ranking(&mut ex, summary, groups, &in_scen, (s, m, *kind));
        if *kind == ScenarioKind::Latency {
            findings_ttft(&mut ex, &in_scen, s);
        }
    }
    findings_concurrency(&mut ex, groups);
    findings_batch_scaling(&mut ex, groups);
    findings_leaks(&mut ex, groups);
    closing_recommendations(&mut ex, summary);
    ex
}

fn count_statuses(ex: &mut Executive, groups: &[Group]) {
    for g in groups {
        match g.status().0 {
            Status::Ok => ex.ok += 1,
            Status::Unsupported => ex.unsupported += 1,
            Status::Failed => ex.failed += 1,
        }
    }
}

/// Each (scenario, model, kind) of the run, in order of first appearance.
fn scenarios(groups: &[Group]) -> Vec<(String, String, ScenarioKind)> {
    let mut scen: Vec<(String, String, ScenarioKind)> = Vec::new();
    for g in groups {
        let c = g.cell();
        let k = (c.scenario.clone(), c.model.clone(), c.kind);
        if !scen.contains(&k) {
            scen.push(k);
        }
    }
    scen
}

/// Per scenario and model: wins on output tokens/s, geometric-mean
/// speedup over the baseline, and the engine to use.
fn findings_ranking(
    ex: &mut Executive,
    summary: &Summary,
    groups: &[Group],
    in_scen: &[&Group],
    (s, m, kind): (&str, &str, ScenarioKind),
) {
    let mut workloads: BTreeMap<String, Vec<(&str, f64)>> = BTreeMap::new();
    for g in in_scen {
        if let Some(f) = figure(g, Metric::OutputThroughput) {
            // Engines compete within a machine class (a merged run).
            let class = machine_class(&g.cell().engine).1.unwrap_or_default();
            workloads
                .entry(format!(
                    "{class}\n{}",
                    serde_json::to_string(&g.cell().params).unwrap_or_default()
                ))
                .or_default()
                .push((g.cell().engine.as_str(), f.est.point));
        }
    }
    let mut wins: BTreeMap<&str, usize> = BTreeMap::new();
    for v in workloads.values() {
        if let Some((e, _)) = v.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            *wins.entry(e).or_default() += 1;
        }
    }
    let mut engines: Vec<&str> = in_scen.iter().map(|g| g.cell().engine.as_str()).collect();
    engines.dedup();
    let speedups: Vec<(String, f64, usize)> = engines
        .iter()
        .filter(|e| Some(machine_class(e).0) != summary.baseline.as_deref())
        .filter_map(|e| {
            let v: Vec<f64> = in_scen
                .iter()
                .filter(|g| g.cell().engine == *e)
                .filter_map(|g| speedup(summary, groups, g).map(|s| s.est.point))
                .collect();
            geomean(&v).map(|gm| (e.to_string(), gm, v.len()))
        })
        .collect();
    // The ranking: geometric-mean speedup over the baseline (which
    // scores 1) where there is one, else the number of workloads won.
    let base = summary.baseline.as_deref();
    let mut scores: Vec<(String, f64)> =
        speedups.iter().map(|(e, gm, _)| (e.clone(), *gm)).collect();
    if let Some(b) = base.filter(|b| engines.contains(b)) {
        scores.push((b.to_string(), 1.0));
    }
    if scores.len() < 2 {
        scores = wins
            .iter()
            .map(|(e, n)| (e.to_string(), *n as f64))
            .collect();
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let Some((best, score)) = scores.first() {
        let total = workloads.len();
        let n = wins.get(best.as_str()).copied().unwrap_or(0);
        let mut line = format!(
            "**{s}** ({}, {m}): **{best}** has the highest output tokens/s in {n} of {total} workloads",
            kind.as_str()
        );
        if !speedups.is_empty() {
            let parts: Vec<String> = speedups
                .iter()
                .map(|(e, gm, k)| format!("{e} {gm:.2}x ({k} cells)"))
                .collect();
            line.push_str(&format!(
                "; geometric-mean speedup over {}: {}",
                base.unwrap_or("the baseline"),
                parts.join(", ")
            ));
        }
        ex.findings.push(line + ".");
        let what = match kind {
            ScenarioKind::Latency => "single-batch latency work",
            ScenarioKind::Throughput => "offline batch throughput",
            ScenarioKind::Concurrency => "serving many concurrent clients",
            ScenarioKind::Serving => "open-loop serving at a request rate",
            ScenarioKind::Retrieval => "vector search",
        };
        // Within 5% of each other on the geometric mean, the run does
        // not single out one engine: say so rather than pick one.
        let close: Vec<&str> = scores
            .iter()
            .skip(1)
            .filter(|(_, x)| speedups.len() + 1 == scores.len() && *x >= score * 0.95)
            .map(|(e, _)| e.as_str())
            .collect();
        if close.is_empty() {
            ex.recommendations
                .push(format!("For {what} like `{s}` on {m}, use **{best}**."));
        } else {
            ex.recommendations.push(format!(
                "For {what} like `{s}` on {m}, **{best}** and {} are within 5% of each other (geometric mean over the cells): choose on other grounds.",
                close
                    .iter()
                    .map(|e| format!("**{e}**"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}

/// A latency scenario's lowest TTFT p50.
fn findings_ttft(ex: &mut Executive, in_scen: &[&Group], s: &str) {
    let best_ttft = in_scen
        .iter()
        .filter_map(|g| Some((g, figure(g, Metric::TtftP50)?.est.point)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((g, t)) = best_ttft {
        ex.findings.push(format!(
            "**{s}**: lowest TTFT p50 {t:.1} ms: {} at {}.",
            g.cell().engine,
            workload(&g.cell().params, g.cell().kind)
        ));
    }
}

fn findings_concurrency(ex: &mut Executive, groups: &[Group]) {
    // Concurrency: the best trade-off (Kleinrock's power: throughput over
    // latency) and the scaling efficiency.
    for sw in sweeps(groups, Axis::Concurrency, &[ScenarioKind::Concurrency]) {
        for (engine, pts) in &sw.lines {
            let fig: Vec<(u32, f64, f64)> = pts
                .iter()
                .filter_map(|(x, g)| {
                    let m = g.metrics()?;
                    let e2el = m.e2el_ms.as_ref()?.p50;
                    Some((*x, m.output_throughput, e2el))
                })
                .collect();
            if let Some(best) = fig
                .iter()
                .filter(|f| f.2 > 0.0)
                .max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)))
            {
                ex.recommendations.push(format!(
                    "Serve {} with **{engine}** at concurrency **{}** ({}): {:.1} tok/s at E2EL p50 {:.0} ms, the best throughput/latency trade-off (highest tokens/s per ms of latency).",
                    sw.model, best.0, sw.fixed, best.1, best.2
                ));
            }
            let tp: Vec<(u32, f64)> = fig.iter().map(|f| (f.0, f.1)).collect();
            if let Some((x, eff)) = scaling_efficiency(&tp) {
                ex.findings.push(format!(
                    "**{}** {engine}: scaling efficiency {:.0}% from concurrency {} to {x} ({}).",
                    sw.scenario,
                    eff * 100.0,
                    tp[0].0,
                    sw.fixed
                ));
            }
        }
    }
}

fn findings_batch_scaling(ex: &mut Executive, groups: &[Group]) {
    for sw in sweeps(
        groups,
        Axis::BatchSize,
        &[ScenarioKind::Latency, ScenarioKind::Throughput],
    ) {
        for (engine, pts) in &sw.lines {
            let tp: Vec<(u32, f64)> = pts
                .iter()
                .filter_map(|(x, g)| Some((*x, g.metrics()?.output_throughput)))
                .collect();
            if let Some((x, eff)) = scaling_efficiency(&tp) {
                ex.findings.push(format!(
                    "**{}** {engine}: batch scaling efficiency {:.0}% from batch {} to {x} ({}).",
                    sw.scenario,
                    eff * 100.0,
                    tp[0].0,
                    sw.fixed
                ));
            }
        }
    }
}

fn findings_leaks(ex: &mut Executive, groups: &[Group]) {
    // Memory lifecycle: leaks are findings, whatever the speed.
    for g in groups {
        for r in g.ok_runs() {
            if let Some(l) = r.memory.as_ref().and_then(|m| m.leak.as_ref()) {
                if l.verdict == engine_matrix_results::LeakVerdict::Leak {
                    ex.findings.push(format!(
                        "**memory leak** in `{}`: RSS grows {:.0} MB/hour after warm-up ({} points; {:.0} MB in {:.1} s); target 0 MB/h, acceptable < {:.0} MB/h.",
                        g.cell().id,
                        l.slope_mb_per_hour,
                        l.samples,
                        l.growth_mb,
                        l.window_s,
                        engine_matrix_results::telemetry::ACCEPTABLE_MB_PER_HOUR
                    ));
                }
            }
        }
    }
}

fn closing_recommendations(ex: &mut Executive, summary: &Summary) {
    if ex.unsupported + ex.failed > 0 {
        ex.recommendations.push(format!(
            "{} cells were unsupported and {} failed: see their reasons before drawing conclusions.",
            ex.unsupported, ex.failed
        ));
    }
    if summary.repeats < 2 {
        ex.recommendations.push(
            "Confidence intervals here come from iterations of a single run; `run --repeat N` gives run-to-run intervals and paired speedups."
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scaling_efficiency_is_one_for_linear_scaling() {
        assert_eq!(
            scaling_efficiency(&[(1, 10.0), (2, 20.0), (8, 80.0)]),
            Some((8, 1.0))
        );
        let (_, e) = scaling_efficiency(&[(1, 10.0), (4, 20.0)]).unwrap();
        assert!((e - 0.5).abs() < 1e-12);
        assert_eq!(scaling_efficiency(&[(4, 10.0)]), None);
    }

    #[test]
    fn pareto_front_keeps_non_dominated_points() {
        // (throughput, latency)
        let pts = [
            (10.0, 5.0),
            (20.0, 8.0),
            (15.0, 9.0),
            (30.0, 20.0),
            (5.0, 6.0),
        ];
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
    }

    proptest! {
        #[test]
        fn no_point_dominates_a_front_point(pts in proptest::collection::vec((0.0f64..100.0, 0.0f64..100.0), 1..30)) {
            let front = pareto_front(&pts);
            prop_assert!(!front.is_empty());
            for &i in &front {
                for (j, q) in pts.iter().enumerate() {
                    let dominates = q.0 >= pts[i].0 && q.1 <= pts[i].1 && (q.0 > pts[i].0 || q.1 < pts[i].1);
                    prop_assert!(!dominates, "{j} dominates front point {i}");
                }
            }
            // every point off the front is dominated (or equal) by a front point
            for (j, q) in pts.iter().enumerate() {
                if front.contains(&j) { continue; }
                prop_assert!(front.iter().any(|&i| pts[i].0 >= q.0 && pts[i].1 <= q.1));
            }
        }
    }
}
