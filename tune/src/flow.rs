//! The procedure: explore, promote, validate, pick.
//!
//! 1. **Explore** at low fidelity (short trials, e.g. a third of the
//!    scenario's iterations): trial 0 is the engine's defaults, then TPE
//!    proposals ([`crate::search`]), each configuration once.
//! 2. **Promote** (successive halving, one rung): the best third of the
//!    feasible explored configurations run again at full fidelity, so the
//!    short trials' noise decides less.
//! 3. **Validate**: the defaults and the [`Settings::finalists`] best
//!    full-fidelity configurations run [`Settings::rounds`] times,
//!    interleaved (the order rotates every round), and each finalist is
//!    compared with the defaults round by round: the median of the paired
//!    ratios with a bootstrap interval (engine-matrix-stats'
//!    `compare_paired`), at a confidence corrected for the number of
//!    finalists (Bonferroni).
//! 4. **Pick**: the winner is the finalist whose improvement is both
//!    significant and larger than the noise threshold, choosing by the
//!    interval's conservative end (the lower bound of a speed-up), not the
//!    point estimate, and that end must itself clear the noise threshold; when none qualifies the defaults stay, and the result
//!    says so. The best single noisy trial is never the winner by itself.
//!
//! A trial is infeasible when its cell failed, was unsupported, or broke a
//! constraint; the search records it with its reason and goes on.

use crate::search::Searcher;
use crate::space::Space;
pub use engine_matrix_results::tune::{
    Budget, Config, Convergence, Fidelity, Finalist, Outcome, Outcomes, Phase, Settings, Step,
    TrialRecord,
};
use engine_matrix_stats::resample::{compare_paired, Change, Verdict, RESAMPLES};

/// Runs trials for the procedure.
pub trait Evaluator {
    /// Measures `config` at `fidelity` for `step`; a resumed run returns
    /// the recorded outcome of the step instead of measuring again.
    fn evaluate(&mut self, step: Step, config: &Config, fidelity: Fidelity) -> Outcome;
    /// What an earlier, interrupted run recorded for `step` (`--resume`):
    /// the procedure takes it instead of measuring again.
    fn recorded(&self, _step: Step) -> Option<TrialRecord> {
        None
    }
    /// Seconds since tuning began.
    fn elapsed(&self) -> f64;
    /// Stop now (Ctrl-C, a run timeout): what was measured is kept.
    fn stopped(&self) -> bool {
        false
    }
}

/// The loss TPE minimises.
fn loss(s: &Settings, value: f64) -> f64 {
    if s.higher_is_better {
        -value
    } else {
        value
    }
}

/// The loss TPE is told for a trial that broke constraints: above every
/// feasible trial's and below a trial without a value
/// ([`crate::search::INFEASIBLE_LOSS`]), ranked by how far it broke them,
/// so that the search is drawn towards the feasible region rather than
/// blind to it (what constrained TPE does, Optuna's `constraints_func`).
const BROKEN_LOSS: f64 = 1e20;

/// What TPE is told about `outcome` (`None`: the worst loss).
fn told(s: &Settings, outcome: &Outcome) -> Option<f64> {
    match (outcome.feasible_value(), outcome.violation()) {
        (Some(v), _) => Some(loss(s, v)),
        (None, Some(by)) => Some(BROKEN_LOSS * (1.0 + by.min(1e6))),
        (None, None) => None,
    }
}

/// Whether `a` is better than `b`.
fn better(s: &Settings, a: f64, b: f64) -> bool {
    loss(s, a) < loss(s, b)
}

/// Runs the procedure over `space` with `eval`.
pub fn run(space: &Space, settings: &Settings, eval: &mut dyn Evaluator) -> Outcomes {
    let startup = match settings.budget {
        Budget::Trials(n) => (n as usize / 4).clamp(3, 10),
        Budget::Seconds(_) => 6,
    };
    let mut search = Searcher::new(space.clone(), settings.seed, startup);
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut stopped = None;
    let explore_fidelity = if settings.short_trials {
        Fidelity::Short
    } else {
        Fidelity::Full
    };
    let (explore_n, promote_n) = match settings.budget {
        Budget::Trials(n) => settings.split(n),
        Budget::Seconds(_) => (u32::MAX, 0),
    };
    // A recorded trial of the same step and configuration is taken as is.
    let record = |trials: &mut Vec<TrialRecord>,
                  eval: &mut dyn Evaluator,
                  step: Step,
                  config: Config,
                  fidelity: Fidelity| {
        match eval.recorded(step) {
            Some(r) if r.config == config && r.fidelity == fidelity => trials.push(r),
            _ => {
                let outcome = eval.evaluate(step, &config, fidelity);
                trials.push(TrialRecord {
                    step,
                    fidelity,
                    config,
                    outcome,
                    elapsed_s: eval.elapsed(),
                });
            }
        }
    };

    // 1. Explore: the defaults, then proposals.
    let mut index = 0u32;
    while index < explore_n {
        if eval.stopped() {
            stopped = Some("stopped while exploring".to_string());
            break;
        }
        if let Budget::Seconds(s) = settings.budget {
            if index > 0 && eval.elapsed() >= 0.5 * s {
                break;
            }
        }
        let step = Step {
            phase: Phase::Explore,
            index,
            round: 0,
        };
        // A resumed run takes the recorded proposal: TPE's draws need not
        // repeat exactly, and what was measured is never measured again.
        let config = match eval.recorded(step) {
            Some(r) if r.fidelity == explore_fidelity => r.config,
            _ if index == 0 => space.defaults.clone(),
            _ => {
                // The last third of the exploring searches around the
                // best point so far.
                let local = match settings.budget {
                    Budget::Trials(_) => index >= explore_n - explore_n / 3,
                    Budget::Seconds(s) => eval.elapsed() >= s / 3.0,
                };
                // The best feasible point, else the one that broke the
                // constraints least.
                let best = ranked(&trials, Phase::Explore, settings)
                    .into_iter()
                    .next()
                    .or_else(|| least_violating(&trials));
                let near = best
                    .filter(|_| local)
                    .and_then(|(b, _)| search.propose_near(&b));
                match near.or_else(|| search.propose()) {
                    Some(c) => c,
                    None => break,
                }
            }
        };
        record(&mut trials, eval, step, config.clone(), explore_fidelity);
        if space.contains(&config) {
            let told = trials.last().and_then(|t| told(settings, &t.outcome));
            search.observe(&config, told);
        }
        index += 1;
    }

    // 2. Promote the best third (at least one) to full fidelity.
    let explored: Vec<(Config, f64)> = ranked(&trials, Phase::Explore, settings)
        .into_iter()
        .filter(|(c, _)| *c != space.defaults)
        .collect();
    let promote_n = match settings.budget {
        _ if !settings.short_trials => 0,
        Budget::Trials(_) => promote_n,
        Budget::Seconds(_) => (explored.len() as u32).div_ceil(settings.eta).clamp(1, 5),
    };
    for (i, (config, _)) in explored.iter().take(promote_n as usize).enumerate() {
        if stopped.is_some() || eval.stopped() {
            stopped.get_or_insert_with(|| "stopped while promoting".to_string());
            break;
        }
        let step = Step {
            phase: Phase::Promote,
            index: i as u32,
            round: 0,
        };
        record(&mut trials, eval, step, config.clone(), Fidelity::Full);
    }
    let search_trials = trials.len();

    // 3. Validate the finalists against the defaults, interleaved.
    let full_phase = if settings.short_trials && promote_n > 0 {
        Phase::Promote
    } else {
        Phase::Explore
    };
    let finalists: Vec<Config> = ranked(&trials, full_phase, settings)
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| *c != space.defaults)
        .take(settings.finalists)
        .collect();
    let mut slots: Vec<Config> = vec![space.defaults.clone()];
    slots.extend(finalists.iter().cloned());
    let rounds = match settings.budget {
        Budget::Seconds(s) => {
            let per_cell = mean_full_seconds(&trials).unwrap_or(1.0).max(1e-3);
            let left = (s - eval.elapsed()).max(0.0);
            ((left / (per_cell * slots.len() as f64)) as u32).clamp(3, settings.rounds)
        }
        Budget::Trials(_) => settings.rounds,
    };
    let mut values: Vec<Vec<Option<f64>>> = vec![Vec::new(); slots.len()];
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); slots.len()];
    if slots.len() > 1 {
        'rounds: for round in 0..rounds {
            for k in 0..slots.len() {
                if stopped.is_some() || eval.stopped() {
                    stopped.get_or_insert_with(|| "stopped while validating".to_string());
                    break 'rounds;
                }
                let slot = (k + round as usize) % slots.len();
                let step = Step {
                    phase: Phase::Validate,
                    index: slot as u32,
                    round,
                };
                record(&mut trials, eval, step, slots[slot].clone(), Fidelity::Full);
                let outcome = &trials[trials.len() - 1].outcome;
                values[slot].push(outcome.feasible_value());
                if let Some(why) = outcome.why_infeasible() {
                    reasons[slot].push(why);
                }
            }
        }
    }

    // 4. Pick.
    let k = finalists.len().max(1) as f64;
    let confidence = 1.0 - (1.0 - settings.confidence) / k;
    let default_values = values[0].clone();
    let defaults_infeasible = majority_infeasible(&default_values, &reasons[0]);
    let mut out_finalists = Vec::new();
    for (i, config) in finalists.iter().enumerate() {
        let vals = &values[i + 1];
        let pairs: Vec<(f64, f64)> = default_values
            .iter()
            .zip(vals)
            .filter_map(|(d, c)| Some(((*d)?, (*c)?)))
            .collect();
        let change = compare_paired(
            &pairs,
            settings.higher_is_better,
            settings.noise,
            confidence,
            RESAMPLES,
            settings.seed ^ i as u64,
        );
        out_finalists.push(Finalist {
            config: config.clone(),
            values: vals.clone(),
            change,
            infeasible: majority_infeasible(vals, &reasons[i + 1]),
        });
    }
    let (winner, improvement, verdict) = if finalists.is_empty() {
        (
            space.defaults.clone(),
            None,
            no_finalist(&trials[..search_trials], space),
        )
    } else {
        pick(
            space,
            settings,
            &out_finalists,
            &default_values,
            defaults_infeasible,
        )
    };
    let convergence = convergence(&trials[..search_trials], settings, 0.02);
    Outcomes {
        winner_is_default: winner == space.defaults,
        trials,
        default_values,
        finalists: out_finalists,
        winner,
        improvement,
        verdict,
        convergence,
        grid_size: space.grid_size(),
        confidence,
        stopped,
    }
}

/// Why nothing was validated: no configuration but the defaults (or not
/// even they) was feasible.
fn no_finalist(trials: &[TrialRecord], space: &Space) -> String {
    let why = |c: &Config| {
        trials
            .iter()
            .find(|t| t.config == *c)
            .and_then(|t| t.outcome.why_infeasible())
    };
    match (
        trials.iter().any(|t| t.outcome.feasible_value().is_some()),
        why(&space.defaults),
    ) {
        (_, None) if trials.len() <= 1 => {
            "nothing but the defaults was measured: the defaults stay".into()
        }
        (false, Some(d)) => {
            format!("no configuration was feasible: the defaults stay (the defaults: {d})")
        }
        (false, None) => "no configuration was feasible: the defaults stay".into(),
        (true, defaults) => {
            // Feasible trials exist, but none at full length besides the
            // defaults: short trials that broke the constraints when
            // promoted (a bound at the edge of the noise).
            let short_only = !trials.iter().any(|t| {
                t.fidelity == Fidelity::Full
                    && t.config != space.defaults
                    && t.outcome.feasible_value().is_some()
            }) && trials.iter().any(|t| {
                t.fidelity == Fidelity::Short
                    && t.config != space.defaults
                    && t.outcome.feasible_value().is_some()
            });
            format!(
                "no configuration {}was feasible{}: the defaults stay{}",
                if defaults.is_none() {
                    "other than the defaults "
                } else {
                    ""
                },
                if short_only {
                    " at full length (those feasible in short trials broke the constraints when promoted)"
                } else {
                    ""
                },
                defaults
                    .map(|d| format!(" (the defaults: {d})"))
                    .unwrap_or_default()
            )
        }
    }
}

/// The feasible configurations measured in `phase`, best first (one entry
/// per configuration).
fn ranked(trials: &[TrialRecord], phase: Phase, s: &Settings) -> Vec<(Config, f64)> {
    let mut v: Vec<(Config, f64)> = trials
        .iter()
        .filter(|t| t.step.phase == phase)
        .filter_map(|t| Some((t.config.clone(), t.outcome.feasible_value()?)))
        .collect();
    v.sort_by(|a, b| loss(s, a.1).total_cmp(&loss(s, b.1)));
    v
}

/// The explored configuration that broke the constraints least.
fn least_violating(trials: &[TrialRecord]) -> Option<(Config, f64)> {
    trials
        .iter()
        .filter(|t| t.step.phase == Phase::Explore)
        .filter_map(|t| Some((t.config.clone(), t.outcome.violation()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

fn mean_full_seconds(trials: &[TrialRecord]) -> Option<f64> {
    let mut prev = 0.0;
    let mut full = Vec::new();
    for t in trials {
        if t.fidelity == Fidelity::Full {
            full.push(t.elapsed_s - prev);
        }
        prev = t.elapsed_s;
    }
    (!full.is_empty()).then(|| full.iter().sum::<f64>() / full.len() as f64)
}

/// Why a configuration is infeasible: in more than half its rounds.
fn majority_infeasible(values: &[Option<f64>], reasons: &[String]) -> Option<String> {
    let bad = values.iter().filter(|v| v.is_none()).count();
    (values.is_empty() || bad * 2 > values.len()).then(|| {
        if values.is_empty() {
            "not validated".to_string()
        } else {
            format!(
                "infeasible in {bad} of {} validation rounds ({})",
                values.len(),
                reasons.first().cloned().unwrap_or_default()
            )
        }
    })
}

fn pick(
    space: &Space,
    s: &Settings,
    finalists: &[Finalist],
    default_values: &[Option<f64>],
    defaults_infeasible: Option<String>,
) -> (Config, Option<Change>, String) {
    let label = |c: &Config| crate::space::label(c, Some(space));
    // The conservative end of the interval, as a "higher is better" score.
    let score = |c: &Change| {
        if s.higher_is_better {
            c.ratio.lo
        } else {
            -c.ratio.hi
        }
    };
    if let Some(why) = defaults_infeasible {
        if default_values.is_empty() {
            return (
                space.defaults.clone(),
                None,
                "no validation ran: the defaults stay".into(),
            );
        }
        // The defaults break a constraint: the best feasible finalist by
        // its median wins, whatever the comparison says.
        let best = finalists
            .iter()
            .filter(|f| f.infeasible.is_none())
            .filter_map(|f| {
                let vals: Vec<f64> = f.values.iter().flatten().copied().collect();
                Some((f, engine_matrix_stats::resample::median(&vals)?))
            })
            .reduce(|a, b| if better(s, b.1, a.1) { b } else { a });
        return match best {
            Some((f, _)) => (
                f.config.clone(),
                f.change,
                format!(
                    "the defaults are infeasible ({why}); {} is the best feasible finalist",
                    label(&f.config)
                ),
            ),
            None => (
                space.defaults.clone(),
                None,
                format!("no configuration was feasible (the defaults: {why})"),
            ),
        };
    }
    let best = finalists
        .iter()
        .filter(|f| f.infeasible.is_none())
        .filter_map(|f| Some((f, f.change?)))
        .filter(|(_, c)| c.verdict == Verdict::Improved && beyond_noise(c, s))
        .reduce(|a, b| if score(&b.1) > score(&a.1) { b } else { a });
    match best {
        Some((f, c)) => (
            f.config.clone(),
            Some(c),
            format!(
                "{} beats the defaults by {:+.1}% ({:.0}% interval {:+.1}% to {:+.1}%, paired over {} rounds)",
                label(&f.config),
                c.percent,
                c.ratio.confidence * 100.0,
                (c.ratio.lo - 1.0) * 100.0,
                (c.ratio.hi - 1.0) * 100.0,
                c.ratio.n
            ),
        ),
        None => {
            // The best point estimate, whatever its interval.
            let point = |c: &Change| {
                if s.higher_is_better {
                    c.ratio.point
                } else {
                    -c.ratio.point
                }
            };
            let closest = finalists
                .iter()
                .filter_map(|f| Some((f, f.change?)))
                .reduce(|a, b| if point(&b.1) > point(&a.1) { b } else { a });
            let detail = match closest {
                Some((f, c)) => format!(
                    "; the closest, {}, was {:+.1}% ({:+.1}% to {:+.1}%)",
                    label(&f.config),
                    c.percent,
                    (c.ratio.lo - 1.0) * 100.0,
                    (c.ratio.hi - 1.0) * 100.0
                ),
                None => String::new(),
            };
            (
                space.defaults.clone(),
                None,
                format!(
                    "no configuration beat the defaults beyond noise (by at least {:.0}% at the interval's conservative end){detail}",
                    s.noise * 100.0
                ),
            )
        }
    }
}

/// Whether the interval's conservative end is itself beyond the noise
/// threshold: a winner is at least `noise` better with the interval's
/// confidence, not merely better on its point estimate.
fn beyond_noise(c: &Change, s: &Settings) -> bool {
    if s.higher_is_better {
        c.ratio.lo >= 1.0 + s.noise
    } else {
        c.ratio.hi <= 1.0 - s.noise
    }
}

/// When the search's best-so-far came within `tolerance` of its final
/// best (`None` without a feasible search trial).
pub fn convergence(trials: &[TrialRecord], s: &Settings, tolerance: f64) -> Option<Convergence> {
    let mut best: Option<f64> = None;
    let mut curve = Vec::with_capacity(trials.len());
    for (i, t) in trials.iter().enumerate() {
        if let Some(v) = t.outcome.feasible_value() {
            if best.is_none_or(|b| better(s, v, b)) {
                best = Some(v);
            }
        }
        curve.push((i as u32 + 1, t.elapsed_s, best));
    }
    let fin = best?;
    let close = |v: f64| (v - fin).abs() <= tolerance * fin.abs();
    let &(trials, seconds, _) = curve.iter().find(|(_, _, b)| b.is_some_and(close))?;
    Some(Convergence {
        tolerance,
        best: fin,
        trials,
        seconds,
        curve,
    })
}
