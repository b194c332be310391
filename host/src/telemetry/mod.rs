//! Telemetry around a cell: memory over time, leak detection, GPU readings
//! and energy. The measuring pieces only; the cell runner decides when to
//! start and stop them and where the figures go.
//!
//! * [`sampler`]: a background thread that **sleeps** between samples and
//!   records RSS (and, where present, GPU readings and energy) every
//!   interval, 50 ms by default, with bounded memory.
//! * [`leak`]: pure leak detection, a robust (Theil–Sen) slope of RSS over
//!   100 or more points, in MB/hour, with a [`leak::LeakVerdict`] drawn
//!   only after 100 units of work past warm-up.
//! * [`gpu`]: NVML through `nvml-wrapper`, which loads `libnvidia-ml.so.1`
//!   at run time: no CUDA is needed to build, and a machine without an
//!   NVIDIA driver gets `None` from [`gpu::probe`], never an error.
//! * [`energy`]: RAPL powercap counters (CPU packages) and NVML energy
//!   counters (GPUs), an idle baseline, and joules per run and per output
//!   token ([`energy::EnergyRecord`]).
//!
//! # `n/a`, never an error
//!
//! Every reading that the host may not expose is an `Option`: no GPU, no
//! RAPL, a query a device does not support, a counter only root may read.
//! Reports print such a figure as [`NA`] (see [`or_na`]) with the reason
//! from [`gpu::describe_unavailable`] or [`energy::describe_unavailable`];
//! nothing here panics or fails a cell because a sensor is missing.
//!
//! # Units
//!
//! Bytes are bytes. "MB" in leak figures is a MiB (2^20 bytes), the unit
//! of the reports' memory columns. Energy is in joules, power in watts,
//! except in raw [`gpu::GpuSample`]s, which keep NVML's integer units
//! (mW, mJ, MHz, °C).

pub mod energy;
pub mod gpu;
pub mod leak;
pub mod prometheus;
pub mod sampler;

pub use energy::{energy_record, idle_baseline, EnergyMeter, EnergyReading, EnergyRecord, Power};
pub use gpu::{Gpu, GpuSample};
pub use leak::{leak_check, LeakCheck, LeakVerdict};
pub use sampler::{rss_bytes, Sampler, Samples, Sources};

/// What a report prints for a figure the host does not expose.
pub const NA: &str = "n/a";

/// `value` through `Display`, or [`NA`] when it is `None`.
pub fn or_na<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| NA.to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_na_prints_na_for_none() {
        assert_eq!(or_na(None::<f64>), "n/a");
        assert_eq!(or_na(Some(1.5)), "1.5");
    }
}
