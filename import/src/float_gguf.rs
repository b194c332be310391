//! A float GGUF (all f32, or f16 matrices) from any GGUF: every tensor
//! dequantized, under its own llama.cpp name and layout, with the source's
//! metadata (tokenizer, chat template, hyper-parameters) unchanged except
//! `general.file_type`.
//!
//! This is the input llama.cpp's `llama-quantize` wants, so that every GGUF
//! type engine-matrix derives for llama-server (q8_0, q4_0, q4_k_s, ...)
//! descends from the very weights the in-process engines load: the
//! importer dequantizes the same tensors, only renaming them for Hugging
//! Face (and un-permuting Q and K, which a GGUF keeps permuted, so nothing
//! is undone here).
//!
//! The tensors are written with candle-core's GGUF writer (the reader the
//! importer already uses), into a temporary file renamed into place.
//! `general.alignment` is dropped: the writer aligns to 32 bytes, GGUF's
//! default.

use crate::{io_error, Gguf, ImportError, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use std::path::Path;

/// llama.cpp's `general.file_type` (`enum llama_ftype`) of the two float
/// layouts.
const FTYPE_ALL_F32: u32 = 0;
const FTYPE_MOSTLY_F16: u32 = 1;

/// The float layout of the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    /// Every tensor f32.
    F32,
    /// Matrices f16, vectors (norms, biases) f32, as llama.cpp's converter
    /// writes `--outtype f16`.
    F16,
}

/// What [`write_float`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub tensors: usize,
    pub weight_bytes: u64,
}

/// Writes `src` as a float GGUF at `out` (replacing it).
pub fn write_float(src: &Path, float: FloatType, out: &Path) -> Result<Written> {
    let mut g = Gguf::open(src)?;
    let mut names: Vec<(u64, String)> = g
        .content
        .tensor_infos
        .iter()
        .map(|(n, t)| (t.offset, n.clone()))
        .collect();
    // the source's order
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    let mut weight_bytes = 0u64;
    for (_, name) in &names {
        let w = g.dequantized(name)?;
        let dtype = match float {
            FloatType::F16 if w.rank() >= 2 => GgmlDType::F16,
            _ => GgmlDType::F32,
        };
        let q = QTensor::quantize(&w, dtype).map_err(|e| ImportError::Tensor {
            file: src.to_path_buf(),
            tensor: name.clone(),
            why: format!("cannot write as {dtype:?}: {e}"),
        })?;
        weight_bytes += q.storage_size_in_bytes() as u64;
        tensors.push((name.clone(), q));
    }
    let ftype = Value::U32(match float {
        FloatType::F32 => FTYPE_ALL_F32,
        FloatType::F16 => FTYPE_MOSTLY_F16,
    });
    let mut keys: Vec<&String> = g
        .content
        .metadata
        .keys()
        .filter(|k| k.as_str() != "general.alignment" && k.as_str() != "general.file_type")
        .collect();
    keys.sort();
    let mut metadata: Vec<(&str, &Value)> = keys
        .iter()
        .map(|k| (k.as_str(), &g.content.metadata[*k]))
        .collect();
    metadata.push(("general.file_type", &ftype));
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();

    let mut tmp_name = out.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    let write = || -> Result<()> {
        let f = std::fs::File::create(&tmp).map_err(io_error(&tmp, "cannot create".into()))?;
        let mut w = std::io::BufWriter::new(f);
        gguf_file::write(&mut w, &metadata, &refs).map_err(|e| ImportError::Tensor {
            file: tmp.clone(),
            tensor: "(writing)".into(),
            why: e.to_string(),
        })?;
        let f = w
            .into_inner()
            .map_err(|e| io_error(&tmp, "cannot write".into())(e.into_error()))?;
        f.sync_all().map_err(io_error(&tmp, "cannot sync".into()))?;
        std::fs::rename(&tmp, out).map_err(io_error(out, "cannot rename into place".into()))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Written {
        tensors: tensors.len(),
        weight_bytes,
    })
}

/// What a GGUF's tensors are: how many parameters, how many bytes, and the
/// ggml types with their share of the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorFacts {
    pub parameters: u64,
    pub weight_bytes: u64,
    /// `general.file_type` (llama.cpp's `llama_ftype`), when present.
    pub file_type: Option<u64>,
    /// (ggml type, parameters), most parameters first.
    pub types: Vec<(String, u64)>,
}

impl TensorFacts {
    pub fn bits_per_weight(&self) -> f64 {
        if self.parameters == 0 {
            return 0.0;
        }
        self.weight_bytes as f64 * 8.0 / self.parameters as f64
    }
}

/// The [`TensorFacts`] of GGUF `file` (its header only).
pub fn tensor_facts(file: &Path) -> Result<TensorFacts> {
    let g = Gguf::open(file)?;
    let mut parameters = 0u64;
    let mut weight_bytes = 0u64;
    let mut types: Vec<(String, u64)> = Vec::new();
    for info in g.content.tensor_infos.values() {
        let elems = info.shape.elem_count() as u64;
        let block = info.ggml_dtype.block_size() as u64;
        parameters += elems;
        weight_bytes += elems / block * info.ggml_dtype.type_size() as u64;
        let name = format!("{:?}", info.ggml_dtype);
        match types.iter_mut().find(|(t, _)| *t == name) {
            Some((_, n)) => *n += elems,
            None => types.push((name, elems)),
        }
    }
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(TensorFacts {
        parameters,
        weight_bytes,
        file_type: g.int("general.file_type")?,
        types,
    })
}
