//! Result files of a run folder.
//!
//! * `results.jsonl`: one line per cell, appended and flushed (and synced)
//!   as soon as the cell ends, holding the cell's summary and its raw
//!   per-request token timestamps. A run that is interrupted keeps every
//!   cell it finished.
//! * `summary.json`: the run's metadata and every cell's summary (no raw
//!   samples), with a schema version; rewritten atomically after each cell.
//! * `report.md`, `report.html`, `summary.csv`, `charts/`: the report
//!   ([`crate::report`]), written at the end of the run and again by
//!   `engine-matrix report DIR`.
//! * `matrix.yaml`: the matrix as it was given; `system.json`: the machine.

use crate::matrix::Cell;
use crate::measure::IterationSpan;
use crate::measure::RequestRecord;
use crate::metrics::CellMetrics;
use crate::system::SystemInfo;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the layout of `summary.json` and `results.jsonl`.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Unsupported,
    Failed,
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
    /// Highest RSS the sleeping sampler saw during the cell.
    #[serde(default)]
    pub sampled_peak_rss_bytes: Option<u64>,
    /// RSS slope after warm-up, with its verdict (`insufficient`, with a
    /// note, for a cell too short for one); none for serving cells.
    #[serde(default)]
    pub leak: Option<crate::telemetry::LeakCheck>,
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
    pub energy: Option<crate::telemetry::EnergyRecord>,
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
    pub fn from_samples(s: &[crate::telemetry::GpuSample], peaks: &[Option<u64>]) -> Option<Self> {
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
    pub efficiency: Option<crate::roofline::Efficiency>,
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
}

impl From<&RequestRecord> for RawRequest {
    fn from(r: &RequestRecord) -> Self {
        let c = r.completion.as_ref();
        RawRequest {
            id: r.id,
            iteration: r.iteration,
            warmup: r.warmup,
            prompt_tokens: r.prompt_tokens,
            max_new_tokens: r.max_new_tokens,
            submit_ns: r.submit_ns,
            scheduled_ns: r.scheduled_ns,
            token_ns: r.token_ns.clone(),
            tokens: r.tokens.clone(),
            end_ns: r.end_ns,
            finish_reason: c.map(|c| c.finish_reason.as_str().to_string()),
            error: r.error.as_ref().map(|e| e.to_string()),
            engine_generated_tokens: c.map(|c| c.generated_tokens),
            engine_queue_us: c.map(|c| c.queue_us),
            engine_prefill_us: c.map(|c| c.prefill_us),
            engine_decode_us: c.map(|c| c.decode_us),
            engine_decode_steps: c.map(|c| c.decode_steps),
        }
    }
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
    /// The model's shape (for bytes and FLOPs per token).
    #[serde(default)]
    pub shape: Option<crate::synthetic::Gpt2Shape>,
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
    pub idle_power: Option<crate::telemetry::Power>,
    /// Why energy or GPU figures read `n/a` on this host.
    #[serde(default)]
    pub telemetry_unavailable: Vec<String>,
    pub system: SystemInfo,
    /// The host's calibrated roofline limits (None when calibration failed).
    #[serde(default)]
    pub limits: Option<crate::roofline::Limits>,
    pub engines: Vec<EngineRecord>,
    pub models: Vec<ModelRecord>,
    pub cells: Vec<CellResult>,
}

fn one() -> u32 {
    1
}

impl Summary {
    /// Reads a `summary.json` (of a run folder, or a saved baseline).
    pub fn read(path: &Path) -> Result<Summary> {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let summary: Summary = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not an engine-matrix summary.json", path.display()))?;
        if summary.schema_version != SCHEMA_VERSION {
            anyhow::bail!(
                "{}: schema_version {} (this engine-matrix reads {})",
                path.display(),
                summary.schema_version,
                SCHEMA_VERSION
            );
        }
        Ok(summary)
    }
}

/// The run folder.
pub struct RunDir {
    pub path: PathBuf,
    results: File,
}

impl RunDir {
    /// Creates the run folder. A folder that already holds results is
    /// refused rather than mixed with a new run.
    pub fn create(path: &Path, matrix_text: &str, system: &SystemInfo) -> Result<Self> {
        let existing = path.join("results.jsonl");
        if existing.metadata().map(|m| m.len() > 0).unwrap_or(false) {
            anyhow::bail!(
                "run folder {} already holds results ({}): choose another --out or remove it",
                path.display(),
                existing.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create run folder {}", path.display()))?;
        std::fs::write(path.join("matrix.yaml"), matrix_text)?;
        write_json(&path.join("system.json"), system)?;
        let results = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.join("results.jsonl"))
            .with_context(|| format!("cannot open {}/results.jsonl", path.display()))?;
        Ok(RunDir {
            path: path.to_path_buf(),
            results,
        })
    }

    /// Reopens a run folder to continue it: returns the cells it already
    /// holds. A last line cut short by a crash is dropped (the file is
    /// truncated to its last complete line).
    pub fn resume(path: &Path) -> Result<(Self, Vec<CellResult>)> {
        let file = path.join("results.jsonl");
        let text =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            eprintln!(
                "warning: {}: dropping an incomplete last line ({} bytes)",
                file.display(),
                text.len() - complete
            );
            let f = OpenOptions::new().write(true).open(&file)?;
            f.set_len(complete as u64)?;
            f.sync_data()?;
        }
        let mut cells = Vec::new();
        for (i, line) in text[..complete].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let l: ResultLine = serde_json::from_slice(line)
                .with_context(|| format!("{}:{}: not a result line", file.display(), i + 1))?;
            cells.push(l.result);
        }
        let results = OpenOptions::new()
            .append(true)
            .open(&file)
            .with_context(|| format!("cannot open {}", file.display()))?;
        Ok((
            RunDir {
                path: path.to_path_buf(),
                results,
            },
            cells,
        ))
    }

    /// Appends a cell and makes it durable before returning.
    pub fn append(&mut self, line: &ResultLine) -> Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.results.write_all(text.as_bytes())?;
        self.results.flush()?;
        self.results.sync_data()?;
        Ok(())
    }

    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        write_json(&self.path.join("summary.json"), summary)
    }
}

/// Writes JSON atomically (temporary file, then rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value)?;
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A file-name-safe stem for files in a run folder (charts, logs).
pub fn slug(parts: &[&str]) -> String {
    let s: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(t_s: f64, device: u32, mib: u64, power_mw: u32) -> crate::telemetry::GpuSample {
        crate::telemetry::GpuSample {
            t_s,
            device,
            memory_used_bytes: Some(mib << 20),
            power_mw: Some(power_mw),
            energy_mj: None,
            sm_clock_mhz: Some(1000 + device * 100),
            mem_clock_mhz: None,
            temperature_c: Some(40 + device),
        }
    }

    #[test]
    fn gpu_record_sums_power_over_devices_and_keeps_the_fullest_peak() {
        // Device 0 draws 100 then 200 W (mean 150), device 1 a steady 60 W:
        // the board total is 210 W, whatever the number of samples each has.
        let s = [
            gpu(0.0, 0, 500, 100_000),
            gpu(0.0, 1, 900, 60_000),
            gpu(0.05, 0, 700, 200_000),
            gpu(0.05, 1, 800, 60_000),
            gpu(0.10, 1, 800, 60_000),
        ];
        let r = GpuRecord::from_samples(&s, &[Some(750 << 20), None]).unwrap();
        assert_eq!(r.samples, 5);
        assert_eq!(r.devices, 2);
        assert_eq!(r.mean_power_w, Some(210.0));
        // The sampler's peak (750) was dropped from the series, but the
        // series holds a higher reading (900, device 1).
        assert_eq!(r.peak_memory_used_bytes, Some(900 << 20));
        assert_eq!(r.max_temperature_c, Some(41));
        assert_eq!(
            r.mean_sm_clock_mhz,
            Some((1000.0 * 2.0 + 1100.0 * 3.0) / 5.0)
        );
        assert_eq!(r.mean_mem_clock_mhz, None);
        let none = crate::telemetry::GpuSample {
            power_mw: None,
            ..s[0].clone()
        };
        assert_eq!(
            GpuRecord::from_samples(&[none], &[]).unwrap().mean_power_w,
            None
        );
        assert_eq!(GpuRecord::from_samples(&[], &[Some(1)]), None);
    }

    #[test]
    fn a_folder_with_results_is_not_reused() {
        let dir = std::env::temp_dir().join(format!("em-rundir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sys = crate::system::collect();
        let mut run = RunDir::create(&dir, "name: x\n", &sys).unwrap();
        run.results.write_all(b"{}\n").unwrap();
        let err = RunDir::create(&dir, "name: x\n", &sys)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("already holds results"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug(&["TTFT", "lat ency", "a/b"]), "ttft-lat_ency-a_b");
        assert!(slug(&["x"; 200]).len() <= 100);
    }
}
