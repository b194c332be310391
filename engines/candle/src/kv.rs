//! Per-sequence KV caches written in place, and the pool that recycles
//! their buffers; shared by every architecture of this crate.
//!
//! One tensor `[n_layer, 2, kv_heads, capacity, head_dim]` per sequence
//! (keys stored transposed, see [`crate::ops::attention`]); attention
//! reads `narrow`ed views of it, no copies. Capacity starts at the prompt
//! length rounded up to [`KV_CHUNK`] and doubles (capped at the context)
//! when full, copying the cache once per doubling instead of
//! re-concatenating every step; preallocating the whole context for every
//! sequence would reserve 75 MB per GPT-2 sequence in f32 (and 1.8 GB per
//! SmolLM2 sequence with its 8192-token context).

use crate::ops;
use candle_core::{DType, Device, Result, Tensor};

/// KV capacity granularity, in tokens.
pub const KV_CHUNK: usize = 64;

/// The geometry of one sequence's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    /// Key/value heads (fewer than query heads under grouped-query
    /// attention).
    pub heads: usize,
    pub head_dim: usize,
}

/// One sequence's keys and values for every layer, written in place.
#[derive(Debug)]
pub struct KvCache {
    /// `[n_layer, 2, n_head, capacity, head_dim]`; each layer's key block
    /// is used as `[n_head, head_dim, capacity]` (keys transposed, see
    /// [`ops::attention`]), its value block as is.
    data: Tensor,
    pub(crate) len: usize,
}

impl KvCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens that fit without growing.
    pub fn capacity(&self) -> usize {
        self.data.dims()[3]
    }

    /// Bytes allocated.
    pub fn reserved_bytes(&self) -> usize {
        tensor_bytes(&self.data)
    }

    /// Bytes holding live tokens.
    pub fn used_bytes(&self) -> usize {
        self.reserved_bytes() / self.capacity().max(1) * self.len
    }

    /// Makes room for `needed` tokens (at most `max`): doubles the capacity
    /// in steps of [`KV_CHUNK`] tokens and copies the live part over.
    pub(crate) fn reserve(&mut self, needed: usize, max: usize, pool: &mut KvPool) -> Result<()> {
        let cap = self.capacity();
        if needed <= cap {
            return Ok(());
        }
        if needed > max {
            candle_core::bail!("sequence of {needed} tokens exceeds the context of {max}")
        }
        let new_cap = needed.max(2 * cap).next_multiple_of(KV_CHUNK).min(max);
        let mut dims = self.data.dims().to_vec();
        dims[3] = new_cap;
        let data = pool.take(&dims, self.data.dtype(), self.data.device())?;
        let grown = KvCache { data, len: 0 };
        for layer in 0..dims[0] {
            let (kt, v) = self.view(layer, self.len)?;
            grown.write(layer, 0, &kt, &v)?;
        }
        let data = grown.data;
        pool.give(std::mem::replace(&mut self.data, data));
        Ok(())
    }

    /// A new cache holding a copy of this one's first `len` positions,
    /// with room for at least `len` (rounded up to [`KV_CHUNK`], at most
    /// `max` unless `len` is more).
    pub fn fork(&self, len: usize, max: usize, pool: &mut KvPool) -> Result<KvCache> {
        if len > self.len {
            candle_core::bail!("fork of {len} positions from a cache of {}", self.len)
        }
        let mut dims = self.data.dims().to_vec();
        dims[3] = len.max(1).next_multiple_of(KV_CHUNK).min(max).max(len);
        let data = pool.take(&dims, self.data.dtype(), self.data.device())?;
        let out = KvCache { data, len };
        for layer in 0..dims[0] {
            let (kt, v) = self.view(layer, len)?;
            out.write(layer, 0, &kt, &v)?;
        }
        Ok(out)
    }

    /// `[n_head, head_dim, capacity]` keys and `[n_head, capacity,
    /// head_dim]` values of `layer`.
    fn blocks(&self, layer: usize) -> Result<(Tensor, Tensor)> {
        let (_, _, h, cap, d) = self.data.dims5()?;
        let l = self.data.get(layer)?;
        Ok((l.get(0)?.reshape((h, d, cap))?, l.get(1)?))
    }

    /// Writes keys `kt: [n_head, head_dim, t]` and values `v: [n_head, t,
    /// head_dim]` (any strides) at positions `pos..pos + t`.
    pub(crate) fn write(&self, layer: usize, pos: usize, kt: &Tensor, v: &Tensor) -> Result<()> {
        let (kb, vb) = self.blocks(layer)?;
        ops::copy_into(&kb, kt, 2, pos)?;
        ops::copy_into(&vb, v, 1, pos)
    }

    /// Positions `0..n`: keys `[n_head, head_dim, n]` and values
    /// `[n_head, n, head_dim]`, as views.
    pub(crate) fn view(&self, layer: usize, n: usize) -> Result<(Tensor, Tensor)> {
        let (kb, vb) = self.blocks(layer)?;
        Ok((kb.narrow(2, 0, n)?, vb.narrow(1, 0, n)?))
    }
}

/// Freed KV buffers kept for reuse. A fresh multi-megabyte allocation
/// comes from `mmap` and page-faults on first touch (~3 ms of a 128-token
/// GPT-2 prefill went to that); reused buffers are already mapped. Buffers
/// are never re-zeroed: only positions below a cache's `len` are read.
#[derive(Debug)]
pub struct KvPool {
    free: Vec<Tensor>,
    max_bytes: usize,
}

impl KvPool {
    /// A pool that keeps at most `max_bytes` of freed buffers.
    pub fn new(max_bytes: usize) -> Self {
        KvPool {
            free: Vec::new(),
            max_bytes,
        }
    }

    /// Bytes held for reuse.
    pub fn bytes(&self) -> usize {
        self.free.iter().map(tensor_bytes).sum()
    }

    /// The smallest free buffer of this geometry with enough capacity, or
    /// a new one.
    fn take(&mut self, dims: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        let fits = |t: &Tensor| {
            let td = t.dims();
            t.dtype() == dtype
                && t.device().same_device(dev)
                && td.len() == 5
                && td[..3] == dims[..3]
                && td[4] == dims[4]
                && td[3] >= dims[3]
        };
        let best = (0..self.free.len())
            .filter(|&i| fits(&self.free[i]))
            .min_by_key(|&i| self.free[i].dims()[3]);
        match best {
            Some(i) => Ok(self.free.swap_remove(i)),
            None => Tensor::zeros(dims, dtype, dev),
        }
    }

    fn give(&mut self, data: Tensor) {
        if self.bytes() + tensor_bytes(&data) <= self.max_bytes {
            self.free.push(data);
        }
    }

    /// Returns a finished sequence's cache for reuse.
    pub fn recycle(&mut self, cache: KvCache) {
        self.give(cache.data)
    }

    /// A cache for up to `capacity` tokens.
    pub fn cache(
        &mut self,
        shape: KvShape,
        capacity: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<KvCache> {
        let dims = [shape.layers, 2, shape.heads, capacity, shape.head_dim];
        Ok(KvCache {
            data: self.take(&dims, dtype, dev)?,
            len: 0,
        })
    }
}

impl Default for KvPool {
    /// Keeps up to 256 MiB of freed buffers.
    fn default() -> Self {
        KvPool::new(256 << 20)
    }
}

pub(crate) fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}
