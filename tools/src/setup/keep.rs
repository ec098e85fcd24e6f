// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `nvme-setup keep-vfio on|off`: NVMe controllers that appear later (hot-plugged, or
//! a controller coming back after an unplug) are bound to vfio-pci by the kernel as
//! they appear, which is what a udev rule would do on a machine that has udev.
//!
//! The mechanism is vfio-pci's dynamic ID table: writing `ffffffff ffffffff ffffffff
//! ffffffff 010802 ffffff` (any vendor, device and subsystem; class 01:08:02, all of
//! it compared) to `/sys/bus/pci/drivers/vfio-pci/new_id` makes vfio-pci match every
//! NVMe controller. The kernel binds such a controller when it appears, if no driver
//! registered earlier claims it first: the kernel's nvme driver, when loaded, does
//! (drivers are tried in the order they registered), so `on` says so. Writing the
//! same line to `remove_id` undoes it; the table lasts until vfio-pci is unloaded or
//! the machine reboots. Writing `new_id` also binds at once the NVMe controllers that
//! have no driver now (the kernel probes them again); controllers held by a driver
//! stay where they are.

use super::{Sys, NVME_CLASS};

/// The dynamic ID that matches every NVMe controller (see the module comment):
/// vendor, device, subvendor, subdevice (all any), class, class mask.
pub const NVME_DYNAMIC_ID: &str = "ffffffff ffffffff ffffffff ffffffff 010802 ffffff";

/// The kernel's answer to a `new_id` that vfio-pci already holds.
const EEXIST: i32 = 17;

impl Sys {
    /// Turns on (or off) the binding of new NVMe controllers to vfio-pci. Returns what
    /// it did, in lines.
    pub fn keep_vfio(&self, on: bool) -> Result<Vec<String>, String> {
        let what = if on {
            "nvme-setup keep-vfio on"
        } else {
            "nvme-setup keep-vfio off"
        };
        self.require_root(what)?;
        let drv = self.path("sys/bus/pci/drivers/vfio-pci");
        if on {
            self.ensure_driver("vfio-pci", "vfio-pci")?;
        } else if !drv.exists() {
            return Ok(vec![
                "vfio-pci is not loaded: it binds nothing, new controllers included".into(),
            ]);
        }
        let file = drv.join(if on { "new_id" } else { "remove_id" });
        let mut lines = Vec::new();
        match std::fs::write(&file, NVME_DYNAMIC_ID) {
            Ok(()) if on => lines.push(format!(
                "vfio-pci now takes every NVMe controller (PCI class {NVME_CLASS}) that \
                 appears without a driver (wrote '{NVME_DYNAMIC_ID}' to {})",
                file.display()
            )),
            Ok(()) => lines.push(format!(
                "new NVMe controllers are no longer bound to vfio-pci (wrote \
                 '{NVME_DYNAMIC_ID}' to {}); those bound stay bound",
                file.display()
            )),
            Err(e) if on && e.raw_os_error() == Some(EEXIST) => {
                lines.push("already on: vfio-pci takes every new NVMe controller".into())
            }
            Err(e) if !on && e.raw_os_error() == Some(libc::ENODEV) => {
                lines.push("already off: vfio-pci held no such ID".into())
            }
            Err(e) => {
                return Err(format!(
                    "writing '{NVME_DYNAMIC_ID}' to {}: {e}; bind each controller when it \
                     appears instead: `nvme-setup bind BDF`",
                    file.display()
                ))
            }
        }
        if on && self.path("sys/bus/pci/drivers/nvme").exists() {
            lines.push(
                "note: the kernel's nvme driver is loaded and claims new controllers before \
                 vfio-pci does; unload it (`modprobe -r nvme`, which takes every controller \
                 it holds from the kernel) or bind each new controller with `nvme-setup \
                 bind BDF`"
                    .into(),
            );
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fake, sys};
    use super::*;
    use std::fs;

    #[test]
    fn keep_vfio_writes_the_class_wide_id_and_says_what_it_means() {
        let f = fake("keep-on", None, true);
        let s = sys(&f, false);
        let e = s.keep_vfio(true).unwrap_err();
        assert!(e.contains("must run as root"), "{e}");
        let s = sys(&f, true);
        // vfio-pci not loaded, and modprobe fails: the error says how to load it.
        let e = s.keep_vfio(true).unwrap_err();
        assert!(e.contains("vfio-pci driver is not loaded"), "{e}");
        let off = s.keep_vfio(false).unwrap();
        assert!(off[0].contains("vfio-pci is not loaded"), "{off:?}");

        let drv = f.dir.join("sys/bus/pci/drivers/vfio-pci");
        fs::create_dir_all(&drv).unwrap();
        let lines = s.keep_vfio(true).unwrap();
        assert_eq!(
            fs::read_to_string(drv.join("new_id")).unwrap(),
            NVME_DYNAMIC_ID
        );
        assert!(lines[0].contains("every NVMe controller"), "{lines:?}");
        // The fake machine has the nvme driver loaded: said, with the way out.
        assert!(
            lines.iter().any(|l| l.contains("nvme driver is loaded")),
            "{lines:?}"
        );
        let lines = s.keep_vfio(false).unwrap();
        assert_eq!(
            fs::read_to_string(drv.join("remove_id")).unwrap(),
            NVME_DYNAMIC_ID
        );
        assert!(lines[0].contains("no longer bound"), "{lines:?}");
    }

    #[test]
    fn keep_vfio_is_parsed() {
        use super::super::tests::parse;
        use super::super::Command;
        assert_eq!(parse(["keep-vfio", "on"]).unwrap(), Command::KeepVfio(true));
        assert_eq!(
            parse(["keep-vfio", "off"]).unwrap(),
            Command::KeepVfio(false)
        );
        let e = parse(["keep-vfio"]).unwrap_err().0;
        assert!(e.contains("keep-vfio needs on or off"), "{e}");
    }
}
