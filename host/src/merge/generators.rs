//! `engine-matrix merge` of load generators' run folders (`run
//! --load-shard I/N`): each serving cell becomes one cell holding every
//! generator's requests, on a common clock.
//!
//! # The common clock
//!
//! Each generator timed its requests on its own monotonic clock, from its
//! cell's epoch, and recorded the wall-clock time of that epoch. A
//! request's times plus its generator's epoch are wall-clock times; the
//! merged cell counts them from the earliest epoch. Every due time is the
//! shared start plus the schedule's offset on the generator's own wall
//! clock, so latency from the schedule (and every other latency) is still
//! measured on one machine's monotonic clock: clock error between the
//! generators never enters a latency. It does shift when one generator's
//! requests reached the server against another's, so the merged cell says
//! how large that error can be:
//!
//! * generators on one machine (the same kernel boot id) share one clock:
//!   the error is that of reading it (µs);
//! * generators whose clocks the system reports synchronized
//!   (`adjtimex`) are at most the sum of the two largest maximum errors
//!   apart;
//! * otherwise the error is unknown.
//!
//! When it is unknown or above `--max-clock-error-ms` (default
//! [`DEFAULT_MAX_CLOCK_ERROR_MS`]), the cell's `serving.generators.warnings`
//! say so, and the report shows them.
//!
//! # Lag and saturation
//!
//! Each generator's send lag is the time from a request's due time to its
//! leaving the generator: the host's lag plus the client's wait for a
//! connection (the http plugin's `queue_us`). A generator whose p99 lag is
//! above [`GeneratorFigures::SATURATED_P99_MS`] could not keep up with its
//! share, and the merged cell's arrival pattern is then not the schedule's:
//! a warning names it.
//!
//! # Refusals
//!
//! Folders that are not all generators of one plan (plan hash, count,
//! start, slot, build), a generator given twice, two generators that sent
//! the same arrival, and missing generators unless `--partial` (then the
//! server saw only part of the schedule, and every cell says which).

use super::{finish, MergeOptions, Merged, Read};
use crate::measure::RequestRecord;
use crate::output::{
    LoadMark, MergedShard, RawRequest, ResultLine, RunDir, ShardMark, Status, Summary,
};
use crate::stats::summarize;
use anyhow::{bail, Context, Result};
use engine_api::{Completion, EngineError, ErrorKind, FinishReason};
use engine_matrix_results::{GeneratorFigures, GeneratorRecord, IterationSpan, LoadGenerators};
use std::collections::{BTreeMap, HashMap};

/// The default of `merge --max-clock-error-ms`: a tenth of the gap between
/// arrivals at 10 requests per second.
pub const DEFAULT_MAX_CLOCK_ERROR_MS: f64 = 10.0;

pub(crate) fn merge(opts: &MergeOptions, mut read: Vec<Read>) -> Result<Merged> {
    for r in &read {
        if r.summary.load_shard.is_none() {
            bail!(
                "{}: not a load generator's run (no --load-shard), merged with generators' runs",
                r.dir.display()
            );
        }
    }
    read.sort_by_key(|r| mark(r).index);
    let missing = check(&read)?;
    let count = mark(&read[0]).count;
    if !missing.is_empty() && !opts.partial {
        bail!(
            "load generator{} {} of {count} missing: the server saw only part of the schedule (merge --partial merges the others and says so)",
            if missing.len() > 1 { "s" } else { "" },
            list(&missing)
        );
    }
    let first = &read[0];
    let text = std::fs::read_to_string(first.dir.join("matrix.yaml"))
        .with_context(|| format!("cannot read {}/matrix.yaml", first.dir.display()))?;
    let mut dir = RunDir::create(&opts.out, &text, &first.summary.system)?;
    let mut summary = first.summary.clone();
    summary.load_shard = None;
    summary.cells.clear();
    summary.command = std::env::args().collect();
    summary.merged = read.iter().map(merged_record).collect();
    (summary.started_at, summary.finished_at) = super::times(read.iter().map(|r| &r.summary));
    summary.complete = missing.is_empty() && read.iter().all(|r| r.summary.complete);
    summary.stopped = stopped(&read, &missing);

    // Cells in the order the generators ran them.
    let mut order: Vec<(String, u32)> = Vec::new();
    let mut parts: HashMap<(String, u32), Vec<(u32, ResultLine)>> = HashMap::new();
    for r in &mut read {
        let index = mark(r).index;
        for line in std::mem::take(&mut r.lines) {
            let key = (line.result.cell.id.clone(), line.result.repeat);
            if !parts.contains_key(&key) {
                order.push(key.clone());
            }
            parts.entry(key).or_default().push((index, line));
        }
    }
    for key in order {
        let Some(p) = parts.remove(&key) else {
            continue;
        };
        let line = cell(p, count, opts.max_clock_error_ms)?;
        dir.append(&line)?;
        summary
            .cells
            .push(crate::output::summary_cell(&line.result));
    }
    finish(dir, summary, missing, true)
}

fn mark(r: &Read) -> &LoadMark {
    r.summary
        .load_shard
        .as_ref()
        .expect("checked: every folder is a generator's")
}

/// The refusals; returns the missing generators.
fn check(read: &[Read]) -> Result<Vec<u32>> {
    let first = &read[0];
    let m0 = mark(first);
    let build = |s: &Summary| {
        format!(
            "engine-matrix {} ({})",
            s.system.engine_matrix_version, s.system.git_commit
        )
    };
    let mut seen: BTreeMap<u32, &Read> = BTreeMap::new();
    for r in read {
        let m = mark(r);
        let at = r.dir.display();
        if m.plan_sha256 != m0.plan_sha256 || m.count != m0.count {
            bail!(
                "{at}: load generator {}/{} of another plan than {} (generator {}/{}): the matrix, its options or its cells differ",
                m.index, m.count, first.dir.display(), m0.index, m0.count
            );
        }
        if m.start_unix_ns != m0.start_unix_ns || m.slot_s != m0.slot_s {
            bail!(
                "{at}: load generator {} started at {} with {} s slots, {} at {} with {} s: not one schedule",
                m.index,
                m.start_at,
                m.slot_s,
                first.dir.display(),
                m0.start_at,
                m0.slot_s
            );
        }
        if build(&r.summary) != build(&first.summary) {
            bail!(
                "{at}: load generator {} ran {}, {} ran {}: figures of different builds are not merged",
                m.index,
                build(&r.summary),
                first.dir.display(),
                build(&first.summary)
            );
        }
        if let Some(other) = seen.insert(m.index, r) {
            bail!(
                "{at}: load generator {} is given twice (also {})",
                m.index,
                other.dir.display()
            );
        }
    }
    Ok((0..m0.count).filter(|i| !seen.contains_key(i)).collect())
}

/// A generator's machine, as a merged shard's.
fn merged_record(r: &Read) -> MergedShard {
    let m = mark(r);
    MergedShard {
        mark: ShardMark {
            index: m.index,
            count: m.count,
            plan_sha256: m.plan_sha256.clone(),
            cells: r.lines.len(),
            plan_cells: r.lines.len(),
            machine_class: crate::run::shard::machine_class(&r.summary.system),
        },
        dir: r.dir.display().to_string(),
        system: r.summary.system.clone(),
        limits: r.summary.limits.clone(),
        started_at: r.summary.started_at.clone(),
        finished_at: r.summary.finished_at.clone(),
        complete: r.summary.complete,
        stopped: r.summary.stopped.clone(),
    }
}

fn stopped(read: &[Read], missing: &[u32]) -> Option<String> {
    let mut why: Vec<String> = read
        .iter()
        .filter_map(|r| {
            let i = mark(r).index;
            r.summary
                .stopped
                .as_ref()
                .map(|s| format!("load generator {i} stopped: {s}"))
                .or_else(|| {
                    (!r.summary.complete).then(|| format!("load generator {i} did not finish"))
                })
        })
        .collect();
    if !missing.is_empty() {
        why.push(format!(
            "merged without load generator{} {} (--partial)",
            if missing.len() > 1 { "s" } else { "" },
            list(missing)
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

fn list(xs: &[u32]) -> String {
    xs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// One merged cell from its generators' parts.
fn cell(parts: Vec<(u32, ResultLine)>, count: u32, bound_ms: f64) -> Result<ResultLine> {
    let first = &parts[0].1.result;
    let id = first.cell.id.clone();
    let mut result = first.clone();
    result.generator = None;
    result.memory = None;
    result.efficiency = None;
    result.wall_s = parts
        .iter()
        .map(|(_, l)| l.result.wall_s)
        .fold(0.0, f64::max);
    result.started_at = parts
        .iter()
        .map(|(_, l)| l.result.started_at.clone())
        .min()
        .unwrap_or_default();
    let have: Vec<u32> = parts.iter().map(|(i, _)| *i).collect();
    let missing: Vec<u32> = (0..count).filter(|i| !have.contains(i)).collect();

    let (records, spans) = common_clock(&parts, &id)?;
    let requests: Vec<RawRequest> = records.iter().map(RawRequest::from).collect();
    let failed: Vec<String> = parts
        .iter()
        .filter(|(_, l)| l.result.status != Status::Ok || l.result.generator.is_none())
        .map(|(i, l)| {
            format!(
                "load generator {i}: {}{}",
                l.result.status.as_str(),
                l.result
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !failed.is_empty() {
        result.status = Status::Failed;
        result.reason = Some(failed.join("; "));
        result.metrics = None;
        return Ok(line(result, spans, requests));
    }
    let Some(sv) = first.cell.params.serving.as_ref() else {
        bail!("cell {id}: a load generator's cell without serving settings");
    };
    let mut metrics = crate::measure::metrics::compute(&records, &spans, usize::MAX);
    metrics.out_of_vocab_tokens = parts
        .iter()
        .filter_map(|(_, l)| l.result.metrics.as_ref())
        .map(|m| m.out_of_vocab_tokens)
        .sum();
    let gm = first.metrics.as_ref();
    metrics.workload = gm.and_then(|m| m.workload.clone());
    // Every generator scraped the same server: the first's series.
    metrics.server = gm.and_then(|m| m.server.clone());
    let mut serving =
        crate::measure::serving::compute(sv, first.cell.params.duration_s, &records, &spans, &[]);
    serving.generators = Some(generators(&parts, count, missing, bound_ms));
    metrics.serving = Some(serving);
    result.metrics = Some(metrics);
    result.status = Status::Ok;
    result.reason = None;
    Ok(line(result, spans, requests))
}

fn line(
    result: engine_matrix_results::CellResult,
    spans: Vec<IterationSpan>,
    requests: Vec<RawRequest>,
) -> ResultLine {
    ResultLine {
        schema_version: crate::output::SCHEMA_VERSION,
        result,
        iterations: spans,
        requests,
    }
}

/// Every generator's requests and iteration spans, counted from the
/// earliest generator epoch. Refuses two generators that sent the same
/// arrival.
fn common_clock(
    parts: &[(u32, ResultLine)],
    id: &str,
) -> Result<(Vec<RequestRecord>, Vec<IterationSpan>)> {
    let gens: Vec<(u32, &ResultLine, &GeneratorRecord)> = parts
        .iter()
        .filter_map(|(i, l)| l.result.generator.as_ref().map(|g| (*i, l, g)))
        .collect();
    let base = gens.iter().map(|g| g.2.epoch_unix_ns).min().unwrap_or(0);
    let mut records = Vec::new();
    let mut spans: BTreeMap<(bool, u32), IterationSpan> = BTreeMap::new();
    let mut sender: HashMap<(u32, u64), u32> = HashMap::new();
    for (i, l, g) in gens {
        let shift = g.epoch_unix_ns - base;
        for r in &l.requests {
            if let (false, Some(a)) = (r.warmup, r.arrival) {
                if let Some(other) = sender.insert((r.iteration, a), i) {
                    bail!(
                        "cell {id}: load generators {other} and {i} both sent arrival {a} of measured iteration {}: they did not share one schedule",
                        r.iteration
                    );
                }
            }
            records.push(record(r, shift, records.len() as u64));
        }
        for s in &l.iterations {
            let (start, end) = (s.start_ns + shift, s.end_ns + shift);
            spans
                .entry((s.warmup, s.index))
                .and_modify(|m| {
                    m.start_ns = m.start_ns.min(start);
                    m.end_ns = m.end_ns.max(end);
                })
                .or_insert(IterationSpan {
                    index: s.index,
                    warmup: s.warmup,
                    start_ns: start,
                    end_ns: end,
                    // Each generator's own process: not the server's.
                    rss_bytes: None,
                });
        }
    }
    // Warmups first, as a single generator's spans come.
    let mut spans: Vec<IterationSpan> = spans.into_values().collect();
    spans.sort_by_key(|s| (!s.warmup, s.index));
    Ok((records, spans))
}

/// A raw request back as a record, `shift` ns later, with id `id`.
fn record(r: &RawRequest, shift: u64, id: u64) -> RequestRecord {
    let finish = match r.finish_reason.as_deref() {
        Some("eos") => FinishReason::Eos,
        Some("context_full") => FinishReason::ContextFull,
        _ => FinishReason::Length,
    };
    let completion = r.engine_generated_tokens.map(|n| Completion {
        request_id: id,
        prompt_tokens: r.prompt_tokens,
        generated_tokens: n,
        finish_reason: finish,
        queue_us: r.engine_queue_us.unwrap_or(0),
        prefill_us: r.engine_prefill_us.unwrap_or(0),
        decode_us: r.engine_decode_us.unwrap_or(0),
        decode_steps: r.engine_decode_steps.unwrap_or(0),
        cached_prompt_tokens: r.cached_prompt_tokens.into(),
    });
    RequestRecord {
        id,
        iteration: r.iteration,
        warmup: r.warmup,
        prompt_tokens: r.prompt_tokens,
        max_new_tokens: r.max_new_tokens,
        session: r.session,
        turn: r.turn,
        submit_ns: r.submit_ns + shift,
        scheduled_ns: r.scheduled_ns.map(|t| t + shift),
        arrival: r.arrival,
        token_ns: r.token_ns.iter().map(|t| t + shift).collect(),
        tokens: r.tokens.clone(),
        end_ns: r.end_ns.map(|t| t + shift),
        completion: completion.filter(|_| r.error.is_none()),
        error: r.error.as_deref().map(error),
    }
}

/// An error as written (`kind: message`) back as an engine error.
fn error(text: &str) -> EngineError {
    const KINDS: [ErrorKind; 6] = [
        ErrorKind::Unsupported,
        ErrorKind::InvalidModel,
        ErrorKind::InvalidArgument,
        ErrorKind::Io,
        ErrorKind::Runtime,
        ErrorKind::Panic,
    ];
    KINDS
        .iter()
        .find_map(|k| {
            text.strip_prefix(k.as_str())
                .and_then(|rest| rest.strip_prefix(": "))
                .map(|m| EngineError::new(*k, m))
        })
        .unwrap_or_else(|| EngineError::runtime(text))
}

/// The generators' figures, the clock bound and the warnings.
fn generators(
    parts: &[(u32, ResultLine)],
    count: u32,
    missing: Vec<u32>,
    bound_ms: f64,
) -> LoadGenerators {
    let figures: Vec<GeneratorFigures> = parts.iter().map(|(i, l)| figures(*i, l)).collect();
    let records: Vec<&GeneratorRecord> = parts
        .iter()
        .filter_map(|(_, l)| l.result.generator.as_ref())
        .collect();
    let clock_error_ms = clock_error_ms(&records);
    let mut warnings = Vec::new();
    match clock_error_ms {
        None => warnings.push(format!(
            "clock error unknown: {} not report a synchronized clock (adjtimex) and the generators run on different machines, so when one generator's requests reached the server against another's is not known (each latency is measured on one machine and is not affected)",
            unsynchronized(&figures)
        )),
        Some(e) if e > bound_ms => warnings.push(format!(
            "the generators' clocks may be up to {e:.1} ms apart, more than the {bound_ms} ms bound (merge --max-clock-error-ms): the arrival pattern the server saw may differ from the schedule by that much (each latency is measured on one machine and is not affected)"
        )),
        Some(_) => {}
    }
    for f in figures.iter().filter(|f| f.saturated) {
        let p99 = f.send_lag_ms.as_ref().map_or(0.0, |d| d.p99);
        warnings.push(format!(
            "load generator {} ({}) could not keep up with its share: p99 send lag {p99:.1} ms > {} ms, so the server saw fewer arrivals, later, than scheduled",
            f.index,
            f.host,
            GeneratorFigures::SATURATED_P99_MS
        ));
    }
    if !missing.is_empty() {
        warnings.push(format!(
            "load generator{} {} missing: the server saw only part of the schedule",
            if missing.len() > 1 { "s" } else { "" },
            list(&missing)
        ));
    }
    LoadGenerators {
        count,
        missing,
        generators: figures,
        clock_error_ms,
        clock_bound_ms: bound_ms,
        warnings,
    }
}

/// Which generators' clocks are not known synchronized, in words.
fn unsynchronized(figures: &[GeneratorFigures]) -> String {
    let which: Vec<String> = figures
        .iter()
        .filter(|f| f.clock.synchronized != Some(true))
        .map(|f| format!("{} ({})", f.index, f.host))
        .collect();
    match which.len() {
        1 => format!("load generator {} does", which[0]),
        _ => format!("load generators {} do", which.join(", ")),
    }
}

/// How far apart the generators' clocks can be (ms): the reading error
/// on one machine (one boot id), the sum of the two largest maximum
/// errors of synchronized clocks, else unknown.
fn clock_error_ms(records: &[&GeneratorRecord]) -> Option<f64> {
    let pairing = records
        .iter()
        .map(|g| g.epoch_pairing_ns)
        .max()
        .unwrap_or(0) as f64
        * 1e-6;
    let boot = records.first().and_then(|g| g.clock.boot_id.as_deref());
    if records.len() <= 1
        || (boot.is_some() && records.iter().all(|g| g.clock.boot_id.as_deref() == boot))
    {
        return Some(pairing);
    }
    let mut errors: Vec<u64> = records
        .iter()
        .map(|g| match g.clock.synchronized {
            Some(true) => g.clock.max_error_us,
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    errors.sort_unstable_by(|a, b| b.cmp(a));
    Some((errors[0] + errors.get(1).copied().unwrap_or(0)) as f64 * 1e-3 + pairing)
}

/// One generator's share: requests, send lag, saturation, clock.
fn figures(index: u32, l: &ResultLine) -> GeneratorFigures {
    let measured: Vec<&RawRequest> = l.requests.iter().filter(|r| !r.warmup).collect();
    let lag: Vec<f64> = measured
        .iter()
        .filter_map(|r| {
            let due = r.scheduled_ns?;
            let host = r.submit_ns.saturating_sub(due) as f64 * 1e-6;
            Some(host + r.engine_queue_us.unwrap_or(0) as f64 * 1e-3)
        })
        .collect();
    let late = lag
        .iter()
        .filter(|&&x| x > GeneratorFigures::LATE_MS)
        .count();
    let send_lag_ms = summarize(&lag);
    let saturated = send_lag_ms
        .as_ref()
        .is_some_and(|d| d.p99 > GeneratorFigures::SATURATED_P99_MS);
    let g = l.result.generator.as_ref();
    GeneratorFigures {
        index,
        host: g.map_or_else(|| "unknown".into(), |g| g.host.clone()),
        status: l.result.status.as_str().to_string(),
        sent: measured.len(),
        completed: measured
            .iter()
            .filter(|r| r.error.is_none() && r.end_ns.is_some())
            .count(),
        failed: measured.iter().filter(|r| r.error.is_some()).count(),
        send_lag_ms,
        late_fraction: if lag.is_empty() {
            0.0
        } else {
            late as f64 / lag.len() as f64
        },
        saturated,
        clock: g.map(|g| g.clock.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_matrix_results::ClockStatus;

    fn gen(boot: &str, synced: Option<bool>, max_error_us: Option<u64>) -> GeneratorRecord {
        GeneratorRecord {
            index: 0,
            count: 2,
            host: "h".into(),
            epoch_unix_ns: 0,
            epoch_pairing_ns: 2_000,
            starts_unix_ns: vec![],
            max_concurrency: None,
            clock: ClockStatus {
                source: "adjtimex".into(),
                synchronized: synced,
                offset_us: Some(0.0),
                max_error_us,
                est_error_us: None,
                boot_id: Some(boot.into()),
            },
        }
    }

    #[test]
    fn the_clock_bound_is_one_clock_synchronized_clocks_or_unknown() {
        let a = gen("x", None, None);
        let b = gen("x", Some(false), None);
        // One machine: one clock, whatever its sync state.
        assert_eq!(clock_error_ms(&[&a, &b]), Some(0.002));
        let c = gen("y", Some(true), Some(4_000));
        let d = gen("z", Some(true), Some(1_500));
        let e = gen("w", Some(true), Some(500));
        assert_eq!(clock_error_ms(&[&c, &d, &e]), Some(5.502));
        // One machine not synchronized among others: unknown.
        assert_eq!(clock_error_ms(&[&c, &d, &b]), None);
    }

    #[test]
    fn errors_come_back_with_their_kind() {
        let e = error("runtime: total timeout: 0.5 s");
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Runtime, "total timeout: 0.5 s")
        );
        assert_eq!(
            error("invalid argument: x").kind,
            ErrorKind::InvalidArgument
        );
        let odd = error("something else");
        assert_eq!(
            (odd.kind, odd.message.as_str()),
            (ErrorKind::Runtime, "something else")
        );
        // As the record writes it.
        assert_eq!(
            error(&EngineError::unsupported("no").to_string()).kind,
            ErrorKind::Unsupported
        );
    }
}
