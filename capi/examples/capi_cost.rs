// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What the C ABI adds per I/O: N 4 KiB reads at queue depth 1 on the
//! multipath bdev over two software controllers (active-passive), either through the
//! block layer's Rust channel (`rust`) or through `nvme_bdev_read`,
//! `nvme_channel_flush` and `nvme_channel_poll` as a C program calls them (`c`). As in nvme-bdev's
//! `bdev_cost`, the software controllers run in manual mode and callgrind counts the
//! measured loop with the device's own work toggled out:
//!
//! ```text
//! cargo build --release -p nvme-capi --example capi_cost
//! valgrind --tool=callgrind --fair-sched=yes --toggle-collect='capi_cost::host_run_*' \
//!     --toggle-collect='capi_cost::device_step' target/release/examples/capi_cost rust 20000
//! (the same with `c`)
//! ```
//!
//! (collected instructions of `c` minus those of `rust`) / (N + 1000) is what the C
//! ABI adds per read (1000 warm-up reads run first in the same function).

use nvme_bdev::{BdevIo, BlockLayer, Channel, LayerOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::DmaSlice;
use nvmebdev::bdev::{nvme_bdev_close, nvme_bdev_open};
use nvmebdev::channel::{
    nvme_bdev_read, nvme_channel_close, nvme_channel_flush, nvme_channel_open, nvme_channel_poll,
};
use nvmebdev::dma::{nvme_dma_alloc, nvme_dma_free};
use nvmebdev::layer::{nvme_layer_create, nvme_layer_destroy};
use std::ffi::{c_void, CString};
use std::ptr::{null, null_mut};
use std::sync::Arc;
use std::time::Instant;

const BLOCKS: u64 = 1 << 16;

/// Through the Rust channel: `n` reads at queue depth 1.
#[inline(never)]
fn host_run_rust(ch: &mut Channel, buf: DmaSlice, devs: &[Arc<SoftController>], n: u64) {
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

unsafe extern "C" fn on_read(arg: *mut c_void, success: bool, _status: u16) {
    if !success {
        std::process::abort();
    }
    // SAFETY: `arg` is the loop's counter, alive for the call.
    unsafe { *(arg as *mut u64) += 1 };
}

/// Through the C ABI: the same reads with nvme_bdev_read and nvme_channel_poll.
#[inline(never)]
fn host_run_c(
    ch: *mut nvmebdev::channel::nvme_channel,
    buf: *mut c_void,
    devs: &[Arc<SoftController>],
    n: u64,
) {
    let mut done = 0u64;
    for i in 0..n {
        let arg = &mut done as *mut u64 as *mut c_void;
        // SAFETY: an open channel used by this thread, a DMA buffer of 4 KiB.
        if unsafe { nvme_bdev_read(ch, buf, ((i * 8) % BLOCKS) * 512, 4096, Some(on_read), arg) }
            != 0
        {
            std::process::abort();
        }
        // SAFETY: as above.
        unsafe { nvme_channel_flush(ch) };
        loop {
            device_step(devs);
            // SAFETY: as above.
            if unsafe { nvme_channel_poll(ch) } != 0 {
                break;
            }
        }
    }
    if done != n {
        std::process::abort();
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
    let mode = args.get(1).map(String::as_str).unwrap_or("c");
    let n: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let ns = Arc::new(Namespace::new(1, BLOCKS, 512)?);
    let cfg = |name: &str, cntlid| SoftConfig {
        name: name.into(),
        subnqn: "nqn.2024-01.org.nvme-capi:cost".into(),
        cntlid,
        namespaces: vec![ns.clone()],
        idle_sleep_us: 0,
        ..SoftConfig::default()
    };
    let (a, b) = (
        SoftController::start(cfg("costA", 1)),
        SoftController::start(cfg("costB", 2)),
    );
    let devs = [a.clone(), b.clone()];
    let warm = 1000u64;
    let name = "nqn.2024-01.org.nvme-capi:cost:n1";
    let manual = |on: bool| {
        a.set_manual(on);
        b.set_manual(on);
        if on {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let el;
    match mode {
        "rust" => {
            let layer = BlockLayer::new(LayerOptions::default())?;
            layer.attach_bus("costA", a.clone())?;
            layer.attach_bus("costB", b.clone())?;
            let mut ch = layer.open(name)?.channel()?;
            let buf = layer.alloc_buffer(4096)?;
            manual(true);
            host_run_rust(&mut ch, buf.whole(), &devs, warm);
            let t0 = Instant::now();
            host_run_rust(&mut ch, buf.whole(), &devs, n);
            el = t0.elapsed();
            manual(false);
        }
        "c" => {
            let (mut layer, mut bdev, mut ch, mut buf) =
                (null_mut(), null_mut(), null_mut(), null_mut());
            let cname = CString::new(name)?;
            // SAFETY: valid pointers throughout; the handles are closed in order below.
            unsafe {
                assert_eq!(nvme_layer_create(null(), &mut layer), 0);
                assert_eq!(nvmebdev::attach_bus(layer, "costA", a.clone()), 2);
                assert_eq!(nvmebdev::attach_bus(layer, "costB", b.clone()), 2);
                assert_eq!(
                    nvme_bdev_open(layer, cname.as_ptr(), None, null_mut(), &mut bdev),
                    0
                );
                assert_eq!(nvme_channel_open(bdev, &mut ch), 0);
                assert_eq!(nvme_dma_alloc(layer, 4096, &mut buf), 0);
            }
            manual(true);
            host_run_c(ch, buf, &devs, warm);
            let t0 = Instant::now();
            host_run_c(ch, buf, &devs, n);
            el = t0.elapsed();
            manual(false);
            // SAFETY: as above.
            unsafe {
                assert_eq!(nvme_dma_free(layer, buf), 0);
                assert_eq!(nvme_channel_close(ch), 0);
                assert_eq!(nvme_bdev_close(bdev), 0);
                assert_eq!(nvme_layer_destroy(layer), 0);
            }
        }
        other => return Err(format!("mode {other:?}: use rust or c").into()),
    }
    println!(
        "{mode}: {n} reads (+{warm} warm-up) in {:.3} s, {:.2} us each (device work included); ios {}",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64,
        n + warm
    );
    Ok(())
}
