//! The dashboard: a local web page of every run under a folder, and of a
//! run as it happens.
//!
//! * `engine-matrix dashboard [DIR]` serves the history of the runs under
//!   `DIR` (`reports/` by default): each with its grade, state, cells,
//!   commit and machine, its static report one click away, a trend chart of
//!   a chosen metric per engine across runs of one matrix, and CSV and
//!   JSON of the table. A run in progress in another process shows as far
//!   as its `summary.json` (rewritten after every cell) goes.
//! * `engine-matrix run … --dashboard [ADDR]` serves the same history plus,
//!   at `/`, the live view of the run ([`live`]): progress and time left,
//!   the running cell's figures on rolling charts, each finished cell's
//!   row coloured against the targets, and alerts.
//!
//! It only reads: nothing in a run folder is written by the dashboard, and
//! the live view gets what the runner already records through
//! [`crate::live::hub::Hub`].
//!
//! Safety: it listens on loopback unless `--allow-remote` is given (then
//! with a warning); a run's files are served only from the run folders it
//! lists, by names checked component by component and then against the
//! folder's canonical path ([`files`]); every string from a run is escaped
//! (the history by `engine_matrix_reports::history`, the live page sets
//! text, never markup).

mod files;
mod live;

pub use files::resolve;

use crate::live::hub::Hub;
use anyhow::{bail, Context, Result};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use engine_matrix_reports::history::{self, RunRow, TrendPick};
use engine_matrix_results::Summary;
use std::collections::HashMap;
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `dashboard` serves, and where.
pub struct Options {
    pub dir: PathBuf,
    pub host: String,
    pub port: u16,
    pub allow_remote: bool,
}

/// What the handlers share: the folder of runs, and the live run if any.
#[derive(Clone)]
pub(crate) struct App {
    dir: Arc<PathBuf>,
    hub: Option<Arc<Hub>>,
}

/// A run folder's name, path, and summary or why it could not be read.
type Run = (String, PathBuf, Result<Summary, String>);

/// Every run folder directly under `dir` (a folder with `summary.json`).
fn runs(dir: &Path) -> Result<Vec<Run>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list runs", dir.display()))?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let summary = path.join("summary.json");
        if !path.is_dir() || !summary.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let s = Summary::read(&summary).map_err(|err| format!("{:#}", anyhow::Error::from(err)));
        out.push((name, path, s));
    }
    Ok(out)
}

/// Every run folder directly under `dir`, newest first.
pub fn scan(dir: &Path) -> Result<Vec<RunRow>> {
    let mut rows: Vec<RunRow> = runs(dir)?
        .into_iter()
        .map(|(name, path, s)| match s {
            Ok(s) => RunRow::of(&name, &s, path.join("report.html").is_file()),
            Err(why) => RunRow::unreadable(&name, &why),
        })
        .collect();
    history::sort(&mut rows);
    Ok(rows)
}

/// Fails unless `host` is loopback or `allow_remote`; warns when it is not
/// loopback.
pub fn check_host(host: &str, allow_remote: bool, what: &str) -> Result<()> {
    let loopback = host
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(host == "localhost");
    if !loopback && !allow_remote {
        bail!("{host}: the dashboard listens on loopback only unless --allow-remote is given");
    }
    if !loopback {
        eprintln!(
            "warning: the dashboard on {host} is reachable from other machines: it shows {what}"
        );
    }
    Ok(())
}

/// Serves until Ctrl-C or SIGTERM; prints `dashboard on http://ADDR` once
/// bound.
pub fn run(opts: Options) -> Result<()> {
    check_host(
        &opts.host,
        opts.allow_remote,
        &format!("every run under {}", opts.dir.display()),
    )?;
    if !opts.dir.is_dir() {
        bail!("{}: no such folder of runs", opts.dir.display());
    }
    let (rt, listener) = crate::serve::listen(
        "dashboard",
        1,
        &opts.host,
        opts.port,
        "dashboard on http://",
    )?;
    let app = router(App {
        dir: Arc::new(opts.dir),
        hub: None,
    });
    rt.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::serve::shutdown_signal())
            .await
    })
    .context("the dashboard's HTTP server failed")?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// The live dashboard of `run --dashboard`, served on a thread of its own
/// while the run goes on; stopped by [`LiveServer::stop`].
pub struct LiveServer {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveServer {
    /// Binds `host:port` and serves the run's live view and the history
    /// of the runs under `dir`. One runtime thread: the engines run in
    /// worker processes, and the dashboard must not compete with them.
    pub fn start(host: &str, port: u16, dir: PathBuf, hub: Arc<Hub>) -> Result<LiveServer> {
        let (rt, listener) = crate::serve::bind("dashboard", 1, host, port)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(App {
            dir: Arc::new(dir),
            hub: Some(hub.clone()),
        });
        let ticking = hub.clone();
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                // The stall rule also runs when no sample comes (a worker
                // that stopped altogether).
                rt.spawn(async move {
                    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
                    loop {
                        every.tick().await;
                        ticking.tick();
                    }
                });
                let served = rt.block_on(async move {
                    let (grace_tx, grace_rx) = tokio::sync::oneshot::channel::<()>();
                    let server = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = grace_rx.await;
                        })
                        .into_future();
                    tokio::pin!(server);
                    tokio::select! {
                        r = &mut server => r,
                        _ = rx => {
                            let _ = grace_tx.send(());
                            // An event stream never ends by itself: open
                            // connections get a moment, then are dropped.
                            tokio::time::timeout(std::time::Duration::from_secs(1), server)
                                .await
                                .unwrap_or(Ok(()))
                        }
                    }
                });
                if let Err(e) = served {
                    eprintln!("warning: the dashboard stopped: {e}");
                }
                rt.shutdown_timeout(std::time::Duration::from_millis(200));
            })
            .context("cannot start the dashboard's thread")?;
        Ok(LiveServer {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/history", get(page))
        .route("/history.csv", get(csv))
        .route("/history.json", get(json))
        .route("/trend.svg", get(trend))
        .route("/runs/{run}/{*file}", get(file))
        .merge(live::routes())
        .with_state(app)
}

/// The runs, or the page that says why they could not be listed.
fn rows_or_error(dir: &Path) -> Result<Vec<RunRow>, Box<Response>> {
    scan(dir).map_err(|e| Box::new(error_page(&format!("{e:#}"))))
}

fn error_page(why: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why.to_string(),
    )
        .into_response()
}

/// `/`: the live view when a run is being watched, else the history.
async fn home(state: State<App>, q: Query<HashMap<String, String>>) -> Response {
    if state.hub.is_some() {
        live::page().into_response()
    } else {
        page(state, q).await
    }
}

/// The history page, with the trend of `?metric=` for `?matrix=` (by
/// default the newest run's matrix and its output throughput).
async fn page(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let rows = match rows_or_error(&app.dir) {
        Ok(rows) => rows,
        Err(r) => return *r,
    };
    let mut matrices: Vec<String> = Vec::new();
    for r in &rows {
        if let Some(m) = &r.matrix {
            if !matrices.contains(m) {
                matrices.push(m.clone());
            }
        }
    }
    let pick = TrendPick {
        matrix: q
            .get("matrix")
            .filter(|m| matrices.contains(m))
            .cloned()
            .or_else(|| matrices.first().cloned()),
        matrices,
        metric: q
            .get("metric")
            .cloned()
            .unwrap_or_else(|| "output_throughput".into()),
        metrics: engine_matrix_reports::trend::metrics(),
        live: app.hub.is_some(),
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        history::html(&rows, &app.dir.display().to_string(), &pick),
    )
        .into_response()
}

/// `trend.svg?matrix=M&metric=X`: drawn from every readable run.
async fn trend(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (Some(matrix), Some(metric)) = (q.get("matrix"), q.get("metric")) else {
        return (
            StatusCode::BAD_REQUEST,
            "trend.svg needs ?matrix= and ?metric=",
        )
            .into_response();
    };
    let all = match runs(&app.dir) {
        Ok(r) => r,
        Err(e) => return error_page(&format!("{e:#}")),
    };
    let summaries: Vec<(String, Summary)> = all
        .into_iter()
        .filter_map(|(name, _, s)| Some((name, s.ok()?)))
        .collect();
    match engine_matrix_reports::trend::trend(&summaries, matrix, metric)
        .and_then(|c| engine_matrix_reports::charts::svg(&c))
    {
        Ok(svg) => svg_response(svg),
        Err(why) => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            why,
        )
            .into_response(),
    }
}

pub(crate) fn svg_response(svg: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response()
}

async fn csv(State(app): State<App>) -> Response {
    match rows_or_error(&app.dir) {
        Ok(rows) => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            history::csv(&rows),
        )
            .into_response(),
        Err(r) => *r,
    }
}

async fn json(State(app): State<App>) -> Response {
    match rows_or_error(&app.dir) {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(r) => *r,
    }
}

/// A file of a listed run: `runs/RUN/report.html`, `runs/RUN/charts/x.svg`.
async fn file(State(app): State<App>, UrlPath((run, file)): UrlPath<(String, String)>) -> Response {
    match resolve(&app.dir, &run, &file) {
        // Small files of a run folder: read on the runtime's thread.
        Some(path) => match std::fs::read(&path) {
            Ok(bytes) => {
                ([(header::CONTENT_TYPE, files::content_type(&path))], bytes).into_response()
            }
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        },
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
