//! Batch-1 products against one panel of a panel-major f32 weight
//! ([`crate::matmul::Weight::Panels`]), with the 64 partial sums held in
//! registers: `out[j] = Σ_k x[k] · panel[k, j]`.
//!
//! Why a kernel of our own: at `m = 1` gemm 0.19 runs a matrix–vector
//! path that is an axpy. For each input element it loads the destination,
//! adds the scaled weight row and stores it back. An Intel Xeon profile
//! of candle's batch-1 decode (`../shared/perf/intel-xeon-2026-12.md`)
//! put 92% of the samples in that loop, bound by the load–FMA–store chain
//! through the destination rather than by DRAM, at 52% of the bandwidth
//! roof. Here the destination is eight AVX registers (64 floats) for the
//! whole panel, so the loop is one broadcast, eight loads and eight FMAs
//! per input element: the weights stream once, in order, and nothing is
//! stored until the end.
//!
//! Eight accumulators give eight independent FMA chains, which covers the
//! FMA latency (4–5 cycles) at two FMAs per cycle; the loop then needs 64
//! bytes per cycle from the caches, far above DRAM's share per core, so a
//! decode step stays bandwidth-bound. AVX2 + FMA is enough for that on
//! AVX-512 CPUs too, so there is one x86 path, chosen at run time; other
//! CPUs use a portable loop that LLVM vectorises. Whether this or gemm is
//! faster on a given machine is measured, not assumed ([`crate::autotune`]).

use crate::matmul::PANEL;

/// `out[..cols] = x · panel[.., ..cols]` for one `[k, PANEL]` panel.
///
/// `x` holds `k` elements at stride `xs` (`x[i * xs]`); `panel` is the
/// `k * PANEL` floats of the panel, row-major; `cols <= PANEL`.
pub fn panel(x: &[f32], xs: usize, panel: &[f32], k: usize, out: &mut [f32]) {
    assert!(panel.len() >= k * PANEL, "gemv: panel shorter than k rows");
    assert!(out.len() <= PANEL, "gemv: more than one panel of output");
    assert!(
        k == 0 || (k - 1) * xs < x.len(),
        "gemv: x shorter than k elements"
    );
    let mut acc = [0f32; PANEL];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above); the
        // lengths were checked by the asserts.
        unsafe { avx2::panel(x.as_ptr(), xs, panel.as_ptr(), k, &mut acc) };
        out.copy_from_slice(&acc[..out.len()]);
        return;
    }
    portable(x, xs, panel, k, &mut acc);
    out.copy_from_slice(&acc[..out.len()]);
}

/// Most rows [`rows`] takes in one call.
pub const ROWS: usize = 16;

/// Rows of the weight panel (`k` rows of 256 bytes) that [`rows`] keeps in
/// L1 while every input row passes over them: 64 rows are 16 KiB.
const KB: usize = 64;

/// `out[r][..cols] = x[r] · panel[.., ..cols]` for `m <= ROWS` input rows
/// against one `[k, PANEL]` panel: small-batch decode.
///
/// `x[r][i]` is at `r * xs0 + i * xs1`; output row `r` starts at
/// `out[r * os]` and gets `cols <= PANEL` values.
///
/// Why not gemm: on a panel it walks 16-column slivers (one 64-byte line
/// of every 256-byte panel row) straight from memory, which leaves its
/// micro-kernel waiting on DRAM at batch 8 (four times the batch-1 time on
/// an AMD EPYC). Here the panel is cut into blocks of 64 rows (16 KiB): the
/// first pass over a block reads it from memory, prefetching the next
/// block line by line, so the stream stays sequential; every other input
/// row then finds the block in L1. Two input rows × 32 columns are eight
/// accumulators, four weight loads and two broadcasts per eight FMAs.
#[allow(clippy::too_many_arguments)] // the strides of a raw kernel
pub fn rows(
    x: &[f32],
    (xs0, xs1): (usize, usize),
    m: usize,
    panel: &[f32],
    k: usize,
    out: &mut [f32],
    os: usize,
    cols: usize,
) {
    assert!(m <= ROWS, "rows: more than {ROWS} input rows");
    assert!(cols <= PANEL, "rows: more than one panel of output");
    assert!(panel.len() >= k * PANEL, "rows: panel shorter than k rows");
    assert!(
        m == 0 || k == 0 || (m - 1) * xs0 + (k - 1) * xs1 < x.len(),
        "rows: x shorter than m rows of k elements"
    );
    assert!(
        m == 0 || (m - 1) * os + cols <= out.len(),
        "rows: out shorter than m rows"
    );
    // SAFETY: the asserts bound every read of x and panel and every write
    // of out.
    unsafe { rows_to(x, (xs0, xs1), m, panel, k, out.as_mut_ptr(), os, cols) }
}

/// [`rows`] writing through a pointer, for callers whose threads write
/// disjoint columns of one output (the panels of a matmul).
///
/// # Safety
/// `x`, `panel`, `m` and `cols` as [`rows`] asserts; `out` writable at
/// `r * os .. r * os + cols` for `r < m`, and no other thread touching
/// those elements meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_to(
    x: &[f32],
    (xs0, xs1): (usize, usize),
    m: usize,
    panel: &[f32],
    k: usize,
    out: *mut f32,
    os: usize,
    cols: usize,
) {
    debug_assert!(m <= ROWS && cols <= PANEL && panel.len() >= k * PANEL);
    let mut acc = [[0f32; PANEL]; ROWS];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        avx2::rows(x.as_ptr(), (xs0, xs1), m, panel.as_ptr(), k, &mut acc);
    } else {
        portable_rows(x, (xs0, xs1), m, panel, k, &mut acc);
    }
    #[cfg(not(target_arch = "x86_64"))]
    portable_rows(x, (xs0, xs1), m, panel, k, &mut acc);
    for (r, a) in acc.iter().take(m).enumerate() {
        std::ptr::copy_nonoverlapping(a.as_ptr(), out.add(r * os), cols);
    }
}

/// [`rows`] in plain Rust.
fn portable_rows(
    x: &[f32],
    (xs0, xs1): (usize, usize),
    m: usize,
    panel: &[f32],
    k: usize,
    acc: &mut [[f32; PANEL]; ROWS],
) {
    for (r, a) in acc.iter_mut().take(m).enumerate() {
        for (i, row) in panel.chunks_exact(PANEL).take(k).enumerate() {
            let xi = x[r * xs0 + i * xs1];
            for (a, w) in a.iter_mut().zip(row) {
                *a += xi * w;
            }
        }
    }
}

/// The same product in plain Rust (other CPUs, and the reference in tests).
fn portable(x: &[f32], xs: usize, panel: &[f32], k: usize, acc: &mut [f32; PANEL]) {
    for (i, row) in panel.chunks_exact(PANEL).take(k).enumerate() {
        let xi = x[i * xs];
        for (a, w) in acc.iter_mut().zip(row) {
            *a += xi * w;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::PANEL;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2 and FMA; `x` must be readable at `i * xs`
    /// for `i < k`, and `p` for `k * PANEL` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn panel(x: *const f32, xs: usize, p: *const f32, k: usize, out: &mut [f32; PANEL]) {
        const _: () = assert!(PANEL == 64, "the kernel holds 8 x 8 floats");
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let (mut a4, mut a5, mut a6, mut a7) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        for i in 0..k {
            let xb = _mm256_set1_ps(*x.add(i * xs));
            let r = p.add(i * PANEL);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r), xb, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(8)), xb, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(16)), xb, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(24)), xb, a3);
            a4 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(32)), xb, a4);
            a5 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(40)), xb, a5);
            a6 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(48)), xb, a6);
            a7 = _mm256_fmadd_ps(_mm256_loadu_ps(r.add(56)), xb, a7);
        }
        let o = out.as_mut_ptr();
        _mm256_storeu_ps(o, a0);
        _mm256_storeu_ps(o.add(8), a1);
        _mm256_storeu_ps(o.add(16), a2);
        _mm256_storeu_ps(o.add(24), a3);
        _mm256_storeu_ps(o.add(32), a4);
        _mm256_storeu_ps(o.add(40), a5);
        _mm256_storeu_ps(o.add(48), a6);
        _mm256_storeu_ps(o.add(56), a7);
    }

    /// Two input rows × 32 columns over `p`'s rows `k0..k1`.
    ///
    /// # Safety
    /// AVX2 + FMA; `x0`/`x1` readable at `i * xs` and `p` at
    /// `i * PANEL + half * 32 .. + 32` for `i` in `k0..k1`; a `prefetch`
    /// block's `rows` rows inside the same panel.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pair(
        x0: *const f32,
        x1: *const f32,
        xs: usize,
        p: *const f32,
        (k0, k1): (usize, usize),
        half: usize,
        a0: &mut [f32; PANEL],
        a1: &mut [f32; PANEL],
        prefetch: Option<(*const f32, usize)>,
    ) {
        let (o0, o1) = (
            a0.as_mut_ptr().add(half * 32),
            a1.as_mut_ptr().add(half * 32),
        );
        let (mut c00, mut c01, mut c02, mut c03) = (
            _mm256_loadu_ps(o0),
            _mm256_loadu_ps(o0.add(8)),
            _mm256_loadu_ps(o0.add(16)),
            _mm256_loadu_ps(o0.add(24)),
        );
        let (mut c10, mut c11, mut c12, mut c13) = (
            _mm256_loadu_ps(o1),
            _mm256_loadu_ps(o1.add(8)),
            _mm256_loadu_ps(o1.add(16)),
            _mm256_loadu_ps(o1.add(24)),
        );
        for i in k0..k1 {
            if let Some((next, _)) = prefetch.filter(|&(_, rows)| i - k0 < rows) {
                // the next block's row i - k0: four 64-byte lines
                let q = next.add((i - k0) * PANEL).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(q);
                _mm_prefetch::<_MM_HINT_T0>(q.add(64));
                _mm_prefetch::<_MM_HINT_T0>(q.add(128));
                _mm_prefetch::<_MM_HINT_T0>(q.add(192));
            }
            let r = p.add(i * PANEL + half * 32);
            let (w0, w1, w2, w3) = (
                _mm256_loadu_ps(r),
                _mm256_loadu_ps(r.add(8)),
                _mm256_loadu_ps(r.add(16)),
                _mm256_loadu_ps(r.add(24)),
            );
            let b0 = _mm256_set1_ps(*x0.add(i * xs));
            let b1 = _mm256_set1_ps(*x1.add(i * xs));
            c00 = _mm256_fmadd_ps(w0, b0, c00);
            c01 = _mm256_fmadd_ps(w1, b0, c01);
            c02 = _mm256_fmadd_ps(w2, b0, c02);
            c03 = _mm256_fmadd_ps(w3, b0, c03);
            c10 = _mm256_fmadd_ps(w0, b1, c10);
            c11 = _mm256_fmadd_ps(w1, b1, c11);
            c12 = _mm256_fmadd_ps(w2, b1, c12);
            c13 = _mm256_fmadd_ps(w3, b1, c13);
        }
        _mm256_storeu_ps(o0, c00);
        _mm256_storeu_ps(o0.add(8), c01);
        _mm256_storeu_ps(o0.add(16), c02);
        _mm256_storeu_ps(o0.add(24), c03);
        _mm256_storeu_ps(o1, c10);
        _mm256_storeu_ps(o1.add(8), c11);
        _mm256_storeu_ps(o1.add(16), c12);
        _mm256_storeu_ps(o1.add(24), c13);
    }

    /// The blocked loop of [`super::rows`]; an odd last row pairs with
    /// itself into a scratch accumulator.
    ///
    /// # Safety
    /// AVX2 + FMA; `x` readable at `r * xs0 + i * xs1` for `r < m`,
    /// `i < k`; `p` for `k * PANEL` floats; `m <= ROWS`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows(
        x: *const f32,
        (xs0, xs1): (usize, usize),
        m: usize,
        p: *const f32,
        k: usize,
        acc: &mut [[f32; PANEL]; super::ROWS],
    ) {
        let mut spare = [0f32; PANEL];
        // the first block, before any pass can prefetch it
        for line in 0..(k.min(super::KB) * PANEL).div_ceil(16) {
            _mm_prefetch::<_MM_HINT_T0>(p.add(line * 16).cast::<i8>());
        }
        let mut k0 = 0;
        while k0 < k {
            let k1 = (k0 + super::KB).min(k);
            let next = (k1 < k).then(|| (p.add(k1 * PANEL), (k - k1).min(super::KB)));
            let mut r = 0;
            while r < m {
                let (x0, x1) = (x.add(r * xs0), x.add((r + 1).min(m - 1) * xs0));
                let (lo, hi) = acc.split_at_mut(r + 1);
                let a0 = &mut lo[r];
                let a1 = if r + 1 < m { &mut hi[0] } else { &mut spare };
                for half in 0..2 {
                    // the block's first pass prefetches the next block
                    let pf = if r == 0 && half == 0 { next } else { None };
                    pair(x0, x1, xs1, p, (k0, k1), half, a0, a1, pf);
                }
                r += 2;
            }
            k0 = k1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded values in [-1, 1) (no rand dependency for a test).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn register_kernel_matches_a_plain_sum() {
        for (k, xs, cols) in [(1, 1, 64), (7, 1, 64), (768, 1, 64), (33, 3, 17), (0, 1, 5)] {
            let x = values(k.max(1) * xs, 1 + k as u64);
            let p = values(k * PANEL, 2 + k as u64);
            let mut got = vec![f32::NAN; cols];
            panel(&x, xs, &p, k, &mut got);
            for (j, g) in got.iter().enumerate() {
                // f64 sum: the reference's own rounding is far below the bound
                let want: f64 = (0..k)
                    .map(|i| f64::from(x[i * xs]) * f64::from(p[i * PANEL + j]))
                    .sum();
                let tol = 1e-5 * (k as f64).sqrt().max(1.0);
                assert!(
                    (f64::from(*g) - want).abs() <= tol,
                    "k {k} xs {xs} col {j}: {g} vs {want}"
                );
            }
            let mut acc = [0f32; PANEL];
            portable(&x, xs, &p, k, &mut acc);
            for (a, g) in acc.iter().zip(&got) {
                assert!((a - g).abs() <= 1e-4 * (k as f32).sqrt().max(1.0));
            }
        }
    }

    #[test]
    #[should_panic(expected = "panel shorter")]
    fn a_short_panel_is_refused() {
        panel(&[1.0; 4], 1, &[0.0; 64], 4, &mut [0.0; 64]);
    }

    #[test]
    fn rows_kernel_matches_a_plain_sum() {
        // (m, k, x strides, cols): odd and even row counts, k not a
        // multiple of the block, a strided x, a partial panel
        for (m, k, (xs0, xs1), cols) in [
            (1, 5, (5, 1), 64),
            (2, 64, (64, 1), 64),
            (3, 130, (131, 1), 64),
            (8, 768, (768, 1), 64),
            (16, 200, (1, 16), 33),
            (7, 1, (1, 7), 9),
        ] {
            let x = values(m * xs0.max(1) + k * xs1, 3 + k as u64);
            let p = values(k * PANEL, 4 + m as u64);
            let os = cols + 3;
            let mut got = vec![f32::NAN; m * os];
            rows(&x, (xs0, xs1), m, &p, k, &mut got, os, cols);
            for r in 0..m {
                for j in 0..cols {
                    let want: f64 = (0..k)
                        .map(|i| f64::from(x[r * xs0 + i * xs1]) * f64::from(p[i * PANEL + j]))
                        .sum();
                    let g = f64::from(got[r * os + j]);
                    let tol = 1e-5 * (k as f64).sqrt().max(1.0);
                    assert!(
                        (g - want).abs() <= tol,
                        "m {m} k {k} row {r} col {j}: {g} vs {want}"
                    );
                }
                // the gap between output rows is left alone
                assert!(got[r * os + cols..(r + 1) * os].iter().all(|v| v.is_nan()));
            }
            let mut acc = [[0f32; PANEL]; ROWS];
            portable_rows(&x, (xs0, xs1), m, &p, k, &mut acc);
            for r in 0..m {
                for j in 0..cols {
                    assert!((acc[r][j] - got[r * os + j]).abs() <= 1e-4 * (k as f32).sqrt());
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "more than 16 input rows")]
    fn too_many_rows_are_refused() {
        rows(
            &[0.0; 17 * 4],
            (4, 1),
            17,
            &[0.0; 4 * 64],
            4,
            &mut [0.0; 17 * 64],
            64,
            64,
        );
    }
}
