//! Reading a pipeline file's sections: `[pipeline]`, `[executor.*]`, and the stage
//! sections (`[stage.*]` and the ones that imply a kind) as raw stages, still TOML with
//! spans; `--set` overrides are applied to them here.

use std::collections::{BTreeMap, BTreeSet};

use wfpipe_stages::kind::Value;

use super::diagnostic::Diagnostic;
use super::refsel::is_valid_name;
use super::source::{self, SKey, SKind, SValue};
use super::check::CLI_SPAN;
use super::Loader;

const TOP_KEYS: &[&str] = &["pipeline", "stage", "table", "figure", "claim", "report", "executor"];
const SUGAR_SECTIONS: &[&str] = &["table", "figure", "claim", "report"];

pub(super) struct RawPipeline<'a> {
    pub(super) name: String,
    pub(super) seed: u64,
    pub(super) stages: Vec<RawStage<'a>>,
    pub(super) slurm: BTreeMap<String, Value>,
}

pub(super) struct RawStage<'a> {
    pub(super) name: &'a SKey,
    /// Set by `[table.x]`-style sections.
    pub(super) implied_kind: Option<&'static str>,
    pub(super) entries: Vec<(SKey, SValue)>,
}

impl Loader<'_> {
    pub(super) fn read_top<'t>(&mut self, top: &'t [(SKey, SValue)]) -> Option<RawPipeline<'t>> {
        let name = self.source.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into());
        let mut raw = RawPipeline { name, seed: 0, stages: Vec::new(), slurm: BTreeMap::new() };
        let mut seen = BTreeSet::new();
        for (key, value) in top {
            match key.name.as_str() {
                "pipeline" => {
                    if let Some(table) = self.expect_table("pipeline", value) {
                        self.read_pipeline_section(table, &mut raw);
                    }
                }
                "executor" => {
                    if let Some(table) = self.expect_table("executor", value) {
                        self.read_executor_section(table, &mut raw.slurm);
                    }
                }
                section @ ("stage" | "table" | "figure" | "claim" | "report") => {
                    if let Some(table) = self.expect_table(section, value) {
                        self.read_stage_section(section, table, &mut seen, &mut raw.stages);
                    }
                }
                other => self.err(
                    Diagnostic::new(format!("unknown top-level key `{other}`"), Some(key.span.clone()))
                        .suggest(other, TOP_KEYS.iter().copied())
                        .help_if_none(format!("expected one of {}", TOP_KEYS.join(", "))),
                ),
            }
        }
        if raw.stages.is_empty() && self.diags.is_empty() {
            self.err(
                Diagnostic::new("the pipeline declares no stages", Some(0..0))
                    .help("add a `[stage.NAME]` table with a `kind`"),
            );
        }
        if !self.diags.is_empty() {
            return None;
        }
        Some(raw)
    }

    /// `[pipeline]`: name, seed and description.
    fn read_pipeline_section(&mut self, table: &[(SKey, SValue)], raw: &mut RawPipeline<'_>) {
        for (k, v) in table {
            match k.name.as_str() {
                "name" => match v.as_str() {
                    Some(s) if is_valid_name(s) => raw.name = s.to_owned(),
                    _ => self.err(Diagnostic::new(
                        "`pipeline.name` must be a name of letters, digits, `-`, `_` or `.`",
                        Some(v.span.clone()),
                    )),
                },
                "seed" => match v.kind {
                    SKind::Int(i) if i >= 0 => raw.seed = i as u64,
                    _ => self.err(Diagnostic::new(
                        format!("`pipeline.seed` must be a non-negative integer, found {}", v.type_name()),
                        Some(v.span.clone()),
                    )),
                },
                "description" => {}
                other => self.err(
                    Diagnostic::new(format!("unknown key `{other}` in [pipeline]"), Some(k.span.clone()))
                        .suggest(other, ["name", "seed", "description"]),
                ),
            }
        }
    }

    /// `[executor.slurm]` (plain values, checked by the SLURM executor) and `[executor.local]`.
    fn read_executor_section(&mut self, table: &[(SKey, SValue)], slurm: &mut BTreeMap<String, Value>) {
        for (k, v) in table {
            match (k.name.as_str(), v.as_table()) {
                ("slurm", Some(t)) => {
                    for (sk, sv) in t {
                        match to_plain_value(sv) {
                            Some(val) => {
                                slurm.insert(sk.name.clone(), val);
                            }
                            None => self.err(Diagnostic::new(
                                format!("`executor.slurm.{}` has an unsupported type", sk.name),
                                Some(sv.span.clone()),
                            )),
                        }
                    }
                }
                ("local", Some(_)) => {}
                (other, _) => self.err(
                    Diagnostic::new(
                        format!("unknown executor section `{other}` (expected a table `slurm` or `local`)"),
                        Some(k.span.clone()),
                    )
                    .suggest(other, ["slurm", "local"]),
                ),
            }
        }
    }

    /// `[stage.*]` and the sections that imply a kind (`[table.*]`, ...): one raw stage per
    /// entry, names unique across all of them.
    fn read_stage_section<'t>(
        &mut self,
        section: &str,
        table: &'t [(SKey, SValue)],
        seen: &mut BTreeSet<String>,
        stages: &mut Vec<RawStage<'t>>,
    ) {
        let implied = SUGAR_SECTIONS.iter().copied().find(|s| *s == section);
        for (sk, sv) in table {
            if !is_valid_name(&sk.name) {
                self.err(Diagnostic::new(
                    format!("`{}` is not a valid stage name: use letters, digits, `-`, `_` and `.`", sk.name),
                    Some(sk.span.clone()),
                ));
                continue;
            }
            if !seen.insert(sk.name.clone()) {
                self.err(
                    Diagnostic::new(format!("duplicate stage `{}`", sk.name), Some(sk.span.clone()))
                        .help("stage names are shared by [stage.*], [table.*], [figure.*], [claim.*] and [report.*]"),
                );
                continue;
            }
            let Some(entries) = sv.as_table() else {
                self.err(Diagnostic::new(
                    format!("`{section}.{}` must be a table, found {}", sk.name, sv.type_name()),
                    Some(sv.span.clone()),
                ));
                continue;
            };
            stages.push(RawStage { name: sk, implied_kind: implied, entries: entries.to_vec() });
        }
    }

    fn expect_table<'t>(&mut self, what: &str, v: &'t SValue) -> Option<&'t [(SKey, SValue)]> {
        match v.as_table() {
            Some(t) => Some(t),
            None => {
                self.err(Diagnostic::new(
                    format!("`{what}` must be a table, found {}", v.type_name()),
                    Some(v.span.clone()),
                ));
                None
            }
        }
    }

    /// `--set stage.key=value` (key may be dotted: `resources.cpus`, `env.N`).
    pub(super) fn apply_overrides(&mut self, raw: &mut RawPipeline<'_>, overrides: &[String]) {
        for o in overrides {
            let Some((lhs, value)) = o.split_once('=') else {
                self.err(Diagnostic::new(format!("--set `{o}`: expected `stage.key=value`"), None));
                continue;
            };
            let Some((stage, key)) = lhs.trim().split_once('.') else {
                self.err(Diagnostic::new(format!("--set `{o}`: expected `stage.key=value`"), None));
                continue;
            };
            let mut value = source::parse_cli_value(value.trim());
            mark_cli(&mut value);
            let path: Vec<&str> = key.split('.').collect();
            if stage.contains('*') {
                // A pattern sets the key on every matching stage whose kind declares it,
                // so `*.attention=...` reaches every flow and nothing else.
                let mut matched = 0;
                for target in raw.stages.iter_mut() {
                    if glob_matches(stage, &target.name.name) && self.declares(target, path[0]) {
                        set_path(&mut target.entries, &path, value.clone());
                        matched += 1;
                    }
                }
                if matched == 0 {
                    self.err(Diagnostic::new(format!("--set `{o}`: no stage matching `{stage}` has a parameter `{}`", path[0]), None));
                }
                continue;
            }
            let names: Vec<&str> = raw.stages.iter().map(|s| s.name.name.as_str()).collect();
            let Some(target) = raw.stages.iter_mut().find(|s| s.name.name == stage) else {
                self.err(Diagnostic::new(format!("--set `{o}`: no stage `{stage}`"), None).suggest(stage, names));
                continue;
            };
            set_path(&mut target.entries, &path, value);
        }
    }

    /// Whether the kind a raw stage names declares the parameter `key`.
    fn declares(&self, raw: &RawStage<'_>, key: &str) -> bool {
        let kind = raw.entries.iter().find(|(k, _)| k.name == "kind").and_then(|(_, v)| v.as_str()).or(raw.implied_kind);
        kind.and_then(|k| self.registry.get(k)).is_some_and(|k| k.params().iter().any(|p| p.name == key))
    }
}

fn mark_cli(v: &mut SValue) {
    v.span = CLI_SPAN;
    match &mut v.kind {
        SKind::Array(items) => items.iter_mut().for_each(mark_cli),
        SKind::Table(entries) => entries.iter_mut().for_each(|(k, v)| {
            k.span = CLI_SPAN;
            mark_cli(v)
        }),
        _ => {}
    }
}

/// A stage-name pattern of `--set`: `*` stands for any run of characters.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn set_path(entries: &mut Vec<(SKey, SValue)>, path: &[&str], value: SValue) {
    let (head, rest) = (path[0], &path[1..]);
    let pos = entries.iter().position(|(k, _)| k.name == head);
    if rest.is_empty() {
        match pos {
            Some(i) => entries[i].1 = value,
            None => entries.push((SKey { name: head.to_owned(), span: CLI_SPAN }, value)),
        }
        return;
    }
    let i = match pos {
        Some(i) => i,
        None => {
            entries.push((
                SKey { name: head.to_owned(), span: CLI_SPAN },
                SValue { span: CLI_SPAN, kind: SKind::Table(Vec::new()) },
            ));
            entries.len() - 1
        }
    };
    if let SKind::Table(inner) = &mut entries[i].1.kind {
        set_path(inner, rest, value);
    } else {
        entries[i].1 = SValue { span: CLI_SPAN, kind: SKind::Table(Vec::new()) };
        if let SKind::Table(inner) = &mut entries[i].1.kind {
            set_path(inner, rest, value);
        }
    }
}

/// Plain conversion without a schema (executor settings).
pub fn to_plain_value(v: &SValue) -> Option<Value> {
    Some(match &v.kind {
        SKind::Bool(b) => Value::Bool(*b),
        SKind::Int(i) => Value::Int(*i),
        SKind::Float(f) => Value::Float(*f),
        SKind::Str(s) => Value::Str(s.clone()),
        SKind::Datetime(_) => return None,
        SKind::Array(items) => Value::List(items.iter().map(to_plain_value).collect::<Option<_>>()?),
        SKind::Table(t) => {
            Value::Table(t.iter().map(|(k, v)| Some((k.name.clone(), to_plain_value(v)?))).collect::<Option<_>>()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn set_patterns_match_stage_names() {
        assert!(glob_matches("*", "uci-flow-sphere"));
        assert!(glob_matches("*-flow-*", "uci-flow-sphere"));
        assert!(glob_matches("mnist-*", "mnist-flow-euclidean"));
        assert!(glob_matches("*sphere", "uci-flow-sphere"));
        assert!(glob_matches("u*i*e", "uci-flow-sphere"));
        assert!(!glob_matches("*-flow-*", "toy-flow"));
        assert!(!glob_matches("mnist-*", "uci-flow-sphere"));
        assert!(!glob_matches("ab*ba", "aba"), "prefix and suffix may not overlap");
        assert!(glob_matches("exact", "exact") && !glob_matches("exact", "exactly"));
    }
}

