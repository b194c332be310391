//! The report's "Quantization and quality" table: one row per engine,
//! model, dtype and quantization whose cells carry a quality record, its
//! speed and memory (from the first of its cells that completed) beside
//! its perplexity and its agreement with the reference engine.

use super::analysis::Group;
use super::table::{f, Table};
use engine_matrix_results::quality::QualityRecord;
use engine_matrix_results::CellResult;

const MIB: f64 = (1u64 << 20) as f64;

fn first<'a>(g: &Group<'a>) -> Option<&'a CellResult> {
    g.ok_runs().next()
}

/// The rows (`None`: no cell has a quality record).
pub(crate) fn table(groups: &[Group]) -> Option<Table> {
    let mut seen: Vec<(String, String, String, String)> = Vec::new();
    let mut picked: Vec<(&CellResult, &QualityRecord)> = Vec::new();
    for g in groups {
        let Some(r) = first(g) else { continue };
        let Some(q) = r.quality.as_ref() else {
            continue;
        };
        let c = &r.cell;
        let key = (
            c.engine.clone(),
            c.model.clone(),
            c.params.dtype.clone(),
            c.params.quantization.clone(),
        );
        if !seen.contains(&key) {
            seen.push(key);
            picked.push((r, q));
        }
    }
    if picked.is_empty() {
        return None;
    }
    // the reference's own perplexity, per model
    let reference_ppl = |model: &str| {
        picked
            .iter()
            .find(|(r, q)| r.cell.model == model && q.reference.is_none() && q.note.is_none())
            .and_then(|(_, q)| q.perplexity)
    };
    let rows = picked
        .iter()
        .map(|(r, q)| {
            let c = &r.cell;
            let m = r.metrics.as_ref();
            let decode = m
                .and_then(|m| m.tpot_ms.as_ref())
                .map(|d| d.p50)
                .filter(|t| *t > 0.0)
                .map(|t| 1000.0 / t);
            let mem = r.memory.as_ref();
            let delta = q
                .perplexity
                .zip(reference_ppl(&c.model))
                .filter(|_| q.reference.is_some())
                .map(|(p, base)| 100.0 * (p / base - 1.0));
            vec![
                c.engine.clone(),
                c.model.clone(),
                c.params.dtype.clone(),
                c.params.quantization.clone(),
                f(decode, 1),
                f(m.and_then(|m| m.ttft_ms.as_ref()).map(|d| d.p50), 1),
                f(mem.map(|m| m.weight_bytes as f64 / MIB), 1),
                f(
                    mem.and_then(|m| m.peak_rss_bytes).map(|b| b as f64 / MIB),
                    0,
                ),
                f(q.perplexity, 3),
                delta.map_or("—".into(), |d| format!("{d:+.2}%")),
                f(q.kld_mean, 5),
                f(q.top1_agreement.map(|t| 100.0 * t), 1),
                match (q.greedy_steps, q.greedy_divergence) {
                    (0, _) => "—".into(),
                    (n, None) => format!("same {n}"),
                    (n, Some(i)) => format!("{i} of {n}"),
                },
                q.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Some(Table {
        headers: vec![
            "engine",
            "model",
            "dtype",
            "quantization",
            "decode tok/s",
            "TTFT p50 ms",
            "weights MiB",
            "peak RSS MiB",
            "perplexity",
            "Δ perplexity",
            "mean KLD",
            "top-1 %",
            "greedy diverges at",
            "note",
        ],
        rows,
    })
}

/// Under the table: what the figures are.
pub(crate) fn note(groups: &[Group]) -> String {
    let q = groups
        .iter()
        .find_map(|g| first(g).and_then(|r| r.quality.clone()));
    let text = q.map(|q| format!(" The text: {} (windows of {} tokens).", q.text, q.context));
    format!(
        "Perplexity over the second half of each window (llama-perplexity's scheme); Δ perplexity, mean KL divergence and top-1 agreement against the reference engine's f32 model on the same windows (— for the reference itself). Greedy: where 32 greedy tokens after the text's first 64 first differ from the reference's (\"same 32\": nowhere). Decode tok/s is 1000 / TPOT p50 and TTFT p50 of the combination's first completed cell.{}",
        text.unwrap_or_default()
    )
}
