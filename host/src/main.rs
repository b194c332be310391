//! The `engine-matrix` command line: a thin layer over the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use engine_matrix::{matrix::Matrix, plugins, run::runner};
use engine_matrix_results::targets::Grade;
use std::path::{Path, PathBuf};
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
    Run(RunArgs),
    /// Show this machine's roofline limits (memory read bandwidth, f32
    /// matmul peak), measuring them if they are not cached yet.
    Calibrate {
        /// Measure again and replace the cached figures.
        #[arg(long)]
        force: bool,
    },
    /// Write report.html, report.md, summary.csv and charts/ for a run folder.
    Report { run_dir: PathBuf },
    /// Compare a candidate run against a baseline (run folders, summary.json
    /// files or saved baseline names); exit 1 on any regression.
    Compare(CompareArgs),
    /// List the plugins found, with their info or their load error.
    Engines {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a matrix without running it.
    Validate { matrix: PathBuf },
    /// Serve a local web page of every run under DIR (default `reports`):
    /// grade, state, cells, commit and machine, each run's report, and the
    /// table as CSV and JSON. Prints `dashboard on http://ADDR`.
    Dashboard {
        dir: Option<PathBuf>,
        /// Address to listen on (loopback unless --allow-remote).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0: any free one).
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// Allow a non-loopback --host (the page shows every run).
        #[arg(long)]
        allow_remote: bool,
    },
    /// List the preset matrices (the seeds' run types: quick, full,
    /// tok-throughput, cpu-only, rtx-4090, production, regression, ...),
    /// one line each, and the target profiles.
    Presets {
        /// The folder of matrices.
        #[arg(long, default_value = "matrices")]
        dir: PathBuf,
    },
    /// Model files: `model import FILE.gguf` writes a Hugging Face folder.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Generate a continuation of a text prompt with one engine, printed
    /// as it arrives, then its token and timing figures.
    Generate(GenerateArgs),
    /// One engine's perplexity of one model over the quality pass's text
    /// (ShareGPT replies, windows of --context scored on their second
    /// half, as llama.cpp's llama-perplexity does); --write-text writes
    /// the text for llama-perplexity -f.
    Perplexity(PerplexityArgs),
    /// Find one engine's best settings for one cell of a matrix: a
    /// model-based search over the options the engine declares tunable,
    /// then paired, interleaved validation against its defaults. Writes a
    /// run folder with every trial, tune.json, tuned.yaml and the report.
    Tune(TuneArgs),
    /// Join the run folders of a sharded run (`run --shard I/N`) into one
    /// run folder with one summary and report. Refuses shards of another
    /// plan or build, overlapping shards and missing ones (unless
    /// --partial); figures from different kinds of machine are labelled
    /// and never compared. Load generators' folders (`run --load-shard`)
    /// are joined cell by cell: each cell gets every generator's requests
    /// on a common clock, with each generator's lag and the clocks' error.
    Merge {
        /// The shards' (or load generators') run folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The merged run folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Merge the shards given even when some are missing (the run is
        /// then marked incomplete, naming them).
        #[arg(long)]
        partial: bool,
        /// Load generators: the largest error between their clocks (ms)
        /// for which the merged arrivals stand for the schedule; above it,
        /// or unknown, each merged cell says so.
        #[arg(long, value_name = "MS", default_value_t = engine_matrix::merge::generators::DEFAULT_MAX_CLOCK_ERROR_MS)]
        max_clock_error_ms: f64,
    },
    /// Write the job files that run a matrix as N shards on Slurm (a job
    /// array and a dependent merge) or Kubernetes (an Indexed Job and a
    /// merge Job), results on shared storage under --out.
    ScaleOut(ScaleOutArgs),
    /// Serve one engine over an OpenAI-compatible HTTP API (streaming
    /// /v1/completions and /v1/chat/completions), to measure an engine over
    /// HTTP; prints `listening on http://ADDR` once bound.
    Serve(ServeArgs),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Convert a GGUF file (llama architecture) into a Hugging Face model
    /// folder: config.json from its metadata, model.safetensors with
    /// every tensor dequantized under HF names, and the tokenizer files
    /// (tokenizer.json, tokenizer_config.json with the chat template,
    /// generation_config.json). Prints the folder.
    Import {
        /// The GGUF file.
        file: PathBuf,
        /// Weight dtype of the folder: f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// The folder to write (an earlier model folder there is
        /// replaced; a folder of other files is refused); default: the
        /// model cache, `<cache>/models/<file stem>-<dtype>`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a GGUF file at another GGUF type, for llama-server: `f32` and
    /// `f16` dequantize it here; any llama-quantize type (q8_0, q4_0,
    /// q4_1, q4_k_s, q4_k_m, q6_k, ...; q4_k means q4_k_s) quantizes that
    /// f32 file with llama.cpp's llama-quantize ($LLAMA_QUANTIZE, else
    /// beside $LLAMA_SERVER). Prints the file, its bits per weight and its
    /// tensor types.
    Quantize {
        /// The source GGUF file.
        file: PathBuf,
        /// The GGUF type to write.
        #[arg(long = "type", value_name = "TYPE")]
        ty: String,
        /// The file to write; default: the model cache,
        /// `<cache>/models/<file stem>-<type>.gguf` (reused while the
        /// source and llama-quantize are unchanged).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The matrix (omit with --resume, which uses the run folder's).
    #[arg(required_unless_present = "resume")]
    matrix: Option<PathBuf>,
    /// Continue an interrupted run in DIR: the cells it holds are kept,
    /// the others run (with the matrix and options it was started with).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "quick", "only", "repeat", "tuned", "settings", "shard"])]
    resume: Option<PathBuf>,
    /// Run the cells in this process instead of one worker process per
    /// engine (no protection from crashes; for debugging and profiling).
    #[arg(long)]
    in_process: bool,
    /// Longest a cell may take, model load included; the worker is
    /// killed and the cell recorded as failed.
    #[arg(long, default_value_t = 3600.0, value_name = "SECONDS")]
    cell_timeout: f64,
    /// Longest the whole run may take; then it stops like Ctrl-C.
    #[arg(long, value_name = "SECONDS")]
    run_timeout: Option<f64>,
    /// Run folder (default: reports/<matrix name>-<UTC time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Apply each scenario's `quick:` overrides (minutes, not hours).
    #[arg(long)]
    quick: bool,
    /// Run only these engines (repeatable).
    #[arg(long, value_name = "ENGINE", num_args = 1..)]
    only: Vec<String>,
    /// Run the engine a tuned.yaml (written by `engine-matrix tune`, or
    /// the tune folder holding one) was tuned on with its settings;
    /// repeatable, one per engine; wins over the matrix's `tuned:`.
    #[arg(long, value_name = "FILE|DIR")]
    tuned: Vec<PathBuf>,
    /// Run only shard I of N (from 0) of the cells, a deterministic share
    /// balanced by estimated cost that keeps an engine's cells of one
    /// model together; `auto` reads Slurm's SLURM_ARRAY_TASK_ID/COUNT or
    /// Kubernetes' JOB_COMPLETION_INDEX with ENGINE_MATRIX_SHARDS.
    /// `engine-matrix merge` joins the shards' run folders.
    #[arg(long, value_name = "I/N|auto")]
    shard: Option<String>,
    /// The name of this shard's kind of machine, for `merge`: figures are
    /// compared only within a class (default: the CPU, cores, memory and
    /// GPUs).
    #[arg(long, value_name = "NAME", requires = "shard")]
    machine_class: Option<String>,
    /// Be load generator I of N (from 0) of every serving cell: send
    /// arrivals I, I+N, ... of its schedule, so that N generators on N
    /// machines send one schedule to one server together; `auto` reads the
    /// index as --shard does. Needs --start-at; `engine-matrix merge`
    /// joins the generators' run folders into one cell per cell.
    #[arg(long, value_name = "I/N|auto", requires = "start_at", conflicts_with_all = ["shard", "resume"])]
    load_shard: Option<String>,
    /// The shared wall-clock start of the first measured iteration, the
    /// same on every generator: RFC 3339 (2026-12-07T10:00:00Z) or
    /// @SECONDS since 1970.
    #[arg(long, value_name = "TIME", requires = "load_shard")]
    start_at: Option<String>,
    /// Seconds from one measured iteration's shared start to the next's
    /// (default: the longest schedule plus 30 s, rounded up).
    #[arg(long, value_name = "SECONDS", requires = "load_shard")]
    slot_s: Option<f64>,
    /// Which settings engines with tuned ones run at: tuned (their own
    /// name), default (tuned settings ignored), or both (NAME and
    /// NAME-tuned side by side); replaces the matrix's `settings:`.
    #[arg(long, value_name = "WHICH", value_parser = ["tuned", "default", "both"])]
    settings: Option<String>,
    /// Seconds without any token after which an engine counts as hung.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    stall_timeout: f64,
    /// Run the matrix N times, engines interleaved (A B A B ...), for
    /// run-to-run confidence intervals and paired speedups.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Save this run as the named baseline (reports/baselines/NAME).
    #[arg(long, value_name = "NAME")]
    save_baseline: Option<String>,
    /// Compare this run against a saved baseline; exit 1 on a regression.
    #[arg(long, value_name = "NAME")]
    baseline: Option<String>,
    /// Noise threshold of --baseline, in percent.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    noise: f64,
    /// Skip the roofline calibration (no efficiency figures).
    #[arg(long)]
    no_calibrate: bool,
    /// Exit 0 even when cells failed (otherwise the exit status is 5;
    /// `unsupported` cells are results, never failures).
    #[arg(long)]
    allow_failures: bool,
    /// Exit 6 when a target of the matrix's `targets:` is missed
    /// (`acceptable` passes).
    #[arg(long)]
    fail_on_targets: bool,
    /// Exit 6 when the run's grade is below this one (EXCELLENT, GOOD,
    /// ACCEPTABLE, POOR), or when no target could be judged.
    #[arg(long, value_name = "GRADE", value_parser = parse_grade)]
    min_grade: Option<Grade>,
    /// Serve a live view of the run (and the history of the runs beside
    /// it) at ADDR, loopback port 8765 by default; prints the URL.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8765")]
    dashboard: Option<String>,
    /// Allow --dashboard on an address other machines can reach.
    #[arg(long, requires = "dashboard")]
    allow_remote: bool,
    /// Keep the dashboard up this long after the run ends (Ctrl-C stops
    /// it sooner).
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "SECONDS",
        requires = "dashboard"
    )]
    dashboard_linger: f64,
    /// Seconds during which an alert's cause raises no second alert.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    alert_cooldown: f64,
    /// Seconds without a token in a running cell that raise a stall alert.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    alert_stall: f64,
}

#[derive(Args)]
struct CompareArgs {
    baseline: String,
    candidate: String,
    /// Changes smaller than this are `no change`, in percent.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    noise: f64,
    /// Also refuse cells whose engine or runtime version differs.
    #[arg(long)]
    check_version: bool,
    /// Folder for compare.md, compare.html and charts/ (default: the
    /// candidate's run folder, or the current folder for a saved baseline).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ScaleOutArgs {
    /// `slurm` or `k8s`.
    #[arg(value_parser = ["slurm", "k8s"])]
    scheduler: String,
    /// The matrix.
    matrix: PathBuf,
    /// How many shards (array tasks, Indexed Job completions).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    shards: u32,
    /// The results root on storage every node sees: shard-I/, merged/,
    /// logs/.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Where to write the job files (default: --out).
    #[arg(long, value_name = "DIR")]
    files: Option<PathBuf>,
    /// The engine-matrix executable on the nodes (default: this one).
    #[arg(long, value_name = "PATH")]
    engine_matrix: Option<PathBuf>,
    /// The folder the jobs run in (default: the current one).
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// CPU cores per shard.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// GPUs per shard.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Slurm time limit per shard (e.g. 02:00:00).
    #[arg(long)]
    time: Option<String>,
    /// Slurm memory per shard (e.g. 16G).
    #[arg(long)]
    mem: Option<String>,
    /// Kubernetes: the container image.
    #[arg(long)]
    image: Option<String>,
    /// Kubernetes: the PersistentVolumeClaim holding --out.
    #[arg(long)]
    claim: Option<String>,
    /// Kubernetes: where the claim is mounted (default: --out).
    #[arg(long, value_name = "DIR")]
    mount: Option<PathBuf>,
    /// Kubernetes: the namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// The N tasks are load generators of one schedule against one
    /// server (`run --load-shard auto`), writing gen-I/, not shards of
    /// the cells.
    #[arg(long)]
    load_shard: bool,
    /// Load generators: seconds from submission to their shared start
    /// (it must cover queueing and start-up).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 120,
        requires = "load_shard"
    )]
    lead_s: u64,
    /// Options for every shard's `run`, after `--` (e.g. -- --quick).
    #[arg(last = true)]
    run_args: Vec<String>,
}

#[derive(Args)]
struct TuneArgs {
    /// The matrix (not with --resume).
    #[arg(required_unless_present = "resume")]
    matrix: Option<PathBuf>,
    /// The engine to tune (default: the matrix's only engine).
    #[arg(long, value_name = "ENGINE")]
    engine: Option<String>,
    /// The scenario whose cell is tuned (default: `tune: scenario`, or the
    /// engine's only scenario).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Part of the id of the one cell to tune, when the scenario has several.
    #[arg(long, value_name = "TEXT")]
    cell: Option<String>,
    /// What to optimise: a target metric (output_throughput, ttft_ms.p95,
    /// e2el_ms.p50, ...); default `tune: objective`, else output_throughput.
    #[arg(long, value_name = "METRIC")]
    objective: Option<String>,
    /// A constraint such as 'ttft_ms.p99<500' (repeatable); a trial that
    /// breaks one is infeasible.
    #[arg(long = "constraint", value_name = "METRIC<VALUE")]
    constraints: Vec<String>,
    /// Search budget: N trials (`40trials`) or a time (`20m`); default
    /// `tune: budget`, else 20trials.
    #[arg(long, value_name = "BUDGET")]
    budget: Option<String>,
    /// The run folder (default reports/tune-ENGINE-STAMP).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue an interrupted tuning in DIR: its trials are kept.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["matrix", "engine", "scenario", "cell", "objective", "constraints", "budget", "quick"])]
    resume: Option<PathBuf>,
    /// Tune the scenario's `quick:` cell.
    #[arg(long)]
    quick: bool,
    /// The search's seed.
    #[arg(long, default_value_t = 0x7E57)]
    seed: u64,
    /// Smallest improvement that counts, in percent, at the validation
    /// interval's conservative end.
    #[arg(long, default_value_t = 2.0, value_name = "PERCENT")]
    noise: f64,
    /// Longest a trial may take, model load included.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    cell_timeout: f64,
    /// Seconds without any token after which a trial's engine counts as
    /// hung (the trial is then infeasible).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    stall_timeout: f64,
    /// Run trials in this process (no protection from crashes).
    #[arg(long)]
    in_process: bool,
    /// Skip the roofline calibration.
    #[arg(long)]
    no_calibrate: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// The engine plugin, e.g. `candle`.
    #[arg(long, value_name = "PLUGIN")]
    engine: String,
    /// A Hugging Face model folder with a tokenizer.json, or a .gguf file
    /// (imported into the model cache first).
    #[arg(long, value_name = "PATH")]
    model: PathBuf,
    /// Tokens to generate at most (generation also stops at the model's
    /// end-of-sequence token).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: u32,
    /// Wrap the prompt in the model's chat template (one user message).
    #[arg(long)]
    chat: bool,
    /// Compute dtype.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Engine options as a JSON object, as a matrix's `options:`.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    options: String,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The prompt.
    prompt: String,
}

#[derive(Args)]
struct PerplexityArgs {
    /// The engine plugin, e.g. `candle`.
    #[arg(long, value_name = "PLUGIN")]
    engine: String,
    /// A Hugging Face model folder with a tokenizer.json, or a .gguf file
    /// (imported into the model cache first).
    #[arg(long, value_name = "PATH")]
    model: PathBuf,
    /// Compute dtype.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Weight quantization, as a matrix's `quantization:` (`gguf`: the
    /// GGUF's own blocks, on engines that run them).
    #[arg(long, default_value = "none")]
    quantization: String,
    /// Tokens evaluated (whole windows).
    #[arg(long, default_value_t = 16384)]
    tokens: usize,
    /// Window length.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// The ShareGPT file (default: the provisioned one).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Write the evaluated text to FILE (for llama-perplexity -f FILE).
    #[arg(long, value_name = "FILE")]
    write_text: Option<PathBuf>,
    /// Engine options as a JSON object, as a matrix's `options:`.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    options: String,
}

#[derive(Args)]
struct ServeArgs {
    /// The engine plugin, e.g. `candle`.
    #[arg(long, value_name = "PLUGIN")]
    engine: String,
    /// Engine options as a JSON object, as a matrix's `options:`.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    options: String,
    /// A preset synthetic config (gpt2, tiny; seed 0, as a matrix's
    /// `weights: synthetic`), a config.json, or a Hugging Face folder.
    #[arg(long, value_name = "SPEC")]
    model: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Largest number of sequences the engine decodes together.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_batch: u32,
    /// Batching policy: none, static or continuous.
    #[arg(long, default_value = "continuous", value_parser = parse_batch_policy)]
    batch_policy: engine_api::BatchPolicy,
    /// Compute dtype.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Threads of the HTTP runtime.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    http_threads: u32,
    /// For tests: hold each request's first token chunk until this
    /// many ms after the request arrived.
    #[arg(long, value_name = "MS")]
    inject_first_token_ms: Option<f64>,
    /// For tests: send later token chunks at least this many ms apart.
    #[arg(long, value_name = "MS")]
    inject_token_ms: Option<f64>,
}

fn parse_grade(s: &str) -> Result<Grade, String> {
    Grade::parse(s)
        .ok_or_else(|| format!("'{s}' is not a grade (EXCELLENT, GOOD, ACCEPTABLE, POOR)"))
}

/// `merge`: exit 0, or 5 when a merged cell failed (as `run`).
fn merge_command(opts: engine_matrix::merge::MergeOptions) -> Result<ExitCode> {
    let m = engine_matrix::merge::merge(&opts)?;
    println!("{}", m.markdown);
    let cells = &m.summary.cells;
    use engine_matrix::output::Status;
    let count = |s| cells.iter().filter(|c| c.status == s).count();
    eprintln!(
        "merged {} {}: {} cells: {} ok, {} unsupported, {} failed; results in {}",
        m.summary.merged.len(),
        if m.generators {
            "load generators"
        } else {
            "shards"
        },
        cells.len(),
        count(Status::Ok),
        count(Status::Unsupported),
        count(Status::Failed),
        m.dir.display()
    );
    if !m.missing.is_empty() {
        eprintln!(
            "incomplete: {}(s) {} missing (--partial)",
            if m.generators {
                "load generator"
            } else {
                "shard"
            },
            m.missing
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::from(if count(Status::Failed) > 0 {
        5
    } else {
        0
    }))
}

/// `scale-out`: writes the job files and says how to submit them.
fn scale_out_command(a: ScaleOutArgs) -> Result<ExitCode> {
    use engine_matrix::scale_out::{self, Scheduler};
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let abs = |p: PathBuf| if p.is_absolute() { p } else { cwd.join(p) };
    let files = scale_out::write(&scale_out::ScaleOut {
        scheduler: if a.scheduler == "slurm" {
            Scheduler::Slurm
        } else {
            Scheduler::Kubernetes
        },
        matrix: abs(a.matrix),
        shards: a.shards,
        out: abs(a.out),
        files: a.files.map(abs),
        engine_matrix: match a.engine_matrix {
            Some(p) => abs(p),
            None => {
                std::env::current_exe().context("cannot locate the engine-matrix executable")?
            }
        },
        workdir: a.workdir.map(abs).unwrap_or_else(|| cwd.clone()),
        run_args: a.run_args,
        cpus: a.cpus,
        gpus: a.gpus,
        partition: a.partition,
        time: a.time,
        mem: a.mem,
        image: a.image,
        claim: a.claim,
        mount: a.mount.map(abs),
        namespace: a.namespace,
        load_lead_s: a.load_shard.then_some(a.lead_s),
    })?;
    for f in &files {
        println!("{}", f.display());
    }
    eprintln!("submit with: {}", files[0].display());
    Ok(ExitCode::SUCCESS)
}

fn parse_batch_policy(s: &str) -> Result<engine_api::BatchPolicy, String> {
    engine_api::BatchPolicy::parse(s)
        .ok_or_else(|| format!("'{s}' is not a batch policy (none, static, continuous)"))
}

// Exit statuses: 0 success; 1 a regression against the baseline (`run
// --baseline`, `compare`); 2 an error (bad matrix, missing baseline, ...);
// 3 a worker process's own error; 4 the run stopped at --run-timeout; 5
// cells failed (`run` without --allow-failures); 6 targets missed or the
// grade below --min-grade (`run --fail-on-targets`, `--min-grade`); 130
// Ctrl-C. A run stopped early exits 4 or 130 whatever else happened, a
// regression exits 1 before failed cells are counted, and failed cells
// exit 5 before targets are.
const EXIT_REGRESSION: u8 = 1;
const EXIT_FAILED_CELLS: u8 = 5;
const EXIT_TARGETS: u8 = 6;

fn main() -> ExitCode {
    // A worker process (see engine_matrix::run::worker): not a user command.
    if std::env::args().nth(1).as_deref() == Some(engine_matrix::run::worker::SUBCOMMAND) {
        return match engine_matrix::run::worker::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e:#}");
                ExitCode::from(3)
            }
        };
    }
    // The resource-pressure child of a `pressure` cell: not a user command.
    if std::env::args().nth(1).as_deref() == Some(engine_matrix::pressure::SUBCOMMAND) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return match engine_matrix::pressure::serve(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pressure: {e:#}");
                ExitCode::from(3)
            }
        };
    }
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
        Command::Run(args) => run_command(args, dir, cli.verbose),
        Command::Calibrate { force } => calibrate(force),
        Command::Report { run_dir } => report(&run_dir),
        Command::Compare(args) => compare_command(args),
        Command::Engines { json } => engines(&dir, json, cli.verbose),
        Command::Serve(args) => serve_command(args, dir),
        Command::Tune(args) => tune_command(args, dir),
        Command::Merge {
            dirs,
            out,
            partial,
            max_clock_error_ms,
        } => merge_command(engine_matrix::merge::MergeOptions {
            dirs,
            out,
            partial,
            max_clock_error_ms,
        }),
        Command::ScaleOut(args) => scale_out_command(args),
        Command::Generate(args) => generate_command(args, dir),
        Command::Perplexity(args) => perplexity_command(args, dir),
        Command::Validate { matrix } => validate(&matrix, &dir),
        Command::Presets { dir } => presets(&dir),
        Command::Dashboard {
            dir,
            host,
            port,
            allow_remote,
        } => {
            engine_matrix::dashboard::run(engine_matrix::dashboard::Options {
                dir: dir.unwrap_or_else(|| PathBuf::from("reports")),
                host,
                port,
                allow_remote,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Model(ModelCommand::Import { file, dtype, out }) => {
            model_import(&file, &dtype, out)
        }
        Command::Model(ModelCommand::Quantize { file, ty, out }) => {
            model_quantize(&file, &ty, out.as_deref())
        }
    }
}

/// `tune`: the search, then what it found.
fn tune_command(a: TuneArgs, plugin_dir: PathBuf) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if !(a.noise.is_finite() && (0.0..100.0).contains(&a.noise)) {
        anyhow::bail!("--noise {}: a percentage in [0, 100)", a.noise);
    }
    let isolation = if a.in_process {
        runner::Isolation::InProcess
    } else {
        runner::Isolation::Workers(
            std::env::current_exe().context("cannot locate the engine-matrix executable")?,
        )
    };
    let opts = engine_matrix::run::tune::TuneOptions {
        matrix: a.matrix,
        resume: a.resume,
        engine: a.engine,
        scenario: a.scenario,
        cell: a.cell,
        objective: a.objective,
        constraints: a.constraints,
        budget: a.budget,
        out: a.out,
        quick: a.quick,
        seed: a.seed,
        noise: a.noise / 100.0,
        plugin_dir,
        isolation,
        cell_timeout: Some(Duration::from_secs_f64(a.cell_timeout.max(0.001))),
        stall_s: a.stall_timeout.max(1.0),
        calibrate: !a.no_calibrate,
        progress: std::io::stderr().is_terminal(),
    };
    let report = engine_matrix::run::tune::tune(&opts)?;
    let o = &report.file.outcomes;
    let r = &report.file.request;
    let search = o
        .trials
        .iter()
        .filter(|t| t.step.phase != engine_matrix_tune::Phase::Validate)
        .count();
    println!(
        "tuned {} on {} for {} ({}): {} search trials of a {}-point grid, {} validation cells",
        r.engine,
        r.cell,
        r.objective,
        if r.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        },
        search,
        o.grid_size,
        o.trials.len() - search
    );
    if let Some(c) = &o.convergence {
        println!(
            "converged: within {:.0}% of the search's best ({:.3}) after {} trials, {:.0} s",
            c.tolerance * 100.0,
            c.best,
            c.trials,
            c.seconds
        );
    }
    println!("{}", o.verdict);
    println!("\n{}", report.file.snippet);
    println!("run folder: {}", report.dir.display());
    Ok(if o.stopped.is_some() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// `model import`: a GGUF file becomes a Hugging Face folder.
fn model_import(file: &std::path::Path, dtype: &str, out: Option<PathBuf>) -> Result<ExitCode> {
    let Some(dt) = engine_matrix_import::parse_dtype(dtype) else {
        anyhow::bail!("--dtype {dtype:?}: expected f32, f16 or bf16");
    };
    let out = out.unwrap_or_else(|| {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        engine_kit::cache_dir()
            .join("models")
            .join(format!("{stem}-{dtype}"))
    });
    let imported = engine_matrix_import::import(file, dt, &out)?;
    eprintln!(
        "imported {}: {} tensors of a {} with {} layers, in {dtype}",
        file.display(),
        imported.tensors,
        imported.config["architectures"][0].as_str().unwrap_or("?"),
        imported.config["num_hidden_layers"],
    );
    match &imported.tokenizer {
        Ok(kind) => eprintln!(
            "tokenizer.json ({kind}), tokenizer_config.json and generation_config.json written"
        ),
        Err(why) => eprintln!("no tokenizer: {why} (the model runs on token ids)"),
    }
    println!("{}", imported.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `model quantize`: the GGUF at another type.
fn model_quantize(
    file: &std::path::Path,
    ty: &str,
    out: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let d = engine_matrix::gguf_types::ensure(file, ty, out)?;
    let types: Vec<String> = d
        .facts
        .types
        .iter()
        .map(|(t, n)| {
            format!(
                "{t} {:.1}%",
                *n as f64 * 100.0 / d.facts.parameters.max(1) as f64
            )
        })
        .collect();
    eprintln!(
        "{} at {}: {} parameters, {:.2} MiB of weights, {:.3} bits per weight ({})",
        file.display(),
        d.ty,
        d.facts.parameters,
        d.facts.weight_bytes as f64 / (1 << 20) as f64,
        d.facts.bits_per_weight(),
        types.join(", ")
    );
    println!("{}", d.path.display());
    Ok(ExitCode::SUCCESS)
}

/// `calibrate`: this machine's roofline limits, measured once and cached.
fn calibrate(force: bool) -> Result<ExitCode> {
    let dir = engine_matrix::roofline::default_dir();
    let l = if force {
        engine_matrix::roofline::recalibrate(&dir)?
    } else {
        engine_matrix::roofline::cached(&dir)?
    };
    println!(
        "{}\n  memory read {:.1} GB/s · f32 matmul {:.1} GFLOP/s · ridge {:.1} FLOP/byte\n  measured {} ({})\n  cached in {}",
        l.machine,
        l.mem_read_gb_s,
        l.matmul_f32_gflop_s,
        l.ridge_flop_per_byte(),
        l.measured_at,
        l.method,
        engine_matrix::roofline::cache_path(&dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `report RUN_DIR`: the run's reports, written again.
fn report(run_dir: &std::path::Path) -> Result<ExitCode> {
    let w = engine_matrix::report::write(run_dir)?;
    if let Some(e) = &w.chart_error {
        eprintln!("warning: charts not drawn: {e}");
    }
    println!(
        "{}: report.html, report.md, summary.csv and {} charts",
        run_dir.display(),
        w.charts
    );
    Ok(ExitCode::SUCCESS)
}

/// `run --dashboard ADDR`: the hub the runner reports to, and the server
/// that shows it; prints `dashboard on http://ADDR` on stderr.
fn start_dashboard(
    addr: &str,
    allow_remote: bool,
    runs_dir: PathBuf,
    config: engine_matrix::live::alerts::Config,
    baseline: Option<(
        engine_matrix::output::Summary,
        engine_matrix::compare::Options,
    )>,
) -> Result<(
    std::sync::Arc<engine_matrix::live::hub::Hub>,
    engine_matrix::dashboard::LiveServer,
)> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .with_context(|| format!("--dashboard {addr}: expected HOST:PORT, e.g. 127.0.0.1:8765"))?;
    engine_matrix::dashboard::check_host(host, allow_remote, "this run and the runs beside it")?;
    let hub = engine_matrix::live::hub::Hub::new(config, baseline);
    let server = engine_matrix::dashboard::LiveServer::start(host, port, runs_dir, hub.clone())?;
    eprintln!("dashboard on http://{}", server.addr);
    Ok((hub, server))
}

/// Keeps the dashboard up `seconds` after the run, or until Ctrl-C.
fn linger(server: engine_matrix::dashboard::LiveServer, seconds: f64) {
    if seconds > 0.0 {
        eprintln!(
            "the dashboard stays up {seconds:.0} s on http://{} (Ctrl-C ends it)",
            server.addr
        );
        let end = std::time::Instant::now() + Duration::from_secs_f64(seconds);
        while std::time::Instant::now() < end && !engine_matrix::run::runner::interrupted() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    server.stop();
}

/// `run`: the matrix, then the report, the baseline comparison and the
/// exit status (see the constants above).
fn run_command(args: RunArgs, dir: PathBuf, verbose: bool) -> Result<ExitCode> {
    let RunArgs {
        matrix,
        resume,
        in_process,
        cell_timeout,
        run_timeout,
        out,
        quick,
        only,
        stall_timeout,
        repeat,
        save_baseline,
        baseline,
        noise,
        no_calibrate,
        allow_failures,
        fail_on_targets,
        min_grade,
        dashboard,
        allow_remote,
        dashboard_linger,
        alert_cooldown,
        alert_stall,
        tuned,
        settings,
        shard,
        machine_class,
        load_shard,
        start_at,
        slot_s,
    } = args;
    let load_shard = load_shard
        .as_deref()
        .map(|s| -> Result<_> {
            let shard = match s {
                "auto" => engine_matrix::matrix::shard::from_env(|k| std::env::var(k).ok()),
                s => engine_matrix::matrix::shard::parse(s),
            }
            .map_err(|e| anyhow::anyhow!("--load-shard {e}"))?;
            let start = start_at.as_deref().unwrap_or_default();
            let start_unix_ns = engine_matrix::clock::parse_start_at(start)
                .map_err(|e| anyhow::anyhow!("--start-at {e}"))?;
            Ok(engine_matrix::run::load_shard::LoadShardOptions {
                shard,
                start_unix_ns,
                slot_s,
            })
        })
        .transpose()?;
    let shard = shard
        .as_deref()
        .map(|s| match s {
            "auto" => engine_matrix::matrix::shard::from_env(|k| std::env::var(k).ok()),
            s => engine_matrix::matrix::shard::parse(s),
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!("--shard {e}"))?;
    // Fail on a bad name or a missing baseline before measuring.
    let base = baseline
        .as_deref()
        .map(engine_matrix::baseline::resolve)
        .transpose()?;
    let isolation = if in_process {
        runner::Isolation::InProcess
    } else {
        runner::Isolation::Workers(
            std::env::current_exe().context("cannot locate the engine-matrix executable")?,
        )
    };
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.001));
    let runs_dir = out
        .as_deref()
        .or(resume.as_deref())
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("reports"), Path::to_path_buf);
    let live = dashboard
        .as_deref()
        .map(|addr| {
            let compare = engine_matrix::compare::Options {
                noise: noise / 100.0,
                check_version: false,
            };
            start_dashboard(
                addr,
                allow_remote,
                runs_dir,
                engine_matrix::live::alerts::Config {
                    cooldown_s: alert_cooldown.max(0.0),
                    stall_s: alert_stall.max(1.0),
                },
                base.as_ref().map(|(_, b)| (b.clone(), compare)),
            )
        })
        .transpose()?;
    let report = runner::run(&runner::RunOptions {
        matrix,
        resume,
        isolation,
        cell_timeout: Some(secs(cell_timeout)),
        run_timeout: run_timeout.map(secs),
        out,
        quick,
        only,
        plugin_dir: dir,
        verbose,
        stall: Duration::from_secs_f64(stall_timeout.max(1.0)),
        progress: true,
        calibrate: !no_calibrate,
        repeat,
        live: live.as_ref().map(|(hub, _)| hub.clone()),
        overrides: engine_matrix::matrix::Overrides {
            tuned_files: tuned,
            settings: settings
                .as_deref()
                .and_then(engine_matrix::matrix::tuned::parse_variants),
            ..Default::default()
        },
        shard,
        machine_class,
        load_shard,
    })?;
    println!("{}", report.markdown);
    if let Some((_, server)) = live {
        linger(server, dashboard_linger);
    }
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
    if let Some(why) = &report.summary.stopped {
        eprintln!(
            "the run stopped early: {why}; `engine-matrix run --resume {}` runs the remaining cells",
            report.dir.display()
        );
        return Ok(ExitCode::from(
            if engine_matrix::run::runner::interrupted() {
                130
            } else {
                4
            },
        ));
    }
    if let Some(name) = save_baseline {
        let dir = engine_matrix::baseline::save_baseline(&report.dir, &name)?;
        eprintln!("saved baseline '{name}' in {}", dir.display());
    }
    if let Some((file, b)) = base {
        let opts = engine_matrix::compare::Options {
            noise: noise / 100.0,
            check_version: false,
        };
        let regressions = compare_and_report(
            &file,
            &b,
            &report.dir.join("summary.json"),
            &report.summary,
            &opts,
            &report.dir,
        )?;
        if regressions > 0 {
            return Ok(ExitCode::from(EXIT_REGRESSION));
        }
    }
    let failed = count(Status::Failed);
    if failed > 0 && !allow_failures {
        eprintln!(
            "{failed} cells failed (their reasons are in the report): exit status {EXIT_FAILED_CELLS} (--allow-failures exits 0)"
        );
        return Ok(ExitCode::from(EXIT_FAILED_CELLS));
    }
    if let Some(why) = targets_gate(&report.summary, fail_on_targets, min_grade) {
        eprintln!("{why}: exit status {EXIT_TARGETS}");
        return Ok(ExitCode::from(EXIT_TARGETS));
    }
    Ok(ExitCode::SUCCESS)
}

/// Why `--fail-on-targets` or `--min-grade` fails the run, if it does.
fn targets_gate(
    summary: &engine_matrix::output::Summary,
    fail_on_targets: bool,
    min_grade: Option<Grade>,
) -> Option<String> {
    if !fail_on_targets && min_grade.is_none() {
        return None;
    }
    let Some(t) = &summary.targets else {
        return Some("--fail-on-targets / --min-grade: the matrix has no `targets:`".into());
    };
    let grade = t.grade.map_or("none", |g| g.as_str());
    if fail_on_targets && t.targets_missed > 0 {
        let names: Vec<&str> = t
            .targets
            .iter()
            .filter(|o| o.verdict == Some(engine_matrix_results::targets::Verdict::Missed))
            .map(|o| o.def.name.as_str())
            .collect();
        return Some(format!(
            "{} of {} targets missed ({}; grade {grade})",
            t.targets_missed,
            t.total_targets,
            names.join(", ")
        ));
    }
    match (min_grade, t.grade) {
        (Some(min), Some(g)) if g < min => Some(format!(
            "grade {grade} is below --min-grade {}",
            min.as_str()
        )),
        (Some(min), None) => Some(format!(
            "no target could be judged, so the run has no grade (--min-grade {})",
            min.as_str()
        )),
        _ => None,
    }
}

/// `compare BASELINE CANDIDATE`: exit 1 on a regression.
fn compare_command(args: CompareArgs) -> Result<ExitCode> {
    let CompareArgs {
        baseline,
        candidate,
        noise,
        check_version,
        out,
    } = args;
    let (bfile, b) = engine_matrix::baseline::resolve(&baseline)?;
    let (cfile, c) = engine_matrix::baseline::resolve(&candidate)?;
    let out = out.unwrap_or_else(|| {
        let dir = cfile.parent().map(PathBuf::from).unwrap_or_default();
        if dir.starts_with(engine_matrix::baseline::baselines_dir()) {
            PathBuf::from(".")
        } else {
            dir
        }
    });
    let opts = engine_matrix::compare::Options {
        noise: noise / 100.0,
        check_version,
    };
    let regressions = compare_and_report(&bfile, &b, &cfile, &c, &opts, &out)?;
    Ok(ExitCode::from(if regressions > 0 {
        EXIT_REGRESSION
    } else {
        0
    }))
}

/// `serve`: one engine behind an OpenAI-compatible API, until stopped.
/// `generate`: one prompt, the continuation as text, then its figures.
fn generate_command(args: GenerateArgs, dir: PathBuf) -> Result<ExitCode> {
    let options: serde_json::Value = serde_json::from_str(&args.options)
        .with_context(|| format!("--options {:?} is not JSON", args.options))?;
    let opts = engine_matrix::generate::GenerateOptions {
        plugin_dir: dir,
        engine: args.engine,
        options,
        model: args.model,
        dtype: args.dtype,
        max_tokens: args.max_tokens,
        chat: args.chat,
        temperature: args.temperature,
        seed: args.seed,
        prompt: args.prompt,
    };
    let g = engine_matrix::generate::run(&opts, &mut std::io::stdout().lock())?;
    let rate = g
        .decode_rate
        .map_or("n/a".to_string(), |r| format!("{r:.1} tok/s"));
    eprintln!(
        "{} prompt tokens, {} generated ({}); TTFT {:.1} ms, decode {rate}",
        g.prompt_tokens,
        g.tokens.len(),
        g.finish_reason,
        g.ttft.as_secs_f64() * 1e3,
    );
    Ok(ExitCode::SUCCESS)
}

fn perplexity_command(args: PerplexityArgs, dir: PathBuf) -> Result<ExitCode> {
    let options: serde_json::Value = serde_json::from_str(&args.options)
        .with_context(|| format!("--options {:?} is not JSON", args.options))?;
    let opts = engine_matrix::perplexity::PerplexityOptions {
        plugin_dir: dir,
        engine: args.engine,
        options,
        model: args.model,
        dtype: args.dtype,
        quantization: args.quantization,
        tokens: args.tokens,
        context: args.context,
        text: args.text,
        write_text: args.write_text,
    };
    let m = engine_matrix::perplexity::run(&opts)?;
    eprintln!(
        "{}: {} windows of {} tokens, {} positions scored, {:.1} s",
        m.text, m.windows, m.context, m.scored, m.seconds
    );
    println!(
        "perplexity {:.4} (mean NLL {:.6} nats)",
        m.perplexity, m.nll_mean
    );
    Ok(ExitCode::SUCCESS)
}

fn serve_command(args: ServeArgs, dir: PathBuf) -> Result<ExitCode> {
    let ServeArgs {
        engine,
        options,
        model,
        port,
        host,
        max_batch,
        batch_policy,
        dtype,
        http_threads,
        inject_first_token_ms,
        inject_token_ms,
    } = args;
    let options: serde_json::Value =
        serde_json::from_str(&options).context("--options is not valid JSON")?;
    let ms = |x: Option<f64>| {
        x.filter(|v| *v > 0.0)
            .map(|v| Duration::from_secs_f64(v / 1e3))
    };
    engine_matrix::serve::run(engine_matrix::serve::ServeOptions {
        plugin_dir: dir,
        engine,
        options,
        model,
        host,
        port,
        max_batch,
        batch_policy,
        dtype,
        http_threads: http_threads as usize,
        inject_first_token: ms(inject_first_token_ms),
        inject_token: ms(inject_token_ms),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `validate`: the matrix parses, every model it names can be read (its
/// config, or its folder's config.json and weights; nothing is generated
/// or loaded) and every engine's plugin is found. Every problem is printed
/// with its file, line, column and field; any makes the status 2.
fn validate(matrix: &std::path::Path, dir: &std::path::Path) -> Result<ExitCode> {
    let m = Matrix::load(matrix)?;
    let mut errors = Vec::new();
    for (i, def) in m.models.iter().enumerate() {
        if let Err((key, e)) = engine_matrix::run::cell::check_model(def) {
            let field = format!("models[{i}].{key}");
            errors.push(format!(
                "{}: {field}: model '{}': {e:#}",
                m.locate(&field),
                def.name
            ));
        }
    }
    for (i, def) in m.vectors.iter().enumerate() {
        if let engine_matrix::matrix::retrieval::VectorSource::Files {
            base,
            queries,
            truth,
        } = &def.source
        {
            let files = [
                ("base", Some(base)),
                ("queries", Some(queries)),
                ("truth", truth.as_ref()),
            ];
            for (key, path) in files {
                if let Some(p) = path.filter(|p| !p.is_file()) {
                    let field = format!("vectors[{i}].{key}");
                    errors.push(format!(
                        "{}: {field}: data set '{}': {} not found",
                        m.locate(&field),
                        def.name,
                        p.display()
                    ));
                }
            }
        }
    }
    for (i, e) in m.engines.iter().enumerate() {
        if let Err(err) = plugins::find(dir, &e.plugin) {
            let field = format!("engines[{i}].plugin");
            errors.push(format!(
                "{}: {field}: engine '{}': {err}",
                m.locate(&field),
                e.name
            ));
        }
    }
    errors.extend(engine_matrix::run::tune::check_spaces(&m, dir));
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        anyhow::bail!("{}: {} problems: not valid", matrix.display(), errors.len());
    }
    println!(
        "{}: valid; {} cells ({} with --quick), {} engines, {} models{}",
        matrix.display(),
        m.cells(false).len(),
        m.cells(true).len(),
        m.engines.len(),
        m.models.len(),
        if m.vectors.is_empty() {
            String::new()
        } else {
            format!(", {} vector sets", m.vectors.len())
        }
    );
    if let Some(t) = &m.targets {
        println!("targets: {}", t.targets.len());
        for d in &t.targets {
            match &d.not_applicable {
                None => println!("  {}: {}", d.name, d.describe()),
                Some(why) => println!("  {}: not applicable: {why}", d.name),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `presets`: every matrix of `dir` in one line (its cells with and
/// without --quick, and its targets), then the target profiles.
fn presets(dir: &std::path::Path) -> Result<ExitCode> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the preset matrices", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let width = files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.len()))
        .max()
        .unwrap_or(0);
    for f in &files {
        let stem = f.file_stem().unwrap_or_default().to_string_lossy();
        match Matrix::load(f) {
            Ok(m) => {
                let targets = m
                    .targets
                    .as_ref()
                    .map(|t| {
                        if t.profiles.is_empty() {
                            format!("; {} targets", t.targets.len())
                        } else {
                            format!("; targets {}", t.profiles.join(", "))
                        }
                    })
                    .unwrap_or_default();
                println!(
                    "{stem:width$}  {} ({} cells, {} with --quick{targets})",
                    m.description.as_deref().unwrap_or("(no description)"),
                    m.cells(false).len(),
                    m.cells(true).len(),
                );
            }
            Err(e) => println!("{stem:width$}  not valid: {e}"),
        }
    }
    println!("\ntarget profiles (`targets: NAME`, docs/targets.md):");
    for (name, what) in engine_matrix::matrix::targets::profile_names() {
        println!("  {name:10}  {what}");
    }
    Ok(ExitCode::SUCCESS)
}

fn compare_and_report(
    bfile: &std::path::Path,
    b: &engine_matrix::output::Summary,
    cfile: &std::path::Path,
    c: &engine_matrix::output::Summary,
    opts: &engine_matrix::compare::Options,
    out: &std::path::Path,
) -> Result<usize> {
    let mut cmp = engine_matrix::compare::compare(b, c, opts);
    cmp.baseline_name = bfile.display().to_string();
    cmp.candidate_name = cfile.display().to_string();
    let md = engine_matrix::compare::write(&cmp, out)?;
    println!("{md}");
    eprintln!(
        "{} regressions, {} improvements; compare.md and compare.html in {}",
        cmp.regressions(),
        cmp.improvements(),
        out.display()
    );
    Ok(cmp.regressions())
}

/// `engines` for a vector-index plugin: printed unless `json`, and its
/// JSON row.
fn index_engine_row(f: &plugins::PluginFile, json: bool, verbose: bool) -> serde_json::Value {
    match plugins::load_index(f) {
        Ok(l) => {
            let i = &l.info;
            let list = |v: &engine_api::abi_stable::std_types::RVec<
                engine_api::abi_stable::std_types::RString,
            >| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            if !json {
                println!("{} ({}): vector-index engine", i.name, f.path.display());
                println!(
                    "  engine {} · library {} · engine-api {}",
                    i.engine_version, i.library_version, l.api_version
                );
                let keys = |v: Vec<String>| {
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                println!(
                    "  metrics: {} · build options: {} · search parameters: {}{}",
                    list(&i.metrics).join(", "),
                    keys(list(&i.build_params)),
                    keys(list(&i.search_params)),
                    if i.concurrent_search {
                        " · concurrent searches"
                    } else {
                        ""
                    }
                );
            }
            serde_json::json!({"plugin": f.name, "path": f.path, "kind": "index",
                "info": engine_matrix::index_info_json(i)})
        }
        Err(e) => {
            if !json {
                println!("{} ({})", f.name, f.path.display());
                println!(
                    "  error: {}",
                    if verbose { e.verbose() } else { e.to_string() }
                );
            }
            serde_json::json!({"plugin": f.name, "path": f.path, "kind": "index", "error": e.to_string()})
        }
    }
}

fn engines(dir: &std::path::Path, json: bool, verbose: bool) -> Result<ExitCode> {
    let files = plugins::discover(dir)
        .map_err(|e| anyhow::anyhow!("cannot read plugin folder {}: {e}", dir.display()))?;
    let mut rows = Vec::new();
    for f in &files {
        if let Ok(plugins::Kind::Index) = plugins::kind(f) {
            rows.push(index_engine_row(f, json, verbose));
            continue;
        }
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
                    match engine_api::tunable::parse(i.tunables.as_str()) {
                        Ok(t) if t.is_empty() => {}
                        Ok(t) => println!(
                            "  tunable: {}",
                            t.iter()
                                .map(|t| format!(
                                    "{} {} (default {}){}",
                                    t.name,
                                    engine_matrix_tune::space::describe(&t.domain),
                                    t.default,
                                    if t.changes_output {
                                        " [changes output]"
                                    } else {
                                        ""
                                    }
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                        Err(e) => println!("  tunable: invalid declaration: {e}"),
                    }
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
