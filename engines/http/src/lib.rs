//! engine-matrix plugin `http` (`libem_http.so`): benchmarks any
//! OpenAI-compatible server — vLLM, DeepSpeed-MII, TGI, SGLang, llama.cpp's
//! `llama-server`, `engine-matrix serve` — over its streaming
//! `/v1/completions` or `/v1/chat/completions` endpoint.
//!
//! # How it measures
//!
//! Every request is one `POST` with `stream: true`, read as Server-Sent
//! Events ([`sse`]). Each chunk that carries content (non-empty text, or
//! token ids) is handed to the host's sink *as soon as it is parsed*, in one
//! `tokens` call, and the host timestamps that call: TTFT is the time to
//! the first chunk with content, and every chunk has its own timestamp.
//!
//! * Token ids: when a chunk carries ids (a choice's `token_ids`, as
//!   `engine-matrix serve` and vLLM with `return_token_ids` send; an integer
//!   array `tokens`, as llama-server's own `/completion` sends), those ids are sent to the sink,
//!   all in that chunk's one call. Otherwise the chunk is sent as one
//!   placeholder id `0`: the host then counts chunks as tokens. To get ids,
//!   ask the server: `extra_body: {"return_token_ids": true}` for vLLM;
//!   `engine-matrix serve` always sends them. llama-server (build 11434)
//!   sends none on its `/v1` endpoints (`return_tokens` only works on its
//!   own `/completion`), so its chunks are counted.
//! * Token counts: `Completion::generated_tokens` is the server's
//!   `usage.completion_tokens` (requested with
//!   `stream_options.include_usage`) and, without usage, the number of ids
//!   sent to the sink. When a server packs several tokens into one chunk
//!   without ids, the host sees fewer tokens than `generated_tokens` and
//!   flags the request in `token_count_disagreements`: that is the
//!   multi-token-chunk flag. `prompt_tokens` is `usage.prompt_tokens`, or
//!   the prompt's length without usage.
//! * Engine-side times: `queue_us` is the wait for a connection slot
//!   (`max_connections`), `prefill_us` the time from sending the request to
//!   the first content chunk (network included), `decode_us` the first to
//!   the last content chunk, `decode_steps` the content chunks after the
//!   first. Finish reason `stop` maps to `eos`, anything else to `length`.
//! * Batching, dtype and quantization are the server's: the host's batch
//!   policy and `max_batch` are ignored (send as many requests as you want
//!   in flight), and `info()` lists `f32`, `f16`, `bf16` and `none` only so
//!   that matrix cells run; what the server really computes in is what it
//!   was started with. `memory()` is all zeros.
//! * `score` (the quality pass: perplexity, KL divergence, top-1) asks the
//!   server for the prompt's log-probabilities (vLLM's `prompt_logprobs`,
//!   which `engine-matrix serve` also answers) and is `unsupported` with
//!   the reason when the server returns none (llama-server, TGI): see
//!   [`score`].
//!
//! # Options (`options_json`, the matrix engine's `options`)
//!
//! | option | values | default | meaning |
//! |---|---|---|---|
//! | `base_url` | `http://host:port` | required | the server; a trailing `/` or `/v1` is dropped. Plain HTTP only (no TLS) |
//! | `model` | string | the matrix model's name | the `model` field sent, checked against `GET /v1/models` at load |
//! | `api_key_env` | env var name | none | sends `Authorization: Bearer $VAR`; the variable is read once at load and must be set; the key never appears in results, logs or error messages (it is scrubbed from any server text echoed in one) |
//! | `endpoint` | `completions`, `chat` | `completions` | `/v1/completions` or `/v1/chat/completions` (one user message) |
//! | `prompt` | `token_ids`, `text` | `token_ids` for completions, `text` for chat | `token_ids` sends `"prompt": [ids]` (vLLM, SGLang, llama-server, engine-matrix serve); `text` sends the ids decoded into text by the model folder's `tokenizer.json` (an imported GGUF, a Hugging Face folder), or, for a model without one, as space-separated decimal numbers (`"464 3290"`); the server tokenizes it its own way. `chat` takes `text` only |
//! | `ignore_eos` | bool | `true` | send `ignore_eos: true` when the request asks for it (vLLM, SGLang, llama-server, engine-matrix serve accept it); `false` for servers that reject unknown fields |
//! | `send_min_tokens` | bool | `false` | also send `min_tokens: max_tokens` (vLLM) |
//! | `include_usage` | bool | `true` | send `stream_options: {include_usage: true}` |
//! | `extra_body` | JSON object | `{}` | merged into every request body last (server-specific knobs, e.g. `{"return_token_ids": true}`) |
//! | `connect_timeout_s` | number > 0 | `10` | TCP connect; also the whole `GET /v1/models` at load |
//! | `first_token_timeout_s` | number > 0 | `60` | from sending a request to its first content chunk |
//! | `total_timeout_s` | number > 0 | `600` | from `submit` to the end of a request (queueing for a connection included) |
//! | `max_connections` | integer >= 1 | `1024` | requests in flight (so connections) at once; the rest wait |
//! | `keep_alive` | bool | `true` | reuse connections between requests; `false` opens a new one for every request (llama-server: it closes its connections after each stream anyway, and a request sent on one it has not closed yet can wait unanswered) |
//! | `threads` | integer >= 1 | `2` | worker threads of the plugin's tokio runtime |
//! | `check_model` | bool | `true` | fail at load when `GET /v1/models` lists models but not `model` |
//! | `metrics_url` | `http://host:port/metrics` | none | the server's Prometheus endpoint (llama-server `--metrics`, vLLM, SGLang, TGI): the harness scrapes it during each cell and records the server's queue, running requests, KV-cache use, token counters and prefix-cache hits beside the client's figures (`metrics.server`); a failed scrape is recorded, never fatal. Checked here to be a plain-HTTP URL |
//! | `metrics_interval_s` | number > 0 | `1` | seconds between scrapes |
//! | `prompt_logprobs` | integer | `20` | for `score`: the most likely tokens per position the server is asked for beside the prompt's own (vLLM's default `--max-logprobs` is 20); `0` turns scoring off. The vocabulary size comes from the model folder's `config.json` (`vocab_size`); without it `score` is `unsupported` |
//!
//! Any other key is an `invalid argument` error naming it.
//!
//! # Errors
//!
//! Each ends its request with `SinkFfi::error` (kind `runtime`) naming what
//! happened: `HTTP <status> from <url>: <server message, truncated>`,
//! `cannot connect to <base_url>: ...`, `connect timeout: ...`,
//! `first-token timeout: ...`, `total timeout: ...`, `malformed SSE ...`,
//! `malformed JSON in a stream chunk ...: <reason>; chunk: <excerpt>`,
//! `server error in the stream ...`, `stream ... ended before [DONE] or a
//! finish_reason ...`. A request never outlives `total_timeout_s`. Tokens
//! sent before an error stay sent. A failure of `GET /v1/models` at load
//! (no server, connect timeout, HTTP 401/403, or a model list without
//! `model`) fails the load instead; any other status of that `GET` (a
//! server without the endpoint) is accepted.
//!
//! After `[DONE]` (and `done`), the rest of the body is read for at most
//! 1 s so the connection can be reused; the request keeps its connection
//! slot meanwhile.
//!
//! A request whose connection closes (or is reset) before any byte of the
//! response arrives is sent again, at most twice, on another connection:
//! that is the keep-alive race of servers that close every connection
//! after its response while offering keep-alive (llama-server does). The
//! time lost stays in the request's TTFT. llama-server can also leave such
//! a connection open without reading the request sent on it (seen
//! 2026-12-06: the server logged no task for it, and the request waited
//! for its first-token timeout); `keep_alive: false` avoids both by never
//! reusing a connection, which costs a loopback connect (well under a
//! millisecond) per request, and nothing with a server that closes every
//! connection anyway.

pub mod protocol;
pub mod score;
pub mod sse;

use bytes::Bytes;
use engine_api::abi_stable::std_types::RSlice;
use engine_api::caps;
use engine_api::{
    Completion, Engine, EngineError, EngineInfo, FinishReason, LoadOptions, Logits, MemoryStats,
    Model, ModelSpec, Request, SinkBox, TokenEvent,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use protocol::{excerpt, BodyOptions, Endpoint, PromptKind};
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::time::timeout_at;

/// The plugin's engine name.
pub const NAME: &str = "http";

/// Longest server message quoted in an error.
const QUOTE: usize = 300;

fn default_true() -> bool {
    true
}
fn default_connect() -> f64 {
    10.0
}
fn default_first() -> f64 {
    60.0
}
fn default_total() -> f64 {
    600.0
}
fn default_max_connections() -> usize {
    1024
}
fn default_threads() -> usize {
    2
}
fn default_prompt_logprobs() -> u32 {
    20
}

/// The plugin's options; see the crate docs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub base_url: String,
    #[serde(default)]
    pub model: Option<String>,
    /// The name of the variable holding the key, never the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub endpoint: Endpoint,
    #[serde(default)]
    pub prompt: Option<PromptKind>,
    #[serde(default = "default_true")]
    pub ignore_eos: bool,
    #[serde(default)]
    pub send_min_tokens: bool,
    #[serde(default = "default_true")]
    pub include_usage: bool,
    #[serde(default)]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "default_connect")]
    pub connect_timeout_s: f64,
    #[serde(default = "default_first")]
    pub first_token_timeout_s: f64,
    #[serde(default = "default_total")]
    pub total_timeout_s: f64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_true")]
    pub keep_alive: bool,
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default = "default_true")]
    pub check_model: bool,
    /// The server's Prometheus endpoint, which the harness scrapes during
    /// each cell (the plugin only checks that it is a plain-HTTP URL).
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// Seconds between scrapes of `metrics_url`.
    #[serde(default)]
    pub metrics_interval_s: Option<f64>,
    /// For `score`: the top tokens per position asked for (0: no scoring).
    #[serde(default = "default_prompt_logprobs")]
    pub prompt_logprobs: u32,
}

/// An API key: never printed.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn opt_err(msg: impl fmt::Display) -> EngineError {
    EngineError::invalid_argument(format!("{NAME} options: {msg}"))
}

fn duration(name: &str, s: f64) -> Result<Duration, EngineError> {
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(opt_err(format!(
            "{name} must be a positive number of seconds, not {s}"
        )))
    }
}

/// `http://host:port[/prefix]` without a trailing `/` or `/v1`.
fn normalize_base(url: &str) -> Result<String, EngineError> {
    let mut base = url.trim().trim_end_matches('/').to_string();
    if let Some(b) = base.strip_suffix("/v1") {
        base = b.to_string();
    }
    if base.starts_with("https://") {
        return Err(EngineError::unsupported(format!(
            "base_url {base}: em-http speaks plain HTTP only (no TLS); use http://"
        )));
    }
    let uri: Uri = base
        .parse()
        .map_err(|e| opt_err(format!("base_url {base:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(opt_err(format!(
            "base_url {base:?} must look like http://host:port"
        )));
    }
    Ok(base)
}

/// The `http` engine.
pub struct HttpEngine;

impl Engine for HttpEngine {
    fn info(&self) -> EngineInfo {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string().into()).collect();
        EngineInfo {
            name: NAME.into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            runtime_version: "hyper 1 / tokio 1 (OpenAI-compatible HTTP client)".into(),
            devices: s(&["remote"]),
            dtypes: s(&["f32", "f16", "bf16"]),
            quantizations: s(&["none"]),
            capabilities: s(&[caps::BATCHING_SERVER, caps::STREAMING, caps::SAMPLING]),
            // The server's own settings are its launch command's business.
            tunables: Default::default(),
        }
    }

    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
        let opts: Options = engine_kit::parse_options(NAME, &options.options_json)?;
        let dir = std::path::Path::new(spec.path.as_str());
        let text = tokenizer_of(dir)?;
        let mut m = HttpModel::connect_with(spec.name.as_str(), opts, text)?;
        m.vocab = vocab_of(dir);
        Ok(Box::new(m))
    }
}

engine_api::export_engine!(Ok(HttpEngine));

/// The tokenizer of the model folder `dir` (the spec's path: an imported
/// GGUF, a Hugging Face folder), if it has a `tokenizer.json`. With it,
/// text prompts are real text: the host's token ids decoded, which the
/// server tokenizes its own way (its count, from `usage`, is the prompt
/// length reported). Without one, ids are sent as decimal text. A broken
/// tokenizer file is an `invalid model` error.
fn tokenizer_of(
    dir: &std::path::Path,
) -> Result<Option<engine_matrix_text::TextModel>, EngineError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    engine_matrix_text::TextModel::load(dir).map_err(|e| EngineError::invalid_model(e.to_string()))
}

/// `vocab_size` from the model folder's `config.json`, if there is one.
fn vocab_of(dir: &std::path::Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["vocab_size"].as_u64().map(|n| n as usize)
}

/// What every request task shares.
struct Shared {
    client: Client<HttpConnector, Full<Bytes>>,
    base_url: String,
    url: Uri,
    url_text: String,
    auth: Option<HeaderValue>,
    key: Option<Secret>,
    body: BodyOptions,
    first_token_timeout: Duration,
    total_timeout: Duration,
    connect_timeout: Duration,
    permits: Semaphore,
}

impl Shared {
    /// Removes the API key from a message (servers may echo headers).
    fn scrub(&self, mut e: EngineError) -> EngineError {
        if let Some(Secret(k)) = &self.key {
            if !k.is_empty() && e.message.as_str().contains(k.as_str()) {
                e.message = e.message.as_str().replace(k.as_str(), "<redacted>").into();
            }
        }
        e
    }

    fn request(&self, method: Method, uri: Uri, body: Bytes) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, "text/event-stream, application/json");
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        if let Some(a) = &self.auth {
            b = b.header(AUTHORIZATION, a.clone());
        }
        b.body(Full::new(body)).expect("valid request parts")
    }

    fn client_error(&self, e: hyper_util::client::legacy::Error) -> EngineError {
        let mut chain = e.to_string();
        let mut timed_out = false;
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            }
            src = s.source();
        }
        let err = if e.is_connect() && timed_out {
            EngineError::runtime(format!(
                "connect timeout: no connection to {} within connect_timeout_s = {} s",
                self.base_url,
                self.connect_timeout.as_secs_f64()
            ))
        } else if e.is_connect() {
            EngineError::runtime(format!("cannot connect to {}: {chain}", self.base_url))
        } else {
            EngineError::runtime(format!("request to {} failed: {chain}", self.url_text))
        };
        self.scrub(err)
    }
}

/// How many times a request is sent again after the keep-alive race.
const MAX_RESENDS: u32 = 2;

/// The keep-alive race: the connection closed (or was reset) before any
/// byte of the response came back. A server that closes its connections
/// after each response while offering keep-alive (llama.cpp's
/// llama-server does, after every stream) makes the pool hand out a
/// connection whose close is still in flight; the request went nowhere,
/// so it is sent again on another connection. The time lost stays in the
/// request's latency (the host timestamps from `submit`).
fn closed_before_response(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ) {
                return true;
            }
        }
        src = s.source();
    }
    false
}

/// Reads at most `limit` bytes of a body (for error messages).
async fn read_some(body: &mut Incoming, limit: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < limit {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            _ => break,
        }
    }
    buf.truncate(limit);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The server's message in an error body (JSON `error.message` and the
/// like, or the text), truncated.
fn server_message(text: &str) -> String {
    let msg = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => protocol::error_message(&v),
        Err(_) => text.trim().to_string(),
    };
    excerpt(&msg, QUOTE)
}

/// `GET {base_url}/v1/models`, all of it within the connect timeout.
async fn fetch_models(sh: &Shared, models_url: &str) -> Result<(StatusCode, String), EngineError> {
    let uri: Uri = models_url
        .parse()
        .map_err(|e| opt_err(format!("{models_url}: {e}")))?;
    let req = sh.request(Method::GET, uri, Bytes::new());
    let deadline = tokio::time::Instant::now() + sh.connect_timeout;
    let fetch = async {
        let resp = sh
            .client
            .request(req)
            .await
            .map_err(|e| sh.client_error(e))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let text = read_some(&mut body, 1 << 20).await;
        Ok::<_, EngineError>((status, text))
    };
    match timeout_at(deadline, fetch).await {
        Err(_) => Err(EngineError::runtime(format!(
            "connect timeout: {} did not answer GET /v1/models \
             within connect_timeout_s = {} s",
            sh.base_url,
            sh.connect_timeout.as_secs_f64()
        ))),
        Ok(r) => r,
    }
}

/// A loaded "model": a client of one server.
pub struct HttpModel {
    rt: Option<Runtime>,
    shared: Arc<Shared>,
    /// `prompt_logprobs` asked for by `score` (0: none).
    prompt_logprobs: u32,
    /// The model's vocabulary size, for `score`'s rows.
    pub vocab: Option<usize>,
}

impl HttpModel {
    /// Builds the client and runtime and checks the server (`GET
    /// /v1/models`). `default_model` is used when the options name none.
    pub fn connect(default_model: &str, o: Options) -> Result<Self, EngineError> {
        Self::connect_with(default_model, o, None)
    }

    /// [`HttpModel::connect`], with the model's tokenizer for text prompts
    /// (see [`tokenizer_of`]).
    pub fn connect_with(
        default_model: &str,
        o: Options,
        text: Option<engine_matrix_text::TextModel>,
    ) -> Result<Self, EngineError> {
        let base_url = normalize_base(&o.base_url)?;
        let connect_timeout = duration("connect_timeout_s", o.connect_timeout_s)?;
        let first_token_timeout = duration("first_token_timeout_s", o.first_token_timeout_s)?;
        let total_timeout = duration("total_timeout_s", o.total_timeout_s)?;
        if o.max_connections == 0 || o.max_connections > Semaphore::MAX_PERMITS {
            return Err(opt_err("max_connections must be at least 1"));
        }
        if o.threads == 0 || o.threads > 1024 {
            return Err(opt_err("threads must be between 1 and 1024"));
        }
        if let Some(url) = &o.metrics_url {
            if !url.starts_with("http://") || url.parse::<hyper::Uri>().is_err() {
                return Err(opt_err(format!(
                    "metrics_url {url:?} must be a plain-HTTP URL such as http://127.0.0.1:8080/metrics"
                )));
            }
        }
        if let Some(s) = o.metrics_interval_s {
            duration("metrics_interval_s", s)?;
        }
        let prompt = o.prompt.unwrap_or(match o.endpoint {
            Endpoint::Completions => PromptKind::TokenIds,
            Endpoint::Chat => PromptKind::Text,
        });
        if o.endpoint == Endpoint::Chat && prompt == PromptKind::TokenIds {
            return Err(opt_err(
                "prompt token_ids needs endpoint completions (chat messages are text)",
            ));
        }
        let key = match &o.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.is_empty() => Some(Secret(k)),
                _ => {
                    return Err(opt_err(format!(
                        "api_key_env: environment variable {var} is not set (or empty)"
                    )))
                }
            },
        };
        let auth = match &key {
            None => None,
            Some(Secret(k)) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    opt_err("api_key_env: the key holds characters not allowed in a header")
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let model = o.model.clone().unwrap_or_else(|| default_model.to_string());
        let url_text = format!("{base_url}{}", o.endpoint.path());
        let url: Uri = url_text
            .parse()
            .map_err(|e| opt_err(format!("base_url: {url_text} is not a URL: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(o.threads)
            .thread_name("em-http")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| EngineError::runtime(format!("cannot start the tokio runtime: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = {
            let _guard = rt.enter();
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(if o.keep_alive { o.max_connections } else { 0 })
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(connector)
        };
        let shared = Arc::new(Shared {
            client,
            base_url,
            url,
            url_text,
            auth,
            key,
            body: BodyOptions {
                model,
                endpoint: o.endpoint,
                prompt,
                ignore_eos: o.ignore_eos,
                send_min_tokens: o.send_min_tokens,
                include_usage: o.include_usage,
                extra_body: o.extra_body.clone(),
                text: text.map(Arc::new),
            },
            first_token_timeout,
            total_timeout,
            connect_timeout,
            permits: Semaphore::new(o.max_connections),
        });
        let m = HttpModel {
            rt: Some(rt),
            shared,
            prompt_logprobs: o.prompt_logprobs,
            vocab: None,
        };
        m.check_server(o.check_model)?;
        Ok(m)
    }

    /// `GET /v1/models`: the server must answer; when it lists models,
    /// ours must be one of them (if `check_model`).
    fn check_server(&self, check_model: bool) -> Result<(), EngineError> {
        let sh = self.shared.clone();
        let rt = self.rt.as_ref().expect("runtime");
        let models_url = format!("{}/v1/models", sh.base_url);
        // `block_on` on a thread of our own: `load` may be called from inside
        // another tokio runtime (where `block_on` would panic).
        let r = std::thread::scope(|scope| {
            scope
                .spawn(|| rt.block_on(fetch_models(&sh, &models_url)))
                .join()
                .unwrap_or_else(|_| Err(EngineError::runtime("the /v1/models check panicked")))
        });
        let (status, text) = r.map_err(|e| sh.scrub(e))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(sh.scrub(EngineError::runtime(format!(
                "HTTP {} from {models_url}: {} (check api_key_env)",
                status.as_u16(),
                server_message(&text)
            ))));
        }
        if !status.is_success() || !check_model {
            return Ok(()); // no model list to check against
        }
        let served: Vec<String> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v["data"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|m| m["id"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        if !served.is_empty() && !served.contains(&sh.body.model) {
            return Err(EngineError::invalid_argument(format!(
                "{} does not serve model {:?}; it serves: {} (set the option `model`)",
                sh.base_url,
                sh.body.model,
                served.join(", ")
            )));
        }
        Ok(())
    }
}

impl Drop for HttpModel {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Blocking inside another runtime would panic.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

impl Model for HttpModel {
    fn submit(&self, requests: Vec<Request>, sink: SinkBox) -> Result<(), EngineError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| EngineError::runtime("the model is unloaded"))?;
        let submitted = Instant::now();
        let sink = Arc::new(sink);
        for req in requests {
            rt.spawn(run_request(
                self.shared.clone(),
                req,
                sink.clone(),
                submitted,
            ));
        }
        Ok(())
    }

    fn memory(&self) -> MemoryStats {
        MemoryStats::default()
    }

    fn score(&self, tokens: &[u32]) -> Result<Logits, EngineError> {
        if self.prompt_logprobs == 0 {
            return Err(EngineError::unsupported(
                "the server returns no prompt log-probabilities (option prompt_logprobs is 0)",
            ));
        }
        let sh = self.shared.clone();
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| EngineError::runtime("the model is unloaded"))?;
        let mut body = score::request_body(&sh.body.model, tokens, self.prompt_logprobs);
        if let Some(o) = body.as_object_mut() {
            for (k, v) in &sh.body.extra_body {
                o.insert(k.clone(), v.clone());
            }
        }
        // `block_on` on a thread of our own, as in `check_server`.
        let resp = std::thread::scope(|scope| {
            scope
                .spawn(|| rt.block_on(post_json(&sh, body)))
                .join()
                .unwrap_or_else(|_| Err(EngineError::runtime("the score request panicked")))
        })
        .map_err(|e| sh.scrub(e))?;
        let url = format!("{}/v1/completions", sh.base_url);
        // the server's answer first: one without prompt_logprobs is the
        // reason to give, whatever else is missing
        let vocab = match (self.vocab, score::has_prompt_logprobs(&resp)) {
            (_, false) => 0,
            (Some(v), true) => v,
            (None, true) => {
                return Err(EngineError::unsupported(
                    "the vocabulary size is unknown (the model folder has no config.json with vocab_size), so prompt log-probabilities cannot become logits",
                ))
            }
        };
        score::logits_from(&resp, tokens, vocab).map_err(|e| match e {
            score::ScoreError::Missing => EngineError::unsupported(format!(
                "the server returns no prompt log-probabilities ({url} answered without prompt_logprobs, vLLM's extension)"
            )),
            score::ScoreError::Malformed(m) => {
                EngineError::runtime(format!("prompt_logprobs from {url}: {m}"))
            }
        })
    }

    fn describe(&self) -> String {
        if self.prompt_logprobs == 0 {
            return String::new();
        }
        serde_json::json!({
            "score_note": score::SCORE_NOTE,
            "score_top_k": self.prompt_logprobs,
        })
        .to_string()
    }
}

/// `POST {base_url}/v1/completions` with `body` (not streamed), its JSON
/// answer read whole within the total timeout.
async fn post_json(sh: &Shared, body: serde_json::Value) -> Result<serde_json::Value, EngineError> {
    let url_text = format!("{}/v1/completions", sh.base_url);
    let uri: Uri = url_text
        .parse()
        .map_err(|e| opt_err(format!("{url_text}: {e}")))?;
    let bytes = Bytes::from(
        serde_json::to_vec(&body)
            .map_err(|e| EngineError::runtime(format!("cannot encode the request: {e}")))?,
    );
    let deadline = tokio::time::Instant::now() + sh.total_timeout;
    let exchange = async {
        let resp = sh
            .client
            .request(sh.request(Method::POST, uri, bytes))
            .await
            .map_err(|e| sh.client_error(e))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let text = read_some(&mut body, 4096).await;
            return Err(EngineError::runtime(format!(
                "HTTP {} from {url_text}: {}",
                status.as_u16(),
                server_message(&text)
            )));
        }
        let all = body
            .collect()
            .await
            .map_err(|e| EngineError::runtime(format!("reading {url_text} failed: {e}")))?
            .to_bytes();
        serde_json::from_slice(&all).map_err(|e| {
            EngineError::runtime(format!(
                "{url_text} answered with invalid JSON: {e}: {}",
                excerpt(&String::from_utf8_lossy(&all), QUOTE)
            ))
        })
    };
    match timeout_at(deadline, exchange).await {
        Ok(r) => r,
        Err(_) => Err(EngineError::runtime(format!(
            "total timeout: {url_text} did not answer the score request within total_timeout_s = {} s",
            sh.total_timeout.as_secs_f64()
        ))),
    }
}

/// How far a request got (for the total-timeout message).
#[derive(Default)]
struct Progress {
    chunks: u32,
    finished: bool,
}

async fn run_request(sh: Arc<Shared>, req: Request, sink: Arc<SinkBox>, submitted: Instant) {
    let id = req.id;
    let deadline = tokio::time::Instant::from_std(submitted + sh.total_timeout);
    let mut p = Progress::default();
    let r = timeout_at(deadline, stream_one(&sh, &req, &sink, submitted, &mut p)).await;
    if p.finished {
        return; // done was sent; a timeout while draining is no error
    }
    let err = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => EngineError::runtime(format!(
            "total timeout: request {id} did not finish within total_timeout_s = {} s \
             ({} content chunks received from {})",
            sh.total_timeout.as_secs_f64(),
            p.chunks,
            sh.url_text
        )),
    };
    sink.error(id, sh.scrub(err));
}

async fn stream_one(
    sh: &Shared,
    req: &Request,
    sink: &SinkBox,
    submitted: Instant,
    p: &mut Progress,
) -> Result<(), EngineError> {
    let _permit = sh
        .permits
        .acquire()
        .await
        .map_err(|_| EngineError::runtime("the model is unloading"))?;
    let start = Instant::now();
    let body = Bytes::from(
        serde_json::to_vec(&protocol::request_body(&sh.body, req))
            .map_err(|e| EngineError::runtime(format!("cannot encode the request: {e}")))?,
    );
    let first_deadline = tokio::time::Instant::from_std(start + sh.first_token_timeout);
    let first_timeout = |what: &str| {
        EngineError::runtime(format!(
            "first-token timeout: no content from {} within first_token_timeout_s = {} s ({what})",
            sh.url_text,
            sh.first_token_timeout.as_secs_f64()
        ))
    };
    let mut resends = 0;
    let resp = loop {
        let http_req = sh.request(Method::POST, sh.url.clone(), body.clone());
        match timeout_at(first_deadline, sh.client.request(http_req)).await {
            Err(_) => return Err(first_timeout("no response headers")),
            Ok(Err(e)) if resends < MAX_RESENDS && closed_before_response(&e) => resends += 1,
            Ok(Err(e)) => return Err(sh.client_error(e)),
            Ok(Ok(r)) => break r,
        }
    };
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = read_some(&mut body, 4096).await;
        return Err(EngineError::runtime(format!(
            "HTTP {} from {}: {}",
            status.as_u16(),
            sh.url_text,
            server_message(&text)
        )));
    }
    if is_json {
        let text = read_some(&mut body, 4096).await;
        return Err(EngineError::runtime(format!(
            "the server did not stream (content-type application/json, not text/event-stream) \
             from {}: {}",
            sh.url_text,
            excerpt(&text, QUOTE)
        )));
    }

    let mut parser = sse::SseParser::new();
    let mut events = Vec::new();
    let mut st = StreamState {
        id: req.id,
        first: None,
        last: start,
        emitted: 0,
        usage: protocol::Usage::default(),
        finish: None,
        done: false,
        buf: Vec::new(),
    };
    let mut ended = false;
    while !st.done && !ended {
        let frame = if st.first.is_none() {
            match timeout_at(first_deadline, body.frame()).await {
                Err(_) => return Err(first_timeout("the stream sent no content")),
                Ok(f) => f,
            }
        } else {
            body.frame().await
        };
        match frame {
            None => {
                ended = true;
                parser
                    .finish(&mut events)
                    .map_err(|e| stream_err(sh, p, &e.to_string()))?;
            }
            Some(Err(e)) => {
                return Err(EngineError::runtime(format!(
                    "reading the stream from {} failed after {} content chunks: {e}",
                    sh.url_text, p.chunks
                )))
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    parser
                        .feed(&data, &mut events)
                        .map_err(|e| stream_err(sh, p, &e.to_string()))?;
                }
            }
        }
        for ev in events.drain(..) {
            if st.done {
                break;
            }
            st.event(sh, sink, p, &ev)?;
        }
    }
    if !st.done && st.finish.is_none() {
        return Err(EngineError::runtime(format!(
            "stream from {} ended before [DONE] or a finish_reason after {} content chunks",
            sh.url_text, p.chunks
        )));
    }
    let first = st.first.unwrap_or(st.last);
    let us = |d: Duration| d.as_micros() as u64;
    sink.done(Completion {
        request_id: req.id,
        prompt_tokens: st.usage.prompt_tokens.unwrap_or(req.prompt.len() as u32),
        generated_tokens: st.usage.completion_tokens.unwrap_or(st.emitted),
        finish_reason: match st.finish.as_deref() {
            Some("stop") | Some("eos") | Some("eos_token") => FinishReason::Eos,
            _ => FinishReason::Length,
        },
        queue_us: us(start - submitted),
        prefill_us: us(first.saturating_duration_since(start)),
        decode_us: us(st.last.saturating_duration_since(first)),
        decode_steps: p.chunks.saturating_sub(1),
        cached_prompt_tokens: st.usage.cached_tokens.into(),
    });
    p.finished = true;
    // Drain the rest of the body (briefly) so the connection can be reused.
    if !ended {
        let drain = async { while let Some(Ok(_)) = body.frame().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
    Ok(())
}

fn stream_err(sh: &Shared, p: &Progress, what: &str) -> EngineError {
    EngineError::runtime(format!(
        "{what} (from {}, after {} content chunks)",
        sh.url_text, p.chunks
    ))
}

struct StreamState {
    id: u64,
    first: Option<Instant>,
    last: Instant,
    emitted: u32,
    usage: protocol::Usage,
    finish: Option<String>,
    done: bool,
    buf: Vec<TokenEvent>,
}

impl StreamState {
    fn event(
        &mut self,
        sh: &Shared,
        sink: &SinkBox,
        p: &mut Progress,
        ev: &sse::SseEvent,
    ) -> Result<(), EngineError> {
        if ev.is_done() {
            self.done = true;
            return Ok(());
        }
        if ev.event.as_deref() == Some("error") {
            return Err(stream_err(
                sh,
                p,
                &format!("server error in the stream: {}", server_message(&ev.data)),
            ));
        }
        let chunk = protocol::parse_chunk(&ev.data).map_err(|e| {
            stream_err(
                sh,
                p,
                &format!(
                    "malformed JSON in a stream chunk: {e}; chunk: {:?}",
                    excerpt(&ev.data, 120)
                ),
            )
        })?;
        if let Some(msg) = chunk.error {
            return Err(stream_err(
                sh,
                p,
                &format!("server error in the stream: {}", excerpt(&msg, QUOTE)),
            ));
        }
        if chunk.has_content {
            let now = Instant::now();
            self.buf.clear();
            let id = self.id;
            if chunk.ids.is_empty() {
                self.buf.push(TokenEvent {
                    request_id: id,
                    token: 0,
                });
            } else {
                self.buf.extend(chunk.ids.iter().map(|&token| TokenEvent {
                    request_id: id,
                    token,
                }));
            }
            sink.tokens(RSlice::from_slice(&self.buf));
            self.emitted = self.emitted.saturating_add(self.buf.len() as u32);
            p.chunks += 1;
            self.first.get_or_insert(now);
            self.last = now;
        }
        if let Some(u) = chunk.usage {
            if u.completion_tokens.is_some() {
                self.usage.completion_tokens = u.completion_tokens;
            }
            if u.prompt_tokens.is_some() {
                self.usage.prompt_tokens = u.prompt_tokens;
            }
            if u.cached_tokens.is_some() {
                self.usage.cached_tokens = u.cached_tokens;
            }
        }
        if chunk.finish_reason.is_some() {
            self.finish = chunk.finish_reason;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base("http://127.0.0.1:8000/v1/").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(normalize_base("http://h:1").unwrap(), "http://h:1");
        assert!(normalize_base("https://h:1").unwrap_err().is_unsupported());
        assert!(normalize_base("h:1").is_err());
        assert!(normalize_base("not a url").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("sk-123".into())), "<redacted>");
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(r#"{"error":{"message":"bad model","type":"x"}}"#),
            "bad model"
        );
        assert_eq!(server_message(r#"{"detail":"nope"}"#), "nope");
        assert_eq!(server_message("  plain text "), "plain text");
        assert_eq!(server_message(&"x".repeat(1000)).chars().count(), QUOTE + 1);
    }
}
