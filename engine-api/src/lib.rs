//! The one crate that the `engine-matrix` host and every engine plugin share.
//!
//! # Design
//!
//! Plugins are `cdylib`s loaded at run time, possibly built by another team
//! with another compiler, so everything that crosses the boundary is an
//! [`abi_stable`] type: a prefix-type root module ([`EnginePlugin`]) whose
//! type layout and version are checked when the library is loaded, and three
//! `#[sabi_trait]` objects:
//!
//! * [`ffi::EngineFfi`]: `info()` and `load(model, options) -> Model`;
//! * [`ffi::ModelFfi`]: non-blocking `submit(requests, sink)`, `memory()`,
//!   `score(tokens) -> logits`;
//! * [`ffi::SinkFfi`]: implemented by the host; the engine calls it once per
//!   decode step with that step's tokens for all sequences of a submission,
//!   then `done` or `error` for each request.
//!
//! Plugin authors never touch those: they implement the plain Rust traits
//! [`Engine`] and [`Model`] and call [`export_engine!`]. The generated glue
//! catches panics at the boundary (a panic must never unwind across
//! `extern "C"`), turning them into [`EngineError`]s of kind
//! [`ErrorKind::Panic`].
//!
//! Timestamps are taken by the host when a sink call arrives (one monotonic
//! clock for every engine), never by the engine: that is what makes TTFT and
//! inter-token latency comparable across engines. A sink call is therefore on
//! the hot path of every decode step and must stay far below a microsecond;
//! `host/benches/sink.rs` measures it.
//!
//! Options that only one engine understands travel as a JSON object
//! ([`LoadOptions::options_json`]) so that adding an engine option never
//! changes the ABI.
//!
//! Vector-index engines (the retrieval benchmark) are a second kind of
//! plugin with a root module of their own: see [`index`].

pub mod caps;
pub mod ffi;
pub mod index;
mod plugin;
pub mod tunable;
mod types;

pub use abi_stable;
pub use ffi::{EngineBox, ModelBox, SinkBox};
pub use plugin::{ffi_engine, Engine, EnginePlugin, EnginePluginRef, Model, ROOT_MODULE_NAME};
pub use types::*;

/// The version of this crate, which is the version a plugin is built against.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exports an engine from a plugin crate (`crate-type = ["cdylib"]`).
///
/// `$ctor` is an expression of type `Result<E, EngineError>` (or `E`
/// wrapped in `Ok`) where `E: Engine`; it runs when the host instantiates
/// the engine, and a panic inside it becomes an [`EngineError`].
///
/// The plugin crate must depend on `abi_stable` directly (the attribute
/// macro below refers to `::abi_stable`).
#[macro_export]
macro_rules! export_engine {
    ($ctor:expr) => {
        extern "C" fn __engine_matrix_new_engine(
        ) -> $crate::abi_stable::std_types::RResult<$crate::EngineBox, $crate::EngineError> {
            $crate::ffi_engine(|| $ctor)
        }

        /// The root module the host loads.
        #[::abi_stable::export_root_module]
        pub fn __engine_matrix_root_module() -> $crate::EnginePluginRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::EnginePlugin {
                api_version: $crate::abi_stable::std_types::RStr::from_str($crate::API_VERSION),
                new_engine: __engine_matrix_new_engine,
            }
            .leak_into_prefix()
        }
    };
}
