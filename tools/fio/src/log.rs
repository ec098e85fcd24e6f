// SPDX-License-Identifier: GPL-2.0-only
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

/// The library's messages (the driver's and the block layer's, through the `log`
/// crate) go where the engine's go: warnings and errors through fio's `log_err`,
/// the rest through `log_info`.
#[derive(Debug)]
struct FioLogger;

impl ::log::Log for FioLogger {
    fn enabled(&self, metadata: &::log::Metadata<'_>) -> bool {
        metadata.level() <= ::log::Level::Info
    }

    fn log(&self, record: &::log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        if record.level() <= ::log::Level::Warn {
            err(&msg);
        } else {
            info(&msg);
        }
    }

    fn flush(&self) {}
}

/// Installs [`FioLogger`] as the process's logger, unless one is set already (fio
/// with another engine of ours, or a host program).
pub(crate) fn install() {
    static LOGGER: FioLogger = FioLogger;
    if ::log::set_logger(&LOGGER).is_ok() {
        ::log::set_max_level(::log::LevelFilter::Info);
    }
}

/// Information fio users expect on standard output (fio's `log_info`).
pub(crate) fn info(msg: &str) {
    emit(&INFO, msg)
}
