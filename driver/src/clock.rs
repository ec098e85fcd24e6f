// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A cheap clock for the data path: the CPU's time-stamp counter, calibrated once
//! against the monotonic clock. `clock_gettime` can be a system call plus an emulated
//! device read in a guest whose TSC the kernel distrusts (TESTBED.md), so per-I/O
//! timestamps read the TSC directly.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Reads the time-stamp counter (or a monotonic nanosecond count off x86_64).
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions and is available on every x86_64 CPU.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Ticks per second, measured once (about 20 ms) on first use.
pub fn ticks_per_sec() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let (t0, i0) = (ticks(), Instant::now());
        while i0.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let (t1, el) = (ticks(), i0.elapsed());
        let hz = ((t1.wrapping_sub(t0)) as f64 / el.as_secs_f64()) as u64;
        hz.max(1_000_000)
    })
}

/// Converts milliseconds to ticks.
pub fn ms_to_ticks(ms: u64) -> u64 {
    ms.saturating_mul(ticks_per_sec()) / 1000
}

/// Converts ticks to nanoseconds.
pub fn ticks_to_ns(t: u64) -> u64 {
    (t as u128 * 1_000_000_000 / ticks_per_sec() as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_clock_tracks_real_time() {
        let hz = ticks_per_sec();
        let t0 = ticks();
        std::thread::sleep(Duration::from_millis(50));
        let ns = ticks_to_ns(ticks() - t0);
        assert!(ns >= 45_000_000, "50 ms measured as {ns} ns at {hz} Hz");
        assert_eq!(ms_to_ticks(1000), hz);
    }
}
