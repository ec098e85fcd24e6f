// SPDX-License-Identifier: GPL-2.0-only
//! How many completions one `getevents` hands to fio. fio 3.33 passes `max` = 1 unless
//! the job sets `iodepth_batch_complete_max`; the glue then tells the thread to hand
//! back every I/O that completed (`reap_all`), as fio's null engine and SPDK's bdev
//! plugin do. Driven as the C glue drives the engine, against a software controller in
//! manual mode, so that exactly 32 completions are waiting when `getevents` runs; and
//! with the real fio on the host, over the engine's software controller, that the glue
//! asks for this only when the job leaves the option alone, and that writes verified
//! by fio come back intact that way.

mod common;

use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_fio::ffi;
use std::collections::HashSet;
use std::ffi::{c_void, CString};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const QD: u32 = 32;
const READ: i32 = 0;
const NAME: &str = "trtype=PCIe traddr=0000.01.00.0 ns=1";

/// An engine thread with the file open and `QD` reads' worth of I/O memory: fio's
/// `init`, `open_file` and `iomem_alloc` (the queue pair is made here, while the
/// device thread runs).
#[derive(Clone, Copy)]
struct EngineThread {
    t: *mut c_void,
    slot: u32,
    buf: *mut c_void,
}

fn engine_thread(target: u32, reap_all: bool) -> EngineThread {
    let name = CString::new(NAME).unwrap();
    let job = CString::new("reaping").unwrap();
    let (mut slot, mut buf) = (0u32, std::ptr::null_mut::<c_void>());
    // SAFETY: valid strings and out-pointers; the thread state stays on this thread.
    let t = unsafe {
        let t = ffi::nvme_fio_thread_new(0, job.as_ptr(), QD, 0, 0);
        assert!(!t.is_null());
        assert_eq!(ffi::nvme_fio_open(t, target, name.as_ptr(), &mut slot), 0);
        assert_eq!(
            ffi::nvme_fio_iomem_alloc(t, QD as usize * 4096, &mut buf),
            0
        );
        if reap_all {
            ffi::nvme_fio_thread_reap_all(t);
        }
        t
    };
    EngineThread { t, slot, buf }
}

/// Queues `QD` reads, lets the device complete all of them, then reaps with
/// `getevents(min 1, max 1)` as fio's defaults do, until all are back. Returns the
/// number of events each call handed back; checks every read came back once, with success.
fn reap_with_fio_defaults(dev: &SoftController, th: &EngineThread) -> Vec<usize> {
    let EngineThread { t, slot, buf } = *th;
    let posted = dev.counters().completions_posted();
    for i in 0..QD as usize {
        // SAFETY: `t` is live; each read has its own 4 KiB of the I/O memory.
        let r = unsafe {
            let data = buf.cast::<u8>().add(i * 4096);
            ffi::nvme_fio_queue(
                t,
                slot,
                READ,
                i as u64 * 4096,
                4096,
                data.cast(),
                (i + 1) as _,
            )
        };
        assert_eq!(r, 0, "read {i} queued");
    }
    // The first poll rings the doorbell; the device then runs every command.
    // SAFETY: `t` is live.
    assert_eq!(unsafe { ffi::nvme_fio_getevents(t, 0, 1, 0) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dev.counters().completions_posted() < posted + QD as u64 {
        assert!(
            Instant::now() < deadline,
            "the device completed the reads in 10 s"
        );
        dev.step();
    }
    let mut per_call = Vec::new();
    let mut back = HashSet::new();
    while back.len() < QD as usize {
        assert!(
            per_call.len() <= QD as usize,
            "every read came back: {back:?}"
        );
        // SAFETY: `t` is live; fio's defaults: at least 1, at most 1.
        let got = unsafe { ffi::nvme_fio_getevents(t, 1, 1, 1_000_000_000) };
        for e in 0..got {
            let mut status = u16::MAX;
            // SAFETY: indexes of the events just reaped.
            let io_u = unsafe { ffi::nvme_fio_event(t, e, &mut status) } as usize;
            assert_eq!(status, 0, "read {io_u} succeeded");
            assert!(back.insert(io_u), "read {io_u} came back twice");
        }
        per_call.push(got as usize);
    }
    per_call
}

#[test]
fn one_getevents_hands_back_every_completion_unless_the_job_caps_it() {
    let ns = Arc::new(Namespace::new(1, 1 << 16, 512).unwrap());
    let dev = SoftController::start(SoftConfig {
        name: "reaping".into(),
        namespaces: vec![ns],
        idle_sleep_us: 0,
        ..SoftConfig::default()
    });
    nvme_fio::attach_bus("0000:01:00.0", dev.clone()).unwrap();
    let name = CString::new(NAME).unwrap();
    let (mut target, mut size) = (0u32, 0u64);
    // SAFETY: valid string and out-pointers.
    let resolved = unsafe { ffi::nvme_fio_resolve(0, name.as_ptr(), &mut target, &mut size) };
    assert_eq!(resolved, 0);
    let reap_all = engine_thread(target, true);
    let capped = engine_thread(target, false);
    dev.set_manual(true);

    let all = reap_with_fio_defaults(&dev, &reap_all);
    assert_eq!(
        all,
        [QD as usize],
        "fio's defaults (max 1), iodepth_batch_complete_max not set: one call hands back all {QD}"
    );
    let capped_calls = reap_with_fio_defaults(&dev, &capped);
    // The threads end (their queue pairs are deleted) with the device thread running.
    dev.set_manual(false);
    for th in [reap_all, capped] {
        // SAFETY: the thread is not used afterwards.
        unsafe { ffi::nvme_fio_thread_free(th.t) };
    }
    assert_eq!(
        capped_calls,
        vec![1; QD as usize],
        "iodepth_batch_complete_max=1 set by the job: one completion per call"
    );
}

/// fio on the host with the `spdk` engine over a software controller
/// (`NVME_FIO_SOFTCTRL=1`): random writes at QD 32, each read back and checked by fio
/// (crc32c), with `extra` options. Returns the engine's reaping line (`nvme_stats`).
fn fio_verified(extra: &[&str]) -> String {
    let out = Command::new("fio")
        .env("LD_PRELOAD", common::engine())
        .env("NVME_FIO_SOFTCTRL", "1")
        .args([
            "--name=reaping",
            "--ioengine=spdk",
            "--thread=1",
            "--filename=trtype=PCIe traddr=0000.01.00.0 ns=1",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=4m",
            "--verify=crc32c",
            "--do_verify=1",
            "--nvme_stats=1",
            "--verify_state_save=0",
        ])
        .args(extra)
        .output()
        .expect("fio is not installed (apt-get install fio): this test runs the real fio");
    let err = String::from_utf8_lossy(&out.stderr);
    let text = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "fio {extra:?} failed:\n{text}");
    assert!(
        text.contains("err= 0"),
        "fio {extra:?} saw no error:\n{text}"
    );
    err.lines()
        .find(|l| l.contains("getevents") && l.contains("calls"))
        .unwrap_or_else(|| panic!("no reaping line from nvme_stats=1:\n{text}"))
        .to_string()
}

#[test]
fn the_glue_asks_for_every_completion_only_when_the_job_leaves_the_cap_alone() {
    let default = fio_verified(&[]);
    assert!(
        default.contains("(every completion per call)"),
        "iodepth_batch_complete_max not set: {default}"
    );
    let capped = fio_verified(&["--iodepth_batch_complete_max=1"]);
    assert!(
        capped.contains("(at most fio's iodepth_batch_complete_max per call)"),
        "iodepth_batch_complete_max=1 set: obeyed: {capped}"
    );
}
