//! The retrieval benchmark's data, independent of any index engine:
//!
//! * [`Vectors`]: row-major `f32` vectors of one dimension;
//! * [`synthetic`]: seeded Gaussian mixtures, L2-normalised, with queries
//!   drawn from the same mixture (never from the base set), any size;
//! * [`formats`]: the texmex files (`.fvecs`, `.ivecs`, `.bvecs`, as the
//!   SIFT and GIST sets ship) and `.npy`, with errors that name the file
//!   and the problem (truncated, a dimension that changes or differs from
//!   the one asked, NaNs, a ground truth with fewer neighbours than asked);
//! * [`exact`]: exact k-nearest neighbours by blocked matrix products
//!   (`gemm`) and a bounded heap per query: the ground truth, and the
//!   `flat` engine's search;
//! * [`recall`]: recall@k as ann-benchmarks computes it;
//! * [`truth`]: the ground truth of a data set, computed once and cached.
//!
//! Trade-off: vectors are held in memory as `f32` (1M × 384 is 1.5 GB);
//! memory-mapping would let larger sets in but ties the data's lifetime
//! to a file, and every index engine copies the vectors anyway.

pub mod exact;
pub mod formats;
pub mod recall;
pub mod synthetic;
pub mod truth;
mod vectors;

pub use exact::{Metric, Neighbours};
pub use vectors::Vectors;

/// Why a vector file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file is there but its content is wrong.
    #[error("{path}: {problem}")]
    Bad { path: String, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn bad(path: &std::path::Path, problem: impl Into<String>) -> DataError {
        DataError::Bad {
            path: path.display().to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> DataError {
        DataError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
