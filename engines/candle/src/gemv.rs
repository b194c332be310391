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
}
