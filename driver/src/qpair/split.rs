// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Split requests: a request larger than one command allows (the controller's maximum
//! data transfer size, or the 16-bit block count) becomes a parent whose commands go
//! out as command identifiers allow, and completes once, with the first error of its
//! commands, when the last one completes.

use super::namespaces::NsInfo;
use super::request::{IoCompletion, IoRequest};
use super::tracker::NO_PARENT;
use super::Qpair;
use crate::spec::Status;
use crate::transport::Transport;

/// A request being issued, or in flight, as several commands.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parent {
    pub req: IoRequest,
    /// Blocks issued so far.
    pub issued: u32,
    /// Commands in flight.
    pub inflight: u32,
    /// The first error of its commands, or success.
    pub status: Status,
    /// The namespace's block size (log2) and largest command, in blocks.
    pub block_shift: u32,
    pub max_blocks: u32,
}

/// The parents of a queue pair and the free ones.
#[derive(Debug)]
pub(super) struct Parents {
    parents: Box<[Parent]>,
    /// Free parents; never more than `parents.len()` (room reserved: no allocation).
    free: Vec<u16>,
}

impl Parents {
    pub fn new(n: usize) -> Parents {
        let empty = Parent {
            req: IoRequest::flush(0, 0),
            issued: 0,
            inflight: 0,
            status: Status::SUCCESS,
            block_shift: 0,
            max_blocks: 0,
        };
        Parents {
            parents: vec![empty; n].into_boxed_slice(),
            free: (0..n as u16).rev().collect(),
        }
    }

    /// Takes a free parent for `p`; `None` only if every parent is in use.
    fn take(&mut self, p: Parent) -> Option<u16> {
        let i = self.free.pop()?;
        self.parents[i as usize] = p;
        Some(i)
    }

    /// Gives back parent `i`, finished.
    fn give_back(&mut self, i: u16) {
        debug_assert!(
            self.free.len() < self.parents.len(),
            "more parents freed than taken"
        );
        debug_assert!(!self.free.contains(&i), "parent {i} freed twice");
        self.free.push(i);
    }

    #[inline(always)]
    pub fn get_mut(&mut self, i: u16) -> &mut Parent {
        &mut self.parents[i as usize]
    }
}

impl<T: Transport> Qpair<T> {
    /// Issues a request that may need several commands. Needs a free CID.
    #[inline(always)]
    pub(super) fn start(&mut self, req: &IoRequest, ns: NsInfo) {
        let max_blocks = ns.max_blocks(req.op);
        // A vectored request fits one command when its first cut is all of it.
        let fits = match &req.iov {
            None => req.nlb <= max_blocks,
            Some(v) => self.vector_piece(v, req.nlb, 0, (max_blocks, ns.block_shift)) >= req.nlb,
        };
        if fits {
            let cid = self.trackers.take();
            debug_assert!(cid.is_some(), "start is called with a CID free");
            if let Some(cid) = cid {
                // A vectored request's data starts at byte 0 of its slices.
                let iova = if req.iov.is_some() { 0 } else { req.buf.iova.0 };
                self.issue(cid, req, req.slba, req.nlb, iova, NO_PARENT, ns.block_shift);
            }
            return;
        }
        // There are as many parents as trackers plus one, and each parent but the
        // part-issued one holds at least one tracker, so one is free.
        let p = self.parents.take(Parent {
            req: *req,
            issued: 0,
            inflight: 0,
            status: Status::SUCCESS,
            block_shift: ns.block_shift,
            max_blocks,
        });
        debug_assert!(p.is_some(), "a parent is free whenever a CID is");
        if let Some(p) = p {
            self.continue_parent(p);
        }
    }

    /// Issues more commands of a split request while CIDs are free.
    #[cold]
    #[inline(never)]
    fn continue_parent(&mut self, p: u16) {
        self.continue_parent_inner(p);
        self.update_slow();
    }

    /// `continue_parent` without bringing `slow` up to date (the caller does).
    pub(super) fn continue_parent_inner(&mut self, p: u16) {
        let Parent {
            max_blocks: max,
            block_shift,
            ..
        } = *self.parents.get_mut(p);
        loop {
            let par = *self.parents.get_mut(p);
            if par.issued >= par.req.nlb {
                self.partial = None;
                return;
            }
            let Some(cid) = self.trackers.take() else {
                self.partial = Some(p);
                return;
            };
            let left = par.req.nlb - par.issued;
            let offset = (par.issued as u64) << block_shift;
            // Vectored: cut at a block boundary within one command's descriptors, and
            // pass the byte offset into the slices instead of an address.
            let (nlb, iova) = match &par.req.iov {
                None => (max.min(left), par.req.buf.iova.0 + offset),
                Some(v) => (
                    self.vector_piece(v, left, par.issued, (max, block_shift)),
                    offset,
                ),
            };
            let slba = par.req.slba + par.issued as u64;
            self.issue(cid, &par.req, slba, nlb, iova, p, block_shift);
            let par = self.parents.get_mut(p);
            par.issued += nlb;
            par.inflight += 1;
        }
    }

    /// One command of split request `p` completed with `status`; returns the
    /// number of requests delivered (1 when it was the last).
    pub(super) fn complete_piece(
        &mut self,
        p: u16,
        status: Status,
        cb: &mut impl FnMut(IoCompletion),
    ) -> usize {
        let par = self.parents.get_mut(p);
        debug_assert!(par.inflight > 0, "a command of parent {p} was in flight");
        par.inflight -= 1;
        if !status.is_success() && par.status.is_success() {
            par.status = status;
        }
        if par.inflight == 0 && par.issued >= par.req.nlb {
            self.finish_parent(p, cb);
            return 1;
        }
        0
    }

    /// Ends the part-issued split request, if any, after a reset or failure completed
    /// its commands in flight: it completes with its first error or `status`.
    pub(super) fn abort_partial(
        &mut self,
        status: Status,
        cb: &mut impl FnMut(IoCompletion),
    ) -> usize {
        let Some(p) = self.partial.take() else {
            return 0;
        };
        let par = self.parents.get_mut(p);
        debug_assert_eq!(
            par.inflight, 0,
            "its commands in flight were completed first"
        );
        if par.status.is_success() {
            par.status = status;
        }
        self.finish_parent(p, cb);
        1
    }

    /// Delivers split request `p` with its status and frees it.
    fn finish_parent(&mut self, p: u16, cb: &mut impl FnMut(IoCompletion)) {
        let par = self.parents.get_mut(p);
        let done = IoCompletion {
            ctx: par.req.ctx,
            status: par.status,
        };
        self.parents.give_back(p);
        self.stats.completed += 1;
        cb(done);
    }
}
