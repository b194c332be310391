//! `engine-matrix run`: loads the engines and models a matrix names, runs
//! its cells in order and writes every result as soon as it exists.
//!
//! Cells run scenario by scenario; inside a scenario, engine by engine, so
//! that a model stays loaded while its cells run (a model is reloaded only
//! when the engine, model, dtype, quantization or batching settings
//! change). A problem that concerns one engine or model — a plugin that is
//! missing or refuses to load, a model folder without weights, a dtype the
//! engine does not support — becomes a `failed` or `unsupported` result for
//! the cells concerned, with the reason; the other cells still run.

use crate::matrix::{Cell, EngineDef, Matrix, ModelDef, ModelWeights};
use crate::measure::RequestRecord;
use crate::metrics::{compute, IterationSpan};
use crate::output::{
    stamp, utc_now, CellResult, EngineRecord, MemoryRecord, ModelRecord, RawRequest, ResultLine,
    RunDir, Status, Summary, SCHEMA_VERSION,
};
use crate::plugins::{self, LoadedEngine};
use crate::prompts::PromptGen;
use crate::scenario::{self, Stop};
use crate::synthetic::{self, Gpt2Shape};
use crate::system;
use anyhow::{bail, Context, Result};
use engine_api::{LoadOptions, ModelBox, ModelSpec};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct RunOptions {
    pub matrix: PathBuf,
    pub out: Option<PathBuf>,
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
}

/// What a finished run produced.
pub struct RunReport {
    pub dir: PathBuf,
    pub summary: Summary,
    pub markdown: String,
}

struct ResolvedModel {
    def: ModelDef,
    path: PathBuf,
    shape: Gpt2Shape,
}

struct Loaded {
    key: String,
    model: ModelBox,
    load_bytes: Option<i64>,
    load_time_ms: f64,
}

pub fn run(opts: &RunOptions) -> Result<RunReport> {
    let matrix = Matrix::load(&opts.matrix)?;
    let text = std::fs::read_to_string(&opts.matrix)
        .with_context(|| format!("cannot read {}", opts.matrix.display()))?;
    for name in &opts.only {
        if !matrix.engines.iter().any(|e| &e.name == name) {
            bail!(
                "--only {name}: {} has no engine named '{name}' (engines: {})",
                opts.matrix.display(),
                matrix
                    .engines
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut cells = matrix.cells(opts.quick);
    cells.retain(|c| opts.only.is_empty() || opts.only.contains(&c.engine));
    let pos = |names: Vec<&str>| -> HashMap<String, usize> {
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i))
            .collect()
    };
    let scen = pos(matrix.scenarios.iter().map(|s| s.name.as_str()).collect());
    let mods = pos(matrix.models.iter().map(|m| m.name.as_str()).collect());
    let engs = pos(matrix.engines.iter().map(|e| e.name.as_str()).collect());
    cells.sort_by_key(|c| (scen[&c.scenario], mods[&c.model], engs[&c.engine]));
    let schedule = interleave(&cells, opts.repeat.max(1));

    let system = system::collect();
    // Before any engine loads, so nothing competes with the measurement.
    let limits = if opts.calibrate {
        let dir = crate::roofline::default_dir();
        if !crate::roofline::cache_path(&dir).is_file() && opts.progress {
            eprintln!(
                "calibrating this machine's memory bandwidth and matmul peak (once, cached)..."
            );
        }
        match crate::roofline::cached(&dir) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("warning: no roofline efficiency: calibration failed: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-{}", matrix.name, stamp())));
    let mut dir = RunDir::create(&out, &text, &system)?;

    let used_engines: HashSet<&str> = cells.iter().map(|c| c.engine.as_str()).collect();
    let mut engines: HashMap<String, Result<LoadedEngine, String>> = HashMap::new();
    let mut engine_records = Vec::new();
    for (i, def) in matrix.engines.iter().enumerate() {
        if !used_engines.contains(def.name.as_str()) {
            continue;
        }
        let loaded = plugins::find(&opts.plugin_dir, &def.plugin).and_then(|f| plugins::load(&f));
        let record = match &loaded {
            Ok(l) => EngineRecord {
                name: def.name.clone(),
                plugin: def.plugin.clone(),
                path: Some(l.file.path.display().to_string()),
                api_version: Some(l.api_version.clone()),
                info: Some(crate::info_json(&l.info)),
                error: None,
            },
            Err(e) => {
                let field = format!("engines[{i}].plugin");
                let at = matrix.locate(&field);
                eprintln!(
                    "error: {at}: {field}: engine '{}': {}",
                    def.name,
                    if opts.verbose {
                        e.verbose()
                    } else {
                        e.to_string()
                    }
                );
                EngineRecord {
                    name: def.name.clone(),
                    plugin: def.plugin.clone(),
                    path: None,
                    api_version: None,
                    info: None,
                    error: Some(e.to_string()),
                }
            }
        };
        engine_records.push(record);
        engines.insert(def.name.clone(), loaded.map_err(|e| e.to_string()));
    }

    let used_models: HashSet<&str> = cells.iter().map(|c| c.model.as_str()).collect();
    let mut models: HashMap<String, Result<ResolvedModel, String>> = HashMap::new();
    let mut model_records = Vec::new();
    for (i, def) in matrix.models.iter().enumerate() {
        if !used_models.contains(def.name.as_str()) {
            continue;
        }
        let resolved = resolve_model(def).map_err(|e| {
            let field = format!("models[{i}]");
            let at = matrix.locate(&field);
            let msg = format!("{at}: {field}: model '{}': {e:#}", def.name);
            eprintln!("error: {msg}");
            msg
        });
        model_records.push(ModelRecord {
            name: def.name.clone(),
            path: resolved.as_ref().ok().map(|r| r.path.display().to_string()),
            parameters: resolved.as_ref().ok().map(|r| r.shape.parameters()),
            shape: resolved.as_ref().ok().map(|r| r.shape.clone()),
            error: resolved.as_ref().err().cloned(),
        });
        models.insert(def.name.clone(), resolved);
    }

    let mut summary = Summary {
        schema_version: SCHEMA_VERSION,
        tool: "engine-matrix".into(),
        repeats: opts.repeat.max(1),
        matrix_name: matrix.name.clone(),
        matrix_path: opts.matrix.display().to_string(),
        baseline: matrix.baseline.clone(),
        quick: opts.quick,
        command: std::env::args().collect(),
        started_at: utc_now(),
        finished_at: None,
        complete: false,
        system,
        limits: limits.clone(),
        engines: engine_records,
        models: model_records,
        cells: Vec::new(),
    };
    dir.write_summary(&summary)?;

    let bar = if opts.progress {
        indicatif::ProgressBar::new(schedule.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cells {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let engine_defs: HashMap<&str, &EngineDef> = matrix
        .engines
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut current: Option<Loaded> = None;
    let mut hung: HashSet<String> = HashSet::new();
    let mut failed_loads: HashMap<String, (Status, String)> = HashMap::new();
    for &(cell, repeat) in &schedule {
        bar.set_message(cell.id.clone());
        let ctx = CellContext {
            engine: &engines[&cell.engine],
            def: engine_defs[cell.engine.as_str()],
            model: &models[&cell.model],
            stall: opts.stall,
            limits: limits.as_ref(),
        };
        let (mut result, spans, raw) =
            run_cell(cell, &ctx, &mut current, &mut hung, &mut failed_loads);
        result.repeat = repeat;
        if result.status != Status::Ok {
            bar.println(format!(
                "{}: {:?}: {}",
                cell.id,
                result.status,
                result.reason.as_deref().unwrap_or("")
            ));
        }
        dir.append(&ResultLine {
            schema_version: SCHEMA_VERSION,
            result: result.clone(),
            iterations: spans,
            requests: raw.iter().map(RawRequest::from).collect(),
        })?;
        summary.cells.push(result);
        dir.write_summary(&summary)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(current);
    summary.finished_at = Some(utc_now());
    summary.complete = true;
    dir.write_summary(&summary)?;
    // The results are saved: a report that cannot be written is a warning,
    // and `engine-matrix report DIR` can try again.
    let markdown = match crate::report::write_summary(&summary, &dir.path) {
        Ok(w) => {
            if let Some(e) = &w.chart_error {
                eprintln!("warning: charts not drawn: {e}");
            }
            w.markdown
        }
        Err(e) => {
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

/// A cell's roofline efficiency: decode from TPOT p50 at the cell's
/// nominal decode batch, prefill from the engine-reported prefill time (or
/// TTFT where the engine reports none).
fn efficiency(
    cell: &Cell,
    shape: &Gpt2Shape,
    m: &crate::metrics::CellMetrics,
    limits: &crate::roofline::Limits,
) -> crate::roofline::Efficiency {
    let p = &cell.params;
    let batch = match cell.kind {
        crate::matrix::ScenarioKind::Latency => p.batch_size,
        crate::matrix::ScenarioKind::Throughput => p.max_batch.min(p.num_requests),
        crate::matrix::ScenarioKind::Concurrency => p.concurrency.min(p.max_batch),
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
    )
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

fn resolve_model(def: &ModelDef) -> Result<ResolvedModel> {
    let path = match &def.weights {
        ModelWeights::Synthetic { config, seed } => synthetic::ensure(config, *seed)?,
        ModelWeights::Path(p) => p.clone(),
    };
    let config = path.join("config.json");
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let shape = Gpt2Shape::from_json(&text, &config.display().to_string())?;
    let weights = path.join("model.safetensors");
    if !weights.is_file() {
        bail!("{} not found", weights.display());
    }
    Ok(ResolvedModel {
        def: def.clone(),
        path,
        shape,
    })
}

struct CellContext<'a> {
    engine: &'a Result<LoadedEngine, String>,
    def: &'a EngineDef,
    model: &'a Result<ResolvedModel, String>,
    stall: Duration,
    limits: Option<&'a crate::roofline::Limits>,
}

type CellRun = (CellResult, Vec<IterationSpan>, Vec<RequestRecord>);

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
    };
    let finish = |status, reason: Option<String>, mut r: CellResult| {
        r.status = status;
        r.reason = reason;
        r.wall_s = t0.elapsed().as_secs_f64();
        r
    };
    let engine = match ctx.engine {
        Ok(e) => e,
        Err(e) => {
            let r = finish(
                Status::Failed,
                Some(format!("engine not loaded: {e}")),
                result,
            );
            return (r, vec![], vec![]);
        }
    };
    let model = match ctx.model {
        Ok(m) => m,
        Err(e) => {
            return (
                finish(Status::Failed, Some(e.clone()), result),
                vec![],
                vec![],
            )
        }
    };
    if hung.contains(&cell.engine) {
        let why = "engine hung in an earlier cell; its remaining cells were not run".to_string();
        return (finish(Status::Failed, Some(why), result), vec![], vec![]);
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
        return (
            finish(Status::Unsupported, Some(why), result),
            vec![],
            vec![],
        );
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
        return (
            finish(Status::Unsupported, Some(why), result),
            vec![],
            vec![],
        );
    }

    // Load (or reuse) the model.
    let key = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        cell.engine,
        cell.model,
        p.dtype,
        p.quantization,
        p.batch_policy.as_str(),
        p.max_batch
    );
    let mut memory = MemoryRecord::default();
    if let Some((status, why)) = failed_loads.get(&key) {
        // The same load already failed: do not retry it for every cell.
        return (finish(*status, Some(why.clone()), result), vec![], vec![]);
    }
    if current.as_ref().map(|l| &l.key) != Some(&key) {
        *current = None; // free the previous model before measuring
        let before = system::rss();
        let spec = ModelSpec {
            name: cell.model.clone().into(),
            architecture: model.def.architecture.clone().into(),
            path: model.path.display().to_string().into(),
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
                *current = Some(Loaded {
                    key: key.clone(),
                    model: m,
                    load_bytes: before
                        .zip(after)
                        .map(|(b, a)| a.rss_bytes as i64 - b.rss_bytes as i64),
                    load_time_ms,
                });
                memory.loaded_here = true;
            }
            Err(e) => {
                let status = if e.is_unsupported() {
                    Status::Unsupported
                } else {
                    Status::Failed
                };
                let why = format!("loading model '{}' failed: {e}", cell.model);
                failed_loads.insert(key, (status, why.clone()));
                return (finish(status, Some(why), result), vec![], vec![]);
            }
        }
    }
    let Some(loaded) = current.as_ref() else {
        return (
            finish(Status::Failed, Some("no model".into()), result),
            vec![],
            vec![],
        );
    };
    memory.load_bytes = loaded.load_bytes;
    memory.load_time_ms = Some(loaded.load_time_ms);

    let workload_key = format!(
        "{}/{}/{}",
        cell.scenario,
        cell.model,
        serde_json::to_string(&cell.params).unwrap_or_default()
    );
    let prompts = PromptGen::new(
        0,
        &workload_key,
        model.shape.vocab_size as u32,
        model.shape.eos_token_id,
    );
    let _ = loaded.model.memory(); // resets the engine's KV peak
    memory.peak_is_per_cell = system::reset_peak_rss();
    let start = system::rss();
    let exec = scenario::execute(&loaded.model, cell, &prompts, ctx.stall);
    let end = system::rss();
    let engine_mem = loaded.model.memory();
    memory.rss_start_bytes = start.map(|r| r.rss_bytes);
    memory.rss_end_bytes = end.map(|r| r.rss_bytes);
    memory.peak_rss_bytes = end.map(|r| r.peak_bytes);
    memory.weight_bytes = engine_mem.weight_bytes;
    memory.kv_cache_peak_bytes = engine_mem.kv_cache_peak_bytes;
    memory.kv_cache_reserved_bytes = engine_mem.kv_cache_reserved_bytes;
    result.memory = Some(memory);

    let records = exec.collector.take_records();
    let metrics = compute(
        &records,
        &exec.spans,
        model.shape.vocab_size,
        p.output_tokens,
    );
    let (status, reason) = match exec.outcome {
        Ok(()) if metrics.requests > 0 && metrics.completed == 0 => {
            let why = metrics
                .failure_reasons
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "no request completed".into());
            (Status::Failed, Some(format!("every request failed: {why}")))
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
    };
    if status == Status::Ok {
        // The limits are the CPU's: a cell on a GPU has no roof to be
        // measured against yet, so it gets no efficiency rather than a
        // wrong one.
        let on_gpu = ctx.def.options["device"]
            .as_str()
            .is_some_and(|d| !d.eq_ignore_ascii_case("cpu"));
        result.efficiency = ctx
            .limits
            .filter(|_| !on_gpu)
            .map(|l| efficiency(cell, &model.shape, &metrics, l));
        result.metrics = Some(metrics);
    }
    (finish(status, reason, result), exec.spans, records)
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
