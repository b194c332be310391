//! Running a matrix: [`runner`] (the `run` command: the plan, the loop
//! over cells, the run folder), [`worker`] (one process per engine, so a
//! crashing engine costs its own cells only), [`cell`] (one cell: load,
//! measure, classify), [`retrieval`] (one retrieval cell: data, index,
//! searches), [`launch`] (servers the harness starts for `launch:`
//! engines), [`shard`] (`run --shard`: this machine's share of the cells),
//! [`load_shard`] (`run --load-shard`: this generator's share of each
//! serving cell's arrivals) and [`tune`] (the `tune` command: trials as
//! cells).

pub mod cell;
pub mod launch;
pub mod load_shard;
pub mod retrieval;
pub mod runner;
pub mod shard;
pub mod tune;
pub mod worker;
