// SPDX-License-Identifier: Apache-2.0 OR MIT
//! SPDK's JSON config (nvme-spdk-config, read by the fio `spdk_bdev` engine): any text
//! is taken or refused with an error that names the file; what is taken attaches at
//! least one controller at a valid PCI address and has options the block layer accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_spdk_config::parse_bdf;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match nvme_spdk_config::parse(s, "fuzz.json") {
        Ok(cfg) => {
            assert!(!cfg.attach.is_empty());
            for a in &cfg.attach {
                assert_eq!(parse_bdf(&a.traddr).as_deref(), Some(a.traddr.as_str()));
            }
            assert!(cfg.mpath.validate().is_ok());
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.json: "), "{e}"),
    }
});
