//! The kit's prefix cache: KV of prompt prefixes kept for later requests,
//! so that a prompt that starts like an earlier one computes only its new
//! tokens, as vLLM's automatic prefix caching does.
//!
//! # How it works
//!
//! A prompt is cut into blocks of [`PrefixCacheConfig::block_tokens`]
//! tokens. Block `i`'s key is a chain hash: FNV-1a over block `i - 1`'s key
//! and block `i`'s tokens, so equal keys mean equal prefixes up to the end
//! of that block (the stored tokens are compared too, so a hash collision
//! is a miss, never a wrong cache).
//!
//! * **Lookup** (before a prompt's prefill): the deepest of the prompt's
//!   full blocks whose key is known, at most `len - 1` tokens, so that at
//!   least one token is computed and gives the first token's logits. The
//!   engine copies that many positions out of the stored cache
//!   ([`crate::Kernels::fork`]) and computes the rest on top of them
//!   ([`crate::Kernels::extend`]).
//! * **Insert** (after a prompt's prefill): unless its deepest full block
//!   is known already, the engine copies the prompt's full blocks out of
//!   the new sequence's cache into a new entry, and every block key of the
//!   prompt now points at it; an older entry whose keys are all taken over
//!   (a prefix of the new one) is dropped.
//! * **Eviction**: least recently used entries first (a hit or an insert
//!   uses an entry), until the entries' bytes fit
//!   [`PrefixCacheConfig::max_bytes`]; an entry larger than the budget is
//!   not kept.
//!
//! # Trade-off
//!
//! vLLM shares blocks in place (a paged KV cache, one copy of each block).
//! The kit's engines keep one contiguous cache per sequence, so an entry is
//! a contiguous copy of a whole prefix: a hit costs one copy of the hit
//! positions and a new prompt one copy of its full blocks (memory-bound,
//! about 1% of a prefill's time on the CPU), and two prompts that share a
//! prefix but differ later each hold their own copy of it, within the byte
//! budget. What is measured is therefore the same thing as vLLM's
//! hit rate and TTFT gain, at a somewhat higher memory cost per hit.

use crate::fnv1a;
use std::collections::HashMap;

/// The prefix cache's settings (engine options `prefix_cache`,
/// `prefix_block`, `prefix_cache_mib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCacheConfig {
    /// Tokens per block: only whole blocks are cached and matched (vLLM's
    /// default block size, 16).
    pub block_tokens: usize,
    /// Most bytes the stored entries may hold.
    pub max_bytes: u64,
}

impl Default for PrefixCacheConfig {
    fn default() -> Self {
        PrefixCacheConfig {
            block_tokens: 16,
            max_bytes: 256 << 20,
        }
    }
}

/// Identifies a stored entry.
type EntryId = u64;

struct Entry<C> {
    cache: C,
    /// The prefix this entry holds (whole blocks).
    tokens: Vec<u32>,
    /// Block keys that point at this entry.
    refs: usize,
    bytes: u64,
    last_used: u64,
}

/// A hit: `tokens` positions of entry `entry` match the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    entry: EntryId,
    /// Positions to take from the entry (a multiple of the block size).
    pub tokens: usize,
}

/// Stored prefixes of type-`C` caches, their block index and LRU clock.
pub struct PrefixCache<C> {
    cfg: PrefixCacheConfig,
    /// Block key -> (entry, blocks of that entry up to the key).
    index: HashMap<u64, (EntryId, usize)>,
    entries: HashMap<EntryId, Entry<C>>,
    next_id: EntryId,
    clock: u64,
    bytes: u64,
}

impl<C> PrefixCache<C> {
    /// An empty cache.
    pub fn new(cfg: PrefixCacheConfig) -> Self {
        PrefixCache {
            cfg,
            index: HashMap::new(),
            entries: HashMap::new(),
            next_id: 0,
            clock: 0,
            bytes: 0,
        }
    }

    /// Its settings.
    pub fn config(&self) -> PrefixCacheConfig {
        self.cfg
    }

    /// Bytes the stored entries hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The chain keys of `tokens`' first `blocks` full blocks.
    fn keys(&self, tokens: &[u32], blocks: usize) -> Vec<u64> {
        let b = self.cfg.block_tokens;
        let mut keys = Vec::with_capacity(blocks);
        let mut parent = 0u64;
        let mut bytes = Vec::with_capacity(8 + 4 * b);
        for block in tokens.chunks_exact(b).take(blocks) {
            bytes.clear();
            bytes.extend_from_slice(&parent.to_le_bytes());
            block
                .iter()
                .for_each(|t| bytes.extend_from_slice(&t.to_le_bytes()));
            parent = fnv1a(&bytes);
            keys.push(parent);
        }
        keys
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The longest stored prefix of `prompt` that leaves at least one of
    /// its tokens to compute, marked as just used; `None` on a miss.
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<Hit> {
        let blocks = prompt.len().saturating_sub(1) / self.cfg.block_tokens;
        let keys = self.keys(prompt, blocks);
        let b = self.cfg.block_tokens;
        let (entry, n) = keys.iter().rev().find_map(|k| {
            let &(id, n) = self.index.get(k)?;
            let e = self.entries.get(&id)?;
            (e.tokens.get(..n * b)? == &prompt[..n * b]).then_some((id, n))
        })?;
        let now = self.tick();
        if let Some(e) = self.entries.get_mut(&entry) {
            e.last_used = now;
        }
        Some(Hit {
            entry,
            tokens: n * b,
        })
    }

    /// The stored cache of a hit.
    pub fn cache(&self, hit: &Hit) -> Option<&C> {
        self.entries.get(&hit.entry).map(|e| &e.cache)
    }

    /// Tokens of `prompt` an insert would store: its full blocks, or 0 when
    /// there is none or the deepest one is stored already (which is then
    /// marked as just used).
    pub fn wanted(&mut self, prompt: &[u32]) -> usize {
        let b = self.cfg.block_tokens;
        let blocks = prompt.len() / b;
        if blocks == 0 {
            return 0;
        }
        let keys = self.keys(prompt, blocks);
        let known = keys
            .last()
            .and_then(|k| self.index.get(k))
            .and_then(|&(id, n)| {
                let e = self.entries.get(&id)?;
                (e.tokens.get(..n * b)? == &prompt[..n * b]).then_some(id)
            });
        match known {
            Some(id) => {
                let now = self.tick();
                if let Some(e) = self.entries.get_mut(&id) {
                    e.last_used = now;
                }
                0
            }
            None => blocks * b,
        }
    }

    /// Stores `cache`, holding `prompt`'s first [`Self::wanted`] tokens and
    /// `bytes` bytes, evicting least recently used entries to fit the
    /// budget. Returns the caches that left the store (evicted, made
    /// redundant, or `cache` itself when it alone exceeds the budget) for
    /// the engine to release.
    pub fn insert(&mut self, prompt: &[u32], cache: C, bytes: u64) -> Vec<C> {
        let b = self.cfg.block_tokens;
        let blocks = prompt.len() / b;
        if blocks == 0 || bytes > self.cfg.max_bytes {
            return vec![cache];
        }
        let mut out = Vec::new();
        let id = self.next_id;
        self.next_id += 1;
        let now = self.tick();
        // take the prompt's keys over first: an entry it contains leaves
        // without evicting anything for it
        for (i, key) in self.keys(prompt, blocks).into_iter().enumerate() {
            if let Some((old, _)) = self.index.insert(key, (id, i + 1)) {
                out.extend(self.unref(old));
            }
        }
        while self.bytes + bytes > self.cfg.max_bytes {
            match self.entries.iter().min_by_key(|(_, e)| e.last_used) {
                Some((&old, _)) => out.extend(self.remove(old)),
                None => break,
            }
        }
        self.bytes += bytes;
        self.entries.insert(
            id,
            Entry {
                cache,
                tokens: prompt[..blocks * b].to_vec(),
                refs: blocks,
                bytes,
                last_used: now,
            },
        );
        out
    }

    /// One key fewer points at `id`; drops the entry when none is left.
    fn unref(&mut self, id: EntryId) -> Option<C> {
        let e = self.entries.get_mut(&id)?;
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return None;
        }
        let e = self.entries.remove(&id)?;
        self.bytes -= e.bytes;
        Some(e.cache)
    }

    /// Drops entry `id` and the keys that point at it.
    fn remove(&mut self, id: EntryId) -> Option<C> {
        let e = self.entries.remove(&id)?;
        self.index.retain(|_, (entry, _)| *entry != id);
        self.bytes -= e.bytes;
        Some(e.cache)
    }

    /// Drops every entry, returning their caches.
    pub fn clear(&mut self) -> Vec<C> {
        self.index.clear();
        self.bytes = 0;
        self.entries.drain().map(|(_, e)| e.cache).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(block: usize, max: u64) -> PrefixCache<&'static str> {
        PrefixCache::new(PrefixCacheConfig {
            block_tokens: block,
            max_bytes: max,
        })
    }

    fn seq(from: u32, n: usize) -> Vec<u32> {
        (from..from + n as u32).collect()
    }

    #[test]
    fn a_miss_then_a_hit_of_whole_blocks_leaving_one_token() {
        let mut c = cache(4, 1000);
        let p: Vec<u32> = seq(0, 10);
        assert_eq!(c.lookup(&p), None);
        assert_eq!(c.wanted(&p), 8);
        assert!(c.insert(&p, "a", 100).is_empty());
        assert_eq!(c.bytes(), 100);
        // the same prompt: 8 of its 10 tokens (two blocks)
        let hit = c.lookup(&p).unwrap();
        assert_eq!(hit.tokens, 8);
        assert_eq!(c.cache(&hit), Some(&"a"));
        // 8 tokens exactly: at most 7 may come from the cache -> one block
        assert_eq!(c.lookup(&p[..8]).unwrap().tokens, 4);
        // a prompt that differs inside the second block: one block
        let mut q = p.clone();
        q[5] = 99;
        assert_eq!(c.lookup(&q).unwrap().tokens, 4);
        // differs in the first block: a miss
        q[0] = 99;
        assert_eq!(c.lookup(&q), None);
        // shorter than one block plus one token: a miss
        assert_eq!(c.lookup(&p[..4]), None);
        // its deepest block is stored: nothing to insert
        assert_eq!(c.wanted(&p), 0);
        assert_eq!(c.wanted(&p[..9]), 0);
        assert_eq!(c.wanted(&seq(0, 12)), 12);
    }

    #[test]
    fn a_longer_prefix_replaces_the_entry_it_contains() {
        let mut c = cache(4, 1000);
        c.insert(&seq(0, 8), "short", 100);
        assert_eq!(c.len(), 1);
        let gone = c.insert(&seq(0, 16), "long", 200);
        assert_eq!(gone, vec!["short"]);
        assert_eq!((c.len(), c.bytes()), (1, 200));
        let hit = c.lookup(&seq(0, 9)).unwrap();
        assert_eq!((hit.tokens, c.cache(&hit)), (8, Some(&"long")));
        // two prompts that share one block and then differ: both kept, the
        // shared block served by the newer
        let mut c = cache(4, 1000);
        let mut b = seq(0, 8);
        b[6] = 77;
        c.insert(&seq(0, 8), "a", 100);
        assert!(c.insert(&b, "b", 100).is_empty());
        assert_eq!(c.len(), 2);
        let hit = c.lookup(&seq(0, 6)).unwrap();
        assert_eq!((hit.tokens, c.cache(&hit)), (4, Some(&"b")));
        let hit = c.lookup(&seq(0, 9)).unwrap();
        assert_eq!((hit.tokens, c.cache(&hit)), (8, Some(&"a")));
    }

    #[test]
    fn least_recently_used_entries_leave_first_and_the_budget_holds() {
        let mut c = cache(2, 300);
        c.insert(&[1, 1], "a", 100);
        c.insert(&[2, 2], "b", 100);
        c.insert(&[3, 3], "c", 100);
        assert!(c.lookup(&[1, 1, 0]).is_some()); // a used: b is now oldest
        let gone = c.insert(&[4, 4], "d", 100);
        assert_eq!(gone, vec!["b"]);
        assert_eq!(c.bytes(), 300);
        assert!(c.lookup(&[2, 2, 0]).is_none());
        assert!(c.lookup(&[1, 1, 0]).is_some());
        // larger than the whole budget: not kept, nothing evicted
        assert_eq!(c.insert(&[5, 5], "e", 301), vec!["e"]);
        assert_eq!(c.len(), 3);
        // two evictions for a double-size entry
        let mut gone = c.insert(&[6, 6], "f", 200);
        gone.sort();
        assert_eq!(gone, vec!["c", "d"]);
        assert_eq!(c.bytes(), 300);
        let mut all = c.clear();
        all.sort();
        assert_eq!(all, vec!["a", "f"]);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }

    #[test]
    fn a_hash_collision_is_a_miss_not_a_wrong_cache() {
        let mut c = cache(2, 1000);
        c.insert(&[1, 2, 3, 4], "a", 10);
        // forge: point the key of [9, 9] at the entry holding [1, 2]
        let forged = c.keys(&[9, 9], 1)[0];
        let real = c.keys(&[1, 2], 1)[0];
        let target = c.index[&real];
        c.index.insert(forged, target);
        assert_eq!(c.lookup(&[9, 9, 5]), None);
        assert_eq!(c.lookup(&[1, 2, 5]).unwrap().tokens, 2);
    }
}
