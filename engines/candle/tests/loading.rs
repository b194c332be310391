//! Loading: checkpoint variants, clear errors, options, engine info.

mod common;

use common::*;
use em_candle::CandleEngine;
use engine_api::{Engine, EngineError, ErrorKind, LoadOptions, ModelSpec};

fn load(spec: &ModelSpec, options_json: &str) -> Result<Box<dyn engine_api::Model>, EngineError> {
    let opts = LoadOptions {
        options_json: options_json.into(),
        ..LoadOptions::default()
    };
    CandleEngine::new().load(spec, &opts)
}

fn load_err(spec: &ModelSpec, options_json: &str) -> EngineError {
    match load(spec, options_json) {
        Ok(_) => panic!("load should fail"),
        Err(e) => e,
    }
}

#[test]
fn transformer_prefixed_checkpoint_loads_and_matches() {
    let cfg = tiny_config();
    let w = random_weights(&cfg, 21);
    let plain = TempDir::new("plain");
    let prefixed = TempDir::new("prefixed");
    write_checkpoint(plain.path(), &cfg, &w, "");
    write_checkpoint(prefixed.path(), &cfg, &w, "transformer.");
    let a = load(&spec(plain.path(), "f32"), "{}").unwrap();
    let b = load(&spec(prefixed.path(), "f32"), "{}").unwrap();
    let tokens = [5u32, 6, 7, 8];
    assert_eq!(a.score(&tokens).unwrap(), b.score(&tokens).unwrap());
}

#[test]
fn missing_tensor_is_named() {
    let cfg = tiny_config();
    let mut w = random_weights(&cfg, 22);
    w.remove("h.1.mlp.c_fc.bias");
    let dir = TempDir::new("missing-tensor");
    write_checkpoint(dir.path(), &cfg, &w, "transformer.");
    let e = load_err(&spec(dir.path(), "f32"), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(e.message.contains("model.safetensors"), "{e}");
    assert!(e.message.contains("transformer.h.1.mlp.c_fc.bias"), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let cfg = tiny_config();
    let mut w = random_weights(&cfg, 23);
    // a [out, in] (nn.Linear-style) c_attn instead of HF's Conv1D [in, out]
    w.get_mut("h.0.attn.c_attn.weight").unwrap().0 = vec![3 * cfg.n_embd, cfg.n_embd];
    let dir = TempDir::new("wrong-shape");
    write_checkpoint(dir.path(), &cfg, &w, "");
    let e = load_err(&spec(dir.path(), "f32"), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(e.message.contains("h.0.attn.c_attn.weight"), "{e}");
    assert!(
        e.message.contains("[96, 32]") && e.message.contains("[32, 96]"),
        "{e}"
    );
}

#[test]
fn missing_files_and_bad_json_are_named() {
    let (dir, _, _) = tiny_checkpoint(24);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(&spec(dir.path(), "f32"), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(e.message.contains("model.safetensors"), "{e}");

    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load_err(&spec(dir.path(), "f32"), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(e.message.contains("config.json"), "{e}");

    std::fs::write(dir.path().join("config.json"), "{\"n_embd\": 32,").unwrap();
    let e = load_err(&spec(dir.path(), "f32"), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(
        e.message.contains("config.json") && e.message.contains("JSON"),
        "{e}"
    );

    std::fs::write(
        dir.path().join("config.json"),
        r#"{"n_embd": 30, "n_head": 4}"#,
    )
    .unwrap();
    let e = load_err(&spec(dir.path(), "f32"), "{}");
    assert!(e.message.contains("multiple of n_head"), "{e}");

    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let e = load_err(&spec(dir.path(), "f32"), "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(e.message.contains("model.safetensors"), "{e}");
}

#[test]
fn unsupported_requests_say_why() {
    let (dir, _, _) = tiny_checkpoint(25);
    let mut s = spec(dir.path(), "f32");
    s.quantization = "int8".into();
    let e = load_err(&s, "{}");
    assert!(e.is_unsupported(), "{e}");
    assert!(e.message.contains("int8"), "{e}");

    let mut s = spec(dir.path(), "f32");
    s.architecture = "mamba".into();
    let e = load_err(&s, "{}");
    assert!(e.is_unsupported() && e.message.contains("mamba"), "{e}");
    // a GPT-2 folder declared as a Llama is not run as either
    s.architecture = "llama".into();
    let e = load_err(&s, "{}");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(
        e.message.contains(
            "model_type is \"gpt2\", but the model is declared as architecture \"llama\""
        ),
        "{e}"
    );

    let e = load_err(&spec(dir.path(), "f8"), "{}");
    assert!(e.is_unsupported() && e.message.contains("f8"), "{e}");

    let cfg = em_candle::gpt2::Config {
        activation_function: "swish".into(),
        ..tiny_config()
    };
    let w = random_weights(&cfg, 25);
    let d2 = TempDir::new("swish");
    write_checkpoint(d2.path(), &cfg, &w, "");
    let e = load_err(&spec(d2.path(), "f32"), "{}");
    assert!(e.is_unsupported() && e.message.contains("swish"), "{e}");
}

#[test]
fn options_are_checked() {
    let (dir, _, _) = tiny_checkpoint(26);
    let s = spec(dir.path(), "f32");
    let e = load_err(&s, r#"{"thread": 2}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("thread"), "{e}");
    let e = load_err(&s, r#"{"threads": 0}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let e = load_err(&s, r#"{"device": "tpu"}"#);
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    if !cfg!(feature = "cuda") {
        let e = load_err(&s, r#"{"device": "cuda:0"}"#);
        assert!(e.is_unsupported() && e.message.contains("cuda"), "{e}");
    }
    let e = load_err(&s, r#"{"kernels": "turbo"}"#);
    assert!(
        e.message.contains("kernels") && e.message.contains("turbo"),
        "{e}"
    );
    assert!(load(&s, r#"{"threads": 1, "device": "cpu"}"#).is_ok());
    assert!(load(&s, r#"{"kernels": "stock"}"#).is_ok());
}

#[test]
fn memory_counts_weights() {
    let (dir, cfg, w) = tiny_checkpoint(27);
    let m = load(&spec(dir.path(), "f32"), "{}").unwrap();
    let mem = m.memory();
    let params: usize = w.values().map(|(s, _)| s.iter().product::<usize>()).sum();
    // matrices are held in 64-column panels; the last panel of a matrix
    // whose width is not a multiple of 64 is zero-padded
    let padding: usize = cfg
        .expected_tensors()
        .iter()
        .filter(|(n, s)| s.len() == 2 && n != "wpe.weight")
        .map(|(n, s)| {
            let (k, cols) = if n == "wte.weight" {
                (s[1], s[0])
            } else {
                (s[0], s[1])
            };
            k * (cols.next_multiple_of(64) - cols)
        })
        .sum();
    assert_eq!(mem.weight_bytes, 4 * (params + padding) as u64);
    assert_eq!(mem.kv_cache_used_bytes, 0);
    let m16 = load(&spec(dir.path(), "f16"), "{}").unwrap();
    assert_eq!(m16.memory().weight_bytes, 2 * (params + padding) as u64);
}

#[test]
fn info_describes_the_engine() {
    let info = CandleEngine::new().info();
    assert_eq!(info.name.as_str(), "candle");
    assert_eq!(info.engine_version.as_str(), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        info.runtime_version.as_str(),
        format!("candle {}", em_candle::CANDLE_VERSION)
    );
    assert!(info.devices.iter().any(|d| d.as_str() == "cpu"));
    for d in ["f32", "f16", "bf16"] {
        assert!(info.dtypes.iter().any(|x| x.as_str() == d), "{d}");
    }
    let quants: Vec<&str> = info.quantizations.iter().map(|q| q.as_str()).collect();
    assert_eq!(quants, em_candle::quant::NAMES);
    for c in [
        "batching:none",
        "batching:static",
        "batching:continuous",
        "score",
        "sampling",
    ] {
        assert!(info.capabilities.iter().any(|x| x.as_str() == c), "{c}");
    }
}

#[test]
fn config_parses_real_hf_files() {
    // GPT-2 small's config.json from the Hugging Face hub (abridged only in
    // whitespace).
    let json = r#"{
      "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
      "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1,
      "eos_token_id": 50256, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
      "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
      "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1,
      "summary_activation": null, "summary_first_dropout": 0.1,
      "summary_proj_to_labels": true, "summary_type": "cls_index",
      "summary_use_proj": true,
      "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
      "vocab_size": 50257
    }"#;
    let cfg: em_candle::gpt2::Config = serde_json::from_str(json).unwrap();
    assert_eq!(cfg, em_candle::gpt2::Config::gpt2());
    assert_eq!(cfg.inner_dim(), 3072);
    let cfg: em_candle::gpt2::Config =
        serde_json::from_str(r#"{"n_inner": null, "eos_token_id": [7, 8]}"#).unwrap();
    assert_eq!(cfg.inner_dim(), 3072);
    assert_eq!(cfg.eos_token_id, Some(7));
}
