// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-identify: controller and namespace details, like spdk_nvme_identify.
//! See tools/README.md.

use nvme_tools::attach::{self, OpenError};
use nvme_tools::identify::{self, Output};
use nvme_tools::{exit_failure, exit_usage};

const PROG: &str = "nvme-identify";

fn main() {
    nvme_tools::logger::install_stderr_logger();
    identify::MANUAL.serve();
    let opts = match identify::parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}\n\n{}", identify::USAGE, identify::MANUAL.help());
            return;
        }
        Err(e) => exit_usage(PROG, &e),
    };
    if opts.debug_log {
        nvme_tools::logger::enable_debug();
    }
    // Notes go to stderr so that stdout stays the output alone (JSON included).
    for n in &opts.notes {
        eprintln!("{n}");
    }
    let wanted = match attach::resolve(&opts.trids, &mut |s| eprintln!("{s}")) {
        Ok(w) => w,
        Err(e) => exit_failure(PROG, e),
    };
    let targets = match attach::open_pcie(&wanted, &Default::default()) {
        Ok(t) => t,
        Err(OpenError::Usage(e)) => exit_usage(PROG, &e),
        Err(OpenError::Device(e)) => exit_failure(PROG, e),
    };
    // The raw Identify data, read again, for nvme-cli's keys and the hex dumps.
    let raw = if opts.output == Output::NvmeCli || (opts.hex_dump && opts.output == Output::Text) {
        let read: Result<Vec<_>, _> = targets.iter().map(identify::read_raw).collect();
        match read {
            Ok(r) => r,
            Err(e) => exit_failure(PROG, e),
        }
    } else {
        Vec::new()
    };
    let docs: Vec<_> = if opts.output == Output::NvmeCli {
        Vec::new()
    } else {
        targets.iter().map(identify::describe).collect()
    };
    for t in &targets {
        let _ = t.ctrl.shutdown();
    }
    let pretty = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v).expect("JSON values always serialize")
    };
    match opts.output {
        Output::NvmeCli => {
            for (t, r) in targets.iter().zip(&raw) {
                let named = identify::namespaces_named(&opts.trids, t.ctrl.name());
                for doc in identify::nvme_cli_documents(r, named) {
                    println!("{}", pretty(&doc));
                }
            }
        }
        Output::Json => {
            println!("{}", pretty(&serde_json::json!({ "controllers": docs })));
        }
        Output::Text => {
            for (i, (t, d)) in targets.iter().zip(&docs).enumerate() {
                print!("{}", identify::render(d));
                if let Some(r) = raw.get(i) {
                    print!("{}", identify::render_hex(t.ctrl.name(), r));
                }
            }
        }
    }
}
