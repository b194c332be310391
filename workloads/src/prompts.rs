//! A file of text prompts (`dataset: prompts`): JSON Lines (`.jsonl`),
//! one object per line, or YAML (`.yaml`/`.yml`), a list. Each entry is
//!
//! ```yaml
//! - prompt: "What is the capital of France?"   # required
//!   output_tokens: 32                          # optional
//!   class: short                               # optional, a label
//! ```
//!
//! or a bare string (the prompt). The matrix's `output_tokens`, when it
//! sets one, fixes every output length; otherwise an entry without one is
//! an error. Every prompt is tokenized up front with the model's
//! tokenizer, and one whose prompt and output do not fit the model's
//! context is an error naming its line: a benchmark that silently dropped
//! it would measure another workload than the one written.

use crate::{Sample, Tokenize, WorkloadError, WorkloadRecord};
use serde_json::Value;
use std::path::Path;

const KEYS: [&str; 3] = ["prompt", "output_tokens", "class"];

/// One entry of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub line: usize,
    pub prompt: String,
    pub output_tokens: Option<u32>,
    pub class: Option<String>,
}

/// Reads and checks the file's entries.
pub fn load(path: &Path) -> Result<Vec<Entry>, WorkloadError> {
    let (file, text) = crate::read_text(path, "prompts file")?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    parse(&text, &file, yaml)
}

/// [`load`] on text already read.
pub fn parse(text: &str, file: &str, yaml: bool) -> Result<Vec<Entry>, WorkloadError> {
    let items: Vec<(usize, Value)> = if yaml {
        engine_matrix_format::yaml_list(text, file)
            .map_err(|e| WorkloadError::Other(e.to_string()))?
    } else {
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(line).map_err(|e| WorkloadError::At {
                file: file.to_string(),
                line: i + 1,
                field: format!("column {}", e.column()),
                message: format!("malformed JSON: {e}"),
            })?;
            items.push((i + 1, v));
        }
        items
    };
    if items.is_empty() {
        return Err(WorkloadError::File {
            file: file.to_string(),
            message: "no prompts in the file".into(),
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, (line, v))| entry(file, i, line, v))
        .collect()
}

fn entry(file: &str, index: usize, line: usize, v: Value) -> Result<Entry, WorkloadError> {
    let at = |field: &str, message: String| WorkloadError::At {
        file: file.to_string(),
        line,
        field: format!("[{index}]{field}"),
        message,
    };
    let obj = match v {
        Value::String(prompt) => {
            return Ok(Entry {
                line,
                prompt,
                output_tokens: None,
                class: None,
            })
        }
        Value::Object(o) => o,
        other => {
            return Err(at(
                "",
                format!("expected a prompt (a string or an object with `prompt`), got {other}"),
            ))
        }
    };
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(at(
            &format!(".{k}"),
            format!("unknown key `{k}` (allowed: {})", KEYS.join(", ")),
        ));
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(at(
                ".prompt",
                format!("expected a non-empty string, got {other}"),
            ))
        }
        None => return Err(at("", "missing `prompt`".into())),
    };
    let output_tokens = match obj.get("output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                .ok_or_else(|| {
                    at(
                        ".output_tokens",
                        format!("expected a positive integer, got {v}"),
                    )
                })? as u32,
        ),
    };
    let class = match obj.get("class") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(at(".class", format!("expected a string, got {v}"))),
    };
    Ok(Entry {
        line,
        prompt,
        output_tokens,
        class,
    })
}

/// Tokenizes every entry: the samples in file order.
pub fn samples(
    entries: &[Entry],
    file: &str,
    tok: &dyn Tokenize,
    fixed_output: Option<u32>,
    context: usize,
) -> Result<(Vec<Sample>, WorkloadRecord), WorkloadError> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = |field: &str, message: String| WorkloadError::At {
            file: file.to_string(),
            line: e.line,
            field: format!("[{i}]{field}"),
            message,
        };
        let prompt = tok
            .encode(&e.prompt)
            .map_err(|m| at(".prompt", format!("cannot tokenize: {m}")))?;
        let output = fixed_output.or(e.output_tokens).ok_or_else(|| {
            at(
                "",
                "no output_tokens: give one here, or output_tokens in the matrix".into(),
            )
        })?;
        if prompt.len() + output as usize > context {
            return Err(at(
                ".prompt",
                format!(
                    "{} prompt tokens + {output} output tokens exceed the model's context of {context}",
                    prompt.len()
                ),
            ));
        }
        out.push(Sample {
            prompt,
            output_tokens: output,
        });
    }
    let record = WorkloadRecord {
        dataset: "prompts".into(),
        file: Some(file.to_string()),
        entries: Some(entries.len()),
        pool: Some(out.len()),
        ..Default::default()
    };
    Ok((out, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Result<Vec<u32>, String> {
        Ok(text.split_whitespace().map(|w| w.len() as u32).collect())
    }

    #[test]
    fn jsonl_and_yaml_give_the_same_entries() {
        let jsonl =
            "{\"prompt\": \"a b c\", \"output_tokens\": 4, \"class\": \"short\"}\n\n\"d e\"\n";
        let yaml = "- prompt: a b c\n  output_tokens: 4\n  class: short\n- d e\n";
        let a = parse(jsonl, "p.jsonl", false).unwrap();
        let b = parse(yaml, "p.yaml", true).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].line, a[1].line), (1, 3));
        assert_eq!((b[0].line, b[1].line), (1, 4));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (&x.prompt, x.output_tokens, &x.class),
                (&y.prompt, y.output_tokens, &y.class)
            );
        }
        let e = samples(&a, "p.jsonl", &words, None, 100)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.jsonl:3: [1]: no output_tokens"), "{e}");
        // The entry's own output length, when the matrix sets none.
        let one = samples(&a[..1], "p.jsonl", &words, None, 100).unwrap().0;
        assert_eq!(one[0].output_tokens, 4);
        let (s, rec) = samples(&a, "p.jsonl", &words, Some(2), 100).unwrap();
        assert_eq!(
            s,
            [
                Sample {
                    prompt: vec![1, 1, 1],
                    output_tokens: 2
                },
                Sample {
                    prompt: vec![1, 1],
                    output_tokens: 2
                }
            ]
        );
        assert_eq!((rec.entries, rec.pool), (Some(2), Some(2)));
    }

    #[test]
    fn bad_entries_name_file_line_and_field() {
        let cases: [(&str, bool, &str); 8] = [
            (
                "{\"prompt\": \"x\"}\n{\"prompt\": \"y\",}\n",
                false,
                "p:2: column 16: malformed JSON",
            ),
            (
                "{\"prompt\": \"x\", \"max_tokens\": 3}\n",
                false,
                "p:1: [0].max_tokens: unknown key `max_tokens`",
            ),
            (
                "{\"class\": \"short\"}\n",
                false,
                "p:1: [0]: missing `prompt`",
            ),
            (
                "{\"prompt\": \"\"}\n",
                false,
                "p:1: [0].prompt: expected a non-empty string",
            ),
            (
                "{\"prompt\": \"x\", \"output_tokens\": 0}\n",
                false,
                "p:1: [0].output_tokens: expected a positive integer, got 0",
            ),
            ("- x\n- [1, 2]\n", true, "p:2: [1]: expected a prompt"),
            (
                "- prompt: x\n  output_tokens: -1\n",
                true,
                "p:1: [0].output_tokens: expected a positive integer, got -1",
            ),
            ("", false, "p: no prompts in the file"),
        ];
        for (text, yaml, want) in cases {
            let e = parse(text, "p", yaml).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        let e = parse("- [unclosed\n", "p.yaml", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.yaml:") && e.contains("invalid YAML"),
            "{e}"
        );
    }

    #[test]
    fn a_prompt_over_the_context_is_an_error_at_its_line() {
        let entries = parse("\"a b\"\n\"a b c d e f\"\n", "p.jsonl", false).unwrap();
        let e = samples(&entries, "p.jsonl", &words, Some(3), 8)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "p.jsonl:2: [1].prompt: 6 prompt tokens + 3 output tokens exceed the model's context of 8"
        );
        assert!(samples(&entries, "p.jsonl", &words, Some(2), 8).is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("/nonexistent/p.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/p.jsonl: cannot read the prompts file"),
            "{e}"
        );
    }
}
