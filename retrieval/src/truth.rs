//! Ground truth, computed once per data set and cached.
//!
//! The exact neighbours of a set's queries are kept beside the cache as
//! `.ivecs` (ids) and `.fvecs` (distances), named by the data set's key,
//! `k` and the metric; a later run with the same key reads them instead of
//! searching again. A cached file that cannot be read is recomputed.

use crate::exact::{knn, Metric, Neighbours};
use crate::formats::{read_truth, read_vectors, write_fvecs, write_ivecs};
use crate::{DataError, Vectors};
use std::path::{Path, PathBuf};

fn paths(dir: &Path, key: &str, k: usize, metric: Metric) -> (PathBuf, PathBuf) {
    let stem = format!("{key}.gt-k{k}-{}", metric.name());
    (
        dir.join(format!("{stem}.ivecs")),
        dir.join(format!("{stem}.fvecs")),
    )
}

/// Whether the truth came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cached,
    Computed,
}

/// The `k` exact neighbours of every query, from `dir`'s cache under
/// `key`, else computed (on `threads` threads) and cached.
pub fn ground_truth(
    dir: &Path,
    key: &str,
    base: &Vectors,
    queries: &Vectors,
    k: usize,
    metric: Metric,
    threads: usize,
) -> Result<(Neighbours, Source), DataError> {
    let (ids_path, dist_path) = paths(dir, key, k, metric);
    if let (Ok(t), Ok(d)) = (read_truth(&ids_path, k), read_vectors(&dist_path, None)) {
        if t.ids.len() == queries.len() * k && d.dim() == k && d.len() == queries.len() {
            let n = Neighbours {
                k,
                ids: t.ids,
                distances: d.as_slice().to_vec(),
            };
            return Ok((n, Source::Cached));
        }
    }
    let n = knn(base, queries, k, metric, threads);
    write_ivecs(&ids_path, n.k, &n.ids)?;
    let d =
        Vectors::new(n.k.max(1), n.distances.clone()).map_err(|e| DataError::bad(&dist_path, e))?;
    write_fvecs(&dist_path, &d)?;
    Ok((n, Source::Computed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{Mixture, Set};

    #[test]
    fn ground_truth_is_computed_once_then_read_from_the_cache() {
        let dir = std::env::temp_dir().join(format!("em-gt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let m = Mixture {
            dim: 8,
            clusters: 2,
            spread: 0.5,
            seed: 4,
        };
        let base = m.generate(Set::Base, 500);
        let queries = m.generate(Set::Queries, 20);
        let key = m.key(Set::Base, 500);
        let (a, s1) = ground_truth(&dir, &key, &base, &queries, 5, Metric::L2, 1).unwrap();
        let (b, s2) = ground_truth(&dir, &key, &base, &queries, 5, Metric::L2, 1).unwrap();
        assert_eq!((s1, s2), (Source::Computed, Source::Cached));
        assert_eq!(a, b);
        // Another k or metric is another file.
        let (_, s3) = ground_truth(&dir, &key, &base, &queries, 3, Metric::L2, 1).unwrap();
        assert_eq!(s3, Source::Computed);
        // A damaged cache is recomputed.
        let (ids, _) = paths(&dir, &key, 5, Metric::L2);
        std::fs::write(&ids, b"junk").unwrap();
        let (c, s4) = ground_truth(&dir, &key, &base, &queries, 5, Metric::L2, 1).unwrap();
        assert_eq!((s4, c), (Source::Computed, a));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
