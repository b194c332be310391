//! A deliberately broken plugin: it exports the engine-matrix root module
//! as an *older* engine-api (0.0.9) would, so the host must refuse it with
//! a one-line error naming the file and both versions.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RStr;
use abi_stable::{export_root_module, prefix_type::PrefixTypeTrait, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OldPluginRef)))]
#[sabi(missing_field(panic))]
pub struct OldPlugin {
    #[sabi(last_prefix_field)]
    pub api_version: RStr<'static>,
}

impl RootModule for OldPluginRef {
    abi_stable::declare_root_module_statics! {OldPluginRef}
    const BASE_NAME: &'static str = engine_api::ROOT_MODULE_NAME;
    const NAME: &'static str = engine_api::ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.0.9");
}

#[export_root_module]
pub fn root() -> OldPluginRef {
    OldPlugin {
        api_version: RStr::from_str("0.0.9"),
    }
    .leak_into_prefix()
}
