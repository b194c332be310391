//! Tuned settings in a matrix: an engine's `tuned:` and the top-level
//! `settings:`, so that a matrix compares engines each at its own best
//! settings, or each at its tuned and its default settings side by side.
//!
//! ```yaml
//! settings: [default, tuned]   # optional; default: tuned
//! engines:
//!   - name: candle
//!     tuned: tuned/candle.yaml # a tuned.yaml written by `engine-matrix tune`,
//!                              # or the tune folder that holds one
//!   - name: onnx
//!     tuned: {options: {spinning: false}, max_batch: 8}   # or the keys inline
//! ```
//!
//! * `settings: tuned` (the default): an engine with `tuned:` runs with
//!   its tuned settings under its own name.
//! * `settings: default`: `tuned:` is ignored (one word flips a matrix
//!   between the two).
//! * `settings: [default, tuned]`: an engine with `tuned:` runs twice, as
//!   `NAME` with its defaults and as `NAME-tuned` with the tuned settings,
//!   the second right after the first in every scenario that runs it.
//!
//! Tuned `options` are merged over the engine's `options:`. `max_batch`,
//! `batch_policy`, `dtype` and `quantization` are cell parameters: they
//! replace the scenario's values in the tuned engine's cells (whose ids
//! change with them), and cells that thereby become the same (a sweep over
//! `max_batch`, say) run once.
//!
//! The trade-off: a tuned file belongs to the cell it was tuned for (it
//! says which, `tuned_for`), and is applied to every cell of the engine.
//! Settings tuned for batch-1 decode are not proven best for a concurrency
//! sweep; the report names where each engine's settings came from.

use crate::yaml::{self, At, Kind};
use crate::{resolve_path, Cell, EngineDef, MatrixError, ScenarioDef};
use engine_api::BatchPolicy;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The keys of `tuned:` (and of a `tuned.yaml`).
pub const TUNED_KEYS: [&str; 8] = [
    "engine",
    "plugin",
    "tuned_for",
    "options",
    "max_batch",
    "batch_policy",
    "dtype",
    "quantization",
];

/// The file `tune` writes into its run folder.
pub const TUNED_FILE: &str = "tuned.yaml";

/// One engine's tuned settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TunedDef {
    /// Plugin options, merged over the engine's `options:`.
    pub options: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// `none`, `static` or `continuous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// The engine the settings were tuned on (a file's `engine:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The plugin they were tuned on; must be the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// What they were tuned for (the tuned cell and objective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_for: Option<String>,
    /// Where they come from: a file, or `inline`.
    pub source: String,
}

impl TunedDef {
    /// `kernels=stock max_batch=4`: what the settings set.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), String::from)
                )
            })
            .collect();
        if let Some(n) = self.max_batch {
            parts.push(format!("max_batch={n}"));
        }
        for (k, v) in [
            ("batch_policy", &self.batch_policy),
            ("dtype", &self.dtype),
            ("quantization", &self.quantization),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        if parts.is_empty() {
            "the defaults".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Which settings each engine with `tuned:` runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Default,
    Tuned,
}

impl Variant {
    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "default" => Some(Variant::Default),
            "tuned" => Some(Variant::Tuned),
            _ => None,
        }
    }
}

/// `--settings`-style text: `default`, `tuned` or `both`.
pub fn parse_variants(s: &str) -> Option<Vec<Variant>> {
    match s {
        "both" => Some(vec![Variant::Default, Variant::Tuned]),
        other => Variant::parse(other).map(|v| vec![v]),
    }
}

/// `settings:`: `default`, `tuned`, or a list of both (no repeats).
pub(crate) fn parse_settings(at: &At<'_>) -> Result<Vec<Variant>, MatrixError> {
    let one = |a: &At<'_>| -> Result<Variant, MatrixError> {
        let s = a.str()?;
        Variant::parse(s).ok_or_else(|| {
            a.err(format!(
                "unknown settings `{s}` (expected default or tuned)"
            ))
        })
    };
    if let Kind::Seq(_) = at.node.kind {
        let mut out = Vec::new();
        for item in at.non_empty_seq()? {
            let v = one(&item)?;
            if out.contains(&v) {
                return Err(item.err("listed twice"));
            }
            out.push(v);
        }
        Ok(out)
    } else {
        Ok(vec![one(at)?])
    }
}

/// An engine's `tuned:`: a path to a `tuned.yaml` (or the folder holding
/// one), relative to the matrix, or the same keys inline.
pub(crate) fn parse_tuned(
    at: &At<'_>,
    base: &Path,
    engine: &EngineDef,
) -> Result<TunedDef, MatrixError> {
    if let Kind::Map(_) = at.node.kind {
        return parse_keys(at, engine, "inline".into());
    }
    let given = at.str()?;
    let path = resolve_path(base, given);
    let file = if path.is_dir() {
        path.join(TUNED_FILE)
    } else {
        path
    };
    read_file(&file, engine).map_err(|e| match e {
        TunedFileError::Read(why) => at.err(format!("tuned settings {}: {why}", file.display())),
        TunedFileError::Parse(e) => e,
    })
}

/// Why a tuned file could not be used.
pub enum TunedFileError {
    /// It cannot be read.
    Read(String),
    /// It is not tuned settings for the engine (with its file and line).
    Parse(MatrixError),
}

impl std::fmt::Display for TunedFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunedFileError::Read(why) => f.write_str(why),
            TunedFileError::Parse(e) => write!(f, "{e}"),
        }
    }
}

/// The tuned settings in `file` (a `tuned.yaml`), for `engine` when given
/// (its plugin must be the file's).
pub fn read_file(file: &Path, engine: &EngineDef) -> Result<TunedDef, TunedFileError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        TunedFileError::Read(if e.kind() == std::io::ErrorKind::NotFound {
            "no such file (engine-matrix tune writes tuned.yaml in its run folder)".into()
        } else {
            e.to_string()
        })
    })?;
    let name = file.display().to_string();
    let root = match yaml::load(&text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(TunedFileError::Parse(MatrixError::At {
                file: name,
                line: 1,
                column: 1,
                field: String::new(),
                message: "the tuned settings file is empty".into(),
            }))
        }
        Err(e) => {
            return Err(TunedFileError::Parse(MatrixError::At {
                file: name,
                line: e.line,
                column: e.col,
                field: String::new(),
                message: e.message,
            }))
        }
    };
    parse_keys(&At::root(&name, &root), engine, name.clone()).map_err(TunedFileError::Parse)
}

/// The engine a tuned file was tuned on (its `engine:`), for `run --tuned`.
pub fn file_engine(file: &Path) -> Result<String, TunedFileError> {
    let probe = EngineDef {
        name: String::new(),
        plugin: String::new(),
        options: serde_json::Value::Object(Default::default()),
        launch: None,
        tuned: None,
    };
    let def = read_file(file, &probe)?;
    def.engine.ok_or_else(|| {
        TunedFileError::Read(
            "it names no `engine:` (which engine were these settings tuned on?)".into(),
        )
    })
}

/// The keys of a tuned mapping. An empty `engine.plugin` accepts any
/// plugin (a probe).
fn parse_keys(at: &At<'_>, engine: &EngineDef, source: String) -> Result<TunedDef, MatrixError> {
    let m = at.map(&TUNED_KEYS)?;
    let text = |key: &str| -> Result<Option<String>, MatrixError> {
        m.opt(key).map(|a| a.str().map(String::from)).transpose()
    };
    let plugin = text("plugin")?;
    if let (Some(p), false) = (&plugin, engine.plugin.is_empty()) {
        if *p != engine.plugin {
            let at = m.opt("plugin").unwrap_or(&m.at);
            return Err(at.err(format!(
                "tuned on plugin `{p}`, but engine '{}' runs plugin `{}`",
                engine.name, engine.plugin
            )));
        }
    }
    let options = match m.opt("options") {
        None => serde_json::Map::new(),
        Some(o) => match o.json()? {
            serde_json::Value::Object(map) => map,
            _ => {
                return Err(o.err(format!(
                    "expected a mapping of plugin options, got {}",
                    o.node.describe()
                )))
            }
        },
    };
    let batch_policy = match m.opt("batch_policy") {
        None => None,
        Some(a) => {
            let s = a.str()?;
            if BatchPolicy::parse(s).is_none() {
                return Err(a.err(format!(
                    "unknown batch policy `{s}` (expected none, static or continuous)"
                )));
            }
            Some(s.to_string())
        }
    };
    Ok(TunedDef {
        options,
        max_batch: m.opt("max_batch").map(|a| a.u32_min(1)).transpose()?,
        batch_policy,
        dtype: text("dtype")?,
        quantization: text("quantization")?,
        engine: text("engine")?,
        plugin,
        tuned_for: text("tuned_for")?,
        source,
    })
}

/// The engines as they run under `settings`: an engine with tuned
/// settings gets them merged in (`tuned: tuned`), is stripped of them
/// (`default`), or is followed by a `NAME-tuned` copy with them (both),
/// which every scenario running `NAME` runs right after it.
pub(crate) fn apply_to_engines(
    engines: Vec<EngineDef>,
    scenarios: &mut [ScenarioDef],
    settings: &[Variant],
) -> Result<Vec<EngineDef>, String> {
    let with_default = settings.contains(&Variant::Default);
    let with_tuned = settings.contains(&Variant::Tuned);
    let names: Vec<String> = engines.iter().map(|e| e.name.clone()).collect();
    let mut out = Vec::with_capacity(engines.len());
    for mut e in engines {
        let Some(t) = e.tuned.take() else {
            out.push(e);
            continue;
        };
        let mut tuned = e.clone();
        let mut options = tuned.options.as_object().cloned().unwrap_or_default();
        options.extend(t.options.clone());
        tuned.options = serde_json::Value::Object(options);
        tuned.tuned = Some(t);
        match (with_default, with_tuned) {
            (true, true) => {
                tuned.name = format!("{}-tuned", e.name);
                if names.contains(&tuned.name) {
                    return Err(format!(
                        "settings [default, tuned] names engine '{}''s tuned copy '{}', which is already an engine of the matrix",
                        e.name, tuned.name
                    ));
                }
                for s in scenarios.iter_mut() {
                    s.add_engine_after(&e.name, &tuned.name);
                }
                out.push(e);
                out.push(tuned);
            }
            (false, true) => out.push(tuned),
            _ => out.push(e),
        }
    }
    Ok(out)
}

/// The cells of tuned engines with the tuned cell parameters, their ids
/// made again; cells that become the same run once (the first).
pub(crate) fn apply_to_cells(cells: Vec<Cell>, engines: &[EngineDef]) -> Vec<Cell> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(cells.len());
    for mut c in cells {
        let tuned = engines
            .iter()
            .find(|e| e.name == c.engine)
            .and_then(|e| e.tuned.as_ref());
        if let (Some(t), None) = (tuned, &c.retrieval) {
            let p = &mut c.params;
            if let Some(n) = t.max_batch {
                p.max_batch = n;
            }
            if let Some(b) = t.batch_policy.as_deref().and_then(BatchPolicy::parse) {
                p.batch_policy = b;
            }
            if let Some(d) = &t.dtype {
                p.dtype = d.clone();
            }
            if let Some(q) = &t.quantization {
                p.quantization = q.clone();
            }
            c.id = format!(
                "{}/{}/{}/{}",
                c.scenario,
                c.model,
                c.engine,
                crate::expand::tag(c.kind, &c.params)
            );
        }
        if seen.insert(c.id.clone()) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Matrix, Overrides};

    /// A fresh folder for tuned files.
    fn folder(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "em-tuned-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A matrix over engines a and b (plugin `candle`, a with `threads: 1`)
    /// whose engine entries get `a_extra` under `a`, and `top` at the top.
    fn matrix(a_extra: &str, top: &str) -> String {
        format!(
            "name: t\n{top}models:\n  - name: m\n    weights: synthetic\n    config: tiny\n\
             engines:\n  - name: a\n    plugin: candle\n    options: {{threads: 1}}\n{a_extra}\
             \n  - name: b\n    plugin: candle\n\
             scenarios:\n  - name: s\n    kind: latency\n    input_tokens: 8\n    output_tokens: 4\n\
             \x20   axes:\n      max_batch: [1, 4]\n"
        )
    }

    fn parse_in(dir: &Path, text: &str, o: &Overrides) -> Result<Matrix, MatrixError> {
        Matrix::parse_with(text, &dir.join("m.yaml"), o)
    }

    fn engines(m: &Matrix) -> Vec<(String, String)> {
        m.engines
            .iter()
            .map(|e| (e.name.clone(), e.options.to_string()))
            .collect()
    }

    const FILE: &str = "# tuned by engine-matrix tune\n\
        engine: a\nplugin: candle\ntuned_for: \"s/m/a/x, output_throughput\"\n\
        options: {kernels: stock}\nmax_batch: 4\n";

    #[test]
    fn a_tuned_file_is_merged_in_and_its_cell_keys_replace_the_sweep() {
        let d = folder("merge");
        std::fs::write(d.join("tuned.yaml"), FILE).unwrap();
        // A folder path (tune's run folder) reads its tuned.yaml.
        let m = parse_in(&d, &matrix("    tuned: .\n", ""), &Overrides::default()).unwrap();
        assert_eq!(
            engines(&m),
            [
                ("a".into(), r#"{"kernels":"stock","threads":1}"#.into()),
                ("b".into(), "{}".into())
            ]
        );
        let t = m.engines[0].tuned.as_ref().unwrap();
        assert_eq!(t.describe(), "kernels=stock max_batch=4");
        assert!(t.source.ends_with("tuned.yaml"), "{}", t.source);
        // a's max_batch sweep collapses to its tuned 4; b keeps both.
        let ids: Vec<String> = m.cells(false).into_iter().map(|c| c.id).collect();
        assert_eq!(
            ids.iter().filter(|i| i.contains("/a/")).count(),
            1,
            "{ids:?}"
        );
        assert_eq!(
            ids.iter().filter(|i| i.contains("/b/")).count(),
            2,
            "{ids:?}"
        );
        let a = m
            .cells(false)
            .into_iter()
            .find(|c| c.engine == "a")
            .unwrap();
        assert_eq!(a.params.max_batch, 4);
        assert!(m.tuned.contains_key("a"));
    }

    #[test]
    fn settings_both_adds_a_tuned_copy_after_the_engine_and_default_drops_it() {
        let d = folder("both");
        let inline = "    tuned: {options: {kernels: stock}, batch_policy: continuous}\n";
        let both = parse_in(
            &d,
            &matrix(inline, "settings: [default, tuned]\n"),
            &Overrides::default(),
        )
        .unwrap();
        let names: Vec<String> = both.engines.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["a", "a-tuned", "b"]);
        assert_eq!(both.scenarios[0].engines, ["a", "a-tuned", "b"]);
        assert!(both.engines[0].tuned.is_none());
        assert_eq!(both.engines[0].options.to_string(), r#"{"threads":1}"#);
        assert_eq!(both.engines[1].tuned.as_ref().unwrap().source, "inline");
        let tuned: Vec<_> = both
            .cells(false)
            .into_iter()
            .filter(|c| c.engine == "a-tuned")
            .collect();
        assert_eq!(tuned.len(), 2);
        assert!(
            tuned.iter().all(|c| c.id.contains("-continuous-")),
            "{tuned:?}"
        );
        let plain = parse_in(
            &d,
            &matrix(inline, "settings: default\n"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(engines(&plain)[0], ("a".into(), r#"{"threads":1}"#.into()));
        assert!(plain.engines.iter().all(|e| e.tuned.is_none()));
        // The command line's settings win over the file's.
        let o = Overrides {
            settings: parse_variants("both"),
            ..Overrides::default()
        };
        let flipped = parse_in(&d, &matrix(inline, "settings: default\n"), &o).unwrap();
        assert_eq!(flipped.engines.len(), 3);
    }

    #[test]
    fn tuned_files_from_the_command_line_find_their_engine() {
        let d = folder("cli");
        std::fs::write(d.join("a.yaml"), FILE).unwrap();
        let o = Overrides {
            tuned_files: vec![d.join("a.yaml")],
            ..Overrides::default()
        };
        let m = parse_in(&d, &matrix("", ""), &o).unwrap();
        assert_eq!(engines(&m)[0].1, r#"{"kernels":"stock","threads":1}"#);
        // A file for an engine the matrix lacks names both.
        std::fs::write(d.join("c.yaml"), FILE.replace("engine: a", "engine: c")).unwrap();
        let o = Overrides {
            tuned_files: vec![d.join("c.yaml")],
            ..Overrides::default()
        };
        let e = parse_in(&d, &matrix("", ""), &o).unwrap_err().to_string();
        assert!(
            e.contains("c.yaml") && e.contains("engine 'c'") && e.contains("engines: a, b"),
            "{e}"
        );
        // Resumed: parsed settings replace the file's (which is gone).
        let resumed = Overrides {
            tuned: m.tuned.clone(),
            ..Overrides::default()
        };
        let again = parse_in(&d, &matrix("    tuned: gone.yaml\n", ""), &resumed).unwrap();
        assert_eq!(engines(&again), engines(&m));
    }

    /// The error of parsing `text` in `dir`.
    fn error(dir: &Path, text: &str) -> String {
        match parse_in(dir, text, &Overrides::default()) {
            Ok(_) => panic!("parsed, expected an error:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_tuned_settings_name_the_file_line_and_field() {
        let d = folder("bad");
        let cases: [(&str, &str, &str, &[&str]); 6] = [
            (
                "    tuned: missing.yaml\n",
                "",
                "",
                &[
                    "m.yaml:10:",
                    "engines[0].tuned",
                    "missing.yaml",
                    "no such file",
                ],
            ),
            (
                "    tuned: t.yaml\n",
                "",
                "plugin: torch",
                &["t.yaml:3:", "plugin `torch`", "runs plugin `candle`"],
            ),
            (
                "    tuned: t.yaml\n",
                "",
                "max_batch: 0",
                &["t.yaml:6:", "max_batch", "positive integer"],
            ),
            (
                "    tuned: {threads: 2}\n",
                "",
                "",
                &["unknown key `threads`", "options"],
            ),
            (
                "",
                "settings: [tuned, tuned]\n",
                "",
                &["m.yaml:2:", "listed twice"],
            ),
            ("", "settings: best\n", "", &["unknown settings `best`"]),
        ];
        for (engine, top, file_change, want) in cases {
            let (key, value) = file_change.split_once(": ").unwrap_or(("", ""));
            let file = if key.is_empty() {
                FILE.to_string()
            } else {
                let old = FILE
                    .lines()
                    .find(|l| l.starts_with(&format!("{key}: ")))
                    .unwrap();
                FILE.replace(old, &format!("{key}: {value}"))
            };
            std::fs::write(d.join("t.yaml"), file).unwrap();
            let e = error(&d, &matrix(engine, top));
            for w in want {
                assert!(e.contains(w), "want {w:?} in {e}");
            }
        }
        // A tuned copy whose name is taken.
        let clash = matrix(
            "    tuned: {max_batch: 2}\n",
            "settings: [default, tuned]\n",
        )
        .replace("name: b\n", "name: a-tuned\n");
        let e = error(&d, &clash);
        assert!(
            e.contains("'a-tuned'") && e.contains("already an engine"),
            "{e}"
        );
    }
}
