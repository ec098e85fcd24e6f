// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The namespace bdev: one namespace through one controller, no failover. Its channel
//! is an I/O queue pair of the controller, driven directly.

use super::controller::CtrlRecord;
use crate::events::{BdevEvent, EventHub};
use crate::io::{BdevCompletion, BdevIo};
use crate::iostat::{BdevIoStat, IoStat, OpCounts, StatBoard, StatRegistry, PUBLISH_EVERY};
use crate::mpath::BdevInfo;
use crate::room::RoomWaiters;
use crate::{Error, Result};
use nvme_driver::{IoQpair, IoRequest, QpairOptions, Refused};
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Completions taken from the queue pair per poll (as the multipath channel takes
/// from each path's queue).
const POLL_BATCH: usize = 256;

/// A bdev for one namespace of one controller (no failover).
pub struct NsBdev {
    pub(super) info: BdevInfo,
    pub(super) nsid: u32,
    /// The controller it belongs to.
    pub(super) ctrl: Arc<CtrlRecord>,
    pub(super) qpair: QpairOptions,
    /// Its channels' I/O statistics.
    pub(super) iostat: Arc<StatRegistry>,
    /// Blocks now: `info.num_blocks` at first, then what the controller reports after
    /// a resize (`controller.rs`, `follow_sizes`). Shared with the channels, which
    /// read it only to explain a refusal.
    pub(super) num_blocks: Arc<AtomicU64>,
}

impl fmt::Debug for NsBdev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsBdev").field("info", &self.info).finish()
    }
}

impl NsBdev {
    /// A channel: a new I/O queue pair on the controller, which must be live.
    pub(super) fn channel(&self) -> Result<NsChannel> {
        let ctrl = self.ctrl.live_controller().ok_or_else(|| {
            Error::Stopped(format!(
                "{}: controller {} is not connected",
                self.info.name, self.ctrl.name
            ))
        })?;
        Ok(NsChannel {
            qpair: ManuallyDrop::new(ctrl.create_io_qpair(self.qpair)?),
            ctrl: self.ctrl.clone(),
            pending_max: self.qpair.pending_max,
            room: RoomWaiters::new(),
            nsid: self.nsid,
            num_blocks: self.num_blocks.clone(),
            block_shift: self.info.block_size.trailing_zeros(),
            ops: OpCounts::default(),
            completed: 0,
            errors: 0,
            publish_countdown: PUBLISH_EVERY,
            board: self.iostat.open(0),
            registry: self.iostat.clone(),
        })
    }

    /// I/O statistics over every channel this bdev has had, readable from any thread
    /// while I/O runs (see [`crate::iostat`]).
    pub fn iostat(&self) -> BdevIoStat {
        self.iostat.snapshot(&self.info.name, |_| None)
    }

    /// Blocks now (follows resizes).
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Acquire)
    }

    /// The namespace has `blocks` blocks now: reported to `events` as
    /// [`BdevEvent::Resized`] if that is a change.
    pub(super) fn resize(&self, blocks: u64, events: &EventHub) {
        let old = self.num_blocks.swap(blocks, Ordering::AcqRel);
        if old != blocks {
            events.emit(BdevEvent::Resized {
                bdev: self.info.name.clone(),
                old_blocks: old,
                new_blocks: blocks,
            });
        }
    }
}

/// A channel of a namespace bdev: the queue pair itself.
pub struct NsChannel {
    /// Taken only by `drop`, which hands it to the controller thread.
    qpair: ManuallyDrop<IoQpair>,
    ctrl: Arc<CtrlRecord>,
    /// The queue pair's pending ring: a submit is refused as busy when it is full.
    pending_max: usize,
    /// Who waits for room (see [`Channel::notify_when_room`](crate::Channel::notify_when_room)).
    room: RoomWaiters,
    nsid: u32,
    num_blocks: Arc<AtomicU64>,
    block_shift: u32,
    /// Operations and blocks accepted, by kind (see [`crate::iostat`]).
    ops: OpCounts,
    /// I/Os delivered, and of those with an error status.
    completed: u64,
    errors: u64,
    /// Polls until the counters are published again.
    publish_countdown: u32,
    board: Arc<StatBoard>,
    registry: Arc<StatRegistry>,
}

impl fmt::Debug for NsChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsChannel")
            .field("controller", &self.ctrl.name)
            .field("nsid", &self.nsid)
            .field("qpair", &*self.qpair)
            .finish()
    }
}

impl Drop for NsChannel {
    fn drop(&mut self) {
        // SAFETY: `qpair` is taken once, here, and not used after: the channel is
        // being dropped.
        let qpair = unsafe { ManuallyDrop::take(&mut self.qpair) };
        self.ctrl.retire(qpair);
        self.board.publish(&self.iostat());
        self.registry.close(&self.board);
    }
}

impl NsChannel {
    /// Submits `io` on the queue pair. The queue pair checks range and buffer against
    /// this namespace, the bdev's geometry: a refusal is explained by `refusal`, off
    /// the fast path.
    #[inline]
    pub(super) fn submit(&mut self, io: BdevIo) -> std::result::Result<(), (Error, BdevIo)> {
        match self.qpair.try_submit(&io.to_request(self.nsid, io.ctx)) {
            Ok(()) => {
                self.ops.count(io.op, io.nlb);
                Ok(())
            }
            // `refusal` gets a request of its own: a function that is not inlined
            // would need the address of `io`, and the submitter's I/O would then be
            // built in memory on every submit.
            Err(why) => Err((self.refusal(why, io.to_request(self.nsid, io.ctx)), io)),
        }
    }

    /// Why the queue pair refused `req`: in the bdev's terms when the I/O itself is
    /// bad, in the driver's otherwise.
    #[cold]
    #[inline(never)]
    fn refusal(&self, why: Refused, req: IoRequest) -> Error {
        let io = BdevIo {
            op: req.op,
            slba: req.slba,
            nlb: req.nlb,
            buf: req.buf,
            ctx: req.ctx,
        };
        if let Err(e) = io.validate(self.num_blocks.load(Ordering::Acquire), self.block_shift) {
            return e;
        }
        self.qpair.explain(why, req).into()
    }

    /// Polls the queue pair, delivering each completion to `cb`; returns how many.
    #[inline]
    pub(super) fn poll(&mut self, cb: &mut impl FnMut(BdevCompletion)) -> usize {
        let errors = &mut self.errors;
        let n = self.qpair.poll(POLL_BATCH, &mut |c| {
            *errors += !c.status.is_success() as u64;
            cb(BdevCompletion {
                ctx: c.ctx,
                status: c.status,
            })
        });
        self.completed += n as u64;
        self.publish_countdown -= 1;
        if self.publish_countdown == 0 {
            self.publish_countdown = PUBLISH_EVERY;
            self.board.publish(&self.iostat());
        }
        n
    }

    /// This channel's I/O statistics, exact (its own core's view; other threads read
    /// the bdev's, [`NsBdev::iostat`]).
    pub fn iostat(&self) -> IoStat {
        self.ops
            .to_iostat(self.block_shift, self.completed, self.errors, 0, 0)
    }

    /// Rings the doorbell for what was submitted since.
    #[inline]
    pub(super) fn flush(&mut self) {
        self.qpair.flush()
    }

    /// I/Os submitted and not yet delivered.
    #[inline]
    pub(super) fn outstanding(&self) -> usize {
        self.qpair.outstanding()
    }

    /// True when a submit now would not be refused as busy: the pending ring has room
    /// (a request that finds a free command identifier does not use it).
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.qpair.pending_len() < self.pending_max
    }

    pub(crate) fn room_waiters(&self) -> &RoomWaiters {
        &self.room
    }

    pub(crate) fn room_waiters_mut(&mut self) -> &mut RoomWaiters {
        &mut self.room
    }

    /// The queue pair's counters.
    pub(super) fn queue_stats(&self) -> nvme_driver::QpairStats {
        self.qpair.stats()
    }

    /// The queue pair's ID.
    #[inline]
    pub(super) fn qid(&self) -> u16 {
        self.qpair.qid()
    }
}
