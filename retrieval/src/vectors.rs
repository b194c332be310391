//! Row-major vectors of one dimension.

/// `len()` vectors of `dim()` components, row after row.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    dim: usize,
    data: Vec<f32>,
}

impl Vectors {
    /// `data` holds whole rows of `dim` components.
    pub fn new(dim: usize, data: Vec<f32>) -> Result<Vectors, String> {
        if dim == 0 {
            return Err("dimension 0".into());
        }
        if !data.len().is_multiple_of(dim) {
            return Err(format!(
                "{} components are not whole vectors of dimension {dim}",
                data.len()
            ));
        }
        Ok(Vectors { dim, data })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.dim)
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Keeps the first `n` vectors.
    pub fn truncate(&mut self, n: usize) {
        self.data.truncate(n * self.dim);
    }

    /// Scales every vector to unit length (a zero vector stays zero).
    pub fn normalize(&mut self) {
        for row in self.data.chunks_exact_mut(self.dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }

    /// The first component that is NaN or infinite, as (vector, component).
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        let i = self.data.iter().position(|x| !x.is_finite())?;
        Some((i / self.dim, i % self.dim))
    }
}
