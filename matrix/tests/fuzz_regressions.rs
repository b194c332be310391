//! Regression tests for the matrix parser: the inputs the fuzzer
//! (`fuzz/`, see fuzz/README.md) found, kept in
//! `tests/fuzz-regressions/matrix/`, and generated adversarial inputs that
//! attack the same guarantees. For each, `Matrix::parse` (then `cells` and
//! `locate`) must return, `Ok` or `Err`, without panicking, within
//! [`TIME_LIMIT`] and without allocating more than [`MEMORY_LIMIT`]; the
//! inputs that must be refused are, with a message naming the problem.
//!
//! Files are read as bytes and decoded as lossy UTF-8, as the fuzz target
//! does. A new crash goes into the folder; when it must be refused, add its
//! expected message to [`EXPECT`].

use engine_matrix_format::{Matrix, MatrixError, MAX_CELLS};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Generous: the slowest input takes well under a second in release.
const TIME_LIMIT: Duration = Duration::from_secs(30);
/// Peak memory one input may allocate (a real matrix takes kilobytes; the
/// largest accepted expansions take tens of MiB).
const MEMORY_LIMIT: usize = 512 << 20;
/// Above this the allocator fails (and the test process aborts) rather than
/// let a regression take the machine's memory.
const HARD_LIMIT: usize = 2 << 30;

/// Counts live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        if live > HARD_LIMIT {
            LIVE.fetch_sub(layout.size(), Relaxed);
            return std::ptr::null_mut();
        }
        PEAK.fetch_max(live, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One test at a time, so that the peak is its input's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an input must give.
#[derive(Clone, Copy, Debug)]
enum Expect<'a> {
    /// Parses.
    Ok,
    /// Is refused with a message containing this.
    Err(&'a str),
}

/// The files of `tests/fuzz-regressions/matrix/` with an expectation
/// beyond "returns without panicking".
const EXPECT: &[(&str, Expect<'static>)] = &[
    // Found by the `matrix_structured` fuzz target (out of memory: aliases
    // were copied without limit).
    (
        "fuzz-structured-alias-bomb.yaml",
        Expect::Err("more than 100000 YAML nodes once its aliases are expanded"),
    ),
    // Hand-made.
    (
        "billion-laughs.yaml",
        Expect::Err("more than 100000 YAML nodes once its aliases are expanded"),
    ),
    (
        "alias-bomb-in-axis.yaml",
        Expect::Err("more than 100000 YAML nodes once its aliases are expanded"),
    ),
    (
        "axes-product-10-billion.yaml",
        Expect::Err("scenarios[0].axes: up to 10000000000 combinations"),
    ),
    (
        "quick-axes-product.yaml",
        Expect::Err("scenarios[0].quick: with --quick, up to 1000000000 combinations"),
    ),
    (
        "cells-over-limit-across-scenarios.yaml",
        Expect::Err("bring the matrix over the limit of 100000 cells"),
    ),
    (
        "excludes-times-combinations.yaml",
        Expect::Err("scenarios[0].exclude: 100000 combinations x 200 exclude and include"),
    ),
    (
        "huge-numbers.yaml",
        Expect::Err("scenarios[0].axes.batch_size[0]: expected a positive integer, got 4294967296"),
    ),
    (
        "hex-with-sign.yaml",
        Expect::Err(r#"scenarios[0].input_tokens: expected a positive integer, got "0x+10""#),
    ),
    ("surrogate-escape.yaml", Expect::Err("invalid YAML")),
    ("non-utf8-and-escapes.yaml", Expect::Ok),
    ("deep-nesting.yaml", Expect::Err("invalid YAML: ")),
];

/// Parses `text` on a thread of its own and checks what comes back: no
/// panic, in time, within memory, and as `expect` says.
fn check(name: &str, text: String, expect: Option<Expect<'_>>) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    PEAK.store(LIVE.load(Relaxed), Relaxed);
    let base = LIVE.load(Relaxed);
    let worker = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let path = Path::new("fuzz-regressions/matrix.yaml");
            let outcome = Matrix::parse(&text, path).map(|m| {
                let full = m.cells(false).len();
                let quick = m.cells(true).len();
                for field in ["name", "engines[0].options", "scenarios[0].axes", "x[1]"] {
                    assert!(m.locate(field).starts_with("fuzz-regressions/matrix.yaml"));
                }
                (full, quick)
            });
            let _ = tx.send(outcome.map_err(|e| {
                if let MatrixError::At { line, column, .. } = &e {
                    assert!(*line >= 1 && *column >= 1, "{e}");
                }
                e.to_string()
            }));
        })
        .unwrap();
    let outcome = match rx.recv_timeout(TIME_LIMIT) {
        Ok(outcome) => outcome,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: Matrix::parse took more than {TIME_LIMIT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = worker.join().expect_err("no outcome, no panic");
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name}: Matrix::parse panicked: {msg}")
        }
    };
    worker.join().unwrap();
    let took = start.elapsed();
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    assert!(
        peak <= MEMORY_LIMIT,
        "{name}: allocated {} MiB at the peak (limit {} MiB)",
        peak >> 20,
        MEMORY_LIMIT >> 20
    );
    eprintln!(
        "{name}: {took:.2?}, peak {} KiB: {}",
        peak >> 10,
        match &outcome {
            Ok((full, quick)) => format!("ok, {full} cells ({quick} with --quick)"),
            Err(e) => e.clone(),
        }
    );
    match (expect, outcome) {
        (None, _) => {}
        (Some(Expect::Ok), Ok(_)) => {}
        (Some(Expect::Ok), Err(e)) => panic!("{name}: expected it to parse, got: {e}"),
        (Some(Expect::Err(want)), Err(e)) => {
            assert!(
                e.contains(want),
                "{name}: expected an error with `{want}`, got: {e}"
            )
        }
        (Some(Expect::Err(want)), Ok(_)) => {
            panic!("{name}: parsed, expected an error with `{want}`")
        }
    }
}

#[test]
fn fuzz_regressions_return_in_time_without_panicking() {
    let _serial = serial();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/matrix");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for (name, _) in EXPECT {
        assert!(
            names.iter().any(|n| n == name),
            "{name} is missing from {}",
            dir.display()
        );
    }
    for (path, name) in files.iter().zip(&names) {
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let expect = EXPECT.iter().find(|(n, _)| n == name).map(|(_, e)| *e);
        check(name, text, expect);
    }
}

/// The matrix head every generated input shares: one model, two engines.
const HEAD: &str = "models:\n  - {name: m, weights: synthetic, config: tiny}\n\
                    engines:\n  - name: a\n  - name: b\nscenarios:\n";

/// A latency scenario with `axes` (YAML flow mapping body) and `extra` lines.
fn scenario(axes: &str, extra: &str) -> String {
    format!("{HEAD}  - name: s\n    kind: latency\n    axes: {{{axes}}}\n{extra}")
}

/// `[1, 2, ..., n]`
fn list(n: usize) -> String {
    let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

#[test]
fn deep_nesting_is_refused() {
    let _serial = serial();
    // saphyr-parser stops flow nesting at 256 levels itself, before the
    // loader sees more than 128.
    let flow = Some(Expect::Err("invalid YAML: "));
    let deep = Some(Expect::Err("invalid YAML: nesting deeper than 128 levels"));
    let nested = |open: &str, close: &str, depth: usize| {
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    };
    check("[[[...]]] x 100000", nested("[", "]", 100_000), flow);
    check("{a: {a: ...}} x 100000", nested("{a: ", "}", 100_000), flow);
    check("[[[...]]] x 200", nested("[", "]", 200), deep);
    // Block nesting: indentation makes the text quadratic in the depth.
    let text: String = (0..1000)
        .map(|i| format!("{}- x:\n", "  ".repeat(i)))
        .collect();
    check("- x:\n  - x: ... x 1000", text, deep);
}

#[test]
fn billion_laughs_are_refused() {
    let _serial = serial();
    // Ten levels of ten aliases each: 10^10 nodes once expanded.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        text.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 10].join(", ")));
    }
    check(
        "billion laughs",
        text,
        Some(Expect::Err(
            "more than 100000 YAML nodes once its aliases are expanded",
        )),
    );
    // The same with long strings: few nodes, much text.
    let long = "x".repeat(1 << 20);
    let text =
        format!("a: &a \"{long}\"\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b]\n");
    check(
        "alias text bomb",
        text,
        Some(Expect::Err(
            "more than 16 MiB of text once its aliases are expanded",
        )),
    );
    // Nested anchors cost what they hold, not exponentially more.
    let mut text = String::from(HEAD);
    text.push_str("  - name: s\n    kind: latency\n    engines: &e0 ");
    for i in 1..40 {
        text.push_str(&format!("[&e{i} "));
    }
    text.push('a');
    text.push_str(&"]".repeat(39));
    text.push('\n');
    check(
        "nested anchors",
        text,
        Some(Expect::Err("expected a string, got a list")),
    );
}

#[test]
fn axis_products_over_the_cell_limit_are_refused() {
    let _serial = serial();
    // 10 axes of 10 distinct values: 10^10 combinations, in 300 bytes.
    let keys = [
        "input_tokens",
        "output_tokens",
        "batch_size",
        "max_batch",
        "num_requests",
        "requests",
    ];
    let axes: Vec<String> = keys.iter().map(|k| format!("{k}: {}", list(100))).collect();
    check(
        "6 axes x 100 values",
        scenario(&axes.join(", "), ""),
        Some(Expect::Err(
            "scenarios[0].axes: up to 1000000000000 combinations (input_tokens 100 x",
        )),
    );
    // 10 axes of 8,000 values: 8000^10 combinations do not fit in a u128.
    let names = |prefix: &str| {
        let items: Vec<String> = (1..=8000).map(|i| format!("{prefix}{i}")).collect();
        format!("[{}]", items.join(", "))
    };
    let mut axes: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}: {}", list(8000)))
        .collect();
    axes.push(format!("concurrency: {}", list(8000)));
    axes.push(format!("duration_s: {}", list(8000)));
    axes.push(format!("label: {}", names("l")));
    axes.push(format!("quantization: {}", names("q")));
    check(
        "10 axes x 8000 values",
        scenario(&axes.join(", "), ""),
        Some(Expect::Err(
            "up to more than 10^38 combinations (input_tokens 8000 x",
        )),
    );
    // Exactly at the limit: 50,000 combinations x 2 engines.
    let text = scenario(
        &format!("input_tokens: {}, output_tokens: {}", list(500), list(100)),
        "",
    );
    check("at the limit", text.clone(), Some(Expect::Ok));
    let m = Matrix::parse(&text, Path::new("x.yaml")).unwrap();
    assert_eq!(m.cells(false).len(), MAX_CELLS);
    // One more is refused.
    let text = scenario(
        &format!("input_tokens: {}, output_tokens: {}", list(500), list(100)),
        "    include: [{duration_s: 1}]\n",
    );
    check(
        "one over the limit",
        text,
        Some(Expect::Err("up to 50001 combinations (input_tokens 500 x output_tokens 100 + 1 include entry) x 1 model x 2 engines = 100002 cells")),
    );
}

#[test]
fn large_lists_are_not_quadratic() {
    let _serial = serial();
    // 30,000 axis values, model names and mapping keys, each checked for
    // duplicates: hashing keeps these linear.
    let text = scenario(&format!("input_tokens: {}", list(30_000)), "");
    check("30000 axis values", text, Some(Expect::Ok));
    let models: String = (0..15_000)
        .map(|i| format!("  - {{name: m{i}, path: p}}\n"))
        .collect();
    let text = format!(
        "models:\n{models}engines: [{{name: a}}]\nscenarios:\n  - {{name: s, kind: latency, models: [m14999, m0]}}\n"
    );
    check("15000 models", text, Some(Expect::Ok));
    let keys: String = (0..30_000).map(|i| format!("  k{i}: {i}\n")).collect();
    let text = format!("{HEAD}  - {{name: s, kind: latency}}\nx:\n{keys}");
    check("30000 keys", text, Some(Expect::Err("unknown key `x`")));
    // Very long keys above many values: the span index is bounded.
    let key = "k".repeat(1 << 20);
    let values = vec!["1"; 80_000].join(", ");
    // (An explicit `?` key: a plain one ends at 1024 characters.)
    let text = format!("? {key}\n: [{values}]\n");
    check(
        "long key over many values",
        text,
        Some(Expect::Err("field paths add up to more than 64 MiB")),
    );
}
