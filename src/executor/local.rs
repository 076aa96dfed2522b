//! The local executor: ready instances run as child processes in parallel, within the
//! job count, CPU, GPU and memory budget; progress is read from each key's progress file.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wfpipe_stages::kind::Resources;

use super::{interrupted, Executor, RunRequest};
use crate::dag::{dependents, downstream};
use crate::event::{Event, EventSink, RunSummary};
use crate::exec_stage::{EXIT_CACHED, EXIT_OK};
use crate::job::Job;
use crate::scheduler::{most_work_first, Capacity, Slots};

pub struct LocalExecutor {
    pub capacity: Capacity,
    /// The wfpipe binary that runs `exec-stage`.
    pub exe: PathBuf,
}

struct Running {
    child: Child,
    resources: Resources,
    gpus: Vec<u32>,
    started: Instant,
    progress_offset: u64,
}

impl Executor for LocalExecutor {
    fn execute(&mut self, req: &RunRequest<'_>, sink: &mut dyn EventSink) -> RunSummary {
        let p = req.pipeline;
        let mut summary = RunSummary::default();
        let deps = dependents(&p.instances);
        let work: Vec<f64> = p.instances.iter().map(|i| i.flops.unwrap_or(0.0)).collect();
        let mut waiting: Vec<usize> = most_work_first(&req.todo, &work, &deps);
        let todo_set: HashSet<usize> = req.todo.iter().copied().collect();
        let mut finished: HashSet<usize> = HashSet::new();
        let mut running: HashMap<usize, Running> = HashMap::new();
        let mut slots = Slots::new(self.capacity);
        let mut stop_launching = false;
        let emit = |sink: &mut dyn EventSink, summary: &mut RunSummary, e: Event| {
            summary.record(&e);
            sink.event(e);
        };
        loop {
            if interrupted() && !summary.interrupted {
                summary.interrupted = true;
                stop_launching = true;
                for r in running.values() {
                    // Children run in their own process groups: stop the whole group.
                    unsafe {
                        libc::kill(-(r.child.id() as i32), libc::SIGTERM);
                    }
                }
            }
            // Launch what is ready and fits.
            if !stop_launching {
                let mut i = 0;
                while i < waiting.len() {
                    let idx = waiting[i];
                    let inst = &p.instances[idx];
                    let ready = inst.inputs.values().flatten().all(|u| !todo_set.contains(u) || finished.contains(u));
                    if !ready {
                        i += 1;
                        continue;
                    }
                    let Some(gpus) = slots.try_take(inst.resources) else {
                        i += 1;
                        continue;
                    };
                    waiting.remove(i);
                    match self.spawn(req, idx, &gpus) {
                        Ok(child) => {
                            emit(sink, &mut summary, Event::Started { instance: inst.id.clone(), key: inst.key.clone(), gpus: gpus.clone() });
                            running.insert(idx, Running { child, resources: inst.resources, gpus, started: Instant::now(), progress_offset: 0 });
                        }
                        Err(e) => {
                            slots.give_back(inst.resources, gpus);
                            let log = req.cache.work(&inst.key).log();
                            emit(sink, &mut summary, Event::Failed { instance: inst.id.clone(), message: format!("cannot start: {e}"), log, code: None });
                            skip_downstream(p, &deps, idx, &mut waiting, sink, &mut summary);
                            if !req.keep_going {
                                stop_launching = true;
                            }
                        }
                    }
                }
            }
            if running.is_empty() && (waiting.is_empty() || stop_launching) {
                break;
            }
            if running.is_empty() && slots.running() == 0 && !waiting.is_empty() {
                // Nothing runs and nothing can start: inputs failed earlier.
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            // Progress and exits.
            let mut exited = Vec::new();
            for (&idx, r) in running.iter_mut() {
                let inst = &p.instances[idx];
                read_progress(req, &inst.id, &inst.key, &mut r.progress_offset, sink);
                if let Ok(Some(status)) = r.child.try_wait() {
                    exited.push((idx, status));
                }
            }
            for (idx, status) in exited {
                let r = running.remove(&idx).expect("running");
                slots.give_back(r.resources, r.gpus);
                let inst = &p.instances[idx];
                let seconds = r.started.elapsed().as_secs_f64();
                let code = status.code();
                if (code == Some(EXIT_OK) || code == Some(EXIT_CACHED)) && req.cache.is_cached(&inst.key) {
                    finished.insert(idx);
                    emit(sink, &mut summary, Event::Finished { instance: inst.id.clone(), seconds, by_other: code == Some(EXIT_CACHED) });
                } else {
                    let message = if summary.interrupted {
                        "interrupted".to_owned()
                    } else {
                        failure_message(req, &inst.key, code)
                    };
                    let log = req.cache.work(&inst.key).log();
                    emit(sink, &mut summary, Event::Failed { instance: inst.id.clone(), message, log, code });
                    skip_downstream(p, &deps, idx, &mut waiting, sink, &mut summary);
                    if !req.keep_going {
                        stop_launching = true;
                    }
                }
            }
        }
        // Whatever never started because the run stopped early.
        if stop_launching && !summary.interrupted {
            let first_failure = summary.failed.first().map(|f| f.0.clone()).unwrap_or_default();
            for idx in waiting.drain(..) {
                emit(sink, &mut summary, Event::Skipped { instance: p.instances[idx].id.clone(), because: first_failure.clone() });
            }
        }
        sink.finish();
        summary
    }
}

impl LocalExecutor {
    fn spawn(&self, req: &RunRequest<'_>, idx: usize, gpus: &[u32]) -> std::io::Result<Child> {
        let p = req.pipeline;
        let inst = &p.instances[idx];
        let work = req.cache.work(&inst.key);
        let job = Job::for_instance(p, inst, &req.data_dir, req.backend);
        let job_file = job.write_to(&work)?;
        let early = work.open_spawn_log()?;
        let threads = job.threads.to_string();
        let mut cmd = Command::new(&self.exe);
        cmd.arg("exec-stage")
            .arg("--cache")
            .arg(req.cache.root())
            .arg(&job_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(early)
            .env("RAYON_NUM_THREADS", &threads)
            .env("OMP_NUM_THREADS", &threads)
            .process_group(0);
        if !gpus.is_empty() {
            let ids: Vec<String> = gpus.iter().map(u32::to_string).collect();
            cmd.env("CUDA_VISIBLE_DEVICES", ids.join(","));
        }
        cmd.spawn()
    }
}

fn failure_message(req: &RunRequest<'_>, key: &str, code: Option<i32>) -> String {
    if let Ok(text) = fs::read_to_string(req.cache.work(key).error()) {
        if !text.trim().is_empty() {
            return text.trim().to_owned();
        }
    }
    if let Ok(text) = fs::read_to_string(req.cache.work(key).spawn_log()) {
        if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
            return last.trim().to_owned();
        }
    }
    match code {
        Some(c) => format!("exec-stage exited with status {c}"),
        None => "killed by a signal (out of memory?)".to_owned(),
    }
}

fn skip_downstream(
    p: &crate::pipeline::Pipeline,
    deps: &[Vec<usize>],
    failed: usize,
    waiting: &mut Vec<usize>,
    sink: &mut dyn EventSink,
    summary: &mut RunSummary,
) {
    let down: HashSet<usize> = downstream(deps, failed).into_iter().collect();
    waiting.retain(|&w| {
        if down.contains(&w) {
            let e = Event::Skipped { instance: p.instances[w].id.clone(), because: p.instances[failed].id.clone() };
            summary.record(&e);
            sink.event(e);
            false
        } else {
            true
        }
    });
}

/// Read new lines of a key's progress file and turn the latest into events.
pub fn read_progress(req: &RunRequest<'_>, instance: &str, key: &str, offset: &mut u64, sink: &mut dyn EventSink) {
    let Ok(mut f) = fs::File::open(req.cache.work(key).progress()) else { return };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return };
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = String::new();
    if f.read_to_string(&mut buf).is_err() {
        return;
    }
    let Some(end) = buf.rfind('\n') else { return };
    *offset += end as u64 + 1;
    for e in progress_events(instance, &buf[..end]) {
        sink.event(e);
    }
}

/// The events of complete progress lines: every metric line, then the last step with the
/// metrics it carries.
fn progress_events(instance: &str, lines: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut last_step = None;
    for line in lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let (Some(step), Some(total)) = (v.get("step").and_then(|x| x.as_u64()), v.get("total").and_then(|x| x.as_u64())) {
            last_step = Some((step, total, v));
        } else if let (Some(name), Some(value)) = (v.get("metric").and_then(|x| x.as_str()), v.get("value").and_then(|x| x.as_f64())) {
            events.push(Event::Metric { instance: instance.to_owned(), name: name.to_owned(), value });
        }
    }
    if let Some((step, total, v)) = last_step {
        let unit = v.get("unit").and_then(|x| x.as_str()).unwrap_or("").to_owned();
        events.push(Event::Progress { instance: instance.to_owned(), step, total, unit });
        for (name, value) in v.get("metrics").and_then(|m| m.as_object()).into_iter().flatten() {
            if let Some(value) = value.as_f64() {
                events.push(Event::Metric { instance: instance.to_owned(), name: name.clone(), value });
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_step_brings_its_metrics() {
        let lines = concat!(
            "{\"step\":1,\"total\":10,\"unit\":\"it\",\"metrics\":{}}\n",
            "{\"metric\":\"accuracy\",\"value\":0.5}\n",
            "{\"step\":7,\"total\":10,\"unit\":\"it\",\"metrics\":{\"loss\":0.25}}",
        );
        let events = progress_events("flow", lines);
        let shown: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Progress { step, total, unit, .. } => format!("progress {step}/{total} {unit}"),
                Event::Metric { name, value, .. } => format!("metric {name}={value}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(shown, ["metric accuracy=0.5", "progress 7/10 it", "metric loss=0.25"]);
    }
}
