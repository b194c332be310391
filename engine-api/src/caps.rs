//! Capability tags an engine lists in [`crate::EngineInfo::capabilities`]:
//! the standard ones, as constants, so that an engine, the host and the
//! docs spell them one way. Engines may add their own tags (`kernels:…`,
//! `graph:…`); these are the ones with a meaning across engines.

/// One request at a time (`batch_policy: none`).
pub const BATCHING_NONE: &str = "batching:none";
/// Requests submitted together decode together (`batch_policy: static`).
pub const BATCHING_STATIC: &str = "batching:static";
/// Requests join and leave the running batch at any step
/// (`batch_policy: continuous`).
pub const BATCHING_CONTINUOUS: &str = "batching:continuous";
/// Batching is the server's own business (the `http` engine).
pub const BATCHING_SERVER: &str = "batching:server";
/// `Model::score`: logits of every position of a token sequence.
pub const SCORE: &str = "score";
/// Sampling settings (temperature, top-k, top-p, seed) are honoured.
pub const SAMPLING: &str = "sampling";
/// Tokens arrive as a stream, one sink call per step or chunk.
pub const STREAMING: &str = "streaming";
