//! One retrieval cell: the data, the index (built once and reused by the
//! cells that share it), then passes of searches by a closed loop of
//! clients, recall against the exact neighbours, and the figures.
//!
//! Steps, each a function:
//!
//! 1. [`preflight`]: the engine is an index engine, builds the metric,
//!    searches from several threads when the cell asks for concurrency;
//! 2. [`ensure_data`]: the base vectors and queries (generated, or read
//!    from files and cut to the cell's sizes) and their exact neighbours
//!    (the file's own, or computed by the exact search and cached on
//!    disk); kept while the next cell uses the same data;
//! 3. [`ensure_index`]: the index of (engine, options, data, size, metric),
//!    built once; a build that failed fails the cells that need it
//!    without another try (a build that *crashed* the worker is
//!    remembered by the host, see the runner);
//! 4. [`search_passes`]: `warmup` passes, then `iterations` measured ones
//!    (or more, up to `min_duration_s`; none started after
//!    `max_duration_s`), each pass the whole query set in calls of
//!    `batch_size` queries taken by `concurrency` client threads from a
//!    shared counter;
//! 5. [`figures`]: recall@k (ann-benchmarks' definition, true distances
//!    recomputed from the vectors), latency per call, QPS per pass and
//!    overall.
//!
//! What is timed is the search call alone: the clients record the clock
//! before and after each call and copy the answer's ids out afterwards;
//! recall is computed after the pass.

use crate::matrix::retrieval::{RetrievalParams, VectorSource, VectorsDef};
use crate::matrix::Cell;
use crate::output::{CellResult, MemoryRecord, Status};
use crate::system;
use engine_api::index::{BuildSpec, IndexBox, IndexMetric};
use engine_matrix_plugins::LoadedIndexEngine;
use engine_matrix_results::retrieval::{BuildRecord, RetrievalMetrics};
use engine_matrix_retrieval::synthetic::{Mixture, Set};
use engine_matrix_retrieval::{exact, formats, recall, truth, Metric, Neighbours, Vectors};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What stays loaded between retrieval cells of one engine.
#[derive(Default)]
pub struct IndexState {
    data: Option<(String, Arc<Data>)>,
    index: Option<Built>,
    /// Builds that failed, by build key: their cells fail without a retry.
    failed_builds: HashMap<String, (Status, String)>,
}

impl IndexState {
    /// Frees the index and the data (another engine runs next).
    pub fn unload(&mut self) {
        self.index = None;
        self.data = None;
    }
}

/// A data set cut to one cell's sizes, with its exact neighbours.
struct Data {
    /// Shared with the next cell's data when only its queries, k or
    /// metric differ.
    base: Arc<Vectors>,
    /// [`base_key`] of `base`.
    base_key: String,
    queries: Vectors,
    truth: Neighbours,
    /// `computed`, `cached` or `file`.
    truth_source: &'static str,
}

struct Built {
    key: String,
    index: IndexBox,
    seconds: f64,
    threads: u32,
    rss_bytes: Option<i64>,
}

/// A retrieval cell's inputs.
pub struct Ctx<'a> {
    pub engine: Result<&'a LoadedIndexEngine, String>,
    /// The engine's build options (its `options:`), a JSON object.
    pub options: &'a serde_json::Value,
    pub vectors: Option<&'a VectorsDef>,
    /// Told the build key when a build starts, `None` when it ends.
    pub building: Option<Arc<BuildFn>>,
}

/// See [`Ctx::building`].
pub type BuildFn = dyn Fn(Option<&str>) + Send + Sync;

type Outcome<T> = Result<T, (Status, String)>;

/// Runs `cell`, filling `result` (whose status starts `failed`).
pub fn run(cell: &Cell, ctx: &Ctx<'_>, state: &mut IndexState, result: &mut CellResult) {
    let t0 = Instant::now();
    match run_steps(cell, ctx, state, result) {
        Ok(()) => {
            result.status = Status::Ok;
            result.reason = None;
        }
        Err((status, why)) => {
            result.status = status;
            result.reason = Some(why);
        }
    }
    result.wall_s = t0.elapsed().as_secs_f64();
}

fn run_steps(
    cell: &Cell,
    ctx: &Ctx<'_>,
    state: &mut IndexState,
    result: &mut CellResult,
) -> Outcome<()> {
    let (engine, params, def, metric) = preflight(cell, ctx)?;
    let data = ensure_data(cell, def, params, metric, state)?;
    let build_key = build_key(cell, ctx.options, params);
    let (built, built_here) = ensure_index(
        engine,
        ctx.options,
        params,
        &data,
        build_key,
        ctx.building.as_deref(),
        state,
    )?;
    let mut memory = MemoryRecord {
        loaded_here: built_here,
        load_time_ms: Some(built.seconds * 1e3),
        load_bytes: built.rss_bytes,
        ..MemoryRecord::default()
    };
    memory.peak_is_per_cell = system::reset_peak_rss();
    let start = system::rss();
    let sampler = crate::telemetry::Sampler::start(
        crate::telemetry::sampler::DEFAULT_INTERVAL,
        crate::telemetry::Sources::all(),
    );
    let passes = search_passes(cell, params, &built.index, &data.queries);
    let samples = sampler.stop();
    let end = system::rss();
    memory.rss_start_bytes = start.map(|r| r.rss_bytes);
    memory.rss_end_bytes = end.map(|r| r.rss_bytes);
    memory.peak_rss_bytes = end.map(|r| r.peak_bytes);
    memory.sampled_peak_rss_bytes = samples.peak_rss_bytes;
    memory.gpu =
        crate::output::GpuRecord::from_samples(&samples.gpu, &samples.gpu_peak_memory_bytes);
    let engine_mem = built.index.memory();
    memory.weight_bytes = if engine_mem.known {
        engine_mem.bytes
    } else {
        0
    };
    result.memory = Some(memory);
    let passes = passes?;
    let build = BuildRecord {
        key: built.key.clone(),
        built_here,
        seconds: built.seconds,
        threads: built.threads,
        engine_bytes: engine_mem.known.then_some(engine_mem.bytes),
        rss_bytes: built.rss_bytes,
        data_bytes: (data.base.as_slice().len() * 4) as u64,
    };
    result.retrieval = Some(figures(cell, params, metric, &data, &passes, build)?);
    Ok(())
}

/// Step 1: the cell's engine builds indexes of the cell's metric (and
/// searches from several threads, when the cell has several clients).
fn preflight<'a>(
    cell: &'a Cell,
    ctx: &Ctx<'a>,
) -> Outcome<(
    &'a LoadedIndexEngine,
    &'a RetrievalParams,
    &'a VectorsDef,
    Metric,
)> {
    let engine = ctx.engine.clone().map_err(|e| (Status::Failed, e))?;
    let params = cell.retrieval.as_ref().ok_or((
        Status::Failed,
        "not a retrieval cell (no retrieval parameters)".to_string(),
    ))?;
    let def = ctx.vectors.ok_or_else(|| {
        (
            Status::Failed,
            format!(
                "data set '{}' is not in the matrix's `vectors:`",
                cell.model
            ),
        )
    })?;
    let metric = Metric::parse(&params.metric)
        .ok_or_else(|| (Status::Failed, format!("unknown metric {}", params.metric)))?;
    let metrics: Vec<&str> = engine.info.metrics.iter().map(|m| m.as_str()).collect();
    if !metrics.contains(&params.metric.as_str()) {
        return Err((
            Status::Unsupported,
            format!(
                "engine '{}' builds indexes for metrics [{}], not {}",
                cell.engine,
                metrics.join(", "),
                params.metric
            ),
        ));
    }
    if cell.params.concurrency > 1 && !engine.info.concurrent_search {
        return Err((
            Status::Unsupported,
            format!(
                "engine '{}' cannot search from several threads at once (concurrency {})",
                cell.engine, cell.params.concurrency
            ),
        ));
    }
    Ok((engine, params, def, metric))
}

/// What identifies a cell's data: the base vectors, the queries, k and
/// the metric (the ground truth depends on all).
fn data_key(cell: &Cell, p: &RetrievalParams) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        base_key(cell, p),
        p.queries,
        p.k,
        p.metric
    )
}

/// What identifies the base vectors: the data set, its size and dimension.
fn base_key(cell: &Cell, p: &RetrievalParams) -> String {
    format!("{}\n{}\n{}", cell.model, p.index_size, p.dim)
}

/// What identifies an index: the engine and its options, the data, its
/// size and dimension, the metric and the build's threads.
pub fn build_key(cell: &Cell, options: &serde_json::Value, p: &RetrievalParams) -> String {
    format!(
        "{} {} on {} n={} d={} {} threads={}",
        cell.engine, options, cell.model, p.index_size, p.dim, p.metric, p.build_threads
    )
}

/// Step 2: the cell's data, reused when the last cell had the same.
fn ensure_data(
    cell: &Cell,
    def: &VectorsDef,
    p: &RetrievalParams,
    metric: Metric,
    state: &mut IndexState,
) -> Outcome<Arc<Data>> {
    let key = data_key(cell, p);
    if let Some((k, d)) = &state.data {
        if *k == key {
            return Ok(d.clone());
        }
    }
    // Other queries, k or metric over the same base: the base vectors (and
    // an index of them) are kept. Other base vectors: the last data and its
    // index are freed first (at 1M vectors each holds gigabytes).
    let bkey = base_key(cell, p);
    let keep = state
        .data
        .take()
        .map(|(_, d)| d)
        .filter(|d| d.base_key == bkey)
        .map(|d| d.base.clone());
    if keep.is_none() {
        state.index = None;
    }
    let data = Arc::new(load_data(def, p, metric, keep, bkey).map_err(|e| (Status::Failed, e))?);
    state.data = Some((key, data.clone()));
    Ok(data)
}

/// The data set's vectors at the cell's sizes and their exact neighbours.
/// `kept`: the cell's base vectors when an earlier cell loaded them.
fn load_data(
    def: &VectorsDef,
    p: &RetrievalParams,
    metric: Metric,
    kept: Option<Arc<Vectors>>,
    base_key: String,
) -> Result<Data, String> {
    let threads = build_threads(p);
    let cache = engine_matrix_synthetic::cache_dir().join("retrieval");
    match &def.source {
        VectorSource::Synthetic {
            clusters,
            spread,
            seed,
        } => {
            let mix = Mixture {
                dim: p.dim as usize,
                clusters: *clusters as usize,
                spread: *spread as f32,
                seed: *seed,
            };
            let base =
                kept.unwrap_or_else(|| Arc::new(mix.generate(Set::Base, p.index_size as usize)));
            let queries = mix.generate(Set::Queries, p.queries as usize);
            let key = format!(
                "{}-{}",
                mix.key(Set::Base, base.len()),
                mix.key(Set::Queries, queries.len())
            );
            let (truth, source) =
                truth::ground_truth(&cache, &key, &base, &queries, p.k as usize, metric, threads)
                    .map_err(|e| format!("ground truth: {e}"))?;
            Ok(Data {
                base,
                base_key,
                queries,
                truth,
                truth_source: source_name(source),
            })
        }
        VectorSource::Files {
            base,
            queries,
            truth,
        } => {
            let limit = (p.index_size > 0).then_some(p.index_size as usize);
            let base_v = match kept {
                Some(b) => b,
                None => Arc::new(formats::read_vectors(base, limit).map_err(|e| e.to_string())?),
            };
            if limit.is_some_and(|n| base_v.len() < n) {
                return Err(format!(
                    "{}: {} vectors, fewer than the index_size of {}",
                    base.display(),
                    base_v.len(),
                    p.index_size
                ));
            }
            let queries_v = formats::read_vectors(queries, Some(p.queries as usize))
                .map_err(|e| e.to_string())?;
            formats::check_dim(queries, &queries_v, base_v.dim()).map_err(|e| e.to_string())?;
            // A file's ground truth is for its whole base set: a prefix
            // has other neighbours, so it is computed then.
            let whole = p.index_size == 0 || whole_file(base, base_v.len());
            let (neighbours, source) = match truth.as_ref().filter(|_| whole) {
                Some(t) => (file_truth(t, &base_v, &queries_v, p.k, metric)?, "file"),
                None => {
                    let key = file_key(base, queries, base_v.len(), queries_v.len());
                    let (n, s) = truth::ground_truth(
                        &cache,
                        &key,
                        &base_v,
                        &queries_v,
                        p.k as usize,
                        metric,
                        threads,
                    )
                    .map_err(|e| format!("ground truth: {e}"))?;
                    (n, source_name(s))
                }
            };
            Ok(Data {
                base: base_v,
                base_key,
                queries: queries_v,
                truth: neighbours,
                truth_source: source,
            })
        }
    }
}

fn source_name(s: truth::Source) -> &'static str {
    match s {
        truth::Source::Cached => "cached",
        truth::Source::Computed => "computed",
    }
}

/// Whether `n` vectors are all of `path` (read again with no limit would
/// give no more): its size says, for the fixed-size record formats.
fn whole_file(path: &std::path::Path, n: usize) -> bool {
    formats::read_vectors(path, Some(n + 1)).is_ok_and(|v| v.len() == n)
}

/// A cache key for ground truth computed over files: their names, sizes
/// and modification times, and the counts used.
fn file_key(base: &std::path::Path, queries: &std::path::Path, n: usize, q: usize) -> String {
    let stamp = |p: &std::path::Path| {
        let m = std::fs::metadata(p).ok();
        let len = m.as_ref().map_or(0, |m| m.len());
        let mtime = m
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{stem}-{len}-{mtime}")
    };
    format!("file-{}-n{n}-{}-q{q}", stamp(base), stamp(queries))
}

/// A file's ground truth with its distances recomputed (recall needs the
/// k-th true distance).
fn file_truth(
    path: &std::path::Path,
    base: &Vectors,
    queries: &Vectors,
    k: u32,
    metric: Metric,
) -> Result<Neighbours, String> {
    let t = formats::read_truth(path, k as usize).map_err(|e| e.to_string())?;
    let k = k as usize;
    if t.ids.len() / k < queries.len() {
        return Err(format!(
            "{}: ground truth for {} queries, fewer than the {} used",
            path.display(),
            t.ids.len() / k,
            queries.len()
        ));
    }
    let ids: Vec<u32> = t.ids[..queries.len() * k].to_vec();
    let mut distances = Vec::with_capacity(ids.len());
    for (q, row) in ids.chunks_exact(k).enumerate() {
        for &id in row {
            if id as usize >= base.len() {
                return Err(format!(
                    "{}: query {q}: neighbour {id} is past the {} base vectors",
                    path.display(),
                    base.len()
                ));
            }
            distances.push(exact::distance(
                metric,
                queries.row(q),
                base.row(id as usize),
            ));
        }
    }
    Ok(Neighbours { k, ids, distances })
}

/// Threads a build (and the ground truth) may use.
fn build_threads(p: &RetrievalParams) -> usize {
    if p.build_threads > 0 {
        p.build_threads as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Step 3: the cell's index, built unless the last cell built the same.
/// Returns it and whether this cell built it.
fn ensure_index<'s>(
    engine: &LoadedIndexEngine,
    options: &serde_json::Value,
    p: &RetrievalParams,
    data: &Data,
    key: String,
    building: Option<&BuildFn>,
    state: &'s mut IndexState,
) -> Outcome<(&'s Built, bool)> {
    if let Some(failed) = state.failed_builds.get(&key) {
        return Err(failed.clone());
    }
    let reuse = state.index.as_ref().is_some_and(|b| b.key == key);
    if !reuse {
        state.index = None; // free the last index before building
        let threads = build_threads(p) as u32;
        let metric = IndexMetric::parse(&p.metric).unwrap_or(IndexMetric::L2);
        let spec = BuildSpec {
            dim: data.base.dim() as u32,
            metric,
            threads,
            options_json: options.to_string().into(),
        };
        if let Some(f) = building {
            f(Some(&key));
        }
        let before = system::rss();
        let t = Instant::now();
        let built = engine
            .engine
            .build(data.base.as_slice().into(), &spec, BuildLog::boxed(&key))
            .into_result();
        let seconds = t.elapsed().as_secs_f64();
        let after = system::rss();
        if let Some(f) = building {
            f(None);
        }
        match built {
            Ok(index) => {
                state.index = Some(Built {
                    key: key.clone(),
                    index,
                    seconds,
                    threads,
                    rss_bytes: before
                        .zip(after)
                        .map(|(b, a)| a.rss_bytes as i64 - b.rss_bytes as i64),
                });
            }
            Err(e) => {
                let status = if e.is_unsupported() {
                    Status::Unsupported
                } else {
                    Status::Failed
                };
                let why = format!("building the index failed: {e}");
                state.failed_builds.insert(key, (status, why.clone()));
                return Err((status, why));
            }
        }
    }
    match state.index.as_ref() {
        Some(b) => Ok((b, !reuse)),
        None => Err((Status::Failed, "no index".into())),
    }
}

/// Reports a build's progress on stderr (a worker's log,
/// `workers/ENGINE.log`): at most one line per 10% of the vectors or per
/// 30 s, so that a build of many minutes shows how far it is.
struct BuildLog {
    key: String,
    start: Instant,
    /// The share reported last (in tenths) and when.
    last: std::sync::Mutex<(u64, Instant)>,
}

impl BuildLog {
    fn boxed(key: &str) -> engine_api::index::ProgressBox {
        let now = Instant::now();
        engine_api::index::ProgressFfi_TO::from_value(
            BuildLog {
                key: key.to_string(),
                start: now,
                last: std::sync::Mutex::new((0, now)),
            },
            engine_api::abi_stable::sabi_trait::TD_Opaque,
        )
    }
}

impl engine_api::index::ProgressFfi for BuildLog {
    fn added(&self, done: u64, total: u64) {
        let tenth = (done * 10).checked_div(total).unwrap_or(0);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if tenth > last.0 || last.1.elapsed() >= Duration::from_secs(30) {
            *last = (tenth, Instant::now());
            eprintln!(
                "engine-matrix: building index {}: {done} of {total} vectors added ({:.0}%, {:.0} s)",
                self.key,
                done as f64 * 100.0 / total.max(1) as f64,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// One pass over the query set.
struct Pass {
    warmup: bool,
    seconds: f64,
    /// Per search call, ns.
    latencies_ns: Vec<u64>,
    /// Each answered query's ids (None: not reached before the deadline).
    found: Vec<Option<Vec<u64>>>,
}

/// Step 4: the warm-up and measured passes.
fn search_passes(
    cell: &Cell,
    p: &RetrievalParams,
    index: &IndexBox,
    queries: &Vectors,
) -> Outcome<Vec<Pass>> {
    let params = serde_json::Value::Object(p.search.clone()).to_string();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(cell.max_duration_s.max(0.001));
    let mut passes = Vec::new();
    for _ in 0..cell.warmup {
        passes.push(one_pass(cell, p, index, queries, &params, true, deadline)?);
    }
    let measure_from = Instant::now();
    let mut measured = 0u32;
    while measured < cell.iterations.max(1)
        || measure_from.elapsed().as_secs_f64() < cell.min_duration_s
    {
        if measured > 0 && Instant::now() >= deadline {
            break;
        }
        passes.push(one_pass(cell, p, index, queries, &params, false, deadline)?);
        measured += 1;
    }
    Ok(passes)
}

/// One client's pass: its call latencies (ns) and the answers (query
/// index, ids).
type ClientPass = (Vec<u64>, Vec<(usize, Vec<u64>)>);

/// `concurrency` clients take calls of `batch_size` queries from a shared
/// counter until the query set (or the time) runs out.
fn one_pass(
    cell: &Cell,
    p: &RetrievalParams,
    index: &IndexBox,
    queries: &Vectors,
    params: &str,
    warmup: bool,
    deadline: Instant,
) -> Outcome<Pass> {
    let n = queries.len();
    let batch = cell.params.batch_size.max(1) as usize;
    let clients = cell.params.concurrency.max(1) as usize;
    let dim = queries.dim();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let t0 = Instant::now();
    let per_client: Vec<Result<ClientPass, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::new();
                    let mut answers = Vec::new();
                    loop {
                        if failed.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let first = next.fetch_add(batch, Ordering::Relaxed);
                        if first >= n {
                            break;
                        }
                        let last = (first + batch).min(n);
                        let slice = &queries.as_slice()[first * dim..last * dim];
                        let t = Instant::now();
                        let r = index.search(slice.into(), p.k, params.into()).into_result();
                        let ns = t.elapsed().as_nanos() as u64;
                        match r {
                            Ok(r) => {
                                lat.push(ns);
                                let k = r.k as usize;
                                for (i, q) in (first..last).enumerate() {
                                    let ids = r
                                        .ids
                                        .get(i * k..(i + 1) * k)
                                        .map(|s| s.to_vec())
                                        .unwrap_or_default();
                                    answers.push((q, ids));
                                }
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(format!("search failed: {e}"));
                            }
                        }
                    }
                    Ok((lat, answers))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a search client panicked".into()))
            })
            .collect()
    });
    let seconds = t0.elapsed().as_secs_f64();
    let mut pass = Pass {
        warmup,
        seconds,
        latencies_ns: Vec::new(),
        found: vec![None; n],
    };
    for c in per_client {
        let (lat, answers) = c.map_err(|e| (Status::Failed, e))?;
        pass.latencies_ns.extend(lat);
        for (q, ids) in answers {
            pass.found[q] = Some(ids);
        }
    }
    Ok(pass)
}

/// Step 5: the cell's figures from its measured passes.
fn figures(
    cell: &Cell,
    p: &RetrievalParams,
    metric: Metric,
    data: &Data,
    passes: &[Pass],
    build: BuildRecord,
) -> Outcome<RetrievalMetrics> {
    let measured: Vec<&Pass> = passes.iter().filter(|x| !x.warmup).collect();
    let k = p.k as usize;
    let mut recalls = Vec::new();
    for pass in &measured {
        for (q, found) in pass.found.iter().enumerate() {
            if let Some(ids) = found {
                let kth = data.truth.distances_of(q)[k - 1];
                recalls.push(recall::query_recall(
                    metric,
                    &data.base,
                    data.queries.row(q),
                    kth,
                    ids,
                    k,
                    recall::EPSILON,
                ));
            }
        }
    }
    if recalls.is_empty() {
        return Err((
            Status::Failed,
            format!(
                "no query was answered within max_duration_s ({} s)",
                cell.max_duration_s
            ),
        ));
    }
    let answered = recalls.len();
    let lat_ms: Vec<f64> = measured
        .iter()
        .flat_map(|x| x.latencies_ns.iter().map(|ns| *ns as f64 / 1e6))
        .collect();
    let latency_ms = engine_matrix_stats::stats::summarize(&lat_ms)
        .ok_or((Status::Failed, "no search call was measured".to_string()))?;
    let duration_s: f64 = measured.iter().map(|x| x.seconds).sum();
    let per_pass_qps = measured
        .iter()
        .map(|x| x.found.iter().filter(|f| f.is_some()).count() as f64 / x.seconds.max(1e-9))
        .collect();
    Ok(RetrievalMetrics {
        index_size: data.base.len() as u64,
        dim: data.base.dim() as u32,
        metric: p.metric.clone(),
        k: p.k,
        queries: data.queries.len() as u32,
        batch_size: cell.params.batch_size,
        concurrency: cell.params.concurrency,
        search: serde_json::Value::Object(p.search.clone()),
        build,
        recall: recalls.iter().sum::<f64>() / answered as f64,
        recall_min: recalls.iter().copied().fold(f64::INFINITY, f64::min),
        queries_below_half: recalls.iter().filter(|r| **r < 0.5).count() as f64 / answered as f64,
        latency_ms,
        qps: answered as f64 / duration_s.max(1e-9),
        passes: measured.len() as u32,
        calls: lat_ms.len() as u64,
        duration_s,
        per_pass_qps,
        truth: data.truth_source.to_string(),
    })
}
