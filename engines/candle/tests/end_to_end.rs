//! The plugin driven like the host drives it: `Engine::load` (which starts
//! engine-kit's scheduler), `submit` with a sink, greedy generation checked
//! against a score-based greedy loop.

mod common;

use common::*;
use em_candle::CandleEngine;
use engine_api::{
    BatchPolicy, Engine, ErrorKind, FinishReason, LoadOptions, Model, Request, Sampling,
};
use std::sync::Arc;

fn req(id: u64, prompt: &[u32], n: u32) -> Request {
    Request {
        id,
        prompt: prompt.to_vec().into(),
        max_new_tokens: n,
        sampling: Sampling::GREEDY,
        ignore_eos: true,
    }
}

/// Greedy continuation computed with `score` only (no cache).
fn greedy_by_score(m: &dyn Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut t = prompt.to_vec();
    for _ in 0..n {
        let l = m.score(&t).unwrap();
        t.push(argmax(l.row(t.len() - 1)));
    }
    t[prompt.len()..].to_vec()
}

fn prompts() -> Vec<Vec<u32>> {
    let mut rng = Rng::new(31);
    [4usize, 9, 9, 17, 2]
        .iter()
        .map(|&n| (0..n).map(|_| rng.token(96)).collect())
        .collect()
}

fn run_policy(policy: BatchPolicy) {
    let (dir, _, _) = tiny_checkpoint(30);
    let opts = LoadOptions {
        batch_policy: policy,
        max_batch: 4,
        options_json: r#"{"threads": 2}"#.into(),
    };
    let m = CandleEngine::new()
        .load(&spec(dir.path(), "f32"), &opts)
        .unwrap();
    let ps = prompts();
    let c = Arc::new(Collect::default());
    m.submit(
        ps.iter()
            .enumerate()
            .map(|(i, p)| req(i as u64, p, 16))
            .collect(),
        c.sink(),
    )
    .unwrap();
    c.wait(ps.len());
    assert!(
        c.errors.lock().unwrap().is_empty(),
        "{:?}",
        c.errors.lock().unwrap()
    );
    for (i, p) in ps.iter().enumerate() {
        assert_eq!(
            c.tokens_of(i as u64),
            greedy_by_score(m.as_ref(), p, 16),
            "{policy:?}: request {i}"
        );
    }
    let done = c.done.lock().unwrap();
    assert!(done
        .iter()
        .all(|d| d.generated_tokens == 16 && d.finish_reason == FinishReason::Length));
    let mem = m.memory();
    assert!(mem.weight_bytes > 0);
    assert_eq!(mem.kv_cache_used_bytes, 0, "caches are freed");
    assert!(mem.kv_cache_peak_bytes > 0, "peak seen while running");
}

#[test]
fn continuous_batching_generates_like_score() {
    run_policy(BatchPolicy::Continuous);
}

#[test]
fn static_batching_generates_like_score() {
    run_policy(BatchPolicy::Static);
}

#[test]
fn no_batching_generates_like_score() {
    run_policy(BatchPolicy::None);
}

#[test]
fn eos_context_and_sampling() {
    let (dir, cfg, _) = tiny_checkpoint(32);
    let m = CandleEngine::new()
        .load(&spec(dir.path(), "f32"), &LoadOptions::default())
        .unwrap();
    let c = Arc::new(Collect::default());
    // context of 128: 120 + 20 is refused up front
    let e = m.submit(vec![req(1, &[1; 120], 20)], c.sink()).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    // seeded sampling is reproducible through the plugin
    let sampled = |seed| {
        let c = Arc::new(Collect::default());
        let mut r = req(2, &[3, 4, 5], 12);
        r.sampling = Sampling {
            temperature: 0.9,
            top_k: 20,
            top_p: 0.95,
            seed,
        };
        m.submit(vec![r], c.sink()).unwrap();
        c.wait(1);
        c.tokens_of(2)
    };
    assert_eq!(sampled(7), sampled(7));
    let e = m.score(&[500]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);

    // stop at eos when it is not ignored: same weights, with the greedy
    // second token declared as eos
    let greedy = greedy_by_score(m.as_ref(), &[9, 9], 3);
    let cfg = em_candle::gpt2::Config {
        eos_token_id: Some(greedy[1]),
        ..cfg
    };
    let dir2 = TempDir::new("eos");
    write_checkpoint(dir2.path(), &cfg, &random_weights(&cfg, 32), "");
    let m2 = CandleEngine::new()
        .load(&spec(dir2.path(), "f32"), &LoadOptions::default())
        .unwrap();
    let mut r = req(3, &[9, 9], 10);
    r.ignore_eos = false;
    let c = Arc::new(Collect::default());
    m2.submit(vec![r], c.sink()).unwrap();
    c.wait(1);
    let stop = greedy.iter().position(|&t| t == greedy[1]).unwrap_or(1);
    assert_eq!(c.tokens_of(3), greedy[..=stop].to_vec());
    let done = c.done.lock().unwrap();
    assert_eq!(done[0].finish_reason, FinishReason::Eos);
    drop(dir);
}
