//! The `figure` kind (`[figure.NAME]`): a plot of rows gathered from instances.
//!
//! `plot = "line"`: mean of `y` (and of each `also_y` column, a baseline beside it) at each
//! `x` per `series`, with a ± std band (sample std, ddof = 1, clipped to the values' range)
//! — accuracy versus Euler steps, versus averaged samples, versus d_E, training curves. The
//! legend is headed by the columns it splits on. `plot = "histogram"`: distributions of `x` per series, overlaid on shared bins
//! (Fig. 7.1, loss barriers of Fig. 7.2). `plot = "heatmap"`: mean `z` over (`x`, `y`)
//! cells, one panel per series with a shared colour scale (pairwise barriers).
//! With `reference = "thesis:figure-7.5"`, the thesis's values for the plotted column are
//! drawn as dashed lines. Writes `figure.svg` and `figure.png`.

use std::collections::BTreeMap;

use wfpipe_stages::kind::{ColumnUse, Needs, Produces, ParamSpec, ParamType, Params, StageContext, StageError, StageKind, Value};

use crate::report::draw::{self, FigureData, FigureSpec};
use crate::report::figure_data::{heatmap_panels, histogram_series, line_series};
use crate::report::gather::{check_source_name, gather};
use crate::report::reference::Thesis;

pub struct Figure;

/// The file stem a figure instance writes (`figure.svg`, `figure.png`).
pub const FIGURE_STEM: &str = "figure";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotKind {
    Line,
    Histogram,
    Heatmap,
}

wfpipe_stages::words!(PlotKind, "plot", { Line = "line", Histogram = "histogram", Heatmap = "heatmap" });

/// The series of `y` and, when there are `also_y` columns, theirs, each label naming its
/// column.
fn lines(rows: &[wfpipe_stages::kind::Row], x: &str, y: &str, also: &[String], series: &[String]) -> Result<Vec<crate::report::figure_data::LineSeries>, crate::report::aggregate::AggregateError> {
    let mut out = line_series(rows, x, y, series)?;
    if also.is_empty() {
        return Ok(out);
    }
    let named = |label: &str, column: &str| if label.is_empty() { column.to_owned() } else { format!("{label} · {column}") };
    for s in &mut out {
        s.label = named(&s.label, y);
    }
    for column in also {
        for mut s in line_series(rows, x, column, series)? {
            s.label = named(&s.label, column);
            out.push(s);
        }
    }
    Ok(out)
}

fn text(s: &str) -> Value {
    Value::Str(s.into())
}

impl StageKind for Figure {
    fn name(&self) -> &'static str {
        "figure"
    }
    /// 2: the legend is headed by its series columns, bands are clipped to the values'
    /// range, whole-number x axes label whole numbers only. 3: a title wider than the
    /// figure is set smaller instead of clipped. 4: a series whose rows have none of the
    /// series columns (target networks beside flows) is named by its instances, not `geometry=–`.
    fn version(&self) -> u32 {
        4
    }
    fn about(&self) -> &'static str {
        "plot gathered rows (line with ± std band, histogram, heat map) as SVG and PNG"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("from", ParamType::RefList, "stages whose rows are gathered (all selected instances)"),
            ParamSpec::with_default("source", ParamType::Str, text("metrics"), "which emitted table of the inputs to read (<source>.parquet, else <source>.csv)"),
            ParamSpec::with_default("plot", ParamType::Enum(PlotKind::NAMES), text("line"), "line, histogram or heatmap"),
            ParamSpec::required("x", ParamType::Str, "x column (histogram: the values binned)"),
            ParamSpec::with_default("y", ParamType::Str, text(""), "y column (line: the metric; heatmap: the row column)"),
            ParamSpec::added("also_y", ParamType::StrList, Value::List(vec![]), "line: more y columns drawn beside `y` as series of their own (a baseline such as mean_predictor_loss)"),
            ParamSpec::with_default("z", ParamType::Str, text(""), "heatmap: the value column"),
            ParamSpec::with_default("series", ParamType::StrList, Value::List(vec![]), "columns whose values make separate series (heatmap: panels)"),
            ParamSpec::with_default("filter", ParamType::StrMap, Value::Table(BTreeMap::new()), "keep rows whose column equals the value"),
            ParamSpec::with_default("band", ParamType::Bool, Value::Bool(true), "line: shade mean ± std"),
            ParamSpec::with_default("bins", ParamType::Int { min: Some(1), max: Some(1000) }, Value::Int(30), "histogram: number of bins"),
            ParamSpec::with_default("log_x", ParamType::Bool, Value::Bool(false), "line: logarithmic x axis"),
            ParamSpec::with_default("title", ParamType::Str, text(""), "title (default: `<y> vs <x>`)"),
            ParamSpec::with_default("xlabel", ParamType::Str, text(""), "x-axis label (default: the x column)"),
            ParamSpec::with_default("ylabel", ParamType::Str, text(""), "y-axis label (default: the y column, or `count`)"),
            ParamSpec::with_default("reference", ParamType::Str, text(""), "thesis lines to draw, e.g. \"thesis:figure-7.5\""),
            ParamSpec::with_default("width", ParamType::Int { min: Some(320), max: Some(4000) }, Value::Int(1000), "pixels (PNG) / user units (SVG)"),
            ParamSpec::with_default("height", ParamType::Int { min: Some(240), max: Some(4000) }, Value::Int(600), "pixels (PNG) / user units (SVG)"),
        ]
    }
    /// With a `reference`, the result shows the thesis's values: their digest is in the key.
    fn builtin_data_digest(&self, params: &Params) -> Option<String> {
        params.str("reference").ok().filter(|r| !r.is_empty()).map(|_| Thesis::digest())
    }
    fn produces(&self, _params: &Params) -> Option<Produces> {
        Some(Produces::default())
    }
    /// `from` must name stages that emit the `source` table with every column named here.
    fn needs(&self, _param: &str, params: &Params) -> Needs {
        let mut columns: Vec<ColumnUse> = ["x", "y", "z"]
            .into_iter()
            .filter_map(|param| params.str(param).ok().filter(|c| !c.is_empty()).map(|c| ColumnUse { param, column: c.to_owned() }))
            .collect();
        columns.extend(params.str_list("also_y").unwrap_or_default().into_iter().map(|column| ColumnUse { param: "also_y", column }));
        columns.extend(params.str_list("series").unwrap_or_default().into_iter().map(|column| ColumnUse { param: "series", column }));
        columns.extend(params.str_map("filter").unwrap_or_default().into_keys().map(|column| ColumnUse { param: "filter", column }));
        Needs::Table { name: params.str("source").unwrap_or("metrics").to_owned(), columns, picks: Vec::new() }
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        check_source_name(params.str("source")?).map_err(StageError::Param)?;
        let plot: PlotKind = params.parse("plot")?;
        let need = |name: &str| -> Result<(), StageError> {
            if params.str(name)?.is_empty() {
                return Err(StageError::Param(format!("plot `{}` needs `{name}`", params.str("plot")?)));
            }
            Ok(())
        };
        need("x")?;
        match plot {
            PlotKind::Line => need("y")?,
            PlotKind::Histogram => {}
            PlotKind::Heatmap => {
                need("y")?;
                need("z")?;
            }
        }
        let reference = params.str("reference")?;
        if !reference.is_empty() {
            Thesis::get().figure(reference).map_err(|e| StageError::Param(format!("`reference`: {e}")))?;
        }
        Ok(())
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p = ctx.params;
        let plot: PlotKind = p.parse("plot")?;
        let rows = gather(ctx.inputs_of("from"), p.str("source")?, &p.str_map("filter")?)?;
        let (x, y, z) = (p.str("x")?, p.str("y")?, p.str("z")?);
        let series = p.str_list("series")?;
        let input = |e: crate::report::aggregate::AggregateError| StageError::Input(e.to_string());
        let data = match plot {
            PlotKind::Line => FigureData::Line(lines(&rows, x, y, &p.str_list("also_y")?, &series).map_err(input)?),
            PlotKind::Histogram => FigureData::Histogram(histogram_series(&rows, x, &series).map_err(input)?),
            PlotKind::Heatmap => FigureData::Heatmap(heatmap_panels(&rows, x, y, z, &series).map_err(input)?),
        };
        // Reference values belong to the plotted quantity: y of a line, x of a histogram.
        let plotted = if plot == PlotKind::Histogram { x } else { y };
        let reference = p.str("reference")?;
        let reference_lines = if reference.is_empty() || plot == PlotKind::Heatmap {
            Vec::new()
        } else {
            let fig = Thesis::get().figure(reference).map_err(|e| StageError::Param(e.to_string()))?;
            fig.lines.iter().filter(|l| l.metric == plotted).cloned().collect()
        };
        let or = |given: &str, fallback: String| if given.is_empty() { fallback } else { given.to_owned() };
        let default_title = match plot {
            PlotKind::Line => format!("{y} vs {x}"),
            PlotKind::Histogram => format!("distribution of {x}"),
            PlotKind::Heatmap => format!("{z} over {x} × {y}"),
        };
        let spec = FigureSpec {
            title: or(p.str("title")?, default_title),
            xlabel: or(p.str("xlabel")?, x.to_owned()),
            ylabel: or(p.str("ylabel")?, if plot == PlotKind::Histogram { "count".into() } else { y.to_owned() }),
            zlabel: z.to_owned(),
            log_x: p.bool("log_x")?,
            band: p.bool("band")?,
            legend_title: series.join(", "),
            bins: p.usize("bins")?,
            width: u32::try_from(p.i64("width")?).map_err(|_| StageError::Param("`width` out of range".into()))?,
            height: u32::try_from(p.i64("height")?).map_err(|_| StageError::Param("`height` out of range".into()))?,
            reference_lines,
        };
        draw::render(ctx.out_dir, FIGURE_STEM, &spec, &data).map_err(|e| StageError::Failed(e.to_string()))?;
        Ok(())
    }
}
