//! Why an instance will run: new, its entry vanished, or what changed since the last
//! time this instance name was computed (parameter, input, kind version, seed, file).

use std::fmt;

use wfpipe_stages::kind::Value;

use crate::cache::Cache;
use crate::pipeline::{Instance, Pipeline};

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Param { name: String, old: Option<Value>, new: Option<Value> },
    Input { param: String, instance: String },
    KindVersion { old: u32, new: u32 },
    Seed { old: u64, new: u64 },
    File { param: String, path: String },
    /// The built-in data the kind reads (the thesis's reference values) changed.
    BuiltinData,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map(|x| format!("{x}")).unwrap_or_else(|| "(unset)".into());
        match self {
            Change::Param { name, old, new } => write!(f, "parameter `{name}` changed {} -> {}", show(old), show(new)),
            Change::Input { param, instance } => write!(f, "input `{param}` changed ({instance})"),
            Change::KindVersion { old, new } => write!(f, "kind version changed {old} -> {new}"),
            Change::Seed { old, new } => write!(f, "seed changed {old} -> {new}"),
            Change::File { param, path } => write!(f, "file `{path}` of `{param}` changed"),
            Change::BuiltinData => write!(f, "the built-in reference data (reference/thesis.toml) changed"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Cached,
    /// Never computed under this name.
    New,
    /// Computed before with this very key, but the entry is gone (deleted, quarantined).
    Missing,
    Changed { previous_key: String, changes: Vec<Change> },
}

impl Status {
    pub fn is_cached(&self) -> bool {
        matches!(self, Status::Cached)
    }

    pub fn reason(&self) -> String {
        match self {
            Status::Cached => "cached".into(),
            Status::New => "new instance".into(),
            Status::Missing => "entry missing (removed or quarantined)".into(),
            Status::Changed { changes, .. } if changes.is_empty() => "inputs or encoding changed".into(),
            Status::Changed { changes, .. } => {
                let mut parts: Vec<String> = changes.iter().take(3).map(|c| c.to_string()).collect();
                if changes.len() > 3 {
                    parts.push(format!("and {} more", changes.len() - 3));
                }
                parts.join("; ")
            }
        }
    }
}

pub fn status(p: &Pipeline, inst: &Instance, cache: &Cache) -> Status {
    if cache.is_cached(&inst.key) {
        return Status::Cached;
    }
    let Some(previous_key) = cache.last_key(&p.name, &inst.id) else {
        return Status::New;
    };
    if previous_key == inst.key {
        return Status::Missing;
    }
    let Ok(old) = cache.read_manifest(&previous_key) else {
        return Status::New;
    };
    let mut changes = Vec::new();
    if old.spec.version != inst.spec.version {
        changes.push(Change::KindVersion { old: old.spec.version, new: inst.spec.version });
    }
    let stage = &p.stages[inst.stage];
    let skip = |k: &str| stage.refs.contains_key(k) || stage.file_params.iter().any(|f| f == k);
    let mut names: Vec<&String> = old.spec.params.0.keys().chain(inst.spec.params.0.keys()).filter(|k| !skip(k)).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (a, b) = (old.spec.params.0.get(name), inst.spec.params.0.get(name));
        // A parameter the kind gained since, left at its default, changed nothing.
        let gained_at_default = a.is_none() && inst.spec.unkeyed.contains(name);
        if a != b && !gained_at_default {
            changes.push(Change::Param { name: name.clone(), old: a.cloned(), new: b.cloned() });
        }
    }
    for (param, refs) in &inst.spec.inputs {
        let now: Vec<&str> = refs.iter().map(|r| r.key.as_str()).collect();
        let before: Vec<&str> = old.spec.inputs.get(param).map(|v| v.iter().map(|r| r.key.as_str()).collect()).unwrap_or_default();
        if now != before {
            let changed =
                refs.iter().find(|r| !before.contains(&r.key.as_str())).map(|r| r.instance.clone()).unwrap_or_else(|| "selection".into());
            changes.push(Change::Input { param: param.clone(), instance: changed });
        }
    }
    if old.spec.seed != inst.spec.seed {
        changes.push(Change::Seed { old: old.spec.seed, new: inst.spec.seed });
    }
    for (param, files) in &inst.spec.files {
        let before = old.spec.files.get(param);
        for (path, digest) in files {
            if !before.is_some_and(|b| b.iter().any(|(_, d)| d == digest)) {
                changes.push(Change::File { param: param.clone(), path: path.clone() });
            }
        }
    }
    if old.spec.data_digest != inst.spec.data_digest {
        changes.push(Change::BuiltinData);
    }
    Status::Changed { previous_key, changes }
}
