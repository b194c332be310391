//! The retrieval benchmark in a matrix: `vectors:` (the data sets) and
//! `kind: retrieval` scenarios, which run vector-index engines.
//!
//! ```yaml
//! vectors:
//!   - name: mix                 # a seeded Gaussian mixture on the unit sphere
//!     synthetic: {clusters: 256, spread: 0.5, seed: 0}   # (these are the defaults)
//!   - name: sift                # files: .fvecs, .bvecs or .npy
//!     base: ./sift/sift_base.fvecs
//!     queries: ./sift/sift_query.fvecs
//!     truth: ./sift/sift_groundtruth.ivecs   # optional: computed (and cached) when absent
//! engines:
//!   - {name: flat, plugin: flat}
//!   - {name: usearch, plugin: usearch, options: {connectivity: 32}}  # build options
//! scenarios:
//!   - name: ann
//!     kind: retrieval
//!     vectors: [mix]            # optional filter, default all
//!     engines: [flat, usearch]  # optional filter, default all (every engine must be an index engine)
//!     metric: l2                # l2 | ip | cosine (default l2)
//!     k: 10                     # default 10
//!     queries: 1000             # per pass (default 1000; a file's queries are cut to it)
//!     index_size: 100000        # synthetic default 100000; files: all their base vectors
//!     dim: 384                  # synthetic only (default 384)
//!     build_threads: 0          # threads a build may use (0: every core, the default)
//!     warmup: 1                 # passes over the queries before measuring (default 1)
//!     iterations: 3             # measured passes (default 3)
//!     axes:                     # any of the keys above but build_threads, plus:
//!       index_size: [100000, 1000000]
//!       concurrency: [1, 2]     # clients searching at once, a closed loop (default 1)
//!       batch_size: [1]         # queries per search call (default 1)
//!     search:                   # each engine's search-parameter sweep (the cross
//!       usearch: {expansion_search: [16, 32, 64, 128]}   # product of its lists)
//!     quick:                    # with --quick: run keys, axes (merged by name), search
//!       axes: {index_size: [10000]}
//! ```
//!
//! Cells: scenario, then data set, then combination (the axes' cross
//! product, the first axis outermost), then engine, then its search
//! settings. Axes that change the index (`index_size`, `dim`, `metric`)
//! should come first, so that the cells sharing one index run one after
//! another and it is built once. A cell's id is
//! `scenario/vectors/engine/nN-dD-kK-qQ-METRIC-cC-bsB[-PARAMVALUE...]`
//! (`nall`, no `-d`, for a file's own size and dimension).
//!
//! Build options are the engine's `options:`; two builds of one library
//! are two engines (`usearch-m16`, `usearch-m32`), as in ann-benchmarks'
//! algorithm definitions.

use crate::yaml::{At, MapView};
use crate::{check_name, resolve_path, Cell, CellParams, Ctx, MatrixError, ScenarioKind};
use engine_api::BatchPolicy;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Where a data set's vectors come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum VectorSource {
    /// `engine-matrix-retrieval`'s seeded Gaussian mixture; the size and
    /// dimension are the cell's.
    Synthetic {
        clusters: u32,
        spread: f64,
        seed: u64,
    },
    /// Files (absolute paths): base vectors, queries, and optionally their
    /// exact neighbours (`.ivecs`).
    Files {
        base: std::path::PathBuf,
        queries: std::path::PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truth: Option<std::path::PathBuf>,
    },
}

/// A data set of `vectors:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorsDef {
    pub name: String,
    pub source: VectorSource,
}

impl VectorsDef {
    pub fn is_synthetic(&self) -> bool {
        matches!(self.source, VectorSource::Synthetic { .. })
    }
}

/// What a retrieval cell searches, and how (batch size and concurrency
/// are the cell's [`CellParams`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalParams {
    /// Vectors indexed; 0: every base vector of a file.
    pub index_size: u64,
    /// Dimension of synthetic data; 0: a file's own.
    pub dim: u32,
    pub k: u32,
    /// Queries per pass.
    pub queries: u32,
    /// `l2`, `ip` or `cosine`.
    pub metric: String,
    /// Threads a build may use; 0: every core.
    pub build_threads: u32,
    /// The engine's search parameters (a JSON object).
    pub search: serde_json::Map<String, serde_json::Value>,
}

pub const METRICS: [&str; 3] = ["l2", "ip", "cosine"];
const VECTORS_KEYS: [&str; 5] = ["name", "synthetic", "base", "queries", "truth"];
const SYNTHETIC_KEYS: [&str; 3] = ["clusters", "spread", "seed"];
/// Keys a retrieval scenario may set directly (defaults) and, but for
/// `build_threads`, as axes.
const VALUE_KEYS: [&str; 8] = [
    "index_size",
    "dim",
    "k",
    "queries",
    "metric",
    "concurrency",
    "batch_size",
    "build_threads",
];
const AXIS_KEYS: [&str; 7] = [
    "index_size",
    "dim",
    "k",
    "queries",
    "metric",
    "concurrency",
    "batch_size",
];
const SCENARIO_KEYS: [&str; 11] = [
    "name",
    "kind",
    "vectors",
    "engines",
    "warmup",
    "iterations",
    "min_duration_s",
    "max_duration_s",
    "axes",
    "search",
    "quick",
];
const QUICK_KEYS: [&str; 6] = [
    "warmup",
    "iterations",
    "min_duration_s",
    "max_duration_s",
    "axes",
    "search",
];

/// `vectors:`: a non-empty list of uniquely named data sets.
pub(crate) fn parse_vectors(list: &At<'_>, base: &Path) -> Result<Vec<VectorsDef>, MatrixError> {
    let mut out: Vec<VectorsDef> = Vec::new();
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for item in &list.non_empty_seq()? {
        let m = item.map(&VECTORS_KEYS)?;
        let name_at = m.require("name")?;
        let name = name_at.str()?;
        check_name(name_at, name)?;
        if let Some((l, c)) = seen.get(name) {
            return Err(name_at.err(format!(
                "duplicate vectors name `{name}` (first at line {l} column {c})"
            )));
        }
        seen.insert(name.to_string(), (name_at.node.line, name_at.node.col));
        let path = |key: &str| -> Result<Option<std::path::PathBuf>, MatrixError> {
            m.opt(key)
                .map(|p| {
                    let s = crate::placeholders::expand_env(p.str()?).map_err(|e| p.err(e))?;
                    Ok(resolve_path(base, &s))
                })
                .transpose()
        };
        let source = match m.opt("synthetic") {
            Some(s) => {
                for key in ["base", "queries", "truth"] {
                    if let Some(x) = m.get(key) {
                        return Err(x.err(format!(
                            "`{key}` names a file: a data set is either `synthetic` or files, not both"
                        )));
                    }
                }
                parse_synthetic(s)?
            }
            None => {
                let (Some(base_file), Some(queries)) = (path("base")?, path("queries")?) else {
                    return Err(m.at.err(
                        "a data set needs `synthetic: {...}`, or `base:` and `queries:` files (.fvecs, .bvecs or .npy)",
                    ));
                };
                VectorSource::Files {
                    base: base_file,
                    queries,
                    truth: path("truth")?,
                }
            }
        };
        out.push(VectorsDef {
            name: name.to_string(),
            source,
        });
    }
    Ok(out)
}

fn parse_synthetic(s: &At<'_>) -> Result<VectorSource, MatrixError> {
    let m = s.map(&SYNTHETIC_KEYS)?;
    let clusters = m
        .opt("clusters")
        .map(|c| c.u32_min(1))
        .transpose()?
        .unwrap_or(256);
    let spread = m
        .opt("spread")
        .map(|c| c.non_negative())
        .transpose()?
        .unwrap_or(0.5);
    let seed = m.opt("seed").map(|c| c.u64()).transpose()?.unwrap_or(0);
    Ok(VectorSource::Synthetic {
        clusters,
        spread,
        seed,
    })
}

/// A value of a retrieval key, with the field it was written at.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(u64),
    Metric(String),
}

#[derive(Clone, Debug)]
struct Axis {
    key: &'static str,
    values: Vec<Val>,
}

/// An engine's search sweep: parameter name -> its values.
type Sweep = Vec<(String, Vec<serde_json::Value>)>;

#[derive(Clone, Debug)]
struct Plan {
    run: crate::expand::Run,
    axes: Vec<Axis>,
    /// Engine name -> its sweep.
    search: BTreeMap<String, Sweep>,
}

/// A parsed retrieval scenario.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub path: String,
    pub name: String,
    pub vectors: Vec<String>,
    pub engines: Vec<String>,
    defaults: BTreeMap<&'static str, Val>,
    full: Plan,
    quick: Plan,
}

impl Spec {
    pub fn run(&self, quick: bool) -> crate::expand::Run {
        if quick {
            self.quick.run
        } else {
            self.full.run
        }
    }
}

fn static_key(name: &str) -> &'static str {
    VALUE_KEYS
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("?")
}

/// One value of `key`.
fn parse_val(at: &At<'_>, key: &str) -> Result<Val, MatrixError> {
    match key {
        "metric" => {
            let s = at.str()?;
            if !METRICS.contains(&s) {
                return Err(at.err(format!("unknown metric `{s}` (expected l2, ip or cosine)")));
            }
            Ok(Val::Metric(s.to_string()))
        }
        "build_threads" => Ok(Val::Int(at.u32_min(0)?.into())),
        "index_size" => Ok(Val::Int(at.u64().and_then(|v| {
            if v == 0 {
                Err(at.err("expected a positive number of vectors, got 0"))
            } else {
                Ok(v)
            }
        })?)),
        _ => Ok(Val::Int(at.u32_min(1)?.into())),
    }
}

fn parse_axes(at: &At<'_>) -> Result<Vec<Axis>, MatrixError> {
    let m = at.map(&AXIS_KEYS)?;
    let mut axes = Vec::new();
    for (name, _, v) in &m.entries {
        let key = static_key(name);
        let mut values: Vec<Val> = Vec::new();
        for item in v.non_empty_seq()? {
            let val = parse_val(&item, key)?;
            if let Some(i) = values.iter().position(|x| *x == val) {
                return Err(item.err(format!(
                    "duplicate value {} (already at index {i})",
                    item.node.describe()
                )));
            }
            values.push(val);
        }
        axes.push(Axis { key, values });
    }
    Ok(axes)
}

/// `search:`: engine name -> {parameter: value or list of values}.
fn parse_search(at: &At<'_>, engines: &[String]) -> Result<BTreeMap<String, Sweep>, MatrixError> {
    let mut out = BTreeMap::new();
    for (engine, v) in at.map_any()? {
        if !engines.iter().any(|e| e == engine) {
            return Err(v.err(format!(
                "`{engine}` is not an engine of this scenario (engines: {})",
                engines.join(", ")
            )));
        }
        let mut sweep: Sweep = Vec::new();
        for (param, values) in v.map_any()? {
            if param.is_empty() || !param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(values.err(format!(
                    "`{param}` is not a parameter name (letters, digits and `_`)"
                )));
            }
            let list = match values.json()? {
                serde_json::Value::Array(a) => a,
                other => vec![other],
            };
            if list.is_empty() {
                return Err(values.err("expected a non-empty list of values, got an empty one"));
            }
            for (i, x) in list.iter().enumerate() {
                let ok = match x {
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => true,
                    serde_json::Value::String(s) => {
                        !s.is_empty()
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    }
                    _ => false,
                };
                if !ok {
                    return Err(values.err(format!(
                        "value {i} of `{param}` must be a number, a boolean or a name (letters, digits, `.`, `_`, `-`), got {x}"
                    )));
                }
                if list[..i].contains(x) {
                    return Err(values.err(format!("duplicate value {x} of `{param}`")));
                }
            }
            sweep.push((param.to_string(), list));
        }
        out.insert(engine.to_string(), sweep);
    }
    Ok(out)
}

/// Parses `scenarios[i]` of `kind: retrieval`. `vectors` and `engines` are
/// the matrix's names.
pub(crate) fn parse_scenario(
    at: &At<'_>,
    vectors: &[String],
    engines: &[String],
) -> Result<Spec, MatrixError> {
    let mut allowed: Vec<&str> = SCENARIO_KEYS.to_vec();
    allowed.extend(VALUE_KEYS);
    let m = at.map(&allowed)?;
    let name_at = m.require("name")?;
    let name = name_at.str()?;
    check_name(name_at, name)?;
    if vectors.is_empty() {
        return Err(m
            .at
            .err("a retrieval scenario needs data: add a top-level `vectors:` list"));
    }
    let vector_names = filter(&m, "vectors", vectors, "vectors")?;
    let engine_names = filter(&m, "engines", engines, "engine")?;
    let mut defaults = BTreeMap::new();
    for key in VALUE_KEYS {
        if let Some(v) = m.opt(key) {
            defaults.insert(key, parse_val(v, key)?);
        }
    }
    let full = Plan {
        run: crate::expand::parse_run(&m, None, ScenarioKind::Retrieval)?,
        axes: m
            .opt("axes")
            .map(parse_axes)
            .transpose()?
            .unwrap_or_default(),
        search: m
            .opt("search")
            .map(|s| parse_search(s, &engine_names))
            .transpose()?
            .unwrap_or_default(),
    };
    let quick = match m.opt("quick") {
        None => full.clone(),
        Some(q) => {
            let qm = q.map(&QUICK_KEYS)?;
            let mut axes = full.axes.clone();
            for axis in qm
                .opt("axes")
                .map(parse_axes)
                .transpose()?
                .unwrap_or_default()
            {
                match axes.iter_mut().find(|a| a.key == axis.key) {
                    Some(slot) => *slot = axis,
                    None => axes.push(axis),
                }
            }
            let mut search = full.search.clone();
            if let Some(s) = qm.opt("search") {
                search.extend(parse_search(s, &engine_names)?);
            }
            Plan {
                run: crate::expand::parse_run(&qm, Some(full.run), ScenarioKind::Retrieval)?,
                axes,
                search,
            }
        }
    };
    Ok(Spec {
        path: at.path.clone(),
        name: name.to_string(),
        vectors: vector_names,
        engines: engine_names,
        defaults,
        full,
        quick,
    })
}

/// A scenario's `vectors:`/`engines:` filter: known, unique names, in the
/// order written (all of them when absent).
fn filter(
    m: &MapView<'_>,
    key: &str,
    known: &[String],
    what: &str,
) -> Result<Vec<String>, MatrixError> {
    let Some(list) = m.opt(key) else {
        return Ok(known.to_vec());
    };
    let mut out: Vec<String> = Vec::new();
    for item in list.non_empty_seq()? {
        let s = item.str()?;
        if !known.iter().any(|k| k == s) {
            return Err(item.err(format!(
                "unknown {what} `{s}` (defined: {})",
                known.join(", ")
            )));
        }
        if out.iter().any(|o| o == s) {
            return Err(item.err(format!("{what} `{s}` is listed twice")));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

/// The cross product of an engine's sweep (the first parameter
/// outermost); one empty setting when it has none.
fn settings(sweep: Option<&Sweep>) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut acc = vec![serde_json::Map::new()];
    for (param, values) in sweep.into_iter().flatten() {
        acc = acc
            .iter()
            .flat_map(|s| {
                values.iter().map(move |v| {
                    let mut s = s.clone();
                    s.insert(param.clone(), v.clone());
                    s
                })
            })
            .collect();
    }
    acc
}

/// The id part of a search setting: `-ef_search64`.
fn setting_tag(s: &serde_json::Map<String, serde_json::Value>) -> String {
    s.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(x) => format!("-{k}{x}"),
            other => format!("-{k}{other}"),
        })
        .collect()
}

/// Expands a retrieval scenario into cells (at most `max_cells`).
pub(crate) fn cells(
    spec: &Spec,
    quick: bool,
    ctx: &Ctx<'_>,
    defs: &[VectorsDef],
    max_cells: usize,
) -> Result<Vec<Cell>, MatrixError> {
    let plan = if quick { &spec.quick } else { &spec.full };
    let combos = plan
        .axes
        .iter()
        .fold(1u128, |p, a| p.saturating_mul(a.values.len() as u128));
    let per_engine: u128 = spec
        .engines
        .iter()
        .map(|e| settings(plan.search.get(e)).len() as u128)
        .sum();
    let count = combos
        .saturating_mul(per_engine)
        .saturating_mul(spec.vectors.len() as u128);
    if count > max_cells as u128 {
        return Err(ctx.err(
            &spec.path,
            format!(
                "its {count} cells{} bring the matrix over the limit of {} cells (split the matrix)",
                if quick { " with --quick" } else { "" },
                crate::MAX_CELLS
            ),
        ));
    }
    let mut combos: Vec<BTreeMap<&'static str, Val>> = vec![BTreeMap::new()];
    for axis in &plan.axes {
        combos = combos
            .iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(axis.key, v.clone());
                    c
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for vname in &spec.vectors {
        let def = defs.iter().find(|d| &d.name == vname);
        let synthetic = def.is_some_and(VectorsDef::is_synthetic);
        for combo in &combos {
            let int = |key: &str, default: u64| -> u64 {
                match combo.get(key).or_else(|| spec.defaults.get(key)) {
                    Some(Val::Int(v)) => *v,
                    _ => default,
                }
            };
            let metric = match combo.get("metric").or_else(|| spec.defaults.get("metric")) {
                Some(Val::Metric(m)) => m.clone(),
                _ => "l2".to_string(),
            };
            let written = |key: &str| combo.contains_key(key) || spec.defaults.contains_key(key);
            if !synthetic && written("dim") {
                return Err(ctx.err(
                    &format!("{}.dim", spec.path),
                    format!(
                        "`dim` sets the dimension of synthetic data; `{vname}` is files, whose vectors have their own"
                    ),
                ));
            }
            let index_size = int("index_size", if synthetic { 100_000 } else { 0 });
            let dim = if synthetic { int("dim", 384) as u32 } else { 0 };
            let k = int("k", 10) as u32;
            let queries = int("queries", 1000) as u32;
            let concurrency = int("concurrency", 1) as u32;
            let batch_size = int("batch_size", 1) as u32;
            let build_threads = int("build_threads", 0) as u32;
            for engine in &spec.engines {
                for search in settings(plan.search.get(engine)) {
                    let size = if index_size == 0 {
                        "nall".to_string()
                    } else {
                        format!("n{index_size}")
                    };
                    let d = if dim == 0 {
                        String::new()
                    } else {
                        format!("-d{dim}")
                    };
                    let id = format!(
                        "{}/{vname}/{engine}/{size}{d}-k{k}-q{queries}-{metric}-c{concurrency}-bs{batch_size}{}",
                        spec.name,
                        setting_tag(&search)
                    );
                    if !ids.insert(id.clone()) {
                        return Err(ctx.err(&spec.path, format!("two cells have the id {id}")));
                    }
                    out.push(Cell {
                        id,
                        scenario: spec.name.clone(),
                        kind: ScenarioKind::Retrieval,
                        model: vname.clone(),
                        engine: engine.clone(),
                        params: CellParams {
                            label: None,
                            input_tokens: 0,
                            output_tokens: 0,
                            batch_size,
                            concurrency,
                            batch_policy: BatchPolicy::None,
                            max_batch: batch_size,
                            num_requests: queries,
                            requests: queries,
                            duration_s: 0.0,
                            dtype: "f32".into(),
                            quantization: "none".into(),
                            serving: None,
                            dataset: None,
                            pressure: None,
                        },
                        warmup: plan.run.warmup,
                        iterations: plan.run.iterations,
                        min_duration_s: plan.run.min_duration_s,
                        max_duration_s: plan.run.max_duration_s,
                        breaking_point: None,
                        retrieval: Some(RetrievalParams {
                            index_size,
                            dim,
                            k,
                            queries,
                            metric: metric.clone(),
                            build_threads,
                            search,
                        }),
                    });
                }
            }
        }
    }
    Ok(out)
}
