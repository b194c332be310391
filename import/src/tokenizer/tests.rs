//! SentencePiece GGUFs (tokenizer model `llama`): the files written from
//! the metadata, and the ids their tokenizer gives. llama.cpp's own ids
//! for the same vocabulary are checked in `tests/spm_tokenizer.rs`.

use super::*;
use candle_core::quantized::gguf_file;
use engine_matrix_text::TextModel;
use std::path::{Path, PathBuf};

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("em-import-spm-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `<unk>`, `<s>`, `</s>`, the byte tokens, characters, merged pieces
/// (`ll` outranks `he`, `yz` outranks `xy`) and a user-defined `<tool>`:
/// tokens, scores and GGUF token types.
fn vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut t: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
    ];
    t.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    t.extend(
        "▁dehlorwxyz"
            .chars()
            .enumerate()
            .map(|(i, c)| (c.to_string(), -100.0 - i as f32, 1)),
    );
    let pieces = [
        ("ll", -1.0),
        ("he", -2.0),
        ("hell", -3.0),
        ("hello", -4.0),
        ("▁hello", -5.0),
        ("▁w", -6.0),
        ("or", -7.0),
        ("▁wor", -8.0),
        ("ld", -9.0),
        ("▁world", -10.0),
        ("yz", -11.0),
        ("xy", -12.0),
        ("▁▁", -13.0),
    ];
    t.extend(pieces.iter().map(|(p, s)| (p.to_string(), *s, 1)));
    t.push(("<tool>".into(), 0.0, 4));
    (
        t.iter().map(|x| x.0.clone()).collect(),
        t.iter().map(|x| x.1).collect(),
        t.iter().map(|x| x.2).collect(),
    )
}

/// A GGUF with only tokenizer metadata: tokenizer model `model`, the
/// vocabulary of [`vocab`], `extra` keys, and none of `skip`.
fn write(path: &Path, model: &str, extra: Vec<(&str, Value)>, skip: &[&str]) {
    let (tokens, scores, types) = vocab();
    let mut md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String(model.into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        ("tokenizer.chat_template", Value::String("{{ x }}".into())),
    ];
    md.retain(|(k, _)| !skip.contains(k));
    md.extend(extra);
    let refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &refs, &[]).unwrap();
}

/// The tokenizer files of `gguf`, written into `dir` and loaded back.
fn written(gguf: &Path, dir: &Path) -> (TextModel, serde_json::Value, serde_json::Value) {
    let files = Gguf::open(gguf).unwrap().tokenizer_files(4096).unwrap();
    let TokenizerFiles::Written {
        kind,
        tokenizer_json,
        tokenizer_config,
        generation_config,
    } = files
    else {
        panic!("no tokenizer written")
    };
    assert_eq!(
        kind,
        "SentencePiece BPE with byte fallback (tokenizer model llama)"
    );
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        tokenizer_config.to_string(),
    )
    .unwrap();
    let text = TextModel::load(dir).unwrap().expect("tokenizer.json");
    (text, tokenizer_config, generation_config)
}

fn ids(pieces: &[&str]) -> Vec<u32> {
    let (tokens, _, _) = vocab();
    pieces
        .iter()
        .map(|p| tokens.iter().position(|t| t == p).unwrap() as u32)
        .collect()
}

#[test]
fn a_sentencepiece_gguf_gets_a_tokenizer_that_merges_by_score() {
    let dir = temp("spm");
    let gguf = dir.join("spm.gguf");
    write(&gguf, "llama", vec![], &[]);
    let (text, config, generation) = written(&gguf, &dir);
    let cases: &[(&str, &[&str])] = &[
        ("hello world", &["<s>", "▁hello", "▁world"]),
        ("xyz", &["<s>", "▁", "x", "yz"]),
        (" hello", &["<s>", "▁", "▁hello"]),
        ("é\n", &["<s>", "▁", "<0xC3>", "<0xA9>", "<0x0A>"]),
        ("<s>hello</s>", &["<s>", "<s>", "▁hello", "</s>"]),
        ("hello<tool>world", &["<s>", "▁hello", "<tool>", "▁world"]),
        ("", &["<s>"]),
    ];
    for (s, want) in cases {
        let got = text.encode(s, true).unwrap();
        assert_eq!(got, ids(want), "{s:?}");
        assert_eq!(
            text.decode(&got, true).unwrap(),
            s.replace("<s>", "")
                .replace("</s>", "")
                .replace("<tool>", "<tool> "),
            "{s:?}"
        );
    }
    assert_eq!(config["bos_token"], "<s>");
    assert_eq!(config["eos_token"], "</s>");
    assert_eq!(config["unk_token"], "<unk>");
    assert_eq!(config["add_bos_token"], true);
    assert_eq!(config["add_eos_token"], false);
    assert_eq!(config["model_max_length"], 4096);
    assert_eq!(config["chat_template"], "{{ x }}");
    assert_eq!(generation["bos_token_id"], 1);
    assert_eq!(generation["eos_token_id"], 2);
}

#[test]
fn sentencepiece_settings_absent_from_the_gguf_default_as_in_llama_cpp() {
    let dir = temp("spm-defaults");
    let gguf = dir.join("spm.gguf");
    let skip = [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
    ];
    write(&gguf, "llama", vec![], &skip);
    let (text, config, generation) = written(&gguf, &dir);
    assert_eq!(text.encode("hello", true).unwrap(), ids(&["<s>", "▁hello"]));
    assert_eq!(config["unk_token"], "<unk>");
    assert_eq!(generation["eos_token_id"], 2);
}

#[test]
fn sentencepiece_space_prefix_and_eos_follow_the_gguf() {
    let dir = temp("spm-flags");
    let gguf = dir.join("spm.gguf");
    let extra = vec![
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ];
    let skip = [
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.add_bos_token",
    ];
    write(&gguf, "llama", extra, &skip);
    let (text, config, _) = written(&gguf, &dir);
    let got = text.encode("hello world", true).unwrap();
    assert_eq!(got, ids(&["hello", "▁world", "</s>"]));
    assert_eq!(text.decode(&got, true).unwrap(), "hello world");
    assert_eq!(config["add_bos_token"], false);
    assert_eq!(config["add_eos_token"], true);
}

#[test]
fn sentencepiece_scores_that_do_not_match_the_tokens_are_an_error() {
    let dir = temp("spm-scores");
    let gguf = dir.join("spm.gguf");
    let extra = vec![(
        "tokenizer.ggml.scores",
        Value::Array(vec![Value::F32(0.0); 3]),
    )];
    write(&gguf, "llama", extra, &["tokenizer.ggml.scores"]);
    let e = match Gguf::open(&gguf).unwrap().tokenizer_files(64) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("scores for 3 of the tokens accepted"),
    };
    assert!(
        e.contains("tokenizer.ggml.scores") && e.contains("3 scores"),
        "{e}"
    );
}

#[test]
fn other_tokenizer_models_are_left_out_with_the_reason() {
    let dir = temp("spm-other");
    let gguf = dir.join("rwkv.gguf");
    write(&gguf, "rwkv", vec![], &[]);
    match Gguf::open(&gguf).unwrap().tokenizer_files(64).unwrap() {
        TokenizerFiles::Missing(why) => {
            assert!(
                why.contains("\"rwkv\"") && why.contains("\"llama\""),
                "{why}"
            )
        }
        TokenizerFiles::Written { .. } => panic!("an rwkv tokenizer written"),
    }
}
