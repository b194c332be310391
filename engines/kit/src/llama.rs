//! The Hugging Face Llama family's configuration, shared by every engine
//! that implements it: `LlamaForCausalLM` (Llama 2, Llama 3.x with
//! `rope_scaling` type `llama3`, SmolLM / SmolLM2, TinyLlama),
//! `Qwen2ForCausalLM` (bias on q/k/v) and `MistralForCausalLM` (a Llama
//! with a sliding window, honoured by limiting the context to the window).
//!
//! [`Config`] mirrors `config.json` (unknown keys ignored),
//! [`Config::expected_tensors`] lists the checkpoint's tensors under HF's
//! names and layouts (`nn.Linear` weights are `[out, in]`), and
//! [`Config::inv_freq`] is the RoPE frequency table every engine uses, so
//! that engines differ in their kernels, never in what model they think
//! they run.
//!
//! The forward pass, in HF's terms: `x = embed_tokens[ids]`; per layer
//! `x += o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(..)), v_proj(..)))`
//! and `x += down_proj(silu(gate_proj(rms(x))) * up_proj(rms(x)))`; then
//! `logits = lm_head(rms(x))`, with `lm_head = embed_tokens` when
//! `tie_word_embeddings`. RoPE rotates the two halves of each head
//! (`rotate_half`), not interleaved pairs; grouped-query attention shares
//! key/value head `h / (num_attention_heads / num_key_value_heads)` with
//! query head `h`.

use crate::gpt2::TensorMeta;
use engine_api::EngineError;
use serde::Deserialize;
use std::path::Path;

/// The `model_type`s this module describes.
pub const MODEL_TYPES: [&str; 3] = ["llama", "qwen2", "mistral"];

/// HF's `LlamaConfig` / `Qwen2Config` / `MistralConfig`, the keys that
/// change the computation. Missing keys take HF's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// `None`: as many as `num_attention_heads` (no grouping).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// `None`: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_context")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's `attention_bias`: bias on q, k, v and o. Qwen2 always has
    /// bias on q, k and v (and never on o), whatever this says.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// Mistral (and Qwen2 with `use_sliding_window`): attention sees at
    /// most this many past tokens.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default, deserialize_with = "crate::gpt2::token_id")]
    pub bos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "crate::gpt2::token_id")]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pretraining_tp: Option<usize>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_context() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_act() -> String {
    "silu".into()
}

/// `rope_scaling` of `config.json`. `rope_type` (or the older `type`) is
/// `default`, `linear` or `llama3`; others are unsupported.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default = "one")]
    pub factor: f64,
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn one() -> f64 {
    1.0
}
fn four() -> f64 {
    4.0
}

impl Config {
    /// A tiny configuration for tests (GQA 4:2, 2 layers).
    pub fn tiny() -> Self {
        Config {
            model_type: "llama".into(),
            vocab_size: 64,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            max_position_embeddings: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            hidden_act: "silu".into(),
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            use_sliding_window: None,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pretraining_tp: None,
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.num_attention_heads / self.kv_heads().max(1)
    }

    /// Bias on q, k and v.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    /// Bias on o_proj (Llama's `attention_bias` only).
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// The longest sequence computed exactly: the context, or the sliding
    /// window where one applies (beyond it the model would attend to
    /// fewer tokens than a plain causal mask).
    pub fn context(&self) -> usize {
        let window = match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" if self.use_sliding_window == Some(true) => self.sliding_window,
            _ => None,
        };
        window.map_or(self.max_position_embeddings, |w| {
            w.min(self.max_position_embeddings)
        })
    }

    /// What the kit's sequence table checks requests against.
    pub fn limits(&self) -> crate::Limits {
        crate::Limits {
            vocab: self.vocab_size,
            context: self.context(),
            eos: self.eos_token_id,
        }
    }

    /// Parameters (the tied embedding counted once).
    pub fn parameters(&self) -> usize {
        self.expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// RoPE's inverse frequencies, `head_dim / 2` of them, with
    /// `rope_scaling` applied (HF's `_compute_llama3_parameters` for
    /// `llama3`, division by `factor` for `linear`).
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim();
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return base;
        };
        match s.rope_type.as_str() {
            "linear" => base.iter().map(|f| f / s.factor).collect(),
            "llama3" => {
                let old = s
                    .original_max_position_embeddings
                    .unwrap_or(self.max_position_embeddings) as f64;
                let low_wavelen = old / s.low_freq_factor;
                let high_wavelen = old / s.high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / s.factor
                        } else {
                            let smooth = (old / wavelen - s.low_freq_factor)
                                / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
            _ => base,
        }
    }

    /// RoPE's `cos` and `sin` for `positions`, each `[positions.len(),
    /// head_dim / 2]` row-major, computed as HF does: f32 inverse
    /// frequencies times f32 positions, cos and sin in f32. Every engine
    /// takes its angles from here.
    pub fn rope_cos_sin(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let inv: Vec<f32> = self.inv_freq().iter().map(|&f| f as f32).collect();
        let n = positions.len() * inv.len();
        let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for &p in positions {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    /// What this family's engines cannot run: an error message naming the
    /// key, or `None`.
    pub fn unsupported(&self) -> Option<String> {
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            return Some(format!(
                "model_type {:?} is not in the Llama family ({})",
                self.model_type,
                MODEL_TYPES.join(", ")
            ));
        }
        if self.hidden_act != "silu" {
            return Some(format!(
                "hidden_act {:?} is not supported (silu)",
                self.hidden_act
            ));
        }
        if let Some(s) = &self.rope_scaling {
            if !["default", "linear", "llama3"].contains(&s.rope_type.as_str()) {
                return Some(format!(
                    "rope_scaling type {:?} is not supported (default, linear, llama3)",
                    s.rope_type
                ));
            }
        }
        if self.pretraining_tp.unwrap_or(1) != 1 {
            return Some("pretraining_tp other than 1 is not supported".into());
        }
        None
    }

    /// Checks that the sizes are usable.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            ));
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(format!(
                "vocab_size {} does not fit u32 token ids",
                self.vocab_size
            ));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return Err("rms_norm_eps must be positive".into());
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 1.0 {
            return Err("rope_theta must be above 1".into());
        }
        if let Some(s) = &self.rope_scaling {
            if s.factor.is_nan() || s.factor <= 0.0 {
                return Err("rope_scaling.factor must be positive".into());
            }
            if s.rope_type == "llama3" && s.high_freq_factor <= s.low_freq_factor {
                return Err("rope_scaling: high_freq_factor must exceed low_freq_factor".into());
            }
        }
        Ok(())
    }

    /// `(name, shape)` of every tensor the model reads, under HF's names
    /// (`model.` prefix, `[out, in]` linear weights).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * d, self.kv_heads() * d);
        let mut v = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            v.push((p("input_layernorm.weight"), vec![h]));
            for (name, out) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                v.push((p(&format!("self_attn.{name}.weight")), vec![out, h]));
                if self.qkv_bias() {
                    v.push((p(&format!("self_attn.{name}.bias")), vec![out]));
                }
            }
            v.push((p("self_attn.o_proj.weight"), vec![h, q]));
            if self.o_bias() {
                v.push((p("self_attn.o_proj.bias"), vec![h]));
            }
            v.push((p("post_attention_layernorm.weight"), vec![h]));
            for (name, shape) in [
                ("gate_proj", [i, h]),
                ("up_proj", [i, h]),
                ("down_proj", [h, i]),
            ] {
                v.push((p(&format!("mlp.{name}.weight")), shape.to_vec()));
                if self.mlp_bias {
                    v.push((p(&format!("mlp.{name}.bias")), vec![shape[0]]));
                }
            }
        }
        v.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            v.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        v
    }
}

/// Parses a Llama-family `config.json`'s text; `origin` names the file.
/// An architecture or option the family's engines cannot run is
/// `unsupported`, a malformed one `invalid model`.
pub fn parse_config(text: &str, origin: &Path) -> Result<Config, EngineError> {
    let cfg: Config = serde_json::from_str(text).map_err(|e| {
        EngineError::invalid_model(format!("{}: invalid Llama config: {e}", origin.display()))
    })?;
    if let Some(why) = cfg.unsupported() {
        return Err(EngineError::unsupported(format!(
            "{}: {why}",
            origin.display()
        )));
    }
    cfg.validate()
        .map_err(|why| EngineError::invalid_model(format!("{}: {why}", origin.display())))?;
    Ok(cfg)
}

/// Checks every tensor `cfg` reads (present, right shape, float) with
/// `lookup(name)`; `file` only labels the errors.
pub fn check_tensors(
    file: &Path,
    cfg: &Config,
    lookup: impl Fn(&str) -> Option<TensorMeta>,
) -> Result<(), EngineError> {
    crate::gpt2::check_expected(file, "", &cfg.expected_tensors(), lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<Config, EngineError> {
        parse_config(json, Path::new("m/config.json"))
    }

    const SMOLLM2: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
        "vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
        "num_attention_heads":9,"num_key_value_heads":3,"max_position_embeddings":8192,
        "rms_norm_eps":1e-5,"rope_theta":100000,"tie_word_embeddings":true,
        "bos_token_id":1,"eos_token_id":2,"torch_dtype":"bfloat16"}"#;

    #[test]
    fn smollm2_config_gives_its_shape_and_parameter_count() {
        let c = cfg(SMOLLM2).unwrap();
        assert_eq!((c.kv_heads(), c.head_dim(), c.group()), (3, 64, 3));
        assert_eq!(c.context(), 8192);
        // SmolLM2-135M: 134,515,008 parameters (the tied embedding once).
        assert_eq!(c.parameters(), 134_515_008);
        assert_eq!(c.expected_tensors().len(), 1 + 30 * 9 + 1);
        assert!(!c.qkv_bias() && !c.o_bias());
    }

    #[test]
    fn qwen2_has_qkv_bias_and_mistral_is_limited_to_its_window() {
        let q = cfg(
            r#"{"model_type":"qwen2","vocab_size":8,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
            "max_position_embeddings":32768,"sliding_window":4096,"use_sliding_window":false}"#,
        )
        .unwrap();
        assert!(q.qkv_bias() && !q.o_bias());
        assert_eq!(q.context(), 32768);
        let names: Vec<String> = q.expected_tensors().into_iter().map(|t| t.0).collect();
        assert!(names.contains(&"model.layers.0.self_attn.k_proj.bias".to_string()));
        assert!(!names.contains(&"model.layers.0.self_attn.o_proj.bias".to_string()));
        assert!(names.contains(&"lm_head.weight".to_string()));
        let m = cfg(
            r#"{"model_type":"mistral","vocab_size":8,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":32768,
            "sliding_window":4096}"#,
        )
        .unwrap();
        assert_eq!(m.limits().context, 4096);
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let mut c = Config::tiny();
        c.head_dim = Some(128);
        c.rope_theta = 500000.0;
        let plain = c.inv_freq();
        c.rope_scaling = Some(RopeScaling {
            rope_type: "llama3".into(),
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: Some(8192),
        });
        let scaled = c.inv_freq();
        assert_eq!(scaled.len(), 64);
        assert_eq!(scaled[0], plain[0]); // wavelength 2*pi < 2048
        assert!((scaled[63] - plain[63] / 32.0).abs() < 1e-15);
        // in between, strictly between the two
        let mid = (0..64)
            .find(|&i| scaled[i] != plain[i] && (scaled[i] - plain[i] / 32.0).abs() > 1e-15)
            .expect("a smoothed frequency");
        assert!(scaled[mid] < plain[mid] && scaled[mid] > plain[mid] / 32.0);
    }

    #[test]
    fn bad_configs_name_the_file_and_key() {
        let e = cfg(
            r#"{"model_type":"llama","vocab_size":8,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":3,"num_key_value_heads":2}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("m/config.json") && e.message.contains("num_key_value_heads"),
            "{e}"
        );
        let e = cfg(
            r#"{"model_type":"llama","vocab_size":8,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"hidden_act":"gelu"}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, engine_api::ErrorKind::Unsupported);
        assert!(e.message.contains("hidden_act \"gelu\""), "{e}");
        let e = cfg(r#"{"model_type":"llama","vocab_size":8,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"type":"yarn","factor":4}}"#)
        .unwrap_err();
        assert!(e.message.contains("rope_scaling type \"yarn\""), "{e}");
        let e = cfg(r#"{"model_type":"llama","hidden_size":8}"#).unwrap_err();
        assert!(e.message.contains("missing field `vocab_size`"), "{e}");
    }
}
