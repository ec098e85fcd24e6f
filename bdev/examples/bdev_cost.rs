// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The block layer's cost per I/O: N 4 KiB reads at queue depth 1 against the
//! software controller, either through the driver's queue pair alone or through the
//! multipath bdev (two paths, active-passive). The software controllers run in
//! manual mode: their device threads stand aside and this thread runs the devices in
//! `device_step`. Callgrind counts the measured loop, `host_run_*`, with
//! `device_step` toggled out (`--toggle-collect` toggles on entry and exit):
//!
//! ```text
//! cargo build --release -p nvme-bdev --example bdev_cost
//! valgrind --tool=callgrind --fair-sched=yes --toggle-collect='bdev_cost::host_run_*' \
//!     --toggle-collect='bdev_cost::device_step' target/release/examples/bdev_cost driver 20000
//! valgrind --tool=callgrind --fair-sched=yes --toggle-collect='bdev_cost::host_run_*' \
//!     --toggle-collect='bdev_cost::device_step' target/release/examples/bdev_cost mpath 20000
//! ```
//!
//! (collected instructions of `mpath` minus those of `driver`) / (N + 1000) is what
//! the layer adds per read: 1000 warm-up reads run first, in the same function, in
//! both modes. The controller threads' housekeeping (every `admin_poll_us`) runs
//! outside and is not counted. `--fair-sched=yes` keeps valgrind's scheduler from
//! starving the controller threads while they bring the controllers up.
//! `tests/bench-instructions` runs both.

use nvme_bdev::{BdevIo, BlockLayer, Channel, LayerOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, DmaSlice, IoQpair, IoRequest, QpairOptions};
use std::sync::Arc;
use std::time::Instant;

const BLOCKS: u64 = 1 << 16;

/// The measured loop through the driver alone: `n` reads at queue depth 1.
#[inline(never)]
fn host_run_driver(q: &mut IoQpair, buf: DmaSlice, devs: &[Arc<SoftController>], n: u64) {
    for i in 0..n {
        if q.submit(IoRequest::read(1, (i * 8) % BLOCKS, 8, buf, i))
            .is_err()
        {
            std::process::abort();
        }
        q.flush();
        loop {
            device_step(devs);
            // The batch the multipath channel asks each path's queue for, so both
            // loops run the same driver code.
            let got = q.poll(256, &mut |c| {
                if !c.status.is_success() {
                    std::process::abort();
                }
            });
            if got != 0 {
                break;
            }
        }
    }
}

/// The same through the multipath bdev.
#[inline(never)]
fn host_run_mpath(ch: &mut Channel, buf: DmaSlice, devs: &[Arc<SoftController>], n: u64) {
    for i in 0..n {
        if ch
            .submit(BdevIo::read((i * 8) % BLOCKS, 8, buf, i))
            .is_err()
        {
            std::process::abort();
        }
        ch.flush();
        loop {
            device_step(devs);
            let got = ch.poll(&mut |c| {
                if !c.status.is_success() {
                    std::process::abort();
                }
            });
            if got != 0 {
                break;
            }
        }
    }
}

#[inline(never)]
fn device_step(devs: &[Arc<SoftController>]) {
    for d in devs {
        d.step();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("mpath");
    let n: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let ns = Arc::new(Namespace::new(1, BLOCKS, 512)?);
    let cfg = |name: &str, cntlid| SoftConfig {
        name: name.into(),
        subnqn: "nqn.2024-01.org.nvme-bdev:cost".into(),
        cntlid,
        namespaces: vec![ns.clone()],
        idle_sleep_us: 0,
        ..SoftConfig::default()
    };
    let a = SoftController::start(cfg("costA", 1));
    let warm = 1000u64;
    let el;
    match mode {
        "driver" => {
            let ctrl = Controller::init(a.clone(), ControllerOptions::default())?;
            let mut q = ctrl.create_io_qpair(QpairOptions::default())?;
            let buf = ctrl.alloc_buffer(4096)?;
            let devs = [a.clone()];
            a.set_manual(true);
            std::thread::sleep(std::time::Duration::from_millis(5));
            host_run_driver(&mut q, buf.whole(), &devs, warm);
            let t0 = Instant::now();
            host_run_driver(&mut q, buf.whole(), &devs, n);
            el = t0.elapsed();
            a.set_manual(false);
        }
        "mpath" => {
            let b = SoftController::start(cfg("costB", 2));
            let layer = BlockLayer::new(LayerOptions::default())?;
            layer.attach_bus("costA", a.clone())?;
            let names = layer.attach_bus("costB", b.clone())?;
            let name = names
                .iter()
                .find(|s| s.starts_with("nqn."))
                .ok_or("no multipath bdev")?;
            let mut ch = layer.open(name)?.channel()?;
            let buf = layer.alloc_buffer(4096)?;
            let devs = [a.clone(), b.clone()];
            a.set_manual(true);
            b.set_manual(true);
            std::thread::sleep(std::time::Duration::from_millis(5));
            host_run_mpath(&mut ch, buf.whole(), &devs, warm);
            let t0 = Instant::now();
            host_run_mpath(&mut ch, buf.whole(), &devs, n);
            el = t0.elapsed();
            a.set_manual(false);
            b.set_manual(false);
            drop(ch);
        }
        other => return Err(format!("mode {other:?}: use driver or mpath").into()),
    }
    println!(
        "{mode}: {n} reads (+{warm} warm-up) in {:.3} s, {:.2} us each (device work included); ios {}",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64,
        n + warm
    );
    Ok(())
}
