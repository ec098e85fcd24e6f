// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Queue set-up over PCIe: the one seam through which the controller (`crate::ctrlr`)
//! makes queues and registers them with the device. The controller calls these
//! functions in this order; an NVMe/TCP transport would offer the same functions,
//! each doing its counterpart (NVMe/TCP Transport Specification 1.0, NVMe over
//! Fabrics: the Connect command, Property Get/Set):
//!
//! 1. [`admin_queue`]: the admin queue's host side, queue 0 over a [`PcieQueue`] with
//!    PRPs only (NVMe Base Specification 2.0, section 4.1.2: admin commands use PRPs
//!    on PCIe). TCP: open the admin connection and exchange ICReq/ICResp.
//! 2. [`register_admin_queue`], each time before CC.EN is set: AQA, ASQ and ACQ
//!    (section 3.1.3, 3.5.1 step 3). TCP: a Fabrics Connect for queue 0 (the
//!    controller's registers are then read and written with Property Get/Set, which
//!    the bus's `Properties` already hides).
//! 3. [`io_queue`]: an I/O queue's host side, SQ and CQ memory and doorbells. TCP: a
//!    new connection and its ICReq/ICResp.
//! 4. [`create_io_queue_commands`], sent on the admin queue for a new queue pair and
//!    after each reset: Create I/O Completion Queue, then Create I/O Submission Queue
//!    (sections 5.4, 5.5). TCP: no admin command; a Fabrics Connect with the queue's
//!    QID on its own connection.
//! 5. [`delete_io_queue_commands`], on the admin queue before a reset or when a queue
//!    pair is dropped: Delete I/O SQ, then Delete I/O CQ (sections 5.7, 5.6). TCP: the
//!    connection is closed.
//!
//! Dispatch is static: the controller names these functions; nothing here is on the
//! data path.

use super::{PcieQueue, RingConfig};
use crate::bus::Bus;
use crate::ctrlr::CtrlInner;
use crate::dma::{DmaPool, Iova};
use crate::error::Result;
use crate::lock;
use crate::prp::{self, PAGE_SIZE};
use crate::regs::{self, Aqa, Properties};
use crate::spec::{admin_opc, Sqe, CQE_SIZE, SQE_SIZE};

/// The transport every queue of a controller runs over, the admin queue's included
/// (static dispatch: an NVMe/TCP build would name its own queue type here).
pub(crate) type QueueTransport = PcieQueue;

/// The largest transfer one command can carry that this transport can describe,
/// given the controller's limit `mdts` (bytes): one PRP list page per command, so
/// `MAX_PRP_PAGES - 1` pages fit at any offset (section 4.1.1). TCP: `mdts` alone
/// (an SGL transport data block descriptor has no page limit).
pub(crate) fn max_transfer_bytes(mdts: u64) -> u64 {
    mdts.min((prp::MAX_PRP_PAGES - 1) * PAGE_SIZE)
}

/// Admin queue entries, SQ and CQ alike.
pub(crate) const ADMIN_ENTRIES: u16 = 32;

/// Where an I/O queue pair lives for the device, kept so the controller can create
/// its queues again after a reset (what Create I/O CQ/SQ need beyond the QID and the
/// SQ size).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoQueueSite {
    /// Completion queue entries: larger than the SQ when the controller allows, so
    /// the CQ head doorbell can be written lazily (see [`super::ring`]).
    pub cq_entries: u16,
    pub sq_iova: Iova,
    pub cq_iova: Iova,
}

/// Step 1: the admin queue's host side on `bus` (doorbell stride CAP.DSTRD `dstrd`),
/// its memory from `pool`. Its data is described with PRPs; one descriptor page
/// serves the one data command the admin queue has at a time (tracker 0).
pub(crate) fn admin_queue(bus: &dyn Bus, pool: &DmaPool, dstrd: u32) -> Result<PcieQueue> {
    let cfg = RingConfig {
        qid: 0,
        sq: pool.alloc(ADMIN_ENTRIES as usize * SQE_SIZE)?,
        cq: pool.alloc(ADMIN_ENTRIES as usize * CQE_SIZE)?,
        sq_entries: ADMIN_ENTRIES,
        cq_entries: ADMIN_ENTRIES,
        // Any number of late completions may come: with this bound the CQ head
        // doorbell is written whenever one was consumed.
        in_flight_max: ADMIN_ENTRIES as usize - 1,
        shadow: None,
    };
    PcieQueue::new(bus.bar0(), bus.name(), dstrd, pool, cfg, false, 1)
}

/// Step 2: tells a disabled controller where the admin queue is (AQA, ASQ, ACQ;
/// section 3.5.1 step 3). The queue must be empty (rewound).
pub(crate) fn register_admin_queue(regs: &dyn Properties, aq: &PcieQueue) {
    let (sq_entries, cq_entries) = aq.ring.entries();
    regs.write32(regs::AQA, Aqa::new(sq_entries as u32, cq_entries as u32).0);
    regs.write64(regs::ASQ, aq.ring.sq_mem().iova().0);
    regs.write64(regs::ACQ, aq.ring.cq_mem().iova().0);
}

/// Step 3: the host side of I/O queue `qid` of `ctrl` with an SQ of `entries`
/// (within CAP.MQES `mqes`), and where it lives for [`create_io_queue_commands`].
pub(crate) fn io_queue(
    ctrl: &CtrlInner,
    qid: u16,
    entries: u16,
    mqes: u16,
) -> Result<(PcieQueue, IoQueueSite)> {
    debug_assert!((2..=mqes).contains(&entries));
    // A CQ twice the SQ's size (within MQES) lets the queue pair write the CQ head
    // doorbell once per many completions instead of once per poll.
    let cq_entries = (entries as u32 * 2).min(mqes as u32) as u16;
    let cfg = RingConfig {
        qid,
        sq: ctrl.pool.alloc(entries as usize * SQE_SIZE)?,
        cq: ctrl.pool.alloc(cq_entries as usize * CQE_SIZE)?,
        sq_entries: entries,
        cq_entries,
        // One slot stays empty: a full SQ is tail + 1 == head (section 4.1).
        in_flight_max: entries as usize - 1,
        shadow: lock(&ctrl.shadow_doorbells).as_ref().map(|s| s.slots(qid)),
    };
    let site = IoQueueSite {
        cq_entries,
        sq_iova: cfg.sq.iova(),
        cq_iova: cfg.cq.iova(),
    };
    let pages = cfg.in_flight_max;
    let queue = PcieQueue::new(
        ctrl.bus.bar0(),
        &ctrl.name,
        ctrl.cap.dstrd(),
        &ctrl.pool,
        cfg,
        ctrl.uses_sgl(),
        pages,
    )?;
    Ok((queue, site))
}

/// Step 4: the admin commands that create I/O queue `qid` (SQ of `entries`) on the
/// device, in the order to send them.
pub(crate) fn create_io_queue_commands(qid: u16, entries: u16, site: &IoQueueSite) -> [Sqe; 2] {
    // Create I/O Completion Queue (section 5.4): physically contiguous, no interrupts
    // (IEN = 0), as we poll.
    let mut cq = Sqe::new(admin_opc::CREATE_IO_CQ);
    cq.prp1 = site.cq_iova.0;
    cq.cdw10 = (site.cq_entries as u32 - 1) << 16 | qid as u32;
    cq.cdw11 = 1; // PC

    // Create I/O Submission Queue (section 5.5), bound to the CQ of the same id.
    let mut sq = Sqe::new(admin_opc::CREATE_IO_SQ);
    sq.prp1 = site.sq_iova.0;
    sq.cdw10 = (entries as u32 - 1) << 16 | qid as u32;
    sq.cdw11 = (qid as u32) << 16 | 1; // CQID, PC
    [cq, sq]
}

/// Step 5: the admin commands that delete I/O queue `qid` on the device, in the
/// order to send them (an SQ goes before its CQ, sections 5.6 and 5.7).
pub(crate) fn delete_io_queue_commands(qid: u16) -> [Sqe; 2] {
    let mut sq = Sqe::new(admin_opc::DELETE_IO_SQ);
    sq.cdw10 = qid as u32;
    let mut cq = Sqe::new(admin_opc::DELETE_IO_CQ);
    cq.cdw10 = qid as u32;
    [sq, cq]
}
