//! Cell metrics, named and defined as vLLM's benchmarks define them (see
//! docs/metrics.md for the exact definitions):
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
//!
//! Other tools name some of these differently, so [`CellMetrics::aliases`]
//! exports their definitions under explicit names: AIPerf's ITL is vLLM's
//! TPOT; guidellm's TPOT and llmperf's ITL both divide the whole E2EL
//! (TTFT included) by the output tokens.
//!
//! [`CellMetrics::per_iteration`] keeps one figure set per measured
//! iteration: iterations (or whole repeated runs), not tokens, are the
//! sampling unit of the report's confidence intervals and of `compare`,
//! because tokens of one iteration are not independent samples.

use crate::measure::{IterationSpan, RequestRecord};
use crate::stats::summarize;
pub use engine_matrix_results::metrics::{CellMetrics, IterationFigures, MetricAliases};
use std::collections::BTreeMap;

/// Per-request timing figures (ms) of one completed request.
struct RequestTimes {
    ttft: f64,
    e2el: f64,
    tpot: Option<f64>,
    per_token: f64,
}

fn times(r: &RequestRecord) -> Option<RequestTimes> {
    let (first, last) = (*r.token_ns.first()?, *r.token_ns.last()?);
    let ttft = first.saturating_sub(r.submit_ns) as f64 * MS;
    let e2el = last.saturating_sub(r.submit_ns) as f64 * MS;
    let n = r.produced();
    Some(RequestTimes {
        ttft,
        e2el,
        tpot: (n > 1).then(|| (e2el - ttft) / (n - 1) as f64),
        per_token: e2el / n as f64,
    })
}

fn gaps(r: &RequestRecord) -> impl Iterator<Item = f64> + '_ {
    r.token_ns
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 * MS)
}

fn completed(r: &RequestRecord) -> bool {
    r.error.is_none() && r.completion.is_some()
}

fn p50(xs: &[f64]) -> Option<f64> {
    summarize(xs).map(|d| d.p50)
}

/// The figures of each measured iteration.
pub fn per_iteration(records: &[RequestRecord], spans: &[IterationSpan]) -> Vec<IterationFigures> {
    spans
        .iter()
        .filter(|s| !s.warmup)
        .map(|span| {
            let reqs: Vec<&RequestRecord> = records
                .iter()
                .filter(|r| !r.warmup && r.iteration == span.index && completed(r))
                .collect();
            let t: Vec<RequestTimes> = reqs.iter().filter_map(|r| times(r)).collect();
            let itl: Vec<f64> = reqs.iter().flat_map(|r| gaps(r)).collect();
            let duration_s = span.end_ns.saturating_sub(span.start_ns) as f64 * 1e-9;
            let output_tokens: u64 = reqs.iter().map(|r| r.produced() as u64).sum();
            let rate = |x: f64| {
                if duration_s > 0.0 {
                    x / duration_s
                } else {
                    0.0
                }
            };
            IterationFigures {
                index: span.index,
                duration_s,
                completed: reqs.len(),
                output_tokens,
                request_throughput: rate(reqs.len() as f64),
                output_throughput: rate(output_tokens as f64),
                ttft_p50_ms: p50(&t.iter().map(|x| x.ttft).collect::<Vec<_>>()),
                tpot_p50_ms: p50(&t.iter().filter_map(|x| x.tpot).collect::<Vec<_>>()),
                itl_p50_ms: p50(&itl),
                e2el_p50_ms: p50(&t.iter().map(|x| x.e2el).collect::<Vec<_>>()),
            }
        })
        .collect()
}

const MS: f64 = 1e-6;

/// Bins of the request-length histograms.
const LENGTH_BINS: usize = 20;

/// Computes the metrics of a cell from its raw records. A completed
/// request whose output length differs from the one it asked for is an
/// output-length mismatch.
pub fn compute(records: &[RequestRecord], spans: &[IterationSpan], vocab: usize) -> CellMetrics {
    let measured: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
    let (mut ttft, mut tpot, mut itl, mut e2el) = (vec![], vec![], vec![], vec![]);
    let (mut queue, mut prefill, mut per_token) = (vec![], vec![], vec![]);
    let mut failure_reasons = BTreeMap::new();
    let (mut completed, mut failed, mut mismatches, mut oov, mut disagree) = (0, 0, 0, 0, 0);
    let (mut input_tokens, mut output_tokens) = (0u64, 0u64);
    let (mut input_lengths, mut output_lengths) = (vec![], vec![]);
    // (cached, prompt) tokens of the requests whose engine counts hits.
    let mut cache: Option<(u64, u64)> = None;
    // turn -> (prompt lengths, TTFTs, E2ELs)
    type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);
    let mut turns: BTreeMap<u32, Samples> = BTreeMap::new();
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
        output_tokens += r.produced() as u64;
        input_lengths.push(f64::from(r.prompt_tokens));
        if let Some(n) = c.cached_prompt_tokens.into_option() {
            let (hit, all) = cache.get_or_insert((0, 0));
            *hit += u64::from(n);
            *all += u64::from(c.prompt_tokens);
        }
        output_lengths.push(r.produced() as f64);
        if r.produced() != r.max_new_tokens as usize {
            mismatches += 1;
        }
        if c.generated_tokens as usize != r.tokens.len() {
            disagree += 1;
        }
        queue.push(c.queue_us as f64 / 1e3);
        prefill.push(c.prefill_us as f64 / 1e3);
        let Some(t) = times(r) else {
            continue;
        };
        ttft.push(t.ttft);
        e2el.push(t.e2el);
        if let Some(k) = r.turn {
            let e = turns.entry(k).or_default();
            e.0.push(f64::from(r.prompt_tokens));
            e.1.push(t.ttft);
            e.2.push(t.e2el);
        }
        per_token.push(t.per_token);
        tpot.extend(t.tpot);
        itl.extend(gaps(r));
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
        aliases: MetricAliases {
            aiperf_itl_ms: summarize(&tpot),
            guidellm_tpot_ms: summarize(&per_token),
            llmperf_itl_ms: summarize(&per_token),
        },
        per_iteration: per_iteration(records, spans),
        tpot_ms: summarize(&tpot),
        itl_ms: summarize(&itl),
        e2el_ms: summarize(&e2el),
        engine_queue_ms: summarize(&queue),
        engine_prefill_ms: summarize(&prefill),
        serving: None,
        input_lengths: summarize(&input_lengths),
        output_lengths: summarize(&output_lengths),
        input_histogram: engine_matrix_stats::stats::histogram(&input_lengths, LENGTH_BINS),
        output_histogram: engine_matrix_stats::stats::histogram(&output_lengths, LENGTH_BINS),
        cached_prompt_tokens: cache.map(|(hit, _)| hit),
        prefix_cache_hit_rate: cache
            .filter(|(_, all)| *all > 0)
            .map(|(hit, all)| hit as f64 / all as f64),
        per_turn: turns
            .into_iter()
            .map(
                |(turn, (inp, tt, ee))| engine_matrix_results::metrics::TurnFigures {
                    turn,
                    requests: tt.len(),
                    input_lengths: summarize(&inp),
                    ttft_ms: summarize(&tt),
                    e2el_ms: summarize(&ee),
                },
            )
            .collect(),
        workload: None,
        server: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::{Completion, FinishReason};

    /// One measured iteration of one second.
    fn one_second() -> [IterationSpan; 1] {
        [IterationSpan {
            index: 0,
            warmup: false,
            start_ns: 0,
            end_ns: 1_000_000_000,
            rss_bytes: None,
        }]
    }

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
                cached_prompt_tokens: engine_api::abi_stable::std_types::RNone,
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
                rss_bytes: None,
            },
            IterationSpan {
                index: 0,
                warmup: false,
                start_ns: 0,
                end_ns: 200_000_000,
                rss_bytes: None,
            },
        ];
        let m = compute(&records, &spans, 100);
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
        // other tools' definitions
        assert_eq!(m.aliases.aiperf_itl_ms.as_ref().unwrap().mean, 15.0);
        let per_token = 130.0 / 3.0;
        assert!((m.aliases.guidellm_tpot_ms.as_ref().unwrap().mean - per_token).abs() < 1e-9);
        assert!((m.aliases.llmperf_itl_ms.as_ref().unwrap().mean - per_token).abs() < 1e-9);
        // one measured iteration
        assert_eq!(m.per_iteration.len(), 1);
        let it = &m.per_iteration[0];
        assert_eq!((it.completed, it.output_tokens), (1, 3));
        assert!((it.output_throughput - 15.0).abs() < 1e-9);
        assert_eq!(it.ttft_p50_ms, Some(100.0));
        assert_eq!(it.tpot_p50_ms, Some(15.0));
        assert_eq!(it.itl_p50_ms, Some(15.0));
        assert_eq!(it.e2el_p50_ms, Some(130.0));
    }

    #[test]
    fn per_iteration_figures_split_requests_by_iteration() {
        let mut a = rec(0, 0, &[10, 20], false);
        a.iteration = 0;
        let mut b = rec(1, 100_000_000, &[140, 160, 180], false);
        b.iteration = 1;
        let mut failed = rec(2, 100_000_000, &[], false);
        failed.iteration = 1;
        failed.completion = None;
        failed.error = Some(engine_api::EngineError::runtime("x"));
        let span = |index, start_ms: u64, end_ms: u64| IterationSpan {
            index,
            warmup: false,
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            rss_bytes: None,
        };
        let spans = [span(0, 0, 50), span(1, 100, 200)];
        let its = per_iteration(&[a, b, failed], &spans);
        assert_eq!(its.len(), 2);
        assert_eq!((its[0].completed, its[0].output_tokens), (1, 2));
        assert!((its[0].output_throughput - 40.0).abs() < 1e-9); // 2 / 0.05 s
        assert_eq!((its[1].completed, its[1].output_tokens), (1, 3));
        assert!((its[1].output_throughput - 30.0).abs() < 1e-9); // 3 / 0.1 s
        assert_eq!(its[1].ttft_p50_ms, Some(40.0));
        assert_eq!(its[1].e2el_p50_ms, Some(80.0));
    }

    #[test]
    fn a_server_count_above_the_chunks_is_flagged_and_used() {
        // Two chunks at 100 and 130 ms, but the server's usage says 4
        // tokens (one chunk carried three): a disagreement, not a short
        // output; TPOT and throughput use the 4.
        let mut r = rec(0, 0, &[100, 130], false);
        r.completion.as_mut().unwrap().generated_tokens = 4;
        r.max_new_tokens = 4;
        let spans = one_second();
        let m = compute(&[r], &spans, 100);
        assert_eq!(m.token_count_disagreements, 1);
        assert_eq!(m.output_length_mismatches, 0);
        assert_eq!(m.total_output_tokens, 4);
        assert_eq!(m.tpot_ms.as_ref().unwrap().mean, 10.0);
        assert_eq!(m.itl_ms.as_ref().unwrap().mean, 30.0, "ITL stays per chunk");
    }

    #[test]
    fn failures_mismatches_and_bad_tokens_are_counted() {
        let mut short = rec(0, 0, &[5], false);
        short.tokens = vec![500];
        short.max_new_tokens = 3;
        let mut failed = rec(1, 0, &[], false);
        failed.completion = None;
        failed.error = Some(engine_api::EngineError::runtime("oom"));
        let spans = one_second();
        let m = compute(&[short, failed], &spans, 100);
        assert_eq!((m.completed, m.failed), (1, 1));
        assert_eq!(m.failure_reasons.get("runtime: oom"), Some(&1));
        assert_eq!(m.output_length_mismatches, 1);
        assert_eq!(m.out_of_vocab_tokens, 1);
        assert!(m.tpot_ms.is_none(), "one token has no TPOT");
    }

    #[test]
    fn each_request_is_held_to_its_own_length_and_lengths_are_summarised() {
        // A dataset's requests: prompts of 10, 20 and 30 tokens asking
        // for 1, 2 and 3 tokens; the third got 2.
        let mut a = rec(0, 0, &[5], false);
        let mut b = rec(1, 0, &[5, 6], false);
        let mut c = rec(2, 0, &[5, 6], false);
        (a.prompt_tokens, b.prompt_tokens, c.prompt_tokens) = (10, 20, 30);
        c.max_new_tokens = 3;
        let spans = one_second();
        let m = compute(&[a, b, c], &spans, 100);
        assert_eq!(m.output_length_mismatches, 1);
        let i = m.input_lengths.as_ref().unwrap();
        assert_eq!(
            (i.count, i.min, i.p50, i.max, i.mean),
            (3, 10.0, 20.0, 30.0, 20.0)
        );
        let o = m.output_lengths.as_ref().unwrap();
        assert_eq!((o.count, o.min, o.max), (3, 1.0, 2.0));
        let h = m.input_histogram.as_ref().unwrap();
        assert_eq!(h.bins.iter().map(|b| b.count).sum::<u64>(), 3);
        assert_eq!((h.bins[0].lo, h.bins.last().unwrap().hi), (10.0, 31.0));
        assert_eq!(m.total_input_tokens, 60);
        assert_eq!(
            (m.cached_prompt_tokens, m.prefix_cache_hit_rate),
            (None, None),
            "no engine said"
        );
    }

    #[test]
    fn the_prefix_cache_hit_rate_is_cached_over_prompt_tokens_of_the_requests_that_say() {
        use engine_api::abi_stable::std_types::{RNone, RSome};
        let mut a = rec(0, 0, &[5], false);
        let mut b = rec(1, 0, &[5], false);
        let mut c = rec(2, 0, &[5], false);
        // The server's counts: 30 of 40 prompt tokens cached, 0 of 20; a
        // third request says nothing and is left out.
        let set = |r: &mut RequestRecord, prompt: u32, cached| {
            let c = r.completion.as_mut().unwrap();
            c.prompt_tokens = prompt;
            c.cached_prompt_tokens = cached;
        };
        set(&mut a, 40, RSome(30));
        set(&mut b, 20, RSome(0));
        set(&mut c, 99, RNone);
        let spans = one_second();
        let m = compute(&[a, b, c], &spans, 100);
        assert_eq!(m.cached_prompt_tokens, Some(30));
        assert_eq!(m.prefix_cache_hit_rate, Some(0.5));
    }
}
