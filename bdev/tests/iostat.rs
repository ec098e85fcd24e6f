// SPDX-License-Identifier: Apache-2.0 OR MIT
//! I/O statistics per bdev and per path (issue 23, item 5), against software
//! controllers: after the channels close, a bdev's figures are exactly the I/O done
//! (operations and bytes by kind, completions, errors, failovers), the paths' shares
//! add up to every dispatch (each failover dispatches once more), an ANA error is
//! charged to the path that returned it; while I/O runs, another thread reads them
//! without stopping it and sees them only grow; an open channel's figures reach other
//! threads at its periodic full poll.

mod common;

use nvme_bdev::{Bdev, BdevIo, BlockLayer, Channel, IoStat, LayerOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::{sc, sct};
use nvme_driver::Status;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:iostat";
const LIMIT: Duration = Duration::from_secs(20);
/// Per channel: writes and reads of 8 blocks (4 KiB), then the others.
const RW: u64 = 300;
const ZEROES: u64 = 10;
const UNMAPS: u64 = 5;

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        multi_controller: true,
        ..common::config(name, SUBNQN, cntlid, ns)
    })
}

/// What a core saw delivered.
#[derive(Default)]
struct Tally {
    done: u64,
    errors: u64,
}

/// Submits `io`, polling while the channel is busy; counts what completes in `t`.
fn submit(ch: &mut Channel, io: BdevIo, t: &mut Tally) {
    let start = Instant::now();
    let mut io = io;
    loop {
        match ch.submit(io) {
            Ok(()) => return,
            Err((nvme_bdev::Error::Busy(_), back)) => {
                io = back;
                ch.poll(&mut |c| {
                    t.done += 1;
                    t.errors += !c.status.is_success() as u64;
                });
                assert!(start.elapsed() < LIMIT, "no room for {LIMIT:?}");
            }
            Err((e, _)) => panic!("submit refused: {e}"),
        }
    }
}

/// One core's traffic on bdev `bdev` in its own stripe of blocks: `RW` writes, `RW`
/// reads, `ZEROES` write zeroes, `UNMAPS` unmaps of 16 blocks, one flush. Returns
/// the errors delivered.
fn traffic(layer: &BlockLayer, bdev: &Bdev, stripe: u64) -> u64 {
    let mut ch = bdev.channel().unwrap();
    let buf = layer.alloc_buffer(4096).unwrap();
    let (mut t, mut sent) = (Tally::default(), 0u64);
    let base = stripe * 8 * (RW + 16 * (ZEROES + UNMAPS));
    for i in 0..RW {
        submit(
            &mut ch,
            BdevIo::write(base + i * 8, 8, buf.whole(), i),
            &mut t,
        );
        sent += 1;
    }
    for i in 0..RW {
        submit(
            &mut ch,
            BdevIo::read(base + i * 8, 8, buf.whole(), i),
            &mut t,
        );
        sent += 1;
    }
    let tail = base + RW * 8;
    for i in 0..ZEROES {
        submit(&mut ch, BdevIo::write_zeroes(tail + i * 16, 8, i), &mut t);
        sent += 1;
    }
    for i in 0..UNMAPS {
        submit(
            &mut ch,
            BdevIo::unmap(tail + (ZEROES + i) * 16, 16, i),
            &mut t,
        );
        sent += 1;
    }
    submit(&mut ch, BdevIo::flush(0), &mut t);
    sent += 1;
    let start = Instant::now();
    while t.done < sent {
        ch.poll(&mut |c| {
            t.done += 1;
            t.errors += !c.status.is_success() as u64;
        });
        assert!(start.elapsed() < LIMIT, "{} of {sent} completed", t.done);
    }
    let own = ch.iostat();
    assert_eq!(own.completed, sent, "the channel's own view: {own:?}");
    assert_eq!(own.errors, t.errors, "the channel's own view: {own:?}");
    t.errors
}

fn assert_kinds(s: &IoStat, channels: u64) {
    assert_eq!(s.write_ops, channels * RW, "{s:?}");
    assert_eq!(s.write_bytes, channels * RW * 4096, "{s:?}");
    assert_eq!(s.read_ops, channels * RW, "{s:?}");
    assert_eq!(s.read_bytes, channels * RW * 4096, "{s:?}");
    assert_eq!(s.write_zeroes_ops, channels * ZEROES, "{s:?}");
    assert_eq!(s.write_zeroes_bytes, channels * ZEROES * 4096, "{s:?}");
    assert_eq!(s.unmap_ops, channels * UNMAPS, "{s:?}");
    assert_eq!(s.unmap_bytes, channels * UNMAPS * 8192, "{s:?}");
    assert_eq!(s.flush_ops, channels, "{s:?}");
    assert_eq!(s.completed, s.ops(), "every accepted I/O delivered: {s:?}");
}

#[test]
fn statistics_match_the_io_done_per_bdev_and_per_path() {
    let ns = Arc::new(Namespace::new(1, 1 << 16, 512).unwrap());
    let d0 = soft("st0", 1, &ns);
    let d1 = soft("st1", 2, &ns);
    let layer = Arc::new(
        BlockLayer::new(LayerOptions {
            qpair: nvme_driver::QpairOptions {
                entries: 64,
                ..nvme_driver::QpairOptions::default()
            },
            ..LayerOptions::default()
        })
        .unwrap(),
    );
    layer.attach_bus("c0", d0.clone()).unwrap();
    let names = layer.attach_bus("c1", d1.clone()).unwrap();
    let mpath = names
        .iter()
        .find(|n| n.starts_with(SUBNQN))
        .unwrap()
        .clone();
    let bdev = layer.open(&mpath).unwrap();

    // An ANA error from c0 (failed over, then successful) and a media error from c1
    // (delivered as an error: not a path's fault) on the first I/Os each one takes.
    d0.faults()
        .fail_next_io(Status::new(sct::PATH, sc::ANA_INACCESSIBLE, false));
    d1.faults()
        .fail_next_io(Status::new(sct::MEDIA, 0x81, true));

    // Every I/O timed from here on.
    bdev.enable_latency_histogram(true).unwrap();

    // Another thread reads the figures while the I/O runs: they only grow.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (bdev, running) = (bdev.clone(), running.clone());
        std::thread::spawn(move || {
            let (mut last, mut samples) = (IoStat::default(), 0u64);
            while running.load(Ordering::Acquire) {
                let s = bdev.iostat().total;
                assert!(
                    s.completed >= last.completed
                        && s.read_ops >= last.read_ops
                        && s.write_bytes >= last.write_bytes,
                    "went back: {last:?} then {s:?}"
                );
                last = s;
                samples += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            samples
        })
    };
    let cores: Vec<_> = (0..2u64)
        .map(|stripe| {
            let (layer, bdev) = (layer.clone(), bdev.clone());
            std::thread::spawn(move || traffic(&layer, &bdev, stripe))
        })
        .collect();
    let errors: u64 = cores.into_iter().map(|t| t.join().unwrap()).sum();
    running.store(false, Ordering::Release);
    assert!(sampler.join().unwrap() > 0);

    // Both channels closed: exact.
    let st = bdev.iostat();
    assert_eq!(st.bdev, mpath);
    assert_kinds(&st.total, 2);
    assert_eq!(errors, 1, "the media error reached the submitter");
    assert_eq!(st.total.errors, 1, "{st:?}");
    assert!(st.total.failovers >= 1, "the ANA error failed over: {st:?}");
    let dispatched: u64 = st.paths.iter().map(|p| p.submitted).sum();
    assert_eq!(
        dispatched,
        st.total.ops() + st.total.failovers + st.total.retries,
        "each I/O is dispatched once, and once more per failover or retry: {st:#?}"
    );
    let c0 = st
        .paths
        .iter()
        .find(|p| p.controller == "c0")
        .expect("c0's path");
    assert!(
        c0.ana_errors >= 1 && c0.path_errors >= c0.ana_errors,
        "{st:#?}"
    );
    let c1 = st
        .paths
        .iter()
        .find(|p| p.controller == "c1")
        .expect("c1's path");
    assert_eq!(
        c1.path_errors, 0,
        "a media error is not a path error: {st:#?}"
    );
    // Each delivered I/O has its latency in the histogram.
    let timed = st.latency.count();
    assert_eq!(timed, st.total.completed, "{:?}", st.latency.nonzero());
    let (p50, p99) = (st.latency.quantile(0.5), st.latency.quantile(0.99));
    assert!(p50.is_some() && p50 <= p99, "{p50:?} {p99:?}");
    bdev.enable_latency_histogram(false).unwrap();

    // A path taken away while a channel is open: its share stays in the figures
    // (under "(removed)"), and the shares still add up.
    let mut ch = bdev.channel().unwrap();
    let buf = layer.alloc_buffer(4096).unwrap();
    let mut t = Tally::default();
    for i in 0..20 {
        submit(&mut ch, BdevIo::read(i * 8, 8, buf.whole(), i), &mut t);
    }
    let start = Instant::now();
    while t.done < 20 {
        ch.poll(&mut |_| t.done += 1);
        assert!(start.elapsed() < LIMIT);
    }
    layer.detach("c0").unwrap();
    let start = Instant::now();
    loop {
        ch.poll(&mut |_| panic!("nothing is in flight"));
        let st = bdev.iostat();
        let removed = st.paths.iter().find(|p| p.controller == "(removed)");
        if removed.is_some() && st.total.read_ops == 2 * RW + 20 {
            assert_eq!(st.latency.count(), timed, "timed with the histogram off");
            let dispatched: u64 = st.paths.iter().map(|p| p.submitted).sum();
            assert_eq!(
                dispatched,
                st.total.ops() + st.total.failovers + st.total.retries,
                "a removed path's share is kept: {st:#?}"
            );
            break;
        }
        assert!(start.elapsed() < LIMIT, "c0's path never left: {st:#?}");
    }
    drop(ch);

    // A namespace bdev: an open channel's figures reach another thread at its
    // periodic publication, and are exact once it is closed.
    let nsb = layer.open("c1n1").unwrap();
    let mut ch = nsb.channel().unwrap();
    let buf = layer.alloc_buffer(4096).unwrap();
    let mut t = Tally::default();
    for i in 0..10 {
        submit(&mut ch, BdevIo::read(i * 8, 8, buf.whole(), i), &mut t);
    }
    let start = Instant::now();
    while t.done < 10 {
        ch.poll(&mut |_| t.done += 1);
        assert!(start.elapsed() < LIMIT);
    }
    assert_eq!(ch.iostat().read_ops, 10);
    for _ in 0..nvme_bdev::iostat::PUBLISH_EVERY {
        ch.poll(&mut |_| panic!("nothing is in flight"));
    }
    let seen = std::thread::scope(|s| s.spawn(|| nsb.iostat()).join().unwrap());
    assert_eq!(
        (seen.total.read_ops, seen.total.completed),
        (10, 10),
        "{seen:?}"
    );
    assert!(seen.paths.is_empty());
    let e = nsb.enable_latency_histogram(true).unwrap_err().to_string();
    assert!(e.contains("multipath"), "{e}");
    drop(ch);
    assert_eq!(nsb.iostat().total.read_bytes, 10 * 4096);
    assert_eq!(nsb.iostat().total, seen.total);

    // Health through the layer: SMART and the error log of an attached controller; a
    // name that is not attached is refused with the names that are.
    layer.smart_log("c1").expect("c1's SMART log");
    layer.error_log("c1").expect("c1's error log");
    let e = layer.smart_log("c0").unwrap_err().to_string();
    assert!(e.contains("\"c0\"") && e.contains("\"c1\""), "{e}");
}
