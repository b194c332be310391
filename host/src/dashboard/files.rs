//! Files of listed runs, by plain names only: what `runs/RUN/FILE`
//! may serve, and as what type.

use std::path::{Component, Path, PathBuf};

/// The path of `file` in run folder `run` under `dir`, if both name what
/// they should: a run folder directly under `dir`, and a file inside it
/// reached by plain names (no `..`, no hidden names, no absolute path),
/// still inside the folder once links are resolved.
pub fn resolve(dir: &Path, run: &str, file: &str) -> Option<PathBuf> {
    let plain = |p: &Path| {
        p.components().all(|c| match c {
            Component::Normal(n) => !n.to_string_lossy().starts_with('.'),
            _ => false,
        })
    };
    let run_path = Path::new(run);
    let file_path = Path::new(file);
    if run_path.components().count() != 1 || !plain(run_path) || !plain(file_path) {
        return None;
    }
    let folder = dir.join(run);
    if !folder.join("summary.json").is_file() {
        return None;
    }
    let folder = folder.canonicalize().ok()?;
    let target = folder.join(file_path).canonicalize().ok()?;
    (target.starts_with(&folder) && target.is_file()).then_some(target)
}

pub(crate) fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        Some("md" | "jsonl" | "yaml" | "log" | "txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_inside_listed_runs_resolve() {
        let tmp = std::env::temp_dir().join(format!("em-dash-{}", std::process::id()));
        let run = tmp.join("r1");
        std::fs::create_dir_all(run.join("charts")).unwrap();
        std::fs::write(run.join("summary.json"), "{}").unwrap();
        std::fs::write(run.join("report.html"), "x").unwrap();
        std::fs::write(run.join("charts/a.svg"), "x").unwrap();
        std::fs::write(tmp.join("secret"), "x").unwrap();
        std::fs::create_dir_all(tmp.join("nosummary")).unwrap();
        std::fs::write(tmp.join("nosummary/report.html"), "x").unwrap();
        assert!(resolve(&tmp, "r1", "report.html").is_some());
        assert!(resolve(&tmp, "r1", "charts/a.svg").is_some());
        for (r, f) in [
            ("r1", "../secret"),
            ("..", "secret"),
            ("r1", "/etc/passwd"),
            ("r1", ".hidden"),
            ("r1", "missing.html"),
            ("r1/charts", "a.svg"),
            ("nosummary", "report.html"),
            ("r1", "charts"),
        ] {
            assert_eq!(resolve(&tmp, r, f), None, "{r}/{f}");
        }
        // A link out of the run folder is refused once resolved.
        std::os::unix::fs::symlink(tmp.join("secret"), run.join("link")).unwrap();
        assert_eq!(resolve(&tmp, "r1", "link"), None);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
