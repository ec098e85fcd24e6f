// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf's command line: any argv (arguments split at NUL bytes) is parsed or
//! refused with a non-empty message; nothing panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_tools::perf::opts::{parse_args, Command};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<&str> = s.split('\0').collect();
    match parse_args(args, &[0, 1, 2, 3]) {
        Ok(Command::Run(opts)) => {
            let _ = opts.notes();
        }
        Ok(Command::Help) => {}
        Err(e) => assert!(!e.0.trim().is_empty()),
    }
});
