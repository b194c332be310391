//! SentencePiece tokenizers rebuilt from GGUF metadata (llama.cpp's
//! tokenizer model `llama`: Llama 2, TinyLlama), against llama.cpp itself.
//!
//! The test writes a tiny Llama GGUF (one layer, random f32 weights)
//! whose `tokenizer.ggml.*` metadata is a synthetic SentencePiece
//! vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0xXX>`,
//! single characters, `▁`-prefixed and multi-character pieces whose
//! scores make merging by score differ from merging left to right, and a
//! user-defined token. `engine-matrix model import` turns it into a
//! Hugging Face folder; the provisioned `llama-server` (`scripts/provision`,
//! found through `scripts/provision --print`, as in `llama_server.rs`)
//! serves the same file, and its `/tokenize` (with special tokens) must
//! give the ids the imported `tokenizer.json` gives, for hand-picked and
//! random strings.

use engine_matrix_text::TextModel;
use integration_tests::*;
use std::path::Path;

/// Single characters (their scores do not matter: only merged pieces'
/// scores order merges).
const CHARS: &str = "▁abcdefhlorwxyz";

/// Merged pieces and their scores, listed (so numbered) lowest score
/// first: ids do not give the merge order, scores do. `yz` outranks `xy`
/// and `ab` outranks `▁a`, so that merging by score differs from merging
/// left to right.
const PIECES: [(&str, f32); 18] = [
    ("bc", -30.0),
    ("▁x", -25.0),
    ("xy", -20.0),
    ("yz", -19.0),
    ("▁a", -14.0),
    ("abc", -13.0),
    ("ab", -12.0),
    ("▁world", -11.0),
    ("ld", -10.0),
    ("▁wor", -9.0),
    ("or", -8.0),
    ("▁w", -7.0),
    ("▁hello", -6.0),
    ("hello", -5.0),
    ("hell", -4.0),
    ("▁▁", -3.0),
    ("ll", -2.0),
    ("he", -1.0),
];

/// Tokens, scores and GGUF token types (2 unknown, 3 control, 6 byte,
/// 1 normal, 4 user-defined), in id order.
fn vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut t: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
    ];
    t.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    t.extend(
        CHARS
            .chars()
            .enumerate()
            .map(|(i, c)| (c.to_string(), -100.0 - i as f32, 1)),
    );
    t.extend(PIECES.iter().map(|(p, s)| (p.to_string(), *s, 1)));
    t.push(("<tool>".into(), 0.0, 4));
    (
        t.iter().map(|x| x.0.clone()).collect(),
        t.iter().map(|x| x.1).collect(),
        t.iter().map(|x| x.2).collect(),
    )
}

// ---------------------------------------------------------------------------
// A GGUF (version 3) writer: just what the tiny model needs.

/// A metadata value.
enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Meta {
    /// GGUF's `gguf_type` of the value.
    fn put(&self, out: &mut Vec<u8>) {
        const U32: u32 = 4;
        const I32: u32 = 5;
        const F32: u32 = 6;
        const BOOL: u32 = 7;
        const STRING: u32 = 8;
        const ARRAY: u32 = 9;
        let array = |out: &mut Vec<u8>, ty: u32, n: usize| {
            out.extend(ARRAY.to_le_bytes());
            out.extend(ty.to_le_bytes());
            out.extend((n as u64).to_le_bytes());
        };
        match self {
            Meta::U32(x) => {
                out.extend(U32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::F32(x) => {
                out.extend(F32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::Bool(b) => {
                out.extend(BOOL.to_le_bytes());
                out.push(*b as u8);
            }
            Meta::Str(s) => {
                out.extend(STRING.to_le_bytes());
                put_str(out, s);
            }
            Meta::Strs(v) => {
                array(out, STRING, v.len());
                v.iter().for_each(|s| put_str(out, s));
            }
            Meta::F32s(v) => {
                array(out, F32, v.len());
                v.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
            Meta::I32s(v) => {
                array(out, I32, v.len());
                v.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
        }
    }
}

/// Writes a GGUF of `metadata` and f32 `tensors` (name, ggml dims with
/// the innermost first, values), aligned to 32 bytes.
fn write_gguf(path: &Path, metadata: &[(&str, Meta)], tensors: &[(String, Vec<u64>, Vec<f32>)]) {
    const ALIGN: usize = 32;
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        v.put(&mut out);
    }
    let mut offset = 0usize;
    for (name, dims, values) in tensors {
        assert_eq!(
            dims.iter().product::<u64>() as usize,
            values.len(),
            "{name}"
        );
        put_str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(0u32.to_le_bytes()); // GGML_TYPE_F32
        out.extend((offset as u64).to_le_bytes());
        offset += (values.len() * 4).div_ceil(ALIGN) * ALIGN;
    }
    let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    pad(&mut out);
    for (_, _, values) in tensors {
        values.iter().for_each(|x| out.extend(x.to_le_bytes()));
        pad(&mut out);
    }
    std::fs::write(path, out).expect("write the GGUF");
}

// ---------------------------------------------------------------------------

const EMBD: u64 = 32;
const HEADS: u32 = 4;
const KV_HEADS: u32 = 2;
const FF: u64 = 64;

/// Deterministic pseudo-random numbers (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [-0.05, 0.05).
    fn weight(&mut self) -> f32 {
        (self.next() % 1000) as f32 / 10_000.0 - 0.05
    }
}

/// A one-layer Llama with random weights and the vocabulary of
/// [`vocab`], as llama.cpp's converter names and lays it out.
fn write_tiny_llama(path: &Path) {
    let (tokens, scores, types) = vocab();
    let vocab_size = tokens.len() as u64;
    let head_dim = EMBD / HEADS as u64;
    let kv = head_dim * KV_HEADS as u64;
    let mut rng = Lcg(2);
    let mut tensor = |name: &str, dims: &[u64]| {
        let n = dims.iter().product::<u64>() as usize;
        let values = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| rng.weight()).collect()
        };
        (name.to_string(), dims.to_vec(), values)
    };
    let tensors = vec![
        tensor("token_embd.weight", &[EMBD, vocab_size]),
        tensor("output_norm.weight", &[EMBD]),
        tensor("output.weight", &[EMBD, vocab_size]),
        tensor("blk.0.attn_norm.weight", &[EMBD]),
        tensor("blk.0.attn_q.weight", &[EMBD, EMBD]),
        tensor("blk.0.attn_k.weight", &[EMBD, kv]),
        tensor("blk.0.attn_v.weight", &[EMBD, kv]),
        tensor("blk.0.attn_output.weight", &[EMBD, EMBD]),
        tensor("blk.0.ffn_norm.weight", &[EMBD]),
        tensor("blk.0.ffn_gate.weight", &[EMBD, FF]),
        tensor("blk.0.ffn_up.weight", &[EMBD, FF]),
        tensor("blk.0.ffn_down.weight", &[FF, EMBD]),
    ];
    let metadata = [
        ("general.architecture", Meta::Str("llama".into())),
        ("general.name", Meta::Str("tiny-spm".into())),
        ("general.file_type", Meta::U32(0)),
        ("llama.block_count", Meta::U32(1)),
        ("llama.context_length", Meta::U32(256)),
        ("llama.embedding_length", Meta::U32(EMBD as u32)),
        ("llama.feed_forward_length", Meta::U32(FF as u32)),
        ("llama.attention.head_count", Meta::U32(HEADS)),
        ("llama.attention.head_count_kv", Meta::U32(KV_HEADS)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.rope.dimension_count", Meta::U32(head_dim as u32)),
        ("llama.rope.freq_base", Meta::F32(10000.0)),
        ("llama.vocab_size", Meta::U32(vocab_size as u32)),
        ("tokenizer.ggml.model", Meta::Str("llama".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.scores", Meta::F32s(scores)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Meta::U32(0)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Meta::Bool(false)),
    ];
    write_gguf(path, &metadata, &tensors);
}

/// llama.cpp's ids of `content`, with its special tokens (BOS) added and
/// special tokens in the text parsed.
fn llama_cpp_ids(server: &LlamaServer, content: &str) -> Vec<u32> {
    let body = serde_json::json!({"content": content, "add_special": true}).to_string();
    let r = http(server.port, "POST", "/tokenize", Some(body.as_bytes()));
    assert_eq!(r.status, 200, "/tokenize: {}", r.text());
    serde_json::from_value(r.json()["tokens"].clone()).expect("token ids")
}

/// Random strings over the vocabulary's letters, spaces, characters
/// outside it (their bytes' tokens) and newlines.
fn random_texts(n: usize) -> Vec<String> {
    let alphabet: Vec<char> = "abcdehlorwxyz   é東\n!".chars().collect();
    let mut rng = Lcg(18);
    (0..n)
        .map(|_| {
            let len = rng.below(24);
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect()
        })
        .collect()
}

#[test]
fn sentencepiece_tokenizer_imported_from_a_gguf_matches_llama_cpp() {
    let tmp = TempDir::new("spm-tokenizer");
    let gguf = tmp.path().join("tiny-spm.gguf");
    write_tiny_llama(&gguf);
    let out = tmp.path().join("tiny-spm");
    import_gguf(
        &gguf,
        &out,
        "SentencePiece BPE with byte fallback (tokenizer model llama)",
    );
    let ours = TextModel::load(&out).unwrap().expect("tokenizer.json");
    let server = LlamaServer::start(&gguf, &["-c", "256", "-t", "1"]);

    let picked = [
        "hello world",
        "  hello",
        "hello   world",
        "xyz",
        "abc",
        "bc ab",
        " ",
        "",
        "café 東京 🙂\n\n!",
        "<s>hello</s>",
        "hello<tool> world",
        "<unk> x",
        "\n  trailing  ",
    ];
    let random = random_texts(300);
    let mut checked = 0;
    for t in picked
        .iter()
        .copied()
        .chain(random.iter().map(String::as_str))
    {
        let want = llama_cpp_ids(&server, t);
        let got = ours.encode(t, true).unwrap();
        assert_eq!(got, want, "{t:?}: ours vs llama.cpp's ids");
        if !t.contains('<') {
            assert_eq!(ours.decode(&got, true).unwrap(), t, "{t:?}: round trip");
        }
        checked += 1;
    }
    assert_eq!(checked, picked.len() + 300);
    // the picked strings exercise what they are meant to: merging by
    // score ("xyz": yz before xy), byte fallback, BOS
    assert_eq!(
        ours.encode("xyz", true).unwrap(),
        [1, token(&ours, "▁x"), token(&ours, "yz")]
    );
    assert!(ours
        .encode("é", false)
        .unwrap()
        .contains(&token(&ours, "<0xC3>")));
}

/// The id of `piece` in `t`'s vocabulary.
fn token(t: &TextModel, piece: &str) -> u32 {
    t.tokenizer()
        .token_to_id(piece)
        .unwrap_or_else(|| panic!("{piece:?} is not a token"))
}
