//! Model configs shipped with the matrix format: `config: gpt2` or
//! `config: tiny` in a matrix names one of these `config.json` texts
//! instead of a file. The Llama-family presets are the `config.json`s of
//! the published checkpoints (SmolLM2-135M, Qwen2.5-0.5B, Llama-3.2-1B,
//! TinyLlama-1.1B), for speed-only runs on synthetic weights of their
//! exact shapes; `tiny-llama` is a small GQA Llama for tests.

const PRESETS: &[(&str, &str)] = &[
    ("gpt2", include_str!("../configs/gpt2.json")),
    ("tiny", include_str!("../configs/tiny.json")),
    ("tiny-llama", include_str!("../configs/tiny-llama.json")),
    ("smollm2-135m", include_str!("../configs/smollm2-135m.json")),
    ("qwen2.5-0.5b", include_str!("../configs/qwen2.5-0.5b.json")),
    ("llama-3.2-1b", include_str!("../configs/llama-3.2-1b.json")),
    (
        "tinyllama-1.1b",
        include_str!("../configs/tinyllama-1.1b.json"),
    ),
];

/// The config text of a preset, if `name` is one.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Names of the shipped presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}
