// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The parsers of device data (identify, namespace lists and descriptors, log pages,
//! the changed namespace list) over arbitrary bytes, on the stable toolchain: no
//! panic, what parses is consistent, every refusal names the structure. The
//! coverage-guided fuzz targets (fuzz/, `fuzz/run`) check the same properties for much
//! longer; inputs they found that broke a parser are kept here as regression tests.

use nvme_driver::spec::{
    parse_error_log, parse_ns_descriptors, parse_ns_list, AnaLog, ChangedNamespaces,
    IdentifyController, IdentifyNamespace, SmartLog, IDENTIFY_SIZE,
};
use proptest::prelude::*;

/// `prefix` at the start of an otherwise zeroed Identify page.
fn page(prefix: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; IDENTIFY_SIZE];
    let n = prefix.len().min(IDENTIFY_SIZE);
    p[..n].copy_from_slice(&prefix[..n]);
    p
}

/// An ANA log header with `ndesc` descriptors, then `body`.
fn ana_log(ndesc: u16, body: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 16];
    d[8..10].copy_from_slice(&ndesc.to_le_bytes());
    d.extend_from_slice(body);
    d
}

/// One ANA group descriptor: group `grpid`, `nnsid` namespaces listed (the
/// namespace IDs themselves are not appended), state `state`.
fn ana_group(grpid: u32, nnsid: u32, state: u8) -> Vec<u8> {
    let mut g = vec![0u8; 32];
    g[0..4].copy_from_slice(&grpid.to_le_bytes());
    g[4..8].copy_from_slice(&nnsid.to_le_bytes());
    g[16] = state;
    g
}

fn check_identify_namespace(d: &[u8]) {
    match IdentifyNamespace::parse(d) {
        Ok(ns) => {
            assert!(ns.format_index() < ns.lbaf.len());
            assert!((512..=65536).contains(&ns.block_size()));
        }
        Err(e) => assert!(e.to_string().starts_with("identify namespace: "), "{e}"),
    }
}

fn check_ana(d: &[u8]) {
    match AnaLog::parse(d) {
        Ok(log) => {
            let bytes: usize = log.groups.iter().map(|g| 32 + 4 * g.nsids.len()).sum();
            assert!(16 + bytes <= d.len());
        }
        Err(e) => assert!(e.to_string().starts_with("ANA log: "), "{e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn identify_controller_any_bytes(d in proptest::collection::vec(any::<u8>(), 0..1100)) {
        prop_assert!(IdentifyController::parse(&d).is_err());
        let id = IdentifyController::parse(&page(&d)).unwrap();
        for mps_shift in 12..=27 {
            let _ = id.max_transfer_bytes(mps_shift);
        }
    }

    #[test]
    fn identify_namespace_any_bytes(d in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_identify_namespace(&d);
        check_identify_namespace(&page(&d));
    }

    #[test]
    fn namespace_list_any_bytes(d in proptest::collection::vec(any::<u32>(), 0..64)) {
        let bytes: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
        if let Ok(ids) = parse_ns_list(&page(&bytes)) {
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]) && !ids.contains(&0));
        }
    }

    #[test]
    fn changed_namespace_list_any_bytes(d in proptest::collection::vec(any::<u32>(), 0..64)) {
        // IDENTIFY_SIZE is also the Changed Namespace List's size (1024 NSIDs).
        let bytes: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
        match ChangedNamespaces::parse(&page(&bytes)) {
            Ok(ChangedNamespaces::Listed(ids)) => prop_assert!(
                ids.windows(2).all(|w| w[0] < w[1]) && !ids.contains(&0) && !ids.contains(&u32::MAX)
            ),
            Ok(ChangedNamespaces::All) => prop_assert_eq!(d.first(), Some(&u32::MAX)),
            Err(e) => prop_assert!(e.to_string().starts_with("changed namespace list: ")),
        }
    }

    #[test]
    fn namespace_descriptors_any_bytes(d in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_ns_descriptors(&page(&d));
    }

    #[test]
    fn log_pages_any_bytes(d in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = SmartLog::parse(&d);
        let _ = parse_error_log(&d);
        check_ana(&d);
    }

    /// The counts are what a device gets wrong: descriptors and namespaces counted
    /// past the end, in a buffer of any length.
    #[test]
    fn ana_log_any_counts(
        ndesc in any::<u16>(),
        groups in proptest::collection::vec((any::<u32>(), 0u32..40, any::<u8>()), 0..6),
        tail in 0usize..200,
    ) {
        let mut body = Vec::new();
        for (grpid, nnsid, state) in groups {
            body.extend(ana_group(grpid, nnsid, state));
            body.extend((0..nnsid).flat_map(|n| (n + 1).to_le_bytes()));
        }
        body.truncate(body.len().saturating_sub(tail));
        check_ana(&ana_log(ndesc, &body));
    }
}

/// Namespace counts that would overflow a 32-bit length computation are refused,
/// with the count and the buffer size in the message.
#[test]
fn ana_log_huge_namespace_count_is_refused() {
    for nnsid in [u32::MAX, u32::MAX / 4 + 1, 1 << 20, (1 << 20) + 1] {
        let e = AnaLog::parse(&ana_log(1, &ana_group(1, nnsid, 1))).unwrap_err();
        assert!(
            e.detail.contains(&format!("{nnsid} namespaces")),
            "{nnsid}: {e}"
        );
    }
    let e = AnaLog::parse(&ana_log(u16::MAX, &[])).unwrap_err();
    assert!(e.detail.contains("descriptor 0 of 65535"), "{e}");
}
