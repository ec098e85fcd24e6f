// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Driver cost per I/O, for instruction counting with callgrind: 4 KiB reads against
//! the software controller in manual mode, so the device's work runs in
//! `device_step` and the driver's in `host_run`. Callgrind counts `host_run` with the
//! device's work toggled out (`--toggle-collect` toggles collection on entry to and
//! exit from a function, so the nested `device_step` is excluded):
//!
//! ```text
//! cargo build --release --example io_cost
//! valgrind --tool=callgrind --toggle-collect='io_cost::host_run' \
//!     --toggle-collect='io_cost::device_step' target/release/examples/io_cost 32 20000
//! ```
//!
//! Arguments: queue depth (default 1), number of I/Os (default 20000), both rounded up
//! to whole rounds of `qd` reads. About 1000 warm-up reads run first, in `host_run`
//! too; divide the collected total by `counted_ios`, which it prints
//! (`tests/bench-instructions` does all of this).

use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{SoftConfig, SoftController};
use nvme_driver::{
    Controller, ControllerOptions, DmaBuf, DmaSlice, IoQpair, IoRequest, QpairOptions,
};
use std::sync::Arc;

/// The measured loop: `rounds` times, `bufs.len()` reads submitted, the doorbell rung,
/// the device run, and the completions reaped. Callgrind counts it with the device's
/// work (`device_step`) toggled out, so the count is the driver's submit, flush and
/// poll plus this loop's few instructions per I/O (the LBA, the callback, the call to
/// `device_step`).
#[inline(never)]
fn host_run(qp: &mut IoQpair, bufs: &[DmaSlice], dev: &SoftController, rounds: usize) {
    let mut lba = 0u64;
    let mut done = 0usize;
    for _ in 0..rounds {
        for b in bufs {
            lba = (lba + 8) & ((1 << 20) - 1);
            if qp.submit(IoRequest::read(1, lba, 8, *b, 0)).is_err() {
                std::process::abort();
            }
        }
        qp.flush();
        let want = done + bufs.len();
        loop {
            device_step(dev);
            qp.poll(256, &mut |c| {
                if !c.status.is_success() {
                    std::process::abort();
                }
                done += 1;
            });
            if done >= want {
                break;
            }
        }
    }
}

#[inline(never)]
fn device_step(dev: &SoftController) {
    dev.step();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let qd: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let ios: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    // A third argument `prp` forces PRPs (the software controller takes SGLs).
    let opts = ControllerOptions {
        enable_sgl: args.next().as_deref() != Some("prp"),
        ..ControllerOptions::default()
    };
    let dev = SoftController::start(SoftConfig::default());
    let ctrl =
        Controller::init(dev.clone() as Arc<dyn Bus>, opts).expect("software controller comes up");
    let mut qp = ctrl
        .create_io_qpair(QpairOptions {
            entries: 256,
            ..QpairOptions::default()
        })
        .expect("queue pair");
    let bufs: Vec<DmaBuf> = (0..qd)
        .map(|_| ctrl.alloc_buffer(4096).expect("buffer"))
        .collect();
    dev.set_manual(true);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let slices: Vec<DmaSlice> = bufs.iter().map(DmaBuf::whole).collect();
    // Whole rounds of `qd` reads: about 1000 to warm up, then about `ios`.
    let warm_rounds = 1000usize.div_ceil(qd);
    let rounds = ios.div_ceil(qd);
    host_run(&mut qp, &slices, &dev, warm_rounds);
    let before = qp.stats();
    let t0 = nvme_driver::clock::ticks();
    host_run(&mut qp, &slices, &dev, rounds);
    let ns = nvme_driver::clock::ticks_to_ns(nvme_driver::clock::ticks() - t0);
    let total = qp.stats();
    let st = total.since(&before);
    println!(
        "queue_depth {qd} ios {} counted_ios {} polls {} idle_polls {} sq_doorbells {} cq_doorbells {} wall_ns_per_io_incl_device {}",
        st.completed,
        total.completed,
        st.polls,
        st.idle_polls,
        st.sq_doorbell_writes,
        st.cq_doorbell_writes,
        ns / st.completed.max(1)
    );
}
