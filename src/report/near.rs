//! "How many of a group's rows land near a baseline": a table's `near` option.
//!
//! `near = { column = "accuracy", of = "eval-target", within = "0.02" }` takes the mean of
//! `column` over the rows gathered from the stage `of` (the baseline, e.g. the target
//! networks) and gives every row a 0/1 column `<column>_near`: 1 where the row's value is
//! within `within` of that mean. Summarised like any metric, its mean is the share of a
//! group's rows near the baseline.

use std::collections::BTreeMap;

use wfpipe_stages::kind::{Row, StageError, Value};

use super::aggregate::numeric;
use super::gather::INSTANCE_COLUMN;

/// A parsed `near` option.
#[derive(Clone, Debug, PartialEq)]
pub struct Near {
    pub column: String,
    /// The stage whose rows form the baseline.
    pub of: String,
    pub within: f64,
}

const KEYS: &[&str] = &["column", "of", "within"];

impl Near {
    /// `None` for an empty option; an error names what is missing or malformed.
    pub fn parse(option: &BTreeMap<String, String>) -> Result<Option<Near>, StageError> {
        if option.is_empty() {
            return Ok(None);
        }
        if let Some(unknown) = option.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(StageError::Param(format!("`near` has no key `{unknown}`; it takes {KEYS:?}")));
        }
        let get = |key: &str| {
            option.get(key).filter(|v| !v.is_empty()).cloned().ok_or_else(|| StageError::Param(format!("`near` needs `{key}`")))
        };
        let within = get("within")?;
        let within: f64 = within
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| StageError::Param(format!("`near.within` must be a non-negative number, found \"{within}\"")))?;
        Ok(Some(Near { column: get("column")?, of: get("of")?, within }))
    }

    /// The name of the 0/1 column this option adds.
    pub fn output_column(&self) -> String {
        format!("{}_near", self.column)
    }

    /// Adds the 0/1 column to every row that has a value in `column`; returns the
    /// baseline mean.
    pub fn mark(&self, rows: &mut [Row]) -> Result<f64, StageError> {
        let stage_of = |row: &Row| match row.get(INSTANCE_COLUMN) {
            Some(Value::Str(name)) => name.split('[').next().unwrap_or_default().to_owned(),
            _ => String::new(),
        };
        let mut baseline = Vec::new();
        for row in rows.iter().filter(|r| stage_of(r) == self.of) {
            let value = numeric(row, &self.column).map_err(|e| StageError::Input(e.to_string()))?;
            baseline.extend(value);
        }
        if baseline.is_empty() {
            return Err(StageError::Input(format!(
                "`near`: no rows of `{}` with a value in `{}` (is `{}` in `from`?)",
                self.of, self.column, self.of
            )));
        }
        let mean = baseline.iter().sum::<f64>() / baseline.len() as f64;
        let name = self.output_column();
        for row in rows.iter_mut() {
            if let Some(value) = numeric(row, &self.column).map_err(|e| StageError::Input(e.to_string()))? {
                let near = if (value - mean).abs() <= self.within { 1.0 } else { 0.0 };
                row.insert(name.clone(), Value::Float(near));
            }
        }
        Ok(mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(instance: &str, accuracy: f64) -> Row {
        Row::from([
            (INSTANCE_COLUMN.to_owned(), Value::Str(instance.to_owned())),
            ("accuracy".to_owned(), Value::Float(accuracy)),
        ])
    }

    fn option(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn rows_within_the_tolerance_of_the_baseline_mean_are_marked() {
        let near = Near::parse(&option(&[("column", "accuracy"), ("of", "eval-target"), ("within", "0.02")]))
            .expect("parses")
            .expect("set");
        let mut rows = vec![
            row("eval-target", 0.96),
            row("eval-target", 0.98),
            row("eval-flow[geometry=euclidean]", 0.955),
            row("eval-flow[geometry=euclidean]", 0.94),
            row("eval-flow[geometry=euclidean]", 1.0),
            row("eval-target-other", 0.5),
        ];
        assert!((near.mark(&mut rows).expect("marks") - 0.97).abs() < 1e-12);
        let marks: Vec<f64> = rows.iter().map(|r| numeric(r, "accuracy_near").unwrap().unwrap()).collect();
        assert_eq!(marks, vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn malformed_options_are_refused() {
        assert_eq!(Near::parse(&BTreeMap::new()).unwrap(), None);
        for (bad, says) in [
            (option(&[("column", "accuracy"), ("of", "t")]), "needs `within`"),
            (option(&[("column", "accuracy"), ("of", "t"), ("within", "-1")]), "non-negative"),
            (option(&[("column", "accuracy"), ("of", "t"), ("within", "x")]), "non-negative"),
            (option(&[("column", "accuracy"), ("of", "t"), ("within", "0.1"), ("by", "x")]), "no key `by`"),
        ] {
            let err = Near::parse(&bad).expect_err("refused").to_string();
            assert!(err.contains(says), "{err}");
        }
        let near = Near { column: "accuracy".into(), of: "missing".into(), within: 0.1 };
        assert!(near.mark(&mut [row("eval-target", 0.9)]).is_err());
    }
}
