//! `summary.csv`: one row per cell and repetition, flat columns for pandas
//! (`pd.read_csv`). Empty fields are figures that were not measured.
//!
//! Retrieval cells are rows of the same file, not a second one: their
//! figures are the last columns ([`super::retrieval::CSV_COLUMNS`]: recall,
//! QPS, search latency, the index build), empty on LLM cells, as the LLM
//! columns are empty on retrieval cells (`kind` tells them apart). One
//! file keeps one row per cell, which the dashboard's CSV download and
//! scripts that filter on `cell_id` rely on.

use super::analysis;
use engine_matrix_results::{CellResult, Summary};
use engine_matrix_stats::stats::Distribution;

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted,
/// quotes doubled.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => String::new(),
    }
}

const DIST: [&str; 5] = ["mean", "p50", "p90", "p95", "p99"];

fn dist(d: Option<&Distribution>) -> Vec<String> {
    match d {
        Some(d) => [d.mean, d.p50, d.p90, d.p95, d.p99]
            .iter()
            .map(|x| num(Some(*x)))
            .collect(),
        None => vec![String::new(); DIST.len()],
    }
}

const DISTS: [&str; 7] = [
    "ttft_ms",
    "tpot_ms",
    "itl_ms",
    "e2el_ms",
    "aiperf_itl_ms",
    "guidellm_tpot_ms",
    "llmperf_itl_ms",
];

pub fn csv(summary: &Summary) -> String {
    let groups = analysis::groups(summary);
    let mut header: Vec<String> = [
        "cell_id",
        "scenario",
        "kind",
        "model",
        "engine",
        "plugin",
        "repeat",
        "status",
        "reason",
        "label",
        "input_tokens",
        "output_tokens",
        "batch_size",
        "concurrency",
        "batch_policy",
        "max_batch",
        "num_requests",
        "requests",
        "dtype",
        "quantization",
        "iterations",
        "requests_measured",
        "completed",
        "failed_requests",
        "duration_s",
        "output_throughput",
        "request_throughput",
        "total_token_throughput",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for d in DISTS {
        for s in DIST {
            header.push(format!("{d}_{s}"));
        }
    }
    for h in [
        "load_mib",
        "peak_rss_mib",
        "kv_cache_peak_mib",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "speedup_samples",
        "sampled_peak_rss_mib",
        "leak_iterations",
        "leak_slope_mb_per_hour",
        "leak_verdict",
        "energy_j",
        "energy_j_per_output_token",
        "energy_j_above_idle_per_output_token",
        "gpu_peak_memory_mib",
        "gpu_mean_power_w",
    ] {
        header.push(h.into());
    }
    header.extend(super::retrieval::CSV_COLUMNS.iter().map(|h| h.to_string()));
    let mut out = header.join(",");
    out.push('\n');
    for c in &summary.cells {
        let g = groups.iter().find(|g| g.cell().id == c.cell.id);
        let sp = g.and_then(|g| analysis::speedup(summary, &groups, g));
        out.push_str(&row(c, sp).join(","));
        out.push('\n');
    }
    out
}

fn row(c: &CellResult, sp: Option<analysis::Speedup>) -> Vec<String> {
    let p = &c.cell.params;
    let m = c.metrics.as_ref();
    let mib = |b: Option<f64>| num(b.map(|b| b / (1u64 << 20) as f64));
    let mut r: Vec<String> = vec![
        field(&c.cell.id),
        field(&c.cell.scenario),
        c.cell.kind.as_str().into(),
        field(&c.cell.model),
        field(&c.cell.engine),
        field(&c.plugin),
        c.repeat.to_string(),
        super::markdown::status_name(c.status).into(),
        field(c.reason.as_deref().unwrap_or("")),
        field(p.label.as_deref().unwrap_or("")),
        p.input_tokens.to_string(),
        p.output_tokens.to_string(),
        p.batch_size.to_string(),
        p.concurrency.to_string(),
        p.batch_policy.as_str().into(),
        p.max_batch.to_string(),
        p.num_requests.to_string(),
        p.requests.to_string(),
        field(&p.dtype),
        field(&p.quantization),
    ];
    match m {
        Some(m) => r.extend([
            m.iterations.to_string(),
            m.requests.to_string(),
            m.completed.to_string(),
            m.failed.to_string(),
            num(Some(m.duration_s)),
            num(Some(m.output_throughput)),
            num(Some(m.request_throughput)),
            num(Some(m.total_token_throughput)),
        ]),
        None => r.extend(vec![String::new(); 8]),
    }
    let dists = [
        m.and_then(|m| m.ttft_ms.as_ref()),
        m.and_then(|m| m.tpot_ms.as_ref()),
        m.and_then(|m| m.itl_ms.as_ref()),
        m.and_then(|m| m.e2el_ms.as_ref()),
        m.and_then(|m| m.aliases.aiperf_itl_ms.as_ref()),
        m.and_then(|m| m.aliases.guidellm_tpot_ms.as_ref()),
        m.and_then(|m| m.aliases.llmperf_itl_ms.as_ref()),
    ];
    for d in dists {
        r.extend(dist(d));
    }
    let mem = c.memory.as_ref();
    r.push(mib(mem.and_then(|m| m.load_bytes).map(|b| b as f64)));
    r.push(mib(mem.and_then(|m| m.peak_rss_bytes).map(|b| b as f64)));
    r.push(mib(mem.map(|m| m.kv_cache_peak_bytes as f64)));
    r.push(num(sp.map(|s| s.est.point)));
    r.push(num(sp.map(|s| s.est.lo)));
    r.push(num(sp.map(|s| s.est.hi)));
    r.push(sp.map(|s| s.est.n.to_string()).unwrap_or_default());
    r.push(mib(mem
        .and_then(|m| m.sampled_peak_rss_bytes)
        .map(|b| b as f64)));
    let leak = mem.and_then(|m| m.leak.as_ref());
    r.push(leak.map(|l| l.samples.to_string()).unwrap_or_default());
    r.push(num(leak.map(|l| l.slope_mb_per_hour)));
    r.push(
        leak.map(|l| l.verdict.as_str().to_string())
            .unwrap_or_default(),
    );
    let energy = mem.and_then(|m| m.energy.as_ref());
    r.push(num(energy.map(|e| e.joules)));
    r.push(num(energy.and_then(|e| e.joules_per_output_token)));
    r.push(num(
        energy.and_then(|e| e.joules_above_idle_per_output_token)
    ));
    let gpu = mem.and_then(|m| m.gpu.as_ref());
    r.push(mib(gpu
        .and_then(|g| g.peak_memory_used_bytes)
        .map(|b| b as f64)));
    r.push(num(gpu.and_then(|g| g.mean_power_w)));
    r.extend(
        super::retrieval::csv_values(c.retrieval.as_ref())
            .iter()
            .map(|v| field(v)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(field("abc"), "abc");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}
