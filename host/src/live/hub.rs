//! The host's side of the live view: the run's state as the dashboard
//! shows it, and a broadcast of every change to its clients.
//!
//! The runner calls [`Hub::cell_started`], [`Hub::live`] (a sample from
//! the worker) and [`Hub::cell_finished`] from its own thread; each takes
//! a short lock, updates the state and sends one event on a
//! `tokio::sync::broadcast` channel. Sending never blocks: a client that
//! falls behind by more than [`CAPACITY`] events is told it lagged and is
//! sent a fresh [`Hub::snapshot`] by the server, so a slow or absent
//! browser costs the run nothing.

use super::alerts::{self, Alert, Alerts, Config, Offered};
use super::Sample;
use crate::compare::{self, Comparison};
use crate::report::charts::{Body, Chart, Mark, Series};
use crate::results::targets::Verdict;
use crate::results::{CellResult, Status, Summary};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;
use tokio::sync::broadcast;

/// Events a client may fall behind by before it is resynchronised.
pub const CAPACITY: usize = 256;
/// Samples of the current cell kept for its rolling charts (at one a
/// second: two minutes).
pub const ROLLING: usize = 120;

/// One event for the clients: its SSE name and its JSON.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub json: Arc<str>,
}

/// A finished cell as the live table shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `id#repeat`: unique in a run.
    pub key: String,
    pub id: String,
    pub scenario: String,
    pub model: String,
    pub engine: String,
    pub repeat: u32,
    pub status: &'static str,
    pub reason: Option<String>,
    pub wall_s: f64,
    pub output_throughput: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub itl_p50_ms: Option<f64>,
    pub e2el_p50_ms: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
    /// A retrieval cell's figures in a few words (recall, QPS, p95).
    pub retrieval: Option<String>,
    /// The worst verdict of the targets that judged this cell.
    pub verdict: Option<&'static str>,
    /// Those targets, `name: verdict`.
    pub targets: Vec<String>,
}

impl Row {
    fn of(c: &CellResult, summary: &Summary) -> Row {
        let m = c.metrics.as_ref();
        let p50 = |d: Option<&crate::stats::Distribution>| d.map(|d| d.p50);
        let mut verdict: Option<Verdict> = None;
        let mut targets = Vec::new();
        for t in summary.targets.iter().flat_map(|t| &t.targets) {
            for v in t.cells.iter().filter(|v| v.cell == c.cell.id) {
                verdict = verdict.max(Some(v.verdict));
                targets.push(format!("{}: {}", t.def.name, v.verdict.as_str()));
            }
        }
        Row {
            key: format!("{}#{}", c.cell.id, c.repeat),
            id: c.cell.id.clone(),
            scenario: c.cell.scenario.clone(),
            model: c.cell.model.clone(),
            engine: c.cell.engine.clone(),
            repeat: c.repeat,
            status: crate::report::status_name(c.status),
            reason: c.reason.clone(),
            wall_s: c.wall_s,
            output_throughput: m.map(|m| m.output_throughput),
            ttft_p50_ms: p50(m.and_then(|m| m.ttft_ms.as_ref())),
            itl_p50_ms: p50(m.and_then(|m| m.itl_ms.as_ref())),
            e2el_p50_ms: p50(m.and_then(|m| m.e2el_ms.as_ref())),
            peak_rss_bytes: c
                .memory
                .as_ref()
                .and_then(|m| m.peak_rss_bytes.or(m.sampled_peak_rss_bytes)),
            retrieval: c.retrieval.as_ref().map(|r| {
                format!(
                    "recall@{} {:.4}, {:.0} QPS, p95 {:.3} ms ({})",
                    r.k,
                    r.recall,
                    r.qps,
                    r.latency_ms.p95,
                    r.search_label()
                )
            }),
            verdict: verdict.map(Verdict::as_str),
            targets,
        }
    }
}

/// The cell running now.
#[derive(Debug, Clone, Serialize)]
pub struct Current {
    pub id: String,
    pub engine: String,
    /// Its place in the schedule, from 1.
    pub index: usize,
    #[serde(skip)]
    started: Instant,
    #[serde(skip)]
    progressed: Instant,
    pub samples: VecDeque<Sample>,
}

/// Where the run stands.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub elapsed_s: f64,
    /// Cells left × the median time of the cells this run measured;
    /// `None` before the first one finished.
    pub eta_s: Option<f64>,
    /// `running`, `complete`, or why it stopped.
    pub state: String,
}

#[derive(Default)]
struct State {
    name: String,
    out: String,
    total: usize,
    /// Cells skipped (already in a resumed run's folder) or finished.
    done: usize,
    rows: Vec<Row>,
    walls: Vec<f64>,
    current: Option<Current>,
    alerts: Alerts,
    summary: Option<Summary>,
    finished: Option<String>,
}

/// What a client gets first, and again after it lagged.
#[derive(Serialize)]
struct Snapshot<'a> {
    name: &'a str,
    out: &'a str,
    progress: Progress,
    rows: &'a [Row],
    current: Option<&'a Current>,
    alerts: &'a [Alert],
    cooldown_s: f64,
    stall_s: f64,
}

pub struct Hub {
    state: Mutex<State>,
    tx: broadcast::Sender<Event>,
    config: Config,
    started: Instant,
    /// `run --baseline`'s summary and noise threshold.
    baseline: Option<(Summary, compare::Options)>,
}

impl Hub {
    pub fn new(config: Config, baseline: Option<(Summary, compare::Options)>) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(CAPACITY);
        Arc::new(Hub {
            state: Mutex::new(State {
                alerts: Alerts::new(config.cooldown_s),
                ..State::default()
            }),
            tx,
            config,
            started: Instant::now(),
            baseline,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    fn send<T: Serialize>(&self, name: &'static str, value: &T) {
        // No receiver is not an error: nobody is watching.
        if let Ok(json) = serde_json::to_string(value) {
            let _ = self.tx.send(Event {
                name,
                json: json.into(),
            });
        }
    }

    fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn progress(&self, s: &State) -> Progress {
        let eta_s = (!s.walls.is_empty()).then(|| {
            let mut w = s.walls.clone();
            w.sort_by(f64::total_cmp);
            w[w.len() / 2] * s.total.saturating_sub(s.done) as f64
        });
        Progress {
            done: s.done,
            total: s.total,
            elapsed_s: self.now_s(),
            eta_s,
            state: s.finished.clone().unwrap_or_else(|| "running".into()),
        }
    }

    /// The run starts: its name, folder, cell count and the cells a
    /// resumed run already holds.
    pub fn begin(&self, summary: &Summary, total: usize, out: &std::path::Path) {
        let mut s = self.lock();
        s.name = summary.matrix_name.clone();
        s.out = out.display().to_string();
        s.total = total;
        s.rows = summary.cells.iter().map(|c| Row::of(c, summary)).collect();
        s.summary = Some(summary.clone());
    }

    /// A cell of the schedule was skipped (a resumed run holds it).
    pub fn skipped(&self) {
        let mut s = self.lock();
        s.done += 1;
        let p = self.progress(&s);
        drop(s);
        self.send("progress", &p);
    }

    pub fn cell_started(&self, id: &str, engine: &str) {
        let mut s = self.lock();
        let now = Instant::now();
        s.current = Some(Current {
            id: id.to_string(),
            engine: engine.to_string(),
            index: s.done + 1,
            started: now,
            progressed: now,
            samples: VecDeque::new(),
        });
        let p = self.progress(&s);
        let c = s.current.clone();
        drop(s);
        self.send("cell_started", &c);
        self.send("progress", &p);
    }

    /// A sample of the running cell; may raise a stall alert.
    pub fn live(&self, sample: Sample) {
        let mut s = self.lock();
        let now_s = self.now_s();
        let Some(cur) = s.current.as_mut().filter(|c| c.id == sample.cell) else {
            return;
        };
        let moved = cur
            .samples
            .back()
            .is_none_or(|b| b.tokens != sample.tokens || b.done != sample.done);
        if moved {
            cur.progressed = Instant::now();
        }
        let quiet_s = cur.progressed.elapsed().as_secs_f64();
        let (id, engine) = (cur.id.clone(), cur.engine.clone());
        if cur.samples.len() >= ROLLING {
            cur.samples.pop_front();
        }
        cur.samples.push_back(sample.clone());
        let offered =
            alerts::stall(&id, &engine, quiet_s, &self.config).map(|c| s.alerts.offer(c, now_s));
        drop(s);
        self.send("live", &sample);
        self.announce(offered);
    }

    /// The stall rule without a sample (the server calls it every second):
    /// a cell that has sampled at least once and then went quiet, its
    /// worker stopped or frozen. Before its first sample a cell is still
    /// loading its model, which is no stall.
    pub fn tick(&self) {
        let mut s = self.lock();
        let now_s = self.now_s();
        let Some(cur) = s.current.as_ref().filter(|c| !c.samples.is_empty()) else {
            return;
        };
        let quiet_s = cur.progressed.elapsed().as_secs_f64();
        let Some(c) = alerts::stall(&cur.id, &cur.engine, quiet_s, &self.config) else {
            return;
        };
        let offered = s.alerts.offer(c, now_s);
        drop(s);
        self.announce(Some(offered));
    }

    fn announce(&self, offered: Option<Offered>) {
        match offered {
            Some(Offered::Raised(a)) => self.send("alert", &a),
            Some(Offered::HeldBack(a)) => self.send("alert", &a),
            None => {}
        }
    }

    /// A cell finished (recorded in `summary`, graded): its row, the
    /// alerts it raises, the progress.
    pub fn cell_finished(&self, result: &CellResult, summary: &Summary) {
        let comparison = self.comparison(result, summary);
        let candidates = alerts::on_cell(result, summary.targets.as_ref(), comparison.as_ref());
        let row = Row::of(result, summary);
        let mut s = self.lock();
        let now_s = self.now_s();
        s.done += 1;
        // A cell recorded without running (past a breaking point, a rate
        // that could not be resolved) has no time for the estimate.
        if let Some(cur) = s.current.take().filter(|c| c.id == result.cell.id) {
            s.walls.push(cur.started.elapsed().as_secs_f64());
        }
        s.rows.retain(|r| r.key != row.key);
        s.rows.push(row.clone());
        s.summary = Some(summary.clone());
        let offered: Vec<Offered> = candidates
            .into_iter()
            .map(|c| s.alerts.offer(c, now_s))
            .collect();
        let p = self.progress(&s);
        drop(s);
        self.send("cell", &row);
        for o in offered {
            self.announce(Some(o));
        }
        self.send("progress", &p);
    }

    /// This cell alone against the baseline, when the run has one.
    fn comparison(&self, result: &CellResult, summary: &Summary) -> Option<Comparison> {
        let (base, opts) = self.baseline.as_ref()?;
        if result.status == Status::Ok || base.cells.iter().any(|b| b.cell.id == result.cell.id) {
            let mut one = summary.clone();
            one.cells = summary
                .cells
                .iter()
                .filter(|c| c.cell.id == result.cell.id)
                .cloned()
                .collect();
            let mut c = compare::compare(base, &one, opts);
            c.broke.retain(|(id, _)| id == &result.cell.id);
            return Some(c);
        }
        None
    }

    /// The run ended: `None` complete, else why it stopped.
    pub fn finished(&self, summary: &Summary) {
        let mut s = self.lock();
        s.finished = Some(match &summary.stopped {
            None if summary.complete => "complete".into(),
            None => "ended".into(),
            Some(why) => format!("stopped: {why}"),
        });
        s.current = None;
        s.summary = Some(summary.clone());
        let p = self.progress(&s);
        drop(s);
        self.send("progress", &p);
    }

    /// Everything a client needs to draw the page, as JSON.
    pub fn snapshot(&self) -> String {
        let s = self.lock();
        let snap = Snapshot {
            name: &s.name,
            out: &s.out,
            progress: self.progress(&s),
            rows: &s.rows,
            current: s.current.as_ref(),
            alerts: &s.alerts.raised,
            cooldown_s: self.config.cooldown_s,
            stall_s: self.config.stall_s,
        };
        serde_json::to_string(&snap).unwrap_or_else(|_| "{}".into())
    }

    /// The run's summary so far (for the CSV and JSON export).
    pub fn summary(&self) -> Option<Summary> {
        self.lock().summary.clone()
    }

    pub fn alerts(&self) -> Vec<Alert> {
        self.lock().alerts.raised.clone()
    }

    /// A rolling chart of the current cell: `throughput` (tok/s),
    /// `latency` (TTFT as points, ITL p50 as a line) or `memory` (RSS,
    /// GPU memory).
    pub fn chart(&self, what: &str) -> Option<Chart> {
        let s = self.lock();
        let cur = s.current.as_ref()?;
        live_chart(&cur.id, cur.samples.iter(), what)
    }
}

/// The rolling chart `what` of a cell's samples.
pub fn live_chart<'a>(
    cell: &str,
    samples: impl Iterator<Item = &'a Sample> + Clone,
    what: &str,
) -> Option<Chart> {
    let blue = crate::report::charts::RGBColor(31, 119, 180);
    let orange = crate::report::charts::RGBColor(255, 127, 14);
    let line = |label: &str, color, pts: Vec<(f64, f64)>| Series {
        label: label.to_string(),
        color,
        width: 2,
        mark: Mark::None,
        points: pts.into_iter().map(|(x, y)| (x, y, None)).collect(),
    };
    let (title, y_desc, series) = match what {
        "throughput" => (
            "Tokens per second",
            "tok/s",
            vec![line(
                "tok/s",
                blue,
                samples.map(|s| (s.t_s, s.tok_s)).collect(),
            )],
        ),
        "latency" => (
            "Time to first token and inter-token latency",
            "ms",
            vec![
                Series {
                    label: "TTFT".into(),
                    color: orange,
                    width: 0,
                    mark: Mark::Circle,
                    points: samples
                        .clone()
                        .flat_map(|s| s.ttft_ms.iter().map(move |&v| (s.t_s, v, None)))
                        .collect(),
                },
                line(
                    "ITL p50",
                    blue,
                    samples
                        .filter_map(|s| Some((s.t_s, s.itl_p50_ms?)))
                        .collect(),
                ),
            ],
        ),
        "memory" => (
            "Memory",
            "MB",
            vec![
                line(
                    "RSS",
                    blue,
                    samples
                        .clone()
                        .filter_map(|s| Some((s.t_s, s.rss_bytes? as f64 / 1e6)))
                        .collect(),
                ),
                line(
                    "GPU memory",
                    orange,
                    samples
                        .filter_map(|s| Some((s.t_s, s.gpu_memory_bytes? as f64 / 1e6)))
                        .collect(),
                ),
            ],
        ),
        _ => return None,
    };
    let series: Vec<Series> = series
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect();
    Some(Chart {
        name: format!("live-{what}"),
        title: title.to_string(),
        note: format!("{cell}, the last {ROLLING} s"),
        body: Body::Xy {
            x_desc: "seconds into the cell".into(),
            y_desc: y_desc.into(),
            log_x: false,
            log_y: false,
            series,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cell: &str, t_s: f64, tokens: u64) -> Sample {
        Sample {
            cell: cell.into(),
            t_s,
            tokens,
            tok_s: 10.0,
            ttft_ms: vec![5.0],
            itl_p50_ms: Some(2.0),
            rss_bytes: Some(1_000_000),
            ..Sample::default()
        }
    }

    fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push((e.name, e.json.to_string()));
        }
        out
    }

    /// A retrieval cell's row carries its recall, QPS and p95 (it has no
    /// token figures), and an LLM cell's row none.
    #[test]
    fn a_retrieval_cells_row_says_its_recall_qps_and_p95() {
        use crate::results::retrieval::{BuildRecord, RetrievalMetrics};
        let m = crate::matrix::Matrix::parse(
            "vectors: [{name: v, synthetic: {}}]\nengines: [{name: u}]\n\
             scenarios: [{name: s, kind: retrieval, search: {u: {ef: [20]}}}]\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let cell = m.cells(false).remove(0);
        let retrieval = RetrievalMetrics {
            index_size: 100_000,
            dim: 384,
            metric: "l2".into(),
            k: 10,
            queries: 1000,
            batch_size: 1,
            concurrency: 1,
            search: serde_json::json!({"ef": 20}),
            build: BuildRecord {
                key: "k".into(),
                built_here: true,
                seconds: 25.0,
                threads: 2,
                engine_bytes: None,
                rss_bytes: None,
                data_bytes: 0,
            },
            recall: 0.9553,
            recall_min: 0.5,
            queries_below_half: 0.0,
            latency_ms: crate::stats::summarize(&[0.2, 0.3, 0.352]).unwrap(),
            qps: 3998.4,
            passes: 3,
            calls: 3000,
            duration_s: 0.75,
            per_pass_qps: vec![3998.4],
            truth: "cached".into(),
        };
        let result = CellResult {
            cell: cell.clone(),
            plugin: "usearch".into(),
            status: crate::output::Status::Ok,
            reason: None,
            started_at: String::new(),
            wall_s: 1.0,
            memory: None,
            metrics: None,
            repeat: 0,
            efficiency: None,
            quality: None,
            model_details: None,
            stability: None,
            retrieval: Some(retrieval.clone()),
            generator: None,
        };
        let summary = Summary {
            schema_version: crate::output::SCHEMA_VERSION,
            tool: "engine-matrix".into(),
            matrix_name: "t".into(),
            matrix_path: "t.yaml".into(),
            baseline: None,
            quick: false,
            repeats: 1,
            only: vec![],
            command: vec![],
            started_at: String::new(),
            finished_at: None,
            complete: false,
            stopped: None,
            idle_power: None,
            telemetry_unavailable: vec![],
            system: crate::system::collect(),
            limits: None,
            engines: vec![],
            models: vec![],
            cells: vec![result.clone()],
            targets: None,
            tuned: None,
            shard: None,
            merged: Vec::new(),
            load_shard: None,
        };
        let row = Row::of(&result, &summary);
        let p95 = retrieval.latency_ms.p95;
        assert_eq!(
            row.retrieval.as_deref(),
            Some(format!("recall@10 0.9553, 3998 QPS, p95 {p95:.3} ms (ef=20)").as_str())
        );
        assert_eq!(row.output_throughput, None);
        let llm = CellResult {
            retrieval: None,
            ..result
        };
        assert_eq!(Row::of(&llm, &summary).retrieval, None);
    }

    #[test]
    fn samples_roll_for_the_running_cell_and_a_quiet_cell_raises_one_stall_alert() {
        let hub = Hub::new(
            Config {
                cooldown_s: 600.0,
                stall_s: 0.05,
            },
            None,
        );
        let mut rx = hub.subscribe();
        hub.cell_started("c1", "e");
        hub.live(sample("other", 1.0, 5));
        for i in 0..(ROLLING + 5) {
            hub.live(sample("c1", i as f64, i as u64 + 1));
        }
        let events = drain(&mut rx);
        assert_eq!(events[0].0, "cell_started");
        let lives = events.iter().filter(|e| e.0 == "live").count();
        assert_eq!(lives, ROLLING + 5, "the other cell's sample is dropped");
        assert!(events.iter().all(|e| e.0 != "alert"), "tokens kept coming");
        let chart = hub.chart("throughput").unwrap();
        let Body::Xy { series, .. } = &chart.body else {
            panic!("xy")
        };
        assert_eq!(series[0].points.len(), ROLLING);
        assert_eq!(series[0].points[0].0, 5.0, "the oldest samples rolled out");
        assert!(hub.chart("latency").is_some());
        assert!(hub.chart("memory").is_some());
        assert!(hub.chart("nonsense").is_none());

        // No new token for longer than the stall time: one alert, then
        // held back by the cooldown.
        let last = ROLLING as u64 + 5;
        std::thread::sleep(Duration::from_millis(80));
        hub.live(sample("c1", 200.0, last));
        std::thread::sleep(Duration::from_millis(80));
        hub.live(sample("c1", 201.0, last));
        let alerts: Vec<_> = drain(&mut rx)
            .into_iter()
            .filter(|e| e.0 == "alert")
            .collect();
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert!(
            alerts[0].1.contains("\"kind\":\"stall\""),
            "{}",
            alerts[0].1
        );
        assert!(alerts[1].1.contains("\"held_back\":1"), "{}", alerts[1].1);
        assert_eq!(hub.alerts().len(), 1);
        // Without a sample too (the server's tick): held back again.
        hub.tick();
        let ticked = drain(&mut rx);
        assert_eq!(ticked.len(), 1, "{ticked:?}");
        assert!(ticked[0].1.contains("\"held_back\":2"), "{:?}", ticked[0]);
        let snap: serde_json::Value = serde_json::from_str(&hub.snapshot()).unwrap();
        assert_eq!(snap["current"]["id"], "c1");
        assert_eq!(snap["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(snap["progress"]["state"], "running");
        assert!(snap["progress"]["eta_s"].is_null(), "no cell finished yet");
    }
}
