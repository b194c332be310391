//! Tiny Llama-family checkpoints and an independent naive reference
//! forward pass (f64 loops, no tensor library, written from HF's
//! `modeling_llama.py` / `modeling_qwen2.py`, not from any engine), for
//! every engine's Llama parity tests.
//!
//! [`configs`] covers what differs between the family's members:
//! grouped-query attention, RoPE with `llama3` scaling, Qwen2's q/k/v
//! bias, untied embeddings, and head_dim 64 (the attention kernels'
//! unrolled path). [`check_engine`] drives any [`Backend`] through
//! prefill, batched decode over sequences of different lengths and
//! `score`, comparing every row of logits with the reference.

use crate::{argmax, max_abs_diff};
use engine_kit::llama::{Config, RopeScaling};
use engine_kit::Backend;
use std::collections::HashMap;
use std::path::Path;

/// Largest absolute logit difference accepted against the reference.
pub const TOL: f32 = 1e-4;

/// Name -> (shape, values), HF names and layouts.
pub type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The tiny configurations every engine is checked on.
pub fn configs() -> Vec<(&'static str, Config)> {
    let gqa = Config::tiny(); // llama, 4 query heads over 2 kv heads, tied
    let mut llama3 = Config::tiny();
    llama3.num_key_value_heads = Some(1);
    llama3.tie_word_embeddings = false;
    llama3.rope_theta = 500000.0;
    llama3.rope_scaling = Some(RopeScaling {
        rope_type: "llama3".into(),
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        // small, so that the tiny head's frequencies fall in all three
        // bands (kept, divided, smoothed)
        original_max_position_embeddings: Some(256),
    });
    let mut qwen2 = Config::tiny();
    qwen2.model_type = "qwen2".into();
    qwen2.tie_word_embeddings = false;
    let mut wide = Config::tiny(); // head_dim 64, no grouping
    wide.hidden_size = 128;
    wide.num_attention_heads = 2;
    wide.num_key_value_heads = None;
    vec![
        ("llama-gqa", gqa),
        ("llama3-rope", llama3),
        ("qwen2-bias", qwen2),
        ("head-dim-64", wide),
    ]
}

/// `config.json` of `cfg`, as HF writes it.
pub fn config_json(cfg: &Config) -> serde_json::Value {
    let arch = match cfg.model_type.as_str() {
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => "LlamaForCausalLM",
    };
    let scaling = cfg.rope_scaling.as_ref().map(|s| {
        serde_json::json!({"rope_type": s.rope_type, "factor": s.factor,
            "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings})
    });
    serde_json::json!({
        "architectures": [arch],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.kv_heads(),
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": scaling,
        "hidden_act": cfg.hidden_act,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "torch_dtype": "float32",
    })
}

/// Deterministic random weights for `cfg` (norm weights near 1).
pub fn random_weights(cfg: &Config, seed: u64) -> Weights {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    cfg.expected_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let vals: Vec<f32> = if name.contains("norm") {
                (0..n).map(|_| 1.0 + 0.2 * next()).collect()
            } else if name.ends_with("bias") {
                (0..n).map(|_| 0.2 * next()).collect()
            } else {
                (0..n).map(|_| 0.4 * next()).collect()
            };
            (name, (shape, vals))
        })
        .collect()
}

/// Writes `config.json` and `model.safetensors` (f32) into `dir`.
pub fn write_model(dir: &Path, cfg: &Config, w: &Weights) {
    std::fs::create_dir_all(dir).expect("model dir");
    let json = serde_json::to_string_pretty(&config_json(cfg)).expect("config json");
    std::fs::write(dir.join("config.json"), json).expect("write config.json");
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, (s, v))| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), s.clone(), b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("tensor view");
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .expect("write model.safetensors");
}

/// The naive reference model.
pub struct Reference {
    cfg: Config,
    w: Weights,
}

impl Reference {
    pub fn new(cfg: &Config, w: &Weights) -> Self {
        Reference {
            cfg: cfg.clone(),
            w: w.clone(),
        }
    }

    fn t(&self, name: &str) -> &[f32] {
        &self
            .w
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    }

    /// RoPE inverse frequencies, HF's `_compute_default_rope_parameters`
    /// and `_compute_llama3_parameters` transcribed.
    fn inv_freq(&self) -> Vec<f64> {
        let d = self.cfg.head_dim();
        let base: Vec<f64> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / self.cfg.rope_theta.powf(i as f64 / d as f64))
            .collect();
        let Some(s) = &self.cfg.rope_scaling else {
            return base;
        };
        assert_eq!(s.rope_type, "llama3", "the reference knows llama3 scaling");
        let old = s.original_max_position_embeddings.expect("old context") as f64;
        let low = old / s.low_freq_factor;
        let high = old / s.high_freq_factor;
        base.iter()
            .map(|&f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let scaled = if wavelen > low { f / s.factor } else { f };
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                let smoothed = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
                let medium = wavelen >= high && wavelen <= low; // HF: ~(w < high) * ~(w > low)
                if medium {
                    smoothed
                } else {
                    scaled
                }
            })
            .collect()
    }

    /// Logits of every position of `tokens`, `[len, vocab]` row-major.
    pub fn logits(&self, tokens: &[u32]) -> Vec<f32> {
        let c = &self.cfg;
        let (h, d) = (c.hidden_size, c.head_dim());
        let (nh, nk) = (c.num_attention_heads, c.kv_heads());
        let eps = c.rms_norm_eps;
        let n = tokens.len();
        let embed = self.t("model.embed_tokens.weight");
        let mut x: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| {
                embed[t as usize * h..][..h]
                    .iter()
                    .map(|&v| v as f64)
                    .collect()
            })
            .collect();
        let inv = self.inv_freq();
        let rope = |v: &mut [f64], pos: usize| {
            for i in 0..d / 2 {
                let a = pos as f64 * inv[i];
                let (x1, x2) = (v[i], v[i + d / 2]);
                v[i] = x1 * a.cos() - x2 * a.sin();
                v[i + d / 2] = x2 * a.cos() + x1 * a.sin();
            }
        };
        for l in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let bias = |s: &str| self.w.get(&p(s)).map(|b| b.1.as_slice());
            let lin = |x: &[f64], s: &str, out: usize| {
                linear(
                    x,
                    self.t(&p(&format!("{s}.weight"))),
                    bias(&format!("{s}.bias")),
                    out,
                )
            };
            let mut attn_out = Vec::with_capacity(n);
            let hs: Vec<Vec<f64>> = x
                .iter()
                .map(|r| rms(r, self.t(&p("input_layernorm.weight")), eps))
                .collect();
            let mut q: Vec<Vec<f64>> = hs
                .iter()
                .map(|r| lin(r, "self_attn.q_proj", nh * d))
                .collect();
            let mut k: Vec<Vec<f64>> = hs
                .iter()
                .map(|r| lin(r, "self_attn.k_proj", nk * d))
                .collect();
            let v: Vec<Vec<f64>> = hs
                .iter()
                .map(|r| lin(r, "self_attn.v_proj", nk * d))
                .collect();
            for (pos, (qr, kr)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
                qr.chunks_mut(d).for_each(|hd| rope(hd, pos));
                kr.chunks_mut(d).for_each(|hd| rope(hd, pos));
            }
            for (i, qi) in q.iter().enumerate() {
                let mut o = vec![0.0; nh * d];
                for head in 0..nh {
                    let kv = head / (nh / nk);
                    let qh = &qi[head * d..][..d];
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kh = &k[j][kv * d..][..d];
                            qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        for c2 in 0..d {
                            o[head * d + c2] += ej / z * v[j][kv * d + c2];
                        }
                    }
                }
                attn_out.push(lin(&o, "self_attn.o_proj", h));
            }
            for (xr, a) in x.iter_mut().zip(&attn_out) {
                xr.iter_mut().zip(a).for_each(|(x, a)| *x += a);
            }
            for xr in x.iter_mut() {
                let hn = rms(xr, self.t(&p("post_attention_layernorm.weight")), eps);
                let i = c.intermediate_size;
                let g = lin(&hn, "mlp.gate_proj", i);
                let u = lin(&hn, "mlp.up_proj", i);
                let act: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let dn = lin(&act, "mlp.down_proj", h);
                xr.iter_mut().zip(&dn).for_each(|(x, d)| *x += d);
            }
        }
        let head = if c.tie_word_embeddings {
            embed
        } else {
            self.t("lm_head.weight")
        };
        x.iter()
            .flat_map(|r| {
                let hn = rms(r, self.t("model.norm.weight"), eps);
                linear(&hn, head, None, c.vocab_size)
                    .into_iter()
                    .map(|v| v as f32)
            })
            .collect()
    }
}

/// `x @ w^T + b` for HF's `[out, in]` `w`.
fn linear(x: &[f64], w: &[f32], b: Option<&[f32]>, out: usize) -> Vec<f64> {
    let n = x.len();
    (0..out)
        .map(|o| {
            let dot: f64 = w[o * n..][..n]
                .iter()
                .zip(x)
                .map(|(w, x)| *w as f64 * x)
                .sum();
            dot + b.map_or(0.0, |b| b[o] as f64)
        })
        .collect()
}

fn rms(x: &[f64], w: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * r * *w as f64).collect()
}

/// `engine` (opened on a model written from `cfg` and `w`) against the
/// reference: a batched prefill of prompts of different lengths, decode
/// steps over all of them and over a subset in a new order, and `score`;
/// every row within [`TOL`]. Returns the largest difference seen.
pub fn check_engine(engine: &mut dyn Backend, name: &str, cfg: &Config, w: &Weights) -> f32 {
    let r = Reference::new(cfg, w);
    let v = cfg.vocab_size;
    let mut worst = 0f32;
    let mut check = |seq: &[u32], row: &[f32], what: &str| {
        let all = r.logits(seq);
        let want = &all[(seq.len() - 1) * v..];
        let d = max_abs_diff(row, want);
        assert!(
            d <= TOL,
            "{name}: {what}: logits differ from the reference by {d}"
        );
        worst = worst.max(d);
    };
    let mut seqs: Vec<Vec<u32>> = vec![
        (0..7).map(|i| (i * 5 + 3) % v as u32).collect(),
        (0..19).map(|i| (i * 11 + 1) % v as u32).collect(),
        (0..7).map(|i| (i * 13 + 2) % v as u32).collect(),
    ];
    let mut l = Vec::new();
    let first: Vec<(u64, &[u32])> = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64, s.as_slice()))
        .collect();
    engine.prefill(&first, &mut l).expect("prefill");
    for (i, s) in seqs.iter().enumerate() {
        check(
            s,
            &l[i * v..(i + 1) * v],
            &format!("prefill of sequence {i}"),
        );
    }
    let mut next: Vec<u32> = (0..3).map(|i| argmax(&l[i * v..(i + 1) * v])).collect();
    let plans: [&[usize]; 4] = [&[0, 1, 2], &[0, 1, 2], &[2, 0], &[1]];
    for (step, plan) in plans.iter().enumerate() {
        let req: Vec<(u64, u32)> = plan.iter().map(|&i| (i as u64, next[i])).collect();
        for &i in plan.iter() {
            seqs[i].push(next[i]);
        }
        engine.decode(&req, &mut l).expect("decode");
        for (row, &i) in plan.iter().enumerate() {
            let got = &l[row * v..(row + 1) * v];
            check(&seqs[i], got, &format!("decode step {step}, sequence {i}"));
            next[i] = argmax(got);
        }
    }
    for i in 0..3 {
        engine.free(i);
    }
    let s = engine.score(&seqs[1]).expect("score");
    let want = r.logits(&seqs[1]);
    let d = max_abs_diff(&s.data, &want);
    assert!(d <= TOL, "{name}: score differs from the reference by {d}");
    // Not vacuous: the logits move with the position.
    let moved = max_abs_diff(&want[..v], &want[want.len() - v..]);
    assert!(
        moved > 100.0 * TOL,
        "{name}: logits do not change ({moved})"
    );
    worst.max(d)
}

/// Writes `cfg` and `w` into `dir` as a sharded checkpoint: the tensors of
/// layer 0 in `model-00001-of-00002.safetensors`, the rest in
/// `model-00002-of-00002.safetensors`, and the `model.safetensors.index.json`
/// that maps each tensor to its shard (as `save_pretrained` does for large
/// models).
pub fn write_sharded(dir: &Path, cfg: &Config, w: &Weights) {
    let shard_of = |name: &str| if name.contains("layers.0.") { 1 } else { 2 };
    let file = |i: usize| format!("model-0000{i}-of-00002.safetensors");
    for i in 1..=2 {
        let part: Weights = w
            .iter()
            .filter(|(n, _)| shard_of(n) == i)
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let tmp = dir.join(format!(".shard-{i}"));
        write_model(&tmp, cfg, &part);
        std::fs::rename(tmp.join("model.safetensors"), dir.join(file(i))).expect("move shard");
        std::fs::rename(tmp.join("config.json"), dir.join("config.json")).expect("config");
        std::fs::remove_dir_all(&tmp).expect("remove shard folder");
    }
    let map: serde_json::Map<String, serde_json::Value> = w
        .keys()
        .map(|n| (n.clone(), file(shard_of(n)).into()))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())
        .expect("write the index");
}

/// The loading errors every engine gives for the same broken folders,
/// through `open(architecture)` on `dir`, which holds a tiny Llama
/// without `model.layers.1.mlp.up_proj.weight` ([`broken_model`]): that
/// missing tensor is an `invalid model` error naming the file and the
/// tensor; the folder declared as `qwen2` is `invalid model` (its
/// config.json says `llama`); `mamba` is `unsupported`, named with the
/// architectures the engine does implement.
pub fn check_loading_errors(open: impl Fn(&str) -> Result<(), engine_api::EngineError>) {
    use engine_api::ErrorKind;
    let err = |arch: &str| match open(arch) {
        Ok(()) => panic!("a broken folder declared as {arch} loaded"),
        Err(e) => e,
    };
    let e = err("llama");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(
        e.message
            .contains("model.safetensors: missing tensor model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
    let e = err("qwen2");
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(e.message.contains("model_type is \"llama\""), "{e}");
    let e = err("mamba");
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(
        e.message.contains("architecture \"mamba\"")
            && e.message.contains("gpt2, llama, qwen2, mistral"),
        "{e}"
    );
}

/// A tiny Llama in `dir` without `model.layers.1.mlp.up_proj.weight`.
pub fn broken_model(dir: &Path) -> (Config, Weights) {
    let cfg = Config::tiny();
    let mut w = random_weights(&cfg, 1);
    w.remove("model.layers.1.mlp.up_proj.weight");
    write_model(dir, &cfg, &w);
    (cfg, w)
}
