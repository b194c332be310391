//! The sequence table: everything an engine would otherwise repeat around
//! its kernels.
//!
//! An engine implements [`Kernels`]: prefill a batch of equal-length
//! prompts, decode one token for a batch of caches, score a sequence, and
//! say how many bytes a cache holds. [`Sequences`] wraps it into the
//! scheduler's [`Backend`] and owns the rest:
//!
//! * **validation**, in one place for every engine: a prompt is 1..=context
//!   tokens inside the vocabulary ([`check_prompt`]), a new sequence id is
//!   new, a decoded sequence exists, its token is inside the vocabulary and
//!   its cache has room for one more position, and a scored sequence is
//!   1..=context tokens inside the vocabulary ([`check_score`]);
//! * **prefill batching**: prompts of equal length run as one kernel call,
//!   in order of first appearance, chunked so that no call exceeds
//!   [`crate::MAX_PREFILL_TOKENS`] prompt tokens (a longer single prompt runs
//!   alone); the logits rows go back in the caller's order;
//! * **the table** of live sequences (`SeqId` -> cache and length): decode
//!   takes the requested caches out, hands the kernels `&mut` references in
//!   the caller's order and puts them back whatever happens; `free` returns
//!   a cache to [`Kernels::release`] (a recycling pool, or a shared batch
//!   tensor that marks a row dead);
//! * **memory**: weights plus the sum of every live cache's bytes plus what
//!   the kernels keep for reuse ([`Kernels::spare_cache_bytes`]);
//! * **shape checks** on what the kernels return (one logits row per
//!   sequence, one cache per prompt), so a kernel bug is a clear `runtime`
//!   error, not a wrong token.
//!
//! A kernel therefore never sees an invalid token, an unknown sequence or
//! a prompt that does not fit, and a new architecture is written once per
//! engine as kernels only.
//!
//! # Trade-off
//!
//! Decode moves each requested cache out of the `HashMap` and back every
//! step (two hash operations per sequence, tens of nanoseconds), so that
//! the kernels get plain `&mut` references in the batch's order without
//! `unsafe`. A GPT-2 decode step is milliseconds.

use crate::{Backend, SeqId, MAX_PREFILL_TOKENS};
use engine_api::{EngineError, Logits, MemoryStats};
use std::collections::HashMap;

/// What the kit needs to know of a model to validate requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of a row of logits; every token id is below it.
    pub vocab: usize,
    /// Largest prompt + generated length (positions).
    pub context: usize,
    /// End-of-sequence token, if the model has one.
    pub eos: Option<u32>,
}

/// Bytes one cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheBytes {
    /// Bytes of the positions written so far.
    pub used: u64,
    /// Bytes allocated for this cache (>= `used`).
    pub reserved: u64,
}

/// The tensor side of an engine: its kernels and its cache type. The kit
/// has validated every argument before calling (see the module docs).
pub trait Kernels: Send + 'static {
    /// One sequence's KV cache (or a handle to its rows in a shared one).
    type Cache: Send + 'static;

    /// Vocabulary, context length and end-of-sequence token.
    fn limits(&self) -> Limits;

    /// Bytes of the loaded weights.
    fn weight_bytes(&self) -> u64;

    /// Runs `prompts`, all of the same length, as one batch: writes the
    /// logits of each prompt's last position into `logits` (row-major
    /// `[prompts.len(), vocab]`, replacing its contents) and returns one
    /// new cache per prompt, in order.
    fn prefill(
        &mut self,
        prompts: &[&[u32]],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<Self::Cache>, EngineError>;

    /// One decode step: appends `tokens[i]` to `caches[i]` and writes the
    /// next-token logits (`[tokens.len(), vocab]`, replacing `logits`).
    /// The caches may have different lengths.
    fn decode(
        &mut self,
        tokens: &[u32],
        caches: &mut [&mut Self::Cache],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError>;

    /// Logits of every position of `tokens` (`[tokens.len(), vocab]`,
    /// replacing `logits`), without touching any cache.
    fn score(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), EngineError>;

    /// Bytes `cache` holds.
    fn cache_bytes(&self, cache: &Self::Cache) -> CacheBytes;

    /// Cache bytes still allocated but held by no live sequence (a pool of
    /// freed buffers kept for reuse, dead rows of a shared batch tensor).
    fn spare_cache_bytes(&self) -> u64 {
        0
    }

    /// Takes back the cache of a finished sequence (default: drops it).
    fn release(&mut self, cache: Self::Cache) {
        drop(cache)
    }
}

/// Checks a prompt against `limits`: 1..=context tokens, each inside the
/// vocabulary. `what` names it in the error ("request 3", "sequence 7").
pub fn check_prompt(what: &str, prompt: &[u32], limits: &Limits) -> Result<(), EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::invalid_argument(format!(
            "{what}: empty prompt"
        )));
    }
    if prompt.len() > limits.context {
        return Err(EngineError::invalid_argument(format!(
            "{what}: prompt of {} tokens; the model takes 1..={}",
            prompt.len(),
            limits.context
        )));
    }
    check_vocab(what, prompt, limits)
}

/// Checks the tokens of a `score` call: 1..=context, inside the vocabulary.
pub fn check_score(tokens: &[u32], limits: &Limits) -> Result<(), EngineError> {
    if tokens.is_empty() || tokens.len() > limits.context {
        return Err(EngineError::invalid_argument(format!(
            "score needs 1..={} tokens, got {}",
            limits.context,
            tokens.len()
        )));
    }
    check_vocab("score", tokens, limits)
}

/// Checks that every token is inside the vocabulary; the error names
/// `what`, the token's index and its value.
pub fn check_vocab(what: &str, tokens: &[u32], limits: &Limits) -> Result<(), EngineError> {
    match tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= limits.vocab)
    {
        Some((i, t)) => Err(EngineError::invalid_argument(format!(
            "{what}: token {i} is {t}, outside the vocabulary of {}",
            limits.vocab
        ))),
        None => Ok(()),
    }
}

struct Entry<C> {
    cache: C,
    /// Positions in the cache.
    len: usize,
}

/// [`Kernels`] plus the table of live sequences: the [`Backend`] the
/// scheduler drives.
pub struct Sequences<K: Kernels> {
    kernels: K,
    limits: Limits,
    table: HashMap<SeqId, Entry<K::Cache>>,
    /// Scratch rows of one prefill chunk.
    rows: Vec<f32>,
}

impl<K: Kernels + std::fmt::Debug> std::fmt::Debug for Sequences<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequences")
            .field("kernels", &self.kernels)
            .field("live", &self.table.len())
            .finish()
    }
}

impl<K: Kernels> Sequences<K> {
    /// An empty table over `kernels`.
    pub fn new(kernels: K) -> Self {
        Sequences {
            limits: kernels.limits(),
            kernels,
            table: HashMap::new(),
            rows: Vec::new(),
        }
    }

    /// [`Sequences::new`] followed by [`crate::warm_up`]: what an engine's
    /// `open` returns.
    pub fn warmed(kernels: K) -> Result<Self, EngineError> {
        let mut s = Self::new(kernels);
        crate::warm_up(&mut s)?;
        Ok(s)
    }

    /// The engine's kernels (for tools and tests that call the model).
    pub fn kernels(&self) -> &K {
        &self.kernels
    }

    /// Number of live sequences.
    pub fn live(&self) -> usize {
        self.table.len()
    }

    /// Positions in `seq`'s cache, if it is live.
    pub fn len_of(&self, seq: SeqId) -> Option<usize> {
        self.table.get(&seq).map(|e| e.len)
    }

    fn check_new(&self, seqs: &[(SeqId, &[u32])]) -> Result<(), EngineError> {
        for (i, &(id, prompt)) in seqs.iter().enumerate() {
            check_prompt(&format!("sequence {id}"), prompt, &self.limits)?;
            if self.table.contains_key(&id) || seqs[..i].iter().any(|s| s.0 == id) {
                return Err(EngineError::invalid_argument(format!(
                    "sequence {id} already exists"
                )));
            }
        }
        Ok(())
    }

    fn check_decode(&self, seqs: &[(SeqId, u32)]) -> Result<(), EngineError> {
        for (i, &(id, token)) in seqs.iter().enumerate() {
            let Some(e) = self.table.get(&id) else {
                return Err(EngineError::invalid_argument(format!(
                    "decode of unknown sequence {id}"
                )));
            };
            if seqs[..i].iter().any(|s| s.0 == id) {
                return Err(EngineError::invalid_argument(format!(
                    "sequence {id} appears twice in one decode step"
                )));
            }
            check_vocab(&format!("sequence {id}"), &[token], &self.limits)?;
            if e.len >= self.limits.context {
                return Err(EngineError::invalid_argument(format!(
                    "sequence {id}: its {} positions fill the model's context of {}",
                    e.len, self.limits.context
                )));
            }
        }
        Ok(())
    }

    /// Runs one chunk of equal-length prompts (`idx` into `seqs`), copies
    /// its rows into `logits` at the callers' positions and returns the
    /// new caches.
    fn prefill_chunk(
        &mut self,
        seqs: &[(SeqId, &[u32])],
        idx: &[usize],
        logits: &mut [f32],
    ) -> Result<Vec<K::Cache>, EngineError> {
        let vocab = self.limits.vocab;
        let prompts: Vec<&[u32]> = idx.iter().map(|&i| seqs[i].1).collect();
        let caches = self.kernels.prefill(&prompts, &mut self.rows)?;
        if self.rows.len() != idx.len() * vocab || caches.len() != idx.len() {
            let n = caches.len();
            caches.into_iter().for_each(|c| self.kernels.release(c));
            return Err(EngineError::runtime(format!(
                "prefill of {} prompts returned {} logits and {n} caches (vocabulary {vocab})",
                idx.len(),
                self.rows.len()
            )));
        }
        for (j, &i) in idx.iter().enumerate() {
            logits[i * vocab..(i + 1) * vocab].copy_from_slice(&self.rows[j * vocab..][..vocab]);
        }
        Ok(caches)
    }
}

/// Groups `seqs` by prompt length (groups in order of first appearance),
/// each group split into chunks of at most [`MAX_PREFILL_TOKENS`] prompt
/// tokens (at least one prompt per chunk).
pub fn prefill_chunks(seqs: &[(SeqId, &[u32])]) -> Vec<Vec<usize>> {
    group_by_len(seqs)
        .into_iter()
        .flat_map(|(len, idx)| {
            let per = (MAX_PREFILL_TOKENS / len.max(1)).max(1);
            idx.chunks(per).map(<[usize]>::to_vec).collect::<Vec<_>>()
        })
        .collect()
}

/// Indices of `seqs` grouped by prompt length, groups in order of first
/// appearance.
fn group_by_len(seqs: &[(SeqId, &[u32])]) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, (_, p)) in seqs.iter().enumerate() {
        match groups.iter_mut().find(|(len, _)| *len == p.len()) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((p.len(), vec![i])),
        }
    }
    groups
}

impl<K: Kernels> Backend for Sequences<K> {
    fn vocab_size(&self) -> usize {
        self.limits.vocab
    }

    fn max_seq_len(&self) -> usize {
        self.limits.context
    }

    fn eos_token(&self) -> Option<u32> {
        self.limits.eos
    }

    fn prefill(
        &mut self,
        seqs: &[(SeqId, &[u32])],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.check_new(seqs)?;
        logits.clear();
        logits.resize(seqs.len() * self.limits.vocab, 0.0);
        let mut created: Vec<(SeqId, Entry<K::Cache>)> = Vec::with_capacity(seqs.len());
        for idx in prefill_chunks(seqs) {
            match self.prefill_chunk(seqs, &idx, logits) {
                Ok(caches) => created.extend(idx.iter().zip(caches).map(|(&i, cache)| {
                    let (id, prompt) = seqs[i];
                    let len = prompt.len();
                    (id, Entry { cache, len })
                })),
                Err(e) => {
                    for (_, entry) in created {
                        self.kernels.release(entry.cache);
                    }
                    return Err(e);
                }
            }
        }
        self.table.extend(created);
        Ok(())
    }

    fn decode(&mut self, seqs: &[(SeqId, u32)], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        if seqs.is_empty() {
            logits.clear();
            return Ok(());
        }
        self.check_decode(seqs)?;
        let mut taken: Vec<(SeqId, Entry<K::Cache>)> = seqs
            .iter()
            .filter_map(|&(id, _)| self.table.remove_entry(&id))
            .collect();
        let tokens: Vec<u32> = seqs.iter().map(|s| s.1).collect();
        let result = {
            let mut caches: Vec<&mut K::Cache> =
                taken.iter_mut().map(|(_, e)| &mut e.cache).collect();
            self.kernels.decode(&tokens, &mut caches, logits)
        };
        let result = result.and_then(|_| {
            if logits.len() == seqs.len() * self.limits.vocab {
                Ok(())
            } else {
                Err(EngineError::runtime(format!(
                    "decode of {} sequences returned {} logits (vocabulary {})",
                    seqs.len(),
                    logits.len(),
                    self.limits.vocab
                )))
            }
        });
        if result.is_ok() {
            taken.iter_mut().for_each(|(_, e)| e.len += 1);
        }
        self.table.extend(taken);
        result
    }

    fn free(&mut self, seq: SeqId) {
        if let Some(e) = self.table.remove(&seq) {
            self.kernels.release(e.cache);
        }
    }

    fn memory(&self) -> MemoryStats {
        let (used, reserved) = self.table.values().fold((0, 0), |(u, r), e| {
            let b = self.kernels.cache_bytes(&e.cache);
            (u + b.used, r + b.reserved)
        });
        MemoryStats {
            weight_bytes: self.kernels.weight_bytes(),
            kv_cache_used_bytes: used,
            kv_cache_reserved_bytes: reserved + self.kernels.spare_cache_bytes(),
            kv_cache_peak_bytes: used,
        }
    }

    fn score(&mut self, tokens: &[u32]) -> Result<Logits, EngineError> {
        check_score(tokens, &self.limits)?;
        let mut data = Vec::new();
        self.kernels.score(tokens, &mut data)?;
        let vocab = self.limits.vocab;
        if data.len() != tokens.len() * vocab {
            return Err(EngineError::runtime(format!(
                "score of {} tokens returned {} logits (vocabulary {vocab})",
                tokens.len(),
                data.len()
            )));
        }
        Ok(Logits {
            rows: tokens.len() as u32,
            vocab: vocab as u32,
            data: data.into(),
        })
    }
}

#[cfg(test)]
mod tests;
