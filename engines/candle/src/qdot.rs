//! SIMD dot products of four weight rows with one activation row, where
//! candle 0.11.1's kernels are scalar or slower:
//!
//! * `Q4_1` weights against `Q8_1` activations, the type of
//!   SmolLM2-135M-Instruct's shipped GGUF. candle's `vec_dot` for it is
//!   the generic loop (one nibble at a time), which made batch-1 decode of
//!   that GGUF slower than f32; this is the same arithmetic with AVX2: the
//!   16 quant bytes loaded into both halves of a register and shifted by 0
//!   and 4 (the 32 nibbles as bytes), `maddubs` against the 32 activation
//!   bytes (u8 x i8 -> i16 pairs, at most 2 x 15 x 127, no overflow),
//!   `madd` to i32, scaled by `d_x * d_y` into f32 lanes, and the block's
//!   offset term `m_x * s_y` (`s_y` = `d_y` times the sum of the
//!   activation quants, which candle's `Q8_1` stores) added once per
//!   block.
//! * `Q8_0` against `Q8_0` (SmolLM2's GGUF embeddings as its tied lm_head,
//!   and `quantization: q8_0`) and `Q4_0` against `Q8_0`: the arithmetic
//!   of candle's AVX2 kernels (`Q4_0`'s nibbles minus 8; `sign` makes the
//!   weights unsigned for `maddubs`, with the signs moved onto the
//!   activations), four rows per call.
//!
//! The four rows are walked one after the other (the activation row, at
//! most a few KiB, stays in L1): measured on SmolLM2-135M batch-1 decode
//! (2 threads, AMD EPYC), walking the four rows' blocks interleaved was
//! slower, q4_1 8.5 ms against 5.4-5.9 ms per token, q8_0 14.5-16.5 ms
//! against 6.5-8.0 ms (candle's own kernel, one row per call: 8.1-9.9
//! ms).
//!
//! Blocks are read as bytes with the layout candle's `repr(C)` structs
//! have (checked by the tests against candle's own `vec_dot`):
//! `Q4_1` = `d: f16, m: f16, qs: [u8; 16]` (element `j` in the low nibble
//! of `qs[j]`, element `j + 16` in its high nibble), `Q8_1` = `d: f16,
//! s: f16, qs: [i8; 32]`, `Q8_0` = `d: f16, qs: [i8; 32]`.

/// Bytes of one `Q4_1` block and of one `Q8_1` block.
pub const Q4_1_BYTES: usize = 20;
pub const Q8_1_BYTES: usize = 36;
/// Bytes of one `Q8_0` block and of one `Q4_0` block.
pub const Q8_0_BYTES: usize = 34;
pub const Q4_0_BYTES: usize = 18;

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

/// [`q4_1_q8_1_x4`] for `Q8_0` weights and activations.
pub fn q8_0_q8_0_x4(kb: usize, x: [&[u8]; 4], y: &[u8]) -> Option<[f32; 4]> {
    if y.len() < kb * Q8_0_BYTES || x.iter().any(|r| r.len() < kb * Q8_0_BYTES) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: as in q4_1_q8_1_x4.
            return Some(unsafe { avx2::q8_0_q8_0_x4(kb, x, y) });
        }
    }
    None
}

/// [`q4_1_q8_1_x4`] for `Q4_0` weights and `Q8_0` activations.
pub fn q4_0_q8_0_x4(kb: usize, x: [&[u8]; 4], y: &[u8]) -> Option<[f32; 4]> {
    if y.len() < kb * Q8_0_BYTES || x.iter().any(|r| r.len() < kb * Q4_0_BYTES) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: as in q4_1_q8_1_x4.
            return Some(unsafe { avx2::q4_0_q8_0_x4(kb, x, y) });
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
    use super::{Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, Q8_1_BYTES};
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
        let low = _mm256_set1_epi8(0x0F);
        // the 16 quant bytes in both lanes, the high lane shifted by 4:
        // low nibbles (elements 0..16) below, high ones (16..32) above
        let shift = _mm256_set_epi64x(4, 4, 0, 0);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offset = [0f32; 4];
        for r in 0..4 {
            for b in 0..kb {
                let yb = y.as_ptr().add(b * Q8_1_BYTES);
                let (dy, sy) = two_f16(yb);
                let yq = _mm256_loadu_si256(yb.add(4) as *const __m256i);
                let xb = x[r].as_ptr().add(b * Q4_1_BYTES);
                let (dx, mx) = two_f16(xb);
                let q = _mm256_broadcastsi128_si256(_mm_loadu_si128(xb.add(4) as *const __m128i));
                let xq = _mm256_and_si256(_mm256_srlv_epi64(q, shift), low);
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

    /// The f16 at `p`, as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn one_f16(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p as *const u16).read_unaligned() as i32,
        )))
    }

    /// # Safety
    /// AVX2, FMA and F16C; `x[r]` holds `kb` `Q4_0` blocks, `y` `kb`
    /// `Q8_0` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_0_q8_0_x4(kb: usize, x: [&[u8]; 4], y: &[u8]) -> [f32; 4] {
        let low = _mm256_set1_epi8(0x0F);
        let eight = _mm256_set1_epi8(8);
        let shift = _mm256_set_epi64x(4, 4, 0, 0);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        for r in 0..4 {
            for b in 0..kb {
                let yb = y.as_ptr().add(b * Q8_0_BYTES);
                let yq = _mm256_loadu_si256(yb.add(2) as *const __m256i);
                let xb = x[r].as_ptr().add(b * Q4_0_BYTES);
                let q = _mm256_broadcastsi128_si256(_mm_loadu_si128(xb.add(2) as *const __m128i));
                let xq = _mm256_sub_epi8(_mm256_and_si256(_mm256_srlv_epi64(q, shift), low), eight);
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(xq, xq), _mm256_sign_epi8(yq, xq));
                let p = _mm256_madd_epi16(p, ones);
                let d = one_f16(xb) * one_f16(yb);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), acc[r]);
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }

    /// # Safety
    /// AVX2, FMA and F16C; `x[r]` and `y` hold `kb` `Q8_0` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0_q8_0_x4(kb: usize, x: [&[u8]; 4], y: &[u8]) -> [f32; 4] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        for r in 0..4 {
            for b in 0..kb {
                let yb = y.as_ptr().add(b * Q8_0_BYTES);
                let dy = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    (yb as *const u16).read_unaligned() as i32,
                )));
                let yq = _mm256_loadu_si256(yb.add(2) as *const __m256i);
                let xb = x[r].as_ptr().add(b * Q8_0_BYTES);
                let dx = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    (xb as *const u16).read_unaligned() as i32,
                )));
                let xq = _mm256_loadu_si256(xb.add(2) as *const __m256i);
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(xq, xq), _mm256_sign_epi8(yq, xq));
                let p = _mm256_madd_epi16(p, ones);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), _mm256_cvtepi32_ps(p), acc[r]);
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
    use candle_core::quantized::GgmlType;

    fn bytes<T>(v: &[T]) -> &[u8] {
        // SAFETY: plain-old-data blocks viewed as their bytes
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
    }

    #[test]
    fn kernels_match_candles() {
        assert_eq!(std::mem::size_of::<BlockQ4_1>(), Q4_1_BYTES);
        assert_eq!(std::mem::size_of::<BlockQ8_0>(), Q8_0_BYTES);
        assert_eq!(std::mem::size_of::<BlockQ4_0>(), Q4_0_BYTES);
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
        // Q8_0 weights against Q8_0 activations
        let mut q8 = Vec::new();
        for r in 0..4 {
            let f: Vec<f32> = (0..k).map(|i| val(i, r + 4) - 0.2 * r as f32).collect();
            let mut q = vec![BlockQ8_0::zeros(); k / 32];
            BlockQ8_0::from_float(&f, &mut q);
            q8.push(q);
        }
        let mut y8 = vec![BlockQ8_0::zeros(); k / 32];
        BlockQ8_0::from_float(&a, &mut y8);
        let got = q8_0_q8_0_x4(
            k / 32,
            [bytes(&q8[0]), bytes(&q8[1]), bytes(&q8[2]), bytes(&q8[3])],
            bytes(&y8),
        )
        .unwrap();
        for r in 0..4 {
            let want = BlockQ8_0::vec_dot(k, &q8[r], &y8);
            assert!(
                (got[r] - want).abs() <= 1e-4 * want.abs().max(1.0),
                "q8_0 row {r}"
            );
        }
        // Q4_0 weights against the same Q8_0 activations
        let mut q4 = Vec::new();
        for r in 0..4 {
            let f: Vec<f32> = (0..k).map(|i| val(i, r + 8) * (1.0 + r as f32)).collect();
            let mut q = vec![BlockQ4_0::zeros(); k / 32];
            BlockQ4_0::from_float(&f, &mut q);
            q4.push(q);
        }
        let got = q4_0_q8_0_x4(
            k / 32,
            [bytes(&q4[0]), bytes(&q4[1]), bytes(&q4[2]), bytes(&q4[3])],
            bytes(&y8),
        )
        .unwrap();
        for r in 0..4 {
            let want = BlockQ4_0::vec_dot(k, &q4[r], &y8);
            assert!(
                (got[r] - want).abs() <= 1e-4 * want.abs().max(1.0),
                "q4_0 row {r}"
            );
        }
        // short rows are refused, not read past
        assert!(q4_1_q8_1_x4(9, [bytes(&rows[0]); 4], bytes(&y)).is_none());
    }
}
