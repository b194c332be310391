//! `flat`: exact k-nearest-neighbour search over every vector, the
//! retrieval benchmark's ground truth and exact baseline (as ann-benchmarks'
//! `bruteforce-blas`).
//!
//! A search is one blocked matrix product of the queries against all
//! vectors (`gemm`, the crate candle's CPU backend uses) with a bounded
//! heap per query: `engine_matrix_retrieval::exact`, the code that
//! computes the ground truth. Its recall is 1 by construction, so a
//! recall below 1 from `flat` in a run means the harness, not the engine,
//! is wrong.
//!
//! Build options: none (the build copies the vectors and their norms).
//! Search parameters: `threads` (default: the build's), the rayon threads
//! one batch of queries is split over. Metrics: `l2`, `ip`, `cosine`.

use engine_api::index::{BuildSpec, Index, IndexEngine, IndexInfo, IndexMetric, SearchResult};
use engine_api::EngineError;
use engine_matrix_retrieval::{exact, Metric, Vectors};

/// The engine.
pub struct Flat;

/// A built index: the vectors themselves.
pub struct FlatIndex {
    vectors: Vectors,
    metric: Metric,
    threads: usize,
}

fn metric(m: IndexMetric) -> Metric {
    match m {
        IndexMetric::L2 => Metric::L2,
        IndexMetric::InnerProduct => Metric::InnerProduct,
        IndexMetric::Cosine => Metric::Cosine,
    }
}

/// Build options: none, so any key is an error that names it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildOptions {}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct SearchParams {
    threads: Option<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, EngineError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json)
        .map_err(|e| EngineError::invalid_argument(format!("flat {what}: {e}")))
}

impl IndexEngine for Flat {
    fn info(&self) -> IndexInfo {
        IndexInfo {
            name: "flat".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            library_version: "gemm 0.19".into(),
            metrics: IndexMetric::ALL.iter().map(|m| m.name().into()).collect(),
            build_params: Vec::new().into(),
            search_params: vec!["threads".into()].into(),
            concurrent_search: true,
        }
    }

    fn build(
        &self,
        vectors: &[f32],
        spec: &BuildSpec,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Box<dyn Index>, EngineError> {
        let _: BuildOptions = parse(spec.options_json.as_str(), "build options")?;
        let vectors = Vectors::new(spec.dim as usize, vectors.to_vec())
            .map_err(EngineError::invalid_argument)?;
        let n = vectors.len() as u64;
        progress(n, n);
        Ok(Box::new(FlatIndex {
            vectors,
            metric: metric(spec.metric),
            threads: spec.threads.max(1) as usize,
        }))
    }
}

impl Index for FlatIndex {
    fn search(
        &self,
        queries: &[f32],
        k: usize,
        params_json: &str,
    ) -> Result<SearchResult, EngineError> {
        let p: SearchParams = parse(params_json, "search parameters")?;
        let threads = match p.threads {
            None => self.threads,
            Some(t) if t >= 1 => t,
            Some(t) => {
                return Err(EngineError::invalid_argument(format!(
                    "flat search parameters: threads {t}: expected 1 or more"
                )))
            }
        };
        let q = Vectors::new(self.vectors.dim(), queries.to_vec())
            .map_err(|e| EngineError::invalid_argument(format!("flat search: queries: {e}")))?;
        let n = exact::knn(&self.vectors, &q, k, self.metric, threads);
        // Fewer vectors than k: the remaining slots are empty.
        let mut r = SearchResult::new(k, q.len());
        for i in 0..q.len() {
            let ids = n.ids_of(i).iter().map(|&x| x as u64);
            r.push_query(ids.zip(n.distances_of(i).iter().copied()));
        }
        Ok(r)
    }

    fn memory(&self) -> Option<u64> {
        Some(std::mem::size_of_val(self.vectors.as_slice()) as u64)
    }
}

engine_api::export_index_engine!(Ok(Flat));

#[cfg(test)]
mod tests {
    use super::*;
    use engine_matrix_retrieval::synthetic::{Mixture, Set};

    fn spec(dim: usize, m: IndexMetric) -> BuildSpec {
        BuildSpec {
            dim: dim as u32,
            metric: m,
            threads: 1,
            options_json: "{}".into(),
        }
    }

    #[test]
    fn flat_finds_the_exact_neighbours_and_pads_short_answers() {
        let mix = Mixture {
            dim: 16,
            clusters: 4,
            spread: 0.4,
            seed: 2,
        };
        let base = mix.generate(Set::Base, 700);
        let queries = mix.generate(Set::Queries, 9);
        for m in IndexMetric::ALL {
            let index = Flat
                .build(base.as_slice(), &spec(16, m), &|_, _| {})
                .unwrap();
            let r = index
                .search(queries.as_slice(), 5, "{\"threads\": 2}")
                .unwrap();
            let want = exact::knn(&base, &queries, 5, metric(m), 1);
            let ids: Vec<u64> = want.ids.iter().map(|&x| x as u64).collect();
            assert_eq!(r.ids.as_slice(), ids.as_slice(), "{m:?}");
        }
        let small = Flat
            .build(
                &base.as_slice()[..3 * 16],
                &spec(16, IndexMetric::L2),
                &|_, _| {},
            )
            .unwrap();
        let r = small.search(queries.row(0), 5, "{}").unwrap();
        assert_eq!(&r.ids.as_slice()[3..], &[engine_api::index::NO_ID; 2]);
        assert_eq!(small.memory(), Some(3 * 16 * 4));
    }

    #[test]
    fn bad_options_and_queries_are_refused_with_the_key() {
        let base = vec![0.0f32; 32];
        let e = Flat
            .build(
                &base,
                &BuildSpec {
                    options_json: "{\"m\": 16}".into(),
                    ..spec(16, IndexMetric::L2)
                },
                &|_, _| {},
            )
            .err()
            .unwrap();
        assert!(e.message.contains("unknown field `m`"), "{e}");
        let index = Flat
            .build(&base, &spec(16, IndexMetric::L2), &|_, _| {})
            .unwrap();
        let e = index.search(&base[..5], 1, "{}").err().unwrap();
        assert!(e.message.contains("queries"), "{e}");
        let e = index
            .search(&base[..16], 1, "{\"threads\": 0}")
            .err()
            .unwrap();
        assert!(e.message.contains("threads 0"), "{e}");
        let e = index
            .search(&base[..16], 1, r#"{"threads": "two"}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("invalid type"), "{e}");
    }
}
