//! The tokenizer files of an imported folder, from the GGUF's
//! `tokenizer.*` metadata:
//!
//! * `tokenizer.json`, by `tokenizer.ggml.model`:
//!   * `gpt2`: byte-level BPE; its tokens (`tokenizer.ggml.tokens`),
//!     merges (`tokenizer.ggml.merges`), token types
//!     (`tokenizer.ggml.token_type`: 3 control tokens become special
//!     tokens, 4 user-defined ones added tokens) and pre-tokenizer
//!     (`tokenizer.ggml.pre`) are rebuilt into a Hugging Face tokenizer by
//!     [`engine_matrix_text::bpe`];
//!   * `llama` (Llama 2, TinyLlama): SentencePiece; its tokens, scores
//!     (`tokenizer.ggml.scores`) and token types (2 unknown and 3 control
//!     tokens become special tokens, 4 user-defined ones added tokens, 6
//!     the byte tokens `<0x00>`..`<0xFF>`) are rebuilt by
//!     [`engine_matrix_text::spm`] into a BPE tokenizer with byte
//!     fallback that merges in llama.cpp's order (see there). What the
//!     metadata leaves out takes llama.cpp's defaults: `<unk>`, `<s>` and
//!     `</s>` at ids 0, 1 and 2 (`tokenizer.ggml.unknown_token_id`,
//!     `.bos_token_id`, `.eos_token_id`), BOS added
//!     (`tokenizer.ggml.add_bos_token`), EOS not (`.add_eos_token`), and a
//!     `▁` before the text (`tokenizer.ggml.add_space_prefix`);
//! * `tokenizer_config.json`: the chat template
//!   (`tokenizer.chat_template`), the BOS/EOS tokens' text, and for
//!   SentencePiece the unknown token's and whether EOS is added;
//! * `generation_config.json`: the BOS/EOS ids.
//!
//! Other tokenizer models and pre-tokenizers not in [`Pre::from_gguf`]
//! get no tokenizer: the model still imports and runs on token ids, and
//! the import says why. `tests/spm_tokenizer.rs` checks a SentencePiece
//! tokenizer imported here against llama.cpp's own (`llama-server`'s
//! `/tokenize`).

use crate::{Gguf, ImportError, Result};
use candle_core::quantized::gguf_file::Value;
use engine_matrix_text::bpe::{ByteLevelBpe, Pre};
use engine_matrix_text::spm::SentencePiece;

/// What the import writes about text.
pub enum TokenizerFiles {
    Written {
        /// Which tokenizer: `byte-level BPE (gpt2)` or `SentencePiece BPE
        /// (llama)`.
        kind: String,
        tokenizer_json: String,
        tokenizer_config: serde_json::Value,
        generation_config: serde_json::Value,
    },
    /// No tokenizer, and why.
    Missing(String),
}

/// GGUF token types (llama.cpp's `llama_token_type`).
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

impl Gguf {
    fn array(&self, key: &str) -> Result<Option<&Vec<Value>>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(v)) => Ok(Some(v)),
            Some(other) => Err(ImportError::Metadata {
                file: self.file.clone(),
                key: key.into(),
                why: format!("expected an array, found {:?}", other.value_type()),
            }),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.array(key)? else {
            return Ok(None);
        };
        v.iter()
            .map(|s| s.to_string().cloned().map_err(|e| self.bad(key, e)))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.array(key)? else {
            return Ok(None);
        };
        v.iter()
            .map(|x| match x {
                Value::I32(i) => Ok(*i as i64),
                Value::U32(i) => Ok(*i as i64),
                Value::I64(i) => Ok(*i),
                Value::U8(i) => Ok(*i as i64),
                other => Err(ImportError::Metadata {
                    file: self.file.clone(),
                    key: key.into(),
                    why: format!("expected integers, found {:?}", other.value_type()),
                }),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn flag(&self, key: &str) -> Option<bool> {
        match self.value(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn floats(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(v) = self.array(key)? else {
            return Ok(None);
        };
        v.iter()
            .map(|x| match x {
                Value::F32(f) => Ok(*f),
                Value::F64(f) => Ok(*f as f32),
                other => Err(ImportError::Metadata {
                    file: self.file.clone(),
                    key: key.into(),
                    why: format!("expected floats, found {:?}", other.value_type()),
                }),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// A token id under `key` (else `default`), checked against the
    /// vocabulary's `n` tokens.
    fn token_id(&self, key: &str, n: usize, default: Option<u32>) -> Result<Option<u32>> {
        match self.int(key)? {
            Some(i) if i as usize >= n => Err(ImportError::Metadata {
                file: self.file.clone(),
                key: key.into(),
                why: format!("token id {i} is outside the {n} tokens"),
            }),
            Some(i) => Ok(Some(i as u32)),
            None => Ok(default),
        }
    }

    /// The tokenizer files of this GGUF (see the module docs).
    pub fn tokenizer_files(&self, context: u64) -> Result<TokenizerFiles> {
        let model = match self.value("tokenizer.ggml.model") {
            None => return Ok(TokenizerFiles::Missing("the GGUF has no tokenizer".into())),
            Some(_) => self.string("tokenizer.ggml.model")?,
        };
        let kind = match model {
            "gpt2" => "byte-level BPE (tokenizer model gpt2)",
            _ => "SentencePiece BPE with byte fallback (tokenizer model llama)",
        };
        let built = match model {
            "gpt2" => match self.byte_level()? {
                Ok(b) => b,
                Err(why) => return Ok(TokenizerFiles::Missing(why)),
            },
            "llama" => self.sentencepiece()?,
            other => {
                return Ok(TokenizerFiles::Missing(format!(
                    "tokenizer model {other:?} is not rebuilt yet; only byte-level BPE \
                     (\"gpt2\") and SentencePiece (\"llama\") are"
                )))
            }
        };
        let Built {
            tokenizer_json,
            tokens,
            bos,
            eos,
            add_bos,
            spm,
        } = built;
        let text = |i: Option<u32>| i.map(|i| tokens[i as usize].clone());
        let chat = match self.value("tokenizer.chat_template") {
            None => None,
            Some(_) => Some(self.string("tokenizer.chat_template")?.to_string()),
        };
        let mut tokenizer_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": text(bos),
            "eos_token": text(eos),
            "add_bos_token": add_bos,
            "model_max_length": context,
            "chat_template": chat,
        });
        if let Some(spm) = spm {
            // as Llama 2's own tokenizer_config.json
            tokenizer_config["unk_token"] = text(spm.unk).into();
            tokenizer_config["add_eos_token"] = spm.eos.is_some().into();
            tokenizer_config["clean_up_tokenization_spaces"] = false.into();
        }
        let generation_config = serde_json::json!({
            "bos_token_id": bos,
            "eos_token_id": eos,
            "_from_model_config": true,
        });
        Ok(TokenizerFiles::Written {
            kind: kind.to_string(),
            tokenizer_json,
            tokenizer_config,
            generation_config,
        })
    }

    /// The error of building a tokenizer from this file's vocabulary.
    fn build_error(&self, e: engine_matrix_text::TextError) -> ImportError {
        ImportError::Metadata {
            file: self.file.clone(),
            key: "tokenizer.ggml.tokens".into(),
            why: e.to_string(),
        }
    }

    /// A built tokenizer's `tokenizer.json`.
    fn serialised(
        &self,
        json: std::result::Result<String, impl std::fmt::Display>,
    ) -> Result<String> {
        json.map_err(|e| ImportError::Metadata {
            file: self.file.clone(),
            key: "tokenizer.ggml.tokens".into(),
            why: format!("cannot serialise the tokenizer: {e}"),
        })
    }

    /// The ids of the tokens of GGUF type `t`.
    fn of_type(types: &[i64], t: &[i64]) -> Vec<u32> {
        types
            .iter()
            .enumerate()
            .filter(|(_, ty)| t.contains(ty))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// llama.cpp's `gpt2` tokenizer model: byte-level BPE; `Ok(Err(why))`
    /// for a pre-tokenizer the importer does not know.
    fn byte_level(&self) -> Result<std::result::Result<Built, String>> {
        let pre_name = match self.value("tokenizer.ggml.pre") {
            None => "default",
            Some(_) => self.string("tokenizer.ggml.pre")?,
        };
        let Some(pre) = Pre::from_gguf(pre_name) else {
            return Ok(Err(format!(
                "pre-tokenizer {pre_name:?} is not one the importer knows \
                 (default, gpt2, smollm, llama-bpe, qwen2)"
            )));
        };
        let tokens = self
            .strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| self.missing("tokenizer.ggml.tokens"))?;
        let merges = self
            .strings("tokenizer.ggml.merges")?
            .ok_or_else(|| self.missing("tokenizer.ggml.merges"))?;
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| ImportError::Metadata {
                        file: self.file.clone(),
                        key: "tokenizer.ggml.merges".into(),
                        why: format!("{m:?} is not two tokens separated by a space"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let types = self.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        let n = tokens.len();
        let bos = self.token_id("tokenizer.ggml.bos_token_id", n, None)?;
        let eos = self.token_id("tokenizer.ggml.eos_token_id", n, None)?;
        let add_bos = self.flag("tokenizer.ggml.add_bos_token").unwrap_or(false);
        let tokenizer = ByteLevelBpe {
            tokens: tokens.clone(),
            merges,
            pre,
            special: Self::of_type(&types, &[CONTROL]),
            added: Self::of_type(&types, &[USER_DEFINED]),
            bos: bos.filter(|_| add_bos),
        }
        .build(&self.file.display().to_string())
        .map_err(|e| self.build_error(e))?;
        Ok(Ok(Built {
            tokenizer_json: self.serialised(tokenizer.to_string(true))?,
            tokens,
            bos,
            eos,
            add_bos,
            spm: None,
        }))
    }

    /// llama.cpp's `llama` tokenizer model: SentencePiece BPE, with
    /// llama.cpp's defaults for what the metadata leaves out (`<unk>`,
    /// `<s>`, `</s>` at ids 0, 1, 2; BOS added, EOS not; a space prefix).
    fn sentencepiece(&self) -> Result<Built> {
        let tokens = self
            .strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| self.missing("tokenizer.ggml.tokens"))?;
        let n = tokens.len();
        let scores = self
            .floats("tokenizer.ggml.scores")?
            .unwrap_or_else(|| vec![0.0; n]);
        if scores.len() != n {
            return Err(ImportError::Metadata {
                file: self.file.clone(),
                key: "tokenizer.ggml.scores".into(),
                why: format!("{} scores for {n} tokens", scores.len()),
            });
        }
        let types = self.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        let bos = self.token_id("tokenizer.ggml.bos_token_id", n, Some(1))?;
        let eos = self.token_id("tokenizer.ggml.eos_token_id", n, Some(2))?;
        let unk = self.token_id("tokenizer.ggml.unknown_token_id", n, Some(0))?;
        let add_bos = self.flag("tokenizer.ggml.add_bos_token").unwrap_or(true);
        let add_eos = self.flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
        let spm = SentencePiece {
            tokens: tokens.clone(),
            scores,
            special: Self::of_type(&types, &[CONTROL, UNKNOWN]),
            added: Self::of_type(&types, &[USER_DEFINED]),
            unk,
            bos: bos.filter(|_| add_bos),
            eos: eos.filter(|_| add_eos),
            add_space_prefix: self.flag("tokenizer.ggml.add_space_prefix").unwrap_or(true),
        };
        let tokenizer = spm
            .build(&self.file.display().to_string())
            .map_err(|e| self.build_error(e))?;
        Ok(Built {
            tokenizer_json: self.serialised(tokenizer.to_string(true))?,
            tokens,
            bos,
            eos,
            add_bos,
            spm: Some(SpmSpecials { unk, eos: spm.eos }),
        })
    }
}

/// A tokenizer rebuilt from the metadata, with what the config files say
/// about it.
struct Built {
    tokenizer_json: String,
    tokens: Vec<String>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// The SentencePiece tokenizer's extra settings.
    spm: Option<SpmSpecials>,
}

struct SpmSpecials {
    unk: Option<u32>,
    /// The EOS appended when encoding with special tokens.
    eos: Option<u32>,
}

#[cfg(test)]
mod tests;
