//! The plugin author's side: two plain traits, the root module, and the
//! panic-catching glue that [`crate::export_engine!`] expands to.

use crate::ffi::{EngineFfi, EngineFfi_TO, ModelFfi, ModelFfi_TO};
use crate::types::*;
use crate::{EngineBox, ModelBox, SinkBox};
use abi_stable::library::RootModule;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RStr, RVec};
use abi_stable::StableAbi;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The name the root module is exported under.
pub const ROOT_MODULE_NAME: &str = "engine_matrix_engine";

/// Implemented by every engine plugin.
pub trait Engine: Send + Sync + 'static {
    fn info(&self) -> EngineInfo;
    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn Model>, EngineError>;
}

/// A loaded model; see [`crate::ffi::ModelFfi`] for the contract.
pub trait Model: Send + Sync + 'static {
    fn submit(&self, requests: Vec<Request>, sink: SinkBox) -> Result<(), EngineError>;
    fn memory(&self) -> MemoryStats;
    fn score(&self, tokens: &[u32]) -> Result<Logits, EngineError>;
    /// What the engine chose for this model (its kernels, and how), as a
    /// JSON object; empty (the default) when it says nothing.
    fn describe(&self) -> String {
        String::new()
    }
}

/// The root module of an engine plugin. New fields may only be added at
/// the end (it is a prefix type), which keeps older plugins loadable.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = EnginePluginRef)))]
#[sabi(missing_field(panic))]
pub struct EnginePlugin {
    /// The engine-api version the plugin was compiled against.
    pub api_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub new_engine: extern "C" fn() -> RResult<EngineBox, EngineError>,
}

impl RootModule for EnginePluginRef {
    abi_stable::declare_root_module_statics! {EnginePluginRef}
    const BASE_NAME: &'static str = ROOT_MODULE_NAME;
    const NAME: &'static str = ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning a panic into an [`ErrorKind::Panic`] error.
pub(crate) fn guard<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> RResult<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.into(),
        Err(payload) => RResult::RErr(EngineError::new(
            ErrorKind::Panic,
            format!("engine panicked in {what}: {}", panic_message(&*payload)),
        )),
    }
}

struct EngineAdapter<E>(E);
struct ModelAdapter(Box<dyn Model>);

impl<E: Engine> EngineFfi for EngineAdapter<E> {
    fn info(&self) -> RResult<EngineInfo, EngineError> {
        guard("info", || Ok(self.0.info()))
    }
    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> RResult<ModelBox, EngineError> {
        guard("load", || {
            let model = self.0.load(spec, options)?;
            Ok(ModelFfi_TO::from_value(ModelAdapter(model), TD_Opaque))
        })
    }
}

impl ModelFfi for ModelAdapter {
    fn submit(&self, requests: RVec<Request>, sink: SinkBox) -> RResult<(), EngineError> {
        guard("submit", || self.0.submit(requests.into_vec(), sink))
    }
    fn memory(&self) -> MemoryStats {
        match guard("memory", || Ok(self.0.memory())) {
            RResult::ROk(m) => m,
            RResult::RErr(_) => MemoryStats::default(),
        }
    }
    fn describe(&self) -> abi_stable::std_types::RString {
        match guard("describe", || Ok(self.0.describe())) {
            RResult::ROk(s) => s.into(),
            RResult::RErr(_) => abi_stable::std_types::RString::new(),
        }
    }
    fn score(&self, tokens: RSlice<'_, u32>) -> RResult<Logits, EngineError> {
        guard("score", || self.0.score(tokens.as_slice()))
    }
}

/// Used by [`crate::export_engine!`]: builds the engine behind the FFI
/// object, catching panics from the constructor.
pub fn ffi_engine<E: Engine>(
    ctor: impl FnOnce() -> Result<E, EngineError>,
) -> RResult<EngineBox, EngineError> {
    guard("engine constructor", || {
        let engine = ctor()?;
        Ok(EngineFfi_TO::from_value(EngineAdapter(engine), TD_Opaque))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Boom;
    impl Engine for Boom {
        fn info(&self) -> EngineInfo {
            panic!("info exploded")
        }
        fn load(&self, _: &ModelSpec, _: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
            Err(EngineError::unsupported("no models here"))
        }
    }

    #[test]
    fn panics_become_errors_and_errors_cross_unchanged() {
        let RResult::ROk(engine) = ffi_engine(|| Ok(Boom)) else {
            panic!("constructor failed")
        };
        let err = engine.info().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Panic);
        assert!(err.message.contains("info exploded"), "{err}");
        let spec = ModelSpec {
            name: "m".into(),
            architecture: "gpt2".into(),
            path: "/nowhere".into(),
            dtype: "f32".into(),
            quantization: "none".into(),
        };
        let RResult::RErr(err) = engine.load(&spec, &LoadOptions::default()) else {
            panic!("load should fail")
        };
        assert!(err.is_unsupported());
        assert_eq!(err.message.as_str(), "no models here");
    }

    #[test]
    fn constructor_panic_is_caught() {
        let RResult::RErr(err) = ffi_engine::<Boom>(|| panic!("ctor failed")) else {
            panic!("constructor should fail")
        };
        assert_eq!(err.kind, ErrorKind::Panic);
        assert!(err.message.contains("ctor failed"));
    }
}
