// scratch, not committed
use engine_api::ModelSpec;
use engine_kit::Backend;
use std::time::Instant;

fn spec(dir: &str, dtype: &str) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        architecture: "llama".into(),
        path: dir.into(),
        dtype: dtype.into(),
        quantization: "none".into(),
    }
}

fn main() {
    let dir = "/tmp/smollm2-f32";
    let prompt: Vec<u32> = (0..40).map(|i| (i * 997 + 13) % 49152).collect();
    let bytes = std::fs::read(format!("{dir}/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut w = engine_matrix_test_support::llama::Weights::new();
    for (n, t) in st.tensors() {
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        w.insert(n.to_string(), (t.shape().to_vec(), v));
    }
    let cfg: engine_kit::llama::Config =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/config.json")).unwrap())
            .unwrap();
    let t = Instant::now();
    let want = if std::env::var("NOREF").is_ok() { vec![0.0; prompt.len() * 49152] } else { engine_matrix_test_support::llama::Reference::new(&cfg, &w).logits(&prompt) };
    println!("reference {:?}", t.elapsed());
    drop(w);
    let v = 49152;
    {
        let g = engine_matrix_test_support::synthetic("gpt2");
        let mut b = em_torch::open(&engine_matrix_test_support::spec(&g), r#"{"threads":2}"#).unwrap();
        let mut l = Vec::new();
        b.prefill(&[(1, &prompt[..20])], &mut l).unwrap();
        for _ in 0..3 { b.decode(&[(1, 5)], &mut l).unwrap(); }
        let t = Instant::now();
        for _ in 0..20 { b.decode(&[(1, 5)], &mut l).unwrap(); }
        println!("gpt2 onednn: decode batch 1: {:.2} ms/step", t.elapsed().as_secs_f64() * 1e3 / 20.0);
    }
    for mm in ["onednn", "addmm"] {
        let o = format!(r#"{{"threads":2,"matmul":"{mm}"}}"#);
        let t = Instant::now();
        let mut b = em_torch::open(&spec(dir, "f32"), &o).unwrap();
        println!("{mm}: load {:?}", t.elapsed());
        let got = b.score(&prompt).unwrap().data.to_vec();
        println!(
            "{mm}: score vs reference max diff {:.3e}",
            engine_matrix_test_support::max_abs_diff(&got, &want)
        );
        let mut l = Vec::new();
        b.prefill(&[(1, &prompt)], &mut l).unwrap();
        println!(
            "{mm}: prefill vs reference last row {:.3e}",
            engine_matrix_test_support::max_abs_diff(&l, &want[want.len() - v..])
        );
        // prefill timing 128
        let p128: Vec<u32> = (0..128).map(|i| (i * 31 + 7) % 49152).collect();
        let t = Instant::now();
        b.prefill(&[(2, &p128)], &mut l).unwrap();
        println!("{mm}: prefill 128 {:?}", t.elapsed());
        for batch in [1usize, 8] {
            let ids: Vec<u64> = (10..10 + batch as u64).collect();
            for &id in &ids {
                b.prefill(&[(id, &prompt)], &mut l).unwrap();
            }
            let req: Vec<(u64, u32)> = ids.iter().map(|&i| (i, 5)).collect();
            for _ in 0..3 {
                b.decode(&req, &mut l).unwrap();
            }
            let n = 20;
            let t = Instant::now();
            for _ in 0..n {
                b.decode(&req, &mut l).unwrap();
            }
            println!(
                "{mm}: decode batch {batch}: {:.2} ms/step",
                t.elapsed().as_secs_f64() * 1e3 / n as f64
            );
            for &id in &ids {
                b.free(id);
            }
        }
    }
}
