// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf's `--plot` picture without a device: the same run against the driver's
//! software controller (4 KiB random reads from two cores, with a warm-up), drawn
//! to the SVG file given (default `perf-plot.svg`).
//!
//!     cargo run --release -p nvme-tools --example perf_plot -- OUT.svg

use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions};
use nvme_tools::perf::{self, opts, report, Ui};
use std::sync::Arc;

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "perf-plot.svg".into());
    let line = format!("-q 16 -o 4096 -w randread -t 4 -a 1 -c 0x3 -L --plot {out}");
    let cores = nvme_tools::cores::available_cores();
    let cores = if cores.len() >= 2 { cores } else { vec![0, 1] };
    let o = match opts::parse_args(line.split_whitespace(), &cores) {
        Ok(opts::Command::Run(o)) => o,
        other => panic!("{line}: {other:?}"),
    };
    let ns = Arc::new(Namespace::new(1, 1 << 16, 512).expect("a namespace"));
    let sc = SoftController::start(SoftConfig {
        namespaces: vec![ns],
        ..SoftConfig::default()
    });
    let ctrl = Controller::init(sc.clone(), ControllerOptions::default()).expect("init");
    let t = nvme_tools::attach::select(ctrl, None).expect("namespaces");
    let plans = vec![perf::check_target(&o, &t).expect("plan")];
    let jobs = perf::build_jobs(&o, std::slice::from_ref(&t), &plans).expect("jobs");
    let mut note = |s: String| eprintln!("{s}");
    let mut ui = Ui {
        progress: false,
        note: &mut note,
        pin: false,
        samples: Vec::new(),
    };
    let rows = perf::run(&o, std::slice::from_ref(&t), jobs, &mut ui);
    print!("{}", report::text(&o, &rows));
    perf::plot::write_svg(&out, &o, &rows, &ui.samples).expect("the picture");
    eprintln!("wrote {out}");
    t.ctrl.shutdown().expect("shutdown");
    sc.stop();
}
