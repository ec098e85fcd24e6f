// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A fake `/sys` and `/dev` for the unit tests of the sysfs checks and the hot-plug
//! scan: devices with a class, a driver and an IOMMU group, in a temporary folder.

use super::sysfs::Host;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fake `/sys` and `/dev` under a fresh temporary folder, removed on drop.
pub(crate) struct Fake {
    pub(crate) root: PathBuf,
    pub(crate) host: Host,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Fake {
    pub(crate) fn new() -> Self {
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
    pub(crate) fn device(&self, bdf: &str, class: u32, driver: Option<&str>, group: Option<u32>) {
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

    pub(crate) fn err(&self, bdf: &str) -> String {
        self.host.preflight(bdf).unwrap_err().to_string()
    }
}
