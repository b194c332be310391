//! Energy per run and per output token, from hardware energy counters.
//!
//! # Sources
//!
//! * **RAPL** (CPU packages), through Linux's powercap sysfs interface:
//!   `/sys/class/powercap/intel-rapl:N/energy_uj`, a counter in µJ. AMD
//!   processors expose the same `intel-rapl` interface on recent kernels.
//!   Only **top-level** zones named `package-N` are summed: sub-zones
//!   (`intel-rapl:N:M`: `core`, `uncore`, `dram`) are parts of, or beside,
//!   a package and would be counted twice or inconsistently across hosts;
//!   a platform zone (`psys`, the whole SoC) is used only when there is no
//!   package zone, since it includes the packages. `intel-rapl-mmio:*`
//!   duplicates the MSR zones and is skipped. DRAM energy is therefore not
//!   included.
//! * **NVML** energy counters (`nvmlDeviceGetTotalEnergyConsumption`, mJ,
//!   Volta and newer), summed over every GPU ([`super::gpu`]).
//!
//! Both are counters, read at the start and at the end, so the joules are
//! exact whatever the sampling interval, with one catch: the RAPL counter
//! wraps at `max_energy_range_uj` (about 262 kJ: 17 minutes at 250 W), so
//! a meter must be read more often than that ([`EnergyMeter::read`]
//! accumulates across one wrap per read; the sampler reads it every tick).
//!
//! # n/a
//!
//! Since Linux 5.10 `energy_uj` is readable by root only (the PLATYPUS
//! side channel), virtual machines usually have no powercap at all (as the
//! project's own machine), and most machines have no NVIDIA GPU. Each case
//! gives `None`, with a reason for the report from [`describe_unavailable`]
//! or [`RaplUnavailable`]'s `Display`; nothing here errors.
//!
//! # Idle baseline
//!
//! A counter measures the whole package (or board), including what the
//! machine draws doing nothing. [`idle_baseline`] measures watts while this
//! process sleeps, once per run, before any engine is busy;
//! [`energy_record`] subtracts `idle watts × seconds` to give the energy
//! the run itself cost. The baseline must come from the same sources as
//! the run's reading (the same [`EnergyMeter::source`]).

use super::gpu::Gpu;
pub use engine_matrix_results::telemetry::{energy_record, EnergyRecord, Power, MIN_WINDOW_S};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where Linux exposes powercap zones.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

/// A top-level RAPL zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaplZone {
    /// Directory name, e.g. `intel-rapl:0`.
    pub zone: String,
    /// The zone's `name`, e.g. `package-0`.
    pub name: String,
    pub energy_path: PathBuf,
    /// `max_energy_range_uj`: where the counter wraps to 0.
    pub max_range_uj: Option<u64>,
}

/// Why there is no RAPL reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaplUnavailable {
    /// No powercap folder (most virtual machines, non-Linux hosts).
    NoPowercap(PathBuf),
    /// Powercap without a readable-in-principle package (or psys) zone.
    NoZones(PathBuf),
    /// A package zone whose counter cannot be read (root-only since 5.10).
    Unreadable { path: PathBuf, error: String },
}

impl std::fmt::Display for RaplUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaplUnavailable::NoPowercap(root) | RaplUnavailable::NoZones(root) => write!(
                f,
                "n/a: no RAPL powercap counters readable ({})",
                root.display()
            ),
            RaplUnavailable::Unreadable { path, error } => write!(
                f,
                "n/a: RAPL counter not readable ({}: {error}; root-only since Linux 5.10)",
                path.display()
            ),
        }
    }
}

/// The RAPL zones summed for CPU energy, from [`POWERCAP_ROOT`].
pub fn rapl_zones() -> Result<Vec<RaplZone>, RaplUnavailable> {
    rapl_zones_in(Path::new(POWERCAP_ROOT))
}

fn rapl_zones_in(root: &Path) -> Result<Vec<RaplZone>, RaplUnavailable> {
    let entries = std::fs::read_dir(root).map_err(|_| RaplUnavailable::NoPowercap(root.into()))?;
    let mut top = Vec::new();
    for entry in entries.flatten() {
        let zone = entry.file_name().to_string_lossy().into_owned();
        let Some(index) = zone
            .strip_prefix("intel-rapl:")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(name) = std::fs::read_to_string(dir.join("name")) else {
            continue;
        };
        let max_range_uj = read_u64(&dir.join("max_energy_range_uj")).ok();
        top.push((
            index,
            RaplZone {
                zone,
                name: name.trim().to_string(),
                energy_path: dir.join("energy_uj"),
                max_range_uj,
            },
        ));
    }
    top.sort_by_key(|(index, _)| *index);
    let zones: Vec<RaplZone> = top.into_iter().map(|(_, z)| z).collect();
    let packages: Vec<RaplZone> = zones
        .iter()
        .filter(|z| z.name.starts_with("package"))
        .cloned()
        .collect();
    let chosen = if packages.is_empty() {
        zones.into_iter().filter(|z| z.name == "psys").collect()
    } else {
        packages
    };
    if chosen.is_empty() {
        return Err(RaplUnavailable::NoZones(root.into()));
    }
    // A sum over some packages only would be a wrong figure: all or n/a.
    for z in &chosen {
        if let Err(e) = read_u64(&z.energy_path) {
            return Err(RaplUnavailable::Unreadable {
                path: z.energy_path.clone(),
                error: e,
            });
        }
    }
    Ok(chosen)
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.trim().parse::<u64>().map_err(|e| e.to_string())
}

/// Increase of a counter from `prev` to `now` that wraps to 0 after
/// `range`. Without a known range a decrease means the counter restarted
/// (a driver reload), and `now` is what it counted since.
fn counter_delta(prev: u64, now: u64, range: Option<u64>) -> u64 {
    if now >= prev {
        now - prev
    } else {
        match range {
            Some(r) if r >= prev => (r - prev).saturating_add(now),
            _ => now,
        }
    }
}

/// A counter followed across reads: the last raw value and the total.
#[derive(Debug, Clone)]
struct Counter {
    last: u64,
    range: Option<u64>,
    total: u128,
}

impl Counter {
    fn new(first: u64, range: Option<u64>) -> Counter {
        Counter {
            last: first,
            range,
            total: 0,
        }
    }

    fn advance(&mut self, now: u64) {
        self.total += counter_delta(self.last, now, self.range) as u128;
        self.last = now;
    }
}

/// One reading of an [`EnergyMeter`]: joules since its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    pub seconds: f64,
    /// RAPL, summed over the packages.
    pub cpu_j: Option<f64>,
    /// NVML, summed over the GPUs.
    pub gpu_j: Option<f64>,
}

impl EnergyReading {
    /// CPU plus GPU joules, `None` when neither is measured.
    pub fn joules(&self) -> Option<f64> {
        match (self.cpu_j, self.gpu_j) {
            (None, None) => None,
            (c, g) => Some(c.unwrap_or(0.0) + g.unwrap_or(0.0)),
        }
    }

    /// Mean watts over the reading's seconds.
    pub fn watts(&self) -> Option<f64> {
        let j = self.joules()?;
        (self.seconds > 0.0).then(|| j / self.seconds)
    }
}

/// Joules since [`EnergyMeter::start`], from RAPL and NVML counters.
pub struct EnergyMeter {
    started: Instant,
    rapl: Vec<(RaplZone, Counter)>,
    gpu: Option<(Arc<Gpu>, Vec<Option<Counter>>)>,
}

impl std::fmt::Debug for EnergyMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergyMeter")
            .field("source", &self.source())
            .finish()
    }
}

impl EnergyMeter {
    /// Starts a meter over RAPL (when readable) and `gpu`'s energy counters
    /// (when supported); `None` when neither is there.
    pub fn start(gpu: Option<Arc<Gpu>>) -> Option<EnergyMeter> {
        Self::start_in(Path::new(POWERCAP_ROOT), gpu)
    }

    fn start_in(root: &Path, gpu: Option<Arc<Gpu>>) -> Option<EnergyMeter> {
        let started = Instant::now();
        let rapl: Vec<(RaplZone, Counter)> = rapl_zones_in(root)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|z| {
                let first = read_u64(&z.energy_path).ok()?;
                let range = z.max_range_uj;
                Some((z, Counter::new(first, range)))
            })
            .collect();
        let gpu = gpu.and_then(|g| {
            let counters: Vec<Option<Counter>> = g
                .energy_mj()
                .into_iter()
                .map(|e| e.map(|e| Counter::new(e, None)))
                .collect();
            counters
                .iter()
                .any(Option::is_some)
                .then_some((g, counters))
        });
        if rapl.is_empty() && gpu.is_none() {
            return None;
        }
        Some(EnergyMeter { started, rapl, gpu })
    }

    /// `rapl`, `nvml` or `rapl+nvml`.
    pub fn source(&self) -> String {
        let mut parts = Vec::new();
        if !self.rapl.is_empty() {
            parts.push("rapl");
        }
        if self.gpu.is_some() {
            parts.push("nvml");
        }
        parts.join("+")
    }

    /// The RAPL zones summed (e.g. `package-0`, `package-1`).
    pub fn rapl_zone_names(&self) -> Vec<String> {
        self.rapl.iter().map(|(z, _)| z.name.clone()).collect()
    }

    /// Reads every counter and returns joules since the start. A counter
    /// that fails to read keeps its last total. Call it more often than
    /// the RAPL counter wraps (minutes; see the module docs).
    pub fn read(&mut self) -> EnergyReading {
        for (zone, counter) in &mut self.rapl {
            if let Ok(now) = read_u64(&zone.energy_path) {
                counter.advance(now);
            }
        }
        if let Some((gpu, counters)) = &mut self.gpu {
            for (counter, now) in counters.iter_mut().zip(gpu.energy_mj()) {
                if let (Some(c), Some(now)) = (counter.as_mut(), now) {
                    c.advance(now);
                }
            }
        }
        let cpu_j = (!self.rapl.is_empty())
            .then(|| self.rapl.iter().map(|(_, c)| c.total).sum::<u128>() as f64 / 1e6);
        let gpu_j = self.gpu.as_ref().map(|(_, counters)| {
            counters.iter().flatten().map(|c| c.total).sum::<u128>() as f64 / 1e3
        });
        EnergyReading {
            seconds: self.started.elapsed().as_secs_f64(),
            cpu_j,
            gpu_j,
        }
    }
}

/// Mean watts while this process sleeps for `d` (1 s is plenty: counters
/// update every millisecond or so), with the same sources a run's
/// [`EnergyMeter::start`] would use. Once per run, while no engine works.
/// `None` where no energy counter is readable.
pub fn idle_baseline(d: Duration, gpu: Option<Arc<Gpu>>) -> Option<Power> {
    let mut meter = EnergyMeter::start(gpu)?;
    std::thread::sleep(d);
    power_of(&mut meter)
}

fn power_of(meter: &mut EnergyMeter) -> Option<Power> {
    let r = meter.read();
    let per_s = |j: Option<f64>| j.filter(|_| r.seconds > 0.0).map(|j| j / r.seconds);
    Some(Power {
        watts: r.watts()?,
        cpu_watts: per_s(r.cpu_j),
        gpu_watts: per_s(r.gpu_j),
        seconds: r.seconds,
        source: meter.source(),
    })
}

/// Why energy reads `n/a` on this host, or `None` when some counter is
/// readable (RAPL, or energy counters on `gpu`).
pub fn describe_unavailable(gpu: Option<&Gpu>) -> Option<String> {
    describe_unavailable_in(Path::new(POWERCAP_ROOT), gpu)
}

fn describe_unavailable_in(root: &Path, gpu: Option<&Gpu>) -> Option<String> {
    let rapl = rapl_zones_in(root).err()?;
    let gpu_reason = match gpu {
        None => super::gpu::UNAVAILABLE
            .trim_start_matches("n/a: ")
            .to_string(),
        Some(g) if g.energy_mj().iter().any(Option::is_some) => return None,
        Some(_) => "no NVML energy counter on this GPU (Volta or newer needed)".to_string(),
    };
    Some(format!("{rapl}; {gpu_reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fake `/sys/class/powercap` in a temporary folder, removed on drop.
    struct FakeSysfs(PathBuf);

    impl FakeSysfs {
        fn new() -> FakeSysfs {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "engine-matrix-powercap-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            FakeSysfs(dir)
        }

        fn zone(&self, dir: &str, name: &str, energy: Option<u64>, range: Option<u64>) -> &Self {
            let d = self.0.join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            if let Some(e) = energy {
                self.set(dir, e);
            }
            if let Some(r) = range {
                std::fs::write(d.join("max_energy_range_uj"), format!("{r}\n")).unwrap();
            }
            self
        }

        fn set(&self, dir: &str, energy: u64) {
            std::fs::write(self.0.join(dir).join("energy_uj"), format!("{energy}\n")).unwrap();
        }

        /// The layout of a two-socket Intel server.
        fn server() -> FakeSysfs {
            let fs = FakeSysfs::new();
            std::fs::create_dir_all(fs.0.join("intel-rapl")).unwrap();
            fs.zone(
                "intel-rapl:0",
                "package-0",
                Some(1_000_000),
                Some(262_143_328_850),
            )
            .zone("intel-rapl:0:0", "core", Some(5), Some(262_143_328_850))
            .zone("intel-rapl:0:1", "dram", Some(7), Some(65_712_999_613))
            .zone(
                "intel-rapl:1",
                "package-1",
                Some(2_000_000),
                Some(262_143_328_850),
            )
            .zone(
                "intel-rapl-mmio:0",
                "package-0",
                Some(9),
                Some(262_143_328_850),
            );
            fs
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn finds_the_top_level_package_zones_only() {
        let fs = FakeSysfs::server();
        let zones = rapl_zones_in(&fs.0).unwrap();
        let names: Vec<_> = zones
            .iter()
            .map(|z| (z.zone.as_str(), z.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [("intel-rapl:0", "package-0"), ("intel-rapl:1", "package-1")]
        );
        assert_eq!(zones[0].max_range_uj, Some(262_143_328_850));
        assert_eq!(describe_unavailable_in(&fs.0, None), None);
    }

    #[test]
    fn psys_only_when_there_is_no_package() {
        let fs = FakeSysfs::new();
        fs.zone("intel-rapl:0", "psys", Some(10), None);
        let zones = rapl_zones_in(&fs.0).unwrap();
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].name, "psys");
        assert_eq!(zones[0].max_range_uj, None);
        fs.zone("intel-rapl:1", "package-0", Some(10), None);
        let zones = rapl_zones_in(&fs.0).unwrap();
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].name, "package-0");
    }

    #[test]
    fn meter_sums_packages_across_a_wrap() {
        let fs = FakeSysfs::new();
        fs.zone(
            "intel-rapl:0",
            "package-0",
            Some(999_000_000),
            Some(1_000_000_000),
        )
        .zone(
            "intel-rapl:1",
            "package-1",
            Some(5_000_000),
            Some(1_000_000_000),
        );
        let mut meter = EnergyMeter::start_in(&fs.0, None).unwrap();
        assert_eq!(meter.source(), "rapl");
        assert_eq!(meter.rapl_zone_names(), ["package-0", "package-1"]);
        let r = meter.read();
        assert_eq!(r.cpu_j, Some(0.0));
        assert_eq!(r.gpu_j, None);
        // package-0 wraps: 1 J up to the range, then 1 J past 0.
        fs.set("intel-rapl:0", 1_000_000);
        fs.set("intel-rapl:1", 8_000_000);
        let r = meter.read();
        assert_eq!(r.cpu_j, Some(2.0 + 3.0));
        // And on from there, with another wrap later.
        fs.set("intel-rapl:0", 600_000_000);
        let r = meter.read();
        assert_eq!(r.cpu_j, Some(2.0 + 599.0 + 3.0));
        fs.set("intel-rapl:0", 100_000_000);
        let r = meter.read();
        assert_eq!(r.cpu_j, Some(2.0 + 599.0 + 400.0 + 100.0 + 3.0));
        assert_eq!(r.joules(), r.cpu_j);
        assert!(r.seconds >= 0.0);
    }

    #[test]
    fn a_counter_that_fails_keeps_its_total() {
        let fs = FakeSysfs::new();
        fs.zone("intel-rapl:0", "package-0", Some(0), Some(1 << 40));
        let mut meter = EnergyMeter::start_in(&fs.0, None).unwrap();
        fs.set("intel-rapl:0", 4_000_000);
        assert_eq!(meter.read().cpu_j, Some(4.0));
        std::fs::write(fs.0.join("intel-rapl:0/energy_uj"), "garbage").unwrap();
        assert_eq!(meter.read().cpu_j, Some(4.0));
        fs.set("intel-rapl:0", 5_000_000);
        assert_eq!(meter.read().cpu_j, Some(5.0));
    }

    #[test]
    fn counter_delta_handles_wraps_and_restarts() {
        assert_eq!(counter_delta(10, 25, Some(100)), 15);
        assert_eq!(counter_delta(90, 5, Some(100)), 15);
        assert_eq!(counter_delta(90, 5, None), 5);
        assert_eq!(counter_delta(200, 5, Some(100)), 5, "beyond the range");
        assert_eq!(counter_delta(u64::MAX - 1, 3, Some(u64::MAX)), 4);
    }

    #[test]
    fn unavailable_cases_say_why() {
        let fs = FakeSysfs::new();
        let missing = fs.0.join("absent");
        let e = rapl_zones_in(&missing).unwrap_err();
        assert_eq!(e, RaplUnavailable::NoPowercap(missing.clone()));
        assert_eq!(
            e.to_string(),
            format!(
                "n/a: no RAPL powercap counters readable ({})",
                missing.display()
            )
        );
        assert!(EnergyMeter::start_in(&missing, None).is_none());

        // Powercap, but only a sub-zone and another driver's zone.
        fs.zone("intel-rapl:0:0", "core", Some(1), None).zone(
            "intel-rapl-mmio:0",
            "package-0",
            Some(1),
            None,
        );
        assert_eq!(
            rapl_zones_in(&fs.0).unwrap_err(),
            RaplUnavailable::NoZones(fs.0.clone())
        );

        // A package zone whose counter cannot be read: n/a, not a partial sum.
        fs.zone("intel-rapl:0", "package-0", Some(1), None).zone(
            "intel-rapl:1",
            "package-1",
            None,
            None,
        );
        let e = rapl_zones_in(&fs.0).unwrap_err();
        assert!(matches!(e, RaplUnavailable::Unreadable { .. }), "{e:?}");
        assert!(e.to_string().contains("intel-rapl:1"), "{e}");
        assert!(EnergyMeter::start_in(&fs.0, None).is_none());
        assert_eq!(
            describe_unavailable_in(&missing, None).unwrap(),
            format!(
                "n/a: no RAPL powercap counters readable ({}); no NVIDIA GPU (NVML not loadable)",
                missing.display()
            )
        );
    }

    /// On this host: whatever it has, nothing errors or panics; without
    /// RAPL and GPU (the project's VM) everything is `None` with a reason.
    #[test]
    fn the_real_host_reads_or_says_na() {
        let gpu = super::super::gpu::shared();
        match rapl_zones() {
            Ok(zones) => assert!(!zones.is_empty()),
            Err(e) => assert!(e.to_string().starts_with("n/a: "), "{e}"),
        }
        let meter = EnergyMeter::start(gpu.clone());
        let reason = describe_unavailable(gpu.as_deref());
        assert_eq!(meter.is_none(), reason.is_some(), "{reason:?}");
        if let Some(reason) = reason {
            assert!(reason.starts_with("n/a: "), "{reason}");
            assert!(idle_baseline(Duration::from_millis(10), gpu).is_none());
        }
    }

    #[test]
    fn idle_power_from_a_fake_meter() {
        let fs = FakeSysfs::new();
        fs.zone("intel-rapl:0", "package-0", Some(0), Some(1 << 40));
        let mut meter = EnergyMeter::start_in(&fs.0, None).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs.set("intel-rapl:0", 1_000_000);
        let p = power_of(&mut meter).unwrap();
        assert_eq!(p.source, "rapl");
        assert!(p.seconds > 0.0 && p.watts > 0.0);
        assert!((p.watts * p.seconds - 1.0).abs() < 1e-9);
        assert_eq!(p.cpu_watts, Some(p.watts));
        assert_eq!(p.gpu_watts, None);
    }

    #[test]
    fn energy_record_subtracts_idle() {
        let r = energy_record("rapl", 500.0, 10.0, Some(20.0), 1000);
        assert_eq!(r.source, "rapl");
        assert_eq!(r.mean_watts, Some(50.0));
        assert_eq!(r.joules_above_idle, Some(300.0));
        assert_eq!(r.joules_per_output_token, Some(0.5));
        assert_eq!(r.joules_above_idle_per_output_token, Some(0.3));
        // Below idle (noise): no measurable extra energy, not a negative.
        let r = energy_record("rapl", 150.0, 10.0, Some(20.0), 10);
        assert_eq!(r.joules_above_idle, Some(0.0));
        // No baseline, no tokens, no time.
        let r = energy_record("nvml", 500.0, 0.0, None, 0);
        assert_eq!(r.mean_watts, None);
        assert_eq!(r.joules_above_idle, None);
        assert_eq!(r.joules_per_output_token, None);
        assert_eq!(r.joules_above_idle_per_output_token, None);
        assert_eq!(r.note, None);
        // Too short a window: the joules read, nothing derived, and why.
        let r = energy_record("nvml", 0.47, 0.003, Some(150.0), 8);
        assert_eq!((r.joules, r.seconds), (0.47, 0.003));
        assert_eq!(r.mean_watts, None);
        assert_eq!(r.joules_above_idle, None);
        assert_eq!(r.joules_per_output_token, None);
        assert_eq!(r.joules_above_idle_per_output_token, None);
        assert!(
            r.note.as_deref().unwrap().contains("0.003 s is shorter"),
            "{r:?}"
        );
        let r = energy_record("nvml", 150.0, MIN_WINDOW_S, Some(100.0), 10);
        assert_eq!(r.joules_above_idle_per_output_token, Some(5.0));
        assert_eq!(r.note, None);
        // Non-finite inputs never reach JSON.
        let r = energy_record("rapl", f64::NAN, f64::INFINITY, Some(f64::NAN), 3);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
        assert_eq!(serde_json::from_str::<EnergyRecord>(&json).unwrap(), r);
    }

    #[test]
    fn reading_sums_sources() {
        let r = EnergyReading {
            seconds: 2.0,
            cpu_j: Some(10.0),
            gpu_j: Some(30.0),
        };
        assert_eq!(r.joules(), Some(40.0));
        assert_eq!(r.watts(), Some(20.0));
        assert_eq!(EnergyReading::default().joules(), None);
    }
}
