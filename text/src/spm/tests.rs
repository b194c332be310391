//! The SPM tokenizer against a small synthetic vocabulary: exact ids for
//! hand-checked strings, and every id of random strings against a naive
//! SPM tokenizer written here from llama.cpp's algorithm (merge the
//! highest-scoring adjacent pair, leftmost on a tie, bytes for the rest).

use super::*;
use crate::{Detokenizer, TextModel};
use std::str::FromStr;

const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;

/// Single characters (scores too low to matter: only merged tokens'
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

/// The user-defined token (GGUF type 4).
const TOOL: &str = "<tool>";

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, the characters, the
/// merged pieces, `<tool>`; as a GGUF's `tokenizer.ggml.tokens` would
/// list them.
pub(super) fn vocab() -> SentencePiece {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut scores = vec![0.0; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
    }
    for (i, c) in CHARS.chars().enumerate() {
        tokens.push(c.to_string());
        scores.push(-100.0 - i as f32);
    }
    for (p, s) in PIECES {
        tokens.push(p.to_string());
        scores.push(s);
    }
    tokens.push(TOOL.into());
    scores.push(0.0);
    SentencePiece {
        added: vec![tokens.len() as u32 - 1],
        tokens,
        scores,
        special: vec![UNK, BOS, EOS],
        unk: Some(UNK),
        bos: Some(BOS),
        eos: None,
        add_space_prefix: true,
    }
}

fn id(v: &SentencePiece, piece: &str) -> u32 {
    v.tokens
        .iter()
        .position(|t| t == piece)
        .unwrap_or_else(|| panic!("{piece:?} is not in the vocabulary")) as u32
}

fn ids(v: &SentencePiece, pieces: &[&str]) -> Vec<u32> {
    pieces.iter().map(|p| id(v, p)).collect()
}

/// llama.cpp's SPM tokenization of `text` (no special tokens in it),
/// naively: quadratic, but the same merge order.
fn reference(v: &SentencePiece, text: &str) -> Vec<u32> {
    if text.is_empty() {
        return vec![];
    }
    let index: HashMap<&str, u32> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let prefixed = if v.add_space_prefix {
        format!(" {text}")
    } else {
        text.to_string()
    };
    let mut symbols: Vec<String> = prefixed
        .replace(' ', SPACE)
        .chars()
        .map(String::from)
        .collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..symbols.len().saturating_sub(1) {
            let joined = format!("{}{}", symbols[i], symbols[i + 1]);
            if let Some(&t) = index.get(joined.as_str()) {
                let s = v.scores[t as usize];
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = symbols.remove(i + 1);
        symbols[i].push_str(&right);
    }
    symbols
        .iter()
        .flat_map(|s| match index.get(s.as_str()) {
            Some(&t) => vec![t],
            None => s
                .bytes()
                .map(|b| index[format!("<0x{b:02X}>").as_str()])
                .collect(),
        })
        .collect()
}

/// A deterministic pseudo-random generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Random strings over the vocabulary's letters, spaces, characters
/// outside it (bytes) and a newline.
fn random_texts(n: usize) -> Vec<String> {
    let alphabet: Vec<char> = "abcdehlorwxyz  é東\n!".chars().collect();
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

fn built() -> (SentencePiece, Tokenizer) {
    let v = vocab();
    let tk = v.build("test vocabulary").unwrap();
    (v, tk)
}

fn encode(tk: &Tokenizer, text: &str, special: bool) -> Vec<u32> {
    tk.encode(text, special).unwrap().get_ids().to_vec()
}

#[test]
fn the_reference_merges_by_score_not_left_to_right() {
    let v = vocab();
    // "▁xyz": yz (-19) before xy (-20) and ▁x (-25)
    assert_eq!(reference(&v, "xyz"), ids(&v, &["▁x", "yz"]));
    // "▁abc": ab (-12) before ▁a (-14), then abc
    assert_eq!(reference(&v, "abc"), ids(&v, &["▁", "abc"]));
}

#[test]
fn merges_are_every_split_ranked_by_the_merged_score() {
    let v = vocab();
    let m = v.merges();
    let pair = |l: &str, r: &str| (l.to_string(), r.to_string());
    assert_eq!(m[0], pair("h", "e"));
    let rank = |l: &str, r: &str| m.iter().position(|x| *x == pair(l, r)).unwrap();
    assert!(rank("y", "z") < rank("x", "y"));
    assert!(rank("a", "b") < rank("a", "bc"));
    assert!(rank("a", "bc") < rank("▁", "a"));
    // both splits of "abc" and of "▁hello", nothing from a byte token
    assert!(m.contains(&pair("ab", "c")) && m.contains(&pair("a", "bc")));
    assert!(m.contains(&pair("▁", "hello")) && !m.contains(&pair("▁he", "llo")));
    assert!(m
        .iter()
        .all(|(l, r)| !l.starts_with("<0x") && !r.starts_with("<0x")));
}

#[test]
fn spm_tokenizer_gives_the_exact_ids_llama_cpp_would() {
    let (v, tk) = built();
    let cases: &[(&str, &[&str])] = &[
        ("hello world", &["<s>", "▁hello", "▁world"]),
        // two leading spaces: three ▁, the leftmost pair merges first
        ("  hello", &["<s>", "▁▁", "▁hello"]),
        ("hello   world", &["<s>", "▁hello", "▁▁", "▁world"]),
        ("xyz", &["<s>", "▁x", "yz"]),
        ("abc", &["<s>", "▁", "abc"]),
        ("bc ab", &["<s>", "▁", "bc", "▁", "ab"]),
        (" ", &["<s>", "▁▁"]),
        ("", &["<s>"]),
        (
            "café 東\n",
            &[
                "<s>", "▁", "c", "a", "f", "<0xC3>", "<0xA9>", "▁", "<0xE6>", "<0x9D>", "<0xB1>",
                "<0x0A>",
            ],
        ),
        // special and user-defined tokens are matched whole, and the text
        // after each gets its own ▁ (llama.cpp's is_prev_special)
        ("<s>hello</s>", &["<s>", "<s>", "▁hello", "</s>"]),
        (
            "hello<tool> world",
            &["<s>", "▁hello", TOOL, "▁▁", "w", "or", "ld"],
        ),
        ("<unk>", &["<s>", "<unk>"]),
    ];
    for (text, want) in cases {
        assert_eq!(encode(&tk, text, true), ids(&v, want), "{text:?}");
        let plain = &ids(&v, want)[1..];
        assert_eq!(encode(&tk, text, false), plain, "{text:?} without BOS");
        if !text.contains('<') {
            assert_eq!(reference(&v, text), plain, "{text:?}: the reference");
        }
    }
}

#[test]
fn spm_tokenizer_matches_the_reference_on_random_text_and_round_trips() {
    let (v, tk) = built();
    // what the importer writes and `TextModel` reads back
    let json = tk.to_string(true).unwrap();
    let reloaded = Tokenizer::from_str(&json).unwrap();
    for text in random_texts(400) {
        let want = reference(&v, &text);
        assert_eq!(encode(&tk, &text, false), want, "{text:?}");
        assert_eq!(encode(&reloaded, &text, false), want, "{text:?} reloaded");
        assert_eq!(tk.decode(&want, false).unwrap(), text, "{text:?}: decode");
    }
}

#[test]
fn spm_decoding_restores_spaces_and_bytes_and_skips_specials() {
    let (v, tk) = built();
    let with = ids(
        &v,
        &["<s>", "▁hello", "▁▁", "▁world", "<0xC3>", "<0xA9>", "</s>"],
    );
    assert_eq!(tk.decode(&with, true).unwrap(), "hello   worldé");
    assert_eq!(tk.decode(&with, false).unwrap(), "<s> hello   worldé</s>");
}

#[test]
fn spm_streaming_detokenization_gives_the_text_whole_characters_at_a_time() {
    let (_, tk) = built();
    let t = TextModel::new(tk, None, "tokenizer.json".into());
    let text = "hello  world 東 xyz é";
    let ids = t.encode(text, true).unwrap();
    let mut stream = Detokenizer::new(true);
    let pieces: Vec<String> = ids.iter().map(|&i| stream.step(&t, i).unwrap()).collect();
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
}

#[test]
fn spm_without_space_prefix_or_bos_and_with_eos() {
    let mut v = vocab();
    v.add_space_prefix = false;
    v.bos = None;
    v.eos = Some(EOS);
    let tk = v.build("test vocabulary").unwrap();
    assert_eq!(
        encode(&tk, "hello world", true),
        ids(&v, &["hello", "▁world", "</s>"])
    );
    assert_eq!(reference(&v, "hello world"), ids(&v, &["hello", "▁world"]));
    assert_eq!(
        tk.decode(&encode(&tk, " a b", false), false).unwrap(),
        " a b"
    );
}

#[test]
fn spm_vocabulary_errors_name_the_source() {
    let mut v = vocab();
    v.scores.pop();
    let e = v.build("x.gguf").unwrap_err().to_string();
    assert!(e.starts_with("x.gguf: ") && e.contains("scores"), "{e}");
    let mut v = vocab();
    v.tokens[5] = "a".into();
    let e = v.build("x.gguf").unwrap_err().to_string();
    assert!(e.contains("distinct"), "{e}");
}
