// SPDX-License-Identifier: Apache-2.0 OR MIT
//! VFIO: an NVMe controller handed to this process by the kernel's vfio-pci driver.
//!
//! The model: the kernel puts each device behind an IOMMU, in an IOMMU group
//! (`/dev/vfio/N`); a group is attached to a container (`/dev/vfio/vfio`), which is
//! one IOMMU domain, one I/O address space. Each [`VfioBus`] gets a container of its
//! own, so controllers never see each other's memory. The device file gives region
//! info (BAR0 and the PCI config space), lets us `mmap` BAR0 so register and doorbell
//! accesses are plain loads and stores, and carries interrupts as eventfds. Polled
//! queues use no interrupts; the one interrupt watched is the device request
//! (`VFIO_PCI_REQ_IRQ_INDEX`), vfio-pci's way to ask for the device back on
//! hot-unplug. vfio-pci waits until every file referring to the device is closed,
//! including the BAR mapping, so [`Bus::release`] swaps that mapping for anonymous
//! memory and closes the device, group and container.
//!
//! Before any of that, sysfs is checked so that the common mistakes
//! (wrong address, kernel driver still bound, no IOMMU, group shared with another
//! driver) get an error that names the device and the fix.

#[cfg(test)]
mod fake_sysfs;
mod preflight;
mod shadow;
mod sys;
mod sysfs;
mod unprivileged;

use crate::bus::Bus;
use crate::dma::{DmaMapper, Iova};
use crate::error::{Error, Result};
use crate::lock;
use crate::mmio::Mmio;
use preflight::vfio_err;
use shadow::ShadowDevPath;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use sysfs::Host;
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_REQ_IRQ_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioError, VfioOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// PCI command register, in config space.
const PCI_COMMAND: u64 = 0x04;
/// Command register: Memory Space Enable.
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: Bus Master Enable.
const PCI_COMMAND_MASTER: u16 = 1 << 2;
/// The smallest BAR0 that holds the registers and the admin queue's doorbells.
const BAR0_MIN: u64 = 0x1008;

/// An NVMe controller found on the PCI bus (PCI class 0x010802).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciNvme {
    /// PCI address, `DDDD:BB:DD.F`.
    pub bdf: String,
    /// The kernel driver bound to it (`vfio-pci`, `nvme`), if any.
    pub driver: Option<String>,
    /// Its IOMMU group, if the kernel has an IOMMU.
    pub iommu_group: Option<u32>,
    /// PCI vendor ID.
    pub vendor: u16,
    /// PCI device ID.
    pub device: u16,
}

impl fmt::Display for PciNvme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:04x}:{:04x}, {}, ",
            self.bdf,
            self.vendor,
            self.device,
            self.driver.as_deref().unwrap_or("no driver")
        )?;
        match self.iommu_group {
            Some(g) => write!(f, "IOMMU group {g})"),
            None => write!(f, "no IOMMU group)"),
        }
    }
}

/// Every NVMe controller on the PCI bus, sorted by address, whatever driver holds it.
/// Tools use it to pick every controller bound to vfio-pci when none is named.
pub fn list_nvme_controllers() -> Vec<PciNvme> {
    Host::real().list_nvme()
}

/// Turns `01:00.0` or `0000:01:00.0` into the full form `0000:01:00.0`.
pub fn normalize_bdf(bdf: &str) -> Result<String> {
    sysfs::normalize_bdf(bdf).ok_or_else(|| {
        vfio_err(
            bdf,
            "not a PCI address".into(),
            "give it as DDDD:BB:DD.F or BB:DD.F, for example 0000:01:00.0".into(),
        )
    })
}

/// What [`Bus::release`] takes away: the device (whose drop closes the device
/// file and detaches and closes the group).
struct Open {
    device: VfioDevice,
    config_offset: u64,
    /// The path `device` was opened with; must outlive it (see [`ShadowDevPath`]).
    shadow: Option<ShadowDevPath>,
}

/// An NVMe controller owned through VFIO: its BAR0 mapped, its IOMMU domain, and
/// its device request interrupt.
///
/// BAR0 stays mapped at the same address for the life of this value, first to the
/// device and after [`Bus::release`] to memory that reads all ones; whoever holds
/// doorbells from [`Bus::bar0`] must also hold this bus (an `Arc`).
pub struct VfioBus {
    bdf: String,
    iommu_group: u32,
    bar0: Mmio,
    /// Length of the BAR0 mapping at `bar0.as_ptr()`, whole pages.
    bar0_map_len: usize,
    req: Option<EventFd>,
    removal: AtomicBool,
    mapper: Arc<VfioMapper>,
    open: Mutex<Option<Open>>,
}

impl fmt::Debug for VfioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfioBus")
            .field("bdf", &self.bdf)
            .field("iommu_group", &self.iommu_group)
            .field("bar0", &self.bar0)
            .field("req_irq", &self.req.is_some())
            .field("released", &self.is_released())
            .finish()
    }
}

/// Explains an error from `vfio-ioctls` while opening the device.
fn open_error(host: &Host, bdf: &str, group: u32, e: VfioError) -> Error {
    match e {
        VfioError::OpenContainer(io) => {
            preflight::container_open_error(bdf, &host.container_node(), &io)
        }
        VfioError::OpenGroup(io, _) => {
            preflight::group_open_error(bdf, group, &host.group_node(group), &io)
        }
        VfioError::GroupViable => host.not_viable_by_kernel(bdf, group),
        VfioError::GroupGetDeviceFD(errno) => vfio_err(
            bdf,
            format!("IOMMU group {group} would not give the device: {errno}"),
            format!(
                "check that {bdf} is still bound to vfio-pci and that no other process uses \
                 it (`fuser {}`); dmesg may say more",
                host.group_node(group).display()
            ),
        ),
        e => vfio_err(
            bdf,
            format!("VFIO setup failed: {e}"),
            "check dmesg for vfio and IOMMU messages".into(),
        ),
    }
}

fn io_err(bdf: &str, what: impl Into<String>, source: std::io::Error) -> Error {
    Error::Io {
        device: bdf.to_string(),
        what: what.into(),
        source,
    }
}

impl VfioBus {
    /// Opens the NVMe controller at PCI address `bdf` (`0000:01:00.0` or `01:00.0`),
    /// which must be bound to vfio-pci: checks it in sysfs, attaches its group to a
    /// container of its own, maps BAR0, enables memory space and bus mastering, and
    /// arms the device request interrupt (where the kernel offers it).
    pub fn open(bdf: &str) -> Result<Arc<VfioBus>> {
        Self::open_on(&Host::real(), bdf)
    }

    fn open_on(host: &Host, bdf: &str) -> Result<Arc<VfioBus>> {
        let bdf = normalize_bdf(bdf)?;
        let group = host.preflight(&bdf)?;
        let container =
            Arc::new(VfioContainer::new(None).map_err(|e| open_error(host, &bdf, group, e))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        // Without the shadow (no writable temporary folder) the real sysfs path works
        // too; only a hot-unplug may then trip vfio-ioctls' drop (caught in release).
        let shadow = ShadowDevPath::new(host, &bdf, group).ok();
        let dev_path = match &shadow {
            Some(s) => s.path().to_path_buf(),
            None => host.pci_dev(&bdf),
        };
        let device =
            VfioDevice::new(&dev_path, ops, false).map_err(|e| open_error(host, &bdf, group, e))?;

        let bar = sys::region_info(&device, VFIO_PCI_BAR0_REGION_INDEX)
            .map_err(|e| io_err(&bdf, "VFIO region info for BAR0", e))?;
        let need =
            VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
        if bar.flags & need != need || bar.size < BAR0_MIN {
            return Err(vfio_err(
                &bdf,
                format!(
                    "BAR0 cannot be mapped (size {:#x}, flags {:#x}: needs at least {BAR0_MIN:#x} \
                     bytes, readable, writable, mmap-able)",
                    bar.size, bar.flags
                ),
                "this does not look like an NVMe controller's BAR0; check the address".into(),
            ));
        }
        let bar_len = usize::try_from(bar.size).map_err(|_| {
            vfio_err(
                &bdf,
                format!("BAR0 of {:#x} bytes is too large", bar.size),
                "check the address".into(),
            )
        })?;
        let cfg = sys::region_info(&device, VFIO_PCI_CONFIG_REGION_INDEX)
            .map_err(|e| io_err(&bdf, "VFIO region info for the PCI config space", e))?;
        Self::enable_command(&bdf, &device, cfg.offset)?;

        let page = sys::page_size();
        let map_len = bar_len.div_ceil(page) * page;
        let map = sys::map_bar(&device, bar.offset, map_len)
            .map_err(|e| io_err(&bdf, "mmap of BAR0 from the VFIO device file", e))?;
        // SAFETY: `map` is `map_len >= bar_len` bytes, page aligned; it stays mapped
        // (to the device, then to all-ones memory) until `VfioBus` drops, after `bar0`
        // is no longer reachable.
        let bar0 = unsafe { Mmio::new(map, bar_len) };

        let req = Self::arm_request_irq(&device);
        Ok(Arc::new(VfioBus {
            bdf: bdf.clone(),
            iommu_group: group,
            bar0,
            bar0_map_len: map_len,
            req,
            removal: AtomicBool::new(false),
            mapper: Arc::new(VfioMapper {
                bdf,
                state: Mutex::new(MapperState {
                    container: Some(container),
                    maps: BTreeMap::new(),
                }),
            }),
            open: Mutex::new(Some(Open {
                device,
                config_offset: cfg.offset,
                shadow,
            })),
        }))
    }

    /// Sets Memory Space Enable (BAR0 decodes; without it vfio-pci faults BAR
    /// accesses) and Bus Master Enable (the controller may DMA).
    fn enable_command(bdf: &str, device: &VfioDevice, config_offset: u64) -> Result<()> {
        let mut id = [0u8; 2];
        sys::pread_exact(device, &mut id, config_offset)
            .map_err(|e| io_err(bdf, "read of the PCI vendor ID", e))?;
        if u16::from_le_bytes(id) == 0xffff {
            return Err(vfio_err(
                bdf,
                "PCI config space reads all ones: the device is gone or broken".into(),
                "check the device is still present (`ls /sys/bus/pci/devices`)".into(),
            ));
        }
        let mut cmd = [0u8; 2];
        sys::pread_exact(device, &mut cmd, config_offset + PCI_COMMAND)
            .map_err(|e| io_err(bdf, "read of the PCI command register", e))?;
        let old = u16::from_le_bytes(cmd);
        let new = old | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        if new != old {
            sys::pwrite_all(device, &new.to_le_bytes(), config_offset + PCI_COMMAND)
                .map_err(|e| io_err(bdf, "write of the PCI command register", e))?;
        }
        Ok(())
    }

    /// Connects an eventfd to the device request interrupt. `None` when the kernel
    /// or device does not offer it: hot-unplug then waits for the process to close
    /// the device on its own (vfio-pci keeps asking).
    fn arm_request_irq(device: &VfioDevice) -> Option<EventFd> {
        let info = device.get_irq_info(VFIO_PCI_REQ_IRQ_INDEX)?;
        if info.count == 0 {
            return None;
        }
        let ev = EventFd::new(EFD_NONBLOCK).ok()?;
        device.enable_irq(VFIO_PCI_REQ_IRQ_INDEX, vec![&ev]).ok()?;
        Some(ev)
    }

    /// The PCI address, `DDDD:BB:DD.F`.
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    /// The IOMMU group the device is in.
    pub fn iommu_group(&self) -> u32 {
        self.iommu_group
    }

    /// True if the device request interrupt is armed, so [`Bus::removal_requested`]
    /// can report a hot-unplug request.
    pub fn has_request_irq(&self) -> bool {
        self.req.is_some()
    }

    /// True once [`Bus::release`] ran.
    pub fn is_released(&self) -> bool {
        lock(&self.open).is_none()
    }

    fn bar0_map(&self) -> Option<NonNull<u8>> {
        NonNull::new(self.bar0.as_ptr())
    }

    fn release_inner(&self) {
        let mut open = lock(&self.open);
        let Some(o) = open.take() else {
            return;
        };
        // First the BAR: other threads may be polling registers or ringing doorbells.
        let replaced = match self.bar0_map() {
            // SAFETY: `map..+bar0_map_len` is the BAR mapping this bus owns; no Rust
            // reference into it exists (only `Mmio` and `Doorbell` raw pointers).
            Some(map) => unsafe { sys::replace_with_ones(map, self.bar0_map_len) },
            None => Ok(()),
        };
        if let Err(e) = replaced {
            // The BAR mapping still holds the device file: vfio-pci will wait. Nothing
            // safer can be done with pointers into it alive on other threads.
            log::error!(
                "nvme-driver: {}: cannot replace the BAR0 mapping ({e}); \
                 the device stays held until the process exits",
                self.bdf
            );
        }
        // Stop the device's DMA before its memory leaves the IOMMU.
        let mut cmd = [0u8; 2];
        if sys::pread_exact(&o.device, &mut cmd, o.config_offset + PCI_COMMAND).is_ok() {
            let v = u16::from_le_bytes(cmd) & !PCI_COMMAND_MASTER;
            let _ = sys::pwrite_all(&o.device, &v.to_le_bytes(), o.config_offset + PCI_COMMAND);
        }
        let container = self.mapper.release();
        // Closes the device file, then detaches the group from the container and
        // closes it. vfio-ioctls unwraps a sysfs lookup in that drop; a panic there
        // must not take down the process, whose other threads may be mid-I/O.
        let Open { device, shadow, .. } = o;
        if catch_unwind(AssertUnwindSafe(move || drop(device))).is_err() {
            log::error!(
                "nvme-driver: {}: error while closing the VFIO device",
                self.bdf
            );
        }
        drop(container);
        drop(shadow);
    }
}

impl Bus for VfioBus {
    fn name(&self) -> &str {
        &self.bdf
    }

    fn bar0(&self) -> &Mmio {
        &self.bar0
    }

    fn mapper(&self) -> Arc<dyn DmaMapper> {
        self.mapper.clone()
    }

    /// One non-blocking `read` of the eventfd until the request arrived, then a cached
    /// answer: poll it from the admin path, not per I/O.
    fn removal_requested(&self) -> bool {
        if self.removal.load(Ordering::Acquire) {
            return true;
        }
        match &self.req {
            Some(ev) if matches!(ev.read(), Ok(n) if n > 0) => {
                self.removal.store(true, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    fn release(&self) {
        self.release_inner();
    }
}

impl Drop for VfioBus {
    fn drop(&mut self) {
        self.release_inner();
        if let Some(map) = self.bar0_map() {
            // SAFETY: the mapping is ours (all-ones memory after release, or the BAR if
            // that failed) and `&mut self` means no `Mmio` borrow of it remains;
            // doorbell holders keep this bus alive by contract.
            unsafe { sys::unmap(map, self.bar0_map_len) };
        }
    }
}

struct MapperState {
    /// `None` once released: the IOMMU domain is gone.
    container: Option<Arc<VfioContainer>>,
    /// IOVA to length of every mapping made, to undo on release.
    maps: BTreeMap<u64, usize>,
}

/// Maps DMA memory into the container's IOMMU domain (VFIO type1).
struct VfioMapper {
    bdf: String,
    state: Mutex<MapperState>,
}

impl fmt::Debug for VfioMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("VfioMapper")
            .field("bdf", &self.bdf)
            .field("released", &s.container.is_none())
            .field("mappings", &s.maps.len())
            .finish()
    }
}

impl VfioMapper {
    /// Unmaps everything and gives up the container; later `map` calls fail and
    /// `unmap` calls succeed doing nothing.
    fn release(&self) -> Option<Arc<VfioContainer>> {
        let mut s = lock(&self.state);
        let c = s.container.take()?;
        for (iova, len) in std::mem::take(&mut s.maps) {
            // A failure leaves the mapping to the kernel, which drops the whole domain
            // when the group leaves the container.
            let _ = c.vfio_dma_unmap(iova, len);
        }
        Some(c)
    }
}

impl DmaMapper for VfioMapper {
    unsafe fn map(&self, vaddr: NonNull<u8>, len: usize, iova: Iova) -> Result<()> {
        let mut s = lock(&self.state);
        let Some(c) = s.container.as_ref() else {
            return Err(vfio_err(
                &self.bdf,
                format!(
                    "cannot map DMA memory at IOVA {:#x}: the device was released",
                    iova.0
                ),
                "open the controller again".into(),
            ));
        };
        // SAFETY: `DmaMapper::map`'s contract is `vfio_dma_map`'s: the range stays
        // valid, pinned memory until unmapped, and is only reached through raw pointers.
        let mapped = unsafe { c.vfio_dma_map(iova.0, len, vaddr.as_ptr()) };
        mapped.map_err(|e| {
            let what = format!(
                "IOMMU mapping of {len} bytes at IOVA {:#x} failed: {e}",
                iova.0
            );
            let enomem = matches!(&e, VfioError::IommuDmaMap(se) if se.errno() == libc::ENOMEM);
            let pinned: u64 = s.maps.values().map(|&l| l as u64).sum();
            let limit = enomem
                .then(|| unprivileged::memlock_refusal(&self.bdf, len, pinned))
                .flatten();
            match limit {
                Some((why, fix)) => vfio_err(&self.bdf, format!("{what}: {why}"), fix),
                None => vfio_err(
                    &self.bdf,
                    what,
                    "run as root or raise the locked-memory limit (`ulimit -l`); the IOMMU \
                     may also lack address bits for this IOVA (dmesg)"
                        .into(),
                ),
            }
        })?;
        s.maps.insert(iova.0, len);
        Ok(())
    }

    fn unmap(&self, iova: Iova, len: usize) -> Result<()> {
        let mut s = lock(&self.state);
        let Some(c) = s.container.as_ref() else {
            return Ok(());
        };
        c.vfio_dma_unmap(iova.0, len).map_err(|e| {
            vfio_err(
                &self.bdf,
                format!(
                    "IOMMU unmapping of {len} bytes at IOVA {:#x} failed: {e}",
                    iova.0
                ),
                "check dmesg for IOMMU messages".into(),
            )
        })?;
        s.maps.remove(&iova.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_is_normalized_or_refused_with_the_form() {
        assert_eq!(normalize_bdf("01:00.0").unwrap(), "0000:01:00.0");
        let e = normalize_bdf("nvme0").unwrap_err().to_string();
        assert!(e.starts_with("nvme0: not a PCI address"), "{e}");
        assert!(e.contains("0000:01:00.0"), "{e}");
    }

    #[test]
    fn open_of_a_missing_device_names_it() {
        let host = Host {
            sys: std::path::PathBuf::from("/nonexistent-sys"),
            dev: std::path::PathBuf::from("/nonexistent-dev"),
        };
        let e = VfioBus::open_on(&host, "0000:7f:00.0")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("0000:7f:00.0: no such PCI device"), "{e}");
    }

    #[test]
    fn pci_nvme_displays_driver_and_group() {
        let p = PciNvme {
            bdf: "0000:01:00.0".into(),
            driver: None,
            iommu_group: None,
            vendor: 0x1b36,
            device: 0x10,
        };
        assert_eq!(
            p.to_string(),
            "0000:01:00.0 (1b36:0010, no driver, no IOMMU group)"
        );
    }
}
