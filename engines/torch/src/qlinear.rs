//! fbgemm's dynamic int8 linear layer, the kernel of PyTorch's
//! `torch.ao.quantization.quantize_dynamic` on x86: the weight is int8
//! (one symmetric scale per output row), packed once at load by
//! `quantized::linear_prepack`; at every call `quantized::linear_dynamic`
//! quantizes the f32 activation to 8 bits (per tensor, from its own min
//! and max), multiplies in integers (fbgemm's `vpmaddubsw` kernels) and
//! returns f32 with the bias added.
//!
//! The two ops are custom ops that libtorch_cpu registers for itself;
//! tch's generated ATen bindings do not reach them, so `cpp/qlinear.cpp`
//! (compiled by build.rs against the provisioned libtorch's headers)
//! calls them through libtorch's dispatcher and holds the packed weight
//! as an opaque handle.
//!
//! # Choices
//!
//! * **Per-channel weights**, as PyTorch's `per_channel_dynamic_qconfig`
//!   (its default `default_dynamic_qconfig` is per tensor, coarser), and
//!   the same scales as the weight-only `int8` kernel, so the two int8
//!   kernels differ only in the activations' rounding.
//! * **`reduce_range`**: activations in 7 bits, PyTorch's default for
//!   fbgemm (`vpmaddubsw` sums pairs of u8 x i8 products into i16, which
//!   8-bit activations can saturate).
//! * **fbgemm** is selected as libtorch's quantized engine once, at the
//!   first pack ([`use_fbgemm`]); a libtorch without it makes the layer
//!   fail with the engines it has.
//!
//! # Costs, measured (docs/models.md, docs/performance-log.md)
//!
//! On SmolLM2-135M f32 (AMD EPYC, 2 threads) the step is 2.6–4.3x faster
//! than f32, but one 7-bit scale per activation tensor cannot hold LLM
//! activations' outlier channels: perplexity 23.96 against 8.13. With
//! `reduce_range` off the AVX2 sums overflow (perplexity in the millions).
//! libtorch 2.13 prints, once, that quantized tensor creation
//! (`quantize_per_channel`) is deprecated (pytorch#184982): this path is
//! tied to the pinned libtorch and may need torchao's ops in a later one.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::NonNull;
use tch::{Kind, TchError, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn em_qlinear_use_fbgemm(err: *mut c_char, n: usize) -> c_int;
    fn em_qlinear_prepack(
        w: *const C_tensor,
        bias: *const C_tensor,
        err: *mut c_char,
        n: usize,
    ) -> *mut c_void;
    fn em_qlinear_dynamic(
        x: *const C_tensor,
        packed: *const c_void,
        reduce_range: c_int,
        err: *mut c_char,
        n: usize,
    ) -> *mut C_tensor;
    fn em_qlinear_free(packed: *mut c_void);
}

const ERR_BYTES: usize = 1024;

/// Runs `f` with an error buffer; `Err` with its text when `ok` is false.
fn with_error<T>(
    what: &str,
    f: impl FnOnce(*mut c_char, usize) -> Option<T>,
) -> Result<T, TchError> {
    let mut buf = vec![0 as c_char; ERR_BYTES];
    match f(buf.as_mut_ptr(), buf.len()) {
        Some(v) => Ok(v),
        None => {
            // SAFETY: the shim writes a NUL-terminated string into the
            // buffer (or leaves it zeroed).
            let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
            Err(TchError::Torch(format!("{what}: {}", msg.trim())))
        }
    }
}

/// Selects fbgemm as libtorch's quantized engine (process-wide, once);
/// an error names the engines this libtorch has instead.
pub fn use_fbgemm() -> Result<(), TchError> {
    static CHOSEN: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            with_error("fbgemm", |err, n| {
                // SAFETY: a plain call with a valid buffer.
                (unsafe { em_qlinear_use_fbgemm(err, n) } == 1).then_some(())
            })
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(TchError::Torch)
}

/// A weight packed for `quantized::linear_dynamic`.
pub struct Packed {
    handle: NonNull<c_void>,
    /// `(out, in)`.
    dims: (i64, i64),
    /// Bytes of the int8 weight and its scales, plus the bias.
    bytes: usize,
}

// SAFETY: the handle owns a c10::IValue holding fbgemm's packed weight,
// which linear_dynamic only reads (PyTorch runs it from many threads);
// it is freed once, in Drop.
unsafe impl Send for Packed {}
unsafe impl Sync for Packed {}

impl Drop for Packed {
    fn drop(&mut self) {
        // SAFETY: the handle came from em_qlinear_prepack and is freed once.
        unsafe { em_qlinear_free(self.handle.as_ptr()) }
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({}x{} int8, fbgemm)", self.dims.0, self.dims.1)
    }
}

impl Packed {
    /// Quantizes `w: [out, in]` (any float kind) per output row to int8
    /// with the symmetric `scales: [out]` (`max |row| / 127`) and packs
    /// it with `bias: [out]`.
    pub fn new(w: &Tensor, scales: &Tensor, bias: Option<&Tensor>) -> Result<Self, TchError> {
        use_fbgemm()?;
        let (out, inp) = match w.size().as_slice() {
            &[o, i] => (o, i),
            s => {
                return Err(TchError::Shape(format!(
                    "int8 dynamic: weight of shape {s:?}"
                )))
            }
        };
        let scales = scales.f_to_kind(Kind::Double)?.f_contiguous()?;
        let zeros = Tensor::f_zeros([out], (Kind::Int64, w.device()))?;
        let q = w
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_quantize_per_channel(&scales, &zeros, 0, Kind::QInt8)?;
        let bias = bias
            .map(|b| b.f_to_kind(Kind::Float).and_then(|b| b.f_contiguous()))
            .transpose()?;
        let handle = with_error("quantized::linear_prepack", |err, n| {
            let b = bias.as_ref().map_or(std::ptr::null(), |b| b.as_ptr());
            // SAFETY: valid tensors for the duration of the call; the
            // shim copies what it keeps.
            NonNull::new(unsafe { em_qlinear_prepack(q.as_ptr(), b, err, n) })
        })?;
        let bytes =
            (out * inp) as usize + out as usize * 4 + bias.as_ref().map_or(0, |_| out as usize * 4);
        Ok(Packed {
            handle,
            dims: (out, inp),
            bytes,
        })
    }

    /// `x: [N, in]` f32 → `[N, out]` f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let x = x.f_contiguous()?;
        with_error("quantized::linear_dynamic", |err, n| {
            // SAFETY: `x` and the handle are valid for the call; the
            // returned tensor is owned by us (freed by tch's Drop).
            let t = unsafe { em_qlinear_dynamic(x.as_ptr(), self.handle.as_ptr(), 1, err, n) };
            (!t.is_null()).then(|| unsafe { Tensor::from_ptr(t) })
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (i64, i64) {
        self.dims
    }

    /// Bytes held: the int8 weight, f32 scales and bias (fbgemm's packed
    /// copy is the same size, padded).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
