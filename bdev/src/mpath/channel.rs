//! The per-core multipath channel: the data path.
//!
//! A channel owns one queue per path (queue pairs are never shared between cores),
//! a table of I/O slots sized at creation, and the core's retry ring. Submitting
//! picks a path from the current snapshot (one atomic load; the per-core view of the
//! snapshot is rebuilt only when its generation changes) and hands the request to that
//! path's queue. Nothing here allocates, locks, sleeps or waits:
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
use nvme_driver::{IoCompletion, Status};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How long a path that returned a path error is avoided by this core, unless a new
/// path set arrives first.
const AVOID_US: u64 = 500;
/// Completions taken from one path queue per poll.
const POLL_BATCH: usize = 64;
/// Status of an I/O that could not be dispatched (refused by every path's queue).
const INVALID_FIELD_DNR: Status = Status::new(sct::GENERIC, sc::INVALID_FIELD, true);

/// Per-path counters of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathIoStats {
    /// Path instance identifier.
    pub id: u64,
    /// I/Os dispatched on the path.
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Inflight(u8),
    Queued,
    Done,
}

#[derive(Clone, Copy, Debug)]
struct IoSlot {
    io: BdevIo,
    state: SlotState,
    retries: u32,
    not_before: u64,
    /// Deadline for finding a usable path (0: not waiting for one).
    fail_at: u64,
    status: Status,
}

struct LocalPath<Q> {
    shared: Arc<PathShared>,
    queue: Q,
    inflight: u32,
    avoid_until: u64,
    removing: bool,
    stats: PathIoStats,
}

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

/// A per-core channel to a multipath bdev. `Send`, so it can be made off-core and
/// moved to its reactor; used by one thread at a time (`&mut self`).
pub struct MpathChannel<Q: PathQueue> {
    mp: Arc<Multipath<Q>>,
    reader: QsbrReader,
    mailbox: Arc<Ring<ChanMsg<Q>>>,
    closed: Arc<AtomicBool>,
    paths: Vec<Option<LocalPath<Q>>>,
    slots: Box<[IoSlot]>,
    free: Vec<u32>,
    retry: VecDeque<u32>,
    done: VecDeque<u32>,
    view: [ViewEntry; MAX_PATHS],
    view_len: usize,
    view_gen: u64,
    hold_until: u64,
    rr_next: usize,
    stopping: bool,
    fast_fail_ticks: u64,
    avoid_ticks: u64,
    retry_unit_ticks: u64,
    stats: ChannelStats,
    /// Completions collected from one path queue before they are handled (made once:
    /// initializing a batch buffer on every poll cost more than the rest of the poll).
    cbuf: Box<[IoCompletion]>,
    /// Paths marked removing and not yet retired.
    removing: usize,
}

impl<Q: PathQueue> fmt::Debug for MpathChannel<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpathChannel")
            .field("bdev", &self.mp.info().name)
            .field("outstanding", &self.outstanding())
            .field("stats", &self.stats)
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
            state: SlotState::Free,
            retries: 0,
            not_before: 0,
            fail_at: 0,
            status: Status::SUCCESS,
        };
        let opts = *mp.options();
        let mut ch = MpathChannel {
            reader,
            mailbox,
            closed,
            paths: Vec::with_capacity(MAX_PATHS),
            slots: vec![empty; depth].into_boxed_slice(),
            free: (0..depth as u32).rev().collect(),
            retry: VecDeque::with_capacity(depth),
            done: VecDeque::with_capacity(depth),
            view: [ViewEntry::default(); MAX_PATHS],
            view_len: 0,
            view_gen: u64::MAX,
            hold_until: 0,
            rr_next: 0,
            stopping: false,
            fast_fail_ticks: clock::ms_to_ticks(opts.fast_io_fail_timeout_ms),
            avoid_ticks: clock::ms_to_ticks(1).saturating_mul(AVOID_US) / 1000,
            retry_unit_ticks: clock::ms_to_ticks(opts.retry_delay_unit_ms),
            stats: ChannelStats::default(),
            cbuf: vec![
                IoCompletion {
                    ctx: 0,
                    status: Status::SUCCESS,
                };
                POLL_BATCH
            ]
            .into_boxed_slice(),
            removing: 0,
            mp,
        };
        for (shared, q) in initial {
            ch.add_local(shared, q);
        }
        ch
    }

    fn add_local(&mut self, shared: Arc<PathShared>, queue: Q) {
        let lp = LocalPath {
            stats: PathIoStats {
                id: shared.id,
                ..PathIoStats::default()
            },
            shared,
            queue,
            inflight: 0,
            avoid_until: 0,
            removing: false,
        };
        match self.paths.iter().position(Option::is_none) {
            Some(i) => self.paths[i] = Some(lp),
            None => self.paths.push(Some(lp)),
        }
        self.view_gen = u64::MAX;
    }

    /// The bdev's geometry and identifiers.
    pub fn bdev(&self) -> &Arc<Multipath<Q>> {
        &self.mp
    }

    /// I/Os accepted and not yet delivered to a poll callback.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Counters.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Per-path counters of this channel.
    pub fn path_stats(&self) -> Vec<PathIoStats> {
        self.paths
            .iter()
            .flatten()
            .map(|p| PathIoStats {
                inflight: p.inflight as u64,
                ..p.stats
            })
            .collect()
    }

    /// Stop mode: I/O waiting for a path or a retry fails at the next poll instead of
    /// waiting, and errors are no longer retried; I/O in flight completes as usual.
    /// Poll until [`outstanding`](Self::outstanding) is 0 to drain.
    pub fn shutdown(&mut self) {
        self.stopping = true;
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
        for p in self.paths.iter_mut().flatten() {
            p.avoid_until = 0;
        }
    }

    #[inline]
    fn path_ok(&self, local: u8, now: u64) -> bool {
        match &self.paths[local as usize] {
            Some(p) => !p.removing && p.avoid_until <= now && !p.queue.is_failed(),
            None => false,
        }
    }

    /// Picks a path by policy, best ANA tier first. `skip` is a path to avoid when
    /// another is available.
    #[inline]
    fn select(&mut self, now: u64) -> Option<u8> {
        let n = self.view_len;
        let best_tier = self.view[..n]
            .iter()
            .find(|e| self.path_ok(e.local, now))
            .map(|e| e.optimized)?;
        match self.mp.options().policy {
            Policy::ActivePassive => self.view[..n]
                .iter()
                .find(|e| self.path_ok(e.local, now))
                .map(|e| e.local),
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
            Policy::LeastQueueDepth => {
                let mut best: Option<(u32, u8)> = None;
                for e in &self.view[..n] {
                    if e.optimized != best_tier || !self.path_ok(e.local, now) {
                        continue;
                    }
                    let d = self.paths[e.local as usize]
                        .as_ref()
                        .map_or(u32::MAX, |p| p.inflight);
                    if best.is_none_or(|(bd, _)| d < bd) {
                        best = Some((d, e.local));
                    }
                }
                best.map(|(_, l)| l)
            }
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
            let io = self.slots[s as usize].io;
            let Some(p) = self.paths[l as usize].as_mut() else {
                return Dispatch::NoPath;
            };
            match p.queue.submit(io.to_request(p.shared.nsid, s as u64)) {
                Ok(()) => {
                    p.inflight += 1;
                    p.stats.submitted += 1;
                    self.slots[s as usize].state = SlotState::Inflight(l);
                    return Dispatch::Sent;
                }
                Err((nvme_driver::Error::Busy(_), _)) => return Dispatch::NoRoom,
                Err((nvme_driver::Error::ControllerFailed { .. }, _)) => {
                    p.avoid_until = u64::MAX;
                }
                Err(_) => return Dispatch::Fail(INVALID_FIELD_DNR),
            }
        }
        Dispatch::NoPath
    }

    /// Submits an I/O. It is on a path, or waiting on this core's retry ring; or it is
    /// handed back at once: [`Error::InvalidIo`] for a request no path could take,
    /// [`Error::Busy`] when the channel tracks as many I/Os as it can. Never waits.
    #[inline]
    pub fn submit(&mut self, io: BdevIo) -> std::result::Result<(), (Error, BdevIo)> {
        if let Err(e) = io.validate(self.mp.info().num_blocks, self.mp.block_shift) {
            return Err((e, io));
        }
        if self.stopping {
            return Err((
                Error::Stopped(format!("{}: channel is shutting down", self.mp.info().name)),
                io,
            ));
        }
        let Some(s) = self.free.pop() else {
            return Err((Error::Busy(self.slots.len()), io));
        };
        self.slots[s as usize] = IoSlot {
            io,
            state: SlotState::Queued,
            retries: 0,
            not_before: 0,
            fail_at: 0,
            status: Status::SUCCESS,
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
                self.slots[s as usize].fail_at = now.saturating_add(self.fast_fail_ticks);
                self.enqueue(s);
            }
            Dispatch::Fail(st) => self.finish_later(s, st),
        }
        Ok(())
    }

    #[inline]
    fn enqueue(&mut self, s: u32) {
        self.slots[s as usize].state = SlotState::Queued;
        self.retry.push_back(s);
        self.stats.queued += 1;
        self.stats.queued_high_water = self.stats.queued_high_water.max(self.retry.len() as u64);
    }

    fn finish_later(&mut self, s: u32, status: Status) {
        let slot = &mut self.slots[s as usize];
        slot.state = SlotState::Done;
        slot.status = status;
        self.done.push_back(s);
    }

    #[inline]
    fn deliver(&mut self, s: u32, status: Status, cb: &mut impl FnMut(BdevCompletion)) {
        let slot = &mut self.slots[s as usize];
        let ctx = slot.io.ctx;
        slot.state = SlotState::Free;
        self.free.push(s);
        self.stats.completed += 1;
        if !status.is_success() {
            self.stats.failed += 1;
        }
        cb(BdevCompletion { ctx, status });
    }

    /// A completion from path `l`'s queue.
    #[inline]
    fn on_completion(&mut self, l: u8, c: IoCompletion, cb: &mut impl FnMut(BdevCompletion)) {
        let s = c.ctx as u32;
        if s as usize >= self.slots.len() || self.slots[s as usize].state != SlotState::Inflight(l)
        {
            // Not ours: a queue bug; never index out of bounds or complete twice.
            debug_assert!(
                false,
                "completion for slot {s} that is not in flight on path {l}"
            );
            return;
        }
        if let Some(p) = self.paths[l as usize].as_mut() {
            p.inflight -= 1;
        }
        let st = c.status;
        if st.is_success() || self.stopping {
            self.deliver(s, st, cb);
            return;
        }
        self.slots[s as usize].status = st;
        // Errors only: the clock is read when needed, not on every completion.
        let now = clock::ticks();
        if st.is_path_error() {
            if let Some(p) = self.paths[l as usize].as_mut() {
                p.avoid_until = now.saturating_add(self.avoid_ticks);
                p.stats.path_errors += 1;
                p.shared.failovers.fetch_add(1, Ordering::Relaxed);
                if st.is_ana_error() {
                    p.shared.ana_stale.store(true, Ordering::Release);
                }
            }
            self.stats.failovers += 1;
            // Re-dispatched at the end of this poll, on another path if there is one.
            self.slots[s as usize].not_before = 0;
            self.enqueue(s);
            return;
        }
        let slot = &mut self.slots[s as usize];
        if st.dnr() || slot.retries >= self.mp.options().retry_count {
            self.deliver(s, st, cb);
            return;
        }
        slot.retries += 1;
        slot.not_before = now.saturating_add(self.retry_unit_ticks.saturating_mul(st.crd() as u64));
        self.stats.retries += 1;
        self.enqueue(s);
    }

    fn drain_mailbox(&mut self) {
        while let Some(m) = self.mailbox.pop() {
            match m {
                ChanMsg::Add(shared, q) => self.add_local(shared, q),
                ChanMsg::Remove(id) => {
                    for p in self.paths.iter_mut().flatten() {
                        if p.shared.id == id && !p.removing {
                            p.removing = true;
                            self.removing += 1;
                        }
                    }
                    self.view_gen = u64::MAX;
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
                let st = self.slots[s as usize].status;
                let st = if st.is_success() {
                    Status::ABORTED_BY_HOST
                } else {
                    st
                };
                self.deliver(s, st, cb);
                continue;
            }
            if self.slots[s as usize].not_before > now {
                self.retry.push_back(s);
                continue;
            }
            let outcome = if no_path {
                Dispatch::NoPath
            } else {
                self.dispatch(s, now)
            };
            match outcome {
                Dispatch::Sent => self.slots[s as usize].fail_at = 0,
                Dispatch::NoRoom => self.retry.push_back(s),
                Dispatch::NoPath => {
                    no_path = true;
                    let slot = &mut self.slots[s as usize];
                    if slot.fail_at == 0 {
                        slot.fail_at = now.saturating_add(self.fast_fail_ticks);
                    }
                    if now >= slot.fail_at && now >= self.hold_until {
                        let st = if slot.status.is_success() {
                            Status::HOST_PATHING_ERROR
                        } else {
                            slot.status
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

    /// Polls every path's queue, delivers finished I/O to `cb` (each exactly once),
    /// re-dispatches what waits, and announces a quiescent state (this channel holds
    /// no path-set reference between calls). Returns the number delivered.
    pub fn poll(&mut self, cb: &mut impl FnMut(BdevCompletion)) -> usize {
        self.reader.quiescent();
        if !self.mailbox.is_empty() {
            self.drain_mailbox();
        }
        let before = self.stats.completed;
        while let Some(s) = self.done.pop_front() {
            let st = self.slots[s as usize].status;
            self.deliver(s, st, cb);
        }
        // Every path, idle ones too: a controller reset waits (bounded) for each
        // queue's owner to acknowledge it in a poll.
        for l in 0..self.paths.len() {
            if self.paths[l].is_some() {
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
        (self.stats.completed - before) as usize
    }

    /// Rings the doorbells of the path queues with I/O queued since the last poll
    /// (poll does it too): submit, flush, poll is the shortest round trip.
    #[inline]
    pub fn flush(&mut self) {
        for p in self.paths.iter_mut().flatten() {
            if p.inflight > 0 {
                p.queue.flush();
            }
        }
    }

    fn poll_path(&mut self, l: u8, cb: &mut impl FnMut(BdevCompletion)) {
        // Completions are collected first (the queue is borrowed during its poll) into
        // the channel's batch buffer, taken out for the duration (a pointer swap).
        let mut buf = std::mem::take(&mut self.cbuf);
        loop {
            let mut n = 0;
            let Some(p) = self.paths[l as usize].as_mut() else {
                break;
            };
            p.queue.poll(POLL_BATCH, &mut |c| {
                if let Some(slot) = buf.get_mut(n) {
                    *slot = c;
                    n += 1;
                }
            });
            for c in &buf[..n] {
                self.on_completion(l, *c, cb);
            }
            if n < POLL_BATCH {
                break;
            }
        }
        self.cbuf = buf;
    }

    fn retire_removed(&mut self) {
        for i in 0..self.paths.len() {
            let drained = self.paths[i]
                .as_ref()
                .is_some_and(|p| p.removing && p.inflight == 0 && p.queue.outstanding() == 0);
            if drained {
                if let Some(p) = self.paths[i].take() {
                    self.removing -= 1;
                    self.mp.bury(p.queue);
                }
                self.view_gen = u64::MAX;
            }
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
            if let ChanMsg::Add(_, q) = m {
                self.mp.bury(q);
            }
        }
    }
}
