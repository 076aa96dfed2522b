//! `cache verify`: re-hash every entry's files against its manifest; move corrupt entries
//! to `quarantine/` so the next run recomputes them.

use std::fs;
use std::path::Path;

use super::{list_files, manifest::FORMAT, Cache};
use crate::key::file_digest;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    pub corrupt: Vec<(String, String)>,
}

/// Why an entry is not a valid result, or None when it is.
pub fn check_entry(cache: &Cache, key: &str) -> Option<String> {
    let manifest = match cache.read_manifest(key) {
        Ok(m) => m,
        Err(e) => return Some(format!("manifest unreadable: {e}")),
    };
    if manifest.format != FORMAT || manifest.key != key {
        return Some("manifest belongs to another key or format".into());
    }
    let out = cache.out_dir(key);
    let present = match list_files(&out) {
        Ok(files) => files,
        Err(e) => return Some(format!("cannot list outputs: {e}")),
    };
    if present.len() != manifest.outputs.len() {
        return Some(format!("{} output files on disk, {} in the manifest", present.len(), manifest.outputs.len()));
    }
    for rec in &manifest.outputs {
        let path = out.join(&rec.path);
        match fs::metadata(&path) {
            Ok(m) if m.len() == rec.size => {}
            Ok(m) => return Some(format!("`{}` has {} bytes, expected {}", rec.path, m.len(), rec.size)),
            Err(e) => return Some(format!("`{}` is missing: {e}", rec.path)),
        }
        match file_digest(&path) {
            Ok(d) if d == rec.blake3 => {}
            Ok(_) => return Some(format!("`{}` does not match its recorded blake3 digest", rec.path)),
            Err(e) => return Some(format!("`{}` cannot be read: {e}", rec.path)),
        }
    }
    None
}

/// Verify every entry; quarantine the corrupt ones unless `dry_run`.
pub fn verify(cache: &Cache, dry_run: bool) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for key in cache.keys()? {
        report.checked += 1;
        if let Some(why) = check_entry(cache, &key) {
            if !dry_run {
                quarantine(cache, &key)?;
            }
            report.corrupt.push((key, why));
        }
    }
    Ok(report)
}

/// Move an entry aside (kept for inspection, never used again).
pub fn quarantine(cache: &Cache, key: &str) -> std::io::Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dest = cache.quarantine_dir().join(format!("{key}.{stamp}"));
    fs::rename(cache.entry_dir(key), &dest)?;
    super::fsync_dir(Path::new(&cache.quarantine_dir()))
}
