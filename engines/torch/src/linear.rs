//! The linear layers of every model, on one of two libtorch kernels (the
//! engine option `matmul`, [`MatMul`]):
//!
//! * `onednn` (f32 on CPU, the default there): the weight is converted
//!   once at load into a oneDNN tensor `[out, in]` (`to_mkldnn`) and the
//!   layer is `mkldnn_linear`, oneDNN's inner product — the kernel of
//!   PyTorch's `torch.utils.mkldnn` and of IPEX. On this machine's AMD CPU
//!   it runs batch-8 decode shapes about twice as fast as MKL's sgemm,
//!   which re-packs the whole weight on every call at small M and takes
//!   its generic code paths on non-Intel CPUs (figures in
//!   engines/torch/README.md).
//! * `addmm`: MKL's sgemm/sgemv through `addmm` (or `mm` without bias)
//!   on an `[in, out]` weight — GPT-2's Conv1D layout as stored, what
//!   PyTorch's own `Conv1D` calls; `nn.Linear` weights (`[out, in]`, the
//!   Llama family's) are transposed once at load into that layout rather
//!   than multiplied as the transposed view `F.linear` uses, because MKL
//!   runs the transposed view at half the bandwidth on this CPU (measured
//!   on GPT-2's lm_head: 11.3 vs 5.8 ms per batch-1 step, `--example
//!   ops`). Kept for other dtypes and devices and for comparison.
//!
//! And three quantized kernels (`quantization: int8` / `int4`):
//!
//! * `Int8Dynamic` (`int8` with f32 activations, the default there):
//!   fbgemm's dynamic quantization, `quantized::linear_dynamic`, the
//!   kernel of PyTorch's `quantize_dynamic`: int8 weights with one
//!   symmetric scale per output row, the activation quantized to 8 bits
//!   at every call, integer products. A custom op tch's bindings do not
//!   reach, so it goes through the C++ shim of [`crate::qlinear`].
//! * `Int8`: `_weight_int8pack_mm` (torchao's `int8_weight_only`): the
//!   same int8 weight, activations in the model's dtype (`f32` or
//!   `bf16`); the only int8 kernel for bf16, and `int8_kernel:
//!   weight_only` for f32.
//! * `Int4`: `_weight_int4pack_mm_for_cpu`: 4-bit weights in groups of
//!   [`INT4_GROUP`] along the input, each group with a scale and a zero
//!   (asymmetric, `w = (q - 8) * scale + zero`), packed once at load by
//!   `_convert_weight_to_int4pack_for_cpu`.
//!
//! Biases stay dense in the model's dtype.

use crate::gpt2::Result;
use tch::Tensor;

/// Input elements per scale and zero of the int4 kernel.
pub const INT4_GROUP: i64 = 32;

/// Which libtorch kernel runs the linear layers (engine option `matmul`,
/// or the quantization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatMul {
    /// `addmm` on `[in, out]` weights (MKL on CPU), as PyTorch eager's
    /// `Conv1D` does.
    Addmm,
    /// oneDNN's inner product (`mkldnn_linear`) on weights converted once
    /// to oneDNN tensors; f32 on CPU only.
    OneDnn,
    /// Weight-only int8 (`quantization: int8` in bf16, or with
    /// `int8_kernel: weight_only`).
    Int8,
    /// fbgemm's dynamic int8 (`quantization: int8` in f32).
    Int8Dynamic,
    /// Weight-only int4 in groups of [`INT4_GROUP`] (`quantization: int4`).
    Int4,
}

/// The kernel of each class of linear layer, in the order `matmul: auto`
/// times them: the attention's input and output projections, the MLP's
/// input and output, and the lm_head. `auto` may mix kernels across
/// classes; a `matmul` option or a quantization sets one for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    pub attn_in: MatMul,
    pub attn_out: MatMul,
    pub mlp_in: MatMul,
    pub mlp_out: MatMul,
    pub head: MatMul,
}

impl Kernels {
    /// One kernel for every class.
    pub fn all(m: MatMul) -> Self {
        Kernels {
            attn_in: m,
            attn_out: m,
            mlp_in: m,
            mlp_out: m,
            head: m,
        }
    }

    /// From the five classes in order (`None` for another count).
    pub fn from_classes(k: &[MatMul]) -> Option<Self> {
        match *k {
            [attn_in, attn_out, mlp_in, mlp_out, head] => Some(Kernels {
                attn_in,
                attn_out,
                mlp_in,
                mlp_out,
                head,
            }),
            _ => None,
        }
    }

    /// The five classes in order.
    pub fn classes(&self) -> [MatMul; 5] {
        [
            self.attn_in,
            self.attn_out,
            self.mlp_in,
            self.mlp_out,
            self.head,
        ]
    }

    /// The kernel when every class has the same one.
    pub fn uniform(&self) -> Option<MatMul> {
        let c = self.classes();
        c.iter().all(|&k| k == c[0]).then_some(c[0])
    }

    /// Whether some class runs `m`.
    pub fn uses(&self, m: MatMul) -> bool {
        self.classes().contains(&m)
    }
}

/// A linear layer `x: [N, in] -> [N, out]` with its weight in the layout
/// its kernel wants, and an optional bias `[out]`.
pub(crate) enum Linear {
    /// `w: [in, out]` dense.
    Addmm { w: Tensor, b: Option<Tensor> },
    /// `w`: oneDNN tensor `[out, in]`; `b` dense.
    OneDnn { w: Tensor, b: Option<Tensor> },
    /// `w`: int8 `[out, in]`, `scales`: `[out]` in the model's dtype.
    Int8 {
        w: Tensor,
        scales: Tensor,
        b: Option<Tensor>,
    },
    /// fbgemm's packed int8 weight (and its bias).
    Int8Dynamic(crate::qlinear::Packed),
    /// `w`: the packed 4-bit weight; `sz`: `[in / INT4_GROUP, out, 2]`
    /// scales and zeros; `out` features.
    Int4 {
        w: Tensor,
        sz: Tensor,
        out: i64,
        b: Option<Tensor>,
    },
}

/// The symmetric int8 scale of each row of `w: [out, in]` (f32 `[out,
/// 1]`): `max |row| / 127`.
fn row_scales(w: &Tensor) -> Result<Tensor> {
    w.f_to_kind(tch::Kind::Float)?
        .f_abs()?
        .f_amax([1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?
        .f_div_scalar(127.0)
}

/// `w: [out, in]` as int8 with a symmetric scale per row.
fn int8(w: &Tensor) -> Result<(Tensor, Tensor)> {
    let kind = w.kind();
    let w = w.f_to_kind(tch::Kind::Float)?;
    let scales = row_scales(&w)?;
    let q = w
        .f_div(&scales)?
        .f_round()?
        .f_clamp(-127, 127)?
        .f_to_kind(tch::Kind::Int8)?;
    Ok((q, scales.f_squeeze_dim(1)?.f_to_kind(kind)?))
}

/// `w: [out, in]` as 4-bit groups of [`INT4_GROUP`] along `in`, packed for
/// the CPU kernel, with `[in / group, out, 2]` scales and zeros.
fn int4(w: &Tensor) -> Result<(Tensor, Tensor)> {
    let kind = w.kind();
    let (out, inp) = match w.size().as_slice() {
        &[o, i] => (o, i),
        s => return Err(tch::TchError::Shape(format!("int4: weight of shape {s:?}"))),
    };
    if inp % INT4_GROUP != 0 {
        return Err(tch::TchError::Shape(format!(
            "int4: {inp} input features are not a multiple of the group of {INT4_GROUP}"
        )));
    }
    let g = w
        .f_to_kind(tch::Kind::Float)?
        .f_reshape([out, inp / INT4_GROUP, INT4_GROUP])?;
    let lo = g.f_amin([2i64].as_slice(), true)?;
    let hi = g.f_amax([2i64].as_slice(), true)?;
    let scale = hi.f_sub(&lo)?.f_div_scalar(15.0)?.f_clamp_min(1e-12)?;
    let q = g
        .f_sub(&lo)?
        .f_div(&scale)?
        .f_round()?
        .f_clamp(0, 15)?
        .f_reshape([out, inp])?
        .f_to_kind(tch::Kind::Int)?;
    // w = (q - 8) * scale + zero  <=>  zero = lo + 8 * scale
    let zero = lo.f_add(&scale.f_mul_scalar(8.0)?)?;
    let sz = Tensor::f_stack(&[scale.f_squeeze_dim(2)?, zero.f_squeeze_dim(2)?], 2)?
        .f_transpose(0, 1)?
        .f_contiguous()?
        .f_to_kind(kind)?;
    let packed = q.f_internal_convert_weight_to_int4pack_for_cpu(8)?;
    Ok((packed, sz))
}

impl Linear {
    /// From HF's Conv1D weight `[in, out]` (GPT-2).
    pub(crate) fn from_in_out(w: Tensor, b: Option<Tensor>, mm: MatMul) -> Result<Self> {
        Ok(match mm {
            MatMul::Addmm => Linear::Addmm { w, b },
            MatMul::OneDnn => Linear::OneDnn {
                w: w.f_tr()?.f_contiguous()?.f_to_mkldnn(None)?,
                b,
            },
            MatMul::Int8 | MatMul::Int8Dynamic | MatMul::Int4 => {
                Self::from_out_in(w.f_tr()?.f_contiguous()?, b, mm)?
            }
        })
    }

    /// From an `nn.Linear` weight `[out, in]` (the Llama family).
    pub(crate) fn from_out_in(w: Tensor, b: Option<Tensor>, mm: MatMul) -> Result<Self> {
        Ok(match mm {
            MatMul::Addmm => Linear::Addmm {
                w: w.f_tr()?.f_contiguous()?,
                b,
            },
            MatMul::OneDnn => Linear::OneDnn {
                w: w.f_contiguous()?.f_to_mkldnn(None)?,
                b,
            },
            MatMul::Int8 => {
                let (w, scales) = int8(&w)?;
                Linear::Int8 { w, scales, b }
            }
            MatMul::Int8Dynamic => {
                let scales = row_scales(&w)?.f_squeeze_dim(1)?;
                Linear::Int8Dynamic(crate::qlinear::Packed::new(&w, &scales, b.as_ref())?)
            }
            MatMul::Int4 => {
                let out = w.size()[0];
                let (w, sz) = int4(&w)?;
                Linear::Int4 { w, sz, out, b }
            }
        })
    }

    /// `x: [N, in]` → `[N, out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Addmm { w, b: Some(b) } => b.f_addmm(x, w),
            Linear::Addmm { w, b: None } => x.f_mm(w),
            Linear::OneDnn { w, b } => x
                .f_contiguous()?
                .f_to_mkldnn(None)?
                .f_mkldnn_linear(w, b.as_ref())?
                .f_to_dense(None, false),
            Linear::Int8 { w, scales, b } => {
                let y = x.f_contiguous()?.f_internal_weight_int8pack_mm(w, scales)?;
                match b {
                    Some(b) => y.f_add(b),
                    None => Ok(y),
                }
            }
            Linear::Int8Dynamic(p) => p.forward(x),
            Linear::Int4 { w, sz, out, b } => {
                let y = x
                    .f_contiguous()?
                    .f_internal_weight_int4pack_mm_for_cpu(w, INT4_GROUP, sz)?;
                debug_assert_eq!(y.size().last().copied(), Some(*out));
                match b {
                    Some(b) => y.f_add(b),
                    None => Ok(y),
                }
            }
        }
    }

    /// Bytes the weight and bias hold as stored.
    pub(crate) fn bytes(&self) -> usize {
        let bytes =
            |t: &Tensor| t.size().iter().product::<i64>() as usize * t.kind().elt_size_in_bytes();
        let bias = |b: &Option<Tensor>| b.as_ref().map_or(0, bytes);
        match self {
            Linear::Addmm { w, b } | Linear::OneDnn { w, b } => bytes(w) + bias(b),
            Linear::Int8 { w, scales, b } => bytes(w) + bytes(scales) + bias(b),
            Linear::Int8Dynamic(p) => p.bytes(),
            Linear::Int4 { w, sz, b, .. } => bytes(w) + bytes(sz) + bias(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// `x @ w_dq^T` with `w_dq` the weight as the quantizer rounds it:
    /// each quantized kernel must compute exactly that (to f32 rounding),
    /// whatever its packing.
    #[test]
    fn the_quantized_kernels_compute_with_the_rounded_weights() {
        tch::manual_seed(3);
        let w = Tensor::randn([64, 96], (Kind::Float, Device::Cpu));
        let x = Tensor::randn([3, 96], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([64], (Kind::Float, Device::Cpu));
        let close = |got: &Tensor, want: &Tensor| {
            let d = (got - want).abs().max().double_value(&[]);
            assert!(d < 1e-3, "max |diff| {d}");
        };
        // int8: w_dq = round(w / s) * s, s = max |row| / 127
        let s = w.abs().amax([1i64].as_slice(), true) / 127.0;
        let dq = (&w / &s).round().clamp(-127, 127) * &s;
        let l =
            Linear::from_out_in(w.shallow_clone(), Some(b.shallow_clone()), MatMul::Int8).unwrap();
        close(&l.forward(&x).unwrap(), &(x.matmul(&dq.tr()) + &b));
        // int4: per group of 32, w_dq = round((w - lo) / s) * s + lo, s = (hi - lo) / 15
        let g = w.reshape([64, 3, 32]);
        let lo = g.amin([2i64].as_slice(), true);
        let hi = g.amax([2i64].as_slice(), true);
        let s = (&hi - &lo) / 15.0;
        let dq = (((&g - &lo) / &s).round().clamp(0, 15) * &s + &lo).reshape([64, 96]);
        let l = Linear::from_out_in(w.shallow_clone(), None, MatMul::Int4).unwrap();
        close(&l.forward(&x).unwrap(), &x.matmul(&dq.tr()));
        // int8 dynamic: the same rounded weights, and the activation
        // rounded per tensor to 7 bits (quint8 0..=127, reduce_range) with
        // PyTorch's choose_qparams: the range widened to hold 0, scale
        // (max - min) / 127, zero point round(-min / scale)
        let s = w.abs().amax([1i64].as_slice(), true) / 127.0;
        let dq = (&w / &s).round().clamp(-127, 127) * &s;
        let (lo, hi) = (
            x.min().double_value(&[]).min(0.0),
            x.max().double_value(&[]).max(0.0),
        );
        let scale = (hi - lo) / 127.0;
        let zero = (-lo / scale).round().clamp(0.0, 127.0);
        let xq = ((&x / scale).round() + zero).clamp(0, 127);
        let xdq = (xq - zero) * scale;
        let l = Linear::from_out_in(
            w.shallow_clone(),
            Some(b.shallow_clone()),
            MatMul::Int8Dynamic,
        )
        .unwrap();
        let got = l.forward(&x).unwrap();
        close(&got, &(xdq.matmul(&dq.tr()) + &b));
        // the activations' rounding is real too: it differs from weight-only
        assert!(
            (&got - (x.matmul(&dq.tr()) + &b))
                .abs()
                .max()
                .double_value(&[])
                > 1e-3
        );
        // and the rounding is real: the f32 product differs
        let exact = x.matmul(&w.tr());
        assert!((&exact - x.matmul(&dq.tr())).abs().max().double_value(&[]) > 1e-3);
    }
}
