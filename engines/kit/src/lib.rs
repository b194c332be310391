//! The runtime every in-process engine plugin shares.
//!
//! An engine implements [`Kernels`] (prefill a batch of equal-length
//! prompts, decode one token for a batch of caches, score, cache bytes),
//! wraps them in a [`Sequences`] table and calls [`spawn`] from its
//! [`engine_api::Engine::load`]. Everything above the tensor math lives
//! here, so that two engines compared by engine-matrix differ only in
//! their kernels, never in their scheduling or their validation:
//!
//! * [`Sequences`]: the table of live sequences and their caches, every
//!   check on prompts, tokens and context length, prefill grouping and
//!   chunking, the order of logits rows, memory accounting;
//! * the scheduler ([`spawn`]): the request queue, the batching policy,
//!   sampling, end-of-sequence handling, sink calls and engine-side
//!   timing, over the lower-level [`Backend`] trait that [`Sequences`]
//!   implements (test doubles and the deliberately broken plugins of the
//!   host's tests implement [`Backend`] directly).
//!
//! # Threads
//!
//! One scheduler thread owns the backend. It sleeps on a channel while
//! there is no work; `submit` only validates and enqueues, so it returns
//! in microseconds. A backend may use its own worker threads (candle's
//! rayon pool) inside `prefill`/`decode`.
//!
//! # Panics
//!
//! A panic inside the backend is caught on the scheduler thread: the
//! requests of that step get an error, and the model is marked poisoned
//! (its state may be inconsistent), so every later submit fails with a
//! clear message instead of hanging.

pub mod arch;
pub mod checkpoint;
pub mod evict;
pub mod gpt2;
pub mod llama;
mod options;
pub mod prefix_cache;
pub mod sampling;
mod scheduler;
pub mod sequences;
pub mod testing;

pub use engine_matrix_stats::rng::fnv1a;
pub use options::{engine_options, parse_options, KitOptions};
pub use prefix_cache::PrefixCacheConfig;
pub use scheduler::{spawn, spawn_with, KitModel};
pub use sequences::{CacheBytes, Kernels, Limits, Sequences};

use engine_api::{EngineError, Logits, MemoryStats};

/// Identifies a sequence in a backend; chosen by the scheduler.
pub type SeqId = u64;

/// What the scheduler drives: a model with a table of sequences. Engines
/// implement [`Kernels`] and get this from [`Sequences`]; implement it
/// directly only for a test double that must misbehave.
pub trait Backend: Send + 'static {
    /// Size of a row of logits.
    fn vocab_size(&self) -> usize;
    /// Largest prompt + generated length the model supports.
    fn max_seq_len(&self) -> usize;
    /// End-of-sequence token, if the model has one.
    fn eos_token(&self) -> Option<u32>;
    /// Runs the prompts of new sequences, creating their KV caches, and
    /// writes the logits of each sequence's last position into `logits`
    /// (row-major `[seqs.len(), vocab]`, replacing its contents).
    fn prefill(
        &mut self,
        seqs: &[(SeqId, &[u32])],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError>;
    /// One decode step: appends `token` to each sequence's cache and
    /// writes the next-token logits (`[seqs.len(), vocab]`). Sequences may
    /// have different lengths.
    fn decode(&mut self, seqs: &[(SeqId, u32)], logits: &mut Vec<f32>) -> Result<(), EngineError>;
    /// Drops a sequence's cache.
    fn free(&mut self, seq: SeqId);
    /// Weight and KV cache bytes.
    fn memory(&self) -> MemoryStats;
    /// Logits for every position of `tokens`, without touching any cache.
    fn score(&mut self, tokens: &[u32]) -> Result<Logits, EngineError>;
    /// Turns a prefix cache on (`Some`) or off (`None`); a backend without
    /// one answers `unsupported` to `Some`.
    fn set_prefix_cache(&mut self, cfg: Option<PrefixCacheConfig>) -> Result<(), EngineError> {
        match cfg {
            None => Ok(()),
            Some(_) => Err(EngineError::unsupported(
                "this engine has no prefix cache (prefix_cache)",
            )),
        }
    }
    /// Prompt tokens of live sequence `seq` that its prefill took from the
    /// prefix cache instead of computing (0 without one).
    fn cached_prompt_tokens(&self, _seq: SeqId) -> u32 {
        0
    }
    /// What the engine chose for this model, a JSON object (see
    /// [`engine_api::Model::describe`]); empty by default.
    fn describe(&self) -> String {
        String::new()
    }
}

/// Largest number of prompt tokens an engine runs in one batched prefill
/// forward: it bounds the `[batch, heads, t, t]` attention scores (100 MB
/// in f32 for two 1024-token GPT-2 prompts). Prompts of equal length
/// beyond it are prefilled in several chunks.
pub const MAX_PREFILL_TOKENS: usize = 2048;

/// The `threads` engine option: all available cores by default; 0 is an
/// `invalid argument` naming the engine.
pub fn threads(engine: &str, option: Option<usize>) -> Result<usize, EngineError> {
    match option.unwrap_or_else(available_cores) {
        0 => Err(EngineError::invalid_argument(format!(
            "{engine} options: threads must be at least 1"
        ))),
        n => Ok(n),
    }
}

/// The tunables of every engine built on the kit (see
/// [`engine_api::tunable`]): `threads` (1 to the cores available, default
/// all of them), the scheduler's `max_batch` and `batch_policy`, and the
/// prefix cache; an engine appends its own.
pub fn tunables() -> Vec<engine_api::tunable::Tunable> {
    use engine_api::tunable::Tunable;
    let cores = available_cores() as i64;
    vec![
        Tunable::int("threads", 1, cores, cores, "compute threads of the model"),
        Tunable::log_int(
            "max_batch",
            1,
            256,
            16,
            "most sequences decoded together (the cell's value is the default)",
        ),
        Tunable::choice(
            "batch_policy",
            &["none", "static", "continuous"],
            "continuous",
            "how the scheduler forms batches (the cell's value is the default)",
        ),
        Tunable::bool(
            "prefix_cache",
            false,
            "keep prompt prefixes' KV for later requests",
        ),
    ]
}

/// The capability tags of every engine built on the kit (its three
/// batching policies, `score` and sampling), followed by the engine's own
/// `extra` tags, ready for [`engine_api::EngineInfo::capabilities`].
pub fn capabilities(
    extra: &[&str],
) -> engine_api::abi_stable::std_types::RVec<engine_api::abi_stable::std_types::RString> {
    use engine_api::caps;
    [
        caps::BATCHING_NONE,
        caps::BATCHING_STATIC,
        caps::BATCHING_CONTINUOUS,
        caps::SCORE,
        caps::SAMPLING,
    ]
    .iter()
    .chain(extra)
    .map(|&t| t.into())
    .collect()
}

/// engine-matrix's cache folder, shared by the host (synthetic weights)
/// and plugins (e.g. built ONNX graphs): `$ENGINE_MATRIX_CACHE`, else
/// `$XDG_CACHE_HOME/engine-matrix`, else `~/.cache/engine-matrix`.
pub fn cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os("ENGINE_MATRIX_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(p).join("engine-matrix");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/engine-matrix"),
        None => std::env::temp_dir().join("engine-matrix-cache"),
    }
}

/// Parses a `device` engine option: `cpu` gives `None`, `cuda` / `cuda:N`
/// the CUDA ordinal; anything else is an error naming `engine`.
pub fn parse_device(engine: &str, s: &str) -> Result<Option<usize>, EngineError> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(None);
    }
    let bad = || {
        EngineError::invalid_argument(format!(
            "{engine} options: device {s:?}: expected cpu, cuda or cuda:N"
        ))
    };
    match s.strip_prefix("cuda") {
        Some("") => Ok(Some(0)),
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .map(Some)
            .ok_or_else(bad),
        None => Err(bad()),
    }
}

/// What identifies this machine's CPU for caches of measured choices
/// (kernel auto-tuning): a hash of `/proc/cpuinfo`'s model name and flags
/// of the first processor and the cores this process may use. Another
/// CPU model, another microcode's flags or another core count is another
/// key; the same machine type across hosts shares it.
pub fn machine_key() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first = info.split("\n\n").next().unwrap_or("");
    let field = |name: &str| {
        first
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let id = format!(
        "{}\n{}\n{}\n{}",
        field("model name"),
        field("flags"),
        available_cores(),
        std::env::consts::ARCH
    );
    format!("{:016x}", fnv1a(id.as_bytes()))
}

/// The number of cores this process may use (the default thread count of
/// every in-process engine).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One short prefill (8 tokens) and one decode step on a throw-away
/// sequence, so that first-use costs (allocator arenas, packing buffers,
/// thread pools) do not land in the first measured request. Engines call
/// it at the end of loading.
pub fn warm_up<B: Backend + ?Sized>(b: &mut B) -> Result<(), EngineError> {
    const WARM: SeqId = SeqId::MAX;
    let max = b.max_seq_len();
    let n = 8.min(max.saturating_sub(1)).max(1);
    let prompt = vec![0u32; n];
    let mut logits = Vec::new();
    let r = b.prefill(&[(WARM, &prompt)], &mut logits).and_then(|_| {
        if n < max {
            b.decode(&[(WARM, 0)], &mut logits)
        } else {
            Ok(())
        }
    });
    b.free(WARM);
    r.map_err(|e| EngineError::runtime(format!("warm-up run failed: {}", e.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_default_to_the_cores_and_zero_is_refused() {
        assert_eq!(threads("x", Some(3)).unwrap(), 3);
        assert_eq!(threads("x", None).unwrap(), available_cores());
        let e = threads("candle", Some(0)).unwrap_err();
        assert_eq!(e.kind, engine_api::ErrorKind::InvalidArgument);
        assert!(
            e.message
                .contains("candle options: threads must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn the_machine_key_is_stable_hex() {
        let k = machine_key();
        assert_eq!(k.len(), 16);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()), "{k}");
        assert_eq!(k, machine_key());
    }

    #[test]
    fn capabilities_are_the_kits_then_the_engines() {
        let c: Vec<String> = capabilities(&["kernels:x"])
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            c,
            [
                "batching:none",
                "batching:static",
                "batching:continuous",
                "score",
                "sampling",
                "kernels:x"
            ]
        );
    }
}
