//! The ONNX graph built from the safetensors checkpoint computes what the
//! candle engine computes: 64 greedy steps give the same tokens and every
//! logit is within 1e-3, on the tiny config and on full-size GPT-2 (the
//! checks are in `engine_matrix_test_support`, shared with the torch engine).

mod common;
use common::*;

#[test]
fn tiny_64_greedy_steps_match_candle() {
    let worst = greedy_parity(
        &mut onnx(&synthetic("tiny"), r#"{"threads":1}"#),
        "tiny",
        12,
        1,
    );
    eprintln!("tiny: max |logit diff| {worst:.2e}");
}

#[test]
fn gpt2_64_greedy_steps_match_candle() {
    let worst = greedy_parity(
        &mut onnx(&synthetic("gpt2"), r#"{"threads":2}"#),
        "gpt2",
        16,
        2,
    );
    eprintln!("gpt2: max |logit diff| {worst:.2e}");
}

#[test]
fn batched_decode_with_changing_sets_matches_candle() {
    batched_parity(&mut onnx(&synthetic("tiny"), r#"{"threads":1}"#));
}

#[test]
fn scheduler_policies_generate_like_score() {
    let dir = synthetic("tiny");
    policies_parity(|| onnx(&dir, r#"{"threads":1}"#));
}

/// The kit's prefix cache on ONNX Runtime: the graph runs the remaining
/// tokens over a copied cache (its causal mask puts them after the past).
#[test]
fn prefix_cache_hits_give_a_cold_runs_tokens() {
    prefix_cache_parity(
        &mut onnx(&synthetic("tiny"), r#"{"threads":1}"#),
        "onnx tiny",
    );
}
