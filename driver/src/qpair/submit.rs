// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Submission: a request is checked, takes a command identifier, becomes a command
//! (the transport describes its data), and is posted; the doorbell follows once per
//! batch ([`Qpair::flush`]).

use super::namespaces::{Namespaces, NsInfo};
use super::request::{IoOp, IoRequest, Refused};
use super::tracker::NO_PARENT;
use super::Qpair;
use crate::clock;
use crate::dma::DmaSlice;
use crate::error::Error;
use crate::iov::DmaVec;
use crate::spec::{io_opc, Sqe};
use crate::transport::Transport;

impl<T: Transport> Qpair<T> {
    /// Submits a request. It is in the submission queue (the doorbell follows at the
    /// next [`flush`](Self::flush) or poll), or waiting on the pending queue; or it is
    /// handed back with the reason: bad arguments, [`Error::Busy`] when the pending
    /// queue is full, [`Error::ControllerFailed`] when the controller is gone.
    ///
    /// Callers on a data path that handle refusals themselves may prefer
    /// [`try_submit`](Self::try_submit), whose refusal is one byte.
    // The refusal hands the request back by value on a cold path; a vectored
    // request's `iov` made `IoRequest` 64 bytes, past clippy's size for an `Err`.
    #[allow(clippy::result_large_err)]
    #[inline]
    pub fn submit(&mut self, req: IoRequest) -> std::result::Result<(), (Error, IoRequest)> {
        match self.try_submit(&req) {
            Ok(()) => Ok(()),
            Err(why) => Err((self.explain(why, req), req)),
        }
    }

    /// [`submit`](Self::submit) with a compact refusal: nothing is built or moved
    /// when a request is refused (the caller still has it, `IoRequest` is `Copy`), and
    /// [`explain`](Self::explain) gives the full error when one is wanted.
    #[inline(always)]
    pub fn try_submit(&mut self, req: &IoRequest) -> std::result::Result<(), Refused> {
        // The data path: a read or write that fits one command, on a queue pair with
        // nothing waiting and an identifier free. The operation is tested first so
        // the rest is straight-line code for it; anything else takes `submit_general`.
        if let (IoOp::Read | IoOp::Write, Some(ns)) = (req.op, self.namespaces.get(req.nsid)) {
            if self.namespaces.valid_rw(req, ns) && !self.slow && req.nlb <= ns.max_rw_blocks {
                let block_shift = ns.block_shift;
                if let Some(cid) = self.trackers.take() {
                    self.stats.submitted += 1;
                    let opc = if req.op == IoOp::Read {
                        io_opc::READ
                    } else {
                        io_opc::WRITE
                    };
                    let len = (req.nlb as u64) << block_shift;
                    let sqe =
                        self.rw_sqe(cid, opc, req.nsid, req.slba, req.nlb, req.buf.iova.0, len);
                    self.post(cid, sqe, NO_PARENT, req.ctx);
                    return Ok(());
                }
            }
        }
        self.submit_general(
            req.op, req.nsid, req.slba, req.nlb, req.buf, req.iov, req.ctx,
        )
    }

    /// Everything `try_submit`'s fast path leaves: other operations, split requests,
    /// the pending queue, refusals. The request comes in pieces: passing it whole, or
    /// its address, makes every caller build it in memory, on the fast path too.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn submit_general(
        &mut self,
        op: IoOp,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: DmaSlice,
        iov: Option<DmaVec>,
        ctx: u64,
    ) -> std::result::Result<(), Refused> {
        let req = IoRequest {
            op,
            nsid,
            slba,
            nlb,
            buf,
            iov,
            ctx,
        };
        let ns = match self.checked_namespace(&req) {
            Some(ns) => ns,
            None => return Err(Refused::Invalid),
        };
        if let (IoOp::Read | IoOp::Write, Some(v)) = (op, &iov) {
            if !self.vector_ok(&req, v, &ns) {
                return Err(Refused::Invalid);
            }
        }
        if self.slow || !self.trackers.any_free() {
            return self.pend(req);
        }
        self.stats.submitted += 1;
        self.start(&req, ns);
        Ok(())
    }

    /// The namespace of `req` if `req` passes its checks, against the newest sizes
    /// when it fails against the copy (see `namespaces.rs`).
    #[inline(always)]
    fn checked_namespace(&mut self, req: &IoRequest) -> Option<NsInfo> {
        let check = |t: &Namespaces| t.get(req.nsid).filter(|ns| t.valid(req, ns)).copied();
        if let Some(ns) = check(&self.namespaces) {
            return Some(ns);
        }
        if !self.refresh_namespaces_if_changed() {
            return None;
        }
        check(&self.namespaces)
    }

    /// The full error for a request [`try_submit`](Self::try_submit) refused: what is
    /// wrong and how to fix it, naming the device.
    #[cold]
    #[inline(never)]
    pub fn explain(&self, why: Refused, req: IoRequest) -> Error {
        match why {
            Refused::Invalid => match (req.op, &req.iov) {
                (IoOp::Read | IoOp::Write, Some(v)) => self.vector_invalid(&req, v),
                _ => self.namespaces.invalid(self.ctrl.name(), &req),
            },
            Refused::Busy => Error::Busy(self.pending.max()),
            Refused::Failed => self.ctrl.failed_error(),
        }
    }

    /// Builds and posts the command of `nlb` blocks at `slba` (data at `iova`) of
    /// `req`, with identifier `cid` (taken), as a request of its own or a piece of
    /// split request `parent`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn issue(
        &mut self,
        cid: u16,
        req: &IoRequest,
        slba: u64,
        nlb: u32,
        iova: u64,
        parent: u16,
        block_shift: u32,
    ) {
        let len = (nlb as u64) << block_shift;
        let sqe = match req.op {
            IoOp::Read | IoOp::Write if req.iov.is_some() => {
                let opc = if req.op == IoOp::Read {
                    io_opc::READ
                } else {
                    io_opc::WRITE
                };
                let v = req.iov.unwrap_or_else(|| unreachable!());
                // For a vectored request `iova` is the byte offset into its slices.
                self.rw_sqe_vectored(cid, opc, req, &v, slba, nlb, iova, len)
            }
            IoOp::Read => self.rw_sqe(cid, io_opc::READ, req.nsid, slba, nlb, iova, len),
            IoOp::Write => self.rw_sqe(cid, io_opc::WRITE, req.nsid, slba, nlb, iova, len),
            IoOp::WriteZeroes => Sqe::rw(io_opc::WRITE_ZEROES, req.nsid, slba, nlb),
            IoOp::Flush => {
                let mut sqe = Sqe::new(io_opc::FLUSH);
                sqe.nsid = req.nsid;
                sqe
            }
            IoOp::Deallocate => {
                let mut sqe = Sqe::new(io_opc::DATASET_MANAGEMENT);
                sqe.nsid = req.nsid;
                self.transport.describe_dsm_range(
                    self.trackers.index(cid) as u16,
                    &mut sqe,
                    slba,
                    nlb,
                );
                sqe.cdw10 = 0; // one range, zero based
                sqe.cdw11 = 1 << 2; // AD: deallocate
                sqe
            }
        };
        self.post(cid, sqe, parent, req.ctx);
    }

    /// A read or write command with its data described.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn rw_sqe(
        &mut self,
        cid: u16,
        opc: u8,
        nsid: u32,
        slba: u64,
        nlb: u32,
        iova: u64,
        len: u64,
    ) -> Sqe {
        let mut sqe = Sqe::rw(opc, nsid, slba, nlb);
        let tag = self.trackers.index(cid) as u16;
        self.transport.describe_data(tag, &mut sqe, iova, len);
        sqe
    }

    /// Arms the tracker of `cid` and hands the command to the transport.
    #[inline(always)]
    fn post(&mut self, cid: u16, mut sqe: Sqe, parent: u16, ctx: u64) {
        sqe.set_cid(cid);
        let deadline = clock::ticks().wrapping_add(self.timeout_ticks);
        self.trackers.arm(cid, parent, ctx, deadline);
        self.transport.post(&sqe);
        self.stats.commands += 1;
    }

    /// Writes the SQ tail doorbell if commands were queued since the last write.
    #[inline]
    pub fn flush(&mut self) {
        // Never while held (reset or failed): a hold forgets unannounced commands as
        // it rewinds, and nothing is issued while held (new requests pend).
        debug_assert!(!(self.held && self.transport.has_unannounced()));
        if self.transport.ring_doorbell() {
            self.stats.sq_doorbell_writes += 1;
        }
    }
}
