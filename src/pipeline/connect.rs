//! Typed connections: what a reference selects must produce what its parameter needs,
//! down to the columns and rows a stage reads from an upstream table.

use std::collections::BTreeSet;

use wfpipe_stages::kind::{ColumnUse, Needs, NetworkColumns, Params, Value};

use super::diagnostic::Diagnostic;
use super::Pipeline;
use crate::kinds::Registry;
use crate::report::gather::INSTANCE_COLUMN;

/// Typed connections: every stage a reference selects must produce what the parameter
/// needs (a weight set, a trained flow, a named table). One instance per upstream stage
/// stands for its stage. False (with a diagnostic at the reference) when one does not.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_connection(
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
        let Some(produces) = registry.get(&up.spec.kind).and_then(|k| k.produces(&up.spec.params)) else { continue };
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
                    up.spec.kind,
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
        known.extend(up.spec.axes.keys().cloned());
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
    let Some(keys) = registry.get(&up.spec.kind).and_then(|k| k.produces(&up.spec.params)).and_then(|pr| pr.table(table).and_then(|d| d.keyed_by.clone())) else {
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
    let produces = registry.get(&up.spec.kind)?.produces(&up.spec.params)?;
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
    match registry.get(&up.spec.kind)?.produces(&up.spec.params)?.network_columns {
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
