//! PNG plots of a run (`--plot DIR`): a bar chart of throughput per system or variant and a
//! chart of latency percentiles (log scale) per system, the disk's fdatasync among them.
//! Drawn with plotters' bitmap backend; text through ab_glyph from a TrueType file read at run
//! time (`--font`), so no system font library is linked.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::stats::Percentiles;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 620;
const FONT: &str = "sans-serif";

/// Registers the plots' font once per process.
pub fn load_font(path: &Path) -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = std::fs::read(path).map_err(|e| {
                format!(
                    "font {} for the plots: {e} (Debian: apt-get install fonts-dejavu-core, or --font PATH)",
                    path.display()
                )
            })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font", path.display()))
        })
        .clone()
}

fn color(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 12] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(23, 190, 207),
        RGBColor(188, 189, 34),
        RGBColor(0, 0, 0),
        RGBColor(255, 187, 120),
    ];
    PALETTE[index % PALETTE.len()]
}

fn draw_error(error: impl std::fmt::Display) -> String {
    format!("plot: {error}")
}

/// A bar per row: `(label, value)`, the value printed above its bar.
pub fn bars(path: &Path, title: &str, y_label: &str, rows: &[(String, f64)]) -> Result<(), String> {
    assert!(!rows.is_empty(), "a bar chart needs a row");
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let top = rows
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let labels: Vec<String> = rows.iter().map(|(label, _)| label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(80)
        // A segmented range holds its end as a segment too: `0..len - 1` gives `len` bars.
        .build_cartesian_2d((0..rows.len() - 1).into_segmented(), 0.0..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_label)
        .x_labels(rows.len())
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(draw_error)?;
    for (i, (_, value)) in rows.iter().enumerate() {
        if !value.is_finite() {
            continue;
        }
        let style = color(i).filled();
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *value),
            ],
            style,
        );
        bar.set_margin(0, 0, 12, 12);
        chart
            .draw_series(std::iter::once(bar))
            .map_err(draw_error)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{value:.1}"),
                (SegmentValue::CenterOf(i), *value + top * 0.01),
                TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)
}

/// One line per series over the percentiles p50 … max, microseconds on a log scale.
pub fn percentiles(
    path: &Path,
    title: &str,
    series: &[(String, Percentiles)],
) -> Result<(), String> {
    assert!(!series.is_empty(), "a latency chart needs a series");
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let values = series
        .iter()
        .flat_map(|(_, p)| p.points().map(|(_, v)| v))
        .filter(|v| *v > 0);
    let low = values.clone().min().unwrap_or(1).max(1) as f64 / 1.5;
    let high = values.max().unwrap_or(10).max(10) as f64 * 1.5;
    let names = Percentiles::default().points().map(|(name, _)| name);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(0..names.len() - 1, (low..high).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_labels(names.len())
        .x_label_formatter(&|i| names.get(*i).map(|s| s.to_string()).unwrap_or_default())
        .y_desc("latency, µs (log scale)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(draw_error)?;
    for (index, (label, p)) in series.iter().enumerate() {
        let points: Vec<(usize, f64)> = p
            .points()
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (i, (*v).max(1) as f64))
            .collect();
        let color = color(index);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
            .map_err(draw_error)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|point| Circle::new(point, 4, color.filled())),
            )
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_when_the_font_exists() {
        let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        if !font.exists() {
            // No font on this machine: the benchmark refuses --plot with a message instead.
            return;
        }
        load_font(font).expect("DejaVu loads");
        let dir = tempfile::tempdir().expect("temporary directory");
        let bars_path = dir.path().join("bars.png");
        bars(
            &bars_path,
            "throughput",
            "MB/s",
            &[
                ("a".into(), 100.0),
                ("b".into(), 250.5),
                ("c".into(), f64::NAN),
            ],
        )
        .expect("bars");
        let latency_path = dir.path().join("latency.png");
        let p = Percentiles {
            p50_us: 200,
            p90_us: 400,
            p99_us: 900,
            p999_us: 2000,
            max_us: 5000,
            samples: 10,
        };
        percentiles(&latency_path, "latency", &[("x".into(), p)]).expect("percentiles");
        for path in [bars_path, latency_path] {
            let bytes = std::fs::read(&path).expect("written");
            assert_eq!(&bytes[1..4], b"PNG", "{} is a PNG", path.display());
        }
    }
}
