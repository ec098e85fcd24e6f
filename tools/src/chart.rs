// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `nvme-bench-chart`: qemu/bench's results as a picture. Reads the JSON qemu/bench
//! writes (its `median` rows: workload, engine, iops, p99_us) and draws two grouped
//! bar charts, IOPS and p99 latency, one group per workload and one bar colour per
//! engine, with plotters' SVG backend.

mod args;

pub use args::{parse_args, MANUAL, USAGE};
use plotters::prelude::*;
use serde_json::Value;

/// One engine's median figures for one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Workload name (`4k-randread-qd32`).
    pub workload: String,
    /// Engine name (`nvme-perf`, `io_uring`, ...).
    pub engine: String,
    /// Median IOPS.
    pub iops: f64,
    /// Median p99 latency, us; `None` when the engine did not report it.
    pub p99_us: Option<f64>,
}

/// Reads qemu/bench's document. Python writes `NaN` for missing figures, which JSON
/// does not have: those become missing values.
pub fn parse_bench(text: &str) -> Result<(String, Vec<Figure>), String> {
    let cleaned = text
        .replace("-Infinity", "null")
        .replace("Infinity", "null");
    let cleaned = cleaned.replace("NaN", "null");
    let doc: Value =
        serde_json::from_str(&cleaned).map_err(|e| format!("not qemu/bench's JSON: {e}"))?;
    let rows = doc["median"]
        .as_array()
        .ok_or("no 'median' list: not qemu/bench's JSON")?;
    let mut out = Vec::new();
    for r in rows {
        let s = |k: &str| r[k].as_str().map(str::to_string);
        let (Some(workload), Some(engine), Some(iops)) =
            (s("workload"), s("engine"), r["iops"].as_f64())
        else {
            return Err(format!(
                "a median row without workload, engine or iops: {r}"
            ));
        };
        out.push(Figure {
            workload,
            engine,
            iops,
            p99_us: r["p99_us"].as_f64().filter(|v| v.is_finite() && *v > 0.0),
        });
    }
    let title = format!(
        "qemu/bench, {} (median of {} runs)",
        doc["started_utc"].as_str().unwrap_or("?"),
        doc["settings"]["reps"].as_u64().unwrap_or(0)
    );
    Ok((title, out))
}

/// Names in first-seen order.
fn distinct(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A colour per engine, from a palette that tells twenty apart (qemu/bench with
/// `--spdk` has up to a dozen engines).
fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 20] = [
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
        RGBColor(174, 199, 232),
        RGBColor(255, 187, 120),
        RGBColor(152, 223, 138),
        RGBColor(255, 152, 150),
        RGBColor(197, 176, 213),
        RGBColor(196, 156, 148),
        RGBColor(247, 182, 210),
        RGBColor(199, 199, 199),
        RGBColor(219, 219, 141),
        RGBColor(158, 218, 229),
    ];
    P[i % P.len()]
}

/// The picture's width in pixels.
const WIDTH: i32 = 1400;

/// The figure a chart shows, if the engine reported it.
type Pick = fn(&Figure) -> Option<f64>;

/// Draws both charts into `path`.
pub fn write_svg(path: &str, title: &str, figures: &[Figure]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let workloads = distinct(figures.iter().map(|f| f.workload.clone()));
    let engines = distinct(figures.iter().map(|f| f.engine.clone()));
    if workloads.is_empty() {
        return Err("no figures to draw".into());
    }
    let root = SVGBackend::new(path, (WIDTH as u32, 960)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 24))
        .map_err(|e| err(&e))?;
    // One legend for both charts, in rows above them (a new row where the next name
    // would run past the right edge).
    let mut legend = Vec::new();
    let (mut x, mut row) = (100, 0);
    for engine in &engines {
        let w = 40 + 10 * engine.len() as i32;
        if x > 100 && x + w > WIDTH - 20 {
            (x, row) = (100, row + 1);
        }
        legend.push((x, 12 + 24 * row));
        x += w;
    }
    let (strip, charts) = root.split_vertically(40 + 24 * row);
    for (ei, (engine, &(x, y))) in engines.iter().zip(&legend).enumerate() {
        let c = color(ei);
        strip
            .draw(&Rectangle::new([(x, y), (x + 16, y + 16)], c.filled()))
            .map_err(|e| err(&e))?;
        strip
            .draw(&Text::new(engine.as_str(), (x + 22, y), ("sans-serif", 17)))
            .map_err(|e| err(&e))?;
    }
    let (top, bottom) = charts.split_vertically(440);
    let panels: [(&_, &str, &str, Pick); 2] = [
        (
            &top,
            "IOPS per engine and workload (higher is better)",
            "IOPS",
            |f| Some(f.iops),
        ),
        (
            &bottom,
            "p99 latency per engine and workload (lower is better; no bar: not reported)",
            "p99 latency (us)",
            |f| f.p99_us,
        ),
    ];
    for (area, caption, y_desc, value) in panels {
        let top = figures.iter().filter_map(value).fold(0.0, f64::max);
        let y_max = if top > 0.0 { top * 1.1 } else { 1.0 };
        let n = workloads.len() as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..n, 0.0..y_max)
            .map_err(|e| err(&e))?;
        let names = workloads.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("workload")
            // Labels every half workload: the names go on the group centres.
            .x_labels(2 * workloads.len() + 1)
            .y_desc(y_desc)
            .x_label_formatter(&move |x| {
                let halves = (x * 2.0).round() as i64;
                if halves % 2 == 1 {
                    names
                        .get((halves / 2) as usize)
                        .cloned()
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&move |v| {
                if y_max >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()
            .map_err(|e| err(&e))?;
        if top <= 0.0 {
            chart
                .draw_series(std::iter::once(Text::new(
                    "no figures of this kind in the results",
                    (n * 0.4, 0.5),
                    ("sans-serif", 18),
                )))
                .map_err(|e| err(&e))?;
        }
        let width = 0.8 / engines.len() as f64;
        for (ei, engine) in engines.iter().enumerate() {
            let c = color(ei);
            let bars: Vec<Rectangle<(f64, f64)>> = figures
                .iter()
                .filter(|f| &f.engine == engine)
                .filter_map(|f| {
                    let wi = workloads.iter().position(|w| *w == f.workload)? as f64;
                    let x0 = wi + 0.1 + ei as f64 * width;
                    let v = value(f)?;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.9, v)],
                        c.filled(),
                    ))
                })
                .collect();
            chart.draw_series(bars).map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BENCH: &str = r#"{
      "started_utc": "2026-12-01T00:40:19+00:00",
      "settings": {"reps": 3},
      "median": [
        {"workload": "4k-randread-qd1", "engine": "nvme-perf", "iops": 20000.5, "p99_us": 80.1},
        {"workload": "4k-randread-qd1", "engine": "io_uring", "iops": 9000, "p99_us": 150},
        {"workload": "128k-seqread-qd8", "engine": "nvme-perf", "iops": 70000, "p99_us": NaN},
        {"workload": "128k-seqread-qd8", "engine": "io_uring", "iops": 50000, "p99_us": 300}
      ]
    }"#;

    #[test]
    fn bench_json_becomes_a_chart() {
        let (title, figs) = parse_bench(BENCH).unwrap();
        assert_eq!(
            title,
            "qemu/bench, 2026-12-01T00:40:19+00:00 (median of 3 runs)"
        );
        assert_eq!(figs.len(), 4);
        assert_eq!(figs[2].p99_us, None, "NaN is a missing figure");
        assert_eq!(figs[0].iops, 20000.5);
        let dir = std::env::temp_dir().join(format!("nvme-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.svg");
        write_svg(path.to_str().unwrap(), &title, &figs).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "qemu/bench, 2026-12-01",
            "IOPS per engine and workload",
            "p99 latency (us)",
            "4k-randread-qd1",
            "128k-seqread-qd8",
            "nvme-perf",
            "io_uring",
            "workload",
        ] {
            assert!(svg.contains(needle), "{needle} missing");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(parse_bench("{}").unwrap_err().contains("no 'median' list"));
        assert!(parse_bench("{")
            .unwrap_err()
            .contains("not qemu/bench's JSON"));
    }

    /// qemu/bench --spdk's dozen engines: every legend entry inside the picture, and no
    /// two engines sharing a colour.
    #[test]
    fn many_engines_fit_the_legend() {
        let engines = [
            "nvme-perf",
            "nvme-perf-prp",
            "spdk_nvme_perf",
            "fio+spdk",
            "fio+spdk(SPDK)",
            "fio+spdk_bdev-ap",
            "fio+spdk_bdev-ap(SPDK)",
            "fio+spdk_bdev-aa",
            "fio+spdk_bdev-aa(SPDK)",
            "io_uring",
            "io_uring-hipri",
            "libaio",
            "fio+null",
        ];
        let figs: Vec<Figure> = engines
            .iter()
            .map(|e| Figure {
                workload: "4k-randread-qd32".into(),
                engine: e.to_string(),
                iops: 1000.0,
                p99_us: Some(10.0),
            })
            .collect();
        let dir =
            std::env::temp_dir().join(format!("nvme-bench-chart-many-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.svg");
        write_svg(path.to_str().unwrap(), "many", &figs).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for e in engines {
            let at = svg
                .find(&format!(">\n{e}\n<"))
                .unwrap_or_else(|| panic!("{e} missing"));
            let tag = &svg[svg[..at].rfind("<text").unwrap()..at];
            let x: i32 = tag
                .split("x=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // The legend's own estimate of a name's width: 10 px a character.
            assert!(
                x + 10 * e.len() as i32 <= WIDTH,
                "{e}'s legend entry at x={x} runs past {WIDTH}"
            );
        }
        let colors: std::collections::HashSet<_> =
            (0..engines.len()).map(|i| color(i).rgb()).collect();
        assert_eq!(colors.len(), engines.len());
    }
}
