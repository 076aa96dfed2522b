//! User-visible operations, callable as a library; the CLI is a thin layer over them.

pub mod bench;
pub mod cache_cmd;
pub mod dag;
pub mod data;
pub mod export;
pub mod export_tables;
pub mod no_effect;
pub mod plan;
pub mod report;
pub mod run;
pub mod verdicts;

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::kinds::Registry;
use crate::pipeline::{self, LoadError, Pipeline};

/// Where things are, shared by every operation.
#[derive(Clone, Debug)]
pub struct Paths {
    pub cache: PathBuf,
    pub data: PathBuf,
}

impl Paths {
    /// `--cache` / `WFPIPE_CACHE`, else `cache/` beside the project; `--data-dir` /
    /// `WFPIPE_DATA`, else `data/` beside the project.
    pub fn resolve(cache: Option<PathBuf>, data: Option<PathBuf>, pipeline: &Pipeline) -> Paths {
        Paths {
            cache: cache.unwrap_or_else(|| pipeline.project_dir.join("cache")),
            data: data.unwrap_or_else(|| pipeline.project_dir.join("data")),
        }
    }
}

pub fn load(path: &Path, overrides: &[String]) -> Result<(Pipeline, Registry), LoadError> {
    let registry = Registry::standard();
    let p = pipeline::load(path, overrides, &registry)?;
    Ok((p, registry))
}

pub fn open_cache(path: &Path) -> anyhow::Result<Cache> {
    Cache::open(path).map_err(|e| anyhow::anyhow!("cannot open cache {}: {e}", path.display()))
}

/// `wfpipe kinds [KIND]`.
pub fn kinds_text(kind: Option<&str>) -> anyhow::Result<String> {
    use std::fmt::Write;
    let registry = Registry::standard();
    let mut out = String::new();
    match kind {
        None => {
            for k in registry.iter() {
                let _ = writeln!(out, "{:<14} v{:<3} {}", k.name(), k.version(), k.about());
            }
        }
        Some(name) => {
            let Some(k) = registry.get(name) else {
                let hint = crate::pipeline::diagnostic::closest(name, registry.names())
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                anyhow::bail!("no kind `{name}`{hint}");
            };
            let _ = writeln!(out, "{} (version {}): {}", k.name(), k.version(), k.about());
            for p in k.params() {
                let default = p.default.map(|d| format!(" = {d}")).unwrap_or_else(|| " (required)".into());
                let _ = writeln!(out, "  {}{default}\n      {}; {}", p.name, p.ty.describe(), p.doc);
            }
        }
    }
    Ok(out)
}
