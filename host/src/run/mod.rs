//! Running a matrix: [`runner`] (the `run` command: the plan, the loop
//! over cells, the run folder), [`worker`] (one process per engine, so a
//! crashing engine costs its own cells only), [`cell`] (one cell: load,
//! measure, classify) and [`launch`] (servers the harness starts for
//! `launch:` engines).

pub mod cell;
pub mod launch;
pub mod runner;
pub mod worker;
