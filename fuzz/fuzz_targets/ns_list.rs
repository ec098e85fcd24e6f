// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Active Namespace ID list (NVMe base 2.0, 5.17.2.2): parsed into increasing
//! non-zero NSIDs or refused with an error naming the list.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::{parse_ns_list, IDENTIFY_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut page = vec![0u8; IDENTIFY_SIZE];
    let n = data.len().min(IDENTIFY_SIZE);
    page[..n].copy_from_slice(&data[..n]);
    for d in [data, &page[..]] {
        match parse_ns_list(d) {
            Ok(ids) => {
                assert!(ids.len() <= 1024);
                assert!(ids.iter().all(|&id| id != 0));
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            }
            Err(e) => assert!(e.to_string().starts_with("active namespace list: "), "{e}"),
        }
    }
});
