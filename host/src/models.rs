//! Where a model's folder comes from, for every command that names one
//! (`run`'s matrices, `serve`, `generate`): a Hugging Face folder as it
//! is, or a GGUF file imported once per dtype into the model cache
//! (`<cache>/models/<file stem>-<dtype>`, see `engine-matrix model
//! import`), re-imported when the GGUF changes (its size and modification
//! time are recorded beside the import).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The file recording which GGUF an imported folder came from.
const SOURCE: &str = "imported-from.json";

/// True for a path that names a GGUF file.
pub fn is_gguf(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("gguf")
}

/// The cache folder `file` is imported into for `dtype`.
pub fn import_dir(file: &Path, dtype: &str) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    engine_kit::cache_dir()
        .join("models")
        .join(format!("{stem}-{dtype}"))
}

/// What identifies a GGUF's content cheaply: its path, size and
/// modification time.
fn fingerprint(file: &Path) -> Result<serde_json::Value> {
    let meta = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string());
    Ok(serde_json::json!({
        "gguf": std::path::absolute(file)?.display().to_string(),
        "bytes": meta.len(),
        "mtime_ns": mtime,
    }))
}

/// The folder of GGUF `file` imported in `dtype`, importing it first when
/// the cache has no import of this exact file. Returns the folder and
/// whether it was imported now.
pub fn ensure_imported(file: &Path, dtype: &str) -> Result<(PathBuf, bool)> {
    let Some(dt) = engine_matrix_import::parse_dtype(dtype) else {
        anyhow::bail!(
            "{}: cannot import in dtype {dtype:?} (f32, f16, bf16)",
            file.display()
        );
    };
    let dir = import_dir(file, dtype);
    let want = fingerprint(file)?;
    let have = std::fs::read_to_string(dir.join(SOURCE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if have.as_ref() == Some(&want) && dir.join("model.safetensors").is_file() {
        return Ok((dir, false));
    }
    engine_matrix_import::import(file, dt, &dir)?;
    std::fs::write(dir.join(SOURCE), serde_json::to_string_pretty(&want)?)
        .with_context(|| format!("cannot write {}", dir.join(SOURCE).display()))?;
    Ok((dir, true))
}
