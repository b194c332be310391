//! `kernels: auto` (the default): each linear layer's batch-1 and
//! small-batch kernels chosen by measurement on this machine, not by
//! assumption.
//!
//! A batch-1 decode step is one matrix–vector product per weight, and
//! which kernel streams a weight at DRAM speed depends on the CPU: gemm
//! 0.19's `m = 1` path (an axpy through the destination) kept candle at
//! 52% of the bandwidth roof on an Intel Xeon, while the AMD EPYC machines
//! this engine was first tuned on hid that loop (issue 17). The candidates
//! for each f32 panel-major weight are gemm and [`crate::gemv`]'s register
//! kernel; both compute the same sums on the same layout, so the choice
//! changes speed only.
//!
//! Batched decode (2 to [`crate::gemv::ROWS`] rows) has its own pair:
//! gemm and [`crate::gemv::rows`]. gemm walks a panel in 16-column slivers
//! straight from memory and waited on DRAM at batch 8 on an AMD EPYC (four
//! times its batch-1 time). The pair is timed at 8 rows, the matrices'
//! batched-decode size and the middle of the range, and the winner serves
//! the whole range: one more measurement per shape instead of one per
//! batch size, at the risk that the order flips at 2 or 16 rows on some
//! CPU (on the EPYC the register kernel won from 2 to 16). Prefill (more
//! than `ROWS` rows) always uses gemm's micro-kernels.
//!
//! How a shape is timed: on the weight itself, inside the model's own
//! thread pool, with random input rows; two warm-up calls each, then
//! [`RUNS`] rounds that alternate the two kernels (so drift from a busy
//! neighbour hits both), each call preceded by a read of twice the
//! last-level cache, so the weight comes from memory as it does in a
//! decode step that streams the whole model. The median per kernel
//! decides; a tie keeps gemm. About 0.2–0.6 s per distinct shape, both
//! pairs (GPT-2 has five), once per machine. The
//! eviction buffer is freed before the load returns, and the harness
//! resets the peak-RSS mark after loading, so neither a cell's load
//! memory nor its peak includes it.
//!
//! Choices are cached per machine key ([`engine_kit::machine_key`]),
//! thread count, candle release and kernel revision in
//! `<cache>/kernels/candle-<hash>.json`, as the host's roofline calibration
//! and the torch engine's `matmul: auto` are, so later loads measure
//! nothing. The model's `describe()` lists each shape's kernel, both
//! medians, and whether they were measured at this load or read from the
//! cache. `kernels: gemv` and `kernels: fused` force one kernel.

use crate::matmul::Weight;
use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Timed rounds per shape (each round times both kernels once).
pub const RUNS: usize = 7;

/// Bumped when a candidate kernel changes, so cached choices are redone.
const KERNELS_REV: u32 = 2;

/// Rows of the input the small-batch pair is timed at.
pub const SMALL_BATCH: usize = 8;

/// Which kernels run the decode products (1 to [`crate::gemv::ROWS`]
/// rows) on f32 panel weights; prefill stays on gemm whatever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Measured per shape (cached per machine).
    Auto,
    /// gemm 0.19 at every batch (the engine's kernels before `auto`).
    Gemm,
    /// [`crate::gemv`]'s register kernels: [`crate::gemv::panel`] at
    /// batch 1, [`crate::gemv::rows`] up to [`crate::gemv::ROWS`] rows.
    Gemv,
}

/// One weight shape's choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Input features.
    pub k: usize,
    /// Output features.
    pub n: usize,
    /// `gemv` or `gemm`.
    pub kernel: String,
    /// Median microseconds of one cold-cache call of each kernel (none
    /// when an option forced the kernel).
    pub gemv_us: Option<f64>,
    pub gemm_us: Option<f64>,
    /// `rows` or `gemm`: the kernel of 2..=[`crate::gemv::ROWS`]-row
    /// products.
    pub small_kernel: String,
    /// Median microseconds of one cold-cache call at [`SMALL_BATCH`] rows.
    pub rows_us: Option<f64>,
    pub gemm_small_us: Option<f64>,
    /// Whether this load measured it (`false`: read from the cache).
    #[serde(skip)]
    pub measured_now: bool,
}

/// The batch-1 kernel policy of one model's load, shared by its pool's
/// threads, with the choices it made.
#[derive(Debug)]
pub struct Plan {
    mode: Policy,
    file: PathBuf,
    cached: Vec<Choice>,
    made: Mutex<Vec<Choice>>,
    flush: Mutex<Option<engine_kit::evict::Evictor>>,
}

thread_local! {
    static PLAN: RefCell<Option<Arc<Plan>>> = const { RefCell::new(None) };
}

/// Makes weights built on the current thread follow `plan` (`None`: gemm,
/// as for weights built outside an engine's pool).
pub fn set_plan(plan: Option<Arc<Plan>>) {
    PLAN.with(|p| *p.borrow_mut() = plan);
}

/// Runs `f` with no plan on the current thread (weights built in it use
/// gemm), then restores the thread's plan.
pub fn without_plan<R>(f: impl FnOnce() -> R) -> R {
    let saved = PLAN.with(|p| p.borrow_mut().take());
    let r = f();
    set_plan(saved);
    r
}

/// Whether `w`'s batch-1 and small-batch products should use the
/// register kernels (`(gemv, rows)`), by the current thread's plan.
/// Called by [`Weight::new`] for f32 panels.
pub(crate) fn register_kernels(w: &Weight) -> Result<(bool, bool)> {
    match PLAN.with(|p| p.borrow().clone()) {
        None => Ok((false, false)),
        Some(plan) => plan.choose(w),
    }
}

impl Plan {
    /// A plan for a pool of `threads` threads; `Auto` reads this machine's
    /// cached choices.
    pub fn new(mode: Policy, threads: usize) -> Arc<Self> {
        Self::with_cache(mode, cache_file(threads))
    }

    /// A plan whose choices are cached in `file`.
    pub fn with_cache(mode: Policy, file: PathBuf) -> Arc<Self> {
        let cached = if mode == Policy::Auto {
            read_cache(&file)
        } else {
            Vec::new()
        };
        Arc::new(Plan {
            mode,
            file,
            cached,
            made: Mutex::new(Vec::new()),
            flush: Mutex::new(None),
        })
    }

    fn choose(&self, w: &Weight) -> Result<(bool, bool)> {
        let Weight::Panels { k, n, .. } = *w else {
            return Ok((false, false));
        };
        let known = |c: &&Choice| c.k == k && c.n == n;
        let made = self.made.lock().map_err(|_| poisoned())?;
        if let Some(c) = made.iter().find(known) {
            return Ok(c.registers());
        }
        drop(made);
        let forced = |kernel: &str, small: &str| Choice {
            k,
            n,
            kernel: kernel.into(),
            gemv_us: None,
            gemm_us: None,
            small_kernel: small.into(),
            rows_us: None,
            gemm_small_us: None,
            measured_now: false,
        };
        let choice = match (self.mode, self.cached.iter().find(known)) {
            (Policy::Gemm, _) => forced("gemm", "gemm"),
            (Policy::Gemv, _) => forced("gemv", "rows"),
            (Policy::Auto, Some(c)) => c.clone(),
            (Policy::Auto, None) => self.measure(w, k, n)?,
        };
        let chosen = choice.registers();
        self.made.lock().map_err(|_| poisoned())?.push(choice);
        Ok(chosen)
    }

    /// Times both pairs on `w` (see the module docs).
    fn measure(&self, w: &Weight, k: usize, n: usize) -> Result<Choice> {
        let (mut gemv, mut gemm) = (w.clone(), w.clone());
        gemv.set_gemv(true);
        gemm.set_gemv(false);
        let (gemv_us, gemm_us) = self.time_pair(&gemv, &gemm, 1, k)?;
        let (mut rows, mut gemm) = (w.clone(), w.clone());
        rows.set_rows(true);
        gemm.set_rows(false);
        let (rows_us, gemm_small_us) = self.time_pair(&rows, &gemm, SMALL_BATCH, k)?;
        let pick = |ours: f64, theirs: f64, name: &str| {
            if ours < theirs { name } else { "gemm" }.to_string()
        };
        Ok(Choice {
            k,
            n,
            kernel: pick(gemv_us, gemm_us, "gemv"),
            gemv_us: Some(gemv_us),
            gemm_us: Some(gemm_us),
            small_kernel: pick(rows_us, gemm_small_us, "rows"),
            rows_us: Some(rows_us),
            gemm_small_us: Some(gemm_small_us),
            measured_now: true,
        })
    }

    /// Median microseconds of `ours` and `theirs` on an `m`-row input,
    /// alternated over [`RUNS`] rounds with the caches evicted before each
    /// call.
    fn time_pair(&self, ours: &Weight, theirs: &Weight, m: usize, k: usize) -> Result<(f64, f64)> {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        for _ in 0..2 {
            ours.matmul(&x)?;
            theirs.matmul(&x)?;
        }
        let (mut a, mut b) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
        for round in 0..RUNS {
            // alternate which goes first, so neither always follows the other
            let order = if round % 2 == 0 {
                [(ours, &mut a), (theirs, &mut b)]
            } else {
                [(theirs, &mut b), (ours, &mut a)]
            };
            for (w, times) in order {
                self.evict_caches()?;
                let t = Instant::now();
                drop(w.matmul(&x)?);
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok((median(&mut a), median(&mut b)))
    }

    /// Reads a buffer of twice the last-level cache.
    fn evict_caches(&self) -> Result<()> {
        let mut flush = self.flush.lock().map_err(|_| poisoned())?;
        flush
            .get_or_insert_with(engine_kit::evict::Evictor::new)
            .evict();
        Ok(())
    }

    /// Ends the load: frees the eviction buffer and caches what was
    /// measured (a cache that cannot be written only costs the next load a
    /// measurement).
    pub fn finish(&self) {
        if let Ok(mut f) = self.flush.lock() {
            *f = None;
        }
        let Ok(made) = self.made.lock() else { return };
        if self.mode != Policy::Auto || !made.iter().any(|c| c.measured_now) {
            return;
        }
        // merged with what other processes cached since this load began
        let file = &self.file;
        let mut all = read_cache(file);
        for c in made.iter().filter(|c| c.measured_now) {
            all.retain(|o| (o.k, o.n) != (c.k, c.n));
            all.push(c.clone());
        }
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(text) = serde_json::to_string_pretty(&all) {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let tmp = file.with_extension(format!("{}-{nanos}.tmp", std::process::id()));
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, file);
            }
        }
    }

    /// What `describe()` says: the policy and each shape's choice.
    pub fn describe(&self) -> serde_json::Value {
        let made = self.made.lock().map(|m| m.clone()).unwrap_or_default();
        let by = match self.mode {
            Policy::Gemm => "forced: kernels fused (gemm)",
            Policy::Gemv => "forced: kernels gemv (register kernels)",
            Policy::Auto if made.iter().any(|c| c.measured_now) => "auto: measured at load",
            Policy::Auto => "auto: measured earlier on this machine (cached)",
        };
        let shapes: Vec<_> = made
            .iter()
            .map(|c| {
                serde_json::json!({
                    "k": c.k, "n": c.n, "kernel": c.kernel,
                    "gemv_us": c.gemv_us, "gemm_us": c.gemm_us,
                    "small_batch_kernel": c.small_kernel,
                    "rows_us": c.rows_us, "gemm_small_us": c.gemm_small_us,
                })
            })
            .collect();
        serde_json::json!({ "by": by, "shapes": shapes })
    }
}

impl Choice {
    /// `(gemv, rows)`: whether batch-1 and small-batch products use the
    /// register kernels.
    fn registers(&self) -> (bool, bool) {
        (self.kernel == "gemv", self.small_kernel == "rows")
    }
}

/// The choices cached in `file` (none when it is missing or unreadable).
fn read_cache(file: &std::path::Path) -> Vec<Choice> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<Choice>>(&t).ok())
        .unwrap_or_default()
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("kernel auto-tuning: a thread panicked while choosing".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
}

/// The cache file of choices for `threads` threads on this machine.
pub fn cache_file(threads: usize) -> PathBuf {
    let id = format!(
        "{}\n{threads}\n{}\n{KERNELS_REV}\n{:?}",
        engine_kit::machine_key(),
        crate::CANDLE_VERSION,
        DType::F32
    );
    engine_kit::cache_dir().join("kernels").join(format!(
        "candle-{:016x}.json",
        engine_kit::fnv1a(id.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache file of this test's own (removed first).
    fn private_cache(name: &str) -> PathBuf {
        let f = std::env::temp_dir().join(format!(
            "em-candle-autotune-{name}-{}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&f);
        f
    }

    #[test]
    fn the_policy_follows_the_mode_and_auto_measures_each_shape_once() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (96, 200), &dev)?;
        // no plan: gemm, as before
        assert!(!Weight::new(&w)?.gemv() && !Weight::new(&w)?.rows());
        let file = private_cache("policy");
        for (mode, want) in [(Policy::Gemv, true), (Policy::Gemm, false)] {
            let plan = Plan::with_cache(mode, file.clone());
            set_plan(Some(plan.clone()));
            let built = Weight::new(&w)?;
            assert_eq!((built.gemv(), built.rows()), (want, want));
            set_plan(None);
            assert!(plan.describe()["by"]
                .as_str()
                .unwrap()
                .starts_with("forced"));
            plan.finish();
            assert!(!file.exists(), "a forced kernel is not cached");
        }
        // auto, nothing cached: measured once, then reused within the load
        let plan = Plan::with_cache(Policy::Auto, file.clone());
        set_plan(Some(plan.clone()));
        let first = Weight::new(&w)?.gemv();
        assert_eq!(Weight::new(&w)?.gemv(), first);
        set_plan(None);
        let made = plan.made.lock().unwrap().clone();
        assert_eq!(made.len(), 1, "{made:?}");
        let c = &made[0];
        assert_eq!((c.k, c.n), (96, 200));
        let (v, m) = (c.gemv_us.unwrap(), c.gemm_us.unwrap());
        assert!(v > 0.0 && m > 0.0);
        assert_eq!(c.kernel == "gemv", v < m);
        let (r, g) = (c.rows_us.unwrap(), c.gemm_small_us.unwrap());
        assert!(r > 0.0 && g > 0.0);
        assert_eq!(c.small_kernel == "rows", r < g);
        let d = plan.describe();
        assert_eq!(d["by"], "auto: measured at load");
        assert_eq!(d["shapes"][0]["kernel"], c.kernel.as_str());
        assert_eq!(
            d["shapes"][0]["small_batch_kernel"],
            c.small_kernel.as_str()
        );
        // finishing caches it; the next load reads it and measures nothing
        plan.finish();
        assert!(plan.flush.lock().unwrap().is_none(), "buffer freed");
        let next = Plan::with_cache(Policy::Auto, file.clone());
        set_plan(Some(next.clone()));
        assert_eq!(Weight::new(&w)?.gemv(), first);
        set_plan(None);
        assert!(next.flush.lock().unwrap().is_none(), "nothing was timed");
        assert_eq!(
            next.describe()["by"],
            "auto: measured earlier on this machine (cached)"
        );
        let _ = std::fs::remove_file(&file);
        Ok(())
    }

    #[test]
    fn a_cached_choice_is_used_as_written() -> Result<()> {
        let w = Tensor::randn(0f32, 1.0, (32, 70), &Device::Cpu)?;
        for kernel in ["gemv", "gemm"] {
            let file = private_cache(kernel);
            let c = Choice {
                k: 32,
                n: 70,
                kernel: kernel.into(),
                gemv_us: Some(1.0),
                gemm_us: Some(2.0),
                small_kernel: if kernel == "gemv" { "gemm" } else { "rows" }.into(),
                rows_us: Some(2.0),
                gemm_small_us: Some(1.0),
                measured_now: false,
            };
            std::fs::write(&file, serde_json::to_string(&[c]).unwrap()).unwrap();
            let plan = Plan::with_cache(Policy::Auto, file.clone());
            set_plan(Some(plan.clone()));
            let built = Weight::new(&w)?;
            // the two choices are independent
            assert_eq!(built.gemv(), kernel == "gemv");
            assert_eq!(built.rows(), kernel == "gemm");
            set_plan(None);
            let _ = std::fs::remove_file(&file);
        }
        // an unreadable cache is no cache
        let file = private_cache("broken");
        std::fs::write(&file, "{ not json").unwrap();
        assert!(Plan::with_cache(Policy::Auto, file.clone())
            .cached
            .is_empty());
        let _ = std::fs::remove_file(&file);
        Ok(())
    }

    #[test]
    fn the_cache_file_depends_on_the_thread_count() {
        assert_ne!(cache_file(1), cache_file(2));
        assert!(cache_file(2)
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with("candle-") && f.ends_with(".json")));
    }
}
