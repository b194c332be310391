//! `engine-matrix compare BASELINE CANDIDATE`, `run --save-baseline NAME`
//! and `run --baseline NAME`: regression detection between two runs.
//!
//! Cells are matched on what names a point of the grid (scenario, model,
//! engine, workload label or lengths, batch size, concurrency, request
//! counts). A matched pair is then *refused*, with the reason, when a
//! setting that changes what is measured differs: input or output length,
//! dtype, quantization, batching policy or limit, the output length the
//! engine actually produced (an early EOS makes a run look faster), and the
//! engine's version when `--check-version` asks for it.
//!
//! For each metric, the verdict comes from [`resample::compare`]: the
//! candidate/baseline ratio of medians over the cells' samples (iterations,
//! or whole runs with `--repeat`), with a bootstrap interval; `regressed`
//! or `improved` only when the interval excludes no change *and* the change
//! is beyond the noise threshold (default 5%), otherwise `no change`. Both
//! conditions are needed: with many samples a 0.3% drift is significant but
//! irrelevant, and with few samples a 20% swing can be noise.
//!
//! A cell that ran in the baseline and failed (or became unsupported) in
//! the candidate is a regression too.
//!
//! Retrieval cells are matched on their id (it names the data set, index
//! size, k, metric, batch size, clients and search setting, which the LLM
//! key does not), refused when what they searched differs, and compared on
//! QPS, search p95 and recall ([`crate::retrieval`] has the rules: recall
//! on its absolute change beyond [`crate::retrieval::RECALL_TOLERANCE`]).

use crate::analysis::{self, Group, Metric};
use crate::charts::{self, Bar, Body, Chart};
use crate::html::esc;
use crate::{io, Result};
use engine_matrix_results::{Status, Summary};
use engine_matrix_stats::resample::{self, Change, Verdict};
use plotters::style::RGBColor;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

pub const DEFAULT_NOISE: f64 = 0.05;

#[derive(Debug, Clone)]
pub struct Options {
    /// Changes smaller than this fraction are `no change`.
    pub noise: f64,
    /// Refuse cells whose engine or runtime version differs.
    pub check_version: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            noise: DEFAULT_NOISE,
            check_version: false,
        }
    }
}

/// One metric of one matched cell.
#[derive(Debug, Clone)]
pub struct Row {
    pub cell: String,
    pub engine: String,
    pub metric: Metric,
    pub baseline: resample::Estimate,
    pub candidate: resample::Estimate,
    pub unit: &'static str,
    pub change: Option<Change>,
}

impl Row {
    pub fn verdict(&self) -> Verdict {
        self.change.map(|c| c.verdict).unwrap_or(Verdict::NoChange)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub baseline_name: String,
    pub candidate_name: String,
    pub noise: f64,
    pub rows: Vec<Row>,
    /// Matched cells that were not compared, with why.
    pub refused: Vec<(String, String)>,
    /// Cells that ran in the baseline and not in the candidate.
    pub broke: Vec<(String, String)>,
    pub only_in_baseline: Vec<String>,
    pub only_in_candidate: Vec<String>,
}

impl Comparison {
    pub fn regressions(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict() == Verdict::Regressed)
            .count()
            + self.broke.len()
    }

    pub fn improvements(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict() == Verdict::Improved)
            .count()
    }
}

/// The key that matches a cell across runs (see the module docs).
fn match_key(g: &Group) -> String {
    if g.is_retrieval() {
        return loose_key(g);
    }
    let p = &g.cell().params;
    let workload = match &p.label {
        Some(l) => l.clone(),
        None => match &p.dataset {
            Some(d) => d.lengths_tag(p.input_tokens, p.output_tokens),
            None => format!("{}/{}", p.input_tokens, p.output_tokens),
        },
    };
    format!("{}|{workload}", loose_key(g))
}

/// The key without the workload: an unlabelled cell whose lengths changed
/// is still paired with its counterpart when that is the only candidate.
fn loose_key(g: &Group) -> String {
    let c = g.cell();
    if g.is_retrieval() {
        return format!("retrieval|{}", c.id);
    }
    let p = &c.params;
    format!(
        "{}|{}|{}|bs{}|c{}|n{}|r{}",
        c.scenario, c.model, c.engine, p.batch_size, p.concurrency, p.num_requests, p.requests
    )
}

fn produced_length(g: &Group) -> Option<f64> {
    let (tokens, done) = g
        .ok_runs()
        .filter_map(|r| r.metrics.as_ref())
        .fold((0u64, 0usize), |(t, d), m| {
            (t + m.total_output_tokens, d + m.completed)
        });
    (done > 0).then(|| tokens as f64 / done as f64)
}

fn versions(s: &Summary, engine: &str) -> Option<String> {
    let info = s.engines.iter().find(|e| e.name == engine)?.info.as_ref()?;
    Some(format!(
        "{} / {}",
        info["engine_version"].as_str().unwrap_or("?"),
        info["runtime_version"].as_str().unwrap_or("?")
    ))
}

/// Why `b` and `c` cannot be compared, if they cannot.
fn refusal(base: &Summary, b: &Group, cand: &Summary, c: &Group, opts: &Options) -> Option<String> {
    let (x, y) = (&b.cell().params, &c.cell().params);
    let mut why = Vec::new();
    let mut diff = |what: &str, a: String, z: String| {
        if a != z {
            why.push(format!("{what} differs (baseline {a}, candidate {z})"));
        }
    };
    diff(
        "kind",
        b.cell().kind.as_str().into(),
        c.cell().kind.as_str().into(),
    );
    diff(
        "input length",
        x.input_tokens.to_string(),
        y.input_tokens.to_string(),
    );
    diff(
        "output length",
        x.output_tokens.to_string(),
        y.output_tokens.to_string(),
    );
    diff("dtype", x.dtype.clone(), y.dtype.clone());
    diff(
        "quantization",
        x.quantization.clone(),
        y.quantization.clone(),
    );
    diff(
        "batching policy",
        x.batch_policy.as_str().into(),
        y.batch_policy.as_str().into(),
    );
    diff(
        "max batch",
        x.max_batch.to_string(),
        y.max_batch.to_string(),
    );
    if opts.check_version {
        let e = &b.cell().engine;
        diff(
            "engine version",
            versions(base, e).unwrap_or_else(|| "unknown".into()),
            versions(cand, e).unwrap_or_else(|| "unknown".into()),
        );
    }
    if let (Some(pb), Some(pc)) = (produced_length(b), produced_length(c)) {
        if (pb - pc).abs() > 0.005 * pb.max(pc) {
            why.push(format!(
                "output length actually produced differs (baseline {pb:.1}, candidate {pc:.1} tokens per request)"
            ));
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

pub fn compare(base: &Summary, cand: &Summary, opts: &Options) -> Comparison {
    let bg = analysis::groups(base);
    let cg = analysis::groups(cand);
    let mut out = Comparison {
        noise: opts.noise,
        ..Default::default()
    };
    let ckeys: BTreeMap<String, &Group> = cg.iter().map(|g| (match_key(g), g)).collect();
    let bkeys: BTreeMap<String, &Group> = bg.iter().map(|g| (match_key(g), g)).collect();
    for g in &cg {
        if !bkeys.contains_key(&match_key(g)) {
            out.only_in_candidate.push(g.cell().id.clone());
        }
    }
    let loose = |gs: &[Group], other: &BTreeMap<String, &Group>| -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        for g in gs.iter().filter(|g| !other.contains_key(&match_key(g))) {
            *n.entry(loose_key(g)).or_insert(0) += 1;
        }
        n
    };
    let (loose_b, loose_c) = (loose(&bg, &ckeys), loose(&cg, &bkeys));
    for b in &bg {
        let id = b.cell().id.clone();
        let c = match ckeys.get(&match_key(b)) {
            Some(c) => *c,
            None => {
                // One unmatched cell on each side at the same grid point:
                // the same cell with changed lengths. Say why it is not
                // compared rather than listing it twice as unmatched.
                let k = loose_key(b);
                let twin = (loose_b.get(&k) == Some(&1) && loose_c.get(&k) == Some(&1))
                    .then(|| {
                        cg.iter()
                            .find(|c| loose_key(c) == k && !bkeys.contains_key(&match_key(c)))
                    })
                    .flatten();
                match twin.and_then(|c| refusal(base, b, cand, c, opts).map(|w| (c, w))) {
                    Some((c, why)) => {
                        out.only_in_candidate.retain(|x| x != &c.cell().id);
                        out.refused.push((id, why));
                    }
                    None => out.only_in_baseline.push(id),
                }
                continue;
            }
        };
        let (bs, _) = b.status();
        let (cs, cwhy) = c.status();
        if bs == Status::Ok && cs != Status::Ok {
            out.broke.push((
                id,
                format!(
                    "ran in the baseline, {} in the candidate: {}",
                    crate::status_name(cs),
                    cwhy.unwrap_or_default()
                ),
            ));
            continue;
        }
        if bs != Status::Ok || cs != Status::Ok {
            out.refused.push((
                id,
                format!(
                    "not ok in both runs (baseline {}, candidate {})",
                    crate::status_name(bs),
                    crate::status_name(cs)
                ),
            ));
            continue;
        }
        if let Some(why) = refusal(base, b, cand, c, opts) {
            out.refused.push((id, why));
            continue;
        }
        if b.is_retrieval() {
            compare_retrieval(&mut out, b, c, opts);
            continue;
        }
        for metric in Metric::ALL {
            let (xs, unit) = analysis::samples(b, metric);
            let (ys, _) = analysis::samples(c, metric);
            let seed = analysis::seed(&id, &format!("compare:{}", metric.key()));
            let (conf, n) = (resample::CONFIDENCE, resample::RESAMPLES);
            let (Some(be), Some(ce)) = (
                resample::median_ci(&xs, conf, n, seed),
                resample::median_ci(&ys, conf, n, seed ^ 1),
            ) else {
                continue;
            };
            out.rows.push(Row {
                cell: id.clone(),
                engine: b.cell().engine.clone(),
                metric,
                baseline: be,
                candidate: ce,
                unit: unit.as_str(),
                change: resample::compare(
                    &xs,
                    &ys,
                    metric.higher_is_better(),
                    opts.noise,
                    conf,
                    n,
                    seed,
                ),
            });
        }
    }
    out
}

/// A matched pair of retrieval cells: refused when they searched
/// different things, else a row per figure.
fn compare_retrieval(out: &mut Comparison, b: &Group, c: &Group, opts: &Options) {
    let id = b.cell().id.clone();
    if let Some(why) = crate::retrieval::refusal(b, c) {
        out.refused.push((id, why));
        return;
    }
    for x in crate::retrieval::compare(b, c, opts.noise, &id) {
        out.rows.push(Row {
            cell: id.clone(),
            engine: b.cell().engine.clone(),
            metric: x.metric,
            baseline: x.baseline,
            candidate: x.candidate,
            unit: x.unit,
            change: x.change,
        });
    }
}

/// Decimals a figure is shown with: recall needs four.
fn digits(m: Metric) -> usize {
    match m {
        Metric::Recall => 4,
        _ => 2,
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Improved => "improved",
        Verdict::Regressed => "REGRESSED",
        Verdict::NoChange => "no change",
    }
}

/// The change with its interval; recall's as the absolute change it is
/// judged on.
fn change_text(r: &Row) -> String {
    if let (Metric::Recall, Some(_)) = (r.metric, r.change) {
        return format!(
            "{:+.4} (tolerance ±{})",
            r.candidate.point - r.baseline.point,
            crate::retrieval::RECALL_TOLERANCE
        );
    }
    match &r.change {
        Some(c) => format!(
            "{:+.1}% [{:+.1}, {:+.1}]",
            c.percent,
            (c.ratio.lo - 1.0) * 100.0,
            (c.ratio.hi - 1.0) * 100.0
        ),
        None => "—".into(),
    }
}

pub fn markdown(c: &Comparison) -> String {
    let cell = crate::md_cell;
    let ci = crate::with_ci;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# engine-matrix compare\n\nbaseline: {}  \ncandidate: {}  \nnoise threshold: {:.1}% · 95% bootstrap intervals · verdicts need significance and a change beyond the threshold\n",
        cell(&c.baseline_name),
        cell(&c.candidate_name),
        c.noise * 100.0
    );
    let _ = writeln!(
        o,
        "**{} regressions, {} improvements**, {} metric comparisons, {} cells refused, {} only in the baseline, {} only in the candidate.\n",
        c.regressions(),
        c.improvements(),
        c.rows.len(),
        c.refused.len(),
        c.only_in_baseline.len(),
        c.only_in_candidate.len()
    );
    if !c.broke.is_empty() {
        let _ = writeln!(
            o,
            "## Cells that stopped working\n\n| cell | what happened |\n|---|---|"
        );
        for (id, why) in &c.broke {
            let _ = writeln!(o, "| {} | {} |", cell(id), cell(why));
        }
        o.push('\n');
    }
    if !c.rows.is_empty() {
        let _ = writeln!(
            o,
            "## Changes\n\n| cell | metric | baseline | candidate | change [95% CI] | verdict | n (base/cand) |\n|---|---|---:|---:|---:|---|---:|"
        );
        for r in &c.rows {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {}/{} {} |",
                cell(&r.cell),
                r.metric.label(),
                ci(&r.baseline, digits(r.metric)),
                ci(&r.candidate, digits(r.metric)),
                change_text(r),
                verdict_name(r.verdict()),
                r.baseline.n,
                r.candidate.n,
                r.unit
            );
        }
        o.push('\n');
    }
    if !c.refused.is_empty() {
        let _ = writeln!(o, "## Refused\n\n| cell | why |\n|---|---|");
        for (id, why) in &c.refused {
            let _ = writeln!(o, "| {} | {} |", cell(id), cell(why));
        }
        o.push('\n');
    }
    for (title, list) in [
        ("Only in the baseline", &c.only_in_baseline),
        ("Only in the candidate", &c.only_in_candidate),
    ] {
        if !list.is_empty() {
            let _ = writeln!(o, "## {title}\n");
            for id in list {
                let _ = writeln!(o, "- {}", cell(id));
            }
            o.push('\n');
        }
    }
    o
}

/// The comparison chart: % change with its interval per cell and metric,
/// the noise band shaded.
pub fn chart(c: &Comparison) -> Option<Chart> {
    let color = |v: Verdict| match v {
        Verdict::Regressed => RGBColor(214, 39, 40),
        Verdict::Improved => RGBColor(44, 160, 44),
        Verdict::NoChange => RGBColor(150, 150, 150),
    };
    let bars: Vec<Bar> = c
        .rows
        .iter()
        .filter_map(|r| {
            let ch = r.change?;
            Some(Bar {
                label: format!("{} · {}", r.cell, r.metric.label()),
                color: color(ch.verdict),
                value: ch.percent,
                interval: (ch.ratio.n > 1)
                    .then_some(((ch.ratio.lo - 1.0) * 100.0, (ch.ratio.hi - 1.0) * 100.0)),
                text: format!("{:+.1}% {}", ch.percent, verdict_name(ch.verdict)),
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    let t = c.noise * 100.0;
    Some(Chart {
        name: "compare".into(),
        title: format!("Change from {} to {}", c.baseline_name, c.candidate_name),
        note: format!(
            "Candidate over baseline, % change of each metric's median (for latencies, + is slower); whiskers: 95% bootstrap interval; grey band: ±{t:.1}% noise threshold; red: regressed, green: improved."
        ),
        body: Body::Bars {
            x_desc: "change (%)".into(),
            bars,
            reference: Some(0.0),
            band: Some((-t, t)),
            legend: vec![
                ("regressed".into(), color(Verdict::Regressed)),
                ("improved".into(), color(Verdict::Improved)),
                ("no change".into(), color(Verdict::NoChange)),
            ],
        },
    })
}

/// Writes `compare.md`, `compare.html` and `charts/compare.{png,svg}` into
/// `dir`; returns the Markdown.
pub fn write(c: &Comparison, dir: &Path) -> Result<String> {
    let charts_dir = dir.join("charts");
    io(&charts_dir, std::fs::create_dir_all(&charts_dir))?;
    let md = markdown(c);
    let md_file = dir.join("compare.md");
    io(&md_file, std::fs::write(&md_file, &md))?;
    let rendered = chart(c).map(|ch| charts::render(&ch, &dir.join("charts")));
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>engine-matrix compare: {} vs {}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse;font-size:13px;width:100%}}th,td{{border:1px solid #ddd;padding:3px 6px}}\
         th{{background:#f4f4f4;text-align:left}}td.n{{text-align:right;white-space:nowrap}}.regressed{{color:#b00;font-weight:bold}}\
         .improved{{color:#070}}svg{{max-width:100%;height:auto}}</style></head><body>\n",
        esc(&c.baseline_name),
        esc(&c.candidate_name)
    );
    let _ = writeln!(
        html,
        "<h1>engine-matrix compare</h1><p>baseline: <b>{}</b><br>candidate: <b>{}</b><br>noise threshold {:.1}%; 95% bootstrap intervals.</p>\
         <p><b>{} regressions, {} improvements</b>, {} comparisons, {} refused, {} only in the baseline, {} only in the candidate.</p>",
        esc(&c.baseline_name),
        esc(&c.candidate_name),
        c.noise * 100.0,
        c.regressions(),
        c.improvements(),
        c.rows.len(),
        c.refused.len(),
        c.only_in_baseline.len(),
        c.only_in_candidate.len()
    );
    match rendered {
        Some(Ok(r)) => {
            let svg = r.svg.find("<svg").map(|p| &r.svg[p..]).unwrap_or("");
            let _ = writeln!(
                html,
                "<figure><figcaption>{}</figcaption>{svg}</figure>",
                esc(&r.chart.note)
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(html, "<p>Chart not drawn: {}</p>", esc(&e));
        }
        None => {}
    }
    let table = |html: &mut String, title: &str, rows: &[(String, String)]| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            html,
            "<h2>{}</h2><table><tr><th>cell</th><th>why</th></tr>",
            esc(title)
        );
        for (id, why) in rows {
            let _ = writeln!(html, "<tr><td>{}</td><td>{}</td></tr>", esc(id), esc(why));
        }
        html.push_str("</table>\n");
    };
    table(&mut html, "Cells that stopped working", &c.broke);
    if !c.rows.is_empty() {
        html.push_str("<h2>Changes</h2><table><tr><th>cell</th><th>metric</th><th>baseline</th><th>candidate</th><th>change [95% CI]</th><th>verdict</th><th>n</th></tr>\n");
        for r in &c.rows {
            let v = r.verdict();
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{}\">{}</td><td class=\"n\">{}/{} {}</td></tr>",
                esc(&r.cell),
                esc(r.metric.label()),
                esc(&crate::with_ci(&r.baseline, digits(r.metric))),
                esc(&crate::with_ci(&r.candidate, digits(r.metric))),
                esc(&change_text(r)),
                verdict_name(v).to_lowercase(),
                verdict_name(v),
                r.baseline.n,
                r.candidate.n,
                r.unit
            );
        }
        html.push_str("</table>\n");
    }
    table(&mut html, "Refused", &c.refused);
    let only: Vec<(String, String)> = c
        .only_in_baseline
        .iter()
        .map(|id| (id.clone(), "only in the baseline".to_string()))
        .chain(
            c.only_in_candidate
                .iter()
                .map(|id| (id.clone(), "only in the candidate".to_string())),
        )
        .collect();
    table(&mut html, "Unmatched cells", &only);
    html.push_str("</body></html>\n");
    let html_file = dir.join("compare.html");
    io(&html_file, std::fs::write(&html_file, html))?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn run(thr: f64, ttft: f64, jitter: f64, phase: u64) -> Summary {
        let t = around(thr, jitter, 10, phase);
        let l = around(ttft, jitter, 10, phase + 7);
        summary(
            None,
            vec![ok(cell("candle", 32, 16, 1), metrics(&t, &l, 16), 0)],
        )
    }

    fn verdict(c: &Comparison, m: Metric) -> Verdict {
        c.rows.iter().find(|r| r.metric == m).unwrap().verdict()
    }

    #[test]
    fn a_real_regression_is_flagged() {
        let base = run(1000.0, 20.0, 0.02, 1);
        let cand = run(750.0, 26.0, 0.02, 2); // 25% slower, 30% later first token
        let c = compare(&base, &cand, &Options::default());
        assert_eq!(verdict(&c, Metric::OutputThroughput), Verdict::Regressed);
        assert_eq!(verdict(&c, Metric::TtftP50), Verdict::Regressed);
        assert!(c.regressions() >= 2);
        let back = compare(&cand, &base, &Options::default());
        assert_eq!(verdict(&back, Metric::OutputThroughput), Verdict::Improved);
        assert_eq!(back.regressions(), 0);
        let md = markdown(&c);
        assert!(md.contains("REGRESSED"), "{md}");
    }

    #[test]
    fn noise_is_not_flagged() {
        for phase in 0..20 {
            let base = run(1000.0, 20.0, 0.03, phase);
            let cand = run(1000.0, 20.0, 0.03, phase + 100);
            let c = compare(&base, &cand, &Options::default());
            assert_eq!(c.regressions(), 0, "phase {phase}: {}", markdown(&c));
            assert_eq!(c.improvements(), 0, "phase {phase}: {}", markdown(&c));
            assert!(!c.rows.is_empty());
        }
    }

    #[test]
    fn a_significant_change_below_the_threshold_is_no_change() {
        // 3% slower with almost no jitter: significant, but under 5%.
        let base = run(1000.0, 20.0, 0.001, 1);
        let cand = run(970.0, 20.0, 0.001, 2);
        let c = compare(&base, &cand, &Options::default());
        let r = c
            .rows
            .iter()
            .find(|r| r.metric == Metric::OutputThroughput)
            .unwrap();
        assert!(r.change.unwrap().significant);
        assert_eq!(r.verdict(), Verdict::NoChange);
        let strict = compare(
            &base,
            &cand,
            &Options {
                noise: 0.01,
                ..Default::default()
            },
        );
        assert_eq!(
            verdict(&strict, Metric::OutputThroughput),
            Verdict::Regressed
        );
    }

    #[test]
    fn mismatched_settings_are_refused_with_the_reason() {
        let base = run(1000.0, 20.0, 0.02, 1);
        let mut cand = run(500.0, 20.0, 0.02, 2);
        cand.cells[0].cell.params.dtype = "f16".into();
        cand.cells[0].cell.params.output_tokens = 32;
        let c = compare(&base, &cand, &Options::default());
        assert!(c.rows.is_empty());
        assert_eq!(c.regressions(), 0);
        let why = &c.refused[0].1;
        assert!(
            why.contains("output length differs (baseline 16, candidate 32)"),
            "{why}"
        );
        assert!(
            why.contains("dtype differs (baseline f32, candidate f16)"),
            "{why}"
        );

        // The same settings, but the engine stopped early (EOS).
        let mut short = run(1000.0, 20.0, 0.02, 2);
        short.cells[0].metrics.as_mut().unwrap().total_output_tokens /= 2;
        let c = compare(&base, &short, &Options::default());
        assert!(
            c.refused[0]
                .1
                .contains("output length actually produced differs"),
            "{:?}",
            c.refused
        );

        // Engine versions only when asked.
        let mut a = run(1000.0, 20.0, 0.02, 1);
        let mut b = run(1000.0, 20.0, 0.02, 2);
        for (s, v) in [(&mut a, "0.1.0"), (&mut b, "0.2.0")] {
            s.engines.push(engine_matrix_results::EngineRecord {
                name: "candle".into(),
                plugin: "candle".into(),
                path: None,
                api_version: None,
                info: Some(
                    serde_json::json!({"engine_version": v, "runtime_version": "candle 0.11"}),
                ),
                error: None,
            });
        }
        assert!(compare(&a, &b, &Options::default()).refused.is_empty());
        let strict = Options {
            check_version: true,
            ..Default::default()
        };
        let c = compare(&a, &b, &strict);
        assert!(
            c.refused[0].1.contains("engine version differs"),
            "{:?}",
            c.refused
        );
    }

    #[test]
    fn a_cell_that_stops_working_is_a_regression() {
        let base = run(1000.0, 20.0, 0.02, 1);
        let cand = summary(
            None,
            vec![bad(
                cell("candle", 32, 16, 1),
                Status::Failed,
                "engine crashed",
            )],
        );
        let c = compare(&base, &cand, &Options::default());
        assert_eq!(c.regressions(), 1);
        assert!(c.broke[0].1.contains("engine crashed"));
    }

    #[test]
    fn unmatched_cells_are_listed() {
        let base = run(1000.0, 20.0, 0.02, 1);
        let t = around(1000.0, 0.02, 10, 3);
        let cand = summary(
            None,
            vec![ok(cell("onnx", 32, 16, 1), metrics(&t, &t, 16), 0)],
        );
        let c = compare(&base, &cand, &Options::default());
        assert_eq!(c.only_in_baseline.len(), 1);
        assert_eq!(c.only_in_candidate.len(), 1);
    }
}
