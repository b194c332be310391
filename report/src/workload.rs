//! The report's workload and server tables (one shape for Markdown and
//! HTML): per cell with a dataset, where its requests came from and the
//! distribution of their input and output lengths; per cell whose server
//! was scraped, the server's own figures beside the client's output rate.

use super::analysis::Group;
use super::table::{f, Table};
use engine_matrix_results::CellResult;
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

/// One row per cell (first ok repetition) that took prompt tokens from a
/// prefix cache: its hit rate and TTFT beside its twin's, the cell that
/// differs only in the engine, has the same plugin and took nothing from
/// a cache (`None`: no cell hit).
pub(crate) fn prefix_cache(groups: &[Group]) -> Option<Table> {
    let rest = |g: &Group| {
        let c = g.cell();
        let head = format!("{}/{}/{}/", c.scenario, c.model, c.engine);
        let tail = c.id.strip_prefix(&head).unwrap_or(&c.id).to_string();
        (c.scenario.clone(), c.model.clone(), tail)
    };
    fn first<'a>(g: &Group<'a>) -> Option<&'a CellResult> {
        g.ok_runs().next()
    }
    let hit_rate = |g: &Group| first(g)?.metrics.as_ref()?.prefix_cache_hit_rate;
    let ttft = |g: &Group| Some(first(g)?.metrics.as_ref()?.ttft_ms.as_ref()?.p50);
    let rows: Vec<Vec<String>> = groups
        .iter()
        .filter(|g| hit_rate(g).is_some_and(|h| h > 0.0))
        .filter_map(|g| {
            let run = first(g)?;
            let twins: Vec<&Group> = groups
                .iter()
                .filter(|o| {
                    o.cell().engine != g.cell().engine
                        && rest(o) == rest(g)
                        && first(o).is_some_and(|r| r.plugin == run.plugin)
                        && hit_rate(o) == Some(0.0)
                })
                .collect();
            let twin = match twins.as_slice() {
                [one] => Some(*one),
                _ => None,
            };
            let with = ttft(g);
            let without = twin.and_then(ttft);
            let gain = with.zip(without).map(|(w, wo)| wo / w);
            let bytes = run.memory.as_ref().map(|m| m.prefix_cache_bytes);
            Some(vec![
                g.cell().id.clone(),
                f(hit_rate(g).map(|h| 100.0 * h), 1),
                f(with, 1),
                twin.map_or("—".into(), |t| t.cell().engine.clone()),
                f(without, 1),
                gain.map_or("—".into(), |x| format!("{x:.2}×")),
                match bytes {
                    Some(b) if b > 0 => format!("{:.1}", b as f64 / (1u64 << 20) as f64),
                    _ => "—".into(),
                },
            ])
        })
        .collect();
    (!rows.is_empty()).then_some(Table {
        headers: vec![
            "cell",
            "hit %",
            "TTFT p50 ms",
            "without the cache",
            "its TTFT p50 ms",
            "TTFT gain",
            "cache MiB",
        ],
        rows,
    })
}

/// Under the prefix-cache table.
pub(crate) const PREFIX_NOTE: &str = "Hit %: prompt tokens taken from the prefix cache over all prompt tokens of the cell's measured requests. \"Without the cache\" is the cell that differs only in the engine, has the same plugin and took nothing from a cache (— when there is none or several). The cache lives as long as the loaded model: warm-up requests and earlier cells of the same load fill it, as they would a server's. Cache MiB: what the kit's store held at the end of the cell (— for a server, which does not say).";

/// Under the server table.
pub(crate) const SERVER_NOTE: &str = "The server's figures come from its Prometheus endpoint (`metrics_url`), scraped during the whole cell, warm-up included, so its token rates cover more requests than the client's measured ones; a figure the server does not expose is —.";
