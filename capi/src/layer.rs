// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The layer handle: create and destroy a block layer, attach and detach controllers
//! by transport ID, list the bdevs.

use crate::dma::DmaTable;
use crate::error::{bdev_fail, call, fail, Fail};
use crate::handle::{self, Shared};
use ::nvme_bdev::{BlockLayer, LayerOptions, Policy};
use nvme_tools::trid::TransportId;
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Multipath policy: all I/O on the first usable path, the others stand by (default).
pub const NVME_POLICY_ACTIVE_PASSIVE: u32 = 0;
/// Multipath policy: each I/O on the next usable path in turn.
pub const NVME_POLICY_ROUND_ROBIN: u32 = 1;
/// Multipath policy: each I/O on the usable path with the fewest I/Os in flight.
pub const NVME_POLICY_LEAST_QUEUE_DEPTH: u32 = 2;

/// Options of a layer. Fill with nvme_layer_opts_init(), then change fields.
/// Times are in milliseconds; the rule is reconnect delay <= fast I/O fail timeout
/// <= controller loss timeout.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvme_layer_opts {
    /// sizeof(struct nvme_layer_opts), set by nvme_layer_opts_init(): lets a newer
    /// library tell an older caller's struct apart.
    pub opts_size: usize,
    /// NVME_POLICY_ACTIVE_PASSIVE, NVME_POLICY_ROUND_ROBIN or
    /// NVME_POLICY_LEAST_QUEUE_DEPTH.
    pub policy: u32,
    /// I/Os one channel of a multipath bdev can have in flight (default 4096).
    pub channel_depth: u32,
    /// How long I/O waits for a usable path before failing (default 5000; 0 fails at
    /// once).
    pub fast_io_fail_timeout_ms: u64,
    /// Interval between reconnect attempts of a lost controller (default 1000).
    pub reconnect_delay_ms: u64,
    /// How long a lost controller is retried before its paths are removed (default
    /// 30000; -1 forever, 0 never reconnect).
    pub ctrl_loss_timeout_ms: i64,
}

/// A block layer (opaque): controllers, bdevs, DMA buffers.
// A handle points at a `Shared<LayerState>`; this type only names it for C.
#[derive(Debug)]
pub struct nvme_layer {
    _opaque: [u8; 0],
}

/// What a layer handle holds.
pub(crate) struct LayerState {
    pub(crate) layer: BlockLayer,
    /// The options it was made with (channel table sizes follow them).
    pub(crate) opts: LayerOptions,
    pub(crate) dma: Arc<DmaTable>,
    /// Bdev handles open on this layer (destroy waits for none).
    pub(crate) bdevs_open: Arc<AtomicUsize>,
}

/// The layer behind `p`, checked.
///
/// # Safety
/// `p` is NULL or a handle from nvme_layer_create().
pub(crate) unsafe fn layer_state<'a>(
    p: *const nvme_layer,
    what: &str,
) -> Result<&'a Shared<LayerState>, Fail> {
    // SAFETY: forwarded; a layer handle points at a `Shared<LayerState>`.
    unsafe { Shared::get(p.cast::<Shared<LayerState>>(), handle::LAYER, what) }
}

/// A C string argument as `&str`, refusing NULL and non-UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(fail!(libc::EINVAL, "{what} is NULL"));
    }
    // SAFETY: the caller guarantees a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| fail!(libc::EINVAL, "{what} is not UTF-8"))
}

fn defaults() -> nvme_layer_opts {
    let d = LayerOptions::default();
    nvme_layer_opts {
        opts_size: std::mem::size_of::<nvme_layer_opts>(),
        policy: NVME_POLICY_ACTIVE_PASSIVE,
        channel_depth: d.mpath.channel_depth as u32,
        fast_io_fail_timeout_ms: d.mpath.fast_io_fail_timeout_ms,
        reconnect_delay_ms: d.mpath.reconnect_delay_ms,
        ctrl_loss_timeout_ms: d.mpath.ctrl_loss_timeout_ms,
    }
}

fn layer_options(o: &nvme_layer_opts) -> Result<LayerOptions, Fail> {
    if o.opts_size != std::mem::size_of::<nvme_layer_opts>() {
        return Err(fail!(
            libc::EINVAL,
            "nvme_layer_create: opts->opts_size is {}, this library's struct nvme_layer_opts \
             has {} bytes; fill the options with nvme_layer_opts_init() first",
            o.opts_size,
            std::mem::size_of::<nvme_layer_opts>()
        ));
    }
    let mut l = LayerOptions::default();
    l.mpath.policy = match o.policy {
        NVME_POLICY_ACTIVE_PASSIVE => Policy::ActivePassive,
        NVME_POLICY_ROUND_ROBIN => Policy::RoundRobin,
        NVME_POLICY_LEAST_QUEUE_DEPTH => Policy::LeastQueueDepth,
        p => {
            return Err(fail!(
                libc::EINVAL,
                "nvme_layer_create: opts->policy {p} is not one of NVME_POLICY_ACTIVE_PASSIVE \
                 (0), NVME_POLICY_ROUND_ROBIN (1), NVME_POLICY_LEAST_QUEUE_DEPTH (2)"
            ))
        }
    };
    l.mpath.channel_depth = o.channel_depth as usize;
    l.mpath.fast_io_fail_timeout_ms = o.fast_io_fail_timeout_ms;
    l.mpath.reconnect_delay_ms = o.reconnect_delay_ms;
    l.mpath.ctrl_loss_timeout_ms = o.ctrl_loss_timeout_ms;
    Ok(l)
}

/// Fills `opts` with the defaults (and opts_size). Returns 0, or -EINVAL if NULL.
///
/// # Safety
/// `opts` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_layer_opts_init(opts: *mut nvme_layer_opts) -> c_int {
    call(|| {
        if opts.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_layer_opts_init: opts is NULL"));
        }
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { opts.write(defaults()) };
        Ok(0)
    })
}

/// Creates a block layer with no controllers and stores it in `*layer`. `opts` may be
/// NULL for the defaults. Returns 0, or -EINVAL (NULL `layer`, a bad option: the
/// message names it), -ENOMEM.
///
/// # Safety
/// `opts` is NULL or points at a struct filled by nvme_layer_opts_init(); `layer` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_layer_create(
    opts: *const nvme_layer_opts,
    layer: *mut *mut nvme_layer,
) -> c_int {
    call(|| {
        if layer.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_layer_create: layer is NULL"));
        }
        let o = if opts.is_null() {
            defaults()
        } else {
            // SAFETY: the caller guarantees a readable struct; opts_size is read first
            // and checked before the rest is used.
            unsafe { opts.read() }
        };
        let opts = layer_options(&o)?;
        let bl = BlockLayer::new(opts.clone()).map_err(|e| bdev_fail("nvme_layer_create", &e))?;
        let state = LayerState {
            layer: bl,
            opts,
            dma: Arc::new(DmaTable::new()),
            bdevs_open: Arc::new(AtomicUsize::new(0)),
        };
        let p = Shared::into_raw(handle::LAYER, state);
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *layer = p.cast() };
        Ok(0)
    })
}

/// Shuts the layer down and frees it: every controller gets the orderly stop (a Flush
/// when it has a volatile write cache, then the shutdown notification, CC.SHN, waited
/// for), then its DMA buffers are freed. Close every bdev first. Returns 0, or
/// -EINVAL (NULL), -EBADF (destroyed already), -EBUSY (bdevs still open).
///
/// # Safety
/// `layer` is NULL or a handle from nvme_layer_create().
#[no_mangle]
pub unsafe extern "C" fn nvme_layer_destroy(layer: *mut nvme_layer) -> c_int {
    call(|| {
        // SAFETY: the caller passes a layer handle or NULL.
        let shell = unsafe { layer_state(layer, "nvme_layer_destroy: layer") }?;
        let state = shell.close("nvme_layer_destroy", |l| {
            match l.bdevs_open.load(Ordering::Acquire) {
                0 => Ok(()),
                n => Err(fail!(
                    libc::EBUSY,
                    "nvme_layer_destroy: {n} bdev handle(s) of this layer are open; \
                     close them with nvme_bdev_close() first"
                )),
            }
        })?;
        state.layer.shutdown();
        drop(state);
        Ok(0)
    })
}

/// Attaches the controller at transport ID `trid` (SPDK's form:
/// "trtype:PCIe traddr:0000:01:00.0"; the PCI function must be bound to vfio-pci)
/// under the name `name`. Each of its namespaces becomes a bdev `<name>n<nsid>` and a
/// path of the multipath bdev `<subnqn>:n<nsid>`, shared with every controller that
/// reaches the same namespace. Returns the number of bdevs it made or joined (list
/// them with nvme_layer_bdev_name()), or -EINVAL (NULL, bad trid: the message names
/// the field), -EBADF, -EEXIST (name taken), -EIO (the controller did not come up).
///
/// # Safety
/// `layer` is NULL or a layer handle; `name` and `trid` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn nvme_layer_attach(
    layer: *mut nvme_layer,
    name: *const c_char,
    trid: *const c_char,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a layer handle or NULL, and C strings or NULL.
        let (shell, name, trid) = unsafe {
            (
                layer_state(layer, "nvme_layer_attach: layer")?,
                str_arg(name, "nvme_layer_attach: name")?,
                str_arg(trid, "nvme_layer_attach: trid")?,
            )
        };
        let t =
            TransportId::parse(trid).map_err(|e| fail!(libc::EINVAL, "nvme_layer_attach: {e}"))?;
        if let Some(ns) = t.nsid {
            return Err(fail!(
                libc::EINVAL,
                "nvme_layer_attach: trid '{trid}' names namespace {ns}: attach takes a whole \
                 controller (leave out ns:); open the namespace's bdev \"{name}n{ns}\" after"
            ));
        }
        let connector = ::nvme_bdev::layer::vfio_connector(&t.traddr);
        shell.with("nvme_layer_attach: layer", |l| {
            let names = l
                .layer
                .attach(name, connector)
                .map_err(|e| bdev_fail(&format!("nvme_layer_attach {name} ({t})"), &e))?;
            Ok(names.len() as c_int)
        })
    })
}

/// Detaches controller `name`: its paths leave their multipath bdevs, its namespace
/// bdevs go away (their channels fail from then on). Returns 0, or -EINVAL, -EBADF,
/// -ENODEV (no such controller: the message lists the attached ones).
///
/// # Safety
/// `layer` is NULL or a layer handle; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn nvme_layer_detach(layer: *mut nvme_layer, name: *const c_char) -> c_int {
    call(|| {
        // SAFETY: the caller passes a layer handle or NULL, and a C string or NULL.
        let (shell, name) = unsafe {
            (
                layer_state(layer, "nvme_layer_detach: layer")?,
                str_arg(name, "nvme_layer_detach: name")?,
            )
        };
        shell.with("nvme_layer_detach: layer", |l| {
            l.layer
                .detach(name)
                .map_err(|e| bdev_fail("nvme_layer_detach", &e))?;
            Ok(0)
        })
    })
}

/// Copies the name of the layer's bdev number `index` (0, 1, ...) into `buf` of `len`
/// bytes, NUL-terminated. Returns 0, or -ENOENT (no bdev at that index: the list
/// ended), -ENAMETOOLONG (buf too small: NVME_BDEV_NAME_MAX always fits), -EINVAL,
/// -EBADF.
///
/// # Safety
/// `layer` is NULL or a layer handle; `buf` is NULL or `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nvme_layer_bdev_name(
    layer: *mut nvme_layer,
    index: usize,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a layer handle or NULL.
        let shell = unsafe { layer_state(layer, "nvme_layer_bdev_name: layer") }?;
        if buf.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_layer_bdev_name: buf is NULL"));
        }
        let names = shell.with("nvme_layer_bdev_name: layer", |l| Ok(l.layer.bdev_names()))?;
        let Some(name) = names.get(index) else {
            return Err(fail!(
                libc::ENOENT,
                "nvme_layer_bdev_name: no bdev at index {index}; the layer has {}",
                names.len()
            ));
        };
        // SAFETY: the caller guarantees `len` writable bytes at `buf`.
        unsafe { copy_name(name, buf, len, "nvme_layer_bdev_name") }?;
        Ok(0)
    })
}

/// Copies `name` and a NUL into `buf` (`len` bytes), or refuses if it does not fit.
///
/// # Safety
/// `buf` is `len` writable bytes.
pub(crate) unsafe fn copy_name(
    name: &str,
    buf: *mut c_char,
    len: usize,
    what: &str,
) -> Result<(), Fail> {
    if name.len() + 1 > len {
        return Err(fail!(
            libc::ENAMETOOLONG,
            "{what}: the name {name:?} needs {} bytes, the buffer has {len}",
            name.len() + 1
        ));
    }
    // SAFETY: `name.len() + 1 <= len` bytes are writable at `buf`; the source is a
    // separate Rust string.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), buf.cast::<u8>(), name.len());
        *buf.add(name.len()) = 0;
    }
    Ok(())
}

/// Attaches a controller given as a bus (a software controller in tests, a VFIO bus
/// opened by the caller) to the layer of a C handle: the Rust side of
/// nvme_layer_attach(), for Rust tests and programs that mix the two APIs. Returns
/// what nvme_layer_attach() returns.
///
/// # Safety
/// `layer` is NULL or a handle from nvme_layer_create().
pub unsafe fn attach_bus(
    layer: *mut nvme_layer,
    name: &str,
    bus: Arc<dyn nvme_driver::bus::Bus>,
) -> c_int {
    call(|| {
        // SAFETY: forwarded from the caller.
        let shell = unsafe { layer_state(layer, "attach_bus: layer") }?;
        shell.with("attach_bus: layer", |l| {
            let names = l
                .layer
                .attach_bus(name, bus)
                .map_err(|e| bdev_fail("attach_bus", &e))?;
            Ok(names.len() as c_int)
        })
    })
}
