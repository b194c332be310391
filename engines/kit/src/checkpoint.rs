//! Memory-mapped Hugging Face safetensors weights, checked against the
//! model's configuration before anything reads them, for engines that copy
//! weights into their own runtime (ONNX Runtime, libtorch).
//!
//! [`Checkpoint::open`] takes one `model.safetensors` and a GPT-2
//! [`Config`](crate::gpt2::Config) (what the GPT-2-only engines use);
//! [`Checkpoint::open_model`] takes the files of
//! [`crate::arch::weight_files`] — `model.safetensors` or the shards of
//! `model.safetensors.index.json` — and any [`ModelConfig`], whose
//! `expected_tensors()` it checks. Each tensor is looked up in the shard
//! that holds it; all files stay mapped until the checkpoint is dropped
//! (engines drop it at the end of load).

use crate::arch::ModelConfig;
use crate::gpt2::{check_tensors, Config, TensorMeta};
use engine_api::EngineError;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Mapped safetensors files and the name prefix of their tensors.
pub struct Checkpoint {
    /// The file, or the folder of a sharded checkpoint: labels the
    /// errors about the checkpoint as a whole.
    path: PathBuf,
    shards: Vec<Shard>,
    /// Full tensor name -> index into `shards` (empty for one file).
    index: HashMap<String, usize>,
    prefix: &'static str,
}

struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
}

/// One tensor of the file: its dtype, shape and little-endian bytes.
pub struct TensorBytes<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

fn meta(st: &SafeTensors<'_>, name: &str) -> Option<TensorMeta> {
    let v = st.tensor(name).ok()?;
    Some(TensorMeta {
        shape: v.shape().to_vec(),
        is_float: matches!(
            v.dtype(),
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ),
        dtype: format!("{:?}", v.dtype()),
    })
}

impl Checkpoint {
    /// Maps `file` and checks every tensor GPT-2 `cfg` needs (present,
    /// right shape, float); errors name the file and the tensor.
    pub fn open(file: &Path, cfg: &Config) -> Result<Self, EngineError> {
        let mut ck = Self::map(&[file.to_path_buf()])?;
        let st = ck.shards[0].parse()?;
        let prefix = check_tensors(file, cfg, |name| meta(&st, name))?;
        ck.prefix = prefix;
        Ok(ck)
    }

    /// Maps `files` (one `model.safetensors`, or every shard of a sharded
    /// checkpoint, as [`crate::arch::weight_files`] lists them) and checks
    /// every tensor `cfg` needs (present in one of them, right shape,
    /// float). Errors name the file (the folder when sharded) and the
    /// tensor; a tensor in two shards is an error naming both.
    pub fn open_model(files: &[PathBuf], cfg: &ModelConfig) -> Result<Self, EngineError> {
        let mut ck = Self::map(files)?;
        if ck.shards.len() > 1 {
            for (i, shard) in ck.shards.iter().enumerate() {
                for name in shard.parse()?.names() {
                    if let Some(j) = ck.index.insert(name.to_string(), i) {
                        return Err(EngineError::invalid_model(format!(
                            "{}: tensor {name} is in two shards, {} and {}",
                            ck.path.display(),
                            ck.shards[j].path.display(),
                            shard.path.display()
                        )));
                    }
                }
            }
        }
        let parsed = ck
            .shards
            .iter()
            .map(Shard::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let lookup = |name: &str| {
            let i = if parsed.len() == 1 {
                0
            } else {
                *ck.index.get(name)?
            };
            meta(&parsed[i], name)
        };
        let prefix = match cfg {
            ModelConfig::Gpt2(c) => check_tensors(&ck.path, c, lookup)?,
            ModelConfig::Llama(c) => {
                crate::llama::check_tensors(&ck.path, c, lookup)?;
                ""
            }
        };
        drop(parsed);
        ck.prefix = prefix;
        Ok(ck)
    }

    fn map(files: &[PathBuf]) -> Result<Self, EngineError> {
        let label = match files {
            [] => {
                return Err(EngineError::invalid_model(
                    "a checkpoint needs at least one safetensors file",
                ))
            }
            [one] => one.clone(),
            [first, ..] => first.parent().unwrap_or(first).to_path_buf(),
        };
        let shards = files
            .iter()
            .map(|file| {
                let f = std::fs::File::open(file).map_err(|e| {
                    EngineError::invalid_model(format!(
                        "{}: cannot open ({e}); a model folder needs config.json and model.safetensors",
                        file.display()
                    ))
                })?;
                // SAFETY: mapped read-only; engines copy every tensor out
                // during load and drop the map afterwards. Like every
                // mmap-based loader, this assumes nobody truncates the
                // file meanwhile.
                let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| {
                    EngineError::io(format!("{}: cannot map: {e}", file.display()))
                })?;
                Ok(Shard {
                    path: file.clone(),
                    map,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Checkpoint {
            path: label,
            shards,
            index: HashMap::new(),
            prefix: "",
        })
    }

    /// The file, or the folder of a sharded checkpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files, in the order given.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// Tensor `name` (HF name without prefix); the byte length is checked
    /// against the shape. Errors name the file that should hold it.
    pub fn tensor(&self, name: &str) -> Result<TensorBytes<'_>, String> {
        let full = format!("{}{name}", self.prefix);
        let shard = if self.shards.len() == 1 {
            &self.shards[0]
        } else {
            let i = self
                .index
                .get(&full)
                .ok_or_else(|| format!("{}: no shard holds tensor {full}", self.path.display()))?;
            &self.shards[*i]
        };
        let st = shard.parse().map_err(|e| e.message.to_string())?;
        let v = st
            .tensor(&full)
            .map_err(|e| format!("{}: tensor {full}: {e}", shard.path.display()))?;
        let want = v.shape().iter().product::<usize>() * v.dtype().bitsize() / 8;
        if v.data().len() != want {
            return Err(format!(
                "{}: tensor {full} holds {} bytes, its shape needs {want}",
                shard.path.display(),
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

impl Shard {
    fn parse(&self) -> Result<SafeTensors<'_>, EngineError> {
        SafeTensors::deserialize(&self.map).map_err(|e| {
            EngineError::invalid_model(format!(
                "{}: not a valid safetensors file: {e}",
                self.path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama;

    /// Writes `tensors` (f32, each filled with `first` + its index) to
    /// `path`.
    fn write(path: &Path, tensors: &[(String, Vec<usize>)], first: usize) {
        let data: Vec<Vec<u8>> = tensors
            .iter()
            .enumerate()
            .map(|(i, (_, s))| {
                let n: usize = s.iter().product();
                (0..n)
                    .flat_map(|_| ((first + i) as f32).to_le_bytes())
                    .collect()
            })
            .collect();
        let views = tensors.iter().zip(&data).map(|((name, shape), bytes)| {
            let v = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("view");
            (name.clone(), v)
        });
        safetensors::serialize_to_file(views, None, path).expect("write");
    }

    #[test]
    fn a_sharded_llama_checkpoint_reads_each_tensor_from_its_shard() {
        let tmp = crate::testing::TempDir::new("checkpoint-shards");
        let cfg = llama::Config::tiny();
        let all = cfg.expected_tensors();
        let (a, b) = all.split_at(all.len() / 2);
        let files = [
            tmp.path().join("a.safetensors"),
            tmp.path().join("b.safetensors"),
        ];
        write(&files[0], a, 0);
        write(&files[1], b, a.len());
        let ck = Checkpoint::open_model(&files, &ModelConfig::Llama(cfg.clone())).unwrap();
        assert_eq!(ck.path(), tmp.path());
        for (i, (name, _)) in all.iter().enumerate() {
            assert_eq!(ck.f32s(name).unwrap()[0], i as f32, "{name}");
        }
        let e = ck.tensor("nonexistent").err().unwrap();
        assert!(e.contains("no shard holds tensor nonexistent"), "{e}");
        // one shard alone lacks the other's tensors
        let e = Checkpoint::open_model(&files[..1], &ModelConfig::Llama(cfg))
            .err()
            .unwrap();
        assert_eq!(e.kind, engine_api::ErrorKind::InvalidModel);
        assert!(
            e.message
                .contains(&format!("a.safetensors: missing tensor {}", b[0].0)),
            "{e}"
        );
    }
}
