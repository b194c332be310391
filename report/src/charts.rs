//! Charts, drawn with plotters as SVG (inlined into `report.html`) and PNG.
//!
//! Charts are built in two steps: [`Chart`] is plain data (rows of bars,
//! or series of points) computed from the run, and [`render`] draws it with
//! either backend. Tests check the data; the drawing is the same code for
//! both files.
//!
//! Readability rules, applied by construction rather than by tuning:
//! * bar charts are horizontal, one row per bar with a fixed pixel height,
//!   and the chart grows with the rows, so category labels cannot overlap
//!   however many cells a run has;
//! * legends are drawn in their own panel beside the plot, never over data;
//! * an engine has the same colour in every chart ([`Colors`]: the order of
//!   the run's engines), so charts can be read side by side;
//! * every chart has a title, axis descriptions with units and a legend.
//!
//! PNGs need a TrueType font to rasterise text: the first of
//! `$ENGINE_MATRIX_FONT`, DejaVu Sans / Liberation Sans at their Debian
//! paths, or any `.ttf` under `/usr/share/fonts`. SVGs need one too, to
//! measure text for the layout; without any font no chart is drawn and the
//! report says why.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The colour type of [`Series`] and [`Bar`].
pub use plotters::style::RGBColor;

type Res = Result<(), Box<dyn Error>>;

const FONT: &str = "sans-serif";
const ROW: u32 = 24;
const LEGEND_W: u32 = 250;

/// Tableau 10: distinguishable, and readable on white.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// One colour per engine, in the order the run lists its engines.
#[derive(Debug, Clone, Default)]
pub struct Colors(BTreeMap<String, RGBColor>);

impl Colors {
    pub fn new<'a>(engines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut map = BTreeMap::new();
        for e in engines {
            let n = map.len();
            map.entry(e.to_string()).or_insert_with(|| {
                let (r, g, b) = PALETTE[n % PALETTE.len()];
                RGBColor(r, g, b)
            });
        }
        Colors(map)
    }

    pub fn of(&self, engine: &str) -> RGBColor {
        self.0.get(engine).copied().unwrap_or(RGBColor(0, 0, 0))
    }

    pub fn hex(&self, engine: &str) -> String {
        let RGBColor(r, g, b) = self.of(engine);
        format!("#{r:02x}{g:02x}{b:02x}")
    }
}

/// The marker of a series' points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Circle,
    Triangle,
    Cross,
    Square,
    None,
}

/// A point: (x, y, optional y interval).
pub type Point = (f64, f64, Option<(f64, f64)>);

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    /// Line width; 0 draws points only.
    pub width: u32,
    pub mark: Mark,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub color: RGBColor,
    pub value: f64,
    pub interval: Option<(f64, f64)>,
    /// Printed beside the bar.
    pub text: String,
}

#[derive(Debug, Clone)]
pub enum Body {
    /// Horizontal bars; `reference` draws a vertical line (e.g. 1x),
    /// `band` shades an x range (e.g. the noise threshold).
    Bars {
        x_desc: String,
        bars: Vec<Bar>,
        reference: Option<f64>,
        band: Option<(f64, f64)>,
        legend: Vec<(String, RGBColor)>,
    },
    Xy {
        x_desc: String,
        y_desc: String,
        log_x: bool,
        log_y: bool,
        series: Vec<Series>,
    },
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// File stem, unique in a report.
    pub name: String,
    pub title: String,
    /// One sentence saying what is plotted and how to read it.
    pub note: String,
    pub body: Body,
}

impl Chart {
    pub fn size(&self) -> (u32, u32) {
        match &self.body {
            Body::Bars { bars, .. } => (1100, 110 + ROW * bars.len().max(1) as u32),
            Body::Xy { series, .. } => (1100, (520).max(90 + 18 * series.len() as u32)),
        }
    }
}

/// Files written for a chart.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub chart: Chart,
    pub svg: String,
    pub svg_path: PathBuf,
    pub png_path: PathBuf,
}

static FONT_STATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Registers a TrueType font for plotters (once per process).
pub fn font() -> Result<PathBuf, String> {
    FONT_STATE
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(p) = std::env::var_os("ENGINE_MATRIX_FONT") {
                candidates.push(PathBuf::from(p));
            }
            for p in [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
                "/Library/Fonts/Arial.ttf",
                "/System/Library/Fonts/Supplemental/Arial.ttf",
            ] {
                candidates.push(PathBuf::from(p));
            }
            candidates.extend(find_ttf(Path::new("/usr/share/fonts"), 4));
            for path in candidates {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return Ok(path);
                }
            }
            Err("no TrueType font found (set ENGINE_MATRIX_FONT to a .ttf file, or install Debian's fonts-dejavu-core)".into())
        })
        .clone()
}

fn find_ttf(dir: &Path, depth: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            out.extend(find_ttf(&p, depth - 1));
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
    out
}

/// Draws `chart` as an SVG document, in memory (the dashboard's charts).
pub fn svg(chart: &Chart) -> Result<String, String> {
    svg_sized(chart, chart.size())
}

/// [`svg`] at `size` pixels instead of the chart's own.
pub fn svg_sized(chart: &Chart, size: (u32, u32)) -> Result<String, String> {
    font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(chart, &root).map_err(|e| format!("chart {}: {e}", chart.name))?;
        root.present()
            .map_err(|e| format!("chart {}: {e}", chart.name))?;
    }
    Ok(svg)
}

/// Draws `chart` as `<dir>/<name>.svg` and `<dir>/<name>.png`.
pub fn render(chart: &Chart, dir: &Path) -> Result<Rendered, String> {
    font()?;
    let size = chart.size();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(chart, &root).map_err(|e| format!("chart {}: {e}", chart.name))?;
        root.present()
            .map_err(|e| format!("chart {}: {e}", chart.name))?;
    }
    let svg_path = dir.join(format!("{}.svg", chart.name));
    std::fs::write(&svg_path, &svg).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    let png_path = dir.join(format!("{}.png", chart.name));
    {
        let root = BitMapBackend::new(&png_path, size).into_drawing_area();
        draw(chart, &root).map_err(|e| format!("chart {}: {e}", chart.name))?;
        root.present()
            .map_err(|e| format!("{}: {e}", png_path.display()))?;
    }
    Ok(Rendered {
        chart: chart.clone(),
        svg,
        svg_path,
        png_path,
    })
}

fn draw<DB: DrawingBackend>(chart: &Chart, root: &DrawingArea<DB, Shift>) -> Res
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let area = root.titled(&chart.title, (FONT, 20))?;
    let (w, _) = area.dim_in_pixel();
    let (plot, legend) = area.split_horizontally(w.saturating_sub(LEGEND_W));
    match &chart.body {
        Body::Bars {
            x_desc,
            bars,
            reference,
            band,
            legend: entries,
        } => {
            draw_bars(&plot, x_desc, bars, *reference, *band)?;
            let items: Vec<(String, RGBColor, Mark, u32)> = entries
                .iter()
                .map(|(l, c)| (l.clone(), *c, Mark::Square, 0))
                .collect();
            draw_legend(&legend, &items)?;
        }
        Body::Xy {
            x_desc,
            y_desc,
            log_x,
            log_y,
            series,
        } => {
            let (x0, x1) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
            let (y0, y1) = bounds(series.iter().flat_map(|s| {
                s.points
                    .iter()
                    .flat_map(|p| [Some(p.1), p.2.map(|i| i.0), p.2.map(|i| i.1)])
                    .flatten()
            }));
            let xr = axis_range(x0, x1, *log_x);
            let yr = axis_range(y0, y1, *log_y);
            match (log_x, log_y) {
                (false, false) => xy(&plot, x_desc, y_desc, series, xr.0..xr.1, yr.0..yr.1)?,
                (true, false) => xy(
                    &plot,
                    x_desc,
                    y_desc,
                    series,
                    (xr.0..xr.1).log_scale(),
                    yr.0..yr.1,
                )?,
                (false, true) => xy(
                    &plot,
                    x_desc,
                    y_desc,
                    series,
                    xr.0..xr.1,
                    (yr.0..yr.1).log_scale(),
                )?,
                (true, true) => xy(
                    &plot,
                    x_desc,
                    y_desc,
                    series,
                    (xr.0..xr.1).log_scale(),
                    (yr.0..yr.1).log_scale(),
                )?,
            }
            let items: Vec<(String, RGBColor, Mark, u32)> = series
                .iter()
                .filter(|s| !s.label.is_empty())
                .map(|s| (s.label.clone(), s.color, s.mark, s.width))
                .collect();
            draw_legend(&legend, &items)?;
        }
    }
    Ok(())
}

fn bounds(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    xs.filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        })
}

/// A padded axis range; a log axis starts above 0.
fn axis_range(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        let lo = if lo > 0.0 { lo } else { hi.max(1e-9) * 1e-3 };
        let hi = hi.max(lo * 1.01);
        (lo / 1.5, hi * 1.5)
    } else {
        let lo = lo.min(0.0);
        let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
        (lo, hi + span * 0.1)
    }
}

fn xy<DB, X, Y>(
    area: &DrawingArea<DB, Shift>,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    x: X,
    y: Y,
) -> Res
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for s in series {
        let color = s.color;
        if s.width > 0 && s.points.len() > 1 {
            chart.draw_series(LineSeries::new(
                s.points.iter().map(|p| (p.0, p.1)),
                color.stroke_width(s.width),
            ))?;
        }
        for p in &s.points {
            if let Some((lo, hi)) = p.2 {
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                    p.0,
                    lo,
                    p.1,
                    hi,
                    color.stroke_width(1),
                    8,
                )))?;
            }
        }
        let style = color.filled();
        match s.mark {
            Mark::Circle => {
                chart.draw_series(s.points.iter().map(|p| Circle::new((p.0, p.1), 4, style)))?;
            }
            Mark::Triangle => {
                chart.draw_series(
                    s.points
                        .iter()
                        .map(|p| TriangleMarker::new((p.0, p.1), 5, style)),
                )?;
            }
            Mark::Cross => {
                chart.draw_series(
                    s.points
                        .iter()
                        .map(|p| Cross::new((p.0, p.1), 4, color.stroke_width(2))),
                )?;
            }
            Mark::Square => {
                chart.draw_series(s.points.iter().map(|p| {
                    EmptyElement::at((p.0, p.1)) + Rectangle::new([(-4, -4), (4, 4)], style)
                }))?;
            }
            Mark::None => {}
        }
    }
    Ok(())
}

/// Compact tick labels: 1.5k, 20, 0.25.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x_desc: &str,
    bars: &[Bar],
    reference: Option<f64>,
    band: Option<(f64, f64)>,
) -> Res
where
    DB::ErrorType: 'static,
{
    let n = bars.len().max(1);
    let (lo, hi) = bounds(
        bars.iter()
            .flat_map(|b| {
                [
                    Some(b.value),
                    b.interval.map(|i| i.0),
                    b.interval.map(|i| i.1),
                ]
            })
            .flatten()
            .chain(reference)
            .chain(band.into_iter().flat_map(|b| [b.0, b.1])),
    );
    let lo = if lo.is_finite() { lo.min(0.0) } else { 0.0 };
    let hi = if hi.is_finite() { hi.max(0.0) } else { 1.0 };
    let span = (hi - lo).max(1e-9);
    // Room on the right for the value labels.
    let (x0, x1) = (
        lo - if lo < 0.0 { span * 0.15 } else { 0.0 },
        hi + span * 0.22,
    );
    let longest = bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(4);
    let label_w = (longest as u32 * 7 + 16).clamp(80, 460);
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(label_w)
        // Discrete ranges include their end: n rows are 0..=n-1.
        .build_cartesian_2d(x0..x1, (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels
                .get(n - 1 - (*i).min(n - 1))
                .cloned()
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .x_label_formatter(&|v| short(*v))
        .x_desc(x_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if let Some((a, b)) = band {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a, SegmentValue::Exact(0)), (b, SegmentValue::Last)],
            RGBColor(230, 230, 230).filled(),
        )))?;
    }
    let base = 0.0f64.clamp(x0, x1);
    for (row, b) in bars.iter().enumerate() {
        // The first bar at the top.
        let i = n - 1 - row;
        let mut r = Rectangle::new(
            [
                (base, SegmentValue::Exact(i)),
                (b.value, SegmentValue::Exact(i + 1)),
            ],
            b.color.filled(),
        );
        r.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(r))?;
        let mut end = b.value;
        if let Some((l, h)) = b.interval {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (l, SegmentValue::CenterOf(i)),
                    (h, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )))?;
            chart.draw_series(
                [l, h]
                    .into_iter()
                    .map(|x| Circle::new((x, SegmentValue::CenterOf(i)), 3, BLACK.filled())),
            )?;
            end = end.max(h);
        }
        chart.draw_series(std::iter::once(
            EmptyElement::at((end.max(base), SegmentValue::CenterOf(i)))
                + Text::new(b.text.clone(), (6, -7), (FONT, 12)),
        ))?;
    }
    if let Some(x) = reference {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, SegmentValue::Exact(0)), (x, SegmentValue::Last)],
            RED.stroke_width(2),
        )))?;
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    items: &[(String, RGBColor, Mark, u32)],
) -> Res
where
    DB::ErrorType: 'static,
{
    let max_chars = ((LEGEND_W - 40) / 7) as usize;
    for (i, (label, color, mark, width)) in items.iter().enumerate() {
        let y = 24 + 18 * i as i32;
        let style = color.filled();
        if *width > 0 {
            area.draw(&PathElement::new(
                vec![(6, y), (30, y)],
                color.stroke_width(*width),
            ))?;
        }
        match mark {
            Mark::Circle => area.draw(&Circle::new((18, y), 4, style))?,
            Mark::Triangle => area.draw(&TriangleMarker::new((18, y), 5, style))?,
            Mark::Cross => area.draw(&Cross::new((18, y), 4, color.stroke_width(2)))?,
            Mark::Square => area.draw(&Rectangle::new([(12, y - 6), (24, y + 6)], style))?,
            Mark::None => {}
        }
        let text: String = if label.chars().count() > max_chars {
            label.chars().take(max_chars - 1).chain(['…']).collect()
        } else {
            label.clone()
        };
        area.draw(&Text::new(text, (36, y - 7), (FONT, 13)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_keep_their_colour() {
        let c = Colors::new(["torch", "candle", "onnx", "candle"]);
        assert_eq!(c.hex("torch"), "#1f77b4");
        assert_eq!(c.hex("candle"), "#ff7f0e");
        assert_eq!(c.hex("onnx"), "#2ca02c");
        assert_ne!(c.of("torch"), c.of("onnx"));
    }

    #[test]
    fn ranges_pad_and_log_ranges_stay_positive() {
        assert_eq!(
            axis_range(f64::INFINITY, f64::NEG_INFINITY, false),
            (0.0, 1.0)
        );
        let (lo, hi) = axis_range(10.0, 20.0, false);
        assert!(lo == 0.0 && hi > 20.0);
        let (lo, hi) = axis_range(0.0, 100.0, true);
        assert!(lo > 0.0 && hi > 100.0);
    }

    #[test]
    fn bar_chart_grows_with_its_rows() {
        let bars = |n| Chart {
            name: "x".into(),
            title: "x".into(),
            note: String::new(),
            body: Body::Bars {
                x_desc: "x".into(),
                bars: (0..n)
                    .map(|i| Bar {
                        label: format!("row {i}"),
                        color: BLACK,
                        value: i as f64,
                        interval: None,
                        text: String::new(),
                    })
                    .collect(),
                reference: None,
                band: None,
                legend: vec![],
            },
        };
        let (_, h10) = bars(10).size();
        let (_, h100) = bars(100).size();
        assert_eq!(h100 - h10, 90 * ROW, "each row gets its own {ROW} px");
    }
}
