//! nvme-identify: controller and namespace details, like spdk_nvme_identify.
//! See tools/README.md.

use nvme_tools::attach::{self, OpenError};
use nvme_tools::identify;
use nvme_tools::{exit_failure, exit_usage};

const PROG: &str = "nvme-identify";

fn main() {
    nvme_tools::logger::install_stderr_logger();
    let opts = match identify::parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}\n\n{}", identify::USAGE, identify::HELP);
            return;
        }
        Err(e) => exit_usage(PROG, &e),
    };
    let wanted = match attach::resolve(&opts.trids, &mut |s| eprintln!("{s}")) {
        Ok(w) => w,
        Err(e) => exit_failure(PROG, e),
    };
    let targets = match attach::open_pcie(&wanted, &Default::default()) {
        Ok(t) => t,
        Err(OpenError::Usage(e)) => exit_usage(PROG, &e),
        Err(OpenError::Device(e)) => exit_failure(PROG, e),
    };
    let docs: Vec<_> = targets.iter().map(identify::describe).collect();
    for t in &targets {
        let _ = t.ctrl.shutdown();
    }
    if opts.json {
        let doc = serde_json::json!({ "controllers": docs });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values always serialize")
        );
    } else {
        for d in &docs {
            print!("{}", identify::render(d));
        }
    }
}
