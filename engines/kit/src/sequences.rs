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

use crate::prefix_cache::{Hit, PrefixCache, PrefixCacheConfig};
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

    /// What the engine chose for this model (kernels, and how), a JSON
    /// object the results keep beside every cell; empty by default.
    fn describe(&self) -> String {
        String::new()
    }

    /// Whether [`Kernels::fork`] works: the prefix cache
    /// ([`crate::prefix_cache`]) needs it.
    fn can_fork(&self) -> bool {
        false
    }

    /// A new cache holding a copy of `cache`'s first `len` positions
    /// (`len` is at most what `cache` holds); later writes to either leave
    /// the other as it is.
    fn fork(&mut self, _cache: &Self::Cache, _len: usize) -> Result<Self::Cache, EngineError> {
        Err(EngineError::unsupported(
            "this engine cannot copy a KV cache",
        ))
    }

    /// Computes `tokens` after the positions `cache` holds (a prefix-cache
    /// hit's remaining prompt tokens): appends their keys and values and
    /// writes the logits of the last one (`[1, vocab]`, replacing
    /// `logits`). The default runs one [`Kernels::decode`] step per token;
    /// an engine with a kernel for several queries over a cache (queries
    /// `n..n + m` over keys `0..n + m`) overrides it.
    fn extend(
        &mut self,
        cache: &mut Self::Cache,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        for &t in tokens {
            let mut one = [&mut *cache];
            self.decode(&[t], &mut one, logits)?;
        }
        Ok(())
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
    /// Prompt positions its prefill took from the prefix cache.
    cached: usize,
}

/// [`Kernels`] plus the table of live sequences: the [`Backend`] the
/// scheduler drives.
pub struct Sequences<K: Kernels> {
    kernels: K,
    limits: Limits,
    table: HashMap<SeqId, Entry<K::Cache>>,
    /// Scratch rows of one prefill chunk.
    rows: Vec<f32>,
    /// Stored prompt prefixes, when the prefix cache is on.
    prefix: Option<PrefixCache<K::Cache>>,
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
            prefix: None,
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

    /// The prefix cache, when it is on.
    pub fn prefix_cache(&self) -> Option<&PrefixCache<K::Cache>> {
        self.prefix.as_ref()
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

    /// A prefix-cache hit's prefill: a copy of the hit's positions, then
    /// the rest of `prompt` computed on top of them; its logits row goes
    /// to the start of `row`.
    fn prefill_hit(
        &mut self,
        prompt: &[u32],
        hit: &Hit,
        row: &mut [f32],
    ) -> Result<Entry<K::Cache>, EngineError> {
        let vocab = self.limits.vocab;
        let stored = self
            .prefix
            .as_ref()
            .and_then(|p| p.cache(hit))
            .ok_or_else(|| EngineError::runtime("prefix cache: a hit's entry is gone"))?;
        let mut cache = self.kernels.fork(stored, hit.tokens)?;
        let rest = &prompt[hit.tokens..];
        if let Err(e) = self.kernels.extend(&mut cache, rest, &mut self.rows) {
            self.kernels.release(cache);
            return Err(e);
        }
        if self.rows.len() != vocab {
            self.kernels.release(cache);
            return Err(EngineError::runtime(format!(
                "extend of {} tokens returned {} logits (vocabulary {vocab})",
                rest.len(),
                self.rows.len()
            )));
        }
        row[..vocab].copy_from_slice(&self.rows);
        Ok(Entry {
            cache,
            len: prompt.len(),
            cached: hit.tokens,
        })
    }

    /// Stores `prompt`'s full blocks, copied out of its new `cache`, in the
    /// prefix cache (when it is on and they are not there yet), releasing
    /// what the store lets go.
    fn remember(&mut self, prompt: &[u32], cache: &K::Cache) -> Result<(), EngineError> {
        let Some(pc) = self.prefix.as_mut() else {
            return Ok(());
        };
        let n = pc.wanted(prompt);
        if n == 0 {
            return Ok(());
        }
        let copy = self.kernels.fork(cache, n)?;
        let bytes = self.kernels.cache_bytes(&copy).reserved;
        let gone = match self.prefix.as_mut() {
            Some(pc) => pc.insert(prompt, copy, bytes),
            None => vec![copy],
        };
        gone.into_iter().for_each(|c| self.kernels.release(c));
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
    chunks_of(seqs, 0..seqs.len())
}

/// [`prefill_chunks`] of the prompts `which` of `seqs`.
fn chunks_of(seqs: &[(SeqId, &[u32])], which: impl Iterator<Item = usize>) -> Vec<Vec<usize>> {
    group_by_len(seqs, which)
        .into_iter()
        .flat_map(|(len, idx)| {
            let per = (MAX_PREFILL_TOKENS / len.max(1)).max(1);
            idx.chunks(per).map(<[usize]>::to_vec).collect::<Vec<_>>()
        })
        .collect()
}

/// Indices of `seqs` grouped by prompt length, groups in order of first
/// appearance.
fn group_by_len(
    seqs: &[(SeqId, &[u32])],
    which: impl Iterator<Item = usize>,
) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in which {
        let p = seqs[i].1;
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
        // prefix-cache hits: positions each prompt takes from the cache
        let hits: Vec<Option<Hit>> = match &mut self.prefix {
            Some(pc) => seqs.iter().map(|(_, p)| pc.lookup(p)).collect(),
            None => vec![None; seqs.len()],
        };
        let mut created: Vec<(usize, Entry<K::Cache>)> = Vec::with_capacity(seqs.len());
        let misses = (0..seqs.len()).filter(|&i| hits[i].is_none());
        let mut result = Ok(());
        for idx in chunks_of(seqs, misses) {
            match self.prefill_chunk(seqs, &idx, logits) {
                Ok(caches) => created.extend(idx.iter().zip(caches).map(|(&i, cache)| {
                    let len = seqs[i].1.len();
                    (
                        i,
                        Entry {
                            cache,
                            len,
                            cached: 0,
                        },
                    )
                })),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        for (i, hit) in hits.iter().enumerate() {
            let Some(hit) = (*hit).filter(|_| result.is_ok()) else {
                continue;
            };
            match self.prefill_hit(seqs[i].1, &hit, &mut logits[i * self.limits.vocab..]) {
                Ok(entry) => created.push((i, entry)),
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() {
            result = created
                .iter()
                .try_for_each(|(i, e)| self.remember(seqs[*i].1, &e.cache));
        }
        match result {
            Ok(()) => {
                self.table
                    .extend(created.into_iter().map(|(i, e)| (seqs[i].0, e)));
                Ok(())
            }
            Err(e) => {
                for (_, entry) in created {
                    self.kernels.release(entry.cache);
                }
                Err(e)
            }
        }
    }

    fn describe(&self) -> String {
        self.kernels.describe()
    }

    fn cached_prompt_tokens(&self, seq: SeqId) -> u32 {
        self.table.get(&seq).map_or(0, |e| e.cached as u32)
    }

    fn set_prefix_cache(&mut self, cfg: Option<PrefixCacheConfig>) -> Result<(), EngineError> {
        if cfg.is_some() && !self.kernels.can_fork() {
            return Err(EngineError::unsupported(
                "this engine cannot copy a KV cache, which the kit's prefix cache (prefix_cache) needs",
            ));
        }
        for c in self
            .prefix
            .take()
            .map(|mut p| p.clear())
            .unwrap_or_default()
        {
            self.kernels.release(c);
        }
        self.prefix = cfg.map(PrefixCache::new);
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
        let prefix = self.prefix.as_ref().map_or(0, |p| p.bytes());
        MemoryStats {
            weight_bytes: self.kernels.weight_bytes(),
            kv_cache_used_bytes: used,
            kv_cache_reserved_bytes: reserved + self.kernels.spare_cache_bytes() + prefix,
            kv_cache_peak_bytes: used,
            prefix_cache_bytes: prefix,
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
