// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Completion: [`Qpair::poll`] reaps completions from the transport, checks that
//! each names a command in flight, gives its command identifier back and delivers
//! the request (once, for a split request, when its last command is done); it also
//! reacts to the controller's control word, issues pending requests, and checks
//! deadlines.

use super::request::IoCompletion;
use super::tracker::NO_PARENT;
use super::{Qpair, TIMEOUT_SCAN_POLLS};
use crate::clock;
use crate::spec::Status;
use crate::transport::{CqeTail, Transport};

impl<T: Transport> Qpair<T> {
    /// Polls for up to `max` completions, delivering each finished request to `cb`
    /// exactly once. Also rings the SQ doorbell for queued commands, issues pending
    /// requests as identifiers free up, reacts to controller resets and failure, and
    /// checks deadlines. Returns the number of requests delivered.
    #[inline]
    pub fn poll(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize {
        self.stats.polls += 1;
        let ctl = self.shared.handshake.load();
        let mut delivered = 0;
        if ctl != self.control_seen {
            delivered += self.handle_control(ctl, cb);
        }
        if self.failed {
            return delivered;
        }
        self.flush();
        let mut consumed = 0;
        while consumed < max {
            let Some(cqe) = self.transport.peek_completion() else {
                break;
            };
            let cid = cqe.cid();
            let (parent, ctx) = if self.trackers.in_flight(cid)
                && cqe.sq_head() < self.sq_entries
                && cqe.sq_id() == self.qid
            {
                self.trackers.give_back(cid)
            } else {
                let Some(held) = self.unusual_completion(cqe) else {
                    break;
                };
                held
            };
            self.transport.pop_completion();
            consumed += 1;
            let status = Status::from_field(cqe.status_field());
            delivered += self.deliver(parent, ctx, status, cb);
        }
        if consumed > 0 {
            if self.transport.release_completions(consumed) {
                self.stats.cq_doorbell_writes += 1;
            }
            // Identifiers were freed: requests waiting behind the pending queue or a
            // split request go now (`slow` is also set while held, when
            // `drain_pending` does nothing). Only they can have dirtied the SQ since
            // the flush above: the callback cannot reach this queue pair.
            if self.slow {
                self.drain_pending();
                self.flush();
            }
        } else {
            self.stats.idle_polls += 1;
        }
        if self.stats.polls >= self.next_timeout_scan {
            self.next_timeout_scan = self.stats.polls + TIMEOUT_SCAN_POLLS;
            self.scan_timeouts();
        }
        delivered
    }

    /// A completion that fails the data path's check: the late completion of a
    /// command an Abort was asked for (its tracker ended; returns what it held, for
    /// delivery), or one [`bad_completion`](Self::bad_completion) refuses (returns
    /// `None`; the queue pair consumes nothing past it).
    #[cold]
    #[inline(never)]
    fn unusual_completion(&mut self, cqe: CqeTail) -> Option<(u16, u64)> {
        let valid = cqe.sq_head() < self.sq_entries && cqe.sq_id() == self.qid;
        let held = if valid {
            self.trackers.end_aborted(cqe.cid())
        } else {
            None
        };
        if held.is_none() {
            self.bad_completion(cqe);
        }
        held
    }

    /// A completion that does not match a command in flight, or names one with an
    /// impossible SQ head or SQ identifier: it is counted (once, however many polls
    /// find it) and never delivered, and the controller is failed (by its owner)
    /// rather than trusted with this queue's state. The queue pair consumes nothing
    /// past it; the failure completes what is in flight.
    #[cold]
    #[inline(never)]
    fn bad_completion(&mut self, cqe: CqeTail) {
        let at = self.transport.position() | 1 << 17;
        if self.bad_at == at {
            return;
        }
        self.bad_at = at;
        let cid = cqe.cid();
        let what = if !self.trackers.names_command(cid) {
            self.stats.stray_completions += 1;
            "no command in flight has this identifier (unknown, or a duplicate)"
        } else {
            self.stats.malformed_completions += 1;
            "the SQ head or SQ identifier is out of range"
        };
        let reason = format!(
            "queue {}: invalid completion (cid {cid}, sq_head {}, sq_id {}) with {} trackers and {} entries: {what}",
            self.qid,
            cqe.sq_head(),
            cqe.sq_id(),
            self.trackers.len(),
            self.sq_entries
        );
        self.ctrl.request_failure(reason);
    }

    /// Delivers the request of a command that ended (`parent`, `ctx` from its
    /// tracker), if it is done. Returns the number delivered.
    #[inline(always)]
    pub(super) fn deliver(
        &mut self,
        parent: u16,
        ctx: u64,
        status: Status,
        cb: &mut impl FnMut(IoCompletion),
    ) -> usize {
        if parent == NO_PARENT {
            self.stats.completed += 1;
            cb(IoCompletion { ctx, status });
            return 1;
        }
        self.complete_piece(parent, status, cb)
    }

    /// Commands past their deadline: the first time, an Abort is asked of the
    /// controller's admin side and the command gets one more period; the second, a
    /// reset. Also frees the trackers whose Abort ended (reported by the admin side),
    /// and issues what waited for them.
    fn scan_timeouts(&mut self) {
        let mut freed = false;
        while let Some(cid) = self.shared.aborts_ended.pop() {
            freed |= self.trackers.abort_ended(cid);
        }
        if freed && self.slow {
            self.drain_pending();
            self.flush();
        }
        let now = clock::ticks();
        for index in 0..self.trackers.len() {
            let timeout_ticks = self.timeout_ticks;
            let t = self.trackers.get_mut(index);
            if !t.active() || (now.wrapping_sub(t.deadline) as i64) < 0 {
                continue;
            }
            if !t.abort_sent() {
                t.deadline = now.wrapping_add(timeout_ticks);
                let cid = self.trackers.abort_sent(index);
                self.stats.timeouts += 1;
                self.ctrl.request_abort(&self.shared, cid);
            } else {
                // The abort did not bring it back either: reset the controller.
                self.ctrl.request_reset();
            }
        }
    }
}
