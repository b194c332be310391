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

use crate::gpt2::Result;
use tch::Tensor;

/// Which libtorch kernel runs the linear layers (engine option `matmul`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatMul {
    /// `addmm` on `[in, out]` weights (MKL on CPU), as PyTorch eager's
    /// `Conv1D` does.
    Addmm,
    /// oneDNN's inner product (`mkldnn_linear`) on weights converted once
    /// to oneDNN tensors; f32 on CPU only.
    OneDnn,
}

/// A linear layer `x: [N, in] -> [N, out]` with its weight in the layout
/// its kernel wants, and an optional bias `[out]`.
pub(crate) enum Linear {
    /// `w: [in, out]` dense.
    Addmm { w: Tensor, b: Option<Tensor> },
    /// `w`: oneDNN tensor `[out, in]`; `b` dense.
    OneDnn { w: Tensor, b: Option<Tensor> },
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
        }
    }

    /// Elements of the weight and bias.
    pub(crate) fn numel(&self) -> usize {
        // `size()`, not `numel()`: oneDNN tensors have sizes but no strides.
        let n = |t: &Tensor| t.size().iter().product::<i64>() as usize;
        match self {
            Linear::Addmm { w, b } | Linear::OneDnn { w, b } => n(w) + b.as_ref().map_or(0, n),
        }
    }
}
