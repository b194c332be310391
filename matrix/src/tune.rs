//! `tune:`: what `engine-matrix tune` searches when the command line does
//! not say (the flags win over the block).
//!
//! ```yaml
//! tune:
//!   scenario: decode                # the scenario whose cell is tuned
//!   objective: output_throughput    # a target metric (see targets::METRICS)
//!   constraints:                    # a trial breaking one is infeasible
//!     - ttft_ms.p99 < 500
//!   budget: 40trials                # or a time: 20m, 90s, 1h
//!   space:                          # per engine: narrow or fix options
//!     candle:
//!       threads: [1, 2]             # a list: only these values
//!       kernels: fused              # a value: fixed
//!       max_batch: {min: 1, max: 32}  # a range inside the declared one
//! ```
//!
//! The names in `space:` are checked against what the engine declares
//! ([`engine_api::tunable`]) when `tune` loads it, since only the plugin
//! knows them; here they are checked for shape, and each engine must be
//! one of the matrix's.

use crate::yaml::At;
use crate::{EngineDef, MatrixError, ScenarioDef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const KEYS: [&str; 5] = ["scenario", "objective", "constraints", "budget", "space"];

/// The `tune:` block as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TuneDef {
    pub scenario: Option<String>,
    pub objective: Option<String>,
    pub constraints: Vec<String>,
    pub budget: Option<String>,
    /// Engine -> option -> narrowing: a list, a `{min, max}` range or one
    /// value.
    pub space: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

pub(crate) fn parse(
    t: &At<'_>,
    engines: &[EngineDef],
    scenarios: &[ScenarioDef],
) -> Result<TuneDef, MatrixError> {
    let t = t.map(&KEYS)?;
    let mut def = TuneDef::default();
    if let Some(s) = t.opt("scenario") {
        let name = s.str()?;
        if !scenarios.iter().any(|x| x.name == name) {
            let names: Vec<&str> = scenarios.iter().map(|x| x.name.as_str()).collect();
            return Err(s.err(format!(
                "tune scenario `{name}` is not a scenario of this matrix (scenarios: {})",
                names.join(", ")
            )));
        }
        def.scenario = Some(name.to_string());
    }
    if let Some(o) = t.opt("objective") {
        let name = o.str()?;
        if crate::targets::metric(name).is_none() {
            return Err(o.err(format!(
                "unknown objective `{name}` (a target metric, e.g. output_throughput or ttft_ms.p95)"
            )));
        }
        def.objective = Some(name.to_string());
    }
    if let Some(c) = t.opt("constraints") {
        for item in c.seq()? {
            let text = item.str()?;
            if let Err(e) = parse_constraint(text) {
                return Err(item.err(e));
            }
            def.constraints.push(text.to_string());
        }
    }
    if let Some(b) = t.opt("budget") {
        let text = match b.int() {
            Some(n) => format!("{n}trials"),
            None => b.str()?.to_string(),
        };
        if let Err(e) = parse_budget(&text) {
            return Err(b.err(e));
        }
        def.budget = Some(text);
    }
    if let Some(s) = t.opt("space") {
        for (engine, options) in s.map_any()? {
            if !engines.iter().any(|e| e.name == engine) {
                let names: Vec<&str> = engines.iter().map(|e| e.name.as_str()).collect();
                return Err(options.err(format!(
                    "tune space for `{engine}`: not an engine of this matrix (engines: {})",
                    names.join(", ")
                )));
            }
            let mut narrowed = BTreeMap::new();
            for (option, value) in options.map_any()? {
                let v = value.json()?;
                if let Err(e) = check_narrowing(&v) {
                    return Err(value.err(format!("tune space {engine}.{option}: {e}")));
                }
                narrowed.insert(option.to_string(), v);
            }
            def.space.insert(engine.to_string(), narrowed);
        }
    }
    Ok(def)
}

/// A narrowing is a non-empty list of scalars, `{min, max}` of integers,
/// or one scalar.
fn check_narrowing(v: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match v {
        Value::Array(a) if a.is_empty() => Err("an empty list allows nothing".into()),
        Value::Array(a)
            if a.iter()
                .any(|x| x.is_array() || x.is_object() || x.is_null()) =>
        {
            Err("a list of values (numbers, strings or booleans)".into())
        }
        Value::Object(m) => {
            if m.keys().any(|k| k != "min" && k != "max") || m.is_empty() {
                return Err("a range is {min: N, max: M}".into());
            }
            let int = |k: &str| m.get(k).map(|x| x.as_i64().ok_or(()));
            match (int("min"), int("max")) {
                (Some(Err(())), _) | (_, Some(Err(()))) => {
                    Err("a range's bounds are integers".into())
                }
                (Some(Ok(lo)), Some(Ok(hi))) if lo > hi => Err(format!("min {lo} > max {hi}")),
                _ => Ok(()),
            }
        }
        Value::Null => Err("a value, a list or {min, max}".into()),
        _ => Ok(()),
    }
}

/// A constraint: `METRIC OP NUMBER`, OP one of `<`, `<=`, `>`, `>=`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub metric: String,
    pub op: String,
    pub value: f64,
}

impl Constraint {
    /// Whether `v` satisfies it.
    pub fn holds(&self, v: f64) -> bool {
        match self.op.as_str() {
            "<" => v < self.value,
            "<=" => v <= self.value,
            ">" => v > self.value,
            _ => v >= self.value,
        }
    }

    /// How far `v` is past the bound, relative to the bound (0 when it
    /// holds; a bound of 0 counts distances in units).
    pub fn distance(&self, v: f64) -> f64 {
        if self.holds(v) {
            return 0.0;
        }
        let past = match self.op.as_str() {
            "<" | "<=" => v - self.value,
            _ => self.value - v,
        };
        let scale = if self.value.abs() > 1e-12 {
            self.value.abs()
        } else {
            1.0
        };
        // At the bound itself a strict constraint is broken by a hair.
        (past / scale).max(1e-9)
    }

    /// `ttft_ms.p99 < 500`.
    pub fn describe(&self) -> String {
        format!("{} {} {}", self.metric, self.op, self.value)
    }
}

/// Reads `ttft_ms.p99<500` (spaces optional); the metric must be a target
/// metric.
pub fn parse_constraint(text: &str) -> Result<Constraint, String> {
    let ops = ["<=", ">=", "<", ">"];
    let (pos, op) = ops
        .iter()
        .filter_map(|op| text.find(op).map(|p| (p, *op)))
        .min_by_key(|(p, op)| (*p, std::cmp::Reverse(op.len())))
        .ok_or_else(|| {
            format!("constraint `{text}`: expected METRIC OP NUMBER with OP one of <, <=, >, >=")
        })?;
    let metric = text[..pos].trim();
    let number = text[pos + op.len()..].trim();
    if crate::targets::metric(metric).is_none() {
        return Err(format!(
            "constraint `{text}`: unknown metric `{metric}` (a target metric, e.g. ttft_ms.p99)"
        ));
    }
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("constraint `{text}`: `{number}` is not a number"))?;
    Ok(Constraint {
        metric: metric.to_string(),
        op: op.to_string(),
        value,
    })
}

/// How much searching `tune` may do.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// Search trials (the validation repeats come on top).
    Trials(u32),
    /// Wall-clock seconds for the search and the validation.
    Seconds(f64),
}

/// Reads `40trials` (or `40`), `90s`, `20m`, `1h`.
pub fn parse_budget(text: &str) -> Result<Budget, String> {
    let t = text.trim();
    let bad = || {
        format!("budget `{text}`: expected N trials (`40trials`) or a time (`90s`, `20m`, `1h`)")
    };
    let num = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    if let Some(n) = t.strip_suffix("trials").or_else(|| t.strip_suffix("trial")) {
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        return if n >= 2 {
            Ok(Budget::Trials(n))
        } else {
            Err(format!(
                "budget `{text}`: at least 2 trials (the defaults and one more)"
            ))
        };
    }
    if let Ok(n) = t.parse::<u32>() {
        return parse_budget(&format!("{n}trials"));
    }
    let (scale, digits) = match t.chars().last() {
        Some('s') => (1.0, &t[..t.len() - 1]),
        Some('m') => (60.0, &t[..t.len() - 1]),
        Some('h') => (3600.0, &t[..t.len() - 1]),
        _ => return Err(bad()),
    };
    num(digits)
        .map(|v| Budget::Seconds(v * scale))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_parse_with_or_without_spaces() {
        let c = parse_constraint("ttft_ms.p99<500").unwrap();
        assert_eq!(
            (c.metric.as_str(), c.op.as_str(), c.value),
            ("ttft_ms.p99", "<", 500.0)
        );
        let c = parse_constraint(" output_throughput >= 20.5 ").unwrap();
        assert_eq!(
            (c.metric.as_str(), c.op.as_str(), c.value),
            ("output_throughput", ">=", 20.5)
        );
        assert!(c.holds(20.5) && !c.holds(20.4));
        let lt = parse_constraint("ttft_ms.p99 < 500").unwrap();
        assert!(lt.holds(499.9) && !lt.holds(500.0));
        for (bad, why) in [
            ("ttft_ms.p99 = 5", "expected METRIC OP NUMBER"),
            ("latency < 5", "unknown metric `latency`"),
            ("ttft_ms.p99 < fast", "not a number"),
            ("ttft_ms.p99 < inf", "not a number"),
        ] {
            let e = parse_constraint(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn budgets_are_trials_or_times() {
        assert_eq!(parse_budget("40trials"), Ok(Budget::Trials(40)));
        assert_eq!(parse_budget("12"), Ok(Budget::Trials(12)));
        assert_eq!(parse_budget("90s"), Ok(Budget::Seconds(90.0)));
        assert_eq!(parse_budget("20m"), Ok(Budget::Seconds(1200.0)));
        assert_eq!(parse_budget("1.5h"), Ok(Budget::Seconds(5400.0)));
        for bad in ["1trials", "0", "fast", "-3m", "m", "20 minutes"] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn narrowings_are_lists_ranges_or_values() {
        use serde_json::json;
        for ok in [
            json!([1, 2]),
            json!({"min": 1, "max": 4}),
            json!({"max": 4}),
            json!("fused"),
            json!(true),
        ] {
            assert!(check_narrowing(&ok).is_ok(), "{ok}");
        }
        for bad in [
            json!([]),
            json!([[1]]),
            json!({"min": 4, "max": 1}),
            json!({"lo": 1}),
            json!({"min": 1.5}),
            json!(null),
        ] {
            assert!(check_narrowing(&bad).is_err(), "{bad}");
        }
    }
}
