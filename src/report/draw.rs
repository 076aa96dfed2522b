//! Figures drawn with plotters onto any backend (SVG and PNG share every line of code).
//!
//! The main entry is [`render`], which writes `<stem>.svg` and `<stem>.png` for a
//! [`FigureSpec`] and its [`FigureData`]. Text is laid out with the bundled DejaVu Sans, so
//! no system font or fontconfig is involved and the same input gives the same bytes.
//! The legend sits in its own column to the right of the plot, where it never hides data.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::figure_data::{HeatmapPanel, HistogramSeries, LinePoint, LineSeries as LineData};
use super::reference::ReferenceLine;

const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT: &str = "sans-serif";
const TITLE_SIZE: u32 = 26;
const MIN_TITLE_SIZE: u32 = 12;
const LABEL_SIZE: u32 = 20;
const TICK_SIZE: u32 = 16;
const LEGEND_SIZE: u32 = 17;

/// Tableau 10: ten colours that stay distinct for colour-blind readers and in print.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const REFERENCE_COLOR: RGBColor = RGBColor(40, 40, 40);

#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("the bundled font could not be loaded")]
    Font,
    #[error("nothing to draw: {0}")]
    Empty(String),
    #[error("log-scale x needs positive x values; found {0}")]
    NonPositiveLogX(f64),
    #[error("drawing failed: {0}")]
    Draw(String),
}

/// Axes, tick labels and a light grid, alike on every chart; `x_fmt` labels the x ticks.
fn draw_axes<DB, X, Y>(chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>, spec: &FigureSpec, x_fmt: &dyn Fn(&f64) -> String) -> Result<(), FigureError>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let y_fmt = |v: &f64| tick_label(*v);
    chart
        .configure_mesh()
        .x_desc(spec.xlabel.as_str())
        .y_desc(spec.ylabel.as_str())
        .axis_desc_style((FONT, LABEL_SIZE))
        .label_style((FONT, TICK_SIZE))
        .x_label_formatter(x_fmt)
        .y_label_formatter(&y_fmt)
        .max_light_lines(1)
        .light_line_style(RGBColor(242, 242, 242))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(draw_err)
}

fn draw_err<E: std::fmt::Display>(e: E) -> FigureError {
    FigureError::Draw(e.to_string())
}

fn ensure_font() -> Result<(), FigureError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok {
        Ok(())
    } else {
        Err(FigureError::Font)
    }
}

#[derive(Clone, Debug)]
pub struct FigureSpec {
    pub title: String,
    pub xlabel: String,
    pub ylabel: String,
    /// The heat map's value (written above its colour bar).
    pub zlabel: String,
    pub log_x: bool,
    pub band: bool,
    /// Heads the legend: the columns the series are split on.
    pub legend_title: String,
    pub bins: usize,
    pub width: u32,
    pub height: u32,
    pub reference_lines: Vec<ReferenceLine>,
}

#[derive(Clone, Debug)]
pub enum FigureData {
    Line(Vec<LineData>),
    Histogram(Vec<HistogramSeries>),
    Heatmap(Vec<HeatmapPanel>),
}

/// Write `<dir>/<stem>.svg` and `<dir>/<stem>.png`.
pub fn render(dir: &Path, stem: &str, spec: &FigureSpec, data: &FigureData) -> Result<(), FigureError> {
    ensure_font()?;
    let size = (spec.width, spec.height);
    {
        let svg = dir.join(format!("{stem}.svg"));
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw(&root, spec, data)?;
        root.present().map_err(draw_err)?;
    }
    {
        let png = dir.join(format!("{stem}.png"));
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw(&root, spec, data)?;
        root.present().map_err(draw_err)?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, spec: &FigureSpec, data: &FigureData) -> Result<(), FigureError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let size = title_size(root, &spec.title);
    let body = root.titled(&spec.title, (FONT, size).into_font().color(&BLACK)).map_err(draw_err)?;
    match data {
        FigureData::Line(series) => draw_lines(&body, spec, series),
        FigureData::Histogram(series) => draw_histograms(&body, spec, series),
        FigureData::Heatmap(panels) => draw_heatmaps(&body, spec, panels),
    }
}

/// The title's font size: the usual one, or the largest smaller one at which a long title
/// fits the figure's width (plotters centres a title and clips what overflows both sides).
fn title_size<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> u32 {
    const MARGIN: u32 = 20;
    let width = root.dim_in_pixel().0;
    let fits = |s: u32| root.estimate_text_size(title, &(FONT, s).into_text_style(root)).map_or(true, |(w, _)| w + MARGIN <= width);
    (MIN_TITLE_SIZE..=TITLE_SIZE).rev().find(|&s| fits(s)).unwrap_or(MIN_TITLE_SIZE)
}

/// How one legend entry looks.
struct LegendEntry {
    label: String,
    color: RGBColor,
    marker: Option<usize>,
    dashed: bool,
    filled_box: bool,
}

/// Split off a legend column on the right sized to its longest label.
fn with_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    entries: &[LegendEntry],
) -> Result<DrawingArea<DB, Shift>, FigureError> {
    if entries.is_empty() {
        return Ok(area.clone());
    }
    let (w, _) = area.dim_in_pixel();
    let longest = entries.iter().map(|e| e.label.chars().count() + 8).chain([title.chars().count()]).max().unwrap_or(0) as u32 - 8;
    let legend_w = (56 + longest * (LEGEND_SIZE * 6 / 10)).min(w * 2 / 5);
    let (plot, legend) = area.split_horizontally(w - legend_w);
    let style = (FONT, LEGEND_SIZE).into_font().color(&BLACK);
    let mut top = 50;
    if !title.is_empty() {
        let bold = (FONT, LEGEND_SIZE, FontStyle::Bold).into_font().color(&BLACK);
        legend.draw_text(title, &bold, (6, top - (LEGEND_SIZE as i32) / 2)).map_err(draw_err)?;
        top += (LEGEND_SIZE as i32) + 12;
    }
    let step = (LEGEND_SIZE as i32) + 12;
    for (i, e) in entries.iter().enumerate() {
        let y = top + i as i32 * step;
        let line = e.color.stroke_width(3);
        if e.filled_box {
            legend
                .draw(&Rectangle::new([(8, y - 7), (36, y + 7)], e.color.mix(0.45).filled()))
                .map_err(draw_err)?;
            legend.draw(&Rectangle::new([(8, y - 7), (36, y + 7)], e.color.stroke_width(1))).map_err(draw_err)?;
        } else if e.dashed {
            legend.draw(&PathElement::new(vec![(6, y), (14, y)], line)).map_err(draw_err)?;
            legend.draw(&PathElement::new(vec![(20, y), (28, y)], line)).map_err(draw_err)?;
            legend.draw(&PathElement::new(vec![(34, y), (40, y)], line)).map_err(draw_err)?;
        } else {
            legend.draw(&PathElement::new(vec![(6, y), (40, y)], line)).map_err(draw_err)?;
        }
        if let Some(m) = e.marker {
            draw_marker(&legend, (23, y), m, e.color)?;
        }
        legend.draw_text(&e.label, &style, (48, y - (LEGEND_SIZE as i32) / 2)).map_err(draw_err)?;
    }
    Ok(plot)
}

/// Marker shapes cycle with the series so lines differ by more than colour.
fn draw_marker<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, at: (i32, i32), which: usize, color: RGBColor) -> Result<(), FigureError> {
    let (x, y) = at;
    let style = color.filled();
    match which % 4 {
        0 => area.draw(&Circle::new((x, y), 5, style)),
        1 => area.draw(&TriangleMarker::new((x, y), 6, style)),
        2 => area.draw(&Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], style)),
        _ => area.draw(&Cross::new((x, y), 5, color.stroke_width(2))),
    }
    .map_err(draw_err)
}

fn padded(lo: f64, hi: f64, fraction: f64) -> Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    if (hi - lo).abs() < 1e-12 {
        let pad = if lo.abs() > 1e-12 { lo.abs() * 0.1 } else { 1.0 };
        return (lo - pad)..(hi + pad);
    }
    let pad = (hi - lo) * fraction;
    (lo - pad)..(hi + pad)
}

fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// On a log axis only 1, 2 and 5 times a power of ten are labelled, so labels never crowd.
fn log_tick_label(v: f64) -> String {
    if v <= 0.0 {
        return String::new();
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0].iter().any(|k| (mantissa - k).abs() < 1e-6) {
        tick_label(v)
    } else {
        String::new()
    }
}

/// Mean ± std, clipped to the values' own range: a band of accuracies that would cross
/// 1 (or of losses that would cross 0) stops at the largest (smallest) value seen.
fn band_of(p: &LinePoint) -> (f64, f64) {
    let s = p.std.unwrap_or(0.0);
    ((p.mean - s).max(p.min), (p.mean + s).min(p.max))
}

/// Whether every x is a whole number (Euler steps, d_E, networks averaged): then only
/// whole-number ticks are labelled, so no label is printed twice.
fn whole_numbers(series: &[LineData]) -> bool {
    series.iter().flat_map(|s| s.points.iter()).all(|p| p.x.fract() == 0.0)
}

fn draw_lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, spec: &FigureSpec, series: &[LineData]) -> Result<(), FigureError> {
    if series.is_empty() {
        return Err(FigureError::Empty("no series has points".into()));
    }
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.x));
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let band = |p: &LinePoint| if spec.band { band_of(p) } else { (p.mean, p.mean) };
    let mut y_lo = series.iter().flat_map(|s| s.points.iter().map(|p| band(p).0)).fold(f64::INFINITY, f64::min);
    let mut y_hi = series.iter().flat_map(|s| s.points.iter().map(|p| band(p).1)).fold(f64::NEG_INFINITY, f64::max);
    for r in &spec.reference_lines {
        y_lo = y_lo.min(r.value);
        y_hi = y_hi.max(r.value);
    }
    let mut entries: Vec<LegendEntry> = series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry { label: s.label.clone(), color: PALETTE[i % PALETTE.len()], marker: Some(i), dashed: false, filled_box: false })
        .collect();
    if series.len() == 1 && series[0].label.is_empty() {
        entries.clear();
    }
    for r in &spec.reference_lines {
        entries.push(LegendEntry { label: r.label.clone(), color: REFERENCE_COLOR, marker: None, dashed: true, filled_box: false });
    }
    let plot = with_legend(area, &spec.legend_title, &entries)?;
    let y_range = padded(y_lo, y_hi, 0.06);
    if spec.log_x {
        if x_lo <= 0.0 {
            return Err(FigureError::NonPositiveLogX(x_lo));
        }
        let (lo, hi) = if x_hi > x_lo { (x_lo / 1.15, x_hi * 1.15) } else { (x_lo / 2.0, x_hi * 2.0) };
        line_chart(&plot, spec, series, (lo..hi).log_scale(), y_range)
    } else {
        line_chart(&plot, spec, series, padded(x_lo, x_hi, 0.03), y_range)
    }
}

fn line_chart<DB: DrawingBackend, X>(
    plot: &DrawingArea<DB, Shift>,
    spec: &FigureSpec,
    series: &[LineData],
    x_spec: X,
    y_range: Range<f64>,
) -> Result<(), FigureError>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let (x_min, x_max) = {
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.x));
        xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)))
    };
    let mut chart = ChartBuilder::on(plot)
        .margin(16)
        .x_label_area_size(64)
        .y_label_area_size(84)
        .build_cartesian_2d(x_spec, y_range)
        .map_err(draw_err)?;
    let whole = whole_numbers(series);
    let x_fmt = |v: &f64| {
        if whole && (v - v.round()).abs() > 1e-9 {
            String::new()
        } else if spec.log_x {
            log_tick_label(*v)
        } else {
            tick_label(*v)
        }
    };
    draw_axes(&mut chart, spec, &x_fmt)?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if spec.band && s.points.iter().any(|p| p.std.is_some()) {
            let upper = s.points.iter().map(|p| (p.x, band_of(p).1));
            let lower = s.points.iter().rev().map(|p| (p.x, band_of(p).0));
            let outline: Vec<(f64, f64)> = upper.chain(lower).collect();
            // Many overlapping bands turn muddy: fainter when there are many series.
            let alpha = if series.len() > 3 { 0.10 } else { 0.18 };
            chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(alpha).filled()))).map_err(draw_err)?;
        }
        chart
            .draw_series(LineSeries::new(s.points.iter().map(|p| (p.x, p.mean)), color.stroke_width(3)))
            .map_err(draw_err)?;
        let at = s.points.iter().map(|p| (p.x, p.mean));
        let style = color.filled();
        match i % 4 {
            0 => chart.draw_series(at.map(|c| Circle::new(c, 5, style))),
            1 => chart.draw_series(at.map(|c| TriangleMarker::new(c, 6, style))),
            2 => chart.draw_series(at.map(|c| EmptyElement::at(c) + Rectangle::new([(-5, -5), (5, 5)], style))),
            _ => chart.draw_series(at.map(|c| Cross::new(c, 5, color.stroke_width(2)))),
        }
        .map_err(draw_err)?;
    }
    for r in &spec.reference_lines {
        chart
            .draw_series(DashedLineSeries::new(vec![(x_min, r.value), (x_max, r.value)], 10, 6, REFERENCE_COLOR.stroke_width(2)))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_histograms<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, spec: &FigureSpec, series: &[HistogramSeries]) -> Result<(), FigureError> {
    if series.is_empty() {
        return Err(FigureError::Empty("no finite values to histogram".into()));
    }
    let all = series.iter().flat_map(|s| s.values.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let edges = padded(lo, hi, 0.0);
    let bins = spec.bins.max(1);
    let width = (edges.end - edges.start) / bins as f64;
    let counts: Vec<Vec<usize>> = series
        .iter()
        .map(|s| {
            let mut c = vec![0usize; bins];
            for v in &s.values {
                let b = (((v - edges.start) / width).floor() as usize).min(bins - 1);
                c[b] += 1;
            }
            c
        })
        .collect();
    let top = counts.iter().flatten().copied().max().unwrap_or(1) as f64;
    let mut x_range = edges.clone();
    for r in &spec.reference_lines {
        x_range.start = x_range.start.min(r.value);
        x_range.end = x_range.end.max(r.value);
    }
    let x_range = padded(x_range.start, x_range.end, 0.03);
    let mut entries: Vec<LegendEntry> = series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            label: format!("{} (n={})", if s.label.is_empty() { "values" } else { &s.label }, s.values.len()),
            color: PALETTE[i % PALETTE.len()],
            marker: None,
            dashed: false,
            filled_box: true,
        })
        .collect();
    for (i, r) in spec.reference_lines.iter().enumerate() {
        entries.push(LegendEntry { label: r.label.clone(), color: reference_shade(i), marker: None, dashed: true, filled_box: false });
    }
    let plot = with_legend(area, &spec.legend_title, &entries)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(16)
        .x_label_area_size(64)
        .y_label_area_size(84)
        .build_cartesian_2d(x_range, 0.0..top * 1.08)
        .map_err(draw_err)?;
    draw_axes(&mut chart, spec, &|v: &f64| tick_label(*v))?;
    for (i, c) in counts.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let bars = c.iter().enumerate().filter(|(_, n)| **n > 0).map(|(b, n)| {
            let x0 = edges.start + b as f64 * width;
            [(x0, 0.0), (x0 + width, *n as f64)]
        });
        chart.draw_series(bars.clone().map(|r| Rectangle::new(r, color.mix(0.40).filled()))).map_err(draw_err)?;
        chart.draw_series(bars.map(|r| Rectangle::new(r, color.stroke_width(1)))).map_err(draw_err)?;
    }
    for (i, r) in spec.reference_lines.iter().enumerate() {
        chart
            .draw_series(DashedLineSeries::new(vec![(r.value, 0.0), (r.value, top * 1.08)], 10, 6, reference_shade(i).stroke_width(2)))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Reference lines of one figure in dark shades that differ from each other.
fn reference_shade(i: usize) -> RGBColor {
    [REFERENCE_COLOR, RGBColor(120, 0, 0), RGBColor(0, 70, 120)][i % 3]
}

/// Viridis, sampled at five points and interpolated: perceptually ordered and readable
/// in grey scale.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let pos = t * 4.0;
    let i = (pos.floor() as usize).min(3);
    let f = pos - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn draw_heatmaps<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, spec: &FigureSpec, panels: &[HeatmapPanel]) -> Result<(), FigureError> {
    if panels.is_empty() {
        return Err(FigureError::Empty("no cells".into()));
    }
    let values = panels.iter().flat_map(|p| p.cells.iter().map(|c| c.2)).filter(|v| v.is_finite());
    let (z_lo, z_hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), z| (a.min(z), b.max(z)));
    let z_span = if z_hi > z_lo { z_hi - z_lo } else { 1.0 };
    let (w, _) = area.dim_in_pixel();
    let (maps, bar) = area.split_horizontally(w.saturating_sub(130));
    let cells = maps.split_evenly((1, panels.len()));
    for (panel, region) in panels.iter().zip(&cells) {
        let caption = if panel.label.is_empty() { format!("mean {}", tick_label(panel.mean)) } else { format!("{} (mean {})", panel.label, tick_label(panel.mean)) };
        let mut chart = ChartBuilder::on(region)
            .caption(caption, (FONT, LABEL_SIZE))
            .margin(12)
            .x_label_area_size(56)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..panel.xs.len() as f64, 0.0..panel.ys.len() as f64)
            .map_err(draw_err)?;
        let xs = panel.xs.clone();
        let ys = panel.ys.clone();
        let x_fmt = move |v: &f64| xs.get(v.floor() as usize).map(|x| tick_label(*x)).unwrap_or_default();
        let y_fmt = move |v: &f64| ys.get(v.floor() as usize).map(|y| tick_label(*y)).unwrap_or_default();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(spec.xlabel.as_str())
            .y_desc(spec.ylabel.as_str())
            .axis_desc_style((FONT, LABEL_SIZE))
            .label_style((FONT, TICK_SIZE))
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(panel.cells.iter().map(|&(xi, yi, z)| {
                let color = viridis((z - z_lo) / z_span);
                Rectangle::new([(xi as f64, yi as f64), (xi as f64 + 1.0, yi as f64 + 1.0)], color.filled())
            }))
            .map_err(draw_err)?;
    }
    draw_colorbar(&bar, &spec.zlabel, z_lo, z_hi)
}

fn draw_colorbar<DB: DrawingBackend>(bar: &DrawingArea<DB, Shift>, label: &str, z_lo: f64, z_hi: f64) -> Result<(), FigureError> {
    let (_, h) = bar.dim_in_pixel();
    let (top, bottom) = (60i32, h as i32 - 80);
    if bottom <= top {
        return Ok(());
    }
    let steps = 64;
    let span = (bottom - top) as f64;
    let y_at = |fraction: f64| bottom - (fraction * span).round() as i32;
    for s in 0..steps {
        let (lo, hi) = (s as f64 / steps as f64, (s + 1) as f64 / steps as f64);
        let color = viridis((s as f64 + 0.5) / steps as f64);
        bar.draw(&Rectangle::new([(20, y_at(hi)), (48, y_at(lo))], color.filled())).map_err(draw_err)?;
    }
    bar.draw(&Rectangle::new([(20, top), (48, bottom)], BLACK.stroke_width(1))).map_err(draw_err)?;
    let style = (FONT, TICK_SIZE).into_font().color(&BLACK);
    bar.draw_text(label, &style, (14, top - 30)).map_err(draw_err)?;
    for (frac, value) in [(0.0, z_lo), (0.5, (z_lo + z_hi) / 2.0), (1.0, z_hi)] {
        let y = bottom - (frac * span) as i32;
        bar.draw(&PathElement::new(vec![(48, y), (54, y)], BLACK.stroke_width(1))).map_err(draw_err)?;
        bar.draw_text(&tick_label(value), &style, (58, y - (TICK_SIZE as i32) / 2)).map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_title_shrinks_to_fit_the_width() {
        ensure_font().unwrap();
        let mut svg = String::new();
        let root = SVGBackend::with_string(&mut svg, (1000, 600)).into_drawing_area();
        assert_eq!(title_size(&root, "Fig. 7.2: UCI pairwise loss barriers"), TITLE_SIZE);
        let long = "Aligned sphere flows: loss along the path (64 fresh pairs per point) and the mean predictor's loss";
        let size = title_size(&root, long);
        assert!(size < TITLE_SIZE, "{size}");
        let (w, _) = root.estimate_text_size(long, &(FONT, size).into_text_style(&root)).unwrap();
        assert!(w <= 1000, "{w}");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(64.0), "64");
        assert_eq!(tick_label(0.95), "0.95");
        assert_eq!(tick_label(0.00012), "1.2e-4");
        assert_eq!(tick_label(0.0), "0");
    }

    #[test]
    fn viridis_ends_are_the_published_colours() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
    }
}
