//! nvme-bench-chart: qemu/bench's JSON results as an SVG chart of IOPS and p99 per
//! engine and workload.
//!
//!     nvme-bench-chart RESULTS.json [OUT.svg]
//!
//! OUT.svg defaults to RESULTS.svg next to the JSON.

use nvme_tools::{chart, exit_failure, exit_usage, usage};

const PROG: &str = "nvme-bench-chart";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: {PROG} RESULTS.json [OUT.svg]\n\nDraws qemu/bench's median IOPS and p99 latency per engine and workload.");
        return;
    }
    let (input, output) = match args.as_slice() {
        [i] => (
            i.clone(),
            std::path::Path::new(i)
                .with_extension("svg")
                .display()
                .to_string(),
        ),
        [i, o] if o.ends_with(".svg") => (i.clone(), o.clone()),
        [_, o] => exit_usage(PROG, &usage!("{o}: the chart is SVG; name it OUT.svg")),
        _ => exit_usage(
            PROG,
            &usage!("give the results JSON, and optionally OUT.svg"),
        ),
    };
    let text = std::fs::read_to_string(&input)
        .unwrap_or_else(|e| exit_failure(PROG, format!("{input}: {e}")));
    let (title, figures) =
        chart::parse_bench(&text).unwrap_or_else(|e| exit_failure(PROG, format!("{input}: {e}")));
    chart::write_svg(&output, &title, &figures)
        .unwrap_or_else(|e| exit_failure(PROG, format!("{output}: {e}")));
    println!("{output}");
}
