//! Finding and loading engine plugins.
//!
//! A plugin is a `cdylib` named `libem_<name>.so` (`em_<name>.dll`,
//! `libem_<name>.dylib`) exporting the [`engine_api::EnginePluginRef`] root
//! module (an LLM engine) or the [`engine_api::index::IndexPluginRef`] root
//! module (a vector-index engine, [`load_index`]); [`kind`] tells which
//! from the name the library's root module was exported under. Plugins are searched in `--plugins DIR`, then
//! `$ENGINE_MATRIX_PLUGINS`, then the folder of the `engine-matrix` binary.
//!
//! Each library is loaded with
//! `lib_header_from_path(path)?.init_root_module()` rather than
//! `RootModule::load_from_file`, because the latter caches one module per
//! interface type: a second plugin would silently come back as the first.
//! Loading checks the abi_stable version, engine-api's version number and
//! the layout of every type reachable from the root module. abi_stable's
//! report of a layout mismatch runs to about a thousand lines, so
//! [`PluginError`] keeps it for `--verbose` and displays one line.

use abi_stable::library::{lib_header_from_path, LibraryError};
use engine_api::index::{IndexEngineBox, IndexInfo, IndexPluginRef, INDEX_ROOT_MODULE_NAME};
use engine_api::{EngineBox, EngineError, EngineInfo, EnginePluginRef};
use std::path::{Path, PathBuf};

const PREFIX: &str = "em_";

/// Environment variable naming the plugin folder.
pub const PLUGINS_ENV: &str = "ENGINE_MATRIX_PLUGINS";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("engine plugin '{name}' not found: no {file} in {dir}")]
    NotFound {
        name: String,
        file: String,
        dir: PathBuf,
    },
    #[error(
        "plugin {path} was built against engine-api {plugin_version}, but this host uses engine-api {host_version}: rebuild the plugin against engine-api {host_version}"
    )]
    Version {
        path: PathBuf,
        plugin_version: String,
        host_version: String,
    },
    #[error(
        "plugin {path} (engine-api {plugin_version}) is ABI-incompatible with this host (engine-api {host_version}): the layouts of the types it shares differ; rebuild it against this engine-api (--verbose prints abi_stable's full report)"
    )]
    Abi {
        path: PathBuf,
        plugin_version: String,
        host_version: String,
        report: String,
    },
    #[error("{path} is not an engine-matrix plugin: {reason}")]
    NotAPlugin { path: PathBuf, reason: String },
    /// An LLM engine where an index engine is asked for, or the reverse.
    #[error("plugin {path}: {reason}")]
    WrongKind { path: PathBuf, reason: String },
    #[error("plugin {path} could not be loaded: {reason}")]
    Other { path: PathBuf, reason: String },
    #[error("plugin {path}: creating the engine failed: {error}")]
    Engine { path: PathBuf, error: EngineError },
}

impl PluginError {
    /// The full diagnostic, including abi_stable's layout report.
    pub fn verbose(&self) -> String {
        match self {
            PluginError::Abi { report, .. } => format!("{self}\n{report}"),
            _ => self.to_string(),
        }
    }
}

/// A plugin library found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFile {
    pub name: String,
    pub path: PathBuf,
}

/// A loaded engine.
pub struct LoadedEngine {
    pub file: PluginFile,
    pub engine: EngineBox,
    pub info: EngineInfo,
    pub api_version: String,
}

/// The plugin folder: the flag, then the environment, then the binary's
/// own folder.
pub fn plugin_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(PLUGINS_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The platform's file name for plugin `name`.
pub fn file_name(name: &str) -> String {
    format!(
        "{}{PREFIX}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

fn name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_prefix(std::env::consts::DLL_PREFIX)?
        .strip_suffix(std::env::consts::DLL_SUFFIX)?;
    stem.strip_prefix(PREFIX).map(str::to_string)
}

/// Every plugin file in `dir`, sorted by name.
pub fn discover(dir: &Path) -> std::io::Result<Vec<PluginFile>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(name) = name_of(&path) {
            if path.is_file() {
                found.push(PluginFile { name, path });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Finds plugin `name` in `dir`.
pub fn find(dir: &Path, name: &str) -> Result<PluginFile, PluginError> {
    let file = file_name(name);
    let path = dir.join(&file);
    if path.is_file() {
        Ok(PluginFile {
            name: name.to_string(),
            path,
        })
    } else {
        Err(PluginError::NotFound {
            name: name.to_string(),
            file,
            dir: dir.to_path_buf(),
        })
    }
}

/// Loads a plugin library and instantiates its engine.
pub fn load(file: &PluginFile) -> Result<LoadedEngine, PluginError> {
    let path = &file.path;
    let header = lib_header_from_path(path).map_err(|e| classify(path, None, e))?;
    if header.root_mod_consts().name() == INDEX_ROOT_MODULE_NAME {
        return Err(PluginError::WrongKind {
            path: path.clone(),
            reason: "it is a vector-index engine, not an LLM engine (index engines run retrieval scenarios)".into(),
        });
    }
    let plugin_version = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<EnginePluginRef>()
        .map_err(|e| classify(path, Some(&plugin_version), e))?;
    let api_version = module.api_version().to_string();
    let engine = (module.new_engine())()
        .into_result()
        .map_err(|error| PluginError::Engine {
            path: path.clone(),
            error,
        })?;
    let info = engine
        .info()
        .into_result()
        .map_err(|error| PluginError::Engine {
            path: path.clone(),
            error,
        })?;
    Ok(LoadedEngine {
        file: file.clone(),
        engine,
        info,
        api_version,
    })
}

/// What a plugin library holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An LLM engine ([`load`]).
    Engine,
    /// A vector-index engine ([`load_index`]).
    Index,
}

/// Which kind of engine `file` exports, from its root module's name (read
/// from the library's header, before any layout check).
pub fn kind(file: &PluginFile) -> Result<Kind, PluginError> {
    let header = lib_header_from_path(&file.path).map_err(|e| classify(&file.path, None, e))?;
    Ok(
        if header.root_mod_consts().name() == INDEX_ROOT_MODULE_NAME {
            Kind::Index
        } else {
            Kind::Engine
        },
    )
}

/// A loaded vector-index engine.
pub struct LoadedIndexEngine {
    pub file: PluginFile,
    pub engine: IndexEngineBox,
    pub info: IndexInfo,
    pub api_version: String,
}

/// Loads an index plugin library and instantiates its engine; an LLM
/// engine's library is refused as such.
pub fn load_index(file: &PluginFile) -> Result<LoadedIndexEngine, PluginError> {
    let path = &file.path;
    let header = lib_header_from_path(path).map_err(|e| classify(path, None, e))?;
    if header.root_mod_consts().name() != INDEX_ROOT_MODULE_NAME {
        return Err(PluginError::WrongKind {
            path: path.clone(),
            reason: format!(
                "it exports '{}', not a vector-index engine ('{INDEX_ROOT_MODULE_NAME}')",
                header.root_mod_consts().name()
            ),
        });
    }
    let plugin_version = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<IndexPluginRef>()
        .map_err(|e| classify(path, Some(&plugin_version), e))?;
    let api_version = module.api_version().to_string();
    let engine_error = |error| PluginError::Engine {
        path: path.clone(),
        error,
    };
    let engine = (module.new_index_engine())()
        .into_result()
        .map_err(engine_error)?;
    let info = engine.info().into_result().map_err(engine_error)?;
    Ok(LoadedIndexEngine {
        file: file.clone(),
        engine,
        info,
        api_version,
    })
}

/// Turns abi_stable's error into a one-line [`PluginError`].
pub fn classify(path: &Path, plugin_version: Option<&str>, e: LibraryError) -> PluginError {
    let host_version = engine_api::API_VERSION.to_string();
    let path = path.to_path_buf();
    match e {
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => PluginError::Version {
            path,
            plugin_version: actual_version.to_string(),
            host_version,
        },
        LibraryError::AbiInstability(report) => PluginError::Abi {
            path,
            plugin_version: plugin_version.unwrap_or("unknown").to_string(),
            host_version,
            report: report.to_string(),
        },
        LibraryError::GetSymbolError { .. } => PluginError::NotAPlugin {
            path,
            reason: "it does not export an abi_stable root module".into(),
        },
        LibraryError::InvalidAbiHeader(h) => PluginError::Other {
            path,
            reason: format!("it was built with an incompatible abi_stable ({h:?})"),
        },
        LibraryError::OpenError { err, .. } => PluginError::Other {
            path,
            reason: err.to_string(),
        },
        other => PluginError::Other {
            path,
            reason: first_line(&other.to_string()),
        },
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::sabi_types::VersionNumber;

    #[test]
    fn names_round_trip() {
        let f = file_name("bad-abi");
        assert!(f.contains("em_bad_abi"));
        assert_eq!(name_of(Path::new(&f)).as_deref(), Some("bad_abi"));
        assert_eq!(name_of(Path::new("libfoo.so")), None);
    }

    #[test]
    fn version_mismatch_is_one_line_naming_both_versions() {
        let e = LibraryError::IncompatibleVersionNumber {
            library_name: "engine_matrix_engine",
            expected_version: VersionNumber {
                major: 0,
                minor: 1,
                patch: 0,
            },
            actual_version: VersionNumber {
                major: 0,
                minor: 7,
                patch: 2,
            },
        };
        let msg = classify(Path::new("/p/libem_old.so"), None, e).to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("/p/libem_old.so"), "{msg}");
        assert!(msg.contains("engine-api 0.7.2"), "{msg}");
        assert!(
            msg.contains(&format!("engine-api {}", engine_api::API_VERSION)),
            "{msg}"
        );
    }

    #[test]
    fn missing_plugin_names_file_and_dir() {
        let e = find(Path::new("/nonexistent-dir"), "nope").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("'nope'") && msg.contains("/nonexistent-dir"),
            "{msg}"
        );
    }
}
