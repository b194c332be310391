//! The Llama family on ONNX Runtime against the naive reference forward
//! pass of `engine_matrix_test_support::llama` (GQA, llama3 RoPE scaling,
//! Qwen2 bias, untied embeddings, head_dim 64): every prefill, decode and
//! score row within 1e-4, on graphs built fresh (in memory, and into an
//! empty cache folder); a sharded checkpoint; the cache holding the
//! key/value heads only; a saved `model.onnx` loading like the built
//! graph; and the loading errors.

use engine_api::{ErrorKind, ModelSpec};
use engine_kit::testing::TempDir;
use engine_kit::Backend;
use engine_matrix_test_support::llama::{self, check_engine};
use std::path::{Path, PathBuf};

/// Every test starts here: the graph cache of this process is a fresh
/// folder (set once, before any test loads a model), so a cached graph
/// is always one this build wrote.
fn cache() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("em-onnx-llama-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cache folder");
        std::env::set_var("ENGINE_MATRIX_CACHE", &dir);
        dir
    })
}

fn spec(dir: &Path, arch: &str) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        architecture: arch.into(),
        path: dir.to_string_lossy().into_owned().into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    }
}

/// Built in memory on every load: nothing cached can hide the builder.
const FRESH: &str = r#"{"threads": 1, "graph_cache": false}"#;

fn open(dir: &Path, arch: &str, opts: &str) -> em_onnx::OnnxBackend {
    cache();
    em_onnx::open(&spec(dir, arch), opts)
        .unwrap_or_else(|e| panic!("{} ({arch}, {opts}): {e}", dir.display()))
}

fn open_err(dir: &Path, arch: &str, opts: &str) -> engine_api::EngineError {
    cache();
    match em_onnx::open(&spec(dir, arch), opts) {
        Ok(_) => panic!("{} ({arch}) should not load", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn every_tiny_llama_matches_the_reference_on_one_and_two_threads() {
    for (name, cfg) in llama::configs() {
        let dir = TempDir::new(name);
        let w = llama::random_weights(&cfg, 7);
        llama::write_model(dir.path(), &cfg, &w);
        for threads in [1, 2] {
            let opts = format!(r#"{{"threads": {threads}, "graph_cache": false}}"#);
            let mut b = open(dir.path(), &cfg.model_type, &opts);
            assert!(format!("{b:?}").contains("Llama"), "{b:?}");
            let worst = check_engine(&mut b, name, &cfg, &w);
            eprintln!("{name}, {threads} threads: max |logit diff| {worst:.2e}");
        }
    }
}

/// What the shared configs leave out: Llama's `attention_bias` (bias on
/// q, k, v and o) with `mlp_bias`, and Mistral (a Llama by another
/// `model_type`, here with a sliding window as long as its context).
#[test]
fn llama_biases_and_mistral_match_the_reference() {
    let mut biased = engine_kit::llama::Config::tiny();
    biased.attention_bias = true;
    biased.mlp_bias = true;
    let mut mistral = engine_kit::llama::Config::tiny();
    mistral.model_type = "mistral".into();
    mistral.sliding_window = Some(mistral.max_position_embeddings);
    for (name, cfg) in [("llama-all-biases", biased), ("mistral", mistral)] {
        let dir = TempDir::new(name);
        let w = llama::random_weights(&cfg, 13);
        llama::write_model(dir.path(), &cfg, &w);
        // config_json writes neither key
        let mut json = llama::config_json(&cfg);
        json["mlp_bias"] = cfg.mlp_bias.into();
        json["sliding_window"] = cfg.sliding_window.into();
        std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
        let mut b = open(dir.path(), &cfg.model_type, FRESH);
        let worst = check_engine(&mut b, name, &cfg, &w);
        eprintln!("{name}: max |logit diff| {worst:.2e}");
    }
}

/// The default load builds the graph into the (empty) cache, with the
/// weights in an external data file, and a second load uses it; a
/// changed `config.json` is another graph.
#[test]
fn the_cached_graph_is_built_once_per_config() {
    let root = cache().join("onnx");
    let (name, cfg) = llama::configs().remove(1); // llama3 rope, untied
    let dir = TempDir::new("onnx-llama-cached");
    let w = llama::random_weights(&cfg, 9);
    llama::write_model(dir.path(), &cfg, &w);
    let entries = || -> Vec<PathBuf> {
        let prefix = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.retain(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        });
        v.sort();
        v
    };
    let mut b = open(dir.path(), "llama", r#"{"threads": 1}"#);
    let worst = check_engine(&mut b, name, &cfg, &w);
    eprintln!("{name}, cached graph: max |logit diff| {worst:.2e}");
    let first = entries();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].join("model.onnx.data").is_file());
    let tokens: Vec<u32> = (0..12).map(|i| (i * 5 + 1) % 64).collect();
    let a = b.score(&tokens).unwrap().data.to_vec();
    drop(b);
    let mut again = open(dir.path(), "llama", r#"{"threads": 1}"#);
    assert_eq!(again.score(&tokens).unwrap().data.to_vec(), a);
    assert_eq!(entries(), first, "the second load rebuilt the graph");
    // another epsilon is another graph
    let mut other = cfg.clone();
    other.rms_norm_eps = 1e-3;
    llama::write_model(dir.path(), &other, &w);
    let mut b = open(dir.path(), "llama", r#"{"threads": 1}"#);
    check_engine(&mut b, "llama3-rope, eps 1e-3", &other, &w);
    assert_eq!(entries().len(), 2, "{:?}", entries());
    let _ = std::fs::remove_dir_all(cache());
}

/// 4 query heads over 2 kv heads: the cache holds 2 heads per layer, also
/// after sequences of different lengths are regrouped (left-padded).
#[test]
fn the_cache_holds_kv_heads_only() {
    let (_, cfg) = llama::configs().remove(0);
    assert_eq!(cfg.group(), 2);
    let dir = TempDir::new("onnx-llama-kv");
    let w = llama::random_weights(&cfg, 2);
    llama::write_model(dir.path(), &cfg, &w);
    let mut b = open(dir.path(), "llama", FRESH);
    let per_token = 2 * cfg.num_hidden_layers * cfg.kv_heads() * cfg.head_dim() * 4;
    let (p1, p2): (Vec<u32>, Vec<u32>) = ((0..30).collect(), (5..17).collect());
    let mut l = Vec::new();
    b.prefill(&[(1, &p1), (2, &p2)], &mut l).unwrap();
    assert_eq!(
        b.memory().kv_cache_used_bytes as usize,
        (30 + 12) * per_token
    );
    let (t1, t2) = (
        engine_matrix_test_support::argmax(&l[..64]),
        engine_matrix_test_support::argmax(&l[64..]),
    );
    b.decode(&[(1, t1), (2, t2)], &mut l).unwrap();
    assert_eq!(
        b.memory().kv_cache_used_bytes as usize,
        (31 + 13) * per_token
    );
    let r = llama::Reference::new(&cfg, &w);
    let (mut s1, mut s2) = (p1.clone(), p2.clone());
    s1.push(t1);
    s2.push(t2);
    for (row, s) in [s1, s2].iter().enumerate() {
        let want = r.logits(s);
        let d = engine_matrix_test_support::max_abs_diff(
            &l[row * 64..(row + 1) * 64],
            &want[want.len() - 64..],
        );
        assert!(d <= llama::TOL, "row {row}: {d}");
    }
}

#[test]
fn a_sharded_checkpoint_loads_like_a_single_file() {
    let cfg = engine_kit::llama::Config::tiny();
    let dir = TempDir::new("onnx-llama-sharded");
    let w = llama::random_weights(&cfg, 5);
    llama::write_sharded(dir.path(), &cfg, &w);
    let mut b = open(dir.path(), "llama", FRESH);
    let worst = check_engine(&mut b, "sharded", &cfg, &w);
    eprintln!("sharded: max |logit diff| {worst:.2e}");
    // a tensor in no shard names the folder and the tensor
    let shard = TempDir::new("onnx-shard");
    let mut first: llama::Weights = w
        .clone()
        .into_iter()
        .filter(|(n, _)| n.contains("layers.0."))
        .collect();
    let gone = "model.layers.0.self_attn.k_proj.weight";
    first.remove(gone);
    llama::write_model(shard.path(), &cfg, &first);
    std::fs::rename(
        shard.path().join("model.safetensors"),
        dir.path().join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    let e = open_err(dir.path(), "llama", FRESH);
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    let folder = dir.path().display().to_string();
    assert!(
        e.message
            .starts_with(&format!("{folder}: missing tensor {gone}")),
        "{e}"
    );
}

/// `save_model` writes the built graph; a folder holding it as
/// `model.onnx` loads it (checked against config.json, kv heads included)
/// and computes the same logits.
#[test]
fn a_saved_llama_graph_loads_like_the_built_one() {
    let (name, cfg) = llama::configs().remove(2); // qwen2: biases
    let src = TempDir::new("onnx-llama-src");
    let w = llama::random_weights(&cfg, 4);
    llama::write_model(src.path(), &cfg, &w);
    let saved = TempDir::new("onnx-llama-saved");
    std::fs::copy(
        src.path().join("config.json"),
        saved.path().join("config.json"),
    )
    .unwrap();
    let file = saved.path().join("model.onnx");
    let opts = format!(
        r#"{{"threads": 1, "graph_cache": false, "save_model": "{}"}}"#,
        file.display()
    );
    let mut built = open(src.path(), "qwen2", &opts);
    assert!(saved.path().join("model.onnx.data").is_file());
    let mut loaded = open(saved.path(), "qwen2", FRESH);
    let worst = check_engine(&mut loaded, name, &cfg, &w);
    eprintln!("{name}, saved model.onnx: max |logit diff| {worst:.2e}");
    let tokens: Vec<u32> = (0..10).map(|i| (i * 7 + 3) % 64).collect();
    assert_eq!(
        built.score(&tokens).unwrap().data.to_vec(),
        loaded.score(&tokens).unwrap().data.to_vec()
    );
    // the same graph declared with another number of kv heads is refused
    let mut wrong = cfg.clone();
    wrong.num_key_value_heads = Some(4);
    std::fs::write(
        saved.path().join("config.json"),
        llama::config_json(&wrong).to_string(),
    )
    .unwrap();
    let e = open_err(saved.path(), "qwen2", FRESH);
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(
        e.message.contains("model.onnx")
            && e.message
                .contains("expected [batch, 4, seq, 8] (num_key_value_heads"),
        "{e}"
    );
}

#[test]
fn broken_llama_folders_are_errors_naming_the_file_and_what_is_wrong() {
    let dir = TempDir::new("onnx-llama-broken");
    let (cfg, _) = llama::broken_model(dir.path());
    for opts in [FRESH, r#"{"threads": 1}"#] {
        llama::check_loading_errors(|arch| {
            cache();
            em_onnx::open(&spec(dir.path(), arch), opts).map(|_| ())
        });
    }
    let load = engine_api::Engine::load(
        &em_onnx::OnnxEngine,
        &spec(dir.path(), "mamba"),
        &engine_api::LoadOptions::default(),
    );
    match load {
        Ok(_) => panic!("mamba loaded"),
        Err(e) => assert_eq!(e.kind, ErrorKind::Unsupported, "{e}"),
    }
    // a model_type outside the family in config.json
    let mut json = llama::config_json(&cfg);
    json["model_type"] = "mamba".into();
    std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
    let e = open_err(dir.path(), "llama", FRESH);
    assert!(e.message.contains("model_type is \"mamba\""), "{e}");
    // a tensor of the wrong shape
    let mut w = llama::random_weights(&cfg, 1);
    w.insert(
        "model.norm.weight".into(),
        (vec![cfg.hidden_size + 1], vec![1.0; cfg.hidden_size + 1]),
    );
    llama::write_model(dir.path(), &cfg, &w);
    let e = open_err(dir.path(), "llama", FRESH);
    assert!(
        e.message
            .contains("tensor model.norm.weight has shape [33]"),
        "{e}"
    );
    // no weights at all
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = open_err(dir.path(), "llama", FRESH);
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(e.message.contains("model.safetensors: no such file"), "{e}");
}

#[test]
fn prefix_cache_hits_give_a_cold_runs_tokens_on_a_llama() {
    let (name, cfg) = llama::configs().remove(0);
    let dir = TempDir::new("onnx-llama-prefix");
    llama::write_model(dir.path(), &cfg, &llama::random_weights(&cfg, 5));
    let mut b = open(dir.path(), &cfg.model_type, r#"{"threads": 1}"#);
    engine_matrix_test_support::prefix_cache_parity(&mut b, &format!("onnx {name}"));
}
