// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Failover under randomized schedules (`shuttle`): two reactor threads, each with a
//! multipath channel over two model paths, and a controller thread that resets path A
//! (its in-flight I/O comes back "aborted: SQ deletion") and flips path B between
//! inaccessible and optimized (its in-flight I/O comes back with an ANA error),
//! publishing path sets as it goes. In every schedule tried, every I/O completes
//! exactly once and successfully, and no completion is stray.
//!
//! What shuttle sees, and so what it varies: the model devices' locks and the
//! threads' yields are its scheduling points. The channel's and the path set's own
//! atomics (the QSBR epoch, the snapshot swap, the mailbox ring) are plain `std`
//! atomics, invisible to it: the schedules are orders of whole steps between those
//! points, not every interleaving of the atomics (the loom models in the library
//! cover those). A path queue that fails (`is_failed`, `Refused::Failed`) is not
//! modelled here; the unit tests cover it. Each test counts the schedules in which
//! I/O actually failed over and asserts there were some, so a change that keeps the
//! aborts from reaching I/O in flight cannot pass unnoticed.
use nvme_bdev::mpath::{PathShared, PathState};
use nvme_bdev::qsbr::Qsbr;
use nvme_bdev::{BdevCompletion, BdevInfo, BdevIo, MpathOptions, Multipath, PathQueue, Policy};
use nvme_driver::spec::{sc, sct, AnaState};
use nvme_driver::{DmaSlice, IoCompletion, IoRequest, Iova, Refused, Status};
use shuttle::sync::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the "device" of one path does with the commands it holds.
#[derive(Default)]
struct Device {
    inflight: VecDeque<IoRequest>,
    /// Status the next completions carry (success, reset abort, ANA error).
    abort_with: Option<Status>,
}

struct ModelPath {
    dev: Arc<Mutex<Device>>,
    outstanding: usize,
    accepted: u64,
}

impl PathQueue for ModelPath {
    fn submit(&mut self, req: &IoRequest) -> Result<(), Refused> {
        let mut d = self.dev.lock().unwrap();
        if d.inflight.len() >= 3 {
            return Err(Refused::Busy);
        }
        d.inflight.push_back(*req);
        self.outstanding += 1;
        self.accepted += 1;
        Ok(())
    }
    fn poll(&mut self, max: usize, cb: &mut impl FnMut(IoCompletion)) -> usize {
        let mut d = self.dev.lock().unwrap();
        let mut n = 0;
        while n < max.min(2) {
            let Some(r) = d.inflight.pop_front() else {
                break;
            };
            let status = d.abort_with.unwrap_or(Status::SUCCESS);
            self.outstanding -= 1;
            cb(IoCompletion { ctx: r.ctx, status });
            n += 1;
        }
        n
    }
    fn flush(&mut self) {}
    fn outstanding(&self) -> usize {
        self.outstanding
    }
    fn submitted(&self) -> u64 {
        self.accepted
    }
    fn is_failed(&self) -> bool {
        false
    }
}

fn path(id: u64) -> Arc<PathShared> {
    Arc::new(PathShared::new(id, format!("path{id}"), 1))
}

const IOS: u64 = 5;

/// Failovers seen over all schedules of one test, and the schedules with any.
struct Tally {
    failovers: AtomicU64,
    schedules_with_failover: AtomicU64,
    schedules: AtomicU64,
}

impl Tally {
    const fn new() -> Self {
        Tally {
            failovers: AtomicU64::new(0),
            schedules_with_failover: AtomicU64::new(0),
            schedules: AtomicU64::new(0),
        }
    }
    /// After the schedules ran: some of them failed over.
    fn check(&self, what: &str) {
        let (f, with, all) = (
            self.failovers.load(Ordering::Relaxed),
            self.schedules_with_failover.load(Ordering::Relaxed),
            self.schedules.load(Ordering::Relaxed),
        );
        eprintln!("{what}: {with} of {all} schedules failed over ({f} failovers)");
        // Most schedules fail over (nine in ten with the seeds tried); a quarter is
        // the floor.
        assert!(
            all > 0 && with * 4 >= all,
            "{what}: only {with} of {all} schedules failed over"
        );
    }
}

fn scenario(policy: Policy, tally: &'static Tally) {
    let info = BdevInfo {
        name: "model".into(),
        block_size: 512,
        num_blocks: 1 << 20,
        subnqn: "nqn.model".into(),
        nguid: Some([7; 16]),
        eui64: None,
        uuid: None,
    };
    let opts = MpathOptions {
        policy,
        fast_io_fail_timeout_ms: 60_000,
        reconnect_delay_ms: 1000,
        ctrl_loss_timeout_ms: -1,
        ..MpathOptions::default()
    };
    let mp = Multipath::new(info, opts, 0, Qsbr::new(4)).unwrap();
    let live = |ana| PathState {
        connected: true,
        ana,
    };
    // Each reactor gets its own queue per path; the devices are per path per core.
    let devs: Vec<Vec<Arc<Mutex<Device>>>> = (0..2)
        .map(|_| {
            (0..2)
                .map(|_| Arc::new(Mutex::new(Device::default())))
                .collect()
        })
        .collect();
    // The channels are opened before any path exists: each path's queues travel
    // through the mailboxes when it is added.
    let channels: Vec<_> = (0..2).map(|_| mp.channel().unwrap()).collect();
    for (i, p) in [path(1), path(2)].into_iter().enumerate() {
        // One queue per channel, in the order the channels were opened.
        let path_devs: Vec<_> = devs.iter().map(|core_devs| core_devs[i].clone()).collect();
        let mut core = 0;
        mp.add_path(
            p,
            live(AnaState::Optimized),
            Box::new(move |_| {
                core += 1;
                Ok(ModelPath {
                    dev: path_devs[core - 1].clone(),
                    outstanding: 0,
                    accepted: 0,
                })
            }),
        )
        .unwrap();
    }

    let reactors: Vec<_> = channels
        .into_iter()
        .enumerate()
        .map(|(core, mut ch)| {
            shuttle::thread::spawn(move || {
                let buf = DmaSlice {
                    iova: Iova(0x10000),
                    len: 4096,
                };
                let mut done = vec![0u32; IOS as usize];
                for i in 0..IOS {
                    ch.submit(BdevIo::read(core as u64 * 100 + i, 8, buf, i))
                        .unwrap();
                }
                let mut left = IOS;
                while left > 0 {
                    ch.poll(&mut |c: BdevCompletion| {
                        assert!(c.status.is_success(), "I/O {} failed: {}", c.ctx, c.status);
                        done[c.ctx as usize] += 1;
                        left -= 1;
                    });
                    shuttle::thread::yield_now();
                }
                assert!(done.iter().all(|&n| n == 1), "exactly once: {done:?}");
                assert_eq!(ch.outstanding(), 0);
                let st = ch.stats();
                assert_eq!(st.stray_completions, 0, "{st:?}");
                st.failovers
            })
        })
        .collect();

    let ctl_mp = mp.clone();
    let controller = shuttle::thread::spawn(move || {
        let mp = ctl_mp;
        for _ in 0..2 {
            // Reset A: out of the set, in-flight aborted, back in.
            mp.set_path_state(
                1,
                PathState {
                    connected: false,
                    ana: AnaState::Optimized,
                },
            );
            for core in &devs {
                core[0].lock().unwrap().abort_with = Some(Status::ABORTED_SQ_DELETION);
            }
            shuttle::thread::yield_now();
            for core in &devs {
                core[0].lock().unwrap().abort_with = None;
            }
            mp.set_path_state(1, live(AnaState::Optimized));
            // B goes inaccessible (its I/O fails with an ANA error), then comes back.
            mp.set_path_state(2, live(AnaState::Inaccessible));
            for core in &devs {
                core[1].lock().unwrap().abort_with =
                    Some(Status::new(sct::PATH, sc::ANA_INACCESSIBLE, false));
            }
            shuttle::thread::yield_now();
            for core in &devs {
                core[1].lock().unwrap().abort_with = None;
            }
            mp.set_path_state(2, live(AnaState::Optimized));
            mp.tick();
        }
    });
    let failovers: u64 = reactors.into_iter().map(|r| r.join().unwrap()).sum();
    controller.join().unwrap();
    mp.tick();
    tally.failovers.fetch_add(failovers, Ordering::Relaxed);
    tally.schedules.fetch_add(1, Ordering::Relaxed);
    if failovers > 0 {
        tally
            .schedules_with_failover
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn shuttle_failover_active_passive() {
    static T: Tally = Tally::new();
    shuttle::check_random(|| scenario(Policy::ActivePassive, &T), 300);
    T.check("active-passive");
}

#[test]
fn shuttle_failover_round_robin() {
    static T: Tally = Tally::new();
    shuttle::check_random(|| scenario(Policy::RoundRobin, &T), 300);
    T.check("round-robin");
}

#[test]
fn shuttle_failover_least_queue_depth_pct() {
    static T: Tally = Tally::new();
    shuttle::check_pct(|| scenario(Policy::LeastQueueDepth, &T), 300, 3);
    T.check("least-queue-depth");
}
