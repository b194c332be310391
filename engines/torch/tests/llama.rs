//! The Llama family on libtorch against the naive reference forward pass
//! of `engine_matrix_test_support::llama` (GQA, llama3 RoPE scaling, Qwen2
//! bias, untied embeddings, head_dim 64) with both linear-layer kernels
//! (`matmul`: oneDNN and `addmm`), a sharded checkpoint, half precision,
//! and its loading errors.

use engine_api::{ErrorKind, ModelSpec};
use engine_kit::testing::TempDir;
use engine_kit::Backend;
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

const MATMULS: [&str; 2] = ["onednn", "addmm"];

#[test]
fn every_tiny_llama_matches_the_reference_with_both_kernels() {
    for (name, cfg) in llama::configs() {
        let dir = TempDir::new(name);
        let w = llama::random_weights(&cfg, 7);
        llama::write_model(dir.path(), &cfg, &w);
        for mm in MATMULS {
            let opts = format!(r#"{{"threads": 1, "matmul": "{mm}"}}"#);
            let mut b = em_torch::open(&spec(dir.path(), &cfg.model_type, "f32"), &opts)
                .unwrap_or_else(|e| panic!("{name}, {mm}: {e}"));
            assert!(format!("{b:?}").contains("Llama"), "{b:?}");
            let worst = check_engine(&mut b, &format!("{name}, {mm}"), &cfg, &w);
            eprintln!("{name}, {mm}: max |logit diff| {worst:.2e}");
        }
    }
}

/// Two threads split libtorch's ops differently; the default kernel is
/// `auto` for f32 on the CPU (whichever of oneDNN and addmm measured
/// faster here), as for GPT-2.
#[test]
fn two_threads_and_the_default_kernel_match_the_reference() {
    let (name, cfg) = llama::configs().remove(0);
    let dir = TempDir::new("torch-llama-threads");
    let w = llama::random_weights(&cfg, 11);
    llama::write_model(dir.path(), &cfg, &w);
    let mut b = em_torch::open(&spec(dir.path(), "llama", "f32"), r#"{"threads": 2}"#).unwrap();
    let d = format!("{b:?}");
    assert!(d.contains("OneDnn") || d.contains("Addmm"), "{d}");
    assert!(b.describe().contains("auto: measured"), "{}", b.describe());
    let worst = check_engine(&mut b, name, &cfg, &w);
    eprintln!("{name}, default kernel, 2 threads: max |logit diff| {worst:.2e}");
}

/// The cache holds the kv heads only and grows by doubling from the
/// prompt rounded up to 64 tokens.
#[test]
fn the_cache_holds_kv_heads_only_and_grows_past_its_first_chunk() {
    let (_, cfg) = llama::configs().remove(0); // 4 query heads over 2 kv heads
    let dir = TempDir::new("torch-llama-cache");
    let w = llama::random_weights(&cfg, 2);
    llama::write_model(dir.path(), &cfg, &w);
    let mut b = em_torch::open(&spec(dir.path(), "llama", "f32"), r#"{"threads": 1}"#).unwrap();
    let mut l = Vec::new();
    let prompt: Vec<u32> = (0..60).map(|i| (i * 7 + 1) % 64).collect();
    b.prefill(&[(1, &prompt)], &mut l).unwrap();
    let per_token = 2 * cfg.num_hidden_layers * cfg.kv_heads() * cfg.head_dim() * 4;
    let m = b.memory();
    assert_eq!(m.kv_cache_used_bytes as usize, 60 * per_token, "{m:?}");
    let mut seq = prompt.clone();
    for _ in 0..8 {
        let t = engine_matrix_test_support::argmax(&l);
        seq.push(t);
        b.decode(&[(1, t)], &mut l).unwrap();
    }
    // past the first 64 positions: the decoded logits are still the
    // reference's
    let want = llama::Reference::new(&cfg, &w).logits(&seq);
    let d = engine_matrix_test_support::max_abs_diff(&l, &want[want.len() - cfg.vocab_size..]);
    assert!(d <= llama::TOL, "after growing the cache: {d}");
    assert_eq!(b.memory().kv_cache_used_bytes as usize, 68 * per_token);
}

#[test]
fn a_sharded_checkpoint_loads_like_a_single_file() {
    let cfg = engine_kit::llama::Config::tiny();
    let dir = TempDir::new("torch-llama-sharded");
    let w = llama::random_weights(&cfg, 5);
    llama::write_sharded(dir.path(), &cfg, &w);
    for mm in MATMULS {
        let opts = format!(r#"{{"threads": 1, "matmul": "{mm}"}}"#);
        let mut b = em_torch::open(&spec(dir.path(), "llama", "f32"), &opts).unwrap();
        let worst = check_engine(&mut b, "sharded", &cfg, &w);
        eprintln!("sharded, {mm}: max |logit diff| {worst:.2e}");
    }
    // a tensor in neither shard names the folder and the tensor; one in
    // both names the two files
    let write_shard = |i: usize, part: &llama::Weights| {
        let shard = TempDir::new("torch-shard");
        llama::write_model(shard.path(), &cfg, part);
        let to = dir
            .path()
            .join(format!("model-0000{i}-of-00002.safetensors"));
        std::fs::rename(shard.path().join("model.safetensors"), to).unwrap();
    };
    let mut first: llama::Weights = w
        .clone()
        .into_iter()
        .filter(|(n, _)| n.contains("layers.0."))
        .collect();
    let gone = "model.layers.0.self_attn.q_proj.weight";
    let q = first.remove(gone).unwrap();
    write_shard(1, &first);
    let e = em_torch::open(&spec(dir.path(), "llama", "f32"), "{}").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    let folder = dir.path().display().to_string();
    assert!(
        e.message
            .starts_with(&format!("{folder}: missing tensor {gone}")),
        "{e}"
    );
    first.insert(gone.into(), q);
    first.insert("model.norm.weight".into(), w["model.norm.weight"].clone());
    write_shard(1, &first);
    let e = em_torch::open(&spec(dir.path(), "llama", "f32"), "{}").unwrap_err();
    assert!(
        e.message
            .contains("tensor model.norm.weight is in two shards")
            && e.message.contains("model-00001-of-00002.safetensors")
            && e.message.contains("model-00002-of-00002.safetensors"),
        "{e}"
    );
}

/// f16 and bf16 compute in half precision: the first greedy tokens match
/// f32's, the logits within their resolution.
#[test]
fn half_precision_tracks_f32() {
    let (name, cfg) = llama::configs().remove(2); // qwen2: biases too
    let dir = TempDir::new("torch-llama-half");
    let w = llama::random_weights(&cfg, 3);
    llama::write_model(dir.path(), &cfg, &w);
    let mut f32b = em_torch::open(&spec(dir.path(), "qwen2", "f32"), r#"{"threads":1}"#).unwrap();
    let prompt: Vec<u32> = (0..9).map(|i| i * 3 % 64).collect();
    let (want, wl) = engine_matrix_test_support::greedy(&mut f32b, &prompt, 8);
    for dtype in ["f16", "bf16"] {
        let mut b = em_torch::open(&spec(dir.path(), "qwen2", dtype), r#"{"threads":1}"#)
            .unwrap_or_else(|e| panic!("{name}, {dtype}: {e}"));
        let (got, gl) = engine_matrix_test_support::greedy(&mut b, &prompt, 8);
        let d = engine_matrix_test_support::max_abs_diff(&wl[0], &gl[0]);
        eprintln!("{name}, {dtype}: first logits within {d:.2e} of f32");
        assert!(d < 0.1, "{dtype}: prefill logits differ by {d}");
        assert_eq!(want[..2], got[..2], "{dtype}: greedy tokens");
        assert_eq!(
            b.memory().weight_bytes * 2,
            f32b.memory().weight_bytes,
            "{dtype}: weights are 2 bytes each"
        );
    }
}

#[test]
fn broken_llama_folders_are_errors_naming_the_file_and_what_is_wrong() {
    let dir = TempDir::new("torch-llama-broken");
    let (cfg, _) = llama::broken_model(dir.path());
    llama::check_loading_errors(|arch| {
        em_torch::open(&spec(dir.path(), arch, "f32"), "{}").map(|_| ())
    });
    // unsupported through the plugin's load too
    let load = engine_api::Engine::load(
        &em_torch::TorchEngine,
        &spec(dir.path(), "mamba", "f32"),
        &engine_api::LoadOptions::default(),
    );
    match load {
        Ok(_) => panic!("mamba loaded"),
        Err(e) => assert_eq!(e.kind, ErrorKind::Unsupported, "{e}"),
    }
    // a tensor of the wrong shape
    let mut w = llama::random_weights(&cfg, 1);
    w.insert(
        "model.norm.weight".into(),
        (vec![cfg.hidden_size + 1], vec![1.0; cfg.hidden_size + 1]),
    );
    llama::write_model(dir.path(), &cfg, &w);
    let e = em_torch::open(&spec(dir.path(), "llama", "f32"), "{}").unwrap_err();
    assert!(
        e.message
            .contains("tensor model.norm.weight has shape [33]"),
        "{e}"
    );
    // no weights at all
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = em_torch::open(&spec(dir.path(), "llama", "f32"), "{}").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(e.message.contains("model.safetensors: no such file"), "{e}");
}

#[test]
fn prefix_cache_hits_give_a_cold_runs_tokens_on_a_llama() {
    let (name, cfg) = llama::configs().remove(0);
    let dir = TempDir::new("torch-llama-prefix");
    llama::write_model(dir.path(), &cfg, &llama::random_weights(&cfg, 5));
    let mut b = em_torch::open(
        &spec(dir.path(), &cfg.model_type, "f32"),
        r#"{"threads": 1}"#,
    )
    .expect("open");
    engine_matrix_test_support::prefix_cache_parity(&mut b, &format!("torch {name}"));
}
