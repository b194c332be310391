//! Prefill + decode with the KV cache must reproduce `score`'s logits.

mod common;

use common::*;
use em_candle::CandleBackend;
use engine_kit::Backend;

const TOL: f32 = 1e-4;

fn backend(seed: u64, threads: usize) -> (TempDir, CandleBackend) {
    let (dir, _, _) = tiny_checkpoint(seed);
    let opts = format!(r#"{{"threads": {threads}}}"#);
    let b = em_candle::open(&spec(dir.path(), "f32"), &opts).unwrap();
    (dir, b)
}

/// Prefills `prompts` (ids 0..), then decodes `steps` greedy tokens for all
/// of them in one batch per step; checks every row of logits against
/// `score` of the sequence so far.
fn check_generation(b: &mut CandleBackend, prompts: &[Vec<u32>], steps: usize) {
    let vocab = b.vocab_size();
    let seqs: Vec<(u64, &[u32])> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, p.as_slice()))
        .collect();
    let mut logits = Vec::new();
    b.prefill(&seqs, &mut logits).unwrap();
    assert_eq!(logits.len(), prompts.len() * vocab);
    let mut texts: Vec<Vec<u32>> = prompts.to_vec();
    // rows[i][k]: logits after sequence i has prompt + k generated tokens
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    for step in 0..=steps {
        for (i, row) in logits.chunks(vocab).enumerate() {
            rows[i].push(row.to_vec());
            texts[i].push(argmax(row));
        }
        if step == steps {
            break;
        }
        let batch: Vec<(u64, u32)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u64, *t.last().unwrap()))
            .collect();
        b.decode(&batch, &mut logits).unwrap();
    }
    for (i, t) in texts.iter().enumerate() {
        // the last greedy token was never fed back
        let fed = &t[..t.len() - 1];
        let scored = b.score(fed).unwrap();
        let p = prompts[i].len();
        for (k, row) in rows[i].iter().enumerate() {
            let d = max_abs_diff(row, scored.row(p - 1 + k));
            assert!(
                d < TOL,
                "sequence {i} (prompt {p}), step {k}: cached logits differ from score by {d}"
            );
        }
    }
    let mem = b.memory();
    let per_token = b.kernels().model().kv_bytes_per_token() as u64;
    let live: u64 = texts.iter().map(|t| t.len() as u64 - 1).sum();
    assert_eq!(mem.kv_cache_used_bytes, live * per_token);
    assert!(mem.kv_cache_reserved_bytes >= mem.kv_cache_used_bytes);
    for i in 0..prompts.len() {
        b.free(i as u64);
    }
    let after = b.memory();
    assert_eq!(after.kv_cache_used_bytes, 0);
    // freed buffers are pooled for reuse, and still count as reserved
    assert!(after.kv_cache_reserved_bytes <= mem.kv_cache_reserved_bytes + per_token * 128);
}

#[test]
fn batched_decode_of_different_lengths_matches_score() {
    let (_dir, mut b) = backend(11, 2);
    let mut rng = Rng::new(5);
    let prompts: Vec<Vec<u32>> = [1usize, 5, 13, 20]
        .iter()
        .map(|&n| (0..n).map(|_| rng.token(96)).collect())
        .collect();
    check_generation(&mut b, &prompts, 16);
    // again, on recycled (not re-zeroed) cache buffers
    let prompts: Vec<Vec<u32>> = [7usize, 2, 30]
        .iter()
        .map(|&n| (0..n).map(|_| rng.token(96)).collect())
        .collect();
    check_generation(&mut b, &prompts, 16);
}

#[test]
fn batched_prefill_of_equal_lengths_matches_score() {
    let (_dir, mut b) = backend(12, 2);
    let mut rng = Rng::new(6);
    let prompts: Vec<Vec<u32>> = (0..3)
        .map(|_| (0..9).map(|_| rng.token(96)).collect())
        .collect();
    check_generation(&mut b, &prompts, 16);
}

#[test]
fn mixed_lengths_in_one_prefill_keep_their_order() {
    // groups of equal length are batched; rows must come back in the
    // caller's order.
    let (_dir, mut b) = backend(13, 1);
    let mut rng = Rng::new(8);
    let prompts: Vec<Vec<u32>> = [7usize, 3, 7, 3, 11]
        .iter()
        .map(|&n| (0..n).map(|_| rng.token(96)).collect())
        .collect();
    check_generation(&mut b, &prompts, 4);
}

#[test]
fn cache_grows_past_its_first_capacity() {
    // capacity starts at the prompt rounded up to 64 tokens and doubles.
    let (_dir, mut b) = backend(14, 2);
    let prompts = vec![vec![1u32, 2, 3], (0..60).map(|i| i % 96).collect()];
    check_generation(&mut b, &prompts, 60);
    // 60 + 61 tokens: 64 -> 128 tokens of capacity (the context)
}

#[test]
fn context_limit_and_bad_input_are_errors_not_panics() {
    let (_dir, mut b) = backend(15, 2);
    let mut logits = Vec::new();
    let too_long = vec![1u32; 129];
    assert!(b.prefill(&[(1, &too_long)], &mut logits).is_err());
    assert!(b.prefill(&[(1, &[500])], &mut logits).is_err());
    assert!(b.decode(&[(42, 1)], &mut logits).is_err());
    let full = vec![1u32; 128];
    b.prefill(&[(2, &full)], &mut logits).unwrap();
    let e = b.decode(&[(2, 1)], &mut logits).unwrap_err();
    assert!(e.message.contains("context"), "{e}");
    assert!(
        !e.message.contains("backtrace") && e.message.lines().count() == 1,
        "{e}"
    );
    assert!(
        b.prefill(&[(2, &[1])], &mut logits).is_err(),
        "duplicate id"
    );
}
