//! Batch-1 decode speed of a model folder on candle, per quantization:
//!
//! ```text
//! cargo run --release -p em-candle --example decode -- DIR [--quantization none,q8_0,q4_1,gguf]
//!     [--threads 2] [--prompt 128] [--steps 64] [--reps 3]
//! ```
//!
//! For each quantization: loads `DIR` (a Hugging Face folder; `gguf` needs
//! one imported from a GGUF, with `imported-from.json`), then `--reps`
//! times prefills a `--prompt`-token prompt and decodes `--steps` tokens
//! one at a time through [`em_candle::CandleBackend`] (what the scheduler
//! calls; scheduler and sink overheads are not included). Prints the load
//! time, the weights' bytes, the median and p90 decode step with the
//! tokens/s of the median, and the median prefill (the prompt's forward
//! and its last logits, as TTFT without the scheduler).

use engine_api::ModelSpec;
use engine_kit::{Backend, Kernels};
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("decode: {e}");
        std::process::exit(2);
    }
}

fn value<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a value")),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().filter(|a| !a.starts_with("--")).ok_or(
        "usage: decode DIR [--quantization a,b] [--threads N] [--prompt N] [--steps N] [--reps N]",
    )?;
    let quants: String = value(&args, "--quantization", "none".to_string())?;
    let threads: usize = value(&args, "--threads", 2)?;
    let prompt_len: usize = value(&args, "--prompt", 128)?;
    let steps: usize = value(&args, "--steps", 64)?;
    let reps: usize = value(&args, "--reps", 3)?;
    let config =
        std::fs::read_to_string(format!("{dir}/config.json")).map_err(|e| e.to_string())?;
    let config: serde_json::Value = serde_json::from_str(&config).map_err(|e| e.to_string())?;
    let arch = config["model_type"].as_str().unwrap_or("gpt2").to_string();
    println!(
        "model {dir} ({arch}), {threads} threads, prompt {prompt_len}, {steps} steps x {reps}"
    );
    for q in quants.split(',') {
        let spec = ModelSpec {
            name: "m".into(),
            architecture: arch.as_str().into(),
            path: dir.as_str().into(),
            dtype: "f32".into(),
            quantization: q.into(),
        };
        let t0 = Instant::now();
        let mut b = em_candle::open(&spec, &format!(r#"{{"threads": {threads}}}"#))
            .map_err(|e| format!("{q}: {e}"))?;
        let load = t0.elapsed().as_secs_f64();
        let vocab = b.vocab_size() as u32;
        let prompt: Vec<u32> = (0..prompt_len as u32)
            .map(|i| (i * 7919 + 13) % vocab)
            .collect();
        let mut times = Vec::new();
        let mut prefills = Vec::new();
        let mut logits = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            b.prefill(&[(1, &prompt)], &mut logits)
                .map_err(|e| e.to_string())?;
            prefills.push(t.elapsed().as_secs_f64() * 1e3);
            let mut tok = 0;
            for _ in 0..steps {
                let t = Instant::now();
                b.decode(&[(1, tok)], &mut logits)
                    .map_err(|e| e.to_string())?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                tok = (tok + 17) % vocab;
            }
            b.free(1);
        }
        times.sort_by(f64::total_cmp);
        prefills.sort_by(f64::total_cmp);
        let prefill = prefills[prefills.len() / 2];
        let med = times[times.len() / 2];
        let p90 = times[times.len() * 9 / 10];
        let mib = b.kernels().weight_bytes() as f64 / (1 << 20) as f64;
        println!(
            "{q:>5}: load {load:.1} s, weights {mib:.1} MiB, decode median {med:.2} ms \
             ({:.1} tok/s), p90 {p90:.2} ms, prefill median {prefill:.0} ms",
            1e3 / med
        );
    }
    Ok(())
}
