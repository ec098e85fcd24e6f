//! The channel's I/O slots: one per I/O the channel can track, sized when the channel
//! is made, so nothing is allocated per I/O.
//!
//! A slot is taken when an I/O is accepted and given back when its completion is
//! delivered, both here ([`SlotTable::take`] and [`SlotTable::finish`], with paired
//! assertions on the slot's state). The slot's index is the context a path queue
//! carries with the request, so a completion finds its slot without a search; a
//! completion whose context names no slot in flight on that path is counted as stray,
//! never delivered.

use crate::io::{BdevCompletion, BdevIo};
use nvme_driver::{IoCompletion, Status};

/// The end of the free-slot list.
const NO_SLOT: u32 = u32::MAX;

/// Where a slot's I/O is: in flight on a local path (the path's index, 0..=255), or
/// one of the named states. One `u16`, so "in flight on this path" is one compare on
/// every completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotState(u16);

impl SlotState {
    /// Not in use; on the free list.
    pub(super) const FREE: SlotState = SlotState(0x100);
    /// On the channel's pending queue: waiting for a usable path, for room in a path's
    /// queue, or for its retry time.
    pub(super) const PENDING: SlotState = SlotState(0x101);
    /// Finished without reaching a queue; on the finished queue, delivered at the next
    /// poll.
    pub(super) const FINISHED: SlotState = SlotState(0x102);

    /// Sent on local path `path` and not completed yet.
    #[inline(always)]
    pub(super) fn in_flight(path: u8) -> SlotState {
        SlotState(path as u16)
    }
}

/// What a slot's I/O went through on paths that returned errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ErrorHistory {
    /// The last error status a path returned ([`Status::SUCCESS`]: none yet): what
    /// the I/O completes with if it then fails for lack of a path, or at shutdown.
    pub(super) last_status: Status,
    /// Retries after retryable, non-path errors so far (at most `retry_count`, which
    /// is at most 255).
    pub(super) retries: u16,
}

impl ErrorHistory {
    /// No error yet.
    const NONE: ErrorHistory = ErrorHistory {
        last_status: Status::SUCCESS,
        retries: 0,
    };

    /// The last error status, or `otherwise` if no path returned one.
    pub(super) fn last_error_or(&self, otherwise: Status) -> Status {
        if self.last_status.is_success() {
            otherwise
        } else {
            self.last_status
        }
    }
}

/// One I/O the channel tracks.
#[derive(Clone, Copy, Debug)]
pub(super) struct IoSlot {
    pub(super) state: SlotState,
    pub(super) errors: ErrorHistory,
    /// While free: the next free slot ([`NO_SLOT`] ends the list).
    next_free: u32,
    /// The I/O as submitted: kept for failover and retries.
    pub(super) io: BdevIo,
    /// While pending: the earliest time to dispatch it again (ticks; 0: at once).
    pub(super) retry_at: u64,
    /// While pending for lack of a usable path: when it gives up and fails (ticks).
    /// 0 whenever the slot is not waiting for a path.
    pub(super) fail_at: u64,
}

/// The slots, their free list, the counts of I/O delivered, and what one path queue's
/// poll collected for later. Everything a queue's completion callback touches is in
/// here, so the callback captures one reference (a closure capturing each field
/// separately is set up on the stack at every poll).
pub(super) struct SlotTable {
    slots: Box<[IoSlot]>,
    /// The first free slot ([`NO_SLOT`]: none); each free slot names the next.
    free_head: u32,
    /// I/Os delivered so far (those accepted are the channel's `stats.submitted`; the
    /// difference is the slots in use).
    pub(super) delivered: u64,
    /// Of those, delivered with an error status.
    pub(super) failed: u64,
    /// Completions that matched no slot in flight on their path (see
    /// [`ChannelStats::stray_completions`](super::ChannelStats::stray_completions)).
    pub(super) stray: u64,
    /// Completions from one path queue's poll that are not successes of I/O in flight
    /// on that path, handled after the queue's poll returns (they may send the I/O to
    /// a queue again, which cannot happen inside that queue's poll). As long as the
    /// slot table: a queue may deliver more than it was asked for in one poll (a reset
    /// or failure completes everything it holds at once), but never more than one
    /// completion per slot.
    deferred: Box<[IoCompletion]>,
    deferred_len: usize,
}

impl SlotTable {
    /// `depth` free slots.
    pub(super) fn new(depth: usize) -> SlotTable {
        assert!(
            depth < NO_SLOT as usize,
            "{depth} slots: a slot index is a u32"
        );
        let slots: Box<[IoSlot]> = (0..depth)
            .map(|i| IoSlot {
                io: BdevIo::flush(0),
                state: SlotState::FREE,
                errors: ErrorHistory::NONE,
                next_free: if i + 1 < depth { i as u32 + 1 } else { NO_SLOT },
                retry_at: 0,
                fail_at: 0,
            })
            .collect();
        let deferred = vec![
            IoCompletion {
                ctx: 0,
                status: Status::SUCCESS,
            };
            depth
        ];
        SlotTable {
            slots,
            free_head: if depth > 0 { 0 } else { NO_SLOT },
            delivered: 0,
            failed: 0,
            stray: 0,
            deferred: deferred.into_boxed_slice(),
            deferred_len: 0,
        }
    }

    /// How many slots there are: the I/Os the channel can track at once.
    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot the next [`take`](Self::take) takes; `None` when every slot is in use.
    /// Its index can go out with a request before the slot is taken: nothing completes
    /// before the channel's next poll.
    #[inline(always)]
    pub(super) fn next_free(&self) -> Option<u32> {
        // `NO_SLOT` is out of range: one test for "none free" and the bounds.
        let index = self.free_head;
        ((index as usize) < self.slots.len()).then_some(index)
    }

    /// Takes slot `index`, the one [`next_free`](Self::next_free) named, for `io`, in
    /// `state`.
    #[inline(always)]
    pub(super) fn take(&mut self, index: u32, io: BdevIo, state: SlotState) {
        debug_assert_eq!(
            index, self.free_head,
            "slots are taken from the free list's head"
        );
        let Some(slot) = self.slots.get_mut(index as usize) else {
            debug_assert!(false, "slot {index} is out of range");
            return;
        };
        debug_assert_eq!(slot.state, SlotState::FREE, "slot {index} on the free list");
        debug_assert_eq!(slot.fail_at, 0, "slot {index} left waiting for a path");
        self.free_head = slot.next_free;
        slot.state = state;
        slot.errors = ErrorHistory::NONE;
        slot.io = io;
        // `retry_at` is set by whoever puts the slot on the pending queue.
    }

    /// Gives back slot `index`, taken for an I/O that was then handed back to its
    /// submitter: nothing is delivered or counted.
    pub(super) fn untake(&mut self, index: u32) {
        self.release(index as usize);
    }

    /// Delivers slot `index`'s I/O to `cb` with `status` and gives the slot back. The
    /// one place an I/O completes.
    #[inline(always)]
    pub(super) fn finish(
        &mut self,
        index: usize,
        status: Status,
        cb: &mut impl FnMut(BdevCompletion),
    ) {
        let ctx = self.release(index);
        self.delivered += 1;
        if !status.is_success() {
            self.failed += 1;
        }
        cb(BdevCompletion { ctx, status });
    }

    /// Puts slot `index` back on the free list; returns its I/O's context.
    #[inline(always)]
    fn release(&mut self, index: usize) -> u64 {
        let slot = &mut self.slots[index];
        debug_assert_ne!(slot.state, SlotState::FREE, "slot {index} given back twice");
        slot.state = SlotState::FREE;
        slot.next_free = self.free_head;
        self.free_head = index as u32;
        slot.io.ctx
    }

    /// Slot `index`.
    #[inline(always)]
    pub(super) fn get(&self, index: u32) -> &IoSlot {
        &self.slots[index as usize]
    }

    /// Slot `index`, to change.
    #[inline(always)]
    pub(super) fn get_mut(&mut self, index: u32) -> &mut IoSlot {
        &mut self.slots[index as usize]
    }

    /// True if `c` is the completion of an I/O in flight on local path `path`.
    #[inline(always)]
    pub(super) fn is_in_flight_on(&self, path: u8, c: &IoCompletion) -> bool {
        self.slots
            .get(c.ctx as usize)
            .is_some_and(|slot| slot.state == SlotState::in_flight(path))
    }

    /// A completion from local path `path`'s queue, inside that queue's poll: a
    /// success of I/O in flight on the path (the common case) is delivered at once;
    /// anything else is kept for [`take_deferred`](Self::take_deferred).
    #[inline(always)]
    pub(super) fn on_queue_completion(
        &mut self,
        path: u8,
        c: IoCompletion,
        cb: &mut impl FnMut(BdevCompletion),
    ) {
        if c.status.is_success() && self.is_in_flight_on(path, &c) {
            self.finish(c.ctx as usize, c.status, cb);
            return;
        }
        if let Some(slot) = self.deferred.get_mut(self.deferred_len) {
            *slot = c;
            self.deferred_len += 1;
        } else {
            // More completions than slots: the queue broke its contract (at least one
            // of them is a duplicate).
            self.stray += 1;
        }
    }

    /// Starts a queue poll with nothing deferred.
    #[inline(always)]
    pub(super) fn clear_deferred(&mut self) {
        self.deferred_len = 0;
    }

    /// Completions deferred by the last queue poll.
    #[inline(always)]
    pub(super) fn deferred_len(&self) -> usize {
        self.deferred_len
    }

    /// Deferred completion `i` (below [`deferred_len`](Self::deferred_len)).
    pub(super) fn deferred(&self, i: usize) -> IoCompletion {
        debug_assert!(i < self.deferred_len);
        self.deferred[i]
    }
}
