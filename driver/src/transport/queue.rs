// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The transport chosen at run time, so that one program (one block layer) can hold
//! queues over different transports, with no indirect call:
//!
//! - [`IoQpair`], the I/O queue pair callers hold: an enum over [`Qpair<T>`] for
//!   each transport `T`. The match is made once per call of the queue pair (submit,
//!   poll, flush), and inside each arm every transport call is static and inlined.
//!   Measured with callgrind (docs/BENCHMARKS.md, "Instructions per I/O", driver at
//!   QD 1 / QD 32, and what the multipath block layer adds): with one variant the
//!   match compiles away (198 / 141, block layer 103, as before the seam). With a
//!   second variant (a stub transport, for the measurement only): 204 / 142, block
//!   layer 113 (its channel calls several queue pair methods per I/O, each a match);
//!   a match per *transport* call instead (the enum one level down, eight or so per
//!   I/O) cost 216 / 151, block layer 118.
//! - [`QueueTransport`], one queue's transport, for the admin queue (not on the data
//!   path) and for handing a new I/O queue from the controller's transport to the
//!   queue pair.
//!
//! A new transport adds a variant to both, and an arm to each method.

use super::{CqeTail, Transport};
use crate::dma::DmaSlice;
use crate::error::{Error, Result};
use crate::pcie::PcieQueue;
use crate::qpair::{
    AdminSide, IoCompletion, IoRequest, Qpair, QpairOptions, QpairShared, QpairStats, Refused,
};
use crate::spec::Sqe;
use std::sync::Arc;

/// The transport a queue (admin or I/O) runs over, chosen when the controller is
/// attached.
#[derive(Debug)]
pub enum QueueTransport {
    /// NVMe over PCIe: rings in host memory, doorbells in BAR0.
    Pcie(PcieQueue),
}

/// Calls `$call` on the transport inside `$self`, whichever it is.
macro_rules! each {
    ($self:expr, $q:ident => $call:expr) => {
        match $self {
            QueueTransport::Pcie($q) => $call,
        }
    };
}

impl Transport for QueueTransport {
    #[inline(always)]
    fn depth_max(&self) -> usize {
        each!(self, q => q.depth_max())
    }

    #[inline(always)]
    fn describe_data(&mut self, tag: u16, sqe: &mut Sqe, iova: u64, len: u64) {
        each!(self, q => q.describe_data(tag, sqe, iova, len))
    }

    #[inline(always)]
    fn vector_limits(&self) -> crate::iov::Limits {
        each!(self, q => q.vector_limits())
    }

    #[inline(always)]
    fn describe_vectored(
        &mut self,
        tag: u16,
        sqe: &mut Sqe,
        slices: &[DmaSlice],
        offset: u64,
        len: u64,
    ) {
        each!(self, q => q.describe_vectored(tag, sqe, slices, offset, len))
    }

    #[inline(always)]
    fn describe_dsm_range(&mut self, tag: u16, sqe: &mut Sqe, slba: u64, nlb: u32) {
        each!(self, q => q.describe_dsm_range(tag, sqe, slba, nlb))
    }

    #[inline(always)]
    fn post(&mut self, sqe: &Sqe) {
        each!(self, q => q.post(sqe))
    }

    #[inline(always)]
    fn has_unannounced(&self) -> bool {
        each!(self, q => q.has_unannounced())
    }

    #[inline(always)]
    fn ring_doorbell(&mut self) -> bool {
        each!(self, q => q.ring_doorbell())
    }

    #[inline(always)]
    fn discard_unannounced(&mut self) {
        each!(self, q => q.discard_unannounced())
    }

    #[inline(always)]
    fn peek_completion(&self) -> Option<CqeTail> {
        each!(self, q => q.peek_completion())
    }

    #[inline(always)]
    fn completion_dw0(&self) -> u32 {
        each!(self, q => q.completion_dw0())
    }

    #[inline(always)]
    fn pop_completion(&mut self) {
        each!(self, q => q.pop_completion())
    }

    #[inline(always)]
    fn release_completions(&mut self, popped: usize) -> bool {
        each!(self, q => q.release_completions(popped))
    }

    #[inline(always)]
    fn position(&self) -> u32 {
        each!(self, q => q.position())
    }

    #[inline(always)]
    fn rewind(&mut self) {
        each!(self, q => q.rewind())
    }
}

/// An I/O queue pair, owned by one thread (`Send`, not `Sync`): one [`Qpair`] over
/// the transport its controller was attached with. Each method is the `Qpair`
/// method of the same name.
#[derive(Debug)]
pub enum IoQpair {
    /// Over PCIe.
    Pcie(Qpair<PcieQueue>),
}

/// Calls `$call` on the queue pair inside `$self`, whichever transport it runs over.
macro_rules! each_qpair {
    ($self:expr, $q:ident => $call:expr) => {
        match $self {
            IoQpair::Pcie($q) => $call,
        }
    };
}

/// The queue pair over `transport` (a new I/O queue, [`super::CtrlTransport::io_queue`]).
pub(crate) fn io_qpair(
    transport: QueueTransport,
    ctrl: Arc<dyn AdminSide>,
    shared: Arc<QpairShared>,
    opts: &QpairOptions,
) -> Result<IoQpair> {
    Ok(match transport {
        QueueTransport::Pcie(q) => IoQpair::Pcie(Qpair::new(ctrl, shared, q, opts)?),
    })
}

impl IoQpair {
    /// See [`Qpair::submit`].
    // The refusal hands the request back by value on a cold path (see `Qpair::submit`).
    #[allow(clippy::result_large_err)]
    #[inline]
    pub fn submit(&mut self, req: IoRequest) -> std::result::Result<(), (Error, IoRequest)> {
        each_qpair!(self, q => q.submit(req))
    }

    /// See [`Qpair::try_submit`].
    #[inline(always)]
    pub fn try_submit(&mut self, req: &IoRequest) -> std::result::Result<(), Refused> {
        each_qpair!(self, q => q.try_submit(req))
    }

    /// See [`Qpair::explain`].
    pub fn explain(&self, why: Refused, req: IoRequest) -> Error {
        each_qpair!(self, q => q.explain(why, req))
    }

    /// See [`Qpair::flush`].
    #[inline(always)]
    pub fn flush(&mut self) {
        each_qpair!(self, q => q.flush())
    }

    /// See [`Qpair::poll`].
    #[inline(always)]
    pub fn poll(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize {
        each_qpair!(self, q => q.poll(max, cb))
    }

    /// See [`Qpair::qid`].
    pub fn qid(&self) -> u16 {
        each_qpair!(self, q => q.qid())
    }

    /// See [`Qpair::depth_max`].
    pub fn depth_max(&self) -> usize {
        each_qpair!(self, q => q.depth_max())
    }

    /// See [`Qpair::outstanding`].
    #[inline(always)]
    pub fn outstanding(&self) -> usize {
        each_qpair!(self, q => q.outstanding())
    }

    /// See [`Qpair::needs_poll`].
    #[inline(always)]
    pub fn needs_poll(&self) -> bool {
        each_qpair!(self, q => q.needs_poll())
    }

    /// See [`Qpair::held_for_abort`].
    pub fn held_for_abort(&self) -> usize {
        each_qpair!(self, q => q.held_for_abort())
    }

    /// See [`Qpair::pending_len`].
    pub fn pending_len(&self) -> usize {
        each_qpair!(self, q => q.pending_len())
    }

    /// See [`Qpair::stats`].
    #[inline(always)]
    pub fn stats(&self) -> QpairStats {
        each_qpair!(self, q => q.stats())
    }

    /// See [`Qpair::device`].
    pub fn device(&self) -> &str {
        each_qpair!(self, q => q.device())
    }

    /// See [`Qpair::is_failed`].
    #[inline(always)]
    pub fn is_failed(&self) -> bool {
        each_qpair!(self, q => q.is_failed())
    }

    /// See [`Qpair::is_resetting`].
    #[inline(always)]
    pub fn is_resetting(&self) -> bool {
        each_qpair!(self, q => q.is_resetting())
    }
}
