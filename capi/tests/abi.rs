// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The C ABI called as C calls it (the `extern "C"` functions, raw pointers), over
//! software controllers: data written and read back through every I/O call, each
//! callback run exactly once; waiting for room; events on the caller's thread; a
//! resize's event and new end; and bad input (NULL pointers, closed handles, buffers
//! not from DMA memory, sizes not a multiple of the block size): a negative errno and
//! a message, never a crash.

use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::AnaState;
use nvmebdev::bdev::*;
use nvmebdev::channel::*;
use nvmebdev::dma::*;
use nvmebdev::error::*;
use nvmebdev::layer::*;
use std::cell::Cell;
use std::ffi::{c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: u64 = 512;

fn last() -> String {
    // SAFETY: nvme_last_error never returns NULL and the string lives until our next call.
    unsafe { CStr::from_ptr(nvme_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts `rc` is `-errno` and the message contains each of `needles`.
#[track_caller]
fn refused(rc: i32, errno: i32, needles: &[&str]) {
    let m = last();
    assert_eq!(rc, -errno, "expected -{errno}, got {rc}; message: {m}");
    for n in needles {
        assert!(m.contains(n), "message {m:?} does not name {n:?}");
    }
    // SAFETY: static string, never NULL.
    let s = unsafe { CStr::from_ptr(nvme_strerror(rc)) }.to_string_lossy();
    assert!(
        !s.contains("unknown error code"),
        "nvme_strerror({rc}) = {s:?}"
    );
}

fn soft(name: &str, subnqn: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        name: name.into(),
        subnqn: subnqn.into(),
        cntlid,
        namespaces: vec![ns.clone()],
        ana: true,
        ..SoftConfig::default()
    })
}

fn layer_with(opts: Option<&nvme_layer_opts>) -> *mut nvme_layer {
    let mut layer = null_mut();
    // SAFETY: valid pointers.
    let rc = unsafe { nvme_layer_create(opts.map_or(null(), |o| o as *const _), &mut layer) };
    assert_eq!(rc, 0, "{}", last());
    layer
}

fn open(
    layer: *mut nvme_layer,
    name: &str,
    cb: nvme_bdev_event_cb,
    ctx: *mut c_void,
) -> *mut nvme_bdev {
    let name = CString::new(name).unwrap();
    let mut b = null_mut();
    // SAFETY: valid pointers.
    let rc = unsafe { nvme_bdev_open(layer, name.as_ptr(), cb, ctx, &mut b) };
    assert_eq!(rc, 0, "{}", last());
    b
}

fn channel(b: *mut nvme_bdev) -> *mut nvme_channel {
    let mut ch = null_mut();
    // SAFETY: valid pointers.
    let rc = unsafe { nvme_channel_open(b, &mut ch) };
    assert_eq!(rc, 0, "{}", last());
    ch
}

fn dma(layer: *mut nvme_layer, size: usize) -> *mut u8 {
    let mut p = null_mut();
    // SAFETY: valid pointers.
    let rc = unsafe { nvme_dma_alloc(layer, size, &mut p) };
    assert_eq!(rc, 0, "{}", last());
    p.cast()
}

/// What one I/O's callback saw.
#[derive(Default)]
struct Done {
    calls: Cell<u32>,
    success: Cell<bool>,
}

unsafe extern "C" fn on_io(arg: *mut c_void, success: bool, _status: u16) {
    // SAFETY: every test passes a `Done` that outlives the I/O.
    let d = unsafe { &*(arg as *const Done) };
    d.calls.set(d.calls.get() + 1);
    d.success.set(success);
}

fn arg(d: &Done) -> *mut c_void {
    d as *const Done as *mut c_void
}

/// Fails naming the first byte where `got` differs from `want`.
#[track_caller]
fn same(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = (0..want.len()).find(|&i| got.get(i) != Some(&want[i])) {
        panic!(
            "{what}: byte {i} is {:?}, written {:#04x}",
            got.get(i),
            want[i]
        );
    }
}

/// Polls until every `Done` saw its callback (10 s at most), then checks exactly once.
#[track_caller]
fn wait(ch: *mut nvme_channel, done: &[&Done]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.iter().any(|d| d.calls.get() == 0) {
        // SAFETY: an open channel.
        let rc = unsafe { nvme_channel_poll(ch) };
        assert!(rc >= 0, "{}", last());
        assert!(Instant::now() < deadline, "I/O did not complete in 10 s");
    }
    // A few more polls: nothing completes twice.
    for _ in 0..100 {
        // SAFETY: an open channel.
        unsafe { nvme_channel_poll(ch) };
    }
    for d in done {
        assert_eq!(d.calls.get(), 1, "each callback runs exactly once");
        assert!(d.success.get(), "the I/O succeeded");
    }
}

/// Writes, reads back and compares through a namespace bdev; write zeroes, unmap and
/// flush; every callback once; then closes everything in order.
#[test]
fn write_read_back_and_every_io_call_on_a_namespace_bdev() {
    let ns = Arc::new(Namespace::new(1, 1 << 12, BS as u32).unwrap());
    let c = soft("c0", "nqn.2024-01.org.example:capi", 1, &ns);
    let layer = layer_with(None);
    // SAFETY: a live layer.
    let n = unsafe { nvmebdev::attach_bus(layer, "c0", c) };
    assert_eq!(n, 2, "a namespace bdev and the multipath bdev: {}", last());
    let mut name = [0 as std::ffi::c_char; NVME_BDEV_NAME_MAX];
    let mut names: Vec<String> = (0..2)
        .map(|i| {
            assert_eq!(
                // SAFETY: a live layer, a buffer of its length.
                unsafe { nvme_layer_bdev_name(layer, i, name.as_mut_ptr(), name.len()) },
                0
            );
            // SAFETY: NUL-terminated by the call.
            unsafe { CStr::from_ptr(name.as_ptr()) }
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["c0n1", "nqn.2024-01.org.example:capi:n1"]);
    // SAFETY: a live layer; 4 bytes cannot hold either name.
    let rc = unsafe { nvme_layer_bdev_name(layer, 0, name.as_mut_ptr(), 4) };
    refused(rc, libc::ENAMETOOLONG, &["the buffer has 4"]);
    // SAFETY: as above.
    let rc = unsafe { nvme_layer_bdev_name(layer, 2, name.as_mut_ptr(), name.len()) };
    refused(rc, libc::ENOENT, &["no bdev at index 2", "has 2"]);

    let b = open(layer, "c0n1", None, null_mut());
    // SAFETY: nvme_bdev_info is plain data; zeroes are a valid value.
    let mut info: nvme_bdev_info = unsafe { std::mem::zeroed() };
    // SAFETY: live bdev, writable info.
    assert_eq!(unsafe { nvme_bdev_get_info(b, &mut info) }, 0);
    assert_eq!(
        (info.block_size, info.num_blocks, info.multipath),
        (512, 1 << 12, false)
    );
    let ch = channel(b);

    let len = 8 * BS as usize;
    let (w, r) = (dma(layer, len), dma(layer, len));
    // SAFETY: `len` bytes of DMA memory each, no I/O on them yet.
    unsafe {
        for i in 0..len {
            *w.add(i) = (i * 7 + 3) as u8;
        }
    }
    let d = Done::default();
    assert_eq!(
        // SAFETY: live channel, DMA buffer of `len` bytes, `d` outlives the I/O.
        unsafe { nvme_bdev_write(ch, w.cast(), 16 * BS, len as u64, Some(on_io), arg(&d)) },
        0
    );
    wait(ch, &[&d]);
    let d = Done::default();
    assert_eq!(
        // SAFETY: as above.
        unsafe { nvme_bdev_read(ch, r.cast(), 16 * BS, len as u64, Some(on_io), arg(&d)) },
        0
    );
    wait(ch, &[&d]);
    // SAFETY: the I/O completed; both buffers are `len` bytes.
    let (ws, rs) = unsafe {
        (
            std::slice::from_raw_parts(w, len),
            std::slice::from_raw_parts(r, len),
        )
    };
    same(rs, ws, "the data read back");

    // A part of a buffer (one block, 3 blocks in) is fine too.
    let d = Done::default();
    assert_eq!(
        // SAFETY: inside the buffer.
        unsafe {
            nvme_bdev_read(
                ch,
                r.add(3 * BS as usize).cast(),
                19 * BS,
                BS,
                Some(on_io),
                arg(&d),
            )
        },
        0
    );
    wait(ch, &[&d]);

    let (z, u, f) = (Done::default(), Done::default(), Done::default());
    // SAFETY: live channel.
    unsafe {
        assert_eq!(
            nvme_bdev_write_zeroes(ch, 16 * BS, 2 * BS, Some(on_io), arg(&z)),
            0
        );
        assert_eq!(
            nvme_bdev_unmap(ch, 20 * BS, 2 * BS, Some(on_io), arg(&u)),
            0
        );
        assert_eq!(nvme_bdev_flush(ch, Some(on_io), arg(&f)), 0);
    }
    wait(ch, &[&z, &u, &f]);
    let d = Done::default();
    assert_eq!(
        // SAFETY: as above.
        unsafe { nvme_bdev_read(ch, r.cast(), 16 * BS, len as u64, Some(on_io), arg(&d)) },
        0
    );
    wait(ch, &[&d]);
    // SAFETY: the I/O completed.
    let rs = unsafe { std::slice::from_raw_parts(r, len) };
    assert!(
        rs[..2 * BS as usize].iter().all(|&x| x == 0),
        "write zeroes zeroed its blocks"
    );
    assert_eq!(
        rs[2 * BS as usize..4 * BS as usize],
        ws[2 * BS as usize..4 * BS as usize]
    );

    // SAFETY: live handles, closed in order.
    unsafe {
        assert_eq!(nvme_dma_free(layer, w.cast()), 0);
        assert_eq!(nvme_dma_free(layer, r.cast()), 0);
        assert_eq!(nvme_channel_close(ch), 0, "{}", last());
        assert_eq!(nvme_bdev_close(b), 0, "{}", last());
        assert_eq!(nvme_layer_destroy(layer), 0, "{}", last());
    }
}

static mut RESUBMIT: (*mut nvme_channel, *mut u8, *const Done) = (null_mut(), null_mut(), null());

/// A completion callback that submits the next read from inside the poll (as SPDK's
/// callbacks do), and finds polling and closing its own channel refused.
unsafe extern "C" fn chain(arg: *mut c_void, success: bool, status: u16) {
    // SAFETY: the test's `Done`.
    unsafe { on_io(arg, success, status) };
    // SAFETY: set by the test before the first I/O, on this thread.
    let (ch, buf, next) = unsafe { RESUBMIT };
    // SAFETY: the channel is open; we are inside its poll.
    unsafe {
        assert_eq!(nvme_channel_poll(ch), -libc::EBUSY, "{}", last());
        assert_eq!(nvme_channel_close(ch), -libc::EBUSY, "{}", last());
    }
    if !next.is_null() {
        // SAFETY: as above; `next` outlives the I/O.
        let rc = unsafe { nvme_bdev_read(ch, buf.cast(), 0, BS, Some(on_io), next as *mut c_void) };
        assert_eq!(
            rc,
            0,
            "a callback may submit on its own channel: {}",
            last()
        );
    }
}

#[test]
fn a_callback_submits_on_its_channel_but_cannot_poll_or_close_it() {
    let ns = Arc::new(Namespace::new(1, 1 << 10, BS as u32).unwrap());
    let layer = layer_with(None);
    assert_eq!(
        // SAFETY: a live layer.
        unsafe {
            nvmebdev::attach_bus(
                layer,
                "c0",
                soft("c0", "nqn.2024-01.org.example:chain", 1, &ns),
            )
        },
        2
    );
    let b = open(layer, "c0n1", None, null_mut());
    let ch = channel(b);
    let buf = dma(layer, BS as usize);
    let (first, second) = (Done::default(), Done::default());
    // SAFETY: this thread alone uses RESUBMIT.
    unsafe { RESUBMIT = (ch, buf, &second) };
    assert_eq!(
        // SAFETY: live channel and buffer; both `Done`s outlive the I/O.
        unsafe { nvme_bdev_read(ch, buf.cast(), 0, BS, Some(chain), arg(&first)) },
        0
    );
    wait(ch, &[&first, &second]);
    // SAFETY: live handles, closed in order.
    unsafe {
        RESUBMIT = (null_mut(), null_mut(), null());
        assert_eq!(nvme_channel_close(ch), 0);
        assert_eq!(nvme_bdev_close(b), 0);
        assert_eq!(nvme_layer_destroy(layer), 0);
    }
}

/// What the room waiter does: count, resubmit the refused read.
struct Parked {
    ch: *mut nvme_channel,
    buf: *mut u8,
    done: Done,
    runs: Cell<u32>,
}

unsafe extern "C" fn room(arg: *mut c_void) {
    // SAFETY: the test's `Parked`, alive until the end of the test.
    let p = unsafe { &*(arg as *const Parked) };
    p.runs.set(p.runs.get() + 1);
    // SAFETY: live channel and buffer.
    let rc = unsafe { nvme_bdev_read(p.ch, p.buf.cast(), 0, BS, Some(on_io), arg_of(&p.done)) };
    assert_eq!(rc, 0, "the channel had room: {}", last());
}

fn arg_of(d: &Done) -> *mut c_void {
    arg(d)
}

/// A multipath channel of depth 8 filled until -ENOMEM; nvme_bdev_queue_io_wait's
/// callback runs once, from a poll after completions made room, and its resubmit
/// completes.
#[test]
fn a_full_channel_refuses_with_enomem_and_calls_back_when_there_is_room() {
    let ns = Arc::new(Namespace::new(1, 1 << 10, BS as u32).unwrap());
    // SAFETY: zeroes, then filled by the library.
    let mut opts: nvme_layer_opts = unsafe { std::mem::zeroed() };
    // SAFETY: writable.
    assert_eq!(unsafe { nvme_layer_opts_init(&mut opts) }, 0);
    opts.channel_depth = 8;
    let layer = layer_with(Some(&opts));
    // SAFETY: a live layer.
    let names = unsafe {
        nvmebdev::attach_bus(
            layer,
            "c0",
            soft("c0", "nqn.2024-01.org.example:room", 1, &ns),
        )
    };
    assert_eq!(names, 2);
    let b = open(layer, "nqn.2024-01.org.example:room:n1", None, null_mut());
    let ch = channel(b);
    let buf = dma(layer, BS as usize);
    let done: Vec<Done> = (0..8).map(|_| Done::default()).collect();
    for d in &done {
        assert_eq!(
            // SAFETY: live channel and buffer; `done` outlives the I/O.
            unsafe { nvme_bdev_read(ch, buf.cast(), 0, BS, Some(on_io), arg(d)) },
            0,
            "{}",
            last()
        );
    }
    let extra = Done::default();
    // SAFETY: as above.
    let rc = unsafe { nvme_bdev_read(ch, buf.cast(), 0, BS, Some(on_io), arg(&extra)) };
    refused(
        rc,
        libc::ENOMEM,
        &["nvme_bdev_read", "nvme_bdev_queue_io_wait"],
    );
    let parked = Parked {
        ch,
        buf,
        done: Done::default(),
        runs: Cell::new(0),
    };
    assert_eq!(
        // SAFETY: live channel; `parked` outlives the channel.
        unsafe { nvme_bdev_queue_io_wait(ch, Some(room), &parked as *const Parked as *mut c_void) },
        0
    );
    let mut all: Vec<&Done> = done.iter().collect();
    all.push(&parked.done);
    wait(ch, &all);
    assert_eq!(parked.runs.get(), 1, "the waiter ran once");
    assert_eq!(extra.calls.get(), 0, "a refused I/O never calls back");
    // The waiter table is bounded.
    for i in 0..NVME_ROOM_WAITERS_MAX {
        // SAFETY: as above; the waiters never run (no poll follows).
        let rc = unsafe {
            nvme_bdev_queue_io_wait(ch, Some(room), &parked as *const Parked as *mut c_void)
        };
        assert_eq!(rc, 0, "waiter {i}: {}", last());
    }
    // SAFETY: as above.
    let rc =
        unsafe { nvme_bdev_queue_io_wait(ch, Some(room), &parked as *const Parked as *mut c_void) };
    refused(rc, libc::ENOSPC, &["NVME_ROOM_WAITERS_MAX"]);
    // SAFETY: live handles, closed in order (waiters still registered are dropped unrun).
    unsafe {
        assert_eq!(nvme_channel_close(ch), 0, "{}", last());
        assert_eq!(nvme_bdev_close(b), 0);
        assert_eq!(nvme_layer_destroy(layer), 0);
    }
    assert_eq!(parked.runs.get(), 1, "waiters left at close never run");
}

/// The events seen by `on_event`, with the thread they came on.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<(u32, String, u8, std::thread::ThreadId)>>);

unsafe extern "C" fn on_event(ev: *const nvme_bdev_event, ctx: *mut c_void) {
    // SAFETY: the library passes a valid event for the call; ctx is the test's `Seen`.
    let (ev, seen) = unsafe { (&*ev, &*(ctx as *const Seen)) };
    let ctrl = if ev.controller.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string valid for the call.
        unsafe { CStr::from_ptr(ev.controller) }
            .to_string_lossy()
            .into_owned()
    };
    seen.0
        .lock()
        .unwrap()
        .push((ev.kind, ctrl, ev.ana_state, std::thread::current().id()));
}

/// Two controllers share a namespace; one goes ANA inaccessible and back: the
/// multipath bdev's events reach the C callback on the thread that polls for them.
#[test]
fn events_reach_the_callback_on_the_polling_thread() {
    let ns = Arc::new(Namespace::new(1, 1 << 10, BS as u32).unwrap());
    let nqn = "nqn.2024-01.org.example:events";
    let (a, c) = (soft("c0", nqn, 1, &ns), soft("c1", nqn, 2, &ns));
    let layer = layer_with(None);
    // SAFETY: a live layer.
    unsafe {
        assert_eq!(nvmebdev::attach_bus(layer, "c0", a), 2);
        assert_eq!(nvmebdev::attach_bus(layer, "c1", c.clone()), 2);
    }
    let seen = Seen::default();
    let b = open(
        layer,
        &format!("{nqn}:n1"),
        Some(on_event),
        &seen as *const Seen as *mut c_void,
    );
    c.set_ana_state(1, AnaState::Inaccessible).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = false;
    loop {
        // SAFETY: a live bdev opened with a callback.
        let rc = unsafe { nvme_bdev_poll_events(b) };
        assert!(rc >= 0, "{}", last());
        let kinds: Vec<u32> = seen.0.lock().unwrap().iter().map(|e| e.0).collect();
        if !back && kinds.contains(&NVME_BDEV_EVENT_PATH_DOWN) {
            c.set_ana_state(1, AnaState::Optimized).unwrap();
            back = true;
        }
        if kinds.contains(&NVME_BDEV_EVENT_PATH_UP) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PATH_DOWN then PATH_UP in 10 s: {kinds:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = seen.0.lock().unwrap();
    let me = std::thread::current().id();
    assert!(
        seen.iter().all(|e| e.3 == me),
        "every event on the polling thread"
    );
    let c1: Vec<(u32, u8)> = seen
        .iter()
        .filter(|e| e.1 == "c1")
        .map(|e| (e.0, e.2))
        .collect();
    assert_eq!(
        c1,
        [
            (NVME_BDEV_EVENT_ANA_CHANGE, NVME_ANA_INACCESSIBLE),
            (NVME_BDEV_EVENT_PATH_DOWN, NVME_ANA_INACCESSIBLE),
            (NVME_BDEV_EVENT_ANA_CHANGE, NVME_ANA_OPTIMIZED),
            (NVME_BDEV_EVENT_PATH_UP, NVME_ANA_OPTIMIZED),
        ],
        "c1's events, in order"
    );
    // SAFETY: live handles.
    unsafe {
        assert_eq!(nvme_bdev_close(b), 0);
        assert_eq!(nvme_layer_destroy(layer), 0);
    }
}

/// The resize events seen by `on_resize`: (old, new) blocks.
#[derive(Default)]
struct Resizes(std::sync::Mutex<Vec<(u64, u64)>>);

unsafe extern "C" fn on_resize(ev: *const nvme_bdev_event, ctx: *mut c_void) {
    // SAFETY: the library passes a valid event for the call; ctx is the test's
    // `Resizes`.
    let (ev, seen) = unsafe { (&*ev, &*(ctx as *const Resizes)) };
    if ev.kind == NVME_BDEV_EVENT_RESIZE {
        seen.0.lock().unwrap().push((ev.old_blocks, ev.new_blocks));
    }
}

/// The namespace grows: NVME_BDEV_EVENT_RESIZE with the old and new sizes, once;
/// the bdev's info has the new size, and a channel opened before the resize writes
/// and reads back past the old end.
#[test]
fn a_resize_reaches_the_callback_and_a_channel_takes_the_new_end() {
    let ns = Arc::new(Namespace::new(1, 1 << 10, BS as u32).unwrap());
    let c = soft("c0", "nqn.2024-01.org.example:resize", 1, &ns);
    let layer = layer_with(None);
    // SAFETY: a live layer.
    assert_eq!(unsafe { nvmebdev::attach_bus(layer, "c0", c.clone()) }, 2);
    let seen = Resizes::default();
    let b = open(
        layer,
        "c0n1",
        Some(on_resize),
        &seen as *const Resizes as *mut c_void,
    );
    let ch = channel(b);
    let len = 8 * BS as usize;
    let (w, r) = (dma(layer, len), dma(layer, len));
    let past = 1500 * BS;
    let d = Done::default();
    // SAFETY: live channel, DMA buffer of `len` bytes, `d` outlives the I/O.
    let rc = unsafe { nvme_bdev_write(ch, w.cast(), past, len as u64, Some(on_io), arg(&d)) };
    refused(rc, libc::EINVAL, &["blocks 1500+8", "1024 blocks"]);
    c.resize_namespace(1, 2048).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.0.lock().unwrap().is_empty() {
        // SAFETY: a live bdev opened with a callback.
        assert!(unsafe { nvme_bdev_poll_events(b) } >= 0, "{}", last());
        assert!(Instant::now() < deadline, "no RESIZE event in 10 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: nvme_bdev_info is plain data; zeroes are a valid value.
    let mut info: nvme_bdev_info = unsafe { std::mem::zeroed() };
    // SAFETY: live bdev, writable info.
    assert_eq!(unsafe { nvme_bdev_get_info(b, &mut info) }, 0);
    assert_eq!(info.num_blocks, 2048);
    // SAFETY: `len` bytes of DMA memory each, no I/O on them yet.
    unsafe {
        for i in 0..len {
            *w.add(i) = (i * 11 + 5) as u8;
        }
    }
    // SAFETY: as above.
    let rc = unsafe { nvme_bdev_write(ch, w.cast(), past, len as u64, Some(on_io), arg(&d)) };
    assert_eq!(rc, 0, "{}", last());
    wait(ch, &[&d]);
    let d = Done::default();
    // SAFETY: as above.
    let rc = unsafe { nvme_bdev_read(ch, r.cast(), past, len as u64, Some(on_io), arg(&d)) };
    assert_eq!(rc, 0, "{}", last());
    wait(ch, &[&d]);
    // SAFETY: the I/O completed; both buffers are `len` bytes.
    let (ws, rs) = unsafe {
        (
            std::slice::from_raw_parts(w, len),
            std::slice::from_raw_parts(r, len),
        )
    };
    same(rs, ws, "read back past the old end");
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: a live bdev opened with a callback.
    assert!(unsafe { nvme_bdev_poll_events(b) } >= 0);
    assert_eq!(*seen.0.lock().unwrap(), [(1024, 2048)], "one RESIZE event");
    // SAFETY: live handles, nothing in flight; the buffers came from nvme_dma_alloc.
    unsafe {
        assert_eq!(nvme_dma_free(layer, w.cast()), 0);
        assert_eq!(nvme_dma_free(layer, r.cast()), 0);
        assert_eq!(nvme_channel_close(ch), 0, "{}", last());
        assert_eq!(nvme_bdev_close(b), 0);
        assert_eq!(nvme_layer_destroy(layer), 0);
    }
}

/// Bad input of every kind: an errno and a message naming the problem, no crash.
#[test]
fn bad_input_gives_an_errno_and_a_message() {
    let ns = Arc::new(Namespace::new(1, 1 << 10, BS as u32).unwrap());
    let nul = CString::new("c0").unwrap();
    // SAFETY: every call below is given NULL, closed handles or bad values on purpose;
    // the handles that are live are used on this thread only.
    unsafe {
        // NULL everywhere.
        refused(
            nvme_layer_create(null(), null_mut()),
            libc::EINVAL,
            &["layer is NULL"],
        );
        refused(
            nvme_layer_opts_init(null_mut()),
            libc::EINVAL,
            &["opts is NULL"],
        );
        refused(
            nvme_layer_destroy(null_mut()),
            libc::EINVAL,
            &["layer is NULL"],
        );
        refused(
            nvme_layer_attach(null_mut(), nul.as_ptr(), nul.as_ptr()),
            libc::EINVAL,
            &["layer is NULL"],
        );
        refused(
            nvme_bdev_open(null_mut(), nul.as_ptr(), None, null_mut(), null_mut()),
            libc::EINVAL,
            &["layer is NULL"],
        );
        refused(
            nvme_channel_open(null_mut(), null_mut()),
            libc::EINVAL,
            &["bdev is NULL"],
        );
        refused(
            nvme_bdev_read(null_mut(), null_mut(), 0, BS, Some(on_io), null_mut()),
            libc::EINVAL,
            &["nvme_bdev_read", "NULL"],
        );
        refused(nvme_channel_poll(null_mut()), libc::EINVAL, &["NULL"]);
        refused(
            nvme_dma_alloc(null_mut(), 4096, null_mut()),
            libc::EINVAL,
            &["NULL"],
        );

        let mut opts: nvme_layer_opts = std::mem::zeroed();
        let mut out = null_mut();
        refused(
            nvme_layer_create(&opts, &mut out),
            libc::EINVAL,
            &["opts_size", "nvme_layer_opts_init"],
        );
        nvme_layer_opts_init(&mut opts);
        opts.policy = 9;
        refused(
            nvme_layer_create(&opts, &mut out),
            libc::EINVAL,
            &["policy 9"],
        );
        nvme_layer_opts_init(&mut opts);
        opts.reconnect_delay_ms = 60_000;
        refused(
            nvme_layer_create(&opts, &mut out),
            libc::EINVAL,
            &["reconnect_delay_ms"],
        );

        let layer = layer_with(None);
        refused(
            nvme_layer_attach(layer, nul.as_ptr(), null()),
            libc::EINVAL,
            &["trid is NULL"],
        );
        let bad = CString::new("trtype:PCIe traddr:nope").unwrap();
        refused(
            nvme_layer_attach(layer, nul.as_ptr(), bad.as_ptr()),
            libc::EINVAL,
            &["traddr 'nope'"],
        );
        let with_ns = CString::new("trtype:PCIe traddr:0000:01:00.0 ns:1").unwrap();
        refused(
            nvme_layer_attach(layer, nul.as_ptr(), with_ns.as_ptr()),
            libc::EINVAL,
            &["leave out ns:"],
        );
        let missing = CString::new("nope").unwrap();
        let mut b = null_mut();
        refused(
            nvme_bdev_open(layer, missing.as_ptr(), None, null_mut(), &mut b),
            libc::ENODEV,
            &["\"nope\""],
        );
        refused(
            nvme_layer_detach(layer, missing.as_ptr()),
            libc::ENODEV,
            &["\"nope\""],
        );
        refused(
            nvme_dma_alloc(layer, 0, &mut (null_mut())),
            libc::EINVAL,
            &["size is 0"],
        );
        let mut on_stack = [0u8; 16];
        refused(
            nvme_dma_free(layer, on_stack.as_mut_ptr().cast()),
            libc::EINVAL,
            &["not the start of a buffer"],
        );

        assert_eq!(
            nvmebdev::attach_bus(
                layer,
                "c0",
                soft("c0", "nqn.2024-01.org.example:bad", 1, &ns)
            ),
            2
        );
        let b = open(layer, "c0n1", None, null_mut());
        refused(
            nvme_bdev_poll_events(b),
            libc::EINVAL,
            &["without an event callback"],
        );
        let ch = channel(b);
        let buf = dma(layer, 4 * BS as usize);

        // I/O refusals: none calls back.
        let d = Done::default();
        refused(
            nvme_bdev_read(ch, buf.cast(), 0, BS, None, null_mut()),
            libc::EINVAL,
            &["cb is NULL"],
        );
        refused(
            nvme_bdev_read(ch, null_mut(), 0, BS, Some(on_io), arg(&d)),
            libc::EINVAL,
            &["buf is NULL"],
        );
        refused(
            nvme_bdev_read(ch, buf.cast(), 0, 100, Some(on_io), arg(&d)),
            libc::EINVAL,
            &["multiples of the block size 512"],
        );
        refused(
            nvme_bdev_write(ch, buf.cast(), 3, BS, Some(on_io), arg(&d)),
            libc::EINVAL,
            &["offset 3", "block size 512"],
        );
        refused(
            nvme_bdev_unmap(ch, 0, 0, Some(on_io), arg(&d)),
            libc::EINVAL,
            &["size 0"],
        );
        refused(
            nvme_bdev_write_zeroes(ch, 1023 * BS, 2 * BS, Some(on_io), arg(&d)),
            libc::EINVAL,
            &["outside the bdev's 1024 blocks"],
        );
        let mut heap = vec![0u8; BS as usize];
        refused(
            nvme_bdev_write(ch, heap.as_mut_ptr().cast(), 0, BS, Some(on_io), arg(&d)),
            libc::EINVAL,
            &["not DMA memory", "nvme_dma_alloc"],
        );
        refused(
            nvme_bdev_read(
                ch,
                on_stack.as_mut_ptr().cast(),
                0,
                BS,
                Some(on_io),
                arg(&d),
            ),
            libc::EINVAL,
            &["not DMA memory"],
        );
        refused(
            nvme_bdev_read(
                ch,
                buf.add(2 * BS as usize).cast(),
                0,
                4 * BS,
                Some(on_io),
                arg(&d),
            ),
            libc::EINVAL,
            &["run past the end of its DMA buffer"],
        );

        // Wrong kind of handle.
        refused(
            nvme_channel_poll(b.cast()),
            libc::EBADF,
            &["not a channel handle", "bdev handle"],
        );
        refused(
            nvme_bdev_close(layer.cast()),
            libc::EBADF,
            &["not a bdev handle"],
        );

        // Closing in the wrong order.
        refused(nvme_layer_destroy(layer), libc::EBUSY, &["nvme_bdev_close"]);
        refused(nvme_bdev_close(b), libc::EBUSY, &["nvme_channel_close"]);
        assert_eq!(
            nvme_bdev_read(ch, buf.cast(), 0, BS, Some(on_io), arg(&d)),
            0
        );
        refused(
            nvme_channel_close(ch),
            libc::EBUSY,
            &["1 I/O(s) are in flight"],
        );
        wait(ch, &[&d]);

        // Closed handles.
        assert_eq!(nvme_channel_close(ch), 0);
        refused(nvme_channel_close(ch), libc::EBADF, &["closed already"]);
        refused(nvme_channel_poll(ch), libc::EBADF, &["closed already"]);
        refused(
            nvme_bdev_read(ch, buf.cast(), 0, BS, Some(on_io), arg(&d)),
            libc::EBADF,
            &["closed already"],
        );
        refused(
            nvme_bdev_queue_io_wait(ch, Some(room), null_mut()),
            libc::EBADF,
            &["closed already"],
        );
        assert_eq!(nvme_bdev_close(b), 0);
        refused(
            nvme_channel_open(b, &mut (null_mut())),
            libc::EBADF,
            &["closed already"],
        );
        refused(
            nvme_bdev_get_info(b, &mut std::mem::zeroed()),
            libc::EBADF,
            &["closed already"],
        );
        assert_eq!(nvme_dma_free(layer, buf.cast()), 0);
        refused(
            nvme_dma_free(layer, buf.cast()),
            libc::EINVAL,
            &["freed already"],
        );
        assert_eq!(nvme_layer_destroy(layer), 0);
        refused(nvme_layer_destroy(layer), libc::EBADF, &["closed already"]);
        refused(
            nvme_dma_alloc(layer, 4096, &mut (null_mut())),
            libc::EBADF,
            &["closed already"],
        );
        refused(
            nvme_bdev_open(layer, nul.as_ptr(), None, null_mut(), &mut (null_mut())),
            libc::EBADF,
            &["closed already"],
        );
        assert_eq!(d.calls.get(), 1, "only the accepted read called back");
    }
}

/// Statistics through the C API match the I/O done: a round-robin multipath bdev over
/// two controllers, 16 writes and 16 reads with the latency histogram on, read after
/// the channel closed (exact then).
#[test]
fn statistics_match_the_io_done() {
    use nvmebdev::iostat::*;
    let ns = Arc::new(Namespace::new(1, 1 << 10, BS as u32).unwrap());
    let nqn = "nqn.2024-01.org.example:stats";
    // SAFETY: zeroes, then filled by the library.
    let mut opts: nvme_layer_opts = unsafe { std::mem::zeroed() };
    // SAFETY: writable.
    assert_eq!(unsafe { nvme_layer_opts_init(&mut opts) }, 0);
    opts.policy = NVME_POLICY_ROUND_ROBIN;
    let layer = layer_with(Some(&opts));
    // SAFETY: a live layer.
    unsafe {
        assert_eq!(
            nvmebdev::attach_bus(layer, "c0", soft("c0", nqn, 1, &ns)),
            2
        );
        assert_eq!(
            nvmebdev::attach_bus(layer, "c1", soft("c1", nqn, 2, &ns)),
            2
        );
    }
    let b = open(layer, &format!("{nqn}:n1"), None, null_mut());
    let single = open(layer, "c0n1", None, null_mut());
    // SAFETY: live bdevs.
    unsafe {
        assert_eq!(nvme_bdev_enable_latency_histogram(b, true), 0, "{}", last());
        let rc = nvme_bdev_enable_latency_histogram(single, true);
        refused(rc, libc::EINVAL, &["c0n1", "multipath"]);
        assert_eq!(nvme_bdev_close(single), 0);
    }
    let ch = channel(b);
    let buf = dma(layer, 4 * BS as usize);
    let done: Vec<Done> = (0..32).map(|_| Done::default()).collect();
    for (i, d) in done.iter().enumerate() {
        let off = (i as u64 % 16) * 4 * BS;
        // SAFETY: live channel, a 4-block DMA buffer, `done` outlives the I/O.
        let rc = unsafe {
            if i < 16 {
                nvme_bdev_write(ch, buf.cast(), off, 4 * BS, Some(on_io), arg(d))
            } else {
                nvme_bdev_read(ch, buf.cast(), off, 2 * BS, Some(on_io), arg(d))
            }
        };
        assert_eq!(rc, 0, "{}", last());
        if i == 15 {
            wait(ch, &done[..16].iter().collect::<Vec<_>>());
        }
    }
    wait(ch, &done.iter().collect::<Vec<_>>());
    // SAFETY: live handles; the channel drained.
    assert_eq!(unsafe { nvme_channel_close(ch) }, 0, "{}", last());

    // SAFETY: plain data; zeroes are a valid value.
    let mut s: nvme_bdev_iostat = unsafe { std::mem::zeroed() };
    // SAFETY: live bdev, writable struct.
    assert_eq!(unsafe { nvme_bdev_get_iostat(b, &mut s) }, 0, "{}", last());
    assert_eq!((s.write_ops, s.write_bytes), (16, 16 * 4 * BS));
    assert_eq!((s.read_ops, s.read_bytes), (16, 16 * 2 * BS));
    assert_eq!((s.completed, s.errors, s.failovers), (32, 0, 0));
    assert_eq!(s.latency_count, 32, "every I/O timed");
    assert_eq!(s.latency_buckets.iter().sum::<u64>(), 32);
    assert!(s.latency_p50_ns > 0 && s.latency_p50_ns <= s.latency_p99_ns);
    assert!(s.latency_ticks_per_sec > 0);
    assert_eq!(s.paths, 2);
    let mut submitted = 0;
    let mut ctrls = Vec::new();
    for i in 0..2 {
        // SAFETY: plain data; zeroes are a valid value.
        let mut p: nvme_path_iostat = unsafe { std::mem::zeroed() };
        assert_eq!(
            // SAFETY: live bdev, writable struct.
            unsafe { nvme_bdev_get_path_iostat(b, i, &mut p) },
            0,
            "{}",
            last()
        );
        submitted += p.submitted;
        assert!(p.submitted > 0, "round robin used both paths");
        // SAFETY: NUL-terminated by the call.
        ctrls.push(
            unsafe { CStr::from_ptr(p.controller.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        );
    }
    ctrls.sort();
    assert_eq!(ctrls, ["c0", "c1"]);
    assert_eq!(submitted, 32, "the paths' I/Os add up to the bdev's");
    // SAFETY: as above.
    unsafe {
        let mut p: nvme_path_iostat = std::mem::zeroed();
        refused(
            nvme_bdev_get_path_iostat(b, 2, &mut p),
            libc::ENOENT,
            &["the bdev has 2"],
        );
        refused(
            nvme_bdev_get_iostat(b, null_mut()),
            libc::EINVAL,
            &["stat is NULL"],
        );
        assert_eq!(nvme_bdev_close(b), 0);
        refused(
            nvme_bdev_get_iostat(b, &mut s),
            libc::EBADF,
            &["closed already"],
        );
        assert_eq!(nvme_layer_destroy(layer), 0);
    }
}

/// The caller's own memory registered with nvme_mem_register carries I/O with no copy
/// (written from it, read back into another part of it); misaligned, overlapping,
/// freed-as-DMA and unregistered-twice calls are refused; after unregistering, I/O
/// from it is refused.
#[test]
fn registered_caller_memory_carries_io() {
    let ns = Arc::new(Namespace::new(1, 1 << 10, BS as u32).unwrap());
    let layer = layer_with(None);
    assert_eq!(
        // SAFETY: a live layer.
        unsafe {
            nvmebdev::attach_bus(
                layer,
                "c0",
                soft("c0", "nqn.2024-01.org.example:mem", 1, &ns),
            )
        },
        2
    );
    let b = open(layer, "c0n1", None, null_mut());
    let ch = channel(b);
    let len = 64 << 10;
    let lay = std::alloc::Layout::from_size_align(len, NVME_MEM_REGISTER_ALIGN).unwrap();
    // SAFETY: a non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(lay) };
    assert!(!mem.is_null());
    // SAFETY: `mem` stays allocated until after nvme_mem_unregister below; the handles
    // are live; bad calls are made on purpose.
    unsafe {
        refused(
            nvme_mem_register(layer, mem.add(512).cast(), 4096),
            libc::EINVAL,
            &["multiples of 4096"],
        );
        refused(
            nvme_mem_register(layer, mem.cast(), 1000),
            libc::EINVAL,
            &["multiples of 4096"],
        );
        assert_eq!(nvme_mem_register(layer, mem.cast(), len), 0, "{}", last());
        refused(
            nvme_mem_register(layer, mem.add(4096).cast(), 4096),
            libc::EINVAL,
            &["overlaps"],
        );
        refused(
            nvme_dma_free(layer, mem.cast()),
            libc::EINVAL,
            &["nvme_mem_unregister"],
        );
        for i in 0..4096 {
            *mem.add(i) = (i * 13 + 1) as u8;
        }
        let (w, r) = (Done::default(), Done::default());
        assert_eq!(
            nvme_bdev_write(ch, mem.cast(), 8 * BS, 4096, Some(on_io), arg(&w)),
            0,
            "{}",
            last()
        );
        wait(ch, &[&w]);
        assert_eq!(
            nvme_bdev_read(
                ch,
                mem.add(32 << 10).cast(),
                8 * BS,
                4096,
                Some(on_io),
                arg(&r)
            ),
            0,
            "{}",
            last()
        );
        wait(ch, &[&r]);
        let (ws, rs) = (
            std::slice::from_raw_parts(mem, 4096),
            std::slice::from_raw_parts(mem.add(32 << 10), 4096),
        );
        same(rs, ws, "the data read back into registered memory");
        refused(
            nvme_bdev_read(ch, mem.add(len - 512).cast(), 0, 1024, Some(on_io), arg(&r)),
            libc::EINVAL,
            &["run past the end"],
        );
        assert_eq!(nvme_mem_unregister(layer, mem.cast()), 0, "{}", last());
        refused(
            nvme_mem_unregister(layer, mem.cast()),
            libc::EINVAL,
            &["unregistered already"],
        );
        refused(
            nvme_bdev_read(ch, mem.cast(), 0, BS, Some(on_io), arg(&r)),
            libc::EINVAL,
            &["not DMA memory"],
        );
        let buf = dma(layer, 4096);
        refused(
            nvme_mem_unregister(layer, buf.cast()),
            libc::EINVAL,
            &["nvme_dma_free"],
        );
        assert_eq!(nvme_dma_free(layer, buf.cast()), 0);
        std::alloc::dealloc(mem, lay);
        assert_eq!(nvme_channel_close(ch), 0);
        assert_eq!(nvme_bdev_close(b), 0);
        assert_eq!(nvme_layer_destroy(layer), 0);
    }
}
