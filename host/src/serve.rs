//! `engine-matrix serve`: an OpenAI-compatible streaming HTTP server over
//! any in-process engine plugin, so that an engine can be measured over
//! HTTP, and a report can split HTTP and serving overhead from engine time
//! (the same engine in-process and through `serve`).
//!
//! # Endpoints
//!
//! * `GET /health`: 200 once the model is loaded, 503 while it loads.
//! * `GET /v1/models`: the OpenAI model list (one model).
//! * `POST /v1/completions` and `POST /v1/chat/completions`, with
//!   `stream: true` (server-sent events: `data: {json}\n\n` per chunk, then
//!   `data: [DONE]\n\n`) or `stream: false` (one JSON response).
//!
//! # Requests
//!
//! Fields read: `prompt` (completions) or `messages` (chat), `max_tokens`
//! or `max_completion_tokens` (default 16 for completions, the rest of the
//! context for chat), `stream`, `stream_options.include_usage`,
//! `temperature` (default 1.0 as in OpenAI's API; 0 is greedy), `top_p`,
//! `top_k` (vLLM's extension; 0 or -1 disable it), `seed`, `ignore_eos`,
//! `min_tokens` and `n` (only 1). Unknown fields are ignored, and so is
//! `model`: the server has one model and names it in every response.
//!
//! `prompt_logprobs: k` (vLLM's extension, `stream: false` only) adds to
//! the choice the log-probabilities of the prompt's tokens, as vLLM
//! returns them: a list as long as the prompt, `null` first (nothing
//! predicts the first token), then for each later token a map from token
//! id (as a string) to `{logprob, rank, decoded_token}` holding the `k`
//! most likely tokens at that position and the prompt's own token (rank
//! 1 is the most likely). They come from the engine's `score` of the
//! prompt (one forward, beside whatever the scheduler runs), so a client
//! can measure a served model's perplexity (the http engine's `score`).
//!
//! A completion `prompt` may be an array of token ids (as OpenAI's API
//! allows) or a string. Every choice carries the generated ids in the
//! extension field `token_ids` (as vLLM can), so clients count tokens
//! exactly. Text depends on the model:
//!
//! * a model with a tokenizer (a folder with `tokenizer.json`, an imported
//!   GGUF) tokenizes string prompts; chat `messages` go through its chat
//!   template (`tokenizer_config.json`, minijinja) with the assistant's
//!   turn opened; each chunk's text is what its token completes (see
//!   [`engine_matrix_text::Detokenizer`]: a character split over two
//!   tokens comes whole with the second, the first chunk's text is empty);
//! * a model without one (synthetic weights) cannot read text: a string
//!   becomes one token per UTF-8 byte, the byte's value modulo the
//!   vocabulary size, chat `messages` contents are joined with `\n` and
//!   turned into ids the same way, and the text of each generated token is
//!   its id rendered as `" <id>"`.
//!
//! The engines generate `max_tokens` tokens unless they meet the model's
//! end-of-sequence token; `ignore_eos: true` turns that off. `min_tokens`
//! is accepted: when it reaches `max_tokens` the request ignores EOS (the
//! only case engine-api can express), otherwise it has no effect.
//!
//! A streamed response sends one chunk per token; a last chunk with empty
//! text (chat: an empty `delta`), the `finish_reason` (`length`, or `stop`
//! at end-of-sequence) and the extension `engine_stats` (the engine's own
//! queue, prefill and decode times); with `include_usage`, a chunk with
//! empty `choices` and `usage`, as OpenAI and vLLM send; then `[DONE]`.
//! A chat stream's first token chunk carries `role: assistant` in its
//! delta (no content-less chunk precedes the first token, so a client's
//! time to first chunk is its time to first token).
//!
//! Errors are OpenAI-style JSON (`{"error": {"message", "type", "param",
//! "code"}}`): 400 for a bad request (including a prompt plus `max_tokens`
//! longer than the model's positions), 503 while the model loads, 500 when
//! the engine fails. An engine error in the middle of a stream becomes a
//! `data: {"error": ...}` chunk followed by `[DONE]`.
//!
//! # Bridging
//!
//! One loaded model ([`ModelBox`]) serves every connection. Each HTTP
//! request becomes one engine [`Request`] (ids from an atomic counter)
//! submitted with its own sink, which forwards the request's tokens, its
//! completion or its error to an unbounded tokio channel read by the
//! response; the engine's scheduler batches concurrent requests
//! (`--max-batch`, `--batch-policy`). engine-api has no cancellation: when
//! a client disconnects, its response (and the channel's receiver) is
//! dropped and the request's remaining tokens are discarded.
//!
//! # Injected delays (for tests)
//!
//! `--inject-first-token-ms X` holds every request's first token chunk
//! until X ms after the request arrived, and `--inject-token-ms Y` sends
//! each later token chunk at least Y ms after the previous one (timers on
//! an `Instant` schedule, never a busy loop). They make the server's token
//! timing known, to check the accuracy of an HTTP client's measurements;
//! they are not for benchmarking. Non-streaming responses follow the same
//! schedule.

use crate::matrix::{ModelDef, ModelWeights};
use crate::plugins::{self, LoadedEngine};
use crate::run::cell;
use crate::synthetic::{self, Gpt2Shape};
use anyhow::{bail, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine_api::abi_stable::sabi_trait::TD_Opaque;
use engine_api::abi_stable::std_types::RSlice;
use engine_api::ffi::{SinkFfi, SinkFfi_TO};
use engine_api::{
    BatchPolicy, Completion, EngineError, ErrorKind, FinishReason, LoadOptions, Logits, ModelBox,
    ModelSpec, Request, Sampling, TokenEvent,
};
use engine_matrix_text::{Detokenizer, Message, TextModel};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Everything `engine-matrix serve` is given.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub plugin_dir: PathBuf,
    /// The plugin to load, e.g. `candle`.
    pub engine: String,
    /// Engine options (a JSON object), as a matrix's `options:`.
    pub options: Value,
    /// A preset synthetic config (`gpt2`, `tiny`), a config.json path (both
    /// with synthetic weights, seed 0) or a Hugging Face folder.
    pub model: String,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    pub max_batch: u32,
    pub batch_policy: BatchPolicy,
    pub dtype: String,
    /// Tokio worker threads for HTTP.
    pub http_threads: usize,
    pub inject_first_token: Option<Duration>,
    pub inject_token: Option<Duration>,
}

/// The model `spec` names, as a matrix model entry: a folder is loaded as
/// it is; a preset name or a config.json path gets synthetic weights with
/// seed 0, exactly as `weights: synthetic, config: NAME, seed: 0` would.
pub fn model_def(spec: &str) -> Result<ModelDef> {
    let path = Path::new(spec);
    let (name, weights) = if path.is_dir() || crate::models::is_gguf(path) {
        let abs = std::path::absolute(path)?;
        let name = abs
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .trim_end_matches(".gguf")
            .to_string();
        (name, ModelWeights::Path(abs))
    } else if synthetic::preset(spec).is_some() {
        (
            spec.to_string(),
            ModelWeights::Synthetic {
                config: spec.to_string(),
                seed: 0,
            },
        )
    } else if path.is_file() {
        let abs = std::path::absolute(path)?;
        let name = abs
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
            .unwrap_or("custom")
            .to_string();
        (
            name,
            ModelWeights::Synthetic {
                config: abs.display().to_string(),
                seed: 0,
            },
        )
    } else {
        bail!(
            "--model '{spec}' is neither a preset ({}), a config.json nor a Hugging Face folder",
            synthetic::preset_names().join(", ")
        );
    };
    Ok(ModelDef {
        name,
        // the config's model_type
        architecture: String::new(),
        weights,
    })
}

struct Ready {
    model: ModelBox,
    shape: Gpt2Shape,
    text: Option<Arc<TextModel>>,
}

struct AppState {
    name: String,
    /// Set once the model is loaded. Declared before `engine`, so the
    /// model is dropped before its plugin.
    ready: OnceLock<Ready>,
    engine: LoadedEngine,
    next_id: AtomicU64,
    inject_first_token: Option<Duration>,
    inject_token: Option<Duration>,
}

/// Runs the server until Ctrl-C or SIGTERM (or until the model fails to
/// load, which is an error). Prints `listening on http://ADDR` on stdout
/// as soon as the socket is bound, before the model is loaded.
pub fn run(opts: ServeOptions) -> Result<()> {
    if !opts.options.is_object() {
        bail!("--options must be a JSON object, not {}", opts.options);
    }
    let def = model_def(&opts.model)?;
    if let ModelWeights::Path(_) = def.weights {
        // Instant for a folder: fail before listening when it is no model.
        cell::resolve_model(&def)?;
    }
    let file = plugins::find(&opts.plugin_dir, &opts.engine)?;
    let engine = plugins::load(&file)?;
    if !engine.info.dtypes.iter().any(|d| d.as_str() == opts.dtype) {
        bail!(
            "engine '{}' supports dtypes [{}], not {}",
            opts.engine,
            engine
                .info
                .dtypes
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            opts.dtype
        );
    }
    let state = Arc::new(AppState {
        name: def.name.clone(),
        ready: OnceLock::new(),
        engine,
        next_id: AtomicU64::new(0),
        inject_first_token: opts.inject_first_token,
        inject_token: opts.inject_token,
    });
    let (rt, listener) = listen(
        "serve-http",
        opts.http_threads,
        &opts.host,
        opts.port,
        "listening on http://",
    )?;

    // Load the model off the runtime; /health answers 503 meanwhile.
    let (fail_tx, fail_rx) = oneshot::channel::<String>();
    {
        let state = state.clone();
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("serve-load".into())
            .spawn(move || match load(&state, &def, &opts) {
                Ok(ready) => {
                    let _ = state.ready.set(ready);
                }
                Err(e) => {
                    let _ = fail_tx.send(format!("{e:#}"));
                }
            })
            .context("cannot start the loader thread")?;
    }

    let app = router(state.clone());
    let failed = rt.block_on(async move {
        let (stop_tx, stop_rx) = oneshot::channel::<Option<String>>();
        let watcher = tokio::spawn(async move {
            let failed = async {
                match fail_rx.await {
                    Ok(msg) => msg,
                    // The loader succeeded: never stop for that.
                    Err(_) => std::future::pending().await,
                }
            };
            let why = tokio::select! {
                msg = failed => Some(msg),
                _ = shutdown_signal() => None,
            };
            let _ = stop_tx.send(why);
        });
        let (why_tx, why_rx) = oneshot::channel::<Option<String>>();
        // Token chunks are small writes: without TCP_NODELAY, Nagle's
        // algorithm and the client's delayed ACKs would hold them back.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let why = stop_rx.await.unwrap_or(None);
                let _ = why_tx.send(why);
            })
            .await;
        watcher.abort();
        served.context("the HTTP server failed")?;
        anyhow::Ok(why_rx.await.unwrap_or(None))
    })?;
    // Dropping the runtime would wait for streams that are still open.
    rt.shutdown_timeout(Duration::from_secs(1));
    match failed {
        Some(msg) => bail!("{msg}"),
        None => Ok(()),
    }
}

/// A tokio runtime of `threads` workers and a listener bound on it to
/// `host:port`; prints `{announce}ADDR` on stdout (and flushes) once bound,
/// so whoever started the process can read the port.
pub(crate) fn listen(
    name: &str,
    threads: usize,
    host: &str,
    port: u16,
    announce: &str,
) -> Result<(tokio::runtime::Runtime, tokio::net::TcpListener)> {
    let (rt, listener) = bind(name, threads, host, port)?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{announce}{addr}")?;
    out.flush()?;
    Ok((rt, listener))
}

/// A runtime of `threads` threads named `name`, and a listener bound to
/// `host:port` on it.
pub(crate) fn bind(
    name: &str,
    threads: usize,
    host: &str,
    port: u16,
) -> Result<(tokio::runtime::Runtime, tokio::net::TcpListener)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((host, port)))
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    Ok((rt, listener))
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn load(state: &AppState, def: &ModelDef, opts: &ServeOptions) -> Result<Ready> {
    let t = std::time::Instant::now();
    let resolved = cell::resolve_model(def)?;
    let folder = resolved.folder(&opts.dtype)?;
    let spec = ModelSpec {
        name: def.name.clone().into(),
        architecture: resolved.architecture.clone().into(),
        path: folder.display().to_string().into(),
        dtype: opts.dtype.clone().into(),
        quantization: "none".into(),
    };
    let options = LoadOptions {
        batch_policy: opts.batch_policy,
        max_batch: opts.max_batch.max(1),
        options_json: opts.options.to_string().into(),
    };
    let model = state
        .engine
        .engine
        .load(&spec, &options)
        .into_result()
        .map_err(|e| anyhow::anyhow!("loading model '{}' failed: {e}", def.name))?;
    eprintln!(
        "serve: engine '{}' loaded model '{}' ({}) in {:.2} s",
        opts.engine,
        def.name,
        resolved.path.display(),
        t.elapsed().as_secs_f64()
    );
    let text = crate::models::text_model(&folder)?.map(Arc::new);
    if text.is_none() {
        eprintln!(
            "serve: {} has no tokenizer.json: string prompts become byte ids, token text is ids",
            folder.display()
        );
    }
    Ok(Ready {
        model,
        shape: resolved.shape,
        text,
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(state)
}

/// An OpenAI-style error response.
fn error(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response {
    let body = json!({"error": {
        "message": message.to_string(),
        "type": kind,
        "param": null,
        "code": status.as_u16(),
    }});
    (status, axum::Json(body)).into_response()
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn loading() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        "the model is still loading",
    )
}

fn engine_error(e: &EngineError) -> Response {
    match e.kind {
        ErrorKind::InvalidArgument | ErrorKind::Unsupported => bad_request(e),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "engine_error", e),
    }
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.get().is_some() {
        (StatusCode::OK, "ok").into_response()
    } else {
        loading()
    }
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let mut model = json!({
        "id": s.name,
        "object": "model",
        "created": unix_now(),
        "owned_by": "engine-matrix",
        "engine": s.engine.info.name.as_str(),
    });
    if let Some(r) = s.ready.get() {
        model["max_model_len"] = json!(r.shape.n_positions);
    }
    axum::Json(json!({"object": "list", "data": [model]})).into_response()
}

async fn completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    handle(s, Kind::Text, body).await
}

async fn chat_completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    handle(s, Kind::Chat, body).await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Chat,
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
struct Gen {
    prompt: Vec<u32>,
    max_tokens: u32,
    sampling: Sampling,
    ignore_eos: bool,
    stream: bool,
    include_usage: bool,
    /// `prompt_logprobs`: how many of each position's most likely tokens
    /// to return with the prompt's own.
    prompt_logprobs: Option<u32>,
}

/// Token ids of a string prompt: one per UTF-8 byte, modulo `vocab`.
pub fn string_to_ids(text: &str, vocab: u32) -> Vec<u32> {
    text.bytes().map(|b| b as u32 % vocab.max(1)).collect()
}

fn field_u64(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("'{key}' must be a non-negative integer, not {x}")),
    }
}

fn field_f64(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("'{key}' must be a number, not {x}")),
    }
}

fn field_bool(v: &Value, key: &str) -> Result<Option<bool>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_bool()
            .map(Some)
            .ok_or_else(|| format!("'{key}' must be true or false, not {x}")),
    }
}

fn prompt_ids(p: &Value, vocab: u32, text: Option<&TextModel>) -> Result<Vec<u32>, String> {
    match p {
        Value::String(s) => match text {
            Some(t) => t.encode(s, true).map_err(|e| e.to_string()),
            None => Ok(string_to_ids(s, vocab)),
        },
        Value::Array(items) if items.iter().all(Value::is_number) => items
            .iter()
            .map(|x| match x.as_u64() {
                Some(id) if id < vocab as u64 => Ok(id as u32),
                _ => Err(format!(
                    "prompt token {x} is not a token id of this model (0..{vocab})"
                )),
            })
            .collect(),
        Value::Array(items) if items.len() == 1 => prompt_ids(&items[0], vocab, text),
        Value::Array(_) => Err("only one prompt per request is supported".into()),
        other => Err(format!(
            "'prompt' must be a string or an array of token ids, not {other}"
        )),
    }
}

/// The messages of a chat request, each with its role and its text
/// (text content parts joined).
fn messages(messages: &Value) -> Result<Vec<Message>, String> {
    let Some(list) = messages.as_array() else {
        return Err("'messages' must be an array".into());
    };
    if list.is_empty() {
        return Err("'messages' is empty".into());
    }
    let mut out = Vec::new();
    for m in list {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user")
            .to_string();
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => {
                let mut parts = Vec::new();
                for it in items {
                    match it.get("text").and_then(Value::as_str) {
                        Some(t) => parts.push(t),
                        None => return Err("only text content parts are supported".into()),
                    }
                }
                parts.concat()
            }
            None | Some(Value::Null) => String::new(),
            Some(other) => return Err(format!("a message's 'content' cannot be {other}")),
        };
        out.push(Message { role, content });
    }
    Ok(out)
}

/// A chat's prompt ids: through the chat template when the model has a
/// tokenizer with one; without a tokenizer, the contents joined with
/// `\n` as byte ids.
fn chat_ids(m: &Value, vocab: u32, text: Option<&TextModel>) -> Result<Vec<u32>, String> {
    let msgs = messages(m)?;
    match text {
        Some(t) if t.chat_template().is_some() => t.chat(&msgs).map_err(|e| e.to_string()),
        Some(_) => Err("this model has no chat template: use /v1/completions".into()),
        None => {
            let joined: Vec<&str> = msgs
                .iter()
                .filter(|m| !m.content.is_empty())
                .map(|m| m.content.as_str())
                .collect();
            Ok(string_to_ids(&joined.join("\n"), vocab))
        }
    }
}

/// Reads and checks a request body against the model's shape.
fn parse(
    kind: Kind,
    v: &Value,
    shape: &Gpt2Shape,
    seed: u64,
    text: Option<&TextModel>,
) -> Result<Gen, String> {
    let vocab = shape.vocab_size as u32;
    let prompt = match kind {
        Kind::Text => match v.get("prompt") {
            None | Some(Value::Null) => return Err("'prompt' is required".into()),
            Some(p) => prompt_ids(p, vocab, text)?,
        },
        Kind::Chat => match v.get("messages") {
            None | Some(Value::Null) => return Err("'messages' is required".into()),
            Some(m) => chat_ids(m, vocab, text)?,
        },
    };
    if prompt.is_empty() {
        return Err("the prompt is empty".into());
    }
    if let Some(n) = field_u64(v, "n")? {
        if n != 1 {
            return Err("only n = 1 is supported".into());
        }
    }
    let positions = shape.n_positions;
    let max_tokens = match field_u64(v, "max_completion_tokens")? {
        Some(m) => Some(m),
        None => field_u64(v, "max_tokens")?,
    };
    let max_tokens = match (max_tokens, kind) {
        (Some(m), _) => m,
        (None, Kind::Text) => 16,
        (None, Kind::Chat) => positions.saturating_sub(prompt.len()) as u64,
    };
    if prompt.len() + max_tokens as usize > positions || max_tokens == 0 && kind == Kind::Chat {
        return Err(format!(
            "This model's maximum context length is {positions} tokens. However, you requested {} tokens ({} in the prompt, {max_tokens} for the completion). Please reduce the length of the prompt or of the completion.",
            prompt.len() as u64 + max_tokens,
            prompt.len()
        ));
    }
    if max_tokens == 0 {
        return Err("'max_tokens' must be at least 1".into());
    }
    let min_tokens = field_u64(v, "min_tokens")?.unwrap_or(0);
    if min_tokens > max_tokens {
        return Err(format!(
            "'min_tokens' ({min_tokens}) must not exceed 'max_tokens' ({max_tokens})"
        ));
    }
    let temperature = field_f64(v, "temperature")?.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&temperature) {
        return Err(format!("'temperature' must be >= 0, not {temperature}"));
    }
    let top_p = field_f64(v, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(format!("'top_p' must be in (0, 1], not {top_p}"));
    }
    let top_k = match v.get("top_k") {
        None | Some(Value::Null) => 0,
        Some(x) => match x.as_i64() {
            Some(k) if k <= 0 => 0,
            Some(k) => k.min(u32::MAX as i64) as u32,
            None => return Err(format!("'top_k' must be an integer, not {x}")),
        },
    };
    let seed = match v.get("seed") {
        None | Some(Value::Null) => seed,
        Some(x) => match (x.as_u64(), x.as_i64()) {
            (Some(s), _) => s,
            (None, Some(s)) => s as u64,
            _ => return Err(format!("'seed' must be an integer, not {x}")),
        },
    };
    let ignore_eos = field_bool(v, "ignore_eos")?.unwrap_or(false) || min_tokens >= max_tokens;
    let stream = field_bool(v, "stream")?.unwrap_or(false);
    let prompt_logprobs = match field_u64(v, "prompt_logprobs")? {
        Some(_) if stream => return Err("'prompt_logprobs' needs 'stream': false".into()),
        Some(k) if k > vocab as u64 => {
            return Err(format!(
                "'prompt_logprobs' ({k}) exceeds the vocabulary size ({vocab})"
            ))
        }
        k => k.map(|k| k as u32),
    };
    let include_usage = match v.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(o) if o.is_object() => field_bool(o, "include_usage")?.unwrap_or(false),
        Some(o) => return Err(format!("'stream_options' must be an object, not {o}")),
    };
    Ok(Gen {
        prompt,
        max_tokens: max_tokens.min(u32::MAX as u64) as u32,
        sampling: Sampling {
            temperature: temperature as f32,
            top_k,
            top_p: top_p as f32,
            seed,
        },
        ignore_eos,
        stream,
        include_usage,
        prompt_logprobs,
    })
}

/// vLLM's `prompt_logprobs` for `prompt` from its `logits` (`[rows,
/// vocab]`, row `j` predicting token `j + 1`): `null`, then for each
/// later token the `k` most likely tokens and the token itself.
fn prompt_logprobs_json(prompt: &[u32], logits: &Logits, k: usize, shape: &Shape) -> Value {
    let vocab = logits.vocab as usize;
    let mut out = vec![Value::Null];
    for (j, &token) in prompt.iter().enumerate().skip(1) {
        if j > logits.rows as usize {
            break;
        }
        let lp = engine_matrix_stats::quality::log_softmax(logits.row(j - 1));
        let mut order: Vec<usize> = (0..vocab).collect();
        let k = k.min(vocab);
        if k > 0 && k < vocab {
            order.select_nth_unstable_by(k - 1, |&a, &b| lp[b].total_cmp(&lp[a]));
        }
        order.truncate(k);
        order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
        // ranks: the top k in order; the prompt's token, when not among
        // them, by one count over the row
        let mut ranked: Vec<(usize, usize)> = order
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i + 1))
            .collect();
        let token = token as usize;
        if token < vocab && !order.contains(&token) {
            ranked.push((token, 1 + lp.iter().filter(|&&x| x > lp[token]).count()));
        }
        let entries: serde_json::Map<String, Value> = ranked
            .into_iter()
            .map(|(id, rank)| {
                let entry = json!({
                    "logprob": lp[id],
                    "rank": rank,
                    "decoded_token": shape.text_of_token(id as u32),
                });
                (id.to_string(), entry)
            })
            .collect();
        out.push(Value::Object(entries));
    }
    Value::Array(out)
}

/// What the engine reports for one request.
enum Ev {
    Token(u32),
    Done(Completion),
    Error(EngineError),
}

/// The sink of one request: forwards its events to the response. A send
/// fails only when the response is gone (client disconnected): ignored.
struct ChannelSink {
    id: u64,
    tx: mpsc::UnboundedSender<Ev>,
}

impl SinkFfi for ChannelSink {
    fn tokens(&self, step: RSlice<'_, TokenEvent>) {
        for e in step.iter().filter(|e| e.request_id == self.id) {
            let _ = self.tx.send(Ev::Token(e.token));
        }
    }
    fn done(&self, c: Completion) {
        if c.request_id == self.id {
            let _ = self.tx.send(Ev::Done(c));
        }
    }
    fn error(&self, request_id: u64, e: EngineError) {
        if request_id == self.id {
            let _ = self.tx.send(Ev::Error(e));
        }
    }
}

/// The injected-delay schedule of one request's token chunks.
struct Pacer {
    first_due: Option<Instant>,
    gap: Option<Duration>,
    last: Option<Instant>,
}

impl Pacer {
    fn new(arrival: Instant, first: Option<Duration>, gap: Option<Duration>) -> Self {
        Pacer {
            first_due: first.map(|d| arrival + d),
            gap,
            last: None,
        }
    }

    /// Waits until the next token chunk may go out. The schedule is
    /// absolute (chunk k at first + k × gap while the engine keeps up), so
    /// rounding never accumulates; a chunk the engine delivers late goes
    /// out at once and the schedule restarts from it.
    ///
    /// tokio's timer wheel has millisecond resolution and rounds a deadline
    /// up: it sleeps to 2 ms before the deadline, and the last stretch is a
    /// `std::thread::sleep` (nanosleep, accurate to tens of µs) inside
    /// `block_in_place`, never a busy loop. This is test-only machinery.
    async fn wait(&mut self) {
        let due = match self.last {
            None => self.first_due,
            Some(last) => self.gap.map(|g| last + g),
        };
        let now = Instant::now();
        match due {
            Some(due) if due > now => {
                let coarse = due - Duration::from_millis(2);
                if coarse > now {
                    tokio::time::sleep_until(coarse).await;
                }
                let rest = due.saturating_duration_since(Instant::now());
                if !rest.is_zero() {
                    use tokio::runtime::{Handle, RuntimeFlavor};
                    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
                        tokio::task::block_in_place(|| std::thread::sleep(rest));
                    } else {
                        // A current-thread runtime cannot lend its thread.
                        tokio::time::sleep_until(due).await;
                    }
                }
                self.last = Some(due);
            }
            _ => self.last = Some(now),
        }
    }
}

fn finish_reason(c: &Completion) -> &'static str {
    match c.finish_reason {
        FinishReason::Eos => "stop",
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

fn engine_stats(c: &Completion) -> Value {
    json!({
        "queue_us": c.queue_us,
        "prefill_us": c.prefill_us,
        "decode_us": c.decode_us,
        "decode_steps": c.decode_steps,
    })
}

fn token_text(ids: &[u32]) -> String {
    let mut s = String::with_capacity(ids.len() * 6);
    for id in ids {
        s.push(' ');
        s.push_str(&id.to_string());
    }
    s
}

/// The fixed parts of one request's responses.
struct Shape {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    include_usage: bool,
    /// The model's tokenizer, when it has one.
    text: Option<Arc<TextModel>>,
}

impl Shape {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Text, _) => "text_completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
        }
    }

    fn usage(&self, completion_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    fn chunk(&self, choice: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The text of the generated `tokens`: decoded by the tokenizer
    /// (special tokens left out), or the ids.
    fn text_of(&self, tokens: &[u32]) -> String {
        match &self.text {
            Some(t) => t.decode(tokens, true).unwrap_or_default(),
            None => token_text(tokens),
        }
    }

    /// The text of one token on its own (special tokens included), or
    /// its id.
    fn text_of_token(&self, token: u32) -> String {
        match &self.text {
            Some(t) => t.decode(&[token], false).unwrap_or_default(),
            None => token_text(&[token]),
        }
    }

    /// `text` is what `token` completes (see [`Detokenizer`]), or its id.
    fn token_chunk(&self, token: u32, first: bool, text: String) -> Value {
        let choice = match self.kind {
            Kind::Text => json!({
                "index": 0, "text": text, "token_ids": [token],
                "logprobs": null, "finish_reason": null,
            }),
            Kind::Chat => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                json!({
                    "index": 0, "delta": delta, "token_ids": [token],
                    "logprobs": null, "finish_reason": null,
                })
            }
        };
        self.chunk(choice)
    }

    fn finish_chunk(&self, c: &Completion) -> Value {
        let choice = match self.kind {
            Kind::Text => json!({
                "index": 0, "text": "", "token_ids": [], "logprobs": null,
                "finish_reason": finish_reason(c), "engine_stats": engine_stats(c),
            }),
            Kind::Chat => json!({
                "index": 0, "delta": {}, "token_ids": [], "logprobs": null,
                "finish_reason": finish_reason(c), "engine_stats": engine_stats(c),
            }),
        };
        self.chunk(choice)
    }

    fn usage_chunk(&self, completion_tokens: usize) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage(completion_tokens),
        })
    }

    fn full(&self, tokens: &[u32], c: &Completion, prompt_logprobs: Option<Value>) -> Value {
        let text = self.text_of(tokens);
        let mut choice = match self.kind {
            Kind::Text => json!({
                "index": 0, "text": text, "token_ids": tokens, "logprobs": null,
                "finish_reason": finish_reason(c), "engine_stats": engine_stats(c),
            }),
            Kind::Chat => json!({
                "index": 0, "message": {"role": "assistant", "content": text},
                "token_ids": tokens, "logprobs": null,
                "finish_reason": finish_reason(c), "engine_stats": engine_stats(c),
            }),
        };
        if let (Some(p), Some(o)) = (prompt_logprobs, choice.as_object_mut()) {
            o.insert("prompt_logprobs".into(), p);
        }
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(tokens.len()),
        })
    }
}

fn error_json(e: &EngineError) -> Value {
    json!({"error": {
        "message": e.to_string(),
        "type": "engine_error",
        "param": null,
        "code": 500,
    }})
}

fn sse(v: &Value) -> Bytes {
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(b"data: ");
    // Serialising a Value cannot fail.
    let _ = serde_json::to_writer(&mut b, v);
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

async fn handle(s: Arc<AppState>, kind: Kind, body: Bytes) -> Response {
    let arrival = Instant::now();
    let Some(ready) = s.ready.get() else {
        return loading();
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("the request body must be a JSON object"),
        Err(e) => return bad_request(format!("the request body is not valid JSON: {e}")),
    };
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let seed = crate::rng::splitmix64(&mut id.wrapping_add(0x5eed));
    let g = match parse(kind, &v, &ready.shape, seed, ready.text.as_deref()) {
        Ok(g) => g,
        Err(msg) => return bad_request(msg),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = SinkFfi_TO::from_value(ChannelSink { id, tx }, TD_Opaque);
    let request = Request {
        id,
        prompt: g.prompt.clone().into(),
        max_new_tokens: g.max_tokens,
        sampling: g.sampling,
        ignore_eos: g.ignore_eos,
    };
    if let Err(e) = ready.model.submit(vec![request].into(), sink).into_result() {
        return engine_error(&e);
    }
    let shape = Shape {
        kind,
        id: match kind {
            Kind::Text => format!("cmpl-{id}"),
            Kind::Chat => format!("chatcmpl-{id}"),
        },
        created: unix_now(),
        model: s.name.clone(),
        prompt_tokens: g.prompt.len(),
        include_usage: g.include_usage,
        text: ready.text.clone(),
    };
    let pacer = Pacer::new(arrival, s.inject_first_token, s.inject_token);
    if g.stream {
        return stream_response(shape, rx, pacer);
    }
    let prompt_logprobs = match g.prompt_logprobs {
        None => None,
        Some(k) => {
            let prompt = g.prompt.clone();
            let state = s.clone();
            let scored = tokio::task::spawn_blocking(move || match state.ready.get() {
                Some(r) => r.model.score(prompt.as_slice().into()).into_result(),
                None => Err(EngineError::runtime("the model is not loaded")),
            })
            .await;
            match scored {
                Ok(Ok(l)) => Some(prompt_logprobs_json(&g.prompt, &l, k as usize, &shape)),
                Ok(Err(e)) => return engine_error(&e),
                Err(e) => return engine_error(&EngineError::runtime(format!("score: {e}"))),
            }
        }
    };
    full_response(shape, rx, pacer, prompt_logprobs).await
}

async fn full_response(
    shape: Shape,
    mut rx: mpsc::UnboundedReceiver<Ev>,
    mut pacer: Pacer,
    prompt_logprobs: Option<Value>,
) -> Response {
    let mut tokens = Vec::new();
    loop {
        match rx.recv().await {
            Some(Ev::Token(t)) => {
                pacer.wait().await;
                tokens.push(t);
            }
            Some(Ev::Done(c)) => {
                return axum::Json(shape.full(&tokens, &c, prompt_logprobs)).into_response()
            }
            Some(Ev::Error(e)) => return engine_error(&e),
            None => {
                return engine_error(&EngineError::runtime(
                    "the engine dropped the request without finishing it",
                ))
            }
        }
    }
}

enum Phase {
    Tokens,
    Usage,
    Done,
    End,
}

struct Streaming {
    shape: Shape,
    rx: mpsc::UnboundedReceiver<Ev>,
    pacer: Pacer,
    phase: Phase,
    sent: usize,
    detok: Detokenizer,
}

async fn next_chunk(mut st: Streaming) -> Option<(Result<Bytes, Infallible>, Streaming)> {
    let bytes = match st.phase {
        Phase::Tokens => match st.rx.recv().await {
            Some(Ev::Token(t)) => {
                st.pacer.wait().await;
                let text = match &st.shape.text {
                    Some(tm) => st.detok.step(tm, t).unwrap_or_default(),
                    None => token_text(&[t]),
                };
                let chunk = st.shape.token_chunk(t, st.sent == 0, text);
                st.sent += 1;
                sse(&chunk)
            }
            Some(Ev::Done(c)) => {
                st.phase = if st.shape.include_usage {
                    Phase::Usage
                } else {
                    Phase::Done
                };
                sse(&st.shape.finish_chunk(&c))
            }
            Some(Ev::Error(e)) => {
                st.phase = Phase::Done;
                sse(&error_json(&e))
            }
            None => {
                st.phase = Phase::Done;
                sse(&error_json(&EngineError::runtime(
                    "the engine dropped the request without finishing it",
                )))
            }
        },
        Phase::Usage => {
            st.phase = Phase::Done;
            sse(&st.shape.usage_chunk(st.sent))
        }
        Phase::Done => {
            st.phase = Phase::End;
            Bytes::from_static(b"data: [DONE]\n\n")
        }
        Phase::End => return None,
    };
    Some((Ok(bytes), st))
}

fn stream_response(shape: Shape, rx: mpsc::UnboundedReceiver<Ev>, pacer: Pacer) -> Response {
    let st = Streaming {
        shape,
        rx,
        pacer,
        phase: Phase::Tokens,
        sent: 0,
        detok: Detokenizer::new(true),
    };
    let body = Body::from_stream(futures_util::stream::unfold(st, next_chunk));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e))
}

#[cfg(test)]
mod tests {
    /// `parse` for a model without a tokenizer.
    fn parse(kind: Kind, v: &Value, shape: &Gpt2Shape, seed: u64) -> Result<Gen, String> {
        super::parse(kind, v, shape, seed, None)
    }
    use super::*;

    fn tiny() -> Gpt2Shape {
        Gpt2Shape::from_json(synthetic::preset("tiny").unwrap(), "tiny").unwrap()
    }

    #[test]
    fn string_prompts_become_bytes_modulo_vocab() {
        assert_eq!(string_to_ids("AB", 1000), vec![65, 66]);
        assert_eq!(string_to_ids("é", 100), vec![0xc3 % 100, 0xa9 % 100]);
        assert!(string_to_ids("", 10).is_empty());
    }

    #[test]
    fn completion_requests_parse_with_openai_defaults() {
        let shape = tiny();
        let g = parse(Kind::Text, &json!({"prompt": [1, 2, 3]}), &shape, 7).unwrap();
        assert_eq!(g.prompt, vec![1, 2, 3]);
        assert_eq!(g.max_tokens, 16);
        assert_eq!(g.sampling.temperature, 1.0);
        assert_eq!(g.sampling.seed, 7);
        assert!(!g.stream && !g.include_usage && !g.ignore_eos);

        let body = json!({
            "model": "whatever", "prompt": "hi", "max_tokens": 8, "stream": true,
            "stream_options": {"include_usage": true}, "temperature": 0,
            "top_p": 0.5, "top_k": -1, "seed": 3, "ignore_eos": true, "unknown": 1,
        });
        let g = parse(Kind::Text, &body, &shape, 7).unwrap();
        assert_eq!(g.prompt, vec![104, 105]);
        assert_eq!(g.max_tokens, 8);
        assert!(g.stream && g.include_usage && g.ignore_eos);
        assert!(g.sampling.is_greedy());
        assert_eq!(
            (g.sampling.top_k, g.sampling.top_p, g.sampling.seed),
            (0, 0.5, 3)
        );

        // [[ids]] with one prompt, max_completion_tokens wins.
        let g = parse(
            Kind::Text,
            &json!({"prompt": [[5]], "max_tokens": 3, "max_completion_tokens": 4}),
            &shape,
            0,
        )
        .unwrap();
        assert_eq!((g.prompt, g.max_tokens), (vec![5], 4));
        // min_tokens == max_tokens means "exactly max_tokens".
        let g = parse(
            Kind::Text,
            &json!({"prompt": [5], "max_tokens": 4, "min_tokens": 4}),
            &shape,
            0,
        )
        .unwrap();
        assert!(g.ignore_eos);
    }

    #[test]
    fn chat_messages_are_joined_and_default_to_the_rest_of_the_context() {
        let shape = tiny();
        let body = json!({"messages": [
            {"role": "system", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
        ]});
        let g = parse(Kind::Chat, &body, &shape, 0).unwrap();
        assert_eq!(g.prompt, vec![97, 10, 98]);
        assert_eq!(g.max_tokens as usize, shape.n_positions - 3);
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let shape = tiny();
        let n = shape.n_positions;
        let long: Vec<u32> = vec![1; n];
        let cases = [
            (json!({}), "'prompt' is required"),
            (json!({"prompt": ""}), "empty"),
            (json!({"prompt": [1, 100000]}), "not a token id"),
            (json!({"prompt": ["a", "b"]}), "one prompt"),
            (
                json!({"prompt": [1], "prompt_logprobs": 2, "stream": true}),
                "needs 'stream': false",
            ),
            (
                json!({"prompt": [1], "prompt_logprobs": 1_000_000}),
                "exceeds the vocabulary",
            ),
            (
                json!({"prompt": long, "max_tokens": 1}),
                "maximum context length",
            ),
            (
                json!({"prompt": [1], "max_tokens": n}),
                "maximum context length",
            ),
            (json!({"prompt": [1], "max_tokens": 0}), "at least 1"),
            (
                json!({"prompt": [1], "max_tokens": "x"}),
                "non-negative integer",
            ),
            (json!({"prompt": [1], "n": 2}), "n = 1"),
            (json!({"prompt": [1], "top_p": 0}), "top_p"),
            (
                json!({"prompt": [1], "max_tokens": 2, "min_tokens": 3}),
                "min_tokens",
            ),
            (json!({"prompt": [1], "stream": "yes"}), "true or false"),
        ];
        for (body, want) in cases {
            let e = parse(Kind::Text, &body, &shape, 0).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        let e = parse(Kind::Chat, &json!({"messages": []}), &shape, 0).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn model_specs_resolve_presets_folders_and_refuse_the_rest() {
        let d = model_def("tiny").unwrap();
        assert_eq!(d.name, "tiny");
        assert_eq!(
            d.weights,
            ModelWeights::Synthetic {
                config: "tiny".into(),
                seed: 0
            }
        );
        let dir = std::env::temp_dir();
        assert!(matches!(
            model_def(dir.to_str().unwrap()).unwrap().weights,
            ModelWeights::Path(_)
        ));
        let e = model_def("no-such-model").unwrap_err().to_string();
        assert!(e.contains("tiny") && e.contains("gpt2"), "{e}");
    }

    #[test]
    fn prompt_logprobs_are_vllms_top_k_plus_the_prompt_token() {
        let g = parse(
            Kind::Text,
            &json!({"prompt": [1], "prompt_logprobs": 2}),
            &tiny(),
            0,
        );
        assert_eq!(g.unwrap().prompt_logprobs, Some(2));
        let shape = Shape {
            kind: Kind::Text,
            id: "cmpl-1".into(),
            created: 0,
            model: "tiny".into(),
            prompt_tokens: 3,
            include_usage: false,
            text: None,
        };
        // vocabulary of 4; row 0 predicts token 1 (rank 4), row 1 token 2
        // (rank 1); the last row predicts nothing in the prompt
        let logits = Logits {
            rows: 3,
            vocab: 4,
            data: vec![3.0, 2.0, 1.0, 0.0, 0.0, 1.0, 5.0, 2.0, 0.0, 0.0, 0.0, 0.0].into(),
        };
        let p = prompt_logprobs_json(&[0, 3, 2], &logits, 2, &shape);
        let p = p.as_array().unwrap();
        assert_eq!(p.len(), 3);
        assert!(p[0].is_null());
        let lse = |r: &[f64]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
        let z0 = lse(&[3.0, 2.0, 1.0, 0.0]);
        // position 1: the top 2 (ids 0 and 1) and the prompt's token 3
        let e = p[1].as_object().unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e["0"]["rank"], 1);
        assert_eq!(e["1"]["rank"], 2);
        assert_eq!(e["3"]["rank"], 4);
        assert!((e["3"]["logprob"].as_f64().unwrap() - (0.0 - z0)).abs() < 1e-6);
        assert_eq!(e["3"]["decoded_token"], " 3");
        // position 2: the prompt's token 2 is the top one
        let e = p[2].as_object().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e["2"]["rank"], 1);
        assert_eq!(e["3"]["rank"], 2);
        let z1 = lse(&[0.0, 1.0, 5.0, 2.0]);
        assert!((e["2"]["logprob"].as_f64().unwrap() - (5.0 - z1)).abs() < 1e-6);
        // and a full response carries them in its choice
        let done = Completion {
            request_id: 1,
            prompt_tokens: 3,
            generated_tokens: 1,
            finish_reason: FinishReason::Length,
            queue_us: 0,
            prefill_us: 0,
            decode_us: 0,
            decode_steps: 0,
            cached_prompt_tokens: abi_stable::std_types::RNone,
        };
        let f = shape.full(&[1], &done, Some(Value::Array(p.clone())));
        assert_eq!(f["choices"][0]["prompt_logprobs"][2]["2"]["rank"], 1);
    }

    #[test]
    fn chunks_carry_text_ids_and_usage() {
        let shape = Shape {
            kind: Kind::Chat,
            id: "chatcmpl-1".into(),
            created: 0,
            model: "tiny".into(),
            prompt_tokens: 3,
            include_usage: true,
            text: None,
        };
        let c = shape.token_chunk(42, true, token_text(&[42]));
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["content"], " 42");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(c["choices"][0]["token_ids"], json!([42]));
        assert!(c["usage"].is_null());
        let u = shape.usage_chunk(5);
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 8);
        let b = sse(&u);
        assert!(b.starts_with(b"data: {") && b.ends_with(b"}\n\n"));
        let done = Completion {
            request_id: 1,
            prompt_tokens: 3,
            generated_tokens: 2,
            finish_reason: FinishReason::Eos,
            queue_us: 1,
            prefill_us: 2,
            decode_us: 3,
            decode_steps: 1,
            cached_prompt_tokens: abi_stable::std_types::RNone,
        };
        let f = shape.full(&[7, 8], &done, None);
        assert_eq!(f["object"], "chat.completion");
        assert_eq!(f["choices"][0]["message"]["content"], " 7 8");
        assert_eq!(f["choices"][0]["finish_reason"], "stop");
        assert_eq!(f["usage"]["completion_tokens"], 2);
    }

    #[test]
    fn pacer_holds_the_first_token_and_spaces_the_rest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let arrival = Instant::now();
            let mut p = Pacer::new(
                arrival,
                Some(Duration::from_millis(30)),
                Some(Duration::from_millis(10)),
            );
            p.wait().await;
            let first = Instant::now();
            assert!(first - arrival >= Duration::from_millis(30));
            p.wait().await;
            let second = Instant::now();
            // The schedule is absolute (token k at 30 + 10 k ms): a late
            // first wake-up shortens the gap after it, never the schedule.
            assert!(second >= first);
            assert!(second - arrival >= Duration::from_millis(40));
            // Without injection nothing waits.
            let mut p = Pacer::new(Instant::now(), None, None);
            let t = Instant::now();
            for _ in 0..100 {
                p.wait().await;
            }
            assert!(t.elapsed() < Duration::from_secs(1));
        });
    }
}
