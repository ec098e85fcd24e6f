// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Namespace Identification Descriptor list (NVMe base 2.0, 5.17.2.3): parsed or
//! refused with an error naming the list; no descriptor is read past the page.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::{parse_ns_descriptors, IDENTIFY_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut page = vec![0u8; IDENTIFY_SIZE];
    let n = data.len().min(IDENTIFY_SIZE);
    page[..n].copy_from_slice(&data[..n]);
    for d in [data, &page[..]] {
        if let Err(e) = parse_ns_descriptors(d) {
            assert!(
                e.to_string()
                    .starts_with("namespace identification descriptors: "),
                "{e}"
            );
        }
    }
});
