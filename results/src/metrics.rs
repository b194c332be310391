//! A cell's figures: closed-loop latency and throughput distributions,
//! and the open-loop (serving) figures.

use engine_matrix_format::open_loop::{Arrival, Load, Slo};
use engine_matrix_stats::stats::Distribution;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellMetrics {
    /// Measured iterations (warmups excluded).
    pub iterations: usize,
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    /// Failure reason -> count.
    pub failure_reasons: BTreeMap<String, usize>,
    /// Completed requests whose generated count differs from the
    /// requested output length.
    pub output_length_mismatches: usize,
    /// Generated token ids outside the model's vocabulary.
    pub out_of_vocab_tokens: usize,
    /// Requests whose token count seen by the host disagrees with the
    /// engine's own count.
    pub token_count_disagreements: usize,
    pub duration_s: f64,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft_ms: Option<Distribution>,
    pub tpot_ms: Option<Distribution>,
    pub itl_ms: Option<Distribution>,
    pub e2el_ms: Option<Distribution>,
    /// Engine-reported: submit → start of prefill.
    pub engine_queue_ms: Option<Distribution>,
    /// Engine-reported duration of the prefill step.
    pub engine_prefill_ms: Option<Distribution>,
    /// The same requests under other tools' metric definitions.
    #[serde(default)]
    pub aliases: MetricAliases,
    /// One figure set per measured iteration, in order.
    #[serde(default)]
    pub per_iteration: Vec<IterationFigures>,
    /// Open-loop figures of a `serving` cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingMetrics>,
    /// The measured completed requests' prompt lengths (tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_lengths: Option<Distribution>,
    /// The measured completed requests' output lengths (tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_lengths: Option<Distribution>,
    /// Histograms of the same lengths (at most 20 bins), for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_histogram: Option<engine_matrix_stats::stats::Histogram>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_histogram: Option<engine_matrix_stats::stats::Histogram>,
    /// Prompt tokens of the measured completed requests that the engine
    /// (or server) took from a prefix cache, and their share of all their
    /// prompt tokens (the KV-cache hit rate); `None` when no request's
    /// engine said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hit_rate: Option<f64>,
    /// Multi-turn: TTFT, E2EL and prompt length by turn index (0-based),
    /// over the measured completed requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_turn: Vec<TurnFigures>,
    /// Where the requests came from (dataset, file, pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRecord>,
    /// The server's own figures, scraped from its Prometheus endpoint
    /// during the cell (an http engine with `metrics_url`); the series is
    /// in `results.jsonl` only, `summary.json` has the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::server_metrics::ServerMetricsRecord>,
}

/// Other tools' definitions of inter-token latency and TPOT, per request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricAliases {
    /// AIPerf / GenAI-Perf "inter token latency": (E2EL − TTFT) / (n − 1),
    /// which is vLLM's TPOT.
    pub aiperf_itl_ms: Option<Distribution>,
    /// guidellm "time per output token": E2EL / n (TTFT included).
    pub guidellm_tpot_ms: Option<Distribution>,
    /// llmperf "inter_token_latency": E2EL / n (TTFT included).
    pub llmperf_itl_ms: Option<Distribution>,
}

/// The figures of one measured iteration (the medians are over that
/// iteration's requests; ITL over its pooled gaps).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IterationFigures {
    pub index: u32,
    pub duration_s: f64,
    pub completed: usize,
    pub output_tokens: u64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub ttft_p50_ms: Option<f64>,
    pub tpot_p50_ms: Option<f64>,
    pub itl_p50_ms: Option<f64>,
    pub e2el_p50_ms: Option<f64>,
}

/// One second of a cell, by scheduled time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Start, s from the first scheduled arrival.
    pub t_s: f64,
    pub scheduled: usize,
    pub completed: usize,
    pub failed: usize,
    pub ttft_p50_ms: Option<f64>,
    pub e2el_p50_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpikeFigures {
    pub start_s: f64,
    pub end_s: f64,
    pub baseline_ttft_p50_ms: Option<f64>,
    pub threshold_ms: Option<f64>,
    pub peak_window_ttft_p50_ms: Option<f64>,
    /// From the end of the spike; `None`: not recovered within the cell.
    pub recovery_s: Option<f64>,
}

/// One rate a sweep tried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepStep {
    pub rate: f64,
    pub sent: usize,
    pub completed: usize,
    pub good: usize,
    pub achieved_rate: f64,
    pub goodput_fraction: f64,
    pub ttft_p99_ms: Option<f64>,
    pub tpot_p99_ms: Option<f64>,
    pub e2el_p99_ms: Option<f64>,
    /// How fast latency grew during the segment (s per s; see
    /// the host's `serving::MAX_GROWTH`): the queue of a server that cannot keep up.
    #[serde(default)]
    pub queue_growth: f64,
    pub passed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepFigures {
    pub steps: Vec<SweepStep>,
    pub max_sustainable_rate: Option<f64>,
    /// The pass rule, in words.
    pub criterion: String,
}

/// `metrics.serving` of a serving cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServingMetrics {
    pub load: Load,
    pub arrival: Arrival,
    /// The rate asked for (after `sustainable` is resolved); `None`: inf.
    pub request_rate: Option<f64>,
    /// Scheduled requests over the schedule's span (measured, not asked).
    pub offered_rate: Option<f64>,
    pub max_concurrency: Option<u32>,
    pub scheduled: usize,
    pub completed: usize,
    pub failed: usize,
    /// Completed requests per second of the measured span.
    pub achieved_rate: f64,
    pub ttft_from_schedule_ms: Option<Distribution>,
    pub e2el_from_schedule_ms: Option<Distribution>,
    /// Actual send time − scheduled time.
    pub send_lag_ms: Option<Distribution>,
    pub slo: Slo,
    /// Good requests (`None` without an SLO).
    pub good: Option<usize>,
    pub goodput: Option<f64>,
    pub goodput_fraction: Option<f64>,
    /// `timeout`, `http_error`, `connect`, `malformed_stream`,
    /// `disconnect`, `server_error`, `engine` -> count (the exact
    /// messages are in `metrics.failure_reasons`).
    pub failures_by_kind: BTreeMap<String, usize>,
    pub windows: Vec<Window>,
    pub spike: Option<SpikeFigures>,
    pub sweep: Option<SweepFigures>,
    /// How latency drifted over the cell (the seeds' peak-load
    /// degradation); `None` for a sweep (its windows mix rates) or fewer
    /// than [`Degradation::MIN_WINDOWS`] windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degradation: Option<Degradation>,
    /// A cell merged from several load generators (`run --load-shard`,
    /// then `merge`): each generator's share and lag, and whether their
    /// clocks agree well enough for the merged arrival pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generators: Option<LoadGenerators>,
}

/// The load generators of a merged serving cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadGenerators {
    pub count: u32,
    /// Generators whose part is missing (`merge --partial`).
    pub missing: Vec<u32>,
    pub generators: Vec<GeneratorFigures>,
    /// A bound on how far apart the generators' clocks are (ms); `None`:
    /// unknown.
    pub clock_error_ms: Option<f64>,
    /// The most `clock_error_ms` may be for the merged arrival pattern to
    /// stand for the schedule (`merge --max-clock-error-ms`).
    pub clock_bound_ms: f64,
    /// Why the merged cell's load may not be the schedule's, in words
    /// (clock error unknown or too large, a saturated generator, a missing
    /// one); empty when nothing is wrong.
    pub warnings: Vec<String>,
}

/// One generator's share of a merged serving cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorFigures {
    pub index: u32,
    pub host: String,
    /// The generator's cell status (`ok`, `failed`, ...).
    pub status: String,
    pub sent: usize,
    pub completed: usize,
    pub failed: usize,
    /// From the scheduled time to the request leaving the generator: the
    /// generator's own lag plus its client's wait for a connection.
    pub send_lag_ms: Option<Distribution>,
    /// Share of its requests that left more than [`GeneratorFigures::LATE_MS`] late.
    pub late_fraction: f64,
    /// Its p99 send lag exceeds [`GeneratorFigures::SATURATED_P99_MS`]:
    /// it could not keep up with its share of the schedule.
    pub saturated: bool,
    /// Its clock, as its system reported it.
    pub clock: crate::cell::ClockStatus,
}

impl GeneratorFigures {
    /// A request this late left late.
    pub const LATE_MS: f64 = 5.0;
    /// A generator that keeps up sends within a few ms of the schedule;
    /// one whose backlog grows falls far past this.
    pub const SATURATED_P99_MS: f64 = 25.0;
}

/// Latency drift over a serving cell: Theil–Sen slopes of the 1-second
/// windows' median TTFT and E2EL (from the scheduled send time) against
/// time, so a few bad windows do not make a trend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    /// Windows with a latency, and the minutes they span.
    pub windows: usize,
    pub span_min: f64,
    pub ttft_p50_ms_per_min: Option<f64>,
    pub e2el_p50_ms_per_min: Option<f64>,
    /// `degrading`, `steady` or `insufficient` (see the host's
    /// `serving::degradation`), with the figures in words.
    #[serde(default)]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Degradation {
    /// Fewest windows (seconds) a slope is drawn from.
    pub const MIN_WINDOWS: usize = 10;
}

/// What a cell's workload was (`engine-matrix-workloads` builds it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// `random`, `prefix`, `sharegpt` or `prompts`.
    pub dataset: String,
    /// The data file read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Entries the file held (ShareGPT conversations, prompts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<usize>,
    /// Distinct prompts in the pool requests cycle through (`None`: each
    /// request its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<usize>,
    /// Entries passed over by the length filters while the pool was
    /// filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<usize>,
    /// Said when the file ended inside an entry (a truncated download or
    /// package): how many complete entries were used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

/// One turn index's requests of a multi-turn cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TurnFigures {
    pub turn: u32,
    pub requests: usize,
    pub input_lengths: Option<Distribution>,
    pub ttft_ms: Option<Distribution>,
    pub e2el_ms: Option<Distribution>,
}
