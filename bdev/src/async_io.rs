// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Block I/O as futures, for Rust servers built on a thread-per-core runtime.
//!
//! An [`AsyncChannel`] wraps one core's [`Channel`]. [`read`](AsyncChannel::read),
//! [`write`](AsyncChannel::write), [`flush`](AsyncChannel::flush),
//! [`write_zeroes`](AsyncChannel::write_zeroes) and [`unmap`](AsyncChannel::unmap)
//! return futures; the executor's loop calls [`AsyncChannel::poll`] between polls of
//! its tasks, and that poll is what completes them: it delivers the channel's
//! completions, each into the future that submitted it, and wakes that future's
//! task. Nothing here spins, blocks or allocates per I/O.
//!
//! The shape, and why:
//! - **Everything stays on one thread.** The channel is behind a `RefCell` and the
//!   futures borrow it, so neither the futures nor a shared reference to the channel
//!   can leave the thread: a single-threaded executor per core is the intended user
//!   (`!Send` futures are what such executors take).
//! - **The future owns its buffer** (any [`IoBuffer`]: an [`IoBuf`] from
//!   [`BlockLayer::alloc_buffer`](crate::BlockLayer::alloc_buffer)) and hands it
//!   back with the result. A future dropped while its I/O is in flight cannot stop
//!   the device from reading or writing that memory, and its drop must not wait: the
//!   buffer moves into the channel's slot for that I/O, which keeps it until the
//!   completion arrives and then drops it (at the end of that [`AsyncChannel::poll`]).
//!   A borrowed buffer could be freed and reused while the device still writes it.
//! - **No allocation per I/O.** The channel's slots (one per I/O in flight) and its
//!   list of tasks to wake are made when it is created. A future that has to wait
//!   waits in a list threaded through the futures themselves: a future is pinned
//!   once polled, so its address is stable until it is dropped, and its drop takes
//!   it off the list.
//! - **Busy means wait, in order.** A future that finds the channel without room
//!   (the channel would refuse with `Busy`) or every slot in use does not spin and
//!   does not fail: it joins the channel's wait list, and a later
//!   [`AsyncChannel::poll`], after completions have made room, submits it on its
//!   behalf, oldest first, the rule [`Channel::notify_when_room`] follows (run on the
//!   polling thread, in registration order, only while there is room). The future is
//!   woken once, when its I/O completes. While any future waits, new ones queue
//!   behind it.
//! - **Every I/O completes exactly once.** Each slot carries a generation in the
//!   I/O's context word; a completion that matches no slot in flight is counted in
//!   [`AsyncStats::stray_completions`] and otherwise ignored (never seen when the
//!   channel keeps its exactly-once promise).
//!
//! Futures are lazy: nothing is submitted until the first poll. A future's output is
//! the [`Status`] the I/O completed with (after the channel's failover and retries),
//! or the [`Error`] its submit was refused with (an invalid request, a stopped
//! channel): refused I/O never reached a device.
//!
//! ```no_run
//! # fn main() -> nvme_bdev::Result<()> {
//! use nvme_bdev::{AsyncChannel, BlockLayer, LayerOptions};
//! # let connector = nvme_bdev::vfio_connector("0000:01:00.0");
//! let layer = BlockLayer::new(LayerOptions::default())?;
//! layer.attach("c0", connector)?;
//! let ch = AsyncChannel::new(layer.open("c0n1")?.channel()?, 64);
//! let buf = layer.alloc_buffer(4096)?;
//! let io = async {
//!     let (buf, result) = ch.read(0, 8, buf).await; // 8 blocks of 512 bytes
//!     assert!(result?.is_success());
//!     Ok::<_, nvme_bdev::Error>(buf)
//! };
//! // An executor polls `io` and, between its polls, `ch.poll()` (see the example
//! // `async_io.rs` for a minimal one).
//! # drop(io);
//! # Ok(())
//! # }
//! ```

use crate::layer::Channel;
use crate::{BdevCompletion, BdevIo, Error, IoBuf, Result};
use nvme_driver::{DmaSlice, Status};
use std::cell::{Cell, Ref, RefCell};
use std::fmt;
use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::ptr;
use std::task::{Context, Poll, Waker};

/// Memory an I/O future owns while its I/O is in flight, and hands back after.
///
/// # Safety
/// [`dma`](Self::dma) must describe memory that every path of the channel's bdev
/// reaches at that IOVA (for a multipath bdev: mapped into every controller of the
/// layer), that stays mapped and is not reused for anything else while the value
/// lives, and that does not move when the value moves. The I/O uses it from the
/// first byte, as much of it as the request's blocks take.
pub unsafe trait IoBuffer {
    /// The memory, for the request.
    fn dma(&self) -> DmaSlice;
}

// SAFETY: an `IoBuf` is pool memory mapped into every controller of its layer (and
// those attached later) until it is dropped; moving the `IoBuf` moves a handle, not
// the memory.
unsafe impl IoBuffer for IoBuf {
    fn dma(&self) -> DmaSlice {
        self.whole()
    }
}

/// What an [`AsyncChannel`] did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsyncStats {
    /// I/Os handed to the channel.
    pub submitted: u64,
    /// Completions delivered to their slot (each I/O once).
    pub completed: u64,
    /// Futures that waited for room (the channel busy, or every slot in use).
    pub waited: u64,
    /// Futures dropped while their I/O was in flight (the I/O still completed into
    /// its slot, which then dropped the buffer).
    pub abandoned: u64,
    /// Submits refused with an error other than busy.
    pub refused: u64,
    /// Completions that matched no slot in flight: 0 unless something completed an
    /// I/O twice or made one up.
    pub stray_completions: u64,
}

/// Where a future is. `Copy`, so that it lives in a `Cell` the channel can set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not polled yet: nothing submitted.
    Idle,
    /// On the channel's wait list.
    Waiting,
    /// Submitted; the completion goes to this slot.
    InFlight(u32),
    /// Completed with this status; the slot is free again.
    Done(Status),
    /// Refused; the error is in `Op::error`.
    Refused,
    /// Output handed out.
    Finished,
}

/// The part of a future the channel reaches through a pointer: the wait list's
/// links, the slot's back pointer. Only `Cell`s, so the channel and the future both
/// reach it through shared references.
struct Op {
    io: Cell<BdevIo>,
    state: Cell<State>,
    waker: Cell<Option<Waker>>,
    error: Cell<Option<Error>>,
    prev: Cell<*const Op>,
    next: Cell<*const Op>,
    /// The channel keeps pointers to an `Op` while its future is waiting or in
    /// flight: it must not move once polled.
    _pinned: PhantomPinned,
}

/// One I/O in flight.
struct Slot<B> {
    /// In the I/O's context word with the index; moved when the slot is freed.
    generation: u32,
    in_flight: bool,
    /// The future waiting for this I/O; null once that future was dropped.
    op: *const Op,
    /// The buffer of a dropped future, kept until its I/O completes.
    buf: Option<B>,
}

/// The slots and what their completions leave to do once the channel's borrows
/// are released.
struct Slots<B> {
    slots: Vec<Slot<B>>,
    /// Free slot indexes (a stack).
    free: Vec<u32>,
    /// Tasks to wake after the channel's poll (capacity: one per slot).
    wake: Vec<Waker>,
    /// Buffers of dropped futures whose I/O completed, dropped after the poll.
    orphans: Vec<B>,
}

/// The futures waiting for room, oldest first: a list threaded through their `Op`s.
struct WaitList {
    head: Cell<*const Op>,
    tail: Cell<*const Op>,
    len: Cell<usize>,
}

/// A channel whose I/O are futures; see the [module documentation](self).
///
/// The executor calls [`poll`](Self::poll) in its loop: that delivers completions
/// and wakes the tasks they belong to. Before dropping the channel, poll until
/// [`in_flight`](Self::in_flight) is 0: a channel dropped with I/O in flight leaks
/// those buffers rather than free memory a device may still write.
pub struct AsyncChannel<B: IoBuffer = IoBuf> {
    ch: RefCell<Channel>,
    slots: RefCell<Slots<B>>,
    waiting: WaitList,
    stats: Cell<AsyncStats>,
}

impl<B: IoBuffer> fmt::Debug for AsyncChannel<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncChannel")
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("stats", &self.stats.get())
            .finish()
    }
}

// SAFETY: the raw pointers an `AsyncChannel` holds (wait list, slots) point into
// futures that borrow it; while any exists the channel cannot be moved to another
// thread. Once none is borrowing it, the only pointers left are to futures that were
// leaked without being dropped (their memory is never freed, and nothing else
// touches it), and the buffers it keeps are `B: Send`. `Channel` is `Send`.
unsafe impl<B: IoBuffer + Send> Send for AsyncChannel<B> {}

// The `Send` above relies on the channel being `Send`: checked here.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Channel>();
};

impl<B: IoBuffer> AsyncChannel<B> {
    /// Wraps `channel`, with `slots` I/Os in flight at most (more futures wait, in
    /// order). The channel's own depth is the most that is useful: a multipath
    /// channel's [`MpathOptions::channel_depth`](crate::MpathOptions::channel_depth),
    /// a namespace bdev's queue entries minus one plus its pending ring. The only
    /// allocation: the slots and the wake list.
    pub fn new(channel: Channel, slots: usize) -> Self {
        let slots = slots.clamp(1, u32::MAX as usize);
        AsyncChannel {
            ch: RefCell::new(channel),
            slots: RefCell::new(Slots {
                slots: (0..slots)
                    .map(|_| Slot {
                        generation: 0,
                        in_flight: false,
                        op: ptr::null(),
                        buf: None,
                    })
                    .collect(),
                free: (0..slots as u32).rev().collect(),
                wake: Vec::with_capacity(slots),
                orphans: Vec::with_capacity(slots),
            }),
            waiting: WaitList {
                head: Cell::new(ptr::null()),
                tail: Cell::new(ptr::null()),
                len: Cell::new(0),
            },
            stats: Cell::new(AsyncStats::default()),
        }
    }

    /// Reads `nlb` blocks at `slba` into `buf`; the future gives `buf` back with the
    /// result.
    pub fn read(&self, slba: u64, nlb: u32, buf: B) -> IoFuture<'_, B> {
        IoFuture::new(self, BdevIo::read(slba, nlb, buf.dma(), 0), buf)
    }

    /// Writes `nlb` blocks at `slba` from `buf`; the future gives `buf` back with the
    /// result.
    pub fn write(&self, slba: u64, nlb: u32, buf: B) -> IoFuture<'_, B> {
        IoFuture::new(self, BdevIo::write(slba, nlb, buf.dma(), 0), buf)
    }

    /// Flushes the volatile write cache.
    pub fn flush(&self) -> CmdFuture<'_, B> {
        CmdFuture::new(self, BdevIo::flush(0))
    }

    /// Writes zeroes to `nlb` blocks at `slba`.
    pub fn write_zeroes(&self, slba: u64, nlb: u32) -> CmdFuture<'_, B> {
        CmdFuture::new(self, BdevIo::write_zeroes(slba, nlb, 0))
    }

    /// Unmaps (deallocates) `nlb` blocks at `slba`.
    pub fn unmap(&self, slba: u64, nlb: u32) -> CmdFuture<'_, B> {
        CmdFuture::new(self, BdevIo::unmap(slba, nlb, 0))
    }

    /// Polls the channel: delivers its completions into their futures, submits
    /// waiting futures while there is room, then wakes the tasks whose I/O completed
    /// (after every borrow of the channel is released, so a waker may do anything).
    /// Returns the completions delivered. Call it from the executor's loop, on the
    /// thread that polls the futures.
    pub fn poll(&self) -> usize {
        let n = {
            let mut ch = self.ch.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            let mut stats = self.stats.get();
            let n = ch.poll(&mut |c| slots.complete(c, &mut stats));
            if self.waiting.len.get() > 0 {
                self.submit_waiting(&mut ch, &mut slots, &mut stats);
            }
            self.stats.set(stats);
            n
        };
        self.after_poll();
        n
    }

    /// I/Os submitted and not completed (also those of dropped futures).
    pub fn in_flight(&self) -> usize {
        let s = self.slots.borrow();
        s.slots.len() - s.free.len()
    }

    /// Futures waiting for room.
    pub fn waiting(&self) -> usize {
        self.waiting.len.get()
    }

    /// Counters so far.
    pub fn stats(&self) -> AsyncStats {
        self.stats.get()
    }

    /// The channel, to read its counters (do not hold it across an `await`).
    pub fn channel(&self) -> Ref<'_, Channel> {
        self.ch.borrow()
    }

    /// Stop mode of a multipath channel ([`Channel::shutdown`]; a namespace bdev's
    /// channel has none): I/O waiting inside the channel for a path or a retry fails
    /// at its next poll, I/O in flight completes as usual, and futures waiting here
    /// are refused with [`Error::Stopped`] by the next [`poll`](Self::poll). Poll
    /// until [`in_flight`](Self::in_flight) and [`waiting`](Self::waiting) are 0.
    pub fn shutdown(&self) {
        self.ch.borrow_mut().shutdown();
    }

    /// Submits `op`'s request in a free slot, or says why not: `Ok(false)` when the
    /// channel has no room or no slot is free (wait), `Err` when it was refused.
    fn try_submit(
        &self,
        op: &Op,
        ch: &mut Channel,
        slots: &mut Slots<B>,
        stats: &mut AsyncStats,
    ) -> Result<bool> {
        if !ch.has_room() {
            return Ok(false);
        }
        let Some(index) = slots.free.pop() else {
            return Ok(false);
        };
        let slot = &mut slots.slots[index as usize];
        let mut io = op.io.get();
        io.ctx = (u64::from(slot.generation) << 32) | u64::from(index);
        match ch.submit(io) {
            Ok(()) => {
                slot.in_flight = true;
                slot.op = op;
                op.state.set(State::InFlight(index));
                stats.submitted += 1;
                Ok(true)
            }
            Err((e, _)) => {
                slots.free.push(index);
                match e {
                    // `has_room` said yes; a queue pair's ring may still be full.
                    Error::Busy(_) | Error::Driver(nvme_driver::Error::Busy(_)) => Ok(false),
                    e => {
                        stats.refused += 1;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Submits waiting futures, oldest first, while the channel takes them.
    fn submit_waiting(&self, ch: &mut Channel, slots: &mut Slots<B>, stats: &mut AsyncStats) {
        loop {
            let head = self.waiting.head.get();
            if head.is_null() {
                return;
            }
            // SAFETY: an `Op` on the wait list belongs to a live, pinned future: the
            // future's drop takes it off the list before its memory goes, and only
            // this thread touches the list (the futures borrow this `!Sync` channel).
            let op = unsafe { &*head };
            match self.try_submit(op, ch, slots, stats) {
                Ok(false) => return,
                Ok(true) => self.waiting.unlink(op),
                Err(e) => {
                    self.waiting.unlink(op);
                    op.error.set(Some(e));
                    op.state.set(State::Refused);
                    if let Some(w) = op.waker.take() {
                        slots.wake.push(w);
                    }
                }
            }
        }
    }

    /// Wakes the tasks and drops the buffers the last poll left, with no borrow of
    /// the channel held.
    fn after_poll(&self) {
        loop {
            // The borrow ends with this statement, before the waker runs.
            let next = self.slots.borrow_mut().wake.pop();
            match next {
                Some(w) => w.wake(),
                None => break,
            }
        }
        loop {
            let next = self.slots.borrow_mut().orphans.pop();
            match next {
                Some(b) => drop(b),
                None => break,
            }
        }
    }

    /// The first poll of a future: submit at once if nothing waits and there is
    /// room, else join the wait list.
    fn start(&self, op: &Op) -> Poll<Result<Status>> {
        let mut ch = self.ch.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        let mut stats = self.stats.get();
        let started = if self.waiting.len.get() == 0 {
            self.try_submit(op, &mut ch, &mut slots, &mut stats)
        } else {
            Ok(false)
        };
        let poll = match started {
            Ok(true) => Poll::Pending,
            Ok(false) => {
                op.state.set(State::Waiting);
                self.waiting.push_back(op);
                stats.waited += 1;
                Poll::Pending
            }
            Err(e) => {
                op.state.set(State::Finished);
                Poll::Ready(Err(e))
            }
        };
        self.stats.set(stats);
        poll
    }

    /// A future dropped before its output was taken.
    fn cancel(&self, op: &Op, buf: Option<B>) {
        match op.state.get() {
            State::Waiting => self.waiting.unlink(op),
            State::InFlight(index) => {
                let mut slots = self.slots.borrow_mut();
                let slot = &mut slots.slots[index as usize];
                slot.op = ptr::null();
                slot.buf = buf;
                let mut stats = self.stats.get();
                stats.abandoned += 1;
                self.stats.set(stats);
            }
            State::Idle | State::Done(_) | State::Refused | State::Finished => {}
        }
    }
}

impl<B: IoBuffer> Slots<B> {
    /// One completion from the channel: into its future, or, for a dropped future,
    /// its buffer set aside to drop after the poll.
    fn complete(&mut self, c: BdevCompletion, stats: &mut AsyncStats) {
        let index = c.ctx as u32 as usize;
        let generation = (c.ctx >> 32) as u32;
        let Some(slot) = self
            .slots
            .get_mut(index)
            .filter(|s| s.in_flight && s.generation == generation)
        else {
            stats.stray_completions += 1;
            return;
        };
        slot.in_flight = false;
        slot.generation = slot.generation.wrapping_add(1);
        let op = std::mem::replace(&mut slot.op, ptr::null());
        if op.is_null() {
            if let Some(b) = slot.buf.take() {
                self.orphans.push(b);
            }
        } else {
            // SAFETY: a slot's `op` belongs to a live, pinned future: its drop nulls
            // the pointer (under this same `RefCell`) before its memory goes.
            let op = unsafe { &*op };
            op.state.set(State::Done(c.status));
            if let Some(w) = op.waker.take() {
                self.wake.push(w);
            }
        }
        self.free.push(index as u32);
        stats.completed += 1;
    }
}

impl WaitList {
    fn push_back(&self, op: &Op) {
        let tail = self.tail.get();
        op.prev.set(tail);
        op.next.set(ptr::null());
        if tail.is_null() {
            self.head.set(op);
        } else {
            // SAFETY: `tail` is on the list, so its future is alive (see `unlink`).
            unsafe { &*tail }.next.set(op);
        }
        self.tail.set(op);
        self.len.set(self.len.get() + 1);
    }

    /// Takes `op`, which is on the list, off it.
    fn unlink(&self, op: &Op) {
        let (prev, next) = (op.prev.get(), op.next.get());
        if prev.is_null() {
            self.head.set(next);
        } else {
            // SAFETY: the neighbours of an `Op` on the list are on it too, and an
            // `Op` leaves the list (here) before its future's memory goes.
            unsafe { &*prev }.next.set(next);
        }
        if next.is_null() {
            self.tail.set(prev);
        } else {
            // SAFETY: as above.
            unsafe { &*next }.prev.set(prev);
        }
        op.prev.set(ptr::null());
        op.next.set(ptr::null());
        self.len.set(self.len.get() - 1);
    }
}

impl Op {
    fn new(io: BdevIo) -> Self {
        Op {
            io: Cell::new(io),
            state: Cell::new(State::Idle),
            waker: Cell::new(None),
            error: Cell::new(None),
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            _pinned: PhantomPinned,
        }
    }

    /// Keeps the task to wake up to date (a task may be polled with another waker).
    fn set_waker(&self, cx: &Context<'_>) {
        match self.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(cx.waker().clone())),
        }
    }

    /// The shared part of both futures' `poll`.
    fn poll<B: IoBuffer>(&self, ch: &AsyncChannel<B>, cx: &Context<'_>) -> Poll<Result<Status>> {
        match self.state.get() {
            State::Idle => {
                // Before submitting: a completion may come in the channel's next poll.
                self.set_waker(cx);
                ch.start(self)
            }
            State::Waiting | State::InFlight(_) => {
                self.set_waker(cx);
                Poll::Pending
            }
            State::Done(status) => {
                self.state.set(State::Finished);
                Poll::Ready(Ok(status))
            }
            State::Refused => {
                self.state.set(State::Finished);
                let e = self.error.take();
                Poll::Ready(Err(e.expect(
                    "a refused future keeps its error until its output is taken",
                )))
            }
            State::Finished => panic!("an I/O future was polled after it completed"),
        }
    }
}

/// A read or write: resolves to the buffer and the result. See [`AsyncChannel`].
#[must_use = "futures do nothing unless polled"]
pub struct IoFuture<'a, B: IoBuffer = IoBuf> {
    ch: &'a AsyncChannel<B>,
    op: Op,
    buf: Cell<Option<B>>,
}

impl<'a, B: IoBuffer> IoFuture<'a, B> {
    fn new(ch: &'a AsyncChannel<B>, io: BdevIo, buf: B) -> Self {
        IoFuture {
            ch,
            op: Op::new(io),
            buf: Cell::new(Some(buf)),
        }
    }
}

impl<B: IoBuffer> Future for IoFuture<'_, B> {
    type Output = (B, Result<Status>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Shared access only: the channel holds pointers to `op`, which stays put
        // because `self` is pinned.
        let this = self.into_ref().get_ref();
        this.op.poll(this.ch, cx).map(|result| {
            let buf = this
                .buf
                .take()
                .expect("the buffer is the future's until its output is taken");
            (buf, result)
        })
    }
}

impl<B: IoBuffer> Drop for IoFuture<'_, B> {
    fn drop(&mut self) {
        self.ch.cancel(&self.op, self.buf.take());
    }
}

impl<B: IoBuffer> fmt::Debug for IoFuture<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoFuture")
            .field("io", &self.op.io.get())
            .field("state", &self.op.state.get())
            .finish()
    }
}

/// A flush, write zeroes or unmap: resolves to the result. See [`AsyncChannel`].
#[must_use = "futures do nothing unless polled"]
pub struct CmdFuture<'a, B: IoBuffer = IoBuf> {
    ch: &'a AsyncChannel<B>,
    op: Op,
}

impl<'a, B: IoBuffer> CmdFuture<'a, B> {
    fn new(ch: &'a AsyncChannel<B>, io: BdevIo) -> Self {
        CmdFuture {
            ch,
            op: Op::new(io),
        }
    }
}

impl<B: IoBuffer> Future for CmdFuture<'_, B> {
    type Output = Result<Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.into_ref().get_ref();
        this.op.poll(this.ch, cx)
    }
}

impl<B: IoBuffer> Drop for CmdFuture<'_, B> {
    fn drop(&mut self) {
        self.ch.cancel(&self.op, None);
    }
}

impl<B: IoBuffer> fmt::Debug for CmdFuture<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmdFuture")
            .field("io", &self.op.io.get())
            .field("state", &self.op.state.get())
            .finish()
    }
}

impl<B: IoBuffer> Drop for AsyncChannel<B> {
    fn drop(&mut self) {
        // I/O still in flight may yet be written by the device: leak its buffers
        // rather than give the memory back for reuse.
        for slot in &mut self.slots.get_mut().slots {
            if slot.in_flight {
                if let Some(b) = slot.buf.take() {
                    std::mem::forget(b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Op {
        Op::new(BdevIo::flush(0))
    }

    /// The list's order, head to tail, walked both ways.
    fn order(list: &WaitList, ops: &[&Op]) -> Vec<usize> {
        let index = |p: *const Op| ops.iter().position(|o| ptr::eq(*o, p)).unwrap();
        let mut forward = Vec::new();
        let mut p = list.head.get();
        while !p.is_null() {
            forward.push(index(p));
            // SAFETY: every `Op` on the list is one of `ops`, alive for the test.
            p = unsafe { &*p }.next.get();
        }
        let mut backward = Vec::new();
        let mut p = list.tail.get();
        while !p.is_null() {
            backward.push(index(p));
            // SAFETY: as above.
            p = unsafe { &*p }.prev.get();
        }
        backward.reverse();
        assert_eq!(forward, backward, "the links disagree");
        assert_eq!(forward.len(), list.len.get());
        forward
    }

    #[test]
    fn the_wait_list_keeps_order_and_closes_over_any_op_taken_off() {
        let list = WaitList {
            head: Cell::new(ptr::null()),
            tail: Cell::new(ptr::null()),
            len: Cell::new(0),
        };
        let (a, b, c, d) = (op(), op(), op(), op());
        let ops = [&a, &b, &c, &d];
        for o in ops {
            list.push_back(o);
        }
        assert_eq!(order(&list, &ops), [0, 1, 2, 3]);
        list.unlink(&b); // middle
        assert_eq!(order(&list, &ops), [0, 2, 3]);
        list.unlink(&a); // head
        assert_eq!(order(&list, &ops), [2, 3]);
        list.unlink(&d); // tail
        assert_eq!(order(&list, &ops), [2]);
        list.push_back(&a);
        assert_eq!(order(&list, &ops), [2, 0]);
        list.unlink(&c);
        list.unlink(&a); // the last one
        assert_eq!(order(&list, &ops), Vec::<usize>::new());
        assert!(list.head.get().is_null() && list.tail.get().is_null());
    }
}
