//! The report's load-generator table (a serving cell merged from several
//! generators, `run --load-shard` then `merge`): per cell, each
//! generator's share of the requests, its send lag, whether it kept up,
//! and its clock; under it, every warning the merge raised (clock error
//! unknown or too large, a saturated generator, a missing one).

use super::analysis::Group;
use super::table::{f, Table};
use engine_matrix_results::LoadGenerators;

fn merged<'a>(groups: &'a [Group<'a>]) -> Vec<(&'a str, u32, &'a LoadGenerators)> {
    groups
        .iter()
        .flat_map(|g| {
            g.ok_runs().filter_map(move |r| {
                let s = r.metrics.as_ref()?.serving.as_ref()?.generators.as_ref()?;
                Some((g.cell().id.as_str(), r.repeat, s))
            })
        })
        .collect()
}

/// One row per merged cell and generator (`None`: no merged cell).
pub(crate) fn table(groups: &[Group]) -> Option<Table> {
    let cells = merged(groups);
    if cells.is_empty() {
        return None;
    }
    let mut rows = Vec::new();
    for (id, repeat, g) in cells {
        for x in &g.generators {
            let lag = x.send_lag_ms.as_ref();
            let clock = match (x.clock.source.as_str(), x.clock.synchronized) {
                ("adjtimex", Some(true)) => format!(
                    "synchronized, max error {} ms",
                    f(x.clock.max_error_us.map(|u| u as f64 * 1e-3), 1)
                ),
                ("adjtimex", _) => "not synchronized".into(),
                _ => "unknown".into(),
            };
            rows.push(vec![
                id.to_string(),
                repeat.to_string(),
                format!("{}/{}", x.index, g.count),
                x.host.clone(),
                x.sent.to_string(),
                x.completed.to_string(),
                x.failed.to_string(),
                f(lag.map(|d| d.p50), 1),
                f(lag.map(|d| d.p99), 1),
                f(lag.map(|d| d.max), 1),
                format!("{:.0}%", x.late_fraction * 100.0),
                if x.saturated { "SATURATED" } else { "yes" }.into(),
                clock,
            ]);
        }
        rows.push(vec![
            id.to_string(),
            repeat.to_string(),
            "clocks".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            match g.clock_error_ms {
                Some(e) => format!("at most {e:.3} ms apart (bound {} ms)", g.clock_bound_ms),
                None => format!("error unknown (bound {} ms)", g.clock_bound_ms),
            },
        ]);
    }
    Some(Table {
        headers: vec![
            "cell",
            "repeat",
            "generator",
            "host",
            "sent",
            "completed",
            "failed",
            "send lag p50 ms",
            "p99 ms",
            "max ms",
            "late",
            "kept up",
            "clock",
        ],
        rows,
    })
}

/// Every merged cell's warnings, as `cell: warning` lines.
pub(crate) fn warnings(groups: &[Group]) -> Vec<String> {
    merged(groups)
        .into_iter()
        .flat_map(|(id, repeat, g)| {
            g.warnings
                .iter()
                .map(move |w| format!("{id} (repeat {repeat}): {w}"))
        })
        .collect()
}

pub(crate) const NOTE: &str = "Each cell above was sent by several load generators, each every N-th arrival of one seeded schedule from a shared wall-clock start, and merged on a common clock. Send lag is from a request's due time to its leaving its generator (the generator's own lag plus its client's wait for a connection); a generator whose p99 lag exceeds 25 ms could not keep up with its share. Latencies are measured on each generator's own monotonic clock, so clock error between generators never enters them; it shifts only when one generator's requests reached the server against another's.";
