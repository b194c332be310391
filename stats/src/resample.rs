//! Bootstrap confidence intervals, Tukey outlier flags and regression
//! verdicts, in the style of criterion.rs: pure functions over measurement
//! samples, used to report speedups and detect regressions honestly.
//!
//! # What is computed
//!
//! * [`median_ci`]: the median of a sample with a percentile-bootstrap
//!   confidence interval ([`Estimate`]).
//! * [`ratio_ci`]: `median(num) / median(den)` for two **independent**
//!   samples (e.g. per-iteration throughputs of two engines measured in
//!   separate sessions), each side resampled on its own.
//! * [`paired_ratio_ci`]: the median of per-pair ratios `a_i / b_i` for
//!   **paired** samples taken side by side (repetition `i` of an interleaved
//!   `A B A B` run), resampling whole pairs.
//! * [`tukey_fences`], [`classify`], [`count_outliers`]: Tukey's fences with
//!   criterion.rs's "mild" (1.5 IQR) and "severe" (3 IQR) outliers.
//! * [`compare`], [`compare_paired`]: a candidate/baseline [`Change`] with a
//!   [`Verdict`] (`Improved`, `Regressed`, `NoChange`).
//!
//! # Why medians
//!
//! Timing noise is one-sided and heavy-tailed: a page fault, a GC pause in a
//! Python engine, a clock drop or a noisy neighbour makes an iteration
//! slower, almost never faster. One such iteration drags the mean (and blows
//! up the standard deviation that t-tests lean on); the median has a 50 %
//! breakdown point and does not move. The price: for clean, Gaussian-like
//! data the median is less efficient than the mean (about 64 % asymptotic
//! efficiency, i.e. it needs ~1.5x the samples for the same precision), and
//! for small samples its bootstrap distribution is lumpy (a median of `n`
//! resampled values can only take a handful of distinct values), which makes
//! intervals coarse. For benchmark data that trade is worth it.
//!
//! # Why the percentile bootstrap
//!
//! Latencies and throughputs are skewed, sometimes multimodal (warm vs. cold
//! caches, two kernel paths), and the statistics reported here (a median, a
//! ratio of medians, a median of ratios) have no convenient closed-form
//! standard error. The bootstrap needs no distributional assumption: it
//! resamples the observed values with replacement `resamples` times,
//! recomputes the statistic on each resample, and takes the `(1 - c) / 2`
//! and `(1 + c) / 2` quantiles of that bootstrap distribution (via
//! [`stats::percentile`], numpy's linear method) as the interval. It is also
//! transformation-respecting: the interval of `1 / r` is (up to
//! interpolation) `1 / ` the interval of `r`, so "A is 1.25x B" and "B is
//! 0.8x A" agree. Trade-offs, stated honestly:
//!
//! * With few samples (say fewer than 10) the bootstrap only knows the values
//!   it has seen, so intervals are **too narrow** (under-cover). With a
//!   single sample the interval is degenerate (`lo == hi == point`), which is
//!   why a verdict additionally needs [`MIN_SAMPLES`] on each side.
//! * Bias-corrected and accelerated (BCa) intervals cover better, but the
//!   acceleration estimate needs a jackknife whose values for a median are
//!   unstable (the jackknife is inconsistent for the median); the simple
//!   percentile interval is what criterion.rs reports too.
//! * A percentile interval need **not** contain its own point estimate: the
//!   bootstrap distribution of a median of a skewed or even-sized sample can
//!   sit entirely to one side of the sample median. Every [`Estimate`] here
//!   is therefore clamped to `lo <= point <= hi` (`lo = min(lo, point)`,
//!   `hi = max(hi, point)`). Clamping only ever *widens* the interval, so it
//!   is conservative, and a report never draws a point outside its own error
//!   bar.
//!
//! # The sampling unit is a whole iteration (or run), not a token
//!
//! The bootstrap assumes its resampling units are independent. Tokens of one
//! generation are not: they share the KV cache and its growth, the batch
//! composition, the GPU clocks and thermal state, and the scheduler's
//! decisions, so their inter-token latencies are strongly correlated.
//! Feeding 10 000 ITL samples from 10 runs into a bootstrap as if they were
//! 10 000 independent observations makes the interval roughly
//! `sqrt(1000)` times too narrow, and every difference looks significant.
//! Callers therefore pass **one number per iteration or run** (that run's
//! median ITL, its TTFT, its tokens/s). With few runs, intervals are wide,
//! and that is the honest answer.
//!
//! # A verdict needs significance *and* a noise threshold
//!
//! * Significance alone is not enough: with many samples even a 0.3 %
//!   difference has an interval that excludes 1, yet it is irrelevant and
//!   often produced by systematic effects that no interval covers (binary
//!   layout, frequency scaling, a different driver build).
//! * A threshold alone is not enough: a 10 % difference between the medians
//!   of three noisy samples each can be pure chance.
//!
//! So, as in criterion.rs, [`compare`] says `Improved` / `Regressed` only
//! when the ratio's interval excludes 1.0 (with at least [`MIN_SAMPLES`]
//! samples on each side) **and** the point estimate is farther than `noise`
//! (a fraction, `0.05` = 5 %) from 1.0; anything else is `NoChange`.
//! (criterion.rs's own variant is stricter still, asking that the *whole*
//! interval lie beyond the threshold; testing the point estimate keeps
//! "significant" and "relevant" as two separate questions and does not need
//! many more samples to ever report a change just above the threshold.)
//!
//! # Paired ratios when runs are interleaved
//!
//! When engine A and baseline B run interleaved (`A B A B ...`), slow
//! machine drift (thermal throttling, boost clocks, background load, memory
//! fragmentation) hits both members of a pair alike. The per-pair ratio
//! `a_i / b_i` cancels that common factor, so the ratios scatter far less
//! than either side does on its own, and [`paired_ratio_ci`] gives a much
//! tighter interval from the same runs than [`ratio_ci`], which has to
//! treat the drift as noise. Resampling *pair indices* (never `a` and `b`
//! separately) keeps the pairing intact. [`ratio_ci`] remains the right tool
//! when the two sides were not measured side by side.
//!
//! # Determinism
//!
//! The same inputs and seed give bit-identical output, independent of the
//! order of the input samples: finite samples are sorted (pairs by `(a, b)`
//! with [`f64::total_cmp`]) before anything else, and resample indices come
//! from a SplitMix64 stream seeded by `seed` (mapped to `0..n` with a
//! multiply-shift, whose bias of at most `n / 2^64` is negligible). For
//! [`ratio_ci`] each resample draws the numerator's indices, then the
//! denominator's, from the one stream.
//!
//! # Non-finite and degenerate input
//!
//! As in [`stats`], non-finite samples (NaN, ±inf) are ignored. No finite
//! sample gives `None`; a `confidence` outside `[0, 1]` (or NaN) or
//! `resamples == 0` also gives `None`. In [`ratio_ci`] a resample whose
//! denominator median is not positive has an unbounded ratio; it is recorded
//! as `f64::MAX` (the limit of `a / b` as `b` falls to 0) so that the
//! interval stays finite, and serializable to JSON, while its upper end
//! reaches the largest float: such an interval is unbounded above and only
//! supports "the ratio is at least `lo`".
//!
//! # Cost
//!
//! `O(resamples * n)`, with no sort and no comparison per resample. Since
//! the samples are sorted up front, a resample's median is the sorted
//! sample at the median rank of the drawn *indices*; counting the indices
//! per position in one reused buffer and scanning the counts finds it in
//! `O(n)` without gathering any value. That matches a quickselect
//! ([`slice::select_nth_unstable_by`]) over the gathered values bit for bit
//! (a test checks it) but costs about a quarter as much; 2000 resamples of
//! 1000 samples take a few milliseconds, most of it drawing the 2 million
//! indices.

use serde::{Deserialize, Serialize};

use crate::rng::splitmix64;
use crate::stats;

/// Default confidence level of the intervals.
pub const CONFIDENCE: f64 = 0.95;

/// Default number of bootstrap resamples.
pub const RESAMPLES: usize = 2000;

/// Fewest finite samples (or pairs) each side needs before [`compare`] or
/// [`compare_paired`] may call a change significant.
pub const MIN_SAMPLES: usize = 2;

/// A point estimate with a percentile-bootstrap confidence interval.
///
/// Always `lo <= point <= hi` (see the module docs on clamping).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub point: f64,
    pub lo: f64,
    pub hi: f64,
    /// Number of finite samples behind the estimate: the sample count for
    /// [`median_ci`], the kept pairs for [`paired_ratio_ci`], and the smaller
    /// side (the one limiting the interval) for [`ratio_ci`].
    pub n: usize,
    /// Confidence level of `[lo, hi]`, e.g. 0.95.
    pub confidence: f64,
}

impl Estimate {
    /// Whether `x` lies in the closed interval `[lo, hi]`.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }

    /// `hi - lo`.
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }
}

/// The median of the finite samples of `xs` (any order), the mean of the
/// two middle values for an even count, computed bit for bit like
/// `stats::percentile(sorted, 50.0)`. `None` when no sample is finite.
pub fn median(xs: &[f64]) -> Option<f64> {
    let sorted = finite_sorted(xs);
    if sorted.is_empty() {
        None
    } else {
        Some(median_sorted(&sorted))
    }
}

/// Bootstrap CI of the median.
///
/// `point` is [`median`]`(xs)`; `[lo, hi]` are the `(1 - confidence) / 2`
/// and `(1 + confidence) / 2` quantiles of the medians of `resamples`
/// resamples, clamped to contain `point`. `None` when no sample is finite,
/// `confidence` is not in `[0, 1]`, or `resamples == 0`.
pub fn median_ci(xs: &[f64], confidence: f64, resamples: usize, seed: u64) -> Option<Estimate> {
    if !valid_params(confidence, resamples) {
        return None;
    }
    let sorted = finite_sorted(xs);
    if sorted.is_empty() {
        return None;
    }
    Some(median_interval(&sorted, confidence, resamples, seed))
}

/// The median of `sorted` with its percentile-bootstrap interval.
fn median_interval(sorted: &[f64], confidence: f64, resamples: usize, seed: u64) -> Estimate {
    let point = median_sorted(sorted);
    let mut rng = Indices::new(seed);
    let mut counts = Vec::with_capacity(sorted.len());
    let dist = (0..resamples)
        .map(|_| resampled_median(sorted, &mut rng, &mut counts))
        .collect();
    interval(point, dist, sorted.len(), confidence)
}

/// `median(num) / median(den)` with `num` and `den` resampled independently
/// (unpaired samples, e.g. per-iteration throughputs of two engines). `None`
/// when a median is `<= 0` or a side has no finite sample (or on invalid
/// `confidence` / `resamples`, see [`median_ci`]).
///
/// `n` of the result is the smaller side's sample count. A resample whose
/// denominator median is not positive counts as an unbounded ratio
/// (`f64::MAX`), see the module docs.
pub fn ratio_ci(
    num: &[f64],
    den: &[f64],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Option<Estimate> {
    if !valid_params(confidence, resamples) {
        return None;
    }
    let num = finite_sorted(num);
    let den = finite_sorted(den);
    if num.is_empty() || den.is_empty() {
        return None;
    }
    let (m_num, m_den) = (median_sorted(&num), median_sorted(&den));
    if m_num <= 0.0 || m_den <= 0.0 {
        return None;
    }
    let point = bounded_ratio(m_num, m_den);
    let mut rng = Indices::new(seed);
    let mut counts = Vec::with_capacity(num.len().max(den.len()));
    let dist = (0..resamples)
        .map(|_| {
            let a = resampled_median(&num, &mut rng, &mut counts);
            let b = resampled_median(&den, &mut rng, &mut counts);
            bounded_ratio(a, b)
        })
        .collect();
    Some(interval(point, dist, num.len().min(den.len()), confidence))
}

/// Paired samples `(a_i, b_i)` taken side by side (e.g. engine A and baseline
/// B in repetition `i` of an interleaved `A B A B` run): `point` is the
/// median of `a_i / b_i`, the CI comes from resampling pair indices. Pairs
/// with a non-finite or non-positive member are dropped; a ratio that
/// overflows is recorded as `f64::MAX`. `None` when no pair is left (or on
/// invalid `confidence` / `resamples`, see [`median_ci`]).
pub fn paired_ratio_ci(
    pairs: &[(f64, f64)],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Option<Estimate> {
    if !valid_params(confidence, resamples) {
        return None;
    }
    let good = |x: f64| x.is_finite() && x > 0.0;
    let mut kept: Vec<(f64, f64)> = pairs
        .iter()
        .copied()
        .filter(|&(a, b)| good(a) && good(b))
        .collect();
    if kept.is_empty() {
        return None;
    }
    kept.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
    // Resampling pair indices is resampling their ratios; sorting the ratios
    // (a fixed function of the sorted pairs) lets the resamples' medians be
    // found by counting, as for the other statistics.
    let mut ratios: Vec<f64> = kept.iter().map(|&(a, b)| bounded_ratio(a, b)).collect();
    ratios.sort_by(f64::total_cmp);
    Some(median_interval(&ratios, confidence, resamples, seed))
}

/// Tukey's fences (criterion.rs's "mild" 1.5 IQR, "severe" 3 IQR).
///
/// `q1` and `q3` are the 25th and 75th percentiles (numpy's linear method)
/// of the finite samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fences {
    pub q1: f64,
    pub q3: f64,
    /// `q1 - 3 * IQR`.
    pub low_severe: f64,
    /// `q1 - 1.5 * IQR`.
    pub low_mild: f64,
    /// `q3 + 1.5 * IQR`.
    pub high_mild: f64,
    /// `q3 + 3 * IQR`.
    pub high_severe: f64,
}

impl Fences {
    /// Where `x` falls, with criterion.rs's strict comparisons (a sample
    /// exactly on a fence is not beyond it). Non-finite `x` is
    /// `NotAnOutlier`.
    pub fn classify(&self, x: f64) -> Outlier {
        if !x.is_finite() {
            Outlier::NotAnOutlier
        } else if x < self.low_severe {
            Outlier::LowSevere
        } else if x > self.high_severe {
            Outlier::HighSevere
        } else if x < self.low_mild {
            Outlier::LowMild
        } else if x > self.high_mild {
            Outlier::HighMild
        } else {
            Outlier::NotAnOutlier
        }
    }
}

/// Tukey's fences of the finite samples of `xs`; `None` when none is finite.
pub fn tukey_fences(xs: &[f64]) -> Option<Fences> {
    let sorted = finite_sorted(xs);
    if sorted.is_empty() {
        return None;
    }
    let q1 = stats::percentile(&sorted, 25.0);
    let q3 = stats::percentile(&sorted, 75.0);
    let iqr = q3 - q1;
    Some(Fences {
        q1,
        q3,
        low_severe: q1 - 3.0 * iqr,
        low_mild: q1 - 1.5 * iqr,
        high_mild: q3 + 1.5 * iqr,
        high_severe: q3 + 3.0 * iqr,
    })
}

/// Where a sample falls relative to [`Fences`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outlier {
    LowSevere,
    LowMild,
    NotAnOutlier,
    HighMild,
    HighSevere,
}

impl Outlier {
    /// Anything but `NotAnOutlier`.
    pub fn is_outlier(self) -> bool {
        self != Outlier::NotAnOutlier
    }
}

/// Classifies every sample of `xs` against the Tukey fences of all of them,
/// in the same order as `xs`; non-finite samples are `NotAnOutlier`.
pub fn classify(xs: &[f64]) -> Vec<Outlier> {
    match tukey_fences(xs) {
        Some(f) => xs.iter().map(|&x| f.classify(x)).collect(),
        None => vec![Outlier::NotAnOutlier; xs.len()],
    }
}

/// How many samples fall in each outlier class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierCounts {
    pub low_severe: usize,
    pub low_mild: usize,
    pub high_mild: usize,
    pub high_severe: usize,
}

impl OutlierCounts {
    /// All outliers, mild and severe.
    pub fn total(&self) -> usize {
        self.low_severe + self.low_mild + self.high_mild + self.high_severe
    }
}

/// Counts [`classify`]'s outliers in `xs`.
pub fn count_outliers(xs: &[f64]) -> OutlierCounts {
    let mut c = OutlierCounts::default();
    for o in classify(xs) {
        match o {
            Outlier::LowSevere => c.low_severe += 1,
            Outlier::LowMild => c.low_mild += 1,
            Outlier::NotAnOutlier => {}
            Outlier::HighMild => c.high_mild += 1,
            Outlier::HighSevere => c.high_severe += 1,
        }
    }
    c
}

/// Whether a change is an improvement, a regression, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    NoChange,
}

/// A candidate measured against a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// candidate/baseline ratio of medians with its CI (median of per-pair
    /// ratios for [`compare_paired`]).
    pub ratio: Estimate,
    /// `(ratio - 1) * 100`, from the point estimate.
    pub percent: f64,
    /// The CI excludes 1.0 (and both sides have >= [`MIN_SAMPLES`] samples).
    pub significant: bool,
    pub verdict: Verdict,
}

/// Verdict as criterion.rs gives it: `Improved` / `Regressed` only when the
/// change is significant AND its point estimate is beyond the noise
/// threshold (a fraction, e.g. 0.05 = 5 %); otherwise `NoChange`.
/// `higher_is_better` says the metric's direction (throughput `true`,
/// latency `false`). Baseline and candidate are independent samples, one
/// value per iteration; `None` as for [`ratio_ci`]`(candidate, baseline)`.
pub fn compare(
    baseline: &[f64],
    candidate: &[f64],
    higher_is_better: bool,
    noise: f64,
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Option<Change> {
    let ratio = ratio_ci(candidate, baseline, confidence, resamples, seed)?;
    Some(judge(ratio, higher_is_better, noise))
}

/// Same as [`compare`], for paired samples `(baseline_i, candidate_i)` of
/// interleaved runs: the ratio is the median of `candidate_i / baseline_i`
/// ([`paired_ratio_ci`]), and at least [`MIN_SAMPLES`] valid pairs are
/// needed for significance.
pub fn compare_paired(
    pairs: &[(f64, f64)],
    higher_is_better: bool,
    noise: f64,
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Option<Change> {
    let swapped: Vec<(f64, f64)> = pairs.iter().map(|&(b, c)| (c, b)).collect();
    let ratio = paired_ratio_ci(&swapped, confidence, resamples, seed)?;
    Some(judge(ratio, higher_is_better, noise))
}

/// Turns a candidate/baseline ratio into a [`Change`].
fn judge(ratio: Estimate, higher_is_better: bool, noise: f64) -> Change {
    let significant = ratio.n >= MIN_SAMPLES && !ratio.contains(1.0);
    let relevant = (ratio.point - 1.0).abs() > noise;
    let verdict = if significant && relevant {
        if (ratio.point > 1.0) == higher_is_better {
            Verdict::Improved
        } else {
            Verdict::Regressed
        }
    } else {
        Verdict::NoChange
    };
    Change {
        ratio,
        percent: (ratio.point - 1.0) * 100.0,
        significant,
        verdict,
    }
}

fn valid_params(confidence: f64, resamples: usize) -> bool {
    (0.0..=1.0).contains(&confidence) && resamples > 0
}

/// The finite samples of `xs`, sorted ascending by [`f64::total_cmp`].
fn finite_sorted(xs: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The midpoint of `a <= b`, computed like `stats::percentile` interpolates
/// at a fraction of exactly 0.5, so that medians agree with its p50.
fn midpoint(a: f64, b: f64) -> f64 {
    (b - (b - a) * 0.5).clamp(a, b)
}

/// Median of a sorted, non-empty, NaN-free slice.
fn median_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        midpoint(sorted[n / 2 - 1], sorted[n / 2])
    }
}

/// `a / b` for a bootstrap distribution: finite whatever happens. A
/// non-positive denominator means an unbounded ratio (`f64::MAX`), and an
/// overflowing quotient is clamped to `±f64::MAX`.
fn bounded_ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b).clamp(-f64::MAX, f64::MAX)
    } else {
        f64::MAX
    }
}

/// Uniform indices from a SplitMix64 stream.
struct Indices {
    state: u64,
}

impl Indices {
    fn new(seed: u64) -> Self {
        Indices { state: seed }
    }

    /// An index in `0..n` (`n > 0`), by multiply-shift: the top bits of the
    /// 128-bit product `r * n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(splitmix64(&mut self.state)) * n as u128) >> 64) as usize
    }
}

/// Median of one resample (with replacement) of `sorted` (non-empty,
/// ascending, NaN-free), using `counts` as scratch space.
///
/// As `sorted` is ascending, the `r`-th smallest value of a resample is
/// `sorted[j]` for the `r`-th smallest drawn index `j`. So instead of
/// gathering the values and selecting among them, the drawn indices are
/// counted per position and the median ranks found by one prefix scan: no
/// float moves, no comparisons, `O(n)`. The result is bit for bit what a
/// quickselect over the gathered values gives (a test checks this against
/// `select_nth_unstable_by`).
fn resampled_median(sorted: &[f64], rng: &mut Indices, counts: &mut Vec<usize>) -> f64 {
    let n = sorted.len();
    counts.clear();
    counts.resize(n, 0);
    for _ in 0..n {
        counts[rng.below(n)] += 1;
    }
    // Find the position holding rank k = n / 2 (0-based): `below` counts the
    // drawn indices before position i.
    let k = n / 2;
    let (mut i, mut below) = (0, 0);
    while below + counts[i] <= k {
        below += counts[i];
        i += 1;
    }
    let upper = sorted[i];
    if n % 2 == 1 {
        return upper;
    }
    // Rank k - 1 is at i as well, unless i starts exactly at rank k; then it
    // is the last position before i that was drawn at all.
    let lower = if below < k {
        upper
    } else {
        let j = counts[..i]
            .iter()
            .rposition(|&c| c > 0)
            .expect("k >= 1 indices lie below position i");
        sorted[j]
    };
    midpoint(lower, upper)
}

/// Percentile interval of the bootstrap distribution `dist` (finite values),
/// clamped to contain `point`.
fn interval(point: f64, mut dist: Vec<f64>, n: usize, confidence: f64) -> Estimate {
    dist.sort_by(f64::total_cmp);
    let lo = stats::percentile(&dist, 100.0 * (1.0 - confidence) / 2.0);
    let hi = stats::percentile(&dist, 100.0 * (1.0 + confidence) / 2.0);
    Estimate {
        point,
        lo: lo.min(point),
        hi: hi.max(point),
        n,
        confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic Fisher-Yates shuffle driven by SplitMix64.
    fn shuffled<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
        let mut w = v.to_vec();
        let mut s = seed;
        for i in (1..w.len()).rev() {
            let j = (splitmix64(&mut s) % (i as u64 + 1)) as usize;
            w.swap(i, j);
        }
        w
    }

    /// `n` samples `center * (1 + u)` with `u` uniform in `[-jitter, jitter]`.
    fn jittered(center: f64, jitter: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let u = (splitmix64(&mut s) >> 11) as f64 / (1u64 << 53) as f64;
                center * (1.0 + jitter * (2.0 * u - 1.0))
            })
            .collect()
    }

    /// Reference median by quickselect (reorders `buf`, non-empty, NaN-free):
    /// what the counting in `resampled_median` must reproduce bit for bit.
    fn median_in_place(buf: &mut [f64]) -> f64 {
        let n = buf.len();
        let k = n / 2;
        let (below, &mut upper, _) = buf.select_nth_unstable_by(k, f64::total_cmp);
        if n % 2 == 1 {
            upper
        } else {
            // The lower middle value is the largest of the k values below.
            let lower = below
                .iter()
                .copied()
                .max_by(f64::total_cmp)
                .expect("even n >= 2 leaves k >= 1 values below");
            midpoint(lower, upper)
        }
    }

    fn ci(xs: &[f64], seed: u64) -> Estimate {
        median_ci(xs, CONFIDENCE, RESAMPLES, seed).unwrap()
    }

    fn cmp(base: &[f64], cand: &[f64], higher_is_better: bool) -> Change {
        compare(base, cand, higher_is_better, 0.05, CONFIDENCE, RESAMPLES, 7).unwrap()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs())
    }

    #[test]
    fn median_of_known_arrays() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[1.0, f64::NAN, 3.0, f64::INFINITY]), Some(2.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, f64::NEG_INFINITY]), None);
    }

    #[test]
    fn median_in_place_handles_both_parities() {
        assert_eq!(median_in_place(&mut [9.0, -1.0, 4.0, 4.0, 0.5]), 4.0);
        assert_eq!(median_in_place(&mut [9.0, -1.0, 4.0, 0.5]), 2.25);
        assert_eq!(median_in_place(&mut [7.0]), 7.0);
    }

    #[test]
    fn single_sample_gives_degenerate_interval() {
        let e = ci(&[42.0, f64::NAN], 1);
        assert_eq!(
            e,
            Estimate {
                point: 42.0,
                lo: 42.0,
                hi: 42.0,
                n: 1,
                confidence: CONFIDENCE
            }
        );
        assert_eq!(e.width(), 0.0);
    }

    #[test]
    fn invalid_parameters_give_none() {
        let xs = [1.0, 2.0, 3.0];
        assert_eq!(median_ci(&xs, f64::NAN, 100, 0), None);
        assert_eq!(median_ci(&xs, 1.5, 100, 0), None);
        assert_eq!(median_ci(&xs, -0.1, 100, 0), None);
        assert_eq!(median_ci(&xs, 0.95, 0, 0), None);
        assert_eq!(median_ci(&[], 0.95, 100, 0), None);
        assert_eq!(ratio_ci(&xs, &xs, 0.95, 0, 0), None);
        assert_eq!(paired_ratio_ci(&[(1.0, 1.0)], 2.0, 100, 0), None);
    }

    #[test]
    fn median_ci_of_one_to_hundred_is_plausible() {
        // The distribution-free 95 % interval of the median of 100 samples
        // spans ranks 40..=61; the percentile bootstrap is a bit narrower.
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        let e = ci(&xs, 3);
        assert_eq!(e.point, 50.5);
        assert_eq!(e.n, 100);
        assert!((40.0..50.5).contains(&e.lo), "{e:?}");
        assert!(e.hi > 50.5 && e.hi <= 61.0, "{e:?}");
    }

    #[test]
    fn interval_narrows_with_more_samples() {
        let small = ci(&jittered(100.0, 0.1, 10, 5), 9);
        let large = ci(&jittered(100.0, 0.1, 1000, 5), 9);
        assert!(large.width() < small.width() / 3.0, "{small:?} {large:?}");
        assert!(large.contains(100.0), "{large:?}");
    }

    #[test]
    fn seed_drives_the_resamples() {
        let xs = jittered(10.0, 0.3, 50, 11);
        assert_eq!(ci(&xs, 1), ci(&xs, 1));
        let (a, b) = (ci(&xs, 1), ci(&xs, 2));
        assert_eq!(a.point, b.point);
        assert!(a.lo != b.lo || a.hi != b.hi, "{a:?} {b:?}");
    }

    #[test]
    fn confidence_orders_the_intervals() {
        let xs = jittered(10.0, 0.3, 50, 12);
        let wide = median_ci(&xs, 0.99, RESAMPLES, 4).unwrap();
        let narrow = median_ci(&xs, 0.5, RESAMPLES, 4).unwrap();
        assert!(wide.lo <= narrow.lo && narrow.hi <= wide.hi);
        assert!(narrow.width() < wide.width());
        // confidence 1 spans every resampled median; 0 collapses to the
        // middle of the bootstrap distribution, clamped to the point.
        let all = median_ci(&xs, 1.0, RESAMPLES, 4).unwrap();
        assert!(all.lo <= wide.lo && wide.hi <= all.hi);
        assert!(median_ci(&xs, 0.0, RESAMPLES, 4)
            .unwrap()
            .contains(all.point));
    }

    #[test]
    fn ratio_of_identical_samples_is_one() {
        let xs = jittered(3.0, 0.05, 20, 13);
        let e = ratio_ci(&xs, &xs, CONFIDENCE, RESAMPLES, 0).unwrap();
        assert_eq!(e.point, 1.0);
        assert!(e.contains(1.0));
        assert_eq!(e.n, 20);
    }

    #[test]
    fn ratio_needs_positive_medians() {
        let pos = [1.0, 2.0, 3.0];
        assert_eq!(ratio_ci(&pos, &[0.0, 0.0, 1.0], 0.95, 100, 0), None);
        assert_eq!(ratio_ci(&[-1.0, -2.0, 3.0], &pos, 0.95, 100, 0), None);
        assert_eq!(ratio_ci(&pos, &[f64::NAN], 0.95, 100, 0), None);
        assert_eq!(ratio_ci(&[], &pos, 0.95, 100, 0), None);
        let e = ratio_ci(&pos, &[4.0, f64::NAN], 0.95, 100, 0).unwrap();
        assert_eq!((e.point, e.n), (0.5, 1));
    }

    #[test]
    fn ratio_unbounded_when_denominator_can_be_non_positive() {
        // Median 1, but 2 of 5 samples are negative: about 32 % of resamples
        // have a negative median, so the upper bound is unbounded.
        let den = [-5.0, -5.0, 1.0, 1.0, 1.0];
        let e = ratio_ci(&[2.0, 2.0, 2.0], &den, CONFIDENCE, RESAMPLES, 1).unwrap();
        assert_eq!(e.point, 2.0);
        assert_eq!(e.hi, f64::MAX);
        assert!(e.lo <= 2.0 && e.lo.is_finite());
        let back: Estimate = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        // Still "at least 2x": the bounded end alone supports a verdict.
        let c = compare(&den, &[2.0, 2.0, 2.0], true, 0.05, CONFIDENCE, RESAMPLES, 1).unwrap();
        assert_eq!(c.ratio, e);
        assert_eq!(c.verdict, Verdict::Improved);
        // A numerator whose resampled median can be negative drags the lower
        // end below 1 instead: nothing significant.
        let e = ratio_ci(
            &[-5.0, -5.0, 2.0, 2.0, 2.0],
            &[1.0, 1.0],
            CONFIDENCE,
            RESAMPLES,
            1,
        )
        .unwrap();
        assert_eq!((e.point, e.lo), (2.0, -5.0));
    }

    #[test]
    fn paired_ratio_of_identical_pairs_is_exactly_one() {
        let pairs: Vec<(f64, f64)> = jittered(7.0, 0.3, 15, 14)
            .into_iter()
            .map(|x| (x, x))
            .collect();
        let e = paired_ratio_ci(&pairs, CONFIDENCE, RESAMPLES, 5).unwrap();
        assert_eq!((e.point, e.lo, e.hi, e.n), (1.0, 1.0, 1.0, 15));
        assert_eq!(e.width(), 0.0);
    }

    #[test]
    fn paired_ratio_drops_bad_pairs() {
        let pairs = [
            (2.0, 1.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
            (1.0, 0.0),
            (-1.0, 1.0),
            (4.0, 1.0),
        ];
        let e = paired_ratio_ci(&pairs, CONFIDENCE, RESAMPLES, 5).unwrap();
        assert_eq!((e.point, e.n), (3.0, 2));
        assert!(e.lo >= 2.0 && e.hi <= 4.0);
        assert_eq!(paired_ratio_ci(&[(0.0, 1.0)], 0.95, 10, 0), None);
        assert_eq!(paired_ratio_ci(&[], 0.95, 10, 0), None);
    }

    #[test]
    fn pairing_cancels_machine_drift() {
        // The machine slows from 0.7x to 1.3x over ten interleaved runs; the
        // candidate is 10 % faster (throughput) in every pair, +-0.5 % jitter.
        let drift: Vec<f64> = (0..10).map(|i| 0.7 + 0.6 * f64::from(i) / 9.0).collect();
        let jb = jittered(1.0, 0.005, 10, 21);
        let jc = jittered(1.0, 0.005, 10, 22);
        let base: Vec<f64> = (0..10).map(|i| 100.0 * drift[i] * jb[i]).collect();
        let cand: Vec<f64> = (0..10).map(|i| 110.0 * drift[i] * jc[i]).collect();
        let pairs: Vec<(f64, f64)> = base.iter().copied().zip(cand.iter().copied()).collect();

        let paired = compare_paired(&pairs, true, 0.05, CONFIDENCE, RESAMPLES, 3).unwrap();
        let unpaired = compare(&base, &cand, true, 0.05, CONFIDENCE, RESAMPLES, 3).unwrap();
        assert!(paired.significant, "{paired:?}");
        assert_eq!(paired.verdict, Verdict::Improved);
        assert!(
            paired.ratio.contains(1.1) && paired.ratio.width() < 0.02,
            "{paired:?}"
        );
        assert!(!unpaired.significant, "{unpaired:?}");
        assert_eq!(unpaired.verdict, Verdict::NoChange);
        assert!(unpaired.ratio.width() > 10.0 * paired.ratio.width());
    }

    #[test]
    fn latency_regression_and_improvement() {
        let base = jittered(50.0, 0.01, 10, 31);
        let slower = jittered(60.0, 0.01, 10, 32);
        let faster = jittered(40.0, 0.01, 10, 33);
        let c = cmp(&base, &slower, false);
        assert_eq!(c.verdict, Verdict::Regressed, "{c:?}");
        assert!(c.significant && (c.percent - 20.0).abs() < 3.0, "{c:?}");
        let c = cmp(&base, &faster, false);
        assert_eq!(c.verdict, Verdict::Improved, "{c:?}");
        assert!((c.percent + 20.0).abs() < 3.0, "{c:?}");
    }

    #[test]
    fn throughput_direction_is_flipped() {
        let base = jittered(1000.0, 0.01, 10, 41);
        let higher = jittered(1200.0, 0.01, 10, 42);
        let lower = jittered(800.0, 0.01, 10, 43);
        assert_eq!(cmp(&base, &higher, true).verdict, Verdict::Improved);
        assert_eq!(cmp(&base, &lower, true).verdict, Verdict::Regressed);
        // The same data read as latencies means the opposite.
        assert_eq!(cmp(&base, &higher, false).verdict, Verdict::Regressed);
        assert_eq!(cmp(&base, &lower, false).verdict, Verdict::Improved);
    }

    #[test]
    fn significant_but_within_noise_is_no_change() {
        let base = jittered(100.0, 0.001, 20, 51);
        let cand = jittered(103.0, 0.001, 20, 52);
        let c = cmp(&base, &cand, true);
        assert!(c.significant, "{c:?}");
        assert_eq!(c.verdict, Verdict::NoChange);
        // With a 1 % threshold the same 3 % change counts.
        let c = compare(&base, &cand, true, 0.01, CONFIDENCE, RESAMPLES, 7).unwrap();
        assert_eq!(c.verdict, Verdict::Improved);
    }

    #[test]
    fn percent_follows_the_point_estimate() {
        let c = cmp(&[2.0, 2.0, 2.0], &[3.0, 3.0, 3.0], true);
        assert_eq!(c.ratio.point, 1.5);
        assert_eq!(c.percent, 50.0);
        // Constant samples: a degenerate interval at 1.5, significant.
        assert_eq!((c.ratio.lo, c.ratio.hi), (1.5, 1.5));
        assert!(c.significant);
        assert_eq!(c.verdict, Verdict::Improved);
    }

    #[test]
    fn one_sample_is_never_significant() {
        let c = cmp(&[1.0], &[1000.0, 1000.0, 1000.0], false);
        assert!(!c.significant && c.verdict == Verdict::NoChange, "{c:?}");
        let c = cmp(&[1.0, 1.0, f64::NAN], &[1000.0], false);
        assert!(!c.significant && c.verdict == Verdict::NoChange, "{c:?}");
        let c = compare_paired(&[(1.0, 1000.0)], false, 0.05, 0.95, 100, 0).unwrap();
        assert_eq!(c.ratio.n, 1);
        assert!(!c.significant && c.verdict == Verdict::NoChange, "{c:?}");
    }

    #[test]
    fn tukey_flags_the_far_outlier_only() {
        let mut xs: Vec<f64> = (1..=10).map(f64::from).collect();
        xs.push(100.0);
        let f = tukey_fences(&xs).unwrap();
        assert_eq!(
            f,
            Fences {
                q1: 3.5,
                q3: 8.5,
                low_severe: -11.5,
                low_mild: -4.0,
                high_mild: 16.0,
                high_severe: 23.5
            }
        );
        let mut expected = vec![Outlier::NotAnOutlier; 10];
        expected.push(Outlier::HighSevere);
        assert_eq!(classify(&xs), expected);
        let counts = count_outliers(&xs);
        assert_eq!(
            counts,
            OutlierCounts {
                high_severe: 1,
                ..Default::default()
            }
        );
        assert_eq!(counts.total(), 1);
    }

    #[test]
    fn tukey_mild_and_low_outliers() {
        // [-10 or -15, 1..=10]: q1 2.5, q3 7.5, low fences -5 (mild) and
        // -12.5 (severe). [1..=10, 20]: q1 3.5, q3 8.5, high fences 16 and
        // 23.5.
        let mut xs: Vec<f64> = (1..=10).map(f64::from).collect();
        xs.insert(0, -10.0);
        assert_eq!(classify(&xs)[0], Outlier::LowMild);
        xs[0] = -15.0;
        assert_eq!(classify(&xs)[0], Outlier::LowSevere);
        let mut ys: Vec<f64> = (1..=10).map(f64::from).collect();
        ys.push(20.0);
        assert_eq!(classify(&ys)[10], Outlier::HighMild);
        assert_eq!(count_outliers(&ys).high_mild, 1);
        // A sample exactly on a fence is not beyond it: [1..=10, 16] has
        // high_mild = 8.5 + 7.5 = 16.
        let mut zs: Vec<f64> = (1..=10).map(f64::from).collect();
        zs.push(16.0);
        assert_eq!(tukey_fences(&zs).unwrap().high_mild, 16.0);
        assert_eq!(count_outliers(&zs).total(), 0);
    }

    #[test]
    fn tukey_ignores_non_finite_samples() {
        assert_eq!(tukey_fences(&[]), None);
        assert_eq!(tukey_fences(&[f64::NAN]), None);
        assert_eq!(
            classify(&[f64::NAN, f64::INFINITY]),
            vec![Outlier::NotAnOutlier; 2]
        );
        let mut xs: Vec<f64> = (1..=10).map(f64::from).collect();
        xs.push(100.0);
        let clean = xs.clone();
        xs.insert(3, f64::NAN);
        xs.push(f64::NEG_INFINITY);
        let got = classify(&xs);
        assert_eq!(got.len(), 13);
        assert_eq!(got[3], Outlier::NotAnOutlier);
        assert_eq!(got[12], Outlier::NotAnOutlier);
        assert_eq!(got[11], Outlier::HighSevere);
        assert_eq!(count_outliers(&xs), count_outliers(&clean));
    }

    #[test]
    fn serde_names_and_roundtrip() {
        assert_eq!(
            serde_json::to_string(&Outlier::HighSevere).unwrap(),
            "\"high_severe\""
        );
        assert_eq!(
            serde_json::to_string(&Outlier::NotAnOutlier).unwrap(),
            "\"not_an_outlier\""
        );
        assert_eq!(
            serde_json::to_string(&Verdict::NoChange).unwrap(),
            "\"no_change\""
        );
        let c = cmp(
            &jittered(5.0, 0.1, 12, 61),
            &jittered(6.0, 0.1, 12, 62),
            false,
        );
        let back: Change = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let f = tukey_fences(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        let back: Fences = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn full_size_bootstrap_runs() {
        // The default size end to end: 2000 resamples of 1000 samples.
        let xs = jittered(10.0, 0.2, 1000, 71);
        let ys = jittered(12.0, 0.2, 1000, 72);
        let e = ratio_ci(&ys, &xs, CONFIDENCE, RESAMPLES, 1).unwrap();
        assert!(e.contains(1.2) && e.width() < 0.1, "{e:?}");
    }

    fn samples() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(-1.0e6f64..1.0e6, 1..60)
    }

    fn positive() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(0.1f64..1.0e3, 1..40)
    }

    fn pairs() -> impl Strategy<Value = Vec<(f64, f64)>> {
        prop::collection::vec((0.1f64..1.0e3, 0.1f64..1.0e3), 1..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_median_matches_stats_percentile(v in samples()) {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            prop_assert_eq!(median(&v), Some(stats::percentile(&s, 50.0)));
            let mut buf = v.clone();
            prop_assert_eq!(Some(median_in_place(&mut buf)), median(&v));
        }

        #[test]
        fn prop_counting_median_matches_quickselect(v in samples(), seed in any::<u64>()) {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            let mut counts = Vec::new();
            let (mut a, mut b) = (Indices::new(seed), Indices::new(seed));
            for _ in 0..20 {
                let got = resampled_median(&s, &mut a, &mut counts);
                let mut drawn: Vec<f64> = (0..s.len()).map(|_| s[b.below(s.len())]).collect();
                prop_assert_eq!(got.to_bits(), median_in_place(&mut drawn).to_bits());
            }
        }

        #[test]
        fn prop_interval_contains_point(v in samples(), seed in any::<u64>(), c in 0.0f64..=1.0) {
            let e = median_ci(&v, c, 200, seed).unwrap();
            prop_assert!(e.lo <= e.point && e.point <= e.hi, "{:?}", e);
            prop_assert!(e.contains(e.point));
            prop_assert!(e.width() >= 0.0);
            prop_assert_eq!(e.n, v.len());
            prop_assert_eq!(e.confidence, c);
            prop_assert_eq!(Some(e.point), median(&v));
            // The interval stays within the range of the samples.
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(min <= e.lo && e.hi <= max);
        }

        #[test]
        fn prop_constant_samples_are_degenerate(x in -1.0e9f64..1.0e9, n in 1usize..50, seed in any::<u64>()) {
            let e = median_ci(&vec![x; n], CONFIDENCE, 200, seed).unwrap();
            prop_assert_eq!((e.point, e.lo, e.hi, e.n), (x, x, x, n));
        }

        #[test]
        fn prop_order_invariant(
            v in samples(),
            w in positive(),
            p in pairs(),
            seed in any::<u64>(),
            shuffle in any::<u64>(),
        ) {
            prop_assert_eq!(
                median_ci(&v, CONFIDENCE, 200, seed),
                median_ci(&shuffled(&v, shuffle), CONFIDENCE, 200, seed)
            );
            let u: Vec<f64> = v.iter().map(|x| x.abs() + 1.0).collect();
            prop_assert_eq!(
                ratio_ci(&u, &w, CONFIDENCE, 200, seed),
                ratio_ci(&shuffled(&u, shuffle), &shuffled(&w, !shuffle), CONFIDENCE, 200, seed)
            );
            prop_assert_eq!(
                paired_ratio_ci(&p, CONFIDENCE, 200, seed),
                paired_ratio_ci(&shuffled(&p, shuffle), CONFIDENCE, 200, seed)
            );
            prop_assert_eq!(
                tukey_fences(&v),
                tukey_fences(&shuffled(&v, shuffle))
            );
        }

        #[test]
        fn prop_non_finite_samples_are_ignored(v in samples(), k in 1usize..5, seed in any::<u64>()) {
            let mut w = v.clone();
            w.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY].iter().cycle().take(k));
            let w = shuffled(&w, seed);
            prop_assert_eq!(median_ci(&v, CONFIDENCE, 100, seed), median_ci(&w, CONFIDENCE, 100, seed));
            prop_assert_eq!(count_outliers(&v), count_outliers(&w));
        }

        #[test]
        fn prop_deterministic(v in positive(), w in positive(), seed in any::<u64>()) {
            let a = compare(&v, &w, true, 0.05, CONFIDENCE, 200, seed).unwrap();
            let b = compare(&v, &w, true, 0.05, CONFIDENCE, 200, seed).unwrap();
            prop_assert_eq!(a.ratio.point.to_bits(), b.ratio.point.to_bits());
            prop_assert_eq!(a.ratio.lo.to_bits(), b.ratio.lo.to_bits());
            prop_assert_eq!(a.ratio.hi.to_bits(), b.ratio.hi.to_bits());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn prop_ratio_scale_invariant(
            num in positive(),
            den in positive(),
            k in 1.0e-3f64..1.0e3,
            seed in any::<u64>(),
        ) {
            let e = ratio_ci(&num, &den, CONFIDENCE, 200, seed).unwrap();
            let scaled: Vec<f64> = num.iter().map(|x| x * k).collect();
            let s = ratio_ci(&scaled, &den, CONFIDENCE, 200, seed).unwrap();
            prop_assert!(close(s.point, e.point * k, 1e-9), "{:?} {:?}", e, s);
            prop_assert!(close(s.lo, e.lo * k, 1e-9), "{:?} {:?}", e, s);
            prop_assert!(close(s.hi, e.hi * k, 1e-9), "{:?} {:?}", e, s);
            prop_assert_eq!(s.n, e.n);
        }

        #[test]
        fn prop_paired_ratio_scale_invariant(p in pairs(), k in 1.0e-3f64..1.0e3, seed in any::<u64>()) {
            let e = paired_ratio_ci(&p, CONFIDENCE, 200, seed).unwrap();
            let scaled: Vec<(f64, f64)> = p.iter().map(|&(a, b)| (a * k, b)).collect();
            let s = paired_ratio_ci(&scaled, CONFIDENCE, 200, seed).unwrap();
            prop_assert!(close(s.point, e.point * k, 1e-9), "{:?} {:?}", e, s);
            prop_assert!(close(s.lo, e.lo * k, 1e-9), "{:?} {:?}", e, s);
            prop_assert!(close(s.hi, e.hi * k, 1e-9), "{:?} {:?}", e, s);
            prop_assert!(e.lo <= e.point && e.point <= e.hi);
        }

        #[test]
        fn prop_same_distribution_is_no_change(
            center in 1.0f64..1.0e4,
            jitter in 0.0f64..=0.02,
            data_seed in any::<u64>(),
            seed in any::<u64>(),
            higher_is_better in any::<bool>(),
        ) {
            let base = jittered(center, jitter, 10, data_seed);
            let cand = jittered(center, jitter, 10, data_seed ^ 0x5555);
            let c = compare(&base, &cand, higher_is_better, 0.05, CONFIDENCE, RESAMPLES, seed).unwrap();
            prop_assert_eq!(c.verdict, Verdict::NoChange, "{:?}", c);
            let pairs: Vec<(f64, f64)> = base.iter().copied().zip(cand).collect();
            let c = compare_paired(&pairs, higher_is_better, 0.05, CONFIDENCE, RESAMPLES, seed).unwrap();
            prop_assert_eq!(c.verdict, Verdict::NoChange, "{:?}", c);
        }

        #[test]
        fn prop_too_few_samples_never_significant(
            x in 0.1f64..1.0e3,
            other in positive(),
            seed in any::<u64>(),
            higher_is_better in any::<bool>(),
        ) {
            for c in [
                compare(&[x], &other, higher_is_better, 0.0, CONFIDENCE, 200, seed).unwrap(),
                compare(&other, &[x], higher_is_better, 0.0, CONFIDENCE, 200, seed).unwrap(),
                compare_paired(&[(x, other[0])], higher_is_better, 0.0, CONFIDENCE, 200, seed).unwrap(),
            ] {
                prop_assert_eq!(c.ratio.n, 1);
                prop_assert!(!c.significant, "{:?}", c);
                prop_assert_eq!(c.verdict, Verdict::NoChange);
            }
        }

        #[test]
        fn prop_verdict_is_consistent(
            base in positive(),
            cand in positive(),
            noise in 0.0f64..0.5,
            higher_is_better in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let c = compare(&base, &cand, higher_is_better, noise, CONFIDENCE, 200, seed).unwrap();
            prop_assert_eq!(c.significant, c.ratio.n >= MIN_SAMPLES && !c.ratio.contains(1.0));
            prop_assert_eq!(c.percent, (c.ratio.point - 1.0) * 100.0);
            if c.verdict != Verdict::NoChange {
                prop_assert!(c.significant);
                prop_assert!((c.ratio.point - 1.0).abs() > noise);
                let better = (c.ratio.point > 1.0) == higher_is_better;
                prop_assert_eq!(c.verdict == Verdict::Improved, better);
            }
            // Swapping the sides inverts the ratio.
            let r = compare(&cand, &base, higher_is_better, noise, CONFIDENCE, 200, seed).unwrap();
            prop_assert!(close(r.ratio.point, 1.0 / c.ratio.point, 1e-12));
        }

        #[test]
        fn prop_counts_match_classify(v in samples(), extra in prop::collection::vec(-1.0e8f64..1.0e8, 0..5)) {
            let mut xs = v.clone();
            xs.extend(extra);
            let classes = classify(&xs);
            prop_assert_eq!(classes.len(), xs.len());
            let c = count_outliers(&xs);
            prop_assert_eq!(c.total(), classes.iter().filter(|o| o.is_outlier()).count());
            let n = |k: Outlier| classes.iter().filter(|&&o| o == k).count();
            prop_assert_eq!(c.low_severe, n(Outlier::LowSevere));
            prop_assert_eq!(c.low_mild, n(Outlier::LowMild));
            prop_assert_eq!(c.high_mild, n(Outlier::HighMild));
            prop_assert_eq!(c.high_severe, n(Outlier::HighSevere));
            // Fences are ordered, and samples between the quartiles are never
            // outliers.
            let f = tukey_fences(&xs).unwrap();
            prop_assert!(f.low_severe <= f.low_mild && f.low_mild <= f.q1);
            prop_assert!(f.q1 <= f.q3 && f.q3 <= f.high_mild && f.high_mild <= f.high_severe);
            for (x, o) in xs.iter().zip(&classes) {
                if f.q1 <= *x && *x <= f.q3 {
                    prop_assert_eq!(*o, Outlier::NotAnOutlier);
                }
            }
        }
    }
}
