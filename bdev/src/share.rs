// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Queue pairs shared by the channels of one poll group.
//!
//! A controller grants a fixed number of I/O queue pairs (QEMU's 64, real SSDs 32 to
//! 128), so a queue pair per core, bdev and path runs out with many namespaces on many
//! cores. As SPDK's poll groups do (`nvme_poll_group.c`; `bdev_nvme.c` keeps one
//! `nvme_qpair` per thread and controller, shared by every namespace's I/O channel),
//! the channels of one [`QueueGroup`] share one queue pair per controller: the first
//! channel that needs a path to controller C makes it, every later one joins it, and
//! it is dropped when the last one lets go. An NVMe queue pair already serves every
//! namespace of its controller (each command names its NSID).
//!
//! One thread at a time drives a group (its channels are owned together, see
//! [`PollGroup`](crate::PollGroup); a channel made alone has a group of its own), so
//! the queue itself is used without locks. What crosses threads is only the
//! membership: the path writers (controller threads) make a member for a channel and
//! send it through the channel's mailbox, and drop members that channels gave back.
//!
//! A member ([`QueueShare`]) tags the context of each request it submits with its
//! index and generation (bits 48..63 and 32..47; the channel's own context, a slot
//! index, is the low 32 bits). Whichever member polls the queue delivers its own
//! completions at once and puts every other member's into that member's stash, a ring
//! sized to the member's most I/O in flight, which the member empties at its next
//! poll: each completion reaches its owner exactly once, whoever polls. A completion
//! for a member that is gone (a channel closed with I/O in flight) matches no live
//! generation and is counted as an orphan, never delivered to the member that took
//! its index since.

use crate::io::PathQueue;
use crate::sync::lock_std as lock;
use crate::{Error, Result};
use nvme_driver::{IoCompletion, IoRequest, Refused, Status};
use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Members one shared queue can have at once (channels of a group using it).
pub const MEMBERS_MAX: usize = 1024;
/// Where a member's index sits in a request's context.
const MEMBER_SHIFT: u32 = 48;
/// Where a member's generation (its low 16 bits) sits in a request's context.
const GEN_SHIFT: u32 = 32;
/// The channel's own part of a request's context.
const CTX_MASK: u64 = 0xffff_ffff;

/// Completions of one member taken by another member's poll, oldest first.
struct Stash {
    ring: Box<[IoCompletion]>,
    head: usize,
    len: usize,
}

impl Stash {
    fn push(&mut self, c: IoCompletion) -> bool {
        if self.len == self.ring.len() {
            return false;
        }
        let at = (self.head + self.len) % self.ring.len();
        self.ring[at] = c;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<IoCompletion> {
        if self.len == 0 {
            return None;
        }
        let c = self.ring[self.head];
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
        Some(c)
    }
}

/// One member slot of a shared queue.
struct Member {
    /// Odd while a [`QueueShare`] holds the slot, even while it is free; moved by one
    /// at each claim and each release, so a request's tag names one holder.
    gen: AtomicU32,
    /// Touched only by the thread that drives the group, and by the claimer of a free
    /// slot (which no tag names and the driving thread no longer touches).
    stash: UnsafeCell<Stash>,
}

/// What only the driving thread touches.
struct Owned<Q> {
    queue: Q,
    /// Completions whose member was gone.
    orphans: u64,
    /// Completions that found their member's stash full (never: a stash holds its
    /// member's most I/O in flight); counted rather than lost silently.
    overflows: u64,
    /// Completions with a tag other than 0, taken by any member's poll: the first
    /// member (tag 0) counts nothing itself, so a queue it has alone pays nothing per
    /// I/O; its completions are the queue's minus these.
    tagged_completions: u64,
}

/// A queue pair shared by the members of one group, one per controller (instance).
pub struct SharedQueue<Q> {
    owned: UnsafeCell<Owned<Q>>,
    members: Box<[Member]>,
    /// Member slots free to claim.
    free: Mutex<Vec<u16>>,
    /// Member slots released and not yet recycled by the driving thread (their stash
    /// may still hold completions it put there).
    released: Mutex<Vec<u16>>,
    any_released: AtomicBool,
    /// A second member joined at some point. Until then the queue's one member (slot
    /// 0, first generation: tag 0) owns every completion, and polls hand them over
    /// without looking at tags: a channel made alone pays nothing for sharing.
    ever_shared: AtomicBool,
}

// SAFETY: `owned` and each member's `stash` are touched only by the one thread that
// drives the group at a time (through `QueueShare`'s `&mut self`/`&self` methods, which
// only the channels of one group call, and a group's channels move between threads
// only together: `PollGroup` owns them, and a channel made alone is its group's only
// user), or by the claimer of a free member slot, which no tag names and which the
// driving thread does not touch until it sees the slot's new generation (published
// with release ordering after the stash is set). The other fields are atomics and
// mutexes. `Q: Send`: the queue may be made on one thread and driven on another.
unsafe impl<Q: Send> Sync for SharedQueue<Q> {}
// SAFETY: as above; the queue itself is `Send`.
unsafe impl<Q: Send> Send for SharedQueue<Q> {}

impl<Q> fmt::Debug for SharedQueue<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedQueue")
            .field("members_free", &lock(&self.free).len())
            .finish()
    }
}

impl<Q: PathQueue> SharedQueue<Q> {
    fn new(queue: Q) -> Self {
        SharedQueue {
            owned: UnsafeCell::new(Owned {
                queue,
                orphans: 0,
                overflows: 0,
                tagged_completions: 0,
            }),
            members: (0..MEMBERS_MAX)
                .map(|_| Member {
                    gen: AtomicU32::new(0),
                    stash: UnsafeCell::new(Stash {
                        ring: Box::new([]),
                        head: 0,
                        len: 0,
                    }),
                })
                .collect(),
            free: Mutex::new((0..MEMBERS_MAX as u16).rev().collect()),
            released: Mutex::new(Vec::new()),
            any_released: AtomicBool::new(false),
            ever_shared: AtomicBool::new(false),
        }
    }

    /// A new member whose stash holds `stash_cap` completions (its most I/O in flight
    /// on this queue; 0 when it will be the queue's only member). Any thread.
    fn join(self: &Arc<Self>, stash_cap: usize) -> Result<QueueShare<Q>> {
        let Some(m) = lock(&self.free).pop() else {
            return Err(Error::Exhausted(format!(
                "{MEMBERS_MAX} channels of one poll group share this queue pair already"
            )));
        };
        let member = &self.members[m as usize];
        // SAFETY: slot `m` was free: no member holds it, no tag names its next
        // generation, and the driving thread recycled it (cleared its stash) before
        // putting it on the free list, whose lock orders that before this.
        let stash = unsafe { &mut *member.stash.get() };
        if stash.ring.len() < stash_cap {
            stash.ring = vec![
                IoCompletion {
                    ctx: 0,
                    status: Status(0)
                };
                stash_cap
            ]
            .into_boxed_slice();
        }
        stash.head = 0;
        stash.len = 0;
        // Odd: held. Release: the stash above before any use of the new generation.
        let gen = member.gen.fetch_add(1, Ordering::Release).wrapping_add(1);
        if m != 0 || gen != 1 {
            // Not the queue's first member: from now on polls sort by tag. (Seen by
            // the driving thread before this member's first request, which reaches
            // it through the channel's mailbox or on that thread itself.)
            self.ever_shared.store(true, Ordering::Release);
        }
        Ok(QueueShare {
            tag: tag(m, gen),
            member: m,
            submitted: 0,
            delivered: 0,
            stash: &member.stash,
            shared: self.clone(),
        })
    }

    /// Member `m` lets go (any thread): completions still to come for it become
    /// orphans; the driving thread recycles the slot at its next maintenance.
    fn release(&self, m: u16) {
        self.members[m as usize].gen.fetch_add(1, Ordering::AcqRel);
        lock(&self.released).push(m);
        self.any_released.store(true, Ordering::Release);
    }

    /// Puts completion `c` of another member into its stash, or counts it as an
    /// orphan. Driving thread only.
    #[cold]
    fn route(&self, owned_orphans: &mut u64, owned_overflows: &mut u64, c: IoCompletion) {
        let m = (c.ctx >> MEMBER_SHIFT) as usize;
        match self.members.get(m) {
            Some(member)
                if tag(m as u16, member.gen.load(Ordering::Acquire)) == c.ctx & !CTX_MASK =>
            {
                // SAFETY: driving thread; the member holds the slot in this
                // generation, so its stash is set up (ordered by the acquire above).
                let stash = unsafe { &mut *member.stash.get() };
                if !stash.push(c) {
                    *owned_overflows += 1;
                }
            }
            _ => *owned_orphans += 1,
        }
    }
}

/// The context bits of member slot `m` in generation `gen` (odd: held). The slot's
/// first holder has tag 0 (slot 0, generation 1), so a queue's first member's
/// requests carry the channel's context unchanged.
fn tag(m: u16, gen: u32) -> u64 {
    (m as u64) << MEMBER_SHIFT | (((gen >> 1) & 0xffff) as u64) << GEN_SHIFT
}

/// One channel's membership of a [`SharedQueue`]: its queue on one path. Implements
/// [`PathQueue`], so the multipath channel drives it as it would a queue of its own.
pub struct QueueShare<Q: PathQueue> {
    /// This member's bits of every request context.
    tag: u64,
    member: u16,
    /// Requests this member submitted, and of those delivered to it (the latter
    /// not counted by the first member, tag 0: see `Owned::tagged_completions`).
    submitted: u64,
    delivered: u64,
    /// This member's stash, in `shared` (whose member table never moves).
    stash: *const UnsafeCell<Stash>,
    shared: Arc<SharedQueue<Q>>,
}

// SAFETY: `stash` points into `shared`, which the member keeps alive; it is used only
// where `shared`'s cells are (see `SharedQueue`'s `Sync`).
unsafe impl<Q: PathQueue> Send for QueueShare<Q> {}
// SAFETY: as above.
unsafe impl<Q: PathQueue> Sync for QueueShare<Q> {}

impl<Q: PathQueue> fmt::Debug for QueueShare<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueShare")
            .field("member", &self.member)
            .field("submitted", &self.submitted)
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl<Q: PathQueue> Drop for QueueShare<Q> {
    fn drop(&mut self) {
        self.shared.release(self.member);
    }
}

impl<Q: PathQueue> QueueShare<Q> {
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    fn owned(&self) -> &mut Owned<Q> {
        // SAFETY: only the thread driving this member's group calls its methods (see
        // `SharedQueue`'s `Sync`), and none of them keeps this reference past its
        // return or takes it twice at once.
        unsafe { &mut *self.shared.owned.get() }
    }

    /// The length of this member's stash.
    #[inline(always)]
    fn stashed(&self) -> usize {
        // SAFETY: `stash` lives as long as `shared`; a read on the driving thread, which
        // alone writes it while this member holds the slot.
        unsafe { (*(*self.stash).get()).len }
    }

    /// Delivers what other members' polls stashed for this one.
    #[cold]
    #[inline(never)]
    fn drain_stash(&mut self, cb: &mut impl FnMut(IoCompletion)) -> usize {
        // SAFETY: as in `stashed`; no other reference to it is live.
        let stash = unsafe { &mut *(*self.stash).get() };
        let mut n = 0;
        while let Some(c) = stash.pop() {
            cb(IoCompletion {
                ctx: c.ctx & CTX_MASK,
                status: c.status,
            });
            n += 1;
        }
        n
    }

    /// A poll of a queue that has (had) several members: this member's stashed
    /// completions first, then the queue's, each delivered to its own member.
    #[inline(never)]
    fn poll_shared(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize {
        let mut own = if self.stashed() != 0 {
            self.drain_stash(cb)
        } else {
            0
        };
        let tag = self.tag;
        let shared = &*self.shared;
        // SAFETY: see `owned`; `route` touches only other members' stashes.
        let owned = unsafe { &mut *shared.owned.get() };
        let (orphans, overflows, tagged) = (
            &mut owned.orphans,
            &mut owned.overflows,
            &mut owned.tagged_completions,
        );
        let before = own;
        owned.queue.poll(max, &mut |c| {
            if c.ctx & !CTX_MASK == tag {
                own += 1;
                cb(IoCompletion {
                    ctx: c.ctx & CTX_MASK,
                    status: c.status,
                });
            } else {
                *tagged += (c.ctx & !CTX_MASK != 0) as u64;
                shared.route(orphans, overflows, c);
            }
        });
        if tag != 0 {
            *tagged += (own - before) as u64;
        }
        self.delivered += own as u64;
        own
    }

    /// Completions of gone members dropped so far, on this queue (all members).
    pub fn orphans(&self) -> u64 {
        self.owned().orphans
    }

    /// Completions that found no room in their member's stash (0 unless broken).
    pub fn overflows(&self) -> u64 {
        self.owned().overflows
    }

    /// True if `other` drives the same queue.
    pub fn same_queue(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<Q: PathQueue> PathQueue for QueueShare<Q> {
    const VALIDATES: bool = Q::VALIDATES;

    #[inline(always)]
    fn ctx_tag(&self) -> u64 {
        self.tag
    }

    #[inline(always)]
    fn submit(&mut self, req: &IoRequest) -> std::result::Result<(), Refused> {
        self.owned().queue.submit(req)?;
        self.submitted += 1;
        Ok(())
    }

    #[inline]
    fn poll(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize {
        if !self.shared.ever_shared.load(Ordering::Acquire) {
            // The only member there ever was: every completion is its own, tag 0.
            return self.owned().queue.poll(max, cb);
        }
        self.poll_shared(max, cb)
    }

    #[inline]
    fn flush(&mut self) {
        self.owned().queue.flush()
    }

    fn outstanding(&self) -> usize {
        if self.tag != 0 {
            return (self.submitted - self.delivered) as usize;
        }
        // The first member: its completions are the queue's untagged ones, of which
        // those still in its stash are not delivered yet.
        let owned = self.owned();
        let completed = owned.queue.submitted() - owned.queue.outstanding() as u64;
        let untagged = completed - owned.tagged_completions;
        (self.submitted + self.stashed() as u64 - untagged) as usize
    }

    fn submitted(&self) -> u64 {
        self.submitted
    }

    fn pended(&self) -> u64 {
        self.owned().queue.pended()
    }

    fn timeouts(&self) -> u64 {
        self.owned().queue.timeouts()
    }

    fn reset_aborts(&self) -> u64 {
        self.owned().queue.reset_aborts()
    }

    #[inline]
    fn is_failed(&self) -> bool {
        self.owned().queue.is_failed()
    }

    #[inline]
    fn is_resetting(&self) -> bool {
        self.owned().queue.is_resetting()
    }

    /// Also true while other members have I/O on the queue: polling it delivers theirs
    /// to their stashes, and acknowledges a reset for all of them.
    #[inline]
    fn needs_poll(&self) -> bool {
        self.stashed() != 0 || self.owned().queue.needs_poll()
    }

    /// Recycles member slots released since (their stashes cleared here, on the
    /// driving thread, which alone writes to them).
    fn maintain(&mut self) {
        let shared = &*self.shared;
        if !shared.any_released.swap(false, Ordering::AcqRel) {
            return;
        }
        let released = std::mem::take(&mut *lock(&shared.released));
        for &m in &released {
            // SAFETY: driving thread; slot `m` is released, so no member and no live
            // tag names it, and it is not on the free list yet.
            let stash = unsafe { &mut *shared.members[m as usize].stash.get() };
            stash.head = 0;
            stash.len = 0;
        }
        lock(&shared.free).extend(released);
    }
}

/// Which channels share queue pairs: the channels of one [`PollGroup`]
/// (crate::PollGroup), or one channel alone. Maps a controller (instance) to the
/// group's queue pair on it while some member uses it.
pub struct QueueGroup {
    /// Members share (a poll group): each member's stash is sized to its most I/O in
    /// flight. A channel alone is the only member of each of its queues (one path per
    /// controller), so its members need no stash.
    shared: bool,
    queues: Mutex<Vec<(u64, Weak<dyn Any + Send + Sync>)>>,
    created: AtomicU64,
}

impl fmt::Debug for QueueGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueGroup")
            .field("shared", &self.shared)
            .field("queue_pairs", &self.queue_pairs())
            .finish()
    }
}

impl QueueGroup {
    /// The group of a channel made alone.
    pub(crate) fn alone() -> Arc<Self> {
        Arc::new(QueueGroup {
            shared: false,
            queues: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
        })
    }

    /// A poll group's.
    pub(crate) fn shared() -> Arc<Self> {
        Arc::new(QueueGroup {
            shared: true,
            ..Arc::into_inner(Self::alone()).expect("just made")
        })
    }

    /// A member of this group's queue on `key` (a controller instance), made with
    /// `make` if the group has none; `depth` is the most I/O the member will have in
    /// flight on it. Set-up work, on any thread.
    pub fn join<Q: PathQueue + 'static>(
        &self,
        key: u64,
        depth: usize,
        make: impl FnOnce() -> Result<Q>,
    ) -> Result<QueueShare<Q>> {
        let mut g = lock(&self.queues);
        g.retain(|(_, w)| w.strong_count() > 0);
        let found = g
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
            .and_then(|a| a.downcast::<SharedQueue<Q>>().ok());
        let queue = match found {
            Some(q) => q,
            None => {
                let q = Arc::new(SharedQueue::new(make()?));
                let weak: Weak<dyn Any + Send + Sync> =
                    Arc::downgrade(&(q.clone() as Arc<dyn Any + Send + Sync>));
                g.push((key, weak));
                self.created.fetch_add(1, Ordering::Relaxed);
                q
            }
        };
        drop(g);
        queue.join(if self.shared { depth } else { 0 })
    }

    /// Queue pairs the group holds now (each dropped when its last member goes).
    pub fn queue_pairs(&self) -> usize {
        lock(&self.queues)
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .count()
    }

    /// Queue pairs the group made so far.
    pub fn queue_pairs_made(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }
}
