//! The breaking-point table: for each search of a scenario with
//! `breaking_point:` (a model, an engine, a workload, a repeat), the
//! levels it tried (concurrency or batch size), the stable ones, the
//! highest stable level (the seeds' `max_sustainable_load`: every level up
//! to it stable), the first level past a bound with why, and the memory
//! curve (peak RSS by level: the seeds' S5).

use super::table::Table;
use engine_matrix_format::breaking::{level, level_name, search_key};
use engine_matrix_results::{CellResult, Summary};

/// The table, when the run has breaking-point searches.
pub(crate) fn table(summary: &Summary) -> Option<Table> {
    let mut searches: Vec<(String, u32, Vec<&CellResult>)> = Vec::new();
    for c in summary
        .cells
        .iter()
        .filter(|c| c.cell.breaking_point.is_some())
    {
        let key = search_key(&c.cell);
        match searches
            .iter_mut()
            .find(|(k, r, _)| *k == key && *r == c.repeat)
        {
            Some((_, _, v)) => v.push(c),
            None => searches.push((key, c.repeat, vec![c])),
        }
    }
    if searches.is_empty() {
        return None;
    }
    let repeats = summary.repeats > 1;
    let rows = searches
        .into_iter()
        .map(|(_, repeat, mut cells)| {
            cells.sort_by_key(|c| level(&c.cell));
            let first = &cells[0].cell;
            let judged: Vec<(u32, bool, &str)> = cells
                .iter()
                .filter_map(|c| {
                    let s = c.stability.as_ref()?;
                    Some((level(&c.cell), s.stable, s.why.as_str()))
                })
                .collect();
            let stable: Vec<String> = judged
                .iter()
                .filter(|(_, ok, _)| *ok)
                .map(|(c, ..)| c.to_string())
                .collect();
            let broke = judged.iter().find(|(_, ok, _)| !ok);
            // Every level up to it stable.
            let max = judged
                .iter()
                .take_while(|(_, ok, _)| *ok)
                .last()
                .map(|(c, ..)| c.to_string());
            let not_run = cells.iter().filter(|c| c.stability.is_none()).count();
            let mut search = format!("{}/{}/{}", first.scenario, first.model, first.engine);
            if repeats {
                search.push_str(&format!(" (repeat {repeat})"));
            }
            let memory: Vec<String> = cells
                .iter()
                .filter_map(|c| {
                    let m = c.memory.as_ref()?;
                    let b = m.peak_rss_bytes.or(m.sampled_peak_rss_bytes)?;
                    Some(format!(
                        "{}: {:.0}",
                        level(&c.cell),
                        b as f64 / (1u64 << 20) as f64
                    ))
                })
                .collect();
            vec![
                search,
                level_name(first.kind).to_string(),
                first
                    .breaking_point
                    .map(|b| b.describe())
                    .unwrap_or_default(),
                judged
                    .iter()
                    .map(|(c, ..)| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if stable.is_empty() {
                    "none".into()
                } else {
                    stable.join(", ")
                },
                max.unwrap_or_else(|| "none".into()),
                broke.map_or("not reached".into(), |(c, _, why)| format!("{c}: {why}")),
                if memory.is_empty() {
                    "—".into()
                } else {
                    memory.join(", ")
                },
                not_run.to_string(),
            ]
        })
        .collect();
    Some(Table {
        headers: vec![
            "search",
            "level",
            "bounds",
            "levels tried",
            "stable levels",
            "max stable level",
            "breaking point",
            "peak RSS MiB by level",
            "levels not run",
        ],
        rows,
    })
}

/// How to read the table.
pub(crate) const NOTE: &str = "A breaking-point search raises the concurrency (or the batch size) in the order the scenario lists it; the first level past a bound, or whose cell failed (an out-of-memory kill fails only its cell), is the breaking point and the levels above it are not run. The highest stable level is the highest with every level up to it stable.";
