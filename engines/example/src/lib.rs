//! engine-matrix example plugin `example` (`libem_example.so`): the
//! smallest complete engine, to copy when adding one. The walkthrough is
//! `docs/writing-an-engine.md`.
//!
//! The model is a toy, and says so in its info: a bigram model on a GPT-2
//! checkpoint's token embeddings. After token `t`, the logit of token `u`
//! is the dot product of their embeddings (`wte.weight`), so the engine
//! reads real weights and does real arithmetic (`vocab × n_embd`
//! multiply-adds per token) but has no layers, no attention and no cache.
//! Everything else (the queue, the three batching policies, sampling, stop
//! conditions, sink calls, engine-side timing) comes from `engine-kit`,
//! exactly as for candle, torch and onnx.

use engine_api::{Engine, EngineError, EngineInfo, LoadOptions, Model, ModelSpec};
use engine_kit::{CacheBytes, Kernels, Limits, Sequences};
use std::path::Path;

/// The engine's name in matrices.
const NAME: &str = "example";

/// The options a matrix may pass (`options:`); unknown keys are errors.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Accepted because matrices pass it to every engine; the toy runs on
    /// the kit's scheduler thread alone.
    #[serde(rename = "threads")]
    _threads: Option<usize>,
}

/// The loaded model: the embedding matrix, row-major `[vocab, dim]`.
struct Bigram {
    wte: Vec<f32>,
    vocab: usize,
    dim: usize,
    n_positions: usize,
    eos: Option<u32>,
}

impl Bigram {
    fn open(dir: &Path) -> Result<Self, EngineError> {
        let cfg = engine_kit::gpt2::read_config(dir)?;
        let path = dir.join("model.safetensors");
        let bad = |why: String| EngineError::invalid_argument(format!("{}: {why}", path.display()));
        let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let prefix = engine_kit::gpt2::detect_prefix(|n| st.tensor(n).is_ok())
            .ok_or_else(|| bad("no wte.weight tensor".into()))?;
        let t = st
            .tensor(&format!("{prefix}wte.weight"))
            .map_err(|e| bad(e.to_string()))?;
        let (vocab, dim) = (cfg.vocab_size, cfg.n_embd);
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != [vocab, dim] {
            return Err(bad(format!(
                "wte.weight is {:?} {:?}, expected F32 [{vocab}, {dim}]",
                t.dtype(),
                t.shape()
            )));
        }
        let wte = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Bigram {
            wte,
            vocab,
            dim,
            n_positions: cfg.n_positions,
            eos: cfg.eos_token_id,
        })
    }

    /// Appends the next-token logits after `token` to `out`.
    fn row(&self, token: u32, out: &mut Vec<f32>) {
        let e = &self.wte[token as usize * self.dim..][..self.dim];
        out.extend(
            self.wte
                .chunks_exact(self.dim)
                .map(|u| u.iter().zip(e).map(|(a, b)| a * b).sum::<f32>()),
        );
    }
}

/// What the kit needs from an engine: its limits, logits for new prompts
/// and for one more token of running sequences, and its caches' size. The
/// kit's [`Sequences`] table has checked every prompt, token and length
/// before calling, and keeps the caches (none here: `()`).
impl Kernels for Bigram {
    type Cache = ();

    fn limits(&self) -> Limits {
        Limits {
            vocab: self.vocab,
            context: self.n_positions,
            eos: self.eos,
        }
    }
    fn weight_bytes(&self) -> u64 {
        (self.wte.len() * 4) as u64
    }
    fn prefill(
        &mut self,
        prompts: &[&[u32]],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<()>, EngineError> {
        logits.clear();
        for prompt in prompts {
            self.row(prompt[prompt.len() - 1], logits);
        }
        Ok(vec![(); prompts.len()])
    }
    fn decode(
        &mut self,
        tokens: &[u32],
        _: &mut [&mut ()],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        logits.clear();
        tokens.iter().for_each(|&t| self.row(t, logits));
        Ok(())
    }
    fn score(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        logits.clear();
        tokens.iter().for_each(|&t| self.row(t, logits));
        Ok(())
    }
    fn cache_bytes(&self, _: &()) -> CacheBytes {
        CacheBytes::default()
    }
}

struct ExampleEngine;

impl Engine for ExampleEngine {
    fn info(&self) -> EngineInfo {
        let list = |v: &[&str]| v.iter().map(|&s| s.into()).collect();
        EngineInfo {
            name: NAME.into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            runtime_version: "none (a bigram toy on the checkpoint's embeddings)".into(),
            devices: list(&["cpu"]),
            dtypes: list(&["f32"]),
            quantizations: list(&["none"]),
            capabilities: engine_kit::capabilities(&[]),
            // The kit's scheduler options (the toy ignores `threads`).
            tunables: engine_api::tunable::to_json(
                &engine_kit::tunables()
                    .into_iter()
                    .filter(|t| t.name != "threads")
                    .collect::<Vec<_>>(),
            ),
        }
    }

    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
        let _: Options = engine_kit::engine_options(NAME, options.options_json.as_str())?;
        engine_kit::gpt2::check_spec(NAME, spec)?;
        if spec.dtype.as_str() != "f32" {
            let why = format!(
                "dtype {:?}: the {NAME} engine runs f32 only",
                spec.dtype.as_str()
            );
            return Err(EngineError::unsupported(why));
        }
        let model = Sequences::new(Bigram::open(Path::new(spec.path.as_str()))?);
        Ok(Box::new(engine_kit::spawn(model, options)?))
    }
}

engine_api::export_engine!(Ok(ExampleEngine));
