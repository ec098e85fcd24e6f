// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Path loss and recovery through the real block layer on software controllers:
//! reconnect every `reconnect_delay_ms` until `ctrl_loss_timeout_ms`, path removal at
//! the loss timeout, I/O waiting for a path (fast I/O fail, and success when a path
//! returns first), and ANA states (inaccessible, optimized again, change with the
//! transition-time hold). The channel is polled from the test thread; every wait has
//! a deadline.

use nvme_bdev::layer::Connector;
use nvme_bdev::NvmeQueue;
use nvme_bdev::{
    BdevCompletion, BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MpathOptions, Multipath,
    Policy,
};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::AnaState;
use nvme_driver::QpairOptions;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:recovery";
const QD: usize = 16;
const NLB: u32 = 8;
const BS: usize = 512;

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>, anatt_s: u8) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        name: name.into(),
        subnqn: SUBNQN.into(),
        cntlid,
        mqes: 63,
        namespaces: vec![ns.clone()],
        ana: true,
        anatt_s,
        ..SoftConfig::default()
    })
}

/// Path A's connector: hands out whatever controller `current` holds, or fails while
/// `fail` is set; counts its calls.
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
}

struct Rig {
    ns: Arc<Namespace>,
    plug: Plug,
    b: Arc<SoftController>,
    layer: BlockLayer,
    mp: Arc<Multipath<NvmeQueue>>,
    ch: Channel,
}

fn rig(policy: Policy, fast_fail: u64, reconnect: u64, loss: i64) -> Rig {
    rig_anatt(policy, fast_fail, reconnect, loss, 10)
}

/// `rig` with controllers that report an ANA transition time of `anatt_s` seconds.
fn rig_anatt(policy: Policy, fast_fail: u64, reconnect: u64, loss: i64, anatt_s: u8) -> Rig {
    let ns = Arc::new(Namespace::new(1, 1 << 14, BS as u32).unwrap());
    let a = soft("softA", 1, &ns, anatt_s);
    let b = soft("softB", 2, &ns, anatt_s);
    let plug = Plug::new(a);
    let layer = BlockLayer::new(LayerOptions {
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
    .unwrap();
    layer.attach("softA", plug.connector()).unwrap();
    let names = layer.attach_bus("softB", b.clone()).unwrap();
    let mp_name = names.iter().find(|n| n.starts_with("nqn.")).unwrap();
    let bdev = layer.open(mp_name).unwrap();
    let mp = bdev.multipath().unwrap().clone();
    assert_eq!(mp.paths().len(), 2);
    let ch = bdev.channel().unwrap();
    Rig {
        ns,
        plug,
        b,
        layer,
        mp,
        ch,
    }
}

impl Rig {
    fn mpch(&self) -> &nvme_bdev::MpathChannel<NvmeQueue> {
        match &self.ch {
            Channel::Mpath(c) => c,
            Channel::Nvme(_) => unreachable!(),
        }
    }
    /// I/Os dispatched per controller name, on the paths the channel has now.
    fn per_path(&self) -> HashMap<String, u64> {
        let names: HashMap<u64, String> = self
            .mp
            .paths()
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        let mut m = HashMap::new();
        for s in self.mpch().path_stats() {
            if let Some(n) = names.get(&s.id) {
                *m.entry(n.clone()).or_insert(0) += s.submitted;
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
    /// Polls the channel (delivering nothing: used only when no I/O is out) until
    /// `cond` holds, or panics at the deadline.
    fn wait_for(&mut self, what: &str, limit: Duration, mut cond: impl FnMut(&Rig) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < limit, "timed out waiting for {what}");
            self.ch.poll(&mut |c| panic!("unexpected completion {c:?}"));
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Write-then-read-verify traffic: each slot owns its block range.
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
    longest_submit: Duration,
}

fn pattern(slot: usize, seq: u64, i: usize) -> u8 {
    (slot * 7 + seq as usize * 13 + i * 3 + 1) as u8
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
            longest_submit: Duration::ZERO,
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
        let t0 = Instant::now();
        let r = ch.submit(io);
        self.longest_submit = self.longest_submit.max(t0.elapsed());
        if let Err((e, _)) = r {
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

    /// Starts every idle slot.
    fn start(&mut self, ch: &mut Channel) {
        for slot in 0..QD {
            if self.out[slot] == u64::MAX {
                self.issue(ch, slot);
            }
        }
    }

    /// Runs traffic for `d`; returns the I/Os completed meanwhile.
    fn run_for(&mut self, ch: &mut Channel, d: Duration) -> u64 {
        let before = self.completed;
        self.start(ch);
        let t0 = Instant::now();
        while t0.elapsed() < d {
            if self.poll(ch, true) == 0 {
                std::thread::yield_now();
            }
        }
        self.completed - before
    }

    /// Stops issuing and waits (bounded) for everything out to complete.
    fn drain(&mut self, ch: &mut Channel, limit: Duration) {
        let t0 = Instant::now();
        while self.out.iter().any(|&o| o != u64::MAX) || ch.outstanding() > 0 {
            assert!(
                t0.elapsed() < limit,
                "drain timed out: {} out",
                ch.outstanding()
            );
            self.poll(ch, false);
        }
    }

    fn assert_clean(&self) {
        assert_eq!(self.errors, 0, "errors");
        assert_eq!(self.mismatches, 0, "data mismatches");
        assert_eq!(self.duplicates, 0, "duplicate completions");
        assert!(self.out.iter().all(|&o| o == u64::MAX), "I/O left out");
        // Only a loose bound, below the driver's 2 s limit for a queue pair's owner to
        // acknowledge a reset (how long a submit that waited for a reset it must
        // acknowledge would be stuck); that submit never waits is shown without a
        // clock by deadlock.rs's `submit_returns_while_a_reset_is_frozen`.
        assert!(
            self.longest_submit < Duration::from_secs(1),
            "a submit call took {:?}",
            self.longest_submit
        );
    }
}

/// Completions the channel dropped because they matched no I/O in flight (a queue
/// delivering one twice): zero, or "exactly once" only held by luck.
fn assert_no_stray(ch: &Channel) {
    if let Channel::Mpath(c) = ch {
        let st = c.stats();
        assert_eq!(st.stray_completions, 0, "stray completions: {st:?}");
    }
}

fn finish(r: Rig, t: &mut Traffic) {
    let mut ch = r.ch;
    t.drain(&mut ch, Duration::from_secs(2));
    assert_no_stray(&ch);
    drop(ch);
    drop(r.mp);
    r.layer.shutdown();
    drop(r.b);
    drop(r.ns);
}

/// Case 1: path A's controller is lost; the connector fails for a while (attempts every
/// `reconnect_delay_ms`), I/O carries on over B, then a fresh controller is handed
/// out, A reconnects and is used again.
#[test]
fn lost_controller_reconnects_and_is_used_again() {
    let t_start = Instant::now();
    let mut r = rig(Policy::RoundRobin, 100, 20, 2_000);
    let mut t = Traffic::new(&r.layer);
    t.run_for(&mut r.ch, Duration::from_millis(50));
    let before = r.per_path();
    assert!(before["softA"] > 0 && before["softB"] > 0, "{before:?}");

    r.plug.fail.store(true, Ordering::Release);
    let calls0 = r.plug.calls.load(Ordering::Relaxed);
    let old_a = r.plug.current.lock().unwrap().clone();
    old_a.faults().simulate_removal();
    // Keep traffic running while A is down.
    let t0 = Instant::now();
    let mut done_while_down = 0;
    while r.usable("softA") {
        assert!(t0.elapsed() < Duration::from_secs(1), "loss not noticed");
        done_while_down += t.run_for(&mut r.ch, Duration::from_millis(5));
    }
    let b_before = r.per_path().get("softB").copied().unwrap_or(0);
    done_while_down += t.run_for(&mut r.ch, Duration::from_millis(150));
    let b_after = r.per_path().get("softB").copied().unwrap_or(0);
    assert!(done_while_down > 0, "no I/O completed while A was down");
    assert!(b_after > b_before, "B carried no I/O while A was down");
    // The connector is tried again and again while it fails (how often depends on
    // the clock: at least twice is what the loop guarantees).
    let t0 = Instant::now();
    while r.plug.calls.load(Ordering::Relaxed) - calls0 < 2 {
        assert!(t0.elapsed() < Duration::from_secs(2), "no second attempt");
        t.run_for(&mut r.ch, Duration::from_millis(5));
    }
    let attempts = r.plug.calls.load(Ordering::Relaxed) - calls0;
    assert_eq!(r.layer.controller_counts("softA").unwrap().1, 0);
    assert!(!r.usable("softA"));

    // A comes back: a fresh controller on the same namespace.
    *r.plug.current.lock().unwrap() = soft("softA", 1, &r.ns, 10);
    r.plug.fail.store(false, Ordering::Release);
    let t0 = Instant::now();
    while !(r.usable("softA") && r.layer.controller_counts("softA").unwrap().1 == 1) {
        assert!(t0.elapsed() < Duration::from_secs(1), "A did not reconnect");
        t.run_for(&mut r.ch, Duration::from_millis(5));
    }
    assert_eq!(r.mp.paths().len(), 2, "{:?}", r.mp.paths());
    t.run_for(&mut r.ch, Duration::from_millis(100));
    let after = r.per_path();
    assert!(
        after.get("softA").copied().unwrap_or(0) > 0,
        "A unused after reconnect: {after:?}"
    );
    assert!(after.get("softB").copied().unwrap_or(0) > b_after);
    // Reconnected once, and the connector is no longer called.
    assert_eq!(r.layer.controller_counts("softA").unwrap().1, 1);
    let calls = r.plug.calls.load(Ordering::Relaxed);
    t.run_for(&mut r.ch, Duration::from_millis(50));
    assert_eq!(
        r.plug.calls.load(Ordering::Relaxed),
        calls,
        "attempts after reconnect"
    );
    t.drain(&mut r.ch, Duration::from_secs(2));
    t.assert_clean();
    eprintln!(
        "reconnect: {} I/Os, {attempts} attempts while down, {:?}",
        t.completed,
        t_start.elapsed()
    );
    finish(r, &mut t);
}

/// Case 2: the connector keeps failing: at `ctrl_loss_timeout_ms` the path is removed; I/O
/// still completes on B.
#[test]
fn ctrl_loss_timeout_removes_the_path() {
    let t_start = Instant::now();
    let loss = Duration::from_millis(200);
    let mut r = rig(Policy::RoundRobin, 50, 20, loss.as_millis() as i64);
    let mut t = Traffic::new(&r.layer);
    t.run_for(&mut r.ch, Duration::from_millis(30));
    r.plug.fail.store(true, Ordering::Release);
    let calls0 = r.plug.calls.load(Ordering::Relaxed);
    r.plug.current.lock().unwrap().faults().simulate_removal();
    let lost = Instant::now();
    let mut removed_after = None;
    while lost.elapsed() < Duration::from_millis(1_500) {
        t.run_for(&mut r.ch, Duration::from_millis(5));
        if removed_after.is_none() && r.mp.paths().iter().all(|p| p.name != "softA") {
            removed_after = Some(lost.elapsed());
            break;
        }
    }
    let removed_after = removed_after.expect("path A not removed after the loss timeout");
    assert!(
        removed_after >= loss - Duration::from_millis(10),
        "removed after {removed_after:?}, before the {loss:?} loss timeout"
    );
    let paths = r.mp.paths();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert_eq!(paths[0].name, "softB");
    let attempts = r.plug.calls.load(Ordering::Relaxed) - calls0;
    // Removal is not the first failed attempt: the connector was tried again.
    assert!(attempts >= 2, "{attempts} attempts before the removal");
    // No more attempts once the path is gone.
    std::thread::sleep(Duration::from_millis(60));
    let later = r.plug.calls.load(Ordering::Relaxed) - calls0;
    assert_eq!(
        later, attempts,
        "reconnect attempts after the path was removed"
    );
    let n = t.run_for(&mut r.ch, Duration::from_millis(50));
    assert!(n > 0, "no I/O on B after the removal");
    assert!(r.per_path()["softB"] > 0);
    t.drain(&mut r.ch, Duration::from_secs(2));
    t.assert_clean();
    eprintln!(
        "loss timeout: removed after {removed_after:?}, {attempts} attempts, {:?}",
        t_start.elapsed()
    );
    finish(r, &mut t);
}

fn make_unusable(r: &mut Rig, a: AnaState, b: AnaState) {
    let ctrl_a = r.plug.current.lock().unwrap().clone();
    ctrl_a.set_ana_state(1, a).unwrap();
    r.b.set_ana_state(1, b).unwrap();
    r.wait_for("both paths unusable", Duration::from_secs(1), |r| {
        !r.usable("softA") && !r.usable("softB")
    });
    // The channel takes the new path set in at its next poll: after this one, a
    // submit finds no usable path (and does not go to a path by its older view).
    r.ch.poll(&mut |c| panic!("unexpected completion {c:?}"));
}

/// Submits one 4 KiB read of block 0 (context 77).
fn submit_one(r: &mut Rig, buf: &IoBuf) {
    r.ch.submit(BdevIo::read(0, NLB, buf.whole(), 77))
        .map_err(|(e, _)| e)
        .expect("submit never refuses for lack of a path");
}

/// The one I/O submitted with no usable path returned from submit and waits on the
/// retry ring (counted, not timed).
fn assert_queued(r: &Rig) {
    let st = r.mpch().stats();
    assert_eq!((st.submitted, st.queued), (st.completed + 1, 1), "{st:?}");
    assert_eq!(r.ch.outstanding(), 1);
}

/// Polls until the one I/O completes (or `limit`).
fn wait_one(r: &mut Rig, limit: Duration) -> Option<BdevCompletion> {
    let t0 = Instant::now();
    let mut got = None;
    while got.is_none() && t0.elapsed() < limit {
        r.ch.poll(&mut |c| {
            assert!(got.is_none(), "two completions");
            got = Some(c)
        });
        std::thread::sleep(Duration::from_micros(100));
    }
    got
}

/// Case 3a: no usable path: the I/O waits (submit does not), then fails with a path error
/// at `fast_io_fail_timeout_ms`.
#[test]
fn no_path_fails_after_fast_io_fail_timeout() {
    let t_start = Instant::now();
    let ff = Duration::from_millis(100);
    let mut r = rig(Policy::ActivePassive, ff.as_millis() as u64, 20, 1_000);
    make_unusable(&mut r, AnaState::Inaccessible, AnaState::Inaccessible);
    let buf = r.layer.alloc_buffer(NLB as usize * BS).unwrap();
    let t0 = Instant::now();
    submit_one(&mut r, &buf);
    assert_queued(&r);
    let early = wait_one(&mut r, ff - Duration::from_millis(30));
    assert!(early.is_none(), "completed before fast fail: {early:?}");
    let c = wait_one(&mut r, Duration::from_secs(1)).expect("never failed");
    let waited = t0.elapsed();
    assert_eq!(c.ctx, 77);
    assert!(!c.status.is_success(), "{}", c.status);
    assert!(c.status.is_path_error(), "not a path error: {}", c.status);
    // Not before the timeout (a lower bound is safe on a slow machine); how soon
    // after is the clock's business: it failed once, as fast-failed.
    assert!(waited >= ff, "failed after {waited:?}");
    assert_eq!(r.ch.outstanding(), 0);
    assert_eq!(r.mpch().stats().fast_failed, 1);
    eprintln!(
        "fast fail after {waited:?} ({}), {:?}",
        c.status,
        t_start.elapsed()
    );
    assert_no_stray(&r.ch);
    drop(r.ch);
    r.layer.shutdown();
}

/// Case 3b: no usable path, and one returns before the fast-fail timeout: the waiting
/// I/O succeeds.
#[test]
fn waiting_io_succeeds_when_a_path_returns() {
    let t_start = Instant::now();
    let mut r = rig(Policy::ActivePassive, 400, 20, 1_000);
    // Known data at block 0, written while paths are fine.
    let mut wbuf = r.layer.alloc_buffer(NLB as usize * BS).unwrap();
    let data: Vec<u8> = (0..wbuf.len()).map(|i| (i * 5 + 3) as u8).collect();
    wbuf.write_at(0, &data).unwrap();
    r.ch.submit(BdevIo::write(0, NLB, wbuf.whole(), 1))
        .map_err(|(e, _)| e)
        .unwrap();
    let c = wait_one(&mut r, Duration::from_secs(1)).expect("write");
    assert!(c.status.is_success(), "{}", c.status);

    make_unusable(&mut r, AnaState::Inaccessible, AnaState::Inaccessible);
    let buf = r.layer.alloc_buffer(NLB as usize * BS).unwrap();
    let t0 = Instant::now();
    submit_one(&mut r, &buf);
    assert_queued(&r);
    assert!(wait_one(&mut r, Duration::from_millis(60)).is_none());
    r.b.set_ana_state(1, AnaState::Optimized).unwrap();
    let c = wait_one(&mut r, Duration::from_secs(1)).expect("never completed");
    let waited = t0.elapsed();
    assert_eq!(c.ctx, 77);
    // Success, not fast-failed: the path came back before the timeout.
    assert!(c.status.is_success(), "{} after {waited:?}", c.status);
    let mut got = vec![0u8; buf.len()];
    buf.read_at(0, &mut got).unwrap();
    assert_eq!(got, data);
    assert_eq!(r.mpch().stats().fast_failed, 0);
    assert!(wait_one(&mut r, Duration::from_millis(20)).is_none());
    eprintln!("path back after {waited:?}, {:?}", t_start.elapsed());
    assert_no_stray(&r.ch);
    drop(r.ch);
    r.layer.shutdown();
}

/// Case 4a, ANA: B inaccessible -> only A is used; B optimized again -> round robin uses
/// both again.
#[test]
fn ana_inaccessible_path_is_skipped_and_reused() {
    let t_start = Instant::now();
    let mut r = rig(Policy::RoundRobin, 100, 20, 1_000);
    let mut t = Traffic::new(&r.layer);
    t.run_for(&mut r.ch, Duration::from_millis(30));
    let p0 = r.per_path();
    assert!(p0["softA"] > 0 && p0["softB"] > 0, "{p0:?}");

    r.b.set_ana_state(1, AnaState::Inaccessible).unwrap();
    let t0 = Instant::now();
    while r.usable("softB") {
        assert!(t0.elapsed() < Duration::from_secs(1), "B stays usable");
        t.run_for(&mut r.ch, Duration::from_millis(2));
    }
    // One more turn so the channel sees the new set.
    t.run_for(&mut r.ch, Duration::from_millis(2));
    let p1 = r.per_path();
    let n = t.run_for(&mut r.ch, Duration::from_millis(80));
    let p2 = r.per_path();
    assert!(n > 0);
    assert_eq!(p2["softB"], p1["softB"], "I/O went to inaccessible B");
    assert!(p2["softA"] > p1["softA"]);

    r.b.set_ana_state(1, AnaState::Optimized).unwrap();
    let t0 = Instant::now();
    while !r.usable("softB") {
        assert!(t0.elapsed() < Duration::from_secs(1), "B stays unusable");
        t.run_for(&mut r.ch, Duration::from_millis(2));
    }
    t.run_for(&mut r.ch, Duration::from_millis(2));
    let p3 = r.per_path();
    t.run_for(&mut r.ch, Duration::from_millis(80));
    let p4 = r.per_path();
    let (da, db) = (p4["softA"] - p3["softA"], p4["softB"] - p3["softB"]);
    assert!(da > 0 && db > 0, "A {da}, B {db}");
    // Round robin: about even.
    assert!(
        da.max(db) <= 2 * da.min(db) + QD as u64,
        "uneven round robin: A {da}, B {db}"
    );
    t.drain(&mut r.ch, Duration::from_secs(2));
    t.assert_clean();
    eprintln!("ana: {} I/Os, {:?}", t.completed, t_start.elapsed());
    finish(r, &mut t);
}

/// Case 4b, ANA change: A inaccessible, B in change (transition). Channel docs: I/O
/// waiting for a path fails after `fast_io_fail_timeout_ms`, but not before the ANA
/// transition time when a path is transitioning (the controllers report ANATT 10 s
/// here). So I/O outlives the fast-fail timeout, and succeeds once B is optimized.
#[test]
fn ana_change_holds_io_past_fast_fail() {
    let t_start = Instant::now();
    let ff = Duration::from_millis(50);
    let mut r = rig(Policy::ActivePassive, ff.as_millis() as u64, 20, 1_000);
    make_unusable(&mut r, AnaState::Inaccessible, AnaState::Change);
    assert!(r
        .mp
        .paths()
        .iter()
        .any(|p| p.name == "softB" && p.state.ana == AnaState::Change));
    let buf = r.layer.alloc_buffer(NLB as usize * BS).unwrap();
    let t0 = Instant::now();
    submit_one(&mut r, &buf);
    assert_queued(&r);
    let early = wait_one(&mut r, ff * 5);
    assert!(
        early.is_none(),
        "failed during the ANA transition time: {early:?}"
    );
    r.b.set_ana_state(1, AnaState::Optimized).unwrap();
    let c = wait_one(&mut r, Duration::from_secs(1)).expect("never completed");
    let waited = t0.elapsed();
    assert!(c.status.is_success(), "{} after {waited:?}", c.status);
    assert!(waited > ff * 5);
    assert_eq!(r.mpch().stats().fast_failed, 0);
    eprintln!(
        "ana change hold: done after {waited:?}, {:?}",
        t_start.elapsed()
    );
    assert_no_stray(&r.ch);
    drop(r.ch);
    r.layer.shutdown();
}

/// Case 4c, the hold's end: as 4b, but B stays in change. The I/O is held for the
/// transition time the controllers report (ANATT 1 s here), not for ever: then it
/// fails, once, as fast-failed.
#[test]
fn ana_change_hold_ends_at_the_transition_time() {
    let t_start = Instant::now();
    let ff = Duration::from_millis(50);
    let anatt = Duration::from_secs(1);
    let mut r = rig_anatt(
        Policy::ActivePassive,
        ff.as_millis() as u64,
        20,
        1_000,
        anatt.as_secs() as u8,
    );
    make_unusable(&mut r, AnaState::Inaccessible, AnaState::Change);
    let buf = r.layer.alloc_buffer(NLB as usize * BS).unwrap();
    let t0 = Instant::now();
    submit_one(&mut r, &buf);
    assert_queued(&r);
    // B entered change just before `t0`, so the hold ends a little less than ANATT
    // after it: nothing may complete in the first 70% of it (14 fast-fail periods).
    let early = wait_one(&mut r, anatt * 7 / 10);
    assert!(
        early.is_none(),
        "failed during the ANA transition time: {early:?}"
    );
    let c = wait_one(&mut r, anatt).expect("still held long after the transition time");
    let waited = t0.elapsed();
    assert!(
        !c.status.is_success(),
        "completed with success after {waited:?}"
    );
    assert_eq!(r.mpch().stats().fast_failed, 1);
    // Exactly once: nothing else arrives.
    assert!(wait_one(&mut r, Duration::from_millis(50)).is_none());
    eprintln!(
        "ana change hold end: failed after {waited:?} ({}), {:?}",
        c.status,
        t_start.elapsed()
    );
    assert_no_stray(&r.ch);
    drop(r.ch);
    r.layer.shutdown();
}

/// A reset of a path with nothing in flight is acknowledged at the channel's next
/// poll, however seldom it polls. Ordinary polls look only at the queue pairs the
/// channel gave I/O; the controller moves the QSBR epoch when it resets (the layer
/// sets its queue-state notifier), which makes the next poll a full one. Polled every
/// 5 ms, the channel would otherwise take 1024 polls (5 s) to look, past the driver's
/// 2 s acknowledgement limit, and lose the path's queue pair on this core.
#[test]
fn idle_path_reset_is_acknowledged_by_a_slow_poller() {
    let mut r = rig(Policy::ActivePassive, 1_000, 20, 5_000);
    let buf = r.layer.alloc_buffer(NLB as usize * BS).unwrap();
    submit_one(&mut r, &buf);
    let c = wait_one(&mut r, Duration::from_secs(2)).expect("first read never completed");
    assert!(c.status.is_success(), "{c:?}");
    assert_eq!(
        r.per_path()["softB"],
        0,
        "active-passive used B: it is not idle"
    );

    let (resets_before, _) = r.layer.controller_counts("softB").unwrap();
    r.layer.request_reset("softB").unwrap();
    let t0 = Instant::now();
    // Take in the publication that takes B out (the controller thread makes it just
    // before it starts the reset) at once, so the slow polls below are all that
    // follow the reset's start.
    while r.usable("softB") {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "B never left the path set"
        );
        r.ch.poll(&mut |c| panic!("unexpected completion {c:?}"));
    }
    r.ch.poll(&mut |c| panic!("unexpected completion {c:?}"));
    while r.layer.reset_pending("softB")
        || r.layer.controller_counts("softB").unwrap().0 == resets_before
        || !r.usable("softB")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "reset of B never finished"
        );
        r.ch.poll(&mut |c| panic!("unexpected completion {c:?}"));
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed();
    // No bound on `took`: had the idle queue pair not acknowledged, the driver would
    // have failed it after its 2 s limit, and the read over B below could not
    // succeed (a failed queue pair refuses it, and it would fast-fail).

    // B's queue pair on this core came through the reset: with A unusable, a read
    // goes to B and succeeds.
    let ctrl_a = r.plug.current.lock().unwrap().clone();
    ctrl_a.set_ana_state(1, AnaState::Inaccessible).unwrap();
    r.wait_for("A unusable", Duration::from_secs(1), |r| !r.usable("softA"));
    submit_one(&mut r, &buf);
    let c = wait_one(&mut r, Duration::from_secs(3)).expect("read over B never completed");
    assert!(c.status.is_success(), "read over B after its reset: {c:?}");
    assert!(r.per_path()["softB"] > 0);
    eprintln!("idle reset: B reset in {took:?}");
    assert_no_stray(&r.ch);
    drop(r.ch);
    drop(r.mp);
    r.layer.shutdown();
}
