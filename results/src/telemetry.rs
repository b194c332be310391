//! Telemetry records: the leak check's verdict, energy, GPU samples.

use serde::{Deserialize, Serialize};

/// Units of work (measured iterations, or a closed loop's requests) that
/// the host's `settled_check` needs after warm-up before it draws a verdict (the
/// seeds' M6 leak test runs 100 iterations).
pub const MIN_ITERATIONS: usize = 100;
/// Slope, MB/hour, up to which RSS growth is acceptable.
pub const ACCEPTABLE_MB_PER_HOUR: f64 = 10.0;
/// The report's reason when no GPU telemetry is available.
pub const UNAVAILABLE: &str = "n/a: no NVIDIA GPU (NVML not loadable)";
/// The shortest window whose energy is turned into watts and joules per
/// token. Counters advance in steps: RAPL's every millisecond or so, an
/// NVML board's on the driver's own schedule (tens to a hundred ms on
/// many boards, and NVML documents none), so over a few milliseconds the
/// reading is mostly quantisation. The joules read are still recorded.
pub const MIN_WINDOW_S: f64 = 1.0;

/// The verdict of a [`LeakCheck`]. Ordered `NoLeak < Leak < Insufficient`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakVerdict {
    /// Slope at most the acceptable slope, growth below
    /// the growth floor, or growth not sustained over both halves.
    NoLeak,
    /// Sustained growth above both thresholds.
    Leak,
    /// Fewer than the minimum number of points, or no time elapsed.
    Insufficient,
}

impl LeakVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakVerdict::NoLeak => "no leak",
            LeakVerdict::Leak => "leak",
            LeakVerdict::Insufficient => "insufficient data",
        }
    }
}

impl std::fmt::Display for LeakVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of the host's `telemetry::leak::leak_check`. Every figure is finite (0 when it cannot be
/// computed, with the verdict then [`LeakVerdict::Insufficient`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeakCheck {
    /// Points used (those with a finite time).
    pub samples: usize,
    /// Seconds from the first point to the last.
    pub window_s: f64,
    /// Theil–Sen slope of RSS over the whole window, MB (MiB) per hour.
    pub slope_mb_per_hour: f64,
    /// Growth the slope predicts over the window (`slope × window`), MB.
    pub growth_mb: f64,
    /// Theil–Sen slope of the earlier half of the points, MB/hour.
    pub first_half_mb_per_hour: f64,
    /// Theil–Sen slope of the later half of the points, MB/hour.
    pub second_half_mb_per_hour: f64,
    /// Last RSS minus first RSS, MB (for the reader; not robust, not used
    /// by the verdict).
    pub observed_growth_mb: f64,
    pub verdict: LeakVerdict,
    /// Why no verdict was drawn, when the host's `settled_check` withheld it (e.g.
    /// `too short for a leak verdict: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl LeakCheck {
    /// One line for a report, e.g. `no leak: +0.4 MB/h over 12.3 s (120
    /// points, predicted growth +0.0 MB)`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {:+.1} MB/h over {:.1} s ({} points, predicted growth {:+.1} MB)",
            self.verdict, self.slope_mb_per_hour, self.window_s, self.samples, self.growth_mb
        )
    }
}

/// Mean power over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Power {
    pub watts: f64,
    pub cpu_watts: Option<f64>,
    pub gpu_watts: Option<f64>,
    pub seconds: f64,
    /// The energy meter's source of the measurement.
    pub source: String,
}

/// Energy of a cell or run, for result files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyRecord {
    /// The energy meter's source: `rapl`, `nvml` or `rapl+nvml`.
    pub source: String,
    /// Everything the counters saw, idle draw included.
    pub joules: f64,
    pub seconds: f64,
    pub mean_watts: Option<f64>,
    /// The run's idle baseline (the host's `idle_baseline`), when measured.
    pub idle_watts: Option<f64>,
    /// `joules - idle_watts × seconds`, clamped at 0: a run that drew no
    /// more than idle (within noise) cost no measurable extra energy.
    pub joules_above_idle: Option<f64>,
    /// `joules / output tokens` (idle draw included).
    pub joules_per_output_token: Option<f64>,
    /// `joules_above_idle / output tokens`: what generating a token cost.
    pub joules_above_idle_per_output_token: Option<f64>,
    /// Why the derived figures are missing although joules were read:
    /// the window was shorter than the host's `MIN_WINDOW_S` (1 s).
    #[serde(default)]
    pub note: Option<String>,
}

/// One reading of one device, in NVML's units. `None`: the query is not
/// supported or failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// Seconds since the sampler started.
    pub t_s: f64,
    /// NVML device index.
    pub device: u32,
    pub memory_used_bytes: Option<u64>,
    pub power_mw: Option<u32>,
    /// Energy counter since the driver was loaded (Volta and newer), mJ.
    pub energy_mj: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
}

/// What a device is, read once by the host's GPU probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub memory_total_bytes: Option<u64>,
}

/// Builds an [`EnergyRecord`]. Derived figures are `None` when an input
/// makes them meaningless: no seconds, no idle baseline, no tokens, a
/// non-finite value (never written as NaN), or a window shorter than
/// [`MIN_WINDOW_S`] (then `note` says so).
pub fn energy_record(
    source: &str,
    joules: f64,
    seconds: f64,
    idle_watts: Option<f64>,
    output_tokens: u64,
) -> EnergyRecord {
    let finite = |v: f64| v.is_finite().then_some(v);
    let seconds_ok = finite(seconds).filter(|&s| s > 0.0);
    let short = seconds_ok.is_some_and(|s| s < MIN_WINDOW_S);
    let note = short.then(|| {
        format!(
            "{:.3} s is shorter than the {MIN_WINDOW_S} s an energy figure needs ({source} counters advance in steps): joules recorded, not derived",
            seconds
        )
    });
    let derived = seconds_ok.filter(|_| !short);
    let idle_watts = idle_watts.and_then(finite).filter(|&w| w >= 0.0);
    let joules_above_idle = match (finite(joules), idle_watts, derived) {
        (Some(j), Some(w), Some(s)) => finite((j - w * s).max(0.0)),
        _ => None,
    };
    let per_token = |j: Option<f64>| {
        j.filter(|_| output_tokens > 0 && !short)
            .and_then(|j| finite(j / output_tokens as f64))
    };
    EnergyRecord {
        source: source.to_string(),
        joules: finite(joules).unwrap_or(0.0),
        seconds: seconds_ok.unwrap_or(0.0),
        mean_watts: derived.and_then(|s| finite(joules / s)),
        idle_watts,
        joules_above_idle,
        joules_per_output_token: per_token(finite(joules)),
        joules_above_idle_per_output_token: per_token(joules_above_idle),
        note,
    }
}
