//! Gathered rows -> the numbers a figure draws: line series with mean ± std per x,
//! per-series value lists for histograms, and cell grids for heat maps.
//!
//! Series are the distinct values of the `series` columns, ordered as table groups are
//! (numbers numerically, then text), so colours are stable across runs.

use std::collections::BTreeMap;

use wfpipe_stages::kind::{Row, Value};

use super::aggregate::{compare_values, group_and_summarise, numeric, AggregateError};
use super::gather::require_column;

/// One line: mean ± std of `y` at each distinct `x`.
#[derive(Clone, Debug, PartialEq)]
pub struct LineSeries {
    pub label: String,
    pub points: Vec<LinePoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LinePoint {
    pub x: f64,
    pub mean: f64,
    /// Sample std (ddof = 1); `None` for a single value.
    pub std: Option<f64>,
    pub count: usize,
    /// The smallest and largest value: a ± std band never reaches past them.
    pub min: f64,
    pub max: f64,
}

/// The values of one histogram series.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSeries {
    pub label: String,
    pub values: Vec<f64>,
}

/// One heat-map panel: the mean `z` of each (x, y) cell over the distinct x and y values.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatmapPanel {
    pub label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// `(x index, y index, mean z)`.
    pub cells: Vec<(usize, usize, f64)>,
    pub mean: f64,
}

/// A series label: bare text values (`euclidean, ot`), `column=value` for numbers and
/// booleans, which are unreadable without their name.
pub fn series_label(columns: &[String], key: &[Option<Value>]) -> String {
    if columns.is_empty() {
        return String::new();
    }
    columns
        .iter()
        .zip(key)
        .map(|(c, v)| match v {
            None => format!("{c}=–"),
            Some(Value::Str(s)) if s != "true" && s != "false" && s.parse::<f64>().is_err() => s.clone(),
            Some(v) => format!("{c}={v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key values of one series and its rows.
type SeriesRows<'r> = (Vec<Option<Value>>, Vec<&'r Row>);

/// Rows split by their series key, in series order.
fn by_series<'r>(rows: &'r [Row], series: &[String]) -> Result<Vec<(String, Vec<&'r Row>)>, AggregateError> {
    for c in series {
        require_column(rows, c)?;
    }
    let mut groups: BTreeMap<Vec<Option<String>>, SeriesRows<'r>> = BTreeMap::new();
    for row in rows {
        let key: Vec<Option<Value>> = series.iter().map(|c| row.get(c).cloned()).collect();
        let text = key.iter().map(|v| v.as_ref().map(Value::to_string)).collect();
        groups.entry(text).or_insert_with(|| (key, Vec::new())).1.push(row);
    }
    let mut out: Vec<SeriesRows<'r>> = groups.into_values().collect();
    out.sort_by(|a, b| a.0.iter().zip(&b.0).map(|(x, y)| compare_values(x, y)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal));
    Ok(out
        .into_iter()
        .map(|(key, rows)| {
            let label = if !key.is_empty() && key.iter().all(Option::is_none) { instances_label(&rows) } else { None };
            (label.unwrap_or_else(|| series_label(series, &key)), rows)
        })
        .collect())
}

/// The label of a series whose rows have none of the series columns (target networks
/// beside flows, which have no `geometry`): the instances the rows came from.
fn instances_label(rows: &[&Row]) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for row in rows {
        if let Some(Value::Str(name)) = row.get("instance") {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    (!names.is_empty()).then(|| names.join(", "))
}

pub fn line_series(rows: &[Row], x: &str, y: &str, series: &[String]) -> Result<Vec<LineSeries>, AggregateError> {
    let mut out = Vec::new();
    for (label, members) in by_series(rows, series)? {
        let owned: Vec<Row> = members.into_iter().cloned().collect();
        let grouped = group_and_summarise(&owned, &[x.to_owned()], &[y.to_owned()])?;
        let mut points = Vec::new();
        for g in &grouped.groups {
            let Some(xv) = &g.key[0] else { continue };
            let xf = xv.as_f64().ok_or_else(|| AggregateError::NotNumeric {
                column: x.to_owned(),
                instance: String::new(),
                value: xv.to_string(),
            })?;
            if let Some(s) = &g.metrics[0] {
                points.push(LinePoint { x: xf, mean: s.mean, std: s.std, count: s.count, min: s.min, max: s.max });
            }
        }
        if !points.is_empty() {
            out.push(LineSeries { label, points });
        }
    }
    Ok(out)
}

pub fn histogram_series(rows: &[Row], x: &str, series: &[String]) -> Result<Vec<HistogramSeries>, AggregateError> {
    require_column(rows, x)?;
    let mut out = Vec::new();
    for (label, members) in by_series(rows, series)? {
        let mut values = Vec::new();
        for row in members {
            if let Some(v) = numeric(row, x)? {
                if v.is_finite() {
                    values.push(v);
                }
            }
        }
        if !values.is_empty() {
            out.push(HistogramSeries { label, values });
        }
    }
    Ok(out)
}

pub fn heatmap_panels(rows: &[Row], x: &str, y: &str, z: &str, series: &[String]) -> Result<Vec<HeatmapPanel>, AggregateError> {
    for c in [x, y, z] {
        require_column(rows, c)?;
    }
    let mut out = Vec::new();
    for (label, members) in by_series(rows, series)? {
        let mut sums: BTreeMap<(u64, u64), (f64, f64, f64, usize)> = BTreeMap::new();
        for row in members {
            let (Some(xv), Some(yv), Some(zv)) = (numeric(row, x)?, numeric(row, y)?, numeric(row, z)?) else { continue };
            let e = sums.entry((xv.to_bits(), yv.to_bits())).or_insert((xv, yv, 0.0, 0));
            e.2 += zv;
            e.3 += 1;
        }
        if sums.is_empty() {
            continue;
        }
        let distinct = |pick: fn(&(f64, f64, f64, usize)) -> f64| {
            let mut v: Vec<f64> = sums.values().map(pick).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        };
        let xs = distinct(|e| e.0);
        let ys = distinct(|e| e.1);
        let index = |list: &[f64], v: f64| list.binary_search_by(|p| p.total_cmp(&v)).expect("value taken from the list");
        let cells: Vec<(usize, usize, f64)> = sums.values().map(|e| (index(&xs, e.0), index(&ys, e.1), e.2 / e.3 as f64)).collect();
        let mean = cells.iter().map(|c| c.2).sum::<f64>() / cells.len() as f64;
        out.push(HeatmapPanel { label, xs, ys, cells, mean });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn lines_average_over_rows_at_each_x_per_series() {
        let rows = vec![
            row(&[("g", Value::Str("b".into())), ("steps", Value::Int(8)), ("acc", Value::Float(0.5))]),
            row(&[("g", Value::Str("b".into())), ("steps", Value::Int(8)), ("acc", Value::Float(0.7))]),
            row(&[("g", Value::Str("a".into())), ("steps", Value::Int(64)), ("acc", Value::Float(0.9))]),
            row(&[("g", Value::Str("a".into())), ("steps", Value::Int(8)), ("acc", Value::Float(0.8))]),
        ];
        let s = line_series(&rows, "steps", "acc", &["g".into()]).unwrap();
        assert_eq!(s.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s[0].points.iter().map(|p| p.x).collect::<Vec<_>>(), [8.0, 64.0]);
        let b = &s[1].points[0];
        assert!((b.mean - 0.6).abs() < 1e-12 && (b.std.unwrap() - 0.02f64.sqrt()).abs() < 1e-12, "{b:?}");
    }

    #[test]
    fn labels_name_numeric_and_boolean_values() {
        let cols = vec!["geometry".to_string(), "guided".to_string(), "steps".to_string()];
        let key = vec![Some(Value::Str("euclidean".into())), Some(Value::Bool(true)), Some(Value::Int(8))];
        assert_eq!(series_label(&cols, &key), "euclidean, guided=true, steps=8");
    }

    #[test]
    fn a_series_without_the_series_columns_is_named_by_its_instances() {
        let rows = vec![
            row(&[("geometry", Value::Str("euclidean".into())), ("instance", Value::Str("eval[geometry=euclidean]".into())), ("m", Value::Int(1)), ("a", Value::Float(0.5))]),
            row(&[("instance", Value::Str("eval-target".into())), ("m", Value::Int(1)), ("a", Value::Float(0.9))]),
        ];
        let s = line_series(&rows, "m", "a", &["geometry".to_string()]).unwrap();
        assert_eq!(s.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(), ["eval-target", "euclidean"]);
    }

    #[test]
    fn heatmap_cells_index_distinct_values() {
        let rows = vec![
            row(&[("a", Value::Int(3)), ("b", Value::Int(7)), ("z", Value::Float(1.0))]),
            row(&[("a", Value::Int(1)), ("b", Value::Int(7)), ("z", Value::Float(3.0))]),
        ];
        let p = heatmap_panels(&rows, "a", "b", "z", &[]).unwrap();
        assert_eq!(p[0].xs, [1.0, 3.0]);
        assert_eq!(p[0].ys, [7.0]);
        assert_eq!(p[0].cells, [(0, 0, 3.0), (1, 0, 1.0)]);
        assert_eq!(p[0].mean, 2.0);
    }
}
