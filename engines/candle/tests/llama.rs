//! The Llama family on candle against the naive reference forward pass of
//! `engine_matrix_test_support::llama` (GQA, llama3 RoPE scaling, Qwen2
//! bias, untied embeddings, head_dim 64), and its loading errors.

use engine_api::ModelSpec;
use engine_kit::testing::TempDir;
use engine_matrix_test_support::llama::{self, check_engine};

fn spec(dir: &std::path::Path, arch: &str, dtype: &str) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        architecture: arch.into(),
        path: dir.to_string_lossy().into_owned().into(),
        dtype: dtype.into(),
        quantization: "none".into(),
    }
}

#[test]
fn every_tiny_llama_matches_the_reference_on_one_and_two_threads() {
    for (name, cfg) in llama::configs() {
        let dir = TempDir::new(name);
        let w = llama::random_weights(&cfg, 7);
        llama::write_model(dir.path(), &cfg, &w);
        for threads in [1, 2] {
            let opts = format!(r#"{{"threads": {threads}}}"#);
            let mut b = em_candle::open(&spec(dir.path(), &cfg.model_type, "f32"), &opts)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let worst = check_engine(&mut b, name, &cfg, &w);
            eprintln!("{name}, {threads} threads: max |logit diff| {worst:.2e}");
        }
    }
}

#[test]
fn stock_kernels_and_f16_run_the_llama_family_too() {
    let (name, cfg) = llama::configs().remove(0);
    let dir = TempDir::new("llama-stock");
    let w = llama::random_weights(&cfg, 3);
    llama::write_model(dir.path(), &cfg, &w);
    let s = spec(dir.path(), "llama", "f32");
    let mut b = em_candle::open(&s, r#"{"threads": 1, "kernels": "stock"}"#).unwrap();
    check_engine(&mut b, name, &cfg, &w);
    // f16 computes in half precision: the greedy tokens of a short run
    // match f32's, the logits within f16's resolution.
    let mut f32b = em_candle::open(&s, "{}").unwrap();
    let mut f16b = em_candle::open(&spec(dir.path(), "llama", "f16"), "{}").unwrap();
    let prompt: Vec<u32> = (0..9).map(|i| i * 3 % 64).collect();
    let (a, la) = engine_matrix_test_support::greedy(&mut f32b, &prompt, 8);
    let (b16, lb) = engine_matrix_test_support::greedy(&mut f16b, &prompt, 8);
    let d = engine_matrix_test_support::max_abs_diff(&la[0], &lb[0]);
    assert!(d < 0.05, "f16 prefill logits differ by {d}");
    assert_eq!(a[..4], b16[..4], "f16 greedy tokens");
}

#[test]
fn broken_llama_folders_are_errors_naming_the_file_and_what_is_wrong() {
    let dir = TempDir::new("llama-broken");
    llama::broken_model(dir.path());
    llama::check_loading_errors(|arch| {
        em_candle::open(&spec(dir.path(), arch, "f32"), "{}").map(|_| ())
    });
    // no weights at all
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = em_candle::open(&spec(dir.path(), "llama", "f32"), "{}").unwrap_err();
    assert!(e.message.contains("model.safetensors: no such file"), "{e}");
}

#[test]
fn a_sharded_checkpoint_loads_like_a_single_file() {
    let cfg = engine_kit::llama::Config::tiny();
    let two = TempDir::new("llama-sharded");
    let w = llama::random_weights(&cfg, 5);
    llama::write_sharded(two.path(), &cfg, &w);
    let mut b = em_candle::open(&spec(two.path(), "llama", "f32"), "{}").unwrap();
    check_engine(&mut b, "sharded", &cfg, &w);
}

/// The kit's prefix cache on candle: one forward of the remaining tokens
/// over the copied cache (m queries over n + m keys), fused and stock
/// kernels, a GQA Llama and GPT-2.
#[test]
fn prefix_cache_hits_give_a_cold_runs_tokens() {
    let (name, cfg) = llama::configs().remove(0);
    let dir = TempDir::new("candle-llama-prefix");
    llama::write_model(dir.path(), &cfg, &llama::random_weights(&cfg, 5));
    for kernels in ["fused", "stock"] {
        let opts = format!(r#"{{"threads": 1, "kernels": "{kernels}"}}"#);
        let mut b = em_candle::open(&spec(dir.path(), &cfg.model_type, "f32"), &opts).unwrap();
        engine_matrix_test_support::prefix_cache_parity(
            &mut b,
            &format!("candle {name} {kernels}"),
        );
    }
    let gpt2 = engine_matrix_test_support::synthetic("tiny");
    let mut b = em_candle::open(
        &engine_matrix_test_support::spec(&gpt2),
        r#"{"threads": 2}"#,
    )
    .unwrap();
    engine_matrix_test_support::prefix_cache_parity(&mut b, "candle gpt2 tiny");
}
