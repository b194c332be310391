//! Drives the `http` engine (its Rust API, no dlopen) against a tiny mock
//! OpenAI-compatible server on 127.0.0.1 written here on raw tokio TCP, so
//! every byte on the wire is under the test's control.
//!
//! The mock's behaviour is chosen per request by a `mock` object in the
//! request body, which the tests put there through the engine's
//! `extra_body` option.

use em_http::HttpEngine;
use engine_api::abi_stable::std_types::RVec;
use engine_api::{
    BatchPolicy, Engine, EngineError, FinishReason, LoadOptions, Model, ModelSpec, Request,
    Sampling,
};
use engine_kit::testing::Collect;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MODEL: &str = "mock-model";
const KEY: &str = "sk-test-7f3a9c1e5b";

/// What the mock saw of one POST.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

struct Mock {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Streams being answered now, and the most at once.
    gauge: Arc<Mutex<(usize, usize)>>,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Mock {
    fn start() -> Mock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.set_reuseaddr(true).unwrap();
            s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            s.listen(4096).unwrap()
        });
        let addr = listener.local_addr().unwrap();
        let gauge = Arc::new(Mutex::new((0, 0)));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        rt.spawn(accept_loop(
            listener,
            seen.clone(),
            gauge.clone(),
            accepted.clone(),
        ));
        Mock {
            addr,
            seen,
            gauge,
            accepted,
            rt: Some(rt),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops the server: the listener and every connection close.
    fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop();
    }
}

type Gauge = Arc<Mutex<(usize, usize)>>;

async fn accept_loop(
    listener: TcpListener,
    seen: Arc<Mutex<Vec<Seen>>>,
    gauge: Gauge,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = sock.set_nodelay(true);
        tokio::spawn(serve_conn(sock, seen.clone(), gauge.clone()));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serves keep-alive HTTP/1.1 requests on one connection.
async fn serve_conn(mut sock: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, gauge: Gauge) {
    let mut buf = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut tmp = [0u8; 4096];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let mut content_length = 0usize;
        let mut authorization = None;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    content_length = v.trim().parse().unwrap_or(0);
                } else if k == "authorization" {
                    authorization = Some(v.trim().to_string());
                }
            }
        }
        let body_start = head_end + 4;
        while buf.len() < body_start + content_length {
            let mut tmp = [0u8; 4096];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body: Value = serde_json::from_slice(&buf[body_start..body_start + content_length])
            .unwrap_or(Value::Null);
        buf.drain(..body_start + content_length);
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        if method == "GET" && path == "/v1/models" {
            let b =
                json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            );
            if sock.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        seen.lock().unwrap().push(Seen {
            path: path.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
        {
            let mut g = gauge.lock().unwrap();
            g.0 += 1;
            g.1 = g.1.max(g.0);
        }
        let r = respond(&mut sock, &path, &body, authorization.as_deref()).await;
        gauge.lock().unwrap().0 -= 1;
        if r.is_err() {
            return;
        }
        // As llama-server: close the connection after the response although
        // keep-alive was offered, `close_after_ms` later, without reading
        // what the client sent meanwhile (a FIN, then the rest is drained
        // so the close is not a reset).
        if let Some(ms) = body["mock"]["close_after_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = sock.shutdown().await;
            let mut tmp = [0u8; 4096];
            while let Ok(n) = sock.read(&mut tmp).await {
                if n == 0 {
                    break;
                }
            }
            return;
        }
    }
}

async fn chunk(sock: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    sock.write_all(data).await?;
    sock.write_all(b"\r\n").await
}

/// One SSE event, written as two HTTP chunks split at an odd place so the
/// client's parser sees events split across reads.
async fn event(sock: &mut TcpStream, data: &str) -> std::io::Result<()> {
    let ev = format!("data: {data}\r\n\r\n");
    let bytes = ev.as_bytes();
    let cut = bytes.len() * 2 / 3;
    chunk(sock, &bytes[..cut]).await?;
    sock.flush().await?;
    chunk(sock, &bytes[cut..]).await?;
    sock.flush().await
}

async fn respond(
    sock: &mut TcpStream,
    path: &str,
    body: &Value,
    authorization: Option<&str>,
) -> std::io::Result<()> {
    let m = &body["mock"];
    let get = |k: &str, d: u64| m[k].as_u64().unwrap_or(d);
    let flag = |k: &str| m[k].as_bool().unwrap_or(false);
    if let Some(status) = m["status"].as_u64() {
        let msg = if flag("echo_auth") {
            format!("bad key {}", authorization.unwrap_or(""))
        } else {
            "model exploded".to_string()
        };
        let b = json!({"error": {"message": msg, "type": "server_error"}}).to_string();
        let resp = format!(
            "HTTP/1.1 {status} Oops\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        );
        return sock.write_all(resp.as_bytes()).await;
    }
    if flag("hang") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(());
    }
    if body["stream"] == json!(false) {
        // a score request: one JSON answer, with vLLM's prompt_logprobs
        // (each later prompt token at logprob -1, rank 1) if asked
        let mut choice = json!({"index": 0, "text": "ab", "finish_reason": "length"});
        if flag("prompt_logprobs") {
            let prompt = body["prompt"].as_array().cloned().unwrap_or_default();
            let mut list = vec![Value::Null];
            for t in prompt.iter().skip(1) {
                list.push(json!({ t.to_string(): {"logprob": -1.0, "rank": 1} }));
            }
            choice["prompt_logprobs"] = Value::Array(list);
        }
        let b = json!({"choices": [choice]}).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        );
        return sock.write_all(resp.as_bytes()).await;
    }
    sock.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await?;
    sock.flush().await?;
    if flag("hang_after_headers") {
        chunk(sock, b": keep-alive\n\n").await?;
        sock.flush().await?;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(());
    }
    let chunks = get("chunks", body["max_tokens"].as_u64().unwrap_or(4));
    let per_chunk = get("per_chunk", 1);
    let delay = Duration::from_millis(get("delay_ms", 0));
    let chat = path.ends_with("/chat/completions");
    if chat {
        event(
            sock,
            &json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}).to_string(),
        )
        .await?;
    }
    let mut next_id = 100u64;
    for i in 0..chunks {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if flag("malformed") && i == 1 {
            event(sock, "{\"choices\": [{\"text\": \"oops\"").await?;
            continue;
        }
        if flag("mid_error") && i == 1 {
            event(
                sock,
                &json!({"error": {"message": "out of KV cache"}}).to_string(),
            )
            .await?;
            continue;
        }
        let ids: Vec<u64> = (0..per_chunk).map(|k| next_id + k).collect();
        next_id += per_chunk;
        let finish = if i + 1 == chunks {
            json!("length")
        } else {
            Value::Null
        };
        let mut choice = if chat {
            json!({"index": 0, "delta": {"content": "ab"}, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": "ab", "finish_reason": finish})
        };
        if flag("ids") {
            choice["token_ids"] = json!(ids);
        }
        event(sock, &json!({"choices": [choice]}).to_string()).await?;
    }
    if flag("usage") {
        let u = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": chunks * per_chunk, "total_tokens": 3 + chunks * per_chunk}});
        event(sock, &u.to_string()).await?;
    }
    if !flag("no_done") {
        event(sock, "[DONE]").await?;
    }
    chunk(sock, b"").await?; // the chunked body's end
    sock.flush().await
}

fn spec() -> ModelSpec {
    ModelSpec {
        name: MODEL.into(),
        architecture: "gpt2".into(),
        path: "/nowhere".into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    }
}

fn load(mock: &Mock, mut options: Value) -> Result<Box<dyn Model>, EngineError> {
    if options.get("base_url").is_none() {
        options["base_url"] = json!(mock.base_url());
    }
    HttpEngine.load(
        &spec(),
        &LoadOptions {
            batch_policy: BatchPolicy::Continuous,
            max_batch: 8,
            options_json: options.to_string().into(),
        },
    )
}

fn req(id: u64, max_new_tokens: u32) -> Request {
    Request {
        id,
        prompt: RVec::from(vec![1u32, 2, 3]),
        max_new_tokens,
        sampling: Sampling::GREEDY,
        ignore_eos: true,
    }
}

/// Runs `n` requests of `max` tokens; returns the collector.
fn run(model: &dyn Model, n: u64, max: u32) -> Arc<Collect> {
    let c = Arc::new(Collect::default());
    model
        .submit((0..n).map(|i| req(i, max)).collect(), c.sink())
        .unwrap();
    c.wait(n as usize);
    c
}

fn only_error(c: &Collect) -> EngineError {
    let errors = c.errors.lock().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(c.done.lock().unwrap().is_empty());
    errors[0].1.clone()
}

#[test]
fn streams_with_ids_and_usage_agree() {
    let mock = Mock::start();
    let m = load(
        &mock,
        json!({"extra_body": {"mock": {"ids": true, "usage": true}}}),
    )
    .unwrap();
    let c = run(&*m, 3, 5);
    assert!(c.errors.lock().unwrap().is_empty());
    for id in 0..3 {
        assert_eq!(c.tokens_of(id), vec![100, 101, 102, 103, 104]);
    }
    // One sink call per chunk.
    assert_eq!(c.calls.lock().unwrap().len(), 15);
    for d in c.done.lock().unwrap().iter() {
        assert_eq!(d.generated_tokens, 5);
        assert_eq!(d.prompt_tokens, 3);
        assert_eq!(d.finish_reason, FinishReason::Length);
        assert_eq!(d.decode_steps, 4);
    }
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    let b = &seen[0].body;
    assert_eq!(seen[0].path, "/v1/completions");
    assert_eq!(b["model"], MODEL);
    assert_eq!(b["prompt"], json!([1, 2, 3]));
    assert_eq!(b["max_tokens"], 5);
    assert_eq!(b["stream"], true);
    assert_eq!(b["ignore_eos"], true);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert!(b.get("min_tokens").is_none());
    assert!(seen[0].authorization.is_none());
}

#[test]
fn without_ids_chunks_count_and_usage_disagreement_shows() {
    let mock = Mock::start();
    // 4 chunks of 3 tokens, no ids, usage says 12.
    let m = load(
        &mock,
        json!({"extra_body": {"mock": {"chunks": 4, "per_chunk": 3, "usage": true}}}),
    )
    .unwrap();
    let c = run(&*m, 1, 12);
    assert_eq!(c.tokens_of(0), vec![0, 0, 0, 0]);
    assert_eq!(c.done.lock().unwrap()[0].generated_tokens, 12);

    // Multi-token chunks with ids: every id reaches the sink, one call per chunk.
    let m = load(
        &mock,
        json!({"extra_body": {"mock": {"chunks": 2, "per_chunk": 3, "ids": true}}}),
    )
    .unwrap();
    let c = run(&*m, 1, 6);
    assert_eq!(c.tokens_of(0), vec![100, 101, 102, 103, 104, 105]);
    assert_eq!(c.calls.lock().unwrap().len(), 2);
    assert_eq!(c.done.lock().unwrap()[0].generated_tokens, 6);

    // No usage, no ids: the chunk count is the fallback.
    let m = load(
        &mock,
        json!({"include_usage": false, "extra_body": {"mock": {"chunks": 4, "per_chunk": 3}}}),
    )
    .unwrap();
    let c = run(&*m, 1, 12);
    assert_eq!(c.tokens_of(0).len(), 4);
    let d = c.done.lock().unwrap()[0];
    assert_eq!(d.generated_tokens, 4);
    assert_eq!(d.prompt_tokens, 3);
    assert!(mock
        .seen()
        .last()
        .unwrap()
        .body
        .get("stream_options")
        .is_none());
}

#[test]
fn chat_endpoint_text_prompt_and_min_tokens() {
    let mock = Mock::start();
    let m = load(
        &mock,
        json!({"base_url": format!("{}/v1/", mock.base_url()), "endpoint": "chat",
               "send_min_tokens": true, "extra_body": {"mock": {"usage": true}}}),
    )
    .unwrap();
    let c = run(&*m, 1, 4);
    // The role-only first chunk is not content.
    assert_eq!(c.tokens_of(0).len(), 4);
    let s = &mock.seen()[0];
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(s.body["messages"][0]["content"], "1 2 3");
    assert_eq!(s.body["min_tokens"], 4);
    // Stream that ends with a finish_reason but no [DONE] is complete too.
    let m = load(&mock, json!({"extra_body": {"mock": {"no_done": true}}})).unwrap();
    let c = run(&*m, 1, 3);
    assert_eq!(c.done.lock().unwrap().len(), 1);
}

#[test]
fn api_key_is_sent_and_never_leaks() {
    std::env::set_var("EM_HTTP_TEST_KEY", KEY);
    let mock = Mock::start();
    let m = load(
        &mock,
        json!({"api_key_env": "EM_HTTP_TEST_KEY", "extra_body": {"mock": {"status": 401, "echo_auth": true}}}),
    )
    .unwrap();
    let c = run(&*m, 1, 4);
    let e = only_error(&c);
    assert!(e.message.contains("HTTP 401"), "{e}");
    assert!(e.message.contains("bad key Bearer <redacted>"), "{e}");
    assert!(!e.to_string().contains(KEY), "{e}");
    let s = mock.seen();
    assert_eq!(
        s[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    // Unset variable: a clear load error naming the variable only.
    let e = load(&mock, json!({"api_key_env": "EM_HTTP_TEST_KEY_UNSET"}))
        .err()
        .unwrap();
    assert!(e.message.contains("EM_HTTP_TEST_KEY_UNSET"), "{e}");
}

#[test]
fn http_errors_and_malformed_streams_are_named() {
    let mock = Mock::start();
    let m = load(&mock, json!({"extra_body": {"mock": {"status": 500}}})).unwrap();
    let e = only_error(&run(&*m, 1, 4));
    assert!(e.message.contains("HTTP 500"), "{e}");
    assert!(e.message.contains("model exploded"), "{e}");

    let m = load(&mock, json!({"extra_body": {"mock": {"malformed": true}}})).unwrap();
    let c = run(&*m, 1, 4);
    let e = only_error(&c);
    assert!(
        e.message.contains("malformed JSON in a stream chunk"),
        "{e}"
    );
    assert!(e.message.contains("oops"), "{e}");
    assert_eq!(
        c.tokens_of(0).len(),
        1,
        "the chunk before the bad one was sent"
    );

    let m = load(&mock, json!({"extra_body": {"mock": {"mid_error": true}}})).unwrap();
    let e = only_error(&run(&*m, 1, 4));
    assert!(
        e.message
            .contains("server error in the stream: out of KV cache"),
        "{e}"
    );

    // A body without [DONE] or a finish_reason is an incomplete stream.
    let m = load(
        &mock,
        json!({"extra_body": {"mock": {"no_done": true, "chunks": 0}}}),
    )
    .unwrap();
    let e = only_error(&run(&*m, 1, 4));
    assert!(e.message.contains("ended before [DONE]"), "{e}");
}

#[test]
fn timeouts_are_named_and_bounded() {
    let mock = Mock::start();
    let t = Instant::now();
    let m = load(
        &mock,
        json!({"first_token_timeout_s": 0.3, "extra_body": {"mock": {"hang": true}}}),
    )
    .unwrap();
    let e = only_error(&run(&*m, 1, 4));
    assert!(e.message.contains("first-token timeout"), "{e}");
    assert!(e.message.contains("no response headers"), "{e}");

    let m = load(
        &mock,
        json!({"first_token_timeout_s": 0.3, "extra_body": {"mock": {"hang_after_headers": true}}}),
    )
    .unwrap();
    let e = only_error(&run(&*m, 1, 4));
    assert!(e.message.contains("first-token timeout"), "{e}");
    assert!(e.message.contains("no content"), "{e}");

    let m = load(
        &mock,
        json!({"total_timeout_s": 0.5, "extra_body": {"mock": {"chunks": 50, "delay_ms": 50}}}),
    )
    .unwrap();
    let c = run(&*m, 1, 50);
    let e = only_error(&c);
    assert!(e.message.contains("total timeout"), "{e}");
    assert!(!c.tokens_of(0).is_empty());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn load_checks_the_server_and_model() {
    let mut mock = Mock::start();
    let e = load(&mock, json!({"model": "llama"})).err().unwrap();
    assert!(e.message.contains(&mock.base_url()), "{e}");
    assert!(e.message.contains(MODEL), "{e}");
    assert!(load(&mock, json!({"model": "llama", "check_model": false})).is_ok());
    let e = load(&mock, json!({"bogus": 1})).err().unwrap();
    assert!(e.message.contains("bogus"), "{e}");
    let e = load(&mock, json!({"endpoint": "chat", "prompt": "token_ids"}))
        .err()
        .unwrap();
    assert!(e.message.contains("token_ids"), "{e}");
    assert!(load(&mock, json!({"base_url": "https://x:1"}))
        .err()
        .unwrap()
        .is_unsupported());
    // The harness scrapes metrics_url; the plugin checks it is one.
    assert!(load(
        &mock,
        json!({"metrics_url": "http://127.0.0.1:9/metrics", "metrics_interval_s": 0.5})
    )
    .is_ok());
    let e = load(&mock, json!({"metrics_url": "https://h/metrics"}))
        .err()
        .unwrap();
    assert!(
        e.message
            .contains("metrics_url \"https://h/metrics\" must be a plain-HTTP URL"),
        "{e}"
    );
    let e = load(
        &mock,
        json!({"metrics_url": "http://h/metrics", "metrics_interval_s": 0}),
    )
    .err()
    .unwrap();
    assert!(
        e.message
            .contains("metrics_interval_s must be a positive number"),
        "{e}"
    );

    // The server goes away after load: requests fail with a connect error.
    let m = load(&mock, json!({})).unwrap();
    let url = mock.base_url();
    mock.stop();
    let e = only_error(&run(&*m, 1, 4));
    assert!(
        e.message.contains("cannot connect") || e.message.contains("request to"),
        "{e}"
    );
    // Nothing listening at load: a clear load error.
    let e = load(&mock, json!({"base_url": url})).err().unwrap();
    assert!(e.message.contains("cannot connect"), "{e}");
}

/// `score` asks for vLLM's `prompt_logprobs` (with `extra_body` merged,
/// as every request): a server that answers none makes it
/// `unsupported` with that reason; one that answers them gives rows of
/// the model folder's vocabulary; without a vocabulary size it is
/// `unsupported` too. `memory()` is zeros.
#[test]
fn score_reads_prompt_logprobs_or_says_the_server_has_none() {
    let mock = Mock::start();
    let m = load(&mock, json!({})).unwrap();
    let e = m.score(&[1, 2]).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert!(
        e.message.contains("answered without prompt_logprobs"),
        "{e}"
    );
    assert_eq!(m.memory(), Default::default());
    let seen = mock.seen();
    let last = &seen.last().unwrap().body;
    assert_eq!(last["prompt_logprobs"], 20, "{last}");
    assert_eq!(last["stream"], false, "{last}");

    let with = json!({"extra_body": {"mock": {"prompt_logprobs": true}}});
    let e = load(&mock, with.clone())
        .unwrap()
        .score(&[1, 2])
        .unwrap_err();
    assert!(
        e.is_unsupported() && e.message.contains("vocabulary size is unknown"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("em-http-score-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"vocab_size": 8}"#).unwrap();
    let mut spec = spec();
    spec.path = dir.to_str().unwrap().into();
    let opts = LoadOptions {
        batch_policy: BatchPolicy::Continuous,
        max_batch: 8,
        options_json: json!({"base_url": mock.base_url(), "extra_body": with["extra_body"]})
            .to_string()
            .into(),
    };
    let l = HttpEngine
        .load(&spec, &opts)
        .unwrap()
        .score(&[1, 2, 3])
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!((l.rows, l.vocab), (3, 8));
    assert_eq!(l.row(0)[2], -1.0);
    assert_eq!(l.row(1)[3], -1.0);
    // the rest of each row shares 1 - e^-1 evenly
    let tail = ((1.0 - (-1.0f64).exp()) / 7.0).ln() as f32;
    assert!((l.row(0)[5] - tail).abs() < 1e-6);
}

#[test]
fn thousands_of_concurrent_streams() {
    let mock = Mock::start();
    let m = load(
        &mock,
        json!({"max_connections": 4096, "threads": 2,
               "extra_body": {"mock": {"chunks": 4, "delay_ms": 100, "ids": true, "usage": true}}}),
    )
    .unwrap();
    let t = Instant::now();
    let n = 2000;
    let c = run(&*m, n, 4);
    let errors = c.errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    drop(errors);
    let done = c.done.lock().unwrap();
    assert_eq!(done.len(), n as usize);
    assert!(done.iter().all(|d| d.generated_tokens == 4));
    drop(done);
    let calls = c.calls.lock().unwrap();
    assert_eq!(calls.iter().map(|s| s.len()).sum::<usize>(), 4 * n as usize);
    // Streams overlapped: 2,000 streams of 4 x 100 ms took far less than
    // 2,000 x 400 ms.
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    eprintln!("{n} concurrent streams: {:?}", t.elapsed());
}

/// A sink that stamps every `tokens` call, as the host's does.
#[derive(Default)]
struct Stamps {
    calls: Mutex<Vec<(Instant, Vec<u32>)>>,
    ended: Mutex<Vec<Result<engine_api::Completion, EngineError>>>,
}

struct StampSink(Arc<Stamps>);

impl engine_api::ffi::SinkFfi for StampSink {
    fn tokens(&self, step: engine_api::abi_stable::std_types::RSlice<'_, engine_api::TokenEvent>) {
        let t = Instant::now();
        let ids = step.iter().map(|e| e.token).collect();
        self.0.calls.lock().unwrap().push((t, ids));
    }
    fn done(&self, c: engine_api::Completion) {
        self.0.ended.lock().unwrap().push(Ok(c));
    }
    fn error(&self, _id: u64, e: EngineError) {
        self.0.ended.lock().unwrap().push(Err(e));
    }
}

#[test]
fn through_the_ffi_boundary_chunks_arrive_as_they_are_sent() {
    use engine_api::abi_stable::sabi_trait::TD_Opaque;
    let mock = Mock::start();
    let engine = engine_api::ffi_engine(|| Ok(HttpEngine)).unwrap();
    let info = engine.info().unwrap();
    assert_eq!(info.name.as_str(), "http");
    assert!(info.dtypes.iter().any(|d| d.as_str() == "f32"));
    let opts = LoadOptions {
        options_json: json!({"base_url": mock.base_url(),
            "extra_body": {"mock": {"chunks": 5, "delay_ms": 80, "ids": true}}})
        .to_string()
        .into(),
        ..Default::default()
    };
    let model = engine.load(&spec(), &opts).unwrap();
    let stamps = Arc::new(Stamps::default());
    let sink = engine_api::ffi::SinkFfi_TO::from_value(StampSink(stamps.clone()), TD_Opaque);
    let t0 = Instant::now();
    model.submit(RVec::from(vec![req(7, 5)]), sink).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stamps.ended.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no completion");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ended = stamps.ended.lock().unwrap();
    let c = ended[0].clone().unwrap();
    assert_eq!(c.request_id, 7);
    assert_eq!(c.generated_tokens, 5);
    let calls = stamps.calls.lock().unwrap();
    assert_eq!(calls.len(), 5);
    // Each chunk reached the sink when the server sent it (80 ms apart),
    // not buffered until the end.
    assert!(calls[0].0 - t0 >= Duration::from_millis(70));
    for w in calls.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(gap >= Duration::from_millis(60), "gap {gap:?}");
    }
    assert_eq!(
        calls.iter().flat_map(|c| c.1.clone()).collect::<Vec<_>>(),
        vec![100, 101, 102, 103, 104]
    );
    assert!(model
        .score(vec![1u32].as_slice().into())
        .into_result()
        .unwrap_err()
        .is_unsupported());
}

#[test]
fn connect_timeout_is_named() {
    // A listener that never accepts, with its backlog filled: further
    // SYNs are dropped and a connect hangs until the timeout.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (listener, addr) = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = s.listen(1).unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    });
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    let t = Instant::now();
    let e = HttpEngine
        .load(
            &spec(),
            &LoadOptions {
                options_json:
                    json!({"base_url": format!("http://{addr}"), "connect_timeout_s": 0.5})
                        .to_string()
                        .into(),
                ..Default::default()
            },
        )
        .err()
        .unwrap();
    assert!(e.message.contains("connect timeout"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(listener);
}

#[test]
fn loads_and_unloads_inside_another_tokio_runtime() {
    let mock = Mock::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(async {
        let m = load(&mock, json!({"extra_body": {"mock": {"ids": true}}})).unwrap();
        let c = Arc::new(Collect::default());
        m.submit(vec![req(1, 3)], c.sink()).unwrap();
        tokio::task::spawn_blocking({
            let c = c.clone();
            move || c.wait(1)
        })
        .await
        .unwrap();
        drop(m);
        c
    });
    assert_eq!(c.tokens_of(1), vec![100, 101, 102]);
}

#[test]
fn max_connections_bounds_streams_in_flight() {
    let mock = Mock::start();
    let m = load(
        &mock,
        json!({"max_connections": 3, "extra_body": {"mock": {"chunks": 3, "delay_ms": 30}}}),
    )
    .unwrap();
    let c = run(&*m, 12, 3);
    assert_eq!(c.done.lock().unwrap().len(), 12);
    let peak = mock.gauge.lock().unwrap().1;
    assert_eq!(peak, 3, "peak streams in flight");
    // Requests that waited for a slot report it as queue time.
    assert!(c.done.lock().unwrap().iter().any(|d| d.queue_us >= 50_000));
}

/// Four requests one after another: with keep-alive they share the
/// pooled connection; with `keep_alive: false` each opens its own.
#[test]
fn keep_alive_false_opens_a_connection_per_request() {
    use std::sync::atomic::Ordering;
    for (keep_alive, per_request) in [(true, false), (false, true)] {
        let mock = Mock::start();
        let m = load(
            &mock,
            json!({"keep_alive": keep_alive, "check_model": false, "extra_body": {"mock": {"ids": true, "usage": true}}}),
        )
        .unwrap();
        let at_load = mock.accepted.load(Ordering::SeqCst);
        let c = Arc::new(Collect::default());
        for i in 0..4 {
            m.submit(vec![req(i, 3)], c.sink()).unwrap();
            c.wait(i as usize + 1);
            // Time for the connection to go back to the pool.
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(c.errors.lock().unwrap().is_empty());
        let opened = mock.accepted.load(Ordering::SeqCst) - at_load;
        if per_request {
            assert_eq!(opened, 4, "keep_alive: false");
        } else {
            assert!(
                opened < 4,
                "keep_alive: true reuses a connection ({opened} opened)"
            );
        }
    }
}

/// The keep-alive race, made certain: the mock closes each connection
/// 100 ms after its response, and the second request goes out on the
/// pooled connection 20 ms after the first ended. It is sent again on a
/// new connection and completes; the mock sees each request once.
#[test]
fn a_request_on_a_connection_the_server_closes_is_sent_again() {
    let mock = Mock::start();
    let m = load(
        &mock,
        json!({"extra_body": {"mock": {"ids": true, "usage": true, "close_after_ms": 100}}}),
    )
    .unwrap();
    let c = Arc::new(Collect::default());
    m.submit(vec![req(0, 3)], c.sink()).unwrap();
    c.wait(1);
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    m.submit(vec![req(1, 3)], c.sink()).unwrap();
    c.wait(2);
    assert!(
        c.errors.lock().unwrap().is_empty(),
        "{:?}",
        c.errors.lock().unwrap()
    );
    assert_eq!(c.done.lock().unwrap().len(), 2);
    // It waited for the close (about 80 ms more), then went out again.
    assert!(
        t0.elapsed() >= Duration::from_millis(60),
        "{:?}",
        t0.elapsed()
    );
    let posts = mock
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == "/v1/completions")
        .count();
    assert_eq!(
        posts, 2,
        "the first attempt of the second request was never read"
    );
}
