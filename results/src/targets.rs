//! `summary.json`'s `targets`: each target's verdict over the cells it
//! applies to, and the run's grade (computed by `engine-matrix-grade`).

use engine_matrix_format::targets::TargetDef;
use serde::{Deserialize, Serialize};

/// How a value stands against a target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within the target.
    Met,
    /// Outside the target, within the acceptable level.
    Acceptable,
    /// Outside both.
    Missed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Acceptable => "acceptable",
            Verdict::Missed => "missed",
        }
    }
}

/// The run's grade, from the share of targets met.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum Grade {
    /// Below 60%.
    Poor,
    /// 60–79%.
    Acceptable,
    /// 80–89%.
    Good,
    /// 90% and above.
    Excellent,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Excellent => "EXCELLENT",
            Grade::Good => "GOOD",
            Grade::Acceptable => "ACCEPTABLE",
            Grade::Poor => "POOR",
        }
    }

    pub fn parse(s: &str) -> Option<Grade> {
        [
            Grade::Excellent,
            Grade::Good,
            Grade::Acceptable,
            Grade::Poor,
        ]
        .into_iter()
        .find(|g| g.as_str().eq_ignore_ascii_case(s))
    }
}

/// One cell's value and verdict (over its repeats: the median value).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellVerdict {
    pub cell: String,
    pub engine: String,
    pub model: String,
    pub value: f64,
    /// How many repeats the value is the median of.
    pub samples: usize,
    pub verdict: Verdict,
}

/// A cell the target applies to that has no value for its metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unmeasured {
    pub cell: String,
    pub why: String,
}

/// One target's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetOutcome {
    pub def: TargetDef,
    /// The unit of the metric (`ms`, `tok/s`, `%`...).
    pub unit: String,
    /// The worst verdict over its cells; `None`: no ok cell it applies to
    /// has the metric (not counted in the grade).
    pub verdict: Option<Verdict>,
    pub cells: Vec<CellVerdict>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmeasured: Vec<Unmeasured>,
    /// Why the target has no verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One engine's share of the targets (a target counts for the engine when
/// it has a verdict on the engine's cells: the worst of them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineGrade {
    pub engine: String,
    pub targets_met: usize,
    pub targets_acceptable: usize,
    pub total_targets: usize,
    pub grade: Option<Grade>,
}

/// `summary.json`'s `targets`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetsReport {
    /// The profiles the matrix named.
    pub profiles: Vec<String>,
    pub targets: Vec<TargetOutcome>,
    /// Targets whose every cell met them.
    pub targets_met: usize,
    /// Targets with a verdict (met, acceptable or missed).
    pub total_targets: usize,
    pub targets_missed: usize,
    /// `None` without any target with a verdict.
    pub grade: Option<Grade>,
    pub by_engine: Vec<EngineGrade>,
}
