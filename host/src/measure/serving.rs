//! The open-loop `serving` scenario: arrival schedules, SLOs and goodput,
//! the search for the highest sustainable rate, and recovery after a
//! spike. Everything here is pure (no clock, no engine): the scenario
//! driver ([`crate::measure::scenario`]) sends requests at the times
//! [`schedule`] gives, and [`compute`] turns the recorded requests into
//! [`ServingMetrics`].
//!
//! # Arrivals (as vLLM's `benchmark_serving`)
//!
//! Requests arrive at `request_rate` per second: `constant` (evenly
//! spaced), `poisson` (exponential gaps) or `gamma` (gamma gaps of shape
//! `burstiness`: below 1 burstier than Poisson, above 1 more regular; 1 is
//! Poisson). `inf` sends every request at once. The gaps are drawn in
//! "expected arrivals" and mapped through the integral of the rate over
//! time, so a ramp-up (`ramp_up_s`: the rate grows linearly from 0) and a
//! spike (the rate multiplied by `spike_factor` from `spike_at_s` for
//! `spike_s`) keep the gap distribution's shape. A `burst` sends the
//! extra requests a spike would have sent, `round(rate × (factor − 1) ×
//! spike_s)`, all at `spike_at_s`. The schedule is seeded by the cell,
//! so every engine gets the same arrival times.
//!
//! # Latency from the scheduled time
//!
//! A request that cannot be sent on time (the client is behind, or
//! `max_concurrency` requests are in flight) waits, and that wait is part
//! of what a user of the server would see. `ttft_from_schedule_ms` and
//! `e2el_from_schedule_ms` therefore start at the scheduled time, so
//! coordinated omission cannot hide queueing; the cell's usual `ttft_ms`
//! and `e2el_ms` start at the actual send, and `send_lag_ms` is the
//! difference.
//!
//! # Goodput (vLLM's definition, from the scheduled time)
//!
//! A request is good when it completed and its TTFT, TPOT and E2EL are
//! within every SLO that is set (`slo_ttft_ms`, `slo_tpot_ms`,
//! `slo_e2el_ms`); goodput is good requests per second, and
//! `goodput_fraction` their share of the requests sent.
//!
//! # Sustainable rate (`load: sweep`)
//!
//! As MLPerf's server scenario and guidellm's sweep: runs segments of
//! `duration_s` at increasing rates, starting at `request_rate`, doubling
//! while a segment passes, halving while it fails, then bisecting between
//! the highest passing and lowest failing rate `sweep_steps` times. A
//! segment passes when at least `slo_attainment` (default 0.99) of its
//! requests are good (latency from the scheduled time: a sweep needs a
//! TTFT or E2EL SLO, which see the queue; TPOT alone does not) and its
//! queue did not grow: the median E2EL (from the schedule) of its last
//! fifth of requests exceeds its second fifth's by at most 0.1 s per
//! second between them, the lag of a server about 10% short of the rate
//! (the first fifth meets an empty server and is left out). That rule
//! catches a mild overload whose queue a short segment has not grown long
//! enough to break the SLOs; segments should still be many E2ELs long. The answer, `max_sustainable_rate`, is the highest
//! passing rate; a later cell with `request_rate: sustainable` on the
//! same model and engine runs at it, times `rate_scale`: a spike to 200%
//! of it from 70% is `rate_scale: 0.7, spike_factor: 2.86`. (A spike from
//! 100% of the sustainable rate never recovers: the server has no spare
//! capacity to drain the queue.)
//!
//! # Several load generators
//!
//! A load generator (`run --load-shard I/N`) sends arrivals I, I+N, ...
//! of the same schedule ([`schedule_seed`]: the same seed on every
//! generator) from a shared wall-clock start ([`LoadJob`]), each with the
//! prompt a single generator would have sent it with; `merge` puts their
//! requests back on one clock.
//!
//! # Recovery after a spike or burst
//!
//! Requests are grouped into 1-second windows by scheduled time. The
//! baseline is the median TTFT (from the schedule) of the requests
//! scheduled before the spike (after the ramp-up); the threshold is
//! `max(1.25 × baseline, baseline + 5 ms)`. The recovery time is from the
//! end of the spike to the end of the first window after which every
//! window's median stays under the threshold (`None`: not recovered by
//! the end of the cell).

pub use crate::matrix::open_loop::{Arrival, Load, Rate, ServingParams, Slo};
use crate::measure::IterationSpan;
use crate::measure::RequestRecord;
use crate::rng::splitmix64;
use crate::stats::{summarize, Distribution};
pub use engine_matrix_results::metrics::{
    ServingMetrics, SpikeFigures, SweepFigures, SweepStep, Window,
};
use std::collections::BTreeMap;

/// A deterministic stream of uniform and derived random numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((splitmix64(&mut self.0) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    pub fn exp(&mut self) -> f64 {
        -self.uniform().ln()
    }
    /// Gamma(shape, scale 1): Marsaglia and Tsang, boosted below shape 1.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

/// A piece of the rate over time: from `start` (s) for `len` s, the rate
/// goes linearly from `from` to `to` (req/s).
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: f64,
    len: f64,
    from: f64,
    to: f64,
}

impl Piece {
    fn count(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.len
    }
    /// Time into the piece at which `c` arrivals are expected.
    fn time_of(&self, c: f64) -> f64 {
        let slope = (self.to - self.from) / self.len;
        if slope.abs() < 1e-12 {
            return c / self.from;
        }
        (-self.from + (self.from * self.from + 2.0 * slope * c).max(0.0).sqrt()) / slope
    }
}

/// The rate as pieces, ending with an open-ended constant one; a `day` or
/// `walk` load's shape runs until `duration_s` (the walk seeded by
/// `seed`).
fn pieces(p: &ServingParams, rate: f64, duration_s: f64, seed: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut t = 0.0;
    if p.ramp_up_s > 0.0 {
        out.push(Piece {
            start: 0.0,
            len: p.ramp_up_s,
            from: 0.0,
            to: rate,
        });
        t = p.ramp_up_s;
    }
    if matches!(p.load, Load::Day | Load::Walk) && duration_s > t {
        let shape = shape(p, duration_s - t, seed);
        for w in shape.windows(2) {
            let ((a, fa), (b, fb)) = (w[0], w[1]);
            out.push(Piece {
                start: t + a,
                len: b - a,
                from: rate * fa,
                to: rate * fb,
            });
        }
        let last = shape.last().map_or(1.0, |x| x.1);
        out.push(Piece {
            start: duration_s,
            len: f64::INFINITY,
            from: rate * last,
            to: rate * last,
        });
        return out;
    }
    if p.load == Load::Spike && p.spike_s > 0.0 {
        let at = p.spike_at_s.max(t);
        if at > t {
            out.push(Piece {
                start: t,
                len: at - t,
                from: rate,
                to: rate,
            });
        }
        let hi = rate * p.spike_factor;
        out.push(Piece {
            start: at,
            len: p.spike_s,
            from: hi,
            to: hi,
        });
        t = at + p.spike_s;
    }
    out.push(Piece {
        start: t,
        len: f64::INFINITY,
        from: rate,
        to: rate,
    });
    out
}

/// Points `(s, share of the rate)` of a `day` or `walk` shape over `span`
/// seconds, linear between them. Day: the share falls from 1 to
/// `rate_low` and back over each `period_s` (a cosine, 48 points a
/// period). Walk: from 1, every `walk_step_s` a uniform step of at most a
/// quarter of the range, held between `rate_low` and 1.
pub fn shape(p: &ServingParams, span: f64, seed: u64) -> Vec<(f64, f64)> {
    let low = p.rate_low.clamp(1e-3, 1.0);
    let (step, mut share): (f64, Box<dyn FnMut(f64) -> f64>) = match p.load {
        Load::Day => {
            let period = if p.period_s > 0.0 { p.period_s } else { span };
            (
                period / 48.0,
                Box::new(move |t: f64| {
                    let phase = (std::f64::consts::TAU * t / period).cos();
                    low + (1.0 - low) * (1.0 + phase) / 2.0
                }),
            )
        }
        _ => {
            let mut rng = Rng::new(seed ^ 0x5741_4c4b_5741_4c4b);
            let mut x = 1.0f64;
            let mut first = true;
            (
                p.walk_step_s.max(0.1),
                Box::new(move |_t: f64| {
                    if !first {
                        let u = 2.0 * rng.uniform() - 1.0;
                        x = (x + u * (1.0 - low) / 4.0).clamp(low, 1.0);
                    }
                    first = false;
                    x
                }),
            )
        }
    };
    let n = (span / step).ceil().max(1.0) as usize;
    (0..=n)
        .map(|i| {
            let t = (i as f64 * step).min(span);
            (t, share(t))
        })
        .collect()
}

/// Arrival times (s from the start) of a cell's requests: those before
/// `duration_s` when it is positive, else the first `requests`. `rate`
/// overrides the params' rate (a sweep segment); `None` with the rate
/// `inf` sends `requests` at once.
pub fn schedule(
    p: &ServingParams,
    rate: Option<f64>,
    duration_s: f64,
    requests: u32,
    seed: u64,
) -> Vec<f64> {
    let Some(rate) = rate.filter(|r| r.is_finite() && *r > 0.0) else {
        return vec![0.0; requests as usize];
    };
    let pieces = pieces(p, rate, duration_s, seed);
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    // Expected arrivals so far (the clock in which gaps are drawn).
    let mut c = 0.0;
    let mut piece = 0;
    let mut before = 0.0; // expected arrivals before `pieces[piece]`
    let cap = if duration_s > 0.0 {
        // Enough for any realistic rate; a bound against runaway input.
        10_000_000
    } else {
        requests as usize
    };
    while out.len() < cap {
        let gap = match p.arrival {
            Arrival::Constant => 1.0,
            Arrival::Poisson => rng.exp(),
            Arrival::Gamma => rng.gamma(p.burstiness) / p.burstiness,
        };
        // The first constant arrival is at 0 with no ramp, as vLLM's.
        c += if out.is_empty() && p.arrival == Arrival::Constant && p.ramp_up_s == 0.0 {
            0.0
        } else {
            gap
        };
        while piece + 1 < pieces.len() && c > before + pieces[piece].count() {
            before += pieces[piece].count();
            piece += 1;
        }
        let pc = &pieces[piece];
        let t = pc.start + pc.time_of(c - before);
        if duration_s > 0.0 && t >= duration_s {
            break;
        }
        out.push(t);
    }
    if p.load == Load::Burst {
        let extra = (rate * (p.spike_factor - 1.0).max(0.0) * p.spike_s).round() as usize;
        let at = p.spike_at_s;
        if duration_s <= 0.0 || at < duration_s {
            let i = out.partition_point(|&t| t <= at);
            out.splice(i..i, std::iter::repeat_n(at, extra));
        }
    }
    out
}

/// The seed of a serving cell's schedule (its measured iteration `k`'s is
/// this `^ k`): the same for every engine of a workload, and for every
/// load generator of a cell.
pub fn schedule_seed(cell: &crate::matrix::Cell) -> u64 {
    let tag = cell.id.splitn(4, '/').nth(3).unwrap_or("");
    crate::rng::fnv1a(format!("{}/{}/{tag}", cell.scenario, cell.model).as_bytes())
}

/// What a generator's cell needs to take its share of the schedule.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadJob {
    pub index: u32,
    pub count: u32,
    /// The shared start of each measured iteration (ns since the Unix
    /// epoch).
    pub starts_unix_ns: Vec<u64>,
    /// This generator's share of the cell's `max_concurrency`.
    pub max_concurrency: Option<u32>,
}

/// Latencies of one request, ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Times {
    /// From the scheduled time.
    pub ttft: f64,
    pub e2el: f64,
    pub tpot: Option<f64>,
}

pub fn times_from_schedule(r: &RequestRecord) -> Option<Times> {
    if r.error.is_some() || r.completion.is_none() {
        return None;
    }
    let s = r.scheduled_ns.unwrap_or(r.submit_ns);
    let (first, last) = (*r.token_ns.first()?, *r.token_ns.last()?);
    let ttft = first.saturating_sub(s) as f64 * 1e-6;
    let e2el = last.saturating_sub(s) as f64 * 1e-6;
    let n = r.produced();
    Some(Times {
        ttft,
        e2el,
        tpot: (n > 1).then(|| (last - first) as f64 * 1e-6 / (n - 1) as f64),
    })
}

/// Within every SLO that is set (a request with one token has no TPOT,
/// which passes).
pub fn good(t: &Times, slo: &Slo) -> bool {
    slo.ttft_ms.is_none_or(|x| t.ttft <= x)
        && slo.e2el_ms.is_none_or(|x| t.e2el <= x)
        && slo.tpot_ms.is_none_or(|x| t.tpot.is_none_or(|v| v <= x))
}

/// What kind of failure an engine's error message describes (the http
/// plugin's wording; anything else is `engine`).
pub fn failure_kind(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("timeout") || m.contains("timed out") {
        "timeout"
    } else if m.contains("http 4") || m.contains("http 5") || m.contains("http 1") {
        "http_error"
    } else if m.contains("cannot connect") || m.contains("connection refused") {
        "connect"
    } else if m.contains("malformed sse") || m.contains("malformed json") {
        "malformed_stream"
    } else if m.contains("ended before") || m.contains("disconnect") || m.contains("reset") {
        "disconnect"
    } else if m.contains("server error in the stream") {
        "server_error"
    } else {
        "engine"
    }
}

/// Fastest a sweep segment's queue may grow, in seconds of latency per
/// second: a server 10% short of the rate falls about 0.1 s behind per
/// second.
pub const MAX_GROWTH: f64 = 0.1;

/// Fewest requests for a queue-growth figure (a fifth must hold 2).
const GROWTH_MIN_REQUESTS: usize = 10;

/// How fast latency grows during a segment (s per s): the median E2EL
/// from the schedule of the last fifth of the requests (by scheduled
/// time) minus that of the second fifth, over the time between their
/// median scheduled times. The first fifth is left out: it meets an empty
/// server whose batch is still filling. 0 with fewer than 10 requests. A
/// failed request counts as the segment's slowest.
fn queue_growth(records: &[&RequestRecord]) -> f64 {
    let mut by: Vec<(u64, Option<f64>)> = records
        .iter()
        .filter_map(|r| {
            let s = r.scheduled_ns?;
            Some((s, times_from_schedule(r).map(|t| t.e2el * 1e-3)))
        })
        .collect();
    if by.len() < GROWTH_MIN_REQUESTS {
        return 0.0;
    }
    by.sort_by_key(|x| x.0);
    let worst = by.iter().filter_map(|x| x.1).fold(0.0, f64::max);
    let fifth = by.len() / 5;
    let group = |part: &[(u64, Option<f64>)]| {
        let lat = median(
            &part
                .iter()
                .map(|x| x.1.unwrap_or(worst))
                .collect::<Vec<_>>(),
        );
        let at = median(&part.iter().map(|x| x.0 as f64 * 1e-9).collect::<Vec<_>>());
        (lat.unwrap_or(0.0), at.unwrap_or(0.0))
    };
    let (early, t_early) = group(&by[fifth..2 * fifth]);
    let (late, t_late) = group(&by[by.len() - fifth..]);
    if t_late <= t_early {
        return 0.0;
    }
    ((late - early) / (t_late - t_early)).max(0.0)
}

fn p(d: &Option<Distribution>, q: fn(&Distribution) -> f64) -> Option<f64> {
    d.as_ref().map(q)
}

/// A sweep's pass rule for one segment.
pub fn evaluate(
    records: &[&RequestRecord],
    span: &IterationSpan,
    rate: f64,
    slo: &Slo,
) -> SweepStep {
    let t: Vec<Times> = records
        .iter()
        .filter_map(|r| times_from_schedule(r))
        .collect();
    let good = t.iter().filter(|x| good(x, slo)).count();
    let secs = span.end_ns.saturating_sub(span.start_ns) as f64 * 1e-9;
    let achieved = if secs > 0.0 {
        t.len() as f64 / secs
    } else {
        0.0
    };
    let sent = records.len();
    let fraction = if sent > 0 {
        good as f64 / sent as f64
    } else {
        0.0
    };
    let d = |f: fn(&Times) -> Option<f64>| summarize(&t.iter().filter_map(f).collect::<Vec<_>>());
    let growth = queue_growth(records);
    SweepStep {
        rate,
        sent,
        completed: t.len(),
        good,
        achieved_rate: achieved,
        goodput_fraction: fraction,
        ttft_p99_ms: p(&d(|x| Some(x.ttft)), |d| d.p99),
        tpot_p99_ms: p(&d(|x| x.tpot), |d| d.p99),
        e2el_p99_ms: p(&d(|x| Some(x.e2el)), |d| d.p99),
        queue_growth: growth,
        passed: sent > 0 && fraction >= slo.attainment && growth <= MAX_GROWTH,
    }
}

/// The sweep's search: doubling, halving, then bisection.
#[derive(Clone, Debug)]
pub struct Search {
    next: Option<f64>,
    best_pass: Option<f64>,
    lowest_fail: Option<f64>,
    bisections_left: u32,
    tries: u32,
}

/// Most doublings or halvings before the search gives up.
const MAX_SCALE_STEPS: u32 = 10;

impl Search {
    pub fn new(start: f64, bisections: u32) -> Search {
        Search {
            next: Some(start),
            best_pass: None,
            lowest_fail: None,
            bisections_left: bisections,
            tries: 0,
        }
    }

    /// The rate to try next (`None`: done).
    pub fn next(&self) -> Option<f64> {
        self.next
    }

    pub fn best(&self) -> Option<f64> {
        self.best_pass
    }

    /// Records whether `rate` passed and picks the next one.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.tries += 1;
        if passed {
            self.best_pass = Some(self.best_pass.map_or(rate, |b: f64| b.max(rate)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |b: f64| b.min(rate)));
        }
        self.next = match (self.best_pass, self.lowest_fail) {
            (Some(_), None) if self.tries <= MAX_SCALE_STEPS => Some(rate * 2.0),
            (None, Some(_)) if self.tries <= MAX_SCALE_STEPS => Some(rate / 2.0),
            (Some(g), Some(b)) if self.bisections_left > 0 && b > g => {
                self.bisections_left -= 1;
                Some((g + b) / 2.0)
            }
            _ => None,
        };
    }
}

/// The serving figures of a cell. `segments` are a sweep's (iteration
/// index, rate) pairs; empty otherwise.
pub fn compute(
    p_: &ServingParams,
    duration_s: f64,
    records: &[RequestRecord],
    spans: &[IterationSpan],
    segments: &[(u32, f64)],
) -> ServingMetrics {
    let all: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
    let slo = p_.slo;
    let sweep =
        (p_.load == Load::Sweep).then(|| sweep_figures(p_, &all, spans, segments, duration_s));
    // A sweep's other figures are those of its highest passing rate (else
    // its first): figures over several rates would mean nothing.
    let (measured, spans, rate): (Vec<&RequestRecord>, Vec<IterationSpan>, Option<f64>) =
        match &sweep {
            Some(sw) => {
                let (index, rate) = reported_segment(sw, segments);
                (
                    all.iter()
                        .copied()
                        .filter(|r| r.iteration == index)
                        .collect(),
                    spans
                        .iter()
                        .filter(|s| s.index == index && !s.warmup)
                        .copied()
                        .collect(),
                    Some(rate),
                )
            }
            None => (all, spans.to_vec(), p_.rate()),
        };
    let times: Vec<Times> = measured
        .iter()
        .filter_map(|r| times_from_schedule(r))
        .collect();
    let failed = measured
        .iter()
        .filter(|r| r.error.is_some() || r.completion.is_none())
        .count();
    let mut failures_by_kind = BTreeMap::new();
    for r in &measured {
        if let Some(e) = &r.error {
            *failures_by_kind
                .entry(failure_kind(&e.to_string()).to_string())
                .or_insert(0) += 1;
        } else if r.completion.is_none() {
            *failures_by_kind
                .entry("incomplete".to_string())
                .or_insert(0) += 1;
        }
    }
    let secs: f64 = spans
        .iter()
        .filter(|s| !s.warmup)
        .map(|s| s.end_ns.saturating_sub(s.start_ns) as f64 * 1e-9)
        .sum();
    let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    let sched: Vec<u64> = measured.iter().filter_map(|r| r.scheduled_ns).collect();
    let offered_rate = match (sched.iter().min(), sched.iter().max()) {
        (Some(a), Some(b)) if b > a && sched.len() > 1 => {
            Some((sched.len() - 1) as f64 / ((b - a) as f64 * 1e-9))
        }
        _ => None,
    };
    let lag: Vec<f64> = measured
        .iter()
        .filter_map(|r| Some(r.submit_ns.saturating_sub(r.scheduled_ns?) as f64 * 1e-6))
        .collect();
    let good = slo
        .any()
        .then(|| times.iter().filter(|t| good(t, &slo)).count());
    let windows = windows(&measured);
    let spike =
        matches!(p_.load, Load::Spike | Load::Burst).then(|| spike(p_, &measured, &windows));
    let degradation = (p_.load != Load::Sweep)
        .then(|| degradation(&windows))
        .flatten();
    ServingMetrics {
        load: p_.load,
        arrival: p_.arrival,
        request_rate: rate,
        offered_rate,
        max_concurrency: p_.max_concurrency,
        scheduled: measured.len(),
        completed: times.len(),
        failed,
        achieved_rate: per_s(times.len() as f64),
        ttft_from_schedule_ms: summarize(&times.iter().map(|t| t.ttft).collect::<Vec<_>>()),
        e2el_from_schedule_ms: summarize(&times.iter().map(|t| t.e2el).collect::<Vec<_>>()),
        send_lag_ms: summarize(&lag),
        slo,
        good,
        goodput: good.map(|g| per_s(g as f64)),
        goodput_fraction: good.map(|g| {
            if measured.is_empty() {
                0.0
            } else {
                g as f64 / measured.len() as f64
            }
        }),
        failures_by_kind,
        windows,
        spike,
        sweep,
        degradation,
        generators: None,
    }
}

/// Latency drift per minute over the windows (see
/// [`engine_matrix_results::Degradation`]), and its verdict.
///
/// `degrading` must not cry wolf, so it takes, as the leak check does,
/// growth that is both large and sustained: for TTFT or for E2EL, the
/// slope over the cell predicts growth above [`DRIFT_FLOOR_SHARE`] of the
/// median window latency (and above [`DRIFT_FLOOR_MS`]), and the slopes of
/// the earlier and the later half of the windows both point up. A load
/// that rises and falls (a day curve) moves latency up and back, its
/// halves disagree, and it is `steady`. Fewer than twice
/// [`engine_matrix_results::Degradation::MIN_WINDOWS`] windows are
/// `insufficient`.
fn degradation(windows: &[Window]) -> Option<engine_matrix_results::Degradation> {
    use engine_matrix_results::Degradation;
    let series = |get: fn(&Window) -> Option<f64>| -> Vec<(f64, f64)> {
        windows
            .iter()
            .filter_map(|w| Some((w.t_s / 60.0, get(w)?)))
            .collect()
    };
    let ttft = series(|w| w.ttft_p50_ms);
    let e2el = series(|w| w.e2el_p50_ms);
    let n = ttft.len().max(e2el.len());
    if n < Degradation::MIN_WINDOWS {
        return None;
    }
    let slope = |pts: &[(f64, f64)]| {
        (pts.len() >= Degradation::MIN_WINDOWS)
            .then(|| engine_matrix_stats::trend::theil_sen(pts, 20_000))
            .flatten()
    };
    let span = |pts: &[(f64, f64)]| match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    // (degrading, in words) for one series.
    let judge = |name: &str, pts: &[(f64, f64)]| -> Option<(bool, String)> {
        let all = slope(pts)?;
        let (a, b) = pts.split_at(pts.len() / 2);
        let (first, second) = (slope(a)?, slope(b)?);
        let lat: Vec<f64> = pts.iter().map(|p| p.1).collect();
        let median = engine_matrix_stats::stats::summarize(&lat)?.p50;
        let growth = all * span(pts);
        let floor = (DRIFT_FLOOR_SHARE * median).max(DRIFT_FLOOR_MS);
        let up = growth > floor && first > 0.0 && second > 0.0;
        Some((
            up,
            format!(
                "{name} {all:+.1} ms/min: {growth:+.0} ms over the cell against a floor of {floor:.0} ms; halves {first:+.1} and {second:+.1} ms/min"
            ),
        ))
    };
    let (verdict, why) = if n < 2 * Degradation::MIN_WINDOWS {
        (
            "insufficient",
            format!(
                "{n} windows: a verdict needs {}",
                2 * Degradation::MIN_WINDOWS
            ),
        )
    } else {
        let judged: Vec<(bool, String)> = [judge("TTFT", &ttft), judge("E2EL", &e2el)]
            .into_iter()
            .flatten()
            .collect();
        let why = judged
            .iter()
            .map(|(_, w)| w.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if judged.is_empty() {
            ("insufficient", "no series to judge".to_string())
        } else if judged.iter().any(|(up, _)| *up) {
            ("degrading", why)
        } else {
            ("steady", why)
        }
    };
    Some(Degradation {
        windows: n,
        span_min: span(&ttft).max(span(&e2el)),
        ttft_p50_ms_per_min: slope(&ttft),
        e2el_p50_ms_per_min: slope(&e2el),
        verdict: Some(verdict.to_string()),
        why: Some(why),
    })
}

/// Growth over the cell, as a share of the median window latency, that
/// `degrading` needs.
pub const DRIFT_FLOOR_SHARE: f64 = 0.10;
/// And in absolute terms, ms (a few ms of drift on a fast engine is noise).
pub const DRIFT_FLOOR_MS: f64 = 20.0;

/// The segment (index, rate) whose figures a sweep cell reports: its
/// highest passing rate, else its first.
pub fn reported_segment(sweep: &SweepFigures, segments: &[(u32, f64)]) -> (u32, f64) {
    segments
        .iter()
        .find(|(_, r)| Some(*r) == sweep.max_sustainable_rate)
        .or(segments.first())
        .copied()
        .unwrap_or((0, 0.0))
}

/// Each sweep segment judged again from the records, in the order run.
fn sweep_figures(
    p: &ServingParams,
    measured: &[&RequestRecord],
    spans: &[IterationSpan],
    segments: &[(u32, f64)],
    duration_s: f64,
) -> SweepFigures {
    let mut search = Search::new(segments.first().map_or(1.0, |s| s.1), p.sweep_steps);
    let steps: Vec<SweepStep> = segments
        .iter()
        .filter_map(|&(index, rate)| {
            let span = spans.iter().find(|s| !s.warmup && s.index == index)?;
            let recs: Vec<&RequestRecord> = measured
                .iter()
                .copied()
                .filter(|r| r.iteration == index)
                .collect();
            let step = evaluate(&recs, span, rate, &p.slo);
            search.record(rate, step.passed);
            Some(step)
        })
        .collect();
    SweepFigures {
        steps,
        max_sustainable_rate: search.best(),
        criterion: format!(
            "at least {:.1}% of the requests within the SLOs (latency from the scheduled send time) and latency growing by at most {MAX_GROWTH} s per s over {duration_s} s segments",
            p.slo.attainment * 100.0
        ),
    }
}

fn median(xs: &[f64]) -> Option<f64> {
    summarize(xs).map(|d| d.p50)
}

/// 1-second windows by scheduled time, from the first scheduled request.
fn windows(measured: &[&RequestRecord]) -> Vec<Window> {
    let Some(t0) = measured.iter().filter_map(|r| r.scheduled_ns).min() else {
        return Vec::new();
    };
    let mut by: BTreeMap<u64, Vec<&RequestRecord>> = BTreeMap::new();
    for r in measured {
        if let Some(s) = r.scheduled_ns {
            by.entry((s - t0) / 1_000_000_000).or_default().push(r);
        }
    }
    let last = by.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|w| {
            let rs = by.get(&w).map(Vec::as_slice).unwrap_or(&[]);
            let t: Vec<Times> = rs.iter().filter_map(|r| times_from_schedule(r)).collect();
            Window {
                t_s: w as f64,
                scheduled: rs.len(),
                completed: t.len(),
                failed: rs.len() - t.len(),
                ttft_p50_ms: median(&t.iter().map(|x| x.ttft).collect::<Vec<_>>()),
                e2el_p50_ms: median(&t.iter().map(|x| x.e2el).collect::<Vec<_>>()),
            }
        })
        .collect()
}

fn spike(p: &ServingParams, measured: &[&RequestRecord], windows: &[Window]) -> SpikeFigures {
    let t0 = measured
        .iter()
        .filter_map(|r| r.scheduled_ns)
        .min()
        .unwrap_or(0);
    let at = |r: &RequestRecord| r.scheduled_ns.map(|s| (s - t0) as f64 * 1e-9);
    let (start, end) = (p.spike_at_s, p.spike_at_s + p.spike_s);
    let before: Vec<f64> = measured
        .iter()
        .filter(|r| at(r).is_some_and(|t| t >= p.ramp_up_s && t < start))
        .filter_map(|r| times_from_schedule(r))
        .map(|t| t.ttft)
        .collect();
    let baseline = median(&before);
    let threshold = baseline.map(|b| (1.25 * b).max(b + 5.0));
    let after: Vec<&Window> = windows.iter().filter(|w| w.t_s + 1.0 > start).collect();
    let peak = after
        .iter()
        .filter_map(|w| w.ttft_p50_ms)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    // The first window from which every later one is under the threshold
    // (a window with failures, or without completions, is not).
    let recovery = threshold.and_then(|th| {
        let ok = |w: &Window| w.failed == 0 && w.ttft_p50_ms.is_some_and(|x| x <= th);
        let later: Vec<&Window> = windows.iter().filter(|w| w.t_s >= end.floor()).collect();
        let mut first_ok = None;
        for (i, w) in later.iter().enumerate() {
            if later[i..].iter().all(|w| ok(w) || w.scheduled == 0) && ok(w) {
                first_ok = Some(w);
                break;
            }
        }
        first_ok.map(|w| (w.t_s + 1.0 - end).max(0.0))
    });
    SpikeFigures {
        start_s: start,
        end_s: end,
        baseline_ttft_p50_ms: baseline,
        threshold_ms: threshold,
        peak_window_ttft_p50_ms: peak,
        recovery_s: recovery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::{Completion, FinishReason};
    use proptest::prelude::*;

    fn window(t_s: f64, ttft: Option<f64>, e2el: Option<f64>) -> Window {
        Window {
            t_s,
            scheduled: 1,
            completed: 1,
            failed: 0,
            ttft_p50_ms: ttft,
            e2el_p50_ms: e2el,
        }
    }

    #[test]
    fn drift_is_the_robust_slope_per_minute() {
        // TTFT grows 2 ms per second (120 ms/min), with two wild windows;
        // E2EL is flat.
        let mut w: Vec<Window> = (0..60)
            .map(|i| window(i as f64, Some(100.0 + 2.0 * i as f64), Some(500.0)))
            .collect();
        w[10].ttft_p50_ms = Some(5000.0);
        w[40].ttft_p50_ms = Some(1.0);
        let d = degradation(&w).unwrap();
        assert_eq!(d.windows, 60);
        assert!((d.span_min - 59.0 / 60.0).abs() < 1e-9);
        assert!(
            (d.ttft_p50_ms_per_min.unwrap() - 120.0).abs() < 1e-6,
            "{d:?}"
        );
        assert_eq!(d.e2el_p50_ms_per_min, Some(0.0));
        // 118 ms of growth on a median near 160 ms, both halves up.
        assert_eq!(d.verdict.as_deref(), Some("degrading"), "{d:?}");
        // Up then down (a day curve's latency): the halves disagree.
        let hill: Vec<Window> = (0..60)
            .map(|i| {
                let x = if i < 30 { i } else { 60 - i } as f64;
                window(i as f64, Some(100.0 + 4.0 * x), Some(500.0))
            })
            .collect();
        assert_eq!(
            degradation(&hill).unwrap().verdict.as_deref(),
            Some("steady")
        );
        // Growth under the floor: 0.2 ms/s on 100 ms is 12 ms in a minute.
        let slow: Vec<Window> = (0..60)
            .map(|i| window(i as f64, Some(100.0 + 0.2 * i as f64), None))
            .collect();
        let d = degradation(&slow).unwrap();
        assert_eq!(d.verdict.as_deref(), Some("steady"), "{d:?}");
        assert!(d.why.unwrap().contains("against a floor of 20 ms"));
        // Fifteen windows: a slope, no verdict.
        let few: Vec<Window> = (0..15)
            .map(|i| window(i as f64, Some(100.0 + 10.0 * i as f64), None))
            .collect();
        assert_eq!(
            degradation(&few).unwrap().verdict.as_deref(),
            Some("insufficient")
        );
        // Under ten windows with a latency: no trend is drawn.
        let short: Vec<Window> = (0..30)
            .map(|i| window(i as f64, (i % 4 == 0).then_some(1.0), None))
            .collect();
        assert_eq!(degradation(&short), None);
    }

    fn params(load: Load, arrival: Arrival) -> ServingParams {
        ServingParams {
            load,
            request_rate: Rate::Fixed(10.0),
            arrival,
            burstiness: 1.0,
            max_concurrency: None,
            ramp_up_s: 0.0,
            spike_factor: 2.0,
            spike_at_s: 10.0,
            spike_s: 5.0,
            slo: Slo {
                ttft_ms: Some(100.0),
                tpot_ms: None,
                e2el_ms: None,
                attainment: 0.99,
            },
            sweep_steps: 3,
            rate_scale: 1.0,
            resolved_rate: None,
            rate_low: 0.25,
            period_s: 0.0,
            walk_step_s: 10.0,
        }
    }

    #[test]
    fn a_day_load_follows_its_curve_and_its_integral() {
        // 10 req/s at the peak, 2.5 at the trough, one 96 s period: the
        // integral is 10 × 96 × (0.25 + 0.75 / 2) = 600 requests.
        let mut p = params(Load::Day, Arrival::Constant);
        p.period_s = 96.0;
        let s = schedule(&p, Some(10.0), 96.0, 0, 7);
        assert!((s.len() as i64 - 600).abs() <= 1, "{}", s.len());
        let rate_in =
            |a: f64, b: f64| s.iter().filter(|t| **t >= a && **t < b).count() as f64 / (b - a);
        // Near the start (the peak), the middle (the trough), the end.
        assert!(
            (rate_in(0.0, 4.0) - 10.0).abs() < 0.6,
            "{}",
            rate_in(0.0, 4.0)
        );
        assert!(
            (rate_in(46.0, 50.0) - 2.5).abs() < 0.6,
            "{}",
            rate_in(46.0, 50.0)
        );
        assert!(
            (rate_in(92.0, 96.0) - 10.0).abs() < 0.6,
            "{}",
            rate_in(92.0, 96.0)
        );
    }

    #[test]
    fn a_walk_is_seeded_and_stays_between_its_bounds() {
        let mut p = params(Load::Walk, Arrival::Poisson);
        p.rate_low = 0.5;
        p.walk_step_s = 5.0;
        let a = schedule(&p, Some(8.0), 300.0, 0, 1);
        assert_eq!(a, schedule(&p, Some(8.0), 300.0, 0, 1));
        assert_ne!(a, schedule(&p, Some(8.0), 300.0, 0, 2));
        let sh = shape(&p, 300.0, 1);
        assert_eq!(sh.len(), 61);
        assert_eq!(sh[0], (0.0, 1.0));
        assert!(sh.iter().all(|(_, x)| (0.5..=1.0).contains(x)));
        assert!(sh
            .windows(2)
            .all(|w| (w[1].1 - w[0].1).abs() <= 0.125 + 1e-12));
        assert!(sh.iter().any(|(_, x)| *x < 0.9), "it moves");
        // Between the integrals of the lowest and the highest rate.
        assert!(a.len() as f64 > 0.8 * 4.0 * 300.0 && (a.len() as f64) < 1.2 * 8.0 * 300.0);
    }

    proptest! {
        /// A day shape's points stay within their bounds and are in order.
        #[test]
        fn day_shapes_are_bounded(low in 0.01f64..1.0, period in 1.0f64..1000.0, span in 1.0f64..2000.0) {
            let mut p = params(Load::Day, Arrival::Constant);
            p.rate_low = low;
            p.period_s = period;
            let sh = shape(&p, span, 0);
            prop_assert!(sh.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(sh.iter().all(|(_, x)| *x >= low - 1e-12 && *x <= 1.0 + 1e-12));
            prop_assert_eq!(sh.last().unwrap().0, span);
        }
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced_from_zero() {
        let s = schedule(
            &params(Load::Sustained, Arrival::Constant),
            Some(4.0),
            0.0,
            5,
            1,
        );
        assert_eq!(s, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let d = schedule(
            &params(Load::Sustained, Arrival::Constant),
            Some(4.0),
            2.0,
            1000,
            1,
        );
        assert_eq!(d.len(), 8, "[0, 2) at 4/s");
        assert_eq!(
            schedule(&params(Load::Sustained, Arrival::Poisson), None, 0.0, 3, 1),
            vec![0.0; 3]
        );
    }

    #[test]
    fn poisson_and_gamma_have_the_asked_mean_and_dispersion() {
        for (arrival, burst, cv_lo, cv_hi) in [
            (Arrival::Poisson, 1.0, 0.9, 1.1),
            (Arrival::Gamma, 0.25, 1.8, 2.2),  // CV = 1/sqrt(k) = 2
            (Arrival::Gamma, 4.0, 0.45, 0.55), // 0.5
        ] {
            let mut p = params(Load::Sustained, arrival);
            p.burstiness = burst;
            let s = schedule(&p, Some(100.0), 0.0, 20_000, 7);
            let gaps: Vec<f64> = s.windows(2).map(|w| w[1] - w[0]).collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            let cv = var.sqrt() / mean;
            assert!((mean - 0.01).abs() < 0.0006, "{arrival:?} mean gap {mean}");
            assert!(
                (cv_lo..cv_hi).contains(&cv),
                "{arrival:?} k={burst} cv {cv}"
            );
        }
    }

    #[test]
    fn spikes_ramps_and_bursts_shape_the_rate() {
        let p = params(Load::Spike, Arrival::Constant);
        let s = schedule(&p, Some(10.0), 30.0, 0, 1);
        let count = |a: f64, b: f64| s.iter().filter(|&&t| t >= a && t < b).count();
        assert_eq!(count(0.0, 10.0), 100);
        assert_eq!(count(10.0, 15.0), 100, "twice the rate during the spike");
        assert_eq!(count(15.0, 30.0), 150);
        let mut r = params(Load::Sustained, Arrival::Constant);
        r.ramp_up_s = 10.0;
        let s = schedule(&r, Some(10.0), 20.0, 0, 1);
        let first: usize = s.iter().filter(|&&t| t < 5.0).count();
        let second: usize = s.iter().filter(|&&t| (5.0..10.0).contains(&t)).count();
        // A linear ramp: 12.5 and 37.5 expected arrivals.
        assert!(
            (12..=13).contains(&first) && (37..=38).contains(&second),
            "{first} {second}"
        );
        let b = params(Load::Burst, Arrival::Constant);
        let s = schedule(&b, Some(10.0), 30.0, 0, 1);
        assert_eq!(
            s.iter().filter(|&&t| t == 10.0).count(),
            51,
            "50 extra + the regular one"
        );
        assert!(s.windows(2).all(|w| w[0] <= w[1]), "sorted");
    }

    proptest! {
        #[test]
        fn schedules_are_sorted_deterministic_and_bounded(
            rate in 0.5f64..500.0, k in 0.1f64..8.0, seed in any::<u64>(), ramp in 0.0f64..3.0,
            arrival in 0usize..3, load in 0usize..3,
        ) {
            let mut p = params([Load::Sustained, Load::Spike, Load::Burst][load], [Arrival::Constant, Arrival::Poisson, Arrival::Gamma][arrival]);
            p.burstiness = k;
            p.ramp_up_s = ramp;
            p.spike_at_s = 1.0;
            p.spike_s = 0.5;
            let a = schedule(&p, Some(rate), 4.0, 0, seed);
            prop_assert_eq!(&a, &schedule(&p, Some(rate), 4.0, 0, seed));
            prop_assert!(a.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(a.iter().all(|&t| (0.0..4.0).contains(&t)));
            let n = schedule(&p, Some(rate), 0.0, 50, seed);
            prop_assert_eq!(n.len(), 50 + if p.load == Load::Burst { (rate * 0.5).round() as usize } else { 0 });
        }

        #[test]
        fn the_search_brackets_any_threshold(start in 0.1f64..100.0, limit in 0.05f64..1000.0) {
            let mut s = Search::new(start, 6);
            let mut n = 0;
            while let Some(r) = s.next() {
                s.record(r, r <= limit);
                n += 1;
                prop_assert!(n < 40);
            }
            if let Some(b) = s.best() {
                prop_assert!(b <= limit);
                // Within 2^-6 of the bracket, or at the scale limit.
                prop_assert!(b >= limit * 0.5 || n >= 10, "best {} limit {}", b, limit);
            }
        }
    }

    fn rec(sched_ms: u64, send_ms: u64, tokens_ms: &[u64], fail: Option<&str>) -> RequestRecord {
        let ms = 1_000_000;
        RequestRecord {
            scheduled_ns: Some(sched_ms * ms),
            submit_ns: send_ms * ms,
            token_ns: tokens_ms.iter().map(|t| t * ms).collect(),
            tokens: vec![1; tokens_ms.len()],
            end_ns: Some(tokens_ms.last().copied().unwrap_or(send_ms) * ms),
            completion: fail.is_none().then_some(Completion {
                request_id: 0,
                prompt_tokens: 1,
                generated_tokens: tokens_ms.len() as u32,
                finish_reason: FinishReason::Length,
                queue_us: 0,
                prefill_us: 0,
                decode_us: 0,
                decode_steps: 0,
                cached_prompt_tokens: engine_api::abi_stable::std_types::RNone,
            }),
            error: fail.map(engine_api::EngineError::runtime),
            ..Default::default()
        }
    }

    fn span(index: u32, a_ms: u64, b_ms: u64) -> IterationSpan {
        IterationSpan {
            index,
            warmup: false,
            start_ns: a_ms * 1_000_000,
            end_ns: b_ms * 1_000_000,
            rss_bytes: None,
        }
    }

    #[test]
    fn latency_counts_from_the_schedule_and_goodput_follows_the_slo() {
        // Scheduled at 0 but sent at 150 (queued behind max_concurrency):
        // 20 ms after sending, 170 ms after it was due.
        let late = rec(0, 150, &[170, 180], None);
        let on_time = rec(100, 100, &[120, 130], None);
        let failed = rec(
            200,
            200,
            &[],
            Some("HTTP 503 from http://x/v1/completions: busy"),
        );
        let timeout = rec(
            300,
            300,
            &[],
            Some("first-token timeout: no content within 1 s"),
        );
        let recs = [late, on_time, failed, timeout];
        let m = compute(
            &params(Load::Sustained, Arrival::Constant),
            0.0,
            &recs,
            &[span(0, 0, 1000)],
            &[],
        );
        let ttft = m.ttft_from_schedule_ms.unwrap();
        assert_eq!((ttft.min, ttft.max), (20.0, 170.0));
        assert_eq!(m.send_lag_ms.unwrap().max, 150.0);
        assert_eq!(m.good, Some(1), "the late one misses the 100 ms TTFT SLO");
        assert_eq!(m.goodput_fraction, Some(0.25));
        assert_eq!(m.goodput, Some(1.0));
        assert_eq!(m.failures_by_kind["http_error"], 1);
        assert_eq!(m.failures_by_kind["timeout"], 1);
        assert_eq!((m.completed, m.failed, m.scheduled), (2, 2, 4));
        assert_eq!(m.achieved_rate, 2.0);
        assert!(
            (m.offered_rate.unwrap() - 10.0).abs() < 1e-9,
            "3 gaps over 0.3 s"
        );
    }

    #[test]
    fn recovery_is_measured_from_the_end_of_the_spike() {
        let mut p = params(Load::Spike, Arrival::Constant);
        p.spike_at_s = 2.0;
        p.spike_s = 1.0;
        // One request every 100 ms for 8 s; TTFT 10 ms, but 300 ms for
        // those scheduled in [2, 5): the queue drains 2 s after the spike.
        let recs: Vec<RequestRecord> = (0..80)
            .map(|i| {
                let s = i * 100;
                let ttft = if (2000..5000).contains(&s) { 300 } else { 10 };
                rec(s, s, &[s + ttft, s + ttft + 5], None)
            })
            .collect();
        let m = compute(&p, 8.0, &recs, &[span(0, 0, 8000)], &[]);
        let sp = m.spike.unwrap();
        assert_eq!(sp.baseline_ttft_p50_ms, Some(10.0));
        assert_eq!(sp.threshold_ms, Some(15.0));
        assert_eq!(sp.peak_window_ttft_p50_ms, Some(300.0));
        assert_eq!(
            sp.recovery_s,
            Some(3.0),
            "window [5, 6) is the first good one; it ends 3 s after the spike"
        );
        // Never recovering.
        let recs: Vec<RequestRecord> = (0..80)
            .map(|i| {
                let s = i * 100;
                let ttft = if s >= 2000 { 300 } else { 10 };
                rec(s, s, &[s + ttft], None)
            })
            .collect();
        assert_eq!(
            compute(&p, 8.0, &recs, &[span(0, 0, 8000)], &[])
                .spike
                .unwrap()
                .recovery_s,
            None
        );
    }

    #[test]
    fn sweep_steps_are_judged_and_the_best_passing_rate_kept() {
        let p = params(Load::Sweep, Arrival::Constant);
        // Segment 0 at 10/s: 10 requests in 1 s, all fast. Segment 1 at
        // 20/s: 20 requests, half too slow.
        let mut recs = Vec::new();
        for i in 0..10 {
            let mut r = rec(i * 100, i * 100, &[i * 100 + 10], None);
            r.iteration = 0;
            recs.push(r);
        }
        for i in 0..20 {
            let s = 2000 + i * 50;
            let ttft = if i % 2 == 0 { 10 } else { 500 };
            let mut r = rec(s, s, &[s + ttft], None);
            r.iteration = 1;
            recs.push(r);
        }
        let spans = [span(0, 0, 1000), span(1, 2000, 3000)];
        let m = compute(&p, 1.0, &recs, &spans, &[(0, 10.0), (1, 20.0)]);
        let sw = m.sweep.unwrap();
        assert!(sw.steps[0].passed && !sw.steps[1].passed, "{sw:?}");
        assert_eq!(sw.steps[1].goodput_fraction, 0.5);
        assert_eq!(sw.max_sustainable_rate, Some(10.0));
    }

    #[test]
    fn a_growing_queue_fails_a_segment_that_meets_its_slos() {
        let slo = Slo {
            ttft_ms: Some(5000.0),
            tpot_ms: None,
            e2el_ms: None,
            attainment: 0.99,
        };
        // 10 requests due every 100 ms of a 1 s segment, served one at a
        // time in 150 ms: each waits 50 ms more than the one before, a
        // growth of 0.5 s per s. Every TTFT is within 5 s.
        let slow: Vec<RequestRecord> = (0..10)
            .map(|k| rec(k * 100, k * 100, &[150 * (k + 1)], None))
            .collect();
        let refs: Vec<&RequestRecord> = slow.iter().collect();
        let st = evaluate(&refs, &span(0, 0, 1500), 10.0, &slo);
        assert_eq!(st.goodput_fraction, 1.0);
        assert!((st.queue_growth - 0.5).abs() < 1e-9, "{st:?}");
        assert!(!st.passed);
        // Served in 50 ms each: no growth.
        let fast: Vec<RequestRecord> = (0..10)
            .map(|k| rec(k * 100, k * 100, &[k * 100 + 50], None))
            .collect();
        let refs: Vec<&RequestRecord> = fast.iter().collect();
        let st = evaluate(&refs, &span(0, 0, 1000), 10.0, &slo);
        assert_eq!(st.queue_growth, 0.0);
        assert!(st.passed);
        // Too few requests to judge a trend.
        let refs: Vec<&RequestRecord> = slow.iter().take(9).collect();
        assert_eq!(
            evaluate(&refs, &span(0, 0, 1500), 10.0, &slo).queue_growth,
            0.0
        );
    }

    #[test]
    fn failure_kinds() {
        assert_eq!(failure_kind("runtime: total timeout: 3 s"), "timeout");
        assert_eq!(
            failure_kind("runtime: HTTP 429 from http://h/v1/x: slow down"),
            "http_error"
        );
        assert_eq!(
            failure_kind("runtime: cannot connect to http://h: refused"),
            "connect"
        );
        assert_eq!(
            failure_kind("runtime: malformed SSE line"),
            "malformed_stream"
        );
        assert_eq!(
            failure_kind("runtime: stream of http://h ended before [DONE]"),
            "disconnect"
        );
        assert_eq!(failure_kind("runtime: out of memory"), "engine");
    }
}
