//! Helpers for the end-to-end tests: locate the release-built binary and
//! plugins, stage plugin folders, run the CLI.
//!
//! The tests drive the real `engine-matrix` binary and real plugin
//! libraries, which `./scripts/test` builds (`cargo build --release
//! --workspace`) before `cargo test --release --workspace`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder holding the binary and plugins of this build profile
/// (the test executable lives in its `deps/`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

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
    Command::new(binary())
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

/// `engine-matrix run MATRIX --out RUN_DIR`; asserts it succeeded.
pub fn run_matrix(matrix: &Path, plugins: &Path, run_dir: &Path) -> Output {
    let o = run(
        &[
            "run",
            matrix.to_str().expect("utf-8 path"),
            "--out",
            run_dir.to_str().expect("utf-8 path"),
        ],
        plugins,
    );
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    o
}
