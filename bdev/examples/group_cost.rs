// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A poll group's cost per I/O, measured as `bdev_cost` measures the multipath bdev's
//! (its doc says how): N 4 KiB reads at queue depth 1 on one channel of a
//! `PollGroup` whose queue pairs have a second, idle channel (to the same multipath
//! bdev) as member, so completions are sorted by channel (`src/share.rs`). A binary
//! of its own, so the measured loops of `bdev_cost` keep their code as it was.
//!
//! ```text
//! cargo build --release -p nvme-bdev --example group_cost
//! valgrind --tool=callgrind --fair-sched=yes --toggle-collect='group_cost::host_run' \
//!     --toggle-collect='group_cost::device_step' target/release/examples/group_cost 20000
//! ```
//!
//! (collected instructions minus those of `bdev_cost driver`) / (N + 1000) is what a
//! poll group's channel adds per read over the driver alone.

use nvme_bdev::{BdevIo, BlockLayer, LayerOptions, PollGroup};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::DmaSlice;
use std::sync::Arc;
use std::time::Instant;

const BLOCKS: u64 = 1 << 16;

/// `n` reads on channel `key` of `group`, each submitted, flushed, run by the devices
/// and polled for.
#[inline(never)]
fn host_run(
    group: &mut PollGroup,
    key: usize,
    buf: DmaSlice,
    devs: &[Arc<SoftController>],
    n: u64,
) {
    for i in 0..n {
        if group
            .submit(key, BdevIo::read((i * 8) % BLOCKS, 8, buf, i))
            .is_err()
        {
            std::process::abort();
        }
        group.flush(key);
        loop {
            device_step(devs);
            let got = group.poll(key, &mut |c| {
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
    let n: u64 = std::env::args()
        .nth(1)
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
    let b = SoftController::start(cfg("costB", 2));
    let layer = BlockLayer::new(LayerOptions::default())?;
    layer.attach_bus("costA", a.clone())?;
    let names = layer.attach_bus("costB", b.clone())?;
    let name = names
        .iter()
        .find(|s| s.starts_with("nqn."))
        .ok_or("no multipath bdev")?;
    let bdev = layer.open(name)?;
    let mut group = layer.poll_group();
    let key = group.open(&bdev)?;
    // A second member of each queue pair, idle.
    group.open(&bdev)?;
    let buf = layer.alloc_buffer(4096)?;
    let devs = [a.clone(), b.clone()];
    a.set_manual(true);
    b.set_manual(true);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let warm = 1000u64;
    host_run(&mut group, key, buf.whole(), &devs, warm);
    let t0 = Instant::now();
    host_run(&mut group, key, buf.whole(), &devs, n);
    let el = t0.elapsed();
    a.set_manual(false);
    b.set_manual(false);
    drop(group);
    println!(
        "group: {n} reads (+{warm} warm-up) in {:.3} s, {:.2} us each (device work included); ios {}",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64,
        n + warm
    );
    Ok(())
}
