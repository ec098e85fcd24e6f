// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Waiting for room (`Channel::notify_when_room`, SPDK's `spdk_bdev_queue_io_wait`) on
//! software controllers, for both kinds of channel: a channel filled until its submit
//! says `Busy` runs a registered waiter from a later poll, on the polling thread, once
//! completions have made room, exactly once; the waiter's resubmit of the refused I/O
//! is accepted and completes. Waiters run in registration order, one registered from
//! inside a waiter runs at a later poll, and the fixed-size list refuses the one too
//! many with a clear error. Every wait has a deadline.

use nvme_bdev::{
    BdevIo, BlockLayer, Channel, Error, LayerOptions, MpathOptions, RoomWaiter, ROOM_WAITERS_MAX,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::QpairOptions;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);
/// Slots of a multipath channel.
const DEPTH: usize = 8;

fn rig() -> (BlockLayer, Arc<SoftController>, Vec<String>) {
    let ns = Arc::new(Namespace::new(1, 1 << 12, 512).unwrap());
    let c = SoftController::start(SoftConfig {
        name: "softR".into(),
        subnqn: "nqn.2024-01.org.nvme-bdev:room".into(),
        cntlid: 1,
        mqes: 63,
        namespaces: vec![ns],
        ..SoftConfig::default()
    });
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            channel_depth: DEPTH,
            ..MpathOptions::default()
        },
        // The namespace bdev's channel is its queue pair: 7 commands in flight and 4
        // on its pending ring, then Busy.
        qpair: QpairOptions {
            entries: 8,
            pending_max: 4,
            timeout_ms: 5_000,
        },
        admin_poll_us: 500,
        ..LayerOptions::default()
    })
    .unwrap();
    let names = layer.attach_bus("softR", c.clone()).unwrap();
    (layer, c, names)
}

/// One run of a waiter: its ctx, the completions delivered before it, its resubmit.
type Run = (u64, u64, Result<(), String>);

thread_local! {
    /// The I/O the channel refused, for the waiter to resubmit.
    static REFUSED: RefCell<Option<BdevIo>> = const { RefCell::new(None) };
    /// Completions delivered to the test so far.
    static DELIVERED: Cell<u64> = const { Cell::new(0) };
    /// Per run of the waiter: (ctx, completions delivered before it, resubmit result).
    static RUNS: RefCell<Vec<Run>> = const { RefCell::new(Vec::new()) };
}

/// The waiter: records the run (on this thread's locals: a run on another thread
/// would record nothing here) and resubmits the refused I/O.
fn resubmit(ch: &mut Channel, ctx: u64) {
    let io = REFUSED.with(|r| r.borrow_mut().take());
    let result = match io {
        Some(io) => ch.submit(io).map_err(|(e, _)| e.to_string()),
        None => Err("no refused I/O to resubmit".into()),
    };
    let before = DELIVERED.with(Cell::get);
    RUNS.with(|r| r.borrow_mut().push((ctx, before, result)));
}

fn poll(ch: &mut Channel) -> usize {
    ch.poll(&mut |c| {
        assert!(
            c.status.is_success(),
            "I/O {} failed: {:?}",
            c.ctx,
            c.status
        );
        DELIVERED.with(|d| d.set(d.get() + 1));
    })
}

fn fill_until_busy(layer: &BlockLayer, ch: &mut Channel) -> usize {
    let buf = layer.alloc_buffer(512).unwrap();
    let mut accepted = 0;
    loop {
        let io = BdevIo::read(accepted as u64, 1, buf.whole(), accepted as u64);
        match ch.submit(io) {
            Ok(()) => accepted += 1,
            // A multipath channel's slots, or a queue pair's pending ring.
            Err((Error::Busy(_) | Error::Driver(nvme_driver::Error::Busy(_)), io)) => {
                REFUSED.with(|r| *r.borrow_mut() = Some(io));
                return accepted;
            }
            Err((e, _)) => panic!("submit {accepted}: {e}"),
        }
        assert!(accepted < 10_000, "the channel never said Busy");
    }
}

fn waiter_runs_once_after_completions(bdev: &str) {
    let (layer, _c, _names) = rig();
    let mut ch = layer.open(bdev).unwrap().channel().unwrap();
    DELIVERED.with(|d| d.set(0));
    RUNS.with(|r| r.borrow_mut().clear());
    let accepted = fill_until_busy(&layer, &mut ch);
    assert!(!ch.has_room(), "{bdev}: Busy, yet has_room");
    ch.notify_when_room(RoomWaiter {
        func: resubmit,
        ctx: 77,
    })
    .unwrap();
    assert_eq!(ch.room_waiters(), 1);
    let t0 = Instant::now();
    while RUNS.with(|r| r.borrow().is_empty()) {
        assert!(t0.elapsed() < LIMIT, "{bdev}: the waiter never ran");
        poll(&mut ch);
    }
    let (ctx, delivered_before, result) = RUNS.with(|r| r.borrow()[0].clone());
    assert_eq!(ctx, 77);
    assert!(
        delivered_before > 0,
        "{bdev}: the waiter ran before any completion made room"
    );
    assert_eq!(result, Ok(()), "{bdev}: the resubmit from the waiter");
    // Polled until every I/O, the resubmitted one too, is back.
    while DELIVERED.with(Cell::get) < accepted as u64 + 1 {
        assert!(t0.elapsed() < LIMIT, "{bdev}: I/O did not complete");
        poll(&mut ch);
    }
    for _ in 0..100 {
        poll(&mut ch);
    }
    let runs = RUNS.with(|r| r.borrow().len());
    assert_eq!(runs, 1, "{bdev}: the waiter ran {runs} times");
    assert_eq!(ch.room_waiters(), 0);
    assert_eq!(ch.outstanding(), 0);
    eprintln!("{bdev}: {accepted} accepted, Busy, waiter ran after {delivered_before} completions");
}

#[test]
fn a_waiter_runs_once_on_the_polling_thread_after_completions_make_room() {
    waiter_runs_once_after_completions("softRn1");
    waiter_runs_once_after_completions("nqn.2024-01.org.nvme-bdev:room:n1");
}

fn note(_ch: &mut Channel, ctx: u64) {
    RUNS.with(|r| r.borrow_mut().push((ctx, 0, Ok(()))));
}

fn note_and_register_again(ch: &mut Channel, ctx: u64) {
    note(ch, ctx);
    ch.notify_when_room(RoomWaiter {
        func: note,
        ctx: ctx + 100,
    })
    .unwrap();
}

#[test]
fn waiters_run_in_order_and_the_list_is_bounded() {
    let (layer, _c, names) = rig();
    let mp = names.iter().find(|n| n.starts_with("nqn.")).unwrap();
    let mut ch = layer.open(mp).unwrap().channel().unwrap();
    RUNS.with(|r| r.borrow_mut().clear());
    let accepted = fill_until_busy(&layer, &mut ch);
    assert_eq!(accepted, DEPTH);
    ch.notify_when_room(RoomWaiter {
        func: note_and_register_again,
        ctx: 0,
    })
    .unwrap();
    for ctx in 1..ROOM_WAITERS_MAX as u64 {
        ch.notify_when_room(RoomWaiter { func: note, ctx }).unwrap();
    }
    match ch.notify_when_room(RoomWaiter {
        func: note,
        ctx: 999,
    }) {
        Err(Error::Exhausted(msg)) => assert!(msg.contains("ROOM_WAITERS_MAX"), "{msg}"),
        other => panic!("one waiter too many: {other:?}"),
    }
    let t0 = Instant::now();
    while RUNS.with(|r| r.borrow().len()) < ROOM_WAITERS_MAX + 1 {
        assert!(
            t0.elapsed() < LIMIT,
            "waiters run: {:?}",
            RUNS.with(|r| r.borrow().len())
        );
        poll(&mut ch);
    }
    let order: Vec<u64> = RUNS.with(|r| r.borrow().iter().map(|x| x.0).collect());
    // Registration order; the one registered from inside the first runs last.
    let mut want: Vec<u64> = (0..ROOM_WAITERS_MAX as u64).collect();
    want.push(100);
    assert_eq!(order, want);
    assert_eq!(ch.room_waiters(), 0);
}
