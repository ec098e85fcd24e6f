// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The controller's half of the seam: what the controller logic (`crate::ctrlr`, the
//! state machine, bring-up and the reset handshake) needs from the transport under a
//! whole controller, beside [`Transport`](super::Transport), which covers one queue.
//!
//! Linux splits its NVMe host the same way (`struct nvme_ctrl_ops` in
//! `drivers/nvme/host/nvme.h`: `reg_read32`/`reg_write32`/`reg_read64`, which return
//! an error, implemented by `pci.c` with MMIO and by `fabrics.c` with Property Get and
//! Set), and so does SPDK (`spdk_nvme_transport_ops`: `ctrlr_get_reg_4`,
//! `ctrlr_enable`, `ctrlr_create_io_qpair`, `ctrlr_connect_qpair`,
//! `ctrlr_get_max_xfer_size`). Each method below says what PCIe does
//! ([`crate::pcie::PcieCtrl`]) and what NVMe/TCP would do.
//!
//! The order the controller calls them in, at bring-up and at each reset:
//! 1. [`admin_queue`](CtrlTransport::admin_queue), once: the admin queue's host side.
//! 2. Properties read (CAP, VS, CSTS) and written (CC.EN = 0) with
//!    [`get_property32`](CtrlTransport::get_property32) and friends.
//! 3. [`connect_admin_queue`](CtrlTransport::connect_admin_queue), before each
//!    CC.EN = 1.
//! 4. Admin commands on the admin queue (Identify, Number of Queues, ...), then
//!    [`after_enable`](CtrlTransport::after_enable), after each enable.
//! 5. [`io_queue`](CtrlTransport::io_queue) for each new queue pair, then
//!    [`connect_io_queue`](CtrlTransport::connect_io_queue); again after each reset.
//! 6. [`disconnect_io_queue`](CtrlTransport::disconnect_io_queue) when a queue pair is
//!    dropped, before a reset and before shutdown.

use super::QueueTransport;
use crate::dma::{DmaMapper, DmaPool};
use crate::error::Result;
use crate::regs::Cap;
use crate::spec::{Cqe, Sqe};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The controller's admin queue, as a transport sees it when it makes or removes I/O
/// queues with admin commands (PCIe's Create and Delete I/O CQ/SQ). The controller
/// hands it out with its admin lock held.
pub trait AdminCommands {
    /// Sends `sqe` (its command identifier is set here) and waits at most `timeout`
    /// for its completion. A completion with an error status is an `Err` naming the
    /// command and the status.
    fn command(&mut self, sqe: Sqe, timeout: Duration) -> Result<Cqe>;
}

/// What an I/O queue's host side is made with ([`CtrlTransport::io_queue`]).
#[derive(Clone, Copy, Debug)]
pub struct IoQueueSpec {
    /// Queue identifier, 1 up to the I/O queues the controller granted.
    pub qid: u16,
    /// Submission queue entries, 2 up to CAP.MQES + 1.
    pub entries: u16,
    /// The controller's capabilities (CAP).
    pub cap: Cap,
    /// Describe data with SGLs: the controller supports them for I/O (Identify
    /// Controller SGLS) and the caller's options allow them.
    pub sgl: bool,
}

/// What [`CtrlTransport::after_enable`] is told of the controller it just enabled.
#[derive(Clone, Copy, Debug)]
pub struct Enabled {
    /// The controller's capabilities (CAP).
    pub cap: Cap,
    /// The I/O queues it granted (Number of Queues).
    pub io_queues: u16,
    /// Shadow doorbells are wanted (`ControllerOptions::shadow_doorbells`) and the
    /// controller offers them (Identify Controller OACS bit 8).
    pub shadow_doorbells: bool,
}

/// What the controller logic needs from the transport under one controller. One
/// value per controller, shared by its threads; nothing here is on the data path.
pub trait CtrlTransport: Send + Sync + fmt::Debug {
    /// The controller's name in messages: its PCI address, or the software
    /// controller's name (a fabric: the transport address and subsystem NQN).
    fn name(&self) -> &str;

    /// The mapper for the memory the controller's queues and buffers come from.
    fn mapper(&self) -> Arc<dyn DmaMapper>;

    /// Reads a 32-bit property (NVMe Base 2.0, section 3.1.3). PCIe: a load from BAR0,
    /// which cannot fail (a removed device reads all ones). Fabrics: a Property Get
    /// command, which can.
    fn get_property32(&self, off: usize) -> Result<u32>;

    /// Reads a 64-bit property (CAP). PCIe: two 32-bit loads, low half first (section
    /// 3.1.3). Fabrics: a Property Get with the 8-byte size.
    fn get_property64(&self, off: usize) -> Result<u64>;

    /// Writes a 32-bit property (CC). PCIe: a store to BAR0. Fabrics: Property Set.
    fn set_property32(&self, off: usize, v: u32) -> Result<()>;

    /// Makes the admin queue's host side (queue 0), its memory from `pool`. PCIe: the
    /// rings and doorbells of queue 0 and PRPs for data (section 4.1.2: admin commands
    /// use PRPs on PCIe). TCP: the admin connection and its ICReq/ICResp.
    fn admin_queue(&self, pool: &DmaPool, cap: Cap) -> Result<QueueTransport>;

    /// Tells the disabled controller where the admin queue is, before each CC.EN = 1;
    /// the queue is empty (rewound). PCIe: AQA, ASQ and ACQ (section 3.5.1, step 3).
    /// TCP: a Fabrics Connect for queue 0 (after a reset, on a new connection).
    fn connect_admin_queue(&self) -> Result<()>;

    /// Set-up on the admin queue after each enable and Number of Queues, before any
    /// I/O queue is connected (at bring-up and in every reset), with `pool` for
    /// memory and `timeout` per command. PCIe: Doorbell Buffer Config (section 5.11)
    /// for shadow doorbells, when wanted and offered: taken or refused at bring-up
    /// (refused, the registers stay in use), sent again after each reset to a
    /// controller that took it (an error then fails the reset). TCP: nothing.
    fn after_enable(
        &self,
        admin: &mut dyn AdminCommands,
        pool: &DmaPool,
        enabled: &Enabled,
        timeout: Duration,
    ) -> Result<()>;

    /// True when the I/O queues use shadow doorbells (PCIe's Doorbell Buffer Config,
    /// taken by the controller); false for transports without doorbells.
    fn uses_shadow_doorbells(&self) -> bool;

    /// Makes the host side of I/O queue `spec.qid`, its memory from `pool`; the
    /// device learns of it at [`connect_io_queue`](Self::connect_io_queue). PCIe: SQ
    /// and CQ memory, doorbells, a descriptor page per tracker. TCP: a connection and
    /// its ICReq/ICResp.
    fn io_queue(&self, pool: &DmaPool, spec: &IoQueueSpec) -> Result<QueueTransport>;

    /// Makes I/O queue `qid` (made by [`io_queue`](Self::io_queue)) live on the
    /// device, for a new queue pair and after each reset, each command waiting at
    /// most `timeout`. PCIe: Create I/O Completion Queue, then Create I/O Submission
    /// Queue on the admin queue (sections 5.4, 5.5). TCP: a Fabrics Connect with the
    /// QID on the queue's own connection.
    fn connect_io_queue(
        &self,
        admin: &mut dyn AdminCommands,
        qid: u16,
        timeout: Duration,
    ) -> Result<()>;

    /// Removes I/O queue `qid` from the device (its commands in flight are aborted
    /// by the controller), each command waiting at most `timeout`. PCIe: Delete I/O
    /// SQ, then Delete I/O CQ (sections 5.7, 5.6). TCP: the connection is closed.
    fn disconnect_io_queue(
        &self,
        admin: &mut dyn AdminCommands,
        qid: u16,
        timeout: Duration,
    ) -> Result<()>;

    /// The largest transfer one command can carry, given the controller's limit
    /// `mdts` (bytes; `u64::MAX` for none). PCIe: capped by one PRP list page per
    /// command (section 4.1.1). TCP: `mdts`.
    fn max_transfer_bytes(&self, mdts: u64) -> u64;

    /// True once the platform asked for the device back (VFIO's device request
    /// interrupt on hot-unplug). The controller then fails and releases it.
    fn removal_requested(&self) -> bool;

    /// Lets the device go (idempotent): afterwards property writes go nowhere and
    /// reads return all ones. Queues still running stay memory-safe.
    fn release(&self);
}
