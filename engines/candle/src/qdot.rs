//! SIMD dot products for a ggml block type whose candle 0.11.1 kernel is
//! scalar: `Q4_1` weights against `Q8_1` activations, the type of
//! SmolLM2-135M-Instruct's shipped GGUF. candle's `vec_dot` for it is the
//! generic loop (one nibble at a time), which made batch-1 decode of that
//! GGUF slower than f32; this is the same arithmetic with AVX2: the 32
//! nibbles of a block as bytes, `maddubs` against the 32 activation bytes
//! (u8 x i8 -> i16 pairs, at most 2 x 15 x 127, no overflow), `madd` to
//! i32, scaled by `d_x * d_y` into f32 lanes, and the block's offset term
//! `m_x * s_y` (`s_y` = `d_y` times the sum of the activation quants,
//! which candle's `Q8_1` stores) added once per block. Four weight rows
//! share each activation load.
//!
//! Blocks are read as bytes with the layout candle's `repr(C)` structs
//! have (checked by the tests against candle's own `vec_dot`):
//! `Q4_1` = `d: f16, m: f16, qs: [u8; 16]` (element `j` in the low nibble
//! of `qs[j]`, element `j + 16` in its high nibble), `Q8_1` = `d: f16,
//! s: f16, qs: [i8; 32]`.

/// Bytes of one `Q4_1` block and of one `Q8_1` block.
pub const Q4_1_BYTES: usize = 20;
pub const Q8_1_BYTES: usize = 36;

/// Dot products of four rows of `Q4_1` blocks with one row of `Q8_1`
/// blocks (`kb` blocks each), or `None` when this CPU lacks AVX2, FMA or
/// F16C (the caller then uses candle's kernel).
pub fn q4_1_q8_1_x4(kb: usize, x: [&[u8]; 4], y: &[u8]) -> Option<[f32; 4]> {
    if y.len() < kb * Q8_1_BYTES || x.iter().any(|r| r.len() < kb * Q4_1_BYTES) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU has the features (checked once), and every
            // row holds at least `kb` blocks (checked above).
            return Some(unsafe { avx2::q4_1_q8_1_x4(kb, x, y) });
        }
    }
    None
}

/// True when the AVX2 kernels can run on this CPU.
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Q4_1_BYTES, Q8_1_BYTES};
    use std::arch::x86_64::*;

    /// The two f16s at the start of a block, as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn two_f16(p: *const u8) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps::<1>(v, v)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// AVX2, FMA and F16C; `x[r]` holds `kb` `Q4_1` blocks, `y` `kb`
    /// `Q8_1` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1_q8_1_x4(kb: usize, x: [&[u8]; 4], y: &[u8]) -> [f32; 4] {
        let low = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offset = [0f32; 4];
        for b in 0..kb {
            let yb = y.as_ptr().add(b * Q8_1_BYTES);
            let (dy, sy) = two_f16(yb);
            let yq = _mm256_loadu_si256(yb.add(4) as *const __m256i);
            for r in 0..4 {
                let xb = x[r].as_ptr().add(b * Q4_1_BYTES);
                let (dx, mx) = two_f16(xb);
                let q = _mm_loadu_si128(xb.add(4) as *const __m128i);
                let lo = _mm_and_si128(q, low);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), low);
                let xq = _mm256_set_m128i(hi, lo);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(xq, yq), ones);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), _mm256_cvtepi32_ps(p), acc[r]);
                offset[r] += mx * sy;
            }
        }
        [
            hsum(acc[0]) + offset[0],
            hsum(acc[1]) + offset[1],
            hsum(acc[2]) + offset[2],
            hsum(acc[3]) + offset[3],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ4_1, BlockQ8_1};
    use candle_core::quantized::GgmlType;

    fn bytes<T>(v: &[T]) -> &[u8] {
        // SAFETY: plain-old-data blocks viewed as their bytes
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
    }

    #[test]
    fn q4_1_matches_candles_kernel() {
        assert_eq!(std::mem::size_of::<BlockQ4_1>(), Q4_1_BYTES);
        assert_eq!(std::mem::size_of::<BlockQ8_1>(), Q8_1_BYTES);
        if !has_avx2() {
            return;
        }
        let k = 256;
        let val = |i: usize, s: usize| ((i * 7919 + s * 104_729) % 1000) as f32 / 500.0 - 1.0;
        let mut rows = Vec::new();
        for r in 0..4 {
            let f: Vec<f32> = (0..k).map(|i| val(i, r) + 0.3 * r as f32).collect();
            let mut q = vec![BlockQ4_1::zeros(); k / 32];
            BlockQ4_1::from_float(&f, &mut q);
            rows.push(q);
        }
        let a: Vec<f32> = (0..k).map(|i| val(i, 9) * 3.0).collect();
        let mut y = vec![BlockQ8_1::zeros(); k / 32];
        BlockQ8_1::from_float(&a, &mut y);
        let got = q4_1_q8_1_x4(
            k / 32,
            [
                bytes(&rows[0]),
                bytes(&rows[1]),
                bytes(&rows[2]),
                bytes(&rows[3]),
            ],
            bytes(&y),
        )
        .unwrap();
        for r in 0..4 {
            let want = BlockQ4_1::vec_dot(k, &rows[r], &y);
            assert!(
                (got[r] - want).abs() <= 1e-4 * want.abs().max(1.0),
                "row {r}: {} vs candle's {want}",
                got[r]
            );
        }
        // short rows are refused, not read past
        assert!(q4_1_q8_1_x4(9, [bytes(&rows[0]); 4], bytes(&y)).is_none());
    }
}
