//! Builds GPT-2 as an ONNX graph, in Rust, from HF's `config.json` and
//! `model.safetensors` — the same files the candle engine reads.
//!
//! # Interface: Hugging Face's ONNX export layout
//!
//! | name | type | shape |
//! |---|---|---|
//! | `input_ids` | int64 | `[batch, seq]` |
//! | `attention_mask` | int64 | `[batch, past + seq]` (1 = attend, 0 = padding) |
//! | `position_ids` | int64 | `[batch, seq]` |
//! | `past_key_values.N.key` / `.value` | float | `[batch, n_head, past, head_dim]` |
//! | → `logits` | float | `[batch, seq', vocab]` |
//! | → `present.N.key` / `.value` | float | `[batch, n_head, past + seq, head_dim]` |
//!
//! This is what `optimum-cli export onnx --task text-generation-with-past`
//! writes for GPT-2, so the engine can also load such a `model.onnx`.
//!
//! One addition: `logits_from` (int64 `[1]`) is a graph input *with an
//! initializer of the same name* (an ONNX "overridable initializer"), with
//! default `[0]`: logits are computed for positions `logits_from..`. By
//! default that is every position, exactly HF's output; the engine passes
//! `[-1]` so a prefill computes the lm_head for the last position only (for
//! a 128-token GPT-2 prompt the full lm_head is 9.9 GFLOP, more than half
//! of the whole forward pass). Callers that do not know it see HF's graph.
//!
//! # Choices
//!
//! * Standard ONNX ops only, opset 20 (`LayerNormalization`, `Gelu` with
//!   `approximate = "tanh"` for `gelu_new`), so the graph runs on any
//!   execution provider and ONNX Runtime's own graph optimiser does the
//!   fusions (Transpose + MatMul into FusedMatMul, MatMul + Add, ...).
//! * The attention scale `1/sqrt(head_dim)` (and HF's
//!   `scale_attn_by_inverse_layer_idx`) is folded into the query columns
//!   of `c_attn` at build time, as the candle engine does.
//! * Causal and padding masks are built once per run inside the graph from
//!   `attention_mask` and added to every layer's scores (`-1e9` for masked
//!   keys: a fully padded query row then gets a harmless uniform softmax,
//!   never a NaN).
//! * The lm_head is `Gemm(h, wte, transB = 1)`: the tied embedding is
//!   stored once (a transposed copy would cost 154 MB for GPT-2).
//! * Weights are initializers (f32, converted from whatever float type the
//!   checkpoint holds). A protobuf message cannot exceed 2 GB, so above
//!   [`INLINE_LIMIT`] (or when asked) they go to an external data file
//!   next to the model, as ONNX's external-data convention specifies.

use crate::proto::{
    self, tensor_proto::DataType, tensor_shape_proto::dimension, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use engine_kit::gpt2::{Activation, Config};
use prost::bytes::Bytes;

/// Default opset of the built graph.
pub const OPSET: i64 = 20;
/// IR version matching opset 20.
pub const IR_VERSION: i64 = 9;
/// Largest total initializer size kept inside the protobuf (which is
/// limited to 2 GiB as a whole).
pub const INLINE_LIMIT: usize = 1 << 30;
/// Name of the overridable "logits from position" input.
pub const LOGITS_FROM: &str = "logits_from";

/// Masked attention scores get this added.
const MASKED: f32 = -1e9;

/// Supplies the checkpoint's tensors as f32 (HF names, without prefix).
pub trait WeightSource {
    fn get(&self, name: &str) -> Result<Vec<f32>, String>;
}

impl WeightSource for engine_kit::checkpoint::Checkpoint {
    fn get(&self, name: &str) -> Result<Vec<f32>, String> {
        self.f32s(name)
    }
}

/// Where initializers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPlacement {
    /// In the protobuf.
    Inline,
    /// In `location` (relative to the model file), at the offsets recorded
    /// in each initializer.
    External,
}

/// A built model: the protobuf and, for [`DataPlacement::External`], the
/// bytes of the external data file.
pub struct Built {
    pub model: ModelProto,
    pub external: Option<(String, Vec<u8>)>,
}

impl Built {
    /// The serialized model.
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        self.model.encode_to_vec()
    }
}

/// A small helper that names values and collects nodes and initializers
/// (shared by the models' graph builders).
pub(crate) struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    n: usize,
    placement: DataPlacement,
    location: String,
    external: Vec<u8>,
    /// How the projections' weights are stored ([`crate::quant`]).
    pub(crate) quant: crate::quant::Quant,
}

pub(crate) fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn attr_s(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

pub(crate) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A dimension: a number or a symbolic name.
#[derive(Debug, Clone, Copy)]
pub enum Dim<'a> {
    Fixed(i64),
    Named(&'a str),
}

/// A graph input/output declaration.
pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| proto::tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Named(s) => dimension::Value::DimParam((*s).into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Builder {
    pub(crate) fn new(placement: DataPlacement, location: &str) -> Self {
        Builder {
            nodes: Vec::new(),
            inits: Vec::new(),
            n: 0,
            placement,
            location: location.into(),
            external: Vec::new(),
            quant: crate::quant::Quant::None,
        }
    }

    pub(crate) fn fresh(&mut self, hint: &str) -> String {
        self.n += 1;
        format!("{hint}_{}", self.n)
    }

    /// Adds a node with one output, returns the output's name.
    pub(crate) fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.op_to(op, inputs, &[&out], attrs);
        out
    }

    /// Adds a node of operator set `domain` with one output.
    pub(crate) fn op_domain(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = self.op(op, inputs, attrs);
        if let Some(n) = self.nodes.last_mut() {
            n.domain = Some(domain.into());
        }
        out
    }

    /// Adds a node with the given outputs.
    pub(crate) fn op_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{op}_{}", self.nodes.len())),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
    }

    pub(crate) fn i64s(&mut self, name: &str, dims: &[i64], v: &[i64]) -> String {
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.inits.push(TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        });
        name.into()
    }

    pub(crate) fn const_i64s(&mut self, v: &[i64]) -> String {
        let name = self.fresh("const");
        self.i64s(&name, &[v.len() as i64], v)
    }

    pub(crate) fn scalar_i64(&mut self, v: i64) -> String {
        let name = self.fresh("const");
        self.i64s(&name, &[], &[v])
    }

    pub(crate) fn scalar_f32(&mut self, v: f32) -> String {
        let name = self.fresh("const");
        self.inits.push(TensorProto {
            name: Some(name.clone()),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(Bytes::copy_from_slice(&v.to_le_bytes())),
            ..Default::default()
        });
        name
    }

    /// A weight initializer, inline or in the external data file.
    pub(crate) fn weight(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.raw_weight(name, shape, DataType::Float, raw)
    }

    /// An initializer of `dtype` from its little-endian bytes, inline or
    /// in the external data file.
    pub(crate) fn raw_weight(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DataType,
        raw: Vec<u8>,
    ) -> String {
        let dims = shape.iter().map(|&d| d as i64).collect();
        let mut t = TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(dtype as i32),
            ..Default::default()
        };
        match self.placement {
            DataPlacement::Inline => t.raw_data = Some(Bytes::from(raw)),
            DataPlacement::External => {
                // 64-byte alignment lets ORT map the data file directly.
                let pad = self.external.len().next_multiple_of(64) - self.external.len();
                self.external.extend(std::iter::repeat_n(0u8, pad));
                let entry = |k: &str, v: String| proto::StringStringEntryProto {
                    key: Some(k.into()),
                    value: Some(v),
                };
                t.external_data = vec![
                    entry("location", self.location.clone()),
                    entry("offset", self.external.len().to_string()),
                    entry("length", raw.len().to_string()),
                ];
                t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
                self.external.extend_from_slice(&raw);
            }
        }
        self.inits.push(t);
        name.into()
    }
}

/// Names of the graph's cache inputs and outputs for layer `l`.
pub fn past_names(l: usize) -> (String, String) {
    (
        format!("past_key_values.{l}.key"),
        format!("past_key_values.{l}.value"),
    )
}

pub fn present_names(l: usize) -> (String, String) {
    (format!("present.{l}.key"), format!("present.{l}.value"))
}

/// Builds the graph. `location` is the external data file's name (used
/// with [`DataPlacement::External`]).
/// What every layer's builders share: the graph so far, the checkpoint,
/// the model's dimensions and constants made once.
struct Gpt2Graph<'a> {
    b: Builder,
    cfg: &'a Config,
    weights: &'a dyn WeightSource,
    eps: f32,
    /// `Unsqueeze`/`Slice` axes `[1]`.
    axes1: String,
    /// Additive attention bias `[batch, 1, seq, past + seq]`: 0 where a
    /// query may attend a key, [`MASKED`] elsewhere.
    bias: String,
    /// `[batch]`, for the logits' output shape.
    batch: String,
    /// `Split` sizes of the fused qkv projection: `[C, C, C]`.
    split: String,
    /// `[B, T, C]` -> `[B, T, heads, head_dim]` and back.
    heads_shape: String,
    merge_shape: String,
}

pub fn build(
    cfg: &Config,
    weights: &dyn WeightSource,
    placement: DataPlacement,
    location: &str,
    quant: crate::quant::Quant,
) -> Result<Built, String> {
    let act = cfg.activation()?;
    let mut b = Builder::new(placement, location);
    b.quant = quant;
    let mut g = Gpt2Graph::new(b, cfg, weights);
    let (mut x, wte) = g.embeddings()?;
    for l in 0..cfg.n_layer {
        x = g.block(l, &x, act)?;
    }
    g.lm_head(&x, &wte)?;
    let (inputs, outputs) = interface(cfg);
    Ok(g.b.finish(
        "gpt2",
        "GPT-2 with KV cache, Hugging Face export layout, built by engine-matrix's em-onnx",
        inputs,
        outputs,
    ))
}

impl Built {
    /// Bytes of the graph's initializers: inline ones and the external
    /// data file (padding included).
    pub fn weight_bytes(&self) -> u64 {
        let inline: usize = self.model.graph.as_ref().map_or(0, |g| {
            g.initializer
                .iter()
                .map(|t| t.raw_data.as_ref().map_or(0, |d| d.len()))
                .sum()
        });
        inline as u64 + self.external.as_ref().map_or(0, |(_, d)| d.len() as u64)
    }
}

impl Builder {
    /// The model: this builder's nodes and initializers as a graph with
    /// `inputs` and `outputs`, and the external data file's bytes.
    pub(crate) fn finish(
        self,
        name: &str,
        doc: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
    ) -> Built {
        let b = self;
        let mut opset_import = vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }];
        if b.nodes
            .iter()
            .any(|n| n.domain.as_deref() == Some("com.microsoft"))
        {
            opset_import.push(OperatorSetIdProto {
                domain: Some("com.microsoft".into()),
                version: Some(1),
            });
        }
        let graph = GraphProto {
            node: b.nodes,
            name: Some(name.into()),
            initializer: b.inits,
            input: inputs,
            output: outputs,
            doc_string: Some(doc.into()),
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import,
            producer_name: Some("engine-matrix em-onnx".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(graph),
            ..Default::default()
        };
        let external = match b.placement {
            DataPlacement::Inline => None,
            DataPlacement::External => Some((b.location, b.external)),
        };
        Built { model, external }
    }
}

impl<'a> Gpt2Graph<'a> {
    /// Starts the graph with the shapes and the attention bias every layer
    /// adds to its scores.
    fn new(mut b: Builder, cfg: &'a Config, weights: &'a dyn WeightSource) -> Self {
        let axes1 = b.const_i64s(&[1]);
        let (bias, batch) = attention_bias(&mut b, &axes1);
        let (c, h, d) = (cfg.n_embd as i64, cfg.n_head as i64, cfg.head_dim() as i64);
        Gpt2Graph {
            split: b.const_i64s(&[c, c, c]),
            heads_shape: b.const_i64s(&[0, 0, h, d]),
            merge_shape: b.const_i64s(&[0, 0, c]),
            b,
            cfg,
            weights,
            eps: cfg.layer_norm_epsilon as f32,
            axes1,
            bias,
            batch,
        }
    }

    fn get(&self, name: &str) -> Result<Vec<f32>, String> {
        self.weights.get(name)
    }

    /// A weight initializer from the checkpoint tensor `name`.
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<String, String> {
        let data = self.get(name)?;
        Ok(self.b.weight(name, shape, &data))
    }

    /// Token plus position embeddings; returns them and the `wte`
    /// initializer (the tied lm_head).
    fn embeddings(&mut self) -> Result<(String, String), String> {
        let c = self.cfg.n_embd;
        let wte = self.weight("wte.weight", &[self.cfg.vocab_size, c])?;
        let wpe = self.weight("wpe.weight", &[self.cfg.n_positions, c])?;
        let tok = self.b.op("Gather", &[&wte, "input_ids"], vec![]);
        let pos = self.b.op("Gather", &[&wpe, "position_ids"], vec![]);
        Ok((self.b.op("Add", &[&tok, &pos], vec![]), wte))
    }

    /// `LayerNormalization` with the checkpoint's `{prefix}.weight` and
    /// `{prefix}.bias`.
    fn layer_norm(&mut self, x: &str, prefix: &str) -> Result<String, String> {
        let c = self.cfg.n_embd;
        let w = self.weight(&format!("{prefix}.weight"), &[c])?;
        let bias = self.weight(&format!("{prefix}.bias"), &[c])?;
        Ok(self.b.op(
            "LayerNormalization",
            &[x, &w, &bias],
            vec![attr_i("axis", -1), attr_f("epsilon", self.eps)],
        ))
    }

    /// HF's Conv1D `{prefix}` (`weight: [in, out]`, `bias: [out]`) as
    /// MatMul + Add; `scale_cols` multiplies the first `cols` output
    /// columns (weight and bias) by `s` at build time.
    fn linear(
        &mut self,
        x: &str,
        prefix: &str,
        shape: [usize; 2],
        scale_cols: Option<(usize, f32)>,
    ) -> Result<String, String> {
        let (wn, bn) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let mut w = self.get(&wn)?;
        let mut bias = self.get(&bn)?;
        if let Some((cols, s)) = scale_cols {
            for row in w.chunks_mut(shape[1]) {
                row[..cols].iter_mut().for_each(|v| *v *= s);
            }
            bias[..cols].iter_mut().for_each(|v| *v *= s);
        }
        let m = match self.b.quant {
            crate::quant::Quant::None => {
                let wn = self.b.weight(&wn, &shape, &w);
                self.b.op("MatMul", &[x, &wn], vec![])
            }
            q => self.b.quantized_matmul(
                x,
                prefix,
                crate::quant::Weight::InOut(&w),
                shape[0],
                shape[1],
                q,
            ),
        };
        let bn = self.b.weight(&bn, &[shape[1]], &bias);
        Ok(self.b.op("Add", &[&m, &bn], vec![]))
    }

    /// One transformer block: `x + attn(ln_1(x))`, then `+ mlp(ln_2(..))`.
    fn block(&mut self, l: usize, x: &str, act: Activation) -> Result<String, String> {
        let h1 = self.layer_norm(x, &format!("h.{l}.ln_1"))?;
        let attn = self.attention(l, &h1)?;
        let x = self.b.op("Add", &[x, &attn], vec![]);
        let h2 = self.layer_norm(&x, &format!("h.{l}.ln_2"))?;
        let mlp = self.mlp(l, &h2, act)?;
        Ok(self.b.op("Add", &[&x, &mlp], vec![]))
    }

    /// Layer `l`'s self-attention over its cache: appends this run's keys
    /// and values to `past_key_values.l.*` as `present.l.*`.
    fn attention(&mut self, l: usize, h: &str) -> Result<String, String> {
        let cfg = self.cfg;
        let (c, d) = (cfg.n_embd, cfg.head_dim());
        let mut scale = 1.0f32;
        if cfg.scale_attn_weights {
            scale /= (d as f32).sqrt();
        }
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (l + 1) as f32;
        }
        let qkv = self.linear(
            h,
            &format!("h.{l}.attn.c_attn"),
            [c, 3 * c],
            Some((c, scale)),
        )?;
        let (split, heads_shape, merge_shape) = (&self.split, &self.heads_shape, &self.merge_shape);
        let b = &mut self.b;
        let (q, k, v) = (b.fresh("q"), b.fresh("k"), b.fresh("v"));
        b.op_to(
            "Split",
            &[&qkv, split],
            &[&q, &k, &v],
            vec![attr_i("axis", 2)],
        );
        let perm = vec![attr_ints("perm", &[0, 2, 1, 3])];
        let mut heads = |t: &str| {
            let r = b.op("Reshape", &[t, heads_shape], vec![]);
            b.op("Transpose", &[&r], perm.clone())
        };
        let (q, k, v) = (heads(&q), heads(&k), heads(&v));
        let (past_k, past_v) = past_names(l);
        let (pres_k, pres_v) = present_names(l);
        let axis2 = || vec![attr_i("axis", 2)];
        b.op_to("Concat", &[&past_k, &k], &[&pres_k], axis2());
        b.op_to("Concat", &[&past_v, &v], &[&pres_v], axis2());
        let kt = b.op(
            "Transpose",
            &[&pres_k],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        );
        let scores = b.op("MatMul", &[&q, &kt], vec![]);
        let scores = b.op("Add", &[&scores, &self.bias], vec![]);
        let probs = b.op("Softmax", &[&scores], vec![attr_i("axis", -1)]);
        let ctx = b.op("MatMul", &[&probs, &pres_v], vec![]);
        let ctx = b.op("Transpose", &[&ctx], perm);
        let ctx = b.op("Reshape", &[&ctx, merge_shape], vec![]);
        self.linear(&ctx, &format!("h.{l}.attn.c_proj"), [c, c], None)
    }

    /// Layer `l`'s MLP: `c_proj(act(c_fc(h)))`.
    fn mlp(&mut self, l: usize, h: &str, act: Activation) -> Result<String, String> {
        let (c, inner) = (self.cfg.n_embd, self.cfg.inner_dim());
        let fc = self.linear(h, &format!("h.{l}.mlp.c_fc"), [c, inner], None)?;
        let a = match act {
            Activation::GeluTanh => self
                .b
                .op("Gelu", &[&fc], vec![attr_s("approximate", "tanh")]),
            Activation::GeluErf => self.b.op("Gelu", &[&fc], vec![]),
            Activation::Relu => self.b.op("Relu", &[&fc], vec![]),
        };
        self.linear(&a, &format!("h.{l}.mlp.c_proj"), [inner, c], None)
    }

    /// `ln_f`, then the tied lm_head (`Gemm` with `wte`, `transB`) for
    /// positions `logits_from..`, into the `logits` output.
    fn lm_head(&mut self, x: &str, wte: &str) -> Result<(), String> {
        let hf = self.layer_norm(x, "ln_f")?;
        let c_i = self.cfg.n_embd as i64;
        let b = &mut self.b;
        b.i64s(LOGITS_FROM, &[1], &[0]);
        let ends = b.const_i64s(&[i64::MAX]);
        let hs = b.op("Slice", &[&hf, LOGITS_FROM, &ends, &self.axes1], vec![]);
        let flat_shape = b.const_i64s(&[-1, c_i]);
        let h2d = b.op("Reshape", &[&hs, &flat_shape], vec![]);
        let lm = match b.quant {
            crate::quant::Quant::None => b.op("Gemm", &[&h2d, wte], vec![attr_i("transB", 1)]),
            q => {
                // a quantized copy of the tied embedding matrix
                let w = self.weights.get("wte.weight")?;
                let (c, v) = (self.cfg.n_embd, self.cfg.vocab_size);
                let b = &mut self.b;
                b.quantized_matmul(&h2d, "lm_head", crate::quant::Weight::OutIn(&w), c, v, q)
            }
        };
        let b = &mut self.b;
        let tail = b.const_i64s(&[-1, self.cfg.vocab_size as i64]);
        let out_shape = b.op("Concat", &[&self.batch, &tail], vec![attr_i("axis", 0)]);
        b.op_to("Reshape", &[&lm, &out_shape], &["logits"], vec![]);
        Ok(())
    }
}

/// The causal and padding mask as an additive bias, built once per run
/// from `attention_mask`; returns it and the batch size `[batch]`.
pub(crate) fn attention_bias(b: &mut Builder, axes1: &str) -> (String, String) {
    let shape = |b: &mut Builder, of: &str, start: i64| {
        b.op(
            "Shape",
            &[of],
            vec![attr_i("start", start), attr_i("end", start + 1)],
        )
    };
    let seq = shape(b, "input_ids", 1);
    let batch = shape(b, "input_ids", 0);
    let total = shape(b, "attention_mask", 1);
    let seq_s = b.op("Squeeze", &[&seq], vec![]);
    let total_s = b.op("Squeeze", &[&total], vec![]);
    let zero = b.scalar_i64(0);
    let one = b.scalar_i64(1);
    let key_idx = b.op("Range", &[&zero, &total_s, &one], vec![]);
    let past_len = b.op("Sub", &[&total_s, &seq_s], vec![]);
    let q_idx = b.op("Range", &[&past_len, &total_s, &one], vec![]);
    let q_col = b.op("Unsqueeze", &[&q_idx, axes1], vec![]);
    let causal = b.op("LessOrEqual", &[&key_idx, &q_col], vec![]);
    let am_bool = b.op(
        "Cast",
        &["attention_mask"],
        vec![attr_i("to", DataType::Bool as i64)],
    );
    let axes12 = b.const_i64s(&[1, 2]);
    let am4 = b.op("Unsqueeze", &[&am_bool, &axes12], vec![]);
    let allowed = b.op("And", &[&causal, &am4], vec![]);
    let f0 = b.scalar_f32(0.0);
    let fmask = b.scalar_f32(MASKED);
    (b.op("Where", &[&allowed, &f0, &fmask], vec![]), batch)
}

/// The graph's declared inputs and outputs: HF's export layout plus the
/// overridable `logits_from` input, declared last so that positional
/// callers see HF's inputs first.
fn interface(cfg: &Config) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    let (mut inputs, outputs) = hf_interface(
        cfg.n_layer,
        cfg.n_head as i64,
        cfg.head_dim() as i64,
        cfg.vocab_size as i64,
    );
    inputs.push(value_info(LOGITS_FROM, DataType::Int64, &[Dim::Fixed(1)]));
    (inputs, outputs)
}

/// Hugging Face's decoder export layout: inputs `input_ids`,
/// `attention_mask`, `position_ids` and each layer's past key and value
/// (`heads` cache heads of `head_dim`); outputs `logits` (`vocab` wide)
/// and each layer's present key and value. Shared by every architecture.
pub(crate) fn hf_interface(
    layers: usize,
    heads: i64,
    head_dim: i64,
    vocab: i64,
) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    use Dim::{Fixed, Named};
    let f32t = DataType::Float;
    let ids = [Named("batch_size"), Named("sequence_length")];
    let total = Named("past_sequence_length + sequence_length");
    let mut inputs = vec![
        value_info("input_ids", DataType::Int64, &ids),
        value_info(
            "attention_mask",
            DataType::Int64,
            &[Named("batch_size"), total],
        ),
        value_info("position_ids", DataType::Int64, &ids),
    ];
    let logits = [Named("batch_size"), Named("logits_length"), Fixed(vocab)];
    let mut outputs = vec![value_info("logits", f32t, &logits)];
    let cache = |len| [Named("batch_size"), Fixed(heads), len, Fixed(head_dim)];
    for l in 0..layers {
        let (pk, pv) = past_names(l);
        let (qk, qv) = present_names(l);
        for n in [pk, pv] {
            inputs.push(value_info(&n, f32t, &cache(Named("past_sequence_length"))));
        }
        for n in [qk, qv] {
            outputs.push(value_info(&n, f32t, &cache(total)));
        }
    }
    (inputs, outputs)
}
