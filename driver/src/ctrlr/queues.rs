// SPDX-License-Identifier: Apache-2.0 OR MIT
//! I/O queue pairs on the device: created for a new queue pair and after each reset,
//! deleted when it is dropped or before a reset. What that takes on the wire (Create
//! and Delete I/O CQ/SQ on PCIe, a Fabrics Connect over TCP) is the controller
//! transport's ([`CtrlTransport`](crate::transport::CtrlTransport)).

use super::admin::{AdminQueue, AdminSession};
use super::{Controller, CtrlInner, CtrlState};
use crate::control::{Handshake, Phase};
use crate::error::{Error, Result};
use crate::lock;
use crate::qpair::{QpairOptions, QpairShared};
use crate::transport::{self, IoQpair, IoQueueSpec};
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl CtrlInner {
    /// Creates queue pair `q`'s queues on the device.
    pub(super) fn create_io_queues(&self, aq: &mut AdminQueue, q: &QpairShared) -> Result<()> {
        let mut admin = AdminSession { ctrl: self, aq };
        self.transport
            .connect_io_queue(&mut admin, q.qid, self.admin_timeout())
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
        let mut admin = AdminSession { ctrl: self, aq };
        self.transport.disconnect_io_queue(&mut admin, qid, timeout)
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
        // The host side first: nothing exists on the device if it cannot be made.
        let spec = IoQueueSpec {
            qid,
            entries: opts.entries,
            cap: inner.cap,
            sgl: inner.uses_sgl(),
        };
        let queue = inner.transport.io_queue(&inner.pool, &spec)?;
        let epoch = inner.epoch.load(Ordering::Acquire);
        let shared = Arc::new(QpairShared {
            qid,
            entries: opts.entries,
            handshake: Handshake::new(epoch),
            // One Abort out per tracker at most; twice that leaves room for reports
            // a reset made stale (see `CtrlInner::abort_ended`).
            aborts_ended: ArrayQueue::new(2 * opts.entries as usize),
        });
        debug_assert!((1..=inner.io_queues_granted).contains(&qid));
        inner.create_io_queues(&mut aq, &shared)?;
        lock(&inner.qpairs).push(shared.clone());
        drop(aq);
        transport::io_qpair(queue, inner.clone(), shared, &opts)
    }
}
