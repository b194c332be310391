//! `run --shard I/N`: the share of a plan's cells this machine runs (the
//! partition is `engine_matrix_format::shard`'s), and the mark its run
//! folder carries so that `merge` can check the shards belong together.

use crate::matrix::shard::{self, Shard};
use crate::matrix::{Cell, Matrix, ModelWeights};
use crate::output::ShardMark;
use crate::system::SystemInfo;
use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

/// GPT-2 124M's parameters: a model's cost weight is its size against it.
const GPT2_PARAMETERS: f64 = 124.4e6;

/// The cells of `shard` (of `cells`, the whole plan in run order) and the
/// mark of its run folder (its machine class still to be set).
pub(crate) fn select(
    matrix: &Matrix,
    text: &str,
    cells: Vec<Cell>,
    repeat: u32,
    shard: Shard,
) -> (Vec<Cell>, ShardMark) {
    let sha = plan_sha256(text, &cells, repeat);
    let plan_cells = cells.len() * repeat as usize;
    let weights: Vec<(String, f64)> = matrix
        .models
        .iter()
        .map(|m| (m.name.clone(), weight(&m.weights)))
        .collect();
    let weight_of = |name: &str| {
        weights
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1.0, |(_, w)| *w)
    };
    let owner = shard::assign(&cells, shard.count, weight_of);
    let mine: Vec<Cell> = cells
        .into_iter()
        .zip(owner)
        .filter(|(_, o)| *o == shard.index)
        .map(|(c, _)| c)
        .collect();
    let mark = ShardMark {
        index: shard.index,
        count: shard.count,
        plan_sha256: sha,
        cells: mine.len() * repeat as usize,
        plan_cells,
        machine_class: String::new(),
    };
    (mine, mark)
}

/// A resumed shard's cells: the same selection, refused if the plan is no
/// longer the one the shard started with.
pub(crate) fn reselect(
    matrix: &Matrix,
    text: &str,
    cells: Vec<Cell>,
    repeat: u32,
    prior: &ShardMark,
) -> Result<(Vec<Cell>, ShardMark)> {
    let shard = Shard {
        index: prior.index,
        count: prior.count,
    };
    let (mine, mut mark) = select(matrix, text, cells, repeat, shard);
    if mark.plan_sha256 != prior.plan_sha256 {
        bail!(
            "shard {shard}: the plan changed since the shard started (its hash was {}, now {}): the other shards' cells would no longer match",
            prior.plan_sha256,
            mark.plan_sha256
        );
    }
    mark.machine_class = prior.machine_class.clone();
    Ok((mine, mark))
}

/// SHA-256 of the matrix text, every cell id and the repetitions.
pub(crate) fn plan_sha256(text: &str, cells: &[Cell], repeat: u32) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    for c in cells {
        h.update(b"\n");
        h.update(c.id.as_bytes());
    }
    h.update(format!("\nrepeat {repeat}").as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A model's size against GPT-2's, from its config (no weights are read
/// or generated); 1 when it cannot be told.
fn weight(w: &ModelWeights) -> f64 {
    let shape = match w {
        ModelWeights::Synthetic { config, .. } => engine_matrix_synthetic::checked_config(config)
            .map(|(s, _, _)| s)
            .ok(),
        ModelWeights::Path(p) => crate::run::cell::path_shape(p).ok(),
    };
    shape.map_or(1.0, |s| s.parameters() as f64 / GPT2_PARAMETERS)
}

/// The machine class of `system`: identical machines (same CPU, cores,
/// memory to the GiB, GPUs) share one.
pub fn machine_class(system: &SystemInfo) -> String {
    let mut s = format!(
        "{} x{} {}GiB",
        system.cpu_model.as_deref().unwrap_or("unknown CPU"),
        system.logical_cores,
        (system.memory_bytes as f64 / (1u64 << 30) as f64).round()
    );
    if let Some(g) = system.gpu_summary() {
        s.push_str(&format!(" {g}"));
    }
    s
}
