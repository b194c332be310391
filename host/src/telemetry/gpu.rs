//! NVIDIA GPU telemetry through NVML (`nvml-wrapper`).
//!
//! `nvml-wrapper` opens `libnvidia-ml.so.1` with `libloading` at run time,
//! so building needs neither CUDA nor a driver, and the binary runs on a
//! machine that has neither. [`probe`] answers `None`, quickly and
//! silently, when the library cannot be loaded, `nvmlInit` fails (no
//! driver, no permission) or no device is found: the figures then read
//! `n/a` ([`describe_unavailable`]), never an error.
//!
//! Readings per device ([`GpuSample`]): memory used, power, the energy
//! counter, SM and memory clocks, temperature. Each is an `Option`,
//! because a device may not support a query (energy needs Volta or newer;
//! power needs power management) and a query may fail at any time (a GPU
//! fallen off the bus): a failing query gives `None` for that field, no
//! more.
//!
//! Caveats, stated so the reports can be read correctly:
//!
//! * Memory used is the **device's** figure (every process on the GPU,
//!   plus the driver's reservation), not this process's: on a shared GPU
//!   the baseline before the model loads is what tells them apart.
//! * Power (`nvmlDeviceGetPowerUsage`) is averaged by the driver over a
//!   window (about 1 s on many boards, 25 ms on recent ones), so sampling
//!   it faster than ~100 ms adds no information; the energy counter is
//!   exact whatever the interval, which is why energy per run uses it.
//! * NVML lists every GPU of the machine and ignores
//!   `CUDA_VISIBLE_DEVICES` (whose order may differ, too): samples are per
//!   device, and energy sums all of them.

pub use engine_matrix_results::telemetry::{GpuInfo, GpuSample, UNAVAILABLE};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::Nvml;
use std::sync::{Arc, OnceLock};

/// Why GPU figures read `n/a`.
pub fn describe_unavailable() -> &'static str {
    UNAVAILABLE
}

/// A loaded NVML and the devices it found. `Send + Sync`: NVML is
/// thread-safe, and one `Arc<Gpu>` ([`shared`]) serves the sampler, the
/// energy meter and the idle baseline.
pub struct Gpu {
    nvml: Nvml,
    devices: Vec<GpuInfo>,
    driver_version: Option<String>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("devices", &self.devices)
            .field("driver_version", &self.driver_version)
            .finish()
    }
}

/// Loads NVML and lists the devices; `None` when there is no usable
/// NVIDIA GPU (see the module docs). Costs a `dlopen` attempt where there
/// is no driver, and `nvmlInit` (tens to hundreds of ms) where there is
/// one: call it once per run, or use [`shared`].
pub fn probe() -> Option<Gpu> {
    // nvml-wrapper reports failures as errors; the guard only makes sure
    // nothing a driver does can take the run down.
    std::panic::catch_unwind(probe_inner).ok().flatten()
}

fn probe_inner() -> Option<Gpu> {
    let nvml = Nvml::init().ok()?;
    let count = nvml.device_count().ok().filter(|&c| c > 0)?;
    let devices = (0..count)
        .map(|index| {
            let d = nvml.device_by_index(index).ok();
            GpuInfo {
                index,
                name: d.as_ref().and_then(|d| d.name().ok()),
                uuid: d.as_ref().and_then(|d| d.uuid().ok()),
                memory_total_bytes: d
                    .as_ref()
                    .and_then(|d| d.memory_info().ok())
                    .map(|m| m.total),
            }
        })
        .collect();
    let driver_version = nvml.sys_driver_version().ok();
    Some(Gpu {
        nvml,
        devices,
        driver_version,
    })
}

/// [`probe`] once per process, shared.
pub fn shared() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
    GPU.get_or_init(|| probe().map(Arc::new)).clone()
}

impl Gpu {
    pub fn devices(&self) -> &[GpuInfo] {
        &self.devices
    }

    pub fn driver_version(&self) -> Option<&str> {
        self.driver_version.as_deref()
    }

    /// One [`GpuSample`] per device, appended to `out` (which the sampler
    /// reuses, so a sample allocates nothing).
    pub fn sample_into(&self, t_s: f64, out: &mut Vec<GpuSample>) {
        for info in &self.devices {
            let mut s = GpuSample {
                t_s,
                device: info.index,
                ..GpuSample::default()
            };
            if let Ok(d) = self.nvml.device_by_index(info.index) {
                s.memory_used_bytes = d.memory_info().ok().map(|m| m.used);
                s.power_mw = d.power_usage().ok();
                s.energy_mj = d.total_energy_consumption().ok();
                s.sm_clock_mhz = d.clock_info(Clock::SM).ok();
                s.mem_clock_mhz = d.clock_info(Clock::Memory).ok();
                s.temperature_c = d.temperature(TemperatureSensor::Gpu).ok();
            }
            out.push(s);
        }
    }

    /// One [`GpuSample`] per device.
    pub fn sample(&self, t_s: f64) -> Vec<GpuSample> {
        let mut out = Vec::with_capacity(self.devices.len());
        self.sample_into(t_s, &mut out);
        out
    }

    /// Each device's energy counter, mJ (`None` where unsupported).
    pub fn energy_mj(&self) -> Vec<Option<u64>> {
        self.devices
            .iter()
            .map(|info| {
                self.nvml
                    .device_by_index(info.index)
                    .ok()
                    .and_then(|d| d.total_energy_consumption().ok())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs everywhere: without a GPU (this machine, CI) `probe` answers
    /// `None` without panicking; with one it lists devices and samples
    /// them.
    #[test]
    fn probe_never_panics_and_samples_every_device() {
        match probe() {
            None => assert!(shared().is_none()),
            Some(gpu) => {
                assert!(!gpu.devices().is_empty());
                let samples = gpu.sample(0.5);
                assert_eq!(samples.len(), gpu.devices().len());
                assert!(samples.iter().all(|s| s.t_s == 0.5));
                assert_eq!(gpu.energy_mj().len(), gpu.devices().len());
                eprintln!("{gpu:?}\n{samples:?}");
            }
        }
    }

    #[test]
    fn describes_the_missing_gpu() {
        assert!(describe_unavailable().starts_with("n/a: "));
    }

    #[test]
    fn samples_round_trip_through_json() {
        let s = GpuSample {
            t_s: 1.25,
            device: 1,
            memory_used_bytes: Some(3 << 30),
            power_mw: Some(71_000),
            energy_mj: None,
            sm_clock_mhz: Some(1980),
            mem_clock_mhz: Some(2619),
            temperature_c: Some(41),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"energy_mj\":null"), "{json}");
        assert_eq!(serde_json::from_str::<GpuSample>(&json).unwrap(), s);
    }
}
