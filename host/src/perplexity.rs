//! `engine-matrix perplexity`: one engine's perplexity of one model over
//! the quality pass's text, as `llama-perplexity` prints it for llama.cpp.
//!
//! The text, the windows and the arithmetic are the quality pass's
//! ([`crate::quality::eval_text`], `engine_matrix_stats::quality`): the
//! assistant replies of the ShareGPT file joined by blank lines, the first
//! `tokens` tokens in windows of `context`, each scored on its second half.
//! `--write-text FILE` writes that joined text, so that llama.cpp's
//! `llama-perplexity -f FILE -c CONTEXT --chunks tokens/CONTEXT` evaluates
//! the very same windows (its tokenizer gives the same ids, and SmolLM2's
//! GGUF adds no BOS): the external anchor of docs/quality.md.

use anyhow::{bail, Context, Result};
use engine_matrix_stats::quality::{windows, QualityAcc};
use std::path::PathBuf;
use std::time::Instant;

/// Everything `perplexity` is given.
#[derive(Debug, Clone)]
pub struct PerplexityOptions {
    pub plugin_dir: PathBuf,
    pub engine: String,
    /// Engine options (a JSON object).
    pub options: serde_json::Value,
    /// A model folder or a `.gguf` file.
    pub model: PathBuf,
    pub dtype: String,
    pub quantization: String,
    pub tokens: usize,
    pub context: usize,
    /// The ShareGPT file (default: the provisioned one).
    pub text: Option<PathBuf>,
    /// Where to write the evaluated text.
    pub write_text: Option<PathBuf>,
}

/// What `perplexity` measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub tokens: usize,
    pub context: usize,
    pub windows: u64,
    pub scored: u64,
    pub nll_mean: f64,
    pub perplexity: f64,
    pub text: String,
    pub seconds: f64,
}

pub fn run(opts: &PerplexityOptions) -> Result<Measured> {
    if !opts.options.is_object() {
        bail!("--options must be a JSON object, not {}", opts.options);
    }
    if opts.context < 4 || opts.tokens < opts.context {
        bail!(
            "--tokens {} --context {}: at least one whole window of at least 4 tokens is needed",
            opts.tokens,
            opts.context
        );
    }
    let dir = crate::generate::model_folder(&opts.model, &opts.dtype)?;
    let tm = crate::models::text_model(&dir)?.with_context(|| {
        format!(
            "{} has no tokenizer, so there is no text to score (synthetic weights have none)",
            dir.display()
        )
    })?;
    let path = opts
        .text
        .clone()
        .unwrap_or_else(crate::workload::default_sharegpt);
    let t = crate::quality::eval_text(&path, opts.tokens, &tm).map_err(anyhow::Error::msg)?;
    if let Some(w) = &opts.write_text {
        std::fs::write(w, &t.text).with_context(|| format!("cannot write {}", w.display()))?;
    }
    let (_plugin, model) = crate::generate::load_model(
        &opts.plugin_dir,
        &opts.engine,
        &opts.options,
        &dir,
        &opts.dtype,
        &opts.quantization,
    )?;
    let t0 = Instant::now();
    let mut acc = QualityAcc::default();
    for (i, w) in windows(t.ids.len(), opts.context).into_iter().enumerate() {
        let chunk = &t.ids[w];
        let l = model
            .score(chunk.into())
            .into_result()
            .map_err(|e| anyhow::anyhow!("engine '{}': score of window {i}: {e}", opts.engine))?;
        acc.add_window(chunk, &l.data, None, l.vocab as usize)
            .map_err(|e| anyhow::anyhow!("engine '{}': window {i}: {e}", opts.engine))?;
    }
    let f = acc
        .figures()
        .context("no position was scored (is --context at least 4?)")?;
    Ok(Measured {
        tokens: f.windows as usize * opts.context,
        context: opts.context,
        windows: f.windows,
        scored: f.scored,
        nll_mean: f.nll_mean,
        perplexity: f.perplexity,
        text: t.description,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
