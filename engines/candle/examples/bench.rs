//! Step-time benchmark of the candle backend on GPT-2 124M-sized random
//! weights (built in memory, nothing downloaded):
//!
//! ```text
//! cargo run --release -p em-candle --example bench -- [--threads 2] [--dtype f32]
//!     [--reps 7] [--steps 32] [--only prefill|decode1|decode8|score]
//! ```
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

use candle_core::{DType, Device, Tensor};
use em_candle::gpt2::{Config, Gpt2};
use engine_kit::Backend;
use std::collections::HashMap;
use std::time::Instant;

struct Args {
    threads: usize,
    dtype: DType,
    reps: usize,
    steps: usize,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        dtype: DType::F32,
        reps: 7,
        steps: 32,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => a.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--steps" => a.steps = val()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--only" => a.only = Some(val()?),
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

/// GPT-2 124M-shaped weights, N(0, 0.02) like GPT-2's initialisation.
fn random_model(cfg: &Config, dtype: DType) -> candle_core::Result<Gpt2> {
    let dev = Device::Cpu;
    let mut ts = HashMap::new();
    for (name, shape) in cfg.expected_tensors() {
        let t = if name.contains("ln_") && name.ends_with("weight") {
            Tensor::ones(shape, DType::F32, &dev)?
        } else if name.ends_with("bias") {
            Tensor::zeros(shape, DType::F32, &dev)?
        } else {
            Tensor::randn(0f32, 0.02, shape, &dev)?
        };
        ts.insert(name, t.to_dtype(dtype)?);
    }
    Gpt2::new(cfg, candle_nn::VarBuilder::from_tensors(ts, dtype, &dev))
}

/// CPU ticks (all processes, this process) from /proc, to tell how busy
/// the rest of the machine was.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = f.iter().sum::<u64>() - f.get(3)? - f.get(4)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = me.rsplit_once(')')?.1;
    // after the command name come fields 3 (state), 4, ...; utime and
    // stime are fields 14 and 15.
    let g: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| g.get(n - 3)?.parse::<u64>().ok();
    Some((busy, field(14)? + field(15)?))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let cfg = Config::gpt2();
    let t0 = Instant::now();
    let model = random_model(&cfg, args.dtype)?;
    let mut b = em_candle::from_model(model, args.threads)?;
    println!(
        "GPT-2 124M random weights, {:?}, {} threads (RAYON_NUM_THREADS={:?}, cores={}); built in {:.1}s; weights {:.0} MB",
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
        (rng % 50000) as u32
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

    if let (Some((busy0, me0)), Some((busy1, me1))) = (ticks0, cpu_ticks()) {
        let wall_ticks = wall0.elapsed().as_secs_f64() * 100.0; // USER_HZ = 100
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let other = (busy1 - busy0).saturating_sub(me1 - me0) as f64;
        println!(
            "other processes used {:.0}% of the machine's CPU during the measurement",
            100.0 * other / (wall_ticks * cores)
        );
    }
    Ok(())
}
