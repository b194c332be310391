//! `Q4_0`, `Q4_1` and `Q8_0` weights repacked at load into groups of
//! eight rows, and the AVX2 kernels that multiply them.
//!
//! # Why repack
//!
//! In ggml's own layout each row is a run of blocks (`d: f16`, then the
//! quants), so a dot product of one row with the activation pays, per
//! 32 values, for a scalar f16 conversion of the weight's scale (and of
//! the activation's), a broadcast, and the horizontal sum at the end:
//! most of the work of a `Q4_0` block besides the one `maddubs`. Measured
//! on SmolLM2-135M batch-1 decode (AMD EPYC, 2 threads), candle with
//! four-row kernels over that layout ran `q4_0` at 0.81x llama-server's
//! tokens/s on the same file; 60% of its time was the dot kernel.
//! llama.cpp's CPU backend repacks `Q4_0` for the same reason
//! (`ggml-cpu/repack.cpp`).
//!
//! Here each group of [`ROWS`] rows is stored block by block: for block
//! `b`, the eight rows' scales (eight f16s, converted by one
//! `vcvtph2ps`; `Q4_1` then has its eight mins), followed by the quants
//! in 4-byte chunks, eight rows side by side: chunk `c` of a 32-byte
//! register holds bytes `4c..4c + 4` of row 0, then of row 1, ... So
//! one register multiplied by the activation's four bytes `4c..4c + 4`
//! broadcast to every lane (`maddubs` then `madd`) gives each row's
//! partial sum in its own 32-bit lane: no horizontal sums, and the
//! eight results come out as one vector. The bytes are the blocks' own
//! (same count, same values), only reordered; a group's rows past the
//! matrix's last row are zeros (scale 0), and computed but not stored.
//!
//! The arithmetic is ggml's: weights against the activation quantized to
//! `Q8_0` (`Q4_0`, `Q8_0` weights) or `Q8_1` (`Q4_1`), with candle's own
//! quantizer for the activation, so the results are those of candle's
//! `vec_dot` up to f32 summation order (the tests check it).
//!
//! * `Q4_0`: the nibbles are taken unsigned (0..15) and the `- 8` is
//!   folded into one term per block, `8 d_y Σ y`, computed once per
//!   activation block rather than per row. The eight `maddubs` of a
//!   block are summed as i16 (at most 8 x 2 x 15 x 127 = 30,480, no
//!   overflow) before one `madd`.
//! * `Q4_1`: as `Q4_0` without the `- 8`, plus `m_x s_y` (`s_y = d_y Σ
//!   y`, stored in candle's `Q8_1` block) for the eight mins at once.
//! * `Q8_0`: signed weights, so `sign` moves the weight's sign onto the
//!   activation for `maddubs` (as ggml's AVX2 kernel does), and each
//!   chunk goes to i32 by its own `madd` (two i16 sums could overflow).
//!
//! Rows of activations (prefill, batches) are taken four at a time, so
//! each weight register (and its nibble split) serves four rows, and the
//! group's bytes (a few KiB) stay in L1 while every activation row
//! passes.
//!
//! Software prefetch 1-3 KiB ahead of the weight stream was tried
//! (SmolLM2 q4_0 and q8_0 decode, AMD EPYC family 25 model 1, 2 threads):
//! no change beyond run-to-run noise, so there is none; the hardware
//! prefetcher follows each task's one sequential stream.

use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use candle_core::quantized::{GgmlDType, GgmlType};
use candle_core::Result;

/// Rows per group.
pub const ROWS: usize = 8;

/// The block types with a repacked kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Kind {
    /// The kind for `t`, when this CPU can run its kernel.
    pub fn for_dtype(t: GgmlDType) -> Option<Kind> {
        if !has_avx2() {
            return None;
        }
        match t {
            GgmlDType::Q4_0 => Some(Kind::Q4_0),
            GgmlDType::Q4_1 => Some(Kind::Q4_1),
            GgmlDType::Q8_0 => Some(Kind::Q8_0),
            _ => None,
        }
    }

    fn dtype(self) -> GgmlDType {
        match self {
            Kind::Q4_0 => GgmlDType::Q4_0,
            Kind::Q4_1 => GgmlDType::Q4_1,
            Kind::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// Bytes of one block in ggml's layout.
    fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 18,
            Kind::Q4_1 => 20,
            Kind::Q8_0 => 34,
        }
    }

    /// Bytes of a block's f16 header (`d`, and `m` for `Q4_1`).
    fn head_bytes(self) -> usize {
        match self {
            Kind::Q4_1 => 4,
            _ => 2,
        }
    }
}

/// True when the kernels can run on this CPU (AVX2, FMA, F16C).
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An `[n, k]` matrix of `Q4_0`, `Q4_1` or `Q8_0` blocks in groups of
/// [`ROWS`] rows (see the module docs).
pub struct Packed {
    kind: Kind,
    n: usize,
    k: usize,
    /// Group `g`, block `b` starts at `(g * kb + b) * ROWS * block_bytes`.
    data: Vec<u8>,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed[{:?} {}x{}]", self.kind, self.n, self.k)
    }
}

/// One activation row, quantized for a kind: its blocks' quants, each
/// block's `d_y` and the block's offset term (see [`Packed::matmul_rows`]).
struct Act {
    /// ggml blocks of the activation (`Q8_0` or `Q8_1`) as bytes.
    blocks: Vec<u8>,
    /// Offset of the quants in a block, and its bytes.
    quants_at: usize,
    block_bytes: usize,
    dy: Vec<f32>,
    /// `Q4_0`: `8 d_y Σ y`; `Q4_1`: `s_y`; `Q8_0`: unused.
    off: Vec<f32>,
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

impl Packed {
    /// Repacks `n` rows of `k` values given as ggml blocks (`bytes`, row
    /// after row).
    pub fn new(kind: Kind, bytes: &[u8], n: usize, k: usize) -> Result<Self> {
        let bb = kind.block_bytes();
        if k == 0 || !k.is_multiple_of(32) || bytes.len() != n * (k / 32) * bb {
            candle_core::bail!(
                "{} bytes cannot be {n} rows of {k} {:?} values",
                bytes.len(),
                kind.dtype()
            )
        }
        let kb = k / 32;
        let groups = n.div_ceil(ROWS);
        let head = kind.head_bytes();
        let quants = bb - head;
        let mut data = vec![0u8; groups * kb * ROWS * bb];
        for j in 0..n {
            let (g, r) = (j / ROWS, j % ROWS);
            for b in 0..kb {
                let src = &bytes[(j * kb + b) * bb..][..bb];
                let sb = &mut data[(g * kb + b) * ROWS * bb..][..ROWS * bb];
                // d (then m) of row r
                for h in 0..head / 2 {
                    sb[h * 2 * ROWS + 2 * r..][..2].copy_from_slice(&src[2 * h..2 * h + 2]);
                }
                // quant chunk c of row r
                for c in 0..quants / 4 {
                    sb[head * ROWS + c * 4 * ROWS + 4 * r..][..4]
                        .copy_from_slice(&src[head + 4 * c..][..4]);
                }
            }
        }
        Ok(Packed { kind, n, k, data })
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    pub fn dtype(&self) -> GgmlDType {
        self.kind.dtype()
    }

    /// Bytes held (the blocks, and the zero rows that fill the last group).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Row `j`'s blocks in ggml's layout.
    fn row_blocks(&self, j: usize) -> Vec<u8> {
        let (bb, head) = (self.kind.block_bytes(), self.kind.head_bytes());
        let kb = self.k / 32;
        let (g, r) = (j / ROWS, j % ROWS);
        let mut out = vec![0u8; kb * bb];
        for b in 0..kb {
            let sb = &self.data[(g * kb + b) * ROWS * bb..][..ROWS * bb];
            let dst = &mut out[b * bb..][..bb];
            for h in 0..head / 2 {
                dst[2 * h..2 * h + 2].copy_from_slice(&sb[h * 2 * ROWS + 2 * r..][..2]);
            }
            for c in 0..(bb - head) / 4 {
                dst[head + 4 * c..][..4]
                    .copy_from_slice(&sb[head * ROWS + c * 4 * ROWS + 4 * r..][..4]);
            }
        }
        out
    }

    /// Rows `ids` dequantized, `[ids.len() * k]`.
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.k];
        for (&id, row) in ids.iter().zip(out.chunks_mut(self.k)) {
            let id = id as usize;
            if id >= self.n {
                candle_core::bail!("row {id} out of range for {} rows", self.n)
            }
            let blocks = self.row_blocks(id);
            match self.kind {
                Kind::Q4_0 => BlockQ4_0::to_float(&as_blocks(&blocks), row),
                Kind::Q4_1 => BlockQ4_1::to_float(&as_blocks(&blocks), row),
                Kind::Q8_0 => BlockQ8_0::to_float(&as_blocks(&blocks), row),
            }
        }
        Ok(out)
    }

    /// One activation row quantized for this kind.
    fn act(&self, x: &[f32]) -> Act {
        let kb = self.k / 32;
        match self.kind {
            Kind::Q4_0 | Kind::Q8_0 => {
                let mut q = vec![BlockQ8_0::zeros(); kb];
                BlockQ8_0::from_float(x, &mut q);
                let blocks = block_bytes(&q).to_vec();
                let mut dy = Vec::with_capacity(kb);
                let mut off = Vec::with_capacity(kb);
                for b in blocks.chunks(34) {
                    let d = f16_at(b, 0);
                    let sum: i32 = b[2..34].iter().map(|&v| v as i8 as i32).sum();
                    dy.push(d);
                    off.push(8.0 * d * sum as f32);
                }
                Act {
                    blocks,
                    quants_at: 2,
                    block_bytes: 34,
                    dy,
                    off,
                }
            }
            Kind::Q4_1 => {
                let mut q = vec![BlockQ8_1::zeros(); kb];
                BlockQ8_1::from_float(x, &mut q);
                let blocks = block_bytes(&q).to_vec();
                let dy = blocks.chunks(36).map(|b| f16_at(b, 0)).collect();
                let off = blocks.chunks(36).map(|b| f16_at(b, 2)).collect();
                Act {
                    blocks,
                    quants_at: 4,
                    block_bytes: 36,
                    dy,
                    off,
                }
            }
        }
    }

    /// `out[r, c0..c1] = x_r @ w[c0..c1]^T` for every activation row,
    /// `c0` a multiple of [`ROWS`]; `out` rows are `n` apart.
    ///
    /// # Safety
    /// `out` points to an `m x n` buffer whose columns `c0..c1` nobody
    /// else writes meanwhile.
    unsafe fn columns(&self, acts: &[Act], c0: usize, c1: usize, out: *mut f32) {
        let kb = self.k / 32;
        let sbytes = ROWS * self.kind.block_bytes();
        let mut c = c0;
        while c < c1 {
            let take = ROWS.min(c1 - c);
            let w = self.data.as_ptr().add((c / ROWS) * kb * sbytes);
            // four activation rows at a time share each weight load
            let mut r = 0;
            while r < acts.len() {
                let rows = (acts.len() - r).min(4);
                let a = &acts[r..r + rows];
                let dst = out.add(r * self.n + c);
                match rows {
                    4 => put(kernels::group::<4>(self.kind, kb, w, a), dst, self.n, take),
                    3 => put(kernels::group::<3>(self.kind, kb, w, a), dst, self.n, take),
                    2 => put(kernels::group::<2>(self.kind, kb, w, a), dst, self.n, take),
                    _ => put(kernels::group::<1>(self.kind, kb, w, a), dst, self.n, take),
                }
                r += rows;
            }
            c += take;
        }
    }

    /// `out[m, n] = x[m, k] @ w^T`, on the current rayon pool; `tasks`
    /// splits the columns (a few per thread).
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], tasks: usize) -> Result<()> {
        let (n, k) = (self.n, self.k);
        if x.len() != m * k || out.len() != m * n {
            candle_core::bail!(
                "quantized matmul: {} x values, {} outputs for {m}x{k}x{n}",
                x.len(),
                out.len()
            )
        }
        use rayon::prelude::*;
        let acts: Vec<Act> = if m >= 8 {
            x.par_chunks(k).map(|r| self.act(r)).collect()
        } else {
            x.chunks(k).map(|r| self.act(r)).collect()
        };
        let dst = crate::quant::SendPtr(out.as_mut_ptr());
        let per_task = n.div_ceil(tasks.max(1)).next_multiple_of(ROWS).max(ROWS);
        // SAFETY: each task writes only its own columns of `out`, which
        // is m x n (checked above).
        if tasks > 1 && n > per_task {
            (0..n.div_ceil(per_task))
                .into_par_iter()
                .for_each(|t| unsafe {
                    self.columns(&acts, t * per_task, ((t + 1) * per_task).min(n), dst.get())
                });
        } else {
            unsafe { self.columns(&acts, 0, n, dst.get()) };
        }
        Ok(())
    }
}

/// Writes `take` values of each row of `v` to `dst`, rows `n` apart.
///
/// # Safety
/// `dst` has room for `v.len()` rows of `n` values from where it points.
unsafe fn put<const R: usize>(v: [[f32; 8]; R], dst: *mut f32, n: usize, take: usize) {
    for (i, v) in v.iter().enumerate() {
        std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(i * n), take);
    }
}

fn block_bytes<T>(v: &[T]) -> &[u8] {
    // SAFETY: ggml blocks are plain `repr(C)` data.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// ggml blocks from their bytes (copied: the byte buffer is unaligned).
fn as_blocks<T: GgmlType>(b: &[u8]) -> Vec<T> {
    let n = b.len() / std::mem::size_of::<T>();
    let mut v = vec![T::zeros(); n];
    // SAFETY: `v` holds exactly `n` blocks' bytes; any bytes are a valid
    // block (integers and f16s).
    unsafe {
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            v.as_mut_ptr() as *mut u8,
            n * std::mem::size_of::<T>(),
        )
    };
    v
}

mod kernels {
    use super::{Act, Kind};

    /// The eight dot products of one group with each of `R` activation
    /// rows (`R` at most 4: the kernels keep two registers per row).
    ///
    /// # Safety
    /// `w` is a whole group (`kb` super-blocks), each act holds `kb`
    /// blocks, and the CPU has AVX2, FMA and F16C (a [`Kind`] exists only
    /// then).
    #[inline]
    pub(super) unsafe fn group<const R: usize>(
        kind: Kind,
        kb: usize,
        w: *const u8,
        acts: &[Act],
    ) -> [[f32; 8]; R] {
        #[cfg(target_arch = "x86_64")]
        {
            let ys: [Y; R] = std::array::from_fn(|r| Y {
                q: acts[r].blocks.as_ptr().add(acts[r].quants_at),
                stride: acts[r].block_bytes,
                dy: acts[r].dy.as_ptr(),
                off: acts[r].off.as_ptr(),
            });
            match kind {
                Kind::Q4_0 => avx2::q4::<R, false>(kb, w, &ys),
                Kind::Q4_1 => avx2::q4::<R, true>(kb, w, &ys),
                Kind::Q8_0 => avx2::q8_0::<R>(kb, w, &ys),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (kind, kb, w, acts);
            unreachable!("no repacked kernels off x86_64 (Kind::for_dtype gives none)")
        }
    }

    /// An activation row as the kernels read it.
    #[derive(Clone, Copy)]
    pub(super) struct Y {
        /// The first block's quants; the next block's are `stride` on.
        q: *const u8,
        stride: usize,
        dy: *const f32,
        off: *const f32,
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::Y;
        use std::arch::x86_64::*;

        /// Four activation quants at `p`, in every 32-bit lane.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn bcast4(p: *const u8) -> __m256i {
            _mm256_set1_epi32((p as *const i32).read_unaligned())
        }

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn f16x8(p: *const u8) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn store<const R: usize>(acc: [__m256; R]) -> [[f32; 8]; R] {
            let mut out = [[0f32; 8]; R];
            for r in 0..R {
                _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
            }
            out
        }

        /// `Q4_0` (`MINS` false) or `Q4_1` (`MINS` true).
        ///
        /// # Safety
        /// See [`super::group`].
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn q4<const R: usize, const MINS: bool>(
            kb: usize,
            w: *const u8,
            ys: &[Y; R],
        ) -> [[f32; 8]; R] {
            let low = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            let (sb_bytes, head) = if MINS { (8 * 20, 32) } else { (8 * 18, 16) };
            let mut acc = [_mm256_setzero_ps(); R];
            for b in 0..kb {
                let sb = w.add(b * sb_bytes);
                let q = sb.add(head);
                // Σ nibble x activation per row, in i16 pairs: at most
                // 8 x 2 x 15 x 127 = 30,480, no overflow
                let mut s = [_mm256_setzero_si256(); R];
                for c in 0..4 {
                    let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(v, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                    for r in 0..R {
                        let y = ys[r].q.add(b * ys[r].stride);
                        s[r] =
                            _mm256_add_epi16(s[r], _mm256_maddubs_epi16(lo, bcast4(y.add(4 * c))));
                        s[r] = _mm256_add_epi16(
                            s[r],
                            _mm256_maddubs_epi16(hi, bcast4(y.add(16 + 4 * c))),
                        );
                    }
                }
                let d = f16x8(sb);
                for r in 0..R {
                    let i = _mm256_cvtepi32_ps(_mm256_madd_epi16(s[r], ones));
                    let dy = _mm256_set1_ps(*ys[r].dy.add(b));
                    let off = _mm256_set1_ps(*ys[r].off.add(b));
                    if MINS {
                        // d_x d_y Σ q y + m_x s_y
                        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), i, acc[r]);
                        acc[r] = _mm256_fmadd_ps(f16x8(sb.add(16)), off, acc[r]);
                    } else {
                        // d_x (d_y Σ q y - 8 d_y Σ y)
                        acc[r] = _mm256_fmadd_ps(d, _mm256_fmsub_ps(i, dy, off), acc[r]);
                    }
                }
            }
            store(acc)
        }

        /// # Safety
        /// See [`super::group`].
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn q8_0<const R: usize>(kb: usize, w: *const u8, ys: &[Y; R]) -> [[f32; 8]; R] {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); R];
            for b in 0..kb {
                let sb = w.add(b * 8 * 34);
                let q = sb.add(16);
                // each chunk to i32 by its own madd: two i16 sums of
                // 2 x 127 x 128 could overflow
                let mut s = [_mm256_setzero_si256(); R];
                for c in 0..8 {
                    let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
                    let ax = _mm256_sign_epi8(v, v);
                    for r in 0..R {
                        let y = bcast4(ys[r].q.add(b * ys[r].stride + 4 * c));
                        let p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, v));
                        s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(p, ones));
                    }
                }
                let d = f16x8(sb);
                for r in 0..R {
                    let dy = _mm256_set1_ps(*ys[r].dy.add(b));
                    acc[r] =
                        _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(s[r]), acc[r]);
                }
            }
            store(acc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of `k` values that are not all alike.
    fn row(k: usize, s: usize) -> Vec<f32> {
        (0..k)
            .map(|i| ((i * 7919 + s * 104_729) % 1000) as f32 / 500.0 - 1.0 + 0.05 * s as f32)
            .collect()
    }

    fn check<T: GgmlType>(kind: Kind) {
        let (n, k) = (13, 96);
        let mut w = Vec::new();
        let mut blocks = Vec::new();
        for j in 0..n {
            let mut q = vec![T::zeros(); k / 32];
            T::from_float(&row(k, j), &mut q);
            blocks.extend_from_slice(block_bytes(&q));
            w.push(q);
        }
        let p = Packed::new(kind, &blocks, n, k).unwrap();
        assert_eq!(p.bytes(), 16 * (k / 32) * kind.block_bytes());
        // every row comes back as stored
        let ids: Vec<u32> = (0..n as u32).rev().collect();
        let got = p.rows(&ids).unwrap();
        for (i, &j) in ids.iter().enumerate() {
            let mut want = vec![0f32; k];
            T::to_float(&w[j as usize], &mut want);
            assert_eq!(&got[i * k..(i + 1) * k], &want[..], "row {j}");
        }
        // the products are candle's vec_dot's, for one activation row and
        // for six (a run of four and one of two), column splits included
        for (m, tasks) in [(1, 1), (1, 3), (6, 1), (6, 3)] {
            let x: Vec<f32> = (0..m).flat_map(|r| row(k, 50 + r)).collect();
            let mut out = vec![f32::NAN; m * n];
            p.matmul(&x, m, &mut out, tasks).unwrap();
            for r in 0..m {
                let mut y = vec![T::VecDotType::zeros(); k / 32];
                T::VecDotType::from_float(&x[r * k..(r + 1) * k], &mut y);
                for j in 0..n {
                    let want = T::vec_dot(k, &w[j], &y);
                    let got = out[r * n + j];
                    assert!(
                        (got - want).abs() <= 2e-3 * want.abs().max(1.0),
                        "{kind:?} row {r} col {j}: {got} vs candle's {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn repacked_kernels_match_candles_vec_dot() {
        if !has_avx2() {
            assert!(Kind::for_dtype(GgmlDType::Q4_0).is_none());
            return;
        }
        check::<BlockQ4_0>(Kind::Q4_0);
        check::<BlockQ4_1>(Kind::Q4_1);
        check::<BlockQ8_0>(Kind::Q8_0);
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(Packed::new(Kind::Q4_0, &[0u8; 18 * 3], 2, 64).is_err());
        assert!(Packed::new(Kind::Q4_0, &[0u8; 18], 1, 16).is_err());
        let p = Packed::new(Kind::Q8_0, &[0u8; 34 * 2], 2, 32).unwrap();
        let mut out = vec![0f32; 3];
        assert!(p.matmul(&[0f32; 32], 1, &mut out, 1).is_err());
        assert!(p.rows(&[2]).is_err());
    }
}
