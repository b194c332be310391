//! Resource pressure beside the engine (a cell's `pressure` axis key): busy
//! threads and resident memory in one child process, started before the
//! cell's first request and stopped after its last.
//!
//! The child is this binary again (`engine-matrix __pressure`), so there is
//! nothing to install. It is always stopped:
//! * [`Hog`] kills and reaps it when dropped (the cell ended, failed or
//!   panicked);
//! * it exits when its stdin reaches end of file, which happens whenever
//!   the process holding the other end dies, however it dies;
//! * it asks Linux for SIGKILL when the thread that started it dies
//!   (`PR_SET_PDEATHSIG`), in case a descendant kept the pipe open;
//! * Ctrl-C reaches it with its process group, as it reaches the workers.
//!
//! Trade-offs: the busy threads compete with the engine for cores as any
//! other program would (the scheduler decides, not the harness); the
//! memory is touched once and then held, so it takes capacity (and page
//! cache) from the engine, not bandwidth. The child's own RSS and CPU time
//! are recorded with the cell, to show the pressure was there.

use anyhow::{bail, Context, Result};
use engine_matrix_format::pressure::Pressure;
use engine_matrix_results::cell::PressureRecord;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__pressure";

/// Longest the child may take to fill its memory and start its threads.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The running child.
pub struct Hog {
    child: Child,
    /// Held open: the child exits when it closes.
    stdin: Option<ChildStdin>,
    pressure: Pressure,
    resident_bytes: Option<u64>,
    started: Instant,
}

impl Hog {
    /// Starts `exe __pressure` for `p` and waits until its memory is
    /// resident and its threads run.
    pub fn start(exe: &Path, p: &Pressure) -> Result<Hog> {
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .args(["--cpu", &p.cpu_threads.to_string()])
            .args(["--mem-mib", &p.memory_mib.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("pressure {}: cannot start {}", p.tag(), exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut hog = Hog {
            child,
            stdin,
            pressure: *p,
            resident_bytes: None,
            started: Instant::now(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        match line.trim().strip_prefix("ready ") {
            Some(rss) => hog.resident_bytes = rss.parse().ok(),
            None => {
                let why = hog.stderr_tail();
                bail!(
                    "pressure {}: the child did not get ready within {} s{}",
                    p.tag(),
                    READY_TIMEOUT.as_secs(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                );
            }
        }
        hog.started = Instant::now();
        Ok(hog)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the child and says what it did.
    pub fn stop(mut self) -> PressureRecord {
        let cpu_seconds = cpu_seconds(self.child.id());
        let alive = matches!(self.child.try_wait(), Ok(None));
        let seconds = self.started.elapsed().as_secs_f64();
        self.kill();
        PressureRecord {
            cpu_threads: self.pressure.cpu_threads,
            memory_bytes: self.pressure.memory_bytes(),
            resident_bytes: self.resident_bytes,
            cpu_seconds,
            seconds,
            note: (!alive).then(|| "the pressure child ended before the cell did".to_string()),
        }
    }

    fn kill(&mut self) {
        // Closing stdin asks it to leave; the kill makes sure.
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stderr_tail(&mut self) -> String {
        self.kill();
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text.trim().lines().last().unwrap_or_default().to_string()
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// User plus system CPU seconds of process `pid` so far (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12
    // after the state.
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// The child: `__pressure --cpu N --mem-mib M`. Holds M MiB resident,
/// runs N busy threads, prints `ready RSS_BYTES`, and exits at the end of
/// its stdin (or when its parent dies).
pub fn serve(args: &[String]) -> Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let mut cpu = 0u32;
    let mut mem_mib = 0u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a}: needs a value"))?;
        match a.as_str() {
            "--cpu" => cpu = v.parse().context("--cpu")?,
            "--mem-mib" => mem_mib = v.parse().context("--mem-mib")?,
            other => bail!("unknown argument {other}"),
        }
    }
    let held = hold(mem_mib << 20)?;
    for _ in 0..cpu {
        std::thread::spawn(spin);
    }
    let rss = crate::system::rss().map_or(0, |r| r.rss_bytes);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {rss}")?;
    out.flush()?;
    drop(out);
    // The lifeline: the harness holds the other end.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    std::hint::black_box(&held);
    Ok(())
}

/// `bytes` of memory with every page written, so it is resident.
fn hold(bytes: u64) -> Result<Vec<u8>> {
    let n = usize::try_from(bytes).context("too much memory for this machine")?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(n)
        .with_context(|| format!("cannot allocate {} MiB", bytes >> 20))?;
    v.resize(n, 0);
    // resize may map zero pages lazily: write one byte per page.
    for i in (0..n).step_by(4096) {
        v[i] = 1;
    }
    Ok(v)
}

/// A busy thread: integer arithmetic the optimizer cannot remove.
fn spin() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    loop {
        for _ in 0..1_000_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
        std::hint::black_box(x);
    }
}
