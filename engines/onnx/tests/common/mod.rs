//! Helpers of the onnx engine's tests: the generic ones come from
//! `engine_matrix_test_support` (specs over synthetic checkpoints, the candle
//! plugin as reference, greedy loops); here, opening the onnx backend and
//! copying model folders.
#![allow(dead_code)] // each test binary uses a different subset

use em_onnx::OnnxBackend;
pub use engine_kit::testing::TempDir;
pub use engine_matrix_test_support::*;
use std::path::Path;

pub fn onnx(dir: &Path, options: &str) -> OnnxBackend {
    match em_onnx::open(&spec(dir), options) {
        Ok(b) => b,
        Err(e) => panic!("onnx engine failed to load {}: {e}", dir.display()),
    }
}

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
