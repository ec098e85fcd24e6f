// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The block layer's orderly stop (issue 23, item 1), seen from the software
//! controller: `BlockLayer::shutdown` and dropping the layer send every live
//! controller the normal shutdown notification (CC.SHN = 01b) and wait for CSTS.SHST
//! = 10b, after a Flush to each namespace when the controller reports a volatile
//! write cache; with two controllers (multipath) both get it; with
//! `no_shn_notification` neither flush nor notification goes out; I/O still in flight
//! completes once, with an error. Each software controller takes `SHUTDOWN_MS` to
//! finish shutdown processing, so a layer that does not wait is caught cutting it
//! short (`shutdowns_abandoned`).

use nvme_bdev::{BdevIo, BlockLayer, Channel, LayerOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::{admin_opc, io_opc};
use nvme_driver::ControllerOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:shutdown";
const SHUTDOWN_MS: u64 = 30;
const LIMIT: Duration = Duration::from_secs(10);

fn soft(name: &str, cntlid: u16, nss: &[Arc<Namespace>], vwc: bool) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        name: name.into(),
        subnqn: SUBNQN.into(),
        cntlid,
        mqes: 63,
        namespaces: nss.to_vec(),
        multi_controller: true,
        vwc,
        shutdown_ms: SHUTDOWN_MS,
        ..SoftConfig::default()
    })
}

fn ns(nsid: u32) -> Arc<Namespace> {
    Arc::new(Namespace::new(nsid, 1 << 14, 512).unwrap())
}

fn layer(ctrl: ControllerOptions) -> BlockLayer {
    BlockLayer::new(LayerOptions {
        admin_poll_us: 500,
        ctrl,
        qpair: nvme_driver::QpairOptions {
            entries: 64,
            ..nvme_driver::QpairOptions::default()
        },
        ..LayerOptions::default()
    })
    .unwrap()
}

/// Writes 8 blocks at LBA 0 of bdev `name` and waits for the completion.
fn write_one(layer: &BlockLayer, name: &str) {
    let bdev = layer.open(name).unwrap();
    let mut ch = bdev.channel().unwrap();
    let mut buf = layer.alloc_buffer(4096).unwrap();
    buf.write_at(0, &[0x5a; 4096]).unwrap();
    if let Err((e, _)) = ch.submit(BdevIo::write(0, 8, buf.whole(), 1)) {
        panic!("{name}: write refused: {e}");
    }
    let mut done = Vec::new();
    let start = Instant::now();
    while done.is_empty() {
        ch.poll(&mut |c| done.push(c.status));
        assert!(
            start.elapsed() < LIMIT,
            "{name}: the write did not complete"
        );
    }
    assert!(done[0].is_success(), "{name}: write failed: {}", done[0]);
    drain(&mut ch);
}

fn drain(ch: &mut Channel) {
    ch.shutdown();
    let start = Instant::now();
    while ch.outstanding() > 0 && start.elapsed() < LIMIT {
        ch.poll(&mut |_| {});
    }
}

/// What the device saw of the host's stop, in one line for messages and asserts:
/// (notifications, completed, abandoned, flushes before shutdown, flushes fetched).
fn seen(dev: &SoftController) -> (u64, u64, u64, u64, u64) {
    let c = dev.counters();
    (
        c.shutdown_notifications(),
        c.shutdowns_completed(),
        c.shutdowns_abandoned(),
        c.flushes_before_shutdown(),
        c.io_fetched(io_opc::FLUSH),
    )
}

#[test]
fn layer_shutdown_flushes_each_namespace_then_notifies_and_waits() {
    let dev = soft("shn-vwc", 1, &[ns(1), ns(2)], true);
    let layer = layer(ControllerOptions::default());
    layer.attach_bus("c0", dev.clone()).unwrap();
    write_one(&layer, "c0n1");
    write_one(&layer, "c0n2");
    let start = Instant::now();
    layer.shutdown();
    let took = start.elapsed();
    // One notification, processing run to its end (not cut short by the disable that
    // follows), and a Flush after the writes to each of the two namespaces.
    assert_eq!(
        seen(&dev),
        (1, 1, 0, 2, 2),
        "(notifications, completed, abandoned, flushes before shutdown, flushes) in {took:?}"
    );
    assert!(
        took >= Duration::from_millis(SHUTDOWN_MS),
        "shutdown returned after {took:?}, before the device's {SHUTDOWN_MS} ms of processing"
    );
    // A second call, and the drop, send nothing more.
    layer.shutdown();
    drop(layer);
    assert_eq!(seen(&dev).0, 1, "a second shutdown notified again");
}

#[test]
fn dropping_the_layer_notifies_without_a_flush_when_there_is_no_write_cache() {
    let dev = soft("shn-drop", 1, &[ns(1)], false);
    let layer = layer(ControllerOptions::default());
    layer.attach_bus("c0", dev.clone()).unwrap();
    write_one(&layer, "c0n1");
    drop(layer);
    assert_eq!(
        seen(&dev),
        (1, 1, 0, 0, 0),
        "(notifications, completed, abandoned, flushes before shutdown, flushes)"
    );
}

#[test]
fn a_multipath_layer_shuts_down_both_controllers() {
    let shared = ns(1);
    let d0 = soft("shn-mp0", 1, std::slice::from_ref(&shared), true);
    let d1 = soft("shn-mp1", 2, &[shared], true);
    let layer = layer(ControllerOptions::default());
    layer.attach_bus("c0", d0.clone()).unwrap();
    let names = layer.attach_bus("c1", d1.clone()).unwrap();
    let mpath = names
        .iter()
        .find(|n| n.starts_with(SUBNQN))
        .unwrap_or_else(|| panic!("no multipath bdev in {names:?}"))
        .clone();
    assert_eq!(
        layer
            .open(&mpath)
            .unwrap()
            .multipath()
            .unwrap()
            .paths()
            .len(),
        2
    );
    write_one(&layer, &mpath);
    layer.shutdown();
    // Each controller flushed its namespace once (after the write on the path that
    // took it, or with no write on the other) and finished its shutdown.
    for d in [&d0, &d1] {
        assert_eq!(
            seen(d),
            (1, 1, 0, 1, 1),
            "{}: (notifications, completed, abandoned, flushes before shutdown, flushes)",
            d.config().name
        );
    }
}

#[test]
fn no_shn_notification_only_disables() {
    let dev = soft("shn-off", 1, &[ns(1)], true);
    let layer = layer(ControllerOptions {
        no_shn_notification: true,
        ..ControllerOptions::default()
    });
    layer.attach_bus("c0", dev.clone()).unwrap();
    write_one(&layer, "c0n1");
    layer.shutdown();
    assert_eq!(
        seen(&dev),
        (0, 0, 0, 0, 0),
        "(notifications, completed, abandoned, flushes before shutdown, flushes)"
    );
    assert_eq!(dev.counters().disabled_with_io_queues(), 0);
}

#[test]
fn io_in_flight_at_shutdown_completes_once_with_an_error() {
    let dev = soft("shn-inflight", 1, &[ns(1)], true);
    let layer = layer(ControllerOptions::default());
    layer.attach_bus("c0", dev.clone()).unwrap();
    let bdev = layer.open("c0n1").unwrap();
    let mut ch = bdev.channel().unwrap();
    let buf = layer.alloc_buffer(4096).unwrap();
    // The device holds these completions: the I/O is still in flight at shutdown.
    dev.faults().drop_io_completions(4);
    for i in 0..4u64 {
        if let Err((e, _)) = ch.submit(BdevIo::read(i * 8, 8, buf.whole(), i)) {
            panic!("read refused: {e}");
        }
    }
    ch.flush();
    let start = Instant::now();
    while dev.counters().held_commands() < 4 {
        ch.poll(&mut |_| panic!("a held read completed"));
        assert!(start.elapsed() < LIMIT, "the device did not take the reads");
    }
    layer.shutdown();
    let mut done = [0u32; 4];
    let mut ok = 0;
    let start = Instant::now();
    ch.shutdown();
    while ch.outstanding() > 0 && start.elapsed() < LIMIT {
        ch.poll(&mut |c| {
            done[c.ctx as usize] += 1;
            ok += c.status.is_success() as u32;
        });
    }
    for _ in 0..100 {
        ch.poll(&mut |c| done[c.ctx as usize] += 1);
    }
    assert_eq!(done, [1; 4], "each read completes exactly once");
    assert_eq!(ok, 0, "a read the device never answered cannot succeed");
    assert_eq!(seen(&dev).0, 1, "the controller was notified");
}

/// Neither closing a channel nor the stop sits out an admin command the device never
/// answers: the device drops the Delete I/O SQ's completion for a closed channel's
/// queue pair, with a 5 s admin timeout. The channel's drop returns at once (the
/// controller thread deletes its queues, as for multipath channels), and the shutdown
/// ends the thread's wait (`Controller::cancel_admin_waits`) and still notifies the
/// controller; a layer that does either inline, or joins the thread without
/// cancelling, takes the whole 5 s.
#[test]
fn shutdown_does_not_wait_out_an_admin_command_the_device_never_answers() {
    let dev = soft("shn-lost", 1, &[ns(1)], false);
    let layer = layer(ControllerOptions {
        admin_timeout_ms: 5_000,
        ..ControllerOptions::default()
    });
    layer.attach_bus("c0", dev.clone()).unwrap();
    let bdev = layer.open("c0n1").unwrap();
    let mut ch = bdev.channel().unwrap();
    let deletes = dev.counters().admin_fetched(admin_opc::DELETE_IO_SQ);
    dev.faults().drop_admin_completions(1);
    drain(&mut ch);
    let start = Instant::now();
    drop(ch);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "closing the channel took {took:?}: it waited on its queues' deletion"
    );
    // The controller thread drops the closed channel's queue pair; the device takes
    // its Delete I/O SQ and never answers.
    let start = Instant::now();
    while dev.counters().admin_fetched(admin_opc::DELETE_IO_SQ) == deletes {
        assert!(
            start.elapsed() < LIMIT,
            "the closed channel's queues were not deleted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    layer.shutdown();
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "shutdown took {took:?}: it waited out the unanswered Delete I/O SQ"
    );
    assert_eq!(
        seen(&dev).0,
        1,
        "the controller was notified after the wait was cancelled"
    );
}
