//! The measuring side of the live view: a thread that samples a running
//! cell once a [`INTERVAL`] and hands each [`Sample`] to a callback (the
//! worker writes it to the host as a protocol line).

use super::{LiveFn, Sample, MAX_TTFT_PER_SAMPLE};
use crate::measure::{Collector, LiveCursor, LiveWindow};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The sampling thread of one cell; stopped (and joined) by [`Ticker::stop`]
/// or on drop.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    pub fn start(
        cell: String,
        collector: Arc<Collector>,
        every: Duration,
        sink: Arc<LiveFn>,
    ) -> Ticker {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("live-ticker".into())
            .spawn(move || {
                let mut cur = LiveCursor::default();
                // The first look sets the window's start: its totals are 0.
                let _ = collector.live_window(&mut cur);
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    stopped = cv
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *stopped {
                        return;
                    }
                    let w = collector.live_window(&mut cur);
                    sink(sample(&cell, &w));
                }
            })
            .ok();
        Ticker { stop, handle }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A sample from a window of the collector, with this process's RSS and
/// the GPUs' memory.
pub fn sample(cell: &str, w: &LiveWindow) -> Sample {
    let dt = (w.to_ns.saturating_sub(w.from_ns)) as f64 / 1e9;
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut gaps = w.gaps_ns.clone();
    let itl_p50_ms = (!gaps.is_empty()).then(|| {
        let mid = gaps.len() / 2;
        ms(*gaps.select_nth_unstable(mid).1)
    });
    let gpu_memory_bytes = crate::telemetry::gpu::shared().and_then(|g| {
        let s = g.sample(0.0);
        let used: Vec<u64> = s.iter().filter_map(|d| d.memory_used_bytes).collect();
        (!used.is_empty()).then(|| used.iter().sum())
    });
    Sample {
        cell: cell.to_string(),
        t_s: w.to_ns as f64 / 1e9,
        tokens: w.tokens,
        requests: w.registered,
        done: w.done,
        failed: w.failed,
        tok_s: if dt > 0.0 {
            w.new_tokens as f64 / dt
        } else {
            0.0
        },
        ttft_ms: w
            .ttft_ns
            .iter()
            .take(MAX_TTFT_PER_SAMPLE)
            .map(|&t| ms(t))
            .collect(),
        itl_p50_ms,
        rss_bytes: crate::telemetry::sampler::rss_bytes(),
        gpu_memory_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_turns_a_window_into_rates_and_milliseconds() {
        let w = LiveWindow {
            from_ns: 1_000_000_000,
            to_ns: 1_500_000_000,
            new_tokens: 50,
            tokens: 120,
            done: 3,
            failed: 1,
            registered: 8,
            ttft_ns: vec![20_000_000; 40],
            gaps_ns: vec![9_000_000, 10_000_000, 30_000_000],
        };
        let s = sample("c", &w);
        assert_eq!(s.cell, "c");
        assert!((s.tok_s - 100.0).abs() < 1e-9, "{}", s.tok_s);
        assert!((s.t_s - 1.5).abs() < 1e-12);
        assert_eq!(s.ttft_ms.len(), MAX_TTFT_PER_SAMPLE);
        assert!((s.ttft_ms[0] - 20.0).abs() < 1e-12);
        assert_eq!(s.itl_p50_ms, Some(10.0));
        assert_eq!((s.tokens, s.requests, s.done, s.failed), (120, 8, 3, 1));
    }

    #[test]
    fn the_ticker_samples_until_stopped() {
        let c = Arc::new(Collector::new());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let t = Ticker::start(
            "cell".into(),
            c,
            Duration::from_millis(5),
            Arc::new(move |s| g.lock().unwrap().push(s)),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        t.stop();
        let n = got.lock().unwrap().len();
        assert!(n >= 3, "{n} samples");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(got.lock().unwrap().len(), n, "no sample after stop");
    }
}
