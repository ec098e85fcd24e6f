//! Messages go through fio's own logger (set by the glue's constructor), so they land
//! where fio puts its errors; before that (unit tests) they go to stderr.

use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};

/// fio's `log_err` and `log_info`, as `fn(*const c_char)`.
static ERR: AtomicUsize = AtomicUsize::new(0);
static INFO: AtomicUsize = AtomicUsize::new(0);

pub(crate) type LogFn = extern "C" fn(*const std::ffi::c_char);

pub(crate) fn set(err: LogFn, info: LogFn) {
    ERR.store(err as usize, Ordering::Release);
    INFO.store(info as usize, Ordering::Release);
}

fn emit(which: &AtomicUsize, msg: &str) {
    let f = which.load(Ordering::Acquire);
    if f == 0 {
        eprintln!("{msg}");
        return;
    }
    // SAFETY: only `set` stores here, always a valid `LogFn`.
    let f: LogFn = unsafe { std::mem::transmute::<usize, LogFn>(f) };
    let c = CString::new(msg.replace('\0', " ")).expect("NULs were replaced");
    f(c.as_ptr());
}

/// An error or warning (fio's `log_err`: stderr).
pub(crate) fn err(msg: &str) {
    emit(&ERR, msg)
}

/// Information fio users expect on standard output (fio's `log_info`).
pub(crate) fn info(msg: &str) {
    emit(&INFO, msg)
}
