//! Figures over time: panels of lines against seconds (linear x), for the
//! rebalancing bench's requests per real server before and after a
//! scale-up, and the reading of its CSV.
//!
//! The CSV is `dataplane,http,policy,round,from_s,rs0,rs1,rs2,rs3`: one
//! row per window of the clients' time, the requests each real server
//! answered in it.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::figure::{PlotError, colour};

/// One panel: its caption and its lines, (x, y) ascending in x.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The caption.
    pub title: String,
    /// (legend, points).
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// What to draw: panels in a grid of `cols` columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// The figure's caption.
    pub title: String,
    /// The y axis' description, with its unit.
    pub y_label: String,
    /// A vertical marker (the scale-up), in seconds.
    pub marker: Option<f64>,
    /// Columns of the grid.
    pub cols: usize,
    /// The panels, row by row.
    pub panels: Vec<Panel>,
}

/// Draws `timeline` to the PNG at `path` (600×360 a panel). Call
/// [`crate::default_font`] first.
pub fn render_timeline(timeline: &Timeline, path: &Path) -> Result<(), PlotError> {
    let draw_err = |e: String| PlotError::Draw {
        path: path.to_owned(),
        problem: e,
    };
    let points = || {
        timeline
            .panels
            .iter()
            .flat_map(|p| &p.lines)
            .flat_map(|(_, pts)| pts.iter().copied())
    };
    let x_max = points().map(|(x, _)| x).fold(0.0_f64, f64::max);
    let y_max = points().map(|(_, y)| y).fold(0.0_f64, f64::max);
    if timeline.panels.is_empty() || x_max <= 0.0 {
        return Err(PlotError::Empty(timeline.title.clone()));
    }
    let cols = timeline.cols.max(1);
    let rows = timeline.panels.len().div_ceil(cols);
    let width = u32::try_from(600 * cols).unwrap_or(u32::MAX);
    let height = u32::try_from(360 * rows + 50).unwrap_or(u32::MAX);
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
    let root = root
        .titled(&timeline.title, ("sans-serif", 24))
        .map_err(|e| draw_err(e.to_string()))?;
    // Head room above the lines for the legend.
    let y_top = (y_max * 1.5).max(1.0);
    for (area, panel) in root.split_evenly((rows, cols)).iter().zip(&timeline.panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_top)
            .map_err(|e| draw_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(&timeline.y_label)
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        if let Some(x) = timeline.marker {
            chart
                .draw_series(LineSeries::new(
                    [(x, 0.0), (x, y_top)],
                    BLACK.mix(0.7).stroke_width(2),
                ))
                .map_err(|e| draw_err(e.to_string()))?
                .label(format!("scale-up ({x} s)"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.7).stroke_width(2))
                });
        }
        for (i, (label, pts)) in panel.lines.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| draw_err(e.to_string()))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
    }
    root.present().map_err(|e| draw_err(e.to_string()))
}

/// One window of the rebalancing bench's CSV.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// `userspace` or `ebpf`.
    pub dataplane: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub http: String,
    /// `idle` or `off`.
    pub policy: String,
    /// The round.
    pub round: u32,
    /// The window's start, seconds after the clients started.
    pub from_s: f64,
    /// Requests answered by each real server in it.
    pub per_server: Vec<u32>,
}

/// Reads the rebalancing bench's CSV (a header line, then windows);
/// `Err` names the line at fault.
pub fn parse_windows(text: &str) -> Result<Vec<Window>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let bad = || format!("line {}: {line:?}", i + 1);
        if f.len() < 6 {
            return Err(bad());
        }
        out.push(Window {
            dataplane: f[0].to_owned(),
            http: f[1].to_owned(),
            policy: f[2].to_owned(),
            round: f[3].parse().map_err(|_| bad())?,
            from_s: f[4].parse().map_err(|_| bad())?,
            per_server: f[5..]
                .iter()
                .map(|v| v.parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(out)
}

/// Each real server's share of the requests (%) per window, for one
/// dataplane, protocol, policy and round, each at the middle of its
/// window (windows are as long as the step between their starts).
pub fn shares(
    windows: &[Window],
    dataplane: &str,
    http: &str,
    policy: &str,
    round: u32,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut lines: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    let these: Vec<&Window> = windows
        .iter()
        .filter(|w| {
            w.dataplane == dataplane && w.http == http && w.policy == policy && w.round == round
        })
        .collect();
    let half = these
        .windows(2)
        .map(|p| p[1].from_s - p[0].from_s)
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min);
    let half = if half.is_finite() { half / 2.0 } else { 0.0 };
    for w in these {
        let total: u32 = w.per_server.iter().sum();
        if total == 0 {
            continue;
        }
        for (i, &n) in w.per_server.iter().enumerate() {
            lines
                .entry(i)
                .or_default()
                .push((w.from_s + half, 100.0 * f64::from(n) / f64::from(total)));
        }
    }
    lines
        .into_iter()
        .map(|(i, pts)| (format!("real server {}", i + 1), pts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_read_and_turned_into_shares() {
        let text = "dataplane,http,policy,round,from_s,rs0,rs1,rs2,rs3\n\
                    ebpf,HTTP/1.1,idle,1,0,50,50,0,0\n\
                    ebpf,HTTP/1.1,idle,1,2.5,30,30,20,20\n\
                    ebpf,HTTP/1.1,off,1,0,50,50,0,0\n";
        let w = parse_windows(text).unwrap();
        assert_eq!(w.len(), 3);
        let s = shares(&w, "ebpf", "HTTP/1.1", "idle", 1);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].1, vec![(1.25, 50.0), (3.75, 30.0)]);
        assert_eq!(s[3].1, vec![(1.25, 0.0), (3.75, 20.0)]);
        assert!(parse_windows("h\nebpf,x\n").is_err());
    }
}
