//! Weight quantization of the built graphs' projections: every `nn.Linear`
//! (q/k/v, o, gate/up, down; GPT-2's c_attn, c_proj, c_fc) and the lm_head
//! become a quantized matmul, built by the same Rust graph builder.
//!
//! * **`int8`** (default): `com.microsoft.MatMulNBits` at 8 bits, blocks
//!   of 32 along the input dimension, asymmetric (each block's range,
//!   widened to hold 0, over 256 levels, with a zero point per block, as
//!   ORT's own block quantizer does). With `accuracy_level`
//!   4 ORT quantizes the activations to int8 per block of 32 at run time:
//!   dynamic quantization with block-wise scales on both sides.
//! * **`int8`, `int8_kernel: matmul_integer`**: ONNX Runtime's classic
//!   dynamic quantization, as its `quantize_dynamic` writes it: `DynamicQuantizeLinear` on the
//!   activations (per tensor, uint8 with a zero point), `MatMulInteger`
//!   against int8 weights quantized **per output column** (symmetric:
//!   scale = max |w| / 63, zero point 0: 7 bits, see [`INT8_MAX`]), then `Cast` and one `Mul` by
//!   the activation scale times the column scales. ORT's optimiser fuses
//!   the pattern into its `DynamicQuantizeMatMul` kernel. Standard ONNX
//!   ops only. Not the default: one scale for the whole activation
//!   tensor cannot follow a transformer's outlier channels. On
//!   SmolLM2-135M (first 1,024 ShareGPT tokens, 2 windows of 512, AMD
//!   EPYC) it gave perplexity 19.5 against f32's 10.35 (int4 blocks: 13.2).
//! * **`int4`**: `com.microsoft.MatMulNBits`, 4 bits, blocks of 32 along
//!   the input dimension, one f32 scale per block and the default zero
//!   point 8 (symmetric, as llama.cpp's Q4_0: the block's largest-magnitude
//!   weight maps to -8). `accuracy_level` 4 (the engine option
//!   `nbits_accuracy`) lets ORT quantize the activations to int8 per block
//!   for its integer kernels, as llama.cpp's CPU kernels do; 0 keeps them
//!   f32.
//!
//! Token embeddings stay f32 (a `Gather` reads one row per token, not the
//! whole table), so a tied lm_head gets its own quantized copy of the
//! embedding matrix; norms and biases stay f32. The engine reports the
//! bytes of every initializer it maps (`weight_bytes`), so the saving is
//! measured, not assumed.

use crate::graph::{attr_i, Builder};
use crate::proto::tensor_proto::DataType;

/// A weight quantization of the built graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quant {
    #[default]
    None,
    /// `MatMulNBits` at 8 bits, blocks of 32 (the default `int8`).
    Int8 {
        /// `MatMulNBits`' `accuracy_level`.
        accuracy: u8,
    },
    /// `DynamicQuantizeLinear` + `MatMulInteger` (`int8_kernel:
    /// matmul_integer`).
    Int8PerTensor,
    Int4 {
        /// `MatMulNBits`' `accuracy_level` (0: unset, 1: f32, 2: f16, 3:
        /// bf16, 4: int8 activations).
        accuracy: u8,
    },
}

/// Bump when the quantized graphs change (a cached graph of another
/// format is rebuilt).
pub const QUANT_FORMAT: u32 = 4;

/// Whether `MatMulNBits`' blocks at `bits` are asymmetric (with zero
/// points). Chosen by measurement on SmolLM2-135M (first 1,024 ShareGPT
/// tokens, AMD EPYC; f32: perplexity 10.347): 8 bits asymmetric 10.369,
/// symmetric 10.433; 4 bits symmetric 13.199, asymmetric 13.744 (its
/// weights are the Q4_1 GGUF's, whose block minimum an integer zero point
/// cannot hold).
fn asymmetric(bits: u32) -> bool {
    bits == 8
}

/// `MatMulNBits`' block length along the input dimension.
pub const INT4_BLOCK: usize = 32;

impl Quant {
    /// The matrix's `quantization` value, with the engine's
    /// `nbits_accuracy` and whether `int8` is `MatMulInteger`'s.
    pub fn parse(s: &str, accuracy: u8, int8_per_tensor: bool) -> Option<Quant> {
        match s {
            "none" => Some(Quant::None),
            "int8" if int8_per_tensor => Some(Quant::Int8PerTensor),
            "int8" => Some(Quant::Int8 { accuracy }),
            "int4" => Some(Quant::Int4 { accuracy }),
            _ => None,
        }
    }

    /// How the projections run, for the engine's description.
    pub fn describe(self) -> Option<String> {
        match self {
            Quant::None => None,
            Quant::Int8 { accuracy } => Some(format!(
                "MatMulNBits 8-bit, blocks of {INT4_BLOCK}, accuracy_level {accuracy}"
            )),
            Quant::Int8PerTensor => {
                Some("DynamicQuantizeLinear + MatMulInteger, per-column 7-bit weights".into())
            }
            Quant::Int4 { accuracy } => Some(format!(
                "MatMulNBits 4-bit, blocks of {INT4_BLOCK}, accuracy_level {accuracy}"
            )),
        }
    }

    /// What goes into the graph cache's key (empty for `None`, so the f32
    /// graphs keep their keys), with [`QUANT_FORMAT`].
    pub fn key(self) -> String {
        match self {
            Quant::None => String::new(),
            Quant::Int8 { accuracy } => {
                format!("quant=int8 nbits accuracy={accuracy} format={QUANT_FORMAT}\n")
            }
            Quant::Int8PerTensor => format!("quant=int8 per-tensor format={QUANT_FORMAT}\n"),
            Quant::Int4 { accuracy } => {
                format!("quant=int4 accuracy={accuracy} format={QUANT_FORMAT}\n")
            }
        }
    }
}

/// The int8 weights' largest magnitude: 7 bits, ONNX Runtime's
/// `reduce_range`. Its x86-64 U8S8 kernels multiply with `vpmaddubsw`,
/// which adds two u8 × s8 products into a saturating i16: with full-range
/// weights (±127) a pair of large activations overflows it (255 · 127 · 2
/// is above 32767) and the product is silently clipped, so ORT's own quantizer
/// keeps the weights within ±63 on that hardware.
pub const INT8_MAX: f32 = 63.0;

/// Per-column symmetric int8 of `w` (`[k, n]` row-major): the int8 matrix
/// (same layout) and the `n` column scales.
pub fn int8_per_column(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut amax = vec![0f32; n];
    for row in w.chunks_exact(n).take(k) {
        for (a, v) in amax.iter_mut().zip(row) {
            *a = a.max(v.abs());
        }
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&a| if a > 0.0 { a / INT8_MAX } else { 1.0 })
        .collect();
    let inv: Vec<f32> = scales.iter().map(|s| 1.0 / s).collect();
    let q = w
        .chunks_exact(n)
        .flat_map(|row| {
            row.iter()
                .zip(&inv)
                .map(|(v, i)| (v * i).round().clamp(-INT8_MAX, INT8_MAX) as i8)
        })
        .collect();
    (q, scales)
}

/// `MatMulNBits`' blocks of a weight: the quantized bytes, one scale per
/// block, and (asymmetric only) the packed zero points.
pub struct Blocks {
    pub packed: Vec<u8>,
    pub scales: Vec<f32>,
    pub zero_points: Option<Vec<u8>>,
}

/// `MatMulNBits`' layout of `w_rows` (`[n, k]` row-major, one row per
/// output) at `bits` (4 or 8): `[n, blocks, 32 · bits / 8]` bytes (4 bits:
/// element `2i` in the low nibble of byte `i`, `2i + 1` in the high one; a
/// last partial block is padded with the zero point) and `n × blocks`
/// scales.
///
/// * symmetric: ORT's default zero point `2^(bits-1)`, as llama.cpp's
///   Q4_0: the block's largest-magnitude weight `m` gives the scale
///   `m / -2^(bits-1)`;
/// * asymmetric (`zero_points`): the block's range, widened to hold 0,
///   spread over all `2^bits` levels (scale `(max - min) / (2^bits - 1)`,
///   zero point `round(-min / scale)`), as ONNX Runtime's own block
///   quantizer does by default; the zero points are packed as the weights
///   are, `ceil(blocks · bits / 8)` bytes per row.
pub fn nbits_blocks(w_rows: &[f32], n: usize, k: usize, bits: u32, asymmetric: bool) -> Blocks {
    let blocks = k.div_ceil(INT4_BLOCK);
    let mid = (1u32 << (bits - 1)) as f32;
    let top = ((1u32 << bits) - 1) as f32;
    let mut packed = Vec::with_capacity(n * blocks * INT4_BLOCK * bits as usize / 8);
    let mut scales = Vec::with_capacity(n * blocks);
    let mut zps = Vec::new();
    for row in w_rows.chunks_exact(k).take(n) {
        let mut row_zps = Vec::with_capacity(blocks);
        for b in 0..blocks {
            let block = &row[b * INT4_BLOCK..((b + 1) * INT4_BLOCK).min(k)];
            let (d, zero) = if asymmetric {
                let lo = block.iter().copied().fold(0f32, f32::min);
                let hi = block.iter().copied().fold(0f32, f32::max);
                let d = (hi - lo) / top;
                let zero = if d > 0.0 {
                    (-lo / d).round().clamp(0.0, top)
                } else {
                    mid
                };
                (d, zero)
            } else {
                let m = block
                    .iter()
                    .copied()
                    .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                (m / -mid, mid)
            };
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            scales.push(d);
            row_zps.push(zero as u8);
            let mut q = [zero as u8; INT4_BLOCK];
            for (qi, v) in q.iter_mut().zip(block) {
                *qi = ((v * id).round() + zero).clamp(0.0, top) as u8;
            }
            if bits == 4 {
                packed.extend(q.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
            } else {
                packed.extend_from_slice(&q);
            }
        }
        if bits == 4 {
            zps.extend(
                row_zps
                    .chunks(2)
                    .map(|p| p[0] | (p.get(1).copied().unwrap_or(0) << 4)),
            );
        } else {
            zps.extend_from_slice(&row_zps);
        }
    }
    Blocks {
        packed,
        scales,
        zero_points: asymmetric.then_some(zps),
    }
}

/// `w` (`[rows, cols]` row-major) transposed.
pub fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// A weight given either way round.
pub enum Weight<'a> {
    /// `[k, n]`: input rows (a `MatMul`'s right operand).
    InOut(&'a [f32]),
    /// `[n, k]`: one row per output (`nn.Linear`'s and the embedding's
    /// layout).
    OutIn(&'a [f32]),
}

impl Builder {
    /// `x @ W` for a weight of `k` inputs and `n` outputs, quantized as
    /// `quant` (not `None`: the f32 graphs keep their own ops); `name`
    /// labels the initializers.
    pub(crate) fn quantized_matmul(
        &mut self,
        x: &str,
        name: &str,
        w: Weight<'_>,
        k: usize,
        n: usize,
        quant: Quant,
    ) -> String {
        match quant {
            Quant::None => unreachable!("f32 projections keep their MatMul/Gemm"),
            Quant::Int8PerTensor => {
                let t;
                let w_kn = match w {
                    Weight::InOut(w) => w,
                    Weight::OutIn(w) => {
                        t = transpose(w, n, k);
                        &t
                    }
                };
                let (q, scales) = int8_per_column(w_kn, k, n);
                let raw: Vec<u8> = q.iter().map(|&v| v as u8).collect();
                let wq = self.raw_weight(&format!("{name}.int8"), &[k, n], DataType::Int8, raw);
                let raw: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
                let ws = self.raw_weight(&format!("{name}.scale"), &[n], DataType::Float, raw);
                let (xq, xs, xz) = (self.fresh("xq"), self.fresh("xs"), self.fresh("xz"));
                self.op_to("DynamicQuantizeLinear", &[x], &[&xq, &xs, &xz], vec![]);
                let mi = self.op("MatMulInteger", &[&xq, &wq, &xz], vec![]);
                let f = self.op("Cast", &[&mi], vec![attr_i("to", DataType::Float as i64)]);
                let s = self.op("Mul", &[&xs, &ws], vec![]);
                self.op("Mul", &[&f, &s], vec![])
            }
            Quant::Int8 { accuracy } | Quant::Int4 { accuracy } => {
                let bits = if matches!(quant, Quant::Int8 { .. }) {
                    8
                } else {
                    4
                };
                let t;
                let w_nk = match w {
                    Weight::OutIn(w) => w,
                    Weight::InOut(w) => {
                        t = transpose(w, k, n);
                        &t
                    }
                };
                let q = nbits_blocks(w_nk, n, k, bits, asymmetric(bits));
                let blocks = k.div_ceil(INT4_BLOCK);
                let wq = self.raw_weight(
                    &format!("{name}.int{bits}"),
                    &[n, blocks, INT4_BLOCK * bits as usize / 8],
                    DataType::Uint8,
                    q.packed,
                );
                let raw: Vec<u8> = q.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
                let ws =
                    self.raw_weight(&format!("{name}.scale"), &[n, blocks], DataType::Float, raw);
                let mut inputs = vec![x.to_string(), wq, ws];
                if let Some(zp) = q.zero_points {
                    let len = zp.len();
                    inputs.push(self.raw_weight(
                        &format!("{name}.zero_point"),
                        &[len],
                        DataType::Uint8,
                        zp,
                    ));
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                self.op_domain(
                    "MatMulNBits",
                    "com.microsoft",
                    &inputs,
                    vec![
                        attr_i("K", k as i64),
                        attr_i("N", n as i64),
                        attr_i("bits", bits as i64),
                        attr_i("block_size", INT4_BLOCK as i64),
                        attr_i("accuracy_level", accuracy as i64),
                    ],
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_columns_round_trip_within_half_a_step() {
        let (k, n) = (5, 3);
        let w: Vec<f32> = (0..k * n)
            .map(|i| (i as f32 * 0.37).sin() * (1 + i % 3) as f32)
            .collect();
        let (q, s) = int8_per_column(&w, k, n);
        for r in 0..k {
            for c in 0..n {
                let back = q[r * n + c] as f32 * s[c];
                assert!((back - w[r * n + c]).abs() <= s[c] / 2.0 + 1e-6);
            }
        }
        // each column's largest magnitude maps to ±INT8_MAX
        for c in 0..n {
            assert_eq!(
                (0..k).map(|r| q[r * n + c].unsigned_abs()).max(),
                Some(INT8_MAX as u8)
            );
        }
    }

    #[test]
    fn eight_bit_blocks_round_trip_within_half_a_step() {
        let (n, k) = (3, 64);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 11 % 37) as f32 - 18.0) / 5.0)
            .collect();
        let Blocks { packed, scales, .. } = nbits_blocks(&w, n, k, 8, false);
        assert_eq!((packed.len(), scales.len()), (n * k, n * 2));
        for (i, (&q, v)) in packed.iter().zip(&w).enumerate() {
            let d = scales[i / INT4_BLOCK];
            assert!(((q as f32 - 128.0) * d - v).abs() <= d.abs() + 1e-6);
        }
        // asymmetric: half a step everywhere, the zero points one per block
        let b = nbits_blocks(&w, n, k, 8, true);
        let zp = b.zero_points.unwrap();
        assert_eq!(zp.len(), n * 2);
        for (i, (&q, v)) in b.packed.iter().zip(&w).enumerate() {
            let (d, z) = (b.scales[i / INT4_BLOCK], zp[i / INT4_BLOCK] as f32);
            assert!(((q as f32 - z) * d - v).abs() <= d.abs() / 2.0 + 1e-6);
        }
    }

    #[test]
    fn int4_blocks_pack_low_nibble_first_and_round_trip() {
        let (n, k) = (2, 40); // a full block and a partial one
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 4.0)
            .collect();
        let Blocks { packed, scales, .. } = nbits_blocks(&w, n, k, 4, false);
        assert_eq!(packed.len(), n * 2 * 16);
        assert_eq!(scales.len(), n * 2);
        for r in 0..n {
            for i in 0..k {
                let (b, j) = (i / INT4_BLOCK, i % INT4_BLOCK);
                let byte = packed[(r * 2 + b) * 16 + j / 2];
                let nib = if j % 2 == 0 { byte & 15 } else { byte >> 4 };
                let d = scales[r * 2 + b];
                let back = (nib as f32 - 8.0) * d;
                assert!(
                    // half a step, or one for the clamped end opposite the
                    // block's extreme (Q4_0's range is -8..7 steps)
                    (back - w[r * k + i]).abs() <= d.abs() + 1e-6,
                    "row {r} col {i}: {back} vs {}",
                    w[r * k + i]
                );
            }
            // padding of the partial block is the zero point
            let last = &packed[(r * 2 + 1) * 16 + 4..(r * 2 + 2) * 16];
            assert!(last.iter().all(|&b| b == 0x88));
        }
        // asymmetric: within half a step; two zero points in one byte
        let b = nbits_blocks(&w, n, k, 4, true);
        let zp = b.zero_points.unwrap();
        assert_eq!(zp.len(), n);
        for r in 0..n {
            for i in 0..k {
                let (blk, j) = (i / INT4_BLOCK, i % INT4_BLOCK);
                let byte = b.packed[(r * 2 + blk) * 16 + j / 2];
                let nib = if j % 2 == 0 { byte & 15 } else { byte >> 4 };
                let z = if blk == 0 { zp[r] & 15 } else { zp[r] >> 4 };
                let d = b.scales[r * 2 + blk];
                let back = (nib as f32 - z as f32) * d;
                assert!(
                    (back - w[r * k + i]).abs() <= d / 2.0 + 1e-6,
                    "{back} {}",
                    w[r * k + i]
                );
            }
        }
    }

    /// `x @ W` through ONNX Runtime for each quantization, against the f32
    /// product: int8 within 2% of the output's scale, int4 within 15%.
    #[test]
    fn quantized_matmuls_compute_x_times_w_in_onnx_runtime() {
        use crate::graph::{value_info, DataPlacement, Dim};
        use ort::session::Session;
        use ort::value::TensorRef;
        let (rows, k, n) = (3usize, 96usize, 40usize);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let mut want = vec![0f32; rows * n];
        for r in 0..rows {
            for c in 0..n {
                want[r * n + c] = (0..k).map(|i| x[r * k + i] * w[i * n + c]).sum();
            }
        }
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let rt = crate::runtime::load(None).expect("onnxruntime (scripts/provision)");
        for (quant, tol, layout) in [
            (Quant::Int8PerTensor, 0.02, 0),
            (Quant::Int8PerTensor, 0.02, 1),
            (Quant::Int8 { accuracy: 0 }, 0.01, 0),
            (Quant::Int8 { accuracy: 4 }, 0.02, 1),
            (Quant::Int4 { accuracy: 0 }, 0.15, 0),
            (Quant::Int4 { accuracy: 4 }, 0.15, 1),
        ] {
            let mut b = Builder::new(DataPlacement::Inline, "unused");
            let t = transpose(&w, k, n);
            let weight = if layout == 0 {
                Weight::InOut(&w)
            } else {
                Weight::OutIn(&t)
            };
            let y = b.quantized_matmul("x", "w", weight, k, n, quant);
            b.op_to("Identity", &[&y], &["y"], vec![]);
            let dims = [Dim::Fixed(1), Dim::Fixed(rows as i64), Dim::Fixed(k as i64)];
            let out = [Dim::Fixed(1), Dim::Fixed(rows as i64), Dim::Fixed(n as i64)];
            let built = b.finish(
                "q",
                "test",
                vec![value_info("x", DataType::Float, &dims)],
                vec![value_info("y", DataType::Float, &out)],
            );
            let mut s = Session::builder(&rt.env)
                .unwrap()
                .commit_from_memory(&built.encode())
                .unwrap_or_else(|e| panic!("{quant:?}: {e}"));
            let input = TensorRef::<f32>::from_array_view(([1usize, rows, k], &x[..])).unwrap();
            let outs = s.run(ort::inputs!["x" => input]).unwrap();
            let (shape, got) = outs["y"].try_extract_tensor::<f32>().unwrap();
            assert_eq!(&shape[..], &[1, rows as i64, n as i64]);
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            assert!(
                err <= tol * scale,
                "{quant:?} layout {layout}: max error {err} against output scale {scale}"
            );
        }
    }

    #[test]
    fn quant_names_and_cache_keys() {
        assert_eq!(Quant::parse("none", 4, false), Some(Quant::None));
        assert_eq!(
            Quant::parse("int4", 0, true),
            Some(Quant::Int4 { accuracy: 0 })
        );
        assert_eq!(
            Quant::parse("int8", 4, false),
            Some(Quant::Int8 { accuracy: 4 })
        );
        assert_eq!(Quant::parse("int8", 4, true), Some(Quant::Int8PerTensor));
        assert_eq!(Quant::parse("q4_0", 4, false), None);
        assert_eq!(Quant::None.key(), "");
        assert_ne!(
            Quant::Int4 { accuracy: 0 }.key(),
            Quant::Int4 { accuracy: 4 }.key()
        );
    }
}
