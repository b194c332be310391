//! A deliberately broken plugin whose `load` panics: the panic must be
//! caught at the boundary and reported as a failed cell, while the other
//! engines of the run go on.

use engine_api::{Engine, EngineError, EngineInfo, LoadOptions, Model, ModelSpec};

pub struct Panicky;

impl Engine for Panicky {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            name: "panicky".into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            runtime_version: "none".into(),
            devices: vec!["cpu".into()].into(),
            dtypes: vec!["f32".into()].into(),
            quantizations: vec!["none".into()].into(),
            capabilities: Default::default(),
            tunables: Default::default(),
        }
    }

    fn load(&self, spec: &ModelSpec, _: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
        panic!("deliberate panic while loading {}", spec.name)
    }
}

engine_api::export_engine!(Ok(Panicky));
