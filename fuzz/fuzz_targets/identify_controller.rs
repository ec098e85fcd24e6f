// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Identify Controller (NVMe base 2.0, 5.17.2.1): any 4 KiB is parsed or refused with
//! an error naming the structure; every derived value is computed without overflow.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::{IdentifyController, IDENTIFY_SIZE};

fuzz_target!(|data: &[u8]| {
    // As given (short buffers must be refused), then as the start of a full page.
    if let Err(e) = IdentifyController::parse(data) {
        assert!(data.len() < IDENTIFY_SIZE);
        assert!(e.to_string().starts_with("identify controller: "), "{e}");
    }
    let mut page = vec![0u8; IDENTIFY_SIZE];
    let n = data.len().min(IDENTIFY_SIZE);
    page[..n].copy_from_slice(&data[..n]);
    let id = IdentifyController::parse(&page).expect("a full page always parses");
    // CAP.MPSMIN is 4 bits: page shifts 12..=27.
    for mps_shift in 12..=27 {
        if let Some(max) = id.max_transfer_bytes(mps_shift) {
            assert!(max >= 1 << mps_shift);
        }
    }
    let _ = (
        id.ana_supported(),
        id.dbbuf_supported(),
        id.write_zeroes_supported(),
        id.dsm_supported(),
    );
    for s in [&id.sn, &id.mn, &id.fr, &id.subnqn] {
        assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)), "{s:?}");
    }
});
