//! The tokenizer files of an imported folder, from the GGUF's
//! `tokenizer.*` metadata:
//!
//! * `tokenizer.json`: llama.cpp's `gpt2` tokenizer model is byte-level
//!   BPE; its tokens (`tokenizer.ggml.tokens`), merges
//!   (`tokenizer.ggml.merges`), token types (`tokenizer.ggml.token_type`:
//!   3 control tokens become special tokens, 4 user-defined ones added
//!   tokens) and pre-tokenizer (`tokenizer.ggml.pre`) are rebuilt into a
//!   Hugging Face tokenizer by [`engine_matrix_text::bpe`];
//! * `tokenizer_config.json`: the chat template
//!   (`tokenizer.chat_template`) and the BOS/EOS tokens' text;
//! * `generation_config.json`: the BOS/EOS ids.
//!
//! SentencePiece GGUFs (tokenizer model `llama`: Llama 2, TinyLlama) and
//! pre-tokenizers not in [`Pre::from_gguf`] get no tokenizer: the model
//! still imports and runs on token ids, and the import says why.

use crate::{Gguf, ImportError, Result};
use candle_core::quantized::gguf_file::Value;
use engine_matrix_text::bpe::{ByteLevelBpe, Pre};

/// What the import writes about text.
pub enum TokenizerFiles {
    Written {
        tokenizer_json: String,
        tokenizer_config: serde_json::Value,
        generation_config: serde_json::Value,
    },
    /// No tokenizer, and why.
    Missing(String),
}

/// GGUF token types (llama.cpp's `llama_token_type`).
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

    /// The tokenizer files of this GGUF (see the module docs).
    pub fn tokenizer_files(&self, context: u64) -> Result<TokenizerFiles> {
        let model = match self.value("tokenizer.ggml.model") {
            None => return Ok(TokenizerFiles::Missing("the GGUF has no tokenizer".into())),
            Some(_) => self.string("tokenizer.ggml.model")?,
        };
        if model != "gpt2" {
            return Ok(TokenizerFiles::Missing(format!(
                "tokenizer model {model:?} (SentencePiece and others) is not rebuilt yet; \
                 only byte-level BPE (\"gpt2\") is"
            )));
        }
        let pre_name = match self.value("tokenizer.ggml.pre") {
            None => "default",
            Some(_) => self.string("tokenizer.ggml.pre")?,
        };
        let Some(pre) = Pre::from_gguf(pre_name) else {
            return Ok(TokenizerFiles::Missing(format!(
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
        let of_type = |t: i64| -> Vec<u32> {
            types
                .iter()
                .enumerate()
                .filter(|(_, &ty)| ty == t)
                .map(|(i, _)| i as u32)
                .collect()
        };
        let id = |key: &str| -> Result<Option<u32>> {
            let v = self.int(key)?;
            match v {
                Some(i) if i as usize >= tokens.len() => Err(ImportError::Metadata {
                    file: self.file.clone(),
                    key: key.into(),
                    why: format!("token id {i} is outside the {} tokens", tokens.len()),
                }),
                other => Ok(other.map(|i| i as u32)),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let add_bos = self.flag("tokenizer.ggml.add_bos_token").unwrap_or(false);
        let tokenizer = ByteLevelBpe {
            tokens: tokens.clone(),
            merges,
            pre,
            special: of_type(CONTROL),
            added: of_type(USER_DEFINED),
            bos: bos.filter(|_| add_bos),
        }
        .build(&self.file.display().to_string())
        .map_err(|e| ImportError::Metadata {
            file: self.file.clone(),
            key: "tokenizer.ggml.tokens".into(),
            why: e.to_string(),
        })?;
        let tokenizer_json = tokenizer
            .to_string(true)
            .map_err(|e| ImportError::Metadata {
                file: self.file.clone(),
                key: "tokenizer.ggml.tokens".into(),
                why: format!("cannot serialise the tokenizer: {e}"),
            })?;
        let text = |i: Option<u32>| i.map(|i| tokens[i as usize].clone());
        let chat = match self.value("tokenizer.chat_template") {
            None => None,
            Some(_) => Some(self.string("tokenizer.chat_template")?.to_string()),
        };
        let tokenizer_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": text(bos),
            "eos_token": text(eos),
            "add_bos_token": add_bos,
            "model_max_length": context,
            "chat_template": chat,
        });
        let generation_config = serde_json::json!({
            "bos_token_id": bos,
            "eos_token_id": eos,
            "_from_model_config": true,
        });
        Ok(TokenizerFiles::Written {
            tokenizer_json,
            tokenizer_config,
            generation_config,
        })
    }
}
