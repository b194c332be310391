//! The model's shape as a run records it (`summary.json`'s `models[].shape`).

use serde::{Deserialize, Serialize};

/// The parts of a GPT-2 `config.json` that the host needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Shape {
    pub vocab_size: usize,
    #[serde(alias = "max_position_embeddings")]
    pub n_positions: usize,
    #[serde(alias = "hidden_size")]
    pub n_embd: usize,
    #[serde(alias = "num_hidden_layers")]
    pub n_layer: usize,
    #[serde(alias = "num_attention_heads")]
    pub n_head: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_model_type() -> String {
    "gpt2".into()
}

impl Gpt2Shape {
    /// Parses a `config.json` (GPT-2's keys, or Llama-style aliases);
    /// `origin` names the file in the error.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, crate::SchemaError> {
        serde_json::from_str(text).map_err(|e| crate::SchemaError::Parse {
            what: format!("{origin}: not a GPT-2 config.json"),
            source: e,
        })
    }
}
