//! Pipeline files: TOML -> checked stage declarations -> named, keyed instances.
//!
//! Loading reports every problem it finds at once, each with `file:line:col`.

pub mod captions;
pub mod check;
pub mod diagnostic;
pub mod expand;
pub mod refsel;
pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wfpipe_stages::kind::{ParamSpec, ParamType, Params, RefMode, Resources, StageKind, Value};

use crate::kinds::Registry;
use check::{check_value, scalar_string, span_of, CLI_SPAN};
use diagnostic::{Diagnostic, PipelineError, SourceFile};
use refsel::{is_valid_name, RefSel};
use source::{SKey, SKind, SValue};

/// A fully resolved pipeline: every instance named, parameterised and keyed.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub path: PathBuf,
    /// The folder that relative paths in the file are resolved against.
    pub project_dir: PathBuf,
    pub seed: u64,
    /// Stages in topological order.
    pub stages: Vec<StageDef>,
    /// Instances in topological order (by stage, then by name).
    pub instances: Vec<Instance>,
    /// `[executor.slurm]` settings, passed to the SLURM executor as they are.
    pub slurm: BTreeMap<String, Value>,
    pub source: Arc<SourceFile>,
}

/// One declared stage after checking.
#[derive(Debug)]
pub struct StageDef {
    pub name: String,
    pub name_span: Range<usize>,
    pub kind: String,
    pub version: u32,
    /// Checked parameters with defaults applied (matrix axes not yet).
    pub params: BTreeMap<String, Value>,
    pub axes: Vec<expand::AxisGroup>,
    pub include: Vec<BTreeMap<String, Value>>,
    pub exclude: Vec<BTreeMap<String, Value>>,
    /// Where each `exclude` key that may name an inherited axis was written.
    pub exclude_spans: BTreeMap<String, Option<Range<usize>>>,
    pub seed: u64,
    pub resources: Option<ResourceOverride>,
    /// Reference parameters: param name -> (mode, selections, span).
    pub refs: BTreeMap<String, RefParam>,
    /// File parameters (their contents go into the key).
    pub file_params: Vec<String>,
    /// Where each parameter given in the file was written.
    pub param_spans: BTreeMap<String, Option<Range<usize>>>,
    pub instances: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct RefParam {
    pub mode: RefMode,
    pub sels: Vec<RefSel>,
    pub span: Option<Range<usize>>,
}

#[derive(Debug, Clone, Default)]
pub struct ResourceOverride {
    pub cpus: Option<u32>,
    pub gpus: Option<u32>,
    pub mem_mb: Option<u64>,
    pub time_min: Option<u32>,
}

/// One runnable unit: a stage with one combination of axis values.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `stage[axis=value,...]`, axes sorted; `stage` when there are none.
    pub id: String,
    pub stage: usize,
    pub kind: String,
    pub version: u32,
    pub params: Params,
    pub axes: BTreeMap<String, Value>,
    /// Reference parameter -> upstream instance indices.
    pub inputs: BTreeMap<String, Vec<usize>>,
    pub seed: u64,
    pub resources: Resources,
    /// File parameter -> (relative path, blake3 of contents) for each file.
    pub files: BTreeMap<String, Vec<(String, String)>>,
    pub key: String,
    pub flops: Option<f64>,
    /// See `StageKind::builtin_data_digest`; part of the key.
    pub data_digest: Option<String>,
    /// Parameters left out of the key: added to the kind later and at their default.
    pub unkeyed: Vec<String>,
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(#[from] PipelineError),
    #[error("cannot read pipeline file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

const STAGE_KEYS: &[&str] = &["kind", "matrix", "zip", "include", "exclude", "replicates", "seed", "resources"];
const TOP_KEYS: &[&str] = &["pipeline", "stage", "table", "figure", "claim", "report", "executor"];
const SUGAR_SECTIONS: &[&str] = &["table", "figure", "claim", "report"];

/// Read, check and expand a pipeline file. `overrides` are `stage.key=value` strings.
pub fn load(path: &Path, overrides: &[String], registry: &Registry) -> Result<Pipeline, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
    load_str(path, text, overrides, registry)
}

pub fn load_str(path: &Path, text: String, overrides: &[String], registry: &Registry) -> Result<Pipeline, LoadError> {
    let source = Arc::new(SourceFile { path: path.to_owned(), text });
    let project_dir =
        path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).unwrap_or(Path::new("."));
    // Pipelines live in `pipelines/`; paths in them are relative to the project above it.
    let project_dir = if project_dir.file_name().is_some_and(|n| n == "pipelines") {
        project_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
    } else {
        project_dir.to_path_buf()
    };
    let project_dir = if project_dir.as_os_str().is_empty() { PathBuf::from(".") } else { project_dir };
    let mut loader = Loader { source: source.clone(), registry, diags: Vec::new(), pending_exclude_keys: Vec::new() };
    let top = source::parse(&source)?;
    let raw = loader.read_top(&top);
    let mut raw = match raw {
        Some(raw) => raw,
        None => return Err(loader.finish().unwrap_err().into()),
    };
    loader.apply_overrides(&mut raw, overrides);
    let mut stages: Vec<StageDef> = raw.stages.iter().filter_map(|s| loader.check_stage(s, raw.seed)).collect();
    loader.finish()?;
    captions::fill(&mut stages, &mut loader.diags);
    loader.finish()?;
    let order = loader.order_stages(&stages)?;
    // Reorder stages topologically.
    let mut slots: Vec<Option<StageDef>> = stages.drain(..).map(Some).collect();
    let stages: Vec<StageDef> = order.into_iter().map(|i| slots[i].take().expect("each stage once")).collect();
    let mut pipeline = Pipeline {
        name: raw.name,
        path: path.to_owned(),
        project_dir,
        seed: raw.seed,
        stages,
        instances: Vec::new(),
        slurm: raw.slurm,
        source: source.clone(),
    };
    expand::expand(&mut pipeline, registry, &mut loader.diags);
    loader.finish()?;
    Ok(pipeline)
}

struct RawPipeline<'a> {
    name: String,
    seed: u64,
    stages: Vec<RawStage<'a>>,
    slurm: BTreeMap<String, Value>,
}

struct RawStage<'a> {
    name: &'a SKey,
    /// Set by `[table.x]`-style sections.
    implied_kind: Option<&'static str>,
    entries: Vec<(SKey, SValue)>,
}

pub(crate) struct Loader<'a> {
    source: Arc<SourceFile>,
    registry: &'a Registry,
    pub(crate) diags: Vec<Diagnostic>,
    /// `exclude` keys that are not own axes, with their spans (checked at expansion).
    pub(crate) pending_exclude_keys: Vec<(String, Option<Range<usize>>)>,
}

impl<'a> Loader<'a> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn finish(&mut self) -> Result<(), PipelineError> {
        if self.diags.is_empty() {
            return Ok(());
        }
        let mut diags = std::mem::take(&mut self.diags);
        diags.sort_by_key(|d| d.span.as_ref().map(|s| s.start).unwrap_or(0));
        Err(PipelineError { source: self.source.clone(), diagnostics: diags })
    }

    fn read_top<'t>(&mut self, top: &'t [(SKey, SValue)]) -> Option<RawPipeline<'t>> {
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
    fn apply_overrides(&mut self, raw: &mut RawPipeline<'_>, overrides: &[String]) {
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

    fn check_stage(&mut self, raw: &RawStage<'_>, pipeline_seed: u64) -> Option<StageDef> {
        let name = raw.name.name.clone();
        let (kind_name, kind) = self.stage_kind(raw)?;
        let schema: Vec<ParamSpec> = kind.params();
        let before = self.diags.len();
        let mut e = self.stage_entries(raw, &kind_name, &schema, pipeline_seed);
        let axes = expand::check_axes(self, &kind_name, &schema, e.matrix, e.zip, e.replicates, &e.params);
        let include = e.include.map(|v| expand::check_combos(self, "include", v, &axes)).unwrap_or_default();
        self.pending_exclude_keys.clear();
        let exclude = e.exclude.map(|v| expand::check_combos(self, "exclude", v, &axes)).unwrap_or_default();
        let exclude_spans: BTreeMap<String, Option<Range<usize>>> = self.pending_exclude_keys.drain(..).collect();
        self.fill_defaults(raw, &schema, &axes, &mut e.params, &e.given_spans);
        let (refs, file_params) = references(&schema, &e.params, &e.given_spans);
        if self.diags.len() > before {
            return None;
        }
        Some(StageDef {
            name,
            name_span: raw.name.span.clone(),
            kind: kind_name,
            version: kind.version(),
            params: e.params,
            axes,
            include,
            exclude,
            exclude_spans,
            seed: e.seed,
            resources: e.resources,
            refs,
            file_params,
            param_spans: e.given_spans,
            instances: Vec::new(),
        })
    }

    /// The stage's kind: its `kind` entry, or the one its section implies.
    fn stage_kind(&mut self, raw: &RawStage<'_>) -> Option<(String, &'a dyn StageKind)> {
        let kind_entry = raw.entries.iter().find(|(k, _)| k.name == "kind");
        let kind_name: String = match (kind_entry, raw.implied_kind) {
            (Some((_, v)), _) => match v.as_str() {
                Some(s) => s.to_owned(),
                None => {
                    self.err(Diagnostic::new(format!("`kind` must be a string, found {}", v.type_name()), span_of(v)));
                    return None;
                }
            },
            (None, Some(implied)) => implied.to_owned(),
            (None, None) => {
                self.err(
                    Diagnostic::new(format!("stage `{}` has no `kind`", raw.name.name), Some(raw.name.span.clone()))
                        .help(format!("add `kind = \"...\"`; known kinds: {}", self.registry.names().join(", "))),
                );
                return None;
            }
        };
        let Some(kind) = self.registry.get(&kind_name) else {
            let span = kind_entry.map(|(_, v)| v.span.clone()).unwrap_or(raw.name.span.clone());
            self.err(
                Diagnostic::new(format!("unknown stage kind `{kind_name}`"), Some(span))
                    .suggest(&kind_name, self.registry.names())
                    .help_if_none(format!("known kinds: {}", self.registry.names().join(", "))),
            );
            return None;
        };
        Some((kind_name, kind))
    }

    /// Read a stage's entries: the stage keys (seed, resources, sweeps) and the kind's
    /// parameters, each checked against its type.
    fn stage_entries<'r>(&mut self, raw: &'r RawStage<'_>, kind_name: &str, schema: &[ParamSpec], pipeline_seed: u64) -> Entries<'r> {
        let mut e = Entries { seed: pipeline_seed, ..Entries::default() };
        for (k, v) in &raw.entries {
            match k.name.as_str() {
                "kind" => {}
                "seed" => match v.kind {
                    SKind::Int(i) if i >= 0 => e.seed = i as u64,
                    _ => self.err(Diagnostic::new(
                        format!("`seed` must be a non-negative integer, found {} `{}`", v.type_name(), check::short(v)),
                        span_of(v),
                    )),
                },
                "resources" => e.resources = self.check_resources(v),
                "matrix" => e.matrix = Some(v),
                "zip" => e.zip = Some(v),
                "include" => e.include = Some(v),
                "exclude" => e.exclude = Some(v),
                "replicates" => match v.kind {
                    SKind::Int(i) if i >= 1 => e.replicates = Some(i as usize),
                    _ => self.err(Diagnostic::new(
                        format!("`replicates` must be an integer >= 1, found {}", check::short(v)),
                        span_of(v),
                    )),
                },
                pname => match schema.iter().find(|p| p.name == pname) {
                    Some(spec) => {
                        // Given but ill-typed counts as given: its type error says it all.
                        e.given_spans.insert(pname.to_owned(), span_of(v));
                        match check_value(pname, &spec.ty, v) {
                            Ok(val) => {
                                e.params.insert(pname.to_owned(), val);
                            }
                            Err(d) => self.err(d),
                        }
                    }
                    None => {
                        let candidates = schema.iter().map(|p| p.name).chain(STAGE_KEYS.iter().copied());
                        let span = if k.span == CLI_SPAN { None } else { Some(k.span.clone()) };
                        self.err(
                            Diagnostic::new(format!("unknown parameter `{pname}` for kind `{kind_name}`"), span)
                                .suggest(pname, candidates)
                                .help_if_none(format!(
                                    "`{kind_name}` takes: {}",
                                    schema.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                                )),
                        );
                    }
                },
            }
        }
        e
    }

    /// Defaults, and an error for each required parameter that is neither set nor swept.
    fn fill_defaults(
        &mut self,
        raw: &RawStage<'_>,
        schema: &[ParamSpec],
        axes: &[expand::AxisGroup],
        params: &mut BTreeMap<String, Value>,
        given_spans: &BTreeMap<String, Option<Range<usize>>>,
    ) {
        for spec in schema {
            if params.contains_key(spec.name) || given_spans.contains_key(spec.name) {
                continue;
            }
            let swept = axes.iter().any(|g| g.axes.iter().any(|a| a.target.param() == spec.name));
            match (&spec.default, swept) {
                (Some(d), _) => {
                    params.insert(spec.name.to_owned(), d.clone());
                }
                (None, true) => {}
                (None, false) => self.err(
                    Diagnostic::new(
                        format!("stage `{}` is missing the required parameter `{}`", raw.name.name, spec.name),
                        Some(raw.name.span.clone()),
                    )
                    .help(format!("`{}`: {} ({})", spec.name, spec.ty.describe(), spec.doc)),
                ),
            }
        }
    }

    fn check_resources(&mut self, v: &SValue) -> Option<ResourceOverride> {
        let Some(table) = v.as_table() else {
            self.err(Diagnostic::new(
                format!(
                    "`resources` must be a table like {{ cpus = 2, gpus = 1, mem_mb = 4096 }}, found {}",
                    v.type_name()
                ),
                span_of(v),
            ));
            return None;
        };
        let mut r = ResourceOverride::default();
        for (k, val) in table {
            let n = match val.kind {
                SKind::Int(i) if i >= 0 => i as u64,
                _ => {
                    self.err(Diagnostic::new(
                        format!("`resources.{}` must be a non-negative integer, found {}", k.name, check::short(val)),
                        span_of(val),
                    ));
                    continue;
                }
            };
            match k.name.as_str() {
                "cpus" => r.cpus = Some(n as u32),
                "gpus" => r.gpus = Some(n as u32),
                "mem_mb" => r.mem_mb = Some(n),
                "time_min" => r.time_min = Some(n as u32),
                other => self.err(
                    Diagnostic::new(format!("unknown resource `{other}`"), span_of_key(k))
                        .suggest(other, ["cpus", "gpus", "mem_mb", "time_min"])
                        .help_if_none("resources are cpus, gpus, mem_mb and time_min"),
                ),
            }
        }
        Some(r)
    }

    /// Check references and order stages so every stage follows the ones it reads.
    fn order_stages(&mut self, stages: &[StageDef]) -> Result<Vec<usize>, PipelineError> {
        let index: BTreeMap<&str, usize> = stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut edges = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            for (param, r) in &s.refs {
                for sel in &r.sels {
                    match index.get(sel.stage.as_str()) {
                        Some(&j) => edges.push((j, i)),
                        None => self.err(
                            Diagnostic::new(
                                format!("`{param}` of stage `{}` refers to a missing stage `{}`", s.name, sel.stage),
                                r.span.clone(),
                            )
                            .suggest(&sel.stage, index.keys().copied()),
                        ),
                    }
                }
            }
        }
        self.finish()?;
        let mut path = match crate::dag::order(stages.len(), &edges) {
            Ok(order) => return Ok(order),
            Err(cycle) => cycle,
        };
        // Start the cycle at the stage declared first, so the message is stable.
        path.pop();
        let first_pos = (0..path.len()).min_by_key(|&i| stages[path[i]].name_span.start).unwrap_or(0);
        path.rotate_left(first_pos);
        path.push(path[0]);
        let names: Vec<&str> = path.iter().map(|&i| stages[i].name.as_str()).collect();
        let first = &stages[path[0]];
        self.err(
            Diagnostic::new(format!("the stages form a cycle: {}", names.join(" -> ")), Some(first.name_span.clone()))
                .help("a stage cannot depend, directly or indirectly, on itself"),
        );
        self.finish()?;
        unreachable!("finish returns the cycle error")
    }
}

/// What a stage's entries say besides its kind.
#[derive(Default)]
struct Entries<'r> {
    params: BTreeMap<String, Value>,
    /// Every parameter given, well-typed or not, with its span.
    given_spans: BTreeMap<String, Option<Range<usize>>>,
    seed: u64,
    resources: Option<ResourceOverride>,
    matrix: Option<&'r SValue>,
    zip: Option<&'r SValue>,
    include: Option<&'r SValue>,
    exclude: Option<&'r SValue>,
    replicates: Option<usize>,
}

/// The stage's references to other stages (by parameter) and its file parameters.
fn references(
    schema: &[ParamSpec],
    params: &BTreeMap<String, Value>,
    given_spans: &BTreeMap<String, Option<Range<usize>>>,
) -> (BTreeMap<String, RefParam>, Vec<String>) {
    let mut refs = BTreeMap::new();
    let mut file_params = Vec::new();
    for spec in schema {
        let span = || given_spans.get(spec.name).cloned().flatten();
        match &spec.ty {
            ParamType::Ref { mode } => {
                let text = params.get(spec.name).and_then(Value::as_str).unwrap_or("");
                if text.is_empty() {
                    continue;
                }
                if let Ok(sel) = RefSel::parse(text) {
                    refs.insert(spec.name.to_owned(), RefParam { mode: *mode, sels: vec![sel], span: span() });
                }
            }
            ParamType::RefList => {
                let sels: Vec<RefSel> = match params.get(spec.name) {
                    Some(Value::List(items)) => items.iter().filter_map(|v| v.as_str()).filter_map(|s| RefSel::parse(s).ok()).collect(),
                    _ => Vec::new(),
                };
                if !sels.is_empty() {
                    refs.insert(spec.name.to_owned(), RefParam { mode: RefMode::Gather, sels, span: span() });
                }
            }
            ParamType::File | ParamType::FileList => file_params.push(spec.name.to_owned()),
            _ => {}
        }
    }
    (refs, file_params)
}

fn span_of_key(k: &SKey) -> Option<Range<usize>> {
    (k.span != CLI_SPAN).then(|| k.span.clone())
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

impl Diagnostic {
    /// Add a help line only when no suggestion was found.
    pub fn help_if_none(self, help: impl Into<String>) -> Self {
        if self.help.is_some() {
            self
        } else {
            self.help(help)
        }
    }
}

pub(crate) fn scalar(v: &SValue) -> Option<String> {
    scalar_string(v)
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
