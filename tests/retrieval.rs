//! Vector-index engines through the stable ABI: the `flat` plugin loaded
//! as the host loads it, its answers against the exact ground truth, and
//! the load-time checks on a broken index plugin and on a plugin of the
//! other kind.

use engine_api::index::{no_progress, BuildSpec, IndexMetric, ProgressFfi, ProgressFfi_TO};
use engine_matrix_plugins as plugins;
use engine_matrix_retrieval::synthetic::{Mixture, Set};
use engine_matrix_retrieval::{exact, recall, Metric};
use engine_matrix_test_support::plugin_file;
use integration_tests::*;
use std::sync::{Arc, Mutex};

fn load(name: &str) -> plugins::LoadedIndexEngine {
    let file =
        plugin_file(name).unwrap_or_else(|e| panic!("{name}: {e} (build the workspace first)"));
    plugins::load_index(&file).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Progress(Arc<Mutex<Vec<(u64, u64)>>>);

impl ProgressFfi for Progress {
    fn added(&self, done: u64, total: u64) {
        self.0.lock().unwrap().push((done, total));
    }
}

/// Each index engine through the ABI on one mixture: `flat` exact, the
/// approximate engines at recall@10 >= 0.95 with a generous search
/// setting, and a metric an engine does not list refused as unsupported
/// with its reason.
#[test]
fn index_engines_through_the_abi_answer_with_the_recall_they_should() {
    let mix = Mixture {
        dim: 32,
        clusters: 8,
        spread: 0.5,
        seed: 11,
    };
    let base = mix.generate(Set::Base, 3000);
    let queries = mix.generate(Set::Queries, 40);
    for (name, params, want) in [
        ("flat", "{}", 1.0),
        ("hnsw", r#"{"ef_search": 200}"#, 0.95),
        ("usearch", r#"{"expansion_search": 200}"#, 0.95),
    ] {
        let engine = load(name);
        assert_eq!(engine.info.name.as_str(), name);
        assert_eq!(engine.api_version, engine_api::API_VERSION);
        for (m, metric) in [
            (IndexMetric::L2, Metric::L2),
            (IndexMetric::InnerProduct, Metric::InnerProduct),
            (IndexMetric::Cosine, Metric::Cosine),
        ] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let spec = BuildSpec {
                dim: 32,
                metric: m,
                threads: 2,
                options_json: "{}".into(),
            };
            let built = engine
                .engine
                .build(
                    base.as_slice().into(),
                    &spec,
                    ProgressFfi_TO::from_value(
                        Progress(seen.clone()),
                        engine_api::abi_stable::sabi_trait::TD_Opaque,
                    ),
                )
                .into_result();
            let listed = engine.info.metrics.iter().any(|x| x.as_str() == m.name());
            let index = match built {
                Ok(index) => index,
                Err(e) => {
                    assert!(!listed, "{name} lists {m:?} but failed: {e}");
                    assert!(e.is_unsupported(), "{name} {m:?}: {e}");
                    assert!(!e.message.is_empty());
                    continue;
                }
            };
            assert!(listed, "{name} built {m:?} without listing it");
            assert_eq!(seen.lock().unwrap().last(), Some(&(3000, 3000)), "{name}");
            let r = index
                .search(queries.as_slice().into(), 10, params.into())
                .into_result()
                .unwrap();
            assert_eq!((r.k, r.ids.len()), (10, 400));
            let found: Vec<Vec<u64>> = r.ids.chunks(10).map(|c| c.to_vec()).collect();
            let truth = exact::knn(&base, &queries, 10, metric, 1);
            let got = recall::recall(metric, &base, &queries, &truth, &found, 10);
            assert!(got >= want, "{name} {m:?}: recall {got}");
            // Unknown parameters come back as errors naming them.
            let e = index
                .search(queries.as_slice().into(), 10, r#"{"nprobe": 5}"#.into())
                .into_result()
                .unwrap_err();
            assert!(e.message.contains("unknown field `nprobe`"), "{name}: {e}");
        }
    }
    // A corrupted answer is caught by the same arithmetic.
    let truth = exact::knn(&base, &queries, 10, Metric::L2, 1);
    let mut wrong: Vec<Vec<u64>> = truth
        .ids
        .chunks(10)
        .map(|c| c.iter().map(|&x| x as u64).collect())
        .collect();
    assert_eq!(
        recall::recall(Metric::L2, &base, &queries, &truth, &wrong, 10),
        1.0
    );
    wrong[0] = vec![0; 10];
    assert!(recall::recall(Metric::L2, &base, &queries, &truth, &wrong, 10) < 1.0);
    let e = load("flat")
        .engine
        .build(
            base.as_slice()[..40].into(),
            &BuildSpec {
                dim: 32,
                metric: IndexMetric::L2,
                threads: 1,
                options_json: "{}".into(),
            },
            no_progress(),
        )
        .into_result()
        .err()
        .unwrap();
    assert!(e.message.contains("whole vectors"), "{e}");
}

#[test]
fn a_broken_index_plugin_and_a_plugin_of_the_other_kind_are_refused_in_one_line() {
    let bad = plugin_file("bad_index").unwrap();
    assert_eq!(plugins::kind(&bad).unwrap(), plugins::Kind::Index);
    let e = plugins::load_index(&bad).err().unwrap().to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.contains("libem_bad_index") && e.contains("ABI-incompatible"),
        "{e}"
    );

    let example = plugin_file("example").unwrap();
    assert_eq!(plugins::kind(&example).unwrap(), plugins::Kind::Engine);
    let e = plugins::load_index(&example).err().unwrap().to_string();
    assert!(e.contains("not a vector-index engine"), "{e}");
    let flat = plugin_file("flat").unwrap();
    let e = plugins::load(&flat).err().unwrap().to_string();
    assert!(e.contains("vector-index engine, not an LLM engine"), "{e}");
}

#[test]
fn engines_lists_index_plugins_beside_llm_engines() {
    let dir = plugin_dir(&["flat", "hnsw", "usearch", "bad_index", "example"]);
    let o = run(&["engines"], dir.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("flat (") && out.contains("vector-index engine"),
        "{out}"
    );
    assert!(out.contains("metrics: l2, ip, cosine"), "{out}");
    assert!(out.contains("library hnsw_rs 0.3.5"), "{out}");
    assert!(out.contains("library usearch 2."), "{out}");
    let bad = out
        .lines()
        .skip_while(|l| !l.starts_with("bad_index"))
        .nth(1)
        .unwrap_or_default();
    assert!(bad.contains("ABI-incompatible"), "{out}");
    let o = run(&["engines", "--json"], dir.path());
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let flat = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["plugin"] == "flat")
        .unwrap();
    assert_eq!(flat["kind"], "index");
    assert_eq!(flat["info"]["search_params"][0], "threads");
}

/// A tiny retrieval matrix through the real binary, engines in worker
/// processes: `flat` exact, two approximate engines over a search sweep,
/// each index built once and reused by its cells, a metric an engine does
/// not build `unsupported` with its reason, an LLM engine refused with
/// its reason, and a build that kills its worker failing the cells of that
/// index only while the run goes on; then the report's Retrieval section
/// and charts, and `compare` of the run with itself.
#[test]
fn a_retrieval_matrix_runs_end_to_end_through_the_binary() {
    let plugins = plugin_dir(&["flat", "hnsw", "usearch", "fault_index", "candle"]);
    let tmp = TempDir::new("retrieval-e2e");
    let yaml = "\
name: tiny-retrieval
vectors:
  - name: mix
    synthetic: {clusters: 8, spread: 0.5, seed: 5}
engines:
  - {name: flat, plugin: flat}
  - {name: hnsw, plugin: hnsw, options: {m: 16, ef_construction: 100}}
  - {name: usearch, plugin: usearch}
  - {name: crashy, plugin: fault_index, options: {fault: abort_build}}
  - {name: brute, plugin: fault_index}
  - {name: llm, plugin: candle}
scenarios:
  - name: ann
    kind: retrieval
    dim: 24
    queries: 100
    iterations: 2
    axes:
      index_size: [2000]
      metric: [l2, ip]
    search:
      hnsw: {ef_search: [4, 200]}
      usearch: {expansion_search: [4, 200]}
      crashy: {unused: [1, 2]}
  - name: ks
    kind: retrieval
    engines: [usearch]
    dim: 24
    queries: 100
    iterations: 1
    index_size: 2000
    axes:
      k: [5, 10]
";
    let (run_dir, o) = run_yaml(tmp.path(), yaml, &[], plugins.path());
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let cells = summary["cells"].as_array().unwrap();
    // flat 2 + hnsw 4 + usearch 4 + crashy 4 + brute 2 + llm 2, then ks 2
    assert_eq!(
        cells.len(),
        20,
        "{}",
        serde_json::to_string_pretty(cells).unwrap()
    );
    let find = |id: &str| {
        cells
            .iter()
            .find(|c| c["cell"]["id"] == id)
            .unwrap_or_else(|| panic!("no cell {id}"))
    };
    let r = |id: &str| find(id)["retrieval"].clone();
    let id = |engine: &str, metric: &str, tag: &str| {
        format!("ann/mix/{engine}/n2000-d24-k10-q100-{metric}-c1-bs1{tag}")
    };

    // Exact search is exact; its index was built by its first cell.
    for metric in ["l2", "ip"] {
        let f = r(&id("flat", metric, ""));
        assert_eq!(f["recall"], 1.0, "{f}");
        assert!(
            matches!(f["truth"].as_str(), Some("computed" | "cached")),
            "{f}"
        );
        assert_eq!(f["index_size"], 2000);
        assert_eq!(f["passes"], 2);
        assert_eq!(f["calls"], 200, "two passes of 100 single queries");
        assert!(f["qps"].as_f64().unwrap() > 0.0);
        assert!(f["latency_ms"]["p95"].as_f64().unwrap() > 0.0);
    }
    // A small beam finds fewer neighbours than a large one, and the large
    // one (nearly) all; the second cell reused the first's index.
    for (engine, key) in [("usearch", "expansion_search"), ("hnsw", "ef_search")] {
        let low = r(&id(engine, "l2", &format!("-{key}4")));
        let high = r(&id(engine, "l2", &format!("-{key}200")));
        let (rl, rh) = (
            low["recall"].as_f64().unwrap(),
            high["recall"].as_f64().unwrap(),
        );
        assert!(rh >= 0.95 && rl < rh, "{engine}: recall {rl} then {rh}");
        assert_eq!(low["build"]["built_here"], true, "{engine}");
        assert_eq!(high["build"]["built_here"], false, "{engine}: index reused");
        assert_eq!(low["build"]["key"], high["build"]["key"]);
        assert!(low["build"]["seconds"].as_f64().unwrap() > 0.0);
        assert!(low["build"]["rss_bytes"].as_i64().is_some());
        assert_eq!(high["search"][key], 200);
    }
    // hnsw_rs has no inner-product index: unsupported, with the reason.
    let ip = find(&id("hnsw", "ip", "-ef_search4"));
    assert_eq!(ip["status"], "unsupported");
    assert!(
        ip["reason"].as_str().unwrap().contains("not ip"),
        "{}",
        ip["reason"]
    );
    // The build that aborts: its first cell fails with the signal, the
    // other cell of the same index is not retried, and the next engine's
    // cells (brute, the same code without the fault) all ran.
    let first = find(&id("crashy", "l2", "-unused1"));
    assert_eq!(first["status"], "failed");
    let why = first["reason"].as_str().unwrap();
    assert!(
        why.contains("while building the index") && why.contains("SIGABRT"),
        "{why}"
    );
    let second = find(&id("crashy", "l2", "-unused2"));
    assert_eq!(second["status"], "failed");
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .contains("building this index crashed the worker in cell ann/mix/crashy/"),
        "{}",
        second["reason"]
    );
    assert_eq!(
        find(&id("crashy", "ip", "-unused1"))["status"],
        "unsupported"
    );
    let brute = r(&id("brute", "l2", ""));
    assert_eq!(brute["recall"], 1.0, "{brute}");
    // An LLM engine in a retrieval scenario: failed, saying why.
    let llm = find(&id("llm", "l2", ""));
    assert_eq!(llm["status"], "failed");
    assert!(
        llm["reason"].as_str().unwrap().contains("is an LLM engine"),
        "{}",
        llm["reason"]
    );

    // Another k over the same vectors: new ground truth, the same index.
    let k5 = r("ks/mix/usearch/n2000-d24-k5-q100-l2-c1-bs1");
    let k10 = r("ks/mix/usearch/n2000-d24-k10-q100-l2-c1-bs1");
    assert_eq!((k5["k"].as_u64(), k10["k"].as_u64()), (Some(5), Some(10)));
    assert_eq!(k5["build"]["built_here"], true);
    assert_eq!(k10["build"]["built_here"], false, "{k10}");

    // The report: the Retrieval section, its charts, the failures.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("## Retrieval"), "{md}");
    assert!(
        md.contains("building this index crashed the worker"),
        "{md}"
    );
    let charts: Vec<String> = std::fs::read_dir(run_dir.join("charts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        charts.iter().any(|c| c.starts_with("recall-qps-")),
        "{charts:?}"
    );

    // Compared with itself: same cells, nothing regressed.
    let o = run(
        &[
            "compare",
            run_dir.to_str().unwrap(),
            run_dir.to_str().unwrap(),
        ],
        plugins.path(),
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

/// Data from files (texmex `.fvecs`, with the set's own `.ivecs` ground
/// truth) through the binary; a truncated base file fails its cells with
/// an error naming the file, and `validate` names a missing one.
#[test]
fn retrieval_reads_fvecs_files_with_their_ground_truth_and_names_bad_files() {
    use engine_matrix_retrieval::formats::{write_fvecs, write_ivecs};
    let plugins = plugin_dir(&["flat", "usearch"]);
    let tmp = TempDir::new("retrieval-files");
    let mix = Mixture {
        dim: 16,
        clusters: 4,
        spread: 0.4,
        seed: 9,
    };
    let base = mix.generate(Set::Base, 1500);
    let queries = mix.generate(Set::Queries, 30);
    let gt = exact::knn(&base, &queries, 20, Metric::L2, 1);
    let dir = tmp.path();
    write_fvecs(&dir.join("base.fvecs"), &base).unwrap();
    write_fvecs(&dir.join("queries.fvecs"), &queries).unwrap();
    write_ivecs(&dir.join("truth.ivecs"), 20, &gt.ids).unwrap();
    // A copy of the base cut in the middle of a record.
    let bytes = std::fs::read(dir.join("base.fvecs")).unwrap();
    std::fs::write(dir.join("cut.fvecs"), &bytes[..bytes.len() - 10]).unwrap();
    let yaml = "\
vectors:
  - {name: files, base: base.fvecs, queries: queries.fvecs, truth: truth.ivecs}
  - {name: cut, base: cut.fvecs, queries: queries.fvecs}
engines:
  - {name: flat}
  - {name: usearch}
scenarios:
  - {name: s, kind: retrieval, queries: 30, iterations: 1}
";
    let (run_dir, o) = run_yaml(dir, yaml, &[], plugins.path());
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    let cells = summary["cells"].as_array().unwrap();
    let cell = |id: &str| cells.iter().find(|c| c["cell"]["id"] == id).unwrap();
    let flat = &cell("s/files/flat/nall-k10-q30-l2-c1-bs1")["retrieval"];
    assert_eq!(flat["truth"], "file");
    assert_eq!(flat["recall"], 1.0, "{flat}");
    assert_eq!(
        (flat["index_size"].as_u64(), flat["dim"].as_u64()),
        (Some(1500), Some(16))
    );
    let us = &cell("s/files/usearch/nall-k10-q30-l2-c1-bs1")["retrieval"];
    assert!(us["recall"].as_f64().unwrap() >= 0.9, "{us}");
    for engine in ["flat", "usearch"] {
        let bad = cell(&format!("s/cut/{engine}/nall-k10-q30-l2-c1-bs1"));
        assert_eq!(bad["status"], "failed");
        let why = bad["reason"].as_str().unwrap();
        assert!(why.contains("cut.fvecs") && why.contains("record"), "{why}");
    }

    std::fs::write(
        dir.join("missing.yaml"),
        "vectors: [{name: v, base: nope.fvecs, queries: queries.fvecs}]\n\
         engines: [{name: flat}]\nscenarios: [{name: s, kind: retrieval}]\n",
    )
    .unwrap();
    let o = run(
        &["validate", dir.join("missing.yaml").to_str().unwrap()],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(
        e.contains("missing.yaml:1:")
            && e.contains("vectors[0].base")
            && e.contains("nope.fvecs not found"),
        "{e}"
    );
}
