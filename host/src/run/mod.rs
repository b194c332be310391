//! Running a matrix: [`runner`] (the `run` command: the plan, the loop
//! over cells, the run folder), [`worker`] (one process per engine, so a
//! crashing engine costs its own cells only), [`cell`] (one cell: load,
//! measure, classify), [`retrieval`] (one retrieval cell: data, index,
//! searches), [`launch`] (servers the harness starts for `launch:`
//! engines), [`shard`] (`run --shard`: this machine's share of the cells)
//! and [`tune`] (the `tune` command: trials as cells).

pub mod cell;
pub mod launch;
pub mod retrieval;
pub mod runner;
pub mod shard;
pub mod tune;
pub mod worker;
