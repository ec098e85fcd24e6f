// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What callers hand a queue pair and get back: requests, completions, refusals and
//! options.

use crate::dma::DmaSlice;
use crate::iov::DmaVec;
use crate::spec::Status;

/// The operation of an I/O request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Read `nlb` blocks at `slba` into the buffer.
    Read,
    /// Write `nlb` blocks at `slba` from the buffer.
    Write,
    /// Flush the volatile write cache (no range, no buffer).
    Flush,
    /// Write zeroes to `nlb` blocks at `slba` (no buffer).
    WriteZeroes,
    /// Deallocate (unmap) `nlb` blocks at `slba` with Dataset Management (no buffer).
    Deallocate,
}

/// An I/O request. `ctx` is the caller's: it comes back with the completion.
#[derive(Clone, Copy, Debug)]
pub struct IoRequest {
    /// Operation.
    pub op: IoOp,
    /// Namespace.
    pub nsid: u32,
    /// Starting block.
    pub slba: u64,
    /// Number of blocks (a count, at least 1 except for flush).
    pub nlb: u32,
    /// Data buffer for read and write; ignored otherwise, and when `iov` is set.
    pub buf: DmaSlice,
    /// Several slices instead of `buf` (a vectored read or write, see [`DmaVec`]);
    /// `None` for the one-slice case, which keeps its own fast path.
    pub iov: Option<DmaVec>,
    /// Caller's context.
    pub ctx: u64,
}

impl IoRequest {
    /// A read of `nlb` blocks at `slba` into `buf`.
    pub fn read(nsid: u32, slba: u64, nlb: u32, buf: DmaSlice, ctx: u64) -> Self {
        IoRequest {
            op: IoOp::Read,
            nsid,
            slba,
            nlb,
            buf,
            iov: None,
            ctx,
        }
    }
    /// A write of `nlb` blocks at `slba` from `buf`.
    pub fn write(nsid: u32, slba: u64, nlb: u32, buf: DmaSlice, ctx: u64) -> Self {
        IoRequest {
            op: IoOp::Write,
            nsid,
            slba,
            nlb,
            buf,
            iov: None,
            ctx,
        }
    }
    /// A vectored read of `nlb` blocks at `slba` into the slices of `iov`, in order
    /// (`spdk_nvme_ns_cmd_readv`); the slices must hold at least `nlb` blocks.
    pub fn readv(nsid: u32, slba: u64, nlb: u32, iov: DmaVec, ctx: u64) -> Self {
        IoRequest {
            iov: Some(iov),
            ..Self::read(nsid, slba, nlb, DmaSlice::default(), ctx)
        }
    }
    /// A vectored write of `nlb` blocks at `slba` from the slices of `iov`, in order
    /// (`spdk_nvme_ns_cmd_writev`).
    pub fn writev(nsid: u32, slba: u64, nlb: u32, iov: DmaVec, ctx: u64) -> Self {
        IoRequest {
            iov: Some(iov),
            ..Self::write(nsid, slba, nlb, DmaSlice::default(), ctx)
        }
    }
    /// A flush of namespace `nsid`.
    pub fn flush(nsid: u32, ctx: u64) -> Self {
        IoRequest {
            op: IoOp::Flush,
            nsid,
            slba: 0,
            nlb: 0,
            buf: DmaSlice::default(),
            iov: None,
            ctx,
        }
    }
    /// A write zeroes or deallocate of `nlb` blocks at `slba`.
    pub fn no_data(op: IoOp, nsid: u32, slba: u64, nlb: u32, ctx: u64) -> Self {
        IoRequest {
            op,
            nsid,
            slba,
            nlb,
            buf: DmaSlice::default(),
            iov: None,
            ctx,
        }
    }
}

/// A finished request: the caller's context and the NVMe status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoCompletion {
    /// The request's `ctx`.
    pub ctx: u64,
    /// Its status (of the first failed command, for split requests).
    pub status: Status,
}

/// Why [`Qpair::try_submit`](super::Qpair::try_submit) refused a request;
/// [`Qpair::explain`](super::Qpair::explain) turns it into
/// the full [`Error`](crate::Error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Bad arguments: no such namespace, a range past its end, or a buffer that is too
    /// short, misaligned or not this device's DMA memory. Not worth retrying.
    Invalid,
    /// The pending ring is full: retry after a poll has completed something.
    Busy,
    /// The controller failed or was removed: try another path.
    Failed,
}

/// Options for a new queue pair.
#[derive(Clone, Copy, Debug)]
pub struct QpairOptions {
    /// Entries in the SQ and CQ (capped by CAP.MQES). Commands in flight are one fewer.
    pub entries: u16,
    /// Requests that may wait on the pending ring.
    pub pending_max: usize,
    /// Per-command deadline; an expired command is aborted, then the controller reset.
    pub timeout_ms: u64,
}

impl Default for QpairOptions {
    fn default() -> Self {
        QpairOptions {
            entries: 256,
            pending_max: 4096,
            timeout_ms: 30_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_constructors() {
        let r = IoRequest::flush(3, 9);
        assert_eq!((r.op, r.nsid, r.ctx), (IoOp::Flush, 3, 9));
        let r = IoRequest::no_data(IoOp::Deallocate, 1, 10, 20, 0);
        assert_eq!((r.slba, r.nlb), (10, 20));
    }
}
