//! Packing many short instances into few allocations: the driver writes the keys to run
//! into a queue folder in the cache and submits worker jobs (one array); each worker
//! repeatedly claims a key whose inputs are cached (an atomic rename), computes it with
//! `wfpipe exec-stage` (which takes the key's lock) and goes on until the queue holds
//! nothing it can run.
//!
//! ```text
//! <run dir>/queue/pending/<key>   "<order>\n<job file>\n", waiting for a worker
//! <run dir>/queue/claimed/<key>   being computed
//! <run dir>/queue/done/<key>      exec-stage returned (the cache says whether it succeeded)
//! ```

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use wfpipe_stages::kind::Resources;

use super::client::{JobId, QueueEntry};
use super::record::{self, SlurmRecord};
use super::submit::{SubmitError, Submitter};
use super::client::lookup;
use super::{Out, Tracked};
use crate::cache::{lock, Cache};
use crate::event::Event;
use crate::executor::RunRequest;
use crate::job::Job;

/// A claimed key whose lock nobody holds for this long belongs to a dead worker.
const CLAIM_GRACE: Duration = Duration::from_secs(60);
/// Worker rounds submitted after the first before the remaining keys are given up.
const MAX_ROUNDS: usize = 3;

fn queue_dir(s: &Submitter<'_>) -> PathBuf {
    s.run_dir.join("queue")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SubmitError + '_ {
    move |source| SubmitError::Io { path: path.to_owned(), source }
}

/// The resources one worker asks for: enough for the largest instance it may compute.
fn worker_resources(req: &RunRequest<'_>, keys: &[usize], per_worker: usize) -> Resources {
    let mut r = Resources { cpus: 1, gpus: 0, mem_mb: 1, time_min: 0 };
    for &i in keys {
        let x = req.pipeline.instances[i].resources;
        r.cpus = r.cpus.max(x.cpus);
        r.gpus = r.gpus.max(x.gpus);
        r.mem_mb = r.mem_mb.max(x.mem_mb);
        r.time_min = r.time_min.max(x.time_min);
    }
    if r.time_min > 0 {
        r.time_min = r.time_min.saturating_mul(per_worker as u32);
    }
    r
}

/// Queue the keys and submit the first workers.
pub(super) fn submit(
    req: &RunRequest<'_>,
    submitter: &mut Submitter<'_>,
    to_submit: &[usize],
    tracked: &mut Vec<Tracked>,
    out: &mut Out<'_>,
) -> Result<(), SubmitError> {
    if to_submit.is_empty() {
        return Ok(());
    }
    let p = req.pipeline;
    let q = queue_dir(submitter);
    for sub in ["pending", "claimed", "done"] {
        fs::create_dir_all(q.join(sub)).map_err(io(&q))?;
    }
    for (order, &idx) in to_submit.iter().enumerate() {
        let inst = &p.instances[idx];
        let work = req.cache.work(&inst.key);
        let job_file = Job::for_instance(p, inst, &req.data_dir, req.backend).write_to(&work).map_err(io(&work.job()))?;
        let entry = q.join("pending").join(&inst.key);
        fs::write(&entry, format!("{order}\n{}\n", job_file.display())).map_err(io(&entry))?;
    }
    let (job, _) = submit_workers(req, submitter, to_submit)?;
    let now = record::now_unix();
    for &idx in to_submit {
        let inst = &p.instances[idx];
        let rec = SlurmRecord { job: job.0.clone(), run: submitter.run_id.clone(), instance: inst.id.clone(), submitted_unix: now, packed: true };
        let path = record::path(req.cache, &inst.key);
        record::write(req.cache, &inst.key, &rec).map_err(io(&path))?;
        out.emit(Event::Queued { instance: inst.id.clone(), job: job.0.clone() });
        tracked.push(Tracked { idx, job: job.clone(), ours: true, submitted_unix: now, packed: true });
    }
    Ok(())
}

fn submit_workers(req: &RunRequest<'_>, submitter: &mut Submitter<'_>, keys: &[usize]) -> Result<(JobId, usize), SubmitError> {
    let pack = submitter.config.pack.max(1);
    let workers = keys.len().div_ceil(pack).clamp(1, submitter.config.max_workers.max(1)).min(submitter.array_limit);
    let per_worker = keys.len().div_ceil(workers);
    let resources = worker_resources(req, keys, per_worker);
    let q = queue_dir(submitter);
    let job = submitter.submit_workers(&q, workers, per_worker, resources)?;
    Ok((job, workers))
}

/// The key was taken by a worker.
pub(super) fn claimed(s: &Submitter<'_>, key: &str) -> bool {
    let q = queue_dir(s);
    q.join("claimed").join(key).exists() || q.join("done").join(key).exists()
}

/// Why a packed key has no result, once that is certain.
pub(super) fn failure(cache: &Cache, s: &Submitter<'_>, key: &str, submitted_unix: f64) -> Option<String> {
    let err = cache.work(key).error();
    let fresh = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .is_some_and(|d| d.as_secs_f64() + 1.0 >= submitted_unix)
    };
    let q = queue_dir(s);
    let done = q.join("done").join(key);
    if fresh(&err) && !lock::is_locked(&cache.lock_path(key)) {
        return Some(fs::read_to_string(&err).map(|t| t.trim().to_owned()).unwrap_or_default());
    }
    if done.exists() && !cache.is_cached(key) {
        let early = fs::read_to_string(cache.work(key).spawn_log()).unwrap_or_default();
        let last = early.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("the worker finished without a result");
        return Some(last.trim().to_owned());
    }
    let claim = q.join("claimed").join(key);
    if claim.exists() && !lock::is_locked(&cache.lock_path(key)) && age(&claim).is_some_and(|a| a > CLAIM_GRACE) {
        return Some("its worker job died while computing it (time limit, memory or node failure?)".to_owned());
    }
    None
}

fn age(p: &Path) -> Option<Duration> {
    fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
}

/// Take keys out of the queue (their inputs failed).
pub(super) fn drop_keys<'k>(s: &Submitter<'_>, keys: impl Iterator<Item = &'k str>) {
    let pending = queue_dir(s).join("pending");
    for k in keys {
        let _ = fs::remove_file(pending.join(k));
    }
}

/// Empty the queue: workers finish their current key and stop.
pub(super) fn withdraw(s: &Submitter<'_>) {
    let pending = queue_dir(s).join("pending");
    if let Ok(rd) = fs::read_dir(&pending) {
        for e in rd.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Worker jobs submitted after the first round.
#[derive(Default)]
pub(super) struct Workers {
    pub jobs: Vec<JobId>,
    rounds: usize,
    first: Option<JobId>,
}

impl Workers {
    /// When no worker is queued or running but keys wait, submit more.
    pub(super) fn top_up(
        &mut self,
        req: &RunRequest<'_>,
        submitter: &mut Submitter<'_>,
        queue: &HashMap<JobId, QueueEntry>,
        waiting: &[usize],
    ) -> Result<(), SubmitError> {
        let p = req.pipeline;
        if self.first.is_none() {
            let pending = queue_dir(submitter).join("pending");
            self.first = waiting.iter().find_map(|&i| record::read(req.cache, &p.instances[i].key).map(|r| JobId(r.job))).filter(|_| pending.exists());
        }
        let all: Vec<&JobId> = self.first.iter().chain(self.jobs.iter()).collect();
        if all.iter().any(|j| lookup(queue, j).is_none_or(|e| e.state.is_live())) {
            return Ok(());
        }
        let pending_dir = queue_dir(submitter).join("pending");
        let left: Vec<usize> = waiting.iter().copied().filter(|&i| pending_dir.join(&p.instances[i].key).exists()).collect();
        if left.is_empty() {
            return Ok(());
        }
        if self.rounds >= MAX_ROUNDS {
            return Err(SubmitError::Io {
                path: pending_dir,
                source: std::io::Error::other(format!("{} round(s) of worker jobs ended with keys left in the queue", self.rounds + 1)),
            });
        }
        self.rounds += 1;
        let (job, _) = submit_workers(req, submitter, &left)?;
        self.jobs.push(job);
        Ok(())
    }
}

struct Entry {
    order: usize,
    key: String,
    job_file: PathBuf,
}

fn read_pending(q: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(q.join("pending")) else { return out };
    for e in rd.flatten() {
        let key = e.file_name().to_string_lossy().into_owned();
        let Ok(text) = fs::read_to_string(e.path()) else { continue };
        let mut lines = text.lines();
        let (Some(order), Some(job)) = (lines.next().and_then(|o| o.trim().parse().ok()), lines.next()) else { continue };
        out.push(Entry { order, key, job_file: PathBuf::from(job) });
    }
    out.sort_by_key(|e| e.order);
    out
}

/// `wfpipe slurm-worker`: compute keys from a queue folder until it holds nothing this
/// worker can run, or `max` keys were computed. Returns the exit code.
pub fn run_worker(cache_root: &Path, queue: &Path, max: usize) -> i32 {
    let cache = match Cache::open(cache_root) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot open cache {}: {e}", cache_root.display());
            return crate::exec_stage::EXIT_SETUP;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find the wfpipe binary: {e}");
            return crate::exec_stage::EXIT_SETUP;
        }
    };
    let mut computed = 0;
    while computed < max.max(1) {
        let entries = read_pending(queue);
        if entries.is_empty() {
            break;
        }
        let in_progress = |key: &str| {
            let c = queue.join("claimed").join(key);
            c.exists() && (lock::is_locked(&cache.lock_path(key)) || age(&c).is_none_or(|a| a < CLAIM_GRACE))
        };
        // In queue order (topological): runnable = inputs cached; alive = will become so.
        let mut alive: HashSet<&str> = HashSet::new();
        let mut pick = None;
        for e in &entries {
            let inputs: Vec<String> = Job::read(&e.job_file).map(|j| j.spec.all_inputs().map(|r| r.key.clone()).collect()).unwrap_or_default();
            if inputs.iter().all(|k| cache.is_cached(k)) {
                pick = Some(e);
                break;
            }
            if inputs.iter().all(|k| cache.is_cached(k) || alive.contains(k.as_str()) || in_progress(k)) {
                alive.insert(&e.key);
            }
        }
        let Some(e) = pick else {
            if alive.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let claimed = queue.join("claimed").join(&e.key);
        if fs::rename(queue.join("pending").join(&e.key), &claimed).is_err() {
            continue; // another worker took it
        }
        let _ = fs::write(&claimed, format!("{}\n{}\n", crate::cache::hostname(), std::process::id()));
        let early = cache.work(&e.key).open_spawn_log();
        let mut cmd = Command::new(&exe);
        cmd.arg("exec-stage").arg("--cache").arg(cache.root()).arg(&e.job_file).stdin(Stdio::null()).stdout(Stdio::null());
        if let Ok(f) = early {
            cmd.stderr(f);
        }
        let code = cmd.status().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
        eprintln!("wfpipe worker: {} exited with {code}", e.key);
        let _ = fs::rename(&claimed, queue.join("done").join(&e.key));
        computed += 1;
    }
    0
}
