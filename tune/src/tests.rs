//! The procedure on a known function with injected noise: the fault test
//! plugin's `knob`/`gear` speed factor (`tests/plugins/fault`), whose
//! optimum is `knob: 11, gear: mid`. The host's integration tests run the
//! same function through real cells.

use crate::flow::{self, Evaluator, Fidelity, Outcome, Phase, Settings, Step, TrialRecord};
use crate::space::{Config, Space};
use crate::Budget;
use engine_api::tunable::Tunable;
use engine_matrix_stats::rng::splitmix64;
use std::collections::{BTreeMap, HashMap};

/// The fault plugin's factor (kept in step with its `speed_factor`).
fn factor(c: &Config) -> f64 {
    let knob = c["knob"].as_i64().unwrap_or(0) as f64;
    let g = match c["gear"].as_str() {
        Some("mid") => 1.0,
        Some("high") => 1.25,
        _ => 1.6,
    };
    (1.0 + 0.04 * (knob - 11.0).powi(2)) * g
}

fn space() -> Space {
    let declared = vec![
        Tunable::int("knob", 0, 15, 0, ""),
        Tunable::choice("gear", &["low", "mid", "high"], "low", ""),
    ];
    Space::build("fault", &declared, &BTreeMap::new(), &Config::new()).unwrap()
}

/// Throughput `100 / factor`, times `1 + noise * u` per measurement (u
/// uniform in [-1, 1]; short trials noisier by sqrt 3) and a drift shared
/// by the whole round, as a busy machine gives.
struct Sim {
    rng: u64,
    noise: f64,
    flat: bool,
    clock: f64,
    measured: usize,
    /// Configurations that fail, as crashed cells do.
    crash: fn(&Config) -> bool,
    /// Constraint: configurations it breaks are measured but infeasible.
    breaks: fn(&Config) -> bool,
    /// A latency whose bound is 1 (`latency < 1`): infeasible past it, by
    /// how much it is past.
    slo: Option<fn(&Config) -> f64>,
    recorded: HashMap<Step, TrialRecord>,
    stop_after: Option<usize>,
}

impl Sim {
    fn new(seed: u64, noise: f64) -> Sim {
        Sim {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCD,
            noise,
            flat: false,
            clock: 0.0,
            measured: 0,
            crash: |_| false,
            breaks: |_| false,
            slo: None,
            recorded: HashMap::new(),
            stop_after: None,
        }
    }
    fn uniform(&mut self) -> f64 {
        (splitmix64(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

impl Evaluator for Sim {
    fn evaluate(&mut self, step: Step, config: &Config, fidelity: Fidelity) -> Outcome {
        self.measured += 1;
        self.clock += if fidelity == Fidelity::Short {
            1.0
        } else {
            3.0
        };
        if (self.crash)(config) {
            return Outcome::Infeasible {
                reason: "the worker process was killed by signal 11".into(),
            };
        }
        let noise = match fidelity {
            Fidelity::Short => self.noise * 3f64.sqrt(),
            Fidelity::Full => self.noise,
        };
        let drift = 1.0 + 0.05 * ((step.round as f64) * 1.7).sin();
        let base = if self.flat {
            100.0
        } else {
            100.0 / factor(config)
        };
        let value = base * drift * (1.0 + noise * self.uniform());
        let mut violation = 0.0;
        let mut broken = if (self.breaks)(config) {
            violation = 1.0;
            vec!["ttft_ms.p99 < 500".to_string()]
        } else {
            vec![]
        };
        if let Some(slo) = self.slo {
            let latency = slo(config);
            if latency >= 1.0 {
                violation += latency - 1.0 + 1e-9;
                broken.push(format!("latency < 1 (was {latency:.2})"));
            }
        }
        Outcome::Measured {
            value,
            broken,
            violation,
        }
    }
    fn recorded(&self, step: Step) -> Option<TrialRecord> {
        self.recorded.get(&step).cloned()
    }
    fn elapsed(&self) -> f64 {
        self.clock
    }
    fn stopped(&self) -> bool {
        self.stop_after.is_some_and(|n| self.measured >= n)
    }
}

fn settings(budget: u32, seed: u64) -> Settings {
    let mut s = Settings::new(Budget::Trials(budget), true);
    s.seed = seed;
    s
}

fn search_trials(o: &flow::Outcomes) -> usize {
    o.trials
        .iter()
        .filter(|t| t.step.phase != Phase::Validate)
        .count()
}

#[test]
fn finds_the_optimum_neighbourhood_with_under_30_percent_of_the_grid() {
    let s = space();
    assert_eq!(s.grid_size(), 48);
    // 14 search trials: 29% of the grid (validation comes on top).
    let budget = 14;
    for seed in 0..20 {
        let mut sim = Sim::new(seed, 0.03);
        let o = flow::run(&s, &settings(budget, seed), &mut sim);
        assert!(search_trials(&o) <= budget as usize);
        assert!(!o.winner_is_default, "seed {seed}: {}", o.verdict);
        // The neighbourhood: within 16% of the optimum's speed
        // (gear mid, knob 9..=13).
        assert!(
            factor(&o.winner) <= 1.17,
            "seed {seed}: picked {:?} (factor {:.2}): {}",
            o.winner,
            factor(&o.winner),
            o.verdict
        );
        let imp = o.improvement.expect("an improvement");
        // The defaults (knob 0, gear low) are 9.3 times slower than the optimum.
        assert!(imp.ratio.lo > 3.0, "seed {seed}: {imp:?}");
        let conv = o.convergence.as_ref().expect("convergence");
        assert!(conv.trials as usize <= search_trials(&o));
    }
}

#[test]
fn an_advantage_that_is_noise_never_wins() {
    // Every configuration is equally fast; 5% noise per measurement and a
    // drift between rounds. Whatever the search's best noisy trial, the
    // defaults must stay.
    let s = space();
    let mut wrong = Vec::new();
    for seed in 0..40 {
        let mut sim = Sim::new(seed, 0.05);
        sim.flat = true;
        let o = flow::run(&s, &settings(14, seed), &mut sim);
        if !o.winner_is_default {
            wrong.push((seed, o.verdict));
        }
    }
    assert!(wrong.is_empty(), "picked noise: {wrong:?}");
}

#[test]
fn a_small_real_advantage_is_found_over_the_noise() {
    // gear mid is 25% faster than high and knob barely matters near 11:
    // the defaults here (knob 11, gear high) lose 20% to the optimum.
    let declared = vec![
        Tunable::int("knob", 0, 15, 11, ""),
        Tunable::choice("gear", &["low", "mid", "high"], "high", ""),
    ];
    let s = Space::build("fault", &declared, &BTreeMap::new(), &Config::new()).unwrap();
    for seed in 0..10 {
        let mut sim = Sim::new(seed, 0.02);
        let o = flow::run(&s, &settings(14, seed), &mut sim);
        assert_eq!(o.winner["gear"], "mid", "seed {seed}: {}", o.verdict);
    }
}

#[test]
fn constraint_breakers_and_crashes_are_infeasible_and_the_search_goes_on() {
    let s = space();
    for seed in 0..5 {
        let mut sim = Sim::new(seed, 0.02);
        // knob >= 11 breaks the SLO; knob 5 crashes its worker.
        sim.breaks = |c| c["knob"].as_i64().unwrap_or(0) >= 11;
        sim.crash = |c| c["knob"].as_i64() == Some(5);
        let o = flow::run(&s, &settings(14, seed), &mut sim);
        let k = o.winner["knob"].as_i64().unwrap();
        assert!(k < 11, "seed {seed}: an infeasible winner {:?}", o.winner);
        assert_eq!(
            search_trials(&o),
            14,
            "seed {seed}: the search stopped early"
        );
        for t in &o.trials {
            let knob = t.config["knob"].as_i64().unwrap();
            let why = t.outcome.why_infeasible();
            match knob {
                5 => assert!(why.unwrap().contains("signal 11")),
                11.. => assert!(why.unwrap().contains("ttft_ms.p99 < 500")),
                _ => assert!(why.is_none()),
            }
        }
        // With the optimum out of bounds, the best feasible is knob 10, mid.
        assert!(factor(&o.winner) <= 1.2, "seed {seed}: {:?}", o.winner);
    }
}

/// A feasible region far from the defaults (knob 11..=13 of 0..=15, 9 of
/// the 48 points; the defaults, knob 0, break the bound) is found because
/// infeasible trials are ranked by how far they break it: the search
/// walks towards the bound instead of guessing.
/// Seeds of 40 in which the feasible optimum's neighbourhood must be found
/// (measured: 29; 18 when infeasible trials are all told the same worst
/// loss, as before the graded ranking).
const SLO_FOUND: usize = 27;

#[test]
fn the_search_is_drawn_to_a_feasible_region_far_from_the_defaults() {
    let s = space();
    let mut found = 0;
    let seeds = 40;
    for seed in 0..seeds {
        let mut sim = Sim::new(seed, 0.02);
        sim.slo = Some(|c| 0.5 + 0.25 * (c["knob"].as_i64().unwrap_or(0) - 12).abs() as f64);
        let o = flow::run(&s, &settings(14, seed), &mut sim);
        let k = o.winner["knob"].as_i64().unwrap();
        if (11..=13).contains(&k) {
            // Feasible; the neighbourhood of the feasible optimum (knob
            // 11, gear mid) counts as found.
            found += usize::from(factor(&o.winner) <= 1.17);
        } else {
            assert!(
                o.winner_is_default,
                "seed {seed}: an infeasible winner {:?}",
                o.winner
            );
        }
    }
    assert!(found >= SLO_FOUND, "{found} of {seeds} seeds");
}

#[test]
fn infeasible_defaults_give_way_to_the_best_feasible_finalist() {
    let s = space();
    let mut sim = Sim::new(3, 0.02);
    sim.breaks = |c| c["gear"] == "low";
    let o = flow::run(&s, &settings(14, 3), &mut sim);
    assert!(!o.winner_is_default);
    assert!(
        o.verdict.contains("the defaults are infeasible"),
        "{}",
        o.verdict
    );
}

#[test]
fn a_resumed_run_measures_nothing_twice() {
    let s = space();
    let set = settings(14, 11);
    let mut first = Sim::new(11, 0.03);
    first.stop_after = Some(9);
    let part = flow::run(&s, &set, &mut first);
    assert!(part.stopped.is_some());
    assert_eq!(part.trials.len(), 9);

    let mut second = Sim::new(12, 0.03);
    second.clock = first.clock;
    second.recorded = part.trials.iter().map(|t| (t.step, t.clone())).collect();
    let whole = flow::run(&s, &set, &mut second);
    assert!(whole.stopped.is_none());
    assert_eq!(
        &whole.trials[..9],
        &part.trials[..],
        "the recorded trials are kept as they were"
    );
    assert_eq!(
        second.measured,
        whole.trials.len() - 9,
        "recorded steps were measured again"
    );
    assert_eq!(search_trials(&whole), 14);
    assert!(factor(&whole.winner) <= 1.17, "{:?}", whole.winner);
}

#[test]
fn one_iteration_scenarios_explore_at_full_fidelity_and_promote_nothing() {
    let s = space();
    let mut set = settings(10, 5);
    set.short_trials = false;
    let mut sim = Sim::new(5, 0.02);
    let o = flow::run(&s, &set, &mut sim);
    assert!(o.trials.iter().all(|t| t.fidelity == Fidelity::Full));
    assert!(o.trials.iter().all(|t| t.step.phase != Phase::Promote));
    assert_eq!(search_trials(&o), 10);
}

#[test]
fn a_time_budget_bounds_the_whole_procedure() {
    let s = space();
    let mut set = settings(0, 2);
    set.budget = Budget::Seconds(60.0);
    let mut sim = Sim::new(2, 0.02);
    let o = flow::run(&s, &set, &mut sim);
    // Exploring stops at half the budget; validation is sized to the rest
    // (at least 3 rounds).
    let explore_end = o
        .trials
        .iter()
        .filter(|t| t.step.phase == Phase::Explore)
        .map(|t| t.elapsed_s)
        .fold(0.0, f64::max);
    assert!(explore_end <= 31.0, "{explore_end}");
    assert!(sim.clock <= 60.0 + 3.0 * 4.0 * 3.0, "{}", sim.clock);
}

#[test]
fn the_budget_split_promotes_a_quarter() {
    let s = settings(14, 0);
    assert_eq!(s.split(14), (11, 3));
    assert_eq!(s.split(2), (1, 1));
    assert_eq!(s.split(40), (30, 10));
}

#[test]
fn the_neighbourhood_is_found_in_at_least_97_percent_of_200_seeds() {
    // The rate behind the per-seed test above, over many seeds: 14 search
    // trials, 29% of the 48-point grid (measured: 198 of 200).
    let s = space();
    let found = (0..200)
        .filter(|&seed| {
            let mut sim = Sim::new(seed, 0.03);
            let o = flow::run(&s, &settings(14, seed), &mut sim);
            factor(&o.winner) <= 1.17
        })
        .count();
    assert!(found >= 194, "{found} of 200");
}

#[test]
fn when_nothing_is_feasible_the_defaults_stay_and_the_verdict_says_why() {
    let s = space();
    let mut sim = Sim::new(1, 0.02);
    sim.crash = |_| true;
    let o = flow::run(&s, &settings(6, 1), &mut sim);
    assert!(o.winner_is_default);
    assert!(o.finalists.is_empty());
    assert!(
        o.verdict.starts_with("no configuration was feasible") && o.verdict.contains("signal 11"),
        "{}",
        o.verdict
    );
}
