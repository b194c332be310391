//! `engine-matrix generate`: one prompt through one engine, the
//! continuation printed as text while it is generated, then its token and
//! timing figures. The quickest proof that a model works on an engine.
//!
//! The model is a Hugging Face folder with a `tokenizer.json`, or a GGUF
//! file (imported into the model cache first, see [`crate::models`]).
//! `--chat` wraps the prompt in the model's chat template as one user
//! message (with the assistant's turn opened), as a chat client would.
//! Synthetic models have no tokenizer: asking them for text is an error
//! that says so.
//!
//! Timing is taken in this process, as tokens reach the sink: TTFT from
//! submit to the first token, decode rate over the tokens after it. These
//! are single-request figures for a smoke test; benchmarks are matrices.

use crate::plugins;
use anyhow::{bail, Context, Result};
use engine_api::abi_stable::sabi_trait::TD_Opaque;
use engine_api::abi_stable::std_types::RSlice;
use engine_api::ffi::{SinkFfi, SinkFfi_TO};
use engine_api::{
    BatchPolicy, Completion, EngineError, LoadOptions, ModelSpec, Request, Sampling, TokenEvent,
};
use engine_matrix_text::Message;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Everything `generate` is given.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub plugin_dir: PathBuf,
    pub engine: String,
    /// Engine options (a JSON object).
    pub options: serde_json::Value,
    /// A model folder or a `.gguf` file.
    pub model: PathBuf,
    pub dtype: String,
    pub max_tokens: u32,
    /// Apply the model's chat template.
    pub chat: bool,
    /// 0: greedy.
    pub temperature: f32,
    pub seed: u64,
    pub prompt: String,
}

/// What a generation produced.
#[derive(Debug, Clone)]
pub struct Generated {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: String,
    pub ttft: Duration,
    /// Tokens per second after the first.
    pub decode_rate: Option<f64>,
}

enum Ev {
    Tokens(Vec<u32>, Instant),
    Done(Completion),
    Error(EngineError),
}

struct ChannelSink(mpsc::Sender<Ev>);

impl SinkFfi for ChannelSink {
    fn tokens(&self, step: RSlice<'_, TokenEvent>) {
        let now = Instant::now();
        let _ = self
            .0
            .send(Ev::Tokens(step.iter().map(|e| e.token).collect(), now));
    }
    fn done(&self, c: Completion) {
        let _ = self.0.send(Ev::Done(c));
    }
    fn error(&self, _request_id: u64, e: EngineError) {
        let _ = self.0.send(Ev::Error(e));
    }
}

/// The model folder `model` names (a GGUF is imported in `dtype` first).
pub(crate) fn model_folder(model: &Path, dtype: &str) -> Result<PathBuf> {
    if crate::models::is_gguf(model) {
        let (dir, fresh) = crate::models::ensure_imported(model, dtype)?;
        if fresh {
            eprintln!("imported {} into {}", model.display(), dir.display());
        }
        return Ok(dir);
    }
    if !model.is_dir() {
        bail!(
            "--model {}: not a model folder or a .gguf file",
            model.display()
        );
    }
    Ok(model.to_path_buf())
}

/// The model of folder `dir` loaded by plugin `engine` (from
/// `plugin_dir`) with `options`, `dtype` and `quantization`, for a single
/// request at a time (no batching). Its architecture is `config.json`'s.
/// Returns the plugin with the model: keep it alive while the model is.
pub(crate) fn load_model(
    plugin_dir: &Path,
    engine: &str,
    options: &serde_json::Value,
    dir: &Path,
    dtype: &str,
    quantization: &str,
) -> Result<(plugins::LoadedEngine, engine_api::ModelBox)> {
    let config = dir.join("config.json");
    let config_text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let arch = engine_kit::arch::model_type(&config_text, &config)?;
    let file = plugins::find(plugin_dir, engine)?;
    let loaded = plugins::load(&file)?;
    let spec = ModelSpec {
        name: dir
            .file_name()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
            .into(),
        architecture: arch.into(),
        path: dir.display().to_string().into(),
        dtype: dtype.into(),
        quantization: quantization.into(),
    };
    let load = LoadOptions {
        batch_policy: BatchPolicy::None,
        max_batch: 1,
        options_json: options.to_string().into(),
    };
    let model = loaded
        .engine
        .load(&spec, &load)
        .into_result()
        .map_err(|e| {
            anyhow::anyhow!(
                "engine '{engine}' cannot load {} ({dtype}, quantization {quantization}): {e}",
                dir.display()
            )
        })?;
    Ok((loaded, model))
}

/// Runs the generation, writing the text to `out` as it arrives.
pub fn run(opts: &GenerateOptions, out: &mut dyn Write) -> Result<Generated> {
    if !opts.options.is_object() {
        bail!("--options must be a JSON object, not {}", opts.options);
    }
    let dir = model_folder(&opts.model, &opts.dtype)?;
    let text = crate::models::text_model(&dir)?.with_context(|| {
        format!(
            "{} has no tokenizer.json, so it cannot take text (synthetic weights have none, \
             except GPT-2's when its BPE is provisioned; a Hugging Face folder or an imported \
             GGUF has one)",
            dir.display()
        )
    })?;
    let prompt = if opts.chat {
        text.chat(&[Message::user(&opts.prompt)])?
    } else {
        text.encode(&opts.prompt, true)?
    };
    if prompt.is_empty() {
        bail!("the prompt has no tokens");
    }
    let t = Instant::now();
    let (_plugin, model) = load_model(
        &opts.plugin_dir,
        &opts.engine,
        &opts.options,
        &dir,
        &opts.dtype,
        "none",
    )?;
    eprintln!(
        "{}: loaded {} in {:.2} s; {} prompt tokens",
        opts.engine,
        dir.display(),
        t.elapsed().as_secs_f64(),
        prompt.len()
    );

    let (tx, rx) = mpsc::channel();
    let sink = SinkFfi_TO::from_value(ChannelSink(tx), TD_Opaque);
    let request = Request {
        id: 0,
        prompt: prompt.clone().into(),
        max_new_tokens: opts.max_tokens,
        sampling: Sampling {
            temperature: opts.temperature,
            seed: opts.seed,
            ..Sampling::GREEDY
        },
        ignore_eos: false,
    };
    let submitted = Instant::now();
    model
        .submit(vec![request].into(), sink)
        .into_result()
        .map_err(|e| anyhow::anyhow!("submit: {e}"))?;

    let mut stream = engine_matrix_text::Detokenizer::new(true);
    let mut tokens = Vec::new();
    let mut first: Option<Instant> = None;
    let mut last = submitted;
    let completion = loop {
        match rx.recv().context("the engine dropped the request")? {
            Ev::Tokens(ids, at) => {
                first.get_or_insert(at);
                last = at;
                for id in ids {
                    tokens.push(id);
                    write!(out, "{}", stream.step(&text, id)?)?;
                }
                out.flush()?;
            }
            Ev::Done(c) => break c,
            Ev::Error(e) => bail!("engine '{}' failed: {e}", opts.engine),
        }
    };
    writeln!(out)?;
    let ttft = first.map_or(Duration::ZERO, |f| f - submitted);
    let decode_rate = match first {
        Some(f) if tokens.len() > 1 && last > f => {
            Some((tokens.len() - 1) as f64 / (last - f).as_secs_f64())
        }
        _ => None,
    };
    Ok(Generated {
        prompt_tokens: prompt.len(),
        text: text.decode(&tokens, true)?,
        tokens,
        finish_reason: completion.finish_reason.as_str().to_string(),
        ttft,
        decode_rate,
    })
}
