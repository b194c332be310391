//! The result schema of engine-matrix: the types of `summary.json` and
//! `results.jsonl`, and nothing else.
//!
//! The binary writes these files after every cell; reports, `compare`,
//! the dashboard and CI gates read them. Keeping the types in a crate of
//! their own, with no dependency on how a figure is measured (no plugins,
//! no telemetry back-ends, no HTTP), lets a reader of results link only
//! this crate plus the matrix format and the statistics it embeds
//! (`Cell`, `Distribution`).
//!
//! * [`cell`]: one cell's result ([`CellResult`], [`ResultLine`] with the
//!   raw per-request timelines, memory and GPU records);
//! * [`metrics`]: its figures ([`CellMetrics`], [`ServingMetrics`]);
//! * [`quality`]: perplexity and agreement with a reference engine;
//! * [`retrieval`]: a retrieval cell's recall, QPS, latency and index;
//! * [`telemetry`]: leak verdicts, energy, GPU samples;
//! * [`run`]: the run ([`Summary`]), the machine ([`SystemInfo`]), the
//!   calibrated roofline ([`Limits`], [`Efficiency`]), engines and models;
//! * [`shape`]: the model's shape ([`Gpt2Shape`]);
//! * [`targets`]: the targets' verdicts and the run's grade.
//!
//! The layout is versioned by [`SCHEMA_VERSION`]; [`Summary::read`]
//! refuses another version with an error naming the file.
//!
//! Methods here only format or derive (a verdict's words, a roofline's
//! ridge point); how a figure is computed lives with its measurement in
//! the binary.

pub mod cell;
pub mod metrics;

pub use engine_matrix_format::shard::machine_class;
pub mod quality;
pub mod retrieval;
pub mod run;
pub mod server_metrics;
pub mod shape;
pub mod targets;
pub mod telemetry;
pub mod tune;

pub use cell::{
    CellResult, ClockStatus, GeneratorRecord, GpuRecord, IterationSpan, MemoryRecord,
    PressureRecord, RawRequest, ResultLine, Stability, Status, SCHEMA_VERSION,
};
pub use metrics::{
    CellMetrics, Degradation, GeneratorFigures, IterationFigures, LoadGenerators, MetricAliases,
    ServingMetrics, SpikeFigures, SweepFigures, SweepStep, Window,
};
pub use run::{Efficiency, EngineRecord, GpuLimits, Limits, ModelRecord, Summary, SystemInfo};
pub use shape::Gpt2Shape;
pub use telemetry::{EnergyRecord, GpuInfo, GpuSample, LeakCheck, LeakVerdict, Power};

/// Why a result file or config could not be read. The message names the
/// file; the underlying error is the `source` (shown after it by
/// `{:#}` in anyhow, as every other error of the binary).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}")]
    Parse {
        what: String,
        source: serde_json::Error,
    },
    #[error("{path}: schema_version {found} (this engine-matrix reads {SCHEMA_VERSION})")]
    Version { path: String, found: u32 },
}

#[cfg(test)]
mod tests {
    #[test]
    fn class_letters_count_like_spreadsheet_columns() {
        let got: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .into_iter()
            .map(super::run::class_letter)
            .collect();
        assert_eq!(got, ["A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]);
    }

    #[test]
    fn engine_labels_split_into_name_and_machine_class() {
        assert_eq!(super::machine_class("candle"), ("candle", None));
        assert_eq!(super::machine_class("candle @ B"), ("candle", Some("B")));
    }

    use super::*;

    fn temp(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("em-results-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn summary_read_names_the_file_and_the_problem() {
        let missing = std::env::temp_dir().join("em-results-no-such-summary.json");
        let e = Summary::read(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("no-such-summary"),
            "{e}"
        );

        let p = temp("garbage.json", "{\"schema_version\": 1");
        let e = Summary::read(&p).unwrap_err().to_string();
        assert!(e.contains("not an engine-matrix summary.json"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");

        // The whole layout is parsed before the version is compared, so a
        // stub with only a version is a parse error, not a version error.
        let p2 = temp(
            "v99.json",
            &format!("{{\"schema_version\": {}}}", SCHEMA_VERSION + 98),
        );
        let e = Summary::read(&p2).map(|_| ()).unwrap_err();
        match &e {
            SchemaError::Parse { .. } => {}
            other => panic!("a summary without its fields is a parse error first: {other}"),
        }
        let _ = (std::fs::remove_file(p), std::fs::remove_file(p2));
    }

    #[test]
    fn verdicts_and_statuses_keep_their_json_names() {
        let names = |v: &[serde_json::Value]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let verdicts = [
            LeakVerdict::NoLeak,
            LeakVerdict::Leak,
            LeakVerdict::Insufficient,
        ]
        .map(|v| serde_json::to_value(v).unwrap());
        assert_eq!(
            names(&verdicts),
            ["\"no_leak\"", "\"leak\"", "\"insufficient\""]
        );
        assert_eq!(LeakVerdict::Insufficient.to_string(), "insufficient data");
        let statuses = [Status::Ok, Status::Unsupported, Status::Failed]
            .map(|s| serde_json::to_value(s).unwrap());
        assert_eq!(
            names(&statuses),
            ["\"ok\"", "\"unsupported\"", "\"failed\""]
        );
    }

    #[test]
    fn a_shape_error_names_its_origin() {
        let e = Gpt2Shape::from_json("{\"n_embd\": 8}", "models/x/config.json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("models/x/config.json: not a model config.json"),
            "{e}"
        );
        let s = Gpt2Shape::from_json(
            r#"{"vocab_size": 10, "max_position_embeddings": 16, "hidden_size": 8,
                "num_hidden_layers": 2, "num_attention_heads": 2}"#,
            "llama-style",
        )
        .unwrap();
        assert_eq!(
            (s.n_positions, s.n_embd, s.model_type.as_str()),
            (16, 8, "gpt2")
        );
    }

    #[test]
    fn llama_shapes_count_gqa_swiglu_and_untied_heads() {
        // SmolLM2-135M's config.json: 134,515,008 parameters.
        let smol = Gpt2Shape::from_json(
            r#"{"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "max_position_embeddings": 8192,
                "tie_word_embeddings": true, "eos_token_id": [2, 0]}"#,
            "smollm2",
        )
        .unwrap();
        assert_eq!(smol.parameters(), 134_515_008);
        assert_eq!(smol.eos_token_id, Some(2));
        assert_eq!(smol.kv_elements_per_token(), 2 * 30 * 192);
        // Qwen2.5-0.5B, tied, with q/k/v biases: 494,032,768.
        let qwen = Gpt2Shape::from_json(
            r#"{"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
                "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                "num_key_value_heads": 2, "max_position_embeddings": 32768,
                "tie_word_embeddings": true}"#,
            "qwen2.5-0.5b",
        )
        .unwrap();
        assert_eq!(qwen.parameters(), 494_032_768);
        // TinyLlama-1.1B: untied lm_head: 1,100,048,384.
        let tiny = Gpt2Shape::from_json(
            r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
                "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                "num_key_value_heads": 4, "max_position_embeddings": 2048,
                "tie_word_embeddings": false}"#,
            "tinyllama",
        )
        .unwrap();
        assert_eq!(tiny.parameters(), 1_100_048_384);
    }
}
