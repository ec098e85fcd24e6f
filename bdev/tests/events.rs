// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Bdev events (`BlockLayer::subscribe`, SPDK's `event_cb` of `spdk_bdev_open_ext`) on
//! software controllers under scripted faults: an ANA change on one controller and
//! back, a controller removed and reconnected, a hot-added controller, a detach. The
//! events of the multipath bdev come in order, exactly those; a subscriber to every
//! bdev also sees the namespace bdev of the hot-added controller come and go. Events
//! are delivered only by the receiver's `drain`, on the thread that calls it, never
//! inside a submit or a poll; a full queue drops and counts, never holds a controller
//! thread up. Every wait has a deadline.

mod common;

use common::Bus;
use nvme_bdev::layer::Connector;
use nvme_bdev::{
    BdevEvent, BdevIo, BlockLayer, Channel, EventReceiver, LayerOptions, MpathOptions,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::AnaState;
use nvme_driver::QpairOptions;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:events";
const MP: &str = "nqn.2024-01.org.nvme-bdev:events:n1";
const LIMIT: Duration = Duration::from_secs(10);

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        ana: true,
        ..common::config(name, SUBNQN, cntlid, ns)
    })
}

fn layer() -> BlockLayer {
    BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            fast_io_fail_timeout_ms: 1_000,
            reconnect_delay_ms: 20,
            ctrl_loss_timeout_ms: 10_000,
            ..MpathOptions::default()
        },
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

thread_local! {
    /// Set while this thread is inside a channel's submit or poll.
    static IN_IO: Cell<bool> = const { Cell::new(false) };
}

/// What an event says, short: kind, bdev, controller.
fn short(ev: &BdevEvent) -> String {
    match ev {
        BdevEvent::PathDown {
            bdev, controller, ..
        } => format!("PathDown {bdev} {controller}"),
        BdevEvent::PathUp {
            bdev, controller, ..
        } => format!("PathUp {bdev} {controller}"),
        BdevEvent::AnaChange {
            bdev,
            controller,
            old,
            new,
        } => format!("AnaChange {bdev} {controller} {old:?}->{new:?}"),
        BdevEvent::ControllerRemoved { bdev, controller } => {
            format!("ControllerRemoved {bdev} {controller}")
        }
        BdevEvent::ControllerAdded { bdev, controller } => {
            format!("ControllerAdded {bdev} {controller}")
        }
        BdevEvent::BdevRemoved { bdev } => format!("BdevRemoved {bdev}"),
        BdevEvent::Dropped { count } => format!("Dropped {count}"),
        other => format!("{other:?}"),
    }
}

/// Receives events on the test thread, checking where each is delivered.
struct Seen {
    rx: EventReceiver,
    got: Vec<String>,
}

impl Seen {
    fn new(rx: EventReceiver) -> Self {
        Seen {
            rx,
            got: Vec::new(),
        }
    }
    fn drain(&mut self) {
        let me = std::thread::current().id();
        let got = &mut self.got;
        self.rx.drain(|ev| {
            assert_eq!(std::thread::current().id(), me, "event on another thread");
            assert!(
                !IN_IO.with(Cell::get),
                "event delivered inside a submit or poll"
            );
            got.push(short(&ev));
        });
    }
    /// Drains until the events seen end with `tail`, within `LIMIT`.
    fn wait_for(&mut self, tail: &[&str], also: &mut impl FnMut()) {
        let t0 = Instant::now();
        loop {
            self.drain();
            if self
                .got
                .ends_with(&tail.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            {
                return;
            }
            assert!(
                t0.elapsed() < LIMIT,
                "waiting for {tail:?}; events so far: {:#?}",
                self.got
            );
            also();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn events_come_in_order_under_scripted_faults() {
    let ns = Arc::new(Namespace::new(1, 1 << 12, 512).unwrap());
    let a = soft("softA", 1, &ns);
    let b = soft("softB", 2, &ns);
    // softA's connector: whatever controller `a_now` holds, failing while `a_away`.
    let a_now = Arc::new(Mutex::new(a.clone()));
    let a_away = Arc::new(AtomicBool::new(false));
    let connector: Connector = {
        let (now, away) = (a_now.clone(), a_away.clone());
        Arc::new(move || {
            if away.load(Ordering::Acquire) {
                return Err(nvme_driver::Error::ControllerFailed {
                    device: "softA".into(),
                    reason: "test: removed".into(),
                });
            }
            Ok(now.lock().unwrap().clone() as Arc<dyn nvme_driver::bus::Bus>)
        })
    };
    let layer = layer();
    layer.attach("softA", connector).unwrap();
    layer.attach_bus("softB", b.clone()).unwrap();
    let mut mp = Seen::new(layer.subscribe(MP, 64).unwrap());
    let mut all = Seen::new(layer.subscribe_all(64).unwrap());
    let mut idle = || {};

    // ANA: B inaccessible, then optimized again.
    b.set_ana_state(1, AnaState::Inaccessible).unwrap();
    mp.wait_for(
        &[
            &format!("AnaChange {MP} softB Optimized->Inaccessible"),
            &format!("PathDown {MP} softB"),
        ],
        &mut idle,
    );
    b.set_ana_state(1, AnaState::Optimized).unwrap();
    mp.wait_for(
        &[
            &format!("AnaChange {MP} softB Inaccessible->Optimized"),
            &format!("PathUp {MP} softB"),
        ],
        &mut idle,
    );

    // A is removed (registers read all ones; reconnects fail), then comes back as a
    // fresh controller and is reconnected.
    a_away.store(true, Ordering::Release);
    a.faults().simulate_removal();
    mp.wait_for(
        &[
            &format!("PathDown {MP} softA"),
            &format!("ControllerRemoved {MP} softA"),
        ],
        &mut idle,
    );
    *a_now.lock().unwrap() = soft("softA", 1, &ns);
    a_away.store(false, Ordering::Release);
    mp.wait_for(
        &[
            &format!("PathUp {MP} softA"),
            &format!("ControllerAdded {MP} softA"),
        ],
        &mut idle,
    );

    // C is hot-added: it joins the multipath bdev and brings a namespace bdev.
    let bus = Bus::default();
    layer.enable_hotplug(Arc::new(bus.clone()), 20).unwrap();
    bus.plug("softC", &soft("softC", 3, &ns));
    mp.wait_for(
        &[
            &format!("PathUp {MP} softC"),
            &format!("ControllerAdded {MP} softC"),
        ],
        &mut idle,
    );
    layer.disable_hotplug();
    layer.detach("softC").unwrap();
    mp.wait_for(
        &[
            &format!("PathDown {MP} softC"),
            &format!("ControllerRemoved {MP} softC"),
        ],
        &mut idle,
    );

    // Exactly these, in this order.
    let want: Vec<String> = [
        "AnaChange {MP} softB Optimized->Inaccessible",
        "PathDown {MP} softB",
        "AnaChange {MP} softB Inaccessible->Optimized",
        "PathUp {MP} softB",
        "PathDown {MP} softA",
        "ControllerRemoved {MP} softA",
        "PathUp {MP} softA",
        "ControllerAdded {MP} softA",
        "PathUp {MP} softC",
        "ControllerAdded {MP} softC",
        "PathDown {MP} softC",
        "ControllerRemoved {MP} softC",
    ]
    .iter()
    .map(|s| s.replace("{MP}", MP))
    .collect();
    assert_eq!(mp.got, want);
    all.drain();
    let all_mp: Vec<String> = all.got.iter().filter(|e| e.contains(MP)).cloned().collect();
    assert_eq!(all_mp, want, "the subscriber to every bdev, for {MP}");
    let c_ns: Vec<&String> = all.got.iter().filter(|e| e.contains("softCn1")).collect();
    assert_eq!(
        c_ns,
        [
            "ControllerAdded softCn1 softC",
            "ControllerRemoved softCn1 softC",
            "BdevRemoved softCn1",
        ],
        "softC's namespace bdev"
    );
    // A's namespace bdev: removed and added with it.
    let a_ns: Vec<&String> = all.got.iter().filter(|e| e.contains("softAn1")).collect();
    assert_eq!(
        a_ns,
        [
            "ControllerRemoved softAn1 softA",
            "ControllerAdded softAn1 softA"
        ]
    );
    assert_eq!(mp.rx.dropped() + all.rx.dropped(), 0);
    eprintln!("events: {:#?}", all.got);
}

#[test]
fn events_are_delivered_by_drain_on_its_thread_never_inside_submit_or_poll() {
    let ns = Arc::new(Namespace::new(1, 1 << 12, 512).unwrap());
    let a = soft("softA", 1, &ns);
    let b = soft("softB", 2, &ns);
    let layer = layer();
    layer.attach_bus("softA", a).unwrap();
    layer.attach_bus("softB", b.clone()).unwrap();
    let mut seen = Seen::new(layer.subscribe(MP, 256).unwrap());
    let mut ch: Channel = layer.open(MP).unwrap().channel().unwrap();
    let buf = layer.alloc_buffer(4096).unwrap();
    // Another thread flips B's ANA state while this one runs I/O and drains events,
    // as a reactor would between polls.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut flips = 0;
            while !stop.load(Ordering::Acquire) && flips < 10 {
                let s = if flips % 2 == 0 {
                    AnaState::NonOptimized
                } else {
                    AnaState::Optimized
                };
                b.set_ana_state(1, s).unwrap();
                flips += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t0 = Instant::now();
    let (mut submitted, mut completed) = (0u64, 0u64);
    // Until the flips are over and the last one (back to optimized) was reported:
    // flips close together may reach the layer as one ANA log read, so fewer events.
    let last = format!("AnaChange {MP} softB NonOptimized->Optimized");
    while !(flipper.is_finished() && seen.got.last() == Some(&last)) {
        assert!(t0.elapsed() < LIMIT, "events: {:?}", seen.got);
        for _ in 0..8 {
            IN_IO.with(|f| f.set(true));
            let r = ch.submit(BdevIo::read(submitted % 64, 1, buf.whole(), submitted));
            IN_IO.with(|f| f.set(false));
            if r.is_ok() {
                submitted += 1;
            }
        }
        IN_IO.with(|f| f.set(true));
        ch.poll(&mut |c| {
            assert!(c.status.is_success());
            completed += 1;
        });
        IN_IO.with(|f| f.set(false));
        seen.drain();
    }
    stop.store(true, Ordering::Release);
    flipper.join().unwrap();
    while completed < submitted {
        assert!(t0.elapsed() < LIMIT, "I/O did not drain");
        ch.poll(&mut |_| completed += 1);
    }
    // Optimized <-> non-optimized: ANA changes only, the path stays usable.
    for (i, e) in seen.got.iter().enumerate() {
        let want = if i % 2 == 0 {
            "Optimized->NonOptimized"
        } else {
            "NonOptimized->Optimized"
        };
        assert_eq!(e, &format!("AnaChange {MP} softB {want}"), "event {i}");
    }
    assert!(submitted > 0 && seen.got.len() >= 2, "{:?}", seen.got);
}

#[test]
fn a_full_queue_drops_and_counts_and_never_holds_the_controller_thread() {
    let ns = Arc::new(Namespace::new(1, 1 << 12, 512).unwrap());
    let a = soft("softA", 1, &ns);
    let b = soft("softB", 2, &ns);
    let layer = layer();
    layer.attach_bus("softA", a).unwrap();
    layer.attach_bus("softB", b.clone()).unwrap();
    let rx = layer.subscribe(MP, 2).unwrap();
    let bdev = layer.open(MP).unwrap();
    let mpb = bdev.multipath().unwrap().clone();
    let ana_of_b = || {
        mpb.paths()
            .iter()
            .find(|p| p.name == "softB")
            .map(|p| p.state.ana)
    };
    // Nobody drains: each flip must still reach the path set.
    let flips = 6;
    for i in 0..flips {
        let s = if i % 2 == 0 {
            AnaState::NonOptimized
        } else {
            AnaState::Optimized
        };
        b.set_ana_state(1, s).unwrap();
        let t0 = Instant::now();
        while ana_of_b() != Some(s) {
            assert!(
                t0.elapsed() < LIMIT,
                "flip {i}: the controller thread did not publish {s:?} (held up by a full event queue?)"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Also when the look itself waited (`paths()` takes the path-set writer's lock).
        assert!(
            t0.elapsed() < LIMIT,
            "flip {i}: published after {:?} (held up by a full event queue?)",
            t0.elapsed()
        );
    }
    assert_eq!(rx.dropped(), flips - 2, "dropped events counted");
    let mut got = Vec::new();
    rx.drain(|ev| got.push(short(&ev)));
    assert_eq!(
        got,
        [
            format!("AnaChange {MP} softB Optimized->NonOptimized"),
            format!("AnaChange {MP} softB NonOptimized->Optimized"),
            format!("Dropped {}", flips - 2),
        ]
    );
    // The next event after the loss report comes as usual.
    b.set_ana_state(1, AnaState::NonOptimized).unwrap();
    let t0 = Instant::now();
    let ev = loop {
        if let Some(ev) = rx.try_recv() {
            break ev;
        }
        assert!(t0.elapsed() < LIMIT, "no event after the drops");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(
        short(&ev),
        format!("AnaChange {MP} softB Optimized->NonOptimized")
    );
}
