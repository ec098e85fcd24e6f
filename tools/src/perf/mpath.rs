//! `nvme-perf --multipath`: the same workload through the block layer's multipath
//! bdevs instead of the controllers' queue pairs.
//!
//! Every controller is attached to one [`BlockLayer`] (named by its PCI address);
//! controllers that reach the same namespace (same subsystem NQN and namespace
//! identifier) become the paths of one multipath bdev. Each core opens a channel to
//! every selected bdev and runs the workload through it: buffers from the layer (one
//! per outstanding I/O, made before the clock starts), latencies from the TSC, no
//! allocation, lock or system call per I/O. The controller threads of the layer do
//! the admin work (resets, ANA, reconnects). Besides the usual table each row
//! reports per-path I/O counts, failovers and retries, the longest submit call and
//! the longest pause between completions on its core.

use super::engine::{NsResult, Params, Shared, LATENCY_MAX_NS};
use super::opts::PerfOptions;
use super::pattern::{self, XorShift};
use crate::attach::Wanted;
use crate::{usage, UsageError};
use hdrhistogram::Histogram;
use nvme_bdev::{
    Bdev, BdevCompletion, BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MpathOptions, Policy,
};
use nvme_driver::{clock, QpairOptions};
use std::sync::Arc;

/// Per-command deadline given to the driver (as in the direct mode).
const IO_TIMEOUT_MS: u64 = 10_000;
/// How long the drain after the run may take.
const DRAIN_TIMEOUT_MS: u64 = 60_000;

/// The name `--policy` takes.
pub fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::ActivePassive => "active-passive",
        Policy::RoundRobin => "round-robin",
        Policy::LeastQueueDepth => "least-queue-depth",
    }
}

/// I/Os one path carried from one core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCount {
    /// Controller name (PCI address).
    pub name: String,
    /// I/Os dispatched on it during the measured phase (retries and failovers count
    /// on the path that took them).
    pub ios: u64,
    /// Path errors it returned (measured phase).
    pub path_errors: u64,
}

/// A multipath row's counters (measured phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpathRowStats {
    /// Policy.
    pub policy: Policy,
    /// Per path, in the order paths were added; a path removed during the run is
    /// no longer listed.
    pub paths: Vec<PathCount>,
    /// Re-dispatches after a path error (failover events).
    pub failovers: u64,
    /// Retries after other retryable errors.
    pub retries: u64,
    /// I/Os that waited on the core's retry ring.
    pub queued: u64,
    /// Most I/Os on the retry ring at once (whole run).
    pub queued_high_water: u64,
    /// I/Os failed for lack of a usable path.
    pub fast_failed: u64,
    /// Path-set snapshots this core saw.
    pub path_set_changes: u64,
    /// Longest submit call, ns.
    pub longest_submit_ns: u64,
    /// Longest time between two completions on this core while I/O was outstanding.
    pub longest_gap_ns: u64,
}

/// The block layer options for a run: policy, queue sizes for the depth.
pub fn layer_options(opts: &PerfOptions, policy: Policy) -> LayerOptions {
    let depth = opts.queue_depth;
    let entries = opts
        .io_queue_size
        .unwrap_or_else(|| (depth + 1).max(super::DEFAULT_QUEUE_SIZE_MIN))
        .min(4096);
    LayerOptions {
        mpath: MpathOptions {
            policy,
            channel_depth: depth as usize,
            ..MpathOptions::default()
        },
        qpair: QpairOptions {
            entries: entries as u16,
            // What does not fit the queue waits on the driver's pending ring.
            pending_max: depth as usize,
            timeout_ms: IO_TIMEOUT_MS,
        },
        ..LayerOptions::default()
    }
}

/// The multipath bdevs of the attached controllers that cover the wanted
/// namespaces, in order. `attached` lists, per controller, the names
/// [`BlockLayer::attach`] returned (namespace bdev, multipath bdev, ...).
pub fn select_bdevs(
    wanted: &Wanted,
    attached: &[Vec<String>],
) -> Result<Vec<(String, u32)>, UsageError> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for ((bdf, nsids), names) in wanted.iter().zip(attached) {
        let mut found = Vec::new();
        for pair in names.chunks(2) {
            let [ns_name, mp_name] = pair else { continue };
            let Some(nsid) = ns_name
                .strip_prefix(bdf.as_str())
                .and_then(|r| r.strip_prefix('n'))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            found.push(nsid);
            if nsids.as_ref().is_none_or(|l| l.contains(&nsid))
                && !out.iter().any(|(n, _)| n == mp_name)
            {
                out.push((mp_name.clone(), nsid));
            }
        }
        if let Some(list) = nsids {
            for ns in list {
                if !found.contains(ns) {
                    return Err(usage!(
                        "-r ... ns:{ns}: {bdf} has no active namespace {ns} (active: {found:?})"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// One bdev's work on one core.
pub struct MpathJob {
    /// Bdev name.
    pub name: String,
    /// NSID behind it.
    pub nsid: u32,
    /// Block size.
    pub block_size: u32,
    /// Blocks per I/O.
    pub nlb: u32,
    /// I/O-sized slots.
    pub slots: u64,
    /// Slots this core fills with the verify pattern first.
    pub fill: std::ops::Range<u64>,
    /// The channel.
    pub ch: Channel,
    /// One buffer per outstanding I/O.
    pub bufs: Vec<IoBuf>,
    /// Path id to controller name, for the report.
    pub path_names: Vec<(u64, String)>,
    /// Policy.
    pub policy: Policy,
}

impl std::fmt::Debug for MpathJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpathJob")
            .field("name", &self.name)
            .field("fill", &self.fill)
            .finish()
    }
}

/// The work of one core.
#[derive(Debug)]
pub struct MpathWorker {
    /// Core to pin to.
    pub core: usize,
    /// Bdevs.
    pub jobs: Vec<MpathJob>,
}

/// Checks the options against a bdev.
pub fn check_bdev(opts: &PerfOptions, bdev: &Bdev) -> Result<(), UsageError> {
    let bs = bdev.block_size() as u64;
    let name = bdev.name();
    if !opts.io_size.is_multiple_of(bs) {
        return Err(usage!(
            "-o {}: not a multiple of the block size {bs} of {name}",
            opts.io_size
        ));
    }
    let bytes = bdev.num_blocks().saturating_mul(bs);
    if opts.io_size > bytes {
        return Err(usage!(
            "-o {}: larger than {name} ({bytes} bytes)",
            opts.io_size
        ));
    }
    Ok(())
}

/// Builds every core's channels and buffers.
pub fn build_workers(
    opts: &PerfOptions,
    layer: &BlockLayer,
    bdevs: &[(Bdev, u32)],
    policy: Policy,
) -> Result<Vec<MpathWorker>, String> {
    let fill = opts.verify && opts.read_percent < 100;
    let ncores = opts.cores.len() as u64;
    let mut out = Vec::new();
    for (ci, &core) in opts.cores.iter().enumerate() {
        let mut jobs = Vec::new();
        for (bdev, nsid) in bdevs {
            let nlb = (opts.io_size / bdev.block_size() as u64) as u32;
            let slots = bdev.num_blocks() / nlb as u64;
            let ch = bdev.channel().map_err(|e| {
                format!("opening a channel of {} for core {core}: {e}", bdev.name())
            })?;
            let mut bufs = Vec::new();
            for _ in 0..opts.queue_depth {
                let mut b = layer.alloc_buffer(opts.io_size as usize).map_err(|e| {
                    format!(
                        "allocating {} buffers of {} bytes: {e}",
                        opts.queue_depth, opts.io_size
                    )
                })?;
                b.fill(0x5a);
                bufs.push(b);
            }
            let ci = ci as u64;
            let path_names = bdev
                .multipath()
                .map(|m| m.paths().into_iter().map(|p| (p.id, p.name)).collect())
                .unwrap_or_default();
            jobs.push(MpathJob {
                name: bdev.name().to_string(),
                nsid: *nsid,
                block_size: bdev.block_size(),
                nlb,
                slots,
                fill: if fill {
                    slots * ci / ncores..slots * (ci + 1) / ncores
                } else {
                    0..0
                },
                ch,
                bufs,
                path_names,
                policy,
            });
        }
        out.push(MpathWorker { core, jobs });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default)]
struct Task {
    start: u64,
    lba: u64,
    write: bool,
    busy: bool,
}

struct State {
    job: MpathJob,
    tasks: Vec<Task>,
    comps: Vec<BdevCompletion>,
    busy: usize,
    seq_next: u64,
    fill_next: u64,
    r: NsResult,
    snap: Vec<nvme_bdev::mpath::PathIoStats>,
    snap_ch: nvme_bdev::mpath::ChannelStats,
    longest_submit: u64,
    last_completion: u64,
    longest_gap: u64,
}

impl State {
    fn new(job: MpathJob, core: usize, io_size: u64) -> Self {
        let depth = job.bufs.len();
        State {
            tasks: vec![Task::default(); depth],
            comps: Vec::with_capacity(depth.max(64) + 16),
            busy: 0,
            seq_next: 0,
            fill_next: job.fill.start,
            r: NsResult {
                device: job.name.clone(),
                nsid: job.nsid,
                core,
                ios: 0,
                reads: 0,
                io_size,
                secs: 0.0,
                lat_sum_ns: 0,
                lat_min_ns: u64::MAX,
                lat_max_ns: 0,
                hist: Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3)
                    .expect("1 ns to 100 s at 3 significant digits is a valid histogram"),
                errors: 0,
                first_error: None,
                mismatches: 0,
                first_mismatch: None,
                counters: Vec::new(),
                mpath: None,
            },
            snap: Vec::new(),
            snap_ch: Default::default(),
            longest_submit: 0,
            last_completion: 0,
            longest_gap: 0,
            job,
        }
    }

    fn mpath_channel(&self) -> Option<&nvme_bdev::MpathChannel<nvme_driver::IoQpair>> {
        match &self.job.ch {
            Channel::Mpath(c) => Some(c),
            Channel::Nvme(_) => None,
        }
    }

    fn reset_measurement(&mut self) {
        self.r.ios = 0;
        self.r.reads = 0;
        self.r.lat_sum_ns = 0;
        self.r.lat_min_ns = u64::MAX;
        self.r.lat_max_ns = 0;
        self.r.hist.reset();
        self.longest_submit = 0;
        self.longest_gap = 0;
        self.last_completion = clock::ticks();
        if let Some((paths, st)) = self.mpath_channel().map(|c| (c.path_stats(), c.stats())) {
            self.snap = paths;
            self.snap_ch = st;
        }
    }

    fn fail(&mut self, what: std::fmt::Arguments<'_>) {
        self.r.errors += 1;
        if self.r.first_error.is_none() {
            self.r.first_error = Some(what.to_string());
        }
    }

    #[inline]
    fn submit(&mut self, i: usize, p: &Params, rng: &mut XorShift, fill: bool) -> bool {
        let (slot, write) = if fill {
            if self.fill_next >= self.job.fill.end {
                return false;
            }
            self.fill_next += 1;
            (self.fill_next - 1, true)
        } else {
            let write = p.read_percent < 100 && rng.below(100) >= p.read_percent as u64;
            let slot = if p.random {
                rng.below(self.job.slots)
            } else {
                let s = self.seq_next;
                self.seq_next = if s + 1 >= self.job.slots { 0 } else { s + 1 };
                s
            };
            (slot, write)
        };
        let lba = slot * self.job.nlb as u64;
        let buf = &mut self.job.bufs[i];
        if write && p.verify {
            // SAFETY: task `i` is idle, so no I/O is in flight on its buffer.
            let data = unsafe { buf.as_mut_slice() };
            pattern::fill(data, lba, self.job.block_size as usize, p.seed);
        }
        let slice = buf.whole();
        let io = if write {
            BdevIo::write(lba, self.job.nlb, slice, i as u64)
        } else {
            BdevIo::read(lba, self.job.nlb, slice, i as u64)
        };
        let t = &mut self.tasks[i];
        t.lba = lba;
        t.write = write;
        t.start = clock::ticks();
        let r = self.job.ch.submit(io);
        let took = clock::ticks().wrapping_sub(t.start);
        if took > self.longest_submit {
            self.longest_submit = took;
        }
        match r {
            Ok(()) => {
                t.busy = true;
                self.busy += 1;
                true
            }
            Err((e, _)) => {
                let op = if write { "write" } else { "read" };
                self.fail(format_args!("{op} at LBA {lba}: submit failed: {e}"));
                false
            }
        }
    }

    #[inline]
    fn poll(
        &mut self,
        p: &Params,
        rng: &mut XorShift,
        measuring: bool,
        resubmit: bool,
        fill: bool,
    ) -> u64 {
        self.comps.clear();
        let comps = &mut self.comps;
        self.job.ch.poll(&mut |c| comps.push(c));
        if self.comps.is_empty() {
            return 0;
        }
        let now = clock::ticks();
        let gap = now.wrapping_sub(self.last_completion);
        if gap > self.longest_gap {
            self.longest_gap = gap;
        }
        self.last_completion = now;
        let mut handled = 0;
        for k in 0..self.comps.len() {
            let c = self.comps[k];
            let i = c.ctx as usize;
            let Some(t) = self.tasks.get_mut(i).filter(|t| t.busy) else {
                self.fail(format_args!("completion for unknown or idle I/O {i}"));
                continue;
            };
            t.busy = false;
            let t = *t;
            self.busy -= 1;
            handled += 1;
            if !c.status.is_success() {
                let op = if t.write { "write" } else { "read" };
                self.fail(format_args!("{op} at LBA {}: {}", t.lba, c.status));
                continue;
            }
            if !t.write && p.verify {
                // SAFETY: the read completed; the buffer is not resubmitted until the
                // check is done.
                let data = unsafe { self.job.bufs[i].as_slice() };
                if let Some(m) = pattern::check(data, t.lba, self.job.block_size as usize, p.seed) {
                    self.r.mismatches += 1;
                    if self.r.first_mismatch.is_none() {
                        self.r.first_mismatch = Some(m);
                    }
                }
            }
            if measuring {
                let ns = clock::ticks_to_ns(now.wrapping_sub(t.start)).max(1);
                let r = &mut self.r;
                r.ios += 1;
                r.reads += u64::from(!t.write);
                r.lat_sum_ns += ns as u128;
                r.lat_min_ns = r.lat_min_ns.min(ns);
                r.lat_max_ns = r.lat_max_ns.max(ns);
                r.hist.saturating_record(ns);
            }
            if resubmit {
                self.submit(i, p, rng, fill);
            }
        }
        self.job.ch.flush();
        handled
    }

    fn finish(&mut self) {
        let Some(c) = self.mpath_channel() else {
            return;
        };
        let now = c.path_stats();
        let st = c.stats();
        let paths = now
            .iter()
            .map(|ps| {
                let before = self.snap.iter().find(|b| b.id == ps.id);
                PathCount {
                    name: self
                        .job
                        .path_names
                        .iter()
                        .find(|(id, _)| *id == ps.id)
                        .map_or_else(|| format!("path {}", ps.id), |(_, n)| n.clone()),
                    ios: ps.submitted - before.map_or(0, |b| b.submitted),
                    path_errors: ps.path_errors - before.map_or(0, |b| b.path_errors),
                }
            })
            .collect();
        let b = self.snap_ch;
        self.r.mpath = Some(MpathRowStats {
            policy: self.job.policy,
            paths,
            failovers: st.failovers - b.failovers,
            retries: st.retries - b.retries,
            queued: st.queued - b.queued,
            queued_high_water: st.queued_high_water,
            fast_failed: st.fast_failed - b.fast_failed,
            path_set_changes: st.path_set_changes - b.path_set_changes,
            longest_submit_ns: clock::ticks_to_ns(self.longest_submit),
            longest_gap_ns: clock::ticks_to_ns(self.longest_gap),
        });
    }
}

/// Runs one core's channels to the end (fill, barrier, warm-up, measured phase,
/// drain), as the direct mode's worker does.
pub fn run_worker(w: MpathWorker, idx: usize, p: &Params, shared: &Shared) -> Vec<NsResult> {
    if p.pin {
        core_affinity::set_for_current(core_affinity::CoreId { id: w.core });
    }
    let mut states: Vec<State> = w
        .jobs
        .into_iter()
        .map(|j| {
            let s = j.nlb as u64 * j.block_size as u64;
            State::new(j, w.core, s)
        })
        .collect();
    let mut rng = XorShift::new(p.seed ^ (w.core as u64).wrapping_mul(0x9e37_79b9));
    let done = &shared.done[idx];
    let mut total = 0u64;
    if states.iter().any(|s| !s.job.fill.is_empty()) {
        for s in states.iter_mut() {
            for i in 0..s.tasks.len() {
                if !s.submit(i, p, &mut rng, true) {
                    break;
                }
            }
            s.job.ch.flush();
        }
        while states.iter().any(|s| s.busy > 0)
            && !shared.stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            for s in states.iter_mut() {
                total += s.poll(p, &mut rng, false, true, true);
            }
            done.store(total, std::sync::atomic::Ordering::Relaxed);
        }
    }
    shared.start.wait();
    let t0 = clock::ticks();
    let warm_end = t0 + p.warmup_ticks;
    let end = warm_end + p.run_ticks;
    let mut measuring = p.warmup_ticks == 0;
    let mut measure_start = t0;
    if measuring {
        shared.measuring[idx].store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for s in states.iter_mut() {
        s.reset_measurement();
        for i in 0..s.tasks.len() {
            s.submit(i, p, &mut rng, false);
        }
        s.job.ch.flush();
    }
    let mut now;
    loop {
        now = clock::ticks();
        if !measuring && now >= warm_end {
            for s in states.iter_mut() {
                s.reset_measurement();
            }
            measuring = true;
            measure_start = now;
            shared.measuring[idx].store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if now >= end || shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let mut busy = 0;
        for s in states.iter_mut() {
            total += s.poll(p, &mut rng, measuring, true, false);
            busy += s.busy;
        }
        done.store(total, std::sync::atomic::Ordering::Relaxed);
        if busy == 0 {
            break;
        }
    }
    let secs = if measuring {
        clock::ticks_to_ns(now.min(end).saturating_sub(measure_start)) as f64 / 1e9
    } else {
        0.0
    };
    for s in states.iter_mut() {
        s.r.secs = secs;
        s.finish();
    }
    // Drain: what is outstanding completes (or fails over, or fails after
    // fast_io_fail_timeout); nothing new starts.
    let drain_end = clock::ticks() + clock::ms_to_ticks(DRAIN_TIMEOUT_MS);
    while states.iter().any(|s| s.busy > 0) && clock::ticks() < drain_end {
        for s in states.iter_mut() {
            s.poll(p, &mut rng, false, false, false);
        }
    }
    let mut out = Vec::with_capacity(states.len());
    for mut s in states {
        if s.busy > 0 {
            let busy = s.busy;
            s.fail(format_args!(
                "{busy} I/Os still outstanding after {} s of draining",
                DRAIN_TIMEOUT_MS / 1000
            ));
            // The device may still write these buffers: never hand them back.
            std::mem::forget(std::mem::take(&mut s.job.bufs));
        }
        if s.r.lat_min_ns == u64::MAX {
            s.r.lat_min_ns = 0;
        }
        out.push(s.r);
    }
    out
}

/// Attaches the wanted controllers to a new block layer (each named by its PCI
/// address, reopened through VFIO on reconnect) and opens the multipath bdevs that
/// cover the wanted namespaces.
pub fn open_vfio(
    wanted: &Wanted,
    lopts: LayerOptions,
    note: &mut dyn FnMut(String),
) -> Result<(BlockLayer, Vec<(Bdev, u32)>), crate::attach::OpenError> {
    use crate::attach::OpenError;
    let layer = BlockLayer::new(lopts).map_err(|e| OpenError::Device(e.to_string()))?;
    let mut attached = Vec::new();
    for (bdf, _) in wanted {
        let b = bdf.clone();
        let connector: nvme_bdev::layer::Connector = Arc::new(move || {
            nvme_driver::vfio::VfioBus::open(&b).map(|x| x as Arc<dyn nvme_driver::bus::Bus>)
        });
        let names = layer
            .attach(bdf, connector)
            .map_err(|e| OpenError::Device(format!("{bdf}: {e}")))?;
        note(format!(
            "Attached {bdf} to the block layer: {}",
            names.join(", ")
        ));
        attached.push(names);
    }
    let picked = select_bdevs(wanted, &attached)?;
    let mut out = Vec::new();
    for (name, nsid) in picked {
        let bdev = layer
            .open(&name)
            .map_err(|e| OpenError::Device(e.to_string()))?;
        out.push((bdev, nsid));
    }
    Ok((layer, out))
}

/// One line per bdev: its paths, their states and failovers, and each controller's
/// resets and reconnects (whole run, every core).
pub fn path_summary(layer: &BlockLayer, bdevs: &[(Bdev, u32)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (b, _) in bdevs {
        let Some(m) = b.multipath() else { continue };
        let _ = write!(
            out,
            "Paths of {} ({}):",
            b.name(),
            policy_name(m.options().policy)
        );
        let paths = m.paths();
        if paths.is_empty() {
            out.push_str(" none left");
        }
        for (k, p) in paths.iter().enumerate() {
            let (resets, reconnects) = layer.controller_counts(&p.name).unwrap_or((0, 0));
            let _ = write!(
                out,
                "{} {} {:?}{}, {} failovers, {} resets, {} reconnects",
                if k == 0 { "" } else { ";" },
                p.name,
                p.state.ana,
                if p.state.connected {
                    ""
                } else {
                    " (disconnected)"
                },
                p.failovers,
                resets,
                reconnects
            );
        }
        let _ = writeln!(
            out,
            "; longest path-set publication {:.1} us",
            m.longest_publish_ns() as f64 / 1000.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::opts::{parse_args, Command};
    use crate::perf::report;
    use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};

    fn opts(line: &str) -> PerfOptions {
        match parse_args(line.split_whitespace(), &[0, 1, 2, 3]) {
            Ok(Command::Run(o)) => o,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn bdevs_are_picked_by_namespace() {
        let wanted: Wanted = vec![
            ("0000:01:00.0".into(), None),
            ("0000:02:00.0".into(), Some(vec![1])),
        ];
        let attached = vec![
            vec![
                "0000:01:00.0n1".to_string(),
                "nqn.x:n1".to_string(),
                "0000:01:00.0n2".to_string(),
                "nqn.x:n2".to_string(),
            ],
            vec![
                "0000:02:00.0n1".to_string(),
                "nqn.x:n1".to_string(),
                "0000:02:00.0n2".to_string(),
                "nqn.x:n2".to_string(),
            ],
        ];
        assert_eq!(
            select_bdevs(&wanted, &attached).unwrap(),
            vec![("nqn.x:n1".to_string(), 1), ("nqn.x:n2".to_string(), 2)]
        );
        let wanted: Wanted = vec![("0000:01:00.0".into(), Some(vec![3]))];
        assert!(select_bdevs(&wanted, &attached[..1])
            .unwrap_err()
            .0
            .contains("no active namespace 3"));
    }

    #[test]
    fn multipath_run_on_software_controllers_counts_paths_and_failovers() {
        let ns = Arc::new(Namespace::new(1, 8192, 512).unwrap());
        let soft = |name: &str, cntlid| {
            SoftController::start(SoftConfig {
                name: name.into(),
                subnqn: "nqn.2024-01.org.nvme-tools:perf".into(),
                cntlid,
                namespaces: vec![ns.clone()],
                ..SoftConfig::default()
            })
        };
        let (a, b) = (soft("softA", 1), soft("softB", 2));
        let o = opts(
            "-q 8 -o 4096 -w randrw -M 50 -t 2 -c 0x3 --verify --multipath --policy round-robin",
        );
        let policy = o.multipath.unwrap();
        let layer = BlockLayer::new(layer_options(&o, policy)).unwrap();
        layer.attach_bus("softA", a.clone()).unwrap();
        let names = layer.attach_bus("softB", b.clone()).unwrap();
        let mp = names.iter().find(|n| n.starts_with("nqn.")).unwrap();
        let bdevs = vec![(layer.open(mp).unwrap(), 1)];
        check_bdev(&o, &bdevs[0].0).unwrap();
        let workers = build_workers(&o, &layer, &bdevs, policy).unwrap();
        let shared = Shared::new(workers.len());
        let params = Params {
            read_percent: o.read_percent,
            random: true,
            verify: true,
            seed: o.seed,
            warmup_ticks: 0,
            run_ticks: o.time_s * clock::ticks_per_sec(),
            pin: false,
        };
        let rows: Vec<NsResult> = std::thread::scope(|s| {
            let hs: Vec<_> = workers
                .into_iter()
                .enumerate()
                .map(|(i, w)| {
                    let (params, shared) = (&params, &shared);
                    s.spawn(move || run_worker(w, i, params, shared))
                })
                .collect();
            // Reset path A under load: its I/O fails over to B.
            std::thread::sleep(std::time::Duration::from_millis(500));
            layer.request_reset("softA").unwrap();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert_eq!(r.errors, 0, "{:?}", r.first_error);
            assert_eq!(r.mismatches, 0);
            let m = r.mpath.as_ref().unwrap();
            assert_eq!(m.paths.len(), 2, "{m:?}");
            assert!(
                m.paths.iter().all(|p| p.ios > 0),
                "round robin uses both: {m:?}"
            );
            assert_eq!(m.paths[0].name, "softA");
        }
        assert_eq!(layer.controller_counts("softA").unwrap().0, 1);
        let text = report::text(&o, &rows);
        assert!(
            text.contains("MPATH (nqn.2024-01.org.nvme-tools:perf:n1) from core  1"),
            "{text}"
        );
        assert!(text.contains("softA "), "{text}");
        assert!(text.contains("longest submit"), "{text}");
        let summary = path_summary(&layer, &bdevs);
        assert!(summary.contains("softA Optimized"), "{summary}");
        assert!(summary.contains("1 resets"), "{summary}");
        let json = report::to_json(&o, &rows);
        assert_eq!(json["config"]["multipath"], "round-robin");
        assert!(
            json["namespaces"][0]["multipath"]["paths"][0]["ios"]
                .as_u64()
                .unwrap()
                > 0
        );
        drop(bdevs);
        layer.shutdown();
        a.stop();
        b.stop();
    }
}
