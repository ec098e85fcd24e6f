// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Guest-side scenario for the multipath bdev's end-to-end tests, on the `mpath`
//! topology (one subsystem, controllers c0 at 0000:01:00.0 and c1 at 0000:02:00.0
//! sharing namespace 1):
//!
//! ```text
//! nvme-e2e-mpath POLICY [--resets N] [--unplug QOM_ID [--replug [--hotplug [--add QOM_ID]]]]
//! ```
//!
//! Both controllers are attached to one block layer and become the two paths of one
//! multipath bdev (POLICY: active-passive, round-robin, least-queue-depth). A traffic
//! thread keeps 32 I/Os in flight through a channel: each slot writes its own block
//! range with a fresh pattern, reads it back and compares, over and over. Meanwhile
//! controller A (0000:01:00.0) is reset N times through the layer's `request_reset`,
//! then (with `--unplug c0|c1`) controller A (c0) or B (c1) is hot-unplugged through
//! QMP `device_del` while traffic runs. Every I/O must complete exactly once,
//! successfully, with the data intact; traffic must carry on over the surviving path.
//! With `--replug`, the unplugged controller is plugged back (QMP `device_add` on the
//! same root port, then `nvme-setup bind` moves it to vfio-pci, as a udev rule would):
//! the block layer's reconnect must take it back as a path of the same bdev (over
//! VFIO, the real device), and under an active-active policy it must carry I/O again.
//! With `--hotplug`, nothing is bound by hand: `nvme-setup keep-vfio on` runs first
//! (the kernel binds controllers to vfio-pci as they appear) and the layer's hot-plug
//! scan is on (every 200 ms), so the returning controller is noticed and reconnected
//! at once; `--add c2` then plugs a new controller of the subsystem on the spare root
//! port rp2 (0000:03:00.0), which the hot-plug must attach as a third path of the
//! bdev, named by its address, carrying I/O (active-active policies).
//!
//! The scenario checks its premises: each phase that takes a path with I/O in flight
//! away (the resets of A, the unplug) must fail I/O over to the other path (failovers
//! counted per phase; under active-passive that means unplugging the active path,
//! c0), the channel must count no stray completions, and no submit may take 1 s or
//! more (a submit that waited for a reset its own thread must acknowledge would take
//! the driver's 2 s acknowledgement limit). Printed: per phase the completions,
//! failovers, longest pause between completions and longest submit call.
//!
//! Prints `PASS mpath-POLICY` and exits 0, or says what failed and exits 1. Every
//! wait has a deadline.

mod plug;
mod traffic;

use nvme_bdev::layer::{vfio_connector, VfioHotplug};
use nvme_bdev::{BlockLayer, LayerOptions, MpathOptions, Policy};
use nvme_driver::QpairOptions;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use traffic::{Report, Traffic};

type R<T> = Result<T, String>;

const A: &str = "0000:01:00.0";
const B: &str = "0000:02:00.0";
const SLOTS: usize = 32;
const BLOCKS_PER_IO: u32 = 8;
/// Phases: warm-up, resets of A, the unplug, the replug (with `--replug`), after.
const PHASES: [&str; 5] = ["warm-up", "reset", "unplug", "replug", "after"];
const AFTER: usize = 4;
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// ctrl_loss_timeout without `--replug`: an unplugged path is removed after it.
const CTRL_LOSS_MS: i64 = 4_000;
/// No submit call may take this long (see the module comment).
const SUBMIT_LIMIT_NS: u64 = 1_000_000_000;

fn us(ns: u64) -> String {
    format!("{:.1} us", ns as f64 / 1000.0)
}

/// Waits, polling `cond` every 2 ms, at most `deadline`; returns the time it took.
fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> R<Duration> {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > deadline {
            return Err(format!("{what}: not within {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t.elapsed())
}

/// How the unplugged controller comes back, and what else arrives.
#[derive(Debug, Default, Clone, Copy)]
struct Returns<'a> {
    /// Plugged back on its root port.
    replug: bool,
    /// Bound by the kernel and noticed by the layer's hot-plug (else bound by hand).
    hotplug: bool,
    /// A new controller (this QOM id) added on the spare root port.
    add: Option<&'a str>,
}

/// The hot-plug scan period of `--hotplug`.
const HOTPLUG_PERIOD_MS: u64 = 200;

fn scenario(policy_name: &str, resets: u64, unplug: Option<&str>, ret: Returns) -> R<()> {
    let replug = ret.replug;
    let policy: Policy = policy_name.parse().map_err(|e| format!("{e}"))?;
    let tag = format!("mpath {policy_name}");
    // The controller the unplug takes away, and the one that must carry on.
    let (gone, survivor) = match unplug {
        None | Some("c1") => (B, A),
        Some("c0") => (A, B),
        Some(other) => return Err(format!("--unplug {other}: c0 or c1")),
    };
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy,
            reconnect_delay_ms: 1_000,
            fast_io_fail_timeout_ms: 3_000,
            // With --replug the unplugged path must still be there when its controller
            // comes back (reconnect, not a new path); without, it must go.
            ctrl_loss_timeout_ms: if replug { 60_000 } else { CTRL_LOSS_MS },
            ..MpathOptions::default()
        },
        qpair: QpairOptions {
            entries: 64,
            pending_max: 1024,
            timeout_ms: 10_000,
        },
        admin_poll_us: 1_000,
        ..LayerOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let mut mp_name = None;
    if ret.hotplug {
        let said = plug::nvme_setup(&["keep-vfio", "on"])?;
        println!("{tag}: nvme-setup keep-vfio on: {}", said.trim());
    }
    for bdf in [A, B] {
        let names = layer
            .attach(bdf, vfio_connector(bdf))
            .map_err(|e| format!("attaching {bdf}: {e}"))?;
        println!("attached {bdf}: bdevs {}", names.join(", "));
        // Names come in pairs: the namespace bdev, then the multipath bdev.
        mp_name = names.get(1).cloned();
    }
    let mp_name = mp_name.ok_or("no multipath bdev")?;
    if ret.hotplug {
        layer
            .enable_hotplug(Arc::new(VfioHotplug), HOTPLUG_PERIOD_MS)
            .map_err(|e| e.to_string())?;
    }
    let bdev = layer.open(&mp_name).map_err(|e| e.to_string())?;
    let mp = bdev.multipath().ok_or("not a multipath bdev")?.clone();
    let paths = mp.paths();
    println!(
        "{tag}: bdev {mp_name}, {} blocks of {} bytes, paths {}",
        bdev.num_blocks(),
        bdev.block_size(),
        paths
            .iter()
            .map(|p| format!("{} ({:?})", p.name, p.state.ana))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if paths.len() != 2 {
        return Err(format!("expected 2 paths, found {}", paths.len()));
    }
    let len = BLOCKS_PER_IO as usize * bdev.block_size() as usize;
    let mut wbufs = Vec::new();
    let mut rbufs = Vec::new();
    for _ in 0..SLOTS {
        wbufs.push(layer.alloc_buffer(len).map_err(|e| e.to_string())?);
        rbufs.push(layer.alloc_buffer(len).map_err(|e| e.to_string())?);
    }
    let phase = Arc::new(AtomicUsize::new(0));
    let phase_seen = Arc::new(AtomicUsize::new(0));
    let traffic = Traffic {
        ch: bdev.channel().map_err(|e| e.to_string())?,
        wbufs,
        rbufs,
        out: vec![u64::MAX; SLOTS],
        seq: vec![0; SLOTS],
        reading: vec![false; SLOTS],
        r: Report::default(),
        phase: phase.clone(),
        phase_seen: phase_seen.clone(),
        names: paths.iter().map(|p| (p.id, p.name.clone())).collect(),
        seen: Vec::new(),
        failovers_at_phase: 0,
        mp: mp.clone(),
        at_after: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let (s, p) = (stop.clone(), progress.clone());
    let h = std::thread::Builder::new()
        .name("traffic".into())
        .spawn(move || traffic.run(&s, &p))
        .map_err(|e| e.to_string())?;
    let stop_on_err = |e: String| {
        stop.store(true, Ordering::Release);
        e
    };
    let moving = |what: &str| -> R<()> {
        let before = progress.load(Ordering::Relaxed);
        wait_for(
            &format!("traffic to flow {what} (on {survivor} after an unplug)"),
            Duration::from_secs(20),
            || progress.load(Ordering::Relaxed) > before + SLOTS as u64 || h.is_finished(),
        )
        .map(|_| ())
    };
    // A phase begins once the traffic thread counts in it, so what the main thread
    // does next (a reset, the unplug) is counted in that phase.
    let enter = |k: usize| -> R<()> {
        phase.store(k, Ordering::Release);
        wait_for(
            &format!("traffic to enter phase {}", PHASES[k]),
            Duration::from_secs(10),
            || phase_seen.load(Ordering::Acquire) == k || h.is_finished(),
        )
        .map(|_| ())
    };
    let result = (|| -> R<()> {
        moving("at the start")?;
        std::thread::sleep(Duration::from_millis(500));
        enter(1)?;
        // A reset fails I/O over only if it catches I/O in flight on A: the device
        // may finish everything it holds between the path leaving the path set and
        // the queue deletion (timing on an emulator). So after the `resets` asked for,
        // reset again (bounded) until one has caught some: the phase's premise below
        // then holds unless no reset ever fails I/O over, which is a bug.
        let failovers_from_a = || {
            mp.paths()
                .iter()
                .filter(|p| p.name == A)
                .map(|p| p.failovers)
                .sum::<u64>()
        };
        let before_resets = failovers_from_a();
        let most_resets = resets * 4;
        let mut i = 0;
        while i < resets || (i < most_resets && failovers_from_a() == before_resets) {
            if i == resets {
                println!("{tag}: {resets} resets caught no I/O in flight on {A}; resetting again (at most {most_resets})");
            }
            let t = Instant::now();
            layer.request_reset(A).map_err(|e| e.to_string())?;
            wait_for(
                &format!("reset {i} of {A}"),
                Duration::from_secs(30),
                || layer.controller_counts(A).is_some_and(|c| c.0 > i),
            )?;
            let took = t.elapsed();
            // The path comes back: wait until it is usable again, then let traffic run.
            wait_for(
                &format!("{A} back in the path set"),
                Duration::from_secs(10),
                || mp.paths().iter().any(|p| p.name == A && p.state.usable()),
            )?;
            println!("{tag}: reset {i} of {A} done in {} ms", took.as_millis());
            moving(&format!("after reset {i}"))?;
            std::thread::sleep(Duration::from_millis(200));
            i += 1;
        }
        if let Some(id) = unplug {
            enter(2)?;
            println!("{}", e2e::device_del_line(id));
            let failed = wait_for(
                &format!("{gone} to leave the path set"),
                Duration::from_secs(40),
                || {
                    !mp.paths()
                        .iter()
                        .any(|p| p.name == gone && p.state.usable())
                },
            )?;
            println!(
                "{tag}: unplug: path {gone} unusable {} ms after device_del",
                failed.as_millis()
            );
            moving("after the unplug")?;
            if !replug {
                let removed = wait_for(
                    &format!("{gone}'s path to be removed"),
                    Duration::from_secs(30),
                    || !mp.paths().iter().any(|p| p.name == gone),
                )?;
                println!(
                    "{tag}: unplug: path {gone} removed {} ms after device_del (ctrl_loss_timeout {} s)",
                    (failed + removed).as_millis(),
                    CTRL_LOSS_MS / 1000
                );
            }
            let dev = format!("/sys/bus/pci/devices/{gone}");
            match wait_for(
                &format!("{gone} to leave the PCI bus"),
                Duration::from_secs(30),
                || !std::path::Path::new(&dev).exists(),
            ) {
                Ok(d) => println!(
                    "{tag}: unplug: {gone} left the PCI bus ({} ms later)",
                    d.as_millis()
                ),
                Err(e) => return Err(format!("{e}: the device was not let go")),
            }
            if replug {
                enter(3)?;
                plug::plug_back(&tag, &layer, &mp, id, gone, !ret.hotplug)?;
                if let Some(new_id) = ret.add {
                    plug::add_new(&tag, &mp, new_id)?;
                }
            }
            enter(AFTER)?;
            moving("after the unplug (and replug)")?;
            std::thread::sleep(Duration::from_millis(if replug { 1_500 } else { 500 }));
        } else {
            enter(AFTER)?;
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    })()
    .map_err(stop_on_err);
    stop.store(true, Ordering::Release);
    let report = h
        .join()
        .map_err(|_| "the traffic thread panicked".to_string())?;
    let summary = mp
        .paths()
        .iter()
        .map(|p| format!("{} {:?} failovers {}", p.name, p.state.ana, p.failovers))
        .collect::<Vec<_>>()
        .join("; ");
    let (resets_done, reconnects) = layer.controller_counts(A).unwrap_or((0, 0));
    let layer_counts_of_gone = layer.controller_counts(gone).unwrap_or((0, 0));
    let hotplug = layer.hotplug_stats();
    let publish = mp.longest_publish_ns();
    drop(bdev);
    drop(mp);
    layer.shutdown();
    result?;
    let r = report?;
    for (k, name) in PHASES.iter().enumerate() {
        if r.phase_completions[k] == 0 && k != 0 {
            continue;
        }
        println!(
            "{tag}: phase {name}: {} completions, {} failovers, longest completion pause {}, longest submit {}",
            r.phase_completions[k],
            r.phase_failovers[k],
            us(r.longest_gap_ns[k]),
            us(r.longest_submit_ns[k])
        );
    }
    println!(
        "{tag}: per path: {}; channel failovers {}, retry ring high water {}; {summary}; {A} resets {resets_done}, reconnects {reconnects}; longest path-set publication {}",
        r.paths
            .iter()
            .map(|(n, s, e)| format!("{n} {s} I/Os ({e} path errors)"))
            .collect::<Vec<_>>()
            .join(", "),
        r.failovers,
        r.queued_high_water,
        us(publish)
    );
    println!(
        "{tag}: {} I/Os submitted, {} completed exactly once, {} errors, {} duplicates, {} stray, {} left over, {} mismatches",
        r.submitted,
        r.completed,
        r.errors,
        r.duplicates,
        r.stray_completions,
        r.leftover,
        r.mismatches
    );
    if r.errors > 0 {
        return Err(format!(
            "{} I/Os failed; first: {}",
            r.errors,
            r.first_error.unwrap_or_default()
        ));
    }
    if r.mismatches > 0 {
        return Err(format!(
            "{} reads differed; first: {}",
            r.mismatches,
            r.first_mismatch.unwrap_or_default()
        ));
    }
    if r.duplicates > 0
        || r.stray_completions > 0
        || r.leftover > 0
        || r.submitted != r.completed
        || r.refused > 0
    {
        return Err(format!(
            "accounting: {} submitted, {} completed, {} duplicates, {} stray completions (dropped by the channel), {} left over, {} refused",
            r.submitted, r.completed, r.duplicates, r.stray_completions, r.leftover, r.refused
        ));
    }
    if resets_done < resets {
        return Err(format!("only {resets_done} of {resets} resets done"));
    }
    if unplug.is_some() && r.phase_completions[AFTER] == 0 {
        return Err("no I/O completed after the unplug".into());
    }
    if ret.hotplug {
        println!(
            "{tag}: hot-plug: {} scans, {} appeared, {} attached, {} reconnects brought forward, {} failed attach attempts",
            hotplug.scans,
            hotplug.appeared,
            hotplug.attached,
            hotplug.reconnects_prompted,
            hotplug.attach_failures
        );
        if hotplug.reconnects_prompted == 0 {
            return Err(format!("the hot-plug scan never noticed {gone} come back"));
        }
    }
    if ret.add.is_some() {
        let on_added: u64 = r
            .after_per_path
            .iter()
            .filter(|(n, _)| n == plug::ADDED)
            .map(|(_, k)| k)
            .sum();
        println!(
            "{tag}: hot-add: {} attached by the hot-plug scan, carried {on_added} I/Os",
            plug::ADDED
        );
        if hotplug.attached == 0 {
            return Err(format!("{} was never attached", plug::ADDED));
        }
        if policy != Policy::ActivePassive && on_added == 0 {
            return Err(format!(
                "{} joined but carried no I/O under {policy_name}",
                plug::ADDED
            ));
        }
    }
    if replug {
        let (_, gone_reconnects) = layer_counts_of_gone;
        let on_gone = r
            .after_per_path
            .iter()
            .filter(|(n, _)| n == gone)
            .map(|(_, k)| k)
            .sum::<u64>();
        println!(
            "{tag}: replug: {gone} reconnected {gone_reconnects} time(s), carried {on_gone} I/Os after it came back"
        );
        if gone_reconnects == 0 {
            return Err(format!("{gone} came back but was never reconnected"));
        }
        if policy != Policy::ActivePassive && on_gone == 0 {
            return Err(format!(
                "{gone} reconnected but carried no I/O afterwards under {policy_name}"
            ));
        }
    }
    // The premises: nothing fails over before a path is touched; taking a path with
    // I/O in flight away fails that I/O over.
    if r.phase_failovers[0] > 0 {
        return Err(format!(
            "{} failovers in the warm-up, before any reset or unplug",
            r.phase_failovers[0]
        ));
    }
    if resets > 0 && r.phase_failovers[1] == 0 {
        return Err(format!(
            "{resets_done} resets of {A} failed no I/O over: none caught I/O in flight on {A}"
        ));
    }
    if unplug.is_some() && r.phase_failovers[2] == 0 {
        return Err(format!(
            "the unplug of {gone} failed no I/O over: it was not carrying I/O (the passive path?)"
        ));
    }
    if let Some((k, ns)) = r
        .longest_submit_ns
        .iter()
        .enumerate()
        .find(|(_, &ns)| ns >= SUBMIT_LIMIT_NS)
    {
        return Err(format!(
            "a submit took {} in phase {} (limit {}): it waited",
            us(*ns),
            PHASES[k],
            us(SUBMIT_LIMIT_NS)
        ));
    }
    println!("{tag}: nothing lost, data intact");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!(
            "usage: nvme-e2e-mpath active-passive|round-robin|least-queue-depth [--resets N] [--unplug QOM_ID [--replug [--hotplug [--add QOM_ID]]]]"
        );
        ExitCode::from(2)
    };
    let Some(policy) = args.first() else {
        return usage();
    };
    let mut resets = 5u64;
    let mut unplug = None;
    let mut ret = Returns::default();
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--replug" || args[i] == "--hotplug" {
            if args[i] == "--replug" {
                ret.replug = true;
            } else {
                ret.hotplug = true;
            }
            i += 1;
            continue;
        }
        match (args[i].as_str(), args.get(i + 1)) {
            ("--add", Some(id)) => ret.add = Some(id.as_str()),
            ("--resets", Some(n)) => match n.parse() {
                Ok(n) => resets = n,
                Err(_) => return usage(),
            },
            ("--unplug", Some(id)) => unplug = Some(id.clone()),
            _ => return usage(),
        }
        i += 2;
    }
    if (ret.replug && unplug.is_none())
        || (ret.hotplug && !ret.replug)
        || (ret.add.is_some() && !ret.hotplug)
    {
        return usage();
    }
    match scenario(policy, resets, unplug.as_deref(), ret) {
        Ok(()) => {
            println!("PASS mpath-{policy}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL mpath-{policy}: {e}");
            ExitCode::FAILURE
        }
    }
}
