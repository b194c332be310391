//! `usearch`: approximate nearest neighbours with USearch's HNSW, a C++
//! header-only library, through its Rust binding. See README.md for why
//! this library.
//!
//! Build options: `connectivity` (links per node, 16), `expansion_add`
//! (128), `quantization` (`f32`, `f16`, `bf16`, `i8`: how vectors are
//! stored). Search parameters: `expansion_search` (64; raised to `k` when
//! smaller). Metrics: `l2` (USearch's squared L2), `ip` (`1 − q·x`),
//! `cosine`.
//!
//! Vectors are added from the build's threads, each taking a stripe.
//! USearch serves concurrent calls from a fixed set of thread slots: the
//! index reserves [`SEARCH_SLOTS`] beyond the build's threads, so
//! concurrent searches up to that many never fail for want of one.

use engine_api::index::{BuildSpec, Index, IndexEngine, IndexInfo, IndexMetric, SearchResult};
use engine_api::EngineError;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use usearch::{IndexOptions, MetricKind, ScalarKind};

/// Thread slots reserved for searches.
pub const SEARCH_SLOTS: usize = 64;

pub struct USearch;

pub struct USearchIndex {
    index: usearch::Index,
    dim: usize,
    /// The expansion the index is set to now (searches set it when theirs
    /// differs).
    expansion: AtomicUsize,
}

/// Build options; a misspelt key is an error that names it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BuildOptions {
    connectivity: usize,
    expansion_add: usize,
    quantization: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            connectivity: 16,
            expansion_add: 128,
            quantization: "f32".into(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SearchParams {
    expansion_search: usize,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            expansion_search: 64,
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, EngineError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json)
        .map_err(|e| EngineError::invalid_argument(format!("usearch {what}: {e}")))
}

/// `value` of `key` within `lo..=hi`.
fn within(key: &str, value: usize, lo: usize, hi: usize) -> Result<usize, EngineError> {
    if (lo..=hi).contains(&value) {
        return Ok(value);
    }
    let why = format!("usearch: {key} {value}: expected {lo}..={hi}");
    Err(EngineError::invalid_argument(why))
}

fn runtime(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::runtime(format!("usearch {what}: {e}"))
}

impl IndexEngine for USearch {
    fn info(&self) -> IndexInfo {
        IndexInfo {
            name: "usearch".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            library_version: format!("usearch {}", usearch::version()).into(),
            metrics: IndexMetric::ALL.iter().map(|m| m.name().into()).collect(),
            build_params: vec![
                "connectivity".into(),
                "expansion_add".into(),
                "quantization".into(),
            ]
            .into(),
            search_params: vec!["expansion_search".into()].into(),
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
        let connectivity = within("connectivity", o.connectivity, 2, 1024)?;
        let expansion_add = within("expansion_add", o.expansion_add, 1, 1 << 16)?;
        let quantization = match o.quantization.as_str() {
            "f32" => ScalarKind::F32,
            "f16" => ScalarKind::F16,
            "bf16" => ScalarKind::BF16,
            "i8" => ScalarKind::I8,
            other => {
                return Err(EngineError::invalid_argument(format!(
                    "usearch build options: quantization '{other}': expected f32, f16, bf16 or i8"
                )))
            }
        };
        let dim = spec.dim as usize;
        if dim == 0 || !vectors.len().is_multiple_of(dim) {
            return Err(EngineError::invalid_argument(format!(
                "usearch: {} components are not whole vectors of dimension {dim}",
                vectors.len()
            )));
        }
        let n = vectors.len() / dim;
        let options = IndexOptions {
            dimensions: dim,
            metric: match spec.metric {
                IndexMetric::L2 => MetricKind::L2sq,
                IndexMetric::InnerProduct => MetricKind::IP,
                IndexMetric::Cosine => MetricKind::Cos,
            },
            quantization,
            connectivity,
            expansion_add,
            expansion_search: 64,
            multi: false,
        };
        let index = usearch::Index::new(&options).map_err(|e| runtime("index", e))?;
        let threads = spec.threads.max(1) as usize;
        index
            .reserve_capacity_and_threads(n, threads + SEARCH_SLOTS)
            .map_err(|e| runtime("reserve", e))?;
        let added = AtomicU64::new(0);
        let failed = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (index, added, failed) = (&index, &added, &failed);
                s.spawn(move || {
                    for i in (t..n).step_by(threads) {
                        if let Err(e) = index.add(i as u64, &vectors[i * dim..(i + 1) * dim]) {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                            return;
                        }
                        added.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            // Progress from the scope's own thread while the stripes run.
            loop {
                let done = added.load(Ordering::Relaxed);
                progress(done, n as u64);
                if done >= n as u64 || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(runtime("add", e));
        }
        progress(n as u64, n as u64);
        Ok(Box::new(USearchIndex {
            index,
            dim,
            expansion: AtomicUsize::new(64),
        }))
    }
}

impl Index for USearchIndex {
    fn search(
        &self,
        queries: &[f32],
        k: usize,
        params_json: &str,
    ) -> Result<SearchResult, EngineError> {
        let p: SearchParams = parse(params_json, "search parameters")?;
        let ef = within("expansion_search", p.expansion_search, 1, 1 << 16)?.max(k);
        if self.expansion.swap(ef, Ordering::Relaxed) != ef {
            self.index.change_expansion_search(ef);
        }
        if !queries.len().is_multiple_of(self.dim) {
            return Err(EngineError::invalid_argument(format!(
                "usearch search: queries: {} components are not whole vectors of dimension {}",
                queries.len(),
                self.dim
            )));
        }
        let mut r = SearchResult::new(k, queries.len() / self.dim);
        for q in queries.chunks_exact(self.dim) {
            let m = self.index.search(q, k).map_err(|e| runtime("search", e))?;
            r.push_query(m.keys.iter().copied().zip(m.distances.iter().copied()));
        }
        Ok(r)
    }

    fn memory(&self) -> Option<u64> {
        Some(self.index.memory_usage() as u64)
    }
}

engine_api::export_index_engine!(Ok(USearch));

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
    fn usearch_reaches_high_recall_on_every_metric_and_reports_memory() {
        let mix = Mixture {
            dim: 24,
            clusters: 16,
            spread: 0.5,
            seed: 6,
        };
        let base = mix.generate(Set::Base, 4000);
        let queries = mix.generate(Set::Queries, 100);
        for (im, metric) in [
            (IndexMetric::L2, Metric::L2),
            (IndexMetric::InnerProduct, Metric::InnerProduct),
            (IndexMetric::Cosine, Metric::Cosine),
        ] {
            let last = std::sync::Mutex::new(0u64);
            let index = USearch
                .build(base.as_slice(), &spec(im, "{}"), &|d, _| {
                    *last.lock().unwrap() = d
                })
                .unwrap();
            assert_eq!(*last.lock().unwrap(), 4000);
            assert!(index.memory().unwrap() > 4000 * 24 * 4);
            let truth = exact::knn(&base, &queries, 10, metric, 1);
            let at = |ef: usize| {
                let r = index
                    .search(
                        queries.as_slice(),
                        10,
                        &format!(r#"{{"expansion_search": {ef}}}"#),
                    )
                    .unwrap();
                let found: Vec<Vec<u64>> = r.ids.chunks(10).map(|c| c.to_vec()).collect();
                recall::recall(metric, &base, &queries, &truth, &found, 10)
            };
            let (low, high) = (at(10), at(200));
            assert!(high >= 0.95, "{im:?}: recall {high} at expansion 200");
            assert!(high >= low, "{im:?}: {low} at 10, {high} at 200");
        }
    }

    #[test]
    fn concurrent_searches_and_bad_options() {
        let mix = Mixture {
            dim: 24,
            clusters: 4,
            spread: 0.5,
            seed: 7,
        };
        let base = mix.generate(Set::Base, 1000);
        let index = USearch
            .build(base.as_slice(), &spec(IndexMetric::L2, "{}"), &|_, _| {})
            .unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (index, base) = (&index, &base);
                s.spawn(move || {
                    let r = index.search(base.row(t), 1, "{}").unwrap();
                    assert_eq!(r.ids[0], t as u64, "a base vector finds itself");
                });
            }
        });
        let e = USearch
            .build(
                base.as_slice(),
                &spec(IndexMetric::L2, r#"{"quantization": "q4"}"#),
                &|_, _| {},
            )
            .err()
            .unwrap();
        assert!(e.message.contains("quantization 'q4'"), "{e}");
        let e = index
            .search(base.row(0), 1, r#"{"ef_search": 3}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("unknown field `ef_search`"), "{e}");
    }
}
