//! Rows of one emitted table from every gathered input instance.
//!
//! Each input contributes the rows of `<source>.parquet` (what stages emit) or, failing
//! that, `<source>.csv` (what `command` stages write). Every row gets the instance's matrix
//! axes as columns and an `instance` column, so tables and figures can group by axes the
//! rows themselves do not carry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use wfpipe_stages::kind::{InputArtifact, Row, StageError, Value};

use crate::table;

/// The column naming each row's source instance.
pub const INSTANCE_COLUMN: &str = "instance";

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("`{instance}` has neither {source_name}.parquet nor {source_name}.csv (files: {files})")]
    NoSource { instance: String, source_name: String, files: String },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("`{instance}`: column `{column}` holds {row_value} in its rows but the instance's axis says {axis_value}")]
    AxisConflict { instance: String, column: String, row_value: String, axis_value: String },
    #[error("no rows: the inputs' {source_name} tables are empty{filtered}")]
    Empty { source_name: String, filtered: &'static str },
    #[error("no column `{column}` in the gathered rows; columns: {columns}")]
    NoColumn { column: String, columns: String },
}

impl From<GatherError> for StageError {
    fn from(e: GatherError) -> Self {
        StageError::Input(e.to_string())
    }
}

/// Every row of `source` from `inputs`, with axis and instance columns, that passes `filter`
/// (column -> required value, compared as text).
pub fn gather(inputs: &[InputArtifact], source: &str, filter: &BTreeMap<String, String>) -> Result<Vec<Row>, GatherError> {
    let mut rows = Vec::new();
    for input in inputs {
        for mut row in read_source(input, source)? {
            for (axis, value) in &input.axes {
                match row.get(axis) {
                    Some(existing) if existing.to_string() != value.to_string() => {
                        return Err(GatherError::AxisConflict {
                            instance: input.instance.clone(),
                            column: axis.clone(),
                            row_value: existing.to_string(),
                            axis_value: value.to_string(),
                        })
                    }
                    Some(_) => {}
                    None => {
                        row.insert(axis.clone(), value.clone());
                    }
                }
            }
            row.entry(INSTANCE_COLUMN.to_owned()).or_insert_with(|| Value::Str(input.instance.clone()));
            rows.push(row);
        }
    }
    let total = rows.len();
    for column in filter.keys() {
        require_column(&rows, column)?;
    }
    rows.retain(|row| filter.iter().all(|(col, want)| row.get(col).is_some_and(|v| v.to_string() == *want)));
    if rows.is_empty() {
        return Err(GatherError::Empty {
            source_name: source.to_owned(),
            filtered: if total > 0 { " after `filter`" } else { "" },
        });
    }
    Ok(rows)
}

/// Fail with the list of known columns when no row has `column`.
pub fn require_column(rows: &[Row], column: &str) -> Result<(), GatherError> {
    if rows.iter().any(|r| r.contains_key(column)) {
        return Ok(());
    }
    let mut columns: Vec<&str> = rows.iter().flat_map(|r| r.keys().map(String::as_str)).collect();
    columns.sort();
    columns.dedup();
    Err(GatherError::NoColumn { column: column.to_owned(), columns: columns.join(", ") })
}

/// A `source` names a table an input emitted, a plain file stem: never a path, so it can
/// only reach files inside the input's own cache entry.
pub fn check_source_name(source: &str) -> Result<(), String> {
    if source.is_empty() || !source.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("`source` must name a table (letters, digits, `_`, `-`), found \"{source}\""));
    }
    Ok(())
}

fn read_source(input: &InputArtifact, source: &str) -> Result<Vec<Row>, GatherError> {
    check_source_name(source).map_err(|message| GatherError::Read { path: input.dir.clone(), message })?;
    let parquet = input.file(&format!("{source}.parquet"));
    let csv = input.file(&format!("{source}.csv"));
    let (path, frame) = if parquet.is_file() {
        let f = table::read_parquet(&parquet);
        (parquet, f)
    } else if csv.is_file() {
        let f = table::read_csv(&csv);
        (csv, f)
    } else {
        let files = crate::cache::list_files(&input.dir)
            .map(|fs| fs.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        return Err(GatherError::NoSource { instance: input.instance.clone(), source_name: source.to_owned(), files });
    };
    let frame = frame.map_err(|e| GatherError::Read { path: path.clone(), message: e.to_string() })?;
    Ok(table::frame_to_rows(&frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &std::path::Path, name: &str, axes: &[(&str, Value)]) -> InputArtifact {
        InputArtifact {
            instance: name.into(),
            kind: "command".into(),
            axes: axes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            key: "k".into(),
            dir: dir.to_owned(),
        }
    }

    #[test]
    fn csv_rows_get_axis_columns_and_filters_apply() {
        let dir = crate::scratch::ScratchDir::new("test").unwrap();
        std::fs::write(dir.path().join("metrics.csv"), "kind,acc\nsummary,0.5\nnet,0.25\n").unwrap();
        let a = artifact(dir.path(), "gen[N=1]", &[("N", Value::Str("1".into()))]);
        let rows = gather(std::slice::from_ref(&a), "metrics", &BTreeMap::new()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get("N"), Some(&Value::Str("1".into())));
        assert_eq!(rows[0].get("acc"), Some(&Value::Float(0.5)));
        assert_eq!(rows[1].get(INSTANCE_COLUMN), Some(&Value::Str("gen[N=1]".into())));
        let only_nets = gather(std::slice::from_ref(&a), "metrics", &BTreeMap::from([("kind".into(), "net".into())])).unwrap();
        assert_eq!(only_nets.len(), 1);
        assert!(matches!(gather(std::slice::from_ref(&a), "metrics", &BTreeMap::from([("kid".into(), "net".into())])), Err(GatherError::NoColumn { .. })));
        assert!(matches!(gather(&[a], "missing", &BTreeMap::new()), Err(GatherError::NoSource { .. })));
    }
}
