//! `launch:` — servers the harness starts for http engines.
//!
//! ```yaml
//! engines:
//!   - name: llama-server
//!     plugin: http
//!     options: {base_url: "http://127.0.0.1:${PORT}", model: smollm2}
//!     launch:
//!       command: ["${LLAMA_SERVER}", "-m", "${SMOLLM2_GGUF}", "--port", "${PORT}"]
//!       ready: /health          # a path on base_url or a full URL; default /v1/models
//!       ready_timeout_s: 120    # default 600 (vLLM can take minutes to load)
//!       stop_timeout_s: 10      # SIGTERM, then SIGKILL after this long; default 10
//!       env: {OMP_NUM_THREADS: "2"}
//! ```
//!
//! `command` is a list (program, then arguments, run without a shell) or
//! a string (run with `/bin/sh -c`). The server inherits the run's
//! environment, plus `env`, plus `ENGINE_MATRIX_PLUGINS` set to the run's
//! plugin folder (so that `${ENGINE_MATRIX} serve` loads the same plugins).
//!
//! # Placeholders
//!
//! `${NAME}` in `command`, `ready`, `env` values and the engine's string
//! options is replaced when the server starts:
//!
//! * `${PORT}`: a free loopback TCP port, picked once per engine per run
//!   (a restarted server gets the same one, so the worker's options stay
//!   valid);
//! * `${ENGINE_MATRIX}`: this executable (for `engine-matrix serve`);
//! * `${MATRIX_DIR}`: the folder of the matrix file;
//! * `${GGUF}`: with `gguf: {from: FILE, type: TYPE}`, FILE at GGUF type
//!   TYPE, derived before the first start (`crate::gguf_types`: cached
//!   in the model cache; `f32`/`f16` dequantized here, other types by
//!   llama.cpp's `llama-quantize`), so one matrix can serve the same
//!   model at every type, one engine per type. Each of those engines'
//!   cells records the file (`model_details.gguf`: type, bits per weight,
//!   tensor types) and its weight bytes (`memory.weight_bytes`);
//! * any other name: the environment variable. An unset one fails the
//!   launch, naming it; a variable's value is never written to results
//!   (the summary keeps the matrix as written).
//!
//! `$${` writes a literal `${`.
//!
//! # Lifecycle
//!
//! The runner starts the server before the engine's first cell, in a
//! process group of its own, with stdout and stderr appended to
//! `RUN/servers/<engine>.log`, and polls `ready` (a plain HTTP/1.1 `GET`,
//! every 200 ms) until it answers 200. A server that exits first, or is
//! not ready in `ready_timeout_s`, fails the engine's cells with the
//! reason and the log's last lines; that engine is not launched again in
//! the run. The server is stopped (SIGTERM to its group, then SIGKILL
//! after `stop_timeout_s`) when the run moves on to another engine, so it
//! cannot take CPU, memory or a GPU from the engines measured after it,
//! and started again when the engine comes back (another scenario, or the
//! next `--repeat` round): a restart costs its load time, never measured
//! time. A server that dies during a cell is started again for the next
//! cell, and the failed cell's reason says that the server exited. Ctrl-C
//! and `--run-timeout` stop it too, and so does dropping [`Server`].

use crate::matrix::placeholders::{split, Part};
use crate::matrix::{EngineDef, LaunchDef};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What placeholders stand for.
pub struct Vars {
    pub port: u16,
    pub exe: PathBuf,
    pub matrix_dir: PathBuf,
    /// The file of `launch.gguf:`, once derived.
    pub gguf: Option<PathBuf>,
}

impl Vars {
    fn get(&self, name: &str) -> Result<String, String> {
        Ok(match name {
            "PORT" => self.port.to_string(),
            "ENGINE_MATRIX" => self.exe.display().to_string(),
            "MATRIX_DIR" => self.matrix_dir.display().to_string(),
            "GGUF" => match &self.gguf {
                Some(p) => p.display().to_string(),
                None => {
                    return Err(
                        "`${GGUF}` is the file of `launch.gguf:`, which is not derived yet".into(),
                    )
                }
            },
            other => std::env::var(other).map_err(|_| {
                format!("`${{{other}}}` names the environment variable {other}, which is not set")
            })?,
        })
    }

    /// `s` with its placeholders filled in.
    pub fn fill(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        split(s, |part| {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&self.get(v)?),
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn fill_json(&self, v: &serde_json::Value) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        Ok(match v {
            Value::String(s) => Value::String(self.fill(s)?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.fill_json(x))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), self.fill_json(x)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// A free loopback port (the OS picks it; it is free when this returns,
/// and the server binds it moments later).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An engine definition and launch with their placeholders filled in.
pub struct Plan {
    pub engine: EngineDef,
    pub command: Vec<String>,
    pub ready: String,
    pub env: Vec<(String, String)>,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
}

pub fn plan(def: &EngineDef, launch: &LaunchDef, vars: &Vars) -> Result<Plan, String> {
    let mut engine = def.clone();
    engine.options = vars.fill_json(&def.options)?;
    Ok(Plan {
        engine,
        command: launch
            .command
            .iter()
            .map(|a| vars.fill(a))
            .collect::<Result<_, _>>()?,
        ready: vars.fill(&launch.ready)?,
        env: launch
            .env
            .iter()
            .map(|(k, v)| Ok((k.clone(), vars.fill(v)?)))
            .collect::<Result<_, String>>()?,
        ready_timeout: Duration::from_secs_f64(launch.ready_timeout_s),
        stop_timeout: Duration::from_secs_f64(launch.stop_timeout_s),
    })
}

/// Why a start did not give a ready server.
#[derive(Debug)]
pub enum StartError {
    Failed(String),
    /// Ctrl-C or the run's time limit.
    Stopped,
}

/// A running server.
pub struct Server {
    child: Child,
    log: PathBuf,
    stop_timeout: Duration,
    pub ready_after: Duration,
}

/// The log's last `n` lines (at most 64 KiB read).
pub fn log_tail(log: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn with_tail(msg: String, log: &Path) -> String {
    let tail = log_tail(log, 15);
    if tail.trim().is_empty() {
        format!("{msg} (log: {}, empty)", log.display())
    } else {
        format!(
            "{msg}; last lines of {}:\n{}",
            log.display(),
            tail.trim_end()
        )
    }
}

fn note(log: &Path, what: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(f, "[engine-matrix {}] {what}", crate::clock::utc_now());
    }
}

impl Server {
    /// Starts the server and waits until `plan.ready` answers 200, checking
    /// `stop` every 200 ms.
    pub fn start(plan: &Plan, log: &Path, stop: &dyn Fn() -> bool) -> Result<Server, StartError> {
        use std::os::unix::process::CommandExt;
        let fail = |m: String| StartError::Failed(m);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| fail(format!("cannot open {}: {e}", log.display())))?;
        note(log, &format!("starting: {}", shell_words(&plan.command)));
        let err = out
            .try_clone()
            .map_err(|e| fail(format!("cannot open {}: {e}", log.display())))?;
        let mut cmd = Command::new(&plan.command[0]);
        cmd.args(&plan.command[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in &plan.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start `{}`: {e}", plan.command[0])))?;
        let t0 = Instant::now();
        let mut server = Server {
            child,
            log: log.to_path_buf(),
            stop_timeout: plan.stop_timeout,
            ready_after: Duration::ZERO,
        };
        let mut last;
        loop {
            if stop() {
                server.stop();
                return Err(StartError::Stopped);
            }
            if let Some(status) = server.exited() {
                return Err(fail(with_tail(
                    format!(
                        "the server {status} {:.1} s after it was started, before {} answered",
                        t0.elapsed().as_secs_f64(),
                        plan.ready
                    ),
                    log,
                )));
            }
            match probe(&plan.ready) {
                Ok(200) => break,
                Ok(code) => last = format!("HTTP {code}"),
                Err(e) => last = e,
            }
            if t0.elapsed() >= plan.ready_timeout {
                server.stop();
                return Err(fail(with_tail(
                    format!(
                        "the server was not ready within {:.0} s (launch.ready_timeout_s): {} last gave {last}; it was stopped",
                        plan.ready_timeout.as_secs_f64(),
                        plan.ready
                    ),
                    log,
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        server.ready_after = t0.elapsed();
        note(
            log,
            &format!(
                "ready after {:.2} s ({} answered 200)",
                server.ready_after.as_secs_f64(),
                plan.ready
            ),
        );
        Ok(server)
    }

    /// How the server ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(describe(s)),
            _ => None,
        }
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGTERM to the server's process group, then SIGKILL after the stop
    /// timeout; reaps it. Returns what happened (also written to the log).
    pub fn stop(&mut self) -> String {
        if let Some(s) = self.exited() {
            let what = format!("had already ended: {s}");
            note(&self.log, &what);
            return what;
        }
        let pgid = self.child.id() as i32;
        // SAFETY: signals our own child's process group (started with
        // process_group(0), so its pgid is its pid, and it was not reaped).
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let t0 = Instant::now();
        let what = loop {
            if let Some(s) = self.exited() {
                break format!(
                    "stopped with SIGTERM: {s} after {:.2} s",
                    t0.elapsed().as_secs_f64()
                );
            }
            if t0.elapsed() >= self.stop_timeout {
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                let _ = self.child.wait();
                break format!(
                    "did not exit within {:.0} s of SIGTERM (launch.stop_timeout_s): killed with SIGKILL",
                    self.stop_timeout.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Whatever the server left in its group (workers it forked).
        // SAFETY: as above; ESRCH when the group is gone.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        note(&self.log, &what);
        what
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.stop();
        }
    }
}

fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (_, Some(sig)) => format!(
            "was killed by signal {sig} ({})",
            crate::run::worker::signal_name(sig)
        ),
        (Some(c), _) => format!("exited with status {c}"),
        _ => "ended".into(),
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `GET url` (plain http), the status code. Short timeouts: a server that
/// is loading may accept connections and answer late.
pub fn probe(url: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(1))
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    // One write: a server may answer (and close) after the first segment.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.trim()))
}

/// The servers of one run: started on demand, stopped when the run moves
/// to another engine.
pub struct Servers {
    exe: PathBuf,
    plugin_dir: PathBuf,
    matrix_dir: PathBuf,
    dir: PathBuf,
    ports: HashMap<String, u16>,
    running: HashMap<String, Server>,
    /// Per engine, the GGUF its `launch.gguf:` derived.
    ggufs: HashMap<String, crate::gguf_types::Derived>,
    /// Engines whose launch failed: the reason, given to all their cells.
    failed: HashMap<String, String>,
    /// Per engine, why its server died during the last cell.
    pub died: HashMap<String, String>,
}

impl Servers {
    pub fn new(exe: PathBuf, plugin_dir: PathBuf, matrix_dir: PathBuf, run_dir: &Path) -> Servers {
        Servers {
            exe,
            plugin_dir,
            matrix_dir,
            dir: run_dir.join("servers"),
            ports: HashMap::new(),
            running: HashMap::new(),
            ggufs: HashMap::new(),
            failed: HashMap::new(),
            died: HashMap::new(),
        }
    }

    /// The pid of the engine's running server, which is also its process
    /// group's id (it was started in a group of its own).
    pub fn pid(&self, engine: &str) -> Option<u32> {
        self.running.get(engine).map(|s| s.child.id())
    }

    /// The GGUF the engine's server serves, when its launch derives one.
    pub fn gguf(&self, engine: &str) -> Option<&crate::gguf_types::Derived> {
        self.ggufs.get(engine)
    }

    /// The file of `launch.gguf:`, derived once per engine per run.
    fn derive_gguf(&mut self, def: &EngineDef, vars: &Vars) -> Result<PathBuf, String> {
        let Some(g) = def.launch.as_ref().and_then(|l| l.gguf.as_ref()) else {
            return Err("no launch.gguf".into());
        };
        if let Some(d) = self.ggufs.get(&def.name) {
            return Ok(d.path.clone());
        }
        let from = vars
            .fill(&g.from)
            .map_err(|e| format!("launch.gguf.from: {e}"))?;
        let from = self.matrix_dir.join(from);
        let d = crate::gguf_types::ensure(&from, &g.ty, None)
            .map_err(|e| format!("launch.gguf ({} at {}): {e:#}", from.display(), g.ty))?;
        let path = d.path.clone();
        self.ggufs.insert(def.name.clone(), d);
        Ok(path)
    }

    fn log_path(&self, engine: &str) -> PathBuf {
        self.dir
            .join(format!("{}.log", crate::output::slug(&[engine])))
    }

    /// The engine's definition with placeholders filled in, its server
    /// started and ready (engines without `launch` pass through).
    pub fn ensure(
        &mut self,
        def: &EngineDef,
        stop: &dyn Fn() -> bool,
    ) -> Result<EngineDef, StartError> {
        let Some(launch) = &def.launch else {
            return Ok(def.clone());
        };
        if let Some(why) = self.failed.get(&def.name) {
            return Err(StartError::Failed(why.clone()));
        }
        let port = match self.ports.get(&def.name) {
            Some(p) => *p,
            None => {
                let p = free_port().map_err(|e| {
                    StartError::Failed(format!("cannot find a free port for ${{PORT}}: {e}"))
                })?;
                self.ports.insert(def.name.clone(), p);
                p
            }
        };
        let mut vars = Vars {
            port,
            exe: self.exe.clone(),
            matrix_dir: self.matrix_dir.clone(),
            gguf: None,
        };
        if launch.gguf.is_some() {
            match self.derive_gguf(def, &vars) {
                Ok(p) => vars.gguf = Some(p),
                Err(e) => {
                    let why = format!("launch of engine '{}': {e}", def.name);
                    self.failed.insert(def.name.clone(), why.clone());
                    return Err(StartError::Failed(why));
                }
            }
        }
        let mut plan = plan(def, launch, &vars).map_err(|e| {
            let why = format!("launch of engine '{}': {e}", def.name);
            self.failed.insert(def.name.clone(), why.clone());
            StartError::Failed(why)
        })?;
        // `${ENGINE_MATRIX} serve` loads the plugins this run loads.
        if !launch.env.contains_key(crate::plugins::PLUGINS_ENV) {
            plan.env.push((
                crate::plugins::PLUGINS_ENV.to_string(),
                self.plugin_dir.display().to_string(),
            ));
        }
        if let Some(s) = self.running.get_mut(&def.name) {
            match s.exited() {
                None => return Ok(plan.engine),
                Some(how) => {
                    note(s.log(), &format!("the server {how}; starting it again"));
                    self.running.remove(&def.name);
                }
            }
        }
        let log = self.log_path(&def.name);
        match Server::start(&plan, &log, stop) {
            Ok(s) => {
                self.running.insert(def.name.clone(), s);
                Ok(plan.engine)
            }
            Err(StartError::Failed(m)) => {
                let why = format!("launch of engine '{}': {m}", def.name);
                self.failed.insert(def.name.clone(), why.clone());
                Err(StartError::Failed(why))
            }
            Err(StartError::Stopped) => Err(StartError::Stopped),
        }
    }

    /// Why the engine's server is no longer running, when it was and
    /// has exited (after a cell): its exit status or signal, and the last
    /// lines of its log. `grace` is how long to wait for a server that is
    /// dying: after a cell whose requests failed, the connections of a
    /// server that was killed close a moment before the process is reaped.
    pub fn check(&mut self, engine: &str, grace: Duration) -> Option<String> {
        let s = self.running.get_mut(engine)?;
        let t0 = Instant::now();
        let how = loop {
            if let Some(how) = s.exited() {
                break how;
            }
            if t0.elapsed() >= grace {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let msg = with_tail(format!("the launched server {how}"), s.log());
        self.running.remove(engine);
        Some(msg)
    }

    /// Stops the engine's server, if it runs.
    pub fn stop(&mut self, engine: &str) {
        if let Some(mut s) = self.running.remove(engine) {
            s.stop();
        }
    }

    pub fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for n in names {
            self.stop(&n);
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::placeholders::placeholders;

    fn vars() -> Vars {
        Vars {
            port: 4242,
            exe: "/bin/em".into(),
            matrix_dir: "/m".into(),
            gguf: None,
        }
    }

    #[test]
    fn placeholders_are_filled_and_checked() {
        let v = vars();
        assert_eq!(
            v.fill("http://127.0.0.1:${PORT}/x ${ENGINE_MATRIX} ${MATRIX_DIR}")
                .unwrap(),
            "http://127.0.0.1:4242/x /bin/em /m"
        );
        assert_eq!(v.fill("a $${PORT} b").unwrap(), "a ${PORT} b");
        assert_eq!(v.fill("no vars $ {x}").unwrap(), "no vars $ {x}");
        std::env::set_var("EM_LAUNCH_TEST_VAR", "v1");
        assert_eq!(v.fill("${EM_LAUNCH_TEST_VAR}!").unwrap(), "v1!");
        assert!(v.fill("-m ${GGUF}").unwrap_err().contains("launch.gguf"));
        let with_gguf = Vars {
            gguf: Some("/c/m-q8_0.gguf".into()),
            ..vars()
        };
        assert_eq!(with_gguf.fill("-m ${GGUF}").unwrap(), "-m /c/m-q8_0.gguf");
        let e = v.fill("${EM_LAUNCH_SURELY_UNSET_9}").unwrap_err();
        assert!(
            e.contains("EM_LAUNCH_SURELY_UNSET_9") && e.contains("not set"),
            "{e}"
        );
        assert!(placeholders("${PORT").unwrap_err().contains("unclosed"));
        assert!(placeholders("${1X}")
            .unwrap_err()
            .contains("not a placeholder"));
        assert!(placeholders("${}").is_err());
        assert_eq!(
            placeholders("${A}-${B_2}").unwrap(),
            vec!["A".to_string(), "B_2".into()]
        );
        let j = v
            .fill_json(
                &serde_json::json!({"base_url": "http://h:${PORT}", "n": 3, "l": ["${PORT}"]}),
            )
            .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"base_url": "http://h:4242", "n": 3, "l": ["4242"]})
        );
    }

    /// Reads a request up to the end of its headers.
    fn read_head(s: &mut TcpStream) {
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while !got.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
    }

    #[test]
    fn probe_reads_the_status_and_reports_no_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for code in [503, 200] {
                let (mut s, _) = l.accept().unwrap();
                read_head(&mut s);
                write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(probe(&url).unwrap(), 503);
        assert_eq!(probe(&url).unwrap(), 200);
        t.join().unwrap();
        let free = free_port().unwrap();
        assert!(probe(&format!("http://127.0.0.1:{free}/")).is_err());
        assert!(probe("https://x/").is_err());
    }

    fn sh_plan(script: &str, ready: String, ready_s: f64, stop_s: f64) -> Plan {
        Plan {
            engine: EngineDef {
                name: "e".into(),
                plugin: "http".into(),
                options: serde_json::json!({}),
                launch: None,
                tuned: None,
            },
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ready,
            env: vec![("EM_X".into(), "hello".into())],
            ready_timeout: Duration::from_secs_f64(ready_s),
            stop_timeout: Duration::from_secs_f64(stop_s),
        }
    }

    fn tmp_log(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("em-launch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("servers/e.log")
    }

    #[test]
    fn a_server_that_exits_early_fails_with_its_log() {
        let log = tmp_log("exit");
        let plan = sh_plan(
            "echo \"env says $EM_X\"; echo boom >&2; exit 3",
            "http://127.0.0.1:1/".into(),
            30.0,
            1.0,
        );
        let Err(StartError::Failed(m)) = Server::start(&plan, &log, &|| false) else {
            panic!("should fail")
        };
        assert!(m.contains("exited with status 3"), "{m}");
        assert!(m.contains("env says hello") && m.contains("boom"), "{m}");
        let _ = std::fs::remove_dir_all(log.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_server_never_ready_times_out_and_one_ignoring_sigterm_is_killed() {
        let log = tmp_log("slow");
        let port = free_port().unwrap();
        // Ignores SIGTERM and never listens.
        let plan = sh_plan(
            "trap '' TERM; echo started; while true; do sleep 0.05; done",
            format!("http://127.0.0.1:{port}/health"),
            0.6,
            0.5,
        );
        let t0 = Instant::now();
        let Err(StartError::Failed(m)) = Server::start(&plan, &log, &|| false) else {
            panic!("should time out")
        };
        assert!(
            m.contains("not ready within") && m.contains("started"),
            "{m}"
        );
        assert!(t0.elapsed() < Duration::from_secs(10));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("SIGKILL"), "{text}");
        let _ = std::fs::remove_dir_all(log.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_ready_server_is_stopped_with_sigterm() {
        let log = tmp_log("ok");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            read_head(&mut s);
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        });
        // The "server" is a sleeping shell; readiness comes from the
        // listener above.
        let plan = sh_plan(
            "exec sleep 30",
            format!("http://127.0.0.1:{port}/"),
            10.0,
            5.0,
        );
        let mut s = Server::start(&plan, &log, &|| false).unwrap();
        t.join().unwrap();
        assert!(s.exited().is_none());
        let what = s.stop();
        assert!(what.contains("stopped with SIGTERM"), "{what}");
        assert!(s.exited().is_some());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("starting: /bin/sh -c 'exec sleep 30'"),
            "{text}"
        );
        assert!(text.contains("ready after"), "{text}");
        let _ = std::fs::remove_dir_all(log.parent().unwrap().parent().unwrap());
    }
}
