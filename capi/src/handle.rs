// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Handles given to C: a small shell around the object, with a magic word that says
//! what the shell holds and whether it is still open.
//!
//! Closing a handle drops the object and marks the shell closed, but leaves the shell
//! itself (a few dozen bytes) allocated for the life of the process: a call through a
//! closed handle then finds the closed mark and fails with `-EBADF` and a message,
//! instead of reading freed memory. A pointer that never was a handle cannot be
//! detected; NULL is.

use crate::error::{fail, Fail};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::RwLock;

/// The magic of a layer handle.
pub(crate) const LAYER: u32 = 0x4c41_5952; // "LAYR"
/// The magic of a bdev handle.
pub(crate) const BDEV: u32 = 0x4244_4556; // "BDEV"
/// The magic of a channel handle.
pub(crate) const CHANNEL: u32 = 0x4348_414e; // "CHAN"
/// The magic of any closed handle.
pub(crate) const CLOSED: u32 = 0x434c_5344; // "CLSD"

/// The name of the handle kind with `magic`, for messages.
pub(crate) fn kind(magic: u32) -> &'static str {
    match magic {
        LAYER => "layer",
        BDEV => "bdev",
        CHANNEL => "channel",
        _ => "unknown",
    }
}

/// Checks the magic at the start of every shell: NULL, closed and the wrong kind are
/// refused with a message naming `what` (the parameter) and the fix.
///
/// # Safety
/// `p` is NULL or points at a shell made by this library (every shell starts with
/// its `AtomicU32` magic: `#[repr(C)]`).
pub(crate) unsafe fn check<T>(p: *const T, magic: u32, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        return Err(fail!(libc::EINVAL, "{what} is NULL"));
    }
    // SAFETY: the caller guarantees a shell, which starts with its magic; shells are
    // never freed, so a closed one is still readable.
    let found = unsafe { &*p.cast::<AtomicU32>() }.load(Ordering::Acquire);
    if found == magic {
        return Ok(());
    }
    if found == CLOSED {
        return Err(fail!(
            libc::EBADF,
            "{what}: this {} handle was closed already; open a new one",
            kind(magic)
        ));
    }
    Err(fail!(
        libc::EBADF,
        "{what} is not a {} handle (it is a {} handle, or not a handle of this library)",
        kind(magic),
        kind(found)
    ))
}

/// A shell for an object used from any thread at set-up time (a layer, a bdev): the
/// object behind a read-write lock, taken away on close.
#[repr(C)]
pub(crate) struct Shared<T> {
    magic: AtomicU32,
    state: RwLock<Option<T>>,
}

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.magic.load(Ordering::Relaxed);
        let state = if m == CLOSED { "closed" } else { kind(m) };
        f.debug_struct("Handle").field("state", &state).finish()
    }
}

impl<T> Shared<T> {
    /// A new shell holding `t`, leaked to C.
    pub(crate) fn into_raw(magic: u32, t: T) -> *mut Self {
        Box::into_raw(Box::new(Shared {
            magic: AtomicU32::new(magic),
            state: RwLock::new(Some(t)),
        }))
    }

    /// The shell behind `p`, checked.
    ///
    /// # Safety
    /// As [`check`].
    pub(crate) unsafe fn get<'a>(p: *const Self, magic: u32, what: &str) -> Result<&'a Self, Fail> {
        // SAFETY: forwarded.
        unsafe { check(p, magic, what)? };
        // SAFETY: checked non-NULL and a shell of this kind; shells are never freed.
        Ok(unsafe { &*p })
    }

    /// Runs `f` on the object, or refuses if it was closed meanwhile.
    pub(crate) fn with<R>(
        &self,
        what: &str,
        f: impl FnOnce(&T) -> Result<R, Fail>,
    ) -> Result<R, Fail> {
        let g = self.state.read().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(t) => f(t),
            None => Err(fail!(libc::EBADF, "{what}: the handle was closed already")),
        }
    }

    /// Takes the object out if `ok` agrees, and marks the shell closed.
    pub(crate) fn close(
        &self,
        what: &str,
        ok: impl FnOnce(&T) -> Result<(), Fail>,
    ) -> Result<T, Fail> {
        let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(t) => ok(t)?,
            None => return Err(fail!(libc::EBADF, "{what}: the handle was closed already")),
        }
        self.magic.store(CLOSED, Ordering::Release);
        Ok(g.take().expect("checked Some above under the same lock"))
    }
}
