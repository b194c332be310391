//! engine-matrix: runs LLM inference-engine benchmark matrices through
//! engine plugins and reports what the field measures (TTFT, TPOT, ITL,
//! end-to-end latency, throughput, memory), honestly: every cell ends as
//! `ok`, `unsupported` or `failed`, with its reason.
//!
//! One concern per module: [`matrix`] (the YAML matrix), [`plugins`]
//! (loading engines), [`synthetic`] (generated weights), [`prompts`],
//! [`measure`] (the sink that timestamps tokens), [`scenario`] (driving a
//! cell), [`metrics`] and [`stats`] (pure computations), [`output`] (result
//! files), [`report`] (Markdown), [`system`] (machine and memory), and
//! [`runner`] (the `run` command tying them together).

pub mod cell;
pub mod compare;
pub mod launch;
pub mod matrix;
pub mod measure;
pub mod metrics;
pub mod output;
pub mod plugins;
pub mod prompts;
pub mod report;
pub mod resample;
mod rng;
pub mod roofline;
pub mod runner;
pub mod scenario;
pub mod serve;
pub mod serving;
pub mod stats;
pub mod synthetic;
pub mod system;
pub mod telemetry;
pub mod testing;
pub mod worker;

/// An engine's info as JSON, for result files and `engines --json`.
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
    })
}
