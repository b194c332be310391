//! The host's side of the sink: timestamps and storage of every token.
//!
//! The engine calls the sink from its scheduler thread once per decode step,
//! so a call must cost far less than a microsecond (`benches/sink.rs`
//! measures it): it reads the monotonic clock once, takes one uncontended
//! lock and appends to vectors whose capacity was reserved at submit time.
//! Waiting threads sleep on a condition variable and are woken only when a
//! request finishes, never per token.

//!
//! Its children drive and summarise a cell: [`scenario`] (closed loops,
//! open-loop serving load, sweeps), [`metrics`] (per-cell figures from the
//! raw records) and [`serving`] (arrival schedules and open-loop figures).

pub mod metrics;
pub mod scenario;
pub mod serving;

use engine_api::abi_stable::sabi_trait::TD_Opaque;
use engine_api::abi_stable::std_types::RSlice;
use engine_api::ffi::{SinkFfi, SinkFfi_TO};
use engine_api::{Completion, EngineError, Request, SinkBox, TokenEvent};
pub use engine_matrix_results::IterationSpan;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Everything recorded about one request, times in ns since the
/// collector's epoch.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub id: u64,
    pub iteration: u32,
    pub warmup: bool,
    pub prompt_tokens: u32,
    pub max_new_tokens: u32,
    /// Multi-turn: the session and the turn (0-based) this request is.
    pub session: Option<u64>,
    pub turn: Option<u32>,
    /// When the host handed the request to the engine (for batches: the
    /// moment the whole batch was submitted).
    pub submit_ns: u64,
    /// When an open-loop (serving) request was due to be sent; latency
    /// from the schedule starts here.
    pub scheduled_ns: Option<u64>,
    /// Open loop: the request's position in its iteration's schedule.
    pub arrival: Option<u64>,
    pub token_ns: Vec<u64>,
    pub tokens: Vec<u32>,
    /// When `done` or `error` arrived.
    pub end_ns: Option<u64>,
    pub completion: Option<Completion>,
    pub error: Option<EngineError>,
}

impl RequestRecord {
    pub fn finished(&self) -> bool {
        self.end_ns.is_some()
    }

    /// The tokens a request produced: the engine's own count (a server's
    /// `usage`), else the tokens the host received. They differ when a server
    /// packs several tokens into one chunk: the request is then flagged in
    /// `token_count_disagreements`, and its lengths and rates use the
    /// engine's count, as vLLM's benchmark does.
    pub fn produced(&self) -> usize {
        self.completion
            .as_ref()
            .map(|c| c.generated_tokens as usize)
            .filter(|&n| n > 0)
            .unwrap_or(self.tokens.len())
    }
}

#[derive(Default)]
struct State {
    records: Vec<RequestRecord>,
    finished: Vec<u64>,
    /// Events naming a request id the host never submitted.
    unknown_events: u64,
}

/// Collects the output of one cell.
pub struct Collector {
    epoch: Instant,
    state: Mutex<State>,
    cv: Condvar,
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector {
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A collector whose times count from `epoch` (a load generator's
    /// cell that starts after its shared start counts from that start, so
    /// that its late requests' due times are not before its epoch).
    pub fn starting_at(epoch: Instant) -> Self {
        Collector {
            epoch,
            state: Mutex::default(),
            cv: Condvar::new(),
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers requests about to be submitted; returns their ids. Ids are
    /// indices into the record list, so lookups on the hot path are O(1).
    pub fn register(
        &self,
        n: usize,
        iteration: u32,
        warmup: bool,
        prompt_tokens: u32,
        max_new_tokens: u32,
    ) -> Vec<u64> {
        let mut s = self.lock();
        let first = s.records.len() as u64;
        for i in 0..n as u64 {
            s.records.push(RequestRecord {
                id: first + i,
                iteration,
                warmup,
                prompt_tokens,
                max_new_tokens,
                token_ns: Vec::with_capacity(max_new_tokens as usize),
                tokens: Vec::with_capacity(max_new_tokens as usize),
                ..Default::default()
            });
        }
        (first..first + n as u64).collect()
    }

    /// Sets the lengths of registered `ids` (a dataset's requests differ).
    pub fn set_lengths(&self, ids: &[u64], samples: &[engine_matrix_workloads::Sample]) {
        let mut s = self.lock();
        for (&id, x) in ids.iter().zip(samples) {
            if let Some(r) = s.records.get_mut(id as usize) {
                r.prompt_tokens = x.prompt.len() as u32;
                r.max_new_tokens = x.output_tokens;
            }
        }
    }

    /// Marks `id` as turn `turn` of session `session` (multi-turn).
    pub fn set_turn(&self, id: u64, session: u64, turn: u32) {
        if let Some(r) = self.lock().records.get_mut(id as usize) {
            r.session = Some(session);
            r.turn = Some(turn);
        }
    }

    /// Stamps the submit time of `ids` and returns it.
    pub fn mark_submitted(&self, ids: &[u64]) -> u64 {
        let t = self.now_ns();
        let mut s = self.lock();
        for &id in ids {
            if let Some(r) = s.records.get_mut(id as usize) {
                r.submit_ns = t;
            }
        }
        t
    }

    /// Records when `id` was due to be sent and its position in the
    /// schedule (open loop).
    pub fn mark_scheduled(&self, id: u64, ns: u64, arrival: u64) {
        if let Some(r) = self.lock().records.get_mut(id as usize) {
            r.scheduled_ns = Some(ns);
            r.arrival = Some(arrival);
        }
    }

    /// Copies of the records of one iteration (a sweep judges each rate
    /// as it goes).
    pub fn records_of(&self, iteration: u32) -> Vec<RequestRecord> {
        self.lock()
            .records
            .iter()
            .filter(|r| r.iteration == iteration && !r.warmup)
            .cloned()
            .collect()
    }

    /// Marks requests that the engine refused at submit as failed.
    pub fn mark_refused(&self, ids: &[u64], e: &EngineError) {
        let t = self.now_ns();
        let mut s = self.lock();
        for &id in ids {
            if let Some(r) = s.records.get_mut(id as usize) {
                r.error = Some(e.clone());
                r.end_ns = Some(t);
            }
        }
    }

    /// A sink that feeds this collector.
    pub fn sink(self: &Arc<Self>) -> SinkBox {
        SinkFfi_TO::from_value(HostSink(self.clone()), TD_Opaque)
    }

    /// Waits until at least one request finishes or `deadline` passes;
    /// returns the ids finished since the last call (empty on timeout).
    pub fn wait_finished(&self, deadline: Instant) -> Vec<u64> {
        let mut s = self.lock();
        while s.finished.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Vec::new();
            }
            s = self
                .cv
                .wait_timeout(s, left.min(Duration::from_secs(3600)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::take(&mut s.finished)
    }

    /// Number of tokens received so far (for stall detection).
    pub fn tokens_received(&self) -> usize {
        self.lock().records.iter().map(|r| r.tokens.len()).sum()
    }

    pub fn unknown_events(&self) -> u64 {
        self.lock().unknown_events
    }

    pub fn record(&self, id: u64) -> Option<RequestRecord> {
        self.lock().records.get(id as usize).cloned()
    }

    /// Takes every record out of the collector.
    pub fn take_records(&self) -> Vec<RequestRecord> {
        std::mem::take(&mut self.lock().records)
    }

    /// What arrived since the cursor's last call, for the live view.
    ///
    /// The lock is held for the requests not yet finished at the last call
    /// and the tokens that came since, never for the whole history:
    /// finished requests are folded into the cursor's totals and skipped
    /// from then on. At most [`LIVE_MAX_GAPS`] gaps are copied per call.
    pub fn live_window(&self, cur: &mut LiveCursor) -> LiveWindow {
        let s = self.lock();
        let now = self.now_ns();
        let mut w = LiveWindow {
            from_ns: cur.last_ns,
            to_ns: now,
            ..LiveWindow::default()
        };
        let (mut tokens, mut done, mut failed) = (cur.tokens, cur.done, cur.failed);
        let mut fold = true;
        for r in s.records.iter().skip(cur.from) {
            let first_new = r.token_ns.partition_point(|&t| t <= cur.last_ns);
            for i in first_new..r.token_ns.len() {
                if i == 0 {
                    if r.submit_ns > 0 && r.token_ns[0] >= r.submit_ns {
                        w.ttft_ns.push(r.token_ns[0] - r.submit_ns);
                    }
                } else if w.gaps_ns.len() < LIVE_MAX_GAPS {
                    w.gaps_ns.push(r.token_ns[i] - r.token_ns[i - 1]);
                }
            }
            w.new_tokens += (r.token_ns.len() - first_new) as u64;
            tokens += r.tokens.len() as u64;
            if r.finished() {
                done += 1;
                failed += u64::from(r.error.is_some());
            }
            if fold && r.finished() {
                cur.from += 1;
                cur.tokens += r.tokens.len() as u64;
                cur.done += 1;
                cur.failed += u64::from(r.error.is_some());
            } else {
                fold = false;
            }
        }
        cur.last_ns = now;
        w.tokens = tokens;
        w.done = done;
        w.failed = failed;
        w.registered = s.records.len() as u64;
        w
    }
}

/// Most token gaps one [`Collector::live_window`] copies.
pub const LIVE_MAX_GAPS: usize = 4096;

/// Where the live view's last look at a collector ended.
#[derive(Debug, Clone, Default)]
pub struct LiveCursor {
    /// Records before this index are finished and counted below.
    from: usize,
    tokens: u64,
    done: u64,
    failed: u64,
    last_ns: u64,
}

/// Tokens and requests between two looks, times in ns since the epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveWindow {
    pub from_ns: u64,
    pub to_ns: u64,
    /// Tokens received in the window.
    pub new_tokens: u64,
    /// Totals so far.
    pub tokens: u64,
    pub done: u64,
    pub failed: u64,
    pub registered: u64,
    /// Time to first token of the requests whose first token came in the
    /// window.
    pub ttft_ns: Vec<u64>,
    /// Gaps between consecutive tokens of one request, in the window.
    pub gaps_ns: Vec<u64>,
}

struct HostSink(Arc<Collector>);

impl SinkFfi for HostSink {
    #[inline]
    fn tokens(&self, step: RSlice<'_, TokenEvent>) {
        let t = self.0.now_ns();
        let mut s = self.0.lock();
        for e in step.iter() {
            match s.records.get_mut(e.request_id as usize) {
                Some(r) => {
                    r.token_ns.push(t);
                    r.tokens.push(e.token);
                }
                None => s.unknown_events += 1,
            }
        }
    }

    fn done(&self, c: Completion) {
        let t = self.0.now_ns();
        let mut s = self.0.lock();
        match s.records.get_mut(c.request_id as usize) {
            Some(r) => {
                r.completion = Some(c);
                r.end_ns = Some(t);
                s.finished.push(c.request_id);
            }
            None => s.unknown_events += 1,
        }
        drop(s);
        self.0.cv.notify_all();
    }

    fn error(&self, request_id: u64, e: EngineError) {
        let t = self.0.now_ns();
        let mut s = self.0.lock();
        match s.records.get_mut(request_id as usize) {
            Some(r) => {
                r.error = Some(e);
                r.end_ns = Some(t);
                s.finished.push(request_id);
            }
            None => s.unknown_events += 1,
        }
        drop(s);
        self.0.cv.notify_all();
    }
}

/// Builds the requests for registered `ids` from their samples.
pub fn requests(ids: &[u64], samples: Vec<engine_matrix_workloads::Sample>) -> Vec<Request> {
    ids.iter()
        .zip(samples)
        .map(|(&id, s)| Request {
            id,
            prompt: s.prompt.into(),
            max_new_tokens: s.output_tokens,
            sampling: engine_api::Sampling::GREEDY,
            ignore_eos: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::FinishReason;

    #[test]
    fn sink_stamps_tokens_in_order_and_wakes_waiters() {
        let c = Arc::new(Collector::new());
        let ids = c.register(2, 0, false, 4, 3);
        c.mark_submitted(&ids);
        let sink = c.sink();
        let c2 = c.clone();
        let waiter =
            std::thread::spawn(move || c2.wait_finished(Instant::now() + Duration::from_secs(10)));
        for tok in 0..3u32 {
            let ev = [
                TokenEvent {
                    request_id: 0,
                    token: tok,
                },
                TokenEvent {
                    request_id: 1,
                    token: 10 + tok,
                },
            ];
            sink.tokens(ev.as_slice().into());
        }
        sink.tokens(
            [TokenEvent {
                request_id: 99,
                token: 1,
            }]
            .as_slice()
            .into(),
        );
        sink.done(Completion {
            request_id: 1,
            prompt_tokens: 4,
            generated_tokens: 3,
            finish_reason: FinishReason::Length,
            queue_us: 0,
            prefill_us: 0,
            decode_us: 0,
            decode_steps: 2,
            cached_prompt_tokens: engine_api::abi_stable::std_types::RNone,
        });
        assert_eq!(waiter.join().unwrap(), vec![1]);
        let r = c.record(1).unwrap();
        assert_eq!(r.tokens, vec![10, 11, 12]);
        assert!(r.token_ns.windows(2).all(|w| w[0] <= w[1]));
        assert!(r.token_ns[0] >= r.submit_ns);
        assert!(r.finished());
        assert!(!c.record(0).unwrap().finished());
        assert_eq!(c.unknown_events(), 1);
        sink.error(0, EngineError::runtime("boom"));
        assert_eq!(c.wait_finished(Instant::now()), vec![0]);
    }

    fn token(c: &SinkBox, request_id: u64) {
        c.tokens(
            [TokenEvent {
                request_id,
                token: 1,
            }]
            .as_slice()
            .into(),
        );
    }

    #[test]
    fn live_windows_count_each_token_once_and_fold_finished_requests() {
        let c = Arc::new(Collector::new());
        let ids = c.register(3, 0, false, 4, 8);
        c.mark_submitted(&ids);
        let sink = c.sink();
        let mut cur = LiveCursor::default();
        let empty = c.live_window(&mut cur);
        assert_eq!((empty.tokens, empty.new_tokens, empty.done), (0, 0, 0));
        assert!(empty.ttft_ns.is_empty());

        token(&sink, 0);
        token(&sink, 0);
        token(&sink, 1);
        let w = c.live_window(&mut cur);
        assert_eq!((w.tokens, w.new_tokens), (3, 3));
        assert_eq!(w.ttft_ns.len(), 2, "requests 0 and 1 got their first token");
        assert_eq!(w.gaps_ns.len(), 1, "request 0's second token");
        assert!(w.from_ns <= w.to_ns);

        token(&sink, 0);
        sink.error(0, EngineError::runtime("boom"));
        let w = c.live_window(&mut cur);
        assert_eq!((w.tokens, w.new_tokens, w.done, w.failed), (4, 1, 1, 1));
        assert!(w.ttft_ns.is_empty(), "no first token in this window");
        assert_eq!(cur.from, 1, "request 0 is finished and folded");

        token(&sink, 2);
        let w = c.live_window(&mut cur);
        assert_eq!((w.tokens, w.new_tokens, w.done, w.failed), (5, 1, 1, 1));
        assert_eq!(w.ttft_ns.len(), 1);
        assert_eq!(w.registered, 3);
    }
}
