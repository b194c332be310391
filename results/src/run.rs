//! A run: `summary.json`, the machine, the calibrated roofline and the
//! engines and models it saw.

use crate::cell::{CellResult, SCHEMA_VERSION};
use crate::shape::Gpt2Shape;
use crate::telemetry::{GpuInfo, Power};
use crate::SchemaError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemInfo {
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub kernel: Option<String>,
    pub arch: String,
    pub cpu_model: Option<String>,
    pub physical_cores: Option<usize>,
    pub logical_cores: usize,
    pub memory_bytes: u64,
    pub engine_matrix_version: String,
    pub git_commit: String,
    /// Thread-count variables that change engine behaviour.
    pub env: BTreeMap<String, String>,
    /// The NVIDIA GPUs NVML lists (empty: none, or no usable driver).
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// The NVIDIA driver's version, when NVML loads.
    #[serde(default)]
    pub gpu_driver: Option<String>,
}

impl SystemInfo {
    /// The GPUs in one line, e.g. `NVIDIA H100 80GB HBM3 (79.6 GiB) x2,
    /// driver 555.42.06`; `None` without any.
    pub fn gpu_summary(&self) -> Option<String> {
        if self.gpus.is_empty() {
            return None;
        }
        // Identical boards are counted, not repeated.
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for g in &self.gpus {
            let mut text = g.name.clone().unwrap_or_else(|| "unknown GPU".into());
            if let Some(b) = g.memory_total_bytes {
                text.push_str(&format!(" ({:.1} GiB)", b as f64 / (1u64 << 30) as f64));
            }
            match kinds.iter_mut().find(|(k, _)| *k == text) {
                Some((_, n)) => *n += 1,
                None => kinds.push((text, 1)),
            }
        }
        let mut out = kinds
            .into_iter()
            .map(|(k, n)| if n > 1 { format!("{k} x{n}") } else { k })
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(d) = &self.gpu_driver {
            out.push_str(&format!(", driver {d}"));
        }
        Some(out)
    }
}

/// The host's limits, measured and cached by the host's `roofline`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    /// Human-readable: CPU model, logical cores, memory.
    pub machine: String,
    /// Cache key: hex of FNV-1a over CPU model, logical cores, total memory,
    /// kernel, hostname and the calibration's version.
    pub key: String,
    /// When the figures were measured (UTC, RFC 3339).
    pub measured_at: String,
    /// Threads both measurements used (the logical cores).
    pub threads: usize,
    /// Achievable memory read bandwidth, GB/s (1e9 bytes/s), best pass.
    pub mem_read_gb_s: f64,
    /// Achievable f32 matmul throughput, GFLOP/s, best run.
    pub matmul_f32_gflop_s: f64,
    /// One line saying exactly how both figures were measured.
    pub method: String,
    /// The GPU's limits; `None` until NVML telemetry (issue 7) lands.
    #[serde(default)]
    pub gpu: Option<GpuLimits>,
}

/// Limits of a GPU (not measured yet; see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GpuLimits {
    pub name: String,
    pub mem_gb_s: f64,
    pub f32_tflop_s: f64,
    /// Where the figures come from (datasheet, NVML clocks, calibration).
    pub source: String,
}

impl Limits {
    /// The roofline's ridge point, FLOP/byte: workloads of lower arithmetic
    /// intensity are bandwidth-bound, of higher compute-bound.
    pub fn ridge_flop_per_byte(&self) -> f64 {
        self.matmul_f32_gflop_s / self.mem_read_gb_s
    }

    /// The roof at `intensity` FLOP/byte: the GFLOP/s attainable there,
    /// `min(compute limit, bandwidth × intensity)`.
    pub fn attainable_gflop_s(&self, intensity: f64) -> f64 {
        self.matmul_f32_gflop_s.min(self.mem_read_gb_s * intensity)
    }

    /// Whether the figures can be used (finite, positive, some threads).
    pub fn is_usable(&self) -> bool {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        self.threads > 0 && ok(self.mem_read_gb_s) && ok(self.matmul_f32_gflop_s)
    }
}

/// The efficiency a cell reached (see the host's `roofline::efficiency`). `None` where the
/// cell has no such phase or no timing for it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Efficiency {
    /// Bytes a decode step reads over its time, GB/s.
    pub decode_gb_s: Option<f64>,
    /// `decode_gb_s` as a percentage of [`Limits::mem_read_gb_s`].
    pub decode_pct_of_bandwidth: Option<f64>,
    /// FLOPs of the batch's prefill over its time, GFLOP/s.
    pub prefill_gflop_s: Option<f64>,
    /// `prefill_gflop_s` as a percentage of [`Limits::matmul_f32_gflop_s`].
    pub prefill_pct_of_compute: Option<f64>,
    /// Decode step FLOPs over its bytes (the roofline's x for decode).
    pub decode_intensity_flop_per_byte: Option<f64>,
    /// Prefill FLOPs over its bytes (the roofline's x for prefill).
    pub prefill_intensity_flop_per_byte: Option<f64>,
}

impl Efficiency {
    /// Achieved decode GFLOP/s (the roofline's y for decode).
    pub fn decode_gflop_s(&self) -> Option<f64> {
        Some(self.decode_gb_s? * self.decode_intensity_flop_per_byte?)
    }
}

/// An engine as the run saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineRecord {
    pub name: String,
    pub plugin: String,
    pub path: Option<String>,
    pub api_version: Option<String>,
    pub info: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub path: Option<String>,
    pub parameters: Option<usize>,
    /// The `model_type` engines ran (gpt2, llama, qwen2, mistral).
    #[serde(default)]
    pub architecture: Option<String>,
    /// Where the weights come from: `synthetic (seed N)`, `folder`, `gguf`.
    #[serde(default)]
    pub source: Option<String>,
    /// The tokenizer the model has (its `tokenizer.json`), if any.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// The model's shape (for bytes and FLOPs per token).
    #[serde(default)]
    pub shape: Option<Gpt2Shape>,
    pub error: Option<String>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub schema_version: u32,
    pub tool: String,
    pub matrix_name: String,
    pub matrix_path: String,
    pub baseline: Option<String>,
    pub quick: bool,
    /// How many times the matrix ran (`run --repeat N`), engines interleaved.
    #[serde(default = "one")]
    pub repeats: u32,
    /// `run --only` engines (empty: all).
    #[serde(default)]
    pub only: Vec<String>,
    pub command: Vec<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub complete: bool,
    /// Why the run stopped before its last cell (Ctrl-C, run timeout).
    #[serde(default)]
    pub stopped: Option<String>,
    /// The host's idle power, subtracted from cells' energy.
    #[serde(default)]
    pub idle_power: Option<Power>,
    /// Why energy or GPU figures read `n/a` on this host.
    #[serde(default)]
    pub telemetry_unavailable: Vec<String>,
    pub system: SystemInfo,
    /// The host's calibrated roofline limits (None when calibration failed).
    #[serde(default)]
    pub limits: Option<Limits>,
    pub engines: Vec<EngineRecord>,
    pub models: Vec<ModelRecord>,
    pub cells: Vec<CellResult>,
    /// The verdicts of the matrix's `targets:` and the grade (`None`: the
    /// matrix has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<crate::targets::TargetsReport>,
    /// The tuned settings the run's engines ran with and which settings
    /// ran (`None`: no engine had tuned settings); a resumed run reads
    /// them back instead of the files they came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<engine_matrix_format::Overrides>,
    /// A shard's run (`run --shard I/N`): which share of which plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardMark>,
    /// A merged run (`engine-matrix merge`): the shards it was made of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<MergedShard>,
    /// A load generator's run (`run --load-shard I/N`): which share of
    /// which plan's arrivals, from when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_shard: Option<LoadMark>,
}

/// What marks a load generator's run folder (`run --load-shard I/N`):
/// generator `index` of `count` sends every `count`-th arrival of each
/// serving cell's schedule, from `index`, the cells' measured iterations
/// starting at `start_unix_ns + k * slot_s`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadMark {
    /// From 0.
    pub index: u32,
    pub count: u32,
    /// As [`ShardMark::plan_sha256`]: generators of one plan have the same.
    pub plan_sha256: String,
    /// The shared start, UTC (RFC 3339), and as ns since the Unix epoch.
    pub start_at: String,
    pub start_unix_ns: u64,
    /// Seconds between the starts of consecutive measured iterations.
    pub slot_s: f64,
    /// The generator's host name.
    pub host: String,
}

/// What marks a shard's run folder (`run --shard I/N`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMark {
    /// From 0.
    pub index: u32,
    pub count: u32,
    /// SHA-256 of the matrix text and every cell of the whole plan (ids
    /// and repetitions, after `--quick`, `--only`, tuned settings): shards
    /// of one plan have the same.
    pub plan_sha256: String,
    /// Cells (times repetitions) of this shard, and of the whole plan.
    pub cells: usize,
    pub plan_cells: usize,
    /// A name for identical machines (`--machine-class`, else derived
    /// from the CPU, cores, memory and GPUs): figures of one class are
    /// compared with each other, never across classes.
    pub machine_class: String,
}

/// Each merged shard's machine label, `A`, `B`, ... by first appearance
/// of its machine class (identical machines share one).
pub fn class_labels(marks: &[&ShardMark]) -> Vec<String> {
    let mut names: Vec<&str> = Vec::new();
    marks
        .iter()
        .map(|m| {
            let k = match names.iter().position(|n| *n == m.machine_class) {
                Some(k) => k,
                None => {
                    names.push(&m.machine_class);
                    names.len() - 1
                }
            };
            class_letter(k)
        })
        .collect()
}

/// `A` .. `Z`, then `AA`, `AB`... (spreadsheet columns).
pub fn class_letter(k: usize) -> String {
    let mut k = k;
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (k % 26) as u8);
        if k < 26 {
            break;
        }
        k = k / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// One shard of a merged run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedShard {
    pub mark: ShardMark,
    /// The shard's run folder, as given to `merge`.
    pub dir: String,
    pub system: SystemInfo,
    #[serde(default)]
    pub limits: Option<Limits>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub complete: bool,
    pub stopped: Option<String>,
}

fn one() -> u32 {
    1
}

impl Summary {
    /// Reads a `summary.json` (of a run folder, or a saved baseline).
    pub fn read(path: &Path) -> Result<Summary, SchemaError> {
        let text = std::fs::read(path).map_err(|e| SchemaError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let summary: Summary = serde_json::from_slice(&text).map_err(|e| SchemaError::Parse {
            what: format!("{}: not an engine-matrix summary.json", path.display()),
            source: e,
        })?;
        if summary.schema_version != SCHEMA_VERSION {
            return Err(SchemaError::Version {
                path: path.display().to_string(),
                found: summary.schema_version,
            });
        }
        Ok(summary)
    }
}
