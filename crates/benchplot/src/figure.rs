//! One figure: lines of medians against the number of Services (log x),
//! drawn to a PNG.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::results::Median;

/// Where Debian's `fonts-dejavu-core` puts its sans-serif face.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A figure that could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The font file could not be read or used.
    #[error("font {path}: {problem} (Debian: apt-get install fonts-dejavu-core, or pass --font)")]
    Font {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// Nothing to draw.
    #[error("{0}: no data")]
    Empty(String),
    /// plotters failed (writing the file, most likely).
    #[error("drawing {path}: {problem}")]
    Draw {
        /// The PNG.
        path: PathBuf,
        /// plotters' error.
        problem: String,
    },
}

/// One line: a variant's medians.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (Services, median), ascending.
    pub points: Vec<(u64, Median)>,
}

/// What to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The caption.
    pub title: String,
    /// The y axis' description, with its unit.
    pub y_label: String,
    /// A logarithmic y axis (for times spanning decades).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

/// Reads `path` (default [`DEFAULT_FONT`]) and makes it the `sans-serif`
/// face of every figure drawn afterwards.
pub fn default_font(path: Option<&Path>) -> Result<(), PlotError> {
    let path = path.unwrap_or(Path::new(DEFAULT_FONT));
    let err = |problem: String| PlotError::Font {
        path: path.to_owned(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    // plotters keeps fonts for the process's life.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| err("not a TrueType font plotters can read".into()))
}

/// The variants the scale benches run, in their colour order: one
/// variant keeps its colour in every figure.
pub const KNOWN_VARIANTS: [&str; 6] = [
    "kube-proxy-iptables",
    "kube-proxy-nftables",
    "kube-proxy-ipvs",
    "rvs-kernel",
    "rvs-userspace",
    "rvs-ebpf",
];

/// The colour of a series: its known variant's, else by its position
/// after those.
fn colour_of(label: &str, i: usize) -> RGBColor {
    let index = KNOWN_VARIANTS
        .iter()
        .position(|v| *v == label)
        .unwrap_or(KNOWN_VARIANTS.len() + i);
    colour(index)
}

/// The colour of line `i`: distinct, readable on white.
pub(crate) fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x17, 0xbe, 0xcf),
    ];
    COLOURS[i % COLOURS.len()]
}

/// Draws `figure` to the PNG at `path` (1000×600). A capped median is
/// drawn at the top of the plot with an open triangle, and the legend
/// says so. Call [`default_font`] first.
pub fn render(figure: &Figure, path: &Path) -> Result<(), PlotError> {
    let values: Vec<f64> = figure
        .series
        .iter()
        .flat_map(|s| &s.points)
        .filter_map(|(_, m)| match m {
            Median::Value(v) => Some(*v),
            Median::Capped => None,
        })
        .collect();
    let xs: Vec<u64> = figure
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|(n, _)| *n))
        .collect();
    let (Some(x_min), Some(x_max)) = (xs.iter().min(), xs.iter().max()) else {
        return Err(PlotError::Empty(figure.title.clone()));
    };
    let any_capped = figure
        .series
        .iter()
        .any(|s| s.points.iter().any(|(_, m)| *m == Median::Capped));
    let y_max_data = values.iter().copied().fold(0.0_f64, f64::max);
    let y_min_data = values.iter().copied().fold(f64::INFINITY, f64::min);
    if !y_max_data.is_finite() || values.is_empty() && !any_capped {
        return Err(PlotError::Empty(figure.title.clone()));
    }
    // Room above the highest point for the capped markers.
    let headroom = if figure.log_y { 3.0 } else { 1.25 };
    let y_top = (y_max_data.max(f64::MIN_POSITIVE) * headroom).max(1e-3);
    let y_cap = if figure.log_y {
        y_top / 1.5
    } else {
        y_top * 0.95
    };
    let y_bottom = if figure.log_y {
        (y_min_data.min(y_max_data) / 2.0).max(1e-3)
    } else {
        0.0
    };
    let x_range = (*x_min as f64 / 1.5)..(*x_max as f64 * 1.5);
    let draw_err = |e: String| PlotError::Draw {
        path: path.to_owned(),
        problem: e,
    };
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
    if figure.log_y {
        let chart = ChartBuilder::on(&root)
            .caption(&figure.title, ("sans-serif", 24))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range.log_scale(), (y_bottom..y_top).log_scale())
            .map_err(|e| draw_err(e.to_string()))?;
        draw_lines(chart, figure, y_cap, &root).map_err(draw_err)?;
    } else {
        let chart = ChartBuilder::on(&root)
            .caption(&figure.title, ("sans-serif", 24))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range.log_scale(), y_bottom..y_top)
            .map_err(|e| draw_err(e.to_string()))?;
        draw_lines(chart, figure, y_cap, &root).map_err(draw_err)?;
    }
    root.present().map_err(|e| draw_err(e.to_string()))
}

/// The mesh, one line per series with its points, capped points as open
/// triangles at `y_cap`, and the legend.
fn draw_lines<'a, Y>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<LogCoord<f64>, Y>>,
    figure: &Figure,
    y_cap: f64,
    _root: &DrawingArea<BitMapBackend<'a>, Shift>,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("Services")
        .y_desc(&figure.y_label)
        .x_label_formatter(&|x| format!("{}", x.round()))
        .y_label_formatter(&|y| {
            if y.abs() >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|e| e.to_string())?;
    let mut capped_legend = false;
    for (i, series) in figure.series.iter().enumerate() {
        let c = colour_of(&series.label, i);
        let measured: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter_map(|(n, m)| match m {
                Median::Value(v) => Some((*n as f64, *v)),
                Median::Capped => None,
            })
            .collect();
        chart
            .draw_series(LineSeries::new(measured.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(&series.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(
                measured
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, c.filled())),
            )
            .map_err(|e| e.to_string())?;
        let capped: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(_, m)| *m == Median::Capped)
            .map(|(n, _)| (*n as f64, y_cap))
            .collect();
        if !capped.is_empty() {
            let drawn = chart
                .draw_series(
                    capped
                        .iter()
                        .map(|&(x, y)| TriangleMarker::new((x, y), 7, c.stroke_width(2))),
                )
                .map_err(|e| e.to_string())?;
            if !capped_legend {
                capped_legend = true;
                drawn
                    .label("> cap (did not finish)")
                    .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, BLACK.stroke_width(2)));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_with_capped_points_becomes_a_png() {
        if !Path::new(DEFAULT_FONT).is_file() {
            // The test command installs the font package; CI must have it.
            assert!(
                std::env::var_os("RVS_REQUIRE_PRIVILEGED").is_none(),
                "{DEFAULT_FONT} missing (fonts-dejavu-core)"
            );
            eprintln!("skipped: {DEFAULT_FONT} missing (fonts-dejavu-core)");
            return;
        }
        default_font(None).unwrap();
        let dir = std::env::temp_dir().join(format!("rvs-benchplot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for log_y in [false, true] {
            let figure = Figure {
                title: "test".into(),
                y_label: "connect p50 (µs)".into(),
                log_y,
                series: vec![
                    Series {
                        label: "a".into(),
                        points: vec![(100, Median::Value(40.0)), (20_000, Median::Value(45.0))],
                    },
                    Series {
                        label: "b".into(),
                        points: vec![(100, Median::Value(50.0)), (20_000, Median::Capped)],
                    },
                ],
            };
            let path = dir.join(format!("f-{log_y}.png"));
            render(&figure, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
            assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
        }
        let empty = Figure {
            title: "none".into(),
            y_label: "y".into(),
            log_y: false,
            series: vec![],
        };
        assert!(matches!(
            render(&empty, &dir.join("e.png")),
            Err(PlotError::Empty(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
