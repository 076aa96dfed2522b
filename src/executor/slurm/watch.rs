//! Following submitted jobs until every instance finished, failed or cannot run: the
//! cache says what finished, the queue says what is waiting, running or ended badly.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::client::{self, JobId, QueueEntry};
use super::config::SlurmConfig;
use super::state::{dependency_never_satisfied, EndedHow, JobState};
use super::submit::Submitter;
use super::{fail_and_skip, pack, Out, Tracked};
use crate::event::Event;
use crate::exec_stage;
use crate::executor::local::read_progress;
use crate::executor::{interrupted, RunRequest};

/// A job or task in the queue; a bare array id stands for its tasks (live if any is).
pub fn lookup(queue: &HashMap<JobId, QueueEntry>, job: &JobId) -> Option<QueueEntry> {
    if let Some(e) = queue.get(job) {
        return Some(e.clone());
    }
    if job.0.contains('_') {
        return None;
    }
    let prefix = format!("{}_", job.0);
    let tasks: Vec<&QueueEntry> = queue.iter().filter(|(k, _)| k.0.starts_with(&prefix)).map(|(_, v)| v).collect();
    if tasks.is_empty() {
        return None;
    }
    tasks.iter().find(|e| e.state == JobState::Running).or_else(|| tasks.iter().find(|e| e.state.is_live())).or(tasks.first()).map(|e| (*e).clone())
}

struct Watch {
    started: Option<Instant>,
    progress_offset: u64,
    /// When the job was first seen gone from the queue (or completed without a result).
    missing_since: Option<Instant>,
}

/// How long a job may be absent from the queue, or completed without a published entry,
/// before it counts as lost (the shared filesystem may show the entry late).
const GRACE: Duration = Duration::from_secs(10);

pub(super) fn follow(
    req: &RunRequest<'_>,
    config: &SlurmConfig,
    submitter: &mut Submitter<'_>,
    tracked: Vec<Tracked>,
    out: &mut Out<'_>,
    deps: &[Vec<usize>],
    mut done: HashSet<usize>,
) {
    let p = req.pipeline;
    let mut tracked = tracked;
    tracked.sort_by_key(|t| t.idx);
    let mut watch: HashMap<usize, Watch> = tracked.iter().map(|t| (t.idx, Watch { started: None, progress_offset: 0, missing_since: None })).collect();
    let mut last_poll: Option<Instant> = None;
    let mut stop_rest: Option<String> = None;
    let mut workers = pack::Workers::default();
    loop {
        if interrupted() {
            out.summary.interrupted = true;
            let ours: Vec<JobId> = tracked.iter().filter(|t| t.ours && !done.contains(&t.idx)).map(|t| t.job.clone()).collect();
            let mut ids: Vec<JobId> = ours;
            ids.extend(workers.jobs.iter().cloned());
            ids.sort();
            ids.dedup();
            if let Err(e) = client::scancel(&ids) {
                eprintln!("error: cannot cancel this run's jobs {}: {e}", ids.iter().map(|j| j.0.as_str()).collect::<Vec<_>>().join(" "));
            }
            pack::withdraw(submitter);
            for t in &tracked {
                if t.ours && !done.contains(&t.idx) && watch.get(&t.idx).is_some_and(|w| w.started.is_some()) {
                    let inst = &p.instances[t.idx];
                    out.emit(Event::Failed {
                        instance: inst.id.clone(),
                        message: format!("interrupted (SLURM job {} cancelled)", t.job),
                        log: exec_stage::log_path(req.cache, &inst.key),
                        code: None,
                    });
                }
            }
            return;
        }
        // Cheap checks every tick: published entries and progress files.
        for t in &tracked {
            if done.contains(&t.idx) {
                continue;
            }
            let inst = &p.instances[t.idx];
            let Some(w) = watch.get_mut(&t.idx) else { continue };
            if req.cache.is_cached(&inst.key) {
                finish(req, out, t, w);
                done.insert(t.idx);
                continue;
            }
            if w.started.is_some() {
                read_progress(req, &inst.id, &inst.key, &mut w.progress_offset, out.sink);
            } else if t.packed && pack::claimed(submitter, &inst.key) {
                w.started = Some(Instant::now());
                out.emit(Event::Started { instance: inst.id.clone(), key: inst.key.clone(), gpus: Vec::new() });
            }
        }
        if tracked.iter().all(|t| done.contains(&t.idx)) {
            break;
        }
        let due = last_poll.is_none_or(|t| t.elapsed() >= config.poll);
        if !due {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        last_poll = Some(Instant::now());
        let mut queue = match client::squeue() {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!("squeue failed, retrying: {e}");
                continue;
            }
        };
        // Jobs the controller forgot: ask accounting once.
        let missing: Vec<String> = tracked
            .iter()
            .filter(|t| !done.contains(&t.idx) && lookup(&queue, &t.job).is_none())
            .map(|t| t.job.base().to_owned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
            queue.extend(client::sacct(&refs));
        }
        let mut newly_failed = false;
        for i in 0..tracked.len() {
            let t = &tracked[i];
            if done.contains(&t.idx) {
                continue;
            }
            let inst = &p.instances[t.idx];
            let Some(w) = watch.get_mut(&t.idx) else { continue };
            if req.cache.is_cached(&inst.key) {
                finish(req, out, t, w);
                done.insert(t.idx);
                continue;
            }
            if t.packed {
                // Packed keys: the worker jobs are shared; the key's own files tell its fate.
                if let Some(message) = pack::failure(req.cache, submitter, &inst.key, t.submitted_unix) {
                    let skipped = fail_and_skip(req, out, deps, &mut done, t.idx, message, None);
                    pack::drop_keys(submitter, skipped.iter().map(|&d| p.instances[d].key.as_str()));
                    newly_failed = true;
                }
                continue;
            }
            let entry = lookup(&queue, &t.job);
            match entry.as_ref().map(|e| e.state) {
                Some(JobState::Pending) | Some(JobState::Other) => {
                    let reason = entry.as_ref().map(|e| e.reason.as_str()).unwrap_or("");
                    if dependency_never_satisfied(reason) {
                        let because = failed_input(req, t.idx).unwrap_or_else(|| "an input".to_owned());
                        done.insert(t.idx);
                        out.emit(Event::Skipped { instance: inst.id.clone(), because });
                        if t.ours {
                            let _ = client::scancel(std::slice::from_ref(&t.job));
                        }
                    }
                }
                Some(JobState::Running) => {
                    if w.started.is_none() {
                        w.started = Some(Instant::now());
                        out.emit(Event::Started { instance: inst.id.clone(), key: inst.key.clone(), gpus: Vec::new() });
                    }
                }
                Some(JobState::Completed) => {
                    // exec-stage publishes before it exits; allow the filesystem to catch up.
                    let since = *w.missing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GRACE {
                        let (message, log) = failure(req, &inst.key, None, &t.job);
                        let message = format!("job {} completed but published no entry: {message}", t.job);
                        fail(req, out, deps, &mut done, &tracked, t.idx, message, log);
                        newly_failed = true;
                    }
                }
                Some(JobState::Ended(how)) => {
                    if how == EndedHow::Cancelled && entry.as_ref().is_some_and(|e| dependency_never_satisfied(&e.reason)) {
                        let because = failed_input(req, t.idx).unwrap_or_else(|| "an input".to_owned());
                        done.insert(t.idx);
                        out.emit(Event::Skipped { instance: inst.id.clone(), because });
                    } else {
                        let (message, log) = failure(req, &inst.key, Some(how), &t.job);
                        fail(req, out, deps, &mut done, &tracked, t.idx, message, log);
                        newly_failed = true;
                    }
                }
                None => {
                    let since = *w.missing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= GRACE {
                        let (message, log) = failure(req, &inst.key, None, &t.job);
                        let message = format!("job {} left the queue without a result: {message}", t.job);
                        fail(req, out, deps, &mut done, &tracked, t.idx, message, log);
                        newly_failed = true;
                    }
                }
            }
        }
        if newly_failed && !req.keep_going && stop_rest.is_none() {
            // Like the local executor without --keep-going: what has not started is not
            // started (cancelled), what runs finishes.
            stop_rest = out.summary.failed.first().map(|f| f.0.clone());
            let because = stop_rest.clone().unwrap_or_default();
            let mut cancel = Vec::new();
            for t in &tracked {
                if done.contains(&t.idx) || !t.ours || t.packed {
                    continue;
                }
                if lookup(&queue, &t.job).is_some_and(|e| e.state == JobState::Pending) {
                    cancel.push(t.job.clone());
                    done.insert(t.idx);
                    out.emit(Event::Skipped { instance: p.instances[t.idx].id.clone(), because: because.clone() });
                }
            }
            if let Err(e) = client::scancel(&cancel) {
                tracing::warn!("cannot cancel pending jobs: {e}");
            }
            pack::withdraw(submitter);
        }
        // Packed: keep enough workers alive for the keys still waiting.
        let waiting: Vec<usize> = tracked.iter().filter(|t| t.packed && t.ours && !done.contains(&t.idx)).map(|t| t.idx).collect();
        if !waiting.is_empty() && stop_rest.is_none() {
            if let Err(e) = workers.top_up(req, submitter, &queue, &waiting) {
                for idx in waiting {
                    if !done.contains(&idx) {
                        fail_and_skip(req, out, deps, &mut done, idx, format!("cannot submit worker jobs: {e}"), None);
                    }
                }
            }
        } else if stop_rest.is_some() {
            for t in &tracked {
                if t.packed && !done.contains(&t.idx) && !pack::claimed(submitter, &p.instances[t.idx].key) {
                    done.insert(t.idx);
                    out.emit(Event::Skipped { instance: p.instances[t.idx].id.clone(), because: stop_rest.clone().unwrap_or_default() });
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

#[allow(clippy::too_many_arguments)]
fn fail(
    req: &RunRequest<'_>,
    out: &mut Out<'_>,
    deps: &[Vec<usize>],
    done: &mut HashSet<usize>,
    tracked: &[Tracked],
    idx: usize,
    message: String,
    log: PathBuf,
) {
    let skipped = fail_and_skip(req, out, deps, done, idx, message, Some(log));
    // Their jobs wait on a dependency that can never be satisfied: SLURM cancels them
    // when configured to (kill_invalid_depend), otherwise they would pend forever.
    let cancel: Vec<JobId> = tracked.iter().filter(|t| t.ours && skipped.contains(&t.idx)).map(|t| t.job.clone()).collect();
    if let Err(e) = client::scancel(&cancel) {
        tracing::warn!("cannot cancel dependents of a failed job: {e}");
    }
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
    let log = exec_stage::log_path(req.cache, key);
    let slurm_out = slurm_output(req, key, job);
    let log = if log.exists() { log } else { slurm_out.clone().unwrap_or(log) };
    if let Ok(text) = fs::read_to_string(exec_stage::error_path(req.cache, key)) {
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
    let work = req.cache.work_dir(key);
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
