//! The machine a run was measured on, recorded in every run, and the
//! process memory readings taken around each cell.

pub use engine_matrix_results::SystemInfo;
use serde::Serialize;

/// This machine's host name (`unknown` where the system cannot say).
pub fn collect_hostname() -> String {
    sysinfo::System::host_name()
        .ok()
        .unwrap_or_else(|| "unknown".into())
}

/// Reads the system information (takes a few ms: once per run).
pub fn collect() -> SystemInfo {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    let cpu_model = sys
        .as_ref()
        .and_then(|s| s.cpus().first())
        .map(|c| c.brand().trim().to_string())
        .filter(|s| !s.is_empty());
    let env = [
        "RAYON_NUM_THREADS",
        "CANDLE_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    let gpu = crate::telemetry::gpu::shared();
    SystemInfo {
        hostname: System::host_name().ok(),
        os: System::name().ok(),
        os_version: System::os_version().ok(),
        kernel: System::kernel_version().ok(),
        arch: std::env::consts::ARCH.to_string(),
        cpu_model,
        physical_cores: System::physical_core_count().ok(),
        logical_cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_bytes: sys.as_ref().map(|s| s.total_memory()).unwrap_or(0),
        engine_matrix_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("ENGINE_MATRIX_GIT_COMMIT").to_string(),
        env,
        gpus: gpu
            .as_ref()
            .map(|g| g.devices().to_vec())
            .unwrap_or_default(),
        gpu_driver: gpu
            .as_ref()
            .and_then(|g| g.driver_version().map(str::to_string)),
    }
}

/// Resident and peak resident memory of this process, from
/// `/proc/self/status` (Linux). `None` where the platform has no procfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rss {
    pub rss_bytes: u64,
    pub peak_bytes: u64,
}

pub fn rss() -> Option<Rss> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(Rss {
        rss_bytes: field("VmRSS:")?,
        peak_bytes: field("VmHWM:")?,
    })
}

/// Resets the kernel's peak-RSS mark (`VmHWM`) to the current RSS, so the
/// next [`rss`] reports the peak of what ran in between. Returns false
/// where that is impossible; the peak then covers the whole process life.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_info_has_the_basics() {
        let s = collect();
        assert!(s.logical_cores >= 1);
        assert!(s.memory_bytes > 0);
        assert!(!s.git_commit.is_empty());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn peak_rss_follows_an_allocation() {
        // RSS is the whole process's: other tests running in parallel
        // threads allocate and free too, so one attempt of three must show
        // this allocation cleanly.
        let mut last = String::new();
        for _ in 0..3 {
            let before = rss().unwrap();
            assert!(before.rss_bytes > 0 && before.peak_bytes >= before.rss_bytes);
            let reset = reset_peak_rss();
            let v = vec![1u8; 64 << 20];
            std::hint::black_box(&v);
            let during = rss().unwrap();
            drop(v);
            let after = rss().unwrap();
            let ok = after.peak_bytes >= before.rss_bytes + (60 << 20)
                && during.rss_bytes >= before.rss_bytes + (60 << 20)
                && (!reset || after.peak_bytes < before.peak_bytes + (128 << 20));
            if ok {
                return;
            }
            last = format!("{before:?} {during:?} {after:?} reset {reset}");
        }
        panic!("the 64 MiB allocation never showed: {last}");
    }

    #[test]
    fn gpu_summary_counts_identical_boards() {
        use crate::telemetry::gpu::GpuInfo;
        let mut s = collect();
        s.gpus.clear();
        assert_eq!(s.gpu_summary(), None);
        let board = |index: u32, name: &str| GpuInfo {
            index,
            name: Some(name.into()),
            uuid: None,
            memory_total_bytes: Some(80 << 30),
        };
        s.gpus = vec![board(0, "H100"), board(1, "H100"), board(2, "L4")];
        s.gpu_driver = Some("555.42.06".into());
        assert_eq!(
            s.gpu_summary().unwrap(),
            "H100 (80.0 GiB) x2, L4 (80.0 GiB), driver 555.42.06"
        );
        // A summary written before GPUs were recorded still reads.
        let mut v = serde_json::to_value(&s).unwrap();
        v.as_object_mut().unwrap().remove("gpus");
        v.as_object_mut().unwrap().remove("gpu_driver");
        let old: SystemInfo = serde_json::from_value(v).unwrap();
        assert!(old.gpus.is_empty() && old.gpu_driver.is_none());
    }
}
