//! One cell's result: `results.jsonl` lines and `summary.json`'s `cells`.

use crate::metrics::CellMetrics;
use crate::run::Efficiency;
use crate::telemetry::{EnergyRecord, GpuSample, LeakCheck};
use engine_matrix_format::Cell;
use serde::{Deserialize, Serialize};

/// Version of the layout of `summary.json` and `results.jsonl`.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Unsupported,
    Failed,
}

impl Status {
    /// As written in results (`ok`, `unsupported`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unsupported => "unsupported",
            Status::Failed => "failed",
        }
    }
}

/// Memory readings of a cell, bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryRecord {
    /// RSS growth from loading the model (measured when this cell loaded
    /// it, else carried from the cell that did).
    pub load_bytes: Option<i64>,
    pub load_time_ms: Option<f64>,
    /// Whether this cell loaded the model itself.
    pub loaded_here: bool,
    pub rss_start_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    /// Peak RSS during the cell (the process peak when it cannot be reset).
    pub peak_rss_bytes: Option<u64>,
    pub peak_is_per_cell: bool,
    pub weight_bytes: u64,
    pub kv_cache_peak_bytes: u64,
    pub kv_cache_reserved_bytes: u64,
    /// Bytes the engine's prefix cache held at the end of the cell (also
    /// in `kv_cache_reserved_bytes`); 0 without one.
    #[serde(default)]
    pub prefix_cache_bytes: u64,
    /// Highest RSS the sleeping sampler saw during the cell.
    #[serde(default)]
    pub sampled_peak_rss_bytes: Option<u64>,
    /// RSS slope after warm-up, with its verdict (`insufficient`, with a
    /// note, for a cell too short for one); none for serving cells.
    #[serde(default)]
    pub leak: Option<LeakCheck>,
    /// Where the leak check's points come from: `iterations` (RSS after
    /// each measured iteration) or `sampler` (the 50 ms series, for closed
    /// loops with fewer than 100 iterations, judged per request).
    #[serde(default)]
    pub leak_source: Option<String>,
    /// NVIDIA GPUs during the cell (None: no GPU, `n/a`).
    #[serde(default)]
    pub gpu: Option<GpuRecord>,
    /// Energy during the cell (None: no readable counter, `n/a`).
    #[serde(default)]
    pub energy: Option<EnergyRecord>,
    /// The pressure child that ran beside the engine (a `pressure` cell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<PressureRecord>,
}

/// What the pressure child did during a cell: proof the pressure was
/// there, and how much.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PressureRecord {
    /// Busy threads and memory asked for.
    pub cpu_threads: u32,
    pub memory_bytes: u64,
    /// The child's RSS once its memory was touched.
    pub resident_bytes: Option<u64>,
    /// CPU seconds the child used in all (its threads spin: about
    /// `cpu_threads × seconds` when the machine had the cores for them).
    pub cpu_seconds: Option<f64>,
    /// How long it ran beside the engine.
    pub seconds: f64,
    /// Said when it ended early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// GPU readings of a cell, over all devices and samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GpuRecord {
    pub samples: usize,
    /// Devices sampled (NVML lists every GPU of the machine).
    #[serde(default)]
    pub devices: usize,
    /// The fullest device's peak memory used (the figure that decides
    /// whether a model fits), dropped samples included.
    pub peak_memory_used_bytes: Option<u64>,
    /// Board power summed over the devices: each device's mean over the
    /// cell, added up (so it is comparable with the energy's mean watts).
    pub mean_power_w: Option<f64>,
    pub max_temperature_c: Option<u32>,
    /// Means over every device and sample.
    pub mean_sm_clock_mhz: Option<f64>,
    pub mean_mem_clock_mhz: Option<f64>,
}

impl GpuRecord {
    pub fn from_samples(s: &[GpuSample], peaks: &[Option<u64>]) -> Option<Self> {
        if s.is_empty() {
            return None;
        }
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let mut devices: Vec<u32> = s.iter().map(|x| x.device).collect();
        devices.sort_unstable();
        devices.dedup();
        let mean_power_w = devices
            .iter()
            .filter_map(|&d| {
                mean(
                    s.iter()
                        .filter(|x| x.device == d)
                        .filter_map(|x| x.power_mw)
                        .map(|p| p as f64 / 1e3)
                        .collect(),
                )
            })
            .reduce(|a, b| a + b);
        Some(GpuRecord {
            samples: s.len(),
            devices: devices.len(),
            peak_memory_used_bytes: peaks
                .iter()
                .flatten()
                .copied()
                .chain(s.iter().filter_map(|x| x.memory_used_bytes))
                .max(),
            mean_power_w,
            max_temperature_c: s.iter().filter_map(|x| x.temperature_c).max(),
            mean_sm_clock_mhz: mean(
                s.iter()
                    .filter_map(|x| x.sm_clock_mhz)
                    .map(f64::from)
                    .collect(),
            ),
            mean_mem_clock_mhz: mean(
                s.iter()
                    .filter_map(|x| x.mem_clock_mhz)
                    .map(f64::from)
                    .collect(),
            ),
        })
    }
}

/// The summary of one cell (a line of `results.jsonl` adds raw data).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    pub cell: Cell,
    pub plugin: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: String,
    pub wall_s: f64,
    pub memory: Option<MemoryRecord>,
    pub metrics: Option<CellMetrics>,
    /// Which repetition of the matrix this is (`run --repeat N`), from 0.
    #[serde(default)]
    pub repeat: u32,
    /// Roofline efficiency against the host's calibrated limits.
    #[serde(default)]
    pub efficiency: Option<Efficiency>,
    /// Perplexity and agreement with the reference engine, when the
    /// matrix asks for quality (the same record on every cell of one
    /// engine, model, dtype and quantization).
    #[serde(default)]
    pub quality: Option<crate::quality::QualityRecord>,
    /// What the engine chose for the loaded model (its kernels, and how it
    /// chose them), as the engine describes it.
    #[serde(default)]
    pub model_details: Option<serde_json::Value>,
    /// A breaking-point search's verdict on this level (a cell of a
    /// scenario with `breaking_point:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<Stability>,
    /// A retrieval cell's figures (recall, QPS, search latency, the
    /// index's build); `metrics` is then `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<crate::retrieval::RetrievalMetrics>,
    /// A load generator's part of a serving cell (`run --load-shard
    /// I/N`): what `merge` needs to put its requests on a common clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorRecord>,
}

/// One load generator's part of a serving cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GeneratorRecord {
    /// From 0, of `count`.
    pub index: u32,
    pub count: u32,
    pub host: String,
    /// The generator's wall-clock time (ns since the Unix epoch) at the
    /// cell's epoch: a request time plus this is the time on the
    /// generator's clock.
    pub epoch_unix_ns: u64,
    /// How long the reading of the wall clock and the monotonic clock
    /// took (ns): the uncertainty of `epoch_unix_ns` on this machine.
    pub epoch_pairing_ns: u64,
    /// The shared start of each measured iteration (ns since the Unix
    /// epoch), on the common clock.
    pub starts_unix_ns: Vec<u64>,
    /// This generator's share of the cell's `max_concurrency`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    pub clock: ClockStatus,
}

/// What the system says about its wall clock (Linux: `adjtimex(2)`, read
/// only). `max_error_us` is the kernel's bound on the clock's error
/// against true time, as the NTP daemon keeps it; it is meaningful only
/// while the clock is synchronized.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClockStatus {
    /// `adjtimex`, or `none` where the system cannot say.
    pub source: String,
    /// `None`: unknown.
    pub synchronized: Option<bool>,
    /// The offset the kernel is still correcting (µs).
    pub offset_us: Option<f64>,
    pub max_error_us: Option<u64>,
    pub est_error_us: Option<u64>,
    /// The kernel's boot id: generators with the same one share one
    /// clock, so their relative error is that of reading it.
    pub boot_id: Option<String>,
}

/// Whether a concurrency level stayed within its scenario's
/// `breaking_point:` bounds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stability {
    pub stable: bool,
    /// The figures judged, in words, e.g. `error rate 0.0%, TTFT p99
    /// 2411 ms > 2000 ms`.
    pub why: String,
}

/// A request's raw timeline, ns since the cell's epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawRequest {
    pub id: u64,
    pub iteration: u32,
    pub warmup: bool,
    pub prompt_tokens: u32,
    pub max_new_tokens: u32,
    pub submit_ns: u64,
    /// Open loop: when the request was due (latency from the schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_ns: Option<u64>,
    pub token_ns: Vec<u64>,
    pub tokens: Vec<u32>,
    pub end_ns: Option<u64>,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
    pub engine_generated_tokens: Option<u32>,
    pub engine_queue_us: Option<u64>,
    pub engine_prefill_us: Option<u64>,
    pub engine_decode_us: Option<u64>,
    pub engine_decode_steps: Option<u32>,
    /// Multi-turn: the session and the turn (0-based) this request is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
    /// Prompt tokens the engine (or server) took from a prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<u32>,
    /// Open loop: the request's position in its iteration's schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<u64>,
}

/// A line of `results.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResultLine {
    pub schema_version: u32,
    #[serde(flatten)]
    pub result: CellResult,
    pub iterations: Vec<IterationSpan>,
    pub requests: Vec<RawRequest>,
}

/// One iteration's span, ns since the cell's epoch.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct IterationSpan {
    pub index: u32,
    pub warmup: bool,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The process's RSS when the iteration ended (leak detection).
    #[serde(default)]
    pub rss_bytes: Option<u64>,
}
