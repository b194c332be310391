//! Scenarios: parsing, and expansion of their axes into cells with GitHub
//! Actions matrix semantics.

use super::yaml::At;
use super::{check_name, Cell, CellParams, Ctx, MatrixError, ScenarioKind, MAX_CELLS};
use engine_api::BatchPolicy;
use std::collections::{HashMap, HashSet};

/// The keys an axis, a `workload` entry, an `include`/`exclude` entry or a
/// scenario-level default can set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    InputTokens,
    OutputTokens,
    BatchSize,
    Concurrency,
    BatchPolicy,
    MaxBatch,
    NumRequests,
    Requests,
    DurationS,
    Dtype,
    Quantization,
    Label,
    RequestRate,
    Arrival,
    Burstiness,
    MaxConcurrency,
    RampUpS,
    Load,
    SpikeFactor,
    SpikeAtS,
    SpikeS,
    SloTtftMs,
    SloTpotMs,
    SloE2elMs,
    SloAttainment,
    SweepSteps,
    RateScale,
    Dataset,
    DatasetPath,
    PrefixTokens,
    PrefixGroups,
    TimeScale,
    MaxTurns,
    Pressure,
    RateLow,
    PeriodS,
    WalkStepS,
}

/// Serving keys that shape a schedule of the scenario's own, which a
/// trace replaces: an error with `dataset: trace` (as is a `load` other
/// than `sustained`).
const NOT_WITH_TRACE: [Key; 15] = [
    Key::RequestRate,
    Key::Arrival,
    Key::Burstiness,
    Key::RampUpS,
    Key::SpikeFactor,
    Key::SpikeAtS,
    Key::SpikeS,
    Key::SweepSteps,
    Key::RateScale,
    Key::DurationS,
    Key::Requests,
    Key::NumRequests,
    Key::RateLow,
    Key::PeriodS,
    Key::WalkStepS,
];

/// Keys only a `serving` scenario reads.
const SERVING_KEYS: [Key; 19] = [
    Key::RateScale,
    Key::TimeScale,
    Key::RequestRate,
    Key::Arrival,
    Key::Burstiness,
    Key::MaxConcurrency,
    Key::RampUpS,
    Key::Load,
    Key::SpikeFactor,
    Key::SpikeAtS,
    Key::SpikeS,
    Key::SloTtftMs,
    Key::SloTpotMs,
    Key::SloE2elMs,
    Key::SloAttainment,
    Key::SweepSteps,
    Key::RateLow,
    Key::PeriodS,
    Key::WalkStepS,
];

pub(crate) const AXIS_KEYS: [(Key, &str); 37] = [
    (Key::InputTokens, "input_tokens"),
    (Key::OutputTokens, "output_tokens"),
    (Key::BatchSize, "batch_size"),
    (Key::Concurrency, "concurrency"),
    (Key::BatchPolicy, "batch_policy"),
    (Key::MaxBatch, "max_batch"),
    (Key::NumRequests, "num_requests"),
    (Key::Requests, "requests"),
    (Key::DurationS, "duration_s"),
    (Key::Dtype, "dtype"),
    (Key::Quantization, "quantization"),
    (Key::Label, "label"),
    (Key::RequestRate, "request_rate"),
    (Key::Arrival, "arrival"),
    (Key::Burstiness, "burstiness"),
    (Key::MaxConcurrency, "max_concurrency"),
    (Key::RampUpS, "ramp_up_s"),
    (Key::Load, "load"),
    (Key::SpikeFactor, "spike_factor"),
    (Key::SpikeAtS, "spike_at_s"),
    (Key::SpikeS, "spike_s"),
    (Key::SloTtftMs, "slo_ttft_ms"),
    (Key::SloTpotMs, "slo_tpot_ms"),
    (Key::SloE2elMs, "slo_e2el_ms"),
    (Key::SloAttainment, "slo_attainment"),
    (Key::SweepSteps, "sweep_steps"),
    (Key::RateScale, "rate_scale"),
    (Key::Dataset, "dataset"),
    (Key::DatasetPath, "dataset_path"),
    (Key::PrefixTokens, "prefix_tokens"),
    (Key::PrefixGroups, "prefix_groups"),
    (Key::TimeScale, "time_scale"),
    (Key::MaxTurns, "max_turns"),
    (Key::Pressure, "pressure"),
    (Key::RateLow, "rate_low"),
    (Key::PeriodS, "period_s"),
    (Key::WalkStepS, "walk_step_s"),
];

pub(crate) const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];

const WORKLOAD: &str = "workload";
const RUN_KEYS: [&str; 4] = ["warmup", "iterations", "min_duration_s", "max_duration_s"];
const PLAN_KEYS: [&str; 3] = ["axes", "exclude", "include"];
const SCENARIO_KEYS: [&str; 6] = [
    "name",
    "kind",
    "models",
    "engines",
    "quick",
    "breaking_point",
];

impl Key {
    fn name(self) -> &'static str {
        AXIS_KEYS.iter().find(|(k, _)| *k == self).unwrap().1
    }
    fn from_name(s: &str) -> Option<Key> {
        AXIS_KEYS.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }
}

fn axis_names() -> Vec<&'static str> {
    AXIS_KEYS.iter().map(|(_, n)| *n).collect()
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(u32),
    Num(f64),
    Str(String),
    Policy(BatchPolicy),
}

impl Val {
    /// A hashable key, equal for equal values (numbers are finite; `-0` is
    /// `0`).
    fn key(&self) -> (u8, u64, &str) {
        match self {
            Val::Int(v) => (0, u64::from(*v), ""),
            Val::Num(v) => (1, (v + 0.0).to_bits(), ""),
            Val::Str(s) => (2, 0, s),
            Val::Policy(p) => (3, *p as u64, ""),
        }
    }
}

/// A value and the field path it was written at.
#[derive(Clone, Debug)]
struct Src {
    val: Val,
    path: String,
}

/// Key/values in the order written.
type Entry = Vec<(Key, Src)>;

fn get(entry: &Entry, key: Key) -> Option<&Src> {
    entry.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
}

fn set(entry: &mut Entry, key: Key, src: Src) {
    match entry.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = src,
        None => entry.push((key, src)),
    }
}

#[derive(Clone, Debug)]
enum Axis {
    One {
        key: Key,
        values: Vec<Src>,
    },
    /// Zipped: each value sets several keys at once.
    Workload {
        values: Vec<Entry>,
    },
}

impl Axis {
    fn name(&self) -> &'static str {
        match self {
            Axis::One { key, .. } => key.name(),
            Axis::Workload { .. } => WORKLOAD,
        }
    }
    fn len(&self) -> usize {
        match self {
            Axis::One { values, .. } => values.len(),
            Axis::Workload { values } => values.len(),
        }
    }
    fn values(&self) -> Vec<Entry> {
        match self {
            Axis::One { key, values } => values.iter().map(|v| vec![(*key, v.clone())]).collect(),
            Axis::Workload { values } => values.clone(),
        }
    }
}

/// Warmup, iteration and duration settings of a scenario.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub warmup: u32,
    pub iterations: u32,
    pub min_duration_s: f64,
    pub max_duration_s: f64,
}

/// What a scenario expands, with or without `--quick`.
#[derive(Clone, Debug)]
struct Plan {
    run: Run,
    axes: Vec<Axis>,
    exclude: Vec<Entry>,
    include: Vec<Entry>,
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub path: String,
    pub name: String,
    pub kind: ScenarioKind,
    pub models: Vec<String>,
    pub engines: Vec<String>,
    pub breaking_point: Option<crate::breaking::BreakingPoint>,
    defaults: Entry,
    full: Plan,
    quick: Plan,
}

impl Spec {
    pub fn run(&self, quick: bool) -> Run {
        if quick {
            self.quick.run
        } else {
            self.full.run
        }
    }
}

fn parse_value(at: &At<'_>, key: Key) -> Result<Src, MatrixError> {
    let val = match key {
        Key::InputTokens
        | Key::OutputTokens
        | Key::BatchSize
        | Key::Concurrency
        | Key::MaxBatch
        | Key::NumRequests
        | Key::Requests
        | Key::MaxConcurrency
        | Key::PrefixGroups => Val::Int(at.u32_min(1)?),
        Key::SweepSteps | Key::PrefixTokens => Val::Int(at.u32_min(0)?),
        Key::MaxTurns => Val::Int(at.u32_min(2)?),
        Key::Dataset => {
            let names = crate::dataset::DatasetKind::NAMES;
            match at.str().ok().filter(|s| names.contains(s)) {
                Some(s) => Val::Str(s.to_string()),
                None => {
                    return Err(at.err(format!(
                        "expected a dataset ({}), got {}",
                        names.join(", "),
                        at.node.describe()
                    )))
                }
            }
        }
        Key::DatasetPath => {
            let s = at.str()?;
            if s.trim().is_empty() {
                return Err(at.err("expected a file path, got an empty string"));
            }
            Val::Str(s.to_string())
        }
        Key::DurationS | Key::RampUpS | Key::SpikeAtS | Key::SpikeS => Val::Num(at.non_negative()?),
        Key::Burstiness
        | Key::RateScale
        | Key::TimeScale
        | Key::SpikeFactor
        | Key::PeriodS
        | Key::WalkStepS
        | Key::SloTtftMs
        | Key::SloTpotMs
        | Key::SloE2elMs => {
            let v = at.non_negative()?;
            if v <= 0.0 {
                return Err(at.err("expected a positive number, got 0"));
            }
            Val::Num(v)
        }
        Key::RateLow => {
            let v = at.non_negative()?;
            if !(v > 0.0 && v <= 1.0) {
                return Err(at.err(format!(
                    "expected the lowest rate as a share of the rate, in (0, 1], got {v}"
                )));
            }
            Val::Num(v)
        }
        Key::SloAttainment => {
            let v = at.non_negative()?;
            if !(v > 0.0 && v <= 1.0) {
                return Err(at.err(format!("expected a share of requests in (0, 1], got {v}")));
            }
            Val::Num(v)
        }
        Key::RequestRate => match (at.node.scalar(), at.str().ok()) {
            (_, Some(s @ ("inf" | "sustainable"))) => Val::Str(s.to_string()),
            (Some(super::yaml::Scalar::Float(f)), _) if f == f64::INFINITY => {
                Val::Str("inf".into())
            }
            _ => {
                let v = at.non_negative().map_err(|_| {
                    at.err(format!(
                        "expected a request rate (requests per second > 0, `inf` or `sustainable`), got {}",
                        at.node.describe()
                    ))
                })?;
                if v <= 0.0 {
                    return Err(at.err(
                        "expected a request rate > 0 (requests per second), `inf` or `sustainable`, got 0",
                    ));
                }
                Val::Num(v)
            }
        },
        Key::Arrival | Key::Load => {
            let names: &[&str] = if key == Key::Arrival {
                &crate::open_loop::Arrival::NAMES
            } else {
                &crate::open_loop::Load::NAMES
            };
            match at.str().ok().filter(|s| names.contains(s)) {
                Some(s) => Val::Str(s.to_string()),
                None => {
                    return Err(at.err(format!(
                        "expected one of {}, got {}",
                        names.join(", "),
                        at.node.describe()
                    )))
                }
            }
        }
        Key::Dtype => {
            let s = at.str().ok().filter(|s| DTYPES.contains(s));
            Val::Str(
                s.ok_or_else(|| {
                    at.err(format!(
                        "expected a dtype ({}), got {}",
                        DTYPES.join(", "),
                        at.node.describe()
                    ))
                })?
                .to_string(),
            )
        }
        Key::BatchPolicy => {
            Val::Policy(at.str().ok().and_then(BatchPolicy::parse).ok_or_else(|| {
                at.err(format!(
                    "expected a batch policy (none, static, continuous), got {}",
                    at.node.describe()
                ))
            })?)
        }
        Key::Quantization | Key::Label => {
            let s = at.str()?;
            check_name(at, s)?;
            Val::Str(s.to_string())
        }
        Key::Pressure => {
            let s = at.str()?;
            crate::pressure::Pressure::parse(s)
                .map_err(|e| at.err(format!("pressure {e} (none, cpuN, memG or cpuN-memG)")))?;
            Val::Str(s.to_string())
        }
    };
    Ok(Src {
        val,
        path: at.path.clone(),
    })
}

/// A mapping of axis keys (a workload value, an include or exclude entry).
fn parse_entry(at: &At<'_>) -> Result<Entry, MatrixError> {
    let names = axis_names();
    let m = at.map(&names)?;
    if m.entries.is_empty() {
        return Err(at.err("expected at least one axis key, got an empty mapping"));
    }
    m.entries
        .iter()
        .map(|(name, _, v)| {
            Ok((
                Key::from_name(name).unwrap(),
                parse_value(v, Key::from_name(name).unwrap())?,
            ))
        })
        .collect()
}

fn parse_entries(at: &At<'_>) -> Result<Vec<Entry>, MatrixError> {
    at.seq()?.iter().map(parse_entry).collect()
}

fn parse_axes(at: &At<'_>) -> Result<Vec<Axis>, MatrixError> {
    let mut allowed = vec![WORKLOAD];
    allowed.extend(axis_names());
    let m = at.map(&allowed)?;
    let mut axes = Vec::new();
    for (name, _, v) in &m.entries {
        let items = v.non_empty_seq()?;
        if *name == WORKLOAD {
            axes.push(Axis::Workload {
                values: items.iter().map(parse_entry).collect::<Result<_, _>>()?,
            });
        } else {
            let key = Key::from_name(name).unwrap();
            let mut values: Vec<Src> = Vec::new();
            for item in &items {
                values.push(parse_value(item, key)?);
            }
            let mut first: HashMap<_, usize> = HashMap::new();
            for (i, (item, src)) in items.iter().zip(&values).enumerate() {
                if let Some(first) = first.insert(src.val.key(), i) {
                    return Err(item.err(format!(
                        "duplicate value {} (already at index {first})",
                        item.node.describe()
                    )));
                }
            }
            axes.push(Axis::One { key, values });
        }
    }
    Ok(axes)
}

pub(crate) fn parse_run(
    m: &super::yaml::MapView<'_>,
    base: Option<Run>,
    kind: ScenarioKind,
) -> Result<Run, MatrixError> {
    let d = base.unwrap_or(Run {
        warmup: 1,
        // A serving iteration is a whole load run (or a whole sweep).
        // A retrieval iteration is a pass over the whole query set.
        iterations: match kind {
            ScenarioKind::Serving => 1,
            ScenarioKind::Retrieval => 3,
            _ => 5,
        },
        min_duration_s: 0.0,
        max_duration_s: 600.0,
    });
    let run = Run {
        warmup: m
            .opt("warmup")
            .map(|v| v.u32_min(0))
            .transpose()?
            .unwrap_or(d.warmup),
        iterations: m
            .opt("iterations")
            .map(|v| v.u32_min(1))
            .transpose()?
            .unwrap_or(d.iterations),
        min_duration_s: m
            .opt("min_duration_s")
            .map(|v| v.non_negative())
            .transpose()?
            .unwrap_or(d.min_duration_s),
        max_duration_s: m
            .opt("max_duration_s")
            .map(|v| v.non_negative())
            .transpose()?
            .unwrap_or(d.max_duration_s),
    };
    if run.max_duration_s <= 0.0 || run.max_duration_s < run.min_duration_s {
        let at = m
            .opt("max_duration_s")
            .or(m.opt("min_duration_s"))
            .unwrap_or(&m.at);
        return Err(at.err(format!(
            "max_duration_s ({}) must be positive and at least min_duration_s ({})",
            run.max_duration_s, run.min_duration_s
        )));
    }
    Ok(run)
}

/// Checks a plan's axes against its include and exclude entries.
fn check_plan(plan: &Plan, ctx: &Ctx<'_>) -> Result<(), MatrixError> {
    let single: HashSet<Key> = plan
        .axes
        .iter()
        .filter_map(|a| match a {
            Axis::One { key, .. } => Some(*key),
            Axis::Workload { .. } => None,
        })
        .collect();
    let mut all = single.clone();
    for axis in &plan.axes {
        if let Axis::Workload { values } = axis {
            for (k, src) in values.iter().flatten() {
                if single.contains(k) {
                    return Err(ctx.err(
                        &src.path,
                        format!(
                            "`{}` is both an axis of its own and a key of workload values",
                            k.name()
                        ),
                    ));
                }
                all.insert(*k);
            }
        }
    }
    for (k, src) in plan.exclude.iter().flatten() {
        if !all.contains(k) {
            let mut names: Vec<&str> = AXIS_KEYS
                .iter()
                .filter(|(key, _)| all.contains(key))
                .map(|(_, n)| *n)
                .collect();
            if names.is_empty() {
                names.push("none");
            }
            return Err(ctx.err(
                &src.path,
                format!(
                    "exclude key `{}` is not an axis of this scenario (axes: {})",
                    k.name(),
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Parses `scenarios[i]`. `models` and `engines` are the matrix's names.
pub(crate) fn parse_scenario(
    at: &At<'_>,
    ctx: &Ctx<'_>,
    models: &[String],
    engines: &[String],
) -> Result<Spec, MatrixError> {
    let mut allowed: Vec<&str> = SCENARIO_KEYS.to_vec();
    allowed.extend(RUN_KEYS);
    allowed.extend(PLAN_KEYS);
    allowed.extend(axis_names());
    let m = at.map(&allowed)?;

    let name_at = m.require("name")?;
    let name = name_at.str()?;
    check_name(name_at, name)?;

    let kind_at = m.require("kind")?;
    let kind = match kind_at.str().ok() {
        Some("latency") => ScenarioKind::Latency,
        Some("throughput") => ScenarioKind::Throughput,
        Some("concurrency") => ScenarioKind::Concurrency,
        Some("serving") => ScenarioKind::Serving,
        _ => {
            return Err(kind_at.err(format!(
                "expected a scenario kind (latency, throughput, concurrency, serving, retrieval), got {}",
                kind_at.node.describe()
            )))
        }
    };

    let filter = |key: &str, known: &[String], what: &str| -> Result<Vec<String>, MatrixError> {
        let Some(list) = m.opt(key) else {
            return Ok(known.to_vec());
        };
        let known_set: HashSet<&str> = known.iter().map(String::as_str).collect();
        let mut listed: HashSet<&str> = HashSet::new();
        let mut out: Vec<String> = Vec::new();
        for item in list.non_empty_seq()? {
            let s = item.str()?;
            if !known_set.contains(s) {
                return Err(item.err(format!(
                    "unknown {what} `{s}` (defined: {})",
                    known.join(", ")
                )));
            }
            if !listed.insert(s) {
                return Err(item.err(format!("{what} `{s}` is listed twice")));
            }
            out.push(s.to_string());
        }
        Ok(out)
    };
    let model_names = filter("models", models, "model")?;
    let engine_names = filter("engines", engines, "engine")?;
    let breaking_point = match m.opt("breaking_point") {
        None => None,
        Some(b) if kind == ScenarioKind::Serving => {
            return Err(b.err(
                "breaking_point raises the concurrency or the batch size of a closed loop: it does not apply to `kind: serving` (an open loop's sweep finds its sustainable rate)",
            ))
        }
        Some(b) => Some(crate::breaking::parse(b)?),
    };

    let mut defaults = Entry::new();
    for (k, _, v) in &m.entries {
        if let Some(key) = Key::from_name(k) {
            if !v.is_null() {
                defaults.push((key, parse_value(v, key)?));
            }
        }
    }

    let full = Plan {
        run: parse_run(&m, None, kind)?,
        axes: m
            .opt("axes")
            .map(parse_axes)
            .transpose()?
            .unwrap_or_default(),
        exclude: m
            .opt("exclude")
            .map(parse_entries)
            .transpose()?
            .unwrap_or_default(),
        include: m
            .opt("include")
            .map(parse_entries)
            .transpose()?
            .unwrap_or_default(),
    };
    check_plan(&full, ctx)?;

    let quick = match m.opt("quick") {
        None => full.clone(),
        Some(q) => {
            let mut qkeys: Vec<&str> = RUN_KEYS.to_vec();
            qkeys.extend(PLAN_KEYS);
            let qm = q.map(&qkeys)?;
            let mut axes = full.axes.clone();
            if let Some(a) = qm.opt("axes") {
                for axis in parse_axes(a)? {
                    match axes.iter_mut().find(|x| x.name() == axis.name()) {
                        Some(slot) => *slot = axis,
                        None => axes.push(axis),
                    }
                }
            }
            let plan = Plan {
                run: parse_run(&qm, Some(full.run), kind)?,
                axes,
                exclude: match qm.opt("exclude") {
                    Some(e) => parse_entries(e)?,
                    None => full.exclude.clone(),
                },
                include: match qm.opt("include") {
                    Some(e) => parse_entries(e)?,
                    None => full.include.clone(),
                },
            };
            check_plan(&plan, ctx)?;
            plan
        }
    };

    Ok(Spec {
        path: at.path.clone(),
        name: name.to_string(),
        kind,
        models: model_names,
        engines: engine_names,
        breaking_point,
        defaults,
        full,
        quick,
    })
}

/// Expands a plan's axes into combinations: cross product (first axis
/// outermost), then `exclude`, then `include`.
fn combinations(plan: &Plan) -> Vec<Entry> {
    let mut base: Vec<Entry> = if plan.axes.is_empty() {
        // GitHub: a matrix of only `include` entries runs exactly those.
        if plan.include.is_empty() {
            vec![Entry::new()]
        } else {
            Vec::new()
        }
    } else {
        let mut acc = vec![Entry::new()];
        for axis in &plan.axes {
            let values = axis.values();
            acc = acc
                .iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.extend(v.iter().cloned());
                        c
                    })
                })
                .collect();
        }
        acc
    };

    base.retain(|c| {
        !plan.exclude.iter().any(|e| {
            e.iter()
                .all(|(k, v)| get(c, *k).is_some_and(|o| o.val == v.val))
        })
    });

    let mut added: Vec<Entry> = vec![Entry::new(); base.len()];
    let mut extra: Vec<Entry> = Vec::new();
    for inc in &plan.include {
        let mut used = false;
        for (orig, add) in base.iter().zip(added.iter_mut()) {
            let fits = inc
                .iter()
                .all(|(k, v)| get(orig, *k).is_none_or(|o| o.val == v.val));
            if fits {
                used = true;
                for (k, v) in inc {
                    if get(orig, *k).is_none() {
                        set(add, *k, v.clone());
                    }
                }
            }
        }
        if !used {
            extra.push(inc.clone());
        }
    }
    base.into_iter()
        .zip(added)
        .map(|(mut c, a)| {
            c.extend(a);
            c
        })
        .chain(extra)
        .collect()
}

/// A combination resolved against the scenario's defaults.
struct Resolver<'a> {
    combo: &'a Entry,
    defaults: &'a Entry,
    scenario: &'a str,
}

impl Resolver<'_> {
    fn src(&self, key: Key) -> Option<&Src> {
        get(self.combo, key).or_else(|| get(self.defaults, key))
    }
    fn int(&self, key: Key, default: u32) -> u32 {
        match self.src(key).map(|s| &s.val) {
            Some(Val::Int(v)) => *v,
            _ => default,
        }
    }
    fn num(&self, key: Key, default: f64) -> f64 {
        match self.src(key).map(|s| &s.val) {
            Some(Val::Num(v)) => *v,
            _ => default,
        }
    }
    fn string(&self, key: Key) -> Option<String> {
        match self.src(key).map(|s| &s.val) {
            Some(Val::Str(v)) => Some(v.clone()),
            _ => None,
        }
    }
    fn policy(&self, default: BatchPolicy) -> BatchPolicy {
        match self.src(Key::BatchPolicy).map(|s| &s.val) {
            Some(Val::Policy(p)) => *p,
            _ => default,
        }
    }
    /// Where `key`'s value came from (the scenario when it is a built-in
    /// default).
    fn path(&self, key: Key) -> &str {
        self.src(key).map_or(self.scenario, |s| &s.path)
    }
}

/// Applies the defaults of `kind` (see the module documentation).
fn resolve(kind: ScenarioKind, r: &Resolver<'_>, ctx: &Ctx<'_>) -> Result<CellParams, MatrixError> {
    let input_tokens = r.int(Key::InputTokens, 128);
    let output_tokens = r.int(Key::OutputTokens, 64);
    let dtype = r.string(Key::Dtype).unwrap_or_else(|| "f32".into());
    let quantization = r.string(Key::Quantization).unwrap_or_else(|| "none".into());
    let label = r.string(Key::Label);
    let duration_s = r.num(Key::DurationS, 0.0);
    if kind != ScenarioKind::Serving {
        if let Some(k) = SERVING_KEYS.iter().find(|k| r.src(**k).is_some()) {
            return Err(ctx.err(
                r.path(*k),
                format!(
                    "`{}` applies to `kind: serving` only (this scenario is {})",
                    k.name(),
                    kind.as_str()
                ),
            ));
        }
    }
    let dataset = dataset(kind, r, ctx)?;
    let trace = dataset
        .as_ref()
        .is_some_and(|d| d.kind == crate::dataset::DatasetKind::Trace);
    let mut p = match kind {
        ScenarioKind::Serving => serving(
            r,
            ctx,
            trace,
            label,
            input_tokens,
            output_tokens,
            duration_s,
            dtype,
            quantization,
        )?,
        ScenarioKind::Latency => {
            let concurrency = r.int(Key::Concurrency, 1);
            if concurrency != 1 {
                return Err(ctx.err(
                    r.path(Key::Concurrency),
                    format!(
                        "a latency scenario runs one batch at a time: concurrency must be 1, got {concurrency} (use kind: concurrency)"
                    ),
                ));
            }
            let batch_size = r.int(Key::BatchSize, 1);
            CellParams {
                label,
                input_tokens,
                output_tokens,
                batch_size,
                concurrency,
                batch_policy: r.policy(BatchPolicy::Static),
                max_batch: r.int(Key::MaxBatch, batch_size),
                num_requests: r.int(Key::NumRequests, batch_size),
                requests: r.int(Key::Requests, batch_size),
                duration_s,
                dtype,
                quantization,
                serving: None,
                dataset: None,
                pressure: None,
            }
        }
        ScenarioKind::Throughput => {
            let batch_size = r.int(Key::BatchSize, 8);
            let num_requests = r.int(Key::NumRequests, 32);
            CellParams {
                label,
                input_tokens,
                output_tokens,
                batch_size,
                concurrency: r.int(Key::Concurrency, num_requests),
                batch_policy: r.policy(BatchPolicy::Continuous),
                max_batch: r.int(Key::MaxBatch, batch_size),
                num_requests,
                requests: r.int(Key::Requests, num_requests),
                duration_s,
                dtype,
                quantization,
                serving: None,
                dataset: None,
                pressure: None,
            }
        }
        ScenarioKind::Concurrency => {
            let concurrency = r.int(Key::Concurrency, 1);
            let batch_size = r.int(Key::BatchSize, concurrency);
            let requests = r.int(Key::Requests, concurrency.saturating_mul(4));
            CellParams {
                label,
                input_tokens,
                output_tokens,
                batch_size,
                concurrency,
                batch_policy: r.policy(BatchPolicy::Continuous),
                max_batch: r.int(Key::MaxBatch, batch_size.max(concurrency)),
                num_requests: r.int(Key::NumRequests, requests),
                requests,
                duration_s,
                dtype,
                quantization,
                serving: None,
                dataset: None,
                pressure: None,
            }
        }
        ScenarioKind::Retrieval => {
            // Parsed and expanded by crate::retrieval, never here.
            return Err(ctx.err(r.scenario, "a retrieval scenario is expanded on its own"));
        }
    };
    // A text dataset's (or a trace's) lengths are its data's: no nominal
    // length is recorded that no request has.
    if let Some(d) = dataset.as_ref().filter(|d| d.kind.lengths_from_data()) {
        p.input_tokens = 0;
        if d.output_from_data {
            p.output_tokens = 0;
        }
    }
    p.dataset = dataset;
    p.pressure = r
        .string(Key::Pressure)
        .and_then(|s| crate::pressure::Pressure::parse(&s).ok().flatten());
    Ok(p)
}

/// The request source of a combination (`None`: `random`), checked
/// against the keys that go with it and the scenario's kind.
fn dataset(
    scenario: ScenarioKind,
    r: &Resolver<'_>,
    ctx: &Ctx<'_>,
) -> Result<Option<crate::dataset::DatasetParams>, MatrixError> {
    use crate::dataset::{DatasetKind, DatasetParams};
    let kind = r
        .string(Key::Dataset)
        .and_then(|s| DatasetKind::parse(&s))
        .unwrap_or(DatasetKind::Random);
    let only = |key: Key, which: &str| -> Result<(), MatrixError> {
        match r.src(key) {
            Some(s) => Err(ctx.err(
                &s.path,
                format!(
                    "`{}` applies to dataset {which} only (this combination's dataset is {})",
                    key.name(),
                    kind.as_str()
                ),
            )),
            None => Ok(()),
        }
    };
    if kind != DatasetKind::Prefix {
        only(Key::PrefixTokens, "prefix")?;
        only(Key::PrefixGroups, "prefix")?;
    }
    if !kind.lengths_from_data() {
        only(Key::DatasetPath, "sharegpt, prompts, trace and multi_turn")?;
    }
    if kind != DatasetKind::MultiTurn {
        only(Key::MaxTurns, "multi_turn")?;
    } else if scenario != ScenarioKind::Concurrency {
        return Err(ctx.err(
            r.path(Key::Dataset),
            format!(
                "dataset multi_turn runs each client's sessions turn after turn: it applies to `kind: concurrency` only (this scenario is {})",
                scenario.as_str()
            ),
        ));
    }
    if kind != DatasetKind::Trace {
        only(Key::TimeScale, "trace")?;
    } else if scenario != ScenarioKind::Serving {
        return Err(ctx.err(
            r.path(Key::Dataset),
            format!(
                "dataset trace replays a trace at its own times: it applies to `kind: serving` only (this scenario is {})",
                scenario.as_str()
            ),
        ));
    }
    if kind.lengths_from_data() {
        if let Some(s) = r.src(Key::InputTokens) {
            return Err(ctx.err(
                &s.path,
                format!(
                    "dataset {} takes its input lengths from the data: remove input_tokens",
                    kind.as_str()
                ),
            ));
        }
    }
    let input_tokens = r.int(Key::InputTokens, 128);
    let prefix_tokens = r.int(Key::PrefixTokens, input_tokens / 2);
    if kind == DatasetKind::Prefix && prefix_tokens > input_tokens {
        return Err(ctx.err(
            r.path(Key::PrefixTokens),
            format!(
                "prefix_tokens ({prefix_tokens}) must be at most input_tokens ({input_tokens})"
            ),
        ));
    }
    let path = r.string(Key::DatasetPath).map(|p| {
        if p.starts_with("${") {
            p
        } else {
            super::resolve_path(ctx.base, &p).display().to_string()
        }
    });
    if kind == DatasetKind::Prompts && path.is_none() {
        return Err(ctx.err(
            r.path(Key::Dataset),
            "dataset prompts needs dataset_path (a JSONL or YAML file of prompts)",
        ));
    }
    if kind == DatasetKind::Trace && path.is_none() {
        return Err(ctx.err(
            r.path(Key::Dataset),
            "dataset trace needs dataset_path (a JSONL trace in Mooncake's format)",
        ));
    }
    Ok(match kind {
        DatasetKind::Random => None,
        _ => Some(DatasetParams {
            kind,
            path,
            prefix_tokens: if kind == DatasetKind::Prefix {
                prefix_tokens
            } else {
                0
            },
            prefix_groups: r.int(Key::PrefixGroups, 1),
            output_from_data: kind.lengths_from_data() && r.src(Key::OutputTokens).is_none(),
            time_scale: r.num(Key::TimeScale, 1.0),
            max_turns: if kind == DatasetKind::MultiTurn {
                r.int(Key::MaxTurns, 4)
            } else {
                0
            },
        }),
    })
}

/// A `serving` combination (see [`crate::open_loop`]).
#[allow(clippy::too_many_arguments)]
fn serving(
    r: &Resolver<'_>,
    ctx: &Ctx<'_>,
    trace: bool,
    label: Option<String>,
    input_tokens: u32,
    output_tokens: u32,
    duration_s: f64,
    dtype: String,
    quantization: String,
) -> Result<CellParams, MatrixError> {
    use crate::open_loop::{Arrival, Load, Rate, ServingParams, Slo};
    let err = |key: Key, msg: String| Err(ctx.err(r.path(key), msg));
    let load = r
        .string(Key::Load)
        .and_then(|s| Load::parse(&s))
        .unwrap_or(Load::Sustained);
    if trace {
        // The trace is the schedule: its lines are the requests and its
        // timestamps their send times.
        if let Some(k) = NOT_WITH_TRACE.iter().find(|k| r.src(**k).is_some()) {
            let why = match k {
                Key::DurationS | Key::Requests | Key::NumRequests => {
                    "a trace sends one request per line"
                }
                _ => "the trace's timestamps are the schedule (time_scale scales them)",
            };
            return err(
                *k,
                format!("`{}` does not apply to dataset trace: {why}", k.name()),
            );
        }
        if load != Load::Sustained {
            return err(
                Key::Load,
                format!(
                    "load {} does not apply to dataset trace: the trace's timestamps are the schedule (time_scale scales them)",
                    load.as_str()
                ),
            );
        }
    }
    let arrival = r
        .string(Key::Arrival)
        .and_then(|s| Arrival::parse(&s))
        .unwrap_or(Arrival::Poisson);
    let request_rate = match r.src(Key::RequestRate).map(|s| &s.val) {
        Some(Val::Num(v)) => Rate::Fixed(*v),
        Some(Val::Str(s)) if s == "sustainable" => Rate::Sustainable,
        Some(_) => Rate::Inf,
        None if load == Load::Sweep => Rate::Fixed(1.0),
        None => Rate::Inf,
    };
    let mut duration_s = duration_s;
    match (load, request_rate) {
        // Each rate a sweep tries runs this long by default.
        (Load::Sweep, Rate::Fixed(_)) if duration_s <= 0.0 => duration_s = 10.0,
        (Load::Sweep, Rate::Fixed(_)) => {}
        (Load::Sweep, _) => {
            return err(
                Key::RequestRate,
                "a sweep starts at a request rate (a number of requests per second), not inf or sustainable".into(),
            )
        }
        (_, Rate::Inf) if duration_s > 0.0 => {
            return err(
                Key::DurationS,
                "request_rate inf sends `requests` at once: give `requests`, not duration_s".into(),
            )
        }
        (Load::Spike | Load::Burst | Load::Day | Load::Walk, Rate::Inf) => {
            return err(
                Key::RequestRate,
                format!("a {} needs a request rate, not inf", load.as_str()),
            )
        }
        (Load::Day | Load::Walk, _) if duration_s <= 0.0 => {
            return err(
                Key::DurationS,
                format!(
                    "a {} load runs for a time: it needs duration_s",
                    load.as_str()
                ),
            )
        }
        (Load::Spike | Load::Burst, _) if duration_s <= 0.0 => {
            return err(
                Key::DurationS,
                format!(
                    "a {} needs duration_s (the spike and the recovery after it happen inside it)",
                    load.as_str()
                ),
            )
        }
        _ => {}
    }
    // The shape of gamma gaps; poisson is gamma of shape 1, and constant
    // has none (a scenario-wide default may cover both).
    let burstiness = match arrival {
        Arrival::Gamma => r.num(Key::Burstiness, 1.0),
        _ => 1.0,
    };
    let spike_factor = r.num(Key::SpikeFactor, 2.0);
    let spike_at_s = r.num(Key::SpikeAtS, 0.4 * duration_s);
    let spike_s = r.num(Key::SpikeS, 0.2 * duration_s);
    if matches!(load, Load::Spike | Load::Burst) && spike_at_s + spike_s >= duration_s {
        return err(
            Key::SpikeAtS,
            format!(
                "the spike (spike_at_s {spike_at_s} + spike_s {spike_s}) must end before duration_s {duration_s}, to leave time to recover"
            ),
        );
    }
    for (key, only) in [
        (Key::RateLow, &[Load::Day, Load::Walk][..]),
        (Key::PeriodS, &[Load::Day][..]),
        (Key::WalkStepS, &[Load::Walk][..]),
    ] {
        if r.src(key).is_some() && !only.contains(&load) {
            let names: Vec<&str> = only.iter().map(|l| l.as_str()).collect();
            return err(
                key,
                format!(
                    "`{}` applies to load {} only (this combination's load is {})",
                    key.name(),
                    names.join(" and "),
                    load.as_str()
                ),
            );
        }
    }
    let slo = Slo {
        ttft_ms: r.src(Key::SloTtftMs).map(|_| r.num(Key::SloTtftMs, 0.0)),
        tpot_ms: r.src(Key::SloTpotMs).map(|_| r.num(Key::SloTpotMs, 0.0)),
        e2el_ms: r.src(Key::SloE2elMs).map(|_| r.num(Key::SloE2elMs, 0.0)),
        attainment: r.num(Key::SloAttainment, 0.99),
    };
    if load == Load::Sweep && slo.ttft_ms.is_none() && slo.e2el_ms.is_none() {
        return err(
            Key::Load,
            "a sweep needs slo_ttft_ms or slo_e2el_ms to judge each rate by (latency from the scheduled send time sees the queue of an overloaded server; TPOT alone does not)".into(),
        );
    }
    let max_concurrency = r
        .src(Key::MaxConcurrency)
        .map(|_| r.int(Key::MaxConcurrency, 1));
    let max_batch = r.int(Key::MaxBatch, max_concurrency.unwrap_or(64));
    // A trace's requests are its lines, counted when it is read.
    let requests = if trace {
        0
    } else {
        r.int(Key::Requests, r.int(Key::NumRequests, 100))
    };
    Ok(CellParams {
        label,
        input_tokens,
        output_tokens,
        batch_size: max_batch,
        concurrency: max_concurrency.unwrap_or(0),
        batch_policy: r.policy(BatchPolicy::Continuous),
        max_batch,
        num_requests: requests,
        requests,
        duration_s,
        dtype,
        quantization,
        dataset: None,
        pressure: None,
        serving: Some(ServingParams {
            load,
            request_rate,
            arrival,
            burstiness,
            max_concurrency,
            ramp_up_s: r.num(Key::RampUpS, 0.0),
            spike_factor,
            spike_at_s,
            spike_s,
            slo,
            sweep_steps: r.int(Key::SweepSteps, 4),
            rate_scale: r.num(Key::RateScale, 1.0),
            resolved_rate: None,
            rate_low: r.num(Key::RateLow, 0.25),
            period_s: r.num(Key::PeriodS, duration_s),
            walk_step_s: r.num(Key::WalkStepS, 10.0),
        }),
    })
}

/// The `max_batch` a cell gets when none is given.
fn default_max_batch(kind: ScenarioKind, p: &CellParams) -> u32 {
    match kind {
        ScenarioKind::Serving => p
            .serving
            .as_ref()
            .and_then(|s| s.max_concurrency)
            .unwrap_or(64),
        ScenarioKind::Concurrency => p.batch_size.max(p.concurrency),
        _ => p.batch_size,
    }
}

/// The readable, stable part of a cell id after `scenario/model/engine/`.
pub(crate) fn tag(kind: ScenarioKind, p: &CellParams) -> String {
    let mut t = String::new();
    if let Some(l) = &p.label {
        t.push_str(l);
        t.push('-');
    }
    if let Some(s) = &p.serving {
        serving_tag(&mut t, p, s);
        if p.max_batch != default_max_batch(kind, p) {
            t.push_str(&format!("-mb{}", p.max_batch));
        }
        pressure_tag(&mut t, p);
        return t;
    }
    t.push_str(&format!(
        "{}-bs{}-c{}-{}-{}-{}",
        lengths_tag(p),
        p.batch_size,
        p.concurrency,
        p.batch_policy.as_str(),
        p.dtype,
        p.quantization
    ));
    match kind {
        ScenarioKind::Latency => {}
        ScenarioKind::Throughput => t.push_str(&format!("-n{}", p.num_requests)),
        ScenarioKind::Concurrency if p.duration_s > 0.0 => {
            t.push_str(&format!("-d{}s", p.duration_s))
        }
        ScenarioKind::Concurrency => t.push_str(&format!("-r{}", p.requests)),
        // Tagged by serving_tag.
        ScenarioKind::Serving | ScenarioKind::Retrieval => {}
    }
    if p.max_batch != default_max_batch(kind, p) {
        t.push_str(&format!("-mb{}", p.max_batch));
    }
    pressure_tag(&mut t, p);
    t
}

/// `-pcpu2-mem4` when the cell runs under pressure.
fn pressure_tag(t: &mut String, p: &CellParams) {
    if let Some(x) = &p.pressure {
        t.push_str(&format!("-p{}", x.tag()));
    }
}

/// `in128-out64`, or the dataset's fragment (see
/// [`crate::dataset::DatasetParams::lengths_tag`]).
fn lengths_tag(p: &CellParams) -> String {
    match &p.dataset {
        Some(d) => d.lengths_tag(p.input_tokens, p.output_tokens),
        None => format!("in{}-out{}", p.input_tokens, p.output_tokens),
    }
}

/// `in128-out64-spike-r4-poisson-mc16-x2at10s+5s-d30s-slo500_x_x-f32-none`.
fn serving_tag(t: &mut String, p: &CellParams, s: &crate::open_loop::ServingParams) {
    use crate::open_loop::{Arrival, Load};
    if p.dataset
        .as_ref()
        .is_some_and(|d| d.kind == crate::dataset::DatasetKind::Trace)
    {
        // `trace.NAME[-tsS]-outO[-mcM][-sloT_P_E]-DTYPE-QUANT`: the trace
        // is the schedule.
        t.push_str(&lengths_tag(p));
        if let Some(m) = s.max_concurrency {
            t.push_str(&format!("-mc{m}"));
        }
        slo_tag(t, s);
        t.push_str(&format!("-{}-{}", p.dtype, p.quantization));
        return;
    }
    t.push_str(&format!(
        "{}-{}-r{}-{}",
        lengths_tag(p),
        s.load.as_str(),
        s.request_rate.tag(),
        s.arrival.as_str()
    ));
    if s.arrival == Arrival::Gamma {
        t.push_str(&format!("{}", s.burstiness));
    }
    if s.rate_scale != 1.0 {
        t.push_str(&format!("-scale{}", s.rate_scale));
    }
    if let Some(m) = s.max_concurrency {
        t.push_str(&format!("-mc{m}"));
    }
    if s.ramp_up_s > 0.0 {
        t.push_str(&format!("-ramp{}s", s.ramp_up_s));
    }
    if matches!(s.load, Load::Spike | Load::Burst) {
        t.push_str(&format!(
            "-x{}at{}s+{}s",
            s.spike_factor, s.spike_at_s, s.spike_s
        ));
    }
    match s.load {
        Load::Day => t.push_str(&format!("-low{}-per{}s", s.rate_low, s.period_s)),
        Load::Walk => t.push_str(&format!("-low{}-step{}s", s.rate_low, s.walk_step_s)),
        _ => {}
    }
    if p.duration_s > 0.0 {
        t.push_str(&format!("-d{}s", p.duration_s));
    } else {
        t.push_str(&format!("-n{}", p.requests));
    }
    slo_tag(t, s);
    if s.load == Load::Sweep && s.sweep_steps != 4 {
        t.push_str(&format!("-steps{}", s.sweep_steps));
    }
    t.push_str(&format!("-{}-{}", p.dtype, p.quantization));
}

/// `-slo500_x_x[@0.9]` when an SLO is set.
fn slo_tag(t: &mut String, s: &crate::open_loop::ServingParams) {
    if s.slo.any() {
        let f = |x: Option<f64>| x.map_or("x".to_string(), |v| format!("{v}"));
        t.push_str(&format!(
            "-slo{}_{}_{}",
            f(s.slo.ttft_ms),
            f(s.slo.tpot_ms),
            f(s.slo.e2el_ms)
        ));
        if s.slo.attainment != 0.99 {
            t.push_str(&format!("@{}", s.slo.attainment));
        }
    }
}

/// Most checks of a combination against an `exclude` or `include` entry
/// one expansion may take (real matrices take thousands), so that many
/// entries on many combinations cannot stall the parser.
const MAX_CHECKS: u128 = 10_000_000;

/// Refuses a plan whose expansion would exceed [`MAX_CELLS`] or
/// [`MAX_CHECKS`], before anything is expanded: axes multiply, so a few
/// short lists could ask for billions of cells.
fn check_size(spec: &Spec, plan: &Plan, quick: bool, ctx: &Ctx<'_>) -> Result<(), MatrixError> {
    let field = |key: &str| {
        if quick {
            format!("{}.quick", spec.path)
        } else {
            format!("{}.{key}", spec.path)
        }
    };
    let product = plan
        .axes
        .iter()
        .fold(1u128, |p, a| p.saturating_mul(a.len() as u128));
    let entries = (plan.include.len() + plan.exclude.len()) as u128;
    let combos = if plan.axes.is_empty() {
        (plan.include.len() as u128).max(1)
    } else {
        product.saturating_add(plan.include.len() as u128)
    };
    let per_combo = (spec.models.len() as u128).saturating_mul(spec.engines.len() as u128);
    let cells = combos.saturating_mul(per_combo);
    // Saturated products are past any count worth spelling out.
    let big = |n: u128| {
        if n == u128::MAX {
            "more than 10^38".to_string()
        } else {
            n.to_string()
        }
    };
    let plural = |n: usize, what: &str| match (n, what.strip_suffix('y')) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {what}s"),
    };
    if cells > MAX_CELLS as u128 {
        let sizes: Vec<String> = plan
            .axes
            .iter()
            .map(|a| format!("{} {}", a.name(), a.len()))
            .collect();
        let mut sizes = sizes.join(" x ");
        if !plan.include.is_empty() {
            if !sizes.is_empty() {
                sizes.push_str(" + ");
            }
            sizes.push_str(&plural(plan.include.len(), "include entry"));
        }
        return Err(ctx.err(
            &field("axes"),
            format!(
                "{}up to {} combinations ({sizes}) x {} x {} = {} cells: more than the limit of \
                 {MAX_CELLS} cells a matrix may expand to (shorten the axes or split the matrix)",
                if quick { "with --quick, " } else { "" },
                big(combos),
                plural(spec.models.len(), "model"),
                plural(spec.engines.len(), "engine"),
                big(cells),
            ),
        ));
    }
    let checks = product.saturating_mul(entries);
    if !plan.axes.is_empty() && checks > MAX_CHECKS {
        let key = if plan.exclude.len() >= plan.include.len() {
            "exclude"
        } else {
            "include"
        };
        return Err(ctx.err(
            &field(key),
            format!(
                "{}{} combinations x {entries} exclude and include entries = {} checks: more \
                 than the limit of {MAX_CHECKS} (use fewer entries or shorter axes)",
                if quick { "with --quick, " } else { "" },
                big(product),
                big(checks),
            ),
        ));
    }
    Ok(())
}

/// The cells of one scenario, in run order: model, then combination, then
/// engine. Refused when there would be more than `max_cells` of them (what
/// is left of [`MAX_CELLS`] after the scenarios before it).
pub(crate) fn cells(
    spec: &Spec,
    quick: bool,
    ctx: &Ctx<'_>,
    max_cells: usize,
) -> Result<Vec<Cell>, MatrixError> {
    let plan = if quick { &spec.quick } else { &spec.full };
    check_size(spec, plan, quick, ctx)?;
    let combos = combinations(plan);
    let count = combos.len() * spec.models.len() * spec.engines.len();
    if count > max_cells {
        return Err(ctx.err(
            &spec.path,
            format!(
                "its {count} cells{} bring the matrix over the limit of {MAX_CELLS} cells \
                 (the scenarios before it have {}; split the matrix)",
                if quick { " with --quick" } else { "" },
                MAX_CELLS - max_cells
            ),
        ));
    }
    if combos.is_empty() {
        let at = if quick {
            format!("{}.quick", spec.path)
        } else {
            format!("{}.exclude", spec.path)
        };
        return Err(ctx.err(
            &at,
            "every combination is excluded: the scenario has no cell",
        ));
    }
    let mut params = Vec::with_capacity(combos.len());
    for c in &combos {
        let r = Resolver {
            combo: c,
            defaults: &spec.defaults,
            scenario: &spec.path,
        };
        params.push(resolve(spec.kind, &r, ctx)?);
    }
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for model in &spec.models {
        for (ci, p) in params.iter().enumerate() {
            for engine in &spec.engines {
                let id = format!("{}/{model}/{engine}/{}", spec.name, tag(spec.kind, p));
                if let Some(first) = seen.insert(id.clone(), ci) {
                    let at = if quick {
                        format!("{}.quick", spec.path)
                    } else {
                        spec.path.clone()
                    };
                    return Err(ctx.err(
                        &at,
                        format!(
                            "combinations {first} and {ci}{} both give cell `{id}`: they are the same \
                             or differ only in keys a {} scenario ignores",
                            if quick { " (with --quick)" } else { "" },
                            spec.kind.as_str()
                        ),
                    ));
                }
                let run = plan.run;
                out.push(Cell {
                    retrieval: None,
                    id,
                    scenario: spec.name.clone(),
                    kind: spec.kind,
                    model: model.clone(),
                    engine: engine.clone(),
                    params: p.clone(),
                    warmup: run.warmup,
                    iterations: run.iterations,
                    min_duration_s: run.min_duration_s,
                    max_duration_s: run.max_duration_s,
                    breaking_point: spec.breaking_point,
                });
            }
        }
    }
    Ok(out)
}
