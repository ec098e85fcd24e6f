// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Asymmetric Namespace Access log (NVMe base 2.0, 5.16.1.13): the group count and
//! each group's namespace count come from the device; whatever they say, the parser
//! reads only the buffer it was given and refuses with an error naming the log.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::AnaLog;

fuzz_target!(|data: &[u8]| {
    match AnaLog::parse(data) {
        Ok(log) => {
            // Every group took 32 bytes and 4 per NSID, after the 16-byte header.
            let bytes: usize = log.groups.iter().map(|g| 32 + 4 * g.nsids.len()).sum();
            assert!(16 + bytes <= data.len());
            assert_eq!(
                log.groups.len(),
                u16::from_le_bytes([data[8], data[9]]) as usize
            );
            for g in &log.groups {
                assert!(g.state.to_u8() & 0xf != 0);
            }
        }
        Err(e) => {
            assert!(e.to_string().starts_with("ANA log: "), "{e}");
            assert!(!e.detail.is_empty());
        }
    }
});
