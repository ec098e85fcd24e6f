// SPDX-License-Identifier: Apache-2.0 OR MIT
//! I/O statistics of a bdev, total and per path, readable from any thread while I/O
//! runs (SPDK's `spdk_bdev_get_io_stat`): the block layer's `Bdev::iostat` in C
//! structs.
//!
//! Freshness is the block layer's: a channel publishes its counters every 1024 polls
//! and when it closes, so an open channel's I/O shows up to one publication late;
//! after the channels closed the figures are exact.

use crate::bdev::{bdev_state, nvme_bdev, NVME_BDEV_NAME_MAX};
use crate::error::{bdev_fail, call, fail};
use crate::layer::copy_name;
use ::nvme_bdev::iostat::LATENCY_BUCKETS;
use std::ffi::{c_char, c_int};
use std::time::Duration;

/// Buckets of a latency histogram (bucket i: 2^i to 2^(i+1) - 1 ticks).
pub const NVME_LATENCY_BUCKETS: usize = 64;
const _: () = assert!(NVME_LATENCY_BUCKETS == LATENCY_BUCKETS);

/// What a bdev has done, over every channel it has had. Operations are counted when
/// a submit accepts them, completions and errors when their callbacks run.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvme_bdev_iostat {
    /// Reads accepted.
    pub read_ops: u64,
    /// Bytes those reads asked for.
    pub read_bytes: u64,
    /// Writes accepted.
    pub write_ops: u64,
    /// Bytes those writes carried.
    pub write_bytes: u64,
    /// Flushes accepted.
    pub flush_ops: u64,
    /// Write Zeroes accepted.
    pub write_zeroes_ops: u64,
    /// Bytes they zeroed.
    pub write_zeroes_bytes: u64,
    /// Unmaps accepted.
    pub unmap_ops: u64,
    /// Bytes they unmapped.
    pub unmap_bytes: u64,
    /// I/Os completed (callbacks run), successful or not.
    pub completed: u64,
    /// Of those, completed with an error status.
    pub errors: u64,
    /// Times an I/O was sent again on another path after a path error (multipath).
    pub failovers: u64,
    /// Times an I/O was retried after another retryable error (multipath).
    pub retries: u64,
    /// Paths of a multipath bdev (nvme_bdev_get_path_iostat() indices); 0 for a
    /// namespace bdev.
    pub paths: u32,
    /// I/Os timed while the latency histogram was on
    /// (nvme_bdev_enable_latency_histogram()).
    pub latency_count: u64,
    /// Upper bounds of the median, 99th and 99.9th percentile latency from submit to
    /// callback, in nanoseconds (the top of the histogram bucket; 0 when nothing was
    /// timed).
    pub latency_p50_ns: u64,
    /// See latency_p50_ns.
    pub latency_p99_ns: u64,
    /// See latency_p50_ns.
    pub latency_p999_ns: u64,
    /// The histogram: I/Os whose latency was 2^i to 2^(i+1) - 1 ticks.
    pub latency_buckets: [u64; NVME_LATENCY_BUCKETS],
    /// Ticks per second of the histogram's clock.
    pub latency_ticks_per_sec: u64,
}

/// One path's share of a multipath bdev's I/O.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvme_path_iostat {
    /// Path instance identifier (a reconnected controller is a new instance).
    pub id: u64,
    /// The controller behind it, NUL-terminated ("(removed)" for a path gone).
    pub controller: [c_char; NVME_BDEV_NAME_MAX],
    /// I/Os sent on it.
    pub submitted: u64,
    /// Path errors it returned (each one a failover).
    pub path_errors: u64,
    /// Of those, ANA errors.
    pub ana_errors: u64,
    /// Commands on it that passed their deadline.
    pub timeouts: u64,
    /// Commands it handed back because its controller was reset or failed.
    pub reset_aborts: u64,
}

fn ns(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// Fills `*stat` with the bdev's statistics. Call from any thread; it never stops
/// I/O. Returns 0, or -EINVAL (NULL), -EBADF.
///
/// # Safety
/// `bdev` is NULL or a bdev handle; `stat` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_get_iostat(
    bdev: *mut nvme_bdev,
    stat: *mut nvme_bdev_iostat,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a bdev handle or NULL.
        let shell = unsafe { bdev_state(bdev, "nvme_bdev_get_iostat: bdev") }?;
        if stat.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_bdev_get_iostat: stat is NULL"));
        }
        let s = shell.with("nvme_bdev_get_iostat: bdev", |b| Ok(b.bdev.iostat()))?;
        let (t, l) = (&s.total, &s.latency);
        let out = nvme_bdev_iostat {
            read_ops: t.read_ops,
            read_bytes: t.read_bytes,
            write_ops: t.write_ops,
            write_bytes: t.write_bytes,
            flush_ops: t.flush_ops,
            write_zeroes_ops: t.write_zeroes_ops,
            write_zeroes_bytes: t.write_zeroes_bytes,
            unmap_ops: t.unmap_ops,
            unmap_bytes: t.unmap_bytes,
            completed: t.completed,
            errors: t.errors,
            failovers: t.failovers,
            retries: t.retries,
            paths: s.paths.len() as u32,
            latency_count: l.count(),
            latency_p50_ns: ns(l.quantile(0.5)),
            latency_p99_ns: ns(l.quantile(0.99)),
            latency_p999_ns: ns(l.quantile(0.999)),
            latency_buckets: l.buckets,
            latency_ticks_per_sec: l.ticks_per_sec,
        };
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { stat.write(out) };
        Ok(0)
    })
}

/// Fills `*stat` with path number `index` (0 .. paths - 1 of nvme_bdev_get_iostat())
/// of a multipath bdev. Returns 0, or -ENOENT (no path at that index), -EINVAL (NULL),
/// -EBADF.
///
/// # Safety
/// `bdev` is NULL or a bdev handle; `stat` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_get_path_iostat(
    bdev: *mut nvme_bdev,
    index: u32,
    stat: *mut nvme_path_iostat,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a bdev handle or NULL.
        let shell = unsafe { bdev_state(bdev, "nvme_bdev_get_path_iostat: bdev") }?;
        if stat.is_null() {
            return Err(fail!(
                libc::EINVAL,
                "nvme_bdev_get_path_iostat: stat is NULL"
            ));
        }
        let s = shell.with("nvme_bdev_get_path_iostat: bdev", |b| Ok(b.bdev.iostat()))?;
        let Some(p) = s.paths.get(index as usize) else {
            return Err(fail!(
                libc::ENOENT,
                "nvme_bdev_get_path_iostat: no path at index {index}; the bdev has {}",
                s.paths.len()
            ));
        };
        let mut out = nvme_path_iostat {
            id: p.id,
            controller: [0; NVME_BDEV_NAME_MAX],
            submitted: p.submitted,
            path_errors: p.path_errors,
            ana_errors: p.ana_errors,
            timeouts: p.timeouts,
            reset_aborts: p.reset_aborts,
        };
        // SAFETY: `out.controller` is NVME_BDEV_NAME_MAX writable bytes.
        unsafe {
            copy_name(
                &p.controller,
                out.controller.as_mut_ptr(),
                NVME_BDEV_NAME_MAX,
                "nvme_bdev_get_path_iostat",
            )
        }?;
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { stat.write(out) };
        Ok(0)
    })
}

/// Starts (`on` true) or stops the bdev's latency histogram: each I/O timed from
/// submit to callback (two reads of the time-stamp counter per I/O; off by default,
/// as SPDK's bdev_enable_histogram). Multipath bdevs only. Returns 0, or -EINVAL
/// (NULL, or a namespace bdev: the message names the multipath bdev to use), -EBADF.
///
/// # Safety
/// `bdev` is NULL or a bdev handle.
#[no_mangle]
pub unsafe extern "C" fn nvme_bdev_enable_latency_histogram(
    bdev: *mut nvme_bdev,
    on: bool,
) -> c_int {
    call(|| {
        // SAFETY: the caller passes a bdev handle or NULL.
        let shell = unsafe { bdev_state(bdev, "nvme_bdev_enable_latency_histogram: bdev") }?;
        shell.with("nvme_bdev_enable_latency_histogram: bdev", |b| {
            b.bdev
                .enable_latency_histogram(on)
                .map_err(|e| bdev_fail("nvme_bdev_enable_latency_histogram", &e))?;
            Ok(0)
        })
    })
}
