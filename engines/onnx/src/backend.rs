//! The KV cache and batching on top of an ONNX Runtime session with Hugging
//! Face's GPT-2 interface ([`crate::graph`]).
//!
//! # Cohorts: the cache stays in ORT's own tensors
//!
//! HF's interface takes the whole batch's cache as `[batch, heads, past,
//! head_dim]` tensors and returns them one position longer. Sequences that
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
//! # Prefill
//!
//! Prompts of equal length run as one batch (no padding); different
//! lengths run separately. When the graph has the `logits_from` input (the
//! graphs this plugin builds), prefill asks for the last position's logits
//! only.

use crate::graph::{past_names, present_names, LOGITS_FROM};
use engine_api::{EngineError, Logits, MemoryStats};
use engine_kit::gpt2::Config;
use engine_kit::{Backend, SeqId, MAX_PREFILL_TOKENS};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};
use std::cell::Cell;
use std::collections::HashMap;

struct Cohort {
    /// `None`: a freed sequence's row.
    rows: Vec<Option<SeqId>>,
    /// Left padding of each row.
    pads: Vec<usize>,
    /// Cache length including padding.
    width: usize,
    /// `2 * n_layer` values `[rows, heads, width, head_dim]`, key then
    /// value per layer.
    kv: Vec<DynValue>,
}

impl Cohort {
    fn live(&self) -> impl Iterator<Item = (usize, SeqId)> + '_ {
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(r, id)| id.map(|id| (r, id)))
    }
}

/// GPT-2 with an ONNX Runtime session behind [`engine_kit::Backend`].
pub struct OnnxBackend {
    session: Session,
    cfg: Config,
    past: Vec<String>,
    present: Vec<String>,
    has_logits_from: bool,
    cohorts: HashMap<u64, Cohort>,
    next_cohort: u64,
    seqs: HashMap<SeqId, u64>,
    weight_bytes: u64,
    peak_kv: Cell<u64>,
}

impl std::fmt::Debug for OnnxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxBackend")
            .field("config", &self.cfg)
            .field("live_sequences", &self.seqs.len())
            .field("cohorts", &self.cohorts.len())
            .finish()
    }
}

fn ort_err(what: &'static str) -> impl Fn(ort::Error) -> EngineError {
    move |e| EngineError::runtime(format!("onnxruntime {what}: {e}"))
}

impl OnnxBackend {
    /// Wraps a session whose interface was checked by the caller.
    pub fn new(
        session: Session,
        cfg: Config,
        has_logits_from: bool,
        weight_bytes: u64,
    ) -> Result<Self, EngineError> {
        let past = (0..cfg.n_layer)
            .flat_map(|l| {
                let (k, v) = past_names(l);
                [k, v]
            })
            .collect();
        let present = (0..cfg.n_layer)
            .flat_map(|l| {
                let (k, v) = present_names(l);
                [k, v]
            })
            .collect();
        let mut b = OnnxBackend {
            session,
            cfg,
            past,
            present,
            has_logits_from,
            cohorts: HashMap::new(),
            next_cohort: 0,
            seqs: HashMap::new(),
            weight_bytes,
            peak_kv: Cell::new(0),
        };
        engine_kit::warm_up(&mut b)?;
        b.peak_kv.set(0);
        Ok(b)
    }

    fn kv_row_bytes(&self) -> u64 {
        (2 * self.cfg.n_layer * self.cfg.n_embd * 4) as u64
    }

    fn used_kv(&self) -> u64 {
        let tokens: usize = self
            .cohorts
            .values()
            .map(|c| c.live().map(|(r, _)| c.width - c.pads[r]).sum::<usize>())
            .sum();
        tokens as u64 * self.kv_row_bytes()
    }

    fn note_peak(&self) {
        let used = self.used_kv();
        if used > self.peak_kv.get() {
            self.peak_kv.set(used);
        }
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
        let d = &self.cfg;
        let width = mask.len() / batch;
        let empty_shape = [batch, d.n_head, 0, d.head_dim()];
        let empty: [f32; 0] = [];
        let from = [-1i64];
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> =
            Vec::with_capacity(self.past.len() + 4);
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
        if last_only && self.has_logits_from {
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
        let v = self.cfg.vocab_size;
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

    fn new_cohort(&mut self, c: Cohort) {
        let id = self.next_cohort;
        self.next_cohort += 1;
        for (_, seq) in c.live() {
            self.seqs.insert(seq, id);
        }
        self.cohorts.insert(id, c);
    }

    /// The cohort that holds exactly `seqs`, in order, with no dead rows.
    fn exact_cohort(&self, seqs: &[(SeqId, u32)]) -> Option<u64> {
        let id = *self.seqs.get(&seqs.first()?.0)?;
        let c = self.cohorts.get(&id)?;
        (c.rows.len() == seqs.len() && c.rows.iter().zip(seqs).all(|(r, s)| *r == Some(s.0)))
            .then_some(id)
    }

    /// Copies the caches of `seqs` into a new cohort (left-padded).
    fn regroup(&mut self, seqs: &[(SeqId, u32)]) -> Result<u64, EngineError> {
        let d = &self.cfg;
        // (cohort, row, valid length) of each sequence
        let mut src = Vec::with_capacity(seqs.len());
        for &(id, _) in seqs {
            let cid = self.seqs[&id];
            let c = &self.cohorts[&cid];
            let row =
                c.rows.iter().position(|r| *r == Some(id)).ok_or_else(|| {
                    EngineError::runtime(format!("sequence {id} lost its cache row"))
                })?;
            src.push((cid, row, c.width - c.pads[row]));
        }
        let width = src.iter().map(|s| s.2).max().unwrap_or(0);
        let b = seqs.len();
        let (h, hd) = (d.n_head, d.head_dim());
        let mut kv = Vec::with_capacity(2 * d.n_layer);
        for t in 0..2 * d.n_layer {
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
            if let Some(c) = self.cohorts.get_mut(&cid) {
                c.rows[row] = None;
            }
        }
        self.cohorts
            .retain(|_, c| c.rows.iter().any(Option::is_some));
        let c = Cohort {
            rows: seqs.iter().map(|s| Some(s.0)).collect(),
            pads: src.iter().map(|s| width - s.2).collect(),
            width,
            kv,
        };
        let id = self.next_cohort;
        self.new_cohort(c);
        Ok(id)
    }
}

impl Backend for OnnxBackend {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn max_seq_len(&self) -> usize {
        self.cfg.n_positions
    }

    fn eos_token(&self) -> Option<u32> {
        self.cfg.eos_token_id
    }

    fn prefill(
        &mut self,
        seqs: &[(SeqId, &[u32])],
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        engine_kit::gpt2::check_new_sequences(&self.cfg, seqs, |id| self.seqs.contains_key(&id))?;
        let vocab = self.cfg.vocab_size;
        logits.clear();
        logits.resize(seqs.len() * vocab, 0.0);
        let groups = engine_kit::group_by_len(seqs);
        let mut rows = Vec::new();
        for (len, idx) in &groups {
            for chunk in idx.chunks((MAX_PREFILL_TOKENS / len).max(1)) {
                let b = chunk.len();
                let ids: Vec<i64> = chunk
                    .iter()
                    .flat_map(|&i| seqs[i].1.iter().map(|&t| t as i64))
                    .collect();
                let mask = vec![1i64; b * len];
                let positions: Vec<i64> = (0..b).flat_map(|_| 0..*len as i64).collect();
                let (l, kv) = self.run(b, *len, &ids, &mask, &positions, None, true)?;
                rows.clear();
                self.last_logits(&l, b, &mut rows)?;
                for (j, &i) in chunk.iter().enumerate() {
                    logits[i * vocab..(i + 1) * vocab]
                        .copy_from_slice(&rows[j * vocab..(j + 1) * vocab]);
                }
                self.new_cohort(Cohort {
                    rows: chunk.iter().map(|&i| Some(seqs[i].0)).collect(),
                    pads: vec![0; b],
                    width: *len,
                    kv,
                });
            }
        }
        self.note_peak();
        Ok(())
    }

    fn decode(&mut self, seqs: &[(SeqId, u32)], logits: &mut Vec<f32>) -> Result<(), EngineError> {
        if seqs.is_empty() {
            logits.clear();
            return Ok(());
        }
        for &(id, t) in seqs {
            if !self.seqs.contains_key(&id) {
                return Err(EngineError::invalid_argument(format!(
                    "decode of unknown sequence {id}"
                )));
            }
            if t as usize >= self.cfg.vocab_size {
                return Err(EngineError::invalid_argument(format!(
                    "sequence {id}: token {t} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        let cid = match self.exact_cohort(seqs) {
            Some(c) => c,
            None => self.regroup(seqs)?,
        };
        let c = self.cohorts.remove(&cid).expect("cohort exists");
        let b = seqs.len();
        if c.width >= self.cfg.n_positions {
            self.cohorts.insert(cid, c);
            return Err(EngineError::invalid_argument(format!(
                "a sequence would exceed the model's {} positions",
                self.cfg.n_positions
            )));
        }
        let ids: Vec<i64> = seqs.iter().map(|s| s.1 as i64).collect();
        let w = c.width + 1;
        let mut mask = vec![1i64; b * w];
        for (r, &pad) in c.pads.iter().enumerate() {
            mask[r * w..r * w + pad].fill(0);
        }
        let positions: Vec<i64> = c.pads.iter().map(|&p| (c.width - p) as i64).collect();
        let out = self.run(b, 1, &ids, &mask, &positions, Some(&c.kv), true);
        let (l, kv) = match out {
            Ok(v) => v,
            Err(e) => {
                self.cohorts.insert(cid, c);
                return Err(e);
            }
        };
        logits.clear();
        let r = self.last_logits(&l, b, logits);
        self.cohorts.insert(cid, Cohort { kv, width: w, ..c });
        self.note_peak();
        r
    }

    fn free(&mut self, seq: SeqId) {
        if let Some(cid) = self.seqs.remove(&seq) {
            if let Some(c) = self.cohorts.get_mut(&cid) {
                for r in c.rows.iter_mut().filter(|r| **r == Some(seq)) {
                    *r = None;
                }
                if c.rows.iter().all(Option::is_none) {
                    self.cohorts.remove(&cid);
                }
            }
        }
    }

    fn memory(&self) -> MemoryStats {
        let used = self.used_kv();
        let reserved: u64 = self
            .cohorts
            .values()
            .map(|c| (c.rows.len() * c.width) as u64 * self.kv_row_bytes())
            .sum();
        let peak = self.peak_kv.replace(used).max(used);
        MemoryStats {
            weight_bytes: self.weight_bytes,
            kv_cache_used_bytes: used,
            kv_cache_reserved_bytes: reserved,
            kv_cache_peak_bytes: peak,
        }
    }

    fn score(&mut self, tokens: &[u32]) -> Result<Logits, EngineError> {
        let n = tokens.len();
        if n == 0 || n > self.cfg.n_positions {
            return Err(EngineError::invalid_argument(format!(
                "score needs 1..={} tokens, got {n}",
                self.cfg.n_positions
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(EngineError::invalid_argument(format!(
                "token {t} is outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let mask = vec![1i64; n];
        let positions: Vec<i64> = (0..n as i64).collect();
        let (l, _) = self.run(1, n, &ids, &mask, &positions, None, false)?;
        let (shape, data) = l.try_extract_tensor::<f32>().map_err(ort_err("logits"))?;
        if shape[..] != [1, n as i64, self.cfg.vocab_size as i64] {
            return Err(EngineError::runtime(format!(
                "score: logits have shape {:?}, expected [1, {n}, {}]",
                &shape[..],
                self.cfg.vocab_size
            )));
        }
        Ok(Logits {
            rows: n as u32,
            vocab: self.cfg.vocab_size as u32,
            data: data.to_vec().into(),
        })
    }
}
