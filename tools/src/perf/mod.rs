// SPDX-License-Identifier: Apache-2.0 OR MIT
//! nvme-perf: spdk_nvme_perf's measurement over this driver.
//!
//! [`opts`] parses the command line, [`check_target`] checks it against the
//! controllers (block size, namespace size, queue sizes, queue counts),
//! [`build_jobs`] builds each core's queue pairs and buffers, [`engine`] runs the
//! pollers, [`report`] prints the table, percentiles, histogram, driver counters or
//! JSON.
//!
//! Queue depth: `-q` I/Os per namespace per core, spread over `-P` queue pairs.
//! Without `--io-queue-size` each queue is made large enough for its share (up to
//! CAP.MQES), so every measured I/O is at the device. As in spdk_nvme_perf, a share
//! larger than an explicit `--io-queue-size` is accepted with a warning: the excess
//! waits on the driver's pending ring (sized for it, so nothing is refused), and the
//! driver counters say how many I/Os went through it. A share larger than the
//! controller's largest queue without `--io-queue-size` is refused: raise `-P`, or
//! give `--io-queue-size` to let the excess wait.

pub mod engine;
pub mod mpath;
pub mod opts;
pub mod pattern;
pub mod plot;
pub mod refused;
pub mod report;

use crate::attach::Target;
use crate::{usage, UsageError};
use engine::{Backend, IoBuffer, NsJob, NsResult, Params, Qpairs, Shared, WorkerJob};
use nvme_driver::clock;
use nvme_driver::spec::IdentifyController;
use nvme_driver::QpairOptions;
use opts::PerfOptions;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Smallest queue size used when `--io-queue-size` is not given.
pub const DEFAULT_QUEUE_SIZE_MIN: u32 = 256;
/// Per-command deadline given to the driver: a stuck command is aborted, then the
/// controller reset, well before the drain gives up.
pub(crate) const IO_TIMEOUT_MS: u64 = 10_000;

/// The checked plan for one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrlPlan {
    /// Entries per queue pair.
    pub entries: u32,
    /// I/Os per queue pair, at most.
    pub per_qpair: u32,
}

/// Queue entries when `--io-queue-size` is not given: room for `per_qpair` I/Os,
/// at least [`DEFAULT_QUEUE_SIZE_MIN`] (before any device limit).
fn default_queue_size(per_qpair: u32) -> u32 {
    (per_qpair + 1).max(DEFAULT_QUEUE_SIZE_MIN)
}

/// Checks `-o` against a device of `blocks` blocks of `block_size` bytes, called
/// `what` in the messages: a multiple of the block size, no larger than the device.
fn check_io_size(
    opts: &PerfOptions,
    block_size: u32,
    blocks: u64,
    what: &str,
) -> Result<(), UsageError> {
    let bs = block_size as u64;
    if !opts.io_size.is_multiple_of(bs) {
        return Err(usage!(
            "-o {}: not a multiple of the block size {bs} of {what}",
            opts.io_size
        ));
    }
    let bytes = blocks.saturating_mul(bs);
    if opts.io_size > bytes {
        return Err(usage!(
            "-o {}: larger than {what} ({bytes} bytes)",
            opts.io_size
        ));
    }
    Ok(())
}

/// Blocks per I/O and the number of I/O-sized slots in a device of `blocks` blocks
/// of `block_size` bytes (`-o` checked by [`check_io_size`]).
fn io_slots(opts: &PerfOptions, block_size: u32, blocks: u64) -> (u32, u64) {
    let nlb = (opts.io_size / block_size as u64) as u32;
    (nlb, blocks / nlb as u64)
}

/// The `[vid:did]` spdk_nvme_perf prints for a controller: the PCI vendor and device
/// ID (`pci`), or for a controller without one (the software controller) Identify's
/// VID and SSVID, the closest it has.
pub fn controller_id(pci: Option<(u16, u16)>, id: &IdentifyController) -> (u16, u16) {
    pci.unwrap_or((id.vid, id.ssvid))
}

/// spdk_nvme_perf's attach line, `Attached to NVMe Controller at <address>
/// [<vid>:<did>]`, then the model, serial and firmware.
pub fn attach_line(name: &str, pci: Option<(u16, u16)>, id: &IdentifyController) -> String {
    let (vid, did) = controller_id(pci, id);
    format!(
        "Attached to NVMe Controller at {name} [{vid:04x}:{did:04x}] {} (SN {}, FR {})",
        id.mn, id.sn, id.fr
    )
}

/// Checks the options against one controller and its selected namespaces.
pub fn check_target(opts: &PerfOptions, t: &Target) -> Result<CtrlPlan, UsageError> {
    let name = t.ctrl.name();
    let mqes = t.ctrl.cap().mqes_entries().min(65536);
    let per_qpair = opts.queue_depth.div_ceil(opts.qpairs_per_ns);
    let entries = match opts.io_queue_size {
        Some(n) if n > mqes => {
            return Err(usage!(
                "--io-queue-size {n}: {name} allows at most {mqes} entries per queue (CAP.MQES)"
            ))
        }
        Some(n) => n,
        None => default_queue_size(per_qpair).min(mqes),
    };
    // A depth deeper than the queue is accepted, as spdk_nvme_perf does: the excess
    // waits on the driver's pending ring (`queue_warning` says so, the counters line
    // counts it).
    let need = opts.cores.len() as u64 * t.nsids.len() as u64 * opts.qpairs_per_ns as u64;
    let granted = t.ctrl.io_queues() as u64;
    if need > granted {
        return Err(usage!(
            "{} cores x {} namespaces x -P {} need {need} I/O queues but {name} granted {granted}; use fewer cores or queue pairs",
            opts.cores.len(),
            t.nsids.len(),
            opts.qpairs_per_ns
        ));
    }
    for &nsid in &t.nsids {
        let ns = t.ctrl.namespace(nsid).map_err(|e| usage!("{e}"))?;
        check_io_size(opts, ns.block_size, ns.nsze, &format!("{name} NSID {nsid}"))?;
    }
    Ok(CtrlPlan { entries, per_qpair })
}

/// spdk_nvme_perf's warning when the depth does not fit the queue (two lines), or
/// `None` when it does.
pub fn queue_warning(plan: &CtrlPlan) -> Option<String> {
    (plan.per_qpair > plan.entries - 1).then(|| {
        format!(
            "Controller IO queue size {}, less than required ({} I/Os per queue pair).\n\
             Consider using lower queue depth or smaller IO size, because IO requests may be queued at the NVMe driver.",
            plan.entries, plan.per_qpair
        )
    })
}

/// `-d`: the I/Os a namespace of `slots` I/O-sized slots runs; `u64::MAX`: no limit.
fn io_limit(opts: &PerfOptions, slots: u64) -> u64 {
    opts.number_ios.map_or(u64::MAX, |n| n.for_slots(slots))
}

/// The slots core number `ci` writes the verify pattern to before the run: its
/// share of `slots` when the workload writes with --verify, else none.
fn fill_range(opts: &PerfOptions, ci: usize, slots: u64) -> std::ops::Range<u64> {
    if opts.verify && opts.read_percent < 100 {
        let (ci, n) = (ci as u64, opts.cores.len() as u64);
        slots * ci / n..slots * (ci + 1) / n
    } else {
        0..0
    }
}

/// One buffer of `-o` bytes per outstanding I/O (`-q`), from `alloc`, filled with
/// 0x5a.
fn alloc_buffers<T: IoBuffer, E: std::fmt::Display>(
    opts: &PerfOptions,
    mut alloc: impl FnMut(usize) -> Result<T, E>,
) -> Result<Vec<T>, String> {
    (0..opts.queue_depth)
        .map(|_| {
            let mut b = alloc(opts.io_size as usize).map_err(|e| {
                format!(
                    "allocating {} buffers of {} bytes: {e}",
                    opts.queue_depth, opts.io_size
                )
            })?;
            // SAFETY: the buffer is new: no I/O uses it.
            unsafe { b.bytes_mut() }.fill(0x5a);
            Ok(b)
        })
        .collect()
}

/// Builds every worker's queue pairs and buffers. Device errors are strings.
pub fn build_jobs(
    opts: &PerfOptions,
    targets: &[Target],
    plans: &[CtrlPlan],
) -> Result<Vec<WorkerJob<Qpairs>>, String> {
    let mut jobs = Vec::new();
    for (ci, &core) in opts.cores.iter().enumerate() {
        let mut ns_jobs = Vec::new();
        for (t, plan) in targets.iter().zip(plans) {
            for &nsid in &t.nsids {
                let ns = t.ctrl.namespace(nsid).map_err(|e| e.to_string())?;
                let (nlb, slots) = io_slots(opts, ns.block_size, ns.nsze);
                let mut qpairs = Vec::new();
                for _ in 0..opts.qpairs_per_ns {
                    qpairs.push(
                        t.ctrl
                            .create_io_qpair(QpairOptions {
                                entries: plan.entries as u16,
                                pending_max: plan.per_qpair as usize,
                                timeout_ms: IO_TIMEOUT_MS,
                            })
                            .map_err(|e| format!("creating a queue pair for core {core}: {e}"))?,
                    );
                }
                let bufs = alloc_buffers(opts, |len| t.ctrl.alloc_buffer(len))?;
                let mut backend = Qpairs::new(nsid, qpairs);
                if let Some(unit) = opts.io_unit_size.filter(|&u| u < opts.io_size) {
                    backend = backend.with_io_units(unit, opts.io_size, &bufs);
                }
                ns_jobs.push(NsJob {
                    device: t.ctrl.name().to_string(),
                    nsid,
                    block_size: ns.block_size,
                    nlb,
                    slots,
                    fill: fill_range(opts, ci, slots),
                    limit: io_limit(opts, slots),
                    backend,
                    bufs,
                });
            }
        }
        jobs.push(WorkerJob { core, ns: ns_jobs });
    }
    Ok(jobs)
}

/// How the run talks to the person watching.
pub struct Ui<'a> {
    /// Print a progress line each second (stdout is a terminal, not --json).
    pub progress: bool,
    /// Notes for stderr (fill started, and so on).
    pub note: &'a mut dyn FnMut(String),
    /// Pin worker threads to their cores.
    pub pin: bool,
    /// Filled by the run: IOPS of every worker together, each second.
    pub samples: Vec<Sample>,
}

/// What a run's phase is called in the progress line: spdk_nvme_perf's `[warmup] `
/// prefix, nothing while measuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the verify pattern before the run.
    Fill,
    /// `-a`: running, not measuring.
    Warmup,
    /// Measuring.
    Run,
}

impl Phase {
    /// The progress line's prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Phase::Fill => "[verify fill] ",
            Phase::Warmup => "[warmup] ",
            Phase::Run => "",
        }
    }
}

/// One second of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the workers started, at the end of this sample.
    pub at_s: f64,
    /// I/Os completed per second over the sample.
    pub iops: f64,
    /// The phase at the end of the sample.
    pub phase: Phase,
}

/// spdk_nvme_perf's progress line (without the carriage return).
pub fn progress_line(phase: Phase, ios_this_second: u64, io_size: u64) -> String {
    let mib = ios_this_second as f64 * io_size as f64 / (1 << 20) as f64;
    format!(
        "{}{ios_this_second:9} IOPS, {mib:8.2} MiB/s",
        phase.prefix()
    )
}

impl std::fmt::Debug for Ui<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui")
            .field("progress", &self.progress)
            .finish()
    }
}

/// Runs the workers to the end while this thread does the controllers' admin work
/// every 10 ms and prints progress. Returns one result per namespace and core,
/// ordered by core, then controller, then namespace.
pub fn run(
    opts: &PerfOptions,
    targets: &[Target],
    jobs: Vec<WorkerJob<Qpairs>>,
    ui: &mut Ui<'_>,
) -> Vec<NsResult> {
    let admin = || {
        for t in targets {
            t.ctrl.process_admin();
        }
    };
    run_workers(opts, jobs, ui, "namespace", admin)
}

/// `--multipath`: runs the workers on their channels while this thread prints
/// progress (the block layer's controller threads do the admin work). Returns one
/// result per bdev and core, ordered by core, then bdev.
pub fn run_mpath(
    opts: &PerfOptions,
    workers: Vec<mpath::MpathWorker>,
    ui: &mut Ui<'_>,
) -> Vec<NsResult> {
    run_workers(opts, workers, ui, "bdev", || {})
}

/// `-Q N`'s error log, printed (as notes, on stderr) by the main thread as
/// spdk_nvme_perf's RATELIMIT_LOG does: the 1st, (N+1)th, (2N+1)th... failed I/O gets a line on stderr, after the
/// first prefixed with how many were suppressed. The workers publish a count and
/// their latest failure; a line describes the latest failure at the time it is
/// printed (the workers never print).
struct ErrorLog {
    /// N; `None` without -Q (failures are reported at the end only).
    every: Option<u64>,
    /// Failed I/Os already accounted for.
    seen: u64,
}

impl ErrorLog {
    fn new(every: Option<u32>) -> Self {
        ErrorLog {
            every: every.map(u64::from),
            seen: 0,
        }
    }

    /// The lines due for the failures published since the last call.
    fn lines_due(&mut self, shared: &Shared) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(every) = self.every else {
            return lines;
        };
        let total: u64 = shared
            .errors
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .sum();
        let word = shared
            .last_error
            .iter()
            .map(|w| engine::ErrorWord(w.load(Ordering::Relaxed)))
            .find(|w| w.0 != 0);
        for count in self.seen..total {
            if count % every != 0 {
                continue;
            }
            let what = word.map_or_else(|| "I/O failed".to_string(), |w| w.describe());
            if count > 0 && every > 1 {
                lines.push(format!("Message suppressed {} times: {what}", every - 1));
            } else {
                lines.push(what);
            }
        }
        self.seen = self.seen.max(total);
        lines
    }
}

/// Runs one thread per worker to the end; this thread calls `admin` every 10 ms,
/// keeps a [`Sample`] each second and prints it as a progress line. `what` names
/// the worker's targets in the verify note.
fn run_workers<B: Backend>(
    opts: &PerfOptions,
    jobs: Vec<WorkerJob<B>>,
    ui: &mut Ui<'_>,
    what: &str,
    admin: impl Fn(),
) -> Vec<NsResult> {
    let hz = clock::ticks_per_sec();
    let params = Params {
        read_percent: opts.read_percent,
        random: opts.workload.is_random(),
        verify: opts.verify,
        seed: opts.seed,
        warmup_ticks: opts.warmup_s * hz,
        run_ticks: opts.time_s * hz,
        pin: ui.pin,
        continue_on_error: opts.continue_on_error.is_some(),
    };
    if opts.verify && opts.read_percent < 100 {
        (ui.note)(format!(
            "verify: writing the pattern (seed {}) over every selected {what} before the run",
            opts.seed
        ));
    }
    let shared = Shared::new(jobs.len());
    let filling = opts.verify && opts.read_percent < 100;
    let phase = |shared: &Shared| {
        if shared.measuring.iter().all(|m| m.load(Ordering::Relaxed)) {
            Phase::Run
        } else if filling && opts.warmup_s == 0 {
            Phase::Fill
        } else {
            Phase::Warmup
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let (params, shared) = (&params, &shared);
                std::thread::Builder::new()
                    .name(format!("nvme-perf-{}", job.core))
                    .spawn_scoped(s, move || engine::run_worker(job, i, params, shared))
                    .expect("spawning a poller thread")
            })
            .collect();
        let started = Instant::now();
        let mut last_tick = started;
        let mut last_done = 0u64;
        let mut error_log = ErrorLog::new(opts.continue_on_error);
        while handles.iter().any(|h| !h.is_finished()) {
            admin();
            std::thread::sleep(Duration::from_millis(10));
            error_log
                .lines_due(&shared)
                .into_iter()
                .for_each(&mut *ui.note);
            if last_tick.elapsed() >= Duration::from_secs(1) {
                let el = last_tick.elapsed().as_secs_f64();
                last_tick = Instant::now();
                let done: u64 = shared.done.iter().map(|d| d.load(Ordering::Relaxed)).sum();
                let sample = Sample {
                    at_s: started.elapsed().as_secs_f64(),
                    iops: (done - last_done) as f64 / el,
                    phase: phase(&shared),
                };
                last_done = done;
                ui.samples.push(sample);
                if ui.progress {
                    print!(
                        "{}\r",
                        progress_line(sample.phase, sample.iops.round() as u64, opts.io_size)
                    );
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                }
            }
        }
        error_log
            .lines_due(&shared)
            .into_iter()
            .for_each(&mut *ui.note);
        if ui.progress {
            print!("{:60}\r", "");
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a poller thread panicked"))
            .collect()
    })
}

/// Options from a command line, on cores 0 to 3 (tests).
#[cfg(test)]
pub(crate) fn test_opts(line: &str) -> PerfOptions {
    match opts::parse_args(line.split_whitespace(), &[0, 1, 2, 3]) {
        Ok(opts::Command::Run(o)) => o,
        other => panic!("{line}: {other:?}"),
    }
}

/// Calls `f` with a UI that prints nothing and pins nothing (tests).
#[cfg(test)]
pub(crate) fn with_quiet_ui<R>(f: impl FnOnce(&mut Ui<'_>) -> R) -> R {
    let mut note = |_: String| {};
    f(&mut Ui {
        progress: false,
        note: &mut note,
        pin: false,
        samples: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
