//! `wfpipe export PIPELINE TARGET --to DIR`: the cached outputs of the instances a target
//! names, copied into `DIR/<instance>/`, with the files each kind derives for other tools
//! (`StageKind::exports`, e.g. a trained flow as safetensors), and its tables reshaped for
//! analysis (`export_tables`). Computes nothing.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context};

use super::export_tables::{self, StageTables};
use super::report::{copy_writable, slug};
use super::{load, open_cache, Paths};
use crate::cache::Cache;
use crate::kinds::Registry;
use crate::pipeline::Pipeline;

pub fn export(path: &Path, overrides: &[String], cache: Option<std::path::PathBuf>, target: &str, to: &Path) -> anyhow::Result<String> {
    let (p, registry) = load(path, overrides)?;
    let cache = open_cache(&Paths::resolve(cache, None, &p).cache)?;
    export_instances(&p, &registry, &cache, target, to)
}

fn export_instances(p: &Pipeline, registry: &Registry, cache: &Cache, target: &str, to: &Path) -> anyhow::Result<String> {
    let named = p.named_by(target);
    if named.is_empty() {
        bail!("`{target}` names no instance of pipeline `{}` (an instance id, a stage, or `stage[axis=value]`)", p.name);
    }
    let missing: Vec<&str> = named.iter().map(|&i| &p.instances[i]).filter(|i| !cache.is_cached(&i.key)).map(|i| i.id.as_str()).collect();
    if !missing.is_empty() {
        bail!("not in the cache: {}; run `wfpipe run` first", missing.join(", "));
    }
    let mut said = String::new();
    let mut sweeps = StageTables::default();
    for &i in &named {
        let inst = &p.instances[i];
        let out = cache.out_dir(&inst.key);
        let dest = to.join(slug(&inst.id));
        copy_tree(&out, &dest)?;
        let kind = registry.get(&inst.spec.kind).with_context(|| format!("unknown kind `{}`", inst.spec.kind))?;
        let mut derived: Vec<String> = Vec::new();
        for (name, bytes) in kind.exports(&out).map_err(|e| anyhow::anyhow!("exporting `{}`: {e}", inst.id))? {
            fs::write(dest.join(&name), bytes).with_context(|| format!("writing {}", dest.join(&name).display()))?;
            derived.push(name);
        }
        let decls = kind.produces(&inst.spec.params).map(|p| p.tables).unwrap_or_default();
        for (name, rows) in export_tables::emitted(&out)? {
            let decl = decls.iter().find(|d| d.name == name);
            for t in export_tables::tidy(inst, &name, decl, rows) {
                export_tables::write(&dest, &t.name, &t.rows, &t.columns)?;
                if t.name != name {
                    derived.push(format!("{}.parquet", t.name));
                }
                sweeps.add(&p.stages[inst.stage].name, &t);
            }
        }
        let extra = derived.join(", ");
        let _ = writeln!(said, "{}: {}{}", inst.id, dest.display(), if extra.is_empty() { String::new() } else { format!(" (with {extra})") });
    }
    for file in sweeps.write(to)? {
        let _ = writeln!(said, "{}", to.join(file).display());
    }
    Ok(said)
}

/// The entry's files, writable (the cache keeps its own read-only).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            copy_writable(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}
