//! Model-based proposals: the `optimizer` crate's TPE sampler (Optuna's
//! Tree-structured Parzen Estimator) over a [`Space`], driven by ask/tell.
//!
//! Why that crate: of the kept optimisation crates, `optimizer` has an
//! ask/tell API, a seeded TPE over integer (log-scale too) and
//! categorical parameters, and `enqueue` (which replays a recorded trial
//! into the model, which is how `--resume` rebuilds the search), with
//! three small dependencies. `tpe` (sile) does independent per-parameter
//! TPE as well but pulls rand 0.8, statrs and nalgebra; `egobox` (Gaussian
//! processes over continuous spaces) is heavy and fits discrete options
//! badly; `argmin` has no model-based sampler.
//!
//! What TPE does not do, done here: never propose a configuration twice
//! (measurements are noisy, so re-running one is the validation step's
//! job, not the search's); fall back to an untried grid point when TPE
//! keeps proposing tried ones; and feed infeasible trials (a broken
//! constraint, a failed or unsupported cell) back as the worst loss so
//! that the model learns to avoid them.

use crate::space::{Config, Param, ParamKind, Space};
use optimizer::parameter::{CategoricalParam, IntParam, ParamId, ParamValue, Parameter};
use optimizer::sampler::tpe::TpeSampler;
use optimizer::{Direction, Study, Trial};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The loss an infeasible trial is told (TPE only ranks losses).
pub const INFEASIBLE_LOSS: f64 = 1e30;

/// Draws TPE proposals over the searched parameters.
pub struct Searcher {
    space: Space,
    study: Study<f64>,
    handles: Vec<Handle>,
    seen: HashSet<String>,
    pending: Option<(String, Trial)>,
    rng: u64,
}

enum Handle {
    Int(IntParam),
    Choice(CategoricalParam<usize>),
}

impl Handle {
    fn new(p: &Param) -> Handle {
        match &p.kind {
            ParamKind::Int { min, max, log } => {
                let mut h = IntParam::new(*min, *max).name(p.name.clone());
                if *log {
                    h = h.log_scale();
                }
                Handle::Int(h)
            }
            ParamKind::Choice(v) => {
                Handle::Choice(CategoricalParam::new((0..v.len()).collect()).name(p.name.clone()))
            }
        }
    }

    fn id(&self) -> ParamId {
        match self {
            Handle::Int(h) => h.id(),
            Handle::Choice(h) => h.id(),
        }
    }
}

/// The key configurations are told apart by.
pub fn key(config: &Config) -> String {
    serde_json::to_string(config).unwrap_or_default()
}

impl Searcher {
    /// A searcher whose first `startup` proposals are random (TPE needs a
    /// few points before its model means anything).
    pub fn new(space: Space, seed: u64, startup: usize) -> Searcher {
        let sampler = TpeSampler::builder()
            .seed(seed)
            .n_startup_trials(startup)
            .build()
            .unwrap_or_default();
        let handles = space.params.iter().map(Handle::new).collect();
        Searcher {
            space,
            study: Study::with_sampler(Direction::Minimize, sampler),
            handles,
            seen: HashSet::new(),
            pending: None,
            rng: seed ^ 0x5DEE_CE66_D1CE_4E5B,
        }
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Configurations proposed or observed so far.
    pub fn tried(&self) -> usize {
        self.seen.len()
    }

    /// The next configuration to measure, never one tried before; `None`
    /// once every configuration of the grid has been.
    pub fn propose(&mut self) -> Option<Config> {
        if self.seen.len() as u64 >= self.space.grid_size() {
            return None;
        }
        for _ in 0..32 {
            let mut trial = self.study.ask();
            let config = self.suggest(&mut trial);
            let k = key(&config);
            if !self.seen.contains(&k) {
                self.pending = Some((k, trial));
                return Some(config);
            }
            self.study.fail_trial(trial, "already tried");
        }
        // TPE keeps choosing tried points: an untried one at random.
        let n = self.space.grid_size();
        for _ in 0..4096 {
            let i = self.next_u64() % n;
            let config = self.space.nth(i);
            if !self.seen.contains(&key(&config)) {
                let mut trial = self.replayed(&config);
                self.suggest(&mut trial);
                self.pending = Some((key(&config), trial));
                return Some(config);
            }
        }
        // A huge grid, nearly exhausted: walk it.
        (0..n)
            .map(|i| self.space.nth(i))
            .find(|c| !self.seen.contains(&key(c)))
            .inspect(|c| {
                let mut trial = self.replayed(c);
                self.suggest(&mut trial);
                self.pending = Some((key(c), trial));
            })
    }

    /// An untried neighbour of `best` (one searched option moved one step,
    /// or to another choice), the nearest first; `None` when all are
    /// tried. TPE samples each option on its own, so a few steps of local
    /// search around the best point finish what it started.
    pub fn propose_near(&mut self, best: &Config) -> Option<Config> {
        let mut near = Vec::new();
        for p in &self.space.params {
            let Some(v) = best.get(&p.name) else { continue };
            match &p.kind {
                ParamKind::Int { min, max, .. } => {
                    let Some(i) = v.as_i64() else { continue };
                    for d in [1, -1, 2, -2] {
                        if (*min..=*max).contains(&(i + d)) {
                            near.push((d.unsigned_abs(), p.name.clone(), Value::from(i + d)));
                        }
                    }
                }
                ParamKind::Choice(c) => {
                    near.extend(
                        c.iter()
                            .filter(|x| *x != v)
                            .map(|x| (1, p.name.clone(), x.clone())),
                    );
                }
            }
        }
        near.sort_by_key(|(d, ..)| *d);
        let config = near
            .into_iter()
            .map(|(_, name, v)| {
                let mut c = best.clone();
                c.insert(name, v);
                c
            })
            .find(|c| !self.seen.contains(&key(c)))?;
        let mut trial = self.replayed(&config);
        self.suggest(&mut trial);
        self.pending = Some((key(&config), trial));
        Some(config)
    }

    /// Tells the model how `config` did: its loss (lower is better), or
    /// `None` when it was infeasible. A configuration that was not the
    /// last proposal (a trial replayed by `--resume`) is added as if it had
    /// been.
    pub fn observe(&mut self, config: &Config, loss: Option<f64>) {
        let k = key(config);
        let loss = loss.filter(|l| l.is_finite()).unwrap_or(INFEASIBLE_LOSS);
        let trial = match self.pending.take() {
            Some((pk, trial)) if pk == k => trial,
            other => {
                self.pending = other;
                let mut trial = self.replayed(config);
                self.suggest(&mut trial);
                trial
            }
        };
        self.seen.insert(k);
        self.study.complete_trial(trial, loss);
    }

    /// A trial whose parameters are fixed to `config`'s.
    fn replayed(&self, config: &Config) -> Trial {
        let mut fixed = HashMap::new();
        for (p, h) in self.space.params.iter().zip(&self.handles) {
            let Some(v) = config.get(&p.name) else {
                continue;
            };
            let value = match &p.kind {
                ParamKind::Int { .. } => v.as_i64().map(ParamValue::Int),
                ParamKind::Choice(c) => c.iter().position(|x| x == v).map(ParamValue::Categorical),
            };
            if let Some(value) = value {
                fixed.insert(h.id(), value);
            }
        }
        self.study.enqueue(fixed);
        self.study.ask()
    }

    /// The configuration `trial` suggests.
    fn suggest(&self, trial: &mut Trial) -> Config {
        let mut values = Vec::with_capacity(self.handles.len());
        for (p, h) in self.space.params.iter().zip(&self.handles) {
            let v = match (h, &p.kind) {
                (Handle::Int(h), ParamKind::Int { min, .. }) => {
                    Value::from(h.suggest(trial).unwrap_or(*min))
                }
                (Handle::Choice(h), ParamKind::Choice(c)) => {
                    c[h.suggest(trial).unwrap_or(0).min(c.len() - 1)].clone()
                }
                _ => continue,
            };
            values.push((p.name.clone(), v));
        }
        self.space.config(values)
    }

    fn next_u64(&mut self) -> u64 {
        engine_matrix_stats::rng::splitmix64(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_api::tunable::Tunable;
    use std::collections::BTreeMap;

    fn space() -> Space {
        let declared = vec![
            Tunable::int("knob", 0, 15, 0, ""),
            Tunable::choice("gear", &["low", "mid", "high"], "low", ""),
        ];
        Space::build("fault", &declared, &BTreeMap::new(), &Config::new()).unwrap()
    }

    #[test]
    fn proposals_are_new_points_of_the_space_until_the_grid_is_exhausted() {
        let s = space();
        let mut search = Searcher::new(s.clone(), 7, 4);
        let mut keys = HashSet::new();
        while let Some(c) = search.propose() {
            assert!(s.contains(&c), "{c:?}");
            assert!(keys.insert(key(&c)), "proposed twice: {c:?}");
            let knob = c["knob"].as_i64().unwrap() as f64;
            search.observe(&c, Some((knob - 11.0).powi(2)));
            assert!(keys.len() <= 48);
        }
        assert_eq!(keys.len(), 48);
    }

    #[test]
    fn replayed_trials_are_not_proposed_again() {
        let s = space();
        let mut search = Searcher::new(s.clone(), 1, 2);
        for i in 0..47 {
            search.observe(&s.nth(i), if i % 5 == 0 { None } else { Some(i as f64) });
        }
        assert_eq!(search.propose(), Some(s.nth(47)));
    }
}
