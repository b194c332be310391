//! Times libtorch's two linear-layer kernels at GPT-2 shapes, weights
//! cycled over 6 copies (as a decode step reads them cold): `addmm` (MKL,
//! PyTorch eager's `Conv1D`) and oneDNN's `mkldnn_linear` on weights
//! converted once (the torch engine's `matmul: onednn`):
//!
//!     cargo run --release -p em-torch --example linear -- [THREADS]
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn time(label: &str, bytes: f64, mut f: impl FnMut(usize)) {
    for i in 0..6 {
        f(i);
    }
    let n = 30;
    let t = Instant::now();
    for i in 0..n {
        f(i % 6);
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "{label:36} {:8.3} ms  {:6.1} GB/s",
        dt * 1e3,
        bytes / dt / 1e9
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: i32 = std::env::args().nth(1).map_or(Ok(2), |s| s.parse())?;
    tch::set_num_threads(threads);
    let _g = tch::no_grad_guard();
    let o = (Kind::Float, Device::Cpu);
    for (din, dout) in [(768i64, 2304i64), (768, 3072), (3072, 768), (768, 50257)] {
        let w: Vec<Tensor> = (0..6).map(|_| Tensor::randn([din, dout], o)).collect(); // HF [in, out]
        let wo: Vec<Tensor> = w.iter().map(|w| w.tr().contiguous().to_mkldnn()).collect();
        let b = Tensor::randn([dout], o);
        let bytes = (din * dout * 4) as f64;
        for m in [1i64, 8, 128] {
            if dout > 10000 && m > 8 {
                continue;
            }
            let x = Tensor::randn([m, din], o);
            time(&format!("{din}x{dout} M={m} addmm"), bytes, |i| {
                let _ = b.addmm(&x, &w[i]);
            });
            time(&format!("{din}x{dout} M={m} onednn"), bytes, |i| {
                let _ = x
                    .to_mkldnn()
                    .mkldnn_linear(&wo[i], Some(&b))
                    .to_dense(None, false);
            });
        }
    }
    println!("threads {}", tch::get_num_threads());
    Ok(())
}
