use super::*;
use engine_api::ErrorKind;

const VOCAB: usize = 8;
const CONTEXT: usize = 2 * MAX_PREFILL_TOKENS;

/// A cache is the tokens it holds; a logits row is `[last token, cache
/// length, 0, ...]`, so tests can see which row went where.
#[derive(Default)]
struct Recorder {
    /// (kind, batch size, prompt length) of each kernel call.
    calls: Vec<(&'static str, usize, usize)>,
    released: Vec<Vec<u32>>,
    fail_prefill_call: Option<usize>,
    short_logits: bool,
    fail_decode: bool,
    spare: u64,
    /// Refuse `fork` (an engine without a prefix cache).
    no_fork: bool,
}

fn row(out: &mut Vec<f32>, tokens: &[u32]) {
    let start = out.len();
    out.resize(start + VOCAB, 0.0);
    out[start] = *tokens.last().unwrap() as f32;
    out[start + 1] = tokens.len() as f32;
}

impl Kernels for Recorder {
    type Cache = Vec<u32>;

    fn limits(&self) -> Limits {
        Limits {
            vocab: VOCAB,
            context: CONTEXT,
            eos: Some(7),
        }
    }
    fn weight_bytes(&self) -> u64 {
        1000
    }
    fn prefill(
        &mut self,
        prompts: &[&[u32]],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<Vec<u32>>, EngineError> {
        self.calls
            .push(("prefill", prompts.len(), prompts[0].len()));
        assert!(prompts.iter().all(|p| p.len() == prompts[0].len()));
        if self.fail_prefill_call == Some(self.calls.len()) {
            return Err(EngineError::runtime("out of memory"));
        }
        logits.clear();
        prompts.iter().for_each(|p| row(logits, p));
        if self.short_logits {
            logits.pop();
        }
        Ok(prompts.iter().map(|p| p.to_vec()).collect())
    }
    fn decode(
        &mut self,
        tokens: &[u32],
        caches: &mut [&mut Vec<u32>],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.calls.push(("decode", tokens.len(), 1));
        if self.fail_decode {
            return Err(EngineError::runtime("device lost"));
        }
        logits.clear();
        for (t, c) in tokens.iter().zip(caches.iter_mut()) {
            c.push(*t);
            row(logits, c);
        }
        if self.short_logits {
            logits.pop();
        }
        Ok(())
    }
    fn score(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        self.calls.push(("score", 1, tokens.len()));
        logits.clear();
        (1..=tokens.len()).for_each(|n| row(logits, &tokens[..n]));
        if self.short_logits {
            logits.pop();
        }
        Ok(())
    }
    fn cache_bytes(&self, c: &Vec<u32>) -> CacheBytes {
        CacheBytes {
            used: c.len() as u64 * 10,
            reserved: c.len().next_power_of_two() as u64 * 10,
        }
    }
    fn spare_cache_bytes(&self) -> u64 {
        self.spare
    }
    fn release(&mut self, c: Vec<u32>) {
        self.released.push(c);
    }
    fn can_fork(&self) -> bool {
        !self.no_fork
    }
    fn fork(&mut self, c: &Vec<u32>, len: usize) -> Result<Vec<u32>, EngineError> {
        self.calls.push(("fork", 1, len));
        Ok(c[..len].to_vec())
    }
    fn extend(
        &mut self,
        c: &mut Vec<u32>,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.calls.push(("extend", 1, tokens.len()));
        c.extend_from_slice(tokens);
        logits.clear();
        row(logits, c);
        Ok(())
    }
}

fn table() -> Sequences<Recorder> {
    Sequences::new(Recorder::default())
}

/// Column `col` of each logits row.
fn col(logits: &[f32], col: usize) -> Vec<f32> {
    logits.chunks(VOCAB).map(|r| r[col]).collect()
}

#[test]
fn prefill_groups_equal_lengths_and_returns_rows_in_the_callers_order() {
    let mut s = table();
    let (a, b, c, d) = ([1u32, 2], [3u32], [4u32, 5], [6u32]);
    let seqs: Vec<(SeqId, &[u32])> = vec![(10, &a), (11, &b), (12, &c), (13, &d)];
    let mut logits = Vec::new();
    s.prefill(&seqs, &mut logits).unwrap();
    // Two kernel calls: the length-2 prompts, then the length-1 ones.
    assert_eq!(s.kernels().calls, [("prefill", 2, 2), ("prefill", 2, 1)]);
    assert_eq!(col(&logits, 0), [2.0, 3.0, 5.0, 6.0]);
    assert_eq!(s.live(), 4);
    assert_eq!(s.len_of(12), Some(2));
    assert_eq!(s.len_of(13), Some(1));
}

#[test]
fn prefill_chunks_stay_within_max_prefill_tokens() {
    let mut s = table();
    let long = vec![1u32; MAX_PREFILL_TOKENS / 2 + 1];
    let seqs: Vec<(SeqId, &[u32])> = (0..3).map(|i| (i, long.as_slice())).collect();
    let mut logits = Vec::new();
    s.prefill(&seqs, &mut logits).unwrap();
    // Two such prompts exceed the budget: one per call.
    assert_eq!(s.kernels().calls.len(), 3);
    assert!(s.kernels().calls.iter().all(|c| c.1 == 1));
    // A single prompt longer than the budget still runs, alone.
    let longer = vec![2u32; MAX_PREFILL_TOKENS + 1];
    s.prefill(&[(9, &longer)], &mut logits).unwrap();
    assert_eq!(s.kernels().calls[3], ("prefill", 1, MAX_PREFILL_TOKENS + 1));
    assert_eq!(prefill_chunks(&seqs), vec![vec![0], vec![1], vec![2]]);
}

#[test]
fn bad_prompts_are_refused_before_any_kernel_runs() {
    let mut s = table();
    let mut logits = Vec::new();
    let too_long = vec![1u32; CONTEXT + 1];
    type Prefill<'a> = Vec<(SeqId, &'a [u32])>;
    let cases: Vec<(Prefill, &str)> = vec![
        (vec![(1, &[])], "sequence 1: empty prompt"),
        (vec![(1, &too_long)], "the model takes 1..="),
        (
            vec![(1, &[1]), (2, &[3, 8])],
            "sequence 2: token 1 is 8, outside the vocabulary of 8",
        ),
        (vec![(1, &[1]), (1, &[2])], "sequence 1 already exists"),
    ];
    for (seqs, needle) in cases {
        let e = s.prefill(&seqs, &mut logits).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.contains(needle), "{needle:?} not in {e}");
    }
    s.prefill(&[(1, &[1])], &mut logits).unwrap();
    let e = s.prefill(&[(1, &[2])], &mut logits).unwrap_err();
    assert!(e.message.contains("sequence 1 already exists"), "{e}");
    assert_eq!(s.kernels().calls.len(), 1);
}

#[test]
fn decode_hands_the_kernels_each_cache_in_the_callers_order() {
    let mut s = table();
    let mut logits = Vec::new();
    s.prefill(&[(1, &[1]), (2, &[2, 2]), (3, &[3])], &mut logits)
        .unwrap();
    s.decode(&[(3, 4), (1, 5)], &mut logits).unwrap();
    assert_eq!(col(&logits, 0), [4.0, 5.0]);
    assert_eq!(col(&logits, 1), [2.0, 2.0]);
    s.decode(&[(2, 6), (3, 1)], &mut logits).unwrap();
    assert_eq!(col(&logits, 1), [3.0, 3.0]);
    assert_eq!(
        (s.len_of(1), s.len_of(2), s.len_of(3)),
        (Some(2), Some(3), Some(3))
    );
    s.decode(&[], &mut logits).unwrap();
    assert!(logits.is_empty());
}

#[test]
fn bad_decodes_are_refused_and_leave_the_table_intact() {
    let mut s = table();
    let mut logits = Vec::new();
    let full = vec![1u32; CONTEXT];
    s.prefill(&[(1, &[1]), (2, &full)], &mut logits).unwrap();
    let calls = s.kernels().calls.len();
    let cases: [(&[(SeqId, u32)], &str); 4] = [
        (&[(1, 1), (9, 1)], "decode of unknown sequence 9"),
        (&[(1, 1), (1, 2)], "sequence 1 appears twice"),
        (
            &[(1, 8)],
            "sequence 1: token 0 is 8, outside the vocabulary of 8",
        ),
        (&[(2, 1)], "fill the model's context of"),
    ];
    for (seqs, needle) in cases {
        let e = s.decode(seqs, &mut logits).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(e.message.contains(needle), "{needle:?} not in {e}");
    }
    assert_eq!(s.kernels().calls.len(), calls, "no kernel ran");
    assert_eq!((s.live(), s.len_of(1)), (2, Some(1)));
}

#[test]
fn a_failed_decode_puts_every_cache_back_and_free_releases_it() {
    let mut s = table();
    let mut logits = Vec::new();
    s.prefill(&[(1, &[1]), (2, &[2])], &mut logits).unwrap();
    s.kernels.fail_decode = true;
    let e = s.decode(&[(1, 3), (2, 3)], &mut logits).unwrap_err();
    assert!(e.message.contains("device lost"), "{e}");
    assert_eq!((s.live(), s.len_of(1)), (2, Some(1)), "length unchanged");
    s.free(1);
    s.free(1);
    s.free(42);
    assert_eq!(s.kernels().released, [vec![1]]);
    assert_eq!(s.live(), 1);
}

#[test]
fn wrong_shapes_from_the_kernels_are_runtime_errors() {
    let mut s = table();
    let mut logits = Vec::new();
    s.prefill(&[(1, &[1])], &mut logits).unwrap();
    s.kernels.short_logits = true;
    let e = s.prefill(&[(2, &[1])], &mut logits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert!(
        e.message.contains("prefill of 1 prompts returned 7 logits"),
        "{e}"
    );
    assert_eq!(s.kernels().released, [vec![1]], "the new cache is released");
    let e = s.decode(&[(1, 1)], &mut logits).unwrap_err();
    assert!(
        e.message
            .contains("decode of 1 sequences returned 7 logits"),
        "{e}"
    );
    let e = s.score(&[1, 2]).map(|_| ()).unwrap_err();
    assert!(
        e.message.contains("score of 2 tokens returned 15 logits"),
        "{e}"
    );
    assert_eq!(s.live(), 1);
}

#[test]
fn a_failed_prefill_chunk_releases_the_caches_of_earlier_chunks() {
    let mut s = table();
    s.kernels.fail_prefill_call = Some(2);
    let mut logits = Vec::new();
    let e = s
        .prefill(&[(1, &[1, 1]), (2, &[2])], &mut logits)
        .unwrap_err();
    assert!(e.message.contains("out of memory"), "{e}");
    assert_eq!(s.kernels().released, [vec![1, 1]]);
    assert_eq!(s.live(), 0);
    // The ids are free again.
    s.kernels.fail_prefill_call = None;
    s.prefill(&[(1, &[1]), (2, &[2])], &mut logits).unwrap();
}

#[test]
fn memory_is_weights_plus_live_caches_plus_spare() {
    let mut s = table();
    s.kernels.spare = 7;
    let mut logits = Vec::new();
    s.prefill(&[(1, &[1, 1, 1]), (2, &[2])], &mut logits)
        .unwrap();
    let m = s.memory();
    assert_eq!(m.weight_bytes, 1000);
    assert_eq!(m.kv_cache_used_bytes, 40);
    assert_eq!(m.kv_cache_reserved_bytes, 40 + 10 + 7);
    assert_eq!(m.kv_cache_peak_bytes, 40);
    s.free(1);
    assert_eq!(s.memory().kv_cache_used_bytes, 10);
}

#[test]
fn score_is_validated_once_for_every_engine() {
    let mut s = table();
    let l = s.score(&[1, 2, 3]).unwrap();
    assert_eq!((l.rows, l.vocab), (3, VOCAB as u32));
    assert_eq!(col(&l.data, 1), [1.0, 2.0, 3.0]);
    for (tokens, needle) in [
        (vec![], "score needs 1..="),
        (vec![1u32; CONTEXT + 1], "score needs 1..="),
        (
            vec![1, 9],
            "score: token 1 is 9, outside the vocabulary of 8",
        ),
    ] {
        let e = s.score(&tokens).map(|_| ()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains(needle), "{needle:?} not in {e}");
    }
    assert_eq!(s.kernels().calls.len(), 1);
}

#[test]
fn warm_up_leaves_no_sequence_behind() {
    let s = Sequences::warmed(Recorder::default()).unwrap();
    assert_eq!(s.live(), 0);
    assert_eq!(s.kernels().calls, [("prefill", 1, 8), ("decode", 1, 1)]);
    assert_eq!(s.kernels().released.len(), 1);
}

fn cached_table(block: usize, mib: u64) -> Sequences<Recorder> {
    let mut s = table();
    s.set_prefix_cache(Some(PrefixCacheConfig {
        block_tokens: block,
        max_bytes: mib << 20,
    }))
    .unwrap();
    s
}

#[test]
fn a_prefix_cache_hit_computes_only_the_new_tokens_and_gives_the_cold_rows() {
    let mut s = cached_table(4, 1);
    let cold: Vec<u32> = (0..10).map(|i| i % 8).collect();
    let mut warm = cold[..8].to_vec();
    warm.extend([6, 5]);
    let mut logits = Vec::new();
    s.prefill(&[(1, &cold)], &mut logits).unwrap();
    // a miss: one prefill, then its two full blocks copied into the store
    assert_eq!(s.kernels().calls, [("prefill", 1, 10), ("fork", 1, 8)]);
    assert_eq!(s.cached_prompt_tokens(1), 0);
    let stored = s.memory().prefix_cache_bytes;
    assert_eq!(stored, 80, "8 positions, reserved as 8 * 10 bytes");
    s.kernels.calls.clear();
    let mut rows = Vec::new();
    s.prefill(&[(2, &warm)], &mut rows).unwrap();
    // a hit of both blocks: a copy of 8 positions, 2 computed; its deepest
    // block is stored already, so nothing more is copied in
    assert_eq!(s.kernels().calls, [("fork", 1, 8), ("extend", 1, 2)]);
    assert_eq!(s.cached_prompt_tokens(2), 8);
    assert_eq!(s.len_of(2), Some(10));
    // the row a cold prefill of the same prompt gives
    let mut cold_rows = Vec::new();
    table().prefill(&[(2, &warm)], &mut cold_rows).unwrap();
    assert_eq!(rows, cold_rows);
    // and the sequences decode on as cold ones do
    s.decode(&[(2, 3)], &mut rows).unwrap();
    assert_eq!(col(&rows, 1), [11.0]);
    let m = s.memory();
    assert_eq!(m.prefix_cache_bytes, stored);
    assert_eq!(
        m.kv_cache_reserved_bytes,
        160 + 160 + stored,
        "live caches (10 and 11 positions -> 16 reserved) plus the store"
    );
}

#[test]
fn hits_and_misses_of_one_batch_keep_the_callers_row_order() {
    let mut s = cached_table(2, 1);
    let mut logits = Vec::new();
    s.prefill(&[(1, &[1, 2, 3, 4])], &mut logits).unwrap();
    s.kernels.calls.clear();
    let (a, b, c) = ([1u32, 2, 3, 4, 5], [6u32, 6, 6], [1u32, 2, 7]);
    s.prefill(&[(2, &a), (3, &b), (4, &c)], &mut logits)
        .unwrap();
    assert_eq!(col(&logits, 0), [5.0, 6.0, 7.0]);
    assert_eq!(col(&logits, 1), [5.0, 3.0, 3.0]);
    let cached: Vec<u32> = (2..5).map(|i| s.cached_prompt_tokens(i)).collect();
    assert_eq!(cached, [4, 0, 2]);
    assert_eq!(
        s.kernels().calls[0],
        ("prefill", 1, 3),
        "the miss, batched first"
    );
}

#[test]
fn the_prefix_cache_needs_fork_and_turning_it_off_releases_the_store() {
    let mut s = Sequences::new(Recorder {
        no_fork: true,
        ..Recorder::default()
    });
    let e = s
        .set_prefix_cache(Some(PrefixCacheConfig::default()))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("prefix_cache"), "{e}");
    let mut s = cached_table(2, 1);
    let mut logits = Vec::new();
    s.prefill(&[(1, &[1, 2, 3])], &mut logits).unwrap();
    assert_eq!(s.prefix_cache().map(|p| p.len()), Some(1));
    s.set_prefix_cache(None).unwrap();
    assert_eq!(s.kernels().released, [vec![1, 2]]);
    assert_eq!(s.memory().prefix_cache_bytes, 0);
    // without the cache nothing is copied
    s.kernels.calls.clear();
    s.prefill(&[(2, &[1, 2, 3])], &mut logits).unwrap();
    assert_eq!(s.kernels().calls, [("prefill", 1, 3)]);
}
