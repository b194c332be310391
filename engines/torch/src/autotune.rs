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
//! warm-up: the median of [`RUNS`] calls each, the two kernels alternated
//! and the caches evicted before every call ([`engine_kit::evict`]), so
//! the weight comes from memory as in a decode step. (Before 2026-12-07
//! the calls ran back to back on a weight left in cache by the previous
//! call; those timings summed to about 22 ms of linear layers in
//! SmolLM2's f32 step, which took 40–60 ms, and misled the search for
//! where the rest went.) Each layer class (the five
//! shapes: attention in and out, MLP in and out, lm_head) gets the kernel
//! with the lower per-token time summed over the two batch sizes (batch 1
//! and batch 8 weigh the same), so a model may mix kernels: oneDNN where
//! MKL re-packs the weight at batch 8, MKL where its gemv streams faster
//! at batch 1. A single kernel for the whole model, as before, lost to
//! `matmul: onednn` by a quarter at batch 8 on SmolLM2 (210 against 160
//! ms per step, 2026-12-07): its sum over the model was a coin toss
//! between one kernel's batch-1 lead and the other's batch-8 lead. Every
//! class still holds one copy of its weight, in its kernel's layout.
//!
//! The choice and its timings are cached per machine key, dtype, threads
//! and shapes (`<cache>/kernels/torch-<key>.json`), as the host's roofline
//! calibration is, so a model loads at full speed after the first time.
//! The model's `describe()` says which kernel runs and whether it was
//! measured now, read from the cache, or forced by the option.

use crate::linear::{Kernels, Linear, MatMul};
use engine_kit::evict::Evictor;
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

/// One layer class's measurement and choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeChoice {
    pub inp: i64,
    pub out: i64,
    /// `onednn` or `addmm`.
    pub kernel: String,
    /// Per-token microseconds of this class (all its layers) at batch 1
    /// and at batch 8, with each kernel.
    pub onednn_us: (f64, f64),
    pub addmm_us: (f64, f64),
}

/// The measured choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Per-token microseconds of every linear layer at batch 1 and per
    /// token at batch 8, per kernel (the model on one kernel).
    pub us_per_token: Vec<(String, f64, f64)>,
    /// Each class's choice, in the order of the shapes.
    pub per_shape: Vec<ShapeChoice>,
    /// Whether this load measured it (`false`: read from the cache).
    #[serde(default)]
    pub measured_now: bool,
}

fn parse(kernel: &str) -> Option<MatMul> {
    match kernel {
        "onednn" => Some(MatMul::OneDnn),
        "addmm" => Some(MatMul::Addmm),
        _ => None,
    }
}

impl Choice {
    /// The kernel of each layer class (`None` when the choice does not
    /// cover the five classes with known kernels).
    pub fn kernels(&self) -> Option<Kernels> {
        let k = self
            .per_shape
            .iter()
            .map(|c| parse(&c.kernel))
            .collect::<Option<Vec<_>>>()?;
        Kernels::from_classes(&k)
    }
}

fn name(m: MatMul) -> &'static str {
    match m {
        MatMul::Addmm => "addmm",
        MatMul::OneDnn => "onednn",
        MatMul::Int8 => "int8",
        MatMul::Int8Dynamic => "int8-dynamic",
        MatMul::Int4 => "int4",
    }
}

/// Median microseconds of `a` and `b` on `rows` rows of `inp` inputs:
/// two warm-up calls each, then [`RUNS`] rounds alternating which goes
/// first (so drift from a busy neighbour hits both), every timed call
/// preceded by an eviction of the caches, so the weight comes from memory
/// as in a decode step that streams the whole model.
fn time_pair(
    a: &Linear,
    b: &Linear,
    inp: i64,
    rows: i64,
    evictor: &mut Evictor,
) -> tch::Result<(f64, f64)> {
    let x = Tensor::f_randn([rows, inp], (Kind::Float, Device::Cpu))?;
    for _ in 0..2 {
        drop(a.forward(&x)?);
        drop(b.forward(&x)?);
    }
    let (mut ta, mut tb) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for round in 0..RUNS {
        let order = if round % 2 == 0 {
            [(a, &mut ta), (b, &mut tb)]
        } else {
            [(b, &mut tb), (a, &mut ta)]
        };
        for (l, times) in order {
            evictor.evict();
            let s = Instant::now();
            drop(l.forward(&x)?);
            times.push(s.elapsed().as_secs_f64() * 1e6);
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[RUNS / 2]
    };
    Ok((median(&mut ta), median(&mut tb)))
}

/// Times both kernels on `shapes` (f32, CPU, the calling thread's libtorch
/// threads).
pub fn measure(shapes: &[Shape]) -> tch::Result<Choice> {
    let _g = tch::no_grad_guard();
    let mut evictor = Evictor::new();
    let mut per_shape = Vec::with_capacity(shapes.len());
    for s in shapes {
        let n = f64::from(s.per_token);
        let w = Tensor::f_randn([s.out, s.inp], (Kind::Float, Device::Cpu))?;
        let onednn = Linear::from_out_in(w.shallow_clone(), None, MatMul::OneDnn)?;
        let addmm = Linear::from_out_in(w, None, MatMul::Addmm)?;
        let (o1, a1) = time_pair(&onednn, &addmm, s.inp, 1, &mut evictor)?;
        let (o8, a8) = time_pair(&onednn, &addmm, s.inp, 8, &mut evictor)?;
        let onednn_us = (n * o1, n * o8 / 8.0);
        let addmm_us = (n * a1, n * a8 / 8.0);
        // a tie keeps oneDNN, the kernel of the fixed default
        let kernel = if addmm_us.0 + addmm_us.1 < onednn_us.0 + onednn_us.1 {
            "addmm"
        } else {
            "onednn"
        };
        per_shape.push(ShapeChoice {
            inp: s.inp,
            out: s.out,
            kernel: kernel.into(),
            onednn_us,
            addmm_us,
        });
    }
    let total = |f: fn(&ShapeChoice) -> (f64, f64)| {
        per_shape
            .iter()
            .map(f)
            .fold((0.0, 0.0), |a, t| (a.0 + t.0, a.1 + t.1))
    };
    let (o, a) = (total(|c| c.onednn_us), total(|c| c.addmm_us));
    Ok(Choice {
        us_per_token: vec![
            (name(MatMul::OneDnn).into(), o.0, o.1),
            (name(MatMul::Addmm).into(), a.0, a.1),
        ],
        per_shape,
        measured_now: true,
    })
}

/// The cache file of a choice for `shapes` on this machine with `threads`.
pub fn cache_file(shapes: &[Shape], threads: usize) -> std::path::PathBuf {
    let id = format!(
        "{}\n{threads}\n{}\n{shapes:?}\nper-class, caches evicted",
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
        .filter(|c| c.per_shape.len() == shapes.len() && c.kernels().is_some())
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
