//! Shared test helpers: a tiny random GPT-2 checkpoint on disk, an
//! independent naive f32 reference forward pass (no candle), and a sink
//! that collects what the scheduler sends.
#![allow(dead_code)] // each test binary uses a different subset

use em_candle::gpt2::Config;
use engine_api::ModelSpec;
use std::collections::HashMap;
use std::path::Path;

pub fn tiny_config() -> Config {
    Config {
        vocab_size: 96,
        n_positions: 128,
        n_embd: 32,
        n_layer: 2,
        n_head: 4,
        n_inner: None,
        eos_token_id: Some(95),
        bos_token_id: Some(95),
        ..Config::default()
    }
}

pub use engine_kit::testing::TempDir;

/// Deterministic uniform [-1, 1) numbers (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn token(&mut self, vocab: usize) -> u32 {
        (((self.next() + 1.0) / 2.0 * vocab as f32) as usize).min(vocab - 1) as u32
    }
}

/// Name -> (shape, values), HF layout, no prefix.
pub type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

pub fn random_weights(cfg: &Config, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let mut w = Weights::new();
    for (name, shape) in cfg.expected_tensors() {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = if name.contains("ln_") && name.ends_with("weight") {
            (0..n).map(|_| 1.0 + 0.2 * rng.next()).collect()
        } else if name.ends_with("bias") {
            (0..n).map(|_| 0.1 * rng.next()).collect()
        } else if name.starts_with("w") {
            (0..n).map(|_| 0.5 * rng.next()).collect()
        } else {
            // Conv1D weights: scale so activations stay O(1).
            let fan_in = shape[0] as f32;
            (0..n).map(|_| 1.5 * rng.next() / fan_in.sqrt()).collect()
        };
        w.insert(name, (shape, vals));
    }
    w
}

/// Writes `config.json` and `model.safetensors` (names prefixed with
/// `prefix`, plus the `attn.bias` buffers old HF files carry).
pub fn write_checkpoint(dir: &Path, cfg: &Config, w: &Weights, prefix: &str) {
    let mut json = serde_json::json!({
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.n_inner,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "activation_function": cfg.activation_function,
        "eos_token_id": cfg.eos_token_id,
        "bos_token_id": cfg.bos_token_id,
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "resid_pdrop": 0.1,
        "task_specific_params": {"text-generation": {"do_sample": true}},
    });
    json["initializer_range"] = 0.02.into();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();

    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(name, (shape, vals))| {
            let b = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            (format!("{prefix}{name}"), shape.clone(), b)
        })
        .collect();
    let p = cfg.n_positions;
    let mask: Vec<u8> = (0..p * p)
        .flat_map(|i| (if i % p <= i / p { 1.0f32 } else { 0.0 }).to_le_bytes())
        .collect();
    for l in 0..cfg.n_layer {
        bytes.push((
            format!("{prefix}h.{l}.attn.bias"),
            vec![1, 1, p, p],
            mask.clone(),
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

pub fn spec(dir: &Path, dtype: &str) -> ModelSpec {
    ModelSpec {
        name: "tiny-gpt2".into(),
        architecture: "gpt2".into(),
        path: dir.to_string_lossy().as_ref().into(),
        dtype: dtype.into(),
        quantization: "none".into(),
    }
}

/// A tiny checkpoint on disk with its weights.
pub fn tiny_checkpoint(seed: u64) -> (TempDir, Config, Weights) {
    let cfg = tiny_config();
    let w = random_weights(&cfg, seed);
    let dir = TempDir::new("tiny");
    write_checkpoint(dir.path(), &cfg, &w, "");
    (dir, cfg, w)
}

// ---------------------------------------------------------------------------
// The naive reference: plain loops, f32, straight from the GPT-2 paper / HF.

fn layer_norm(x: &[f32], g: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    x.iter()
        .zip(g.iter().zip(b))
        .map(|(v, (g, b))| (v - mean) * inv * g + b)
        .collect()
}

/// HF Conv1D: `y = x @ W + b` with `W: [in, out]`.
fn conv1d(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (d_in, d_out) = (x.len(), b.len());
    let mut y = b.to_vec();
    for i in 0..d_in {
        for j in 0..d_out {
            y[j] += x[i] * w[i * d_out + j];
        }
    }
    y
}

fn gelu_new(x: f32) -> f32 {
    0.5 * x * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), in f64.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
            + 0.254829592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

/// HF's exact `gelu`.
fn gelu_erf(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

/// Logits `[tokens.len()][vocab]` for every position.
pub fn reference_logits(cfg: &Config, w: &Weights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let g = |n: &str| -> &[f32] { &w[n].1 };
    let (c, h) = (cfg.n_embd, cfg.n_head);
    let d = c / h;
    let eps = cfg.layer_norm_epsilon as f32;
    let t_len = tokens.len();
    let mut x: Vec<Vec<f32>> = tokens
        .iter()
        .enumerate()
        .map(|(t, &tok)| {
            (0..c)
                .map(|j| g("wte.weight")[tok as usize * c + j] + g("wpe.weight")[t * c + j])
                .collect()
        })
        .collect();
    for l in 0..cfg.n_layer {
        let p = |s: &str| format!("h.{l}.{s}");
        let qkv: Vec<Vec<f32>> = x
            .iter()
            .map(|xt| {
                let hn = layer_norm(xt, g(&p("ln_1.weight")), g(&p("ln_1.bias")), eps);
                conv1d(&hn, g(&p("attn.c_attn.weight")), g(&p("attn.c_attn.bias")))
            })
            .collect();
        let mut att_out = vec![vec![0f32; c]; t_len];
        for head in 0..h {
            for i in 0..t_len {
                let q = &qkv[i][head * d..(head + 1) * d];
                let scores: Vec<f32> = (0..=i)
                    .map(|j| {
                        let k = &qkv[j][c + head * d..c + (head + 1) * d];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    let v = &qkv[j][2 * c + head * d..2 * c + (head + 1) * d];
                    for k in 0..d {
                        att_out[i][head * d + k] += ej / sum * v[k];
                    }
                }
            }
        }
        for (xt, a) in x.iter_mut().zip(&att_out) {
            let proj = conv1d(a, g(&p("attn.c_proj.weight")), g(&p("attn.c_proj.bias")));
            xt.iter_mut().zip(proj).for_each(|(x, p)| *x += p);
            let hn = layer_norm(xt, g(&p("ln_2.weight")), g(&p("ln_2.bias")), eps);
            let act = match cfg.activation_function.as_str() {
                "gelu_new" => gelu_new,
                "gelu" => gelu_erf,
                other => panic!("reference has no {other}"),
            };
            let f: Vec<f32> = conv1d(&hn, g(&p("mlp.c_fc.weight")), g(&p("mlp.c_fc.bias")))
                .into_iter()
                .map(act)
                .collect();
            let m = conv1d(&f, g(&p("mlp.c_proj.weight")), g(&p("mlp.c_proj.bias")));
            xt.iter_mut().zip(m).for_each(|(x, m)| *x += m);
        }
    }
    x.iter()
        .map(|xt| {
            let hn = layer_norm(xt, g("ln_f.weight"), g("ln_f.bias"), eps);
            (0..cfg.vocab_size)
                .map(|v| {
                    let row = &g("wte.weight")[v * c..(v + 1) * c];
                    hn.iter().zip(row).map(|(a, b)| a * b).sum()
                })
                .collect()
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[allow(unused_imports)] // used by end_to_end only
pub use engine_kit::testing::Collect;
