//! `engine-matrix merge DIR... --out DIR`: one run folder (one summary, one
//! report) from the run folders of a sharded run (`run --shard I/N`).
//!
//! Refused, each time naming the shard: folders that are not shards,
//! shards of different plans (matrix, options, cells: the plan hash) or of
//! different engine-matrix builds, one shard given twice, two shards
//! holding the same cell, and missing shards (`--partial` merges what is
//! there and says what is missing).
//!
//! Machines: each shard's system, limits and times are kept (`merged` in
//! `summary.json`). Figures from different machines are never compared as
//! if they came from one: when the shards ran on more than one machine
//! class, every cell's engine is labelled with its class (`candle @ B`),
//! so tables and charts keep the classes apart, and a speedup is computed
//! only against the baseline engine on the same class (the report's
//! `baseline_of`). The merged run's `system` is the first shard's; the
//! report's Machines table lists them all.
//!
//! The run folders of load generators (`run --load-shard I/N`) are merged
//! the other way, each cell from all of them: see [`generators`].

use crate::output::{MergedShard, ResultLine, RunDir, ShardMark, Summary};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

pub mod generators;

/// What `merge` was asked.
pub struct MergeOptions {
    pub dirs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Merge even when shards are missing.
    pub partial: bool,
    /// Load generators: the largest error between their clocks (ms) for
    /// which the merged arrival pattern stands for the schedule.
    pub max_clock_error_ms: f64,
}

/// A merged run: where, and the shards missing (with `--partial`).
pub struct Merged {
    /// Load generators' runs, merged cell by cell.
    pub generators: bool,
    pub dir: PathBuf,
    pub summary: Summary,
    pub missing: Vec<u32>,
    pub markdown: String,
}

/// One shard as read.
struct Part {
    dir: PathBuf,
    summary: Summary,
    mark: ShardMark,
    lines: Vec<ResultLine>,
}

pub fn merge(opts: &MergeOptions) -> Result<Merged> {
    if opts.dirs.is_empty() {
        bail!("merge needs the shards' run folders");
    }
    let mut read = Vec::new();
    for d in &opts.dirs {
        read.push(read_run(d)?);
    }
    if read.iter().any(|r| r.summary.load_shard.is_some()) {
        return generators::merge(opts, read);
    }
    let mut parts = Vec::new();
    for r in read {
        parts.push(part(r)?);
    }
    parts.sort_by_key(|p| p.mark.index);
    let missing = check(&parts, opts.partial)?;
    let classes = classes(&parts);
    let labelled = classes
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        > 1;

    let first = &parts[0];
    let text = std::fs::read_to_string(first.dir.join("matrix.yaml"))
        .with_context(|| format!("cannot read {}/matrix.yaml", first.dir.display()))?;
    let mut dir = RunDir::create(&opts.out, &text, &first.summary.system)?;
    let mut summary = first.summary.clone();
    summary.shard = None;
    summary.cells.clear();
    summary.engines.clear();
    summary.command = std::env::args().collect();
    summary.merged = parts
        .iter()
        .map(|p| MergedShard {
            mark: p.mark.clone(),
            dir: p.dir.display().to_string(),
            system: p.summary.system.clone(),
            limits: p.summary.limits.clone(),
            started_at: p.summary.started_at.clone(),
            finished_at: p.summary.finished_at.clone(),
            complete: p.summary.complete,
            stopped: p.summary.stopped.clone(),
        })
        .collect();
    (summary.started_at, summary.finished_at) = times(parts.iter().map(|p| &p.summary));
    summary.complete = missing.is_empty() && parts.iter().all(|p| p.summary.complete);
    summary.stopped = stopped(&parts, &missing);
    for p in &mut parts {
        let index = p.mark.index;
        let label = |engine: &str| {
            if labelled {
                format!("{engine} @ {}", classes[&index])
            } else {
                engine.to_string()
            }
        };
        for e in &p.summary.engines {
            let name = label(&e.name);
            if !summary.engines.iter().any(|x| x.name == name) {
                let mut e = e.clone();
                e.name = name;
                summary.engines.push(e);
            }
        }
        for mut line in std::mem::take(&mut p.lines) {
            if labelled {
                let c = &mut line.result.cell;
                let old = format!("/{}/", c.engine);
                c.engine = label(&c.engine);
                c.id = c.id.replacen(&old, &format!("/{}/", c.engine), 1);
            }
            dir.append(&line)?;
            summary
                .cells
                .push(crate::output::summary_cell(&line.result));
        }
    }
    finish(dir, summary, missing, false)
}

/// The merged run's start (the earliest part's) and end (the latest, when
/// every part has one).
fn times<'a>(summaries: impl Iterator<Item = &'a Summary> + Clone) -> (String, Option<String>) {
    let started = summaries
        .clone()
        .map(|s| s.started_at.clone())
        .min()
        .unwrap_or_default();
    let finished = summaries
        .map(|s| s.finished_at.clone())
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    (started, finished)
}

/// Grades the merged run, writes its summary and report.
fn finish(
    dir: RunDir,
    mut summary: Summary,
    missing: Vec<u32>,
    generators: bool,
) -> Result<Merged> {
    engine_matrix_grade::regrade(&mut summary);
    dir.write_summary(&summary)?;
    let markdown = match crate::report::write_summary(&summary, &dir.path) {
        Ok(w) => w.markdown,
        Err(e) => {
            eprintln!(
                "warning: report not written ({:#}); run `engine-matrix report {}` to retry",
                anyhow::Error::from(e),
                dir.path.display()
            );
            crate::report::markdown(&summary)
        }
    };
    Ok(Merged {
        generators,
        dir: dir.path.clone(),
        summary,
        missing,
        markdown,
    })
}

/// A run folder as read: its summary and result lines.
pub(crate) struct Read {
    pub dir: PathBuf,
    pub summary: Summary,
    pub lines: Vec<ResultLine>,
}

/// A shard: a run folder with its shard mark.
fn part(r: Read) -> Result<Part> {
    let Some(mark) = r.summary.shard.clone() else {
        bail!(
            "{}: not a shard (it was not run with --shard I/N)",
            r.dir.display()
        );
    };
    Ok(Part {
        dir: r.dir,
        summary: r.summary,
        mark,
        lines: r.lines,
    })
}

/// A run folder's summary and result lines.
fn read_run(dir: &Path) -> Result<Read> {
    let summary = Summary::read(&dir.join("summary.json"))
        .with_context(|| format!("{}: not a run folder", dir.display()))?;
    let file = dir.join("results.jsonl");
    let f =
        std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut lines = Vec::new();
    for (i, l) in std::io::BufReader::new(f).lines().enumerate() {
        let l = l.with_context(|| format!("cannot read {}", file.display()))?;
        if l.trim().is_empty() {
            continue;
        }
        // A line cut short by a crash ends the shard's results, as `run
        // --resume` would drop it.
        match serde_json::from_str::<ResultLine>(&l) {
            Ok(r) => lines.push(r),
            Err(e) => {
                eprintln!(
                    "warning: {}:{}: not a result line ({e}); ignored",
                    file.display(),
                    i + 1
                );
            }
        }
    }
    Ok(Read {
        dir: dir.to_path_buf(),
        summary,
        lines,
    })
}

/// The refusals; returns the missing shard indexes (allowed by `partial`).
fn check(parts: &[Part], partial: bool) -> Result<Vec<u32>> {
    let first = &parts[0];
    let m0 = &first.mark;
    let build = |s: &Summary| {
        format!(
            "engine-matrix {} ({})",
            s.system.engine_matrix_version, s.system.git_commit
        )
    };
    let mut seen: HashMap<u32, &Path> = HashMap::new();
    let mut owner: HashMap<(String, u32), u32> = HashMap::new();
    for p in parts {
        let m = &p.mark;
        let at = p.dir.display();
        if m.plan_sha256 != m0.plan_sha256 || m.count != m0.count {
            bail!(
                "{at}: shard {}/{} of another plan than {} (shard {}/{}): the matrix, its options or its cells differ (plan {} against {})",
                m.index, m.count, first.dir.display(), m0.index, m0.count,
                short(&m.plan_sha256), short(&m0.plan_sha256)
            );
        }
        if build(&p.summary) != build(&first.summary) {
            bail!(
                "{at}: shard {} ran {}, {} ran {}: figures of different builds are not merged",
                m.index,
                build(&p.summary),
                first.dir.display(),
                build(&first.summary)
            );
        }
        if let Some(other) = seen.insert(m.index, &p.dir) {
            bail!(
                "{at}: shard {} is given twice (also {})",
                m.index,
                other.display()
            );
        }
        for l in &p.lines {
            let key = (l.result.cell.id.clone(), l.result.repeat);
            if let Some(o) = owner.insert(key, m.index) {
                bail!(
                    "{at}: shard {} holds cell {} (repetition {}), which shard {o} holds too: overlapping shards",
                    m.index,
                    l.result.cell.id,
                    l.result.repeat
                );
            }
        }
    }
    let missing: Vec<u32> = (0..m0.count).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() && !partial {
        bail!(
            "shard{} {} of {} missing (merge --partial merges the others and says so)",
            if missing.len() > 1 { "s" } else { "" },
            missing
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            m0.count
        );
    }
    Ok(missing)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Each shard's machine label (`A`, `B`, ...) by index.
fn classes(parts: &[Part]) -> BTreeMap<u32, String> {
    let marks: Vec<&ShardMark> = parts.iter().map(|p| &p.mark).collect();
    let labels = engine_matrix_results::run::class_labels(&marks);
    marks.iter().map(|m| m.index).zip(labels).collect()
}

/// Why the merged run is not complete, if it is not.
fn stopped(parts: &[Part], missing: &[u32]) -> Option<String> {
    let mut why: Vec<String> = parts
        .iter()
        .filter_map(|p| {
            let m = &p.mark;
            p.summary
                .stopped
                .as_ref()
                .map(|s| format!("shard {} stopped: {s}", m.index))
                .or_else(|| {
                    (!p.summary.complete).then(|| format!("shard {} did not finish", m.index))
                })
        })
        .collect();
    if !missing.is_empty() {
        why.push(format!(
            "merged without shard{} {} (--partial)",
            if missing.len() > 1 { "s" } else { "" },
            missing
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}
