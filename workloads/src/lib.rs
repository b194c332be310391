//! Where a cell's requests come from: one [`Workload`] per cell, built
//! before the cell is timed, that gives request `i` its prompt (token ids)
//! and output length. Request `i` is the same for every engine of a cell:
//! the random generators are seeded by the workload (never the engine),
//! and the text datasets are tokenized with the model's own tokenizer,
//! which every engine of a model shares.
//!
//! * [`random`]: seeded token ids of exactly the requested length, and
//!   the shared-prefix workload built on them;
//! * [`sharegpt`]: ShareGPT conversations sampled as vLLM's benchmarks
//!   do, read from a file that may be truncated;
//! * [`prompts`]: a JSONL or YAML file of text prompts;
//! * [`trace`]: a timestamped Mooncake trace, replayed at its own times
//!   by the open-loop `serving` scenario ([`Workload::Trace`]).
//!
//! Everything here is pure (no clock, no engine): the tokenizer comes in
//! through [`Tokenize`], so that the sampling is tested on fixtures with
//! known lengths.
//!
//! Text is tokenized up front into a pool of samples ([`Workload::Samples`])
//! and request `i` takes sample `i mod pool`: tokenizing while requests
//! are in flight would take a core from the engine on a 2-core machine and
//! distort what is measured.

pub mod multi_turn;
pub mod prompts;
pub mod random;
pub mod sharegpt;
pub mod trace;

/// One request's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub prompt: Vec<u32>,
    pub output_tokens: u32,
}

/// Turns text into the model's token ids (the model's tokenizer, special
/// tokens added as Hugging Face's `tokenizer(text)` does).
pub trait Tokenize {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
}

impl<F: Fn(&str) -> Result<Vec<u32>, String>> Tokenize for F {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self(text)
    }
}

/// Why a workload could not be built. Each names the file and, where
/// there is one, the line and field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}:{line}: {field}: {message}")]
    At {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

pub use engine_matrix_results::metrics::WorkloadRecord;

/// A data file's bytes and its name for messages; an unreadable file is
/// an error naming it and `what` it was to be.
pub(crate) fn read_file(
    path: &std::path::Path,
    what: &str,
) -> Result<(String, Vec<u8>), WorkloadError> {
    let file = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Ok((file, bytes)),
        Err(e) => Err(WorkloadError::File {
            message: format!("cannot read the {what}: {e}"),
            file,
        }),
    }
}

/// [`read_file`] as UTF-8 text.
pub(crate) fn read_text(
    path: &std::path::Path,
    what: &str,
) -> Result<(String, String), WorkloadError> {
    let (file, bytes) = read_file(path, what)?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok((file, text)),
        Err(e) => Err(WorkloadError::File {
            message: format!("the {what} is not UTF-8 text: {e}"),
            file,
        }),
    }
}

/// A cell's request source, ready to give out requests.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Seeded random prompts (optionally with shared prefixes) of fixed
    /// lengths.
    Random(random::RandomPrompts),
    /// A pool of tokenized samples, request `i` taking sample `i mod n`.
    Samples {
        samples: Vec<Sample>,
        record: WorkloadRecord,
    },
    /// A trace's requests in order, each with its send time
    /// ([`Workload::schedule_ns`]); request `i` of a replay is line `i`.
    Trace(trace::Trace),
    /// Multi-turn sessions: each a conversation's turns in order
    /// ([`Workload::session_turn`]); [`Workload::request`] walks them all
    /// one after the other.
    Sessions {
        sessions: Vec<Vec<Sample>>,
        record: WorkloadRecord,
    },
}

impl Workload {
    /// Request `index`'s prompt and output length (a trace's line `index
    /// mod n`).
    pub fn request(&self, index: u64) -> Sample {
        let nth =
            |samples: &[Sample]| samples[(index % samples.len().max(1) as u64) as usize].clone();
        match self {
            Workload::Random(r) => r.request(index),
            Workload::Samples { samples, .. } => nth(samples),
            Workload::Trace(t) => nth(&t.samples),
            Workload::Sessions { sessions, .. } => {
                let all: usize = sessions.iter().map(Vec::len).sum();
                let mut i = (index % all.max(1) as u64) as usize;
                for s in sessions {
                    if i < s.len() {
                        return s[i].clone();
                    }
                    i -= s.len();
                }
                Sample {
                    prompt: vec![],
                    output_tokens: 0,
                }
            }
        }
    }

    /// Multi-turn: session `session`'s turn `turn` (sessions cycle), or
    /// `None` past its last turn; `None` for the other workloads.
    pub fn session_turn(&self, session: u64, turn: usize) -> Option<Sample> {
        match self {
            Workload::Sessions { sessions, .. } if !sessions.is_empty() => sessions
                [(session % sessions.len() as u64) as usize]
                .get(turn)
                .cloned(),
            _ => None,
        }
    }

    /// Warmup request `index`: [`request`](Self::request), but for a
    /// trace, whose warmups are random prompts of its first requests'
    /// lengths ([`trace::Trace::warmup`]).
    pub fn warmup_request(&self, index: u64) -> Sample {
        match self {
            Workload::Trace(t) => t.warmup(index),
            _ => self.request(index),
        }
    }

    /// A trace's send times (ns from the first request, one per request
    /// in order); `None` for the other workloads, whose schedule is the
    /// scenario's.
    pub fn schedule_ns(&self) -> Option<&[u64]> {
        match self {
            Workload::Trace(t) => Some(&t.times_ns),
            _ => None,
        }
    }

    pub fn record(&self) -> WorkloadRecord {
        match self {
            Workload::Random(r) => r.record(),
            Workload::Samples { record, .. } => record.clone(),
            Workload::Trace(t) => t.record.clone(),
            Workload::Sessions { record, .. } => record.clone(),
        }
    }
}

/// Most samples a text workload tokenizes up front; requests beyond it
/// cycle through them.
pub const MAX_POOL: usize = 1000;
