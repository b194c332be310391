//! `engine-matrix scale-out slurm|k8s MATRIX --shards N --out DIR`: the
//! job files that run a matrix as N shards on a scheduler the user already
//! has, each shard writing `DIR/shard-I` on shared storage, then merge
//! them into `DIR/merged`.
//!
//! * **Slurm**: `run.sbatch`, a job array (`--array=0-(N-1)`), one shard
//!   per task (`run --shard auto` reads `SLURM_ARRAY_TASK_ID`);
//!   `merge.sbatch`, the merge; `submit.sh` submits both, the merge with
//!   `--dependency=afterany` on the array (a shard whose cells failed
//!   still has results to merge; a missing one makes merge say which).
//! * **Kubernetes**: `job.json`, an Indexed Job (`completionMode:
//!   Indexed`, `completions` = `parallelism` = N; the count is passed as
//!   `ENGINE_MATRIX_SHARDS`, since the pod is not told it), the results on
//!   a PersistentVolumeClaim; `merge-job.json`; `submit.sh` applies the
//!   first, waits for it with `kubectl wait`, then applies the merge.
//!   JSON is YAML, and `kubectl apply -f` takes either.
//!
//! With `--load-shard`, the N tasks are not shards of the cells but N load
//! generators of one schedule (`run --load-shard auto`, see
//! [`crate::run::load_shard`]), writing `DIR/gen-I`. They meet at a
//! wall-clock start that `submit.sh` sets when it submits: now plus
//! `--lead-s` (default 120 s), passed as `ENGINE_MATRIX_START_AT` (Slurm:
//! `sbatch --export`; Kubernetes: written into the Job as it is applied).
//! The lead must cover the tasks' queueing and start-up: a generator that
//! starts after it sends late, and the merged cell names it. A Slurm array
//! runs its tasks when it can; give the partition room for all N at once
//! (or a reservation).
//!
//! The files name absolute paths: the nodes must see the project checkout
//! (with `scripts/provision` run on each node, or a shared cache) and the
//! results folder at the same paths, as on a cluster's shared file system.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Which scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    Slurm,
    Kubernetes,
}

/// What to write.
pub struct ScaleOut {
    pub scheduler: Scheduler,
    pub matrix: PathBuf,
    pub shards: u32,
    /// The results root (shared storage): `shard-I/`, `merged/`, `logs/`.
    pub out: PathBuf,
    /// Where the job files go (default: `out`).
    pub files: Option<PathBuf>,
    /// The engine-matrix executable on the nodes.
    pub engine_matrix: PathBuf,
    /// The folder the jobs run in (the project checkout).
    pub workdir: PathBuf,
    /// Options passed to every shard's `run` (e.g. `--quick`).
    pub run_args: Vec<String>,
    pub cpus: u32,
    pub gpus: u32,
    /// Slurm: `--partition`, `--time`, `--mem`.
    pub partition: Option<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    /// Kubernetes: the container image, the claim holding `out` and where
    /// it is mounted (`out` must be under it), the namespace.
    pub image: Option<String>,
    pub claim: Option<String>,
    pub mount: Option<PathBuf>,
    pub namespace: Option<String>,
    /// Load generators (`--load-shard`): the seconds from submission to
    /// their shared start; `None`: shards of the cells.
    pub load_lead_s: Option<u64>,
}

/// The placeholder of the start time in a Kubernetes generator Job, which
/// `submit.sh` replaces as it applies it.
const START_PLACEHOLDER: &str = "__ENGINE_MATRIX_START_AT__";

impl ScaleOut {
    /// Each task's folder under `out`: `shard-I` or `gen-I`.
    fn prefix(&self) -> &'static str {
        if self.load_lead_s.is_some() {
            "gen"
        } else {
            "shard"
        }
    }
}

/// The files written, in the order to read them.
pub fn write(s: &ScaleOut) -> Result<Vec<PathBuf>> {
    if s.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let m = crate::matrix::Matrix::load(&s.matrix)?;
    let name = job_name(&m.name);
    let files = s.files.clone().unwrap_or_else(|| s.out.clone());
    std::fs::create_dir_all(&files)
        .with_context(|| format!("cannot create {}", files.display()))?;
    let written = match s.scheduler {
        Scheduler::Slurm => slurm(s, &name, &files)?,
        Scheduler::Kubernetes => kubernetes(s, &name, &files)?,
    };
    Ok(written)
}

/// A name both schedulers accept: lower-case letters, digits and `-`.
fn job_name(matrix: &str) -> String {
    let mut n: String = matrix
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_matches('-').to_string();
    n.truncate(40);
    format!("em-{}", if n.is_empty() { "matrix" } else { &n })
}

/// `'text'` for /bin/sh.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn shell_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// `run` of one shard, the shard's folder given as `shard_dir` (a shell
/// word that may hold a variable, quoted by the caller).
fn run_line(s: &ScaleOut, shard_dir: &str) -> String {
    let split = match s.load_lead_s {
        Some(_) => "--load-shard auto --start-at \"$ENGINE_MATRIX_START_AT\"",
        None => "--shard auto",
    };
    let mut l = format!(
        "{} run {} {split} --out {shard_dir}",
        shell_path(&s.engine_matrix),
        shell_path(&s.matrix)
    );
    for a in &s.run_args {
        l.push(' ');
        l.push_str(&quote(a));
    }
    l
}

fn merge_line(s: &ScaleOut) -> String {
    let mut l = format!("{} merge", shell_path(&s.engine_matrix));
    for i in 0..s.shards {
        l.push(' ');
        l.push_str(&shell_path(&s.out.join(format!("{}-{i}", s.prefix()))));
    }
    l.push_str(&format!(" --out {}", shell_path(&s.out.join("merged"))));
    l
}

fn write_file(path: &Path, text: &str, executable: bool) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}

fn slurm(s: &ScaleOut, name: &str, files: &Path) -> Result<Vec<PathBuf>> {
    let logs = s.out.join("logs");
    let mut head = format!(
        "#!/bin/bash\n# Written by engine-matrix scale-out slurm: {} as {} shards.\n",
        s.matrix.display(),
        s.shards
    );
    let mut directives = vec![format!("--cpus-per-task={}", s.cpus.max(1))];
    if s.gpus > 0 {
        directives.push(format!("--gpus-per-task={}", s.gpus));
    }
    for (k, v) in [
        ("partition", &s.partition),
        ("time", &s.time),
        ("mem", &s.mem),
    ] {
        if let Some(v) = v {
            directives.push(format!("--{k}={v}"));
        }
    }
    let run = {
        let mut t = head.clone();
        t.push_str(&format!("#SBATCH --job-name={name}\n"));
        t.push_str(&format!("#SBATCH --array=0-{}\n", s.shards - 1));
        t.push_str(&format!(
            "#SBATCH --output={}\n",
            logs.join(format!("{}-%a.log", s.prefix())).display()
        ));
        for d in &directives {
            t.push_str(&format!("#SBATCH {d}\n"));
        }
        let what = match s.load_lead_s {
            Some(_) => "Load generator ${SLURM_ARRAY_TASK_ID} of {N}: --load-shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT; submit.sh sets ENGINE_MATRIX_START_AT.",
            None => "Shard ${SLURM_ARRAY_TASK_ID} of {N}: --shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT.",
        }
        .replace("{N}", &s.shards.to_string());
        t.push_str(&format!(
            "set -euo pipefail\ncd {}\n# {what}\nexec {}\n",
            shell_path(&s.workdir),
            run_line(
                s,
                &format!(
                    "{}/{}-\"${{SLURM_ARRAY_TASK_ID}}\"",
                    shell_path(&s.out),
                    s.prefix()
                )
            )
        ));
        t
    };
    let merge = {
        head.push_str(&format!("#SBATCH --job-name={name}-merge\n"));
        head.push_str(&format!(
            "#SBATCH --output={}\n#SBATCH --cpus-per-task=1\n",
            logs.join("merge.log").display()
        ));
        if let Some(p) = &s.partition {
            head.push_str(&format!("#SBATCH --partition={p}\n"));
        }
        head.push_str(&format!(
            "set -euo pipefail\ncd {}\nexec {}\n",
            shell_path(&s.workdir),
            merge_line(s)
        ));
        head
    };
    let (run_path, merge_path) = (files.join("run.sbatch"), files.join("merge.sbatch"));
    let (start, export) = match s.load_lead_s {
        Some(lead) => (
            format!("# The generators' shared start: {lead} s from now.\nENGINE_MATRIX_START_AT=\"@$(( $(date +%s) + {lead} ))\"\n"),
            " --export=ALL,ENGINE_MATRIX_START_AT=\"$ENGINE_MATRIX_START_AT\"",
        ),
        None => (String::new(), ""),
    };
    let submit = format!(
        "#!/bin/sh\n# Submits the {tasks} as a job array, then the merge once every one has ended.\nset -eu\nmkdir -p {logs}\n{start}job=$(sbatch --parsable{export} {run})\njob=${{job%%;*}}\nmerge=$(sbatch --parsable --dependency=afterany:\"$job\" {merge})\necho \"{tasks}: job $job; merge: job ${{merge%%;*}}; results in {out}/merged\"\n",
        tasks = if s.load_lead_s.is_some() { "load generators" } else { "shards" },
        logs = shell_path(&logs),
        run = shell_path(&run_path),
        merge = shell_path(&merge_path),
        out = s.out.display()
    );
    let submit_path = files.join("submit.sh");
    write_file(&run_path, &run, true)?;
    write_file(&merge_path, &merge, true)?;
    write_file(&submit_path, &submit, true)?;
    Ok(vec![submit_path, run_path, merge_path])
}

fn kubernetes(s: &ScaleOut, name: &str, files: &Path) -> Result<Vec<PathBuf>> {
    let image = s
        .image
        .clone()
        .context("scale-out k8s needs --image (a container image with the project and its provisioned libraries)")?;
    let claim = s.claim.clone().context(
        "scale-out k8s needs --claim (the PersistentVolumeClaim the results are written to)",
    )?;
    let mount = s.mount.clone().unwrap_or_else(|| s.out.clone());
    if !s.out.starts_with(&mount) {
        bail!(
            "--out {} is not under the claim's mount point {}",
            s.out.display(),
            mount.display()
        );
    }
    let mut resources = json!({"requests": {"cpu": s.cpus.max(1).to_string()}});
    if s.gpus > 0 {
        resources["limits"] = json!({"nvidia.com/gpu": s.gpus.to_string()});
    }
    let container = |cname: &str, command: String, env: serde_json::Value| {
        json!({
            "name": cname,
            "image": image,
            "workingDir": s.workdir.display().to_string(),
            "command": ["/bin/sh", "-c", command],
            "env": env,
            "resources": resources,
            "volumeMounts": [{"name": "results", "mountPath": mount.display().to_string()}],
        })
    };
    let pod = |c: serde_json::Value| {
        json!({
            "spec": {
                "restartPolicy": "Never",
                "containers": [c],
                "volumes": [{"name": "results", "persistentVolumeClaim": {"claimName": claim}}],
            }
        })
    };
    let metadata = |n: &str| {
        let mut m = json!({"name": n, "labels": {"app.kubernetes.io/name": "engine-matrix"}});
        if let Some(ns) = &s.namespace {
            m["namespace"] = json!(ns);
        }
        m
    };
    let run = run_line(
        s,
        &format!(
            "{}/{}-\"$JOB_COMPLETION_INDEX\"",
            shell_path(&s.out),
            s.prefix()
        ),
    );
    let mut env = vec![json!({"name": "ENGINE_MATRIX_SHARDS", "value": s.shards.to_string()})];
    if s.load_lead_s.is_some() {
        env.push(json!({"name": "ENGINE_MATRIX_START_AT", "value": START_PLACEHOLDER}));
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(name),
        "spec": {
            "completionMode": "Indexed",
            "completions": s.shards,
            "parallelism": s.shards,
            "backoffLimit": 0,
            "template": pod(container(
                "shard",
                format!("exec {run}"),
                serde_json::Value::Array(env),
            )),
        }
    });
    let merge_name = format!("{name}-merge");
    let merge = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(&merge_name),
        "spec": {
            "backoffLimit": 0,
            "template": pod(container("merge", format!("exec {}", merge_line(s)), json!([]))),
        }
    });
    let ns = s
        .namespace
        .as_ref()
        .map(|n| format!(" -n {}", quote(n)))
        .unwrap_or_default();
    let (job_path, merge_path) = (files.join("job.json"), files.join("merge-job.json"));
    let apply = match s.load_lead_s {
        Some(lead) => format!(
            "# The generators' shared start: {lead} s from now, written into the Job.\nstart=\"@$(( $(date +%s) + {lead} ))\"\nsed \"s/{START_PLACEHOLDER}/$start/\" {job} | kubectl{ns} apply -f -\n",
            job = shell_path(&job_path),
        ),
        None => format!("kubectl{ns} apply -f {}\n", shell_path(&job_path)),
    };
    let submit = format!(
        "#!/bin/sh\n# Applies the Indexed Job, waits until every task has ended, then applies the merge.\nset -eu\n{apply}kubectl{ns} wait --for=condition=complete --timeout=-1s job/{name} || kubectl{ns} wait --for=condition=failed --timeout=0 job/{name} || true\nkubectl{ns} apply -f {merge}\n",
        merge = shell_path(&merge_path),
    );
    let submit_path = files.join("submit.sh");
    write_file(&job_path, &serde_json::to_string_pretty(&job)?, false)?;
    write_file(&merge_path, &serde_json::to_string_pretty(&merge)?, false)?;
    write_file(&submit_path, &submit, true)?;
    Ok(vec![submit_path, job_path, merge_path])
}
