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

use crate::measure::RequestRecord;
use crate::system::SystemInfo;
use anyhow::{Context, Result};
pub use engine_matrix_reports::slug;
pub use engine_matrix_results::cell::{
    CellResult, GpuRecord, MemoryRecord, RawRequest, ResultLine, Status, SCHEMA_VERSION,
};
pub use engine_matrix_results::run::{
    EngineRecord, LoadMark, MergedShard, ModelRecord, ShardMark, Summary,
};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
            cached_prompt_tokens: c.and_then(|c| c.cached_prompt_tokens.into_option()),
            session: r.session,
            turn: r.turn,
            arrival: r.arrival,
        }
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
            cells.push(summary_cell(&l.result));
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

/// A result as `summary.json` keeps it: a server's scraped series stays
/// in `results.jsonl`.
pub fn summary_cell(r: &CellResult) -> CellResult {
    let mut r = r.clone();
    if let Some(s) = r.metrics.as_mut().and_then(|m| m.server.as_mut()) {
        s.series.clear();
    }
    r
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
}
