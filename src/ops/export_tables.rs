//! The tables of exported instances in the shape an analysis wants: each row carries its
//! instance's key and sweep axes, per-network rows and the rows summarising them are
//! separate tables, and columns come in the order the kind declares them. The cache keeps
//! each table as the stage emitted it (so no key or entry changes); only the export is
//! reshaped.
//!
//! For an instance folder `DIR/<instance>/`, `<table>.parquet` (and `.csv`) is rewritten
//! and `<table>_summary.parquet` added where the table has summary rows; `DIR/<stage>.<table>.parquet`
//! holds the rows of every exported instance of the stage, one sweep in one file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::Context;
use wfpipe_stages::kind::{Row, TableDecl, Value, NETWORK_ROW, ROW_TYPE, SUMMARY_ROW};

use crate::pipeline::Instance;
use crate::table;

/// The column that names the instance's cache key.
pub const KEY_COLUMN: &str = "key";
/// The suffix of the table that holds a table's summary rows.
pub const SUMMARY_SUFFIX: &str = "_summary";

/// One exported table: its name and rows, with the order its columns take.
pub struct Tidy {
    pub name: String,
    pub rows: Vec<Row>,
    pub columns: Vec<String>,
}

/// The tidy tables of one instance's emitted table `name`.
pub fn tidy(inst: &Instance, name: &str, decl: Option<&TableDecl>, rows: Vec<Row>) -> Vec<Tidy> {
    let has_row_type = rows.iter().any(|r| r.contains_key(ROW_TYPE));
    let parts: Vec<(String, Vec<Row>)> = if has_row_type {
        let of = |kind: &str| rows.iter().filter(|r| matches!(r.get(ROW_TYPE), Some(Value::Str(s)) if s == kind)).cloned().collect::<Vec<_>>();
        let mut parts = vec![(name.to_owned(), of(NETWORK_ROW))];
        let summary = of(SUMMARY_ROW);
        if !summary.is_empty() {
            parts.push((format!("{name}{SUMMARY_SUFFIX}"), summary));
        }
        parts
    } else {
        vec![(name.to_owned(), rows)]
    };
    parts
        .into_iter()
        .map(|(name, rows)| {
            let rows: Vec<Row> = rows.into_iter().map(|r| annotate(inst, r)).collect();
            let columns = order(inst, decl, &rows);
            Tidy { name, rows, columns }
        })
        .collect()
}

/// The row without its row type, with the key and the axes the table does not already hold.
fn annotate(inst: &Instance, mut row: Row) -> Row {
    row.remove(ROW_TYPE);
    for (axis, value) in &inst.spec.axes {
        row.entry(axis.clone()).or_insert_with(|| value.clone());
    }
    row.insert(KEY_COLUMN.to_owned(), Value::Str(inst.key.clone()));
    row
}

/// Key, then the sweep axes (sorted), then the declared columns in declared order, then
/// the rest (the weight set's own columns, say) by name. Columns no row holds are left out.
fn order(inst: &Instance, decl: Option<&TableDecl>, rows: &[Row]) -> Vec<String> {
    let present: BTreeSet<&String> = rows.iter().flat_map(|r| r.keys()).collect();
    let mut columns: Vec<String> = vec![KEY_COLUMN.to_owned()];
    columns.extend(inst.spec.axes.keys().cloned());
    if let Some(declared) = decl.and_then(|d| d.columns.as_ref()) {
        columns.extend(declared.iter().cloned());
    }
    columns.extend(present.iter().map(|c| (*c).clone()));
    let mut seen = BTreeSet::new();
    columns.retain(|c| present.contains(c) && seen.insert(c.clone()));
    columns
}

/// Writes `<dir>/<name>.parquet` and `.csv` with exactly `columns`, in that order.
pub fn write(dir: &Path, name: &str, rows: &[Row], columns: &[String]) -> anyhow::Result<()> {
    let mut frame = table::rows_to_frame_ordered(rows, columns).with_context(|| format!("building table {name}"))?;
    table::write_frame(dir, name, &mut frame).with_context(|| format!("writing {}", dir.join(name).display()))
}

/// The emitted tables of an entry (`<name>.parquet`), by name.
pub fn emitted(out: &Path) -> anyhow::Result<BTreeMap<String, Vec<Row>>> {
    let mut tables = BTreeMap::new();
    for e in fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "parquet") {
            let name = path.file_stem().and_then(|s| s.to_str()).context("a table name that is not UTF-8")?.to_owned();
            let frame = table::read_parquet(&path).with_context(|| format!("reading {}", path.display()))?;
            tables.insert(name, table::frame_to_rows(&frame));
        }
    }
    Ok(tables)
}

/// Rows of one stage's instances gathered per table, with the union of their column orders.
#[derive(Default)]
pub struct StageTables(BTreeMap<(String, String), (Vec<Row>, Vec<String>)>);

impl StageTables {
    pub fn add(&mut self, stage: &str, t: &Tidy) {
        let (rows, columns) = self.0.entry((stage.to_owned(), t.name.clone())).or_default();
        rows.extend(t.rows.iter().cloned());
        for c in &t.columns {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
    }

    /// Writes `<dir>/<stage>.<table>.parquet` (and `.csv`) for each; returns their names.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for ((stage, name), (rows, columns)) in &self.0 {
            let file = format!("{stage}.{name}");
            write(dir, &file, rows, columns)?;
            names.push(format!("{file}.parquet"));
        }
        Ok(names)
    }
}
