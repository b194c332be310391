//! The settings of an open-loop `serving` cell, as the matrix writes
//! them: how requests arrive, the shape of the load over time, the rate,
//! and the service-level objectives. What they do (schedules, goodput,
//! sweeps) is the host's `serving` module.

use serde::{Deserialize, Serialize};

/// How arrivals are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    Constant,
    Poisson,
    Gamma,
}

impl Arrival {
    pub const NAMES: [&'static str; 3] = ["constant", "poisson", "gamma"];
    pub fn parse(s: &str) -> Option<Arrival> {
        match s {
            "constant" => Some(Arrival::Constant),
            "poisson" => Some(Arrival::Poisson),
            "gamma" => Some(Arrival::Gamma),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arrival::Constant => "constant",
            Arrival::Poisson => "poisson",
            Arrival::Gamma => "gamma",
        }
    }
}

/// The shape of the load over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Load {
    /// The rate, all along (a soak is a sustained load with a long
    /// `duration_s`; a peak is a sustained load at a high rate).
    Sustained,
    /// The rate times `spike_factor` for `spike_s`, from `spike_at_s`.
    Spike,
    /// A spike's extra requests, all at `spike_at_s`.
    Burst,
    /// The search for the highest sustainable rate.
    Sweep,
    /// A day curve: the rate falls to `rate_low` of itself and rises
    /// back over each `period_s`, as traffic over a day (the seeds' S4).
    Day,
    /// A seeded random walk of the rate between `rate_low` of itself and
    /// itself, one step every `walk_step_s` (the seeds' S4).
    Walk,
}

impl Load {
    pub const NAMES: [&'static str; 6] = ["sustained", "spike", "burst", "sweep", "day", "walk"];
    pub fn parse(s: &str) -> Option<Load> {
        match s {
            "sustained" => Some(Load::Sustained),
            "spike" => Some(Load::Spike),
            "burst" => Some(Load::Burst),
            "sweep" => Some(Load::Sweep),
            "day" => Some(Load::Day),
            "walk" => Some(Load::Walk),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Load::Sustained => "sustained",
            Load::Spike => "spike",
            Load::Burst => "burst",
            Load::Sweep => "sweep",
            Load::Day => "day",
            Load::Walk => "walk",
        }
    }
}

/// The request rate of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rate {
    /// Requests per second.
    Fixed(f64),
    /// Every request at once.
    Inf,
    /// The `max_sustainable_rate` an earlier sweep cell of the same model
    /// and engine found.
    Sustainable,
}

impl Rate {
    pub fn tag(&self) -> String {
        match self {
            Rate::Fixed(r) => format!("{r}"),
            Rate::Inf => "inf".into(),
            Rate::Sustainable => "sust".into(),
        }
    }
}

/// Service-level objectives (ms); `None` is not checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
    /// Share of good requests a sweep segment needs to pass.
    pub attainment: f64,
}

impl Slo {
    pub fn any(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2el_ms.is_some()
    }
}

/// The serving settings of a cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServingParams {
    pub load: Load,
    pub request_rate: Rate,
    pub arrival: Arrival,
    /// Gamma shape (1 with poisson, unused with constant).
    pub burstiness: f64,
    /// Requests in flight at most (`None`: unlimited).
    pub max_concurrency: Option<u32>,
    pub ramp_up_s: f64,
    pub spike_factor: f64,
    pub spike_at_s: f64,
    pub spike_s: f64,
    pub slo: Slo,
    /// Bisection steps of a sweep.
    pub sweep_steps: u32,
    /// Multiplies the request rate (`sustainable` included): a stress test
    /// from 70% of the sustainable rate is `rate_scale: 0.7`.
    #[serde(default = "one")]
    pub rate_scale: f64,
    /// The rate `sustainable` stands for in this run (set by the runner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_rate: Option<f64>,
    /// A `day` or `walk` load's lowest rate, as a share of the rate.
    #[serde(default = "quarter")]
    pub rate_low: f64,
    /// A `day` load's period, s (default: the cell's duration).
    #[serde(default)]
    pub period_s: f64,
    /// A `walk` load's step, s.
    #[serde(default = "ten")]
    pub walk_step_s: f64,
}

fn quarter() -> f64 {
    0.25
}

fn ten() -> f64 {
    10.0
}

impl ServingParams {
    /// Requests per second to run at (`None`: all at once).
    pub fn rate(&self) -> Option<f64> {
        match self.request_rate {
            Rate::Fixed(r) => Some(r),
            Rate::Inf => None,
            Rate::Sustainable => self.resolved_rate,
        }
        .map(|r| r * self.rate_scale)
    }
}

fn one() -> f64 {
    1.0
}
