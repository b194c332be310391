//! The report's open-loop serving tables (one shape for Markdown and
//! HTML): per serving cell the rates asked, offered and achieved, latency
//! from the scheduled send time, goodput, failures by kind, the highest
//! sustainable rate and the recovery after a spike; and each rate a sweep
//! tried.

use super::analysis::Group;
use super::table::{f, Table};
use engine_matrix_results::ServingMetrics;

fn rate(r: Option<f64>) -> String {
    r.map_or("inf".into(), |r| format!("{r:.1}"))
}

fn runs<'a>(groups: &'a [Group<'a>]) -> Vec<(&'a str, u32, &'a ServingMetrics)> {
    groups
        .iter()
        .flat_map(|g| {
            g.ok_runs().filter_map(move |r| {
                let s = r.metrics.as_ref()?.serving.as_ref()?;
                Some((g.cell().id.as_str(), r.repeat, s))
            })
        })
        .collect()
}

/// Whether cell `id` replays a trace (its times are the trace's: no load
/// shape, rate or arrival process of its own).
fn is_trace(groups: &[Group], id: &str) -> bool {
    groups.iter().any(|g| {
        g.cell().id == id
            && g.cell()
                .params
                .dataset
                .as_ref()
                .is_some_and(|d| d.kind == engine_matrix_format::dataset::DatasetKind::Trace)
    })
}

/// One row per serving cell and repetition (`None`: no serving cell).
pub(crate) fn cells(groups: &[Group]) -> Option<Table> {
    let runs = runs(groups);
    if runs.is_empty() {
        return None;
    }
    let rows = runs
        .iter()
        .map(|(id, repeat, s)| {
            let p = |d: &Option<engine_matrix_stats::stats::Distribution>,
                     q: fn(&engine_matrix_stats::stats::Distribution) -> f64| {
                f(d.as_ref().map(q), 1)
            };
            let failures = if s.failures_by_kind.is_empty() {
                "0".to_string()
            } else {
                s.failures_by_kind
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let trace = is_trace(groups, id);
            vec![
                id.to_string(),
                repeat.to_string(),
                if trace { "trace" } else { s.load.as_str() }.to_string(),
                if trace {
                    "trace".to_string()
                } else {
                    rate(s.request_rate)
                },
                f(s.offered_rate, 1),
                format!("{:.1}", s.achieved_rate),
                p(&s.ttft_from_schedule_ms, |d| d.p50),
                p(&s.ttft_from_schedule_ms, |d| d.p99),
                p(&s.e2el_from_schedule_ms, |d| d.p99),
                p(&s.send_lag_ms, |d| d.p99),
                match (s.goodput, s.goodput_fraction) {
                    (Some(g), Some(x)) => format!("{g:.1} ({:.0}%)", x * 100.0),
                    _ => "no SLO".into(),
                },
                failures,
                s.sweep
                    .as_ref()
                    .map_or("—".into(), |sw| match sw.max_sustainable_rate {
                        Some(r) => format!("{r:.1}"),
                        None => "none passed".into(),
                    }),
                s.spike
                    .as_ref()
                    .map_or("—".into(), |sp| match sp.recovery_s {
                        Some(x) => format!("{x:.0}"),
                        None => "not recovered".into(),
                    }),
                s.degradation.as_ref().map_or("—".into(), |d| {
                    let slopes = match (d.ttft_p50_ms_per_min, d.e2el_p50_ms_per_min) {
                        (Some(t), Some(e)) => format!("{t:+.1} / {e:+.1}"),
                        (Some(t), None) => format!("{t:+.1} / —"),
                        (None, Some(e)) => format!("— / {e:+.1}"),
                        (None, None) => "—".into(),
                    };
                    match d.verdict.as_deref() {
                        Some(v) => format!("{slopes} ({v})"),
                        None => slopes,
                    }
                }),
            ]
        })
        .collect();
    Some(Table {
        headers: vec![
            "cell",
            "repeat",
            "load",
            "rate req/s",
            "offered",
            "achieved",
            "TTFT p50 ms*",
            "TTFT p99 ms*",
            "E2EL p99 ms*",
            "send lag p99 ms",
            "goodput req/s",
            "failures",
            "max sustainable req/s",
            "recovery s",
            "drift TTFT / E2EL ms/min*",
        ],
        rows,
    })
}

/// Every rate the sweeps tried.
pub(crate) fn sweeps(groups: &[Group]) -> Option<Table> {
    let mut rows = Vec::new();
    for (id, repeat, s) in runs(groups) {
        let Some(sw) = &s.sweep else { continue };
        for st in &sw.steps {
            rows.push(vec![
                id.to_string(),
                repeat.to_string(),
                format!("{:.1}", st.rate),
                st.sent.to_string(),
                format!("{:.1}", st.achieved_rate),
                format!("{:.1}%", st.goodput_fraction * 100.0),
                f(st.ttft_p99_ms, 1),
                f(st.tpot_p99_ms, 2),
                f(st.e2el_p99_ms, 1),
                format!("{:.2}", st.queue_growth),
                if st.passed { "pass" } else { "fail" }.into(),
            ]);
        }
    }
    (!rows.is_empty()).then(|| Table {
        headers: vec![
            "sweep cell",
            "repeat",
            "rate req/s",
            "sent",
            "achieved",
            "good",
            "TTFT p99 ms*",
            "TPOT p99 ms",
            "E2EL p99 ms*",
            "queue growth s/s",
            "verdict",
        ],
        rows,
    })
}

/// What the starred columns and the verdicts mean.
pub(crate) const NOTE: &str =
    "Columns marked * are from each request's scheduled send time (open loop: queueing \
behind late sends or max_concurrency counts). Goodput: requests within every SLO per second \
(share of requests sent). A sweep rate passes when its share of good requests reaches \
slo_attainment and its latency grows by at most 0.1 s per s (median E2EL* of its last fifth of requests against its second fifth's). Recovery: from the end of the spike until \
1-second windows stay under 1.25x the pre-spike median TTFT. Drift: Theil–Sen slopes of the 1-second windows' median TTFT* and E2EL* over the cell, ms per minute (at least 10 windows; none for sweeps); degrading when the growth they predict exceeds 10% of the median (and 20 ms) and both halves of the cell slope up (at least 20 windows).";
