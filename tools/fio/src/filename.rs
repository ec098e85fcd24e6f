// SPDX-License-Identifier: GPL-2.0-only
//! The `spdk` engine's filenames: SPDK transport IDs, `trtype=PCIe traddr=0000.01.00.0
//! ns=1`. fio splits `filename=` on `:`, so the PCI address is written with dots;
//! `key:value` fields are accepted too (escaped as `\:` in a job file). Without `ns`,
//! the controller's first active namespace.

use nvme_tools::trid::TransportId;

/// Parses one fio filename; the error names the field to fix.
pub fn parse(filename: &str) -> Result<TransportId, String> {
    TransportId::parse(filename).map_err(|e| {
        format!(
            "spdk: filename '{filename}': {}; the form is 'trtype=PCIe traddr=0000.01.00.0 ns=1'",
            e.0.strip_prefix(&format!("transport ID '{filename}': "))
                .unwrap_or(&e.0)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_forms() {
        let t = parse("trtype=PCIe traddr=0000.01.00.0 ns=1").unwrap();
        assert_eq!((t.traddr.as_str(), t.nsid), ("0000:01:00.0", Some(1)));
        let t = parse("trtype=PCIe traddr=0000.02.00.0").unwrap();
        assert_eq!((t.traddr.as_str(), t.nsid), ("0000:02:00.0", None));
        let t = parse("trtype:PCIe traddr:0000:01:00.0 ns:2").unwrap();
        assert_eq!((t.traddr.as_str(), t.nsid), ("0000:01:00.0", Some(2)));
    }

    #[test]
    fn errors_name_the_field_and_the_form() {
        let e = parse("trtype=PCIe traddr=0000.01.00 ns=1").unwrap_err();
        assert!(e.contains("traddr '0000.01.00'"), "{e}");
        assert!(e.contains("the form is 'trtype=PCIe"), "{e}");
        let e = parse("trtype=PCIe traddr=0000.01.00.0 ns=zero").unwrap_err();
        assert!(e.contains("ns 'zero'"), "{e}");
        let e = parse("trtype=RDMA traddr=0000.01.00.0").unwrap_err();
        assert!(e.contains("trtype 'RDMA'"), "{e}");
        let e = parse("trtype=PCIe ns=1").unwrap_err();
        assert!(e.contains("traddr is missing"), "{e}");
    }
}
