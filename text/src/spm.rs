//! SentencePiece BPE tokenizers (Llama 2, TinyLlama, Mistral v0.1...)
//! built from a vocabulary with scores, for GGUF files whose
//! `tokenizer.ggml.model` is `llama` (llama.cpp's SPM tokenizer). The
//! result is a `tokenizers::Tokenizer`, saved as the `tokenizer.json`
//! Hugging Face ships for these models.
//!
//! llama.cpp's SPM tokenizer (`llm_tokenizer_spm` in `llama-vocab.cpp`)
//! replaces every space with `▁` (U+2581), puts one `▁` in front of each
//! piece of text that starts the input or follows a special token
//! (`add_space_prefix`), splits the text into characters, then
//! repeatedly merges the adjacent pair whose concatenation is a token
//! with the highest score (the leftmost pair on a tie); a character that
//! is not a token becomes its UTF-8 bytes' tokens `<0xXX>`.
//!
//! The same thing as a `tokenizer.json` (as transformers'
//! `LlamaConverter` writes it, in its `legacy` form):
//!
//! * model: BPE with `byte_fallback`, whose merges are every split of a
//!   token into two tokens, ranked by the merged token's score (highest
//!   first): BPE then merges in exactly the order SPM does;
//! * normalizer: `Prepend("▁")` then `Replace(" ", "▁")`. A normalizer,
//!   not the `Metaspace` pre-tokenizer: `tokenizers` normalizes each piece
//!   of text between added tokens on its own, so every piece gets its `▁`,
//!   as llama.cpp prefixes the text after each special token (`Metaspace`
//!   with `prepend_scheme: first` would prefix the first piece only);
//! * added tokens: control and unknown tokens special, user-defined ones
//!   not, all matched whole before normalization, as llama.cpp matches
//!   them before tokenizing the text between them;
//! * post-processor: BOS (and EOS) when the vocabulary asks for them;
//! * decoder: `▁` back to spaces, `<0xXX>` back to bytes, and the
//!   prefix space removed.
//!
//! Where the two can differ: llama.cpp breaks score ties by position and
//! BPE by rank, so two overlapping merges whose tokens have the *same*
//! score may go differently (SentencePiece BPE vocabularies give each
//! merged piece its own score), and a character that is not itself a
//! token but is part of a longer one is merged by llama.cpp and split
//! into bytes by BPE (SentencePiece keeps every character of its pieces
//! in the vocabulary).

use crate::bpe::{token_at, vocab_of};
use crate::TextError;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, Sequence};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// SentencePiece's word-boundary mark, U+2581.
pub const SPACE: &str = "\u{2581}";

/// A SentencePiece vocabulary: tokens and their scores in id order.
#[derive(Debug, Clone)]
pub struct SentencePiece {
    pub tokens: Vec<String>,
    /// One per token; a higher score merges first.
    pub scores: Vec<f32>,
    /// Ids matched whole in the text and left out of decoded text when
    /// skipping specials (GGUF token types 3, control, and 2, unknown).
    pub special: Vec<u32>,
    /// Ids matched whole but decoded as text (GGUF type 4, user-defined).
    pub added: Vec<u32>,
    /// The unknown token, for text that neither tokens nor bytes cover.
    pub unk: Option<u32>,
    /// Prepend this token when encoding with special tokens.
    pub bos: Option<u32>,
    /// Append this token when encoding with special tokens.
    pub eos: Option<u32>,
    /// A `▁` before the text (llama.cpp's `add_space_prefix`).
    pub add_space_prefix: bool,
}

impl SentencePiece {
    /// The BPE merges equivalent to SPM's merge-by-score: every split of
    /// a token into two tokens, highest-scoring merged token first (then
    /// by id, then by split point).
    pub fn merges(&self) -> Vec<(String, String)> {
        let ids: HashMap<&str, usize> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let mut ranked: Vec<(f32, usize, usize, (String, String))> = Vec::new();
        for (id, piece) in self.tokens.iter().enumerate() {
            for (at, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(at);
                if ids.contains_key(l) && ids.contains_key(r) {
                    ranked.push((self.scores[id], id, at, (l.to_string(), r.to_string())));
                }
            }
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        ranked.into_iter().map(|(_, _, _, m)| m).collect()
    }

    /// Builds the tokenizer; `source` names where the vocabulary came from
    /// in errors.
    pub fn build(&self, source: &str) -> Result<Tokenizer, TextError> {
        let bad = |why: String| TextError::Build {
            origin: source.to_string(),
            why,
        };
        if self.scores.len() != self.tokens.len() {
            return Err(bad(format!(
                "{} tokens but {} scores",
                self.tokens.len(),
                self.scores.len()
            )));
        }
        let vocab = vocab_of(&self.tokens).map_err(bad)?;
        let token = |id: u32| token_at(&self.tokens, id).map_err(bad);
        let mut model = BPE::builder()
            .vocab_and_merges(vocab, self.merges())
            .byte_fallback(true)
            .fuse_unk(true);
        if let Some(unk) = self.unk {
            model = model.unk_token(token(unk)?.clone());
        }
        let model = model.build().map_err(|e| bad(format!("BPE: {e}")))?;
        let mut tk = Tokenizer::new(model);

        let spaces = NormalizerWrapper::Replace(
            Replace::new(" ", SPACE).map_err(|e| bad(format!("normalizer: {e}")))?,
        );
        tk.with_normalizer(Some(if self.add_space_prefix {
            NormalizerWrapper::Sequence(Sequence::new(vec![
                NormalizerWrapper::Prepend(Prepend::new(SPACE.into())),
                spaces,
            ]))
        } else {
            spaces
        }))
        .map_err(|e| bad(format!("normalizer: {e}")))?;

        let mut decoders = vec![
            DecoderWrapper::Replace(
                Replace::new(SPACE, " ").map_err(|e| bad(format!("decoder: {e}")))?,
            ),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ];
        if self.add_space_prefix {
            decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
        }
        tk.with_decoder(Some(DecoderSequence::new(decoders)));

        if self.bos.is_some() || self.eos.is_some() {
            let bos = self
                .bos
                .map(|i| token(i).map(|t| (t.clone(), i)))
                .transpose()?;
            let eos = self
                .eos
                .map(|i| token(i).map(|t| (t.clone(), i)))
                .transpose()?;
            let around = |body: &str| {
                let mut parts = Vec::new();
                if let Some((b, _)) = &bos {
                    parts.push(b.clone());
                }
                parts.push(body.to_string());
                if let Some((e, _)) = &eos {
                    parts.push(e.clone());
                }
                parts.join(" ")
            };
            let single = around("$A");
            let pair = format!("{single} {}", around("$B:1"));
            let tp = TemplateProcessing::builder()
                .try_single(single)
                .and_then(|b| b.try_pair(pair))
                .map_err(|e| bad(format!("BOS/EOS template: {e}")))?
                .special_tokens(bos.into_iter().chain(eos).collect::<Vec<_>>())
                .build()
                .map_err(|e| bad(format!("BOS/EOS template: {e}")))?;
            tk.with_post_processor(Some(tp));
        }

        // Matched whole in the raw text: not normalized, so that the text
        // after each one gets its own `▁` prefix, as in llama.cpp.
        let whole = |ids: &[u32], special: bool| -> Result<Vec<AddedToken>, TextError> {
            ids.iter()
                .map(|&i| Ok(AddedToken::from(token(i)?.clone(), special).normalized(false)))
                .collect()
        };
        tk.add_special_tokens(whole(&self.special, true)?)
            .map_err(|e| bad(format!("special tokens: {e}")))?;
        tk.add_tokens(whole(&self.added, false)?)
            .map_err(|e| bad(format!("added tokens: {e}")))?;
        Ok(tk)
    }
}

#[cfg(test)]
mod tests;
