//! The report's workload and server tables (one shape for Markdown and
//! HTML): per cell with a dataset, where its requests came from and the
//! distribution of their input and output lengths; per cell whose server
//! was scraped, the server's own figures beside the client's output rate.

use super::analysis::Group;
use super::table::{f, Table};
use engine_matrix_stats::stats::Distribution;

/// `p50 / p90 / max` of a length distribution.
fn spread(d: Option<&Distribution>) -> String {
    match d {
        Some(d) => format!("{:.0} / {:.0} / {:.0}", d.p50, d.p90, d.max),
        None => "—".into(),
    }
}

/// One row per cell (first ok repetition) whose requests came from a
/// dataset other than `random` (`None`: there is none).
pub(crate) fn lengths(groups: &[Group]) -> Option<Table> {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .filter_map(|g| {
            let m = g.ok_runs().find_map(|r| r.metrics.as_ref())?;
            let w = m.workload.as_ref().filter(|w| w.dataset != "random")?;
            Some(vec![
                g.cell().id.clone(),
                w.dataset.clone(),
                w.pool.map_or("—".into(), |p| p.to_string()),
                m.input_lengths.as_ref().map_or(0, |d| d.count).to_string(),
                spread(m.input_lengths.as_ref()),
                spread(m.output_lengths.as_ref()),
                f(m.prefix_cache_hit_rate.map(|h| 100.0 * h), 0),
                f(m.ttft_ms.as_ref().map(|d| d.p50), 1),
                w.truncated.clone().unwrap_or_default(),
            ])
        })
        .collect();
    (!rows.is_empty()).then_some(Table {
        headers: vec![
            "cell",
            "dataset",
            "pool",
            "requests",
            "input tokens p50 / p90 / max",
            "output tokens p50 / p90 / max",
            "prefix-cache hit %",
            "TTFT p50 ms",
            "note",
        ],
        rows,
    })
}

/// One row per cell and repetition whose server was scraped (`None`:
/// none was).
pub(crate) fn server(groups: &[Group]) -> Option<Table> {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .flat_map(|g| {
            g.ok_runs().filter_map(move |r| {
                let m = r.metrics.as_ref()?;
                let s = m.server.as_ref()?;
                let x = &s.summary;
                Some(vec![
                    g.cell().id.clone(),
                    r.repeat.to_string(),
                    format!("{} / {}", s.scrapes - s.failures, s.scrapes),
                    f(x.queue_requests_max, 0),
                    f(x.running_requests_max, 0),
                    f(x.kv_cache_usage_max.map(|u| 100.0 * u), 0),
                    f(x.prompt_tokens_per_s, 1),
                    f(x.generation_tokens_per_s, 1),
                    format!("{:.1}", m.output_throughput),
                    f(x.prefix_cache_hit_ratio.map(|h| 100.0 * h), 0),
                    s.first_error.clone().unwrap_or_default(),
                ])
            })
        })
        .collect();
    (!rows.is_empty()).then_some(Table {
        headers: vec![
            "cell",
            "repeat",
            "scrapes ok",
            "queue max",
            "running max",
            "KV cache max %",
            "server prompt tok/s",
            "server gen tok/s",
            "client out tok/s",
            "prefix-cache hit %",
            "scrape error",
        ],
        rows,
    })
}

/// One row per multi-turn cell (first ok repetition) and turn index:
/// how TTFT and end-to-end latency grow with the history.
pub(crate) fn turns(groups: &[Group]) -> Option<Table> {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .flat_map(|g| {
            let m = g.ok_runs().find_map(|r| r.metrics.as_ref());
            m.into_iter().flat_map(move |m| {
                m.per_turn.iter().map(move |t| {
                    vec![
                        g.cell().id.clone(),
                        (t.turn + 1).to_string(),
                        t.requests.to_string(),
                        f(t.input_lengths.as_ref().map(|d| d.p50), 0),
                        f(t.ttft_ms.as_ref().map(|d| d.p50), 1),
                        f(t.ttft_ms.as_ref().map(|d| d.p99), 1),
                        f(t.e2el_ms.as_ref().map(|d| d.p50), 1),
                    ]
                })
            })
        })
        .collect();
    (!rows.is_empty()).then_some(Table {
        headers: vec![
            "cell",
            "turn",
            "requests",
            "prompt tokens p50",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "E2EL p50 ms",
        ],
        rows,
    })
}

/// Under the server table.
pub(crate) const SERVER_NOTE: &str = "The server's figures come from its Prometheus endpoint (`metrics_url`), scraped during the whole cell, warm-up included, so its token rates cover more requests than the client's measured ones; a figure the server does not expose is —.";
