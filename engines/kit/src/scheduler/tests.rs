use super::*;
use crate::testing::Collect;
use std::collections::HashMap;
use std::time::Duration;

/// Deterministic backend: the next token is always `last + 1 (mod vocab)`.
struct Toy {
    vocab: usize,
    seqs: HashMap<SeqId, usize>,
    log: Arc<Mutex<Vec<(&'static str, usize)>>>,
    panic_on_decode: bool,
    step_delay: Duration,
}

impl Toy {
    fn new(log: Arc<Mutex<Vec<(&'static str, usize)>>>) -> Self {
        Toy {
            vocab: 16,
            seqs: HashMap::new(),
            log,
            panic_on_decode: false,
            step_delay: Duration::ZERO,
        }
    }
    fn one_hot(&self, logits: &mut Vec<f32>, last: u32) {
        let start = logits.len();
        logits.resize(start + self.vocab, 0.0);
        logits[start + (last as usize + 1) % self.vocab] = 1.0;
    }
}

impl Backend for Toy {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn max_seq_len(&self) -> usize {
        32
    }
    fn eos_token(&self) -> Option<u32> {
        Some(5)
    }
    fn prefill(
        &mut self,
        seqs: &[(SeqId, &[u32])],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        self.log.lock().unwrap().push(("prefill", seqs.len()));
        logits.clear();
        for (id, p) in seqs {
            self.seqs.insert(*id, p.len());
            self.one_hot(logits, *p.last().unwrap());
        }
        std::thread::sleep(self.step_delay);
        Ok(())
    }
    fn decode(&mut self, seqs: &[(SeqId, u32)], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        if self.panic_on_decode {
            panic!("kernel exploded");
        }
        self.log.lock().unwrap().push(("decode", seqs.len()));
        logits.clear();
        for (id, t) in seqs {
            *self.seqs.get_mut(id).expect("decode of unknown sequence") += 1;
            self.one_hot(logits, *t);
        }
        std::thread::sleep(self.step_delay);
        Ok(())
    }
    fn free(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }
    fn memory(&self) -> MemoryStats {
        MemoryStats {
            weight_bytes: 100,
            kv_cache_used_bytes: self.seqs.values().sum::<usize>() as u64,
            kv_cache_reserved_bytes: 0,
            kv_cache_peak_bytes: 0,
            prefix_cache_bytes: 0,
        }
    }
    fn score(&mut self, tokens: &[u32]) -> Result<Logits, EngineError> {
        let mut data = Vec::new();
        for t in tokens {
            self.one_hot(&mut data, *t);
        }
        Ok(Logits {
            rows: tokens.len() as u32,
            vocab: self.vocab as u32,
            data: data.into(),
        })
    }
}

fn req(id: u64, prompt: &[u32], n: u32) -> Request {
    Request {
        id,
        prompt: prompt.to_vec().into(),
        max_new_tokens: n,
        sampling: Sampling::GREEDY,
        ignore_eos: true,
    }
}

fn opts(policy: BatchPolicy, max_batch: u32) -> LoadOptions {
    LoadOptions {
        batch_policy: policy,
        max_batch,
        options_json: "{}".into(),
    }
}

type Log = Arc<Mutex<Vec<(&'static str, usize)>>>;

fn model(policy: BatchPolicy, max_batch: u32, delay_ms: u64) -> (KitModel, Log) {
    let log: Log = Default::default();
    let mut toy = Toy::new(log.clone());
    toy.step_delay = Duration::from_millis(delay_ms);
    (spawn(toy, &opts(policy, max_batch)).unwrap(), log)
}

#[test]
fn generates_exact_counts_with_one_sink_call_per_step() {
    let (m, log) = model(BatchPolicy::Continuous, 8, 0);
    let c = Arc::new(Collect::default());
    m.submit(vec![req(1, &[1, 2], 4), req(2, &[7], 4)], c.sink())
        .unwrap();
    c.wait(2);
    assert_eq!(c.tokens_of(1), vec![3, 4, 5, 6]); // ignore_eos: 5 does not stop it
    assert_eq!(c.tokens_of(2), vec![8, 9, 10, 11]);
    // one prefill step + 3 decode steps, each one sink call with both sequences
    let calls = c.calls.lock().unwrap();
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|s| s.len() == 2));
    assert_eq!(
        *log.lock().unwrap(),
        vec![("prefill", 2), ("decode", 2), ("decode", 2), ("decode", 2)]
    );
    let done = c.done.lock().unwrap();
    assert!(done
        .iter()
        .all(|d| d.generated_tokens == 4 && d.decode_steps == 3));
    assert!(done.iter().all(|d| d.finish_reason == FinishReason::Length));
    let mem = m.memory();
    assert_eq!(mem.kv_cache_used_bytes, 0, "caches freed");
    assert_eq!(
        mem.kv_cache_peak_bytes,
        2 + 1 + 3 * 2,
        "peak while both ran"
    );
    assert_eq!(m.memory().kv_cache_peak_bytes, 0, "peak resets on read");
}

#[test]
fn eos_stops_unless_ignored() {
    let (m, _) = model(BatchPolicy::Continuous, 8, 0);
    let c = Arc::new(Collect::default());
    let mut r = req(1, &[3], 10);
    r.ignore_eos = false;
    m.submit(vec![r], c.sink()).unwrap();
    c.wait(1);
    assert_eq!(c.tokens_of(1), vec![4, 5]);
    assert_eq!(c.done.lock().unwrap()[0].finish_reason, FinishReason::Eos);
}

#[test]
fn policy_none_runs_one_at_a_time() {
    let (m, log) = model(BatchPolicy::None, 8, 0);
    let c = Arc::new(Collect::default());
    m.submit((0..3).map(|i| req(i, &[1], 3)).collect(), c.sink())
        .unwrap();
    c.wait(3);
    assert!(log.lock().unwrap().iter().all(|&(_, n)| n == 1));
    for i in 0..3 {
        assert_eq!(c.tokens_of(i), vec![2, 3, 4]);
    }
}

#[test]
fn static_batches_run_to_completion_without_joins() {
    let (m, log) = model(BatchPolicy::Static, 4, 2);
    let c = Arc::new(Collect::default());
    m.submit((0..6).map(|i| req(i, &[1], 3)).collect(), c.sink())
        .unwrap();
    // arrives while the first batch runs: must wait for the next batch
    m.submit(vec![req(6, &[1], 3)], c.sink()).unwrap();
    c.wait(7);
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            ("prefill", 4),
            ("decode", 4),
            ("decode", 4),
            ("prefill", 3),
            ("decode", 3),
            ("decode", 3)
        ]
    );
}

#[test]
fn continuous_batching_joins_between_steps() {
    let (m, log) = model(BatchPolicy::Continuous, 3, 5);
    let c1 = Arc::new(Collect::default());
    let c2 = Arc::new(Collect::default());
    m.submit(vec![req(1, &[1], 20)], c1.sink()).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    m.submit(
        vec![req(2, &[1], 3), req(3, &[1], 3), req(4, &[1], 3)],
        c2.sink(),
    )
    .unwrap();
    c1.wait(1);
    c2.wait(3);
    let log = log.lock().unwrap().clone();
    // request 1 was decoding alone, then two newcomers joined it (max 3)
    assert_eq!(log[0], ("prefill", 1));
    assert!(log.contains(&("prefill", 2)), "{log:?}");
    assert!(log.contains(&("decode", 3)), "{log:?}");
    assert!(log.iter().all(|&(_, n)| n <= 3));
    for id in 2..=4 {
        assert_eq!(c2.tokens_of(id), vec![2, 3, 4]);
    }
    assert_eq!(c1.tokens_of(1).len(), 20);
    // each sink call carries only that submission's sequences
    assert!(c1
        .calls
        .lock()
        .unwrap()
        .iter()
        .all(|s| s.iter().all(|e| e.request_id == 1)));
}

#[test]
fn invalid_and_unsupported_requests_are_refused_at_submit() {
    let (m, _) = model(BatchPolicy::Continuous, 4, 0);
    let c = Arc::new(Collect::default());
    let e = m.submit(vec![req(1, &[1; 30], 3)], c.sink()).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert!(e.message.contains("context of 32"), "{e}");
    let e = m.submit(vec![req(1, &[99], 3)], c.sink()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let e = m.submit(vec![req(1, &[], 3)], c.sink()).unwrap_err();
    assert!(e.message.contains("empty prompt"));
}

#[test]
fn backend_panic_fails_requests_and_poisons_model() {
    let log: Log = Default::default();
    let mut toy = Toy::new(log);
    toy.panic_on_decode = true;
    let m = spawn(toy, &opts(BatchPolicy::Continuous, 4)).unwrap();
    let c = Arc::new(Collect::default());
    m.submit(vec![req(1, &[1], 5), req(2, &[1], 5)], c.sink())
        .unwrap();
    c.wait(2);
    let errors = c.errors.lock().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].1.kind, ErrorKind::Panic);
    assert!(errors[0].1.message.contains("kernel exploded"));
    let e = m.submit(vec![req(3, &[1], 5)], c.sink()).unwrap_err();
    assert!(e.message.contains("unusable"), "{e}");
}

#[test]
fn score_and_drop_with_work_in_flight() {
    let (m, _) = model(BatchPolicy::Continuous, 4, 1);
    let l = m.score(&[1, 2]).unwrap();
    assert_eq!((l.rows, l.vocab), (2, 16));
    assert_eq!(l.row(1)[3], 1.0);
    let c = Arc::new(Collect::default());
    m.submit(vec![req(1, &[1], 25)], c.sink()).unwrap();
    drop(m); // must not hang; the request ends with an error or completes
    let n = c.done.lock().unwrap().len() + c.errors.lock().unwrap().len();
    assert_eq!(n, 1);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let (m, _) = model(BatchPolicy::Continuous, 4, 0);
    let run = |seed| {
        let c = Arc::new(Collect::default());
        let mut r = req(1, &[1], 8);
        r.sampling = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed,
        };
        m.submit(vec![r], c.sink()).unwrap();
        c.wait(1);
        c.tokens_of(1)
    };
    assert_eq!(run(9), run(9));
}

/// `spawn_with` builds the backend on the scheduler thread (the one that
/// runs every step) and serves it; a build error or panic is the load's
/// error.
#[test]
fn spawn_with_builds_the_backend_on_the_scheduler_thread() {
    let log: Log = Default::default();
    let log2 = log.clone();
    let built_on: Arc<Mutex<Option<String>>> = Default::default();
    let b2 = built_on.clone();
    let m = spawn_with(&opts(BatchPolicy::Continuous, 4), move || {
        *b2.lock().unwrap() = std::thread::current().name().map(String::from);
        Ok(Toy::new(log2))
    })
    .unwrap();
    assert_eq!(
        built_on.lock().unwrap().as_deref(),
        Some("engine-kit-scheduler")
    );
    assert_ne!(std::thread::current().name(), Some("engine-kit-scheduler"));
    assert_eq!(m.score(&[3]).unwrap().vocab, 16);
    assert_eq!(m.memory().weight_bytes, 100);
    let c = Arc::new(Collect::default());
    m.submit(vec![req(1, &[1, 2], 4)], c.sink()).unwrap();
    c.wait(1);
    assert_eq!(c.tokens_of(1), vec![3, 4, 5, 6]);

    let e = match spawn_with(&opts(BatchPolicy::Continuous, 4), || {
        Err::<Toy, _>(EngineError::invalid_model("no weights here"))
    }) {
        Ok(_) => panic!("a failed build must fail the load"),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(e.message.contains("no weights here"), "{e}");

    let e = match spawn_with(&opts(BatchPolicy::Continuous, 4), || -> Result<Toy, _> {
        panic!("loader exploded")
    }) {
        Ok(_) => panic!("a panicking build must fail the load"),
        Err(e) => e,
    };
    assert!(e.message.contains("loader exploded"), "{e}");
}

/// `prefix_cache` is the kit's option: a backend without a cache refuses
/// it at load (`unsupported`), a bad size is an invalid argument.
#[test]
fn the_prefix_cache_option_is_checked_at_load() {
    let with = |json: &str| LoadOptions {
        options_json: json.into(),
        ..opts(BatchPolicy::Continuous, 4)
    };
    let load = |json: &str| spawn_with(&with(json), || Ok(Toy::new(Default::default()))).err();
    assert!(load(r#"{"threads": 2}"#).is_none());
    let e = load(r#"{"prefix_cache": true}"#).expect("the toy has no prefix cache");
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("prefix cache"), "{e}");
    let e = load(r#"{"prefix_block": 0, "prefix_cache": true}"#).unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("prefix_block must be at least 1"), "{e}");
}
