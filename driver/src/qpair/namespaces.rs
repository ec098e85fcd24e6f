// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What a queue pair checks requests against, copied from the controller when the
//! queue pair is made so the data path follows no shared pointer: the namespaces
//! (size, block size, largest command) and the IOVA windows buffers may come from.
//!
//! A namespace that changes size (`ctrlr/rescan.rs`) is copied again on the owner's
//! thread: the controller stores the new sizes, then moves the namespace generation in
//! the queue pair's control word; the poll, which loads that word anyway, sees the
//! change and calls [`Namespaces::refresh`] (as does a submit refused for its range,
//! so I/O past an old end works as soon as the controller has the new size). The
//! submit path itself is unchanged: no extra load, no lock.

use super::request::{IoOp, IoRequest};
use crate::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};

/// IOVA windows a queue pair accepts buffers from.
pub(crate) const MAX_DMA_WINDOWS: usize = 4;
/// Maximum blocks in one read, write or write zeroes command (CDW12 NLB is 16 bits).
pub(super) const MAX_NLB: u32 = 1 << 16;

/// One namespace, as the data path needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NsInfo {
    pub nsid: u32,
    pub nsze: u64,
    pub block_shift: u32,
    /// Largest read/write command, in blocks.
    pub max_rw_blocks: u32,
}

impl NsInfo {
    /// Largest command of operation `op`, in blocks.
    pub fn max_blocks(&self, op: IoOp) -> u32 {
        match op {
            IoOp::Read | IoOp::Write => self.max_rw_blocks,
            IoOp::WriteZeroes => MAX_NLB,
            IoOp::Deallocate | IoOp::Flush => u32::MAX,
        }
    }
}

/// The namespaces and DMA windows of a queue pair's controller.
#[derive(Debug)]
pub(crate) struct Namespaces {
    ns: Box<[NsInfo]>,
    /// `ns[0]` and its identifier widened (`u64::MAX` when there is none): almost
    /// every queue pair serves one namespace, checked without following a pointer.
    ns0: NsInfo,
    ns0_key: u64,
    /// (base, length) of the IOVA windows buffers may come from; unused ones are (0, 0).
    windows: [(u64, u64); MAX_DMA_WINDOWS],
}

impl Namespaces {
    /// The controller's namespaces (identifier, size in blocks, block size), the
    /// largest transfer of one command, and the IOVA windows buffers may come from,
    /// oldest first. The queue pair loads its control word first: a size change
    /// published after that load is seen at its next poll.
    pub(crate) fn new(
        namespaces: impl Iterator<Item = (u32, u64, u32)>,
        max_xfer: u64,
        dma_windows: &[(u64, u64)],
    ) -> Namespaces {
        let ns: Box<[NsInfo]> = namespaces
            .map(|(nsid, nsze, block_size)| {
                let block_shift = block_size.trailing_zeros();
                NsInfo {
                    nsid,
                    nsze,
                    block_shift,
                    max_rw_blocks: ((max_xfer >> block_shift) as u32).clamp(1, MAX_NLB),
                }
            })
            .collect();
        // Newest window first: a controller driven through a layer that registered
        // its own buffer window (the block layer) gets that window's buffers on
        // every I/O; one driven directly has only its pool's window.
        let mut windows = [(0u64, 0u64); MAX_DMA_WINDOWS];
        for (w, &r) in windows.iter_mut().zip(dma_windows.iter().rev()) {
            *w = r;
        }
        Namespaces {
            ns0: ns.first().copied().unwrap_or(NsInfo {
                nsid: 0,
                nsze: 0,
                block_shift: 0,
                max_rw_blocks: 0,
            }),
            ns0_key: ns.first().map_or(u64::MAX, |n| n.nsid as u64),
            ns,
            windows,
        }
    }

    /// Copies the controller's current namespace sizes (same order as the table was
    /// made in), on the owner's thread, after its control word showed a new namespace
    /// generation. Allocates nothing.
    #[cold]
    pub fn refresh(&mut self, sizes: &[AtomicU64]) {
        for (n, size) in self.ns.iter_mut().zip(sizes) {
            n.nsze = size.load(Ordering::Acquire);
        }
        if let Some(first) = self.ns.first() {
            self.ns0.nsze = first.nsze;
        }
    }

    #[inline(always)]
    pub fn get(&self, nsid: u32) -> Option<&NsInfo> {
        // Almost always one namespace: check the first before searching.
        if nsid as u64 == self.ns0_key {
            return Some(&self.ns0);
        }
        self.ns.iter().find(|n| n.nsid == nsid)
    }

    /// True if `len` bytes at `iova` lie in one of the device's DMA windows. The
    /// windows are ordered newest first (see `new`), so the first test is the one that
    /// matches for the usual caller.
    #[inline(always)]
    pub(super) fn in_window(&self, iova: u64, len: u64) -> bool {
        let inside = |&(b, l): &(u64, u64)| iova.wrapping_sub(b) < l && iova - b + len <= l;
        if inside(&self.windows[0]) {
            return true;
        }
        self.windows[1..].iter().any(inside)
    }

    /// True if `nlb` (at least one) blocks at `slba` lie inside a namespace of `nsze`
    /// blocks.
    #[inline(always)]
    pub(super) fn range_ok(slba: u64, nlb: u32, nsze: u64) -> bool {
        let end = slba.wrapping_add(nlb as u64);
        nlb != 0 && end >= slba && end <= nsze
    }

    /// The checks every request passes, branch-light; the reasons are worked out
    /// by `invalid` only when one fails.
    #[inline]
    pub fn valid(&self, req: &IoRequest, ns: &NsInfo) -> bool {
        match req.op {
            IoOp::Flush => true,
            IoOp::Read | IoOp::Write => match &req.iov {
                None => self.valid_rw(req, ns),
                Some(v) => self.valid_vectored(req, v, ns),
            },
            _ => Self::range_ok(req.slba, req.nlb, ns.nsze),
        }
    }

    /// The checks of a read or write: a range inside the namespace, and a buffer
    /// long enough, 4-byte aligned (PRP rule) and in one of the device's windows.
    #[inline(always)]
    pub fn valid_rw(&self, req: &IoRequest, ns: &NsInfo) -> bool {
        Self::range_ok(req.slba, req.nlb, ns.nsze)
            && (req.buf.len as u64) >= (req.nlb as u64) << ns.block_shift
            && req.buf.iova.0 & 3 == 0
            && self.in_window(req.buf.iova.0, req.buf.len as u64)
    }

    /// The namespace `req` names, if it has one and the blocks lie within it; the
    /// error naming which of the two is wrong otherwise, for controller `name` (cold:
    /// the checks' first step).
    pub fn target(&self, name: &str, req: &IoRequest) -> Result<&NsInfo, Error> {
        let Some(ns) = self.get(req.nsid) else {
            return Err(Error::NoSuchNamespace {
                device: name.to_string(),
                nsid: req.nsid,
                available: self.ns.iter().map(|n| n.nsid).collect(),
            });
        };
        if !Self::range_ok(req.slba, req.nlb, ns.nsze) {
            return Err(Error::LbaOutOfRange {
                nsid: req.nsid,
                slba: req.slba,
                nlb: req.nlb,
                nsze: ns.nsze,
            });
        }
        Ok(ns)
    }

    /// Why `req` failed the checks, with how to fix it.
    #[cold]
    #[inline(never)]
    pub fn invalid(&self, name: &str, req: &IoRequest) -> Error {
        let ns = match self.target(name, req) {
            Ok(ns) => ns,
            Err(e) => return e,
        };
        let need = (req.nlb as u64) << ns.block_shift;
        if (req.buf.len as u64) < need {
            return Error::BadBuffer(format!(
                "{} blocks of {} bytes need {need} bytes, the buffer has {}",
                req.nlb,
                1u32 << ns.block_shift,
                req.buf.len
            ));
        }
        if req.buf.iova.0 & 3 != 0 {
            return Error::BadBuffer(format!(
                "buffer address {:#x} is not 4-byte aligned (NVMe PRP rule); use an offset that is a multiple of 4",
                req.buf.iova.0
            ));
        }
        Error::BadBuffer(format!(
            "{}: the buffer at IOVA {:#x} ({} bytes) is not DMA memory of this device (from another \
             controller's pool, or none); allocate it with this controller's alloc_buffer, or \
             register its window with add_dma_window",
            name, req.buf.iova.0, req.buf.len
        ))
    }
}
