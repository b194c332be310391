//! Parity on real weights: SmolLM2-135M-Instruct, imported (f32) from the
//! provisioned GGUF, through the candle, torch and onnx plugins as the
//! host loads them. For several chat prompts, every engine generates the
//! same 64 greedy tokens, and every step's logits (each engine's `score`
//! of the whole sequence) agree with candle's within 1e-3. The factual
//! answer reads right. Then llama.cpp's llama-server runs the same prompt
//! ids on the same GGUF (it computes in Q4_1 with 8-bit activations, so
//! exact equality is not expected): where its greedy output first
//! diverges from ours is printed. Measured on 2026-12-06 (AMD EPYC):
//! at generated tokens 0, 31 and 5 of the three prompts; on the factual
//! prompt llama.cpp's Q4_1 compute
//! answers "L'Étoile, la Marseillaise, ..." (its own chat endpoint says
//! the same), where the dequantized f32 weights answer "The capital of
//! France is Paris." in all three engines.

use engine_api::{BatchPolicy, LoadOptions, ModelBox, ModelSpec, Request, Sampling};
use engine_kit::testing::Collect;
use engine_matrix_text::{Message, TextModel};
use integration_tests::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const STEPS: usize = 64;
const TOL: f32 = 1e-3;

const PROMPTS: [&str; 3] = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Name three primary colors.",
];

fn load(engine: &str, dir: &Path) -> ModelBox {
    let file = engine_matrix_test_support::plugin_file(engine)
        .unwrap_or_else(|e| panic!("{engine} plugin: {e}"));
    let loaded = engine_matrix_plugins::load(&file).unwrap_or_else(|e| panic!("{engine}: {e}"));
    let spec = ModelSpec {
        name: "smollm2".into(),
        architecture: "llama".into(),
        path: dir.display().to_string().into(),
        dtype: "f32".into(),
        quantization: "none".into(),
    };
    let opts = LoadOptions {
        batch_policy: BatchPolicy::Continuous,
        max_batch: 4,
        options_json: r#"{"threads": 2}"#.into(),
    };
    let m = loaded
        .engine
        .load(&spec, &opts)
        .into_result()
        .unwrap_or_else(|e| panic!("{engine} load: {e}"));
    std::mem::forget(loaded); // plugins stay loaded for the process
    m
}

/// The greedy tokens of every prompt (submitted together) and the logits
/// of each generated position, from `score` of the whole sequence.
fn run(m: &ModelBox, prompts: &[Vec<u32>]) -> Vec<(Vec<u32>, Vec<f32>)> {
    let col = Arc::new(Collect::default());
    let reqs: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            id: i as u64,
            prompt: p.clone().into(),
            max_new_tokens: STEPS as u32,
            sampling: Sampling::GREEDY,
            ignore_eos: true,
        })
        .collect();
    m.submit(reqs.into(), col.sink()).into_result().unwrap();
    col.wait(prompts.len());
    assert!(col.errors.lock().unwrap().is_empty(), "engine errors");
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let tokens = col.tokens_of(i as u64);
            assert_eq!(tokens.len(), STEPS);
            let mut seq = p.clone();
            seq.extend_from_slice(&tokens[..STEPS - 1]);
            let l = m.score(seq.as_slice().into()).into_result().unwrap();
            let v = l.vocab as usize;
            (tokens, l.data[(p.len() - 1) * v..].to_vec())
        })
        .collect()
}

/// llama-server's greedy continuation of `prompt` (token ids).
fn llama_cpp(port: u16, prompt: &[u32]) -> Vec<u32> {
    let body = json!({"prompt": prompt, "n_predict": STEPS, "temperature": 0.0,
        "top_k": 1, "ignore_eos": true, "cache_prompt": false, "return_tokens": true});
    let r = http(
        port,
        "POST",
        "/completion",
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_value(r.json()["tokens"].clone()).expect("tokens")
}

#[test]
fn candle_torch_and_onnx_agree_on_smollm2_and_llama_cpp_is_compared() {
    let tmp = TempDir::new("smollm2-parity");
    let dir = tmp.path().join("smollm2");
    let gguf = provisioned("smollm2-gguf");
    let o = Command::new(binary())
        .args(["model", "import"])
        .arg(&gguf)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let text = TextModel::load(&dir).unwrap().expect("tokenizer");
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| text.chat(&[Message::user(p)]).unwrap())
        .collect();

    let reference = run(&load("candle", &dir), &prompts);
    let answer = text.decode(&reference[0].0, true).unwrap();
    assert!(answer.contains("Paris"), "candle's answer: {answer:?}");
    for engine in ["torch", "onnx"] {
        let got = run(&load(engine, &dir), &prompts);
        for (i, ((rt, rl), (gt, gl))) in reference.iter().zip(&got).enumerate() {
            let diff = engine_matrix_test_support::max_abs_diff(rl, gl);
            eprintln!("{engine}, prompt {i}: max |logit diff| vs candle {diff:.2e}");
            assert!(diff <= TOL, "{engine}, prompt {i}: logits differ by {diff}");
            assert_eq!(
                rt, gt,
                "{engine}, prompt {i}: greedy tokens differ from candle's"
            );
        }
    }

    // llama.cpp on the same GGUF (Q4_1): report where it diverges.
    let server = LlamaServer::start(&gguf, &["-c", "512", "-t", "2"]);
    let port = server.port;
    for (i, (p, (ours, _))) in prompts.iter().zip(&reference).enumerate() {
        let theirs = llama_cpp(port, p);
        let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        match first {
            None => eprintln!("llama.cpp, prompt {i}: the same {STEPS} greedy tokens"),
            Some(k) => eprintln!(
                "llama.cpp, prompt {i}: first divergence at generated token {k} \
                 (ours {:?}, llama.cpp {:?})",
                text.decode(&ours[..=k], true).unwrap(),
                text.decode(&theirs[..=k.min(theirs.len() - 1)], true)
                    .unwrap()
            ),
        }
        assert_eq!(
            theirs.len(),
            STEPS,
            "llama.cpp, prompt {i}: tokens generated"
        );
        if i == 0 {
            // Not asserted: measured 2026-12-06, llama.cpp's Q4_1 compute
            // answers "L'Étoile, la Marseillaise, ..." where the f32
            // dequantized weights answer "The capital of France is Paris."
            let said = text.decode(&theirs, true).unwrap();
            eprintln!("llama.cpp, prompt 0 says: {said:?}");
        }
    }
    drop(server);
}
