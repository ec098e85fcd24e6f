// SPDX-License-Identifier: GPL-2.0-only
//! What the C glue (`glue.c`) calls. Each function takes plain values and pointers
//! from fio, catches panics (a panic must not unwind into fio's C frames) and reports
//! failures through fio's logger.

use crate::engine::{self, Kind, Op, Queued, Thread};
use crate::log;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

fn kind(k: c_int) -> Kind {
    if k == 1 {
        Kind::Bdev
    } else {
        Kind::Nvme
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn text<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Runs `f`, turning an error or a panic into a logged message and `-1`.
fn guarded(f: impl FnOnce() -> Result<(), String>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            log::err(&msg);
            -1
        }
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            log::err(&format!("nvme-fio: internal error (panic): {why}"));
            -1
        }
    }
}

/// The glue's constructor hands over fio's `log_err` and `log_info`.
#[no_mangle]
pub extern "C" fn nvme_fio_set_logger(err: log::LogFn, info: log::LogFn) {
    log::set(err, info);
    log::install();
}

/// The glue's destructor (process exit, or the library unloaded): the block layer
/// shuts its controllers down in order. A killed fio sends nothing: the device is left
/// to VFIO's reset.
#[no_mangle]
pub extern "C" fn nvme_fio_shutdown() {
    // Nothing to report to fio: a panic must not unwind into C.
    let _ = guarded(|| {
        engine::global_shutdown();
        Ok(())
    });
}

/// The `spdk` engine's `struct ioengine_ops`, from the glue's constructor.
static SPDK_OPS: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// The glue's constructor hands over the `spdk` engine's ops.
#[no_mangle]
pub extern "C" fn nvme_fio_set_ops(ops: *mut c_void) {
    SPDK_OPS.store(ops, Ordering::Release);
}

/// fio's `--ioengine=external:/path/libnvme_fio.so` loader looks up `get_ioengine`
/// when the library exports no `ioengine` symbol: the `spdk` engine.
///
/// # Safety
/// `ops` is writable.
#[no_mangle]
pub unsafe extern "C" fn get_ioengine(ops: *mut *mut c_void) {
    // SAFETY: per this function's contract.
    unsafe { *ops = SPDK_OPS.load(Ordering::Acquire) };
}

/// Called by the glue's constructor with fio's `fio_version_string` (null when the
/// loader is not fio): a message when the versions differ, else null.
///
/// # Safety
/// `running` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_check_loader(running: *const c_char) -> *const c_char {
    // SAFETY: per this function's contract.
    let running = unsafe { text(running) };
    match crate::loader_mismatch(running) {
        None => std::ptr::null(),
        // Leaked on purpose: the process exits right after printing it.
        Some(msg) => std::ffi::CString::new(msg).map_or(std::ptr::null(), |c| c.into_raw()),
    }
}

/// A job's setup: the process-wide block layer (and the bdev engine's config).
///
/// # Safety
/// `json_conf` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_global_setup(
    k: c_int,
    json_conf: *const c_char,
    mem_mb: u32,
) -> c_int {
    // SAFETY: per this function's contract.
    let conf = unsafe { text(json_conf) };
    guarded(|| engine::global_setup(kind(k), conf, mem_mb))
}

/// Copies the `index`th bdev name of the config into `out`; returns its length, 0 past
/// the end.
///
/// # Safety
/// `out` points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_bdev_names(index: c_int, out: *mut c_char, len: usize) -> c_int {
    let names = engine::bdev_names();
    let Some(name) = usize::try_from(index).ok().and_then(|i| names.get(i)) else {
        return 0;
    };
    if name.len() + 1 > len {
        return 0;
    }
    // SAFETY: `out` has `len` bytes, and name.len() + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), out.cast::<u8>(), name.len());
        *out.add(name.len()) = 0;
    }
    name.len() as c_int
}

/// Resolves a job's file: its target index and size in bytes.
///
/// # Safety
/// `filename` is a NUL-terminated string; `target` and `size` are writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_resolve(
    k: c_int,
    filename: *const c_char,
    target: *mut u32,
    size: *mut u64,
) -> c_int {
    // SAFETY: per this function's contract.
    let name = unsafe { text(filename) }.unwrap_or("");
    guarded(|| {
        let (t, s) = engine::resolve(kind(k), name)?;
        // SAFETY: per this function's contract.
        unsafe {
            *target = t;
            *size = s;
        }
        Ok(())
    })
}

/// A fio thread's state, or null (with a message).
///
/// # Safety
/// `job` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_thread_new(
    k: c_int,
    job: *const c_char,
    iodepth: u32,
    print_qid: c_int,
    stats: c_int,
) -> *mut c_void {
    // SAFETY: per this function's contract.
    let job = unsafe { text(job) }.unwrap_or("?");
    let t = Thread::new(kind(k), job, iodepth, print_qid != 0, stats != 0);
    Box::into_raw(Box::new(t)).cast()
}

/// Every `getevents` hands back all the I/Os that completed, whatever fio's `max`
/// (the job left `iodepth_batch_complete_max` at its default; glue.c says why).
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`].
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_thread_reap_all(t: *mut c_void) {
    // SAFETY: per this function's contract.
    unsafe { thread(t) }.reap_all();
}

/// # Safety
/// `t` came from [`nvme_fio_thread_new`] and is used by one thread at a time.
unsafe fn thread<'a>(t: *mut c_void) -> &'a mut Thread {
    // SAFETY: per the caller's contract.
    unsafe { &mut *t.cast::<Thread>() }
}

/// Opens `target` for the thread; its slot goes to `slot`.
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`]; `filename` NUL-terminated; `slot` writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_open(
    t: *mut c_void,
    target: u32,
    filename: *const c_char,
    slot: *mut u32,
) -> c_int {
    // SAFETY: per this function's contract.
    let (th, name) = unsafe { (thread(t), text(filename).unwrap_or("?")) };
    guarded(|| {
        let s = th.open(target, name)?;
        // SAFETY: per this function's contract.
        unsafe { *slot = s };
        Ok(())
    })
}

/// fio's I/O memory for the thread.
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`]; `ptr` writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_iomem_alloc(
    t: *mut c_void,
    len: usize,
    ptr: *mut *mut c_void,
) -> c_int {
    // SAFETY: per this function's contract.
    let th = unsafe { thread(t) };
    guarded(|| {
        let p = th.iomem_alloc(len)?;
        // SAFETY: per this function's contract.
        unsafe { *ptr = p.cast() };
        Ok(())
    })
}

/// Queues an I/O: 0 queued, 1 busy, otherwise the errno it completed with.
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`]; `buf` points into the thread's I/O memory for
/// reads and writes.
// Not inlined into Rust callers (the benchmark): fio calls it through the C glue.
#[inline(never)]
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_queue(
    t: *mut c_void,
    slot: u32,
    op: c_int,
    offset: u64,
    len: u64,
    buf: *const c_void,
    io_u: *mut c_void,
) -> c_int {
    // SAFETY: per this function's contract.
    let th = unsafe { thread(t) };
    let op = match op {
        0 => Op::Read,
        1 => Op::Write,
        2 => Op::Trim,
        3 => Op::Flush,
        _ => return libc::EINVAL,
    };
    match th.queue(slot, op, offset, len, buf.cast(), io_u as u64) {
        Queued::InFlight => 0,
        Queued::Busy => 1,
        Queued::Failed(errno) => errno,
    }
}

/// Reaps completions: at least `min` unless `timeout_ns` (>= 0) passes first.
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`].
// Not inlined into Rust callers (the benchmark): fio calls it through the C glue.
#[inline(never)]
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_getevents(
    t: *mut c_void,
    min: u32,
    max: u32,
    timeout_ns: i64,
) -> c_int {
    // SAFETY: per this function's contract.
    let th = unsafe { thread(t) };
    let timeout = u64::try_from(timeout_ns).ok().map(Duration::from_nanos);
    th.getevents(min as usize, max as usize, timeout) as c_int
}

/// The `i`th completion of the last `getevents`: fio's `io_u`, its status in `status`.
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`]; `i` below what `getevents` returned; `status`
/// writable.
// Not inlined into Rust callers (the benchmark): fio calls it through the C glue.
#[inline(never)]
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_event(t: *mut c_void, i: c_int, status: *mut u16) -> *mut c_void {
    // SAFETY: per this function's contract.
    let (io_u, st) = unsafe { thread(t) }.event(i as usize);
    // SAFETY: per this function's contract.
    unsafe { *status = st };
    io_u as *mut c_void
}

/// A failed completion, reported once per kind.
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`].
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_report_error(
    t: *mut c_void,
    slot: u32,
    status: u16,
    offset: u64,
) {
    // SAFETY: per this function's contract.
    unsafe { thread(t) }.report_error(slot, status, offset)
}

/// The thread's end: drains, reports, frees.
///
/// # Safety
/// `t` from [`nvme_fio_thread_new`], not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn nvme_fio_thread_free(t: *mut c_void) {
    // SAFETY: per this function's contract: `t` is the box made by thread_new.
    let th = unsafe { Box::from_raw(t.cast::<Thread>()) };
    let _ = catch_unwind(AssertUnwindSafe(|| th.finish()));
}
