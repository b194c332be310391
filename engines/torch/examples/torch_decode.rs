//! Times one prefill and greedy decode steps of the torch engine directly
//! through the backend (no host), to see where its time goes:
//!
//!     cargo run --release -p em-torch --example torch_decode -- [THREADS] [BATCH] [gpt2|tiny|DIR] [auto|onednn|addmm]
//!
//! `DIR` is a Hugging Face folder (for example the imported SmolLM2 under
//! `~/.cache/engine-matrix/models/`), opened as a matrix cell opens it,
//! with the architecture its `config.json` names.
//!
//! `ON_THREAD=1` runs the steps on a spawned thread, as engine_kit's
//! scheduler does; with it, `OPEN_THERE=1` also loads the model on that
//! thread (what `engine_kit::spawn_with` does) instead of on the main one.
use em_torch::TorchBackend;
use engine_kit::Backend;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).map_or(Ok(2), |s| s.parse())?;
    let batch: u64 = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let config = args.get(3).map_or("gpt2", |s| s.as_str());
    let matmul = args
        .get(4)
        .map_or(String::new(), |m| format!(r#","matmul":"{m}""#));
    let spec = if std::path::Path::new(config).is_dir() {
        let dir = std::path::Path::new(config);
        let text = std::fs::read_to_string(dir.join("config.json"))?;
        let cfg: serde_json::Value = serde_json::from_str(&text)?;
        let mut spec = engine_matrix_test_support::spec(dir);
        spec.architecture = cfg["model_type"].as_str().unwrap_or("llama").into();
        spec
    } else {
        engine_matrix_test_support::spec(&engine_matrix_test_support::synthetic(config))
    };
    let opts = format!(r#"{{"threads":{threads}{matmul}}}"#);
    let open = move || em_torch::open(&spec, &opts);
    if std::env::var_os("ON_THREAD").is_none() {
        return run(open()?, threads, batch);
    }
    let pre = match std::env::var_os("OPEN_THERE") {
        Some(_) => None,
        None => Some(open.clone()()?),
    };
    std::thread::spawn(move || {
        let m = match pre {
            Some(m) => m,
            None => open()?,
        };
        run(m, threads, batch)
    })
    .join()
    .map_err(|_| "the bench thread panicked")?
}

fn run(mut m: TorchBackend, threads: usize, batch: u64) -> Result<(), Error> {
    let prompt: Vec<u32> = (0..128).map(|i| (i * 31 + 7) % 49000).collect();
    let seqs: Vec<(u64, &[u32])> = (0..batch).map(|i| (i, prompt.as_slice())).collect();
    for rep in 0..3 {
        let mut l = Vec::new();
        let t = Instant::now();
        m.prefill(&seqs, &mut l)?;
        let ttft = t.elapsed();
        let t = Instant::now();
        let steps = 32;
        for _ in 0..steps {
            let req: Vec<(u64, u32)> = (0..batch).map(|i| (i, 11)).collect();
            m.decode(&req, &mut l)?;
        }
        let tpot = t.elapsed() / steps;
        println!(
            "rep {rep}: prefill {ttft:?}, decode step {tpot:?} (batch {batch}, {threads} threads)"
        );
        for i in 0..batch {
            m.free(i);
        }
    }
    Ok(())
}
