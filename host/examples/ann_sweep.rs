//! Where each vector-index engine lands on one data set: build time and
//! memory, then recall@k and per-query latency over a sweep of its search
//! parameter, one client, queries one at a time (as ann-benchmarks' default
//! mode). A benchmark, not a test: the retrieval scenario of a matrix will
//! run the same measurement under the harness's isolation.
//!
//! ```sh
//! cargo build --release --workspace
//! cargo run --release -p engine-matrix --example ann_sweep -- --size 100000
//! ```
//!
//! Data: the seeded Gaussian mixture of `engine-matrix-retrieval` (384
//! dimensions, unit vectors, L2), queries from the same mixture; the ground
//! truth is cached under `$ENGINE_MATRIX_CACHE/retrieval`.

use anyhow::{Context, Result};
use clap::Parser;
use engine_api::index::{no_progress, BuildSpec, IndexMetric};
use engine_matrix_plugins as plugins;
use engine_matrix_retrieval::synthetic::{Mixture, Set};
use engine_matrix_retrieval::{recall, truth, Metric};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Base vectors.
    #[arg(long, default_value_t = 100_000)]
    size: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Threads for builds (searches run on one).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    #[arg(long, value_delimiter = ',', default_value = "flat,hnsw,usearch")]
    engines: Vec<String>,
    /// Plugin folder (default: beside the binary, as `engine-matrix`).
    #[arg(long)]
    plugins: Option<std::path::PathBuf>,
}

/// This process's resident memory.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sweep(engine: &str) -> Vec<String> {
    let key = match engine {
        "hnsw" => "ef_search",
        "usearch" => "expansion_search",
        _ => return vec!["{}".into()],
    };
    [10, 20, 40, 80, 160, 320]
        .iter()
        .map(|v| format!("{{\"{key}\": {v}}}"))
        .collect()
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dir = a.plugins.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent()?.parent().map(|p| p.to_path_buf()))
            .unwrap_or_default()
    });
    let mix = Mixture {
        dim: a.dim,
        ..Mixture::default()
    };
    let t = Instant::now();
    let base = mix.generate(Set::Base, a.size);
    let queries = mix.generate(Set::Queries, a.queries);
    eprintln!(
        "data: {} × {} in {:.1} s",
        a.size,
        a.dim,
        t.elapsed().as_secs_f64()
    );
    let cache = engine_matrix_synthetic::cache_dir().join("retrieval");
    let t = Instant::now();
    let key = format!("{}-q{}", mix.key(Set::Base, a.size), a.queries);
    let (gt, source) = truth::ground_truth(
        &cache,
        &key,
        &base,
        &queries,
        a.k,
        Metric::L2,
        a.threads as usize,
    )?;
    eprintln!(
        "ground truth: {source:?} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "{} × {} (mixture, L2), {} queries, k = {}, build threads {}, one search client; {cpu}",
        a.size, a.dim, a.queries, a.k, a.threads
    );
    println!("| engine | search | recall@{} | p50 ms | p95 ms | p99 ms | QPS | build s | index MB (engine) | RSS growth MB |", a.k);
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in &a.engines {
        let file = plugins::find(&dir, name)?;
        let engine = plugins::load_index(&file).with_context(|| name.clone())?;
        let before = rss();
        let t = Instant::now();
        let spec = BuildSpec {
            dim: a.dim as u32,
            metric: IndexMetric::L2,
            threads: a.threads,
            options_json: "{}".into(),
        };
        let index = engine
            .engine
            .build(base.as_slice().into(), &spec, no_progress())
            .into_result()
            .map_err(|e| anyhow::anyhow!("{name}: build: {e}"))?;
        let build_s = t.elapsed().as_secs_f64();
        let grown = rss().saturating_sub(before) as f64 / 1e6;
        let mem = index.memory();
        let mut best: Option<(String, f64, f64)> = None;
        for params in sweep(name) {
            for q in queries.rows().take(50) {
                let _ = index.search(q.into(), a.k as u32, params.as_str().into());
            }
            let mut lat = Vec::with_capacity(queries.len());
            let mut found = Vec::with_capacity(queries.len());
            let start = Instant::now();
            for q in queries.rows() {
                let t = Instant::now();
                let r = index
                    .search(q.into(), a.k as u32, params.as_str().into())
                    .into_result()
                    .map_err(|e| anyhow::anyhow!("{name}: search: {e}"))?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                found.push(r.ids.to_vec());
            }
            let qps = queries.len() as f64 / start.elapsed().as_secs_f64();
            lat.sort_by(f64::total_cmp);
            let r = recall::recall(Metric::L2, &base, &queries, &gt, &found, a.k);
            let p95 = percentile(&lat, 0.95);
            println!(
                "| {name} | `{params}` | {r:.4} | {:.3} | {p95:.3} | {:.3} | {qps:.0} | {build_s:.1} | {} | {grown:.0} |",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                if mem.known { format!("{:.0}", mem.bytes as f64 / 1e6) } else { "n/a".into() },
            );
            if r >= 0.95 && best.as_ref().is_none_or(|b| qps > b.2) {
                best = Some((params.clone(), p95, qps));
            }
        }
        match best {
            Some((p, p95, qps)) => eprintln!(
                "{name}: operating point (recall ≥ 0.95) {p}: p95 {p95:.3} ms, {qps:.0} QPS"
            ),
            None => eprintln!("{name}: no setting reached recall 0.95"),
        }
    }
    Ok(())
}
