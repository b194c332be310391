//! Vector files: the texmex formats and `.npy`.
//!
//! Texmex (`.fvecs`, `.ivecs`, `.bvecs`, as the SIFT1M and GIST1M sets
//! ship): no header; every record is a little-endian `i32` dimension `d`
//! followed by `d` components, `f32`, `i32` or `u8`. `.ivecs` holds
//! ground truth: one row of neighbour ids per query. `.npy`: a 2-D
//! `float32` array (rows are vectors), read by `ndarray-npy`.
//!
//! Every error names the file and the problem: a record cut short, a
//! dimension that changes from one record to the next or differs from the
//! one asked, a NaN or infinite component, a ground truth with fewer
//! neighbours per query than asked.

use crate::{DataError, Vectors};
use std::path::Path;

/// Texmex component types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texmex {
    F32,
    I32,
    U8,
}

impl Texmex {
    fn width(self) -> usize {
        match self {
            Texmex::F32 | Texmex::I32 => 4,
            Texmex::U8 => 1,
        }
    }
}

/// The type a file name's extension says, if it is a vector file.
pub fn kind_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "fvecs" => Some("fvecs"),
        "ivecs" => Some("ivecs"),
        "bvecs" => Some("bvecs"),
        "npy" => Some("npy"),
        _ => None,
    }
}

/// The records of a texmex file: its dimension and the raw component
/// bytes of the first `limit` records (all without a limit).
fn records(path: &Path, kind: Texmex, limit: Option<usize>) -> Result<(usize, Vec<u8>), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.len() < 4 {
        return Err(DataError::bad(
            path,
            format!("{} bytes: not even one record's dimension", bytes.len()),
        ));
    }
    let dim = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if dim <= 0 || dim > 1 << 20 {
        return Err(DataError::bad(path, format!("record 0: dimension {dim}")));
    }
    let dim = dim as usize;
    let record = 4 + dim * kind.width();
    let whole = bytes.len() / record;
    let n = limit.map_or(whole + 1, |l| l.min(whole + 1));
    let mut out = Vec::with_capacity(n.min(whole) * dim * kind.width());
    for i in 0..n {
        let at = i * record;
        if at == bytes.len() {
            break;
        }
        let r = &bytes[at..bytes.len().min(at + record)];
        if r.len() >= 4 {
            let d = i32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            if d as usize != dim {
                return Err(DataError::bad(
                    path,
                    format!("record {i}: dimension {d}, where record 0 has {dim}"),
                ));
            }
        }
        if r.len() < record {
            return Err(DataError::bad(
                path,
                format!(
                    "truncated: record {i} has {} of its {record} bytes (dimension {dim})",
                    r.len()
                ),
            ));
        }
        out.extend_from_slice(&r[4..]);
    }
    Ok((dim, out))
}

/// The first `limit` vectors (all without a limit) of an `.fvecs` or
/// `.bvecs` file, or of a 2-D float32 `.npy` file.
pub fn read_vectors(path: &Path, limit: Option<usize>) -> Result<Vectors, DataError> {
    let v = match kind_of(path) {
        Some("fvecs") => {
            let (dim, raw) = records(path, Texmex::F32, limit)?;
            let data = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Vectors::new(dim, data).map_err(|e| DataError::bad(path, e))?
        }
        Some("bvecs") => {
            let (dim, raw) = records(path, Texmex::U8, limit)?;
            Vectors::new(dim, raw.into_iter().map(f32::from).collect())
                .map_err(|e| DataError::bad(path, e))?
        }
        Some("npy") => {
            let mut v = read_npy(path)?;
            if let Some(l) = limit {
                v.truncate(l);
            }
            v
        }
        _ => {
            return Err(DataError::bad(
                path,
                "not a vector file: expected .fvecs, .bvecs or .npy",
            ))
        }
    };
    if v.is_empty() {
        return Err(DataError::bad(path, "no vectors"));
    }
    if let Some((i, j)) = v.first_non_finite() {
        return Err(DataError::bad(
            path,
            format!("vector {i}, component {j} is {}", v.row(i)[j]),
        ));
    }
    Ok(v)
}

fn read_npy(path: &Path) -> Result<Vectors, DataError> {
    use ndarray_npy::ReadNpyError;
    let a: ndarray::Array2<f32> = ndarray_npy::read_npy(path).map_err(|e| match e {
        ReadNpyError::Io(io) => DataError::io(path, io),
        ReadNpyError::MissingData => DataError::bad(
            path,
            "truncated: the data ends before the shape in its header",
        ),
        ReadNpyError::ExtraBytes(n) => DataError::bad(
            path,
            format!("{n} bytes after the data its header describes"),
        ),
        ReadNpyError::WrongNdim(_, got) => DataError::bad(
            path,
            format!("a {got}-D array; expected 2-D (one vector per row)"),
        ),
        other => DataError::bad(path, format!("not a 2-D float32 array: {other}")),
    })?;
    let (rows, dim) = a.dim();
    if dim == 0 || rows == 0 {
        return Err(DataError::bad(
            path,
            format!("shape ({rows}, {dim}): no vectors"),
        ));
    }
    let data = a.as_standard_layout().iter().copied().collect();
    Vectors::new(dim, data).map_err(|e| DataError::bad(path, e))
}

/// Fails unless `v` has dimension `dim`.
pub fn check_dim(path: &Path, v: &Vectors, dim: usize) -> Result<(), DataError> {
    if v.dim() != dim {
        return Err(DataError::bad(
            path,
            format!("dimension {}, where {dim} is asked", v.dim()),
        ));
    }
    Ok(())
}

/// A ground truth: `k` neighbour ids per query.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub k: usize,
    pub ids: Vec<u32>,
}

/// The first `k` ids of each row of an `.ivecs` ground truth; fails when
/// its rows hold fewer than `k`.
pub fn read_truth(path: &Path, k: usize) -> Result<Truth, DataError> {
    let (have, raw) = records(path, Texmex::I32, None)?;
    if have < k {
        return Err(DataError::bad(
            path,
            format!("{have} neighbours per query, fewer than the {k} asked (k)"),
        ));
    }
    let mut ids = Vec::with_capacity(raw.len() / 4 / have * k);
    for (i, row) in raw.chunks_exact(4 * have).enumerate() {
        for c in row.chunks_exact(4).take(k) {
            let id = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if id < 0 {
                return Err(DataError::bad(
                    path,
                    format!("query {i}: neighbour id {id}"),
                ));
            }
            ids.push(id as u32);
        }
    }
    Ok(Truth { k, ids })
}

/// Writes `rows` (each of the same length) as a texmex file of `kind`.
fn write_records<T: Copy>(
    path: &Path,
    dim: usize,
    rows: impl Iterator<Item = T>,
    width: usize,
    to_le: impl Fn(T) -> [u8; 4],
) -> Result<(), DataError> {
    let mut out = Vec::new();
    for (i, x) in rows.enumerate() {
        if i % dim == 0 {
            out.extend_from_slice(&(dim as i32).to_le_bytes());
        }
        out.extend_from_slice(&to_le(x)[..width]);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    std::fs::write(path, out).map_err(|e| DataError::io(path, e))
}

/// Writes vectors as `.fvecs`.
pub fn write_fvecs(path: &Path, v: &Vectors) -> Result<(), DataError> {
    write_records(
        path,
        v.dim(),
        v.as_slice().iter().copied(),
        4,
        f32::to_le_bytes,
    )
}

/// Writes `k` ids per row as `.ivecs`.
pub fn write_ivecs(path: &Path, k: usize, ids: &[u32]) -> Result<(), DataError> {
    write_records(
        path,
        k.max(1),
        ids.iter().map(|&i| i as i32),
        4,
        i32::to_le_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(std::path::PathBuf);

    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p = std::env::temp_dir().join(format!("em-retrieval-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Tmp(p)
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn msg<T: std::fmt::Debug>(r: Result<T, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    fn sample() -> Vectors {
        Vectors::new(3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5, -1.0, 0.0, 0.25]).unwrap()
    }

    #[test]
    fn fvecs_ivecs_and_bvecs_round_trip_and_read_a_prefix() {
        let t = Tmp::new("round");
        let f = t.0.join("base.fvecs");
        write_fvecs(&f, &sample()).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 3 * (4 + 12));
        assert_eq!(read_vectors(&f, None).unwrap(), sample());
        assert_eq!(read_vectors(&f, Some(2)).unwrap().len(), 2);
        assert_eq!(read_vectors(&f, Some(10)).unwrap().len(), 3);

        let g = t.0.join("gt.ivecs");
        write_ivecs(&g, 4, &[3, 1, 2, 0, 0, 1, 2, 3]).unwrap();
        let truth = read_truth(&g, 2).unwrap();
        assert_eq!(
            truth,
            Truth {
                k: 2,
                ids: vec![3, 1, 0, 1]
            }
        );

        let b = t.0.join("x.bvecs");
        let mut raw = Vec::new();
        for row in [[0u8, 7, 255], [1, 2, 3]] {
            raw.extend_from_slice(&3i32.to_le_bytes());
            raw.extend_from_slice(&row);
        }
        std::fs::write(&b, raw).unwrap();
        let v = read_vectors(&b, None).unwrap();
        assert_eq!(v.row(0), &[0.0, 7.0, 255.0]);
    }

    #[test]
    fn bad_files_are_named_with_their_problem() {
        let t = Tmp::new("bad");
        let f = t.0.join("base.fvecs");
        write_fvecs(&f, &sample()).unwrap();
        let mut bytes = std::fs::read(&f).unwrap();
        bytes.truncate(bytes.len() - 5);
        let cut = t.0.join("cut.fvecs");
        std::fs::write(&cut, &bytes).unwrap();
        let e = msg(read_vectors(&cut, None));
        assert!(e.starts_with(&cut.display().to_string()), "{e}");
        assert!(
            e.contains("truncated: record 2 has 11 of its 16 bytes"),
            "{e}"
        );
        // A prefix that stops before the cut is fine.
        assert_eq!(read_vectors(&cut, Some(2)).unwrap().len(), 2);

        let mut bytes = std::fs::read(&f).unwrap();
        bytes[16..20].copy_from_slice(&4i32.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let changed = t.0.join("changed.fvecs");
        std::fs::write(&changed, &bytes).unwrap();
        let e = msg(read_vectors(&changed, None));
        assert!(
            e.contains("record 1: dimension 4, where record 0 has 3"),
            "{e}"
        );

        let nan = t.0.join("nan.fvecs");
        write_fvecs(
            &nan,
            &Vectors::new(2, vec![1.0, 2.0, 3.0, f32::NAN]).unwrap(),
        )
        .unwrap();
        assert!(msg(read_vectors(&nan, None)).contains("vector 1, component 1 is NaN"));

        let e = msg(check_dim(&f, &sample(), 384));
        assert!(e.contains("dimension 3, where 384 is asked"), "{e}");

        let g = t.0.join("gt.ivecs");
        write_ivecs(&g, 5, &[0; 10]).unwrap();
        let e = msg(read_truth(&g, 10));
        assert!(
            e.contains("5 neighbours per query, fewer than the 10 asked"),
            "{e}"
        );

        let empty = t.0.join("empty.fvecs");
        std::fs::write(&empty, [1u8, 0]).unwrap();
        assert!(msg(read_vectors(&empty, None)).contains("2 bytes"));
        let other = t.0.join("x.csv");
        std::fs::write(&other, "1,2").unwrap();
        assert!(msg(read_vectors(&other, None)).contains("not a vector file"));
        let missing = t.0.join("missing.fvecs");
        assert!(msg(read_vectors(&missing, None)).contains("missing.fvecs"));
    }

    #[test]
    fn npy_files_read_with_their_shape_and_bad_ones_are_named() {
        let t = Tmp::new("npy");
        let p = t.0.join("v.npy");
        let a = ndarray::Array2::from_shape_vec((3, 3), sample().as_slice().to_vec()).unwrap();
        ndarray_npy::write_npy(&p, &a).unwrap();
        assert_eq!(read_vectors(&p, None).unwrap(), sample());
        assert_eq!(read_vectors(&p, Some(1)).unwrap().len(), 1);

        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 6);
        let cut = t.0.join("cut.npy");
        std::fs::write(&cut, &bytes).unwrap();
        let e = msg(read_vectors(&cut, None));
        assert!(e.contains("cut.npy") && e.contains("truncated"), "{e}");

        let one_d = t.0.join("flat.npy");
        ndarray_npy::write_npy(&one_d, &ndarray::Array1::<f32>::zeros(4)).unwrap();
        let e = msg(read_vectors(&one_d, None));
        assert!(e.contains("1-D array; expected 2-D"), "{e}");

        let f64s = t.0.join("f64.npy");
        ndarray_npy::write_npy(&f64s, &ndarray::Array2::<f64>::zeros((2, 2))).unwrap();
        assert!(msg(read_vectors(&f64s, None)).contains("not a 2-D float32 array"));
    }
}
