//! `targets:`: the levels a run is graded against.
//!
//! ```yaml
//! targets: cpu_only                     # a shipped profile, or a list of
//! targets:                              # profiles and targets
//!   - gpt2_plan
//!   - name: ttft                        # optional; default: the metric
//!     metric: ttft_ms.p50               # see METRICS
//!     max: 200                          # met at or below (min: met at or above;
//!                                       # both: a range)
//!     acceptable: 300                   # optional: the looser level (a number
//!                                       # for one bound, [lo, hi] for a range)
//!     scenarios: [latency]              # optional filters (default: all)
//!     engines: [candle]
//!     models: [gpt2]
//!     kinds: [latency, throughput]      # scenario kinds
//!     batch_sizes: [1]
//! ```
//!
//! A target written in the matrix replaces a profile's target of the same
//! name, so a profile is extended or tightened without copying it.
//!
//! Targets are checked against the matrix when it loads: an unknown metric,
//! a filter naming no scenario, engine or model of the matrix, or a metric
//! no cell in the target's scope can have (`goodput` on latency scenarios,
//! `speedup` without a `baseline:`, `perplexity` without `quality:`) is an
//! error at the target's line. A *profile*'s target whose metric the matrix
//! cannot have is kept and reported as not applicable instead, so one
//! profile serves every matrix.
//!
//! The verdicts (met, acceptable, missed) and the grade are computed from
//! the results (`engine-matrix-results`' `targets`).

use crate::yaml::At;
use crate::{Cell, EngineDef, MatrixError, ModelDef, ScenarioDef, ScenarioKind};
use serde::{Deserialize, Serialize};

/// A level: met when the value is within both bounds that are set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Bound {
    pub fn contains(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }

    /// `≤ 200`, `≥ 30`, `5–15`.
    pub fn describe(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("{}–{}", num(lo), num(hi)),
            (Some(lo), None) => format!("≥ {}", num(lo)),
            (None, Some(hi)) => format!("≤ {}", num(hi)),
            (None, None) => "any".into(),
        }
    }
}

fn num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// One target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetDef {
    /// Unique in the matrix; shown in reports.
    pub name: String,
    /// A name from [`METRICS`], e.g. `ttft_ms.p50`.
    pub metric: String,
    pub target: Bound,
    /// The looser level: between it and `target` a cell is `acceptable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptable: Option<Bound>,
    /// Filters; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<ScenarioKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_sizes: Vec<u32>,
    /// `matrix`, or the profile it came from.
    pub source: String,
    /// Why no cell of this matrix can have the metric (a profile's target
    /// only; it is then reported as not applicable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<String>,
}

impl TargetDef {
    /// Whether the target applies to `cell` (its filters; the metric is
    /// the results' business). An engine named in the target selects its
    /// cells on every machine class of a merged run (`candle @ B`).
    pub fn selects(&self, cell: &Cell) -> bool {
        let ok = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        ok(&self.scenarios, &cell.scenario)
            && ok(&self.engines, crate::shard::machine_class(&cell.engine).0)
            && ok(&self.models, &cell.model)
            && (self.kinds.is_empty() || self.kinds.contains(&cell.kind))
            && (self.batch_sizes.is_empty() || self.batch_sizes.contains(&cell.params.batch_size))
    }

    /// `ttft_ms.p50 ≤ 200 (acceptable ≤ 300)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.metric, self.target.describe());
        if let Some(a) = &self.acceptable {
            s.push_str(&format!(" (acceptable {})", a.describe()));
        }
        s
    }
}

/// `targets:` after profiles are expanded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetsDef {
    /// The profiles named, in order.
    pub profiles: Vec<String>,
    pub targets: Vec<TargetDef>,
}

/// What a metric needs from a cell's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Every cell has it.
    Any,
    /// Only open-loop (`serving`) cells.
    Serving,
    /// A `baseline:` engine (and a cell that is not the baseline's).
    Baseline,
    /// A `quality:` block.
    Quality,
    /// Retrieval cells (`kind: retrieval`).
    Retrieval,
}

/// The metrics a target can name: (name, unit, needs, what it is).
pub const METRICS: &[(&str, &str, Needs, &str)] = &[
    (
        "output_throughput",
        "tok/s",
        Needs::Any,
        "generated tokens per second",
    ),
    (
        "request_throughput",
        "req/s",
        Needs::Any,
        "completed requests per second",
    ),
    (
        "total_token_throughput",
        "tok/s",
        Needs::Any,
        "prompt and generated tokens per second",
    ),
    (
        "spike_rate_pct",
        "%",
        Needs::Any,
        "share of inter-token latencies above mean + 3σ",
    ),
    (
        "error_rate_pct",
        "%",
        Needs::Any,
        "failed requests over all requests",
    ),
    (
        "peak_rss_gb",
        "GB",
        Needs::Any,
        "peak resident memory of the engine's process",
    ),
    (
        "peak_rss_pct",
        "%",
        Needs::Any,
        "peak resident memory as a share of the system's",
    ),
    (
        "leak_mb_per_h",
        "MB/h",
        Needs::Any,
        "RSS growth: the slope when the leak check finds a leak, else 0",
    ),
    (
        "speedup",
        "x",
        Needs::Baseline,
        "output tokens/s over the baseline engine's same cell",
    ),
    (
        "goodput",
        "req/s",
        Needs::Serving,
        "requests per second that met the SLO",
    ),
    (
        "goodput_pct",
        "%",
        Needs::Serving,
        "share of requests that met the SLO",
    ),
    (
        "perplexity",
        "",
        Needs::Quality,
        "perplexity over the quality text",
    ),
    (
        "kld_mean",
        "nats",
        Needs::Quality,
        "mean KL divergence from the reference",
    ),
    (
        "top1_agreement_pct",
        "%",
        Needs::Quality,
        "share of positions whose top token is the reference's",
    ),
    (
        "operating_p95_ms",
        "ms",
        Needs::Retrieval,
        "p95 search latency at the operating point: the fastest search setting of the engine's sweep with recall@k >= 0.95 (the other settings are not judged)",
    ),
    (
        "recall",
        "",
        Needs::Retrieval,
        "mean recall@k against the exact neighbours",
    ),
    (
        "qps",
        "q/s",
        Needs::Retrieval,
        "queries answered per second",
    ),
    (
        "build_s",
        "s",
        Needs::Retrieval,
        "time to build the cell's index",
    ),
];

/// Metrics any cell has (LLM or retrieval): the process's memory.
const ANY_KIND: [&str; 2] = ["peak_rss_gb", "peak_rss_pct"];

/// Whether a cell of `kind` can have `metric`: retrieval metrics are
/// retrieval cells', token and request metrics LLM cells', memory both.
pub fn applies(metric: &str, kind: ScenarioKind) -> bool {
    if ANY_KIND.contains(&metric) {
        return true;
    }
    let retrieval = self::metric(metric).is_some_and(|(_, n)| n == Needs::Retrieval);
    retrieval == (kind == ScenarioKind::Retrieval)
}

/// Latency distributions a target can name as `NAME.STAT`.
/// (`search_ms` is a retrieval cell's latency per search call.)
pub const DISTRIBUTIONS: &[&str] = &["ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "search_ms"];
/// Their statistics.
pub const STATS: &[&str] = &[
    "mean", "min", "p50", "p90", "p95", "p99", "p999", "max", "std",
];

/// The metric's unit and needs, if `name` is one.
pub fn metric(name: &str) -> Option<(&'static str, Needs)> {
    if let Some((d, s)) = name.split_once('.') {
        let needs = if d == "search_ms" {
            Needs::Retrieval
        } else {
            Needs::Any
        };
        return (DISTRIBUTIONS.contains(&d) && STATS.contains(&s)).then_some(("ms", needs));
    }
    METRICS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, u, n, _)| (*u, *n))
}

fn metric_names() -> String {
    let mut names: Vec<String> = DISTRIBUTIONS.iter().map(|d| format!("{d}.STAT")).collect();
    names.extend(METRICS.iter().map(|(n, ..)| n.to_string()));
    format!("{} (STAT: {})", names.join(", "), STATS.join(", "))
}

/// A shipped profile's targets, as `(name, metric, target, acceptable,
/// kinds, batch sizes)`.
type ProfileTarget = (
    &'static str,
    &'static str,
    Bound,
    Option<Bound>,
    &'static [ScenarioKind],
    &'static [u32],
);

const fn below(v: f64) -> Bound {
    Bound {
        min: None,
        max: Some(v),
    }
}
const fn above(v: f64) -> Bound {
    Bound {
        min: Some(v),
        max: None,
    }
}
const fn range(lo: f64, hi: f64) -> Bound {
    Bound {
        min: Some(lo),
        max: Some(hi),
    }
}

/// Per-request latency: one request at a time.
const SINGLE: &[ScenarioKind] = &[ScenarioKind::Latency];
const BATCH_1: &[u32] = &[1];

const BATCHED: &[ScenarioKind] = &[
    ScenarioKind::Throughput,
    ScenarioKind::Concurrency,
    ScenarioKind::Serving,
];

/// The second suite's hardware table: tok/s and TTFT per machine, and its
/// core targets: the spike-rate range, memory below 90% of the system's,
/// and retrieval p95 < 20 ms (at the operating point, one query at a time;
/// not applicable to a matrix without retrieval cells). The retrieval
/// target alone is the `retrieval` profile.
const fn hardware(tok_s: f64, ttft_ms: f64) -> [ProfileTarget; 5] {
    [
        ("tok_s", "output_throughput", above(tok_s), None, &[], &[]),
        ("ttft", "ttft_ms.p50", below(ttft_ms), None, SINGLE, BATCH_1),
        (
            "spike_rate",
            "spike_rate_pct",
            range(5.0, 15.0),
            None,
            &[],
            &[],
        ),
        ("memory", "peak_rss_pct", below(90.0), None, &[], &[]),
        RETRIEVAL_P95,
    ]
}

/// The second suite's retrieval target: p95 < 20 ms at the operating
/// point, one query at a time.
const RETRIEVAL_P95: ProfileTarget = (
    "retrieval_p95",
    "operating_p95_ms",
    below(20.0),
    None,
    RETRIEVAL,
    BATCH_1,
);

/// The shipped profiles: name, where its figures come from, targets.
pub const PROFILES: &[(&str, &str, &[ProfileTarget])] = &[
    (
        "gpt2_plan",
        "the benchmarking plan's success criteria for GPT-2",
        &[
            (
                "ttft",
                "ttft_ms.p50",
                below(200.0),
                Some(below(300.0)),
                SINGLE,
                BATCH_1,
            ),
            (
                "tok_s",
                "output_throughput",
                above(30.0),
                Some(above(20.0)),
                &[],
                &[],
            ),
            (
                "memory",
                "peak_rss_gb",
                below(2.0),
                Some(below(3.0)),
                &[],
                &[],
            ),
            (
                "throughput",
                "request_throughput",
                above(100.0),
                Some(above(50.0)),
                BATCHED,
                &[],
            ),
            ("speedup", "speedup", above(2.0), Some(above(1.5)), &[], &[]),
            (
                "leak",
                "leak_mb_per_h",
                below(0.0),
                Some(below(10.0)),
                &[],
                &[],
            ),
        ],
    ),
    (
        "rtx_4090",
        "the second suite's rtx_4090 hardware preset",
        &hardware(30.0, 5.0),
    ),
    (
        "rtx_3080",
        "the second suite's rtx_3080 hardware preset",
        &hardware(25.0, 8.0),
    ),
    (
        "cpu_only",
        "the second suite's cpu_only hardware preset",
        &hardware(10.0, 15.0),
    ),
    (
        "retrieval",
        "the second suite's retrieval target: p95 < 20 ms on 1M entries, top-10, 1000 queries, at recall@10 >= 0.95",
        &[RETRIEVAL_P95],
    ),
];

const RETRIEVAL: &[ScenarioKind] = &[ScenarioKind::Retrieval];

/// `(name, description)` of every shipped profile.
pub fn profile_names() -> Vec<(&'static str, &'static str)> {
    PROFILES.iter().map(|(n, d, _)| (*n, *d)).collect()
}

const TARGET_KEYS: [&str; 11] = [
    "name",
    "metric",
    "min",
    "max",
    "acceptable",
    "scenarios",
    "engines",
    "models",
    "kinds",
    "batch_sizes",
    "source",
];

/// What the targets are checked against.
pub(crate) struct Scope<'a> {
    pub scenarios: &'a [ScenarioDef],
    /// Every cell, with and without `--quick`.
    pub cells: &'a [Cell],
    pub engines: &'a [EngineDef],
    pub models: &'a [ModelDef],
    pub baseline: Option<&'a str>,
    pub quality: bool,
}

/// `targets:`: a profile name, or a list of profile names and targets.
pub(crate) fn parse(at: &At<'_>, scope: &Scope<'_>) -> Result<TargetsDef, MatrixError> {
    let items = match at.str() {
        Ok(_) => vec![at.clone()],
        Err(_) => at.non_empty_seq()?,
    };
    let mut out = TargetsDef::default();
    // Where each target came from, for a duplicate's error.
    let mut written: Vec<String> = Vec::new();
    for item in &items {
        if let Ok(name) = item.str() {
            let Some((_, _, targets)) = PROFILES.iter().find(|(n, ..)| *n == name) else {
                let names: Vec<&str> = PROFILES.iter().map(|(n, ..)| *n).collect();
                return Err(item.err(format!(
                    "unknown target profile `{name}` (profiles: {})",
                    names.join(", ")
                )));
            };
            if out.profiles.iter().any(|p| p == name) {
                return Err(item.err(format!("target profile `{name}` is named twice")));
            }
            out.profiles.push(name.to_string());
            for (tname, m, target, acceptable, kinds, batch_sizes) in targets.iter() {
                let mut def = TargetDef {
                    name: format!("{name}.{tname}"),
                    metric: m.to_string(),
                    target: *target,
                    acceptable: *acceptable,
                    scenarios: Vec::new(),
                    engines: Vec::new(),
                    models: Vec::new(),
                    kinds: kinds.to_vec(),
                    batch_sizes: batch_sizes.to_vec(),
                    source: name.to_string(),
                    not_applicable: None,
                };
                def.not_applicable = applicability(&def, scope).err();
                // A later profile's target of the same name replaces it.
                out.targets.retain(|t| t.name != def.name);
                out.targets.push(def);
            }
        } else {
            let def = parse_target(item, scope)?;
            if written.contains(&def.name) {
                return Err(item.err(format!(
                    "target `{}` is written twice (give one a `name:`)",
                    def.name
                )));
            }
            written.push(def.name.clone());
            out.targets.retain(|t| t.name != def.name);
            out.targets.push(def);
        }
    }
    Ok(out)
}

fn parse_target(item: &At<'_>, scope: &Scope<'_>) -> Result<TargetDef, MatrixError> {
    let m = item.map(&TARGET_KEYS)?;
    if let Some(s) = m.get("source") {
        return Err(s.err("`source` is set by the harness, not in a matrix"));
    }
    let metric_at = m.require("metric")?;
    let metric_name = metric_at.str()?;
    if metric(metric_name).is_none() {
        return Err(metric_at.err(format!(
            "unknown metric `{metric_name}` (metrics: {})",
            metric_names()
        )));
    }
    let number =
        |key: &str| -> Result<Option<f64>, MatrixError> { m.opt(key).map(finite).transpose() };
    let target = Bound {
        min: number("min")?,
        max: number("max")?,
    };
    if target.min.is_none() && target.max.is_none() {
        return Err(item.err(
            "a target needs `min:` (met at or above), `max:` (met at or below) or both (a range)",
        ));
    }
    if let (Some(lo), Some(hi)) = (target.min, target.max) {
        if lo > hi {
            return Err(item.err(format!("`min` ({lo}) is above `max` ({hi})")));
        }
    }
    let acceptable = m
        .opt("acceptable")
        .map(|a| parse_acceptable(a, &target))
        .transpose()?;
    let names = |key: &str, known: &[&str], what: &str| -> Result<Vec<String>, MatrixError> {
        let Some(list) = m.opt(key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for x in list.non_empty_seq()? {
            let s = x.str()?;
            if !known.contains(&s) {
                return Err(x.err(format!(
                    "`{s}` is not one of this matrix's {what}s ({})",
                    known.join(", ")
                )));
            }
            out.push(s.to_string());
        }
        Ok(out)
    };
    let scenario_names: Vec<&str> = scope.scenarios.iter().map(|s| s.name.as_str()).collect();
    let engine_names: Vec<&str> = scope.engines.iter().map(|e| e.name.as_str()).collect();
    let model_names: Vec<&str> = scope.models.iter().map(|e| e.name.as_str()).collect();
    let kinds = match m.opt("kinds") {
        None => Vec::new(),
        Some(list) => list
            .non_empty_seq()?
            .iter()
            .map(|k| {
                let s = k.str()?;
                [
                    ScenarioKind::Latency,
                    ScenarioKind::Throughput,
                    ScenarioKind::Concurrency,
                    ScenarioKind::Serving,
                    ScenarioKind::Retrieval,
                ]
                .into_iter()
                .find(|x| x.as_str() == s)
                .ok_or_else(|| {
                    k.err(format!(
                        "unknown scenario kind `{s}` (latency, throughput, concurrency, serving, retrieval)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let name = match m.opt("name") {
        Some(n) => {
            let s = n.str()?;
            crate::check_name(n, s)?;
            s.to_string()
        }
        None => metric_name.to_string(),
    };
    let batch_sizes = match m.opt("batch_sizes") {
        None => Vec::new(),
        Some(list) => list
            .non_empty_seq()?
            .iter()
            .map(|b| b.u32_min(1))
            .collect::<Result<_, _>>()?,
    };
    let def = TargetDef {
        name,
        metric: metric_name.to_string(),
        target,
        acceptable,
        scenarios: names("scenarios", &scenario_names, "scenario")?,
        engines: names("engines", &engine_names, "engine")?,
        models: names("models", &model_names, "model")?,
        kinds,
        batch_sizes,
        source: "matrix".into(),
        not_applicable: None,
    };
    applicability(&def, scope).map_err(|why| metric_at.err(why))?;
    Ok(def)
}

fn finite(at: &At<'_>) -> Result<f64, MatrixError> {
    match at.json()? {
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| at.err("expected a finite number")),
        _ => Err(at.err(format!("expected a number, got {}", at.node.describe()))),
    }
}

/// `acceptable:` a number (the looser one-sided bound) or `[lo, hi]` (the
/// looser range), which must contain the target.
fn parse_acceptable(a: &At<'_>, target: &Bound) -> Result<Bound, MatrixError> {
    let bound = match (target.min, target.max) {
        (Some(_), Some(_)) => {
            let items = a.seq()?;
            if items.len() != 2 {
                return Err(a.err("a range target's `acceptable` is a list [lo, hi]"));
            }
            Bound {
                min: Some(finite(&items[0])?),
                max: Some(finite(&items[1])?),
            }
        }
        (Some(_), None) => Bound {
            min: Some(finite(a)?),
            max: None,
        },
        _ => Bound {
            min: None,
            max: Some(finite(a)?),
        },
    };
    let looser = bound
        .min
        .is_none_or(|lo| target.min.is_some_and(|t| lo <= t))
        && bound
            .max
            .is_none_or(|hi| target.max.is_some_and(|t| hi >= t));
    if !looser {
        return Err(a.err(format!(
            "the acceptable level ({}) must be looser than the target ({})",
            bound.describe(),
            target.describe()
        )));
    }
    Ok(bound)
}

/// `Ok` when some cell in the target's scope can have its metric, else why
/// not.
fn applicability(def: &TargetDef, scope: &Scope<'_>) -> Result<(), String> {
    let Some((_, needs)) = metric(&def.metric) else {
        return Err(format!("unknown metric `{}`", def.metric));
    };
    // The cells the filters leave (with or without --quick).
    let filtered: Vec<&Cell> = scope.cells.iter().filter(|c| def.selects(c)).collect();
    let selected: Vec<&Cell> = filtered
        .iter()
        .copied()
        .filter(|c| applies(&def.metric, c.kind))
        .collect();
    if selected.is_empty() && !filtered.is_empty() {
        return Err(if needs == Needs::Retrieval {
            format!(
                "`{}` is a retrieval metric and the target's scope has no retrieval cell",
                def.metric
            )
        } else {
            format!(
                "`{}` is an LLM metric and the target's scope has only retrieval cells",
                def.metric
            )
        });
    }
    let cells: Vec<&ScenarioDef> = scope
        .scenarios
        .iter()
        .filter(|s| selected.iter().any(|c| c.scenario == s.name))
        .collect();
    if selected.is_empty() {
        return Err(format!(
            "target `{}`: its filters leave no cell of this matrix",
            def.name
        ));
    }
    match needs {
        Needs::Any | Needs::Retrieval => Ok(()),
        Needs::Serving => {
            if cells.iter().any(|s| s.kind == ScenarioKind::Serving) {
                Ok(())
            } else {
                Err(format!(
                    "`{}` is a serving metric and the target's scenarios are not `kind: serving`",
                    def.metric
                ))
            }
        }
        Needs::Quality => {
            if scope.quality {
                Ok(())
            } else {
                Err(format!(
                    "`{}` needs a `quality:` block in the matrix",
                    def.metric
                ))
            }
        }
        Needs::Baseline => match scope.baseline {
            None => Err(format!(
                "`{}` is measured against the `baseline:` engine, and the matrix has none",
                def.metric
            )),
            Some(b) => {
                let other = cells
                    .iter()
                    .any(|s| s.engines.iter().any(|e| e != b) && s.engines.iter().any(|e| e == b));
                if other {
                    Ok(())
                } else {
                    Err(format!(
                        "`{}`: no scenario in the target's scope runs both the baseline `{b}` and another engine",
                        def.metric
                    ))
                }
            }
        },
    }
}
