// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Events and waiting for room, as an embedder uses them, on two software
//! controllers that share a namespace (run it: `cargo run -p nvme-bdev --example
//! events_and_room`). The bdev README shows the two halves of it.
//!
//! 1. Subscribe to the multipath bdev's events, take one controller's path to ANA
//!    inaccessible and back, and drain the events on this thread.
//! 2. Fill a channel until its submit says `Busy`, ask to be called when there is
//!    room, and poll: the waiter resubmits the refused I/O from inside the poll.

use nvme_bdev::{
    BdevEvent, BdevIo, BlockLayer, Channel, Error, LayerOptions, RoomWaiter, EVENT_QUEUE_DEFAULT,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::AnaState;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ns = Arc::new(Namespace::new(1, 1 << 12, 512)?);
    let soft = |name: &str, cntlid| {
        SoftController::start(SoftConfig {
            name: name.into(),
            subnqn: "nqn.2024-01.org.example:events".into(),
            cntlid,
            namespaces: vec![ns.clone()],
            ana: true,
            ..SoftConfig::default()
        })
    };
    let (a, b) = (soft("c0", 1), soft("c1", 2));
    let layer = BlockLayer::new(LayerOptions::default())?;
    layer.attach_bus("c0", a)?;
    let names = layer.attach_bus("c1", b.clone())?;
    // Per namespace: the namespace bdev, then the multipath bdev.
    let mp = names[1].clone();

    // [events]
    let events = layer.subscribe(&mp, EVENT_QUEUE_DEFAULT)?;
    b.set_ana_state(1, AnaState::Inaccessible)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut down, mut back) = (false, false);
    while Instant::now() < deadline {
        // On the embedder's own thread: a management loop, or a reactor's timer.
        events.drain(|ev| match ev {
            BdevEvent::AnaChange {
                controller, new, ..
            } => println!("{controller}: ANA state {new:?}"),
            BdevEvent::PathDown { controller, .. } => {
                println!("{controller}: path down");
                down = true;
            }
            BdevEvent::PathUp { controller, .. } => {
                println!("{controller}: path up");
                back = true;
            }
            BdevEvent::Dropped { count } => println!("{count} events lost: re-read the state"),
            other => println!("{other:?}"),
        });
        if back {
            break;
        }
        if down {
            b.set_ana_state(1, AnaState::Optimized)?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // [events]

    // [room]
    thread_local! {
        // The I/O a Busy submit handed back, for the waiter to resubmit.
        static REFUSED: RefCell<Option<BdevIo>> = const { RefCell::new(None) };
    }
    fn resubmit(ch: &mut Channel, _ctx: u64) {
        if let Some(io) = REFUSED.with(|r| r.borrow_mut().take()) {
            if let Err((e, io)) = ch.submit(io) {
                println!("resubmit refused again: {e}");
                REFUSED.with(|r| *r.borrow_mut() = Some(io));
            }
        }
    }
    let mut ch = layer.open(&mp)?.channel()?;
    let buf = layer.alloc_buffer(512)?;
    let mut submitted = 0u64;
    loop {
        match ch.submit(BdevIo::read(submitted % 1024, 1, buf.whole(), submitted)) {
            Ok(()) => submitted += 1,
            Err((Error::Busy(_), io)) => {
                REFUSED.with(|r| *r.borrow_mut() = Some(io));
                ch.notify_when_room(RoomWaiter {
                    func: resubmit,
                    ctx: 0,
                })?;
                break;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
    let mut completed = 0u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while completed < submitted + 1 && Instant::now() < deadline {
        // The waiter runs in here, once a completion made room.
        ch.poll(&mut |_c| completed += 1);
    }
    // [room]
    assert_eq!(
        completed,
        submitted + 1,
        "the waiter's resubmit completed too"
    );
    println!("{submitted} submitted before Busy, {completed} completed (the resubmit too)");
    Ok(())
}
