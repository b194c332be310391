//! Where a cell's requests come from, as the matrix writes it: the axis
//! keys `dataset`, `dataset_path`, `prefix_tokens` and `prefix_groups`.
//! Building the prompts (sampling, tokenizing, prefixes) is the host's
//! `workload` module; this is only the validated setting.
//!
//! * `random` (the default, and no `dataset` record in the cell): seeded
//!   token ids of exactly `input_tokens`, as vLLM's `random` dataset.
//! * `prefix`: random prompts of `input_tokens` whose first
//!   `prefix_tokens` (default half) are shared inside each of
//!   `prefix_groups` groups (default 1), as vLLM's `prefix_repetition`
//!   and genai-bench's prefix ratio; a sweep of `prefix_tokens` is a
//!   sweep of the shared share.
//! * `sharegpt`: ShareGPT conversations, sampled as vLLM's `sharegpt`
//!   dataset (`dataset_path`, default the provisioned file); the input
//!   lengths are the prompts' and the output lengths the first answers',
//!   unless `output_tokens` fixes them.
//! * `prompts`: a JSONL or YAML file of text prompts (`dataset_path`,
//!   required), each with an optional output length.
//! * `trace`: a timestamped JSON Lines trace in Mooncake's format
//!   (`dataset_path`, required), replayed by an open-loop `serving`
//!   scenario at the trace's own times, scaled by `time_scale`
//!   (default 1): its lines are the requests, with their lengths and
//!   shared prefix blocks. `kind: serving` only; the rate, arrival, load
//!   shape, `duration_s` and `requests` keys do not apply.
//!
//! * `multi_turn`: ShareGPT conversations replayed turn by turn
//!   (`dataset_path`, default the provisioned file), each turn's prompt
//!   the history plus the next user message with the chat template
//!   applied; sessions run as the clients of a `concurrency` scenario
//!   (`kind: concurrency` only), up to `max_turns` turns (default 4).
//!
//! A text dataset's (or a trace's) lengths are in the model's tokens, so `input_tokens`
//! is an error with it (the data sets the lengths); `output_tokens` fixes
//! every output length, and without it the data's lengths are used
//! ([`DatasetParams::output_from_data`]).

use serde::{Deserialize, Serialize};

/// The kind of request source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Random,
    Prefix,
    Sharegpt,
    Prompts,
    Trace,
    #[serde(rename = "multi_turn")]
    MultiTurn,
}

impl DatasetKind {
    pub const NAMES: [&'static str; 6] = [
        "random",
        "prefix",
        "sharegpt",
        "prompts",
        "trace",
        "multi_turn",
    ];

    pub fn parse(s: &str) -> Option<DatasetKind> {
        match s {
            "random" => Some(DatasetKind::Random),
            "prefix" => Some(DatasetKind::Prefix),
            "sharegpt" => Some(DatasetKind::Sharegpt),
            "prompts" => Some(DatasetKind::Prompts),
            "trace" => Some(DatasetKind::Trace),
            "multi_turn" => Some(DatasetKind::MultiTurn),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Random => "random",
            DatasetKind::Prefix => "prefix",
            DatasetKind::Sharegpt => "sharegpt",
            DatasetKind::Prompts => "prompts",
            DatasetKind::Trace => "trace",
            DatasetKind::MultiTurn => "multi_turn",
        }
    }

    /// Text that the model's tokenizer turns into prompts (a token-only
    /// model cannot run it).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            DatasetKind::Sharegpt | DatasetKind::Prompts | DatasetKind::MultiTurn
        )
    }

    /// The data gives the lengths (a text dataset or a trace):
    /// `input_tokens` is an error, and `output_tokens` is optional.
    pub fn lengths_from_data(self) -> bool {
        self.is_text() || self == DatasetKind::Trace
    }
}

/// A cell's request source other than `random`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetParams {
    pub kind: DatasetKind,
    /// The data file: absolute, or with `${NAME}` placeholders that the
    /// run expands (`None`: the provisioned ShareGPT file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `prefix`: the shared tokens at the start of every prompt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_tokens: u32,
    /// `prefix`: how many distinct prefixes (request i has prefix i mod
    /// groups).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub prefix_groups: u32,
    /// A text dataset or trace whose output lengths are the data's (no
    /// `output_tokens` in the matrix).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_from_data: bool,
    /// `trace`: send times are the trace's timestamps times this (0.5
    /// replays it twice as fast).
    #[serde(default = "one_f64", skip_serializing_if = "is_one_f64")]
    pub time_scale: f64,
    /// `multi_turn`: the most turns a session runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_turns: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_one(v: &u32) -> bool {
    *v == 1
}
fn one() -> u32 {
    1
}
fn is_one_f64(v: &f64) -> bool {
    *v == 1.0
}
fn one_f64() -> f64 {
    1.0
}

impl DatasetParams {
    /// The id fragment that replaces `inI-outO`: `in128p96x4-out64`
    /// (prefix), `sharegpt-outdata` (the provisioned file; `sharegpt.NAME`
    /// with another file), `prompts.questions-out64`,
    /// `trace.mooncake-ts0.5-outdata` (`-tsS` when `time_scale` is not 1).
    pub fn lengths_tag(&self, input_tokens: u32, output_tokens: u32) -> String {
        let out = if self.output_from_data {
            "outdata".to_string()
        } else {
            format!("out{output_tokens}")
        };
        match self.kind {
            DatasetKind::Random => format!("in{input_tokens}-{out}"),
            DatasetKind::Prefix => format!(
                "in{input_tokens}p{}x{}-{out}",
                self.prefix_tokens, self.prefix_groups
            ),
            DatasetKind::Sharegpt if self.path.is_some() => {
                format!("sharegpt.{}-{out}", self.file_stem())
            }
            DatasetKind::Sharegpt => format!("sharegpt-{out}"),
            DatasetKind::Prompts => format!("prompts.{}-{out}", self.file_stem()),
            DatasetKind::Trace if self.time_scale != 1.0 => {
                format!("trace.{}-ts{}-{out}", self.file_stem(), self.time_scale)
            }
            DatasetKind::Trace => format!("trace.{}-{out}", self.file_stem()),
            DatasetKind::MultiTurn if self.path.is_some() => {
                format!("multiturn{}.{}-{out}", self.max_turns, self.file_stem())
            }
            DatasetKind::MultiTurn => format!("multiturn{}-{out}", self.max_turns),
        }
    }

    /// The data file's name without folder and extension, in id-safe
    /// characters.
    fn file_stem(&self) -> String {
        let p = self.path.as_deref().unwrap_or("");
        let name = p.rsplit(['/', '\\']).next().unwrap_or(p);
        // `${SHAREGPT}` names the variable.
        let name = name.replace("${", "").replace('}', "");
        let stem = name.split('.').next().unwrap_or(&name);
        stem.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_the_source_and_its_shape() {
        let mut d = DatasetParams {
            kind: DatasetKind::Prefix,
            path: None,
            prefix_tokens: 96,
            prefix_groups: 4,
            output_from_data: false,
            time_scale: 1.0,
            max_turns: 0,
        };
        assert_eq!(d.lengths_tag(128, 64), "in128p96x4-out64");
        d.kind = DatasetKind::Sharegpt;
        d.output_from_data = true;
        assert_eq!(d.lengths_tag(0, 0), "sharegpt-outdata");
        d.kind = DatasetKind::Prompts;
        d.path = Some("/x/my prompts.v2.jsonl".into());
        d.output_from_data = false;
        assert_eq!(d.lengths_tag(0, 32), "prompts.my_prompts-out32");
        d.path = Some("${DATA}".into());
        assert_eq!(d.lengths_tag(0, 32), "prompts.DATA-out32");
        d.kind = DatasetKind::Trace;
        d.path = Some("/t/conversation_trace.jsonl".into());
        d.output_from_data = true;
        assert_eq!(d.lengths_tag(0, 0), "trace.conversation_trace-outdata");
        d.time_scale = 0.5;
        d.output_from_data = false;
        assert_eq!(d.lengths_tag(0, 8), "trace.conversation_trace-ts0.5-out8");
    }

    #[test]
    fn names_round_trip() {
        for n in DatasetKind::NAMES {
            assert_eq!(DatasetKind::parse(n).map(DatasetKind::as_str), Some(n));
        }
        assert_eq!(DatasetKind::parse("burstgpt"), None);
    }
}
