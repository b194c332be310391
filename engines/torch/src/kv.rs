//! A sequence's KV cache, shared by the models: one
//! `[layers, 2, kv_heads, capacity, head_dim]` tensor per sequence, written
//! in place through `narrow(..).copy_(..)`. Capacity starts at the prompt
//! rounded up to [`KV_CHUNK`] and doubles when full (one copy per
//! doubling), never beyond the model's context, as in the candle engine.
//! Grouped-query models store their `num_key_value_heads` heads only.

use crate::gpt2::Result;
use tch::{Device, Kind, Tensor};

/// KV capacity granularity, in tokens.
pub const KV_CHUNK: i64 = 64;

/// A sequence's KV cache.
pub struct KvCache {
    /// `[layers, 2, heads, capacity, head_dim]`
    t: Tensor,
    pub(crate) len: i64,
}

impl KvCache {
    /// An empty cache with room for `len` tokens (rounded up to
    /// [`KV_CHUNK`], at most `context` unless `len` is more).
    pub(crate) fn new(
        (layers, heads, head_dim): (usize, usize, usize),
        len: i64,
        context: usize,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let cap = (len + KV_CHUNK - 1) / KV_CHUNK * KV_CHUNK;
        let cap = cap.min(context as i64).max(len);
        let (l, h, d) = (layers as i64, heads as i64, head_dim as i64);
        Ok(KvCache {
            t: Tensor::f_zeros([l, 2, h, cap, d], (kind, device))?,
            len: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.t.size()[3] as usize
    }

    /// Makes room for `extra` more positions: doubles the capacity (at
    /// most `context`, at least what is needed), copying what is there.
    pub(crate) fn reserve(&mut self, extra: i64, context: usize) -> Result<()> {
        let need = self.len + extra;
        let cap = self.t.size()[3];
        if need <= cap {
            return Ok(());
        }
        let new_cap = (cap * 2).max(need).min(context as i64).max(need);
        let mut size = self.t.size();
        size[3] = new_cap;
        let t = Tensor::f_zeros(size.as_slice(), (self.t.kind(), self.t.device()))?;
        t.f_narrow(3, 0, self.len)?
            .f_copy_(&self.t.f_narrow(3, 0, self.len)?)?;
        self.t = t;
        Ok(())
    }

    /// A new cache holding a copy of this one's first `len` positions
    /// (room rounded up to [`KV_CHUNK`], at most `context`).
    pub(crate) fn fork(&self, len: i64, context: usize) -> Result<Self> {
        let s = self.t.size();
        let shape = (s[0] as usize, s[2] as usize, s[4] as usize);
        let mut out = KvCache::new(shape, len, context, self.t.kind(), self.t.device())?;
        out.t
            .f_narrow(3, 0, len)?
            .f_copy_(&self.t.f_narrow(3, 0, len)?)?;
        out.len = len;
        Ok(out)
    }

    /// Layer `l`'s keys and values, each `[heads, capacity, head_dim]`
    /// (views into the cache).
    pub(crate) fn layer(&self, l: usize) -> Result<(Tensor, Tensor)> {
        let layer = self.t.f_get(l as i64)?;
        Ok((layer.f_get(0)?, layer.f_get(1)?))
    }

    /// Bytes per token of this sequence.
    fn bytes_per_token(&self) -> usize {
        let s = self.t.size();
        (s[0] * s[1] * s[2] * s[4]) as usize * self.t.kind().elt_size_in_bytes()
    }

    /// Bytes the cached tokens use.
    pub fn used_bytes(&self) -> usize {
        self.len() * self.bytes_per_token()
    }

    /// Bytes the cache holds.
    pub fn reserved_bytes(&self) -> usize {
        self.capacity() * self.bytes_per_token()
    }
}

/// The attention mask of `s` new queries after `start` cached positions:
/// `[s, start + s]`, true where query `i` may see key `j` (`j <= start +
/// i`). libtorch's `is_causal` aligns its mask to the top left, right only
/// when there is no cache.
pub(crate) fn causal_mask(start: i64, s: i64, device: Device) -> Result<Tensor> {
    Tensor::f_ones([s, start + s], (Kind::Bool, device))?.f_tril(start)
}
