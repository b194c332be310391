//! Process isolation: each engine's cells run in a child worker process,
//! the host binary re-executed as `engine-matrix __worker`.
//!
//! One engine's memory, threads and global state (allocator arenas, BLAS
//! thread pools, CUDA contexts) then never touch another's, its peak RSS is
//! its own, and a segfault, abort, out-of-memory kill or hang costs only
//! the cell it happened in: the host records it as `failed` with the
//! signal or exit status and the tail of the worker's stderr, starts a new
//! worker for the engine's next cell, and the run goes on.
//!
//! Protocol: JSON lines. The host writes [`Request`]s to the worker's
//! stdin; the worker answers on a *private* copy of its stdout, and points
//! file descriptor 1 at stderr before loading any plugin, so that whatever
//! an engine prints cannot corrupt the protocol. A worker is started in its
//! own process group, so Ctrl-C in the terminal reaches only the host,
//! which then stops the workers itself.

use crate::matrix::EngineDef;
use crate::output::{EngineRecord, ResultLine};
use crate::run::cell::{self, CellState, EngineSlot, Job};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hidden subcommand that starts a worker.
pub const SUBCOMMAND: &str = "__worker";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// First message: which engine this worker serves.
    Init {
        engine: Box<EngineDef>,
        plugin_dir: PathBuf,
    },
    Cell {
        job: Box<Job>,
    },
    /// Free the loaded model (another engine's cells come next).
    Unload,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        record: EngineRecord,
        verbose_error: Option<String>,
    },
    Result {
        line: Box<ResultLine>,
        hung: bool,
    },
    /// A sample of the running cell, for the live view (only for jobs that
    /// ask for it); handed to the host's live callback by the reader
    /// thread, never to [`Worker::recv`].
    Live {
        sample: crate::live::Sample,
    },
    /// A retrieval cell starts building the index of `key`; `Built` says
    /// it is done. Kept by the reader thread ([`Worker::building`]), so a
    /// worker lost in between is known to have died building it.
    Building {
        key: String,
    },
    Built,
}

/// The worker's main loop (`engine-matrix __worker`).
pub fn serve() -> Result<()> {
    // Shared with the live ticker's thread: one line is written whole
    // under the lock, so lines never interleave.
    let out = Arc::new(Mutex::new(protocol_stdout()?));
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let write = |out: &Mutex<std::fs::File>, r: &Reply| -> Result<()> {
        let mut t = serde_json::to_string(r)?;
        t.push('\n');
        let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(t.as_bytes())?;
        f.flush()?;
        Ok(())
    };
    let send = |r: &Reply| write(&out, r);
    let Some(first) = lines.next() else {
        return Ok(());
    };
    let (engine, plugin_dir) = match serde_json::from_str(&first?)? {
        Request::Init { engine, plugin_dir } => (*engine, plugin_dir),
        _ => bail!("worker: the first request must be init"),
    };
    // NVML first, before the plugin and any model: a real libnvidia-ml
    // maps tens of MB and starts threads when it initialises, which would
    // otherwise land in the first cell's RSS growth and peak (the sampler
    // of that cell would be the first to ask for it).
    let _ = crate::telemetry::gpu::shared();
    let slot = EngineSlot::load(&engine, &plugin_dir);
    send(&Reply::Hello {
        record: slot.record.clone(),
        verbose_error: slot.verbose_error.clone(),
    })?;
    let mut state = CellState::default();
    let phase_out = out.clone();
    state.building = Some(Arc::new(move |key: Option<&str>| {
        let r = match key {
            Some(k) => Reply::Building { key: k.to_string() },
            None => Reply::Built,
        };
        let _ = write(&phase_out, &r);
    }));
    let live_out = out.clone();
    state.live = Some(Arc::new(move |sample| {
        // A host that stopped reading is the main loop's business.
        let _ = write(&live_out, &Reply::Live { sample });
    }));
    for line in lines {
        match serde_json::from_str(&line?)? {
            Request::Cell { job } => {
                let (line, hung) = cell::execute(&slot, &mut state, &job);
                send(&Reply::Result {
                    line: Box::new(line),
                    hung,
                })?;
                if hung {
                    // The engine may never give its threads back: leave
                    // rather than wait; the host starts a fresh worker.
                    std::process::exit(0);
                }
            }
            Request::Unload => {
                state.unload();
                release_freed_memory();
            }
            Request::Init { .. } => bail!("worker: init sent twice"),
        }
    }
    Ok(())
}

/// Hands memory freed by an unload back to the system. glibc keeps freed
/// small blocks in its arenas: an index of a million small vectors
/// (hnsw_rs) left its idle worker holding 5.5 GB after the unload, memory
/// the next engine's cells then lacked.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A private duplicate of stdout for the protocol; fd 1 then points at
/// stderr, so plugin output goes to the worker's log.
fn protocol_stdout() -> Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup/dup2 on the process's own standard descriptors; the
    // duplicate is owned by the returned File alone.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            bail!(
                "worker: dup(stdout) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::dup2(2, 1) < 0 {
            bail!(
                "worker: dup2(stderr, stdout) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

/// Why a worker stopped answering.
#[derive(Debug, Clone, PartialEq)]
pub enum Lost {
    /// It exited or was killed: the status, in words.
    Died(String),
    /// No reply within the time limit (it was killed).
    TimedOut(Duration),
    /// The host is stopping (Ctrl-C, run timeout): it was killed.
    Stopped,
}

/// The host's side of a worker process.
pub struct Worker {
    pub engine: String,
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<Result<Reply, String>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// The index the worker said it is building (`Reply::Building`).
    building: Arc<Mutex<Option<String>>>,
    pub hello: Option<(EngineRecord, Option<String>)>,
}

const TAIL_LINES: usize = 20;

impl Worker {
    /// Starts `exe __worker` for `engine`; its stderr goes to `log` (and
    /// the last lines are kept for failure reasons).
    /// `live` receives the worker's live samples (`Reply::Live`).
    pub fn spawn(
        exe: &Path,
        engine: &EngineDef,
        plugin_dir: &Path,
        log: &Path,
        live: Option<Arc<crate::live::LiveFn>>,
    ) -> Result<Worker> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start worker {} {SUBCOMMAND}", exe.display()))?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stderr = child.stderr.take().context("worker stderr")?;
        let (tx, rx) = mpsc::channel();
        let building = Arc::new(Mutex::new(None));
        let building_w = building.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let msg = match line {
                    Ok(l) => serde_json::from_str::<Reply>(&l)
                        .map_err(|e| format!("malformed reply from the worker: {e}")),
                    Err(e) => Err(format!("cannot read the worker's replies: {e}")),
                };
                match msg {
                    Ok(Reply::Live { sample }) => {
                        if let Some(f) = &live {
                            f(sample);
                        }
                        continue;
                    }
                    Ok(Reply::Building { key }) => {
                        if let Ok(mut b) = building_w.lock() {
                            *b = Some(key);
                        }
                        continue;
                    }
                    Ok(Reply::Built) => {
                        if let Ok(mut b) = building_w.lock() {
                            *b = None;
                        }
                        continue;
                    }
                    _ => {}
                }
                let stop = msg.is_err();
                if tx.send(msg).is_err() || stop {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let t = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let _ = writeln!(log_file, "{line}");
                if let Ok(mut q) = t.lock() {
                    if q.len() == TAIL_LINES {
                        q.pop_front();
                    }
                    q.push_back(line);
                }
            }
        });
        let mut w = Worker {
            engine: engine.name.clone(),
            child,
            stdin: Some(stdin),
            replies: rx,
            stderr_tail: tail,
            building,
            hello: None,
        };
        w.send(&Request::Init {
            engine: Box::new(engine.clone()),
            plugin_dir: plugin_dir.to_path_buf(),
        })?;
        Ok(w)
    }

    pub fn send(&mut self, r: &Request) -> Result<()> {
        let mut t = serde_json::to_string(r)?;
        t.push('\n');
        let stdin = self.stdin.as_mut().context("the worker was closed")?;
        stdin
            .write_all(t.as_bytes())
            .and_then(|_| stdin.flush())
            .context("cannot write to the worker")
    }

    /// The next reply, waiting at most `limit` (None: no limit) and
    /// checking `stop` every 100 ms. Kills the worker when it gives up.
    pub fn recv(
        &mut self,
        limit: Option<Duration>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Reply, Lost> {
        let start = Instant::now();
        loop {
            if stop() {
                self.kill();
                return Err(Lost::Stopped);
            }
            let wait = Duration::from_millis(100);
            match self.replies.recv_timeout(wait) {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => {
                    self.kill();
                    return Err(Lost::Died(e));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Lost::Died(self.exit_reason()));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(l) = limit {
                        if start.elapsed() >= l {
                            self.kill();
                            return Err(Lost::TimedOut(l));
                        }
                    }
                }
            }
        }
    }

    /// How the worker ended, in words (waits for it).
    fn exit_reason(&mut self) -> String {
        use std::os::unix::process::ExitStatusExt;
        // stdout closed: the process is exiting; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    self.kill();
                    break self.child.wait().ok();
                }
            }
        };
        match status {
            Some(s) => match (s.code(), s.signal()) {
                (_, Some(sig)) => format!(
                    "killed by signal {sig} ({}){}",
                    signal_name(sig),
                    if sig == libc::SIGKILL {
                        ": the kernel's out-of-memory killer, or another process"
                    } else {
                        ""
                    }
                ),
                (Some(code), _) => format!("exited with status {code}"),
                _ => "ended".into(),
            },
            None => "ended (status unknown)".into(),
        }
    }

    /// The index build the worker was in, when it said it started one and
    /// not that it ended.
    pub fn building(&self) -> Option<String> {
        // The reader thread may still hold the last message.
        std::thread::sleep(Duration::from_millis(20));
        self.building.lock().ok().and_then(|b| b.clone())
    }

    /// The last lines the worker wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        // Let the reader thread catch up with what was written last.
        std::thread::sleep(Duration::from_millis(50));
        self.stderr_tail
            .lock()
            .map(|q| q.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Kills the worker's whole process group, then reaps it.
    pub fn kill(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signals our own child's process group (it was started
        // with process_group(0), so its pgid is its pid).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the worker to exit (closing its stdin) and waits briefly.
    pub fn close(mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV, segmentation fault",
        libc::SIGABRT => "SIGABRT, abort",
        libc::SIGKILL => "SIGKILL",
        libc::SIGBUS => "SIGBUS, bus error",
        libc::SIGFPE => "SIGFPE, arithmetic error",
        libc::SIGILL => "SIGILL, illegal instruction",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}
