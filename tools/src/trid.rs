// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Transport IDs, as SPDK's tools take them: `-r 'trtype:PCIe traddr:0000:01:00.0 ns:1'`.
//!
//! Fields are separated by whitespace; each is `key:value` (or `key=value`, the form
//! SPDK's fio plugin uses). Keys are case-insensitive. The PCI address may use dots
//! for colons (`0000.01.00.0`), as in fio filenames, and may omit the domain.

use crate::{usage, UsageError};
use std::fmt;

/// A parsed transport ID: one controller and, optionally, one namespace of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    /// PCI address in the full form `DDDD:BB:DD.F`.
    pub traddr: String,
    /// Namespace to use; `None` means every active namespace.
    pub nsid: Option<u32>,
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trtype:PCIe traddr:{}", self.traddr)?;
        if let Some(ns) = self.nsid {
            write!(f, " ns:{ns}")?;
        }
        Ok(())
    }
}

/// Parses a PCI address `DDDD:BB:DD.F` or `BB:DD.F`, with `:` or `.` separators,
/// into its full form (SPDK's configs write them the same way, so the config reader
/// holds the one parser).
pub use nvme_spdk_config::parse_bdf;

impl TransportId {
    /// Parses one transport ID string. The error names the field to fix.
    pub fn parse(s: &str) -> Result<Self, UsageError> {
        let mut trtype = None;
        let mut traddr = None;
        let mut nsid = None;
        if s.trim().is_empty() {
            return Err(usage!(
                "transport ID is empty; give e.g. -r 'trtype:PCIe traddr:0000:01:00.0 ns:1'"
            ));
        }
        for field in s.split_whitespace() {
            let Some((key, value)) = field
                .find([':', '='])
                .map(|i| (&field[..i], &field[i + 1..]))
            else {
                return Err(usage!(
                    "transport ID '{s}': field '{field}' is not key:value (e.g. traddr:0000:01:00.0)"
                ));
            };
            let key_lc = key.to_ascii_lowercase();
            let dup = |seen: bool| {
                if seen {
                    Err(usage!("transport ID '{s}': field '{key}' is given twice"))
                } else {
                    Ok(())
                }
            };
            match key_lc.as_str() {
                "trtype" => {
                    dup(trtype.is_some())?;
                    if !value.eq_ignore_ascii_case("pcie") {
                        return Err(usage!(
                            "transport ID '{s}': trtype '{value}' is not supported; only trtype:PCIe is"
                        ));
                    }
                    trtype = Some(());
                }
                "traddr" => {
                    dup(traddr.is_some())?;
                    traddr = Some(parse_bdf(value).ok_or_else(|| {
                        usage!(
                            "transport ID '{s}': traddr '{value}' is not a PCI address; give DDDD:BB:DD.F (e.g. 0000:01:00.0 or 0000.01.00.0)"
                        )
                    })?);
                }
                "ns" | "nsid" => {
                    dup(nsid.is_some())?;
                    let n = value.parse::<u32>().ok().filter(|n| *n >= 1 && *n != u32::MAX);
                    nsid = Some(n.ok_or_else(|| {
                        usage!("transport ID '{s}': ns '{value}' is not a namespace ID (1 or more)")
                    })?);
                }
                _ => {
                    return Err(usage!(
                        "transport ID '{s}': unknown field '{key}'; known fields are trtype, traddr and ns"
                    ))
                }
            }
        }
        let traddr = traddr.ok_or_else(|| {
            usage!("transport ID '{s}': traddr is missing; add traddr:DDDD:BB:DD.F")
        })?;
        Ok(TransportId { traddr, nsid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spdk_and_fio_forms() {
        let t = TransportId::parse("trtype:PCIe traddr:0000:01:00.0 ns:1").unwrap();
        assert_eq!(t.traddr, "0000:01:00.0");
        assert_eq!(t.nsid, Some(1));
        let t = TransportId::parse("trtype=PCIe traddr=0000.01.00.0 ns=2").unwrap();
        assert_eq!((t.traddr.as_str(), t.nsid), ("0000:01:00.0", Some(2)));
        let t = TransportId::parse("  TRTYPE:pcie   TrAddr:1:0.0  ").unwrap();
        assert_eq!((t.traddr.as_str(), t.nsid), ("0000:01:00.0", None));
        assert_eq!(t.to_string(), "trtype:PCIe traddr:0000:01:00.0");
        let t = TransportId::parse("traddr:00AB:1F:1f.7").unwrap();
        assert_eq!(t.traddr, "00ab:1f:1f.7");
    }

    fn err(s: &str) -> String {
        TransportId::parse(s).unwrap_err().0
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("trtype:TCP traddr:0000:01:00.0").contains("trtype 'TCP'"));
        assert!(err("trtype:PCIe traddr:0000:01:00").contains("traddr '0000:01:00'"));
        assert!(err("trtype:PCIe traddr:0000:01:20.0").contains("traddr"));
        assert!(err("trtype:PCIe traddr:0000:01:00.8").contains("traddr"));
        assert!(err("trtype:PCIe traddr:zz:00.0").contains("traddr"));
        assert!(err("trtype:PCIe traddr:0000:01:00.0 ns:0").contains("ns '0'"));
        assert!(err("trtype:PCIe traddr:0000:01:00.0 ns:x").contains("ns 'x'"));
        assert!(err("trtype:PCIe").contains("traddr is missing"));
        assert!(err("trtype:PCIe traddr:0000:01:00.0 foo:1").contains("unknown field 'foo'"));
        assert!(err("trtype:PCIe 0000:01:00.0").contains("unknown field '0000'"));
        assert!(err("trtype:PCIe traddr").contains("field 'traddr' is not key:value"));
        assert!(err("traddr:01:00.0 traddr:02:00.0").contains("given twice"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn bdf_forms() {
        assert_eq!(parse_bdf("01:00.0").as_deref(), Some("0000:01:00.0"));
        assert_eq!(parse_bdf("0001.02.03.4").as_deref(), Some("0001:02:03.4"));
        assert_eq!(parse_bdf("0000:01:00"), None);
        assert_eq!(parse_bdf("00000:01:00.0"), None);
        assert_eq!(parse_bdf(""), None);
    }
}
