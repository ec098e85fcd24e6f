//! I/O queue pairs on the device: created (Create I/O CQ and SQ, section 5.4 and
//! 5.5) for a new queue pair and after each reset, deleted when it is dropped.

use super::admin::AdminQueue;
use super::{Controller, CtrlInner, CtrlState};
use crate::control::{Handshake, Phase};
use crate::error::{Error, Result};
use crate::lock;
use crate::pcie::{PcieQueue, RingConfig};
use crate::qpair::{IoQpair, QpairOptions, QpairShared};
use crate::spec::{admin_opc, Sqe, CQE_SIZE, SQE_SIZE};
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl CtrlInner {
    pub(super) fn create_io_queues(&self, aq: &mut AdminQueue, q: &QpairShared) -> Result<()> {
        // Create I/O Completion Queue (section 5.4): physically contiguous, no
        // interrupts (IEN = 0), as we poll.
        let mut sqe = Sqe::new(admin_opc::CREATE_IO_CQ);
        sqe.prp1 = q.cq_iova.0;
        sqe.cdw10 = (q.cq_entries as u32 - 1) << 16 | q.qid as u32;
        sqe.cdw11 = 1; // PC
        self.admin_cmd(aq, sqe, self.admin_timeout())?;
        // Create I/O Submission Queue (section 5.5), bound to the CQ of the same id.
        let mut sqe = Sqe::new(admin_opc::CREATE_IO_SQ);
        sqe.prp1 = q.sq_iova.0;
        sqe.cdw10 = (q.entries as u32 - 1) << 16 | q.qid as u32;
        sqe.cdw11 = (q.qid as u32) << 16 | 1; // CQID, PC
        self.admin_cmd(aq, sqe, self.admin_timeout())?;
        Ok(())
    }

    /// Deletes every queue pair's I/O queues on the device, best effort: 1 s per
    /// command at most (or the admin timeout if shorter), stopping at the first that
    /// fails (the device is not answering; the disable that follows stops it anyway).
    pub(super) fn delete_all_io_queues(&self, aq: &mut AdminQueue) {
        let qids: Vec<u16> = lock(&self.qpairs).iter().map(|q| q.qid).collect();
        let within = self.admin_timeout().min(Duration::from_secs(1));
        for qid in qids {
            if self.delete_io_queues_within(aq, qid, within).is_err() {
                break;
            }
        }
    }

    pub(super) fn delete_io_queues(&self, aq: &mut AdminQueue, qid: u16) -> Result<()> {
        self.delete_io_queues_within(aq, qid, self.admin_timeout())
    }

    pub(super) fn delete_io_queues_within(
        &self,
        aq: &mut AdminQueue,
        qid: u16,
        timeout: Duration,
    ) -> Result<()> {
        let mut sqe = Sqe::new(admin_opc::DELETE_IO_SQ);
        sqe.cdw10 = qid as u32;
        self.admin_cmd(aq, sqe, timeout)?;
        let mut sqe = Sqe::new(admin_opc::DELETE_IO_CQ);
        sqe.cdw10 = qid as u32;
        self.admin_cmd(aq, sqe, timeout)?;
        Ok(())
    }

    pub(crate) fn destroy_qpair(&self, shared: &Arc<QpairShared>) {
        // Take the admin lock first: a reset in progress must not recreate the
        // queues of a queue pair whose memory is about to be freed.
        let mut aq = lock(&self.admin);
        {
            let mut qpairs = lock(&self.qpairs);
            let before = qpairs.len();
            qpairs.retain(|q| !Arc::ptr_eq(q, shared));
            debug_assert_eq!(qpairs.len() + 1, before, "a queue pair is registered once");
        }
        let live = shared.handshake.load().phase() == Phase::Live;
        if self.state() == CtrlState::Live && live {
            let _ = self.delete_io_queues(&mut aq, shared.qid);
        }
    }
}

impl Controller {
    /// Creates an I/O queue pair for the calling thread.
    pub fn create_io_qpair(&self, opts: QpairOptions) -> Result<IoQpair> {
        let inner = &self.0;
        if inner.state() == CtrlState::Failed {
            return Err(inner.failed_error());
        }
        let mqes = inner.cap.mqes_entries().min(u16::MAX as u32) as u16;
        if opts.entries < 2 || opts.entries > mqes {
            return Err(Error::InvalidArgument(format!(
                "{}: queue size {} is outside 2..={mqes} (CAP.MQES)",
                inner.name, opts.entries
            )));
        }
        let mut aq = lock(&inner.admin);
        let qid = {
            let qps = lock(&inner.qpairs);
            (1..=inner.io_queues_granted).find(|id| qps.iter().all(|q| q.qid != *id))
        }
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: all {} I/O queues the controller granted are in use",
                inner.name, inner.io_queues_granted
            ))
        })?;
        // A CQ twice the SQ's size (within MQES) lets the queue pair write the CQ head
        // doorbell once per many completions instead of once per poll.
        let cq_entries = (opts.entries as u32 * 2).min(mqes as u32) as u16;
        let sq_mem = inner.pool.alloc(opts.entries as usize * SQE_SIZE)?;
        let cq_mem = inner.pool.alloc(cq_entries as usize * CQE_SIZE)?;
        let epoch = inner.epoch.load(Ordering::Acquire);
        let shared = Arc::new(QpairShared {
            qid,
            entries: opts.entries,
            cq_entries,
            sq_iova: sq_mem.iova(),
            cq_iova: cq_mem.iova(),
            handshake: Handshake::new(epoch),
            // One Abort out per tracker at most; twice that leaves room for reports
            // a reset made stale (see `CtrlInner::abort_ended`).
            aborts_ended: ArrayQueue::new(2 * opts.entries as usize),
        });
        // The host side first: nothing exists on the device if it cannot be made.
        let transport = PcieQueue::new(
            inner,
            RingConfig {
                qid,
                sq: sq_mem,
                cq: cq_mem,
                sq_entries: opts.entries,
                cq_entries,
                // One slot stays empty: a full SQ is tail + 1 == head (section 4.1).
                in_flight_max: opts.entries as usize - 1,
            },
        )?;
        debug_assert!((1..=inner.io_queues_granted).contains(&qid));
        inner.create_io_queues(&mut aq, &shared)?;
        lock(&inner.qpairs).push(shared.clone());
        drop(aq);
        IoQpair::new(inner.clone(), shared, transport, &opts)
    }
}
