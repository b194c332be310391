//! Byte-level BPE tokenizers built from a vocabulary and merges, for
//! sources that have no `tokenizer.json`: a GGUF file's `tokenizer.ggml.*`
//! metadata (llama.cpp's `gpt2` tokenizer model) and GPT-2's original
//! files. The result is a `tokenizers::Tokenizer`, saved as the
//! `tokenizer.json` Hugging Face would have shipped.
//!
//! The pre-tokenizer (how text is split before BPE) is what distinguishes
//! the byte-level BPE models; GGUF names it in `tokenizer.ggml.pre`, and
//! [`Pre::from_gguf`] maps llama.cpp's names to the `tokenizer.json`
//! pre-tokenizers of the original checkpoints (patterns as in llama.cpp's
//! `llama-vocab.cpp` and the models' own `tokenizer.json`).

use crate::TextError;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// Llama 3's split pattern (`tokenizer.ggml.pre` = `llama-bpe`).
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (`qwen2`): Llama 3's with single digits.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text is split before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// GPT-2's byte-level split (`default`, `gpt2`).
    Gpt2,
    /// Each digit alone, then GPT-2's split (`smollm`: SmolLM / SmolLM2).
    SmolLm,
    /// Llama 3's pattern (`llama-bpe`).
    Llama3,
    /// Qwen2's pattern (`qwen2`).
    Qwen2,
}

impl Pre {
    /// llama.cpp's `tokenizer.ggml.pre` name; `None` for one not known
    /// here.
    pub fn from_gguf(name: &str) -> Option<Self> {
        Some(match name {
            "default" | "gpt2" | "gpt-2" => Pre::Gpt2,
            "smollm" => Pre::SmolLm,
            "llama-bpe" | "llama3" => Pre::Llama3,
            "qwen2" => Pre::Qwen2,
            _ => return None,
        })
    }

    fn build(self) -> Result<PreTokenizerWrapper, String> {
        let gpt2 = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let split = |p: &str| -> Result<PreTokenizerWrapper, String> {
            let s = Split::new(
                tokenizers::pre_tokenizers::split::SplitPattern::Regex(p.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| e.to_string())?;
            Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Split(s),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
            ])))
        };
        Ok(match self {
            Pre::Gpt2 => gpt2(),
            Pre::SmolLm => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                gpt2(),
            ])),
            Pre::Llama3 => split(LLAMA3)?,
            Pre::Qwen2 => split(QWEN2)?,
        })
    }
}

/// A byte-level BPE vocabulary: tokens in id order, merges in rank order.
#[derive(Debug, Clone)]
pub struct ByteLevelBpe {
    pub tokens: Vec<String>,
    pub merges: Vec<(String, String)>,
    pub pre: Pre,
    /// Ids matched whole in the text and left out of decoded text when
    /// skipping specials (GGUF token type 3, control).
    pub special: Vec<u32>,
    /// Ids matched whole but decoded as text (GGUF type 4, user-defined).
    pub added: Vec<u32>,
    /// Prepend this token when encoding with special tokens.
    pub bos: Option<u32>,
}

/// Each token's id (its position in `tokens`), for a BPE model; two
/// equal tokens are an error.
pub(crate) fn vocab_of(tokens: &[String]) -> Result<tokenizers::models::bpe::Vocab, String> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(format!(
            "{} tokens but {} distinct ones",
            tokens.len(),
            vocab.len()
        ));
    }
    Ok(vocab)
}

/// The text of token `id`.
pub(crate) fn token_at(tokens: &[String], id: u32) -> Result<&String, String> {
    tokens
        .get(id as usize)
        .ok_or_else(|| format!("token id {id} is outside the vocabulary"))
}

impl ByteLevelBpe {
    /// Builds the tokenizer; `source` names where the vocabulary came from
    /// in errors.
    pub fn build(&self, source: &str) -> Result<Tokenizer, TextError> {
        let bad = |why: String| TextError::Build {
            origin: source.to_string(),
            why,
        };
        let vocab = vocab_of(&self.tokens).map_err(bad)?;
        let token = |id: u32| token_at(&self.tokens, id).map_err(bad);
        let model = BPE::builder()
            .vocab_and_merges(vocab, self.merges.clone())
            .build()
            .map_err(|e| bad(format!("BPE: {e}")))?;
        let mut tk = Tokenizer::new(model);
        tk.with_pre_tokenizer(Some(self.pre.build().map_err(bad)?));
        tk.with_decoder(Some(ByteLevelDecoder::default()));
        if let Some(bos) = self.bos {
            let name = token(bos)?.clone();
            let tp = TemplateProcessing::builder()
                .try_single(format!("{name} $A"))
                .and_then(|b| b.try_pair(format!("{name} $A {name} $B")))
                .map_err(|e| bad(format!("BOS template: {e}")))?
                .special_tokens(vec![(name, bos)])
                .build()
                .map_err(|e| bad(format!("BOS template: {e}")))?;
            tk.with_post_processor(Some(tp));
        }
        let whole = |ids: &[u32], special: bool| -> Result<Vec<AddedToken>, TextError> {
            ids.iter()
                .map(|&i| Ok(AddedToken::from(token(i)?.clone(), special)))
                .collect()
        };
        tk.add_special_tokens(whole(&self.special, true)?)
            .map_err(|e| bad(format!("special tokens: {e}")))?;
        tk.add_tokens(whole(&self.added, false)?)
            .map_err(|e| bad(format!("added tokens: {e}")))?;
        Ok(tk)
    }
}
