//! What sysfs and `/dev` say about a PCI device before VFIO is touched: does it exist,
//! is it an NVMe controller, which driver holds it, which IOMMU group it is in and who
//! else is in that group. Every path hangs off a [`Host`] root, so tests run the
//! checks and their error messages against a fake tree in a temporary folder.

use super::PciNvme;
use crate::error::{Error, Result};
use std::io;
use std::path::{Path, PathBuf};

/// PCI class code of an NVMe controller: mass storage, non-volatile memory, NVMe.
pub(crate) const NVME_CLASS: u32 = 0x01_08_02;

/// Drivers that may hold the other devices of a group handed to userspace: the kernel
/// accepts vfio-pci, pci-stub, and bridges (pcieport) besides unbound devices.
const GROUP_COMPANION_DRIVERS: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];

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

    fn attr(&self, bdf: &str, name: &str) -> Option<u32> {
        read_hex(&self.pci_dev(bdf).join(name))
    }

    /// `SYS/kernel/iommu_groups/GROUP`.
    fn group_dir(&self, group: u32) -> PathBuf {
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

    fn describe_nvme(&self) -> String {
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

/// A private stand-in for the device's sysfs folder, given to `vfio-ioctls`.
///
/// `VfioDevice` keeps the path it was opened with and, when dropped, closes the device
/// file and only then reads `PATH/iommu_group` again (unwrapping the result) to find
/// its group. On hot-unplug, closing the device file lets vfio-pci finish removing
/// the device, and with it that sysfs link: seen in the guest, the lookup then failed
/// and the drop panicked before detaching the group. This folder, named after the
/// device and holding only an `iommu_group` link to the same group, lives as long as
/// the bus, so the lookup always succeeds. Removed on drop.
#[derive(Debug)]
pub(crate) struct ShadowDevPath {
    dir: PathBuf,
    path: PathBuf,
}

impl ShadowDevPath {
    /// Makes `TMPDIR/nvme-driver-PID-N/BDF/iommu_group -> SYS/kernel/iommu_groups/GROUP`.
    pub(crate) fn new(host: &Host, bdf: &str, group: u32) -> io::Result<Self> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nvme-driver-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join(bdf);
        let made = std::fs::create_dir_all(&path).and_then(|()| {
            std::os::unix::fs::symlink(host.group_dir(group), path.join("iommu_group"))
        });
        let shadow = ShadowDevPath { dir, path };
        made.map(|()| shadow)
    }

    /// The path to hand to `VfioDevice::new`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ShadowDevPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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
        io::ErrorKind::PermissionDenied => format!(
            "run as root (or give this user read-write access to {} and the group node, \
             and a locked-memory limit, `ulimit -l`, large enough for the DMA memory)",
            node.display()
        ),
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
        (io::ErrorKind::PermissionDenied, _) => format!(
            "run as root (or give this user read-write access to {})",
            node.display()
        ),
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
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake `/sys` and `/dev` under a fresh temporary folder, removed on drop.
    struct Fake {
        root: PathBuf,
        host: Host,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    impl Fake {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "nvme-driver-sysfs-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
            fs::create_dir_all(root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
            fs::create_dir_all(root.join("dev/vfio")).unwrap();
            fs::write(root.join("dev/vfio/vfio"), "").unwrap();
            let host = Host {
                sys: root.join("sys"),
                dev: root.join("dev"),
            };
            Fake { root, host }
        }

        /// Adds a device with `class`, bound to `driver`, in `group`.
        fn device(&self, bdf: &str, class: u32, driver: Option<&str>, group: Option<u32>) {
            let d = self.root.join("sys/devices/pci0000:00").join(bdf);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("class"), format!("{class:#08x}\n")).unwrap();
            fs::write(d.join("vendor"), "0x1b36\n").unwrap();
            fs::write(d.join("device"), "0x0010\n").unwrap();
            if let Some(drv) = driver {
                symlink(format!("../../../bus/pci/drivers/{drv}"), d.join("driver")).unwrap();
            }
            if let Some(g) = group {
                let gd = self
                    .root
                    .join("sys/kernel/iommu_groups")
                    .join(g.to_string())
                    .join("devices");
                fs::create_dir_all(&gd).unwrap();
                symlink(&d, gd.join(bdf)).unwrap();
                symlink(
                    format!("../../../kernel/iommu_groups/{g}"),
                    d.join("iommu_group"),
                )
                .unwrap();
                fs::write(self.root.join("dev/vfio").join(g.to_string()), "").unwrap();
            }
            symlink(&d, self.root.join("sys/bus/pci/devices").join(bdf)).unwrap();
        }

        fn err(&self, bdf: &str) -> String {
            self.host.preflight(bdf).unwrap_err().to_string()
        }
    }

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
    fn shadow_path_names_the_device_and_its_group() {
        let f = Fake::new();
        let dir;
        {
            let s = ShadowDevPath::new(&f.host, "0000:01:00.0", 7).unwrap();
            assert_eq!(s.path().file_name().unwrap(), "0000:01:00.0");
            let link = fs::read_link(s.path().join("iommu_group")).unwrap();
            assert_eq!(link.file_name().unwrap(), "7");
            dir = s.dir.clone();
        }
        assert!(!dir.exists());
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
    }
}
