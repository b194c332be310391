//! The report's "Quantization and quality" table: one row per engine,
//! model, dtype and quantization whose cells carry a quality record, its
//! speed and memory (from the first of its cells that completed) beside
//! its perplexity and its agreement with the reference engine.

use super::analysis::Group;
use super::charts::{Body, Chart, Colors, Mark, Series};
use super::table::{f, Table};
use engine_matrix_results::quality::QualityRecord;
use engine_matrix_results::CellResult;

const MIB: f64 = (1u64 << 20) as f64;

fn first<'a>(g: &Group<'a>) -> Option<&'a CellResult> {
    g.ok_runs().next()
}

/// One (engine, model, dtype, quantization) with a quality record: its
/// first completed cell and the record.
fn combos<'a>(groups: &[Group<'a>]) -> Vec<(&'a CellResult, &'a QualityRecord)> {
    let mut seen: Vec<(String, String, String, String)> = Vec::new();
    let mut picked = Vec::new();
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
    picked
}

/// Decode tokens/s of a cell: 1000 / TPOT p50.
fn decode_rate(r: &CellResult) -> Option<f64> {
    r.metrics
        .as_ref()
        .and_then(|m| m.tpot_ms.as_ref())
        .map(|d| d.p50)
        .filter(|t| *t > 0.0)
        .map(|t| 1000.0 / t)
}

/// `dtype` or `dtype/quantization`.
fn variant(r: &CellResult) -> String {
    match r.cell.params.quantization.as_str() {
        "none" => r.cell.params.dtype.clone(),
        q => format!("{}/{q}", r.cell.params.dtype),
    }
}

/// The speed-quality chart per model: decode tokens/s against mean KL
/// divergence from the reference, one point per engine and variant, each
/// engine's Pareto front joined (faster and closer to the reference).
pub(crate) fn charts(groups: &[Group], colors: &Colors) -> Vec<Chart> {
    let picked = combos(groups);
    let mut models: Vec<&str> = Vec::new();
    for (r, _) in &picked {
        if !models.contains(&r.cell.model.as_str()) {
            models.push(&r.cell.model);
        }
    }
    let mut out = Vec::new();
    for model in models {
        let mut by_engine: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for (r, q) in picked.iter().filter(|(r, _)| r.cell.model == model) {
            let (Some(x), Some(y)) = (decode_rate(r), q.kld_mean) else {
                continue;
            };
            let e = &r.cell.engine;
            match by_engine.iter_mut().find(|(n, _)| n == e) {
                Some((_, v)) => v.push((x, y)),
                None => by_engine.push((e.clone(), vec![(x, y)])),
            }
        }
        if by_engine.iter().map(|(_, v)| v.len()).sum::<usize>() < 2 {
            continue;
        }
        let mut series = Vec::new();
        for (engine, pts) in &by_engine {
            let front = crate::analysis::pareto_front(pts);
            series.push(Series {
                label: engine.clone(),
                color: colors.of(engine),
                width: 0,
                mark: Mark::Circle,
                points: pts.iter().map(|p| (p.0, p.1, None)).collect(),
            });
            if front.len() > 1 {
                series.push(Series {
                    label: format!("{engine} Pareto front"),
                    color: colors.of(engine),
                    width: 2,
                    mark: Mark::None,
                    points: front.iter().map(|&i| (pts[i].0, pts[i].1, None)).collect(),
                });
            }
        }
        out.push(Chart {
            name: crate::slug(&["quality", model]),
            title: format!("Speed against quality ({model})"),
            note: "One point per engine, dtype and quantization: decode tokens/s (1000 / TPOT p50 of its first completed cell) against the mean KL divergence of its next-token distributions from the reference engine's f32 model (lower is closer); the line joins each engine's Pareto-optimal variants. The reference itself has no KL divergence and no point.".into(),
            body: Body::Xy {
                x_desc: "decode tokens/s".into(),
                y_desc: "mean KL divergence from the reference (nats)".into(),
                log_x: false,
                log_y: false,
                series,
            },
        });
    }
    out
}

/// Per engine and model with more than one variant evaluated: the fastest
/// whose top-1 agreement with the reference is at least `min_top1` (the
/// reference's own variant agrees fully).
pub(crate) fn recommendations(groups: &[Group], min_top1: f64) -> Vec<String> {
    let picked = combos(groups);
    let mut engines: Vec<(&str, &str)> = Vec::new();
    for (r, _) in &picked {
        let k = (r.cell.engine.as_str(), r.cell.model.as_str());
        if !engines.contains(&k) {
            engines.push(k);
        }
    }
    let agree = |q: &QualityRecord| match (q.reference.as_ref(), q.top1_agreement) {
        (None, _) if q.note.is_none() && q.perplexity.is_some() => Some(1.0),
        (Some(_), Some(t)) => Some(t),
        _ => None,
    };
    let mut out = Vec::new();
    for (engine, model) in engines {
        let mine: Vec<&(&CellResult, &QualityRecord)> = picked
            .iter()
            .filter(|(r, _)| r.cell.engine == engine && r.cell.model == model)
            .collect();
        if mine.len() < 2 {
            continue;
        }
        let best = mine
            .iter()
            .filter_map(|(r, q)| Some((*r, decode_rate(r)?, agree(q)?)))
            .filter(|(_, _, t)| *t >= min_top1)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        out.push(match best {
            Some((r, rate, t)) => format!(
                "{engine} on {model}: {} is its fastest variant that keeps {:.0}% top-1 agreement with the reference ({rate:.1} decode tok/s, {:.1}% agreement).",
                variant(r),
                100.0 * min_top1,
                100.0 * t
            ),
            None => format!(
                "{engine} on {model}: none of its variants keeps {:.0}% top-1 agreement with the reference.",
                100.0 * min_top1
            ),
        });
    }
    out
}

/// The rows (`None`: no cell has a quality record).
pub(crate) fn table(groups: &[Group]) -> Option<Table> {
    let picked = combos(groups);
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
            let decode = decode_rate(r);
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
                // a server says nothing of its weights (0): —
                f(
                    mem.map(|m| m.weight_bytes)
                        .filter(|b| *b > 0)
                        .map(|b| b as f64 / MIB),
                    1,
                ),
                f(
                    mem.and_then(|m| m.peak_rss_bytes).map(|b| b as f64 / MIB),
                    0,
                ),
                f(q.perplexity, 3),
                delta.map_or("—".into(), |d| format!("{d:+.2}%")),
                q.kld_mean.map_or("—".into(), |k| {
                    if k != 0.0 && k.abs() < 1e-3 {
                        format!("{k:.2e}")
                    } else {
                        format!("{k:.4}")
                    }
                }),
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
