//! Finding and loading the ONNX Runtime shared library, without panics.
//!
//! ort's `load-dynamic` mode `dlopen`s the library at run time. Left to
//! itself, ort loads `$ORT_DYLIB_PATH` (else `libonnxruntime.so` from the
//! linker's search path) on its first API call and *panics* when that
//! fails. So this module decides the path itself, checks it (exists,
//! exports `OrtGetApiBase`, reports a version ort can drive), and only
//! then hands it to [`ort::init_from`]; every failure is an
//! [`EngineError`] that says how to provision the library.
//!
//! The library is looked for, in order:
//! 1. the engine option `library`;
//! 2. `$ORT_DYLIB_PATH`;
//! 3. the folder `scripts/provision` installs the PyPI wheel
//!    `onnxruntime==1.31.1` into: `$ENGINE_MATRIX_ENGINES_DIR` if set,
//!    else the `.engines/` folder of the checkout this plugin was built
//!    from.
//!
//! A process can hold one ONNX Runtime (ort keeps it in a global and one
//! ORT environment per process is allowed): the first successful load
//! pins it, and a later load that asks for another library fails with an
//! error naming both.

use engine_api::EngineError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The ONNX Runtime release `scripts/provision` installs and this plugin
/// is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";
/// Oldest minor release the ort bindings accept (its `api-31` feature).
pub const MIN_MINOR: u32 = 31;

const HOW: &str = "run scripts/provision (installs onnxruntime==1.31.1 from PyPI into .engines/), \
                   or point the engine option `library` or $ORT_DYLIB_PATH at a libonnxruntime.so";

/// A loaded ONNX Runtime.
pub struct Runtime {
    pub env: ort::environment::Environment,
    pub library: PathBuf,
    pub version: String,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .field("version", &self.version)
            .finish()
    }
}

/// Where `scripts/provision` puts the library.
pub fn provisioned_path() -> PathBuf {
    let root = std::env::var_os("ENGINE_MATRIX_ENGINES_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.engines"));
    root.join(format!("onnxruntime-{ORT_VERSION}"))
        .join("onnxruntime/capi")
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

/// The library path to use, from the option, the environment or the
/// provisioned folder; `Err` says where it looked.
pub fn resolve(option: Option<&str>) -> Result<PathBuf, EngineError> {
    let (path, origin) = if let Some(p) = option {
        (PathBuf::from(p), "engine option `library`")
    } else if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        (PathBuf::from(p), "$ORT_DYLIB_PATH")
    } else {
        (provisioned_path(), "the provisioned location")
    };
    if !path.is_file() {
        return Err(EngineError::runtime(format!(
            "ONNX Runtime library not found: {} (from {origin}) does not exist; {HOW}",
            path.display()
        )));
    }
    // ort resolves relative paths against the executable and panics if it
    // cannot find that; an absolute path avoids both surprises.
    path.canonicalize().map_err(|e| {
        EngineError::runtime(format!(
            "ONNX Runtime library {} (from {origin}): {e}",
            path.display()
        ))
    })
}

/// Reads the version string a library reports, without giving it to ort.
pub fn library_version(path: &Path) -> Result<String, EngineError> {
    let fail = |why: String| {
        EngineError::runtime(format!(
            "{}: not a usable ONNX Runtime library: {why}; {HOW}",
            path.display()
        ))
    };
    // SAFETY: loading a shared library runs its initialisers; the path is
    // one the user or the provisioning script chose as ONNX Runtime.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| fail(e.to_string()))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime
    // release (onnxruntime_c_api.h); the returned struct is static.
    let version = unsafe {
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|e| fail(format!("no OrtGetApiBase symbol ({e})")))?;
        let base = get();
        if base.is_null() {
            return Err(fail("OrtGetApiBase returned null".into()));
        }
        let s = ((*base).GetVersionString)();
        if s.is_null() {
            return Err(fail("GetVersionString returned null".into()));
        }
        std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned()
    };
    // The library stays loaded (ort will load it again, refcounted).
    std::mem::forget(lib);
    Ok(version)
}

/// Checks that ort can drive `version` (1.x with x >= [`MIN_MINOR`]).
pub fn check_version(path: &Path, version: &str) -> Result<(), EngineError> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(1), Some(minor)) if minor >= MIN_MINOR => Ok(()),
        _ => Err(EngineError::runtime(format!(
            "{}: ONNX Runtime {version}; this plugin needs 1.{MIN_MINOR} or newer \
             (built and tested with {ORT_VERSION}); {HOW}",
            path.display()
        ))),
    }
}

static LOADED: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

/// Loads ONNX Runtime (once per process) and returns it.
pub fn load(option: Option<&str>) -> Result<Arc<Runtime>, EngineError> {
    let path = resolve(option)?;
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = loaded.as_ref().filter(|rt| rt.library == path) {
        return Ok(rt.clone());
    }
    let version = library_version(&path)?;
    check_version(&path, &version)?;
    if let Some(rt) = loaded.as_ref() {
        return Err(EngineError::runtime(format!(
            "ONNX Runtime is already loaded in this process from {}; cannot also load {}",
            rt.library.display(),
            path.display()
        )));
    }
    let builder = ort::init_from(&path).map_err(|e| {
        EngineError::runtime(format!(
            "{}: ort cannot load it: {e}; {HOW}",
            path.display()
        ))
    })?;
    let env = builder
        .with_name("engine-matrix-onnx")
        .with_telemetry(false)
        .build()
        .map_err(|e| EngineError::runtime(format!("ONNX Runtime environment: {e}")))?;
    // ORT logs errors to stderr itself; every error also reaches us as a
    // Result and is reported with the cell, so keep its own log quiet.
    env.set_log_level(ort::logging::LogLevel::Fatal);
    let rt = Arc::new(Runtime {
        env,
        library: path,
        version,
    });
    *loaded = Some(rt.clone());
    Ok(rt)
}

/// What `info()` shows: the version and path of the library a load
/// without options would use, or why there is none. Does not pin it.
pub fn describe() -> Result<(String, PathBuf), EngineError> {
    if let Some(rt) = LOADED.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok((rt.version.clone(), rt.library.clone()));
    }
    let path = resolve(None)?;
    let version = library_version(&path)?;
    check_version(&path, &version)?;
    Ok((version, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ort_cannot_drive_are_refused() {
        let p = Path::new("/x/libonnxruntime.so");
        assert!(check_version(p, "1.31.1").is_ok());
        assert!(check_version(p, "1.32.0").is_ok());
        for bad in ["1.20.1", "2.0.0", "garbage", ""] {
            let e = check_version(p, bad).unwrap_err();
            assert!(
                e.message.contains("1.31") && e.message.contains("scripts/provision"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_missing_library_names_where_it_looked() {
        let e = resolve(Some("/nowhere/libonnxruntime.so")).unwrap_err();
        assert!(e.message.contains("/nowhere/libonnxruntime.so"), "{e}");
        assert!(e.message.contains("engine option `library`"), "{e}");
    }
}
