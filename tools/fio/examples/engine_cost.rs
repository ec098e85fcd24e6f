// SPDX-License-Identifier: GPL-2.0-only
//! The engine's cost per I/O: what the `spdk` engine's callbacks and the driver under
//! them execute for one 4 KiB read, fio's own work excluded. This program calls the
//! engine's entry points as the C glue calls them for fio (`queue`, `getevents`,
//! `event`) at a queue depth, against a software controller in manual
//! mode (its device thread stands aside; `device_step` runs the device, outside the
//! entry points). Callgrind counts the four entry points only:
//!
//! ```text
//! cargo build --release -p nvme-fio --example engine_cost
//! valgrind --tool=callgrind --fair-sched=yes --toggle-collect=nvme_fio_queue \
//!     --toggle-collect=nvme_fio_getevents \
//!     --toggle-collect=nvme_fio_event target/release/examples/engine_cost QD 20000
//! ```
//!
//! Collected instructions / the `ios` it prints = the engine's share per read (the
//! glue's few C lines per callback, which only pass fio's fields on, are not in it;
//! nor is this program's loop, which stands for fio). `tests/bench-instructions` runs
//! it at QD 1, 32 and 128 (its third table).

use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_fio::ffi;
use std::ffi::{c_void, CString};
use std::sync::Arc;

const BLOCKS: u64 = 1 << 16;
const READ: i32 = 0;

/// `n` reads at queue depth `qd`, as fio drives an engine: queue until the depth is
/// reached, reap what completed (`getevents` with min 0), take each `event`,
/// and queue a new read for each.
#[inline(never)]
fn host_run(t: *mut c_void, slot: u32, buf: *const c_void, dev: &SoftController, qd: u64, n: u64) {
    let mut status = 0u16;
    let mut issued = 0u64;
    let mut done = 0u64;
    let queue = |i: u64| {
        let io_u = (i + 1) as *mut c_void; // fio's io_u: only handed back
        let lba = (i * 8) % BLOCKS;
        // SAFETY: `t` is a live engine thread; each slot of its I/O memory is 4 KiB.
        let data = unsafe { buf.cast::<u8>().add((i % qd) as usize * 4096) };
        // SAFETY: as above.
        if unsafe { ffi::nvme_fio_queue(t, slot, READ, lba * 512, 4096, data.cast(), io_u) } != 0 {
            std::process::abort();
        }
    };
    while issued < qd.min(n) {
        queue(issued);
        issued += 1;
    }
    while done < n {
        device_step(dev);
        // SAFETY: as above.
        let got = unsafe { ffi::nvme_fio_getevents(t, 0, qd as u32, 0) };
        for e in 0..got {
            // SAFETY: indexes of the events just reaped.
            let back = unsafe { ffi::nvme_fio_event(t, e, &mut status) };
            if back.is_null() || status != 0 {
                std::process::abort();
            }
            done += 1;
            if issued < n {
                queue(issued);
                issued += 1;
            }
        }
    }
}

#[inline(never)]
fn device_step(dev: &SoftController) {
    dev.step();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let qd: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let n: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let ns = Arc::new(Namespace::new(1, BLOCKS, 512)?);
    let dev = SoftController::start(SoftConfig {
        name: "engine-cost".into(),
        namespaces: vec![ns],
        idle_sleep_us: 0,
        ..SoftConfig::default()
    });
    nvme_fio::attach_bus("0000:01:00.0", dev.clone())?;
    let name = CString::new("trtype=PCIe traddr=0000.01.00.0 ns=1")?;
    let job = CString::new("cost")?;
    let (mut target, mut size, mut slot) = (0u32, 0u64, 0u32);
    let mut buf: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid strings and out-pointers; the thread state is used by this thread.
    let t = unsafe {
        if ffi::nvme_fio_resolve(0, name.as_ptr(), &mut target, &mut size) != 0 {
            return Err("resolve failed".into());
        }
        let t = ffi::nvme_fio_thread_new(0, job.as_ptr(), qd as u32, 0, 0);
        if ffi::nvme_fio_open(t, target, name.as_ptr(), &mut slot) != 0
            || ffi::nvme_fio_iomem_alloc(t, qd as usize * 4096, &mut buf) != 0
        {
            return Err("open failed".into());
        }
        t
    };
    dev.set_manual(true);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let warm = 1000;
    host_run(t, slot, buf, &dev, qd, warm);
    let t0 = std::time::Instant::now();
    host_run(t, slot, buf, &dev, qd, n);
    let el = t0.elapsed();
    dev.set_manual(false);
    // SAFETY: `t` is not used afterwards.
    unsafe { ffi::nvme_fio_thread_free(t) };
    println!(
        "engine: {n} reads at QD {qd} (+{warm} warm-up) in {:.3} s, {:.2} us each (device work included); ios {}",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64,
        n + warm
    );
    Ok(())
}
