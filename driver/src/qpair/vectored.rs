// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Vectored requests on a queue pair: their checks (every slice dword aligned and in
//! a DMA window, enough bytes, the transport's rules for joining slices), where their
//! commands are cut, and how their data is described (see [`crate::iov`]).

use super::namespaces::{Namespaces, NsInfo};
use super::request::IoRequest;
use super::Qpair;
use crate::error::Error;
use crate::iov::{self, DmaVec, PageRule};
use crate::spec::Sqe;
use crate::transport::Transport;

impl Namespaces {
    /// The checks of a vectored read or write that need no transport: the range, at
    /// least one slice, every slice non-empty, dword aligned in address and length
    /// (section 4.1.1 and SGLS 10b), inside a DMA window, and enough bytes.
    pub fn valid_vectored(&self, req: &IoRequest, v: &DmaVec, ns: &NsInfo) -> bool {
        Self::range_ok(req.slba, req.nlb, ns.nsze)
            && !v.is_empty()
            && v.slices().iter().all(|s| {
                s.len != 0
                    && s.iova.0 & 3 == 0
                    && s.len & 3 == 0
                    && self.in_window(s.iova.0, s.len as u64)
            })
            && v.total_bytes() >= (req.nlb as u64) << ns.block_shift
    }
}

impl<T: Transport> Qpair<T> {
    /// The checks of a vectored request that depend on the transport: slices joined
    /// on pages for PRPs, and no block spread over more slices than one command's
    /// descriptors (the split walks the same cuts).
    pub(super) fn vector_ok(&self, req: &IoRequest, v: &DmaVec, ns: &NsInfo) -> bool {
        let limits = self.transport.vector_limits();
        if limits.page_joins && iov::page_rule(v.slices()).is_some() {
            return false;
        }
        let max = ns.max_blocks(req.op);
        let mut done = 0u32;
        while done < req.nlb {
            let off = (done as u64) << ns.block_shift;
            let n = iov::blocks_within(
                v.slices(),
                off,
                max.min(req.nlb - done),
                ns.block_shift,
                limits.max_pieces,
            );
            if n == 0 {
                return false;
            }
            done += n;
        }
        true
    }

    /// Blocks of the command that starts `done` blocks into vectored request `req`.
    pub(super) fn vector_piece(&self, v: &DmaVec, left: u32, done: u32, ns: (u32, u32)) -> u32 {
        let (max_blocks, block_shift) = ns;
        let n = iov::blocks_within(
            v.slices(),
            (done as u64) << block_shift,
            max_blocks.min(left),
            block_shift,
            self.transport.vector_limits().max_pieces,
        );
        debug_assert!(n > 0, "vector_ok checked every cut");
        n.max(1)
    }

    /// A read or write command of `nlb` blocks whose data is `len` bytes at byte
    /// `offset` of `v`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rw_sqe_vectored(
        &mut self,
        cid: u16,
        opc: u8,
        req: &IoRequest,
        v: &DmaVec,
        slba: u64,
        nlb: u32,
        offset: u64,
        len: u64,
    ) -> Sqe {
        let mut sqe = Sqe::rw(opc, req.nsid, slba, nlb);
        let tag = self.trackers.index(cid) as u16;
        self.transport
            .describe_vectored(tag, &mut sqe, v.slices(), offset, len);
        sqe
    }

    /// Why vectored request `req` failed the checks, naming the slice and the rule.
    #[cold]
    pub(super) fn vector_invalid(&self, req: &IoRequest, v: &DmaVec) -> Error {
        let name = self.ctrl.name();
        let ns = match self.namespaces.target(name, req) {
            Ok(ns) => ns,
            Err(e) => return e,
        };
        if v.is_empty() {
            return Error::BadBuffer("a vectored request needs at least one slice".into());
        }
        for (i, s) in v.slices().iter().enumerate() {
            if s.len == 0 || s.iova.0 & 3 != 0 || s.len & 3 != 0 {
                return Error::BadBuffer(format!(
                    "slice {i} ({} bytes at IOVA {:#x}): every slice must be non-empty with a \
                     4-byte aligned address and length (NVMe 2.0 sections 4.1.1, 4.1.2)",
                    s.len, s.iova.0
                ));
            }
            if !self.namespaces.in_window(s.iova.0, s.len as u64) {
                return Error::BadBuffer(format!(
                    "{name}: slice {i} at IOVA {:#x} ({} bytes) is not DMA memory of this \
                     device; allocate it with this controller's alloc_buffer",
                    s.iova.0, s.len
                ));
            }
        }
        let need = (req.nlb as u64) << ns.block_shift;
        if v.total_bytes() < need {
            return Error::BadBuffer(format!(
                "{} blocks need {need} bytes, the {} slices hold {}",
                req.nlb,
                v.len(),
                v.total_bytes()
            ));
        }
        if self.transport.vector_limits().page_joins {
            if let Some((i, rule)) = iov::page_rule(v.slices()) {
                let what = match rule {
                    PageRule::StartNotAligned => "starts",
                    PageRule::EndNotAligned => "ends",
                };
                return Error::BadBuffer(format!(
                    "{name}: slice {i} {what} inside a 4 KiB page; with PRPs (no SGL support, or \
                     enable_sgl off) every slice but the first must start and every slice but \
                     the last must end on a page boundary (NVMe 2.0 section 4.1.1)"
                ));
            }
        }
        Error::BadBuffer(format!(
            "{name}: one block spans more than {} slices, more than one command can describe",
            self.transport.vector_limits().max_pieces
        ))
    }
}
