//! The Tuned settings section of a run whose engines ran with settings
//! from `engine-matrix tune` (a matrix's `tuned:` or `run --tuned`).

use crate::table::Table;

/// The engines of a run that ran with tuned settings (a matrix's
/// `tuned:` or `run --tuned`): what the settings set, what they were tuned
/// for, and where they come from.
pub(crate) fn table(s: &engine_matrix_results::Summary) -> Option<Table> {
    let tuned = s.tuned.as_ref()?.tuned_engines();
    if tuned.is_empty() {
        return None;
    }
    Some(Table {
        headers: vec!["engine", "tuned settings", "tuned for", "from"],
        rows: tuned
            .into_iter()
            .map(|(name, t)| {
                vec![
                    name,
                    t.describe(),
                    t.tuned_for.clone().unwrap_or_else(|| "—".into()),
                    t.source.clone(),
                ]
            })
            .collect(),
    })
}

/// The note under [`table`].
pub(crate) const NOTE: &str = "Tuned options are merged over the engine's `options:`; `max_batch`, `batch_policy`, `dtype` and `quantization` replace the scenario's in that engine's cells. Settings are tuned for one cell: elsewhere they are a starting point, not a proven best.";
