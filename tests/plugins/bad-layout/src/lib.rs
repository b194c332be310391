//! A deliberately broken plugin: it claims the host's engine-api version
//! but its root module has another layout (as a plugin built from a
//! modified engine-api would), so abi_stable's layout check must refuse it
//! and the host must summarise the ~1,000-line report in one line.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RStr, RString};
use abi_stable::{export_root_module, prefix_type::PrefixTypeTrait, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = EnginePluginRef)))]
#[sabi(missing_field(panic))]
pub struct EnginePlugin {
    pub api_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub new_engine: extern "C" fn(u64) -> RString,
}

impl RootModule for EnginePluginRef {
    abi_stable::declare_root_module_statics! {EnginePluginRef}
    const BASE_NAME: &'static str = engine_api::ROOT_MODULE_NAME;
    const NAME: &'static str = engine_api::ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(engine_api::API_VERSION);
}

extern "C" fn new_engine(x: u64) -> RString {
    x.to_string().into()
}

#[export_root_module]
pub fn root() -> EnginePluginRef {
    EnginePlugin {
        api_version: RStr::from_str(engine_api::API_VERSION),
        new_engine,
    }
    .leak_into_prefix()
}
