//! Robust trends: the Theil–Sen slope, the median of the slopes of all
//! pairs of points. It ignores up to ~29% of arbitrarily bad points (a
//! spike, a step), where least squares follows them. Its price is O(n²)
//! pairs: above `max_pairs` a fixed, seeded sample of pairs is used, which
//! depends only on the number of points, never on their values, so the
//! estimate stays exactly shift-invariant and monotone in the trend.
//!
//! Used for memory leaks (RSS over time) and for serving degradation
//! (latency per window over time).

use crate::rng::splitmix64;

/// Theil–Sen slope of `points` (`(x, y)`, any order) in y per x: the median
/// of the slopes of the pairs at distinct, finite x (a fixed sample of
/// `max_pairs` pairs when there are more). `None` when no pair has one.
pub fn theil_sen(points: &[(f64, f64)], max_pairs: usize) -> Option<f64> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let slope = |i: usize, j: usize| {
        let (xi, yi) = points[i];
        let (xj, yj) = points[j];
        let dx = xj - xi;
        let s = (yj - yi) / dx;
        (dx != 0.0 && dx.is_finite() && s.is_finite()).then_some(s)
    };
    let total = n * (n - 1) / 2;
    let mut slopes = Vec::with_capacity(total.min(max_pairs));
    if total <= max_pairs {
        for i in 0..n {
            for j in i + 1..n {
                slopes.extend(slope(i, j));
            }
        }
    } else {
        // Seeded by the count only: the same points in, the same pairs out.
        // Bounded draws: points at one x give no slope at all.
        let mut state = 0x7e1e_5e47_1eac_0000u64 ^ n as u64;
        for _ in 0..4 * max_pairs {
            if slopes.len() == max_pairs {
                break;
            }
            let i = (splitmix64(&mut state) % n as u64) as usize;
            let j = (splitmix64(&mut state) % n as u64) as usize;
            if i != j {
                slopes.extend(slope(i.min(j), i.max(j)));
            }
        }
    }
    median(&mut slopes)
}

/// Median (mean of the two middle values for an even count).
fn median(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (_, &mut hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = v[..n / 2].iter().copied().max_by(f64::total_cmp)?;
    Some(lo + (hi - lo) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_line_and_its_outliers() {
        let mut pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert_eq!(theil_sen(&pts, 1000), Some(3.0));
        // Three wild points do not move it.
        pts[4].1 = 1e6;
        pts[11].1 = -1e6;
        pts[17].1 = 5e5;
        let s = theil_sen(&pts, 1000).unwrap();
        assert!((s - 3.0).abs() < 0.5, "{s}");
        assert_eq!(theil_sen(&pts[..1], 1000), None);
        assert_eq!(theil_sen(&[(1.0, 1.0), (1.0, 5.0)], 1000), None, "one x");
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    proptest! {
        /// Shifting y leaves the slope unchanged; the sampled estimate of
        /// a noiseless line is the line's slope.
        #[test]
        fn shift_invariant_and_exact_on_lines(
            ys in proptest::collection::vec(-1e6f64..1e6, 2..300),
            shift in -1e9f64..1e9,
            k in -100f64..100.0,
        ) {
            let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect();
            let moved: Vec<(f64, f64)> = pts.iter().map(|(x, y)| (*x, y + shift)).collect();
            let a = theil_sen(&pts, 500).unwrap();
            let b = theil_sen(&moved, 500).unwrap();
            prop_assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} {b}");
            let line: Vec<(f64, f64)> = (0..ys.len()).map(|i| (i as f64, k * i as f64)).collect();
            let s = theil_sen(&line, 500).unwrap();
            prop_assert!((s - k).abs() <= 1e-9 * (1.0 + k.abs()), "{s} {k}");
        }
    }
}
