//! The Hugging Face Llama family (`LlamaForCausalLM`, `Qwen2ForCausalLM`,
//! `MistralForCausalLM`) written with tch (libtorch) ops, loading HF's
//! safetensors by name (`model.embed_tokens.weight`, `model.layers.N.…`,
//! `model.norm.weight`, `lm_head.weight` unless tied; `nn.Linear` weights
//! `[out, in]`). The [`Config`] is [`engine_kit::llama`]'s, shared with
//! the other engines, and so are RoPE's angles
//! ([`Config::rope_cos_sin`]), so engines differ in kernels only.
//!
//! # Layout and kernel choices
//!
//! The same as GPT-2's where they carry over (see [`crate::gpt2`]):
//!
//! * **Linear layers** run on the `matmul` option's kernel
//!   ([`crate::linear`]): `onednn` takes HF's `[out, in]` as it is,
//!   `addmm` transposes it once at load into `[in, out]` (MKL runs the
//!   transposed view `F.linear` uses at half the bandwidth here).
//! * **q, k and v are one linear** (weights concatenated along the output
//!   dim, Qwen2's biases too), and so are **gate and up**: two calls of
//!   the kernel per layer instead of five, each call having a fixed cost
//!   (oneDNN's reorder of the input, MKL's packing) that is a large part
//!   of a decode step's small-M products (the split itself was not timed
//!   separately). Eager PyTorch runs them separately; the arithmetic is
//!   the same.
//! * **RMSNorm** is HF's `LlamaRMSNorm` op for op: in f32,
//!   `x * rsqrt(mean(x²) + eps)`, cast back to the model's dtype, times
//!   the weight (libtorch's `rms_norm` multiplies by the weight before
//!   the cast, so half precision would round differently from HF).
//! * **RoPE** is HF's `apply_rotary_pos_emb` (`x * cos + rotate_half(x) *
//!   sin`, the two halves of each head), applied to q and k in one pass,
//!   with cos/sin computed in f32 for exactly the positions of the call
//!   by [`Config::rope_cos_sin`] and cast to the model's dtype as HF does;
//!   no table of the whole context is kept (Llama 3.2's would be 67 MB).
//! * **Attention** is `scaled_dot_product_attention` with the scale
//!   `1/sqrt(head_dim)` passed explicitly. **Grouped-query attention never
//!   copies the cache**: the cache holds `num_key_value_heads` heads; in
//!   prefill and `score` libtorch reads the shared heads itself
//!   (`enable_gqa`); in decode, where the one new query attends to every
//!   cached position (no mask), the `group` query heads that share a
//!   key/value head are passed as `group` query *rows* of that head
//!   (`[1, kv_heads, group, head_dim]`), an exact rewrite that lets the
//!   fused kernel run plain multi-head attention.
//! * **KV cache**: [`KvCache`], per sequence, growing by doubling.
//! * **The tied lm_head** is a copy of `embed_tokens` in its kernel's
//!   layout, as for GPT-2 (with `addmm`, several rows compute
//!   `(embed_tokens @ h^T)^T` on the embedding table itself, which MKL
//!   ran 1.5x faster than either `h @ W` layout on GPT-2's lm_head at
//!   N = 8); an untied one is a plain linear, stored once. **Prefill computes the lm_head for the last position only**;
//!   `score` for every position.
//! * **Batched decode**: the linear layers run over all sequences at
//!   once; attention per sequence against its own cache.

use crate::gpt2::{Result, Weights};
use crate::kv::KvCache;
use crate::linear::{Kernels, Linear, MatMul};
use tch::{Device, Kind, Tensor};

pub use engine_kit::llama::Config;

struct Layer {
    input_norm: Tensor,
    /// q | k | v: `hidden -> (heads + 2 kv_heads) * head_dim`.
    qkv: Linear,
    o: Linear,
    post_norm: Tensor,
    /// gate | up: `hidden -> 2 intermediate`.
    gate_up: Linear,
    down: Linear,
}

/// RoPE's cos and sin for the rows of one call, each `[N, 1, head_dim]`
/// (HF's full-width `cat(freqs, freqs)`) in the model's dtype.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// A Llama-family causal LM.
pub struct Llama {
    cfg: Config,
    kind: Kind,
    device: Device,
    kernels: Kernels,
    /// `[vocab, hidden]`, the token lookup table (and, tied with `addmm`,
    /// the lm_head for several rows).
    embed: Tensor,
    /// The lm_head in its kernel's layout: a copy of `embed` when tied.
    lm_head: Linear,
    tied: bool,
    layers: Vec<Layer>,
    norm: Tensor,
}

impl Llama {
    /// Builds the model from `w` (HF names, f32 CPU tensors of the
    /// expected shapes), converting every weight to `kind` on `device`.
    pub fn new(
        cfg: &Config,
        w: &dyn Weights,
        kind: Kind,
        device: Device,
        kernels: Kernels,
    ) -> std::result::Result<Self, String> {
        cfg.validate()?;
        if let Some(why) = cfg.unsupported() {
            return Err(why);
        }
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
        // Several linears of the same input as one (outputs concatenated).
        let fused = |p: &str,
                     names: &[&str],
                     bias: bool,
                     matmul: MatMul|
         -> std::result::Result<Linear, String> {
            let cat = |suffix: &str| -> std::result::Result<Tensor, String> {
                let parts = names
                    .iter()
                    .map(|n| load(&format!("{p}.{n}.{suffix}")))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Tensor::f_cat(&parts, 0).map_err(|e| format!("{p}.{}: {e}", names.join("|")))
            };
            let b = if bias { Some(cat("bias")?) } else { None };
            Linear::from_out_in(cat("weight")?, b, matmul)
                .map_err(|e| format!("{p}.{}: {e}", names.join("|")))
        };
        let linear = |p: &str, bias: bool, matmul: MatMul| -> std::result::Result<Linear, String> {
            let b = if bias {
                Some(load(&format!("{p}.bias"))?)
            } else {
                None
            };
            Linear::from_out_in(load(&format!("{p}.weight"))?, b, matmul)
                .map_err(|e| format!("{p}.weight: {e}"))
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_norm: load(&format!("{p}.input_layernorm.weight"))?,
                qkv: fused(
                    &format!("{p}.self_attn"),
                    &["q_proj", "k_proj", "v_proj"],
                    cfg.qkv_bias(),
                    kernels.attn_in,
                )?,
                o: linear(
                    &format!("{p}.self_attn.o_proj"),
                    cfg.o_bias(),
                    kernels.attn_out,
                )?,
                post_norm: load(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up: fused(
                    &format!("{p}.mlp"),
                    &["gate_proj", "up_proj"],
                    cfg.mlp_bias,
                    kernels.mlp_in,
                )?,
                down: linear(&format!("{p}.mlp.down_proj"), cfg.mlp_bias, kernels.mlp_out)?,
            });
        }
        let embed = load("model.embed_tokens.weight")?;
        let tied = cfg.tie_word_embeddings;
        let lm_head = if tied {
            Linear::from_out_in(embed.shallow_clone(), None, kernels.head)
                .map_err(|e| format!("lm_head (tied to model.embed_tokens.weight): {e}"))?
        } else {
            linear("lm_head", false, kernels.head)?
        };
        Ok(Llama {
            cfg: cfg.clone(),
            kind,
            device,
            kernels,
            embed,
            lm_head,
            tied,
            layers,
            norm: load("model.norm.weight")?,
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

    /// Bytes a decode step streams: all weights but the embedding table,
    /// which is only looked up (the lm_head is its own copy).
    pub fn streamed_weight_bytes(&self) -> usize {
        let elt = self.kind.elt_size_in_bytes();
        let table = self.embed.size().iter().product::<i64>() as usize * elt;
        self.weight_bytes().saturating_sub(table)
    }

    /// Bytes of all weights as held (the embedding table and the lm_head's
    /// copy of it both count when tied, as for GPT-2).
    pub fn weight_bytes(&self) -> usize {
        let elt = self.kind.elt_size_in_bytes();
        let n = |t: &Tensor| t.size().iter().product::<i64>() as usize * elt;
        let lin = |l: &Linear| l.bytes();
        n(&self.embed)
            + lin(&self.lm_head)
            + n(&self.norm)
            + self
                .layers
                .iter()
                .map(|l| {
                    n(&l.input_norm)
                        + n(&l.post_norm)
                        + lin(&l.qkv)
                        + lin(&l.o)
                        + lin(&l.gate_up)
                        + lin(&l.down)
                })
                .sum::<usize>()
    }

    /// HF's `LlamaRMSNorm`: in f32, `x * rsqrt(mean(x²) + eps)`, back to
    /// the model's dtype, times `w`.
    fn rms(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let x32 = x.f_to_kind(Kind::Float)?;
        let var = x32.f_square()?.f_mean_dim(-1, true, Kind::Float)?;
        let r = var.f_add_scalar(self.cfg.rms_norm_eps)?.f_rsqrt()?;
        x32.f_mul(&r)?.f_to_kind(self.kind)?.f_mul(w)
    }

    fn ids(&self, tokens: &[u32]) -> Result<Tensor> {
        let v: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        Tensor::f_from_slice(&v)?.f_to_device(self.device)
    }

    /// `[n, hidden]` embeddings of `tokens`.
    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        self.embed.f_index_select(0, &self.ids(tokens)?)
    }

    /// cos/sin for one row per position.
    fn rope(&self, positions: &[usize]) -> Result<Rope> {
        let (cos, sin) = self.cfg.rope_cos_sin(positions);
        let shape = [positions.len() as i64, 1, self.cfg.head_dim() as i64 / 2];
        let full = |v: Vec<f32>| -> Result<Tensor> {
            let half = Tensor::f_from_slice(&v)?.f_view(shape)?;
            Tensor::f_cat(&[&half, &half], -1)?
                .f_to_kind(self.kind)?
                .f_to_device(self.device)
        };
        Ok(Rope {
            cos: full(cos)?,
            sin: full(sin)?,
        })
    }

    /// HF's `apply_rotary_pos_emb` on `x: [N, heads, head_dim]`.
    fn rotate(x: &Tensor, rope: &Rope) -> Result<Tensor> {
        let half = x.size()[2] / 2;
        let (x1, x2) = (x.f_narrow(2, 0, half)?, x.f_narrow(2, half, half)?);
        let rotated = Tensor::f_cat(&[&x2.f_neg()?, &x1], 2)?;
        x.f_mul(&rope.cos)?.f_add(&rotated.f_mul(&rope.sin)?)
    }

    /// The attention input of `x: [N, hidden]`: RoPE'd queries
    /// `[N, heads, d]`, RoPE'd keys and values `[N, kv_heads, d]`.
    fn qkv(&self, layer: &Layer, x: &Tensor, rope: &Rope) -> Result<(Tensor, Tensor, Tensor)> {
        let (nh, nk, d) = self.heads();
        let h = self.rms(x, &layer.input_norm)?;
        let n = h.size()[0];
        let a = layer.qkv.forward(&h)?.f_view([n, nh + 2 * nk, d])?;
        let qk = Self::rotate(&a.f_narrow(1, 0, nh + nk)?, rope)?;
        Ok((
            qk.f_narrow(1, 0, nh)?,
            qk.f_narrow(1, nh, nk)?,
            a.f_narrow(1, nh + nk, nk)?,
        ))
    }

    /// `x + o(y)`, then `x + down(silu(gate) * up)` of its norm.
    fn finish(&self, layer: &Layer, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let x = x.f_add(&layer.o.forward(y)?)?;
        let h = self.rms(&x, &layer.post_norm)?;
        let gu = layer.gate_up.forward(&h)?;
        let i = self.cfg.intermediate_size as i64;
        let act = gu
            .f_narrow(1, 0, i)?
            .f_silu()?
            .f_mul(&gu.f_narrow(1, i, i)?)?;
        x.f_add(&layer.down.forward(&act)?)
    }

    /// `(heads, kv_heads, head_dim)`.
    fn heads(&self) -> (i64, i64, i64) {
        (
            self.cfg.num_attention_heads as i64,
            self.cfg.kv_heads() as i64,
            self.cfg.head_dim() as i64,
        )
    }

    fn scale(&self) -> f64 {
        1.0 / (self.cfg.head_dim() as f64).sqrt()
    }

    /// One layer over `b` sequences of `s` tokens from position 0, `x:
    /// [b * s, hidden]`; writes each sequence's keys and values into
    /// `caches[i]` when given.
    fn layer_full(
        &self,
        l: usize,
        x: &Tensor,
        (b, s): (i64, i64),
        rope: &Rope,
        caches: Option<&mut [KvCache]>,
    ) -> Result<Tensor> {
        let layer = &self.layers[l];
        let (nh, nk, d) = self.heads();
        let (q, k, v) = self.qkv(layer, x, rope)?;
        let heads_first =
            |t: Tensor, heads: i64| t.f_view([b, s, heads, d])?.f_permute([0, 2, 1, 3]);
        let (q, k, v) = (
            heads_first(q, nh)?,
            heads_first(k, nk)?,
            heads_first(v, nk)?,
        );
        if let Some(caches) = caches {
            for (i, cache) in caches.iter_mut().enumerate() {
                let (kc, vc) = cache.layer(l)?;
                kc.f_narrow(1, 0, s)?.f_copy_(&k.f_get(i as i64)?)?;
                vc.f_narrow(1, 0, s)?.f_copy_(&v.f_get(i as i64)?)?;
            }
        }
        let y = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            true,
            Some(self.scale()),
            nk != nh,
        )?; // [b, nh, s, d]
        let y = y.f_permute([0, 2, 1, 3])?.f_reshape([b * s, nh * d])?;
        self.finish(layer, x, &y)
    }

    /// Final norm and lm_head on `h: [M, hidden]` → f32 `[M, vocab]`.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.rms(x, &self.norm)?;
        let logits = match self.kernels.head {
            MatMul::Addmm if self.tied && h.size()[0] > 1 => {
                self.embed.f_matmul(&h.f_tr()?)?.f_tr()?
            }
            _ => self.lm_head.forward(&h)?,
        };
        logits.f_to_kind(Kind::Float)
    }

    fn new_cache(&self, len: i64) -> Result<KvCache> {
        let shape = (
            self.cfg.num_hidden_layers,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        KvCache::new(shape, len, self.cfg.context(), self.kind, self.device)
    }

    /// Runs equal-length prompts `[B, S]` from an empty cache; returns the
    /// last position's logits `[B, vocab]` (f32) and the new caches.
    pub fn prefill(&self, prompts: &[&[u32]]) -> Result<(Tensor, Vec<KvCache>)> {
        let b = prompts.len() as i64;
        let s = prompts.first().map_or(0, |p| p.len()) as i64;
        let tokens: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let positions: Vec<usize> = (0..b).flat_map(|_| 0..s as usize).collect();
        let rope = self.rope(&positions)?;
        let mut x = self.embed(&tokens)?; // [B*S, hidden]
        let mut caches = (0..b)
            .map(|_| self.new_cache(s))
            .collect::<Result<Vec<_>>>()?;
        for l in 0..self.layers.len() {
            x = self.layer_full(l, &x, (b, s), &rope, Some(caches.as_mut_slice()))?;
        }
        for cache in &mut caches {
            cache.len = s;
        }
        let h = self.cfg.hidden_size as i64;
        let last = x.f_view([b, s, h])?.f_select(1, s - 1)?; // [B, hidden]
        Ok((self.head(&last)?, caches))
    }

    /// One step: appends `tokens[i]` to `caches[i]` (sequences may have
    /// different lengths); returns the f32 logits `[B, vocab]`.
    pub fn decode(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let (nh, nk, d) = self.heads();
        let context = self.cfg.context();
        for cache in caches.iter_mut() {
            cache.reserve(1, context)?;
        }
        let positions: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let rope = self.rope(&positions)?;
        let mut x = self.embed(tokens)?; // [B, hidden]
        for (l, layer) in self.layers.iter().enumerate() {
            let (q, k, v) = self.qkv(layer, &x, &rope)?; // [B, heads, d]
            let mut ys = Vec::with_capacity(caches.len());
            for (i, cache) in caches.iter().enumerate() {
                let i = i as i64;
                let (kc, vc) = cache.layer(l)?; // each [kv_heads, cap, d]
                kc.f_narrow(1, cache.len, 1)?
                    .f_copy_(&k.f_get(i)?.f_unsqueeze(1)?)?;
                vc.f_narrow(1, cache.len, 1)?
                    .f_copy_(&v.f_get(i)?.f_unsqueeze(1)?)?;
                let n = cache.len + 1;
                // the group of query heads sharing kv head j as its rows
                let qi = q.f_get(i)?.f_reshape([1, nk, nh / nk, d])?;
                let y = Tensor::f_scaled_dot_product_attention(
                    &qi,
                    &kc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                    &vc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                    None::<&Tensor>,
                    0.0,
                    false,
                    Some(self.scale()),
                    false,
                )?; // [1, kv_heads, group, d]
                ys.push(y.f_reshape([1, nh * d])?);
            }
            let y = Tensor::f_cat(&ys, 0)?; // [B, heads * d]
            x = self.finish(layer, &x, &y)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        self.head(&x)
    }

    /// Runs `tokens` after the positions `cache` holds (the rest of a
    /// prompt whose start came from the prefix cache) as one forward with
    /// an explicit causal mask; returns the last one's f32 logits `[1,
    /// vocab]`.
    pub fn extend(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let (nh, nk, d) = self.heads();
        let (start, s) = (cache.len, tokens.len() as i64);
        cache.reserve(s, self.cfg.context())?;
        let positions: Vec<usize> = (start as usize..(start + s) as usize).collect();
        let rope = self.rope(&positions)?;
        let mask = crate::kv::causal_mask(start, s, self.device)?;
        let mut x = self.embed(tokens)?; // [S, hidden]
        for (l, layer) in self.layers.iter().enumerate() {
            let (q, k, v) = self.qkv(layer, &x, &rope)?; // [S, heads, d]
            let (kc, vc) = cache.layer(l)?; // each [kv_heads, cap, d]
            kc.f_narrow(1, start, s)?
                .f_copy_(&k.f_permute([1, 0, 2])?)?;
            vc.f_narrow(1, start, s)?
                .f_copy_(&v.f_permute([1, 0, 2])?)?;
            let n = start + s;
            let y = Tensor::f_scaled_dot_product_attention(
                &q.f_permute([1, 0, 2])?.f_unsqueeze(0)?,
                &kc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                &vc.f_narrow(1, 0, n)?.f_unsqueeze(0)?,
                Some(&mask),
                0.0,
                false,
                Some(self.scale()),
                nk != nh,
            )?; // [1, nh, S, d]
            let y = y.f_permute([0, 2, 1, 3])?.f_reshape([s, nh * d])?;
            x = self.finish(layer, &x, &y)?;
        }
        cache.len = start + s;
        self.head(&x.f_narrow(0, s - 1, 1)?)
    }

    /// Logits `[n, vocab]` (f32) for every position, no cache.
    pub fn score(&self, tokens: &[u32]) -> Result<Tensor> {
        let s = tokens.len() as i64;
        let positions: Vec<usize> = (0..tokens.len()).collect();
        let rope = self.rope(&positions)?;
        let mut x = self.embed(tokens)?;
        for l in 0..self.layers.len() {
            x = self.layer_full(l, &x, (1, s), &rope, None)?;
        }
        self.head(&x)
    }

    /// Bytes a cache uses for its tokens / holds in total.
    pub fn cache_bytes(&self, c: &KvCache) -> (usize, usize) {
        (c.used_bytes(), c.reserved_bytes())
    }
}
