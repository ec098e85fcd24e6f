// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The seam between the transport-neutral core (the controller state machine in
//! [`crate::ctrlr`], the queue pairs' NVMe logic in [`crate::qpair`]) and the wires
//! that carry commands, as Linux splits `core.c` from `pci.c`/`fabrics.c`/`tcp.c` and
//! SPDK splits `nvme_ctrlr.c` and `nvme_qpair.c` from `nvme_pcie*.c`/`nvme_tcp.c`.
//! Two traits, one per queue and one per controller:
//!
//! - [`Transport`], one queue's wire: the NVMe logic of a queue pair (trackers and
//!   command identifiers, the pending queue, split requests, completion dispatch,
//!   timeouts, the reset handshake) is written once over it, and so is the admin
//!   queue. A transport moves commands and completions and describes data buffers.
//!   [`QueueTransport`] is the one the core holds: an enum over the transports,
//!   chosen at run time and matched (not called through a vtable) on the data path.
//! - [`CtrlTransport`], the whole controller's: properties (registers) read and
//!   written with a `Result`, the admin queue made and connected, I/O queues made,
//!   connected and disconnected, the limits a transport adds (the largest transfer),
//!   removal. The controller holds one as `Arc<dyn CtrlTransport>`: it is never on
//!   the data path.
//!
//! PCIe ([`crate::pcie`]: [`crate::pcie::PcieQueue`], [`crate::pcie::PcieCtrl`]) is
//! the one transport so far: a submission and a completion ring in host memory with
//! doorbells in BAR0; data described by an SGL or PRP entries in the command.
//! NVMe/TCP would fit the same traits: `post` appends a command capsule to the
//! socket's send buffer, `ring_doorbell` sends it, `peek_completion` and
//! `pop_completion` parse response capsules from the receive buffer, `describe_data`
//! sets an SGL transport data block descriptor instead of PRPs, and `rewind` drops
//! what the old connection had buffered; the controller's properties are Property
//! Get/Set commands, and connecting a queue is a Fabrics Connect.
//!
//! This module is the one place that names every transport (the enum); the core
//! imports nothing from `pcie/`, and `pcie/` nothing from the core.

mod ctrl;
mod queue;

pub use ctrl::{AdminCommands, CtrlTransport, Enabled, IoQueueSpec};
pub(crate) use queue::io_qpair;
pub use queue::{IoQpair, QueueTransport};

/// The transport of a controller on a PCIe function (`bus`: VFIO, or the software
/// controller).
pub(crate) fn pcie(bus: std::sync::Arc<dyn crate::bus::Bus>) -> std::sync::Arc<dyn CtrlTransport> {
    std::sync::Arc::new(crate::pcie::PcieCtrl::new(bus))
}

use crate::spec::{Cqe, Sqe};

/// What the NVMe logic of a queue pair needs from the wire under it. One owner
/// thread calls every method (`&mut self`); none allocates, locks or sleeps.
pub trait Transport: Send + std::fmt::Debug {
    /// Commands that may be in flight at once (the trackers the NVMe logic keeps).
    fn depth_max(&self) -> usize;

    /// Describes `len` bytes of data at `iova` (dword aligned, within the transfer
    /// the controller allows per command) in `sqe`, for the command on tracker `tag`
    /// (below `depth_max`; the key of per-command transport state such as a PRP list
    /// page), which is not in flight.
    fn describe_data(&mut self, tag: u16, sqe: &mut Sqe, iova: u64, len: u64);

    /// What a vectored request's commands must respect: pieces per command, and
    /// whether slices must join on page boundaries (see [`crate::iov`]).
    fn vector_limits(&self) -> crate::iov::Limits;

    /// Describes the `len` bytes at byte `offset` of the vector `slices` in `sqe`, as
    /// `describe_data` does for one buffer; the bytes keep `vector_limits`.
    fn describe_vectored(
        &mut self,
        tag: u16,
        sqe: &mut Sqe,
        slices: &[crate::dma::DmaSlice],
        offset: u64,
        len: u64,
    );

    /// Attaches a one-range Dataset Management range (context attributes 0, `nlb`
    /// blocks at `slba`) to `sqe` as its data, for the command on tracker `tag`, which
    /// is not in flight.
    fn describe_dsm_range(&mut self, tag: u16, sqe: &mut Sqe, slba: u64, nlb: u32);

    /// Queues a command for the device; it is sent at the next `ring_doorbell`.
    /// The NVMe logic never has more than `depth_max` commands in flight.
    fn post(&mut self, sqe: &Sqe);

    /// True when commands were posted since the last `ring_doorbell`.
    fn has_unannounced(&self) -> bool;

    /// Announces the commands posted since the last call; true if it did anything.
    fn ring_doorbell(&mut self) -> bool;

    /// Drops commands posted but not announced (the controller failed).
    fn discard_unannounced(&mut self);

    /// The next completion, if one arrived; it stays until `pop_completion`.
    fn peek_completion(&self) -> Option<CqeTail>;

    /// Dword 0 of the completion `peek_completion` returned, still unpopped: command
    /// specific, used by admin commands only (Get/Set Features, Async Event Request,
    /// Abort); the I/O path never asks for it.
    fn completion_dw0(&self) -> u32;

    /// Consumes the completion `peek_completion` returned.
    fn pop_completion(&mut self);

    /// Tells the device that `popped` more completions were consumed, when it needs
    /// to know; true if it did anything.
    fn release_completions(&mut self, popped: usize) -> bool;

    /// Where the completion stream stands: equal values mean nothing was consumed
    /// in between.
    fn position(&self) -> u32;

    /// Forgets every command and completion: the device no longer has the queues
    /// (controller disabled); it gets them back empty.
    fn rewind(&mut self);
}

/// The words of a completion (the CQE on PCIe, the response capsule's CQE on a
/// fabric) the owner checks before it trusts one:
/// dword 2 (SQ head, SQ identifier) and dword 3 (command identifier, phase, status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CqeTail {
    /// Dword 2: SQ head (bits 15:0), SQ identifier (31:16).
    pub dw2: u32,
    /// Dword 3: command identifier (15:0), phase tag (16), status (31:17).
    pub dw3: u32,
}

impl CqeTail {
    /// The command identifier.
    #[inline(always)]
    pub fn cid(self) -> u16 {
        self.dw3 as u16
    }
    /// The SQ head pointer the device reports.
    #[inline(always)]
    pub fn sq_head(self) -> u16 {
        self.dw2 as u16
    }
    /// The SQ identifier.
    #[inline(always)]
    pub fn sq_id(self) -> u16 {
        (self.dw2 >> 16) as u16
    }
    /// The status field without the phase tag.
    #[inline(always)]
    pub fn status_field(self) -> u16 {
        (self.dw3 >> 17) as u16
    }
    /// The whole completion, given its dword 0 (`Transport::completion_dw0`); dword 1
    /// (command specific, used by no command this driver sends) reads 0.
    pub fn with_dw0(self, dw0: u32) -> Cqe {
        Cqe {
            dw0,
            dw1: 0,
            sq_head: self.sq_head(),
            sq_id: self.sq_id(),
            cid: self.cid(),
            status: (self.dw3 >> 16) as u16,
        }
    }
}
