//! End-to-end: the GPU telemetry path (NVML through `nvml-wrapper`, the
//! sampler, the energy meter and its idle baseline, the reports) on a
//! machine without a GPU, through `tests/fakes/nvml`: a stand-in
//! `libnvidia-ml.so.1` whose devices read known, constant figures, found
//! through `LD_LIBRARY_PATH` exactly as the real library would be.
//!
//! What this cannot show is a real driver's behaviour (its refresh rates,
//! its errors under load); what it does show is that every NVML figure
//! reaches `summary.json`, `summary.csv` and the reports with the right
//! units, sums and idle subtraction, in the worker processes that run the
//! cells, and that a library without a driver reads `n/a`.

use integration_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The matrix of every test here: candle on the tiny model, one scenario.
fn matrix(scenario: &str) -> String {
    format!(
        "\
name: gpu
baseline: a
models:
  - {{name: tiny, weights: synthetic, config: tiny, seed: 0}}
engines:
  - {{name: a, plugin: candle, options: {{threads: 1}}}}
scenarios:
{scenario}"
    )
}

/// One cell long enough (over 1 s) for its energy to be turned into watts
/// and joules per token.
const STEADY: &str = "  - name: steady
    kind: latency
    warmup: 1
    iterations: 3
    min_duration_s: 1.5
    input_tokens: 16
    output_tokens: 8
    axes:
      batch_size: [1]
";

/// Two short cells in one worker.
const TWO_SHORT: &str = "  - name: short
    kind: latency
    warmup: 1
    iterations: 2
    input_tokens: 16
    output_tokens: 4
    axes:
      batch_size: [1, 2]
";

/// A folder holding the fake as `libnvidia-ml.so.1`.
fn fake_nvml() -> TempDir {
    let dir = TempDir::new("nvml");
    let built = profile_dir().join(format!(
        "{}fake_nvml{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        built.is_file(),
        "{} not built: run ./scripts/test (or cargo build --release --workspace) first",
        built.display()
    );
    std::fs::copy(&built, dir.path().join("libnvidia-ml.so.1")).expect("stage the fake NVML");
    dir
}

/// Runs `scenario` ([`matrix`]) with the fake NVML and `env`
/// (`FAKE_NVML_*`); returns the run folder and `summary.json`. The fake
/// logs its `nvmlInit_v2` calls to `<tmp>/nvml.log` ([`inits`]).
fn run_with(tmp: &TempDir, scenario: &str, env: &[(&str, &str)]) -> (PathBuf, Value) {
    let nvml = fake_nvml();
    let plugins = plugin_dir(&["candle"]);
    let log = tmp.path().join("nvml.log");
    let mut vars: Vec<(&str, &Path)> = vec![
        ("LD_LIBRARY_PATH", nvml.path()),
        ("FAKE_NVML_LOG", log.as_path()),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, Path::new(v))));
    let (run_dir, o) = run_yaml_env(
        tmp.path(),
        &matrix(scenario),
        &["--no-calibrate"],
        plugins.path(),
        &vars,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary = read_json(&run_dir.join("summary.json"));
    (run_dir, summary)
}

/// `(pid, code)` of each `nvmlInit_v2` the fake saw.
fn inits(tmp: &TempDir) -> Vec<(u32, u32)> {
    let log = std::fs::read_to_string(tmp.path().join("nvml.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let (pid, f, code) = (w.next()?, w.next()?, w.next()?);
            if f != "nvmlInit_v2" {
                return None;
            }
            Some((pid.parse().ok()?, code.parse().ok()?))
        })
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

#[test]
fn nvml_figures_reach_the_results_and_reports() {
    let tmp = TempDir::new("gpu");
    // Two devices drawing 40 and 80 W: 120 W in all, constantly.
    let (run_dir, s) = run_with(
        &tmp,
        STEADY,
        &[("FAKE_NVML_DEVICES", "2"), ("FAKE_NVML_POWER_W", "40")],
    );

    // The host (system info, idle baseline) and the worker that ran the
    // cell each loaded NVML once.
    let calls = inits(&tmp);
    let mut pids: Vec<u32> = calls.iter().map(|c| c.0).collect();
    pids.sort_unstable();
    pids.dedup();
    assert!(pids.len() >= 2 && pids.len() == calls.len(), "{calls:?}");
    assert!(calls.iter().all(|c| c.1 == 0), "{calls:?}");

    let sys = &s["system"];
    let gpus = sys["gpus"].as_array().expect("system.gpus");
    assert_eq!(gpus.len(), 2, "{sys}");
    assert_eq!(gpus[1]["name"], "fake GPU 1");
    assert_eq!(gpus[1]["uuid"], "GPU-fake-1");
    assert_eq!(gpus[0]["memory_total_bytes"], 80u64 << 30);
    assert_eq!(sys["gpu_driver"], "555.42.06");

    // The idle baseline, taken in the host, reads the GPUs' counters.
    let idle = &s["idle_power"];
    assert!(idle["source"].as_str().unwrap().contains("nvml"), "{idle}");
    let idle_gpu_w = idle["gpu_watts"].as_f64().unwrap();
    assert!(close(idle_gpu_w, 120.0, 0.01), "{idle}");
    let reasons = s["telemetry_unavailable"].as_array().unwrap();
    assert!(
        reasons.iter().all(|r| !r.as_str().unwrap().contains("GPU")),
        "a GPU was there: {reasons:?}"
    );

    // The cell, run in a worker process, sampled both devices.
    let cells = s["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1);
    let c = &cells[0];
    assert_eq!(c["status"], "ok", "{c}");
    let gpu = &c["memory"]["gpu"];
    assert_eq!(gpu["devices"], 2, "{gpu}");
    // 1.5 s at one sample of each device per 50 ms.
    assert!(gpu["samples"].as_u64().unwrap() >= 20, "{gpu}");
    assert_eq!(
        gpu["peak_memory_used_bytes"],
        2u64 << 30,
        "the fuller device"
    );
    assert_eq!(gpu["mean_power_w"], 120.0, "summed over the devices: {gpu}");
    assert_eq!(gpu["max_temperature_c"], 41);
    assert_eq!(gpu["mean_sm_clock_mhz"], 1980.5);
    assert_eq!(gpu["mean_mem_clock_mhz"], 2619.0);

    // Energy: the counters integrate 120 W over the cell, and since the
    // draw never rises above idle, nothing is left above it.
    let e = &c["memory"]["energy"];
    let source = e["source"].as_str().unwrap();
    assert!(source.contains("nvml"), "{e}");
    let seconds = e["seconds"].as_f64().unwrap();
    let joules = e["joules"].as_f64().unwrap();
    assert!(seconds >= 1.5, "{e}");
    assert!(e["note"].is_null(), "{e}");
    let tokens = c["metrics"]["total_output_tokens"].as_f64().unwrap();
    assert!(tokens > 0.0);
    assert!(
        close(
            e["joules_per_output_token"].as_f64().unwrap(),
            joules / tokens,
            1e-9
        ),
        "{e}"
    );
    if source == "nvml" {
        // No RAPL on this host: the joules are the GPUs' alone.
        assert!(close(joules, 120.0 * seconds, 0.02), "{e}");
        assert!(close(e["mean_watts"].as_f64().unwrap(), 120.0, 0.02), "{e}");
        let above = e["joules_above_idle"].as_f64().unwrap();
        assert!(
            above <= 0.02 * joules,
            "constant draw, nothing above idle: {e}"
        );
    } else {
        assert!(joules >= 0.98 * 120.0 * seconds, "{e}");
    }

    // The reports show it.
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    let board = "fake GPU 0 (80.0 GiB), fake GPU 1 (80.0 GiB), driver 555.42.06";
    assert!(md.contains(board), "{md}");
    assert!(
        md.contains("| GPU peak MiB | GPU W | GPU max °C | SM MHz |"),
        "{md}"
    );
    assert!(md.contains("| 2048 | 120.0 | 41 | 1980 |"), "{md}");
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains(board), "html names the GPUs");
    assert!(html.contains("<th>GPU peak MiB</th>"));
    let csv = std::fs::read_to_string(run_dir.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(col("gpu_peak_memory_mib"), "2048", "{csv}");
    assert_eq!(col("gpu_mean_power_w").parse::<f64>().unwrap(), 120.0);
}

#[test]
fn a_library_without_a_driver_reads_na() {
    let tmp = TempDir::new("gpu-nodriver");
    // NVML_ERROR_DRIVER_NOT_LOADED: the library is installed, the driver
    // is not (a CUDA container on a CPU host).
    let (_, s) = run_with(&tmp, STEADY, &[("FAKE_NVML_INIT_ERROR", "9")]);
    let calls = inits(&tmp);
    assert!(
        !calls.is_empty() && calls.iter().all(|c| c.1 == 9),
        "{calls:?}"
    );
    assert_eq!(s["system"]["gpus"], serde_json::json!([]));
    assert!(s["system"]["gpu_driver"].is_null());
    let reasons = s["telemetry_unavailable"].to_string();
    assert!(reasons.contains("n/a: no NVIDIA GPU"), "{reasons}");
    let c = &s["cells"][0];
    assert_eq!(c["status"], "ok", "{c}");
    assert!(c["memory"]["gpu"].is_null(), "{c}");
}

#[test]
fn a_gpu_without_an_energy_counter_still_samples() {
    let tmp = TempDir::new("gpu-noenergy");
    // Pre-Volta boards answer NOT_SUPPORTED for the energy counter.
    let (_, s) = run_with(&tmp, STEADY, &[("FAKE_NVML_NO_ENERGY", "1")]);
    assert_eq!(s["system"]["gpus"].as_array().unwrap().len(), 1);
    let c = &s["cells"][0];
    let gpu = &c["memory"]["gpu"];
    assert_eq!(gpu["devices"], 1, "{c}");
    assert_eq!(gpu["mean_power_w"], 50.0, "{gpu}");
    let e = &c["memory"]["energy"];
    if e.is_null() {
        // No RAPL either (this project's machines): energy is n/a, and
        // the run says why.
        let reasons = s["telemetry_unavailable"].to_string();
        assert!(reasons.contains("no NVML energy counter"), "{reasons}");
        assert!(s["idle_power"].is_null());
    } else {
        assert_eq!(e["source"], "rapl", "{e}");
    }
}

#[test]
fn nvml_memory_is_charged_to_no_cell() {
    let tmp = TempDir::new("gpu-initmem");
    // The real library maps tens of MB when it initialises; the fake
    // allocates 96 MiB. The worker initialises NVML before it loads the
    // plugin, so neither the model's load memory nor the first cell's
    // RSS growth includes it.
    let (_, s) = run_with(&tmp, TWO_SHORT, &[("FAKE_NVML_INIT_MB", "96")]);
    let cells = s["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    for c in cells {
        assert_eq!(c["status"], "ok", "{c}");
        let m = &c["memory"];
        assert!(!m["gpu"].is_null(), "the fake was sampled: {m}");
        let growth = m["rss_end_bytes"].as_i64().unwrap() - m["rss_start_bytes"].as_i64().unwrap();
        assert!(growth < 32 << 20, "NVML's 96 MiB in a cell: {m}");
        if let Some(load) = m["load_bytes"].as_i64() {
            assert!(load < 32 << 20, "NVML's 96 MiB in the load: {m}");
        }
    }
}
