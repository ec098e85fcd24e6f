// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The chaos soak's guest side, on qemu/run's `mpath` topology with `--backing
//! blkdebug` (controllers c0 at 0000:01:00.0 and c1 at 0000:02:00.0 sharing
//! namespace 1, whose disk sits behind QEMU's blkdebug driver):
//!
//! ```text
//! nvme-e2e-chaos [--seed N] [--seconds N] [--threads N] [--depth N]
//!                [--pause-limit-ms N] [--no-media] [--schedule-only]
//! ```
//!
//! Both controllers become the two paths of one multipath bdev (round-robin). One
//! traffic thread per vCPU (`--threads`, default 2) keeps `--depth` (16) random 4 KiB
//! reads and writes in flight over its own half of the namespace through its own
//! channel, checking every read against a shadow of what it wrote. Meanwhile a
//! schedule drawn from the seed fires faults one after the other (see `schedule.rs`):
//! a controller unplugged over QMP and plugged back (then bound to vfio-pci with
//! `nvme-setup bind`; one controller is gone at a time, well inside the 60 s
//! `ctrl_loss_timeout`), a controller reset through the block layer, and windows in
//! which QEMU fails every read or every write of the disk (HMP `qemu-io` on the
//! blkdebug node switches its rules; the device returns Unrecovered Read Error or
//! Write Fault). An I/O the application sees fail waits until the window is over and
//! goes again. After the last fault traffic runs 8 s more; then every chunk of the
//! namespace is read back and compared with the shadow.
//!
//! Prints the schedule, each fault as it is done, I/Os per path every 5 s, and a
//! summary; `PASS chaos seed N` and exit 0 when nothing was lost, completed twice or
//! corrupted, every failed I/O is explained by a media-error window it overlapped
//! (with the matching status), the longest pause in completions is under the limit,
//! and both paths carried I/O after the faults. Otherwise `FAIL chaos: ...`, exit 1.
//! Every wait has a deadline. `--schedule-only` prints the schedule and exits.

mod faults;
mod schedule;
mod traffic;

use nvme_bdev::{BdevIo, BlockLayer, LayerOptions, MpathOptions, Policy};
use nvme_driver::vfio::VfioBus;
use nvme_driver::{clock, QpairOptions};
use schedule::{Fault, CONTROLLERS};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use traffic::{Report, Shared, Traffic, CHUNK};

type R<T> = Result<T, String>;

struct Args {
    seed: u64,
    seconds: u64,
    threads: usize,
    depth: usize,
    pause_limit_ms: u64,
    media: bool,
    schedule_only: bool,
}

const USAGE: &str = "usage: nvme-e2e-chaos [--seed N] [--seconds N] [--threads N] [--depth N] [--pause-limit-ms N] [--no-media] [--schedule-only]";

fn parse_args() -> R<Args> {
    let mut a = Args {
        seed: 1,
        seconds: 120,
        threads: 2,
        depth: 16,
        pause_limit_ms: 2_000,
        media: true,
        schedule_only: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        match flag {
            "--no-media" => a.media = false,
            "--schedule-only" => a.schedule_only = true,
            "--seed" | "--seconds" | "--threads" | "--depth" | "--pause-limit-ms" => {
                let v = argv
                    .get(i + 1)
                    .ok_or_else(|| format!("{flag} needs a number; {USAGE}"))?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("{flag} {v:?}: not a number; {USAGE}"))?;
                match flag {
                    "--seed" => a.seed = n,
                    "--seconds" => a.seconds = n,
                    "--threads" => a.threads = n as usize,
                    "--depth" => a.depth = n as usize,
                    _ => a.pause_limit_ms = n,
                }
                i += 1;
            }
            _ => return Err(format!("unknown argument {flag:?}; {USAGE}")),
        }
        i += 1;
    }
    if a.threads == 0 || a.depth == 0 || a.depth >= 1 << 20 {
        return Err(format!(
            "--threads and --depth must be at least 1 (depth below 2^20); {USAGE}"
        ));
    }
    if a.seconds * 1000 < schedule::AFTER_MS + 10_000 {
        return Err(format!(
            "--seconds {}: at least {} (faults, then {} s of traffic after them)",
            a.seconds,
            schedule::AFTER_MS / 1000 + 10,
            schedule::AFTER_MS / 1000
        ));
    }
    Ok(a)
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn per_path_line(now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> String {
    now.iter()
        .map(|(name, n)| format!("{name} +{}", n - before.get(name).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the whole namespace back and compares every chunk with its shadow: the
/// traffic's (`gens[chunk]`, generation 0 for chunks never written: zeroes), and for
/// the probe chunk [`faults::PROBE_SHADOW`]. Returns the chunks checked and a
/// description of each mismatch (at most 10 kept).
fn scan(bdev: &nvme_bdev::Bdev, layer: &BlockLayer, gens: &[u32]) -> R<(u64, u64, Vec<String>)> {
    const PER_IO: usize = 16; // chunks per read: 64 KiB
    const DEPTH: usize = 8;
    let mut ch = bdev.channel().map_err(|e| e.to_string())?;
    let mut bufs = (0..DEPTH)
        .map(|_| layer.alloc_buffer(CHUNK * PER_IO))
        .collect::<nvme_bdev::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    let chunks = gens.len() as u64;
    let mut next = 0u64;
    let mut first_of = [u64::MAX; DEPTH];
    let mut checked = 0u64;
    let mut bad = 0u64;
    let mut notes = Vec::new();
    let mut data = vec![0u8; CHUNK * PER_IO];
    let t = Instant::now();
    let mut in_flight = 0;
    loop {
        for (s, first) in first_of.iter_mut().enumerate() {
            if *first == u64::MAX && next < chunks {
                let n = (chunks - next).min(PER_IO as u64);
                let lba = next * (CHUNK as u64 / 512);
                let nlb = (n as usize * CHUNK / 512) as u32;
                let slice = bufs[s]
                    .slice(0, n as usize * CHUNK)
                    .map_err(|e| e.to_string())?;
                ch.submit(BdevIo::read(lba, nlb, slice, s as u64))
                    .map_err(|(e, _)| format!("scan read refused: {e}"))?;
                *first = next;
                next += n;
                in_flight += 1;
            }
        }
        ch.flush();
        if in_flight == 0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            return Err("the final scan did not finish within 300 s".into());
        }
        let mut done = Vec::new();
        ch.poll(&mut |c| done.push(c));
        for c in done {
            let s = c.ctx as usize;
            let first = first_of[s];
            first_of[s] = u64::MAX;
            in_flight -= 1;
            if !c.status.is_success() {
                return Err(format!(
                    "the final scan's read of chunk {first} failed: {}",
                    c.status
                ));
            }
            let n = (chunks - first).min(PER_IO as u64) as usize;
            bufs[s]
                .read_at(0, &mut data[..n * CHUNK])
                .map_err(|e| e.to_string())?;
            for k in 0..n {
                let chunk = first + k as u64;
                checked += 1;
                let got = &data[k * CHUNK..(k + 1) * CHUNK];
                if chunk == traffic::PROBE_CHUNK {
                    // The fault machinery's: no traffic; the blkdebug switches and the
                    // write probes write it, all zeroes (its own shadow).
                    if let Some((off, found)) = faults::probe_difference(got) {
                        bad += 1;
                        if notes.len() < 10 {
                            notes.push(format!(
                                "chunk {chunk} (LBA 0, the probe chunk) byte {off}: expected {:#04x} (its shadow: zeroes), found {found:#04x}",
                                faults::PROBE_SHADOW
                            ));
                        }
                    }
                    continue;
                }
                let gen = gens[chunk as usize];
                if let Some((off, want, found)) = traffic::first_difference(chunk, gen, got) {
                    bad += 1;
                    if notes.len() < 10 {
                        notes.push(format!(
                            "chunk {chunk} (LBA {}) byte {off}: expected {want:#018x} (generation {gen}), found {found:#018x}",
                            chunk * 8
                        ));
                    }
                }
            }
        }
    }
    // The buffers outlive every read (the loop ended with none in flight).
    bufs.clear();
    Ok((checked, bad, notes))
}

fn run(a: &Args) -> R<()> {
    let run_ms = a.seconds * 1000;
    let plan = schedule::plan(a.seed, run_ms, a.media);
    println!(
        "chaos: seed {}, {} s, {} traffic threads x {} I/Os of {} KiB (random read/write), {} faults planned:",
        a.seed,
        a.seconds,
        a.threads,
        a.depth,
        CHUNK / 1024,
        plan.len()
    );
    for (k, p) in plan.iter().enumerate() {
        println!(
            "chaos: plan {k:>2}: t={:>6.1}s {}",
            p.at_ms as f64 / 1000.0,
            p.fault
        );
    }
    if a.schedule_only {
        return Ok(());
    }
    if a.media && std::env::var("NVME_QEMU_BACKING").ok().as_deref() != Some("blkdebug") {
        return Err("media-error faults need the disk behind blkdebug: run under qemu/run --topology mpath --backing blkdebug (or pass --no-media)".into());
    }
    let layer = Arc::new(
        BlockLayer::new(LayerOptions {
            mpath: MpathOptions {
                policy: Policy::RoundRobin,
                reconnect_delay_ms: 1_000,
                fast_io_fail_timeout_ms: 5_000,
                ctrl_loss_timeout_ms: 60_000,
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
        .map_err(|e| e.to_string())?,
    );
    let mut mp_name = None;
    for (_, _, bdf) in CONTROLLERS {
        let b = bdf.to_string();
        let names = layer
            .attach(
                bdf,
                Arc::new(move || VfioBus::open(&b).map(|x| x as Arc<dyn nvme_driver::bus::Bus>)),
            )
            .map_err(|e| format!("attaching {bdf}: {e}"))?;
        // The namespace bdev, then the multipath bdev.
        mp_name = names.get(1).cloned();
    }
    let mp_name = mp_name.ok_or("no multipath bdev: are both controllers of one subsystem?")?;
    let bdev = layer.open(&mp_name).map_err(|e| e.to_string())?;
    let mp = bdev.multipath().ok_or("not a multipath bdev")?.clone();
    if bdev.block_size() != 512 {
        return Err(format!(
            "block size {}: the soak expects 512",
            bdev.block_size()
        ));
    }
    let chunks = bdev.num_blocks() * 512 / CHUNK as u64;
    println!(
        "chaos: bdev {mp_name}: {} chunks of 4 KiB ({} MiB), paths {}",
        chunks,
        (chunks * CHUNK as u64) >> 20,
        mp.paths()
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut probe_buf = layer.alloc_buffer(CHUNK).map_err(|e| e.to_string())?;

    let shared = Arc::new(Shared::default());
    let origin = Instant::now();
    let start = clock::ticks();
    let mut handles = Vec::new();
    for thread in 0..a.threads {
        let t = Traffic {
            thread,
            threads: a.threads,
            ch: bdev.channel().map_err(|e| e.to_string())?,
            bufs: Traffic::buffers(&layer, a.depth).map_err(|e| e.to_string())?,
            chunks,
            seed: a.seed,
            shared: shared.clone(),
            mp: mp.clone(),
            start,
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("traffic{thread}"))
                .spawn(move || t.run())
                .map_err(|e| e.to_string())?,
        );
    }
    // I/Os per path every 5 s, and the controllers' resets and reconnects so far
    // (those the schedule did not ask for are the driver's own: a timeout).
    let reporter = {
        let shared = shared.clone();
        let layer = layer.clone();
        std::thread::spawn(move || {
            let mut before = BTreeMap::new();
            let mut k = 0u64;
            while !shared.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                if origin.elapsed() >= Duration::from_secs(5 * (k + 1)) {
                    k += 1;
                    let now = shared.per_path();
                    let counts = CONTROLLERS
                        .iter()
                        .map(|(id, _, bdf)| {
                            let (resets, reconnects) =
                                layer.controller_counts(bdf).unwrap_or((0, 0));
                            format!("{id} {resets}/{reconnects}")
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    println!(
                        "chaos: t={:>4}s I/Os per path in the last 5 s: {} (in flight now: {}); {} completed in all; resets/reconnects {counts}",
                        5 * k,
                        per_path_line(&now, &before),
                        shared
                            .in_flight()
                            .iter()
                            .map(|(n, k)| format!("{n} {k}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        shared.completed.load(Ordering::Relaxed)
                    );
                    before = now;
                }
            }
        })
    };
    let stop = |shared: &Shared| shared.stop.store(true, Ordering::Release);

    // The faults, one after the other.
    let mut windows: Vec<(bool, u64, u64)> = Vec::new();
    let mut done_per_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let faults = (|| -> R<()> {
        for (k, p) in plan.iter().enumerate() {
            let at = Duration::from_millis(p.at_ms);
            if let Some(wait) = at.checked_sub(origin.elapsed()) {
                std::thread::sleep(wait);
            }
            if handles.iter().any(|h| h.is_finished()) {
                return Err("a traffic thread ended early".into());
            }
            let began = origin.elapsed().as_secs_f64();
            let what = match p.fault {
                Fault::Unplug { ctrl, down_ms } => {
                    faults::unplug_replug(&layer, &mp, ctrl, down_ms)
                }
                Fault::Reset { ctrl } => faults::reset(&layer, &mp, ctrl),
                Fault::ReadErrors { ms } | Fault::WriteErrors { ms } => {
                    let write = matches!(p.fault, Fault::WriteErrors { .. });
                    shared.media_window.store(true, Ordering::Release);
                    let r = faults::media_window(&bdev, &mut probe_buf, write, ms, start);
                    shared.media_window.store(false, Ordering::Release);
                    r.map(|(opened, closed, note)| {
                        windows.push((write, opened, closed));
                        note
                    })
                }
            }
            .map_err(|e| format!("fault {k} ({}): {e}", p.fault))?;
            *done_per_kind.entry(p.fault.kind()).or_insert(0) += 1;
            println!("chaos: t={began:>6.1}s fault {k:>2}: {}: {what}", p.fault);
        }
        Ok(())
    })();
    let mut after = BTreeMap::new();
    if faults.is_ok() {
        // Traffic after the faults: both paths must carry some.
        let before = shared.per_path();
        std::thread::sleep(Duration::from_millis(schedule::AFTER_MS));
        after = shared.per_path();
        for (name, n) in after.iter_mut() {
            *n -= before.get(name).copied().unwrap_or(0);
        }
    }
    stop(&shared);
    let mut reports: Vec<Report> = Vec::new();
    let mut thread_errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => thread_errors.push(e),
            Err(_) => thread_errors.push("a traffic thread panicked".into()),
        }
    }
    let _ = reporter.join();
    let traffic_secs = origin.elapsed().as_secs_f64();
    faults?;
    if let Some(e) = thread_errors.first() {
        return Err(e.clone());
    }

    let mut gens = vec![0u32; chunks as usize];
    for r in &reports {
        for &(chunk, g) in &r.gens {
            if (chunk as usize) < gens.len() {
                gens[chunk as usize] = g;
            }
        }
    }
    let t = Instant::now();
    let (checked, scan_bad, scan_notes) = scan(&bdev, &layer, &gens)?;
    println!(
        "chaos: final scan: {checked} chunks (the whole namespace) read back in {:.1} s, {scan_bad} differ from the shadow",
        t.elapsed().as_secs_f64()
    );
    for n in &scan_notes {
        println!("chaos: final scan: {n}");
    }
    let per_path_total = shared.per_path();
    drop(bdev);
    drop(mp);
    layer.shutdown();

    // The verdict.
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let submitted = sum(|r| r.submitted);
    let completed = sum(|r| r.completed);
    let duplicates = sum(|r| r.duplicates);
    let stray = sum(|r| r.stray);
    let lost = sum(|r| r.lost);
    let corrupted = sum(|r| r.corrupted);
    let refused = sum(|r| r.refused);
    let pause = reports
        .iter()
        .map(|r| r.longest_pause_ns)
        .max()
        .unwrap_or(0);
    let pause_at = reports
        .iter()
        .max_by_key(|r| r.longest_pause_ns)
        .map_or(0, |r| r.longest_pause_at_ns);
    let longest_io = reports.iter().map(|r| r.longest_io_ns).max().unwrap_or(0);
    let poll_gap = reports
        .iter()
        .map(|r| r.longest_poll_gap_ns)
        .max()
        .unwrap_or(0);
    let failures: Vec<_> = reports
        .iter()
        .flat_map(|r| r.failures.iter().copied())
        .collect();
    let explained = |f: &traffic::Failure| {
        let want = if f.write {
            faults::WRITE_FAULT
        } else {
            faults::UNRECOVERED_READ
        };
        (f.status.sct(), f.status.sc()) == want
            && windows.iter().any(|&(w, open, close)| {
                w == f.write && f.submitted_ns <= close && f.completed_ns >= open
            })
    };
    let unexplained: Vec<_> = failures.iter().filter(|f| !explained(f)).collect();
    println!("chaos: faults injected per kind:");
    for kind in ["unplug+replug", "reset", "read errors", "write errors"] {
        println!(
            "chaos:   {kind}: {}",
            done_per_kind.get(kind).copied().unwrap_or(0)
        );
    }
    println!(
        "chaos: I/O: {submitted} submitted, {completed} completed exactly once, {} reads checked, {} writes, in {traffic_secs:.0} s",
        sum(|r| r.reads_checked),
        sum(|r| r.writes)
    );
    println!(
        "chaos: failed I/O: {} reported to the application (each retried after its window), {} explained by a media-error window, {} unexplained; channel retries {}, failovers {}",
        failures.len(),
        failures.len() - unexplained.len(),
        unexplained.len(),
        sum(|r| r.retries),
        sum(|r| r.failovers)
    );
    println!(
        "chaos: lost {lost}, duplicated {duplicates} (stray completions {stray}), corrupted {} (reads {corrupted}, final scan {scan_bad}), refused {refused}",
        corrupted + scan_bad
    );
    println!(
        "chaos: longest completion pause {} (at t={:.1}s), longest I/O {}, limit {} ms; longest time a traffic thread did not run (between two of its polls) {}",
        ms(pause),
        pause_at as f64 / 1e9,
        ms(longest_io),
        a.pause_limit_ms,
        ms(poll_gap)
    );
    println!(
        "chaos: I/Os per path after the faults ({} s): {}; in all: {}",
        schedule::AFTER_MS / 1000,
        after
            .iter()
            .map(|(n, k)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        per_path_total
            .iter()
            .map(|(n, k)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut problems = Vec::new();
    if lost > 0 || submitted != completed {
        problems.push(format!(
            "{lost} I/Os lost ({submitted} submitted, {completed} completed)"
        ));
    }
    if duplicates > 0 || stray > 0 {
        problems.push(format!(
            "{duplicates} duplicated completions, {stray} stray"
        ));
    }
    if refused > 0 {
        problems.push(format!("{refused} submissions refused"));
    }
    if corrupted > 0 {
        let first = reports
            .iter()
            .find_map(|r| r.first_corruption.clone())
            .unwrap_or_default();
        problems.push(format!(
            "{corrupted} reads returned wrong data; first: {first}"
        ));
    }
    if scan_bad > 0 {
        problems.push(format!(
            "{scan_bad} chunks differ in the final scan; first: {}",
            scan_notes[0]
        ));
    }
    if let Some(f) = unexplained.first() {
        problems.push(format!(
            "{} failed I/Os no media-error window explains; first: {} of chunk {} failed with {} (submitted at t={:.3}s, completed at t={:.3}s)",
            unexplained.len(),
            if f.write { "a write" } else { "a read" },
            f.chunk,
            f.status,
            f.submitted_ns as f64 / 1e9,
            f.completed_ns as f64 / 1e9
        ));
    }
    if pause > a.pause_limit_ms * 1_000_000 {
        problems.push(format!(
            "a completion pause of {} (limit {} ms)",
            ms(pause),
            a.pause_limit_ms
        ));
    }
    for (_, _, bdf) in CONTROLLERS {
        if after.get(bdf).copied().unwrap_or(0) == 0 {
            problems.push(format!("{bdf} carried no I/O after the faults"));
        }
    }
    if a.media && windows.is_empty() {
        problems.push("no media-error window was opened".into());
    }
    if problems.is_empty() {
        println!("chaos: nothing lost, duplicated or corrupted; every failed I/O explained");
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nvme-e2e-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(()) if a.schedule_only => ExitCode::SUCCESS,
        Ok(()) => {
            println!("PASS chaos seed {}", a.seed);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL chaos: {e}");
            ExitCode::FAILURE
        }
    }
}
