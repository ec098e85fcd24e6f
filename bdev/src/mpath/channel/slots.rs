// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The channel's I/O slots: one per I/O the channel can track, sized when the channel
//! is made, so nothing is allocated per I/O.
//!
//! A slot is reserved off the free list when an I/O arrives, taken when the I/O is
//! accepted, and given back when its completion is delivered, all here
//! ([`SlotTable::reserve`], [`SlotTable::take`] and [`SlotTable::finish`]). Only a
//! reservation ([`FreeSlot`]) names a slot to take, so `take` cannot be handed an index
//! that is out of range or a slot in use, and has no case in which it skips the I/O.
//! The slot's index is the context a path queue carries with the request, so a
//! completion finds its slot without a search; a completion whose context names no
//! slot in flight on that path is counted as stray, never delivered.

use crate::io::{BdevCompletion, BdevIo};
use crate::iostat::LatencyCounts;
use nvme_driver::clock;
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

/// A slot reserved off the free list by [`SlotTable::reserve`], for
/// [`SlotTable::take`]. Made nowhere else, neither `Copy` nor `Clone`, and consumed by
/// `take`: a slot to take is always one of the table's (the list holds only its
/// indices, and the table never changes size), free, and named once. One that is not
/// taken is lost to the table until the channel is dropped, so every reservation is
/// taken (the channel's `submit` takes it in every outcome).
#[must_use = "a reserved slot not taken is lost to the table"]
#[derive(Debug)]
pub(super) struct FreeSlot(u32);

impl FreeSlot {
    /// The slot's index: the context its I/O carries on a path queue.
    #[inline(always)]
    pub(super) fn index(&self) -> u32 {
        self.0
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
    /// 0 whenever the slot is not waiting for a path (a free slot's is cleared when
    /// it is given back).
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
    /// Time I/Os from submit to delivery (the bdev's latency histogram is on).
    timing: bool,
    /// Per slot, while timing: when its I/O was submitted (ticks); 0 for one taken
    /// before timing began (see [`SlotTable::set_timing`]). Beside the slots, not in
    /// them: a slot one word larger costs every I/O more than the timing's test.
    submitted_at: Box<[u64]>,
    /// Delivered I/Os by latency (see [`crate::iostat::LatencyHistogram`]).
    pub(super) latency: Box<LatencyCounts>,
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
            timing: false,
            submitted_at: vec![0; depth].into_boxed_slice(),
            latency: Box::default(),
        }
    }

    /// How many slots there are: the I/Os the channel can track at once.
    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// True when a slot is free (the next [`reserve`](Self::reserve) succeeds).
    #[inline]
    pub(super) fn has_free(&self) -> bool {
        self.free_head != NO_SLOT
    }

    /// Reserves a free slot for [`take`](Self::take); `None` when every slot is in use.
    /// Its index can go out with a request before the slot is taken: nothing completes
    /// before the channel's next poll.
    #[inline(always)]
    pub(super) fn reserve(&mut self) -> Option<FreeSlot> {
        // `NO_SLOT` is out of range: one test for "none free" and the bounds.
        let index = self.free_head;
        let slot = self.slots.get(index as usize)?;
        debug_assert_eq!(slot.state, SlotState::FREE, "slot {index} on the free list");
        self.free_head = slot.next_free;
        Some(FreeSlot(index))
    }

    /// Takes reserved slot `slot` for `io`, in `state`.
    #[inline(always)]
    pub(super) fn take(&mut self, slot: FreeSlot, io: BdevIo, state: SlotState) {
        // In range: a reservation's index came off the free list, which holds only
        // indices of this table (see `FreeSlot`), so the slice's bounds check cannot
        // fail.
        let s = &mut self.slots[slot.0 as usize];
        // Free and waiting for no path, by construction: it came off the free list,
        // which `new` and `release` alone fill, with free slots whose `fail_at` is 0.
        // Checked in debug builds as documentation of that; nothing depends on them.
        debug_assert_eq!(s.state, SlotState::FREE, "a reserved slot is free");
        debug_assert_eq!(s.fail_at, 0, "a free slot waits for no path");
        s.state = state;
        s.errors = ErrorHistory::NONE;
        s.io = io;
        if self.timing {
            self.submitted_at[slot.0 as usize] = clock::ticks();
        }
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
        if self.timing {
            self.time(index);
        }
        let ctx = self.release(index);
        self.delivered += 1;
        if !status.is_success() {
            self.failed += 1;
        }
        cb(BdevCompletion { ctx, status });
    }

    /// Counts slot `index`'s latency, if it was timed from its submit.
    #[inline(always)]
    fn time(&mut self, index: usize) {
        let at = self.submitted_at[index];
        if at != 0 {
            self.latency.record(clock::ticks().wrapping_sub(at));
        }
    }

    /// Starts or stops timing I/Os. Slots already taken when timing starts are not
    /// timed: their `submitted_at` is cleared (it may hold a time from an earlier
    /// period of timing), so every recorded latency is from one submit.
    pub(super) fn set_timing(&mut self, on: bool) {
        if on && !self.timing {
            self.submitted_at.fill(0);
        }
        self.timing = on;
    }

    /// Puts slot `index` back on the free list; returns its I/O's context.
    #[inline(always)]
    fn release(&mut self, index: usize) -> u64 {
        let slot = &mut self.slots[index];
        debug_assert_ne!(slot.state, SlotState::FREE, "slot {index} given back twice");
        slot.state = SlotState::FREE;
        // A slot given back while it waited for a path (stopping, or the fast-fail
        // deadline) must not bring that deadline to its next I/O.
        slot.fail_at = 0;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot can be reserved once, and no more: the reservations are distinct,
    /// in range, and each is taken with its I/O.
    #[test]
    fn reservations_are_distinct_free_slots_until_none_is_left() {
        let mut t = SlotTable::new(4);
        let mut seen = Vec::new();
        while let Some(free) = t.reserve() {
            let index = free.index();
            assert!((index as usize) < t.capacity(), "slot {index} in range");
            assert!(!seen.contains(&index), "slot {index} reserved twice");
            seen.push(index);
            t.take(free, BdevIo::flush(index as u64 + 100), SlotState::PENDING);
            assert_eq!(t.get(index).state, SlotState::PENDING);
            assert_eq!(t.get(index).io.ctx, index as u64 + 100);
        }
        assert_eq!(seen.len(), 4);
        assert!(t.reserve().is_none(), "none left");
    }

    /// Two reservations made before either is taken name two slots (the free list
    /// gives each its own), and the I/O delivered is each one's own.
    #[test]
    fn two_reservations_outstanding_take_two_slots() {
        let mut t = SlotTable::new(2);
        let (a, b) = (t.reserve().unwrap(), t.reserve().unwrap());
        let (ia, ib) = (a.index(), b.index());
        assert_ne!(ia, ib);
        t.take(b, BdevIo::flush(2), SlotState::in_flight(0));
        t.take(a, BdevIo::flush(1), SlotState::in_flight(1));
        let mut got = Vec::new();
        t.finish(ia as usize, Status::SUCCESS, &mut |c| got.push(c.ctx));
        t.finish(ib as usize, Status::SUCCESS, &mut |c| got.push(c.ctx));
        assert_eq!(got, [1, 2]);
        assert_eq!(t.delivered, 2);
    }

    /// A slot given back while it waited for a path does not bring its fast-fail
    /// deadline to the next I/O that takes it.
    #[test]
    fn a_slot_given_back_forgets_its_path_deadline() {
        let mut t = SlotTable::new(1);
        let free = t.reserve().unwrap();
        let index = free.index();
        t.take(free, BdevIo::flush(7), SlotState::PENDING);
        t.get_mut(index).fail_at = 12345;
        t.finish(index as usize, Status::HOST_PATHING_ERROR, &mut |_| {});
        assert_eq!(t.failed, 1);
        let free = t.reserve().unwrap();
        assert_eq!(free.index(), index);
        t.take(free, BdevIo::flush(8), SlotState::PENDING);
        assert_eq!(t.get(index).fail_at, 0);
    }
}
