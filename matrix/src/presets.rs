//! Model configs shipped with the matrix format: `config: gpt2` or
//! `config: tiny` in a matrix names one of these `config.json` texts
//! instead of a file.

const PRESETS: &[(&str, &str)] = &[
    ("gpt2", include_str!("../configs/gpt2.json")),
    ("tiny", include_str!("../configs/tiny.json")),
];

/// The config text of a preset, if `name` is one.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Names of the shipped presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}
