//! One cell against one engine: what a worker process (or, with
//! `run --in-process`, the host itself) does for every cell it is given.
//!
//! [`EngineSlot`] is a loaded plugin (or why it did not load); [`CellState`]
//! keeps the model loaded across the cells that share it (a model is
//! reloaded only when the engine, model, dtype, quantization or batching
//! settings change), remembers loads that failed so they are not retried
//! for every cell, and engines that hung. [`execute`] runs one cell and
//! returns its result line, never an error: a problem becomes a `failed`
//! or `unsupported` result with its reason.

use crate::clock::utc_now;
use crate::matrix::{Cell, EngineDef, ModelDef, ModelWeights};
use crate::measure::metrics::compute;
use crate::measure::scenario::{self, Stop};
use crate::measure::{IterationSpan, RequestRecord};
use crate::output::{
    CellResult, EngineRecord, MemoryRecord, RawRequest, ResultLine, Status, SCHEMA_VERSION,
};
use crate::plugins::{self, LoadedEngine};
use crate::synthetic::{self, Gpt2Shape};
use crate::system;
use anyhow::{bail, Context, Result};
use engine_api::{LoadOptions, ModelBox, ModelSpec};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A plugin as loaded for one engine of the matrix: an LLM engine
/// (`loaded`) or a vector-index engine (`index`).
pub struct EngineSlot {
    pub def: EngineDef,
    pub loaded: Result<LoadedEngine, String>,
    /// The vector-index engine, when the plugin is one (`loaded` then says
    /// it is not an LLM engine).
    pub index: Option<plugins::LoadedIndexEngine>,
    pub record: EngineRecord,
    /// The loader's long report (abi_stable's layout mismatch), for -v.
    pub verbose_error: Option<String>,
}

impl EngineSlot {
    pub fn load(def: &EngineDef, plugin_dir: &Path) -> EngineSlot {
        let file = plugins::find(plugin_dir, &def.plugin);
        if let Ok(f) = &file {
            if plugins::kind(f).ok() == Some(plugins::Kind::Index) {
                return Self::load_index(def, f);
            }
        }
        let loaded = file.and_then(|f| plugins::load(&f));
        let (record, verbose_error) = match &loaded {
            Ok(l) => (
                EngineRecord {
                    name: def.name.clone(),
                    plugin: def.plugin.clone(),
                    path: Some(l.file.path.display().to_string()),
                    api_version: Some(l.api_version.clone()),
                    info: Some(crate::info_json(&l.info)),
                    error: None,
                },
                None,
            ),
            Err(e) => (
                EngineRecord {
                    name: def.name.clone(),
                    plugin: def.plugin.clone(),
                    path: None,
                    api_version: None,
                    info: None,
                    error: Some(e.to_string()),
                },
                Some(e.verbose()),
            ),
        };
        EngineSlot {
            def: def.clone(),
            loaded: loaded.map_err(|e| e.to_string()),
            index: None,
            record,
            verbose_error,
        }
    }

    /// A vector-index plugin's slot.
    fn load_index(def: &EngineDef, file: &plugins::PluginFile) -> EngineSlot {
        let mut record = EngineRecord {
            name: def.name.clone(),
            plugin: def.plugin.clone(),
            path: Some(file.path.display().to_string()),
            api_version: None,
            info: None,
            error: None,
        };
        match plugins::load_index(file) {
            Ok(l) => {
                record.api_version = Some(l.api_version.clone());
                record.info = Some(crate::index_info_json(&l.info));
                EngineSlot {
                    def: def.clone(),
                    loaded: Err(format!(
                        "engine '{}' is a vector-index engine: it runs retrieval scenarios, not LLM ones",
                        def.name
                    )),
                    index: Some(l),
                    record,
                    verbose_error: None,
                }
            }
            Err(e) => {
                record.error = Some(e.to_string());
                EngineSlot {
                    def: def.clone(),
                    loaded: Err(e.to_string()),
                    index: None,
                    record,
                    verbose_error: Some(e.verbose()),
                }
            }
        }
    }
}

/// What stays between the cells of one engine.
#[derive(Default)]
pub struct CellState {
    current: Option<Loaded>,
    hung: HashSet<String>,
    failed_loads: HashMap<String, (Status, String)>,
    /// Quality records by (engine, model, dtype, quantization).
    quality: HashMap<String, engine_matrix_results::quality::QualityRecord>,
    /// Where live samples go, for jobs that ask for them.
    pub live: Option<std::sync::Arc<crate::live::LiveFn>>,
    /// The retrieval cells' data and index.
    index: crate::run::retrieval::IndexState,
    /// Told when an index build starts (its key) and ends (`None`): the
    /// worker passes it on to the host.
    pub building: Option<std::sync::Arc<crate::run::retrieval::BuildFn>>,
}

impl CellState {
    /// Frees the loaded model or index (before another engine's cells run).
    pub fn unload(&mut self) {
        self.current = None;
        self.index.unload();
    }
}

/// One cell to run, with everything the engine side needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub cell: Cell,
    pub repeat: u32,
    pub model: Result<ResolvedModel, String>,
    pub stall_s: f64,
    pub limits: Option<crate::roofline::Limits>,
    /// The run's idle power (W), subtracted from the cell's energy.
    #[serde(default)]
    pub idle_watts: Option<f64>,
    /// The matrix's quality pass, when it has one.
    #[serde(default)]
    pub quality: Option<crate::quality::QualityJob>,
    /// Sample the cell for the live view while it runs (`run --dashboard`).
    #[serde(default)]
    pub live: bool,
    /// A retrieval cell's data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors: Option<crate::matrix::retrieval::VectorsDef>,
    /// A load generator's share of a serving cell (`run --load-shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::run::load_shard::LoadJob>,
    /// The pid (and process group) of the server the harness launched for
    /// the engine (`launch:`): a serving cell's leak check reads its RSS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
}

/// Runs `job`; the flag says the engine hung (its model could not be freed).
pub fn execute(slot: &EngineSlot, state: &mut CellState, job: &Job) -> (ResultLine, bool) {
    if job.cell.kind == crate::matrix::ScenarioKind::Retrieval {
        return (execute_retrieval(slot, state, job), false);
    }
    let ctx = CellContext {
        engine: &slot.loaded,
        def: &slot.def,
        model: &job.model,
        stall: Duration::from_secs_f64(job.stall_s.max(0.001)),
        limits: job.limits.as_ref(),
        idle_watts: job.idle_watts,
        live: state.live.clone().filter(|_| job.live),
        load: job.load.as_ref(),
        server_pid: job.server_pid,
    };
    let was_hung = state.hung.contains(&job.cell.engine);
    let (mut result, spans, raw) = run_cell(
        &job.cell,
        &ctx,
        &mut state.current,
        &mut state.hung,
        &mut state.failed_loads,
    );
    result.repeat = job.repeat;
    if let (Some(q), Ok(model), Status::Ok) = (&job.quality, &job.model, result.status) {
        result.quality = quality(q, &job.cell, model, state);
    }
    let hung = !was_hung && state.hung.contains(&job.cell.engine);
    let line = ResultLine {
        schema_version: SCHEMA_VERSION,
        result,
        iterations: spans,
        requests: raw.iter().map(RawRequest::from).collect(),
    };
    (line, hung)
}

/// Runs a retrieval cell ([`crate::run::retrieval`]).
fn execute_retrieval(slot: &EngineSlot, state: &mut CellState, job: &Job) -> ResultLine {
    let mut result = failed_line(job, &slot.def.plugin, String::new(), 0.0).result;
    let engine = match (&slot.index, &slot.loaded) {
        (Some(i), _) => Ok(i),
        (None, Ok(_)) => Err(format!(
            "engine '{}' (plugin '{}') is an LLM engine: a retrieval scenario runs vector-index engines",
            slot.def.name, slot.def.plugin
        )),
        (None, Err(e)) => Err(format!("engine not loaded: {e}")),
    };
    // An LLM model of another engine must not stay beside an index.
    state.current = None;
    let ctx = crate::run::retrieval::Ctx {
        engine,
        options: &slot.def.options,
        vectors: job.vectors.as_ref(),
        building: state.building.clone(),
    };
    crate::run::retrieval::run(&job.cell, &ctx, &mut state.index, &mut result);
    ResultLine {
        schema_version: SCHEMA_VERSION,
        result,
        iterations: Vec::new(),
        requests: Vec::new(),
    }
}

/// The quality record of `cell`'s combination: evaluated now with the
/// model the cell has just measured (still loaded), or the one an earlier
/// cell of the combination got.
fn quality(
    q: &crate::quality::QualityJob,
    cell: &Cell,
    model: &ResolvedModel,
    state: &mut CellState,
) -> Option<engine_matrix_results::quality::QualityRecord> {
    let key = crate::quality::key(cell);
    if let Some(r) = state.quality.get(&key) {
        return Some(r.clone());
    }
    let loaded = state.current.as_ref()?;
    let folder = model
        .folder(&cell.params.dtype)
        .unwrap_or_else(|_| model.path.clone());
    let reference = if crate::quality::is_reference(q, cell) {
        Ok(None)
    } else {
        load_reference(q, cell, model).map(Some)
    };
    let r = crate::quality::evaluate(q, cell, &model.shape, &folder, &loaded.model, reference);
    state.quality.insert(key, r.clone());
    Some(r)
}

/// The quality reference's f32, unquantized model, loaded for one pass
/// (its plugin stays loaded, as every plugin does for the process).
fn load_reference(
    q: &crate::quality::QualityJob,
    cell: &Cell,
    model: &ResolvedModel,
) -> Result<ModelBox, String> {
    let slot = EngineSlot::load(&q.reference, &q.plugin_dir);
    let engine = slot.loaded.as_ref().map_err(|e| e.clone())?;
    let folder = model.folder("f32").map_err(|e| format!("{e:#}"))?;
    let spec = ModelSpec {
        name: cell.model.clone().into(),
        architecture: model.architecture.clone().into(),
        path: folder.display().to_string().into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    };
    let options = LoadOptions {
        batch_policy: engine_api::BatchPolicy::None,
        max_batch: 1,
        options_json: q.reference.options.to_string().into(),
    };
    engine
        .engine
        .load(&spec, &options)
        .into_result()
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedModel {
    pub def: ModelDef,
    /// The model folder, or a GGUF file (imported per dtype at load).
    pub path: PathBuf,
    pub shape: Gpt2Shape,
    /// The architecture engines are asked to run: the config's
    /// `model_type` (a matrix's declared `architecture` must agree).
    pub architecture: String,
}

impl ResolvedModel {
    /// The folder an engine loads for `dtype`: the model folder, or the
    /// GGUF imported in `dtype` into the model cache (once).
    pub fn folder(&self, dtype: &str) -> Result<PathBuf> {
        if crate::models::is_gguf(&self.path) {
            return crate::models::ensure_imported(&self.path, dtype).map(|(dir, _)| dir);
        }
        Ok(self.path.clone())
    }

    /// Where the weights come from, for the results: `synthetic (seed N)`,
    /// `folder` or `gguf`.
    pub fn source(&self) -> String {
        match &self.def.weights {
            ModelWeights::Synthetic { seed, .. } => format!("synthetic (seed {seed})"),
            ModelWeights::Path(p) if crate::models::is_gguf(p) => "gguf".into(),
            ModelWeights::Path(_) => "folder".into(),
        }
    }
}

struct Loaded {
    key: String,
    model: ModelBox,
    /// The engine's description of the model (`Model::describe`).
    details: Option<serde_json::Value>,
    load_bytes: Option<i64>,
    load_time_ms: f64,
}

/// A cell's roofline efficiency: decode from TPOT p50 at the cell's
/// nominal decode batch, prefill from the engine-reported prefill time (or
/// TTFT where the engine reports none).
fn efficiency(
    cell: &Cell,
    shape: &Gpt2Shape,
    m: &crate::measure::metrics::CellMetrics,
    limits: &crate::roofline::Limits,
    weight_bytes: Option<f64>,
) -> crate::roofline::Efficiency {
    let p = &cell.params;
    let batch = match cell.kind {
        crate::matrix::ScenarioKind::Latency => p.batch_size,
        crate::matrix::ScenarioKind::Throughput => p.max_batch.min(p.num_requests),
        crate::matrix::ScenarioKind::Concurrency => p.concurrency.min(p.max_batch),
        // The batch an open loop reaches is not set by the cell.
        crate::matrix::ScenarioKind::Serving | crate::matrix::ScenarioKind::Retrieval => 1,
    }
    .max(1);
    let prefill_ms = m
        .engine_prefill_ms
        .as_ref()
        .map(|d| d.p50)
        .filter(|x| *x > 0.0)
        .or(m.ttft_ms.as_ref().map(|d| d.p50));
    crate::roofline::efficiency(
        shape,
        &p.dtype,
        limits,
        p.input_tokens,
        p.output_tokens,
        batch,
        m.tpot_ms.as_ref().map(|d| d.p50),
        prefill_ms,
        weight_bytes,
    )
}

/// The cell's leak check ([`crate::telemetry::leak::settled_check`]) and
/// the source of its RSS points. The units of work are the measured
/// iterations, each with the RSS read at its end. A closed loop with fewer
/// iterations than a verdict needs (a sustained run is one long iteration)
/// is judged instead on the sampler's series over its measured iterations,
/// with its completed measured requests as the units.
/// How often a launched server's RSS is read during a serving cell.
const SERVER_SAMPLE_INTERVAL: Duration = crate::telemetry::sampler::DEFAULT_INTERVAL;

/// The leak check of a cell from a sampled RSS series (the worker's for a
/// sustained closed loop, the launched server's for a serving cell): its
/// points during the measured iterations, the requests' ends as the units
/// of work (the first tenth settle).
fn request_leak_check(
    exec: &scenario::Execution,
    records: &[RequestRecord],
    samples: &crate::telemetry::sampler::Samples,
    sampler_started: Instant,
) -> crate::telemetry::LeakCheck {
    let at = sampler_clock(exec.collector.epoch(), sampler_started);
    let measured: Vec<&IterationSpan> = exec.spans.iter().filter(|s| !s.warmup).collect();
    let from = measured
        .iter()
        .map(|s| at(s.start_ns))
        .fold(f64::INFINITY, f64::min);
    let to = measured
        .iter()
        .map(|s| at(s.end_ns))
        .fold(f64::NEG_INFINITY, f64::max);
    let points: Vec<(f64, u64)> = samples
        .rss_points()
        .into_iter()
        .filter(|p| (from..=to).contains(&p.0))
        .collect();
    let ends: Vec<f64> = records
        .iter()
        .filter(|r| !r.warmup && r.error.is_none())
        .filter_map(|r| r.end_ns.map(&at))
        .collect();
    crate::telemetry::leak::settled_check(&points, &ends, "request")
}

/// Collector times (ns from `epoch`) as seconds on a sampler's clock
/// (from `sampler_started`).
fn sampler_clock(epoch: Instant, sampler_started: Instant) -> impl Fn(u64) -> f64 {
    let offset = match epoch.checked_duration_since(sampler_started) {
        Some(d) => d.as_secs_f64(),
        None => -sampler_started.duration_since(epoch).as_secs_f64(),
    };
    move |ns: u64| ns as f64 * 1e-9 + offset
}

fn cell_leak_check(
    cell: &Cell,
    exec: &scenario::Execution,
    records: &[RequestRecord],
    samples: &crate::telemetry::sampler::Samples,
    sampler_started: Instant,
) -> (crate::telemetry::LeakCheck, &'static str) {
    use crate::telemetry::leak::{settled_check, MIN_ITERATIONS};
    let measured: Vec<&IterationSpan> = exec.spans.iter().filter(|s| !s.warmup).collect();
    if cell.kind == crate::matrix::ScenarioKind::Concurrency && measured.len() < MIN_ITERATIONS {
        return (
            request_leak_check(exec, records, samples, sampler_started),
            "sampler",
        );
    }
    let points: Vec<(f64, u64)> = measured
        .iter()
        .filter_map(|s| Some((s.end_ns as f64 * 1e-9, s.rss_bytes?)))
        .collect();
    let ends: Vec<f64> = measured.iter().map(|s| s.end_ns as f64 * 1e-9).collect();
    (settled_check(&points, &ends, "iteration"), "iterations")
}

pub fn resolve_model(def: &ModelDef) -> Result<ResolvedModel> {
    let path = match &def.weights {
        ModelWeights::Synthetic { config, seed } => synthetic::ensure(config, *seed)?,
        ModelWeights::Path(p) => p.clone(),
    };
    let shape = if crate::models::is_gguf(&path) {
        gguf_shape(&path)?
    } else {
        folder_shape(&path)?
    };
    let declared = def.architecture.as_str();
    if !declared.is_empty() && declared != shape.model_type {
        bail!(
            "architecture '{declared}' is declared, but the config's model_type is '{}'",
            shape.model_type
        );
    }
    Ok(ResolvedModel {
        def: def.clone(),
        architecture: shape.model_type.clone(),
        path,
        shape,
    })
}

/// The shape of a model file or folder, from its config or metadata alone.
pub(crate) fn path_shape(path: &Path) -> Result<Gpt2Shape> {
    if crate::models::is_gguf(path) {
        gguf_shape(path)
    } else {
        folder_shape(path)
    }
}

/// The shape of a GGUF file, from its metadata (the config.json its
/// import would write), without reading any tensor.
fn gguf_shape(file: &Path) -> Result<Gpt2Shape> {
    let config = engine_matrix_import::Gguf::open(file)?.llama_config()?;
    Ok(Gpt2Shape::from_json(
        &config.to_string(),
        &file.display().to_string(),
    )?)
}

/// Checks, without generating or loading any weights, that `def` can be
/// resolved: a synthetic model's config parses (and is one weights can be
/// generated for); a folder has a readable `config.json` and its weights
/// file. Returns the matrix field the error is about with the error, as
/// `validate` reports it.
pub fn check_model(def: &ModelDef) -> Result<(), (&'static str, anyhow::Error)> {
    match &def.weights {
        ModelWeights::Synthetic { config, .. } => synthetic::checked_config(config)
            .map(|_| ())
            .map_err(|e| ("config", e.into())),
        ModelWeights::Path(p) if crate::models::is_gguf(p) => {
            gguf_shape(p).map(|_| ()).map_err(|e| ("path", e))
        }
        ModelWeights::Path(p) => folder_shape(p).map(|_| ()).map_err(|e| ("path", e)),
    }
}

/// The shape in a model folder's `config.json`, once its weights file is
/// known to be there.
fn folder_shape(path: &Path) -> Result<Gpt2Shape> {
    if !path.is_dir() {
        bail!("model folder {} not found", path.display());
    }
    let config = path.join("config.json");
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let shape = Gpt2Shape::from_json(&text, &config.display().to_string())?;
    engine_kit::arch::weight_files(path).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(shape)
}

pub(crate) struct CellContext<'a> {
    engine: &'a Result<LoadedEngine, String>,
    def: &'a EngineDef,
    model: &'a Result<ResolvedModel, String>,
    stall: Duration,
    limits: Option<&'a crate::roofline::Limits>,
    idle_watts: Option<f64>,
    live: Option<std::sync::Arc<crate::live::LiveFn>>,
    /// A load generator's share of the cell (`run --load-shard`).
    load: Option<&'a crate::run::load_shard::LoadJob>,
    /// The launched server's pid and process group, if any.
    server_pid: Option<u32>,
}

type CellRun = (CellResult, Vec<IterationSpan>, Vec<RequestRecord>);

/// Step 1 of a cell: the engine and model are there, the engine has not
/// hung earlier, and it lists the cell's dtype and quantization; else the
/// cell's status and reason.
fn preflight<'a>(
    cell: &Cell,
    ctx: &CellContext<'a>,
    hung: &HashSet<String>,
) -> Result<(&'a LoadedEngine, &'a ResolvedModel), (Status, String)> {
    let engine = match ctx.engine {
        Ok(e) => e,
        Err(e) => return Err((Status::Failed, format!("engine not loaded: {e}"))),
    };
    let model = match ctx.model {
        Ok(m) => m,
        Err(e) => return Err((Status::Failed, e.clone())),
    };
    if hung.contains(&cell.engine) {
        let why = "engine hung in an earlier cell; its remaining cells were not run".to_string();
        return Err((Status::Failed, why));
    }
    let p = &cell.params;
    let info = &engine.info;
    if !info.dtypes.iter().any(|d| d.as_str() == p.dtype) {
        let why = format!(
            "engine '{}' supports dtypes [{}], not {}",
            cell.engine,
            info.dtypes
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            p.dtype
        );
        return Err((Status::Unsupported, why));
    }
    let quants: Vec<&str> = info.quantizations.iter().map(|q| q.as_str()).collect();
    if !(quants.contains(&p.quantization.as_str()) || quants.is_empty() && p.quantization == "none")
    {
        let why = format!(
            "engine '{}' supports quantizations [{}], not {}",
            cell.engine,
            quants.join(", "),
            p.quantization
        );
        return Err((Status::Unsupported, why));
    }
    Ok((engine, model))
}

/// Step 2: the cell's model loaded in its engine, reused when the last
/// cell loaded the same (engine, model, dtype, quantization, batching);
/// a load that failed once fails the cells that need it without another
/// try. Returns the loaded model and whether it was loaded for this cell.
fn ensure_loaded<'c>(
    cell: &Cell,
    ctx: &CellContext,
    engine: &LoadedEngine,
    model: &ResolvedModel,
    current: &'c mut Option<Loaded>,
    failed_loads: &mut HashMap<String, (Status, String)>,
) -> Result<(&'c Loaded, bool), (Status, String)> {
    let p = &cell.params;
    let mut loaded_here = false;
    let key = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        cell.engine,
        cell.model,
        p.dtype,
        p.quantization,
        p.batch_policy.as_str(),
        p.max_batch
    );
    if let Some((status, why)) = failed_loads.get(&key) {
        // The same load already failed: do not retry it for every cell.
        return Err((*status, why.clone()));
    }
    if current.as_ref().map(|l| &l.key) != Some(&key) {
        *current = None; // free the previous model before measuring
        let folder = model.folder(&p.dtype).map_err(|e| {
            let why = format!("cannot import {}: {e:#}", model.path.display());
            failed_loads.insert(key.clone(), (Status::Failed, why.clone()));
            (Status::Failed, why)
        })?;
        let before = system::rss();
        let spec = ModelSpec {
            name: cell.model.clone().into(),
            architecture: model.architecture.clone().into(),
            path: folder.display().to_string().into(),
            dtype: p.dtype.clone().into(),
            quantization: p.quantization.clone().into(),
        };
        let options = LoadOptions {
            batch_policy: p.batch_policy,
            max_batch: p.max_batch.max(1),
            options_json: ctx.def.options.to_string().into(),
        };
        let t = Instant::now();
        match engine.engine.load(&spec, &options).into_result() {
            Ok(m) => {
                let load_time_ms = t.elapsed().as_secs_f64() * 1e3;
                let after = system::rss();
                let described = m.describe().to_string();
                let details = (!described.trim().is_empty()).then(|| {
                    serde_json::from_str(&described).unwrap_or(serde_json::Value::String(described))
                });
                *current = Some(Loaded {
                    key: key.clone(),
                    model: m,
                    details,
                    load_bytes: before
                        .zip(after)
                        .map(|(b, a)| a.rss_bytes as i64 - b.rss_bytes as i64),
                    load_time_ms,
                });
                loaded_here = true;
            }
            Err(e) => {
                let status = if e.is_unsupported() {
                    Status::Unsupported
                } else {
                    Status::Failed
                };
                let why = format!("loading model '{}' failed: {e}", cell.model);
                failed_loads.insert(key, (status, why.clone()));
                return Err((status, why));
            }
        }
    }
    match current.as_ref() {
        Some(loaded) => Ok((loaded, loaded_here)),
        None => Err((Status::Failed, "no model".into())),
    }
}

/// Step 5: the cell's status and reason from how the scenario ended and
/// what its metrics show. A hung engine is remembered (its other cells
/// are not run) and its model leaked rather than dropped.
fn classify(
    cell: &Cell,
    outcome: Result<(), Stop>,
    metrics: &crate::measure::metrics::CellMetrics,
    records: &[RequestRecord],
    model: &ResolvedModel,
    hung: &mut HashSet<String>,
    current: &mut Option<Loaded>,
) -> (Status, Option<String>) {
    match outcome {
        Ok(()) if metrics.requests > 0 && metrics.completed == 0 => {
            let why = metrics
                .failure_reasons
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "no request completed".into());
            (Status::Failed, Some(format!("every request failed: {why}")))
        }
        // Figures of an engine that emits tokens it should not are not
        // comparable: the cell fails, its metrics stay for diagnosis.
        Ok(()) if metrics.out_of_vocab_tokens > 0 => (
            Status::Failed,
            Some(format!(
                "the engine emitted {} token ids outside the vocabulary (vocab_size {})",
                metrics.out_of_vocab_tokens, model.shape.vocab_size
            )),
        ),
        Ok(()) if metrics.output_length_mismatches > 0 => {
            let example = records
                .iter()
                .filter(|r| !r.warmup && r.error.is_none() && r.completion.is_some())
                .map(RequestRecord::produced)
                .find(|&n| n != cell.params.output_tokens as usize)
                .unwrap_or(0);
            (
                Status::Failed,
                Some(format!(
                    "{} of {} completed requests produced a different number of tokens than the {} requested (e.g. {example})",
                    metrics.output_length_mismatches, metrics.completed, cell.params.output_tokens
                )),
            )
        }
        Ok(()) => (Status::Ok, None),
        Err(Stop::Unsupported(m)) => (Status::Unsupported, Some(m)),
        Err(Stop::Failed(m)) => (Status::Failed, Some(m)),
        Err(Stop::Hung(m)) => {
            // The engine may never return: leak the model rather than
            // block on dropping it, and skip the engine's other cells.
            hung.insert(cell.engine.clone());
            if let Some(l) = current.take() {
                std::mem::forget(l);
            }
            (Status::Failed, Some(m))
        }
    }
}

fn run_cell(
    cell: &Cell,
    ctx: &CellContext,
    current: &mut Option<Loaded>,
    hung: &mut HashSet<String>,
    failed_loads: &mut HashMap<String, (Status, String)>,
) -> CellRun {
    let started_at = utc_now();
    let t0 = Instant::now();
    let mut result = CellResult {
        cell: cell.clone(),
        plugin: ctx.def.plugin.clone(),
        status: Status::Failed,
        reason: None,
        started_at,
        wall_s: 0.0,
        memory: None,
        metrics: None,
        repeat: 0,
        efficiency: None,
        quality: None,
        model_details: None,
        stability: None,
        retrieval: None,
        generator: None,
    };
    let finish = |status, reason: Option<String>, mut r: CellResult| {
        r.status = status;
        r.reason = reason;
        r.wall_s = t0.elapsed().as_secs_f64();
        r
    };
    let (engine, model) = match preflight(cell, ctx, hung) {
        Ok(x) => x,
        Err((status, why)) => return (finish(status, Some(why), result), vec![], vec![]),
    };
    let p = &cell.params;

    let mut memory = MemoryRecord::default();
    let loaded = match ensure_loaded(cell, ctx, engine, model, current, failed_loads) {
        Ok((loaded, here)) => {
            memory.loaded_here = here;
            loaded
        }
        Err((status, why)) => return (finish(status, Some(why), result), vec![], vec![]),
    };
    memory.load_bytes = loaded.load_bytes;
    memory.load_time_ms = Some(loaded.load_time_ms);
    result.model_details = loaded.details.clone();

    // Built (datasets read and tokenized) before anything is timed.
    let folder = model
        .folder(&p.dtype)
        .unwrap_or_else(|_| model.path.clone());
    let prompts = match crate::workload::build(cell, &model.shape, &folder) {
        Ok(w) => w,
        Err(crate::workload::NoWorkload::Unsupported(why)) => {
            return (
                finish(Status::Unsupported, Some(why), result),
                vec![],
                vec![],
            )
        }
        Err(crate::workload::NoWorkload::Failed(why)) => {
            return (finish(Status::Failed, Some(why), result), vec![], vec![])
        }
    };
    // The pressure child, when the cell asks for one: running (memory
    // resident, threads busy) before the first request.
    let hog = match p.pressure.as_ref().map(start_pressure).transpose() {
        Ok(h) => h,
        Err(why) => return (finish(Status::Failed, Some(why), result), vec![], vec![]),
    };
    let _ = loaded.model.memory(); // resets the engine's KV peak
    memory.peak_is_per_cell = system::reset_peak_rss();
    let start = system::rss();
    // Sleeps between samples: a spinning sampler would take a core from
    // the engine on a 2-core machine.
    let sampler = crate::telemetry::Sampler::start(
        crate::telemetry::sampler::DEFAULT_INTERVAL,
        crate::telemetry::Sources::all(),
    );
    let sampler_started = sampler.started_at();
    // A serving cell's leak check reads the launched server's memory (see
    // `request_leak_check`): a sleeping thread reading a `statm` per
    // process of the server's group every 50 ms.
    let server_sampler = ctx.server_pid.filter(|_| p.serving.is_some()).map(|pid| {
        crate::telemetry::Sampler::start(
            SERVER_SAMPLE_INTERVAL,
            crate::telemetry::Sources::group_rss(pid),
        )
    });
    let scraper = server_scraper(ctx.def, sampler_started);
    let collector = std::sync::Arc::new(collector_for(ctx.load));
    let generator = ctx.load.map(|job| generator_record(job, &collector));
    let load = ctx
        .load
        .zip(generator.as_ref())
        .map(|(job, g)| scenario::LoadRun {
            job,
            epoch_unix_ns: g.epoch_unix_ns,
        });
    let ticker = ctx.live.clone().map(|sink| {
        crate::live::ticker::Ticker::start(
            cell.id.clone(),
            collector.clone(),
            crate::live::ticker::INTERVAL,
            sink,
        )
    });
    let exec = scenario::execute_into(&loaded.model, cell, &prompts, ctx.stall, collector, load);
    result.generator = generator;
    drop(ticker);
    memory.pressure = hog.map(crate::pressure::Hog::stop);
    let server = scraper.map(crate::telemetry::prometheus::Scraper::stop);
    let samples = sampler.stop();
    let server_samples = server_sampler.map(|s| (s.started_at(), s.stop()));
    let end = system::rss();
    let engine_mem = loaded.model.memory();
    memory.rss_start_bytes = start.map(|r| r.rss_bytes);
    memory.rss_end_bytes = end.map(|r| r.rss_bytes);
    memory.peak_rss_bytes = end.map(|r| r.peak_bytes);
    memory.weight_bytes = engine_mem.weight_bytes;
    memory.kv_cache_peak_bytes = engine_mem.kv_cache_peak_bytes;
    memory.kv_cache_reserved_bytes = engine_mem.kv_cache_reserved_bytes;
    memory.prefix_cache_bytes = engine_mem.prefix_cache_bytes;
    memory.sampled_peak_rss_bytes = samples.peak_rss_bytes;
    let records = exec.collector.take_records();
    // A serving cell's worker keeps a record of every request it sends,
    // so its RSS grows with the load, not with the engine: no verdict from
    // it. A server the harness launched has its own process: its RSS is
    // the engine's (and the server's), and gets the verdict.
    if p.serving.is_none() {
        let (check, source) = cell_leak_check(cell, &exec, &records, &samples, sampler_started);
        memory.leak = Some(check);
        memory.leak_source = Some(source.to_string());
    } else if let (Some((started, s)), Some(pid)) = (&server_samples, ctx.server_pid) {
        memory.leak = Some(request_leak_check(&exec, &records, s, *started));
        memory.leak_source = Some(format!("server (process group {pid})"));
    }
    memory.gpu =
        crate::output::GpuRecord::from_samples(&samples.gpu, &samples.gpu_peak_memory_bytes);

    let metrics = match &p.serving {
        None => compute(&records, &exec.spans, model.shape.vocab_size),
        Some(sv) => {
            let serving = crate::measure::serving::compute(
                sv,
                p.duration_s,
                &records,
                &exec.spans,
                &exec.segments,
            );
            // A sweep's usual figures are those of its highest passing
            // rate (else its first): rates mixed would mean nothing.
            let mut m = match serving.sweep.as_ref() {
                Some(sw) => {
                    let index = crate::measure::serving::reported_segment(sw, &exec.segments).0;
                    let recs: Vec<_> = records
                        .iter()
                        .filter(|r| r.warmup || r.iteration == index)
                        .cloned()
                        .collect();
                    let spans: Vec<_> = exec
                        .spans
                        .iter()
                        .filter(|s| s.warmup || s.index == index)
                        .copied()
                        .collect();
                    compute(&recs, &spans, model.shape.vocab_size)
                }
                None => compute(&records, &exec.spans, model.shape.vocab_size),
            };
            m.serving = Some(serving);
            m
        }
    };
    if let (Some(j), Some(source)) = (samples.energy_j, &samples.energy_source) {
        memory.energy = Some(crate::telemetry::energy_record(
            source,
            j,
            samples.duration_s,
            ctx.idle_watts,
            metrics.total_output_tokens,
        ));
    }
    let mut metrics = metrics;
    metrics.workload = Some(prompts.record());
    metrics.server = server;
    result.memory = Some(memory);
    let (status, reason) = classify(cell, exec.outcome, &metrics, &records, model, hung, current);
    let keep_metrics = status == Status::Ok
        || metrics.out_of_vocab_tokens > 0
        || metrics.output_length_mismatches > 0;
    if status == Status::Ok {
        // The limits are the CPU's: a cell on a GPU has no roof to be
        // measured against yet, so it gets no efficiency rather than a
        // wrong one.
        let on_gpu = ctx.def.options["device"]
            .as_str()
            .is_some_and(|d| !d.eq_ignore_ascii_case("cpu"));
        // Nor does a server behind the http plugin: its model is not the
        // matrix's (which only shapes the prompts), and it may run
        // anywhere.
        let remote = ctx.def.plugin == "http";
        // Nor does a dataset's whose lengths are its data's (text, a
        // trace): they vary, and the roof is computed for one length.
        let varied = p
            .dataset
            .as_ref()
            .is_some_and(|d| d.kind.lengths_from_data());
        // A quantized model streams the bytes its engine says a decode
        // step reads (`streamed_weight_bytes` in its description: its
        // weights less a lookup-only embedding table), not its parameters
        // at the dtype's size; an engine that does not say gets no decode
        // roof rather than a guess (f32 bytes would put it above the
        // roof, its held bytes count a table no step reads).
        let weight_bytes = (p.quantization != "none").then(|| {
            result
                .model_details
                .as_ref()
                .and_then(|d| d["streamed_weight_bytes"].as_f64())
                .unwrap_or(0.0)
        });
        result.efficiency = ctx
            .limits
            .filter(|_| !on_gpu && !remote && !varied)
            .map(|l| efficiency(cell, &model.shape, &metrics, l, weight_bytes));
    }
    if keep_metrics {
        result.metrics = Some(metrics);
    }
    (finish(status, reason, result), exec.spans, records)
}

/// The cell's collector: a load generator's counts from its first shared
/// start when the cell begins after it (so a late start's due times are
/// not before the epoch), else from now.
fn collector_for(load: Option<&crate::run::load_shard::LoadJob>) -> crate::measure::Collector {
    let now = Instant::now();
    let first = load.and_then(|j| j.starts_unix_ns.first().copied());
    let epoch = first
        .map(|start| {
            let wall = crate::clock::unix_ns_now();
            let late = Duration::from_nanos(wall.saturating_sub(start));
            now.checked_sub(late).unwrap_or(now)
        })
        .unwrap_or(now);
    crate::measure::Collector::starting_at(epoch)
}

/// A load generator's record of the cell: its clock at the collector's
/// epoch and what the system says of that clock.
fn generator_record(
    job: &crate::run::load_shard::LoadJob,
    collector: &crate::measure::Collector,
) -> engine_matrix_results::GeneratorRecord {
    let (epoch_unix_ns, epoch_pairing_ns) = crate::clock::unix_ns_at(collector.epoch());
    engine_matrix_results::GeneratorRecord {
        index: job.index,
        count: job.count,
        host: crate::system::collect_hostname(),
        epoch_unix_ns,
        epoch_pairing_ns,
        starts_unix_ns: job.starts_unix_ns.clone(),
        max_concurrency: job.max_concurrency,
        clock: crate::clock::clock_status(),
    }
}

/// Starts the pressure child beside the engine (this binary again; see
/// [`crate::pressure`]).
fn start_pressure(
    p: &engine_matrix_format::pressure::Pressure,
) -> Result<crate::pressure::Hog, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("pressure {}: cannot locate engine-matrix: {e}", p.tag()))?;
    crate::pressure::Hog::start(&exe, p).map_err(|e| format!("{e:#}"))
}

/// The scraper of an http engine's `metrics_url` (its Prometheus
/// endpoint), every `metrics_interval_s` (default 1 s), times counted
/// from `epoch`; `None` for other engines. A sleeping thread: a scrape
/// takes a millisecond or two of one core.
fn server_scraper(
    def: &EngineDef,
    epoch: Instant,
) -> Option<crate::telemetry::prometheus::Scraper> {
    use crate::telemetry::prometheus::{Scraper, DEFAULT_INTERVAL};
    if def.plugin != "http" {
        return None;
    }
    let url = def.options["metrics_url"].as_str()?;
    let interval = def.options["metrics_interval_s"]
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_INTERVAL, Duration::from_secs_f64);
    Some(Scraper::start_at(url, interval, epoch))
}

/// A `failed` result for `job` decided outside the engine (its worker
/// crashed, hung or could not start).
pub fn failed_line(job: &Job, plugin: &str, why: String, wall_s: f64) -> ResultLine {
    ResultLine {
        schema_version: SCHEMA_VERSION,
        result: CellResult {
            cell: job.cell.clone(),
            plugin: plugin.to_string(),
            status: Status::Failed,
            reason: Some(why),
            started_at: utc_now(),
            wall_s,
            memory: None,
            metrics: None,
            repeat: job.repeat,
            efficiency: None,
            quality: None,
            model_details: None,
            stability: None,
            retrieval: None,
            generator: None,
        },
        iterations: Vec::new(),
        requests: Vec::new(),
    }
}
