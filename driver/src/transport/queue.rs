// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The queue transport chosen at run time: one enum over the transports, so that one
//! program (one block layer) can hold queue pairs over different transports while
//! the data path stays a predictable `match`, inlined, with no indirect call.
//!
//! A new transport adds a variant here, and an arm to each method.

use super::{CqeTail, Transport};
use crate::dma::DmaSlice;
use crate::pcie::PcieQueue;
use crate::spec::Sqe;

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
