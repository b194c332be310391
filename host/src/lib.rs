//! engine-matrix: runs LLM inference-engine benchmark matrices through
//! engine plugins and reports what the field measures (TTFT, TPOT, ITL,
//! end-to-end latency, throughput, memory), honestly: every cell ends as
//! `ok`, `unsupported` or `failed`, with its reason.
//!
//! Modules, by what they do (one concern each):
//!
//! * the matrix format: [`matrix`] (YAML, axes, placeholders, errors with
//!   file, line and field), [`synthetic`] (generated weights), [`prompts`];
//! * running, [`run`]: [`run::runner`] (the `run` command),
//!   [`run::worker`] (one process per engine), [`run::cell`] (one cell),
//!   [`run::launch`] (servers the harness starts); [`plugins`] (finding and
//!   loading engines);
//! * measuring, [`measure`]: the sink that timestamps tokens and its raw
//!   records, [`measure::scenario`] (driving a cell),
//!   [`measure::metrics`] (per-cell figures), [`measure::serving`]
//!   (open-loop load); [`telemetry`] (memory, GPU, energy, leaks),
//!   [`roofline`], [`system`]; [`pressure`] (load beside the engine);
//! * results: [`output`] (the run folder's files; their types are
//!   [`results`]), [`report`], [`compare`], [`baseline`] (named
//!   baselines), [`stats`] and [`resample`] (pure statistics);
//! * the rest: [`serve`] (an engine behind HTTP), [`dashboard`] (the
//!   runs under a folder, as a local web page, and a run as it happens),
//!   [`live`] (the live view's samples, alerts and state), [`clock`]
//!   (time stamps).
//!
//! [`matrix`], [`plugins`], [`synthetic`], [`results`], [`report`] (with
//! [`compare`]), [`stats`] and [`resample`] are crates of their own
//! (`matrix/`, `plugins/`, `synthetic/`, `results/`, `report/`,
//! `stats/`), re-exported here under these names; the plugins' test
//! helpers are the `engine-matrix-test-support` crate (`test-support/`).
//!
//! Dependencies between modules point one way: no module refers to one
//! that refers back to it, directly or through others
//! (`host/tests/module_graph.rs` checks it, and names the cycle a change
//! would close).

pub mod baseline;
pub mod clock;
pub mod dashboard;
pub mod generate;
pub mod gguf_types;
pub mod live;
pub mod measure;
pub mod merge;
pub mod models;
pub mod output;
pub mod perplexity;
pub mod pressure;
pub mod quality;
mod rng;
pub mod roofline;
pub mod run;
pub mod scale_out;
pub mod serve;
pub mod system;
pub mod telemetry;
pub mod workload;

// The matrix format and the statistics live in their own crates; these
// paths keep naming them.
pub use engine_matrix_format as matrix;
pub use engine_matrix_plugins as plugins;
pub use engine_matrix_reports as report;
pub use engine_matrix_reports::compare;
pub use engine_matrix_results as results;
pub use engine_matrix_stats::{resample, stats};
pub use engine_matrix_synthetic as synthetic;

/// An engine's info as JSON, for result files and `engines --json`.
/// A vector-index engine's info as JSON (`engines --json`, the run's
/// engine records).
pub fn index_info_json(i: &engine_api::index::IndexInfo) -> serde_json::Value {
    let list = |v: &engine_api::abi_stable::std_types::RVec<
        engine_api::abi_stable::std_types::RString,
    >| { v.iter().map(|s| s.to_string()).collect::<Vec<_>>() };
    serde_json::json!({
        "name": i.name.as_str(),
        "kind": "index",
        "engine_version": i.engine_version.as_str(),
        "library_version": i.library_version.as_str(),
        "metrics": list(&i.metrics),
        "build_params": list(&i.build_params),
        "search_params": list(&i.search_params),
        "concurrent_search": i.concurrent_search,
    })
}

pub fn info_json(info: &engine_api::EngineInfo) -> serde_json::Value {
    let list = |v: &engine_api::abi_stable::std_types::RVec<
        engine_api::abi_stable::std_types::RString,
    >| { v.iter().map(|s| s.to_string()).collect::<Vec<_>>() };
    serde_json::json!({
        "name": info.name.as_str(),
        "engine_version": info.engine_version.as_str(),
        "runtime_version": info.runtime_version.as_str(),
        "devices": list(&info.devices),
        "dtypes": list(&info.dtypes),
        "quantizations": list(&info.quantizations),
        "capabilities": list(&info.capabilities),
        "tunables": engine_api::tunable::parse(info.tunables.as_str())
            .map(|t| serde_json::to_value(t).unwrap_or_default())
            .unwrap_or_else(|e| serde_json::json!({"error": e})),
    })
}
