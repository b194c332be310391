//! Pure statistics over measurement samples, in the style of criterion.rs.
//!
//! * Percentiles use linear interpolation between the closest ranks, bit for
//!   bit the way numpy's default `np.percentile(a, q)` (method `"linear"`)
//!   does it, which is what vLLM's `benchmark_serving.py` reports.
//! * `std` is the **population** standard deviation (`ddof = 0`), the same
//!   as numpy's default `np.std(a)`.
//! * Non-finite samples (NaN, +inf, -inf) are **ignored**: they are dropped
//!   before anything is computed and not counted in [`Distribution::count`],
//!   like `np.nanpercentile` does for NaN. A slice with no finite sample
//!   summarizes to `None`. This keeps every field finite, so a
//!   [`Distribution`] always round-trips through JSON.

use serde::{Deserialize, Serialize};

/// Summary of a set of samples (e.g. latencies in milliseconds).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Distribution {
    /// Number of finite samples summarized.
    pub count: usize,
    pub mean: f64,
    /// Population standard deviation (`ddof = 0`, like `np.std`).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    /// Share of samples above `mean + 3 * std`, in `[0, 1]`; 0 when
    /// `std == 0`.
    pub spike_rate: f64,
}

/// Summarizes `samples` (any order). Non-finite samples are ignored; returns
/// `None` when no finite sample is left.
pub fn summarize(samples: &[f64]) -> Option<Distribution> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let min = sorted[0];
    let max = sorted[n - 1];

    // Mean and std are computed from offsets to `min`: constant input gives
    // exactly `mean == min` and `std == 0`, and cancellation error is
    // smaller. The sum runs over the sorted samples so that the result does
    // not depend on the order of the input.
    let (mean, std) = if min == max {
        (min, 0.0)
    } else {
        let shift: f64 = sorted.iter().map(|x| x - min).sum::<f64>() / n as f64;
        let mean = (min + shift).clamp(min, max);
        let var = sorted
            .iter()
            .map(|x| {
                let d = x - mean;
                d * d
            })
            .sum::<f64>()
            / n as f64;
        (mean, var.sqrt())
    };

    let spike_rate = if std > 0.0 && std.is_finite() {
        let threshold = mean + 3.0 * std;
        sorted.iter().filter(|&&x| x > threshold).count() as f64 / n as f64
    } else {
        0.0
    };

    Some(Distribution {
        count: n,
        mean,
        std,
        min,
        max,
        p50: percentile(&sorted, 50.0),
        p90: percentile(&sorted, 90.0),
        p95: percentile(&sorted, 95.0),
        p99: percentile(&sorted, 99.0),
        p999: percentile(&sorted, 99.9),
        spike_rate,
    })
}

/// The `p`-th percentile (`p` in `[0, 100]`, clamped) of `sorted`, which
/// must be sorted ascending and free of NaN. Linear interpolation between
/// closest ranks, exactly numpy's default `np.percentile`: the virtual index
/// is `(n - 1) * (p / 100)` and the interpolation uses numpy's `_lerp`
/// (which computes from the upper neighbour when the fraction is >= 0.5).
/// Returns NaN for an empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    debug_assert!(
        sorted.windows(2).all(|w| w[0] <= w[1]),
        "percentile() needs sorted samples"
    );
    let n = sorted.len();
    if n == 0 || p.is_nan() {
        return f64::NAN;
    }
    let q = p.clamp(0.0, 100.0) / 100.0;
    let virtual_index = (n - 1) as f64 * q;
    let below = virtual_index.floor();
    let lo = (below as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let t = virtual_index - below;
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    let v = if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    };
    // In exact arithmetic v lies in [a, b]; keep rounding from leaving it.
    v.clamp(a, b)
}

/// One bin of a [`Histogram`]: `[lo, hi)`, the last bin `[lo, hi]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

/// Counts of samples in equal-width bins from the smallest sample to the
/// largest (as `np.histogram(x, bins)`, the last bin closed). Integer
/// samples (token lengths) are binned over `[min, max + 1)` instead, in at
/// most `max - min + 1` bins, so that a bin never holds a fraction of a
/// value or none at all for lack of width.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bins: Vec<Bin>,
}

/// The [`Histogram`] of the finite `samples`; `None` when there is none.
pub fn histogram(samples: &[f64], bins: usize) -> Option<Histogram> {
    let xs: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if xs.is_empty() {
        return None;
    }
    let integers = xs.iter().all(|x| x.fract() == 0.0);
    let span = hi - lo;
    let mut n = bins.max(1);
    if integers {
        n = n.min(span as usize + 1);
    }
    let width = if span > 0.0 {
        if integers {
            (span + 1.0) / n as f64
        } else {
            span / n as f64
        }
    } else {
        1.0
    };
    let mut out: Vec<Bin> = (0..n)
        .map(|i| Bin {
            lo: lo + i as f64 * width,
            hi: lo + (i + 1) as f64 * width,
            count: 0,
        })
        .collect();
    for x in xs {
        let i = (((x - lo) / width) as usize).min(n - 1);
        out[i].count += 1;
    }
    Some(Histogram { bins: out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted(v: &[f64]) -> Vec<f64> {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    }

    // Expected values below come from numpy 2.4 (`np.percentile`, `np.std`,
    // `np.mean`), compared bit for bit.

    #[test]
    fn percentile_matches_numpy_small() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        let one_to_ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&one_to_ten, 90.0), 9.1);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        assert_eq!(percentile(&[5.0], 0.0), 5.0);
    }

    #[test]
    fn percentile_matches_numpy_one_to_hundred() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 50.5);
        assert_eq!(percentile(&v, 90.0), 90.10000000000001);
        assert_eq!(percentile(&v, 95.0), 95.05);
        assert_eq!(percentile(&v, 99.0), 99.01);
        assert_eq!(percentile(&v, 99.9), 99.90100000000001);
        assert_eq!(percentile(&v, 100.0), 100.0);
    }

    #[test]
    fn percentile_edge_cases() {
        assert!(percentile(&[], 50.0).is_nan());
        assert!(percentile(&[1.0, 2.0], f64::NAN).is_nan());
        // Out-of-range p is clamped.
        assert_eq!(percentile(&[1.0, 2.0], -5.0), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 250.0), 2.0);
    }

    #[test]
    fn std_is_population_std() {
        let d = summarize(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(d.std, 2.0);
        assert_eq!(d.mean, 5.0);
        assert_eq!(d.count, 8);
        assert_eq!((d.min, d.max), (2.0, 9.0));
    }

    #[test]
    fn summarize_matches_numpy_unsorted() {
        let x = [0.3, 1.7, 2.2, 9.4, 4.1, 0.05, 3.3];
        let d = summarize(&x).unwrap();
        assert_eq!(d.count, 7);
        assert_eq!(d.p50, 2.2);
        assert_eq!(d.p90, 6.220000000000002);
        assert_eq!(d.p95, 7.809999999999996);
        assert_eq!(d.p99, 9.081999999999997);
        assert_eq!(d.p999, 9.368200000000003);
        assert!((d.mean - 3.0071428571428576).abs() < 1e-12);
        assert!((d.std - 2.9418687660626017).abs() < 1e-12);
        assert_eq!(d.spike_rate, 0.0);
    }

    #[test]
    fn summarize_empty_and_non_finite() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN, f64::INFINITY]), None);
        let d = summarize(&[1.0, f64::NAN, 3.0, f64::NEG_INFINITY]).unwrap();
        assert_eq!(d.count, 2);
        assert_eq!(d.mean, 2.0);
        assert_eq!(d.p50, 2.0);
    }

    #[test]
    fn spike_rate_counts_samples_beyond_three_sigma() {
        // 99 samples at 1.0 and one at 1000: mean 10.99, std ~99.4, the
        // outlier is above mean + 3 std.
        let mut v = vec![1.0; 99];
        v.push(1000.0);
        let d = summarize(&v).unwrap();
        assert_eq!(d.spike_rate, 0.01);
        assert_eq!(summarize(&[3.0; 10]).unwrap().spike_rate, 0.0);
    }

    #[test]
    fn distribution_roundtrips_through_json() {
        let d = summarize(&[1.0, 2.0, 3.0]).unwrap();
        let s = serde_json::to_string(&d).unwrap();
        let back: Distribution = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }

    fn samples() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(-1.0e9f64..1.0e9, 1..200)
    }

    proptest! {
        #[test]
        fn prop_order_statistics_are_monotone(v in samples()) {
            let d = summarize(&v).unwrap();
            prop_assert!(d.min <= d.p50);
            prop_assert!(d.p50 <= d.p90);
            prop_assert!(d.p90 <= d.p95);
            prop_assert!(d.p95 <= d.p99);
            prop_assert!(d.p99 <= d.p999);
            prop_assert!(d.p999 <= d.max);
            prop_assert!(d.min <= d.mean && d.mean <= d.max);
            prop_assert!(d.std >= 0.0);
            prop_assert_eq!(d.count, v.len());
        }

        #[test]
        fn prop_spike_rate_is_a_share(v in samples()) {
            let d = summarize(&v).unwrap();
            prop_assert!((0.0..=1.0).contains(&d.spike_rate));
        }

        #[test]
        fn prop_permutation_invariant(v in samples(), seed in any::<u64>()) {
            // Fisher-Yates with a small LCG: a deterministic shuffle.
            let mut w = v.clone();
            let mut s = seed;
            for i in (1..w.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (s >> 33) as usize % (i + 1);
                w.swap(i, j);
            }
            prop_assert_eq!(summarize(&v), summarize(&w));
        }

        #[test]
        fn prop_constant_input(x in -1.0e9f64..1.0e9, n in 1usize..100) {
            let d = summarize(&vec![x; n]).unwrap();
            prop_assert_eq!(d.std, 0.0);
            prop_assert_eq!(d.spike_rate, 0.0);
            prop_assert_eq!(d.mean, x);
            prop_assert_eq!(d.p50, x);
            prop_assert_eq!(d.p999, x);
        }

        #[test]
        fn prop_percentile_monotone_in_p(v in samples(), p in 0.0f64..100.0, q in 0.0f64..100.0) {
            let s = sorted(&v);
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            prop_assert!(percentile(&s, lo) <= percentile(&s, hi));
        }

        #[test]
        fn prop_nan_is_ignored(v in samples(), k in 0usize..5) {
            let mut w = v.clone();
            w.extend(std::iter::repeat_n(f64::NAN, k));
            prop_assert_eq!(summarize(&v), summarize(&w));
        }
    }

    #[test]
    fn histograms_bin_like_numpy_and_keep_integers_whole() {
        let h = histogram(&[1.0, 2.0, 2.5, 4.0, f64::NAN], 3).unwrap();
        let counts: Vec<u64> = h.bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 2, 1], "np.histogram([1, 2, 2.5, 4], 3)");
        assert_eq!((h.bins[0].lo, h.bins[2].hi), (1.0, 4.0));
        // Token lengths 10..=12 in 10 bins: three one-token bins.
        let h = histogram(&[10.0, 11.0, 12.0, 12.0], 10).unwrap();
        let got: Vec<(f64, u64)> = h.bins.iter().map(|b| (b.lo, b.count)).collect();
        assert_eq!(got, [(10.0, 1), (11.0, 1), (12.0, 2)]);
        let one = histogram(&[5.0, 5.0], 4).unwrap();
        assert_eq!(one.bins.len(), 1);
        assert_eq!(one.bins[0].count, 2);
        assert_eq!(histogram(&[f64::NAN], 4), None);
    }

    proptest::proptest! {
        #[test]
        fn histogram_counts_every_finite_sample_once(xs in proptest::collection::vec(-1e6f64..1e6, 1..200), bins in 1usize..30) {
            let h = histogram(&xs, bins).unwrap();
            proptest::prop_assert!(h.bins.len() <= bins);
            proptest::prop_assert_eq!(h.bins.iter().map(|b| b.count).sum::<u64>(), xs.len() as u64);
            for w in h.bins.windows(2) {
                proptest::prop_assert!(w[0].hi <= w[1].lo + 1e-6 * w[1].lo.abs().max(1.0));
            }
        }
    }
}
