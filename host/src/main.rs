//! The `engine-matrix` command line: a thin layer over the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use engine_matrix::{matrix::Matrix, plugins, runner};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "engine-matrix",
    version,
    about = "Which LLM inference engine is fastest for your model, workload and hardware"
)]
struct Cli {
    /// Folder holding engine plugins (default: $ENGINE_MATRIX_PLUGINS, then the binary's folder).
    #[arg(long, global = true, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Print full diagnostics (e.g. abi_stable's layout report).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a test matrix and write results to a run folder.
    Run {
        matrix: PathBuf,
        /// Run folder (default: reports/<matrix name>-<UTC time>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Apply each scenario's `quick:` overrides (minutes, not hours).
        #[arg(long)]
        quick: bool,
        /// Run only these engines (repeatable).
        #[arg(long, value_name = "ENGINE", num_args = 1..)]
        only: Vec<String>,
        /// Seconds without any token after which an engine counts as hung.
        #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
        stall_timeout: f64,
    },
    /// List the plugins found, with their info or their load error.
    Engines {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a matrix without running it.
    Validate { matrix: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dir = plugins::plugin_dir(cli.plugins.as_deref());
    match cli.command {
        Command::Run {
            matrix,
            out,
            quick,
            only,
            stall_timeout,
        } => {
            let report = runner::run(&runner::RunOptions {
                matrix,
                out,
                quick,
                only,
                plugin_dir: dir,
                verbose: cli.verbose,
                stall: Duration::from_secs_f64(stall_timeout.max(1.0)),
                progress: true,
            })?;
            println!("{}", report.markdown);
            let cells = &report.summary.cells;
            let count = |s| cells.iter().filter(|c| c.status == s).count();
            use engine_matrix::output::Status;
            eprintln!(
                "{} cells: {} ok, {} unsupported, {} failed; results in {}",
                cells.len(),
                count(Status::Ok),
                count(Status::Unsupported),
                count(Status::Failed),
                report.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Engines { json } => engines(&dir, json, cli.verbose),
        Command::Validate { matrix } => {
            let m = Matrix::load(&matrix)?;
            let cells = m.cells(false);
            let quick = m.cells(true);
            let mut missing = 0;
            for (i, e) in m.engines.iter().enumerate() {
                if let Err(err) = plugins::find(&dir, &e.plugin) {
                    eprintln!(
                        "warning: {}: engine '{}': {err}",
                        m.locate(&format!("engines[{i}].plugin")),
                        e.name
                    );
                    missing += 1;
                }
            }
            println!(
                "{}: valid; {} cells ({} with --quick), {} engines ({} plugins not found), {} models",
                matrix.display(),
                cells.len(),
                quick.len(),
                m.engines.len(),
                missing,
                m.models.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn engines(dir: &std::path::Path, json: bool, verbose: bool) -> Result<ExitCode> {
    let files = plugins::discover(dir)
        .map_err(|e| anyhow::anyhow!("cannot read plugin folder {}: {e}", dir.display()))?;
    let mut rows = Vec::new();
    for f in &files {
        match plugins::load(f) {
            Ok(l) => {
                let info = engine_matrix::info_json(&l.info);
                if !json {
                    let i = &l.info;
                    let join = |v: &engine_api::abi_stable::std_types::RVec<
                        engine_api::abi_stable::std_types::RString,
                    >| {
                        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    };
                    println!("{} ({})", i.name, f.path.display());
                    println!(
                        "  engine {} · runtime {} · engine-api {}",
                        i.engine_version, i.runtime_version, l.api_version
                    );
                    println!("  devices: {}", join(&i.devices));
                    println!(
                        "  dtypes: {} · quantizations: {}",
                        join(&i.dtypes),
                        join(&i.quantizations)
                    );
                    println!("  capabilities: {}", join(&i.capabilities));
                }
                rows.push(serde_json::json!({"plugin": f.name, "path": f.path, "info": info}));
            }
            Err(e) => {
                if !json {
                    println!("{} ({})", f.name, f.path.display());
                    println!(
                        "  error: {}",
                        if verbose { e.verbose() } else { e.to_string() }
                    );
                }
                rows.push(
                    serde_json::json!({"plugin": f.name, "path": f.path, "error": e.to_string()}),
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if files.is_empty() {
        println!("no plugins in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
