// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The per-core multipath channel: the data path.
//!
//! A channel owns one queue per path (queue pairs are never shared between cores),
//! a table of I/O slots sized at creation (`slots.rs`), and two queues of slots: the
//! pending queue (I/O waiting to be dispatched) and the finished queue (I/O that
//! finished without reaching a path's queue, delivered at the next poll). Nothing here
//! allocates, locks, sleeps or waits.
//!
//! One I/O, in the order the code runs:
//! 1. [`MpathChannel::submit`] takes a slot and dispatches it: the path is the cached
//!    choice or the one `PathChoice::select` makes (`path_choice.rs`), and the
//!    path's queue takes the request with the slot's index as its context.
//!    With no usable path, or no room in the path's queue, the I/O goes on the
//!    pending queue instead; I/O already pending keeps it there, in order.
//! 2. [`MpathChannel::poll`] polls the queues given I/O. A success of an I/O in
//!    flight is delivered from inside the queue's poll (`SlotTable::finish` gives
//!    the slot back); anything else waits for the queue's poll to return and is
//!    handled in `failover.rs`: a path error (including "aborted: SQ deletion" from a
//!    reset and "aborted by host" from a failed controller) dispatches the I/O again
//!    at once, on another path if there is one, and this core avoids the path for a
//!    moment; after an ANA error, until its controller thread, which the error flags
//!    for an ANA log re-read, publishes a new path set; another retryable
//!    error is retried after the command retry delay, up to the retry count; Do Not
//!    Retry completes.
//! 3. The pending queue is run at the next full poll, or right after the errors that
//!    filled it: I/O waiting for a path fails after `fast_io_fail_timeout_ms` (not
//!    before the ANA transition time while a path is transitioning).
//!
//! The channel takes in path-set news (a new snapshot, or a mailbox message) at its
//! next poll, like an RCU reader: every publication moves the QSBR epoch (and every
//! mailbox message is followed by a move), so an ordinary poll costs one load and a
//! compare for it, and a submit acts on the set as of the channel's last poll.

mod failover;
mod path_choice;
mod slots;
mod stats;

pub(crate) use path_choice::LocalPath;
pub use stats::{ChannelStats, PathIoStats};

use super::{ChanMsg, Multipath, PathShared};
use crate::io::{BdevCompletion, BdevIo, PathQueue};
use crate::iostat::{IoStat, OpCounts, PathIoStat, StatBoard};
use crate::qsbr::QsbrReader;
use crate::ring::Ring;
use crate::room::RoomWaiters;
use crate::Error;
use nvme_driver::clock;
use nvme_driver::spec::{sc, sct};
use nvme_driver::{Refused, Status};
use path_choice::{local, PathChoice, PathTable, LOCAL_PATHS};
use slots::{SlotState, SlotTable};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How long a path that returned a path error other than an ANA error is avoided by
/// this core, unless a new path set arrives first.
const AVOID_US: u64 = 500;
/// The least time a path that returned an ANA error is avoided by this core when no
/// new path set arrives (see [`MpathChannel::ana_avoid_ticks`]).
const ANA_AVOID_MIN_MS: u64 = 1000;
/// Completions taken from one path queue per poll (any more wait for the next poll).
pub(super) const POLL_BATCH: usize = 256;
/// A poll looks at every path (not only those given I/O) at least this often, so a
/// queue with nothing in flight acknowledges a reset of its controller even when
/// nothing moved the QSBR epoch (the block layer moves it on every reset).
const FULL_POLL_EVERY: u32 = 1024;
/// Status of an I/O that could not be dispatched (refused by every path's queue).
const INVALID_FIELD_DNR: Status = Status::new(sct::GENERIC, sc::INVALID_FIELD, true);

/// What became of one attempt to send an I/O to a path.
enum Dispatch {
    /// In flight on this local path.
    Sent(u8),
    /// No usable path right now.
    NoPath,
    /// A path's queue had no room: try again soon, this is not a reason to fail.
    NoRoom,
    /// The I/O completes with this status.
    Fail(Status),
}

/// A per-core channel to a multipath bdev. `Send`, so it can be made off-core and
/// moved to its reactor; used by one thread at a time (`&mut self`).
pub struct MpathChannel<Q: PathQueue> {
    /// Polls until the next full one (see [`poll`](Self::poll)); 1 when there is
    /// housekeeping for the next poll.
    countdown: u32,
    /// Local paths given I/O since the last full poll found them idle (bit `i` for
    /// local path `i`): the ones an ordinary poll and a flush look at.
    busy: u64,
    /// Stop mode (see [`shutdown`](Self::shutdown)).
    stopping: bool,
    slots: SlotTable,
    choice: PathChoice,
    /// Local paths by index; `paths_end` is one past the last one in use.
    paths: Box<PathTable<Q>>,
    paths_end: usize,
    /// Slots waiting to be dispatched, oldest first: for a usable path, for room in a
    /// path's queue, or for their retry time. Never longer than the slot table (its
    /// capacity is reserved at creation).
    pending: VecDeque<u32>,
    /// Slots finished without reaching a queue, delivered at the next poll.
    finished: VecDeque<u32>,
    /// While some path is in ANA transition, I/O without a usable path is not failed
    /// before this time (ticks), from the path set last seen.
    hold_until: u64,
    /// Paths marked removing and not yet let go.
    removing: usize,
    fast_fail_ticks: u64,
    avoid_ticks: u64,
    /// How long a path that returned an ANA error (Asymmetric Access Inaccessible,
    /// Persistent Loss or Transition) is avoided when no new path set comes: a
    /// safety deadline, not the expected end. Such a status says the path's ANA state
    /// changed and this core does not know the new one; as Linux keeps the path
    /// disabled until the ANA log is read (`NVME_NS_ANA_PENDING`), the channel avoids
    /// it until the next path set, which its controller thread publishes after
    /// re-reading the ANA log (even when nothing changed). The deadline only matters
    /// if that publication never comes (a controller thread that cannot read the
    /// log); it is the ANA Transition Time (ANATT, Identify Controller byte 342, in
    /// seconds: the longest the controller takes to change ANA state, or reports the
    /// change state), at least [`ANA_AVOID_MIN_MS`].
    ana_avoid_ticks: u64,
    retry_unit_ticks: u64,
    stats: ChannelStats,
    /// Operations and blocks accepted, by kind (see [`crate::iostat`]).
    ops: OpCounts,
    /// Where this channel publishes its I/O statistics.
    board: Arc<StatBoard>,
    mp: Arc<Multipath<Q>>,
    reader: QsbrReader,
    mailbox: Arc<Ring<ChanMsg<Q>>>,
    closed: Arc<AtomicBool>,
    /// Who waits for room (see [`Channel::notify_when_room`](crate::Channel::notify_when_room)).
    room: RoomWaiters,
}

impl<Q: PathQueue> fmt::Debug for MpathChannel<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpathChannel")
            .field("bdev", &self.mp.info().name)
            .field("outstanding", &self.outstanding())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<Q: PathQueue> MpathChannel<Q> {
    pub(super) fn new(
        mp: Arc<Multipath<Q>>,
        reader: QsbrReader,
        mailbox: Arc<Ring<ChanMsg<Q>>>,
        closed: Arc<AtomicBool>,
        initial: Vec<(Arc<PathShared>, Q)>,
    ) -> Self {
        let opts = *mp.options();
        let depth = opts.channel_depth;
        let paths: Box<[Option<Box<LocalPath<Q>>>]> = (0..256).map(|_| None).collect();
        let Ok(paths) = paths.try_into() else {
            unreachable!("256 entries were made")
        };
        let mut ch = MpathChannel {
            countdown: 1,
            busy: 0,
            stopping: false,
            slots: SlotTable::new(depth),
            choice: PathChoice::new(opts.policy),
            paths,
            paths_end: 0,
            pending: VecDeque::with_capacity(depth),
            finished: VecDeque::with_capacity(depth),
            hold_until: 0,
            removing: 0,
            fast_fail_ticks: clock::ms_to_ticks(opts.fast_io_fail_timeout_ms),
            avoid_ticks: clock::ms_to_ticks(1).saturating_mul(AVOID_US) / 1000,
            ana_avoid_ticks: mp.anatt_ticks.max(clock::ms_to_ticks(ANA_AVOID_MIN_MS)),
            retry_unit_ticks: clock::ms_to_ticks(opts.retry_delay_unit_ms),
            stats: ChannelStats::default(),
            ops: OpCounts::default(),
            board: mp.iostat.open(LOCAL_PATHS),
            mp,
            reader,
            mailbox,
            closed,
            room: RoomWaiters::new(),
        };
        ch.slots
            .set_timing(ch.mp.latency_histogram.load(Ordering::Relaxed));
        for (shared, q) in initial {
            ch.add_local(LocalPath::boxed(shared, q));
        }
        ch
    }

    /// The bdev's geometry and identifiers.
    pub fn bdev(&self) -> &Arc<Multipath<Q>> {
        &self.mp
    }

    /// I/Os accepted and not yet delivered to a poll callback.
    pub fn outstanding(&self) -> usize {
        debug_assert!(self.stats.submitted >= self.slots.delivered);
        (self.stats.submitted - self.slots.delivered) as usize
    }

    /// Counters.
    pub fn stats(&self) -> ChannelStats {
        ChannelStats {
            completed: self.slots.delivered,
            failed: self.slots.failed,
            stray_completions: self.slots.stray,
            ..self.stats
        }
    }

    /// Per-path counters of this channel.
    pub fn path_stats(&self) -> Vec<PathIoStats> {
        let mut out = Vec::new();
        self.path_stats_into(&mut out);
        out
    }

    /// Per-path counters into `out` (cleared first): no allocation while `out` has the
    /// capacity, so a poller can sample them.
    pub fn path_stats_into(&self, out: &mut Vec<PathIoStats>) {
        out.clear();
        out.extend(self.paths.iter().flatten().map(|p| PathIoStats {
            inflight: p.queue.outstanding() as u64,
            submitted: p.queue.submitted(),
            pended: p.queue.pended(),
            timeouts: p.queue.timeouts(),
            reset_aborts: p.queue.reset_aborts(),
            resetting: p.queue.is_resetting(),
            failed: p.queue.is_failed(),
            ..p.stats
        }));
    }

    /// True when a submit now would not be refused as [`Error::Busy`]: a slot is free
    /// (or the channel is stopping, and a submit is refused as stopped instead).
    #[inline]
    pub fn has_room(&self) -> bool {
        self.stopping || self.slots.has_free()
    }

    pub(crate) fn room_waiters(&self) -> &RoomWaiters {
        &self.room
    }

    pub(crate) fn room_waiters_mut(&mut self) -> &mut RoomWaiters {
        &mut self.room
    }

    /// Stop mode: I/O waiting for a path or a retry fails at the next poll instead of
    /// waiting, and errors are no longer retried; I/O in flight completes as usual.
    /// Poll until [`outstanding`](Self::outstanding) is 0 to drain.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        self.schedule_full_poll();
    }

    /// Submits an I/O. It is on a path, or waiting on this core's pending queue; or it
    /// is handed back at once: [`Error::Stopped`] after [`shutdown`](Self::shutdown),
    /// [`Error::Busy`] when the channel tracks as many I/Os as it can,
    /// [`Error::InvalidIo`] for a request no path could take. Never waits.
    #[inline]
    pub fn submit(&mut self, io: BdevIo) -> std::result::Result<(), (Error, BdevIo)> {
        // A queue that checks requests itself (the NVMe queue pair checks range and
        // buffer against the same namespace geometry) saves the layer its own check:
        // what it refuses is checked again in `refused_by_queue`.
        if !Q::VALIDATES {
            if let Err(e) = io.validate(self.mp.num_blocks(), self.mp.block_shift) {
                return Err((e, io));
            }
        }
        // The cold paths below never take `io` itself: a function that is not inlined
        // would need its address, and the submitter's I/O would then be built in memory
        // on every submit.
        if self.stopping {
            return Err((self.refusal(), io));
        }
        // Every outcome below takes the reserved slot.
        let Some(free) = self.slots.reserve() else {
            return Err((self.refusal(), io));
        };
        let slot = free.index();
        // Behind the I/O that is already waiting, in order.
        let outcome = if self.pending.is_empty() {
            self.dispatch(slot, &io)
        } else {
            Dispatch::NoRoom
        };
        match outcome {
            Dispatch::Sent(path) => self.slots.take(free, io, SlotState::in_flight(path)),
            Dispatch::NoRoom => {
                self.slots.take(free, io, SlotState::PENDING);
                self.wait(slot, 0);
            }
            Dispatch::NoPath => {
                self.slots.take(free, io, SlotState::PENDING);
                self.wait_for_path(slot);
            }
            Dispatch::Fail(status) => {
                self.slots.take(free, io, SlotState::FINISHED);
                return self.refused_by_queue(slot, status);
            }
        }
        self.stats.submitted += 1;
        self.ops.count(io.op, io.nlb);
        Ok(())
    }

    /// Why a submit is refused before it reaches a path: the channel is stopping, or
    /// every slot is in use.
    #[cold]
    #[inline(never)]
    fn refusal(&self) -> Error {
        if self.stopping {
            Error::Stopped(format!("{}: channel is shutting down", self.mp.info().name))
        } else {
            Error::Busy(self.slots.capacity())
        }
    }

    /// A path's queue refused the I/O of slot `slot`, just taken, as invalid: one that
    /// does not fit the bdev is handed back and its slot given back; one the bdev takes
    /// but the queue does not completes with `status` at the next poll.
    #[cold]
    #[inline(never)]
    fn refused_by_queue(
        &mut self,
        slot: u32,
        status: Status,
    ) -> std::result::Result<(), (Error, BdevIo)> {
        let io = self.slots.get(slot).io;
        if let Err(e) = io.validate(self.mp.num_blocks(), self.mp.block_shift) {
            self.slots.untake(slot);
            return Err((e, io));
        }
        self.finish_later(slot, status);
        self.stats.submitted += 1;
        self.ops.count(io.op, io.nlb);
        Ok(())
    }

    /// Sends `io`, the I/O of slot `slot`, to a path: the cached choice, else the one
    /// `select` makes. A queue that refuses because its controller failed has its path
    /// avoided, and the next choice is another path: at most one attempt per path.
    /// The caller marks the slot in flight on the path it was sent to.
    #[inline(always)]
    fn dispatch(&mut self, slot: u32, io: &BdevIo) -> Dispatch {
        loop {
            // A cached path whose controller began a reset since it was chosen: choose
            // again (another path takes the I/O meanwhile, if there is one).
            let path = match self.choice.cached() {
                Some(path)
                    if !local(&mut self.paths, path).is_some_and(|p| p.queue.is_resetting()) =>
                {
                    path
                }
                _ => match self.select() {
                    Some(path) => path,
                    None => return Dispatch::NoPath,
                },
            };
            let Some(p) = local(&mut self.paths, path) else {
                return Dispatch::NoPath;
            };
            match p
                .queue
                .submit(&io.to_request(p.nsid, slot as u64 | p.queue.ctx_tag()))
            {
                Ok(()) => {
                    self.busy |= p.busy_bit;
                    return Dispatch::Sent(path);
                }
                Err(Refused::Busy) => return Dispatch::NoRoom,
                Err(Refused::Failed) => {
                    // Bounded: each refusal takes a path of the view out for good.
                    if !self.choice.avoid_for_good(&mut self.paths, path) {
                        return Dispatch::NoPath;
                    }
                }
                Err(Refused::Invalid) => return Dispatch::Fail(INVALID_FIELD_DNR),
            }
        }
    }

    /// The path choice without a cached one: the view brought up to date with the
    /// current path set, then one selection.
    #[inline(never)]
    fn select(&mut self) -> Option<u8> {
        self.refresh_view();
        self.choice.select(&mut self.paths)
    }

    /// Rebuilds this core's view of the path set when its generation changed.
    fn refresh_view(&mut self) {
        let set = self.mp.cell.load(&self.reader);
        if self.choice.is_current(set.generation) {
            return;
        }
        self.hold_until = set.hold_until;
        self.stats.path_set_changes += 1;
        self.choice.rebuild(set, &mut self.paths);
    }

    /// Slot `slot` goes on the pending queue, to be dispatched again from `retry_at`
    /// (ticks; 0: at the next run of the queue).
    fn wait(&mut self, slot: u32, retry_at: u64) {
        self.schedule_full_poll();
        let s = self.slots.get_mut(slot);
        debug_assert_ne!(s.state, SlotState::FREE, "slot {slot} waits without an I/O");
        s.state = SlotState::PENDING;
        s.retry_at = retry_at;
        self.pending.push_back(slot);
        debug_assert!(self.pending.len() <= self.slots.capacity());
        self.stats.queued += 1;
        self.stats.queued_high_water = self.stats.queued_high_water.max(self.pending.len() as u64);
    }

    /// Slot `slot` waits for a usable path, for `fast_io_fail_timeout_ms` at most.
    #[cold]
    fn wait_for_path(&mut self, slot: u32) {
        self.slots.get_mut(slot).fail_at = clock::ticks().saturating_add(self.fast_fail_ticks);
        self.wait(slot, 0);
    }

    /// Slot `slot` completes with `status` at the next poll.
    fn finish_later(&mut self, slot: u32, status: Status) {
        let s = self.slots.get_mut(slot);
        debug_assert_ne!(
            s.state,
            SlotState::FREE,
            "slot {slot} finishes without an I/O"
        );
        s.state = SlotState::FINISHED;
        s.errors.last_status = status;
        self.finished.push_back(slot);
        self.schedule_full_poll();
    }

    /// Makes the next poll a full one.
    #[inline]
    fn schedule_full_poll(&mut self) {
        self.countdown = 1;
    }

    /// Polls the path queues, delivers finished I/O to `cb` (each exactly once),
    /// re-dispatches what waits, and announces a quiescent state when there is one to
    /// announce (this channel holds no path-set reference between calls). Returns the
    /// number delivered.
    ///
    /// An ordinary poll polls only the queues given I/O (`busy`) and delivers their
    /// successful completions. A full poll also reads the mailbox, rebuilds the view
    /// of a new path set, delivers I/O finished without a queue, polls every queue
    /// that needs it (a reset waits for each queue's owner to acknowledge it), runs the
    /// pending queue, lets go of removed paths and works out `busy` again. It happens
    /// when the QSBR epoch moved (something was published, or a message sent), when
    /// something asked for it (`schedule_full_poll`), and every `FULL_POLL_EVERY` (1024)
    /// polls.
    #[inline]
    pub fn poll(&mut self, cb: &mut impl FnMut(BdevCompletion)) -> usize {
        let before = self.slots.delivered;
        self.countdown -= 1;
        if self.countdown == 0 || self.reader.changed() {
            self.poll_full(cb);
        } else {
            let mut busy = self.busy;
            while busy != 0 {
                let path = busy.trailing_zeros() as u8;
                busy &= busy - 1;
                self.poll_path(path, cb);
            }
        }
        (self.slots.delivered - before) as usize
    }

    /// Polls local path `path`'s queue once (up to [`POLL_BATCH`] completions).
    /// Successes of I/O in flight on the path (the common case) are delivered from the
    /// queue's callback; the rest are handled once the queue's poll has returned.
    #[inline(always)]
    fn poll_path(&mut self, path: u8, cb: &mut impl FnMut(BdevCompletion)) {
        let Some(p) = local(&mut self.paths, path) else {
            return;
        };
        let slots = &mut self.slots;
        slots.clear_deferred();
        // A `move` closure over these two references captures two pointers; a plain
        // one would capture every field it touches, each set up at every poll.
        let user = &mut *cb;
        p.queue.poll(POLL_BATCH, &mut move |c| {
            slots.on_queue_completion(path, c, user)
        });
        if self.slots.deferred_len() != 0 {
            self.handle_deferred(path, cb);
        }
    }

    /// The full poll (see [`poll`](Self::poll)).
    #[cold]
    #[inline(never)]
    fn poll_full(&mut self, cb: &mut impl FnMut(BdevCompletion)) {
        self.reader.quiescent();
        if !self.mailbox.is_empty() {
            self.drain_mailbox();
        }
        while let Some(slot) = self.finished.pop_front() {
            let s = self.slots.get(slot);
            debug_assert_eq!(s.state, SlotState::FINISHED);
            let status = s.errors.last_status;
            self.slots.finish(slot as usize, status, cb);
        }
        self.refresh_view();
        for i in 0..self.paths_end {
            let needs = self.paths[i].as_mut().is_some_and(|p| {
                p.queue.maintain();
                p.queue.needs_poll()
            });
            if needs {
                self.poll_path(i as u8, cb);
            }
        }
        if !self.pending.is_empty() {
            self.run_pending(clock::ticks(), cb);
        }
        self.flush();
        if self.removing > 0 {
            self.retire_removed();
        }
        let mut busy = 0;
        for p in self.paths[..self.paths_end].iter().flatten() {
            if p.queue.outstanding() > 0 {
                busy |= p.busy_bit;
            }
        }
        self.busy = busy;
        let more = !self.pending.is_empty() || self.removing > 0 || !self.finished.is_empty();
        self.countdown = if more { 1 } else { FULL_POLL_EVERY };
        self.slots
            .set_timing(self.mp.latency_histogram.load(Ordering::Relaxed));
        self.publish_iostat();
    }

    /// This channel's I/O statistics, exact (its own core's view; other threads read
    /// the bdev's, [`Multipath::iostat`]).
    pub fn iostat(&self) -> IoStat {
        let s = self.stats();
        self.ops.to_iostat(
            self.mp.block_shift,
            s.completed,
            s.failed,
            s.failovers,
            s.retries,
        )
    }

    /// Local path `p`'s share, as the bdev's statistics count it.
    fn path_iostat(p: &LocalPath<Q>) -> PathIoStat {
        PathIoStat {
            id: p.shared.id,
            submitted: p.queue.submitted(),
            path_errors: p.stats.path_errors,
            ana_errors: p.stats.ana_errors,
            timeouts: p.queue.timeouts(),
            reset_aborts: p.queue.reset_aborts(),
            ..PathIoStat::default()
        }
    }

    /// Publishes the counters for other threads (at a full poll, and when closing).
    fn publish_iostat(&self) {
        self.board.publish(&self.iostat());
        self.board.publish_latency(&self.slots.latency);
        for (i, p) in self.paths[..self.paths_end].iter().enumerate() {
            self.board
                .publish_path(i, p.as_deref().map(Self::path_iostat).as_ref());
        }
    }

    /// Rings the doorbells of the path queues with I/O queued since the last flush
    /// (poll does it too): submit, flush, poll is the shortest round trip.
    #[inline]
    pub fn flush(&mut self) {
        // Every queue given I/O since the last full poll: a queue with nothing new to
        // announce returns at once.
        let mut busy = self.busy;
        while busy != 0 {
            let path = busy.trailing_zeros() as u8;
            busy &= busy - 1;
            if let Some(p) = local(&mut self.paths, path) {
                p.queue.flush();
            }
        }
    }

    /// Takes in what the path-set writers sent: new paths' queues, and removals.
    fn drain_mailbox(&mut self) {
        while let Some(m) = self.mailbox.pop() {
            match m {
                ChanMsg::Add(lp) => self.add_local(lp),
                ChanMsg::Remove(id) => {
                    for p in self.paths.iter_mut().flatten() {
                        if p.shared.id == id && !p.removing {
                            p.removing = true;
                            self.removing += 1;
                        }
                    }
                    self.choice.invalidate();
                    self.schedule_full_poll();
                }
            }
        }
    }

    /// Takes a new path into the first free entry of the local-path table.
    fn add_local(&mut self, mut lp: Box<LocalPath<Q>>) {
        let Some(i) = self.paths[..LOCAL_PATHS].iter().position(Option::is_none) else {
            // Only reachable with more than LOCAL_PATHS - MAX_PATHS removed paths whose
            // I/O never drains; this channel then does without the new path (counted).
            self.stats.paths_refused += 1;
            self.mp.bury(lp.queue);
            return;
        };
        lp.busy_bit = 1 << i;
        self.paths[i] = Some(lp);
        self.paths_end = self.paths_end.max(i + 1);
        self.choice.invalidate();
        self.schedule_full_poll();
    }

    /// Lets go of removed paths with nothing left in flight. (The view already leaves
    /// them out, so it stays as it is.)
    fn retire_removed(&mut self) {
        for (i, entry) in self.paths[..self.paths_end].iter_mut().enumerate() {
            let drained = entry
                .as_ref()
                .is_some_and(|p| p.removing && p.queue.outstanding() == 0);
            if drained {
                if let Some(p) = entry.take() {
                    debug_assert!(self.removing > 0, "a removing path was counted");
                    self.removing -= 1;
                    // Its entry may go to the next path: its counts go to the totals.
                    self.mp
                        .iostat
                        .retire_path(&self.board, i, &Self::path_iostat(&p));
                    self.mp.bury(p.queue);
                }
            }
        }
        while self.paths_end > 0 && self.paths[self.paths_end - 1].is_none() {
            self.paths_end -= 1;
        }
    }
}

impl<Q: PathQueue> Drop for MpathChannel<Q> {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.publish_iostat();
        self.mp.iostat.close(&self.board);
        for p in self.paths.iter_mut().filter_map(Option::take) {
            self.mp.bury(p.queue);
        }
        while let Some(m) = self.mailbox.pop() {
            if let ChanMsg::Add(lp) = m {
                self.mp.bury(lp.queue);
            }
        }
    }
}
