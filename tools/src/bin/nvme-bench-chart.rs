// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-bench-chart: qemu/bench's JSON results as an SVG chart of IOPS and p99 per
//! engine and workload.
//!
//!     nvme-bench-chart RESULTS.json [OUT.svg]
//!
//! OUT.svg defaults to RESULTS.svg next to the JSON.

use nvme_tools::{chart, exit_failure, exit_usage};

const PROG: &str = "nvme-bench-chart";

fn main() {
    chart::MANUAL.serve();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, output) = match chart::parse_args(&args) {
        Ok(Some(files)) => files,
        Ok(None) => {
            println!("{}\n\n{}", chart::USAGE, chart::MANUAL.help());
            return;
        }
        Err(e) => exit_usage(PROG, &e),
    };
    let text = std::fs::read_to_string(&input)
        .unwrap_or_else(|e| exit_failure(PROG, format!("{input}: {e}")));
    let (title, figures) =
        chart::parse_bench(&text).unwrap_or_else(|e| exit_failure(PROG, format!("{input}: {e}")));
    chart::write_svg(&output, &title, &figures)
        .unwrap_or_else(|e| exit_failure(PROG, format!("{output}: {e}")));
    println!("{output}");
}
