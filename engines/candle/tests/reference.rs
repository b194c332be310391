//! candle's GPT-2 against an independent naive f32 forward pass.

mod common;

use common::*;
use em_candle::CandleEngine;
use engine_api::{Engine, LoadOptions};

#[test]
fn score_matches_naive_reference() {
    let (dir, cfg, w) = tiny_checkpoint(1);
    let model = CandleEngine::new()
        .load(&spec(dir.path(), "f32"), &LoadOptions::default())
        .unwrap();
    let mut rng = Rng::new(7);
    let tokens: Vec<u32> = (0..21).map(|_| rng.token(cfg.vocab_size)).collect();
    let got = model.score(&tokens).unwrap();
    assert_eq!(
        (got.rows as usize, got.vocab as usize),
        (tokens.len(), cfg.vocab_size)
    );
    let want = reference_logits(&cfg, &w, &tokens);
    let mut worst = 0f32;
    for (i, row) in want.iter().enumerate() {
        worst = worst.max(max_abs_diff(got.row(i), row));
    }
    let scale = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.5,
        "logits should not be trivially small ({scale})"
    );
    eprintln!("f32 max abs diff {worst:e}, logit scale {scale}");
    assert!(worst < 1e-4, "max abs diff {worst} (logit scale {scale})");
}

#[test]
fn stock_candle_kernels_match_reference_and_fused_kernels() {
    let (dir, cfg, w) = tiny_checkpoint(8);
    let load = |kernels: &str| {
        let opts = LoadOptions {
            options_json: format!(r#"{{"kernels": "{kernels}", "threads": 2}}"#).into(),
            ..LoadOptions::default()
        };
        CandleEngine::new()
            .load(&spec(dir.path(), "f32"), &opts)
            .unwrap()
    };
    let (stock, fused) = (load("stock"), load("fused"));
    let mut rng = Rng::new(9);
    let tokens: Vec<u32> = (0..19).map(|_| rng.token(cfg.vocab_size)).collect();
    let (s, f) = (stock.score(&tokens).unwrap(), fused.score(&tokens).unwrap());
    let want = reference_logits(&cfg, &w, &tokens);
    for (i, row) in want.iter().enumerate() {
        assert!(max_abs_diff(s.row(i), row) < 1e-4, "stock row {i}");
        assert!(
            max_abs_diff(s.row(i), f.row(i)) < 1e-4,
            "stock vs fused row {i}"
        );
    }
}

#[test]
fn f16_score_is_close_to_reference() {
    let (dir, cfg, w) = tiny_checkpoint(2);
    let model = CandleEngine::new()
        .load(&spec(dir.path(), "f16"), &LoadOptions::default())
        .unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| (i * 7 % cfg.vocab_size) as u32).collect();
    let got = model.score(&tokens).unwrap();
    let want = reference_logits(&cfg, &w, &tokens);
    let worst = (0..tokens.len())
        .map(|i| max_abs_diff(got.row(i), &want[i]))
        .fold(0f32, f32::max);
    eprintln!("f16 max abs diff {worst:e}");
    assert!(worst < 5e-2, "f16 max abs diff {worst}");
}

#[test]
fn bf16_score_is_close_to_reference() {
    // candle 0.11.1 runs bf16 matmuls on the CPU by widening to f32, so bf16
    // works (slowly); check it is right, with bf16's 8-bit mantissa.
    let (dir, cfg, w) = tiny_checkpoint(3);
    let model = CandleEngine::new()
        .load(&spec(dir.path(), "bf16"), &LoadOptions::default())
        .unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| (i * 5 % cfg.vocab_size) as u32).collect();
    let got = model.score(&tokens).unwrap();
    let want = reference_logits(&cfg, &w, &tokens);
    let worst = (0..tokens.len())
        .map(|i| max_abs_diff(got.row(i), &want[i]))
        .fold(0f32, f32::max);
    eprintln!("bf16 max abs diff {worst:e}");
    assert!(worst < 0.25, "bf16 max abs diff {worst}");
}

#[test]
fn single_thread_pool_matches_reference() {
    let (dir, cfg, w) = tiny_checkpoint(4);
    let opts = LoadOptions {
        options_json: r#"{"threads": 1, "device": "cpu"}"#.into(),
        ..LoadOptions::default()
    };
    let model = CandleEngine::new()
        .load(&spec(dir.path(), "f32"), &opts)
        .unwrap();
    let tokens = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let got = model.score(&tokens).unwrap();
    let want = reference_logits(&cfg, &w, &tokens);
    for (i, row) in want.iter().enumerate() {
        assert!(max_abs_diff(got.row(i), row) < 1e-4);
    }
}

#[test]
fn exact_gelu_activation_matches_reference() {
    // HF's "gelu" is the erf form, not gelu_new's tanh approximation
    let cfg = em_candle::gpt2::Config {
        activation_function: "gelu".into(),
        ..tiny_config()
    };
    let w = random_weights(&cfg, 5);
    let dir = TempDir::new("gelu-erf");
    write_checkpoint(dir.path(), &cfg, &w, "");
    let model = CandleEngine::new()
        .load(&spec(dir.path(), "f32"), &LoadOptions::default())
        .unwrap();
    let tokens: Vec<u32> = (0..15).map(|i| (i * 11 % 96) as u32).collect();
    let got = model.score(&tokens).unwrap();
    let want = reference_logits(&cfg, &w, &tokens);
    let worst = (0..tokens.len())
        .map(|i| max_abs_diff(got.row(i), &want[i]))
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "max abs diff {worst}");
    let tanh_cfg = tiny_config();
    let tanh_want = reference_logits(&tanh_cfg, &w, &tokens);
    let gap = (0..tokens.len())
        .map(|i| max_abs_diff(&tanh_want[i], &want[i]))
        .fold(0f32, f32::max);
    assert!(
        gap > 10.0 * worst,
        "the two gelus should differ visibly ({gap})"
    );
}

/// Every decode kernel (gemm, the register kernels, and `auto`'s measured
/// choices) gives the reference's logits at each decode step, of one
/// sequence and of three decoded together, and the model says which
/// kernels each shape runs.
#[test]
fn every_decode_kernel_matches_the_reference_at_batch_1_and_3() {
    use engine_kit::{Backend, Kernels};
    let (dir, cfg, w) = tiny_checkpoint(11);
    let mut rng = Rng::new(12);
    let tokens: Vec<u32> = (0..14).map(|_| rng.token(cfg.vocab_size)).collect();
    let want = reference_logits(&cfg, &w, &tokens);
    for kernels in ["fused", "gemv", "auto"] {
        let opts = format!(r#"{{"kernels": "{kernels}", "threads": 2}}"#);
        let mut b = em_candle::open(&spec(dir.path(), "f32"), &opts).unwrap();
        let mut logits = Vec::new();
        b.prefill(&[(1, &tokens[..4])], &mut logits).unwrap();
        assert!(max_abs_diff(&logits, &want[3]) < 1e-4, "{kernels} prefill");
        for (i, &t) in tokens.iter().enumerate().skip(4) {
            b.decode(&[(1, t)], &mut logits).unwrap();
            let d = max_abs_diff(&logits, &want[i]);
            assert!(d < 1e-4, "{kernels} decode step {i}: max abs diff {d}");
        }
        // batched decode (the small-batch kernels): three sequences
        let v = cfg.vocab_size;
        let seqs: Vec<Vec<u32>> = (0..3)
            .map(|_| (0..10).map(|_| rng.token(v)).collect())
            .collect();
        let wants: Vec<_> = seqs.iter().map(|s| reference_logits(&cfg, &w, s)).collect();
        let prompts: Vec<(u64, &[u32])> = (0..3).map(|j| (10 + j as u64, &seqs[j][..3])).collect();
        b.prefill(&prompts, &mut logits).unwrap();
        for i in 3..10 {
            let step: Vec<(u64, u32)> = (0..3).map(|j| (10 + j as u64, seqs[j][i])).collect();
            b.decode(&step, &mut logits).unwrap();
            for (j, want) in wants.iter().enumerate() {
                let d = max_abs_diff(&logits[j * v..(j + 1) * v], &want[i]);
                assert!(d < 1e-4, "{kernels} batch-3 step {i} seq {j}: {d}");
            }
        }
        let described: serde_json::Value = serde_json::from_str(&b.kernels().describe()).unwrap();
        let ran = &described["kernels"];
        let by = ran["by"].as_str().unwrap_or_default();
        let shapes = ran["shapes"].as_array().cloned().unwrap_or_default();
        // c_attn, attn c_proj, c_fc, mlp c_proj, lm_head: distinct shapes
        let h = cfg.n_embd;
        let distinct: std::collections::BTreeSet<_> = [
            (h, 3 * h),
            (h, h),
            (h, 4 * h),
            (4 * h, h),
            (h, cfg.vocab_size),
        ]
        .into();
        assert_eq!(shapes.len(), distinct.len(), "{kernels}: {ran}");
        let all = |k: &str| shapes.iter().all(|s| s["kernel"] == k);
        let all_small = |k: &str| shapes.iter().all(|s| s["small_batch_kernel"] == k);
        match kernels {
            "fused" => assert!(
                by.starts_with("forced") && all("gemm") && all_small("gemm"),
                "{ran}"
            ),
            "gemv" => assert!(
                by.starts_with("forced") && all("gemv") && all_small("rows"),
                "{ran}"
            ),
            _ => {
                assert!(by.starts_with("auto: measured"), "{ran}");
                for s in &shapes {
                    let (v, m) = (s["gemv_us"].as_f64(), s["gemm_us"].as_f64());
                    assert!(
                        v.is_some_and(|v| v > 0.0) && m.is_some_and(|m| m > 0.0),
                        "{s}"
                    );
                    let faster = if v < m { "gemv" } else { "gemm" };
                    assert_eq!(s["kernel"], faster, "{s}");
                    let (r, g) = (s["rows_us"].as_f64(), s["gemm_small_us"].as_f64());
                    assert!(r.is_some_and(|r| r > 0.0) && g.is_some_and(|g| g > 0.0));
                    let faster = if r < g { "rows" } else { "gemm" };
                    assert_eq!(s["small_batch_kernel"], faster, "{s}");
                }
            }
        }
    }
}
