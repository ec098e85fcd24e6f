// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Block-layer behaviours no other test reaches, on software controllers: the
//! single-controller namespace bdev (`NsChannel`), `BlockLayer::detach`,
//! `ctrl_loss_timeout_ms` 0 (never reconnect) and -1 (reconnect for ever), two
//! controllers resetting at once, and surprise removal of the active path under
//! active-passive. Channels are polled from the test thread; every wait has a
//! deadline; outcomes are asserted on counts and states, not durations.

use nvme_bdev::layer::Connector;
use nvme_bdev::mpath::ChannelStats;
use nvme_bdev::NvmeQueue;
use nvme_bdev::{
    BdevCompletion, BdevIo, BlockLayer, Channel, Error, IoBuf, LayerOptions, MpathOptions,
    Multipath, Policy,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::QpairOptions;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:layer";
const QD: usize = 16;
const NLB: u32 = 8;
const BS: usize = 512;
const LIMIT: Duration = Duration::from_secs(10);

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        name: name.into(),
        subnqn: SUBNQN.into(),
        cntlid,
        mqes: 63,
        namespaces: vec![ns.clone()],
        ana: true,
        ..SoftConfig::default()
    })
}

fn layer(policy: Policy, fast_fail: u64, reconnect: u64, loss: i64) -> BlockLayer {
    BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy,
            fast_io_fail_timeout_ms: fast_fail,
            reconnect_delay_ms: reconnect,
            ctrl_loss_timeout_ms: loss,
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

/// A connector that hands out `current` unless `fail` is set; counts its calls.
#[derive(Clone)]
struct Plug {
    current: Arc<Mutex<Arc<SoftController>>>,
    fail: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl Plug {
    fn new(c: Arc<SoftController>) -> Self {
        Plug {
            current: Arc::new(Mutex::new(c)),
            fail: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }
    fn connector(&self) -> Connector {
        let p = self.clone();
        Arc::new(move || {
            p.calls.fetch_add(1, Ordering::Relaxed);
            if p.fail.load(Ordering::Acquire) {
                return Err(nvme_driver::Error::ControllerFailed {
                    device: "softA".into(),
                    reason: "test connector: not back yet".into(),
                });
            }
            let c: Arc<SoftController> = p.current.lock().unwrap().clone();
            Ok(c as Arc<dyn nvme_driver::bus::Bus>)
        })
    }
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Write-then-read-verify traffic; context word: slot, sequence number, read bit.
struct Traffic {
    wbufs: Vec<IoBuf>,
    rbufs: Vec<IoBuf>,
    out: Vec<u64>,
    seq: Vec<u64>,
    reading: Vec<bool>,
    completed: u64,
    errors: u64,
    mismatches: u64,
    duplicates: u64,
    /// Reads completed successfully.
    reads: u64,
}

fn pattern(slot: usize, seq: u64, i: usize) -> u8 {
    (slot * 5 + seq as usize * 17 + i * 3 + 2) as u8
}

impl Traffic {
    fn new(layer: &BlockLayer) -> Self {
        let len = NLB as usize * BS;
        Traffic {
            wbufs: (0..QD).map(|_| layer.alloc_buffer(len).unwrap()).collect(),
            rbufs: (0..QD).map(|_| layer.alloc_buffer(len).unwrap()).collect(),
            out: vec![u64::MAX; QD],
            seq: vec![0; QD],
            reading: vec![false; QD],
            completed: 0,
            errors: 0,
            mismatches: 0,
            duplicates: 0,
            reads: 0,
        }
    }

    fn issue(&mut self, ch: &mut Channel, slot: usize) {
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
        if let Err((e, _)) = ch.submit(io) {
            panic!("submit refused: {e}");
        }
        self.out[slot] = ctx;
    }

    fn on_done(&mut self, ch: &mut Channel, c: BdevCompletion, more: bool) {
        let slot = (c.ctx >> 32) as usize;
        if slot >= QD || self.out[slot] != c.ctx {
            self.duplicates += 1;
            return;
        }
        self.out[slot] = u64::MAX;
        self.completed += 1;
        if !c.status.is_success() {
            self.errors += 1;
            eprintln!("slot {slot}: {}", c.status);
        } else if self.reading[slot] {
            self.reads += 1;
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
            self.issue(ch, slot);
        }
    }

    fn poll(&mut self, ch: &mut Channel, more: bool) -> usize {
        let mut got = Vec::with_capacity(QD);
        let n = ch.poll(&mut |c| got.push(c));
        for c in got {
            self.on_done(ch, c, more);
        }
        n
    }

    fn start(&mut self, ch: &mut Channel) {
        for slot in 0..QD {
            if self.out[slot] == u64::MAX {
                self.issue(ch, slot);
            }
        }
    }

    /// Runs traffic until `n` more I/Os completed (bounded).
    fn run_ios(&mut self, ch: &mut Channel, n: u64) {
        let target = self.completed + n;
        self.start(ch);
        let t0 = Instant::now();
        while self.completed < target {
            assert!(
                t0.elapsed() < LIMIT,
                "{} of {n} I/Os done",
                n - (target - self.completed)
            );
            if self.poll(ch, true) == 0 {
                std::thread::yield_now();
            }
        }
    }

    /// Runs traffic until `cond` holds (bounded).
    fn run_until(&mut self, ch: &mut Channel, what: &str, mut cond: impl FnMut(&Channel) -> bool) {
        self.start(ch);
        let t0 = Instant::now();
        while !cond(ch) {
            assert!(t0.elapsed() < LIMIT, "timed out waiting for {what}");
            if self.poll(ch, true) == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Stops issuing and waits (bounded) for everything out.
    fn drain(&mut self, ch: &mut Channel) {
        let t0 = Instant::now();
        while self.out.iter().any(|&o| o != u64::MAX) || ch.outstanding() > 0 {
            assert!(t0.elapsed() < LIMIT, "drain: {} out", ch.outstanding());
            self.poll(ch, false);
        }
    }

    /// Every I/O completed once, successfully, with its data; nothing stray.
    fn assert_clean(&self, ch: &Channel) {
        assert_eq!(self.errors, 0, "errors");
        assert_eq!(self.mismatches, 0, "data mismatches");
        assert_eq!(self.duplicates, 0, "duplicate completions");
        assert!(self.out.iter().all(|&o| o == u64::MAX), "I/O left out");
        if let Channel::Mpath(c) = ch {
            let st = c.stats();
            assert_eq!(st.stray_completions, 0, "{st:?}");
            assert_eq!(st.completed, self.completed, "{st:?}");
        }
    }
}

fn mpstats(ch: &Channel) -> ChannelStats {
    match ch {
        Channel::Mpath(c) => c.stats(),
        Channel::Nvme(_) => panic!("not a multipath channel"),
    }
}

/// I/Os the channel dispatched per controller name (paths it still holds).
fn per_path(mp: &Multipath<NvmeQueue>, ch: &Channel) -> HashMap<String, u64> {
    let Channel::Mpath(c) = ch else {
        panic!("not a multipath channel")
    };
    let names: HashMap<u64, String> = mp.paths().into_iter().map(|p| (p.id, p.name)).collect();
    let mut m = HashMap::new();
    for s in c.path_stats() {
        if let Some(n) = names.get(&s.id) {
            *m.entry(n.clone()).or_insert(0) += s.submitted;
        }
    }
    m
}

fn usable(mp: &Multipath<NvmeQueue>, name: &str) -> bool {
    mp.paths()
        .iter()
        .any(|p| p.name == name && p.state.usable())
}

fn has_path(mp: &Multipath<NvmeQueue>, name: &str) -> bool {
    mp.paths().iter().any(|p| p.name == name)
}

/// Two controllers on one namespace; path A through `plug`.
fn two_paths(
    policy: Policy,
    fast_fail: u64,
    reconnect: u64,
    loss: i64,
) -> (
    BlockLayer,
    Plug,
    Arc<SoftController>,
    Arc<Multipath<NvmeQueue>>,
) {
    let ns = Arc::new(Namespace::new(1, 1 << 14, BS as u32).unwrap());
    let plug = Plug::new(soft("softA", 1, &ns));
    let b = soft("softB", 2, &ns);
    let layer = layer(policy, fast_fail, reconnect, loss);
    layer.attach("softA", plug.connector()).unwrap();
    let names = layer.attach_bus("softB", b.clone()).unwrap();
    let mp_name = names.iter().find(|n| n.starts_with("nqn.")).unwrap();
    let mp = layer.open(mp_name).unwrap().multipath().unwrap().clone();
    assert_eq!(mp.paths().len(), 2);
    (layer, plug, b, mp)
}

/// The namespace bdev `"<ctrl>n1"`: one controller, no failover, its channel the
/// queue pair itself. Data goes through it and comes back; a bad request is handed
/// back; every I/O completes once.
#[test]
fn namespace_bdev_channel_does_io() {
    let ns = Arc::new(Namespace::new(1, 1 << 14, BS as u32).unwrap());
    let a = soft("softA", 1, &ns);
    let layer = layer(Policy::ActivePassive, 100, 20, 1_000);
    let names = layer.attach_bus("softA", a.clone()).unwrap();
    assert!(names.contains(&"softAn1".to_string()), "{names:?}");
    let bdev = layer.open("softAn1").unwrap();
    assert!(bdev.multipath().is_none(), "softAn1 is a namespace bdev");
    assert_eq!(bdev.num_blocks(), 1 << 14);
    let mut ch = bdev.channel().unwrap();
    assert!(matches!(ch, Channel::Nvme(_)));
    assert!(ch.qid().is_some());
    let reads_before = a.counters().io_fetched(nvme_driver::spec::io_opc::READ);

    let mut t = Traffic::new(&layer);
    t.run_ios(&mut ch, 4 * QD as u64);
    t.drain(&mut ch);
    t.assert_clean(&ch);
    assert!(t.completed >= 4 * QD as u64);
    // The device executed every read, so the data came from it.
    let reads = a.counters().io_fetched(nvme_driver::spec::io_opc::READ) - reads_before;
    assert_eq!(reads, t.reads);
    assert!(t.reads >= QD as u64);
    assert_eq!(ch.outstanding(), 0);

    // Out of range: handed back with the I/O, nothing outstanding.
    let buf = layer.alloc_buffer(NLB as usize * BS).unwrap();
    let (e, io) = ch
        .submit(BdevIo::read(1 << 14, NLB, buf.whole(), 99))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidIo(_)), "{e}");
    assert_eq!(io.ctx, 99);
    assert_eq!(ch.outstanding(), 0);
    drop(ch);
    drop(bdev);
    layer.shutdown();
}

/// `detach` of one path under round-robin traffic: the path leaves the multipath
/// bdev (its I/O in flight completes first), its namespace bdev and controller are
/// gone, I/O carries on over B, exactly once.
#[test]
fn detach_removes_a_path_under_traffic() {
    let (layer, plug, b, mp) = two_paths(Policy::RoundRobin, 100, 20, 1_000);
    let mut ch = layer.open(&mp.info().name).unwrap().channel().unwrap();
    let mut t = Traffic::new(&layer);
    t.run_ios(&mut ch, 200);
    let p0 = per_path(&mp, &ch);
    assert!(p0["softA"] > 0 && p0["softB"] > 0, "{p0:?}");
    // Some I/O is surely in flight on A when it is detached: its device holds the
    // completions of its next commands (for ever, unless the controller fails).
    const HELD: u32 = 4;
    let a = plug.current.lock().unwrap().clone();
    a.faults().drop_io_completions(HELD);
    t.run_until(&mut ch, "A holding commands", |_| {
        a.counters().held_commands() >= HELD as u64
    });
    let before = mpstats(&ch);

    layer.detach("softA").unwrap();
    assert!(!has_path(&mp, "softA"), "{:?}", mp.paths());
    assert!(layer.controller_counts("softA").is_none());
    assert!(!layer.bdev_names().contains(&"softAn1".to_string()));
    assert!(layer.open("softAn1").is_err());
    assert!(layer.detach("softA").is_err(), "detached twice");
    // The channel lets go of A once its I/O there drained.
    t.run_until(&mut ch, "A retired from the channel", |ch| {
        let Channel::Mpath(c) = ch else {
            unreachable!()
        };
        c.path_stats().len() == 1
    });
    let b0 = per_path(&mp, &ch)["softB"];
    t.run_ios(&mut ch, 200);
    assert!(per_path(&mp, &ch)["softB"] >= b0 + 200);
    t.drain(&mut ch);
    t.assert_clean(&ch);
    let d = mpstats(&ch).since(&before);
    assert!(
        d.failovers >= HELD as u64,
        "held I/O not failed over: {d:?}"
    );
    drop(ch);
    layer.shutdown();
    drop(b);
}

/// `ctrl_loss_timeout_ms` 0: a lost controller is never reconnected; its path goes
/// at once and I/O carries on over B.
#[test]
fn ctrl_loss_timeout_zero_removes_at_once() {
    let (layer, plug, _b, mp) = two_paths(Policy::RoundRobin, 100, 0, 0);
    let mut ch = layer.open(&mp.info().name).unwrap().channel().unwrap();
    let mut t = Traffic::new(&layer);
    t.run_ios(&mut ch, 100);
    let calls0 = plug.calls();
    plug.current.lock().unwrap().faults().simulate_removal();
    t.run_until(&mut ch, "A removed", |_| !has_path(&mp, "softA"));
    assert_eq!(mp.paths().len(), 1);
    t.run_ios(&mut ch, 200);
    assert_eq!(plug.calls(), calls0, "a reconnect was attempted");
    assert_eq!(layer.controller_counts("softA").unwrap().1, 0);
    t.drain(&mut ch);
    t.assert_clean(&ch);
    assert!(
        mpstats(&ch).failovers > 0 || per_path(&mp, &ch)["softB"] > 0,
        "B carried the I/O"
    );
    drop(ch);
    layer.shutdown();
}

/// `ctrl_loss_timeout_ms` -1: a lost controller is retried for ever and its path
/// stays (unusable) however many attempts fail; when the connector works again, it
/// reconnects and is used.
#[test]
fn ctrl_loss_timeout_forever_keeps_the_path() {
    let (layer, plug, _b, mp) = two_paths(Policy::RoundRobin, 20, 5, -1);
    let mut ch = layer.open(&mp.info().name).unwrap().channel().unwrap();
    let mut t = Traffic::new(&layer);
    t.run_ios(&mut ch, 100);
    plug.fail.store(true, Ordering::Release);
    let calls0 = plug.calls();
    let old = plug.current.lock().unwrap().clone();
    old.faults().simulate_removal();
    // Many failed attempts (each at least `reconnect_delay_ms` apart): the path is
    // still there, unusable.
    t.run_until(&mut ch, "ten failed attempts", |_| {
        plug.calls() - calls0 >= 10
    });
    assert!(has_path(&mp, "softA"), "path removed: {:?}", mp.paths());
    assert!(!usable(&mp, "softA"));
    assert_eq!(layer.controller_counts("softA").unwrap().1, 0);
    // Back: a fresh controller on the same namespace.
    let ns = old.namespaces()[0].clone();
    *plug.current.lock().unwrap() = soft("softA", 1, &ns);
    plug.fail.store(false, Ordering::Release);
    // The path is published inside the reconnect, the count follows it.
    t.run_until(&mut ch, "A reconnected", |_| {
        usable(&mp, "softA") && layer.controller_counts("softA").unwrap().1 == 1
    });
    t.run_until(&mut ch, "A used again", |ch| {
        per_path(&mp, ch).get("softA").copied().unwrap_or(0) > 0
    });
    t.drain(&mut ch);
    t.assert_clean(&ch);
    drop(ch);
    layer.shutdown();
}

/// Both controllers reset at once under traffic: for a while no path is usable and
/// I/O waits on the retry ring (submit does not); both resets finish, I/O in flight
/// failed over and completed once, with its data.
#[test]
fn two_controllers_reset_at_once() {
    for policy in [Policy::ActivePassive, Policy::RoundRobin] {
        let (layer, _plug, _b, mp) = two_paths(policy, 5_000, 20, 10_000);
        let mut ch = layer.open(&mp.info().name).unwrap().channel().unwrap();
        let mut t = Traffic::new(&layer);
        t.run_ios(&mut ch, 100);
        let before = mpstats(&ch);
        let (ra, rb) = (
            layer.controller_counts("softA").unwrap().0,
            layer.controller_counts("softB").unwrap().0,
        );
        for _ in 0..5 {
            let (a0, b0) = (
                layer.controller_counts("softA").unwrap().0,
                layer.controller_counts("softB").unwrap().0,
            );
            layer.request_reset("softA").unwrap();
            layer.request_reset("softB").unwrap();
            t.run_until(&mut ch, "both resets done", |_| {
                layer.controller_counts("softA").unwrap().0 > a0
                    && layer.controller_counts("softB").unwrap().0 > b0
            });
            t.run_ios(&mut ch, 50);
        }
        assert_eq!(layer.controller_counts("softA").unwrap().0, ra + 5);
        assert_eq!(layer.controller_counts("softB").unwrap().0, rb + 5);
        t.drain(&mut ch);
        t.assert_clean(&ch);
        let d = mpstats(&ch).since(&before);
        assert!(d.queued > 0, "{policy:?}: nothing waited: {d:?}");
        assert_eq!(d.fast_failed, 0, "{d:?}");
        eprintln!("{policy:?}: two resets at once x5: {d:?}");
        drop(ch);
        layer.shutdown();
    }
}

/// Surprise removal of the active path under active-passive: I/O in flight on it
/// (held by the device, so some is) fails over to B, I/O continues on B, each I/O
/// completes once with its data.
#[test]
fn unplug_of_the_active_path_fails_over() {
    const HELD: u32 = 4;
    let (layer, plug, _b, mp) = two_paths(Policy::ActivePassive, 200, 20, 200);
    let mut ch = layer.open(&mp.info().name).unwrap().channel().unwrap();
    let mut t = Traffic::new(&layer);
    t.run_ios(&mut ch, 200);
    let p0 = per_path(&mp, &ch);
    assert!(p0["softA"] > 0, "{p0:?}");
    assert_eq!(
        p0.get("softB").copied().unwrap_or(0),
        0,
        "A is the active path"
    );
    plug.fail.store(true, Ordering::Release);
    let a = plug.current.lock().unwrap().clone();
    a.faults().drop_io_completions(HELD);
    t.run_until(&mut ch, "A holding commands", |_| {
        a.counters().held_commands() >= HELD as u64
    });
    let before = mpstats(&ch);
    a.faults().simulate_removal();
    t.run_until(&mut ch, "A unusable", |_| !usable(&mp, "softA"));
    let b0 = per_path(&mp, &ch).get("softB").copied().unwrap_or(0);
    t.run_ios(&mut ch, 300);
    assert!(
        per_path(&mp, &ch)["softB"] >= b0 + 300,
        "I/O continued on B"
    );
    t.drain(&mut ch);
    t.assert_clean(&ch);
    let d = mpstats(&ch).since(&before);
    assert!(
        d.failovers >= HELD as u64,
        "held I/O did not fail over: {d:?}"
    );
    let fa: u64 = mp
        .paths()
        .iter()
        .filter(|p| p.name == "softA")
        .map(|p| p.failovers)
        .sum();
    // A may already be gone (loss timeout 200 ms); if not, it counted them.
    assert!(fa == 0 && !has_path(&mp, "softA") || fa >= HELD as u64);
    eprintln!("unplug active: {d:?}");
    drop(ch);
    layer.shutdown();
}

/// The reader-slot limit is `LayerOptions::readers`, up to 4096: with 3 slots the
/// fourth multipath channel is refused by an error that names the option and its
/// bound, a closed channel gives its slot back, and an out-of-range value is refused
/// when the layer is made.
#[test]
fn reader_slots_are_a_layer_option_named_when_used_up() {
    let ns = Arc::new(Namespace::new(1, 1 << 12, BS as u32).unwrap());
    let layer = BlockLayer::new(LayerOptions {
        readers: 3,
        qpair: QpairOptions {
            entries: 16,
            ..QpairOptions::default()
        },
        ..LayerOptions::default()
    })
    .unwrap();
    let names = layer.attach_bus("softA", soft("softA", 1, &ns)).unwrap();
    let mp = layer.open(&names[1]).unwrap();
    let mut open: Vec<Channel> = (0..3).map(|_| mp.channel().unwrap()).collect();
    let e = mp.channel().unwrap_err().to_string();
    assert!(
        e.contains("all 3 QSBR reader slots") && e.contains("LayerOptions::readers"),
        "{e}"
    );
    assert!(e.contains("4096"), "{e}");
    open.pop();
    open.push(mp.channel().expect("a closed channel's slot is free again"));
    drop(open);
    for bad in [0, nvme_bdev::qsbr::MAX_READERS + 1] {
        let e = BlockLayer::new(LayerOptions {
            readers: bad,
            ..LayerOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("LayerOptions::readers") && e.contains("4096"),
            "{e}"
        );
    }
    // The bound itself is accepted.
    BlockLayer::new(LayerOptions {
        readers: nvme_bdev::qsbr::MAX_READERS,
        ..LayerOptions::default()
    })
    .unwrap();
}
