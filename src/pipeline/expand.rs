//! Sweeps: `matrix` (cartesian product), `zip` (paired lists), `include` / `exclude`,
//! `replicates`; fan-out over swept inputs (joined on shared axis names); instance naming.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wfpipe_stages::kind::{unkeyed_defaults, ColumnUse, Needs, NetworkColumns, ParamSpec, ParamType, Params, RefMode, Value};

use super::check::{check_value, span_of};
use super::diagnostic::Diagnostic;
use super::source::{SKind, SValue};
use super::{Instance, Loader, Pipeline};
use crate::key;
use crate::report::gather::INSTANCE_COLUMN;
use crate::kinds::Registry;

/// What an axis sets in the instance parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum AxisTarget {
    Param(String),
    /// One entry of a string-map parameter (`matrix.env.N = [...]` sets `env.N`).
    MapEntry {
        param: String,
        key: String,
    },
    /// `replicates = n`: the seed offset.
    Replicate,
}

impl AxisTarget {
    pub fn param(&self) -> &str {
        match self {
            AxisTarget::Param(p) | AxisTarget::MapEntry { param: p, .. } => p,
            AxisTarget::Replicate => "",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Axis {
    pub name: String,
    pub target: AxisTarget,
    pub ty: ParamType,
    pub values: Vec<Value>,
}

/// Axes that vary together: one matrix axis, or all the lists of a `zip`.
#[derive(Debug, Clone)]
pub struct AxisGroup {
    pub axes: Vec<Axis>,
}

impl AxisGroup {
    fn len(&self) -> usize {
        self.axes.first().map(|a| a.values.len()).unwrap_or(0)
    }
}

pub const REPLICATE_AXIS: &str = "rep";

pub(crate) fn check_axes(
    loader: &mut Loader<'_>,
    kind: &str,
    schema: &[ParamSpec],
    matrix: Option<&SValue>,
    zip: Option<&SValue>,
    replicates: Option<usize>,
    params: &BTreeMap<String, Value>,
) -> Vec<AxisGroup> {
    let mut groups = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (section, value) in [("matrix", matrix), ("zip", zip)] {
        let Some(value) = value else { continue };
        let Some(table) = value.as_table() else {
            loader.diags.push(Diagnostic::new(
                format!("`{section}` must be a table of arrays, e.g. {section}.lr = [1e-3, 1e-4]"),
                span_of(value),
            ));
            continue;
        };
        let mut zipped = Vec::new();
        for (k, v) in table {
            let Some(spec) = schema.iter().find(|p| p.name == k.name) else {
                let names = schema.iter().filter(|p| !p.ty.is_ref()).map(|p| p.name);
                loader.diags.push(
                    Diagnostic::new(
                        format!("`{section}.{}`: kind `{kind}` has no parameter `{}` to sweep", k.name, k.name),
                        span_of_key(k),
                    )
                    .suggest(&k.name, names),
                );
                continue;
            };
            if spec.ty.is_ref() {
                loader.diags.push(
                    Diagnostic::new(format!("`{section}.{}`: references cannot be swept", k.name), span_of_key(k))
                        .help("sweep the upstream stage instead; this stage fans out over its instances"),
                );
                continue;
            }
            if params.contains_key(spec.name) {
                loader.diags.push(Diagnostic::new(
                    format!("`{}` is set both as a parameter and as a `{section}` axis", k.name),
                    span_of_key(k),
                ));
                continue;
            }
            let mut axes = Vec::new();
            match (&spec.ty, &v.kind) {
                (ParamType::StrMap, SKind::Table(entries)) => {
                    for (ek, ev) in entries {
                        if let Some(values) = axis_values(loader, section, &ek.name, &ParamType::Str, ev, true) {
                            axes.push(Axis {
                                name: ek.name.clone(),
                                target: AxisTarget::MapEntry { param: k.name.clone(), key: ek.name.clone() },
                                ty: ParamType::Str,
                                values,
                            });
                        }
                    }
                }
                _ => {
                    if let Some(values) = axis_values(loader, section, &k.name, &spec.ty, v, false) {
                        axes.push(Axis {
                            name: k.name.clone(),
                            target: AxisTarget::Param(k.name.clone()),
                            ty: spec.ty.clone(),
                            values,
                        });
                    }
                }
            }
            for a in &axes {
                if !seen.insert(a.name.clone()) {
                    loader.diags.push(Diagnostic::new(format!("axis `{}` is declared twice", a.name), span_of_key(k)));
                }
            }
            if section == "matrix" {
                groups.extend(axes.into_iter().map(|a| AxisGroup { axes: vec![a] }));
            } else {
                zipped.extend(axes.into_iter().map(|a| (a, v.span.clone())));
            }
        }
        if !zipped.is_empty() {
            let len = zipped[0].0.values.len();
            if let Some((bad, span)) = zipped.iter().find(|(a, _)| a.values.len() != len) {
                loader.diags.push(Diagnostic::new(
                    format!(
                        "`zip` lists must have the same length: `{}` has {}, `{}` has {len}",
                        bad.name,
                        bad.values.len(),
                        zipped[0].0.name
                    ),
                    Some(span.clone()).filter(|s| *s != super::check::CLI_SPAN),
                ));
            } else {
                groups.push(AxisGroup { axes: zipped.into_iter().map(|(a, _)| a).collect() });
            }
        }
    }
    if let Some(n) = replicates {
        if !seen.insert(REPLICATE_AXIS.into()) {
            loader.diags.push(Diagnostic::new(format!("axis `{REPLICATE_AXIS}` is reserved for `replicates`"), None));
        }
        groups.push(AxisGroup {
            axes: vec![Axis {
                name: REPLICATE_AXIS.into(),
                target: AxisTarget::Replicate,
                ty: ParamType::NON_NEGATIVE_INT,
                values: (0..n as i64).map(Value::Int).collect(),
            }],
        });
    }
    groups
}

fn span_of_key(k: &super::source::SKey) -> Option<std::ops::Range<usize>> {
    (k.span != super::check::CLI_SPAN).then(|| k.span.clone())
}

fn axis_values(
    loader: &mut Loader<'_>,
    section: &str,
    name: &str,
    ty: &ParamType,
    v: &SValue,
    as_string: bool,
) -> Option<Vec<Value>> {
    let SKind::Array(items) = &v.kind else {
        loader.diags.push(Diagnostic::new(
            format!("`{section}.{name}` must be an array of values to sweep, found {}", v.type_name()),
            span_of(v),
        ));
        return None;
    };
    if items.is_empty() {
        loader.diags.push(
            Diagnostic::new(format!("empty sweep: `{section}.{name}` has no values"), span_of(v))
                .help("give at least one value, or remove the axis"),
        );
        return None;
    }
    let mut values = Vec::new();
    // Values as written in instance names: two that print alike would name one instance.
    let mut seen = std::collections::HashSet::new();
    let mut ok = true;
    for item in items {
        let checked = if as_string {
            super::scalar(item).map(Value::Str).ok_or_else(|| {
                Diagnostic::new(format!("`{section}.{name}` values must be strings or numbers"), span_of(item))
            })
        } else {
            check_value(name, ty, item)
        };
        match checked {
            Ok(val) => {
                if !seen.insert(val.to_string()) {
                    loader
                        .diags
                        .push(Diagnostic::new(format!("`{section}.{name}` lists `{val}` twice"), span_of(item)));
                    ok = false;
                }
                values.push(val)
            }
            Err(d) => {
                loader.diags.push(d);
                ok = false;
            }
        }
    }
    ok.then_some(values)
}

/// `include = [{...}]` / `exclude = [{...}]`: tables of axis values.
pub(crate) fn check_combos(
    loader: &mut Loader<'_>,
    what: &str,
    v: &SValue,
    groups: &[AxisGroup],
) -> Vec<BTreeMap<String, Value>> {
    let axes: Vec<&Axis> = groups.iter().flat_map(|g| g.axes.iter()).collect();
    let SKind::Array(items) = &v.kind else {
        loader.diags.push(Diagnostic::new(
            format!("`{what}` must be an array of tables such as [{{ geometry = \"euclidean\" }}]"),
            span_of(v),
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(entries) = item.as_table() else {
            loader
                .diags
                .push(Diagnostic::new(format!("each `{what}` entry must be a table of axis values"), span_of(item)));
            continue;
        };
        let mut combo = BTreeMap::new();
        for (k, val) in entries {
            let Some(axis) = axes.iter().find(|a| a.name == k.name) else {
                if what == "exclude" {
                    // May name an axis inherited from an input; checked when instances
                    // are expanded, where the inherited axes are known.
                    if let Some(x) = super::to_plain_value(val) {
                        combo.insert(k.name.clone(), x);
                        loader.pending_exclude_keys.push((k.name.clone(), span_of_key(k)));
                    }
                    continue;
                }
                loader.diags.push(
                    Diagnostic::new(
                        format!("`{what}` names `{}`, which is not an axis of this stage", k.name),
                        span_of_key(k),
                    )
                    .suggest(&k.name, axes.iter().map(|a| a.name.as_str()))
                    .help_if_none(format!(
                        "axes: {}",
                        if axes.is_empty() {
                            "none".to_owned()
                        } else {
                            axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                        }
                    )),
                );
                continue;
            };
            let checked = match axis.target {
                AxisTarget::MapEntry { .. } => {
                    super::scalar(val).map(Value::Str).ok_or_else(|| Diagnostic::new("expected a string", span_of(val)))
                }
                _ => check_value(&k.name, &axis.ty, val),
            };
            match checked {
                Ok(x) => {
                    combo.insert(k.name.clone(), x);
                }
                Err(d) => loader.diags.push(d),
            }
        }
        if what == "include" {
            let missing: Vec<&str> = axes.iter().map(|a| a.name.as_str()).filter(|a| !combo.contains_key(*a)).collect();
            if !missing.is_empty() && combo.len() == entries.len() {
                loader.diags.push(Diagnostic::new(
                    format!("`include` entry must set every axis; missing: {}", missing.join(", ")),
                    span_of(item),
                ));
                continue;
            }
        }
        out.push(combo);
    }
    out
}

/// One combination of own axis values. It borrows its axes: a clone of an axis (all its
/// values) per combination made one axis of N values cost O(N²).
type Combo<'a> = Vec<(&'a Axis, Value)>;

fn combos(groups: &[AxisGroup]) -> Vec<Combo<'_>> {
    let mut out: Vec<Combo<'_>> = vec![Vec::new()];
    for g in groups {
        let mut next = Vec::with_capacity(out.len() * g.len());
        for c in &out {
            for i in 0..g.len() {
                let mut c2 = c.clone();
                for a in &g.axes {
                    c2.push((a, a.values[i].clone()));
                }
                next.push(c2);
            }
        }
        out = next;
    }
    out
}

fn matches(axes: &BTreeMap<String, Value>, filter: &BTreeMap<String, Value>) -> bool {
    filter.iter().all(|(k, v)| axes.get(k) == Some(v))
}

/// Typed connections: every stage a reference selects must produce what the parameter
/// needs (a weight set, a trained flow, a named table). One instance per upstream stage
/// stands for its stage. False (with a diagnostic at the reference) when one does not.
#[allow(clippy::too_many_arguments)]
fn check_connection(
    p: &Pipeline,
    registry: &Registry,
    kind: &dyn wfpipe_stages::kind::StageKind,
    stage: &super::StageDef,
    param: &str,
    r: &super::RefParam,
    selected: &[usize],
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let need = kind.needs(param, &Params(stage.params.clone()));
    if need == Needs::Anything {
        return true;
    }
    let mut checked = BTreeSet::new();
    for &i in selected {
        let up = &p.instances[i];
        if !checked.insert(up.stage) {
            continue;
        }
        let Some(produces) = registry.get(&up.kind).and_then(|k| k.produces(&up.params)) else { continue };
        if produces.satisfies(&need) {
            if let Needs::Table { name, columns, picks } = &need {
                if !check_columns(p, registry, stage, selected, name, columns, diags) {
                    return false;
                }
                if !check_picks(p, registry, stage, up, name, picks, diags) {
                    return false;
                }
            }
        } else {
            diags.push(Diagnostic::new(
                format!(
                    "`{param}` needs {}, but `{}` is a `{}` stage, which produces {}",
                    need.describe(),
                    p.stages[up.stage].name,
                    up.kind,
                    produces.describe()
                ),
                r.span.clone(),
            ));
            return false;
        }
    }
    true
}

/// Every column a table or figure names must be in the rows gathered from `selected`: a
/// column some upstream table declares, an upstream axis, or the instance column. Skipped
/// when some upstream's columns are only known once it has run (a user program's CSV).
fn check_columns(
    p: &Pipeline,
    registry: &Registry,
    stage: &super::StageDef,
    selected: &[usize],
    table: &str,
    uses: &[ColumnUse],
    diags: &mut Vec<Diagnostic>,
) -> bool {
    if uses.is_empty() {
        return true;
    }
    let mut known: BTreeSet<String> = BTreeSet::from([INSTANCE_COLUMN.to_owned()]);
    let mut stages = BTreeSet::new();
    for &i in selected {
        let up = &p.instances[i];
        known.extend(up.axes.keys().cloned());
        if !stages.insert(up.stage) {
            continue;
        }
        match table_columns(p, registry, i, table) {
            Some(columns) => known.extend(columns),
            None => return true,
        }
    }
    for ColumnUse { param, column } in uses {
        if known.contains(column) {
            continue;
        }
        let from: Vec<&str> = stages.iter().map(|&s| p.stages[s].name.as_str()).collect();
        // A column built from the word (`metric = "los"` -> `los_mean`) is suggested as a word.
        let (typed, suffix) = match stage.params.get(*param) {
            Some(Value::Str(word)) if column.len() > word.len() && column.starts_with(word.as_str()) => (word.as_str(), &column[word.len()..]),
            _ => (column.as_str(), ""),
        };
        let span = stage.param_spans.get(*param).cloned().flatten().map(|span| narrow_to(&p.source.text, span, column));
        diags.push(
            Diagnostic::new(
                format!("`{param}` names the column `{column}`, which is in no `{table}` row of {}", quoted_list(&from)),
                span,
            )
            .suggest(&typed, known.iter().filter_map(|k| k.strip_suffix(suffix)).filter(|k| !k.is_empty()))
            .help_if_none(format!("columns: {}", known.iter().cloned().collect::<Vec<_>>().join(", "))),
        );
        return false;
    }
    true
}

/// A parameter that picks one row of a keyed table must pin every key column it does not
/// leave open: otherwise it names several rows and the result would depend on their order.
fn check_picks(
    p: &Pipeline,
    registry: &Registry,
    stage: &super::StageDef,
    up: &super::Instance,
    table: &str,
    picks: &[wfpipe_stages::kind::RowPick],
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let Some(keys) = registry.get(&up.kind).and_then(|k| k.produces(&up.params)).and_then(|pr| pr.table(table).and_then(|d| d.keyed_by.clone())) else {
        return true;
    };
    for pick in picks {
        let open: Vec<&String> = keys.iter().filter(|k| !pick.pinned.contains(k) && !pick.open.contains(k)).collect();
        if open.is_empty() {
            continue;
        }
        let names: Vec<&str> = open.iter().map(|k| k.as_str()).collect();
        diags.push(
            Diagnostic::new(
                format!(
                    "`{}` selects more than one row of `{}`: it leaves {} open",
                    pick.param,
                    p.stages[up.stage].name,
                    quoted_list(&names)
                ),
                stage.param_spans.get(pick.param).cloned().flatten(),
            )
            .help(format!(
                "`{}`'s rows are keyed by {}; give each a value (\"\" for a row that has none)",
                p.stages[up.stage].name,
                quoted_list(&keys.iter().map(String::as_str).collect::<Vec<_>>())
            )),
        );
        return false;
    }
    true
}

/// The columns of `table` in an instance's entry (declared columns and the per-network
/// columns of the weight set it reads), or None when they are not known before it runs.
fn table_columns(p: &Pipeline, registry: &Registry, instance: usize, table: &str) -> Option<BTreeSet<String>> {
    let up = &p.instances[instance];
    let produces = registry.get(&up.kind)?.produces(&up.params)?;
    let decl = produces.table(table)?;
    let mut columns: BTreeSet<String> = decl.columns.clone()?.into_iter().collect();
    if let Some(param) = decl.network_columns_of {
        for &i in up.inputs.get(param).into_iter().flatten() {
            columns.extend(network_columns(p, registry, i)?);
        }
    }
    Some(columns)
}

/// The per-network columns of the weight set an instance writes, followed through the
/// stages that keep their input's columns.
fn network_columns(p: &Pipeline, registry: &Registry, instance: usize) -> Option<BTreeSet<String>> {
    let up = &p.instances[instance];
    match registry.get(&up.kind)?.produces(&up.params)?.network_columns {
        NetworkColumns::None => Some(BTreeSet::new()),
        NetworkColumns::Own(columns) => Some(columns.iter().map(|c| c.to_string()).collect()),
        NetworkColumns::KeptFrom(param) => {
            let mut all = BTreeSet::new();
            for &i in up.inputs.get(param).into_iter().flatten() {
                all.extend(network_columns(p, registry, i)?);
            }
            Some(all)
        }
    }
}

/// The part of `span` that spells the column (a list item or a `filter` key), else the
/// whole span.
fn narrow_to(text: &str, span: std::ops::Range<usize>, column: &str) -> std::ops::Range<usize> {
    let Some(written) = text.get(span.clone()) else { return span };
    let quoted = format!("\"{column}\"");
    let found = written.find(&quoted).map(|at| (at, quoted.len())).or_else(|| {
        written.match_indices(column).map(|(at, _)| (at, column.len())).find(|&(at, len)| {
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
            !word(written[..at].chars().next_back()) && !word(written[at + len..].chars().next())
        })
    });
    found.map(|(at, len)| span.start + at..span.start + at + len).unwrap_or(span)
}

fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

/// A declared file must stay inside the project folder once symbolic links are followed:
/// the path is checked lexically when parsed, and a link could still lead anywhere.
/// The instance id: `stage` or `stage[a=1,b=x]` with axes sorted by name.
pub fn instance_id(stage: &str, axes: &BTreeMap<String, Value>) -> String {
    if axes.is_empty() {
        return stage.to_owned();
    }
    let parts: Vec<String> = axes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{stage}[{}]", parts.join(","))
}

/// Expand every stage into instances and key them, in topological order.
/// `own` plus, for names it lacks, the parameters of the upstream instances (breadth
/// first, nearest first): what a FLOP estimate may need to know about its inputs. Only
/// estimates see this view; keys and runs use the instance's own parameters.
fn estimate_view(own: &Params, inputs: &BTreeMap<String, Vec<usize>>, all: &[Instance]) -> Params {
    let mut merged = own.0.clone();
    for i in crate::dag::upstream(all, inputs.values().flatten().copied(), |_| true) {
        for (name, value) in &all[i].params.0 {
            merged.entry(name.clone()).or_insert_with(|| value.clone());
        }
    }
    Params(merged)
}

pub(crate) fn expand(p: &mut Pipeline, registry: &Registry, diags: &mut Vec<Diagnostic>) {
    let stage_index: HashMap<String, usize> = p.stages.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    let mut file_digests: HashMap<String, Result<String, String>> = HashMap::new();
    for si in 0..p.stages.len() {
        let kind = registry.get(&p.stages[si].kind).expect("kinds were checked");
        let mut seen_errors = BTreeSet::new();
        let Some(new_instances) = stage_instances(p, si, kind, registry, &stage_index, &mut seen_errors, diags) else {
            continue;
        };
        let specs = kind.params();
        for mut inst in new_instances {
            if !digest_files(p, si, &mut inst, &mut file_digests, &mut seen_errors, diags) {
                continue;
            }
            key_instance(p, si, &specs, &mut inst);
            let idx = p.instances.len();
            p.stages[si].instances.push(idx);
            p.instances.push(inst);
        }
    }
}

/// One upstream instance per fan-out reference (parameter, instance), with the axes the
/// picked instances bring.
type Choice = (BTreeMap<String, Value>, Vec<(String, usize)>);

/// The instances of stage `si`, not yet keyed: every agreeing choice of fan-out inputs
/// times every own combination that survives `exclude`. None (with diagnostics) when the
/// stage cannot be expanded.
#[allow(clippy::too_many_arguments)]
fn stage_instances(
    p: &Pipeline,
    si: usize,
    kind: &dyn wfpipe_stages::kind::StageKind,
    registry: &Registry,
    stage_index: &HashMap<String, usize>,
    seen_errors: &mut BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Instance>> {
    let stage = &p.stages[si];
    let own_names: BTreeSet<&str> = stage.axes.iter().flat_map(|g| g.axes.iter().map(|a| a.name.as_str())).collect();
    // Excludes over own axes only filter own combinations; the others need the inputs' axes.
    let (own_excludes, joint_excludes): (Vec<_>, Vec<_>) =
        stage.exclude.iter().partition(|ex| ex.keys().all(|k| own_names.contains(k.as_str())));
    let own = own_combos(stage, &own_excludes, diags)?;
    let (fanout, gathered) = select_inputs(p, registry, kind, stage, stage_index, diags)?;
    let choices = join_fanout(p, stage, &fanout, diags)?;
    check_joint_axes(stage, &own_names, &choices, &joint_excludes, diags)?;
    let mut out = Vec::new();
    for (inherited, picked) in &choices {
        for combo in &own {
            let full: BTreeMap<String, String> = inherited
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .chain(combo.iter().map(|(a, v)| (a.name.clone(), v.to_string())))
                .collect();
            if joint_excludes.iter().any(|ex| ex.iter().all(|(k, v)| full.get(k) == Some(&v.to_string()))) {
                continue;
            }
            let mut inputs: BTreeMap<String, Vec<usize>> = gathered.clone();
            for (param, idx) in picked {
                inputs.insert(param.clone(), vec![*idx]);
            }
            match new_instance(p, si, kind, inherited.clone(), combo, inputs) {
                Ok(inst) => out.push(inst),
                Err(msg) => {
                    if seen_errors.insert(msg.clone()) {
                        diags.push(Diagnostic::new(msg, Some(stage.name_span.clone())));
                    }
                }
            }
        }
    }
    Some(out)
}

/// The stage's own combinations: its sweep less what `own_excludes` removes, plus `include`.
fn own_combos<'s>(
    stage: &'s super::StageDef,
    own_excludes: &[&BTreeMap<String, Value>],
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Combo<'s>>> {
    let as_map = |c: &Combo| -> BTreeMap<String, Value> { c.iter().map(|(a, v)| (a.name.clone(), v.clone())).collect() };
    let mut own: Vec<Combo> = combos(&stage.axes);
    own.retain(|c| !own_excludes.iter().any(|ex| matches(&as_map(c), ex)));
    for inc in &stage.include {
        if own.iter().any(|c| as_map(c) == *inc) {
            continue;
        }
        let all: Vec<&Axis> = stage.axes.iter().flat_map(|g| g.axes.iter()).collect();
        own.push(all.iter().filter_map(|a| inc.get(&a.name).map(|v| (*a, v.clone()))).collect());
    }
    if own.is_empty() {
        diags.push(Diagnostic::new(
            format!("empty sweep: `exclude` removes every combination of stage `{}`", stage.name),
            Some(stage.name_span.clone()),
        ));
        return None;
    }
    Some(own)
}

/// The upstream instances each reference selects: fan-out references (one instance per
/// instance of this stage) and gathered ones (all of them at once), by parameter.
type Selected = (Vec<(String, Vec<usize>)>, BTreeMap<String, Vec<usize>>);

fn select_inputs(
    p: &Pipeline,
    registry: &Registry,
    kind: &dyn wfpipe_stages::kind::StageKind,
    stage: &super::StageDef,
    stage_index: &HashMap<String, usize>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Selected> {
    let mut fanout: Vec<(String, Vec<usize>)> = Vec::new();
    let mut gathered: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut broken = false;
    for (param, r) in &stage.refs {
        let mut selected: Vec<usize> = Vec::new();
        for sel in &r.sels {
            let up = &p.stages[stage_index[&sel.stage]];
            let up_axes: BTreeSet<&String> = up.instances.iter().flat_map(|&i| p.instances[i].axes.keys()).collect();
            for axis in sel.filters.keys() {
                if !up_axes.contains(axis) {
                    diags.push(
                        Diagnostic::new(format!("`{}` has no axis `{axis}` to select on", sel.stage), r.span.clone())
                            .suggest(axis, up_axes.iter().map(|s| s.as_str()))
                            .help_if_none(if up_axes.is_empty() {
                                format!("`{}` is not swept", sel.stage)
                            } else {
                                format!("its axes: {}", up_axes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                            }),
                    );
                    broken = true;
                }
            }
            let chosen: Vec<usize> = up.instances.iter().copied().filter(|&i| sel.admits(&p.instances[i].axes)).collect();
            if chosen.is_empty() && !broken {
                diags.push(Diagnostic::new(format!("`{param}` selects no instance of `{}`", sel.stage), r.span.clone()));
                broken = true;
            }
            selected.extend(chosen);
        }
        selected.sort_by(|&a, &b| p.instances[a].id.cmp(&p.instances[b].id));
        selected.dedup();
        if !broken {
            broken = !check_connection(p, registry, kind, stage, param, r, &selected, diags);
        }
        match r.mode {
            RefMode::FanOut => fanout.push((param.clone(), selected)),
            RefMode::Gather => {
                gathered.insert(param.clone(), selected);
            }
        }
    }
    (!broken).then_some((fanout, gathered))
}

/// Joined fan-out choices: one upstream instance per fan-out reference, agreeing on every
/// axis name they share.
fn join_fanout(p: &Pipeline, stage: &super::StageDef, fanout: &[(String, Vec<usize>)], diags: &mut Vec<Diagnostic>) -> Option<Vec<Choice>> {
    let mut choices: Vec<Choice> = vec![(BTreeMap::new(), Vec::new())];
    for (param, candidates) in fanout {
        let mut next = Vec::new();
        for (axes, picked) in &choices {
            for &c in candidates {
                let inst = &p.instances[c];
                // Axes the reference pins with a selection are constant for this input:
                // they are neither joined on nor inherited.
                let pinned = &stage.refs[param].sels[0].filters;
                let free: Vec<(&String, &Value)> = inst.axes.iter().filter(|(k, _)| !pinned.contains_key(*k)).collect();
                if free.iter().all(|(k, v)| axes.get(*k).is_none_or(|x| x == *v)) {
                    let mut a2 = axes.clone();
                    a2.extend(free.iter().map(|(k, v)| ((*k).clone(), (*v).clone())));
                    let mut p2 = picked.clone();
                    p2.push((param.clone(), c));
                    next.push((a2, p2));
                }
            }
        }
        choices = next;
    }
    if choices.is_empty() {
        diags.push(Diagnostic::new(
            format!("stage `{}`: its inputs share axes but no combination of their instances agrees on them", stage.name),
            Some(stage.name_span.clone()),
        ));
        return None;
    }
    Some(choices)
}

/// The axes of inputs and stage together: every name a joint `exclude` uses is one of
/// them, and the stage does not sweep a name its input already sweeps.
fn check_joint_axes(
    stage: &super::StageDef,
    own_names: &BTreeSet<&str>,
    choices: &[Choice],
    joint_excludes: &[&BTreeMap<String, Value>],
    diags: &mut Vec<Diagnostic>,
) -> Option<()> {
    let known: BTreeSet<&str> = choices.iter().flat_map(|(a, _)| a.keys().map(String::as_str)).chain(own_names.iter().copied()).collect();
    let mut bad_exclude = false;
    for ex in joint_excludes {
        for k in ex.keys() {
            if !known.contains(k.as_str()) {
                let span = stage.exclude_spans.get(k).cloned().flatten();
                diags.push(
                    Diagnostic::new(format!("`exclude` names `{k}`, which is not an axis of this stage"), span)
                        .suggest(k, known.iter().copied())
                        .help_if_none(format!(
                            "axes: {}",
                            if known.is_empty() { "none".to_owned() } else { known.iter().copied().collect::<Vec<_>>().join(", ") }
                        )),
                );
                bad_exclude = true;
            }
        }
    }
    if bad_exclude {
        return None;
    }
    let clash: Vec<&String> = choices[0].0.keys().filter(|k| own_names.contains(k.as_str())).collect();
    if !clash.is_empty() {
        diags.push(Diagnostic::new(
            format!(
                "stage `{}` sweeps `{}`, which its input already sweeps; rename the parameter or drop one sweep",
                stage.name, clash[0]
            ),
            Some(stage.name_span.clone()),
        ));
        return None;
    }
    Some(())
}

/// One instance of stage `si`: its parameters with `combo` applied, validated, with its
/// resources, estimate and data digest; files and key come later.
fn new_instance(
    p: &Pipeline,
    si: usize,
    kind: &dyn wfpipe_stages::kind::StageKind,
    mut axes: BTreeMap<String, Value>,
    combo: &Combo,
    inputs: BTreeMap<String, Vec<usize>>,
) -> Result<Instance, String> {
    let stage = &p.stages[si];
    let mut params = stage.params.clone();
    let mut rep = 0u64;
    for (axis, value) in combo {
        axes.insert(axis.name.clone(), value.clone());
        match &axis.target {
            AxisTarget::Param(name) => {
                params.insert(name.clone(), value.clone());
            }
            AxisTarget::MapEntry { param, key } => {
                let entry = params.entry(param.clone()).or_insert_with(|| Value::Table(BTreeMap::new()));
                if let Value::Table(t) = entry {
                    t.insert(key.clone(), value.clone());
                }
            }
            AxisTarget::Replicate => rep = value.as_i64().unwrap_or(0) as u64,
        }
    }
    let params = Params(params);
    kind.validate(&params).map_err(|e| format!("stage `{}`: {e}", stage.name))?;
    let mut resources = kind.resources(&params);
    if let Some(o) = &stage.resources {
        resources.cpus = o.cpus.unwrap_or(resources.cpus);
        resources.gpus = o.gpus.unwrap_or(resources.gpus);
        resources.mem_mb = o.mem_mb.unwrap_or(resources.mem_mb);
        resources.time_min = o.time_min.unwrap_or(resources.time_min);
    }
    let flops = kind.estimate_flops(&estimate_view(&params, &inputs, &p.instances));
    let data_digest = kind.builtin_data_digest(&params);
    Ok(Instance {
        id: instance_id(&stage.name, &axes),
        stage: si,
        kind: stage.kind.clone(),
        version: stage.version,
        params,
        axes,
        inputs,
        seed: stage.seed.wrapping_add(rep),
        resources,
        files: BTreeMap::new(),
        key: String::new(),
        flops,
        data_digest,
        unkeyed: Vec::new(),
    })
}

/// The digests of the files an instance's file parameters name (each file read once per
/// load); false, with a diagnostic, when one cannot be read.
fn digest_files(
    p: &Pipeline,
    si: usize,
    inst: &mut Instance,
    file_digests: &mut HashMap<String, Result<String, String>>,
    seen_errors: &mut BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let mut ok = true;
    for fp in &p.stages[si].file_params {
        let paths: Vec<String> = match inst.params.0.get(fp) {
            Some(Value::Str(s)) if !s.is_empty() => vec![s.clone()],
            Some(Value::List(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        let mut digests = Vec::new();
        for rel in paths {
            let full = p.project_dir.join(&rel);
            let digest = file_digests
                .entry(full.to_string_lossy().into_owned())
                .or_insert_with(|| {
                    crate::project_path::inside_project(&p.project_dir, &rel)?;
                    key::file_digest(&full).map_err(|e| format!("cannot read `{rel}` ({}): {e}", full.display()))
                })
                .clone();
            match digest {
                Ok(d) => digests.push((rel, d)),
                Err(msg) => {
                    if seen_errors.insert(msg.clone()) {
                        diags.push(Diagnostic::new(
                            format!("stage `{}`: {msg}", p.stages[si].name),
                            Some(p.stages[si].name_span.clone()),
                        ));
                    }
                    ok = false;
                }
            }
        }
        inst.files.insert(fp.clone(), digests);
    }
    ok
}

/// Set the instance's key (and the parameters left out of it).
fn key_instance(p: &Pipeline, si: usize, specs: &[ParamSpec], inst: &mut Instance) {
    let input_keys: BTreeMap<String, Vec<String>> =
        inst.inputs.iter().map(|(k, v)| (k.clone(), v.iter().map(|&i| p.instances[i].key.clone()).collect())).collect();
    // Stage names (in references) and file paths never enter a key: only the inputs' keys
    // and the files' contents do. Parameters added to a kind later and left at their
    // default stay out too, so results cached before they existed remain valid.
    inst.unkeyed = unkeyed_defaults(specs, &inst.params).into_iter().map(str::to_owned).collect();
    let stage = &p.stages[si];
    let skip: BTreeSet<&str> = stage
        .refs
        .keys()
        .chain(stage.file_params.iter())
        .map(String::as_str)
        .chain(unkeyed_defaults(specs, &inst.params))
        .collect();
    inst.key = key::instance_key(&key::KeyMaterial {
        kind: &inst.kind,
        version: inst.version,
        params: &inst.params,
        skip: &skip,
        files: &inst.files,
        inputs: &input_keys,
        seed: inst.seed,
        data: inst.data_digest.as_deref(),
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::key::{instance_key, KeyMaterial};
    use crate::kinds::Registry;
    use crate::pipeline::load_str;

    fn key_of(extra: &str) -> (String, crate::pipeline::Instance) {
        let text = format!(
            "[stage.toy]\nkind = \"toy-data\"\n\n[stage.flow]\nkind = \"train-flow\"\nweights = \"toy\"\niterations = 10\n{extra}\n"
        );
        let p = load_str(Path::new("keys.toml"), text, &[], &Registry::standard()).expect("pipeline loads");
        let inst = p.instances.iter().find(|i| i.kind == "train-flow").expect("flow instance").clone();
        (inst.key.clone(), inst)
    }

    #[test]
    fn parameters_added_later_enter_the_key_only_away_from_their_default() {
        let (plain, inst) = key_of("");
        assert_eq!(plain, key_of("lr_schedule = \"constant\"\nwarmup = 0").0, "an explicit default is the same key");
        assert_ne!(plain, key_of("lr_schedule = \"cosine\"").0);
        assert_ne!(key_of("lr_schedule = \"cosine\"").0, key_of("lr_schedule = \"cosine\"\nwarmup = 5").0);
        assert_eq!(plain, key_of("output = \"target\"").0);
        assert_ne!(plain, key_of("output = \"velocity\"").0);
        assert_eq!(plain, key_of("attention = \"dense\"").0);
        assert_eq!(plain, key_of("recompute = false").0);
        assert_ne!(plain, key_of("recompute = true").0);
        assert_eq!(plain, key_of("max_loss_ratio = 1e4").0);
        assert_ne!(plain, key_of("max_loss_ratio = 100").0);
        assert_ne!(plain, key_of("attention = \"layer-blocks\"").0);
        assert_eq!(plain, key_of("positions = \"shared\"").0);
        assert_ne!(plain, key_of("positions = \"per-neuron\"").0);
        // The key equals the one computed before these parameters existed.
        let mut before = inst.params.clone();
        for added in ["lr_schedule", "warmup", "ema", "output", "attention", "positions", "max_loss_ratio", "recompute"] {
            assert!(inst.unkeyed.iter().any(|name| name == added), "`{added}` is unkeyed at its default");
            before.0.remove(added);
        }
        let skip = std::collections::BTreeSet::from(["weights"]);
        let toy_key = {
            let text = "[stage.toy]\nkind = \"toy-data\"\n".to_owned();
            let p = load_str(Path::new("keys.toml"), text, &[], &Registry::standard()).expect("pipeline loads");
            p.instances[0].key.clone()
        };
        let inputs = std::collections::BTreeMap::from([("weights".to_owned(), vec![toy_key])]);
        let old = instance_key(&KeyMaterial {
            kind: "train-flow",
            version: inst.version,
            params: &before,
            skip: &skip,
            files: &inst.files,
            inputs: &inputs,
            seed: inst.seed,
            data: None,
        });
        assert_eq!(plain, old);
    }
}
