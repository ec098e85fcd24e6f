//! The per-core multipath channel: the data path.
//!
//! A channel owns one queue per path (queue pairs are never shared between cores),
//! a table of I/O slots sized at creation, and the core's retry ring. Submitting
//! picks a path from this core's view of the path set and hands the request to that
//! path's queue. The view is rebuilt from the current snapshot when the QSBR epoch
//! has moved, which every publication does (and every mailbox message is followed
//! by): a poll compares the epoch with the one it last announced, so an ordinary
//! poll costs one load and a compare for it, and a submit acts on the set as of the
//! channel's last poll, as an RCU reader does. Nothing here allocates, locks, sleeps
//! or waits:
//! - no usable path, or the path's queue refuses for lack of room: the I/O goes on the
//!   retry ring and is dispatched again at the next poll;
//! - a path error (including "aborted: SQ deletion" from a reset and "aborted by
//!   host" from a failed controller): the I/O is dispatched again at once, on another
//!   path if there is one, and the path is avoided on this core for a moment; an ANA
//!   error also flags the path for an ANA log re-read;
//! - another retryable error: retried after the command retry delay, up to the retry
//!   count; Do Not Retry completes.
//!
//! I/O waiting for a path fails after `fast_io_fail_timeout_ms` (not before the ANA
//! transition time when a path is transitioning).

use super::{ChanMsg, Multipath, PathSet, PathShared, Policy, MAX_PATHS};
use crate::io::{BdevCompletion, BdevIo, PathQueue};
use crate::qsbr::QsbrReader;
use crate::ring::Ring;
use crate::Error;
use nvme_driver::clock;
use nvme_driver::spec::{sc, sct};
use nvme_driver::{DmaSlice, IoCompletion, IoOp, Refused, Status};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How long a path that returned a path error is avoided by this core, unless a new
/// path set arrives first.
const AVOID_US: u64 = 500;
/// The end of the free-slot list.
const NO_SLOT: u32 = u32::MAX;
/// Completions taken from one path queue per poll (any more wait for the next poll).
pub(super) const POLL_BATCH: usize = 256;
/// Local paths one channel can hold at once: the paths of the set plus those being
/// removed that still have I/O in flight. At most 64 (a bit each in the `busy`
/// mask); the table they live in has 256 entries so a `u8` index needs no check.
const LOCAL_PATHS: usize = 64;
/// A poll looks at every path (not only those given I/O) at least this often, so a
/// queue with nothing in flight acknowledges a reset of its controller even when
/// nothing moved the QSBR epoch (the block layer moves it on every reset).
const FULL_POLL_EVERY: u32 = 1024;
/// Status of an I/O that could not be dispatched (refused by every path's queue).
const INVALID_FIELD_DNR: Status = Status::new(sct::GENERIC, sc::INVALID_FIELD, true);

/// Per-path counters of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathIoStats {
    /// Path instance identifier.
    pub id: u64,
    /// I/Os dispatched on the path (its queue's count of requests accepted).
    pub submitted: u64,
    /// I/Os in flight on it from this core.
    pub inflight: u64,
    /// Path errors it returned.
    pub path_errors: u64,
}

/// Counters of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// I/Os accepted.
    pub submitted: u64,
    /// I/Os completed (successfully or not).
    pub completed: u64,
    /// Completed with an error status.
    pub failed: u64,
    /// Re-dispatches after a path error.
    pub failovers: u64,
    /// Retries after other retryable errors.
    pub retries: u64,
    /// Times an I/O went onto the retry ring.
    pub queued: u64,
    /// Most I/Os on the retry ring at once.
    pub queued_high_water: u64,
    /// I/Os failed for lack of a usable path (fast I/O fail).
    pub fast_failed: u64,
    /// Path-set generations seen.
    pub path_set_changes: u64,
    /// Paths this channel could not take because its table of local paths was full
    /// (paths being removed whose I/O never drains hold their entries).
    pub paths_refused: u64,
    /// Completions a path queue delivered that match no I/O in flight on that path
    /// (a second completion of one I/O, or a context that is not a slot): dropped, so
    /// nothing is delivered twice, and counted, so a test sees them in any build. A
    /// correct queue never delivers one.
    pub stray_completions: u64,
}

impl ChannelStats {
    /// The counts since `before` (an earlier snapshot of the same channel); the
    /// high-water mark stays the current one.
    pub fn since(&self, before: &ChannelStats) -> ChannelStats {
        ChannelStats {
            submitted: self.submitted - before.submitted,
            completed: self.completed - before.completed,
            failed: self.failed - before.failed,
            failovers: self.failovers - before.failovers,
            retries: self.retries - before.retries,
            queued: self.queued - before.queued,
            queued_high_water: self.queued_high_water,
            fast_failed: self.fast_failed - before.fast_failed,
            path_set_changes: self.path_set_changes - before.path_set_changes,
            paths_refused: self.paths_refused - before.paths_refused,
            stray_completions: self.stray_completions - before.stray_completions,
        }
    }
}

/// A slot's state: in flight on local path `l` (`0..=255`), or one of the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotState(u16);

impl SlotState {
    const FREE: SlotState = SlotState(0x100);
    const QUEUED: SlotState = SlotState(0x101);
    const DONE: SlotState = SlotState(0x102);
    #[inline]
    fn inflight(l: u8) -> SlotState {
        SlotState(l as u16)
    }
}

/// The small per-I/O fields in one word, so the fast paths set and test them at
/// once: bits 0..16 the state, 16..32 the last error status (what a fast-failed I/O
/// completes with), 32..64 the retries so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotMeta(u64);

impl SlotMeta {
    /// In `state`, no error seen, no retries.
    #[inline(always)]
    fn new(state: SlotState) -> SlotMeta {
        SlotMeta(state.0 as u64)
    }
    fn state(self) -> SlotState {
        SlotState(self.0 as u16)
    }
    fn set_state(&mut self, st: SlotState) {
        self.0 = (self.0 & !0xffff) | st.0 as u64;
    }
    fn status(self) -> Status {
        Status((self.0 >> 16) as u16)
    }
    fn set_status(&mut self, st: Status) {
        self.0 = (self.0 & !0xffff_0000) | (st.0 as u64) << 16;
    }
    fn retries(self) -> u32 {
        (self.0 >> 32) as u32
    }
    fn set_retries(&mut self, n: u32) {
        self.0 = (self.0 & 0xffff_ffff) | (n as u64) << 32;
    }
}

#[derive(Clone, Copy, Debug)]
struct IoSlot {
    io: BdevIo,
    meta: SlotMeta,
    /// Queued for a retry: the earliest time to dispatch it (ticks; set whenever a
    /// slot is queued). Free: the index of the next free slot ([`NO_SLOT`] ends the
    /// free list), so freeing and taking a slot touch only the slot and the head.
    link: u64,
    /// Deadline for finding a usable path (0: not waiting for one). 0 whenever the
    /// slot is free or in flight.
    fail_at: u64,
}

/// A path as one channel holds it: its queue and this core's bookkeeping. Boxed by
/// whoever hands the path to the channel (the channel's maker or the path's adder),
/// so the channel's core never allocates for it.
pub(crate) struct LocalPath<Q> {
    shared: Arc<PathShared>,
    /// `shared.nsid`, kept at hand for the submit path.
    nsid: u32,
    queue: Q,
    /// This path's bit in the channel's `busy` mask.
    bit: u64,
    avoid_until: u64,
    removing: bool,
    stats: PathIoStats,
}

impl<Q> LocalPath<Q> {
    /// Path `shared` over `queue`, boxed (off the channel's core).
    pub(crate) fn boxed(shared: Arc<PathShared>, queue: Q) -> Box<Self> {
        Box::new(LocalPath {
            stats: PathIoStats {
                id: shared.id,
                ..PathIoStats::default()
            },
            nsid: shared.nsid,
            shared,
            queue,
            bit: 0,
            avoid_until: 0,
            removing: false,
        })
    }
}

/// The local-path table: indexed by a `u8`, so lookups need no bounds check; only
/// the first [`LOCAL_PATHS`] entries are used.
type PathTable<Q> = [Option<Box<LocalPath<Q>>>; 256];

#[derive(Clone, Copy, Debug, Default)]
struct ViewEntry {
    local: u8,
    optimized: bool,
}

enum Dispatch {
    Sent,
    /// No usable path right now.
    NoPath,
    /// A path's queue had no room: try again soon, this is not a reason to fail.
    NoRoom,
    Fail(Status),
}

/// The I/O slots and what a path queue's completion callback needs, in one place so
/// the callback captures one reference (a closure capturing each field separately
/// is materialized on the stack at every poll).
struct SlotTable {
    slots: Box<[IoSlot]>,
    /// The first free slot ([`NO_SLOT`]: none); each free slot's `link` names the next.
    free_head: u32,
    /// I/Os delivered so far (those accepted are `stats.submitted`; the difference
    /// is the slots in use).
    delivered: u64,
    /// Completions from one path queue poll that are not plain successes of I/O in
    /// flight on it, handled after the queue's poll returns (made once). As long as
    /// the slot table: a queue may deliver more than it was asked for in one poll (a
    /// reset or failure completes everything it holds at once), but never more than
    /// one completion per slot.
    errs: Box<[IoCompletion]>,
    nerr: usize,
    /// Completions that matched no slot in flight on their path (see
    /// [`ChannelStats::stray_completions`]); counted only off the fast path.
    stray: u64,
}

/// A per-core channel to a multipath bdev. `Send`, so it can be made off-core and
/// moved to its reactor; used by one thread at a time (`&mut self`).
pub struct MpathChannel<Q: PathQueue> {
    /// Submit may take the fast path (not stopping, nothing on the retry ring, the
    /// view built and no path avoided, so `tier_len > 0`): the policy to pick with
    /// there, or `None`.
    fast: Option<Policy>,
    /// Polls until the next full one (see [`poll`](Self::poll)); 1 when there is
    /// housekeeping for the next poll.
    countdown: u32,
    /// Local paths given I/O since the last full poll found them idle (bit `l` for
    /// local path `l`): the ones an ordinary poll and a flush look at.
    busy: u64,
    mp: Arc<Multipath<Q>>,
    reader: QsbrReader,
    mailbox: Arc<Ring<ChanMsg<Q>>>,
    closed: Arc<AtomicBool>,
    /// Local paths by index; `paths_end` is one past the last one in use.
    paths: Box<PathTable<Q>>,
    paths_end: usize,
    tab: SlotTable,
    retry: VecDeque<u32>,
    done: VecDeque<u32>,
    view: [ViewEntry; MAX_PATHS],
    view_len: usize,
    view_gen: u64,
    /// Length of the best ANA tier at the head of `view` (the paths the fast path
    /// picks from); 0 while some path is avoided, which sends submits to the full
    /// selection.
    tier_len: usize,
    /// Latest `avoid_until` set since avoidance was last cleared (0: none).
    avoid_max: u64,
    policy: Policy,
    hold_until: u64,
    rr_next: usize,
    stopping: bool,
    fast_fail_ticks: u64,
    avoid_ticks: u64,
    retry_unit_ticks: u64,
    stats: ChannelStats,
    /// Paths marked removing and not yet retired.
    removing: usize,
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
        let depth = mp.options().channel_depth;
        let empty = IoSlot {
            io: BdevIo::flush(0),
            meta: SlotMeta::new(SlotState::FREE),
            link: 0,
            fail_at: 0,
        };
        let mut slots = vec![empty; depth].into_boxed_slice();
        for (i, slot) in slots.iter_mut().enumerate() {
            slot.link = if i + 1 < depth {
                i as u64 + 1
            } else {
                NO_SLOT as u64
            };
        }
        let opts = *mp.options();
        let paths: Box<[Option<Box<LocalPath<Q>>>]> = (0..256).map(|_| None).collect();
        let Ok(paths) = paths.try_into() else {
            unreachable!("256 entries were made")
        };
        let mut ch = MpathChannel {
            fast: None,
            countdown: 1,
            busy: 0,
            reader,
            mailbox,
            closed,
            paths,
            paths_end: 0,
            tab: SlotTable {
                slots,
                free_head: if depth > 0 { 0 } else { NO_SLOT },
                delivered: 0,
                errs: vec![
                    IoCompletion {
                        ctx: 0,
                        status: Status::SUCCESS,
                    };
                    depth
                ]
                .into_boxed_slice(),
                nerr: 0,
                stray: 0,
            },
            retry: VecDeque::with_capacity(depth),
            done: VecDeque::with_capacity(depth),
            view: [ViewEntry::default(); MAX_PATHS],
            view_len: 0,
            view_gen: u64::MAX,
            tier_len: 0,
            avoid_max: 0,
            policy: opts.policy,
            hold_until: 0,
            rr_next: 0,
            stopping: false,
            fast_fail_ticks: clock::ms_to_ticks(opts.fast_io_fail_timeout_ms),
            avoid_ticks: clock::ms_to_ticks(1).saturating_mul(AVOID_US) / 1000,
            retry_unit_ticks: clock::ms_to_ticks(opts.retry_delay_unit_ms),
            stats: ChannelStats::default(),
            removing: 0,
            mp,
        };
        for (shared, q) in initial {
            ch.add_local(LocalPath::boxed(shared, q));
        }
        ch
    }

    fn add_local(&mut self, mut lp: Box<LocalPath<Q>>) {
        // The first free local index.
        let Some(i) = self.paths[..LOCAL_PATHS].iter().position(Option::is_none) else {
            // Only reachable with more than LOCAL_PATHS - MAX_PATHS removed paths whose
            // I/O never drains; this channel then does without the new path (counted).
            self.stats.paths_refused += 1;
            self.mp.bury(lp.queue);
            return;
        };
        lp.bit = 1 << i;
        self.paths[i] = Some(lp);
        self.paths_end = self.paths_end.max(i + 1);
        self.view_gen = u64::MAX;
        self.housekeeping();
    }

    /// Sends the next submit down the full path and makes the next poll a full one.
    #[inline]
    fn housekeeping(&mut self) {
        self.fast = None;
        self.countdown = 1;
    }

    /// Whether submits may take the fast path (see `fast`).
    fn update_fast(&mut self) {
        let ok = !self.stopping
            && self.retry.is_empty()
            && self.tier_len > 0
            && self.view_gen != u64::MAX;
        self.fast = ok.then_some(self.policy);
    }

    /// The bdev's geometry and identifiers.
    pub fn bdev(&self) -> &Arc<Multipath<Q>> {
        &self.mp
    }

    /// I/Os accepted and not yet delivered to a poll callback.
    pub fn outstanding(&self) -> usize {
        (self.stats.submitted - self.tab.delivered) as usize
    }

    /// Counters.
    pub fn stats(&self) -> ChannelStats {
        ChannelStats {
            completed: self.tab.delivered,
            stray_completions: self.tab.stray,
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
            ..p.stats
        }));
    }

    /// Stop mode: I/O waiting for a path or a retry fails at the next poll instead of
    /// waiting, and errors are no longer retried; I/O in flight completes as usual.
    /// Poll until [`outstanding`](Self::outstanding) is 0 to drain.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        self.housekeeping();
    }

    /// Rebuilds this core's view of the path set when its generation changed.
    #[inline]
    fn refresh_view(&mut self) {
        let set: &PathSet = self.mp.cell.load(&self.reader);
        if set.generation == self.view_gen {
            return;
        }
        self.view_gen = set.generation;
        self.hold_until = set.hold_until;
        self.stats.path_set_changes += 1;
        let mut n = 0;
        for tier_optimized in [true, false] {
            for pv in &set.paths {
                if !pv.state.usable()
                    || (pv.state.ana == nvme_driver::spec::AnaState::Optimized) != tier_optimized
                {
                    continue;
                }
                let local = self.paths.iter().position(|p| {
                    p.as_ref()
                        .is_some_and(|p| p.shared.id == pv.id && !p.removing)
                });
                if let (Some(l), true) = (local, n < MAX_PATHS) {
                    self.view[n] = ViewEntry {
                        local: l as u8,
                        optimized: tier_optimized,
                    };
                    n += 1;
                }
            }
        }
        self.view_len = n;
        // A new set is new information: forget local avoidance.
        self.clear_avoidance();
    }

    /// Forgets every path's avoidance and re-enables the fast path.
    fn clear_avoidance(&mut self) {
        for p in self.paths.iter_mut().flatten() {
            p.avoid_until = 0;
        }
        self.avoid_max = 0;
        let n = self.view_len;
        self.tier_len = match self.view[..n].first() {
            Some(head) => self.view[..n]
                .iter()
                .take_while(|e| e.optimized == head.optimized)
                .count(),
            None => 0,
        };
        self.update_fast();
    }

    /// Avoids path `l` until `until` (ticks) on this core; disables the fast path
    /// while any path is avoided.
    #[cold]
    fn avoid(&mut self, l: u8, until: u64) {
        if let Some(p) = self.paths[l as usize].as_mut() {
            p.avoid_until = until;
        }
        self.avoid_max = self.avoid_max.max(until);
        self.tier_len = 0;
        self.fast = None;
    }

    /// The fast path's choice, valid while `fast` is set: this core's view is built
    /// and no path is avoided, so every path of the best tier is usable unless its
    /// queue failed (its refusal says so), and the choice is the one [`select`]
    /// makes. The view is this core's copy of the path set as of its last poll: like
    /// any RCU reader, a submit may still act on the set it last saw.
    #[inline(always)]
    fn fast_pick(&mut self) -> Option<u8> {
        // The default policy first, with one compare (a `match` makes a jump table).
        if self.fast == Some(Policy::ActivePassive) {
            return Some(self.view[0].local);
        }
        let n = self.tier_len;
        match self.fast? {
            Policy::ActivePassive => Some(self.view[0].local),
            Policy::RoundRobin => {
                let i = if self.rr_next < n { self.rr_next } else { 0 };
                self.rr_next = i + 1;
                Some(self.view[i].local)
            }
            Policy::LeastQueueDepth => Self::least_inflight(&self.paths, &self.view[..n]),
        }
    }

    /// Local path `l`.
    #[inline(always)]
    fn local(paths: &mut PathTable<Q>, l: u8) -> Option<&mut LocalPath<Q>> {
        paths[l as usize].as_deref_mut()
    }

    /// Of `entries`, the local path with the fewest I/Os in flight from this core
    /// (the first of equals).
    #[inline(always)]
    fn least_inflight<'a>(
        paths: &PathTable<Q>,
        entries: impl IntoIterator<Item = &'a ViewEntry>,
    ) -> Option<u8> {
        let mut best: Option<(usize, u8)> = None;
        for e in entries {
            let d = paths[e.local as usize]
                .as_ref()
                .map_or(usize::MAX, |p| p.queue.outstanding());
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, e.local));
            }
        }
        best.map(|(_, l)| l)
    }

    #[inline]
    fn path_ok(&self, local: u8, now: u64) -> bool {
        match &self.paths[local as usize] {
            Some(p) => !p.removing && p.avoid_until <= now && !p.queue.is_failed(),
            None => false,
        }
    }

    /// Picks a path by policy, best ANA tier first (the view is ordered by tier).
    #[inline]
    fn select(&mut self, now: u64) -> Option<u8> {
        if self.avoid_max != 0 && now >= self.avoid_max {
            self.clear_avoidance();
        }
        let n = self.view_len;
        let first = *self.view[..n].iter().find(|e| self.path_ok(e.local, now))?;
        let best_tier = first.optimized;
        match self.policy {
            Policy::ActivePassive => Some(first.local),
            Policy::RoundRobin => {
                for k in 0..n {
                    let i = (self.rr_next + k) % n;
                    let e = self.view[i];
                    if e.optimized == best_tier && self.path_ok(e.local, now) {
                        self.rr_next = i + 1;
                        return Some(e.local);
                    }
                }
                None
            }
            Policy::LeastQueueDepth => Self::least_inflight(
                &self.paths,
                self.view[..n]
                    .iter()
                    .filter(|e| e.optimized == best_tier && self.path_ok(e.local, now)),
            ),
        }
    }

    /// Tries to put slot `s` on a path.
    #[inline]
    fn dispatch(&mut self, s: u32, now: u64) -> Dispatch {
        self.refresh_view();
        // At most one attempt per path: a refusal marks the path avoided.
        for _ in 0..=self.view_len {
            let Some(l) = self.select(now) else {
                return Dispatch::NoPath;
            };
            let io = self.tab.slots[s as usize].io;
            let Some(p) = Self::local(&mut self.paths, l) else {
                return Dispatch::NoPath;
            };
            match p.queue.submit(&io.to_request(p.nsid, s as u64)) {
                Ok(()) => {
                    self.busy |= p.bit;
                    self.tab.slots[s as usize]
                        .meta
                        .set_state(SlotState::inflight(l));
                    return Dispatch::Sent;
                }
                Err(Refused::Busy) => return Dispatch::NoRoom,
                Err(Refused::Failed) => self.avoid(l, u64::MAX),
                Err(Refused::Invalid) => return Dispatch::Fail(INVALID_FIELD_DNR),
            }
        }
        Dispatch::NoPath
    }

    /// Submits an I/O. It is on a path, or waiting on this core's retry ring; or it is
    /// handed back at once: [`Error::InvalidIo`] for a request no path could take,
    /// [`Error::Busy`] when the channel tracks as many I/Os as it can. Never waits.
    #[inline]
    pub fn submit(&mut self, io: BdevIo) -> std::result::Result<(), (Error, BdevIo)> {
        if self.submit_fast(&io) {
            return Ok(());
        }
        self.submit_full(io.op, io.slba, io.nlb, io.buf, io.ctx)
    }

    /// The fast path: nothing waiting, a free slot, no path avoided, and the chosen
    /// path's queue (from this core's view of the path set as of its last poll) takes
    /// the request.
    /// False if it did not take the I/O (nothing changed but, for a failed path, its
    /// avoidance). A queue that checks requests itself (the NVMe queue pair checks
    /// range and buffer against the same namespace geometry) saves the layer its own
    /// check: anything it refuses takes the full path, which checks first.
    #[inline(always)]
    fn submit_fast(&mut self, io: &BdevIo) -> bool {
        if !Q::VALIDATES
            && io
                .validate(self.mp.info().num_blocks, self.mp.block_shift)
                .is_err()
        {
            return false;
        }
        let Some(l) = self.fast_pick() else {
            return false;
        };
        // `NO_SLOT` is out of range: one test for "none free" and the bounds.
        let s = self.tab.free_head;
        let Some(slot) = self.tab.slots.get_mut(s as usize) else {
            return false;
        };
        let Some(p) = Self::local(&mut self.paths, l) else {
            return false;
        };
        match p.queue.submit(&io.to_request(p.nsid, s as u64)) {
            Ok(()) => {
                self.busy |= p.bit;
                self.stats.submitted += 1;
                self.tab.free_head = slot.link as u32;
                slot.io = *io;
                // `fail_at` is already 0 in a free slot.
                slot.meta = SlotMeta::new(SlotState::inflight(l));
                true
            }
            Err(Refused::Failed) => {
                self.avoid(l, u64::MAX);
                false
            }
            // Busy, or a request it refuses: the full path sorts it out.
            Err(_) => false,
        }
    }

    /// Submit's full path: checks, then the retry ring or a full path selection. The
    /// I/O comes in pieces: passing it whole, or its address, makes the caller build
    /// it in memory, on the fast path too.
    #[cold]
    #[inline(never)]
    fn submit_full(
        &mut self,
        op: IoOp,
        slba: u64,
        nlb: u32,
        buf: DmaSlice,
        ctx: u64,
    ) -> std::result::Result<(), (Error, BdevIo)> {
        let io = BdevIo {
            op,
            slba,
            nlb,
            buf,
            ctx,
        };
        if let Err(e) = io.validate(self.mp.info().num_blocks, self.mp.block_shift) {
            return Err((e, io));
        }
        if self.stopping {
            return Err((
                Error::Stopped(format!("{}: channel is shutting down", self.mp.info().name)),
                io,
            ));
        }
        let s = self.tab.free_head;
        let Some(slot) = self.tab.slots.get_mut(s as usize) else {
            return Err((Error::Busy(self.tab.slots.len()), io));
        };
        self.tab.free_head = slot.link as u32;
        *slot = IoSlot {
            io,
            meta: SlotMeta::new(SlotState::QUEUED),
            link: 0,
            fail_at: 0,
        };
        self.stats.submitted += 1;
        // Keep order behind I/O that is already waiting.
        if !self.retry.is_empty() {
            self.enqueue(s);
            return Ok(());
        }
        let now = clock::ticks();
        match self.dispatch(s, now) {
            Dispatch::Sent => {}
            Dispatch::NoRoom => self.enqueue(s),
            Dispatch::NoPath => {
                self.tab.slots[s as usize].fail_at = now.saturating_add(self.fast_fail_ticks);
                self.enqueue(s);
            }
            Dispatch::Fail(st) => self.finish_later(s, st),
        }
        Ok(())
    }

    #[inline]
    fn enqueue(&mut self, s: u32) {
        self.housekeeping();
        self.tab.slots[s as usize].meta.set_state(SlotState::QUEUED);
        self.retry.push_back(s);
        self.stats.queued += 1;
        self.stats.queued_high_water = self.stats.queued_high_water.max(self.retry.len() as u64);
    }

    fn finish_later(&mut self, s: u32, status: Status) {
        let slot = &mut self.tab.slots[s as usize];
        slot.meta.set_state(SlotState::DONE);
        slot.meta.set_status(status);
        self.done.push_back(s);
        self.housekeeping();
    }

    #[inline]
    fn deliver(&mut self, s: u32, status: Status, cb: &mut impl FnMut(BdevCompletion)) {
        let slot = &mut self.tab.slots[s as usize];
        let ctx = slot.io.ctx;
        slot.meta = SlotMeta::new(SlotState::FREE);
        slot.fail_at = 0;
        slot.link = self.tab.free_head as u64;
        self.tab.free_head = s;
        self.tab.delivered += 1;
        if !status.is_success() {
            self.stats.failed += 1;
        }
        cb(BdevCompletion { ctx, status });
    }

    /// A completion from path `l`'s queue.
    #[inline]
    fn on_completion(&mut self, l: u8, c: IoCompletion, cb: &mut impl FnMut(BdevCompletion)) {
        let s = c.ctx as u32;
        if s as usize >= self.tab.slots.len()
            || self.tab.slots[s as usize].meta.state() != SlotState::inflight(l)
        {
            // Not ours (a duplicate, or a context that is no slot): a queue bug. Never
            // index out of bounds or complete twice; count it, in every build.
            self.tab.stray += 1;
            return;
        }
        let st = c.status;
        if st.is_success() || self.stopping {
            self.deliver(s, st, cb);
            return;
        }
        self.tab.slots[s as usize].meta.set_status(st);
        // Errors only: the clock is read when needed, not on every completion.
        let now = clock::ticks();
        if st.is_path_error() {
            self.avoid(l, now.saturating_add(self.avoid_ticks));
            if let Some(p) = Self::local(&mut self.paths, l) {
                p.stats.path_errors += 1;
                p.shared.failovers.fetch_add(1, Ordering::Relaxed);
                if st.is_ana_error() {
                    p.shared.ana_stale.store(true, Ordering::Release);
                }
            }
            self.stats.failovers += 1;
            // Re-dispatched at the end of this poll, on another path if there is one.
            self.tab.slots[s as usize].link = 0;
            self.enqueue(s);
            return;
        }
        let slot = &mut self.tab.slots[s as usize];
        if st.dnr() || slot.meta.retries() >= self.mp.options().retry_count {
            self.deliver(s, st, cb);
            return;
        }
        slot.meta.set_retries(slot.meta.retries() + 1);
        slot.link = now.saturating_add(self.retry_unit_ticks.saturating_mul(st.crd() as u64));
        self.stats.retries += 1;
        self.enqueue(s);
    }

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
                    self.view_gen = u64::MAX;
                    self.housekeeping();
                }
            }
        }
    }

    /// Re-dispatches what waits on the retry ring, failing what waited too long.
    fn run_retry_ring(&mut self, now: u64, cb: &mut impl FnMut(BdevCompletion)) {
        let mut no_path = false;
        for _ in 0..self.retry.len() {
            let Some(s) = self.retry.pop_front() else {
                break;
            };
            if self.stopping {
                let st = self.tab.slots[s as usize].meta.status();
                let st = if st.is_success() {
                    Status::ABORTED_BY_HOST
                } else {
                    st
                };
                self.deliver(s, st, cb);
                continue;
            }
            if self.tab.slots[s as usize].link > now {
                self.retry.push_back(s);
                continue;
            }
            let outcome = if no_path {
                Dispatch::NoPath
            } else {
                self.dispatch(s, now)
            };
            match outcome {
                Dispatch::Sent => self.tab.slots[s as usize].fail_at = 0,
                Dispatch::NoRoom => self.retry.push_back(s),
                Dispatch::NoPath => {
                    no_path = true;
                    let slot = &mut self.tab.slots[s as usize];
                    if slot.fail_at == 0 {
                        slot.fail_at = now.saturating_add(self.fast_fail_ticks);
                    }
                    if now >= slot.fail_at && now >= self.hold_until {
                        let st = if slot.meta.status().is_success() {
                            Status::HOST_PATHING_ERROR
                        } else {
                            slot.meta.status()
                        };
                        self.stats.fast_failed += 1;
                        self.deliver(s, st, cb);
                    } else {
                        self.retry.push_back(s);
                    }
                }
                Dispatch::Fail(st) => self.deliver(s, st, cb),
            }
        }
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
    /// retry ring, retires removed paths and works out `busy` again. It happens when
    /// the QSBR epoch moved (something was published, or a message sent), when
    /// something asked for it (`housekeeping`), and every [`FULL_POLL_EVERY`] polls.
    #[inline]
    pub fn poll(&mut self, cb: &mut impl FnMut(BdevCompletion)) -> usize {
        let before = self.tab.delivered;
        self.countdown -= 1;
        if self.countdown == 0 || self.reader.changed() {
            self.poll_full(cb);
        } else {
            let mut busy = self.busy;
            while busy != 0 {
                let l = busy.trailing_zeros() as u8;
                busy &= busy - 1;
                self.poll_path(l, cb);
            }
        }
        (self.tab.delivered - before) as usize
    }

    /// Polls local path `l`'s queue once (up to [`POLL_BATCH`] completions), then
    /// handles what was not a plain success.
    #[inline(always)]
    fn poll_path(&mut self, l: u8, cb: &mut impl FnMut(BdevCompletion)) {
        if let Some(p) = Self::local(&mut self.paths, l) {
            Self::poll_queue(p, l, &mut self.tab, cb);
            if self.tab.nerr != 0 {
                self.handle_errs(l, cb);
            }
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
        while let Some(s) = self.done.pop_front() {
            let st = self.tab.slots[s as usize].meta.status();
            self.deliver(s, st, cb);
        }
        self.refresh_view();
        for l in 0..self.paths_end {
            let needs = self.paths[l].as_ref().is_some_and(|p| p.queue.needs_poll());
            if needs {
                self.poll_path(l as u8, cb);
            }
        }
        if !self.retry.is_empty() {
            self.run_retry_ring(clock::ticks(), cb);
        }
        self.flush();
        if self.removing > 0 {
            self.retire_removed();
        }
        let mut busy = 0;
        for p in self.paths[..self.paths_end].iter().flatten() {
            if p.queue.outstanding() > 0 {
                busy |= p.bit;
            }
        }
        self.busy = busy;
        let more = !self.retry.is_empty() || self.removing > 0 || !self.done.is_empty();
        self.countdown = if more { 1 } else { FULL_POLL_EVERY };
        self.update_fast();
    }

    /// Rings the doorbells of the path queues with I/O queued since the last flush
    /// (poll does it too): submit, flush, poll is the shortest round trip.
    #[inline]
    pub fn flush(&mut self) {
        // Every queue given I/O since the last full poll: a queue with nothing new to
        // announce returns at once.
        let mut busy = self.busy;
        while busy != 0 {
            let l = busy.trailing_zeros() as u8;
            busy &= busy - 1;
            if let Some(p) = Self::local(&mut self.paths, l) {
                p.queue.flush();
            }
        }
    }

    /// Polls one path queue, local path `l`. Successful completions of I/O in flight
    /// on the path (the common case) are delivered straight from the queue's
    /// callback; anything else (errors, completions while stopping, completions that
    /// match no slot) is collected in `t.errs` (`t.nerr` of them) for the caller,
    /// which may re-dispatch, to handle after the queue's poll returns.
    #[inline(always)]
    fn poll_queue(
        p: &mut LocalPath<Q>,
        l: u8,
        t: &mut SlotTable,
        cb: &mut impl FnMut(BdevCompletion),
    ) {
        t.nerr = 0;
        // A `move` closure over these two references captures two pointers; a plain
        // one would capture every field it touches, each set up at every poll.
        let tt = &mut *t;
        let cb = &mut *cb;
        p.queue.poll(POLL_BATCH, &mut move |c: IoCompletion| {
            if c.status.is_success() {
                if let Some(slot) = tt.slots.get_mut(c.ctx as usize) {
                    // In flight on this path, first attempt (a retried I/O has its
                    // count and last status to clear: the cold path does that).
                    if slot.meta == SlotMeta::new(SlotState::inflight(l)) {
                        slot.meta = SlotMeta::new(SlotState::FREE);
                        slot.link = tt.free_head as u64;
                        tt.free_head = c.ctx as u32;
                        tt.delivered += 1;
                        cb(BdevCompletion {
                            ctx: slot.io.ctx,
                            status: c.status,
                        });
                        return;
                    }
                }
            }
            if let Some(e) = tt.errs.get_mut(tt.nerr) {
                *e = c;
                tt.nerr += 1;
            } else {
                // More completions than slots: the queue broke its contract (at least
                // one of them is a duplicate).
                tt.stray += 1;
            }
        });
    }

    /// After a queue poll with completions that were not plain successes: they are
    /// handled, what they put on the retry ring is re-dispatched at once, and the
    /// doorbells rung.
    #[cold]
    #[inline(never)]
    fn handle_errs(&mut self, l: u8, cb: &mut impl FnMut(BdevCompletion)) {
        let nerr = self.tab.nerr;
        for i in 0..nerr {
            let c = self.tab.errs[i];
            self.on_completion(l, c, cb);
        }
        if !self.retry.is_empty() {
            self.run_retry_ring(clock::ticks(), cb);
        }
        self.flush();
        self.update_fast();
    }

    /// Lets go of removed paths with nothing left in flight. (The view already leaves
    /// them out, so it stays as it is.)
    fn retire_removed(&mut self) {
        for slot in self.paths[..self.paths_end].iter_mut() {
            let drained = slot
                .as_ref()
                .is_some_and(|p| p.removing && p.queue.outstanding() == 0);
            if drained {
                if let Some(p) = slot.take() {
                    self.removing -= 1;
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
