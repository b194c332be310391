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

/// A small helper that names values and collects nodes and initializers.
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    n: usize,
    placement: DataPlacement,
    location: String,
    external: Vec<u8>,
}

fn attr_i(name: &str, v: i64) -> AttributeProto {
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

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A dimension: a number or a symbolic name.
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
    fn fresh(&mut self, hint: &str) -> String {
        self.n += 1;
        format!("{hint}_{}", self.n)
    }

    /// Adds a node with one output, returns the output's name.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.op_to(op, inputs, &[&out], attrs);
        out
    }

    /// Adds a node with the given outputs.
    fn op_to(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{op}_{}", self.nodes.len())),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn i64s(&mut self, name: &str, dims: &[i64], v: &[i64]) -> String {
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

    fn const_i64s(&mut self, v: &[i64]) -> String {
        let name = self.fresh("const");
        self.i64s(&name, &[v.len() as i64], v)
    }

    fn scalar_i64(&mut self, v: i64) -> String {
        let name = self.fresh("const");
        self.i64s(&name, &[], &[v])
    }

    fn scalar_f32(&mut self, v: f32) -> String {
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
    fn weight(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let dims = shape.iter().map(|&d| d as i64).collect();
        let mut t = TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(DataType::Float as i32),
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
pub fn build(
    cfg: &Config,
    weights: &dyn WeightSource,
    placement: DataPlacement,
    location: &str,
) -> Result<Built, String> {
    let act = cfg.activation()?;
    let (c, h, d) = (cfg.n_embd, cfg.n_head, cfg.head_dim());
    let (c_i, h_i, d_i) = (c as i64, h as i64, d as i64);
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        n: 0,
        placement,
        location: location.into(),
        external: Vec::new(),
    };
    let get = |name: &str| -> Result<Vec<f32>, String> { weights.get(name) };

    // ---- shapes and masks -------------------------------------------------
    let seq = b.op(
        "Shape",
        &["input_ids"],
        vec![attr_i("start", 1), attr_i("end", 2)],
    );
    let batch = b.op(
        "Shape",
        &["input_ids"],
        vec![attr_i("start", 0), attr_i("end", 1)],
    );
    let total = b.op(
        "Shape",
        &["attention_mask"],
        vec![attr_i("start", 1), attr_i("end", 2)],
    );
    let seq_s = b.op("Squeeze", &[&seq], vec![]);
    let total_s = b.op("Squeeze", &[&total], vec![]);
    let zero = b.scalar_i64(0);
    let one = b.scalar_i64(1);
    let key_idx = b.op("Range", &[&zero, &total_s, &one], vec![]);
    let past_len = b.op("Sub", &[&total_s, &seq_s], vec![]);
    let q_idx = b.op("Range", &[&past_len, &total_s, &one], vec![]);
    let axes1 = b.const_i64s(&[1]);
    let q_col = b.op("Unsqueeze", &[&q_idx, &axes1], vec![]);
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
    let bias = b.op("Where", &[&allowed, &f0, &fmask], vec![]);

    // ---- embeddings -------------------------------------------------------
    let wte = get("wte.weight")?;
    let wte_name = b.weight("wte.weight", &[cfg.vocab_size, c], &wte);
    drop(wte);
    let wpe = b.weight("wpe.weight", &[cfg.n_positions, c], &get("wpe.weight")?);
    let tok = b.op("Gather", &[&wte_name, "input_ids"], vec![]);
    let pos = b.op("Gather", &[&wpe, "position_ids"], vec![]);
    let mut x = b.op("Add", &[&tok, &pos], vec![]);

    let eps = cfg.layer_norm_epsilon as f32;
    let split = b.const_i64s(&[c_i, c_i, c_i]);
    let heads_shape = b.const_i64s(&[0, 0, h_i, d_i]);
    let merge_shape = b.const_i64s(&[0, 0, c_i]);

    for l in 0..cfg.n_layer {
        let p = |s: &str| format!("h.{l}.{s}");
        let ln = |b: &mut Builder, x: &str, which: &str| -> Result<String, String> {
            let w = b.weight(
                &p(&format!("{which}.weight")),
                &[c],
                &get(&p(&format!("{which}.weight")))?,
            );
            let bb = b.weight(
                &p(&format!("{which}.bias")),
                &[c],
                &get(&p(&format!("{which}.bias")))?,
            );
            Ok(b.op(
                "LayerNormalization",
                &[x, &w, &bb],
                vec![attr_i("axis", -1), attr_f("epsilon", eps)],
            ))
        };
        let linear = |b: &mut Builder,
                      x: &str,
                      which: &str,
                      shape: [usize; 2],
                      scale_cols: Option<(usize, f32)>|
         -> Result<String, String> {
            let mut w = get(&p(&format!("{which}.weight")))?;
            let mut bias = get(&p(&format!("{which}.bias")))?;
            if let Some((cols, s)) = scale_cols {
                for row in w.chunks_mut(shape[1]) {
                    row[..cols].iter_mut().for_each(|v| *v *= s);
                }
                bias[..cols].iter_mut().for_each(|v| *v *= s);
            }
            let wn = b.weight(&p(&format!("{which}.weight")), &shape, &w);
            let bn = b.weight(&p(&format!("{which}.bias")), &[shape[1]], &bias);
            let m = b.op("MatMul", &[x, &wn], vec![]);
            Ok(b.op("Add", &[&m, &bn], vec![]))
        };

        // attention
        let h1 = ln(&mut b, &x, "ln_1")?;
        let mut scale = 1.0f32;
        if cfg.scale_attn_weights {
            scale /= (d as f32).sqrt();
        }
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (l + 1) as f32;
        }
        let qkv = linear(&mut b, &h1, "attn.c_attn", [c, 3 * c], Some((c, scale)))?;
        let (q, k, v) = (b.fresh("q"), b.fresh("k"), b.fresh("v"));
        b.op_to(
            "Split",
            &[&qkv, &split],
            &[&q, &k, &v],
            vec![attr_i("axis", 2)],
        );
        let perm = vec![attr_ints("perm", &[0, 2, 1, 3])];
        let heads = |b: &mut Builder, t: &str| {
            let r = b.op("Reshape", &[t, &heads_shape], vec![]);
            b.op("Transpose", &[&r], perm.clone())
        };
        let (q, k, v) = (heads(&mut b, &q), heads(&mut b, &k), heads(&mut b, &v));
        let (past_k, past_v) = past_names(l);
        let (pres_k, pres_v) = present_names(l);
        b.op_to(
            "Concat",
            &[&past_k, &k],
            &[&pres_k],
            vec![attr_i("axis", 2)],
        );
        b.op_to(
            "Concat",
            &[&past_v, &v],
            &[&pres_v],
            vec![attr_i("axis", 2)],
        );
        let kt = b.op(
            "Transpose",
            &[&pres_k],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        );
        let scores = b.op("MatMul", &[&q, &kt], vec![]);
        let scores = b.op("Add", &[&scores, &bias], vec![]);
        let probs = b.op("Softmax", &[&scores], vec![attr_i("axis", -1)]);
        let ctx = b.op("MatMul", &[&probs, &pres_v], vec![]);
        let ctx = b.op("Transpose", &[&ctx], perm.clone());
        let ctx = b.op("Reshape", &[&ctx, &merge_shape], vec![]);
        let attn = linear(&mut b, &ctx, "attn.c_proj", [c, c], None)?;
        x = b.op("Add", &[&x, &attn], vec![]);

        // MLP
        let h2 = ln(&mut b, &x, "ln_2")?;
        let inner = cfg.inner_dim();
        let fc = linear(&mut b, &h2, "mlp.c_fc", [c, inner], None)?;
        let a = match act {
            Activation::GeluTanh => b.op("Gelu", &[&fc], vec![attr_s("approximate", "tanh")]),
            Activation::GeluErf => b.op("Gelu", &[&fc], vec![]),
            Activation::Relu => b.op("Relu", &[&fc], vec![]),
        };
        let proj = linear(&mut b, &a, "mlp.c_proj", [inner, c], None)?;
        x = b.op("Add", &[&x, &proj], vec![]);
    }

    // ---- head -------------------------------------------------------------
    let lnf_w = b.weight("ln_f.weight", &[c], &get("ln_f.weight")?);
    let lnf_b = b.weight("ln_f.bias", &[c], &get("ln_f.bias")?);
    let hf = b.op(
        "LayerNormalization",
        &[&x, &lnf_w, &lnf_b],
        vec![attr_i("axis", -1), attr_f("epsilon", eps)],
    );
    b.i64s(LOGITS_FROM, &[1], &[0]);
    let ends = b.const_i64s(&[i64::MAX]);
    let hs = b.op("Slice", &[&hf, LOGITS_FROM, &ends, &axes1], vec![]);
    let flat_shape = b.const_i64s(&[-1, c_i]);
    let h2d = b.op("Reshape", &[&hs, &flat_shape], vec![]);
    let lm = b.op("Gemm", &[&h2d, &wte_name], vec![attr_i("transB", 1)]);
    let tail = b.const_i64s(&[-1, cfg.vocab_size as i64]);
    let out_shape = b.op("Concat", &[&batch, &tail], vec![attr_i("axis", 0)]);
    b.op_to("Reshape", &[&lm, &out_shape], &["logits"], vec![]);

    // ---- declarations -----------------------------------------------------
    use Dim::{Fixed, Named};
    let f32t = DataType::Float;
    let mut inputs = vec![
        value_info(
            "input_ids",
            DataType::Int64,
            &[Named("batch_size"), Named("sequence_length")],
        ),
        value_info(
            "attention_mask",
            DataType::Int64,
            &[
                Named("batch_size"),
                Named("past_sequence_length + sequence_length"),
            ],
        ),
        value_info(
            "position_ids",
            DataType::Int64,
            &[Named("batch_size"), Named("sequence_length")],
        ),
    ];
    let mut outputs = vec![value_info(
        "logits",
        f32t,
        &[
            Named("batch_size"),
            Named("logits_length"),
            Fixed(cfg.vocab_size as i64),
        ],
    )];
    for l in 0..cfg.n_layer {
        let (pk, pv) = past_names(l);
        let (qk, qv) = present_names(l);
        for n in [pk, pv] {
            inputs.push(value_info(
                &n,
                f32t,
                &[
                    Named("batch_size"),
                    Fixed(h_i),
                    Named("past_sequence_length"),
                    Fixed(d_i),
                ],
            ));
        }
        for n in [qk, qv] {
            outputs.push(value_info(
                &n,
                f32t,
                &[
                    Named("batch_size"),
                    Fixed(h_i),
                    Named("past_sequence_length + sequence_length"),
                    Fixed(d_i),
                ],
            ));
        }
    }
    // The overridable initializer, declared last so that positional
    // callers see HF's inputs first.
    inputs.push(value_info(LOGITS_FROM, DataType::Int64, &[Fixed(1)]));

    let graph = GraphProto {
        node: b.nodes,
        name: Some("gpt2".into()),
        initializer: b.inits,
        input: inputs,
        output: outputs,
        doc_string: Some(
            "GPT-2 with KV cache, Hugging Face export layout, built by engine-matrix's em-onnx"
                .into(),
        ),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("engine-matrix em-onnx".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    let external = match placement {
        DataPlacement::Inline => None,
        DataPlacement::External => Some((location.to_string(), b.external)),
    };
    Ok(Built { model, external })
}
