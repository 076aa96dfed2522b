//! `wfpipe cache ls|du|verify|gc`.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::PathBuf;

use crate::cache::{dir_size, gc, verify, Cache};

pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u < units.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

/// Parse sizes like `500M`, `2G`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<f64>().map(|n| (n * mult as f64) as u64).map_err(|_| format!("`{s}` is not a size such as 500M or 2G"))
}

/// `cache ls --format json`: one object per entry (`error` where the manifest is unreadable).
pub fn ls_json(cache: &Cache) -> anyhow::Result<String> {
    use serde_json::json;
    let mut entries = Vec::new();
    for key in cache.keys()? {
        let bytes = dir_size(&cache.entry_dir(&key));
        entries.push(match cache.read_manifest(&key) {
            Ok(m) => json!({ "key": key, "kind": m.spec.kind, "instance": m.instance, "bytes": bytes, "duration_s": m.duration_s }),
            Err(e) => json!({ "key": key, "bytes": bytes, "error": e.to_string() }),
        });
    }
    Ok(format!("{}\n", serde_json::to_string_pretty(&entries)?))
}

pub fn ls(cache: &Cache) -> anyhow::Result<String> {
    let mut out = String::new();
    for key in cache.keys()? {
        let size = human_bytes(dir_size(&cache.entry_dir(&key)));
        match cache.read_manifest(&key) {
            Ok(m) => {
                let _ = writeln!(out, "{key}  {:<12} {:>10}  {:>8.1}s  {}", m.spec.kind, size, m.duration_s, m.instance);
            }
            Err(e) => {
                let _ = writeln!(out, "{key}  (unreadable manifest: {e})");
            }
        }
    }
    Ok(out)
}

pub fn du(cache: &Cache) -> anyhow::Result<String> {
    let keys = cache.keys()?;
    let total: u64 = keys.iter().map(|k| dir_size(&cache.entry_dir(k))).sum();
    let work = dir_size(&cache.root().join("work"));
    let quarantine = dir_size(&cache.quarantine_dir());
    Ok(format!(
        "{} entries, {}; work folders {}; quarantine {}\n",
        keys.len(),
        human_bytes(total),
        human_bytes(work),
        human_bytes(quarantine)
    ))
}

/// Returns the text and whether the cache was clean.
pub fn verify_cmd(cache: &Cache, dry_run: bool) -> anyhow::Result<(String, bool)> {
    let report = verify::verify(cache, dry_run)?;
    let mut out = format!("checked {} entries: {} corrupt\n", report.checked, report.corrupt.len());
    for (key, why) in &report.corrupt {
        let action = if dry_run { "would quarantine" } else { "quarantined" };
        let _ = writeln!(out, "  {action} {key}: {why}");
    }
    Ok((out, report.corrupt.is_empty()))
}

pub fn gc_cmd(cache: &Cache, pipelines: &[PathBuf], overrides: &[String], max_size: Option<u64>, apply: bool) -> anyhow::Result<String> {
    let mut reachable = BTreeSet::new();
    for p in pipelines {
        let (pipeline, _) = super::load(p, overrides)?;
        reachable.extend(pipeline.instances.iter().map(|i| i.key.clone()));
    }
    let report = gc::gc(cache, &reachable, max_size, apply)?;
    let freed: u64 = report.removed.iter().map(|c| c.bytes).sum();
    let verb = if apply { "removed" } else { "would remove" };
    let mut out = format!(
        "{verb} {} entries ({}), keeping {} of {} in all\n",
        report.removed.len(),
        human_bytes(freed),
        report.kept,
        human_bytes(report.total_bytes)
    );
    for c in &report.removed {
        let _ = writeln!(out, "  {} {:>10}  {}", c.key, human_bytes(c.bytes), c.instance);
    }
    if !apply && !report.removed.is_empty() {
        out.push_str("(dry run: pass --apply to delete)\n");
    }
    Ok(out)
}
