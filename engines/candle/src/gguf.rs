//! `quantization: gguf`: a Llama model folder imported from a GGUF file
//! runs on the GGUF's own quantized tensors, as shipped, rather than on
//! the folder's dequantized `model.safetensors`.
//!
//! The host imports a GGUF (`path: FILE.gguf`) into a folder of
//! `config.json` + `model.safetensors` and records the source beside it in
//! `imported-from.json` (`{"gguf": "/abs/path", "bytes": N, "mtime_ns":
//! "..."}`, see the host's `models.rs`). This module follows that record
//! back to the file, checks that it is the same file (size and
//! modification time) and that every tensor lies inside it, and reads its
//! tensors with candle's [`gguf_file`](candle_core::quantized::gguf_file) reader: quantized blocks stay
//! blocks ([`crate::quant`]), tensors the file stores as floats (norms,
//! often the embeddings) load as f32. The model's shapes come from the
//! folder's `config.json`, which the importer wrote from the same file's
//! metadata; every tensor's shape is checked against it.
//!
//! # Names and the q/k row order
//!
//! Tensors are asked for by their Hugging Face names and found under
//! llama.cpp's (`blk.N.attn_q.weight` for `model.layers.N.self_attn.
//! q_proj.weight`, ...: the mapping the importer, `engine-matrix-import`,
//! reads the other way). llama.cpp's converter stores the rows of the q
//! and k projections permuted per head, for its interleaved RoPE; the
//! importer un-permutes them, and so does this module, on the blocks: a
//! row is whole blocks, so reordering rows is copying bytes and loses
//! nothing. The model then runs HF's `rotate_half` RoPE unchanged on
//! either source. (candle-transformers' `quantized_llama` keeps the
//! permuted rows and uses the interleaved `rope_i` instead; un-permuting
//! once at load keeps one attention path and one KV-cache layout.)
//!
//! The `llama` and `qwen2` architectures are read (the importer's).
//! llama.cpp's Qwen2 converter permutes nothing, so a `qwen2` file's rows
//! are used as stored, and its q/k/v biases (`blk.N.attn_q.bias`, ...)
//! load as f32. The attention scale, folded into the q rows of f32
//! weights, multiplies the queries after RoPE instead, since a GGUF's
//! blocks are used unchanged.

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::QTensor;
use candle_core::{Device, Result, Tensor};
use engine_api::EngineError;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The record the host writes beside an imported folder.
pub const SOURCE: &str = "imported-from.json";

/// llama.cpp's names for the Hugging Face ones of a layer, and whether
/// the rows are permuted (q: attention heads, k: key-value heads).
const LAYER_NAMES: [(&str, &str, Permuted); 12] = [
    ("input_layernorm.weight", "attn_norm.weight", Permuted::No),
    (
        "post_attention_layernorm.weight",
        "ffn_norm.weight",
        Permuted::No,
    ),
    ("self_attn.q_proj.weight", "attn_q.weight", Permuted::Heads),
    (
        "self_attn.k_proj.weight",
        "attn_k.weight",
        Permuted::KvHeads,
    ),
    ("self_attn.v_proj.weight", "attn_v.weight", Permuted::No),
    // Qwen2's (its files are not permuted; a llama file with q/k biases
    // would have them permuted too, and 1-D rows cannot be reordered as
    // blocks, which fails with the tensor's name)
    ("self_attn.q_proj.bias", "attn_q.bias", Permuted::Heads),
    ("self_attn.k_proj.bias", "attn_k.bias", Permuted::KvHeads),
    ("self_attn.v_proj.bias", "attn_v.bias", Permuted::No),
    (
        "self_attn.o_proj.weight",
        "attn_output.weight",
        Permuted::No,
    ),
    ("mlp.gate_proj.weight", "ffn_gate.weight", Permuted::No),
    ("mlp.up_proj.weight", "ffn_up.weight", Permuted::No),
    ("mlp.down_proj.weight", "ffn_down.weight", Permuted::No),
];

/// Whether llama.cpp permuted a tensor's rows, and over how many heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permuted {
    No,
    Heads,
    KvHeads,
}

/// llama.cpp's name for Hugging Face tensor `hf`, and whether its rows are
/// permuted; `None` for a name a Llama GGUF does not have.
pub fn gguf_name(hf: &str) -> Option<(String, Permuted)> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some((f.to_string(), Permuted::No));
    }
    let (layer, part) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, g, p) = LAYER_NAMES.iter().find(|(h, _, _)| *h == part)?;
    Some((format!("blk.{layer}.{g}"), *p))
}

/// The order of HF rows in llama.cpp's permuted `[heads * head_dim, in]`
/// projection: HF row `(h, j, i)` (half `j`, index `i`) is GGUF row
/// `(h, i, j)`.
pub fn unpermuted_order(rows: usize, heads: usize) -> Option<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return None;
    }
    let half = rows / heads / 2;
    let mut order = Vec::with_capacity(rows);
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                order.push(h * 2 * half + i * 2 + j);
            }
        }
    }
    Some(order)
}

/// The tensors of the GGUF file a model folder was imported from.
pub struct GgufWeights {
    file: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
    heads: usize,
    kv_heads: usize,
    /// llama.cpp permuted the q/k rows (`llama` files; `qwen2` ones not).
    permuted: bool,
}

impl std::fmt::Debug for GgufWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWeights")
            .field("file", &self.file)
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

fn invalid(file: &Path, why: impl std::fmt::Display) -> EngineError {
    EngineError::invalid_model(format!("{}: {why}", file.display()))
}

impl GgufWeights {
    /// Opens the GGUF that `dir/imported-from.json` names, for a model of
    /// `heads` attention and `kv_heads` key-value heads. A folder without
    /// the record is `unsupported` (it was not imported from a GGUF); a
    /// missing, changed or truncated GGUF is `invalid_model`, one of
    /// another architecture than llama or qwen2 `unsupported`; every
    /// error names the file.
    pub fn open_imported(
        dir: &Path,
        heads: usize,
        kv_heads: usize,
    ) -> std::result::Result<Self, EngineError> {
        let record = dir.join(SOURCE);
        let text = std::fs::read_to_string(&record).map_err(|e| {
            EngineError::unsupported(format!(
                "quantization gguf runs the GGUF file a folder was imported from, and {} \
                 cannot be read ({e}): load the model from its .gguf path",
                record.display()
            ))
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| invalid(&record, format!("invalid JSON: {e}")))?;
        let Some(file) = v["gguf"].as_str().map(PathBuf::from) else {
            return Err(invalid(&record, "no \"gguf\" path"));
        };
        let meta = std::fs::metadata(&file).map_err(|e| {
            invalid(
                &file,
                format!(
                    "the GGUF named by {} is not readable: {e}",
                    record.display()
                ),
            )
        })?;
        if let Some(bytes) = v["bytes"].as_u64() {
            if bytes != meta.len() {
                return Err(invalid(
                    &file,
                    format!(
                        "has {} bytes, {bytes} when it was imported ({}): re-import it",
                        meta.len(),
                        record.display()
                    ),
                ));
            }
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos().to_string());
        if let (Some(then), Some(now)) = (v["mtime_ns"].as_str(), mtime.as_deref()) {
            if then != now {
                return Err(invalid(
                    &file,
                    format!(
                        "modified since it was imported ({}): re-import it",
                        record.display()
                    ),
                ));
            }
        }
        let f = File::open(&file).map_err(|e| invalid(&file, format!("cannot open: {e}")))?;
        let mut reader = BufReader::new(f);
        let content = Content::read(&mut reader).map_err(|e| {
            invalid(
                &file,
                format!("not a readable GGUF file: {}", crate::error_text(&e)),
            )
        })?;
        for (name, info) in &content.tensor_infos {
            let t = info.ggml_dtype;
            let bytes = info.shape.elem_count() / t.block_size() * t.type_size();
            let end = content.tensor_data_offset + info.offset + bytes as u64;
            if end > meta.len() {
                return Err(invalid(
                    &file,
                    format!(
                        "truncated: tensor {name} ends at byte {end}, the file has {} bytes",
                        meta.len()
                    ),
                ));
            }
        }
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|a| a.to_string().ok().cloned())
            .unwrap_or_default();
        if arch != "llama" && arch != "qwen2" {
            return Err(EngineError::unsupported(format!(
                "{}: quantization gguf reads llama and qwen2 GGUF files, not architecture {arch:?}",
                file.display()
            )));
        }
        Ok(GgufWeights {
            file,
            content,
            reader: Mutex::new(reader),
            heads,
            kv_heads,
            permuted: arch == "llama",
        })
    }

    /// The GGUF file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Tensor `hf` (a Hugging Face name) as stored, q/k rows un-permuted,
    /// checked to be `shape`.
    pub fn tensor(&self, hf: &str, shape: &[usize]) -> Result<QTensor> {
        let file = self.file.display();
        let Some((name, permuted)) = gguf_name(hf) else {
            candle_core::bail!("{file}: no GGUF name for tensor {hf}")
        };
        if !self.content.tensor_infos.contains_key(&name) {
            candle_core::bail!("{file}: tensor {name} ({hf}) is missing")
        }
        // a poisoned lock only means another read panicked; the reader
        // seeks before every read
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let q = self
            .content
            .tensor(&mut *reader, &name, &Device::Cpu)
            .map_err(|e| {
                candle_core::Error::msg(format!("{file}: tensor {name}: {}", crate::error_text(&e)))
            })?;
        if q.shape().dims() != shape {
            candle_core::bail!(
                "{file}: tensor {name} ({hf}) has shape {:?}, config.json implies {shape:?}",
                q.shape().dims()
            )
        }
        let heads = match permuted {
            _ if !self.permuted => return Ok(q),
            Permuted::No => return Ok(q),
            Permuted::Heads => self.heads,
            Permuted::KvHeads => self.kv_heads,
        };
        if shape.len() != 2 {
            candle_core::bail!(
                "{file}: tensor {name} ({hf}) of a llama file is permuted per head but has {} \
                 dimensions: llama GGUFs with q/k biases are not read",
                shape.len()
            )
        }
        let Some(order) = unpermuted_order(shape[0], heads) else {
            candle_core::bail!(
                "{file}: tensor {name}: {} rows are not {heads} heads of pairs",
                shape[0]
            )
        };
        crate::quant::permute_rows(&q, &order)
    }

    /// Tensor `hf` as f32 (dequantized if the file quantized it). A
    /// Qwen2 file's absent q/k/v bias is zeros: llama.cpp reads those
    /// biases as optional, absent meaning none (and the importer writes
    /// zeros for them).
    pub fn dense(&self, hf: &str, shape: &[usize]) -> Result<Tensor> {
        let absent =
            gguf_name(hf).is_some_and(|(n, _)| !self.content.tensor_infos.contains_key(&n));
        if absent && !self.permuted && hf.ends_with("_proj.bias") {
            return Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu);
        }
        self.tensor(hf, shape)?.dequantize(&Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_row_order() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.k_proj.weight"),
            Some(("blk.3.attn_k.weight".into(), Permuted::KvHeads))
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name("lm_head.weight").unwrap().0, "output.weight");
        // one head of 8 rows: GGUF rows are (i, j) pairs, HF rows halves
        assert_eq!(
            unpermuted_order(8, 1).unwrap(),
            vec![0, 2, 4, 6, 1, 3, 5, 7]
        );
        assert_eq!(unpermuted_order(6, 2), None);
    }
}
