//! Sharding: a deterministic share of a matrix's cells for one machine of
//! several (`run --shard I/N`, or the index a scheduler gives).
//!
//! The partition depends only on the cells (their order and parameters) and
//! the model weights the caller gives, so every machine computes the same one
//! from the same matrix without talking to the others:
//!
//! 1. **Units.** The cells of one engine and one model form a unit: a
//!    worker loads the model once for all of them. A unit costlier than a
//!    shard's fair share (the total over `N`) cannot be balanced whole, so
//!    it is split in two halves of its cells (in run order, so a half keeps
//!    its scenarios together), again until no unit exceeds the fair share
//!    or every unit is one cell. Each split costs one more model load; a
//!    matrix with fewer engine-model pairs than shards is split that way.
//! 2. **Placement.** Longest processing time first: units by falling cost
//!    (ties by their first cell's position) each go to the shard with the
//!    least cost so far (ties to the lowest index). The greedy rule is
//!    within 4/3 of the best balance for the unit costs.
//!
//! The cost of a cell is an estimate in seconds, not a prediction (see
//! [`cost`]): it only has to rank cells and add up roughly, and a wrong
//! estimate costs balance, never correctness.

use crate::{Cell, ScenarioKind};

/// One machine's share: `index` of `count`, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// An engine label and its machine class: a merged run whose shards ran
/// on different kinds of machine labels each cell's engine `NAME @ CLASS`
/// (`engine-matrix merge`), and figures are compared only within a class.
pub fn machine_class(engine: &str) -> (&str, Option<&str>) {
    match engine.rsplit_once(" @ ") {
        Some((name, class)) => (name, Some(class)),
        None => (engine, None),
    }
}

/// `I/N` with `0 <= I < N`.
pub fn parse(text: &str) -> Result<Shard, String> {
    let bad = || format!("`{text}`: expected I/N, shard I of N counted from 0 (e.g. 0/3), or auto");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let index: u32 = i.trim().parse().map_err(|_| bad())?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 || index >= count {
        return Err(format!(
            "`{text}`: shard {index} of {count} does not exist (shards are 0 to N-1)"
        ));
    }
    Ok(Shard { index, count })
}

/// The shard a scheduler's environment gives:
/// * Slurm job arrays: `SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT`
///   (the id counted from `SLURM_ARRAY_TASK_MIN`, so `--array=1-3` works);
/// * Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` with the count in
///   `ENGINE_MATRIX_SHARDS` (Kubernetes does not pass `completions` to
///   the pod; the generated manifest sets it).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
    let num = |name: &str| -> Result<Option<u32>, String> {
        match get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}={v} is not a number")),
        }
    };
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let count = num("SLURM_ARRAY_TASK_COUNT")?
            .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let index = id.checked_sub(min).ok_or_else(|| {
            format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
        })?;
        return parse(&format!("{index}/{count}"))
            .map_err(|e| format!("from Slurm's SLURM_ARRAY_TASK_*: {e}"));
    }
    if let Some(index) = num("JOB_COMPLETION_INDEX")? {
        let count = num("ENGINE_MATRIX_SHARDS")?.ok_or(
            "JOB_COMPLETION_INDEX is set but ENGINE_MATRIX_SHARDS (the number of shards) is not",
        )?;
        return parse(&format!("{index}/{count}"))
            .map_err(|e| format!("from Kubernetes' JOB_COMPLETION_INDEX: {e}"));
    }
    Err("--shard auto: no scheduler index in the environment (SLURM_ARRAY_TASK_ID, or JOB_COMPLETION_INDEX with ENGINE_MATRIX_SHARDS)".into())
}

/// Tokens per second the estimate assumes for a model of weight 1 (about
/// GPT-2 124M on two CPU cores); only ratios between cells matter.
const TOKENS_PER_S: f64 = 400.0;
/// Seconds the estimate adds per cell (a worker's start, the model's
/// load, the warm-up's compilation).
const CELL_OVERHEAD_S: f64 = 2.0;

/// A cell's estimated seconds: time-bounded cells (a `duration_s`) their
/// duration; the others their tokens over all passes (warm-up and
/// iterations) at [`TOKENS_PER_S`], times the model's `weight` (its size
/// against GPT-2's; 1 when unknown); retrieval cells their index build
/// and queries.
pub fn cost(cell: &Cell, weight: f64) -> f64 {
    let p = &cell.params;
    let passes = f64::from(cell.warmup + cell.iterations.max(1));
    let tokens = f64::from(p.input_tokens + p.output_tokens);
    let seconds = match cell.kind {
        ScenarioKind::Retrieval => cell.retrieval.as_ref().map_or(1.0, |r| {
            r.index_size as f64 * f64::from(r.dim.max(1)) / 2e7
                + passes * f64::from(r.queries) / 2000.0
        }),
        _ if p.duration_s > 0.0 => passes * p.duration_s,
        ScenarioKind::Latency => passes * f64::from(p.batch_size) * tokens / TOKENS_PER_S * weight,
        ScenarioKind::Throughput => {
            passes * f64::from(p.num_requests) * tokens / TOKENS_PER_S * weight
        }
        ScenarioKind::Concurrency | ScenarioKind::Serving => {
            passes * f64::from(p.requests.max(p.num_requests).max(1)) * tokens / TOKENS_PER_S
                * weight
        }
    };
    let seconds = if seconds.is_finite() { seconds } else { 0.0 };
    seconds.min(cell.max_duration_s.max(1.0) * passes) + CELL_OVERHEAD_S
}

/// The shard of every cell (`cells` in run order; `weight` a model's size
/// against GPT-2's).
pub fn assign(cells: &[Cell], count: u32, weight: impl Fn(&str) -> f64) -> Vec<u32> {
    let count = count.max(1) as usize;
    let costs: Vec<f64> = cells
        .iter()
        .map(|c| {
            let w = weight(&c.model);
            cost(c, if w.is_finite() && w > 0.0 { w } else { 1.0 })
        })
        .collect();
    let mut units = units(cells);
    let unit_cost = |u: &[usize]| u.iter().map(|&i| costs[i]).sum::<f64>();
    let fair = costs.iter().sum::<f64>() / count as f64;
    // Split what cannot fit a fair share, the costliest first.
    loop {
        let biggest = units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.len() > 1)
            .max_by(|a, b| {
                unit_cost(a.1)
                    .total_cmp(&unit_cost(b.1))
                    .then(b.0.cmp(&a.0))
            });
        match biggest {
            Some((i, u)) if unit_cost(u) > fair => {
                let u = units.remove(i);
                let (a, b) = u.split_at(u.len() / 2);
                units.insert(i, b.to_vec());
                units.insert(i, a.to_vec());
            }
            _ => break,
        }
    }
    units.sort_by(|a, b| unit_cost(b).total_cmp(&unit_cost(a)).then(a[0].cmp(&b[0])));
    let mut load = vec![0.0f64; count];
    let mut out = vec![0u32; cells.len()];
    for u in &units {
        let shard = (0..count)
            .min_by(|&x, &y| load[x].total_cmp(&load[y]).then(x.cmp(&y)))
            .unwrap_or(0);
        load[shard] += unit_cost(u);
        for &i in u {
            out[i] = shard as u32;
        }
    }
    out
}

/// Cell indexes grouped by engine and model, in order of first appearance.
fn units(cells: &[Cell]) -> Vec<Vec<usize>> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut units: Vec<Vec<usize>> = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        let key = (c.engine.as_str(), c.model.as_str());
        match keys.iter().position(|k| *k == key) {
            Some(u) => units[u].push(i),
            None => {
                keys.push(key);
                units.push(vec![i]);
            }
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cells(text: &str) -> Vec<Cell> {
        crate::Matrix::parse(text, std::path::Path::new("m.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .cells(false)
    }

    /// `engines` engines, `models` models and a batch-size axis of `sizes`.
    fn matrix(engines: usize, models: usize, sizes: &[u32]) -> String {
        let mut t = String::from("name: s\nmodels:\n");
        for m in 0..models {
            t.push_str(&format!(
                "  - {{name: m{m}, weights: synthetic, config: tiny}}\n"
            ));
        }
        t.push_str("engines:\n");
        for e in 0..engines {
            t.push_str(&format!("  - {{name: e{e}, plugin: candle}}\n"));
        }
        t.push_str(&format!(
            "scenarios:\n  - name: l\n    kind: latency\n    input_tokens: 32\n    output_tokens: 8\n    axes: {{batch_size: {sizes:?}}}\n  - name: t\n    kind: throughput\n    num_requests: 16\n    input_tokens: 32\n    output_tokens: 8\n"
        ));
        t
    }

    #[test]
    fn parses_indexes_from_zero_and_refuses_the_rest() {
        assert_eq!(parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert!(parse("3/3").unwrap_err().contains("does not exist"));
        assert!(parse("0/0").is_err());
        assert!(parse("1").unwrap_err().contains("expected I/N"));
        assert!(parse("a/2").is_err());
    }

    #[test]
    fn reads_slurm_arrays_and_kubernetes_indexed_jobs() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        const SLURM: [(&str, &str); 3] = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ];
        assert_eq!(from_env(env(&SLURM)), Ok(Shard { index: 2, count: 3 }));
        const K8S: [(&str, &str); 2] =
            [("JOB_COMPLETION_INDEX", "0"), ("ENGINE_MATRIX_SHARDS", "4")];
        assert_eq!(from_env(env(&K8S)), Ok(Shard { index: 0, count: 4 }));
        assert!(from_env(env(&[("JOB_COMPLETION_INDEX", "0")]))
            .unwrap_err()
            .contains("ENGINE_MATRIX_SHARDS"));
        assert!(from_env(env(&[]))
            .unwrap_err()
            .contains("no scheduler index"));
        assert!(from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "2")
        ]))
        .unwrap_err()
        .contains("SLURM_ARRAY_TASK_ID=x"));
    }

    #[test]
    fn engine_model_pairs_stay_whole_when_they_can() {
        // 3 engines x 2 models = 6 equal units over 3 shards: 2 each,
        // no pair split.
        let c = cells(&matrix(3, 2, &[1, 2]));
        let a = assign(&c, 3, |_| 1.0);
        for (i, x) in c.iter().enumerate() {
            for (j, y) in c.iter().enumerate() {
                if (&x.engine, &x.model) == (&y.engine, &y.model) {
                    assert_eq!(a[i], a[j], "{} and {} split", x.id, y.id);
                }
            }
        }
        for s in 0..3 {
            assert_eq!(a.iter().filter(|&&x| x == s).count(), c.len() / 3);
        }
    }

    #[test]
    fn one_big_pair_is_split_to_fill_the_shards() {
        let c = cells(&matrix(1, 1, &[1, 2, 4, 8]));
        let a = assign(&c, 2, |_| 1.0);
        assert!(a.contains(&0) && a.contains(&1), "{a:?}");
    }

    proptest! {
        #[test]
        fn every_cell_is_in_exactly_one_shard_the_same_every_time_and_balanced(
            engines in 1usize..4, models in 1usize..3, n in 1u32..6,
            sizes in proptest::collection::btree_set(1u32..64, 1..5),
        ) {
            let sizes: Vec<u32> = sizes.into_iter().collect();
            let c = cells(&matrix(engines, models, &sizes));
            let a = assign(&c, n, |m| if m == "m1" { 3.0 } else { 1.0 });
            prop_assert_eq!(&a, &assign(&c, n, |m| if m == "m1" { 3.0 } else { 1.0 }));
            prop_assert!(a.iter().all(|&s| s < n));
            // Greedy balance: a unit is split until it fits a fair share
            // (or is one cell), and the least-loaded shard takes the next
            // unit, so no shard exceeds the fair share by more than the
            // largest unit.
            let w = |m: &str| if m == "m1" { 3.0 } else { 1.0 };
            let costs: Vec<f64> = c.iter().map(|x| cost(x, w(&x.model))).collect();
            let fair = costs.iter().sum::<f64>() / f64::from(n);
            let biggest = costs.iter().cloned().fold(0.0, f64::max);
            for s in 0..n {
                let load: f64 = c.iter().zip(&a).filter(|(_, &x)| x == s).map(|(x, _)| cost(x, w(&x.model))).sum();
                prop_assert!(load <= fair + fair.max(biggest) + 1e-9, "shard {} has {} of fair {}", s, load, fair);
            }
        }
    }
}
