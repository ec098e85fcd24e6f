// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Namespaces resized while attached, on software controllers (QEMU's NVMe
//! controller cannot resize a namespace at run time: its size is read from the
//! backing drive once, when the namespace device is realized). The software
//! controller resizes the namespace and posts a Namespace Attribute Changed notice
//! with the Changed Namespace List, as a real controller does; the driver re-identifies
//! the namespace and its queue pairs copy the new size; the block layer changes the
//! bdevs' sizes and reports `BdevEvent::Resized` exactly once per bdev and change.
//!
//! - grow: I/O past the old end works on the namespace bdev and the multipath bdev
//!   and reads back intact (written through one, read through the other); I/O in
//!   flight across the resize completes once, successfully;
//! - shrink: I/O past the new end is refused with the error naming the blocks and the
//!   new size; I/O in flight across the resize completes once;
//! - two controllers: the multipath bdev follows the smaller of its paths while their
//!   controllers disagree (one has not seen its notice yet), then changes once;
//!   grown, it takes I/O past its old end through either path.
//!
//! Every wait has a deadline.

mod common;

use nvme_bdev::{BdevEvent, BdevIo, BlockLayer, Channel, Error, EventReceiver, LayerOptions};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::QpairOptions;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:resize";
const MP: &str = "nqn.2024-01.org.nvme-bdev:resize:n1";
const LIMIT: Duration = Duration::from_secs(10);
const BS: usize = 512;
/// Blocks per test I/O.
const NLB: u32 = 8;

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        multi_controller: true,
        ..common::config(name, SUBNQN, cntlid, ns)
    })
}

fn layer() -> BlockLayer {
    BlockLayer::new(LayerOptions {
        qpair: QpairOptions {
            entries: 64,
            pending_max: 1024,
            timeout_ms: 5_000,
        },
        admin_poll_us: 500,
        ..LayerOptions::default()
    })
    .unwrap()
}

/// Every `Resized` event seen so far, by bdev: (old, new) in order.
#[derive(Default)]
struct Resizes(BTreeMap<String, Vec<(u64, u64)>>);

impl Resizes {
    fn take(&mut self, rx: &EventReceiver) {
        rx.drain(|ev| {
            if let BdevEvent::Resized {
                bdev,
                old_blocks,
                new_blocks,
            } = ev
            {
                self.0
                    .entry(bdev)
                    .or_default()
                    .push((old_blocks, new_blocks));
            }
        });
    }

    /// Drains `rx` until `bdev` has `n` resizes, or fails at the deadline.
    fn wait(&mut self, rx: &EventReceiver, bdev: &str, n: usize, channels: &mut [&mut Channel]) {
        let deadline = Instant::now() + LIMIT;
        loop {
            self.take(rx);
            if self.of(bdev).len() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{bdev}: {} Resized event(s) within {LIMIT:?}, expected {n}; all: {:?}",
                self.of(bdev).len(),
                self.0
            );
            // Channels keep polling meanwhile, as a reactor would.
            for ch in channels.iter_mut() {
                ch.poll(&mut |_| {});
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn of(&self, bdev: &str) -> &[(u64, u64)] {
        self.0.get(bdev).map_or(&[], |v| v.as_slice())
    }
}

/// Lets the controller threads run a while longer, then checks that every bdev had
/// exactly the resizes `want` lists, no more.
fn assert_exactly(r: &mut Resizes, rx: &EventReceiver, want: &[(&str, &[(u64, u64)])]) {
    std::thread::sleep(Duration::from_millis(100));
    r.take(rx);
    for (bdev, changes) in want {
        assert_eq!(
            r.of(bdev),
            *changes,
            "{bdev}: Resized events; all: {:?}",
            r.0
        );
    }
    assert_eq!(
        r.0.len(),
        want.len(),
        "bdevs with Resized events: {:?}",
        r.0
    );
}

/// Submits `io` and polls `ch` until it completes; returns its status's success.
fn run(ch: &mut Channel, io: BdevIo) -> bool {
    if let Err((e, _)) = ch.submit(io) {
        panic!("I/O at block {} refused: {e}", io.slba);
    }
    let deadline = Instant::now() + LIMIT;
    let mut ok = None;
    while ok.is_none() {
        assert!(
            Instant::now() < deadline,
            "I/O at block {} did not complete",
            io.slba
        );
        ch.poll(&mut |c| {
            assert!(ok.is_none(), "I/O at block {} completed twice", io.slba);
            ok = Some(c.status.is_success());
        });
    }
    ok.unwrap_or(false)
}

/// Writes a pattern of `NLB` blocks at `slba` through `w`, reads it back through `r`.
fn write_read_back(layer: &BlockLayer, w: &mut Channel, r: &mut Channel, slba: u64) {
    let mut wbuf = layer.alloc_buffer(NLB as usize * BS).unwrap();
    let pattern: Vec<u8> = (0..NLB as usize * BS)
        .map(|i| (i as u64 ^ slba) as u8)
        .collect();
    wbuf.write_at(0, &pattern).unwrap();
    assert!(
        run(w, BdevIo::write(slba, NLB, wbuf.whole(), 1)),
        "write at {slba}"
    );
    let rbuf = layer.alloc_buffer(NLB as usize * BS).unwrap();
    assert!(
        run(r, BdevIo::read(slba, NLB, rbuf.whole(), 2)),
        "read at {slba}"
    );
    let mut back = vec![0u8; pattern.len()];
    rbuf.read_at(0, &mut back).unwrap();
    assert!(back == pattern, "blocks {slba}+{NLB}: read back differs");
}

/// `io` is refused with the bdev's range error, naming the blocks and `size`.
fn assert_out_of_range(ch: &mut Channel, io: BdevIo, size: u64) {
    match ch.submit(io) {
        Err((Error::InvalidIo(msg), _)) => {
            let blocks = format!("blocks {}+{}", io.slba, io.nlb);
            let bdev = format!("the bdev's {size} blocks");
            assert!(
                msg.contains(&blocks) && msg.contains(&bdev),
                "refusal should name {blocks:?} and {bdev:?}: {msg}"
            );
        }
        Err((e, _)) => panic!("refused, but not for its range: {e}"),
        Ok(()) => panic!(
            "blocks {}+{} accepted past the end ({size} blocks)",
            io.slba, io.nlb
        ),
    }
}

/// I/Os kept in flight across a resize: each must complete exactly once.
struct InFlight {
    bufs: Vec<nvme_bdev::IoBuf>,
    done: Vec<u32>,
}

impl InFlight {
    /// Submits `n` reads of `NLB` blocks from block 0 up.
    fn start(layer: &BlockLayer, ch: &mut Channel, n: usize) -> InFlight {
        let bufs: Vec<_> = (0..n)
            .map(|_| layer.alloc_buffer(NLB as usize * BS).unwrap())
            .collect();
        for (i, b) in bufs.iter().enumerate() {
            let io = BdevIo::read(i as u64 * u64::from(NLB), NLB, b.whole(), i as u64);
            if let Err((e, _)) = ch.submit(io) {
                panic!("read {i} refused: {e}");
            }
        }
        InFlight {
            bufs,
            done: vec![0; n],
        }
    }

    fn poll(&mut self, ch: &mut Channel) {
        let done = &mut self.done;
        ch.poll(&mut |c| {
            assert!(
                c.status.is_success(),
                "read {} failed: {:?}",
                c.ctx,
                c.status
            );
            done[c.ctx as usize] += 1;
        });
    }

    /// Polls until every I/O completed; each exactly once.
    fn finish(mut self, ch: &mut Channel) {
        let deadline = Instant::now() + LIMIT;
        while self.done.contains(&0) && Instant::now() < deadline {
            self.poll(ch);
        }
        assert!(
            self.done.iter().all(|&d| d == 1),
            "completions per I/O ({} I/Os): {:?}",
            self.bufs.len(),
            self.done
        );
    }
}

#[test]
fn grow_then_io_past_the_old_end_reads_back() {
    let ns = Arc::new(Namespace::new(1, 1024, BS as u32).unwrap());
    let c0 = soft("c0", 1, &ns);
    let layer = layer();
    let rx = layer.subscribe_all(256).unwrap();
    layer.attach_bus("c0", c0.clone()).unwrap();
    let mut nsch = layer.open("c0n1").unwrap().channel().unwrap();
    let mut mpch = layer.open(MP).unwrap().channel().unwrap();
    // Before: past the end is refused.
    let probe = layer.alloc_buffer(NLB as usize * BS).unwrap();
    assert_out_of_range(&mut mpch, BdevIo::read(1500, NLB, probe.whole(), 9), 1024);
    // I/O in flight on both kinds of channel while the namespace grows.
    let mut f_ns = InFlight::start(&layer, &mut nsch, 16);
    let mut f_mp = InFlight::start(&layer, &mut mpch, 16);
    c0.resize_namespace(1, 2048).unwrap();
    let mut r = Resizes::default();
    let deadline = Instant::now() + LIMIT;
    while (r.of("c0n1").is_empty() || r.of(MP).is_empty()) && Instant::now() < deadline {
        f_ns.poll(&mut nsch);
        f_mp.poll(&mut mpch);
        r.take(&rx);
    }
    f_ns.finish(&mut nsch);
    f_mp.finish(&mut mpch);
    r.wait(&rx, "c0n1", 1, &mut [&mut nsch, &mut mpch]);
    r.wait(&rx, MP, 1, &mut [&mut nsch, &mut mpch]);
    assert_eq!(layer.open("c0n1").unwrap().num_blocks(), 2048);
    assert_eq!(layer.open(MP).unwrap().num_blocks(), 2048);
    // Past the old end: written through one bdev, read back through the other, both
    // ways, up to the new last block.
    write_read_back(&layer, &mut nsch, &mut mpch, 1500);
    write_read_back(&layer, &mut mpch, &mut nsch, 2048 - u64::from(NLB));
    assert_out_of_range(&mut nsch, BdevIo::read(2044, NLB, probe.whole(), 9), 2048);
    assert_exactly(
        &mut r,
        &rx,
        &[("c0n1", &[(1024, 2048)]), (MP, &[(1024, 2048)])],
    );
    drop((nsch, mpch));
    layer.shutdown();
}

#[test]
fn shrink_then_io_past_the_new_end_is_refused_with_the_new_size() {
    let ns = Arc::new(Namespace::new(1, 2048, BS as u32).unwrap());
    let c0 = soft("c0", 1, &ns);
    let layer = layer();
    let rx = layer.subscribe_all(256).unwrap();
    layer.attach_bus("c0", c0.clone()).unwrap();
    let mut nsch = layer.open("c0n1").unwrap().channel().unwrap();
    let mut mpch = layer.open(MP).unwrap().channel().unwrap();
    write_read_back(&layer, &mut nsch, &mut mpch, 1500);
    let mut f_ns = InFlight::start(&layer, &mut nsch, 16);
    let mut f_mp = InFlight::start(&layer, &mut mpch, 16);
    c0.resize_namespace(1, 1024).unwrap();
    let mut r = Resizes::default();
    let deadline = Instant::now() + LIMIT;
    while (r.of("c0n1").is_empty() || r.of(MP).is_empty()) && Instant::now() < deadline {
        f_ns.poll(&mut nsch);
        f_mp.poll(&mut mpch);
        r.take(&rx);
    }
    f_ns.finish(&mut nsch);
    f_mp.finish(&mut mpch);
    r.wait(&rx, "c0n1", 1, &mut [&mut nsch, &mut mpch]);
    r.wait(&rx, MP, 1, &mut [&mut nsch, &mut mpch]);
    // A reactor polls its channels all the time: after one poll each refuses I/O past
    // the new end itself, naming it.
    nsch.poll(&mut |_| {});
    mpch.poll(&mut |_| {});
    let buf = layer.alloc_buffer(NLB as usize * BS).unwrap();
    for ch in [&mut nsch, &mut mpch] {
        assert_out_of_range(ch, BdevIo::read(1500, NLB, buf.whole(), 9), 1024);
        assert_out_of_range(ch, BdevIo::write(1020, NLB, buf.whole(), 9), 1024);
    }
    // The new last blocks still work.
    write_read_back(&layer, &mut mpch, &mut nsch, 1024 - u64::from(NLB));
    assert_exactly(
        &mut r,
        &rx,
        &[("c0n1", &[(2048, 1024)]), (MP, &[(2048, 1024)])],
    );
    drop((nsch, mpch));
    layer.shutdown();
}

#[test]
fn multipath_follows_the_smaller_path_while_controllers_disagree() {
    let ns = Arc::new(Namespace::new(1, 1024, BS as u32).unwrap());
    let c0 = soft("c0", 1, &ns);
    let c1 = soft("c1", 2, &ns);
    let layer = layer();
    let rx = layer.subscribe_all(256).unwrap();
    layer.attach_bus("c0", c0.clone()).unwrap();
    layer.attach_bus("c1", c1.clone()).unwrap();
    let mut c0ch = layer.open("c0n1").unwrap().channel().unwrap();
    let mut c1ch = layer.open("c1n1").unwrap().channel().unwrap();
    let mut mpch = layer.open(MP).unwrap().channel().unwrap();
    let mp = layer.open(MP).unwrap();
    let buf = layer.alloc_buffer(NLB as usize * BS).unwrap();

    // Grow while c1's device stands still: c0 reports 2048, c1 still 1024.
    c1.set_manual(true);
    ns.resize(2048).unwrap();
    let mut r = Resizes::default();
    r.wait(&rx, "c0n1", 1, &mut [&mut c0ch, &mut mpch]);
    std::thread::sleep(Duration::from_millis(50));
    r.take(&rx);
    assert_eq!(mp.num_blocks(), 1024, "grown before every path saw it");
    assert!(r.of(MP).is_empty(), "multipath resized early: {:?}", r.0);
    // c1's own bdev still has the old size: a multipath bdev that grew now would send
    // I/O past 1024 down a path that refuses it.
    c1ch.poll(&mut |_| {});
    assert_out_of_range(&mut c1ch, BdevIo::read(1500, NLB, buf.whole(), 9), 1024);
    // c1 takes its notice: the paths agree, the multipath bdev grows, once.
    c1.set_manual(false);
    r.wait(&rx, "c1n1", 1, &mut [&mut c1ch, &mut mpch]);
    r.wait(&rx, MP, 1, &mut [&mut c1ch, &mut mpch]);
    assert_eq!(mp.num_blocks(), 2048);
    write_read_back(&layer, &mut mpch, &mut c1ch, 1500);
    write_read_back(&layer, &mut c0ch, &mut mpch, 2040);

    // Shrink while c1 stands still again: the first path to see it shrinks the bdev.
    c1.set_manual(true);
    ns.resize(1536).unwrap();
    r.wait(&rx, "c0n1", 2, &mut [&mut c0ch, &mut mpch]);
    r.wait(&rx, MP, 2, &mut [&mut c0ch, &mut mpch]);
    assert_eq!(mp.num_blocks(), 1536);
    mpch.poll(&mut |_| {});
    assert_out_of_range(&mut mpch, BdevIo::read(1600, NLB, buf.whole(), 9), 1536);
    c1.set_manual(false);
    r.wait(&rx, "c1n1", 2, &mut [&mut c1ch, &mut mpch]);
    write_read_back(&layer, &mut mpch, &mut c1ch, 1536 - u64::from(NLB));
    assert_exactly(
        &mut r,
        &rx,
        &[
            ("c0n1", &[(1024, 2048), (2048, 1536)]),
            ("c1n1", &[(1024, 2048), (2048, 1536)]),
            (MP, &[(1024, 2048), (2048, 1536)]),
        ],
    );
    drop((c0ch, c1ch, mpch));
    layer.shutdown();
}
