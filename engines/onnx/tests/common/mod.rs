//! Helpers shared by the onnx engine's tests: model folders from the host's
//! synthetic checkpoints, both engines opened on the same folder, and a
//! greedy loop driven through [`engine_kit::Backend`].
#![allow(dead_code)] // each test binary uses a different subset

use em_onnx::OnnxBackend;
use engine_api::{BatchPolicy, LoadOptions, ModelBox, ModelSpec};
use engine_kit::Backend;
use std::path::{Path, PathBuf};

pub fn spec(dir: &Path) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        architecture: "gpt2".into(),
        path: dir.to_string_lossy().into_owned().into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    }
}

/// The host's synthetic checkpoint for `config` (`tiny` or `gpt2`).
pub fn synthetic(config: &str) -> PathBuf {
    engine_matrix::synthetic::ensure(config, 0).expect("synthetic weights")
}

pub fn onnx(dir: &Path, options: &str) -> OnnxBackend {
    match em_onnx::open(&spec(dir), options) {
        Ok(b) => b,
        Err(e) => panic!("onnx engine failed to load {}: {e}", dir.display()),
    }
}

/// `target/<profile>`, where cargo puts the plugin libraries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// The candle plugin from `target/<profile>`, loaded as the host loads it
/// (`cargo build --release --workspace` builds it; scripts/test does).
pub fn candle(dir: &Path, threads: usize) -> ModelBox {
    use engine_matrix::plugins;
    let file = plugins::find(&profile_dir(), "candle")
        .unwrap_or_else(|e| panic!("candle plugin: {e} (build the workspace first)"));
    let loaded = plugins::load(&file).unwrap_or_else(|e| panic!("candle plugin: {e}"));
    let opts = LoadOptions {
        batch_policy: BatchPolicy::Continuous,
        max_batch: 8,
        options_json: format!(r#"{{"threads":{threads}}}"#).into(),
    };
    let m = loaded.engine.load(&spec(dir), &opts).into_result();
    let m = m.unwrap_or_else(|e| panic!("candle load: {e}"));
    // the library must outlive the model: plugins stay loaded for the
    // process (abi_stable never unloads them)
    std::mem::forget(loaded);
    m
}

/// Logits of every position of `tokens` (row-major).
pub fn score(m: &ModelBox, tokens: &[u32]) -> Vec<f32> {
    m.score(tokens.into())
        .into_result()
        .expect("candle score")
        .data
        .to_vec()
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit rows differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Greedy generation of `steps` tokens for one sequence; returns the
/// tokens and the logits of every step.
pub fn greedy(b: &mut dyn Backend, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut logits = Vec::new();
    b.prefill(&[(1, prompt)], &mut logits).expect("prefill");
    let mut tokens = Vec::new();
    let mut all = Vec::new();
    for i in 0..steps {
        let t = argmax(&logits);
        tokens.push(t);
        all.push(logits.clone());
        if i + 1 < steps {
            b.decode(&[(1, t)], &mut logits).expect("decode");
        }
    }
    b.free(1);
    (tokens, all)
}

pub use engine_kit::testing::TempDir;

/// A copy of a synthetic model folder (config.json and, with `weights`,
/// model.safetensors as a symlink).
pub fn model_copy(src: &Path, tag: &str, weights: bool) -> TempDir {
    let t = TempDir::new(tag);
    std::fs::copy(src.join("config.json"), t.path().join("config.json")).expect("copy config");
    if weights {
        std::os::unix::fs::symlink(
            src.join("model.safetensors"),
            t.path().join("model.safetensors"),
        )
        .expect("link weights");
    }
    t
}
