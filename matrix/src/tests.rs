use super::*;

const FILE: &str = "m/x.yaml";

/// Lines 1-9; a test's scenarios start on line 10.
const HEAD: &str = "\
name: t
models:
  - name: m
    weights: synthetic
    config: tiny
engines:
  - name: a
  - name: b
scenarios:
";

fn parse(text: &str) -> Result<Matrix, MatrixError> {
    Matrix::parse(text, Path::new(FILE))
}

fn ok(text: &str) -> Matrix {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// (line, column, field, message) of the error `text` gives.
fn err(text: &str) -> (usize, usize, String, String) {
    match parse(text) {
        Ok(_) => panic!("parsed, expected an error"),
        Err(MatrixError::At {
            file,
            line,
            column,
            field,
            message,
        }) => {
            assert_eq!(file, FILE);
            (line, column, field, message)
        }
        Err(e) => panic!("unexpected {e}"),
    }
}

/// Matrix with the HEAD and one engine-`a`-only scenario body.
fn scenario(body: &str) -> String {
    format!("{HEAD}{body}")
}

fn ids(m: &Matrix, quick: bool) -> Vec<String> {
    m.cells(quick).into_iter().map(|c| c.id).collect()
}

/// The tags (id after `scenario/model/engine/`) of engine `a`'s cells.
fn tags(m: &Matrix, quick: bool) -> Vec<String> {
    m.cells(quick)
        .into_iter()
        .filter(|c| c.engine == "a")
        .map(|c| c.id.splitn(4, '/').nth(3).unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- expansion

#[test]
fn cross_product_first_axis_outermost() {
    let m = ok(&scenario(
        "  - name: s\n    kind: latency\n    engines: [a]\n    axes:\n      batch_size: [1, 2]\n      dtype: [f32, f16]\n",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "in128-out64-bs1-c1-static-f32-none",
            "in128-out64-bs1-c1-static-f16-none",
            "in128-out64-bs2-c1-static-f32-none",
            "in128-out64-bs2-c1-static-f16-none",
        ]
    );
}

#[test]
fn workload_values_are_zipped() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    axes:
      workload:
        - {label: L1, input_tokens: 128, output_tokens: 64}
        - {label: L4, input_tokens: 2048, output_tokens: 512}
      batch_size: [1, 4]
",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "L1-in128-out64-bs1-c1-static-f32-none",
            "L1-in128-out64-bs4-c1-static-f32-none",
            "L4-in2048-out512-bs1-c1-static-f32-none",
            "L4-in2048-out512-bs4-c1-static-f32-none",
        ]
    );
    let c = &m.cells(false)[2];
    assert_eq!(c.params.label.as_deref(), Some("L4"));
    assert_eq!((c.params.input_tokens, c.params.output_tokens), (2048, 512));
}

#[test]
fn exclude_removes_partial_matches() {
    let text = |exclude: &str| {
        scenario(&format!(
            "  - name: s
    kind: latency
    engines: [a]
    axes:
      workload:
        - {{label: L1, input_tokens: 128, output_tokens: 64}}
        - {{label: L4, input_tokens: 2048, output_tokens: 512}}
      batch_size: [1, 16]
    exclude: {exclude}
"
        ))
    };
    let m = ok(&text("[{label: L4, batch_size: 16}]"));
    assert_eq!(
        tags(&m, false),
        [
            "L1-in128-out64-bs1-c1-static-f32-none",
            "L1-in128-out64-bs16-c1-static-f32-none",
            "L4-in2048-out512-bs1-c1-static-f32-none",
        ]
    );
    // One key matches every combination that has it.
    let m = ok(&text("[{batch_size: 16}]"));
    assert_eq!(tags(&m, false).len(), 2);
    // A workload key matches the zipped value.
    let m = ok(&text("[{input_tokens: 2048}]"));
    assert_eq!(
        tags(&m, false),
        [
            "L1-in128-out64-bs1-c1-static-f32-none",
            "L1-in128-out64-bs16-c1-static-f32-none"
        ]
    );
    // An entry whose values match nothing removes nothing.
    let m = ok(&text("[{label: L4, batch_size: 2}]"));
    assert_eq!(tags(&m, false).len(), 4);
}

/// The example of GitHub's documentation ("Expanding or adding matrix
/// configurations"), with fruit -> label, animal -> quantization, color ->
/// dtype (green = f16, pink = bf16) and shape -> output_tokens (circle = 7).
#[test]
fn include_follows_github_semantics() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    axes:
      label: [apple, pear]
      quantization: [cat, dog]
    include:
      - dtype: f16
      - dtype: bf16
        quantization: cat
      - label: apple
        output_tokens: 7
      - label: banana
      - label: banana
        quantization: cat
",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "apple-in128-out7-bs1-c1-static-bf16-cat",
            "apple-in128-out7-bs1-c1-static-f16-dog",
            "pear-in128-out64-bs1-c1-static-bf16-cat",
            "pear-in128-out64-bs1-c1-static-f16-dog",
            "banana-in128-out64-bs1-c1-static-f32-none",
            "banana-in128-out64-bs1-c1-static-f32-cat",
        ]
    );
}

#[test]
fn include_never_overwrites_original_values() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    axes:
      batch_size: [1, 2]
    include:
      - {batch_size: 2, input_tokens: 32}
      - {batch_size: 4}
",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "in128-out64-bs1-c1-static-f32-none",
            "in32-out64-bs2-c1-static-f32-none",
            "in128-out64-bs4-c1-static-f32-none",
        ]
    );
}

#[test]
fn scenario_without_axes_runs_its_includes_or_one_default_cell() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    include:
      - {input_tokens: 32, output_tokens: 8}
      - {input_tokens: 64, output_tokens: 8}
  - name: d
    kind: latency
    engines: [a]
",
    ));
    assert_eq!(
        ids(&m, false),
        [
            "s/m/a/in32-out8-bs1-c1-static-f32-none",
            "s/m/a/in64-out8-bs1-c1-static-f32-none",
            "d/m/a/in128-out64-bs1-c1-static-f32-none",
        ]
    );
}

#[test]
fn defaults_per_kind() {
    let m = ok(&scenario(
        "  - name: lat\n    kind: latency\n  - name: thr\n    kind: throughput\n  - name: con\n    kind: concurrency\n  - name: con4\n    kind: concurrency\n    concurrency: 4\n",
    ));
    let cells = m.cells(false);
    let p = |scenario: &str| {
        cells
            .iter()
            .find(|c| c.scenario == scenario)
            .unwrap()
            .params
            .clone()
    };
    let base = CellParams {
        label: None,
        input_tokens: 128,
        output_tokens: 64,
        batch_size: 1,
        concurrency: 1,
        batch_policy: BatchPolicy::Static,
        max_batch: 1,
        num_requests: 1,
        requests: 1,
        duration_s: 0.0,
        dtype: "f32".into(),
        quantization: "none".into(),
        serving: None,
        dataset: None,
        pressure: None,
    };
    assert_eq!(p("lat"), base);
    assert_eq!(
        p("thr"),
        CellParams {
            batch_size: 8,
            concurrency: 32,
            batch_policy: BatchPolicy::Continuous,
            max_batch: 8,
            num_requests: 32,
            requests: 32,
            ..base.clone()
        }
    );
    assert_eq!(
        p("con"),
        CellParams {
            batch_policy: BatchPolicy::Continuous,
            num_requests: 4,
            requests: 4,
            ..base.clone()
        }
    );
    assert_eq!(
        p("con4"),
        CellParams {
            batch_size: 4,
            concurrency: 4,
            batch_policy: BatchPolicy::Continuous,
            max_batch: 4,
            num_requests: 16,
            requests: 16,
            ..base.clone()
        }
    );
    // Scenarios: model, then combination, then engine.
    assert_eq!(cells.len(), 8);
    assert_eq!(cells[0].engine, "a");
    assert_eq!(cells[1].engine, "b");
    let c = &cells[0];
    assert_eq!((c.warmup, c.iterations), (1, 5));
    assert_eq!((c.min_duration_s, c.max_duration_s), (0.0, 600.0));
}

#[test]
fn concurrency_max_batch_is_the_larger_of_batch_size_and_concurrency() {
    let m = ok(&scenario(
        "  - name: c\n    kind: concurrency\n    engines: [a]\n    batch_size: 2\n    axes:\n      concurrency: [1, 4]\n",
    ));
    let c = m.cells(false);
    assert_eq!((c[0].params.batch_size, c[0].params.max_batch), (2, 2));
    assert_eq!((c[1].params.batch_size, c[1].params.max_batch), (2, 4));
}

#[test]
fn scenario_level_scalars_are_defaults_under_axes() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    dtype: f16
    input_tokens: 32
    axes:
      input_tokens: [8, 16]
    include:
      - {input_tokens: 16, dtype: bf16}
",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "in8-out64-bs1-c1-static-f16-none",
            "in16-out64-bs1-c1-static-bf16-none"
        ]
    );
}

#[test]
fn ids_of_each_kind() {
    let m = ok("
models:
  - {name: gpt2, weights: synthetic, config: gpt2}
engines:
  - {name: candle}
scenarios:
  - name: latency
    kind: latency
    axes:
      workload: [{label: L1, input_tokens: 128, output_tokens: 64}]
  - name: thr
    kind: throughput
    max_batch: 16
  - name: con
    kind: concurrency
    axes:
      duration_s: [0, 2.5]
");
    assert_eq!(m.name, "x", "name defaults to the file stem");
    assert_eq!(
        ids(&m, false),
        [
            "latency/gpt2/candle/L1-in128-out64-bs1-c1-static-f32-none",
            "thr/gpt2/candle/in128-out64-bs8-c32-continuous-f32-none-n32-mb16",
            "con/gpt2/candle/in128-out64-bs1-c1-continuous-f32-none-r4",
            "con/gpt2/candle/in128-out64-bs1-c1-continuous-f32-none-d2.5s",
        ]
    );
}

#[test]
fn quick_overrides_settings_and_merges_axes() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    warmup: 2
    iterations: 10
    min_duration_s: 1
    axes:
      workload:
        - {label: L1, input_tokens: 128, output_tokens: 64}
        - {label: L2, input_tokens: 512, output_tokens: 128}
      batch_size: [1, 2, 4]
    exclude:
      - {label: L2, batch_size: 4}
    quick:
      iterations: 2
      max_duration_s: 30
      axes:
        batch_size: [1, 4]
      exclude:
        - {label: L2}
",
    ));
    assert_eq!(tags(&m, false).len(), 5);
    let quick = m.cells(true);
    assert_eq!(
        tags(&m, true),
        [
            "L1-in128-out64-bs1-c1-static-f32-none",
            "L1-in128-out64-bs4-c1-static-f32-none"
        ]
    );
    assert_eq!(
        (
            quick[0].warmup,
            quick[0].iterations,
            quick[0].min_duration_s,
            quick[0].max_duration_s
        ),
        (2, 2, 1.0, 30.0)
    );
    let full = &m.cells(false)[0];
    assert_eq!((full.iterations, full.max_duration_s), (10, 600.0));
    assert_eq!(m.scenarios[0].iterations, 10);
}

#[test]
fn quick_include_replaces_and_unset_quick_keeps_everything() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    include: [{input_tokens: 8}, {input_tokens: 16}]
    quick:
      include: [{input_tokens: 4}]
  - name: t
    kind: latency
    engines: [a]
    axes: {batch_size: [1, 2]}
",
    ));
    assert_eq!(
        ids(&m, true),
        [
            "s/m/a/in4-out64-bs1-c1-static-f32-none",
            "t/m/a/in128-out64-bs1-c1-static-f32-none",
            "t/m/a/in128-out64-bs2-c1-static-f32-none",
        ]
    );
    assert_eq!(ids(&m, false).len(), 4);
}

#[test]
fn run_order_is_scenario_model_combination_engine() {
    let m = ok("
name: o
models:
  - {name: m1, weights: synthetic, config: tiny}
  - {name: m2, weights: synthetic, config: tiny, seed: 3}
engines: [{name: e1}, {name: e2}]
scenarios:
  - name: s
    kind: latency
    models: [m2, m1]
    axes: {batch_size: [1, 2]}
");
    let order: Vec<(String, u32, String)> = m
        .cells(false)
        .into_iter()
        .map(|c| (c.model, c.params.batch_size, c.engine))
        .collect();
    let want = [
        ("m2", 1, "e1"),
        ("m2", 1, "e2"),
        ("m2", 2, "e1"),
        ("m2", 2, "e2"),
        ("m1", 1, "e1"),
        ("m1", 1, "e2"),
        ("m1", 2, "e1"),
        ("m1", 2, "e2"),
    ];
    let want: Vec<(String, u32, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), *b, c.to_string()))
        .collect();
    assert_eq!(order, want);
    assert_eq!(
        m.models[1].weights,
        ModelWeights::Synthetic {
            config: "tiny".into(),
            seed: 3
        }
    );
}

#[test]
fn cells_serialize_with_lowercase_kind_and_policy() {
    let m = ok(&scenario("  - name: s\n    kind: latency\n"));
    let c = &m.cells(false)[0];
    let v = serde_json::to_value(c).unwrap();
    assert_eq!(v["kind"], "latency");
    assert_eq!(v["params"]["batch_policy"], "static");
    assert_eq!(v["params"]["label"], serde_json::Value::Null);
    let back: Cell = serde_json::from_value(v).unwrap();
    assert_eq!(&back, c);
}

#[test]
fn models_and_engines() {
    let m = Matrix::parse(
        "
name: p
description: \"with paths\"
baseline: fast
models:
  - name: local
    path: ../models/gpt2
  - name: syn
    architecture: gpt2
    weights: synthetic
    config: ./configs/small.json
engines:
  - name: fast
    plugin: candle
    options: {threads: 2, device: cpu, nested: {a: [1, 2.5, true, null]}}
  - name: candle
scenarios:
  - {name: s, kind: latency}
",
        Path::new("/base/matrices/p.yaml"),
    )
    .unwrap();
    assert_eq!(m.description.as_deref(), Some("with paths"));
    assert_eq!(m.baseline.as_deref(), Some("fast"));
    assert_eq!(
        m.models[0].weights,
        ModelWeights::Path(PathBuf::from("/base/models/gpt2"))
    );
    assert_eq!(
        m.models[0].architecture, "",
        "not declared: config.json's model_type"
    );
    assert_eq!(m.models[1].architecture, "gpt2");
    assert_eq!(
        m.models[1].weights,
        ModelWeights::Synthetic {
            config: "/base/matrices/configs/small.json".into(),
            seed: 0
        }
    );
    assert_eq!(m.engines[0].plugin, "candle");
    assert_eq!(
        m.engines[0].options,
        serde_json::json!({"threads": 2, "device": "cpu", "nested": {"a": [1, 2.5, true, null]}})
    );
    assert_eq!(m.engines[1].plugin, "candle");
    assert_eq!(m.engines[1].options, serde_json::json!({}));
    assert_eq!(m.engine("candle").unwrap().name, "candle");
    assert_eq!(m.engine_index("candle"), Some(1));
    assert_eq!(m.model_index("syn"), Some(1));
    assert!(m.model("nope").is_none());
}

#[test]
fn locate_points_at_fields_or_their_parent() {
    let m = ok(&scenario("  - name: s\n    kind: latency\n"));
    assert_eq!(m.locate("engines[1].name"), "m/x.yaml:8:11");
    // `plugin` is not written: the engine's mapping.
    assert_eq!(m.locate("engines[1].plugin"), "m/x.yaml:8:5");
    assert_eq!(m.locate("scenarios[0].kind"), "m/x.yaml:11:11");
    assert_eq!(m.locate("models[0].config"), "m/x.yaml:5:13");
    assert_eq!(m.locate("nothing.here"), "m/x.yaml");
}

#[test]
fn shipped_matrices_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../matrices");
    let tiny =
        Matrix::load(Path::new(&format!("{dir}/tiny.yaml"))).unwrap_or_else(|e| panic!("{e}"));
    let cells = tiny.cells(false);
    let kinds: std::collections::HashSet<ScenarioKind> = cells.iter().map(|c| c.kind).collect();
    assert_eq!(kinds.len(), 3);
    assert!(cells.len() <= 8 * tiny.engines.len());
    assert!(cells
        .iter()
        .all(|c| c.params.input_tokens + c.params.output_tokens <= 256));
    assert_eq!(tiny.engines[0].options, serde_json::json!({"threads": 1}));

    let gpt2 =
        Matrix::load(Path::new(&format!("{dir}/gpt2.yaml"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gpt2.baseline.as_deref(), Some("torch"));
    assert_eq!(gpt2.engines[0].plugin, "torch");
    assert_eq!(gpt2.engines[1].plugin, "torch");
    assert_eq!(
        gpt2.engines[1].options,
        serde_json::json!({"threads": 2, "matmul": "addmm"})
    );
    assert_eq!(gpt2.engines[2].options, serde_json::json!({"threads": 2}));
    let full = ids(&gpt2, false);
    assert_eq!(full.len(), 5 * (4 * 2 + 5 + 5), "five engines");
    assert!(
        full.contains(&"latency/gpt2/candle/L4-in2048-out512-bs1-c1-static-f32-none".to_string())
    );
    assert_eq!(
        gpt2.engines[3].options,
        serde_json::json!({"threads": 2, "kernels": "stock"})
    );
    assert_eq!(gpt2.engines[4].plugin, "onnx");
    let quick = gpt2.cells(true);
    let ids: Vec<&str> = quick.iter().map(|c| c.id.as_str()).collect();
    let mut want = Vec::new();
    for cell in [
        "latency/gpt2/ENGINE/L1-in128-out64-bs1-c1-static-f32-none",
        "latency/gpt2/ENGINE/L1-in128-out64-bs8-c1-static-f32-none",
        "throughput/gpt2/ENGINE/in128-out64-bs1-c8-continuous-f32-none-n8",
        "throughput/gpt2/ENGINE/in128-out64-bs8-c8-continuous-f32-none-n8",
        "concurrency/gpt2/ENGINE/in128-out64-bs1-c1-continuous-f32-none-r8",
        "concurrency/gpt2/ENGINE/in128-out64-bs4-c4-continuous-f32-none-r8",
    ] {
        for engine in ["torch", "torch-addmm", "candle", "candle-stock", "onnx"] {
            want.push(cell.replace("ENGINE", engine));
        }
    }
    assert_eq!(ids, want);
}

// ------------------------------------------------------------------- errors

#[test]
fn error_display_names_file_line_column_and_field() {
    let e = parse(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      batch_size: [1, 2, -1]\n",
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "m/x.yaml:13:26: scenarios[0].axes.batch_size[2]: expected a positive integer, got -1"
    );
    assert_eq!(e.position(), Some((13, 26)));
    assert_eq!(e.field(), Some("scenarios[0].axes.batch_size[2]"));
}

#[test]
fn malformed_yaml() {
    let (line, col, field, msg) = err("name: x\nmodels: [a, b\nengines: 1\n");
    assert_eq!((line, col), (3, 8));
    assert_eq!(field, "");
    assert!(msg.starts_with("invalid YAML:"), "{msg}");

    let (line, col, _, msg) = err("name: x\nmodels:\n  - name: a\n   bad: 1\n");
    assert_eq!((line, col), (4, 4));
    assert!(msg.starts_with("invalid YAML:"), "{msg}");

    let (line, col, _, msg) = err("");
    assert_eq!((line, col), (1, 1));
    assert!(msg.contains("empty"), "{msg}");

    let (line, col, field, msg) = err("- just\n- a list\n");
    assert_eq!((line, col, field.as_str()), (1, 1, ""));
    assert_eq!(msg, "expected a mapping, got a list");
}

#[test]
fn duplicate_yaml_keys() {
    let (line, col, _, msg) = err("name: x\nname: y\n");
    assert_eq!((line, col), (2, 1));
    assert!(msg.contains("duplicate key `name`"), "{msg}");
}

#[test]
fn unknown_top_level_key() {
    let (line, col, field, msg) = err(&format!(
        "{HEAD}  - {{name: s, kind: latency}}\ncolour: blue\n"
    ));
    assert_eq!((line, col), (11, 1));
    assert_eq!(field, "colour");
    assert_eq!(
        msg,
        "unknown key `colour` (allowed: name, description, baseline, quality, targets, models, vectors, engines, scenarios, tune, settings)"
    );
}

#[test]
fn unknown_engine_key() {
    // The end-to-end test's matrix: the error is on line 8.
    let (line, col, field, msg) = err(
        "name: x\nmodels:\n  - name: tiny\n    weights: synthetic\n    config: tiny\nengines:\n  - name: candle\n    colour: blue\nscenarios: []\n",
    );
    assert_eq!((line, col), (8, 5));
    assert_eq!(field, "engines[0].colour");
    assert_eq!(
        msg,
        "unknown key `colour` (allowed: name, plugin, options, launch, tuned)"
    );
}

#[test]
fn unknown_scenario_key() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    iteration: 3\n",
    ));
    assert_eq!((line, col), (12, 5));
    assert_eq!(field, "scenarios[0].iteration");
    assert!(msg.starts_with("unknown key `iteration` (allowed: name, kind, models, engines, quick, breaking_point, warmup, iterations,"), "{msg}");
}

#[test]
fn unknown_axis_key() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      batch_size: [1]\n      batchsize: [2]\n",
    ));
    assert_eq!((line, col), (14, 7));
    assert_eq!(field, "scenarios[0].axes.batchsize");
    assert_eq!(
        msg,
        "unknown key `batchsize` (allowed: workload, input_tokens, output_tokens, batch_size, \
         concurrency, batch_policy, max_batch, num_requests, requests, duration_s, dtype, \
         quantization, label, request_rate, arrival, burstiness, max_concurrency, ramp_up_s, \
         load, spike_factor, spike_at_s, spike_s, slo_ttft_ms, slo_tpot_ms, slo_e2el_ms, \
         slo_attainment, sweep_steps, rate_scale, dataset, dataset_path, prefix_tokens, prefix_groups, time_scale, max_turns, pressure, rate_low, period_s, walk_step_s)"
    );
    // Inside a workload value, and inside quick.
    let (line, col, field, _) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      workload:\n        - {input: 1}\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (14, 12, "scenarios[0].axes.workload[0].input")
    );
    let (line, col, field, _) = err(&scenario(
        "  - name: s\n    kind: latency\n    quick:\n      models: [m]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (13, 7, "scenarios[0].quick.models")
    );
}

#[test]
fn wrong_types() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    iterations: many\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (12, 17, "scenarios[0].iterations")
    );
    assert_eq!(msg, "expected a positive integer, got \"many\"");

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    iterations: 0\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (12, 17, "scenarios[0].iterations")
    );
    assert_eq!(msg, "expected a positive integer, got 0");

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      input_tokens: 128\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (13, 21, "scenarios[0].axes.input_tokens")
    );
    assert_eq!(msg, "expected a list, got 128");

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      input_tokens: []\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (13, 21, "scenarios[0].axes.input_tokens")
    );
    assert_eq!(msg, "expected a non-empty list, got an empty one");

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    max_duration_s: 1.5.2\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (12, 21, "scenarios[0].max_duration_s")
    );
    assert_eq!(msg, "expected a non-negative number, got \"1.5.2\"");

    let (line, col, field, msg) = err("name: [1]\n");
    assert_eq!((line, col, field.as_str()), (1, 7, "name"));
    assert_eq!(msg, "expected a string, got a list");

    let (line, col, field, msg) = err(
        "name: x\nmodels:\n  - name: m\n    weights: synthetic\n    config: tiny\n    seed: -1\n",
    );
    assert_eq!((line, col, field.as_str()), (6, 11, "models[0].seed"));
    assert_eq!(msg, "expected a non-negative integer, got -1");

    let (line, col, field, msg) = err("name: x\nmodels: []\n");
    assert_eq!((line, col, field.as_str()), (2, 9, "models"));
    assert_eq!(msg, "expected a non-empty list, got an empty one");

    let (line, col, field, msg) =
        err(&HEAD.replace("  - name: b\n", "  - name: b\n    options: [1]\n"));
    assert_eq!((line, col, field.as_str()), (9, 14, "engines[1].options"));
    assert_eq!(msg, "expected a mapping of plugin options, got a list");
}

#[test]
fn bad_dtype_and_policy() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      dtype: [f32, f64]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (13, 20, "scenarios[0].axes.dtype[1]")
    );
    assert_eq!(msg, "expected a dtype (f32, f16, bf16), got \"f64\"");

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    batch_policy: dynamic\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (12, 19, "scenarios[0].batch_policy")
    );
    assert_eq!(
        msg,
        "expected a batch policy (none, static, continuous), got \"dynamic\""
    );

    let (line, col, field, msg) = err(&scenario("  - name: s\n    kind: offline\n"));
    assert_eq!((line, col, field.as_str()), (11, 11, "scenarios[0].kind"));
    assert_eq!(
        msg,
        "expected a scenario kind (latency, throughput, concurrency, serving, retrieval), got \"offline\""
    );
}

#[test]
fn unknown_baseline() {
    let text = HEAD.replace("name: t\n", "name: t\nbaseline: vllm\n");
    let (line, col, field, msg) = err(&format!("{text}  - {{name: s, kind: latency}}\n"));
    assert_eq!((line, col, field.as_str()), (2, 11, "baseline"));
    assert_eq!(
        msg,
        "baseline `vllm` is not an engine of this matrix (engines: a, b)"
    );
}

#[test]
fn duplicate_names() {
    let text = HEAD.replace("  - name: b\n", "  - name: a\n");
    let (line, col, field, msg) = err(&format!("{text}  - {{name: s, kind: latency}}\n"));
    assert_eq!((line, col, field.as_str()), (8, 11, "engines[1].name"));
    assert_eq!(msg, "duplicate engine name `a` (first at line 7 column 11)");

    let text = HEAD.replace("engines:\n", "  - {name: m, path: ./m}\nengines:\n");
    let (line, col, field, msg) = err(&format!("{text}  - {{name: s, kind: latency}}\n"));
    assert_eq!((line, col, field.as_str()), (6, 12, "models[1].name"));
    assert_eq!(msg, "duplicate model name `m` (first at line 3 column 11)");

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n  - name: s\n    kind: throughput\n",
    ));
    assert_eq!((line, col, field.as_str()), (12, 11, "scenarios[1].name"));
    assert_eq!(
        msg,
        "duplicate scenario name `s` (first at line 10 column 11)"
    );

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    engines: [a, b, a]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (12, 21, "scenarios[0].engines[2]")
    );
    assert_eq!(msg, "engine `a` is listed twice");

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      batch_size: [1, 2, 1]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (13, 26, "scenarios[0].axes.batch_size[2]")
    );
    assert_eq!(msg, "duplicate value 1 (already at index 0)");
}

#[test]
fn unknown_filter_names() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    models: [m, gpt3]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (12, 17, "scenarios[0].models[1]")
    );
    assert_eq!(msg, "unknown model `gpt3` (defined: m)");
}

#[test]
fn model_weights_must_be_one_of_synthetic_or_path() {
    let (line, col, field, msg) = err(
        "name: x\nmodels:\n  - name: m\n    weights: synthetic\n    config: tiny\n    path: ./m\n",
    );
    assert_eq!((line, col, field.as_str()), (6, 11, "models[0].path"));
    assert_eq!(
        msg,
        "a model has either `weights: synthetic` or `path`, not both"
    );

    let (line, col, field, msg) = err("name: x\nmodels:\n  - name: m\n    architecture: gpt2\n");
    assert_eq!((line, col, field.as_str()), (3, 5, "models[0]"));
    assert_eq!(msg, "a model needs either `weights: synthetic` or `path`");

    let (line, col, field, msg) = err("name: x\nmodels:\n  - name: m\n    weights: random\n");
    assert_eq!((line, col, field.as_str()), (4, 14, "models[0].weights"));
    assert_eq!(
        msg,
        "expected `synthetic` (use `path:` for weights on disk), got \"random\""
    );

    let (line, col, field, msg) =
        err("name: x\nmodels:\n  - name: m\n    path: ./m\n    seed: 1\n");
    assert_eq!((line, col, field.as_str()), (5, 11, "models[0].seed"));
    assert_eq!(msg, "`seed` only applies to `weights: synthetic`");

    let (line, col, field, msg) = err("name: x\nmodels:\n  - name: m\n    weights: synthetic\n");
    assert_eq!((line, col, field.as_str()), (3, 5, "models[0]"));
    assert!(
        msg.starts_with("`weights: synthetic` needs `config:`"),
        "{msg}"
    );
}

#[test]
fn missing_required_keys_and_bad_names() {
    let (line, col, field, msg) = err(&scenario("  - name: s\n    iterations: 2\n"));
    assert_eq!((line, col, field.as_str()), (10, 5, "scenarios[0]"));
    assert_eq!(msg, "missing required key `kind`");

    let (line, col, field, msg) = err("name: x\n");
    assert_eq!((line, col, field.as_str()), (1, 1, ""));
    assert_eq!(
        msg,
        "missing required key `models` (or `vectors`, for retrieval scenarios)"
    );

    let (line, col, field, msg) = err(&scenario("  - name: my scenario\n    kind: latency\n"));
    assert_eq!((line, col, field.as_str()), (10, 11, "scenarios[0].name"));
    assert!(msg.contains("not a valid name"), "{msg}");
}

#[test]
fn latency_with_concurrency_is_an_error() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      concurrency: [1, 4]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (13, 24, "scenarios[0].axes.concurrency[1]")
    );
    assert!(
        msg.starts_with(
            "a latency scenario runs one batch at a time: concurrency must be 1, got 4"
        ),
        "{msg}"
    );

    let (line, col, field, _) = err(&scenario(
        "  - name: s\n    kind: latency\n    concurrency: 2\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (12, 18, "scenarios[0].concurrency")
    );
}

#[test]
fn exclude_and_workload_keys_are_checked_against_axes() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      batch_size: [1, 2]\n    exclude:\n      - {dtype: f16}\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (15, 17, "scenarios[0].exclude[0].dtype")
    );
    assert_eq!(
        msg,
        "exclude key `dtype` is not an axis of this scenario (axes: batch_size)"
    );

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      batch_size: [1]\n    exclude:\n      - {colour: red}\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (15, 10, "scenarios[0].exclude[0].colour")
    );
    assert!(
        msg.starts_with("unknown key `colour` (allowed: input_tokens,"),
        "{msg}"
    );

    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      batch_size: [1]\n      workload:\n        - {batch_size: 2}\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (15, 24, "scenarios[0].axes.workload[0].batch_size")
    );
    assert_eq!(
        msg,
        "`batch_size` is both an axis of its own and a key of workload values"
    );
}

#[test]
fn duplicate_cells_are_an_error() {
    // num_requests does not change a latency cell.
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      num_requests: [1, 2]\n",
    ));
    assert_eq!((line, col, field.as_str()), (10, 5, "scenarios[0]"));
    assert_eq!(
        msg,
        "combinations 0 and 1 both give cell `s/m/a/in128-out64-bs1-c1-static-f32-none`: they are \
         the same or differ only in keys a latency scenario ignores"
    );
}

#[test]
fn everything_excluded_is_an_error() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      batch_size: [1]\n    exclude: [{batch_size: 1}]\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (14, 14, "scenarios[0].exclude")
    );
    assert_eq!(
        msg,
        "every combination is excluded: the scenario has no cell"
    );
}

#[test]
fn durations_are_checked() {
    let (line, col, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    min_duration_s: 10\n    max_duration_s: 5\n",
    ));
    assert_eq!(
        (line, col, field.as_str()),
        (13, 21, "scenarios[0].max_duration_s")
    );
    assert_eq!(
        msg,
        "max_duration_s (5) must be positive and at least min_duration_s (10)"
    );
}

#[test]
fn unreadable_file_is_an_io_error() {
    let e = Matrix::load(Path::new("/nonexistent/matrix.yaml")).unwrap_err();
    assert!(matches!(e, MatrixError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/matrix.yaml: cannot read the matrix:"),
        "{e}"
    );
    assert_eq!(e.position(), None);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn distinct(max: u32) -> impl Strategy<Value = Vec<u32>> {
        prop::collection::btree_set(1..max, 1..5).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        /// Without exclude/include, the cells are the full cross product,
        /// each once, first axis outermost.
        #[test]
        fn prop_cross_product(bs in distinct(64), inp in distinct(4096), dtypes in 1usize..=3) {
            let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            let text = scenario(&format!(
                "  - name: s\n    kind: latency\n    engines: [a]\n    axes:\n      batch_size: [{}]\n      input_tokens: [{}]\n      dtype: [{}]\n",
                list(&bs),
                list(&inp),
                ["f32", "f16", "bf16"][..dtypes].join(", ")
            ));
            let m = ok(&text);
            let cells = m.cells(false);
            prop_assert_eq!(cells.len(), bs.len() * inp.len() * dtypes);
            let unique: std::collections::HashSet<&str> = cells.iter().map(|c| c.id.as_str()).collect();
            prop_assert_eq!(unique.len(), cells.len());
            let per_bs = inp.len() * dtypes;
            for (i, c) in cells.iter().enumerate() {
                prop_assert_eq!(c.params.batch_size, bs[i / per_bs]);
                prop_assert_eq!(c.params.input_tokens, inp[(i / dtypes) % inp.len()]);
            }
            // Excluding one batch size removes exactly its cells.
            let ex = format!("{text}    exclude: [{{batch_size: {}}}]\n", bs[0]);
            if bs.len() > 1 {
                prop_assert_eq!(ok(&ex).cells(false).len(), (bs.len() - 1) * per_bs);
            }
        }
    }
}

fn with_engines(engines: &str) -> String {
    format!(
        "name: t\nmodels: [{{name: m, weights: synthetic, config: tiny}}]\nengines:\n{engines}scenarios:\n  - {{name: s, kind: latency}}\n"
    )
}

#[test]
fn launch_is_parsed_with_defaults_and_placeholders() {
    let m = ok(&with_engines(
        "  - name: h\n    plugin: http\n    options: {base_url: \"http://127.0.0.1:${PORT}/v1/\"}\n    launch:\n      command: [\"${ENGINE_MATRIX}\", serve, --port, \"${PORT}\", -t, 2]\n      env: {A: 1, B: \"${HOME}\"}\n  - name: v\n    plugin: http\n    options: {base_url: \"http://127.0.0.1:8000\"}\n    launch: {command: \"vllm serve x --port 8000\", ready: /health, ready_timeout_s: 30, stop_timeout_s: 2.5}\n",
    ));
    let h = m.engine("h").unwrap().launch.as_ref().unwrap();
    assert_eq!(
        h.command,
        ["${ENGINE_MATRIX}", "serve", "--port", "${PORT}", "-t", "2"]
    );
    assert_eq!(h.ready, "http://127.0.0.1:${PORT}/v1/models");
    assert_eq!((h.ready_timeout_s, h.stop_timeout_s), (600.0, 10.0));
    assert_eq!(h.env["A"], "1");
    assert_eq!(h.env["B"], "${HOME}");
    let v = m.engine("v").unwrap().launch.as_ref().unwrap();
    assert_eq!(v.command, ["/bin/sh", "-c", "vllm serve x --port 8000"]);
    assert_eq!(v.ready, "http://127.0.0.1:8000/health");
    assert_eq!((v.ready_timeout_s, v.stop_timeout_s), (30.0, 2.5));
    assert!(m.engine("h").unwrap().options["base_url"]
        .as_str()
        .unwrap()
        .contains("${PORT}"));
}

#[test]
fn launch_errors_name_the_field() {
    let e = err(&with_engines(
        "  - name: h\n    plugin: http\n    launch: {command: [x]}\n",
    ));
    assert_eq!(e.2, "engines[0].launch");
    assert!(e.3.contains("needs `ready:`"), "{e:?}");
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: [x, \"${PORT\"]}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.command[1]");
    assert!(e.3.contains("unclosed"), "{e:?}");
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: [], ready: /x}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.command");
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: x, ready: health}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.ready");
    assert!(e.3.contains("http:// URL or a path"), "{e:?}");
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: x, ready_timeout_s: 0}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.ready_timeout_s");
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: x, port: 3}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.port");
    assert!(e.3.contains("unknown key"), "{e:?}");
}

#[test]
fn launch_gguf_names_the_file_and_type_and_its_errors_the_field() {
    let m = ok(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch:\n      gguf: {from: \"${SMOLLM2_GGUF}\", type: Q8_0}\n      command: [srv, -m, \"${GGUF}\"]\n",
    ));
    let g = m
        .engine("h")
        .unwrap()
        .launch
        .as_ref()
        .unwrap()
        .gguf
        .clone()
        .unwrap();
    assert_eq!(
        (g.from.as_str(), g.ty.as_str()),
        ("${SMOLLM2_GGUF}", "q8_0")
    );
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: [srv, -m, \"${GGUF}\"]}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.command");
    assert!(e.3.contains("launch.gguf"), "{e:?}");
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: x, gguf: {from: a.gguf, type: \"q4 k\"}}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.gguf.type");
    assert!(e.3.contains("GGUF type"), "{e:?}");
    let e = err(&with_engines(
        "  - name: h\n    options: {base_url: \"http://h:1\"}\n    launch: {command: x, gguf: {type: q8_0}}\n",
    ));
    assert_eq!(e.2, "engines[0].launch.gguf");
    assert!(e.3.contains("from"), "{e:?}");
}

#[test]
fn serving_defaults_tags_and_errors() {
    use crate::open_loop::{Arrival, Load, Rate};
    let m = ok(&scenario(
        "  - name: s\n    kind: serving\n    engines: [a]\n    axes:\n      request_rate: [inf, 2.5, sustainable]\n",
    ));
    let cells = m.cells(false);
    assert_eq!(cells.len(), 3);
    let sv = cells[0].params.serving.as_ref().unwrap();
    assert_eq!(
        (sv.load, sv.arrival, sv.request_rate, sv.max_concurrency),
        (Load::Sustained, Arrival::Poisson, Rate::Inf, None)
    );
    assert_eq!(cells[0].iterations, 1, "a serving iteration is a whole run");
    assert_eq!(cells[0].params.requests, 100);
    assert_eq!(
        tags(&m, false),
        [
            "in128-out64-sustained-rinf-poisson-n100-f32-none",
            "in128-out64-sustained-r2.5-poisson-n100-f32-none",
            "in128-out64-sustained-rsust-poisson-n100-f32-none",
        ]
    );
    let m = ok(&scenario(
        "  - name: s\n    kind: serving\n    engines: [a]\n    load: spike\n    request_rate: 4\n    arrival: gamma\n    burstiness: 0.5\n    duration_s: 30\n    max_concurrency: 16\n    slo_ttft_ms: 500\n",
    ));
    let c = &m.cells(false)[0];
    let sv = c.params.serving.as_ref().unwrap();
    assert_eq!(
        (sv.spike_at_s, sv.spike_s, sv.spike_factor),
        (12.0, 6.0, 2.0)
    );
    assert_eq!((c.params.max_batch, c.params.concurrency), (16, 16));
    assert_eq!(
        tags(&m, false),
        ["in128-out64-spike-r4-gamma0.5-mc16-x2at12s+6s-d30s-slo500_x_x-f32-none"]
    );
    let m = ok(&scenario(
        "  - name: s\n    kind: serving\n    engines: [a]\n    load: sweep\n    slo_e2el_ms: 100\n",
    ));
    let c = &m.cells(false)[0];
    assert_eq!(
        c.params.duration_s, 10.0,
        "a sweep segment lasts 10 s by default"
    );
    assert_eq!(
        c.params.serving.as_ref().unwrap().request_rate,
        Rate::Fixed(1.0)
    );

    let bad = |body: &str| {
        err(&scenario(&format!(
            "  - name: s\n    kind: serving\n{body}"
        )))
    };
    let e = bad("    load: sweep\n");
    assert!(e.3.contains("needs slo_ttft_ms or slo_e2el_ms"), "{e:?}");
    let e = bad("    load: sweep\n    slo_tpot_ms: 50\n");
    assert!(e.3.contains("TPOT alone does not"), "{e:?}");
    let e = bad("    duration_s: 5\n");
    assert!(
        e.3.contains("request_rate inf sends `requests` at once"),
        "{e:?}"
    );
    assert_eq!(e.2, "scenarios[0].duration_s");
    let e = bad("    load: spike\n    request_rate: 2\n    duration_s: 10\n    spike_at_s: 8\n    spike_s: 3\n");
    assert!(e.3.contains("must end before duration_s"), "{e:?}");
    let e = bad("    request_rate: 0\n");
    assert!(e.3.contains("request rate > 0"), "{e:?}");
    let e = bad("    request_rate: fast\n");
    assert!(e.3.contains("`inf` or `sustainable`"), "{e:?}");
    let e = bad("    arrival: uniform\n");
    assert!(e.3.contains("constant, poisson, gamma"), "{e:?}");
    let e = bad("    slo_attainment: 1.5\n");
    assert!(e.3.contains("(0, 1]"), "{e:?}");
    let e = bad("    load: sweep\n    request_rate: inf\n    slo_ttft_ms: 5\n");
    assert!(e.3.contains("a sweep starts at a request rate"), "{e:?}");
    let e = err(&scenario(
        "  - name: s\n    kind: latency\n    request_rate: 3\n",
    ));
    assert_eq!(e.2, "scenarios[0].request_rate");
    assert!(e.3.contains("applies to `kind: serving` only"), "{e:?}");
}

#[test]
fn model_paths_take_environment_variables() {
    std::env::set_var("EM_TEST_MODEL_DIR", "/models/cache");
    let m = Matrix::parse(
        "models:\n  - {name: s, path: \"${EM_TEST_MODEL_DIR}/smol.gguf\"}\nengines: [{name: candle}]\nscenarios: [{name: s, kind: latency}]\n",
        Path::new("/base/m.yaml"),
    )
    .unwrap();
    assert_eq!(
        m.models[0].weights,
        ModelWeights::Path(PathBuf::from("/models/cache/smol.gguf"))
    );
    let e = Matrix::parse(
        "models:\n  - {name: s, path: \"${EM_TEST_UNSET_VARIABLE}/x\"}\nengines: [{name: candle}]\nscenarios: [{name: s, kind: latency}]\n",
        Path::new("/base/m.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("m.yaml:2:") && e.contains("EM_TEST_UNSET_VARIABLE is not set"),
        "{e}"
    );
}

#[test]
fn datasets_shape_ids_and_params() {
    let m = ok(&scenario(
        "  - name: s
    kind: latency
    engines: [a]
    axes:
      workload:
        - {dataset: prefix, input_tokens: 128, prefix_tokens: 96, prefix_groups: 4}
        - {dataset: prefix, input_tokens: 64}
        - {dataset: sharegpt}
        - {dataset: sharegpt, output_tokens: 32}
        - {dataset: prompts, dataset_path: data/questions.jsonl}
        - {dataset: sharegpt, dataset_path: \"${SHAREGPT}/x.json\"}
        - {input_tokens: 16}
",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "in128p96x4-out64-bs1-c1-static-f32-none",
            "in64p32x1-out64-bs1-c1-static-f32-none",
            "sharegpt-outdata-bs1-c1-static-f32-none",
            "sharegpt-out32-bs1-c1-static-f32-none",
            "prompts.questions-outdata-bs1-c1-static-f32-none",
            "sharegpt.x-outdata-bs1-c1-static-f32-none",
            "in16-out64-bs1-c1-static-f32-none",
        ]
    );
    let cells: Vec<Cell> = m
        .cells(false)
        .into_iter()
        .filter(|c| c.engine == "a")
        .collect();
    let d = |i: usize| cells[i].params.dataset.clone();
    let prefix = d(0).unwrap();
    assert_eq!(
        (prefix.kind, prefix.prefix_tokens, prefix.prefix_groups),
        (dataset::DatasetKind::Prefix, 96, 4)
    );
    assert!(d(2).unwrap().output_from_data);
    assert!(!d(3).unwrap().output_from_data);
    assert_eq!(cells[3].params.output_tokens, 32);
    // A text dataset's lengths are its data's: none nominal.
    assert_eq!(
        (cells[2].params.input_tokens, cells[2].params.output_tokens),
        (0, 0)
    );
    assert_eq!(cells[3].params.input_tokens, 0);
    // Relative to the matrix's folder; placeholders are kept for the run.
    let prompts = d(4).unwrap().path.unwrap();
    assert!(prompts.ends_with("/m/data/questions.jsonl"), "{prompts}");
    assert!(Path::new(&prompts).is_absolute());
    assert_eq!(d(5).unwrap().path.as_deref(), Some("${SHAREGPT}/x.json"));
    assert_eq!(d(6), None, "random is the default, with no record");
}

#[test]
fn dataset_keys_are_checked_against_the_dataset() {
    let (line, _, field, msg) = err(&scenario(
        "  - name: s
    kind: latency
    dataset: sharegpt
    input_tokens: 64
",
    ));
    assert_eq!((line, field.as_str()), (13, "scenarios[0].input_tokens"));
    assert!(
        msg.contains("takes its input lengths from the data"),
        "{msg}"
    );

    let (line, _, field, msg) = err(&scenario(
        "  - name: s
    kind: latency
    axes: {prefix_tokens: [0, 32]}
",
    ));
    assert_eq!(line, 12);
    assert!(
        field.starts_with("scenarios[0].axes.prefix_tokens"),
        "{field}"
    );
    assert!(msg.contains("applies to dataset prefix only"), "{msg}");

    let (_, _, _, msg) = err(&scenario(
        "  - name: s
    kind: latency
    dataset: prompts
",
    ));
    assert!(msg.contains("needs dataset_path"), "{msg}");

    let (line, _, _, msg) = err(&scenario(
        "  - name: s
    kind: latency
    dataset: prefix
    input_tokens: 32
    prefix_tokens: 33
",
    ));
    assert_eq!(line, 14);
    assert!(msg.contains("at most input_tokens (32)"), "{msg}");

    let (_, _, _, msg) = err(&scenario(
        "  - name: s
    kind: latency
    dataset: burstgpt
",
    ));
    assert!(
        msg.contains("expected a dataset (random, prefix, sharegpt, prompts, trace, multi_turn)"),
        "{msg}"
    );
}

#[test]
fn a_trace_is_the_schedule_of_a_serving_cell() {
    let m = ok(&scenario(
        "  - name: s
    kind: serving
    engines: [a]
    dataset: trace
    dataset_path: traces/conv.jsonl
    axes:
      workload:
        - {time_scale: 1}
        - {time_scale: 0.5, max_concurrency: 4}
        - {output_tokens: 8, slo_ttft_ms: 500}
",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "trace.conv-outdata-f32-none",
            "trace.conv-ts0.5-outdata-mc4-f32-none",
            "trace.conv-out8-slo500_x_x-f32-none",
        ]
    );
    let cells = m.cells(false);
    let d = cells[1].params.dataset.as_ref().unwrap();
    assert_eq!(
        (d.kind, d.time_scale, d.output_from_data),
        (dataset::DatasetKind::Trace, 0.5, true)
    );
    assert!(d.path.as_deref().unwrap().ends_with("/m/traces/conv.jsonl"));
    // The trace gives the lengths and the requests: none nominal.
    let p = &cells[0].params;
    assert_eq!(
        (p.input_tokens, p.output_tokens, p.requests, p.duration_s),
        (0, 0, 0, 0.0)
    );
    assert_eq!(cells[0].params.dataset.as_ref().unwrap().time_scale, 1.0);
    assert_eq!(cells[2].params.output_tokens, 8);
    assert_eq!(
        cells[1].params.serving.as_ref().unwrap().max_concurrency,
        Some(4)
    );
}

#[test]
fn trace_keys_are_checked_at_their_field() {
    let trace = |body: &str| {
        err(&scenario(&format!(
            "  - name: s\n    kind: serving\n    dataset: trace\n    dataset_path: t.jsonl\n{body}"
        )))
    };
    let cases: [(&str, &str, &str); 8] = [
        (
            "    request_rate: 2\n",
            "scenarios[0].request_rate",
            "`request_rate` does not apply to dataset trace: the trace's timestamps are the schedule",
        ),
        (
            "    arrival: constant\n",
            "scenarios[0].arrival",
            "`arrival` does not apply to dataset trace",
        ),
        (
            "    duration_s: 30\n",
            "scenarios[0].duration_s",
            "`duration_s` does not apply to dataset trace: a trace sends one request per line",
        ),
        (
            "    requests: 10\n",
            "scenarios[0].requests",
            "`requests` does not apply to dataset trace",
        ),
        (
            "    load: spike\n",
            "scenarios[0].load",
            "load spike does not apply to dataset trace",
        ),
        (
            "    axes: {load: [sustained, sweep]}\n    slo_ttft_ms: 100\n",
            "scenarios[0].axes.load[1]",
            "load sweep does not apply to dataset trace",
        ),
        (
            "    input_tokens: 64\n",
            "scenarios[0].input_tokens",
            "dataset trace takes its input lengths from the data",
        ),
        (
            "    time_scale: 0\n",
            "scenarios[0].time_scale",
            "expected a positive number",
        ),
    ];
    for (body, field, msg) in cases {
        let e = trace(body);
        assert_eq!(e.2, field, "{body}: {e:?}");
        assert!(e.3.contains(msg), "{body}: {e:?}");
    }

    // Serving only, with a file, and time_scale with a trace only.
    let e = err(&scenario(
        "  - name: s\n    kind: concurrency\n    dataset: trace\n    dataset_path: t.jsonl\n",
    ));
    assert_eq!((e.0, e.2.as_str()), (12, "scenarios[0].dataset"));
    assert!(
        e.3.contains("dataset trace replays a trace at its own times: it applies to `kind: serving` only (this scenario is concurrency)"),
        "{e:?}"
    );
    let e = err(&scenario(
        "  - name: s\n    kind: serving\n    dataset: trace\n",
    ));
    assert!(e.3.contains("dataset trace needs dataset_path"), "{e:?}");
    let e = err(&scenario(
        "  - name: s\n    kind: serving\n    dataset: sharegpt\n    time_scale: 2\n",
    ));
    assert_eq!(e.2, "scenarios[0].time_scale");
    assert!(e.3.contains("applies to dataset trace only"), "{e:?}");
    let e = err(&scenario(
        "  - name: s\n    kind: latency\n    time_scale: 2\n",
    ));
    assert!(e.3.contains("applies to `kind: serving` only"), "{e:?}");
    // `load: sustained` is what a replay is: allowed.
    ok(&scenario(
        "  - name: s\n    kind: serving\n    dataset: trace\n    dataset_path: t.jsonl\n    load: sustained\n",
    ));
}

#[test]
fn multi_turn_runs_sessions_in_a_closed_loop() {
    let m = ok(&scenario(
        "  - name: s
    kind: concurrency
    engines: [a]
    dataset: multi_turn
    concurrency: 2
    axes: {max_turns: [2, 6]}
",
    ));
    assert_eq!(
        tags(&m, false),
        [
            "multiturn2-outdata-bs2-c2-continuous-f32-none-r8",
            "multiturn6-outdata-bs2-c2-continuous-f32-none-r8"
        ]
    );
    let d = m.cells(false)[1].params.dataset.clone().unwrap();
    assert_eq!(
        (d.kind, d.max_turns, d.output_from_data),
        (dataset::DatasetKind::MultiTurn, 6, true)
    );
    let (line, _, _, msg) = err(&scenario(
        "  - name: s
    kind: latency
    dataset: multi_turn
",
    ));
    assert_eq!(line, 12);
    assert!(
        msg.contains("applies to `kind: concurrency` only (this scenario is latency)"),
        "{msg}"
    );
    let (_, _, field, msg) = err(&scenario(
        "  - name: s
    kind: concurrency
    dataset: sharegpt
    max_turns: 3
",
    ));
    assert_eq!(field, "scenarios[0].max_turns");
    assert!(msg.contains("applies to dataset multi_turn only"), "{msg}");
    let (_, _, _, msg) = err(&scenario(
        "  - name: s
    kind: concurrency
    dataset: multi_turn
    max_turns: 1
",
    ));
    assert!(
        msg.contains("expected an integer >= 2")
            || msg.contains(">= 2")
            || msg.contains("at least 2"),
        "{msg}"
    );
}

#[test]
fn the_quality_block_defaults_to_the_first_engine_and_checks_its_keys() {
    let with = |q: &str| {
        format!(
            "{}  - {{name: s, kind: latency}}\n",
            HEAD.replace("name: t\n", &format!("name: t\n{q}"))
        )
    };
    let m = ok(&with("quality: {}\n"));
    let q = m.quality.expect("a quality block");
    assert_eq!(
        (q.reference.as_str(), q.tokens, q.quick_tokens, q.context),
        ("a", 16384, 2048, 512)
    );
    assert_eq!(q.path, None);
    let m = ok(&with(
        "quality: {reference: b, tokens: 64, quick_tokens: 32, context: 16, path: s.json}\n",
    ));
    let q = m.quality.unwrap();
    assert_eq!(
        (q.reference.as_str(), q.tokens, q.quick_tokens, q.context),
        ("b", 64, 32, 16)
    );
    assert_eq!(
        q.path,
        Some(Path::new(FILE).parent().unwrap().join("s.json"))
    );
    assert_eq!(ok(&with("")).quality, None);
    let (line, _, field, msg) = err(&with("quality: {reference: vllm}\n"));
    assert_eq!((line, field.as_str()), (2, "quality.reference"));
    assert_eq!(
        msg,
        "quality reference `vllm` is not an engine of this matrix (engines: a, b)"
    );
    let (_, _, field, msg) = err(&with("quality: {context: 512, tokens: 100}\n"));
    assert_eq!(field, "quality.tokens");
    assert!(msg.contains("at least 512"), "{msg}");
    let (_, _, field, msg) = err(&with("quality: {windows: 3}\n"));
    assert_eq!(field, "quality.windows");
    assert!(msg.contains("unknown key `windows`"), "{msg}");
}

/// A matrix with a latency scenario `s` on engines a and b, then `tail`
/// (top-level keys such as `targets:`), starting on line 12.
fn with_targets(tail: &str) -> String {
    format!("{HEAD}  - {{name: s, kind: latency}}\n{tail}")
}

#[test]
fn targets_take_profiles_and_written_targets() {
    let m = ok(&with_targets("targets: cpu_only\n"));
    let t = m.targets.expect("targets");
    assert_eq!(t.profiles, ["cpu_only"]);
    assert_eq!(t.targets.len(), 5);
    assert!(t.targets.iter().all(|d| d.source == "cpu_only"));
    // The seeds' retrieval target is in every hardware profile; a matrix
    // without retrieval cells keeps it as not applicable, saying why.
    let r = &t.targets[4];
    assert_eq!(r.name, "cpu_only.retrieval_p95");
    assert!(
        r.not_applicable
            .as_deref()
            .is_some_and(|w| w.contains("leave no cell of this matrix")),
        "{r:?}"
    );
    let tok = &t.targets[0];
    assert_eq!(
        (tok.metric.as_str(), tok.target.min),
        ("output_throughput", Some(10.0))
    );
    let m = ok(&with_targets(
        "targets:\n  - {name: fast, metric: ttft_ms.p99, max: 50, acceptable: 80, engines: [b], kinds: [latency]}\n",
    ));
    let d = &m.targets.unwrap().targets[0];
    assert_eq!(d.name, "fast");
    assert_eq!(d.acceptable.unwrap().max, Some(80.0));
    assert_eq!(d.engines, ["b"]);
    assert_eq!(d.describe(), "ttft_ms.p99 ≤ 50 (acceptable ≤ 80)");
    assert_eq!(ok(&with_targets("")).targets, None);
}

#[test]
fn bad_targets_are_errors_at_their_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "targets: gpu_fast\n",
            "targets",
            "unknown target profile `gpu_fast` (profiles: gpt2_plan, rtx_4090, rtx_3080, cpu_only, retrieval)",
        ),
        (
            "targets:\n  - {metric: ttft_ms.p42, max: 1}\n",
            "targets[0].metric",
            "unknown metric `ttft_ms.p42`",
        ),
        (
            "targets:\n  - {metric: output_throughput}\n",
            "targets[0]",
            "a target needs `min:`",
        ),
        (
            "targets:\n  - {metric: output_throughput, min: 5, max: 1}\n",
            "targets[0]",
            "`min` (5) is above `max` (1)",
        ),
        (
            "targets:\n  - {metric: output_throughput, min: 30, acceptable: 40}\n",
            "targets[0].acceptable",
            "must be looser than the target",
        ),
        (
            "targets:\n  - {metric: output_throughput, min: 30, engines: [vllm]}\n",
            "targets[0].engines[0]",
            "`vllm` is not one of this matrix's engines (a, b)",
        ),
        (
            "targets:\n  - {metric: goodput, min: 1}\n",
            "targets[0].metric",
            "`goodput` is a serving metric",
        ),
        (
            "targets:\n  - {metric: speedup, min: 2}\n",
            "targets[0].metric",
            "the matrix has none",
        ),
        (
            "targets:\n  - {metric: perplexity, max: 20}\n",
            "targets[0].metric",
            "needs a `quality:` block",
        ),
        (
            "targets:\n  - {metric: output_throughput, min: 1, kinds: [serving]}\n",
            "targets[0].metric",
            "its filters leave no cell",
        ),
        (
            "targets:\n  - {metric: output_throughput, min: 1}\n  - {metric: output_throughput, min: 2}\n",
            "targets[1]",
            "written twice",
        ),
        (
            "targets:\n  - {metric: output_throughput, min: fast}\n",
            "targets[0].min",
            "expected a number",
        ),
    ];
    for (tail, want_field, want) in cases {
        let (line, _, field, msg) = err(&with_targets(tail));
        assert_eq!(&field, want_field, "{tail}: {msg}");
        assert!(msg.contains(want), "{tail}: {msg}");
        assert!(line >= 11, "{tail}: line {line}");
    }
    // The metric's line: the second item of the list.
    let (line, ..) = err(&with_targets(
        "targets:\n  - {metric: output_throughput, min: 1}\n  - {metric: nonsense, min: 1}\n",
    ));
    assert_eq!(line, 13);
}

#[test]
fn a_profile_target_the_matrix_cannot_have_is_kept_as_not_applicable() {
    // gpt2_plan has a speedup target; this matrix has no baseline, and
    // its request-throughput target is for batched scenarios only.
    let m = ok(&with_targets("targets: gpt2_plan\n"));
    let t = m.targets.unwrap();
    let na: Vec<&str> = t
        .targets
        .iter()
        .filter(|d| d.not_applicable.is_some())
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(na, ["gpt2_plan.throughput", "gpt2_plan.speedup"]);
}

#[test]
fn pressure_is_an_axis_and_tags_the_cell() {
    let m = ok(&scenario(
        "  - name: s\n    kind: latency\n    engines: [a]\n    axes:\n      pressure: [none, cpu2, cpu1-mem0.5]\n",
    ));
    let cells = m.cells(false);
    let got: Vec<(String, Option<crate::pressure::Pressure>)> = cells
        .iter()
        .map(|c| (c.id.clone(), c.params.pressure))
        .collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, "s/m/a/in128-out64-bs1-c1-static-f32-none");
    assert_eq!(got[0].1, None);
    assert_eq!(got[1].0, "s/m/a/in128-out64-bs1-c1-static-f32-none-pcpu2");
    assert_eq!(got[1].1.unwrap().cpu_threads, 2);
    assert_eq!(
        got[2].0,
        "s/m/a/in128-out64-bs1-c1-static-f32-none-pcpu1-mem0.5"
    );
    assert_eq!(got[2].1.unwrap().memory_mib, 512);
    let (line, _, field, msg) = err(&scenario(
        "  - name: s\n    kind: latency\n    axes:\n      pressure: [none, gpu2]\n",
    ));
    assert_eq!(
        (line, field.as_str()),
        (13, "scenarios[0].axes.pressure[1]")
    );
    assert!(msg.contains("`gpu2` is not cpuN or memG"), "{msg}");
}

#[test]
fn variable_loads_take_their_shape_keys() {
    use crate::open_loop::Load;
    let m = ok(&scenario(
        "  - name: s\n    kind: serving\n    engines: [a]\n    request_rate: 4\n    duration_s: 60\n    axes:\n      load: [day, walk]\n",
    ));
    let cells = m.cells(false);
    let sv = |i: usize| cells[i].params.serving.clone().unwrap();
    assert_eq!(
        (sv(0).load, sv(0).rate_low, sv(0).period_s),
        (Load::Day, 0.25, 60.0)
    );
    assert_eq!((sv(1).load, sv(1).walk_step_s), (Load::Walk, 10.0));
    assert_eq!(
        tags(&m, false),
        [
            "in128-out64-day-r4-poisson-low0.25-per60s-d60s-f32-none",
            "in128-out64-walk-r4-poisson-low0.25-step10s-d60s-f32-none",
        ]
    );
    let m = ok(&scenario(
        "  - name: s\n    kind: serving\n    engines: [a]\n    load: day\n    request_rate: 4\n    duration_s: 600\n    rate_low: 0.1\n    period_s: 120\n",
    ));
    let sv = m.cells(false)[0].params.serving.clone().unwrap();
    assert_eq!((sv.rate_low, sv.period_s), (0.1, 120.0));
    for (body, field, want) in [
        (
            "    load: day\n    request_rate: 4\n",
            "scenarios[0]",
            "a day load runs for a time: it needs duration_s",
        ),
        (
            "    load: walk\n    request_rate: inf\n",
            "scenarios[0].request_rate",
            "a walk needs a request rate, not inf",
        ),
        (
            "    load: sustained\n    request_rate: 4\n    duration_s: 30\n    period_s: 10\n",
            "scenarios[0].period_s",
            "`period_s` applies to load day only (this combination's load is sustained)",
        ),
        (
            "    load: day\n    request_rate: 4\n    duration_s: 30\n    rate_low: 1.5\n",
            "scenarios[0].rate_low",
            "in (0, 1], got 1.5",
        ),
    ] {
        let (_, _, f, msg) = err(&scenario(&format!(
            "  - name: s\n    kind: serving\n    engines: [a]\n{body}"
        )));
        assert_eq!(f, field, "{msg}");
        assert!(msg.contains(want), "{msg}");
    }
}

/// A retrieval matrix: lines 1-9 before its scenarios.
const RHEAD: &str = "\
name: r
vectors:
  - {name: mix, synthetic: {clusters: 4}}
  - {name: sift, base: data/b.fvecs, queries: data/q.fvecs}
engines:
  - {name: flat}
  - {name: hnsw, options: {m: 8}}
  - {name: usearch}
scenarios:
";

#[test]
fn retrieval_scenarios_expand_their_axes_then_each_engines_search_sweep() {
    let m = ok(&format!(
        "{RHEAD}  - name: ann
    kind: retrieval
    vectors: [mix]
    k: 5
    queries: 50
    axes:
      index_size: [1000, 2000]
      concurrency: [1, 2]
    search:
      hnsw: {{ef_search: [8, 16], mode: fast}}
    quick:
      iterations: 1
      axes: {{index_size: [300]}}
      search: {{hnsw: {{ef_search: [4]}}}}
"
    ));
    assert!(m.models.is_empty());
    assert_eq!(m.scenarios[0].kind, ScenarioKind::Retrieval);
    assert_eq!(
        m.scenarios[0].iterations, 3,
        "a pass over the queries, 3 by default"
    );
    let got = ids(&m, false);
    assert_eq!(got.len(), 4 * (1 + 2 + 1));
    assert_eq!(
        &got[..5],
        [
            "ann/mix/flat/n1000-d384-k5-q50-l2-c1-bs1",
            "ann/mix/hnsw/n1000-d384-k5-q50-l2-c1-bs1-ef_search8-modefast",
            "ann/mix/hnsw/n1000-d384-k5-q50-l2-c1-bs1-ef_search16-modefast",
            "ann/mix/usearch/n1000-d384-k5-q50-l2-c1-bs1",
            "ann/mix/flat/n1000-d384-k5-q50-l2-c2-bs1",
        ]
    );
    let cell = &m.cells(false)[1];
    assert_eq!(cell.model, "mix");
    assert_eq!(cell.params.concurrency, 1);
    let p = cell.retrieval.as_ref().unwrap();
    assert_eq!((p.index_size, p.dim, p.k, p.queries), (1000, 384, 5, 50));
    assert_eq!(p.metric, "l2");
    assert_eq!(p.search["ef_search"], 8);
    assert_eq!(p.search["mode"], "fast");
    let quick = m.cells(true);
    assert_eq!(
        quick.len(),
        2 * 3,
        "index_size replaced, hnsw's sweep replaced"
    );
    assert!(quick.iter().all(|c| c.iterations == 1));
    assert_eq!(
        quick[1].id,
        "ann/mix/hnsw/n300-d384-k5-q50-l2-c1-bs1-ef_search4"
    );
    // The data sets: synthetic defaults filled in, file paths resolved
    // against the matrix's folder.
    assert_eq!(
        m.vectors[0].source,
        retrieval::VectorSource::Synthetic {
            clusters: 4,
            spread: 0.5,
            seed: 0
        }
    );
    match &m.vectors[1].source {
        retrieval::VectorSource::Files { base, truth, .. } => {
            assert!(
                base.is_absolute() && base.ends_with("m/data/b.fvecs"),
                "{base:?}"
            );
            assert!(truth.is_none());
        }
        other => panic!("{other:?}"),
    }
    // A file data set has its own size and dimension.
    let f = ok(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, vectors: [sift], engines: [flat], metric: cosine}}\n"
    ));
    assert_eq!(ids(&f, false), ["s/sift/flat/nall-k10-q1000-cosine-c1-bs1"]);
}

#[test]
fn retrieval_errors_name_the_line_and_field() {
    let e = err(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, axes: {{metric: [l2, hamming]}}}}\n"
    ));
    assert_eq!((e.0, e.2.as_str()), (10, "scenarios[0].axes.metric[1]"));
    assert!(e.3.contains("unknown metric `hamming`"), "{}", e.3);
    let e = err(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, vectors: [sift], dim: 128}}\n"
    ));
    assert!(e.3.contains("`sift` is files"), "{}", e.3);
    let e = err(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, engines: [flat], search: {{hnsw: {{ef_search: 4}}}}}}\n"
    ));
    assert_eq!(e.2, "scenarios[0].search.hnsw");
    assert!(e.3.contains("not an engine of this scenario"), "{}", e.3);
    let e = err(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, search: {{usearch: {{x: [1, 1]}}}}}}\n"
    ));
    assert!(e.3.contains("duplicate value 1 of `x`"), "{}", e.3);
    let e = err(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, vectors: [nope]}}\n"
    ));
    assert!(
        e.3.contains("unknown vectors `nope` (defined: mix, sift)"),
        "{}",
        e.3
    );
    let e = err(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, ef_search: 4}}\n"
    ));
    assert!(e.3.contains("unknown key `ef_search`"), "{}", e.3);
    let e = err(&format!(
        "{RHEAD}  - {{name: s, kind: retrieval, axes: {{index_size: [0]}}}}\n"
    ));
    assert!(e.3.contains("positive number of vectors"), "{}", e.3);
    // Data sets: files need both base and queries; not both kinds.
    let e = err("vectors: [{name: v, base: b.fvecs}]\nengines: [{name: f}]\nscenarios: [{name: s, kind: retrieval}]\n");
    assert_eq!((e.0, e.2.as_str()), (1, "vectors[0]"));
    assert!(e.3.contains("`base:` and `queries:`"), "{}", e.3);
    let e = err("vectors: [{name: v, synthetic: {}, base: b.fvecs}]\nengines: [{name: f}]\nscenarios: [{name: s, kind: retrieval}]\n");
    assert!(e.3.contains("either `synthetic` or files"), "{}", e.3);
    // Each kind of scenario needs its inputs.
    let e = err("vectors: [{name: v, synthetic: {}}]\nengines: [{name: f}]\nscenarios: [{name: s, kind: latency}]\n");
    assert!(e.3.contains("add a top-level `models:` list"), "{}", e.3);
    let e = err(&format!("{HEAD}  - {{name: s, kind: retrieval}}\n"));
    assert!(e.3.contains("add a top-level `vectors:` list"), "{}", e.3);
    let e = err("engines: [{name: f}]\nscenarios: [{name: s, kind: retrieval}]\n");
    assert!(
        e.3.contains("missing required key `models` (or `vectors`"),
        "{}",
        e.3
    );
}
