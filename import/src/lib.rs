//! `engine-matrix model import`: a GGUF file becomes a Hugging Face model
//! folder that every in-process engine can load unchanged.
//!
//! Two of llama.cpp's architectures (`general.architecture`, [`Arch`]) are
//! known:
//!
//! * `llama` becomes `LlamaForCausalLM`;
//! * `qwen2` becomes `Qwen2ForCausalLM`: the same layers and names plus the
//!   q/k/v projections' biases (`blk.N.attn_q.bias` ->
//!   `model.layers.N.self_attn.q_proj.bias`, ...).
//!
//! What is written:
//!
//! * `config.json` from the GGUF metadata (the `<arch>.*` keys:
//!   `num_key_value_heads`, `rope_theta`, `rms_norm_eps`, tied embeddings
//!   when the file has no `output.weight`);
//! * `model.safetensors` holds every tensor dequantized (any ggml block
//!   type candle can read: Q4_0, Q4_1, Q8_0, K-quants, F16, ...) into the
//!   requested dtype, under Hugging Face's names;
//! * for `llama` only, the Q and K projections are un-permuted: llama.cpp's
//!   converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders
//!   their rows per head from HF's "two halves" RoPE layout to GGML's
//!   interleaved pairs; the importer applies the inverse, so an HF-style
//!   RoPE (`rotate_half`) reads the weights the way the original
//!   checkpoint had them. The converter's `Qwen2Model` permutes nothing
//!   (llama.cpp runs qwen2 with NeoX-style RoPE, HF's own layout), so a
//!   qwen2 file's tensors are taken as they are.
//!
//! The folder is written into a private temporary folder and renamed into
//! place, so an interrupted import never leaves a half-written model.
//!
//! * `tokenizer.json`, `tokenizer_config.json` (with the chat template)
//!   and `generation_config.json` come from the GGUF's tokenizer metadata
//!   ([`tokenizer`]); a tokenizer the importer cannot rebuild is left out,
//!   and [`Imported::tokenizer`] says why.
//!
//! [`float_gguf`] writes the other direction's first step: a float GGUF
//! (llama.cpp's names and layout) from any GGUF, for `llama-quantize`.
//!
//! Not yet here: other architectures (`mistral` GGUFs say `llama`; Qwen2's
//! sliding window and YaRN `rope_scaling` are not read).

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub mod float_gguf;
pub mod tokenizer;
use tokenizer::TokenizerFiles;

/// Why a GGUF file could not be imported; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {what}", file.display())]
    Io {
        file: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("{}: not a readable GGUF file: {why}", file.display())]
    NotGguf { file: PathBuf, why: String },
    #[error(
        "{}: truncated: tensor {tensor} ends at byte {end}, the file has {len} bytes",
        file.display()
    )]
    Truncated {
        file: PathBuf,
        tensor: String,
        end: u64,
        len: u64,
    },
    #[error(
        "{}: architecture {arch:?} is not one the importer knows ({})",
        file.display(),
        Arch::known()
    )]
    Architecture { file: PathBuf, arch: String },
    #[error("{}: metadata {key}: {why}", file.display())]
    Metadata {
        file: PathBuf,
        key: String,
        why: String,
    },
    #[error("{}: tensor {tensor}: {why}", file.display())]
    Tensor {
        file: PathBuf,
        tensor: String,
        why: String,
    },
}

type Result<T, E = ImportError> = std::result::Result<T, E>;

/// An [`ImportError::Io`] about `file`, saying `what` failed.
fn io_error(file: &Path, what: String) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        file: file.to_path_buf(),
        what,
        source,
    }
}

/// The output dtype of an import.
pub fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "f32" => Some(DType::F32),
        "f16" => Some(DType::F16),
        "bf16" => Some(DType::BF16),
        _ => None,
    }
}

/// A `general.architecture` the importer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: `LlamaForCausalLM`, Q/K rows permuted by the converter.
    Llama,
    /// `qwen2`: `Qwen2ForCausalLM`, q/k/v biases, nothing permuted.
    Qwen2,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Llama, Arch::Qwen2];

    /// The architecture of `general.architecture = name`.
    pub fn from_gguf(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.gguf_name() == name)
    }

    /// llama.cpp's name, also the prefix of its metadata keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Hugging Face's `model_type`.
    pub fn model_type(self) -> &'static str {
        self.gguf_name()
    }

    /// Hugging Face's model class (`architectures`).
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// Whether llama.cpp's converter permuted the Q and K rows
    /// (`LlamaModel.permute`; `Qwen2Model` does not).
    pub fn permutes_qk(self) -> bool {
        self == Arch::Llama
    }

    /// `rms_norm_eps` when the file has no
    /// `<arch>.attention.layer_norm_rms_epsilon` (for `qwen2`,
    /// `Qwen2Config`'s default).
    fn default_rms_eps(self) -> f64 {
        match self {
            Arch::Llama => 1e-5,
            Arch::Qwen2 => 1e-6,
        }
    }

    /// The known architectures, for error messages: "llama, qwen2".
    pub fn known() -> String {
        Arch::ALL.map(Arch::gguf_name).join(", ")
    }
}

/// What an import wrote.
#[derive(Debug)]
pub struct Imported {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    pub tensors: usize,
    /// `Ok` (which tokenizer) when the tokenizer files were written,
    /// else why not.
    pub tokenizer: std::result::Result<String, String>,
}

/// A GGUF file read up to its tensor data.
pub struct Gguf {
    file: PathBuf,
    content: Content,
    reader: std::fs::File,
}

impl Gguf {
    /// Opens `file` and reads its header, metadata and tensor table;
    /// checks that every tensor's data lies inside the file.
    pub fn open(file: &Path) -> Result<Self> {
        let io = |what: &str| io_error(file, what.to_string());
        let mut reader = std::fs::File::open(file).map_err(io("cannot open"))?;
        let len = reader.metadata().map_err(io("cannot stat"))?.len();
        let content = Content::read(&mut reader).map_err(|e| ImportError::NotGguf {
            file: file.to_path_buf(),
            why: e.to_string(),
        })?;
        for (name, info) in &content.tensor_infos {
            let elems: usize = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content.tensor_data_offset + info.offset + bytes;
            if end > len {
                return Err(ImportError::Truncated {
                    file: file.to_path_buf(),
                    tensor: name.clone(),
                    end,
                    len,
                });
            }
        }
        Ok(Gguf {
            file: file.to_path_buf(),
            content,
            reader,
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.string("general.architecture")
    }

    /// The [`Arch`] of `general.architecture`; an architecture the
    /// importer does not know is [`ImportError::Architecture`].
    pub fn arch(&self) -> Result<Arch> {
        let name = self.architecture()?;
        Arch::from_gguf(name).ok_or_else(|| ImportError::Architecture {
            file: self.file.clone(),
            arch: name.to_string(),
        })
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn missing(&self, key: &str) -> ImportError {
        ImportError::Metadata {
            file: self.file.clone(),
            key: key.into(),
            why: "missing".into(),
        }
    }

    fn bad(&self, key: &str, e: candle_core::Error) -> ImportError {
        ImportError::Metadata {
            file: self.file.clone(),
            key: key.into(),
            why: e.to_string(),
        }
    }

    fn string(&self, key: &str) -> Result<&str> {
        let v = self.value(key).ok_or_else(|| self.missing(key))?;
        v.to_string()
            .map(String::as_str)
            .map_err(|e| self.bad(key, e))
    }

    /// An integer of any width.
    fn int(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::I8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::I16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::I32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I64(x) => *x as u64,
            other => {
                return Err(ImportError::Metadata {
                    file: self.file.clone(),
                    key: key.into(),
                    why: format!("expected an integer, found {:?}", other.value_type()),
                })
            }
        };
        Ok(Some(n))
    }

    fn required_int(&self, key: &str) -> Result<u64> {
        self.int(key)?.ok_or_else(|| self.missing(key))
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.value(key) {
            None => Ok(None),
            // The shortest decimal that reads back as this f32 (1e-5, not
            // 9.999999747378752e-6), as HF's config.json would hold it.
            Some(Value::F32(x)) => Ok(Some(x.to_string().parse().unwrap_or(*x as f64))),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(other) => Err(ImportError::Metadata {
                file: self.file.clone(),
                key: key.into(),
                why: format!("expected a float, found {:?}", other.value_type()),
            }),
        }
    }

    /// Number of entries of `tokenizer.ggml.tokens`, when present.
    fn token_count(&self) -> Option<u64> {
        match self.value("tokenizer.ggml.tokens") {
            Some(Value::Array(v)) => Some(v.len() as u64),
            _ => None,
        }
    }

    /// Hugging Face's `config.json` for this file, of any [`Arch`] (the
    /// Llama family; the name is older than `qwen2`).
    pub fn llama_config(&self) -> Result<serde_json::Value> {
        let arch = self.arch()?;
        let k = |s: &str| format!("{}.{s}", arch.gguf_name());
        let heads = self.required_int(&k("attention.head_count"))?;
        let kv_heads = self.int(&k("attention.head_count_kv"))?.unwrap_or(heads);
        let hidden = self.required_int(&k("embedding_length"))?;
        let vocab = match self.int(&k("vocab_size"))?.or_else(|| self.token_count()) {
            Some(v) => v,
            None => self.tensor_rows("token_embd.weight")?,
        };
        let head_dim = match self.int(&k("rope.dimension_count"))? {
            Some(d) => d,
            None => self
                .int(&k("attention.key_length"))?
                .unwrap_or(hidden / heads.max(1)),
        };
        let mut config = serde_json::json!({
            "architectures": [arch.hf_class()],
            "model_type": arch.model_type(),
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": self.required_int(&k("feed_forward_length"))?,
            "num_hidden_layers": self.required_int(&k("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": self.required_int(&k("context_length"))?,
            "rms_norm_eps": self
                .float(&k("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(arch.default_rms_eps()),
            "rope_theta": self.float(&k("rope.freq_base"))?.unwrap_or(10000.0),
            "hidden_act": "silu",
            "tie_word_embeddings": !self.content.tensor_infos.contains_key("output.weight"),
            "bos_token_id": self.int("tokenizer.ggml.bos_token_id")?,
            "eos_token_id": self.int("tokenizer.ggml.eos_token_id")?,
            "torch_dtype": "float32",
        });
        if arch == Arch::Qwen2 {
            // llama.cpp's qwen2 attends over the whole context.
            config["use_sliding_window"] = false.into();
        }
        Ok(config)
    }

    fn tensor_rows(&self, name: &str) -> Result<u64> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims()[0] as u64)
            .ok_or_else(|| ImportError::Tensor {
                file: self.file.clone(),
                tensor: name.into(),
                why: "missing".into(),
            })
    }

    /// Tensor `name` dequantized to f32 on the CPU.
    fn dequantized(&mut self, name: &str) -> Result<Tensor> {
        let q = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| ImportError::Tensor {
                file: self.file.clone(),
                tensor: name.into(),
                why: e.to_string(),
            })?;
        q.dequantize(&Device::Cpu).map_err(|e| ImportError::Tensor {
            file: self.file.clone(),
            tensor: name.into(),
            why: format!("cannot dequantize {:?}: {e}", q.dtype()),
        })
    }
}

/// Hugging Face's name for llama.cpp's tensor `name` in a `llama` file,
/// and the number of heads whose rows llama.cpp permuted (Q: attention
/// heads, K: key-value heads); `None` for a tensor the importer does not
/// know. [`hf_name_in`] for any architecture.
pub fn hf_name(name: &str, heads: usize, kv_heads: usize) -> Option<(String, Option<usize>)> {
    hf_name_in(Arch::Llama, name, heads, kv_heads)
}

/// [`hf_name`] for a file of architecture `arch`: `qwen2` adds the q/k/v
/// biases and permutes nothing.
pub fn hf_name_in(
    arch: Arch,
    name: &str,
    heads: usize,
    kv_heads: usize,
) -> Option<(String, Option<usize>)> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some((f.to_string(), None));
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let qk = |h: usize| arch.permutes_qk().then_some(h);
    let (hf, permuted) = match (part, arch) {
        ("attn_norm.weight", _) => ("input_layernorm.weight", None),
        ("ffn_norm.weight", _) => ("post_attention_layernorm.weight", None),
        ("attn_q.weight", _) => ("self_attn.q_proj.weight", qk(heads)),
        ("attn_k.weight", _) => ("self_attn.k_proj.weight", qk(kv_heads)),
        ("attn_v.weight", _) => ("self_attn.v_proj.weight", None),
        ("attn_output.weight", _) => ("self_attn.o_proj.weight", None),
        ("ffn_gate.weight", _) => ("mlp.gate_proj.weight", None),
        ("ffn_up.weight", _) => ("mlp.up_proj.weight", None),
        ("ffn_down.weight", _) => ("mlp.down_proj.weight", None),
        ("attn_q.bias", Arch::Qwen2) => ("self_attn.q_proj.bias", None),
        ("attn_k.bias", Arch::Qwen2) => ("self_attn.k_proj.bias", None),
        ("attn_v.bias", Arch::Qwen2) => ("self_attn.v_proj.bias", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), permuted))
}

/// Undoes llama.cpp's per-head row permutation of a `[heads * head_dim,
/// in]` projection: GGUF rows `(h, i, j)` (pair `i`, member `j`) go back
/// to HF rows `(h, j, i)`.
pub fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if heads == 0 || rows % (2 * heads) != 0 {
        candle_core::bail!("{rows} rows cannot be split into {heads} heads of pairs")
    }
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Imports `file` into the folder `out`, with weights in `dtype`. An
/// existing `out` is replaced only when it is an earlier model folder (it
/// holds a `config.json`) or empty.
pub fn import(file: &Path, dtype: DType, out: &Path) -> Result<Imported> {
    let mut g = Gguf::open(file)?;
    let arch = g.arch()?;
    let config = g.llama_config()?;
    let text = g.tokenizer_files(config["max_position_embeddings"].as_u64().unwrap_or(0))?;
    let heads = config["num_attention_heads"].as_u64().unwrap_or(0) as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(0) as usize;
    let mut names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors = HashMap::new();
    for name in &names {
        let Some((hf, permuted)) = hf_name_in(arch, name, heads, kv_heads) else {
            if name == "rope_freqs.weight" {
                // llama3 rope scaling factors: derived from config keys
                // by the engines, not a weight.
                continue;
            }
            return Err(ImportError::Tensor {
                file: file.to_path_buf(),
                tensor: name.clone(),
                why: format!(
                    "not a tensor of the {} architecture the importer knows",
                    arch.gguf_name()
                ),
            });
        };
        let w = g.dequantized(name)?;
        let w = match permuted {
            Some(h) => unpermute(&w, h),
            None => Ok(w),
        }
        .and_then(|w| w.to_dtype(dtype))
        .map_err(|e| ImportError::Tensor {
            file: file.to_path_buf(),
            tensor: name.clone(),
            why: e.to_string(),
        })?;
        tensors.insert(hf, w);
    }
    if arch == Arch::Qwen2 {
        zero_missing_qkv_biases(&config, dtype, &mut tensors).map_err(|e| ImportError::Tensor {
            file: file.to_path_buf(),
            tensor: "self_attn.{q,k,v}_proj.bias".into(),
            why: e.to_string(),
        })?;
    }
    write_folder(file, out, &config, dtype, &tensors, &text)?;
    Ok(Imported {
        dir: out.to_path_buf(),
        config,
        tensors: tensors.len(),
        tokenizer: match text {
            TokenizerFiles::Written { kind, .. } => Ok(kind),
            TokenizerFiles::Missing(why) => Err(why),
        },
    })
}

/// A Qwen2 GGUF may leave out q/k/v biases: llama.cpp reads them as
/// optional, an absent one being no bias. The Hugging Face layout (and so
/// every engine) expects them, so each absent one is written as zeros,
/// which computes the same as none.
fn zero_missing_qkv_biases(
    config: &serde_json::Value,
    dtype: DType,
    tensors: &mut HashMap<String, Tensor>,
) -> candle_core::Result<()> {
    let num = |k: &str| config[k].as_u64().unwrap_or(0) as usize;
    let (heads, kv_heads, head_dim) = (
        num("num_attention_heads"),
        num("num_key_value_heads"),
        num("head_dim"),
    );
    for layer in 0..num("num_hidden_layers") {
        for (p, rows) in [("q", heads), ("k", kv_heads), ("v", kv_heads)] {
            let name = format!("model.layers.{layer}.self_attn.{p}_proj.bias");
            if let std::collections::hash_map::Entry::Vacant(e) = tensors.entry(name) {
                e.insert(Tensor::zeros(
                    rows * head_dim,
                    dtype,
                    &candle_core::Device::Cpu,
                )?);
            }
        }
    }
    Ok(())
}

/// Writes `config.json` and `model.safetensors` into a temporary folder
/// beside `out`, then renames it into place.
fn write_folder(
    file: &Path,
    out: &Path,
    config: &serde_json::Value,
    dtype: DType,
    tensors: &HashMap<String, Tensor>,
    text: &TokenizerFiles,
) -> Result<()> {
    let io = |what: String| io_error(file, what);
    // Refused before the work, and checked again before the rename.
    if out.exists() && !out.join("config.json").is_file() && !is_empty_dir(out) {
        return Err(io(not_a_model(out))(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the folder holds other files",
        )));
    }
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
    let tmp = parent.join(format!(
        ".import-{}-{}",
        std::process::id(),
        out.file_name().and_then(|s| s.to_str()).unwrap_or("model")
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = write_files(file, &tmp, config, dtype, tensors, text).and_then(|()| {
        make_room(out).map_err(io(not_a_model(out)))?;
        std::fs::rename(&tmp, out)
            .map_err(io(format!("cannot move the import to {}", out.display())))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

fn not_a_model(out: &Path) -> String {
    format!(
        "{} exists and is not a model folder (no config.json): not replacing it",
        out.display()
    )
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

/// `config.json` (with `torch_dtype` set to `dtype`), the tokenizer
/// files when there are any, and `model.safetensors` in the new folder
/// `dir`.
fn write_files(
    file: &Path,
    dir: &Path,
    config: &serde_json::Value,
    dtype: DType,
    tensors: &HashMap<String, Tensor>,
    tokenizer: &TokenizerFiles,
) -> Result<()> {
    let io = |what: String| io_error(file, what);
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let mut config = config.clone();
    config["torch_dtype"] = match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
    .into();
    let config_text = serde_json::to_string_pretty(&config).unwrap_or_default();
    let write = |name: &str, body: &str| {
        let f = dir.join(name);
        std::fs::write(&f, body).map_err(io(format!("cannot write {}", f.display())))
    };
    write("config.json", &config_text)?;
    if let TokenizerFiles::Written {
        tokenizer_json,
        tokenizer_config,
        generation_config,
        ..
    } = tokenizer
    {
        let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
        write("tokenizer.json", tokenizer_json)?;
        write("tokenizer_config.json", &pretty(tokenizer_config))?;
        write("generation_config.json", &pretty(generation_config))?;
    }
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).map_err(|e| {
        ImportError::Tensor {
            file: file.to_path_buf(),
            tensor: "model.safetensors".into(),
            why: format!("cannot write: {e}"),
        }
    })
}

/// Removes `out` when it is an earlier model folder (it holds a
/// `config.json`) or empty; anything else is left alone, as an error.
fn make_room(out: &Path) -> std::io::Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if is_empty_dir(out) || out.join("config.json").is_file() {
        return std::fs::remove_dir_all(out);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "the folder holds other files",
    ))
}

#[cfg(test)]
mod qwen2_tests;
#[cfg(test)]
mod tests;
