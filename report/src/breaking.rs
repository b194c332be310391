//! The breaking-point table: for each search of a scenario with
//! `breaking_point:` (a model, an engine, a workload, a repeat), the
//! levels it tried, the stable ones, the maximum stable concurrency (the
//! seeds' `max_sustainable_load`: every level up to it stable) and the
//! first level past a bound, with why.

use super::table::Table;
use engine_matrix_format::breaking::search_key;
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
            cells.sort_by_key(|c| c.cell.params.concurrency);
            let first = &cells[0].cell;
            let judged: Vec<(u32, bool, &str)> = cells
                .iter()
                .filter_map(|c| {
                    let s = c.stability.as_ref()?;
                    Some((c.cell.params.concurrency, s.stable, s.why.as_str()))
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
            vec![
                search,
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
                not_run.to_string(),
            ]
        })
        .collect();
    Some(Table {
        headers: vec![
            "search",
            "bounds",
            "levels tried",
            "stable levels",
            "max stable concurrency",
            "breaking point",
            "levels not run",
        ],
        rows,
    })
}

/// How to read the table.
pub(crate) const NOTE: &str = "A breaking-point search raises the concurrency in the order the scenario lists it; the first level past a bound is the breaking point and the levels above it are not run. The maximum stable concurrency is the highest level with every level up to it stable.";
