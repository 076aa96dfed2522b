//! A grouped summary as a result table: ordered columns for parquet/csv, and markdown.
//!
//! The main type is [`SummaryTable`], built by the `table` kind from a [`Grouped`] and,
//! when the table names a thesis reference, the matching [`ReferenceRow`] of each group.
//! Column layout: the group columns, `thesis_row` (with a reference), then per metric
//! `<m>_mean`, `<m>_std`, `<m>_count`, optionally `<m>_min`, `<m>_max`, and with a
//! reference `<m>_thesis`, `<m>_thesis_std`, `<m>_diff` (ours minus thesis).

use std::collections::BTreeMap;
use std::fmt::Write;

use wfpipe_stages::kind::{Row, Value};

use super::aggregate::{Group, Grouped};
use super::reference::{match_text, ReferenceRow, ReferenceTable};

pub struct SummaryTable<'a> {
    pub title: String,
    pub grouped: Grouped,
    pub with_min_max: bool,
    /// The reference id (`thesis:table-7.1`), its table, and each group's row if one matched.
    pub reference: Option<(String, &'a ReferenceTable, Vec<Option<&'a ReferenceRow>>)>,
}

impl<'a> SummaryTable<'a> {
    pub fn new(title: String, grouped: Grouped, with_min_max: bool) -> Self {
        SummaryTable { title, grouped, with_min_max, reference: None }
    }

    /// Attach the thesis's rows: each group looks itself up by its column values, with
    /// `fixed` supplying values for match keys the table does not group by.
    pub fn with_reference(mut self, id: &str, table: &'a ReferenceTable, fixed: &BTreeMap<String, String>) -> Self {
        let rows = self
            .grouped
            .groups
            .iter()
            .map(|g| {
                let mut values = fixed.clone();
                // A column this group has no value in (rows from a stage without that
                // axis, e.g. target networks beside flows) counts as empty.
                for (c, v) in self.grouped.columns.iter().zip(&g.key) {
                    match v {
                        Some(v) => {
                            values.insert(c.clone(), match_text(v));
                        }
                        None => {
                            values.entry(c.clone()).or_default();
                        }
                    }
                }
                table.lookup(&values)
            })
            .collect();
        self.reference = Some((id.to_owned(), table, rows));
        self
    }

    fn thesis_row(&self, i: usize) -> Option<&'a ReferenceRow> {
        self.reference.as_ref().and_then(|(_, _, rows)| rows[i])
    }

    pub fn column_names(&self) -> Vec<String> {
        column_names(&self.grouped.columns, &self.grouped.metrics, self.with_min_max, self.reference.is_some())
    }

    pub fn rows(&self) -> Vec<Row> {
        self.grouped.groups.iter().enumerate().map(|(i, g)| self.row(i, g)).collect()
    }

    fn row(&self, i: usize, g: &Group) -> Row {
        let mut row = Row::new();
        for (c, v) in self.grouped.columns.iter().zip(&g.key) {
            if let Some(v) = v {
                row.insert(c.clone(), v.clone());
            }
        }
        let thesis = self.thesis_row(i);
        if let Some(t) = thesis {
            row.insert(THESIS_ROW.into(), Value::Str(t.label.clone()));
        }
        for (m, s) in self.grouped.metrics.iter().zip(&g.metrics) {
            row.insert(format!("{m}_count"), Value::Int(s.as_ref().map_or(0, |s| s.count as i64)));
            let Some(s) = s else { continue };
            row.insert(format!("{m}_mean"), Value::Float(s.mean));
            if let Some(std) = s.std {
                row.insert(format!("{m}_std"), Value::Float(std));
            }
            if self.with_min_max {
                row.insert(format!("{m}_min"), Value::Float(s.min));
                row.insert(format!("{m}_max"), Value::Float(s.max));
            }
            if let Some((mean, std)) = thesis.and_then(|t| t.metric(m)) {
                row.insert(format!("{m}_thesis"), Value::Float(mean));
                row.insert(format!("{m}_thesis_std"), Value::Float(std));
                row.insert(format!("{m}_diff"), Value::Float(s.mean - mean));
            }
        }
        // Thesis columns stay typed as numbers even where no row matched.
        row
    }

    pub fn markdown(&self) -> String {
        let mut head: Vec<String> = self.grouped.columns.clone();
        let mut align: Vec<&str> = vec!["---"; head.len()];
        if self.reference.is_some() {
            head.push("thesis row".into());
            align.push("---");
        }
        head.push("n".into());
        align.push("--:");
        for m in &self.grouped.metrics {
            head.push(m.clone());
            align.push("--:");
            if self.with_min_max {
                head.extend([format!("{m} min"), format!("{m} max")]);
                align.extend(["--:", "--:"]);
            }
            if self.reference.is_some() {
                head.extend([format!("{m} (thesis)"), format!("Δ {m}")]);
                align.extend(["--:", "--:"]);
            }
        }
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "**{}**\n", escape(&self.title));
        }
        let _ = writeln!(out, "| {} |", head.iter().map(|h| escape(h)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(out, "|{}|", align.join("|"));
        for (i, g) in self.grouped.groups.iter().enumerate() {
            let mut cells: Vec<String> = g.key.iter().map(|v| v.as_ref().map_or("–".into(), |v| escape(&v.to_string()))).collect();
            let thesis = self.thesis_row(i);
            if self.reference.is_some() {
                cells.push(thesis.map_or("–".into(), |t| escape(&t.label)));
            }
            cells.push(g.rows.to_string());
            for (m, s) in self.grouped.metrics.iter().zip(&g.metrics) {
                cells.push(s.as_ref().map_or("–".into(), |s| mean_std(s.mean, s.std)));
                if self.with_min_max {
                    cells.push(s.as_ref().map_or("–".into(), |s| number(s.min, decimals(s.min))));
                    cells.push(s.as_ref().map_or("–".into(), |s| number(s.max, decimals(s.max))));
                }
                if self.reference.is_some() {
                    match (thesis.and_then(|t| t.metric(m)), s) {
                        (Some((tm, ts)), Some(s)) => {
                            cells.push(mean_std(tm, Some(ts)));
                            cells.push(signed(s.mean - tm, decimals(tm)));
                        }
                        (Some((tm, ts)), None) => {
                            cells.push(mean_std(tm, Some(ts)));
                            cells.push("–".into());
                        }
                        _ => cells.extend(["–".to_string(), "–".to_string()]),
                    }
                }
            }
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = write!(out, "\nMean ± sample standard deviation (ddof = 1) over the n rows of each group.");
        if let Some((id, table, _)) = &self.reference {
            let _ = write!(out, " Thesis values from `{id}` ({}); Δ = ours − thesis.", escape(&table.title));
        }
        out.push('\n');
        out
    }
}

/// The columns of a summary table, in their order: the group columns, the thesis's row
/// label with a reference, then per metric its mean, std and count (min and max, the
/// thesis's mean and std and our difference).
pub fn column_names(groups: &[String], metrics: &[String], min_max: bool, reference: bool) -> Vec<String> {
    let mut names = groups.to_vec();
    if reference {
        names.push(THESIS_ROW.into());
    }
    for m in metrics {
        names.extend([format!("{m}_mean"), format!("{m}_std"), format!("{m}_count")]);
        if min_max {
            names.extend([format!("{m}_min"), format!("{m}_max")]);
        }
        if reference {
            names.extend([format!("{m}_thesis"), format!("{m}_thesis_std"), format!("{m}_diff")]);
        }
    }
    names
}

/// The column naming the thesis's row a group matched.
pub const THESIS_ROW: &str = "thesis_row";

/// Decimals that show a value to three significant digits when it is small (diversity is
/// ~1e-3), and three decimals otherwise, as the thesis prints accuracies and losses.
pub fn decimals(x: f64) -> usize {
    if x == 0.0 || !x.is_finite() {
        return 3;
    }
    let magnitude = x.abs().log10().floor() as i64;
    if magnitude >= -2 {
        3
    } else {
        ((-magnitude) as usize + 2).min(10)
    }
}

pub fn number(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}

fn signed(x: f64, decimals: usize) -> String {
    format!("{x:+.decimals$}")
}

pub fn mean_std(mean: f64, std: Option<f64>) -> String {
    let d = decimals(mean);
    match std {
        Some(s) => format!("{} ± {}", number(mean, d), number(s, d)),
        None => number(mean, d),
    }
}

/// Text safe inside a markdown table cell.
pub fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits_when_small() {
        assert_eq!(mean_std(0.99812, Some(0.0061)), "0.998 ± 0.006");
        assert_eq!(mean_std(0.00102, Some(0.00114)), "0.00102 ± 0.00114");
        assert_eq!(mean_std(9.6011, None), "9.601");
        assert_eq!(signed(-0.0123, 3), "-0.012");
        assert_eq!(escape("a|b"), "a\\|b");
    }
}
