//! Structure-aware fuzzing of `Matrix::parse`: the input is decoded (with
//! `arbitrary`) into a matrix-shaped document, written out as YAML, so that
//! most runs get past the syntax and into validation and expansion: axes
//! (including long generated ranges), workloads, include/exclude, quick
//! overrides, scenario defaults, anchors and aliases. Same property as the
//! `matrix` target: `Ok` or `Err`, never a panic, a hang or unbounded
//! memory.
#![no_main]

use arbitrary::Arbitrary;
use engine_matrix_format::Matrix;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Doc {
    name: Option<Val>,
    baseline: Option<u8>,
    models: Vec<Model>,
    engines: Vec<Engine>,
    scenarios: Vec<Scenario>,
    /// Anchored lists of aliases to the one before ("billion laughs"),
    /// under a key of their own.
    bombs: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Model {
    Synthetic { config: Val, seed: Option<Val> },
    Path(Val),
    Raw(Vec<(Key, Val)>),
}

#[derive(Arbitrary, Debug)]
struct Engine {
    plugin: Option<Val>,
    options: Option<Vec<(String, Val)>>,
}

#[derive(Arbitrary, Debug)]
struct Scenario {
    name: Option<u8>,
    kind: u8,
    models: Option<Vec<u8>>,
    engines: Option<Vec<u8>>,
    run: Vec<(RunKey, Val)>,
    defaults: Vec<(Key, Val)>,
    plan: Plan,
    quick: Option<Plan>,
}

#[derive(Arbitrary, Debug)]
struct Plan {
    axes: Vec<(Key, Values)>,
    workload: Option<Vec<Vec<(Key, Val)>>>,
    exclude: Option<Vec<Vec<(Key, Val)>>>,
    include: Option<Vec<Vec<(Key, Val)>>>,
}

#[derive(Arbitrary, Debug)]
enum Values {
    List(Vec<Val>),
    /// `[start + 1, start + 2, ..., start + len]`: long axes cheaply.
    Range {
        start: u16,
        len: u16,
    },
    /// Names `x0 .. x(len-1)`.
    Names {
        len: u16,
    },
    /// An anchored list, or an alias to an earlier one.
    Anchor(Vec<Val>),
    Alias(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Key {
    InputTokens,
    OutputTokens,
    BatchSize,
    Concurrency,
    BatchPolicy,
    MaxBatch,
    NumRequests,
    Requests,
    DurationS,
    Dtype,
    Quantization,
    Label,
    RequestRate,
    Arrival,
    Burstiness,
    MaxConcurrency,
    RampUpS,
    Load,
    SpikeFactor,
    SpikeAtS,
    SpikeS,
    SloTtftMs,
    SloTpotMs,
    SloE2elMs,
    SloAttainment,
    SweepSteps,
    RateScale,
    Other,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RunKey {
    Warmup,
    Iterations,
    MinDurationS,
    MaxDurationS,
}

#[derive(Arbitrary, Debug, Clone)]
enum Val {
    Small(u8),
    Int(i64),
    Float(f64),
    Name(u8),
    Dtype(u8),
    Policy(u8),
    /// A serving word: rates, arrivals, loads.
    Word(u8),
    Null,
    Bool(bool),
    /// Any text, double-quoted.
    Quoted(String),
    /// Any text, plain (may well break the YAML).
    Plain(String),
    List(Vec<Val>),
    Map(Vec<(String, Val)>),
    Alias(u8),
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::InputTokens => "input_tokens",
            Key::OutputTokens => "output_tokens",
            Key::BatchSize => "batch_size",
            Key::Concurrency => "concurrency",
            Key::BatchPolicy => "batch_policy",
            Key::MaxBatch => "max_batch",
            Key::NumRequests => "num_requests",
            Key::Requests => "requests",
            Key::DurationS => "duration_s",
            Key::Dtype => "dtype",
            Key::Quantization => "quantization",
            Key::Label => "label",
            Key::RequestRate => "request_rate",
            Key::Arrival => "arrival",
            Key::Burstiness => "burstiness",
            Key::MaxConcurrency => "max_concurrency",
            Key::RampUpS => "ramp_up_s",
            Key::Load => "load",
            Key::SpikeFactor => "spike_factor",
            Key::SpikeAtS => "spike_at_s",
            Key::SpikeS => "spike_s",
            Key::SloTtftMs => "slo_ttft_ms",
            Key::SloTpotMs => "slo_tpot_ms",
            Key::SloE2elMs => "slo_e2el_ms",
            Key::SloAttainment => "slo_attainment",
            Key::SweepSteps => "sweep_steps",
            Key::RateScale => "rate_scale",
            Key::Other => "other",
        }
    }
}

impl RunKey {
    fn name(self) -> &'static str {
        match self {
            RunKey::Warmup => "warmup",
            RunKey::Iterations => "iterations",
            RunKey::MinDurationS => "min_duration_s",
            RunKey::MaxDurationS => "max_duration_s",
        }
    }
}

/// Writes the YAML, numbering anchors as it goes.
struct Out {
    text: String,
    anchors: usize,
    depth: usize,
}

impl Out {
    fn val(&mut self, v: &Val) {
        self.depth += 1;
        let t = &mut self.text;
        match v {
            _ if self.depth > 8 => t.push('1'),
            Val::Small(n) => write!(t, "{n}").unwrap(),
            Val::Int(n) => write!(t, "{n}").unwrap(),
            Val::Float(f) => write!(t, "{f:?}").unwrap(),
            Val::Name(n) => write!(t, "n{n}").unwrap(),
            Val::Dtype(n) => t.push_str(["f32", "f16", "bf16", "f64"][*n as usize % 4]),
            Val::Policy(n) => t.push_str(["none", "static", "continuous", "x"][*n as usize % 4]),
            Val::Word(n) => t.push_str(
                [
                    "inf",
                    "sustainable",
                    "constant",
                    "poisson",
                    "gamma",
                    "sustained",
                    "spike",
                    "burst",
                    "sweep",
                    "x",
                ][*n as usize % 10],
            ),
            Val::Null => t.push('~'),
            Val::Bool(b) => write!(t, "{b}").unwrap(),
            Val::Quoted(s) => write!(t, "{s:?}").unwrap(),
            Val::Plain(s) => t.push_str(s),
            Val::List(items) => {
                t.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(", ");
                    }
                    self.val(item);
                }
                self.text.push(']');
            }
            Val::Map(entries) => {
                t.push('{');
                for (i, (k, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(", ");
                    }
                    write!(self.text, "{k:?}: ").unwrap();
                    self.val(item);
                }
                self.text.push('}');
            }
            Val::Alias(n) => self.alias(*n),
        }
        self.depth -= 1;
    }

    fn alias(&mut self, n: u8) {
        if self.anchors == 0 {
            self.text.push_str("*nowhere");
        } else {
            write!(self.text, "*a{}", n as usize % self.anchors).unwrap();
        }
    }

    fn anchor(&mut self) {
        write!(self.text, "&a{} ", self.anchors).unwrap();
        self.anchors += 1;
    }

    fn entry(&mut self, entry: &[(Key, Val)]) {
        self.text.push('{');
        for (i, (k, v)) in entry.iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            write!(self.text, "{}: ", k.name()).unwrap();
            self.val(v);
        }
        self.text.push('}');
    }

    fn entries(&mut self, key: &str, entries: &Option<Vec<Vec<(Key, Val)>>>, indent: &str) {
        if let Some(entries) = entries {
            write!(self.text, "{indent}{key}: [").unwrap();
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    self.text.push_str(", ");
                }
                self.entry(e);
            }
            self.text.push_str("]\n");
        }
    }

    fn plan(&mut self, p: &Plan, indent: &str) {
        if !p.axes.is_empty() || p.workload.is_some() {
            writeln!(self.text, "{indent}axes:").unwrap();
            if let Some(w) = &p.workload {
                self.entries(
                    "workload",
                    &Some(w.iter().map(|e| e.to_vec()).collect()),
                    &format!("{indent}  "),
                );
            }
            for (k, values) in &p.axes {
                write!(self.text, "{indent}  {}: ", k.name()).unwrap();
                match values {
                    Values::List(items) => self.val(&Val::List(items.to_vec())),
                    Values::Range { start, len } => {
                        let items: Vec<String> = (0..*len as u32)
                            .map(|i| (u32::from(*start) + 1 + i).to_string())
                            .collect();
                        write!(self.text, "[{}]", items.join(", ")).unwrap();
                    }
                    Values::Names { len } => {
                        let items: Vec<String> = (0..*len).map(|i| format!("x{i}")).collect();
                        write!(self.text, "[{}]", items.join(", ")).unwrap();
                    }
                    Values::Anchor(items) => {
                        self.anchor();
                        self.val(&Val::List(items.to_vec()));
                    }
                    Values::Alias(n) => self.alias(*n),
                }
                self.text.push('\n');
            }
        }
        self.entries("exclude", &p.exclude, indent);
        self.entries("include", &p.include, indent);
    }
}

fn yaml(doc: &Doc) -> String {
    let mut o = Out {
        text: String::new(),
        anchors: 0,
        depth: 0,
    };
    if !doc.bombs.is_empty() {
        o.text.push_str("bombs:\n");
        for (i, n) in doc.bombs.iter().enumerate() {
            o.text.push_str("  - ");
            o.anchor();
            let n = 1 + *n as usize % 16;
            let items: Vec<String> = if i == 0 {
                vec!["lol".into(); n]
            } else {
                vec![format!("*a{}", o.anchors - 2); n]
            };
            writeln!(o.text, "[{}]", items.join(", ")).unwrap();
        }
    }
    if let Some(n) = &doc.name {
        o.text.push_str("name: ");
        o.val(n);
        o.text.push('\n');
    }
    if let Some(b) = doc.baseline {
        writeln!(o.text, "baseline: e{}", b % 4).unwrap();
    }
    o.text.push_str("models:\n");
    for (i, m) in doc.models.iter().enumerate() {
        write!(o.text, "  - name: m{i}\n    ").unwrap();
        match m {
            Model::Synthetic { config, seed } => {
                o.text.push_str("weights: synthetic\n    config: ");
                o.val(config);
                if let Some(s) = seed {
                    o.text.push_str("\n    seed: ");
                    o.val(s);
                }
            }
            Model::Path(p) => {
                o.text.push_str("path: ");
                o.val(p);
            }
            Model::Raw(entries) => o.entry(entries),
        }
        o.text.push('\n');
    }
    o.text.push_str("engines:\n");
    for (i, e) in doc.engines.iter().enumerate() {
        writeln!(o.text, "  - name: e{i}").unwrap();
        if let Some(p) = &e.plugin {
            o.text.push_str("    plugin: ");
            o.val(p);
            o.text.push('\n');
        }
        if let Some(opts) = &e.options {
            o.text.push_str("    options: ");
            o.val(&Val::Map(opts.to_vec()));
            o.text.push('\n');
        }
    }
    o.text.push_str("scenarios:\n");
    for (i, s) in doc.scenarios.iter().enumerate() {
        let name = s.name.map_or(i, usize::from);
        let kind =
            ["latency", "throughput", "concurrency", "serving", "other"][s.kind as usize % 5];
        writeln!(o.text, "  - name: s{name}\n    kind: {kind}").unwrap();
        for (key, list, prefix) in [("models", &s.models, 'm'), ("engines", &s.engines, 'e')] {
            if let Some(list) = list {
                let items: Vec<String> =
                    list.iter().map(|n| format!("{prefix}{}", n % 4)).collect();
                writeln!(o.text, "    {key}: [{}]", items.join(", ")).unwrap();
            }
        }
        for (k, v) in &s.run {
            write!(o.text, "    {}: ", k.name()).unwrap();
            o.val(v);
            o.text.push('\n');
        }
        for (k, v) in &s.defaults {
            write!(o.text, "    {}: ", k.name()).unwrap();
            o.val(v);
            o.text.push('\n');
        }
        o.plan(&s.plan, "    ");
        if let Some(q) = &s.quick {
            o.text.push_str("    quick:\n");
            o.plan(q, "      ");
        }
    }
    o.text
}

/// `FUZZ_MATRIX_YAML=FILE` writes each generated document to FILE, to
/// turn an artifact into a YAML regression input.
fn dump(text: &str) {
    static TO: OnceLock<Option<String>> = OnceLock::new();
    if let Some(path) = TO.get_or_init(|| std::env::var("FUZZ_MATRIX_YAML").ok()) {
        std::fs::write(path, text).unwrap();
    }
}

fuzz_target!(|doc: Doc| {
    let text = yaml(&doc);
    dump(&text);
    // Keep the documents the size of real matrices (ranges make long axes
    // from a few input bytes).
    if text.len() > 1 << 20 {
        return;
    }
    if let Ok(m) = Matrix::parse(&text, Path::new("fuzz/structured.yaml")) {
        for quick in [false, true] {
            let cells = m.cells(quick);
            assert!(!cells.is_empty());
            let mut ids = HashSet::new();
            for c in &cells {
                assert!(ids.insert(c.id.clone()), "duplicate cell id {}", c.id);
            }
        }
        m.locate("scenarios[0].axes");
    }
});
