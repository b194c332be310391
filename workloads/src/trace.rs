//! Trace replay (`dataset: trace`): a timestamped JSON Lines trace in
//! Mooncake's format (the FAST'25 traces of `kvcache-ai/Mooncake`), one
//! request a line, sent by the open-loop `serving` scenario at the trace's
//! own times:
//!
//! ```json
//! {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]}
//! ```
//!
//! * `timestamp`: when the request arrives, in milliseconds (a
//!   non-negative number; never lower than the line before's). Request
//!   `i` is sent `(timestamp_i − timestamp_0) / 1000 × time_scale` seconds
//!   after the first.
//! * `input_length`, `output_length`: the prompt's and the answer's
//!   tokens (positive integers); the matrix's `output_tokens`, when set,
//!   replaces every `output_length`.
//! * `hash_ids`: one id per [`BLOCK_TOKENS`]-token block of the prompt
//!   (Mooncake hashes each 512-token block together with everything
//!   before it, so two requests with the same first `k` ids share their
//!   first `k` blocks). Each id stands for a deterministic block of token
//!   ids drawn from a generator seeded by the id
//!   ([`PromptGen::prefix`]): equal ids give equal blocks, and so the
//!   trace's shared prefixes. The prompt is the blocks in order, cut to
//!   `input_length`; when the blocks are fewer than `input_length` needs
//!   (an empty list, or a trace whose ids stop short), the rest is
//!   request-specific random ids, shared with no other request.
//!
//! Other keys on a line are ignored: traces converted by other tools carry
//! extra fields (session or turn ids) that do not change the replay, and
//! all four keys above are required, so a misspelt one is still an error.
//!
//! Errors name the file, the line and the field
//! (`trace.jsonl:4: [3].timestamp: ...`): a missing file, malformed JSON,
//! a missing or negative field, a timestamp lower than the previous
//! line's, an empty trace, and a request whose input and output exceed
//! the model's context (an engine would refuse it; a replay that silently
//! dropped it would replay another trace).
//!
//! Everything is built before the cell is timed ([`Trace`]): the prompts
//! of every line (the trace's length in memory: lines × mean input × 4
//! bytes) and the send times in nanoseconds.

use crate::random::PromptGen;
use crate::{Sample, WorkloadError, WorkloadRecord};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Tokens per `hash_ids` block: Mooncake's block size (its traces hash
/// the prompt 512 tokens at a time).
pub const BLOCK_TOKENS: usize = 512;

const REQUIRED: [&str; 4] = ["timestamp", "input_length", "output_length", "hash_ids"];

/// One line of the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// 1-based line in the file.
    pub line: usize,
    pub timestamp_ms: f64,
    pub input_length: u32,
    pub output_length: u32,
    pub hash_ids: Vec<u64>,
}

/// Reads and checks a trace file.
pub fn load(path: &Path) -> Result<Vec<Entry>, WorkloadError> {
    let (file, text) = crate::read_text(path, "trace")?;
    parse(&text, &file)
}

/// [`load`] on text already read. Blank lines are skipped; entry `[i]`
/// is the `i`th request (0-based), at its own line number.
pub fn parse(text: &str, file: &str) -> Result<Vec<Entry>, WorkloadError> {
    let mut out: Vec<Entry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| WorkloadError::At {
            file: file.to_string(),
            line: n + 1,
            field: format!("column {}", e.column()),
            message: format!("malformed JSON: {e}"),
        })?;
        let e = entry(file, out.len(), n + 1, v)?;
        if let Some(prev) = out.last() {
            if e.timestamp_ms < prev.timestamp_ms {
                return Err(WorkloadError::At {
                    file: file.to_string(),
                    line: e.line,
                    field: format!("[{}].timestamp", out.len()),
                    message: format!(
                        "{} ms is before the previous request's {} ms (line {}): a trace's timestamps must not decrease",
                        e.timestamp_ms, prev.timestamp_ms, prev.line
                    ),
                });
            }
        }
        out.push(e);
    }
    if out.is_empty() {
        return Err(WorkloadError::File {
            file: file.to_string(),
            message: "no requests in the trace".into(),
        });
    }
    Ok(out)
}

fn entry(file: &str, index: usize, line: usize, v: Value) -> Result<Entry, WorkloadError> {
    let at = |field: &str, message: String| WorkloadError::At {
        file: file.to_string(),
        line,
        field: format!("[{index}]{field}"),
        message,
    };
    let Value::Object(obj) = v else {
        return Err(at(
            "",
            format!("expected an object with {}, got {v}", REQUIRED.join(", ")),
        ));
    };
    let get = |key: &str| {
        obj.get(key).filter(|v| !v.is_null()).ok_or_else(|| {
            at(
                &format!(".{key}"),
                format!(
                    "missing (every request of a Mooncake trace has {})",
                    REQUIRED.join(", ")
                ),
            )
        })
    };
    let ts = get("timestamp")?;
    let timestamp_ms = ts
        .as_f64()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| {
            at(
                ".timestamp",
                format!("expected a non-negative number of milliseconds, got {ts}"),
            )
        })?;
    let positive = |key: &str| -> Result<u32, WorkloadError> {
        let v = get(key)?;
        v.as_u64()
            .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                at(
                    &format!(".{key}"),
                    format!("expected a positive number of tokens, got {v}"),
                )
            })
    };
    let input_length = positive("input_length")?;
    let output_length = positive("output_length")?;
    let ids = get("hash_ids")?;
    let Value::Array(items) = ids else {
        return Err(at(
            ".hash_ids",
            format!("expected a list of non-negative integers (one per {BLOCK_TOKENS}-token block), got {ids}"),
        ));
    };
    let hash_ids = items
        .iter()
        .enumerate()
        .map(|(k, h)| {
            h.as_u64().ok_or_else(|| {
                at(
                    &format!(".hash_ids[{k}]"),
                    format!("expected a non-negative integer, got {h}"),
                )
            })
        })
        .collect::<Result<Vec<u64>, _>>()?;
    Ok(Entry {
        line,
        timestamp_ms,
        input_length,
        output_length,
        hash_ids,
    })
}

/// A trace ready to replay: request `i` is `samples[i]`, due
/// `times_ns[i]` after the first.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Send times from the first request, in nanoseconds (the trace's
    /// milliseconds × `time_scale`, rounded to the nanosecond).
    pub times_ns: Vec<u64>,
    pub samples: Vec<Sample>,
    pub record: WorkloadRecord,
    /// Draws the warmup prompts (see [`Trace::warmup`]).
    gen: PromptGen,
}

impl Trace {
    /// Request `i`'s send time in seconds from the first.
    pub fn time_s(&self, i: usize) -> f64 {
        self.times_ns[i] as f64 * 1e-9
    }

    /// Warmup request `index`: random ids of request `index mod n`'s
    /// lengths, shared with no request of the trace, so the engine is
    /// warm for the trace's shapes while a prefix cache stays cold for
    /// its blocks.
    pub fn warmup(&self, index: u64) -> Sample {
        let n = self.samples.len().max(1) as u64;
        let like = &self.samples[(index % n) as usize];
        Sample {
            prompt: self.gen.prompt(n + index, like.prompt.len()),
            output_tokens: like.output_tokens,
        }
    }
}

/// Builds every request of the trace: its prompt from the blocks of its
/// `hash_ids` (drawn by `gen`, see the module documentation), its output
/// length (`fixed_output`, else the trace's), and its send time scaled by
/// `time_scale`. A request whose input and output exceed `context` is an
/// error at its line.
pub fn build(
    entries: &[Entry],
    file: &str,
    gen: &PromptGen,
    fixed_output: Option<u32>,
    context: usize,
    time_scale: f64,
) -> Result<Trace, WorkloadError> {
    let first = entries.first().map_or(0.0, |e| e.timestamp_ms);
    let mut blocks: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut samples = Vec::with_capacity(entries.len());
    let mut times_ns = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let input = e.input_length as usize;
        let output = fixed_output.unwrap_or(e.output_length);
        if input + output as usize > context {
            return Err(WorkloadError::At {
                file: file.to_string(),
                line: e.line,
                field: format!("[{i}].input_length"),
                message: format!(
                    "{input} input tokens + {output} output tokens exceed the model's context of {context}"
                ),
            });
        }
        let mut prompt = Vec::with_capacity(input);
        for &h in &e.hash_ids {
            if prompt.len() >= input {
                break;
            }
            let block = blocks
                .entry(h)
                .or_insert_with(|| gen.prefix(h, BLOCK_TOKENS));
            let take = (input - prompt.len()).min(BLOCK_TOKENS);
            prompt.extend_from_slice(&block[..take]);
        }
        if prompt.len() < input {
            prompt.extend(gen.prompt(i as u64, input - prompt.len()));
        }
        samples.push(Sample {
            prompt,
            output_tokens: output,
        });
        times_ns.push(((e.timestamp_ms - first) * 1e6 * time_scale).round() as u64);
    }
    let record = WorkloadRecord {
        dataset: "trace".into(),
        file: Some(file.to_string()),
        entries: Some(entries.len()),
        pool: Some(samples.len()),
        ..Default::default()
    };
    Ok(Trace {
        times_ns,
        samples,
        record,
        gen: gen.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen() -> PromptGen {
        PromptGen::new(3, "trace-test", 1000, Some(999))
    }

    fn line(ts: u64, input: u32, output: u32, ids: &[u64]) -> String {
        format!(
            "{{\"timestamp\": {ts}, \"input_length\": {input}, \"output_length\": {output}, \"hash_ids\": {ids:?}}}\n"
        )
    }

    fn common(a: &[u32], b: &[u32]) -> usize {
        a.iter().zip(b).take_while(|(x, y)| x == y).count()
    }

    #[test]
    fn shared_hash_ids_give_shared_prefixes_and_the_trace_gives_the_lengths() {
        let text = [
            line(1000, 1200, 52, &[1, 2, 3]),
            line(1000, 700, 10, &[1, 2]),
            "\n".into(),
            line(1500, 600, 7, &[1, 9]),
            line(2750, 1100, 3, &[5]),
            line(4000, 512, 1, &[1, 2, 3]),
        ]
        .concat();
        let entries = parse(&text, "t.jsonl").unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[2].line, 4, "blank lines keep the numbering");
        let t = build(&entries, "t.jsonl", &gen(), None, 4096, 1.0).unwrap();
        let lens: Vec<(usize, u32)> = t
            .samples
            .iter()
            .map(|s| (s.prompt.len(), s.output_tokens))
            .collect();
        assert_eq!(lens, [(1200, 52), (700, 10), (600, 7), (1100, 3), (512, 1)]);
        assert!(t.samples.iter().all(|s| s.prompt.iter().all(|&x| x < 999)));
        let p = |i: usize| &t.samples[i].prompt;
        // [1, 2, 3] and [1, 2]: the whole of the shorter (block 1, and
        // 188 tokens of block 2).
        assert_eq!(common(p(0), p(1)), 700);
        // [1, 9]: block 1 only (block 9 differs, but for chance).
        assert!(
            (512..515).contains(&common(p(0), p(2))),
            "{}",
            common(p(0), p(2))
        );
        // [5]: nothing shared; its last 588 tokens are its own padding.
        assert!(common(p(0), p(3)) < 3);
        assert_eq!(p(4)[..], p(0)[..512], "the first block, alone");
        // A block is the same wherever it is cut.
        assert_eq!(p(1)[512..700], p(0)[512..700]);
        // The padding is request-specific.
        let again = build(&entries, "t.jsonl", &gen(), None, 4096, 1.0).unwrap();
        assert_eq!(again.samples, t.samples, "deterministic");
        assert!(common(&p(3)[512..], &p(0)[512..]) < 3);
        // Times from the first request, in ns.
        assert_eq!(
            t.times_ns,
            [0, 0, 500_000_000, 1_750_000_000, 3_000_000_000]
        );
        assert_eq!(t.time_s(3), 1.75);
        assert_eq!(
            (t.record.dataset.as_str(), t.record.entries, t.record.pool),
            ("trace", Some(5), Some(5))
        );
        // time_scale stretches or compresses every gap; output_tokens
        // fixes every output.
        let half = build(&entries, "t.jsonl", &gen(), Some(4), 4096, 0.5).unwrap();
        assert_eq!(
            half.times_ns,
            [0, 0, 250_000_000, 875_000_000, 1_500_000_000]
        );
        assert!(half.samples.iter().all(|s| s.output_tokens == 4));
        assert_eq!(half.samples[0].prompt, t.samples[0].prompt);
        // Warmup prompts have a request's lengths and share none of its
        // blocks.
        let w = t.warmup(0);
        assert_eq!((w.prompt.len(), w.output_tokens), (1200, 52));
        assert!(common(&w.prompt, p(0)) < 3);
        assert_eq!(t.warmup(6).prompt.len(), 700, "cycling");
    }

    #[test]
    fn fractional_milliseconds_and_extra_keys_are_accepted() {
        let text = "{\"timestamp\": 0.5, \"input_length\": 4, \"output_length\": 2, \"hash_ids\": [], \"session_id\": \"a\"}\n{\"timestamp\": 2.25, \"input_length\": 4, \"output_length\": 2, \"hash_ids\": []}\n";
        let entries = parse(text, "t").unwrap();
        let t = build(&entries, "t", &gen(), None, 16, 1.0).unwrap();
        assert_eq!(t.times_ns, [0, 1_750_000]);
        // No blocks: every prompt is its own.
        assert_ne!(t.samples[0].prompt, t.samples[1].prompt);
    }

    #[test]
    fn every_bad_input_names_file_line_and_field() {
        let ok = line(0, 4, 2, &[1]);
        let cases: [(String, &str); 13] = [
            (
                format!("{ok}{{\"timestamp\": 5,}}\n"),
                "t.jsonl:2: column 17: malformed JSON",
            ),
            (
                format!("{ok}{}", line(200, 4, 2, &[1]) + &line(100, 4, 2, &[1])),
                "t.jsonl:3: [2].timestamp: 100 ms is before the previous request's 200 ms (line 2): a trace's timestamps must not decrease",
            ),
            (
                "{\"input_length\": 4, \"output_length\": 2, \"hash_ids\": []}\n".into(),
                "t.jsonl:1: [0].timestamp: missing",
            ),
            (
                "{\"timestamp\": 0, \"output_length\": 2, \"hash_ids\": []}\n".into(),
                "t.jsonl:1: [0].input_length: missing",
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"hash_ids\": []}\n".into(),
                "t.jsonl:1: [0].output_length: missing",
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2}\n".into(),
                "t.jsonl:1: [0].hash_ids: missing",
            ),
            (
                format!("{ok}\n{{\"timestamp\": -3, \"input_length\": 4, \"output_length\": 2, \"hash_ids\": []}}\n"),
                "t.jsonl:3: [1].timestamp: expected a non-negative number of milliseconds, got -3",
            ),
            (
                "{\"timestamp\": 0, \"input_length\": -4, \"output_length\": 2, \"hash_ids\": []}\n".into(),
                "t.jsonl:1: [0].input_length: expected a positive number of tokens, got -4",
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 0, \"hash_ids\": []}\n".into(),
                "t.jsonl:1: [0].output_length: expected a positive number of tokens, got 0",
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2, \"hash_ids\": [3, -1]}\n".into(),
                "t.jsonl:1: [0].hash_ids[1]: expected a non-negative integer, got -1",
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2, \"hash_ids\": 7}\n".into(),
                "t.jsonl:1: [0].hash_ids: expected a list",
            ),
            ("[1, 2]\n".into(), "t.jsonl:1: [0]: expected an object"),
            ("\n \n".into(), "t.jsonl: no requests in the trace"),
        ];
        for (text, want) in cases {
            let e = parse(&text, "t.jsonl").unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}:\n{e}\nwanted {want}");
        }
    }

    #[test]
    fn a_request_over_the_context_is_an_error_at_its_line() {
        let text = [line(0, 200, 50, &[1]), line(10, 240, 20, &[1])].concat();
        let entries = parse(&text, "t.jsonl").unwrap();
        let e = build(&entries, "t.jsonl", &gen(), None, 256, 1.0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.jsonl:2: [1].input_length: 240 input tokens + 20 output tokens exceed the model's context of 256"
        );
        // A fixed output length is the one that counts.
        assert!(build(&entries, "t.jsonl", &gen(), Some(16), 256, 1.0).is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("/nonexistent/t.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/t.jsonl: cannot read the trace"),
            "{e}"
        );
    }
}
