//! `engine-matrix tune`: finds one engine's best settings for one cell of
//! a matrix (the procedure is engine-matrix-tune's `flow`), running every
//! trial as a cell in a fresh worker process, as `run` does.
//!
//! The run folder is a normal one (`results.jsonl`, `summary.json`, the
//! report: every trial is a cell whose id ends in `#explore-003` and so on)
//! plus:
//! * `trials.jsonl`: each trial's step, configuration and outcome as it
//!   ends, which `tune --resume DIR` replays instead of measuring again;
//! * `tune.json`: the request, the space, every trial, the validation and
//!   the winner (the report's Tuning section reads it);
//! * `tuned.yaml`: the winner's settings, for an engine's `tuned:` in a
//!   matrix or `run --tuned`.

use crate::clock::utc_now;
use crate::matrix::tune::{parse_budget, parse_constraint};
use crate::matrix::{Cell, EngineDef, Matrix, ScenarioKind};
use crate::output::{EngineRecord, ResultLine, RunDir, Status, Summary, SCHEMA_VERSION};
use crate::run::cell::{Job, ResolvedModel};
use crate::run::runner::{self, Executor, Isolation, Ran};
use crate::system;
use anyhow::{bail, Context, Result};
use engine_matrix_tune::flow::{self, TrialRecord};
use engine_matrix_tune::space::{self, Target};
use engine_matrix_tune::{
    Config, Evaluator, Fidelity, Outcome, Request, Settings, Space, Step, TuneFile,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file names in the run folder.
pub const TRIALS_FILE: &str = "trials.jsonl";
pub const TUNE_FILE: &str = "tune.json";
pub const TUNED_FILE: &str = crate::matrix::tuned::TUNED_FILE;

/// What the user asked for (flags, else the matrix's `tune:` block).
pub struct TuneOptions {
    pub matrix: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub engine: Option<String>,
    pub scenario: Option<String>,
    /// A part of the cell id that picks one cell of the scenario.
    pub cell: Option<String>,
    pub objective: Option<String>,
    pub constraints: Vec<String>,
    pub budget: Option<String>,
    pub out: Option<PathBuf>,
    pub quick: bool,
    pub seed: u64,
    /// Noise threshold, a fraction.
    pub noise: f64,
    pub plugin_dir: PathBuf,
    pub isolation: Isolation,
    pub cell_timeout: Option<Duration>,
    /// Seconds without a token after which an engine counts as hung.
    pub stall_s: f64,
    pub calibrate: bool,
    pub progress: bool,
}

/// What `tune` ends with.
pub struct TuneReport {
    pub dir: PathBuf,
    pub file: TuneFile,
}

/// Runs the tuning and writes the run folder.
pub fn tune(opts: &TuneOptions) -> Result<TuneReport> {
    let prior = match &opts.resume {
        Some(dir) => Some(read_tune_request(dir)?),
        None => None,
    };
    let matrix_path = match (&opts.resume, &opts.matrix) {
        (Some(dir), _) => dir.join("matrix.yaml"),
        (None, Some(m)) => m.clone(),
        (None, None) => bail!("tune needs a matrix file (or --resume DIR)"),
    };
    // Tuned against the engine untuned, whatever `tuned:` the matrix has.
    let untuned = crate::matrix::Overrides {
        settings: Some(vec![crate::matrix::tuned::Variant::Default]),
        ..Default::default()
    };
    let matrix = Matrix::load_with(&matrix_path, &untuned)?;
    let text = std::fs::read_to_string(&matrix_path)
        .with_context(|| format!("cannot read {}", matrix_path.display()))?;
    let request = match prior {
        Some(r) => r,
        None => build_request(opts, &matrix, &matrix_path)?,
    };
    let def = matrix
        .engine(&request.engine)
        .cloned()
        .context("the engine is gone from the matrix")?;
    let base = matrix
        .cells(request.quick)
        .into_iter()
        .find(|c| c.id == request.cell)
        .with_context(|| format!("the cell {} is gone from the matrix", request.cell))?;
    let space = build_space(&matrix, &matrix_path, &def, &base, &opts.plugin_dir)?;
    let settings = settings(&request, &base)?;

    let system = system::collect();
    let limits = runner::calibrate(opts.calibrate, opts.progress);
    let (idle_power, telemetry_unavailable) = runner::idle_energy();
    let (mut dir, earlier) = runner::open_run_dir(
        opts.resume.as_deref(),
        opts.out.as_deref(),
        &format!("tune-{}", def.name),
        &text,
        &system,
    )?;
    write_request(&dir.path, &request)?;
    let recorded = read_trials(&dir.path)?;
    let (models, model_records) = runner::resolve_models(&matrix, std::slice::from_ref(&base));
    let model = models
        .get(&base.model)
        .cloned()
        .unwrap_or_else(|| Err(format!("model '{}' is not resolved", base.model)));
    let summary = Summary {
        schema_version: SCHEMA_VERSION,
        tool: "engine-matrix".into(),
        matrix_name: format!("{} (tune {})", matrix.name, def.name),
        matrix_path: matrix_path.display().to_string(),
        baseline: None,
        quick: request.quick,
        repeats: 1,
        only: vec![def.name.clone()],
        command: std::env::args().collect(),
        started_at: utc_now(),
        finished_at: None,
        complete: false,
        stopped: None,
        idle_power: idle_power.clone(),
        telemetry_unavailable,
        system,
        limits: limits.clone(),
        engines: vec![EngineRecord {
            name: def.name.clone(),
            plugin: def.plugin.clone(),
            path: None,
            api_version: None,
            info: None,
            error: None,
        }],
        models: model_records,
        cells: earlier,
        targets: None,
        tuned: None,
        load_shard: None,
        shard: None,
        merged: Vec::new(),
    };
    dir.write_summary(&summary)?;
    let executor = Executor::new(&opts.isolation, &opts.plugin_dir, &dir.path, None)?;
    runner::install_interrupt_handler();
    let offset = recorded.values().map(|t| t.elapsed_s).fold(0.0, f64::max);
    let bar = progress(opts.progress);
    let mut trials = Trials {
        request: &request,
        space: &space,
        def: &def,
        base: &base,
        model,
        limits,
        idle_watts: idle_power.as_ref().map(|p| p.watts),
        executor,
        dir: &mut dir,
        summary,
        recorded,
        start: Instant::now(),
        offset,
        cell_timeout: opts.cell_timeout,
        stall_s: opts.stall_s,
        bar: &bar,
        learned: false,
        quality: quality_job(&matrix, &request, &def, &opts.plugin_dir),
        quality_done: HashMap::new(),
    };
    let outcomes = flow::run(&space, &settings, &mut trials);
    bar.finish_and_clear();
    let Trials {
        executor,
        mut summary,
        ..
    } = trials;
    executor.shutdown();
    let snippet = snippet(&def, &request, &space, &outcomes);
    let file = TuneFile {
        request: request.clone(),
        searched: space
            .params
            .iter()
            .map(|p| (p.name.clone(), describe_param(p)))
            .collect(),
        fixed: space.fixed.clone(),
        defaults: space.defaults.clone(),
        settings,
        outcomes,
        snippet: snippet.clone(),
        finished_at: utc_now(),
    };
    crate::output::write_json(&dir.path.join(TUNE_FILE), &file)?;
    std::fs::write(dir.path.join(TUNED_FILE), &snippet)
        .with_context(|| format!("cannot write {}", dir.path.join(TUNED_FILE).display()))?;
    summary.stopped = file.outcomes.stopped.clone();
    runner::finish(&mut dir, summary, file.outcomes.stopped.clone())?;
    Ok(TuneReport {
        dir: dir.path.clone(),
        file,
    })
}

/// The request from the flags and the matrix's `tune:` block, checked.
fn build_request(opts: &TuneOptions, matrix: &Matrix, path: &Path) -> Result<Request> {
    let block = matrix.tune.clone().unwrap_or_default();
    let engine = match &opts.engine {
        Some(e) => e.clone(),
        None if matrix.engines.len() == 1 => matrix.engines[0].name.clone(),
        None => bail!(
            "tune needs --engine: {} has several engines ({})",
            path.display(),
            engine_names(matrix)
        ),
    };
    if matrix.engine(&engine).is_none() {
        bail!(
            "--engine {engine}: {} has no engine named '{engine}' (engines: {})",
            path.display(),
            engine_names(matrix)
        );
    }
    let scenarios: Vec<&str> = matrix
        .scenarios
        .iter()
        .filter(|s| s.engines.contains(&engine) && s.kind != ScenarioKind::Retrieval)
        .map(|s| s.name.as_str())
        .collect();
    let scenario = match opts.scenario.clone().or(block.scenario.clone()) {
        Some(s) => s,
        None if scenarios.len() == 1 => scenarios[0].to_string(),
        None => bail!(
            "tune needs --scenario: engine '{engine}' runs in {} scenarios of {} ({})",
            scenarios.len(),
            path.display(),
            scenarios.join(", ")
        ),
    };
    let Some(def) = matrix.scenarios.iter().find(|s| s.name == scenario) else {
        bail!(
            "--scenario {scenario}: {} has no such scenario (scenarios: {})",
            path.display(),
            matrix
                .scenarios
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if def.kind == ScenarioKind::Retrieval {
        bail!("--scenario {scenario}: a retrieval scenario; tune searches LLM engines' settings (a retrieval scenario's `search:` sweep already measures an index's settings)");
    }
    if !def.engines.contains(&engine) {
        bail!("--scenario {scenario}: engine '{engine}' does not run in it");
    }
    let cells: Vec<Cell> = matrix
        .cells(opts.quick)
        .into_iter()
        .filter(|c| c.scenario == scenario && c.engine == engine)
        .filter(|c| opts.cell.as_ref().is_none_or(|p| c.id.contains(p.as_str())))
        .collect();
    let cell = match cells.as_slice() {
        [one] => one.id.clone(),
        [] => bail!(
            "no cell of scenario {scenario} on engine {engine} matches --cell {}",
            opts.cell.as_deref().unwrap_or("")
        ),
        many => bail!(
            "scenario {scenario} has {} cells on engine {engine}; tune tunes one: pick it with --cell PART-OF-ITS-ID (cells: {})",
            many.len(),
            many.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let objective = opts
        .objective
        .clone()
        .or(block.objective.clone())
        .unwrap_or_else(|| "output_throughput".into());
    check_metric(&objective, def.kind, "--objective")?;
    if is_quality(&objective) {
        bail!("--objective {objective}: a quality metric is a floor, not a goal: give it as --constraint (e.g. 'top1_agreement_pct>=95') beside a speed objective");
    }
    let texts = if opts.constraints.is_empty() {
        block.constraints.clone()
    } else {
        opts.constraints.clone()
    };
    let mut constraints = Vec::new();
    for t in &texts {
        let c = parse_constraint(t).map_err(|e| anyhow::anyhow!("--constraint: {e}"))?;
        check_metric(&c.metric, def.kind, "--constraint")?;
        constraints.push(c);
    }
    let budget = opts
        .budget
        .clone()
        .or(block.budget.clone())
        .unwrap_or_else(|| "20trials".into());
    parse_budget(&budget).map_err(|e| anyhow::anyhow!("--budget: {e}"))?;
    Ok(Request {
        engine,
        scenario,
        cell,
        higher_is_better: engine_matrix_tune::higher_is_better(&objective),
        objective,
        constraints,
        budget,
        quick: opts.quick,
        seed: opts.seed,
        noise: opts.noise,
    })
}

fn engine_names(m: &Matrix) -> String {
    m.engines
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `metric` is a target metric that cells of `kind` have.
fn check_metric(metric: &str, kind: ScenarioKind, flag: &str) -> Result<()> {
    use crate::matrix::targets::{applies, metric as lookup, Needs};
    let Some((_, needs)) = lookup(metric) else {
        bail!("{flag} {metric}: not a metric (a target metric, e.g. output_throughput, ttft_ms.p95; see docs/targets.md)");
    };
    let ok = applies(metric, kind)
        && match needs {
            Needs::Serving => kind == ScenarioKind::Serving,
            Needs::Baseline => false,
            // Every trial with its own output is compared with the
            // reference (see `Trials::quality_job`).
            Needs::Quality => true,
            _ => true,
        };
    if !ok {
        bail!(
            "{flag} {metric}: a {} cell has no {metric} (speedup comes from a baseline's cells; goodput from serving cells)",
            kind.as_str()
        );
    }
    Ok(())
}

/// Whether `metric` comes from the quality pass.
fn is_quality(metric: &str) -> bool {
    matches!(
        crate::matrix::targets::metric(metric),
        Some((_, crate::matrix::targets::Needs::Quality))
    )
}

/// The quality pass of the trials, when a constraint needs one: the
/// matrix's `quality:` settings (or their defaults), against the reference
/// engine's f32, unquantized model: the matrix's `quality.reference`, else
/// the tuned engine with its untuned options. The reference is renamed so
/// that every trial is compared with it, including trials whose own
/// settings are the reference's (which then agree fully).
fn quality_job(
    matrix: &Matrix,
    request: &Request,
    def: &EngineDef,
    plugin_dir: &Path,
) -> Option<crate::quality::QualityJob> {
    if !request.constraints.iter().any(|c| is_quality(&c.metric)) {
        return None;
    }
    let q = matrix.quality.clone().unwrap_or(crate::matrix::QualityDef {
        reference: def.name.clone(),
        tokens: 16384,
        quick_tokens: 2048,
        context: 512,
        path: None,
    });
    let mut reference = matrix.engine(&q.reference).cloned().unwrap_or(def.clone());
    reference.name = format!("{} (reference)", reference.name);
    Some(crate::quality::QualityJob {
        tokens: if request.quick {
            q.quick_tokens
        } else {
            q.tokens
        } as usize,
        def: q,
        reference,
        plugin_dir: plugin_dir.to_path_buf(),
    })
}

/// The engine's declared tunables (from its plugin), narrowed by the
/// matrix; the defaults are the engine as the matrix configures it.
fn build_space(
    matrix: &Matrix,
    path: &Path,
    def: &EngineDef,
    base: &Cell,
    plugin_dir: &Path,
) -> Result<Space> {
    let declared = declared(def, plugin_dir).map_err(anyhow::Error::msg)?;
    let narrow = matrix
        .tune
        .as_ref()
        .and_then(|t| t.space.get(&def.name))
        .cloned()
        .unwrap_or_default();
    let mut cell: Config = Config::new();
    cell.insert("max_batch".into(), base.params.max_batch.into());
    cell.insert(
        "batch_policy".into(),
        base.params.batch_policy.as_str().into(),
    );
    cell.insert("dtype".into(), base.params.dtype.clone().into());
    cell.insert(
        "quantization".into(),
        base.params.quantization.clone().into(),
    );
    let mut space = Space::build(&def.name, &declared, &narrow, &cell).map_err(|e| {
        let at = matrix.locate(&format!("tune.space.{}", def.name));
        anyhow::anyhow!("{at}: {e}")
    })?;
    // The matrix's own options are what the engine runs untuned.
    if let Some(options) = def.options.as_object() {
        for (k, v) in options {
            if let Some(t) = declared.iter().find(|t| &t.name == k) {
                if t.admits(v) {
                    space.defaults.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if space.params.is_empty() {
        bail!(
            "{}: engine '{}' has nothing to search: {}",
            path.display(),
            def.name,
            if declared.is_empty() {
                "it declares no tunable options".to_string()
            } else {
                format!(
                    "every tunable option is fixed ({})",
                    space::label(&space.fixed, None)
                )
            }
        );
    }
    Ok(space)
}

/// What `def`'s plugin declares tunable.
fn declared(
    def: &EngineDef,
    plugin_dir: &Path,
) -> Result<Vec<engine_api::tunable::Tunable>, String> {
    let file = crate::plugins::find(plugin_dir, &def.plugin)
        .map_err(|e| format!("engine '{}': {e}", def.name))?;
    let loaded = crate::plugins::load(&file).map_err(|e| format!("engine '{}': {e}", def.name))?;
    engine_api::tunable::parse(loaded.info.tunables.as_str())
        .map_err(|e| format!("engine '{}' (plugin {}): {e}", def.name, def.plugin))
}

/// The problems of the matrix's `tune: space:` against what each engine
/// declares (`validate`), each with its file and line.
pub fn check_spaces(matrix: &Matrix, plugin_dir: &Path) -> Vec<String> {
    let Some(t) = &matrix.tune else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for (engine, narrow) in &t.space {
        let Some(def) = matrix.engine(engine) else {
            continue;
        };
        let field = format!("tune.space.{engine}");
        let checked = declared(def, plugin_dir).and_then(|d| {
            Space::build(engine, &d, narrow, &Config::new()).map_err(|e| e.to_string())
        });
        if let Err(e) = checked {
            errors.push(format!("{}: {field}: {e}", matrix.locate(&field)));
        }
    }
    errors
}

/// The procedure's settings for the request and cell.
fn settings(r: &Request, base: &Cell) -> Result<Settings> {
    let budget = parse_budget(&r.budget).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut s = Settings::new(budget, r.higher_is_better);
    s.seed = r.seed;
    s.noise = r.noise;
    s.short_trials = base.iterations >= 2;
    Ok(s)
}

fn describe_param(p: &space::Param) -> String {
    match &p.kind {
        space::ParamKind::Int { min, max, log } => {
            format!("{min}..={max}{}", if *log { " (log)" } else { "" })
        }
        space::ParamKind::Choice(v) => v
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// The winner as a tuned settings file (`tuned.yaml`, see the matrix
/// crate's `tuned` module): what differs from the defaults, for a matrix's
/// `tuned:` or `run --tuned`.
pub fn snippet(def: &EngineDef, request: &Request, space: &Space, o: &flow::Outcomes) -> String {
    let mut options = serde_json::Map::new();
    let mut cell = Vec::new();
    for (k, v) in &o.winner {
        if space.defaults.get(k) == Some(v) {
            continue;
        }
        match space::target(k) {
            Target::Option => {
                options.insert(k.clone(), v.clone());
            }
            _ => cell.push(format!("{k}: {v}")),
        }
    }
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut out = format!(
        "# Tuned by engine-matrix tune: {}\n\
         # Use it under the engine in a matrix (`tuned: PATH`) or with\n\
         # `engine-matrix run MATRIX --tuned PATH [--settings both]`.\n",
        o.verdict.replace('\n', " ")
    );
    let mut tuned_for = format!("{}, {}", request.cell, request.objective);
    for c in &request.constraints {
        tuned_for.push_str(&format!(", {}", c.describe()));
    }
    out.push_str(&format!(
        "engine: {}\nplugin: {}\ntuned_for: {}\noptions: {}\n",
        quote(&def.name),
        quote(&def.plugin),
        quote(&tuned_for),
        serde_json::Value::Object(options)
    ));
    for line in cell {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn progress(show: bool) -> indicatif::ProgressBar {
    let bar = if show {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn write_request(dir: &Path, r: &Request) -> Result<()> {
    crate::output::write_json(&dir.join("tune-request.json"), r)
}

fn read_tune_request(dir: &Path) -> Result<Request> {
    let p = dir.join("tune-request.json");
    let text = std::fs::read(&p).with_context(|| {
        format!(
            "--resume {}: not a tune folder (no {})",
            dir.display(),
            p.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not a tune request", p.display()))
}

/// The trials recorded so far, by step (a torn last line is dropped: its
/// cell runs again).
fn read_trials(dir: &Path) -> Result<HashMap<Step, TrialRecord>> {
    let p = dir.join(TRIALS_FILE);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<TrialRecord>(l).ok())
        .map(|t| (t.step, t))
        .collect())
}

/// Runs trials as cells for the procedure.
struct Trials<'a> {
    request: &'a Request,
    space: &'a Space,
    def: &'a EngineDef,
    base: &'a Cell,
    model: Result<ResolvedModel, String>,
    limits: Option<crate::roofline::Limits>,
    idle_watts: Option<f64>,
    executor: Executor,
    dir: &'a mut RunDir,
    summary: Summary,
    recorded: HashMap<Step, TrialRecord>,
    start: Instant,
    /// Seconds an interrupted earlier run had spent.
    offset: f64,
    cell_timeout: Option<Duration>,
    stall_s: f64,
    bar: &'a indicatif::ProgressBar,
    learned: bool,
    /// The quality pass, when a constraint needs one.
    quality: Option<crate::quality::QualityJob>,
    /// Quality records by what changes the output (dtype, quantization):
    /// options that only change the speed share one evaluation.
    quality_done: HashMap<String, engine_matrix_results::quality::QualityRecord>,
}

impl Trials<'_> {
    /// The cell and engine definition that run `config` for `step`.
    fn trial(&self, step: Step, config: &Config, fidelity: Fidelity) -> (Cell, EngineDef) {
        let mut cell = self.base.clone();
        cell.id = format!("{}#{}", self.base.id, step.label());
        if fidelity == Fidelity::Short {
            cell.iterations = self.base.iterations.div_ceil(3).max(1);
        }
        let mut def = self.def.clone();
        def.name = format!("{}#{}", self.def.name, step.label());
        let mut options = def.options.as_object().cloned().unwrap_or_default();
        for (k, v) in config {
            match space::target(k) {
                Target::Option => {
                    options.insert(k.clone(), v.clone());
                }
                Target::Load if k == "max_batch" => {
                    if let Some(n) = v.as_u64() {
                        cell.params.max_batch = n as u32;
                    }
                }
                Target::Load => {
                    if let Some(p) = v.as_str().and_then(engine_api::BatchPolicy::parse) {
                        cell.params.batch_policy = p;
                    }
                }
                Target::Cell if k == "dtype" => {
                    cell.params.dtype = v.as_str().unwrap_or("f32").to_string();
                }
                Target::Cell => {
                    cell.params.quantization = v.as_str().unwrap_or("none").to_string();
                }
            }
        }
        def.options = serde_json::Value::Object(options);
        (cell, def)
    }

    /// The outcome of a finished cell: the objective's value and the
    /// constraints it broke, or why it has none.
    fn outcome(&self, line: &ResultLine) -> Outcome {
        let r = &line.result;
        if r.status != Status::Ok {
            return Outcome::Infeasible {
                reason: format!(
                    "{}: {}",
                    crate::report::status_name(r.status),
                    r.reason.as_deref().unwrap_or("no reason given")
                ),
            };
        }
        let value = |m: &str| engine_matrix_grade::value(m, r, &self.summary, None);
        let objective = match value(&self.request.objective) {
            Ok(v) => v,
            Err(why) => {
                return Outcome::Infeasible {
                    reason: format!("no {}: {why}", self.request.objective),
                }
            }
        };
        let mut violation = 0.0;
        let broken = self
            .request
            .constraints
            .iter()
            .filter_map(|c| match value(&c.metric) {
                Ok(v) if c.holds(v) => None,
                Ok(v) => {
                    violation += c.distance(v);
                    Some(format!("{} (was {v:.3})", c.describe()))
                }
                Err(why) => {
                    violation += 1.0;
                    Some(format!("{} (no value: {why})", c.describe()))
                }
            })
            .collect();
        Outcome::Measured {
            value: objective,
            broken,
            violation,
        }
    }

    fn save(&mut self, line: &ResultLine, record: &TrialRecord) -> Result<()> {
        self.dir.append(line)?;
        self.summary
            .cells
            .push(crate::output::summary_cell(&line.result));
        self.dir.write_summary(&self.summary)?;
        let p = self.dir.path.join(TRIALS_FILE);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        writeln!(f, "{}", serde_json::to_string(record)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
        Ok(())
    }
}

impl Evaluator for Trials<'_> {
    fn evaluate(&mut self, step: Step, config: &Config, fidelity: Fidelity) -> Outcome {
        let (cell, def) = self.trial(step, config, fidelity);
        self.bar.set_message(format!(
            "{} {}",
            step.label(),
            space::label(config, Some(self.space))
        ));
        let quality_key = crate::quality::key(&cell);
        let known = self.quality_done.get(&quality_key).cloned();
        let job = Job {
            cell,
            repeat: 0,
            model: self.model.clone(),
            vectors: None,
            stall_s: self.stall_s,
            limits: self.limits.clone(),
            idle_watts: self.idle_watts,
            quality: self.quality.clone().filter(|_| known.is_none()),
            live: false,
            load: None,
            server_pid: None,
        };
        let limit = runner::cell_limit(self.cell_timeout, None);
        let stop = runner::interrupted;
        let mut line = match self.executor.run(&def, job.clone(), limit, &stop) {
            Ran::Line(l) => *l,
            // Not measured and not recorded: `--resume` runs it again.
            Ran::Stopped => {
                self.executor.close(&def.name);
                return Outcome::Infeasible {
                    reason: "stopped (Ctrl-C) before the trial ended: not measured".into(),
                };
            }
        };
        if !self.learned {
            if let Some((record, _)) = self.executor.record(&def.name) {
                self.learned = true;
                if let Some(slot) = self.summary.engines.first_mut() {
                    *slot = EngineRecord {
                        name: self.def.name.clone(),
                        ..record
                    };
                }
            }
        }
        self.executor.close(&def.name);
        line.result.cell.engine = self.def.name.clone();
        if self.quality.is_some() && line.result.status == Status::Ok {
            match known {
                Some(r) => line.result.quality = Some(r),
                None => {
                    if let Some(r) = &line.result.quality {
                        self.quality_done.insert(quality_key, r.clone());
                    }
                }
            }
        }
        let outcome = self.outcome(&line);
        let record = TrialRecord {
            step,
            fidelity,
            config: config.clone(),
            outcome: outcome.clone(),
            elapsed_s: self.elapsed(),
        };
        if let Err(e) = self.save(&line, &record) {
            self.bar
                .suspend(|| eprintln!("warning: trial {} not saved: {e:#}", step.label()));
        }
        if let Some(why) = outcome.why_infeasible() {
            self.bar.suspend(|| {
                eprintln!("{}: infeasible: {why}", step.label());
            });
        }
        outcome
    }

    fn recorded(&self, step: Step) -> Option<TrialRecord> {
        self.recorded.get(&step).cloned()
    }

    fn elapsed(&self) -> f64 {
        self.offset + self.start.elapsed().as_secs_f64()
    }

    fn stopped(&self) -> bool {
        runner::interrupted()
    }
}
