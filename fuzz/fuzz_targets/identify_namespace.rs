// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Identify Namespace (NVM command set 1.0, 4.1.5.1): any 4 KiB is parsed or refused
//! with an error naming the structure; what parses has a usable block size and an
//! LBA format that exists.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::{IdentifyNamespace, IDENTIFY_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut page = vec![0u8; IDENTIFY_SIZE];
    let n = data.len().min(IDENTIFY_SIZE);
    page[..n].copy_from_slice(&data[..n]);
    for d in [data, &page[..]] {
        match IdentifyNamespace::parse(d) {
            Ok(ns) => {
                assert!(ns.format_index() < ns.lbaf.len());
                assert_eq!(ns.lbaf.len(), ns.nlbaf as usize + 1);
                assert!((512..=65536).contains(&ns.block_size()));
                let _ = ns.metadata_size();
            }
            Err(e) => {
                assert!(e.to_string().starts_with("identify namespace: "), "{e}");
                assert!(!e.detail.is_empty());
            }
        }
    }
});
