//! The block layer's cost per I/O: N 4 KiB reads at queue depth 1 against the
//! software controller, either through the driver's queue pair alone or through the
//! multipath bdev (two paths). Compare instructions with
//! `perf stat -e instructions:u target/release/examples/bdev_cost driver 200000` and
//! the same with `mpath`: the difference divided by N is the layer's cost per I/O
//! (the software controller's own work is the same in both runs).

use nvme_bdev::{BdevIo, BlockLayer, LayerOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, IoRequest, QpairOptions};
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("mpath");
    let n: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let ns = Arc::new(Namespace::new(1, 1 << 16, 512)?);
    let cfg = |name: &str, cntlid| SoftConfig {
        name: name.into(),
        subnqn: "nqn.2024-01.org.nvme-bdev:cost".into(),
        cntlid,
        namespaces: vec![ns.clone()],
        idle_sleep_us: 0,
        ..SoftConfig::default()
    };
    let a = SoftController::start(cfg("costA", 1));
    let t0 = Instant::now();
    match mode {
        "driver" => {
            let ctrl = Controller::init(a.clone(), ControllerOptions::default())?;
            let mut q = ctrl.create_io_qpair(QpairOptions::default())?;
            let buf = ctrl.alloc_buffer(4096)?;
            for i in 0..n {
                q.submit(IoRequest::read(1, (i * 8) % (1 << 16), 8, buf.whole(), i))
                    .map_err(|(e, _)| e)?;
                while q.poll(1, &mut |_| {}) == 0 {}
            }
        }
        "mpath" => {
            let b = SoftController::start(cfg("costB", 2));
            let layer = BlockLayer::new(LayerOptions::default())?;
            layer.attach_bus("costA", a.clone())?;
            let names = layer.attach_bus("costB", b)?;
            let name = names
                .iter()
                .find(|s| s.starts_with("nqn."))
                .ok_or("no multipath bdev")?;
            let mut ch = layer.open(name)?.channel()?;
            let buf = layer.alloc_buffer(4096)?;
            for i in 0..n {
                ch.submit(BdevIo::read((i * 8) % (1 << 16), 8, buf.whole(), i))
                    .map_err(|(e, _)| e)?;
                while ch.poll(&mut |_| {}) == 0 {}
            }
        }
        other => return Err(format!("mode {other:?}: use driver or mpath").into()),
    }
    let el = t0.elapsed();
    println!(
        "{mode}: {n} reads in {:.3} s, {:.2} us each",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}
