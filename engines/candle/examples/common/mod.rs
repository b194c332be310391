//! Helpers shared by the candle examples (`bench`, `decode_ops`): random
//! GPT-2 weights built in memory, medians, and how busy the machine was.

#![allow(dead_code)] // each example uses its own subset

use candle_core::{DType, Device, Tensor};
use em_candle::gpt2::{Config, Gpt2};
use std::collections::HashMap;

/// GPT-2-shaped weights, N(0, 0.02) like GPT-2's initialisation, in
/// `dtype`, built on the current thread (so under its batch-1 kernel plan,
/// if one is set).
pub fn random_model(cfg: &Config, dtype: DType) -> candle_core::Result<Gpt2> {
    let dev = Device::Cpu;
    let mut ts = HashMap::new();
    for (name, shape) in cfg.expected_tensors() {
        let t = if name.contains("ln_") && name.ends_with("weight") {
            Tensor::ones(shape, DType::F32, &dev)?
        } else if name.ends_with("bias") {
            Tensor::zeros(shape, DType::F32, &dev)?
        } else {
            Tensor::randn(0f32, 0.02, shape, &dev)?
        };
        ts.insert(name, t.to_dtype(dtype)?);
    }
    Gpt2::new(cfg, candle_nn::VarBuilder::from_tensors(ts, dtype, &dev))
}

/// The median (the upper one of an even count); sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU ticks (all processes' busy ticks, this process's) from /proc, to
/// tell how busy the rest of the machine was.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = f.iter().sum::<u64>() - f.get(3)? - f.get(4)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = me.rsplit_once(')')?.1;
    // after the command name come fields 3 (state), 4, ...; utime and
    // stime are fields 14 and 15.
    let g: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| g.get(n - 3)?.parse::<u64>().ok();
    Some((busy, field(14)? + field(15)?))
}

/// The share of the machine's CPU that other processes used between two
/// [`cpu_ticks`] readings `wall_s` seconds apart.
pub fn others_share(before: (u64, u64), after: (u64, u64), wall_s: f64) -> f64 {
    let wall_ticks = wall_s * 100.0; // USER_HZ = 100
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let other = (after.0 - before.0).saturating_sub(after.1 - before.1) as f64;
    other / (wall_ticks * cores)
}
