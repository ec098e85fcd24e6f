// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The pending queue: requests accepted while no command identifier is free, or while
//! the controller is being reset. Bounded (room reserved when the queue pair is
//! made: no allocation); issued in order as identifiers free up.

use super::request::{IoRequest, Refused};
use super::Qpair;
use crate::transport::Transport;
use std::collections::VecDeque;

/// Requests waiting for a command identifier, oldest first.
#[derive(Debug)]
pub(super) struct Pending {
    queue: VecDeque<IoRequest>,
    max: usize,
}

impl Pending {
    pub fn new(max: usize) -> Pending {
        Pending {
            queue: VecDeque::with_capacity(max),
            max,
        }
    }
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    /// Requests that may wait at once.
    pub fn max(&self) -> usize {
        self.max
    }
    pub fn pop(&mut self) -> Option<IoRequest> {
        self.queue.pop_front()
    }
    /// Puts `req` last; returns the depth after, or `None` when full.
    fn push(&mut self, req: IoRequest) -> Option<usize> {
        if self.queue.len() >= self.max {
            return None;
        }
        self.queue.push_back(req);
        debug_assert!(self.queue.capacity() >= self.max, "the queue never grows");
        Some(self.queue.len())
    }
}

impl<T: Transport> Qpair<T> {
    /// A request that cannot go to the device now: refused when failed or when the
    /// pending queue is full, else onto the queue.
    #[cold]
    #[inline(never)]
    pub(super) fn pend(&mut self, req: IoRequest) -> Result<(), Refused> {
        if self.failed {
            return Err(Refused::Failed);
        }
        let Some(depth) = self.pending.push(req) else {
            self.stats.busy += 1;
            return Err(Refused::Busy);
        };
        self.slow = true;
        self.stats.submitted += 1;
        self.stats.pended += 1;
        self.stats.pending_high_water = self.stats.pending_high_water.max(depth as u64);
        Ok(())
    }

    /// Issues waiting requests, oldest first, while identifiers are free: first the
    /// rest of a part-issued split request, then the pending queue.
    #[inline(never)]
    pub(super) fn drain_pending(&mut self) {
        self.drain_pending_inner();
        self.update_slow();
    }

    fn drain_pending_inner(&mut self) {
        if self.held || self.failed {
            return;
        }
        if let Some(p) = self.partial {
            // `drain_pending` brings `slow` up to date after.
            self.continue_parent_inner(p);
            if self.partial.is_some() {
                return;
            }
        }
        while self.trackers.any_free() && self.partial.is_none() {
            let Some(req) = self.pending.pop() else {
                break;
            };
            // Checked on submit, and the table's namespaces do not change (their sizes
            // may: a request past a new end fails at the device, LBA Out of Range).
            let ns = self.namespaces.get(req.nsid).copied();
            debug_assert!(ns.is_some(), "pending requests name a known namespace");
            if let Some(ns) = ns {
                self.start(&req, ns);
            }
        }
    }
}
