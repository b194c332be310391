//! Drives one cell against a loaded model: warmup, then measured
//! iterations until both the iteration count and the minimum duration are
//! reached (or the maximum duration is spent).
//!
//! * `latency`: one batch of `batch_size` requests at a time, submitted as
//!   one submission, waiting for all of it to finish.
//! * `throughput`: offline; `num_requests` submitted at once, the engine's
//!   scheduler batches them (up to `max_batch`).
//! * `concurrency`: a closed loop of `concurrency` clients; each client
//!   submits its next request when its previous one finishes, until
//!   `requests` were sent (or `duration_s` has passed, when set).
//! * `serving`: an open loop; requests are sent at the times of a
//!   schedule (see [`crate::measure::serving`]), at most
//!   `max_concurrency` in flight. With `dataset: trace`, the schedule is
//!   the trace's (its timestamps × `time_scale`, from the first line) and
//!   request `i` of each measured iteration is line `i`; warmup requests
//!   are random prompts of the first lines' lengths
//!   ([`Workload::warmup_request`]), so that a prefix cache starts the
//!   replay cold.
//!
//! A load generator's cell (`run --load-shard I/N`, see
//! [`crate::run::load_shard`]) runs its warmups, then exactly `iterations`
//! measured iterations, each at its shared start on the wall clock,
//! sending arrivals I, I+N, ... of the schedule with the prompts a single
//! generator would send them with; every request records its position in
//! the schedule (`arrival`).
//!
//! The host thread sleeps on the collector while the engine works.

use crate::matrix::{Cell, ScenarioKind};
use crate::measure::serving::{schedule, Load, Rate, Search, ServingParams};
use crate::measure::IterationSpan;
use crate::measure::{requests, Collector};
use engine_api::ModelBox;
use engine_matrix_workloads::Workload;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a cell ended early.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// The engine refused the workload as unsupported.
    Unsupported(String),
    /// The engine refused or failed the workload.
    Failed(String),
    /// No token and no completion arrived for `stall` seconds.
    Hung(String),
}

pub struct Execution {
    pub collector: Arc<Collector>,
    pub spans: Vec<IterationSpan>,
    pub outcome: Result<(), Stop>,
    /// A serving sweep's (iteration index, request rate) per rate tried.
    pub segments: Vec<(u32, f64)>,
}

/// Time without any progress after which an engine counts as hung.
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

pub fn execute(model: &ModelBox, cell: &Cell, prompts: &Workload, stall: Duration) -> Execution {
    execute_into(
        model,
        cell,
        prompts,
        stall,
        Arc::new(Collector::new()),
        None,
    )
}

/// A load generator's share of a serving cell, and the wall-clock time
/// (ns since the Unix epoch) of its collector's epoch.
#[derive(Clone, Copy, Debug)]
pub struct LoadRun<'a> {
    pub job: &'a crate::measure::serving::LoadJob,
    pub epoch_unix_ns: u64,
}

/// Which of the workload's requests a request of the open loop sends.
#[derive(Clone, Copy, Debug)]
enum Lines {
    /// The one of the request's id (as a closed loop).
    Ids,
    /// The one at its position in the schedule (a trace's line).
    Positions,
    /// The one a single generator would have given it: `from` plus its
    /// position (a load generator's share of a computed schedule).
    From(u64),
}

/// A measured serving iteration's arrivals, computed before it starts.
struct Planned<'a> {
    arrivals: Arrivals<'a>,
    max_concurrency: Option<u32>,
    lines: Lines,
}

/// Arrival times (ns from the iteration's start): a trace's, or a
/// computed schedule's.
enum Arrivals<'a> {
    Trace(&'a [u64]),
    Schedule(Vec<u64>),
}

/// [`execute`] into a collector the caller holds too (the live view reads
/// it while the cell runs).
pub fn execute_into(
    model: &ModelBox,
    cell: &Cell,
    prompts: &Workload,
    stall: Duration,
    collector: Arc<Collector>,
    load: Option<LoadRun<'_>>,
) -> Execution {
    let mut run = Runner {
        model,
        cell,
        prompts,
        stall,
        collector,
        spans: Vec::new(),
        segments: Vec::new(),
        next_session: 0,
        load,
        lines_before: u64::from(cell.warmup),
    };
    let outcome = run.all();
    Execution {
        collector: run.collector,
        spans: run.spans,
        outcome,
        segments: run.segments,
    }
}

struct Runner<'a> {
    model: &'a ModelBox,
    cell: &'a Cell,
    prompts: &'a Workload,
    stall: Duration,
    collector: Arc<Collector>,
    spans: Vec<IterationSpan>,
    segments: Vec<(u32, f64)>,
    /// Multi-turn: the next session a client starts (sessions go on from
    /// warmup to the measured iterations, so none is replayed twice
    /// before the pool cycles).
    next_session: u64,
    /// A load generator's share (`None`: the whole schedule).
    load: Option<LoadRun<'a>>,
    /// Requests a single generator would have registered before this
    /// measured iteration (its warmups' and earlier iterations'): their
    /// ids, hence their prompts, follow.
    lines_before: u64,
}

impl<'a> Runner<'a> {
    fn all(&mut self) -> Result<(), Stop> {
        let start = Instant::now();
        for i in 0..self.cell.warmup {
            self.iteration(i, true)?;
        }
        if let Some(sv) = &self.cell.params.serving {
            if sv.load == Load::Sweep {
                return self.sweep(start);
            }
        }
        // Generators must agree on the iterations: their count only.
        if self.load.is_some() {
            for i in 0..self.cell.iterations.max(1) {
                self.iteration(i, false)?;
            }
            return Ok(());
        }
        let measure_start = Instant::now();
        let min = Duration::from_secs_f64(self.cell.min_duration_s.max(0.0));
        let max = Duration::from_secs_f64(self.cell.max_duration_s.max(0.0));
        let mut i = 0;
        loop {
            let elapsed = measure_start.elapsed();
            let enough = i >= self.cell.iterations.max(1) && elapsed >= min;
            if enough || (i >= 1 && start.elapsed() >= max) {
                return Ok(());
            }
            self.iteration(i, false)?;
            i += 1;
        }
    }

    fn iteration(&mut self, index: u32, warmup: bool) -> Result<(), Stop> {
        // A measured serving iteration's arrivals are computed before a
        // load generator sleeps to its shared start, so that its first
        // requests leave when they are due, however long the schedule.
        let planned = match (self.cell.kind, warmup) {
            (ScenarioKind::Serving, false) => Some(self.plan_arrivals(index)?),
            _ => None,
        };
        let shared_start = match planned {
            Some(_) => self.wait_for_slot(index)?,
            None => None,
        };
        let p = &self.cell.params;
        let start_ns = self.collector.now_ns();
        match self.cell.kind {
            ScenarioKind::Latency => self.batch(p.batch_size, index, warmup)?,
            ScenarioKind::Throughput => self.batch(p.num_requests, index, warmup)?,
            ScenarioKind::Concurrency => self.closed_loop(index, warmup)?,
            // A warmup is one request at a time; a measured iteration is
            // the whole schedule.
            ScenarioKind::Retrieval => {
                return Err(Stop::Failed(
                    "a retrieval cell runs searches, not generation (run::retrieval)".into(),
                ))
            }
            ScenarioKind::Serving if warmup => self.batch(1, index, warmup)?,
            ScenarioKind::Serving => {
                let Some(plan) = planned else {
                    return Err(Stop::Failed(
                        "internal: a measured serving iteration without its arrivals".into(),
                    ));
                };
                let arrivals = match &plan.arrivals {
                    Arrivals::Trace(t) => t,
                    Arrivals::Schedule(s) => s.as_slice(),
                };
                self.open_loop(
                    index,
                    arrivals,
                    plan.max_concurrency,
                    plan.lines,
                    shared_start,
                )?
            }
        }
        self.spans.push(IterationSpan {
            index,
            warmup,
            start_ns,
            end_ns: self.collector.now_ns(),
            // A few µs (/proc/self/statm), outside the timed span.
            rss_bytes: crate::telemetry::rss_bytes(),
        });
        Ok(())
    }

    /// Measured serving iteration `index`'s arrivals (ns from its start),
    /// the client's connection limit and which workload lines they send.
    fn plan_arrivals(&mut self, index: u32) -> Result<Planned<'a>, Stop> {
        let p = &self.cell.params;
        let sv = self.serving()?;
        let prompts = self.prompts;
        let max_concurrency = match self.load {
            Some(l) => l.job.max_concurrency,
            None => sv.max_concurrency,
        };
        if let Some(trace) = prompts.schedule_ns() {
            return Ok(Planned {
                arrivals: Arrivals::Trace(trace),
                max_concurrency,
                lines: Lines::Positions,
            });
        }
        let rate = self.rate(sv)?;
        let sched = schedule(
            sv,
            rate,
            p.duration_s,
            p.requests,
            self.seed() ^ u64::from(index),
        );
        let lines = match self.load {
            Some(_) => Lines::From(self.lines_before),
            None => Lines::Ids,
        };
        self.lines_before += sched.len() as u64;
        Ok(Planned {
            arrivals: Arrivals::Schedule(to_ns(&sched)),
            max_concurrency,
            lines,
        })
    }

    /// Registers and submits `n` requests as one submission.
    fn submit(&self, n: u32, index: u32, warmup: bool) -> Result<Vec<u64>, Stop> {
        self.submit_at(n, index, warmup, None, None)
    }

    /// A load generator's measured serving iteration: sleeps until its
    /// shared start and returns it on the collector's clock (`None`
    /// without a load share). A generator already past it starts at once,
    /// late, and its requests' send lag shows by how much.
    fn wait_for_slot(&self, index: u32) -> Result<Option<u64>, Stop> {
        let Some(l) = self.load else {
            return Ok(None);
        };
        let start = *l.job.starts_unix_ns.get(index as usize).ok_or_else(|| {
            Stop::Failed(format!(
                "load generator: no shared start for measured iteration {index}"
            ))
        })?;
        // Sleeps to a millisecond before the start; the open loop waits
        // for each arrival on the monotonic clock from there.
        let lead = 1_000_000;
        loop {
            let now = crate::clock::unix_ns_now();
            if now + lead >= start {
                break;
            }
            std::thread::sleep(
                Duration::from_nanos(start - now - lead).min(Duration::from_secs(1)),
            );
        }
        Ok(Some(start.saturating_sub(l.epoch_unix_ns)))
    }

    /// [`submit`](Self::submit), recording when the requests were due
    /// and their position in the schedule. `line`: the workload's request
    /// to send (a trace's line), instead of the one of the request's id.
    fn submit_at(
        &self,
        n: u32,
        index: u32,
        warmup: bool,
        scheduled: Option<(u64, u64)>,
        line: Option<u64>,
    ) -> Result<Vec<u64>, Stop> {
        let p = &self.cell.params;
        let ids =
            self.collector
                .register(n as usize, index, warmup, p.input_tokens, p.output_tokens);
        if let Some((t, arrival)) = scheduled {
            for &id in &ids {
                self.collector.mark_scheduled(id, t, arrival);
            }
        }
        let samples: Vec<_> = ids
            .iter()
            .map(|&id| match (warmup, line) {
                (true, _) => self.prompts.warmup_request(id),
                (false, Some(l)) => self.prompts.request(l),
                (false, None) => self.prompts.request(id),
            })
            .collect();
        self.send(&ids, samples)?;
        Ok(ids)
    }

    /// Records the lengths of registered `ids`, stamps their submit time
    /// and hands them to the engine as one submission.
    fn send(&self, ids: &[u64], samples: Vec<engine_matrix_workloads::Sample>) -> Result<(), Stop> {
        self.collector.set_lengths(ids, &samples);
        let reqs = requests(ids, samples);
        self.collector.mark_submitted(ids);
        if let Err(e) = self
            .model
            .submit(reqs.into(), self.collector.sink())
            .into_result()
        {
            self.collector.mark_refused(ids, &e);
            return Err(if e.is_unsupported() {
                Stop::Unsupported(e.message.to_string())
            } else {
                Stop::Failed(format!("submit refused: {e}"))
            });
        }
        Ok(())
    }

    fn batch(&mut self, n: u32, index: u32, warmup: bool) -> Result<(), Stop> {
        let ids = self.submit(n.max(1), index, warmup)?;
        let mut pending: HashSet<u64> = ids.into_iter().collect();
        while !pending.is_empty() {
            for id in self.wait()? {
                pending.remove(&id);
            }
        }
        Ok(())
    }

    /// Submits turn `turn` of session `session` (multi-turn) as one
    /// request; `None` when the session has no such turn.
    fn submit_turn(
        &self,
        session: u64,
        turn: usize,
        index: u32,
        warmup: bool,
    ) -> Result<Option<u64>, Stop> {
        let Some(sample) = self.prompts.session_turn(session, turn) else {
            return Ok(None);
        };
        let ids = self.collector.register(1, index, warmup, 0, 0);
        self.collector.set_turn(ids[0], session, turn as u32);
        self.send(&ids, vec![sample])?;
        Ok(Some(ids[0]))
    }

    /// Multi-turn: each of `concurrency` clients runs sessions, a turn
    /// at a time (its next turn when the previous one ends, a new session
    /// after a session's last turn), until `requests` turns were sent
    /// (or `duration_s` has passed).
    fn sessions_loop(&mut self, index: u32, warmup: bool) -> Result<(), Stop> {
        let p = &self.cell.params;
        let clients = p.concurrency.max(1) as usize;
        let more = self.more_requests();
        // request id -> (session, turn)
        let mut flying: std::collections::HashMap<u64, (u64, usize)> = Default::default();
        let mut sent = 0;
        while flying.len() < clients && more(sent) {
            let s = self.next_session;
            self.next_session += 1;
            match self.submit_turn(s, 0, index, warmup)? {
                Some(id) => {
                    flying.insert(id, (s, 0));
                    sent += 1;
                }
                None => return Err(Stop::Failed("multi-turn: an empty session".into())),
            }
        }
        while !flying.is_empty() {
            for id in self.wait()? {
                let Some((s, t)) = flying.remove(&id) else {
                    continue;
                };
                if !more(sent) {
                    continue;
                }
                let next = match self.submit_turn(s, t + 1, index, warmup)? {
                    Some(id) => Some((id, (s, t + 1))),
                    None => {
                        let s = self.next_session;
                        self.next_session += 1;
                        self.submit_turn(s, 0, index, warmup)?
                            .map(|id| (id, (s, 0)))
                    }
                };
                if let Some((id, st)) = next {
                    flying.insert(id, st);
                    sent += 1;
                }
            }
        }
        Ok(())
    }

    /// A closed loop's budget: whether another request may be sent after
    /// `sent`: until `requests` were sent, or until `duration_s` (from
    /// now) has passed when it is set.
    fn more_requests(&self) -> impl Fn(u32) -> bool {
        let p = &self.cell.params;
        let total = p.requests.max(1);
        let until =
            (p.duration_s > 0.0).then(|| Instant::now() + Duration::from_secs_f64(p.duration_s));
        move |sent: u32| match until {
            Some(t) => Instant::now() < t,
            None => sent < total,
        }
    }

    fn closed_loop(&mut self, index: u32, warmup: bool) -> Result<(), Stop> {
        if matches!(self.prompts, Workload::Sessions { .. }) {
            return self.sessions_loop(index, warmup);
        }
        let p = &self.cell.params;
        let clients = p.concurrency.max(1);
        let more = self.more_requests();
        let mut sent = 0;
        let mut in_flight = 0;
        while in_flight < clients && more(sent) {
            self.submit(1, index, warmup)?;
            sent += 1;
            in_flight += 1;
        }
        while in_flight > 0 {
            for _ in self.wait()? {
                in_flight -= 1;
                if more(sent) {
                    self.submit(1, index, warmup)?;
                    sent += 1;
                    in_flight += 1;
                }
            }
        }
        Ok(())
    }

    fn serving(&self) -> Result<&'_ ServingParams, Stop> {
        self.cell
            .params
            .serving
            .as_ref()
            .ok_or_else(|| Stop::Failed("a serving cell without serving settings".into()))
    }

    /// The rate to run at (`None`: all at once).
    fn rate(&self, sv: &ServingParams) -> Result<Option<f64>, Stop> {
        match (sv.request_rate, sv.rate()) {
            (Rate::Sustainable, None) => Err(Stop::Failed(
                "request_rate: sustainable, but no sweep cell of this model and engine found a sustainable rate earlier in the run".into(),
            )),
            (_, r) => Ok(r),
        }
    }

    /// The schedule's seed: the same for every engine of a workload.
    fn seed(&self) -> u64 {
        crate::measure::serving::schedule_seed(self.cell)
    }

    /// Sends one request at each time of `sched` (ns from `t0` on the
    /// collector's clock; `None`: from now), at most `max_concurrency` in
    /// flight (the others wait, late), then waits for all of them. A load
    /// generator sends only its share of the positions. `lines`: which
    /// of the workload's requests each sends.
    fn open_loop(
        &mut self,
        index: u32,
        sched: &[u64],
        max_concurrency: Option<u32>,
        lines: Lines,
        t0: Option<u64>,
    ) -> Result<(), Stop> {
        let maxc = max_concurrency.map_or(usize::MAX, |m| m as usize);
        let epoch = self.collector.epoch();
        // A millisecond's lead, so the first request is not already late.
        let t0 = t0.unwrap_or_else(|| self.collector.now_ns() + 1_000_000);
        let (first, every) = self.load.map_or((0, 1), |l| {
            (l.job.index as usize, l.job.count.max(1) as usize)
        });
        let mine: Vec<usize> = (first..sched.len()).step_by(every).collect();
        let due = |k: usize| t0 + sched[mine[k]];
        let line = |k: usize| {
            let pos = mine[k] as u64;
            match lines {
                Lines::Ids => None,
                Lines::Positions => Some(pos),
                Lines::From(base) => Some(base + pos),
            }
        };
        let sched = &mine;
        let (mut next, mut in_flight) = (0, 0usize);
        let mut progress = Progress::new(&self.collector);
        let mut last_check = Instant::now();
        loop {
            while next < sched.len() && in_flight < maxc {
                let d = due(next);
                if d > self.collector.now_ns() {
                    break;
                }
                self.submit_at(1, index, false, Some((d, mine[next] as u64)), line(next))?;
                next += 1;
                in_flight += 1;
            }
            if next == sched.len() && in_flight == 0 {
                return Ok(());
            }
            let wait_for_arrival = next < sched.len() && in_flight < maxc;
            let deadline = if wait_for_arrival {
                epoch + Duration::from_nanos(due(next))
            } else {
                Instant::now() + Duration::from_secs(1).min(self.stall)
            };
            let done = self.collector.wait_finished(deadline);
            if !done.is_empty() {
                in_flight = in_flight.saturating_sub(done.len());
                progress.moved();
                continue;
            }
            // Progress is checked at most once a second: counting tokens
            // walks every record.
            if in_flight > 0 && last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                progress.check(
                    &self.collector,
                    self.stall,
                    &format!(" with {in_flight} requests in flight"),
                )?;
            }
        }
    }

    /// `load: sweep`: one segment per rate the search tries, each its own
    /// measured iteration, until the search is done or the cell's
    /// `max_duration_s` is spent.
    fn sweep(&mut self, start: Instant) -> Result<(), Stop> {
        let sv = self.serving()?.clone();
        let p = &self.cell.params;
        let (duration_s, requests) = (p.duration_s, p.requests);
        let first = self.rate(&sv)?.unwrap_or(1.0);
        let mut search = Search::new(first, sv.sweep_steps);
        let max = Duration::from_secs_f64(self.cell.max_duration_s.max(0.0));
        let mut index = 0u32;
        while let Some(rate) = search.next() {
            if index > 0 && start.elapsed() + Duration::from_secs_f64(duration_s) > max {
                break;
            }
            let sched = schedule(
                &sv,
                Some(rate),
                duration_s,
                requests,
                self.seed() ^ u64::from(index),
            );
            let start_ns = self.collector.now_ns();
            self.open_loop(index, &to_ns(&sched), sv.max_concurrency, Lines::Ids, None)?;
            let span = IterationSpan {
                index,
                warmup: false,
                start_ns,
                end_ns: self.collector.now_ns(),
                rss_bytes: crate::telemetry::rss_bytes(),
            };
            self.spans.push(span);
            let recs = self.collector.records_of(index);
            let refs: Vec<&crate::measure::RequestRecord> = recs.iter().collect();
            let step = crate::measure::serving::evaluate(&refs, &span, rate, &sv.slo);
            search.record(rate, step.passed);
            self.segments.push((index, rate));
            index += 1;
        }
        Ok(())
    }

    /// Sleeps until requests finish; fails when nothing moves for `stall`.
    fn wait(&self) -> Result<Vec<u64>, Stop> {
        let mut progress = Progress::new(&self.collector);
        loop {
            let done = self
                .collector
                .wait_finished(Instant::now() + Duration::from_secs(1).min(self.stall));
            if !done.is_empty() {
                return Ok(done);
            }
            progress.check(&self.collector, self.stall, "")?;
        }
    }
}

/// A schedule in seconds as nanoseconds (rounded: 0.187 s is 187 ms to
/// the nanosecond).
fn to_ns(sched: &[f64]) -> Vec<u64> {
    sched.iter().map(|s| (s * 1e9).round() as u64).collect()
}

/// Stall detection: when tokens last arrived.
struct Progress {
    seen: usize,
    last: Instant,
}

impl Progress {
    fn new(c: &Collector) -> Progress {
        Progress {
            seen: c.tokens_received(),
            last: Instant::now(),
        }
    }

    /// A request finished.
    fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// A `Hung` stop when no token arrived for `stall` (`what` ends the
    /// message).
    fn check(&mut self, c: &Collector, stall: Duration, what: &str) -> Result<(), Stop> {
        let now = c.tokens_received();
        if now != self.seen {
            self.seen = now;
            self.last = Instant::now();
        } else if self.last.elapsed() >= stall {
            return Err(Stop::Hung(format!(
                "engine made no progress for {:.0} s{what}",
                stall.as_secs_f64()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use engine_api::{
        ffi_engine, Completion, Engine, EngineError, EngineInfo, FinishReason, LoadOptions, Logits,
        MemoryStats, Model, ModelSpec, Request, SinkBox, TokenEvent,
    };
    use std::path::Path;
    use std::sync::Mutex;

    /// How the fake model answers a submission.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Never answers.
        Hang,
        /// Answers every request with an error.
        Fail,
        /// Generates the requested tokens at once.
        Echo,
    }

    struct Fake(Mode);
    struct FakeModel(Mode, Mutex<Vec<SinkBox>>);

    impl Engine for Fake {
        fn info(&self) -> EngineInfo {
            EngineInfo::default()
        }
        fn load(&self, _: &ModelSpec, _: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
            Ok(Box::new(FakeModel(self.0, Mutex::default())))
        }
    }

    impl Model for FakeModel {
        fn submit(&self, requests: Vec<Request>, sink: SinkBox) -> Result<(), EngineError> {
            match self.0 {
                Mode::Hang => self.1.lock().unwrap().push(sink),
                Mode::Fail => {
                    for r in requests {
                        sink.error(r.id, EngineError::runtime("out of memory"));
                    }
                }
                Mode::Echo => {
                    for step in 0..requests[0].max_new_tokens {
                        let ev: Vec<TokenEvent> = requests
                            .iter()
                            .map(|r| TokenEvent {
                                request_id: r.id,
                                token: step,
                            })
                            .collect();
                        sink.tokens(ev.as_slice().into());
                    }
                    for r in &requests {
                        sink.done(Completion {
                            request_id: r.id,
                            prompt_tokens: r.prompt.len() as u32,
                            generated_tokens: r.max_new_tokens,
                            finish_reason: FinishReason::Length,
                            queue_us: 0,
                            prefill_us: 0,
                            decode_us: 0,
                            decode_steps: r.max_new_tokens - 1,
                            cached_prompt_tokens: engine_api::abi_stable::std_types::RNone,
                        });
                    }
                }
            }
            Ok(())
        }
        fn memory(&self) -> MemoryStats {
            MemoryStats::default()
        }
        fn score(&self, _: &[u32]) -> Result<Logits, EngineError> {
            Err(EngineError::unsupported("no scores"))
        }
    }

    /// The cells' random workload: `input` and `output` tokens.
    fn random(input: u32, output: u32) -> Workload {
        Workload::Random(engine_matrix_workloads::random::RandomPrompts {
            gen: engine_matrix_workloads::random::PromptGen::new(0, "k", 100, None),
            input_tokens: input,
            output_tokens: output,
            prefix_tokens: 0,
            prefix_groups: 1,
        })
    }

    fn model(mode: Mode) -> ModelBox {
        let spec = ModelSpec {
            name: "m".into(),
            architecture: "gpt2".into(),
            path: "/x".into(),
            dtype: "f32".into(),
            quantization: "none".into(),
        };
        let engine = ffi_engine(|| Ok(Fake(mode))).into_result().ok().unwrap();
        engine
            .load(&spec, &LoadOptions::default())
            .into_result()
            .ok()
            .unwrap()
    }

    fn cells() -> Vec<Cell> {
        let text = "name: t\nmodels: [{name: m, path: /x}]\nengines: [{name: e}]\nscenarios:\n  - {name: lat, kind: latency, warmup: 1, iterations: 2, batch_size: 3, input_tokens: 4, output_tokens: 5}\n  - {name: con, kind: concurrency, warmup: 0, iterations: 1, concurrency: 2, requests: 5, input_tokens: 4, output_tokens: 5}\n";
        Matrix::parse(text, Path::new("t.yaml"))
            .unwrap()
            .cells(false)
    }

    #[test]
    fn multi_turn_clients_run_their_sessions_turn_after_turn() {
        // Sessions of 3, 2 and 4 turns (prompt lengths 1.., outputs 2);
        // the concurrency cell has 2 clients and sends 5 requests.
        let session = |s: u32, n: u32| -> Vec<engine_matrix_workloads::Sample> {
            (0..n)
                .map(|t| engine_matrix_workloads::Sample {
                    prompt: vec![s; (10 * s + t + 1) as usize],
                    output_tokens: 2,
                })
                .collect()
        };
        let w = Workload::Sessions {
            sessions: vec![session(1, 3), session(2, 2), session(3, 4)],
            record: Default::default(),
        };
        let ex = execute(&model(Mode::Echo), &cells()[1], &w, DEFAULT_STALL);
        assert_eq!(ex.outcome, Ok(()));
        let recs = ex.collector.take_records();
        assert_eq!(recs.len(), 5);
        // Each session's turns are sent in order, one at a time, with the
        // history's prompt; at most 2 sessions run at once.
        let mut by_session: std::collections::BTreeMap<u64, Vec<(u32, u32)>> = Default::default();
        for r in &recs {
            let (s, t) = (r.session.unwrap(), r.turn.unwrap());
            by_session.entry(s).or_default().push((t, r.prompt_tokens));
            assert_eq!(r.prompt_tokens, 10 * (s as u32 + 1) + t + 1, "{s}/{t}");
        }
        for turns in by_session.values() {
            let idx: Vec<u32> = turns.iter().map(|x| x.0).collect();
            assert_eq!(idx, (0..idx.len() as u32).collect::<Vec<_>>());
        }
        assert!(by_session.len() <= 3, "{by_session:?}");
        assert_eq!(
            by_session[&0].len() + by_session[&1].len() + by_session.get(&2).map_or(0, Vec::len),
            5
        );
    }

    #[test]
    fn latency_and_closed_loop_submit_what_the_cell_says() {
        let prompts = random(4, 5);
        let m = model(Mode::Echo);
        let cells = cells();
        let ex = execute(&m, &cells[0], &prompts, DEFAULT_STALL);
        assert_eq!(ex.outcome, Ok(()));
        let recs = ex.collector.take_records();
        assert_eq!(recs.len(), 3 * 3, "warmup + 2 iterations of batch 3");
        assert_eq!(recs.iter().filter(|r| r.warmup).count(), 3);
        assert!(recs
            .iter()
            .all(|r| r.tokens.len() == 5 && r.prompt_tokens == 4));
        assert_eq!(ex.spans.len(), 3);

        let ex = execute(&m, &cells[1], &prompts, DEFAULT_STALL);
        assert_eq!(ex.outcome, Ok(()));
        assert_eq!(
            ex.collector.take_records().len(),
            5,
            "closed loop sends `requests`"
        );
    }

    /// A trace cell sends line `i` at the trace's time `i` (× time_scale)
    /// from the first, warms up on prompts of the trace's lengths that
    /// share none of its blocks, and replays the whole trace each
    /// measured iteration.
    #[test]
    fn a_trace_is_replayed_at_its_times_in_its_order() {
        use engine_matrix_workloads::random::PromptGen;
        use engine_matrix_workloads::trace;
        let text = "name: t\nmodels: [{name: m, path: /x}]\nengines: [{name: e}]\nscenarios:\n  - {name: s, kind: serving, warmup: 2, iterations: 2, dataset: trace, dataset_path: /t.jsonl, time_scale: 0.5}\n";
        let cell = &Matrix::parse(text, Path::new("t.yaml"))
            .unwrap()
            .cells(false)[0];
        let lines = [
            (1000, 6, 2, "[1]"),
            (1040, 5, 3, "[1]"),
            (1100, 7, 1, "[2]"),
        ];
        let jsonl: String = lines
            .iter()
            .map(|(t, i, o, h)| {
                format!("{{\"timestamp\": {t}, \"input_length\": {i}, \"output_length\": {o}, \"hash_ids\": {h}}}\n")
            })
            .collect();
        let entries = trace::parse(&jsonl, "/t.jsonl").unwrap();
        let gen = PromptGen::new(0, "k", 100, None);
        let t = trace::build(&entries, "/t.jsonl", &gen, None, 64, 0.5).unwrap();
        let samples = t.samples.clone();
        let prompts = Workload::Trace(t);
        let ex = execute(&model(Mode::Echo), cell, &prompts, DEFAULT_STALL);
        assert_eq!(ex.outcome, Ok(()));
        let recs = ex.collector.take_records();
        assert_eq!(recs.len(), 2 + 2 * 3);
        let warm: Vec<_> = recs.iter().filter(|r| r.warmup).collect();
        assert_eq!(
            warm.iter()
                .map(|r| (r.prompt_tokens, r.max_new_tokens))
                .collect::<Vec<_>>(),
            [(6, 2), (5, 3)]
        );
        assert_eq!(prompts.warmup_request(0).prompt.len(), 6);
        assert_ne!(prompts.warmup_request(0).prompt, samples[0].prompt);
        for it in 0..2 {
            let r: Vec<_> = recs
                .iter()
                .filter(|r| !r.warmup && r.iteration == it)
                .collect();
            assert_eq!(
                r.iter()
                    .map(|r| (r.prompt_tokens, r.max_new_tokens))
                    .collect::<Vec<_>>(),
                [(6, 2), (5, 3), (7, 1)]
            );
            let s0 = r[0].scheduled_ns.unwrap();
            let offsets: Vec<u64> = r.iter().map(|r| r.scheduled_ns.unwrap() - s0).collect();
            assert_eq!(
                offsets,
                [0, 20_000_000, 50_000_000],
                "half the trace's gaps"
            );
            for x in &r {
                assert!(x.submit_ns >= x.scheduled_ns.unwrap());
                assert_eq!(x.tokens.len() as u32, x.max_new_tokens);
            }
        }
        // Sent in order, each the line's own prompt.
        assert_eq!(prompts.request(1), samples[1]);
    }

    #[test]
    fn a_hung_engine_is_detected_and_failures_are_recorded() {
        let prompts = random(4, 5);
        let cells = cells();
        let ex = execute(
            &model(Mode::Hang),
            &cells[0],
            &prompts,
            Duration::from_millis(200),
        );
        assert!(matches!(ex.outcome, Err(Stop::Hung(_))), "{:?}", ex.outcome);

        let ex = execute(&model(Mode::Fail), &cells[0], &prompts, DEFAULT_STALL);
        assert_eq!(ex.outcome, Ok(()), "request errors do not stop the cell");
        let recs = ex.collector.take_records();
        assert!(recs.iter().all(|r| r
            .error
            .as_ref()
            .is_some_and(|e| e.message == "out of memory")));
    }
}
