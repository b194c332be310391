//! `breaking_point:` of a closed-loop scenario: raise the load step by
//! step until the engine breaks. The level is the concurrency of a
//! `concurrency` scenario (its axis in the order written, as the seeds do:
//! 1, 5, 10, 20, 50, 100, 200) and the batch size of a `latency` or
//! `throughput` one (the seeds' S5 memory stress: 1, 2, 4, ... until the
//! engine fails or memory reaches a share of the system's). The first level
//! that passes a bound, or fails, is the breaking point: the levels above
//! it are not run (their cells say so, as `unsupported` with the reason;
//! an out-of-memory kill fails only its own cell, as any worker crash),
//! and the report gives the highest stable level, the stable levels (the
//! seeds' `max_sustainable_load` and `stable_concurrency_levels`) and the
//! peak memory of each level.
//!
//! ```yaml
//!   - name: breaking
//!     kind: concurrency
//!     breaking_point: {max_error_rate_pct: 1, max_ttft_p99_ms: 2000}
//!     axes:
//!       concurrency: [1, 5, 10, 20, 50, 100, 200]
//!   - name: memory
//!     kind: latency
//!     breaking_point: {max_peak_rss_pct: 50}
//!     axes:
//!       batch_size: [1, 2, 4, 8, 16, 32, 64, 128]
//! ```

use crate::yaml::At;
use crate::{Cell, MatrixError};
use serde::{Deserialize, Serialize};

/// The bounds a level must stay within to be stable.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakingPoint {
    /// Failed requests over all requests, percent (default 1).
    pub max_error_rate_pct: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttft_p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_e2el_p99_ms: Option<f64>,
    /// Peak RSS of the engine's process as a share of the system's
    /// memory, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_peak_rss_pct: Option<f64>,
}

impl BreakingPoint {
    /// `error rate ≤ 1%, TTFT p99 ≤ 2000 ms`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("error rate ≤ {}%", self.max_error_rate_pct)];
        if let Some(t) = self.max_ttft_p99_ms {
            parts.push(format!("TTFT p99 ≤ {t} ms"));
        }
        if let Some(t) = self.max_e2el_p99_ms {
            parts.push(format!("E2EL p99 ≤ {t} ms"));
        }
        if let Some(t) = self.max_peak_rss_pct {
            parts.push(format!("peak RSS ≤ {t}% of memory"));
        }
        parts.join(", ")
    }
}

const KEYS: [&str; 4] = [
    "max_error_rate_pct",
    "max_ttft_p99_ms",
    "max_e2el_p99_ms",
    "max_peak_rss_pct",
];

pub(crate) fn parse(at: &At<'_>) -> Result<BreakingPoint, MatrixError> {
    let m = at.map(&KEYS)?;
    let positive = |key: &str| -> Result<Option<f64>, MatrixError> {
        match m.opt(key) {
            None => Ok(None),
            Some(v) => {
                let x = v.non_negative()?;
                if x > 0.0 {
                    Ok(Some(x))
                } else {
                    Err(v.err("expected a bound above 0"))
                }
            }
        }
    };
    let max_error_rate_pct = match m.opt("max_error_rate_pct") {
        Some(v) => {
            let x = v.non_negative()?;
            if x > 100.0 {
                return Err(v.err("a percentage: at most 100"));
            }
            x
        }
        None => 1.0,
    };
    Ok(BreakingPoint {
        max_error_rate_pct,
        max_ttft_p99_ms: positive("max_ttft_p99_ms")?,
        max_e2el_p99_ms: positive("max_e2el_p99_ms")?,
        max_peak_rss_pct: positive("max_peak_rss_pct")?,
    })
}

/// The level a search raises: the concurrency of a closed loop, the
/// batch size of a latency or throughput scenario.
pub fn level(cell: &Cell) -> u32 {
    match cell.kind {
        crate::ScenarioKind::Concurrency => cell.params.concurrency,
        _ => cell.params.batch_size,
    }
}

/// What [`level`] is, in words.
pub fn level_name(kind: crate::ScenarioKind) -> &'static str {
    match kind {
        crate::ScenarioKind::Concurrency => "concurrency",
        _ => "batch size",
    }
}

/// The cells one search walks through: the same scenario, model, engine
/// and workload at every level (the id without the parts the level sets:
/// `-bsB-cC`, `-rR`, `-nN`, `-mbM`).
pub fn search_key(cell: &Cell) -> String {
    let p = &cell.params;
    format!(
        "{}/{}/{}/{:?}/{}/{}/{}/{}/{}/{}",
        cell.scenario,
        cell.model,
        cell.engine,
        p.label,
        p.input_tokens,
        p.output_tokens,
        p.dtype,
        p.quantization,
        p.pressure.map(|x| x.tag()).unwrap_or_default(),
        p.dataset
            .as_ref()
            .map(|d| d.lengths_tag(p.input_tokens, p.output_tokens))
            .unwrap_or_default(),
    )
}
