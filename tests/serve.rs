//! End-to-end: `engine-matrix serve` with the candle plugin and the `tiny`
//! model, driven by a hand-written blocking HTTP/1.1 client.

use integration_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Checks a stream's framing and returns its token ids, its JSON chunks
/// (without `[DONE]`) and the arrival time of each token chunk.
fn parse_stream(r: &Resp) -> (Vec<u32>, Vec<Value>, Vec<Instant>) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{:?}",
        r.headers
    );
    let data = r.data();
    assert_eq!(data.last(), Some(&"[DONE]"), "{}", r.text());
    assert_eq!(data.iter().filter(|d| **d == "[DONE]").count(), 1);
    let mut ids = Vec::new();
    let mut chunks = Vec::new();
    let mut times = Vec::new();
    for (i, d) in data[..data.len() - 1].iter().enumerate() {
        let v: Value = serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"));
        assert!(v.get("error").is_none(), "error chunk: {v}");
        if let Some(c) = v["choices"].as_array().and_then(|c| c.first()) {
            let t = c["token_ids"].as_array().expect("token_ids");
            if !t.is_empty() {
                times.push(r.events[i].0);
            }
            ids.extend(t.iter().map(|x| x.as_u64().unwrap() as u32));
        }
        chunks.push(v);
    }
    (ids, chunks, times)
}

fn completion_body(prompt: Value, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[test]
fn serve_answers_openai_completions_streaming_and_not() {
    let s = Server::start(&["--max-batch", "8"]);

    let h = s.get("/health");
    assert_eq!(h.status, 200);

    let m = s.get("/v1/models");
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "tiny");
    assert_eq!(m["data"][0]["object"], "model");

    // Non-streaming completion.
    let body = json!({
        "model": "tiny", "prompt": [1, 2, 3], "max_tokens": 8,
        "ignore_eos": true, "temperature": 0,
    });
    let r = s.post("/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "tiny");
    let choice = &v["choices"][0];
    let ids: Vec<u64> = choice["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 8, "{v}");
    assert!(ids.iter().all(|&t| t < 1000));
    let text: String = ids.iter().map(|t| format!(" {t}")).collect();
    assert_eq!(choice["text"], text.as_str());
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11})
    );

    // Streaming completion of the same prompt: same (greedy) tokens.
    let r = s.post(
        "/v1/completions",
        &completion_body(json!([1, 2, 3]), 8, true),
    );
    let (sids, chunks, _) = parse_stream(&r);
    assert_eq!(
        sids.iter().map(|&t| t as u64).collect::<Vec<_>>(),
        ids,
        "greedy stream matches the non-streaming response"
    );
    assert_eq!(chunks.len(), 8 + 2, "8 tokens, finish, usage: {chunks:?}");
    for c in &chunks[..8] {
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["choices"][0]["token_ids"].as_array().unwrap().len(), 1);
        assert!(c["choices"][0]["finish_reason"].is_null());
    }
    assert_eq!(chunks[8]["choices"][0]["finish_reason"], "length");
    let usage = &chunks[9];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11})
    );

    // Without include_usage: no usage chunk.
    let mut body = completion_body(json!("hello"), 4, true);
    body.as_object_mut().unwrap().remove("stream_options");
    let (ids, chunks, _) = parse_stream(&s.post("/v1/completions", &body));
    assert_eq!(ids.len(), 4);
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );

    // Chat, streaming.
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 6, "ignore_eos": true, "stream": true,
        "stream_options": {"include_usage": true},
    });
    let (ids, chunks, _) = parse_stream(&s.post("/v1/chat/completions", &body));
    assert_eq!(ids.len(), 6);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content,
        ids.iter().map(|t| format!(" {t}")).collect::<String>()
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], "be brief\nhi".len());
    assert_eq!(usage["usage"]["completion_tokens"], 6);

    // Chat, not streaming.
    let body = json!({
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3, "ignore_eos": true,
    });
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["token_ids"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["total_tokens"], 5);

    // Bad requests: 400 with an OpenAI-style error.
    let long: Vec<u32> = (0..300).collect();
    let r = s.post("/v1/completions", &completion_body(json!(long), 8, false));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 256"),
        "{e}"
    );
    let r = http(s.port, "POST", "/v1/completions", Some(b"{not json"));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].is_string());
    let r = s.post("/v1/completions", &json!({"max_tokens": 4}));
    assert_eq!(r.status, 400);

    // The server still works after the errors.
    let r = s.post("/v1/completions", &completion_body(json!([7]), 2, false));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn serve_streams_concurrent_requests_to_completion() {
    let s = Server::start(&["--max-batch", "4", "--batch-policy", "continuous"]);
    let port = s.port;
    let handles: Vec<_> = (0..8u32)
        .map(|i| {
            std::thread::spawn(move || {
                let body = completion_body(json!([i + 1, 2, 3, 4]), 16, true);
                let r = http(
                    port,
                    "POST",
                    "/v1/completions",
                    Some(body.to_string().as_bytes()),
                );
                let (ids, chunks, _) = parse_stream(&r);
                (
                    ids.len(),
                    chunks.last().unwrap()["usage"]["completion_tokens"].clone(),
                )
            })
        })
        .collect();
    for h in handles {
        let (n, usage) = h.join().expect("client thread");
        assert_eq!(n, 16);
        assert_eq!(usage, 16);
    }
}

#[test]
fn a_client_that_disconnects_mid_stream_does_not_disturb_the_server() {
    let mut s = Server::start(&["--inject-token-ms", "5"]);
    let body = completion_body(json!([1, 2, 3]), 200, true).to_string();
    for _ in 0..3 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let req = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        drop(c);
    }
    let r = s.post("/v1/completions", &completion_body(json!([4]), 4, true));
    let (ids, _, _) = parse_stream(&r);
    assert_eq!(ids.len(), 4);
    assert_eq!(s.get("/health").status, 200);
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the server is still running"
    );
}

#[test]
fn injected_delays_give_a_known_token_timing() {
    let s = Server::start(&["--inject-first-token-ms", "50", "--inject-token-ms", "20"]);
    let first = Duration::from_millis(50);
    let gap = Duration::from_millis(20);
    for _ in 0..2 {
        let r = s.post("/v1/completions", &completion_body(json!([1, 2]), 8, true));
        let (ids, _, times) = parse_stream(&r);
        assert_eq!(ids.len(), 8);
        assert_eq!(times.len(), 8);
        // Lower bounds only: chunk k cannot arrive before the server sent
        // it, which is at least 50 + 20·k ms after the request arrived.
        let since: Vec<Duration> = times.iter().map(|t| *t - r.sent).collect();
        for (k, d) in since.iter().enumerate() {
            assert!(
                *d >= first + gap * k as u32,
                "chunk {k} at {d:?}: {since:?}"
            );
        }
        // (Gaps between two arrivals are not bounded below: a client that
        // reads one chunk late and the next on time sees a shorter gap.
        // The bounds above are the gaps' guarantee: the k-th gap ends at
        // least 50 + 20·k ms after the request.)
    }
    // Non-streaming responses follow the same schedule.
    let r = s.post("/v1/completions", &completion_body(json!([1, 2]), 8, false));
    assert_eq!(r.status, 200, "{}", r.text());
    let took = r.end - r.sent;
    assert!(took >= first + gap * 7, "{took:?}");
}

#[test]
fn serve_refuses_unknown_engines_and_models() {
    let plugins = plugin_dir(&["candle"]);
    let o = run(
        &[
            "serve", "--engine", "nope", "--model", "tiny", "--port", "0",
        ],
        plugins.path(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("'nope' not found"),
        "{}",
        text(&o.stderr)
    );
    let o = run(
        &[
            "serve",
            "--engine",
            "candle",
            "--model",
            "no-such-model",
            "--port",
            "0",
        ],
        plugins.path(),
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("no-such-model") && err.contains("tiny"),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "nothing listens: {}", text(&o.stdout));
}

/// The http engine plugin through the host, against `serve` over candle:
/// cells run, counts agree, and the host's timing of a server with a
/// known schedule (first token 50 ms after the request, then one every
/// 20 ms) recovers it.
#[test]
fn the_http_engine_measures_serve_with_known_timing() {
    let server = Server::start(&["--inject-first-token-ms", "50", "--inject-token-ms", "20"]);
    let plugins = plugin_dir(&["candle", "http"]);
    let tmp = TempDir::new("http-engine");
    let yaml = format!(
        "\
name: http
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - {{name: remote, plugin: http, options: {{base_url: \"http://127.0.0.1:{}\"}}}}
scenarios:
  - name: latency
    kind: latency
    warmup: 1
    iterations: 5
    input_tokens: 16
    output_tokens: 12
",
        server.port
    );
    let (run_dir, o) = run_yaml(tmp.path(), &yaml, &["--no-calibrate"], plugins.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let cell = &summary["cells"][0];
    assert_eq!(cell["status"], "ok", "{cell}");
    let m = &cell["metrics"];
    assert_eq!(m["completed"], 5);
    assert_eq!(m["token_count_disagreements"], 0, "{m}");
    assert_eq!(m["output_length_mismatches"], 0, "{m}");
    let ttft = m["ttft_ms"]["p50"].as_f64().unwrap();
    let itl = m["itl_ms"]["p50"].as_f64().unwrap();
    eprintln!("injected 50 ms / 20 ms, measured TTFT p50 {ttft:.3} ms, ITL p50 {itl:.3} ms");
    // The issue's accuracy bound: within 1 ms of the injected schedule
    // (medians: single samples on a shared 2-core machine can be
    // preempted). Measured here: 50.36 ms and 20.000 ms.
    assert!((50.0..51.0).contains(&ttft), "TTFT p50 {ttft}");
    assert!((19.0..21.0).contains(&itl), "ITL p50 {itl}");
}

/// `launch:` starts `engine-matrix serve` for an http engine on a port the
/// harness picks, runs its cells against it, keeps its log in the run
/// folder and stops it afterwards; a launch that cannot work fails only
/// that engine's cells, naming the reason, and the other engines run.
#[test]
fn launch_starts_the_server_runs_its_cells_and_stops_it() {
    let plugins = plugin_dir(&["candle", "http"]);
    let tmp = TempDir::new("launch");
    let yaml = "\
name: launch
models:
  - {name: tiny, weights: synthetic, config: tiny, seed: 0}
engines:
  - name: served
    plugin: http
    options: {base_url: \"http://127.0.0.1:${PORT}\", model: tiny}
    launch:
      command: [\"${ENGINE_MATRIX}\", serve, --engine, candle, --model, tiny, --port, \"${PORT}\"]
      ready: /health
      ready_timeout_s: 300
  - name: broken
    plugin: http
    options: {base_url: \"http://127.0.0.1:${PORT}\"}
    launch:
      command: \"echo loading ${EM_TEST_LAUNCH_WORD}; echo no such model >&2; exit 7\"
  - name: unset
    plugin: http
    options: {base_url: \"http://127.0.0.1:${PORT}\"}
    launch: {command: [\"${EM_TEST_SURELY_UNSET_VARIABLE}\"]}
  - {name: candle, options: {threads: 1}}
scenarios:
  - name: latency
    kind: latency
    warmup: 1
    iterations: 2
    input_tokens: 8
    output_tokens: 4
    axes: {batch_size: [1, 2]}
";
    let m = tmp.path().join("m.yaml");
    std::fs::write(&m, yaml).unwrap();
    let run_dir = tmp.path().join("run");
    let o = run_env(
        &[
            "run",
            m.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
        ],
        plugins.path(),
        &[("EM_TEST_LAUNCH_WORD", std::path::Path::new("weights"))],
    );
    // The broken engines' cells failed: exit 5.
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let cells = summary["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 8, "every cell has a result");
    let of = |engine: &str| -> Vec<&Value> {
        cells
            .iter()
            .filter(|c| c["cell"]["engine"] == engine)
            .collect()
    };
    for c in of("served").into_iter().chain(of("candle")) {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["metrics"]["output_length_mismatches"], 0);
    }
    // A roofline efficiency for candle's cells, none for the server's:
    // its model is not the matrix's, and it may run anywhere.
    assert!(of("candle").iter().all(|c| c["efficiency"].is_object()));
    assert!(of("served").iter().all(|c| c["efficiency"].is_null()));
    for c in of("broken") {
        assert_eq!(c["status"], "failed");
        let why = c["reason"].as_str().unwrap();
        assert!(
            why.contains("exited with status 7")
                && why.contains("loading weights")
                && why.contains("no such model"),
            "{why}"
        );
    }
    for c in of("unset") {
        let why = c["reason"].as_str().unwrap();
        assert!(
            why.contains("EM_TEST_SURELY_UNSET_VARIABLE") && why.contains("not set"),
            "{why}"
        );
    }
    // The server's log is in the run folder and says it was stopped; it
    // no longer listens.
    assert_launched_server_stopped(&run_dir, "served");
    // The summary keeps the matrix as written: no filled-in secrets.
    let kept = std::fs::read_to_string(run_dir.join("matrix.yaml")).unwrap();
    assert!(kept.contains("${EM_TEST_LAUNCH_WORD}"));
}

/// The open-loop `serving` scenario against `serve` with a known schedule
/// (first token 50 ms after the request, then one every 20 ms: 150 ms a
/// request). Requests are due every 50 ms; with at most 2 in flight the
/// server completes 13.3 per second, so requests wait longer and longer
/// before they can be sent. Latency from the send time stays at the
/// injected 50 ms; latency from the scheduled time shows the queue
/// (coordinated omission would hide it). A second engine, whose client
/// allows one connection and 0.5 s per request, loses the late requests
/// to timeouts: they are counted by kind and the cell still reports.
#[test]
fn serving_measures_from_the_schedule_and_counts_failures() {
    let plugins = plugin_dir(&["candle", "http"]);
    let tmp = TempDir::new("serving");
    let launch = "{command: [\"${ENGINE_MATRIX}\", serve, --engine, candle, --model, tiny, --port, \"${PORT}\", --inject-first-token-ms, 50, --inject-token-ms, 20], ready: /health, ready_timeout_s: 300}";
    let yaml = format!(
        "\
name: serving
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - name: paced
    plugin: http
    options: {{base_url: \"http://127.0.0.1:${{PORT}}\", model: tiny}}
    launch: {launch}
  - name: strict
    plugin: http
    options: {{base_url: \"http://127.0.0.1:${{PORT}}\", model: tiny, max_connections: 1, total_timeout_s: 0.5}}
    launch: {launch}
scenarios:
  - name: open
    kind: serving
    warmup: 1
    input_tokens: 8
    output_tokens: 6
    arrival: constant
    request_rate: 20
    duration_s: 1
    slo_ttft_ms: 80
    axes:
      max_concurrency: [2]
    include:
      - {{max_concurrency: 64}}
    engines: [paced, strict]
"
    );
    let (run_dir, o) = run_yaml(tmp.path(), &yaml, &["--no-calibrate"], plugins.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let cells = summary["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    let find = |engine: &str, mc: u64| {
        cells
            .iter()
            .find(|c| {
                c["cell"]["engine"] == engine
                    && c["cell"]["params"]["serving"]["max_concurrency"] == mc
            })
            .unwrap_or_else(|| panic!("no {engine} mc{mc} cell"))
    };

    let c = find("paced", 2);
    assert_eq!(c["status"], "ok", "{c}");
    let m = &c["metrics"];
    let s = &m["serving"];
    assert_eq!(s["scheduled"], 20, "20 requests due in [0, 1 s) at 20/s");
    assert_eq!(s["completed"], 20);
    let sent = m["ttft_ms"]["p50"].as_f64().unwrap();
    let sched_p99 = s["ttft_from_schedule_ms"]["p99"].as_f64().unwrap();
    let lag_p99 = s["send_lag_ms"]["p99"].as_f64().unwrap();
    eprintln!("TTFT from send p50 {sent:.2} ms, from schedule p99 {sched_p99:.1} ms, send lag p99 {lag_p99:.1} ms");
    assert!((50.0..56.0).contains(&sent), "TTFT from the send: {sent}");
    // The 20th request is due at 950 ms and can be sent only when the
    // 18th ends: about 9 x 150 = 1350 ms: ~400 ms late.
    assert!(lag_p99 > 250.0, "send lag p99 {lag_p99}");
    assert!(sched_p99 > lag_p99 + 45.0, "from schedule {sched_p99}");
    let frac = s["goodput_fraction"].as_f64().unwrap();
    assert!(frac < 0.5, "most requests miss the 80 ms TTFT SLO: {frac}");
    let achieved = s["achieved_rate"].as_f64().unwrap();
    assert!(
        (8.0..15.0).contains(&achieved),
        "2 slots of 150 ms: {achieved}"
    );

    // Unlimited concurrency: every request on time, all good.
    let c = find("paced", 64);
    let s = &c["metrics"]["serving"];
    assert_eq!(c["status"], "ok", "{c}");
    assert!(s["send_lag_ms"]["p99"].as_f64().unwrap() < 5.0, "{s}");
    assert!(s["goodput_fraction"].as_f64().unwrap() >= 0.9, "{s}");

    // One connection, 0.5 s per request: the queue in the client makes
    // the later requests time out; the early ones complete.
    let c = find("strict", 64);
    assert_eq!(c["status"], "ok", "{c}");
    let m = &c["metrics"];
    let timeouts = m["serving"]["failures_by_kind"]["timeout"]
        .as_u64()
        .unwrap_or(0);
    let done = m["serving"]["completed"].as_u64().unwrap();
    assert!(timeouts >= 10 && done >= 2, "{}", m["serving"]);
    assert_eq!(timeouts + done, 20);
    assert!(
        m["failure_reasons"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("total timeout")),
        "{}",
        m["failure_reasons"]
    );
    // The report has the serving table.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("## Open-loop serving"), "{md}");
    assert!(md.contains("timeout "), "{md}");
}

/// A loopback server that fails requests on purpose, in turn: HTTP 503,
/// a stream cut after one chunk, a malformed chunk, and a good stream of
/// 4 tokens. Every connection is closed after its response.
fn faulty_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(AtomicUsize::new(0));
    let s2 = stop.clone();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let n = n.clone();
            std::thread::spawn(move || {
                c.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                if line.starts_with("GET /v1/models") {
                    let b = r#"{"object":"list","data":[{"id":"tiny","object":"model"}]}"#;
                    let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len());
                    return;
                }
                let sse = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
                let chunk = |id: u32| {
                    format!("data: {{\"choices\":[{{\"index\":0,\"text\":\" {id}\",\"token_ids\":[{id}],\"finish_reason\":null}}]}}\n\n")
                };
                match n.fetch_add(1, Ordering::SeqCst) % 4 {
                    0 => {
                        let _ = write!(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 28\r\nConnection: close\r\n\r\n{{\"error\":\"server too busy\"}}");
                    }
                    1 => {
                        let _ = write!(c, "{sse}{}", chunk(1));
                    }
                    2 => {
                        let _ = write!(c, "{sse}{}data: {{\"choices\": [oops\n\n", chunk(1));
                    }
                    _ => {
                        let mut out = sse.to_string();
                        for id in 1..=4 {
                            out.push_str(&chunk(id));
                        }
                        out.push_str("data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n");
                        out.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":4,\"total_tokens\":12}}\n\n");
                        out.push_str("data: [DONE]\n\n");
                        let _ = c.write_all(out.as_bytes());
                    }
                }
            });
        }
    });
    (port, stop)
}

/// HTTP errors, disconnects and malformed SSE fail only their request,
/// each counted by kind with its message; the cell and the run go on.
#[test]
fn serving_counts_http_errors_disconnects_and_malformed_streams() {
    let (port, stop) = faulty_server();
    let plugins = plugin_dir(&["http"]);
    let tmp = TempDir::new("serving-faults");
    let yaml = format!(
        "\
name: faults
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - {{name: faulty, plugin: http, options: {{base_url: \"http://127.0.0.1:{port}\"}}}}
scenarios:
  - name: open
    kind: serving
    warmup: 0
    input_tokens: 8
    output_tokens: 4
    arrival: constant
    request_rate: 100
    requests: 8
"
    );
    let (run_dir, o) = run_yaml(tmp.path(), &yaml, &["--no-calibrate"], plugins.path());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let c = &summary["cells"][0];
    assert_eq!(c["status"], "ok", "{c}");
    let m = &c["metrics"];
    let kinds = &m["serving"]["failures_by_kind"];
    assert_eq!(kinds["http_error"], 2, "{kinds}");
    assert_eq!(kinds["disconnect"], 2, "{kinds}");
    assert_eq!(kinds["malformed_stream"], 2, "{kinds}");
    assert_eq!(m["serving"]["completed"], 2, "{}", m["serving"]);
    assert_eq!(m["completed"], 2);
    let reasons: Vec<&String> = m["failure_reasons"].as_object().unwrap().keys().collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("HTTP 503") && r.contains("server too busy")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("ended before")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("malformed JSON")),
        "{reasons:?}"
    );
}

/// A serving cell's leak verdict reads the server the harness launched:
/// the worker records every request it sends, so its own RSS grows with
/// the load, but the server's process is the engine's. `serve` over the
/// fault plugin leaking 0.25 MiB per decode step is a leak; the same
/// server without the fault is not. An engine whose server the harness
/// did not start gets no verdict.
#[test]
fn a_serving_cell_gets_its_launched_servers_leak_verdict() {
    let plugins = plugin_dir(&["fault", "http"]);
    let tmp = TempDir::new("serving-leak");
    let launch = |options: &str| {
        format!(
            "{{command: [\"${{ENGINE_MATRIX}}\", serve, --engine, fault, --options, '{options}', --model, tiny, --port, \"${{PORT}}\"], ready: /health, ready_timeout_s: 300}}"
        )
    };
    let yaml = format!(
        "\
name: serving-leak
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - name: leaky
    plugin: http
    options: {{base_url: \"http://127.0.0.1:${{PORT}}\", model: tiny}}
    launch: {}
  - name: clean
    plugin: http
    options: {{base_url: \"http://127.0.0.1:${{PORT}}\", model: tiny}}
    launch: {}
scenarios:
  - name: soak
    kind: serving
    warmup: 2
    input_tokens: 8
    output_tokens: 4
    arrival: constant
    request_rate: 30
    duration_s: 9
",
        launch(r#"{"fault": "leak", "leak_mb_per_step": 0.25}"#),
        launch("{}"),
    );
    let (run_dir, o) = run_yaml(tmp.path(), &yaml, &["--no-calibrate"], plugins.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let cells = summary_cells(&run_dir);
    let leak = |engine: &str| {
        let c = cells
            .iter()
            .find(|c| c["cell"]["engine"] == engine)
            .unwrap_or_else(|| panic!("no {engine} cell"));
        assert_eq!(c["status"], "ok", "{c}");
        let m = &c["memory"];
        eprintln!("{engine}: {} ({})", m["leak"], m["leak_source"]);
        assert!(
            m["leak_source"]
                .as_str()
                .unwrap_or("")
                .starts_with("server"),
            "{m}"
        );
        m["leak"].clone()
    };
    let l = leak("leaky");
    assert_eq!(l["verdict"], "leak", "{l}");
    assert!(l["growth_mb"].as_f64().unwrap() > 50.0, "{l}");
    let c = leak("clean");
    assert_eq!(c["verdict"], "no_leak", "{c}");
}
