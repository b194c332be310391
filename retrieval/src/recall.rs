//! Recall@k, as ann-benchmarks computes it.
//!
//! For each query, a returned neighbour counts when its *true* distance to
//! the query (recomputed here from the vectors, never taken from the
//! engine) is at most the k-th nearest true distance plus `epsilon`
//! (1e-3 in ann-benchmarks): an engine that returns a different vector at
//! the same distance as the k-th is not wrong. A returned id counts once
//! however often it is repeated, and ids outside the base set count
//! nothing. The recall of a run is the mean over queries.

use crate::exact::{distance, Metric, Neighbours};
use crate::Vectors;

/// ann-benchmarks' tolerance on the k-th distance.
pub const EPSILON: f32 = 1e-3;

/// One query's recall: the share of the `k` slots filled by a true
/// neighbour. `found` may be shorter than `k` (an engine that returned
/// fewer) or longer (only the first `k` count).
pub fn query_recall(
    metric: Metric,
    base: &Vectors,
    query: &[f32],
    truth_kth: f32,
    found: &[u64],
    k: usize,
    epsilon: f32,
) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let mut seen: Vec<u64> = Vec::with_capacity(k);
    let mut hits = 0usize;
    for &id in found.iter().take(k) {
        if seen.contains(&id) || id as usize >= base.len() {
            continue;
        }
        seen.push(id);
        if distance(metric, query, base.row(id as usize)) <= truth_kth + epsilon {
            hits += 1;
        }
    }
    hits as f64 / k as f64
}

/// The mean recall@k of `found` (one list per query) against `truth`.
pub fn recall(
    metric: Metric,
    base: &Vectors,
    queries: &Vectors,
    truth: &Neighbours,
    found: &[Vec<u64>],
    k: usize,
) -> f64 {
    assert!(
        k <= truth.k,
        "ground truth has {} neighbours, {k} asked",
        truth.k
    );
    let n = found.len().min(queries.len());
    if n == 0 {
        return 0.0;
    }
    let total: f64 = (0..n)
        .map(|q| {
            let kth = truth.distances_of(q)[k - 1];
            query_recall(metric, base, queries.row(q), kth, &found[q], k, EPSILON)
        })
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Vectors {
        // Points 0, 1, 2, ... on a line: distances are differences.
        Vectors::new(1, (0..10).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn recall_counts_true_neighbours_once_with_ties_and_bounds() {
        let base = line();
        let q = [0.0f32];
        // 3 nearest of 0: ids 0, 1, 2 (k-th distance 2).
        let r = |found: &[u64]| query_recall(Metric::L2, &base, &q, 2.0, found, 3, EPSILON);
        assert_eq!(r(&[0, 1, 2]), 1.0);
        assert_eq!(r(&[2, 0, 1]), 1.0, "order does not matter");
        assert_eq!(r(&[0, 1, 5]), 2.0 / 3.0);
        assert_eq!(r(&[0, 0, 0]), 1.0 / 3.0, "a repeated id counts once");
        assert_eq!(r(&[0, 1]), 2.0 / 3.0, "fewer than k returned");
        assert_eq!(r(&[0, 1, 2, 3]), 1.0, "only the first k count");
        assert_eq!(r(&[0, 1, 99]), 2.0 / 3.0, "an id outside the base set");
        // Within epsilon of the k-th distance counts; beyond does not.
        let tie = Vectors::new(1, vec![0.0, 1.0, 2.0, 2.0005, 2.01]).unwrap();
        let t = |found: &[u64]| query_recall(Metric::L2, &tie, &q, 2.0, found, 3, EPSILON);
        assert_eq!(t(&[0, 1, 3]), 1.0);
        assert_eq!(t(&[0, 1, 4]), 2.0 / 3.0);
    }

    #[test]
    fn the_mean_over_queries_against_exact_ground_truth() {
        let base = line();
        let queries = Vectors::new(1, vec![0.0, 9.0]).unwrap();
        let truth = crate::exact::knn(&base, &queries, 2, Metric::L2, 1);
        assert_eq!(truth.ids_of(1), &[9, 8]);
        let found = vec![vec![0, 1], vec![9, 0]];
        assert_eq!(recall(Metric::L2, &base, &queries, &truth, &found, 2), 0.75);
        assert_eq!(recall(Metric::L2, &base, &queries, &truth, &found, 1), 1.0);
    }
}
