//! engine-matrix test plugin `fault-index` (`libem_fault_index.so`): a
//! brute-force vector index (exact, L2 only) that misbehaves on demand, so
//! the host's isolation of index builds can be tested: a build that
//! crashes its worker must fail the cells of that index only, with the
//! reason, and leave every other result in place.
//!
//! Not a product engine: the workspace builds it only for the tests.
//!
//! Build options (the matrix engine's `options`):
//!
//! | option | values | default | meaning |
//! |---|---|---|---|
//! | `fault` | `none`, `abort_build`, `error_build`, `abort_search` | `none` | what goes wrong |
//!
//! `abort_build` aborts the process during the build (as an engine out of
//! memory or hitting a C++ assertion would), `error_build` returns an
//! error, `abort_search` aborts on the first search. Any other key or value
//! is an `invalid argument` error naming it.

use engine_api::index::{BuildSpec, Index, IndexEngine, IndexInfo, IndexMetric, SearchResult};
use engine_api::EngineError;

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Options {
    fault: Fault,
}

#[derive(serde::Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Fault {
    #[default]
    None,
    AbortBuild,
    ErrorBuild,
    AbortSearch,
}

struct FaultIndexEngine;

struct Flat {
    dim: usize,
    data: Vec<f32>,
    fault: Fault,
}

impl IndexEngine for FaultIndexEngine {
    fn info(&self) -> IndexInfo {
        IndexInfo {
            name: "fault-index".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            library_version: "none (brute force)".into(),
            metrics: vec!["l2".into()].into(),
            build_params: vec!["fault".into()].into(),
            search_params: Vec::new().into(),
            concurrent_search: true,
        }
    }

    fn build(
        &self,
        vectors: &[f32],
        spec: &BuildSpec,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Box<dyn Index>, EngineError> {
        let o: Options = serde_json::from_str(spec.options_json.as_str())
            .map_err(|e| EngineError::invalid_argument(format!("fault-index options: {e}")))?;
        if spec.metric != IndexMetric::L2 {
            return Err(EngineError::unsupported("fault-index builds l2 only"));
        }
        match o.fault {
            Fault::AbortBuild => {
                eprintln!("fault-index: aborting during the build, as asked");
                std::process::abort()
            }
            Fault::ErrorBuild => {
                return Err(EngineError::invalid_argument(
                    "fault-index: the build fails, as asked",
                ))
            }
            _ => {}
        }
        let n = vectors.len() / spec.dim.max(1) as usize;
        progress(n as u64, n as u64);
        Ok(Box::new(Flat {
            dim: spec.dim as usize,
            data: vectors.to_vec(),
            fault: o.fault,
        }))
    }
}

impl Index for Flat {
    fn search(&self, queries: &[f32], k: usize, _: &str) -> Result<SearchResult, EngineError> {
        if self.fault == Fault::AbortSearch {
            eprintln!("fault-index: aborting during a search, as asked");
            std::process::abort()
        }
        let mut out = SearchResult::new(k, queries.len() / self.dim);
        for q in queries.chunks_exact(self.dim) {
            let mut d: Vec<(u64, f32)> = self
                .data
                .chunks_exact(self.dim)
                .enumerate()
                .map(|(i, v)| {
                    let s: f32 = v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
                    (i as u64, s.sqrt())
                })
                .collect();
            d.sort_by(|a, b| a.1.total_cmp(&b.1));
            out.push_query(d);
        }
        Ok(out)
    }

    fn memory(&self) -> Option<u64> {
        Some(self.data.len() as u64 * 4)
    }
}

engine_api::export_index_engine!(Ok(FaultIndexEngine));
