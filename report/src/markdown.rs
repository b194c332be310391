//! `report.md` (also printed at the end of a run): the executive summary,
//! one table per scenario with every figure's sample count and interval,
//! the retrieval cells' section ([`super::retrieval`]), and the cells that
//! did not run, with their reasons (retrieval cells among them).

use super::analysis::{self, Group, Metric};
use super::table::f;
use engine_matrix_results::{Status, Summary};
use std::fmt::Write;

/// Escapes a string for a Markdown table cell.
pub fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `median [lo, hi]`.
pub fn with_ci(est: &engine_matrix_stats::resample::Estimate, digits: usize) -> String {
    if est.n < 2 {
        return format!("{:.digits$}", est.point);
    }
    format!(
        "{:.digits$} [{:.digits$}, {:.digits$}]",
        est.point, est.lo, est.hi
    )
}

/// The one-line description of the machine.
pub(crate) fn system_line(summary: &Summary) -> String {
    let sys = &summary.system;
    let gpu = sys
        .gpu_summary()
        .map(|g| format!(" · {g}"))
        .unwrap_or_default();
    format!(
        "{} · {} logical cores · {:.1} GiB{gpu} · {} {} · engine-matrix {} ({})",
        sys.cpu_model.as_deref().unwrap_or("unknown CPU"),
        sys.logical_cores,
        sys.memory_bytes as f64 / (1u64 << 30) as f64,
        sys.os.as_deref().unwrap_or(""),
        sys.os_version.as_deref().unwrap_or(""),
        sys.engine_matrix_version,
        &sys.git_commit[..sys.git_commit.len().min(12)],
    )
}

/// The status of a group as a short string.
pub(crate) fn status_text(g: &Group) -> String {
    match g.status() {
        (Status::Ok, _) => match g.metrics() {
            Some(m) if m.failed > 0 => format!("ok ({} requests failed)", m.failed),
            _ => "ok".into(),
        },
        (s, Some(r)) => format!("{}: {r}", status_name(s)),
        (s, None) => status_name(s).into(),
    }
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Unsupported => "unsupported",
        Status::Failed => "failed",
    }
}

/// `n` column: sample count, unit, and Tukey outliers when there are any.
pub(crate) fn samples_text(f: Option<&analysis::Figure>) -> String {
    let Some(f) = f else {
        return "—".into();
    };
    let o = f.outliers.total();
    let mut s = format!("{} {}", f.est.n, f.unit.as_str());
    if o > 0 {
        s.push_str(&format!(", {o} outlier{}", if o == 1 { "" } else { "s" }));
    }
    s
}

/// The group's highest peak RSS over its complete runs, MiB.
pub(crate) fn peak_rss_mib(g: &Group) -> Option<f64> {
    g.ok_runs()
        .filter_map(|r| r.memory.as_ref()?.peak_rss_bytes)
        .max()
        .map(|b| b as f64 / (1u64 << 20) as f64)
}

/// `baseline`, `1.23x [1.10, 1.31]`, or `—`.
pub(crate) fn speedup_text(summary: &Summary, groups: &[Group], g: &Group) -> String {
    if summary.baseline.as_deref() == Some(engine_matrix_results::machine_class(&g.cell().engine).0)
    {
        return "baseline".into();
    }
    analysis::speedup(summary, groups, g)
        .map(|s| {
            let mut t = format!("{:.2}x", s.est.point);
            if s.est.n > 1 {
                t.push_str(&format!(" [{:.2}, {:.2}]", s.est.lo, s.est.hi));
            }
            t
        })
        .unwrap_or_else(|| "—".into())
}

pub fn markdown(summary: &Summary) -> String {
    let every = analysis::groups(summary);
    let llm = analysis::llm_groups(&every);
    let groups = llm.as_slice();
    let mut out = String::new();
    let _ = writeln!(out, "# engine-matrix: {}\n", cell(&summary.matrix_name));
    let _ = writeln!(out, "{}\n", cell(&system_line(summary)));
    if let Some(l) = &summary.load_shard {
        let _ = writeln!(
            out,
            "**Load generator {} of {}** (`run --load-shard`, shared start {}): each serving cell holds only this generator's share of its schedule; `engine-matrix merge` joins the generators' run folders into the cells the server saw.\n",
            l.index, l.count, l.start_at
        );
    }
    let ex = crate::executive(summary, &every);
    let _ = writeln!(
        out,
        "## Executive summary\n\n{} cells: {} ok, {} unsupported, {} failed{}.\n",
        ex.cells,
        ex.ok,
        ex.unsupported,
        ex.failed,
        if summary.repeats > 1 {
            format!("; {} interleaved repetitions", summary.repeats)
        } else {
            String::new()
        }
    );
    if let Some(g) = super::targets::grade_line(summary) {
        let _ = writeln!(out, "{g}\n");
    }
    for l in &ex.findings {
        let _ = writeln!(out, "- {l}");
    }
    if !ex.recommendations.is_empty() {
        let _ = writeln!(out, "\n### Recommendations\n");
        for l in &ex.recommendations {
            let _ = writeln!(out, "- {l}");
        }
    }
    if let Some(t) = super::machines::table(summary) {
        let _ = writeln!(out, "\n## Machines\n");
        table_markdown(&mut out, &t);
        let _ = writeln!(out, "\n{}", super::machines::note(summary));
    }
    if let Some(t) = super::tuned::table(summary) {
        let _ = writeln!(out, "\n## Tuned settings\n");
        table_markdown(&mut out, &t);
        let _ = writeln!(out, "\n{}", super::tuned::NOTE);
    }
    if let Some(t) = super::targets::table(summary) {
        let _ = writeln!(out, "\n## Targets\n");
        table_markdown(&mut out, &t);
        if let Some(e) = super::targets::engines(summary) {
            let _ = writeln!(out);
            table_markdown(&mut out, &e);
        }
        let _ = writeln!(out, "\n{}", super::targets::NOTE);
    }
    let mut scenario = None;
    for g in groups {
        let c = g.cell();
        if scenario != Some(&c.scenario) {
            scenario = Some(&c.scenario);
            let _ = writeln!(out, "\n## {} ({})\n", cell(&c.scenario), c.kind.as_str());
            let _ = writeln!(
                out,
                "| model | engine | workload | status | n | TTFT p50 ms | TPOT p50 ms | ITL p99 ms | E2EL p50 ms | E2EL p99 ms | out tok/s [95% CI] | req/s | peak RSS MiB | decode % of BW | prefill % of peak | speedup [95% CI] |"
            );
            let _ = writeln!(
                out,
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
        }
        let m = g.metrics();
        let d = |get: fn(
            &engine_matrix_results::metrics::CellMetrics,
        ) -> Option<&engine_matrix_stats::stats::Distribution>,
                 p: fn(&engine_matrix_stats::stats::Distribution) -> f64| {
            m.and_then(get).map(p)
        };
        let med = |metric: Metric, digits: usize| {
            analysis::figure(g, metric)
                .map(|f| f.est.point)
                .map(|x| format!("{x:.digits$}"))
                .unwrap_or_else(|| "—".into())
        };
        let thr = analysis::figure(g, Metric::OutputThroughput);
        let n = samples_text(thr.as_ref());
        let peak = peak_rss_mib(g);
        let eff = g.ok_runs().find_map(|r| r.efficiency);
        let speedup = speedup_text(summary, groups, g);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.model),
            cell(&c.engine),
            cell(&analysis::workload(&c.params, c.kind)),
            cell(&status_text(g)),
            n,
            med(Metric::TtftP50, 1),
            med(Metric::TpotP50, 2),
            f(d(|m| m.itl_ms.as_ref(), |d| d.p99), 2),
            med(Metric::E2elP50, 1),
            f(d(|m| m.e2el_ms.as_ref(), |d| d.p99), 1),
            thr.map(|f| with_ci(&f.est, 1))
                .unwrap_or_else(|| "—".into()),
            med(Metric::RequestThroughput, 2),
            f(peak, 0),
            f(eff.and_then(|e| e.decode_pct_of_bandwidth), 0),
            f(eff.and_then(|e| e.prefill_pct_of_compute), 0),
            speedup,
        );
    }
    if let Some(b) = summary.baseline.as_ref().filter(|_| !groups.is_empty()) {
        let _ = writeln!(
            out,
            "\nspeedup = output tokens/s over the baseline engine `{}` in the same cell; medians over the n samples, 95% bootstrap intervals in brackets. decode % of BW / prefill % of peak: roofline efficiency against this machine's measured memory bandwidth and f32 matmul peak.",
            cell(b)
        );
    }
    out.push_str(&retrieval_markdown(&every));
    out.push_str(&serving_markdown(groups));
    if let Some(t) = super::breaking::table(summary) {
        let _ = writeln!(out, "\n## Breaking point\n");
        table_markdown(&mut out, &t);
        let _ = writeln!(out, "\n{}", super::breaking::NOTE);
    }
    out.push_str(&workload_markdown(groups));
    out.push_str(&lifecycle_markdown(summary, groups));
    let not_ok: Vec<&Group> = every
        .iter()
        .filter(|g| g.status().0 != Status::Ok)
        .collect();
    if !not_ok.is_empty() {
        let _ = writeln!(out, "\n## Failed and unsupported cells\n");
        let _ = writeln!(out, "| cell | status | reason |\n|---|---|---|");
        for g in not_ok {
            let (s, why) = g.status();
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&g.cell().id),
                status_name(s),
                cell(why.as_deref().unwrap_or(""))
            );
        }
    }
    out
}

pub(crate) fn table_markdown(out: &mut String, t: &super::table::Table) {
    let _ = writeln!(out, "| {} |", t.headers.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        t.headers
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in &t.rows {
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}

/// The dataset and server tables, when the run has such cells.
fn workload_markdown(groups: &[Group]) -> String {
    let mut out = String::new();
    if let Some(t) = super::workload::lengths(groups) {
        let _ = writeln!(out, "\n## Workloads\n");
        table_markdown(&mut out, &t);
    }
    if let Some(t) = super::quality::table(groups) {
        let _ = writeln!(out, "\n## Quantization and quality\n");
        table_markdown(&mut out, &t);
        let _ = writeln!(out, "\n{}", super::quality::note(groups));
    }
    if let Some(t) = super::pressure::table(groups) {
        let _ = writeln!(out, "\n## Resource pressure\n");
        table_markdown(&mut out, &t);
        let _ = writeln!(out, "\n{}", super::pressure::NOTE);
    }
    if let Some(t) = super::workload::prefix_cache(groups) {
        let _ = writeln!(out, "\n## Prefix cache\n");
        table_markdown(&mut out, &t);
        let _ = writeln!(out, "\n{}", super::workload::PREFIX_NOTE);
    }
    if let Some(t) = super::workload::turns(groups) {
        let _ = writeln!(out, "\n## Multi-turn sessions\n");
        table_markdown(&mut out, &t);
    }
    if let Some(t) = super::workload::server(groups) {
        let _ = writeln!(out, "\n## Server metrics\n");
        table_markdown(&mut out, &t);
        let _ = writeln!(out, "\n{}", super::workload::SERVER_NOTE);
    }
    out
}

/// The retrieval sections, when the run has retrieval cells: per
/// scenario and data set, its cells, index builds, operating points and
/// chart files.
fn retrieval_markdown(groups: &[Group]) -> String {
    let mut out = String::new();
    let sections = super::retrieval::sections(groups);
    if sections.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n## Retrieval\n\n{}", super::retrieval::NOTE);
    for s in &sections {
        let _ = writeln!(out, "\n### {}\n", cell(&s.title));
        for a in &s.about {
            let _ = writeln!(out, "- {}", cell(a));
        }
        let _ = writeln!(out);
        table_markdown(&mut out, &s.cells);
        if let Some(t) = &s.builds {
            let _ = writeln!(out, "\nIndex builds:\n");
            table_markdown(&mut out, t);
        }
        if let Some(t) = &s.operating {
            let _ = writeln!(
                out,
                "\nOperating points (fastest setting with recall@k ≥ {}):\n",
                engine_matrix_results::retrieval::OPERATING_RECALL
            );
            table_markdown(&mut out, t);
        }
        if !s.charts.is_empty() {
            let links: Vec<String> = s
                .charts
                .iter()
                .map(|(name, what)| format!("[{}](charts/{name}.svg)", cell(what)))
                .collect();
            let _ = writeln!(out, "\nCharts: {}", links.join(" · "));
        }
    }
    out
}

/// The open-loop serving tables, when the run has serving cells.
fn serving_markdown(groups: &[Group]) -> String {
    let mut out = String::new();
    let Some(t) = super::serving::cells(groups) else {
        return out;
    };
    let _ = writeln!(
        out,
        "
## Open-loop serving
"
    );
    table_markdown(&mut out, &t);
    if let Some(s) = super::serving::sweeps(groups) {
        let _ = writeln!(
            out,
            "
### Sustainable-rate sweeps
"
        );
        table_markdown(&mut out, &s);
    }
    let _ = writeln!(
        out,
        "
{}",
        super::serving::NOTE
    );
    if let Some(g) = super::generators::table(groups) {
        let _ = writeln!(out, "\n### Load generators\n");
        table_markdown(&mut out, &g);
        let warnings = super::generators::warnings(groups);
        if !warnings.is_empty() {
            let _ = writeln!(out);
            for w in warnings {
                let _ = writeln!(out, "- **Warning:** {w}");
            }
        }
        let _ = writeln!(out, "\n{}", super::generators::NOTE);
    }
    out
}

/// Leak checks (cells with enough iterations), energy and GPU availability.
pub(crate) fn lifecycle_markdown(summary: &Summary, groups: &[Group]) -> String {
    let mut out = String::new();
    let (rows, short) = super::lifecycle::leak_rows(groups);
    let _ = writeln!(out, "\n## Memory lifecycle and energy\n");
    if !rows.is_empty() {
        let _ = writeln!(
            out,
            "| cell | repeat | points | RSS slope MB/h | growth MB | verdict |\n|---|---:|---:|---:|---:|---|"
        );
        for (id, rep, l) in &rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {} |",
                cell(id),
                rep,
                l.samples,
                l.slope_mb_per_hour,
                l.growth_mb,
                l.verdict.as_str()
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "{}\n",
        super::lifecycle::leak_note(!rows.is_empty(), short)
    );
    if let Some((t, note)) = super::lifecycle::energy_gpu(groups) {
        table_markdown(&mut out, &t);
        let _ = writeln!(out);
        if let Some(n) = note {
            let _ = writeln!(out, "{}\n", cell(&n));
        }
    }
    match &summary.idle_power {
        Some(p) => {
            let _ = writeln!(
                out,
                "Idle power {:.1} W ({}), subtracted from each cell's energy for the figures above idle.",
                p.watts,
                cell(&p.source)
            );
        }
        None => {
            for why in &summary.telemetry_unavailable {
                let _ = writeln!(out, "- {}", cell(why));
            }
        }
    }
    out
}
