//! Matmuls on the CPU: candle custom ops that call `gemm`, the crate (and
//! micro-kernels) candle 0.11.1's CPU backend uses for `Tensor::matmul`,
//! but call it differently:
//!
//! 1. **Weights are stored panel-major.** A `[k, n]` weight is re-laid at
//!    load as `[n / 64, k, 64]`: 64-column panels, each contiguous. One
//!    gemm call per panel (the panels spread over the rayon pool, a
//!    contiguous run of panels per task) then reads every weight byte
//!    *sequentially*, which is what the memory system wants for the
//!    weight-streaming decode step. With the plain `[k, n]` layout gemm's
//!    micro-kernel walks 64-float slivers down the rows (a 256-byte read
//!    every `4n` bytes) for skinny `m`, and for `m = 1` runs a
//!    single-threaded GEMV. Measured on the 12 GPT-2 layers (2 threads,
//!    weights not cache-resident): m = 1 23 -> 11 ms, m = 8 42 -> 12.5 ms,
//!    m = 128 122 -> 109 ms (178 -> 200 GFLOP/s). Wider panels lose that
//!    (P = 256: m = 8 takes 31 ms).
//! 2. **No per-call `/proc/cpuinfo` parse.** `Tensor::matmul` sizes gemm's
//!    parallelism with `candle_core::utils::get_num_threads()` on every
//!    call; unless `RAYON_NUM_THREADS` is set that calls
//!    `num_cpus::get_physical()`, which reads and parses `/proc/cpuinfo`:
//!    34 us per call here, ~120 calls per GPT-2 decode step (batch-1
//!    decode went from 33 ms to 26 ms per step with the variable set).
//! 3. **Parallelism follows the pool we run in** (`rayon::current_num_threads`),
//!    not an environment variable, so `threads: 1` really is one thread.
//!
//! 4. **Small products can skip gemm.** At 1 row ([`crate::gemv::panel`])
//!    and at 2–16 rows ([`crate::gemv::rows`]) register kernels of our own
//!    run on the same panels when [`crate::autotune`] measured them
//!    faster for the weight's shape: the m = 8 figures above were not
//!    reproducible on 2026-12-07 (the same code took 5x the time, gemm's
//!    micro-kernel waiting on its 16-column slivers from DRAM).
//!
//! Other operands (attention fallbacks) go through [`matmul`], which passes
//! strides to gemm as they are (a `narrow`ed KV-cache view needs no copy).
//!
//! bf16 (gemm has no bf16 kernel; candle widens to f32 per call) and
//! non-CPU devices keep the `[k, n]` layout and use `Tensor::matmul`.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, WithDType,
};
use gemm::Parallelism;
use rayon::prelude::*;

/// Columns per weight panel.
pub const PANEL: usize = 64;
/// Panel tasks per thread (a few, so a descheduled thread's work can be
/// stolen, each still a long sequential read).
const TASKS_PER_THREAD: usize = 4;
/// Batched products run their batch items in parallel when one item has
/// at least this many multiply-adds.
const PAR_BATCH_MIN_WORK: usize = 1 << 16;

/// Raw pointer that may cross to rayon workers; every worker writes a
/// disjoint part of the output.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `SendPtr`).
    fn get(self) -> *mut T {
        self.0
    }
}

fn gemm_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::F64)
}

/// A `[k, n]` weight for `x[m, k] @ w`.
#[derive(Debug, Clone)]
pub enum Weight {
    /// `[ceil(n / PANEL), k, PANEL]`, zero-padded; CPU, gemm dtypes.
    /// `gemv`: batch-1 products (`m = 1`, f32) run [`crate::gemv`]'s
    /// register kernel instead of gemm (chosen by [`crate::autotune`]).
    /// `rows`: products of 2..=[`crate::gemv::ROWS`] rows (f32) run
    /// [`crate::gemv::rows`] instead of gemm.
    Panels {
        panels: Tensor,
        k: usize,
        n: usize,
        gemv: bool,
        rows: bool,
    },
    /// `[k, n]` as stored; other devices and dtypes.
    Dense(Tensor),
}

impl Weight {
    /// Re-lays `w: [k, n]` for the device and dtype it is on.
    pub fn new(w: &Tensor) -> Result<Self> {
        let (k, n) = w.dims2()?;
        if !crate::ops::fused_kernels() || !w.device().is_cpu() || !gemm_dtype(w.dtype()) {
            return Ok(Weight::Dense(w.contiguous()?));
        }
        let np = n.div_ceil(PANEL);
        let panels = w
            .pad_with_zeros(1, 0, np * PANEL - n)?
            .reshape((k, np, PANEL))?
            .transpose(0, 1)?
            .contiguous()?;
        let mut weight = Weight::Panels {
            panels,
            k,
            n,
            gemv: false,
            rows: false,
        };
        if w.dtype() == DType::F32 {
            let (gemv, rows) = crate::autotune::register_kernels(&weight)?;
            weight.set_gemv(gemv);
            weight.set_rows(rows);
        }
        Ok(weight)
    }

    /// Makes batch-1 f32 products use the register kernel (`true`) or
    /// gemm; no effect on dense weights.
    pub fn set_gemv(&mut self, on: bool) {
        if let Weight::Panels { gemv, .. } = self {
            *gemv = on;
        }
    }

    /// Whether batch-1 f32 products use the register kernel.
    pub fn gemv(&self) -> bool {
        matches!(self, Weight::Panels { gemv: true, .. })
    }

    /// Makes f32 products of 2..=[`crate::gemv::ROWS`] rows use the
    /// small-batch register kernel (`true`) or gemm; no effect on dense
    /// weights.
    pub fn set_rows(&mut self, on: bool) {
        if let Weight::Panels { rows, .. } = self {
            *rows = on;
        }
    }

    /// Whether small-batch f32 products use the register kernel.
    pub fn rows(&self) -> bool {
        matches!(self, Weight::Panels { rows: true, .. })
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Weight::Panels { k, n, .. } => (*k, *n),
            Weight::Dense(w) => (w.dims()[0], w.dims()[1]),
        }
    }

    /// Bytes held (panel padding included).
    pub fn bytes(&self) -> usize {
        let t = match self {
            Weight::Panels { panels, .. } => panels,
            Weight::Dense(w) => w,
        };
        t.elem_count() * t.dtype().size_in_bytes()
    }

    /// `x[m, k] @ w` -> `[m, n]`.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Dense(w) => x.matmul(w),
            Weight::Panels {
                panels,
                n,
                gemv,
                rows,
                ..
            } => {
                if x.dtype() != panels.dtype() || !x.device().is_cpu() {
                    candle_core::bail!("panel matmul: x is {:?} on {:?}", x.dtype(), x.device())
                }
                let op = PanelMatmul {
                    n: *n,
                    gemv: *gemv,
                    rows: *rows,
                };
                x.apply_op2_no_bwd(panels, &op)
            }
        }
    }

    /// Columns `ids` of the weight as rows: `[ids.len(), k]` (the token
    /// embeddings of a tied lm_head).
    pub fn columns(&self, ids: &[u32], dev: &Device) -> Result<Tensor> {
        let (_, n) = self.dims();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= n) {
            candle_core::bail!("column {bad} out of range for {n} columns")
        }
        match self {
            Weight::Dense(w) => w
                .index_select(&Tensor::new(ids, dev)?, 1)?
                .t()?
                .contiguous(),
            Weight::Panels { panels, .. } => {
                panels.apply_op1_no_bwd(&PanelColumns { ids: ids.to_vec() })
            }
        }
    }
}

struct PanelMatmul {
    n: usize,
    gemv: bool,
    rows: bool,
}

impl PanelMatmul {
    fn run<T: WithDType>(&self, x: &[T], xl: &Layout, p: &[T], pl: &Layout) -> Result<Vec<T>> {
        let (&[m, k], &[np, pk, pw]) = (xl.dims(), pl.dims()) else {
            candle_core::bail!("em-panel-matmul: x {:?}, panels {:?}", xl.dims(), pl.dims())
        };
        let n = self.n;
        let Some((p0, p1)) = pl.contiguous_offsets() else {
            candle_core::bail!("em-panel-matmul: panels must be contiguous")
        };
        let p = &p[p0..p1];
        let (xo, xs) = (xl.start_offset(), xl.stride());
        let x_end = if m * k == 0 {
            xo
        } else {
            xo + (m - 1) * xs[0] + (k - 1) * xs[1] + 1
        };
        if pk != k || pw != PANEL || np != n.div_ceil(PANEL) || x_end > x.len() {
            candle_core::bail!(
                "em-panel-matmul: x {:?} vs panels {:?} for n = {n}",
                xl.dims(),
                pl.dims()
            )
        }
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        let mut out = vec![zero; m * n];
        let dst = SendPtr(out.as_mut_ptr());
        let threads = rayon::current_num_threads();
        let per_task = np.div_ceil(threads * TASKS_PER_THREAD).max(1);
        // The register kernels take f32 (checked through the dtype, the
        // only `WithDType` that is F32 being f32 itself).
        let f32s = (T::DTYPE == DType::F32).then(|| {
            // SAFETY: T is f32 (DTYPE checked above), so the slices
            // reinterpret to themselves.
            unsafe {
                (
                    std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()),
                    std::slice::from_raw_parts(p.as_ptr().cast::<f32>(), p.len()),
                )
            }
        });
        // one row: the batch-1 kernel; 2..=ROWS rows: the small-batch one
        let gemv = f32s.filter(|_| self.gemv && m == 1);
        let rows = f32s.filter(|_| self.rows && (2..=crate::gemv::ROWS).contains(&m));
        let panel = |i: usize| {
            let cols = PANEL.min(n - i * PANEL);
            if let Some((x, p)) = rows {
                let pi = &p[i * k * PANEL..(i + 1) * k * PANEL];
                // SAFETY: x reaches at most `x_end` (checked); the writes
                // are columns i*PANEL .. i*PANEL + cols of each of the m
                // rows of the m x n `out`, disjoint between panels; T is f32.
                unsafe {
                    crate::gemv::rows_to(
                        &x[xo..],
                        (xs[0], xs[1]),
                        m,
                        pi,
                        k,
                        dst.get().add(i * PANEL).cast::<f32>(),
                        n,
                        cols,
                    )
                };
                return;
            }
            if let Some((x, p)) = gemv {
                // SAFETY: columns i*PANEL .. i*PANEL + cols of the single
                // output row, disjoint between panels; T is f32.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(dst.get().add(i * PANEL).cast::<f32>(), cols)
                };
                let pi = &p[i * k * PANEL..(i + 1) * k * PANEL];
                crate::gemv::panel(&x[xo..], xs[1], pi, k, o);
                return;
            }
            // SAFETY: x reaches at most `x_end` (checked); panel i is the
            // contiguous k * PANEL block at i * k * PANEL inside `p`; the
            // destination is columns i*PANEL .. i*PANEL + cols of the m x n
            // row-major `out`, disjoint between panels.
            unsafe {
                gemm::gemm(
                    m,
                    cols,
                    k,
                    dst.get().add(i * PANEL),
                    1,
                    n as isize,
                    false,
                    x.as_ptr().add(xo),
                    xs[1] as isize,
                    xs[0] as isize,
                    p.as_ptr().add(i * k * PANEL),
                    1,
                    PANEL as isize,
                    zero,
                    one,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            }
        };
        if threads > 1 && np > 1 {
            (0..np.div_ceil(per_task))
                .into_par_iter()
                .for_each(|t| (t * per_task..((t + 1) * per_task).min(np)).for_each(panel));
        } else {
            (0..np).for_each(panel);
        }
        Ok(out)
    }
}

impl CustomOp2 for PanelMatmul {
    fn name(&self) -> &'static str {
        "em-panel-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let m = l1.dims().first().copied().unwrap_or(0);
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(p)) => CpuStorage::F32(self.run(x, l1, p, l2)?),
            (CpuStorage::F16(x), CpuStorage::F16(p)) => CpuStorage::F16(self.run(x, l1, p, l2)?),
            (CpuStorage::F64(x), CpuStorage::F64(p)) => CpuStorage::F64(self.run(x, l1, p, l2)?),
            _ => candle_core::bail!("em-panel-matmul: unsupported dtypes"),
        };
        Ok((out, Shape::from((m, self.n))))
    }
}

/// Gathers weight columns out of the panels.
struct PanelColumns {
    ids: Vec<u32>,
}

impl PanelColumns {
    fn run<T: WithDType>(&self, p: &[T], pl: &Layout) -> Result<Vec<T>> {
        let Some((p0, p1)) = pl.contiguous_offsets() else {
            candle_core::bail!("em-panel-columns: panels must be contiguous")
        };
        let p = &p[p0..p1];
        let &[np, k, pw] = pl.dims() else {
            candle_core::bail!("em-panel-columns: rank-3 panels expected")
        };
        if let Some(id) = self.ids.iter().find(|&&id| id as usize / pw >= np) {
            candle_core::bail!("em-panel-columns: column {id} out of range")
        }
        let mut out = vec![T::from_f64(0.0); self.ids.len() * k];
        // Each column is k strided reads (one cache line each): spread the
        // columns of a prompt over the pool.
        let gather = |(id, row): (&u32, &mut [T])| {
            let base = (*id as usize / pw) * k * pw + *id as usize % pw;
            row.iter_mut()
                .enumerate()
                .for_each(|(c, x)| *x = p[base + c * pw]);
        };
        if self.ids.len() >= 16 && k > 0 {
            self.ids
                .par_iter()
                .zip(out.par_chunks_mut(k))
                .for_each(gather);
        } else if k > 0 {
            self.ids.iter().zip(out.chunks_mut(k)).for_each(gather);
        }
        Ok(out)
    }
}

impl CustomOp1 for PanelColumns {
    fn name(&self) -> &'static str {
        "em-panel-columns"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let k = l.dims().get(1).copied().unwrap_or(0);
        let out = match s {
            CpuStorage::F32(p) => CpuStorage::F32(self.run(p, l)?),
            CpuStorage::F16(p) => CpuStorage::F16(self.run(p, l)?),
            CpuStorage::F64(p) => CpuStorage::F64(self.run(p, l)?),
            CpuStorage::BF16(p) => CpuStorage::BF16(self.run(p, l)?),
            _ => candle_core::bail!("em-panel-columns: unsupported dtype"),
        };
        Ok((out, Shape::from((self.ids.len(), k))))
    }
}

// ---------------------------------------------------------------------------
// General (batched, strided) matmul.

struct Gemm;

/// One operand's geometry: element offset, batch stride, row stride,
/// column stride.
#[derive(Clone, Copy)]
struct Geom {
    offset: usize,
    bs: usize,
    rs: usize,
    cs: usize,
}

fn geom(l: &Layout, what: &str) -> Result<(usize, usize, usize, Geom)> {
    let (dims, st) = (l.dims(), l.stride());
    let offset = l.start_offset();
    match dims.len() {
        2 => Ok((
            1,
            dims[0],
            dims[1],
            Geom {
                offset,
                bs: 0,
                rs: st[0],
                cs: st[1],
            },
        )),
        3 => Ok((
            dims[0],
            dims[1],
            dims[2],
            Geom {
                offset,
                bs: st[0],
                rs: st[1],
                cs: st[2],
            },
        )),
        n => candle_core::bail!("em-gemm: {what} has rank {n}, expected 2 or 3"),
    }
}

/// One past the largest element index a layout touches.
fn extent(b: usize, r: usize, c: usize, g: Geom) -> usize {
    if b == 0 || r == 0 || c == 0 {
        return g.offset;
    }
    g.offset + (b - 1) * g.bs + (r - 1) * g.rs + (c - 1) * g.cs + 1
}

#[allow(clippy::too_many_arguments)]
fn run<T: WithDType>(
    lhs: &[T],
    lg: Geom,
    rhs: &[T],
    rg: Geom,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<T> {
    let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
    let mut dst = vec![zero; batch * m * n];
    let threads = rayon::current_num_threads();
    let out = SendPtr(dst.as_mut_ptr());
    // SAFETY: the caller checked that every index the lhs/rhs geometries
    // reach is inside `lhs`/`rhs`; batch item `b` writes the m x n
    // row-major block at `b * m * n` of `dst`, disjoint between items.
    let call = |b: usize, par: Parallelism| unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.get().add(b * m * n),
            1,
            n as isize,
            false,
            lhs.as_ptr().add(lg.offset + b * lg.bs),
            lg.cs as isize,
            lg.rs as isize,
            rhs.as_ptr().add(rg.offset + b * rg.bs),
            rg.cs as isize,
            rg.rs as isize,
            zero,
            one,
            false,
            false,
            false,
            par,
        )
    };
    if batch > 1 {
        if m * n * k >= PAR_BATCH_MIN_WORK && threads > 1 {
            (0..batch)
                .into_par_iter()
                .for_each(|b| call(b, Parallelism::None));
        } else {
            (0..batch).for_each(|b| call(b, Parallelism::None));
        }
    } else if threads > 1 {
        call(0, Parallelism::Rayon(threads));
    } else {
        call(0, Parallelism::None);
    }
    dst
}

impl CustomOp2 for Gemm {
    fn name(&self) -> &'static str {
        "em-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b1, m, k, lg) = geom(l1, "lhs")?;
        let (b2, k2, n, rg) = geom(l2, "rhs")?;
        if b1 != b2 || k != k2 || l1.dims().len() != l2.dims().len() {
            candle_core::bail!(
                "em-gemm: cannot multiply {:?} by {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        let shape = if l1.dims().len() == 2 {
            Shape::from((m, n))
        } else {
            Shape::from((b1, m, n))
        };
        fn go<T: WithDType>(
            lhs: &[T],
            lg: Geom,
            rhs: &[T],
            rg: Geom,
            (b, m, k, n): (usize, usize, usize, usize),
        ) -> Result<Vec<T>> {
            if extent(b, m, k, lg) > lhs.len() || extent(b, k, n, rg) > rhs.len() {
                candle_core::bail!("em-gemm: layout outside its storage")
            }
            Ok(run(lhs, lg, rhs, rg, b, m, k, n))
        }
        let bmkn = (b1, m, k, n);
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(go(a, lg, b, rg, bmkn)?),
            (CpuStorage::F16(a), CpuStorage::F16(b)) => CpuStorage::F16(go(a, lg, b, rg, bmkn)?),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(go(a, lg, b, rg, bmkn)?),
            _ => candle_core::bail!("em-gemm: unsupported dtypes"),
        };
        Ok((out, shape))
    }
}

/// `a @ b` for rank-2 (`[m, k] @ [k, n]`) or rank-3 (`[b, m, k] @ [b, k, n]`)
/// tensors with any strides.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let gemm_ok = crate::ops::fused_kernels()
        && gemm_dtype(a.dtype())
        && a.device().is_cpu()
        && matches!(a.rank(), 2 | 3);
    if !gemm_ok {
        return a.matmul(b);
    }
    a.apply_op2_no_bwd(b, &Gemm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .unwrap()
    }

    #[test]
    fn panel_weights_match_candle_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (m, k, n) in [
            (1, 7, 45),
            (2, 33, 200),
            (5, 16, 64),
            (8, 150, 130),
            (16, 70, 100),
            (17, 9, 64),
            (40, 24, 130),
            (1, 64, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (k, n), &dev)?;
            let mut pw = Weight::new(&w)?;
            assert!(matches!(pw, Weight::Panels { .. }));
            assert_eq!(pw.dims(), (k, n));
            // gemm, then the register kernels (batch 1: gemv; 2..=16
            // rows: rows; gemm above)
            for gemv in [false, true] {
                pw.set_gemv(gemv);
                pw.set_rows(gemv);
                assert_eq!((pw.gemv(), pw.rows()), (gemv, gemv));
                let want = x.matmul(&w)?;
                assert!(close(&pw.matmul(&x)?, &want) < 1e-4, "{m}x{k}x{n}");
                assert!(close(&pool.install(|| pw.matmul(&x))?, &want) < 1e-4);
                // a strided x (a column slice) goes in without a copy
                let wide = Tensor::randn(0f32, 1.0, (m, k + 5), &dev)?;
                let xs = wide.narrow(1, 2, k)?;
                let got = pool.install(|| pw.matmul(&xs))?;
                assert!(close(&got, &xs.matmul(&w)?) < 1e-4);
                // and one whose elements are 3 apart (a transposed column)
                let tall = Tensor::randn(0f32, 1.0, (k, 3 * m), &dev)?;
                let xt = tall.narrow(1, 1, m)?.t()?;
                let got = pool.install(|| pw.matmul(&xt))?;
                assert!(close(&got, &xt.contiguous()?.matmul(&w)?) < 1e-4);
            }
            // columns come back as rows
            let ids: Vec<u32> = (0..n as u32).rev().step_by(3).collect();
            let want = w
                .t()?
                .contiguous()?
                .index_select(&Tensor::new(ids.as_slice(), &dev)?, 0)?;
            assert!(close(&pw.columns(&ids, &dev)?, &want) == 0.0);
        }
        let w = Tensor::randn(0f32, 1.0, (4, 70), &dev)?;
        assert!(Weight::new(&w)?.columns(&[70], &dev).is_err());
        // f16 panels; bf16 stays dense
        let x = Tensor::randn(0f32, 1.0, (3, 16), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (16, 100), &dev)?;
        let p16 = Weight::new(&w.to_dtype(DType::F16)?)?;
        let got = p16.matmul(&x.to_dtype(DType::F16)?)?.to_dtype(DType::F32)?;
        assert!(close(&got, &x.matmul(&w)?) < 5e-2);
        assert!(matches!(
            Weight::new(&w.to_dtype(DType::BF16)?)?,
            Weight::Dense(_)
        ));
        Ok(())
    }

    #[test]
    fn general_matmul_handles_batches_and_strides() -> Result<()> {
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // batched with a narrowed cache-like view: [h, cap, d] -> [h, len, d]
        let cache = Tensor::randn(0f32, 1.0, (3, 20, 8), &dev)?;
        let kv = cache.narrow(1, 0, 11)?;
        let q = Tensor::randn(0f32, 1.0, (3, 1, 8), &dev)?;
        let want = q.matmul(&kv.contiguous()?.t()?)?;
        assert!(close(&pool.install(|| matmul(&q, &kv.t()?))?, &want) < 1e-4);
        let big_q = Tensor::randn(0f32, 1.0, (4, 64, 32), &dev)?;
        let big_k = Tensor::randn(0f32, 1.0, (4, 64, 32), &dev)?;
        let want = big_q.matmul(&big_k.t()?)?;
        let got = pool.install(|| matmul(&big_q, &big_k.t()?))?;
        assert!(close(&got, &want) < 1e-3);
        assert!(close(&got.i(2)?, &want.i(2)?) < 1e-3);
        let a = Tensor::randn(0f32, 1.0, (40, 16), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (16, 33), &dev)?;
        assert!(close(&pool.install(|| matmul(&a, &b))?, &a.matmul(&b)?) < 1e-4);
        Ok(())
    }
}
