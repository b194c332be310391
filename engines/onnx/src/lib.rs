//! engine-matrix plugin `onnx`: GPT-2 and the Hugging Face Llama family
//! (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`) on
//! [ONNX Runtime](https://onnxruntime.ai) through the [`ort`] crate
//! (2.0.0-rc.15, `load-dynamic`).
//!
//! * [`runtime`] finds and loads `libonnxruntime.so` (provisioned from the
//!   PyPI wheel `onnxruntime==1.31.1` by `scripts/provision`) without ever
//!   panicking when it is missing or too old;
//! * [`graph`] builds GPT-2 and [`llama_graph`] the Llama family as ONNX
//!   graphs in Rust (prost types generated from `onnx.proto`) from the
//!   same `config.json` + safetensors the other engines read, in Hugging
//!   Face's ONNX export layout (their docs explain the layout and op
//!   choices);
//! * [`backend`] keeps the KV cache in ORT's own tensors and implements
//!   [`engine_kit::Kernels`], so batching, sampling and timing are the
//!   shared scheduler's, exactly as for the other engines. Both families
//!   share it: their graphs have the same interface, except that a Llama's
//!   cache holds `num_key_value_heads` heads and its graph takes RoPE's
//!   cos/sin as inputs, which the backend computes with
//!   [`engine_kit::llama::Config::rope_cos_sin`] (the angles every engine
//!   uses).
//!
//! # Model source
//!
//! `spec.path` is a Hugging Face-style folder: `config.json`, whose
//! `model_type` (`gpt2`, `llama`, `qwen2`, `mistral`; see
//! [`engine_kit::arch`]) picks the graph and must match the spec's
//! architecture (any other architecture is `unsupported`, naming it), and
//! either the weights — `model.safetensors` or the shards of
//! `model.safetensors.index.json`, checked tensor by tensor against
//! `config.json` before anything is built (errors name the file and the
//! tensor) — or a `model.onnx` in HF's export layout (`optimum-cli export
//! onnx --task text-generation-with-past`), which is loaded as is; the
//! engine option `model_file` names another `.onnx` file. A user-supplied
//! graph is checked against `config.json` (inputs, outputs, cache shapes:
//! `n_head` or `num_key_value_heads` heads of `head_dim`) before it runs.
//!
//! Building the graph costs a pass over the weights (converted to f32; for
//! a Llama, `nn.Linear` weights transposed, q/k/v and gate/up
//! concatenated) and, while it runs, memory for the whole f32 graph (the
//! external data is written from memory: a 1B model holds ~5 GB then);
//! that is why it is cached (`graph_cache`). The graph is self-contained
//! except for a Llama's RoPE angles: a `model.onnx` saved from it needs
//! this engine (or a caller that supplies `rope_cos` and `rope_sin`) to
//! run.
//!
//! # Options (`options_json`)
//!
//! * `threads` (default: the cores this process may use): ORT intra-op
//!   threads (the calling thread counts as one of them);
//! * `inter_op_threads` (default 1) and `parallel_execution` (default
//!   false: GPT-2's graph is a chain, so ORT's parallel executor only adds
//!   threads competing for the cores);
//! * `optimization`: `disable`, `basic`, `extended`, `layout` or `all`
//!   (default);
//! * `spinning` (default: ORT's, on): whether idle intra-op threads spin;
//! * `execution_providers` (default `["cpu"]`): `cpu`, `cuda`, `cuda:N`,
//!   in order of preference; a GPU provider that cannot be registered is an
//!   `unsupported` error, never a silent fallback to the CPU;
//! * `library`: path of `libonnxruntime.so` (see [`runtime`]);
//! * `model_file`: an `.onnx` file to load instead of building the graph;
//! * `graph_cache` (default true): keep the built graph in engine-matrix's
//!   cache (`<cache>/onnx/<folder>-<key>/`, see [`engine_kit::cache_dir`])
//!   with its weights in an external data file, which ONNX Runtime maps
//!   instead of copying (GPT-2: ~0.5 GB less resident memory than an
//!   in-memory graph, and later loads skip the build). The key covers the
//!   builders' format version, the parsed configuration (defaults filled
//!   in), `config.json`'s bytes and every weight file's path, size and
//!   modification time, so any change to the model builds a new graph (old
//!   ones stay until the cache is cleared); `false` builds in memory on
//!   every load (weights inline below 1 GiB, else in a temporary external
//!   data file);
//! * `save_model`: also write the built graph to this path (weights in
//!   `<path>.data`), e.g. to inspect it in Netron or profile it elsewhere.
//!
//! * `nbits_accuracy` (default 4): `MatMulNBits`' `accuracy_level` for
//!   `quantization: int4` and `int8` (0 unset, 1 f32, 2 f16, 3 bf16, 4
//!   int8 activations, see [`quant`]);
//! * `int8_kernel` (default `matmul_nbits`): `matmul_integer` builds
//!   `int8` as ORT's classic dynamic quantization instead
//!   (`DynamicQuantizeLinear` + `MatMulInteger`, see [`quant`]).
//!
//! Unknown keys are an error that names them. dtype: `f32` only (the built
//! graphs are f32, whatever the checkpoint's dtype); `f16` and `bf16` are
//! `unsupported`, with what ONNX Runtime 1.31.1's CPU provider lacks as
//! the reason ([`dtype_unsupported`]: no float16 `MatMul`/`Gemm` kernel on
//! x86-64, so f16 weights would be folded to f32 at load; no bfloat16
//! kernels for the models' ops at all); quantization: `none`, `int8` or
//! `int4` (`MatMulNBits`, blocks of 32), built into the graph ([`quant`]).

pub mod backend;
pub mod graph;
pub mod llama_graph;
pub mod quant;
pub mod runtime;

pub mod proto {
    //! ONNX's protobuf messages, generated by prost from `proto/onnx.proto`.
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use backend::{Dims, Extras, OnnxBackend, OnnxKernels, Row};
pub use engine_kit::checkpoint::Checkpoint;

use engine_api::{Engine, EngineError, EngineInfo, LoadOptions, Model, ModelSpec};
use engine_kit::arch::ModelConfig;
use engine_kit::Sequences;
use graph::DataPlacement;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::ValueType;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Engine-specific options (see the crate docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxOptions {
    pub threads: Option<usize>,
    pub inter_op_threads: Option<usize>,
    pub parallel_execution: Option<bool>,
    pub optimization: Option<String>,
    pub spinning: Option<bool>,
    pub execution_providers: Option<Vec<String>>,
    pub library: Option<String>,
    pub model_file: Option<String>,
    pub graph_cache: Option<bool>,
    pub save_model: Option<String>,
    pub nbits_accuracy: Option<u8>,
    pub int8_kernel: Option<String>,
}

/// The architectures this engine implements (`config.json`'s
/// `model_type`).
pub const ARCHITECTURES: [&str; 4] = ["gpt2", "llama", "qwen2", "mistral"];

/// The `onnx` engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct OnnxEngine;

/// What `tune` may search: the kit's options and ONNX Runtime's session
/// options that change its speed.
fn tunables() -> Vec<engine_api::tunable::Tunable> {
    use engine_api::tunable::Tunable;
    let mut t = engine_kit::tunables();
    t.push(Tunable::int(
        "inter_op_threads",
        1,
        engine_kit::available_cores() as i64,
        1,
        "threads running independent nodes (parallel_execution only)",
    ));
    t.push(Tunable::bool(
        "parallel_execution",
        false,
        "ORT's parallel executor",
    ));
    t.push(Tunable::bool(
        "spinning",
        true,
        "idle intra-op threads spin",
    ));
    t.push(Tunable::choice(
        "optimization",
        &["disable", "basic", "extended", "layout", "all"],
        "all",
        "graph optimization level",
    ));
    t
}

impl Engine for OnnxEngine {
    fn info(&self) -> EngineInfo {
        let runtime = match runtime::describe() {
            Ok((v, path)) => format!("onnxruntime {v} ({})", path.display()),
            Err(e) => format!("onnxruntime unavailable: {}", e.message),
        };
        let tags = ["graph:built-from-safetensors", "graph:hf-onnx-export"];
        EngineInfo {
            name: "onnx".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            runtime_version: runtime.into(),
            devices: vec!["cpu".into()].into(),
            dtypes: vec!["f32".into()].into(),
            quantizations: vec!["none".into(), "int8".into(), "int4".into()].into(),
            capabilities: engine_kit::capabilities(&tags),
            tunables: engine_api::tunable::to_json(&tunables()),
        }
    }

    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
        let backend = open(spec, options.options_json.as_str())?;
        Ok(Box::new(engine_kit::spawn(backend, options)?))
    }
}

fn optimization_level(s: &str) -> Result<GraphOptimizationLevel, EngineError> {
    Ok(match s {
        "disable" => GraphOptimizationLevel::Disable,
        "basic" => GraphOptimizationLevel::Level1,
        "extended" => GraphOptimizationLevel::Level2,
        "layout" => GraphOptimizationLevel::Level3,
        "all" => GraphOptimizationLevel::All,
        other => {
            return Err(EngineError::invalid_argument(format!(
                "onnx options: optimization {other:?}: expected disable, basic, extended, layout or all"
            )))
        }
    })
}

fn session_builder(
    rt: &runtime::Runtime,
    opts: &OnnxOptions,
) -> Result<SessionBuilder, EngineError> {
    let threads = engine_kit::threads("onnx", opts.threads)?;
    let level = optimization_level(opts.optimization.as_deref().unwrap_or("all"))?;
    let e = |what: &'static str| {
        move |e: ort::Error| EngineError::runtime(format!("onnxruntime session option {what}: {e}"))
    };
    let mut b = Session::builder(&rt.env)
        .map_err(e("builder"))?
        .with_intra_threads(threads)
        .map_err(|x| e("threads")(x.into()))?
        .with_inter_threads(opts.inter_op_threads.unwrap_or(1))
        .map_err(|x| e("inter_op_threads")(x.into()))?
        .with_parallel_execution(opts.parallel_execution.unwrap_or(false))
        .map_err(|x| e("parallel_execution")(x.into()))?
        .with_optimization_level(level)
        .map_err(|x| e("optimization")(x.into()))?;
    if let Some(spin) = opts.spinning {
        b = b
            .with_intra_op_spinning(spin)
            .map_err(|x| e("spinning")(x.into()))?;
    }
    let eps = opts
        .execution_providers
        .clone()
        .unwrap_or_else(|| vec!["cpu".into()]);
    let mut dispatch = Vec::new();
    for ep in &eps {
        let ep = ep.trim();
        if ep == "cpu" {
            dispatch.push(
                ort::ep::CPU::default()
                    .with_arena_allocator(true)
                    .build()
                    .error_on_failure(),
            );
        } else if let Some(rest) = ep.strip_prefix("cuda") {
            let id = match rest {
                "" => 0,
                r => r
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        EngineError::invalid_argument(format!(
                            "onnx options: execution provider {ep:?}: expected cpu, cuda or cuda:N"
                        ))
                    })?,
            };
            dispatch.push(
                ort::ep::CUDA::default()
                    .with_device_id(id)
                    .build()
                    .error_on_failure(),
            );
        } else {
            return Err(EngineError::invalid_argument(format!(
                "onnx options: execution provider {ep:?}: expected cpu, cuda or cuda:N"
            )));
        }
    }
    if dispatch.is_empty() {
        return Err(EngineError::invalid_argument(
            "onnx options: execution_providers is empty",
        ));
    }
    b.with_execution_providers(dispatch).map_err(|x| {
        EngineError::unsupported(format!(
            "execution providers {eps:?} cannot be registered with {} (ONNX Runtime {}): {}; \
             the PyPI onnxruntime wheel is CPU-only (CUDA needs onnxruntime-gpu)",
            rt.library.display(),
            rt.version,
            ort::Error::<()>::from(x)
        ))
    })
}

/// Loads `spec` with engine options `options_json` (see the crate docs).
pub fn open(spec: &ModelSpec, options_json: &str) -> Result<OnnxBackend, EngineError> {
    engine_kit::arch::check_spec_quantized("onnx", spec, &ARCHITECTURES, &["int8", "int4"])?;
    if spec.dtype.as_str() != "f32" {
        return Err(EngineError::unsupported(dtype_unsupported(
            spec.dtype.as_str(),
        )));
    }
    let opts: OnnxOptions = engine_kit::engine_options("onnx", options_json)?;
    let accuracy = opts.nbits_accuracy.unwrap_or(4);
    if accuracy > 4 {
        return Err(EngineError::invalid_argument(format!(
            "engine option nbits_accuracy {accuracy}: MatMulNBits' accuracy_level is 0 (unset), 1 (f32), 2 (f16), 3 (bf16) or 4 (int8)"
        )));
    }
    let per_tensor = match opts.int8_kernel.as_deref() {
        None | Some("matmul_nbits") => false,
        Some("matmul_integer") => true,
        Some(other) => {
            return Err(EngineError::invalid_argument(format!(
                "engine option int8_kernel {other:?}: expected matmul_nbits or matmul_integer"
            )))
        }
    };
    let quant =
        quant::Quant::parse(spec.quantization.as_str(), accuracy, per_tensor).ok_or_else(|| {
            EngineError::unsupported(format!(
                "quantization {:?}: the onnx engine runs none, int8, int4",
                spec.quantization.as_str()
            ))
        })?;
    let rt = runtime::load(opts.library.as_deref())?;
    let dir = PathBuf::from(spec.path.as_str());
    let cfg = engine_kit::arch::read_config(&dir, spec.architecture.as_str())?;
    let mut builder = session_builder(&rt, &opts)?;

    let onnx_file = match &opts.model_file {
        Some(f) => Some(dir.join(f)),
        None => Some(dir.join("model.onnx")).filter(|p| p.is_file()),
    };
    let (session, origin, built_bytes) = match onnx_file {
        Some(file) => {
            if quant != quant::Quant::None {
                return Err(EngineError::unsupported(format!(
                    "quantization {:?} with a given graph ({}): the onnx engine quantizes the graphs it builds",
                    spec.quantization.as_str(),
                    file.display()
                )));
            }
            if !file.is_file() {
                return Err(EngineError::invalid_model(format!(
                    "{}: no such file (engine option model_file)",
                    file.display()
                )));
            }
            let s = builder.commit_from_file(&file).map_err(|e| {
                EngineError::invalid_model(format!(
                    "{}: ONNX Runtime cannot load it: {e}",
                    file.display()
                ))
            })?;
            (s, file, None)
        }
        None => build_session(&mut builder, &dir, &cfg, &opts, quant)?,
    };
    let extras = check_interface(&session, &cfg, &origin)?;
    // a quantized graph's weights are what it maps; an f32 one's, the
    // checkpoint's parameters in f32
    let weight_bytes = match (quant, built_bytes) {
        (quant::Quant::None, _) | (_, None) => weight_bytes(&cfg) as u64,
        (_, Some(b)) => b,
    };
    // a quantized graph keeps the f32 token-embedding table for its
    // lookups only: a decode step streams the rest
    let table = match &cfg {
        ModelConfig::Gpt2(c) => c.vocab_size * c.n_embd,
        ModelConfig::Llama(c) => c.vocab_size * c.hidden_size,
    } as u64
        * 4;
    let described = quant
        .describe()
        .map(|q| {
            serde_json::json!({
                "quantization": q,
                "weight_bytes": weight_bytes,
                "streamed_weight_bytes": weight_bytes.saturating_sub(table),
            })
            .to_string()
        })
        .unwrap_or_default();
    Sequences::warmed(
        OnnxKernels::new(session, cfg, extras, weight_bytes).with_description(described),
    )
}

/// Why the onnx engine does not build a `dtype` graph (anything but f32):
/// what ONNX Runtime's CPU provider lacks, measured with the provisioned
/// 1.31.1 on x86-64 by loading one-op graphs with f16 (bf16) inputs and
/// outputs and reading the graph ORT made of them
/// (`tests::cpu_provider_has_no_f16_or_bf16_matmul` pins the facts the
/// reasons rest on, so a library that gains the kernels fails it).
///
/// * **f16**: no float16 kernel for `MatMul`, `Gemm` or
///   `com.microsoft.FusedMatMul` (ORT registers its `MLFloat16` GEMMs only
///   where MLAS has fp16 vector intrinsics: ARM64), nor for `Add`, `Mul`,
///   `Sub`, `Div`, `Pow`, `Sqrt`, `ReduceMean`, `Softmax`, `Sigmoid`,
///   `Gelu`/`FastGelu`, `Where`, `Tile` or `MultiHeadAttention`. ORT runs
///   each of those in f32 behind Casts it inserts
///   (`InsertedPrecisionFreeCast_*`) and, at the default optimization
///   level, folds an f16 weight into an f32 initializer (`FusedBack_*`):
///   an "f16" graph runs f32 matmuls on f32 weights. A 4096×4096 f16
///   MatMul held 128–136 MiB after load against the f32 graph's 64 MiB,
///   at the f32 speed; with ORT's optimizations off its weight stayed f16
///   but every run cast all of it: 168 MiB and 13.2–15.8 ms a run against
///   f32's 4.3–5.9 ms (`tests::f16_matmul_weight_memory_and_time`, 1
///   thread, AMD EPYC family 25 model 1 shared with other work,
///   2026-12-07). The f16 kernels there are:
///   `LayerNormalization`, `SimplifiedLayerNormalization`,
///   `RMSNormalization` (opset 23), `Skip(Simplified)LayerNormalization`,
///   `Gather`, `Concat`, `Reshape`, `Transpose`, `Split`, `Slice`,
///   `Expand`, `RotaryEmbedding`, `GroupQueryAttention` and `MatMulNBits`
///   (f16 activations, quantized weights): none multiplies by f16
///   weights.
/// * **bf16**: no kernel and no fallback for `MatMul`, `Gemm`, `Add`,
///   `Mul`, `Pow`, `Sigmoid`, `Softmax`, `Where`, `RotaryEmbedding`,
///   `GroupQueryAttention`, `MatMulNBits` and most others (only the norms
///   and the shape ops have one): the session fails ("Could not find an
///   implementation for MatMul(13) node").
pub fn dtype_unsupported(dtype: &str) -> String {
    let v = runtime::ORT_VERSION;
    match dtype {
        "f16" => format!(
            "dtype \"f16\": the onnx engine builds f32 graphs only: ONNX Runtime {v}'s CPU \
             provider has no float16 MatMul, Gemm or Add kernel on x86-64 (its f16 GEMM is \
             built for ARM64 only); it wraps each f16 MatMul in Casts to float and folds the f16 \
             weights into f32 copies at load, so an f16 graph would run f32 matmuls on f32 \
             weights (measured on a 4096x4096 MatMul: 136 MiB resident against the f32 \
             graph's 64 MiB), or, with constant folding off, cast every weight on every run \
             (2.5-3x the f32 time, 168 MiB)"
        ),
        "bf16" => format!(
            "dtype \"bf16\": the onnx engine builds f32 graphs only: ONNX Runtime {v}'s CPU \
             provider has no bfloat16 kernel for MatMul, Gemm, Add, Mul, Pow, Sigmoid or \
             Softmax, and no fallback (a session fails: \"Could not find an implementation for \
             MatMul(13) node\")"
        ),
        other => format!("dtype {other:?}: the onnx engine builds f32 graphs only"),
    }
}

/// Bytes of the model's weights in f32.
fn weight_bytes(cfg: &ModelConfig) -> usize {
    cfg.expected_tensors()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() * 4)
        .sum()
}

/// The graph of `cfg`'s family with the checkpoint's weights.
fn build_graph(
    cfg: &ModelConfig,
    ck: &Checkpoint,
    placement: DataPlacement,
    location: &str,
    quant: quant::Quant,
) -> Result<graph::Built, EngineError> {
    match cfg {
        ModelConfig::Gpt2(c) => graph::build(c, ck, placement, location, quant),
        ModelConfig::Llama(c) => llama_graph::build(c, ck, placement, location, quant),
    }
    .map_err(|why| EngineError::invalid_model(format!("{}: {why}", ck.path().display())))
}

/// Builds the graph from the checkpoint (`model.safetensors` or its
/// shards) and commits it.
fn build_session(
    builder: &mut SessionBuilder,
    dir: &Path,
    cfg: &ModelConfig,
    opts: &OnnxOptions,
    quant: quant::Quant,
) -> Result<(Session, PathBuf, Option<u64>), EngineError> {
    let files = engine_kit::arch::weight_files(dir)?;
    let origin = match files.as_slice() {
        [one] => one.clone(),
        _ => dir.to_path_buf(),
    };
    if let Some(path) = &opts.save_model {
        save_built(Path::new(path), cfg, &files, quant)?;
    }
    let rejected = |e: ort::Error| {
        EngineError::runtime(format!(
            "ONNX Runtime rejected the graph built from {}: {e}",
            origin.display()
        ))
    };
    if opts.graph_cache.unwrap_or(true) {
        let model = cached_graph(dir, cfg, &files, quant)?;
        let bytes = std::fs::metadata(model.with_file_name(DATA_FILE))
            .ok()
            .map(|m| m.len());
        let session = builder.commit_from_file(&model).map_err(rejected)?;
        return Ok((session, origin, bytes));
    }
    let ck = Checkpoint::open_model(&files, cfg)?;
    let placement = if weight_bytes(cfg) > graph::INLINE_LIMIT {
        DataPlacement::External
    } else {
        DataPlacement::Inline
    };
    let built = build_graph(cfg, &ck, placement, DATA_FILE, quant)?;
    drop(ck);
    let weight_bytes = built.weight_bytes();
    let bytes = built.encode();
    let session = match &built.external {
        None => builder.commit_from_memory(&bytes).map_err(rejected)?,
        Some((_, data)) => {
            // ORT resolves external data relative to the model file and
            // maps it; the files can go once the session holds the map.
            let tmp = TempFolder::new()?;
            let model = tmp.0.join(MODEL_FILE);
            std::fs::write(&model, &bytes)
                .and_then(|_| std::fs::write(tmp.0.join(DATA_FILE), data))
                .map_err(|e| EngineError::io(format!("{}: {e}", tmp.0.display())))?;
            builder.commit_from_file(&model).map_err(rejected)?
        }
    };
    Ok((session, origin, Some(weight_bytes)))
}

const MODEL_FILE: &str = "model.onnx";
const DATA_FILE: &str = "model.onnx.data";
/// Bump when [`graph::build`] or [`llama_graph::build`] changes what it
/// writes.
const GRAPH_FORMAT: u32 = 2;

/// What the cached graph of `dir` depends on: the graph format, the parsed
/// configuration (with the defaults filled in), `config.json` itself and
/// each weight file's path, size and modification time.
fn cache_key(
    dir: &Path,
    cfg: &ModelConfig,
    files: &[PathBuf],
    quant: quant::Quant,
) -> Result<Vec<u8>, EngineError> {
    let io = |p: &Path, e: std::io::Error| EngineError::io(format!("{}: {e}", p.display()));
    let config =
        std::fs::read(dir.join("config.json")).map_err(|e| io(&dir.join("config.json"), e))?;
    let mut key = format!("{GRAPH_FORMAT}\n{cfg:?}\n{}", quant.key()).into_bytes();
    key.extend_from_slice(&config);
    for file in files {
        let meta = std::fs::metadata(file).map_err(|e| {
            EngineError::invalid_model(format!(
                "{}: cannot read ({e}); a model folder needs config.json and its weights",
                file.display()
            ))
        })?;
        let real = file.canonicalize().map_err(|e| io(file, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        key.extend_from_slice(format!("\n{}\n{}\n{mtime}", real.display(), meta.len()).as_bytes());
    }
    Ok(key)
}

/// The built graph of `dir`'s checkpoint in the cache, built on first use:
/// `<cache>/onnx/<model>-<key>/model.onnx` with its weights in
/// `model.onnx.data`, keyed by [`cache_key`].
fn cached_graph(
    dir: &Path,
    cfg: &ModelConfig,
    files: &[PathBuf],
    quant: quant::Quant,
) -> Result<PathBuf, EngineError> {
    let io = |p: &Path, e: std::io::Error| EngineError::io(format!("{}: {e}", p.display()));
    let key = cache_key(dir, cfg, files, quant)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let root = engine_kit::cache_dir().join("onnx");
    let target = root.join(format!("{name}-{:016x}", engine_kit::fnv1a(&key)));
    let model = target.join(MODEL_FILE);
    if model.is_file() && target.join(DATA_FILE).is_file() {
        return Ok(model);
    }
    let ck = Checkpoint::open_model(files, cfg)?;
    let built = build_graph(cfg, &ck, DataPlacement::External, DATA_FILE, quant)?;
    drop(ck);
    // Written into a private folder and renamed into place, so a reader
    // never sees half a graph and two loads racing both succeed.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tmp = root.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let written = std::fs::write(tmp.join(MODEL_FILE), built.encode()).and_then(|_| {
        let data = built
            .external
            .as_ref()
            .map_or(&[][..], |(_, d)| d.as_slice());
        std::fs::write(tmp.join(DATA_FILE), data)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(io(&tmp, e));
    }
    if std::fs::rename(&tmp, &target).is_err() {
        // another load finished first
        let _ = std::fs::remove_dir_all(&tmp);
        if !model.is_file() {
            return Err(EngineError::io(format!(
                "{}: cannot move the built graph into the cache",
                target.display()
            )));
        }
    }
    Ok(model)
}

/// Writes the graph with external data next to it (`save_model`).
fn save_built(
    path: &Path,
    cfg: &ModelConfig,
    files: &[PathBuf],
    quant: quant::Quant,
) -> Result<(), EngineError> {
    let io = |e: std::io::Error| EngineError::io(format!("save_model {}: {e}", path.display()));
    let data_name = format!(
        "{}.data",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let ck = Checkpoint::open_model(files, cfg)?;
    let b = build_graph(cfg, &ck, DataPlacement::External, &data_name, quant)?;
    std::fs::write(path, b.encode()).map_err(io)?;
    if let Some((_, data)) = &b.external {
        std::fs::write(path.with_file_name(&data_name), data).map_err(io)?;
    }
    Ok(())
}

struct TempFolder(PathBuf);

impl TempFolder {
    fn new() -> Result<Self, EngineError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("em-onnx-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p)
            .map_err(|e| EngineError::io(format!("{}: {e}", p.display())))?;
        Ok(TempFolder(p))
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks the session's inputs and outputs against HF's export layout for
/// `cfg` (cache heads, head_dim and layers from `config.json`); returns
/// which optional inputs it has.
fn check_interface(
    session: &Session,
    cfg: &ModelConfig,
    origin: &Path,
) -> Result<Extras, EngineError> {
    let shown = origin.display();
    let find = |outlets: &[ort::value::Outlet], name: &str| {
        outlets
            .iter()
            .find(|o| o.name() == name)
            .map(|o| o.dtype().clone())
    };
    let dims = Dims::of(cfg);
    let (h, d) = (dims.heads as i64, dims.head_dim as i64);
    let (family, heads_key) = match cfg {
        ModelConfig::Gpt2(_) => ("GPT-2", "n_head"),
        ModelConfig::Llama(_) => ("Llama-family", "num_key_value_heads"),
    };
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut expect = |outlets: &[ort::value::Outlet],
                      name: String,
                      elem: ort::value::TensorElementType,
                      cache: bool| {
        match find(outlets, &name) {
            None => missing.push(name),
            Some(ValueType::Tensor { ty, shape, .. }) => {
                if ty != elem {
                    wrong.push(format!("{name} has element type {ty:?}, expected {elem:?}"));
                } else if cache
                    && (shape.len() != 4
                        || (shape[1] != -1 && shape[1] != h)
                        || (shape[3] != -1 && shape[3] != d))
                {
                    wrong.push(format!(
                        "{name} has shape {:?}, expected [batch, {h}, seq, {d}] ({heads_key}, head_dim from config.json)",
                        &shape[..]
                    ));
                }
            }
            Some(other) => wrong.push(format!("{name} is {other}, expected a tensor")),
        }
    };
    use ort::value::TensorElementType::{Float32, Int64};
    let (ins, outs) = (session.inputs(), session.outputs());
    for n in ["input_ids", "attention_mask", "position_ids"] {
        expect(ins, n.into(), Int64, false);
    }
    expect(outs, "logits".into(), Float32, false);
    for l in 0..dims.layers {
        let (pk, pv) = graph::past_names(l);
        let (qk, qv) = graph::present_names(l);
        expect(ins, pk, Float32, true);
        expect(ins, pv, Float32, true);
        expect(outs, qk, Float32, true);
        expect(outs, qv, Float32, true);
    }
    let extra_layer = graph::past_names(dims.layers).0;
    if find(ins, &extra_layer).is_some() {
        wrong.push(format!(
            "it has {extra_layer} but config.json says {} layers",
            dims.layers
        ));
    }
    // RoPE's angles as inputs (the Llama graphs built here): both or
    // neither, [batch, seq, head_dim / 2], and only for a Llama.
    let cos = find(ins, llama_graph::ROPE_COS);
    let sin = find(ins, llama_graph::ROPE_SIN);
    let rope = cos.is_some() || sin.is_some();
    if rope {
        if let ModelConfig::Gpt2(_) = cfg {
            wrong.push("it has rope_cos/rope_sin inputs, which GPT-2 has no use for".into());
        }
        for (name, v) in [(llama_graph::ROPE_COS, &cos), (llama_graph::ROPE_SIN, &sin)] {
            match v {
                None => missing.push(name.into()),
                Some(ValueType::Tensor { ty, shape, .. })
                    if *ty == Float32
                        && shape.len() == 3
                        && (shape[2] == -1 || shape[2] == d / 2) => {}
                Some(other) => wrong.push(format!(
                    "{name} is {other}, expected float [batch, seq, {}] (head_dim / 2)",
                    d / 2
                )),
            }
        }
    }
    if !missing.is_empty() || !wrong.is_empty() {
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("missing {}", missing.join(", ")));
        }
        why.extend(wrong);
        return Err(EngineError::invalid_model(format!(
            "{shown}: not a {family} graph in Hugging Face's ONNX layout with KV cache \
             (input_ids, attention_mask, position_ids, past_key_values.N.key/value -> \
             logits, present.N.key/value): {}",
            why.join("; ")
        )));
    }
    let logits_from = ins.iter().any(|o| o.name() == graph::LOGITS_FROM)
        || session
            .overridable_initializers()
            .iter()
            .any(|o| o.name() == graph::LOGITS_FROM);
    Ok(Extras { logits_from, rope })
}

engine_api::export_engine!(Ok(OnnxEngine));

#[cfg(test)]
mod tests {
    use crate::graph::{attr_i, value_info, Builder, DataPlacement, Dim};
    use crate::proto::{tensor_proto::DataType, ModelProto};
    use ort::session::builder::GraphOptimizationLevel;
    use ort::session::Session;
    use prost::Message;

    /// A graph of `elem` input `x [1, 4, 8]` through `op` (with `elem`
    /// weights) to output `y`, loaded into the provisioned ONNX Runtime at
    /// `level`: the graph ORT made of it (its optimized model), or ORT's
    /// error. The input and output are `elem` themselves so that ORT cannot
    /// hide a fallback: an op it runs in f32 needs a Cast it inserts
    /// after `x` and before `y`.
    fn load_one_op(
        op: &str,
        elem: DataType,
        level: GraphOptimizationLevel,
    ) -> Result<ModelProto, String> {
        let rt = crate::runtime::load(None).expect("onnxruntime (scripts/provision)");
        let mut b = Builder::new(DataPlacement::Inline, "unused");
        // 1.0 in either 16-bit format: the values do not matter here
        let one = match elem {
            DataType::Bfloat16 => [0x80u8, 0x3f],
            _ => [0x00u8, 0x3c],
        };
        let mut w = |name: &str, shape: &[usize]| {
            let n: usize = shape.iter().product();
            b.raw_weight(name, shape, elem, one.repeat(n))
        };
        let (op_inputs, attrs) = match op {
            "MatMul" => (vec!["x".to_string(), w("w", &[8, 8])], vec![]),
            "Gemm" => {
                let wn = w("w", &[8, 8]);
                let flat = b.const_i64s(&[-1, 8]);
                let x2 = b.op("Reshape", &["x", &flat], vec![]);
                (vec![x2, wn], vec![attr_i("transB", 1)])
            }
            "Add" => (vec!["x".to_string(), w("w", &[8])], vec![]),
            "LayerNormalization" => (
                vec!["x".to_string(), w("s", &[8]), w("b", &[8])],
                vec![attr_i("axis", -1)],
            ),
            other => unreachable!("{other}"),
        };
        let inputs: Vec<&str> = op_inputs.iter().map(String::as_str).collect();
        b.op_to(op, &inputs, &["y"], attrs);
        let dims = [Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(8)];
        let built = b.finish(
            op,
            "test",
            vec![value_info("x", elem, &dims)],
            vec![value_info("y", elem, &[])],
        );
        let tmp = super::TempFolder::new().unwrap();
        let out = tmp.0.join("optimized.onnx");
        Session::builder(&rt.env)
            .unwrap()
            .with_intra_threads(1)
            .unwrap()
            .with_optimization_level(level)
            .unwrap()
            .with_optimized_model_path(&out)
            .unwrap()
            .commit_from_memory(&built.encode())
            .map_err(|e| e.to_string())?;
        Ok(ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap())
    }

    /// The Casts ONNX Runtime inserted (`InsertedPrecisionFreeCast_*`): its
    /// fallback for an op without a kernel for the type.
    fn inserted_casts(m: &ModelProto) -> Vec<String> {
        m.graph
            .iter()
            .flat_map(|g| &g.node)
            .filter(|n| n.op_type() == "Cast" && n.name().starts_with("InsertedPrecisionFreeCast"))
            .map(|n| n.name().to_string())
            .collect()
    }

    /// What [`super::dtype_unsupported`] says, measured on the provisioned
    /// library: its CPU provider has no float16 `MatMul`, `Gemm` or `Add`
    /// kernel on x86-64 (ORT casts their inputs, the f16 weight included,
    /// to float and back), and at the default level it folds the f16
    /// weight into an f32 initializer; `LayerNormalization` runs in f16
    /// without a cast (the control: the check sees a real f16 kernel).
    /// bfloat16 `MatMul` has no kernel and no fallback. A library that
    /// gains the f16 kernels fails this test: then an f16 graph is worth
    /// building.
    #[test]
    fn cpu_provider_has_no_f16_or_bf16_matmul() {
        if !cfg!(target_arch = "x86_64") {
            eprintln!("measured on x86-64 only (ARM64 builds of ONNX Runtime have f16 GEMMs)");
            return;
        }
        use GraphOptimizationLevel::{All, Disable};
        for op in ["MatMul", "Gemm", "Add"] {
            let m = load_one_op(op, DataType::Float16, Disable).unwrap();
            let casts = inserted_casts(&m);
            assert!(
                casts.iter().any(|c| c == "InsertedPrecisionFreeCast_w"),
                "f16 {op}: ORT inserted {casts:?}: it has an f16 kernel now"
            );
            // at the level the engine uses, the weight is f32 in memory
            let m = load_one_op(op, DataType::Float16, All).unwrap();
            let inits: Vec<_> = m.graph.iter().flat_map(|g| &g.initializer).collect();
            let types: Vec<_> = inits.iter().map(|t| (t.name(), t.data_type)).collect();
            assert!(
                !types.is_empty()
                    && inits
                        .iter()
                        .all(|t| t.data_type != Some(DataType::Float16 as i32)),
                "f16 {op} at level all: initializers {types:?}"
            );
        }
        let m = load_one_op("LayerNormalization", DataType::Float16, Disable).unwrap();
        assert_eq!(inserted_casts(&m), Vec::<String>::new());
        let e = load_one_op("MatMul", DataType::Bfloat16, Disable).unwrap_err();
        assert!(
            e.contains("Could not find an implementation for MatMul"),
            "bf16 MatMul: {e}"
        );
        for dtype in ["f16", "bf16"] {
            let why = super::dtype_unsupported(dtype);
            assert!(
                why.contains(crate::runtime::ORT_VERSION) && why.contains("MatMul"),
                "{why}"
            );
        }
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The figures behind [`super::dtype_unsupported`]'s f16 reason: one
    /// 4096×4096 MatMul (16M weights: 64 MiB in f32, 32 MiB in f16, from an
    /// external data file as the engine's graphs) at batch 1, f32 against
    /// f16 weights at the engine's optimization level (ORT folds them to
    /// f32) and with ORT's optimizations off (they stay f16 and are cast on
    /// every run): resident memory after load and after 20 runs, time a
    /// run, and the weight's type in the graph ORT runs. A measurement, not
    /// a check: `cargo test -p em-onnx --lib -- --ignored
    /// f16_matmul_weight_memory_and_time --nocapture --test-threads 1`.
    #[test]
    #[ignore]
    fn f16_matmul_weight_memory_and_time() {
        use GraphOptimizationLevel::{All, Disable};
        let rt = crate::runtime::load(None).expect("onnxruntime (scripts/provision)");
        let (k, n, runs) = (4096usize, 4096usize, 20);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i % 97) as f32 - 48.0) / 500.0)
            .collect();
        for (elem, level, label) in [
            (DataType::Float16, All, "f16 weights, optimization all"),
            (
                DataType::Float16,
                Disable,
                "f16 weights, optimization disable",
            ),
            (DataType::Float, All, "f32 weights, optimization all"),
        ] {
            let mut b = Builder::new(DataPlacement::External, "w.data");
            let (wn, x) = if elem == DataType::Float {
                (b.weight("w", &[k, n], &w), "x".to_string())
            } else {
                // small f16 values of both signs, as bit patterns (the
                // values do not matter, their size does)
                let raw = (0..k * n)
                    .flat_map(|i| {
                        let bits = 0x2000u16 + (i % 97) as u16;
                        (if i % 2 == 1 { bits | 0x8000 } else { bits }).to_le_bytes()
                    })
                    .collect();
                let wn = b.raw_weight("w", &[k, n], elem, raw);
                (wn, b.op("Cast", &["x"], vec![attr_i("to", elem as i64)]))
            };
            let y = b.op("MatMul", &[&x, &wn], vec![]);
            if elem == DataType::Float {
                b.op_to("Identity", &[&y], &["y"], vec![]);
            } else {
                b.op_to(
                    "Cast",
                    &[&y],
                    &["y"],
                    vec![attr_i("to", DataType::Float as i64)],
                );
            }
            let built = b.finish(
                "m",
                "f16 measurement",
                vec![value_info(
                    "x",
                    DataType::Float,
                    &[Dim::Fixed(1), Dim::Fixed(k as i64)],
                )],
                vec![value_info("y", DataType::Float, &[])],
            );
            let tmp = super::TempFolder::new().unwrap();
            std::fs::write(tmp.0.join("m.onnx"), built.encode()).unwrap();
            std::fs::write(tmp.0.join("w.data"), &built.external.as_ref().unwrap().1).unwrap();
            drop(built);
            let before = rss_kib();
            let mut s = Session::builder(&rt.env)
                .unwrap()
                .with_intra_threads(1)
                .unwrap()
                .with_optimization_level(level)
                .unwrap()
                .with_optimized_model_path(tmp.0.join("optimized.onnx"))
                .unwrap()
                .commit_from_file(tmp.0.join("m.onnx"))
                .unwrap();
            let loaded = rss_kib();
            let x = vec![0.5f32; k];
            let run = |s: &mut Session| {
                let input =
                    ort::value::TensorRef::<f32>::from_array_view(([1usize, k], &x[..])).unwrap();
                s.run(ort::inputs!["x" => input]).unwrap();
            };
            run(&mut s);
            let t = std::time::Instant::now();
            for _ in 0..runs {
                run(&mut s);
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / runs as f64;
            let after = rss_kib();
            let m = ModelProto::decode(
                std::fs::read(tmp.0.join("optimized.onnx"))
                    .unwrap()
                    .as_slice(),
            )
            .unwrap();
            let weight: Vec<_> = m
                .graph
                .iter()
                .flat_map(|g| &g.initializer)
                .map(|t| format!("{} {:?}", t.name(), DataType::try_from(t.data_type()).ok()))
                .collect();
            eprintln!(
                "{label}: +{} MiB after load, +{} MiB after {runs} runs, {ms:.2} ms a run, \
                 casts inserted {:?}, initializers {weight:?}",
                loaded.saturating_sub(before) / 1024,
                after.saturating_sub(before) / 1024,
                inserted_casts(&m)
            );
        }
    }
}
