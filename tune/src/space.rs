//! The search space: what an engine declares ([`engine_api::tunable`]),
//! narrowed or fixed by the matrix's `tune: space:`.
//!
//! Every domain the engines declare is discrete (integer ranges, choices,
//! switches), so the space is a finite grid: its size is what the tuner's
//! budget is measured against ("at most 30% of the grid's trials").

use engine_api::tunable::{Domain, Tunable, CELL_KEYS, LOAD_KEYS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

pub use engine_matrix_results::tune::Config;

/// A dimension that is searched.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// `min..=max`, on a log scale when `log`.
    Int { min: i64, max: i64, log: bool },
    /// One of these values.
    Choice(Vec<Value>),
}

impl Param {
    /// How many values it has.
    pub fn cardinality(&self) -> u64 {
        match &self.kind {
            ParamKind::Int { min, max, .. } => (max - min) as u64 + 1,
            ParamKind::Choice(v) => v.len() as u64,
        }
    }

    /// Its `i`-th value (`i < cardinality()`).
    pub fn value(&self, i: u64) -> Value {
        match &self.kind {
            ParamKind::Int { min, .. } => Value::from(min + i as i64),
            ParamKind::Choice(v) => v[i as usize].clone(),
        }
    }
}

/// Where a tunable's value goes when a configuration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A key of the engine's `options` object.
    Option,
    /// A `LoadOptions` field (`max_batch`, `batch_policy`).
    Load,
    /// The cell's own parameter (`dtype`, `quantization`).
    Cell,
}

/// Where `name` goes.
pub fn target(name: &str) -> Target {
    if LOAD_KEYS.contains(&name) {
        Target::Load
    } else if CELL_KEYS.contains(&name) {
        Target::Cell
    } else {
        Target::Option
    }
}

/// A matrix's narrowing that the declaration does not allow.
#[derive(Clone, Debug, PartialEq)]
pub struct SpaceError(pub String);

impl fmt::Display for SpaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpaceError {}

/// The space of one engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    pub engine: String,
    /// Searched dimensions, in the engine's declaration order.
    pub params: Vec<Param>,
    /// Options held at one value (a narrowing to one value, or an option
    /// that changes the output and was not asked for).
    pub fixed: Config,
    /// What the engine does untuned: every declared default, with the
    /// cell's own values for the load and cell keys.
    pub defaults: Config,
}

impl Space {
    /// Builds the space of `engine` from its declaration, the matrix's
    /// `narrow` (option -> a list, `{min, max}` or one value) and the
    /// cell's values of the load and cell keys (`cell`: they are the
    /// defaults there). An option the engine does not declare, or a value
    /// outside its domain, is an error naming both.
    pub fn build(
        engine: &str,
        declared: &[Tunable],
        narrow: &BTreeMap<String, Value>,
        cell: &Config,
    ) -> Result<Space, SpaceError> {
        let err = |m: String| SpaceError(format!("engine {engine}: {m}"));
        for name in narrow.keys() {
            if !declared.iter().any(|t| &t.name == name) {
                let names: Vec<&str> = declared.iter().map(|t| t.name.as_str()).collect();
                return Err(err(if names.is_empty() {
                    format!("`{name}` is not tunable: the engine declares no tunable options")
                } else {
                    format!(
                        "`{name}` is not one of its tunable options ({})",
                        names.join(", ")
                    )
                }));
            }
        }
        let mut space = Space {
            engine: engine.to_string(),
            params: Vec::new(),
            fixed: Config::new(),
            defaults: Config::new(),
        };
        for t in declared {
            let default = match cell.get(&t.name) {
                Some(v) if target(&t.name) != Target::Option => v.clone(),
                _ => t.default.clone(),
            };
            space.defaults.insert(t.name.clone(), default.clone());
            let kind = match narrow.get(&t.name) {
                Some(n) => narrowed(t, n).map_err(|m| err(format!("{}: {m}", t.name)))?,
                // An option that changes what the engine computes is
                // searched only when the matrix asks for it.
                None if t.changes_output => ParamKind::Choice(vec![default]),
                None => declared_kind(t),
            };
            let param = Param {
                name: t.name.clone(),
                kind,
            };
            if param.cardinality() == 1 {
                space.fixed.insert(t.name.clone(), param.value(0));
            } else {
                space.params.push(param);
            }
        }
        Ok(space)
    }

    /// The number of configurations.
    pub fn grid_size(&self) -> u64 {
        self.params
            .iter()
            .map(Param::cardinality)
            .fold(1u64, |a, c| a.saturating_mul(c))
    }

    /// The configuration with `values` for the searched options (by name)
    /// and the fixed ones.
    pub fn config(&self, values: impl IntoIterator<Item = (String, Value)>) -> Config {
        let mut c = self.fixed.clone();
        c.extend(values);
        c
    }

    /// The `i`-th configuration of the grid (mixed radix, first parameter
    /// fastest), `i < grid_size()`.
    pub fn nth(&self, mut i: u64) -> Config {
        let mut values = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let n = p.cardinality();
            values.push((p.name.clone(), p.value(i % n)));
            i /= n;
        }
        self.config(values)
    }

    /// Whether `config` is a point of the space.
    pub fn contains(&self, config: &Config) -> bool {
        self.fixed.iter().all(|(k, v)| config.get(k) == Some(v))
            && self.params.iter().all(|p| {
                config.get(&p.name).is_some_and(|v| match &p.kind {
                    ParamKind::Int { min, max, .. } => {
                        v.as_i64().is_some_and(|i| *min <= i && i <= *max)
                    }
                    ParamKind::Choice(c) => c.contains(v),
                })
            })
            && config.len() == self.fixed.len() + self.params.len()
    }
}

/// The full declared domain.
fn declared_kind(t: &Tunable) -> ParamKind {
    match &t.domain {
        Domain::Int { min, max, log } => ParamKind::Int {
            min: *min,
            max: *max,
            log: *log,
        },
        Domain::Choice { choices } => ParamKind::Choice(choices.clone()),
        Domain::Bool => ParamKind::Choice(vec![Value::Bool(false), Value::Bool(true)]),
    }
}

/// The declared domain of `t` narrowed by `n`.
fn narrowed(t: &Tunable, n: &Value) -> Result<ParamKind, String> {
    let admit = |v: &Value| {
        if t.admits(v) {
            Ok(v.clone())
        } else {
            Err(format!(
                "{v} is outside its domain ({})",
                describe(&t.domain)
            ))
        }
    };
    match n {
        Value::Array(list) => {
            let mut values = Vec::with_capacity(list.len());
            for v in list {
                let v = admit(v)?;
                if !values.contains(&v) {
                    values.push(v);
                }
            }
            Ok(ParamKind::Choice(values))
        }
        Value::Object(range) => {
            let Domain::Int { min, max, log } = t.domain else {
                return Err(format!(
                    "a {{min, max}} range needs an integer option, and this one is {}",
                    describe(&t.domain)
                ));
            };
            let lo = range.get("min").and_then(Value::as_i64).unwrap_or(min);
            let hi = range.get("max").and_then(Value::as_i64).unwrap_or(max);
            if lo < min || hi > max || lo > hi {
                return Err(format!(
                    "the range {lo}..={hi} is not inside its domain ({})",
                    describe(&t.domain)
                ));
            }
            Ok(ParamKind::Int {
                min: lo,
                max: hi,
                log,
            })
        }
        v => Ok(ParamKind::Choice(vec![admit(v)?])),
    }
}

/// `integers 1..=8`, `one of fused, stock`, `true or false`.
pub fn describe(d: &Domain) -> String {
    match d {
        Domain::Int { min, max, .. } => format!("integers {min}..={max}"),
        Domain::Choice { choices } => format!(
            "one of {}",
            choices
                .iter()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Domain::Bool => "true or false".into(),
    }
}

/// A configuration as `threads=2 kernels=fused` (the searched options
/// only when `space` is given).
pub fn label(config: &Config, space: Option<&Space>) -> String {
    let shown: Config = config
        .iter()
        .filter(|(k, _)| space.is_none_or(|s| s.params.iter().any(|p| &p.name == *k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    engine_matrix_results::tune::label(&shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> Vec<Tunable> {
        vec![
            Tunable::int("threads", 1, 8, 8, ""),
            Tunable::log_int("max_batch", 1, 64, 16, ""),
            Tunable::choice("kernels", &["fused", "stock"], "fused", ""),
            Tunable::bool("spinning", true, ""),
            Tunable::choice("dtype", &["f32", "bf16"], "f32", "").changing_output(),
        ]
    }

    fn narrow(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_declared_space_leaves_output_changing_options_at_their_default() {
        let s = Space::build("candle", &declared(), &BTreeMap::new(), &Config::new()).unwrap();
        let names: Vec<&str> = s.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["threads", "max_batch", "kernels", "spinning"]);
        assert_eq!(s.fixed, narrow(json!({"dtype": "f32"})));
        assert_eq!(s.grid_size(), 8 * 64 * 2 * 2);
        assert_eq!(s.defaults["threads"], json!(8));
        assert!(s.contains(&s.defaults));
    }

    #[test]
    fn the_cell_gives_the_defaults_of_load_and_cell_keys_only() {
        let cell = narrow(json!({"max_batch": 4, "dtype": "bf16", "threads": 2}));
        let s = Space::build("candle", &declared(), &BTreeMap::new(), &cell).unwrap();
        assert_eq!(s.defaults["max_batch"], json!(4));
        assert_eq!(s.defaults["dtype"], json!("bf16"));
        // `threads` is an engine option: the engine's default stands.
        assert_eq!(s.defaults["threads"], json!(8));
        assert_eq!(s.fixed["dtype"], json!("bf16"));
    }

    #[test]
    fn a_matrix_narrows_fixes_and_opts_in() {
        let n = narrow(json!({
            "threads": [1, 2, 2],
            "max_batch": {"min": 2, "max": 5},
            "kernels": "stock",
            "dtype": ["f32", "bf16"],
        }));
        let s = Space::build("candle", &declared(), &n, &Config::new()).unwrap();
        assert_eq!(
            s.params[0].kind,
            ParamKind::Choice(vec![json!(1), json!(2)])
        );
        assert_eq!(
            s.params[1].kind,
            ParamKind::Int {
                min: 2,
                max: 5,
                log: true
            }
        );
        assert_eq!(s.fixed, narrow(json!({"kernels": "stock"})));
        assert_eq!(s.grid_size(), 2 * 4 * 2 * 2);
        // The defaults are the engine's, even outside the narrowed space.
        assert_eq!(s.defaults["kernels"], json!("fused"));
        assert!(!s.contains(&s.defaults));
        // Every grid point is in the space, and they are all different.
        let all: std::collections::HashSet<String> = (0..s.grid_size())
            .map(|i| {
                let c = s.nth(i);
                assert!(s.contains(&c), "{c:?}");
                serde_json::to_string(&c).unwrap()
            })
            .collect();
        assert_eq!(all.len() as u64, s.grid_size());
    }

    #[test]
    fn bad_narrowings_name_the_engine_and_the_option() {
        let cases = [
            (json!({"thread": 2}), "engine candle: `thread` is not one of its tunable options (threads, max_batch, kernels, spinning, dtype)"),
            (json!({"threads": [0, 2]}), "engine candle: threads: 0 is outside its domain (integers 1..=8)"),
            (json!({"threads": {"min": 2, "max": 9}}), "threads: the range 2..=9 is not inside its domain"),
            (json!({"kernels": {"min": 1}}), "kernels: a {min, max} range needs an integer option, and this one is one of fused, stock"),
            (json!({"spinning": "yes"}), "spinning: \"yes\" is outside its domain (true or false)"),
        ];
        for (n, want) in cases {
            let e = Space::build("candle", &declared(), &narrow(n.clone()), &Config::new())
                .unwrap_err();
            assert!(e.0.contains(want), "{n}: {e}");
        }
        let e =
            Space::build("http", &[], &narrow(json!({"threads": 2})), &Config::new()).unwrap_err();
        assert!(
            e.0.contains("the engine declares no tunable options"),
            "{e}"
        );
    }

    #[test]
    fn labels_show_the_searched_options() {
        let n = narrow(json!({"kernels": "stock"}));
        let s = Space::build("candle", &declared(), &n, &Config::new()).unwrap();
        let c = s.nth(3);
        assert_eq!(label(&c, Some(&s)), "max_batch=1 spinning=false threads=4");
        assert!(label(&c, None).contains("kernels=stock"));
    }
}
