//! Result tables: rows emitted by stages -> Polars DataFrames -> parquet + csv.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use wfpipe_stages::kind::{Row, Value};

/// The column type that holds every value of a column.
#[derive(Clone, Copy, PartialEq, Debug)]
enum ColumnType {
    Int,
    Float,
    Bool,
    Str,
}

fn column_type(values: &[Option<&Value>]) -> ColumnType {
    let mut ty: Option<ColumnType> = None;
    for v in values.iter().flatten() {
        let t = match v {
            Value::Int(_) => ColumnType::Int,
            Value::Float(_) => ColumnType::Float,
            Value::Bool(_) => ColumnType::Bool,
            _ => ColumnType::Str,
        };
        ty = Some(match (ty, t) {
            (None, t) => t,
            (Some(a), b) if a == b => a,
            (Some(ColumnType::Int), ColumnType::Float) | (Some(ColumnType::Float), ColumnType::Int) => ColumnType::Float,
            _ => ColumnType::Str,
        });
    }
    ty.unwrap_or(ColumnType::Str)
}

/// Build a DataFrame from rows; columns are the union of row keys, sorted by name.
pub fn rows_to_frame(rows: &[Row]) -> PolarsResult<DataFrame> {
    let mut names: Vec<&String> = rows.iter().flat_map(|r| r.keys()).collect();
    names.sort();
    names.dedup();
    let names: Vec<String> = names.into_iter().cloned().collect();
    rows_to_frame_ordered(rows, &names)
}

/// Build a DataFrame whose columns are exactly `names`, in that order (aggregated tables
/// keep their group columns first); a row without a column holds null there.
pub fn rows_to_frame_ordered(rows: &[Row], names: &[String]) -> PolarsResult<DataFrame> {
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let values: Vec<Option<&Value>> = rows.iter().map(|r| r.get(name)).collect();
        let pname = PlSmallStr::from(name.as_str());
        let col = match column_type(&values) {
            ColumnType::Int => Column::new(pname, values.iter().map(|v| v.and_then(Value::as_i64)).collect::<Vec<_>>()),
            ColumnType::Float => Column::new(pname, values.iter().map(|v| v.and_then(Value::as_f64)).collect::<Vec<_>>()),
            ColumnType::Bool => Column::new(
                pname,
                values.iter().map(|v| v.and_then(|x| if let Value::Bool(b) = x { Some(*b) } else { None })).collect::<Vec<_>>(),
            ),
            ColumnType::Str => Column::new(pname, values.iter().map(|v| v.map(|x| x.to_string())).collect::<Vec<_>>()),
        };
        columns.push(col);
    }
    DataFrame::new(rows.len(), columns)
}

/// Write `<dir>/<name>.parquet` and `<dir>/<name>.csv`.
pub fn write_rows(dir: &Path, name: &str, rows: &[Row]) -> PolarsResult<()> {
    let mut df = rows_to_frame(rows)?;
    write_frame(dir, name, &mut df)
}

pub fn write_frame(dir: &Path, name: &str, df: &mut DataFrame) -> PolarsResult<()> {
    ParquetWriter::new(File::create(dir.join(format!("{name}.parquet")))?).finish(df)?;
    CsvWriter::new(File::create(dir.join(format!("{name}.csv")))?).finish(df)?;
    Ok(())
}

pub fn read_parquet(path: &Path) -> PolarsResult<DataFrame> {
    ParquetReader::new(File::open(path)?).finish()
}

/// A CSV file with a header row; column types are inferred from the whole file.
pub fn read_csv(path: &Path) -> PolarsResult<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()
}

/// Rows back out of a frame (for aggregation across instances).
pub fn frame_to_rows(df: &DataFrame) -> Vec<Row> {
    let mut rows: Vec<Row> = vec![BTreeMap::new(); df.height()];
    for col in df.columns() {
        let name = col.name().to_string();
        let s = col.as_materialized_series();
        for (i, row) in rows.iter_mut().enumerate() {
            let v = match s.get(i) {
                Ok(AnyValue::Int64(x)) => Value::Int(x),
                Ok(AnyValue::Int32(x)) => Value::Int(x as i64),
                Ok(AnyValue::UInt32(x)) => Value::Int(x as i64),
                Ok(AnyValue::UInt64(x)) => Value::Int(x as i64),
                Ok(AnyValue::Float64(x)) => Value::Float(x),
                Ok(AnyValue::Float32(x)) => Value::Float(x as f64),
                Ok(AnyValue::Boolean(b)) => Value::Bool(b),
                Ok(AnyValue::String(s)) => Value::Str(s.to_owned()),
                Ok(AnyValue::StringOwned(s)) => Value::Str(s.to_string()),
                Ok(AnyValue::Null) | Err(_) => continue,
                Ok(other) => Value::Str(other.to_string()),
            };
            row.insert(name.clone(), v);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_parquet() {
        let dir = crate::scratch::ScratchDir::new("test").unwrap();
        let rows: Vec<Row> = (0..3)
            .map(|i| {
                BTreeMap::from([
                    ("run".to_owned(), Value::Int(i)),
                    ("acc".to_owned(), Value::Float(0.5 + i as f64 / 10.0)),
                    ("name".to_owned(), Value::Str(format!("r{i}"))),
                ])
            })
            .collect();
        write_rows(dir.path(), "t", &rows).unwrap();
        let back = frame_to_rows(&read_parquet(&dir.path().join("t.parquet")).unwrap());
        assert_eq!(back, rows);
        let csv = std::fs::read_to_string(dir.path().join("t.csv")).unwrap();
        assert!(csv.starts_with("acc,name,run\n0.5,r0,0\n"), "{csv}");
    }
}
