//! report.html in a real browser: headless Chromium (Debian's `chromium`,
//! which `scripts/provision` installs) renders it to a screenshot and dumps
//! its DOM, which must hold inline SVG charts, no script, and the HTML a
//! model path smuggled into a failure reason, escaped.

use integration_tests::*;
use std::path::Path;

/// What a hostile string looks like in the DOM when it was escaped.
const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
/// And in the run's files, unescaped.
const INJECTED: &str = r#"<script>alert(1)</script>&"x""#;

/// A blank 1280×2400 page's screenshot is about 14 KB (Chromium 148);
/// a page of tables and inline charts is several times that.
const MIN_SCREENSHOT_BYTES: u64 = 30_000;

/// Checks a screenshot: a PNG of the window's width, of some height,
/// larger than a blank page's.
fn check_screenshot(png: &Path, min_bytes: u64) {
    let bytes = std::fs::read(png).unwrap();
    let (w, h) = png_size(&bytes).expect("a PNG");
    assert_eq!(w, 1280, "{}: width", png.display());
    assert!(h > 100, "{}: height {h}", png.display());
    assert!(
        bytes.len() as u64 > min_bytes,
        "{}: {} bytes, a blank page's size (> {min_bytes} expected)",
        png.display(),
        bytes.len()
    );
}

/// The browser itself: a static page with inline SVG renders, and its DOM
/// comes back. When this fails, Chromium is broken or missing, not the
/// report.
#[test]
fn chromium_runs_headless_on_a_static_page() {
    let tmp = TempDir::new("chromium");
    let html = tmp.path().join("page.html");
    let mut rows = String::new();
    for i in 0..60 {
        rows.push_str(&format!(
            "<tr><td>cell {i}</td><td>{:.3}</td><td>&lt;ok&gt;</td></tr>\n",
            i as f64 * 1.37
        ));
    }
    std::fs::write(
        &html,
        format!(
            r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>canary</title>
<style>body {{ font-family: sans-serif }} td {{ padding: 2px 8px }}</style></head>
<body><h1>Canary &amp; friends</h1>
<p title="a &lt;b&gt; in an attribute">text with an escaped {ESCAPED}</p>
<svg xmlns="http://www.w3.org/2000/svg" width="800" height="300" viewBox="0 0 800 300">
  <rect x="0" y="0" width="800" height="300" fill="#f4f4f4"/>
  <polyline fill="none" stroke="#c33" stroke-width="3" points="0,280 100,200 200,230 300,120 400,150 500,60 600,90 700,20 800,40"/>
  <text x="10" y="20">tokens/s</text>
</svg>
<table>{rows}</table></body></html>
"##
        ),
    )
    .unwrap();

    let dom = dump_dom(&html);
    let names = element_names(&dom);
    assert!(names.iter().any(|n| n == "svg"), "{names:?}");
    assert!(names.iter().any(|n| n == "polyline"), "{names:?}");
    assert!(!names.iter().any(|n| n == "script"), "{names:?}");
    assert!(dom.contains("<title>canary</title>"), "{dom}");
    assert!(dom.contains(ESCAPED), "{dom}");
    assert!(dom.contains("<td>cell 59</td>"), "{dom}");

    let png = tmp.path().join("page.png");
    screenshot(&html, &png);
    check_screenshot(&png, 20_000);

    // element_names is what the report test relies on: check it here on
    // what dump-dom leaves unescaped (attribute values, comments, style).
    let tricky = r#"<html><head><style>a<b {}</style></head><body>
<p title="<script>x</script>">&lt;script&gt;</p><!-- <script> --><SVG></SVG></body></html>"#;
    assert_eq!(
        element_names(tricky),
        ["html", "head", "style", "body", "p", "svg"]
    );
}

#[test]
fn report_html_renders_in_headless_chromium() {
    let plugins = plugin_dir(&["candle"]);
    let tmp = TempDir::new("browser");
    // A model whose weights folder does not exist, with HTML in its path:
    // its cells fail with a reason that names the path.
    let hostile = tmp.path().join(INJECTED);
    let matrix = tmp.path().join("matrix.yaml");
    std::fs::write(
        &matrix,
        format!(
            r#"
name: browser
description: "report.html in headless Chromium: one measured model, one that fails"
baseline: candle
models:
  - {{name: tiny, weights: synthetic, config: tiny}}
  - {{name: hostile, path: '{}'}}
engines:
  - {{name: candle, options: {{threads: 1}}}}
scenarios:
  - name: latency
    kind: latency
    warmup: 1
    iterations: 3
    input_tokens: 16
    output_tokens: 8
    axes:
      batch_size: [1, 2]
  - name: throughput
    kind: throughput
    warmup: 0
    iterations: 2
    input_tokens: 16
    output_tokens: 8
    num_requests: 4
    axes:
      batch_size: [4]
"#,
            hostile.display()
        ),
    )
    .unwrap();
    let run_dir = tmp.path().join("run");
    // The hostile model's cells fail: exit 5.
    run_matrix_status(&matrix, plugins.path(), &run_dir, 5);

    // The run itself: tiny measured, hostile failed with the HTML in its
    // reason (else the escaping below proves nothing).
    let summary = read_json(&run_dir.join("summary.json"));
    let cells = summary["cells"].as_array().expect("cells");
    for c in cells {
        if c["cell"]["model"] == "hostile" {
            assert_eq!(c["status"], "failed", "{c}");
            let why = c["reason"].as_str().unwrap();
            assert!(why.contains(INJECTED), "{why}");
        } else {
            assert_eq!(c["status"], "ok", "{c}");
        }
    }
    assert_eq!(cells.len(), 6, "3 cells per model");

    // `run` writes report.html; `report RUN_DIR` writes it again.
    let report = run_dir.join("report.html");
    assert!(report.is_file(), "engine-matrix run wrote no report.html");
    std::fs::remove_file(&report).unwrap();
    let o = run(&["report", run_dir.to_str().unwrap()], plugins.path());
    assert!(
        o.status.success(),
        "engine-matrix report: {}",
        text(&o.stderr)
    );
    assert!(
        report.is_file(),
        "engine-matrix report wrote no report.html"
    );

    check_report_html(&report, &run_dir.join("report.png"));
}

/// report.html, as a file and in the browser: static, every string
/// escaped, inline SVG charts, a title; its screenshot goes to `png` and to
/// target/report-screenshot.png for a human to look at.
fn check_report_html(report: &Path, png: &Path) {
    // The file: static, every string escaped (so not even an attribute
    // holds a raw `<script`).
    let raw = std::fs::read_to_string(report).unwrap();
    if let Some(at) = raw.to_ascii_lowercase().find("<script") {
        let mut from = at.saturating_sub(200);
        while !raw.is_char_boundary(from) {
            from -= 1;
        }
        let mut to = (at + 200).min(raw.len());
        while !raw.is_char_boundary(to) {
            to += 1;
        }
        panic!("report.html holds a <script: …{}…", &raw[from..to]);
    }
    assert!(raw.contains(ESCAPED), "the failure reason is shown: {raw}");

    // The browser's view.
    screenshot(report, png);
    let keep = workspace_root().join("target/report-screenshot.png");
    std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
    std::fs::copy(png, &keep).unwrap();
    eprintln!("screenshot of report.html: {}", keep.display());
    check_screenshot(png, MIN_SCREENSHOT_BYTES);

    let dom = dump_dom(report);
    let names = element_names(&dom);
    assert!(
        names.iter().any(|n| n == "svg"),
        "inline SVG charts: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "script"),
        "a script element in the DOM: {dom}"
    );
    assert!(names.iter().any(|n| n == "title"), "a <title>: {dom}");
    let title = dom
        .split_once("<title>")
        .and_then(|(_, t)| t.split_once("</title>"))
        .map(|(t, _)| t.trim())
        .unwrap_or("");
    assert!(!title.is_empty(), "an empty <title>: {dom}");
    assert!(
        dom.contains(ESCAPED),
        "the failed cells' reason, escaped: {dom}"
    );
}

/// `engine-matrix dashboard` over a folder of runs: a finished run with a
/// grade, a second run whose folder name carries markup, and a folder
/// whose summary is not one. The page (through the real server, in
/// Chromium) lists all three, escaped; a run's report opens from it; the
/// CSV parses; nothing outside a run folder is served.
#[test]
fn the_dashboard_lists_the_runs_and_opens_their_reports() {
    let plugins = plugin_dir(&["example"]);
    let tmp = TempDir::new("dashboard");
    let reports = tmp.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let m = tmp.path().join("m.yaml");
    std::fs::write(
        &m,
        "name: dash\nmodels:\n  - {name: tiny, weights: synthetic, config: tiny}\nengines:\n  - {name: example}\nscenarios:\n  - {name: lat, kind: latency, warmup: 0, iterations: 1, input_tokens: 8, output_tokens: 4}\ntargets:\n  - {name: fast, metric: output_throughput, min: 1}\n",
    )
    .unwrap();
    // A folder name holds no `/`: markup without closing tags.
    let hostile = "run <b>two";
    for name in ["one", hostile] {
        let out = reports.join(name);
        let o = run(
            &[
                "run",
                m.to_str().unwrap(),
                "--no-calibrate",
                "--out",
                out.to_str().unwrap(),
            ],
            plugins.path(),
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    std::fs::create_dir_all(reports.join("broken")).unwrap();
    std::fs::write(reports.join("broken/summary.json"), "{not json").unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "secret").unwrap();
    let before = listing(&reports);

    let mut server = std::process::Command::new(binary())
        .args(["dashboard", reports.to_str().unwrap(), "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let line = read_line(&mut out);
    let url = line
        .strip_prefix("dashboard on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // The page in a real browser: three rows, the markup as text.
    let dom = text(&headless_url(&url, &["--dump-dom"]).stdout);
    assert!(dom.contains("<table id=\"history\">"), "{dom}");
    assert!(dom.contains("run &lt;b&gt;two"), "{dom}");
    assert!(
        !element_names(&dom).contains(&"b".to_string()),
        "markup was not escaped"
    );
    assert!(dom.contains("<td class=\"met\">EXCELLENT</td>"), "{dom}");
    assert!(dom.contains("not an engine-matrix summary.json"), "{dom}");
    assert!(dom.contains("href=\"runs/one/report.html\""), "{dom}");
    let shot = tmp.path().join("dashboard.png");
    let o = headless_url(&url, &[&format!("--screenshot={}", shot.display())]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (w, _) = png_size(&std::fs::read(&shot).unwrap()).expect("a PNG");
    assert_eq!(w, 1280);
    // Kept as a test artefact beside the other screenshots.
    let _ = std::fs::copy(&shot, profile_dir().join("dashboard-history.png"));

    // A run's report opens; CSV and JSON export the table.
    let r = http(port, "GET", "/runs/one/report.html", None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("engine-matrix: dash"), "{}", r.text());
    let csv = http(port, "GET", "/history.csv", None);
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<String> = csv.text().lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "a header and three runs: {lines:?}");
    assert!(lines[0].starts_with("run,matrix,started,state,grade"));
    assert!(
        lines.iter().any(|l| l.starts_with("run <b>two,dash,")),
        "{lines:?}"
    );
    let json = http(port, "GET", "/history.json", None).json();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["grade"] == "EXCELLENT"));
    // Nothing outside a run folder.
    for path in [
        "/runs/one/../../secret.txt",
        "/runs/..%2Fsecret.txt/x",
        "/runs/broken/../m.yaml",
    ] {
        assert_eq!(http(port, "GET", path, None).status, 404, "{path}");
    }
    // The dashboard wrote nothing: every file under the folder is as it was.
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(listing(&reports), before);
}

/// Every file under `dir` with its size and modification time, sorted.
fn listing(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// chromedriver (Debian's `chromium-driver`, installed by
/// `scripts/provision`) on a free loopback port; killed on drop.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let exe = std::env::var_os("CHROMEDRIVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/chromedriver".into());
        assert!(
            exe.is_file(),
            "{} not found: run ./scripts/provision (Debian's chromium-driver), or set $CHROMEDRIVER",
            exe.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let child = std::process::Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session through WebDriver, 1280 px wide.
async fn browser(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium(),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--window-size=1280,1800"],
        }),
    );
    let c =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session");
    c.set_window_size(1280, 1800).await.unwrap();
    c
}

/// Evaluates `js` (a function body) in the page until it returns a truthy
/// value; the value, or a panic naming `what` after `secs`.
async fn until(c: &fantoccini::Client, js: &str, secs: u64, what: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let v = c.execute(js, vec![]).await.unwrap();
        let truthy = !matches!(&v, serde_json::Value::Null | serde_json::Value::Bool(false))
            && v != serde_json::json!("")
            && v != serde_json::json!(0);
        if truthy {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited {secs} s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// RFC 4180 records (quoted fields may hold commas, quotes and line
/// breaks).
fn csv_records(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "an unterminated quoted field");
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

/// `run --dashboard` in a real browser, over WebDriver: the page of a
/// running matrix fills in as cells finish without a reload, shows the
/// running cell's live figures and charts, raises alerts for a missed
/// target and for failed cells with the cooldown holding repeats back,
/// shows a reason holding HTML as text, exports valid CSV, and its history
/// lists an earlier run and opens its report. Screenshots of the live view
/// and the history (1280 px) are kept as test artefacts.
#[test]
fn the_live_dashboard_updates_alerts_exports_and_links_the_history() {
    let tmp = TempDir::new("live-dashboard");
    let plugins = plugin_dir(&["fault", "example"]);
    let runs = tmp.path().join("runs");
    let earlier = tmp.path().join("earlier.yaml");
    std::fs::write(
        &earlier,
        "name: earlier\nmodels:\n  - {name: tiny, weights: synthetic, config: tiny}\nengines:\n  - {name: example}\nscenarios:\n  - {name: lat, kind: latency, warmup: 0, iterations: 1, input_tokens: 8, output_tokens: 4}\n",
    )
    .unwrap();
    let o = run(
        &[
            "run",
            earlier.to_str().unwrap(),
            "--no-calibrate",
            "--out",
            runs.join("earlier").to_str().unwrap(),
        ],
        plugins.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // `slow` takes ~1.5 s an iteration (48 steps of 30 ms) and misses its
    // TTFT target (a 30 ms prefill against 5 ms); `broken` panics in
    // decode; `evil`'s options are refused with a message holding markup.
    let m = tmp.path().join("live.yaml");
    std::fs::write(
        &m,
        r#"name: live-demo
models:
  - {name: tiny, weights: synthetic, config: tiny}
engines:
  - {name: slow, plugin: fault, options: {step_ms: 30}}
  - {name: broken, plugin: fault, options: {fault: panic, at: decode, after_steps: 3}}
  - {name: evil, plugin: fault, options: {fault: "<b>evil</b>"}}
scenarios:
  - name: lat
    kind: latency
    warmup: 0
    iterations: 3
    input_tokens: 8
    output_tokens: 48
    axes:
      batch_size: [1, 2]
targets:
  - {name: fast-ttft, metric: ttft_ms.p50, max: 5, engines: [slow]}
"#,
    )
    .unwrap();

    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(browser(&driver));

    let mut live = std::process::Command::new(binary())
        .args([
            "run",
            m.to_str().unwrap(),
            "--no-calibrate",
            "--allow-failures",
        ])
        .args(["--out", runs.join("live").to_str().unwrap()])
        .args(["--dashboard", "127.0.0.1:0", "--dashboard-linger", "120"])
        .args(["--alert-stall", "600"])
        .arg("--plugins")
        .arg(plugins.path())
        .env("ENGINE_MATRIX_CACHE", cache_dir())
        .env("RUST_BACKTRACE", "0")
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(live.stderr.take().unwrap());
    let url = loop {
        let line = read_line(&mut err);
        assert!(
            !line.is_empty(),
            "the run ended before its dashboard was up"
        );
        if let Some(u) = line.strip_prefix("dashboard on ") {
            break format!("{u}/");
        }
    };
    // The rest of stderr, drained so the run never blocks on it.
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        rest
    });
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let shots = profile_dir();

    rt.block_on(async {
        client.goto(&url).await.unwrap();
        client
            .execute("window.__marker = 42; return true;", vec![])
            .await
            .unwrap();
        // The running cell's live figures and charts, while `slow` runs.
        until(
            &client,
            "return document.getElementById('tok_s').textContent !== '–' && document.getElementById('tok_s').textContent;",
            60,
            "a live tokens/s figure",
        )
        .await;
        let rows_while_running = client
            .execute(
                "return document.querySelectorAll('#cells tbody tr').length;",
                vec![],
            )
            .await
            .unwrap();
        // The screenshot once a cell has finished and the next one has
        // drawn a few seconds of its charts.
        until(
            &client,
            "return document.querySelectorAll('#cells tbody tr').length >= 1 && document.getElementById('tok_s').textContent !== '–';",
            60,
            "the second cell's live figures",
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        until(
            &client,
            "return ['throughput', 'latency', 'memory'].every(w => { const i = document.getElementById('chart-' + w); return i.complete && i.naturalWidth > 0; });",
            30,
            "the live charts",
        )
        .await;
        let png = client.screenshot().await.unwrap();
        assert_eq!(png_size(&png).map(|s| s.0), Some(1280));
        std::fs::write(shots.join("dashboard-live.png"), &png).unwrap();

        // Every cell's row, without a reload.
        until(
            &client,
            "return document.getElementById('state').textContent === 'complete';",
            180,
            "the run to complete",
        )
        .await;
        let rows = client
            .execute(
                "return document.querySelectorAll('#cells tbody tr').length;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(rows, 6);
        assert!(
            rows_while_running.as_u64().unwrap() < 6,
            "rows were there before the run ended: {rows_while_running}"
        );
        let kept = client
            .execute(
                "return [window.__marker, document.body.dataset.snapshots];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(kept, serde_json::json!([42, "1"]), "the page reloaded or resynced");
        let classes = client
            .execute(
                "return Array.from(document.querySelectorAll('#cells tbody tr')).map(r => r.className);",
                vec![],
            )
            .await
            .unwrap();
        let classes: Vec<&str> = classes
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            classes.iter().filter(|c| **c == "missed").count(),
            2,
            "{classes:?}"
        );
        assert_eq!(
            classes.iter().filter(|c| **c == "failed").count(),
            4,
            "{classes:?}"
        );

        // Alerts: one per cause, repeats held back by the cooldown.
        let alerts = client
            .execute(
                "return Array.from(document.querySelectorAll('#alerts li')).map(l => [l.className, l.textContent]);",
                vec![],
            )
            .await
            .unwrap();
        let alerts: Vec<(String, String)> = serde_json::from_value(alerts).unwrap();
        let of = |kind: &str| -> Vec<&String> {
            alerts
                .iter()
                .filter(|(c, _)| c.ends_with(kind))
                .map(|(_, t)| t)
                .collect()
        };
        let missed = of("target_missed");
        assert_eq!(missed.len(), 1, "{alerts:?}");
        assert!(missed[0].contains("fast-ttft"), "{alerts:?}");
        assert!(missed[0].contains("1 more held back"), "{alerts:?}");
        let failed = of("failed_cell");
        assert!(
            !failed.is_empty() && failed.len() < 4,
            "4 failed cells of two engines: {alerts:?}"
        );
        assert!(
            failed.iter().any(|t| t.contains("held back")),
            "{alerts:?}"
        );

        // A reason holding markup is text.
        let bold = client
            .execute("return document.querySelectorAll('#cells b, #alerts b').length;", vec![])
            .await
            .unwrap();
        assert_eq!(bold, 0, "markup from a reason was rendered");
        let reasons = client
            .execute(
                "return document.getElementById('cells').textContent;",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            reasons.as_str().unwrap().contains("<b>evil</b>"),
            "{reasons}"
        );

        // The history: the earlier run is listed and its report opens; the
        // trend chart is drawn.
        client.goto(&format!("{url}history")).await.unwrap();
        let names = client
            .execute(
                "return Array.from(document.querySelectorAll('#history tbody tr td:first-child')).map(t => t.textContent);",
                vec![],
            )
            .await
            .unwrap();
        let names: Vec<String> = serde_json::from_value(names).unwrap();
        assert!(names.contains(&"earlier".to_string()), "{names:?}");
        assert!(names.contains(&"live".to_string()), "{names:?}");
        until(
            &client,
            "const i = document.getElementById('trend'); return i && i.complete && i.naturalWidth > 0;",
            30,
            "the trend chart",
        )
        .await;
        let png = client.screenshot().await.unwrap();
        assert_eq!(png_size(&png).map(|s| s.0), Some(1280));
        std::fs::write(shots.join("dashboard-history-live.png"), &png).unwrap();
        client
            .find(fantoccini::Locator::Css("a[href='runs/earlier/report.html']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let title = until(
            &client,
            "return document.title.includes('earlier') && document.title;",
            30,
            "the earlier run's report",
        )
        .await;
        assert!(title.as_str().unwrap().contains("engine-matrix"), "{title}");

        // Export: the run as valid CSV, a header and one record per cell.
        let csv = http(port, "GET", "/live/run.csv", None);
        assert_eq!(csv.status, 200);
        let records = csv_records(&csv.text());
        assert_eq!(records.len(), 7, "{}", csv.text());
        assert!(records.iter().all(|r| r.len() == records[0].len()));
        assert_eq!(records[0][0], "cell_id");
        assert!(
            records
                .iter()
                .any(|r| r.iter().any(|f| f.contains("<b>evil</b>"))),
            "{}",
            csv.text()
        );

        // Ctrl-C ends the linger, and the run exits even with the page's
        // event stream open.
        client.goto(&url).await.unwrap();
        until(
            &client,
            "return document.body.dataset.snapshots === '1';",
            30,
            "the live page again",
        )
        .await;
        // SAFETY: signals the run's own process.
        unsafe {
            libc::kill(live.id() as i32, libc::SIGINT);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(st) = live.try_wait().unwrap() {
                break st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the run did not exit with a client connected"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(status.code(), Some(0));
        client.close().await.unwrap();
    });
    let _ = live.kill();
    let _ = live.wait();
    let _ = log.join();
}
