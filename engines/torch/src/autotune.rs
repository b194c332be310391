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
//! that is faster **for the batch the load will run** ([`Choice::decide`],
//! from the load's `max_batch`): the one-row times when it is 1, the
//! eight-row times otherwise. So a model may mix kernels: oneDNN where
//! MKL re-packs the weight at batch 8, MKL where its gemv streams faster
//! at batch 1. Every class holds one copy of its weight, in its kernel's
//! layout, so one choice cannot serve both batches when the kernels trade
//! places; the host loads a model per `max_batch` anyway. History: a
//! single kernel for the whole model lost to `matmul: onednn` by a quarter
//! at batch 8 on SmolLM2 (210 against 160 ms per step, 2026-12-07); then
//! a per-class choice by the sum of the two batches' per-token times,
//! which the batch-1 times dominate once timed from memory, ran SmolLM2's
//! batch-8 decode at 130 ms against forced oneDNN's 102 (medians of 3,
//! docs/performance-log.md).
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
    /// `onednn` or `addmm`: the kernel [`Choice::decide`] chose for the
    /// load's batch.
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
    /// Gives each class the kernel with the lower per-token time at the
    /// batch a load with `max_batch` runs: one row when it is 1, eight
    /// rows otherwise (a tie keeps oneDNN, the fixed default).
    pub fn decide(&mut self, max_batch: u32) {
        for c in &mut self.per_shape {
            let (o, a) = if max_batch <= 1 {
                (c.onednn_us.0, c.addmm_us.0)
            } else {
                (c.onednn_us.1, c.addmm_us.1)
            };
            c.kernel = if a < o { "addmm" } else { "onednn" }.into();
        }
    }

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
        per_shape.push(ShapeChoice {
            inp: s.inp,
            out: s.out,
            kernel: String::new(), // set by `decide`
            onednn_us: (n * o1, n * o8 / 8.0),
            addmm_us: (n * a1, n * a8 / 8.0),
        });
    }
    let total = |f: fn(&ShapeChoice) -> (f64, f64)| {
        per_shape
            .iter()
            .map(f)
            .fold((0.0, 0.0), |a, t| (a.0 + t.0, a.1 + t.1))
    };
    let (o, a) = (total(|c| c.onednn_us), total(|c| c.addmm_us));
    let mut c = Choice {
        us_per_token: vec![
            (name(MatMul::OneDnn).into(), o.0, o.1),
            (name(MatMul::Addmm).into(), a.0, a.1),
        ],
        per_shape,
        measured_now: true,
    };
    c.decide(1);
    Ok(c)
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

/// The cached timings for `shapes`, or a new measurement (then cached; a
/// cache that cannot be written only costs the next load a measurement),
/// decided for a load of `max_batch`.
pub fn choose(shapes: &[Shape], threads: usize, max_batch: u32) -> tch::Result<Choice> {
    let file = cache_file(shapes, threads);
    if let Some(mut c) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str::<Choice>(&t).ok())
        .filter(|c| c.per_shape.len() == shapes.len() && c.kernels().is_some())
    {
        c.measured_now = false;
        c.decide(max_batch);
        return Ok(c);
    }
    let mut c = measure(shapes)?;
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string_pretty(&c) {
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    c.decide(max_batch);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(onednn_us: (f64, f64), addmm_us: (f64, f64)) -> ShapeChoice {
        ShapeChoice {
            inp: 64,
            out: 64,
            kernel: String::new(),
            onednn_us,
            addmm_us,
        }
    }

    /// The batch-1 load follows the one-row column, a batched load the
    /// eight-row one, even where the sum of both would choose otherwise;
    /// a tie keeps oneDNN.
    #[test]
    fn each_class_gets_the_faster_kernel_at_the_loads_batch() {
        let mut c = Choice {
            us_per_token: vec![],
            per_shape: vec![
                // addmm much faster at 1 row, oneDNN faster at 8
                class((20.0, 5.0), (10.0, 7.0)),
                // oneDNN faster at both
                class((1.0, 1.0), (2.0, 2.0)),
                // ties
                class((3.0, 3.0), (3.0, 3.0)),
                class((1.0, 1.0), (1.0, 1.0)),
                class((1.0, 1.0), (1.0, 1.0)),
            ],
            measured_now: true,
        };
        let kinds = |c: &Choice| {
            c.per_shape
                .iter()
                .map(|s| s.kernel.clone())
                .collect::<Vec<_>>()
        };
        c.decide(1);
        assert_eq!(kinds(&c), ["addmm", "onednn", "onednn", "onednn", "onednn"]);
        assert_eq!(c.kernels().map(|k| k.mlp_in), Some(MatMul::OneDnn));
        c.decide(8);
        assert_eq!(
            kinds(&c),
            ["onednn", "onednn", "onednn", "onednn", "onednn"]
        );
        c.decide(2);
        assert_eq!(c.per_shape[0].kernel, "onednn");
    }
}
