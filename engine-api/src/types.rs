//! Plain data that crosses the plugin boundary.

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;
use std::fmt;

/// What an engine is and what it can do, shown by `engine-matrix engines`
/// and recorded in every run's system information.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct EngineInfo {
    /// Engine name as used in matrices, e.g. `candle`.
    pub name: RString,
    /// Version of the plugin itself.
    pub engine_version: RString,
    /// The runtime underneath, e.g. `candle 0.11.1` or `onnxruntime 1.31.1`.
    pub runtime_version: RString,
    /// Devices this build can run on, e.g. `cpu`, `cuda:0`.
    pub devices: RVec<RString>,
    /// Supported dtypes, e.g. `f32`, `f16`, `bf16`.
    pub dtypes: RVec<RString>,
    /// Supported weight quantizations; `none` is always listed when
    /// unquantized weights are supported.
    pub quantizations: RVec<RString>,
    /// Free-form capability tags, e.g. `batching:continuous`, `score`,
    /// `sampling`.
    pub capabilities: RVec<RString>,
    /// The options `engine-matrix tune` may search, as a JSON array (see
    /// [`crate::tunable`]); empty when the engine declares none.
    pub tunables: RString,
}

/// Why an engine call failed. `Unsupported` is special: the host records
/// the cell as `unsupported` (with the message) rather than `failed`.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The engine cannot do this (dtype, quantization, sequence length...).
    Unsupported,
    /// The model files are missing or malformed.
    InvalidModel,
    /// Options or request fields are invalid.
    InvalidArgument,
    /// Reading a file failed.
    Io,
    /// The engine failed while running.
    Runtime,
    /// Code inside the plugin panicked; the panic was caught at the boundary.
    Panic,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidModel => "invalid model",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Io => "io",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Panic => "panic",
        }
    }
}

/// An error that crosses the boundary and says what went wrong.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string().into(),
        }
    }
    pub fn unsupported(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn invalid_model(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidModel, message)
    }
    pub fn invalid_argument(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn runtime(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }
    pub fn io(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    pub fn is_unsupported(&self) -> bool {
        self.kind == ErrorKind::Unsupported
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for EngineError {}

/// Which model to load. The host resolves `weights: synthetic` to a folder
/// of generated weights before calling the engine, so engines only ever
/// see a Hugging Face-style folder.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The model's name in the matrix, e.g. `gpt2`.
    pub name: RString,
    /// Architecture (`model_type` in config.json), e.g. `gpt2`.
    pub architecture: RString,
    /// Folder holding `config.json` and `model.safetensors`.
    pub path: RString,
    /// Compute dtype: `f32`, `f16` or `bf16`.
    pub dtype: RString,
    /// Weight quantization; `none` for unquantized.
    pub quantization: RString,
}

/// How the scheduler forms batches.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchPolicy {
    /// One request at a time.
    None,
    /// Up to `max_batch` waiting requests start together and run to
    /// completion; nothing joins a running batch.
    Static,
    /// Iteration-level: waiting requests join the running batch between
    /// decode steps, up to `max_batch` sequences.
    Continuous,
}

impl BatchPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchPolicy::None => "none",
            BatchPolicy::Static => "static",
            BatchPolicy::Continuous => "continuous",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "static" => Some(Self::Static),
            "continuous" => Some(Self::Continuous),
            _ => None,
        }
    }
}

/// Options for [`crate::Engine::load`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct LoadOptions {
    pub batch_policy: BatchPolicy,
    /// Largest number of sequences decoded together (>= 1).
    pub max_batch: u32,
    /// Engine-specific options as a JSON object (`{}` when none), e.g.
    /// `{"threads": 2, "device": "cpu"}`.
    pub options_json: RString,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            batch_policy: BatchPolicy::Continuous,
            max_batch: 16,
            options_json: "{}".into(),
        }
    }
}

/// Sampling parameters. `temperature == 0` means greedy.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// 1.0 disables top-p.
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self::GREEDY
    }
}

/// One generation request.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Request {
    /// Chosen by the host; unique among requests in flight on a model.
    pub id: u64,
    pub prompt: RVec<u32>,
    pub max_new_tokens: u32,
    pub sampling: Sampling,
    /// Keep generating past the end-of-sequence token.
    pub ignore_eos: bool,
}

/// One generated token.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenEvent {
    pub request_id: u64,
    pub token: u32,
}

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` were generated.
    Length,
    /// The end-of-sequence token was generated (and `ignore_eos` was off).
    Eos,
    /// The model's context window is full.
    ContextFull,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
            FinishReason::ContextFull => "context_full",
        }
    }
}

/// Engine-side statistics of a finished request.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Completion {
    pub request_id: u64,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub finish_reason: FinishReason,
    /// Time between submit and the start of the request's prefill.
    pub queue_us: u64,
    /// Duration of the prefill step this request was part of.
    pub prefill_us: u64,
    /// Time from the end of prefill to the last token.
    pub decode_us: u64,
    /// Number of decode steps this request took part in.
    pub decode_steps: u32,
    /// Prompt tokens served from a prefix cache instead of being computed
    /// (an http engine: the server's `usage.prompt_tokens_details.cached_tokens`
    /// or llama-server's `timings.cache_n`); `RNone` when the engine does
    /// not know, which is not the same as 0.
    pub cached_prompt_tokens: abi_stable::std_types::ROption<u32>,
}

/// Memory the engine accounts for itself.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub weight_bytes: u64,
    /// KV cache bytes holding live tokens now.
    pub kv_cache_used_bytes: u64,
    /// KV cache bytes allocated now (used + preallocated headroom).
    pub kv_cache_reserved_bytes: u64,
    /// Largest `kv_cache_used_bytes` seen since the previous `memory()`
    /// call, so a caller that reads memory at the start and end of a
    /// measurement gets that measurement's peak.
    pub kv_cache_peak_bytes: u64,
    /// Bytes a prefix cache holds (the KV of prompt prefixes kept for
    /// later requests; also counted in `kv_cache_reserved_bytes`); 0
    /// without one.
    pub prefix_cache_bytes: u64,
}

/// Logits of every position of a scored sequence, row-major
/// `[rows, vocab]`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Logits {
    pub rows: u32,
    pub vocab: u32,
    pub data: RVec<f32>,
}

impl Logits {
    pub fn row(&self, i: usize) -> &[f32] {
        let v = self.vocab as usize;
        &self.data[i * v..(i + 1) * v]
    }
}
