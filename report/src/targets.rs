//! The targets' section: the grade (at the top of the executive summary),
//! each target's verdict with its worst cell, each engine's share, and a
//! recommendation per missed target naming the cells that missed it.
//! Everything comes from `summary.json`'s `targets` (graded by
//! `engine-matrix-grade` as the run went).

use super::table::Table;
use engine_matrix_results::targets::{TargetOutcome, Verdict};
use engine_matrix_results::Summary;

/// A value with its unit: `312.4 ms`, `1.73x`, `4.2%`.
fn value(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    match unit {
        "" => format!("{v:.digits$}"),
        "x" => format!("{v:.2}x"),
        "%" => format!("{v:.digits$}%"),
        u => format!("{v:.digits$} {u}"),
    }
}

/// The level in words, with the unit: `≤ 200 ms (acceptable ≤ 300)`.
fn level(t: &TargetOutcome) -> String {
    let unit = match t.unit.as_str() {
        "" => String::new(),
        u @ ("%" | "x") => u.into(),
        u => format!(" {u}"),
    };
    let mut s = format!("{} {}{unit}", t.def.metric, t.def.target.describe());
    if let Some(a) = &t.def.acceptable {
        s.push_str(&format!(" (acceptable {})", a.describe()));
    }
    s
}

/// `GRADE: GOOD — 8 of 9 targets met, 1 acceptable, 0 missed (profile cpu_only)`.
pub(crate) fn grade_line(summary: &Summary) -> Option<String> {
    let t = summary.targets.as_ref()?;
    let counted = t.total_targets;
    let acceptable = counted - t.targets_met - t.targets_missed;
    let profiles = if t.profiles.is_empty() {
        String::new()
    } else {
        format!(" (profiles: {})", t.profiles.join(", "))
    };
    let unjudged = t.targets.len() - counted;
    let unjudged = if unjudged > 0 {
        format!("; {unjudged} without a verdict")
    } else {
        String::new()
    };
    Some(match t.grade {
        Some(g) => format!(
            "Grade: **{}**: {} of {counted} targets met, {acceptable} acceptable, {} missed{unjudged}{profiles}.",
            g.as_str(),
            t.targets_met,
            t.targets_missed
        ),
        None => format!(
            "Grade: none: no target had a cell that measured it{unjudged}{profiles}."
        ),
    })
}

fn worst(t: &TargetOutcome) -> Option<&engine_matrix_results::targets::CellVerdict> {
    // The cell furthest outside the target (the worst verdict, then the
    // furthest value in the target's bad direction).
    let bad = |c: &&engine_matrix_results::targets::CellVerdict| {
        let v = c.value;
        let d = &t.def.target;
        let out = d.min.map_or(0.0, |m| (m - v).max(0.0)) + d.max.map_or(0.0, |m| (v - m).max(0.0));
        (c.verdict, out)
    };
    t.cells.iter().max_by(|a, b| {
        bad(a)
            .partial_cmp(&bad(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// One row per target.
pub(crate) fn table(summary: &Summary) -> Option<Table> {
    let t = summary.targets.as_ref()?;
    if t.targets.is_empty() {
        return None;
    }
    let rows = t
        .targets
        .iter()
        .map(|o| {
            let count = |v: Verdict| o.cells.iter().filter(|c| c.verdict == v).count();
            let worst = worst(o)
                .map(|c| format!("{} ({})", value(c.value, &o.unit), c.cell))
                .unwrap_or_else(|| "—".into());
            vec![
                o.def.name.clone(),
                level(o),
                scope(o),
                o.verdict
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_else(|| "n/a".into()),
                format!(
                    "{} / {} / {}",
                    count(Verdict::Met),
                    count(Verdict::Acceptable),
                    count(Verdict::Missed)
                ),
                worst,
                o.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Some(Table {
        headers: vec![
            "target",
            "level",
            "applies to",
            "status",
            "cells met / acceptable / missed",
            "worst cell",
            "note",
        ],
        rows,
    })
}

/// The column of [`table`] that holds the verdict.
pub(crate) const STATUS_COLUMN: usize = 3;

fn scope(o: &TargetOutcome) -> String {
    let d = &o.def;
    let mut parts = Vec::new();
    let list = |name: &str, v: &[String]| format!("{name} {}", v.join(", "));
    if !d.scenarios.is_empty() {
        parts.push(list("scenarios", &d.scenarios));
    }
    if !d.engines.is_empty() {
        parts.push(list("engines", &d.engines));
    }
    if !d.models.is_empty() {
        parts.push(list("models", &d.models));
    }
    if !d.kinds.is_empty() {
        let kinds: Vec<String> = d.kinds.iter().map(|k| k.as_str().to_string()).collect();
        parts.push(list("kinds", &kinds));
    }
    if !d.batch_sizes.is_empty() {
        let b: Vec<String> = d.batch_sizes.iter().map(u32::to_string).collect();
        parts.push(list("batch sizes", &b));
    }
    if parts.is_empty() {
        "all cells".into()
    } else {
        parts.join("; ")
    }
}

/// One row per engine: its share of the targets.
pub(crate) fn engines(summary: &Summary) -> Option<Table> {
    let t = summary.targets.as_ref()?;
    let rows: Vec<Vec<String>> = t
        .by_engine
        .iter()
        .filter(|e| e.total_targets > 0)
        .map(|e| {
            vec![
                e.engine.clone(),
                format!("{} of {}", e.targets_met, e.total_targets),
                e.targets_acceptable.to_string(),
                e.grade.map(|g| g.as_str().to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    (rows.len() > 1).then(|| Table {
        headers: vec!["engine", "targets met", "acceptable", "grade"],
        rows,
    })
}

/// A recommendation per missed target, naming the cells that missed it
/// (up to five) and the engines that met it everywhere.
pub(crate) fn recommendations(summary: &Summary) -> Vec<String> {
    let Some(t) = summary.targets.as_ref() else {
        return Vec::new();
    };
    t.targets
        .iter()
        .filter(|o| o.verdict == Some(Verdict::Missed))
        .map(missed)
        .collect()
}

fn missed(o: &TargetOutcome) -> String {
    let cells: Vec<_> = o
        .cells
        .iter()
        .filter(|c| c.verdict == Verdict::Missed)
        .collect();
    let named: Vec<String> = cells
        .iter()
        .take(5)
        .map(|c| format!("`{}` ({})", c.cell, value(c.value, &o.unit)))
        .collect();
    let more = if cells.len() > 5 {
        format!(" and {} more", cells.len() - 5)
    } else {
        String::new()
    };
    let mut engines: Vec<&str> = Vec::new();
    for c in &o.cells {
        if !engines.contains(&c.engine.as_str()) {
            engines.push(&c.engine);
        }
    }
    let good: Vec<&str> = engines
        .iter()
        .copied()
        .filter(|e| {
            o.cells
                .iter()
                .filter(|c| c.engine == *e)
                .all(|c| c.verdict == Verdict::Met)
        })
        .collect();
    let alternative = if good.is_empty() {
        " No engine met it on all its cells.".to_string()
    } else {
        format!(" Met on all its cells by: {}.", good.join(", "))
    };
    format!(
        "Target **{}** ({}) missed by {} of {} cells: {}{more}.{alternative}",
        o.def.name,
        level(o),
        cells.len(),
        o.cells.len(),
        named.join(", ")
    )
}

/// What the section says about how verdicts are drawn.
pub(crate) const NOTE: &str = "A target's status is its worst cell's; cells are ok cells in its scope, judged on their median over repeats. A cell without the figure (n/a) is not a miss, and a target no cell measured is left out of the grade. Grades: EXCELLENT ≥ 90% of targets met, GOOD 80–89%, ACCEPTABLE 60–79%, POOR below.";
