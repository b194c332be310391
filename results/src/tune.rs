//! What `engine-matrix tune` records: its trials (`trials.jsonl`), the
//! request (`tune-request.json`) and the whole outcome (`tune.json`), for
//! the reports and every other reader. The procedure that produces them
//! is engine-matrix-tune's.

use engine_matrix_format::tune::Constraint;
use engine_matrix_stats::resample::Change;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use engine_matrix_format::tune::Budget;

/// One configuration: option name -> value, every tunable of the engine
/// present (fixed ones included), so that two configurations compare
/// equal exactly when they run the same way.
pub type Config = BTreeMap<String, serde_json::Value>;

/// Which part of the procedure a trial belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Explore,
    Promote,
    Validate,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Explore => "explore",
            Phase::Promote => "promote",
            Phase::Validate => "validate",
        }
    }
}

/// How long a trial measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fidelity {
    Short,
    Full,
}

/// A trial's place: phase, index within it (the slot of the
/// configuration for validation) and round (validation only, else 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Step {
    pub phase: Phase,
    pub index: u32,
    pub round: u32,
}

impl Step {
    /// `explore-007`, `validate-r2-s1`.
    pub fn label(&self) -> String {
        match self.phase {
            Phase::Validate => format!("validate-r{}-s{}", self.round, self.index),
            p => format!("{}-{:03}", p.as_str(), self.index),
        }
    }
}

/// What measuring a configuration gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The objective's value; `broken` lists the constraints it broke
    /// (feasible when empty).
    Measured {
        value: f64,
        broken: Vec<String>,
        /// How far the broken constraints were broken: the sum of each
        /// one's distance past its bound, relative to the bound (0 when
        /// feasible). The search ranks infeasible trials by it.
        #[serde(default, skip_serializing_if = "is_zero")]
        violation: f64,
    },
    /// No value: the cell failed or was unsupported (the reason says).
    Infeasible { reason: String },
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Outcome {
    /// How far a trial that broke constraints broke them (see
    /// [`Outcome::Measured`]); `None` for a feasible trial or one without
    /// a value.
    pub fn violation(&self) -> Option<f64> {
        match self {
            Outcome::Measured {
                broken, violation, ..
            } if !broken.is_empty() && violation.is_finite() => Some(violation.max(0.0)),
            _ => None,
        }
    }

    /// The value of a feasible trial.
    pub fn feasible_value(&self) -> Option<f64> {
        match self {
            Outcome::Measured { value, broken, .. } if broken.is_empty() && value.is_finite() => {
                Some(*value)
            }
            _ => None,
        }
    }

    /// Why the trial is infeasible, if it is.
    pub fn why_infeasible(&self) -> Option<String> {
        match self {
            Outcome::Measured { broken, .. } if !broken.is_empty() => {
                Some(format!("broke {}", broken.join(", ")))
            }
            Outcome::Measured { value, .. } if !value.is_finite() => {
                Some("the objective has no value".into())
            }
            Outcome::Measured { .. } => None,
            Outcome::Infeasible { reason } => Some(reason.clone()),
        }
    }
}

/// The procedure's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub budget: Budget,
    pub higher_is_better: bool,
    pub seed: u64,
    /// Whether short trials exist (a scenario of one iteration has none:
    /// then every trial is full and nothing is promoted).
    pub short_trials: bool,
    /// Successive halving's reduction factor: a third is promoted.
    pub eta: u32,
    /// Configurations validated against the defaults.
    pub finalists: usize,
    /// Interleaved validation rounds (7: with three finalists, the paired
    /// interval can only exclude no change when every round agrees, and
    /// 2^-7 is well below the corrected 1.7% error rate).
    pub rounds: u32,
    /// Smallest relative change that counts (criterion.rs's noise
    /// threshold), e.g. 0.02.
    pub noise: f64,
    /// Confidence of the validation intervals, before the correction for
    /// several finalists.
    pub confidence: f64,
}

impl Settings {
    pub fn new(budget: Budget, higher_is_better: bool) -> Settings {
        Settings {
            budget,
            higher_is_better,
            seed: 0x7E57,
            short_trials: true,
            eta: 3,
            finalists: 3,
            rounds: 7,
            noise: 0.02,
            confidence: 0.95,
        }
    }

    /// (explore, promote) trial counts for a trial budget.
    pub fn split(&self, trials: u32) -> (u32, u32) {
        if !self.short_trials {
            return (trials, 0);
        }
        let promote = (trials / (self.eta + 1))
            .max(1)
            .min(trials.saturating_sub(1));
        (trials - promote, promote)
    }
}

/// One trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub step: Step,
    pub fidelity: Fidelity,
    pub config: Config,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Seconds since tuning began, when the trial ended.
    pub elapsed_s: f64,
}

/// A finalist's validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finalist {
    pub config: Config,
    /// Its value in each round (`None`: infeasible that round).
    pub values: Vec<Option<f64>>,
    /// Against the defaults, paired by round (`None` without two feasible
    /// pairs).
    pub change: Option<Change>,
    /// Why it cannot win, if it cannot (infeasible in most rounds).
    pub infeasible: Option<String>,
}

/// The convergence of the search: when the best-so-far value came within
/// `tolerance` of the search's final best.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub tolerance: f64,
    pub best: f64,
    /// Search trials (explore and promote, 1-based) up to that point.
    pub trials: u32,
    pub seconds: f64,
    /// Best-so-far after each search trial (`None` before a feasible one).
    pub curve: Vec<(u32, f64, Option<f64>)>,
}

/// What tuning concluded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub trials: Vec<TrialRecord>,
    /// The defaults' values in the validation rounds.
    pub default_values: Vec<Option<f64>>,
    pub finalists: Vec<Finalist>,
    /// The configuration to use (the defaults when nothing beat them).
    pub winner: Config,
    pub winner_is_default: bool,
    /// The winner against the defaults (`None` when the winner is the
    /// defaults).
    pub improvement: Option<Change>,
    /// One sentence on the choice.
    pub verdict: String,
    pub convergence: Option<Convergence>,
    pub grid_size: u64,
    /// Confidence of the intervals after the Bonferroni correction.
    pub confidence: f64,
    /// Why tuning ended early, if it did.
    pub stopped: Option<String>,
}

/// The request (flags, else the matrix's `tune:` block), checked; a
/// resumed run reads it back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub engine: String,
    pub scenario: String,
    /// The id of the tuned cell.
    pub cell: String,
    pub objective: String,
    pub higher_is_better: bool,
    pub constraints: Vec<Constraint>,
    pub budget: String,
    pub quick: bool,
    pub seed: u64,
    /// The noise threshold, a fraction.
    pub noise: f64,
}

/// `tune.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneFile {
    pub request: Request,
    /// Searched options with their domains (`threads: 1..=2`).
    pub searched: Vec<(String, String)>,
    pub fixed: Config,
    pub defaults: Config,
    pub settings: Settings,
    pub outcomes: Outcomes,
    /// The winner as an `engines:` entry (YAML).
    pub snippet: String,
    pub finished_at: String,
}

/// A configuration as `threads=2 kernels=fused`.
pub fn label(config: &Config) -> String {
    config
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}
