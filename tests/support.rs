//! Helpers for the end-to-end tests: locate the release-built binary and
//! plugins, stage plugin folders, run the CLI.
//!
//! The tests drive the real `engine-matrix` binary and real plugin
//! libraries, which `./scripts/test` builds (`cargo build --release
//! --workspace`) before `cargo test --release --workspace`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The folder holding the binary and plugins of this build profile
/// (the test executable lives in its `deps/`): the engines' test support
/// finds the reference plugin the same way.
pub use engine_matrix_test_support::profile_dir;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn binary() -> PathBuf {
    let p = profile_dir().join(format!("engine-matrix{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.is_file(),
        "{} not built: run ./scripts/test (or cargo build --release --workspace) first",
        p.display()
    );
    p
}

pub fn plugin_file(name: &str) -> PathBuf {
    let file = format!(
        "{}em_{}{}",
        std::env::consts::DLL_PREFIX,
        name,
        std::env::consts::DLL_SUFFIX
    );
    let p = profile_dir().join(file);
    assert!(
        p.is_file(),
        "plugin {} not built: run ./scripts/test (or cargo build --release --workspace) first",
        p.display()
    );
    p
}

/// A fresh temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "em-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("EM_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A plugin folder holding copies of the named plugins.
pub fn plugin_dir(names: &[&str]) -> TempDir {
    let dir = TempDir::new("plugins");
    for n in names {
        let src = plugin_file(n);
        std::fs::copy(&src, dir.path().join(src.file_name().unwrap())).expect("copy plugin");
    }
    dir
}

/// Shared cache for synthetic weights, so tests generate them once.
pub fn cache_dir() -> PathBuf {
    profile_dir().join("engine-matrix-test-cache")
}

/// Runs the binary with `args`, plugins from `plugins`.
pub fn run(args: &[&str], plugins: &Path) -> Output {
    run_env(args, plugins, &[])
}

/// [`run`] with extra environment variables.
pub fn run_env(args: &[&str], plugins: &Path, env: &[(&str, &Path)]) -> Output {
    Command::new(binary())
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .args(args)
        .arg("--plugins")
        .arg(plugins)
        .env("ENGINE_MATRIX_CACHE", cache_dir())
        .env_remove("ENGINE_MATRIX_PLUGINS")
        .env("RUST_BACKTRACE", "0")
        .current_dir(workspace_root())
        .output()
        .expect("run engine-matrix")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn read_json(p: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}

/// Writes `yaml` as `<dir>/m.yaml` and runs `engine-matrix run` on it
/// into `<dir>/run` with `extra` arguments; returns the run folder and the
/// output (not asserted: tests check the exit status they expect).
pub fn run_yaml(dir: &Path, yaml: &str, extra: &[&str], plugins: &Path) -> (PathBuf, Output) {
    run_yaml_env(dir, yaml, extra, plugins, &[])
}

/// [`run_yaml`] with extra environment variables.
pub fn run_yaml_env(
    dir: &Path,
    yaml: &str,
    extra: &[&str],
    plugins: &Path,
    env: &[(&str, &Path)],
) -> (PathBuf, Output) {
    let m = dir.join("m.yaml");
    std::fs::write(&m, yaml).expect("write matrix");
    let run_dir = dir.join("run");
    let mut args = vec![
        "run",
        m.to_str().expect("utf-8 path"),
        "--out",
        run_dir.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let o = run_env(&args, plugins, env);
    (run_dir, o)
}

/// `engine-matrix run MATRIX --out RUN_DIR`; asserts it succeeded (every
/// cell ok or unsupported).
pub fn run_matrix(matrix: &Path, plugins: &Path, run_dir: &Path) -> Output {
    run_matrix_status(matrix, plugins, run_dir, 0)
}

/// [`run_matrix`] asserting the exit status: 5 when cells failed.
pub fn run_matrix_status(matrix: &Path, plugins: &Path, run_dir: &Path, status: i32) -> Output {
    let o = run(
        &[
            "run",
            matrix.to_str().expect("utf-8 path"),
            "--out",
            run_dir.to_str().expect("utf-8 path"),
        ],
        plugins,
    );
    assert_eq!(o.status.code(), Some(status), "stderr: {}", text(&o.stderr));
    o
}

/// Headless Chromium: `$CHROMIUM`, else Debian's `/usr/bin/chromium`,
/// which `scripts/provision` installs (packages chromium, chromium-driver).
pub fn chromium() -> PathBuf {
    let p = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.is_file(),
        "{} not found: run ./scripts/provision (it installs Debian's chromium and \
         chromium-driver with apt-get), or point $CHROMIUM at a Chromium binary",
        p.display()
    );
    p
}

/// How long one headless Chromium run may take before it is killed:
/// Chromium sometimes hangs instead of exiting after --screenshot.
pub const CHROMIUM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `file://` URL of `path` (made absolute), percent-encoding every byte
/// but unreserved characters and `/`.
pub fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path).expect("absolute path");
    let mut url = String::from("file://");
    for &b in abs.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// Opens `html` in headless Chromium with `extra` arguments (such as
/// `--dump-dom` or `--screenshot=FILE`) and returns what it printed. A
/// 1280×2400 window, 2 s of virtual time for layout, and a fresh empty
/// profile each time, so no state leaks between runs. The flags are the
/// ones Chromium needs on a headless root machine without a GPU or
/// network; `--disable-dev-shm-usage` because containers often have a
/// tiny /dev/shm. Chromium runs in its own process group, which is killed
/// (browser, renderers, helpers) after [`CHROMIUM_TIMEOUT`]: then this
/// panics with what it printed.
pub fn headless(html: &Path, extra: &[&str]) -> Output {
    assert!(html.is_file(), "{} not found", html.display());
    headless_url(&file_url(html), extra)
}

/// [`headless`] on a URL (a page a test's server serves).
pub fn headless_url(url: &str, extra: &[&str]) -> Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let profile = TempDir::new("chromium-profile");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--window-size=1280,2400", "--virtual-time-budget=2000"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
    let pgid = child.id();
    // Read both pipes on threads so a chatty Chromium never blocks on a
    // full pipe while we wait for it.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    // Kills the whole group: helpers that outlive the browser would keep
    // the pipes open. dash's kill takes a negative pid as a group.
    let kill_group = || {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -9 -{pgid} 2>/dev/null")])
            .status();
    };
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let exited = loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    kill_group();
    let timed_out = exited.is_none();
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().expect("wait for killed chromium")
    });
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    if timed_out {
        panic!(
            "chromium {} did not finish within {} s and was killed; stderr:\n{}",
            url,
            CHROMIUM_TIMEOUT.as_secs(),
            text(&stderr)
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Width and height from a PNG's IHDR chunk (bytes 16..24, big-endian),
/// after checking the PNG signature.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    Some((be(&png[16..20]), be(&png[20..24])))
}

/// Renders `html` in headless Chromium into `png` (replaced if present);
/// asserts that Chromium succeeded and wrote a PNG.
pub fn screenshot(html: &Path, png: &Path) {
    let png = std::path::absolute(png).expect("absolute path");
    let _ = std::fs::remove_file(&png);
    let o = headless(html, &[&format!("--screenshot={}", png.display())]);
    assert!(
        o.status.success(),
        "chromium --screenshot {}: {}; stderr:\n{}",
        html.display(),
        o.status,
        text(&o.stderr)
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "chromium wrote no screenshot {}: {e}; stderr:\n{}",
            png.display(),
            text(&o.stderr)
        )
    });
    assert!(
        png_size(&bytes).is_some(),
        "{} is not a PNG ({} bytes)",
        png.display(),
        bytes.len()
    );
}

/// The DOM of `html` after Chromium parsed it (and ran its scripts, if
/// any), serialised by `--dump-dom`.
pub fn dump_dom(html: &Path) -> String {
    let o = headless(html, &["--dump-dom"]);
    assert!(
        o.status.success(),
        "chromium --dump-dom {}: {}; stderr:\n{}",
        html.display(),
        o.status,
        text(&o.stderr)
    );
    let dom = text(&o.stdout);
    assert!(
        dom.contains("<html"),
        "chromium --dump-dom {} printed no document: {dom}",
        html.display()
    );
    dom
}

/// Lower-cased names of the elements in serialised HTML (`--dump-dom`
/// output), in document order. Attribute values are skipped, so a `<`
/// inside one (legal there) is not taken for a tag, and so are comments
/// and the contents of `<script>` and `<style>`, which are not escaped.
pub fn element_names(html: &str) -> Vec<String> {
    let b = html.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"<!--") {
            i = find_bytes(&b[i..], b"-->").map_or(b.len(), |k| i + k + 3);
            continue;
        }
        if b[i] != b'<' || !b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' && b[j] != b'/' {
            j += 1;
        }
        let name = html[start..j].to_ascii_lowercase();
        // to the end of the tag, skipping quoted attribute values
        let mut quote = None;
        while j < b.len() {
            match (quote, b[j]) {
                (None, b'>') => break,
                (None, q @ (b'"' | b'\'')) => quote = Some(q),
                (Some(q), c) if c == q => quote = None,
                _ => {}
            }
            j += 1;
        }
        i = j + 1;
        if name == "script" || name == "style" {
            let close = format!("</{name}");
            let rest = b[i.min(b.len())..].to_ascii_lowercase();
            i = find_bytes(&rest, close.as_bytes()).map_or(b.len(), |k| i + k);
        }
        names.push(name);
    }
    names
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The log `launch:` kept for `engine` in `run_dir` shows the server got
/// ready and was stopped with SIGTERM, and the port it was given no longer
/// listens. Returns the log.
pub fn assert_launched_server_stopped(run_dir: &Path, engine: &str) -> String {
    let log_path = run_dir.join(format!("servers/{engine}.log"));
    let log = std::fs::read_to_string(&log_path)
        .unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
    assert!(log.contains("ready after"), "{log}");
    assert!(log.contains("stopped with SIGTERM"), "{log}");
    let port: u16 = log
        .split("--port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {log}"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server of {engine} still listens on {port}"
    );
    log
}

// ---------------------------------------------------------------------------
// A blocking HTTP/1.1 client (serve's tests, llama-server's tokenizer).

/// A response, with each server-sent event's arrival time.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request was written.
    pub sent: std::time::Instant,
    pub events: Vec<(std::time::Instant, String)>,
    /// When the whole body had been read.
    pub end: std::time::Instant,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The `data:` payloads of the events.
    pub fn data(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|(_, e)| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {e:?}"))
            })
            .collect()
    }
}

pub fn read_line(r: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line");
    line.trim_end_matches(['\r', '\n']).to_string()
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); the
/// body is read as it arrives, chunked or not, and every complete event
/// (`...\n\n`) is stamped when the bytes ending it were read.
pub fn http(port: u16, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    use std::io::{BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    let sent = std::time::Instant::now();
    w.write_all(&req).expect("send request");
    let mut r = BufReader::new(stream);
    let status_line = read_line(&mut r);
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let l = read_line(&mut r);
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let mut events = Vec::new();
    let mut pending = Vec::new();
    let mut take_events = |data: &[u8], body: &mut Vec<u8>| {
        let now = std::time::Instant::now();
        body.extend_from_slice(data);
        pending.extend_from_slice(data);
        while let Some(i) = pending.windows(2).position(|w| w == b"\n\n") {
            let ev: Vec<u8> = pending.drain(..i + 2).collect();
            events.push((now, String::from_utf8_lossy(&ev[..i]).into_owned()));
        }
    };
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_line = read_line(&mut r);
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).expect("chunk");
            take_events(&chunk, &mut body);
            assert_eq!(read_line(&mut r), "", "chunk terminator");
        }
    } else if let Some(n) = find("content-length") {
        let mut data = vec![0; n.parse().expect("content-length")];
        r.read_exact(&mut data).expect("body");
        take_events(&data, &mut body);
    } else {
        let mut data = Vec::new();
        r.read_to_end(&mut data).expect("body");
        take_events(&data, &mut body);
    }
    Resp {
        status,
        headers,
        body,
        sent,
        events,
        end: std::time::Instant::now(),
    }
}

/// The path `scripts/provision --print` gives for `name`, asserted to be
/// a file or folder.
pub fn provisioned(name: &str) -> PathBuf {
    let script = workspace_root().join("scripts/provision");
    let o = std::process::Command::new(&script)
        .arg("--print")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --print: {e}", script.display()));
    assert!(
        o.status.success(),
        "{} --print failed: {}",
        script.display(),
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("scripts/provision --print names no {name}: {out}"));
    assert!(
        path.exists(),
        "{name} not found at {}: run ./scripts/provision (llama-server and SmolLM2's GGUF \
         need it without --no-llama)",
        path.display()
    );
    path
}

/// llama.cpp's llama-server on `gguf`, killed when dropped.
pub struct LlamaServer {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LlamaServer {
    /// Started on a free port with `args` (context, threads), ready.
    pub fn start(gguf: &Path, args: &[&str]) -> Self {
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(provisioned("llama-server"))
            .arg("-m")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let mut s = LlamaServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http(port, "GET", "/health", None).status == 200;
            if up {
                break;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("llama-server exited with {status}");
            }
            assert!(Instant::now() < deadline, "llama-server not ready in 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        s.port = port;
        s
    }

    /// llama.cpp's token ids of `content` (no special tokens added).
    pub fn tokenize(&self, content: &str) -> Vec<u32> {
        let body = serde_json::json!({"content": content, "add_special": false}).to_string();
        let r = http(self.port, "POST", "/tokenize", Some(body.as_bytes()));
        assert_eq!(r.status, 200, "/tokenize: {}", r.text());
        serde_json::from_value(r.json()["tokens"].clone()).expect("token ids")
    }
}

/// The exit status of a run that finished: 0, or 5 when cells failed;
/// anything else fails the test with the run's output.
pub fn finished_status(o: &Output) -> i32 {
    let status = o.status.code().unwrap_or(-1);
    assert!(
        status == 0 || status == 5,
        "exit status {status}; stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    status
}

/// The cells of a run folder's `summary.json`.
pub fn summary_cells(run_dir: &Path) -> Vec<serde_json::Value> {
    read_json(&run_dir.join("summary.json"))["cells"]
        .as_array()
        .expect("summary cells")
        .clone()
}

/// A running `engine-matrix serve` (the candle plugin, the `tiny`
/// model), killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    _plugins: TempDir,
    logs: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let plugins = plugin_dir(&["candle"]);
        let logs = TempDir::new("serve-logs");
        let stderr = std::fs::File::create(logs.path().join("stderr")).unwrap();
        let mut child = Command::new(binary())
            .args([
                "serve", "--engine", "candle", "--model", "tiny", "--port", "0",
            ])
            .args(extra)
            .arg("--plugins")
            .arg(plugins.path())
            .env("ENGINE_MATRIX_CACHE", cache_dir())
            .env_remove("ENGINE_MATRIX_PLUGINS")
            .env("RUST_BACKTRACE", "0")
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start engine-matrix serve");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read the listening line");
        let mut server = Server {
            child,
            port: 0,
            _plugins: plugins,
            logs,
        };
        let port = line
            .trim()
            .strip_prefix("listening on http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no listening line: {line:?}; stderr: {}", server.stderr()));
        server.port = port;
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let r = server.get("/health");
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 503, "health while loading: {}", r.text());
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("serve exited with {status}: {}", server.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "model not loaded in time: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Resp {
        http(self.port, "GET", path, None)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Resp {
        http(self.port, "POST", path, Some(body.to_string().as_bytes()))
    }
}

/// `engine-matrix model import GGUF --out OUT` through the CLI: it must
/// succeed and say it wrote a tokenizer of `kind`.
pub fn import_gguf(gguf: &Path, out: &Path, kind: &str) {
    let o = Command::new(binary())
        .args(["model", "import"])
        .arg(gguf)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run model import");
    let err = text(&o.stderr);
    assert!(o.status.success(), "model import failed: {err}");
    let written = format!(
        "tokenizer.json ({kind}), tokenizer_config.json and generation_config.json written"
    );
    assert!(err.contains(&written), "{err}");
}
