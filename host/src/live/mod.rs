//! The live view of a run (`engine-matrix run --dashboard`): what a cell
//! is doing while it runs, the run's progress, and alerts.
//!
//! Two halves, on either side of the worker protocol:
//!
//! * [`ticker`] runs in the process that measures (the worker, or the host
//!   with `--in-process`): once a second it takes a [`Sample`] of the
//!   cell's collector (tokens, first-token times and gaps that arrived
//!   since the last look), this process's RSS and the GPUs' memory. It
//!   starts only when the run has a dashboard, so a run without one does
//!   exactly what it did before.
//! * [`hub`] runs in the host: it keeps the run's state (cells done, the
//!   current cell's rolling samples, [`alerts`]) and hands every change to
//!   the dashboard's clients through a broadcast channel. Publishing never
//!   waits for a client: a slow browser misses events and gets a fresh
//!   snapshot instead, and no client costs nothing.
//!
//! Trade-off: the ticker takes the collector's lock once a second for the
//! requests still open and the tokens since its last look (microseconds),
//! where a lock-free counter would cost every token an atomic add. The
//! overhead benchmark (`scripts/bench-dashboard`) measures both ways.

pub mod alerts;
pub mod hub;
pub mod ticker;

use serde::{Deserialize, Serialize};

/// One look at a running cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The cell's id.
    pub cell: String,
    /// Seconds since the cell's measuring started.
    pub t_s: f64,
    /// Totals so far (warm-up included).
    pub tokens: u64,
    pub requests: u64,
    pub done: u64,
    pub failed: u64,
    /// Tokens per second since the previous sample.
    pub tok_s: f64,
    /// Times to first token that arrived since the previous sample (at
    /// most [`MAX_TTFT_PER_SAMPLE`]), ms.
    pub ttft_ms: Vec<f64>,
    /// Median gap between consecutive tokens since the previous sample, ms.
    pub itl_p50_ms: Option<f64>,
    /// Resident memory of the measuring process.
    pub rss_bytes: Option<u64>,
    /// GPU memory in use, summed over the devices, when NVML answers.
    pub gpu_memory_bytes: Option<u64>,
}

/// Most first-token times one sample carries.
pub const MAX_TTFT_PER_SAMPLE: usize = 16;

/// Where the measuring side sends its samples.
pub type LiveFn = dyn Fn(Sample) + Send + Sync;
