//! `hnsw`: approximate nearest neighbours with `hnsw_rs`, a pure-Rust HNSW
//! graph (Malkov & Yashunin). See README.md for why this library.
//!
//! Build options: `m` (links per node, 16; at most 256), `ef_construction`
//! (200), `max_layer` (16). Search parameters: `ef_search` (64; raised to
//! `k` when smaller). Metrics: `l2`, and `cosine` (vectors normalised,
//! then hnsw_rs's `DistDot`). `ip` is unsupported: `DistDot` is `1 − q·x`
//! clamped at 0, which ranks unnormalised vectors wrongly.
//!
//! Inserts run on a rayon pool of the build's threads; searches run on the
//! caller's thread, concurrently if the caller wants.

use engine_api::index::{BuildSpec, Index, IndexEngine, IndexInfo, IndexMetric, SearchResult};
use engine_api::EngineError;
use hnsw_rs::prelude::{DistDot, DistL2, Hnsw};

pub struct HnswEngine;

enum Graph {
    L2(Hnsw<'static, f32, DistL2>),
    Dot(Hnsw<'static, f32, DistDot>),
}

pub struct HnswIndex {
    graph: Graph,
    dim: usize,
    normalise: bool,
}

/// A batch of (vector, id) for hnsw_rs's parallel insert.
type Batch<'a> = Vec<(&'a [f32], usize)>;

/// Build options; a misspelt key is an error that names it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BuildOptions {
    m: usize,
    ef_construction: usize,
    max_layer: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            m: 16,
            ef_construction: 200,
            max_layer: 16,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SearchParams {
    ef_search: usize,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams { ef_search: 64 }
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, EngineError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json)
        .map_err(|e| EngineError::invalid_argument(format!("hnsw {what}: {e}")))
}

/// `value` of `key` within `lo..=hi`.
fn within(key: &str, value: usize, lo: usize, hi: usize) -> Result<usize, EngineError> {
    if (lo..=hi).contains(&value) {
        return Ok(value);
    }
    let why = format!("hnsw: {key} {value}: expected {lo}..={hi}");
    Err(EngineError::invalid_argument(why))
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter().map(|x| x / n).collect()
    } else {
        v.to_vec()
    }
}

impl IndexEngine for HnswEngine {
    fn info(&self) -> IndexInfo {
        IndexInfo {
            name: "hnsw".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            library_version: "hnsw_rs 0.3.5".into(),
            metrics: vec!["l2".into(), "cosine".into()].into(),
            build_params: vec!["m".into(), "ef_construction".into(), "max_layer".into()].into(),
            search_params: vec!["ef_search".into()].into(),
            concurrent_search: true,
        }
    }

    fn build(
        &self,
        vectors: &[f32],
        spec: &BuildSpec,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Box<dyn Index>, EngineError> {
        let o: BuildOptions = parse(spec.options_json.as_str(), "build options")?;
        // hnsw_rs exits the process above 256 links: checked here first.
        let m = within("m", o.m, 2, 256)?;
        let ef_c = within("ef_construction", o.ef_construction, 1, 1 << 16)?;
        let layers = within("max_layer", o.max_layer, 1, 16)?;
        let dim = spec.dim as usize;
        if dim == 0 || !vectors.len().is_multiple_of(dim) {
            return Err(EngineError::invalid_argument(format!(
                "hnsw: {} components are not whole vectors of dimension {dim}",
                vectors.len()
            )));
        }
        let n = vectors.len() / dim;
        let normalise = match spec.metric {
            IndexMetric::L2 => false,
            IndexMetric::Cosine => true,
            IndexMetric::InnerProduct => {
                return Err(EngineError::unsupported(
                    "hnsw (hnsw_rs): no inner-product distance for unnormalised vectors (DistDot is 1 − q·x clamped at 0); use cosine, or l2 on normalised vectors",
                ))
            }
        };
        let data: Vec<Vec<f32>> = vectors
            .chunks_exact(dim)
            .map(|v| if normalise { normalised(v) } else { v.to_vec() })
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(spec.threads.max(1) as usize)
            .build()
            .map_err(|e| EngineError::runtime(format!("hnsw: thread pool: {e}")))?;
        // In chunks, so that progress is reported as the graph grows; each
        // chunk is inserted in parallel on the build's pool.
        let chunk = (n / 20).max(1000);
        let insert = |add: &(dyn Fn(&Batch) + Sync)| {
            for start in (0..n).step_by(chunk) {
                let end = (start + chunk).min(n);
                let batch: Batch = (start..end).map(|i| (data[i].as_slice(), i)).collect();
                pool.install(|| add(&batch));
                progress(end as u64, n as u64);
            }
        };
        let graph = if normalise {
            let mut h = Hnsw::<f32, DistDot>::new(m, n, layers, ef_c, DistDot {});
            insert(&|b| h.parallel_insert_slice(b));
            h.set_searching_mode(true);
            Graph::Dot(h)
        } else {
            let mut h = Hnsw::<f32, DistL2>::new(m, n, layers, ef_c, DistL2 {});
            insert(&|b| h.parallel_insert_slice(b));
            h.set_searching_mode(true);
            Graph::L2(h)
        };
        Ok(Box::new(HnswIndex {
            graph,
            dim,
            normalise,
        }))
    }
}

impl Index for HnswIndex {
    fn search(
        &self,
        queries: &[f32],
        k: usize,
        params_json: &str,
    ) -> Result<SearchResult, EngineError> {
        let p: SearchParams = parse(params_json, "search parameters")?;
        let ef = within("ef_search", p.ef_search, 1, 1 << 16)?.max(k);
        if !queries.len().is_multiple_of(self.dim) {
            return Err(EngineError::invalid_argument(format!(
                "hnsw search: queries: {} components are not whole vectors of dimension {}",
                queries.len(),
                self.dim
            )));
        }
        let mut r = SearchResult::new(k, queries.len() / self.dim);
        for q in queries.chunks_exact(self.dim) {
            let q = if self.normalise {
                normalised(q)
            } else {
                q.to_vec()
            };
            let found = match &self.graph {
                Graph::L2(h) => h.search(&q, k, ef),
                Graph::Dot(h) => h.search(&q, k, ef),
            };
            r.push_query(found.iter().map(|nb| (nb.d_id as u64, nb.distance)));
        }
        Ok(r)
    }

    /// hnsw_rs reports no memory: the harness's RSS tells.
    fn memory(&self) -> Option<u64> {
        None
    }
}

engine_api::export_index_engine!(Ok(HnswEngine));

#[cfg(test)]
mod tests {
    use super::*;
    use engine_matrix_retrieval::synthetic::{Mixture, Set};
    use engine_matrix_retrieval::{exact, recall, Metric};

    fn spec(metric: IndexMetric, options: &str) -> BuildSpec {
        BuildSpec {
            dim: 24,
            metric,
            threads: 2,
            options_json: options.into(),
        }
    }

    #[test]
    fn hnsw_reaches_high_recall_and_recall_grows_with_ef() {
        let mix = Mixture {
            dim: 24,
            clusters: 16,
            spread: 0.5,
            seed: 5,
        };
        let base = mix.generate(Set::Base, 4000);
        let queries = mix.generate(Set::Queries, 100);
        for (im, metric) in [
            (IndexMetric::L2, Metric::L2),
            (IndexMetric::Cosine, Metric::Cosine),
        ] {
            let seen = std::cell::Cell::new(0u64);
            let index = HnswEngine
                .build(
                    base.as_slice(),
                    &spec(im, r#"{"m": 12, "ef_construction": 100}"#),
                    &|d, _| seen.set(d),
                )
                .unwrap();
            assert_eq!(seen.get(), 4000);
            let truth = exact::knn(&base, &queries, 10, metric, 1);
            let at = |ef: usize| {
                let r = index
                    .search(queries.as_slice(), 10, &format!(r#"{{"ef_search": {ef}}}"#))
                    .unwrap();
                let found: Vec<Vec<u64>> = r.ids.chunks(10).map(|c| c.to_vec()).collect();
                recall::recall(metric, &base, &queries, &truth, &found, 10)
            };
            let (low, high) = (at(10), at(200));
            assert!(high >= 0.95, "{im:?}: recall {high} at ef 200");
            assert!(high >= low, "{im:?}: {low} at ef 10, {high} at ef 200");
        }
    }

    #[test]
    fn unsupported_metrics_and_bad_options_say_why() {
        let v = vec![0.5f32; 48];
        let e = HnswEngine
            .build(&v, &spec(IndexMetric::InnerProduct, "{}"), &|_, _| {})
            .err()
            .unwrap();
        assert!(
            e.is_unsupported() && e.message.contains("inner-product"),
            "{e}"
        );
        let e = HnswEngine
            .build(&v, &spec(IndexMetric::L2, r#"{"m": 300}"#), &|_, _| {})
            .err()
            .unwrap();
        assert!(e.message.contains("m 300"), "{e}");
        let e = HnswEngine
            .build(&v, &spec(IndexMetric::L2, r#"{"ef": 3}"#), &|_, _| {})
            .err()
            .unwrap();
        assert!(e.message.contains("unknown field `ef`"), "{e}");
    }
}
