//! The PNG plot of BENCHMARKS.md: event-storm and churn p99 (Consul, which
//! holds every instance), cold-resync time and the floor against
//! cluster size, one line per latency profile, from several `--json` reports.
//!
//! Text needs a TrueType font: DejaVu Sans is read from the usual Debian
//! path (package `fonts-dejavu-core`) or `--font`. Without one the plot is
//! drawn without text and the caller is told.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::bench::report::Report;

/// Where Debian's `fonts-dejavu-core` puts DejaVu Sans.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no report to plot")]
    Empty,
    #[error("drawing {path}: {message}")]
    Draw { path: String, message: String },
}

/// One line of the plot: (instances, milliseconds) points.
pub type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// Groups reports into lines: `"<backend> p99 (<latency>)"` and
/// `"cold resync (<latency>)"`, points sorted by cluster size. Pure.
pub fn series(reports: &[Report]) -> Series {
    let mut out: Series = BTreeMap::new();
    for r in reports {
        let size = (r.scenario.apps * r.scenario.instances) as f64;
        let profile =
            if r.scenario.latency.is_empty() { "no latency".to_owned() } else { r.scenario.latency.join(" ") };
        // Consul holds every instance: its line stands for the storm (the
        // table has the other backends and the p50s).
        for (backend, s) in r.storm.latency.iter().filter(|(b, _)| b.as_str() == "consul") {
            if s.count > 0 && r.storm.phase.converged {
                out.entry(format!("storm {backend} p99 ({profile})")).or_default().push((size, s.p99_ms));
            }
        }
        for (backend, s) in &r.churn.latency {
            if s.count > 0 && r.churn.phase.converged && backend == "consul" {
                out.entry(format!("churn {backend} p99 ({profile})")).or_default().push((size, s.p99_ms));
            }
        }
        if r.cold_resync.converged {
            out.entry(format!("cold resync ({profile})")).or_default().push((size, r.cold_resync.seconds * 1000.0));
        }
        if let Some(f) = &r.floor {
            out.entry(format!("floor, all writes ({profile})")).or_default().push((size, f.best_s * 1000.0));
        }
    }
    for points in out.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Registers the font under `sans-serif`; false when it cannot be read.
fn load_font(font: &Path) -> bool {
    let Ok(bytes) = std::fs::read(font) else {
        return false;
    };
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
}

/// Draws `reports` into `out` (PNG). Returns whether text could be drawn.
pub fn draw(reports: &[Report], out: &Path, font: &Path) -> Result<bool, PlotError> {
    let lines = series(reports);
    if lines.is_empty() {
        return Err(PlotError::Empty);
    }
    let text = load_font(font);
    let err = |e: &dyn std::fmt::Display| PlotError::Draw { path: out.display().to_string(), message: e.to_string() };
    let x_max = lines.values().flatten().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = lines.values().flatten().map(|p| p.1).fold(1.0, f64::max);
    let y_min = lines.values().flatten().map(|p| p.1).fold(f64::MAX, f64::min).max(0.1) / 2.0;
    let root = BitMapBackend::new(out, (1100, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20).x_label_area_size(50).y_label_area_size(80);
    if text {
        builder.caption("Switchboard: latency and cold resync against cluster size", ("sans-serif", 24));
    }
    let mut chart = builder.build_cartesian_2d(0f64..x_max, (y_min..y_max * 2.0).log_scale()).map_err(|e| err(&e))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("instances")
            .y_desc("milliseconds (log)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
    } else {
        chart.configure_mesh().disable_x_mesh().disable_y_mesh().draw().map_err(|e| err(&e))?;
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = ShapeStyle { color, filled: true, stroke_width: 2 };
        let drawn = chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1.max(y_min))), style))
            .map_err(|e| err(&e))?;
        if text {
            drawn.label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart.draw_series(points.iter().map(|p| Circle::new((p.0, p.1.max(y_min)), 3, style))).map_err(|e| err(&e))?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Phase, ScenarioInfo};
    use crate::bench::stats::Summary;

    fn report(instances: usize, latency: &[&str], p99: f64) -> Report {
        let mut r = Report {
            scenario: ScenarioInfo {
                apps: 10,
                instances,
                latency: latency.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        };
        r.storm.phase = Phase { ran: true, converged: true, ..Default::default() };
        r.storm.latency.insert("consul".into(), Summary { count: 1, p50_ms: p99 / 2.0, p99_ms: p99, max_ms: p99 });
        r.cold_resync = Phase { ran: true, converged: true, seconds: 1.0, ..Default::default() };
        r
    }

    #[test]
    fn lines_per_profile_sorted_by_size() {
        let s = series(&[report(100, &[], 9.0), report(10, &[], 3.0), report(10, &["consul=3600us"], 5.0)]);
        assert_eq!(s["storm consul p99 (no latency)"], vec![(100.0, 3.0), (1000.0, 9.0)]);
        assert_eq!(s["storm consul p99 (consul=3600us)"], vec![(100.0, 5.0)]);
        assert_eq!(s["cold resync (no latency)"], vec![(100.0, 1000.0), (1000.0, 1000.0)]);
    }

    #[test]
    fn draws_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        draw(&[report(100, &[], 9.0), report(10, &[], 3.0)], &out, Path::new(DEFAULT_FONT)).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(matches!(draw(&[], &out, Path::new(DEFAULT_FONT)), Err(PlotError::Empty)));
    }
}
