//! `cache/work/<key>/slurm.json`: which SLURM job computes a key, so that a later `run`
//! or `status` (after `--detach`, a killed driver, or from another machine on the shared
//! filesystem) finds it in the queue instead of submitting the key twice.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::client::{JobId, QueueEntry};
use crate::cache::Cache;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SlurmRecord {
    /// `123` or `123_4` (array task), or the worker array's id when packed.
    pub job: String,
    /// The run that submitted it (also in the job's `--comment`).
    pub run: String,
    pub instance: String,
    pub submitted_unix: f64,
    /// Packed: the key waits in this run's queue folder for a worker job.
    #[serde(default)]
    pub packed: bool,
}

pub fn path(cache: &Cache, key: &str) -> PathBuf {
    cache.work(key).dir().join("slurm.json")
}

pub fn read(cache: &Cache, key: &str) -> Option<SlurmRecord> {
    let bytes = fs::read(path(cache, key)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write(cache: &Cache, key: &str, rec: &SlurmRecord) -> std::io::Result<()> {
    let p = path(cache, key);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
    fs::rename(tmp, p)
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A key's job, if the queue still holds it as pending or running.
pub fn live_job<'a>(rec: &SlurmRecord, queue: &'a HashMap<JobId, QueueEntry>) -> Option<&'a QueueEntry> {
    queue.get(&JobId(rec.job.clone())).filter(|e| e.state.is_live())
}
