//! The thesis's own numbers (`reference/thesis.toml`, compiled in), looked up by id.
//!
//! The main type is [`Thesis`], parsed once from the embedded file. A table stage asks it
//! for the row of `thesis:table-7.1` that matches one of its groups ([`ReferenceTable::lookup`]);
//! a figure stage asks for the reference lines of `thesis:figure-7.5`. The file's header
//! documents the match keys.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use wfpipe_stages::kind::Value;

const THESIS_TOML: &str = include_str!("../../reference/thesis.toml");

/// The prefix of a reference id in pipeline files: `thesis:table-7.1`.
pub const PREFIX: &str = "thesis:";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thesis {
    pub tables: BTreeMap<String, ReferenceTable>,
    pub figures: BTreeMap<String, ReferenceFigure>,
    pub numbers: Vec<ReferenceNumber>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceTable {
    pub title: String,
    pub metrics: Vec<String>,
    pub rows: Vec<ReferenceRow>,
}

/// One row of a thesis table: its label, the group values it describes, and
/// `metric = [mean, std]` entries.
#[derive(Debug, Deserialize)]
pub struct ReferenceRow {
    pub label: String,
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, String>,
    #[serde(flatten)]
    pub values: BTreeMap<String, [f64; 2]>,
}

impl ReferenceRow {
    /// `(mean, std)` of a metric, if the thesis reports it.
    pub fn metric(&self, name: &str) -> Option<(f64, f64)> {
        self.values.get(name).map(|[m, s]| (*m, *s))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceFigure {
    pub title: String,
    pub lines: Vec<ReferenceLine>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ReferenceLine {
    pub label: String,
    /// The column this value is comparable to.
    pub metric: String,
    pub value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceNumber {
    pub id: String,
    pub value: f64,
    #[serde(default)]
    pub approximate: bool,
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReferenceError {
    #[error("reference `{given}` must start with `{PREFIX}` (e.g. `thesis:table-7.1`)")]
    NoPrefix { given: String },
    #[error("the thesis data has no {what} `{id}`; known: {known}")]
    Unknown { what: &'static str, id: String, known: String },
}

impl Thesis {
    /// The embedded data, parsed on first use.
    /// blake3 of the reference data as compiled in: tables and figures that draw on it put
    /// this in their keys, so editing the data recomputes them.
    pub fn digest() -> String {
        blake3::hash(THESIS_TOML.as_bytes()).to_hex()[..32].to_owned()
    }

    pub fn get() -> &'static Thesis {
        static THESIS: OnceLock<Thesis> = OnceLock::new();
        THESIS.get_or_init(|| toml::from_str(THESIS_TOML).expect("reference/thesis.toml is valid (checked by a unit test)"))
    }

    pub fn table(&self, reference: &str) -> Result<&ReferenceTable, ReferenceError> {
        let id = strip_prefix(reference)?;
        self.tables.get(id).ok_or_else(|| ReferenceError::Unknown { what: "table", id: id.to_owned(), known: known(self.tables.keys()) })
    }

    pub fn figure(&self, reference: &str) -> Result<&ReferenceFigure, ReferenceError> {
        let id = strip_prefix(reference)?;
        self.figures.get(id).ok_or_else(|| ReferenceError::Unknown { what: "figure", id: id.to_owned(), known: known(self.figures.keys()) })
    }
}

fn strip_prefix(reference: &str) -> Result<&str, ReferenceError> {
    reference.strip_prefix(PREFIX).ok_or_else(|| ReferenceError::NoPrefix { given: reference.to_owned() })
}

fn known<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    ids.map(|i| format!("{PREFIX}{i}")).collect::<Vec<_>>().join(", ")
}

/// Group values compare as lower-case text, so `true`, `"true"` and `True` agree.
pub fn match_text(v: &Value) -> String {
    v.to_string().to_lowercase()
}

/// Match keys the pipelines express through other axes: `aligned` follows the `align`
/// stage's `method` axis (anything but "none" is aligned), `guided` follows `sample`'s
/// `guidance_scale` (guided when above 0), and a group with an empty `geometry` holds
/// networks that are not flow samples (the "Target" rows).
fn with_derived_keys(group: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut g = group.clone();
    if let (Some(method), false) = (group.get("method"), group.contains_key("aligned")) {
        if !method.is_empty() {
            g.insert("aligned".into(), (method.to_lowercase() != "none").to_string());
        }
    }
    if let (Some(scale), false) = (group.get("guidance_scale"), group.contains_key("guided")) {
        if let Ok(scale) = scale.parse::<f64>() {
            g.insert("guided".into(), (scale > 0.0).to_string());
        }
    }
    if group.get("geometry").is_some_and(|v| v.is_empty() || v == "null") && !group.contains_key("model") {
        g.insert("model".into(), "target".into());
    }
    g
}

impl ReferenceTable {
    /// The row describing a group, given the group's column values (plus any values the
    /// table fixes with `reference_match`). See the file header for the rule.
    pub fn lookup(&self, group: &BTreeMap<String, String>) -> Option<&ReferenceRow> {
        let group = &with_derived_keys(group);
        let mut found = None;
        for row in &self.rows {
            let mut compared = 0;
            let mut agrees = true;
            for (key, want) in &row.matches {
                if let Some(have) = group.get(key) {
                    compared += 1;
                    agrees &= have.to_lowercase() == want.to_lowercase();
                }
            }
            if agrees && compared > 0 {
                if found.is_some() {
                    return None; // ambiguous: the table does not say which row it is
                }
                found = Some(row);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn embedded_data_parses_and_every_row_has_every_metric() {
        let t = Thesis::get();
        assert_eq!(t.tables.len(), 4);
        for (id, table) in &t.tables {
            for row in &table.rows {
                for m in &table.metrics {
                    assert!(row.metric(m).is_some(), "{id} row `{}` lacks `{m}`", row.label);
                }
                assert_eq!(row.values.len(), table.metrics.len(), "{id} row `{}` has extra values", row.label);
            }
        }
        assert!(t.numbers.iter().any(|n| n.id == "mlp-parameters-mnist" && n.value == 7960.0));
    }

    #[test]
    fn lookup_matches_unique_rows_and_refuses_ambiguous_ones() {
        let t = Thesis::get().table("thesis:table-7.1").unwrap();
        let row = t.lookup(&group(&[("geometry", "Geometric"), ("aligned", "true"), ("coupling", "ot")])).unwrap();
        assert_eq!(row.label, "Geometric (aligned + OT)");
        assert_eq!(row.metric("loss"), Some((0.020, 0.012)));
        // Only the geometry known: three Euclidean rows qualify, so none is chosen.
        assert!(t.lookup(&group(&[("geometry", "euclidean")])).is_none());
        assert_eq!(t.lookup(&group(&[("model", "target")])).unwrap().label, "Target");
        // No key in common: nothing.
        assert!(t.lookup(&group(&[("steps", "8")])).is_none());
    }

    #[test]
    fn guidance_scale_picks_the_guided_or_the_unguided_row() {
        let t = Thesis::get().table("thesis:table-7.3").unwrap();
        let guided = t.lookup(&group(&[("geometry", "geometric"), ("guidance_scale", "0.1")])).unwrap();
        assert_eq!(guided.label, "Geometric (with guidance)");
        let unguided = t.lookup(&group(&[("geometry", "geometric"), ("guidance_scale", "0.0")])).unwrap();
        assert_eq!(unguided.label, "No guidance");
        let t = Thesis::get().table("thesis:table-7.4").unwrap();
        assert_eq!(t.lookup(&group(&[("geometry", "euclidean"), ("guidance_scale", "0.0")])).unwrap().label, "Euclidean");
        assert_eq!(
            t.lookup(&group(&[("geometry", "euclidean"), ("guidance_scale", "0.1")])).unwrap().label,
            "Euclidean (w/ guidance)"
        );
        // Written out, `guided` wins over the scale.
        assert_eq!(t.lookup(&group(&[("geometry", "normalized"), ("guidance_scale", "0.1"), ("guided", "false")])).unwrap().label, "Normalized");
    }

    #[test]
    fn unknown_ids_are_errors_naming_the_known_ones() {
        let t = Thesis::get();
        match t.table("thesis:table-9.9") {
            Err(ReferenceError::Unknown { known, .. }) => assert!(known.contains("thesis:table-7.2"), "{known}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.figure("figure-7.5"), Err(ReferenceError::NoPrefix { .. })));
        assert_eq!(t.figure("thesis:figure-7.5").unwrap().lines[0].value, 0.933);
    }
}
