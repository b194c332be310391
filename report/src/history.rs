//! The history of runs under a folder, for the dashboard: one row per run
//! folder (its matrix, when it started, whether it finished, its grade
//! against its targets, its cells by status, the commit and the machine),
//! as an HTML page, CSV and JSON. Computed from each run's `summary.json`
//! alone; a folder whose summary cannot be read is a row with the reason.

use crate::csv::field;
use crate::html::esc;
use engine_matrix_results::{Status, Summary};
use serde::Serialize;
use std::fmt::Write;

/// One run folder.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRow {
    /// The folder's name (the run's address on the dashboard).
    pub name: String,
    pub matrix: Option<String>,
    pub started_at: Option<String>,
    /// `complete`, `running or interrupted`, or why it stopped.
    pub state: Option<String>,
    pub grade: Option<String>,
    pub targets_met: Option<usize>,
    pub total_targets: Option<usize>,
    pub ok: usize,
    pub unsupported: usize,
    pub failed: usize,
    pub commit: Option<String>,
    pub machine: Option<String>,
    /// Whether the folder has `report.html`.
    pub report: bool,
    /// Why the summary could not be read.
    pub error: Option<String>,
}

impl RunRow {
    /// The row of a run folder named `name` whose summary is `s`.
    pub fn of(name: &str, s: &Summary, report: bool) -> RunRow {
        let count = |st| s.cells.iter().filter(|c| c.status == st).count();
        let state = if s.complete {
            "complete".to_string()
        } else {
            match &s.stopped {
                Some(why) => format!("stopped: {why}"),
                None => "running or interrupted".to_string(),
            }
        };
        let machine = format!(
            "{} · {} cores",
            s.system.cpu_model.as_deref().unwrap_or("unknown CPU"),
            s.system.logical_cores
        );
        RunRow {
            name: name.to_string(),
            matrix: Some(s.matrix_name.clone()),
            started_at: Some(s.started_at.clone()),
            state: Some(state),
            grade: s
                .targets
                .as_ref()
                .and_then(|t| t.grade)
                .map(|g| g.as_str().to_string()),
            targets_met: s.targets.as_ref().map(|t| t.targets_met),
            total_targets: s.targets.as_ref().map(|t| t.total_targets),
            ok: count(Status::Ok),
            unsupported: count(Status::Unsupported),
            failed: count(Status::Failed),
            commit: Some(s.system.git_commit.clone()),
            machine: Some(machine),
            report,
            error: None,
        }
    }

    /// The row of a run folder whose summary could not be read.
    pub fn unreadable(name: &str, why: &str) -> RunRow {
        RunRow {
            name: name.to_string(),
            matrix: None,
            started_at: None,
            state: None,
            grade: None,
            targets_met: None,
            total_targets: None,
            ok: 0,
            unsupported: 0,
            failed: 0,
            commit: None,
            machine: None,
            report: false,
            error: Some(why.to_string()),
        }
    }

    fn targets(&self) -> String {
        match (self.targets_met, self.total_targets) {
            (Some(m), Some(t)) => format!("{m} of {t}"),
            _ => String::new(),
        }
    }
}

/// Newest first (by start time, then name); unreadable folders last.
pub fn sort(rows: &mut [RunRow]) {
    rows.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| a.name.cmp(&b.name))
    });
}

const HEADERS: [&str; 12] = [
    "run",
    "matrix",
    "started",
    "state",
    "grade",
    "targets met",
    "ok",
    "unsupported",
    "failed",
    "commit",
    "machine",
    "error",
];

fn fields(r: &RunRow) -> [String; 12] {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.name.clone(),
        o(&r.matrix),
        o(&r.started_at),
        o(&r.state),
        o(&r.grade),
        r.targets(),
        r.ok.to_string(),
        r.unsupported.to_string(),
        r.failed.to_string(),
        o(&r.commit),
        o(&r.machine),
        o(&r.error),
    ]
}

/// The history as CSV (RFC 4180), a header row first.
pub fn csv(rows: &[RunRow]) -> String {
    let mut out = HEADERS.join(",");
    out.push('\n');
    for r in rows {
        let f: Vec<String> = fields(r).iter().map(|x| field(x)).collect();
        out.push_str(&f.join(","));
        out.push('\n');
    }
    out
}

/// Percent-encodes a path segment (a run folder's name in a link).
pub fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The history page's trend chart: which matrix and metric it shows, and
/// the choices.
#[derive(Debug, Clone, Default)]
pub struct TrendPick {
    /// The matrices of the listed runs.
    pub matrices: Vec<String>,
    pub matrix: Option<String>,
    pub metric: String,
    pub metrics: Vec<String>,
    /// A run in progress is watched here: link its live view.
    pub live: bool,
}

fn options(o: &mut String, values: &[String], chosen: Option<&str>) {
    for v in values {
        let sel = if Some(v.as_str()) == chosen {
            " selected"
        } else {
            ""
        };
        let _ = write!(o, "<option value=\"{0}\"{sel}>{0}</option>", esc(v));
    }
}

/// The trend section: a form (no script) choosing the matrix and metric,
/// and the chart, drawn by the server (`trend.svg`).
fn trend_section(o: &mut String, t: &TrendPick) {
    let Some(matrix) = &t.matrix else {
        return;
    };
    o.push_str("<h2>Trend</h2>\n<form id=\"trend-form\" method=\"get\" action=\"\">matrix <select name=\"matrix\">");
    options(o, &t.matrices, Some(matrix));
    o.push_str("</select> metric <select name=\"metric\">");
    options(o, &t.metrics, Some(&t.metric));
    o.push_str("</select> <button type=\"submit\">show</button></form>\n");
    let _ = writeln!(
        o,
        "<p><img id=\"trend\" alt=\"trend of {} for {}\" style=\"max-width:100%\" src=\"trend.svg?matrix={}&amp;metric={}\"></p>",
        esc(&t.metric),
        esc(matrix),
        url_segment(matrix),
        url_segment(&t.metric)
    );
}

/// The history page: every run under `folder`, each linking to its report.
pub fn html(rows: &[RunRow], folder: &str, trend: &TrendPick) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>engine-matrix: runs</title><style>{STYLE}</style></head><body>\n\
         <h1>engine-matrix: runs</h1>\n<p class=\"sys\">{} runs in <code>{}</code> · \
         <a href=\"history.csv\">CSV</a> · <a href=\"history.json\">JSON</a>{}</p>\n",
        rows.len(),
        esc(folder),
        if trend.live {
            " · <a href=\"/\">the run in progress</a>"
        } else {
            ""
        }
    );
    o.push_str("<table id=\"history\"><thead><tr>");
    for h in HEADERS {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead><tbody>\n");
    for r in rows {
        let f = fields(r);
        o.push_str("<tr>");
        for (k, v) in f.iter().enumerate() {
            let class = match (k, r.grade.as_deref()) {
                (4, Some("EXCELLENT" | "GOOD")) => " class=\"met\"",
                (4, Some("ACCEPTABLE")) => " class=\"acceptable\"",
                (4, Some("POOR")) => " class=\"missed\"",
                (8 | 11, _) if !v.is_empty() && v != "0" => " class=\"failed\"",
                _ => "",
            };
            if k == 0 && r.report {
                let _ = write!(
                    o,
                    "<td><a href=\"runs/{}/report.html\">{}</a></td>",
                    url_segment(&r.name),
                    esc(v)
                );
            } else {
                let _ = write!(o, "<td{class}>{}</td>", esc(v));
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
    trend_section(&mut o, trend);
    o.push_str("</body></html>\n");
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}\
th{background:#f4f4f4}.sys{color:#555}td.met{background:#dfd;color:#060}\
td.acceptable{background:#ffd;color:#860}td.missed{background:#fdd;color:#a00;font-weight:bold}\
td.failed{color:#b00}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn rows_render_escaped_and_export_as_csv() {
        let s = summary(
            None,
            vec![ok(cell("a", 8, 4, 1), metrics(&[10.0], &[5.0], 4), 0)],
        );
        let mut rows = vec![
            RunRow::of("run <b>1</b>", &s, true),
            RunRow::unreadable("broken", "not an engine-matrix summary.json: \"x\", y"),
        ];
        sort(&mut rows);
        assert_eq!(rows[0].name, "run <b>1</b>", "unreadable last");
        assert_eq!((rows[0].ok, rows[0].failed), (1, 0));
        assert_eq!(rows[0].state.as_deref(), Some("complete"));
        let pick = TrendPick {
            matrices: vec!["m<1>".into()],
            matrix: Some("m<1>".into()),
            metric: "ttft_ms.p50".into(),
            metrics: vec!["ttft_ms.p50".into(), "output_throughput".into()],
            live: false,
        };
        let page = html(&rows, "reports/<x>", &pick);
        assert!(
            page.contains("src=\"trend.svg?matrix=m%3C1%3E&amp;metric=ttft_ms.p50\""),
            "{page}"
        );
        assert!(page.contains("<option value=\"m&lt;1&gt;\" selected>"));
        assert!(!html(&rows, "r", &TrendPick::default()).contains("<h2>Trend</h2>"));
        assert!(page.contains("run &lt;b&gt;1&lt;/b&gt;"), "{page}");
        assert!(page.contains("href=\"runs/run%20%3Cb%3E1%3C%2Fb%3E/report.html\""));
        assert!(page.contains("<code>reports/&lt;x&gt;</code>"));
        assert!(!page.contains("<b>"));
        let csv = csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], HEADERS.join(","));
        assert!(
            lines[2].ends_with(",\"not an engine-matrix summary.json: \"\"x\"\", y\""),
            "{}",
            lines[2]
        );
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(
            json[1]["error"],
            "not an engine-matrix summary.json: \"x\", y"
        );
    }
}
