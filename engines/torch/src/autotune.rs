//! `matmul: auto` (the default for f32 on the CPU): the linear layers'
//! kernel chosen by measurement on this machine, not by assumption.
//!
//! oneDNN's inner product and MKL's `addmm` trade places across CPUs:
//! oneDNN ran batch-8 decode shapes twice as fast as MKL on the AMD EPYC
//! machines this engine was tuned on, while on an Intel Xeon (AVX-512,
//! AMX) `addmm` ran batch-1 GPT-2 decode 1.27x faster than PyTorch eager
//! and oneDNN 0.87x (issue 17's figures). So at load, for the model's own
//! layer shapes, both kernels are timed at one row (batch-1 decode) and at
//! eight (a decode batch), on random weights of those shapes, after a
//! warm-up: the median of [`RUNS`] calls each. The kernel with the lower
//! per-token total over the whole model wins: each shape's time counts as
//! often as a token runs through it (the layers, the lm_head once). One
//! kernel for the whole model, because GPT-2's lm_head shares its weight
//! layout with the token embeddings.
//!
//! The choice and its timings are cached per machine key, dtype, threads
//! and shapes (`<cache>/kernels/torch-<key>.json`), as the host's roofline
//! calibration is, so a model loads at full speed after the first time.
//! The model's `describe()` says which kernel runs and whether it was
//! measured now, read from the cache, or forced by the option.

use crate::linear::{Linear, MatMul};
use engine_kit::fnv1a;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Timed calls per shape, kernel and batch (after 2 warm-up calls).
pub const RUNS: usize = 9;

/// A linear layer shape and how many times a token passes through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub inp: i64,
    pub out: i64,
    pub per_token: u32,
}

/// The measured choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// `onednn` or `addmm`.
    pub kernel: String,
    /// Per-token microseconds of every linear layer at batch 1 and per
    /// token at batch 8, per kernel.
    pub us_per_token: Vec<(String, f64, f64)>,
    /// Whether this load measured it (`false`: read from the cache).
    #[serde(default)]
    pub measured_now: bool,
}

impl Choice {
    pub fn matmul(&self) -> MatMul {
        if self.kernel == "addmm" {
            MatMul::Addmm
        } else {
            MatMul::OneDnn
        }
    }
}

fn name(m: MatMul) -> &'static str {
    match m {
        MatMul::Addmm => "addmm",
        MatMul::OneDnn => "onednn",
        MatMul::Int8 => "int8",
        MatMul::Int4 => "int4",
    }
}

/// Median microseconds of `linear` on `rows` rows.
fn time(linear: &Linear, inp: i64, rows: i64) -> tch::Result<f64> {
    let x = Tensor::f_randn([rows, inp], (Kind::Float, Device::Cpu))?;
    for _ in 0..2 {
        drop(linear.forward(&x)?);
    }
    let mut t = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let s = Instant::now();
        let y = linear.forward(&x)?;
        drop(y);
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[RUNS / 2])
}

/// Times both kernels on `shapes` (f32, CPU, the calling thread's libtorch
/// threads).
pub fn measure(shapes: &[Shape]) -> tch::Result<Choice> {
    let _g = tch::no_grad_guard();
    let mut totals = Vec::new();
    for m in [MatMul::OneDnn, MatMul::Addmm] {
        let (mut one, mut eight) = (0.0, 0.0);
        for s in shapes {
            let w = Tensor::f_randn([s.out, s.inp], (Kind::Float, Device::Cpu))?;
            let l = Linear::from_out_in(w, None, m)?;
            let n = f64::from(s.per_token);
            one += n * time(&l, s.inp, 1)?;
            eight += n * time(&l, s.inp, 8)? / 8.0;
        }
        totals.push((name(m).to_string(), one, eight));
    }
    let best = totals
        .iter()
        .min_by(|a, b| (a.1 + a.2).total_cmp(&(b.1 + b.2)))
        .map(|t| t.0.clone())
        .unwrap_or_else(|| "onednn".into());
    Ok(Choice {
        kernel: best,
        us_per_token: totals,
        measured_now: true,
    })
}

/// The cache file of a choice for `shapes` on this machine with `threads`.
pub fn cache_file(shapes: &[Shape], threads: usize) -> std::path::PathBuf {
    let id = format!(
        "{}\n{threads}\n{}\n{shapes:?}",
        engine_kit::machine_key(),
        crate::LIBTORCH_VERSION
    );
    engine_kit::cache_dir()
        .join("kernels")
        .join(format!("torch-{:016x}.json", fnv1a(id.as_bytes())))
}

/// The cached choice for `shapes`, or a new measurement (then cached; a
/// cache that cannot be written only costs the next load a measurement).
pub fn choose(shapes: &[Shape], threads: usize) -> tch::Result<Choice> {
    let file = cache_file(shapes, threads);
    if let Some(c) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str::<Choice>(&t).ok())
        .filter(|c| c.kernel == "onednn" || c.kernel == "addmm")
    {
        return Ok(Choice {
            measured_now: false,
            ..c
        });
    }
    let c = measure(shapes)?;
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string_pretty(&c) {
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    Ok(c)
}
