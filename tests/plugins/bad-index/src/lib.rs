//! A deliberately broken index plugin: it exports the index root module
//! (`engine_matrix_index`) at this engine-api's version, but with a layout
//! of its own (its constructor returns a number, not an index engine), so
//! the host's layout check must refuse it with a one-line error.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RString};
use abi_stable::{export_root_module, prefix_type::PrefixTypeTrait, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = SkewedRef)))]
#[sabi(missing_field(panic))]
pub struct Skewed {
    pub api_version: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub new_index_engine: extern "C" fn() -> RResult<u32, RString>,
}

impl RootModule for SkewedRef {
    abi_stable::declare_root_module_statics! {SkewedRef}
    const BASE_NAME: &'static str = engine_api::index::INDEX_ROOT_MODULE_NAME;
    const NAME: &'static str = engine_api::index::INDEX_ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = abi_stable::package_version_strings!();
}

extern "C" fn new_index_engine() -> RResult<u32, RString> {
    RResult::ROk(7)
}

#[export_root_module]
pub fn root() -> SkewedRef {
    Skewed {
        api_version: RStr::from_str(engine_api::API_VERSION),
        new_index_engine,
    }
    .leak_into_prefix()
}
