// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Hot-plug through the real block layer on software controllers: a test
//! [`HotplugSource`] stands in for the sysfs scan (the controllers "present" are the
//! ones the test lists), and verified round-robin traffic runs through the multipath
//! bdev from the test thread while controllers appear, leave and come back. Checked:
//! a controller that appears at a new name joins the bdev as a path and carries I/O;
//! one that comes back after the loss timeout is attached again under its name; one
//! that comes back while the layer still waits for it reconnects at once (not at the
//! next, far away, reconnect attempt); controllers present when hot-plug is enabled
//! and controllers that appear after it is disabled are left alone. Every I/O
//! completes exactly once, successfully, data intact, no stray completion. Every wait
//! has a deadline.

mod common;

use common::Bus;
use nvme_bdev::layer::HotplugSource;
use nvme_bdev::NvmeQueue;
use nvme_bdev::{
    BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MpathOptions, Multipath, Policy,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::QpairOptions;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:hotplug";
const QD: usize = 16;
const NLB: u32 = 8;
const BS: usize = 512;
/// The hot-plug scan period of every test.
const PERIOD_MS: u64 = 20;

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(common::config(name, SUBNQN, cntlid, ns))
}

fn layer(reconnect_ms: u64, loss_ms: i64) -> BlockLayer {
    BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy: Policy::RoundRobin,
            fast_io_fail_timeout_ms: reconnect_ms,
            reconnect_delay_ms: reconnect_ms,
            ctrl_loss_timeout_ms: loss_ms,
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

/// Write-then-read-verify traffic, each slot on its own block range, polled from the
/// test thread.
struct Traffic {
    ch: Channel,
    mp: Arc<Multipath<NvmeQueue>>,
    wbufs: Vec<IoBuf>,
    rbufs: Vec<IoBuf>,
    out: Vec<u64>,
    seq: Vec<u64>,
    reading: Vec<bool>,
    completed: u64,
    errors: u64,
    mismatches: u64,
    duplicates: u64,
    /// Per path id: its controller name (every path seen).
    names: HashMap<u64, String>,
}

fn pattern(slot: usize, seq: u64, i: usize) -> u8 {
    (slot * 11 + seq as usize * 17 + i * 5 + 3) as u8
}

impl Traffic {
    fn new(layer: &BlockLayer, bdev: &str) -> Self {
        let b = layer.open(bdev).unwrap();
        let len = NLB as usize * BS;
        Traffic {
            ch: b.channel().unwrap(),
            mp: b.multipath().unwrap().clone(),
            wbufs: (0..QD).map(|_| layer.alloc_buffer(len).unwrap()).collect(),
            rbufs: (0..QD).map(|_| layer.alloc_buffer(len).unwrap()).collect(),
            out: vec![u64::MAX; QD],
            seq: vec![0; QD],
            reading: vec![false; QD],
            completed: 0,
            errors: 0,
            mismatches: 0,
            duplicates: 0,
            names: HashMap::new(),
        }
    }

    fn issue(&mut self, slot: usize) {
        let seq = self.seq[slot];
        let ctx = (slot as u64) << 32 | seq << 1 | self.reading[slot] as u64;
        let lba = slot as u64 * NLB as u64;
        let io = if self.reading[slot] {
            BdevIo::read(lba, NLB, self.rbufs[slot].whole(), ctx)
        } else {
            let data: Vec<u8> = (0..self.wbufs[slot].len())
                .map(|i| pattern(slot, seq, i))
                .collect();
            self.wbufs[slot].write_at(0, &data).unwrap();
            BdevIo::write(lba, NLB, self.wbufs[slot].whole(), ctx)
        };
        if let Err((e, _)) = self.ch.submit(io) {
            panic!("submit refused: {e}");
        }
        self.out[slot] = ctx;
    }

    fn poll(&mut self, more: bool) -> usize {
        let mut got = Vec::with_capacity(QD);
        let n = self.ch.poll(&mut |c| got.push(c));
        for c in got {
            let slot = (c.ctx >> 32) as usize;
            if slot >= QD || self.out[slot] != c.ctx {
                self.duplicates += 1;
                continue;
            }
            self.out[slot] = u64::MAX;
            self.completed += 1;
            if !c.status.is_success() {
                self.errors += 1;
                eprintln!("slot {slot}: {}", c.status);
            } else if self.reading[slot] {
                let mut got = vec![0u8; self.rbufs[slot].len()];
                self.rbufs[slot].read_at(0, &mut got).unwrap();
                let seq = self.seq[slot];
                if got
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| b != pattern(slot, seq, i))
                {
                    self.mismatches += 1;
                }
            }
            if self.reading[slot] {
                self.seq[slot] += 1;
            }
            self.reading[slot] = !self.reading[slot];
            if more {
                self.issue(slot);
            }
        }
        n
    }

    /// Keeps traffic going until `cond` holds, or panics after `limit`.
    fn run_until(&mut self, what: &str, limit: Duration, mut cond: impl FnMut(&Self) -> bool) {
        for slot in 0..QD {
            if self.out[slot] == u64::MAX {
                self.issue(slot);
            }
        }
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < limit, "timed out waiting for {what}");
            if self.poll(true) == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
            for p in self.mp.paths() {
                self.names.entry(p.id).or_insert(p.name);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let t0 = Instant::now();
        self.run_until("nothing", d * 2, |_| t0.elapsed() >= d);
    }

    /// I/Os dispatched per controller name, summed over the path instances the
    /// channel has now.
    fn per_name(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        if let Channel::Mpath(c) = &self.ch {
            for s in c.path_stats() {
                let name = self
                    .names
                    .get(&s.id)
                    .cloned()
                    .unwrap_or(format!("id {}", s.id));
                *m.entry(name).or_insert(0) += s.submitted;
            }
        }
        m
    }

    fn usable(&self, name: &str) -> bool {
        self.mp
            .paths()
            .iter()
            .any(|p| p.name == name && p.state.usable())
    }

    /// Drains, and checks every I/O completed exactly once, intact, with no stray
    /// completion.
    fn finish(mut self) -> u64 {
        let t0 = Instant::now();
        while self.out.iter().any(|&o| o != u64::MAX) || self.ch.outstanding() > 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "drain timed out");
            self.poll(false);
        }
        assert_eq!(self.errors, 0, "errors");
        assert_eq!(self.mismatches, 0, "data mismatches");
        assert_eq!(self.duplicates, 0, "duplicate completions");
        if let Channel::Mpath(c) = &self.ch {
            let st = c.stats();
            assert_eq!(st.stray_completions, 0, "stray completions: {st:?}");
            assert_eq!(st.submitted, st.completed, "{st:?}");
        }
        self.completed
    }
}

/// A, with B appearing later at a new name; C (another subsystem) present from the
/// start but never asked for.
#[test]
fn a_controller_that_appears_joins_the_multipath_bdev_and_carries_io() {
    let ns = Arc::new(Namespace::new(1, 1 << 14, BS as u32).unwrap());
    let (a, b) = (soft("softA", 1, &ns), soft("softB", 2, &ns));
    let other = Arc::new(Namespace::new(1, 1 << 12, BS as u32).unwrap());
    let c = SoftController::start(SoftConfig {
        name: "softC".into(),
        subnqn: "nqn.2024-01.org.nvme-bdev:elsewhere".into(),
        namespaces: vec![other],
        ..SoftConfig::default()
    });
    let bus = Bus::default();
    bus.plug("softA", &a);
    bus.plug("softC", &c);
    let layer = layer(50, 5_000);
    let names = layer.attach("softA", bus.connector("softA")).unwrap();
    layer
        .enable_hotplug(Arc::new(bus.clone()), PERIOD_MS)
        .unwrap();
    assert!(layer.hotplug_enabled());
    let mut t = Traffic::new(&layer, &names[1]);
    t.run_for(Duration::from_millis(100));
    assert_eq!(t.mp.paths().len(), 1);

    bus.plug("softB", &b);
    t.run_until("softB to join the bdev", Duration::from_secs(5), |t| {
        t.usable("softB")
    });
    t.run_until("softB to carry I/O", Duration::from_secs(5), |t| {
        t.per_name().get("softB").copied().unwrap_or(0) > 100
    });
    let per = t.per_name();
    assert!(per["softA"] > 0, "{per:?}");
    let st = layer.hotplug_stats();
    assert_eq!(
        (st.appeared, st.attached, st.attach_failures),
        (1, 1, 0),
        "{st:?}"
    );
    assert!(st.scans >= 2, "{st:?}");
    // Present at enable time, never asked for: left alone.
    assert_eq!(layer.controller_names(), ["softA", "softB"]);
    let done = t.finish();
    eprintln!("appear: {done} I/Os verified, {per:?}, {st:?}");
    layer.shutdown();
    assert!(!layer.hotplug_enabled());
    for x in [a, b, c] {
        x.stop();
    }
}

/// B leaves for longer than the loss timeout (its path is removed), then comes back
/// as a new device at the same name: attached again, a path of the same bdev, named
/// as before, with a new path instance.
#[test]
fn a_controller_back_after_the_loss_timeout_is_attached_again_under_its_name() {
    let ns = Arc::new(Namespace::new(1, 1 << 14, BS as u32).unwrap());
    let (a, b) = (soft("softA", 1, &ns), soft("softB", 2, &ns));
    let bus = Bus::default();
    bus.plug("softA", &a);
    bus.plug("softB", &b);
    let layer = layer(50, 300);
    let names = layer.attach("softA", bus.connector("softA")).unwrap();
    layer.attach("softB", bus.connector("softB")).unwrap();
    layer
        .enable_hotplug(Arc::new(bus.clone()), PERIOD_MS)
        .unwrap();
    let mut t = Traffic::new(&layer, &names[1]);
    t.run_until("both paths to carry I/O", Duration::from_secs(5), |t| {
        let p = t.per_name();
        p.get("softA").copied().unwrap_or(0) > 50 && p.get("softB").copied().unwrap_or(0) > 50
    });
    let old_id = t.mp.paths().iter().find(|p| p.name == "softB").unwrap().id;

    bus.unplug("softB");
    t.run_until("softB's path to be removed", Duration::from_secs(5), |t| {
        !t.mp.paths().iter().any(|p| p.name == "softB")
    });
    // Traffic carries on over A alone for a while.
    t.run_for(Duration::from_millis(100));
    let b2 = soft("softB", 2, &ns);
    bus.plug("softB", &b2);
    t.run_until("softB to come back", Duration::from_secs(5), |t| {
        t.usable("softB")
    });
    let back =
        t.mp.paths()
            .into_iter()
            .find(|p| p.name == "softB")
            .unwrap();
    assert_ne!(
        back.id, old_id,
        "the returning controller is a new path instance"
    );
    let carried = |t: &Traffic| t.per_name().get("softB").copied().unwrap_or(0);
    t.run_until("softB to carry I/O again", Duration::from_secs(5), |t| {
        carried(t) > 100
    });
    let st = layer.hotplug_stats();
    assert_eq!(
        (st.appeared, st.reattached, st.attached),
        (1, 1, 0),
        "{st:?}"
    );
    assert_eq!(layer.controller_names(), ["softA", "softB"]);
    assert_eq!(
        layer.open("softBn1").map(|b| b.name().to_string()).unwrap(),
        "softBn1",
        "the namespace bdev comes back under its name"
    );
    let done = t.finish();
    eprintln!("re-attach: {done} I/Os verified, {st:?}");
    layer.shutdown();
    for x in [a, b, b2] {
        x.stop();
    }
}

/// B leaves and comes back while the layer still waits for it (loss timeout far away)
/// with a reconnect delay of a minute: the hot-plug scan brings the reconnect forward.
#[test]
fn a_lost_controller_that_reappears_reconnects_at_once() {
    let ns = Arc::new(Namespace::new(1, 1 << 14, BS as u32).unwrap());
    let (a, b) = (soft("softA", 1, &ns), soft("softB", 2, &ns));
    let bus = Bus::default();
    bus.plug("softA", &a);
    bus.plug("softB", &b);
    let layer = layer(60_000, -1);
    let names = layer.attach("softA", bus.connector("softA")).unwrap();
    layer.attach("softB", bus.connector("softB")).unwrap();
    layer
        .enable_hotplug(Arc::new(bus.clone()), PERIOD_MS)
        .unwrap();
    let mut t = Traffic::new(&layer, &names[1]);
    t.run_for(Duration::from_millis(100));
    bus.unplug("softB");
    t.run_until("softB's loss to be noticed", Duration::from_secs(5), |t| {
        !t.usable("softB")
    });
    t.run_for(Duration::from_millis(5 * PERIOD_MS));
    let b2 = soft("softB", 2, &ns);
    bus.plug("softB", &b2);
    let t0 = Instant::now();
    // The path is back a moment before the reconnect is counted.
    t.run_until("softB to reconnect", Duration::from_secs(10), |t| {
        t.usable("softB") && layer.controller_counts("softB").unwrap().1 == 1
    });
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "reconnected after {took:?}: the 60 s reconnect delay, not the hot-plug scan"
    );
    assert_eq!(layer.controller_counts("softB").unwrap().1, 1);
    let st = layer.hotplug_stats();
    assert_eq!((st.appeared, st.attached), (1, 0), "{st:?}");
    assert!(st.reconnects_prompted >= 1, "{st:?}");
    t.run_until("softB to carry I/O again", Duration::from_secs(5), |t| {
        t.mp.paths()
            .iter()
            .any(|p| p.name == "softB" && t.per_name().get("softB").copied().unwrap_or(0) > 0)
    });
    let done = t.finish();
    eprintln!("prompted reconnect after {took:?}: {done} I/Os verified, {st:?}");
    layer.shutdown();
    for x in [a, b, b2] {
        x.stop();
    }
}

/// Off unless enabled, off again once disabled; a period below the minimum is refused
/// with a message that says the minimum.
#[test]
fn hotplug_is_opt_in_and_checks_its_period() {
    let ns = Arc::new(Namespace::new(1, 1 << 12, BS as u32).unwrap());
    let (a, b) = (soft("softA", 1, &ns), soft("softB", 2, &ns));
    let bus = Bus::default();
    bus.plug("softA", &a);
    let layer = layer(50, 5_000);
    layer.attach("softA", bus.connector("softA")).unwrap();
    assert!(!layer.hotplug_enabled());
    let e = layer
        .enable_hotplug(Arc::new(bus.clone()), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("hot-plug period 1 ms: at least 10 ms"), "{e}");
    assert!(!layer.hotplug_enabled());
    layer
        .enable_hotplug(Arc::new(bus.clone()), PERIOD_MS)
        .unwrap();
    layer.disable_hotplug();
    bus.plug("softB", &b);
    std::thread::sleep(Duration::from_millis(10 * PERIOD_MS));
    assert_eq!(layer.controller_names(), ["softA"]);
    assert_eq!(layer.hotplug_stats().attached, 0);
    layer.shutdown();
    a.stop();
    b.stop();
}
