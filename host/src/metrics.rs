//! Cell metrics, named and defined as vLLM's benchmarks define them (see
//! the README for the exact definitions):
//!
//! * `ttft_ms`: submit → first token, per request;
//! * `tpot_ms`: (E2EL − TTFT) / (output tokens − 1), per request with at
//!   least two tokens;
//! * `itl_ms`: every gap between consecutive tokens of a request, pooled
//!   over all requests;
//! * `e2el_ms`: submit → last token, per request;
//! * `request_throughput`, `output_throughput`, `total_token_throughput`:
//!   completed requests, generated tokens and prompt + generated tokens
//!   divided by the measured wall time (the sum of the measured
//!   iterations, each from its first submit to its last completion).
//!
//! Warmup iterations never enter any figure.

use crate::measure::RequestRecord;
use crate::stats::{summarize, Distribution};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One iteration's span, ns since the cell's epoch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct IterationSpan {
    pub index: u32,
    pub warmup: bool,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellMetrics {
    /// Measured iterations (warmups excluded).
    pub iterations: usize,
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    /// Failure reason -> count.
    pub failure_reasons: BTreeMap<String, usize>,
    /// Completed requests whose generated count differs from the
    /// requested output length.
    pub output_length_mismatches: usize,
    /// Generated token ids outside the model's vocabulary.
    pub out_of_vocab_tokens: usize,
    /// Requests whose token count seen by the host disagrees with the
    /// engine's own count.
    pub token_count_disagreements: usize,
    pub duration_s: f64,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft_ms: Option<Distribution>,
    pub tpot_ms: Option<Distribution>,
    pub itl_ms: Option<Distribution>,
    pub e2el_ms: Option<Distribution>,
    /// Engine-reported: submit → start of prefill.
    pub engine_queue_ms: Option<Distribution>,
    /// Engine-reported duration of the prefill step.
    pub engine_prefill_ms: Option<Distribution>,
}

const MS: f64 = 1e-6;

/// Computes the metrics of a cell from its raw records.
pub fn compute(
    records: &[RequestRecord],
    spans: &[IterationSpan],
    vocab: usize,
    expected_output: u32,
) -> CellMetrics {
    let measured: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
    let (mut ttft, mut tpot, mut itl, mut e2el) = (vec![], vec![], vec![], vec![]);
    let (mut queue, mut prefill) = (vec![], vec![]);
    let mut failure_reasons = BTreeMap::new();
    let (mut completed, mut failed, mut mismatches, mut oov, mut disagree) = (0, 0, 0, 0, 0);
    let (mut input_tokens, mut output_tokens) = (0u64, 0u64);
    for r in &measured {
        oov += r.tokens.iter().filter(|&&t| t as usize >= vocab).count();
        if let Some(e) = &r.error {
            failed += 1;
            *failure_reasons.entry(e.to_string()).or_insert(0) += 1;
            continue;
        }
        let Some(c) = r.completion else {
            failed += 1;
            *failure_reasons
                .entry("did not complete".to_string())
                .or_insert(0) += 1;
            continue;
        };
        completed += 1;
        input_tokens += r.prompt_tokens as u64;
        output_tokens += r.tokens.len() as u64;
        if r.tokens.len() != expected_output as usize {
            mismatches += 1;
        }
        if c.generated_tokens as usize != r.tokens.len() {
            disagree += 1;
        }
        queue.push(c.queue_us as f64 / 1e3);
        prefill.push(c.prefill_us as f64 / 1e3);
        let (Some(&first), Some(&last)) = (r.token_ns.first(), r.token_ns.last()) else {
            continue;
        };
        let t = first.saturating_sub(r.submit_ns) as f64 * MS;
        let e = last.saturating_sub(r.submit_ns) as f64 * MS;
        ttft.push(t);
        e2el.push(e);
        let n = r.token_ns.len();
        if n > 1 {
            tpot.push((e - t) / (n - 1) as f64);
        }
        itl.extend(
            r.token_ns
                .windows(2)
                .map(|w| w[1].saturating_sub(w[0]) as f64 * MS),
        );
    }
    let duration_s: f64 = spans
        .iter()
        .filter(|s| !s.warmup)
        .map(|s| s.end_ns.saturating_sub(s.start_ns) as f64 * 1e-9)
        .sum();
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    CellMetrics {
        iterations: spans.iter().filter(|s| !s.warmup).count(),
        requests: measured.len(),
        completed,
        failed,
        failure_reasons,
        output_length_mismatches: mismatches,
        out_of_vocab_tokens: oov,
        token_count_disagreements: disagree,
        duration_s,
        total_input_tokens: input_tokens,
        total_output_tokens: output_tokens,
        request_throughput: per_s(completed as f64),
        output_throughput: per_s(output_tokens as f64),
        total_token_throughput: per_s((input_tokens + output_tokens) as f64),
        ttft_ms: summarize(&ttft),
        tpot_ms: summarize(&tpot),
        itl_ms: summarize(&itl),
        e2el_ms: summarize(&e2el),
        engine_queue_ms: summarize(&queue),
        engine_prefill_ms: summarize(&prefill),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::{Completion, FinishReason};

    fn rec(id: u64, submit: u64, tokens_at_ms: &[u64], warmup: bool) -> RequestRecord {
        RequestRecord {
            id,
            warmup,
            prompt_tokens: 10,
            max_new_tokens: tokens_at_ms.len() as u32,
            submit_ns: submit,
            token_ns: tokens_at_ms.iter().map(|ms| ms * 1_000_000).collect(),
            tokens: vec![1; tokens_at_ms.len()],
            end_ns: tokens_at_ms.last().map(|ms| ms * 1_000_000),
            completion: Some(Completion {
                request_id: id,
                prompt_tokens: 10,
                generated_tokens: tokens_at_ms.len() as u32,
                finish_reason: FinishReason::Length,
                queue_us: 0,
                prefill_us: 0,
                decode_us: 0,
                decode_steps: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn vllm_definitions() {
        // tokens at 100, 110, 130 ms after a submit at 0
        let records = vec![
            rec(0, 0, &[100, 110, 130], false),
            rec(1, 0, &[1, 2, 3], true),
        ];
        let spans = [
            IterationSpan {
                index: 0,
                warmup: true,
                start_ns: 0,
                end_ns: 3_000_000,
            },
            IterationSpan {
                index: 0,
                warmup: false,
                start_ns: 0,
                end_ns: 200_000_000,
            },
        ];
        let m = compute(&records, &spans, 100, 3);
        assert_eq!(m.requests, 1, "warmup excluded");
        assert_eq!(m.ttft_ms.as_ref().unwrap().mean, 100.0);
        assert_eq!(m.e2el_ms.as_ref().unwrap().mean, 130.0);
        assert_eq!(m.tpot_ms.as_ref().unwrap().mean, 15.0);
        let itl = m.itl_ms.as_ref().unwrap();
        assert_eq!((itl.count, itl.min, itl.max), (2, 10.0, 20.0));
        assert!((m.output_throughput - 15.0).abs() < 1e-9); // 3 tokens / 0.2 s
        assert!((m.request_throughput - 5.0).abs() < 1e-9);
        assert!((m.total_token_throughput - 65.0).abs() < 1e-9);
        assert_eq!(m.output_length_mismatches, 0);
    }

    #[test]
    fn failures_mismatches_and_bad_tokens_are_counted() {
        let mut short = rec(0, 0, &[5], false);
        short.tokens = vec![500];
        let mut failed = rec(1, 0, &[], false);
        failed.completion = None;
        failed.error = Some(engine_api::EngineError::runtime("oom"));
        let spans = [IterationSpan {
            index: 0,
            warmup: false,
            start_ns: 0,
            end_ns: 1_000_000_000,
        }];
        let m = compute(&[short, failed], &spans, 100, 3);
        assert_eq!((m.completed, m.failed), (1, 1));
        assert_eq!(m.failure_reasons.get("runtime: oom"), Some(&1));
        assert_eq!(m.output_length_mismatches, 1);
        assert_eq!(m.out_of_vocab_tokens, 1);
        assert!(m.tpot_ms.is_none(), "one token has no TPOT");
    }
}
