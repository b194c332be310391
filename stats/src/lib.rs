//! Pure statistics over measurement samples, in the style of criterion.rs's
//! `stats` crate: no I/O, no clock, no knowledge of engines or matrices,
//! so every function is a property-tested map from samples to figures.
//!
//! * [`stats`]: a sample's [`stats::Distribution`] (count, mean, population
//!   std, min, max, numpy-linear percentiles, spike rate);
//! * [`resample`]: medians with bootstrap confidence intervals, ratios of
//!   medians (independent or paired), Tukey's outlier fences, and
//!   regression verdicts that need both significance and a noise
//!   threshold;
//! * [`trend`]: the Theil–Sen slope (robust trends: leaks, degradation);
//! * [`rng`]: SplitMix64, the seeded stream the bootstrap draws from (the
//!   host's generators share it, so a seed means the same everywhere).

pub mod quality;
pub mod resample;
pub mod rng;
pub mod stats;
pub mod trend;
