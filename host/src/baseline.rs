//! Named baselines: where `run --save-baseline NAME` keeps a run's
//! summary, and how `compare` and `run --baseline` find a run from a
//! folder, a `summary.json` or a name. The comparison itself is
//! `engine_matrix_reports::compare`.

use crate::output::Summary;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where named baselines live: `$ENGINE_MATRIX_BASELINES`, else
/// `reports/baselines` under the current folder.
pub fn baselines_dir() -> PathBuf {
    std::env::var_os("ENGINE_MATRIX_BASELINES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("reports").join("baselines"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!(
            "baseline name '{name}': use letters, digits, '-', '_' and '.' (not starting with '.')"
        );
    }
    Ok(())
}

/// Saves a run folder's summary as the baseline `name` (replacing it).
pub fn save_baseline(run_dir: &Path, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    let summary = Summary::read(&run_dir.join("summary.json"))?;
    let dir = baselines_dir().join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::output::write_json(&dir.join("summary.json"), &summary)?;
    if let Ok(m) = std::fs::read(run_dir.join("matrix.yaml")) {
        std::fs::write(dir.join("matrix.yaml"), m)?;
    }
    Ok(dir)
}

/// Resolves a run folder, a `summary.json` file or a saved baseline name.
pub fn resolve(arg: &str) -> Result<(PathBuf, Summary)> {
    let p = Path::new(arg);
    let file = if p.is_dir() {
        p.join("summary.json")
    } else if p.is_file() {
        p.to_path_buf()
    } else {
        let named = baselines_dir().join(arg).join("summary.json");
        if check_name(arg).is_ok() && named.is_file() {
            named
        } else {
            bail!(
                "'{arg}' is neither a run folder, a summary.json nor a saved baseline (looked in {})",
                baselines_dir().display()
            );
        }
    };
    let s = Summary::read(&file)?;
    Ok((file, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_names_are_checked() {
        assert!(check_name("main-2026.11").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
