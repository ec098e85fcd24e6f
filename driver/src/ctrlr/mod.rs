// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The controller: bring-up, the admin queue, I/O queue pair creation, async events,
//! timeouts, reset and failure (NVMe Base Specification 2.0, sections 3.5 "Controller
//! Initialization", 3.7 "Resets", 5 "Admin Command Set").
//!
//! The admin queue sits behind a mutex: it is not the data path. The data path (the
//! queue pairs) never takes that lock; it learns about resets and failure from one
//! atomic control word per queue pair, and asks the admin side for aborts and resets
//! through a lock-free queue and a flag.
//!
//! Somebody must call [`Controller::process_admin`] now and then (every few
//! milliseconds): it collects async events, aborts timed-out commands, notices fatal
//! status, surprise removal and hot-unplug requests, and performs requested resets.
//!
//! Where each part is: [`options`] (what callers choose, and a namespace's facts),
//! `init` (bring-up: enable, identify, queues), `admin` (the admin queue, over the
//! same transport as the I/O queues, and the admin commands), `queues` (I/O queue
//! pairs created and deleted on the device), `state` (the state machine: reset,
//! failure, housekeeping; `shutdown`: the orderly stop; the handshake with queue
//! pairs is [`crate::control`]). Everything particular to a transport (registers or
//! Property Get/Set, how queues are made and connected, the transfer limit) is
//! reached only through the controller's [`CtrlTransport`]; this module names no
//! transport.

mod admin;
mod init;
pub mod options;
mod queues;
mod rescan;
mod shutdown;
mod state;

use crate::control::AtomicCtrlState;
pub use crate::control::CtrlState;
use crate::dma::{DmaBuf, DmaPool};
use crate::error::{Error, Result};
use crate::lock;
use crate::qpair::{AdminSide, Namespaces, QpairShared};
use crate::regs::{self, Cap, Csts, Vs};
use crate::spec::{AnaLog, AsyncEvent, IdentifyController};
use crate::transport::CtrlTransport;
use admin::AdminQueue;
use crossbeam_queue::ArrayQueue;
pub use options::{ControllerOptions, Namespace};
pub use shutdown::ShutdownReport;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub(crate) struct CtrlInner {
    transport: Arc<dyn CtrlTransport>,
    pub(crate) name: String,
    pub(crate) pool: DmaPool,
    pub(crate) cap: Cap,
    pub(crate) vs: Vs,
    pub(crate) ident: IdentifyController,
    /// The active namespaces found at bring-up; their current sizes are `ns_sizes`.
    pub(crate) namespaces: Vec<Namespace>,
    /// The current size in blocks of each of `namespaces` (same order): updated by a
    /// rescan (`rescan.rs`), copied by queue pairs at their next poll.
    pub(crate) ns_sizes: Box<[AtomicU64]>,
    /// A rescan is due: a Namespace Attribute Changed notice arrived (a reset
    /// rescans by itself, `rescan.rs`).
    ns_rescan: AtomicBool,
    /// Size changes made by rescans (see [`Controller::namespace_changes`]).
    ns_changes: AtomicU64,
    pub(crate) max_xfer_bytes: u32,
    io_queues_granted: u16,
    state: AtomicCtrlState,
    epoch: AtomicU64,
    failure: Mutex<Option<String>>,
    failure_requested: Mutex<Option<String>>,
    fail_flag: AtomicBool,
    reset_wanted: AtomicBool,
    /// Moved by [`Controller::cancel_admin_waits`]: an admin wait that began before
    /// the move ends.
    admin_cancel: AtomicU64,
    /// Aborts the queue pairs asked for: the queue pair and the command's CID.
    aborts: ArrayQueue<(Arc<QpairShared>, u16)>,
    admin: Mutex<AdminQueue>,
    qpairs: Mutex<Vec<Arc<QpairShared>>>,
    events: Mutex<VecDeque<AsyncEvent>>,
    ana: Mutex<Option<AnaLog>>,
    /// IOVA windows mapped for this device that I/O buffers may come from: the
    /// controller's own pool, and any registered with `add_dma_window`.
    pub(crate) dma_windows: Mutex<Vec<(u64, u64)>>,
    resets: AtomicU64,
    opts: ControllerOptions,
    /// Called after queue pairs' control words change (see
    /// [`Controller::on_queue_state_change`]).
    queue_notifier: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for CtrlInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("device", &self.name)
            .field("model", &self.ident.mn)
            .field("state", &self.state())
            .finish()
    }
}

impl CtrlInner {
    pub(crate) fn state(&self) -> CtrlState {
        self.state.load()
    }

    fn admin_timeout(&self) -> Duration {
        Duration::from_millis(self.opts.admin_timeout_ms.max(1))
    }

    /// Controller Status (section 3.1.3.6). An error when the transport cannot read
    /// it (over a fabric, a Property Get that failed); on PCIe a removed device reads
    /// all ones instead.
    fn csts(&self) -> Result<Csts> {
        Ok(Csts(self.transport.get_property32(regs::CSTS)?))
    }

    pub(crate) fn failure_reason(&self) -> String {
        lock(&self.failure)
            .clone()
            .unwrap_or_else(|| "controller failed".into())
    }

    /// The error for a request to this controller once it failed.
    pub(crate) fn failed_error(&self) -> Error {
        Error::ControllerFailed {
            device: self.name.clone(),
            reason: self.failure_reason(),
        }
    }

    /// The error for a namespace this controller does not have.
    pub(crate) fn no_such_namespace(&self, nsid: u32) -> Error {
        Error::NoSuchNamespace {
            device: self.name.clone(),
            nsid,
            available: self.namespaces.iter().map(|n| n.nsid).collect(),
        }
    }

    /// The Abort of `cid` on `qpair` ended (answered, or dropped at a reset): the
    /// queue pair may reuse the CID. If the report cannot be queued, a reset frees
    /// the tracker instead.
    pub(crate) fn abort_ended(&self, qpair: &QpairShared, cid: u16) {
        if qpair.aborts_ended.push(cid).is_err() {
            self.reset_wanted.store(true, Ordering::Release);
        }
    }
}

/// What the queue pairs ask of their controller: the data path's reports, acted on
/// by the admin side at its next `process_admin`.
impl AdminSide for CtrlInner {
    fn name(&self) -> &str {
        &self.name
    }

    fn namespace_table(&self) -> Namespaces {
        let namespaces = self
            .namespaces
            .iter()
            .zip(self.ns_sizes.iter())
            .map(|(n, size)| (n.nsid, size.load(Ordering::Acquire), n.block_size));
        Namespaces::new(
            namespaces,
            self.max_xfer_bytes as u64,
            &lock(&self.dma_windows),
        )
    }

    fn namespace_sizes(&self) -> &[AtomicU64] {
        &self.ns_sizes
    }

    fn failed_error(&self) -> Error {
        CtrlInner::failed_error(self)
    }

    /// A queue pair saw something impossible: the admin side fails the controller
    /// at its next `process_admin`; until then the queue pair stops.
    fn request_failure(&self, reason: String) {
        let mut g = lock(&self.failure_requested);
        if g.is_none() {
            *g = Some(reason);
        }
        self.fail_flag.store(true, Ordering::Release);
    }

    /// Command `cid` of queue pair `qpair` passed its deadline: the admin side sends
    /// an Abort, and reports when it ended ([`CtrlInner::abort_ended`]).
    fn request_abort(&self, qpair: &Arc<QpairShared>, cid: u16) {
        if self.aborts.push((qpair.clone(), cid)).is_err() {
            // Too many timeouts at once: a reset deals with all of them (and frees
            // the trackers waiting for an Abort).
            self.reset_wanted.store(true, Ordering::Release);
        }
    }

    fn request_reset(&self) {
        self.reset_wanted.store(true, Ordering::Release);
    }

    fn release_qpair(&self, qpair: &Arc<QpairShared>) {
        self.destroy_qpair(qpair);
    }
}

/// An NVMe controller driven by this process.
#[derive(Debug, Clone)]
pub struct Controller(Arc<CtrlInner>);

impl Controller {
    /// The device's name (PCI address).
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.0.ident
    }
    /// Controller Capabilities.
    pub fn cap(&self) -> Cap {
        self.0.cap
    }
    /// Version.
    pub fn version(&self) -> Vs {
        self.0.vs
    }
    /// Active namespaces, with their current sizes (`nsze`; `id` is the Identify
    /// Namespace data read at bring-up).
    pub fn namespaces(&self) -> Vec<Namespace> {
        (0..self.0.namespaces.len())
            .map(|i| self.0.namespace_at(i))
            .collect()
    }
    /// One namespace with its current size, or a clear error listing those that exist.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace> {
        self.0
            .namespaces
            .iter()
            .position(|n| n.nsid == nsid)
            .map(|i| self.0.namespace_at(i))
            .ok_or_else(|| self.0.no_such_namespace(nsid))
    }
    /// How many times a namespace of this controller changed size so far: a rescan
    /// after a Namespace Attribute Changed notice (or after a reset, which may have
    /// lost one) found a new NSZE. A caller that follows sizes compares it with the
    /// value it saw last, then reads [`namespaces`](Self::namespaces).
    pub fn namespace_changes(&self) -> u64 {
        self.0.ns_changes.load(Ordering::Acquire)
    }
    /// Largest transfer of one command in bytes (MDTS, capped by what the transport
    /// describes: one PRP list page on PCIe).
    pub fn max_transfer_bytes(&self) -> u32 {
        self.0.max_xfer_bytes
    }
    /// True when I/O data is described with SGLs: the controller supports them
    /// (Identify Controller SGLS) and [`ControllerOptions::enable_sgl`] is set.
    pub fn uses_sgl(&self) -> bool {
        self.0.uses_sgl()
    }
    /// True when the I/O queues use shadow doorbells (the controller took Doorbell
    /// Buffer Config; see [`ControllerOptions::shadow_doorbells`]).
    pub fn uses_shadow_doorbells(&self) -> bool {
        self.0.transport.uses_shadow_doorbells()
    }
    /// I/O queues the controller granted.
    pub fn io_queues(&self) -> u16 {
        self.0.io_queues_granted
    }
    /// Current state.
    pub fn state(&self) -> CtrlState {
        self.0.state()
    }
    /// Why the controller failed, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.0.failure).clone()
    }
    /// Completed resets.
    pub fn reset_count(&self) -> u64 {
        self.0.resets.load(Ordering::Relaxed)
    }
    /// The DMA pool for buffers this controller's queue pairs may use.
    pub fn dma_pool(&self) -> &DmaPool {
        &self.0.pool
    }
    /// Asks to be told, by a call of `f` on the thread making the change, whenever
    /// this controller changes the state of its queue pairs: a reset starts (each
    /// queue pair must then acknowledge it at its owner's next poll, or is failed after
    /// 2 s), a reset ends, or the controller fails. For owners that skip polling queue
    /// pairs with nothing in flight ([`IoQpair::needs_poll`](crate::IoQpair::needs_poll)
    /// false): `f` tells them to look again. `f` must not block. One per controller;
    /// a second call is refused with [`Error::InvalidArgument`].
    pub fn on_queue_state_change(&self, f: impl Fn() + Send + Sync + 'static) -> Result<()> {
        self.0.queue_notifier.set(Box::new(f)).map_err(|_| {
            Error::InvalidArgument(format!(
                "{}: a queue-state notifier is already set; set one per controller",
                self.0.name
            ))
        })
    }
    /// Registers another IOVA window mapped into this device's address space (by a
    /// mapper the caller drives, e.g. the block layer's buffers shared by all paths),
    /// so I/O buffers from it are accepted. Queue pairs created afterwards see it; at
    /// most four windows.
    pub fn add_dma_window(&self, base: crate::dma::Iova, len: u64) -> Result<()> {
        let mut w = lock(&self.0.dma_windows);
        if w.len() >= crate::qpair::MAX_DMA_WINDOWS {
            return Err(Error::InvalidArgument(format!(
                "{}: at most {} DMA windows",
                self.0.name,
                crate::qpair::MAX_DMA_WINDOWS
            )));
        }
        w.push((base.0, len));
        Ok(())
    }

    /// Allocates a DMA buffer for I/O on this controller.
    pub fn alloc_buffer(&self, len: usize) -> Result<DmaBuf> {
        self.0.pool.alloc(len)
    }
    /// The latest ANA log read, if the controller supports ANA.
    pub fn ana_log(&self) -> Option<AnaLog> {
        lock(&self.0.ana).clone()
    }
}

impl CtrlInner {
    /// `namespaces[i]` with its current size.
    fn namespace_at(&self, i: usize) -> Namespace {
        let mut ns = self.namespaces[i].clone();
        ns.nsze = self.ns_sizes[i].load(Ordering::Acquire);
        ns
    }

    /// See [`Controller::uses_sgl`].
    pub(crate) fn uses_sgl(&self) -> bool {
        self.opts.enable_sgl && crate::sgl::supported(self.ident.sgls)
    }
}

impl Drop for CtrlInner {
    fn drop(&mut self) {
        // The last queue pair is gone; stop the device before its queues' memory is
        // unmapped, so it cannot DMA into memory that is being reused.
        if self.state() != CtrlState::Failed && self.csts().is_ok_and(|c| !c.is_all_ones()) {
            let _ = self.disable();
        }
    }
}
