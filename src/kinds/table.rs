//! The `table` kind (`[table.NAME]`): a result table aggregated over gathered instances.
//!
//! Reads the `source` table of every instance `from` selects, adds their matrix axes as
//! columns, keeps the rows matching `filter`, groups by `rows` and summarises `metrics`
//! (mean, sample std with ddof = 1, count; min/max on request); `near` adds the share of
//! rows near a baseline stage's mean ([`crate::report::near`]). With `reference` the
//! thesis's mean ± std and our-minus-thesis difference stand beside ours. Writes
//! `table.parquet`, `table.csv` and `table.md`.

use std::collections::BTreeMap;

use wfpipe_stages::declare::KindParams;
use wfpipe_stages::kind::{ColumnUse, Needs, ParamSpec, ParamType, Params, Produces, StageContext, StageError, StageKind, TableDecl};

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

wfpipe_stages::kind_params! {
    /// The parameters of one `[table.NAME]`, declared once.
    struct Args {
        from: Vec<String> [ParamType::RefList] = required, "stages whose rows are gathered (all selected instances)";
        source: String = default("metrics".to_owned()), "which emitted table of the inputs to read (<source>.parquet, else <source>.csv)";
        rows: Vec<String> = default(Vec::new()), "group by these axes or columns (empty: one group)";
        metrics: Vec<String> = required, "numeric columns to summarise";
        min_max: bool = default(false), "also report each metric's min and max";
        filter: BTreeMap<String, String> = default(BTreeMap::new()), "keep rows whose column equals the value, e.g. { level = \"summary\" }";
        reference: String = default(String::new()), "thesis numbers to show beside ours, e.g. \"thesis:table-7.1\"";
        reference_match: BTreeMap<String, String> = default(BTreeMap::new()), "values of reference match keys the table does not group by, e.g. { aligned = \"true\" }";
        title: String = default(String::new()), "caption shown above the table";
        near: BTreeMap<String, String> = added(BTreeMap::new()), "{ column, of, within }: adds metric <column>_near, the share of rows within `within` of the mean of stage `of`'s rows";
    }
}

impl Table {
    /// The summary table an instance writes: one row per group of `rows`.
    fn declared(a: &Args) -> TableDecl {
        let mut metrics = a.metrics.clone();
        if let Ok(Some(near)) = Near::parse(&a.near) {
            metrics.push(near.output_column());
        }
        TableDecl::with_columns(TABLE_NAME, column_names(&a.rows, &metrics, a.min_max, !a.reference.is_empty())).keyed_by(a.rows.clone())
    }
}

impl StageKind for Table {
    fn name(&self) -> &'static str {
        "table"
    }
    /// 2: a group's n counts its per-network rows, not also evaluate's summary row.
    fn version(&self) -> u32 {
        2
    }
    fn about(&self) -> &'static str {
        "aggregate rows of gathered instances by group (mean, std, count) beside the thesis's numbers"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }
    /// With a `reference`, the result shows the thesis's values: their digest is in the key.
    fn builtin_data_digest(&self, params: &Params) -> Option<String> {
        Args::parse(params).ok().filter(|a| !a.reference.is_empty()).map(|_| Thesis::digest())
    }
    /// Nothing is declared for parameters `validate` refuses.
    fn produces(&self, params: &Params) -> Option<Produces> {
        Some(Produces::tables(&Args::parse(params).map(|a| vec![Self::declared(&a)]).unwrap_or_default()))
    }
    /// `from` must name stages that emit the `source` table with every column named here.
    fn needs(&self, _param: &str, params: &Params) -> Needs {
        let Ok(a) = Args::parse(params) else { return Needs::Anything };
        let mut columns = Vec::new();
        for (param, names) in [("rows", &a.rows), ("metrics", &a.metrics)] {
            columns.extend(names.iter().map(|column| ColumnUse { param, column: column.clone() }));
        }
        columns.extend(a.filter.keys().map(|column| ColumnUse { param: "filter", column: column.clone() }));
        if let Ok(Some(near)) = Near::parse(&a.near) {
            columns.push(ColumnUse { param: "near", column: near.column });
        }
        Needs::Table { name: a.source, columns, picks: Vec::new() }
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        let a = Args::parse(params)?;
        check_source_name(&a.source).map_err(StageError::Param)?;
        if a.metrics.is_empty() {
            return Err(StageError::Param("`metrics` must name at least one column".into()));
        }
        if let Some(both) = a.rows.iter().find(|r| a.metrics.contains(r)) {
            return Err(StageError::Param(format!("`{both}` is both a group column (`rows`) and a metric")));
        }
        if !a.reference.is_empty() {
            Thesis::get().table(&a.reference).map_err(|e| StageError::Param(format!("`reference`: {e}")))?;
        }
        Near::parse(&a.near)?;
        Ok(())
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let a = Args::parse(ctx.params)?;
        let mut gathered = gather(ctx.inputs_of("from"), &a.source, &a.filter)?;
        let mut metrics = a.metrics.clone();
        if let Some(near) = Near::parse(&a.near)? {
            near.mark(&mut gathered)?;
            metrics.push(near.output_column());
        }
        let grouped = group_and_summarise(&gathered, &a.rows, &metrics).map_err(|e| StageError::Input(e.to_string()))?;
        let mut summary = SummaryTable::new(a.title.clone(), grouped, a.min_max);
        if !a.reference.is_empty() {
            let thesis = Thesis::get().table(&a.reference).map_err(|e| StageError::Param(e.to_string()))?;
            summary = summary.with_reference(&a.reference, thesis, &a.reference_match);
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
