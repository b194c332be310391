//! `engine-matrix dashboard [DIR]`: a local web page of every run under a
//! folder (`reports/` by default), each with its grade, state, cells,
//! commit and machine, and its static report one click away; CSV and JSON
//! of the table. It only reads: nothing in a run folder is written, and a
//! run in progress is shown as far as its `summary.json` (rewritten after
//! every cell) goes.
//!
//! Safety: it listens on loopback unless `--allow-remote` is given (then
//! with a warning); a run's files are served only from the run folders it
//! lists, by names checked component by component and then against the
//! folder's canonical path; every string from a run is escaped in the page
//! (`engine_matrix_reports::history`).

use anyhow::{bail, Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use engine_matrix_reports::history::{self, RunRow};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// What `dashboard` serves, and where.
pub struct Options {
    pub dir: PathBuf,
    pub host: String,
    pub port: u16,
    pub allow_remote: bool,
}

/// Every run folder directly under `dir` (a folder with `summary.json`),
/// newest first.
pub fn scan(dir: &Path) -> Result<Vec<RunRow>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list runs", dir.display()))?;
    let mut rows = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let summary = path.join("summary.json");
        if !path.is_dir() || !summary.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        rows.push(match engine_matrix_results::Summary::read(&summary) {
            Ok(s) => RunRow::of(&name, &s, path.join("report.html").is_file()),
            Err(err) => RunRow::unreadable(&name, &format!("{:#}", anyhow::Error::from(err))),
        });
    }
    history::sort(&mut rows);
    Ok(rows)
}

/// Serves until Ctrl-C or SIGTERM; prints `dashboard on http://ADDR` once
/// bound.
pub fn run(opts: Options) -> Result<()> {
    let loopback = opts
        .host
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(opts.host == "localhost");
    if !loopback && !opts.allow_remote {
        bail!(
            "--host {}: the dashboard listens on loopback only unless --allow-remote is given",
            opts.host
        );
    }
    if !loopback {
        eprintln!(
            "warning: the dashboard on {} is reachable from other machines: it shows every run under {}",
            opts.host,
            opts.dir.display()
        );
    }
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
    let app = router(Arc::new(opts.dir));
    rt.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::serve::shutdown_signal())
            .await
    })
    .context("the dashboard's HTTP server failed")?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

fn router(dir: Arc<PathBuf>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/history.csv", get(csv))
        .route("/history.json", get(json))
        .route("/runs/{run}/{*file}", get(file))
        .with_state(dir)
}

/// The runs, or the page that says why they could not be listed.
fn rows_or_error(dir: &Path) -> Result<Vec<RunRow>, Box<Response>> {
    scan(dir).map_err(|e| {
        Box::new(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                engine_matrix_reports::html::esc(&format!("{e:#}")),
            )
                .into_response(),
        )
    })
}

async fn page(State(dir): State<Arc<PathBuf>>) -> Response {
    match rows_or_error(&dir) {
        Ok(rows) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            history::html(&rows, &dir.display().to_string()),
        )
            .into_response(),
        Err(r) => *r,
    }
}

async fn csv(State(dir): State<Arc<PathBuf>>) -> Response {
    match rows_or_error(&dir) {
        Ok(rows) => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            history::csv(&rows),
        )
            .into_response(),
        Err(r) => *r,
    }
}

async fn json(State(dir): State<Arc<PathBuf>>) -> Response {
    match rows_or_error(&dir) {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(r) => *r,
    }
}

/// A file of a listed run: `runs/RUN/report.html`, `runs/RUN/charts/x.svg`.
async fn file(
    State(dir): State<Arc<PathBuf>>,
    UrlPath((run, file)): UrlPath<(String, String)>,
) -> Response {
    match resolve(&dir, &run, &file) {
        // Small files of a run folder: read on the runtime's thread.
        Some(path) => match std::fs::read(&path) {
            Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        },
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The path of `file` in run folder `run` under `dir`, if both name what
/// they should: a run folder directly under `dir`, and a file inside it
/// reached by plain names (no `..`, no hidden names, no absolute path),
/// still inside the folder once links are resolved.
pub fn resolve(dir: &Path, run: &str, file: &str) -> Option<PathBuf> {
    let plain = |p: &Path| {
        p.components().all(|c| match c {
            Component::Normal(n) => !n.to_string_lossy().starts_with('.'),
            _ => false,
        })
    };
    let run_path = Path::new(run);
    let file_path = Path::new(file);
    if run_path.components().count() != 1 || !plain(run_path) || !plain(file_path) {
        return None;
    }
    let folder = dir.join(run);
    if !folder.join("summary.json").is_file() {
        return None;
    }
    let folder = folder.canonicalize().ok()?;
    let target = folder.join(file_path).canonicalize().ok()?;
    (target.starts_with(&folder) && target.is_file()).then_some(target)
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        Some("md" | "jsonl" | "yaml" | "log" | "txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_inside_listed_runs_resolve() {
        let tmp = std::env::temp_dir().join(format!("em-dash-{}", std::process::id()));
        let run = tmp.join("r1");
        std::fs::create_dir_all(run.join("charts")).unwrap();
        std::fs::write(run.join("summary.json"), "{}").unwrap();
        std::fs::write(run.join("report.html"), "x").unwrap();
        std::fs::write(run.join("charts/a.svg"), "x").unwrap();
        std::fs::write(tmp.join("secret"), "x").unwrap();
        std::fs::create_dir_all(tmp.join("nosummary")).unwrap();
        std::fs::write(tmp.join("nosummary/report.html"), "x").unwrap();
        assert!(resolve(&tmp, "r1", "report.html").is_some());
        assert!(resolve(&tmp, "r1", "charts/a.svg").is_some());
        for (r, f) in [
            ("r1", "../secret"),
            ("..", "secret"),
            ("r1", "/etc/passwd"),
            ("r1", ".hidden"),
            ("r1", "missing.html"),
            ("r1/charts", "a.svg"),
            ("nosummary", "report.html"),
            ("r1", "charts"),
        ] {
            assert_eq!(resolve(&tmp, r, f), None, "{r}/{f}");
        }
        // A link out of the run folder is refused once resolved.
        std::os::unix::fs::symlink(tmp.join("secret"), run.join("link")).unwrap();
        assert_eq!(resolve(&tmp, "r1", "link"), None);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
