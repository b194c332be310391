//! engine-matrix plugin `torch`: GPT-2 and the Hugging Face Llama family
//! (Llama, Qwen2, Mistral) on libtorch 2.13.0 through
//! [tch](https://github.com/LaurentMazare/tch-rs) 0.26 — the seeds'
//! baseline (PyTorch) without a Python interpreter in the loop.
//!
//! libtorch comes from the PyPI wheel `torch==2.13.0`, installed by
//! `scripts/provision` into `.engines/torch-2.13.0-cpu/` (CUDA libraries
//! removed; `--cuda` keeps the full wheel); `.cargo/config.toml` points
//! `LIBTORCH` at it, and `build.rs` records libtorch's folder as the
//! plugin's rpath, so it loads without `LD_LIBRARY_PATH`. The crate is not
//! a default workspace member: it needs libtorch to compile.
//!
//! The models are in [`gpt2`] and [`llama`] (their docs explain the layout
//! and kernel choices), over the shared linear layers of [`linear`] and
//! the KV cache of [`kv`]; this file adapts them to
//! [`engine_kit::Backend`] (batching, sampling and timing are the shared
//! scheduler's) through [`Net`], and exports the [`engine_api::Engine`]
//! named `torch`.
//!
//! # Loading
//!
//! `spec.path` is a Hugging Face-style folder: `config.json`, whose
//! `model_type` (`gpt2`, `llama`, `qwen2`, `mistral`) picks the model and
//! must match the spec's architecture, and `model.safetensors` or the
//! shards of `model.safetensors.index.json`. The files are memory-mapped
//! ([`engine_kit::checkpoint::Checkpoint`]) and every tensor's name, shape
//! and dtype is checked against `config.json` before anything is built,
//! so a broken checkpoint is an `invalid model` error naming the file and
//! the tensor. Weights are then copied into libtorch tensors (converted to
//! f32, then to the requested dtype and device: a half-precision
//! checkpoint makes transient f32 copies of a few tensors at a time, the
//! price of one conversion path) and the maps are dropped. `quantization:` `none`,
//! `int8` (fbgemm's dynamic int8 for f32, the weight-only kernel for bf16)
//! or `int4` (weight-only); see the `linear` module.
//!
//! # Options (`options_json`)
//!
//! * `threads` (default: the cores this process may use): libtorch's
//!   intra-op (OpenMP) threads, `torch.set_num_threads`;
//! * `device`: `cpu` (default), `cuda` or `cuda:N` when libtorch has CUDA;
//! * `matmul`: the kernel of the linear layers, `auto` (the default for
//!   f32 on the CPU: for each layer class, whichever of the two is
//!   faster for its shape on this machine at the load's batch (one row
//!   when `max_batch` is 1, eight otherwise), measured at load and
//!   cached, see [`autotune`]), `onednn` (oneDNN's inner product on weights converted
//!   once at load; f32 on CPU) or `addmm` (MKL through `addmm`, the call
//!   PyTorch eager's `Conv1D` makes, on `[in, out]` weights —
//!   `nn.Linear`'s `[out, in]` is transposed once at load; the only one
//!   for other dtypes and devices). See [`linear`]. The model's
//!   `describe()` says which kernel runs and how it was chosen.
//! * `int8_kernel` (with `quantization: int8`): `dynamic` (fbgemm's
//!   `quantized::linear_dynamic`, the default for f32) or `weight_only`
//!   (`_weight_int8pack_mm`, the default and only one for bf16/f16);
//!   ignored by the other quantizations.
//!
//! Every step runs with autograd off (`no_grad`, which is per thread, so it
//! is set on the scheduler thread for each call). dtypes `f32`, `f16` and
//! `bf16` are offered when a probe of every op the models use succeeds in
//! that dtype on the device; otherwise `info()` leaves them out and a load
//! asking for them gets `unsupported` with libtorch's message. Logits are
//! handed out as f32.

pub mod autotune;
pub mod gpt2;
pub mod kv;
pub mod linear;
pub mod llama;
pub mod qlinear;

use engine_api::{Engine, EngineError, EngineInfo, LoadOptions, Model, ModelSpec};
use engine_kit::arch::ModelConfig;
use engine_kit::checkpoint::Checkpoint;
use engine_kit::{CacheBytes, Kernels, Limits, Sequences};
use gpt2::Gpt2;
use kv::KvCache;
use linear::{Kernels as LayerKernels, MatMul};
use llama::Llama;
use serde::Deserialize;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// The architectures this engine implements (`config.json`'s
/// `model_type`).
pub const ARCHITECTURES: [&str; 4] = ["gpt2", "llama", "qwen2", "mistral"];

/// The libtorch release this plugin was built against (checked by
/// build.rs against the provisioned `build-version`).
pub const LIBTORCH_VERSION: &str = env!("EM_TORCH_LIBTORCH_VERSION");
/// Where that libtorch is (the plugin's rpath).
pub const LIBTORCH_LIB: &str = env!("EM_TORCH_LIBTORCH_LIB");

/// Engine-specific options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchOptions {
    pub threads: Option<usize>,
    pub device: Option<String>,
    pub matmul: Option<String>,
    pub int8_kernel: Option<String>,
}

/// The `matmul` option: oneDNN by default for f32 on the CPU (when this
/// libtorch has it), `addmm` otherwise; `onednn` asked for elsewhere is
/// `unsupported`.
fn parse_matmul(s: Option<&str>, kind: Kind, device: Device) -> Result<MatMul, EngineError> {
    let onednn_ok = kind == Kind::Float && device == Device::Cpu && tch::utils::has_mkldnn();
    match s {
        None | Some("auto") if onednn_ok => Ok(MatMul::OneDnn),
        None | Some("auto") | Some("addmm") => Ok(MatMul::Addmm),
        Some("onednn") if onednn_ok => Ok(MatMul::OneDnn),
        Some("onednn") => Err(EngineError::unsupported(format!(
            "torch options: matmul onednn runs f32 on the CPU only (asked: {} on {device:?})",
            dtype_name(kind)
        ))),
        Some(other) => Err(EngineError::invalid_argument(format!(
            "torch options: matmul {other:?} is not one of auto, onednn, addmm"
        ))),
    }
}

/// The quantizations this engine runs (besides `none`): int8 (fbgemm's
/// dynamic kernel in f32, weight-only in bf16) and weight-only int4 (see
/// the `linear` module).
const QUANTIZATIONS: [&str; 2] = ["int8", "int4"];

/// The kernel of quantization `q`, which is its own: a `matmul` option
/// beside it is an error; all run on the CPU only. `int8` is fbgemm's
/// dynamic kernel for f32 activations unless `int8_kernel: weight_only`
/// asks for the weight-only one, which is the only one for bf16 and f16
/// (fbgemm quantizes f32 activations only). `int8_kernel` is ignored by
/// the other quantizations (as the onnx engine's is), so one engine entry
/// of a matrix can run them all.
fn quantized_kernel(
    q: &str,
    opts: &TorchOptions,
    kind: Kind,
    device: Device,
) -> Result<MatMul, EngineError> {
    if let Some(m) = &opts.matmul {
        return Err(EngineError::invalid_argument(format!(
            "torch options: matmul {m:?} with quantization {q}: the quantized layers have their own kernel"
        )));
    }
    if device != Device::Cpu {
        return Err(EngineError::unsupported(format!(
            "quantization {q} on {device:?}: libtorch's {q} kernels here are the CPU ones"
        )));
    }
    if q != "int8" {
        return Ok(MatMul::Int4);
    }
    match (opts.int8_kernel.as_deref(), kind) {
        (None | Some("dynamic"), Kind::Float) => {
            qlinear::use_fbgemm().map_err(|e| EngineError::unsupported(format!("quantization int8 (dynamic): {e}")))?;
            Ok(MatMul::Int8Dynamic)
        }
        (None | Some("weight_only"), _) => Ok(MatMul::Int8),
        (Some("dynamic"), k) => Err(EngineError::unsupported(format!(
            "quantization int8 with int8_kernel dynamic: fbgemm quantizes f32 activations only, not {}",
            dtype_name(k)
        ))),
        (Some(other), _) => Err(EngineError::invalid_argument(format!(
            "torch options: int8_kernel {other:?} is not one of dynamic, weight_only"
        ))),
    }
}

/// The int4 kernel groups every layer's inputs by
/// [`linear::INT4_GROUP`]: a model with a layer of another width is
/// `unsupported`, naming it.
fn check_int4(cfg: &ModelConfig) -> Result<(), EngineError> {
    let widths: Vec<(&str, usize)> = match cfg {
        ModelConfig::Gpt2(c) => vec![("n_embd", c.n_embd), ("n_inner", c.inner_dim())],
        ModelConfig::Llama(c) => vec![
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            (
                "num_attention_heads * head_dim",
                c.num_attention_heads * c.head_dim(),
            ),
        ],
    };
    match widths
        .iter()
        .find(|(_, w)| *w as i64 % linear::INT4_GROUP != 0)
    {
        Some((name, w)) => Err(EngineError::unsupported(format!(
            "quantization int4: {name} is {w}, not a multiple of the kernel's group of {}",
            linear::INT4_GROUP
        ))),
        None => Ok(()),
    }
}

fn torch_err(what: &'static str) -> impl Fn(tch::TchError) -> EngineError {
    move |e| EngineError::runtime(format!("libtorch {what}: {e}"))
}

fn parse_dtype(s: &str) -> Result<Kind, EngineError> {
    match s {
        "f32" => Ok(Kind::Float),
        "f16" => Ok(Kind::Half),
        "bf16" => Ok(Kind::BFloat16),
        other => Err(EngineError::unsupported(format!(
            "dtype {other:?} is not supported by the torch engine (f32, f16, bf16)"
        ))),
    }
}

fn dtype_name(k: Kind) -> &'static str {
    match k {
        Kind::Float => "f32",
        Kind::Half => "f16",
        Kind::BFloat16 => "bf16",
        _ => "?",
    }
}

fn parse_device(s: &str) -> Result<Device, EngineError> {
    let Some(ordinal) = engine_kit::parse_device("torch", s)? else {
        return Ok(Device::Cpu);
    };
    if !tch::Cuda::is_available() || ordinal as i64 >= tch::Cuda::device_count() {
        return Err(EngineError::unsupported(format!(
            "device {s}: libtorch at {LIBTORCH_LIB} sees no such CUDA device \
             (the CPU provisioning removes libtorch's CUDA libraries; use scripts/provision --cuda on a GPU machine)"
        )));
    }
    Ok(Device::Cuda(ordinal))
}

/// Runs each op the models use, tiny, in `kind` on `dev`, on a thread of its
/// own: libgomp keeps an OpenMP worker pool per thread that ran a parallel
/// region, and an idle pool left on the host's thread (which calls
/// `info()`) would count against the cores and throttle the spin-wait of
/// the pool that runs the model (see `engine_kit::spawn_with`).
fn probe(kind: Kind, dev: Device) -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| probe_here(kind, dev))
            .join()
            .unwrap_or_else(|_| Err("the probe panicked".into()))
    })
}

fn probe_here(kind: Kind, dev: Device) -> Result<(), String> {
    let run = || -> gpt2::Result<()> {
        let _g = tch::no_grad_guard();
        let x = Tensor::f_ones([2, 8], (Kind::Float, dev))?.f_to_kind(kind)?;
        let w = Tensor::f_ones([8, 8], (Kind::Float, dev))?.f_to_kind(kind)?;
        let b = Tensor::f_ones([8], (Kind::Float, dev))?.f_to_kind(kind)?;
        let y = b.f_addmm(&x, &w)?;
        let y = y.f_layer_norm([8i64], Some(&b), Some(&b), 1e-5, false)?;
        let y = y.f_gelu("tanh")?.f_matmul(&w.f_tr()?)?;
        // the Llama family's RMSNorm, SwiGLU and RoPE
        let r = y
            .f_to_kind(Kind::Float)?
            .f_square()?
            .f_mean_dim(-1, true, Kind::Float)?;
        let y = y
            .f_mul(&r.f_rsqrt()?.f_to_kind(kind)?)?
            .f_silu()?
            .f_mul(&y)?;
        let y = Tensor::f_cat(&[&y.f_narrow(1, 4, 4)?.f_neg()?, &y.f_narrow(1, 0, 4)?], 1)?;
        let q = y.f_view([1, 2, 2, 4])?;
        let a = Tensor::f_scaled_dot_product_attention(
            &q,
            &q,
            &q,
            None::<&Tensor>,
            0.0,
            true,
            Some(0.5),
            false,
        )?;
        // grouped-query attention: two query heads over one kv head
        let _ = Tensor::f_scaled_dot_product_attention(
            &q,
            &q.f_narrow(1, 0, 1)?,
            &q.f_narrow(1, 0, 1)?,
            None::<&Tensor>,
            0.0,
            true,
            Some(0.5),
            true,
        )?;
        let ids = Tensor::f_from_slice(&[0i64, 1])?.f_to_device(dev)?;
        let _ = w.f_index_select(0, &ids)?;
        let _ = a
            .f_to_kind(Kind::Float)?
            .f_sum(Kind::Float)?
            .f_double_value(&[])?;
        Ok(())
    };
    run().map_err(|e| e.to_string())
}

/// The `torch` engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct TorchEngine;

/// What `tune` may search: the kit's options, the matmul kernel, and
/// (only when a matrix asks, as they change the output) dtype and
/// quantization.
fn tunables() -> Vec<engine_api::tunable::Tunable> {
    use engine_api::tunable::Tunable;
    let mut t = engine_kit::tunables();
    t.push(Tunable::choice(
        "matmul",
        &["auto", "onednn", "addmm"],
        "auto",
        "the f32 CPU matmul kernel",
    ));
    let dtypes: Vec<&str> = [Kind::Float, Kind::Half, Kind::BFloat16]
        .into_iter()
        .filter(|k| probe(*k, Device::Cpu).is_ok())
        .map(dtype_name)
        .collect();
    t.push(Tunable::choice("dtype", &dtypes, "f32", "compute dtype").changing_output());
    let quants: Vec<&str> = std::iter::once("none").chain(QUANTIZATIONS).collect();
    t.push(
        Tunable::choice("quantization", &quants, "none", "weight quantization").changing_output(),
    );
    t
}

impl Engine for TorchEngine {
    fn info(&self) -> EngineInfo {
        let mut devices = vec!["cpu".to_string()];
        if tch::Cuda::is_available() {
            devices.extend((0..tch::Cuda::device_count()).map(|i| format!("cuda:{i}")));
        }
        let dtypes = [Kind::Float, Kind::Half, Kind::BFloat16]
            .into_iter()
            .filter(|k| probe(*k, Device::Cpu).is_ok())
            .map(|k| dtype_name(k).into());
        EngineInfo {
            name: "torch".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            runtime_version: format!("libtorch {LIBTORCH_VERSION} via tch 0.26 ({LIBTORCH_LIB})")
                .into(),
            devices: devices.into_iter().map(Into::into).collect(),
            dtypes: dtypes.collect(),
            quantizations: std::iter::once("none")
                .chain(QUANTIZATIONS)
                .map(Into::into)
                .collect(),
            capabilities: engine_kit::capabilities(&[]),
            tunables: engine_api::tunable::to_json(&tunables()),
        }
    }

    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
        // An architecture outside ARCHITECTURES (gpt2, llama, qwen2,
        // mistral) is `unsupported` before any thread starts.
        engine_kit::arch::check_spec_quantized("torch", spec, &ARCHITECTURES, &QUANTIZATIONS)?;
        // Built on the scheduler thread: libtorch's OpenMP pool then
        // belongs to the thread that runs every step (see spawn_with).
        let (spec, json) = (spec.clone(), options.options_json.to_string());
        let max_batch = options.max_batch;
        Ok(Box::new(engine_kit::spawn_with(options, move || {
            open_for(&spec, &json, max_batch)
        })?))
    }
}

impl gpt2::Weights for Checkpoint {
    fn get(&self, name: &str) -> Result<Tensor, String> {
        let t = self.tensor(name)?;
        use safetensors::Dtype as D;
        let kind = match t.dtype {
            D::F32 => Kind::Float,
            D::F16 => Kind::Half,
            D::BF16 => Kind::BFloat16,
            D::F64 => Kind::Double,
            other => return Err(format!("tensor {name} has dtype {other:?}")),
        };
        let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        // Checkpoint::tensor checked the byte length against the shape
        // (tch's from_data_size does not).
        Tensor::f_from_data_size(t.data, &shape, kind)
            .and_then(|t| t.f_to_kind(Kind::Float))
            .map_err(|e| format!("{}: tensor {name}: {e}", self.path().display()))
    }
}

/// A model of one of the architectures this engine implements.
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

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, config): (&str, &dyn std::fmt::Debug) = match self {
            Net::Gpt2(m) => ("Gpt2", m.config()),
            Net::Llama(m) => ("Llama", m.config()),
        };
        f.debug_struct(name)
            .field("config", config)
            .field("kind", &self.kind())
            .field("kernels", &self.kernels())
            .finish()
    }
}

impl Net {
    pub fn limits(&self) -> Limits {
        match self {
            Net::Gpt2(m) => m.config().limits(),
            Net::Llama(m) => m.config().limits(),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Net::Gpt2(m) => m.kind(),
            Net::Llama(m) => m.kind(),
        }
    }

    /// The kernel of each linear layer class.
    pub fn kernels(&self) -> LayerKernels {
        match self {
            Net::Gpt2(m) => m.kernels(),
            Net::Llama(m) => m.kernels(),
        }
    }

    /// Bytes of all weights as held.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Net::Gpt2(m) => m.weight_bytes(),
            Net::Llama(m) => m.weight_bytes(),
        }
    }

    /// Bytes a decode step streams (the roofline's for quantized models).
    pub fn streamed_weight_bytes(&self) -> usize {
        match self {
            Net::Gpt2(m) => m.streamed_weight_bytes(),
            Net::Llama(m) => m.streamed_weight_bytes(),
        }
    }

    /// See [`Gpt2::prefill`].
    pub fn prefill(&self, prompts: &[&[u32]]) -> gpt2::Result<(Tensor, Vec<KvCache>)> {
        match self {
            Net::Gpt2(m) => m.prefill(prompts),
            Net::Llama(m) => m.prefill(prompts),
        }
    }

    /// See [`Gpt2::decode`].
    pub fn decode(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> gpt2::Result<Tensor> {
        match self {
            Net::Gpt2(m) => m.decode(tokens, caches),
            Net::Llama(m) => m.decode(tokens, caches),
        }
    }

    /// See [`Gpt2::extend`].
    pub fn extend(&self, tokens: &[u32], cache: &mut KvCache) -> gpt2::Result<Tensor> {
        match self {
            Net::Gpt2(m) => m.extend(tokens, cache),
            Net::Llama(m) => m.extend(tokens, cache),
        }
    }

    /// See [`Gpt2::score`].
    pub fn score(&self, tokens: &[u32]) -> gpt2::Result<Tensor> {
        match self {
            Net::Gpt2(m) => m.score(tokens),
            Net::Llama(m) => m.score(tokens),
        }
    }
}

/// The models' kernels on libtorch. The kit's [`Sequences`] table owns the
/// live sequences.
pub struct TorchKernels {
    model: Net,
    threads: usize,
    weight_bytes: u64,
    /// What `describe()` says: the kernel and how it was chosen.
    described: String,
}

/// The linear layers' shapes of `cfg` and how often a token runs through
/// each (for `matmul: auto`).
fn shapes(cfg: &ModelConfig) -> Vec<autotune::Shape> {
    let s = |inp: usize, out: usize, per_token: usize| autotune::Shape {
        inp: inp as i64,
        out: out as i64,
        per_token: per_token as u32,
    };
    match cfg {
        ModelConfig::Gpt2(c) => {
            let (e, l) = (c.n_embd, c.n_layer);
            vec![
                s(e, 3 * e, l),
                s(e, e, l),
                s(e, c.inner_dim(), l),
                s(c.inner_dim(), e, l),
                s(e, c.vocab_size, 1),
            ]
        }
        ModelConfig::Llama(c) => {
            let (h, l, d) = (c.hidden_size, c.num_hidden_layers, c.head_dim());
            let q = c.num_attention_heads * d;
            vec![
                s(h, q + 2 * c.kv_heads() * d, l),
                s(q, h, l),
                s(h, 2 * c.intermediate_size, l),
                s(c.intermediate_size, h, l),
                s(h, c.vocab_size, 1),
            ]
        }
    }
}

/// The shapes `matmul: auto` times for the model folder `dir` (for tools
/// and tests).
pub fn autotune_shapes(dir: &std::path::Path) -> Vec<autotune::Shape> {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    let arch = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["model_type"].as_str().map(String::from))
        .unwrap_or_else(|| "gpt2".into());
    engine_kit::arch::read_config(dir, &arch)
        .map(|c| shapes(&c))
        .unwrap_or_default()
}

/// The kernel's name when every layer class has it, else `mixed`.
fn kernels_name(k: LayerKernels) -> &'static str {
    k.uniform().map_or("mixed", autotune_name)
}

/// Each layer class's kernel, by name.
fn kernels_by_class(k: LayerKernels) -> serde_json::Value {
    let [attn_in, attn_out, mlp_in, mlp_out, head] = k.classes().map(autotune_name);
    serde_json::json!({
        "attn_in": attn_in, "attn_out": attn_out,
        "mlp_in": mlp_in, "mlp_out": mlp_out, "lm_head": head,
    })
}

fn autotune_name(m: MatMul) -> &'static str {
    match m {
        MatMul::Addmm => "addmm",
        MatMul::OneDnn => "onednn",
        MatMul::Int8 => "int8 (weight-only)",
        MatMul::Int8Dynamic => "int8 (dynamic, fbgemm)",
        MatMul::Int4 => "int4 (weight-only, groups of 32)",
    }
}

/// Sets this thread's libtorch threads (what `enter` does per call).
fn set_threads(threads: usize) {
    THREADS_SET.with(|t| {
        if t.get() != threads {
            tch::set_num_threads(threads as i32);
            t.set(threads);
        }
    });
}

/// What the scheduler drives: the kernels plus the kit's sequence table.
pub type TorchBackend = Sequences<TorchKernels>;

/// Loads `spec` with engine options `options_json` and warms it up (on the
/// calling thread: call it on the thread that will run the steps), for
/// batch-1 decode (see [`open_for`]).
pub fn open(spec: &ModelSpec, options_json: &str) -> Result<TorchBackend, EngineError> {
    open_for(spec, options_json, 1)
}

/// [`open`] for a load that decodes up to `max_batch` sequences together:
/// `matmul: auto` picks each layer class's kernel for that batch.
pub fn open_for(
    spec: &ModelSpec,
    options_json: &str,
    max_batch: u32,
) -> Result<TorchBackend, EngineError> {
    Sequences::warmed(TorchKernels::open_for(spec, options_json, max_batch)?)
}

/// Wraps a built model, warmed up.
pub fn from_model(model: impl Into<Net>, threads: usize) -> Result<TorchBackend, EngineError> {
    Sequences::warmed(TorchKernels::from_model(model, threads))
}

impl std::fmt::Debug for TorchKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchKernels")
            .field("model", &self.model)
            .field("threads", &self.threads)
            .finish()
    }
}

thread_local! {
    static THREADS_SET: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl TorchKernels {
    /// Loads `spec` with engine options `options_json`, for batch-1 decode.
    pub fn open(spec: &ModelSpec, options_json: &str) -> Result<Self, EngineError> {
        Self::open_for(spec, options_json, 1)
    }

    /// Loads `spec` with engine options `options_json` for a load that
    /// decodes up to `max_batch` sequences together.
    pub fn open_for(
        spec: &ModelSpec,
        options_json: &str,
        max_batch: u32,
    ) -> Result<Self, EngineError> {
        engine_kit::arch::check_spec_quantized("torch", spec, &ARCHITECTURES, &QUANTIZATIONS)?;
        let kind = parse_dtype(spec.dtype.as_str())?;
        let opts: TorchOptions = engine_kit::engine_options("torch", options_json)?;
        let threads = engine_kit::threads("torch", opts.threads)?;
        let device = parse_device(opts.device.as_deref().unwrap_or("cpu"))?;
        probe(kind, device).map_err(|why| {
            EngineError::unsupported(format!(
                "dtype {} on {device:?}: libtorch {LIBTORCH_VERSION} cannot run the models' ops in it ({why})",
                spec.dtype.as_str()
            ))
        })?;
        let dir = PathBuf::from(spec.path.as_str());
        let cfg = engine_kit::arch::read_config(&dir, spec.architecture.as_str())?;
        let (kernels, chosen_by) = match spec.quantization.as_str() {
            "none" => {
                let fixed = parse_matmul(opts.matmul.as_deref(), kind, device)?;
                let auto = matches!(opts.matmul.as_deref(), None | Some("auto"));
                if auto && fixed == MatMul::OneDnn {
                    // both kernels can run: measure (or recall) which is faster here
                    set_threads(threads);
                    let c = autotune::choose(&shapes(&cfg), threads, max_batch)
                        .map_err(torch_err("matmul auto-tuning"))?;
                    let kernels = c.kernels().ok_or_else(|| {
                        EngineError::runtime("matmul auto-tuning: not one kernel per layer class")
                    })?;
                    let how = serde_json::json!({
                        "by": if c.measured_now { "auto: measured at load" } else { "auto: measured earlier on this machine (cached)" },
                        "for_batch": if max_batch <= 1 { "batch 1 (the one-row timings)" } else { "batches above 1 (the eight-row timings)" },
                        "us_per_token_batch1_batch8": c.us_per_token,
                        "per_class": c.per_shape,
                    });
                    (kernels, how)
                } else if opts.matmul.is_some() && !auto {
                    (
                        LayerKernels::all(fixed),
                        serde_json::json!({"by": "the matmul option"}),
                    )
                } else {
                    (
                        LayerKernels::all(fixed),
                        serde_json::json!({"by": "the only kernel for this dtype and device"}),
                    )
                }
            }
            q => (
                LayerKernels::all(quantized_kernel(q, &opts, kind, device)?),
                serde_json::json!({"by": format!("quantization {q}")}),
            ),
        };
        if kernels.uses(MatMul::Int4) {
            check_int4(&cfg)?;
        }
        let files = engine_kit::arch::weight_files(&dir)?;
        let ck = Checkpoint::open_model(&files, &cfg)?;
        let model: Net = {
            let _g = tch::no_grad_guard();
            match &cfg {
                ModelConfig::Gpt2(c) => Gpt2::new(c, &ck, kind, device, kernels).map(Net::from),
                ModelConfig::Llama(c) => Llama::new(c, &ck, kind, device, kernels).map(Net::from),
            }
            .map_err(|why| EngineError::invalid_model(format!("{}: {why}", ck.path().display())))?
        };
        drop(ck);
        let mut k = Self::from_model(model, threads);
        k.described = serde_json::json!({
            "matmul": kernels_name(kernels),
            "kernels": kernels_by_class(kernels),
            "chosen": chosen_by,
            "streamed_weight_bytes": k.model.streamed_weight_bytes(),
        })
        .to_string();
        Ok(k)
    }

    /// Wraps a built model.
    pub fn from_model(model: impl Into<Net>, threads: usize) -> Self {
        let model = model.into();
        TorchKernels {
            weight_bytes: model.weight_bytes() as u64,
            described: serde_json::json!({"matmul": kernels_name(model.kernels())}).to_string(),
            model,
            threads,
        }
    }

    /// The model.
    pub fn model(&self) -> &Net {
        &self.model
    }

    /// libtorch's thread count is per OpenMP thread team: set it on the
    /// thread that runs the step (the scheduler thread).
    fn enter(&self) -> tch::NoGradGuard {
        set_threads(self.threads);
        tch::no_grad_guard()
    }
}

fn copy_rows(t: &Tensor, out: &mut Vec<f32>) -> Result<(), EngineError> {
    let t = t
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .map_err(torch_err("logits"))?;
    let n = t.numel();
    out.resize(n, 0.0);
    t.f_copy_data(out.as_mut_slice(), n)
        .map_err(torch_err("logits"))
}

/// The kit has checked every prompt, token and length before these run.
impl Kernels for TorchKernels {
    type Cache = KvCache;

    fn describe(&self) -> String {
        self.described.clone()
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
        let _g = self.enter();
        let (l, caches) = self.model.prefill(prompts).map_err(torch_err("prefill"))?;
        copy_rows(&l, logits)?;
        Ok(caches)
    }

    fn decode(
        &mut self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let _g = self.enter();
        let l = self
            .model
            .decode(tokens, caches)
            .map_err(torch_err("decode"))?;
        copy_rows(&l, logits)
    }

    fn score(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        let _g = self.enter();
        let l = self.model.score(tokens).map_err(torch_err("score"))?;
        copy_rows(&l, logits)
    }

    fn cache_bytes(&self, cache: &KvCache) -> CacheBytes {
        CacheBytes {
            used: cache.used_bytes() as u64,
            reserved: cache.reserved_bytes() as u64,
        }
    }

    fn can_fork(&self) -> bool {
        true
    }

    fn fork(&mut self, cache: &KvCache, len: usize) -> Result<KvCache, EngineError> {
        let _g = self.enter();
        cache
            .fork(len as i64, self.model.limits().context)
            .map_err(torch_err("prefix cache copy"))
    }

    /// One forward of the remaining tokens over the cached ones, with an
    /// explicit `[m, n]` causal mask.
    fn extend(
        &mut self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let _g = self.enter();
        let l = self
            .model
            .extend(tokens, cache)
            .map_err(torch_err("prefill after a prefix-cache hit"))?;
        copy_rows(&l, logits)
    }
}

engine_api::export_engine!(Ok(TorchEngine));
