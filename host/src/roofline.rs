//! Roofline limits of the host, and the efficiency every cell reached
//! against them.
//!
//! # Limits: measured, achievable, per machine
//!
//! [`calibrate`] measures two figures on the machine the run is on:
//!
//! * **memory read bandwidth** ([`Limits::mem_read_gb_s`]): every logical core
//!   sums its share of a 256 MiB buffer of `u64` (8× the 32 MiB L3 of the
//!   machine this was written on, far beyond any last-level cache), written
//!   once before timing so every page is resident (a zeroed allocation would
//!   read the kernel's shared zero page, from cache); the best pass counts.
//!   Each thread sums its contiguous chunk with a plain wrapping `u64` sum,
//!   which the compiler turns into several independent vector accumulators (4×8
//!   lanes with this workspace's `target-cpu=native` on an AVX-512 CPU), so the
//!   loop is bound by loads; the buffer and the sums go through
//!   [`std::hint::black_box`], so no read can be elided or hoisted out of the
//!   pass loop;
//! * **f32 matmul throughput** ([`Limits::matmul_f32_gflop_s`]): a
//!   1024×1024×1024 product (2·n³ FLOP) with the `gemm` crate, the matmul
//!   backend of candle's CPU device, with `Parallelism::Rayon(threads)` in a
//!   rayon pool of that many threads; one warm-up, then the best pass.
//!
//! Each measurement repeats its pass (about 10 ms on the machine this was
//! written on) at least 10 times and for at least 0.6 s, and keeps the fastest:
//! on a shared machine, the window gives quiet moments a chance, and the whole
//! calibration takes 1–2 s. [`Limits::method`] records the pass counts and the
//! load average before measuring. Memory bandwidth is the noisier figure on a
//! VM: on the 2-core machine this was written on, repeated calibrations gave
//! 28–40 GB/s (2 threads) and 210–217 GFLOP/s. A figure measured on a busy
//! machine stays cached until [`recalibrate`] (or deleting [`cache_path`])
//! replaces it.
//!
//! Both figures are **achievable** peaks (what well-tuned code reaches on this
//! machine today), not datasheet figures: the theoretical peak of a CPU
//! (cores × FMA units × SIMD width × clock) and of its memory channels is
//! rarely reachable, and on a shared VM it is not even knowable. An
//! efficiency against an achievable peak answers the practical question
//! "how much is left on the table?". It can exceed 100%: decode's weights
//! partly fit in cache (GPT-2 small's 0.5 GB do not, a tiny model's do),
//! and a busy neighbour may have slowed the calibration. Figures are not
//! clamped.
//!
//! The figures depend on the machine only, so they are measured once and
//! cached per machine ([`cached`]) in `<cache dir>/roofline-<key>.json`, the
//! key hashing the CPU model, logical cores, total memory, kernel, hostname
//! and [`CALIBRATION_VERSION`] (bumped whenever the method changes). A
//! corrupt or foreign cache file is measured again and replaced.
//!
//! GPU limits ([`GpuLimits`]) are not measured yet: [`Limits::gpu`] is
//! `None`. They will come with the NVML telemetry (the project's issue 7),
//! from the device's reported memory bus and clocks or a short CUDA
//! calibration, with [`GpuLimits::source`] saying which.
//!
//! # Why decode is bandwidth-bound and prefill compute-bound
//!
//! A decode step of a batch of `b` sequences reads every weight once (2 bytes
//! or 4 per parameter) and does 2 FLOP per parameter per sequence: its
//! arithmetic intensity is about `2b / bytes_per_element` FLOP/byte (0.5 for
//! f32 at batch 1), far left of the ridge point (`matmul / bandwidth`: about
//! 216 / 30 ≈ 7 FLOP/byte on the machine this was written on), so its time is
//! the bytes it reads divided by the bandwidth. Decode efficiency is therefore
//! **achieved GB/s as a percentage of the bandwidth limit**. Prefill of a
//! `p`-token prompt reuses each weight `p` times (intensity up to `2p /
//! bytes_per_element`; 44 FLOP/byte for a 128-token f32 GPT-2 small prompt,
//! whose `lm_head` runs for the last token only), right of the ridge: its time
//! is its FLOPs divided by matmul throughput, and prefill efficiency is
//! **achieved GFLOP/s as a percentage of the compute limit**. Both intensities
//! are reported too, for the roofline chart.
//!
//! # What is counted
//!
//! From the model's shape ([`crate::synthetic::Gpt2Shape`]):
//!
//! * bytes: every parameter once per forward pass ([`ModelCost::weight_bytes`]:
//!   a tied `wte`/`lm_head` once; GPT-2's position table in full, though a
//!   step reads one row of it per sequence, which overstates GPT-2 small's
//!   bytes by 0.6%; the Llama family's token embedding in full when untied,
//!   though a step reads one row of it per token), plus the KV cache: a
//!   decode step reads `2 · n_layer · kv_heads · head_dim · ctx` elements
//!   per sequence (GPT-2: `kv_heads · head_dim = n_embd`; grouped-query
//!   attention keeps fewer heads), a prefill writes as many for its prompt;
//! * FLOPs: 2 per multiply-add of the layers' matmuls per token (GPT-2's
//!   `c_attn`, attention `c_proj`, `c_fc`, MLP `c_proj`; the Llama
//!   family's q, k, v, o and SwiGLU's gate, up and down), of the causal
//!   attention products `QKᵀ` and `AV` (every query head), and of the
//!   `lm_head` for the tokens whose logits are needed (the last one of a
//!   prompt, every decoded one).
//!
//! Ignored, because they are small against the above or engine-specific:
//! activations (read and written between ops, mostly from cache), biases'
//! additions, layer norms, GELU, softmax and its scaling, embedding
//! lookups, sampling, and the padding or recomputation an engine may do.
//! Element size follows the cell's dtype ([`bytes_per_element`]); the
//! compute limit is the f32 one whatever the dtype, since that is the one a
//! CPU calibration can measure for all engines alike.

use crate::synthetic::Gpt2Shape;
use anyhow::{Context, Result};
pub use engine_matrix_results::run::{Efficiency, GpuLimits, Limits};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Part of the cache key: bump whenever the measuring method changes, so
/// figures measured the old way are measured again.
pub const CALIBRATION_VERSION: u32 = 1;

/// Buffer read by the bandwidth measurement (8× this machine's L3).
const MEM_BUFFER_BYTES: usize = 256 << 20;
/// Side of the square f32 matmul.
const MATMUL_N: usize = 1024;
/// Each measurement repeats its timed pass at least this many times...
const MIN_PASSES: usize = 10;
/// ...and for at least this long (a pass takes ~10 ms here), the best pass
/// counting: a window of most of a second gives a shared machine's quiet
/// moments a chance to show.
const MIN_SECONDS: f64 = 0.6;
/// Whatever the above, a measurement stops after this many passes.
const MAX_PASSES: usize = 1000;
/// The `gemm` crate's version (host/Cargo.toml pins the one candle uses).
const GEMM_VERSION: &str = "0.19.0";

/// What identifies this machine for the cache.
struct Machine {
    description: String,
    key: String,
    logical_cores: usize,
}

impl Machine {
    fn current() -> Self {
        let s = crate::system::collect();
        let cpu = s.cpu_model.unwrap_or_else(|| "unknown CPU".into());
        let identity = format!(
            "{cpu}\n{}\n{}\n{}\n{}\n{CALIBRATION_VERSION}",
            s.logical_cores,
            s.memory_bytes,
            s.kernel.as_deref().unwrap_or(""),
            s.hostname.as_deref().unwrap_or(""),
        );
        Machine {
            description: format!(
                "{cpu}, {} logical cores, {:.1} GiB",
                s.logical_cores,
                s.memory_bytes as f64 / (1u64 << 30) as f64
            ),
            key: format!("{:016x}", engine_kit::fnv1a(identity.as_bytes())),
            logical_cores: s.logical_cores.max(1),
        }
    }
}

/// This machine's cache key (see [`Limits::key`]).
pub fn machine_key() -> String {
    Machine::current().key
}

/// Measures the limits now, with every logical core (1–2 s; prints
/// nothing). See the module docs for the method.
pub fn calibrate() -> Limits {
    let machine = Machine::current();
    let threads = machine.logical_cores;
    let load = load_average();
    let (mem_read_gb_s, mem_passes) = measure_mem_read_gb_s(threads);
    let (matmul_f32_gflop_s, matmul_passes) = measure_matmul_gflop_s(threads);
    let load = match load {
        Some(l) => format!("; 1-minute load average before: {l:.2}"),
        None => String::new(),
    };
    Limits {
        machine: machine.description,
        key: machine.key,
        measured_at: crate::clock::utc_now(),
        threads,
        mem_read_gb_s,
        matmul_f32_gflop_s,
        method: format!(
            "achievable, not datasheet, peaks: memory read = best of {mem_passes} \
             passes summing a pre-written {} MiB u64 buffer with {threads} threads \
             (std::thread::scope, a contiguous chunk per thread, vectorised \
             wrapping sum); f32 matmul = best of {matmul_passes} {n}x{n}x{n} \
             products (2n^3 FLOP) after 1 warm-up, gemm {GEMM_VERSION} with \
             Parallelism::Rayon({threads}) in a {threads}-thread rayon pool{load}",
            MEM_BUFFER_BYTES >> 20,
            n = MATMUL_N,
        ),
        gpu: None,
    }
}

/// Default cache folder: the one synthetic weights use
/// (`$ENGINE_MATRIX_CACHE`, else `$XDG_CACHE_HOME/engine-matrix`, else
/// `~/.cache/engine-matrix`).
pub fn default_dir() -> PathBuf {
    engine_kit::cache_dir()
}

/// This machine's limits, cached in `<dir>/roofline-<key>.json`: read when
/// present and valid, else measured with [`calibrate`] and written
/// atomically (temporary file, then rename). A corrupt file, or one for
/// another key, is replaced; failing to write the cache is an error.
pub fn cached(dir: &Path) -> Result<Limits> {
    let key = machine_key();
    cached_with(dir, &key, calibrate)
}

/// Measures now, whatever the cache holds, and replaces this machine's
/// cache file in `dir` with the result.
pub fn recalibrate(dir: &Path) -> Result<Limits> {
    let limits = calibrate();
    write_cache(dir, &limits.key, &limits)?;
    Ok(limits)
}

/// This machine's cache file in `dir` (present or not).
pub fn cache_path(dir: &Path) -> PathBuf {
    cache_file(dir, &machine_key())
}

fn cache_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("roofline-{key}.json"))
}

/// [`cached`] with the key and the measurement given (tests pass a fake).
fn cached_with(dir: &Path, key: &str, calibrate: impl FnOnce() -> Limits) -> Result<Limits> {
    if let Ok(text) = std::fs::read(cache_file(dir, key)) {
        if let Ok(limits) = serde_json::from_slice::<Limits>(&text) {
            if limits.key == key && limits.is_usable() {
                return Ok(limits);
            }
        }
    }
    let limits = calibrate();
    write_cache(dir, key, &limits)?;
    Ok(limits)
}

/// Writes `limits` as `dir`'s cache file for `key`, atomically.
fn write_cache(dir: &Path, key: &str, limits: &Limits) -> Result<()> {
    let path = cache_file(dir, key);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    // A name of its own per process and call, so concurrent runs never
    // write into each other's temporary file; the rename is atomic.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".roofline-{key}.json.{}-{nanos}.tmp",
        std::process::id()
    ));
    let written = serde_json::to_vec_pretty(limits)
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(std::fs::write(&tmp, text)?))
        .and_then(|()| Ok(std::fs::rename(&tmp, &path)?));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("cannot write {}", path.display())));
    }
    Ok(())
}

/// Repeats `pass` (which returns its own duration, seconds) at least
/// [`MIN_PASSES`] times and for at least [`MIN_SECONDS`], at most
/// [`MAX_PASSES`] times; returns the shortest and the number of passes.
fn best_pass(mut pass: impl FnMut() -> f64) -> (f64, usize) {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut passes = 0;
    while passes < MAX_PASSES
        && (passes < MIN_PASSES || start.elapsed().as_secs_f64() < MIN_SECONDS)
    {
        best = best.min(pass());
        passes += 1;
    }
    (best, passes)
}

/// The 1-minute load average (Linux), recorded in [`Limits::method`]: a
/// busy machine during calibration explains low figures.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Best-pass read bandwidth of a [`MEM_BUFFER_BYTES`] buffer with `threads`
/// threads, GB/s, and the number of passes.
fn measure_mem_read_gb_s(threads: usize) -> (f64, usize) {
    let threads = threads.max(1);
    let n = MEM_BUFFER_BYTES / std::mem::size_of::<u64>();
    let chunk = n.div_ceil(threads);
    // Written with non-zero values by the threads that will read them:
    // every page is resident (and local) before timing.
    let mut buf = vec![0u64; n];
    std::thread::scope(|s| {
        for (c, part) in buf.chunks_mut(chunk).enumerate() {
            s.spawn(move || {
                for (i, v) in part.iter_mut().enumerate() {
                    *v = ((c * chunk + i) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                }
            });
        }
    });
    let (best, passes) = best_pass(|| {
        let data = black_box(buf.as_slice());
        let start = Instant::now();
        let total = std::thread::scope(|s| {
            let mut parts = data.chunks(chunk);
            let mine = parts.next().unwrap_or(&[]);
            let others: Vec<_> = parts
                .map(|part| s.spawn(move || sum_u64(black_box(part))))
                .collect();
            let mut total = sum_u64(black_box(mine));
            for h in others {
                total = total.wrapping_add(h.join().expect("bandwidth thread panicked"));
            }
            total
        });
        let secs = start.elapsed().as_secs_f64();
        black_box(total);
        secs
    });
    (MEM_BUFFER_BYTES as f64 / best / 1e9, passes)
}

/// Wrapping sum of `xs`. Integer addition is associative, so the compiler
/// vectorises this plain loop over contiguous elements with several
/// independent vector accumulators (4 × 8 lanes with AVX-512), bound by
/// loads. (Eight hand-written scalar accumulators over `chunks_exact(8)`
/// made LLVM vectorise across chunks with gathers instead: 5 GB/s even
/// from L3.)
#[inline(never)]
fn sum_u64(xs: &[u64]) -> u64 {
    xs.iter().fold(0u64, |s, &x| s.wrapping_add(x))
}

/// Best-pass f32 GFLOP/s of gemm on a [`MATMUL_N`]-sided square product
/// with `threads` threads, and the number of passes.
fn measure_matmul_gflop_s(threads: usize) -> (f64, usize) {
    let threads = threads.max(1);
    let n = MATMUL_N;
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i % 251) as f32 - 125.0) * 1e-3)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i % 241) as f32 - 120.0) * 1e-3)
        .collect();
    let mut c = vec![0f32; n * n];
    let mut run = || {
        let (a, b) = (black_box(&a), black_box(&b));
        // SAFETY: row-major n×n matrices (column stride 1, row stride n),
        // all three of n·n elements; `c` is not aliased by `a` or `b`.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            );
        }
        black_box(&mut c);
    };
    let mut timed = || {
        run();
        best_pass(|| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
    };
    // A pool of exactly `threads` threads, whatever RAYON_NUM_THREADS says
    // about the global one.
    let (best, passes) = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(timed),
        Err(_) => timed(),
    };
    (2.0 * (n as f64).powi(3) / best / 1e9, passes)
}

/// Bytes and FLOP-relevant sizes of a GPT-2 forward pass.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ModelCost {
    /// All parameters (tied `wte`/`lm_head` counted once).
    pub parameters: f64,
    /// All parameter bytes, read once per decode step (tied `lm_head`
    /// counted once; the position table counted in full).
    pub weight_bytes: f64,
    /// Weights that take part in matmuls per token: the layers' attention
    /// (`c_attn`, `c_proj`) and MLP (`c_fc`, `c_proj`) plus the `lm_head`;
    /// no biases, layer norms, or embedding lookups.
    pub matmul_params: f64,
    /// Of the `lm_head` (`vocab_size · n_embd`), part of `matmul_params`.
    pub lm_head_params: f64,
    /// Bytes per element of weights and KV cache, from the dtype.
    pub bytes_per_element: f64,
}

/// Element size of a dtype: `f16`/`bf16` (also `float16`, `half`,
/// `bfloat16`) 2 bytes; `f32` and anything else (unknown or quantized
/// dtypes are not modelled) 4 bytes. Case-insensitive.
pub fn bytes_per_element(dtype: &str) -> f64 {
    match dtype.to_ascii_lowercase().as_str() {
        "f16" | "float16" | "half" | "fp16" | "bf16" | "bfloat16" => 2.0,
        _ => 4.0,
    }
}

/// Cost of `shape` stored as `dtype` (see [`bytes_per_element`]).
pub fn model_cost(shape: &Gpt2Shape, dtype: &str) -> ModelCost {
    let bytes = bytes_per_element(dtype);
    let parameters = shape.parameters() as f64;
    let lm_head = (shape.vocab_size * shape.n_embd) as f64;
    ModelCost {
        parameters,
        weight_bytes: parameters * bytes,
        matmul_params: layer_matmul_params(shape) + lm_head,
        lm_head_params: lm_head,
        bytes_per_element: bytes,
    }
}

/// Matmul weights of all layers (see [`Gpt2Shape::layer_matmul_params`]):
/// GPT-2's 12·e² per layer when inner = 4e; the Llama family's q, k, v, o
/// (k and v narrower under grouped-query attention) and three SwiGLU
/// projections.
fn layer_matmul_params(shape: &Gpt2Shape) -> f64 {
    shape.layer_matmul_params() as f64
}

/// FLOPs of attention's `QKᵀ` and `AV` when `keys_summed` is the number of
/// keys each query attends to, summed over the queries:
/// 2 products × 2 FLOP × n_layer × (n_head · head_dim) × keys_summed
/// (every query head does the work, whichever key/value head it shares).
fn attention_flops(shape: &Gpt2Shape, keys_summed: f64) -> f64 {
    4.0 * shape.n_layer as f64 * shape.q_width() as f64 * keys_summed
}

/// FLOPs to prefill `prompt` tokens of one sequence:
///
/// `2 · layer_matmul_params · prompt` (the layers' matmuls for every token)
/// `+ 2 · 2 · n_layer · q_width · prompt · (prompt + 1) / 2` (causal `QKᵀ`
/// and `AV`: token i attends to i keys)
/// `+ 2 · vocab_size · n_embd` (the `lm_head` for the last token only).
///
/// 0 for an empty prompt.
pub fn prefill_flops(shape: &Gpt2Shape, prompt: u32) -> f64 {
    if prompt == 0 {
        return 0.0;
    }
    let p = prompt as f64;
    2.0 * layer_matmul_params(shape) * p
        + attention_flops(shape, p * (p + 1.0) / 2.0)
        + 2.0 * (shape.vocab_size * shape.n_embd) as f64
}

/// FLOPs of one decode step of `batch` sequences at context `ctx`:
/// `batch · (2 · matmul_params + 2 · 2 · n_layer · q_width · ctx)`.
pub fn decode_step_flops(shape: &Gpt2Shape, batch: u32, ctx: u32) -> f64 {
    decode_flops_at(shape, batch, ctx as f64)
}

fn decode_flops_at(shape: &Gpt2Shape, batch: u32, ctx: f64) -> f64 {
    let matmul = layer_matmul_params(shape) + (shape.vocab_size * shape.n_embd) as f64;
    batch as f64 * (2.0 * matmul + attention_flops(shape, ctx))
}

/// Bytes of KV cache for `tokens` tokens of one sequence:
/// `2 · n_layer · kv_heads · head_dim · tokens · bytes_per_element`
/// (GPT-2: kv_heads · head_dim = n_embd; grouped-query attention keeps
/// fewer key/value heads).
fn kv_bytes(shape: &Gpt2Shape, cost: &ModelCost, tokens: f64) -> f64 {
    shape.kv_elements_per_token() as f64 * tokens * cost.bytes_per_element
}

/// Bytes a decode step reads for `batch` sequences at context `ctx`: the
/// weights once (shared by the batch) plus each sequence's KV cache,
/// `weight_bytes + kv_elements_per_token · ctx · batch · bytes_per_element`.
pub fn decode_step_bytes(shape: &Gpt2Shape, cost: &ModelCost, batch: u32, ctx: u32) -> f64 {
    decode_bytes_at(shape, cost, batch, ctx as f64)
}

fn decode_bytes_at(shape: &Gpt2Shape, cost: &ModelCost, batch: u32, ctx: f64) -> f64 {
    cost.weight_bytes + batch as f64 * kv_bytes(shape, cost, ctx)
}

/// Bytes a prefill of `batch` prompts of `prompt` tokens moves: the weights
/// once plus the KV cache it writes.
pub fn prefill_bytes(shape: &Gpt2Shape, cost: &ModelCost, batch: u32, prompt: u32) -> f64 {
    cost.weight_bytes + batch as f64 * kv_bytes(shape, cost, prompt as f64)
}

/// The efficiency of a cell of model `shape` in `dtype`, against `limits`.
///
/// * decode: one step of `batch` sequences takes `tpot_ms` (the median time
///   per output token of a sequence) and reads [`decode_step_bytes`] at the
///   average context `input + output / 2`; its GB/s is compared with the
///   bandwidth limit;
/// * prefill: `batch` prompts of `input` tokens take `prefill_ms` (the
///   median engine-reported prefill time, or TTFT where the engine reports
///   none) for `batch ·` [`prefill_flops`]; its GFLOP/s is compared with the
///   compute limit.
///
/// `weight_bytes` replaces the weights' bytes (parameters × the dtype's
/// size) for a quantized model: the bytes its engine reports it holds;
/// `Some(0.0)` (not reported) leaves the decode figures out.
///
/// A figure is `None` where its time is missing, zero, negative or not
/// finite, where `batch` or the phase's length (`output`, `input`) is zero,
/// and (percentages only) where the limit is not positive. Intensities
/// depend on the workload only, and are `Some` whenever the phase exists.
#[allow(clippy::too_many_arguments)]
pub fn efficiency(
    shape: &Gpt2Shape,
    dtype: &str,
    limits: &Limits,
    input: u32,
    output: u32,
    batch: u32,
    tpot_ms: Option<f64>,
    prefill_ms: Option<f64>,
    weight_bytes: Option<f64>,
) -> Efficiency {
    let mut cost = model_cost(shape, dtype);
    // the bytes a quantized model streams, as its engine reports them; 0
    // (unknown) leaves the decode figures out
    let tpot_ms = match weight_bytes {
        Some(b) if b > 0.0 => {
            cost.weight_bytes = b;
            tpot_ms
        }
        Some(_) => None,
        None => tpot_ms,
    };
    let secs = |ms: Option<f64>| ms.filter(|v| v.is_finite() && *v > 0.0).map(|v| v / 1e3);
    let pct = |achieved: f64, limit: f64| {
        (limit.is_finite() && limit > 0.0).then(|| 100.0 * achieved / limit)
    };

    let has_decode = batch > 0 && output > 0;
    let ctx = input as f64 + output as f64 / 2.0;
    let decode_bytes = decode_bytes_at(shape, &cost, batch, ctx);
    let decode_gb_s = secs(tpot_ms)
        .filter(|_| has_decode)
        .map(|s| decode_bytes / s / 1e9);

    let has_prefill = batch > 0 && input > 0;
    let flops = batch as f64 * prefill_flops(shape, input);
    let prefill_gflop_s = secs(prefill_ms)
        .filter(|_| has_prefill)
        .map(|s| flops / s / 1e9);

    Efficiency {
        decode_gb_s,
        decode_pct_of_bandwidth: decode_gb_s.and_then(|g| pct(g, limits.mem_read_gb_s)),
        prefill_gflop_s,
        prefill_pct_of_compute: prefill_gflop_s.and_then(|g| pct(g, limits.matmul_f32_gflop_s)),
        decode_intensity_flop_per_byte: has_decode
            .then(|| decode_flops_at(shape, batch, ctx) / decode_bytes),
        prefill_intensity_flop_per_byte: has_prefill
            .then(|| flops / prefill_bytes(shape, &cost, batch, input)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn gpt2() -> Gpt2Shape {
        Gpt2Shape::from_json(crate::synthetic::preset("gpt2").unwrap(), "gpt2").unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    fn limits(mem: f64, matmul: f64) -> Limits {
        Limits {
            machine: "test machine".into(),
            key: "00000000deadbeef".into(),
            measured_at: "2026-01-01T00:00:00Z".into(),
            threads: 2,
            mem_read_gb_s: mem,
            matmul_f32_gflop_s: matmul,
            method: "made up".into(),
            gpu: None,
        }
    }

    #[test]
    fn gpt2_small_cost() {
        let s = gpt2();
        assert_eq!(
            (s.vocab_size, s.n_positions, s.n_embd, s.n_layer, s.n_head),
            (50257, 1024, 768, 12, 12)
        );
        let c = model_cost(&s, "f32");
        assert_eq!(c.parameters, 124_439_808.0);
        assert_eq!(c.weight_bytes, 124_439_808.0 * 4.0);
        assert_eq!(c.bytes_per_element, 4.0);
        // 12 layers × 12·768² + lm_head 50257·768.
        assert_eq!(12.0 * 12.0 * 768.0 * 768.0, 84_934_656.0);
        assert_eq!(c.lm_head_params, 38_597_376.0);
        assert_eq!(c.matmul_params, 123_532_032.0);
        let h = model_cost(&s, "bf16");
        assert_eq!((h.bytes_per_element, h.weight_bytes), (2.0, 248_879_616.0));
        assert_eq!(model_cost(&s, "F16").bytes_per_element, 2.0);
        assert_eq!(model_cost(&s, "q4_0").bytes_per_element, 4.0);
    }

    #[test]
    fn gpt2_small_prefill_flops() {
        let s = gpt2();
        assert_eq!(prefill_flops(&s, 0), 0.0);
        // 2·84,934,656 + 4·12·768·1 + 2·38,597,376
        assert_eq!(prefill_flops(&s, 1), 247_100_928.0);
        // 2·84,934,656·128 = 21,743,271,936; attention 4·12·768·(128·129/2)
        // = 304,349,184; lm_head 77,194,752.
        assert_eq!(prefill_flops(&s, 128), 22_124_815_872.0);
    }

    #[test]
    fn gpt2_small_decode_bytes_and_flops() {
        let s = gpt2();
        let c = model_cost(&s, "f32");
        assert_eq!(decode_step_bytes(&s, &c, 1, 0), 497_759_232.0);
        // + 2·12·768·100 elements × 4 sequences × 4 bytes
        assert_eq!(
            decode_step_bytes(&s, &c, 4, 100),
            497_759_232.0 + 29_491_200.0
        );
        let h = model_cost(&s, "f16");
        assert_eq!(
            decode_step_bytes(&s, &h, 4, 100),
            248_879_616.0 + 14_745_600.0
        );
        // 2·123,532,032 + 4·12·768·100, per sequence.
        assert_eq!(decode_step_flops(&s, 1, 100), 250_750_464.0);
        assert_eq!(decode_step_flops(&s, 3, 100), 3.0 * 250_750_464.0);
    }

    #[test]
    fn smollm2_costs_count_gqa_kv_and_swiglu() {
        let s = crate::synthetic::Gpt2Shape::from_json(
            crate::synthetic::preset("smollm2-135m").unwrap(),
            "smollm2-135m",
        )
        .unwrap();
        let c = model_cost(&s, "f32");
        assert_eq!(c.parameters, 134_515_008.0);
        // per layer: q 576·576 + k, v 2·576·192 + o 576·576 + 3·576·1536
        // = 3,538,944; 30 layers; lm_head (tied) 49152·576.
        assert_eq!(c.lm_head_params, 28_311_552.0);
        assert_eq!(c.matmul_params, 30.0 * 3_538_944.0 + 28_311_552.0);
        // KV: 2·30·3·64 elements per token (not 2·30·576).
        assert_eq!(
            decode_step_bytes(&s, &c, 2, 100) - decode_step_bytes(&s, &c, 0, 100),
            2.0 * 100.0 * 11_520.0 * 4.0
        );
        // attention FLOPs use all 9 query heads: 4·30·576 per key.
        assert_eq!(
            decode_step_flops(&s, 1, 100) - decode_step_flops(&s, 1, 0),
            4.0 * 30.0 * 576.0 * 100.0
        );
    }

    #[test]
    fn efficiency_against_made_up_limits() {
        let s = gpt2();
        let l = limits(50.0, 200.0);
        let e = efficiency(&s, "f32", &l, 128, 64, 1, Some(20.0), Some(200.0), None);
        // Context 128 + 32 = 160: 497,759,232 + 2·12·768·160·4 bytes.
        let bytes = 509_555_712.0;
        assert!(close(e.decode_gb_s.unwrap(), 25.477_785_6));
        assert!(close(e.decode_pct_of_bandwidth.unwrap(), 50.955_571_2));
        // 22,124,815,872 FLOP in 0.2 s.
        assert!(close(e.prefill_gflop_s.unwrap(), 110.624_079_36));
        assert!(close(e.prefill_pct_of_compute.unwrap(), 55.312_039_68));
        let decode_flops = 247_064_064.0 + 5_898_240.0;
        assert!(close(
            e.decode_intensity_flop_per_byte.unwrap(),
            decode_flops / bytes
        ));
        let prefill_bytes = 497_759_232.0 + 9_437_184.0;
        assert!(close(
            e.prefill_intensity_flop_per_byte.unwrap(),
            22_124_815_872.0 / prefill_bytes
        ));
        assert!(close(
            e.decode_gflop_s().unwrap(),
            decode_flops / 0.02 / 1e9
        ));
        assert!(e.decode_intensity_flop_per_byte.unwrap() < l.ridge_flop_per_byte());
        assert!(e.prefill_intensity_flop_per_byte.unwrap() > l.ridge_flop_per_byte());

        // A batch of 4: the step reads the weights once and 4 KV caches;
        // the prefill does 4 prompts' FLOPs in its time.
        let b = efficiency(&s, "f32", &l, 128, 64, 4, Some(20.0), Some(800.0), None);
        let bytes4 = 497_759_232.0 + 4.0 * 11_796_480.0;
        assert!(close(b.decode_gb_s.unwrap(), bytes4 / 0.02 / 1e9));
        assert!(close(b.prefill_gflop_s.unwrap(), 110.624_079_36));

        // Odd output: average context 128 + 1.5.
        let o = efficiency(&s, "f32", &l, 128, 3, 1, Some(10.0), None, None);
        let bytes_o = 497_759_232.0 + 2.0 * 12.0 * 768.0 * 129.5 * 4.0;
        assert!(close(o.decode_gb_s.unwrap(), bytes_o / 0.01 / 1e9));
    }

    #[test]
    fn efficiency_is_none_without_inputs() {
        let s = gpt2();
        let l = limits(50.0, 200.0);
        let none = efficiency(&s, "f32", &l, 128, 64, 1, None, None, None);
        assert_eq!(none.decode_gb_s, None);
        assert_eq!(none.decode_pct_of_bandwidth, None);
        assert_eq!(none.prefill_gflop_s, None);
        assert_eq!(none.prefill_pct_of_compute, None);
        assert!(none.decode_intensity_flop_per_byte.is_some());
        assert!(none.prefill_intensity_flop_per_byte.is_some());
        assert_eq!(none.decode_gflop_s(), None);

        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = efficiency(&s, "f32", &l, 128, 64, 1, Some(bad), Some(bad), None);
            assert_eq!((e.decode_gb_s, e.prefill_gflop_s), (None, None), "{bad}");
        }
        let zero_batch = efficiency(&s, "f32", &l, 128, 64, 0, Some(10.0), Some(10.0), None);
        assert_eq!(
            zero_batch,
            Efficiency {
                decode_gb_s: None,
                decode_pct_of_bandwidth: None,
                prefill_gflop_s: None,
                prefill_pct_of_compute: None,
                decode_intensity_flop_per_byte: None,
                prefill_intensity_flop_per_byte: None,
            }
        );
        let no_output = efficiency(&s, "f32", &l, 128, 0, 1, Some(10.0), Some(10.0), None);
        assert_eq!(no_output.decode_gb_s, None);
        assert_eq!(no_output.decode_intensity_flop_per_byte, None);
        assert!(no_output.prefill_gflop_s.is_some());
        let no_input = efficiency(&s, "f32", &l, 0, 8, 1, Some(10.0), Some(10.0), None);
        assert_eq!(no_input.prefill_gflop_s, None);
        assert_eq!(no_input.prefill_intensity_flop_per_byte, None);
        assert!(no_input.decode_gb_s.is_some());

        // No usable limits: achieved figures stay, percentages go.
        let e = efficiency(
            &s,
            "f32",
            &limits(0.0, f64::NAN),
            128,
            64,
            1,
            Some(10.0),
            Some(10.0),
            None,
        );
        assert!(e.decode_gb_s.is_some() && e.prefill_gflop_s.is_some());
        assert_eq!(e.decode_pct_of_bandwidth, None);
        assert_eq!(e.prefill_pct_of_compute, None);
    }

    #[test]
    fn a_quantized_model_is_held_to_its_own_bytes() {
        let s = gpt2();
        let l = limits(25.0, 200.0);
        let f32 = efficiency(&s, "f32", &l, 128, 64, 1, Some(20.0), Some(200.0), None);
        let quarter = model_cost(&s, "f32").weight_bytes / 4.0;
        let q = efficiency(
            &s,
            "f32",
            &l,
            128,
            64,
            1,
            Some(20.0),
            Some(200.0),
            Some(quarter),
        );
        let (a, b) = (f32.decode_gb_s.unwrap(), q.decode_gb_s.unwrap());
        // the KV cache's bytes are the same in both
        assert!(b < a / 3.0 && b > a / 4.0, "{a} {b}");
        assert_eq!(q.prefill_gflop_s, f32.prefill_gflop_s);
        let unknown = efficiency(
            &s,
            "f32",
            &l,
            128,
            64,
            1,
            Some(20.0),
            Some(200.0),
            Some(0.0),
        );
        assert_eq!(unknown.decode_gb_s, None);
        assert_eq!(unknown.decode_pct_of_bandwidth, None);
        assert!(unknown.prefill_gflop_s.is_some());
    }

    #[test]
    fn roof() {
        let l = limits(25.0, 200.0);
        assert_eq!(l.ridge_flop_per_byte(), 8.0);
        assert_eq!(l.attainable_gflop_s(0.25), 6.25);
        assert_eq!(l.attainable_gflop_s(100.0), 200.0);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("em-roofline-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn cache_is_written_once_and_reused() {
        let dir = temp_dir("reuse").join("nested");
        let key = "0123456789abcdef";
        let calls = Cell::new(0);
        let fake = |mem: f64| {
            calls.set(calls.get() + 1);
            Limits {
                key: key.into(),
                measured_at: crate::clock::utc_now(),
                ..limits(mem, 100.0)
            }
        };
        let first = cached_with(&dir, key, || fake(10.0)).unwrap();
        assert_eq!(calls.get(), 1);
        let path = dir.join(format!("roofline-{key}.json"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(serde_json::from_slice::<Limits>(&bytes).unwrap(), first);

        let second = cached_with(&dir, key, || fake(20.0)).unwrap();
        assert_eq!(calls.get(), 1, "the cached figures were measured again");
        assert_eq!(second, first);
        assert_eq!(second.measured_at, first.measured_at);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Only the cache file is left: no temporary files.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn corrupt_or_foreign_cache_is_replaced() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let key = "fedcba9876543210";
        let path = dir.join(format!("roofline-{key}.json"));
        let fake = |mem: f64| Limits {
            key: key.into(),
            ..limits(mem, 100.0)
        };
        for junk in [
            b"{ not json".to_vec(),
            Vec::new(),
            // Valid JSON for another machine, and unusable figures.
            serde_json::to_vec(&limits(10.0, 100.0)).unwrap(),
            serde_json::to_vec(&fake(-1.0)).unwrap(),
        ] {
            std::fs::write(&path, &junk).unwrap();
            let got = cached_with(&dir, key, || fake(42.0)).unwrap();
            assert_eq!(got, fake(42.0));
            let on_disk: Limits = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(on_disk, got);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_cache_is_an_error() {
        let dir = temp_dir("unwritable");
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        // A file where the folder should be.
        std::fs::write(&dir, b"").unwrap();
        let err = cached_with(&dir, "k", || limits(1.0, 1.0)).unwrap_err();
        assert!(format!("{err:#}").contains("cache folder"), "{err:#}");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn best_pass_keeps_the_fastest() {
        let mut i = 0.0;
        let (best, passes) = best_pass(|| {
            i += 1.0;
            1.0 / i
        });
        assert!((MIN_PASSES..=MAX_PASSES).contains(&passes), "{passes}");
        assert_eq!(best, 1.0 / passes as f64);
    }

    #[test]
    fn sum_u64_sums_every_element() {
        let xs: Vec<u64> = (1..=1003).collect();
        assert_eq!(sum_u64(&xs), 1003 * 1004 / 2);
        assert_eq!(sum_u64(&[]), 0);
        assert_eq!(sum_u64(&[u64::MAX, 2]), 1);
    }

    /// Measures for real (about a second); checks sanity only, never speed.
    /// `--nocapture` prints the figures.
    #[test]
    fn real_calibration_is_sane() {
        let l = calibrate();
        println!("{}", serde_json::to_string_pretty(&l).unwrap());
        assert!(
            l.mem_read_gb_s.is_finite() && l.mem_read_gb_s > 0.1,
            "{l:?}"
        );
        assert!(
            l.matmul_f32_gflop_s.is_finite() && l.matmul_f32_gflop_s > 0.1,
            "{l:?}"
        );
        assert!(l.threads >= 1);
        assert_eq!(l.key, machine_key());
        assert_eq!(l.key.len(), 16);
        assert!(l.is_usable());
        assert_eq!(l.gpu, None);
    }
}
