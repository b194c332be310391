//! The KV cache and batching on top of an ONNX Runtime session with Hugging
//! Face's export interface: GPT-2's ([`crate::graph`]) or the Llama
//! family's ([`crate::llama_graph`], the same plus RoPE's angles as
//! inputs).
//!
//! # Cohorts: the cache stays in ORT's own tensors
//!
//! HF's interface takes the whole batch's cache as `[batch, heads, past,
//! head_dim]` tensors (`heads`: the key/value heads of a grouped-query
//! model) and returns them one position longer. Sequences that
//! were prefilled or last decoded together form a **cohort**: their cache
//! is the `present.*` values of the cohort's last run, kept as ORT values.
//! When the next decode step asks for exactly the cohort's sequences, in
//! the same order, those values go straight back in as `past_key_values.*`
//! — no copy on our side (the graph's `Concat` still writes the longer
//! cache once per step, as in every HF-layout export). Static batching and
//! batch-1 decode always take this path.
//!
//! When the set changes (continuous batching admits or retires a
//! sequence, or sequences of different prompt lengths meet), the requested
//! sequences are **regrouped** into a new cohort: their rows are copied
//! into new tensors, left-padded to the longest, and the padding is masked
//! through `attention_mask` (position ids stay each sequence's own). That
//! costs one copy of those sequences' caches, the price HF-layout engines
//! pay on every step of continuous batching.
//!
//! A freed sequence's row stays in its cohort's tensors, marked dead, until
//! the cohort is regrouped or all its rows are dead; `memory()` reports it
//! as reserved, not used.
//!
//! The kit's [`Sequences`] table owns the sequences; a sequence's cache
//! there is a [`Row`], a handle to its row in a cohort, which a regroup
//! moves.
//!
//! # Prefill
//!
//! Prompts of equal length run as one batch (no padding); different
//! lengths run separately. When the graph has the `logits_from` input (the
//! graphs this plugin builds), prefill asks for the last position's logits
//! only.
//!
//! # RoPE
//!
//! A Llama graph built here takes `rope_cos` / `rope_sin` for every token
//! of the call; they are computed from the same position ids the graph
//! gets (each row's own, padding excluded) with
//! [`engine_kit::llama::Config::rope_cos_sin`], so the onnx engine's angles
//! are the other engines'. A graph without these inputs (an optimum
//! export) computes RoPE itself from `position_ids`.

use crate::graph::{past_names, present_names, LOGITS_FROM};
use crate::llama_graph::{ROPE_COS, ROPE_SIN};
use engine_api::EngineError;
use engine_kit::arch::ModelConfig;
use engine_kit::{CacheBytes, Kernels, Limits, Sequences};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};
use std::collections::HashMap;

/// A sequence's cache: its row in a cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    cohort: u64,
    row: usize,
}

struct Cohort {
    /// `false`: a freed sequence's row.
    live: Vec<bool>,
    /// Left padding of each row.
    pads: Vec<usize>,
    /// Cache length including padding.
    width: usize,
    /// `2 * layers` values `[rows, heads, width, head_dim]`, key then
    /// value per layer.
    kv: Vec<DynValue>,
}

/// The dimensions of a model's cache and logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub layers: usize,
    /// Heads in the cache: GPT-2's `n_head`, a Llama's
    /// `num_key_value_heads`.
    pub heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
}

impl Dims {
    /// `model`'s dimensions as its graph's inputs and outputs have them.
    pub fn of(model: &ModelConfig) -> Self {
        match model {
            ModelConfig::Gpt2(c) => Dims {
                layers: c.n_layer,
                heads: c.n_head,
                head_dim: c.head_dim(),
                vocab: c.vocab_size,
            },
            ModelConfig::Llama(c) => Dims {
                layers: c.num_hidden_layers,
                heads: c.kv_heads(),
                head_dim: c.head_dim(),
                vocab: c.vocab_size,
            },
        }
    }
}

/// Which of the optional inputs a session has (see [`crate::graph`] and
/// [`crate::llama_graph`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// `logits_from`: prefill can ask for the last position's logits.
    pub logits_from: bool,
    /// `rope_cos` and `rope_sin`: the engine supplies RoPE's angles.
    pub rope: bool,
}

/// A model's kernels on an ONNX Runtime session, with the cohorts that
/// hold the caches.
pub struct OnnxKernels {
    session: Session,
    model: ModelConfig,
    dims: Dims,
    past: Vec<String>,
    present: Vec<String>,
    extras: Extras,
    cohorts: HashMap<u64, Cohort>,
    next_cohort: u64,
    weight_bytes: u64,
    /// What [`Kernels::describe`] says (a JSON object, or empty).
    described: String,
}

/// What the scheduler drives: the kernels plus the kit's sequence table.
pub type OnnxBackend = Sequences<OnnxKernels>;

impl std::fmt::Debug for OnnxKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxKernels")
            .field("config", &self.model)
            .field("extras", &self.extras)
            .field("cohorts", &self.cohorts.len())
            .finish()
    }
}

fn ort_err(what: &'static str) -> impl Fn(ort::Error) -> EngineError {
    move |e| EngineError::runtime(format!("onnxruntime {what}: {e}"))
}

impl OnnxKernels {
    /// Wraps a session whose interface was checked by the caller.
    pub fn new(session: Session, model: ModelConfig, extras: Extras, weight_bytes: u64) -> Self {
        let dims = Dims::of(&model);
        let past = (0..dims.layers)
            .flat_map(|l| {
                let (k, v) = past_names(l);
                [k, v]
            })
            .collect();
        let present = (0..dims.layers)
            .flat_map(|l| {
                let (k, v) = present_names(l);
                [k, v]
            })
            .collect();
        OnnxKernels {
            session,
            model,
            dims,
            past,
            present,
            extras,
            cohorts: HashMap::new(),
            next_cohort: 0,
            weight_bytes,
            described: String::new(),
        }
    }

    /// Sets what the results record of the loaded model (a JSON object).
    pub fn with_description(mut self, described: String) -> Self {
        self.described = described;
        self
    }

    /// Cache bytes of one position of one sequence.
    fn kv_row_bytes(&self) -> u64 {
        let d = &self.dims;
        (2 * d.layers * d.heads * d.head_dim * 4) as u64
    }

    /// Runs the graph. `past`: the cache values (`None`: empty cache for
    /// `batch` rows). Returns the logits value and the present values.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        batch: usize,
        seq: usize,
        ids: &[i64],
        mask: &[i64],
        positions: &[i64],
        past: Option<&[DynValue]>,
        last_only: bool,
    ) -> Result<(DynValue, Vec<DynValue>), EngineError> {
        let d = self.dims;
        let width = mask.len() / batch;
        let empty_shape = [batch, d.heads, 0, d.head_dim];
        let empty: [f32; 0] = [];
        let from = [-1i64];
        let rope = match &self.model {
            ModelConfig::Llama(c) if self.extras.rope => {
                let at: Vec<usize> = positions.iter().map(|&p| p as usize).collect();
                Some(c.rope_cos_sin(&at))
            }
            _ => None,
        };
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> =
            Vec::with_capacity(self.past.len() + 6);
        let view = |shape: [usize; 2], data| {
            TensorRef::<i64>::from_array_view((shape, data)).map_err(ort_err("input"))
        };
        inputs.push(("input_ids", view([batch, seq], ids)?.into()));
        inputs.push(("attention_mask", view([batch, width], mask)?.into()));
        inputs.push(("position_ids", view([batch, seq], positions)?.into()));
        for (i, name) in self.past.iter().enumerate() {
            let v: SessionInputValue<'_> = match past {
                Some(p) => (&p[i]).into(),
                None => TensorRef::<f32>::from_array_view((empty_shape, &empty[..]))
                    .map_err(ort_err("input"))?
                    .into(),
            };
            inputs.push((name.as_str(), v));
        }
        if let Some((cos, sin)) = &rope {
            let shape = [batch, seq, d.head_dim / 2];
            for (name, data) in [(ROPE_COS, cos), (ROPE_SIN, sin)] {
                let v = TensorRef::<f32>::from_array_view((shape, data.as_slice()))
                    .map_err(ort_err("input"))?;
                inputs.push((name, v.into()));
            }
        }
        if last_only && self.extras.logits_from {
            let v = TensorRef::<i64>::from_array_view(([1usize], &from[..]))
                .map_err(ort_err("input"))?;
            inputs.push((LOGITS_FROM, v.into()));
        }
        let mut outs = self.session.run(inputs).map_err(ort_err("run"))?;
        let logits = outs
            .remove("logits")
            .ok_or_else(|| EngineError::runtime("the model returned no `logits`"))?;
        let mut present = Vec::with_capacity(self.present.len());
        for name in &self.present {
            present.push(
                outs.remove(name.as_str()).ok_or_else(|| {
                    EngineError::runtime(format!("the model returned no `{name}`"))
                })?,
            );
        }
        Ok((logits, present))
    }

    /// Appends the last position's logits of each of `batch` rows to `out`.
    fn last_logits(
        &self,
        logits: &DynValue,
        batch: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let (shape, data) = logits
            .try_extract_tensor::<f32>()
            .map_err(ort_err("logits"))?;
        let v = self.dims.vocab;
        if shape.len() != 3 || shape[0] as usize != batch || shape[2] as usize != v {
            return Err(EngineError::runtime(format!(
                "logits have shape {:?}, expected [{batch}, _, {v}]",
                &shape[..]
            )));
        }
        let s = shape[1] as usize;
        for r in 0..batch {
            let at = (r * s + s - 1) * v;
            out.extend_from_slice(&data[at..at + v]);
        }
        Ok(())
    }

    /// Runs `seq` new tokens for each of `batch` rows over cohort `c`'s
    /// past (taken out of the table as `cid`), writes each row's last
    /// logits into `logits` and puts the cohort back, grown by `seq`
    /// positions (unchanged when the run fails).
    #[allow(clippy::too_many_arguments)]
    fn run_on_cohort(
        &mut self,
        cid: u64,
        c: Cohort,
        (batch, seq): (usize, usize),
        ids: &[i64],
        mask: &[i64],
        positions: &[i64],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let (l, kv) = match self.run(batch, seq, ids, mask, positions, Some(&c.kv), true) {
            Ok(v) => v,
            Err(e) => {
                self.cohorts.insert(cid, c);
                return Err(e);
            }
        };
        logits.clear();
        let r = self.last_logits(&l, batch, logits);
        let width = c.width + seq;
        self.cohorts.insert(cid, Cohort { kv, width, ..c });
        r
    }

    /// Stores `c` and returns the handles of its rows.
    fn new_cohort(&mut self, c: Cohort) -> Vec<Row> {
        let cohort = self.next_cohort;
        self.next_cohort += 1;
        let rows = (0..c.live.len()).map(|row| Row { cohort, row }).collect();
        self.cohorts.insert(cohort, c);
        rows
    }

    /// Whether `caches` are exactly one cohort's rows, in order.
    fn is_exact_cohort(&self, caches: &[&mut Row]) -> bool {
        let Some(first) = caches.first() else {
            return false;
        };
        self.cohorts.get(&first.cohort).is_some_and(|c| {
            c.live.len() == caches.len()
                && caches
                    .iter()
                    .enumerate()
                    .all(|(i, r)| r.cohort == first.cohort && r.row == i)
        })
    }

    /// Copies the caches of `caches` into a new cohort (left-padded), marks
    /// their old rows dead and points the handles at the new rows.
    fn regroup(&mut self, caches: &mut [&mut Row]) -> Result<u64, EngineError> {
        let d = self.dims;
        // (cohort, row, valid length) of each sequence
        let src: Vec<(u64, usize, usize)> = caches
            .iter()
            .map(|r| {
                let c = &self.cohorts[&r.cohort];
                (r.cohort, r.row, c.width - c.pads[r.row])
            })
            .collect();
        let width = src.iter().map(|s| s.2).max().unwrap_or(0);
        let b = caches.len();
        let (h, hd) = (d.heads, d.head_dim);
        let mut kv = Vec::with_capacity(2 * d.layers);
        for t in 0..2 * d.layers {
            let mut buf = vec![0f32; b * h * width * hd];
            for (r, &(cid, row, len)) in src.iter().enumerate() {
                let c = &self.cohorts[&cid];
                let (_, data) = c.kv[t]
                    .try_extract_tensor::<f32>()
                    .map_err(ort_err("cache"))?;
                for head in 0..h {
                    let from = ((row * h + head) * c.width + c.pads[row]) * hd;
                    let to = ((r * h + head) * width + (width - len)) * hd;
                    buf[to..to + len * hd].copy_from_slice(&data[from..from + len * hd]);
                }
            }
            let v = Tensor::from_array(([b, h, width, hd], buf)).map_err(ort_err("cache"))?;
            kv.push(v.into_dyn());
        }
        for &(cid, row, _) in &src {
            self.release(Row { cohort: cid, row });
        }
        let rows = self.new_cohort(Cohort {
            live: vec![true; b],
            pads: src.iter().map(|s| width - s.2).collect(),
            width,
            kv,
        });
        for (handle, new) in caches.iter_mut().zip(&rows) {
            **handle = *new;
        }
        Ok(rows[0].cohort)
    }
}

/// The kit has checked every prompt, token and length before these run.
impl Kernels for OnnxKernels {
    type Cache = Row;

    fn describe(&self) -> String {
        self.described.clone()
    }

    fn limits(&self) -> Limits {
        self.model.limits()
    }

    fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    fn prefill(
        &mut self,
        prompts: &[&[u32]],
        logits: &mut Vec<f32>,
    ) -> Result<Vec<Row>, EngineError> {
        let (b, len) = (prompts.len(), prompts[0].len());
        let ids: Vec<i64> = prompts
            .iter()
            .flat_map(|p| p.iter().map(|&t| t as i64))
            .collect();
        let mask = vec![1i64; b * len];
        let positions: Vec<i64> = (0..b).flat_map(|_| 0..len as i64).collect();
        let (l, kv) = self.run(b, len, &ids, &mask, &positions, None, true)?;
        logits.clear();
        self.last_logits(&l, b, logits)?;
        Ok(self.new_cohort(Cohort {
            live: vec![true; b],
            pads: vec![0; b],
            width: len,
            kv,
        }))
    }

    fn decode(
        &mut self,
        tokens: &[u32],
        caches: &mut [&mut Row],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let cid = if self.is_exact_cohort(caches) {
            caches[0].cohort
        } else {
            self.regroup(caches)?
        };
        let c = self.cohorts.remove(&cid).expect("cohort exists");
        let b = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let w = c.width + 1;
        let mut mask = vec![1i64; b * w];
        for (r, &pad) in c.pads.iter().enumerate() {
            mask[r * w..r * w + pad].fill(0);
        }
        let positions: Vec<i64> = c.pads.iter().map(|&p| (c.width - p) as i64).collect();
        self.run_on_cohort(cid, c, (b, 1), &ids, &mask, &positions, logits)
    }

    fn score(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        let n = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mask = vec![1i64; n];
        let positions: Vec<i64> = (0..n as i64).collect();
        let (l, _) = self.run(1, n, &ids, &mask, &positions, None, false)?;
        let (shape, data) = l.try_extract_tensor::<f32>().map_err(ort_err("logits"))?;
        if shape[..] != [1, n as i64, self.dims.vocab as i64] {
            return Err(EngineError::runtime(format!(
                "score: logits have shape {:?}, expected [1, {n}, {}]",
                &shape[..],
                self.dims.vocab
            )));
        }
        logits.clear();
        logits.extend_from_slice(data);
        Ok(())
    }

    fn cache_bytes(&self, r: &Row) -> CacheBytes {
        let row = self.kv_row_bytes();
        self.cohorts
            .get(&r.cohort)
            .map_or(CacheBytes::default(), |c| CacheBytes {
                used: (c.width - c.pads[r.row]) as u64 * row,
                reserved: c.width as u64 * row,
            })
    }

    /// Dead rows stay allocated until their cohort is regrouped or empty.
    fn spare_cache_bytes(&self) -> u64 {
        self.cohorts
            .values()
            .map(|c| (c.live.iter().filter(|l| !**l).count() * c.width) as u64)
            .sum::<u64>()
            * self.kv_row_bytes()
    }

    fn can_fork(&self) -> bool {
        true
    }

    /// A new one-row cohort holding the row's first `len` valid positions.
    fn fork(&mut self, r: &Row, len: usize) -> Result<Row, EngineError> {
        let d = self.dims;
        let (h, hd) = (d.heads, d.head_dim);
        let c = self
            .cohorts
            .get(&r.cohort)
            .ok_or_else(|| EngineError::runtime("prefix cache copy: unknown cache"))?;
        let (pad, valid) = (c.pads[r.row], c.width - c.pads[r.row]);
        if len > valid {
            return Err(EngineError::runtime(format!(
                "prefix cache copy: {len} positions from a cache of {valid}"
            )));
        }
        let mut kv = Vec::with_capacity(2 * d.layers);
        for t in 0..2 * d.layers {
            let (_, data) = c.kv[t]
                .try_extract_tensor::<f32>()
                .map_err(ort_err("cache"))?;
            let mut buf = vec![0f32; h * len * hd];
            for head in 0..h {
                let from = ((r.row * h + head) * c.width + pad) * hd;
                buf[head * len * hd..][..len * hd].copy_from_slice(&data[from..from + len * hd]);
            }
            let v = Tensor::from_array(([1, h, len, hd], buf)).map_err(ort_err("cache"))?;
            kv.push(v.into_dyn());
        }
        let rows = self.new_cohort(Cohort {
            live: vec![true],
            pads: vec![0],
            width: len,
            kv,
        });
        Ok(rows[0])
    }

    /// One run of the graph with the remaining tokens over the cached ones
    /// (the graph's causal mask puts the `seq` queries after the past).
    fn extend(
        &mut self,
        cache: &mut Row,
        tokens: &[u32],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let cid = {
            let mut one = [&mut *cache];
            if self.is_exact_cohort(&one) {
                one[0].cohort
            } else {
                self.regroup(&mut one)?
            }
        };
        let c = self.cohorts.remove(&cid).expect("cohort exists");
        let m = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let (pad, w) = (c.pads[0], c.width + m);
        let mut mask = vec![1i64; w];
        mask[..pad].fill(0);
        let start = (c.width - pad) as i64;
        let positions: Vec<i64> = (start..start + m as i64).collect();
        self.run_on_cohort(cid, c, (1, m), &ids, &mask, &positions, logits)
    }

    fn release(&mut self, r: Row) {
        if let Some(c) = self.cohorts.get_mut(&r.cohort) {
            c.live[r.row] = false;
            if c.live.iter().all(|l| !l) {
                self.cohorts.remove(&r.cohort);
            }
        }
    }
}
