//! The deadlock from the design brief, as a test: two paths to one namespace on the
//! software controller, two reactors, queue depth far above the queue size (tags run
//! out), path A reset over and over while path B flips between inaccessible and
//! optimized through ANA change events. Every I/O must complete exactly once with
//! intact data, no submit call may wait, path-set publication stays short, and the
//! whole thing ends within its deadline.

use nvme_bdev::{
    BdevCompletion, BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MpathOptions, Policy, Poller,
    ReactorCtx, ReactorOptions, Reactors,
};
use nvme_driver::clock;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::AnaState;
use nvme_driver::QpairOptions;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QD: usize = 96;
const BLOCKS_PER_IO: u32 = 8;
const QUEUE_ENTRIES: u16 = 16;
const ROUNDS: usize = 40;
const DEADLINE: Duration = Duration::from_secs(45);

#[derive(Default, Debug)]
struct Report {
    completed: u64,
    errors: u64,
    mismatches: u64,
    duplicates: u64,
    longest_submit_ns: u64,
    leftover: usize,
}

/// Each slot writes its own block range with a pattern, reads it back, checks it.
struct Worker {
    core: u64,
    ch: Channel,
    wbufs: Vec<IoBuf>,
    rbufs: Vec<IoBuf>,
    /// Sequence number of the I/O each slot has out, or u64::MAX.
    out: Vec<u64>,
    seq: Vec<u64>,
    reading: Vec<bool>,
    report: Report,
    done: Arc<Mutex<Vec<Report>>>,
    reported: bool,
    stopping: Arc<AtomicBool>,
}

fn pattern(core: u64, slot: usize, seq: u64, i: usize) -> u8 {
    (core as usize * 31 + slot * 7 + seq as usize * 13 + i) as u8
}

impl Worker {
    fn lba(&self, slot: usize) -> u64 {
        (self.core * QD as u64 + slot as u64) * BLOCKS_PER_IO as u64
    }

    fn issue(&mut self, slot: usize) {
        let seq = self.seq[slot];
        let ctx = (slot as u64) << 32 | seq;
        let io = if self.reading[slot] {
            BdevIo::read(self.lba(slot), BLOCKS_PER_IO, self.rbufs[slot].whole(), ctx)
        } else {
            let len = self.wbufs[slot].len();
            let data: Vec<u8> = (0..len).map(|i| pattern(self.core, slot, seq, i)).collect();
            self.wbufs[slot].write_at(0, &data).expect("in bounds");
            BdevIo::write(self.lba(slot), BLOCKS_PER_IO, self.wbufs[slot].whole(), ctx)
        };
        let t0 = clock::ticks();
        let r = self.ch.submit(io);
        let ns = clock::ticks_to_ns(clock::ticks().wrapping_sub(t0));
        self.report.longest_submit_ns = self.report.longest_submit_ns.max(ns);
        match r {
            Ok(()) => self.out[slot] = ctx,
            Err((e, _)) => panic!("submit refused: {e}"),
        }
    }

    fn on_done(&mut self, c: BdevCompletion) {
        let slot = (c.ctx >> 32) as usize;
        if self.out[slot] != c.ctx {
            self.report.duplicates += 1;
            return;
        }
        self.out[slot] = u64::MAX;
        self.report.completed += 1;
        if !c.status.is_success() {
            self.report.errors += 1;
            eprintln!("core {} slot {slot}: {}", self.core, c.status);
        }
        if self.reading[slot] {
            let mut got = vec![0u8; self.rbufs[slot].len()];
            self.rbufs[slot].read_at(0, &mut got).expect("in bounds");
            let seq = self.seq[slot];
            if got
                .iter()
                .enumerate()
                .any(|(i, &b)| b != pattern(self.core, slot, seq, i))
            {
                self.report.mismatches += 1;
            }
            self.seq[slot] += 1;
        }
        self.reading[slot] = !self.reading[slot];
        if !self.stopping.load(Ordering::Acquire) {
            self.issue(slot);
        }
    }

    fn drive(&mut self) -> usize {
        let mut got = Vec::with_capacity(QD);
        let n = self.ch.poll(&mut |c| got.push(c));
        for c in got {
            self.on_done(c);
        }
        n
    }
}

impl Poller for Worker {
    fn poll(&mut self, _ctx: &mut ReactorCtx) -> usize {
        if self.seq.iter().all(|&s| s == 0)
            && self.out.iter().all(|&o| o == u64::MAX)
            && !self.reading[0]
        {
            for slot in 0..QD {
                self.issue(slot);
            }
        }
        self.drive()
    }
    fn stop(&mut self, _ctx: &mut ReactorCtx) -> bool {
        self.stopping.store(true, Ordering::Release);
        self.drive();
        if self.ch.outstanding() == 0 && !self.reported {
            self.reported = true;
            self.report.leftover = self.out.iter().filter(|&&o| o != u64::MAX).count();
            self.done
                .lock()
                .unwrap()
                .push(std::mem::take(&mut self.report));
        }
        self.reported
    }
}

fn soft(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        name: name.into(),
        subnqn: "nqn.2024-01.org.nvme-bdev:deadlock".into(),
        cntlid,
        mqes: QUEUE_ENTRIES - 1,
        namespaces: vec![ns.clone()],
        ana: true,
        ..SoftConfig::default()
    })
}

fn run(policy: Policy) {
    let t_start = Instant::now();
    let ns = Arc::new(Namespace::new(1, 1 << 16, 512).unwrap());
    let a = soft("softA", 1, &ns);
    let b = soft("softB", 2, &ns);
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy,
            fast_io_fail_timeout_ms: 20_000,
            reconnect_delay_ms: 100,
            ctrl_loss_timeout_ms: 30_000,
            ..MpathOptions::default()
        },
        qpair: QpairOptions {
            entries: QUEUE_ENTRIES,
            pending_max: 4096,
            timeout_ms: 10_000,
        },
        admin_poll_us: 500,
        ..LayerOptions::default()
    })
    .unwrap();
    layer.attach_bus("softA", a.clone()).unwrap();
    let names = layer.attach_bus("softB", b.clone()).unwrap();
    let mp_name = names
        .iter()
        .find(|n| n.starts_with("nqn."))
        .unwrap()
        .clone();
    let bdev = layer.open(&mp_name).unwrap();
    assert_eq!(
        bdev.multipath().unwrap().paths().len(),
        2,
        "both controllers are paths of {mp_name}"
    );

    let reactors = Reactors::start(
        ReactorOptions {
            pin: true,
            ..ReactorOptions::cores(2)
        },
        layer.qsbr().clone(),
    )
    .unwrap();
    let done = Arc::new(Mutex::new(Vec::new()));
    let stopping = Arc::new(AtomicBool::new(false));
    for core in 0..2u64 {
        let len = BLOCKS_PER_IO as usize * 512;
        let w = Worker {
            core,
            ch: bdev.channel().unwrap(),
            wbufs: (0..QD).map(|_| layer.alloc_buffer(len).unwrap()).collect(),
            rbufs: (0..QD).map(|_| layer.alloc_buffer(len).unwrap()).collect(),
            out: vec![u64::MAX; QD],
            seq: vec![0; QD],
            reading: vec![false; QD],
            report: Report::default(),
            done: done.clone(),
            reported: false,
            stopping: stopping.clone(),
        };
        reactors.add_poller(core as usize, Box::new(w)).unwrap();
    }

    // The storm: reset A while B flips between inaccessible and optimized.
    let resets_done = AtomicU64::new(0);
    for round in 0..ROUNDS {
        layer.request_reset("softA").unwrap();
        b.set_ana_state(1, AnaState::Inaccessible).unwrap();
        let t0 = Instant::now();
        while layer.controller_counts("softA").unwrap().0 <= round as u64 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "reset {round} did not finish"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        resets_done.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        b.set_ana_state(1, AnaState::Optimized).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        assert!(t_start.elapsed() < DEADLINE, "storm past its deadline");
    }
    // Let traffic run a little on both paths, then stop: everything drains.
    std::thread::sleep(Duration::from_millis(50));
    let stats = reactors.stop().unwrap();
    assert!(stats.iter().all(|s| s.undrained == 0), "{stats:?}");

    let reports = std::mem::take(&mut *done.lock().unwrap());
    assert_eq!(reports.len(), 2);
    let mp = bdev.multipath().unwrap();
    let total: u64 = reports.iter().map(|r| r.completed).sum();
    for r in &reports {
        assert_eq!(r.errors, 0, "{r:?}");
        assert_eq!(r.mismatches, 0, "{r:?}");
        assert_eq!(r.duplicates, 0, "{r:?}");
        assert_eq!(r.leftover, 0, "{r:?}");
        assert!(
            r.longest_submit_ns < 20_000_000,
            "a submit call took {} us",
            r.longest_submit_ns / 1000
        );
    }
    let publish_ns = mp.longest_publish_ns();
    assert!(
        publish_ns < 5_000_000,
        "a path-set publication took {} us",
        publish_ns / 1000
    );
    assert!(total > (QD * 2) as u64, "traffic flowed: {total}");
    let failovers: u64 = mp.paths().iter().map(|p| p.failovers).sum();
    eprintln!(
        "{policy:?}: {total} I/Os, {failovers} failovers, longest submit {} us, longest publish {} us, {} resets, {:.1} s",
        reports.iter().map(|r| r.longest_submit_ns).max().unwrap_or(0) / 1000,
        publish_ns / 1000,
        resets_done.load(Ordering::Relaxed),
        t_start.elapsed().as_secs_f64()
    );
    assert!(t_start.elapsed() < DEADLINE);
    drop(bdev);
    layer.shutdown();
}

#[test]
fn reset_storm_with_ana_flips_active_passive() {
    run(Policy::ActivePassive);
}

#[test]
fn reset_storm_with_ana_flips_round_robin() {
    run(Policy::RoundRobin);
}
