//! The live view's routes: the page, its server-sent events, its charts
//! and the run's export.
//!
//! * `/live/events`: server-sent events. A client first gets `snapshot`
//!   (the whole state), then `progress`, `cell_started`, `live`, `cell` and
//!   `alert` as they happen. A client that falls behind the hub's buffer
//!   gets a fresh `snapshot` instead of the events it missed.
//! * `/live/state.json`: the same snapshot, for scripts.
//! * `/live/chart.svg?what=throughput|latency|memory`: the running cell's
//!   rolling chart, drawn with plotters on request.
//! * `/live/run.csv`, `/live/run.json`: the run so far, as `summary.csv`
//!   and `summary.json` would hold it; `/live/alerts.json`: the alerts.
//!
//! Why server-sent events and not WebSocket: the traffic is one way, SSE
//! is plain HTTP that axum serves without another crate, and the browser's
//! `EventSource` reconnects by itself.

use super::{svg_response, App};
use crate::live::hub::Event;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

const PAGE: &str = include_str!("live.html");
/// The rolling charts' size: two side by side on a 1280 px window.
const LIVE_CHART: (u32, u32) = (600, 320);

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/live/events", get(events))
        .route("/live/state.json", get(state))
        .route("/live/chart.svg", get(chart))
        .route("/live/run.csv", get(run_csv))
        .route("/live/run.json", get(run_json))
        .route("/live/alerts.json", get(alerts))
}

pub(super) fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

fn no_run() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no run is being watched here (start one with `engine-matrix run MATRIX --dashboard`)",
    )
        .into_response()
}

async fn events(State(app): State<App>) -> Response {
    let Some(hub) = app.hub.clone() else {
        return no_run();
    };
    // Subscribe before the snapshot, so that nothing falls between them;
    // an event already in the snapshot is applied twice, which the page
    // does idempotently (rows and alerts have keys).
    let rx = hub.subscribe();
    let first = Some(hub.snapshot());
    let stream = futures_util::stream::unfold((first, rx), move |(first, mut rx)| {
        let hub = hub.clone();
        async move {
            if let Some(s) = first {
                let ev = sse::Event::default().event("snapshot").data(s);
                return Some((Ok::<_, Infallible>(ev), (None, rx)));
            }
            match rx.recv().await {
                Ok(Event { name, json }) => {
                    let ev = sse::Event::default().event(name).data(&*json);
                    Some((Ok(ev), (None, rx)))
                }
                Err(RecvError::Lagged(_)) => {
                    let ev = sse::Event::default().event("snapshot").data(hub.snapshot());
                    Some((Ok(ev), (None, rx)))
                }
                Err(RecvError::Closed) => None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn state(State(app): State<App>) -> Response {
    match &app.hub {
        Some(h) => ([(header::CONTENT_TYPE, "application/json")], h.snapshot()).into_response(),
        None => no_run(),
    }
}

async fn chart(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(hub) = &app.hub else {
        return no_run();
    };
    let what = q.get("what").map_or("throughput", String::as_str);
    match hub.chart(what) {
        Some(c) => match engine_matrix_reports::charts::svg_sized(&c, LIVE_CHART) {
            Ok(svg) => svg_response(svg),
            Err(why) => (StatusCode::INTERNAL_SERVER_ERROR, why).into_response(),
        },
        None => (
            StatusCode::NOT_FOUND,
            "no cell is running, or no such chart (throughput, latency, memory)",
        )
            .into_response(),
    }
}

async fn run_csv(State(app): State<App>) -> Response {
    match app.hub.as_ref().and_then(|h| h.summary()) {
        Some(s) => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            engine_matrix_reports::csv::csv(&s),
        )
            .into_response(),
        None => no_run(),
    }
}

async fn run_json(State(app): State<App>) -> Response {
    match app.hub.as_ref().and_then(|h| h.summary()) {
        Some(s) => axum::Json(s).into_response(),
        None => no_run(),
    }
}

async fn alerts(State(app): State<App>) -> Response {
    match &app.hub {
        Some(h) => axum::Json(h.alerts()).into_response(),
        None => no_run(),
    }
}
