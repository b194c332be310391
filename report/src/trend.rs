//! Trend of one metric across the runs of one matrix, per engine: the
//! dashboard's history chart.
//!
//! A run gives one point per engine: the median of the metric over that
//! engine's `ok` cells in the run (the metric as the targets name it,
//! `output_throughput`, `ttft_ms.p50`, ..., read by
//! [`engine_matrix_grade::value`]). Only runs of the same matrix are put on
//! one chart: the cells of different matrices are different experiments,
//! and their medians would not be comparable.

use crate::charts::{Body, Chart, Colors, Mark, Series};
use engine_matrix_format::targets::{metric as metric_of, DISTRIBUTIONS, METRICS};
use engine_matrix_results::{Status, Summary};
use engine_matrix_stats::resample::median;
use std::collections::BTreeMap;

/// The metrics a trend offers: the latency distributions' p50 and p99,
/// then the targets' other metrics.
pub fn metrics() -> Vec<String> {
    let mut out: Vec<String> = DISTRIBUTIONS
        .iter()
        .flat_map(|d| [format!("{d}.p50"), format!("{d}.p99")])
        .collect();
    out.extend(METRICS.iter().map(|(n, ..)| n.to_string()));
    out
}

/// The trend of `metric` over `runs` (name and summary, any order) whose
/// matrix is `matrix`, oldest first. `Err` says why there is nothing to
/// draw.
pub fn trend(runs: &[(String, Summary)], matrix: &str, metric: &str) -> Result<Chart, String> {
    let unit = metric_of(metric)
        .map(|m| m.0)
        .ok_or_else(|| format!("unknown metric '{metric}'"))?;
    let mut picked: Vec<&(String, Summary)> = runs
        .iter()
        .filter(|(_, s)| s.matrix_name == matrix)
        .collect();
    if picked.is_empty() {
        return Err(format!("no run of matrix '{matrix}'"));
    }
    picked.sort_by(|a, b| a.1.started_at.cmp(&b.1.started_at).then(a.0.cmp(&b.0)));
    let mut per_engine: BTreeMap<String, Vec<crate::charts::Point>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, (_, s)) in picked.iter().enumerate() {
        let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for c in s.cells.iter().filter(|c| c.status == Status::Ok) {
            if let Ok(v) = engine_matrix_grade::value(metric, c, s, None) {
                if v.is_finite() {
                    values.entry(&c.cell.engine).or_default().push(v);
                }
            }
        }
        for (engine, vs) in values {
            if !order.iter().any(|e| e == engine) {
                order.push(engine.to_string());
            }
            let lo = vs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if let Some(m) = median(&vs) {
                per_engine.entry(engine.to_string()).or_default().push((
                    (i + 1) as f64,
                    m,
                    (vs.len() > 1).then_some((lo, hi)),
                ));
            }
        }
    }
    if per_engine.is_empty() {
        return Err(format!(
            "no ok cell of matrix '{matrix}' has a value for '{metric}'"
        ));
    }
    let colors = Colors::new(order.iter().map(String::as_str));
    let series = order
        .iter()
        .map(|e| Series {
            label: e.clone(),
            color: colors.of(e),
            width: 2,
            mark: Mark::Circle,
            points: per_engine.remove(e).unwrap_or_default(),
        })
        .collect();
    let first = &picked[0].0;
    let last = &picked[picked.len() - 1].0;
    Ok(Chart {
        name: "trend".into(),
        title: format!("{metric} of '{matrix}' across runs"),
        note: format!(
            "{} runs, {first} to {last}; each point is the median over an engine's ok cells, the bar their range",
            picked.len()
        ),
        body: Body::Xy {
            x_desc: "run (oldest first)".into(),
            y_desc: format!("{metric} ({unit})"),
            log_x: false,
            log_y: false,
            series,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::{metrics as trend_metrics, trend, Body};
    use crate::fixtures::*;

    #[test]
    fn a_trend_has_one_point_per_run_and_engine_of_one_matrix() {
        let run = |when: &str, tput: f64| {
            let mut s = summary(
                None,
                vec![
                    ok(cell("candle", 8, 4, 1), metrics(&[tput], &[5.0], 4), 0),
                    ok(
                        cell("candle", 8, 4, 2),
                        metrics(&[tput * 3.0], &[5.0], 4),
                        0,
                    ),
                    ok(cell("onnx", 8, 4, 1), metrics(&[tput * 2.0], &[5.0], 4), 0),
                ],
            );
            s.started_at = when.into();
            s
        };
        let mut other = run("2026-01-05", 1.0);
        other.matrix_name = "other".into();
        let runs = vec![
            ("b".to_string(), run("2026-01-02", 20.0)),
            ("a".to_string(), run("2026-01-01", 10.0)),
            ("x".to_string(), other),
        ];
        let name = runs[0].1.matrix_name.clone();
        let c = trend(&runs, &name, "output_throughput").unwrap();
        let Body::Xy { series, .. } = &c.body else {
            panic!("xy")
        };
        assert_eq!(series.len(), 2);
        let candle = series.iter().find(|s| s.label == "candle").unwrap();
        let xs: Vec<f64> = candle.points.iter().map(|p| p.0).collect();
        assert_eq!(
            xs,
            vec![1.0, 2.0],
            "oldest first, the other matrix left out"
        );
        let first = candle.points[0];
        assert!(
            first.1 > 10.0 && first.1 < 30.0,
            "{first:?}: the median of two cells"
        );
        assert!(first.2.is_some(), "two cells give a range");
        let onnx = series.iter().find(|s| s.label == "onnx").unwrap();
        assert!(onnx.points[0].2.is_none());
        assert!(c.note.contains("2 runs, a to b"), "{}", c.note);

        assert!(trend(&runs, "nope", "output_throughput").is_err());
        assert!(trend(&runs, &name, "no_such_metric").is_err());
        let e = trend(&runs, &name, "perplexity").unwrap_err();
        assert!(e.contains("no ok cell"), "{e}");
        assert!(trend(&runs, &name, "ttft_ms.p50").is_ok());
        assert!(trend_metrics().iter().any(|m| m == "ttft_ms.p99"));
    }
}
