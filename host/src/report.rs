//! The Markdown table printed at the end of a run (and saved as
//! `summary.md`).

use crate::output::{CellResult, Status, Summary};
use std::fmt::Write;

fn f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "—".into(),
    }
}

fn workload(c: &CellResult) -> String {
    let p = &c.cell.params;
    let mut s = String::new();
    if let Some(l) = &p.label {
        let _ = write!(s, "{l} ");
    }
    let _ = write!(s, "{}/{}", p.input_tokens, p.output_tokens);
    match c.cell.kind {
        crate::matrix::ScenarioKind::Latency => {
            let _ = write!(s, " bs{}", p.batch_size);
        }
        crate::matrix::ScenarioKind::Throughput => {
            let _ = write!(s, " n{} bs{}", p.num_requests, p.max_batch);
        }
        crate::matrix::ScenarioKind::Concurrency => {
            let _ = write!(s, " c{} bs{}", p.concurrency, p.max_batch);
        }
    }
    let _ = write!(s, " {} {}", p.batch_policy.as_str(), p.dtype);
    if p.quantization != "none" {
        let _ = write!(s, " {}", p.quantization);
    }
    s
}

/// Output throughput of `c` over the baseline engine's matching cell.
pub fn speedup(summary: &Summary, c: &CellResult) -> Option<f64> {
    let base = summary.baseline.as_deref()?;
    let mine = c.metrics.as_ref()?.output_throughput;
    let b = summary.cells.iter().find(|b| {
        b.cell.engine == base
            && b.status == Status::Ok
            && b.cell.scenario == c.cell.scenario
            && b.cell.model == c.cell.model
            && b.cell.params == c.cell.params
    })?;
    let theirs = b.metrics.as_ref()?.output_throughput;
    (theirs > 0.0).then(|| mine / theirs)
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# engine-matrix: {}\n", summary.matrix_name);
    let sys = &summary.system;
    let _ = writeln!(
        out,
        "{} · {} logical cores · {:.1} GiB · {} {} · engine-matrix {} ({})\n",
        sys.cpu_model.as_deref().unwrap_or("unknown CPU"),
        sys.logical_cores,
        sys.memory_bytes as f64 / (1u64 << 30) as f64,
        sys.os.as_deref().unwrap_or(""),
        sys.os_version.as_deref().unwrap_or(""),
        sys.engine_matrix_version,
        &sys.git_commit[..sys.git_commit.len().min(12)],
    );
    let mut scenario = None;
    for c in &summary.cells {
        if scenario != Some(&c.cell.scenario) {
            scenario = Some(&c.cell.scenario);
            let _ = writeln!(out, "\n## {} ({})\n", c.cell.scenario, c.cell.kind.as_str());
            let _ = writeln!(
                out,
                "| model | engine | workload | status | TTFT p50 ms | TPOT p50 ms | ITL p99 ms | E2EL p50 ms | E2EL p99 ms | out tok/s | req/s | peak RSS MiB | speedup |"
            );
            let _ = writeln!(
                out,
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
        }
        let m = c.metrics.as_ref();
        let d = |g: fn(&crate::metrics::CellMetrics) -> Option<&crate::stats::Distribution>,
                 p: fn(&crate::stats::Distribution) -> f64| m.and_then(g).map(p);
        let status = match (c.status, &c.reason) {
            (Status::Ok, _) => match m {
                Some(m) if m.failed > 0 => format!("ok ({} failed)", m.failed),
                _ => "ok".into(),
            },
            (s, Some(r)) => format!("{s:?}: {}", escape(r)).to_lowercase(),
            (s, None) => format!("{s:?}").to_lowercase(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.cell.model,
            c.cell.engine,
            workload(c),
            status,
            f(d(|m| m.ttft_ms.as_ref(), |d| d.p50), 1),
            f(d(|m| m.tpot_ms.as_ref(), |d| d.p50), 2),
            f(d(|m| m.itl_ms.as_ref(), |d| d.p99), 2),
            f(d(|m| m.e2el_ms.as_ref(), |d| d.p50), 1),
            f(d(|m| m.e2el_ms.as_ref(), |d| d.p99), 1),
            f(m.map(|m| m.output_throughput), 1),
            f(m.map(|m| m.request_throughput), 2),
            f(
                c.memory
                    .as_ref()
                    .and_then(|m| m.peak_rss_bytes)
                    .map(|b| b as f64 / (1u64 << 20) as f64),
                0
            ),
            if summary.baseline.as_deref() == Some(c.cell.engine.as_str()) {
                "baseline".into()
            } else {
                speedup(summary, c)
                    .map(|s| format!("{s:.2}x"))
                    .unwrap_or_else(|| "—".into())
            },
        );
    }
    if let Some(b) = &summary.baseline {
        let _ = writeln!(
            out,
            "\nspeedup = output tokens/s over the baseline engine `{b}` in the same cell."
        );
    }
    out
}
