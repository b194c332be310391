//! Which charts a run gets, as data ([`Chart`]): built from the analysis of
//! its `summary.json`, for whatever engines, scenarios and axes it has. A
//! chart is only made where there is something to draw (a speedup needs a
//! baseline, a line needs two points on its axis).

use super::analysis::{self, Axis, Group, Metric};
use super::charts::{Bar, Body, Chart, Colors, Mark, Point, Series};
use crate::slug;
use engine_matrix_format::ScenarioKind;
use engine_matrix_results::Summary;
use std::collections::BTreeMap;

const MIB: f64 = (1u64 << 20) as f64;

pub fn colors(summary: &Summary) -> Colors {
    Colors::new(
        summary
            .engines
            .iter()
            .map(|e| e.name.as_str())
            .chain(summary.cells.iter().map(|c| c.cell.engine.as_str())),
    )
}

/// Every chart of a run, in report order: the LLM cells' charts, then the
/// retrieval cells' ([`super::retrieval::charts`]).
pub fn all(summary: &Summary, every: &[Group]) -> Vec<Chart> {
    let colors = colors(summary);
    let llm = analysis::llm_groups(every);
    let groups = llm.as_slice();
    let mut charts = Vec::new();
    charts.extend(speedups(summary, groups, &colors));
    charts.extend(latency_percentiles(groups, &colors));
    charts.extend(decode_rates(groups, &colors));
    charts.extend(scaling(groups, &colors));
    charts.extend(pareto(groups, &colors));
    charts.extend(roofline(summary, groups, &colors));
    charts.extend(memory(summary, groups, &colors));
    charts.extend(serving(groups, &colors));
    charts.extend(lengths(groups));
    charts.extend(super::quality::charts(groups, &colors));
    charts.extend(super::retrieval::charts(every, &colors));
    let mut seen = BTreeMap::new();
    for c in &mut charts {
        let n = seen.entry(c.name.clone()).or_insert(0);
        if *n > 0 {
            c.name = format!("{}-{n}", c.name);
        }
        *n += 1;
    }
    charts
}

fn scenarios<'a>(groups: &'a [Group<'a>]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for g in groups {
        let k = (g.cell().scenario.clone(), g.cell().model.clone());
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Speedup over the baseline engine: one chart per scenario and model.
pub fn speedups(summary: &Summary, groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let Some(base) = summary.baseline.as_deref() else {
        return vec![];
    };
    let mut charts = Vec::new();
    for (scenario, model) in scenarios(groups) {
        let mut bars = Vec::new();
        let mut engines: Vec<String> = Vec::new();
        let mut paired = false;
        for g in groups
            .iter()
            .filter(|g| g.cell().scenario == scenario && g.cell().model == model)
        {
            let Some(s) = analysis::speedup(summary, groups, g) else {
                continue;
            };
            paired |= s.paired;
            let c = g.cell();
            if !engines.contains(&c.engine) {
                engines.push(c.engine.clone());
            }
            let interval = (s.est.n > 1).then_some((s.est.lo, s.est.hi));
            bars.push(Bar {
                label: format!("{} · {}", analysis::workload(&c.params, c.kind), c.engine),
                color: colors.of(&c.engine),
                value: s.est.point,
                interval,
                text: match interval {
                    Some((lo, hi)) => {
                        format!("{:.2}x [{lo:.2}, {hi:.2}] n={}", s.est.point, s.est.n)
                    }
                    None => format!("{:.2}x n={}", s.est.point, s.est.n),
                },
            });
        }
        if bars.is_empty() {
            continue;
        }
        charts.push(Chart {
            name: slug(&["speedup", &scenario, &model]),
            title: format!("Speedup over {base}: {scenario} ({model})"),
            note: format!(
                "Output tokens/s over the baseline engine {base} in the same cell (> 1 is faster); whiskers: 95% bootstrap interval over {}; red line: 1x.",
                if paired { "paired repetitions" } else { "iterations" }
            ),
            body: Body::Bars {
                x_desc: format!("speedup over {base} (×, output tokens/s ratio)"),
                bars,
                reference: Some(1.0),
                band: None,
                legend: engines
                    .iter()
                    .map(|e| (e.clone(), colors.of(e)))
                    .collect(),
            },
        });
    }
    charts
}

/// TTFT and E2EL p50/p95/p99 against input length (latency scenarios).
pub fn latency_percentiles(groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let mut charts = Vec::new();
    for sw in analysis::sweeps(groups, Axis::InputTokens, &[ScenarioKind::Latency]) {
        for (key, name) in [("ttft", "TTFT"), ("e2el", "End-to-end latency")] {
            let mut series = Vec::new();
            for (engine, pts) in &sw.lines {
                for (p, mark, width) in [
                    ("p50", Mark::Circle, 3),
                    ("p95", Mark::Triangle, 2),
                    ("p99", Mark::Cross, 1),
                ] {
                    let points: Vec<Point> = pts
                        .iter()
                        .filter_map(|(x, g)| {
                            let m = g.metrics()?;
                            let d = if key == "ttft" {
                                m.ttft_ms.as_ref()?
                            } else {
                                m.e2el_ms.as_ref()?
                            };
                            let y = match p {
                                "p50" => d.p50,
                                "p95" => d.p95,
                                _ => d.p99,
                            };
                            Some((*x as f64, y, None))
                        })
                        .collect();
                    if !points.is_empty() {
                        series.push(Series {
                            label: format!("{engine} {p}"),
                            color: colors.of(engine),
                            width,
                            mark,
                            points,
                        });
                    }
                }
            }
            if series.is_empty() {
                continue;
            }
            charts.push(Chart {
                name: slug(&[key, &sw.scenario, &sw.model, &sw.fixed]),
                title: format!("{name} percentiles: {} ({}; {})", sw.scenario, sw.model, sw.fixed),
                note: format!("{name} p50 (thick), p95 and p99 (thin) of the requests of each cell, against the prompt length (the output length may grow with it: see the results table)."),
                body: Body::Xy {
                    x_desc: Axis::InputTokens.label().into(),
                    y_desc: format!("{name} (ms)"),
                    log_x: false,
                    log_y: false,
                    series,
                },
            });
        }
    }
    charts
}

/// Decode tokens/s (batch × 1000 / TPOT p50) against output length.
pub fn decode_rates(groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let mut charts = Vec::new();
    for sw in analysis::sweeps(groups, Axis::OutputTokens, &[ScenarioKind::Latency]) {
        let series: Vec<Series> = sw
            .lines
            .iter()
            .map(|(engine, pts)| Series {
                label: engine.clone(),
                color: colors.of(engine),
                width: 2,
                mark: Mark::Circle,
                points: pts
                    .iter()
                    .filter_map(|(x, g)| {
                        let f = analysis::figure(g, Metric::TpotP50)?;
                        let b = g.cell().params.batch_size.max(1) as f64;
                        let rate = |ms: f64| (ms > 0.0).then(|| b * 1000.0 / ms);
                        let ci = if f.est.n > 1 {
                            rate(f.est.hi).zip(rate(f.est.lo))
                        } else {
                            None
                        };
                        Some((*x as f64, rate(f.est.point)?, ci))
                    })
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        charts.push(Chart {
            name: slug(&["decode", &sw.scenario, &sw.model, &sw.fixed]),
            title: format!("Decode rate: {} ({}; {})", sw.scenario, sw.model, sw.fixed),
            note: "Decode tokens/s = batch size × 1000 / TPOT p50, against the output length; whiskers: 95% interval.".into(),
            body: Body::Xy {
                x_desc: Axis::OutputTokens.label().into(),
                y_desc: "decode rate (tokens/s)".into(),
                log_x: false,
                log_y: false,
                series,
            },
        });
    }
    charts
}

/// Output tokens/s against batch size and against concurrency, with the
/// ideal linear line from each engine's smallest setting.
pub fn scaling(groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let mut charts = Vec::new();
    let sweeps = analysis::sweeps(
        groups,
        Axis::BatchSize,
        &[ScenarioKind::Latency, ScenarioKind::Throughput],
    )
    .into_iter()
    .chain(analysis::sweeps(
        groups,
        Axis::Concurrency,
        &[ScenarioKind::Concurrency],
    ));
    for sw in sweeps {
        let mut series = Vec::new();
        for (engine, pts) in &sw.lines {
            let points: Vec<Point> = pts
                .iter()
                .filter_map(|(x, g)| {
                    let f = analysis::figure(g, Metric::OutputThroughput)?;
                    let ci = (f.est.n > 1).then_some((f.est.lo, f.est.hi));
                    Some((*x as f64, f.est.point, ci))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let xy: Vec<(u32, f64)> = points.iter().map(|p| (p.0 as u32, p.1)).collect();
            let label = match analysis::scaling_efficiency(&xy) {
                Some((x, e)) => format!("{engine} (efficiency {:.0}% at {x})", e * 100.0),
                None => engine.clone(),
            };
            let (x0, t0) = (points[0].0, points[0].1);
            if points.len() > 1 && x0 > 0.0 {
                series.push(Series {
                    label: format!("{engine} ideal linear"),
                    color: colors.of(engine),
                    width: 1,
                    mark: Mark::None,
                    points: points.iter().map(|p| (p.0, t0 * p.0 / x0, None)).collect(),
                });
            }
            series.push(Series {
                label,
                color: colors.of(engine),
                width: 3,
                mark: Mark::Circle,
                points,
            });
        }
        if series.is_empty() {
            continue;
        }
        let what = match sw.axis {
            Axis::Concurrency => "concurrency",
            _ => "batch size",
        };
        charts.push(Chart {
            name: slug(&["scaling", what, &sw.scenario, &sw.model, &sw.fixed]),
            title: format!("Throughput scaling with {what}: {} ({}; {})", sw.scenario, sw.model, sw.fixed),
            note: format!("Output tokens/s against {what} (thick) and ideal linear scaling from the smallest setting (thin); efficiency = measured / ideal at the largest setting."),
            body: Body::Xy {
                x_desc: sw.axis.label().into(),
                y_desc: "output throughput (tokens/s)".into(),
                log_x: false,
                log_y: false,
                series,
            },
        });
    }
    charts
}

/// Latency against throughput, one point per cell, with each engine's
/// Pareto front.
pub fn pareto(groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let mut charts = Vec::new();
    for (scenario, model) in scenarios(groups) {
        let mut by_engine: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for g in groups
            .iter()
            .filter(|g| g.cell().scenario == scenario && g.cell().model == model)
        {
            let (Some(t), Some(l)) = (
                analysis::figure(g, Metric::OutputThroughput),
                analysis::figure(g, Metric::E2elP50),
            ) else {
                continue;
            };
            let e = &g.cell().engine;
            match by_engine.iter_mut().find(|(n, _)| n == e) {
                Some((_, v)) => v.push((t.est.point, l.est.point)),
                None => by_engine.push((e.clone(), vec![(t.est.point, l.est.point)])),
            }
        }
        if by_engine.iter().all(|(_, v)| v.len() < 2) {
            continue;
        }
        let mut series = Vec::new();
        for (engine, pts) in &by_engine {
            let front = analysis::pareto_front(pts);
            series.push(Series {
                label: format!("{engine} cells"),
                color: colors.of(engine),
                width: 0,
                mark: Mark::Circle,
                points: pts.iter().map(|p| (p.0, p.1, None)).collect(),
            });
            series.push(Series {
                label: format!("{engine} Pareto front"),
                color: colors.of(engine),
                width: 2,
                mark: Mark::None,
                points: front.iter().map(|&i| (pts[i].0, pts[i].1, None)).collect(),
            });
        }
        charts.push(Chart {
            name: slug(&["pareto", &scenario, &model]),
            title: format!("Latency against throughput: {scenario} ({model})"),
            note: "One point per cell (median E2EL against median output tokens/s); the line joins each engine's Pareto-optimal cells (no other cell of that engine is both faster and higher-throughput).".into(),
            body: Body::Xy {
                x_desc: "output throughput (tokens/s)".into(),
                y_desc: "E2EL p50 (ms)".into(),
                log_x: false,
                log_y: false,
                series,
            },
        });
    }
    charts
}

/// Every cell's decode and prefill against the host's roofline.
pub fn roofline(summary: &Summary, groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let Some(l) = &summary.limits else {
        return vec![];
    };
    let mut series: Vec<Series> = Vec::new();
    let mut intensities = Vec::new();
    for (phase, mark) in [("decode", Mark::Circle), ("prefill", Mark::Triangle)] {
        let mut by_engine: Vec<(String, Vec<Point>)> = Vec::new();
        for g in groups {
            let Some(e) = g.ok_runs().find_map(|r| r.efficiency) else {
                continue;
            };
            let point = if phase == "decode" {
                e.decode_intensity_flop_per_byte.zip(e.decode_gflop_s())
            } else {
                e.prefill_intensity_flop_per_byte.zip(e.prefill_gflop_s)
            };
            let Some((x, y)) = point.filter(|(x, y)| *x > 0.0 && *y > 0.0) else {
                continue;
            };
            intensities.push(x);
            let engine = &g.cell().engine;
            match by_engine.iter_mut().find(|(n, _)| n == engine) {
                Some((_, v)) => v.push((x, y, None)),
                None => by_engine.push((engine.clone(), vec![(x, y, None)])),
            }
        }
        for (engine, points) in by_engine {
            series.push(Series {
                label: format!("{engine} {phase}"),
                color: colors.of(&engine),
                width: 0,
                mark,
                points,
            });
        }
    }
    if series.is_empty() {
        return vec![];
    }
    let ridge = l.ridge_flop_per_byte();
    let lo = intensities.iter().copied().fold(ridge, f64::min) / 2.0;
    let hi = intensities.iter().copied().fold(ridge, f64::max) * 2.0;
    series.insert(
        0,
        Series {
            label: format!(
                "roof: {:.1} GB/s, {:.0} GFLOP/s",
                l.mem_read_gb_s, l.matmul_f32_gflop_s
            ),
            color: plotters::style::RGBColor(0, 0, 0),
            width: 2,
            mark: Mark::None,
            points: [lo, ridge, hi]
                .iter()
                .map(|&i| (i, l.attainable_gflop_s(i), None))
                .collect(),
        },
    );
    vec![Chart {
        name: "roofline".into(),
        title: format!("Roofline: {}", l.machine),
        note: format!(
            "Achieved GFLOP/s against arithmetic intensity (FLOP per byte moved), from the model's FLOPs and bytes per step; decode (circles) is bound by memory bandwidth left of the ridge ({ridge:.1} FLOP/byte), prefill (triangles) by compute right of it. Limits measured on this machine ({}), not datasheet peaks.",
            l.measured_at
        ),
        body: Body::Xy {
            x_desc: "arithmetic intensity (FLOP/byte)".into(),
            y_desc: "achieved (GFLOP/s)".into(),
            log_x: true,
            log_y: true,
            series,
        },
    }]
}

/// Load memory, peak RSS and KV cache per engine (largest over its cells).
pub fn memory(summary: &Summary, groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let _ = summary;
    let mut rows: Vec<(String, [Option<f64>; 3])> = Vec::new();
    for g in groups {
        let e = &g.cell().engine;
        let i = match rows.iter().position(|(n, _)| n == e) {
            Some(i) => i,
            None => {
                rows.push((e.clone(), [None; 3]));
                rows.len() - 1
            }
        };
        for r in g.ok_runs() {
            let Some(m) = &r.memory else { continue };
            let vals = [
                m.load_bytes.map(|b| b as f64 / MIB),
                m.peak_rss_bytes.map(|b| b as f64 / MIB),
                Some(m.kv_cache_peak_bytes as f64 / MIB),
            ];
            for (slot, v) in rows[i].1.iter_mut().zip(vals) {
                if let Some(v) = v {
                    *slot = Some(slot.map_or(v, |s: f64| s.max(v)));
                }
            }
        }
    }
    let mut bars = Vec::new();
    for (engine, vals) in &rows {
        for (what, v) in ["model load (RSS growth)", "peak RSS", "KV cache peak"]
            .iter()
            .zip(vals)
        {
            if let Some(v) = v {
                bars.push(Bar {
                    label: format!("{engine} · {what}"),
                    color: colors.of(engine),
                    value: *v,
                    interval: None,
                    text: format!("{v:.0} MiB"),
                });
            }
        }
    }
    if bars.is_empty() {
        return vec![];
    }
    vec![Chart {
        name: "memory".into(),
        title: "Memory per engine".into(),
        note: "Largest value over each engine's cells: RSS growth when loading the model, the process's peak RSS during a cell, and the engine-reported KV cache peak.".into(),
        body: Body::Bars {
            x_desc: "memory (MiB)".into(),
            legend: rows.iter().map(|(e, _)| (e.clone(), colors.of(e))).collect(),
            bars,
            reference: None,
            band: None,
        },
    }]
}

/// Open-loop serving: each sweep's TTFT p99 (from the schedule) against
/// the rate tried, and each spike or burst cell's TTFT over time.
pub fn serving(groups: &[Group], colors: &Colors) -> Vec<Chart> {
    use engine_matrix_format::open_loop::Load;
    use engine_matrix_results::ServingMetrics;
    // (scenario, model, load) -> [(engine, metrics)], in run order.
    type Runs<'a> = Vec<(String, &'a ServingMetrics)>;
    let mut by: BTreeMap<(String, String, &'static str), Runs> = BTreeMap::new();
    for g in groups {
        let c = g.cell();
        for r in g.ok_runs().take(1) {
            if let Some(s) = r.metrics.as_ref().and_then(|m| m.serving.as_ref()) {
                by.entry((c.scenario.clone(), c.model.clone(), s.load.as_str()))
                    .or_default()
                    .push((c.engine.clone(), s));
            }
        }
    }
    let mut charts = Vec::new();
    for ((scenario, model, load), runs) in &by {
        let mut series = Vec::new();
        if *load == Load::Sweep.as_str() {
            for (engine, s) in runs {
                let Some(sw) = &s.sweep else { continue };
                let mut steps: Vec<_> = sw.steps.iter().collect();
                steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
                for passed in [true, false] {
                    let points: Vec<Point> = steps
                        .iter()
                        .filter(|st| st.passed == passed)
                        .filter_map(|st| Some((st.rate, st.ttft_p99_ms?, None)))
                        .collect();
                    if !points.is_empty() {
                        series.push(Series {
                            label: format!("{engine} ({})", if passed { "pass" } else { "fail" }),
                            color: colors.of(engine),
                            width: if passed { 2 } else { 0 },
                            mark: if passed { Mark::Circle } else { Mark::Cross },
                            points,
                        });
                    }
                }
            }
            if !series.is_empty() {
                charts.push(Chart {
                    name: slug(&["sweep", scenario, model]),
                    title: format!("Sustainable-rate sweep: {scenario} ({model})"),
                    note: "TTFT p99 from each request's scheduled send time at every request rate a sweep tried; crosses missed the SLOs.".into(),
                    body: Body::Xy {
                        x_desc: "request rate (req/s)".into(),
                        y_desc: "TTFT p99 from schedule (ms)".into(),
                        log_x: true,
                        log_y: true,
                        series,
                    },
                });
            }
        } else if *load == Load::Spike.as_str() || *load == Load::Burst.as_str() {
            let mut spike = None;
            for (engine, s) in runs {
                spike = spike.or(s.spike.as_ref().map(|sp| (sp.start_s, sp.end_s)));
                let points: Vec<Point> = s
                    .windows
                    .iter()
                    .filter_map(|w| Some((w.t_s + 0.5, w.ttft_p50_ms?.max(1e-3), None)))
                    .collect();
                if !points.is_empty() {
                    series.push(Series {
                        label: engine.clone(),
                        color: colors.of(engine),
                        width: 2,
                        mark: Mark::Circle,
                        points,
                    });
                }
            }
            if !series.is_empty() {
                let (a, b) = spike.unwrap_or((0.0, 0.0));
                charts.push(Chart {
                    name: slug(&[load, scenario, model]),
                    title: format!("TTFT through a {load}: {scenario} ({model})"),
                    note: format!(
                        "Median TTFT from the scheduled send time of the requests due in each second; the {load} lasts from {a} s to {b} s."
                    ),
                    body: Body::Xy {
                        x_desc: "time (s, by scheduled send time)".into(),
                        y_desc: "TTFT p50 from schedule (ms)".into(),
                        log_x: false,
                        log_y: true,
                        series,
                    },
                });
            }
        }
    }
    charts
}

/// The request lengths of each dataset workload (not `random`): the
/// histograms of its measured requests' input and output lengths, once
/// per workload (every engine of a closed-loop cell gets the same
/// requests, so the first engine's cell stands for them).
pub fn lengths(groups: &[Group]) -> Vec<Chart> {
    use plotters::style::RGBColor;
    let (input, output) = (RGBColor(31, 119, 180), RGBColor(255, 127, 14));
    let mut seen = std::collections::BTreeSet::new();
    let mut charts = Vec::new();
    for g in groups {
        let c = g.cell();
        let Some(m) = g.ok_runs().find_map(|r| r.metrics.as_ref()) else {
            continue;
        };
        if m.workload.as_ref().is_none_or(|w| w.dataset == "random") {
            continue;
        }
        let tag = c.id.splitn(4, '/').nth(3).unwrap_or("");
        if !seen.insert((c.scenario.clone(), c.model.clone(), tag.to_string())) {
            continue;
        }
        let mut bars = Vec::new();
        for (what, color, h) in [
            ("input", input, &m.input_histogram),
            ("output", output, &m.output_histogram),
        ] {
            for b in h.iter().flat_map(|h| &h.bins) {
                let (lo, hi) = (
                    b.lo.round() as i64,
                    (b.hi.round() as i64 - 1).max(b.lo.round() as i64),
                );
                bars.push(Bar {
                    label: if lo == hi {
                        format!("{what} {lo}")
                    } else {
                        format!("{what} {lo}–{hi}")
                    },
                    color,
                    value: b.count as f64,
                    interval: None,
                    text: b.count.to_string(),
                });
            }
        }
        if bars.is_empty() {
            continue;
        }
        charts.push(Chart {
            name: slug(&["lengths", &c.scenario, &c.model, tag]),
            title: format!("Request lengths: {} / {} / {tag}", c.scenario, c.model),
            note: format!(
                "How many measured requests of {} (dataset {}) had each input and output length, in tokens of the model's tokenizer; the other engines of this cell got the same requests.",
                c.id,
                m.workload.as_ref().map_or("", |w| w.dataset.as_str())
            ),
            body: Body::Bars {
                x_desc: "requests".into(),
                legend: vec![("input tokens".into(), input), ("output tokens".into(), output)],
                bars,
                reference: None,
                band: None,
            },
        });
    }
    charts
}
