//! Quality of a model's next-token distributions: perplexity over an
//! evaluation text, and agreement with a reference engine's distributions
//! at the same positions (KL divergence, top-1 agreement).
//!
//! The text is cut into windows of `context` tokens, each evaluated from
//! scratch (its own forward, no state carried over), and only the second
//! half of each window is scored, so that every scored token sees at
//! least `context / 2` tokens before it: the scheme of llama.cpp's
//! `llama-perplexity` (its `first = n_ctx / 2`). Position `j` of a window
//! predicts token `j + 1`, so a window of `n` tokens scores positions
//! `n / 2 ..= n - 2`.
//!
//! Sums are accumulated in `f64` from `f32` logits; log-softmax subtracts
//! the row's maximum first, so huge logits do not overflow.

use std::ops::Range;

/// The windows of `n_tokens` tokens: consecutive, `context` long, the
/// remainder shorter than a window dropped (as `llama-perplexity` does).
pub fn windows(n_tokens: usize, context: usize) -> Vec<Range<usize>> {
    if context < 2 {
        return Vec::new();
    }
    (0..n_tokens / context)
        .map(|i| i * context..(i + 1) * context)
        .collect()
}

/// The positions of a window of `n` tokens that are scored: from `n / 2`
/// to `n - 2` (each predicts the next token).
pub fn scored(n: usize) -> Range<usize> {
    n / 2..n.saturating_sub(1)
}

/// `ln softmax(row)`, in `f64`.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    row.iter().map(|&x| x as f64 - log_z).collect()
}

/// `KL(P || Q)` of two distributions given as log-probabilities (`P` the
/// reference): `sum p (ln p - ln q)`, never negative.
pub fn kl_divergence(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p
        .iter()
        .zip(log_q)
        .filter(|(lp, _)| lp.is_finite())
        .map(|(&lp, &lq)| lp.exp() * (lp - lq))
        .sum::<f64>()
        .max(0.0)
}

/// Index of the largest value (the first of equal ones).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// What the scored positions of every window add up to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityAcc {
    nll_sum: f64,
    scored: u64,
    windows: u64,
    kld: Vec<f64>,
    top1_same: u64,
}

/// The figures of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityFigures {
    pub windows: u64,
    /// Positions scored.
    pub scored: u64,
    /// Mean negative log-likelihood of the scored tokens (nats).
    pub nll_mean: f64,
    /// `exp(nll_mean)`.
    pub perplexity: f64,
    /// Against a reference: mean and 99th percentile of `KL(reference ||
    /// engine)` over the scored positions, and the share of them whose
    /// most likely token is the reference's.
    pub kld_mean: Option<f64>,
    pub kld_p99: Option<f64>,
    pub top1_agreement: Option<f64>,
}

/// A window's logits do not fit its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

impl QualityAcc {
    /// Adds one window: `tokens` and the engine's `logits` of every
    /// position (`[tokens.len(), vocab]`), and the reference's logits of
    /// the same positions when there is a reference.
    pub fn add_window(
        &mut self,
        tokens: &[u32],
        logits: &[f32],
        reference: Option<&[f32]>,
        vocab: usize,
    ) -> Result<(), ShapeError> {
        let n = tokens.len();
        let fits = |l: &[f32]| vocab > 0 && l.len() == n * vocab;
        if !fits(logits) || reference.is_some_and(|r| !fits(r)) {
            return Err(ShapeError(format!(
                "a window of {n} tokens needs {} logits of vocabulary {vocab}, got {}{}",
                n * vocab,
                logits.len(),
                reference.map_or(String::new(), |r| format!(" (reference {})", r.len()))
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ShapeError(format!(
                "token {t} is outside the vocabulary of {vocab}"
            )));
        }
        for j in scored(n) {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let next = tokens[j + 1] as usize;
            let lq = log_softmax(row);
            self.nll_sum -= lq[next];
            self.scored += 1;
            if let Some(r) = reference {
                let rrow = &r[j * vocab..(j + 1) * vocab];
                self.kld.push(kl_divergence(&log_softmax(rrow), &lq));
                self.top1_same += u64::from(argmax(rrow) == argmax(row));
            }
        }
        self.windows += 1;
        Ok(())
    }

    /// The figures so far (`None` before any position was scored).
    pub fn figures(&self) -> Option<QualityFigures> {
        if self.scored == 0 {
            return None;
        }
        let nll_mean = self.nll_sum / self.scored as f64;
        let compared = self.kld.len();
        let (kld_mean, kld_p99, top1) = if compared == 0 {
            (None, None, None)
        } else {
            let mut k = self.kld.clone();
            k.sort_by(f64::total_cmp);
            let p99 = crate::stats::percentile(&k, 99.0);
            (
                Some(k.iter().sum::<f64>() / compared as f64),
                Some(p99),
                Some(self.top1_same as f64 / compared as f64),
            )
        };
        Some(QualityFigures {
            windows: self.windows,
            scored: self.scored,
            nll_mean,
            perplexity: nll_mean.exp(),
            kld_mean,
            kld_p99,
            top1_agreement: top1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_drop_the_remainder_and_score_their_second_half() {
        assert_eq!(windows(10, 4), vec![0..4, 4..8]);
        assert!(windows(3, 4).is_empty());
        assert!(windows(10, 1).is_empty());
        assert_eq!(scored(4), 2..3);
        assert_eq!(scored(512), 256..511);
    }

    #[test]
    fn uniform_logits_have_the_vocabulary_as_perplexity() {
        let mut acc = QualityAcc::default();
        let tokens = [1u32, 2, 3, 0, 1, 2];
        let logits = vec![0.5f32; 6 * 4];
        acc.add_window(&tokens, &logits, Some(&logits), 4).unwrap();
        let f = acc.figures().unwrap();
        assert_eq!((f.windows, f.scored), (1, 2));
        assert!((f.perplexity - 4.0).abs() < 1e-9, "{f:?}");
        assert_eq!(f.kld_mean, Some(0.0));
        assert_eq!(f.top1_agreement, Some(1.0));
    }

    #[test]
    fn a_sure_right_model_has_perplexity_one_and_a_wrong_one_disagrees() {
        // vocab 3, tokens 0 1 2 0: position j predicts tokens[j + 1]
        let tokens = [0u32, 1, 2, 0];
        let mut right = vec![0f32; 4 * 3];
        let mut wrong = vec![0f32; 4 * 3];
        for j in 0..3 {
            right[j * 3 + tokens[j + 1] as usize] = 100.0;
            wrong[j * 3 + (tokens[j + 1] as usize + 1) % 3] = 100.0;
        }
        let mut acc = QualityAcc::default();
        acc.add_window(&tokens, &right, None, 3).unwrap();
        let f = acc.figures().unwrap();
        assert!((f.perplexity - 1.0).abs() < 1e-9);
        assert_eq!(f.kld_mean, None);
        let mut acc = QualityAcc::default();
        acc.add_window(&tokens, &wrong, Some(&right), 3).unwrap();
        let f = acc.figures().unwrap();
        assert!(f.perplexity > 1e40, "{f:?}");
        assert_eq!(f.top1_agreement, Some(0.0));
        assert!(f.kld_mean.unwrap() > 90.0, "{f:?}");
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let mut acc = QualityAcc::default();
        let e = acc.add_window(&[0, 1], &[0.0; 5], None, 3).unwrap_err();
        assert!(e.0.contains("needs 6 logits"), "{e}");
        let e = acc
            .add_window(&[0, 1], &[0.0; 6], Some(&[0.0; 3]), 3)
            .unwrap_err();
        assert!(e.0.contains("reference 3"), "{e}");
        let e = acc
            .add_window(&[0, 1, 7, 1], &[0.0; 12], None, 3)
            .unwrap_err();
        assert!(e.0.contains("outside the vocabulary"), "{e}");
        assert_eq!(acc.figures(), None);
    }

    proptest! {
        #[test]
        fn kl_is_zero_on_itself_positive_otherwise_and_shift_invariant(
            p in prop::collection::vec(-20f32..20.0, 2..40),
            q_seed in prop::collection::vec(-20f32..20.0, 40),
            shift in -1000f32..1000.0,
        ) {
            let lp = log_softmax(&p);
            prop_assert!(kl_divergence(&lp, &lp).abs() < 1e-9);
            let q: Vec<f32> = q_seed[..p.len()].to_vec();
            let lq = log_softmax(&q);
            prop_assert!(kl_divergence(&lp, &lq) >= 0.0);
            // logits shifted by a constant are the same distribution
            let shifted: Vec<f32> = p.iter().map(|x| x + shift).collect();
            let ls = log_softmax(&shifted);
            prop_assert!(kl_divergence(&lp, &ls) < 1e-6);
            // probabilities sum to one
            let total: f64 = lp.iter().map(|x| x.exp()).sum();
            prop_assert!((total - 1.0).abs() < 1e-9);
        }
    }
}
