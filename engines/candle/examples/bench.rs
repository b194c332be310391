//! Step-time benchmark of the candle backend, on GPT-2 124M-sized random
//! weights (built in memory, nothing downloaded) or on a model folder:
//!
//! ```text
//! cargo run --release -p em-candle --example bench -- [--threads 2] [--dtype f32]
//!     [--reps 7] [--steps 32] [--only prefill|decode1|decode8|score]
//!     [--model DIR [--kernels auto|fused|gemv|stock]]
//! ```
//!
//! `--model` opens a Hugging Face folder (for example the imported
//! SmolLM2 under `~/.cache/engine-matrix/models/`) through the plugin's
//! own `open`, with `{"threads", "kernels"}` as engine options, so the
//! Llama family is measured exactly as a matrix cell loads it. Without
//! it, the random GPT-2 runs with gemm's batch-1 path (no kernel plan).
//!
//! Reports medians over all measured steps of: a 128-token prefill (TTFT:
//! prompt forward + first-token logits), batch-1 decode at context
//! 128..128+steps, batch-8 decode at the same context, and `score` of 128
//! tokens. It goes through [`em_candle::CandleBackend`] (the code the
//! scheduler calls), so logits copies are included; scheduler and sink
//! overheads are not.
//!
//! The machine is shared by whatever else runs on it: the report says how
//! much CPU other processes used during the measurement (from /proc), and
//! numbers taken while that is high are not worth much.

mod common;

use candle_core::DType;
use common::{cpu_ticks, median, others_share, random_model};
use em_candle::gpt2::Config;
use engine_kit::Backend;
use std::time::Instant;

struct Args {
    threads: usize,
    dtype: DType,
    reps: usize,
    steps: usize,
    only: Option<String>,
    model: Option<std::path::PathBuf>,
    kernels: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        dtype: DType::F32,
        reps: 7,
        steps: 32,
        only: None,
        model: None,
        kernels: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => a.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--steps" => a.steps = val()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--only" => a.only = Some(val()?),
            "--model" => a.model = Some(val()?.into()),
            "--kernels" => a.kernels = Some(val()?),
            "--dtype" => {
                a.dtype = match val()?.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    d => return Err(format!("--dtype {d}: f32, f16 or bf16")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn report(name: &str, times_ms: &mut [f64], tokens_per_step: usize) {
    let n = times_ms.len();
    let min = times_ms.iter().cloned().fold(f64::INFINITY, f64::min);
    let med = median(times_ms);
    let p90 = times_ms[(n * 9 / 10).min(n - 1)];
    println!(
        "{name:<34} median {med:8.2} ms  (min {min:7.2}, p90 {p90:7.2}, n={n:3})  -> {:7.1} tok/s",
        tokens_per_step as f64 * 1000.0 / med
    );
}

/// The backend to measure and a line that names it: the folder of
/// `--model` opened as a matrix cell would open it, or random GPT-2.
fn open_backend(
    args: &Args,
) -> Result<(em_candle::CandleBackend, String), Box<dyn std::error::Error>> {
    let Some(dir) = &args.model else {
        if args.kernels.is_some() {
            return Err("--kernels needs --model (random GPT-2 runs gemm's path)".into());
        }
        let model = random_model(&Config::gpt2(), args.dtype)?;
        let b = em_candle::from_model(model, args.threads)?;
        return Ok((b, "GPT-2 124M random weights".into()));
    };
    let config = std::fs::read_to_string(dir.join("config.json"))
        .map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
    let config: serde_json::Value = serde_json::from_str(&config)?;
    let arch = config["model_type"].as_str().unwrap_or("llama").to_string();
    let spec = engine_api::ModelSpec {
        name: "bench".into(),
        architecture: arch.clone().into(),
        path: dir.to_string_lossy().into_owned().into(),
        dtype: args.dtype.as_str().into(),
        quantization: "none".into(),
    };
    let mut opts = serde_json::json!({"threads": args.threads});
    if let Some(k) = &args.kernels {
        opts["kernels"] = k.as_str().into();
    }
    let b = em_candle::open(&spec, &opts.to_string())?;
    let kernels = opts
        .get("kernels")
        .and_then(|k| k.as_str())
        .unwrap_or("auto");
    Ok((b, format!("{} ({arch}, kernels {kernels})", dir.display())))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let t0 = Instant::now();
    let (mut b, what) = open_backend(&args)?;
    let vocab = b.kernels().model().limits().vocab;
    println!(
        "{what}, {:?}, {} threads (RAYON_NUM_THREADS={:?}, cores={}); built in {:.1}s; weights {:.0} MB",
        args.dtype,
        b.kernels().threads(),
        std::env::var("RAYON_NUM_THREADS").ok(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        t0.elapsed().as_secs_f64(),
        b.memory().weight_bytes as f64 / 1e6
    );
    let mut rng = 12345u64;
    let mut token = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % vocab as u64) as u32
    };
    let prompt = |token: &mut dyn FnMut() -> u32| (0..128).map(|_| token()).collect::<Vec<u32>>();
    let want = |what: &str| args.only.as_deref().is_none_or(|o| o == what);
    let mut logits = Vec::new();
    let ticks0 = cpu_ticks();
    let wall0 = Instant::now();
    let mut id = 0u64;

    if want("prefill") {
        let mut times = Vec::new();
        for _ in 0..args.reps.max(3) * 2 {
            let p = prompt(&mut token);
            let t = Instant::now();
            b.prefill(&[(id, &p)], &mut logits)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            b.free(id);
            id += 1;
        }
        report("prefill 128 tokens (TTFT)", &mut times, 128);
    }

    for (what, batch) in [("decode1", 1usize), ("decode8", 8)] {
        if !want(what) {
            continue;
        }
        let mut times = Vec::new();
        for _ in 0..args.reps {
            let ps: Vec<Vec<u32>> = (0..batch).map(|_| prompt(&mut token)).collect();
            let seqs: Vec<(u64, &[u32])> = ps
                .iter()
                .enumerate()
                .map(|(i, p)| (id + i as u64, p.as_slice()))
                .collect();
            b.prefill(&seqs, &mut logits)?;
            for _ in 0..args.steps {
                let step: Vec<(u64, u32)> = (0..batch).map(|i| (id + i as u64, token())).collect();
                let t = Instant::now();
                b.decode(&step, &mut logits)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            for i in 0..batch {
                b.free(id + i as u64);
            }
            id += batch as u64;
        }
        report(
            &format!("decode batch {batch} @ ctx 128..{}", 128 + args.steps),
            &mut times,
            batch,
        );
    }

    if want("score") {
        let mut times = Vec::new();
        for _ in 0..args.reps.max(3) {
            let p = prompt(&mut token);
            let t = Instant::now();
            b.score(&p)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        report("score 128 tokens (all logits)", &mut times, 128);
    }

    if let (Some(before), Some(after)) = (ticks0, cpu_ticks()) {
        println!(
            "other processes used {:.0}% of the machine's CPU during the measurement",
            100.0 * others_share(before, after, wall0.elapsed().as_secs_f64())
        );
    }
    Ok(())
}
