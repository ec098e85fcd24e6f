// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A seeded fault simulator (in the spirit of TigerBeetle's VOPR): the real block
//! layer and driver over software controllers, with a schedule of faults drawn from a
//! seed, and a shadow model of the namespace that checks every completed read and that
//! every I/O completes exactly once.
//!
//! Per seed: 2 or 3 controllers of one subsystem (one shared namespace), a policy, two
//! channels polled in turn from the test thread (each with its own slots and blocks),
//! and `STEPS` steps. A step runs verified traffic for a while, then applies one fault
//! drawn from the seed: a duplicated completion, reordered or late completions, a
//! dropped completion (the command times out and is aborted), a completion for a CID
//! never issued, a completion with a wrong phase or SQ head, an ANA state change, a
//! controller reset through the layer, a fatal controller status, or a removal
//! (the controller returns as a new device some steps later, through the layer's
//! reconnect). At most all but one controller are down or inaccessible at once. At the
//! end every fault is healed, the paths come back, traffic drains, and the checks run.
//!
//! The model: each slot writes its blocks with a pattern of (slot, sequence number),
//! then reads them back. A read that succeeds must return what the model allows: the
//! last write that succeeded, or a later write whose completion was an error (the
//! device may have done it). Every completion must match the one I/O out on its slot
//! (exactly once; a context word carries the channel, slot, sequence number and the
//! read/write bit); the channels must count no stray completions; nothing stays out.
//!
//! The behaviour oracle (`simulator/oracle.rs`) judges the layer itself: no I/O sent
//! to a path the layer knew was unusable (not connected, ANA inaccessible, or just
//! returned an ANA error) or non-optimized while an optimized one was available, and
//! every command timeout, reset, controller failure and failover explained by the
//! faults injected on that controller.
//!
//! Same seed, same fault schedule (the threads of the devices and of the layer's
//! controller thread interleave as they will). Environment:
//! - `NVME_SIM_SEEDS=N` runs seeds 1..=N (default 300, spread over four tests);
//!   `NVME_SIM_SEEDS=A-B` runs seeds A..=B (a long run in pieces);
//! - `NVME_SIM_JOBS=J` runs J seeds at once in each of the four tests (default 2): a
//!   seed mostly waits (timeouts, reconnect delays), so long runs go faster with more;
//! - `NVME_SIM_SEED=S` runs seed S alone, printing its schedule;
//! - `NVME_SIM_FAULTS=a,b` applies only the fault kinds named (see [`report::FAULTS`]).
//!
//! A run prints its totals (faults injected per kind, I/Os checked, lost, duplicated,
//! corrupted, the longest pause) as a Markdown table, each test its own and the last
//! test to finish those of all four. A failing seed does not stop the run: the run
//! fails at the end, printing each failing seed's findings and the command that
//! replays it.

#[path = "simulator/model.rs"]
mod model;
#[path = "simulator/oracle.rs"]
mod oracle;
#[path = "simulator/report.rs"]
mod report;

use model::{Lane, BS, NLB, SLOTS};
use nvme_bdev::layer::Connector;
use nvme_bdev::{BlockLayer, Channel, LayerOptions, MpathOptions, Policy};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::AnaState;
use nvme_driver::QpairOptions;
use oracle::Oracle;
use report::{Totals, FAULTS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SUBNQN: &str = "nqn.2024-01.org.nvme-bdev:simulator";
const CHANNELS: usize = 2;
const STEPS: usize = 24;
/// Channel polls per step of traffic.
const POLLS_PER_STEP: usize = 400;
const LIMIT: Duration = Duration::from_secs(20);

/// SplitMix64: small, seedable, good enough to draw a schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One controller of the simulation: the device behind it can be replaced (a removal
/// and a return), and the connector the layer reconnects through refuses while it is
/// gone.
struct Ctrl {
    name: String,
    cntlid: u16,
    current: Arc<Mutex<Arc<SoftController>>>,
    gone: Arc<AtomicBool>,
    /// The step at which this controller is healed (returns, or its ANA state goes
    /// back to optimized); None while healthy.
    heal_at: Option<usize>,
    /// Faults applied to it, per kind of [`FAULTS`].
    faults: [u64; FAULTS.len()],
    /// Bumped whenever the simulator changes its ANA state or replaces its device:
    /// what the layer learnt of its ANA state before may no longer hold.
    ana_epoch: u64,
    /// ANA error statuses and SQ deletion aborts posted by its devices replaced so far.
    posted_before: (u64, u64),
}

impl Ctrl {
    fn device(&self) -> Arc<SoftController> {
        self.current.lock().unwrap().clone()
    }
    fn connector(&self) -> Connector {
        let (current, gone, name) = (self.current.clone(), self.gone.clone(), self.name.clone());
        Arc::new(move || {
            if gone.load(Ordering::Acquire) {
                return Err(nvme_driver::Error::ControllerFailed {
                    device: name.clone(),
                    reason: "simulator: removed, not back yet".into(),
                });
            }
            let c: Arc<SoftController> = current.lock().unwrap().clone();
            Ok(c as Arc<dyn nvme_driver::bus::Bus>)
        })
    }
}

fn device(name: &str, cntlid: u16, ns: &Arc<Namespace>) -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        name: name.into(),
        subnqn: SUBNQN.into(),
        cntlid,
        mqes: 31,
        namespaces: vec![ns.clone()],
        ana: true,
        ..SoftConfig::default()
    })
}

/// Runs one seed: its totals, and what it found wrong (empty when nothing).
fn run_seed(seed: u64, verbose: bool) -> (Totals, String) {
    let mut outcome = Totals {
        seeds: 1,
        longest_pause: (Duration::ZERO, seed),
        ..Totals::default()
    };
    match simulate(seed, verbose, &mut outcome) {
        Ok(()) => (outcome, String::new()),
        Err(e) => {
            outcome.failed_seeds.push(seed);
            (outcome, e)
        }
    }
}

fn simulate(seed: u64, verbose: bool, outcome: &mut Totals) -> Result<(), String> {
    let enabled: Vec<bool> = match std::env::var("NVME_SIM_FAULTS") {
        Ok(list) => FAULTS
            .iter()
            .map(|f| list.split(',').any(|x| x == *f))
            .collect(),
        Err(_) => vec![true; FAULTS.len()],
    };
    let mut rng = Rng(seed);
    let n_ctrls = 2 + rng.below(2) as usize;
    let policy = [
        Policy::ActivePassive,
        Policy::RoundRobin,
        Policy::LeastQueueDepth,
    ][rng.below(3) as usize];
    let ns = Arc::new(Namespace::new(1, 1 << 12, BS as u32).unwrap());
    let grp = ns.anagrpid();
    let mut ctrls: Vec<Ctrl> = (0..n_ctrls)
        .map(|i| {
            let name = format!("sim{i}");
            let cntlid = i as u16 + 1;
            Ctrl {
                current: Arc::new(Mutex::new(device(&name, cntlid, &ns))),
                name,
                cntlid,
                gone: Arc::new(AtomicBool::new(false)),
                heal_at: None,
                faults: [0; FAULTS.len()],
                ana_epoch: 0,
                posted_before: (0, 0),
            }
        })
        .collect();
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy,
            fast_io_fail_timeout_ms: 30_000,
            reconnect_delay_ms: 10,
            ctrl_loss_timeout_ms: 60_000,
            ..MpathOptions::default()
        },
        qpair: QpairOptions {
            entries: 32,
            pending_max: 1024,
            timeout_ms: 100,
        },
        admin_poll_us: 200,
        ..LayerOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for c in &ctrls {
        names = layer
            .attach(&c.name, c.connector())
            .map_err(|e| format!("attach {}: {e}", c.name))?;
    }
    let mp_name = names
        .iter()
        .find(|n| n.starts_with("nqn."))
        .ok_or("no multipath bdev")?
        .clone();
    let bdev = layer.open(&mp_name).map_err(|e| e.to_string())?;
    let mp = bdev.multipath().ok_or("not multipath")?.clone();
    let len = NLB as usize * BS;
    let mut lanes: Vec<Lane> = (0..CHANNELS)
        .map(|index| {
            let bufs = || {
                (0..SLOTS)
                    .map(|_| layer.alloc_buffer(len).unwrap())
                    .collect()
            };
            Lane::new(index, bdev.channel().unwrap(), bufs(), bufs())
        })
        .collect();
    for lane in &mut lanes {
        for slot in 0..SLOTS {
            lane.issue(slot);
        }
    }
    let mut oracle = Oracle::new(CHANNELS);
    for lane in &lanes {
        // The counters after the first submits: the oracle judges what comes after.
        oracle.after(
            lane.index,
            oracle::Before::unjudged(),
            &path_stats(lane),
            &mp,
            &|_| 0,
        );
    }
    let mut schedule = Vec::new();
    let t0 = Instant::now();
    for step in 0..STEPS {
        traffic(&mut lanes, &mut oracle, &mp, &ctrls, POLLS_PER_STEP, true);
        // Heal what is due.
        for c in ctrls.iter_mut() {
            if c.heal_at.is_some_and(|s| s <= step) {
                heal(c, &ns, grp);
                schedule.push(format!("step {step}: {} healed", c.name));
            }
        }
        let k = rng.below(n_ctrls as u64) as usize;
        let down = ctrls.iter().filter(|c| c.heal_at.is_some()).count();
        let mut kind = rng.below(FAULTS.len() as u64) as usize;
        // Taking a controller away (removal, fatal status, inaccessible): never the
        // last one, and not one already away.
        if kind >= 8 && (down + 1 >= n_ctrls || ctrls[k].heal_at.is_some()) {
            kind = 7; // a reset instead
        }
        if !enabled[kind] {
            continue;
        }
        let c = &mut ctrls[k];
        c.faults[kind] += 1;
        let dev = c.device();
        let f = dev.faults();
        let what = match kind {
            0 => {
                f.duplicate_next_completion();
                "duplicate the next completion".to_string()
            }
            1 => {
                let on = rng.below(2) == 0;
                f.set_reorder(on);
                format!("reorder completions {on}")
            }
            2 => {
                let us = [0, 50, 400][rng.below(3) as usize];
                f.set_completion_delay_us(us);
                format!("delay completions {us} us")
            }
            3 => {
                f.drop_io_completions(1);
                "drop the next I/O completion (timeout, abort)".to_string()
            }
            4 => {
                // A CID no command can have: a bogus completion that names a command
                // in flight is indistinguishable from its real completion (the
                // device's word is all the host has), so the host can only be asked
                // to catch the ones that name none. The queues have 31 trackers, so a
                // CID's low 5 bits are the tracker index and the bits above its
                // generation; index 31 is never used (no CID is FFFFh), so any
                // generation with index 31 names no command. (Before generation CIDs,
                // CIDs from 64 up named none; with them, CID 233 was tracker 9 in its
                // seventh use, and seed 5539 completed a read the device never ran.)
                let cqid = 1 + rng.below(2) as u16;
                let cid = (rng.below(2047) as u16) << 5 | 31;
                f.post_bogus_completion(cqid, cid);
                format!("bogus completion CQ {cqid} CID {cid}")
            }
            5 => {
                f.corrupt_next_phase();
                "wrong phase on the next completion".to_string()
            }
            6 => {
                let head = rng.below(1000) as u16;
                f.corrupt_next_sq_head(head);
                format!("SQ head {head} on the next completion")
            }
            7 => {
                layer.request_reset(&c.name).map_err(|e| e.to_string())?;
                "reset through the layer".to_string()
            }
            8 => {
                let state = [AnaState::Inaccessible, AnaState::NonOptimized][rng.below(2) as usize];
                dev.set_ana_state(grp, state).map_err(|e| e.to_string())?;
                c.ana_epoch += 1;
                c.heal_at = Some(step + 1 + rng.below(3) as usize);
                format!("ANA {state:?} until step {}", c.heal_at.unwrap())
            }
            9 => {
                f.set_fatal();
                c.heal_at = Some(step + 1);
                "fatal status (CSTS.CFS)".to_string()
            }
            _ => {
                c.gone.store(true, Ordering::Release);
                f.simulate_removal();
                c.heal_at = Some(step + 1 + rng.below(3) as usize);
                format!("removed until step {}", c.heal_at.unwrap())
            }
        };
        outcome.injected[kind] += 1;
        schedule.push(format!("step {step}: {}: {what}", c.name));
        if lanes.iter().any(|l| !l.failures.is_empty()) || t0.elapsed() > LIMIT {
            break;
        }
    }
    // Heal everything; wait for every path to be usable again, with traffic running.
    for c in ctrls.iter_mut() {
        heal(c, &ns, grp);
    }
    let all_back = |mp: &nvme_bdev::Multipath<nvme_bdev::NvmeQueue>| {
        let paths = mp.paths();
        paths.len() == n_ctrls && paths.iter().all(|p| p.state.usable())
    };
    let t_heal = Instant::now();
    while !all_back(&mp) && t_heal.elapsed() < LIMIT {
        traffic(&mut lanes, &mut oracle, &mp, &ctrls, 50, true);
    }
    let back = all_back(&mp);
    traffic(&mut lanes, &mut oracle, &mp, &ctrls, POLLS_PER_STEP, true);
    let t_drain = Instant::now();
    while lanes.iter().any(|l| l.ch.outstanding() > 0) && t_drain.elapsed() < LIMIT {
        traffic(&mut lanes, &mut oracle, &mp, &ctrls, 10, false);
    }
    let mut failures: Vec<String> = Vec::new();
    if !back {
        failures.push(format!(
            "paths not all back {LIMIT:?} after healing: {:?}",
            mp.paths()
                .iter()
                .map(|p| (p.name.clone(), p.state))
                .collect::<Vec<_>>()
        ));
    }
    for lane in &lanes {
        failures.extend(lane.failures.iter().take(3).cloned());
        let left = lane.out_count();
        outcome.lost += left as u64;
        if left > 0 || lane.ch.outstanding() > 0 {
            let stats = match &lane.ch {
                Channel::Mpath(c) => format!("{:?} {:?}", c.stats(), c.path_stats()),
                _ => String::new(),
            };
            failures.push(format!(
                "channel {}: {left} I/Os never completed ({} outstanding; paths {:?}; {stats})",
                lane.index,
                lane.ch.outstanding(),
                mp.paths()
                    .iter()
                    .map(|p| (p.name.clone(), p.state))
                    .collect::<Vec<_>>()
            ));
        }
        if lane.completed != lane.submitted {
            failures.push(format!(
                "channel {}: {} submitted, {} completed",
                lane.index, lane.submitted, lane.completed
            ));
        }
        if let Channel::Mpath(c) = &lane.ch {
            let st = c.stats();
            if st.stray_completions != 0 || st.completed != lane.completed {
                failures.push(format!("channel {}: stats {st:?}", lane.index));
            }
        }
        outcome.completed += lane.completed;
        outcome.checked_reads += lane.checked_reads;
        outcome.errors += lane.errors;
        outcome.duplicated += lane.duplicated;
        outcome.corrupted += lane.corrupted;
        outcome.longest_pause.0 = outcome.longest_pause.0.max(lane.longest_pause);
    }
    // The behaviour oracle: where I/O was sent, and what explains every timeout,
    // reset, failure and failover.
    oracle.learn_names(&mp.paths());
    outcome.judged_calls += oracle.judged_calls;
    outcome.choice_findings += oracle.choice_findings;
    if oracle.choice_findings > 0 {
        failures.push(format!(
            "oracle: {} dispatches to a path the layer knew it should not use (first {}):",
            oracle.choice_findings,
            oracle.findings.len()
        ));
        failures.extend(oracle.findings.iter().map(|f| format!("oracle: {f}")));
    }
    for c in &ctrls {
        let stats = layer.controller_stats(&c.name).unwrap_or_default();
        let d = c.device();
        let posted = (
            c.posted_before.0 + d.counters().ana_errors(),
            c.posted_before.1 + d.counters().sq_deletion_aborts(),
        );
        let (unexplained, counts) = oracle.judge_controller(&c.name, &c.faults, stats, posted);
        outcome.unexplained += unexplained.len() as u64;
        outcome.timeouts += counts.timeouts;
        outcome.resets += counts.resets;
        outcome.failures += counts.failures;
        outcome.failovers += counts.failovers;
        failures.extend(unexplained.into_iter().map(|f| format!("oracle: {f}")));
    }
    if !failures.is_empty() {
        for c in &ctrls {
            let d = c.device();
            failures.push(format!(
                "{}: layer (resets, reconnects) {:?}; device: {} commands fetched, {} completions posted, {} held",
                c.name,
                layer.controller_counts(&c.name),
                d.counters().commands_fetched(),
                d.counters().completions_posted(),
                d.counters().held_commands()
            ));
        }
    }
    if outcome.checked_reads == 0 {
        failures.push("no read was checked: the traffic never ran".into());
    }
    drop(lanes);
    drop(bdev);
    drop(mp);
    layer.shutdown();
    for c in &ctrls {
        c.device().stop();
    }
    if verbose || !failures.is_empty() {
        eprintln!(
            "seed {seed}: {n_ctrls} controllers, {policy:?}, {} completions, {} reads checked, {} errors, longest pause {} ms, {:.1} s",
            outcome.completed,
            outcome.checked_reads,
            outcome.errors,
            outcome.longest_pause.0.as_millis(),
            t0.elapsed().as_secs_f64()
        );
        for s in &schedule {
            eprintln!("  {s}");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n  "))
    }
}

/// Undoes whatever was done to `c`: knobs off, ANA optimized, a removed device
/// replaced by a new one (same identity) that the layer's reconnect finds.
fn heal(c: &mut Ctrl, ns: &Arc<Namespace>, grp: u32) {
    let dev = c.device();
    dev.faults().clear();
    if dev.faults().is_removed() {
        c.ana_epoch += 1;
        c.posted_before.0 += dev.counters().ana_errors();
        c.posted_before.1 += dev.counters().sq_deletion_aborts();
        dev.stop();
        *c.current.lock().unwrap() = device(&c.name, c.cntlid, ns);
        c.gone.store(false, Ordering::Release);
    } else if dev.faults().ana_state(grp) != Some(AnaState::Optimized) {
        dev.set_ana_state(grp, AnaState::Optimized).unwrap();
        c.ana_epoch += 1;
    }
    c.heal_at = None;
}

/// Per-path counters of a lane's channel.
fn path_stats(lane: &Lane) -> Vec<nvme_bdev::mpath::PathIoStats> {
    match &lane.ch {
        Channel::Mpath(c) => c.path_stats(),
        _ => Vec::new(),
    }
}

/// Runs the lanes' traffic for `polls` rounds (issuing the next I/O of each slot when
/// `more`), each lane's call watched by the oracle.
fn traffic(
    lanes: &mut [Lane],
    oracle: &mut Oracle,
    mp: &nvme_bdev::Multipath<nvme_bdev::NvmeQueue>,
    ctrls: &[Ctrl],
    polls: usize,
    more: bool,
) {
    let epoch = |name: &str| {
        ctrls
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.ana_epoch)
    };
    for _ in 0..polls {
        let mut n = 0;
        for lane in lanes.iter_mut() {
            let before = oracle.before(mp);
            n += lane.poll(more);
            oracle.after(lane.index, before, &path_stats(lane), mp, &epoch);
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Runs `seeds` one after the other: their totals, and the findings of those that
/// failed (with the command that replays each).
fn run_seeds(seeds: impl Iterator<Item = u64>, verbose: bool) -> (Totals, Vec<String>) {
    let mut total = Totals::default();
    let mut findings = Vec::new();
    for seed in seeds {
        let (o, e) = run_seed(seed, verbose);
        total.add(&o);
        if !e.is_empty() {
            eprintln!("seed {seed} failed (the run goes on)");
            findings.push(format!(
                "seed {seed} failed:\n  {e}\nreplay: NVME_SIM_SEED={seed} cargo test --release \
                 -p nvme-bdev --test simulator -- --nocapture"
            ));
        }
    }
    (total, findings)
}

/// Seeds a plain `cargo test` runs (CI): about five minutes on two cores,
/// eight at once.
const DEFAULT_SEEDS: u64 = 300;
/// Seeds run at once in each of the [`SHARDS`] tests unless `NVME_SIM_JOBS` says: a
/// seed waits more than it computes (1.8 s of CPU for 1 to 14 s of wall time), so
/// eight at once keep two cores busy without starving the device threads.
const DEFAULT_JOBS: u64 = 2;
/// Tests the seeds are spread over: libtest runs them on parallel threads, and a
/// seed spends most of its time waiting (timeouts, reconnect delays).
const SHARDS: u64 = 4;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a whole number")),
    )
}

/// The seeds to run: `NVME_SIM_SEEDS=N` is 1..=N, `NVME_SIM_SEEDS=A-B` is A..=B
/// (a long run in pieces); default 1..=DEFAULT_SEEDS.
fn seed_range() -> (u64, u64) {
    let Ok(v) = std::env::var("NVME_SIM_SEEDS") else {
        return (1, DEFAULT_SEEDS);
    };
    let bad =
        || -> ! { panic!("NVME_SIM_SEEDS={v}: expected N (seeds 1..=N) or A-B (seeds A..=B)") };
    match v.split_once('-') {
        None => (1, v.parse().unwrap_or_else(|_| bad())),
        Some((a, b)) => (
            a.parse().unwrap_or_else(|_| bad()),
            b.parse().unwrap_or_else(|_| bad()),
        ),
    }
}

/// The totals of the shards finished so far, and how many finished.
static ALL_SHARDS: Mutex<(Totals, u64)> = Mutex::new((
    Totals {
        seeds: 0,
        failed_seeds: Vec::new(),
        injected: [0; FAULTS.len()],
        completed: 0,
        checked_reads: 0,
        errors: 0,
        lost: 0,
        duplicated: 0,
        corrupted: 0,
        longest_pause: (Duration::ZERO, 0),
        judged_calls: 0,
        choice_findings: 0,
        unexplained: 0,
        timeouts: 0,
        resets: 0,
        failures: 0,
        failovers: 0,
    },
    0,
));

/// Runs shard `shard`: seeds 1..=N with `seed % SHARDS == shard`, on
/// `NVME_SIM_JOBS` threads; or, with `NVME_SIM_SEED`, that seed alone (shard 0).
fn run_shard(shard: u64) {
    let t0 = Instant::now();
    let (total, findings) = if let Some(seed) = env_u64("NVME_SIM_SEED") {
        if shard != 0 {
            return;
        }
        run_seeds(std::iter::once(seed), true)
    } else {
        let (first, last) = seed_range();
        let jobs = env_u64("NVME_SIM_JOBS").unwrap_or(DEFAULT_JOBS).max(1);
        let runs: Vec<_> = (0..jobs)
            .map(|job| {
                std::thread::spawn(move || {
                    run_seeds(
                        (first..=last)
                            .filter(move |s| s % SHARDS == shard && s / SHARDS % jobs == job),
                        false,
                    )
                })
            })
            .collect();
        let mut total = Totals::default();
        let mut findings = Vec::new();
        for r in runs {
            let (t, f) = r.join().expect("a simulator thread panicked");
            total.add(&t);
            findings.extend(f);
        }
        (total, findings)
    };
    eprintln!(
        "{}",
        total.table(&format!("simulator shard {shard}"), t0.elapsed())
    );
    {
        let mut all = ALL_SHARDS.lock().unwrap_or_else(|e| e.into_inner());
        all.0.add(&total);
        all.1 += 1;
        if all.1 == SHARDS && env_u64("NVME_SIM_SEED").is_none() {
            let wall = START.get().map_or(t0.elapsed(), |s| s.elapsed());
            show(&all.0.table("simulator, all shards", wall));
        }
    }
    assert!(
        findings.is_empty(),
        "{} seeds failed:\n{}",
        findings.len(),
        findings.join("\n")
    );
}

/// Prints `text` on stderr past libtest's capture (`eprintln!` is captured): the
/// totals show in a plain `cargo test`, as CI runs it.
fn show(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{text}\n").as_bytes());
}

/// When the first shard started (the run's wall time).
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

#[test]
fn simulated_faults_shard_0() {
    START.get_or_init(Instant::now);
    run_shard(0);
}

#[test]
fn simulated_faults_shard_1() {
    START.get_or_init(Instant::now);
    run_shard(1);
}

#[test]
fn simulated_faults_shard_2() {
    START.get_or_init(Instant::now);
    run_shard(2);
}

#[test]
fn simulated_faults_shard_3() {
    START.get_or_init(Instant::now);
    run_shard(3);
}
