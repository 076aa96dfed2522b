//! Group rows by some columns and summarise numeric columns per group.
//!
//! The main type is [`Grouped`], built by [`group_and_summarise`] from gathered rows. Groups
//! are ordered by their key values (numbers numerically, text lexically), never by the order
//! rows arrived in, so a table is the same however its inputs were listed. The standard
//! deviation is the sample one (ddof = 1, as numpy's `std(ddof=1)` and pandas' default);
//! it is absent for a group of one value.
//!
//! Rows marked `row_type = "summary"` (evaluate's one row per instance) hold means of the
//! per-network rows beside them. A metric is summarised over the per-network rows that
//! carry it; only a metric no such row carries (functional diversity) is read from the
//! summary rows, with the spread they report (`<metric>_std`, the std over the pairs)
//! pooled across them. So a table over evaluate without a `filter` neither counts a mean
//! as one more network nor loses the diversity's spread.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use wfpipe_stages::kind::{Row, Value, ROW_TYPE, SUMMARY_ROW};

use super::gather::{require_column, GatherError};

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    Column(#[from] GatherError),
    #[error("column `{column}` is not numeric: row of `{instance}` holds `{value}`")]
    NotNumeric { column: String, instance: String, value: String },
}

/// Summary statistics of one metric in one group.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    /// Sample standard deviation (ddof = 1); `None` when `count < 2`.
    pub std: Option<f64>,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.len() > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary { count: values.len(), mean, std, min, max })
    }

    /// Summary rows' `(mean, std)` pooled as if their equally many underlying values were
    /// one sample: the mean of means, and the root of the mean within-row variance plus
    /// the variance of the means (ddof = 0 across rows, so one row keeps its own std).
    pub fn pooled(parts: &[(f64, Option<f64>)]) -> Option<Summary> {
        if parts.is_empty() {
            return None;
        }
        let k = parts.len() as f64;
        let mean = parts.iter().map(|p| p.0).sum::<f64>() / k;
        let within: Option<f64> = parts.iter().map(|p| p.1.map(|s| s * s)).sum::<Option<f64>>();
        let between = parts.iter().map(|p| (p.0 - mean).powi(2)).sum::<f64>() / k;
        let std = within.map(|w| (w / k + between).sqrt());
        let min = parts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let max = parts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        Some(Summary { count: parts.len(), mean, std, min, max })
    }
}

/// One group: its key (one value per group column; `None` where rows lack the column),
/// the number of rows (its per-network rows where it has any: a summary row is not one
/// more network), and a summary per metric (`None` if no row had a value).
#[derive(Clone, Debug)]
pub struct Group {
    pub key: Vec<Option<Value>>,
    pub rows: usize,
    pub metrics: Vec<Option<Summary>>,
}

#[derive(Clone, Debug)]
pub struct Grouped {
    pub columns: Vec<String>,
    pub metrics: Vec<String>,
    pub groups: Vec<Group>,
}

/// Total order over optional values: absent first, numbers by value, then text.
pub fn compare_values(a: &Option<Value>, b: &Option<Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p.total_cmp(&q),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => x.to_string().cmp(&y.to_string()),
        },
    }
}

/// A numeric cell, or a typed error naming the row's instance.
pub fn numeric(row: &Row, column: &str) -> Result<Option<f64>, AggregateError> {
    match row.get(column) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| AggregateError::NotNumeric {
            column: column.to_owned(),
            instance: row.get(super::gather::INSTANCE_COLUMN).map(|v| v.to_string()).unwrap_or_default(),
            value: v.to_string(),
        }),
    }
}

/// One metric's values in a group being filled: from per-network rows, and `(mean, std)`
/// from summary rows.
#[derive(Clone, Default)]
struct Values {
    rows: Vec<f64>,
    summaries: Vec<(f64, Option<f64>)>,
}

impl Values {
    fn summary(&self) -> Option<Summary> {
        if self.rows.is_empty() {
            Summary::pooled(&self.summaries)
        } else {
            Summary::of(&self.rows)
        }
    }
}

/// A group being filled: its key values, its counts of (per-network, summary) rows, and
/// each metric's values.
type Bucket = (Vec<Option<Value>>, (usize, usize), Vec<Values>);

fn is_summary(row: &Row) -> bool {
    matches!(row.get(ROW_TYPE), Some(Value::Str(t)) if t == SUMMARY_ROW)
}

pub fn group_and_summarise(rows: &[Row], columns: &[String], metrics: &[String]) -> Result<Grouped, AggregateError> {
    for c in columns.iter().chain(metrics) {
        require_column(rows, c)?;
    }
    // Group keys compare by their text so `1` from one file and `1` from another agree.
    let mut by_key: BTreeMap<Vec<Option<String>>, Bucket> = BTreeMap::new();
    for row in rows {
        let key: Vec<Option<Value>> = columns.iter().map(|c| row.get(c).cloned()).collect();
        let text: Vec<Option<String>> = key.iter().map(|v| v.as_ref().map(Value::to_string)).collect();
        let entry = by_key.entry(text).or_insert_with(|| (key, (0, 0), vec![Values::default(); metrics.len()]));
        let summary = is_summary(row);
        if summary {
            entry.1 .1 += 1;
        } else {
            entry.1 .0 += 1;
        }
        for (slot, m) in entry.2.iter_mut().zip(metrics) {
            if let Some(x) = numeric(row, m)? {
                if summary {
                    slot.summaries.push((x, numeric(row, &format!("{m}_std"))?));
                } else {
                    slot.rows.push(x);
                }
            }
        }
    }
    let mut groups: Vec<Group> = by_key
        .into_values()
        .map(|(key, (networks, summaries), values)| Group {
            key,
            rows: if networks > 0 { networks } else { summaries },
            metrics: values.iter().map(Values::summary).collect(),
        })
        .collect();
    groups.sort_by(|a, b| {
        a.key.iter().zip(&b.key).map(|(x, y)| compare_values(x, y)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
    });
    Ok(Grouped { columns: columns.to_vec(), metrics: metrics.to_vec(), groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn sample_std_and_numeric_group_order() {
        let rows = vec![
            row(&[("steps", Value::Int(16)), ("acc", Value::Float(1.0))]),
            row(&[("steps", Value::Int(8)), ("acc", Value::Float(2.0))]),
            row(&[("steps", Value::Int(8)), ("acc", Value::Float(4.0))]),
            row(&[("steps", Value::Int(8)), ("acc", Value::Float(6.0))]),
        ];
        let g = group_and_summarise(&rows, &["steps".into()], &["acc".into()]).unwrap();
        assert_eq!(g.groups.len(), 2);
        assert_eq!(g.groups[0].key, vec![Some(Value::Int(8))]);
        let s = g.groups[0].metrics[0].clone().unwrap();
        assert_eq!((s.count, s.mean, s.std, s.min, s.max), (3, 4.0, Some(2.0), 2.0, 6.0));
        let one = g.groups[1].metrics[0].clone().unwrap();
        assert_eq!((one.count, one.mean, one.std), (1, 1.0, None));
    }

    #[test]
    fn text_in_a_metric_column_is_an_error_naming_the_column() {
        let rows = vec![row(&[("acc", Value::Str("high".into()))])];
        let e = group_and_summarise(&rows, &[], &["acc".into()]).unwrap_err();
        assert!(e.to_string().contains("column `acc` is not numeric"), "{e}");
    }

    #[test]
    fn summary_rows_give_only_the_metrics_network_rows_lack_with_their_spread() {
        let network = |acc: f64| row(&[("row_type", Value::Str("network".into())), ("accuracy", Value::Float(acc))]);
        let summary = |acc: f64, div: f64, div_std: f64| {
            row(&[
                ("row_type", Value::Str("summary".into())),
                ("accuracy", Value::Float(acc)),
                ("accuracy_std", Value::Float(0.5)),
                ("diversity", Value::Float(div)),
                ("diversity_std", Value::Float(div_std)),
            ])
        };
        // Table 7.2's shape: one evaluate instance, networks and their summary, no filter.
        let rows = vec![network(0.8), network(0.9), network(1.0), summary(0.9, 0.002, 0.001)];
        let g = group_and_summarise(&rows, &[], &["accuracy".into(), "diversity".into()]).unwrap();
        let acc = g.groups[0].metrics[0].clone().unwrap();
        assert_eq!(acc.count, 3, "the summary's mean is not one more network");
        assert_eq!(g.groups[0].rows, 3, "nor is it counted in the group's n");
        assert!((acc.mean - 0.9).abs() < 1e-12 && (acc.std.unwrap() - 0.1).abs() < 1e-12);
        let div = g.groups[0].metrics[1].clone().unwrap();
        assert_eq!((div.count, div.mean, div.std), (1, 0.002, Some(0.001)), "diversity keeps its spread over pairs");
        // Two instances (training seeds): pooled as one sample of equally many pairs.
        let rows = vec![summary(0.9, 1.0, 3.0), summary(0.9, 3.0, 1.0)];
        let g = group_and_summarise(&rows, &[], &["diversity".into()]).unwrap();
        assert_eq!(g.groups[0].rows, 2, "a group of summary rows only counts them");
        let div = g.groups[0].metrics[0].clone().unwrap();
        // within: (9 + 1) / 2 = 5; between: ((1-2)^2 + (3-2)^2) / 2 = 1.
        assert_eq!((div.count, div.mean, div.std, div.min, div.max), (2, 2.0, Some(6f64.sqrt()), 1.0, 3.0));
    }
}
