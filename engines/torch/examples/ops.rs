//! Times libtorch's matrix-vector paths at GPT-2 decode shapes with the
//! weights cold (12 layers' worth cycled, as a decode step reads them), to
//! pick the layout the engine uses:
//!     cargo run --release -p em-torch --example ops -- [THREADS]
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn time(label: &str, bytes: f64, mut f: impl FnMut(usize)) {
    for i in 0..12 {
        f(i);
    }
    let n = 120;
    let t = Instant::now();
    for i in 0..n {
        f(i % 12);
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "{label:44} {:8.3} ms  {:6.1} GB/s",
        dt * 1e3,
        bytes / dt / 1e9
    );
}

fn main() {
    let threads: i32 = std::env::args().nth(1).map_or(2, |s| s.parse().unwrap());
    tch::set_num_threads(threads);
    let _g = tch::no_grad_guard();
    let o = (Kind::Float, Device::Cpu);
    let (din, dout) = (768i64, 3072i64);
    let w: Vec<Tensor> = (0..12).map(|_| Tensor::randn([din, dout], o)).collect(); // HF [in, out]
    let wt: Vec<Tensor> = w.iter().map(|w| w.tr().contiguous()).collect(); // [out, in]
    let b = Tensor::randn([dout], o);
    let x1 = Tensor::randn([1, din], o);
    let x2 = Tensor::randn([2, din], o);
    let x8 = Tensor::randn([8, din], o);
    let bytes = (din * dout * 4) as f64;
    time("addmm M=1, W [in,out]", bytes, |i| {
        let _ = b.addmm(&x1, &w[i]);
    });
    time("addmm M=2, W [in,out]", bytes, |i| {
        let _ = b.addmm(&x2, &w[i]);
    });
    time("addmm M=8, W [in,out]", bytes, |i| {
        let _ = b.addmm(&x8, &w[i]);
    });
    time("linear M=1, Wt [out,in]", bytes, |i| {
        let _ = x1.linear(&wt[i], Some(&b));
    });
    time("linear M=2, Wt [out,in]", bytes, |i| {
        let _ = x2.linear(&wt[i], Some(&b));
    });
    time("addmm M=1, Wt^T view", bytes, |i| {
        let _ = b.addmm(&x1, &wt[i].tr());
    });
    time("mv Wt x", bytes, |i| {
        let _ = wt[i].mv(&x1.view([din]));
    });
    time("matmul x[1,1,in] @ W (3-D)", bytes, |i| {
        let _ = x1.view([1, 1, din]).matmul(&w[i]);
    });
    let x8t = x8.tr().contiguous();
    time("Wt @ x8^T -> [out,8] (x8^T contiguous)", bytes, |i| {
        let _ = wt[i].matmul(&x8t);
    });
    time("Wt @ x8^T view", bytes, |i| {
        let _ = wt[i].matmul(&x8.tr());
    });
    time("W^T view @ x8^T", bytes, |i| {
        let _ = w[i].tr().matmul(&x8t);
    });
    time("linear M=8, Wt [out,in]", bytes, |i| {
        let _ = x8.linear(&wt[i], Some(&b));
    });
    time("8 x addmm M=1, W [in,out]", bytes, |i| {
        for r in 0..8 {
            let _ = b.addmm(&x8.narrow(0, r, 1), &w[i]);
        }
    });
    time("addmm M=8 in two halves of W", bytes, |i| {
        let _ = b
            .narrow(0, 0, dout / 2)
            .addmm(&x8, &w[i].narrow(1, 0, dout / 2));
        let _ = b
            .narrow(0, dout / 2, dout / 2)
            .addmm(&x8, &w[i].narrow(1, dout / 2, dout / 2));
    });
    let e = Tensor::randn([50257, din], o);
    let et = e.tr().contiguous();
    let eb = (50257 * din * 4) as f64;
    for m in [1i64, 8] {
        let x = Tensor::randn([m, din], o);
        time(&format!("lm_head M={m}: x @ wte^T (view)"), eb, |_| {
            let _ = x.matmul(&e.tr());
        });
        time(
            &format!("lm_head M={m}: x @ wte^T (contiguous copy)"),
            eb,
            |_| {
                let _ = x.matmul(&et);
            },
        );
        time(&format!("lm_head M={m}: (wte @ x^T)^T"), eb, |_| {
            let _ = e.matmul(&x.tr()).tr();
        });
    }
    println!("threads {}", tch::get_num_threads());
}
