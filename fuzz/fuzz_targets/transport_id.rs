// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Transport IDs as users type them: nvme-perf's `-r 'trtype:PCIe traddr:... ns:1'`
//! and the fio engine's filename `trtype=PCIe traddr=0000.01.00.0 ns=1`. Parsed or
//! refused with an error that names the transport ID; what parses prints back to a
//! string that parses to the same thing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_tools::trid::{parse_bdf, TransportId};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match TransportId::parse(s) {
        Ok(t) => {
            assert_eq!(TransportId::parse(&t.to_string()).as_ref(), Ok(&t));
            assert_eq!(parse_bdf(&t.traddr).as_deref(), Some(t.traddr.as_str()));
            assert!(t.nsid != Some(0));
        }
        Err(e) => assert!(e.0.starts_with("transport ID "), "{e}"),
    }
    match nvme_fio::filename::parse(s) {
        Ok(t) => assert_eq!(TransportId::parse(s).as_ref(), Ok(&t)),
        Err(e) => {
            assert!(e.starts_with("spdk: filename '"), "{e}");
            assert!(e.contains("the form is"), "{e}");
        }
    }
    if let Some(full) = parse_bdf(s) {
        assert_eq!(parse_bdf(&full).as_ref(), Some(&full));
    }
});
