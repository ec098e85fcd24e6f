// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Poll groups (issue 23, item 6): the channels of one group share one I/O queue pair
//! per controller, on software controllers that grant fewer I/O queues than there
//! are channels. 64 namespaces on 16 groups, each group on its own thread, verified
//! writes and reads on every bdev from every group, every I/O delivered exactly once
//! to the channel that submitted it, and the Create I/O SQ commands the controller
//! saw counted; a reset under that load reaches each shared queue pair once; closing
//! channels in any order drops a queue pair exactly when its last user goes.
//! Every wait has a deadline.

use nvme_bdev::{BdevCompletion, BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MpathOptions};
use nvme_bdev::{PollGroup, Status};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::admin_opc;
use nvme_driver::QpairOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);
const BS: usize = 512;
/// Blocks each group writes and reads on each namespace (its own range).
const NLB: u32 = 4;

/// One software controller with `namespaces` namespaces that grants `queues` I/O queues.
fn controller(namespaces: u32, queues: u16) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        name: "pg0".into(),
        subnqn: "nqn.2024-01.org.nvme-bdev:pollgroup".into(),
        mqes: 255,
        max_io_queues: queues,
        namespaces: (1..=namespaces)
            .map(|n| Arc::new(Namespace::new(n, 1024, BS as u32).unwrap()))
            .collect(),
        ..SoftConfig::default()
    })
}

fn layer(channels: usize) -> BlockLayer {
    BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            channel_depth: 64,
            ..MpathOptions::default()
        },
        qpair: QpairOptions {
            entries: 256,
            pending_max: 1024,
            timeout_ms: 10_000,
        },
        admin_poll_us: 500,
        // A QSBR reader per multipath channel, and spare.
        readers: channels + 64,
        ..LayerOptions::default()
    })
    .unwrap()
}

/// The multipath bdev of each namespace (`attach` names the namespace bdev, then the
/// multipath bdev, per namespace).
fn mpath_names(names: &[String]) -> Vec<String> {
    names.iter().skip(1).step_by(2).cloned().collect()
}

fn create_sq(ssd: &SoftController) -> u64 {
    ssd.counters().admin_fetched(admin_opc::CREATE_IO_SQ)
}

fn delete_sq(ssd: &SoftController) -> u64 {
    ssd.counters().admin_fetched(admin_opc::DELETE_IO_SQ)
}

/// A group's channels and its traffic: channel `k` writes, then reads back, blocks
/// `g * NLB ..` of its namespace (`g` the group), with a pattern of group, channel
/// and round.
struct Lane {
    g: usize,
    group: PollGroup,
    keys: Vec<usize>,
    wbuf: IoBuf,
    rbuf: IoBuf,
    rounds: usize,
    /// Completions per I/O ([`index`]), over the whole run: each must be exactly 1.
    seen: Vec<u32>,
    errors: Vec<String>,
}

/// A context: channel key, round and phase (0 write, 1 read), so a completion names
/// the channel that submitted it.
fn ctx(key: usize, round: usize, phase: usize) -> u64 {
    ((key as u64) << 32) | ((round as u64) << 1) | phase as u64
}

/// Where context `c` is counted in `Lane::seen`, for `rounds` rounds.
fn index(c: u64, rounds: usize) -> usize {
    let (key, round, phase) = (
        (c >> 32) as usize,
        ((c & 0xffff_ffff) >> 1) as usize,
        (c & 1) as usize,
    );
    if round >= rounds {
        return usize::MAX;
    }
    (key * rounds + round) * 2 + phase
}

fn pattern(g: usize, key: usize, round: usize) -> u8 {
    (g as u8).wrapping_mul(31) ^ (key as u8).wrapping_mul(7) ^ (round as u8) ^ 0x5a
}

impl Lane {
    fn new(layer: &BlockLayer, g: usize, bdevs: &[String], rounds: usize) -> Lane {
        let mut group = layer.poll_group();
        let keys: Vec<usize> = bdevs
            .iter()
            .map(|b| group.open(&layer.open(b).unwrap()).unwrap())
            .collect();
        let per = NLB as usize * BS;
        Lane {
            g,
            group,
            wbuf: layer.alloc_buffer(per * keys.len()).unwrap(),
            rbuf: layer.alloc_buffer(per * keys.len()).unwrap(),
            seen: vec![0; keys.iter().max().map_or(0, |&k| k + 1) * rounds * 2],
            rounds,
            keys,
            errors: Vec::new(),
        }
    }

    /// Submits one phase on every channel, then polls every channel until each has
    /// its completion (each completion counted in `seen`, and its context checked to
    /// be of the channel that delivered it).
    fn phase(&mut self, round: usize, phase: usize) {
        let per = NLB as usize * BS;
        for (i, &k) in self.keys.iter().enumerate() {
            let slba = self.g as u64 * NLB as u64;
            let io = if phase == 0 {
                let data = vec![pattern(self.g, k, round); per];
                self.wbuf.write_at(i * per, &data).unwrap();
                BdevIo::write(
                    slba,
                    NLB,
                    self.wbuf.slice(i * per, per).unwrap(),
                    ctx(k, round, 0),
                )
            } else {
                BdevIo::read(
                    slba,
                    NLB,
                    self.rbuf.slice(i * per, per).unwrap(),
                    ctx(k, round, 1),
                )
            };
            if let Err((e, _)) = self.group.submit(k, io) {
                self.errors
                    .push(format!("group {}: submit on {k}: {e}", self.g));
            }
        }
        let want = self.keys.len();
        let mut got = 0;
        let deadline = Instant::now() + LIMIT;
        let (seen, errors, g, rounds) = (&mut self.seen, &mut self.errors, self.g, self.rounds);
        while got < want && Instant::now() < deadline {
            let n = self.group.poll_all(&mut |key, c: BdevCompletion| {
                if (c.ctx >> 32) as usize != key {
                    errors.push(format!(
                        "group {g}: channel {key} got the completion of channel {}",
                        c.ctx >> 32
                    ));
                }
                if !c.status.is_success() {
                    errors.push(format!("group {g}: I/O {:#x}: {:?}", c.ctx, c.status));
                }
                match seen.get_mut(index(c.ctx, rounds)) {
                    Some(s) => *s += 1,
                    None => errors.push(format!("group {g}: unknown context {:#x}", c.ctx)),
                }
            });
            got += n;
            if n == 0 {
                std::thread::yield_now();
            }
        }
        if got != want {
            self.errors.push(format!(
                "group {}: round {round} phase {phase}: {got} of {want} completions within {LIMIT:?}",
                self.g
            ));
        }
        if phase == 1 {
            for (i, &k) in self.keys.iter().enumerate() {
                let mut back = vec![0u8; per];
                self.rbuf.read_at(i * per, &mut back).unwrap();
                if back.iter().any(|&b| b != pattern(self.g, k, round)) {
                    self.errors.push(format!(
                        "group {}: channel {k}, round {round}: read back differs from what it wrote",
                        self.g
                    ));
                }
            }
        }
    }

    fn run(&mut self, rounds: usize) {
        for round in 0..rounds {
            self.phase(round, 0);
            self.phase(round, 1);
        }
    }

    /// Rounds until `stop` is set, then two more (at most `self.rounds`); returns how
    /// many ran.
    fn run_until(&mut self, stop: &AtomicBool) -> usize {
        let mut after = 0;
        let mut round = 0;
        while round < self.rounds && after < 2 {
            if stop.load(Ordering::Acquire) {
                after += 1;
            }
            self.phase(round, 0);
            self.phase(round, 1);
            round += 1;
        }
        round
    }

    /// Every context submitted completed exactly once; no channel counted a stray
    /// completion.
    fn check(&self, rounds: usize) -> Vec<String> {
        let mut bad = self.errors.clone();
        for &k in &self.keys {
            for round in 0..rounds {
                for phase in 0..2 {
                    let n = self.seen[index(ctx(k, round, phase), self.rounds)];
                    if n != 1 {
                        bad.push(format!(
                            "group {}: I/O {:#x} completed {n} times",
                            self.g,
                            ctx(k, round, phase)
                        ));
                    }
                }
            }
            if let Some(Channel::Mpath(c)) = self.group.channel(k) {
                let s = c.stats();
                if s.stray_completions != 0 {
                    bad.push(format!(
                        "group {}: channel {k}: {} stray completions",
                        self.g, s.stray_completions
                    ));
                }
            }
        }
        bad
    }
}

/// Runs every lane on its own thread (each group moves to its thread with its
/// channels); returns them with their failures.
fn run_lanes(lanes: Vec<Lane>, rounds: usize) -> (Vec<Lane>, Vec<String>) {
    let handles: Vec<_> = lanes
        .into_iter()
        .map(|mut lane| {
            std::thread::spawn(move || {
                lane.run(rounds);
                lane
            })
        })
        .collect();
    let lanes: Vec<Lane> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let bad = lanes.iter().flat_map(|l| l.check(rounds)).collect();
    (lanes, bad)
}

#[test]
fn sixty_four_namespaces_on_sixteen_groups_share_one_queue_pair_each() {
    const NAMESPACES: u32 = 64;
    const GROUPS: usize = 16;
    const ROUNDS: usize = 2;
    // 16 I/O queues: a queue pair per channel would need 64 x 16 = 1024.
    let ssd = controller(NAMESPACES, 16);
    let layer = layer(NAMESPACES as usize * GROUPS);
    let bdevs = mpath_names(&layer.attach_bus("pg0", ssd.clone()).unwrap());
    assert_eq!(bdevs.len(), NAMESPACES as usize);
    let before = create_sq(&ssd);
    // Set-up off the groups' threads: every bdev opened in every group.
    let lanes: Vec<Lane> = (0..GROUPS)
        .map(|g| Lane::new(&layer, g, &bdevs, ROUNDS))
        .collect();
    for lane in &lanes {
        assert_eq!(
            lane.group.queue_pairs(),
            1,
            "group {}: its 64 channels should share one queue pair to the controller",
            lane.g
        );
    }
    let made = create_sq(&ssd) - before;
    assert_eq!(
        made, GROUPS as u64,
        "the controller saw {made} Create I/O SQ commands for {GROUPS} groups of {NAMESPACES} \
         channels: one per group and controller is the most a layer should need"
    );
    let (lanes, bad) = run_lanes(lanes, ROUNDS);
    assert!(
        bad.is_empty(),
        "{} failures, first: {:#?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
    assert_eq!(
        create_sq(&ssd) - before,
        GROUPS as u64,
        "no queue pair made under load"
    );
    drop(lanes);
    layer.shutdown();
}

#[test]
fn a_reset_under_load_reaches_each_shared_queue_pair_once() {
    const NAMESPACES: u32 = 16;
    const GROUPS: usize = 4;
    const ROUNDS: usize = 5000;
    let ssd = controller(NAMESPACES, 8);
    let layer = layer(NAMESPACES as usize * GROUPS);
    let bdevs = mpath_names(&layer.attach_bus("pg0", ssd.clone()).unwrap());
    let before = create_sq(&ssd);
    let lanes: Vec<Lane> = (0..GROUPS)
        .map(|g| Lane::new(&layer, g, &bdevs, ROUNDS))
        .collect();
    assert_eq!(create_sq(&ssd) - before, GROUPS as u64);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = lanes
        .into_iter()
        .map(|mut lane| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rounds = lane.run_until(&stop);
                (lane, rounds)
            })
        })
        .collect();
    // The reset while the lanes run (they go on until it is done, and two rounds
    // more): each lane waits for every completion of a phase, so I/O is in flight
    // most of the time.
    std::thread::sleep(Duration::from_millis(20));
    layer.request_reset("pg0").unwrap();
    let deadline = Instant::now() + LIMIT;
    while layer.controller_stats("pg0").unwrap().resets_requested < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Release);
    let done: Vec<(Lane, usize)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (lane, rounds) in &done {
        assert!(
            *rounds < ROUNDS,
            "group {}: the lane ran out of rounds before the reset",
            lane.g
        );
    }
    let bad: Vec<String> = done.iter().flat_map(|(l, r)| l.check(*r)).collect();
    let lanes: Vec<Lane> = done.into_iter().map(|(l, _)| l).collect();
    assert!(
        bad.is_empty(),
        "{} failures, first: {:#?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
    let stats = layer.controller_stats("pg0").unwrap();
    assert_eq!(
        stats.resets_requested, 1,
        "the reset did not happen: {stats:?}"
    );
    // The reset re-creates the controller's I/O queues: one per group, whatever the
    // number of channels on each.
    let made = create_sq(&ssd) - before;
    assert_eq!(
        made,
        2 * GROUPS as u64,
        "{made} Create I/O SQ commands: {GROUPS} at set-up and {GROUPS} at the reset expected"
    );
    for lane in &lanes {
        assert_eq!(lane.group.queue_pairs(), 1);
    }
    drop(lanes);
    layer.shutdown();
}

/// Waits until `f` holds, or the deadline.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !f() {
        assert!(Instant::now() < deadline, "not within {LIMIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn closing_channels_in_any_order_drops_the_queue_pair_with_its_last_user() {
    const NAMESPACES: u32 = 8;
    let ssd = controller(NAMESPACES, 4);
    let layer = layer(64);
    let bdevs = mpath_names(&layer.attach_bus("pg0", ssd.clone()).unwrap());
    let mut lane = Lane::new(&layer, 0, &bdevs, 1);
    assert_eq!(lane.group.queue_pairs(), 1);
    assert_eq!(lane.group.queue_pairs_made(), 1);
    let deleted = delete_sq(&ssd);

    // One channel's completion taken by another's poll reaches its own channel, once,
    // at that channel's next poll.
    let (a, b) = (lane.keys[0], lane.keys[1]);
    let buf = layer.alloc_buffer(BS).unwrap();
    lane.group
        .submit(a, BdevIo::read(0, 1, buf.whole(), 1))
        .unwrap();
    lane.group
        .submit(b, BdevIo::read(0, 1, buf.whole(), 2))
        .unwrap();
    let mut on_a = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while (on_a.is_empty() || ssd.counters().completions_posted() < 2) && Instant::now() < deadline
    {
        lane.group
            .poll(a, &mut |c: BdevCompletion| on_a.push(c.ctx));
    }
    // A few more polls of `a` alone, so `b`'s completion is surely taken by them.
    for _ in 0..100 {
        lane.group
            .poll(a, &mut |c: BdevCompletion| on_a.push(c.ctx));
    }
    assert_eq!(
        on_a,
        vec![1],
        "channel a delivered exactly its own completion"
    );
    let mut on_b = Vec::new();
    while on_b.is_empty() && Instant::now() < deadline {
        lane.group
            .poll(b, &mut |c: BdevCompletion| on_b.push(c.ctx));
    }
    for _ in 0..100 {
        lane.group
            .poll(b, &mut |c: BdevCompletion| on_b.push(c.ctx));
    }
    assert_eq!(
        on_b,
        vec![2],
        "channel b's completion, taken by a's poll, reaches b once"
    );

    // Close in an order that is neither opening order nor its reverse; after each
    // close the others still do verified I/O, and the queue pair stays until the last.
    let order = [3usize, 0, 7, 5, 1, 6, 2, 4];
    let keys = lane.keys.clone();
    for (i, &idx) in order.iter().enumerate() {
        let key = keys[idx];
        assert!(lane.group.close(key));
        lane.keys.retain(|&k| k != key);
        let last = i == order.len() - 1;
        if !last {
            lane.seen.iter_mut().for_each(|s| *s = 0);
            lane.run(1);
            let bad = lane.check(1);
            assert!(bad.is_empty(), "after closing {i} channels: {bad:#?}");
            // Give the controller thread time to take back the membership.
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(
                lane.group.queue_pairs(),
                1,
                "the queue pair must stay while {} channels use it",
                lane.keys.len()
            );
            assert_eq!(
                delete_sq(&ssd) - deleted,
                0,
                "a queue deleted with users left"
            );
        }
    }
    wait_for("the queue pair dropped after its last user closed", || {
        lane.group.queue_pairs() == 0 && delete_sq(&ssd) - deleted == 1
    });
    // A new channel makes a new queue pair.
    let k = lane.group.open(&layer.open(&bdevs[0]).unwrap()).unwrap();
    assert_eq!(lane.group.queue_pairs(), 1);
    assert_eq!(lane.group.queue_pairs_made(), 2);
    lane.group
        .submit(k, BdevIo::read(0, 1, buf.whole(), 9))
        .unwrap();
    let mut status = None::<Status>;
    let deadline = Instant::now() + LIMIT;
    while status.is_none() && Instant::now() < deadline {
        lane.group
            .poll(k, &mut |c: BdevCompletion| status = Some(c.status));
    }
    assert!(status.is_some_and(|s| s.is_success()), "{status:?}");
    drop(lane);
    layer.shutdown();
}
