//! What `wfpipe status` learns from SLURM: for keys with a `slurm.json`, whether their
//! job is queued, running, or ended without a result. One `squeue` call, and none at all
//! when no key was ever submitted to SLURM.

use std::collections::HashMap;
use std::fs;

use super::client::{self, JobId};
use super::record;
use super::state::{dependency_never_satisfied, JobState};
use super::client::lookup;
use crate::cache::{lock, Cache};
use crate::pipeline::Pipeline;

#[derive(Clone, Debug, PartialEq)]
pub enum Live {
    Queued { job: String },
    Running { job: String },
    /// The job ended (or can never start) and the key has no entry.
    Ended { job: String, message: String },
}

/// Per key (not cached, with a SLURM record): what the queue says.
pub fn queue_view(p: &Pipeline, cache: &Cache) -> HashMap<String, Live> {
    let mut records = Vec::new();
    for inst in &p.instances {
        if cache.is_cached(&inst.key) {
            continue;
        }
        if let Some(rec) = record::read(cache, &inst.key) {
            records.push((inst.key.clone(), rec));
        }
    }
    let mut view = HashMap::new();
    if records.is_empty() {
        return view;
    }
    let mut queue = match client::squeue() {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!("cannot ask SLURM about submitted keys: {e}");
            return view;
        }
    };
    let missing: Vec<String> = records.iter().filter(|(_, r)| lookup(&queue, &JobId(r.job.clone())).is_none()).map(|(_, r)| JobId(r.job.clone()).base().to_owned()).collect();
    if !missing.is_empty() {
        let mut m = missing.clone();
        m.sort();
        m.dedup();
        let refs: Vec<&str> = m.iter().map(String::as_str).collect();
        queue.extend(client::sacct(&refs));
    }
    let inputs_cached: HashMap<&str, bool> = p
        .instances
        .iter()
        .map(|i| (i.key.as_str(), i.inputs.values().flatten().all(|&u| cache.is_cached(&p.instances[u].key))))
        .collect();
    for (key, rec) in records {
        let Some(entry) = lookup(&queue, &JobId(rec.job.clone())) else { continue };
        let job = rec.job.clone();
        // A job that never ran because an input failed is "not run", not a failure.
        let inputs_ok = inputs_cached.get(key.as_str()).copied().unwrap_or(true);
        let live = match entry.state {
            JobState::Pending if dependency_never_satisfied(&entry.reason) => continue,
            JobState::Ended(_) if !inputs_ok => continue,
            JobState::Pending | JobState::Other if rec.packed && lock::is_locked(&cache.lock_path(&key)) => Live::Running { job },
            JobState::Pending | JobState::Other => Live::Queued { job },
            JobState::Running if rec.packed && !lock::is_locked(&cache.lock_path(&key)) => Live::Queued { job },
            JobState::Running => Live::Running { job },
            JobState::Completed => continue,
            JobState::Ended(how) => {
                if cache.work(&key).error().exists() {
                    continue;
                }
                Live::Ended { job, message: how.describe().to_owned() }
            }
        };
        view.insert(key, live);
    }
    view
}

/// The latest progress line of a running key, e.g. `120/500 steps`.
pub fn progress_note(cache: &Cache, key: &str) -> Option<String> {
    let text = fs::read_to_string(cache.work(key).progress()).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        let step = v.get("step")?.as_u64()?;
        let total = v.get("total")?.as_u64()?;
        let unit = v.get("unit").and_then(|u| u.as_str()).unwrap_or("");
        Some(format!("{step}/{total} {unit}").trim_end().to_owned())
    })
}
