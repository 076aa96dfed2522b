//! The SLURM executor: instances run as `sbatch` jobs (`wfpipe exec-stage` on a compute
//! node), the cache on a shared filesystem is the source of truth.
//!
//! - `submit`/`groups`: sweeps become job arrays, edges become `afterok`/`aftercorr`
//!   dependencies, so SLURM runs whole chains without the driver.
//! - `watch`: the driver follows the queue (`squeue -t all`, `sacct` when the controller
//!   forgot a job) and the cache, and emits the same events as the local executor.
//! - `record`: `slurm.json` per key; a later run or `status` finds queued and running
//!   keys there and never submits them twice.
//! - `pack`: many short instances share worker jobs that pull keys from a queue folder.

pub mod client;
pub mod config;
pub mod groups;
pub mod pack;
pub mod record;
pub mod state;
pub mod status;
pub mod submit;
mod watch;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use client::JobId;
pub use config::{SlurmArgs, SlurmConfig};
use submit::Submitter;

use super::{Executor, RunRequest};
use crate::dag::{dependents, downstream};
use crate::event::{Event, EventSink, RunSummary};
use crate::job::Job;

pub struct SlurmExecutor {
    pub config: SlurmConfig,
    /// The wfpipe binary the compute nodes run.
    pub exe: PathBuf,
    /// Submit and return without waiting.
    pub detach: bool,
    /// What the last `execute` submitted (for the run's closing line).
    pub report: SubmitReport,
}

#[derive(Debug, Default, Clone)]
pub struct SubmitReport {
    pub run_id: String,
    pub sbatch_calls: usize,
    /// Instances submitted by this run.
    pub submitted: usize,
    /// Instances already queued or running in SLURM (an earlier run), followed instead.
    pub attached: usize,
    pub jobs: Vec<String>,
}

impl SubmitReport {
    pub fn line(&self) -> String {
        format!(
            "slurm run {}: {} instance(s) submitted in {} sbatch call(s), {} already queued or running",
            self.run_id, self.submitted, self.sbatch_calls, self.attached
        )
    }
}

/// One instance this run follows in the queue.
#[derive(Clone)]
pub(crate) struct Tracked {
    pub idx: usize,
    pub job: JobId,
    /// Submitted by this run (only these are ever cancelled).
    pub ours: bool,
    pub submitted_unix: f64,
    pub packed: bool,
}

/// Events and the summary, kept together.
pub(crate) struct Out<'s> {
    pub sink: &'s mut dyn EventSink,
    pub summary: RunSummary,
}

impl Out<'_> {
    pub fn emit(&mut self, e: Event) {
        self.summary.record(&e);
        self.sink.event(e);
    }
}

pub fn new_run_id() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{secs}-{}", std::process::id())
}

impl Executor for SlurmExecutor {
    fn execute(&mut self, req: &RunRequest<'_>, sink: &mut dyn EventSink) -> RunSummary {
        let mut out = Out { sink, summary: RunSummary::default() };
        let run_id = new_run_id();
        self.report = SubmitReport { run_id: run_id.clone(), ..Default::default() };
        let exe = self.config.wfpipe.clone().unwrap_or_else(|| self.exe.clone());
        let p = req.pipeline;
        let deps = dependents(&p.instances);
        let mut done: HashSet<usize> = HashSet::new();

        // What the queue already holds for these keys (an earlier run, detached or killed).
        let queue = match client::ping().and_then(|_| client::squeue()) {
            Ok(q) => q,
            Err(e) => {
                fail_all(req, &mut out, &format!("cannot reach SLURM: {e}"));
                out.sink.finish();
                return out.summary;
            }
        };
        let mut tracked: Vec<Tracked> = Vec::new();
        let mut to_submit: Vec<usize> = Vec::new();
        for &idx in &req.todo {
            let inst = &p.instances[idx];
            if req.cache.is_cached(&inst.key) {
                done.insert(idx);
                out.emit(Event::Finished { instance: inst.id.clone(), seconds: 0.0, by_other: true });
                continue;
            }
            match record::read(req.cache, &inst.key) {
                Some(rec) if client::lookup(&queue, &JobId(rec.job.clone())).is_some_and(|e| e.state.is_live()) => {
                    out.emit(Event::Queued { instance: inst.id.clone(), job: rec.job.clone() });
                    self.report.attached += 1;
                    tracked.push(Tracked { idx, job: JobId(rec.job), ours: false, submitted_unix: rec.submitted_unix, packed: rec.packed });
                }
                _ => to_submit.push(idx),
            }
        }

        let mut submitter = match Submitter::new(req.cache, &self.config, exe, run_id) {
            Ok(s) => s,
            Err(e) => {
                fail_all(req, &mut out, &format!("cannot prepare the SLURM run: {e}"));
                out.sink.finish();
                return out.summary;
            }
        };
        let result = if self.config.pack > 1 {
            pack::submit(req, &mut submitter, &to_submit, &mut tracked, &mut out)
        } else {
            submit_all(req, &mut submitter, &to_submit, &mut tracked, &mut out, &deps, &mut done)
        };
        self.report.sbatch_calls = submitter.sbatch_calls;
        self.report.submitted = tracked.iter().filter(|t| t.ours).count();
        self.report.jobs = tracked.iter().filter(|t| t.ours).map(|t| t.job.0.clone()).collect();
        if let Err(e) = result {
            // Jobs already submitted stay consistent: their dependents were submitted with
            // them or are reported as not run.
            tracing::warn!("submission stopped: {e}");
        }
        if self.detach {
            out.sink.finish();
            return out.summary;
        }
        watch::follow(req, &self.config, &mut submitter, tracked, &mut out, &deps, done);
        self.report.sbatch_calls = submitter.sbatch_calls;
        out.sink.finish();
        out.summary
    }
}

/// Every instance fails with the same message (SLURM is unreachable).
fn fail_all(req: &RunRequest<'_>, out: &mut Out<'_>, message: &str) {
    for &idx in &req.todo {
        let inst = &req.pipeline.instances[idx];
        out.emit(Event::Failed {
            instance: inst.id.clone(),
            message: message.to_owned(),
            log: req.cache.work(&inst.key).log(),
            code: None,
        });
    }
}

/// Submit stage by stage (topological order), each stage's instances as arrays waiting
/// on the jobs of their inputs.
fn submit_all(
    req: &RunRequest<'_>,
    submitter: &mut Submitter<'_>,
    to_submit: &[usize],
    tracked: &mut Vec<Tracked>,
    out: &mut Out<'_>,
    deps: &[Vec<usize>],
    done: &mut HashSet<usize>,
) -> Result<(), submit::SubmitError> {
    let p = req.pipeline;
    let todo: HashSet<usize> = req.todo.iter().copied().collect();
    let mut job_of: HashMap<usize, JobId> = tracked.iter().map(|t| (t.idx, t.job.clone())).collect();
    let mut by_stage: Vec<Vec<usize>> = vec![Vec::new(); p.stages.len()];
    for &idx in to_submit {
        by_stage[p.instances[idx].stage].push(idx);
    }
    let mut stopped: Option<String> = None;
    for (stage, members) in by_stage.iter().enumerate() {
        let mut ready = Vec::new();
        for &idx in members {
            if done.contains(&idx) {
                continue;
            }
            if let Some(first) = &stopped {
                done.insert(idx);
                out.emit(Event::Skipped { instance: p.instances[idx].id.clone(), because: first.clone() });
                continue;
            }
            let inst = &p.instances[idx];
            let mut waits = Vec::new();
            for u in inst.inputs.values().flatten() {
                if todo.contains(u) && !req.cache.is_cached(&p.instances[*u].key) {
                    if let Some(j) = job_of.get(u) {
                        waits.push(j.clone());
                    }
                }
            }
            waits.sort();
            waits.dedup();
            let job = Job::for_instance(p, inst, &req.data_dir, req.backend);
            let written = job.write_to(&req.cache.work(&inst.key));
            if let Err(e) = written {
                fail_and_skip(req, out, deps, done, idx, format!("cannot write the job file: {e}"), None);
                continue;
            }
            ready.push((idx, inst.resources, waits));
        }
        if ready.is_empty() {
            continue;
        }
        let name = &p.stages[stage].name;
        for g in groups::group(&ready, submitter.array_limit, &submitter.array_sizes) {
            let keys: Vec<(&str, &str)> = g.members.iter().map(|&i| (p.instances[i].key.as_str(), p.instances[i].id.as_str())).collect();
            match submitter.submit_group(name, &g, &keys) {
                Ok(ids) => {
                    let now = record::now_unix();
                    for (&idx, id) in g.members.iter().zip(ids) {
                        out.emit(Event::Queued { instance: p.instances[idx].id.clone(), job: id.0.clone() });
                        job_of.insert(idx, id.clone());
                        tracked.push(Tracked { idx, job: id, ours: true, submitted_unix: now, packed: false });
                    }
                }
                Err(e) => {
                    let message = format!("sbatch failed: {e}");
                    for &idx in &g.members {
                        if !done.contains(&idx) {
                            fail_and_skip(req, out, deps, done, idx, message.clone(), None);
                        }
                    }
                    if !req.keep_going && stopped.is_none() {
                        stopped = Some(p.instances[g.members[0]].id.clone());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Report an instance as failed and everything downstream of it (in this run) as not run.
pub(crate) fn fail_and_skip(
    req: &RunRequest<'_>,
    out: &mut Out<'_>,
    deps: &[Vec<usize>],
    done: &mut HashSet<usize>,
    idx: usize,
    message: String,
    log: Option<PathBuf>,
) -> Vec<usize> {
    let p = req.pipeline;
    let inst = &p.instances[idx];
    done.insert(idx);
    let log = log.unwrap_or_else(|| req.cache.work(&inst.key).log());
    out.emit(Event::Failed { instance: inst.id.clone(), message, log, code: None });
    let todo: HashSet<usize> = req.todo.iter().copied().collect();
    let mut skipped = Vec::new();
    let mut down = downstream(deps, idx);
    down.sort();
    for d in down {
        if todo.contains(&d) && done.insert(d) {
            out.emit(Event::Skipped { instance: p.instances[d].id.clone(), because: inst.id.clone() });
            skipped.push(d);
        }
    }
    skipped
}
