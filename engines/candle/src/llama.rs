//! The Hugging Face Llama family (`LlamaForCausalLM`, `Qwen2ForCausalLM`,
//! `MistralForCausalLM`), in the style of `candle-transformers`: the
//! [`Config`] of `config.json` (shared with the other engines, from
//! [`engine_kit::llama`]), a model built from a [`VarBuilder`] over HF's
//! tensor names, and the per-sequence [`KvCache`] of [`crate::kv`].
//!
//! # Layout and kernel choices
//!
//! The same as GPT-2's where they carry over (see [`crate::gpt2`]):
//!
//! * **Linear weights are panel-major** ([`crate::matmul`]); HF stores
//!   `nn.Linear` as `[out, in]`, transposed once at load.
//! * **q, k and v are one matmul** (their weights concatenated along the
//!   output dim, biases too for Qwen2), and so are **gate and up**, whose
//!   `silu(gate) * up` is one fused pass ([`ops::swiglu`]).
//! * **The attention scale `1/sqrt(head_dim)` is folded into the q rows**
//!   at load (RoPE is a rotation, so scaling before or after it is the
//!   same).
//! * **RoPE** is candle-nn's `rope` kernel (HF's `rotate_half` layout),
//!   with cos/sin for the positions of the call computed by
//!   [`Config::rope_cos_sin`], so no table of the whole context (Llama
//!   3.2's would be 67 MB) is kept.
//! * **Grouped-query attention reads the shared key/value head in place**
//!   ([`ops::attention`]): the cache holds `num_key_value_heads` heads,
//!   never a repeated copy.
//! * **A tied lm_head is stored once**, as panels of `embed_tokens`
//!   transposed, and token embeddings are gathered from its columns; an
//!   untied one keeps `embed_tokens` as a plain table.
//! * **Prefill computes the lm_head for the last position only**; `score`
//!   for every position.
//! * **Batched decode**: linear layers over all sequences at once;
//!   attention per sequence against its own cache, in parallel.
//! * **Quantized**: from f32 weights quantized at load ([`Source::Hf`]
//!   with a block type) or from the GGUF file a folder was imported from
//!   ([`Source::Gguf`], [`crate::gguf`]), the linear layers and the
//!   lm_head run on ggml blocks ([`crate::quant`]). Embeddings stay exact:
//!   an f32 table beside a quantized head, or the GGUF's own rows
//!   dequantized as they are looked up. A GGUF's q rows cannot take the
//!   attention scale, so the queries are scaled after RoPE instead.

use crate::gguf::GgufWeights;
use crate::kv::{tensor_bytes, KvCache, KvPool, KvShape, KV_CHUNK};
use crate::ops::{self, Act};
use crate::quant::LinearWeight;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use std::sync::Arc;

pub use engine_kit::llama::Config;

/// Where a model's weights come from.
pub enum Source<'a> {
    /// Hugging Face names through a [`VarBuilder`]; linear weights
    /// quantized at load to the block type when one is given
    /// ([`crate::quant`]).
    Hf(VarBuilder<'a>, Option<GgmlDType>),
    /// The tensors of the GGUF file a folder was imported from, as shipped
    /// ([`crate::gguf`]).
    Gguf(&'a GgufWeights),
}

impl Source<'_> {
    /// A float tensor (norm, bias, embedding table).
    fn dense(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        match self {
            Source::Hf(vb, _) => vb.get(shape, name),
            Source::Gguf(g) => g.dense(name, shape),
        }
    }

    /// Whether a scale can be folded into weights as they load (a GGUF's
    /// blocks are used as shipped).
    fn folds_scales(&self) -> bool {
        matches!(self, Source::Hf(..))
    }

    /// The weight dtype of the model's activations.
    fn dtype(&self) -> DType {
        match self {
            Source::Hf(vb, _) => vb.dtype(),
            Source::Gguf(_) => DType::F32,
        }
    }

    fn device(&self) -> Device {
        match self {
            Source::Hf(vb, _) => vb.device().clone(),
            Source::Gguf(_) => Device::Cpu,
        }
    }
}

/// An `nn.Linear`, re-laid for the device or quantized, with an optional
/// bias.
#[derive(Debug, Clone)]
struct Linear {
    w: LinearWeight,
    b: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` (and `{prefix}.bias` when `bias`).
    fn load(src: &Source, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Self::fused(src, &[(prefix, d_out, 1.0)], d_in, bias)
    }

    /// Several linears of the same input as one, outputs concatenated
    /// (each part's weight and bias multiplied by its scale, which must
    /// be 1 for a source that does not fold scales).
    fn fused(src: &Source, parts: &[(&str, usize, f64)], d_in: usize, bias: bool) -> Result<Self> {
        let mut bs = Vec::new();
        if bias {
            for (prefix, d_out, scale) in parts {
                bs.push((src.dense(&[*d_out], &format!("{prefix}.bias"))? * *scale)?);
            }
        }
        let b = bias.then(|| Tensor::cat(&bs, 0)).transpose()?;
        let w = match src {
            Source::Hf(vb, q) => {
                let mut ws = Vec::new();
                for (prefix, d_out, scale) in parts {
                    ws.push((vb.get((*d_out, d_in), &format!("{prefix}.weight"))? * *scale)?);
                }
                LinearWeight::from_out_in(&Tensor::cat(&ws, 0)?, *q)?
            }
            Source::Gguf(g) => {
                if parts.iter().any(|p| p.2 != 1.0) {
                    candle_core::bail!("a GGUF's weights are used as shipped, unscaled")
                }
                let qs = parts
                    .iter()
                    .map(|(prefix, d_out, _)| {
                        g.tensor(&format!("{prefix}.weight"), &[*d_out, d_in])
                    })
                    .collect::<Result<Vec<QTensor>>>()?;
                LinearWeight::from_parts(qs)?
            }
        };
        Ok(Linear {
            w,
            b: b.map(|b| b.contiguous()).transpose()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.matmul(x)?;
        match &self.b {
            Some(b) => ops::bias_act(y, b, Act::None),
            None => Ok(y),
        }
    }

    fn bytes(&self) -> usize {
        self.w.bytes() + self.b.as_ref().map_or(0, tensor_bytes)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Tensor,
    qkv: Linear,
    o: Linear,
    post_norm: Tensor,
    gate_up: Linear,
    down: Linear,
}

/// RoPE's cos and sin for one call, in the model's dtype.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Layer {
    /// Layer `l`; `q_scale` multiplies the q rows (1 where the caller
    /// scales queries itself).
    fn load(src: &Source, cfg: &Config, l: usize, q_scale: f64) -> Result<Self> {
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (q, kv) = (cfg.num_attention_heads * d, cfg.kv_heads() * d);
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let qkv = Linear::fused(
            src,
            &[
                (&p("self_attn.q_proj"), q, q_scale),
                (&p("self_attn.k_proj"), kv, 1.0),
                (&p("self_attn.v_proj"), kv, 1.0),
            ],
            h,
            cfg.qkv_bias(),
        )?;
        let gate_up = Linear::fused(
            src,
            &[(&p("mlp.gate_proj"), i, 1.0), (&p("mlp.up_proj"), i, 1.0)],
            h,
            cfg.mlp_bias,
        )?;
        Ok(Layer {
            input_norm: src
                .dense(&[h], &p("input_layernorm.weight"))?
                .contiguous()?,
            qkv,
            o: Linear::load(src, &p("self_attn.o_proj"), q, h, cfg.o_bias())?,
            post_norm: src
                .dense(&[h], &p("post_attention_layernorm.weight"))?
                .contiguous()?,
            gate_up,
            down: Linear::load(src, &p("mlp.down_proj"), i, h, cfg.mlp_bias)?,
        })
    }

    fn bytes(&self) -> usize {
        tensor_bytes(&self.input_norm)
            + tensor_bytes(&self.post_norm)
            + [&self.qkv, &self.o, &self.gate_up, &self.down]
                .iter()
                .map(|l| l.bytes())
                .sum::<usize>()
    }

    /// `x + down(swiglu(gate_up(rms(x))))`.
    fn mlp(&self, x: &Tensor, eps: f32) -> Result<Tensor> {
        let h = candle_nn::ops::rms_norm(x, &self.post_norm, eps)?;
        let h = ops::swiglu(&self.gate_up.forward(&h)?)?;
        x.add(&self.down.forward(&h)?)
    }
}

/// Where token embeddings are looked up.
#[derive(Debug, Clone)]
enum Embed {
    /// Columns of the (tied, dense) lm_head.
    HeadColumns,
    /// Rows of the (tied, quantized) lm_head's blocks, dequantized as they
    /// are read (a GGUF's quantized embeddings, exact to the file).
    HeadRows,
    /// A `[vocab, hidden]` table.
    Table(Tensor),
    /// Rows of a quantized `[vocab, hidden]` table (an untied GGUF's).
    Rows(LinearWeight),
}

/// A Llama-family model.
#[derive(Debug, Clone)]
pub struct Llama {
    cfg: Config,
    embed: Embed,
    /// `[hidden, vocab]` as `[in, out]`, re-laid for the device or
    /// quantized.
    lm_head: LinearWeight,
    /// Multiplies the queries after RoPE when the scale could not be
    /// folded into the weights (a GGUF's blocks as shipped).
    q_scale: Option<f64>,
    layers: Vec<Layer>,
    norm: Tensor,
    eps: f32,
    dtype: DType,
    device: Device,
}

impl Llama {
    /// Builds the model from `vb` (HF names: `model.embed_tokens.weight`,
    /// `model.layers.N.…`, `model.norm.weight`, `lm_head.weight` unless
    /// tied). Weights are converted to `vb`'s dtype.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Self::load(cfg, Source::Hf(vb, None))
    }

    /// Builds the model from `src`: a [`VarBuilder`] (as [`Llama::new`],
    /// linear weights and the lm_head quantized when a block type is
    /// given; f32 only then) or a GGUF's tensors as shipped.
    pub fn load(cfg: &Config, src: Source) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        if let Some(why) = cfg.unsupported() {
            candle_core::bail!("{why}")
        }
        let quantized = matches!(&src, Source::Hf(_, Some(_)) | Source::Gguf(_));
        if quantized && src.dtype() != DType::F32 {
            candle_core::bail!(
                "quantized weights need f32 activations, not {:?}",
                src.dtype()
            )
        }
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let (embed, lm_head) = match &src {
            Source::Hf(vb, q) => {
                let embed = vb.get((v, h), "model.embed_tokens.weight")?;
                let head = if cfg.tie_word_embeddings {
                    LinearWeight::from_out_in(&embed, *q)?
                } else {
                    LinearWeight::from_out_in(&vb.get((v, h), "lm_head.weight")?, *q)?
                };
                let embed = match head.dense() {
                    Some(_) if cfg.tie_word_embeddings => Embed::HeadColumns,
                    _ => Embed::Table(embed.contiguous()?),
                };
                (embed, head)
            }
            Source::Gguf(g) => {
                let table = Arc::new(g.tensor("model.embed_tokens.weight", &[v, h])?);
                let head = if cfg.tie_word_embeddings {
                    LinearWeight::from_qtensor(table.clone())?
                } else {
                    LinearWeight::from_qtensor(Arc::new(g.tensor("lm_head.weight", &[v, h])?))?
                };
                let float = matches!(
                    table.dtype(),
                    GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
                );
                let embed = match (float, cfg.tie_word_embeddings) {
                    (true, true) => Embed::HeadColumns,
                    (false, true) => Embed::HeadRows,
                    (true, false) => Embed::Table(table.dequantize(&Device::Cpu)?),
                    (false, false) => Embed::Rows(LinearWeight::from_qtensor(table)?),
                };
                (embed, head)
            }
        };
        let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
        let (fold, q_scale) = if src.folds_scales() {
            (scale, None)
        } else {
            (1.0, Some(scale))
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| Layer::load(&src, cfg, l, fold))
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            cfg: cfg.clone(),
            embed,
            lm_head,
            q_scale,
            layers,
            norm: src.dense(&[h], "model.norm.weight")?.contiguous()?,
            eps: cfg.rms_norm_eps as f32,
            dtype: src.dtype(),
            device: src.device(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes a decode step streams: every weight except a token-embedding
    /// table that is only looked up (one row per token).
    pub fn streamed_weight_bytes(&self) -> usize {
        let lookup_only = match &self.embed {
            Embed::HeadColumns | Embed::HeadRows => 0,
            Embed::Table(t) => tensor_bytes(t),
            Embed::Rows(w) => w.bytes(),
        };
        self.weight_bytes() - lookup_only
    }

    /// Bytes of all weights as held in memory (a tied head once).
    pub fn weight_bytes(&self) -> usize {
        let embed = match &self.embed {
            Embed::HeadColumns | Embed::HeadRows => 0,
            Embed::Table(t) => tensor_bytes(t),
            Embed::Rows(w) => w.bytes(),
        };
        self.lm_head.bytes()
            + embed
            + tensor_bytes(&self.norm)
            + self.layers.iter().map(Layer::bytes).sum::<usize>()
    }

    pub fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.cfg.num_hidden_layers,
            heads: self.cfg.kv_heads(),
            head_dim: self.cfg.head_dim(),
        }
    }

    /// KV cache bytes per token of one sequence.
    pub fn kv_bytes_per_token(&self) -> usize {
        let s = self.kv_shape();
        s.layers * 2 * s.heads * s.head_dim * self.dtype.size_in_bytes()
    }

    /// `[n, hidden]` embeddings of `tokens`.
    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            candle_core::bail!("token {t} is outside the vocabulary")
        }
        let rows = |w: &LinearWeight| {
            w.quantized_rows(tokens, &self.device).unwrap_or_else(|| {
                candle_core::bail!("quantized embeddings need a quantized table")
            })
        };
        match (&self.embed, self.lm_head.dense()) {
            (Embed::HeadColumns, Some(head)) => head.columns(tokens, &self.device),
            (Embed::HeadColumns, None) => {
                candle_core::bail!("a quantized lm_head needs its embedding table")
            }
            (Embed::HeadRows, _) => rows(&self.lm_head),
            (Embed::Table(table), _) => table.index_select(&Tensor::new(tokens, &self.device)?, 0),
            (Embed::Rows(w), _) => rows(w),
        }
    }

    /// cos/sin for `positions` as `[positions.len(), d / 2]`.
    fn rope(&self, positions: &[usize]) -> Result<Rope> {
        let (cos, sin) = self.cfg.rope_cos_sin(positions);
        let shape = (positions.len(), self.cfg.head_dim() / 2);
        let t = |v: Vec<f32>| Tensor::from_vec(v, shape, &self.device)?.to_dtype(self.dtype);
        Ok(Rope {
            cos: t(cos)?,
            sin: t(sin)?,
        })
    }

    /// `x: [m, hidden]` final hidden states -> f32 logits `[m, vocab]`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let h = candle_nn::ops::rms_norm(&x.contiguous()?, &self.norm, self.eps)?;
        self.lm_head.matmul(&h)?.to_dtype(DType::F32)
    }

    /// Splits a `[b, t, heads, d]` qkv projection into RoPE'd queries
    /// `[b, h, t, d]`, RoPE'd keys transposed `[b, hk, d, t]` and values
    /// `[b, hk, t, d]` (a strided view). `rope` is `[t, d/2]` or, for
    /// decode, `[b, 1, d/2]`.
    fn split_qkv(&self, qkv: &Tensor, rope: &Rope) -> Result<(Tensor, Tensor, Tensor)> {
        let (nh, nk) = (self.cfg.num_attention_heads, self.cfg.kv_heads());
        let part = |from: usize, n: usize| qkv.narrow(2, from, n)?.transpose(1, 2);
        let rotate =
            |x: Tensor| candle_nn::rotary_emb::rope(&x.contiguous()?, &rope.cos, &rope.sin);
        let q = rotate(part(0, nh)?)?;
        let q = match self.q_scale {
            Some(s) => q.affine(s, 0.0)?,
            None => q,
        };
        let kt = rotate(part(nh, nk)?)?.transpose(2, 3)?.contiguous()?;
        Ok((q, kt, part(nh + nk, nk)?))
    }

    /// `x: [b * t, hidden]`, `b` sequences of `t` tokens from position
    /// `start`; writes each sequence's keys and values into `caches[i]`
    /// when given. From a `start` above 0 (one sequence continuing its
    /// cache, a prefix-cache hit) the queries attend to the cache's first
    /// `start` positions too.
    fn layer_full(
        &self,
        layer: &Layer,
        l: usize,
        x: &Tensor,
        (b, t, start): (usize, usize, usize),
        rope: &Rope,
        caches: Option<&mut [&mut KvCache]>,
    ) -> Result<Tensor> {
        let (heads, d) = (self.qkv_heads(), self.cfg.head_dim());
        let h = candle_nn::ops::rms_norm(x, &layer.input_norm, self.eps)?;
        let qkv = layer.qkv.forward(&h)?.reshape((b, t, heads, d))?;
        let (q, kt, v) = self.split_qkv(&qkv, rope)?;
        let y = match caches {
            Some([cache]) if start > 0 => {
                cache.write(l, start, &kt.get(0)?, &v.get(0)?)?;
                let (kc, vc) = cache.view(l, start + t)?;
                ops::attention(&q, &kc.unsqueeze(0)?, &vc.unsqueeze(0)?)?
            }
            Some(_) if start > 0 => {
                candle_core::bail!("a cache continued from position {start} runs alone")
            }
            Some(caches) => {
                for (i, cache) in caches.iter_mut().enumerate() {
                    cache.write(l, 0, &kt.get(i)?, &v.get(i)?)?;
                }
                ops::attention(&q, &kt, &v)?
            }
            None => ops::attention(&q, &kt, &v)?,
        };
        let nh = self.cfg.num_attention_heads;
        let y = y.reshape((b * t, nh * d))?;
        let x = x.add(&layer.o.forward(&y)?)?;
        layer.mlp(&x, self.eps)
    }

    /// One new token per sequence, `x: [B, hidden]`; sequence `i`'s token
    /// goes to position `caches[i].len`.
    fn layer_step(
        &self,
        layer: &Layer,
        l: usize,
        x: &Tensor,
        rope: &Rope,
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let (heads, d, nh) = (
            self.qkv_heads(),
            self.cfg.head_dim(),
            self.cfg.num_attention_heads,
        );
        let b = caches.len();
        let h = candle_nn::ops::rms_norm(x, &layer.input_norm, self.eps)?;
        let qkv = layer.qkv.forward(&h)?.reshape((b, 1, heads, d))?;
        let (q, kt, v) = self.split_qkv(&qkv, rope)?;
        let attend = |i: usize, cache: &mut KvCache| -> Result<Tensor> {
            let pos = cache.len;
            cache.write(l, pos, &kt.get(i)?, &v.get(i)?)?;
            let (kc, vc) = cache.view(l, pos + 1)?;
            ops::attention(&q.i(i..i + 1)?, &kc.unsqueeze(0)?, &vc.unsqueeze(0)?)?
                .reshape((1, nh * d))
        };
        let ys = if b == 1 {
            vec![attend(0, caches[0])?]
        } else {
            caches
                .par_iter_mut()
                .enumerate()
                .map(|(i, c)| attend(i, c))
                .collect::<Result<Vec<_>>>()?
        };
        let y = Tensor::cat(&ys, 0)?;
        let x = x.add(&layer.o.forward(&y)?)?;
        layer.mlp(&x, self.eps)
    }

    /// Heads in the fused qkv projection.
    fn qkv_heads(&self) -> usize {
        self.cfg.num_attention_heads + 2 * self.cfg.kv_heads()
    }

    /// Logits `[t, vocab]` (f32) for every position of `tokens`, without
    /// any cache.
    pub fn score(&self, tokens: &[u32]) -> Result<Tensor> {
        let t = tokens.len();
        if t == 0 || t > self.cfg.context() {
            candle_core::bail!("score needs 1..={} tokens, got {t}", self.cfg.context())
        }
        let positions: Vec<usize> = (0..t).collect();
        let rope = self.rope(&positions)?;
        let mut x = self.embed(tokens)?;
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_full(layer, l, &x, (1, t, 0), &rope, None)?;
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
        let context = self.cfg.context();
        if t > context {
            candle_core::bail!("prompt of {t} tokens exceeds the context of {context}")
        }
        let flat: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut x = self.embed(&flat)?;
        let positions: Vec<usize> = (0..t).collect();
        let rope = self.rope(&positions)?;
        let cap = t.next_multiple_of(KV_CHUNK).min(context);
        let mut caches = (0..b)
            .map(|_| pool.cache(self.kv_shape(), cap, self.dtype, &self.device))
            .collect::<Result<Vec<_>>>()?;
        {
            let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
            for (l, layer) in self.layers.iter().enumerate() {
                x = self.layer_full(layer, l, &x, (b, t, 0), &rope, Some(&mut refs))?;
            }
        }
        for c in &mut caches {
            c.len = t;
        }
        let last = x.reshape((b, t, self.cfg.hidden_size))?.i((.., t - 1))?;
        Ok((self.logits(&last)?, caches))
    }

    /// Runs `tokens` after the positions `cache` holds (the rest of a
    /// prompt whose start came from the prefix cache) as one forward:
    /// appends their keys and values and returns the f32 logits of the
    /// last one, `[1, vocab]`.
    pub fn extend(&self, tokens: &[u32], cache: &mut KvCache, pool: &mut KvPool) -> Result<Tensor> {
        let (start, t) = (cache.len, tokens.len());
        let context = self.cfg.context();
        if t == 0 || start + t > context {
            candle_core::bail!("extend of {t} tokens after {start}: the context is {context}")
        }
        cache.reserve(start + t, context, pool)?;
        let positions: Vec<usize> = (start..start + t).collect();
        let rope = self.rope(&positions)?;
        let mut x = self.embed(tokens)?;
        let mut one = [cache];
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_full(layer, l, &x, (1, t, start), &rope, Some(&mut one))?;
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
        let context = self.cfg.context();
        for c in caches.iter_mut() {
            c.reserve(c.len + 1, context, pool)?;
        }
        let positions: Vec<usize> = caches.iter().map(|c| c.len).collect();
        let rope = self.rope(&positions)?;
        let b = tokens.len();
        let rope = Rope {
            cos: rope.cos.unsqueeze(1)?,
            sin: rope.sin.unsqueeze(1)?,
        };
        let mut x = self.embed(tokens)?;
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_step(layer, l, &x, &rope, caches)?;
        }
        for c in caches.iter_mut() {
            c.len += 1;
        }
        debug_assert_eq!(x.dims()[0], b);
        self.logits(&x)
    }

    /// An empty cache (for tools that drive [`Llama::decode`] from
    /// scratch).
    pub fn empty_cache(&self, pool: &mut KvPool) -> Result<KvCache> {
        let cap = KV_CHUNK.min(self.cfg.context());
        pool.cache(self.kv_shape(), cap, self.dtype, &self.device)
    }
}
