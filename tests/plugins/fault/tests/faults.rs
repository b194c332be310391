//! The harmless faults, driven through the plugin's Rust API and
//! engine-api's boundary glue (no dlopen). abort, segfault and hang would
//! take the test process with them: the host's tests cover those.

use em_fault::{next_token, FaultEngine, OOV_OFFSET};
use engine_api::abi_stable::std_types::{RResult, RVec};
use engine_api::{
    BatchPolicy, Engine, ErrorKind, FinishReason, LoadOptions, Model, ModelSpec, Request, Sampling,
};
use engine_kit::testing::{Collect, TempDir};
use std::sync::Arc;

const VOCAB: usize = 100;
const EOS: u32 = 7;
const N_POSITIONS: usize = 64;

fn model_dir() -> TempDir {
    let dir = TempDir::new("fault");
    // EOS 7 is what token 0 would lead to: (0 * 31 + 7) % 100.
    let config = serde_json::json!({
        "model_type": "gpt2",
        "vocab_size": VOCAB,
        "n_positions": N_POSITIONS,
        "n_embd": 8,
        "n_layer": 1,
        "n_head": 2,
        "eos_token_id": EOS,
        "bos_token_id": EOS,
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

fn spec(dir: &TempDir) -> ModelSpec {
    ModelSpec {
        name: "tiny".into(),
        architecture: "gpt2".into(),
        path: dir.path().to_str().unwrap().into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    }
}

fn options(json: &str, policy: BatchPolicy) -> LoadOptions {
    LoadOptions {
        batch_policy: policy,
        max_batch: 8,
        options_json: json.into(),
    }
}

fn load(dir: &TempDir, json: &str) -> Box<dyn Model> {
    load_with(dir, json, BatchPolicy::Continuous)
}

fn load_with(dir: &TempDir, json: &str, policy: BatchPolicy) -> Box<dyn Model> {
    FaultEngine
        .load(&spec(dir), &options(json, policy))
        .unwrap_or_else(|e| panic!("load {json}: {e}"))
}

fn req(id: u64, prompt: &[u32], max_new_tokens: u32) -> Request {
    Request {
        id,
        prompt: RVec::from(prompt.to_vec()),
        max_new_tokens,
        sampling: Sampling::GREEDY,
        ignore_eos: false,
    }
}

/// What the fake model generates after `prompt`.
fn expected(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut last = *prompt.last().unwrap();
    (0..n)
        .map(|_| {
            last = next_token(last, VOCAB, Some(EOS));
            last
        })
        .collect()
}

fn run(model: &dyn Model, requests: Vec<Request>) -> Arc<Collect> {
    let c = Arc::new(Collect::default());
    let n = requests.len();
    model.submit(requests, c.sink()).expect("submit");
    c.wait(n);
    c
}

#[test]
fn none_generates_exactly_max_new_tokens_never_eos() {
    let dir = model_dir();
    for policy in [
        BatchPolicy::None,
        BatchPolicy::Static,
        BatchPolicy::Continuous,
    ] {
        let m = load_with(&dir, r#"{"threads": 2}"#, policy);
        // Prompt 0 leads straight to the EOS id, which the model skips.
        let prompts: [&[u32]; 3] = [&[0], &[1, 2, 3], &[99, 42]];
        let sampled = Request {
            sampling: Sampling {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                seed: 9,
            },
            ..req(3, &[5], 20)
        };
        let mut requests: Vec<Request> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| req(i as u64, p, 10 + i as u32))
            .collect();
        requests.push(sampled);
        let c = run(&*m, requests);
        assert!(c.errors.lock().unwrap().is_empty());
        for (i, p) in prompts.iter().enumerate() {
            let got = c.tokens_of(i as u64);
            assert_eq!(got, expected(p, 10 + i), "{policy:?} request {i}");
            assert!(!got.contains(&EOS));
        }
        assert_eq!(c.tokens_of(3), expected(&[5], 20), "sampling picks it too");
        for d in c.done.lock().unwrap().iter() {
            assert_eq!(d.finish_reason, FinishReason::Length);
            assert_eq!(d.generated_tokens as usize, c.tokens_of(d.request_id).len());
        }
        // score: the same rows.
        let l = m.score(&[0, 1]).unwrap();
        assert_eq!((l.rows, l.vocab), (2, VOCAB as u32));
        assert_eq!(engine_kit::sampling::argmax(l.row(0)), 8);
        assert_eq!(engine_kit::sampling::argmax(l.row(1)), 38);
    }
}

#[test]
fn wrong_count_sends_one_token_too_few_and_says_so() {
    let dir = model_dir();
    let m = load(&dir, r#"{"fault": "wrong_count", "at": "load"}"#);
    let c = run(
        &*m,
        vec![
            req(1, &[1, 2], 10),
            req(2, &[3], 2),
            req(3, &[4], 1),
            // prompt + 2 does not fit: stays at 1
            req(4, &vec![5; N_POSITIONS - 1], 1),
        ],
    );
    assert!(c.errors.lock().unwrap().is_empty());
    assert_eq!(c.tokens_of(1), expected(&[2], 9));
    assert_eq!(c.tokens_of(2), expected(&[3], 1));
    assert_eq!(c.tokens_of(3), expected(&[4], 2), "1 becomes 2");
    assert_eq!(c.tokens_of(4).len(), 1);
    for d in c.done.lock().unwrap().iter() {
        assert_eq!(d.finish_reason, FinishReason::Length);
        assert_eq!(
            d.generated_tokens as usize,
            c.tokens_of(d.request_id).len(),
            "completion agrees with what was sent"
        );
    }
}

#[test]
fn out_of_vocab_sends_vocab_plus_5_with_right_counts() {
    let dir = model_dir();
    let m = load(&dir, r#"{"fault": "out_of_vocab"}"#);
    let c = run(&*m, vec![req(1, &[1, 2], 6), req(2, &[3], 3)]);
    assert!(c.errors.lock().unwrap().is_empty());
    let bad = VOCAB as u32 + OOV_OFFSET;
    assert_eq!(c.tokens_of(1), vec![bad; 6]);
    assert_eq!(c.tokens_of(2), vec![bad; 3]);
    // one sink call per step for the whole submission, as the kit does
    assert_eq!(c.calls.lock().unwrap().len(), 6);
    for d in c.done.lock().unwrap().iter() {
        assert_eq!(d.finish_reason, FinishReason::Length);
        assert_eq!(d.generated_tokens as usize, c.tokens_of(d.request_id).len());
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn leak_grows_rss_per_decode_step_after_after_steps() {
    let dir = model_dir();
    let m = load_with(
        &dir,
        r#"{"fault": "leak", "leak_mb_per_step": 4, "after_steps": 2}"#,
        BatchPolicy::None,
    );
    let before_leaked = em_fault::leaked_bytes();
    let before_rss = rss_bytes();
    // 1 prefill + 9 decode calls; the first 2 decode calls do not leak.
    let c = run(&*m, vec![req(1, &[1], 10)]);
    assert_eq!(c.tokens_of(1), expected(&[1], 10), "tokens unaffected");
    let leaked = em_fault::leaked_bytes() - before_leaked;
    assert_eq!(leaked, (7 * 4) << 20);
    let grown = rss_bytes().saturating_sub(before_rss);
    assert!(
        grown >= leaked * 9 / 10,
        "RSS grew {grown} bytes for {leaked} leaked"
    );
    assert_eq!(m.memory().kv_cache_used_bytes, 0);
}

#[test]
fn panic_at_load_is_an_error_at_the_boundary() {
    let dir = model_dir();
    let RResult::ROk(engine) = engine_api::ffi_engine(|| Ok(FaultEngine)) else {
        panic!("constructor failed")
    };
    let opts = options(r#"{"fault": "panic", "at": "load"}"#, BatchPolicy::Static);
    let RResult::RErr(e) = engine.load(&spec(&dir), &opts) else {
        panic!("load should fail")
    };
    assert_eq!(e.kind, ErrorKind::Panic);
    assert_eq!(
        e.message.as_str(),
        "engine panicked in load: fault plugin: deliberate panic in load"
    );
    let info = engine.info().unwrap();
    assert_eq!(info.name.as_str(), "fault");
    assert_eq!(info.runtime_version.as_str(), "none (fault injection)");
}

#[test]
fn panic_at_decode_after_steps_errors_the_batch_and_poisons_the_model() {
    let dir = model_dir();
    let m = load_with(
        &dir,
        r#"{"fault": "panic", "after_steps": 3}"#,
        BatchPolicy::None,
    );
    // decode calls 1..=3 succeed, the 4th panics: 1 + 3 tokens arrive.
    let c = run(&*m, vec![req(1, &[1], 10), req(2, &[2], 10)]);
    assert_eq!(c.tokens_of(1), expected(&[1], 4));
    assert!(c.tokens_of(2).is_empty());
    assert!(c.done.lock().unwrap().is_empty());
    let errors = c.errors.lock().unwrap();
    let msg = "engine panicked in decode: fault plugin: deliberate panic in decode";
    assert_eq!(errors[0].0, 1);
    assert_eq!(errors[0].1.kind, ErrorKind::Panic);
    assert_eq!(errors[0].1.message.as_str(), msg);
    // the queued request: the model is poisoned
    assert_eq!(errors[1].0, 2);
    assert_eq!(errors[1].1.kind, ErrorKind::Runtime);
    let poisoned = format!("model is unusable after an earlier engine panic: {msg}");
    assert_eq!(errors[1].1.message.as_str(), poisoned);
    let e = m.submit(vec![req(3, &[1], 2)], c.sink()).unwrap_err();
    assert_eq!(e.message.as_str(), poisoned);
}

#[test]
fn panic_at_prefill_after_steps() {
    let dir = model_dir();
    let m = load_with(
        &dir,
        r#"{"fault": "panic", "at": "prefill", "after_steps": 1}"#,
        BatchPolicy::None,
    );
    let c = run(&*m, vec![req(1, &[1], 3)]);
    assert_eq!(c.tokens_of(1), expected(&[1], 3), "first prefill succeeds");
    let c = run(&*m, vec![req(2, &[1], 3)]);
    let errors = c.errors.lock().unwrap();
    assert_eq!(errors[0].1.kind, ErrorKind::Panic);
    assert_eq!(
        errors[0].1.message.as_str(),
        "engine panicked in prefill: fault plugin: deliberate panic in prefill"
    );
}

#[test]
fn bad_options_are_invalid_argument_errors_naming_the_option() {
    let dir = model_dir();
    let err = |json: &str| {
        FaultEngine
            .load(&spec(&dir), &options(json, BatchPolicy::Continuous))
            .err()
            .unwrap_or_else(|| panic!("{json} should fail"))
    };
    let e = err(r#"{"fault": "explode"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(
        e.message.as_str(),
        "fault options: unknown fault \"explode\"; expected one of none, panic, abort, \
         segfault, hang, leak, wrong_count, out_of_vocab"
    );
    let e = err(r#"{"fault": "panic", "at": "later"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(
        e.message.as_str(),
        "fault options: unknown at \"later\"; expected one of load, prefill, decode"
    );
    let e = err(r#"{"faults": "panic"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("faults"), "{e}");
    let e = err(r#"{"fault": "leak", "leak_mb_per_step": -1}"#);
    assert!(e.message.contains("leak_mb_per_step"), "{e}");
    let e = err(r#"{"after_steps": -1}"#);
    assert!(e.message.contains("fault options"), "{e}");
    // a valid fault does not fire before the options are all checked
    let e = err(r#"{"fault": "panic", "at": "load", "bogus": 1}"#);
    assert!(e.message.contains("bogus"), "{e}");
    // unsupported dtype
    let mut s = spec(&dir);
    s.dtype = "f16".into();
    let e = FaultEngine.load(&s, &LoadOptions::default()).err().unwrap();
    assert!(e.is_unsupported(), "{e}");
}

/// Runs one fault in a child process (this test binary again, running only
/// [`child_fault`]), so abort, segfault and hang never touch this process.
fn spawn_child(fault: &str, at: &str) -> std::process::Child {
    use std::process::{Command, Stdio};
    // `ulimit -c 0`: no core files from the deliberate crashes.
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -c 0; exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_fault", "--nocapture", "--test-threads=1"])
        .env("EM_FAULT_CHILD", format!("{fault}@{at}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// Only does something in a child started by [`spawn_child`].
#[test]
fn child_fault() {
    let Ok(what) = std::env::var("EM_FAULT_CHILD") else {
        return;
    };
    let (fault, at) = what.split_once('@').unwrap();
    let dir = model_dir();
    let json = format!(r#"{{"fault": "{fault}", "at": "{at}", "after_steps": 1}}"#);
    let m = load_with(&dir, &json, BatchPolicy::None);
    let c = Arc::new(Collect::default());
    m.submit(vec![req(1, &[1], 5), req(2, &[1], 5)], c.sink())
        .unwrap();
    println!("submitted");
    c.wait(2);
    println!("survived");
}

#[test]
fn abort_and_segfault_kill_the_process_with_their_signal() {
    use std::os::unix::process::ExitStatusExt;
    for (fault, at, signal) in [
        ("abort", "load", 6),
        ("abort", "prefill", 6),
        ("abort", "decode", 6),
        ("segfault", "load", 11),
        ("segfault", "prefill", 11),
        ("segfault", "decode", 11),
    ] {
        let out = spawn_child(fault, at).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.signal(),
            Some(signal),
            "{fault}@{at}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(&format!("fault plugin: deliberate {fault} in {at}")),
            "{fault}@{at}: {stderr}"
        );
        assert!(!stdout.contains("survived"));
        if at == "load" {
            assert!(!stdout.contains("submitted"), "{stdout}");
        }
    }
}

#[test]
fn hang_never_returns() {
    use std::io::{BufRead, BufReader, Read};
    for at in ["load", "prefill", "decode"] {
        let mut child = spawn_child("hang", at);
        // Wait for the message (EOF if the child exits instead), then
        // check that it stays alive.
        let want = format!("fault plugin: hanging in {at}");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let mut line = String::new();
        while !line.contains(&want) {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push_str(&line);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        assert!(seen.contains(&want), "hang@{at}: {seen}");
        assert!(running, "hang@{at} exited: {stdout}\n{seen}");
        assert!(!stdout.contains("survived"));
    }
}
