//! Alert rules and their cooldown.
//!
//! A rule turns what just happened (a cell finished, a cell went quiet)
//! into candidate alerts, each with a *cause*: a key naming what went
//! wrong independently of which cell showed it (the engine and the
//! failure's message with its numbers blanked, the target and the engine,
//! ...). [`Alerts::offer`] raises a candidate unless an alert with the same
//! cause was raised less than the cooldown ago; then it only counts it on
//! the alert already shown, so one broken engine failing forty cells is
//! one alert "and 39 more", not forty.
//!
//! The rules do not judge anything themselves: a target miss is the
//! grade crate's verdict, a regression the comparison's (significance and
//! noise threshold both), a leak the leak check's, a failure the cell's
//! status. So an alert cries wolf no more often than the report would.

use crate::compare::Comparison;
use crate::results::targets::{TargetsReport, Verdict};
use crate::results::{CellResult, LeakVerdict, Status};
use engine_matrix_stats::resample::Verdict as Change;
use serde::Serialize;
use std::collections::HashMap;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    TargetMissed,
    Regression,
    FailedCell,
    Leak,
    Stall,
}

/// A rule's output, before the cooldown.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub kind: Kind,
    /// Alerts with the same cause share a cooldown.
    pub cause: String,
    pub cell: Option<String>,
    pub engine: Option<String>,
    pub message: String,
}

/// An alert shown on the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Raised alerts are numbered from 1 in the order raised.
    pub id: u64,
    pub kind: Kind,
    pub cause: String,
    pub cell: Option<String>,
    pub engine: Option<String>,
    pub message: String,
    /// Seconds since the run started.
    pub at_s: f64,
    /// Later alerts of the same cause held back by the cooldown.
    pub held_back: u64,
}

/// The rules' settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Seconds during which a cause raises no second alert.
    pub cooldown_s: f64,
    /// Seconds without a token, in a running cell, that make a stall.
    pub stall_s: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cooldown_s: 300.0,
            stall_s: 30.0,
        }
    }
}

/// The raised alerts, newest last, and the cooldown's memory.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    pub raised: Vec<Alert>,
    /// Cause → index in `raised` of its latest alert.
    latest: HashMap<String, usize>,
    cooldown_s: f64,
}

/// What [`Alerts::offer`] did with a candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Offered {
    /// A new alert.
    Raised(Alert),
    /// Counted on the alert of the same cause (the updated alert).
    HeldBack(Alert),
}

impl Alerts {
    pub fn new(cooldown_s: f64) -> Alerts {
        Alerts {
            cooldown_s,
            ..Alerts::default()
        }
    }

    /// Raises `c` at `now_s` (seconds since the run started), or holds it
    /// back when its cause was raised less than the cooldown ago.
    pub fn offer(&mut self, c: Candidate, now_s: f64) -> Offered {
        if let Some(&i) = self.latest.get(&c.cause) {
            let last = &mut self.raised[i];
            if now_s - last.at_s < self.cooldown_s {
                last.held_back += 1;
                return Offered::HeldBack(last.clone());
            }
        }
        let alert = Alert {
            id: self.raised.len() as u64 + 1,
            kind: c.kind,
            cause: c.cause,
            cell: c.cell,
            engine: c.engine,
            message: c.message,
            at_s: now_s,
            held_back: 0,
        };
        self.latest.insert(alert.cause.clone(), self.raised.len());
        self.raised.push(alert.clone());
        Offered::Raised(alert)
    }
}

/// A failure message with its numbers blanked and cut to 120 characters:
/// "no token for 31 s" and "no token for 33 s" are one cause.
pub fn cause_of(message: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for ch in message.chars() {
        if ch.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            // "1.5" is one number.
            if !(in_number && ch == '.') {
                in_number = false;
                out.push(ch);
            }
        }
        if out.chars().count() >= 120 {
            break;
        }
    }
    out
}

/// The alerts a finished cell raises: failed, leak, targets it missed
/// (from the run's targets after the cell was graded) and regressions
/// against the baseline (`comparison`: this cell alone against the
/// baseline run).
pub fn on_cell(
    cell: &CellResult,
    targets: Option<&TargetsReport>,
    comparison: Option<&Comparison>,
) -> Vec<Candidate> {
    let id = &cell.cell.id;
    let engine = &cell.cell.engine;
    let mut out = Vec::new();
    let candidate = |kind, cause: String, message: String| Candidate {
        kind,
        cause,
        cell: Some(id.clone()),
        engine: Some(engine.clone()),
        message,
    };
    if cell.status == Status::Failed {
        let why = cell.reason.as_deref().unwrap_or("no reason given");
        out.push(candidate(
            Kind::FailedCell,
            format!("failed:{engine}:{}", cause_of(why)),
            format!("{id} failed: {why}"),
        ));
    }
    if let Some(leak) = cell.memory.as_ref().and_then(|m| m.leak.as_ref()) {
        if leak.verdict == LeakVerdict::Leak {
            out.push(candidate(
                Kind::Leak,
                format!("leak:{engine}"),
                format!(
                    "{id}: memory grows {:.1} MB/h (leak verdict)",
                    leak.slope_mb_per_hour
                ),
            ));
        }
    }
    for t in targets.map(|t| t.targets.as_slice()).unwrap_or_default() {
        for v in t.cells.iter().filter(|v| &v.cell == id) {
            if v.verdict == Verdict::Missed {
                out.push(candidate(
                    Kind::TargetMissed,
                    format!("target:{}:{engine}", t.def.name),
                    format!(
                        "{id}: target '{}' missed: {} = {:.4} {} (target {})",
                        t.def.name,
                        t.def.metric,
                        v.value,
                        t.unit,
                        t.def.target.describe()
                    ),
                ));
            }
        }
    }
    if let Some(cmp) = comparison {
        for r in &cmp.rows {
            if let Some(ch) = r.change.filter(|c| c.verdict == Change::Regressed) {
                out.push(candidate(
                    Kind::Regression,
                    format!("regression:{engine}:{}", r.metric.key()),
                    format!(
                        "{id}: {} regressed {:+.1}% against the baseline",
                        r.metric.label(),
                        ch.percent
                    ),
                ));
            }
        }
        for (_, why) in &cmp.broke {
            out.push(candidate(
                Kind::Regression,
                format!("broke:{engine}:{}", cause_of(why)),
                format!("{id}: {why}"),
            ));
        }
    }
    out
}

/// The stall rule: a running cell with no new token and no finished
/// request for `quiet_s` seconds, at least the configured stall time.
pub fn stall(cell: &str, engine: &str, quiet_s: f64, config: &Config) -> Option<Candidate> {
    (quiet_s >= config.stall_s).then(|| Candidate {
        kind: Kind::Stall,
        cause: format!("stall:{cell}"),
        cell: Some(cell.to_string()),
        engine: Some(engine.to_string()),
        message: format!("{cell}: no token for {quiet_s:.0} s"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{Cell, Matrix};
    use crate::results::targets::{CellVerdict, TargetOutcome};
    use crate::results::{LeakCheck, MemoryRecord};
    use serde_json::json;

    fn cells() -> Vec<Cell> {
        let text = "name: t\nmodels: [{name: m, path: /x}]\nengines: [{name: e}, {name: f}]\nscenarios:\n  - {name: lat, kind: latency, axes: {batch_size: [1, 2]}}\n";
        Matrix::parse(text, std::path::Path::new("t.yaml"))
            .unwrap()
            .cells(false)
    }

    fn result(cell: &Cell, status: Status, reason: Option<&str>) -> CellResult {
        CellResult {
            cell: cell.clone(),
            plugin: "candle".into(),
            status,
            reason: reason.map(str::to_string),
            started_at: String::new(),
            wall_s: 1.0,
            memory: None,
            metrics: None,
            repeat: 0,
            efficiency: None,
            quality: None,
            model_details: None,
            stability: None,
            retrieval: None,
            generator: None,
        }
    }

    fn candidate(cause: &str) -> Candidate {
        Candidate {
            kind: Kind::FailedCell,
            cause: cause.into(),
            cell: None,
            engine: None,
            message: cause.into(),
        }
    }

    #[test]
    fn the_cooldown_holds_a_repeated_cause_back_and_lets_it_through_after() {
        let mut a = Alerts::new(60.0);
        assert!(matches!(a.offer(candidate("x"), 0.0), Offered::Raised(_)));
        match a.offer(candidate("x"), 10.0) {
            Offered::HeldBack(alert) => assert_eq!((alert.id, alert.held_back), (1, 1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            a.offer(candidate("x"), 59.9),
            Offered::HeldBack(_)
        ));
        // Another cause has its own cooldown.
        assert!(matches!(a.offer(candidate("y"), 20.0), Offered::Raised(_)));
        // Past the cooldown from the first alert: raised again.
        match a.offer(candidate("x"), 60.0) {
            Offered::Raised(alert) => assert_eq!((alert.id, alert.held_back), (3, 0)),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.raised.len(), 3);
        assert_eq!(a.raised[0].held_back, 2);
        // A zero cooldown raises everything.
        let mut z = Alerts::new(0.0);
        for t in 0..3 {
            assert!(matches!(
                z.offer(candidate("x"), t as f64),
                Offered::Raised(_)
            ));
        }
    }

    #[test]
    fn a_cause_ignores_numbers() {
        assert_eq!(
            cause_of("no token for 31 s after 1.5 ms"),
            cause_of("no token for 33 s after 2.25 ms")
        );
        assert_ne!(cause_of("no token"), cause_of("out of memory"));
        assert!(cause_of(&"x".repeat(500)).chars().count() <= 120);
    }

    #[test]
    fn a_failed_cell_raises_one_cause_per_engine_and_message() {
        let c = cells();
        let a = on_cell(
            &result(&c[0], Status::Failed, Some("killed by signal 9")),
            None,
            None,
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, Kind::FailedCell);
        assert!(a[0].message.contains("killed by signal 9"));
        let twin = c
            .iter()
            .find(|x| x.engine == c[0].engine && x.id != c[0].id)
            .unwrap();
        let b = on_cell(
            &result(twin, Status::Failed, Some("killed by signal 11")),
            None,
            None,
        );
        assert_eq!(
            a[0].cause, b[0].cause,
            "same engine, same message but a number"
        );
        let other_engine = c.iter().find(|x| x.engine != c[0].engine).unwrap();
        let d = on_cell(
            &result(other_engine, Status::Failed, Some("killed by signal 9")),
            None,
            None,
        );
        assert_ne!(a[0].cause, d[0].cause);
        // ok and unsupported cells raise nothing.
        assert!(on_cell(&result(&c[0], Status::Ok, None), None, None).is_empty());
        assert!(on_cell(&result(&c[0], Status::Unsupported, Some("no")), None, None).is_empty());
    }

    #[test]
    fn a_leak_verdict_and_a_missed_target_raise_alerts_but_met_and_no_leak_do_not() {
        let c = cells();
        let leak = |verdict: &str| -> LeakCheck {
            serde_json::from_value(json!({
                "samples": 40, "window_s": 60.0, "slope_mb_per_hour": 120.0,
                "growth_mb": 2.0, "first_half_mb_per_hour": 100.0,
                "second_half_mb_per_hour": 140.0, "observed_growth_mb": 2.0,
                "verdict": verdict, "note": null
            }))
            .unwrap()
        };
        let with_leak = |verdict: &str| {
            let mut r = result(&c[0], Status::Ok, None);
            r.memory = Some(MemoryRecord {
                leak: Some(leak(verdict)),
                ..MemoryRecord::default()
            });
            r
        };
        let a = on_cell(&with_leak("leak"), None, None);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, Kind::Leak);
        assert!(a[0].message.contains("120.0 MB/h"), "{}", a[0].message);
        assert!(on_cell(&with_leak("no_leak"), None, None).is_empty());
        assert!(on_cell(&with_leak("insufficient"), None, None).is_empty());

        let outcome = |verdict: Verdict| TargetOutcome {
            def: serde_json::from_value(json!({
                "name": "ttft", "metric": "ttft_ms.p50", "target": {"max": 100.0},
                "source": "matrix"
            }))
            .unwrap(),
            unit: "ms".into(),
            verdict: Some(verdict),
            cells: vec![CellVerdict {
                cell: c[0].id.clone(),
                engine: c[0].engine.clone(),
                model: "m".into(),
                value: 250.0,
                samples: 1,
                verdict,
            }],
            unmeasured: vec![],
            note: None,
        };
        let report = |v| TargetsReport {
            targets: vec![outcome(v)],
            ..TargetsReport::default()
        };
        let ok = result(&c[0], Status::Ok, None);
        let missed = on_cell(&ok, Some(&report(Verdict::Missed)), None);
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].kind, Kind::TargetMissed);
        assert!(
            missed[0].message.contains("ttft_ms.p50 = 250"),
            "{}",
            missed[0].message
        );
        assert!(on_cell(&ok, Some(&report(Verdict::Acceptable)), None).is_empty());
        assert!(on_cell(&ok, Some(&report(Verdict::Met)), None).is_empty());
        // Another cell's miss is not this cell's.
        let other = result(&c[1], Status::Ok, None);
        assert!(on_cell(&other, Some(&report(Verdict::Missed)), None).is_empty());
    }

    #[test]
    fn a_regression_against_the_baseline_raises_an_alert_and_no_change_does_not() {
        use crate::compare::Row;
        use crate::report::analysis::Metric;
        use engine_matrix_stats::resample::{Change as Delta, Estimate};
        let c = cells();
        let est = |point: f64| Estimate {
            point,
            lo: point * 0.95,
            hi: point * 1.05,
            n: 10,
            confidence: 0.95,
        };
        let row = |verdict: Change, percent: f64| Row {
            cell: c[0].id.clone(),
            engine: c[0].engine.clone(),
            metric: Metric::OutputThroughput,
            baseline: est(100.0),
            candidate: est(100.0 + percent),
            unit: "tok/s",
            change: Some(Delta {
                ratio: est(1.0 + percent / 100.0),
                percent,
                significant: verdict != Change::NoChange,
                verdict,
            }),
        };
        let cmp = |rows: Vec<Row>, broke: Vec<(String, String)>| Comparison {
            rows,
            broke,
            ..Comparison::default()
        };
        let ok = result(&c[0], Status::Ok, None);
        let a = on_cell(
            &ok,
            None,
            Some(&cmp(vec![row(Change::Regressed, -20.0)], vec![])),
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, Kind::Regression);
        assert!(a[0].message.contains("-20.0%"), "{}", a[0].message);
        assert!(a[0].cause.ends_with(":output_throughput"), "{}", a[0].cause);
        for quiet in [row(Change::NoChange, -3.0), row(Change::Improved, 20.0)] {
            assert!(on_cell(&ok, None, Some(&cmp(vec![quiet], vec![]))).is_empty());
        }
        let failed = result(&c[0], Status::Failed, Some("boom"));
        let broke = cmp(
            vec![],
            vec![(
                c[0].id.clone(),
                "ran in the baseline, failed in the candidate: boom".into(),
            )],
        );
        let kinds: Vec<Kind> = on_cell(&failed, None, Some(&broke))
            .iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, vec![Kind::FailedCell, Kind::Regression]);
    }

    #[test]
    fn a_stall_needs_the_configured_quiet_time() {
        let cfg = Config {
            cooldown_s: 60.0,
            stall_s: 30.0,
        };
        assert!(stall("c", "e", 29.9, &cfg).is_none());
        let s = stall("c", "e", 31.0, &cfg).unwrap();
        assert_eq!(s.kind, Kind::Stall);
        assert_eq!(s.message, "c: no token for 31 s");
    }
}
