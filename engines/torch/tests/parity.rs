//! GPT-2 on libtorch computes what the candle engine computes: 64 greedy
//! steps give the same tokens and every logit is within 1e-3, on the tiny
//! config and on full-size GPT-2 (checks shared with the onnx engine, in
//! `engine_matrix_test_support`), with both linear-layer kernels (`matmul`:
//! oneDNN, the f32 CPU default, and `addmm`); plus loading errors and
//! dtypes.

use em_torch::TorchBackend;
use engine_api::ErrorKind;
use engine_kit::Backend;
use engine_matrix_test_support::*;
use std::path::Path;

fn torch(dir: &Path, options: &str) -> TorchBackend {
    em_torch::open(&spec(dir), options)
        .unwrap_or_else(|e| panic!("torch engine failed to load {}: {e}", dir.display()))
}

const MATMULS: [&str; 2] = ["onednn", "addmm"];

#[test]
fn tiny_64_greedy_steps_match_candle() {
    for mm in MATMULS {
        let o = format!(r#"{{"threads":1,"matmul":"{mm}"}}"#);
        let worst = greedy_parity(&mut torch(&synthetic("tiny"), &o), "tiny", 12, 1);
        eprintln!("tiny, {mm}: max |logit diff| {worst:.2e}");
    }
}

#[test]
fn gpt2_64_greedy_steps_match_candle() {
    for mm in MATMULS {
        let o = format!(r#"{{"threads":2,"matmul":"{mm}"}}"#);
        let worst = greedy_parity(&mut torch(&synthetic("gpt2"), &o), "gpt2", 16, 2);
        eprintln!("gpt2, {mm}: max |logit diff| {worst:.2e}");
    }
}

#[test]
fn batched_decode_with_changing_sets_matches_candle() {
    for mm in MATMULS {
        let o = format!(r#"{{"threads":1,"matmul":"{mm}"}}"#);
        batched_parity(&mut torch(&synthetic("tiny"), &o));
    }
}

/// f32 on the CPU defaults to `auto`: for each layer class, the kernel
/// measured faster for its shape on this machine (then cached) at the
/// load's batch (one row for `max_batch` 1, eight rows above), which
/// `describe()` names with the timings; an explicit option forces one
/// kernel for all; every choice holds the same weights.
#[test]
fn matmul_defaults_to_the_kernel_measured_faster_here() {
    let dir = synthetic("tiny");
    // 3 threads: no other test loads with 3, so no other test writes or
    // reads this cache entry while this one runs
    let shapes = em_torch::autotune_shapes(&dir);
    let _ = std::fs::remove_file(em_torch::autotune::cache_file(&shapes, 3));
    let desc = |b: &TorchBackend| -> serde_json::Value {
        serde_json::from_str(&b.describe()).expect("describe() is JSON")
    };
    let first = torch(&dir, r#"{"threads":3}"#);
    let d = desc(&first);
    let chosen = d["matmul"].as_str().unwrap().to_string();
    assert!(
        ["onednn", "addmm", "mixed"].contains(&chosen.as_str()),
        "{d}"
    );
    assert_eq!(d["chosen"]["by"], "auto: measured at load", "{d}");
    let timings = d["chosen"]["us_per_token_batch1_batch8"]
        .as_array()
        .unwrap();
    assert_eq!(timings.len(), 2, "{d}");
    // each layer class runs the kernel with the lower per-token time at
    // the load's batch: one row here (`open` loads for max_batch 1)
    let classes = d["chosen"]["per_class"].as_array().unwrap();
    assert_eq!(classes.len(), 5, "{d}");
    let names = ["attn_in", "attn_out", "mlp_in", "mlp_out", "lm_head"];
    let faster = |c: &serde_json::Value, at: usize| {
        if c["addmm_us"][at].as_f64().unwrap() < c["onednn_us"][at].as_f64().unwrap() {
            "addmm"
        } else {
            "onednn"
        }
    };
    for (c, name) in classes.iter().zip(names) {
        assert_eq!(c["kernel"], faster(c, 0), "{c}");
        assert_eq!(d["kernels"][name], faster(c, 0), "{d}");
    }
    // a load for batches of 8 decides from the same (cached) timings'
    // eight-row column
    let b8 = desc(&em_torch::open_for(&spec(&dir), r#"{"threads":3}"#, 8).unwrap());
    assert_eq!(
        b8["chosen"]["by"],
        "auto: measured earlier on this machine (cached)"
    );
    for (c, name) in b8["chosen"]["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .zip(names)
    {
        assert_eq!(c["kernel"], faster(c, 1), "{c}");
        assert_eq!(b8["kernels"][name], faster(c, 1), "{b8}");
    }
    let uniform = classes.iter().all(|c| c["kernel"] == classes[0]["kernel"]);
    assert_eq!(
        chosen == "mixed",
        !uniform,
        "`mixed` names a split choice: {d}"
    );
    let dbg = format!("{first:?}");
    for c in classes {
        let k = if c["kernel"] == "onednn" {
            "OneDnn"
        } else {
            "Addmm"
        };
        assert!(dbg.contains(k), "{dbg}");
    }
    // the next load reads the choice back
    let again = desc(&torch(&dir, r#"{"threads":3,"matmul":"auto"}"#));
    assert_eq!(again["matmul"], chosen.as_str());
    assert_eq!(
        again["chosen"]["by"],
        "auto: measured earlier on this machine (cached)"
    );
    // an explicit kernel is used as asked
    let a = torch(&dir, r#"{"threads":1,"matmul":"addmm"}"#);
    assert!(format!("{a:?}").contains("Addmm"), "{a:?}");
    assert_eq!(desc(&a)["chosen"]["by"], "the matmul option");
    assert_eq!(first.memory().weight_bytes, a.memory().weight_bytes);
}

#[test]
fn scheduler_policies_generate_like_score() {
    let dir = synthetic("tiny");
    policies_parity(|| torch(&dir, r#"{"threads":1}"#));
}

/// f16 and bf16 run (libtorch's CPU kernels have them) and stay close to
/// f32: the same greedy tokens for a few steps on the tiny model.
#[test]
fn half_precision_dtypes_load_and_track_f32() {
    let dir = synthetic("tiny");
    let mut f32m = torch(&dir, r#"{"threads":1}"#);
    let prompt: Vec<u32> = (0..10).map(|i| i * 37 % 1000).collect();
    let (want, wl) = greedy(&mut f32m, &prompt, 4);
    for dtype in ["f16", "bf16"] {
        let mut s = spec(&dir);
        s.dtype = dtype.into();
        let mut m = em_torch::open(&s, r#"{"threads":1}"#).unwrap();
        let (got, gl) = greedy(&mut m, &prompt, 4);
        let d = max_abs_diff(&wl[0], &gl[0]);
        assert!(d < 0.5, "{dtype}: first logits differ by {d}");
        assert_eq!(got[0], want[0], "{dtype}: first token");
        assert!(
            m.memory().weight_bytes * 2 == f32m.memory().weight_bytes,
            "{dtype}: weights are 2 bytes each"
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = synthetic("tiny");
    let err = |s: &engine_api::ModelSpec, o: &str| match em_torch::open(s, o) {
        Ok(_) => panic!("{o} should fail"),
        Err(e) => e,
    };
    let e = err(&spec(&dir), r#"{"threads":1,"turbo":true}"#);
    assert!(e.message.contains("turbo"), "{e}");
    let e = err(&spec(&dir), r#"{"matmul":"blas"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message.contains("matmul") && e.message.contains("blas"),
        "{e}"
    );
    let mut s = spec(&dir);
    s.dtype = "bf16".into();
    let e = err(&s, r#"{"matmul":"onednn"}"#);
    assert!(e.is_unsupported() && e.message.contains("onednn"), "{e}");
    let e = err(&spec(&dir), r#"{"device":"tpu"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    // the provisioned libtorch is CPU-only
    let e = err(&spec(&dir), r#"{"device":"cuda"}"#);
    assert!(e.is_unsupported() && e.message.contains("CUDA"), "{e}");
    let mut s = spec(&dir);
    s.dtype = "f8".into();
    assert!(err(&s, "{}").is_unsupported());
    let mut s = spec(&dir);
    s.quantization = "q4_0".into();
    assert!(err(&s, "{}").is_unsupported());
    let t = engine_kit::testing::TempDir::new("torch-noweights");
    std::fs::copy(dir.join("config.json"), t.path().join("config.json")).unwrap();
    let e = err(&spec(t.path()), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(e.message.contains("model.safetensors"), "{e}");
    // a safetensors file whose tensor is cut short
    std::fs::write(
        t.path().join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    )
    .unwrap();
    let e = err(&spec(t.path()), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
}

#[test]
fn score_rejects_bad_tokens_without_panicking() {
    let mut m = torch(&synthetic("tiny"), r#"{"threads":1}"#);
    assert!(m.score(&[5000]).is_err());
    assert!(m.score(&[]).is_err());
    let mut l = Vec::new();
    assert!(m.decode(&[(77, 1)], &mut l).is_err(), "unknown sequence");
    m.prefill(&[(1, &[1, 2, 3])], &mut l).unwrap();
    assert!(
        m.decode(&[(1, 99_999)], &mut l).is_err(),
        "token outside the vocabulary"
    );
    m.decode(&[(1, 4)], &mut l).unwrap();
}

/// The kit's prefix cache on libtorch (an explicit `[m, n]` causal mask
/// for the queries after the copied cache), with both matmul paths.
#[test]
fn prefix_cache_hits_give_a_cold_runs_tokens() {
    for mm in MATMULS {
        let o = format!(r#"{{"threads":1,"matmul":"{mm}"}}"#);
        prefix_cache_parity(
            &mut torch(&synthetic("tiny"), &o),
            &format!("torch tiny {mm}"),
        );
    }
}

/// `auto` may give each layer class its own kernel: a model that mixes
/// them scores like the model on one kernel, GPT-2 (Conv1D weights and the
/// tied head's two layouts) and a tiny Llama (`nn.Linear` weights).
#[test]
fn a_model_mixing_kernels_per_layer_class_scores_like_one_kernel() {
    use em_torch::linear::{Kernels, MatMul};
    use engine_kit::arch::{read_config, weight_files, ModelConfig};
    use engine_kit::checkpoint::Checkpoint;
    use tch::{Device, Kind};
    let llama_dir = engine_kit::testing::TempDir::new("torch-mixed");
    let (_, cfg) = llama::configs().remove(0);
    llama::write_model(llama_dir.path(), &cfg, &llama::random_weights(&cfg, 5));
    let (o, a) = (MatMul::OneDnn, MatMul::Addmm);
    let mixes = [
        Kernels {
            attn_in: o,
            attn_out: a,
            mlp_in: o,
            mlp_out: a,
            head: a,
        },
        Kernels {
            attn_in: a,
            attn_out: o,
            mlp_in: a,
            mlp_out: o,
            head: o,
        },
    ];
    for (dir, arch) in [
        (synthetic("tiny"), "gpt2"),
        (llama_dir.path().to_path_buf(), cfg.model_type.as_str()),
    ] {
        let mcfg = read_config(&dir, arch).unwrap();
        let ck = Checkpoint::open_model(&weight_files(&dir).unwrap(), &mcfg).unwrap();
        let tokens: Vec<u32> = (0..9).map(|i| i * 13 % 50).collect();
        let score = |k: Kernels| -> tch::Tensor {
            let _g = tch::no_grad_guard();
            match &mcfg {
                ModelConfig::Gpt2(c) => {
                    em_torch::gpt2::Gpt2::new(c, &ck, Kind::Float, Device::Cpu, k)
                        .unwrap()
                        .score(&tokens)
                        .unwrap()
                }
                ModelConfig::Llama(c) => {
                    em_torch::llama::Llama::new(c, &ck, Kind::Float, Device::Cpu, k)
                        .unwrap()
                        .score(&tokens)
                        .unwrap()
                }
            }
        };
        let want = score(Kernels::all(a));
        for k in mixes {
            let d = (score(k) - &want).abs().max().double_value(&[]);
            assert!(d < 1e-4, "{arch} {k:?}: max |logit diff| {d}");
        }
    }
}
