//! Sweep declarations: `matrix` (cartesian product), `zip` (paired lists), `include` /
//! `exclude` and `replicates`, checked against the kind's schema into axis groups, and
//! the combinations they give.

use std::collections::{BTreeMap, BTreeSet};

use wfpipe_stages::kind::{ParamSpec, ParamType, Value};

use super::check::{check_value, span_of};
use super::diagnostic::Diagnostic;
use super::source::{SKind, SValue};
use super::Loader;

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
pub(super) type Combo<'a> = Vec<(&'a Axis, Value)>;

pub(super) fn combos(groups: &[AxisGroup]) -> Vec<Combo<'_>> {
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

pub(super) fn matches(axes: &BTreeMap<String, Value>, filter: &BTreeMap<String, Value>) -> bool {
    filter.iter().all(|(k, v)| axes.get(k) == Some(v))
}
