// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The controller's state machine: [`CtrlState::Live`], [`CtrlState::Resetting`]
//! while a reset runs, [`CtrlState::Failed`] for good. Resets, failure, the periodic
//! housekeeping that notices what calls for them, and shutdown. How queue pairs take
//! part is walked through in [`crate::control`].

use super::admin::AdminQueue;
use super::{Controller, CtrlInner, CtrlState};
use crate::control::Phase;
use crate::error::{Error, Result};
use crate::lock;
use crate::qpair::QpairShared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Queue pairs get this long to acknowledge a reset before they are failed.
const RESET_ACK_TIMEOUT: Duration = Duration::from_secs(2);

impl CtrlInner {
    /// Fails the controller: every queue pair completes what it has with a path
    /// error, exactly once, and refuses new requests. Idempotent.
    pub(super) fn fail(&self, reason: String) {
        {
            let mut f = lock(&self.failure);
            if f.is_some() {
                return;
            }
            *f = Some(reason);
        }
        // Stop the device touching memory before requests are handed back (best
        // effort: a removed device ignores it). A controller that still answers gets
        // its I/O queues deleted first, as in a reset (and as Linux's
        // nvme_dev_disable does): never disable a controller with I/O queues alive.
        // Skipped if another thread holds the admin queue (it may be stuck on this
        // very device); completions the deletion produces are path errors, and the
        // queue pairs deliver each request once either way. A controller whose CSTS
        // cannot be read (a fabric that is gone) is left alone, as one reading all
        // ones.
        if let Some(csts) = self.csts().ok().filter(|c| !c.is_all_ones()) {
            if csts.rdy() && !csts.cfs() && csts.shst() == 0 {
                if let Ok(mut aq) = self.admin.try_lock() {
                    self.delete_all_io_queues(&mut aq);
                }
            }
            let _ = self.disable();
        }
        self.state.fail();
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        for q in lock(&self.qpairs).iter() {
            q.handshake.set(epoch, Phase::Failed);
        }
        self.notify_queues();
    }

    /// Tells the owner of the queue pairs that their control words changed.
    pub(super) fn notify_queues(&self) {
        if let Some(n) = self.queue_notifier.get() {
            n();
        }
    }
}

impl Controller {
    /// Resets the controller (section 3.7.2, controller level reset via CC.EN):
    /// disables it, has every queue pair complete its in-flight commands with
    /// "aborted: SQ deletion" (exactly once; requests not yet sent keep waiting),
    /// re-enables it, recreates the I/O queues and lets the held requests flow.
    /// On failure the controller is failed.
    ///
    /// This blocks the calling thread for the reset's duration (milliseconds), so call
    /// it from an admin or controller thread, never from a poller. Queue pair owners
    /// must keep polling meanwhile: the reset waits up to 2 s for each queue pair to
    /// acknowledge (at its next poll) before recreating its queues, and fails a queue
    /// pair that does not (it then completes everything with a path error).
    pub fn reset(&self) -> Result<()> {
        let inner = &self.0;
        let mut aq = lock(&inner.admin);
        if inner.state() == CtrlState::Failed {
            return Err(inner.failed_error());
        }
        match self.reset_locked(&mut aq) {
            Ok(()) => {
                inner.resets.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                drop(aq);
                inner.fail(format!("reset failed: {e}"));
                Err(e)
            }
        }
    }

    pub(super) fn reset_locked(&self, aq: &mut AdminQueue) -> Result<()> {
        let inner = &self.0;
        if !inner
            .state
            .transition(CtrlState::Live, CtrlState::Resetting)
        {
            // Failed by another thread since `reset` looked.
            return Err(inner.failed_error());
        }
        // A responsive controller first gets its I/O queues deleted (section 5.6:
        // commands in flight are aborted by the controller), as Linux does before
        // disabling: the device then has nothing in flight when CC.EN drops, which
        // QEMU 7.2's emulation needs (it crashed, rarely, when disabled with I/O in
        // flight). Best effort with a short deadline; the disable follows regardless.
        if inner
            .csts()
            .is_ok_and(|c| c.rdy() && !c.cfs() && !c.is_all_ones())
        {
            inner.delete_all_io_queues(aq);
        }
        inner.disable()?;
        // The device no longer touches any queue: now queue pairs may hand back
        // what they had in flight.
        let epoch = inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let qpairs: Vec<Arc<QpairShared>> = lock(&inner.qpairs).clone();
        for q in &qpairs {
            q.handshake.set(epoch, Phase::Reset);
        }
        // Owners that poll only busy queue pairs now look at the idle ones too.
        inner.notify_queues();
        inner.enable(aq)?;
        let granted = inner.set_num_queues(aq, inner.opts.io_queues)?;
        inner.after_enable(aq, &inner.ident, granted)?;
        if granted < inner.io_queues_granted {
            return Err(Error::ControllerFailed {
                device: inner.name.clone(),
                reason: format!(
                    "after reset the controller grants {granted} I/O queues, was {}",
                    inner.io_queues_granted
                ),
            });
        }
        // Wait (bounded) for owners to rewind their rings, then recreate their queues.
        let start = Instant::now();
        let mut todo = qpairs;
        while !todo.is_empty() {
            let mut waiting = Vec::new();
            for q in todo {
                if q.handshake.acknowledged(epoch) {
                    inner.create_io_queues(aq, &q)?;
                    q.handshake.set(epoch, Phase::Live);
                } else {
                    waiting.push(q);
                }
            }
            todo = waiting;
            if !todo.is_empty() {
                if start.elapsed() > RESET_ACK_TIMEOUT {
                    // An owner that does not poll cannot be waited for: its queue pair
                    // is failed and completes everything when it next polls.
                    for q in &todo {
                        q.handshake.set(epoch, Phase::Failed);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        inner.notify_queues();
        inner.arm_events(aq);
        // The reset also ended any Namespace Attribute Changed notice not yet
        // delivered: every namespace is identified again now, best effort.
        inner.rescan_after_reset(aq);
        // A reset aborts outstanding Asynchronous Event Requests (section 5.2), and
        // with them any ANA change notice the device had not delivered: read the log
        // again, as Linux does on every reset (nvme_init_ctrl_finish). Best effort:
        // the cached log stays if the read fails.
        if inner.ident.ana_supported() {
            if let Ok(log) = inner.read_ana_log(aq) {
                *lock(&inner.ana) = Some(log);
            }
        }
        inner.reset_wanted.store(false, Ordering::Release);
        // Aborts not sent: the reset ended their commands.
        while let Some((qpair, cid)) = inner.aborts.pop() {
            inner.abort_ended(&qpair, cid);
        }
        if !inner
            .state
            .transition(CtrlState::Resetting, CtrlState::Live)
        {
            // Failed by another thread while the reset ran: it stays failed.
            return Err(inner.failed_error());
        }
        Ok(())
    }

    /// Fails the controller on purpose (detach): every request completes with a
    /// path error. The device is released.
    pub fn fail(&self, reason: &str) {
        self.0.fail(reason.to_string());
        self.0.transport.release();
    }

    /// Housekeeping, to be called every few milliseconds from one thread: detects
    /// fatal status, surprise removal and removal requests (then fails the controller
    /// and releases the device), collects async events (re-reading the ANA log on an
    /// ANA change; re-identifying changed namespaces on a Namespace Attribute Changed
    /// notice), aborts timed-out commands and performs requested resets. Returns
    /// the controller's state afterwards.
    pub fn process_admin(&self) -> CtrlState {
        let inner = &self.0;
        if inner.state() == CtrlState::Failed {
            return CtrlState::Failed;
        }
        if inner.opts.release_on_removal && inner.transport.removal_requested() {
            self.fail("the device is being removed (hot-unplug request)");
            return CtrlState::Failed;
        }
        let csts = match inner.csts() {
            Ok(c) if c.is_all_ones() => {
                self.fail("registers read all ones: the device was removed");
                return CtrlState::Failed;
            }
            Ok(c) => c,
            Err(e) => {
                self.fail(&format!(
                    "the controller's status (CSTS) cannot be read: {e}"
                ));
                return CtrlState::Failed;
            }
        };
        if inner.fail_flag.load(Ordering::Acquire) {
            let reason = lock(&inner.failure_requested).take().unwrap_or_default();
            inner.fail(reason);
            return CtrlState::Failed;
        }
        if csts.cfs() {
            // Controller Fatal Status: a reset may bring it back (section 9.5).
            if self.reset().is_err() {
                return CtrlState::Failed;
            }
        }
        let ana_changed = {
            let Ok(mut aq) = inner.admin.try_lock() else {
                return inner.state();
            };
            if let Err(e) = inner.admin_reap(&mut aq, None) {
                drop(aq);
                inner.fail(e.to_string());
                return CtrlState::Failed;
            }
            lock(&inner.events).iter().any(|e| e.is_ana_change())
        };
        if ana_changed && inner.ident.ana_supported() {
            let _ = self.refresh_ana();
        }
        if inner.ns_rescan.swap(false, Ordering::AcqRel) {
            self.rescan_namespaces();
        }
        while let Some((qpair, cid)) = inner.aborts.pop() {
            match self.abort(qpair.qid, cid) {
                // Aborted (its completion came first, with Command Abort Requested),
                // or not: it may still complete; if not, the qpair asks for a reset.
                // Either way the Abort is over and the CID may be reused.
                Ok(_) => inner.abort_ended(&qpair, cid),
                // The admin queue does not answer either: reset now. The other aborts
                // would each wait out the admin timeout for nothing (the reset ends
                // their commands, frees their trackers, and empties the queue of
                // aborts). The Abort may still be out: the reset, not a report, frees
                // this CID.
                Err(_) => {
                    inner.reset_wanted.store(true, Ordering::Release);
                    break;
                }
            }
        }
        if inner.reset_wanted.swap(false, Ordering::AcqRel) {
            let _ = self.reset();
        }
        inner.state()
    }
}
