//! Following submitted jobs until every instance finished, failed or cannot run: the
//! cache says what finished, the queue says what is waiting, running or ended badly.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::client::{self, lookup, JobId, QueueEntry};
use super::config::SlurmConfig;
use super::state::{dependency_never_satisfied, EndedHow, JobState};
use super::submit::Submitter;
use super::{fail_and_skip, pack, Out, Tracked};
use crate::event::Event;
use crate::executor::local::read_progress;
use crate::executor::{interrupted, RunRequest};

struct Watch {
    started: Option<Instant>,
    progress_offset: u64,
    /// When the job was first seen gone from the queue (or completed without a result).
    missing_since: Option<Instant>,
}

/// How long a job may be absent from the queue, or completed without a published entry,
/// before it counts as lost (the shared filesystem may show the entry late).
const GRACE: Duration = Duration::from_secs(10);

/// Follow this run's jobs in the queue and the cache until each has ended.
pub(super) fn follow(
    req: &RunRequest<'_>,
    config: &SlurmConfig,
    submitter: &mut Submitter<'_>,
    tracked: Vec<Tracked>,
    out: &mut Out<'_>,
    deps: &[Vec<usize>],
    done: HashSet<usize>,
) {
    let mut tracked = tracked;
    tracked.sort_by_key(|t| t.idx);
    let watch = tracked.iter().map(|t| (t.idx, Watch { started: None, progress_offset: 0, missing_since: None })).collect();
    let mut f = Follower { req, submitter, out, deps, tracked, watch, done, workers: pack::Workers::default(), stop_rest: None };
    let mut last_poll: Option<Instant> = None;
    loop {
        if interrupted() {
            f.cancel_all();
            return;
        }
        f.look_at_cache();
        if f.tracked.iter().all(|t| f.done.contains(&t.idx)) {
            break;
        }
        if last_poll.is_some_and(|t| t.elapsed() < config.poll) {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        last_poll = Some(Instant::now());
        let Some(queue) = f.queue() else { continue };
        let mut newly_failed = false;
        for i in 0..f.tracked.len() {
            newly_failed |= f.judge(i, &queue);
        }
        if newly_failed && !req.keep_going && f.stop_rest.is_none() {
            f.stop_pending(&queue);
        }
        f.keep_workers(&queue);
    }
}

/// The driver's state while it follows a run, in one place.
struct Follower<'f, 'r, 's, 'o> {
    req: &'f RunRequest<'r>,
    submitter: &'f mut Submitter<'s>,
    out: &'f mut Out<'o>,
    deps: &'f [Vec<usize>],
    tracked: Vec<Tracked>,
    watch: HashMap<usize, Watch>,
    done: HashSet<usize>,
    workers: pack::Workers,
    /// Set at the first failure without --keep-going: nothing more is started.
    stop_rest: Option<String>,
}

impl Follower<'_, '_, '_, '_> {
    /// Ctrl-C: cancel this run's jobs and workers, and report what was running as failed.
    fn cancel_all(&mut self) {
        let p = self.req.pipeline;
        self.out.summary.interrupted = true;
        let mut ids: Vec<JobId> = self.tracked.iter().filter(|t| t.ours && !self.done.contains(&t.idx)).map(|t| t.job.clone()).collect();
        ids.extend(self.workers.jobs.iter().cloned());
        ids.sort();
        ids.dedup();
        if let Err(e) = client::scancel(&ids) {
            eprintln!("error: cannot cancel this run's jobs {}: {e}", ids.iter().map(|j| j.0.as_str()).collect::<Vec<_>>().join(" "));
        }
        pack::withdraw(self.submitter);
        for t in &self.tracked {
            if t.ours && !self.done.contains(&t.idx) && self.watch.get(&t.idx).is_some_and(|w| w.started.is_some()) {
                let inst = &p.instances[t.idx];
                self.out.emit(Event::Failed {
                    instance: inst.id.clone(),
                    message: format!("interrupted (SLURM job {} cancelled)", t.job),
                    log: self.req.cache.work(&inst.key).log(),
                    code: None,
                });
            }
        }
    }

    /// The cheap checks of every tick: published entries and progress files.
    fn look_at_cache(&mut self) {
        let (req, p) = (self.req, self.req.pipeline);
        for t in &self.tracked {
            if self.done.contains(&t.idx) {
                continue;
            }
            let inst = &p.instances[t.idx];
            let Some(w) = self.watch.get_mut(&t.idx) else { continue };
            if req.cache.is_cached(&inst.key) {
                finish(req, self.out, t, w);
                self.done.insert(t.idx);
                continue;
            }
            if w.started.is_some() {
                read_progress(req, &inst.id, &inst.key, &mut w.progress_offset, self.out.sink);
            } else if t.packed && pack::claimed(self.submitter, &inst.key) {
                w.started = Some(Instant::now());
                self.out.emit(Event::Started { instance: inst.id.clone(), key: inst.key.clone(), gpus: Vec::new() });
            }
        }
    }

    /// The queue, with accounting asked once for the jobs the controller forgot.
    fn queue(&self) -> Option<HashMap<JobId, QueueEntry>> {
        let mut queue = match client::squeue() {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!("squeue failed, retrying: {e}");
                return None;
            }
        };
        let missing: Vec<String> = self
            .tracked
            .iter()
            .filter(|t| !self.done.contains(&t.idx) && lookup(&queue, &t.job).is_none())
            .map(|t| t.job.base().to_owned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
            queue.extend(client::sacct(&refs));
        }
        Some(queue)
    }

    /// Read the fate of tracked instance `i` from the cache and the queue; true when it
    /// failed just now.
    fn judge(&mut self, i: usize, queue: &HashMap<JobId, QueueEntry>) -> bool {
        let (req, p) = (self.req, self.req.pipeline);
        let t = self.tracked[i].clone();
        if self.done.contains(&t.idx) {
            return false;
        }
        let inst = &p.instances[t.idx];
        let Some(w) = self.watch.get_mut(&t.idx) else { return false };
        if req.cache.is_cached(&inst.key) {
            finish(req, self.out, &t, w);
            self.done.insert(t.idx);
            return false;
        }
        if t.packed {
            // Packed keys: the worker jobs are shared; the key's own files tell its fate.
            let Some(message) = pack::failure(req.cache, self.submitter, &inst.key, t.submitted_unix) else { return false };
            let skipped = fail_and_skip(req, self.out, self.deps, &mut self.done, t.idx, message, None);
            pack::drop_keys(self.submitter, skipped.iter().map(|&d| p.instances[d].key.as_str()));
            return true;
        }
        let entry = lookup(queue, &t.job);
        match entry.as_ref().map(|e| e.state) {
            Some(JobState::Pending) | Some(JobState::Other) => {
                let reason = entry.as_ref().map(|e| e.reason.as_str()).unwrap_or("");
                if dependency_never_satisfied(reason) {
                    self.skip_for_input(&t);
                    if t.ours {
                        let _ = client::scancel(std::slice::from_ref(&t.job));
                    }
                }
                false
            }
            Some(JobState::Running) => {
                if w.started.is_none() {
                    w.started = Some(Instant::now());
                    self.out.emit(Event::Started { instance: inst.id.clone(), key: inst.key.clone(), gpus: Vec::new() });
                }
                false
            }
            Some(JobState::Completed) | None => {
                // exec-stage publishes before it exits, and a job the queue forgot may have
                // published late: allow the filesystem to catch up.
                let since = *w.missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() < GRACE {
                    return false;
                }
                let what = if entry.is_some() { "completed but published no entry" } else { "left the queue without a result" };
                let (message, log) = failure(req, &inst.key, None, &t.job);
                self.fail(t.idx, format!("job {} {what}: {message}", t.job), log);
                true
            }
            Some(JobState::Ended(how)) => {
                if how == EndedHow::Cancelled && entry.as_ref().is_some_and(|e| dependency_never_satisfied(&e.reason)) {
                    self.skip_for_input(&t);
                    return false;
                }
                let (message, log) = failure(req, &inst.key, Some(how), &t.job);
                self.fail(t.idx, message, log);
                true
            }
        }
    }

    /// An instance whose job can never start because an input failed.
    fn skip_for_input(&mut self, t: &Tracked) {
        let because = failed_input(self.req, t.idx).unwrap_or_else(|| "an input".to_owned());
        self.done.insert(t.idx);
        self.out.emit(Event::Skipped { instance: self.req.pipeline.instances[t.idx].id.clone(), because });
    }

    /// Report a failure and skip what depends on it. Their jobs wait on a dependency that
    /// can never be satisfied: SLURM cancels them when configured to (kill_invalid_depend),
    /// otherwise they would pend forever, so they are cancelled here.
    fn fail(&mut self, idx: usize, message: String, log: PathBuf) {
        let skipped = fail_and_skip(self.req, self.out, self.deps, &mut self.done, idx, message, Some(log));
        let cancel: Vec<JobId> = self.tracked.iter().filter(|t| t.ours && skipped.contains(&t.idx)).map(|t| t.job.clone()).collect();
        if let Err(e) = client::scancel(&cancel) {
            tracing::warn!("cannot cancel dependents of a failed job: {e}");
        }
    }

    /// Like the local executor without --keep-going: what has not started is not started
    /// (cancelled), what runs finishes.
    fn stop_pending(&mut self, queue: &HashMap<JobId, QueueEntry>) {
        let p = self.req.pipeline;
        self.stop_rest = self.out.summary.failed.first().map(|f| f.0.clone());
        let because = self.stop_rest.clone().unwrap_or_default();
        let mut cancel = Vec::new();
        for t in &self.tracked {
            if self.done.contains(&t.idx) || !t.ours || t.packed {
                continue;
            }
            if lookup(queue, &t.job).is_some_and(|e| e.state == JobState::Pending) {
                cancel.push(t.job.clone());
                self.done.insert(t.idx);
                self.out.emit(Event::Skipped { instance: p.instances[t.idx].id.clone(), because: because.clone() });
            }
        }
        if let Err(e) = client::scancel(&cancel) {
            tracing::warn!("cannot cancel pending jobs: {e}");
        }
        pack::withdraw(self.submitter);
    }

    /// Packed keys: keep enough workers alive for the keys still waiting, or, once the run
    /// stops, skip the keys no worker has claimed.
    fn keep_workers(&mut self, queue: &HashMap<JobId, QueueEntry>) {
        let p = self.req.pipeline;
        if let Some(because) = self.stop_rest.clone() {
            for t in &self.tracked {
                if t.packed && !self.done.contains(&t.idx) && !pack::claimed(self.submitter, &p.instances[t.idx].key) {
                    self.done.insert(t.idx);
                    self.out.emit(Event::Skipped { instance: p.instances[t.idx].id.clone(), because: because.clone() });
                }
            }
            return;
        }
        let waiting: Vec<usize> = self.tracked.iter().filter(|t| t.packed && t.ours && !self.done.contains(&t.idx)).map(|t| t.idx).collect();
        if waiting.is_empty() {
            return;
        }
        if let Err(e) = self.workers.top_up(self.req, self.submitter, queue, &waiting) {
            for idx in waiting {
                if !self.done.contains(&idx) {
                    fail_and_skip(self.req, self.out, self.deps, &mut self.done, idx, format!("cannot submit worker jobs: {e}"), None);
                }
            }
        }
    }
}

fn finish(req: &RunRequest<'_>, out: &mut Out<'_>, t: &Tracked, w: &mut Watch) {
    let inst = &req.pipeline.instances[t.idx];
    let manifest = req.cache.read_manifest(&inst.key).ok();
    let by_other = manifest.as_ref().is_some_and(|m| m.started_unix + 1.0 < t.submitted_unix);
    if w.started.is_none() {
        out.emit(Event::Started { instance: inst.id.clone(), key: inst.key.clone(), gpus: Vec::new() });
    }
    read_progress(req, &inst.id, &inst.key, &mut w.progress_offset, out.sink);
    let seconds = manifest.map(|m| m.duration_s).unwrap_or_else(|| w.started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0));
    out.emit(Event::Finished { instance: inst.id.clone(), seconds, by_other });
}

/// The first input of an instance that failed in an earlier attempt (for messages).
fn failed_input(req: &RunRequest<'_>, idx: usize) -> Option<String> {
    let p = req.pipeline;
    p.instances[idx]
        .inputs
        .values()
        .flatten()
        .map(|&u| &p.instances[u])
        .find(|u| !req.cache.is_cached(&u.key))
        .map(|u| u.id.clone())
}

/// The best message for a job that ended without a result, and the log to read.
pub(crate) fn failure(req: &RunRequest<'_>, key: &str, how: Option<EndedHow>, job: &JobId) -> (String, PathBuf) {
    let log = req.cache.work(key).log();
    let slurm_out = slurm_output(req, key, job);
    let log = if log.exists() { log } else { slurm_out.clone().unwrap_or(log) };
    if let Ok(text) = fs::read_to_string(req.cache.work(key).error()) {
        if !text.trim().is_empty() {
            return (text.trim().to_owned(), log);
        }
    }
    let slurm_line = slurm_out
        .and_then(|p| fs::read_to_string(p).ok())
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned()));
    let message = match (how, slurm_line) {
        (Some(h), Some(line)) => format!("{}: {line}", h.describe()),
        (Some(h), None) => h.describe().to_owned(),
        (None, Some(line)) => line,
        (None, None) => "no error message".to_owned(),
    };
    (message, log)
}

/// SLURM's own output file for a job, in the key's work folder.
fn slurm_output(req: &RunRequest<'_>, key: &str, job: &JobId) -> Option<PathBuf> {
    let work = req.cache.work(key).dir().to_path_buf();
    let exact = work.join(format!("slurm-{}.out", job.0));
    if exact.exists() {
        return Some(exact);
    }
    let mut found: Vec<PathBuf> = fs::read_dir(&work)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("slurm-") && n.to_string_lossy().ends_with(".out")))
        .collect();
    found.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    found.pop()
}
