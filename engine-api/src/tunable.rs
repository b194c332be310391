//! The options an engine lets `engine-matrix tune` search: each one's
//! name, domain (an integer range, a list of choices, or a switch) and
//! default, declared in [`crate::EngineInfo::tunables`] as a JSON array so
//! that a new kind of domain never changes the ABI.
//!
//! ```json
//! [{"name": "threads", "kind": "int", "min": 1, "max": 2, "default": 2},
//!  {"name": "kernels", "kind": "choice", "choices": ["fused", "stock"], "default": "fused"},
//!  {"name": "max_batch", "kind": "int", "min": 1, "max": 64, "log": true, "default": 16}]
//! ```
//!
//! Most names are keys of the engine's `options` object. A few are not:
//! [`LOAD_KEYS`] go to [`crate::LoadOptions`]'s fields, and [`CELL_KEYS`]
//! are the cell's dtype and quantization. A tunable whose value changes the
//! engine's output, not only its speed (dtype, quantization), says so with
//! `changes_output`: the tuner leaves it at its default unless the matrix
//! asks for it, since a speed-up bought with quality needs a quality floor.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tunables that are [`crate::LoadOptions`] fields, not engine options.
pub const LOAD_KEYS: [&str; 2] = ["max_batch", "batch_policy"];
/// Tunables that are the cell's own parameters.
pub const CELL_KEYS: [&str; 2] = ["dtype", "quantization"];

/// The values a tunable may take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Domain {
    /// Integers `min..=max`; `log` samples them on a log scale (batch
    /// sizes, thread counts on large machines).
    Int {
        min: i64,
        max: i64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        log: bool,
    },
    /// One of a list of values (strings, numbers or booleans).
    Choice { choices: Vec<Value> },
    /// `true` or `false`.
    Bool,
}

/// One tunable option.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tunable {
    pub name: String,
    #[serde(flatten)]
    pub domain: Domain,
    /// The value the engine uses when the option is not given.
    pub default: Value,
    /// The option changes what the engine computes (dtype, quantization),
    /// not only how fast.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changes_output: bool,
    /// One line on what it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
}

impl Tunable {
    /// An integer option in `min..=max`.
    pub fn int(name: &str, min: i64, max: i64, default: i64, about: &str) -> Self {
        Tunable {
            name: name.into(),
            domain: Domain::Int {
                min,
                max,
                log: false,
            },
            default: default.into(),
            changes_output: false,
            about: about.into(),
        }
    }

    /// The same on a log scale.
    pub fn log_int(name: &str, min: i64, max: i64, default: i64, about: &str) -> Self {
        let mut t = Self::int(name, min, max, default, about);
        t.domain = Domain::Int {
            min,
            max,
            log: true,
        };
        t
    }

    /// One of `choices` (strings).
    pub fn choice(name: &str, choices: &[&str], default: &str, about: &str) -> Self {
        Tunable {
            name: name.into(),
            domain: Domain::Choice {
                choices: choices.iter().map(|&c| c.into()).collect(),
            },
            default: default.into(),
            changes_output: false,
            about: about.into(),
        }
    }

    /// A switch.
    pub fn bool(name: &str, default: bool, about: &str) -> Self {
        Tunable {
            name: name.into(),
            domain: Domain::Bool,
            default: default.into(),
            changes_output: false,
            about: about.into(),
        }
    }

    /// Marks the option as one that changes the output.
    pub fn changing_output(mut self) -> Self {
        self.changes_output = true;
        self
    }

    /// Whether `v` is in the domain.
    pub fn admits(&self, v: &Value) -> bool {
        match &self.domain {
            Domain::Int { min, max, .. } => v.as_i64().is_some_and(|i| *min <= i && i <= *max),
            Domain::Choice { choices } => choices.contains(v),
            Domain::Bool => v.is_boolean(),
        }
    }

    /// Why the declaration is unusable, if it is: an empty range or
    /// choice list, or a default outside the domain.
    pub fn check(&self) -> Result<(), String> {
        let n = &self.name;
        match &self.domain {
            Domain::Int { min, max, log } => {
                if min > max {
                    return Err(format!("tunable {n}: min {min} > max {max}"));
                }
                if *log && *min < 1 {
                    return Err(format!("tunable {n}: a log scale needs min >= 1"));
                }
            }
            Domain::Choice { choices } if choices.is_empty() => {
                return Err(format!("tunable {n}: no choices"))
            }
            _ => {}
        }
        if !self.admits(&self.default) {
            return Err(format!(
                "tunable {n}: the default {} is outside its domain",
                self.default
            ));
        }
        Ok(())
    }
}

/// The JSON of [`crate::EngineInfo::tunables`].
pub fn to_json(tunables: &[Tunable]) -> abi_stable::std_types::RString {
    serde_json::to_string(tunables)
        .unwrap_or_else(|_| "[]".into())
        .into()
}

/// Reads [`crate::EngineInfo::tunables`]: empty means none; every
/// declaration is checked, and a name may appear once.
pub fn parse(json: &str) -> Result<Vec<Tunable>, String> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<Tunable> =
        serde_json::from_str(json).map_err(|e| format!("the tunables are not valid: {e}"))?;
    for (i, t) in list.iter().enumerate() {
        t.check()?;
        if list[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("tunable {} is declared twice", t.name));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_round_trip_and_are_checked() {
        let list = vec![
            Tunable::int("threads", 1, 4, 2, "threads"),
            Tunable::log_int("max_batch", 1, 64, 16, ""),
            Tunable::choice("kernels", &["fused", "stock"], "fused", ""),
            Tunable::bool("spinning", true, "").changing_output(),
        ];
        let json = to_json(&list);
        assert_eq!(parse(json.as_str()).unwrap(), list);
        assert!(json.contains(r#""kind":"int""#), "{json}");
        assert_eq!(parse("").unwrap(), vec![]);

        let bad = [
            (
                r#"[{"name":"t","kind":"int","min":3,"max":1,"default":2}]"#,
                "min 3 > max 1",
            ),
            (
                r#"[{"name":"t","kind":"int","min":0,"max":8,"log":true,"default":2}]"#,
                "log scale",
            ),
            (
                r#"[{"name":"k","kind":"choice","choices":[],"default":"a"}]"#,
                "no choices",
            ),
            (
                r#"[{"name":"k","kind":"choice","choices":["a"],"default":"b"}]"#,
                "outside",
            ),
            (r#"[{"name":"s","kind":"bool","default":1}]"#, "outside"),
            (
                r#"[{"name":"s","kind":"bool","default":true},{"name":"s","kind":"bool","default":false}]"#,
                "twice",
            ),
            (r#"[{"name":"s","kind":"float","default":1}]"#, "not valid"),
        ];
        for (json, why) in bad {
            let e = parse(json).unwrap_err();
            assert!(e.contains(why), "{json}: {e}");
        }
    }

    #[test]
    fn admits_follows_the_domain() {
        let t = Tunable::int("threads", 1, 4, 2, "");
        assert!(t.admits(&1.into()) && t.admits(&4.into()));
        assert!(!t.admits(&0.into()) && !t.admits(&5.into()) && !t.admits(&"2".into()));
        let c = Tunable::choice("k", &["a", "b"], "a", "");
        assert!(c.admits(&"b".into()) && !c.admits(&"c".into()));
    }
}
