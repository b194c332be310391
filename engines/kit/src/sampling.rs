//! Token selection from a row of logits: greedy, or temperature / top-k /
//! top-p with a per-request seeded generator, so that a seeded run is
//! reproducible on every engine that uses the kit.

use engine_api::Sampling;

/// xoshiro256** seeded through SplitMix64: small, fast, and identical on
/// every platform (no dependency whose stream could change between
/// versions).
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest logit; the first one on ties. NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Picks the next token. `scratch` is reused between calls to avoid
/// allocating in the decode loop.
pub fn sample(
    logits: &[f32],
    params: &Sampling,
    rng: &mut Rng,
    scratch: &mut Vec<(f32, u32)>,
) -> u32 {
    if params.is_greedy() {
        return argmax(logits);
    }
    let inv_t = 1.0 / params.temperature;
    scratch.clear();
    scratch.extend(
        logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (v * inv_t, i as u32)),
    );
    if scratch.is_empty() {
        return argmax(logits);
    }
    let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let k = params.top_k as usize;
    if k > 0 && k < scratch.len() {
        scratch.select_nth_unstable_by(k - 1, desc);
        scratch.truncate(k);
    }
    scratch.sort_unstable_by(desc);
    let max = scratch[0].0;
    let mut total = 0.0f64;
    for e in scratch.iter_mut() {
        e.0 = (e.0 - max).exp();
        total += e.0 as f64;
    }
    if params.top_p < 1.0 {
        let limit = params.top_p.max(0.0) as f64 * total;
        let mut cum = 0.0f64;
        let mut keep = scratch.len();
        for (i, e) in scratch.iter().enumerate() {
            cum += e.0 as f64;
            if cum >= limit {
                keep = i + 1;
                break;
            }
        }
        scratch.truncate(keep.max(1));
        total = scratch.iter().map(|e| e.0 as f64).sum();
    }
    let mut u = rng.next_f64() * total;
    for e in scratch.iter() {
        u -= e.0 as f64;
        if u < 0.0 {
            return e.1;
        }
    }
    scratch[scratch.len() - 1].1
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use super::*;
    use proptest::prelude::*;

    fn params(temperature: f32, top_k: u32, top_p: f32) -> Sampling {
        Sampling {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    #[test]
    fn greedy_takes_first_max() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.1]), 1);
        let mut rng = Rng::new(1);
        let mut s = Vec::new();
        assert_eq!(
            sample(&[0.0, 2.0, 1.0], &Sampling::GREEDY, &mut rng, &mut s),
            1
        );
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let mut c = Rng::new(43);
        let va: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.3, 0.1, 2.5, 2.4, -3.0];
        let mut rng = Rng::new(3);
        let mut s = Vec::new();
        for _ in 0..50 {
            assert_eq!(sample(&logits, &params(1.5, 1, 1.0), &mut rng, &mut s), 2);
        }
    }

    #[test]
    fn frequencies_follow_softmax() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let logits = [0.0, 3f32.ln()];
        let mut rng = Rng::new(11);
        let mut s = Vec::new();
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, &params(1.0, 0, 1.0), &mut rng, &mut s) == 1)
            .count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.02, "p = {p}");
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // probabilities ~ [0.665, 0.245, 0.09]: top_p = 0.6 keeps only the first.
        let logits = [2.0, 1.0, 0.0];
        let mut rng = Rng::new(5);
        let mut s = Vec::new();
        for _ in 0..200 {
            assert_eq!(sample(&logits, &params(1.0, 0, 0.6), &mut rng, &mut s), 0);
        }
        // top_p = 0.8 keeps two.
        let seen: std::collections::BTreeSet<u32> = (0..500)
            .map(|_| sample(&logits, &params(1.0, 0, 0.8), &mut rng, &mut s))
            .collect();
        assert_eq!(seen, [0, 1].into_iter().collect());
    }

    proptest! {
        #[test]
        fn sampled_token_is_in_range_and_within_top_k(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..64),
            t in 0.05f32..3.0, k in 0u32..8, p in 0.05f32..1.0, seed: u64,
        ) {
            let mut rng = Rng::new(seed);
            let mut s = Vec::new();
            let tok = sample(&logits, &params(t, k, p), &mut rng, &mut s) as usize;
            prop_assert!(tok < logits.len());
            if k > 0 {
                let better = logits.iter().filter(|&&v| v > logits[tok]).count();
                prop_assert!(better < k as usize);
            }
        }
    }
}
