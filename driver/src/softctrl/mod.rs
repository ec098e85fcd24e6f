// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A software NVMe controller: the device side of NVMe, on host memory, behind the
//! same [`Bus`], [`Mmio`] and [`DmaMapper`] interfaces as a real device, for tests
//! that a real controller (or QEMU's) cannot stage.
//!
//! The model: [`SoftController::start`] allocates a 16 KiB page-aligned register file
//! and starts a device thread that polls it, as a controller's firmware would poll its
//! doorbells. The host drives the controller exactly as it drives hardware: it writes
//! AQA/ASQ/ACQ and CC.EN, waits for CSTS.RDY, places commands in submission queues in
//! DMA memory and rings doorbells. The device reaches host memory only through the
//! IOVAs that the host's [`crate::dma::DmaPool`] mapped with [`Bus::mapper`]: a
//! translation table plays the IOMMU, and a DMA to an unmapped IOVA fails the command
//! with Data Transfer Error instead of touching random memory.
//!
//! What it implements: CAP/VS/CC/CSTS/AQA/ASQ/ACQ and doorbells (DSTRD 0, 4 KiB
//! pages); the admin commands a host driver needs (Identify CNS 0-3, Create/Delete
//! I/O CQ/SQ, Get Log Page for error, SMART, changed namespace and ANA logs, Get/Set
//! Features, Async Event Request, Abort); the NVM I/O commands Read, Write, Flush,
//! Write Zeroes and Dataset Management (deallocate) with PRP entries and chained PRP
//! lists; namespaces whose data can be shared by two controllers (two paths to one
//! namespace); ANA groups whose state tests set per controller.
//!
//! What it does on purpose, when a test asks through [`Faults`]: delayed, reordered,
//! dropped (held until aborted) and duplicated completions, admin completions kept
//! until the test releases them, completions with a bogus command identifier, a
//! wrong phase or a wrong SQ head, controller fatal status, surprise removal, ANA
//! state changes with their asynchronous events, namespaces resized while attached
//! ([`Namespace::resize`]: Namespace Attribute Changed notices and the Changed
//! Namespace List log page). A small [`SoftConfig::mqes`] forces
//! tag exhaustion; [`SoftConfig::mdts`] sets the transfer limit.
//!
//! It is a test tool: it takes locks, allocates and is not fast, and the device
//! thread spins for a short while after work and then sleeps tens of microseconds
//! between scans so an idle controller costs no core.

mod device;
mod faults;
mod mapper;
mod namespace;
#[cfg(test)]
mod sgl_tests;
#[cfg(test)]
mod tests;

pub use faults::Faults;
pub use mapper::SoftMapper;
pub use namespace::Namespace;

use crate::bus::Bus;
use crate::dma::DmaMapper;
use crate::error::{Error, Result};
use crate::mmio::Mmio;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Size of the register file: registers in the first page, doorbells after.
pub const REGS_SIZE: usize = 16 << 10;

/// Largest number of I/O queue pairs the register file has doorbells for
/// (DSTRD 0: 8 bytes per queue pair from offset 0x1000, admin pair included).
pub const MAX_IO_QUEUES: u16 = ((REGS_SIZE - crate::regs::DOORBELL_BASE) / 8 - 1) as u16;

/// How a software controller is built. `SoftConfig::default()` is one controller with
/// one 1 GiB namespace of 512-byte blocks, MQES 1023, MDTS 5 (128 KiB), no ANA.
#[derive(Clone, Debug)]
pub struct SoftConfig {
    /// Name in messages ([`Bus::name`]).
    pub name: String,
    /// Serial number (Identify Controller SN, at most 20 characters).
    pub serial: String,
    /// Model number (at most 40 characters).
    pub model: String,
    /// Firmware revision (at most 8 characters).
    pub firmware: String,
    /// NVM subsystem NQN: give two controllers the same one (and the same
    /// [`Namespace`]s) to make them two paths to one subsystem.
    pub subnqn: String,
    /// Controller ID (Identify Controller CNTLID); give each path its own.
    pub cntlid: u16,
    /// CAP.MQES, zero based: the largest queue has `mqes + 1` entries. At least 1.
    pub mqes: u16,
    /// CAP.TO, in 500 ms units: how long the host should wait for CSTS.RDY.
    pub cap_to: u8,
    /// MDTS as a power of two of 4 KiB pages (5 = 128 KiB); 0 means no limit.
    pub mdts: u8,
    /// Number of I/O queue pairs the controller offers (Number of Queues feature), at
    /// most [`MAX_IO_QUEUES`].
    pub max_io_queues: u16,
    /// The namespaces, by NSID. Pass the same `Arc<Namespace>` to two controllers to
    /// share its data (and NGUID) between them.
    pub namespaces: Vec<Arc<Namespace>>,
    /// Report Asymmetric Namespace Access: CMIC bit 3, ANA fields in Identify
    /// Controller, ANA group IDs in Identify Namespace, the ANA log page, OAES bit 11,
    /// and ANA path errors for I/O to groups that are not accessible. ANA change
    /// notices start enabled in the Asynchronous Event Configuration feature (bit
    /// 11), so a host that never sets that feature still receives them.
    pub ana: bool,
    /// ANA Transition Time (ANATT) reported in Identify Controller, in seconds: how
    /// long a host waits for a path in ANA change before giving up on it.
    pub anatt_s: u8,
    /// Report that the subsystem may have several controllers and namespaces may be
    /// shared (CMIC bit 1, NMIC bit 0). Implied by `ana`.
    pub multi_controller: bool,
    /// How long the device thread sleeps between scans once it has been idle for a
    /// while.
    pub idle_sleep_us: u64,
    /// Identify Controller SGLS: bits 1:0 only (00b: no SGLs, PRPs only; 01b: SGLs
    /// for I/O without alignment rule; 10b: SGLs whose Data Blocks are dword aligned
    /// in address and length). Default 01b. The controller walks Data Block, Segment
    /// and Last Segment descriptors and refuses others (NVMe Base 2.0, 4.1.2).
    pub sgls: u32,
    /// Report a volatile write cache (Identify Controller VWC bit 0). The model keeps
    /// no cache (writes reach the namespace at once); it counts the Flushes that
    /// follow the last write before each shutdown notification
    /// ([`Counters::flushes_before_shutdown`]). Default off.
    pub vwc: bool,
    /// RTD3 Entry Latency reported in Identify Controller, microseconds (0: not
    /// reported).
    pub rtd3e_us: u32,
    /// How long shutdown processing takes: CSTS.SHST reads 01b (occurring) for this
    /// long after CC.SHN is written, then 10b (complete). Default 0 (at once).
    pub shutdown_ms: u64,
}

impl Default for SoftConfig {
    fn default() -> Self {
        SoftConfig {
            name: "softnvme0".into(),
            serial: "SOFT0001".into(),
            model: "nvme-driver software controller".into(),
            firmware: "1.0".into(),
            subnqn: "nqn.2024-01.org.nvme-driver:soft0".into(),
            cntlid: 1,
            mqes: 1023,
            cap_to: 2,
            mdts: 5,
            max_io_queues: 64,
            namespaces: vec![Arc::new(Namespace::new(1, 2 << 20, 512).expect(
                "a 1 GiB namespace of 512-byte blocks with NSID 1 is a valid namespace",
            ))],
            ana: false,
            anatt_s: 10,
            multi_controller: false,
            idle_sleep_us: 20,
            sgls: 1,
            vwc: false,
            rtd3e_us: 0,
            shutdown_ms: 0,
        }
    }
}

impl SoftConfig {
    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(format!("{}: {what}", self.name)));
        if self.mqes == 0 {
            return bad("MQES must be at least 1 (queues of 2 entries)".into());
        }
        if self.sgls & !3 != 0 || self.sgls == 3 {
            return bad(format!(
                "SGLS {:#x}: only bits 1:0 are modelled and 11b is reserved; use 0 (PRPs \
                 only), 1 (SGLs) or 2 (SGLs, dword aligned)",
                self.sgls
            ));
        }
        if self.max_io_queues == 0 || self.max_io_queues > MAX_IO_QUEUES {
            return bad(format!(
                "max_io_queues {} is outside 1..={MAX_IO_QUEUES}",
                self.max_io_queues
            ));
        }
        if self.mdts > 20 {
            return bad(format!("MDTS {} is above 20", self.mdts));
        }
        let mut nsids: Vec<u32> = self.namespaces.iter().map(|n| n.nsid()).collect();
        nsids.sort_unstable();
        if nsids.windows(2).any(|w| w[0] == w[1]) {
            return bad(format!("duplicate NSIDs in {nsids:?}"));
        }
        if nsids.len() > 1024 {
            return bad("more than 1024 namespaces".into());
        }
        Ok(())
    }
}

/// Commands and completions seen by the device, for tests to check what the host did.
pub struct Counters {
    admin: [AtomicU64; 256],
    io: [AtomicU64; 256],
    completions_posted: AtomicU64,
    invalid_doorbell_writes: AtomicU64,
    held: AtomicU64,
    scans: AtomicU64,
    disabled_with_io_queues: AtomicU64,
    sgl_transfers: AtomicU64,
    prp_transfers: AtomicU64,
    ana_errors: AtomicU64,
    sq_deletion_aborts: AtomicU64,
    shutdown_notifications: AtomicU64,
    shutdowns_completed: AtomicU64,
    shutdowns_abandoned: AtomicU64,
    flushes_before_shutdown: AtomicU64,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("commands_fetched", &self.commands_fetched())
            .field("completions_posted", &self.completions_posted())
            .field("held", &self.held_commands())
            .field("disabled_with_io_queues", &self.disabled_with_io_queues())
            .field("shutdown_notifications", &self.shutdown_notifications())
            .field("shutdowns_completed", &self.shutdowns_completed())
            .field("shutdowns_abandoned", &self.shutdowns_abandoned())
            .field("flushes_before_shutdown", &self.flushes_before_shutdown())
            .finish()
    }
}

impl Counters {
    fn new() -> Self {
        Counters {
            admin: [const { AtomicU64::new(0) }; 256],
            io: [const { AtomicU64::new(0) }; 256],
            completions_posted: AtomicU64::new(0),
            invalid_doorbell_writes: AtomicU64::new(0),
            held: AtomicU64::new(0),
            scans: AtomicU64::new(0),
            disabled_with_io_queues: AtomicU64::new(0),
            sgl_transfers: AtomicU64::new(0),
            prp_transfers: AtomicU64::new(0),
            ana_errors: AtomicU64::new(0),
            sq_deletion_aborts: AtomicU64::new(0),
            shutdown_notifications: AtomicU64::new(0),
            shutdowns_completed: AtomicU64::new(0),
            shutdowns_abandoned: AtomicU64::new(0),
            flushes_before_shutdown: AtomicU64::new(0),
        }
    }
    /// Normal or abrupt shutdown notifications: CC.SHN written non-zero (after being
    /// zero) while the device was present (NVMe Base 2.0, section 3.6.1).
    pub fn shutdown_notifications(&self) -> u64 {
        self.shutdown_notifications.load(Ordering::Relaxed)
    }
    /// Shutdown processing that ran to its end: CSTS.SHST went to 10b
    /// ([`SoftConfig::shutdown_ms`] after the notification).
    pub fn shutdowns_completed(&self) -> u64 {
        self.shutdowns_completed.load(Ordering::Relaxed)
    }
    /// Shutdown processing the host cut short: it cleared CC.SHN or CC.EN, or
    /// released the device, while CSTS.SHST still read 01b. Zero for a host that
    /// waits for SHST = 10b (within the time the device needs).
    pub fn shutdowns_abandoned(&self) -> u64 {
        self.shutdowns_abandoned.load(Ordering::Relaxed)
    }
    /// Flush commands (any namespace, NSID FFFFFFFFh included) completed after the
    /// last write (Write, Write Zeroes, Dataset Management) and before a shutdown
    /// notification, summed over notifications: a host that flushes each namespace
    /// once before shutting down adds the number of namespaces per shutdown.
    pub fn flushes_before_shutdown(&self) -> u64 {
        self.flushes_before_shutdown.load(Ordering::Relaxed)
    }
    /// Data transfers (of commands that moved data) the command described with an
    /// SGL, walked successfully.
    pub fn sgl_transfers(&self) -> u64 {
        self.sgl_transfers.load(Ordering::Relaxed)
    }
    /// Data transfers the command described with PRPs, walked successfully.
    pub fn prp_transfers(&self) -> u64 {
        self.prp_transfers.load(Ordering::Relaxed)
    }
    /// I/O commands completed with an ANA path status (inaccessible, persistent loss,
    /// transition) because their namespace's group was not accessible here.
    pub fn ana_errors(&self) -> u64 {
        self.ana_errors.load(Ordering::Relaxed)
    }
    /// Held I/O commands (see [`Faults::drop_io_completions`]) completed with Aborted
    /// SQ Deletion because the host deleted their submission queue.
    pub fn sq_deletion_aborts(&self) -> u64 {
        self.sq_deletion_aborts.load(Ordering::Relaxed)
    }
    /// Admin commands with opcode `opc` fetched from the admin SQ.
    pub fn admin_fetched(&self, opc: u8) -> u64 {
        self.admin[opc as usize].load(Ordering::Relaxed)
    }
    /// I/O commands with opcode `opc` fetched from any I/O SQ.
    pub fn io_fetched(&self, opc: u8) -> u64 {
        self.io[opc as usize].load(Ordering::Relaxed)
    }
    /// All commands fetched.
    pub fn commands_fetched(&self) -> u64 {
        self.admin
            .iter()
            .chain(self.io.iter())
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
    /// Completion queue entries written (duplicates and bogus ones included).
    pub fn completions_posted(&self) -> u64 {
        self.completions_posted.load(Ordering::Relaxed)
    }
    /// Doorbell writes the device ignored because the value was out of range.
    pub fn invalid_doorbell_writes(&self) -> u64 {
        self.invalid_doorbell_writes.load(Ordering::Relaxed)
    }
    /// Commands whose completions are being held (see [`Faults::drop_io_completions`]).
    pub fn held_commands(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
    /// Scans of the register file by the device thread.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }
    /// Times the host cleared CC.EN while I/O submission or completion queues still
    /// existed on a controller that could have deleted them (not in fatal status).
    /// A host must delete its I/O queues first: QEMU 7.2's controller crashed, rarely,
    /// when disabled with I/O queues alive. Zero for a well-behaved host.
    pub fn disabled_with_io_queues(&self) -> u64 {
        self.disabled_with_io_queues.load(Ordering::Relaxed)
    }
}

/// The register file: 16 KiB of zeroed, page-aligned heap memory.
struct RegFile {
    mmio: Mmio,
    ptr: NonNull<u8>,
}

const REGS_LAYOUT: std::alloc::Layout = match std::alloc::Layout::from_size_align(REGS_SIZE, 4096) {
    Ok(l) => l,
    Err(_) => panic!("16 KiB aligned to 4 KiB is a valid layout"),
};

// SAFETY: the register file is plain heap memory owned by this value; all access goes
// through `Mmio` (volatile, valid from any thread) and the pointer is only used again
// to free the memory in `Drop`.
unsafe impl Send for RegFile {}
// SAFETY: as for `Send`: shared use is volatile register access through `Mmio`.
unsafe impl Sync for RegFile {}

impl RegFile {
    fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(REGS_LAYOUT) };
        let Some(ptr) = NonNull::new(p) else {
            std::alloc::handle_alloc_error(REGS_LAYOUT)
        };
        // SAFETY: `ptr` is REGS_SIZE bytes, 4 KiB aligned, and lives until this
        // `RegFile` is dropped, which also drops the `Mmio`.
        let mmio = unsafe { Mmio::new(ptr, REGS_SIZE) };
        RegFile { mmio, ptr }
    }
}

impl Drop for RegFile {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout; the device thread has ended
        // (it holds the `Shared` that owns this) and the `Mmio` dies with us.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), REGS_LAYOUT) };
    }
}

/// State shared by the controller handle and its device thread.
struct Shared {
    config: SoftConfig,
    regs: RegFile,
    mapper: Arc<SoftMapper>,
    faults: Faults,
    counters: Counters,
    stop: AtomicBool,
    released: AtomicBool,
    /// The device thread stands aside; the test drives the device with `step`.
    manual: AtomicBool,
}

/// A running software NVMe controller. Dropping the last reference stops its
/// device thread.
pub struct SoftController {
    shared: Arc<Shared>,
    device: Arc<Mutex<device::Device>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for SoftController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftController")
            .field("name", &self.shared.config.name)
            .field(
                "csts",
                &format_args!("{:#x}", self.shared.regs.mmio.read32(crate::regs::CSTS)),
            )
            .field("counters", &self.shared.counters)
            .finish()
    }
}

impl SoftController {
    /// Starts a controller with its device thread.
    ///
    /// # Panics
    /// If the configuration is invalid or the thread cannot be spawned; use
    /// [`SoftController::try_start`] to get an error instead.
    pub fn start(config: SoftConfig) -> Arc<Self> {
        match Self::try_start(config) {
            Ok(c) => c,
            Err(e) => panic!("cannot start the software NVMe controller: {e}"),
        }
    }

    /// Starts a controller with its device thread, or says why the configuration
    /// cannot work.
    pub fn try_start(config: SoftConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let name = config.name.clone();
        let faults = Faults::new(&config);
        let shared = Arc::new(Shared {
            mapper: Arc::new(SoftMapper::new(&name)),
            regs: RegFile::new(),
            faults,
            counters: Counters::new(),
            stop: AtomicBool::new(false),
            released: AtomicBool::new(false),
            manual: AtomicBool::new(false),
            config,
        });
        let device = Arc::new(Mutex::new(device::Device::new(shared.clone())));
        let (dev, sh) = (device.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("{name}-dev"))
            .spawn(move || device::run(&dev, &sh))
            .map_err(|source| Error::Io {
                device: name,
                what: "spawning the device thread".into(),
                source,
            })?;
        Ok(Arc::new(SoftController {
            shared,
            device,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The fault injection knobs, usable while the device runs.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// What the device has seen and done.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The configuration the controller was started with.
    pub fn config(&self) -> &SoftConfig {
        &self.shared.config
    }

    /// The namespaces, in configuration order.
    pub fn namespaces(&self) -> &[Arc<Namespace>] {
        &self.shared.config.namespaces
    }

    /// The translation table the device uses for DMA (what [`Bus::mapper`] returns,
    /// with its concrete type).
    pub fn soft_mapper(&self) -> &Arc<SoftMapper> {
        &self.shared.mapper
    }

    /// Sets the ANA state of group `grpid` as this controller reports it; shorthand
    /// for [`Faults::set_ana_state`].
    pub fn set_ana_state(&self, grpid: u32, state: crate::spec::AnaState) -> Result<()> {
        self.shared.faults.set_ana_state(grpid, state)
    }

    /// Resizes namespace `nsid` to `nblocks` blocks; shorthand for
    /// [`Namespace::resize`], which every controller serving the namespace reports
    /// with a Namespace Attribute Changed notice.
    pub fn resize_namespace(&self, nsid: u32, nblocks: u64) -> Result<()> {
        let ns = self.namespaces().iter().find(|n| n.nsid() == nsid);
        match ns {
            Some(ns) => ns.resize(nblocks),
            None => Err(Error::InvalidArgument(format!(
                "{}: no namespace {nsid}; namespaces: {:?}",
                self.shared.config.name,
                self.namespaces()
                    .iter()
                    .map(|n| n.nsid())
                    .collect::<Vec<_>>()
            ))),
        }
    }

    /// Manual mode: the device thread stops scanning (after its current scan) and the
    /// caller drives the device with [`step`](Self::step), on its own thread. This
    /// makes the device's work deterministic and separable from the host's, which is
    /// what instruction-count benchmarks need.
    pub fn set_manual(&self, manual: bool) {
        self.shared.manual.store(manual, Ordering::Release);
    }

    /// One scan of registers and queues on the caller's thread: fetches and executes
    /// every command rung in, posts completions. Returns true if anything happened.
    pub fn step(&self) -> bool {
        self.device.lock().unwrap_or_else(|e| e.into_inner()).step()
    }

    /// Stops the device thread (idempotent). Registers keep their last values and
    /// nothing processes doorbells any more.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                log::error!("{}: the device thread panicked", self.shared.config.name);
            }
        }
    }
}

impl Drop for SoftController {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Bus for SoftController {
    fn name(&self) -> &str {
        &self.shared.config.name
    }
    fn bar0(&self) -> &Mmio {
        &self.shared.regs.mmio
    }
    fn mapper(&self) -> Arc<dyn DmaMapper> {
        self.shared.mapper.clone()
    }
    fn removal_requested(&self) -> bool {
        self.shared.faults.is_removed()
    }
    /// After release the device stops and keeps its registers at all ones (refilled
    /// on each scan, so a value the host writes reads back as all ones within one
    /// scan).
    fn release(&self) {
        self.shared.released.store(true, Ordering::Release);
    }
}
