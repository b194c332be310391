//! A sink that records everything, for engine tests: drive a model through
//! [`crate::spawn`] (or any [`engine_api::Model`]) and assert on what the
//! engine sent. Not for measurement: the host's own sink is the one that
//! timestamps.

use engine_api::abi_stable::sabi_trait::TD_Opaque;
use engine_api::abi_stable::std_types::RSlice;
use engine_api::ffi::{SinkFfi, SinkFfi_TO};
use engine_api::{Completion, EngineError, SinkBox, TokenEvent};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Every sink call, in arrival order.
#[derive(Default)]
pub struct Collect {
    /// One entry per `tokens` call.
    pub calls: Mutex<Vec<Vec<TokenEvent>>>,
    pub done: Mutex<Vec<Completion>>,
    pub errors: Mutex<Vec<(u64, EngineError)>>,
    cv: Condvar,
}

struct Handle(Arc<Collect>);

impl SinkFfi for Handle {
    fn tokens(&self, step: RSlice<'_, TokenEvent>) {
        lock(&self.0.calls).push(step.to_vec());
    }
    fn done(&self, c: Completion) {
        lock(&self.0.done).push(c);
        self.0.cv.notify_all();
    }
    fn error(&self, id: u64, e: EngineError) {
        lock(&self.0.errors).push((id, e));
        self.0.cv.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Collect {
    /// A new sink feeding this collector.
    pub fn sink(self: &Arc<Self>) -> SinkBox {
        SinkFfi_TO::from_value(Handle(self.clone()), TD_Opaque)
    }

    /// Waits until `n` requests ended (done or error); panics after 60 s.
    pub fn wait(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = lock(&self.done);
        while done.len() + lock(&self.errors).len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {n} completions");
            done = self
                .cv
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The tokens request `id` received, in order.
    pub fn tokens_of(&self, id: u64) -> Vec<u32> {
        lock(&self.calls)
            .iter()
            .flatten()
            .filter(|e| e.request_id == id)
            .map(|e| e.token)
            .collect()
    }
}

/// A fresh folder under the system temp dir, removed on drop (for engine
/// tests that write model folders).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("em-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
