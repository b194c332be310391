//! `run --load-shard I/N --start-at TIME`: one of N load generators that
//! together drive one server with one arrival schedule.
//!
//! Every generator runs the same plan (the same matrix and options: the
//! plan hash, as `--shard`'s, is checked by `merge`). In each serving
//! cell, generator I sends arrivals I, I+N, I+2N, ... of the schedule a
//! single generator would send (the same seed, so the same times and the
//! same prompts), so that together they send the whole schedule. They
//! meet on the wall clock: measured iteration `q` of the run (counted
//! over the cells in run order) starts at `start_at + q × slot_s` on
//! every generator; warm-ups and model loads happen in the time before
//! it. A generator that is not ready at its slot's start sends late, and
//! its send lag says so.
//!
//! What may be split, and why the rest is refused before anything runs:
//!
//! * open-loop `serving` cells only; their number of measured iterations
//!   is the scenario's `iterations` (`min_duration_s` and `max_duration_s`
//!   would let generators disagree on it);
//! * not `load: sweep` (its next rate depends on every generator's
//!   results) nor `request_rate: sustainable` (a sweep's answer);
//! * engines that reach a server (`http`) and do not `launch:` it: an
//!   in-process engine, or a server each generator starts, is not one
//!   server under one load;
//! * `max_concurrency` is the cell's total: each generator gets its share
//!   (the remainder to the lowest indexes), so at least one each.
//!
//! The default slot is the longest measured iteration's schedule span
//! plus [`DRAIN_S`] rounded up to a second; a trace's span is its file's,
//! which is read only by the cell, so a run with a trace and more than
//! one measured iteration needs `--slot-s`.

use crate::matrix::shard::Shard;
use crate::matrix::{Cell, EngineDef, ScenarioKind};
pub use crate::measure::serving::LoadJob;
use crate::measure::serving::{schedule, schedule_seed, Load, Rate};
use crate::output::LoadMark;
use anyhow::{bail, Result};
use std::collections::HashMap;

/// Seconds left after the longest schedule for its requests to finish
/// before the next slot (the default slot).
pub const DRAIN_S: f64 = 30.0;

/// What `run` was asked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadShardOptions {
    pub shard: Shard,
    /// The shared start, ns since the Unix epoch.
    pub start_unix_ns: u64,
    /// Seconds between measured iterations (`None`: the default).
    pub slot_s: Option<f64>,
}

/// The generator's plan: its run folder's mark and each (cell id,
/// repetition)'s job.
pub(crate) struct LoadPlan {
    pub mark: LoadMark,
    pub jobs: HashMap<(String, u32), LoadJob>,
}

/// Checks that every cell can be split and gives each its slots.
/// `order`: the cells and repetitions in run order.
pub(crate) fn plan(
    order: &[(&Cell, u32)],
    engines: &[EngineDef],
    plan_sha256: String,
    opts: &LoadShardOptions,
) -> Result<LoadPlan> {
    let Shard { index, count } = opts.shard;
    let mut span: f64 = 0.0;
    let mut trace = false;
    let mut measured = 0usize;
    for (cell, _) in order {
        check(cell, engines, count)?;
        let (s, is_trace) = schedule_span(cell);
        span = span.max(s);
        trace |= is_trace;
        measured += cell.iterations.max(1) as usize;
    }
    let slot_s = match opts.slot_s {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => bail!("--slot-s {s}: must be a positive number of seconds"),
        None if trace && measured > 1 => bail!(
            "--load-shard: a trace's span is known only once it is read, and this run has {measured} measured iterations: give --slot-s, the seconds from one iteration's start to the next's"
        ),
        None => (span + DRAIN_S).ceil(),
    };
    let slot_ns = (slot_s * 1e9).round() as u64;
    let mut jobs = HashMap::new();
    let mut q = 0u64;
    for (cell, repeat) in order {
        let n = cell.iterations.max(1) as u64;
        let starts = (q..q + n)
            .map(|k| opts.start_unix_ns + k * slot_ns)
            .collect();
        q += n;
        let max_concurrency = cell
            .params
            .serving
            .as_ref()
            .and_then(|s| s.max_concurrency)
            .map(|m| share(m, index, count));
        jobs.insert(
            (cell.id.clone(), *repeat),
            LoadJob {
                index,
                count,
                starts_unix_ns: starts,
                max_concurrency,
            },
        );
    }
    let mark = LoadMark {
        index,
        count,
        plan_sha256,
        start_at: crate::clock::format_unix_ns(opts.start_unix_ns),
        start_unix_ns: opts.start_unix_ns,
        slot_s,
        host: crate::system::collect_hostname(),
    };
    Ok(LoadPlan { mark, jobs })
}

/// Generator `index`'s share of `total` (the remainder to the first).
pub fn share(total: u32, index: u32, count: u32) -> u32 {
    total / count + u32::from(index < total % count)
}

/// Why `cell` cannot be split among `count` generators, if it cannot.
fn check(cell: &Cell, engines: &[EngineDef], count: u32) -> Result<()> {
    let id = &cell.id;
    if cell.kind != ScenarioKind::Serving {
        bail!(
            "--load-shard: cell {id} is a {} cell; load generators drive open-loop serving cells only (run the others without --load-shard, or --only the engines of a serving matrix)",
            cell.kind.as_str()
        );
    }
    let Some(sv) = cell.params.serving.as_ref() else {
        bail!("--load-shard: cell {id} has no serving settings");
    };
    if sv.load == Load::Sweep {
        bail!(
            "--load-shard: cell {id} is a sweep: each rate it tries depends on every generator's results, which no generator has while it runs; find the sustainable rate on one generator, then split a sustained load at it"
        );
    }
    if sv.request_rate == Rate::Sustainable {
        bail!(
            "--load-shard: cell {id} runs at request_rate: sustainable, a sweep's answer; give the rate"
        );
    }
    if let Some(m) = sv.max_concurrency {
        if m < count {
            bail!(
                "--load-shard: cell {id}: max_concurrency {m} cannot be shared among {count} generators (each needs at least 1)"
            );
        }
    }
    let Some(def) = engines.iter().find(|e| e.name == cell.engine) else {
        bail!("--load-shard: cell {id}: no engine '{}'", cell.engine);
    };
    if def.plugin != "http" {
        bail!(
            "--load-shard: engine '{}' (plugin {}) runs inside each generator, so N generators would measure N engines; load generators share one server, reached through the http plugin",
            def.name,
            def.plugin
        );
    }
    if def.launch.is_some() {
        bail!(
            "--load-shard: engine '{}' launches its server, so each generator would start its own; start the server once and give every generator its base_url",
            def.name
        );
    }
    Ok(())
}

/// The longest measured iteration's schedule span (s), and whether the
/// cell replays a trace (whose span is unknown here).
fn schedule_span(cell: &Cell) -> (f64, bool) {
    let p = &cell.params;
    if p.dataset
        .as_ref()
        .is_some_and(|d| d.kind == crate::matrix::dataset::DatasetKind::Trace)
    {
        return (0.0, true);
    }
    if p.duration_s > 0.0 {
        return (p.duration_s, false);
    }
    let Some(sv) = p.serving.as_ref() else {
        return (0.0, false);
    };
    let seed = schedule_seed(cell);
    let span = (0..cell.iterations.max(1))
        .map(|k| {
            schedule(sv, sv.rate(), 0.0, p.requests, seed ^ u64::from(k))
                .last()
                .copied()
                .unwrap_or(0.0)
        })
        .fold(0.0, f64::max);
    (span, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    const BASE: &str = "name: t\nmodels: [{name: m, weights: synthetic, config: tiny}]\n";

    fn cells(text: &str) -> (Matrix, Vec<Cell>) {
        let m = Matrix::parse(text, std::path::Path::new("m.yaml")).unwrap();
        let c = m.cells(false);
        (m, c)
    }

    fn opts(index: u32, count: u32) -> LoadShardOptions {
        LoadShardOptions {
            shard: Shard { index, count },
            start_unix_ns: 1_000_000_000_000,
            slot_s: None,
        }
    }

    #[test]
    fn shares_of_a_concurrency_add_up() {
        for total in 3..20 {
            for count in 1..=total.min(7) {
                let sum: u32 = (0..count).map(|i| share(total, i, count)).sum();
                assert_eq!(sum, total);
                assert!((0..count).all(|i| share(total, i, count) >= 1));
            }
        }
    }

    #[test]
    fn slots_follow_the_run_order_and_the_longest_schedule() {
        let text = format!(
            "{BASE}engines: [{{name: s, plugin: http, options: {{base_url: 'http://127.0.0.1:1'}}}}]\n\
             scenarios:\n\
             - {{name: a, kind: serving, iterations: 2, request_rate: 4, duration_s: 5, max_concurrency: 5}}\n\
             - {{name: b, kind: serving, iterations: 1, request_rate: 2, requests: 10, arrival: constant}}\n"
        );
        let (m, c) = cells(&text);
        let order: Vec<(&Cell, u32)> = c.iter().map(|c| (c, 0)).collect();
        let p = plan(&order, &m.engines, "h".into(), &opts(1, 3)).unwrap();
        // The longest: 5 s (b's 10 constant arrivals at 2/s span 4.5 s).
        assert_eq!(p.mark.slot_s, 35.0);
        let a = &p.jobs[&(c[0].id.clone(), 0)];
        let b = &p.jobs[&(c[1].id.clone(), 0)];
        let s0 = 1_000_000_000_000u64;
        assert_eq!(a.starts_unix_ns, vec![s0, s0 + 35_000_000_000]);
        assert_eq!(b.starts_unix_ns, vec![s0 + 70_000_000_000]);
        assert_eq!(a.max_concurrency, Some(2));
        assert_eq!(b.max_concurrency, None);
        assert_eq!((a.index, a.count), (1, 3));
    }

    #[test]
    fn what_cannot_be_split_is_refused_by_name() {
        let http = "{name: s, plugin: http, options: {base_url: 'http://127.0.0.1:1'}}";
        let refused = |engines: &str, scenario: &str, want: &str| {
            let text = format!("{BASE}engines: [{engines}]\nscenarios:\n- {scenario}\n");
            let (m, c) = cells(&text);
            let order: Vec<(&Cell, u32)> = c.iter().map(|c| (c, 0)).collect();
            let e = plan(&order, &m.engines, "h".into(), &opts(0, 3))
                .err()
                .unwrap_or_else(|| panic!("{scenario} was not refused"))
                .to_string();
            assert!(e.contains(want), "{e}");
        };
        refused(http, "{name: l, kind: latency}", "is a latency cell");
        refused(
            http,
            "{name: w, kind: serving, load: sweep, slo_ttft_ms: 100, request_rate: 2}",
            "is a sweep",
        );
        refused(
            http,
            "{name: w, kind: serving, request_rate: 2, max_concurrency: 2}",
            "max_concurrency 2 cannot be shared among 3",
        );
        refused(
            "{name: c, plugin: candle}",
            "{name: w, kind: serving, request_rate: 2}",
            "engine 'c' (plugin candle) runs inside each generator",
        );
        refused(
            "{name: s, plugin: http, options: {base_url: 'http://127.0.0.1:${PORT}'}, launch: {command: [x]}}",
            "{name: w, kind: serving, request_rate: 2}",
            "launches its server",
        );
    }
}
