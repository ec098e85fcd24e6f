// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The poller: one thread per core, pinned, owning its queue pairs (or, with
//! `--multipath`, its block layer channels) outright. The worker is generic over a
//! [`Backend`]: [`Qpairs`] here, [`super::mpath::BdevChannel`] for `--multipath`.
//!
//! Everything an I/O needs is made before the clock starts: one DMA buffer per
//! outstanding I/O, a task slot per buffer (indexed by the request's `ctx`), the
//! completion list, the latency histogram. The loop then only polls, records a
//! latency (TSC ticks, no `clock_gettime`), picks the next offset with a xorshift
//! generator and resubmits: no allocation, no lock, no system call per I/O.

use super::pattern::{self, Mismatch, XorShift};
use hdrhistogram::Histogram;
use nvme_driver::clock;
use nvme_driver::spec::Status;
use nvme_driver::{DmaBuf, DmaSlice, DmaVec, IoCompletion, IoQpair, IoRequest, QpairStats};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Barrier;

/// Highest latency the histograms hold, in nanoseconds (longer ones saturate).
pub const LATENCY_MAX_NS: u64 = 100_000_000_000;

/// What a worker drives for one namespace: the driver's queue pairs ([`Qpairs`]) or
/// a block layer channel ([`super::mpath::BdevChannel`]). The worker is generic over
/// it, so every call is static and inlined. Only the worker's thread calls it; the
/// data-path methods (`submit`, `poll`, `completion_time`, `flush`) must neither
/// allocate nor lock.
pub trait Backend: Send {
    /// The DMA buffer one I/O uses.
    type Buf: IoBuffer + Send;
    /// Why a submit was refused.
    type Error: std::fmt::Display;
    /// How the drain's failure calls the I/Os that never completed.
    const IN_FLIGHT: &'static str;
    /// Queues polled one by one; I/O slot `i` always goes to queue `i % queues()`.
    fn queues(&self) -> usize;
    /// Submits `io` on `buf`. The doorbell may wait for [`flush`](Self::flush) or
    /// the next poll.
    fn submit(&mut self, io: Submission, buf: &Self::Buf) -> Result<(), Self::Error>;
    /// Polls queue `q`, appending its completions to `out`.
    fn poll(&mut self, q: usize, out: &mut Vec<IoCompletion>);
    /// The time (TSC ticks) a completion just polled is stamped with.
    fn completion_time(&self) -> u64;
    /// Rings queue `q`'s doorbells for what was submitted since.
    fn flush(&mut self, q: usize);
    /// The measured phase starts (again): snapshot counters.
    fn start_measurement(&mut self);
    /// The measured phase ended: the backend's counters into the row.
    fn finish(&mut self, r: &mut NsResult);
    /// The drain gave up: the device may still use what this holds; never free it.
    fn abandon(&mut self) {}
}

/// One I/O for [`Backend::submit`].
#[derive(Debug, Clone, Copy)]
pub struct Submission {
    /// The task slot: the request's `ctx`, and its buffer's index.
    pub slot: usize,
    /// Write (else read).
    pub write: bool,
    /// First block.
    pub lba: u64,
    /// Blocks.
    pub nlb: u32,
    /// When it was started, TSC ticks.
    pub start: u64,
}

/// A buffer the worker fills with the pattern and checks.
pub trait IoBuffer {
    /// The contents.
    ///
    /// # Safety
    /// No I/O that writes this buffer may be in flight while the slice lives.
    unsafe fn bytes(&self) -> &[u8];
    /// The contents, mutable.
    ///
    /// # Safety
    /// No I/O may be in flight on this buffer while the slice lives.
    unsafe fn bytes_mut(&mut self) -> &mut [u8];
}

/// [`IoBuffer`] for the driver's and the block layer's buffers (their own
/// `as_slice` and `as_mut_slice`, with the same contracts).
macro_rules! io_buffer {
    ($($t:ty),*) => {$(
        impl IoBuffer for $t {
            unsafe fn bytes(&self) -> &[u8] {
                // SAFETY: the caller guarantees no device write is in flight.
                unsafe { self.as_slice() }
            }
            unsafe fn bytes_mut(&mut self) -> &mut [u8] {
                // SAFETY: the caller guarantees no I/O is in flight.
                unsafe { self.as_mut_slice() }
            }
        }
    )*};
}
io_buffer!(DmaBuf, nvme_bdev::IoBuf);

/// The direct mode's backend: one namespace's queue pairs on one core.
#[derive(Debug)]
pub struct Qpairs {
    nsid: u32,
    qpairs: Vec<IoQpair>,
    snap: Vec<QpairStats>,
    /// `-O`: per task slot, its buffer cut into I/O units (spdk_nvme_perf's
    /// io_unit_size); each I/O is then a vectored request over them. Empty otherwise.
    units: Vec<Box<[DmaSlice]>>,
}

impl Qpairs {
    /// Queue pairs for namespace `nsid`; task `i` uses queue pair `i % len`.
    pub fn new(nsid: u32, qpairs: Vec<IoQpair>) -> Self {
        let snap = vec![QpairStats::default(); qpairs.len()];
        Qpairs {
            nsid,
            qpairs,
            snap,
            units: Vec::new(),
        }
    }

    /// `-O unit`: each I/O on `bufs[i]` (task slot `i`) is made of `unit`-byte pieces
    /// of it, described as one vectored request (several SGL Data Blocks, or PRPs when
    /// the pieces join on pages). Made before the run: the data path allocates nothing.
    pub fn with_io_units(mut self, unit: u64, io_size: u64, bufs: &[DmaBuf]) -> Self {
        self.units = bufs
            .iter()
            .map(|b| {
                (0..io_size.div_ceil(unit))
                    .map(|k| {
                        let off = k * unit;
                        let len = unit.min(io_size - off);
                        b.slice(off as usize, len as usize)
                            .expect("the buffer holds one I/O")
                    })
                    .collect()
            })
            .collect();
        self
    }
}

impl Backend for Qpairs {
    type Buf = DmaBuf;
    type Error = nvme_driver::Error;
    const IN_FLIGHT: &'static str = "in flight";

    #[inline]
    fn queues(&self) -> usize {
        self.qpairs.len()
    }

    #[inline]
    fn submit(&mut self, io: Submission, buf: &DmaBuf) -> Result<(), Self::Error> {
        let (nsid, i) = (self.nsid, io.slot);
        let req = if let Some(units) = self.units.get(i) {
            // SAFETY: `units` belongs to this backend, which outlives every I/O it
            // submits (`abandon` leaks it with the queue pairs), and is never changed
            // after `with_io_units`.
            let v = unsafe { DmaVec::new(units) };
            if io.write {
                IoRequest::writev(nsid, io.lba, io.nlb, v, i as u64)
            } else {
                IoRequest::readv(nsid, io.lba, io.nlb, v, i as u64)
            }
        } else if io.write {
            IoRequest::write(nsid, io.lba, io.nlb, buf.whole(), i as u64)
        } else {
            IoRequest::read(nsid, io.lba, io.nlb, buf.whole(), i as u64)
        };
        let nq = self.qpairs.len();
        self.qpairs[i % nq].submit(req).map_err(|(e, _)| e)
    }

    #[inline]
    fn poll(&mut self, q: usize, out: &mut Vec<IoCompletion>) {
        self.qpairs[q].poll(POLL_BATCH, &mut |c| out.push(c));
    }

    #[inline]
    fn completion_time(&self) -> u64 {
        clock::ticks()
    }

    #[inline]
    fn flush(&mut self, q: usize) {
        self.qpairs[q].flush();
    }

    fn start_measurement(&mut self) {
        for (s, q) in self.snap.iter_mut().zip(&self.qpairs) {
            *s = q.stats();
        }
    }

    fn finish(&mut self, r: &mut NsResult) {
        r.counters = self
            .qpairs
            .iter()
            .zip(&self.snap)
            .map(|(q, b)| q.stats().since(b))
            .collect();
    }

    fn abandon(&mut self) {
        std::mem::forget(std::mem::take(&mut self.qpairs));
        // I/O may still be in flight on the units' slices.
        std::mem::forget(std::mem::take(&mut self.units));
    }
}

/// One namespace's (or bdev's) work on one core, built before the run.
pub struct NsJob<B: Backend> {
    /// Controller name (PCI address), or bdev name.
    pub device: String,
    /// Namespace.
    pub nsid: u32,
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks per I/O.
    pub nlb: u32,
    /// I/O-sized slots in the namespace: offsets are `0..slots` times `nlb`.
    pub slots: u64,
    /// Slots this core writes the verify pattern to before the run.
    pub fill: std::ops::Range<u64>,
    /// `-d`: I/Os to start in the measured phase before stopping; `u64::MAX`: no limit.
    pub limit: u64,
    /// Where the I/O goes.
    pub backend: B,
    /// One buffer per outstanding I/O.
    pub bufs: Vec<B::Buf>,
}

impl<B: Backend> std::fmt::Debug for NsJob<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsJob")
            .field("device", &self.device)
            .field("nsid", &self.nsid)
            .field("fill", &self.fill)
            .finish()
    }
}

/// The work of one core.
#[derive(Debug)]
pub struct WorkerJob<B: Backend> {
    /// Core to pin to.
    pub core: usize,
    /// Namespaces.
    pub ns: Vec<NsJob<B>>,
}

/// Run parameters shared by every worker.
#[derive(Debug, Clone)]
pub struct Params {
    /// Percent of reads.
    pub read_percent: u8,
    /// Random offsets.
    pub random: bool,
    /// Pattern writes, checked reads.
    pub verify: bool,
    /// Seed of the pattern and of the offsets.
    pub seed: u64,
    /// Warm-up, in TSC ticks.
    pub warmup_ticks: u64,
    /// Measured time, in TSC ticks.
    pub run_ticks: u64,
    /// Pin threads (off in unit tests, which may run on any core).
    pub pin: bool,
    /// `-Q`: a failed I/O is counted and its slot starts the next I/O (else the
    /// slot retires).
    pub continue_on_error: bool,
}

/// What the workers share with the main thread: a stop flag, a completion count per
/// worker for the progress line, and the start barrier after the verify fill.
#[derive(Debug)]
pub struct Shared {
    /// Set to end the run early.
    pub stop: AtomicBool,
    /// Completions so far, per worker (relaxed; for the progress line only).
    pub done: Vec<AtomicU64>,
    /// Set by each worker when the measured phase starts (after fill and warm-up).
    pub measuring: Vec<AtomicBool>,
    /// Failed I/Os so far, per worker (relaxed; for `-Q`'s error log only).
    pub errors: Vec<AtomicU64>,
    /// The latest failed I/O's [`ErrorWord`], per worker (relaxed; `-Q`'s error log).
    pub last_error: Vec<AtomicU32>,
    /// All workers start timing together, after the verify fill.
    pub start: Barrier,
}

impl Shared {
    /// For `workers` workers.
    pub fn new(workers: usize) -> Self {
        Shared {
            stop: AtomicBool::new(false),
            done: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            measuring: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            errors: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            last_error: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            start: Barrier::new(workers),
        }
    }
}

/// A failed I/O as the workers publish it for the main thread's error log: its
/// status field (bits 14:0) and whether it was a write (bit 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorWord(pub u32);

impl ErrorWord {
    /// The word of a failed read or write with `status`.
    pub fn new(write: bool, status: Status) -> Self {
        ErrorWord(status.0 as u32 | (write as u32) << 16)
    }
    /// spdk_nvme_perf's line for it: `Read completed with error (sct=0, sc=2)`.
    pub fn describe(self) -> String {
        let status = Status(self.0 as u16);
        let op = if self.0 >> 16 & 1 == 1 {
            "Write"
        } else {
            "Read"
        };
        format!(
            "{op} completed with error (sct={}, sc={})",
            status.sct(),
            status.sc()
        )
    }
}

/// The measured results of one namespace on one core.
#[derive(Debug, Clone)]
pub struct NsResult {
    /// Controller name (PCI address).
    pub device: String,
    /// Namespace.
    pub nsid: u32,
    /// Core.
    pub core: usize,
    /// I/Os completed successfully while measuring.
    pub ios: u64,
    /// Of which reads.
    pub reads: u64,
    /// Bytes per I/O.
    pub io_size: u64,
    /// Measured seconds.
    pub secs: f64,
    /// Sum of latencies, ns.
    pub lat_sum_ns: u128,
    /// Smallest latency, ns (0 if no I/O).
    pub lat_min_ns: u64,
    /// Largest latency, ns.
    pub lat_max_ns: u64,
    /// Latency distribution, ns.
    pub hist: Histogram<u64>,
    /// Failed I/Os (status or submit error), fill and drain included.
    pub errors: u64,
    /// The first failure, described.
    pub first_error: Option<String>,
    /// Reads whose data did not match the pattern.
    pub mismatches: u64,
    /// The first mismatch.
    pub first_mismatch: Option<Mismatch>,
    /// Queue pair counters over the measured phase (high-water mark: whole run).
    pub counters: Vec<QpairStats>,
    /// With `--multipath`: the channel's per-path and failover counters.
    pub mpath: Option<super::mpath::MpathRowStats>,
    /// PCI vendor and device ID of the controller, for the row name (`[1b36:0010]`);
    /// `None` for a device without one (the software controller, a bdev).
    pub pci_id: Option<(u16, u16)>,
}

impl NsResult {
    /// I/Os per second.
    pub fn iops(&self) -> f64 {
        if self.secs > 0.0 {
            self.ios as f64 / self.secs
        } else {
            0.0
        }
    }
    /// MiB per second.
    pub fn mibps(&self) -> f64 {
        self.iops() * self.io_size as f64 / (1 << 20) as f64
    }
    /// Average latency, us.
    pub fn avg_us(&self) -> f64 {
        if self.ios == 0 {
            0.0
        } else {
            self.lat_sum_ns as f64 / self.ios as f64 / 1000.0
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Task {
    start: u64,
    lba: u64,
    write: bool,
    busy: bool,
}

struct NsState<B: Backend> {
    job: NsJob<B>,
    tasks: Vec<Task>,
    comps: Vec<IoCompletion>,
    busy: usize,
    seq_next: u64,
    /// Next fill slot, during the fill phase.
    fill_next: u64,
    /// The latest I/O that completed with an error status (`-Q`'s error log).
    last_error: ErrorWord,
    r: NsResult,
}

/// Completions taken per poll of one queue pair.
const POLL_BATCH: usize = 64;
/// How long the drain after the run may take before buffers are leaked rather than
/// freed under a device that may still write them.
const DRAIN_TIMEOUT_MS: u64 = 60_000;

/// Converts TSC ticks to ns with one multiply and shift.
#[derive(Debug, Clone, Copy)]
struct TickScale(u128);

impl TickScale {
    fn new() -> Self {
        TickScale((1_000_000_000u128 << 32) / clock::ticks_per_sec() as u128)
    }
    #[inline]
    fn ns(self, ticks: u64) -> u64 {
        ((ticks as u128 * self.0) >> 32) as u64
    }
}

impl<B: Backend> NsState<B> {
    fn new(job: NsJob<B>, core: usize, io_size: u64) -> Self {
        let depth = job.bufs.len();
        NsState {
            tasks: vec![Task::default(); depth],
            comps: Vec::with_capacity(depth.max(POLL_BATCH) + 16),
            busy: 0,
            seq_next: 0,
            fill_next: job.fill.start,
            last_error: ErrorWord(0),
            r: NsResult {
                device: job.device.clone(),
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
                pci_id: None,
            },
            job,
        }
    }

    fn reset_measurement(&mut self) {
        self.r.ios = 0;
        self.r.reads = 0;
        self.r.lat_sum_ns = 0;
        self.r.lat_min_ns = u64::MAX;
        self.r.lat_max_ns = 0;
        self.r.hist.reset();
        self.job.backend.start_measurement();
    }

    fn fail(&mut self, what: std::fmt::Arguments<'_>) {
        self.r.errors += 1;
        if self.r.first_error.is_none() {
            self.r.first_error = Some(what.to_string());
        }
    }

    /// Starts I/O `i`: a fill write when `fill` is set, else the workload's next I/O.
    /// False if nothing was submitted (fill done, or the submit failed).
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
            // SAFETY: task `i` is idle (not busy), so no I/O is in flight on its buffer.
            let data = unsafe { buf.bytes_mut() };
            pattern::fill(data, lba, self.job.block_size as usize, p.seed);
        }
        let t = &mut self.tasks[i];
        t.lba = lba;
        t.write = write;
        t.start = clock::ticks();
        let io = Submission {
            slot: i,
            write,
            lba,
            nlb: self.job.nlb,
            start: t.start,
        };
        match self.job.backend.submit(io, buf) {
            Ok(()) => {
                t.busy = true;
                self.busy += 1;
                true
            }
            Err(e) => {
                let op = if write { "write" } else { "read" };
                self.fail(format_args!("{op} at LBA {lba}: submit failed: {e}"));
                false
            }
        }
    }

    /// False once `-d`'s count of I/Os is started (completed, failed or in flight).
    #[inline]
    fn may_start(&self) -> bool {
        self.r.ios + self.r.errors + (self.busy as u64) < self.job.limit
    }

    /// Rings every queue's doorbells.
    fn flush(&mut self) {
        for q in 0..self.job.backend.queues() {
            self.job.backend.flush(q);
        }
    }

    /// Polls every queue once; handles each completion and, if `resubmit`, starts
    /// the next I/O in its slot. Returns completions handled.
    #[inline]
    fn poll(
        &mut self,
        p: &Params,
        rng: &mut XorShift,
        scale: TickScale,
        measuring: bool,
        resubmit: bool,
        fill: bool,
    ) -> u64 {
        let mut handled = 0;
        for q in 0..self.job.backend.queues() {
            self.comps.clear();
            self.job.backend.poll(q, &mut self.comps);
            if self.comps.is_empty() {
                // Nothing submitted since the poll, which rang the doorbells.
                continue;
            }
            for k in 0..self.comps.len() {
                let c = self.comps[k];
                let now = self.job.backend.completion_time();
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
                    self.last_error = ErrorWord::new(t.write, c.status);
                    // The slot retires (a failing device should end the run, not
                    // spin), unless -Q asked to go on.
                    if p.continue_on_error && resubmit && self.may_start() {
                        self.submit(i, p, rng, fill);
                    }
                    continue;
                }
                if !t.write && p.verify {
                    // SAFETY: the read completed, so the device no longer writes this
                    // buffer, and it is not resubmitted until the check is done.
                    let data = unsafe { self.job.bufs[i].bytes() };
                    if let Some(m) =
                        pattern::check(data, t.lba, self.job.block_size as usize, p.seed)
                    {
                        self.r.mismatches += 1;
                        if self.r.first_mismatch.is_none() {
                            self.r.first_mismatch = Some(m);
                        }
                    }
                }
                if measuring {
                    let ns = scale.ns(now.wrapping_sub(t.start)).max(1);
                    let r = &mut self.r;
                    r.ios += 1;
                    r.reads += u64::from(!t.write);
                    r.lat_sum_ns += ns as u128;
                    r.lat_min_ns = r.lat_min_ns.min(ns);
                    r.lat_max_ns = r.lat_max_ns.max(ns);
                    r.hist.saturating_record(ns);
                }
                if resubmit && self.may_start() {
                    self.submit(i, p, rng, fill);
                }
            }
            self.job.backend.flush(q);
        }
        handled
    }
}

/// Hands this worker's error count and latest failed I/O to the main thread, which
/// prints `-Q`'s error log (the worker itself never prints). `published` is the count
/// this worker last handed over, so an unchanged count costs no shared-memory access.
#[inline]
fn publish_errors<B: Backend>(
    states: &[NsState<B>],
    idx: usize,
    shared: &Shared,
    published: &mut u64,
) {
    let errors: u64 = states.iter().map(|s| s.r.errors).sum();
    if errors != *published {
        if let Some(s) = states.iter().rev().find(|s| s.last_error.0 != 0) {
            shared.last_error[idx].store(s.last_error.0, Ordering::Relaxed);
        }
        shared.errors[idx].store(errors, Ordering::Relaxed);
        *published = errors;
    }
}

/// Runs one worker to the end: verify fill (if its job has a fill range), barrier,
/// warm-up, measured phase, drain. Returns one result per namespace.
pub fn run_worker<B: Backend>(
    job: WorkerJob<B>,
    idx: usize,
    p: &Params,
    shared: &Shared,
) -> Vec<NsResult> {
    if p.pin {
        core_affinity::set_for_current(core_affinity::CoreId { id: job.core });
    }
    let mut states: Vec<NsState<B>> = job
        .ns
        .into_iter()
        .map(|j| {
            let s = j.nlb as u64 * j.block_size as u64;
            NsState::new(j, job.core, s)
        })
        .collect();
    let scale = TickScale::new();
    let mut rng = XorShift::new(p.seed ^ (job.core as u64).wrapping_mul(0x9e37_79b9));
    let done = &shared.done[idx];
    let mut total = 0u64;
    let mut errors_published = 0u64;

    // Verify fill: sequential pattern writes over this core's share, all slots busy.
    let fill_wanted = states.iter().any(|s| !s.job.fill.is_empty());
    if fill_wanted {
        for s in states.iter_mut() {
            for i in 0..s.tasks.len() {
                if !s.submit(i, p, &mut rng, true) {
                    break;
                }
            }
            s.flush();
        }
        while states.iter().any(|s| s.busy > 0) && !shared.stop.load(Ordering::Relaxed) {
            for s in states.iter_mut() {
                total += s.poll(p, &mut rng, scale, false, true, true);
            }
            done.store(total, Ordering::Relaxed);
            publish_errors(&states, idx, shared, &mut errors_published);
        }
    }
    shared.start.wait();

    let t0 = clock::ticks();
    let warm_end = t0 + p.warmup_ticks;
    let end = warm_end + p.run_ticks;
    let mut measuring = p.warmup_ticks == 0;
    let mut measure_start = t0;
    if measuring {
        shared.measuring[idx].store(true, Ordering::Relaxed);
    }
    for s in states.iter_mut() {
        s.reset_measurement();
        for i in 0..s.tasks.len() {
            if s.may_start() {
                s.submit(i, p, &mut rng, false);
            }
        }
        s.flush();
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
            shared.measuring[idx].store(true, Ordering::Relaxed);
        }
        if now >= end || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let mut busy = 0;
        for s in states.iter_mut() {
            total += s.poll(p, &mut rng, scale, measuring, true, false);
            busy += s.busy;
        }
        done.store(total, Ordering::Relaxed);
        publish_errors(&states, idx, shared, &mut errors_published);
        if busy == 0 {
            // Every slot retired on errors, or -d's count is done.
            break;
        }
    }
    let secs = if measuring {
        scale.ns(now.min(end).saturating_sub(measure_start)) as f64 / 1e9
    } else {
        0.0
    };
    for s in states.iter_mut() {
        s.r.secs = secs;
        s.job.backend.finish(&mut s.r);
    }
    // Drain: what is in flight completes (the driver's command timeout bounds it; a
    // multipath channel fails over, or fails after fast_io_fail_timeout); nothing
    // new starts.
    let drain_end = clock::ticks() + clock::ms_to_ticks(DRAIN_TIMEOUT_MS);
    while states.iter().any(|s| s.busy > 0) && clock::ticks() < drain_end {
        for s in states.iter_mut() {
            s.poll(p, &mut rng, scale, false, false, false);
        }
        publish_errors(&states, idx, shared, &mut errors_published);
    }
    let mut out = Vec::with_capacity(states.len());
    for mut s in states {
        if s.busy > 0 {
            // The device may still write these buffers: never hand them back.
            let busy = s.busy;
            s.fail(format_args!(
                "{busy} I/Os still {} after {} s of draining",
                B::IN_FLIGHT,
                DRAIN_TIMEOUT_MS / 1000
            ));
            std::mem::forget(std::mem::take(&mut s.job.bufs));
            s.job.backend.abandon();
        }
        if s.r.lat_min_ns == u64::MAX {
            s.r.lat_min_ns = 0;
        }
        out.push(s.r);
        // Queue pairs and channels are dropped here, on their own thread.
    }
    out
}
