//! Which architecture a model folder holds, and whether an engine runs it.
//!
//! A model folder's `config.json` names its architecture in `model_type`
//! (`gpt2`, `llama`, `qwen2`, `mistral`); [`read_config`] dispatches on it
//! to the family's own [`crate::gpt2::Config`] or [`crate::llama::Config`].
//! The matrix's `architecture` (the spec's) must agree with it, so a
//! result is never labelled with an architecture that did not run.
//! Weights are `model.safetensors`, or the shards a
//! `model.safetensors.index.json` lists ([`weight_files`]).

use crate::{gpt2, llama};
use engine_api::{EngineError, ModelSpec};
use std::path::{Path, PathBuf};

/// A model folder's configuration, by family.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Gpt2(gpt2::Config),
    Llama(llama::Config),
}

impl ModelConfig {
    /// `model_type` of `config.json`.
    pub fn model_type(&self) -> &str {
        match self {
            ModelConfig::Gpt2(c) => &c.model_type,
            ModelConfig::Llama(c) => &c.model_type,
        }
    }

    pub fn limits(&self) -> crate::Limits {
        match self {
            ModelConfig::Gpt2(c) => c.limits(),
            ModelConfig::Llama(c) => c.limits(),
        }
    }

    /// `(name, shape)` of every tensor the model reads (GPT-2's without
    /// its optional `transformer.` prefix).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            ModelConfig::Gpt2(c) => c.expected_tensors(),
            ModelConfig::Llama(c) => c.expected_tensors(),
        }
    }
}

/// What an engine requires of a [`ModelSpec`]: an architecture among
/// `supported` and `quantization: none`; anything else is `unsupported`,
/// naming the architecture and `engine`.
pub fn check_spec(engine: &str, spec: &ModelSpec, supported: &[&str]) -> Result<(), EngineError> {
    check_spec_quantized(engine, spec, supported, &[])
}

/// [`check_spec`] for an engine that also runs the quantizations
/// `quantizations` (besides `none`).
pub fn check_spec_quantized(
    engine: &str,
    spec: &ModelSpec,
    supported: &[&str],
    quantizations: &[&str],
) -> Result<(), EngineError> {
    let arch = spec.architecture.as_str();
    if !supported.contains(&arch) {
        return Err(EngineError::unsupported(format!(
            "architecture {arch:?}: the {engine} engine implements {}",
            supported.join(", ")
        )));
    }
    let q = spec.quantization.as_str();
    if q != "none" && !quantizations.contains(&q) {
        return Err(EngineError::unsupported(if quantizations.is_empty() {
            format!(
                "quantization {q:?}: the {engine} engine loads unquantized safetensors only \
                 (quantization: none)"
            )
        } else {
            format!(
                "quantization {q:?}: the {engine} engine runs none, {}",
                quantizations.join(", ")
            )
        }));
    }
    Ok(())
}

/// Reads `dir/config.json`, checks that its `model_type` is `spec_arch`
/// (the matrix's `architecture`), and parses it as that family's config.
pub fn read_config(dir: &Path, spec_arch: &str) -> Result<ModelConfig, EngineError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        EngineError::invalid_model(format!(
            "{}: cannot read ({e}); a model folder needs config.json and model.safetensors",
            path.display()
        ))
    })?;
    let model_type = model_type(&text, &path)?;
    if model_type != spec_arch {
        return Err(EngineError::invalid_model(format!(
            "{}: model_type is {model_type:?}, but the model is declared as architecture {spec_arch:?}",
            path.display()
        )));
    }
    if model_type == "gpt2" {
        return gpt2::read_config(dir).map(ModelConfig::Gpt2);
    }
    if llama::MODEL_TYPES.contains(&model_type.as_str()) {
        return llama::parse_config(&text, &path).map(ModelConfig::Llama);
    }
    Err(EngineError::unsupported(format!(
        "{}: model_type {model_type:?} is not an architecture engine-matrix implements \
         (gpt2, {})",
        path.display(),
        llama::MODEL_TYPES.join(", ")
    )))
}

/// `model_type` of a `config.json`'s text (`gpt2` when absent, as in the
/// original GPT-2 files).
pub fn model_type(text: &str, path: &Path) -> Result<String, EngineError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        EngineError::invalid_model(format!("{}: invalid JSON: {e}", path.display()))
    })?;
    match v.get("model_type") {
        None => Ok("gpt2".into()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(EngineError::invalid_model(format!(
            "{}: model_type must be a string, got {other}",
            path.display()
        ))),
    }
}

/// The safetensors files of a model folder: `model.safetensors`, or the
/// shards named by `model.safetensors.index.json` (each once, in order of
/// first mention). A missing file is an `invalid model` error naming it.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(EngineError::invalid_model(format!(
            "{}: no such file (nor {}); a model folder needs config.json and its weights",
            single.display(),
            index.display()
        )));
    }
    let bad = |why: String| EngineError::invalid_model(format!("{}: {why}", index.display()));
    let text = std::fs::read_to_string(&index).map_err(|e| bad(format!("cannot read ({e})")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no weight_map object".into()))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let name = file
            .as_str()
            .filter(|f| !f.is_empty() && !f.contains('/') && !f.contains(".."))
            .ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a file name: {file}")))?;
        let path = dir.join(name);
        if !files.contains(&path) {
            if !path.is_file() {
                return Err(bad(format!(
                    "shard {name} (holding {tensor}) does not exist in {}",
                    dir.display()
                )));
            }
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: &str, quant: &str) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            architecture: arch.into(),
            path: "/nonexistent".into(),
            dtype: "f32".into(),
            quantization: quant.into(),
        }
    }

    #[test]
    fn spec_checks_name_the_architecture_and_the_engine() {
        check_spec("candle", &spec("llama", "none"), &["gpt2", "llama"]).unwrap();
        let e = check_spec("onnx", &spec("qwen2", "none"), &["gpt2"]).unwrap_err();
        assert_eq!(e.kind, engine_api::ErrorKind::Unsupported);
        assert_eq!(
            e.message.as_str(),
            "architecture \"qwen2\": the onnx engine implements gpt2"
        );
        let e = check_spec("x", &spec("gpt2", "q4_0"), &["gpt2"]).unwrap_err();
        assert!(e.message.contains("quantization \"q4_0\""), "{e}");
    }

    #[test]
    fn read_config_dispatches_on_model_type_and_checks_the_declared_architecture() {
        let tmp = crate::testing::TempDir::new("arch-config");
        let dir = tmp.path();
        let cfg = serde_json::json!({"model_type": "qwen2", "vocab_size": 8, "hidden_size": 8,
            "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2});
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        match read_config(dir, "qwen2").unwrap() {
            ModelConfig::Llama(c) => assert!(c.qkv_bias()),
            other => panic!("{other:?}"),
        }
        let e = read_config(dir, "gpt2").unwrap_err();
        assert!(
            e.message.contains(
                "model_type is \"qwen2\", but the model is declared as architecture \"gpt2\""
            ),
            "{e}"
        );
        std::fs::write(dir.join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
        let e = read_config(dir, "mamba").unwrap_err();
        assert_eq!(e.kind, engine_api::ErrorKind::Unsupported);
        assert!(e.message.contains("model_type \"mamba\""), "{e}");
    }

    #[test]
    fn sharded_weights_are_listed_once_each_and_a_missing_shard_is_named() {
        let tmp = crate::testing::TempDir::new("arch-shards");
        let dir = tmp.path();
        let e = weight_files(dir).unwrap_err();
        assert!(e.message.contains("model.safetensors.index.json"), "{e}");
        let index = serde_json::json!({"weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors"}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("model-00001-of-00002.safetensors"), b"").unwrap();
        let e = weight_files(dir).unwrap_err();
        assert!(
            e.message
                .contains("shard model-00002-of-00002.safetensors (holding b)"),
            "{e}"
        );
        std::fs::write(dir.join("model-00002-of-00002.safetensors"), b"").unwrap();
        let files = weight_files(dir).unwrap();
        assert_eq!(files.len(), 2);
        std::fs::write(dir.join("model.safetensors"), b"").unwrap();
        assert_eq!(
            weight_files(dir).unwrap(),
            vec![dir.join("model.safetensors")]
        );
    }
}
