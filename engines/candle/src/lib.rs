//! engine-matrix plugin `candle`: GPT-2 and the Llama family (Llama,
//! Qwen2, Mistral) on [candle](https://github.com/huggingface/candle)
//! 0.11.1, pure Rust, CPU (and CUDA with the `cuda` feature).
//!
//! The models are in [`gpt2`] and [`llama`] (their docs explain the layout
//! and kernel choices); this file adapts it to [`engine_kit::Backend`], so batching,
//! sampling and timing come from the shared scheduler, and exports the
//! [`engine_api::Engine`] named `candle`.
//!
//! # Loading
//!
//! `spec.path` is a Hugging Face-style folder with `config.json` and
//! `model.safetensors` (or the shards of `model.safetensors.index.json`);
//! `config.json`'s `model_type` picks the architecture and must match the
//! spec's. The safetensors files are memory-mapped
//! ([`candle_core::safetensors::MmapedSafetensors`]); every tensor's name
//! and shape is checked against `config.json` before anything is built,
//! so a broken checkpoint fails with an `invalid model` error that names
//! the file, the tensor and the shapes. Weights are then copied out of the
//! map (converted to the requested dtype), so the map is dropped after
//! load. The model runs one short warm-up prefill and decode so that
//! first-use costs (allocator arenas, gemm scratch buffers, candle's thread
//! pools) do not land in the first measured request.
//!
//! dtypes: `f32`, `f16` and `bf16`; weights are converted at load and
//! logits are always handed out as f32. f16 uses gemm's f16 kernels (the
//! fused element-wise ops compute in f32; attention takes the unfused
//! gemm + softmax path). bf16 works but is
//! slow on the CPU: gemm has no bf16 kernel, so candle 0.11.1 widens both
//! operands of every matmul to f32, weights included. A dtype is accepted
//! after a probe (a tiny run of every op the model uses) succeeds on the
//! device, so `info()` and `load` reflect what this candle build can do;
//! a failing probe is reported as `unsupported` with candle's error.
//!
//! # Quantization
//!
//! `quantization: none` runs the weights in the dtype; `q8_0`, `q4_0`,
//! `q4_1` and `q4_k` quantize the f32 linear weights (and the lm_head) at
//! load with candle's ggml block types and run them through its quantized
//! matmul ([`quant`]); `gguf` runs the quantized tensors of the GGUF file a
//! folder was imported from, as shipped ([`gguf`]). Quantized weights need
//! `dtype: f32` (activations, KV cache, embeddings and norms stay f32) and
//! the CPU; any other combination is `unsupported`, naming it.
//!
//! # Options (`options_json`)
//!
//! * `threads` (default: the number of cores the process may use): size of
//!   this model's rayon pool;
//! * `device`: `cpu` (default), or `cuda` / `cuda:N` when built with the
//!   `cuda` feature;
//! * `kernels`: `auto` (default), `fused`, `gemv` or `stock`. The first
//!   three run panel-major weights and the fused CPU kernels of [`ops`];
//!   they differ in the batch-1 and small-batch (2 to 16 rows: batched
//!   decode) products of f32 weights: `auto` times gemm against [`gemv`]'s
//!   register kernels on each weight shape at load and keeps the faster
//!   of each pair, cached per machine ([`autotune`]); `fused` always uses
//!   gemm (the kernels before `auto`); `gemv` always the register kernels. `stock` is candle's own ops only,
//!   to measure out-of-the-box candle: a reference, not a candidate of
//!   `auto`, as its matmul is gemm's on the plain `[k, n]` layout that the
//!   panels beat (see [`matmul`]). The choice is thread-local state set on
//!   every thread of the model's rayon pool, where all its tensor work
//!   runs; `describe()` records what ran for each shape.
//!
//! Unknown keys are an error that names them.
//!
//! # Threads
//!
//! candle has no thread setting of its own: its CPU matmul (gemm) and its
//! row-parallel ops (layer norm, softmax) run on the *current* rayon pool,
//! and `Tensor::matmul` splits each product into
//! `candle_core::utils::get_num_threads()` pieces, which is
//! `RAYON_NUM_THREADS`, else the number of physical cores. So every
//! prefill, decode and score here runs inside `pool.install(..)` on a
//! dedicated pool of `threads` threads, and this crate's own matmul
//! ([`matmul`]) sizes its split from that pool, not from the environment.
//! candle additionally keeps a global "barrier pool" for its generic
//! element-wise ops on tensors of 64K+ elements, sized by
//! `CANDLE_NUM_THREADS` (else `RAYON_NUM_THREADS`, else the core count);
//! on our hot path only the embedding add of a long prompt reaches it,
//! since bias, activation, residual and attention are fused ops that run
//! on our pool.
//!
//! Do not oversubscribe: more runnable threads than cores (`threads`
//! above the core count, two models or engines running at once, a busy
//! neighbour) means some thread of a step gets descheduled for a time
//! slice of milliseconds while the step waits for its last piece of work,
//! on top of the threads competing for the same memory bandwidth and
//! caches; idle rayon and barrier-pool workers also spin briefly before
//! parking, stealing cycles from the threads that have work. Measured
//! here, `threads: 4` on the 2 cores kept the medians (work is split into
//! several stealable runs per thread) but widened the tail (batch-1 decode
//! p90 20.2 ms vs 18.5 ms); a second busy process on the machine costs far
//! more. Keep `threads` <= cores, and `RAYON_NUM_THREADS` /
//! `CANDLE_NUM_THREADS` unset or equal to it (they size candle's own
//! splits: `Tensor::matmul` on the bf16 / non-CPU paths and the barrier
//! pool).

pub mod autotune;
pub mod gemv;
pub mod gguf;
pub mod gpt2;
pub mod kv;
pub mod llama;
pub mod matmul;
pub mod ops;
pub mod qpack;
pub mod quant;

use candle_core::{DType, Device, Tensor};
use engine_api::{Engine, EngineError, EngineInfo, LoadOptions, Model, ModelSpec};
use engine_kit::arch::ModelConfig;
use engine_kit::{CacheBytes, Kernels, Limits, Sequences};
use gpt2::Gpt2;
use kv::{KvCache, KvPool};
use llama::Llama;
use quant::Quantization;
use serde::Deserialize;
use std::path::PathBuf;

/// The architectures this engine implements (`config.json`'s
/// `model_type`).
pub const ARCHITECTURES: [&str; 4] = ["gpt2", "llama", "qwen2", "mistral"];

/// The candle release this plugin is built against (kept equal to the
/// `candle-core` version in Cargo.toml).
pub const CANDLE_VERSION: &str = "0.11.1";

/// Engine-specific options, parsed from `LoadOptions::options_json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandleOptions {
    /// rayon threads for this model; default: available cores.
    pub threads: Option<usize>,
    /// `cpu`, `cuda` or `cuda:N`; default `cpu`.
    pub device: Option<String>,
    /// `auto` (default): panel-major weights and this crate's fused CPU
    /// kernels, each shape's batch-1 and small-batch kernels measured;
    /// `fused`: the same with gemm at every batch; `gemv`: with the register
    /// kernels up to 16 rows;
    /// `stock`: candle's own ops only (`Tensor::matmul`, `broadcast_add`,
    /// `gelu`, softmax, `slice_set`), to measure out-of-the-box candle.
    pub kernels: Option<String>,
}

/// A candle error's message without the backtrace candle attaches when
/// `RUST_BACKTRACE` is set (it would otherwise end up in every result file).
pub fn error_text(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => error_text(inner),
        E::Context { inner, context } => format!("{context}: {}", error_text(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), error_text(inner)),
        other => other.to_string(),
    }
}

fn candle_err(what: &str) -> impl Fn(candle_core::Error) -> EngineError + '_ {
    move |e| EngineError::runtime(format!("candle {what}: {}", error_text(&e)))
}

/// The `candle` engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct CandleEngine;

impl CandleEngine {
    pub fn new() -> Self {
        CandleEngine
    }
}

fn parse_dtype(s: &str) -> Result<DType, EngineError> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(EngineError::unsupported(format!(
            "dtype {other:?} is not supported by candle (f32, f16, bf16)"
        ))),
    }
}

fn parse_device(s: &str) -> Result<Device, EngineError> {
    let s = s.trim();
    let Some(ordinal) = engine_kit::parse_device("candle", s)? else {
        return Ok(Device::Cpu);
    };
    if !cfg!(feature = "cuda") {
        return Err(EngineError::unsupported(format!(
            "device {s}: this build of em-candle has no CUDA support (build with --features cuda)"
        )));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| EngineError::unsupported(format!("device {s} is not available: {e}")))
}

/// Runs the ops the model needs, tiny, in `dtype` on `dev`; the error says
/// which one failed.
fn probe_dtype(dtype: DType, dev: &Device) -> Result<(), String> {
    let run = || -> candle_core::Result<()> {
        let t = |shape: &[usize]| Tensor::ones(shape, DType::F32, dev)?.to_dtype(dtype);
        let w = matmul::Weight::new(&t(&[4, 8])?)?;
        let bias = t(&[8])?;
        let y = w.matmul(&t(&[2, 4])?)?;
        let y = candle_nn::ops::layer_norm(&y, &bias, &bias, 1e-5)?;
        let y = ops::bias_act(y, &bias, ops::Act::GeluTanh)?;
        let q = y.reshape((1, 1, 2, 8))?;
        let a = ops::attention(&q, &q.transpose(2, 3)?.contiguous()?, &q)?;
        ops::swiglu(&a)?;
        candle_nn::ops::rms_norm(&a.contiguous()?, &t(&[8])?, 1e-5)?;
        let cs = t(&[2, 4])?;
        candle_nn::rotary_emb::rope(&q.contiguous()?, &cs, &cs)?;
        w.columns(&[1], dev)?;
        a.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    };
    // the probe's tiny weight is no shape of the model: nothing to tune
    autotune::without_plan(run).map_err(|e| error_text(&e))
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "?",
    }
}

/// What `tune` may search: the kit's options, the kernel set, and (only
/// when a matrix asks, as they change the output) dtype and quantization.
fn tunables() -> Vec<engine_api::tunable::Tunable> {
    use engine_api::tunable::Tunable;
    let mut t = engine_kit::tunables();
    t.push(Tunable::choice(
        "kernels",
        &["auto", "fused", "gemv", "stock"],
        "auto",
        "fused CPU kernels with the batch-1 and small-batch products measured (auto), gemm \
         (fused) or the register kernels (gemv), or candle's stock ops",
    ));
    let dtypes: Vec<&str> = [DType::F32, DType::F16, DType::BF16]
        .into_iter()
        .filter(|d| probe_dtype(*d, &Device::Cpu).is_ok())
        .map(dtype_name)
        .collect();
    t.push(Tunable::choice("dtype", &dtypes, "f32", "compute dtype").changing_output());
    t.push(
        // `gguf` (the file's own types) is no choice for a folder model.
        Tunable::choice(
            "quantization",
            &quant::NAMES[..5],
            "none",
            "weight quantization",
        )
        .changing_output(),
    );
    t
}

impl Engine for CandleEngine {
    fn info(&self) -> EngineInfo {
        let mut devices = vec!["cpu".to_string()];
        if cfg!(feature = "cuda") && Device::new_cuda(0).is_ok() {
            devices.push("cuda:0".into());
        }
        let dtypes = [DType::F32, DType::F16, DType::BF16]
            .into_iter()
            .filter(|d| probe_dtype(*d, &Device::Cpu).is_ok())
            .map(|d| dtype_name(d).into());
        let tags = [
            // On the CPU the f32/f16 hot path is this crate's panel-major
            // gemm calls and fused kernels over candle tensors, not stock
            // candle ops (see gpt2.rs): say so wherever results are shown.
            "kernels:auto (default)",
            "kernels:fused",
            "kernels:gemv",
            "kernels:stock",
        ];
        EngineInfo {
            name: "candle".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            runtime_version: format!("candle {CANDLE_VERSION}").into(),
            devices: devices.into_iter().map(Into::into).collect(),
            dtypes: dtypes.collect(),
            quantizations: quant::NAMES.iter().map(|&q| q.into()).collect(),
            capabilities: engine_kit::capabilities(&tags),
            tunables: engine_api::tunable::to_json(&tunables()),
        }
    }

    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
        let backend = open(spec, options.options_json.as_str())?;
        Ok(Box::new(engine_kit::spawn(backend, options)?))
    }
}

/// A model of one of the architectures this engine implements.
#[derive(Debug, Clone)]
pub enum Net {
    Gpt2(Gpt2),
    Llama(Llama),
}

impl From<Gpt2> for Net {
    fn from(m: Gpt2) -> Self {
        Net::Gpt2(m)
    }
}

impl From<Llama> for Net {
    fn from(m: Llama) -> Self {
        Net::Llama(m)
    }
}

impl Net {
    pub fn limits(&self) -> Limits {
        match self {
            Net::Gpt2(m) => m.config().limits(),
            Net::Llama(m) => m.config().limits(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Net::Gpt2(m) => m.dtype(),
            Net::Llama(m) => m.dtype(),
        }
    }

    /// Bytes of all weights as held in memory.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Net::Gpt2(m) => m.weight_bytes(),
            Net::Llama(m) => m.weight_bytes(),
        }
    }

    /// Bytes a decode step streams (the roofline's): [`Net::weight_bytes`]
    /// less an embedding table kept only for lookups.
    pub fn streamed_weight_bytes(&self) -> usize {
        match self {
            Net::Gpt2(m) => m.streamed_weight_bytes(),
            Net::Llama(m) => m.streamed_weight_bytes(),
        }
    }

    /// KV cache bytes per token of one sequence.
    pub fn kv_bytes_per_token(&self) -> usize {
        match self {
            Net::Gpt2(m) => m.kv_bytes_per_token(),
            Net::Llama(m) => m.kv_bytes_per_token(),
        }
    }

    /// See [`Gpt2::prefill`].
    pub fn prefill(
        &self,
        prompts: &[&[u32]],
        pool: &mut KvPool,
    ) -> candle_core::Result<(Tensor, Vec<KvCache>)> {
        match self {
            Net::Gpt2(m) => m.prefill(prompts, pool),
            Net::Llama(m) => m.prefill(prompts, pool),
        }
    }

    /// See [`Gpt2::decode`].
    pub fn decode(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        pool: &mut KvPool,
    ) -> candle_core::Result<Tensor> {
        match self {
            Net::Gpt2(m) => m.decode(tokens, caches, pool),
            Net::Llama(m) => m.decode(tokens, caches, pool),
        }
    }

    /// See [`Gpt2::extend`].
    pub fn extend(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        pool: &mut KvPool,
    ) -> candle_core::Result<Tensor> {
        match self {
            Net::Gpt2(m) => m.extend(tokens, cache, pool),
            Net::Llama(m) => m.extend(tokens, cache, pool),
        }
    }

    /// See [`Gpt2::score`].
    pub fn score(&self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        match self {
            Net::Gpt2(m) => m.score(tokens),
            Net::Llama(m) => m.score(tokens),
        }
    }
}

/// The kernels on candle: the model, its thread pool and the pool of
/// freed KV caches kept for reuse. The kit's [`Sequences`] table owns the
/// live sequences.
pub struct CandleKernels {
    model: Net,
    pool: rayon::ThreadPool,
    kv_pool: KvPool,
    weight_bytes: u64,
    /// What ran: the batch-1 kernel policy and each shape's choice.
    kernels: serde_json::Value,
}

/// What the scheduler drives: the kernels plus the kit's sequence table.
pub type CandleBackend = Sequences<CandleKernels>;

/// Loads `spec` with engine options `options_json` (see the crate docs)
/// and warms it up.
pub fn open(spec: &ModelSpec, options_json: &str) -> Result<CandleBackend, EngineError> {
    Sequences::warmed(CandleKernels::open(spec, options_json)?)
}

/// Wraps an already built model (e.g. from in-memory weights) with a pool
/// of `threads` threads, warmed up.
pub fn from_model(model: impl Into<Net>, threads: usize) -> Result<CandleBackend, EngineError> {
    Sequences::warmed(CandleKernels::from_model(model, threads)?)
}

impl std::fmt::Debug for CandleKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleKernels")
            .field("limits", &self.model.limits())
            .field("dtype", &self.model.dtype())
            .field("threads", &self.pool.current_num_threads())
            .finish()
    }
}

fn thread_pool(
    threads: usize,
    stock: bool,
    plan: Option<std::sync::Arc<autotune::Plan>>,
) -> Result<rayon::ThreadPool, EngineError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("em-candle-{i}"))
        .start_handler(move |_| {
            ops::set_stock_kernels(stock);
            autotune::set_plan(plan.clone());
        })
        .build()
        .map_err(|e| EngineError::runtime(format!("cannot start {threads} threads: {e}")))
}

/// Checks every tensor the model reads: present, right shape, float.
/// `label` names the file (or the folder of a sharded checkpoint).
fn check_tensors(
    label: &std::path::Path,
    st: &candle_core::safetensors::MmapedSafetensors,
    cfg: &ModelConfig,
) -> Result<(), EngineError> {
    let lookup = |name: &str| {
        let view = st.get(name).ok()?;
        use safetensors::Dtype as St;
        Some(engine_kit::gpt2::TensorMeta {
            shape: view.shape().to_vec(),
            is_float: matches!(view.dtype(), St::F32 | St::F16 | St::BF16 | St::F64),
            dtype: format!("{:?}", view.dtype()),
        })
    };
    match cfg {
        ModelConfig::Gpt2(c) => engine_kit::gpt2::check_tensors(label, c, lookup).map(|_| ()),
        ModelConfig::Llama(c) => engine_kit::llama::check_tensors(label, c, lookup),
    }
}

impl CandleKernels {
    /// Loads `spec` with engine options `options_json` (see the crate docs).
    pub fn open(spec: &ModelSpec, options_json: &str) -> Result<Self, EngineError> {
        // The kit checks the architecture; the quantizations are this
        // engine's own.
        let unquantized = ModelSpec {
            quantization: "none".into(),
            ..spec.clone()
        };
        engine_kit::arch::check_spec("candle", &unquantized, &ARCHITECTURES)?;
        let quantization = Quantization::parse(spec.quantization.as_str())?;
        let dtype = parse_dtype(spec.dtype.as_str())?;
        if quantization != Quantization::None && dtype != DType::F32 {
            return Err(EngineError::unsupported(format!(
                "quantization {} with dtype {}: candle's quantized matmuls take f32                  activations (use dtype f32)",
                spec.quantization.as_str(),
                spec.dtype.as_str()
            )));
        }
        let opts: CandleOptions = engine_kit::engine_options("candle", options_json)?;
        let threads = engine_kit::threads("candle", opts.threads)?;
        let device = parse_device(opts.device.as_deref().unwrap_or("cpu"))?;
        if quantization != Quantization::None && !device.is_cpu() {
            return Err(EngineError::unsupported(format!(
                "quantization {} on {device:?}: candle's quantized weights run on the CPU only here",
                spec.quantization.as_str()
            )));
        }
        let (stock, batch1) = match opts.kernels.as_deref().unwrap_or("auto") {
            "auto" => (false, autotune::Policy::Auto),
            "fused" => (false, autotune::Policy::Gemm),
            "gemv" => (false, autotune::Policy::Gemv),
            "stock" => (true, autotune::Policy::Gemm),
            other => {
                return Err(EngineError::invalid_argument(format!(
                    "candle options: kernels must be auto, fused, gemv or stock, not {other:?}"
                )))
            }
        };
        let plan = autotune::Plan::new(batch1, threads);
        let pool = thread_pool(threads, stock, Some(plan.clone()))?;
        pool.install(|| probe_dtype(dtype, &device)).map_err(|why| {
            EngineError::unsupported(format!(
                "dtype {} on {device:?}: candle {CANDLE_VERSION} cannot run the model's ops in it ({why})",
                spec.dtype.as_str()
            ))
        })?;

        let dir = PathBuf::from(spec.path.as_str());
        let cfg = engine_kit::arch::read_config(&dir, spec.architecture.as_str())?;
        if quantization == Quantization::Gguf {
            return Self::open_gguf(&dir, &cfg, pool).map(|k| k.ran(&plan, stock));
        }
        let files = engine_kit::arch::weight_files(&dir)?;
        let label = match files.as_slice() {
            [one] => one.clone(),
            _ => dir.clone(),
        };
        // SAFETY: the files are mapped read-only; the model copies every
        // tensor out of the maps before they are dropped at the end of
        // load. Like every mmap-based loader, this assumes nobody
        // truncates a file while it loads.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| {
                EngineError::invalid_model(format!(
                    "{}: not a valid safetensors file: {}",
                    label.display(),
                    error_text(&e)
                ))
            })?;
        check_tensors(&label, &st, &cfg)?;
        let vb = candle_nn::VarBuilder::from_backend(Box::new(st), dtype, device.clone());
        let q = quantization.block_type();
        let model = pool
            .install(|| -> candle_core::Result<Net> {
                Ok(match &cfg {
                    ModelConfig::Gpt2(c) => Gpt2::new_quantized(c, vb, q)?.into(),
                    ModelConfig::Llama(c) => Llama::load(c, llama::Source::Hf(vb, q))?.into(),
                })
            })
            .map_err(|e| {
                EngineError::invalid_model(format!("{}: {}", label.display(), error_text(&e)))
            })?;
        Ok(Self::with_pool(model, pool).ran(&plan, stock))
    }

    /// Ends the kernel plan of a load (caching what it measured) and
    /// records what runs.
    fn ran(mut self, plan: &autotune::Plan, stock: bool) -> Self {
        plan.finish();
        self.kernels = if stock {
            serde_json::json!({ "by": "forced: kernels stock (candle's own ops)" })
        } else {
            plan.describe()
        };
        self
    }

    /// A Llama or Qwen2 folder imported from a GGUF, on the GGUF's
    /// tensors ([`gguf`]).
    fn open_gguf(
        dir: &std::path::Path,
        cfg: &ModelConfig,
        pool: rayon::ThreadPool,
    ) -> Result<Self, EngineError> {
        let ModelConfig::Llama(c) = cfg else {
            return Err(EngineError::unsupported(format!(
                "{}: quantization gguf runs Llama-family GGUF imports, not GPT-2",
                dir.display()
            )));
        };
        if c.o_bias() || c.mlp_bias {
            return Err(EngineError::unsupported(format!(
                "{}: quantization gguf reads llama and qwen2 GGUF files, whose only biases are \
                 Qwen2's q/k/v ones",
                dir.display()
            )));
        }
        let g = gguf::GgufWeights::open_imported(dir, c.num_attention_heads, c.kv_heads())?;
        let model = pool
            .install(|| Llama::load(c, llama::Source::Gguf(&g)))
            .map_err(|e| EngineError::invalid_model(error_text(&e)))?;
        Ok(Self::with_pool(model.into(), pool))
    }

    /// Wraps an already built model with a pool of `threads` threads.
    pub fn from_model(model: impl Into<Net>, threads: usize) -> Result<Self, EngineError> {
        Ok(Self::with_pool(
            model.into(),
            thread_pool(threads, !ops::fused_kernels(), None)?,
        ))
    }

    fn with_pool(model: Net, pool: rayon::ThreadPool) -> Self {
        CandleKernels {
            weight_bytes: model.weight_bytes() as u64,
            model,
            pool,
            kv_pool: KvPool::default(),
            kernels: serde_json::Value::Null,
        }
    }

    /// The model.
    pub fn model(&self) -> &Net {
        &self.model
    }

    /// Threads in this model's pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `f` on this model's thread pool (for tools and tests that call
    /// the model directly).
    pub fn install<R: Send>(&self, f: impl FnOnce(&Net) -> R + Send) -> R {
        self.pool.install(|| f(&self.model))
    }
}

/// The kit has checked every prompt, token and length before these run.
impl Kernels for CandleKernels {
    type Cache = KvCache;

    /// The bytes a decode step streams, for the roofline of quantized
    /// models (which may hold a lookup-only embedding table beside a
    /// quantized head, and whose bytes per weight the dtype does not say).
    fn describe(&self) -> String {
        let streamed = self.model.streamed_weight_bytes() as u64;
        serde_json::json!({ "streamed_weight_bytes": streamed, "kernels": self.kernels })
            .to_string()
    }

    fn limits(&self) -> Limits {
        self.model.limits()
    }

    fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    fn prefill(
        &mut self,
        prompts: &[&[u32]],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<KvCache>, EngineError> {
        let (model, kv_pool) = (&self.model, &mut self.kv_pool);
        self.pool
            .install(|| {
                let (l, caches) = model.prefill(prompts, kv_pool)?;
                gpt2::copy_f32(&l, logits)?;
                Ok(caches)
            })
            .map_err(candle_err("prefill"))
    }

    fn decode(
        &mut self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let (model, kv_pool) = (&self.model, &mut self.kv_pool);
        self.pool
            .install(|| {
                let l = model.decode(tokens, caches, kv_pool)?;
                gpt2::copy_f32(&l, logits)
            })
            .map_err(candle_err("decode"))
    }

    fn score(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        let model = &self.model;
        self.pool
            .install(|| gpt2::copy_f32(&model.score(tokens)?, logits))
            .map_err(candle_err("score"))
    }

    fn cache_bytes(&self, cache: &KvCache) -> CacheBytes {
        CacheBytes {
            used: cache.used_bytes() as u64,
            reserved: cache.reserved_bytes() as u64,
        }
    }

    /// Freed caches kept for reuse are still allocated.
    fn spare_cache_bytes(&self) -> u64 {
        self.kv_pool.bytes() as u64
    }

    fn release(&mut self, cache: KvCache) {
        self.kv_pool.recycle(cache);
    }

    fn can_fork(&self) -> bool {
        true
    }

    fn fork(&mut self, cache: &KvCache, len: usize) -> Result<KvCache, EngineError> {
        let max = self.model.limits().context;
        cache
            .fork(len, max, &mut self.kv_pool)
            .map_err(candle_err("prefix cache copy"))
    }

    /// One forward of the remaining tokens over the cached ones (m queries
    /// over n + m keys, [`ops::attention`]'s causal offset).
    fn extend(
        &mut self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let (model, kv_pool) = (&self.model, &mut self.kv_pool);
        self.pool
            .install(|| {
                let l = model.extend(tokens, cache, kv_pool)?;
                gpt2::copy_f32(&l, logits)
            })
            .map_err(candle_err("prefill after a prefix-cache hit"))
    }
}

engine_api::export_engine!(Ok(CandleEngine::new()));
