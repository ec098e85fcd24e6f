// SPDX-License-Identifier: Apache-2.0 OR MIT
//! IOVA windows: each live DMA pool allocates from a window of IOVA space no other
//! live pool has, so a buffer of one controller's pool handed to another controller
//! is recognised (its IOVA is outside that controller's windows) and refused instead
//! of being read through an unrelated mapping.
//!
//! The windows share the space from [`IOVA_BASE`] up to 128 GiB (the block layer maps
//! its shared buffers 128 GiB above their pool IOVAs). Their size is chosen once per
//! process, from what the process can map: the memory it may pin (physical memory,
//! or `RLIMIT_MEMLOCK` when lower), rounded up to a power of two, 1 to 16 GiB. A pool
//! never runs out of window before the process runs out of memory to pin, and a
//! process with little memory gets many windows (62 of 2 GiB for 2 GiB). The
//! environment variable `NVME_DMA_WINDOW_GIB` (a power of two, 1 to 16) sets the size
//! instead, for a process that runs many controllers on a large machine.
//!
//! When every window is held, a new pool is refused with an error that names the
//! count and the fix; windows never become shared.

use super::IOVA_BASE;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Where the windows end: the block layer's shared window begins here
/// (`nvme_bdev::dma::IOVA_WINDOW` above the pool IOVAs).
const WINDOWS_END: u64 = 1 << 37;
/// The largest window, used when the process may pin 16 GiB or more.
pub const WINDOW_MAX: u64 = 16 << 30;
/// The smallest window.
const WINDOW_MIN: u64 = 1 << 30;
/// At most this many windows (one bit each in the in-use mask).
const SLOTS_MAX: u64 = 64;
/// The variable that sets the window size, in GiB.
pub const WINDOW_ENV: &str = "NVME_DMA_WINDOW_GIB";

/// The windows of a process: their size and which are held.
#[derive(Debug)]
pub(super) struct Windows {
    size: u64,
    slots: u64,
    /// What the size was chosen from, for messages.
    sized_from: String,
    used: AtomicU64,
}

impl Windows {
    /// Windows of `size` bytes (a power of two, `WINDOW_MIN..=WINDOW_MAX`).
    fn new(size: u64, sized_from: String) -> Windows {
        debug_assert!(size.is_power_of_two() && (WINDOW_MIN..=WINDOW_MAX).contains(&size));
        Windows {
            size,
            slots: ((WINDOWS_END - IOVA_BASE) / size).min(SLOTS_MAX),
            sized_from,
            used: AtomicU64::new(0),
        }
    }

    /// Windows sized by `env` (the variable's value, if set) or else from `pinnable`
    /// bytes, the memory the process may pin.
    pub(super) fn sized(env: Option<&str>, pinnable: u64) -> Result<Windows> {
        if let Some(v) = env {
            let gib = v.trim().parse::<u64>().ok().filter(|g| {
                g.is_power_of_two() && (WINDOW_MIN >> 30..=WINDOW_MAX >> 30).contains(g)
            });
            let Some(gib) = gib else {
                return Err(Error::InvalidArgument(format!(
                    "{WINDOW_ENV}={v}: the IOVA window of each DMA pool must be a power of \
                     two from 1 to 16 (GiB); unset it to size windows from the memory this \
                     process may pin"
                )));
            };
            return Ok(Windows::new(gib << 30, format!("{WINDOW_ENV}={v}")));
        }
        let size = pinnable
            .checked_next_power_of_two()
            .unwrap_or(WINDOW_MAX)
            .clamp(WINDOW_MIN, WINDOW_MAX);
        Ok(Windows::new(
            size,
            format!("sized from the {} MiB this process may pin", pinnable >> 20),
        ))
    }

    /// The window size in bytes.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Takes a window no live pool holds: its base IOVA. Refused, naming the count
    /// and the fix, when all are held; `name` is the pool's device.
    pub(super) fn take(&self, name: &str) -> Result<u64> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let slot = (!used).trailing_zeros() as u64;
            if slot >= self.slots {
                return Err(self.all_held(name));
            }
            match self.used.compare_exchange_weak(
                used,
                used | 1 << slot,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(IOVA_BASE + slot * self.size),
                Err(now) => used = now,
            }
        }
    }

    /// Gives back the window at `base` (its pool unmapped everything in it).
    pub(super) fn give_back(&self, base: u64) {
        let slot = (base - IOVA_BASE) / self.size;
        let before = self.used.fetch_and(!(1 << slot), Ordering::AcqRel);
        assert!(
            before & 1 << slot != 0,
            "IOVA window {slot} given back twice"
        );
    }

    /// Windows held by live pools.
    #[cfg(test)]
    fn held(&self) -> u32 {
        self.used.load(Ordering::Relaxed).count_ones()
    }

    #[cold]
    fn all_held(&self, name: &str) -> Error {
        let smaller = (self.size / 2).max(WINDOW_MIN);
        Error::DmaExhausted(format!(
            "{name}: no IOVA window is free for another DMA pool: all {} are held by live \
             pools in this process (one per controller, one per block layer), {} GiB each \
             ({}). Drop the controllers and block layers this process no longer uses, or \
             set {WINDOW_ENV}={} for {} windows (each pool then maps at most that much)",
            self.slots,
            self.size >> 30,
            self.sized_from,
            smaller >> 30,
            ((WINDOWS_END - IOVA_BASE) / smaller).min(SLOTS_MAX),
        ))
    }
}

/// The memory this process may pin: physical memory, or `RLIMIT_MEMLOCK` if lower.
fn pinnable_bytes() -> u64 {
    // SAFETY: sysconf reads system constants; no memory is passed.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let phys = if pages > 0 && page > 0 {
        pages as u64 * page as u64
    } else {
        WINDOW_MAX
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit the call fills in.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
    if ok && lim.rlim_cur != libc::RLIM_INFINITY {
        phys.min(lim.rlim_cur)
    } else {
        phys
    }
}

/// The process's windows, sized at the first pool.
pub(super) fn windows() -> Result<&'static Windows> {
    static WINDOWS: OnceLock<std::result::Result<Windows, String>> = OnceLock::new();
    WINDOWS
        .get_or_init(|| {
            let env = std::env::var(WINDOW_ENV).ok();
            Windows::sized(env.as_deref(), pinnable_bytes()).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::InvalidArgument(e.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_sized_from_what_the_process_may_pin() {
        let w = |pinnable: u64| Windows::sized(None, pinnable).unwrap();
        assert_eq!((w(512 << 20).size() >> 30, w(512 << 20).slots), (1, 64));
        assert_eq!((w(2 << 30).size() >> 30, w(2 << 30).slots), (2, 62));
        assert_eq!((w(3 << 30).size() >> 30, w(3 << 30).slots), (4, 31));
        assert_eq!((w(64 << 30).size() >> 30, w(64 << 30).slots), (16, 7));
        let e = Windows::sized(Some("4"), 64 << 30).unwrap();
        assert_eq!((e.size() >> 30, e.slots), (4, 31));
    }

    #[test]
    fn a_bad_setting_is_refused_naming_the_variable_and_the_range() {
        for bad in ["3", "0", "32", "lots"] {
            let msg = Windows::sized(Some(bad), 1 << 30).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("{WINDOW_ENV}={bad}")) && msg.contains("from 1 to 16"),
                "{msg}"
            );
        }
    }

    #[test]
    fn windows_are_disjoint_and_the_one_too_many_is_refused_clearly() {
        let w = Windows::sized(None, 64 << 30).unwrap();
        let bases: Vec<u64> = (0..7).map(|_| w.take("pool").unwrap()).collect();
        for (i, b) in bases.iter().enumerate() {
            assert_eq!(*b, IOVA_BASE + i as u64 * (16 << 30));
            assert!(b + w.size() <= WINDOWS_END);
        }
        let msg = w.take("0000:02:00.0").unwrap_err().to_string();
        for want in [
            "0000:02:00.0",
            "no IOVA window is free",
            "all 7 are held",
            "16 GiB each",
            "sized from the 65536 MiB",
            "Drop the controllers",
            "NVME_DMA_WINDOW_GIB=8 for 15 windows",
        ] {
            assert!(msg.contains(want), "{want:?} missing: {msg}");
        }
        // A window given back is taken again, by the next pool.
        w.give_back(bases[3]);
        assert_eq!(w.held(), 6);
        assert_eq!(w.take("pool").unwrap(), bases[3]);
    }
}
