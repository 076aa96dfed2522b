//! The `table` kind (`[table.NAME]`): a result table aggregated over gathered instances.
//!
//! Reads the `source` table of every instance `from` selects, adds their matrix axes as
//! columns, keeps the rows matching `filter`, groups by `rows` and summarises `metrics`
//! (mean, sample std with ddof = 1, count; min/max on request); `near` adds the share of
//! rows near a baseline stage's mean ([`crate::report::near`]). With `reference` the
//! thesis's mean ± std and our-minus-thesis difference stand beside ours. Writes
//! `table.parquet`, `table.csv` and `table.md`.

use std::collections::BTreeMap;

use wfpipe_stages::kind::{ColumnUse, TableDecl, Needs, Produces, ParamSpec, ParamType, Params, StageContext, StageError, StageKind, Value};

use crate::report::aggregate::group_and_summarise;
use crate::report::gather::{check_source_name, gather};
use crate::report::near::Near;
use crate::report::reference::Thesis;
use crate::report::summary_table::{column_names, SummaryTable};
use crate::table;

pub struct Table;

/// The files a table instance writes (the report reads `table.md`).
pub const TABLE_NAME: &str = "table";
pub const MARKDOWN_FILE: &str = "table.md";

impl Table {
    /// The summary table an instance writes: one row per group of `rows`.
    fn declared(params: &Params) -> TableDecl {
        let rows = params.str_list("rows").unwrap_or_default();
        let mut metrics = params.str_list("metrics").unwrap_or_default();
        if let Ok(Some(near)) = Near::parse(&params.str_map("near").unwrap_or_default()) {
            metrics.push(near.output_column());
        }
        let reference = params.str("reference").is_ok_and(|r| !r.is_empty());
        let min_max = params.bool("min_max").unwrap_or(false);
        TableDecl::with_columns(TABLE_NAME, column_names(&rows, &metrics, min_max, reference)).keyed_by(rows)
    }
}

impl StageKind for Table {
    fn name(&self) -> &'static str {
        "table"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "aggregate rows of gathered instances by group (mean, std, count) beside the thesis's numbers"
    }
    fn params(&self) -> Vec<ParamSpec> {
        let none = || Value::List(vec![]);
        vec![
            ParamSpec::required("from", ParamType::RefList, "stages whose rows are gathered (all selected instances)"),
            ParamSpec::with_default("source", ParamType::Str, Value::Str("metrics".into()), "which emitted table of the inputs to read (<source>.parquet, else <source>.csv)"),
            ParamSpec::with_default("rows", ParamType::StrList, none(), "group by these axes or columns (empty: one group)"),
            ParamSpec::required("metrics", ParamType::StrList, "numeric columns to summarise"),
            ParamSpec::with_default("min_max", ParamType::Bool, Value::Bool(false), "also report each metric's min and max"),
            ParamSpec::with_default("filter", ParamType::StrMap, Value::Table(BTreeMap::new()), "keep rows whose column equals the value, e.g. { level = \"summary\" }"),
            ParamSpec::with_default("reference", ParamType::Str, Value::Str(String::new()), "thesis numbers to show beside ours, e.g. \"thesis:table-7.1\""),
            ParamSpec::with_default("reference_match", ParamType::StrMap, Value::Table(BTreeMap::new()), "values of reference match keys the table does not group by, e.g. { aligned = \"true\" }"),
            ParamSpec::with_default("title", ParamType::Str, Value::Str(String::new()), "caption shown above the table"),
            ParamSpec::added("near", ParamType::StrMap, Value::Table(BTreeMap::new()), "{ column, of, within }: adds metric <column>_near, the share of rows within `within` of the mean of stage `of`'s rows"),
        ]
    }
    /// With a `reference`, the result shows the thesis's values: their digest is in the key.
    fn builtin_data_digest(&self, params: &Params) -> Option<String> {
        params.str("reference").ok().filter(|r| !r.is_empty()).map(|_| Thesis::digest())
    }
    fn produces(&self, params: &Params) -> Option<Produces> {
        Some(Produces::tables(&[Self::declared(params)]))
    }
    /// `from` must name stages that emit the `source` table with every column named here.
    fn needs(&self, _param: &str, params: &Params) -> Needs {
        let mut columns = Vec::new();
        for param in ["rows", "metrics"] {
            for column in params.str_list(param).unwrap_or_default() {
                columns.push(ColumnUse { param, column });
            }
        }
        columns.extend(params.str_map("filter").unwrap_or_default().into_keys().map(|column| ColumnUse { param: "filter", column }));
        if let Ok(Some(near)) = Near::parse(&params.str_map("near").unwrap_or_default()) {
            columns.push(ColumnUse { param: "near", column: near.column });
        }
        Needs::Table { name: params.str("source").unwrap_or("metrics").to_owned(), columns, picks: Vec::new() }
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        check_source_name(params.str("source")?).map_err(StageError::Param)?;
        let metrics = params.str_list("metrics")?;
        if metrics.is_empty() {
            return Err(StageError::Param("`metrics` must name at least one column".into()));
        }
        let rows = params.str_list("rows")?;
        if let Some(both) = rows.iter().find(|r| metrics.contains(r)) {
            return Err(StageError::Param(format!("`{both}` is both a group column (`rows`) and a metric")));
        }
        let reference = params.str("reference")?;
        if !reference.is_empty() {
            Thesis::get().table(reference).map_err(|e| StageError::Param(format!("`reference`: {e}")))?;
        }
        Near::parse(&params.str_map("near")?)?;
        Ok(())
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p = ctx.params;
        let mut gathered = gather(ctx.inputs_of("from"), p.str("source")?, &p.str_map("filter")?)?;
        let mut metrics = p.str_list("metrics")?;
        if let Some(near) = Near::parse(&p.str_map("near")?)? {
            near.mark(&mut gathered)?;
            metrics.push(near.output_column());
        }
        let grouped = group_and_summarise(&gathered, &p.str_list("rows")?, &metrics)
            .map_err(|e| StageError::Input(e.to_string()))?;
        let mut summary = SummaryTable::new(p.str("title")?.to_owned(), grouped, p.bool("min_max")?);
        let reference = p.str("reference")?;
        if !reference.is_empty() {
            let thesis = Thesis::get().table(reference).map_err(|e| StageError::Param(e.to_string()))?;
            summary = summary.with_reference(reference, thesis, &p.str_map("reference_match")?);
        }
        let mut frame = table::rows_to_frame_ordered(&summary.rows(), &summary.column_names())
            .map_err(|e| StageError::Failed(format!("building the table: {e}")))?;
        table::write_frame(ctx.out_dir, TABLE_NAME, &mut frame).map_err(|e| StageError::Failed(format!("writing the table: {e}")))?;
        let md = ctx.out_dir.join(MARKDOWN_FILE);
        std::fs::write(&md, summary.markdown()).map_err(|e| StageError::io(format!("writing {}", md.display()), e))?;
        ctx.progress.metric("groups", frame.height() as f64);
        Ok(())
    }
}
