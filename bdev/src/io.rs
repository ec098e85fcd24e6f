// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What travels through a bdev channel: requests, completions, and the queue a
//! channel drives for each path (an NVMe I/O queue pair, or a model of one in tests).

use nvme_driver::{DmaSlice, IoCompletion, IoOp, IoQpair, IoRequest, Refused, Status};

/// One block I/O. `ctx` is the caller's: it comes back with the completion, so no
/// per-I/O closure or box is needed.
///
/// Data comes from an [`IoBuf`](crate::IoBuf) (memory every path of the layer
/// reaches), whole or a slice of it; the buffer must stay alive, and untouched by the
/// host for a read, until the completion:
///
/// ```
/// # fn main() -> nvme_bdev::Result<()> {
/// use nvme_bdev::{BdevIo, BlockLayer, IoOp, LayerOptions};
///
/// let layer = BlockLayer::new(LayerOptions::default())?;
/// let buf = layer.alloc_buffer(64 << 10)?;
/// // Blocks 100..108 into the buffer's second 4 KiB; the completion carries ctx 42.
/// let read = BdevIo::read(100, 8, buf.slice(4096, 4096)?, 42);
/// assert_eq!((read.op, read.slba, read.nlb, read.ctx), (IoOp::Read, 100, 8, 42));
/// // No data: flush, write zeroes, unmap.
/// let trim = BdevIo::unmap(0, 2048, 43);
/// assert_eq!(trim.buf.len, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BdevIo {
    /// Operation.
    pub op: IoOp,
    /// First block.
    pub slba: u64,
    /// Blocks (0 for flush).
    pub nlb: u32,
    /// Data buffer (read and write): a slice of an [`IoBuf`](crate::IoBuf).
    pub buf: DmaSlice,
    /// Caller's context.
    pub ctx: u64,
}

impl BdevIo {
    /// Read `nlb` blocks at `slba` into `buf`.
    pub fn read(slba: u64, nlb: u32, buf: DmaSlice, ctx: u64) -> Self {
        BdevIo {
            op: IoOp::Read,
            slba,
            nlb,
            buf,
            ctx,
        }
    }
    /// Write `nlb` blocks at `slba` from `buf`.
    pub fn write(slba: u64, nlb: u32, buf: DmaSlice, ctx: u64) -> Self {
        BdevIo {
            op: IoOp::Write,
            slba,
            nlb,
            buf,
            ctx,
        }
    }
    /// Flush the volatile write cache.
    pub fn flush(ctx: u64) -> Self {
        BdevIo {
            op: IoOp::Flush,
            slba: 0,
            nlb: 0,
            buf: DmaSlice::default(),
            ctx,
        }
    }
    /// Write zeroes to `nlb` blocks at `slba`.
    pub fn write_zeroes(slba: u64, nlb: u32, ctx: u64) -> Self {
        BdevIo {
            op: IoOp::WriteZeroes,
            slba,
            nlb,
            buf: DmaSlice::default(),
            ctx,
        }
    }
    /// Unmap (deallocate) `nlb` blocks at `slba`.
    pub fn unmap(slba: u64, nlb: u32, ctx: u64) -> Self {
        BdevIo {
            op: IoOp::Deallocate,
            slba,
            nlb,
            buf: DmaSlice::default(),
            ctx,
        }
    }

    /// The NVMe request for namespace `nsid`, carrying `ctx` instead of the caller's.
    #[inline]
    pub(crate) fn to_request(self, nsid: u32, ctx: u64) -> IoRequest {
        IoRequest {
            op: self.op,
            nsid,
            slba: self.slba,
            nlb: self.nlb,
            buf: self.buf,
            iov: None,
            ctx,
        }
    }

    /// Checks the request against a bdev of `nblocks` blocks of `1 << block_shift` bytes.
    pub(crate) fn validate(&self, nblocks: u64, block_shift: u32) -> crate::Result<()> {
        if self.op == IoOp::Flush {
            return Ok(());
        }
        if self.nlb == 0
            || self
                .slba
                .checked_add(self.nlb as u64)
                .is_none_or(|e| e > nblocks)
        {
            return Err(crate::Error::InvalidIo(format!(
                "blocks {}+{} are outside the bdev's {nblocks} blocks",
                self.slba, self.nlb
            )));
        }
        if matches!(self.op, IoOp::Read | IoOp::Write)
            && (self.buf.len as u64) < (self.nlb as u64) << block_shift
        {
            return Err(crate::Error::InvalidIo(format!(
                "{} blocks of {} bytes do not fit a {}-byte buffer",
                self.nlb,
                1u64 << block_shift,
                self.buf.len
            )));
        }
        Ok(())
    }
}

/// A finished I/O: the caller's context and the final NVMe status (after failover
/// and retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BdevCompletion {
    /// The I/O's `ctx`.
    pub ctx: u64,
    /// Final status.
    pub status: Status,
}

/// The queue a channel drives on one path: what the multipath channel needs from an
/// NVMe I/O queue pair. Implemented by [`IoQpair`]; tests implement it with models.
pub trait PathQueue: Send {
    /// True if [`submit`](Self::submit) refuses, with the request handed back, every
    /// request `BdevIo::validate` would refuse (range and buffer against the same
    /// namespace geometry): the channel then skips its own check before submitting
    /// and checks only what the queue refused.
    const VALIDATES: bool = false;
    /// Bits this queue wants in the upper half of every request's `ctx` (the channel
    /// puts its own context in the low 32 bits): a queue shared by several channels
    /// tells their completions apart by them, and hands each channel back its own
    /// completions with them cleared. 0 for a queue of one channel.
    #[inline(always)]
    fn ctx_tag(&self) -> u64 {
        0
    }
    /// Submits without blocking, or says why not (see [`IoQpair::try_submit`]); the
    /// caller keeps the request either way.
    fn submit(&mut self, req: &IoRequest) -> Result<(), Refused>;
    /// Delivers up to `max` completions, each request exactly once.
    fn poll(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize;
    /// Rings the doorbell for queued commands.
    fn flush(&mut self);
    /// Requests accepted and not completed.
    fn outstanding(&self) -> usize;
    /// Requests accepted so far (the channel reports them as the I/Os dispatched on
    /// the path).
    fn submitted(&self) -> u64;
    /// Requests that waited in the queue's own pending queue (a depth deeper than
    /// its command slots); 0 for a queue without one.
    fn pended(&self) -> u64 {
        0
    }
    /// Commands that passed their deadline so far (each then gets an Abort); 0 for a
    /// queue without deadlines.
    fn timeouts(&self) -> u64 {
        0
    }
    /// Commands handed back because their controller was reset or failed; 0 for a
    /// queue that never does that.
    fn reset_aborts(&self) -> u64 {
        0
    }
    /// True once the controller behind it failed for good.
    fn is_failed(&self) -> bool;
    /// True while the controller behind it resets: the queue accepts requests but
    /// holds them until the reset ends (up to the admin timeout), so a channel sends
    /// them to another path if it has one. The default, never, suits a queue that
    /// does not hold.
    #[inline]
    fn is_resetting(&self) -> bool {
        false
    }
    /// True when a poll has work to do (requests outstanding, or a state change the
    /// owner must acknowledge by polling, such as a reset). A channel's ordinary polls
    /// look only at the queues it gave I/O; its full polls (when the QSBR epoch moved,
    /// and every 1024 polls) poll every queue for which this is true. A queue whose
    /// state can change while it holds nothing should have the epoch moved when it
    /// does ([`Qsbr::bump`](crate::qsbr::Qsbr::bump); the block layer does this for its
    /// NVMe controllers), or it waits for the periodic full poll. The default, always
    /// true, is always safe.
    #[inline]
    fn needs_poll(&self) -> bool {
        true
    }
    /// Housekeeping the owning channel runs at its full polls, on its thread (a
    /// shared queue recycles the slots of channels that let go). Nothing by default.
    fn maintain(&mut self) {}
}

impl PathQueue for IoQpair {
    // `IoQpair::submit` checks the namespace, the range against the namespace size,
    // and the buffer against the block count and size; a multipath bdev joins only
    // paths whose namespaces have the same size and block size.
    const VALIDATES: bool = true;
    #[inline(always)]
    fn submit(&mut self, req: &IoRequest) -> Result<(), Refused> {
        IoQpair::try_submit(self, req)
    }
    #[inline]
    fn poll(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize {
        IoQpair::poll(self, max, cb)
    }
    #[inline]
    fn flush(&mut self) {
        IoQpair::flush(self)
    }
    fn outstanding(&self) -> usize {
        IoQpair::outstanding(self)
    }
    fn submitted(&self) -> u64 {
        IoQpair::stats(self).submitted
    }
    fn pended(&self) -> u64 {
        IoQpair::stats(self).pended
    }
    fn timeouts(&self) -> u64 {
        IoQpair::stats(self).timeouts
    }
    fn reset_aborts(&self) -> u64 {
        IoQpair::stats(self).reset_aborts
    }
    #[inline]
    fn is_failed(&self) -> bool {
        IoQpair::is_failed(self)
    }
    #[inline]
    fn is_resetting(&self) -> bool {
        IoQpair::is_resetting(self)
    }
    #[inline]
    fn needs_poll(&self) -> bool {
        IoQpair::needs_poll(self)
    }
}
