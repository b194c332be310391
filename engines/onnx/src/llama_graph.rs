//! Builds the Hugging Face Llama family (`LlamaForCausalLM`,
//! `Qwen2ForCausalLM`, `MistralForCausalLM`) as an ONNX graph, in Rust,
//! from `config.json` ([`engine_kit::llama::Config`]) and the safetensors
//! checkpoint (one file or shards).
//!
//! # Interface
//!
//! GPT-2's ([`crate::graph`]: Hugging Face's export layout plus the
//! overridable `logits_from`), so the backend's cohorts, padding and
//! batching work unchanged, with two differences:
//!
//! | name | type | shape |
//! |---|---|---|
//! | `past_key_values.N.key` / `.value` | float | `[batch, num_key_value_heads, past, head_dim]` |
//! | `rope_cos` / `rope_sin` | float | `[batch, seq, head_dim / 2]` |
//!
//! The cache holds the key/value heads only (grouped-query attention never
//! stores a repeated copy). `rope_cos` and `rope_sin` are RoPE's `cos` and
//! `sin` of each token's angles, which the engine computes for the
//! positions of the call with [`engine_kit::llama::Config::rope_cos_sin`],
//! the function every engine takes its angles from. `position_ids` is
//! still declared (HF's interface) but the graph reads the positions
//! through these two inputs only.
//!
//! # Choices
//!
//! * **RoPE's cos/sin are inputs**, not computed in the graph: they are
//!   then exactly the other engines' (Rust's f32 `cos`/`sin` of f32
//!   angles, as HF computes them), not the result of ONNX Runtime's own
//!   `Sin`/`Cos` kernels on the large angles of long contexts, and no
//!   constant table of the whole context is stored (Llama 3.2: 131072
//!   positions × 64 × 2 × 4 bytes = 67 MB); the inputs cost `batch × seq ×
//!   head_dim` floats per call. The price: the graph alone does not know
//!   the model's RoPE (`rope_theta`, `rope_scaling`), its caller must
//!   supply the angles, so a saved graph is not a drop-in for HF's
//!   exports.
//! * **Standard ONNX ops only, opset 20** (as GPT-2's): RMSNorm is
//!   `Pow`, `ReduceMean`, `Add`, `Sqrt`, `Div`, `Mul` in f32 (HF's
//!   `x * rsqrt(mean(x²) + eps) * w`; opset 20 has no `RMSNormalization`),
//!   SiLU is `x * Sigmoid(x)`, RoPE is `Split`/`Concat`/`Mul`/`Add`.
//!   ONNX Runtime's own optimiser does the fusions it knows.
//! * **q, k and v are one `MatMul`** (weights transposed to `[in, out]`
//!   and concatenated at build time, with Qwen2's biases), and so are
//!   **gate and up**. The attention scale `1/sqrt(head_dim)` is folded
//!   into the q columns (RoPE is a rotation, so scaling before it is the
//!   same), and RoPE rotates q and k heads together in one pass.
//! * **Grouped-query attention without copying the cache**: the `group`
//!   query heads sharing a key/value head are `Reshape`d into `group ×
//!   seq` query rows of that head (`[batch, kv_heads, group · seq,
//!   head_dim]`, a free reshape), so every `MatMul` runs against the cache
//!   as stored; the causal/padding bias is tiled `group` times once per
//!   run.
//! * **The lm_head is `Gemm(h, W, transB = 1)`** on the checkpoint's
//!   `[vocab, hidden]` matrix, `embed_tokens` itself when the embeddings
//!   are tied (stored once), for positions `logits_from..` only.

use crate::graph::{
    attention_bias, attr_i, attr_ints, hf_interface, past_names, present_names, value_info,
    Builder, Built, DataPlacement, Dim, WeightSource, LOGITS_FROM,
};
use crate::proto::{tensor_proto::DataType, ValueInfoProto};
use crate::quant::transpose;
use engine_kit::llama::Config;

/// RoPE's cos input, `[batch, seq, head_dim / 2]`.
pub const ROPE_COS: &str = "rope_cos";
/// RoPE's sin input, `[batch, seq, head_dim / 2]`.
pub const ROPE_SIN: &str = "rope_sin";

/// What every layer's builders share: the graph so far, the checkpoint,
/// the model's dimensions and the per-run values made once.
struct LlamaGraph<'a> {
    b: Builder,
    cfg: &'a Config,
    weights: &'a dyn WeightSource,
    /// RMSNorm's constants: `ReduceMean` axes `[-1]`, the exponent 2 and
    /// `rms_norm_eps`.
    last_axis: String,
    two: String,
    eps: String,
    /// `[batch, 1, group * seq, past + seq]`: 0 where a query may attend a
    /// key, a large negative number elsewhere (rows `g * seq + t` are
    /// query `t`).
    bias: String,
    /// `[batch]`, for the logits' output shape.
    batch: String,
    /// `[cos, cos]` and `[-sin, sin]` as `[batch, seq, 1, head_dim]`.
    cos: String,
    sin: String,
    /// `Split` sizes: the fused projection's q+k heads and v heads; q and
    /// k heads; the two halves of a head (RoPE); gate and up.
    split_qk_v: String,
    split_q_k: String,
    split_half: String,
    split_gate_up: String,
    /// `[B, T, n * D]` -> `[B, T, n, D]`, query heads <-> key/value head
    /// rows, and `[B, T, H, D]` -> `[B, T, H * D]`.
    heads_shape: String,
    group_rows: String,
    group_heads: String,
    merge_shape: String,
}

/// Builds the graph of `cfg` with the weights of `weights`; `location` is
/// the external data file's name (used with [`DataPlacement::External`]).
pub fn build(
    cfg: &Config,
    weights: &dyn WeightSource,
    placement: DataPlacement,
    location: &str,
    quant: crate::quant::Quant,
) -> Result<Built, String> {
    if let Some(why) = cfg.unsupported() {
        return Err(why);
    }
    cfg.validate()?;
    let mut b = Builder::new(placement, location);
    b.quant = quant;
    let mut g = LlamaGraph::new(b, cfg, weights);
    let (mut x, embed) = g.embeddings()?;
    for l in 0..cfg.num_hidden_layers {
        x = g.block(l, &x)?;
    }
    g.lm_head(&x, &embed)?;
    let (inputs, outputs) = interface(cfg);
    Ok(g.b.finish(
        &cfg.model_type,
        "A Llama-family model with KV cache, Hugging Face export layout plus rope_cos/rope_sin \
         inputs, built by engine-matrix's em-onnx",
        inputs,
        outputs,
    ))
}

impl<'a> LlamaGraph<'a> {
    /// Starts the graph with the shapes, the attention bias and RoPE's
    /// cos/sin that every layer uses.
    fn new(mut b: Builder, cfg: &'a Config, weights: &'a dyn WeightSource) -> Self {
        let (h, kv, d) = (
            cfg.num_attention_heads as i64,
            cfg.kv_heads() as i64,
            cfg.head_dim() as i64,
        );
        let group = cfg.group() as i64;
        let axes1 = b.const_i64s(&[1]);
        let (mut bias, batch) = attention_bias(&mut b, &axes1);
        if group > 1 {
            let reps = b.const_i64s(&[1, 1, group, 1]);
            bias = b.op("Tile", &[&bias, &reps], vec![]);
        }
        let axes2 = b.const_i64s(&[2]);
        let cos2 = b.op("Concat", &[ROPE_COS, ROPE_COS], vec![attr_i("axis", -1)]);
        let cos = b.op("Unsqueeze", &[&cos2, &axes2], vec![]);
        let neg = b.op("Neg", &[ROPE_SIN], vec![]);
        let sin2 = b.op("Concat", &[&neg, ROPE_SIN], vec![attr_i("axis", -1)]);
        let sin = b.op("Unsqueeze", &[&sin2, &axes2], vec![]);
        let i = cfg.intermediate_size as i64;
        LlamaGraph {
            last_axis: b.const_i64s(&[-1]),
            two: b.scalar_f32(2.0),
            eps: b.scalar_f32(cfg.rms_norm_eps as f32),
            split_qk_v: b.const_i64s(&[h + kv, kv]),
            split_q_k: b.const_i64s(&[h, kv]),
            split_half: b.const_i64s(&[d / 2, d / 2]),
            split_gate_up: b.const_i64s(&[i, i]),
            heads_shape: b.const_i64s(&[0, 0, h + 2 * kv, d]),
            group_rows: b.const_i64s(&[0, kv, -1, d]),
            group_heads: b.const_i64s(&[0, h, -1, d]),
            merge_shape: b.const_i64s(&[0, 0, h * d]),
            b,
            cfg,
            weights,
            bias,
            batch,
            cos,
            sin,
        }
    }

    fn get(&self, name: &str) -> Result<Vec<f32>, String> {
        self.weights.get(name)
    }

    /// A weight initializer from the checkpoint tensor `name`, as stored.
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<String, String> {
        let data = self.get(name)?;
        Ok(self.b.weight(name, shape, &data))
    }

    /// Token embeddings; returns them and the `embed_tokens` initializer
    /// (the tied lm_head).
    fn embeddings(&mut self) -> Result<(String, String), String> {
        let c = self.cfg.hidden_size;
        let embed = self.weight("model.embed_tokens.weight", &[self.cfg.vocab_size, c])?;
        let x = self.b.op("Gather", &[&embed, "input_ids"], vec![]);
        Ok((x, embed))
    }

    /// HF's `LlamaRMSNorm` with the checkpoint's `{prefix}.weight`, in f32:
    /// `x / sqrt(mean(x²) + eps) * w`.
    fn rms_norm(&mut self, x: &str, prefix: &str) -> Result<String, String> {
        let w = self.weight(&format!("{prefix}.weight"), &[self.cfg.hidden_size])?;
        let b = &mut self.b;
        let sq = b.op("Pow", &[x, &self.two], vec![]);
        let ms = b.op(
            "ReduceMean",
            &[&sq, &self.last_axis],
            vec![attr_i("keepdims", 1)],
        );
        let var = b.op("Add", &[&ms, &self.eps], vec![]);
        let rms = b.op("Sqrt", &[&var], vec![]);
        let y = b.op("Div", &[x, &rms], vec![]);
        Ok(b.op("Mul", &[&y, &w], vec![]))
    }

    /// `nn.Linear`s of the same input as one `MatMul` (+ `Add`): `parts`
    /// are `(name prefix, out features, scale)`; their `[out, in]` weights
    /// are transposed to `[in, out]`, scaled and concatenated along the
    /// output, as are their biases when `bias`. `name` labels the fused
    /// initializer.
    fn linear(
        &mut self,
        x: &str,
        name: &str,
        parts: &[(String, usize, f32)],
        d_in: usize,
        bias: bool,
    ) -> Result<String, String> {
        let d_out: usize = parts.iter().map(|p| p.1).sum();
        let mut w = vec![0f32; d_in * d_out];
        let mut bs = Vec::with_capacity(d_out);
        let mut col = 0;
        for (prefix, out, scale) in parts {
            let t = transpose(&self.get(&format!("{prefix}.weight"))?, *out, d_in);
            for (dst, src) in w.chunks_exact_mut(d_out).zip(t.chunks_exact(*out)) {
                dst[col..col + out]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(d, s)| *d = s * scale);
            }
            if bias {
                let b = self.get(&format!("{prefix}.bias"))?;
                bs.extend(b.iter().map(|v| v * scale));
            }
            col += out;
        }
        let m = match self.b.quant {
            crate::quant::Quant::None => {
                let wn = self.b.weight(&format!("{name}.weight"), &[d_in, d_out], &w);
                self.b.op("MatMul", &[x, &wn], vec![])
            }
            q => self
                .b
                .quantized_matmul(x, name, crate::quant::Weight::InOut(&w), d_in, d_out, q),
        };
        if !bias {
            return Ok(m);
        }
        let bn = self.b.weight(&format!("{name}.bias"), &[d_out], &bs);
        Ok(self.b.op("Add", &[&m, &bn], vec![]))
    }

    /// One decoder layer: `x + attn(rms(x))`, then `+ mlp(rms(..))`.
    fn block(&mut self, l: usize, x: &str) -> Result<String, String> {
        let p = format!("model.layers.{l}");
        let h1 = self.rms_norm(x, &format!("{p}.input_layernorm"))?;
        let attn = self.attention(l, &h1)?;
        let x = self.b.op("Add", &[x, &attn], vec![]);
        let h2 = self.rms_norm(&x, &format!("{p}.post_attention_layernorm"))?;
        let mlp = self.mlp(l, &h2)?;
        Ok(self.b.op("Add", &[&x, &mlp], vec![]))
    }

    /// HF's `apply_rotary_pos_emb` on `x: [B, T, heads, D]`:
    /// `x * [cos, cos] + [x2, x1] * [-sin, sin]`.
    fn rope(&mut self, x: &str) -> String {
        let b = &mut self.b;
        let (x1, x2) = (b.fresh("x1"), b.fresh("x2"));
        b.op_to(
            "Split",
            &[x, &self.split_half],
            &[&x1, &x2],
            vec![attr_i("axis", -1)],
        );
        let rot = b.op("Concat", &[&x2, &x1], vec![attr_i("axis", -1)]);
        let a = b.op("Mul", &[x, &self.cos], vec![]);
        let r = b.op("Mul", &[&rot, &self.sin], vec![]);
        b.op("Add", &[&a, &r], vec![])
    }

    /// Layer `l`'s self-attention over its cache: appends this run's keys
    /// and values to `past_key_values.l.*` as `present.l.*`.
    fn attention(&mut self, l: usize, h: &str) -> Result<String, String> {
        let cfg = self.cfg;
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let (q_out, kv_out) = (cfg.num_attention_heads * d, cfg.kv_heads() * d);
        let p = |s: &str| format!("model.layers.{l}.self_attn.{s}");
        let scale = 1.0 / (d as f32).sqrt();
        let qkv = self.linear(
            h,
            &p("qkv_proj"),
            &[
                (p("q_proj"), q_out, scale),
                (p("k_proj"), kv_out, 1.0),
                (p("v_proj"), kv_out, 1.0),
            ],
            c,
            cfg.qkv_bias(),
        )?;
        let b = &mut self.b;
        let heads = b.op("Reshape", &[&qkv, &self.heads_shape], vec![]);
        let (qk, v) = (b.fresh("qk"), b.fresh("v"));
        b.op_to(
            "Split",
            &[&heads, &self.split_qk_v],
            &[&qk, &v],
            vec![attr_i("axis", 2)],
        );
        let qk = self.rope(&qk);
        let b = &mut self.b;
        let (q, k) = (b.fresh("q"), b.fresh("k"));
        b.op_to(
            "Split",
            &[&qk, &self.split_q_k],
            &[&q, &k],
            vec![attr_i("axis", 2)],
        );
        let perm = || vec![attr_ints("perm", &[0, 2, 1, 3])];
        let q = b.op("Transpose", &[&q], perm());
        let k = b.op("Transpose", &[&k], perm());
        let v = b.op("Transpose", &[&v], perm());
        let (past_k, past_v) = past_names(l);
        let (pres_k, pres_v) = present_names(l);
        let axis2 = || vec![attr_i("axis", 2)];
        b.op_to("Concat", &[&past_k, &k], &[&pres_k], axis2());
        b.op_to("Concat", &[&past_v, &v], &[&pres_v], axis2());
        let grouped = cfg.group() > 1;
        let q = if grouped {
            b.op("Reshape", &[&q, &self.group_rows], vec![])
        } else {
            q
        };
        let kt = b.op(
            "Transpose",
            &[&pres_k],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        );
        let scores = b.op("MatMul", &[&q, &kt], vec![]);
        let scores = b.op("Add", &[&scores, &self.bias], vec![]);
        let probs = b.op("Softmax", &[&scores], vec![attr_i("axis", -1)]);
        let ctx = b.op("MatMul", &[&probs, &pres_v], vec![]);
        let ctx = if grouped {
            b.op("Reshape", &[&ctx, &self.group_heads], vec![])
        } else {
            ctx
        };
        let ctx = b.op("Transpose", &[&ctx], perm());
        let ctx = b.op("Reshape", &[&ctx, &self.merge_shape], vec![]);
        self.linear(
            &ctx,
            &p("o_proj"),
            &[(p("o_proj"), c, 1.0)],
            q_out,
            cfg.o_bias(),
        )
    }

    /// Layer `l`'s MLP: `down(silu(gate(h)) * up(h))`, gate and up as one
    /// `MatMul`.
    fn mlp(&mut self, l: usize, h: &str) -> Result<String, String> {
        let (c, i, bias) = (
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
            self.cfg.mlp_bias,
        );
        let p = |s: &str| format!("model.layers.{l}.mlp.{s}");
        let gu = self.linear(
            h,
            &p("gate_up_proj"),
            &[(p("gate_proj"), i, 1.0), (p("up_proj"), i, 1.0)],
            c,
            bias,
        )?;
        let b = &mut self.b;
        let (g, u) = (b.fresh("gate"), b.fresh("up"));
        b.op_to(
            "Split",
            &[&gu, &self.split_gate_up],
            &[&g, &u],
            vec![attr_i("axis", -1)],
        );
        let s = b.op("Sigmoid", &[&g], vec![]);
        let silu = b.op("Mul", &[&g, &s], vec![]);
        let a = b.op("Mul", &[&silu, &u], vec![]);
        self.linear(&a, &p("down_proj"), &[(p("down_proj"), c, 1.0)], i, bias)
    }

    /// The final norm, then the lm_head (`Gemm` with `transB` on
    /// `[vocab, hidden]`: `embed_tokens` when tied, else `lm_head.weight`)
    /// for positions `logits_from..`, into the `logits` output.
    fn lm_head(&mut self, x: &str, embed: &str) -> Result<(), String> {
        let hf = self.rms_norm(x, "model.norm")?;
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let head_name = if self.cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let quant = self.b.quant;
        let head = match (quant, self.cfg.tie_word_embeddings) {
            (crate::quant::Quant::None, true) => embed.to_string(),
            (crate::quant::Quant::None, false) => self.weight(head_name, &[v, c])?,
            // read again below, for its quantized copy
            _ => String::new(),
        };
        let head_data = match quant {
            crate::quant::Quant::None => None,
            _ => Some(self.get(head_name)?),
        };
        let b = &mut self.b;
        b.i64s(LOGITS_FROM, &[1], &[0]);
        let ends = b.const_i64s(&[i64::MAX]);
        let axes1 = b.const_i64s(&[1]);
        let hs = b.op("Slice", &[&hf, LOGITS_FROM, &ends, &axes1], vec![]);
        let flat_shape = b.const_i64s(&[-1, c as i64]);
        let h2d = b.op("Reshape", &[&hs, &flat_shape], vec![]);
        let lm = match &head_data {
            None => b.op("Gemm", &[&h2d, &head], vec![attr_i("transB", 1)]),
            Some(w) => {
                b.quantized_matmul(&h2d, "lm_head", crate::quant::Weight::OutIn(w), c, v, quant)
            }
        };
        let tail = b.const_i64s(&[-1, v as i64]);
        let out_shape = b.op("Concat", &[&self.batch, &tail], vec![attr_i("axis", 0)]);
        b.op_to("Reshape", &[&lm, &out_shape], &["logits"], vec![]);
        Ok(())
    }
}

/// The graph's declared inputs and outputs: HF's export layout with
/// `num_key_value_heads` cache heads, then `rope_cos`, `rope_sin` and the
/// overridable `logits_from`.
fn interface(cfg: &Config) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    let d = cfg.head_dim() as i64;
    let (mut inputs, outputs) = hf_interface(
        cfg.num_hidden_layers,
        cfg.kv_heads() as i64,
        d,
        cfg.vocab_size as i64,
    );
    let angles = [
        Dim::Named("batch_size"),
        Dim::Named("sequence_length"),
        Dim::Fixed(d / 2),
    ];
    inputs.push(value_info(ROPE_COS, DataType::Float, &angles));
    inputs.push(value_info(ROPE_SIN, DataType::Float, &angles));
    inputs.push(value_info(LOGITS_FROM, DataType::Int64, &[Dim::Fixed(1)]));
    (inputs, outputs)
}

#[cfg(test)]
mod tests {
    use crate::quant::transpose;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        // [[1, 2, 3], [4, 5, 6]] -> [[1, 4], [2, 5], [3, 6]]
        let t = transpose(&[1., 2., 3., 4., 5., 6.], 2, 3);
        assert_eq!(t, [1., 4., 2., 5., 3., 6.]);
    }
}
