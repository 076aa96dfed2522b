//! The `claim` kind (`[claim.NAME]`): one statement of the thesis, checked against the
//! cells of a `table` instance.
//!
//! A claim names a table, the thesis's words (`says`), a `metric` and a `check`. `row`
//! pins the table's key columns to select one group (`""` selects a group that has no
//! value there, such as the target networks' row); the cell read is `<metric>_mean`, or
//! `<metric>_std` with `statistic = "std"` (the spread is what some claims are about).
//!
//! - `below` / `above` / `at-most` / `at-least`: the cell against the cell of the row
//!   `than` selects (`row` with `than`'s columns replaced; of metric `than_metric` if given,
//!   which may be the same row) or against `value = [x]`;
//! - `between`: the cell within `value = [lo, hi]`;
//! - `near-thesis`: within the thesis's std of the thesis's mean (the table needs a
//!   `reference`);
//! - `rises` / `falls`: the cells along the key column `over` (left open in `row`): no step
//!   goes the wrong way by more than `tolerance`, and the last is past the first.
//!
//! `tolerance` loosens each comparison by that much (`at-least` holds when ours >= theirs -
//! tolerance). A claim never fails a run: it emits one `verdict` row saying "holds", "does
//! not hold", or "not computed" (the cell is absent) with the numbers it compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use wfpipe_stages::declare::{KindParams, StageRef};
use wfpipe_stages::kind::{
    ColumnUse, Needs, ParamSpec, ParamType as T, Params, Produces, RefMode, Row, RowPick, StageContext, StageError, StageKind, TableDecl, Value,
};
use wfpipe_stages::kind_params;

use crate::kinds::table::TABLE_NAME;
use crate::report::gather::gather;
use crate::report::summary_table::{decimals, mean_std, number};

pub struct Claim;

/// The table a claim emits: one row.
pub const VERDICT_TABLE: &str = "verdict";
/// Its columns.
pub const VERDICT_COLUMNS: &[&str] = &["says", "check", "verdict", "ours", "against", "detail"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Below,
    Above,
    AtMost,
    AtLeast,
    Between,
    NearThesis,
    Rises,
    Falls,
}

wfpipe_stages::words!(Check, "check", {
    Below = "below",
    Above = "above",
    AtMost = "at-most",
    AtLeast = "at-least",
    Between = "between",
    NearThesis = "near-thesis",
    Rises = "rises",
    Falls = "falls",
});

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Statistic {
    Mean,
    Std,
}

wfpipe_stages::words!(Statistic, "statistic", {
    Mean = "mean",
    Std = "std",
});

kind_params! {
    /// The parameters of one `claim` instance, declared once.
    struct Args {
        table: StageRef [T::Ref { mode: RefMode::Gather }] = required, "the `table` stage whose cells the claim reads";
        says: String = required, "the thesis's words and where they stand, e.g. \"section 7.2: aligning lowers the barrier\"";
        check: Check = required, "how the cell is judged";
        metric: String = required, "the metric whose mean is read (`<metric>_mean`)";
        statistic: Statistic = default(Statistic::Mean), "which summary of the metric a cell is: its mean or its std over the group";
        row: BTreeMap<String, String> = default(BTreeMap::new()), "the group: a value for each key column of the table (\"\" where the group has none)";
        than: BTreeMap<String, String> = default(BTreeMap::new()), "the other group of a comparison: the columns in which it differs from `row`";
        than_metric: String = default(String::new()), "the metric of the other cell, when it is not `metric` (it may be in the same row)";
        value: Vec<f64> = default(Vec::new()), "a bound `[x]` for a comparison, `[low, high]` for `between`";
        thesis_number: String = added(String::new()), "a number the thesis states (an id of reference/thesis.toml's [[numbers]]) as the bound of a comparison";
        over: String = default(String::new()), "the key column a trend runs along (`rises`, `falls`)";
        tolerance: f64 [T::Float { min: Some(0.0), max: None }] = default(0.0), "how far the comparison may miss and still hold";
        why: String = added(String::new()), "what the pipeline measured about the outcome (shown beside the verdict), e.g. where a claim that does not hold falls short";
    }
}

/// A claim's words and what the pipeline measured about it (`says`, `why`), for the report.
pub fn says_and_why(params: &Params) -> (String, String) {
    Args::parse(params).map(|a| (a.says, a.why)).unwrap_or_default()
}

impl Check {
    fn is_trend(self) -> bool {
        matches!(self, Check::Rises | Check::Falls)
    }
    fn is_comparison(self) -> bool {
        matches!(self, Check::Below | Check::Above | Check::AtMost | Check::AtLeast)
    }
}

/// What a claim says it checks: its parameters, parsed once.
#[derive(Clone, Debug)]
pub struct ClaimSpec {
    check: Check,
    metric: String,
    statistic: &'static str,
    row: BTreeMap<String, String>,
    than: BTreeMap<String, String>,
    than_metric: String,
    value: Vec<f64>,
    /// The thesis number `value` came from (`thesis_number`), named beside it.
    value_from: Option<String>,
    over: String,
    tolerance: f64,
}

impl ClaimSpec {
    fn parse(p: &Params) -> Result<ClaimSpec, StageError> {
        let a = Args::parse(p)?;
        let (value, value_from) = if a.thesis_number.is_empty() {
            (a.value, None)
        } else {
            if !a.value.is_empty() {
                return Err(StageError::Param("give `value` or `thesis_number`, not both".into()));
            }
            let thesis = crate::report::reference::Thesis::get();
            let Some(n) = thesis.numbers.iter().find(|n| n.id == a.thesis_number) else {
                let known: Vec<&str> = thesis.numbers.iter().map(|n| n.id.as_str()).collect();
                return Err(StageError::Param(format!("the thesis data has no number `{}`; known: {}", a.thesis_number, known.join(", "))));
            };
            let about = if n.approximate { "about " } else { "" };
            (vec![n.value], Some(format!("thesis {about}{} ({})", n.value, n.text)))
        };
        let spec = ClaimSpec {
            check: a.check,
            metric: a.metric,
            statistic: a.statistic.name(),
            row: a.row,
            than: a.than,
            than_metric: a.than_metric,
            value,
            value_from,
            over: a.over,
            tolerance: a.tolerance,
        };
        spec.check_shape()?;
        Ok(spec)
    }

    /// Each check takes exactly the operands it compares.
    fn check_shape(&self) -> Result<(), StageError> {
        let c = self.check.name();
        let bad = |why: String| Err(StageError::Param(why));
        if self.metric.is_empty() {
            return bad("`metric` must name a metric of the table".into());
        }
        if self.check.is_trend() != !self.over.is_empty() {
            return if self.check.is_trend() {
                bad(format!("`{c}` needs `over`, the key column the trend runs along"))
            } else {
                bad(format!("`over` belongs to `rises` and `falls`, not `{c}`"))
            };
        }
        if self.row.contains_key(&self.over) {
            return bad(format!("`over = \"{}\"` is the trend's axis: leave it out of `row`", self.over));
        }
        match self.check {
            c if c.is_comparison() => match (self.than.is_empty() && self.than_metric.is_empty(), self.value.len()) {
                (false, 0) | (true, 1) => Ok(()),
                (false, _) => bad(format!("`{}` compares with another row (`than`) or a number (`value`), not both", c.name())),
                (true, 0) => bad(format!("`{}` needs `than = {{ column = \"value\" }}` (another row) or `value = [x]`", c.name())),
                (true, n) => bad(format!("`{}` compares with one number: `value = [x]`, got {n}", c.name())),
            },
            Check::Between => {
                if !self.than.is_empty() || !self.than_metric.is_empty() || self.value.len() != 2 || self.value[0] > self.value[1] {
                    return bad("`between` needs `value = [low, high]` with low <= high and no `than`".into());
                }
                Ok(())
            }
            _ => {
                if !self.than.is_empty() || !self.value.is_empty() || !self.than_metric.is_empty() {
                    return bad(format!("`{c}` takes neither `than` nor `value`"));
                }
                Ok(())
            }
        }
    }

    /// The column a cell is read from.
    fn column(&self) -> String {
        format!("{}_{}", self.metric, self.statistic)
    }

    /// The metric of the other cell of a comparison.
    fn other_metric(&self) -> &str {
        if self.than_metric.is_empty() {
            &self.metric
        } else {
            &self.than_metric
        }
    }

    /// `row` with `than`'s columns replaced: the other cell of a comparison.
    fn than_row(&self) -> BTreeMap<String, String> {
        let mut pins = self.row.clone();
        pins.extend(self.than.clone());
        pins
    }
}

/// One summarised cell: a group's mean, spread and count.
#[derive(Clone, Debug)]
struct Cell {
    mean: f64,
    std: Option<f64>,
    n: Option<i64>,
}

impl Cell {
    fn text(&self) -> String {
        let n = self.n.map(|n| format!(" (n {n})")).unwrap_or_default();
        format!("{}{n}", mean_std(self.mean, self.std))
    }
}

/// A key value as text; a group without one matches `""`.
fn key_text(row: &Row, column: &str) -> String {
    row.get(column).map(|v| v.to_string()).unwrap_or_default()
}

fn pins_text(pins: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = pins.iter().map(|(k, v)| if v.is_empty() { format!("{k}=–") } else { format!("{k}={v}") }).collect();
    parts.join(", ")
}

fn matching<'r>(rows: &'r [Row], pins: &BTreeMap<String, String>) -> Vec<&'r Row> {
    rows.iter().filter(|r| pins.iter().all(|(k, v)| key_text(r, k) == *v)).collect()
}

/// The one row `pins` select, or why there is none.
fn only_row<'r>(rows: &'r [Row], pins: &BTreeMap<String, String>) -> Result<&'r Row, String> {
    match matching(rows, pins).as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no row has {}", pins_text(pins))),
        many => Err(format!("{} rows have {}", many.len(), pins_text(pins))),
    }
}

fn cell(row: &Row, metric: &str, statistic: &str, pins: &BTreeMap<String, String>) -> Result<Cell, String> {
    let column = format!("{metric}_{statistic}");
    let mean = row
        .get(&column)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("the row with {} has no `{column}` value", pins_text(pins)))?;
    let spread = if statistic == "mean" { row.get(&format!("{metric}_std")).and_then(Value::as_f64) } else { None };
    Ok(Cell { mean, std: spread, n: row.get(&format!("{metric}_count")).and_then(Value::as_i64) })
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Our cell (or cells, for a trend).
    pub ours: String,
    /// What it was compared with.
    pub against: String,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    DoesNotHold,
    NotComputed,
}

wfpipe_stages::words!(Outcome, "verdict", { Holds = "holds", DoesNotHold = "does not hold", NotComputed = "not computed" });

impl Verdict {
    fn not_computed(why: String) -> Verdict {
        Verdict { outcome: Outcome::NotComputed, ours: String::new(), against: String::new(), detail: why }
    }
}

fn holds(b: bool) -> Outcome {
    if b {
        Outcome::Holds
    } else {
        Outcome::DoesNotHold
    }
}

/// Judge `spec` on the rows of its table.
pub fn judge(spec: &ClaimSpec, rows: &[Row]) -> Verdict {
    match judge_or_why(spec, rows) {
        Ok(v) => v,
        Err(why) => Verdict::not_computed(why),
    }
}

fn judge_or_why(spec: &ClaimSpec, rows: &[Row]) -> Result<Verdict, String> {
    let tol = spec.tolerance;
    let loosened = if tol > 0.0 { format!(" (tolerance {})", number(tol, decimals(tol))) } else { String::new() };
    if spec.check.is_trend() {
        return trend(spec, rows, &loosened);
    }
    let ours = cell(only_row(rows, &spec.row)?, &spec.metric, spec.statistic, &spec.row)?;
    let (theirs, against) = match spec.check {
        Check::Between => ((spec.value[0], spec.value[1]), format!("[{}, {}]", spec.value[0], spec.value[1])),
        Check::NearThesis => {
            let row = only_row(rows, &spec.row)?;
            let mean = row.get(&format!("{}_thesis", spec.metric)).and_then(Value::as_f64);
            let std = row.get(&format!("{}_thesis_std", spec.metric)).and_then(Value::as_f64);
            let (Some(mean), Some(std)) = (mean, std) else {
                return Err(format!("the row with {} matched no thesis row", pins_text(&spec.row)));
            };
            ((mean - std, mean + std), format!("thesis {}", mean_std(mean, Some(std))))
        }
        _ if spec.value.len() == 1 => ((spec.value[0], spec.value[0]), spec.value_from.clone().unwrap_or_else(|| spec.value[0].to_string())),
        _ => {
            let pins = spec.than_row();
            let other = cell(only_row(rows, &pins)?, spec.other_metric(), spec.statistic, &pins)?;
            let what = match (spec.than.is_empty(), spec.than_metric.is_empty()) {
                (true, _) => spec.other_metric().to_owned(),
                (false, true) => pins_text(&spec.than),
                (false, false) => format!("{}, {}", spec.other_metric(), pins_text(&spec.than)),
            };
            ((other.mean, other.mean), format!("{} ({what})", other.text()))
        }
    };
    let a = ours.mean;
    let outcome = holds(match spec.check {
        Check::Below => a < theirs.0 + tol,
        Check::Above => a > theirs.0 - tol,
        Check::AtMost => a <= theirs.0 + tol,
        Check::AtLeast => a >= theirs.0 - tol,
        Check::Between | Check::NearThesis => a >= theirs.0 - tol && a <= theirs.1 + tol,
        Check::Rises | Check::Falls => unreachable!("trends are judged above"),
    });
    let d = decimals(a);
    let detail = match spec.check {
        Check::Between | Check::NearThesis => format!("{} {} [{}, {}]{loosened}", spec.column(), if outcome == Outcome::Holds { "in" } else { "outside" }, number(theirs.0, d), number(theirs.1, d)),
        _ => format!("{} {} - {} = {:+.d$}{loosened}", spec.column(), number(a, d), number(theirs.0, d), a - theirs.0),
    };
    Ok(Verdict { outcome, ours: ours.text(), against, detail })
}

/// The cells along `over`, in its order, one per value.
fn trend(spec: &ClaimSpec, rows: &[Row], loosened: &str) -> Result<Verdict, String> {
    let mut points: Vec<(Value, Cell)> = Vec::new();
    for row in matching(rows, &spec.row) {
        let Some(x) = row.get(&spec.over) else { continue };
        if points.iter().any(|(seen, _)| seen.to_string() == x.to_string()) {
            return Err(format!("several rows have {} and {} = {x}", pins_text(&spec.row), spec.over));
        }
        points.push((x.clone(), cell(row, &spec.metric, spec.statistic, &spec.row)?));
    }
    if points.len() < 2 {
        return Err(format!("a trend needs two values of `{}`; rows with {}: {}", spec.over, pins_text(&spec.row), points.len()));
    }
    points.sort_by(|(a, _), (b, _)| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => a.to_string().cmp(&b.to_string()),
    });
    let sign = if spec.check == Check::Rises { 1.0 } else { -1.0 };
    let steps: Vec<f64> = points.windows(2).map(|w| sign * (w[1].1.mean - w[0].1.mean)).collect();
    let worst = steps.iter().copied().fold(f64::INFINITY, f64::min);
    let overall = sign * (points[points.len() - 1].1.mean - points[0].1.mean);
    let outcome = holds(worst >= -spec.tolerance && overall > 0.0);
    let d = points.iter().map(|(_, c)| decimals(c.mean)).max().unwrap_or(3);
    let mut ours = String::new();
    for (i, (x, c)) in points.iter().enumerate() {
        let _ = write!(ours, "{}{x}: {}", if i > 0 { ", " } else { "" }, number(c.mean, d));
    }
    let (first, last) = (&points[0], &points[points.len() - 1]);
    let detail = format!(
        "{} {} from {} = {} to {} = {}; largest step the other way {}{loosened}",
        spec.column(),
        if spec.check == Check::Rises { "rises" } else { "falls" },
        spec.over,
        first.0,
        spec.over,
        last.0,
        number(worst.min(0.0).abs(), d)
    );
    Ok(Verdict { outcome, ours, against: format!("along {}", spec.over), detail })
}

impl Claim {
    fn declared() -> TableDecl {
        TableDecl::new(VERDICT_TABLE, VERDICT_COLUMNS)
    }
}

impl StageKind for Claim {
    fn name(&self) -> &'static str {
        "claim"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "check one of the thesis's statements against the cells of a table: holds, does not hold, or not computed"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        ClaimSpec::parse(params).map(|_| ())
    }
    fn produces(&self, _params: &Params) -> Option<Produces> {
        Some(Produces::tables(&[Claim::declared()]))
    }
    /// The table must carry every column the claim reads, and `row` (and `than`) must
    /// each select one group of it.
    fn needs(&self, _param: &str, params: &Params) -> Needs {
        let Ok(a) = Args::parse(params) else {
            // Parameters that do not read are reported by `validate`.
            return Needs::Table { name: TABLE_NAME.to_owned(), columns: Vec::new(), picks: Vec::new() };
        };
        let statistic = a.statistic.name();
        let mut columns: Vec<ColumnUse> = a.row.keys().map(|c| ColumnUse { param: "row", column: c.clone() }).collect();
        columns.extend(a.than.keys().map(|c| ColumnUse { param: "than", column: c.clone() }));
        if !a.over.is_empty() {
            columns.push(ColumnUse { param: "over", column: a.over.clone() });
        }
        if !a.metric.is_empty() {
            columns.push(ColumnUse { param: "metric", column: format!("{}_{statistic}", a.metric) });
            if a.check == Check::NearThesis {
                columns.push(ColumnUse { param: "metric", column: format!("{}_thesis", a.metric) });
            }
        }
        if !a.than_metric.is_empty() {
            columns.push(ColumnUse { param: "than_metric", column: format!("{}_{statistic}", a.than_metric) });
        }
        let mut picks = vec![RowPick { param: "row", pinned: a.row.keys().cloned().collect(), open: vec![a.over].into_iter().filter(|o| !o.is_empty()).collect() }];
        if !a.than.is_empty() {
            picks.push(RowPick { param: "than", pinned: a.row.keys().chain(a.than.keys()).cloned().collect(), open: vec![] });
        }
        Needs::Table { name: TABLE_NAME.to_owned(), columns, picks }
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let spec = ClaimSpec::parse(ctx.params)?;
        let rows = gather(ctx.inputs_of("table"), TABLE_NAME, &BTreeMap::new())?;
        let verdict = judge(&spec, &rows);
        let mut row = Row::new();
        row.insert("says".into(), Value::Str(Args::parse(ctx.params)?.says));
        row.insert("check".into(), Value::Str(spec.check.name().to_owned()));
        row.insert("verdict".into(), Value::Str(verdict.outcome.name().to_owned()));
        row.insert("ours".into(), Value::Str(verdict.ours));
        row.insert("against".into(), Value::Str(verdict.against));
        row.insert("detail".into(), Value::Str(verdict.detail));
        ctx.tables.insert(VERDICT_TABLE.to_owned(), vec![row]);
        ctx.progress.metric("holds", if verdict.outcome == Outcome::Holds { 1.0 } else { 0.0 });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: &[(&str, Value)]) -> Params {
        let mut map: BTreeMap<String, Value> = Claim.params().into_iter().filter_map(|p| p.default.map(|d| (p.name.to_owned(), d))).collect();
        map.insert("table".into(), Value::Str("t".into()));
        map.insert("says".into(), Value::Str("words".into()));
        for (k, v) in extra {
            map.insert((*k).into(), v.clone());
        }
        Params(map)
    }
    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }
    fn map(pairs: &[(&str, &str)]) -> Value {
        Value::Table(pairs.iter().map(|(k, v)| ((*k).to_owned(), s(v))).collect())
    }
    fn nums(xs: &[f64]) -> Value {
        Value::List(xs.iter().map(|x| Value::Float(*x)).collect())
    }
    /// A Table 7.1-like table: two flows and the target row (no geometry).
    fn rows() -> Vec<Row> {
        let mut out = Vec::new();
        for (geometry, loss, acc) in [("euclidean", 0.25, 0.95), ("geometric", 0.08, 0.97), ("", 0.09, 0.967)] {
            let mut r = Row::new();
            if !geometry.is_empty() {
                r.insert("geometry".into(), s(geometry));
            }
            r.insert("loss_mean".into(), Value::Float(loss));
            r.insert("loss_std".into(), Value::Float(0.01));
            r.insert("loss_count".into(), Value::Int(64));
            r.insert("accuracy_mean".into(), Value::Float(acc));
            r.insert("accuracy_thesis".into(), Value::Float(0.99));
            r.insert("accuracy_thesis_std".into(), Value::Float(0.01));
            out.push(r);
        }
        out
    }
    fn verdict(extra: &[(&str, Value)]) -> Verdict {
        let spec = ClaimSpec::parse(&params(extra)).expect("valid claim");
        judge(&spec, &rows())
    }

    #[test]
    fn a_thesis_number_is_a_bound_named_beside_ours() {
        // Figure 7.2's mean barrier after alignment, 0.07 (reference/thesis.toml).
        let at_most = |id: &str| ClaimSpec::parse(&params(&[("check", s("at-most")), ("metric", s("loss")), ("row", map(&[("geometry", "geometric")])), ("thesis_number", s(id))]));
        let v = judge(&at_most("figure-7.2-barrier-mean-after").expect("a known number"), &rows());
        assert_eq!(v.outcome, Outcome::DoesNotHold, "{v:?}");
        assert!(v.against.starts_with("thesis 0.07 (mean pairwise midpoint barrier"), "{}", v.against);
        let err = at_most("no-such-number").unwrap_err().to_string();
        assert!(err.contains("no number `no-such-number`") && err.contains("figure-7.2-barrier-mean-before"), "{err}");
        let both = ClaimSpec::parse(&params(&[("check", s("below")), ("metric", s("loss")), ("value", nums(&[1.0])), ("thesis_number", s("figure-7.2-barrier-mean-after"))]));
        assert!(both.unwrap_err().to_string().contains("not both"));
    }

    #[test]
    fn a_comparison_of_two_cells_holds_or_does_not() {
        let below = [("check", s("below")), ("metric", s("loss")), ("row", map(&[("geometry", "geometric")])), ("than", map(&[("geometry", "euclidean")]))];
        let v = verdict(&below);
        assert_eq!(v.outcome, Outcome::Holds, "{v:?}");
        assert_eq!(v.ours, "0.080 ± 0.010 (n 64)");
        assert!(v.detail.contains("0.080 - 0.250 = -0.170"), "{}", v.detail);
        let above = [("check", s("above")), ("metric", s("loss")), ("row", map(&[("geometry", "geometric")])), ("than", map(&[("geometry", "euclidean")]))];
        assert_eq!(verdict(&above).outcome, Outcome::DoesNotHold);
    }

    #[test]
    fn an_empty_value_selects_the_group_without_one_and_tolerance_loosens() {
        let reach = |tol: f64| {
            verdict(&[
                ("check", s("at-least")),
                ("metric", s("accuracy")),
                ("row", map(&[("geometry", "euclidean")])),
                ("than", map(&[("geometry", "")])),
                ("tolerance", Value::Float(tol)),
            ])
            .outcome
        };
        assert_eq!(reach(0.0), Outcome::DoesNotHold);
        assert_eq!(reach(0.02), Outcome::Holds);
    }

    #[test]
    fn two_metrics_of_one_row_compare() {
        let v = verdict(&[("check", s("below")), ("metric", s("loss")), ("than_metric", s("accuracy")), ("row", map(&[("geometry", "geometric")]))]);
        assert_eq!(v.outcome, Outcome::Holds, "{v:?}");
        assert_eq!(v.against, "0.970 (accuracy)");
    }

    #[test]
    fn numbers_ranges_and_the_thesis() {
        let at = |check: &str, value: &[f64]| {
            verdict(&[("check", s(check)), ("metric", s("accuracy")), ("row", map(&[("geometry", "geometric")])), ("value", nums(value))]).outcome
        };
        assert_eq!(at("at-least", &[0.95]), Outcome::Holds);
        assert_eq!(at("at-most", &[0.95]), Outcome::DoesNotHold);
        assert_eq!(at("between", &[0.96, 0.98]), Outcome::Holds);
        assert_eq!(at("between", &[0.98, 0.99]), Outcome::DoesNotHold);
        let near = verdict(&[("check", s("near-thesis")), ("metric", s("accuracy")), ("row", map(&[("geometry", "geometric")]))]);
        assert_eq!(near.outcome, Outcome::DoesNotHold, "0.97 is outside 0.99 ± 0.01");
        assert_eq!(near.against, "thesis 0.990 ± 0.010");
    }

    #[test]
    fn a_missing_row_or_cell_is_not_computed() {
        let v = verdict(&[("check", s("below")), ("metric", s("loss")), ("row", map(&[("geometry", "normalized")])), ("value", nums(&[1.0]))]);
        assert_eq!(v.outcome, Outcome::NotComputed);
        assert_eq!(v.detail, "no row has geometry=normalized");
        let v = verdict(&[("check", s("below")), ("metric", s("diversity")), ("row", map(&[("geometry", "geometric")])), ("value", nums(&[1.0]))]);
        assert_eq!(v.outcome, Outcome::NotComputed);
        assert!(v.detail.contains("no `diversity_mean` value"), "{}", v.detail);
    }

    fn by_steps(accuracies: &[f64]) -> Vec<Row> {
        accuracies
            .iter()
            .zip([4i64, 8, 16, 32, 64])
            .map(|(a, steps)| Row::from([("steps".to_owned(), Value::Int(steps)), ("accuracy_mean".to_owned(), Value::Float(*a))]))
            .rev()
            .collect()
    }

    #[test]
    fn a_trend_reads_its_axis_in_numeric_order() {
        let spec = |check: &str, tol: f64| {
            ClaimSpec::parse(&params(&[("check", s(check)), ("metric", s("accuracy")), ("over", s("steps")), ("tolerance", Value::Float(tol))])).unwrap()
        };
        let rising = by_steps(&[0.80, 0.90, 0.93, 0.95, 0.96]);
        let v = judge(&spec("rises", 0.0), &rising);
        assert_eq!(v.outcome, Outcome::Holds, "{v:?}");
        assert_eq!(v.ours, "4: 0.800, 8: 0.900, 16: 0.930, 32: 0.950, 64: 0.960");
        assert_eq!(judge(&spec("falls", 0.0), &rising).outcome, Outcome::DoesNotHold);
        let dip = by_steps(&[0.80, 0.90, 0.89, 0.95, 0.96]);
        assert_eq!(judge(&spec("rises", 0.0), &dip).outcome, Outcome::DoesNotHold);
        assert_eq!(judge(&spec("rises", 0.02), &dip).outcome, Outcome::Holds);
        let flat = by_steps(&[0.9, 0.9]);
        assert_eq!(judge(&spec("rises", 0.02), &flat).outcome, Outcome::DoesNotHold, "the last must be past the first");
    }

    #[test]
    fn each_check_takes_its_own_operands() {
        let bad = |extra: &[(&str, Value)]| ClaimSpec::parse(&params(extra)).unwrap_err().to_string();
        assert!(bad(&[("check", s("below")), ("metric", s("loss"))]).contains("needs `than"));
        assert!(bad(&[("check", s("below")), ("metric", s("loss")), ("value", nums(&[1.0])), ("than", map(&[("a", "b")]))]).contains("not both"));
        assert!(bad(&[("check", s("between")), ("metric", s("loss")), ("value", nums(&[2.0, 1.0]))]).contains("low <= high"));
        assert!(bad(&[("check", s("rises")), ("metric", s("loss"))]).contains("needs `over`"));
        assert!(bad(&[("check", s("rises")), ("metric", s("loss")), ("over", s("steps")), ("row", map(&[("steps", "4")]))]).contains("leave it out"));
        assert!(bad(&[("check", s("above")), ("metric", s("loss")), ("over", s("steps")), ("value", nums(&[1.0]))]).contains("belongs to"));
    }
}
