//! A memory-mapped Hugging Face `model.safetensors` checked against a GPT-2
//! [`Config`](crate::gpt2::Config) before anything reads it, for engines
//! that copy weights into their own runtime (ONNX Runtime, libtorch).

use crate::gpt2::{check_tensors, Config, TensorMeta};
use engine_api::EngineError;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// A mapped safetensors file and the name prefix of its tensors.
pub struct Checkpoint {
    path: PathBuf,
    map: memmap2::Mmap,
    prefix: &'static str,
}

/// One tensor of the file: its dtype, shape and little-endian bytes.
pub struct TensorBytes<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl Checkpoint {
    /// Maps `file` and checks every tensor GPT-2 `cfg` needs (present,
    /// right shape, float); errors name the file and the tensor.
    pub fn open(file: &Path, cfg: &Config) -> Result<Self, EngineError> {
        let f = std::fs::File::open(file).map_err(|e| {
            EngineError::invalid_model(format!(
                "{}: cannot open ({e}); a GPT-2 model folder needs config.json and model.safetensors",
                file.display()
            ))
        })?;
        // SAFETY: mapped read-only; engines copy every tensor out during
        // load and drop the map afterwards. Like every mmap-based loader,
        // this assumes nobody truncates the file meanwhile.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| EngineError::io(format!("{}: cannot map: {e}", file.display())))?;
        let mut ck = Checkpoint {
            path: file.to_path_buf(),
            map,
            prefix: "",
        };
        let st = ck.parse()?;
        let prefix = check_tensors(file, cfg, |name| {
            let v = st.tensor(name).ok()?;
            Some(TensorMeta {
                shape: v.shape().to_vec(),
                is_float: matches!(
                    v.dtype(),
                    Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
                ),
                dtype: format!("{:?}", v.dtype()),
            })
        })?;
        ck.prefix = prefix;
        Ok(ck)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(&self) -> Result<SafeTensors<'_>, EngineError> {
        SafeTensors::deserialize(&self.map).map_err(|e| {
            EngineError::invalid_model(format!(
                "{}: not a valid safetensors file: {e}",
                self.path.display()
            ))
        })
    }

    /// Tensor `name` (HF name without prefix); the byte length is checked
    /// against the shape.
    pub fn tensor(&self, name: &str) -> Result<TensorBytes<'_>, String> {
        let st = self.parse().map_err(|e| e.message.to_string())?;
        let full = format!("{}{name}", self.prefix);
        let v = st
            .tensor(&full)
            .map_err(|e| format!("{}: tensor {full}: {e}", self.path.display()))?;
        let want = v.shape().iter().product::<usize>() * v.dtype().bitsize() / 8;
        if v.data().len() != want {
            return Err(format!(
                "{}: tensor {full} holds {} bytes, its shape needs {want}",
                self.path.display(),
                v.data().len()
            ));
        }
        Ok(TensorBytes {
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
            // borrowed from the map, not from the parsed header
            data: v.data(),
        })
    }

    /// Tensor `name` as f32 values (f32, f16, bf16 or f64 on disk).
    pub fn f32s(&self, name: &str) -> Result<Vec<f32>, String> {
        let t = self.tensor(name)?;
        let b = t.data;
        Ok(match t.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            other => {
                return Err(format!(
                    "{}: tensor {name} has dtype {other:?}",
                    self.path.display()
                ))
            }
        })
    }
}
