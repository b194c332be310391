//! A retrieval cell's figures: the index it searched (how long it took to
//! build, and how much memory it holds), recall@k against the exact
//! neighbours, and the latency and throughput of the searches.
//!
//! The definitions follow ann-benchmarks, whose recall–QPS charts users of
//! this kind of benchmark read:
//!
//! * recall@k: per query, the share of the `k` answers whose true distance
//!   is within the `k`-th true neighbour's distance (plus a relative
//!   epsilon of 1e-3, so ties and rounding do not count as misses),
//!   averaged over the queries;
//! * QPS: queries answered per second of the measured passes, every
//!   client together;
//! * latency: per search call (one query, or one batch of `batch_size`),
//!   from the call to its answer, as a client sees it.

use engine_matrix_stats::stats::Distribution;
use serde::{Deserialize, Serialize};

/// The recall an operating point must reach (`recall@10 ≥ 0.95`).
pub const OPERATING_RECALL: f64 = 0.95;

/// What a retrieval cell measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetrievalMetrics {
    /// Vectors in the index, their dimension, the metric and k.
    pub index_size: u64,
    pub dim: u32,
    pub metric: String,
    pub k: u32,
    /// Queries in one pass over the query set.
    pub queries: u32,
    /// Queries per search call, and clients searching at once.
    pub batch_size: u32,
    pub concurrency: u32,
    /// The engine's search parameters (a JSON object, `{}` for none).
    pub search: serde_json::Value,
    /// The index the cell searched.
    pub build: BuildRecord,
    /// Mean recall@k over the queries of the measured passes.
    pub recall: f64,
    /// The lowest recall of one query, and the share of queries whose
    /// recall is below 0.5 (where the mean hides a tail of failures).
    pub recall_min: f64,
    pub queries_below_half: f64,
    /// Per search call, ms.
    pub latency_ms: Distribution,
    /// Queries per second over the measured passes.
    pub qps: f64,
    /// Measured passes over the query set, their search calls, and how
    /// long they took together.
    pub passes: u32,
    pub calls: u64,
    pub duration_s: f64,
    /// QPS of each measured pass, in order.
    #[serde(default)]
    pub per_pass_qps: Vec<f64>,
    /// Where the exact neighbours came from: `computed`, `cached` or
    /// `file` (the data set's own ground truth).
    pub truth: String,
}

impl RetrievalMetrics {
    /// Whether the cell reaches the operating recall.
    pub fn meets_recall(&self) -> bool {
        self.recall >= OPERATING_RECALL
    }

    /// The engine's search parameters in a few words (`ef_search=64`),
    /// `default` when none were set.
    pub fn search_label(&self) -> String {
        search_label(&self.search)
    }
}

/// `key=value` pairs of a JSON object of search parameters, `default` for
/// an empty one.
pub fn search_label(search: &serde_json::Value) -> String {
    match search.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "default".into(),
    }
}

/// The index a retrieval cell searched: built by this cell, or by an
/// earlier cell of the same engine, data and build options and reused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildRecord {
    /// What identifies the build: the engine, its options, the data, its
    /// size and dimension, and the metric.
    pub key: String,
    /// Whether this cell built the index (else it reused it).
    pub built_here: bool,
    /// Wall-clock time of the build, s.
    pub seconds: f64,
    /// Threads the build was allowed.
    pub threads: u32,
    /// The index's size as the engine reports it (None: it cannot say).
    pub engine_bytes: Option<u64>,
    /// The worker's RSS growth over the build (the vectors are loaded
    /// before it starts, so this is the index and its scratch space).
    pub rss_bytes: Option<i64>,
    /// The base vectors themselves (f32), for scale.
    pub data_bytes: u64,
}

/// The Pareto front of `(recall, qps)` points: the points no other point
/// beats on both (higher recall and higher QPS), by rising recall. The
/// ann-benchmarks chart draws each engine's front.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(r, q)| r.is_finite() && q.is_finite())
        .collect();
    // By recall falling, then QPS falling: a point is on the front when
    // its QPS beats every point of higher (or equal) recall seen so far.
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut front = Vec::new();
    let mut best_qps = f64::NEG_INFINITY;
    for (r, q) in sorted {
        if q > best_qps {
            front.push((r, q));
            best_qps = q;
        }
    }
    front.reverse();
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_keeps_only_points_nothing_beats_on_both_axes() {
        let pts = [
            (0.5, 1000.0),
            (0.6, 900.0),
            (0.55, 800.0), // beaten by (0.6, 900)
            (0.9, 300.0),
            (0.9, 250.0), // same recall, slower
            (0.99, 100.0),
            (0.95, 50.0), // beaten by (0.99, 100)
            (f64::NAN, 5000.0),
        ];
        assert_eq!(
            pareto_front(&pts),
            vec![(0.5, 1000.0), (0.6, 900.0), (0.9, 300.0), (0.99, 100.0)]
        );
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn search_labels_name_the_parameters_or_say_default() {
        assert_eq!(search_label(&serde_json::json!({})), "default");
        assert_eq!(search_label(&serde_json::Value::Null), "default");
        assert_eq!(
            search_label(&serde_json::json!({"ef_search": 64, "mode": "fast"})),
            "ef_search=64, mode=fast"
        );
    }
}
