//! `wfpipe run`: plan, then hand what is not cached to an executor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use wfpipe_stages::kind::BackendChoice;

use super::{load, open_cache, Paths};
use crate::event::{Event, EventSink, RunSummary};
use crate::executor::slurm::{SlurmArgs, SlurmConfig, SlurmExecutor};
use crate::executor::{self, local::LocalExecutor, Executor, RunRequest};
use crate::pipeline::Pipeline;
use crate::render::{Mode, Renderer};
use crate::machine;
use crate::scheduler::Capacity;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub overrides: Vec<String>,
    pub cache: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub cpus: Option<u32>,
    pub gpus: Option<u32>,
    pub mem_mb: Option<u64>,
    pub keep_going: bool,
    pub dry_run: bool,
    pub backend: BackendChoice,
    pub mode: Mode,
    pub targets: Vec<String>,
    pub executor: ExecutorChoice,
    /// Submit and return (SLURM).
    pub detach: bool,
    pub slurm: SlurmArgs,
}

/// Where instances run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorChoice {
    #[default]
    Local,
    Slurm,
}

/// What this machine has.
pub fn detect_capacity(o: &RunOptions) -> Capacity {
    let cpus = o.cpus.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
    let gpus = o.gpus.unwrap_or_else(machine::gpu_device_files);
    let mem_mb = o.mem_mb.unwrap_or_else(|| machine::memory_mb().unwrap_or(8192));
    Capacity { jobs: o.jobs.unwrap_or(cpus as usize).max(1), cpus, gpus, mem_mb }
}

/// Instances selected by targets (stage names or instance ids) plus everything upstream.
pub fn select(p: &Pipeline, targets: &[String]) -> anyhow::Result<BTreeSet<usize>> {
    if targets.is_empty() {
        return Ok((0..p.instances.len()).collect());
    }
    let mut roots = Vec::new();
    for t in targets {
        let found = p.named_by(t);
        if found.is_empty() {
            anyhow::bail!("no stage or instance `{t}` in pipeline `{}`", p.name);
        }
        roots.extend(found);
    }
    Ok(crate::dag::upstream(&p.instances, roots, |_| true).into_iter().collect())
}

/// Run a pipeline; returns the process exit code.
pub fn run(path: &Path, o: &RunOptions) -> anyhow::Result<i32> {
    let (p, _registry) = load(path, &o.overrides)?;
    let paths = Paths::resolve(o.cache.clone(), o.data.clone(), &p);
    let cache = open_cache(&paths.cache)?;
    let selected = select(&p, &o.targets)?;
    let planned = super::plan::plan(&p, &cache);
    let todo: Vec<usize> = planned.iter().filter(|x| selected.contains(&x.index) && !x.status.is_cached()).map(|x| x.index).collect();
    if o.detach && o.executor != ExecutorChoice::Slurm {
        anyhow::bail!("--detach needs --executor slurm (local instances are children of this process)");
    }
    let slurm = match o.executor {
        ExecutorChoice::Slurm => Some(SlurmConfig::resolve(&p.slurm, &o.slurm).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?),
        ExecutorChoice::Local => None,
    };
    if o.dry_run {
        let chosen: Vec<_> = planned.into_iter().filter(|x| selected.contains(&x.index)).collect();
        print!("{}", super::plan::render_plan(&p, &chosen));
        return Ok(0);
    }
    let mut renderer = Renderer::new(o.mode);
    renderer.event(Event::Planned { total: selected.len(), cached: selected.len() - todo.len(), to_run: todo.len() });
    if todo.is_empty() {
        renderer.finish();
        print_no_effect(&p, &cache, o);
        print_verdicts(&p, &cache, o);
        return Ok(write_report(&p, &cache, o));
    }
    let mut capacity = detect_capacity(o);
    let wants_gpu = todo.iter().any(|&i| p.instances[i].resources.gpus > 0);
    if o.backend == BackendChoice::Cuda {
        if !wants_gpu {
            tracing::warn!("--backend cuda: no instance to run requests a GPU (`resources.gpus`), so all run on the CPU");
        } else if slurm.is_none() || !cfg!(feature = "cuda") {
            // Before any instance starts: a missing driver is one message, not a failed stage
            // each. SLURM's nodes check their own driver, but no node runs a build without CUDA.
            let devices = wfpipe_stages::backend::cuda_devices()
                .map_err(|e| anyhow::anyhow!("--backend cuda: {e}; no instance was started"))?;
            if slurm.is_none() {
                capacity.gpus = o.gpus.unwrap_or(devices as u32);
            }
        }
    }
    if wants_gpu && capacity.gpus == 0 && slurm.is_none() {
        tracing::warn!("some instances request GPUs but this machine has none; they run on the CPU");
    }
    capacity.jobs = capacity.jobs.max(1);
    executor::install_interrupt_handler();
    let req = RunRequest { pipeline: &p, cache: &cache, todo, data_dir: paths.data.clone(), backend: o.backend, keep_going: o.keep_going };
    let exe = std::env::current_exe()?;
    let summary = match slurm {
        None => LocalExecutor { capacity, exe }.execute(&req, &mut renderer),
        Some(config) => {
            let mut ex = SlurmExecutor { config, exe, detach: o.detach, report: Default::default() };
            let summary = ex.execute(&req, &mut renderer);
            if o.mode == Mode::Json {
                let r = &ex.report;
                eprintln!("{}", serde_json::json!({"event": "slurm", "run": r.run_id, "submitted": r.submitted, "sbatch_calls": r.sbatch_calls, "attached": r.attached, "detached": o.detach}));
            } else if o.mode != Mode::Quiet {
                eprintln!("{}", ex.report.line());
                if o.detach {
                    eprintln!("detached: `wfpipe status {}` shows progress; `wfpipe run` again follows the queued jobs", path.display());
                }
            }
            summary
        }
    };
    print_summary(&summary);
    if !summary.interrupted {
        print_no_effect(&p, &cache, o);
        print_verdicts(&p, &cache, o);
    }
    Ok(if summary.interrupted {
        130
    } else if summary.is_success() {
        write_report(&p, &cache, o)
    } else {
        1
    })
}

/// After a successful run, the report of its tables and figures; exit code 1 if it
/// cannot be written.
fn write_report(p: &Pipeline, cache: &crate::cache::Cache, o: &RunOptions) -> i32 {
    let quiet = matches!(o.mode, Mode::Quiet | Mode::Json);
    match super::report::after_run(p, cache, quiet) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: writing the report: {e}");
            1
        }
    }
}

/// Sweep axes whose values gave byte-identical outputs (`ops::no_effect`).
fn print_no_effect(p: &Pipeline, cache: &crate::cache::Cache, o: &RunOptions) {
    if o.mode == Mode::Quiet {
        return;
    }
    for found in super::no_effect::find(p, |i| super::no_effect::outputs_digest(cache, &p.instances[i].key)) {
        if o.mode == Mode::Json {
            eprintln!("{}", serde_json::json!({"event": "no_effect", "stage": found.stage, "axes": found.axes, "values": found.values, "comparisons": found.comparisons}));
        } else {
            eprintln!("{}", found.line());
        }
    }
}

/// The claims' verdicts, after every run that was not interrupted (a failed input makes
/// its claims "not computed", which is worth reading too).
fn print_verdicts(p: &Pipeline, cache: &crate::cache::Cache, o: &RunOptions) {
    if matches!(o.mode, Mode::Quiet | Mode::Json) || !crate::ops::verdicts::has_claims(p) {
        return;
    }
    eprint!("\n{}", crate::ops::verdicts::summary(&crate::ops::verdicts::collect(p, cache)));
}

pub fn print_summary(s: &RunSummary) {
    if s.interrupted {
        eprintln!("interrupted: running instances were stopped; finished results are kept in the cache");
    }
    if s.failed.is_empty() && s.skipped.is_empty() {
        return;
    }
    eprintln!("\nerror: {} instance(s) failed, {} not run because of a failure", s.failed.len(), s.skipped.len());
    for (inst, msg, log) in &s.failed {
        eprintln!("  {inst}: {msg}\n    log: {}", log.display());
    }
    let mut by_cause: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (inst, because) in &s.skipped {
        by_cause.entry(because).or_default().push(inst);
    }
    for (cause, insts) in by_cause {
        eprintln!("  not run because {cause} failed: {}", insts.join(", "));
    }
}
