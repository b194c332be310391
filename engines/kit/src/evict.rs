//! Cache eviction for kernel auto-tuning: before a timed call, read a
//! buffer of twice the last-level cache, so the weight the call reads
//! comes from memory, as it does in a decode step that streams the whole
//! model. Timing a memory-bound kernel on a weight still in cache from
//! the previous call measures another machine: on SmolLM2's 2–9 MB
//! weights (AMD EPYC, 32 MiB L3) libtorch's kernels timed that way added
//! up to 22 ms per f32 step, against about 40 ms in the model.
//!
//! The buffer (2x the largest cache sysfs lists, 16–512 MiB) is allocated
//! at the first eviction and freed with the [`Evictor`]; engines drop it
//! before their load returns.

use std::path::{Path, PathBuf};

/// Reads a buffer of twice the last-level cache on [`Evictor::evict`].
#[derive(Debug, Default)]
pub struct Evictor {
    buf: Vec<u64>,
}

impl Evictor {
    pub fn new() -> Self {
        Evictor::default()
    }

    /// Reads the whole buffer (allocated on the first call).
    pub fn evict(&mut self) {
        if self.buf.is_empty() {
            let words = 2 * last_level_cache_bytes() / 8;
            self.buf = (0..words as u64).collect();
        }
        let sum = self.buf.iter().fold(0u64, |s, v| s.wrapping_add(*v));
        std::hint::black_box(sum);
    }
}

/// The largest CPU cache, from sysfs (32 MiB when it cannot be read),
/// bounded to 8 MiB – 256 MiB.
pub fn last_level_cache_bytes() -> usize {
    largest_cache(Path::new("/sys/devices/system/cpu/cpu0/cache"))
        .unwrap_or(32 << 20)
        .clamp(8 << 20, 256 << 20)
}

/// The largest `indexN/size` under `dir` (sysfs writes `32768K`, `1M`).
fn largest_cache(dir: &Path) -> Option<usize> {
    let size = |p: PathBuf| -> Option<usize> {
        let t = std::fs::read_to_string(p.join("size")).ok()?;
        let t = t.trim();
        let (num, mult) = match t.strip_suffix('K') {
            Some(n) => (n, 1 << 10),
            None => match t.strip_suffix('M') {
                Some(n) => (n, 1 << 20),
                None => (t, 1),
            },
        };
        num.parse::<usize>().ok().map(|v| v * mult)
    };
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| size(e.path()))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_listed_cache_wins_and_units_are_read() {
        let d = crate::testing::TempDir::new("evict-sysfs");
        for (i, s) in ["32K", "512K", "32768K", "1M"].iter().enumerate() {
            let idx = d.path().join(format!("index{i}"));
            std::fs::create_dir_all(&idx).unwrap();
            std::fs::write(idx.join("size"), format!("{s}\n")).unwrap();
        }
        assert_eq!(largest_cache(d.path()), Some(32 << 20));
        assert_eq!(largest_cache(&d.path().join("absent")), None);
        let b = last_level_cache_bytes();
        assert!((8 << 20..=256 << 20).contains(&b), "{b}");
    }
}
