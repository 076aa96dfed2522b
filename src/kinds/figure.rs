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

use wfpipe_stages::declare::KindParams;
use wfpipe_stages::kind::{ColumnUse, Needs, ParamSpec, ParamType, Params, Produces, StageContext, StageError, StageKind};

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

wfpipe_stages::kind_params! {
    /// The parameters of one `[figure.NAME]`, declared once.
    struct Args {
        from: Vec<String> [ParamType::RefList] = required, "stages whose rows are gathered (all selected instances)";
        source: String = default("metrics".to_owned()), "which emitted table of the inputs to read (<source>.parquet, else <source>.csv)";
        plot: PlotKind = default(PlotKind::Line), "line, histogram or heatmap";
        x: String = required, "x column (histogram: the values binned)";
        y: String = default(String::new()), "y column (line: the metric; heatmap: the row column)";
        also_y: Vec<String> = added(Vec::new()), "line: more y columns drawn beside `y` as series of their own (a baseline such as mean_predictor_loss)";
        z: String = default(String::new()), "heatmap: the value column";
        series: Vec<String> = default(Vec::new()), "columns whose values make separate series (heatmap: panels)";
        filter: BTreeMap<String, String> = default(BTreeMap::new()), "keep rows whose column equals the value";
        band: bool = default(true), "line: shade mean ± std";
        bins: usize [ParamType::Int { min: Some(1), max: Some(1000) }] = default(30), "histogram: number of bins";
        log_x: bool = default(false), "line: logarithmic x axis";
        title: String = default(String::new()), "title (default: `<y> vs <x>`)";
        xlabel: String = default(String::new()), "x-axis label (default: the x column)";
        ylabel: String = default(String::new()), "y-axis label (default: the y column, or `count`)";
        reference: String = default(String::new()), "thesis lines to draw, e.g. \"thesis:figure-7.5\"";
        width: usize [ParamType::Int { min: Some(320), max: Some(4000) }] = default(1000), "pixels (PNG) / user units (SVG)";
        height: usize [ParamType::Int { min: Some(240), max: Some(4000) }] = default(600), "pixels (PNG) / user units (SVG)";
    }
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
        Args::schema()
    }
    /// With a `reference`, the result shows the thesis's values: their digest is in the key.
    fn builtin_data_digest(&self, params: &Params) -> Option<String> {
        Args::parse(params).ok().filter(|a| !a.reference.is_empty()).map(|_| Thesis::digest())
    }
    fn produces(&self, _params: &Params) -> Option<Produces> {
        Some(Produces::default())
    }
    /// `from` must name stages that emit the `source` table with every column named here.
    fn needs(&self, _param: &str, params: &Params) -> Needs {
        let Ok(a) = Args::parse(params) else { return Needs::Anything };
        let mut columns: Vec<ColumnUse> = [("x", &a.x), ("y", &a.y), ("z", &a.z)]
            .into_iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(param, c)| ColumnUse { param, column: c.clone() })
            .collect();
        for (param, names) in [("also_y", &a.also_y), ("series", &a.series)] {
            columns.extend(names.iter().map(|column| ColumnUse { param, column: column.clone() }));
        }
        columns.extend(a.filter.keys().map(|column| ColumnUse { param: "filter", column: column.clone() }));
        Needs::Table { name: a.source, columns, picks: Vec::new() }
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        let a = Args::parse(params)?;
        check_source_name(&a.source).map_err(StageError::Param)?;
        let need = |name: &str, value: &str| -> Result<(), StageError> {
            if value.is_empty() {
                return Err(StageError::Param(format!("plot `{}` needs `{name}`", a.plot)));
            }
            Ok(())
        };
        need("x", &a.x)?;
        match a.plot {
            PlotKind::Line => need("y", &a.y)?,
            PlotKind::Histogram => {}
            PlotKind::Heatmap => {
                need("y", &a.y)?;
                need("z", &a.z)?;
            }
        }
        if !a.reference.is_empty() {
            Thesis::get().figure(&a.reference).map_err(|e| StageError::Param(format!("`reference`: {e}")))?;
        }
        Ok(())
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let a = Args::parse(ctx.params)?;
        let plot = a.plot;
        let rows = gather(ctx.inputs_of("from"), &a.source, &a.filter)?;
        let (x, y, z) = (a.x.as_str(), a.y.as_str(), a.z.as_str());
        let series = &a.series;
        let input = |e: crate::report::aggregate::AggregateError| StageError::Input(e.to_string());
        let data = match plot {
            PlotKind::Line => FigureData::Line(lines(&rows, x, y, &a.also_y, series).map_err(input)?),
            PlotKind::Histogram => FigureData::Histogram(histogram_series(&rows, x, series).map_err(input)?),
            PlotKind::Heatmap => FigureData::Heatmap(heatmap_panels(&rows, x, y, z, series).map_err(input)?),
        };
        // Reference values belong to the plotted quantity: y of a line, x of a histogram.
        let plotted = if plot == PlotKind::Histogram { x } else { y };
        let reference_lines = if a.reference.is_empty() || plot == PlotKind::Heatmap {
            Vec::new()
        } else {
            let fig = Thesis::get().figure(&a.reference).map_err(|e| StageError::Param(e.to_string()))?;
            fig.lines.iter().filter(|l| l.metric == plotted).cloned().collect()
        };
        let or = |given: &str, fallback: String| if given.is_empty() { fallback } else { given.to_owned() };
        let default_title = match plot {
            PlotKind::Line => format!("{y} vs {x}"),
            PlotKind::Histogram => format!("distribution of {x}"),
            PlotKind::Heatmap => format!("{z} over {x} × {y}"),
        };
        let spec = FigureSpec {
            title: or(&a.title, default_title),
            xlabel: or(&a.xlabel, x.to_owned()),
            ylabel: or(&a.ylabel, if plot == PlotKind::Histogram { "count".into() } else { y.to_owned() }),
            zlabel: z.to_owned(),
            log_x: a.log_x,
            band: a.band,
            legend_title: series.join(", "),
            bins: a.bins,
            // Both are at most 4,000 (the schema's range).
            width: a.width as u32,
            height: a.height as u32,
            reference_lines,
        };
        draw::render(ctx.out_dir, FIGURE_STEM, &spec, &data).map_err(|e| StageError::Failed(e.to_string()))?;
        Ok(())
    }
}
