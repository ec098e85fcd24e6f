// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Channels and I/O: a channel per thread and bdev, read, write, write zeroes, unmap
//! and flush with a completion callback and its argument, poll, and waiting for room.
//!
//! The block layer's channel carries a 64-bit context per I/O; here it is the index of
//! a slot that holds the C callback and its argument. Slots, their free list, the list
//! of completions of one poll and the room waiters are all made with the channel, so
//! the data path allocates nothing and takes no lock.
//!
//! Completion callbacks run from nvme_channel_poll() after the block layer's poll has
//! returned (its completions are collected first), so a callback may submit on the
//! same channel, as SPDK's callbacks do. It may not poll or close that channel.

use crate::bdev::{bdev_state, nvme_bdev};
use crate::dma::{DmaCache, DmaTable};
use crate::error::{bdev_fail, call, fail, Fail};
use crate::handle;
use ::nvme_bdev::{BdevIo, Channel, Error, IoOp, RoomWaiter, Status, ROOM_WAITERS_MAX};
use nvme_driver::DmaSlice;
use std::cell::{Cell, UnsafeCell};
use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Called once per I/O with its argument, whether it succeeded, and the NVMe status
/// (Status Code Type in bits 10:8, Status Code in 7:0, Do Not Retry in bit 14; 0 on
/// success), after failover and retries.
pub type nvme_bdev_io_cb =
    Option<unsafe extern "C" fn(cb_arg: *mut c_void, success: bool, status: u16)>;

/// Called once when a channel that refused an I/O with -ENOMEM has room again.
pub type nvme_bdev_io_wait_cb = Option<unsafe extern "C" fn(cb_arg: *mut c_void)>;

type IoCb = unsafe extern "C" fn(*mut c_void, bool, u16);
type WaitCb = unsafe extern "C" fn(*mut c_void);

/// A channel (opaque): one thread's way to a bdev. Use it from one thread at a time.
// A handle points at a `ChannelShell`; this type only names it for C.
#[derive(Debug)]
pub struct nvme_channel {
    _opaque: [u8; 0],
}

/// What a channel handle points at: its magic first (`handle::check`), then the
/// state, taken away on close (the shell stays).
#[repr(C)]
struct ChannelShell {
    magic: AtomicU32,
    state: UnsafeCell<Option<Box<ChannelState>>>,
}

impl std::fmt::Debug for ChannelShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.magic.load(Ordering::Relaxed) == handle::CHANNEL;
        f.debug_struct("ChannelShell").field("open", &open).finish()
    }
}

#[derive(Clone, Copy)]
struct Slot {
    cb: Option<IoCb>,
    arg: *mut c_void,
}

/// One registered room waiter; the block layer's waiter points at it.
struct Waiter {
    cb: Cell<Option<WaitCb>>,
    arg: Cell<*mut c_void>,
    /// Set by the block layer's waiter (inside its poll): there is room.
    ready: Cell<bool>,
}

struct ChannelState {
    ch: Channel,
    dma: Arc<DmaTable>,
    /// The last DMA buffer an I/O of this channel used.
    dma_cache: DmaCache,
    block_shift: u32,
    /// The bdev's size when last looked at: a range past it is checked again against
    /// the bdev's current size (it may have grown) before it is refused.
    num_blocks: u64,
    bdev: ::nvme_bdev::Bdev,
    slots: Box<[Slot]>,
    /// Free slot indices (a stack).
    free: Vec<u32>,
    /// Completions of the current poll: (slot, status).
    done: Vec<(u64, Status)>,
    /// ROOM_WAITERS_MAX waiters, from `Box::into_raw`: the block layer's waiters hold
    /// pointers into it while `ch` holds them.
    waiters: NonNull<Waiter>,
    /// Registered waiters, oldest first (indices into `waiters`).
    order: [u8; ROOM_WAITERS_MAX],
    order_head: usize,
    order_len: usize,
    in_poll: bool,
    /// Completions that named no I/O in flight (never expected: counted, not run).
    strays: u64,
    channels_open: Arc<AtomicUsize>,
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` of a boxed slice of ROOM_WAITERS_MAX in
        // `nvme_channel_open`, freed only here. The block layer's waiters that point
        // into it are dropped unrun with `ch` (the channel never runs a waiter while
        // being dropped).
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.waiters.as_ptr(),
                ROOM_WAITERS_MAX,
            ))
        });
    }
}

impl ChannelState {
    fn waiter(&self, i: usize) -> &Waiter {
        debug_assert!(i < ROOM_WAITERS_MAX);
        // SAFETY: `waiters` holds ROOM_WAITERS_MAX live entries (see Drop), `i` is below.
        unsafe { &*self.waiters.as_ptr().add(i) }
    }
}

/// The block layer's room waiter: marks the C waiter `ctx` points at ready. Runs
/// inside the block layer's poll; the C callback runs after it returned.
fn room_ready(_ch: &mut Channel, ctx: u64) {
    // SAFETY: `ctx` is the address of a `Waiter` of this channel's table, which lives
    // as long as the channel (ChannelState's Drop); only `Cell`s are touched.
    let w = unsafe { &*(ctx as usize as *const Waiter) };
    w.ready.set(true);
}

/// The channel state behind `p`, checked.
///
/// # Safety
/// `p` is NULL or a handle from nvme_channel_open(), used by one thread at a time.
unsafe fn chan(p: *const nvme_channel, what: &str) -> Result<*mut ChannelState, Fail> {
    let p = p.cast::<ChannelShell>();
    // SAFETY: forwarded; a channel handle points at a `ChannelShell`, magic first.
    unsafe { handle::check(p, handle::CHANNEL, what)? };
    // SAFETY: checked: a live channel shell, used by this thread alone.
    match unsafe { &mut *(*p).state.get() } {
        Some(b) => Ok(&mut **b),
        None => Err(fail!(libc::EBADF, "{what}: the channel was closed already")),
    }
}

/// Opens a channel to `bdev` for the calling thread and stores it in `*channel`
/// (SPDK's spdk_bdev_get_io_channel). Set-up work: it creates queue pairs. Use the
/// channel from one thread at a time. Returns 0, or -EINVAL (NULL), -EBADF, -ENOSPC
/// (reader slots of the layer used up), -EIO.
///
/// # Safety
/// `bdev` is NULL or a bdev handle; `channel` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_channel_open(
    bdev: *mut nvme_bdev,
    channel: *mut *mut nvme_channel,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a bdev handle or NULL.
        let shell = unsafe { bdev_state(bdev, "nvme_channel_open: bdev") }?;
        if channel.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_channel_open: channel is NULL"));
        }
        let state = shell.with("nvme_channel_open: bdev", |b| {
            let ch = b
                .bdev
                .channel()
                .map_err(|e| bdev_fail("nvme_channel_open", &e))?;
            let n = b.channel_slots;
            let waiters: Box<[Waiter]> = (0..ROOM_WAITERS_MAX)
                .map(|_| Waiter {
                    cb: Cell::new(None),
                    arg: Cell::new(std::ptr::null_mut()),
                    ready: Cell::new(false),
                })
                .collect();
            let waiters = NonNull::new(Box::into_raw(waiters).cast::<Waiter>())
                .expect("Box::into_raw is never NULL");
            b.channels_open.fetch_add(1, Ordering::AcqRel);
            Ok(ChannelState {
                ch,
                dma: b.dma.clone(),
                dma_cache: DmaCache::default(),
                block_shift: b.bdev.block_size().trailing_zeros(),
                num_blocks: b.bdev.num_blocks(),
                bdev: b.bdev.clone(),
                slots: vec![
                    Slot {
                        cb: None,
                        arg: std::ptr::null_mut()
                    };
                    n
                ]
                .into_boxed_slice(),
                free: (0..n as u32).rev().collect(),
                done: Vec::with_capacity(n),
                waiters,
                order: [0; ROOM_WAITERS_MAX],
                order_head: 0,
                order_len: 0,
                in_poll: false,
                strays: 0,
                channels_open: b.channels_open.clone(),
            })
        })?;
        let p = Box::into_raw(Box::new(ChannelShell {
            magic: AtomicU32::new(handle::CHANNEL),
            state: UnsafeCell::new(Some(Box::new(state))),
        }));
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *channel = p.cast() };
        Ok(0)
    })
}

/// Closes a channel (SPDK's spdk_put_io_channel), on the thread that uses it. Every
/// I/O must have completed (its callback run). Returns 0, or -EINVAL (NULL), -EBADF
/// (closed already), -EBUSY (I/O in flight: poll until the callbacks ran; or called
/// from inside this channel's callback).
///
/// # Safety
/// `channel` is NULL or a channel handle, not in use on another thread.
#[no_mangle]
pub unsafe extern "C" fn nvme_channel_close(channel: *mut nvme_channel) -> c_int {
    call(|| {
        // SAFETY: the caller passes a channel handle or NULL, used by this thread.
        let st = unsafe { chan(channel, "nvme_channel_close: channel") }?;
        {
            // SAFETY: `chan` gave a live state; no other reference to it is held here.
            let s = unsafe { &*st };
            if s.in_poll {
                return Err(fail!(
                    libc::EBUSY,
                    "nvme_channel_close: called from inside a callback of this channel's \
                     nvme_channel_poll(); close it after the poll returns"
                ));
            }
            let n = s.ch.outstanding();
            if n > 0 {
                return Err(fail!(
                    libc::EBUSY,
                    "nvme_channel_close: {n} I/O(s) are in flight; call nvme_channel_poll() \
                     until their callbacks ran"
                ));
            }
        }
        let shell = channel.cast::<ChannelShell>();
        // SAFETY: checked by `chan`: a live shell used by this thread alone; the state
        // reference above is gone.
        let state =
            unsafe { (*(*shell).state.get()).take() }.expect("`chan` found the state present");
        // SAFETY: as above.
        unsafe { &(*shell).magic }.store(handle::CLOSED, Ordering::Release);
        state.channels_open.fetch_sub(1, Ordering::AcqRel);
        drop(state);
        Ok(0)
    })
}

/// What an I/O call asks for, before the checks.
struct Request {
    op: IoOp,
    buf: *const c_void,
    offset: u64,
    nbytes: u64,
    cb: nvme_bdev_io_cb,
    cb_arg: *mut c_void,
}

/// Checks `r` against the channel's bdev and submits it. Returns 0 or the failure.
/// True if the bdev has grown since this channel last looked and blocks `slba`+`nlb`
/// now fit; takes the new size either way (off the fast path: only for a range past
/// the size the channel knew).
#[cold]
#[inline(never)]
fn resized_to_fit(s: &mut ChannelState, slba: u64, nlb: u64) -> bool {
    s.num_blocks = s.bdev.num_blocks();
    slba.checked_add(nlb).is_some_and(|end| end <= s.num_blocks)
}

#[inline]
fn submit(s: &mut ChannelState, r: Request, what: &str) -> Result<c_int, Fail> {
    let Some(cb) = r.cb else {
        return Err(fail!(libc::EINVAL, "{what}: cb is NULL"));
    };
    let (slba, nlb) = if r.op == IoOp::Flush {
        (0, 0)
    } else {
        let mask = (1u64 << s.block_shift) - 1;
        if r.offset & mask != 0 || r.nbytes & mask != 0 || r.nbytes == 0 {
            return Err(fail!(
                libc::EINVAL,
                "{what}: offset {} and size {} must be multiples of the block size {} \
                 (and the size above 0)",
                r.offset,
                r.nbytes,
                1u64 << s.block_shift
            ));
        }
        let (slba, nlb) = (r.offset >> s.block_shift, r.nbytes >> s.block_shift);
        if slba.checked_add(nlb).is_none_or(|end| end > s.num_blocks)
            && !resized_to_fit(s, slba, nlb)
        {
            return Err(fail!(
                libc::EINVAL,
                "{what}: blocks {slba}+{nlb} are outside the bdev's {} blocks",
                s.num_blocks
            ));
        }
        if nlb > u32::MAX as u64 || r.nbytes > u32::MAX as u64 {
            return Err(fail!(
                libc::EINVAL,
                "{what}: {} bytes is more than one I/O can carry (4 GiB - 1); split it",
                r.nbytes
            ));
        }
        (slba, nlb as u32)
    };
    let buf = if matches!(r.op, IoOp::Read | IoOp::Write) {
        s.dma
            .translate(r.buf, r.nbytes as u32, what, &mut s.dma_cache)?
    } else {
        DmaSlice::default()
    };
    let Some(slot) = s.free.pop() else {
        return Err(no_room(what, s.slots.len()));
    };
    s.slots[slot as usize] = Slot {
        cb: Some(cb),
        arg: r.cb_arg,
    };
    let io = BdevIo {
        op: r.op,
        slba,
        nlb,
        buf,
        ctx: slot as u64,
    };
    match s.ch.submit(io) {
        Ok(()) => Ok(0),
        Err((e, _)) => {
            s.slots[slot as usize].cb = None;
            s.free.push(slot);
            Err(refusal(what, &e))
        }
    }
}

#[cold]
fn no_room(what: &str, n: usize) -> Fail {
    fail!(
        libc::ENOMEM,
        "{what}: the channel has {n} I/Os in flight, all it can track; poll it, or call \
         nvme_bdev_queue_io_wait() to be called back when there is room"
    )
}

#[cold]
fn refusal(what: &str, e: &Error) -> Fail {
    #[allow(unreachable_patterns)] // the enums may grow
    match e {
        Error::Busy(_) | Error::Driver(nvme_driver::Error::Busy(_)) => fail!(
            libc::ENOMEM,
            "{what}: the channel is full ({e}); poll it, or call nvme_bdev_queue_io_wait() \
             to be called back when there is room"
        ),
        _ => bdev_fail(what, e),
    }
}

/// Runs one I/O call: the channel checked, then [`submit`].
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone.
#[inline]
unsafe fn io(channel: *mut nvme_channel, r: Request, what: &str) -> c_int {
    call(|| {
        // SAFETY: the caller passes a channel handle or NULL, used by this thread.
        let st = unsafe { chan(channel, what) }?;
        // SAFETY: a live state, no other reference to it held.
        submit(unsafe { &mut *st }, r, what)
    })
}

/// Reads `nbytes` at byte `offset` of the bdev into `buf` (memory from
/// nvme_dma_alloc() of the bdev's layer), then calls `cb(cb_arg, success, status)`
/// from a later nvme_channel_poll() on this thread. Never waits. Offset and size are
/// multiples of the block size. Returns 0 (cb will run exactly once), or, with cb not
/// run: -EINVAL (NULL, not a multiple of the block size, outside the bdev, buf not DMA
/// memory of this layer or too short), -EBADF (closed channel), -ENOMEM (the channel
/// is full: poll, or nvme_bdev_queue_io_wait()), -ESHUTDOWN.
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone; `buf` stays
/// allocated and untouched until the callback ran.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_read(
    channel: *mut nvme_channel,
    buf: *mut c_void,
    offset: u64,
    nbytes: u64,
    cb: nvme_bdev_io_cb,
    cb_arg: *mut c_void,
) -> c_int {
    let r = Request {
        op: IoOp::Read,
        buf,
        offset,
        nbytes,
        cb,
        cb_arg,
    };
    // SAFETY: forwarded from the caller.
    unsafe { io(channel, r, "nvme_bdev_read") }
}

/// Writes `nbytes` from `buf` (memory from nvme_dma_alloc()) at byte `offset`; as
/// nvme_bdev_read() otherwise.
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone; `buf` stays
/// allocated and unchanged until the callback ran.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_write(
    channel: *mut nvme_channel,
    buf: *const c_void,
    offset: u64,
    nbytes: u64,
    cb: nvme_bdev_io_cb,
    cb_arg: *mut c_void,
) -> c_int {
    let r = Request {
        op: IoOp::Write,
        buf,
        offset,
        nbytes,
        cb,
        cb_arg,
    };
    // SAFETY: forwarded from the caller.
    unsafe { io(channel, r, "nvme_bdev_write") }
}

/// Writes zeroes to `nbytes` at byte `offset` (NVMe Write Zeroes); as
/// nvme_bdev_read() otherwise, without a buffer.
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_write_zeroes(
    channel: *mut nvme_channel,
    offset: u64,
    nbytes: u64,
    cb: nvme_bdev_io_cb,
    cb_arg: *mut c_void,
) -> c_int {
    let buf = std::ptr::null();
    let r = Request {
        op: IoOp::WriteZeroes,
        buf,
        offset,
        nbytes,
        cb,
        cb_arg,
    };
    // SAFETY: forwarded from the caller.
    unsafe { io(channel, r, "nvme_bdev_write_zeroes") }
}

/// Unmaps (deallocates: NVMe Dataset Management) `nbytes` at byte `offset`; as
/// nvme_bdev_read() otherwise, without a buffer.
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_unmap(
    channel: *mut nvme_channel,
    offset: u64,
    nbytes: u64,
    cb: nvme_bdev_io_cb,
    cb_arg: *mut c_void,
) -> c_int {
    let buf = std::ptr::null();
    let r = Request {
        op: IoOp::Deallocate,
        buf,
        offset,
        nbytes,
        cb,
        cb_arg,
    };
    // SAFETY: forwarded from the caller.
    unsafe { io(channel, r, "nvme_bdev_unmap") }
}

/// Flushes the bdev's volatile write cache (NVMe Flush); as nvme_bdev_read()
/// otherwise, without a range.
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_flush(
    channel: *mut nvme_channel,
    cb: nvme_bdev_io_cb,
    cb_arg: *mut c_void,
) -> c_int {
    let buf = std::ptr::null();
    let r = Request {
        op: IoOp::Flush,
        buf,
        offset: 0,
        nbytes: 0,
        cb,
        cb_arg,
    };
    // SAFETY: forwarded from the caller.
    unsafe { io(channel, r, "nvme_bdev_flush") }
}

/// Rings the doorbells for the I/O submitted since the last poll or flush, without
/// collecting completions: a submitter that sends a batch and polls later calls it
/// after the batch (nvme_channel_poll() rings them too). Returns 0, or -EINVAL (NULL),
/// -EBADF.
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone.
#[no_mangle]
pub unsafe extern "C" fn nvme_channel_flush(channel: *mut nvme_channel) -> c_int {
    call(|| {
        // SAFETY: the caller passes a channel handle or NULL, used by this thread.
        let st = unsafe { chan(channel, "nvme_channel_flush") }?;
        // SAFETY: a live state, no other reference to it held.
        unsafe { &mut *st }.ch.flush();
        Ok(0)
    })
}

/// Polls the channel: rings doorbells, collects completions and calls each I/O's
/// callback (on this thread), then the room waiters whose turn came. Returns the
/// number of I/Os completed, or -EINVAL (NULL), -EBADF, -EBUSY (called from inside
/// one of this channel's callbacks).
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone.
#[no_mangle]
pub unsafe extern "C" fn nvme_channel_poll(channel: *mut nvme_channel) -> c_int {
    call(|| {
        // SAFETY: the caller passes a channel handle or NULL, used by this thread.
        let st = unsafe { chan(channel, "nvme_channel_poll") }?;
        {
            // SAFETY: a live state; this reference ends before any callback runs.
            let s = unsafe { &mut *st };
            if s.in_poll {
                return Err(fail!(
                    libc::EBUSY,
                    "nvme_channel_poll: called from inside a callback of the same channel's \
                     poll; return from the callback instead (the loop polls again)"
                ));
            }
            s.in_poll = true;
            s.done.clear();
            let done = &mut s.done;
            // At most one completion per slot: `done` has room for all of them.
            s.ch.poll(&mut |c| done.push((c.ctx, c.status)));
        }
        // SAFETY: as above; re-read because a callback may have submitted.
        let n = unsafe { &*st }.done.len();
        for i in 0..n {
            let call_back = {
                // SAFETY: as above: a short reference, none held across the callback.
                let s = unsafe { &mut *st };
                let (ctx, status) = s.done[i];
                match s.slots.get_mut(ctx as usize) {
                    Some(slot) if slot.cb.is_some() => {
                        let cb = slot.cb.take().expect("checked Some");
                        s.free.push(ctx as u32);
                        Some((cb, slot.arg, status))
                    }
                    _ => {
                        s.strays += 1;
                        None
                    }
                }
            };
            if let Some((cb, arg, status)) = call_back {
                // SAFETY: the caller's callback, with the argument it gave.
                unsafe { cb(arg, status.is_success(), status.0) };
            }
        }
        // Room waiters the block layer found room for, oldest first.
        loop {
            let ready = {
                // SAFETY: as above.
                let s = unsafe { &mut *st };
                if s.order_len == 0 {
                    None
                } else {
                    let i = s.order[s.order_head] as usize;
                    let w = s.waiter(i);
                    if !w.ready.get() {
                        None
                    } else {
                        let r = (w.cb.take(), w.arg.get());
                        w.ready.set(false);
                        s.order_head = (s.order_head + 1) % ROOM_WAITERS_MAX;
                        s.order_len -= 1;
                        Some(r)
                    }
                }
            };
            match ready {
                Some((Some(cb), arg)) => {
                    // SAFETY: the caller's callback, with the argument it gave.
                    unsafe { cb(arg) }
                }
                Some((None, _)) => {}
                None => break,
            }
        }
        // SAFETY: as above.
        unsafe { &mut *st }.in_poll = false;
        Ok(n as c_int)
    })
}

/// Asks for `cb(cb_arg)` to be called on this thread, from a later nvme_channel_poll(),
/// once the channel has room again: after a submit returned -ENOMEM (SPDK's
/// spdk_bdev_queue_io_wait). Waiters run once each, in registration order, after
/// that poll's completion callbacks; a resubmit from `cb` may find the channel full
/// again (then register again). Returns 0, or -EINVAL (NULL), -EBADF, -ENOSPC
/// (NVME_ROOM_WAITERS_MAX waiters registered already).
///
/// # Safety
/// `channel` is NULL or a channel handle used by this thread alone.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_queue_io_wait(
    channel: *mut nvme_channel,
    cb: nvme_bdev_io_wait_cb,
    cb_arg: *mut c_void,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a channel handle or NULL, used by this thread.
        let st = unsafe { chan(channel, "nvme_bdev_queue_io_wait") }?;
        // SAFETY: a live state, no other reference to it held.
        let s = unsafe { &mut *st };
        let Some(cb) = cb else {
            return Err(fail!(libc::EINVAL, "nvme_bdev_queue_io_wait: cb is NULL"));
        };
        if s.order_len == ROOM_WAITERS_MAX {
            return Err(fail!(
                libc::ENOSPC,
                "nvme_bdev_queue_io_wait: {ROOM_WAITERS_MAX} waiters are registered on this \
                 channel already (NVME_ROOM_WAITERS_MAX); poll the channel to run them first"
            ));
        }
        let Some(i) = (0..ROOM_WAITERS_MAX).find(|&i| s.waiter(i).cb.get().is_none()) else {
            return Err(fail!(
                libc::ENOSPC,
                "nvme_bdev_queue_io_wait: every waiter entry is taken; poll the channel first"
            ));
        };
        let w = s.waiter(i);
        let ctx = w as *const Waiter as usize as u64;
        s.ch.notify_when_room(RoomWaiter {
            func: room_ready,
            ctx,
        })
        .map_err(|e| bdev_fail("nvme_bdev_queue_io_wait", &e))?;
        let w = s.waiter(i);
        w.cb.set(Some(cb));
        w.arg.set(cb_arg);
        w.ready.set(false);
        let tail = (s.order_head + s.order_len) % ROOM_WAITERS_MAX;
        s.order[tail] = i as u8;
        s.order_len += 1;
        Ok(0)
    })
}

/// Waiters one channel holds at once (nvme_bdev_queue_io_wait()).
pub const NVME_ROOM_WAITERS_MAX: usize = 64;
const _: () = assert!(NVME_ROOM_WAITERS_MAX == ROOM_WAITERS_MAX);
