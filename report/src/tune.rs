//! The Tuning section of a `tune` run folder (its `tune.json`): the
//! request and space, the verdict with the validated improvement, the
//! convergence, the finalists' validation and every trial, plus the
//! convergence charts (best-so-far against trials and against time).

use crate::charts::{Body, Chart, Mark, Series};
use crate::table::{f, Table};
use engine_matrix_results::tune::label;
use engine_matrix_results::tune::Phase;
use engine_matrix_results::tune::{Config, TuneFile};
use plotters::style::RGBColor;
use std::fmt::Write;
use std::path::Path;

/// The `tune.json` of `dir`, if it has a readable one.
pub fn read(dir: &Path) -> Option<TuneFile> {
    let text = std::fs::read(dir.join("tune.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

fn searched_label(t: &TuneFile, c: &Config) -> String {
    let names: Vec<&str> = t.searched.iter().map(|(n, _)| n.as_str()).collect();
    let c: Config = c
        .iter()
        .filter(|(k, _)| names.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    label(&c)
}

/// The lines above the tables: what was tuned and what was found.
pub(crate) fn lines(t: &TuneFile) -> Vec<String> {
    let r = &t.request;
    let o = &t.outcomes;
    let search = o
        .trials
        .iter()
        .filter(|x| x.step.phase != Phase::Validate)
        .count();
    let mut v = vec![
        format!(
            "Tuned engine {} on cell {} for {} ({} is better){}.",
            r.engine,
            r.cell,
            r.objective,
            if r.higher_is_better { "higher" } else { "lower" },
            if r.constraints.is_empty() {
                String::new()
            } else {
                format!(
                    " under {}",
                    r.constraints
                        .iter()
                        .map(|c| c.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        format!(
            "Searched: {}. Fixed: {}.",
            t.searched
                .iter()
                .map(|(n, d)| format!("{n} ∈ {d}"))
                .collect::<Vec<_>>()
                .join("; "),
            if t.fixed.is_empty() {
                "nothing".to_string()
            } else {
                label(&t.fixed)
            }
        ),
        format!(
            "{search} search trials (budget {}) over a grid of {} configurations ({:.0}%), then {} validation cells; seed {}.",
            r.budget,
            o.grid_size,
            search as f64 * 100.0 / o.grid_size.max(1) as f64,
            o.trials.len() - search,
            r.seed
        ),
        format!("**Verdict:** {}", o.verdict),
    ];
    if let Some(c) = &o.convergence {
        v.push(format!(
            "Convergence: the best-so-far came within {:.0}% of the search's best ({:.3}) after {} trials and {:.0} s.",
            c.tolerance * 100.0,
            c.best,
            c.trials,
            c.seconds
        ));
    }
    if let Some(why) = &o.stopped {
        v.push(format!(
            "Tuning stopped early: {why}; `engine-matrix tune --resume DIR` goes on."
        ));
    }
    v
}

/// The finalists against the defaults.
pub(crate) fn validation(t: &TuneFile) -> Table {
    let o = &t.outcomes;
    let med = |vals: &[Option<f64>]| {
        let xs: Vec<f64> = vals.iter().flatten().copied().collect();
        engine_matrix_stats::resample::median(&xs)
    };
    let mut rows = vec![vec![
        format!("defaults: {}", searched_label(t, &t.defaults)),
        format!("{}", o.default_values.iter().flatten().count()),
        f(med(&o.default_values), 3),
        "1.000".into(),
        "—".into(),
        "reference".into(),
    ]];
    for fin in &o.finalists {
        let (ratio, interval, verdict) = match &fin.change {
            Some(c) => (
                format!("{:.3}", c.ratio.point),
                format!("{:.3}–{:.3}", c.ratio.lo, c.ratio.hi),
                if fin.config == o.winner {
                    "winner".to_string()
                } else {
                    format!("{:?}", c.verdict).to_lowercase()
                },
            ),
            None => ("—".into(), "—".into(), "no pairs".into()),
        };
        rows.push(vec![
            searched_label(t, &fin.config),
            format!("{}", fin.values.iter().flatten().count()),
            f(med(&fin.values), 3),
            ratio,
            interval,
            fin.infeasible.clone().unwrap_or(verdict),
        ]);
    }
    Table {
        headers: vec![
            "configuration",
            "rounds",
            "median",
            "ratio to defaults",
            "interval",
            "verdict",
        ],
        rows,
    }
}

/// Every trial in order.
pub(crate) fn trials(t: &TuneFile) -> Table {
    let rows = t
        .outcomes
        .trials
        .iter()
        .map(|x| {
            vec![
                x.step.label(),
                format!("{:?}", x.fidelity).to_lowercase(),
                searched_label(t, &x.config),
                f(
                    match &x.outcome {
                        engine_matrix_results::tune::Outcome::Measured { value, .. } => {
                            Some(*value)
                        }
                        _ => None,
                    },
                    3,
                ),
                x.outcome
                    .why_infeasible()
                    .unwrap_or_else(|| "feasible".into()),
                format!("{:.1}", x.elapsed_s),
            ]
        })
        .collect();
    Table {
        headers: vec![
            "trial",
            "fidelity",
            "configuration",
            "value",
            "feasibility",
            "at s",
        ],
        rows,
    }
}

/// The Markdown section.
pub fn markdown(t: &TuneFile) -> String {
    let mut o = String::from("\n## Tuning\n\n");
    for l in lines(t) {
        let _ = writeln!(o, "{l}\n");
    }
    let _ = writeln!(o, "```yaml\n{}```\n", t.snippet);
    let _ = writeln!(o, "### Validation (paired, interleaved rounds)\n");
    crate::markdown::table_markdown(&mut o, &validation(t));
    let _ = writeln!(o, "\n### Trials\n");
    crate::markdown::table_markdown(&mut o, &trials(t));
    o
}

/// Best-so-far against trials and against seconds.
pub fn charts(t: &TuneFile) -> Vec<Chart> {
    let Some(c) = &t.outcomes.convergence else {
        return Vec::new();
    };
    let blue = RGBColor(31, 119, 180);
    let grey = RGBColor(150, 150, 150);
    let searched: Vec<_> = t
        .outcomes
        .trials
        .iter()
        .filter(|x| x.step.phase != Phase::Validate)
        .collect();
    let mk = |by_time: bool| {
        let x = |i: usize, s: f64| if by_time { s } else { i as f64 + 1.0 };
        let best: Vec<_> = c
            .curve
            .iter()
            .filter_map(|&(i, s, b)| Some((x(i as usize - 1, s), b?, None)))
            .collect();
        let each: Vec<_> = searched
            .iter()
            .enumerate()
            .filter_map(|(i, tr)| Some((x(i, tr.elapsed_s), tr.outcome.feasible_value()?, None)))
            .collect();
        Chart {
            name: if by_time {
                "tune-convergence-time".into()
            } else {
                "tune-convergence".into()
            },
            title: format!(
                "Tuning {}: best {} so far against {}",
                t.request.engine,
                t.request.objective,
                if by_time { "time" } else { "trials" }
            ),
            note: format!(
                "Grey points: each feasible search trial (short trials are noisier); line: the best so far. It came within {:.0}% of the final best after {} trials ({:.0} s).",
                c.tolerance * 100.0,
                c.trials,
                c.seconds
            ),
            body: Body::Xy {
                x_desc: if by_time { "seconds since tuning began" } else { "search trial" }.into(),
                y_desc: t.request.objective.clone(),
                log_x: false,
                log_y: false,
                series: vec![
                    Series {
                        label: "trial".into(),
                        color: grey,
                        width: 0,
                        mark: Mark::Circle,
                        points: each,
                    },
                    Series {
                        label: "best so far".into(),
                        color: blue,
                        width: 2,
                        mark: Mark::None,
                        points: best,
                    },
                ],
            },
        }
    };
    vec![mk(false), mk(true)]
}
