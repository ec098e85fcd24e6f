// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The bdev handle: open a bdev by name (with an event callback, as SPDK's
//! `spdk_bdev_open_ext`), its geometry, its events, close.

use crate::dma::DmaTable;
use crate::error::{bdev_fail, call, fail, Fail};
use crate::handle::{self, Shared};
use crate::layer::{copy_name, layer_state, nvme_layer, str_arg};
use ::nvme_bdev::{Bdev, BdevEvent, EventReceiver, LayerOptions, EVENT_QUEUE_DEFAULT};
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest bdev name, with its NUL (an NQN is at most 223 bytes).
pub const NVME_BDEV_NAME_MAX: usize = 256;

/// Not one of the kinds below (a kind added in a later version).
pub const NVME_BDEV_EVENT_OTHER: u32 = 0;
/// A multipath path left the usable set: `controller`, `connected`, `ana_state`
/// (NVME_ANA_NONE when the path left the bdev altogether).
pub const NVME_BDEV_EVENT_PATH_DOWN: u32 = 1;
/// A multipath path entered the usable set: `controller`, `connected`, `ana_state`.
pub const NVME_BDEV_EVENT_PATH_UP: u32 = 2;
/// The ANA state of a path changed: `controller`, `old_ana_state`, `ana_state`.
pub const NVME_BDEV_EVENT_ANA_CHANGE: u32 = 3;
/// A controller behind the bdev failed (the layer reconnects it until the loss
/// timeout), was detached or shut down: `controller`.
pub const NVME_BDEV_EVENT_CONTROLLER_REMOVED: u32 = 4;
/// A controller behind the bdev was attached or reconnected: `controller`.
pub const NVME_BDEV_EVENT_CONTROLLER_ADDED: u32 = 5;
/// The namespace changed size: `old_blocks`, `new_blocks` (not generated yet: the
/// layer does not re-read a namespace's size while attached).
pub const NVME_BDEV_EVENT_RESIZE: u32 = 6;
/// The bdev is gone: its channels fail from now on; close them and the bdev.
pub const NVME_BDEV_EVENT_REMOVE: u32 = 7;
/// `dropped` events were lost here because the queue was full: re-read the state.
pub const NVME_BDEV_EVENT_DROPPED: u32 = 8;

/// No ANA state (the path left the bdev).
pub const NVME_ANA_NONE: u8 = 0;
/// ANA optimized (the value the NVMe base specification gives it, ANA log page).
pub const NVME_ANA_OPTIMIZED: u8 = 1;
/// ANA non-optimized.
pub const NVME_ANA_NON_OPTIMIZED: u8 = 2;
/// ANA inaccessible.
pub const NVME_ANA_INACCESSIBLE: u8 = 3;
/// ANA persistent loss.
pub const NVME_ANA_PERSISTENT_LOSS: u8 = 4;
/// ANA change (in transition).
pub const NVME_ANA_CHANGE: u8 = 15;

/// One event of a bdev, handed to the event callback. Strings and the struct are
/// valid only during the callback.
#[repr(C)]
#[derive(Debug)]
pub struct nvme_bdev_event {
    /// NVME_BDEV_EVENT_*.
    pub kind: u32,
    /// The bdev's name (NULL for NVME_BDEV_EVENT_DROPPED).
    pub bdev: *const c_char,
    /// The controller's name (NULL when the event is not about one controller).
    pub controller: *const c_char,
    /// PATH_UP / PATH_DOWN: the path's controller is live and its queues connected.
    pub connected: bool,
    /// PATH_UP / PATH_DOWN / ANA_CHANGE: the path's ANA state now (NVME_ANA_*).
    pub ana_state: u8,
    /// ANA_CHANGE: the state before.
    pub old_ana_state: u8,
    /// RESIZE: blocks before.
    pub old_blocks: u64,
    /// RESIZE: blocks now.
    pub new_blocks: u64,
    /// DROPPED: how many events were lost.
    pub dropped: u64,
}

/// Called with each event of a bdev, on the thread that calls nvme_bdev_poll_events().
pub type nvme_bdev_event_cb =
    Option<unsafe extern "C" fn(event: *const nvme_bdev_event, event_ctx: *mut c_void)>;

/// Geometry and identity of a bdev.
#[repr(C)]
#[derive(Debug)]
pub struct nvme_bdev_info {
    /// The bdev's name, NUL-terminated.
    pub name: [c_char; NVME_BDEV_NAME_MAX],
    /// Bytes per block: offsets and sizes of I/O are multiples of it.
    pub block_size: u32,
    /// Blocks in the bdev.
    pub num_blocks: u64,
    /// True for a multipath bdev (`<subnqn>:n<nsid>`), false for a namespace bdev of
    /// one controller (`<controller>n<nsid>`).
    pub multipath: bool,
}

/// An open bdev (opaque).
// A handle points at a `Shared<BdevState>`; this type only names it for C.
#[derive(Debug)]
pub struct nvme_bdev {
    _opaque: [u8; 0],
}

struct Events {
    rx: EventReceiver,
    cb: unsafe extern "C" fn(*const nvme_bdev_event, *mut c_void),
    ctx: *mut c_void,
}

/// What a bdev handle holds.
pub(crate) struct BdevState {
    pub(crate) bdev: Bdev,
    pub(crate) dma: Arc<DmaTable>,
    /// I/Os a channel of this bdev can have in flight: the size of its tables.
    pub(crate) channel_slots: usize,
    /// Channel handles open on this bdev (close waits for none).
    pub(crate) channels_open: Arc<AtomicUsize>,
    bdevs_open: Arc<AtomicUsize>,
    events: Option<Events>,
}

/// The bdev behind `p`, checked.
///
/// # Safety
/// `p` is NULL or a handle from nvme_bdev_open().
pub(crate) unsafe fn bdev_state<'a>(
    p: *const nvme_bdev,
    what: &str,
) -> Result<&'a Shared<BdevState>, Fail> {
    // SAFETY: forwarded; a bdev handle points at a `Shared<BdevState>`.
    unsafe { Shared::get(p.cast::<Shared<BdevState>>(), handle::BDEV, what) }
}

/// The most I/Os a channel of `bdev` accepts before refusing as busy.
fn channel_slots(bdev: &Bdev, opts: &LayerOptions) -> usize {
    match bdev {
        Bdev::Mpath(_) => opts.mpath.channel_depth,
        // The queue pair's command slots (entries - 1) and its pending ring.
        Bdev::Nvme(_) => opts.qpair.entries as usize + opts.qpair.pending_max,
    }
}

/// Opens the bdev named `name` on `layer` and stores the handle in `*bdev`. With an
/// `event_cb` (may be NULL), the bdev's events (path down/up, ANA change, controller
/// removed/added, resize, removal) queue up for nvme_bdev_poll_events(), which calls
/// `event_cb(event, event_ctx)` on the thread that calls it: never inside an I/O call
/// or a poll. Returns 0, or -EINVAL (NULL), -EBADF (closed layer), -ENODEV (no bdev of
/// that name: the message lists them).
///
/// # Safety
/// `layer` is NULL or a layer handle; `name` is NULL or NUL-terminated; `bdev` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_open(
    layer: *mut nvme_layer,
    name: *const c_char,
    event_cb: nvme_bdev_event_cb,
    event_ctx: *mut c_void,
    bdev: *mut *mut nvme_bdev,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a layer handle or NULL, and a C string or NULL.
        let (shell, name) = unsafe {
            (
                layer_state(layer, "nvme_bdev_open: layer")?,
                str_arg(name, "nvme_bdev_open: name")?,
            )
        };
        if bdev.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_bdev_open: bdev is NULL"));
        }
        let state = shell.with("nvme_bdev_open: layer", |l| {
            let b = l
                .layer
                .open(name)
                .map_err(|e| bdev_fail("nvme_bdev_open", &e))?;
            let events = match event_cb {
                None => None,
                Some(cb) => Some(Events {
                    rx: l
                        .layer
                        .subscribe(name, EVENT_QUEUE_DEFAULT)
                        .map_err(|e| bdev_fail("nvme_bdev_open", &e))?,
                    cb,
                    ctx: event_ctx,
                }),
            };
            l.bdevs_open.fetch_add(1, Ordering::AcqRel);
            Ok(BdevState {
                channel_slots: channel_slots(&b, &l.opts),
                bdev: b,
                dma: l.dma.clone(),
                channels_open: Arc::new(AtomicUsize::new(0)),
                bdevs_open: l.bdevs_open.clone(),
                events,
            })
        })?;
        let p = Shared::into_raw(handle::BDEV, state);
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *bdev = p.cast() };
        Ok(0)
    })
}

/// Closes a bdev handle. Close its channels first. Returns 0, or -EINVAL (NULL),
/// -EBADF (closed already), -EBUSY (channels still open).
///
/// # Safety
/// `bdev` is NULL or a handle from nvme_bdev_open().
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_close(bdev: *mut nvme_bdev) -> c_int {
    call(|| {
        // SAFETY: the caller passes a bdev handle or NULL.
        let shell = unsafe { bdev_state(bdev, "nvme_bdev_close: bdev") }?;
        let state = shell.close("nvme_bdev_close", |b| {
            match b.channels_open.load(Ordering::Acquire) {
                0 => Ok(()),
                n => Err(fail!(
                    libc::EBUSY,
                    "nvme_bdev_close: {n} channel(s) of this bdev are open; close them with \
                     nvme_channel_close() first"
                )),
            }
        })?;
        state.bdevs_open.fetch_sub(1, Ordering::AcqRel);
        Ok(0)
    })
}

/// Fills `*info` with the bdev's name, block size, size and kind. Returns 0, or
/// -EINVAL (NULL), -EBADF.
///
/// # Safety
/// `bdev` is NULL or a bdev handle; `info` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_get_info(
    bdev: *mut nvme_bdev,
    info: *mut nvme_bdev_info,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a bdev handle or NULL.
        let shell = unsafe { bdev_state(bdev, "nvme_bdev_get_info: bdev") }?;
        if info.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_bdev_get_info: info is NULL"));
        }
        shell.with("nvme_bdev_get_info: bdev", |b| {
            let mut out = nvme_bdev_info {
                name: [0; NVME_BDEV_NAME_MAX],
                block_size: b.bdev.block_size(),
                num_blocks: b.bdev.num_blocks(),
                multipath: b.bdev.multipath().is_some(),
            };
            // SAFETY: `out.name` is NVME_BDEV_NAME_MAX writable bytes.
            unsafe {
                copy_name(
                    b.bdev.name(),
                    out.name.as_mut_ptr(),
                    NVME_BDEV_NAME_MAX,
                    "nvme_bdev_get_info",
                )
            }?;
            // SAFETY: checked non-NULL; the caller guarantees it is writable.
            unsafe { info.write(out) };
            Ok(0)
        })
    })
}

/// The C form of `ev`; `bdev` and `controller` keep the strings alive.
fn c_event(ev: &BdevEvent, bdev: &mut CString, controller: &mut CString) -> nvme_bdev_event {
    let mut out = nvme_bdev_event {
        kind: NVME_BDEV_EVENT_OTHER,
        bdev: std::ptr::null(),
        controller: std::ptr::null(),
        connected: false,
        ana_state: NVME_ANA_NONE,
        old_ana_state: NVME_ANA_NONE,
        old_blocks: 0,
        new_blocks: 0,
        dropped: 0,
    };
    let cstring = |s: &str| CString::new(s.replace('\0', "?")).unwrap_or_default();
    let mut ctrl = None;
    #[allow(unreachable_patterns)] // BdevEvent is #[non_exhaustive]
    match ev {
        BdevEvent::PathDown {
            controller, state, ..
        } => {
            out.kind = NVME_BDEV_EVENT_PATH_DOWN;
            ctrl = Some(controller);
            if let Some(s) = state {
                out.connected = s.connected;
                out.ana_state = s.ana.to_u8();
            }
        }
        BdevEvent::PathUp {
            controller, state, ..
        } => {
            out.kind = NVME_BDEV_EVENT_PATH_UP;
            ctrl = Some(controller);
            out.connected = state.connected;
            out.ana_state = state.ana.to_u8();
        }
        BdevEvent::AnaChange {
            controller,
            old,
            new,
            ..
        } => {
            out.kind = NVME_BDEV_EVENT_ANA_CHANGE;
            ctrl = Some(controller);
            out.old_ana_state = old.to_u8();
            out.ana_state = new.to_u8();
        }
        BdevEvent::ControllerRemoved { controller, .. } => {
            out.kind = NVME_BDEV_EVENT_CONTROLLER_REMOVED;
            ctrl = Some(controller);
        }
        BdevEvent::ControllerAdded { controller, .. } => {
            out.kind = NVME_BDEV_EVENT_CONTROLLER_ADDED;
            ctrl = Some(controller);
        }
        BdevEvent::Resized {
            old_blocks,
            new_blocks,
            ..
        } => {
            out.kind = NVME_BDEV_EVENT_RESIZE;
            out.old_blocks = *old_blocks;
            out.new_blocks = *new_blocks;
        }
        BdevEvent::BdevRemoved { .. } => out.kind = NVME_BDEV_EVENT_REMOVE,
        BdevEvent::Dropped { count } => {
            out.kind = NVME_BDEV_EVENT_DROPPED;
            out.dropped = *count;
        }
        _ => {}
    }
    if let Some(b) = ev.bdev() {
        *bdev = cstring(b);
        out.bdev = bdev.as_ptr();
    }
    if let Some(c) = ctrl {
        *controller = cstring(c);
        out.controller = controller.as_ptr();
    }
    out
}

/// Delivers the bdev's queued events to its event callback, on this thread, oldest
/// first; returns how many. Call it from a thread of your choosing (a management loop,
/// a timer of a reactor); nothing is delivered anywhere else. At most 256 events wait
/// (EVENT_QUEUE_DEFAULT); beyond that they are dropped and reported as one
/// NVME_BDEV_EVENT_DROPPED. Returns -EINVAL (NULL, or the bdev was opened without an
/// event callback), -EBADF.
///
/// # Safety
/// `bdev` is NULL or a bdev handle.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_poll_events(bdev: *mut nvme_bdev) -> c_int {
    call(|| {
        // SAFETY: the caller passes a bdev handle or NULL.
        let shell = unsafe { bdev_state(bdev, "nvme_bdev_poll_events: bdev") }?;
        let mut n = 0;
        // Bounded: the queue holds EVENT_QUEUE_DEFAULT, plus a Dropped record.
        for _ in 0..=EVENT_QUEUE_DEFAULT {
            // Take one event under the handle's lock, call back without it: the
            // callback may close the bdev.
            let got = shell.with("nvme_bdev_poll_events: bdev", |b| match &b.events {
                None => Err(fail!(
                    libc::EINVAL,
                    "nvme_bdev_poll_events: this bdev was opened without an event callback; \
                     pass one to nvme_bdev_open()"
                )),
                Some(e) => Ok(e.rx.try_recv().map(|ev| (ev, e.cb, e.ctx))),
            });
            let Some((ev, cb, ctx)) = (match got {
                Ok(g) => g,
                // Closed by the callback: what was delivered counts.
                Err(_) if n > 0 => None,
                Err(f) => return Err(f),
            }) else {
                break;
            };
            let (mut b, mut c) = (CString::default(), CString::default());
            let cev = c_event(&ev, &mut b, &mut c);
            // SAFETY: the embedder's callback, given an event valid for the call.
            unsafe { cb(&cev, ctx) };
            n += 1;
        }
        Ok(n)
    })
}
