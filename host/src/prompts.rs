//! Seeded random prompts of exactly the requested length, like vLLM's
//! `random` dataset: token ids drawn uniformly from the vocabulary (minus
//! the end-of-sequence token). The seed depends on the matrix seed, the
//! cell's workload (not its engine) and the request index, so every
//! engine of a comparison sees the very same prompts.

/// Generates prompts for one cell.
#[derive(Debug, Clone)]
pub struct PromptGen {
    key: u64,
    vocab: u32,
    eos: Option<u32>,
}

use crate::rng::{fnv1a, splitmix64 as splitmix};

impl PromptGen {
    /// `workload_key` identifies what the prompts are for (scenario,
    /// model and parameters, but not the engine).
    pub fn new(seed: u64, workload_key: &str, vocab: u32, eos: Option<u32>) -> Self {
        PromptGen {
            key: seed ^ fnv1a(workload_key.as_bytes()),
            vocab: vocab.max(2),
            eos,
        }
    }

    pub fn prompt(&self, index: u64, len: usize) -> Vec<u32> {
        let mut state = self.key ^ index.wrapping_mul(0xA24B_AED4_963E_E407);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            // Lemire's multiply-shift: uniform enough for a 2^16-ish vocab.
            let t = (((splitmix(&mut state) >> 32) * self.vocab as u64) >> 32) as u32;
            if Some(t) != self.eos {
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deterministic_and_distinct() {
        let g = PromptGen::new(0, "latency/gpt2/in128", 50257, Some(50256));
        assert_eq!(g.prompt(3, 128), g.prompt(3, 128));
        assert_ne!(g.prompt(3, 128), g.prompt(4, 128));
        let h = PromptGen::new(0, "latency/gpt2/in512", 50257, Some(50256));
        assert_ne!(g.prompt(3, 128), h.prompt(3, 128));
    }

    proptest! {
        #[test]
        fn exact_length_in_vocab_without_eos(len in 1usize..600, vocab in 2u32..70000, idx: u64) {
            let g = PromptGen::new(1, "k", vocab, Some(vocab - 1));
            let p = g.prompt(idx, len);
            prop_assert_eq!(p.len(), len);
            prop_assert!(p.iter().all(|&t| t < vocab - 1));
        }
    }
}
