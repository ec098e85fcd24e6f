// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `--plot FILE.svg`: the run as a picture. On top, IOPS each second (warm-up and
//! verify fill marked); below, with `-L`, one band per row: its latency histogram
//! (share of I/Os per bucket, log latency axis) and its CDF with p50 and p99 marked.
//! Drawn with plotters' SVG backend.

use super::engine::NsResult;
use super::opts::PerfOptions;
use super::report::{buckets, device_label};
use super::{Phase, Sample};
use plotters::coord::Shift;
use plotters::prelude::*;

const WIDTH: u32 = 1200;
const TOP_HEIGHT: u32 = 380;
const ROW_HEIGHT: u32 = 360;
const FONT: &str = "sans-serif";
const MEASURED: RGBColor = RGBColor(31, 119, 180);
const WARMUP: RGBColor = RGBColor(255, 127, 14);
const P50: RGBColor = RGBColor(44, 160, 44);
const P99: RGBColor = RGBColor(214, 39, 40);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A short title for the whole picture: the workload as given.
pub fn title(opts: &PerfOptions) -> String {
    let mut t = format!(
        "nvme-perf -q {} -o {} -w {}",
        opts.queue_depth,
        opts.io_size,
        opts.workload.name()
    );
    if opts.workload.is_mixed() {
        t.push_str(&format!(" -M {}", opts.read_percent));
    }
    t.push_str(&format!(" -t {}", opts.time_s));
    if opts.warmup_s > 0 {
        t.push_str(&format!(" -a {}", opts.warmup_s));
    }
    t
}

/// Writes the picture to `path`.
pub fn write_svg(
    path: &str,
    opts: &PerfOptions,
    rows: &[NsResult],
    samples: &[Sample],
) -> Result<(), String> {
    let latency_rows: Vec<&NsResult> = if opts.latency_level >= 1 {
        rows.iter().filter(|r| r.ios > 0).collect()
    } else {
        Vec::new()
    };
    let height = 40 + TOP_HEIGHT + ROW_HEIGHT * latency_rows.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(&title(opts), (FONT, 24)).map_err(err)?;
    let (top, mut rest) = root.split_vertically(TOP_HEIGHT);
    iops_chart(&top, samples)?;
    for r in latency_rows {
        let (band, below) = rest.split_vertically(ROW_HEIGHT);
        rest = below;
        let (left, right) = band.split_horizontally(WIDTH / 2);
        let name = format!("{} from core {}", device_label(r), r.core);
        histogram_chart(&left, r, &name)?;
        cdf_chart(&right, r, &name)?;
    }
    root.present().map_err(err)
}

/// IOPS each second; the measured seconds in blue, warm-up and fill in orange.
fn iops_chart(area: &Area<'_>, samples: &[Sample]) -> Result<(), String> {
    let t_max = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let y_max = samples.iter().map(|s| s.iops).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("IOPS over time (all rows, each second)", (FONT, 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("IOPS")
        .y_label_formatter(&|v| format!("{:.0}", v))
        .draw()
        .map_err(err)?;
    let points = |warm: bool| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter(|s| (s.phase != Phase::Run) == warm)
            .map(|s| (s.at_s, s.iops))
            .collect()
    };
    for (warm, color, label) in [
        (true, WARMUP, "warm-up / verify fill"),
        (false, MEASURED, "measured"),
    ] {
        let pts = points(warm);
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Draws a chart's legend at `pos`, on a white box.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    pos: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// The x range of a row's latency charts: its buckets, padded, never zero.
fn latency_range(r: &NsResult) -> (f64, f64) {
    let b = buckets(r);
    let lo = b
        .first()
        .map_or(1.0, |b| b.lo_us.max(b.hi_us / 2.0))
        .max(0.1);
    let hi = b.last().map_or(10.0, |b| b.hi_us).max(lo * 2.0);
    (lo * 0.8, hi * 1.25)
}

fn percentile_us(r: &NsResult, p: f64) -> f64 {
    r.hist.value_at_percentile(p) as f64 / 1000.0
}

/// Share of I/Os per latency bucket, log latency axis.
fn histogram_chart(area: &Area<'_>, r: &NsResult, name: &str) -> Result<(), String> {
    let (lo, hi) = latency_range(r);
    let b = buckets(r);
    let y_max = b
        .iter()
        .map(|b| b.count as f64 * 100.0 / r.ios as f64)
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("Latency histogram: {name}"), (FONT, 15))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (us, log scale)")
        .y_desc("I/Os in bucket (%)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(b.iter().map(|b| {
            let pct = b.count as f64 * 100.0 / r.ios as f64;
            Rectangle::new(
                [(b.lo_us.max(lo), 0.0), (b.hi_us, pct)],
                MEASURED.mix(0.75).filled(),
            )
        }))
        .map_err(err)?
        .label("I/Os per bucket")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], MEASURED.filled()));
    percentile_marks(&mut chart, r, y_max)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Vertical lines at p50 and p99, with their values in the legend.
fn percentile_marks<X>(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    r: &NsResult,
    y_max: f64,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
{
    for (p, color) in [(50.0, P50), (99.0, P99)] {
        let x = percentile_us(r, p);
        chart
            .draw_series(LineSeries::new(
                vec![(x, 0.0), (x, y_max)],
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("p{p:.0} = {x:.1} us"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    Ok(())
}

/// The share of I/Os at most each latency.
fn cdf_chart(area: &Area<'_>, r: &NsResult, name: &str) -> Result<(), String> {
    let (lo, hi) = latency_range(r);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("Latency CDF: {name}"), (FONT, 15))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (us, log scale)")
        .y_desc("I/Os at most this latency (%)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    let mut pts = vec![(lo, 0.0)];
    for b in buckets(r) {
        pts.push((b.hi_us, b.cumulative));
    }
    chart
        .draw_series(LineSeries::new(pts, MEASURED.stroke_width(2)))
        .map_err(err)?
        .label("cumulative share")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MEASURED.stroke_width(2)));
    percentile_marks(&mut chart, r, 100.0)?;
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::test_opts;
    use hdrhistogram::Histogram;

    fn row(core: usize) -> NsResult {
        let mut hist = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for l in [9_000u64, 10_000, 11_000, 12_000, 20_000, 80_000] {
            hist.record(l).unwrap();
        }
        NsResult {
            device: "0000:01:00.0".into(),
            nsid: 1,
            core,
            ios: 6,
            reads: 6,
            io_size: 4096,
            secs: 1.0,
            lat_sum_ns: 142_000,
            lat_min_ns: 9_000,
            lat_max_ns: 80_000,
            hist,
            errors: 0,
            first_error: None,
            mismatches: 0,
            first_mismatch: None,
            counters: Vec::new(),
            mpath: None,
            pci_id: Some((0x1b36, 0x0010)),
        }
    }

    #[test]
    fn the_picture_has_its_titles_axes_and_legends() {
        let dir = std::env::temp_dir().join(format!("nvme-perf-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.svg");
        let o = test_opts("-q 8 -o 4096 -w randread -t 3 -a 1 -L");
        let samples: Vec<Sample> = (1..=4)
            .map(|s| Sample {
                at_s: s as f64,
                iops: 1000.0 * s as f64,
                phase: if s == 1 { Phase::Warmup } else { Phase::Run },
            })
            .collect();
        write_svg(path.to_str().unwrap(), &o, &[row(0), row(1)], &samples).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "nvme-perf -q 8 -o 4096 -w randread -t 3 -a 1",
            "IOPS over time",
            "time since start (s)",
            "warm-up / verify fill",
            "measured",
            "Latency histogram: PCIE (0000:01:00.0) [1b36:0010] NSID 1 from core 1",
            "Latency CDF: PCIE (0000:01:00.0) [1b36:0010] NSID 1 from core 0",
            "latency (us, log scale)",
            "p99 = ",
        ] {
            assert!(svg.contains(needle), "{needle} missing");
        }
        // Without -L: only the IOPS chart.
        let o = test_opts("-q 8 -o 4096 -w randread -t 3");
        write_svg(path.to_str().unwrap(), &o, &[row(0)], &samples).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("IOPS over time") && !svg.contains("Latency CDF"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
