//! The http engine's `score`: a prompt's log-probabilities from a server
//! that returns them, as the `[rows, vocab]` logits the host's quality
//! pass reads (perplexity, and KL divergence and top-1 agreement against
//! a reference engine).
//!
//! OpenAI-compatible servers return no full logits. vLLM (and
//! `engine-matrix serve`) return `prompt_logprobs` when a completion
//! request asks for them (`prompt_logprobs: k`): for every prompt token
//! after the first, the log-probabilities of the `k` most likely tokens
//! at that position and of the prompt's own token. The engine sends the
//! window as token ids with `max_tokens: 1` and greedy sampling, and
//! turns each position's map into a row:
//!
//! * the listed tokens get their log-probabilities, exactly as the
//!   server computed them, so the prompt token's log-likelihood, hence
//!   perplexity, is exact, and so is the most likely token (top-1
//!   agreement with a reference);
//! * the probability mass the list leaves (`1 - Σ p`) is spread evenly
//!   over the other tokens, so each row is still a distribution.
//!
//! KL divergence needs whole distributions: with the tail flattened it
//! would not be the server's (a model served by `engine-matrix serve`
//! scored 0.45 nats against the same engine in-process on SmolLM2, where
//! the truth is 0), so the engine's `describe` gives `score_top_k` and
//! the quality pass reports no KL divergence for it ([`SCORE_NOTE`]).
//!
//! A server that ignores the field (llama.cpp's llama-server, TGI) answers
//! without `prompt_logprobs`: `score` is then `unsupported` with that
//! reason, and the quality pass records "n/a" rather than a failure.

use engine_api::Logits;
use serde_json::{json, Value};

/// What the quality record says of figures that come from this engine.
pub const SCORE_NOTE: &str = "from the server's prompt_logprobs (its top-k per position and the \
     prompt's token): perplexity and top-1 are exact; no KL divergence, which needs whole \
     distributions";

/// The completion request that asks for the prompt's log-probabilities.
pub fn request_body(model: &str, tokens: &[u32], k: u32) -> Value {
    json!({
        "model": model,
        "prompt": tokens,
        "max_tokens": 1,
        "temperature": 0,
        "stream": false,
        "prompt_logprobs": k,
    })
}

/// Why a response gave no rows.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoreError {
    /// The server returned no `prompt_logprobs` (it does not support
    /// them): the engine cannot score.
    Missing,
    /// The response is not what vLLM sends, or does not fit the prompt.
    Malformed(String),
}

/// True when `resp`'s first choice carries `prompt_logprobs`.
pub fn has_prompt_logprobs(resp: &Value) -> bool {
    !resp["choices"][0]["prompt_logprobs"].is_null()
}

/// The `[tokens.len(), vocab]` rows of `resp`'s first choice's
/// `prompt_logprobs` for `tokens`: row `j` predicts token `j + 1`; the
/// last row, which predicts nothing in the prompt, is uniform.
pub fn logits_from(resp: &Value, tokens: &[u32], vocab: usize) -> Result<Logits, ScoreError> {
    let bad = |m: String| ScoreError::Malformed(m);
    let list = match resp["choices"][0].get("prompt_logprobs") {
        None | Some(Value::Null) => return Err(ScoreError::Missing),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(bad(format!("prompt_logprobs is not a list: {other}"))),
    };
    let n = tokens.len();
    if list.len() != n {
        return Err(bad(format!(
            "prompt_logprobs has {} entries for a prompt of {n} tokens",
            list.len()
        )));
    }
    if vocab == 0 {
        return Err(bad("a vocabulary of 0 tokens".into()));
    }
    let mut data = vec![0f32; n * vocab];
    for j in 0..n {
        let row = &mut data[j * vocab..(j + 1) * vocab];
        if j + 1 == n {
            row.fill(-(vocab as f32).ln());
            break;
        }
        let Some(map) = list[j + 1].as_object() else {
            return Err(bad(format!(
                "prompt_logprobs[{}] is not a map of token ids",
                j + 1
            )));
        };
        let mut known = Vec::with_capacity(map.len());
        for (id, entry) in map {
            let id: usize = id.parse().map_err(|_| {
                bad(format!(
                    "prompt_logprobs[{}]: key {id:?} is not a token id",
                    j + 1
                ))
            })?;
            let lp = entry["logprob"].as_f64().ok_or_else(|| {
                bad(format!(
                    "prompt_logprobs[{}][{id}] has no numeric logprob",
                    j + 1
                ))
            })?;
            if id >= vocab || lp.is_nan() || lp > 1e-6 {
                return Err(bad(format!(
                    "prompt_logprobs[{}]: token {id} with logprob {lp} (vocabulary {vocab})",
                    j + 1
                )));
            }
            known.push((id, lp.min(0.0)));
        }
        let target = tokens[j + 1] as usize;
        if !known.iter().any(|&(id, _)| id == target) {
            return Err(bad(format!(
                "prompt_logprobs[{}] lacks the prompt's token {target}",
                j + 1
            )));
        }
        let mass: f64 = known.iter().map(|&(_, lp)| lp.exp()).sum();
        let rest = vocab - known.len();
        let tail = if rest == 0 {
            f64::NEG_INFINITY
        } else {
            ((1.0 - mass).max(1e-30) / rest as f64).ln()
        };
        row.fill(tail as f32);
        for (id, lp) in known {
            row[id] = lp as f32;
        }
    }
    Ok(Logits {
        rows: n as u32,
        vocab: vocab as u32,
        data: data.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(list: Value) -> Value {
        json!({"choices": [{"index": 0, "text": "x", "prompt_logprobs": list}]})
    }

    #[test]
    fn rows_keep_the_listed_logprobs_and_spread_the_rest() {
        let (a, b) = (0.5f64.ln(), 0.25f64.ln());
        let r = resp(json!([
            null,
            {"2": {"logprob": a, "rank": 1}, "0": {"logprob": b, "rank": 2}},
            {"1": {"logprob": b, "rank": 2, "decoded_token": "x"}},
        ]));
        let l = logits_from(&r, &[7, 0, 1], 5).unwrap();
        assert_eq!((l.rows, l.vocab), (3, 5));
        // row 0: ids 2 and 0 as sent, the other three share 0.25
        let row = l.row(0);
        assert!((row[2] as f64 - a).abs() < 1e-6 && (row[0] as f64 - b).abs() < 1e-6);
        for id in [1, 3, 4] {
            assert!((row[id] as f64 - (0.25f64 / 3.0).ln()).abs() < 1e-6);
        }
        let total: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        // row 1: only the prompt's token listed; the last row is uniform
        assert!((l.row(1)[1] as f64 - b).abs() < 1e-6);
        assert!(l.row(2).iter().all(|&x| (x - -(5f32).ln()).abs() < 1e-6));
    }

    #[test]
    fn a_server_without_prompt_logprobs_or_a_broken_list_is_named() {
        let none = json!({"choices": [{"index": 0, "text": "x"}]});
        assert!(!has_prompt_logprobs(&none));
        assert!(has_prompt_logprobs(&resp(json!([null, {}]))));
        assert_eq!(logits_from(&none, &[1, 2], 4), Err(ScoreError::Missing));
        let cases = [
            (json!([null]), "1 entries for a prompt of 2"),
            (
                json!([null, {"3": {"logprob": -1.0}}]),
                "lacks the prompt's token 2",
            ),
            (json!([null, {"9": {"logprob": -1.0}}]), "token 9"),
            (json!([null, {"x": {"logprob": -1.0}}]), "not a token id"),
            (json!([null, {"2": {}}]), "no numeric logprob"),
            (json!([null, 5]), "not a map"),
        ];
        for (list, want) in cases {
            match logits_from(&resp(list.clone()), &[1, 2], 4) {
                Err(ScoreError::Malformed(m)) => assert!(m.contains(want), "{list}: {m}"),
                other => panic!("{list}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_request_asks_for_k_prompt_logprobs_and_one_greedy_token() {
        let b = request_body("m", &[3, 4], 20);
        assert_eq!(b["prompt"], json!([3, 4]));
        assert_eq!(b["prompt_logprobs"], 20);
        assert_eq!(b["max_tokens"], 1);
        assert_eq!(b["stream"], false);
    }
}
