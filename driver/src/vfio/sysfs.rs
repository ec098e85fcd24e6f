// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Where sysfs and `/dev` say things about PCI devices: the device's folder, its
//! driver, its IOMMU group and the group's members, the NVMe controllers present, the
//! VFIO nodes. Every path hangs off a [`Host`] root, so tests run the checks
//! (`preflight.rs`) and the hot-plug scan (`hotplug.rs`) against a fake tree in a
//! temporary folder (`fake_sysfs.rs`).

use super::PciNvme;
use std::path::{Path, PathBuf};

/// PCI class code of an NVMe controller: mass storage, non-volatile memory, NVMe.
pub(crate) const NVME_CLASS: u32 = 0x01_08_02;

/// Where sysfs and the device nodes live.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// sysfs, normally `/sys`.
    pub(crate) sys: PathBuf,
    /// device nodes, normally `/dev`.
    pub(crate) dev: PathBuf,
}

/// Turns `01:00.0` or `0000:01:00.0` (any case) into `0000:01:00.0`.
pub(crate) fn normalize_bdf(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let full = match s.len() {
        7 => format!("0000:{s}"),
        12 => s,
        _ => return None,
    };
    let b = full.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    let ok = hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11]);
    ok.then_some(full)
}

fn link_basename(p: &Path) -> Option<String> {
    let target = std::fs::read_link(p).ok()?;
    Some(target.file_name()?.to_str()?.to_string())
}

fn read_hex(p: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

impl Host {
    /// The real machine.
    pub(crate) fn real() -> Self {
        Host {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }

    /// The device's sysfs folder, also the path VFIO is given.
    pub(crate) fn pci_dev(&self, bdf: &str) -> PathBuf {
        self.sys.join("bus/pci/devices").join(bdf)
    }

    /// The driver bound to the device, if any.
    pub(crate) fn driver(&self, bdf: &str) -> Option<String> {
        link_basename(&self.pci_dev(bdf).join("driver"))
    }

    /// The device's IOMMU group, if the kernel has an IOMMU for it.
    pub(crate) fn iommu_group(&self, bdf: &str) -> Option<u32> {
        link_basename(&self.pci_dev(bdf).join("iommu_group"))?
            .parse()
            .ok()
    }

    pub(crate) fn attr(&self, bdf: &str, name: &str) -> Option<u32> {
        read_hex(&self.pci_dev(bdf).join(name))
    }

    /// `SYS/kernel/iommu_groups/GROUP`.
    pub(crate) fn group_dir(&self, group: u32) -> PathBuf {
        self.sys.join("kernel/iommu_groups").join(group.to_string())
    }

    /// The devices in IOMMU group `group`, sorted.
    pub(crate) fn group_devices(&self, group: u32) -> Vec<String> {
        let dir = self.group_dir(group).join("devices");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every NVMe controller on the PCI bus, sorted by address.
    pub(crate) fn list_nvme(&self) -> Vec<PciNvme> {
        let Ok(rd) = std::fs::read_dir(self.sys.join("bus/pci/devices")) else {
            return Vec::new();
        };
        let mut v: Vec<PciNvme> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|bdf| self.attr(bdf, "class") == Some(NVME_CLASS))
            .map(|bdf| PciNvme {
                driver: self.driver(&bdf),
                iommu_group: self.iommu_group(&bdf),
                vendor: self.attr(&bdf, "vendor").unwrap_or(0xffff) as u16,
                device: self.attr(&bdf, "device").unwrap_or(0xffff) as u16,
                bdf,
            })
            .collect();
        v.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        v
    }

    pub(crate) fn describe_nvme(&self) -> String {
        let all = self.list_nvme();
        if all.is_empty() {
            return "no NVMe controller is present on this machine's PCI bus".into();
        }
        let list: Vec<String> = all.iter().map(PciNvme::to_string).collect();
        format!("NVMe controllers present: {}", list.join(", "))
    }

    /// `/dev/vfio/vfio`, the container node.
    pub(crate) fn container_node(&self) -> PathBuf {
        self.dev.join("vfio/vfio")
    }

    /// `/dev/vfio/N`, the group node.
    pub(crate) fn group_node(&self, group: u32) -> PathBuf {
        self.dev.join("vfio").join(group.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::fake_sysfs::Fake;

    #[test]
    fn bdf_forms() {
        assert_eq!(normalize_bdf("01:00.0").unwrap(), "0000:01:00.0");
        assert_eq!(normalize_bdf("0000:0A:1f.7").unwrap(), "0000:0a:1f.7");
        for bad in [
            "",
            "1:0.0",
            "0000:01:00.8",
            "0000:01:00:0",
            "zz:00.0",
            "0000.01.00.0",
        ] {
            assert!(normalize_bdf(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn good_device_passes_and_is_listed() {
        let f = Fake::new();
        f.device("0000:01:00.0", NVME_CLASS, Some("vfio-pci"), Some(3));
        f.device("0000:02:00.0", NVME_CLASS, Some("nvme"), Some(4));
        f.device("0000:00:1f.0", 0x060100, None, Some(5));
        assert_eq!(f.host.preflight("0000:01:00.0").unwrap(), 3);
        let all = f.host.list_nvme();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].bdf, "0000:01:00.0");
        assert_eq!(all[0].driver.as_deref(), Some("vfio-pci"));
        assert_eq!(all[0].iommu_group, Some(3));
        assert_eq!((all[0].vendor, all[0].device), (0x1b36, 0x0010));
        assert_eq!(all[1].driver.as_deref(), Some("nvme"));
    }
}
