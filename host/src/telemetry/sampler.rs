//! A background sampler of memory (and, where present, GPU readings and
//! energy) over a cell.
//!
//! # It sleeps, never spins
//!
//! The project's machines have two cores, and the engines use both: candle
//! runs its matmuls on a rayon pool with one worker per core, and a
//! data-parallel matmul finishes when its *slowest* worker does. A sampler
//! that polls in a loop owns a core: the scheduler time-slices it with a
//! worker, that worker's chunk finishes late, and the whole step waits for
//! it. Candle's throughput collapses, and the figure measured is the
//! sampler's, not the engine's. So the thread blocks between samples
//! ([`std::sync::mpsc::Receiver::recv_timeout`], a futex wait: no CPU
//! while it waits) and wakes once per interval to read `/proc/self/statm`
//! (a few µs), plus NVML and RAPL where enabled (tens of µs per device).
//! At the default 50 ms that is well under 0.1 % of one core. [`Sampler::stop`]
//! wakes it at once through the same channel: stopping never waits for an
//! interval to end.
//!
//! # The interval
//!
//! Shorter intervals resolve shorter memory peaks and give the leak check
//! more points, at the cost of more wake-ups, each a context switch that
//! evicts a little of the engine's cache. Longer intervals are cheaper but
//! blur the RSS curve. 50 ms ([`DEFAULT_INTERVAL`]) resolves a decode
//! step's allocation pattern on a small model and keeps the cost
//! negligible. Three figures do not depend on it: the exact peak RSS is
//! the kernel's high-water mark ([`crate::system::rss`]; the sampler also
//! keeps the highest value it saw in [`Samples::peak_rss_bytes`]), energy
//! comes from counters that integrate between reads, and NVML averages
//! power over its own window anyway.
//!
//! # Bounded memory
//!
//! The sampler lives in the process it measures, so its own growth would
//! look like a leak (a GPU sample per device every 50 ms for an hour is
//! tens of MB). Each series therefore holds at most [`MAX_SAMPLES`]
//! samples, allocated when the sampler starts: when full, every other
//! sample is dropped and the sampling stride doubles, so a series always
//! covers the whole run evenly (down to one sample every
//! `interval × stride`, reported as [`Samples::stride`]). The first sample
//! is taken when the sampler starts, the last when it stops.

use super::energy::EnergyMeter;
use super::gpu::{Gpu, GpuSample};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The sampler's default interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);
/// Samples each series holds at most (see the module docs).
pub const MAX_SAMPLES: usize = 4096;
/// The shortest interval accepted (shorter ones are raised to it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// This process's resident memory, bytes, from `/proc/self/statm` (a few
/// µs, cheaper than [`crate::system::rss`]'s `/proc/self/status`). `None`
/// where there is no procfs. For leak points: read it after each measured
/// iteration.
pub fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size()?)
}

/// The summed resident memory of process group `pgid` (a server the
/// harness launched in a group of its own: its process and whatever it
/// started), from each member's `/proc/PID/statm`. The members are found
/// by a scan of `/proc` when `members` is older than [`GROUP_RESCAN`] or
/// one has gone; `None` when the group has no process left.
pub fn group_rss_bytes(pgid: u32, members: &mut GroupMembers) -> Option<u64> {
    let page = page_size()?;
    let stale = members.scanned.is_none_or(|t| t.elapsed() >= GROUP_RESCAN);
    if stale {
        members.rescan(pgid);
    }
    let read = |pid: u32| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        text.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    let mut pages = 0;
    for &pid in &members.pids {
        match read(pid) {
            Some(p) => pages += p,
            None if !stale => {
                // A member went away: count the group as it is now.
                members.rescan(pgid);
                return members
                    .pids
                    .iter()
                    .filter_map(|&p| read(p))
                    .reduce(|a, b| a + b)
                    .map(|p| p * page);
            }
            None => {}
        }
    }
    (!members.pids.is_empty()).then_some(pages * page)
}

/// How often [`group_rss_bytes`] looks for new members of the group.
pub const GROUP_RESCAN: Duration = Duration::from_secs(2);

/// The processes of a group, as last scanned.
#[derive(Debug, Default)]
pub struct GroupMembers {
    pids: Vec<u32>,
    scanned: Option<Instant>,
}

impl GroupMembers {
    fn rescan(&mut self, pgid: u32) {
        self.scanned = Some(Instant::now());
        self.pids.clear();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // `pid (comm) state ppid pgrp ...`: comm may hold spaces and
            // parentheses, so the fields count from the last `)`.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let group = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|g| g.parse::<u32>().ok());
            if group == Some(pgid) {
                self.pids.push(pid);
            }
        }
    }
}

#[cfg(unix)]
fn page_size() -> Option<u64> {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0)
}

#[cfg(not(unix))]
fn page_size() -> Option<u64> {
    None
}

/// What a [`Sampler`] reads.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// This process's RSS.
    pub rss: bool,
    /// Every device of this GPU ([`super::gpu::shared`]), when present.
    pub gpu: Option<Arc<Gpu>>,
    /// Energy counters (RAPL, and NVML on `gpu`), where readable.
    pub energy: bool,
    /// With `rss`: read the summed RSS of this process group (a launched
    /// server's) instead of this process's.
    pub group: Option<u32>,
}

impl Sources {
    /// RSS only.
    pub fn rss() -> Sources {
        Sources {
            rss: true,
            ..Sources::default()
        }
    }

    /// Everything this host offers: RSS, the GPUs if NVML loads, energy
    /// if a counter is readable.
    pub fn all() -> Sources {
        Sources {
            rss: true,
            gpu: super::gpu::shared(),
            energy: true,
            group: None,
        }
    }

    /// The summed RSS of process group `pgid` only.
    pub fn group_rss(pgid: u32) -> Sources {
        Sources {
            rss: true,
            group: Some(pgid),
            ..Sources::default()
        }
    }
}

/// What a [`Sampler`] recorded. Times are seconds since [`Sampler::start`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// The requested interval, seconds.
    pub interval_s: f64,
    /// Samples kept are `interval_s × stride` apart (1 until a series
    /// fills up, doubling each time it does).
    pub stride: u64,
    /// Seconds from start to stop.
    pub duration_s: f64,
    /// Times of the RSS samples.
    pub t_s: Vec<f64>,
    /// RSS at `t_s`, bytes.
    pub rss_bytes: Vec<u64>,
    /// Highest RSS read, dropped samples included.
    pub peak_rss_bytes: Option<u64>,
    /// One sample per device per kept tick.
    pub gpu: Vec<GpuSample>,
    /// Per device, the highest memory used read (dropped samples included).
    pub gpu_peak_memory_bytes: Vec<Option<u64>>,
    /// Joules from start to stop (CPU + GPU); `None`: no readable counter.
    pub energy_j: Option<f64>,
    pub cpu_energy_j: Option<f64>,
    pub gpu_energy_j: Option<f64>,
    /// [`EnergyMeter::source`], when energy was measured.
    pub energy_source: Option<String>,
}

impl Samples {
    /// `(seconds, rss bytes)` points for [`super::leak::leak_check`].
    pub fn rss_points(&self) -> Vec<(f64, u64)> {
        self.t_s
            .iter()
            .copied()
            .zip(self.rss_bytes.iter().copied())
            .collect()
    }

    /// Mean watts over the run, when energy was measured.
    pub fn mean_watts(&self) -> Option<f64> {
        self.energy_j
            .filter(|_| self.duration_s > 0.0)
            .map(|j| j / self.duration_s)
    }
}

/// A running sampler; [`Sampler::stop`] returns its [`Samples`]. Dropping
/// it without `stop` stops the thread too.
pub struct Sampler {
    started: Instant,
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Samples>>,
}

impl Sampler {
    /// Starts sampling every `interval` (at least [`MIN_INTERVAL`]) in a
    /// new thread, which takes its first sample at once. Should the thread
    /// fail to start, [`Sampler::stop`] returns empty samples.
    pub fn start(interval: Duration, sources: Sources) -> Sampler {
        let interval = interval.max(MIN_INTERVAL);
        let started = Instant::now();
        let (stop_tx, stop_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("telemetry-sampler".into())
            .spawn(move || run(started, interval, sources, stop_rx))
            .ok();
        Sampler {
            started,
            stop_tx: Some(stop_tx),
            thread,
        }
    }

    /// When sampling started: `t_s` values count from here, so a caller
    /// can place its own events (iteration ends) on the same clock.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Stops the thread (at once, whatever the interval), takes a last
    /// sample and returns everything.
    pub fn stop(mut self) -> Samples {
        self.halt().unwrap_or_default()
    }

    fn halt(&mut self) -> Option<Samples> {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        self.thread.take()?.join().ok()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// A series of at most [`MAX_SAMPLES`] ticks, `width` items per tick.
struct Series<T> {
    items: Vec<T>,
    width: usize,
}

impl<T> Series<T> {
    fn new(width: usize) -> Series<T> {
        Series {
            items: Vec::with_capacity((MAX_SAMPLES + 1) * width),
            width,
        }
    }

    fn ticks(&self) -> usize {
        self.items.len().checked_div(self.width).unwrap_or(0)
    }

    /// Keeps ticks 0, 2, 4, ...
    fn halve(&mut self) {
        let width = self.width;
        let mut i = 0;
        self.items.retain(|_| {
            let keep = (i / width).is_multiple_of(2);
            i += 1;
            keep
        });
    }
}

/// The series a sampler keeps, bounded by halving (see the module docs).
struct Recorder {
    times: Series<f64>,
    rss: Series<u64>,
    gpu: Series<GpuSample>,
    gpu_peak: Vec<Option<u64>>,
    peak_rss: Option<u64>,
    stride: u64,
}

impl Recorder {
    fn new(rss: bool, devices: usize) -> Recorder {
        let width = usize::from(rss);
        Recorder {
            times: Series::new(width),
            rss: Series::new(width),
            gpu: Series::new(devices),
            gpu_peak: vec![None; devices],
            peak_rss: None,
            stride: 1,
        }
    }

    /// Whether tick number `tick` is kept (the last one always is).
    fn keeps(&self, tick: u64, last: bool) -> bool {
        last || tick.is_multiple_of(self.stride)
    }

    fn record_rss(&mut self, keep: bool, t: f64, bytes: u64) {
        self.peak_rss = self.peak_rss.max(Some(bytes));
        if keep {
            self.times.items.push(t);
            self.rss.items.push(bytes);
        }
    }

    /// The GPU samples from index `from` on were just appended to
    /// `self.gpu.items`: note their peaks, and drop them unless kept.
    fn record_gpu(&mut self, keep: bool, from: usize) {
        for s in &self.gpu.items[from..] {
            if let Some(peak) = self.gpu_peak.get_mut(s.device as usize) {
                *peak = (*peak).max(s.memory_used_bytes);
            }
        }
        if !keep {
            self.gpu.items.truncate(from);
        }
    }

    /// After a tick: halve every series once one is full.
    fn end_tick(&mut self, last: bool) {
        if !last && (self.times.ticks() >= MAX_SAMPLES || self.gpu.ticks() >= MAX_SAMPLES) {
            self.times.halve();
            self.rss.halve();
            self.gpu.halve();
            self.stride *= 2;
        }
    }
}

fn run(
    started: Instant,
    interval: Duration,
    sources: Sources,
    stop: mpsc::Receiver<()>,
) -> Samples {
    let gpu = sources.gpu.clone();
    let devices = gpu.as_ref().map_or(0, |g| g.devices().len());
    let mut meter = if sources.energy {
        EnergyMeter::start(gpu.clone())
    } else {
        None
    };
    let mut rec = Recorder::new(sources.rss, devices);
    let mut last_energy = None;
    let mut members = GroupMembers::default();

    let mut sample = |rec: &mut Recorder, tick: u64, last: bool| {
        let t = started.elapsed().as_secs_f64();
        let keep = rec.keeps(tick, last);
        if sources.rss {
            let rss = match sources.group {
                Some(g) => group_rss_bytes(g, &mut members),
                None => rss_bytes(),
            };
            if let Some(b) = rss {
                rec.record_rss(keep, t, b);
            }
        }
        if let Some(g) = &gpu {
            let from = rec.gpu.items.len();
            // NVML reports failures as errors; the guard keeps a misbehaving
            // driver from ending the sampler (and losing its samples).
            let sampled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                g.sample_into(t, &mut rec.gpu.items)
            }));
            if sampled.is_err() {
                rec.gpu.items.truncate(from);
            }
            rec.record_gpu(keep, from);
        }
        if let Some(m) = meter.as_mut() {
            last_energy = Some(m.read());
        }
        rec.end_tick(last);
    };

    let mut tick: u64 = 0;
    sample(&mut rec, tick, false);
    let mut next = started + interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        tick += 1;
        sample(&mut rec, tick, false);
        next += interval;
        // Behind (the machine was busy)? Skip the missed ticks rather than
        // sampling in a burst.
        let now = Instant::now();
        while next <= now {
            next += interval;
            tick += 1;
        }
    }
    sample(&mut rec, tick + 1, true);

    let energy = last_energy.filter(|e| e.joules().is_some());
    Samples {
        interval_s: interval.as_secs_f64(),
        stride: rec.stride,
        duration_s: started.elapsed().as_secs_f64(),
        t_s: rec.times.items,
        rss_bytes: rec.rss.items,
        peak_rss_bytes: rec.peak_rss,
        gpu: rec.gpu.items,
        gpu_peak_memory_bytes: rec.gpu_peak,
        energy_j: energy.and_then(|e| e.joules()),
        cpu_energy_j: energy.and_then(|e| e.cpu_j),
        gpu_energy_j: energy.and_then(|e| e.gpu_j),
        energy_source: energy.and(meter.as_ref().map(|m| m.source())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn rss_bytes_agrees_with_proc_status() {
        let statm = rss_bytes().unwrap();
        let status = crate::system::rss().unwrap().rss_bytes;
        assert!(statm > 0);
        // Two reads a moment apart: the same order of magnitude.
        assert!(
            statm / 2 < status && status < statm * 2,
            "{statm} vs {status}"
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn collects_rss_and_stops_promptly() {
        let sampler = Sampler::start(Duration::from_millis(50), Sources::rss());
        std::thread::sleep(Duration::from_millis(150));
        let samples = sampler.stop();
        assert!(samples.t_s.len() >= 2, "{samples:?}");
        assert_eq!(samples.t_s.len(), samples.rss_bytes.len());
        assert!(samples.t_s.windows(2).all(|w| w[0] <= w[1]));
        assert!(samples.rss_bytes.iter().all(|&b| b > 0));
        assert_eq!(
            samples.peak_rss_bytes,
            samples.rss_bytes.iter().copied().max()
        );
        assert_eq!(samples.stride, 1);
        assert_eq!(samples.interval_s, 0.05);
        assert_eq!(samples.rss_points().len(), samples.t_s.len());
        assert!(samples.gpu.is_empty() && samples.energy_j.is_none());
        assert!(samples.duration_s >= *samples.t_s.last().unwrap());
    }

    /// A long interval must not delay `stop`: the thread waits on the
    /// channel, not in a sleep it cannot leave. (No timing assertion: a
    /// hang here shows as a test that never ends.)
    #[test]
    #[cfg(target_os = "linux")]
    fn stop_does_not_wait_for_the_interval() {
        let sampler = Sampler::start(Duration::from_secs(3600), Sources::rss());
        let samples = sampler.stop();
        assert_eq!(samples.t_s.len(), 2, "first and last: {samples:?}");
        // Dropping without stop ends the thread as well.
        drop(Sampler::start(Duration::from_secs(3600), Sources::rss()));
    }

    #[test]
    fn nothing_to_read_gives_empty_series() {
        let samples = Sampler::start(Duration::from_millis(5), Sources::default()).stop();
        assert!(samples.t_s.is_empty() && samples.rss_bytes.is_empty());
        assert!(samples.gpu.is_empty() && samples.gpu_peak_memory_bytes.is_empty());
        assert_eq!(samples.peak_rss_bytes, None);
        assert_eq!(samples.mean_watts(), None);
    }

    /// On this host, asking for everything never fails: without a GPU or
    /// RAPL those parts are simply empty.
    #[test]
    fn all_sources_on_this_host() {
        let sources = Sources::all();
        let has_gpu = sources.gpu.is_some();
        let samples = Sampler::start(Duration::from_millis(20), sources).stop();
        if !has_gpu {
            assert!(samples.gpu.is_empty());
        } else {
            assert!(!samples.gpu.is_empty());
            assert!(samples
                .gpu
                .len()
                .is_multiple_of(samples.gpu_peak_memory_bytes.len()));
        }
        assert_eq!(samples.energy_j.is_some(), samples.energy_source.is_some());
        let json = serde_json::to_string(&samples).unwrap();
        assert_eq!(serde_json::from_str::<Samples>(&json).unwrap(), samples);
    }

    #[test]
    fn series_halving_keeps_every_other_tick() {
        let mut s: Series<u32> = Series::new(2);
        s.items.extend([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(s.ticks(), 5);
        s.halve();
        assert_eq!(s.items, [0, 0, 2, 2, 4, 4]);
        let mut empty: Series<u32> = Series::new(0);
        assert_eq!(empty.ticks(), 0);
        empty.halve();
    }

    /// Past MAX_SAMPLES ticks the series stay bounded, cover the whole
    /// run evenly, and the stride doubles each time they fill up.
    #[test]
    fn recorder_stays_bounded() {
        let mut rec = Recorder::new(true, 2);
        let ticks = 5 * MAX_SAMPLES as u64;
        for tick in 0..=ticks {
            let last = tick == ticks;
            let keep = rec.keeps(tick, last);
            let t = tick as f64 * 0.05;
            rec.record_rss(keep, t, 1000 + tick);
            let from = rec.gpu.items.len();
            for device in 0..2 {
                rec.gpu.items.push(GpuSample {
                    t_s: t,
                    device,
                    memory_used_bytes: Some(tick * (device as u64 + 1)),
                    ..GpuSample::default()
                });
            }
            rec.record_gpu(keep, from);
            rec.end_tick(last);
            assert!(rec.times.ticks() <= MAX_SAMPLES + 1);
            assert!(rec.gpu.ticks() <= MAX_SAMPLES + 1);
            assert!(rec.times.items.capacity() <= MAX_SAMPLES + 1, "no growth");
        }
        assert_eq!(rec.stride, 8);
        assert_eq!(rec.peak_rss, Some(1000 + ticks));
        assert_eq!(rec.gpu_peak, [Some(ticks), Some(2 * ticks)]);
        let t = &rec.times.items;
        assert_eq!(t[0], 0.0);
        assert_eq!(*t.last().unwrap(), ticks as f64 * 0.05);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        // Evenly spaced (but for the last sample).
        let step = t[1] - t[0];
        assert!((step - 8.0 * 0.05).abs() < 1e-9, "{step}");
        assert!(t[..t.len() - 1]
            .windows(2)
            .all(|w| (w[1] - w[0] - step).abs() < 1e-9));
        assert_eq!(rec.gpu.items.len(), 2 * t.len());
        assert!(rec
            .gpu
            .items
            .chunks(2)
            .zip(t)
            .all(|(c, &t)| c[0].t_s == t && c[1].t_s == t && c[0].device == 0 && c[1].device == 1));
    }
}
