//! GPT-2, in the style of `candle-transformers`: a [`Config`] that parses
//! Hugging Face's `config.json`, a model built from a
//! [`candle_nn::VarBuilder`] over HF's `model.safetensors` (names and
//! layouts exactly as HF writes them, with or without the `transformer.`
//! prefix), and a per-sequence [`KvCache`].
//!
//! # Layout and kernel choices (measured on a 2-core AVX-512 VM, f32)
//!
//! Names and shapes on disk are HF's; in memory the model keeps what makes
//! its matmuls fast:
//!
//! * **Linear weights are re-laid panel-major** (`[out / 64, in, 64]`) and
//!   multiplied with gemm one panel at a time ([`crate::matmul`]): every
//!   weight byte is then read sequentially, which roughly doubles decode
//!   throughput and speeds prefill up by 11% over gemm on the `[in, out]`
//!   layout (and the `[out, in]` transpose the HF layout suggests is worse
//!   than either: gemm packs it for every call).
//! * **The tied lm_head is stored once**, as panels of `wte` transposed;
//!   token embeddings are gathered from its columns (a strided read of
//!   `n_embd` values per token, ~0.4 ms for a 128-token prompt) rather than
//!   keeping a second 154 MB copy of `wte`.
//! * **The attention scale `1/sqrt(head_dim)` is folded into the query
//!   columns of `c_attn`** at load (exact for head_dim 64), which saves one
//!   op per layer and step.
//! * **Bias adds, `gelu_new`, residual adds and attention are fused CPU
//!   ops** ([`crate::ops`]): candle's generic `gelu` calls scalar `tanhf`,
//!   which alone cost more than a 128-token prefill's attention; attention
//!   reads q, k and v as strided views of the qkv projection or the cache,
//!   with no score tensor and no masked half.
//! * **Prefill computes the lm_head for the last position only**; `score`
//!   computes it for every position.
//! * **KV cache**: one tensor per sequence, written in place, grown by
//!   doubling, recycled through a [`KvPool`] (see [`crate::kv`]).
//! * **Batched decode**: linear layers run over all sequences at once
//!   (`[B, C]`); attention runs per sequence against its own cache (the
//!   sequences have different lengths), in parallel over sequences.
//! * **Quantized** (`q8_0`, `q4_0`, `q4_1`, `q4_k`): the four linear
//!   layers of each block and the tied lm_head are quantized at load
//!   ([`crate::quant`]; the attention scale is folded in first); `wte` is
//!   then kept as a separate f32 table, so the embedding lookup stays exact.

use crate::kv::{tensor_bytes, KvShape, KV_CHUNK};
pub use crate::kv::{KvCache, KvPool};
use crate::ops::{self, Act};
use crate::quant::LinearWeight;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

pub use engine_kit::gpt2::{detect_prefix, Activation, Config};

#[derive(Debug, Clone)]
struct Linear {
    /// HF's Conv1D `[in, out]`, re-laid for the device (see
    /// [`crate::matmul`]) or quantized ([`crate::quant`]).
    w: LinearWeight,
    b: Tensor,
}

impl Linear {
    /// Loads `weight: [d_in, d_out]` and `bias`; `col_scale` multiplies
    /// output columns (weight and bias) before re-layout or quantization
    /// to `q`.
    fn load(
        vb: &VarBuilder,
        (d_in, d_out): (usize, usize),
        col_scale: Option<&Tensor>,
        q: Option<GgmlDType>,
    ) -> Result<Self> {
        let mut w = vb.get((d_in, d_out), "weight")?;
        let mut b = vb.get(d_out, "bias")?;
        if let Some(s) = col_scale {
            w = w.broadcast_mul(s)?;
            b = b.mul(s)?;
        }
        Ok(Linear {
            w: LinearWeight::from_in_out(&w, q)?,
            b: b.contiguous()?,
        })
    }

    /// `act(x @ w + b)`.
    fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        ops::bias_act(self.w.matmul(x)?, &self.b, act)
    }

    /// `x @ w + b + residual`.
    fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        ops::bias_residual(self.w.matmul(x)?, &self.b, residual)
    }

    fn bytes(&self) -> usize {
        self.w.bytes() + tensor_bytes(&self.b)
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            w: vb.get(dim, "weight")?.contiguous()?,
            b: vb.get(dim, "bias")?.contiguous()?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, &self.b, self.eps)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    n_head: usize,
    head_dim: usize,
    act: Activation,
}

impl Block {
    fn load(vb: &VarBuilder, cfg: &Config, layer: usize, q: Option<GgmlDType>) -> Result<Self> {
        let (c, i) = (cfg.n_embd, cfg.inner_dim());
        let act = cfg.activation().map_err(candle_core::Error::msg)?;
        // Fold the attention scale into the query columns.
        let mut scale = 1.0;
        if cfg.scale_attn_weights {
            scale /= (cfg.head_dim() as f64).sqrt();
        }
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        let col: Vec<f32> = (0..3 * c)
            .map(|j| if j < c { scale as f32 } else { 1.0 })
            .collect();
        let col = Tensor::from_vec(col, 3 * c, vb.device())?.to_dtype(vb.dtype())?;
        let c_attn = Linear::load(
            &vb.pp("attn.c_attn"),
            (c, 3 * c),
            (scale != 1.0).then_some(&col),
            q,
        )?;
        Ok(Block {
            ln_1: LayerNorm::load(&vb.pp("ln_1"), c, cfg.layer_norm_epsilon)?,
            c_attn,
            attn_proj: Linear::load(&vb.pp("attn.c_proj"), (c, c), None, q)?,
            ln_2: LayerNorm::load(&vb.pp("ln_2"), c, cfg.layer_norm_epsilon)?,
            c_fc: Linear::load(&vb.pp("mlp.c_fc"), (c, i), None, q)?,
            mlp_proj: Linear::load(&vb.pp("mlp.c_proj"), (i, c), None, q)?,
            n_head: cfg.n_head,
            head_dim: cfg.head_dim(),
            act,
        })
    }

    fn bytes(&self) -> usize {
        [&self.ln_1, &self.ln_2]
            .iter()
            .map(|l| tensor_bytes(&l.w) + tensor_bytes(&l.b))
            .sum::<usize>()
            + [&self.c_attn, &self.attn_proj, &self.c_fc, &self.mlp_proj]
                .iter()
                .map(|l| l.bytes())
                .sum::<usize>()
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.ln_2.forward(x)?;
        let h = match self.act {
            Activation::GeluTanh => self.c_fc.forward(&h, Act::GeluTanh)?,
            Activation::GeluErf => self.c_fc.forward(&h, Act::None)?.gelu_erf()?,
            Activation::Relu => self.c_fc.forward(&h, Act::None)?.relu()?,
        };
        self.mlp_proj.forward_residual(&h, x)
    }

    /// `x: [b * t, C]`, `b` sequences of `t` tokens starting at position
    /// `start`. Writes each sequence's keys/values into `caches[i]` when
    /// given; from a `start` above 0 (one sequence continuing its cache,
    /// a prefix-cache hit) the queries attend to the cache's first
    /// `start` positions too.
    fn forward_full(
        &self,
        x: &Tensor,
        (b, t, start): (usize, usize, usize),
        layer: usize,
        caches: Option<&mut [&mut KvCache]>,
    ) -> Result<Tensor> {
        let (h, d) = (self.n_head, self.head_dim);
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?, Act::None)?;
        // q, k, v as [b, h, t, d] strided views of the [b * t, 3C] projection
        let qkv = qkv.reshape((b, t, 3, h, d))?;
        let part = |i: usize| qkv.i((.., .., i))?.transpose(1, 2);
        let (q, v) = (part(0)?, part(2)?);
        // keys transposed, [b, h, d, t], for the attention kernel
        let kt = part(1)?.transpose(2, 3)?.contiguous()?;
        let y = match caches {
            Some([cache]) if start > 0 => {
                cache.write(layer, start, &kt.get(0)?, &v.get(0)?)?;
                let (kc, vc) = cache.view(layer, start + t)?;
                ops::attention(&q, &kc.unsqueeze(0)?, &vc.unsqueeze(0)?)?
            }
            Some(_) if start > 0 => {
                candle_core::bail!("a cache continued from position {start} runs alone")
            }
            Some(caches) => {
                for (i, cache) in caches.iter_mut().enumerate() {
                    cache.write(layer, 0, &kt.get(i)?, &v.get(i)?)?;
                }
                ops::attention(&q, &kt, &v)?
            }
            None => ops::attention(&q, &kt, &v)?,
        };
        let y = y.reshape((b * t, h * d))?;
        let x = self.attn_proj.forward_residual(&y, x)?;
        self.mlp(&x)
    }

    /// One new token per sequence: `x: [B, C]`; sequence `i`'s token goes
    /// to position `caches[i].len()`.
    fn forward_step(
        &self,
        x: &Tensor,
        layer: usize,
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let (h, d) = (self.n_head, self.head_dim);
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?, Act::None)?; // [B, 3C]
        let attend = |i: usize, cache: &mut KvCache| -> Result<Tensor> {
            let row = qkv.get(i)?.reshape((3, h, 1, d))?;
            let pos = cache.len;
            cache.write(layer, pos, &row.get(1)?.transpose(1, 2)?, &row.get(2)?)?;
            let (kt, v) = cache.view(layer, pos + 1)?;
            let q = row.get(0)?.unsqueeze(0)?;
            ops::attention(&q, &kt.unsqueeze(0)?, &v.unsqueeze(0)?)?.reshape((1, h * d))
        };
        let ys = if caches.len() == 1 {
            vec![attend(0, caches[0])?]
        } else {
            caches
                .par_iter_mut()
                .enumerate()
                .map(|(i, c)| attend(i, c))
                .collect::<Result<Vec<_>>>()?
        };
        let y = Tensor::cat(&ys, 0)?;
        let x = self.attn_proj.forward_residual(&y, x)?;
        self.mlp(&x)
    }
}

/// GPT-2 with a tied lm_head.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    cfg: Config,
    /// The tied lm_head: `wte` transposed, `[n_embd, vocab]` as `[in,
    /// out]`, re-laid for the device; token embeddings are its columns
    /// when it is dense.
    lm_head: LinearWeight,
    /// `wte` itself, `[vocab, n_embd]` f32, when the lm_head is quantized
    /// (the token embeddings stay exact).
    wte: Option<Tensor>,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    dtype: DType,
    device: Device,
}

impl Gpt2 {
    /// Builds the model from `vb` (HF names, with or without the
    /// `transformer.` prefix, which is detected). Weights are converted to
    /// `vb`'s dtype.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Self::new_quantized(cfg, vb, None)
    }

    /// [`Gpt2::new`] with the linear layers and the lm_head quantized to
    /// `q` (see [`crate::quant`]); `vb` must be f32 then.
    pub fn new_quantized(cfg: &Config, vb: VarBuilder, q: Option<GgmlDType>) -> Result<Self> {
        if q.is_some() && vb.dtype() != DType::F32 {
            candle_core::bail!(
                "quantized weights need f32 activations, not {:?}",
                vb.dtype()
            )
        }
        cfg.validate().map_err(candle_core::Error::msg)?;
        let prefix = detect_prefix(|n| vb.contains_tensor(n)).ok_or_else(|| {
            candle_core::Error::Msg("neither wte.weight nor transformer.wte.weight found".into())
        })?;
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        let c = cfg.n_embd;
        let wte = vb.get((cfg.vocab_size, c), "wte.weight")?;
        let lm_head = LinearWeight::from_in_out(&wte.t()?, q)?;
        let wte = match lm_head.dense() {
            Some(_) => None,
            None => Some(wte.contiguous()?),
        };
        let wpe = vb.get((cfg.n_positions, c), "wpe.weight")?.contiguous()?;
        let blocks = (0..cfg.n_layer)
            .map(|l| Block::load(&vb.pp(format!("h.{l}")), cfg, l, q))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(&vb.pp("ln_f"), c, cfg.layer_norm_epsilon)?;
        Ok(Gpt2 {
            cfg: cfg.clone(),
            lm_head,
            wte,
            wpe,
            blocks,
            ln_f,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes a decode step streams: every weight except the f32 embedding
    /// table kept for lookups when the head is quantized.
    pub fn streamed_weight_bytes(&self) -> usize {
        self.weight_bytes() - self.wte.as_ref().map_or(0, tensor_bytes)
    }

    /// Bytes of all weights as held in memory (the tied lm_head once,
    /// plus the f32 embedding table when the head is quantized).
    pub fn weight_bytes(&self) -> usize {
        self.lm_head.bytes()
            + self.wte.as_ref().map_or(0, tensor_bytes)
            + tensor_bytes(&self.wpe)
            + tensor_bytes(&self.ln_f.w)
            + tensor_bytes(&self.ln_f.b)
            + self.blocks.iter().map(Block::bytes).sum::<usize>()
    }

    /// KV cache bytes per token of one sequence.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.cfg.n_layer * 2 * self.cfg.n_embd * self.dtype.size_in_bytes()
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            candle_core::bail!(
                "token {t} is outside the vocabulary of {}",
                self.cfg.vocab_size
            )
        }
        Ok(())
    }

    /// `[n, C]` token embeddings plus position embeddings `positions`.
    fn embed(&self, tokens: &[u32], positions: &Tensor) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        let tok = match (&self.wte, self.lm_head.dense()) {
            (Some(wte), _) => wte.index_select(&Tensor::new(tokens, &self.device)?, 0)?,
            (None, Some(head)) => head.columns(tokens, &self.device)?,
            (None, None) => candle_core::bail!("a quantized lm_head needs its embedding table"),
        };
        tok.add(&self.wpe.index_select(positions, 0)?)
    }

    /// `x: [m, C]` final hidden states -> f32 logits `[m, vocab]`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.ln_f.forward(x)?;
        self.lm_head.matmul(&h)?.to_dtype(DType::F32)
    }

    /// Logits `[t, vocab]` (f32) for every position of `tokens`, without
    /// any cache.
    pub fn score(&self, tokens: &[u32]) -> Result<Tensor> {
        let t = tokens.len();
        if t == 0 || t > self.cfg.n_positions {
            candle_core::bail!("score needs 1..={} tokens, got {t}", self.cfg.n_positions)
        }
        let pos = Tensor::arange(0u32, t as u32, &self.device)?;
        let mut x = self.embed(tokens, &pos)?;
        for (l, block) in self.blocks.iter().enumerate() {
            x = block.forward_full(&x, (1, t, 0), l, None)?;
        }
        self.logits(&x)
    }

    /// Runs equal-length prompts as one batch; returns the f32 logits of
    /// each prompt's last position `[b, vocab]` and the prompts' caches.
    pub fn prefill(&self, prompts: &[&[u32]], pool: &mut KvPool) -> Result<(Tensor, Vec<KvCache>)> {
        let b = prompts.len();
        let t = prompts.first().map_or(0, |p| p.len());
        if b == 0 || t == 0 || prompts.iter().any(|p| p.len() != t) {
            candle_core::bail!("prefill needs a non-empty batch of equal-length, non-empty prompts")
        }
        if t > self.cfg.n_positions {
            candle_core::bail!(
                "prompt of {t} tokens exceeds the context of {}",
                self.cfg.n_positions
            )
        }
        let flat: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let pos = Tensor::arange(0u32, t as u32, &self.device)?.repeat(b)?;
        let mut x = self.embed(&flat, &pos)?;
        let cap = t.next_multiple_of(KV_CHUNK).min(self.cfg.n_positions);
        let mut caches = (0..b)
            .map(|_| pool.cache(self.kv_shape(), cap, self.dtype, &self.device))
            .collect::<Result<Vec<_>>>()?;
        {
            let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
            for (l, block) in self.blocks.iter().enumerate() {
                x = block.forward_full(&x, (b, t, 0), l, Some(&mut refs))?;
            }
        }
        for c in &mut caches {
            c.len = t;
        }
        let last = x.reshape((b, t, self.cfg.n_embd))?.i((.., t - 1))?;
        Ok((self.logits(&last)?, caches))
    }

    /// Runs `tokens` after the positions `cache` holds (the rest of a
    /// prompt whose start came from the prefix cache) as one forward:
    /// appends their keys and values and returns the f32 logits of the
    /// last one, `[1, vocab]`.
    pub fn extend(&self, tokens: &[u32], cache: &mut KvCache, pool: &mut KvPool) -> Result<Tensor> {
        let (start, t) = (cache.len, tokens.len());
        let max = self.cfg.n_positions;
        if t == 0 || start + t > max {
            candle_core::bail!("extend of {t} tokens after {start}: the context is {max}")
        }
        cache.reserve(start + t, max, pool)?;
        let pos = Tensor::arange(start as u32, (start + t) as u32, &self.device)?;
        let mut x = self.embed(tokens, &pos)?;
        let mut one = [cache];
        for (l, block) in self.blocks.iter().enumerate() {
            x = block.forward_full(&x, (1, t, start), l, Some(&mut one))?;
        }
        one[0].len = start + t;
        self.logits(&x.i(t - 1..t)?)
    }

    /// One decode step: appends `tokens[i]` to `caches[i]` and returns the
    /// f32 next-token logits `[b, vocab]`. Sequences may have different
    /// lengths.
    pub fn decode(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        pool: &mut KvPool,
    ) -> Result<Tensor> {
        if tokens.len() != caches.len() || tokens.is_empty() {
            candle_core::bail!(
                "decode: {} tokens for {} caches",
                tokens.len(),
                caches.len()
            )
        }
        let max = self.cfg.n_positions;
        for c in caches.iter_mut() {
            c.reserve(c.len + 1, max, pool)?;
        }
        let pos: Vec<u32> = caches.iter().map(|c| c.len as u32).collect();
        let pos = Tensor::new(pos.as_slice(), &self.device)?;
        let mut x = self.embed(tokens, &pos)?;
        for (l, block) in self.blocks.iter().enumerate() {
            x = block.forward_step(&x, l, caches)?;
        }
        for c in caches.iter_mut() {
            c.len += 1;
        }
        self.logits(&x)
    }

    /// An empty cache (for tests and tools that drive [`Gpt2::decode`]
    /// from scratch).
    pub fn empty_cache(&self, pool: &mut KvPool) -> Result<KvCache> {
        let cap = KV_CHUNK.min(self.cfg.n_positions);
        pool.cache(self.kv_shape(), cap, self.dtype, &self.device)
    }

    fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.cfg.n_layer,
            heads: self.cfg.n_head,
            head_dim: self.cfg.head_dim(),
        }
    }
}

/// Copies a (CPU or not) f32 tensor's values into `out`, replacing them.
pub fn copy_f32(t: &Tensor, out: &mut Vec<f32>) -> Result<()> {
    out.clear();
    let t = t.to_dtype(DType::F32)?;
    if t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            out.extend_from_slice(&cpu.as_slice::<f32>()?[a..b]);
            return Ok(());
        }
    }
    out.extend(t.flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}
