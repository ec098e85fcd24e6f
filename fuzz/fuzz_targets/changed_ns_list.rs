// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Changed Namespace List log page (NVMe base 2.0, 5.16.1.5): parsed into increasing
//! NSIDs (or "all", for FFFFFFFFh first) or refused with an error naming the page.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::{ChangedNamespaces, CHANGED_NS_LIST_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut page = vec![0u8; CHANGED_NS_LIST_SIZE];
    let n = data.len().min(CHANGED_NS_LIST_SIZE);
    page[..n].copy_from_slice(&data[..n]);
    for d in [data, &page[..]] {
        match ChangedNamespaces::parse(d) {
            Ok(ChangedNamespaces::Listed(ids)) => {
                assert!(ids.len() <= 1024);
                assert!(ids.iter().all(|&id| id != 0 && id != u32::MAX));
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            }
            Ok(ChangedNamespaces::All) => assert_eq!(&d[..4], &[0xff; 4]),
            Err(e) => assert!(e.to_string().starts_with("changed namespace list: "), "{e}"),
        }
    }
});
