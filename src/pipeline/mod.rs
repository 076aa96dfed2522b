//! Pipeline files: TOML -> checked stage declarations -> named, keyed instances.
//!
//! Loading goes in phases, a module each: [`source`] parses TOML keeping spans, `raw` reads
//! the sections into raw stages and applies `--set`, `stage` checks each against its
//! kind's schema into a [`StageDef`] (its sweeps read by [`axes`]), stages are ordered here
//! (the DAG itself is [`crate::dag`]), and [`expand`] turns sweeps and references
//! ([`refsel`], checked by `connect`) into keyed instances. Loading reports every problem
//! it finds at once, each with `file:line:col`.

pub mod axes;
pub mod captions;
pub mod check;
mod connect;
pub mod diagnostic;
pub mod expand;
mod raw;
pub mod refsel;
pub mod source;
mod stage;

pub use raw::to_plain_value;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wfpipe_stages::kind::{RefMode, Resources, Value};

use crate::kinds::Registry;
use crate::spec::InstanceSpec;
use check::scalar_string;
use diagnostic::{Diagnostic, PipelineError, SourceFile};
use refsel::RefSel;
use source::SValue;

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
    pub axes: Vec<axes::AxisGroup>,
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
    /// What determines its output; `key` is its hash.
    pub spec: InstanceSpec,
    pub key: String,
    /// The graph's edges: reference parameter -> upstream instance indices (the same
    /// instances as `spec.inputs`, in the same order).
    pub inputs: BTreeMap<String, Vec<usize>>,
    pub resources: Resources,
    pub flops: Option<f64>,
}

impl Pipeline {
    /// The instances a target names: an instance id, a stage, or a selection
    /// `stage[axis=value,...]` naming some axes.
    pub fn named_by(&self, target: &str) -> Vec<usize> {
        let sel = RefSel::parse(target).ok();
        let selected = |i: &Instance| sel.as_ref().is_some_and(|s| self.stages[i.stage].name == s.stage && s.admits(&i.spec.axes));
        self.instances.iter().enumerate().filter(|(_, i)| i.id == target || selected(i)).map(|(n, _)| n).collect()
    }
}

impl crate::dag::Reads for Instance {
    fn reads(&self) -> impl Iterator<Item = usize> + '_ {
        self.inputs.values().flatten().copied()
    }
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(#[from] PipelineError),
    #[error("cannot read pipeline file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}


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

