// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-setup: vfio-pci binding, huge pages and status; takes SPDK's setup.sh verbs
//! and variables. See tools/README.md.

use nvme_tools::setup::{self, Command, Sys};
use nvme_tools::{exit_failure, exit_usage};

const PROG: &str = "nvme-setup";

fn main() {
    nvme_tools::logger::install_stderr_logger();
    setup::MANUAL.serve();
    let env = |name: &str| std::env::var(name).ok();
    let cmd = match setup::parse_args(std::env::args().skip(1), &env) {
        Ok(c) => c,
        Err(e) => exit_usage(PROG, &e),
    };
    let sys = Sys::from_env();
    let result = match cmd {
        Command::Help => {
            println!("{}\n\n{}", setup::USAGE, setup::MANUAL.help());
            return;
        }
        Command::Status { json: false } => {
            print!("{}", sys.status());
            return;
        }
        Command::Status { json: true } => {
            println!("{:#}", sys.status_json());
            return;
        }
        Command::Config(s) => sys.config(&s).map(|l| l.join("\n")),
        Command::Reset(s) => sys.reset(&s).map(|l| l.join("\n")),
        Command::Cleanup(s) => sys.cleanup(&s).map(|l| l.join("\n")),
        Command::Bind(b) => sys.bind(&b).map(|l| l.join("\n")),
        Command::Unbind(b) => sys.unbind(&b).map(|l| l.join("\n")),
        Command::KeepVfio(on) => sys.keep_vfio(on).map(|l| l.join("\n")),
        Command::Hugepages(n) => sys.set_hugepages(n),
    };
    match result {
        Ok(out) => println!("{out}"),
        Err(e) => exit_failure(PROG, e),
    }
}
