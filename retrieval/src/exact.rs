//! Exact k-nearest neighbours: the ground truth, and the `flat` engine.
//!
//! Queries and base vectors are taken in blocks; one `gemm` call gives a
//! block of dot products, from which each query's distances follow
//! (`‖q‖² + ‖x‖² − 2 q·x` for L2), and a bounded max-heap per query keeps
//! its nearest candidates. That expansion cancels near zero (a true
//! distance of 3e-4 can come out as 0 in f32), so the heap keeps `k` plus a
//! margin, and the answer is the `k` nearest of those by distances
//! computed directly: exact distances, in exact order. Query blocks run in parallel on rayon's pool, each
//! `gemm` call on its own thread, so the work splits without a barrier per
//! block. Ties are broken by the smaller id, so the result is one answer.

use crate::Vectors;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Queries per block.
const QUERY_BLOCK: usize = 64;
/// Base vectors per block.
const BASE_BLOCK: usize = 2048;
/// Extra candidates per query whose distances are recomputed directly.
const RERANK_MARGIN: usize = 8;

/// How distance is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Euclidean distance.
    L2,
    /// `1 − q·x` (the angular distance of unit vectors, as ann-benchmarks'
    /// `angular` sets and usearch's `ip`).
    InnerProduct,
    /// `1 − cos(q, x)`.
    Cosine,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "l2" | "euclidean" => Some(Metric::L2),
            "ip" | "inner_product" | "dot" => Some(Metric::InnerProduct),
            "cosine" | "angular" => Some(Metric::Cosine),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
            Metric::Cosine => "cosine",
        }
    }
}

/// The distance between two vectors, computed directly.
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2 => a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
        Metric::InnerProduct => 1.0 - dot(a, b),
        Metric::Cosine => {
            let n = (dot(a, a) * dot(b, b)).sqrt();
            if n > 0.0 {
                1.0 - dot(a, b) / n
            } else {
                1.0
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Each query's `k` nearest base vectors, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    pub k: usize,
    /// `queries × k` ids (row `q` is query `q`'s neighbours).
    pub ids: Vec<u32>,
    /// Their distances, in the same layout.
    pub distances: Vec<f32>,
}

impl Neighbours {
    pub fn queries(&self) -> usize {
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    pub fn ids_of(&self, q: usize) -> &[u32] {
        &self.ids[q * self.k..(q + 1) * self.k]
    }

    pub fn distances_of(&self, q: usize) -> &[f32] {
        &self.distances[q * self.k..(q + 1) * self.k]
    }
}

/// A candidate in a query's heap: the largest distance on top.
#[derive(Clone, Copy, PartialEq)]
struct Cand(f32, u32);

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Squared norms of the rows (for L2), or their norms (for cosine).
fn norms(v: &Vectors, metric: Metric) -> Vec<f32> {
    v.rows()
        .map(|r| {
            let s = dot(r, r);
            if metric == Metric::Cosine {
                s.sqrt()
            } else {
                s
            }
        })
        .collect()
}

/// The `k` nearest base vectors of every query (`k` is capped at the base
/// size). `threads` is rayon's pool size for this call (0: rayon's
/// default).
pub fn knn(
    base: &Vectors,
    queries: &Vectors,
    k: usize,
    metric: Metric,
    threads: usize,
) -> Neighbours {
    assert_eq!(
        base.dim(),
        queries.dim(),
        "base and queries differ in dimension"
    );
    let k = k.min(base.len());
    let nq = queries.len();
    let mut ids = vec![0u32; nq * k];
    let mut distances = vec![0f32; nq * k];
    if k == 0 || nq == 0 {
        return Neighbours { k, ids, distances };
    }
    let bn = norms(base, metric);
    let qn = norms(queries, metric);
    let mut work = || {
        ids.par_chunks_mut(QUERY_BLOCK * k)
            .zip(distances.par_chunks_mut(QUERY_BLOCK * k))
            .enumerate()
            .for_each(|(b, (ids, dists))| {
                let q0 = b * QUERY_BLOCK;
                let nb = ids.len() / k;
                search_block(base, &bn, queries, &qn, q0, nb, k, metric, ids, dists);
            })
    };
    if threads == 0 {
        work();
    } else {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(work),
            Err(_) => work(),
        }
    }
    Neighbours { k, ids, distances }
}

#[allow(clippy::too_many_arguments)]
fn search_block(
    base: &Vectors,
    bn: &[f32],
    queries: &Vectors,
    qn: &[f32],
    q0: usize,
    nq: usize,
    k: usize,
    metric: Metric,
    ids: &mut [u32],
    dists: &mut [f32],
) {
    let dim = base.dim();
    // The blocked distances lose precision near zero (`‖q‖² + ‖x‖² −
    // 2 q·x` cancels), so each heap keeps `kk` candidates and the final `k`
    // are chosen by distances computed directly.
    let kk = k + k.max(RERANK_MARGIN);
    let mut heaps: Vec<BinaryHeap<Cand>> =
        (0..nq).map(|_| BinaryHeap::with_capacity(kk + 1)).collect();
    let mut dots = vec![0f32; nq * BASE_BLOCK];
    let lhs = &queries.as_slice()[q0 * dim..(q0 + nq) * dim];
    let mut start = 0;
    while start < base.len() {
        let nb = BASE_BLOCK.min(base.len() - start);
        let rhs = &base.as_slice()[start * dim..(start + nb) * dim];
        // dots (nq × nb, row-major) = Q (nq × dim) · Bᵀ (dim × nb).
        // SAFETY: the strides describe the slices' row-major layouts and
        // every index stays within them.
        unsafe {
            gemm::gemm(
                nq,
                nb,
                dim,
                dots.as_mut_ptr(),
                1,
                nb as isize,
                false,
                lhs.as_ptr(),
                1,
                dim as isize,
                rhs.as_ptr(),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (qi, heap) in heaps.iter_mut().enumerate() {
            let row = &dots[qi * nb..(qi + 1) * nb];
            for (j, &d) in row.iter().enumerate() {
                let id = start + j;
                let dist = match metric {
                    Metric::L2 => (qn[q0 + qi] + bn[id] - 2.0 * d).max(0.0).sqrt(),
                    Metric::InnerProduct => 1.0 - d,
                    Metric::Cosine => {
                        let n = qn[q0 + qi] * bn[id];
                        if n > 0.0 {
                            1.0 - d / n
                        } else {
                            1.0
                        }
                    }
                };
                let c = Cand(dist, id as u32);
                if heap.len() < kk {
                    heap.push(c);
                } else if heap.peek().is_some_and(|top| c < *top) {
                    heap.pop();
                    heap.push(c);
                }
            }
        }
        start += nb;
    }
    for (qi, heap) in heaps.into_iter().enumerate() {
        let q = queries.row(q0 + qi);
        let mut exact: Vec<Cand> = heap
            .into_iter()
            .map(|c| Cand(distance(metric, q, base.row(c.1 as usize)), c.1))
            .collect();
        exact.sort_unstable();
        for (slot, c) in exact.into_iter().take(k).enumerate() {
            ids[qi * k + slot] = c.1;
            dists[qi * k + slot] = c.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every distance, sorted: the definition of the answer.
    fn naive(base: &Vectors, queries: &Vectors, k: usize, metric: Metric) -> Vec<Vec<(f32, u32)>> {
        queries
            .rows()
            .map(|q| {
                let mut all: Vec<(f32, u32)> = base
                    .rows()
                    .enumerate()
                    .map(|(i, x)| (distance(metric, q, x), i as u32))
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                all.truncate(k);
                all
            })
            .collect()
    }

    fn vectors(dim: usize, n: usize, seed: u64) -> Vectors {
        crate::synthetic::Mixture {
            dim,
            clusters: 3,
            spread: 0.7,
            seed,
        }
        .generate(crate::synthetic::Set::Base, n)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn knn_finds_what_a_naive_search_finds(
            dim in 1usize..40,
            n in 1usize..3000,
            nq in 1usize..80,
            k in 1usize..20,
            metric in prop::sample::select(vec![Metric::L2, Metric::InnerProduct, Metric::Cosine]),
            seed in 0u64..1000,
        ) {
            let base = vectors(dim, n, seed);
            let queries = vectors(dim, nq, seed + 1);
            let got = knn(&base, &queries, k, metric, 2);
            let want = naive(&base, &queries, k, metric);
            prop_assert_eq!(got.k, k.min(n));
            for (q, w) in want.iter().enumerate() {
                let d = got.distances_of(q);
                for (slot, (wd, _)) in w.iter().enumerate() {
                    // The blocked distances differ from the direct ones by
                    // rounding only: compare distances, not ids (ties).
                    prop_assert!((d[slot] - wd).abs() < 1e-4, "query {} slot {}: {} vs {}", q, slot, d[slot], wd);
                }
                // Each returned id is at its stated distance.
                for (slot, &id) in got.ids_of(q).iter().enumerate() {
                    let direct = distance(metric, queries.row(q), base.row(id as usize));
                    prop_assert!((direct - d[slot]).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn a_query_equal_to_a_base_vector_finds_it_first() {
        let base = vectors(24, 5000, 3);
        let mut q = Vec::new();
        for i in [0usize, 2047, 2048, 4999] {
            q.extend_from_slice(base.row(i));
        }
        let queries = Vectors::new(24, q).unwrap();
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            let got = knn(&base, &queries, 3, metric, 1);
            assert_eq!(
                (0..4).map(|q| got.ids_of(q)[0]).collect::<Vec<_>>(),
                vec![0, 2047, 2048, 4999],
                "{metric:?}"
            );
            assert!(got.distances_of(0)[0].abs() < 1e-3);
        }
        assert_eq!(Metric::parse("angular"), Some(Metric::Cosine));
        assert_eq!(Metric::parse("hamming"), None);
    }
}
