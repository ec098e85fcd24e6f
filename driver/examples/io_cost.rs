//! Driver cost per I/O, for instruction counting with callgrind: 4 KiB reads against
//! the software controller in manual mode, so the device's work runs in
//! `device_step` and the driver's in `host_submit` and `host_poll`, which callgrind
//! counts alone with `--toggle-collect`:
//!
//! ```text
//! cargo build --release --example io_cost
//! valgrind --tool=callgrind --toggle-collect='io_cost::host_*' \
//!     target/release/examples/io_cost 32 20000
//! ```
//!
//! Arguments: queue depth (default 1), number of I/Os (default 20000). It prints the
//! I/O count so the collected instruction total can be divided by it
//! (`tests/bench-instructions` does all of this).

use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, DmaBuf, IoQpair, IoRequest, QpairOptions};
use std::sync::Arc;

#[inline(never)]
fn host_submit(qp: &mut IoQpair, bufs: &[DmaBuf], first: usize, n: usize, lba: &mut u64) {
    for b in &bufs[first..first + n] {
        *lba = (*lba + 8) & ((1 << 20) - 1);
        if qp
            .submit(IoRequest::read(1, *lba, 8, b.whole(), 0))
            .is_err()
        {
            std::process::abort();
        }
    }
    qp.flush();
}

#[inline(never)]
fn host_poll(qp: &mut IoQpair, done: &mut usize) {
    qp.poll(256, &mut |c| {
        if !c.status.is_success() {
            std::process::abort();
        }
        *done += 1;
    });
}

#[inline(never)]
fn device_step(dev: &SoftController) {
    dev.step();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let qd: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let ios: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let dev = SoftController::start(SoftConfig::default());
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, ControllerOptions::default())
        .expect("software controller comes up");
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
    let mut lba = 0;
    let mut done = 0;
    // Keep `qd` reads in flight: submit a batch, let the device run, reap it.
    let run = |qp: &mut IoQpair, count: usize, done: &mut usize, lba: &mut u64| {
        let mut submitted = 0;
        while submitted < count {
            let n = qd.min(count - submitted);
            host_submit(qp, &bufs, 0, n, lba);
            submitted += n;
            device_step(&dev);
            let want = *done + n;
            while *done < want {
                host_poll(qp, done);
                device_step(&dev);
            }
        }
    };
    run(&mut qp, 1000.min(ios), &mut done, &mut lba);
    done = 0;
    let t0 = nvme_driver::clock::ticks();
    run(&mut qp, ios, &mut done, &mut lba);
    let ns = nvme_driver::clock::ticks_to_ns(nvme_driver::clock::ticks() - t0);
    let st = qp.stats();
    println!("queue_depth {qd} ios {done} polls {} idle_polls {} sq_doorbells {} cq_doorbells {} wall_ns_per_io_incl_device {}",
        st.polls, st.idle_polls, st.sq_doorbell_writes, st.cq_doorbell_writes, ns / done.max(1) as u64);
}
