//! Stage definitions: a raw stage checked against its kind's schema (types, defaults,
//! required parameters, resources, sweeps declared) into a [`StageDef`].

use std::collections::BTreeMap;
use std::ops::Range;

use wfpipe_stages::kind::{ParamSpec, ParamType, RefMode, StageKind, Value};

use super::check::{self, check_value, span_of, CLI_SPAN};
use super::diagnostic::Diagnostic;
use super::axes;
use super::raw::RawStage;
use super::refsel::RefSel;
use super::source::{SKey, SKind, SValue};
use super::{Loader, RefParam, ResourceOverride, StageDef};

const STAGE_KEYS: &[&str] = &["kind", "matrix", "zip", "include", "exclude", "replicates", "seed", "resources"];

impl<'a> Loader<'a> {
    pub(super) fn check_stage(&mut self, raw: &RawStage<'_>, pipeline_seed: u64) -> Option<StageDef> {
        let name = raw.name.name.clone();
        let (kind_name, kind) = self.stage_kind(raw)?;
        let schema: Vec<ParamSpec> = kind.params();
        let before = self.diags.len();
        let mut e = self.stage_entries(raw, &kind_name, &schema, pipeline_seed);
        let axes = axes::check_axes(self, &kind_name, &schema, e.matrix, e.zip, e.replicates, &e.params);
        let include = e.include.map(|v| axes::check_combos(self, "include", v, &axes)).unwrap_or_default();
        self.pending_exclude_keys.clear();
        let exclude = e.exclude.map(|v| axes::check_combos(self, "exclude", v, &axes)).unwrap_or_default();
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
        axes: &[axes::AxisGroup],
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
