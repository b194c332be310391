//! The scheduler thread and the [`engine_api::Model`] it serves.

use crate::sampling::{sample, Rng};
use crate::sequences::{check_prompt, check_score, Limits};
use crate::{Backend, SeqId};
use engine_api::{
    BatchPolicy, Completion, EngineError, ErrorKind, FinishReason, LoadOptions, Logits,
    MemoryStats, Model, Request, Sampling, SinkBox, TokenEvent,
};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

enum Msg {
    Submit {
        requests: Vec<Request>,
        sink: Arc<SinkBox>,
        at: Instant,
    },
    Score {
        tokens: Vec<u32>,
        reply: mpsc::SyncSender<Result<Logits, EngineError>>,
    },
}

#[derive(Default)]
struct Shared {
    memory: Mutex<MemoryStats>,
    poisoned: Mutex<Option<String>>,
}

/// A model served by a scheduler thread; returned by [`spawn`].
pub struct KitModel {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    limits: Limits,
    /// The backend's [`Backend::describe`], taken once it was built.
    described: String,
}

/// Starts the scheduler thread for `backend` with the batching policy of
/// `options`.
pub fn spawn<B: Backend>(backend: B, options: &LoadOptions) -> Result<KitModel, EngineError> {
    spawn_with(options, move || Ok(backend))
}

/// Starts the scheduler thread and builds the backend on it with `build`,
/// so that the thread that runs every step is also the one that loaded
/// and warmed up the model; returns `build`'s error if it fails.
///
/// Runtimes keep per-thread state: libgomp (libtorch's OpenMP) gives each
/// thread that opens a parallel region its own pool of workers, and once
/// the process has more OpenMP threads than cores it throttles their
/// spin-wait, so workers sleep and are woken by futex between every two
/// ops. A model loaded and warmed up on the host's thread and then run on
/// the scheduler thread leaves the first pool idle and pays that
/// throttling: libtorch's batch-1 GPT-2 decode took 28-35 ms a step
/// instead of 23 ms (`cargo run --release -p em-torch --example torch_decode`
/// with `ON_THREAD=1`, with and without `OPEN_THERE=1`).
pub fn spawn_with<B, F>(options: &LoadOptions, build: F) -> Result<KitModel, EngineError>
where
    B: Backend,
    F: FnOnce() -> Result<B, EngineError> + Send + 'static,
{
    if options.max_batch == 0 {
        return Err(EngineError::invalid_argument(
            "max_batch must be at least 1",
        ));
    }
    let max_batch = match options.batch_policy {
        BatchPolicy::None => 1,
        _ => options.max_batch as usize,
    };
    let cfg = Config {
        policy: options.batch_policy,
        max_batch,
    };
    let prefix = crate::KitOptions::parse(options.options_json.as_str())?.prefix_cache()?;
    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let shared2 = shared.clone();
    let thread = std::thread::Builder::new()
        .name("engine-kit-scheduler".into())
        .spawn(move || {
            let built = catch_unwind(AssertUnwindSafe(build)).unwrap_or_else(|p| {
                Err(EngineError::runtime(format!(
                    "engine panicked while loading: {}",
                    panic_text(p)
                )))
            });
            let built = built.and_then(|mut b| {
                b.set_prefix_cache(prefix)?;
                Ok(b)
            });
            let backend = match built {
                Ok(b) => b,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            *lock(&shared2.memory) = backend.memory();
            let limits = Limits {
                vocab: backend.vocab_size(),
                context: backend.max_seq_len(),
                eos: backend.eos_token(),
            };
            let _ = ready_tx.send(Ok((limits, backend.describe())));
            Scheduler::new(backend, cfg, shared2).run(rx)
        })
        .map_err(|e| EngineError::runtime(format!("cannot start scheduler thread: {e}")))?;
    let (limits, described) = match ready_rx.recv() {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(EngineError::runtime(
                "the scheduler thread ended while loading the model",
            ));
        }
    };
    Ok(KitModel {
        tx: Some(tx),
        thread: Some(thread),
        shared,
        limits,
        described,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KitModel {
    fn check_poisoned(&self) -> Result<(), EngineError> {
        match &*lock(&self.shared.poisoned) {
            Some(why) => Err(EngineError::runtime(format!(
                "model is unusable after an earlier engine panic: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// A request is a prompt ([`check_prompt`]) with room in the context
    /// for its new tokens: too long is `unsupported` (the model cannot),
    /// not `invalid`.
    fn validate(&self, r: &Request) -> Result<(), EngineError> {
        if r.max_new_tokens == 0 {
            return Err(EngineError::invalid_argument(format!(
                "request {}: max_new_tokens must be at least 1",
                r.id
            )));
        }
        let total = r.prompt.len() + r.max_new_tokens as usize;
        if !r.prompt.is_empty() && total > self.limits.context {
            return Err(EngineError::unsupported(format!(
                "{} prompt tokens + {} new tokens = {total} exceeds the model's context of {} positions",
                r.prompt.len(),
                r.max_new_tokens,
                self.limits.context
            )));
        }
        check_prompt(&format!("request {}", r.id), &r.prompt, &self.limits)
    }
}

impl Model for KitModel {
    fn submit(&self, requests: Vec<Request>, sink: SinkBox) -> Result<(), EngineError> {
        self.check_poisoned()?;
        for r in &requests {
            self.validate(r)?;
        }
        if requests.is_empty() {
            return Ok(());
        }
        let msg = Msg::Submit {
            requests,
            sink: Arc::new(sink),
            at: Instant::now(),
        };
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(msg).ok())
            .ok_or_else(|| EngineError::runtime("scheduler thread has stopped"))
    }

    fn memory(&self) -> MemoryStats {
        let mut m = lock(&self.shared.memory);
        let out = *m;
        m.kv_cache_peak_bytes = m.kv_cache_used_bytes;
        out
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    fn score(&self, tokens: &[u32]) -> Result<Logits, EngineError> {
        self.check_poisoned()?;
        check_score(tokens, &self.limits)?;
        let (reply, rx) = mpsc::sync_channel(1);
        let msg = Msg::Score {
            tokens: tokens.to_vec(),
            reply,
        };
        let sent = self.tx.as_ref().and_then(|tx| tx.send(msg).ok());
        sent.and_then(|_| rx.recv().ok())
            .unwrap_or_else(|| Err(EngineError::runtime("scheduler thread has stopped")))
    }
}

impl Drop for KitModel {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Config {
    policy: BatchPolicy,
    max_batch: usize,
}

struct Waiting {
    req: Request,
    sink: Arc<SinkBox>,
    submitted: Instant,
}

struct Running {
    seq: SeqId,
    request_id: u64,
    sink: Arc<SinkBox>,
    sampling: Sampling,
    rng: Rng,
    max_new: u32,
    ignore_eos: bool,
    prompt_len: u32,
    /// Prompt tokens the prefill took from the prefix cache.
    cached: u32,
    generated: u32,
    last: u32,
    submitted: Instant,
    prefill_start: Instant,
    prefill_end: Instant,
    steps: u32,
}

struct Scheduler<B> {
    backend: B,
    cfg: Config,
    shared: Arc<Shared>,
    eos: Option<u32>,
    max_seq_len: usize,
    vocab: usize,
    waiting: VecDeque<Waiting>,
    running: Vec<Running>,
    next_seq: SeqId,
    logits: Vec<f32>,
    scratch: Vec<(f32, u32)>,
    groups: Vec<(Arc<SinkBox>, Vec<TokenEvent>)>,
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

impl<B: Backend> Scheduler<B> {
    fn new(backend: B, cfg: Config, shared: Arc<Shared>) -> Self {
        Scheduler {
            eos: backend.eos_token(),
            max_seq_len: backend.max_seq_len(),
            vocab: backend.vocab_size(),
            backend,
            cfg,
            shared,
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_seq: 0,
            logits: Vec::new(),
            scratch: Vec::new(),
            groups: Vec::new(),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                // Idle: sleep until there is work.
                match rx.recv() {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                }
            }
            let mut disconnected = false;
            loop {
                match rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            if disconnected {
                break;
            }
            self.admit();
            if !self.running.is_empty() {
                self.decode_step();
            }
        }
        self.abort_all(&EngineError::runtime("model was unloaded"));
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Submit { requests, sink, at } => {
                for req in requests {
                    self.waiting.push_back(Waiting {
                        req,
                        sink: sink.clone(),
                        submitted: at,
                    });
                }
            }
            Msg::Score { tokens, reply } => {
                let r = self.guarded("score", |b| b.score(&tokens));
                let _ = reply.send(r);
            }
        }
    }

    /// Runs `f` on the backend, catching a panic (which poisons the model).
    fn guarded<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut B) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if let Some(why) = &*lock(&self.shared.poisoned) {
            return Err(EngineError::runtime(format!(
                "model is unusable after an earlier engine panic: {why}"
            )));
        }
        match catch_unwind(AssertUnwindSafe(|| f(&mut self.backend))) {
            Ok(r) => r,
            Err(p) => {
                let msg = format!("engine panicked in {what}: {}", panic_text(p));
                *lock(&self.shared.poisoned) = Some(msg.clone());
                Err(EngineError::new(ErrorKind::Panic, msg))
            }
        }
    }

    fn capacity(&self) -> usize {
        match self.cfg.policy {
            BatchPolicy::None | BatchPolicy::Static if !self.running.is_empty() => 0,
            _ => self.cfg.max_batch.saturating_sub(self.running.len()),
        }
    }

    fn admit(&mut self) {
        let n = self.capacity().min(self.waiting.len());
        if n == 0 {
            return;
        }
        let admitted: Vec<Waiting> = self.waiting.drain(..n).collect();
        let first_seq = self.next_seq;
        self.next_seq += n as u64;
        let start = Instant::now();
        let mut logits = std::mem::take(&mut self.logits);
        let result = {
            let seqs: Vec<(SeqId, &[u32])> = admitted
                .iter()
                .enumerate()
                .map(|(i, w)| (first_seq + i as u64, w.req.prompt.as_slice()))
                .collect();
            self.guarded("prefill", |b| b.prefill(&seqs, &mut logits))
        };
        let end = Instant::now();
        if let Err(e) = result.and_then(|_| self.check_logits(&logits, n)) {
            self.logits = logits;
            for (i, w) in admitted.iter().enumerate() {
                self.free(first_seq + i as u64);
                w.sink.error(w.req.id, e.clone());
            }
            self.update_memory();
            return;
        }
        let base = self.running.len();
        for (i, w) in admitted.into_iter().enumerate() {
            let mut r = Running {
                seq: first_seq + i as u64,
                request_id: w.req.id,
                sink: w.sink,
                sampling: w.req.sampling,
                rng: Rng::new(w.req.sampling.seed),
                max_new: w.req.max_new_tokens,
                ignore_eos: w.req.ignore_eos,
                prompt_len: w.req.prompt.len() as u32,
                cached: self.backend.cached_prompt_tokens(first_seq + i as u64),
                generated: 0,
                last: 0,
                submitted: w.submitted,
                prefill_start: start,
                prefill_end: end,
                steps: 0,
            };
            let row = &logits[i * self.vocab..(i + 1) * self.vocab];
            r.last = sample(row, &r.sampling, &mut r.rng, &mut self.scratch);
            r.generated = 1;
            self.running.push(r);
        }
        self.logits = logits;
        self.emit_and_finish(base);
    }

    fn decode_step(&mut self) {
        let seqs: Vec<(SeqId, u32)> = self.running.iter().map(|r| (r.seq, r.last)).collect();
        let mut logits = std::mem::take(&mut self.logits);
        let result = self
            .guarded("decode", |b| b.decode(&seqs, &mut logits))
            .and_then(|_| self.check_logits(&logits, seqs.len()));
        if let Err(e) = result {
            self.logits = logits;
            let failed: Vec<Running> = self.running.drain(..).collect();
            for r in failed {
                self.free(r.seq);
                r.sink.error(r.request_id, e.clone());
            }
            self.update_memory();
            return;
        }
        for (i, r) in self.running.iter_mut().enumerate() {
            let row = &logits[i * self.vocab..(i + 1) * self.vocab];
            r.last = sample(row, &r.sampling, &mut r.rng, &mut self.scratch);
            r.generated += 1;
            r.steps += 1;
        }
        self.logits = logits;
        self.emit_and_finish(0);
    }

    fn check_logits(&self, logits: &[f32], rows: usize) -> Result<(), EngineError> {
        if logits.len() != rows * self.vocab {
            return Err(EngineError::runtime(format!(
                "backend returned {} logits for {rows} sequences of vocabulary {}",
                logits.len(),
                self.vocab
            )));
        }
        Ok(())
    }

    /// Sends this step's tokens of `running[from..]` (one sink call per
    /// submission), then completes the sequences that are finished.
    fn emit_and_finish(&mut self, from: usize) {
        let mut groups = std::mem::take(&mut self.groups);
        for r in &self.running[from..] {
            let ev = TokenEvent {
                request_id: r.request_id,
                token: r.last,
            };
            match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &r.sink)) {
                Some((_, v)) => v.push(ev),
                None => groups.push((r.sink.clone(), vec![ev])),
            }
        }
        for (sink, events) in groups.drain(..) {
            sink.tokens(events.as_slice().into());
        }
        self.groups = groups;

        self.update_memory();
        let now = Instant::now();
        let mut finished = Vec::new();
        let mut i = from;
        while i < self.running.len() {
            let r = &self.running[i];
            let finish = if r.generated >= r.max_new {
                Some(FinishReason::Length)
            } else if !r.ignore_eos && Some(r.last) == self.eos {
                Some(FinishReason::Eos)
            } else if r.prompt_len as usize + r.generated as usize >= self.max_seq_len {
                Some(FinishReason::ContextFull)
            } else {
                None
            };
            match finish {
                None => i += 1,
                Some(reason) => finished.push((self.running.remove(i), reason)),
            }
        }
        if finished.is_empty() {
            return;
        }
        for (r, _) in &finished {
            self.free(r.seq);
        }
        self.update_memory();
        for (r, reason) in finished {
            let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
            r.sink.done(Completion {
                request_id: r.request_id,
                prompt_tokens: r.prompt_len,
                generated_tokens: r.generated,
                finish_reason: reason,
                queue_us: us(r.submitted, r.prefill_start),
                prefill_us: us(r.prefill_start, r.prefill_end),
                decode_us: us(r.prefill_end, now),
                decode_steps: r.steps,
                // 0 without a prefix cache: every prompt token computed.
                cached_prompt_tokens: engine_api::abi_stable::std_types::RSome(r.cached),
            });
        }
    }

    fn free(&mut self, seq: SeqId) {
        let _ = self.guarded("free", |b| {
            b.free(seq);
            Ok(())
        });
    }

    fn update_memory(&mut self) {
        if let Ok(m) = self.guarded("memory", |b| Ok(b.memory())) {
            let mut shared = lock(&self.shared.memory);
            let peak = shared.kv_cache_peak_bytes.max(m.kv_cache_used_bytes);
            *shared = MemoryStats {
                kv_cache_peak_bytes: peak,
                ..m
            };
        }
    }

    fn abort_all(&mut self, e: &EngineError) {
        let running: Vec<Running> = self.running.drain(..).collect();
        for r in running {
            self.free(r.seq);
            r.sink.error(r.request_id, e.clone());
        }
        for w in self.waiting.drain(..) {
            w.sink.error(w.req.id, e.clone());
        }
    }
}

#[cfg(test)]
mod tests;
