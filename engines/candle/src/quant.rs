//! Quantized linear layers: `quantization:` `q8_0`, `q4_0`, `q4_1`, `q4_k`
//! (f32 weights quantized at load) and `gguf` (the blocks of the GGUF file
//! a folder was imported from, as shipped; see [`crate::gguf`]).
//!
//! # What is quantized
//!
//! Only the weights of the linear layers (attention q/k/v/o, the MLP, and
//! the lm_head), in candle-core's ggml block formats ([`QTensor::quantize`]
//! quantizes f32 weights; GGUF blocks are read as stored): activations,
//! the KV cache, embeddings, norms and biases stay f32. A matmul quantizes
//! each activation row to the block type's 8-bit partner (`Q8_0`, `Q8_1`
//! or `Q8K`) and takes candle's integer dot products
//! ([`GgmlType::vec_dot`]; for `Q4_0`, `Q4_1` and `Q8_0` on AVX2, the
//! kernels of [`crate::qpack`] over rows repacked in groups of eight), as
//! llama.cpp does, so the logits differ from f32's by both the weights'
//! and the activations' rounding.
//!
//! * **The tied lm_head is quantized too** (GPT-2, SmolLM2, Llama 3.2): it
//!   is a fifth of SmolLM2's weights, streamed once per decode step, and
//!   llama.cpp quantizes it as well. Token embeddings are then looked up in
//!   a separate f32 table (exact: the rows of the checkpoint), which costs
//!   the table's memory once more (counted in `weight_bytes`) but no
//!   bandwidth per step beyond the rows read.
//! * **A row length a block type cannot split** falls back per tensor, as
//!   llama.cpp's quantizer does: `q4_k` (256-value super-blocks) on a
//!   matrix whose input dimension is not a multiple of 256 (SmolLM2's 576)
//!   uses `q5_0` (llama.cpp's choice for that case); an input dimension
//!   that is not a multiple of 32 stays f32 (the panel gemm of
//!   [`crate::matmul`]). `weight_bytes` counts what is actually held.
//! * **Fused projections** (Llama's q/k/v and gate/up) are one quantized
//!   matrix: rows of the same block type are concatenated as bytes (a row
//!   is whole blocks). A GGUF whose parts differ in type (Q4_K_M files mix
//!   Q4_K and Q6_K) runs each part as its own matmul and concatenates the
//!   outputs.
//!
//! # Why not candle's `QMatMul`
//!
//! candle 0.11.1's [`candle_core::quantized::QMatMul`] runs on its own
//! global "barrier pool" of spinning workers (`CANDLE_NUM_THREADS`, else
//! the core count), not on the model's rayon pool: the engine option
//! `threads` would not size it, and its workers spin while the model's
//! own pool runs the fused ops, so the two pools oversubscribe the cores.
//! Measured here on 2 cores with another process busy, SmolLM2-135M's
//! batch-1 decode took 210 ms per token that way against 26 ms with
//! `CANDLE_NUM_THREADS=1`. So the matmul loop is this module's, on the
//! model's pool (the output columns split into runs, each weight row read
//! once per call, sequentially), and only the block types, their
//! quantization and their dot products are candle's. It also means
//! candle's lazily re-tiled copies of some matrices (AVX-512 VNNI kernels)
//! are never made: [`LinearWeight::bytes`] is exactly the blocks held.
//!
//! The f32 path (`quantization: none`) is untouched: a
//! [`LinearWeight::Dense`] is the [`Weight`] it always was. The engine
//! option `kernels: stock` (candle's own ops, to measure out-of-the-box
//! candle) applies to the f32 ops around the quantized matmuls, which
//! always run this module's loop.

use crate::matmul::Weight;
use crate::qpack::Packed;
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QStorage, QTensor};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use engine_api::EngineError;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

/// What `quantization:` names, as the engine lists them in `info()`.
pub const NAMES: [&str; 6] = ["none", "q8_0", "q4_0", "q4_1", "q4_k", "gguf"];

/// How a model's linear weights are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// f32/f16/bf16 as loaded (`none`).
    None,
    /// f32 weights quantized at load to this block type.
    Ggml(GgmlDType),
    /// The GGUF file the folder was imported from, as shipped.
    Gguf,
}

impl Quantization {
    /// Parses a matrix's `quantization` (`none`, `q8_0`, `q4_0`, `q4_1`,
    /// `q4_k`, `gguf`).
    pub fn parse(s: &str) -> std::result::Result<Self, EngineError> {
        Ok(match s {
            "none" => Quantization::None,
            "q8_0" => Quantization::Ggml(GgmlDType::Q8_0),
            "q4_0" => Quantization::Ggml(GgmlDType::Q4_0),
            "q4_1" => Quantization::Ggml(GgmlDType::Q4_1),
            "q4_k" => Quantization::Ggml(GgmlDType::Q4K),
            "gguf" => Quantization::Gguf,
            other => {
                return Err(EngineError::unsupported(format!(
                    "quantization {other:?} is not one candle runs ({})",
                    NAMES.join(", ")
                )))
            }
        })
    }

    /// The block type f32 weights are quantized to, if any.
    pub fn block_type(self) -> Option<GgmlDType> {
        match self {
            Quantization::Ggml(t) => Some(t),
            _ => None,
        }
    }
}

/// The block type a `[n, k]` matrix is quantized to when `want` is asked
/// for: `want` when `k` splits into its blocks, else llama.cpp's fallback
/// (`q4_k` -> `q5_0`), else `None` (the matrix stays f32).
pub fn effective_type(want: GgmlDType, k: usize) -> Option<GgmlDType> {
    if k > 0 && k.is_multiple_of(want.block_size()) {
        return Some(want);
    }
    let fallback = match want {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => return None,
    };
    (k > 0 && k.is_multiple_of(fallback.block_size())).then_some(fallback)
}

/// A linear layer's weight for `x[m, k] @ w -> [m, n]`.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// f32/f16/bf16, panel-major ([`crate::matmul`]).
    Dense(Weight),
    /// ggml blocks, `[n, k]` row-major.
    Quant(Arc<dyn QMat>),
    /// Parts of different block types over the same input, outputs
    /// concatenated in order.
    Parts(Vec<LinearWeight>),
}

impl LinearWeight {
    /// From a `[k, n]` weight (HF Conv1D's layout), quantized to `q` (with
    /// the fallbacks of [`effective_type`]) or dense.
    pub fn from_in_out(w: &Tensor, q: Option<GgmlDType>) -> Result<Self> {
        let (k, _) = w.dims2()?;
        match q.and_then(|q| effective_type(q, k)) {
            Some(t) => Self::quantize(&w.t()?.contiguous()?, t),
            None => Ok(LinearWeight::Dense(Weight::new(w)?)),
        }
    }

    /// From an `[n, k]` weight (HF `nn.Linear`'s layout), quantized to `q`
    /// (with the fallbacks of [`effective_type`]) or dense.
    pub fn from_out_in(w: &Tensor, q: Option<GgmlDType>) -> Result<Self> {
        let (_, k) = w.dims2()?;
        match q.and_then(|q| effective_type(q, k)) {
            Some(t) => Self::quantize(w, t),
            None => Ok(LinearWeight::Dense(Weight::new(&w.t()?)?)),
        }
    }

    /// Quantizes an `[n, k]` f32 weight on the CPU.
    fn quantize(w: &Tensor, t: GgmlDType) -> Result<Self> {
        if !w.device().is_cpu() {
            candle_core::bail!("quantized weights run on the CPU only")
        }
        Self::from_qtensor(Arc::new(QTensor::quantize(w, t)?))
    }

    /// From an `[n, k]` quantized tensor (its blocks are copied).
    pub fn from_qtensor(q: Arc<QTensor>) -> Result<Self> {
        let (n, k) = q.shape().dims2()?;
        if is_float(q.dtype()) {
            let w = q.dequantize(&Device::Cpu)?;
            return Ok(LinearWeight::Dense(Weight::new(&w.t()?)?));
        }
        let data = q.data()?;
        if let Some(kind) = crate::qpack::Kind::for_dtype(q.dtype()) {
            return Ok(LinearWeight::Quant(Arc::new(Packed::new(
                kind, &data, n, k,
            )?)));
        }
        fn blocks<T: GgmlType + 'static>(b: &[u8], n: usize, k: usize) -> Result<Arc<dyn QMat>> {
            Ok(Arc::new(Blocks::<T>::from_bytes(b, n, k)?))
        }
        let m = match q.dtype() {
            GgmlDType::Q4_0 => blocks::<BlockQ4_0>(&data, n, k)?,
            GgmlDType::Q4_1 => blocks::<BlockQ4_1>(&data, n, k)?,
            GgmlDType::Q5_0 => blocks::<BlockQ5_0>(&data, n, k)?,
            GgmlDType::Q5_1 => blocks::<BlockQ5_1>(&data, n, k)?,
            GgmlDType::Q8_0 => blocks::<BlockQ8_0>(&data, n, k)?,
            GgmlDType::Q2K => blocks::<BlockQ2K>(&data, n, k)?,
            GgmlDType::Q3K => blocks::<BlockQ3K>(&data, n, k)?,
            GgmlDType::Q4K => blocks::<BlockQ4K>(&data, n, k)?,
            GgmlDType::Q5K => blocks::<BlockQ5K>(&data, n, k)?,
            GgmlDType::Q6K => blocks::<BlockQ6K>(&data, n, k)?,
            other => candle_core::bail!("no quantized matmul for {other:?} weights"),
        };
        Ok(LinearWeight::Quant(m))
    }

    /// `[n_i, k]` parts stacked along the output: parts of one block type
    /// become one matrix (rows concatenated as bytes), runs of different
    /// types become [`LinearWeight::Parts`].
    pub fn from_parts(parts: Vec<QTensor>) -> Result<Self> {
        let mut groups: Vec<Vec<QTensor>> = Vec::new();
        for p in parts {
            match groups.last_mut() {
                Some(g) if g[0].dtype() == p.dtype() => g.push(p),
                _ => groups.push(vec![p]),
            }
        }
        let mut out = groups
            .into_iter()
            .map(|g| Self::from_qtensor(Arc::new(concat_rows(g)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(if out.len() == 1 {
            out.remove(0)
        } else {
            LinearWeight::Parts(out)
        })
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            LinearWeight::Dense(w) => w.dims(),
            LinearWeight::Quant(m) => m.dims(),
            LinearWeight::Parts(p) => {
                let k = p.first().map_or(0, |w| w.dims().0);
                (k, p.iter().map(|w| w.dims().1).sum())
            }
        }
    }

    /// True when (some of) the weight is held in ggml blocks.
    pub fn is_quantized(&self) -> bool {
        match self {
            LinearWeight::Dense(_) => false,
            LinearWeight::Quant { .. } => true,
            LinearWeight::Parts(p) => p.iter().any(Self::is_quantized),
        }
    }

    /// Bytes held: the blocks, or the dense values.
    pub fn bytes(&self) -> usize {
        match self {
            LinearWeight::Dense(w) => w.bytes(),
            LinearWeight::Quant(m) => m.bytes(),
            LinearWeight::Parts(p) => p.iter().map(Self::bytes).sum(),
        }
    }

    /// `x[m, k] @ w` -> `[m, n]`.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            LinearWeight::Dense(w) => w.matmul(x),
            LinearWeight::Quant(m) => {
                if x.dtype() != candle_core::DType::F32 || !x.device().is_cpu() {
                    candle_core::bail!("quantized matmul: x is {:?} on {:?}", x.dtype(), x.device())
                }
                x.apply_op1_no_bwd(&QMatmulOp(m.clone()))
            }
            LinearWeight::Parts(p) => {
                let ys = p.iter().map(|w| w.matmul(x)).collect::<Result<Vec<_>>>()?;
                Tensor::cat(&ys, 1)
            }
        }
    }

    /// Rows `ids` of the `[n, k]` matrix of quantized blocks, dequantized:
    /// `[ids.len(), k]` (the token embeddings of a quantized table or
    /// tied lm_head); `None` for a dense or split weight.
    pub fn quantized_rows(&self, ids: &[u32], dev: &Device) -> Option<Result<Tensor>> {
        let LinearWeight::Quant(m) = self else {
            return None;
        };
        let k = m.dims().0;
        Some(
            m.rows(ids)
                .and_then(|v| Tensor::from_vec(v, (ids.len(), k), dev)),
        )
    }

    /// The dense weight, for the token embeddings of a tied f32 lm_head.
    pub fn dense(&self) -> Option<&Weight> {
        match self {
            LinearWeight::Dense(w) => Some(w),
            _ => None,
        }
    }
}

fn is_float(t: GgmlDType) -> bool {
    matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

/// `[n_i, k]` tensors of one block type as one `[sum n_i, k]` tensor.
fn concat_rows(mut parts: Vec<QTensor>) -> Result<QTensor> {
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    let Some(first) = parts.first() else {
        candle_core::bail!("no parts to concatenate")
    };
    let (dtype, k) = (first.dtype(), first.shape().dims2()?.1);
    let mut bytes = Vec::new();
    let mut n = 0;
    for p in &parts {
        let (pn, pk) = p.shape().dims2()?;
        if pk != k || p.dtype() != dtype {
            candle_core::bail!(
                "cannot stack {:?} {pn}x{pk} under {dtype:?} x{k}",
                p.dtype()
            )
        }
        bytes.extend_from_slice(&p.data()?);
        n += pn;
    }
    from_bytes(bytes, dtype, (n, k))
}

/// A CPU quantized tensor of `shape` from its blocks' bytes.
pub fn from_bytes(bytes: Vec<u8>, dtype: GgmlDType, shape: (usize, usize)) -> Result<QTensor> {
    let want = shape.0 * shape.1 / dtype.block_size() * dtype.type_size();
    if bytes.len() != want || !shape.1.is_multiple_of(dtype.block_size()) {
        candle_core::bail!(
            "{} bytes of {dtype:?} cannot be a {}x{} matrix",
            bytes.len(),
            shape.0,
            shape.1
        )
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype)?;
    QTensor::new(storage, shape)
}

/// Reorders the rows of an `[n, k]` quantized matrix: row `i` of the
/// result is row `order[i]` of `q` (a row is whole blocks).
pub fn permute_rows(q: &QTensor, order: &[usize]) -> Result<QTensor> {
    let (n, k) = q.shape().dims2()?;
    if order.len() != n || order.iter().any(|&r| r >= n) {
        candle_core::bail!("a row order of {} entries for {n} rows", order.len())
    }
    let data = q.data()?;
    let row = data.len() / n.max(1);
    let mut out = Vec::with_capacity(data.len());
    for &r in order {
        out.extend_from_slice(&data[r * row..(r + 1) * row]);
    }
    from_bytes(out, q.dtype(), (n, k))
}

/// A quantized `[n, k]` matrix of one block type.
pub trait QMat: Send + Sync + std::fmt::Debug {
    /// `(k, n)`.
    fn dims(&self) -> (usize, usize);
    fn dtype(&self) -> GgmlDType;
    /// Bytes of the blocks.
    fn bytes(&self) -> usize;
    /// `out[m, n] = x[m, k] @ w^T`, on the current rayon pool.
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()>;
    /// Rows `ids` dequantized, `[ids.len() * k]` (the token embeddings of
    /// a quantized table).
    fn rows(&self, ids: &[u32]) -> Result<Vec<f32>>;
}

impl QMat for Packed {
    fn dims(&self) -> (usize, usize) {
        Packed::dims(self)
    }

    fn dtype(&self) -> GgmlDType {
        Packed::dtype(self)
    }

    fn bytes(&self) -> usize {
        Packed::bytes(self)
    }

    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        Packed::matmul(
            self,
            x,
            m,
            out,
            rayon::current_num_threads() * TASKS_PER_THREAD,
        )
    }

    fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        Packed::rows(self, ids)
    }
}

/// Rows of blocks: row `j` (output column `j`) is `w[j * kb..(j + 1) * kb]`.
struct Blocks<T> {
    w: Vec<T>,
    n: usize,
    k: usize,
}

impl<T> std::fmt::Debug for Blocks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blocks[{}x{}]", self.n, self.k)
    }
}

/// Output columns per task (a few tasks per thread, so a descheduled
/// thread's work can be stolen).
const TASKS_PER_THREAD: usize = 4;
/// Output columns computed together over a run of activation rows (their
/// weight rows stay in cache while every activation row passes).
const COLS: usize = 4;

impl<T: GgmlType> Blocks<T> {
    fn from_bytes(b: &[u8], n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(T::BLCK_SIZE) {
            candle_core::bail!("{:?} rows of {k} values are not whole blocks", T::DTYPE)
        }
        let count = n * (k / T::BLCK_SIZE);
        if b.len() != count * std::mem::size_of::<T>() {
            candle_core::bail!("{} bytes for {count} {:?} blocks", b.len(), T::DTYPE)
        }
        let mut w = vec![T::zeros(); count];
        // SAFETY: `w` holds exactly `b.len()` bytes; a ggml block is a
        // `repr(C)` struct of integers and f16s (candle builds them the
        // same way from file bytes), so any bytes are a valid block.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), w.as_mut_ptr() as *mut u8, b.len());
        }
        Ok(Blocks { w, n, k })
    }
}

impl<T: GgmlType> QMat for Blocks<T> {
    fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn dtype(&self) -> GgmlDType {
        T::DTYPE
    }

    fn bytes(&self) -> usize {
        self.w.len() * std::mem::size_of::<T>()
    }

    fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let kb = self.k / T::BLCK_SIZE;
        let mut out = vec![0f32; ids.len() * self.k];
        for (&id, row) in ids.iter().zip(out.chunks_mut(self.k.max(1))) {
            let id = id as usize;
            if id >= self.n {
                candle_core::bail!("row {id} out of range for {} rows", self.n)
            }
            T::to_float(&self.w[id * kb..(id + 1) * kb], row);
        }
        Ok(out)
    }

    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let (n, k) = (self.n, self.k);
        let kb = k / T::BLCK_SIZE;
        if x.len() != m * k || out.len() != m * n {
            candle_core::bail!(
                "quantized matmul: {} x values, {} outputs for {m}x{k}x{n}",
                x.len(),
                out.len()
            )
        }
        // the activations in the dot product's block type, once per call
        let mut xq = vec![T::VecDotType::zeros(); m * kb];
        let quantize = |(row, q): (&[f32], &mut [T::VecDotType])| T::VecDotType::from_float(row, q);
        if m >= 8 {
            x.par_chunks(k)
                .zip(xq.par_chunks_mut(kb))
                .for_each(quantize);
        } else {
            x.chunks(k).zip(xq.chunks_mut(kb)).for_each(quantize);
        }
        let dst = SendPtr(out.as_mut_ptr());
        let w = &self.w;
        // columns c0..c1 for every row; each task writes only its columns
        let cols = |c0: usize, c1: usize| {
            let mut c = c0;
            while c < c1 {
                let take = COLS.min(c1 - c);
                let row = |j: usize| &w[(c + j) * kb..(c + j + 1) * kb];
                for r in 0..m {
                    let y = &xq[r * kb..(r + 1) * kb];
                    let mut v = [0f32; COLS];
                    if take == 4 {
                        let d = T::vec_dot_4(k, row(0), row(1), row(2), row(3), y);
                        v = [d.0, d.1, d.2, d.3];
                    } else {
                        for (j, v) in v.iter_mut().enumerate().take(take) {
                            *v = T::vec_dot(k, row(j), y);
                        }
                    }
                    // SAFETY: row r, columns c..c + take of the m x n
                    // output; the column ranges of the tasks are disjoint.
                    unsafe {
                        std::ptr::copy_nonoverlapping(v.as_ptr(), dst.get().add(r * n + c), take);
                    }
                }
                c += take;
            }
        };
        let threads = rayon::current_num_threads();
        let per_task = n
            .div_ceil(threads * TASKS_PER_THREAD)
            .next_multiple_of(COLS)
            .max(COLS);
        if threads > 1 && n > per_task {
            (0..n.div_ceil(per_task))
                .into_par_iter()
                .for_each(|t| cols(t * per_task, ((t + 1) * per_task).min(n)));
        } else {
            cols(0, n);
        }
        Ok(())
    }
}

/// Raw output pointer shared by the tasks of one matmul.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `x[m, k] @ w^T` as a candle op.
struct QMatmulOp(Arc<dyn QMat>);

impl CustomOp1 for QMatmulOp {
    fn name(&self) -> &'static str {
        "em-quantized-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (k, n) = self.0.dims();
        let &[m, xk] = l.dims() else {
            candle_core::bail!("quantized matmul: x must be [m, k], not {:?}", l.dims())
        };
        let CpuStorage::F32(x) = s else {
            candle_core::bail!("quantized matmul: x must be f32")
        };
        if xk != k {
            candle_core::bail!("quantized matmul: x is {m}x{xk}, weights {n}x{k}")
        }
        let x: Cow<[f32]> = match l.contiguous_offsets() {
            Some((a, b)) => Cow::Borrowed(&x[a..b]),
            None => {
                let (o, st) = (l.start_offset(), l.stride());
                Cow::Owned(
                    (0..m * k)
                        .map(|i| x[o + (i / k) * st[0] + (i % k) * st[1]])
                        .collect(),
                )
            }
        };
        let mut out = vec![0f32; m * n];
        self.0.matmul(&x, m, &mut out)?;
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_follow_llama_cpp() {
        assert_eq!(effective_type(GgmlDType::Q4K, 512), Some(GgmlDType::Q4K));
        assert_eq!(effective_type(GgmlDType::Q4K, 576), Some(GgmlDType::Q5_0));
        assert_eq!(effective_type(GgmlDType::Q8_0, 576), Some(GgmlDType::Q8_0));
        assert_eq!(effective_type(GgmlDType::Q4_0, 48), None);
        assert_eq!(effective_type(GgmlDType::Q4K, 48), None);
    }

    #[test]
    fn stacked_and_permuted_rows_keep_their_values() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (4, 64), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (2, 64), &dev)?;
        let qa = QTensor::quantize(&a, GgmlDType::Q4_1)?;
        let qb = QTensor::quantize(&b, GgmlDType::Q4_1)?;
        let (da, db) = (qa.dequantize(&dev)?, qb.dequantize(&dev)?);
        let both = concat_rows(vec![qa, qb])?;
        let want = Tensor::cat(&[&da, &db], 0)?;
        let diff = (both.dequantize(&dev)? - &want)?.abs()?.max_all()?;
        assert_eq!(diff.to_scalar::<f32>()?, 0.0);
        let p = permute_rows(&both, &[5, 0, 3, 1, 2, 4])?.dequantize(&dev)?;
        let idx = Tensor::new(&[5u32, 0, 3, 1, 2, 4], &dev)?;
        let diff = (p - want.index_select(&idx, 0)?)?.abs()?.max_all()?;
        assert_eq!(diff.to_scalar::<f32>()?, 0.0);
        // mixed types stay separate parts, outputs concatenated
        let q8 = QTensor::quantize(&b, GgmlDType::Q8_0)?;
        let qa = QTensor::quantize(&a, GgmlDType::Q4_1)?;
        let w = LinearWeight::from_parts(vec![qa, q8])?;
        assert!(matches!(&w, LinearWeight::Parts(p) if p.len() == 2));
        assert_eq!(w.dims(), (64, 6));
        let x = Tensor::randn(0f32, 1.0, (3, 64), &dev)?;
        assert_eq!(w.matmul(&x)?.dims(), &[3, 6]);
        Ok(())
    }
}
