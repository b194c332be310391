//! Helpers for engine parity tests (used by the plugins' test suites):
//! model specs over the host's synthetic checkpoints, the candle plugin
//! loaded exactly as the host loads it (the reference engine), and a greedy
//! loop over any [`engine_kit::Backend`]. Two plugin crates cannot be
//! linked into one test binary (both export the root-module symbol), so
//! the reference is always the built plugin library in `target/<profile>`
//! (`cargo build --release --workspace` builds it; `scripts/test` does).
//! Panics on failure: this is test support, not product code.

pub mod llama;

use engine_api::{BatchPolicy, LoadOptions, ModelBox, ModelSpec, Request, Sampling};
use engine_kit::testing::Collect;
use engine_kit::Backend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An f32 GPT-2 spec over `dir`.
pub fn spec(dir: &Path) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        architecture: "gpt2".into(),
        path: dir.to_string_lossy().into_owned().into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    }
}

/// The host's synthetic checkpoint for `config` (`tiny` or `gpt2`).
pub fn synthetic(config: &str) -> PathBuf {
    engine_matrix_synthetic::ensure(config, 0).expect("synthetic weights")
}

/// `target/<profile>`, where cargo puts the plugin libraries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// The newest build of plugin `name`: in `target/<profile>`, where `cargo
/// build` puts it, or in `target/<profile>/deps`, where a plain `cargo
/// test` of the workspace leaves it (cargo builds a cdylib there for the
/// crate's own tests, without copying it up).
pub fn plugin_file(
    name: &str,
) -> Result<engine_matrix_plugins::PluginFile, engine_matrix_plugins::PluginError> {
    use engine_matrix_plugins as plugins;
    let dir = profile_dir();
    let modified =
        |f: &plugins::PluginFile| std::fs::metadata(&f.path).and_then(|m| m.modified()).ok();
    [dir.join("deps"), dir.clone()]
        .iter()
        .filter_map(|d| plugins::find(d, name).ok())
        .max_by_key(modified)
        .map_or_else(|| plugins::find(&dir, name), Ok)
}

/// The candle plugin (see [`plugin_file`]), loaded as the host loads it.
/// `cargo test` of the workspace builds it, as does `cargo build
/// --release --workspace` (scripts/test).
pub fn candle(dir: &Path, threads: usize) -> ModelBox {
    use engine_matrix_plugins as plugins;
    let file = plugin_file("candle")
        .unwrap_or_else(|e| panic!("candle plugin: {e} (build the workspace first)"));
    let loaded = plugins::load(&file).unwrap_or_else(|e| panic!("candle plugin: {e}"));
    let opts = LoadOptions {
        batch_policy: BatchPolicy::Continuous,
        max_batch: 8,
        options_json: format!(r#"{{"threads":{threads}}}"#).into(),
    };
    let m = loaded.engine.load(&spec(dir), &opts).into_result();
    let m = m.unwrap_or_else(|e| panic!("candle load: {e}"));
    // the library must outlive the model: plugins stay loaded for the
    // process (abi_stable never unloads them)
    std::mem::forget(loaded);
    m
}

/// Logits of every position of `tokens` (row-major).
pub fn score(m: &ModelBox, tokens: &[u32]) -> Vec<f32> {
    m.score(tokens.into())
        .into_result()
        .expect("candle score")
        .data
        .to_vec()
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit rows differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Greedy generation of `steps` tokens for one sequence; returns the
/// tokens and the logits of every step.
pub fn greedy(b: &mut dyn Backend, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut logits = Vec::new();
    b.prefill(&[(1, prompt)], &mut logits).expect("prefill");
    let mut tokens = Vec::new();
    let mut all = Vec::new();
    for i in 0..steps {
        let t = argmax(&logits);
        tokens.push(t);
        all.push(logits.clone());
        if i + 1 < steps {
            b.decode(&[(1, t)], &mut logits).expect("decode");
        }
    }
    b.free(1);
    (tokens, all)
}

/// Largest absolute logit difference the parity checks accept.
pub const TOL: f32 = 1e-3;
/// Greedy steps of [`greedy_parity`].
pub const STEPS: usize = 64;

/// `engine` (opened on `synthetic(config)` with `threads`) against the
/// candle plugin: [`STEPS`] greedy steps give the same tokens as candle's
/// own cached decode, every cached step's logits are within [`TOL`] of
/// candle's uncached `score`, and so is `engine`'s `score`. Returns the
/// largest logit difference seen.
pub fn greedy_parity(
    engine: &mut dyn Backend,
    config: &str,
    prompt_len: usize,
    threads: usize,
) -> f32 {
    let dir = synthetic(config);
    let o = engine;
    let c = candle(&dir, threads);
    let vocab = o.vocab_size();
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| (i * 7919 + 13) % vocab as u32)
        .collect();
    let (ot, ol) = greedy(o, &prompt, STEPS);

    // candle's own cached greedy decode
    let col = Arc::new(Collect::default());
    let req = Request {
        id: 7,
        prompt: prompt.clone().into(),
        max_new_tokens: STEPS as u32,
        sampling: Sampling::GREEDY,
        ignore_eos: true,
    };
    c.submit(vec![req].into(), col.sink())
        .into_result()
        .unwrap();
    col.wait(1);
    assert_eq!(
        col.tokens_of(7),
        ot,
        "{config}: greedy tokens differ from candle's"
    );

    // every step's logits against candle's uncached logits
    let mut seq = prompt.clone();
    seq.extend_from_slice(&ot[..STEPS - 1]);
    let cl = score(&c, &seq);
    let mut worst = 0f32;
    for (k, row) in ol.iter().enumerate() {
        let pos = prompt_len - 1 + k;
        worst = worst.max(max_abs_diff(row, &cl[pos * vocab..(pos + 1) * vocab]));
    }
    assert!(worst <= TOL, "{config}: max |logit diff| {worst} > {TOL}");
    // and the uncached path of both engines
    let os = o.score(&seq).unwrap();
    let d = max_abs_diff(&os.data, &cl);
    assert!(d <= TOL, "{config}: score differs by {d}");
    eprintln!(
        "{config}: {STEPS} greedy tokens equal, max |logit diff| {worst:.2e} (score {d:.2e})"
    );
    // Not vacuous: synthetic weights often settle on one repeated token,
    // but the logits still move with every position and cache entry.
    let moved = max_abs_diff(&ol[1], &ol[STEPS - 1]);
    assert!(
        moved > 100.0 * TOL,
        "{config}: logits do not change over the run ({moved})"
    );
    worst
}

/// Prefill of different lengths, then decode steps over changing sets of
/// sequences: every row matches candle's logits for that sequence.
pub fn batched_parity(engine: &mut dyn Backend) {
    let dir = synthetic("tiny");
    let o = engine;
    let c = candle(&dir, 1);
    let v = o.vocab_size();
    let mut seqs: std::collections::HashMap<u64, Vec<u32>> = [
        (1, (0..5).collect()),
        (2, (100..117).collect()),
        (3, (500..509).collect()),
        (4, (700..709).collect()),
    ]
    .into_iter()
    .collect();
    let check =
        |seqs: &std::collections::HashMap<u64, Vec<u32>>, ids: &[u64], l: &[f32], what: &str| {
            for (i, id) in ids.iter().enumerate() {
                let s = &seqs[id];
                let full = score(&c, s);
                let want = &full[(s.len() - 1) * v..];
                let d = max_abs_diff(&l[i * v..(i + 1) * v], want);
                assert!(d <= TOL, "{what}: sequence {id} differs by {d}");
            }
        };
    let mut l = Vec::new();
    let first: Vec<(u64, &[u32])> = [1u64, 2, 3, 4]
        .iter()
        .map(|id| (*id, seqs[id].as_slice()))
        .collect();
    o.prefill(&first, &mut l).unwrap();
    check(&seqs, &[1, 2, 3, 4], &l, "prefill");
    let mut last: std::collections::HashMap<u64, u32> = (0..4)
        .map(|i| (i as u64 + 1, argmax(&l[i * v..(i + 1) * v])))
        .collect();
    // all four (regrouped, left-padded); again (same cohort); 3 and 4 only;
    // 2 then 1 (reordered); after freeing 3: 4, 2, 1
    let plans: Vec<Vec<u64>> = vec![
        vec![1, 2, 3, 4],
        vec![1, 2, 3, 4],
        vec![3, 4],
        vec![2, 1],
        vec![2, 1],
        vec![4, 2, 1],
    ];
    for (step, plan) in plans.iter().enumerate() {
        if step == 5 {
            o.free(3);
        }
        let req: Vec<(u64, u32)> = plan.iter().map(|id| (*id, last[id])).collect();
        for (id, t) in &req {
            seqs.get_mut(id).unwrap().push(*t);
        }
        o.decode(&req, &mut l).unwrap();
        check(&seqs, plan, &l, &format!("step {step} {plan:?}"));
        for (i, id) in plan.iter().enumerate() {
            last.insert(*id, argmax(&l[i * v..(i + 1) * v]));
        }
    }
    let m = o.memory();
    assert!(m.kv_cache_used_bytes > 0 && m.kv_cache_used_bytes <= m.kv_cache_reserved_bytes);
    for id in [1, 2, 4] {
        o.free(id);
    }
    assert_eq!(o.memory().kv_cache_used_bytes, 0);
    assert_eq!(o.memory().kv_cache_reserved_bytes, 0);
}

/// Static, continuous and no batching through the shared scheduler give
/// each request the tokens of an uncached greedy loop over `score`.
pub fn policies_parity<B: Backend>(open: impl Fn() -> B) {
    use engine_api::Model;
    for policy in [
        BatchPolicy::Static,
        BatchPolicy::Continuous,
        BatchPolicy::None,
    ] {
        let m = engine_kit::spawn(
            open(),
            &LoadOptions {
                batch_policy: policy,
                max_batch: 3,
                options_json: "{}".into(),
            },
        )
        .unwrap();
        let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], (10..30).collect(), vec![7; 9], vec![42]];
        let col = Arc::new(Collect::default());
        for (i, p) in prompts.iter().enumerate() {
            let req = Request {
                id: i as u64,
                prompt: p.clone().into(),
                max_new_tokens: 6 + i as u32,
                sampling: Sampling::GREEDY,
                ignore_eos: true,
            };
            m.submit(vec![req], col.sink()).unwrap();
        }
        col.wait(prompts.len());
        assert!(col.errors.lock().unwrap().is_empty(), "{policy:?}: errors");
        for (i, p) in prompts.iter().enumerate() {
            let mut t = p.clone();
            for _ in 0..6 + i {
                let l = m.score(&t).unwrap();
                let v = l.vocab as usize;
                t.push(argmax(&l.data[l.data.len() - v..]));
            }
            assert_eq!(
                col.tokens_of(i as u64),
                t[p.len()..].to_vec(),
                "{policy:?}: request {i}"
            );
        }
    }
}

/// The kit's prefix cache on `engine` (blocks of 8 tokens): three prompts
/// prefilled in one batch after a fourth that shares 16 and 8 of their
/// tokens take exactly those positions from the cache (the third, which
/// shares none, misses), and 8 greedy steps of each give the very tokens a
/// cold run gives, token for token, with every step's logits within
/// [`TOL`] of the cold run's. Turning the cache off empties it.
pub fn prefix_cache_parity(engine: &mut dyn Backend, name: &str) {
    use engine_kit::PrefixCacheConfig;
    const STEPS: usize = 8;
    let v = engine.vocab_size() as u32;
    let ids = |n: u32, k: u32| (0..n).map(|i| (i * k + 3) % v).collect::<Vec<u32>>();
    let base = ids(21, 7);
    let mut b = base[..16].to_vec();
    b.extend(ids(5, 11));
    let mut c = base[..8].to_vec();
    c.extend(ids(3, 13));
    let d = ids(9, 17);
    let prompts = [&b, &c, &d];

    engine.set_prefix_cache(None).expect("cache off");
    let cold: Vec<(Vec<u32>, Vec<Vec<f32>>)> =
        prompts.iter().map(|p| greedy(engine, p, STEPS)).collect();

    let cfg = PrefixCacheConfig {
        block_tokens: 8,
        max_bytes: 64 << 20,
    };
    engine
        .set_prefix_cache(Some(cfg))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut l = Vec::new();
    engine.prefill(&[(100, &base)], &mut l).expect("prefill");
    assert_eq!(engine.cached_prompt_tokens(100), 0, "{name}: a cold cache");
    engine.free(100);
    let batch: Vec<(u64, &[u32])> = (0..3).map(|i| (i as u64, prompts[i].as_slice())).collect();
    engine.prefill(&batch, &mut l).expect("prefill with hits");
    let cached: Vec<u32> = (0..3).map(|i| engine.cached_prompt_tokens(i)).collect();
    assert_eq!(cached, [16, 8, 0], "{name}: positions taken from the cache");
    assert!(engine.memory().prefix_cache_bytes > 0, "{name}: the store");

    let vs = v as usize;
    let mut warm: Vec<(Vec<u32>, Vec<Vec<f32>>)> = vec![Default::default(); 3];
    for step in 0..STEPS {
        for (i, w) in warm.iter_mut().enumerate() {
            let row = l[i * vs..(i + 1) * vs].to_vec();
            w.0.push(argmax(&row));
            w.1.push(row);
        }
        if step + 1 < STEPS {
            let next: Vec<(u64, u32)> = (0..3).map(|i| (i as u64, warm[i].0[step])).collect();
            engine.decode(&next, &mut l).expect("decode");
        }
    }
    let mut worst = 0f32;
    for (i, (w, c)) in warm.iter().zip(&cold).enumerate() {
        assert_eq!(
            w.0, c.0,
            "{name}: prompt {i}: tokens differ from a cold run"
        );
        for (a, b) in w.1.iter().zip(&c.1) {
            worst = worst.max(max_abs_diff(a, b));
        }
    }
    assert!(
        worst <= TOL,
        "{name}: logits differ from a cold run by {worst}"
    );
    (0..3).for_each(|i| engine.free(i));
    engine.set_prefix_cache(None).expect("cache off");
    assert_eq!(engine.memory().prefix_cache_bytes, 0, "{name}: emptied");
    eprintln!("{name}: prefix-cache hits of 16 and 8 positions, {STEPS} greedy tokens equal to a cold run, max |logit diff| {worst:.2e}");
}

/// The host's record of an import (host/src/models.rs): `folder` was
/// imported from `gguf` as it is now.
pub fn write_import_record(folder: &Path, gguf: &Path) {
    let meta = std::fs::metadata(gguf).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string();
    let rec = serde_json::json!({
        "gguf": std::path::absolute(gguf).unwrap().display().to_string(),
        "bytes": meta.len(),
        "mtime_ns": mtime,
    });
    std::fs::write(folder.join("imported-from.json"), rec.to_string()).unwrap();
}
