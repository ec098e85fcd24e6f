// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Errors at the C boundary. Every function returns 0 (or a count) on success and a
//! negative errno on failure, and keeps a message naming the problem and the fix for
//! the calling thread ([`nvme_last_error`]); [`nvme_strerror`] says what each errno
//! means in this API.
//!
//! The message lives in a fixed per-thread buffer, written through `fmt::Write`: a
//! failing call on the data path (a bad buffer, a full channel) formats its message
//! without allocating.

use ::nvme_bdev::Error;
use std::cell::RefCell;
use std::ffi::{c_char, c_int};
use std::fmt::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Longest message kept (longer ones are cut, the last byte is the NUL).
const MESSAGE_MAX: usize = 1024;

thread_local! {
    static LAST: RefCell<Message> = const {
        RefCell::new(Message { buf: [0; MESSAGE_MAX], len: 0 })
    };
}

struct Message {
    buf: [u8; MESSAGE_MAX],
    len: usize,
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // One byte stays for the NUL; a NUL inside the text would end it early.
        for &b in s.as_bytes() {
            if self.len + 1 >= MESSAGE_MAX {
                break;
            }
            self.buf[self.len] = if b == 0 { b'?' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

/// A failed call: the negative errno to return. Made only by [`fail`], which records
/// the message first.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) c_int);

/// Records `args` as this thread's last error and returns `-errno`.
pub(crate) fn record(errno: c_int, args: fmt::Arguments<'_>) -> Fail {
    LAST.with(|m| {
        let mut m = m.borrow_mut();
        m.len = 0;
        let _ = m.write_fmt(args);
        let len = m.len;
        m.buf[len] = 0;
    });
    Fail(-errno)
}

/// `fail!(EINVAL, "format", args...)`: record the message, make the [`Fail`].
macro_rules! fail {
    ($errno:expr, $($arg:tt)*) => {
        $crate::error::record($errno, format_args!($($arg)*))
    };
}
pub(crate) use fail;

/// The errno for a block layer error.
pub(crate) fn errno_of(e: &Error) -> c_int {
    use libc::*;
    #[allow(unreachable_patterns)] // the enums may grow (#[non_exhaustive] coming)
    match e {
        Error::Driver(d) => match d {
            nvme_driver::Error::Busy(_) => ENOMEM,
            nvme_driver::Error::DmaExhausted(_) => ENOMEM,
            nvme_driver::Error::Timeout { .. } => ETIMEDOUT,
            nvme_driver::Error::BadBuffer(_)
            | nvme_driver::Error::LbaOutOfRange { .. }
            | nvme_driver::Error::InvalidArgument(_)
            | nvme_driver::Error::Parse(..)
            | nvme_driver::Error::NoSuchNamespace { .. } => EINVAL,
            _ => EIO,
        },
        Error::NoSuchBdev { .. } | Error::NoSuchController { .. } => ENODEV,
        Error::InvalidOption(_) | Error::InvalidIo(_) | Error::PathMismatch(_) => EINVAL,
        Error::Busy(_) => ENOMEM,
        Error::Exhausted(_) => ENOSPC,
        Error::DuplicateController(_) | Error::DuplicatePath(_) => EEXIST,
        Error::Stopped(_) => ESHUTDOWN,
        Error::Io { .. } => EIO,
        _ => EIO,
    }
}

/// Records a block layer error (its own message, which names the problem) with
/// `what` in front, and returns its errno.
pub(crate) fn bdev_fail(what: &str, e: &Error) -> Fail {
    record(errno_of(e), format_args!("{what}: {e}"))
}

/// Runs the body of an exported function: its result as a C return value. A panic
/// (a bug in this library) is caught here, never unwound into C.
pub(crate) fn call(f: impl FnOnce() -> Result<c_int, Fail>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => n,
        Ok(Err(Fail(e))) => e,
        Err(_) => {
            fail!(
                libc::EFAULT,
                "internal error: libnvmebdev panicked (a bug: please report it with the \
                 standard error output above)"
            )
            .0
        }
    }
}

/// The message of the last call that failed on this thread: what was wrong and how
/// to fix it. Empty if no call failed yet.
///
/// The string stays valid until the next call into this library on the same thread.
/// It is never NULL.
#[no_mangle]
pub extern "C" fn nvme_last_error() -> *const c_char {
    LAST.with(|m| m.borrow().buf.as_ptr().cast())
}

/// What a negative errno returned by this library means, in this API's terms (the
/// details of one failure are in nvme_last_error()). Takes `rc` as returned (negative)
/// or its absolute value. Never NULL; the string is static.
#[no_mangle]
pub extern "C" fn nvme_strerror(rc: c_int) -> *const c_char {
    use libc::*;
    let s: &'static std::ffi::CStr = match rc.checked_abs().unwrap_or(0) {
        0 => c"success",
        EINVAL => c"invalid argument: a NULL pointer, a size or offset not a multiple of the block size, a buffer not from nvme_dma_alloc(), blocks outside the bdev, or a bad option (nvme_last_error() names which)",
        EBADF => c"not an open handle: it was closed or destroyed already, or it is another kind of handle",
        ENODEV => c"no such bdev or controller (nvme_last_error() lists the known names)",
        ENOMEM => c"no room: the channel has as many I/Os in flight as it can track, or DMA memory ran out; poll the channel and resubmit, or wait with nvme_bdev_queue_io_wait()",
        EBUSY => c"still in use: close the channels of a bdev before the bdev, the bdevs before the layer, and do not poll or close a channel from inside its own callbacks",
        ENOSPC => c"a bounded table is full (DMA buffers per layer, waiters per channel); free or run some first",
        EEXIST => c"already exists: a controller of that name is attached",
        ESHUTDOWN => c"the layer or the channel is stopping or stopped",
        ETIMEDOUT => c"the controller did not answer in time",
        ENAMETOOLONG => c"a name does not fit the buffer given",
        ENOENT => c"no entry at that index",
        EIO => c"the device or the operating system failed (nvme_last_error() says how)",
        EFAULT => c"internal error in libnvmebdev (a bug)",
        _ => c"unknown error code (not one this library returns)",
    };
    s.as_ptr()
}
