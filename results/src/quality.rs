//! A cell's quality figures: perplexity over an evaluation text and
//! agreement with a reference engine, computed once per (engine, model,
//! dtype, quantization) through the ABI's `score` and carried by every
//! cell of that combination (see `docs/quality.md`).

use serde::{Deserialize, Serialize};

/// Perplexity and agreement with the reference of one (engine, model,
/// dtype, quantization).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QualityRecord {
    /// What was evaluated, e.g. `sharegpt: the assistant replies of
    /// conversations 1-212, joined by blank lines`.
    pub text: String,
    /// Tokens evaluated: `windows * context`.
    pub tokens: usize,
    /// Tokens per window (each window runs from scratch).
    pub context: usize,
    pub windows: u64,
    /// Positions scored (the second half of each window).
    pub scored: u64,
    /// Mean negative log-likelihood of the scored tokens (nats) and its
    /// exponential (`None`: the evaluation could not run, see `note`).
    pub nll_mean: Option<f64>,
    pub perplexity: Option<f64>,
    /// The engine the distributions are compared with (`None`: this is
    /// the reference, or the comparison could not run: see `note`).
    pub reference: Option<String>,
    /// Mean and 99th percentile of `KL(reference || this)` over the scored
    /// positions, nats.
    pub kld_mean: Option<f64>,
    pub kld_p99: Option<f64>,
    /// Share of scored positions whose most likely next token is the
    /// reference's.
    pub top1_agreement: Option<f64>,
    /// Wall time of the evaluation (this engine and the reference).
    pub seconds: f64,
    /// Why a figure is missing, or what was special.
    pub note: Option<String>,
}
