//! Leak detection: does a process's RSS keep growing while it serves the
//! same work over and over? Pure functions over `(seconds, rss bytes)`
//! points, one per measured iteration (the caller reads
//! [`crate::telemetry::rss_bytes`] after each) or from the
//! [`crate::telemetry::Sampler`]'s series.
//!
//! # The figure
//!
//! [`leak_check`] fits a line to RSS over time and reports its slope in
//! MB/hour (MB = MiB, 2^20 bytes, as the reports' memory columns), the
//! growth that slope predicts over the window, and a [`LeakVerdict`]. The
//! seeds' target is 0 MB/h; up to [`ACCEPTABLE_MB_PER_HOUR`] is acceptable.
//!
//! # Why Theil–Sen, not least squares
//!
//! RSS does not move like Gaussian noise around a line. Allocators grow in
//! steps (a new arena, a `Vec` doubling, the first iteration that touches a
//! larger KV cache) and return memory in lumps (`malloc_trim`, an arena
//! unmapped), so a flat series has a few big jumps. Least squares squares
//! the residuals: one 64 MiB jump drags the fitted line to it. The
//! Theil–Sen estimator is the **median of the slopes of all pairs** of
//! points: it ignores up to ~29 % of arbitrarily bad points (its breakdown
//! point), so a single spike, or an allocator step in the first or last
//! ~15 % of the window (where fewer than half the pairs straddle it), does
//! not move it, while a steady leak tilts every pair alike. Its price is
//! O(n²) pairs: above [`MAX_PAIRS`] pairs a fixed, seeded sample of pairs
//! is used instead (the pairs depend only on the number of points, never
//! on the values, so the estimate stays exactly shift-invariant and
//! monotone in the leak rate). 20,000 pairs estimate the median slope to
//! well under 1 % of the spread of pairwise slopes.
//!
//! # Why a growth floor: short windows
//!
//! A test run of a tiny model does its 100 iterations in 0.2–2 s.
//! Allocator jitter of a few hundred KB over one second extrapolates to
//! hundreds of MB/hour, so the slope alone would flag every real engine.
//! What can be told apart from allocator noise is growth in *bytes*, not a
//! rate: the verdict is [`LeakVerdict::Leak`] only when the slope exceeds
//! [`ACCEPTABLE_MB_PER_HOUR`] **and** the growth the slope predicts over
//! the window (`slope × window`) exceeds [`GROWTH_FLOOR_MB`] (8 MiB). Below
//! that floor the window is too short to tell a leak from noise. What a
//! run can detect therefore depends on its length: a 10 s run catches
//! leaks of roughly 3 GB/h and more, a one-hour soak run anything above
//! max(10, 8) MB/h. The fault plugin's ~1 MiB per decode step grows by
//! 100 MiB or more over 100 iterations and is caught at any speed.
//!
//! # Why both halves must grow
//!
//! A leak is sustained; a plateau is not. One allocator step in the
//! middle of the window is straddled by half of all pairs, which is too
//! many for any median: on its own the overall slope would call it a leak.
//! So the series is also split at its middle point and each half gets its
//! own Theil–Sen slope; `Leak` needs both halves above
//! [`ACCEPTABLE_MB_PER_HOUR`] too. A middle step leaves both halves flat
//! (no leak); an early step is ignored by the overall median; a real leak
//! tilts both halves. A leak that grows in the first half and then stops
//! (caches filling up to a bound) is reported as no leak, which is what it
//! is for a long-running server.
//!
//! # Insufficient data
//!
//! Fewer than [`MIN_POINTS`] points, or all at one instant, give
//! [`LeakVerdict::Insufficient`]: the slope is still reported when it can
//! be computed, but no verdict is drawn.
//!
//! # A cell's verdict: enough work, after warm-up ([`settled_check`])
//!
//! Points are not work. A 50 ms sampler gives 371 points over a cell of
//! three batch-8 iterations, and over those 18 s libtorch's allocator and
//! MKL's buffers are still growing to their working size: 82 MB that a
//! per-hour slope calls a 15,909 MB/h leak. What a leak verdict needs is
//! the same work done many times over, after the process settled: the
//! seeds' M6 test runs 100 iterations. So a cell is judged by
//! [`settled_check`] over its units of work (measured iterations, or a
//! closed loop's completed requests): the first tenth of them
//! ([`SETTLE_ONE_IN`]) are left out as warm-up (growth the cell's explicit warm-up did not
//! cover: the first batch at a new size, a pool filling up), and at least
//! [`MIN_ITERATIONS`] must remain. A shorter cell gets
//! [`LeakVerdict::Insufficient`] with a note saying it is too short for a
//! leak verdict, and reports say nothing more about it.

pub use engine_matrix_results::telemetry::{
    LeakCheck, LeakVerdict, ACCEPTABLE_MB_PER_HOUR, MIN_ITERATIONS,
};

/// Points below which no verdict is drawn.
pub const MIN_POINTS: usize = 100;
/// [`settled_check`] leaves out one unit of work in this many (rounded
/// up: at least one) as warm-up before judging.
pub const SETTLE_ONE_IN: usize = 10;
/// Growth over the window, MB, that the slope must predict before a leak
/// is called (see the module docs: below it a short window cannot tell a
/// leak from allocator noise).
pub const GROWTH_FLOOR_MB: f64 = 8.0;
/// Pairs above which Theil–Sen uses a fixed sample of pairs.
pub const MAX_PAIRS: usize = 20_000;

const MIB: f64 = (1u64 << 20) as f64;

/// Checks `points` (`(seconds, rss bytes)`, any order; points with a
/// non-finite time are dropped) for a leak; see the module docs.
pub fn leak_check(points: &[(f64, u64)]) -> LeakCheck {
    let mut pts: Vec<(f64, u64)> = points.iter().copied().filter(|p| p.0.is_finite()).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pts.len();
    let window_s = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    let per_hour = |s: Option<f64>| s.map_or(0.0, |s| s * 3600.0 / MIB);
    let slope = theil_sen(&pts);
    let slope_mb_per_hour = per_hour(slope);
    let growth_mb = slope_mb_per_hour * window_s / 3600.0;
    let (first, second) = pts.split_at(n / 2);
    let first_half_mb_per_hour = per_hour(theil_sen(first));
    let second_half_mb_per_hour = per_hour(theil_sen(second));
    let observed_growth_mb = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => (b.1 as i128 - a.1 as i128) as f64 / MIB,
        _ => 0.0,
    };
    let verdict = if n < MIN_POINTS || window_s <= 0.0 || slope.is_none() {
        LeakVerdict::Insufficient
    } else if slope_mb_per_hour > ACCEPTABLE_MB_PER_HOUR
        && growth_mb > GROWTH_FLOOR_MB
        && first_half_mb_per_hour > ACCEPTABLE_MB_PER_HOUR
        && second_half_mb_per_hour > ACCEPTABLE_MB_PER_HOUR
    {
        LeakVerdict::Leak
    } else {
        LeakVerdict::NoLeak
    };
    LeakCheck {
        samples: n,
        window_s,
        slope_mb_per_hour,
        growth_mb,
        first_half_mb_per_hour,
        second_half_mb_per_hour,
        observed_growth_mb,
        verdict,
        note: None,
    }
}

/// The leak check of a cell: `points` is its RSS series (`(seconds, rss
/// bytes)`) and `work_ends` the times at which its units of work ended
/// (measured iterations or requests; `unit` names them, singular), on
/// the same clock. The first tenth of the units ([`SETTLE_ONE_IN`],
/// rounded up) are warm-up: only the points after the last of them are checked, and
/// only when at least [`MIN_ITERATIONS`] units ended after it; otherwise
/// the verdict is [`LeakVerdict::Insufficient`] with a `note` that says
/// the cell is too short (the figures are those of the settled points, so
/// a reader still sees the slope).
pub fn settled_check(points: &[(f64, u64)], work_ends: &[f64], unit: &str) -> LeakCheck {
    let mut ends: Vec<f64> = work_ends
        .iter()
        .copied()
        .filter(|t| t.is_finite())
        .collect();
    ends.sort_by(f64::total_cmp);
    let n = ends.len();
    let skip = n.div_ceil(SETTLE_ONE_IN);
    let settled_from = skip.checked_sub(1).map_or(f64::NEG_INFINITY, |i| ends[i]);
    let after = n - skip;
    let settled: Vec<(f64, u64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 > settled_from)
        .collect();
    let mut check = leak_check(&settled);
    if after < MIN_ITERATIONS {
        check.verdict = LeakVerdict::Insufficient;
        check.note = Some(format!(
            "too short for a leak verdict: {n} measured {unit}s, {after} after the first {skip} (warm-up); a verdict needs {MIN_ITERATIONS} after warm-up"
        ));
    } else if check.verdict == LeakVerdict::Insufficient {
        check.note = Some(format!(
            "too short for a leak verdict: {} RSS points after warm-up; a verdict needs {MIN_POINTS}",
            check.samples
        ));
    }
    check
}

/// Theil–Sen slope in bytes per second over `(seconds, rss bytes)` (see
/// [`engine_matrix_stats::trend::theil_sen`]). RSS values are far below
/// 2^53, so they and their differences are exact in `f64`, and adding a
/// constant to every RSS leaves every pairwise slope unchanged.
fn theil_sen(points: &[(f64, u64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points.iter().map(|&(t, y)| (t, y as f64)).collect();
    engine_matrix_stats::trend::theil_sen(&pts, MAX_PAIRS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: u64 = 900 << 20;

    /// Deterministic noise in `[-amp, amp]` bytes.
    fn noise(i: u64, amp: i64) -> i64 {
        let mut s = i.wrapping_mul(0x9E37_79B9);
        (crate::rng::splitmix64(&mut s) % (2 * amp as u64 + 1)) as i64 - amp
    }

    /// `n` points `dt_s` apart: `BASE + noise + rate × i`.
    fn series(n: usize, dt_s: f64, amp: i64, rate_per_point: i64) -> Vec<(f64, u64)> {
        (0..n)
            .map(|i| {
                let y = BASE as i64 + noise(i as u64, amp) + rate_per_point * i as i64;
                (i as f64 * dt_s, y as u64)
            })
            .collect()
    }

    #[test]
    fn flat_with_allocator_noise_is_no_leak() {
        // 100 iterations in one second with +-300 KB of jitter: the slope
        // may extrapolate to a large rate, the predicted growth does not.
        let c = leak_check(&series(100, 0.01, 300 << 10, 0));
        assert_eq!(c.verdict, LeakVerdict::NoLeak, "{c:?}");
        assert_eq!(c.samples, 100);
        assert!((c.window_s - 0.99).abs() < 1e-9);
        assert!(c.growth_mb.abs() < 1.0, "{c:?}");
    }

    #[test]
    fn exactly_flat_is_zero() {
        let c = leak_check(&series(120, 0.05, 0, 0));
        assert_eq!(c.slope_mb_per_hour, 0.0);
        assert_eq!(c.growth_mb, 0.0);
        assert_eq!(c.verdict, LeakVerdict::NoLeak);
    }

    #[test]
    fn one_mib_per_iteration_is_a_leak_with_the_right_slope() {
        let dt = 0.01;
        let c = leak_check(&series(100, dt, 200 << 10, 1 << 20));
        assert_eq!(c.verdict, LeakVerdict::Leak, "{c:?}");
        let expected = 3600.0 / dt; // 1 MiB per 10 ms, MiB/h
        assert!(
            (c.slope_mb_per_hour / expected - 1.0).abs() < 0.01,
            "{} vs {expected}",
            c.slope_mb_per_hour
        );
        assert!((c.growth_mb - 99.0).abs() < 2.0, "{c:?}");
        assert!((c.observed_growth_mb - 99.0).abs() < 1.0, "{c:?}");
        assert!(c.summary().starts_with("leak: +"), "{}", c.summary());
    }

    #[test]
    fn fewer_than_min_points_is_insufficient() {
        let c = leak_check(&series(50, 0.01, 0, 1 << 20));
        assert_eq!(c.verdict, LeakVerdict::Insufficient);
        assert_eq!(c.samples, 50);
        assert!(c.slope_mb_per_hour > 0.0, "the slope is still reported");
        assert_eq!(leak_check(&[]).verdict, LeakVerdict::Insufficient);
        for n in [200, 1000] {
            let same_instant: Vec<_> = (0..n).map(|i| (1.0, BASE + i)).collect();
            let c = leak_check(&same_instant);
            assert_eq!(c.verdict, LeakVerdict::Insufficient);
            assert_eq!(c.slope_mb_per_hour, 0.0);
        }
    }

    #[test]
    fn non_finite_times_are_dropped() {
        let mut pts = series(100, 0.01, 0, 0);
        pts.push((f64::NAN, 0));
        pts.push((f64::INFINITY, u64::MAX));
        let c = leak_check(&pts);
        assert_eq!(c.samples, 100);
        assert_eq!(c.verdict, LeakVerdict::NoLeak);
    }

    #[test]
    fn order_of_points_does_not_matter() {
        let pts = series(150, 0.02, 100 << 10, 64 << 10);
        let mut rev = pts.clone();
        rev.reverse();
        assert_eq!(leak_check(&pts), leak_check(&rev));
    }

    #[test]
    fn an_outlier_does_not_flip_the_verdict() {
        // One huge spike.
        let mut pts = series(100, 0.01, 200 << 10, 0);
        pts[37].1 += 512 << 20;
        let c = leak_check(&pts);
        assert_eq!(c.verdict, LeakVerdict::NoLeak, "{c:?}");
        assert!(c.growth_mb.abs() < 1.0, "{c:?}");
        // An allocator step early in the window, which stays.
        let mut pts = series(200, 0.01, 200 << 10, 0);
        for p in &mut pts[10..] {
            p.1 += 64 << 20;
        }
        let c = leak_check(&pts);
        assert_eq!(c.verdict, LeakVerdict::NoLeak, "{c:?}");
        // A step in the middle: the overall median tilts, the halves do not.
        let mut pts = series(200, 0.01, 200 << 10, 0);
        for p in &mut pts[100..] {
            p.1 += 64 << 20;
        }
        let c = leak_check(&pts);
        assert_eq!(c.verdict, LeakVerdict::NoLeak, "{c:?}");
        assert!(c.first_half_mb_per_hour.abs() < ACCEPTABLE_MB_PER_HOUR * 100.0);
        // The same outliers on top of a real leak do not hide it.
        let mut pts = series(100, 0.01, 200 << 10, 1 << 20);
        pts[37].1 -= 512 << 20;
        pts[80].1 += 512 << 20;
        assert_eq!(leak_check(&pts).verdict, LeakVerdict::Leak);
    }

    #[test]
    fn a_plateau_is_not_a_leak() {
        // Grows for the first 40 % (caches filling up), flat afterwards.
        let pts: Vec<_> = (0..200u64)
            .map(|i| (i as f64 * 0.01, BASE + i.min(80) * (1 << 20)))
            .collect();
        assert_eq!(leak_check(&pts).verdict, LeakVerdict::NoLeak);
    }

    #[test]
    fn a_soak_run_detects_slow_leaks() {
        // Two hours, one point every 7.2 s, +-2 MB of jitter.
        let dt = 7.2;
        let per_point = |mb_per_hour: f64| (mb_per_hour * MIB * dt / 3600.0) as i64;
        let leak = leak_check(&series(1000, dt, 2 << 20, per_point(20.0)));
        assert_eq!(leak.verdict, LeakVerdict::Leak, "{leak:?}");
        assert!((leak.slope_mb_per_hour - 20.0).abs() < 2.0, "{leak:?}");
        let ok = leak_check(&series(1000, dt, 2 << 20, per_point(5.0)));
        assert_eq!(ok.verdict, LeakVerdict::NoLeak, "{ok:?}");
        assert!((ok.slope_mb_per_hour - 5.0).abs() < 2.0, "{ok:?}");
    }

    #[test]
    fn many_points_use_sampled_pairs_deterministically() {
        let pts = series(5000, 0.05, 300 << 10, 4 << 10);
        let a = leak_check(&pts);
        assert_eq!(a, leak_check(&pts));
        let expected = 4.0 / 1024.0 * 3600.0 / 0.05; // 4 KiB per 50 ms
        assert!((a.slope_mb_per_hour / expected - 1.0).abs() < 0.05, "{a:?}");
        assert_eq!(a.verdict, LeakVerdict::Leak);
    }

    #[test]
    fn settled_check_needs_enough_work_after_warm_up() {
        // Three iterations sampled 400 times while the allocator grows:
        // the points alone would call it a leak, the work does not.
        let pts = series(400, 0.05, 100 << 10, 200 << 10);
        assert_eq!(leak_check(&pts).verdict, LeakVerdict::Leak);
        let c = settled_check(&pts, &[6.6, 13.3, 19.95], "iteration");
        assert_eq!(c.verdict, LeakVerdict::Insufficient, "{c:?}");
        let note = c.note.as_deref().unwrap();
        assert!(
            note.starts_with("too short for a leak verdict: 3 measured iterations, 2 after"),
            "{note}"
        );
        // 99 units after the warm-up share: still too short.
        let ends: Vec<f64> = (0..110).map(|i| i as f64 * 0.01).collect();
        let pts = series(110, 0.01, 0, 1 << 20);
        let c = settled_check(&pts, &ends, "iteration");
        assert_eq!(c.verdict, LeakVerdict::Insufficient, "{c:?}");
        assert!(c.note.unwrap().contains("99 after the first 11"));
        // No work at all.
        let c = settled_check(&pts, &[], "request");
        assert_eq!(c.verdict, LeakVerdict::Insufficient);
        assert!(c.note.unwrap().contains("0 measured requests"));
    }

    #[test]
    fn settled_check_judges_a_steady_leak_and_ignores_warm_up_growth() {
        let ends: Vec<f64> = (0..150).map(|i| i as f64 * 0.01).collect();
        // 1 MiB per iteration throughout: a leak, judged on the last 135.
        let c = settled_check(&series(150, 0.01, 200 << 10, 1 << 20), &ends, "iteration");
        assert_eq!(c.verdict, LeakVerdict::Leak, "{c:?}");
        assert_eq!(c.samples, 135);
        assert_eq!(c.note, None);
        // Growth during the first 10% only (a pool filling up), then flat:
        // no leak, and the warm-up growth is not in the figures.
        let pts: Vec<_> = (0..150u64)
            .map(|i| (i as f64 * 0.01, BASE + i.min(14) * (4 << 20)))
            .collect();
        let c = settled_check(&pts, &ends, "iteration");
        assert_eq!(c.verdict, LeakVerdict::NoLeak, "{c:?}");
        assert_eq!(c.observed_growth_mb, 0.0, "{c:?}");
        // Enough work, but a sampler series of too few points.
        let few: Vec<_> = (0..40).map(|i| (i as f64 * 0.05, BASE)).collect();
        let c = settled_check(&few, &ends, "request");
        assert_eq!(c.verdict, LeakVerdict::Insufficient);
        assert!(c.note.unwrap().contains("RSS points after warm-up"));
    }

    #[test]
    fn serializes_in_snake_case() {
        let c = leak_check(&series(100, 0.01, 0, 0));
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"verdict\":\"no_leak\""), "{json}");
        assert_eq!(serde_json::from_str::<LeakCheck>(&json).unwrap(), c);
        assert_eq!(
            serde_json::to_string(&LeakVerdict::Insufficient).unwrap(),
            "\"insufficient\""
        );
    }

    fn noisy_series() -> impl Strategy<Value = (Vec<i64>, f64)> {
        (
            prop::collection::vec(-(4i64 << 20)..(4i64 << 20), MIN_POINTS..400),
            prop::sample::select(vec![0.002, 0.01, 0.05, 1.0, 30.0]),
        )
    }

    fn build(noise: &[i64], dt: f64, base: u64, rate: i64) -> Vec<(f64, u64)> {
        noise
            .iter()
            .enumerate()
            .map(|(i, &e)| (i as f64 * dt, (base as i64 + e + rate * i as i64) as u64))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_slope_is_invariant_to_a_constant(
            (noise, dt) in noisy_series(),
            rate in -(1i64 << 20)..(1i64 << 20),
            shift in 0u64..(1u64 << 40),
        ) {
            let a = leak_check(&build(&noise, dt, BASE * 4, rate));
            let b = leak_check(&build(&noise, dt, BASE * 4 + shift, rate));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn prop_verdict_is_monotone_in_the_leak_rate(
            (noise, dt) in noisy_series(),
            r1 in 0i64..(2i64 << 20),
            extra in 0i64..(2i64 << 20),
        ) {
            let a = leak_check(&build(&noise, dt, BASE * 4, r1));
            let b = leak_check(&build(&noise, dt, BASE * 4, r1 + extra));
            prop_assert!(a.slope_mb_per_hour <= b.slope_mb_per_hour);
            prop_assert!(a.verdict != LeakVerdict::Insufficient);
            prop_assert!(
                !(a.verdict == LeakVerdict::Leak && b.verdict == LeakVerdict::NoLeak),
                "{:?} then {:?}", a, b
            );
        }
    }
}
