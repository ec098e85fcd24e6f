// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The queue pair's side of a controller reset or failure (the whole handshake is
//! walked through in [`crate::control`]): seen at a poll as a change of the control
//! word, answered by completing what the device will never complete, rewinding the
//! transport, holding or releasing new requests, and acknowledging.

use super::request::IoCompletion;
use super::Qpair;
use crate::control::{ControlWord, Phase};
use crate::spec::Status;
use crate::transport::Transport;

impl<T: Transport> Qpair<T> {
    #[cold]
    pub(super) fn handle_control(
        &mut self,
        ctl: ControlWord,
        cb: &mut impl FnMut(IoCompletion),
    ) -> usize {
        if self.only_namespaces_moved(ctl) {
            return 0;
        }
        self.control_seen = ctl;
        match ctl.phase() {
            Phase::Reset => {
                // The device is disabled: nothing in flight will complete. Each request
                // completes once, with a status that says it may be retried.
                let n = self.abort_all(Status::ABORTED_SQ_DELETION, false, cb);
                self.transport.rewind();
                self.bad_at = 0;
                self.held = true;
                self.update_slow();
                self.shared.handshake.acknowledge(ctl.epoch());
                n
            }
            Phase::Live => {
                debug_assert!(self.trackers.all_free(), "nothing was in flight while held");
                self.held = false;
                // Also brings `slow` up to date.
                self.drain_pending();
                self.flush();
                0
            }
            Phase::Failed => {
                let n = self.abort_all(Status::ABORTED_BY_HOST, true, cb);
                self.failed = true;
                self.held = true;
                // Queued commands are never announced to a failed controller.
                self.transport.discard_unannounced();
                self.update_slow();
                self.shared.handshake.acknowledge(ctl.epoch());
                n
            }
        }
    }

    /// A namespace changed size: the new sizes are copied on this thread, and the
    /// generation of `ctl` is taken as seen (the rest of the word is handled by
    /// `handle_control`).
    #[cold]
    #[inline(never)]
    pub(super) fn refresh_namespaces(&mut self, ctl: ControlWord) {
        self.namespaces.refresh(self.ctrl.namespace_sizes());
        self.control_seen = self.control_seen.with_ns_gen_of(ctl);
    }

    /// Takes in a new namespace generation of `ctl`, if any (see `refresh_namespaces`);
    /// true if nothing else of the word changed. Out of line: the generic
    /// `handle_control` stays as small as it was.
    #[cold]
    #[inline(never)]
    fn only_namespaces_moved(&mut self, ctl: ControlWord) -> bool {
        if ctl.ns_gen() != self.control_seen.ns_gen() {
            self.refresh_namespaces(ctl);
        }
        ctl == self.control_seen
    }

    /// Refused for its range or namespace, a request is checked once more after the
    /// table is refreshed if the controller published new sizes since the last poll
    /// (a namespace grown just now). True if the table changed.
    #[cold]
    #[inline(never)]
    pub(super) fn refresh_namespaces_if_changed(&mut self) -> bool {
        let ctl = self.shared.handshake.load();
        if ctl.ns_gen() == self.control_seen.ns_gen() {
            return false;
        }
        self.refresh_namespaces(ctl);
        true
    }

    /// Completes everything in flight (and, when failing, everything pending) with
    /// `status`. Returns the number delivered.
    fn abort_all(
        &mut self,
        status: Status,
        include_pending: bool,
        cb: &mut impl FnMut(IoCompletion),
    ) -> usize {
        let mut n = 0;
        for index in 0..self.trackers.len() {
            if self.trackers.active_at(index) {
                self.stats.reset_aborts += 1;
                let (parent, ctx) = self.trackers.give_back_at(index);
                n += self.deliver(parent, ctx, status, cb);
            }
        }
        // Commands that ended while their Abort was out: the device forgot every
        // command, so no Abort can end a new one on these identifiers.
        self.trackers.release_parked();
        assert!(self.trackers.all_free(), "every tracker free after a reset");
        // A split request with blocks not yet issued: its commands in flight were
        // completed just above, so it ends here, with its first error or `status`.
        n += self.abort_partial(status, cb);
        if include_pending {
            while let Some(req) = self.pending.pop() {
                self.stats.completed += 1;
                cb(IoCompletion {
                    ctx: req.ctx,
                    status,
                });
                n += 1;
            }
        }
        n
    }
}
