//! GPT-2's configuration, shared by every engine that implements GPT-2:
//! [`Config`] parses Hugging Face's `config.json` (unknown keys ignored,
//! missing keys take GPT-2 small's values), [`Config::expected_tensors`]
//! lists the checkpoint's tensors in HF's on-disk layout, and
//! [`read_config`] / [`check_tensors`] turn a broken model folder into an
//! `invalid model` error that names the file and the field or tensor.
//! Engines differ in their kernels, never in what model they think they run.

use engine_api::EngineError;
use serde::Deserialize;
use std::path::Path;

/// HF's GPT-2 `config.json`. Unknown keys are ignored; missing keys take
/// GPT-2 small's values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `None` (or JSON `null`) means `4 * n_embd`.
    pub n_inner: Option<usize>,
    pub layer_norm_epsilon: f64,
    /// `gelu_new` (tanh approximation; also `gelu_pytorch_tanh`,
    /// `gelu_fast`), `gelu` (exact, erf) or `relu`.
    pub activation_function: String,
    #[serde(deserialize_with = "token_id")]
    pub eos_token_id: Option<u32>,
    #[serde(deserialize_with = "token_id")]
    pub bos_token_id: Option<u32>,
    pub model_type: String,
    /// Divide attention scores by `sqrt(head_dim)` (HF default: true).
    pub scale_attn_weights: bool,
    /// Also divide them by `layer_index + 1` (HF default: false).
    pub scale_attn_by_inverse_layer_idx: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            eos_token_id: Some(50256),
            bos_token_id: Some(50256),
            model_type: "gpt2".into(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
        }
    }
}

/// Token ids may be a number, `null`, or a list (the first entry counts).
pub(crate) fn token_id<'de, De: serde::Deserializer<'de>>(
    d: De,
) -> std::result::Result<Option<u32>, De::Error> {
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

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    GeluTanh,
    GeluErf,
    Relu,
}

impl Config {
    /// What the kit's sequence table checks requests against.
    pub fn limits(&self) -> crate::Limits {
        crate::Limits {
            vocab: self.vocab_size,
            context: self.n_positions,
            eos: self.eos_token_id,
        }
    }

    /// GPT-2 small (124M).
    pub fn gpt2() -> Self {
        Self::default()
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    pub fn activation(&self) -> std::result::Result<Activation, String> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            "relu" => Ok(Activation::Relu),
            other => Err(format!(
                "activation_function {other:?} is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu)"
            )),
        }
    }

    /// Checks that the sizes are usable.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_dim()),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd ({}) is not a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(format!(
                "vocab_size {} does not fit u32 token ids",
                self.vocab_size
            ));
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return Err("layer_norm_epsilon must be positive".into());
        }
        self.activation().map(|_| ())
    }

    /// `(name, shape)` of every tensor the model reads, without prefix, in
    /// HF's on-disk layout.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (c, i) = (self.n_embd, self.inner_dim());
        let mut v = vec![
            ("wte.weight".to_string(), vec![self.vocab_size, c]),
            ("wpe.weight".to_string(), vec![self.n_positions, c]),
        ];
        for l in 0..self.n_layer {
            let p = |s: &str| format!("h.{l}.{s}");
            v.extend([
                (p("ln_1.weight"), vec![c]),
                (p("ln_1.bias"), vec![c]),
                (p("attn.c_attn.weight"), vec![c, 3 * c]),
                (p("attn.c_attn.bias"), vec![3 * c]),
                (p("attn.c_proj.weight"), vec![c, c]),
                (p("attn.c_proj.bias"), vec![c]),
                (p("ln_2.weight"), vec![c]),
                (p("ln_2.bias"), vec![c]),
                (p("mlp.c_fc.weight"), vec![c, i]),
                (p("mlp.c_fc.bias"), vec![i]),
                (p("mlp.c_proj.weight"), vec![i, c]),
                (p("mlp.c_proj.bias"), vec![c]),
            ]);
        }
        v.push(("ln_f.weight".into(), vec![c]));
        v.push(("ln_f.bias".into(), vec![c]));
        v
    }
}

/// The name prefix of a checkpoint's tensors: `""` (the original GPT-2
/// files) or `"transformer."` (newer `save_pretrained` output).
pub fn detect_prefix(has: impl Fn(&str) -> bool) -> Option<&'static str> {
    ["", "transformer."]
        .into_iter()
        .find(|p| has(&format!("{p}wte.weight")))
}

/// Reads and validates `dir/config.json` (a GPT-2 model folder).
pub fn read_config(dir: &Path) -> Result<Config, EngineError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        EngineError::invalid_model(format!(
            "{}: cannot read ({e}); a GPT-2 model folder needs config.json and model.safetensors",
            path.display()
        ))
    })?;
    let cfg: Config = serde_json::from_str(&text).map_err(|e| {
        EngineError::invalid_model(format!("{}: invalid JSON: {e}", path.display()))
    })?;
    if cfg.model_type != "gpt2" {
        return Err(EngineError::invalid_model(format!(
            "{}: model_type is {:?}, expected \"gpt2\"",
            path.display(),
            cfg.model_type
        )));
    }
    if let Err(why) = cfg.activation() {
        return Err(EngineError::unsupported(format!(
            "{}: {why}",
            path.display()
        )));
    }
    cfg.validate()
        .map_err(|why| EngineError::invalid_model(format!("{}: {why}", path.display())))?;
    Ok(cfg)
}

/// What a checkpoint says about one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub shape: Vec<usize>,
    /// f16, bf16, f32 or f64.
    pub is_float: bool,
    pub dtype: String,
}

/// Checks every tensor the model reads (present, right shape, float) with
/// `lookup(full_name)`, and returns the name prefix (`""` or
/// `"transformer."`). `file` only labels the errors.
pub fn check_tensors(
    file: &Path,
    cfg: &Config,
    lookup: impl Fn(&str) -> Option<TensorMeta>,
) -> Result<&'static str, EngineError> {
    let prefix = detect_prefix(|n| lookup(n).is_some()).ok_or_else(|| {
        EngineError::invalid_model(format!(
            "{}: missing tensor wte.weight (also looked for transformer.wte.weight)",
            file.display()
        ))
    })?;
    check_expected(file, prefix, &cfg.expected_tensors(), lookup)?;
    Ok(prefix)
}

/// Checks that every `(name, shape)` of `expected` is in the checkpoint
/// under `prefix` + name (`lookup(full_name)`), with that shape and a
/// float dtype. `file` only labels the errors.
pub fn check_expected(
    file: &Path,
    prefix: &str,
    expected: &[(String, Vec<usize>)],
    lookup: impl Fn(&str) -> Option<TensorMeta>,
) -> Result<(), EngineError> {
    let shown = file.display();
    for (name, want) in expected {
        let full = format!("{prefix}{name}");
        let meta = lookup(&full).ok_or_else(|| {
            EngineError::invalid_model(format!(
                "{shown}: missing tensor {full} (expected shape {want:?})"
            ))
        })?;
        if &meta.shape != want {
            return Err(EngineError::invalid_model(format!(
                "{shown}: tensor {full} has shape {:?}, expected {want:?} (from config.json)",
                meta.shape
            )));
        }
        if !meta.is_float {
            return Err(EngineError::invalid_model(format!(
                "{shown}: tensor {full} has dtype {}; expected a float dtype",
                meta.dtype
            )));
        }
    }
    Ok(())
}

/// What every GPT-2 engine requires of a [`engine_api::ModelSpec`]:
/// architecture `gpt2` and `quantization: none`; anything else is
/// `unsupported`, naming `engine`.
pub fn check_spec(engine: &str, spec: &engine_api::ModelSpec) -> Result<(), EngineError> {
    crate::arch::check_spec(engine, spec, &["gpt2"])
}
