// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The shadow of a device's sysfs folder that `vfio-ioctls` is given (see
//! [`ShadowDevPath`]).

use super::sysfs::Host;
use std::io;
use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::fake_sysfs::Fake;
    use std::fs;

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
}
