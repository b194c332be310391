//! The checkpoint's tensors as f32, read from a memory-mapped
//! `model.safetensors` (f32, f16, bf16 or f64 on disk).

use crate::graph::WeightSource;
use engine_api::EngineError;
use engine_kit::gpt2::{Config, TensorMeta};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// A mapped safetensors file and the name prefix of its tensors.
pub struct Checkpoint {
    path: PathBuf,
    map: memmap2::Mmap,
    prefix: &'static str,
}

impl Checkpoint {
    /// Maps `file` and checks every tensor GPT-2 `cfg` needs.
    pub fn open(file: &Path, cfg: &Config) -> Result<Self, EngineError> {
        let f = std::fs::File::open(file).map_err(|e| {
            EngineError::invalid_model(format!(
                "{}: cannot open ({e}); a GPT-2 model folder needs config.json and model.safetensors",
                file.display()
            ))
        })?;
        // SAFETY: mapped read-only; every tensor is copied out during
        // load and the map is dropped afterwards. Like every mmap-based
        // loader this assumes nobody truncates the file meanwhile.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| EngineError::io(format!("{}: cannot map: {e}", file.display())))?;
        let ck = Checkpoint {
            path: file.to_path_buf(),
            map,
            prefix: "",
        };
        let st = ck.tensors()?;
        let prefix = engine_kit::gpt2::check_tensors(file, cfg, |name| {
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
        Ok(Checkpoint { prefix, ..ck })
    }

    fn tensors(&self) -> Result<SafeTensors<'_>, EngineError> {
        SafeTensors::deserialize(&self.map).map_err(|e| {
            EngineError::invalid_model(format!(
                "{}: not a valid safetensors file: {e}",
                self.path.display()
            ))
        })
    }
}

impl WeightSource for Checkpoint {
    fn get(&self, name: &str) -> Result<Vec<f32>, String> {
        let st = self.tensors().map_err(|e| e.message.to_string())?;
        let full = format!("{}{name}", self.prefix);
        let v = st
            .tensor(&full)
            .map_err(|e| format!("{}: tensor {full}: {e}", self.path.display()))?;
        let b = v.data();
        let out = match v.dtype() {
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
                    "{}: tensor {full} has dtype {other:?}",
                    self.path.display()
                ))
            }
        };
        Ok(out)
    }
}
