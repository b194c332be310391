use super::*;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};

const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 4;
const HIDDEN: usize = HEADS * HEAD_DIM;
const FF: usize = 24;
const LAYERS: usize = 2;
const VOCAB: usize = 32;

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("em-import-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Deterministic distinct values.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// llama.cpp's `LlamaModel.permute`, written with indices:
/// `w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2)`.
fn permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let hf_row = h * 2 * half + j * half + i;
                let gguf_row = h * 2 * half + i * 2 + j;
                out[gguf_row * cols..][..cols].copy_from_slice(&w[hf_row * cols..][..cols]);
            }
        }
    }
    out
}

/// HF name -> (shape, values) of a tiny Llama checkpoint.
fn checkpoint() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let kv = KV_HEADS * HEAD_DIM;
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN]),
        ("model.norm.weight".to_string(), vec![HIDDEN]),
    ];
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        t.push((p("input_layernorm.weight"), vec![HIDDEN]));
        t.push((p("post_attention_layernorm.weight"), vec![HIDDEN]));
        t.push((p("self_attn.q_proj.weight"), vec![HIDDEN, HIDDEN]));
        t.push((p("self_attn.k_proj.weight"), vec![kv, HIDDEN]));
        t.push((p("self_attn.v_proj.weight"), vec![kv, HIDDEN]));
        t.push((p("self_attn.o_proj.weight"), vec![HIDDEN, HIDDEN]));
        t.push((p("mlp.gate_proj.weight"), vec![FF, HIDDEN]));
        t.push((p("mlp.up_proj.weight"), vec![FF, HIDDEN]));
        t.push((p("mlp.down_proj.weight"), vec![HIDDEN, FF]));
    }
    t.into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let v = values(s.iter().product(), i);
            (n, s, v)
        })
        .collect()
}

/// llama.cpp's name for an HF name (the converter's mapping).
fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (l, part) = rest.split_once('.').unwrap();
    let g = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("{other}"),
    };
    format!("blk.{l}.{g}")
}

/// Writes the tiny checkpoint as llama.cpp's converter would (Q and K
/// permuted, f32 tensors), with architecture `arch`.
/// A byte-level BPE vocabulary of [`VOCAB`] tokens: three control tokens,
/// the characters and merges of "hello world", digits, then padding.
fn tokens() -> Vec<String> {
    let mut t: Vec<String> = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "h",
        "e",
        "l",
        "o",
        "\u{120}",
        "w",
        "r",
        "d",
        "1",
        "2",
        "he",
        "ll",
        "hell",
        "hello",
        "\u{120}w",
        "or",
        "\u{120}wor",
        "ld",
        "\u{120}world",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let real = t.len();
    t.extend((real..VOCAB).map(|i| format!("<pad{i}>")));
    t
}

const MERGES: [&str; 8] = [
    "h e",
    "l l",
    "he ll",
    "hell o",
    "\u{120} w",
    "o r",
    "\u{120}w or",
    "l d",
];

const CHAT: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn write_gguf(path: &Path, arch: &str) {
    write_gguf_with(path, arch, None, false)
}

/// [`write_gguf`] without metadata key `skip`, and with an extra tensor
/// `blk.0.unknown.weight` when `extra`.
fn write_gguf_with(path: &Path, arch: &str, skip: Option<&str>, extra: bool) {
    let mut qs = Vec::new();
    for (hf, shape, v) in checkpoint() {
        let v = if hf.ends_with("q_proj.weight") {
            permute(&v, shape[0], shape[1], HEADS)
        } else if hf.ends_with("k_proj.weight") {
            permute(&v, shape[0], shape[1], KV_HEADS)
        } else {
            v
        };
        let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap();
        qs.push((
            gguf_name(&hf),
            QTensor::quantize(&t, GgmlDType::F32).unwrap(),
        ));
    }
    if extra {
        let t = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        qs.push(("blk.0.unknown.weight".into(), q));
    }
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("llama.context_length".into(), Value::U32(64)),
        ("llama.embedding_length".into(), Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length".into(), Value::U32(FF as u32)),
        ("llama.block_count".into(), Value::U32(LAYERS as u32)),
        (
            "llama.attention.head_count".into(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(KV_HEADS as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(100000.0)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens().into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(
                MERGES
                    .iter()
                    .map(|m| Value::String(m.to_string()))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(
                (0..VOCAB)
                    .map(|i| Value::I32(if i < 3 { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        ("tokenizer.chat_template".into(), Value::String(CHAT.into())),
    ];
    let md_refs: Vec<(&str, &Value)> = md
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let t_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

#[test]
fn a_llama_gguf_imports_to_the_original_hf_checkpoint() {
    let dir = temp("roundtrip");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, "llama");
    let out = dir.join("model");
    let imported = import(&gguf, DType::F32, &out).unwrap();
    assert_eq!(imported.tensors, 2 + 9 * LAYERS);
    let c = &imported.config;
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["num_attention_heads"], HEADS);
    assert_eq!(c["num_key_value_heads"], KV_HEADS);
    assert_eq!(c["head_dim"], HEAD_DIM);
    assert_eq!(c["vocab_size"], VOCAB);
    assert_eq!(c["intermediate_size"], FF);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(
        (c["bos_token_id"].as_u64(), c["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(&on_disk, c);
    let st = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    for (hf, shape, v) in checkpoint() {
        let t = st.get(&hf).unwrap_or_else(|| panic!("{hf} missing"));
        assert_eq!(t.dims(), shape.as_slice(), "{hf}");
        let got = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, v, "{hf}: the import is not the original checkpoint");
    }
    // The tokenizer, rebuilt from the metadata: BPE merges apply, digits
    // split one by one (the smollm pre-tokenizer), control tokens match
    // whole and are skipped when decoding; the chat template is kept.
    assert_eq!(
        imported.tokenizer.as_deref(),
        Ok("byte-level BPE (tokenizer model gpt2)")
    );
    let text = engine_matrix_text::TextModel::load(&out).unwrap().unwrap();
    let vocab = tokens();
    let ids = text.encode("hello world12", false).unwrap();
    let pieces: Vec<&str> = ids.iter().map(|&i| vocab[i as usize].as_str()).collect();
    assert_eq!(pieces, ["hello", "\u{120}wor", "ld", "1", "2"]);
    let ids = text.encode("<|im_start|>hello<|im_end|>", false).unwrap();
    assert_eq!(ids, [1, 16, 2]);
    assert_eq!(text.decode(&ids, true).unwrap(), "hello");
    let chat = text.chat_template().expect("the GGUF's chat template");
    let rendered = chat.render(&[engine_matrix_text::Message::user("hello")], true);
    assert_eq!(
        rendered.unwrap(),
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
    let gen = std::fs::read_to_string(out.join("generation_config.json")).unwrap();
    let gen: serde_json::Value = serde_json::from_str(&gen).unwrap();
    assert_eq!(
        (gen["bos_token_id"].as_u64(), gen["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    // Imported again, the folder is replaced, in another dtype.
    import(&gguf, DType::BF16, &out).unwrap();
    let st = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(st["model.norm.weight"].dtype(), DType::BF16);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unpermute_inverts_llama_cpp_permutation() {
    let (rows, cols) = (HIDDEN, 3);
    let v = values(rows * cols, 9);
    let g = Tensor::from_vec(permute(&v, rows, cols, HEADS), (rows, cols), &Device::Cpu).unwrap();
    let back = unpermute(&g, HEADS).unwrap().flatten_all().unwrap();
    assert_eq!(back.to_vec1::<f32>().unwrap(), v);
    assert!(
        unpermute(&g, 3).is_err(),
        "16 rows are not 3 heads of pairs"
    );
}

#[test]
fn bad_files_are_named_with_what_is_wrong() {
    let dir = temp("bad");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, "llama");
    let bytes = std::fs::read(&gguf).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let e = import(&cut, DType::F32, &dir.join("m1"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.gguf: truncated: tensor "), "{e}");

    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"this is not a gguf file at all").unwrap();
    let e = import(&junk, DType::F32, &dir.join("m2"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.gguf: not a readable GGUF file"), "{e}");

    let mamba = dir.join("mamba.gguf");
    write_gguf(&mamba, "mamba");
    let e = import(&mamba, DType::F32, &dir.join("m3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mamba.gguf: architecture \"mamba\" is not one the importer knows"),
        "{e}"
    );

    let no_layers = dir.join("no-layers.gguf");
    write_gguf_with(&no_layers, "llama", Some("llama.block_count"), false);
    let e = import(&no_layers, DType::F32, &dir.join("m5"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-layers.gguf: metadata llama.block_count: missing"),
        "{e}"
    );

    let odd = dir.join("odd.gguf");
    write_gguf_with(&odd, "llama", None, true);
    let e = import(&odd, DType::F32, &dir.join("m6"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("odd.gguf: tensor blk.0.unknown.weight: not a tensor of the llama architecture"),
        "{e}"
    );

    // --out pointing at a folder of other files: refused, untouched.
    let precious = dir.join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), "keep me").unwrap();
    let e = import(&gguf, DType::F32, &precious)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not a model folder (no config.json): not replacing it"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(precious.join("notes.txt")).unwrap(),
        "keep me"
    );

    let missing = dir.join("missing.gguf");
    let e = import(&missing, DType::F32, &dir.join("m4"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.gguf: cannot open"), "{e}");
    for m in ["m1", "m2", "m3", "m4", "m5", "m6"] {
        assert!(!dir.join(m).exists(), "{m} was written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A GGUF of one Q4_1 matrix (2 × 64) and one f32 vector, with a string
/// array among its metadata.
fn write_q4_1_gguf(path: &Path) -> (Tensor, Tensor) {
    let m = Tensor::from_vec(values(128, 3), (2, 64), &Device::Cpu).unwrap();
    let v = Tensor::from_vec(values(64, 5), 64, &Device::Cpu).unwrap();
    let qm = QTensor::quantize(&m, GgmlDType::Q4_1).unwrap();
    let qv = QTensor::quantize(&v, GgmlDType::F32).unwrap();
    let deq = qm.dequantize(&Device::Cpu).unwrap();
    let arch = Value::String("llama".into());
    let ftype = Value::U32(3);
    let align = Value::U32(32);
    let toks = Value::Array(tokens().into_iter().map(Value::String).collect());
    let md = [
        ("general.architecture", &arch),
        ("general.file_type", &ftype),
        ("general.alignment", &align),
        ("tokenizer.ggml.tokens", &toks),
    ];
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(
        &mut f,
        &md,
        &[
            ("blk.0.ffn_down.weight", &qm),
            ("blk.0.ffn_norm.weight", &qv),
        ],
    )
    .unwrap();
    (deq, v)
}

fn read_gguf(path: &Path) -> (gguf_file::Content, std::fs::File) {
    let mut f = std::fs::File::open(path).unwrap();
    (gguf_file::Content::read(&mut f).unwrap(), f)
}

#[test]
fn a_float_gguf_holds_the_dequantized_tensors_and_the_metadata() {
    let dir = temp("float");
    let src = dir.join("m.Q4_1.gguf");
    let (deq, vec) = write_q4_1_gguf(&src);
    for (float, matrix_type, ftype) in [
        (float_gguf::FloatType::F32, GgmlDType::F32, 0),
        (float_gguf::FloatType::F16, GgmlDType::F16, 1),
    ] {
        let out = dir.join(format!("m-{float:?}.gguf"));
        let w = float_gguf::write_float(&src, float, &out).unwrap();
        assert_eq!(w.tensors, 2);
        let (c, mut f) = read_gguf(&out);
        assert_eq!(c.metadata["general.file_type"].to_u32().unwrap(), ftype);
        assert!(!c.metadata.contains_key("general.alignment"));
        let toks = c.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        assert_eq!(toks.len(), VOCAB);
        assert_eq!(toks[5].to_string().unwrap(), &tokens()[5]);
        let m = c
            .tensor(&mut f, "blk.0.ffn_down.weight", &Device::Cpu)
            .unwrap();
        assert_eq!(m.dtype(), matrix_type);
        assert_eq!(m.shape().dims(), &[2, 64]);
        let got: Vec<f32> = m
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = deq.flatten_all().unwrap().to_vec1().unwrap();
        let tol = if float == float_gguf::FloatType::F32 {
            0.0
        } else {
            1e-3
        };
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= tol, "{g} vs {w} ({float:?})");
        }
        let v = c
            .tensor(&mut f, "blk.0.ffn_norm.weight", &Device::Cpu)
            .unwrap();
        assert_eq!(v.dtype(), GgmlDType::F32, "vectors stay f32");
        let v: Vec<f32> = v.dequantize(&Device::Cpu).unwrap().to_vec1().unwrap();
        assert_eq!(v, vec.to_vec1::<f32>().unwrap());
        let facts = float_gguf::tensor_facts(&out).unwrap();
        assert_eq!(facts.parameters, 192);
        assert_eq!(facts.file_type, Some(ftype as u64));
    }
    // the source: 128 Q4_1 weights in 4 blocks of 20 bytes, 64 f32
    let facts = float_gguf::tensor_facts(&src).unwrap();
    assert_eq!(facts.weight_bytes, 4 * 20 + 64 * 4);
    assert_eq!(
        facts.types,
        vec![("Q4_1".to_string(), 128), ("F32".to_string(), 64)]
    );
    assert_eq!(facts.file_type, Some(3));
    // a truncated source is named
    let bytes = std::fs::read(&src).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let e = float_gguf::write_float(&cut, float_gguf::FloatType::F32, &dir.join("x.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    assert!(!dir.join("x.gguf").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
