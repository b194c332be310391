//! `report.html`: one self-contained, static file (inline CSS and SVG
//! charts, no script, nothing fetched), so it can be mailed, archived or
//! opened offline. Every string that comes from the run (names, reasons,
//! paths, the matrix text) goes through [`esc`].

use super::analysis::{self, Executive, Group, Metric};
use super::charts::{Colors, Rendered};
use super::markdown::{
    peak_rss_mib, samples_text, speedup_text, status_name, status_text, system_line, with_ci,
};
use super::table::f;
use engine_matrix_results::{Status, Summary};
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes, then renders the two Markdown marks the summary uses
/// (`**bold**` and `` `code` ``).
fn inline_md(s: &str) -> String {
    let e = esc(s);
    let mut out = String::new();
    let (mut bold, mut code) = (false, false);
    let mut rest = e.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**") {
            out.push_str(if bold { "</b>" } else { "<b>" });
            bold = !bold;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</b>");
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222;line-height:1.45}\
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}\
.sys{color:#555}nav a{margin-right:1em}\
table{border-collapse:collapse;font-size:13px;margin:1em 0;width:100%}\
th,td{border:1px solid #ddd;padding:3px 6px;vertical-align:top}th{background:#f4f4f4;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;border-radius:2px;vertical-align:baseline}\
.failed{color:#b00}.unsupported{color:#a60}.ok{color:#070}\
td.met{background:#dfd;color:#060}td.acceptable{background:#ffd;color:#860}\
td.missed{background:#fdd;color:#a00;font-weight:bold}td.na{color:#777}\
figure{margin:1.5em 0}figcaption{font-size:14px;color:#444;margin-bottom:.4em}\
figure svg{max-width:100%;height:auto;border:1px solid #eee}\
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}\
.counts span{margin-right:1.2em}";

pub struct Inputs<'a> {
    pub summary: &'a Summary,
    pub groups: &'a [Group<'a>],
    pub executive: &'a Executive,
    pub charts: &'a [Rendered],
    pub chart_error: Option<&'a str>,
    pub colors: &'a Colors,
    pub matrix_text: Option<&'a str>,
    /// The run's `tune.json`, when it is a `tune` run.
    pub tuning: Option<&'a engine_matrix_results::tune::TuneFile>,
}

pub fn html(i: &Inputs) -> String {
    let s = i.summary;
    // The LLM sections see the LLM cells only; the summary's counts, the
    // retrieval section and the failed cells see every cell.
    let llm_groups = analysis::llm_groups(i.groups);
    let llm = Inputs {
        groups: &llm_groups,
        ..*i
    };
    let retrieval = super::retrieval::sections(i.groups);
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>engine-matrix: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&s.matrix_name)
    );
    let _ = writeln!(o, "<h1>engine-matrix: {}</h1>", esc(&s.matrix_name));
    let _ = writeln!(
        o,
        "<p class=\"sys\">{}<br>started {} · {}{}</p>",
        esc(&system_line(s)),
        esc(&s.started_at),
        if s.complete {
            "complete"
        } else {
            "INCOMPLETE (interrupted run)"
        },
        if s.quick { " · --quick" } else { "" }
    );
    let _ = writeln!(
        o,
        "<nav><a href=\"#summary\">Summary</a><a href=\"#charts\">Charts</a>\
         <a href=\"#results\">Results</a>{}<a href=\"#problems\">Failed and unsupported</a>\
         <a href=\"#system\">System</a><a href=\"#matrix\">Matrix</a></nav>",
        if retrieval.is_empty() {
            ""
        } else {
            "<a href=\"#retrieval\">Retrieval</a>"
        }
    );
    summary_section(&mut o, i);
    if let Some(t) = i.tuning {
        tuning_section(&mut o, t);
    }
    if let Some(t) = super::machines::table(s) {
        let _ = writeln!(o, "<h2 id=\"machines\">Machines</h2>");
        table_html(&mut o, &t);
        let _ = writeln!(o, "<p>{}</p>", esc(&super::machines::note(s)));
    }
    if let Some(t) = super::tuned::table(s) {
        let _ = writeln!(o, "<h2 id=\"tuned\">Tuned settings</h2>");
        table_html(&mut o, &t);
        let _ = writeln!(o, "<p>{}</p>", esc(super::tuned::NOTE));
    }
    targets_section(&mut o, i);
    charts_section(&mut o, i);
    results_section(&mut o, &llm);
    retrieval_section(&mut o, &retrieval);
    serving_section(&mut o, &llm);
    if let Some(t) = super::breaking::table(s) {
        let _ = writeln!(o, "<h2 id=\"breaking-point\">Breaking point</h2>");
        table_html(&mut o, &t);
        let _ = writeln!(o, "<p>{}</p>", esc(super::breaking::NOTE));
    }
    workload_section(&mut o, &llm);
    lifecycle_section(&mut o, &llm);
    problems_section(&mut o, i);
    system_section(&mut o, i);
    let _ = writeln!(o, "<h2 id=\"matrix\">The matrix as it was run</h2>");
    let _ = writeln!(
        o,
        "<p>Command: <code>{}</code></p>",
        esc(&s.command.join(" "))
    );
    match i.matrix_text {
        Some(t) => {
            let _ = writeln!(o, "<pre>{}</pre>", esc(t));
        }
        None => o.push_str("<p>matrix.yaml is not in the run folder.</p>\n"),
    }
    o.push_str("</body></html>\n");
    o
}

fn summary_section(o: &mut String, i: &Inputs) {
    let ex = i.executive;
    let _ = writeln!(o, "<h2 id=\"summary\">Executive summary</h2>");
    let _ = writeln!(
        o,
        "<p class=\"counts\"><span>{} cells</span><span class=\"ok\">{} ok</span>\
         <span class=\"unsupported\">{} unsupported</span><span class=\"failed\">{} failed</span>{}</p>",
        ex.cells,
        ex.ok,
        ex.unsupported,
        ex.failed,
        if i.summary.repeats > 1 {
            format!("<span>{} interleaved repetitions</span>", i.summary.repeats)
        } else {
            String::new()
        }
    );
    if let Some(b) = &i.summary.baseline {
        let _ = writeln!(
            o,
            "<p>Baseline engine: <b>{}</b>. Speedups are output tokens/s ratios in the same cell, with 95% bootstrap intervals.</p>",
            esc(b)
        );
    }
    if let Some(g) = super::targets::grade_line(i.summary) {
        let _ = writeln!(o, "<p class=\"grade\">{}</p>", inline_md(&g));
    }
    o.push_str("<ul>\n");
    for f in &ex.findings {
        let _ = writeln!(o, "<li>{}</li>", inline_md(f));
    }
    o.push_str("</ul>\n<h3>Recommendations</h3>\n<ul>\n");
    for r in &ex.recommendations {
        let _ = writeln!(o, "<li>{}</li>", inline_md(r));
    }
    o.push_str("</ul>\n");
}

fn charts_section(o: &mut String, i: &Inputs) {
    let _ = writeln!(o, "<h2 id=\"charts\">Charts</h2>");
    if let Some(e) = i.chart_error {
        let _ = writeln!(
            o,
            "<p class=\"failed\">Charts were not drawn: {}</p>",
            esc(e)
        );
    }
    if i.charts.is_empty() && i.chart_error.is_none() {
        o.push_str("<p>No chart: no cell produced figures to plot.</p>\n");
    }
    for r in i.charts {
        let svg = r
            .svg
            .find("<svg")
            .map(|p| &r.svg[p..])
            .unwrap_or(r.svg.as_str());
        let _ = writeln!(
            o,
            "<figure id=\"chart-{}\"><figcaption><b>{}</b>. {} (<a href=\"charts/{}.png\">PNG</a>, <a href=\"charts/{}.svg\">SVG</a>)</figcaption>\n{}</figure>",
            esc(&r.chart.name),
            esc(&r.chart.title),
            esc(&r.chart.note),
            esc(&r.chart.name),
            esc(&r.chart.name),
            svg
        );
    }
}

fn results_section(o: &mut String, i: &Inputs) {
    let s = i.summary;
    let _ = writeln!(o, "<h2 id=\"results\">Results</h2>");
    if i.groups.is_empty() {
        o.push_str("<p>No LLM cell in this run.</p>\n");
        return;
    }
    let _ = writeln!(
        o,
        "<p>Medians over n samples (iterations of one run, or whole runs with <code>--repeat</code>), with 95% bootstrap intervals in brackets. Percentiles (p99) are over all requests of the first complete run.</p>"
    );
    let mut scenario = None;
    for g in i.groups {
        let c = g.cell();
        if scenario != Some(&c.scenario) {
            if scenario.is_some() {
                o.push_str("</tbody></table>\n");
            }
            scenario = Some(&c.scenario);
            let _ = writeln!(o, "<h3>{} ({})</h3>", esc(&c.scenario), c.kind.as_str());
            o.push_str(
                "<table><thead><tr><th>model</th><th>engine</th><th>workload</th><th>status</th><th>n</th>\
                 <th>TTFT p50 ms</th><th>TPOT p50 ms</th><th>ITL p99 ms</th><th>E2EL p50 ms</th><th>E2EL p99 ms</th>\
                 <th>output tok/s</th><th>req/s</th><th>peak RSS MiB</th><th>decode % of BW</th><th>prefill % of peak</th><th>speedup</th></tr></thead><tbody>\n",
            );
        }
        let m = g.metrics();
        let med = |metric: Metric, d: usize| {
            analysis::figure(g, metric)
                .map(|f| format!("{:.d$}", f.est.point))
                .unwrap_or_else(|| "—".into())
        };
        let thr = analysis::figure(g, Metric::OutputThroughput);
        let pct = |get: fn(
            &engine_matrix_results::metrics::CellMetrics,
        ) -> Option<&engine_matrix_stats::stats::Distribution>| {
            m.and_then(get)
                .map(|d| format!("{:.1}", d.p99))
                .unwrap_or_else(|| "—".into())
        };
        let status = g.status().0;
        let eff = g.ok_runs().find_map(|r| r.efficiency);
        let pct_of = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "—".into());
        let speed = speedup_text(s, i.groups, g);
        let peak = f(peak_rss_mib(g), 0);
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td>\
             <td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&c.model),
            i.colors.hex(&c.engine),
            esc(&c.engine),
            esc(&analysis::workload(&c.params, c.kind)),
            status_name(status),
            esc(&status_text(g)),
            esc(&samples_text(thr.as_ref())),
            med(Metric::TtftP50, 1),
            med(Metric::TpotP50, 2),
            pct(|m| m.itl_ms.as_ref()),
            med(Metric::E2elP50, 1),
            pct(|m| m.e2el_ms.as_ref()),
            thr.map(|f| with_ci(&f.est, 1)).unwrap_or_else(|| "—".into()),
            med(Metric::RequestThroughput, 2),
            peak,
            pct_of(eff.and_then(|e| e.decode_pct_of_bandwidth)),
            pct_of(eff.and_then(|e| e.prefill_pct_of_compute)),
            esc(&speed),
        );
    }
    if scenario.is_some() {
        o.push_str("</tbody></table>\n");
    }
}

/// A `tune` run: what was found, the validation and every trial.
fn tuning_section(o: &mut String, t: &engine_matrix_results::tune::TuneFile) {
    let _ = writeln!(o, "<h2 id=\"tuning\">Tuning</h2>");
    for l in super::tune::lines(t) {
        let l = esc(&l).replace("**Verdict:**", "<b>Verdict:</b>");
        let _ = writeln!(o, "<p>{l}</p>");
    }
    let _ = writeln!(o, "<pre>{}</pre>", esc(&t.snippet));
    let _ = writeln!(o, "<h3>Validation (paired, interleaved rounds)</h3>");
    table_html(o, &super::tune::validation(t));
    let _ = writeln!(o, "<h3>Trials</h3>");
    table_html(o, &super::tune::trials(t));
}

/// Per retrieval scenario and data set: what was searched, the cells, the
/// index builds, the operating points, and links to the charts (drawn in
/// the charts section, and as files).
fn retrieval_section(o: &mut String, sections: &[super::retrieval::Section]) {
    if sections.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<h2 id=\"retrieval\">Retrieval</h2>\n<p>{}</p>",
        esc(super::retrieval::NOTE)
    );
    for s in sections {
        let _ = writeln!(o, "<h3>{}</h3>", esc(&s.title));
        if !s.about.is_empty() {
            o.push_str("<ul>");
            for a in &s.about {
                let _ = write!(o, "<li>{}</li>", esc(a));
            }
            o.push_str("</ul>\n");
        }
        table_html(o, &s.cells);
        if let Some(t) = &s.builds {
            o.push_str("<h4>Index builds</h4>\n");
            table_html(o, t);
        }
        if let Some(t) = &s.operating {
            let _ = writeln!(
                o,
                "<h4>Operating points (fastest setting with recall@k ≥ {})</h4>",
                engine_matrix_results::retrieval::OPERATING_RECALL
            );
            table_html(o, t);
        }
        if !s.charts.is_empty() {
            o.push_str("<p>Charts: ");
            let links: Vec<String> = s
                .charts
                .iter()
                .map(|(name, what)| {
                    let n = esc(name);
                    format!(
                        "<a href=\"#chart-{n}\">{}</a> (<a href=\"charts/{n}.svg\">SVG</a>)",
                        esc(what)
                    )
                })
                .collect();
            o.push_str(&links.join(" · "));
            o.push_str("</p>\n");
        }
    }
}

fn table_html(o: &mut String, t: &super::table::Table) {
    table_html_classed(o, t, |k, _| if k == 0 { "" } else { " class=\"n\"" });
}

/// [`table_html`] with each cell's class attribute chosen by `class`
/// from its column and text.
fn table_html_classed(
    o: &mut String,
    t: &super::table::Table,
    class: impl Fn(usize, &str) -> &'static str,
) {
    o.push_str("<table><thead><tr>");
    for h in &t.headers {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead><tbody>\n");
    for r in &t.rows {
        o.push_str("<tr>");
        for (k, c) in r.iter().enumerate() {
            let _ = write!(o, "<td{}>{}</td>", class(k, c), esc(c));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
}

/// The targets' table, its status column coloured by verdict.
fn targets_section(o: &mut String, i: &Inputs) {
    let Some(t) = super::targets::table(i.summary) else {
        return;
    };
    let _ = writeln!(o, "<h2 id=\"targets\">Targets</h2>");
    table_html_classed(o, &t, |k, c| {
        if k != super::targets::STATUS_COLUMN {
            return "";
        }
        match c {
            "met" => " class=\"met\"",
            "acceptable" => " class=\"acceptable\"",
            "missed" => " class=\"missed\"",
            _ => " class=\"na\"",
        }
    });
    if let Some(e) = super::targets::engines(i.summary) {
        table_html(o, &e);
    }
    let _ = writeln!(o, "<p>{}</p>", esc(super::targets::NOTE));
}

fn serving_section(o: &mut String, i: &Inputs) {
    let Some(t) = super::serving::cells(i.groups) else {
        return;
    };
    let _ = writeln!(o, "<h2 id=\"serving\">Open-loop serving</h2>");
    table_html(o, &t);
    if let Some(s) = super::serving::sweeps(i.groups) {
        let _ = writeln!(o, "<h3>Sustainable-rate sweeps</h3>");
        table_html(o, &s);
    }
    let _ = writeln!(o, "<p>{}</p>", esc(super::serving::NOTE));
    if let Some(g) = super::generators::table(i.groups) {
        let _ = writeln!(o, "<h3 id=\"generators\">Load generators</h3>");
        table_html(o, &g);
        let warnings = super::generators::warnings(i.groups);
        if !warnings.is_empty() {
            let _ = writeln!(o, "<ul class=\"warnings\">");
            for w in warnings {
                let _ = writeln!(o, "<li><strong>Warning:</strong> {}</li>", esc(&w));
            }
            let _ = writeln!(o, "</ul>");
        }
        let _ = writeln!(o, "<p>{}</p>", esc(super::generators::NOTE));
    }
}

fn workload_section(o: &mut String, i: &Inputs) {
    if let Some(t) = super::workload::lengths(i.groups) {
        let _ = writeln!(o, "<h2 id=\"workloads\">Workloads</h2>");
        table_html(o, &t);
    }
    if let Some(t) = super::quality::table(i.groups) {
        let _ = writeln!(o, "<h2 id=\"quality\">Quantization and quality</h2>");
        table_html(o, &t);
        let _ = writeln!(o, "<p>{}</p>", esc(&super::quality::note(i.groups)));
    }
    if let Some(t) = super::pressure::table(i.groups) {
        let _ = writeln!(o, "<h2 id=\"pressure\">Resource pressure</h2>");
        table_html(o, &t);
        let _ = writeln!(o, "<p>{}</p>", esc(super::pressure::NOTE));
    }
    if let Some(t) = super::workload::prefix_cache(i.groups) {
        let _ = writeln!(o, "<h2 id=\"prefix-cache\">Prefix cache</h2>");
        table_html(o, &t);
        let _ = writeln!(o, "<p>{}</p>", esc(super::workload::PREFIX_NOTE));
    }
    if let Some(t) = super::workload::turns(i.groups) {
        let _ = writeln!(o, "<h2 id=\"turns\">Multi-turn sessions</h2>");
        table_html(o, &t);
    }
    if let Some(t) = super::workload::server(i.groups) {
        let _ = writeln!(o, "<h2 id=\"server\">Server metrics</h2>");
        table_html(o, &t);
        let _ = writeln!(o, "<p>{}</p>", esc(super::workload::SERVER_NOTE));
    }
}

fn lifecycle_section(o: &mut String, i: &Inputs) {
    let _ = writeln!(o, "<h2 id=\"lifecycle\">Memory lifecycle and energy</h2>");
    let (rows, short) = super::lifecycle::leak_rows(i.groups);
    if !rows.is_empty() {
        let mut body = String::new();
        for (id, rep, l) in &rows {
            let _ = writeln!(
                body,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"{}\">{}</td></tr>",
                esc(id),
                rep,
                l.samples,
                l.slope_mb_per_hour,
                l.growth_mb,
                if l.verdict == engine_matrix_results::LeakVerdict::Leak { "failed" } else { "ok" },
                l.verdict.as_str()
            );
        }
        let _ = writeln!(
            o,
            "<table><thead><tr><th>cell</th><th>repeat</th><th>points</th><th>RSS slope MB/h</th><th>growth MB</th><th>verdict</th></tr></thead><tbody>\n{body}</tbody></table>"
        );
    }
    let _ = writeln!(
        o,
        "<p>{}</p>",
        esc(&super::lifecycle::leak_note(!rows.is_empty(), short))
    );
    if let Some((t, note)) = super::lifecycle::energy_gpu(i.groups) {
        table_html(o, &t);
        if let Some(n) = note {
            let _ = writeln!(o, "<p>{}</p>", esc(&n));
        }
    }
    match &i.summary.idle_power {
        Some(p) => {
            let _ = writeln!(
                o,
                "<p>Idle power {:.1} W ({}), subtracted from each cell's energy for the figures above idle.</p>",
                p.watts,
                esc(&p.source)
            );
        }
        None => {
            o.push_str("<ul>");
            for why in &i.summary.telemetry_unavailable {
                let _ = write!(o, "<li>{}</li>", esc(why));
            }
            o.push_str("</ul>\n");
        }
    }
}

fn problems_section(o: &mut String, i: &Inputs) {
    let _ = writeln!(o, "<h2 id=\"problems\">Failed and unsupported cells</h2>");
    let bad: Vec<&Group> = i
        .groups
        .iter()
        .filter(|g| g.status().0 != Status::Ok)
        .collect();
    if bad.is_empty() {
        o.push_str("<p>None: every cell ran.</p>\n");
        return;
    }
    o.push_str(
        "<table><thead><tr><th>cell</th><th>status</th><th>reason</th></tr></thead><tbody>\n",
    );
    for g in bad {
        let (st, why) = g.status();
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&g.cell().id),
            status_name(st),
            status_name(st),
            esc(why.as_deref().unwrap_or(""))
        );
    }
    o.push_str("</tbody></table>\n");
}

fn system_section(o: &mut String, i: &Inputs) {
    let s = i.summary;
    let sys = &s.system;
    let _ = writeln!(o, "<h2 id=\"system\">System</h2>");
    o.push_str("<table><tbody>\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    row("CPU", opt(&sys.cpu_model));
    row(
        "cores",
        format!(
            "{} logical, {} physical",
            sys.logical_cores,
            sys.physical_cores
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unknown".into())
        ),
    );
    row(
        "memory",
        format!("{:.1} GiB", sys.memory_bytes as f64 / (1u64 << 30) as f64),
    );
    row(
        "OS",
        format!(
            "{} {} (kernel {})",
            opt(&sys.os),
            opt(&sys.os_version),
            opt(&sys.kernel)
        ),
    );
    row("architecture", sys.arch.clone());
    row(
        "GPU",
        sys.gpu_summary()
            .unwrap_or_else(|| engine_matrix_results::telemetry::UNAVAILABLE.into()),
    );
    row("hostname", opt(&sys.hostname));
    row(
        "engine-matrix",
        format!("{} ({})", sys.engine_matrix_version, sys.git_commit),
    );
    for (k, v) in &sys.env {
        row(k, v.clone());
    }
    match &s.limits {
        Some(l) => {
            row(
                "roofline limits",
                format!(
                    "memory read {:.1} GB/s, f32 matmul {:.1} GFLOP/s (measured {})",
                    l.mem_read_gb_s, l.matmul_f32_gflop_s, l.measured_at
                ),
            );
            row("calibration method", l.method.clone());
        }
        None => row("roofline limits", "not calibrated".into()),
    }
    row("started", s.started_at.clone());
    row(
        "finished",
        s.finished_at
            .clone()
            .unwrap_or_else(|| "not finished".into()),
    );
    o.push_str("</tbody></table>\n<h3>Engines</h3>\n<table><thead><tr><th>engine</th><th>plugin</th><th>versions</th><th>library</th><th>load error</th></tr></thead><tbody>\n");
    for e in &s.engines {
        let info = e.info.as_ref();
        let field = |k: &str| info.and_then(|i| i[k].as_str()).unwrap_or("").to_string();
        let _ = writeln!(
            o,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{} · {}</td><td>{}</td><td class=\"failed\">{}</td></tr>",
            i.colors.hex(&e.name),
            esc(&e.name),
            esc(&e.plugin),
            esc(&field("engine_version")),
            esc(&field("runtime_version")),
            esc(e.path.as_deref().unwrap_or("")),
            esc(e.error.as_deref().unwrap_or(""))
        );
    }
    o.push_str("</tbody></table>\n<h3>Models</h3>\n<table><thead><tr><th>model</th><th>parameters</th><th>path</th><th>error</th></tr></thead><tbody>\n");
    for m in &s.models {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"failed\">{}</td></tr>",
            esc(&m.name),
            m.parameters.map(|p| p.to_string()).unwrap_or_default(),
            esc(m.path.as_deref().unwrap_or("")),
            esc(m.error.as_deref().unwrap_or(""))
        );
    }
    o.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;"
        );
    }

    #[test]
    fn summary_marks_render_after_escaping() {
        assert_eq!(
            inline_md("**a<b>** uses `x&y`"),
            "<b>a&lt;b&gt;</b> uses <code>x&amp;y</code>"
        );
        // an unbalanced mark is closed rather than leaking into the page
        assert_eq!(inline_md("**open"), "<b>open</b>");
    }
}
