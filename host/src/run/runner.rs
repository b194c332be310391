//! `engine-matrix run`: runs a matrix's cells in order and writes every
//! result as soon as it exists.
//!
//! Cells run scenario by scenario and model by model, engine by engine
//! inside (so a model stays loaded while its cells run); `--repeat N`
//! interleaves the engines N times ([`interleave`]). Each engine's cells
//! run in a worker process of its own ([`crate::run::worker`]; `--in-process`
//! runs them in the host, without that protection). A problem that
//! concerns one engine or model — a plugin that is missing or refuses to
//! load, a model folder without weights, a dtype the engine does not
//! support, a crash, a hang, a cell over its time limit — becomes a
//! `failed` or `unsupported` result for the cells concerned, with the
//! reason; the other cells still run.
//!
//! Stopping: Ctrl-C (or the `--run-timeout`) stops the run after saving
//! every finished cell; the summary says it is incomplete and why, the
//! report is written, and `run --resume DIR` runs the cells still missing.

use crate::clock::{stamp, utc_now};
use crate::matrix::{Cell, EngineDef, Matrix};
use crate::output::{
    EngineRecord, ModelRecord, ResultLine, RunDir, Status, Summary, SCHEMA_VERSION,
};
use crate::run::cell::{self, CellState, EngineSlot, Job, ResolvedModel};
use crate::run::worker::{Lost, Reply, Request, Worker};
use crate::system;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where cells run.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// A worker process per engine: this executable re-run as `__worker`.
    Workers(PathBuf),
    /// In the host process (no protection from crashes; for debugging).
    InProcess,
}

pub struct RunOptions {
    /// The matrix (None with `resume`, which reads the run folder's).
    pub matrix: Option<PathBuf>,
    pub out: Option<PathBuf>,
    /// Continue the run in this folder, skipping the cells it holds.
    pub resume: Option<PathBuf>,
    pub quick: bool,
    pub only: Vec<String>,
    pub plugin_dir: PathBuf,
    pub verbose: bool,
    pub stall: Duration,
    pub progress: bool,
    /// Measure (or read the cached) roofline limits of the host.
    pub calibrate: bool,
    /// Runs of the matrix (`--repeat N`, at least 1), engines interleaved.
    pub repeat: u32,
    pub isolation: Isolation,
    /// Longest a cell may take, model load included (workers only).
    pub cell_timeout: Option<Duration>,
    /// Longest the whole run may take.
    pub run_timeout: Option<Duration>,
    /// The live view (`run --dashboard`): told of every cell as it starts,
    /// runs and finishes.
    pub live: Option<Arc<crate::live::hub::Hub>>,
    /// `--tuned` files and `--settings` (a resumed run uses its own).
    pub overrides: crate::matrix::Overrides,
    /// Run only this share of the cells (`--shard I/N`; a resumed run
    /// keeps its own).
    pub shard: Option<crate::matrix::shard::Shard>,
    /// The shard's machine class (default: from the machine's hardware).
    pub machine_class: Option<String>,
    /// Be load generator I of N (`--load-shard I/N --start-at TIME`).
    pub load_shard: Option<crate::run::load_shard::LoadShardOptions>,
}

/// What a finished (or stopped) run produced.
pub struct RunReport {
    pub dir: PathBuf,
    pub summary: Summary,
    pub markdown: String,
}

const RUN_TIMEOUT: &str = "--run-timeout";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // A second Ctrl-C: leave now.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Ctrl-C sets a flag the run checks (a second one exits at once).
pub(crate) fn install_interrupt_handler() {
    INTERRUPTED.store(false, Ordering::SeqCst);
    // SAFETY: installs a handler that only touches an atomic or _exits.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Where the cells go: worker processes or this process.
pub(crate) enum Executor {
    Workers {
        exe: PathBuf,
        plugin_dir: PathBuf,
        logs: PathBuf,
        workers: HashMap<String, Worker>,
        hellos: HashMap<String, (EngineRecord, Option<String>)>,
        live: Option<Arc<crate::live::LiveFn>>,
        /// Index builds that took their worker down, by build key: the
        /// cell it happened in and why. Their other cells fail without
        /// another try.
        crashed_builds: HashMap<String, (String, String)>,
    },
    InProcess {
        plugin_dir: PathBuf,
        slots: HashMap<String, EngineSlot>,
        state: Box<CellState>,
    },
}

/// What running a cell gave.
pub(crate) enum Ran {
    Line(Box<ResultLine>),
    /// Stopped by Ctrl-C or the run timeout before the cell finished.
    Stopped,
}

impl Executor {
    pub(crate) fn new(
        isolation: &Isolation,
        plugin_dir: &Path,
        run_dir: &Path,
        live: Option<Arc<crate::live::LiveFn>>,
    ) -> Result<Executor> {
        Ok(match isolation {
            Isolation::Workers(exe) => {
                let logs = run_dir.join("workers");
                std::fs::create_dir_all(&logs)
                    .with_context(|| format!("cannot create {}", logs.display()))?;
                Executor::Workers {
                    exe: exe.clone(),
                    plugin_dir: plugin_dir.to_path_buf(),
                    logs,
                    workers: HashMap::new(),
                    hellos: HashMap::new(),
                    live,
                    crashed_builds: HashMap::new(),
                }
            }
            Isolation::InProcess => Executor::InProcess {
                plugin_dir: plugin_dir.to_path_buf(),
                slots: HashMap::new(),
                state: {
                    let mut state = Box::<CellState>::default();
                    state.live = live;
                    state
                },
            },
        })
    }

    /// The engine's record (once known) and the loader's long report.
    pub(crate) fn record(&self, engine: &str) -> Option<(EngineRecord, Option<String>)> {
        match self {
            Executor::Workers { hellos, .. } => hellos.get(engine).cloned(),
            Executor::InProcess { slots, .. } => slots
                .get(engine)
                .map(|s| (s.record.clone(), s.verbose_error.clone())),
        }
    }

    /// Frees the model `engine` holds (another engine runs next).
    fn unload(&mut self, engine: &str) {
        match self {
            Executor::Workers { workers, .. } => {
                if let Some(w) = workers.get_mut(engine) {
                    if w.send(&Request::Unload).is_err() {
                        workers.remove(engine);
                    }
                }
            }
            Executor::InProcess { state, .. } => state.unload(),
        }
    }

    pub(crate) fn run(
        &mut self,
        def: &EngineDef,
        job: Job,
        limit: Option<(Duration, &'static str)>,
        stop: &dyn Fn() -> bool,
    ) -> Ran {
        let flag = limit.map_or("", |l| l.1);
        let limit = limit.map(|l| l.0);
        let t0 = Instant::now();
        match self {
            Executor::InProcess {
                plugin_dir,
                slots,
                state,
            } => {
                let slot = slots
                    .entry(def.name.clone())
                    .or_insert_with(|| EngineSlot::load(def, plugin_dir));
                Ran::Line(Box::new(cell::execute(slot, state, &job).0))
            }
            Executor::Workers {
                exe,
                plugin_dir,
                logs,
                workers,
                hellos,
                live,
                crashed_builds,
            } => {
                let build_key = job
                    .cell
                    .retrieval
                    .as_ref()
                    .map(|p| crate::run::retrieval::build_key(&job.cell, &def.options, p));
                if let Some((cell_id, why)) = build_key.as_ref().and_then(|k| crashed_builds.get(k))
                {
                    return Ran::Line(Box::new(cell::failed_line(
                        &job,
                        &def.plugin,
                        format!("not run: building this index crashed the worker in cell {cell_id} ({why})"),
                        0.0,
                    )));
                }
                let failed = |why: String| {
                    Ran::Line(Box::new(cell::failed_line(
                        &job,
                        &def.plugin,
                        why,
                        t0.elapsed().as_secs_f64(),
                    )))
                };
                if !workers.contains_key(&def.name) {
                    let log = logs.join(format!("{}.log", crate::output::slug(&[&def.name])));
                    let mut w = match Worker::spawn(exe, def, plugin_dir, &log, live.clone()) {
                        Ok(w) => w,
                        Err(e) => return failed(format!("cannot start a worker process: {e:#}")),
                    };
                    match w.recv(limit, stop) {
                        Ok(Reply::Hello {
                            record,
                            verbose_error,
                        }) => {
                            hellos.entry(def.name.clone()).or_insert((record, verbose_error));
                        }
                        Ok(_) => return failed("the worker did not say hello".into()),
                        Err(lost) => {
                            return match lost {
                                Lost::Stopped => Ran::Stopped,
                                Lost::TimedOut(_) if flag == RUN_TIMEOUT => Ran::Stopped,
                                other => failed(format!(
                                    "the worker process for engine '{}' {} (while loading plugin '{}'){}",
                                    def.name,
                                    lost_text(&other, flag),
                                    def.plugin,
                                    tail_text(&w.stderr_tail())
                                )),
                            }
                        }
                    }
                    workers.insert(def.name.clone(), w);
                }
                let Some(w) = workers.get_mut(&def.name) else {
                    return failed("no worker".into());
                };
                let id = job.cell.id.clone();
                if let Err(e) = w.send(&Request::Cell {
                    job: Box::new(job.clone()),
                }) {
                    let tail = w.stderr_tail();
                    workers.remove(&def.name);
                    return failed(format!("{e:#}{}", tail_text(&tail)));
                }
                let left = limit.map(|l| l.saturating_sub(t0.elapsed()));
                match w.recv(left, stop) {
                    Ok(Reply::Result { line, hung }) => {
                        if hung {
                            // The worker leaves on its own; the next cell
                            // gets a fresh one.
                            if let Some(w) = workers.remove(&def.name) {
                                w.close();
                            }
                        }
                        Ran::Line(line)
                    }
                    Ok(_) => {
                        workers.remove(&def.name);
                        failed(format!("cell {id}: unexpected reply from the worker"))
                    }
                    // Stopped by the user or by the run's own time limit:
                    // the cell was not measured, so it gets no result and
                    // `--resume` runs it again.
                    Err(Lost::Stopped) => {
                        workers.remove(&def.name);
                        Ran::Stopped
                    }
                    Err(Lost::TimedOut(_)) if flag == RUN_TIMEOUT => {
                        workers.remove(&def.name);
                        Ran::Stopped
                    }
                    Err(lost) => {
                        let tail = w.stderr_tail();
                        let during = match w.building() {
                            Some(key) => {
                                let why = lost_text(&lost, flag);
                                crashed_builds.insert(key, (id.clone(), why));
                                " (while building the index)"
                            }
                            None => "",
                        };
                        workers.remove(&def.name);
                        failed(format!(
                            "the worker process for engine '{}' {}{during}{}",
                            def.name,
                            lost_text(&lost, flag),
                            tail_text(&tail)
                        ))
                    }
                }
            }
        }
    }

    /// Ends `engine`'s worker (or frees the in-process engine): its next
    /// cell starts a fresh one. `tune` does this after every trial, since
    /// each trial loads the engine with other options.
    pub(crate) fn close(&mut self, engine: &str) {
        match self {
            Executor::Workers { workers, .. } => {
                if let Some(w) = workers.remove(engine) {
                    w.close();
                }
            }
            Executor::InProcess { slots, state, .. } => {
                state.unload();
                slots.remove(engine);
            }
        }
    }

    pub(crate) fn shutdown(self) {
        if let Executor::Workers { workers, .. } = self {
            for (_, w) in workers {
                w.close();
            }
        }
    }
}

fn lost_text(l: &Lost, flag: &str) -> String {
    match l {
        Lost::Died(why) => format!("died during the cell: {why}"),
        Lost::TimedOut(d) => format!(
            "did not finish the cell within {:.0} s ({flag}): it was killed",
            d.as_secs_f64()
        ),
        Lost::Stopped => "was stopped".into(),
    }
}

fn tail_text(tail: &str) -> String {
    let t = tail.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("; last stderr lines:\n{t}")
    }
}

/// What a run will do: the matrix, its cells in order, and the settings an
/// earlier run fixed (`--resume` keeps its `--quick`, `--repeat` and
/// `--only`).
struct Plan {
    prior: Option<Summary>,
    matrix: Matrix,
    matrix_path: PathBuf,
    /// The matrix file as given (copied into the run folder).
    text: String,
    quick: bool,
    repeat: u32,
    only: Vec<String>,
    /// Ordered by scenario, model and engine as the matrix lists them.
    cells: Vec<Cell>,
    /// This run's share of the plan, when it is a shard.
    shard: Option<crate::output::ShardMark>,
}

/// Reads the matrix (or the resumed run's) and orders its cells.
fn plan(opts: &RunOptions) -> Result<Plan> {
    let prior = match &opts.resume {
        Some(dir) => Some(
            Summary::read(&dir.join("summary.json"))
                .with_context(|| format!("--resume {}: not a run folder", dir.display()))?,
        ),
        None => None,
    };
    let matrix_path = match (&opts.resume, &opts.matrix) {
        (Some(dir), _) => dir.join("matrix.yaml"),
        (None, Some(m)) => m.clone(),
        (None, None) => bail!("run needs a matrix file (or --resume DIR)"),
    };
    // A resumed run keeps the tuned settings it started with (the files
    // they came from may have changed or gone since).
    let overrides = match &prior {
        Some(p) => p.tuned.clone().unwrap_or_else(|| crate::matrix::Overrides {
            settings: Some(vec![crate::matrix::tuned::Variant::Default]),
            ..Default::default()
        }),
        None => opts.overrides.clone(),
    };
    let matrix = Matrix::load_with(&matrix_path, &overrides)?;
    let text = std::fs::read_to_string(&matrix_path)
        .with_context(|| format!("cannot read {}", matrix_path.display()))?;
    let quick = prior.as_ref().map_or(opts.quick, |p| p.quick);
    let repeat = prior.as_ref().map_or(opts.repeat, |p| p.repeats).max(1);
    let only = prior.as_ref().map_or(opts.only.clone(), |p| p.only.clone());
    check_only(&matrix, &matrix_path, &only)?;
    let cells = ordered_cells(&matrix, quick, &only);
    let (cells, shard) = match (prior.as_ref().and_then(|p| p.shard.as_ref()), opts.shard) {
        (Some(mark), _) => {
            let (c, m) = crate::run::shard::reselect(&matrix, &text, cells, repeat, mark)?;
            (c, Some(m))
        }
        (None, Some(s)) => {
            let (c, m) = crate::run::shard::select(&matrix, &text, cells, repeat, s);
            (c, Some(m))
        }
        (None, None) => (cells, None),
    };
    Ok(Plan {
        prior,
        matrix,
        matrix_path,
        text,
        quick,
        repeat,
        only,
        cells,
        shard,
    })
}

/// Every `--only` name is an engine of the matrix.
fn check_only(matrix: &Matrix, path: &Path, only: &[String]) -> Result<()> {
    for name in only {
        if !matrix.engines.iter().any(|e| &e.name == name) {
            bail!(
                "--only {name}: {} has no engine named '{name}' (engines: {})",
                path.display(),
                matrix
                    .engines
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

/// The matrix's cells (of `only`'s engines, when given), ordered by
/// scenario, model and engine in the order the matrix lists them.
fn ordered_cells(matrix: &Matrix, quick: bool, only: &[String]) -> Vec<Cell> {
    let mut cells = matrix.cells(quick);
    cells.retain(|c| only.is_empty() || only.contains(&c.engine));
    let pos = |names: Vec<&str>| -> HashMap<String, usize> {
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i))
            .collect()
    };
    let scen = pos(matrix.scenarios.iter().map(|s| s.name.as_str()).collect());
    // Models, then data sets (a retrieval cell's `model`).
    let mods = pos(matrix
        .models
        .iter()
        .map(|m| m.name.as_str())
        .chain(matrix.vectors.iter().map(|v| v.name.as_str()))
        .collect());
    let engs = pos(matrix.engines.iter().map(|e| e.name.as_str()).collect());
    cells.sort_by_key(|c| (scen[&c.scenario], mods[&c.model], engs[&c.engine]));
    cells
}

/// The host's roofline limits (measured once and cached), before any
/// engine loads so that nothing competes with the measurement; `None`
/// when not asked for or when calibration fails (with a warning).
fn calibration(opts: &RunOptions) -> Option<crate::roofline::Limits> {
    calibrate(opts.calibrate, opts.progress)
}

/// [`calibration`] from its two settings.
pub(crate) fn calibrate(calibrate: bool, progress: bool) -> Option<crate::roofline::Limits> {
    if !calibrate {
        return None;
    }
    let dir = crate::roofline::default_dir();
    if !crate::roofline::cache_path(&dir).is_file() && progress {
        eprintln!("calibrating this machine's memory bandwidth and matmul peak (once, cached)...");
    }
    match crate::roofline::cached(&dir) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("warning: no roofline efficiency: calibration failed: {e:#}");
            None
        }
    }
}

/// The idle draw, measured once before any engine runs and subtracted
/// from every cell's energy, and why energy or GPU figures will read
/// `n/a` on this host.
pub(crate) fn idle_energy() -> (Option<crate::telemetry::Power>, Vec<String>) {
    let gpu = crate::telemetry::gpu::shared();
    let idle_power = crate::telemetry::EnergyMeter::start(gpu.clone())
        .and_then(|_| crate::telemetry::idle_baseline(Duration::from_secs(1), gpu.clone()));
    let mut unavailable = Vec::new();
    if gpu.is_none() {
        unavailable.push(crate::telemetry::gpu::describe_unavailable().to_string());
    }
    unavailable.extend(crate::telemetry::energy::describe_unavailable(
        gpu.as_deref(),
    ));
    (idle_power, unavailable)
}

/// The models the cells use, resolved (a model that cannot be resolved
/// fails its cells, with the error naming `models[i]`'s line), and their
/// records.
pub(crate) fn resolve_models(
    matrix: &Matrix,
    cells: &[Cell],
) -> (
    HashMap<String, Result<ResolvedModel, String>>,
    Vec<ModelRecord>,
) {
    let used: HashSet<&str> = cells.iter().map(|c| c.model.as_str()).collect();
    let mut models = HashMap::new();
    let mut records = Vec::new();
    for (i, def) in matrix.models.iter().enumerate() {
        if !used.contains(def.name.as_str()) {
            continue;
        }
        let resolved = cell::resolve_model(def).map_err(|e| {
            let field = format!("models[{i}]");
            let at = matrix.locate(&field);
            let msg = format!("{at}: {field}: model '{}': {e:#}", def.name);
            eprintln!("error: {msg}");
            msg
        });
        records.push(ModelRecord {
            name: def.name.clone(),
            path: resolved.as_ref().ok().map(|r| r.path.display().to_string()),
            parameters: resolved.as_ref().ok().map(|r| r.shape.parameters()),
            architecture: resolved.as_ref().ok().map(|r| r.architecture.clone()),
            source: resolved.as_ref().ok().map(|r| r.source()),
            tokenizer: resolved.as_ref().ok().and_then(|r| tokenizer_of(&r.path)),
            shape: resolved.as_ref().ok().map(|r| r.shape.clone()),
            error: resolved.as_ref().err().cloned(),
        });
        models.insert(def.name.clone(), resolved);
    }
    (models, records)
}

/// What a model takes text with, for its record: its folder's
/// `tokenizer.json`, or the GGUF's own tokenizer (rebuilt at import);
/// `None` when it has none (synthetic weights).
fn tokenizer_of(path: &std::path::Path) -> Option<String> {
    if crate::models::is_gguf(path) {
        return Some("gguf (rebuilt at import)".into());
    }
    let file = path.join("tokenizer.json");
    file.is_file().then(|| file.display().to_string())
}

/// The run folder: the resumed one with the cells it holds, or a new one
/// (`out`, else `reports/NAME-STAMP`) holding the matrix text and the
/// machine.
pub(crate) fn open_run_dir(
    resume: Option<&Path>,
    out: Option<&Path>,
    name: &str,
    matrix_text: &str,
    system: &crate::system::SystemInfo,
) -> Result<(RunDir, Vec<crate::output::CellResult>)> {
    match resume {
        Some(path) => RunDir::resume(path),
        None => {
            let out = out.map_or_else(
                || PathBuf::from("reports").join(format!("{name}-{}", stamp())),
                Path::to_path_buf,
            );
            Ok((RunDir::create(&out, matrix_text, system)?, Vec::new()))
        }
    }
}

/// The records of the engines the cells use. Engines are loaded by their
/// workers; until one answers, its record holds the name and plugin only
/// (or what an earlier run learned).
fn initial_engine_records(
    matrix: &Matrix,
    cells: &[Cell],
    prior: Option<&Summary>,
) -> Vec<EngineRecord> {
    let used: HashSet<&str> = cells.iter().map(|c| c.engine.as_str()).collect();
    matrix
        .engines
        .iter()
        .filter(|e| used.contains(e.name.as_str()))
        .map(|e| {
            prior
                .and_then(|p| p.engines.iter().find(|r| r.name == e.name).cloned())
                .unwrap_or(EngineRecord {
                    name: e.name.clone(),
                    plugin: e.plugin.clone(),
                    path: None,
                    api_version: None,
                    info: None,
                    error: None,
                })
        })
        .collect()
}

fn progress_bar(show: bool, cells: usize) -> indicatif::ProgressBar {
    let bar = if show {
        indicatif::ProgressBar::new(cells as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cells {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// `cell` with a `request_rate: sustainable` resolved from an earlier
/// sweep cell of `done`; the second value says why it cannot be.
fn resolve_rate(cell: &Cell, done: &[crate::output::CellResult]) -> (Cell, Option<String>) {
    let mut job_cell = cell.clone();
    let mut unresolved = None;
    if let Some(sv) = job_cell.params.serving.as_mut() {
        if sv.request_rate == crate::measure::serving::Rate::Sustainable {
            sv.resolved_rate = sustainable_rate(done, &cell.model, &cell.engine);
            if sv.resolved_rate.is_none() {
                unresolved = Some(format!(
                    "request_rate: sustainable needs the max_sustainable_rate of a `load: sweep` cell of model '{}' on engine '{}' earlier in the run, and none found one",
                    cell.model, cell.engine
                ));
            }
        }
    }
    (job_cell, unresolved)
}

/// The time a cell may take and the flag that set it: `--cell-timeout`,
/// or what is left of `--run-timeout` when that is shorter.
pub(crate) fn cell_limit(
    cell_timeout: Option<Duration>,
    deadline: Option<Instant>,
) -> Option<(Duration, &'static str)> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match (cell_timeout, left) {
        (Some(a), Some(b)) if b < a => Some((b, RUN_TIMEOUT)),
        (Some(a), _) => Some((a, "--cell-timeout")),
        (None, Some(b)) => Some((b, RUN_TIMEOUT)),
        (None, None) => None,
    }
}

/// A cell served from a GGUF its launch derived records the file (type,
/// bits per weight, tensor types: `model_details.gguf`) and, as the
/// engine's weight bytes, the file's tensor bytes: the http engine cannot
/// know them, the host that wrote the file does.
fn note_served_gguf(line: &mut ResultLine, g: &crate::gguf_types::Derived) {
    let r = &mut line.result;
    match &mut r.model_details {
        Some(serde_json::Value::Object(m)) => {
            m.insert("gguf".into(), g.record());
        }
        other => *other = Some(serde_json::json!({ "gguf": g.record() })),
    }
    if let Some(mem) = r.memory.as_mut() {
        if mem.weight_bytes == 0 {
            mem.weight_bytes = g.facts.weight_bytes;
        }
    }
}

/// A server the harness started died during the cell: the cell fails,
/// with the signal and the log's tail beside any reason it had.
fn note_dead_server(line: &mut ResultLine, died: String) {
    let r = &mut line.result;
    if r.status == Status::Ok {
        r.status = Status::Failed;
    }
    r.reason = Some(match r.reason.take() {
        Some(why) => format!("{why}; {died}"),
        None => died,
    });
}

/// Writes the final summary, then the report (a report that cannot be
/// written is a warning: the results are saved, and `engine-matrix report
/// DIR` can try again).
pub(crate) fn finish(
    dir: &mut RunDir,
    mut summary: Summary,
    stopped: Option<String>,
) -> Result<RunReport> {
    summary.finished_at = Some(utc_now());
    summary.complete = stopped.is_none();
    summary.stopped = stopped;
    engine_matrix_grade::regrade(&mut summary);
    dir.write_summary(&summary)?;
    let markdown = match crate::report::write_summary(&summary, &dir.path) {
        Ok(w) => {
            if let Some(e) = &w.chart_error {
                eprintln!("warning: charts not drawn: {e}");
            }
            w.markdown
        }
        Err(e) => {
            // Through anyhow, so that `{:#}` shows the cause after the file.
            let e = anyhow::Error::from(e);
            eprintln!(
                "warning: report not written ({e:#}); run `engine-matrix report {}` to retry",
                dir.path.display()
            );
            crate::report::markdown(&summary)
        }
    };
    Ok(RunReport {
        dir: dir.path.clone(),
        summary,
        markdown,
    })
}

/// Reports a plugin's load error once, naming `engines[i].plugin`'s line,
/// and keeps the engine's record as the worker saw it.
fn learn_engine(
    matrix: &Matrix,
    engine: &str,
    (record, verbose): (EngineRecord, Option<String>),
    summary: &mut Summary,
    bar: &indicatif::ProgressBar,
    show_verbose: bool,
) {
    if let Some(e) = &record.error {
        let i = matrix
            .engines
            .iter()
            .position(|x| x.name == engine)
            .unwrap_or(0);
        let field = format!("engines[{i}].plugin");
        let long = verbose.filter(|_| show_verbose);
        // suspend + eprintln: printed also when stderr is not a terminal
        // (the bar is hidden there).
        bar.suspend(|| {
            eprintln!(
                "error: {}: {field}: engine '{engine}': {}",
                matrix.locate(&field),
                long.as_deref().unwrap_or(e)
            )
        });
    }
    if let Some(slot) = summary.engines.iter_mut().find(|r| r.name == engine) {
        *slot = record;
    }
}

pub fn run(opts: &RunOptions) -> Result<RunReport> {
    let Plan {
        prior,
        matrix,
        matrix_path,
        text,
        quick,
        repeat,
        only,
        cells,
        shard,
    } = plan(opts)?;
    let schedule = interleave(&cells, repeat);
    let load = match &opts.load_shard {
        None => None,
        Some(_) if prior.is_some() => bail!(
            "--resume: a load generator's run cannot be resumed (its slots on the shared clock have passed); start all generators again"
        ),
        Some(o) => Some(crate::run::load_shard::plan(
            &schedule,
            &matrix.engines,
            crate::run::shard::plan_sha256(&text, &cells, repeat),
            o,
        )?),
    };
    let system = system::collect();
    let shard = shard.map(|mut m| {
        if m.machine_class.is_empty() {
            m.machine_class = opts
                .machine_class
                .clone()
                .unwrap_or_else(|| crate::run::shard::machine_class(&system));
        }
        m
    });
    let limits = calibration(opts);
    let (idle_power, telemetry_unavailable) = idle_energy();

    let (mut dir, earlier) = open_run_dir(
        opts.resume.as_deref(),
        opts.out.as_deref(),
        &matrix.name,
        &text,
        &system,
    )?;
    let done: HashSet<(String, u32)> = earlier
        .iter()
        .map(|c| (c.cell.id.clone(), c.repeat))
        .collect();
    let (models, model_records) = resolve_models(&matrix, &cells);
    let mut summary = Summary {
        schema_version: SCHEMA_VERSION,
        tool: "engine-matrix".into(),
        matrix_name: matrix.name.clone(),
        matrix_path: matrix_path.display().to_string(),
        baseline: matrix.baseline.clone(),
        quick,
        repeats: repeat,
        only,
        command: std::env::args().collect(),
        started_at: prior
            .as_ref()
            .map_or_else(utc_now, |p| p.started_at.clone()),
        finished_at: None,
        complete: false,
        stopped: None,
        idle_power: idle_power.clone(),
        telemetry_unavailable,
        system,
        limits: limits.clone(),
        engines: initial_engine_records(&matrix, &cells, prior.as_ref()),
        models: model_records,
        cells: earlier,
        targets: None,
        tuned: engine_matrix_format::Overrides::of(&matrix),
        shard,
        merged: Vec::new(),
        load_shard: load
            .as_ref()
            .map(|l| l.mark.clone())
            .or_else(|| prior.as_ref().and_then(|p| p.load_shard.clone())),
    };
    summary.targets = matrix
        .targets
        .as_ref()
        .map(|t| engine_matrix_grade::evaluate(t, &summary));
    dir.write_summary(&summary)?;
    let hub = opts.live.as_deref();
    if let Some(h) = hub {
        h.begin(&summary, schedule.len(), &dir.path);
    }

    let bar = progress_bar(opts.progress, schedule.len());
    let engine_defs: HashMap<&str, &EngineDef> = matrix
        .engines
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let live_sink = opts
        .live
        .clone()
        .map(|h| -> Arc<crate::live::LiveFn> { Arc::new(move |sample| h.live(sample)) });
    let mut executor = Executor::new(&opts.isolation, &opts.plugin_dir, &dir.path, live_sink)?;
    let quality = matrix.quality.as_ref().and_then(|q| {
        let reference = engine_defs.get(q.reference.as_str())?;
        Some(crate::quality::QualityJob {
            def: q.clone(),
            tokens: if opts.quick { q.quick_tokens } else { q.tokens } as usize,
            reference: (*reference).clone(),
            plugin_dir: opts.plugin_dir.clone(),
        })
    });
    install_interrupt_handler();
    let deadline = opts.run_timeout.map(|t| Instant::now() + t);
    let stop_reason = || {
        if interrupted() {
            Some("interrupted (Ctrl-C)".to_string())
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            let t = opts.run_timeout.unwrap_or_default().as_secs_f64();
            Some(format!(
                "the run timeout ({t:.0} s, --run-timeout) was reached"
            ))
        } else {
            None
        }
    };
    let stop = || interrupted();
    let mut stopped: Option<String> = None;
    let mut last_engine: Option<&str> = None;
    let mut learned: HashSet<String> = HashSet::new();
    let exe = match &opts.isolation {
        Isolation::Workers(exe) => exe.clone(),
        Isolation::InProcess => std::env::current_exe().unwrap_or_else(|_| "engine-matrix".into()),
    };
    let matrix_dir = std::path::absolute(&matrix_path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut servers =
        crate::run::launch::Servers::new(exe, opts.plugin_dir.clone(), matrix_dir, &dir.path);
    for &(cell, repeat) in &schedule {
        if done.contains(&(cell.id.clone(), repeat)) {
            bar.inc(1);
            if let Some(h) = hub {
                h.skipped();
            }
            continue;
        }
        if let Some(why) = stop_reason() {
            stopped = Some(why);
            break;
        }
        bar.set_message(cell.id.clone());
        if let Some(prev) = last_engine.filter(|p| *p != cell.engine) {
            executor.unload(prev);
            servers.stop(prev);
        }
        last_engine = Some(cell.engine.as_str());
        let (job_cell, unresolved) = resolve_rate(cell, &summary.cells);
        let job = Job {
            cell: job_cell,
            repeat,
            model: models.get(&cell.model).cloned().unwrap_or_else(|| {
                Err(format!(
                    "'{}' is a data set of `vectors:`, not a model",
                    cell.model
                ))
            }),
            vectors: matrix.vectors_def(&cell.model).cloned(),
            stall_s: opts.stall.as_secs_f64(),
            limits: limits.clone(),
            idle_watts: idle_power.as_ref().map(|p| p.watts),
            quality: quality.clone(),
            live: hub.is_some(),
            load: load
                .as_ref()
                .and_then(|l| l.jobs.get(&(cell.id.clone(), repeat)).cloned()),
            server_pid: None,
        };
        let limit = cell_limit(opts.cell_timeout, deadline);
        let t0 = Instant::now();
        let plugin = &engine_defs[cell.engine.as_str()].plugin;
        if let Some(why) = past_breaking_point(cell, repeat, &summary.cells) {
            let mut line = cell::failed_line(&job, plugin, why, 0.0);
            line.result.status = Status::Unsupported;
            record(&mut dir, &mut summary, &bar, hub, line)?;
            continue;
        }
        if let Some(why) = unresolved {
            let line = cell::failed_line(&job, plugin, why, 0.0);
            record(&mut dir, &mut summary, &bar, hub, line)?;
            continue;
        }
        let mut job = job;
        let def = match servers.ensure(engine_defs[cell.engine.as_str()], &stop) {
            Ok(def) => {
                job.server_pid = servers.pid(&cell.engine);
                def
            }
            Err(crate::run::launch::StartError::Stopped) => {
                stopped = stop_reason();
                break;
            }
            Err(crate::run::launch::StartError::Failed(why)) => {
                let line = cell::failed_line(&job, plugin, why, t0.elapsed().as_secs_f64());
                record(&mut dir, &mut summary, &bar, hub, line)?;
                continue;
            }
        };
        if let Some(h) = hub {
            h.cell_started(&cell.id, &cell.engine);
        }
        let mut line = match executor.run(&def, job, limit, &stop) {
            Ran::Line(l) => l,
            Ran::Stopped => {
                stopped = stop_reason();
                break;
            }
        };
        if let Some(g) = servers.gguf(&cell.engine) {
            note_served_gguf(&mut line, g);
        }
        let saw_failures = line.result.status == Status::Failed
            || line.result.metrics.as_ref().is_some_and(|m| m.failed > 0);
        let grace = Duration::from_millis(if saw_failures { 500 } else { 0 });
        if let Some(died) = servers.check(&cell.engine, grace) {
            note_dead_server(&mut line, died);
        }
        if !learned.contains(&cell.engine) {
            if let Some(rec) = executor.record(&cell.engine) {
                learned.insert(cell.engine.clone());
                learn_engine(&matrix, &cell.engine, rec, &mut summary, &bar, opts.verbose);
            }
        }
        record(&mut dir, &mut summary, &bar, hub, *line)?;
    }
    bar.finish_and_clear();
    executor.shutdown();
    servers.stop_all();
    let report = finish(&mut dir, summary, stopped)?;
    if let Some(h) = hub {
        h.finished(&report.summary);
    }
    Ok(report)
}

/// Why `cell` is not run: a lower level of the same breaking-point search
/// (same repeat) already passed a bound. `None`: run it.
fn past_breaking_point(
    cell: &Cell,
    repeat: u32,
    done: &[crate::output::CellResult],
) -> Option<String> {
    use engine_matrix_format::breaking::{level, level_name, search_key};
    cell.breaking_point.as_ref()?;
    let key = search_key(cell);
    done.iter()
        .filter(|d| {
            d.repeat == repeat && level(&d.cell) < level(cell) && search_key(&d.cell) == key
        })
        .filter_map(|d| {
            let s = d.stability.as_ref().filter(|s| !s.stable)?;
            Some((level(&d.cell), &s.why))
        })
        .min_by_key(|(c, _)| *c)
        .map(|(c, why)| {
            format!(
                "not run: past the breaking point, {} {c} already passed a bound ({why})",
                level_name(cell.kind)
            )
        })
}

/// The highest sustainable rate the latest successful sweep cell of
/// `model` on `engine` found.
fn sustainable_rate(cells: &[crate::output::CellResult], model: &str, engine: &str) -> Option<f64> {
    cells
        .iter()
        .rev()
        .filter(|c| c.status == Status::Ok && c.cell.model == model && c.cell.engine == engine)
        .find_map(|c| {
            c.metrics
                .as_ref()?
                .serving
                .as_ref()?
                .sweep
                .as_ref()?
                .max_sustainable_rate
        })
}

/// Saves one cell's result (line, then summary) and says when it failed.
fn record(
    dir: &mut RunDir,
    summary: &mut Summary,
    bar: &indicatif::ProgressBar,
    hub: Option<&crate::live::hub::Hub>,
    mut line: ResultLine,
) -> Result<()> {
    if let Some(bp) = &line.result.cell.breaking_point {
        if line.result.stability.is_none() {
            line.result.stability =
                engine_matrix_grade::stability(bp, &line.result, summary.system.memory_bytes);
        }
    }
    let line = &line;
    let result = &line.result;
    if result.status != Status::Ok {
        bar.suspend(|| {
            eprintln!(
                "{}: {}: {}",
                result.cell.id,
                crate::report::status_name(result.status),
                result.reason.as_deref().unwrap_or("")
            )
        });
    }
    dir.append(line)?;
    summary
        .cells
        .push(crate::output::summary_cell(&line.result));
    engine_matrix_grade::regrade(summary);
    dir.write_summary(summary)?;
    bar.inc(1);
    if let (Some(h), Some(c)) = (hub, summary.cells.last()) {
        h.cell_finished(c, summary);
    }
    Ok(())
}

/// The order cells run in: scenario by scenario and model by model; with
/// `repeat` > 1 each such group runs `repeat` times with the engines
/// interleaved (A B C, A B C, ...), so that every repetition holds one
/// sample of every engine taken close together in time: a speedup is then
/// a ratio within a repetition, and drift of the machine's speed between
/// repetitions cancels.
fn interleave(cells: &[Cell], repeat: u32) -> Vec<(&Cell, u32)> {
    let mut out = Vec::with_capacity(cells.len() * repeat as usize);
    let mut start = 0;
    while start < cells.len() {
        let same = |c: &Cell| c.scenario == cells[start].scenario && c.model == cells[start].model;
        let end = start + cells[start..].iter().take_while(|c| same(c)).count();
        for r in 0..repeat {
            out.extend(cells[start..end].iter().map(|c| (c, r)));
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_interleave_engines_inside_each_scenario_and_model() {
        let m = Matrix::parse(
            "name: t\nmodels: [{name: m, weights: synthetic, config: tiny}]\n\
             engines: [{name: a, plugin: candle}, {name: b, plugin: candle}]\n\
             scenarios:\n\
             - {name: s1, kind: latency, axes: {batch_size: [1, 2]}}\n\
             - {name: s2, kind: latency}\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let mut cells = m.cells(false);
        let order = |c: &Cell| (c.scenario.clone(), c.engine.clone());
        cells.sort_by_key(order);
        let got: Vec<String> = interleave(&cells, 2)
            .iter()
            .map(|(c, r)| format!("{}:{}:bs{}:{r}", c.scenario, c.engine, c.params.batch_size))
            .collect();
        assert_eq!(
            got,
            [
                "s1:a:bs1:0",
                "s1:a:bs2:0",
                "s1:b:bs1:0",
                "s1:b:bs2:0",
                "s1:a:bs1:1",
                "s1:a:bs2:1",
                "s1:b:bs1:1",
                "s1:b:bs2:1",
                "s2:a:bs1:0",
                "s2:b:bs1:0",
                "s2:a:bs1:1",
                "s2:b:bs1:1",
            ]
        );
        assert_eq!(interleave(&cells, 1).len(), cells.len());
    }
}
