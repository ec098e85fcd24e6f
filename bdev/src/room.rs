// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Waiting for room on a channel (SPDK's `spdk_bdev_queue_io_wait`).
//!
//! A submit that finds the channel full hands the I/O back with
//! [`Error::Busy`] and never waits. The submitter can then
//! register a [`RoomWaiter`] with [`Channel::notify_when_room`]: the channel's
//! [`poll`](Channel::poll), on the submitting core, runs it once completions have made
//! room, with the channel itself so that it can resubmit there and then. Waiters run
//! at most once per registration, in registration order, and only while there is room:
//! when one waiter's resubmits fill the channel again, the rest wait for the next poll
//! that frees room.
//!
//! Nothing is allocated per registration: each channel keeps a list of
//! [`ROOM_WAITERS_MAX`] entries made when it is opened; a registration beyond that is
//! refused with [`Error::Exhausted`]. A waiter is a plain
//! function and a context word (the shape a C function pointer with a `void *` takes
//! later); what the word names (an index into the embedder's own table of refused
//! I/O, say) is the embedder's.

use crate::layer::Channel;
use crate::{Error, Result};
use std::collections::VecDeque;

/// Waiters one channel holds at once.
pub const ROOM_WAITERS_MAX: usize = 64;

/// What to run when a busy channel has room again: `func(channel, ctx)`, on the
/// thread that polls the channel, from inside its poll.
#[derive(Clone, Copy, Debug)]
pub struct RoomWaiter {
    /// Called once with the channel (to resubmit on) and `ctx`.
    pub func: fn(&mut Channel, u64),
    /// The caller's word, handed back to `func`.
    pub ctx: u64,
}

/// A channel's registered waiters, oldest first; never grows past its capacity.
#[derive(Debug)]
pub(crate) struct RoomWaiters {
    list: VecDeque<RoomWaiter>,
}

impl RoomWaiters {
    /// An empty list with room for [`ROOM_WAITERS_MAX`] waiters (the only allocation).
    pub(crate) fn new() -> Self {
        RoomWaiters {
            list: VecDeque::with_capacity(ROOM_WAITERS_MAX),
        }
    }

    /// True when some waiter is registered: the one test a poll makes.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        !self.list.is_empty()
    }

    /// Waiters registered.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Registers `w` after the others, or refuses when the list is full.
    pub(crate) fn push(&mut self, w: RoomWaiter) -> Result<()> {
        if self.list.len() >= ROOM_WAITERS_MAX {
            return Err(Error::Exhausted(format!(
                "room waiters: {ROOM_WAITERS_MAX} are registered on this channel already \
                 (ROOM_WAITERS_MAX); poll the channel to run them first"
            )));
        }
        self.list.push_back(w);
        debug_assert!(self.list.capacity() >= ROOM_WAITERS_MAX, "never grows");
        Ok(())
    }

    /// The oldest waiter, taken off the list.
    pub(crate) fn pop(&mut self) -> Option<RoomWaiter> {
        self.list.pop_front()
    }
}

impl Channel {
    /// Asks to be called back on this channel's polling thread when it has room again,
    /// typically after a submit was refused with [`Error::Busy`]. `waiter.func` runs
    /// once, from a later [`poll`](Self::poll) that finds room (a slot the next submit
    /// can take), with this channel and `waiter.ctx`; waiters run in registration
    /// order, and a waiter registered while the channel has room runs at the next
    /// poll. A waiter registered from inside another waiter runs at a later poll.
    /// Waiters still registered when the channel is dropped are dropped unrun.
    ///
    /// Never allocates: refused with [`Error::Exhausted`] when [`ROOM_WAITERS_MAX`]
    /// waiters are registered already.
    pub fn notify_when_room(&mut self, waiter: RoomWaiter) -> Result<()> {
        self.room_list().push(waiter)
    }

    /// Waiters registered with [`notify_when_room`](Self::notify_when_room) and not
    /// run yet.
    pub fn room_waiters(&self) -> usize {
        match self {
            Channel::Mpath(c) => c.room_waiters().len(),
            Channel::Nvme(c) => c.room_waiters().len(),
        }
    }

    /// True when a submit now would not be refused as [`Error::Busy`].
    pub fn has_room(&self) -> bool {
        match self {
            Channel::Mpath(c) => c.has_room(),
            Channel::Nvme(c) => c.has_room(),
        }
    }

    fn room_list(&mut self) -> &mut RoomWaiters {
        match self {
            Channel::Mpath(c) => c.room_waiters_mut(),
            Channel::Nvme(c) => c.room_waiters_mut(),
        }
    }

    /// Runs the waiters registered before this call while there is room, oldest
    /// first; called by [`poll`](Self::poll) when some are registered. Bounded by the
    /// number registered at the start: one that registers again runs at a later poll.
    #[cold]
    #[inline(never)]
    pub(crate) fn run_room_waiters(&mut self) {
        let mut budget = self.room_list().len();
        while budget > 0 && self.has_room() {
            budget -= 1;
            let Some(w) = self.room_list().pop() else {
                break;
            };
            (w.func)(self, w.ctx);
        }
    }
}
