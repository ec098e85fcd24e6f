//! The block layer's cost per I/O: N 4 KiB reads at queue depth 1 against the
//! software controller, either through the driver's queue pair alone or through the
//! multipath bdev (two paths, active-passive). The software controllers run in
//! manual mode: their device threads stand aside and this thread runs the devices in
//! `device_step`, so the host's work is all in `host_submit` and `host_poll`, which
//! callgrind counts alone:
//!
//! ```text
//! cargo build --release -p nvme-bdev --example bdev_cost
//! valgrind --tool=callgrind --toggle-collect='bdev_cost::host_*' \
//!     target/release/examples/bdev_cost driver 20000
//! valgrind --tool=callgrind --toggle-collect='bdev_cost::host_*' \
//!     target/release/examples/bdev_cost mpath 20000
//! ```
//!
//! (collected instructions of `mpath` minus those of `driver`) / N is what the layer
//! adds per read. The controller threads' housekeeping (every `admin_poll_us`) runs
//! outside `host_*` and is not counted. Warm-up I/Os (1000) run before the measured
//! ones but also inside `host_*`; both modes do the same number.

use nvme_bdev::{BdevIo, BlockLayer, Channel, IoBuf, LayerOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, DmaBuf, IoQpair, IoRequest, QpairOptions};
use std::sync::Arc;
use std::time::Instant;

const BLOCKS: u64 = 1 << 16;

#[inline(never)]
fn host_submit_driver(q: &mut IoQpair, buf: &DmaBuf, i: u64) {
    if q.submit(IoRequest::read(1, (i * 8) % BLOCKS, 8, buf.whole(), i))
        .is_err()
    {
        std::process::abort();
    }
    q.flush();
}

#[inline(never)]
fn host_poll_driver(q: &mut IoQpair) -> usize {
    q.poll(1, &mut |c| {
        if !c.status.is_success() {
            std::process::abort();
        }
    })
}

#[inline(never)]
fn host_submit_mpath(ch: &mut Channel, buf: &IoBuf, i: u64) {
    if ch
        .submit(BdevIo::read((i * 8) % BLOCKS, 8, buf.whole(), i))
        .is_err()
    {
        std::process::abort();
    }
    ch.flush();
}

#[inline(never)]
fn host_poll_mpath(ch: &mut Channel) -> usize {
    ch.poll(&mut |c| {
        if !c.status.is_success() {
            std::process::abort();
        }
    })
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
            let mut t0 = Instant::now();
            for i in 0..warm + n {
                if i == warm {
                    t0 = Instant::now();
                }
                host_submit_driver(&mut q, &buf, i);
                device_step(&devs);
                while host_poll_driver(&mut q) == 0 {
                    device_step(&devs);
                }
            }
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
            let mut t0 = Instant::now();
            for i in 0..warm + n {
                if i == warm {
                    t0 = Instant::now();
                }
                host_submit_mpath(&mut ch, &buf, i);
                device_step(&devs);
                while host_poll_mpath(&mut ch) == 0 {
                    device_step(&devs);
                }
            }
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
