// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Failover and retry: what a channel does with a completion that is not a plain
//! success, and with the I/O on its pending queue.
//!
//! - A path error (including "aborted: SQ deletion" from a reset and "aborted by host"
//!   from a failed controller): the I/O goes on the pending queue to be dispatched
//!   again at once, on another path if there is one, and this core avoids the path for
//!   [`AVOID_US`](super::AVOID_US) (unless a new path set comes first). An ANA error
//!   also flags the path for an ANA log re-read by its controller thread, and the path
//!   is avoided until the next path set, which that thread publishes after the
//!   re-read, or at most the ANA transition time (`ana_avoid_ticks`): the path is not
//!   probed again before the layer knows its new ANA state.
//! - Another retryable error: retried after the command retry delay (the completion's
//!   CRD times `retry_delay_unit_ms`), up to `retry_count` times.
//! - Do Not Retry, or the retries used up: the I/O completes with the status.
//!
//! The pending queue is run after the errors that filled it and at every full poll:
//! each I/O whose time has come is dispatched; one for which no path is usable waits up
//! to `fast_io_fail_timeout_ms` (and while a path is in ANA transition, up to the
//! transition time), then fails with its last error status (or "host pathing error").

use super::path_choice::local;
use super::slots::SlotState;
use super::{Dispatch, MpathChannel};
use crate::io::{BdevCompletion, PathQueue};
use nvme_driver::clock;
use nvme_driver::{IoCompletion, Status};
use std::sync::atomic::Ordering;

impl<Q: PathQueue> MpathChannel<Q> {
    /// After a queue poll that deferred completions: each is handled, what they put on
    /// the pending queue is dispatched at once, and the doorbells rung.
    #[cold]
    #[inline(never)]
    pub(super) fn handle_deferred(&mut self, path: u8, cb: &mut impl FnMut(BdevCompletion)) {
        for i in 0..self.slots.deferred_len() {
            let c = self.slots.deferred(i);
            self.on_completion(path, c, cb);
        }
        if !self.pending.is_empty() {
            self.run_pending(clock::ticks(), cb);
        }
        self.flush();
    }

    /// A completion from local path `path`'s queue that was not delivered from inside
    /// the queue's poll.
    fn on_completion(&mut self, path: u8, c: IoCompletion, cb: &mut impl FnMut(BdevCompletion)) {
        if !self.slots.is_in_flight_on(path, &c) {
            // Not ours (a duplicate, or a context that is no slot): a queue bug. Never
            // index out of bounds or complete twice; count it, in every build.
            self.slots.stray += 1;
            return;
        }
        let slot = c.ctx as u32;
        let status = c.status;
        if status.is_success() || self.stopping {
            self.slots.finish(slot as usize, status, cb);
            return;
        }
        self.slots.get_mut(slot).errors.last_status = status;
        // Errors only: the clock is read when needed, not on every completion.
        let now = clock::ticks();
        if status.is_path_error() {
            let avoid = if status.is_ana_error() {
                self.ana_avoid_ticks
            } else {
                self.avoid_ticks
            };
            self.choice
                .avoid(&mut self.paths, path, now.saturating_add(avoid));
            if let Some(p) = local(&mut self.paths, path) {
                p.stats.path_errors += 1;
                p.shared.failovers.fetch_add(1, Ordering::Relaxed);
                if status.is_ana_error() {
                    p.stats.ana_errors += 1;
                    p.shared.ana_stale.store(true, Ordering::Release);
                }
            }
            self.stats.failovers += 1;
            // Dispatched again at the end of this poll, on another path if there is one.
            self.wait(slot, 0);
            return;
        }
        let s = self.slots.get_mut(slot);
        if status.dnr() || u32::from(s.errors.retries) >= self.mp.options().retry_count {
            self.slots.finish(slot as usize, status, cb);
            return;
        }
        s.errors.retries += 1;
        let delay = self.retry_unit_ticks.saturating_mul(status.crd() as u64);
        self.stats.retries += 1;
        self.wait(slot, now.saturating_add(delay));
    }

    /// Dispatches what waits on the pending queue and whose time has come, in order;
    /// fails what waited for a path too long, or everything once stopping.
    pub(super) fn run_pending(&mut self, now: u64, cb: &mut impl FnMut(BdevCompletion)) {
        // Once one I/O found no usable path, the others of this run would not either.
        let mut no_path = false;
        for _ in 0..self.pending.len() {
            let Some(slot) = self.pending.pop_front() else {
                break;
            };
            let s = self.slots.get(slot);
            debug_assert_eq!(
                s.state,
                SlotState::PENDING,
                "slot {slot} on the pending queue"
            );
            if self.stopping {
                let status = s.errors.last_error_or(Status::ABORTED_BY_HOST);
                self.finish_pending(slot, status, cb);
                continue;
            }
            if s.retry_at > now {
                self.pending.push_back(slot);
                continue;
            }
            let outcome = if no_path {
                Dispatch::NoPath
            } else {
                let io = s.io;
                self.dispatch(slot, &io)
            };
            match outcome {
                Dispatch::Sent(path) => {
                    let s = self.slots.get_mut(slot);
                    s.state = SlotState::in_flight(path);
                    s.fail_at = 0;
                }
                Dispatch::NoRoom => self.pending.push_back(slot),
                Dispatch::NoPath => {
                    no_path = true;
                    let s = self.slots.get_mut(slot);
                    if s.fail_at == 0 {
                        s.fail_at = now.saturating_add(self.fast_fail_ticks);
                    }
                    if now >= s.fail_at && now >= self.hold_until {
                        let status = s.errors.last_error_or(Status::HOST_PATHING_ERROR);
                        self.stats.fast_failed += 1;
                        self.finish_pending(slot, status, cb);
                    } else {
                        self.pending.push_back(slot);
                    }
                }
                Dispatch::Fail(status) => self.finish_pending(slot, status, cb),
            }
        }
    }

    /// Completes slot `slot`, taken off the pending queue, with `status`.
    fn finish_pending(&mut self, slot: u32, status: Status, cb: &mut impl FnMut(BdevCompletion)) {
        // No longer waiting for a path: a free slot's deadline is 0.
        self.slots.get_mut(slot).fail_at = 0;
        self.slots.finish(slot as usize, status, cb);
    }
}
