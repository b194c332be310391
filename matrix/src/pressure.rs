//! `pressure`: load the harness puts on the machine beside the engine
//! during a cell, to see how the engine degrades when it does not have the
//! machine to itself (the seeds' resource-pressure stress test).
//!
//! An axis key like any other, so a cell and its twin without pressure
//! differ only in it:
//!
//! ```yaml
//! axes:
//!   pressure: [none, cpu2, mem4, cpu1-mem2]
//! ```
//!
//! `cpuN` runs N busy threads; `memG` holds G GiB (decimals allowed:
//! `mem0.5`) resident, touching every page; `cpuN-memG` both. Both run in
//! one child process the harness starts before the cell's first request
//! and always stops (the host's `pressure` module).

use serde::{Deserialize, Serialize};

/// Most busy threads a cell may ask for.
pub const MAX_CPU_THREADS: u32 = 256;
/// Most memory a cell may ask to hold, MiB (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// What runs beside the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pressure {
    /// Busy threads (0: none).
    pub cpu_threads: u32,
    /// Memory held resident, MiB (0: none).
    pub memory_mib: u64,
}

impl Pressure {
    /// `none`, `cpuN`, `memG` or `cpuN-memG` (`None` for `none`).
    pub fn parse(s: &str) -> Result<Option<Pressure>, String> {
        if s == "none" {
            return Ok(None);
        }
        let mut p = Pressure::default();
        let mut seen = (false, false);
        for part in s.split('-') {
            if let Some(n) = part.strip_prefix("cpu") {
                let n: u32 = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_CPU_THREADS).contains(n) && !seen.0)
                    .ok_or_else(|| {
                        format!("`{part}`: expected cpuN with N in 1..={MAX_CPU_THREADS}, once")
                    })?;
                p.cpu_threads = n;
                seen.0 = true;
            } else if let Some(g) = part.strip_prefix("mem") {
                let gib: f64 = g
                    .parse()
                    .ok()
                    .filter(|g: &f64| g.is_finite() && *g > 0.0 && !seen.1)
                    .ok_or_else(|| {
                        format!("`{part}`: expected memG with G GiB above 0 (mem0.5, mem4), once")
                    })?;
                let mib = (gib * 1024.0).round() as u64;
                if mib == 0 || mib > MAX_MEMORY_MIB {
                    return Err(format!("`{part}`: between 1 MiB and 1024 GiB"));
                }
                p.memory_mib = mib;
                seen.1 = true;
            } else {
                return Err(format!("`{part}` is not cpuN or memG"));
            }
        }
        Ok(Some(p))
    }

    /// The canonical name, as in cell ids: `cpu2`, `mem4`, `cpu2-mem0.5`.
    pub fn tag(&self) -> String {
        let mut parts = Vec::new();
        if self.cpu_threads > 0 {
            parts.push(format!("cpu{}", self.cpu_threads));
        }
        if self.memory_mib > 0 {
            parts.push(format!("mem{}", self.memory_mib as f64 / 1024.0));
        }
        parts.join("-")
    }

    /// Memory to hold, bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_name_themselves() {
        assert_eq!(Pressure::parse("none"), Ok(None));
        let p = Pressure::parse("cpu2-mem0.5").unwrap().unwrap();
        assert_eq!((p.cpu_threads, p.memory_mib), (2, 512));
        assert_eq!(p.tag(), "cpu2-mem0.5");
        assert_eq!(p.memory_bytes(), 512 << 20);
        assert_eq!(Pressure::parse("mem4").unwrap().unwrap().tag(), "mem4");
        assert_eq!(Pressure::parse("cpu1").unwrap().unwrap().tag(), "cpu1");
        for bad in [
            "cpu0",
            "cpu",
            "mem0",
            "mem-1",
            "gpu2",
            "cpu1-cpu2",
            "",
            "cpu999",
            "mem2000",
        ] {
            assert!(Pressure::parse(bad).is_err(), "{bad}");
        }
    }
}
