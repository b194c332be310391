//! The same model at every GGUF type, for llama.cpp's llama-server: a
//! GGUF file derived from one source GGUF per type, cached beside the
//! imported folders (`<cache>/models/<stem>-<type>.gguf`).
//!
//! * `gguf`: the source itself, as shipped;
//! * `f32`, `f16`: the source dequantized ([`engine_matrix_import::float_gguf`]);
//! * any type llama.cpp's `llama-quantize` knows (`q8_0`, `q4_0`, `q4_1`,
//!   `q5_0`, `q4_k_s`, `q4_k_m`, `q6_k`, ...; `q4_k` is `q4_k_s`, the
//!   mostly-Q4_K file closest to candle's all-Q4_K `q4_k`): the f32 file
//!   above, quantized by `llama-quantize` built from the same llama.cpp
//!   sources as llama-server (`scripts/provision`).
//!
//! So every derived file descends from the weights the in-process engines
//! load (the importer dequantizes the same tensors), and a
//! quantization-versus-quality comparison across engines compares
//! quantizers, not checkpoints. A quantized source (SmolLM2 ships Q4_1)
//! re-quantized to another type carries both roundings: the record's
//! `source` says which file it came from.
//!
//! A derived file is rebuilt when its source changes (size, modification
//! time) or the recipe does (the llama-quantize binary); derivations of one
//! file are serialised across processes with a lock file.

use anyhow::{bail, Context, Result};
use engine_matrix_import::float_gguf::{self, FloatType, TensorFacts};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `llama-quantize`'s type name for `ty` (lower case in matrices), or
/// `None` for the types this module writes itself.
fn quantize_name(ty: &str) -> Option<String> {
    match ty {
        "gguf" | "f32" | "f16" => None,
        "q4_k" => Some("Q4_K_S".into()),
        other => Some(other.to_ascii_uppercase()),
    }
}

/// Whether `ty` is a name this module can be asked for (letters, digits
/// and underscores; `llama-quantize` decides whether it knows it).
fn valid_name(ty: &str) -> bool {
    !ty.is_empty() && ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where `llama-quantize` is: `$LLAMA_QUANTIZE`, else beside
/// `$LLAMA_SERVER` (scripts/provision builds both into one folder).
pub fn llama_quantize() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LLAMA_QUANTIZE") {
        return Ok(PathBuf::from(p));
    }
    if let Some(server) = std::env::var_os("LLAMA_SERVER") {
        let p = Path::new(&server).with_file_name("llama-quantize");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "llama-quantize not found: set LLAMA_QUANTIZE (scripts/provision builds it beside llama-server; \
         `scripts/provision --print` names it)"
    )
}

/// The cache path of `src` at type `ty`.
pub fn derived_path(src: &Path, ty: &str) -> PathBuf {
    crate::models::cached_from(src, &format!("{ty}.gguf"))
}

/// What identifies a derivation: the source's path, size and modification
/// time, the type, and the quantizer's path, size and modification time.
fn recipe(src: &Path, ty: &str, quantizer: Option<&Path>) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "source": crate::models::fingerprint(src)?,
        "type": ty,
        "llama_quantize": quantizer.map(crate::models::fingerprint).transpose()?,
    }))
}

/// A GGUF of the model at one type.
#[derive(Debug, Clone)]
pub struct Derived {
    pub path: PathBuf,
    pub ty: String,
    pub source: PathBuf,
    pub facts: TensorFacts,
}

impl Derived {
    /// The record a cell served from it carries (`model_details.gguf`).
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.ty,
            "file": self.path.display().to_string(),
            "source": self.source.display().to_string(),
            "parameters": self.facts.parameters,
            "weight_bytes": self.facts.weight_bytes,
            "bits_per_weight": (self.facts.bits_per_weight() * 1000.0).round() / 1000.0,
            "tensor_types": self.facts.types.iter()
                .map(|(t, n)| serde_json::json!({"type": t, "parameters": n}))
                .collect::<Vec<_>>(),
        })
    }
}

/// `src` at type `ty`: the cached file, derived first when missing or
/// stale. `out` overrides the cache path (`model quantize --out`).
pub fn ensure(src: &Path, ty: &str, out: Option<&Path>) -> Result<Derived> {
    let ty = ty.to_ascii_lowercase();
    if !valid_name(&ty) {
        bail!("GGUF type {ty:?}: not a type name (gguf, f32, f16, or a llama-quantize type such as q8_0, q4_0, q4_k_m)");
    }
    if !src.is_file() {
        bail!("{}: no such GGUF file", src.display());
    }
    let finish = |path: PathBuf| -> Result<Derived> {
        let facts = float_gguf::tensor_facts(&path)?;
        Ok(Derived {
            path,
            ty: ty.clone(),
            source: src.to_path_buf(),
            facts,
        })
    };
    if ty == "gguf" {
        return finish(src.to_path_buf());
    }
    let quantizer = quantize_name(&ty).map(|_| llama_quantize()).transpose()?;
    let path = out.map_or_else(|| derived_path(src, &ty), Path::to_path_buf);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let side = |ext: &str| {
        let mut n = path.file_name().unwrap_or_default().to_os_string();
        n.push(ext);
        path.with_file_name(n)
    };
    let lock_path = side(".lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let want = recipe(src, &ty, quantizer.as_deref())?;
    let record = side(".json");
    let have = std::fs::read_to_string(&record)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if have.as_ref() == Some(&want) && path.is_file() {
        return finish(path);
    }
    let _ = std::fs::remove_file(&record);
    match (&quantizer, ty.as_str()) {
        (None, "f16") => {
            float_gguf::write_float(src, FloatType::F16, &path)?;
        }
        (None, _) => {
            float_gguf::write_float(src, FloatType::F32, &path)?;
        }
        (Some(q), _) => {
            let f32_file = ensure(src, "f32", None)?;
            quantize(q, &f32_file.path, &path, &ty)?;
        }
    }
    std::fs::write(&record, serde_json::to_string_pretty(&want)?)
        .with_context(|| format!("cannot write {}", record.display()))?;
    finish(path)
}

/// Runs `llama-quantize IN TMP TYPE` and renames TMP to `out`; its output
/// goes to `out`'s log beside it, whose last lines a failure quotes.
fn quantize(quantizer: &Path, input: &Path, out: &Path, ty: &str) -> Result<()> {
    let name = quantize_name(ty).unwrap_or_else(|| ty.to_ascii_uppercase());
    let mut tmp_name = out.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    let mut log_name = out.file_name().unwrap_or_default().to_os_string();
    log_name.push(".log");
    let log = out.with_file_name(log_name);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let output = Command::new(quantizer)
        .arg(input)
        .arg(&tmp)
        .arg(&name)
        .arg(threads.to_string())
        .output()
        .with_context(|| format!("cannot run {}", quantizer.display()))?;
    let mut text = output.stdout.clone();
    text.extend_from_slice(&output.stderr);
    let _ = std::fs::write(&log, &text);
    if !output.status.success() || !tmp.is_file() {
        let _ = std::fs::remove_file(&tmp);
        let text = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = text.lines().rev().take(4).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{} {} -> {name} failed ({}): {}",
            quantizer.display(),
            input.display(),
            output.status,
            tail.join(" | ")
        );
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot rename into {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_map_to_llama_quantize_names() {
        assert_eq!(quantize_name("q8_0").as_deref(), Some("Q8_0"));
        assert_eq!(quantize_name("q4_k").as_deref(), Some("Q4_K_S"));
        assert_eq!(quantize_name("q4_k_m").as_deref(), Some("Q4_K_M"));
        assert_eq!(quantize_name("f32"), None);
        assert_eq!(quantize_name("gguf"), None);
        assert!(valid_name("q4_k_m"));
        assert!(!valid_name("q4 k"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(""));
    }

    #[test]
    fn derived_files_live_in_the_model_cache_by_stem_and_type() {
        let p = derived_path(Path::new("/x/SmolLM2.Q4_1.gguf"), "q8_0");
        assert!(
            p.ends_with("models/SmolLM2.Q4_1-q8_0.gguf"),
            "{}",
            p.display()
        );
    }
}
