//! The model's shape as a run records it (`summary.json`'s `models[].shape`).

use serde::{Deserialize, Serialize};

/// The parts of a `config.json` that the host needs, for GPT-2 and the
/// Llama family (`llama`, `qwen2`, `mistral`: HF's key names are read
/// through aliases; `model_type` tells the families apart). The name
/// predates the Llama family and stays for the result files' sake.
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
    /// MLP width (`intermediate_size` of the Llama family); GPT-2's
    /// default is `4 * n_embd`.
    #[serde(default, alias = "intermediate_size")]
    pub n_inner: Option<usize>,
    #[serde(default, deserialize_with = "first_id")]
    pub eos_token_id: Option<u32>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Key/value heads (grouped-query attention); `None`: `n_head`.
    #[serde(
        default,
        alias = "num_key_value_heads",
        skip_serializing_if = "Option::is_none"
    )]
    pub n_kv_head: Option<usize>,
    /// `None`: `n_embd / n_head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Llama family: the lm_head is the embedding (`None`: HF's default,
    /// false). GPT-2 always ties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
}

fn default_model_type() -> String {
    "gpt2".into()
}

/// A token id may be a number, `null` or a list (Llama 3's several EOS
/// ids): the first counts.
fn first_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<Id>::deserialize(d)? {
        None => None,
        Some(Id::One(i)) => Some(i),
        Some(Id::Many(v)) => v.first().copied(),
    })
}

impl Gpt2Shape {
    /// Parses a `config.json` (GPT-2's keys, or Llama-style aliases);
    /// `origin` names the file in the error.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, crate::SchemaError> {
        serde_json::from_str(text).map_err(|e| crate::SchemaError::Parse {
            what: format!("{origin}: not a model config.json"),
            source: e,
        })
    }

    /// A Llama-family model (RMSNorm, RoPE, GQA, SwiGLU), not GPT-2.
    pub fn is_llama(&self) -> bool {
        self.model_type != "gpt2"
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.n_embd / self.n_head.max(1))
    }

    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// Width of the query projection (`n_head * head_dim`).
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim()
    }

    /// Width of each of the key and value projections.
    pub fn kv_width(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// The lm_head is the token embedding (GPT-2 always; the Llama
    /// family when `tie_word_embeddings`).
    pub fn tied(&self) -> bool {
        !self.is_llama() || self.tie_word_embeddings.unwrap_or(false)
    }

    /// Matmul weights of all layers: GPT-2's `c_attn`, `c_proj`, `c_fc`
    /// and MLP `c_proj` (12·e² per layer when inner = 4e); the Llama
    /// family's q, k, v, o and its three MLP projections (gate, up, down).
    pub fn layer_matmul_params(&self) -> usize {
        let (e, i) = (self.n_embd, self.inner());
        let per_layer = if self.is_llama() {
            e * self.q_width() * 2 + 2 * e * self.kv_width() + 3 * e * i
        } else {
            4 * e * e + 2 * e * i
        };
        self.n_layer * per_layer
    }

    /// Parameters of the checkpoint (a tied lm_head counted once; biases
    /// and norms included: GPT-2's, Qwen2's q/k/v biases).
    pub fn parameters(&self) -> usize {
        let (e, v, l) = (self.n_embd, self.vocab_size, self.n_layer);
        if self.is_llama() {
            let bias = if self.model_type == "qwen2" {
                self.q_width() + 2 * self.kv_width()
            } else {
                0
            };
            let head = if self.tied() { 0 } else { v * e };
            v * e + head + self.layer_matmul_params() + l * (2 * e + bias) + e
        } else {
            // wte, wpe, per layer two layer norms and four biases, ln_f
            let biases = 3 * e + e + self.inner() + e;
            v * e + self.n_positions * e + self.layer_matmul_params() + l * (4 * e + biases) + 2 * e
        }
    }

    /// KV cache elements per token of one sequence (keys and values, all
    /// layers).
    pub fn kv_elements_per_token(&self) -> usize {
        2 * self.n_layer * self.kv_width()
    }
}
