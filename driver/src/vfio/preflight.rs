// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The checks made before VFIO is touched, and the errors that name the device and
//! the fix: the device exists, is an NVMe controller, sits in an IOMMU group, is bound
//! to vfio-pci, VFIO's nodes exist, no other device of its group is held by a kernel
//! driver; and what a failure to open VFIO's nodes means.

use super::sysfs::{Host, NVME_CLASS};
use super::unprivileged;
use crate::error::{Error, Result};
use std::io;
use std::path::Path;

/// Drivers that may hold the other devices of a group handed to userspace: the kernel
/// accepts vfio-pci, pci-stub, and bridges (pcieport) besides unbound devices.
const GROUP_COMPANION_DRIVERS: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];

impl Host {
    /// Everything that can be checked without opening VFIO: the device exists, is an
    /// NVMe controller, sits in an IOMMU group, is bound to vfio-pci, VFIO's nodes
    /// exist, and no other device of its group is held by a kernel driver.
    /// Returns the IOMMU group.
    pub(crate) fn preflight(&self, bdf: &str) -> Result<u32> {
        if !self.pci_dev(bdf).exists() {
            return Err(vfio_err(
                bdf,
                format!(
                    "no such PCI device ({} does not exist)",
                    self.pci_dev(bdf).display()
                ),
                self.describe_nvme(),
            ));
        }
        match self.attr(bdf, "class") {
            Some(NVME_CLASS) => {}
            class => {
                let class = class.map_or("unknown".into(), |c| format!("{c:#08x}"));
                return Err(vfio_err(
                    bdf,
                    format!("not an NVMe controller (PCI class {class}, NVMe is 0x010802)"),
                    self.describe_nvme(),
                ));
            }
        }
        let Some(group) = self.iommu_group(bdf) else {
            return Err(vfio_err(
                bdf,
                "no IOMMU group: the kernel runs without an IOMMU, and VFIO needs one".into(),
                "enable the IOMMU: boot with intel_iommu=on (amd_iommu=on on AMD) and turn on \
                 VT-d/AMD-Vi in the firmware; in QEMU add `-device intel-iommu,intremap=on,\
                 caching-mode=on` with `-machine q35,kernel-irqchip=split`"
                    .into(),
            ));
        };
        let driver = self.driver(bdf);
        if driver.as_deref() != Some("vfio-pci") {
            let detail = match &driver {
                Some(d) => format!("bound to the {d} driver, not to vfio-pci"),
                None => "not bound to any driver (it must be bound to vfio-pci)".into(),
            };
            return Err(vfio_err(bdf, detail, self.bind_fix(bdf, driver.as_deref())));
        }
        let node = self.container_node();
        if !node.exists() {
            return Err(vfio_err(
                bdf,
                format!("{} does not exist", node.display()),
                LOAD_VFIO.into(),
            ));
        }
        let held: Vec<String> = self
            .group_devices(group)
            .into_iter()
            .filter(|d| d != bdf)
            .filter_map(|d| {
                let drv = self.driver(&d)?;
                (!GROUP_COMPANION_DRIVERS.contains(&drv.as_str())).then(|| format!("{d} ({drv})"))
            })
            .collect();
        if !held.is_empty() {
            return Err(self.not_viable(bdf, group, &held));
        }
        let gnode = self.group_node(group);
        if !gnode.exists() {
            return Err(vfio_err(
                bdf,
                format!(
                    "{} does not exist although the device is bound to vfio-pci",
                    gnode.display()
                ),
                format!("rebind it: `nvme-setup bind {bdf}`, and check dmesg for vfio errors"),
            ));
        }
        Ok(group)
    }

    fn bind_fix(&self, bdf: &str, driver: Option<&str>) -> String {
        let dev = self.pci_dev(bdf);
        let mut manual = Vec::new();
        if !self.sys.join("bus/pci/drivers/vfio-pci").exists() {
            manual.push("modprobe vfio-pci".to_string());
        }
        manual.push(format!(
            "echo vfio-pci > {}",
            dev.join("driver_override").display()
        ));
        if driver.is_some() {
            manual.push(format!(
                "echo {bdf} > {}",
                dev.join("driver/unbind").display()
            ));
        }
        manual.push(format!(
            "echo {bdf} > {}",
            self.sys.join("bus/pci/drivers_probe").display()
        ));
        let warn = if driver == Some("nvme") {
            " (this takes it from the kernel: unmount its file systems first)"
        } else {
            ""
        };
        format!(
            "bind it to vfio-pci{warn}: `nvme-setup bind {bdf}`, or by hand: `{}`",
            manual.join("; ")
        )
    }

    /// The error for a group the kernel will not hand over; `others` names the devices
    /// in the way.
    pub(crate) fn not_viable(&self, bdf: &str, group: u32, others: &[String]) -> Error {
        vfio_err(
            bdf,
            format!(
                "IOMMU group {group} is not viable: it also holds {}",
                others.join(", ")
            ),
            format!(
                "bind every device of the group to vfio-pci (`nvme-setup bind BDF` for each; \
                 see {}); a group can only be handed to userspace as a whole",
                self.group_dir(group).join("devices").display()
            ),
        )
    }

    /// The error for a group the kernel refused as not viable although the sysfs check
    /// passed: name every other device of the group with its driver.
    pub(crate) fn not_viable_by_kernel(&self, bdf: &str, group: u32) -> Error {
        let others: Vec<String> = self
            .group_devices(group)
            .into_iter()
            .filter(|d| d != bdf)
            .map(|d| {
                let drv = self.driver(&d).unwrap_or_else(|| "no driver".into());
                format!("{d} ({drv})")
            })
            .collect();
        if others.is_empty() {
            return vfio_err(
                bdf,
                format!("the kernel says IOMMU group {group} is not viable"),
                "check dmesg for vfio messages and rebind the device to vfio-pci".into(),
            );
        }
        self.not_viable(bdf, group, &others)
    }
}

pub(crate) fn vfio_err(bdf: &str, detail: String, fix: String) -> Error {
    Error::Vfio {
        device: bdf.to_string(),
        detail,
        fix,
    }
}

/// The fix when the VFIO device nodes are missing.
const LOAD_VFIO: &str = "load the VFIO modules: `modprobe vfio-pci`";

/// Explains a failure to open `/dev/vfio/vfio`.
pub(crate) fn container_open_error(bdf: &str, node: &Path, e: &io::Error) -> Error {
    let fix = match e.kind() {
        io::ErrorKind::NotFound => LOAD_VFIO.to_string(),
        io::ErrorKind::PermissionDenied => {
            let (owned, fix) = unprivileged::node_refusal(node, bdf);
            return vfio_err(
                bdf,
                format!("cannot open {}: {e}: {owned}", node.display()),
                fix,
            );
        }
        _ => "check that the vfio and vfio_iommu_type1 modules are loaded (dmesg may say more)"
            .to_string(),
    };
    vfio_err(bdf, format!("cannot open {}: {e}", node.display()), fix)
}

/// Explains a failure to open `/dev/vfio/N`.
pub(crate) fn group_open_error(bdf: &str, group: u32, node: &Path, e: &io::Error) -> Error {
    let fix = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => {
            format!("rebind the device to vfio-pci: `nvme-setup bind {bdf}`")
        }
        (io::ErrorKind::PermissionDenied, _) => {
            let (owned, fix) = unprivileged::node_refusal(node, bdf);
            return vfio_err(
                bdf,
                format!("cannot open {}: {e}: {owned}", node.display()),
                fix,
            );
        }
        (_, Some(libc::EBUSY)) => format!(
            "another process holds IOMMU group {group} (another driver instance?): stop it \
             (`fuser {}` names it)",
            node.display()
        ),
        _ => "check dmesg for vfio messages".to_string(),
    };
    vfio_err(bdf, format!("cannot open {}: {e}", node.display()), fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::fake_sysfs::Fake;
    use std::fs;

    #[test]
    fn missing_device_lists_the_controllers_present() {
        let f = Fake::new();
        let e = f.err("0000:09:00.0");
        assert!(e.starts_with("0000:09:00.0: no such PCI device"), "{e}");
        assert!(e.contains("no NVMe controller is present"), "{e}");
        f.device("0000:01:00.0", NVME_CLASS, Some("vfio-pci"), Some(3));
        f.device("0000:02:00.0", NVME_CLASS, None, Some(4));
        let e = f.err("0000:09:00.0");
        assert!(
            e.contains("0000:01:00.0 (1b36:0010, vfio-pci, IOMMU group 3)"),
            "{e}"
        );
        assert!(
            e.contains("0000:02:00.0 (1b36:0010, no driver, IOMMU group 4)"),
            "{e}"
        );
    }

    #[test]
    fn not_nvme() {
        let f = Fake::new();
        f.device("0000:00:1f.0", 0x060100, Some("vfio-pci"), Some(5));
        let e = f.err("0000:00:1f.0");
        assert!(
            e.contains("not an NVMe controller (PCI class 0x060100"),
            "{e}"
        );
    }

    #[test]
    fn bound_to_nvme_or_unbound_says_how_to_bind() {
        let f = Fake::new();
        f.device("0000:01:00.0", NVME_CLASS, Some("nvme"), Some(3));
        let e = f.err("0000:01:00.0");
        assert!(
            e.contains("bound to the nvme driver, not to vfio-pci"),
            "{e}"
        );
        assert!(e.contains("`nvme-setup bind 0000:01:00.0`"), "{e}");
        assert!(e.contains("unmount its file systems first"), "{e}");
        assert!(
            e.contains("/sys/bus/pci/devices/0000:01:00.0/driver/unbind"),
            "{e}"
        );
        assert!(e.contains("driver_override"), "{e}");
        assert!(!e.contains("modprobe"), "{e}");

        f.device("0000:02:00.0", NVME_CLASS, None, Some(4));
        fs::remove_dir(f.root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        let e = f.err("0000:02:00.0");
        assert!(e.contains("not bound to any driver"), "{e}");
        assert!(!e.contains("unbind"), "{e}");
        assert!(e.contains("`modprobe vfio-pci; echo vfio-pci > "), "{e}");
        assert!(e.contains("drivers_probe"), "{e}");
    }

    #[test]
    fn no_iommu() {
        let f = Fake::new();
        f.device("0000:01:00.0", NVME_CLASS, Some("nvme"), None);
        let e = f.err("0000:01:00.0");
        assert!(e.contains("no IOMMU group"), "{e}");
        assert!(
            e.contains("intel_iommu=on") && e.contains("intel-iommu"),
            "{e}"
        );
    }

    #[test]
    fn no_vfio_node() {
        let f = Fake::new();
        f.device("0000:01:00.0", NVME_CLASS, Some("vfio-pci"), Some(3));
        fs::remove_file(f.root.join("dev/vfio/vfio")).unwrap();
        let e = f.err("0000:01:00.0");
        assert!(e.contains("vfio/vfio does not exist"), "{e}");
        assert!(e.contains("`modprobe vfio-pci`"), "{e}");
    }

    #[test]
    fn group_shared_with_a_kernel_driver_is_not_viable() {
        let f = Fake::new();
        f.device("0000:01:00.0", NVME_CLASS, Some("vfio-pci"), Some(3));
        f.device("0000:01:00.1", 0x010601, Some("ahci"), Some(3));
        f.device("0000:00:1c.0", 0x060400, Some("pcieport"), Some(3));
        f.device("0000:01:00.2", 0x0c0330, None, Some(3));
        let e = f.err("0000:01:00.0");
        assert!(
            e.contains("IOMMU group 3 is not viable: it also holds 0000:01:00.1 (ahci)"),
            "{e}"
        );
        assert!(!e.contains("pcieport") && !e.contains("01:00.2"), "{e}");
        assert!(e.contains("kernel/iommu_groups/3/devices"), "{e}");
        let k = f.host.not_viable_by_kernel("0000:01:00.0", 3).to_string();
        assert!(k.contains("0000:01:00.2 (no driver)"), "{k}");
        assert!(k.contains("0000:00:1c.0 (pcieport)"), "{k}");
    }

    #[test]
    fn open_errors_say_what_to_do() {
        let node = Path::new("/dev/vfio/vfio");
        let e = container_open_error(
            "0000:01:00.0",
            node,
            &io::Error::from_raw_os_error(libc::EACCES),
        )
        .to_string();
        assert!(
            e.contains("cannot open /dev/vfio/vfio") && e.contains("run as root"),
            "{e}"
        );
        let e = container_open_error(
            "0000:01:00.0",
            node,
            &io::Error::from_raw_os_error(libc::ENOENT),
        )
        .to_string();
        assert!(e.contains("modprobe vfio-pci"), "{e}");
        let g = Path::new("/dev/vfio/3");
        let e = group_open_error(
            "0000:01:00.0",
            3,
            g,
            &io::Error::from_raw_os_error(libc::EBUSY),
        )
        .to_string();
        assert!(e.contains("another process holds IOMMU group 3"), "{e}");
        let e = group_open_error(
            "0000:01:00.0",
            3,
            g,
            &io::Error::from_raw_os_error(libc::EPERM),
        )
        .to_string();
        assert!(e.contains("run as root"), "{e}");
        // Permission denied: the node's owner and mode, this user, and the command.
        let e = group_open_error(
            "0000:01:00.0",
            3,
            Path::new("/proc/self"),
            &io::Error::from_raw_os_error(libc::EACCES),
        )
        .to_string();
        assert!(
            e.contains("cannot open /proc/self: Permission denied")
                && e.contains(": it belongs to uid ")
                && e.contains("`sudo nvme-setup config TARGET_USER=")
                && e.contains(" PCI_ALLOWED=0000:01:00.0`"),
            "{e}"
        );
    }
}
