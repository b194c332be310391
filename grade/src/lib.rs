//! Grades a run against its matrix's `targets:`: each ok cell a target
//! applies to is met, acceptable or missed, each target takes the worst
//! verdict of its cells, and the run's grade is the share of targets met
//! (the seeds' table: EXCELLENT ≥ 90%, GOOD 80–89%, ACCEPTABLE 60–79%,
//! POOR < 60%).
//!
//! Pure: a [`Summary`] and the [`TargetsDef`] in, a [`TargetsReport`] out.
//! The binary calls it each time it writes `summary.json`, so an
//! interrupted run is graded on what it measured.
//!
//! # Not crying wolf
//! * A figure is judged only where it was measured: a cell without the
//!   metric (no ITL for one-token outputs, a leak check too short for a
//!   verdict, no baseline twin) is listed as unmeasured, not as missed, and
//!   a target no cell measured has no verdict and is left out of the grade.
//! * A spike rate (share of inter-token latencies above mean + 3σ) needs
//!   at least [`MIN_SPIKE_SAMPLES`] latencies: with few samples no value
//!   can be 3σ out, and the rate reads 0 whatever the engine does.
//! * With `run --repeat N`, a cell's value is the median of its repeats.
//! * `leak_mb_per_h` is the Theil–Sen slope only where the leak check
//!   found a leak (sustained growth over both halves, above its noise
//!   floors); a cell the check cleared counts as 0 MB/h, as noise in the
//!   slope of a flat RSS is not growth.
//! * A target's verdict is its worst cell's: met means every cell met it.

use engine_matrix_format::breaking::BreakingPoint;
use engine_matrix_format::targets::{self, Needs, TargetDef, TargetsDef};
use engine_matrix_results::targets::{
    CellVerdict, EngineGrade, Grade, TargetOutcome, TargetsReport, Unmeasured, Verdict,
};
use engine_matrix_results::{CellResult, LeakVerdict, Stability, Status, Summary};
use std::collections::BTreeMap;

/// Fewest inter-token latencies a spike rate is judged on: among n
/// samples no value can lie more than (n − 1)/√n standard deviations above
/// the mean, so with a few dozen a rate of 0 says nothing about spikes.
pub const MIN_SPIKE_SAMPLES: usize = 100;

/// The grade of `met` targets out of `total` (`None` when `total` is 0).
pub fn grade(met: usize, total: usize) -> Option<Grade> {
    if total == 0 {
        return None;
    }
    // Integer arithmetic: 9 of 10 is exactly 90%.
    let pct = met * 100;
    Some(if pct >= 90 * total {
        Grade::Excellent
    } else if pct >= 80 * total {
        Grade::Good
    } else if pct >= 60 * total {
        Grade::Acceptable
    } else {
        Grade::Poor
    })
}

/// The verdict of `value` against a target and its acceptable level.
pub fn verdict(def: &TargetDef, value: f64) -> Verdict {
    if def.target.contains(value) {
        Verdict::Met
    } else if def.acceptable.is_some_and(|a| a.contains(value)) {
        Verdict::Acceptable
    } else {
        Verdict::Missed
    }
}

/// The key of a cell's twin on another engine: its id without the engine.
fn twin_key(c: &CellResult) -> (String, String, String) {
    let id = &c.cell.id;
    // scenario/model/engine/rest; the engine name holds no `/`.
    let rest = id.splitn(4, '/').nth(3).unwrap_or_default().to_string();
    // A merged run's twins are on the same kind of machine.
    let class = engine_matrix_results::machine_class(&c.cell.engine)
        .1
        .unwrap_or_default();
    (
        c.cell.scenario.clone(),
        c.cell.model.clone(),
        format!("{class}\n{rest}"),
    )
}

/// The value of `metric` on `c`, or why there is none. `baseline` is the
/// median output throughput of the cell's baseline twin, if any.
pub fn value(
    metric: &str,
    c: &CellResult,
    summary: &Summary,
    baseline: Option<f64>,
) -> Result<f64, String> {
    if let Some(r) = &c.retrieval {
        return retrieval_value(metric, c, r, summary);
    }
    let m = c.metrics.as_ref().ok_or("no metrics")?;
    let memory = c.memory.as_ref();
    if let Some((dist, stat)) = metric.split_once('.') {
        let d = match dist {
            "ttft_ms" => &m.ttft_ms,
            "tpot_ms" => &m.tpot_ms,
            "itl_ms" => &m.itl_ms,
            "e2el_ms" => &m.e2el_ms,
            _ => return Err(format!("unknown metric {metric}")),
        };
        let d = d
            .as_ref()
            .ok_or_else(|| format!("no {dist} samples (no completed request had one)"))?;
        return statistic(d, stat);
    }
    let quality = || c.quality.as_ref().ok_or("no quality record");
    Ok(match metric {
        "output_throughput" => m.output_throughput,
        "request_throughput" => m.request_throughput,
        "total_token_throughput" => m.total_token_throughput,
        "spike_rate_pct" => {
            let itl = m
                .itl_ms
                .as_ref()
                .ok_or("no inter-token latencies (outputs of one token)")?;
            if itl.count < MIN_SPIKE_SAMPLES {
                return Err(format!(
                    "{} inter-token latencies: too few for a spike rate (at least {MIN_SPIKE_SAMPLES})",
                    itl.count
                ));
            }
            itl.spike_rate * 100.0
        }
        "error_rate_pct" => {
            if m.requests == 0 {
                return Err("no requests".into());
            }
            m.failed as f64 * 100.0 / m.requests as f64
        }
        "peak_rss_gb" | "peak_rss_pct" => memory_value(metric, c, summary)?,
        "leak_mb_per_h" => {
            let leak = memory
                .and_then(|mem| mem.leak.as_ref())
                .ok_or("no leak check (serving cells have none)")?;
            match leak.verdict {
                LeakVerdict::Leak => leak.slope_mb_per_hour,
                LeakVerdict::NoLeak => 0.0,
                LeakVerdict::Insufficient => {
                    return Err(leak
                        .note
                        .clone()
                        .unwrap_or_else(|| "too short for a leak verdict".into()))
                }
            }
        }
        "speedup" => {
            let b = baseline.ok_or("no baseline cell of the same workload")?;
            if b <= 0.0 {
                return Err("the baseline's output throughput is 0".into());
            }
            m.output_throughput / b
        }
        "goodput" | "goodput_pct" => {
            let s = m.serving.as_ref().ok_or("not a serving cell")?;
            let v = if metric == "goodput" {
                s.goodput
            } else {
                s.goodput_fraction.map(|f| f * 100.0)
            };
            v.ok_or("no SLO, so no goodput")?
        }
        "perplexity" => quality()?.perplexity.ok_or("no perplexity")?,
        "kld_mean" => quality()?
            .kld_mean
            .ok_or("no KL divergence (the reference itself, or not compared)")?,
        "top1_agreement_pct" => {
            quality()?
                .top1_agreement
                .ok_or("no agreement (the reference itself, or not compared)")?
                * 100.0
        }
        other => return Err(format!("unknown metric {other}")),
    })
}

/// The value of a retrieval metric (or of a memory metric) on a retrieval
/// cell.
fn retrieval_value(
    metric: &str,
    c: &CellResult,
    r: &engine_matrix_results::retrieval::RetrievalMetrics,
    summary: &Summary,
) -> Result<f64, String> {
    if let Some(stat) = metric.strip_prefix("search_ms.") {
        return statistic(&r.latency_ms, stat);
    }
    Ok(match metric {
        "recall" => r.recall,
        "qps" => r.qps,
        "build_s" => r.build.seconds,
        "operating_p95_ms" => operating_p95(c, r, summary)?,
        "peak_rss_gb" | "peak_rss_pct" => memory_value(metric, c, summary)?,
        other => return Err(format!("{other} is not measured on retrieval cells")),
    })
}

/// `stat` (`p95`, `mean`, ...) of a distribution.
fn statistic(d: &engine_matrix_stats::stats::Distribution, stat: &str) -> Result<f64, String> {
    Ok(match stat {
        "mean" => d.mean,
        "min" => d.min,
        "p50" => d.p50,
        "p90" => d.p90,
        "p95" => d.p95,
        "p99" => d.p99,
        "p999" => d.p999,
        "max" => d.max,
        "std" => d.std,
        _ => return Err(format!("unknown statistic {stat}")),
    })
}

/// The cell's peak RSS: the kernel's mark, else the sampler's highest.
fn peak_rss(c: &CellResult) -> Result<u64, String> {
    c.memory
        .as_ref()
        .and_then(|mem| mem.peak_rss_bytes.or(mem.sampled_peak_rss_bytes))
        .ok_or_else(|| "no peak RSS reading".to_string())
}

/// `peak_rss_gb` or `peak_rss_pct` (of the system's memory) of any cell.
fn memory_value(metric: &str, c: &CellResult, summary: &Summary) -> Result<f64, String> {
    let peak = peak_rss(c)? as f64;
    if metric == "peak_rss_gb" {
        return Ok(peak / 1e9);
    }
    if summary.system.memory_bytes == 0 {
        return Err("the system's memory is unknown".into());
    }
    Ok(peak * 100.0 / summary.system.memory_bytes as f64)
}

/// `c`'s p95 when it is its engine's operating point: the fastest (QPS)
/// of the ok cells that differ from it only in the search setting, among
/// those with recall@k >= 0.95; otherwise why it is not judged.
fn operating_p95(
    c: &CellResult,
    r: &engine_matrix_results::retrieval::RetrievalMetrics,
    summary: &Summary,
) -> Result<f64, String> {
    use engine_matrix_results::retrieval::OPERATING_RECALL;
    let same_sweep = |o: &CellResult| {
        let (Some(a), Some(b)) = (&o.cell.retrieval, &c.cell.retrieval) else {
            return false;
        };
        o.status == Status::Ok
            && o.repeat == c.repeat
            && o.cell.scenario == c.cell.scenario
            && o.cell.model == c.cell.model
            && o.cell.engine == c.cell.engine
            && o.cell.params.batch_size == c.cell.params.batch_size
            && o.cell.params.concurrency == c.cell.params.concurrency
            && (a.index_size, a.dim, a.k, a.queries, &a.metric)
                == (b.index_size, b.dim, b.k, b.queries, &b.metric)
    };
    let best = summary
        .cells
        .iter()
        .filter(|o| same_sweep(o))
        .filter_map(|o| o.retrieval.as_ref().map(|x| (o, x)))
        .filter(|(_, x)| x.recall >= OPERATING_RECALL)
        .max_by(|a, b| a.1.qps.total_cmp(&b.1.qps));
    match best {
        Some((o, _)) if o.cell.id == c.cell.id => Ok(r.latency_ms.p95),
        Some((o, _)) => Err(format!(
            "not the operating point ({} is)",
            o.cell.id.rsplit('/').next().unwrap_or_default()
        )),
        None => Err(format!(
            "no search setting of this sweep reached recall {OPERATING_RECALL} (this one: {:.4})",
            r.recall
        )),
    }
}

/// The median (the mean of the two middle values for an even count);
/// `v` holds finite values only.
fn median(v: &[f64]) -> f64 {
    engine_matrix_stats::stats::summarize(v).map_or(f64::NAN, |d| d.p50)
}

/// The targets' verdicts on `summary`'s cells, and the grade.
pub fn evaluate(defs: &TargetsDef, summary: &Summary) -> TargetsReport {
    let ok: Vec<&CellResult> = summary
        .cells
        .iter()
        .filter(|c| c.status == Status::Ok)
        .collect();
    // The baseline engine's median output throughput per workload.
    let mut base: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    if let Some(b) = &summary.baseline {
        for c in ok
            .iter()
            .filter(|c| engine_matrix_results::machine_class(&c.cell.engine).0 == b)
        {
            if let Some(m) = &c.metrics {
                base.entry(twin_key(c))
                    .or_default()
                    .push(m.output_throughput);
            }
        }
    }
    let base: BTreeMap<_, f64> = base.into_iter().map(|(k, v)| (k, median(&v))).collect();

    let mut report = TargetsReport {
        profiles: defs.profiles.clone(),
        ..Default::default()
    };
    for def in &defs.targets {
        report.targets.push(outcome(def, &ok, summary, &base));
    }
    let counted: Vec<&TargetOutcome> = report
        .targets
        .iter()
        .filter(|t| t.verdict.is_some())
        .collect();
    report.total_targets = counted.len();
    report.targets_met = counted
        .iter()
        .filter(|t| t.verdict == Some(Verdict::Met))
        .count();
    report.targets_missed = counted
        .iter()
        .filter(|t| t.verdict == Some(Verdict::Missed))
        .count();
    report.grade = grade(report.targets_met, report.total_targets);
    report.by_engine = by_engine(&report.targets, summary);
    report
}

fn outcome(
    def: &TargetDef,
    ok: &[&CellResult],
    summary: &Summary,
    base: &BTreeMap<(String, String, String), f64>,
) -> TargetOutcome {
    let unit = targets::metric(&def.metric)
        .map(|(u, _)| u.to_string())
        .unwrap_or_default();
    let mut out = TargetOutcome {
        def: def.clone(),
        unit,
        verdict: None,
        cells: Vec::new(),
        unmeasured: Vec::new(),
        note: def.not_applicable.clone(),
    };
    if def.not_applicable.is_some() {
        return out;
    }
    let needs_baseline = targets::metric(&def.metric).map(|(_, n)| n) == Some(Needs::Baseline);
    // Values per cell id (repeats), in the order cells appear.
    let mut values: Vec<(&CellResult, Vec<f64>)> = Vec::new();
    for c in ok {
        let cell = &c.cell;
        if !def.selects(cell) || !targets::applies(&def.metric, cell.kind) {
            continue;
        }
        if needs_baseline
            && summary.baseline.as_deref()
                == Some(engine_matrix_results::machine_class(&cell.engine).0)
        {
            continue;
        }
        match value(&def.metric, c, summary, base.get(&twin_key(c)).copied()) {
            Ok(v) if v.is_finite() => match values.iter_mut().find(|(x, _)| x.cell.id == cell.id) {
                Some((_, vs)) => vs.push(v),
                None => values.push((c, vec![v])),
            },
            Ok(_) => out.unmeasured.push(Unmeasured {
                cell: cell.id.clone(),
                why: "not a finite number".into(),
            }),
            Err(why) => {
                if !out.unmeasured.iter().any(|u| u.cell == cell.id) {
                    out.unmeasured.push(Unmeasured {
                        cell: cell.id.clone(),
                        why,
                    });
                }
            }
        }
    }
    // A cell measured in one repeat is not unmeasured.
    out.unmeasured
        .retain(|u| !values.iter().any(|(c, _)| c.cell.id == u.cell));
    for (c, vs) in values {
        let samples = vs.len();
        let v = median(&vs);
        out.cells.push(CellVerdict {
            cell: c.cell.id.clone(),
            engine: c.cell.engine.clone(),
            model: c.cell.model.clone(),
            value: v,
            samples,
            verdict: verdict(def, v),
        });
    }
    out.verdict = out.cells.iter().map(|c| c.verdict).max();
    if out.verdict.is_none() {
        out.note = Some(if out.unmeasured.is_empty() {
            "no ok cell it applies to".into()
        } else {
            format!(
                "no cell measured it ({} cells without it)",
                out.unmeasured.len()
            )
        });
    }
    out
}

fn by_engine(targets: &[TargetOutcome], summary: &Summary) -> Vec<EngineGrade> {
    let mut engines: Vec<String> = Vec::new();
    for c in &summary.cells {
        if !engines.contains(&c.cell.engine) {
            engines.push(c.cell.engine.clone());
        }
    }
    engines
        .into_iter()
        .map(|engine| {
            let verdicts: Vec<Verdict> = targets
                .iter()
                .filter_map(|t| {
                    t.cells
                        .iter()
                        .filter(|c| c.engine == engine)
                        .map(|c| c.verdict)
                        .max()
                })
                .collect();
            let met = verdicts.iter().filter(|v| **v == Verdict::Met).count();
            EngineGrade {
                targets_met: met,
                targets_acceptable: verdicts
                    .iter()
                    .filter(|v| **v == Verdict::Acceptable)
                    .count(),
                total_targets: verdicts.len(),
                grade: grade(met, verdicts.len()),
                engine,
            }
        })
        .collect()
}

/// A breaking-point search's verdict on one level: stable when its error
/// rate, its p99 latencies and its peak RSS (as a share of
/// `system_memory_bytes`) stay within the bounds. A failed cell (an
/// out-of-memory kill among them) is unstable; an unsupported one has no
/// verdict.
pub fn stability(
    bp: &BreakingPoint,
    r: &CellResult,
    system_memory_bytes: u64,
) -> Option<Stability> {
    match r.status {
        Status::Unsupported => return None,
        Status::Failed => {
            return Some(Stability {
                stable: false,
                why: format!(
                    "the cell failed: {}",
                    r.reason.as_deref().unwrap_or("no reason given")
                ),
            })
        }
        Status::Ok => {}
    }
    let Some(m) = &r.metrics else {
        return Some(Stability {
            stable: false,
            why: "no figures".into(),
        });
    };
    let mut stable = true;
    let mut parts = Vec::new();
    let rate = if m.requests == 0 {
        100.0
    } else {
        m.failed as f64 * 100.0 / m.requests as f64
    };
    let over = rate > bp.max_error_rate_pct;
    stable &= !over;
    parts.push(if over {
        format!("error rate {rate:.1}% > {}%", bp.max_error_rate_pct)
    } else {
        format!("error rate {rate:.1}%")
    });
    let mut latency = |name: &str, bound: Option<f64>, d: Option<f64>| {
        let Some(bound) = bound else { return };
        match d {
            Some(v) if v > bound => {
                stable = false;
                parts.push(format!("{name} p99 {v:.0} ms > {bound} ms"));
            }
            Some(v) => parts.push(format!("{name} p99 {v:.0} ms")),
            None => {
                stable = false;
                parts.push(format!("no {name} (no request completed)"));
            }
        }
    };
    latency(
        "TTFT",
        bp.max_ttft_p99_ms,
        m.ttft_ms.as_ref().map(|d| d.p99),
    );
    latency(
        "E2EL",
        bp.max_e2el_p99_ms,
        m.e2el_ms.as_ref().map(|d| d.p99),
    );
    if let Some(bound) = bp.max_peak_rss_pct {
        let peak = r
            .memory
            .as_ref()
            .and_then(|mem| mem.peak_rss_bytes.or(mem.sampled_peak_rss_bytes));
        match peak.filter(|_| system_memory_bytes > 0) {
            Some(b) => {
                let pct = b as f64 * 100.0 / system_memory_bytes as f64;
                if pct > bound {
                    stable = false;
                    parts.push(format!("peak RSS {pct:.1}% > {bound}% of memory"));
                } else {
                    parts.push(format!("peak RSS {pct:.1}% of memory"));
                }
            }
            None => {
                stable = false;
                parts.push("no peak RSS reading".into());
            }
        }
    }
    Some(Stability {
        stable,
        why: parts.join(", "),
    })
}

/// Grades `summary` again from the targets it already holds (after a cell
/// was added); nothing when it has none.
pub fn regrade(summary: &mut Summary) {
    if let Some(t) = &summary.targets {
        let defs = TargetsDef {
            profiles: t.profiles.clone(),
            targets: t.targets.iter().map(|o| o.def.clone()).collect(),
        };
        summary.targets = Some(evaluate(&defs, summary));
    }
}

#[cfg(test)]
mod tests;
