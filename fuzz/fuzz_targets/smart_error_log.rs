// SPDX-License-Identifier: Apache-2.0 OR MIT
//! SMART / Health (NVMe base 2.0, 5.16.1.3) and Error Information (5.16.1.2) log
//! pages, and async event words (5.2): parsed or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::spec::{
    parse_error_log, AsyncEvent, SmartLog, ERROR_LOG_ENTRY_SIZE, SMART_LOG_SIZE,
};

fuzz_target!(|data: &[u8]| {
    match SmartLog::parse(data) {
        Ok(_) => assert!(data.len() >= SMART_LOG_SIZE),
        Err(e) => assert!(e.to_string().starts_with("SMART log: "), "{e}"),
    }
    let entries = parse_error_log(data);
    assert!(entries.len() <= data.len() / ERROR_LOG_ENTRY_SIZE);
    assert!(entries.iter().all(|e| e.error_count != 0));
    for w in data.chunks_exact(4) {
        let dw0 = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let ev = AsyncEvent::from_dw0(dw0);
        assert_eq!(AsyncEvent::from_dw0(ev.to_dw0()), ev);
    }
});
