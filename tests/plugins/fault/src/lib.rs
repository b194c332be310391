//! engine-matrix test plugin `fault` (`libem_fault.so`): a tiny, instant,
//! deterministic fake GPT-2 that misbehaves on demand, so the host's
//! isolation of engines (one child worker process per engine) can be tested:
//! every fault must end as a `failed` (or flagged) cell with a clear
//! reason, and no other result may be lost.
//!
//! Not a product engine: the workspace builds it only when asked
//! (`cargo build --release -p em-test-fault`).
//!
//! # The model
//!
//! `load` reads `config.json` of the model folder (any valid GPT-2 config,
//! e.g. the host's synthetic `tiny` model) for `vocab_size`, `n_positions`
//! and `eos_token_id`; `model.safetensors` is never read, so loading is
//! instant. After token `t` the next token is [`next_token`]`(t)`:
//! `(t * 31 + 7) % vocab_size`, or the id after it (mod `vocab_size`) if
//! that is the EOS id. Every logits row is `0.0` at that id and `-1e9`
//! everywhere else, so greedy decoding and every sampling setting pick it:
//! generation never stops on EOS and always runs to `max_new_tokens`.
//! Batching, sampling, sink calls and engine-side timing come from
//! [`engine_kit::spawn`], exactly as for the real in-process engines.
//! `score` returns the same rows for every position and never faults.
//! `memory()` reports zeros (there are no weights and no KV cache).
//!
//! Supported: architecture `gpt2` (the config's `model_type`), dtype `f32`,
//! quantization `none`; anything else is an `unsupported` error.
//!
//! # Options (`options_json`, the matrix engine's `options`)
//!
//! | option | values | default | meaning |
//! |---|---|---|---|
//! | `fault` | `none`, `panic`, `abort`, `segfault`, `hang`, `leak`, `wrong_count`, `out_of_vocab` | `none` | what goes wrong |
//! | `at` | `load`, `prefill`, `decode` | `decode` | where `panic` / `abort` / `segfault` / `hang` strike; ignored by the other faults |
//! | `after_steps` | integer >= 0 | `0` | the fault strikes on every `prefill` (`at: prefill`) or `decode` (`at: decode`, and `leak`) call once this many calls of that kind have succeeded on this loaded model; ignored for `at: load`, `none`, `wrong_count`, `out_of_vocab` |
//! | `leak_mb_per_step` | number >= 0 | `1.0` | MiB leaked per decode step by `leak` |
//! | `step_ms` | number >= 0 | `0` | every prefill and decode call sleeps this long: a service time that does not depend on the CPU (queueing tests) |
//! | `speed_test` | bool | `false` | turns on the tuner's test function below; without it `knob` and `gear` do nothing and a step takes `step_ms` |
//! | `knob` | integer 0..=15 | `0` | the tuner's test function: the step time is multiplied by `1 + 0.04 (knob - 11)²` |
//! | `gear` | `low`, `mid`, `high` | `low` | ... and by 1.6, 1.0 or 1.25: the optimum is `knob: 11, gear: mid` (see [`speed_factor`]) |
//! | `noise` | number in 0..1 | `0` | each step's time is further multiplied by `1 + noise * u`, `u` uniform in [-1, 1] (seeded by `noise_seed`, default 0, and the load count) |
//! | `noise_seed` | integer | `0` | see `noise` |
//! | `threads` | anything | — | accepted and ignored (the host passes it to every engine) |
//!
//! Any other key, a `fault` or `at` outside its values, or a negative / non
//! finite `leak_mb_per_step` makes `load` fail with an `invalid argument`
//! error (the cell fails at load) whose message starts with
//! `fault options:` and names the option, e.g. `fault options: unknown
//! fault "explode"; expected one of none, panic, abort, segfault, hang,
//! leak, wrong_count, out_of_vocab`.
//!
//! `after_steps` counts calls, not requests or tokens: one `prefill` call
//! admits every request that joins the batch at that point, and one
//! `decode` call advances every running sequence by one token. The
//! counters belong to the loaded model (a fresh `load` starts from zero)
//! and include the host's warm-up requests. Each request gets its first
//! token from prefill and one more per decode step, so with a single
//! request at a time (`batching: none`) and `at: decode`, `after_steps: n`,
//! the first requests complete normally and the request that is running
//! at decode call `n + 1` is the one hit.
//!
//! # What the host observes
//!
//! `{at}` below is `load`, `prefill` or `decode`. `at: load` strikes in
//! `Engine::load` once the options are parsed and checked, before the
//! model folder is read or the dtype checked.
//!
//! * `none`: a working engine. Every request gets exactly
//!   `max_new_tokens` tokens, all `< vocab_size` and never EOS, and a
//!   `Completion` with `generated_tokens == max_new_tokens`,
//!   finish reason `length`.
//! * `panic`: `panic!("fault plugin: deliberate panic in {at}")`; the
//!   process survives (the panic is caught inside the plugin; Rust's panic
//!   hook still prints the usual `thread '…' panicked at …` line to stderr).
//!   - `at: load`: `load` returns an error of kind `panic` with message
//!     `engine panicked in load: fault plugin: deliberate panic in load`
//!     (caught by engine-api's boundary glue).
//!   - `at: prefill` / `decode`: the requests of the failing call get
//!     `SinkFfi::error` with kind `panic` and message
//!     `engine panicked in {at}: fault plugin: deliberate panic in {at}`
//!     (caught by engine-kit's scheduler). The model is then poisoned:
//!     every other request still queued or running ends with an error of
//!     kind `runtime`, message `model is unusable after an earlier engine
//!     panic: engine panicked in {at}: fault plugin: deliberate panic in
//!     {at}`, and later `submit` / `score` calls return that same error.
//!     Tokens sent before the panic stay sent.
//! * `abort`: prints `fault plugin: deliberate abort in {at}` to stderr,
//!   then `std::process::abort()`: the process dies of `SIGABRT` (signal 6)
//!   with no further output.
//! * `segfault`: prints `fault plugin: deliberate segfault in {at}` to
//!   stderr, then writes through an invalid pointer (address 64, in the
//!   never-mapped first page): the process dies of `SIGSEGV` (signal 11),
//!   in debug and release builds alike.
//! * `hang`: prints `fault plugin: hanging in {at}` to stderr, then sleeps
//!   forever (`loop { sleep(60 s) }`).
//!   - `at: load`: `load` never returns.
//!   - `at: prefill` / `decode`: on the scheduler thread. `submit` still
//!     returns `Ok` (it only enqueues) and `memory()` still answers, but
//!     no token, `done` or `error` ever arrives again for any request of
//!     this model, `score` blocks forever, and dropping (unloading) the
//!     model blocks forever (it joins the scheduler thread). Only the
//!     host's stall / cell timeout ends it (by killing the worker).
//! * `leak`: from decode call `after_steps + 1` on, every decode call
//!   allocates `leak_mb_per_step` MiB, writes every byte of it (so the
//!   pages are resident) and leaks it (`Box::leak`): the process's RSS
//!   grows by that much per decode step (per step, not per sequence; prefill
//!   does not leak) until the OS or the host stops it. Tokens, counts and
//!   completions are those of `none`; the engine's own `memory()` stays 0.
//! * `wrong_count`: the host's requests are resubmitted to the scheduler
//!   with `max_new_tokens - 1` (and `1` becomes `2` when prompt + 2 tokens
//!   fit in `n_positions`; otherwise it stays `1`), so each request really
//!   gets one token too few (one too many for `max_new_tokens: 1`). The
//!   `Completion` is consistent with what was sent: `generated_tokens` is
//!   the number of tokens sent, finish reason `length`. The host sees an
//!   output-length mismatch on every request (`output_length_mismatches`)
//!   and no `token_count_disagreements`.
//! * `out_of_vocab`: the model generates as for `none`, but the sink the
//!   host passed is wrapped, and every token id handed to it is
//!   `vocab_size + 5` ([`OOV_OFFSET`]). Token counts and completions are
//!   correct; every output token counts in `out_of_vocab_tokens`.
//!   (The kit samples from a row of `vocab_size` logits, so ids outside the
//!   vocabulary can only be produced after sampling, at the sink.)
//!
//! `info()`: name `fault`, runtime `none (fault injection)`, device `cpu`,
//! dtype `f32`, quantization `none`, and the kit's batching policies.

use engine_api::abi_stable::sabi_trait::TD_Opaque;
use engine_api::abi_stable::std_types::RSlice;
use engine_api::ffi::{SinkFfi, SinkFfi_TO};
use engine_api::{
    Completion, Engine, EngineError, EngineInfo, LoadOptions, Logits, MemoryStats, Model,
    ModelSpec, Request, SinkBox, TokenEvent,
};
use engine_kit::{Backend, KitModel, SeqId};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The plugin's engine name.
pub const NAME: &str = "fault";

/// `out_of_vocab` sends `vocab_size + OOV_OFFSET` as every token id.
pub const OOV_OFFSET: u32 = 5;

/// The logit of every id but the chosen one.
const LOW: f32 = -1.0e9;

/// What goes wrong (option `fault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Panic,
    Abort,
    Segfault,
    Hang,
    Leak,
    WrongCount,
    OutOfVocab,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::None,
        Fault::Panic,
        Fault::Abort,
        Fault::Segfault,
        Fault::Hang,
        Fault::Leak,
        Fault::WrongCount,
        Fault::OutOfVocab,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Panic => "panic",
            Fault::Abort => "abort",
            Fault::Segfault => "segfault",
            Fault::Hang => "hang",
            Fault::Leak => "leak",
            Fault::WrongCount => "wrong_count",
            Fault::OutOfVocab => "out_of_vocab",
        }
    }

    /// Whether `at` decides where this fault strikes.
    pub fn uses_at(self) -> bool {
        matches!(
            self,
            Fault::Panic | Fault::Abort | Fault::Segfault | Fault::Hang
        )
    }
}

/// Where `panic` / `abort` / `segfault` / `hang` strike (option `at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Load,
    Prefill,
    Decode,
}

impl At {
    pub const ALL: [At; 3] = [At::Load, At::Prefill, At::Decode];

    pub fn as_str(self) -> &'static str {
        match self {
            At::Load => "load",
            At::Prefill => "prefill",
            At::Decode => "decode",
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The options as sent by the host (see the crate docs).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptions {
    fault: Option<String>,
    at: Option<String>,
    after_steps: Option<u64>,
    leak_mb_per_step: Option<f64>,
    step_ms: Option<f64>,
    speed_test: Option<bool>,
    knob: Option<i64>,
    gear: Option<String>,
    noise: Option<f64>,
    noise_seed: Option<u64>,
    #[allow(dead_code)] // accepted and ignored
    threads: Option<serde::de::IgnoredAny>,
}

/// Parsed and checked options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultOptions {
    pub fault: Fault,
    pub at: At,
    pub after_steps: u64,
    pub leak_mb_per_step: f64,
    pub step_ms: f64,
    /// `step_ms` times [`speed_factor`] (with `speed_test`): the service
    /// time of a step.
    pub speed_test: bool,
    pub knob: i64,
    pub gear: &'static str,
    pub noise: f64,
    pub noise_seed: u64,
}

/// The gears of the `gear` option.
pub const GEARS: [&str; 3] = ["low", "mid", "high"];

/// How much slower than its best a step runs with `knob` and `gear`: 1.0
/// at `knob: 11, gear: mid`, the optimum the tuner's tests look for.
pub fn speed_factor(knob: i64, gear: &str) -> f64 {
    let g = match gear {
        "mid" => 1.0,
        "high" => 1.25,
        _ => 1.6,
    };
    (1.0 + 0.04 * ((knob - 11) as f64).powi(2)) * g
}

impl Default for FaultOptions {
    fn default() -> Self {
        FaultOptions {
            fault: Fault::None,
            at: At::Decode,
            after_steps: 0,
            leak_mb_per_step: 1.0,
            step_ms: 0.0,
            speed_test: false,
            knob: 0,
            gear: "low",
            noise: 0.0,
            noise_seed: 0,
        }
    }
}

fn one_of<T: Copy>(
    option: &str,
    value: Option<&str>,
    all: &[T],
    name: impl Fn(T) -> &'static str,
    default: T,
) -> Result<T, EngineError> {
    let Some(value) = value else {
        return Ok(default);
    };
    all.iter()
        .copied()
        .find(|&v| name(v) == value)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
            EngineError::invalid_argument(format!(
                "{NAME} options: unknown {option} {value:?}; expected one of {}",
                names.join(", ")
            ))
        })
}

impl FaultOptions {
    /// Parses `options_json`; errors are `invalid argument` and name the
    /// option.
    pub fn parse(json: &str) -> Result<Self, EngineError> {
        let raw: RawOptions = engine_kit::parse_options(NAME, json)?;
        let d = FaultOptions::default();
        let fault = one_of(
            "fault",
            raw.fault.as_deref(),
            &Fault::ALL,
            Fault::as_str,
            d.fault,
        )?;
        let at = one_of("at", raw.at.as_deref(), &At::ALL, At::as_str, d.at)?;
        let leak_mb_per_step = raw.leak_mb_per_step.unwrap_or(d.leak_mb_per_step);
        if !leak_mb_per_step.is_finite() || leak_mb_per_step < 0.0 {
            return Err(EngineError::invalid_argument(format!(
                "{NAME} options: leak_mb_per_step must be a finite number >= 0, not {leak_mb_per_step}"
            )));
        }
        let step_ms = raw.step_ms.unwrap_or(d.step_ms);
        if !step_ms.is_finite() || step_ms < 0.0 {
            return Err(EngineError::invalid_argument(format!(
                "{NAME} options: step_ms must be a finite number >= 0, not {step_ms}"
            )));
        }
        let knob = raw.knob.unwrap_or(d.knob);
        if !(0..=15).contains(&knob) {
            return Err(EngineError::invalid_argument(format!(
                "{NAME} options: knob must be in 0..=15, not {knob}"
            )));
        }
        let gear = one_of("gear", raw.gear.as_deref(), &GEARS, |g| g, d.gear)?;
        let noise = raw.noise.unwrap_or(d.noise);
        if !(0.0..1.0).contains(&noise) {
            return Err(EngineError::invalid_argument(format!(
                "{NAME} options: noise must be in [0, 1), not {noise}"
            )));
        }
        Ok(FaultOptions {
            fault,
            at,
            after_steps: raw.after_steps.unwrap_or(d.after_steps),
            leak_mb_per_step,
            step_ms,
            speed_test: raw.speed_test.unwrap_or(d.speed_test),
            knob,
            gear,
            noise,
            noise_seed: raw.noise_seed.unwrap_or(d.noise_seed),
        })
    }
}

/// The token the fake model produces after `last`: `(last * 31 + 7) %
/// vocab`, moved to the next id if that is `eos`.
pub fn next_token(last: u32, vocab: usize, eos: Option<u32>) -> u32 {
    let vocab = vocab.max(1) as u64;
    let t = ((last as u64 * 31 + 7) % vocab) as u32;
    if Some(t) == eos && vocab > 1 {
        ((t as u64 + 1) % vocab) as u32
    } else {
        t
    }
}

/// Sleeps `ms` (the `step_ms` option).
fn pause(ms: f64) {
    if ms > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(ms / 1e3));
    }
}

/// Bytes leaked so far by `leak`, in this process (all models).
pub fn leaked_bytes() -> u64 {
    LEAKED.load(Ordering::Relaxed)
}

static LEAKED: AtomicU64 = AtomicU64::new(0);

/// Models loaded in this process (varies the noise between loads).
static LOADS: AtomicU64 = AtomicU64::new(0);

/// Allocates `bytes`, writes every byte (so every page is resident) and
/// leaks it.
fn leak(bytes: usize) {
    if bytes == 0 {
        return;
    }
    let block: &'static mut [u8] = Box::leak(vec![0xA5u8; bytes].into_boxed_slice());
    // Keep the optimizer from eliding the allocation or the writes.
    std::hint::black_box(&mut *block);
    LEAKED.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Strikes with `fault` if it is one that `at` decides (panic, abort,
/// segfault, hang); returns for the others.
fn strike(fault: Fault, at: At) {
    match fault {
        Fault::Panic => panic!("fault plugin: deliberate panic in {at}"),
        Fault::Abort => {
            eprintln!("fault plugin: deliberate abort in {at}");
            std::process::abort()
        }
        Fault::Segfault => {
            eprintln!("fault plugin: deliberate segfault in {at}");
            segfault()
        }
        Fault::Hang => {
            eprintln!("fault plugin: hanging in {at}");
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        Fault::None | Fault::Leak | Fault::WrongCount | Fault::OutOfVocab => {}
    }
}

/// A real SIGSEGV. Not through a null pointer: debug builds check
/// `write_volatile`'s pointer and abort (SIGABRT) on null. Address 64 is
/// aligned, non-null and in the first page, which Linux never maps
/// (`vm.mmap_min_addr`); std's SIGSEGV handler (stack-overflow detection)
/// sees a fault outside any guard page, restores the default action and
/// returns, so the write faults again and the process dies of SIGSEGV.
fn segfault() -> ! {
    let p = std::ptr::without_provenance_mut::<u64>(64);
    // SAFETY: none, deliberately: this write is meant to crash the process.
    unsafe { p.write_volatile(0xDEAD) };
    // Unreachable unless page 0 is mapped.
    std::process::abort()
}

/// The fake model behind [`engine_kit::Backend`].
pub struct FaultBackend {
    vocab: usize,
    n_positions: usize,
    eos: Option<u32>,
    options: FaultOptions,
    prefill_calls: u64,
    decode_calls: u64,
    /// The noise's generator state.
    rng: u64,
}

impl FaultBackend {
    /// Reads `config.json` of `dir` (never the weights).
    pub fn open(dir: &Path, options: FaultOptions) -> Result<Self, EngineError> {
        let cfg = engine_kit::gpt2::read_config(dir)?;
        Ok(FaultBackend {
            vocab: cfg.vocab_size,
            n_positions: cfg.n_positions,
            eos: cfg.eos_token_id,
            options,
            prefill_calls: 0,
            decode_calls: 0,
            rng: options.noise_seed
                ^ LOADS
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9E37_79B9),
        })
    }

    /// Sleeps one step's service time: `step_ms`, times [`speed_factor`]
    /// with `speed_test`, times the noise.
    fn step_pause(&mut self) {
        let o = self.options;
        let mut ms = o.step_ms;
        if o.speed_test {
            ms *= speed_factor(o.knob, o.gear);
        }
        if o.noise > 0.0 {
            // splitmix64, then a uniform in [-1, 1].
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            ms *= 1.0 + o.noise * u;
        }
        pause(ms);
    }

    fn rows(&self, lasts: impl ExactSizeIterator<Item = u32>, logits: &mut Vec<f32>) {
        let v = self.vocab;
        logits.clear();
        logits.resize(lasts.len() * v, LOW);
        for (i, last) in lasts.enumerate() {
            logits[i * v + next_token(last, v, self.eos) as usize] = 0.0;
        }
    }
}

impl Backend for FaultBackend {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_seq_len(&self) -> usize {
        self.n_positions
    }

    fn eos_token(&self) -> Option<u32> {
        self.eos
    }

    fn prefill(
        &mut self,
        seqs: &[(SeqId, &[u32])],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let call = self.prefill_calls;
        self.prefill_calls += 1;
        self.step_pause();
        let o = self.options;
        if o.at == At::Prefill && call >= o.after_steps {
            strike(o.fault, At::Prefill);
        }
        let lasts = seqs.iter().map(|(_, p)| p.last().copied().unwrap_or(0));
        self.rows(lasts, logits);
        Ok(())
    }

    fn decode(&mut self, seqs: &[(SeqId, u32)], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        let call = self.decode_calls;
        self.decode_calls += 1;
        self.step_pause();
        let o = self.options;
        if call >= o.after_steps {
            if o.at == At::Decode {
                strike(o.fault, At::Decode);
            }
            if o.fault == Fault::Leak {
                leak((o.leak_mb_per_step * (1u64 << 20) as f64).round() as usize);
            }
        }
        self.rows(seqs.iter().map(|s| s.1), logits);
        Ok(())
    }

    fn free(&mut self, _: SeqId) {}

    fn memory(&self) -> MemoryStats {
        MemoryStats::default()
    }

    fn score(&mut self, tokens: &[u32]) -> Result<Logits, EngineError> {
        let mut data = Vec::new();
        self.rows(tokens.iter().copied(), &mut data);
        Ok(Logits {
            rows: tokens.len() as u32,
            vocab: self.vocab as u32,
            data: data.into(),
        })
    }
}

/// `max_new_tokens` as resubmitted by `wrong_count`.
pub fn wrong_count(max_new_tokens: u32, prompt_len: usize, n_positions: usize) -> u32 {
    match max_new_tokens {
        0 => 0, // invalid either way: the kit rejects it
        1 if prompt_len + 2 <= n_positions => 2,
        1 => 1,
        n => n - 1,
    }
}

/// The kit's model, with `wrong_count` and `out_of_vocab` applied at
/// submit.
struct FaultModel {
    inner: KitModel,
    fault: Fault,
    vocab: usize,
    n_positions: usize,
}

impl Model for FaultModel {
    fn submit(&self, mut requests: Vec<Request>, sink: SinkBox) -> Result<(), EngineError> {
        let sink = match self.fault {
            Fault::WrongCount => {
                for r in &mut requests {
                    r.max_new_tokens =
                        wrong_count(r.max_new_tokens, r.prompt.len(), self.n_positions);
                }
                sink
            }
            Fault::OutOfVocab => {
                let token = u32::try_from(self.vocab)
                    .unwrap_or(u32::MAX)
                    .saturating_add(OOV_OFFSET);
                SinkFfi_TO::from_value(OutOfVocabSink { inner: sink, token }, TD_Opaque)
            }
            _ => sink,
        };
        self.inner.submit(requests, sink)
    }

    fn memory(&self) -> MemoryStats {
        self.inner.memory()
    }

    fn score(&self, tokens: &[u32]) -> Result<Logits, EngineError> {
        self.inner.score(tokens)
    }
}

/// Forwards to the host's sink with every token id replaced by `token`.
struct OutOfVocabSink {
    inner: SinkBox,
    token: u32,
}

impl SinkFfi for OutOfVocabSink {
    fn tokens(&self, step: RSlice<'_, TokenEvent>) {
        let events: Vec<TokenEvent> = step
            .iter()
            .map(|e| TokenEvent {
                token: self.token,
                ..*e
            })
            .collect();
        self.inner.tokens(events.as_slice().into());
    }
    fn done(&self, completion: Completion) {
        self.inner.done(completion);
    }
    fn error(&self, request_id: u64, error: EngineError) {
        self.inner.error(request_id, error);
    }
}

/// The engine.
pub struct FaultEngine;

impl Engine for FaultEngine {
    fn info(&self) -> EngineInfo {
        let list = |v: &[&str]| v.iter().map(|&s| s.into()).collect();
        EngineInfo {
            name: NAME.into(),
            engine_version: env!("CARGO_PKG_VERSION").into(),
            runtime_version: "none (fault injection)".into(),
            devices: list(&["cpu"]),
            dtypes: list(&["f32"]),
            quantizations: list(&["none"]),
            capabilities: engine_kit::capabilities(&[]),
            // The tuner's test function (see speed_factor).
            tunables: engine_api::tunable::to_json(&[
                engine_api::tunable::Tunable::int("knob", 0, 15, 0, "the test function's integer"),
                engine_api::tunable::Tunable::choice(
                    "gear",
                    &GEARS,
                    "low",
                    "the test function's choice",
                ),
            ]),
        }
    }

    fn load(&self, spec: &ModelSpec, options: &LoadOptions) -> Result<Box<dyn Model>, EngineError> {
        let opts = FaultOptions::parse(options.options_json.as_str())?;
        if opts.at == At::Load {
            strike(opts.fault, At::Load);
        }
        if spec.dtype.as_str() != "f32" {
            return Err(EngineError::unsupported(format!(
                "dtype {:?}: the fault engine runs f32 only",
                spec.dtype.as_str()
            )));
        }
        if spec.quantization.as_str() != "none" {
            return Err(EngineError::unsupported(format!(
                "quantization {:?}: the fault engine supports quantization: none only",
                spec.quantization.as_str()
            )));
        }
        let backend = FaultBackend::open(Path::new(spec.path.as_str()), opts)?;
        let (vocab, n_positions) = (backend.vocab, backend.n_positions);
        let inner = engine_kit::spawn(backend, options)?;
        Ok(Box::new(FaultModel {
            inner,
            fault: opts.fault,
            vocab,
            n_positions,
        }))
    }
}

engine_api::export_engine!(Ok(FaultEngine));
