//! The Machines section of a merged run (`engine-matrix merge`): each
//! shard, the machine it ran on and its class label. When the classes
//! differ, every engine is labelled `NAME @ CLASS` and figures are
//! compared only within a class (see `engine_matrix_results::machine_class`).

use crate::table::Table;
use engine_matrix_results::Summary;

/// One row per shard; `None` for a run that is not merged.
pub(crate) fn table(s: &Summary) -> Option<Table> {
    if s.merged.is_empty() {
        return None;
    }
    let marks: Vec<_> = s.merged.iter().map(|m| &m.mark).collect();
    let labels = engine_matrix_results::run::class_labels(&marks);
    Some(Table {
        headers: vec![
            "shard", "class", "host", "machine", "cells", "started", "finished", "status",
        ],
        rows: s
            .merged
            .iter()
            .zip(labels)
            .map(|(m, label)| {
                vec![
                    format!("{}/{}", m.mark.index, m.mark.count),
                    label,
                    m.system.hostname.clone().unwrap_or_default(),
                    m.mark.machine_class.clone(),
                    format!("{} of {}", m.mark.cells, m.mark.plan_cells),
                    m.started_at.clone(),
                    m.finished_at.clone().unwrap_or_else(|| "—".into()),
                    match (&m.stopped, m.complete) {
                        (Some(why), _) => format!("stopped: {why}"),
                        (None, true) => "complete".into(),
                        (None, false) => "did not finish".into(),
                    },
                ]
            })
            .collect(),
    })
}

/// The note under the table.
pub(crate) fn note(s: &Summary) -> String {
    let marks: Vec<_> = s.merged.iter().map(|m| &m.mark).collect();
    let labels = engine_matrix_results::run::class_labels(&marks);
    let classes = labels
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let generators = s.cells.iter().any(|c| {
        c.metrics
            .as_ref()
            .and_then(|m| m.serving.as_ref())
            .is_some_and(|x| x.generators.is_some())
    });
    if generators {
        "These are the load generators' machines (`run --load-shard`): each served cell holds all their requests, merged on a common clock (see Load generators under Open-loop serving).".into()
    } else if classes > 1 {
        format!("The shards ran on {classes} kinds of machine: every engine is labelled with its machine's class (`candle @ B`), and figures are compared only within a class (speedups against the baseline engine on the same class, rankings per class); figures of different classes are not comparable.")
    } else {
        "Every shard ran on the same kind of machine (one class), so their figures are compared as one run's.".into()
    }
}
