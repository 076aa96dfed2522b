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
    if old.version != inst.version {
        changes.push(Change::KindVersion { old: old.version, new: inst.version });
    }
    let stage = &p.stages[inst.stage];
    let skip = |k: &str| stage.refs.contains_key(k) || stage.file_params.iter().any(|f| f == k);
    let mut names: Vec<&String> = old.params.0.keys().chain(inst.params.0.keys()).filter(|k| !skip(k)).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (a, b) = (old.params.0.get(name), inst.params.0.get(name));
        // A parameter the kind gained since, left at its default, changed nothing.
        let gained_at_default = a.is_none() && inst.unkeyed.contains(name);
        if a != b && !gained_at_default {
            changes.push(Change::Param { name: name.clone(), old: a.cloned(), new: b.cloned() });
        }
    }
    for (param, idx) in &inst.inputs {
        let now: Vec<&String> = idx.iter().map(|&i| &p.instances[i].key).collect();
        let before: Vec<&String> = old.inputs.get(param).map(|v| v.iter().collect()).unwrap_or_default();
        if now != before {
            let changed = idx
                .iter()
                .find(|&&i| !before.contains(&&p.instances[i].key))
                .map(|&i| p.instances[i].id.clone())
                .unwrap_or_else(|| "selection".into());
            changes.push(Change::Input { param: param.clone(), instance: changed });
        }
    }
    if old.seed != inst.seed {
        changes.push(Change::Seed { old: old.seed, new: inst.seed });
    }
    for (param, files) in &inst.files {
        let before = old.files.get(param);
        for (path, digest) in files {
            if !before.is_some_and(|b| b.iter().any(|(_, d)| d == digest)) {
                changes.push(Change::File { param: param.clone(), path: path.clone() });
            }
        }
    }
    if old.data_digest != inst.data_digest {
        changes.push(Change::BuiltinData);
    }
    Status::Changed { previous_key, changes }
}
