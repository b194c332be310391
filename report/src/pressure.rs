//! The resource-pressure table: each cell run with `pressure` beside its
//! twin without (the same id but for the `-p…` tag), and how much the
//! engine lost: output tokens/s and TTFT p50, with what the pressure child
//! did (CPU seconds, resident memory).

use super::analysis::{figure, Group, Metric};
use super::table::{f, Table};

/// The table, when the run has pressure cells.
pub(crate) fn table(groups: &[Group]) -> Option<Table> {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .filter_map(|g| {
            let c = g.cell();
            let p = c.params.pressure.as_ref()?;
            let suffix = format!("-p{}", p.tag());
            let twin_id = c.id.strip_suffix(&suffix)?;
            let twin = groups.iter().find(|o| o.cell().id == twin_id);
            let point = |g: &Group, m: Metric| figure(g, m).map(|x| x.est.point);
            let tok = point(g, Metric::OutputThroughput);
            let tok0 = twin.and_then(|t| point(t, Metric::OutputThroughput));
            let ttft = point(g, Metric::TtftP50);
            let ttft0 = twin.and_then(|t| point(t, Metric::TtftP50));
            let change = |a: Option<f64>, b: Option<f64>| {
                a.zip(b)
                    .filter(|(_, b)| *b > 0.0)
                    .map_or("—".into(), |(a, b)| {
                        format!("{:+.1}%", 100.0 * (a / b - 1.0))
                    })
            };
            let rec = g
                .ok_runs()
                .find_map(|r| r.memory.as_ref()?.pressure.clone());
            Some(vec![
                twin_id.to_string(),
                p.tag(),
                f(tok0, 1),
                f(tok, 1),
                change(tok, tok0),
                f(ttft0, 1),
                f(ttft, 1),
                change(ttft, ttft0),
                f(rec.as_ref().and_then(|r| r.cpu_seconds), 1),
                f(
                    rec.as_ref()
                        .and_then(|r| r.resident_bytes)
                        .map(|b| b as f64 / (1u64 << 20) as f64),
                    0,
                ),
            ])
        })
        .collect();
    (!rows.is_empty()).then_some(Table {
        headers: vec![
            "cell",
            "pressure",
            "out tok/s alone",
            "under pressure",
            "change",
            "TTFT p50 ms alone",
            "under pressure",
            "change",
            "child CPU s",
            "child RSS MiB",
        ],
        rows,
    })
}

/// How to read the table.
pub(crate) const NOTE: &str = "Pressure runs in a child process beside the engine for the whole cell: `cpuN` busy threads, `memG` GiB held resident. \"Alone\" is the same cell without it in this run. The child's CPU seconds show how much of the machine it took.";
