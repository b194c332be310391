//! GPT-2 written with tch (libtorch) ops, loading Hugging Face's
//! `model.safetensors` by name (HF's Conv1D layout `[in, out]`, with or
//! without the `transformer.` prefix).
//!
//! * Linear layers run through one of two libtorch back ends ([`MatMul`],
//!   [`crate::linear`]):
//!   - `onednn` (f32 on CPU, the default): the weights are converted once
//!     at load into oneDNN tensors `[out, in]` (`to_mkldnn`) and every layer
//!     is `mkldnn_linear`, oneDNN's inner product, the kernel PyTorch's
//!     `torch.utils.mkldnn` and IPEX use. On this machine's AMD CPU it runs
//!     batch-8 decode shapes about twice as fast as MKL's sgemm (which
//!     re-packs the whole weight on every call at small M and takes its
//!     generic code paths on non-Intel CPUs): 0.66 vs 1.09 ms for
//!     768x3072 at M = 8, 10.1 vs 24.4 ms for the lm_head (`--example
//!     linear`, figures in engines/torch/README.md).
//!   - `addmm`: `addmm(bias, x, W)` on HF's `[in, out]` weights, the call
//!     PyTorch's own `Conv1D` makes (MKL's sgemm/sgemv) — what eager
//!     PyTorch runs; kept for other dtypes and devices and for comparison.
//! * Attention is `scaled_dot_product_attention` (libtorch picks its fused
//!   CPU kernel), with the scale passed explicitly (`1/sqrt(head_dim)`, and
//!   HF's `scale_attn_by_inverse_layer_idx`).
//! * KV cache ([`crate::kv`]): one `[n_layer, 2, n_head, capacity,
//!   head_dim]` tensor per sequence, written in place through
//!   `narrow(..).copy_(..)`; capacity starts at the prompt rounded up to 64
//!   and doubles when full (one copy per doubling), as in the candle
//!   engine.
//! * Batched decode: the linear layers run over all sequences at once;
//!   attention runs per sequence against its own cache (sequences have
//!   different lengths), so no padding is ever computed.
//! * Prefill computes the lm_head for the last position only; `score` for
//!   every position.

use crate::linear::Linear;
use engine_kit::gpt2::{Activation, Config};
use tch::{Device, Kind, Tensor};

pub type Result<T> = std::result::Result<T, tch::TchError>;

pub use crate::kv::KvCache;
pub use crate::linear::{Kernels, MatMul};

struct Block {
    ln1: (Tensor, Tensor),
    attn: Linear,
    proj: Linear,
    ln2: (Tensor, Tensor),
    fc: Linear,
    fc2: Linear,
}

/// GPT-2 LM head model.
pub struct Gpt2 {
    cfg: Config,
    kind: Kind,
    device: Device,
    kernels: Kernels,
    wte: Tensor,
    /// The tied lm_head, a copy of `wte` in its kernel's layout (154 MB for
    /// GPT-2 in f32). With `addmm`, `wte` transposed and contiguous,
    /// `[C, vocab]`: libtorch's MKL runs `x @ wte^T` (the transposed view
    /// HF's `F.linear` uses) at half the bandwidth on this machine's AMD
    /// CPU (11.3 vs 5.8 ms per batch-1 step), so the copy pays for itself
    /// on every token. With `onednn`, `wte` as a oneDNN tensor.
    lm_head: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: (Tensor, Tensor),
    act: Activation,
}

/// Supplies the checkpoint's tensors (HF names without prefix) as f32 CPU
/// tensors of the expected shape.
pub trait Weights {
    fn get(&self, name: &str) -> std::result::Result<Tensor, String>;
}

impl Gpt2 {
    pub fn new(
        cfg: &Config,
        w: &dyn Weights,
        kind: Kind,
        device: Device,
        kernels: Kernels,
    ) -> std::result::Result<Self, String> {
        let act = cfg.activation()?;
        if kernels.uses(MatMul::OneDnn) && (kind != Kind::Float || device != Device::Cpu) {
            return Err(format!(
                "matmul onednn runs f32 on the CPU only (asked: {kind:?} on {device:?})"
            ));
        }
        let load = |name: &str| -> std::result::Result<Tensor, String> {
            let t = w.get(name)?;
            t.f_to_kind(kind)
                .and_then(|t| t.f_to_device(device))
                .map_err(|e| format!("{name}: {e}"))
        };
        let pair = |p: &str| -> std::result::Result<(Tensor, Tensor), String> {
            Ok((load(&format!("{p}.weight"))?, load(&format!("{p}.bias"))?))
        };
        let linear = |p: &str, mm: MatMul| -> std::result::Result<Linear, String> {
            let (w, b) = pair(p)?;
            Linear::from_in_out(w, Some(b), mm).map_err(|e| format!("{p}.weight: {e}"))
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = |s: &str| format!("h.{l}.{s}");
            blocks.push(Block {
                ln1: pair(&p("ln_1"))?,
                attn: linear(&p("attn.c_attn"), kernels.attn_in)?,
                proj: linear(&p("attn.c_proj"), kernels.attn_out)?,
                ln2: pair(&p("ln_2"))?,
                fc: linear(&p("mlp.c_fc"), kernels.mlp_in)?,
                fc2: linear(&p("mlp.c_proj"), kernels.mlp_out)?,
            });
        }
        let wte = load("wte.weight")?;
        let lm_head = match kernels.head {
            // the quantized kernels keep the tied lm_head in the model's
            // dtype (the embedding table it is), as llama.cpp keeps its
            // output layer at higher precision
            MatMul::Addmm | MatMul::Int8 | MatMul::Int8Dynamic | MatMul::Int4 => {
                wte.f_tr().and_then(|t| t.f_contiguous())
            }
            MatMul::OneDnn => wte.f_contiguous().and_then(|t| t.f_to_mkldnn(None)),
        }
        .map_err(|e| format!("lm_head: {e}"))?;
        Ok(Gpt2 {
            cfg: cfg.clone(),
            kind,
            device,
            kernels,
            wte,
            lm_head,
            wpe: load("wpe.weight")?,
            blocks,
            ln_f: pair("ln_f")?,
            act,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Bytes a decode step streams: all weights but `wte`, which is only
    /// looked up (the lm_head is its own copy).
    pub fn streamed_weight_bytes(&self) -> usize {
        let elt = self.kind.elt_size_in_bytes();
        let table = self.wte.size().iter().product::<i64>() as usize * elt;
        self.weight_bytes().saturating_sub(table)
    }

    /// Bytes of all weights.
    pub fn weight_bytes(&self) -> usize {
        let elt = self.kind.elt_size_in_bytes();
        // `size()`, not `numel()`: oneDNN tensors have sizes but no strides.
        let n = |t: &Tensor| t.size().iter().product::<i64>() as usize * elt;
        let pair = |p: &(Tensor, Tensor)| n(&p.0) + n(&p.1);
        let lin = |l: &Linear| l.bytes();
        n(&self.wte)
            + n(&self.lm_head)
            + n(&self.wpe)
            + pair(&self.ln_f)
            + self
                .blocks
                .iter()
                .map(|b| {
                    pair(&b.ln1)
                        + lin(&b.attn)
                        + lin(&b.proj)
                        + pair(&b.ln2)
                        + lin(&b.fc)
                        + lin(&b.fc2)
                })
                .sum::<usize>()
    }

    fn attn_scale(&self, layer: usize) -> f64 {
        let mut s = 1.0;
        if self.cfg.scale_attn_weights {
            s /= (self.cfg.head_dim() as f64).sqrt();
        }
        if self.cfg.scale_attn_by_inverse_layer_idx {
            s /= (layer + 1) as f64;
        }
        s
    }

    fn ln(&self, x: &Tensor, p: &(Tensor, Tensor)) -> Result<Tensor> {
        x.f_layer_norm(
            [self.cfg.n_embd as i64],
            Some(&p.0),
            Some(&p.1),
            self.cfg.layer_norm_epsilon,
            false,
        )
    }

    /// `x: [N, in]` → `[N, out]`.
    fn linear(x: &Tensor, l: &Linear) -> Result<Tensor> {
        l.forward(x)
    }

    fn mlp(&self, x: &Tensor, b: &Block) -> Result<Tensor> {
        let h = Self::linear(x, &b.fc)?;
        let h = match self.act {
            Activation::GeluTanh => h.f_gelu("tanh")?,
            Activation::GeluErf => h.f_gelu("none")?,
            Activation::Relu => h.f_relu()?,
        };
        Self::linear(&h, &b.fc2)
    }

    fn ids(&self, tokens: &[u32]) -> Result<Tensor> {
        let v: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        Tensor::f_from_slice(&v)?.f_to_device(self.device)
    }

    /// Embeddings of `tokens` at positions `pos..`: `[n, C]`.
    fn embed(&self, tokens: &[u32], positions: &[i64]) -> Result<Tensor> {
        let ids = self.ids(tokens)?;
        let pos = Tensor::f_from_slice(positions)?.f_to_device(self.device)?;
        self.wte
            .f_index_select(0, &ids)?
            .f_add(&self.wpe.f_index_select(0, &pos)?)
    }

    /// Final layer norm and lm_head on `h: [N, C]` → f32 `[N, vocab]`.
    /// With `addmm`, one row multiplies the contiguous `[C, vocab]` copy
    /// (MKL's gemv); several rows compute `(wte @ h^T)^T`, which MKL runs
    /// 1.5x faster than either `h @ wte^T` layout at N = 8 on this machine
    /// (15.1 vs 23.0 ms, `--example ops`).
    fn head(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.ln(h, &self.ln_f)?;
        let logits = match self.kernels.head {
            MatMul::OneDnn => h
                .f_contiguous()?
                .f_to_mkldnn(None)?
                .f_mkldnn_linear(&self.lm_head, None::<&Tensor>)?
                .f_to_dense(None, false)?,
            _ if h.size()[0] == 1 => h.f_matmul(&self.lm_head)?,
            _ => self.wte.f_matmul(&h.f_tr()?)?.f_tr()?,
        };
        logits.f_to_kind(Kind::Float)
    }

    fn new_cache(&self, len: i64) -> Result<KvCache> {
        let shape = (self.cfg.n_layer, self.cfg.n_head, self.cfg.head_dim());
        KvCache::new(shape, len, self.cfg.n_positions, self.kind, self.device)
    }

    /// Runs equal-length prompts `[B, S]` from an empty cache; returns the
    /// last position's logits `[B, vocab]` and the new caches.
    pub fn prefill(&self, prompts: &[&[u32]]) -> Result<(Tensor, Vec<KvCache>)> {
        let b = prompts.len() as i64;
        let s = prompts[0].len() as i64;
        let (c, h, d) = (
            self.cfg.n_embd as i64,
            self.cfg.n_head as i64,
            self.cfg.head_dim() as i64,
        );
        let tokens: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..s).collect();
        let mut x = self.embed(&tokens, &positions)?; // [B*S, C]
        let mut caches = (0..b)
            .map(|_| self.new_cache(s))
            .collect::<Result<Vec<_>>>()?;
        for (l, blk) in self.blocks.iter().enumerate() {
            let a = Self::linear(&self.ln(&x, &blk.ln1)?, &blk.attn)?; // [B*S, 3C]
            let qkv = a.f_view([b, s, 3, h, d])?.f_permute([2, 0, 3, 1, 4])?; // [3, B, H, S, D]
            let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
            for (i, cache) in caches.iter_mut().enumerate() {
                let i = i as i64;
                let (kc, vc) = cache.layer(l)?;
                kc.f_narrow(1, 0, s)?.f_copy_(&k.f_get(i)?)?;
                vc.f_narrow(1, 0, s)?.f_copy_(&v.f_get(i)?)?;
            }
            let y = Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<&Tensor>,
                0.0,
                true,
                Some(self.attn_scale(l)),
                false,
            )?; // [B, H, S, D]
            let y = y.f_permute([0, 2, 1, 3])?.f_reshape([b * s, c])?;
            x = x.f_add(&Self::linear(&y, &blk.proj)?)?;
            x = x.f_add(&self.mlp(&self.ln(&x, &blk.ln2)?, blk)?)?;
        }
        for cache in &mut caches {
            cache.len = s;
        }
        let last = x.f_view([b, s, c])?.f_select(1, s - 1)?; // [B, C]
        Ok((self.head(&last)?, caches))
    }

    /// One step: appends `tokens[i]` to `caches[i]`; returns the logits
    /// `[B, vocab]`.
    pub fn decode(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let b = tokens.len() as i64;
        let (c, h, d) = (
            self.cfg.n_embd as i64,
            self.cfg.n_head as i64,
            self.cfg.head_dim() as i64,
        );
        for cache in caches.iter_mut() {
            cache.reserve(1, self.cfg.n_positions)?;
        }
        let positions: Vec<i64> = caches.iter().map(|c| c.len).collect();
        let mut x = self.embed(tokens, &positions)?; // [B, C]
        for (l, blk) in self.blocks.iter().enumerate() {
            let a = Self::linear(&self.ln(&x, &blk.ln1)?, &blk.attn)?; // [B, 3C]
            let qkv = a.f_view([b, 3, h, 1, d])?;
            let mut ys = Vec::with_capacity(caches.len());
            for (i, cache) in caches.iter().enumerate() {
                let row = qkv.f_get(i as i64)?; // [3, H, 1, D]
                let (kc, vc) = cache.layer(l)?; // each [H, cap, D]
                kc.f_narrow(1, cache.len, 1)?.f_copy_(&row.f_get(1)?)?;
                vc.f_narrow(1, cache.len, 1)?.f_copy_(&row.f_get(2)?)?;
                let n = cache.len + 1;
                let y = Tensor::f_scaled_dot_product_attention(
                    &row.f_get(0)?.f_unsqueeze(0)?,
                    &kc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                    &vc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                    None::<&Tensor>,
                    0.0,
                    false,
                    Some(self.attn_scale(l)),
                    false,
                )?; // [1, H, 1, D]
                ys.push(y.f_reshape([1, c])?);
            }
            let y = Tensor::f_cat(&ys, 0)?; // [B, C]
            x = x.f_add(&Self::linear(&y, &blk.proj)?)?;
            x = x.f_add(&self.mlp(&self.ln(&x, &blk.ln2)?, blk)?)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        self.head(&x)
    }

    /// Runs `tokens` after the positions `cache` holds (the rest of a
    /// prompt whose start came from the prefix cache) as one forward with
    /// an explicit causal mask; returns the last one's logits `[1, vocab]`.
    pub fn extend(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let (start, s) = (cache.len, tokens.len() as i64);
        let (c, h, d) = (
            self.cfg.n_embd as i64,
            self.cfg.n_head as i64,
            self.cfg.head_dim() as i64,
        );
        cache.reserve(s, self.cfg.n_positions)?;
        let positions: Vec<i64> = (start..start + s).collect();
        let mask = crate::kv::causal_mask(start, s, self.device)?;
        let mut x = self.embed(tokens, &positions)?; // [S, C]
        for (l, blk) in self.blocks.iter().enumerate() {
            let a = Self::linear(&self.ln(&x, &blk.ln1)?, &blk.attn)?; // [S, 3C]
            let qkv = a.f_view([s, 3, h, d])?.f_permute([1, 2, 0, 3])?; // [3, H, S, D]
            let (kc, vc) = cache.layer(l)?; // each [H, cap, D]
            kc.f_narrow(1, start, s)?.f_copy_(&qkv.f_get(1)?)?;
            vc.f_narrow(1, start, s)?.f_copy_(&qkv.f_get(2)?)?;
            let n = start + s;
            let y = Tensor::f_scaled_dot_product_attention(
                &qkv.f_get(0)?.f_unsqueeze(0)?,
                &kc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                &vc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                Some(&mask),
                0.0,
                false,
                Some(self.attn_scale(l)),
                false,
            )?; // [1, H, S, D]
            let y = y.f_permute([0, 2, 1, 3])?.f_reshape([s, c])?;
            x = x.f_add(&Self::linear(&y, &blk.proj)?)?;
            x = x.f_add(&self.mlp(&self.ln(&x, &blk.ln2)?, blk)?)?;
        }
        cache.len = start + s;
        self.head(&x.f_narrow(0, s - 1, 1)?)
    }

    /// Logits `[n, vocab]` for every position, no cache.
    pub fn score(&self, tokens: &[u32]) -> Result<Tensor> {
        let s = tokens.len() as i64;
        let (c, h, d) = (
            self.cfg.n_embd as i64,
            self.cfg.n_head as i64,
            self.cfg.head_dim() as i64,
        );
        let positions: Vec<i64> = (0..s).collect();
        let mut x = self.embed(tokens, &positions)?;
        for (l, blk) in self.blocks.iter().enumerate() {
            let a = Self::linear(&self.ln(&x, &blk.ln1)?, &blk.attn)?;
            let qkv = a.f_view([1, s, 3, h, d])?.f_permute([2, 0, 3, 1, 4])?;
            let y = Tensor::f_scaled_dot_product_attention(
                &qkv.f_get(0)?,
                &qkv.f_get(1)?,
                &qkv.f_get(2)?,
                None::<&Tensor>,
                0.0,
                true,
                Some(self.attn_scale(l)),
                false,
            )?;
            let y = y.f_permute([0, 2, 1, 3])?.f_reshape([s, c])?;
            x = x.f_add(&Self::linear(&y, &blk.proj)?)?;
            x = x.f_add(&self.mlp(&self.ln(&x, &blk.ln2)?, blk)?)?;
        }
        self.head(&x)
    }

    /// Bytes a cache uses for its tokens / holds in total.
    pub fn cache_bytes(&self, c: &KvCache) -> (usize, usize) {
        (c.used_bytes(), c.reserved_bytes())
    }
}
