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
