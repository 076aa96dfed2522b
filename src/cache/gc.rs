//! `cache gc`: remove entries that no named pipeline reaches (with their logs), optionally
//! only until the cache fits a size cap (oldest first). Dry run unless asked to apply.

use std::collections::BTreeSet;
use std::fs;

use super::{dir_size, Cache};

#[derive(Debug)]
pub struct GcCandidate {
    pub key: String,
    pub bytes: u64,
    pub finished_unix: f64,
    pub instance: String,
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub total_bytes: u64,
    pub kept: usize,
    pub removed: Vec<GcCandidate>,
}

/// `reachable`: keys of every instance of the pipelines named. With `max_bytes`, only as
/// many unreachable entries are removed (oldest first) as needed to fit under it.
pub fn gc(cache: &Cache, reachable: &BTreeSet<String>, max_bytes: Option<u64>, apply: bool) -> std::io::Result<GcReport> {
    let mut report = GcReport::default();
    let mut unreachable = Vec::new();
    for key in cache.keys()? {
        let bytes = dir_size(&cache.entry_dir(&key));
        report.total_bytes += bytes;
        if reachable.contains(&key) {
            report.kept += 1;
            continue;
        }
        let (finished_unix, instance) = match cache.read_manifest(&key) {
            Ok(m) => (m.started_unix + m.duration_s, m.instance),
            Err(_) => (0.0, String::from("?")),
        };
        unreachable.push(GcCandidate { key, bytes, finished_unix, instance });
    }
    unreachable.sort_by(|a, b| a.finished_unix.total_cmp(&b.finished_unix));
    let mut size = report.total_bytes;
    for c in unreachable {
        if let Some(cap) = max_bytes {
            if size <= cap {
                report.kept += 1;
                continue;
            }
        }
        size -= c.bytes;
        if apply {
            super::remove_tree(&cache.entry_dir(&c.key))?;
            // The entry's log and progress would only describe an entry that is gone.
            match fs::remove_dir_all(cache.work(&c.key).dir()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        report.removed.push(c);
    }
    Ok(report)
}
