//! Where a decode step's time goes, op by op, against this machine's
//! memory-bandwidth roof: each linear layer class with both kernels of
//! the step's batch size (gemm and the register kernel, the candidates of
//! `kernels: auto`: [`em_candle::gemv::panel`] at batch 1,
//! [`em_candle::gemv::rows`] up to 16 rows), attention over the KV cache,
//! and the whole step.
//!
//! ```text
//! cargo run --release -p em-candle --example decode_ops -- \
//!     [--threads 2] [--reps 9] [--context 128] [--batch 1] [--roof-gb-s X]
//! ```
//!
//! GPT-2 124M shapes, f32, random weights built in memory (nothing is
//! downloaded). A layer class is timed the way a decode step meets it:
//! one call on each of its 12 distinct layer weights in turn, so every
//! call reads its weight from memory, not from a cache the previous call
//! warmed. GB/s is weight (or KV-cache) bytes read per second; "% roof" is
//! that over the read bandwidth of `engine-matrix calibrate`, read from
//! its cache file (or `--roof-gb-s`). A batch-1 step reads every weight
//! once, so an op well under the roof is where the step loses time on
//! this CPU. Medians of `--reps` sweeps; the last line says how busy the
//! rest of the machine was, as the numbers mean little when it was busy.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{cpu_ticks, median, others_share, random_model};
use em_candle::autotune::{self, Plan, Policy};
use em_candle::gpt2::Config;
use em_candle::matmul::Weight;
use engine_kit::Backend;
use std::time::Instant;

struct Args {
    threads: usize,
    reps: usize,
    context: usize,
    batch: usize,
    roof: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        reps: 9,
        context: 128,
        batch: 1,
        roof: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--threads" => a.threads = num(val()?)? as usize,
            "--reps" => a.reps = (num(val()?)? as usize).max(1),
            "--context" => a.context = (num(val()?)? as usize).max(1),
            "--roof-gb-s" => a.roof = Some(num(val()?)?),
            "--batch" => a.batch = (num(val()?)? as usize).clamp(1, em_candle::gemv::ROWS),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// The read bandwidth of `engine-matrix calibrate` (the newest
/// `roofline-*.json` in the cache folder) and the file it came from.
fn cached_roof() -> Option<(f64, String)> {
    let dir = engine_kit::cache_dir();
    let mut best: Option<(String, f64, String)> = None;
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !(name.starts_with("roofline-") && name.ends_with(".json")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let (Some(gb), Some(at)) = (v["mem_read_gb_s"].as_f64(), v["measured_at"].as_str()) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| at > b.0.as_str()) {
            best = Some((at.to_string(), gb, e.path().display().to_string()));
        }
    }
    best.map(|(_, gb, path)| (gb, path))
}

/// Median microseconds of one call, sweeping `layers` distinct weights.
fn time_class(
    pool: &rayon::ThreadPool,
    weights: &[Weight],
    x: &Tensor,
    reps: usize,
) -> candle_core::Result<f64> {
    let sweep = || -> candle_core::Result<f64> {
        let t = Instant::now();
        for w in weights {
            drop(pool.install(|| w.matmul(x))?);
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / weights.len() as f64)
    };
    sweep()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        v.push(sweep()?);
    }
    Ok(median(&mut v))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse_args()?;
    let roof = match a.roof {
        Some(r) => (r, "--roof-gb-s".to_string()),
        None => cached_roof().ok_or(
            "no roofline calibration cached: run `engine-matrix calibrate` or pass --roof-gb-s",
        )?,
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "{cpu}, {} threads; roof {:.1} GB/s read ({}); GPT-2 124M f32, batch {}, context {}",
        a.threads, roof.0, roof.1, a.batch, a.context
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()?;
    let dev = Device::Cpu;
    let cfg = Config::gpt2();
    let (h, layers) = (cfg.n_embd, cfg.n_layer);
    let pct = |gb: f64| 100.0 * gb / roof.0;
    println!(
        "{:<26} {:>8} | {:>9} {:>7} {:>6} | {:>9} {:>7} {:>6}",
        "op (calls per step)", "MB/call", "gemm us", "GB/s", "%roof", "regs us", "GB/s", "%roof"
    );
    let ticks0 = cpu_ticks();
    let wall0 = Instant::now();
    let classes = [
        ("attn.c_attn", h, 3 * h, layers),
        ("attn.c_proj", h, h, layers),
        ("mlp.c_fc", h, 4 * h, layers),
        ("mlp.c_proj", 4 * h, h, layers),
        ("lm_head", h, cfg.vocab_size, 1),
    ];
    for (name, k, n, count) in classes {
        let weights: Vec<Weight> = (0..count)
            .map(|_| Weight::new(&Tensor::randn(0f32, 0.02, (k, n), &dev)?))
            .collect::<candle_core::Result<_>>()?;
        let x = Tensor::randn(0f32, 1.0, (a.batch, k), &dev)?;
        let mb = (k * n * 4) as f64 / 1e6;
        let mut row = format!("{:<26} {mb:>8.2}", format!("{name} {k}x{n} ({count})"));
        for gemv in [false, true] {
            let ws: Vec<Weight> = weights
                .iter()
                .map(|w| {
                    let mut w = w.clone();
                    w.set_gemv(gemv);
                    w.set_rows(gemv);
                    w
                })
                .collect();
            let us = time_class(&pool, &ws, &x, a.reps)?;
            let gb = mb * 1e6 / (us * 1e3);
            row += &format!(" | {us:>9.1} {gb:>7.1} {:>5.0}%", pct(gb));
        }
        println!("{row}");
    }
    // attention of one new token over `context` cached positions, per layer
    {
        let (heads, d) = (cfg.n_head, h / cfg.n_head);
        let caches: Vec<(Tensor, Tensor)> = (0..layers)
            .map(|_| {
                Ok((
                    Tensor::randn(0f32, 1.0, (1, heads, d, a.context), &dev)?,
                    Tensor::randn(0f32, 1.0, (1, heads, a.context, d), &dev)?,
                ))
            })
            .collect::<candle_core::Result<_>>()?;
        let q = Tensor::randn(0f32, 1.0, (1, heads, 1, d), &dev)?;
        // (one sequence's attention: a batch runs one per sequence)
        let sweep = || -> candle_core::Result<f64> {
            let t = Instant::now();
            for (kt, v) in &caches {
                drop(pool.install(|| em_candle::ops::attention(&q, kt, v))?);
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / layers as f64)
        };
        sweep()?;
        let mut v: Vec<f64> = (0..a.reps).map(|_| sweep()).collect::<Result<_, _>>()?;
        let us = median(&mut v);
        let mb = (2 * heads * a.context * d * 4) as f64 / 1e6;
        let gb = mb * 1e6 / (us * 1e3);
        println!(
            "{:<26} {mb:>8.2} | {us:>9.1} {gb:>7.1} {:>5.0}% | (KV cache read)",
            format!("attention ctx {} ({layers})", a.context),
            pct(gb)
        );
    }
    // the whole step, through the backend the scheduler drives
    for (label, mode) in [
        ("fused (gemm)", Policy::Gemm),
        ("gemv", Policy::Gemv),
        ("auto", Policy::Auto),
    ] {
        let plan = Plan::new(mode, a.threads);
        let model = pool.install(|| {
            autotune::set_plan(Some(plan.clone()));
            let m = random_model(&cfg, DType::F32);
            autotune::set_plan(None);
            m
        })?;
        plan.finish();
        let bytes = model.streamed_weight_bytes() as f64;
        let mut b = em_candle::from_model(model, a.threads)?;
        let mut logits = Vec::new();
        let prompt: Vec<u32> = (0..a.context as u32).map(|i| i * 7 % 50000).collect();
        let mut times = Vec::new();
        let n = a.batch as u64;
        for r in 0..a.reps as u64 {
            let ids: Vec<u64> = (r * n..(r + 1) * n).collect();
            let prompts: Vec<(u64, &[u32])> = ids.iter().map(|&i| (i, &prompt[..])).collect();
            b.prefill(&prompts, &mut logits)?;
            for s in 0..16u32 {
                let step: Vec<(u64, u32)> = ids.iter().map(|&i| (i, s * 13 + 1)).collect();
                let t = Instant::now();
                b.decode(&step, &mut logits)?;
                times.push(t.elapsed().as_secs_f64());
            }
            ids.iter().for_each(|&i| b.free(i));
        }
        let step = median(&mut times);
        let kv = (a.batch * 2 * layers * h * (a.context + 8) * 4) as f64;
        let gb = (bytes + kv) / step / 1e9;
        let chosen = plan.describe();
        let (key, ours) = if a.batch == 1 {
            ("kernel", "gemv")
        } else {
            ("small_batch_kernel", "rows")
        };
        let n_gemv = chosen["shapes"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|c| c[key] == ours).count());
        let n_all = chosen["shapes"].as_array().map_or(0, |s| s.len());
        let note = if mode == Policy::Auto {
            format!(" [{}: {ours} on {n_gemv} of {n_all} shapes]", chosen["by"])
        } else {
            String::new()
        };
        println!(
            "step, kernels {label:<13} {:>8.1} ms  {:>6.1} tok/s  {gb:>6.1} GB/s  {:>4.0}% of roof{note}",
            step * 1e3,
            a.batch as f64 / step,
            pct(gb)
        );
    }
    if let (Some(before), Some(after)) = (ticks0, cpu_ticks()) {
        println!(
            "other processes used {:.0}% of the machine's CPU during the measurement",
            100.0 * others_share(before, after, wall0.elapsed().as_secs_f64())
        );
    }
    Ok(())
}
