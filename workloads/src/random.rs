//! Seeded random prompts of exactly the requested length, like vLLM's
//! `random` dataset: token ids drawn uniformly from the vocabulary (minus
//! the end-of-sequence token). The seed depends on the matrix seed, the
//! cell's workload (not its engine) and the request index, so every
//! engine of a comparison sees the very same prompts.
//!
//! The shared-prefix workload (`dataset: prefix`, as vLLM's
//! `prefix_repetition` and genai-bench's prefix ratio) puts one of
//! `groups` prefixes of `prefix_tokens` before a random suffix: request
//! `i` has prefix `i mod groups`, and its suffix is its own. The prefixes
//! are drawn from their own seeds, so a prefix is the same whatever the
//! prompt length around it.

use crate::{Sample, WorkloadRecord};
use engine_matrix_stats::rng::{fnv1a, splitmix64 as splitmix};

/// Generates seeded token ids for one cell.
#[derive(Debug, Clone)]
pub struct PromptGen {
    key: u64,
    vocab: u32,
    eos: Option<u32>,
}

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

    /// `len` ids for request `index`.
    pub fn prompt(&self, index: u64, len: usize) -> Vec<u32> {
        self.ids(self.key ^ index.wrapping_mul(0xA24B_AED4_963E_E407), len)
    }

    /// `len` ids for shared prefix `group`.
    pub fn prefix(&self, group: u64, len: usize) -> Vec<u32> {
        self.ids(
            self.key ^ 0x5052_4546_4958 ^ group.wrapping_mul(0xD6E8_FEB8_6659_FD93),
            len,
        )
    }

    fn ids(&self, mut state: u64, len: usize) -> Vec<u32> {
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

/// The `random` and `prefix` workloads: fixed lengths.
#[derive(Debug, Clone)]
pub struct RandomPrompts {
    pub gen: PromptGen,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Shared tokens at the start of each prompt (0: `random`).
    pub prefix_tokens: u32,
    pub prefix_groups: u32,
}

impl RandomPrompts {
    pub fn request(&self, index: u64) -> Sample {
        let input = self.input_tokens as usize;
        let shared = (self.prefix_tokens as usize).min(input);
        let mut prompt = if shared > 0 {
            self.gen
                .prefix(index % u64::from(self.prefix_groups.max(1)), shared)
        } else {
            Vec::with_capacity(input)
        };
        prompt.extend(self.gen.prompt(index, input - shared));
        Sample {
            prompt,
            output_tokens: self.output_tokens,
        }
    }

    pub fn record(&self) -> WorkloadRecord {
        WorkloadRecord {
            dataset: if self.prefix_tokens > 0 {
                "prefix"
            } else {
                "random"
            }
            .into(),
            ..Default::default()
        }
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

    #[test]
    fn prefix_groups_share_exactly_their_prefix() {
        let r = RandomPrompts {
            gen: PromptGen::new(7, "k", 1000, Some(0)),
            input_tokens: 40,
            output_tokens: 5,
            prefix_tokens: 30,
            prefix_groups: 3,
        };
        let reqs: Vec<Sample> = (0..9).map(|i| r.request(i)).collect();
        for (i, a) in reqs.iter().enumerate() {
            assert_eq!((a.prompt.len(), a.output_tokens), (40, 5));
            for (j, b) in reqs.iter().enumerate().skip(i + 1) {
                let common = a
                    .prompt
                    .iter()
                    .zip(&b.prompt)
                    .take_while(|(x, y)| x == y)
                    .count();
                if i % 3 == j % 3 {
                    // Same group: the prefix, and (by chance) rarely more.
                    assert!((30..32).contains(&common), "{i} {j}: {common}");
                } else {
                    assert!(common < 2, "{i} {j}: {common}");
                }
            }
        }
        // The random workload is the same generator without a prefix.
        let plain = RandomPrompts {
            prefix_tokens: 0,
            ..r.clone()
        };
        assert_eq!(plain.request(4).prompt, r.gen.prompt(4, 40));
        assert_eq!(plain.record().dataset, "random");
        assert_eq!(r.record().dataset, "prefix");
        // All of the prompt shared: every request of a group is the same.
        let all = RandomPrompts {
            prefix_tokens: 40,
            ..r
        };
        assert_eq!(all.request(1), all.request(4));
    }

    proptest! {
        #[test]
        fn exact_length_in_vocab_without_eos(len in 1usize..600, vocab in 2u32..70000, idx: u64) {
            let g = PromptGen::new(1, "k", vocab, Some(vocab - 1));
            let p = g.prompt(idx, len);
            prop_assert_eq!(p.len(), len);
            prop_assert!(p.iter().all(|&t| t < vocab - 1));
        }

        #[test]
        fn prefix_prompts_have_the_requested_length(input in 1u32..300, prefix in 0u32..300, groups in 1u32..5, idx: u64) {
            let r = RandomPrompts {
                gen: PromptGen::new(2, "k", 500, None),
                input_tokens: input,
                output_tokens: 1,
                prefix_tokens: prefix.min(input),
                prefix_groups: groups,
            };
            let s = r.request(idx);
            prop_assert_eq!(s.prompt.len(), input as usize);
            prop_assert!(s.prompt.iter().all(|&t| t < 500));
        }
    }
}
