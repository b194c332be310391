//! `breaking_point:` of a concurrency scenario: raise the concurrency step
//! by step (its `concurrency` axis, in the order written, as the seeds do:
//! 1, 5, 10, 20, 50, 100, 200) until the error rate or the latency passes a
//! bound. The first level that passes one is the breaking point: the levels
//! above it are not run (their cells say so, as `unsupported` with the
//! reason), and the report gives the maximum stable concurrency and the
//! stable levels (the seeds' `max_sustainable_load` and
//! `stable_concurrency_levels`).
//!
//! ```yaml
//!   - name: breaking
//!     kind: concurrency
//!     breaking_point: {max_error_rate_pct: 1, max_ttft_p99_ms: 2000}
//!     axes:
//!       concurrency: [1, 5, 10, 20, 50, 100, 200]
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
        parts.join(", ")
    }
}

const KEYS: [&str; 3] = ["max_error_rate_pct", "max_ttft_p99_ms", "max_e2el_p99_ms"];

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
    })
}

/// The cells one search walks through: the same scenario, model, engine
/// and workload at every concurrency (the id without the parts the
/// concurrency sets: `-bsB-cC` and `-rR`).
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
