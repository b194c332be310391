//! What an inference server said about itself during a cell: its
//! Prometheus endpoint (`metrics_url` of an `http` engine), scraped at an
//! interval beside the client's own timing, and summarised.
//!
//! The client's figures (TTFT, ITL, throughput in [`crate::metrics`]) say
//! what a user saw; these say why: how many requests the server held in
//! its queue, how many it ran at once, how full its KV cache was, how
//! many tokens it counted itself and how many prompt tokens its prefix
//! cache served. The host's `telemetry::prometheus` module scrapes and
//! summarises; this module only holds what it writes.
//!
//! # Canonical names
//!
//! Every server spells its metrics its own way (`vllm:num_requests_waiting`,
//! `llamacpp:requests_deferred`, `sglang:num_queue_reqs`,
//! `tgi_queue_size`); the host maps them onto the names below (the keys of
//! [`ServerSample::values`]), and the mapping table with its sources lives
//! with the scraper. Gauges are instantaneous readings; counters are
//! cumulative since the server started, so only their increase over the
//! cell means anything.
//!
//! # Only what the server exposed
//!
//! A server that does not expose a figure (recent llama-server has no KV
//! cache gauge; TGI has no prefix cache) gets `None`, omitted from the
//! JSON, never a 0. A scrape that failed is counted in
//! [`ServerMetricsRecord::failures`], the first error kept; it never fails
//! the cell.
//!
//! # Memory
//!
//! The raw exposition of a vLLM server is tens of kB (histograms per
//! model and engine); only the recognised figures are kept per scrape, a
//! few dozen bytes, and the series is bounded by the scraper (see
//! [`ServerMetricsRecord::stride`]). The summary is computed from every
//! successful scrape, kept in the series or not.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Gauge: requests waiting in the server's queue (not yet scheduled).
pub const QUEUE_REQUESTS: &str = "queue_requests";
/// Gauge: requests the server is running (in its batch).
pub const RUNNING_REQUESTS: &str = "running_requests";
/// Gauge: share of the KV cache in use, 0 to 1.
pub const KV_CACHE_USAGE: &str = "kv_cache_usage";
/// Counter: prompt (prefill) tokens the server counted.
pub const PROMPT_TOKENS_TOTAL: &str = "prompt_tokens_total";
/// Counter: tokens the server generated.
pub const GENERATION_TOKENS_TOTAL: &str = "generation_tokens_total";
/// Counter: prompt tokens served from the prefix cache.
pub const PREFIX_CACHE_HITS_TOTAL: &str = "prefix_cache_hits_total";
/// Counter: prompt tokens looked up in the prefix cache.
pub const PREFIX_CACHE_QUERIES_TOTAL: &str = "prefix_cache_queries_total";

/// The gauges among the canonical names.
pub const GAUGES: [&str; 3] = [QUEUE_REQUESTS, RUNNING_REQUESTS, KV_CACHE_USAGE];
/// The counters among the canonical names.
pub const COUNTERS: [&str; 4] = [
    PROMPT_TOKENS_TOTAL,
    GENERATION_TOKENS_TOTAL,
    PREFIX_CACHE_HITS_TOTAL,
    PREFIX_CACHE_QUERIES_TOTAL,
];

/// One cell's scrapes of a server's metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerMetricsRecord {
    /// The endpoint scraped, e.g. `http://127.0.0.1:8080/metrics`.
    pub url: String,
    /// The interval asked for between scrapes, ms.
    pub interval_ms: u64,
    /// Scrapes attempted (the first at the start, the last at the stop).
    pub scrapes: usize,
    /// Scrapes that failed (connection, HTTP status, unparsable text).
    pub failures: usize,
    /// The first failure, naming the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Samples kept in `series` are `stride` successful scrapes apart: 1
    /// until the series fills up, doubling each time it does.
    pub stride: u64,
    /// The recognised figures of the successful scrapes kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<ServerSample>,
    /// Figures over every successful scrape.
    pub summary: ServerSummary,
}

impl ServerMetricsRecord {
    /// Scrapes that succeeded.
    pub fn successes(&self) -> usize {
        self.scrapes.saturating_sub(self.failures)
    }

    /// One line for a report, e.g. `12 scrapes (0 failed): queue 1.5 (max
    /// 4), running 3.0 (max 4), KV cache 41% (max 77%), 512 prompt tok
    /// (85.3/s), 1024 generated tok (170.7/s)`; with the first error when
    /// a scrape failed.
    pub fn describe(&self) -> String {
        let mut line = format!("{} scrapes ({} failed)", self.scrapes, self.failures);
        let figures = self.summary.describe();
        if !figures.is_empty() {
            line.push_str(": ");
            line.push_str(&figures);
        }
        if let Some(e) = &self.first_error {
            line.push_str("; first error: ");
            line.push_str(e);
        }
        line
    }
}

/// The recognised figures of one successful scrape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSample {
    /// When the scrape's answer arrived, ms since the cell's start.
    pub t_ms: f64,
    /// Canonical name ([`QUEUE_REQUESTS`], ...) to value, summed (or, for
    /// [`KV_CACHE_USAGE`], averaged) over the server's label sets (vLLM's
    /// `model_name` and `engine`). Only the figures the server exposed.
    pub values: BTreeMap<String, f64>,
}

/// A cell's server figures. Gauges: the mean (over scrapes, which are
/// evenly spaced) and the maximum. Counters: the increase over the cell
/// (a counter that went down counts from zero again: the server
/// restarted) and that increase per second of `window_s`. `None`: the
/// server did not expose the figure, or fewer than two scrapes succeeded
/// (for rates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSummary {
    /// Successful scrapes the summary covers.
    pub samples: usize,
    /// Seconds from the first successful scrape to the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_requests_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_requests_max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_requests_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_requests_max: Option<f64>,
    /// 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage_max: Option<f64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_tokens_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hits: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hits_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_queries: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_queries_per_s: Option<f64>,
    /// Prefix cache hits / queries over the cell (both increases), when
    /// queries increased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hit_ratio: Option<f64>,
    /// Times a counter went down between two scrapes (a server restart).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub counter_resets: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ServerSummary {
    /// The figures present, comma-separated (empty when none is).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let gauge = |name: &str, mean: Option<f64>, max: Option<f64>, pct: bool| {
            let f = |v: f64| {
                if pct {
                    format!("{:.0}%", v * 100.0)
                } else {
                    format!("{v:.1}")
                }
            };
            mean.map(|m| match max {
                Some(x) => format!("{name} {} (max {})", f(m), f(x)),
                None => format!("{name} {}", f(m)),
            })
        };
        let counter = |name: &str, total: Option<f64>, rate: Option<f64>| {
            total.map(|t| match rate {
                Some(r) => format!("{t:.0} {name} ({r:.1}/s)"),
                None => format!("{t:.0} {name}"),
            })
        };
        parts.extend(gauge(
            "queue",
            self.queue_requests_mean,
            self.queue_requests_max,
            false,
        ));
        parts.extend(gauge(
            "running",
            self.running_requests_mean,
            self.running_requests_max,
            false,
        ));
        parts.extend(gauge(
            "KV cache",
            self.kv_cache_usage_mean,
            self.kv_cache_usage_max,
            true,
        ));
        parts.extend(counter(
            "prompt tok",
            self.prompt_tokens,
            self.prompt_tokens_per_s,
        ));
        parts.extend(counter(
            "generated tok",
            self.generation_tokens,
            self.generation_tokens_per_s,
        ));
        if let Some(r) = self.prefix_cache_hit_ratio {
            parts.push(format!("prefix cache hits {:.0}%", r * 100.0));
        } else {
            parts.extend(counter(
                "prefix cache hit tok",
                self.prefix_cache_hits,
                self.prefix_cache_hits_per_s,
            ));
        }
        if self.counter_resets > 0 {
            parts.push(format!(
                "{} counter reset(s): the server restarted",
                self.counter_resets
            ));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_the_server_did_not_expose_are_left_out_of_the_json() {
        let record = ServerMetricsRecord {
            url: "http://127.0.0.1:8080/metrics".into(),
            interval_ms: 1000,
            scrapes: 3,
            failures: 1,
            first_error: Some("GET http://127.0.0.1:8080/metrics: HTTP 500".into()),
            stride: 1,
            series: vec![ServerSample {
                t_ms: 0.0,
                values: BTreeMap::from([(RUNNING_REQUESTS.to_string(), 2.0)]),
            }],
            summary: ServerSummary {
                samples: 2,
                window_s: Some(1.0),
                running_requests_mean: Some(2.0),
                running_requests_max: Some(3.0),
                generation_tokens: Some(40.0),
                generation_tokens_per_s: Some(40.0),
                ..ServerSummary::default()
            },
        };
        let json = serde_json::to_value(&record).unwrap();
        let summary = json["summary"].as_object().unwrap();
        let mut keys: Vec<_> = summary.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "generation_tokens",
                "generation_tokens_per_s",
                "running_requests_max",
                "running_requests_mean",
                "samples",
                "window_s"
            ]
        );
        assert_eq!(json["series"][0]["values"]["running_requests"], 2.0);
        let back: ServerMetricsRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.successes(), 2);

        // No error: no key at all.
        let clean = ServerMetricsRecord::default();
        let json = serde_json::to_value(&clean).unwrap();
        assert!(json.get("first_error").is_none(), "{json}");
        assert!(json["summary"].get("counter_resets").is_none(), "{json}");
    }

    #[test]
    fn describe_prints_only_the_figures_present_and_the_first_error() {
        let mut record = ServerMetricsRecord {
            scrapes: 5,
            failures: 1,
            first_error: Some("GET http://x/metrics: connection refused".into()),
            summary: ServerSummary {
                queue_requests_mean: Some(1.5),
                queue_requests_max: Some(4.0),
                kv_cache_usage_mean: Some(0.41),
                kv_cache_usage_max: Some(0.774),
                prompt_tokens: Some(512.0),
                prompt_tokens_per_s: Some(85.33),
                prefix_cache_hits: Some(100.0),
                prefix_cache_queries: Some(400.0),
                prefix_cache_hit_ratio: Some(0.25),
                counter_resets: 1,
                ..ServerSummary::default()
            },
            ..ServerMetricsRecord::default()
        };
        assert_eq!(
            record.describe(),
            "5 scrapes (1 failed): queue 1.5 (max 4.0), KV cache 41% (max 77%), \
             512 prompt tok (85.3/s), prefix cache hits 25%, \
             1 counter reset(s): the server restarted; \
             first error: GET http://x/metrics: connection refused"
        );
        record.summary = ServerSummary::default();
        record.first_error = None;
        assert_eq!(record.describe(), "5 scrapes (1 failed)");
    }

    #[test]
    fn canonical_names_are_split_into_gauges_and_counters_once() {
        let mut all: Vec<&str> = GAUGES.iter().chain(COUNTERS.iter()).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), GAUGES.len() + COUNTERS.len());
        assert!(COUNTERS.iter().all(|c| c.ends_with("_total")));
    }
}
