//! The search behind `engine-matrix tune`: which settings of an engine
//! are fastest for one cell of a matrix, under its constraints, and by how
//! much they beat the engine's defaults.
//!
//! * [`space`]: the options an engine declares tunable
//!   ([`engine_api::tunable`]), narrowed or fixed by the matrix.
//! * [`search`]: TPE proposals (the `optimizer` crate), never the same
//!   configuration twice, infeasible trials told as the worst loss.
//! * [`flow`]: explore at low fidelity, promote the best third to full
//!   fidelity (successive halving), validate the finalists against the
//!   defaults in interleaved, paired rounds, and pick by the bootstrap
//!   interval with a noise threshold, so that an advantage that is noise
//!   never wins.
//!
//! Pure: trials are run by an [`flow::Evaluator`] the caller supplies (the
//! host runs each as a cell in its worker process; the tests use a known
//! function with injected noise).

pub mod flow;
pub mod search;
pub mod space;

pub use engine_matrix_results::tune::{Request, TuneFile};
pub use flow::{
    Budget, Config, Evaluator, Fidelity, Outcome, Outcomes, Phase, Settings, Step, TrialRecord,
};
pub use space::Space;

/// Whether a larger value of `metric` is better (throughputs, goodput,
/// speed-ups, recall, agreement); latencies, memory, error rates and the
/// rest are better smaller.
pub fn higher_is_better(metric: &str) -> bool {
    matches!(
        metric,
        "output_throughput"
            | "request_throughput"
            | "total_token_throughput"
            | "goodput"
            | "goodput_pct"
            | "speedup"
            | "qps"
            | "recall"
            | "top1_agreement_pct"
    )
}

#[cfg(test)]
mod tests;
