// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Guest-side scenarios for the driver's end-to-end tests. Run inside a QEMU guest
//! against controllers bound to vfio-pci:
//!
//! ```text
//! nvme-e2e-driver identify BDF
//! nvme-e2e-driver rw BDF          write then read back, 512 B to 4 MiB, PRP-list offsets
//! nvme-e2e-driver sizes BDF MODE  every size 512 B..MDTS and past it, MODE sgl or prp
//! nvme-e2e-driver threads BDF     two threads, each with its own queue pair
//! nvme-e2e-driver reset BDF       controller resets in the middle of verified traffic
//! nvme-e2e-driver unplug BDF ID   hot-unplug (QMP device_del ID) in the middle of traffic
//! ```
//!
//! Each prints `PASS <scenario>` and exits 0, or says what failed and exits 1.
//! Every wait has a deadline.

use nvme_driver::vfio::VfioBus;
use nvme_driver::{
    Controller, ControllerOptions, CtrlState, DmaBuf, IoQpair, IoRequest, QpairOptions, Status,
};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

const DEADLINE: Duration = Duration::from_secs(60);

fn open(bdf: &str) -> R<Controller> {
    open_with(bdf, ControllerOptions::default())
}

fn open_with(bdf: &str, opts: ControllerOptions) -> R<Controller> {
    let bus = VfioBus::open(bdf).map_err(|e| e.to_string())?;
    Controller::init(bus, opts).map_err(|e| e.to_string())
}

fn fill(buf: &mut DmaBuf, seed: u64) -> R<()> {
    let mut v = vec![0u8; buf.len()];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    buf.write_at(0, &v).map_err(|e| e.to_string())
}

fn bytes(buf: &DmaBuf) -> Vec<u8> {
    let mut v = vec![0u8; buf.len()];
    buf.read_at(0, &mut v)
        .expect("whole-buffer read is in bounds");
    v
}

/// Submits one request and polls until it completes; returns its status.
fn sync_io(qp: &mut IoQpair, req: IoRequest) -> R<Status> {
    qp.submit(req).map_err(|(e, _)| e.to_string())?;
    let start = Instant::now();
    let mut status = None;
    while status.is_none() {
        qp.poll(16, &mut |c| status = Some(c.status));
        if start.elapsed() > DEADLINE {
            return Err(format!(
                "request {:?} did not complete within {DEADLINE:?}",
                req.op
            ));
        }
    }
    Ok(status.expect("loop ends when set"))
}

fn identify(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let id = ctrl.identify();
    println!(
        "{bdf}: vid {:#06x} sn '{}' mn '{}' fr '{}' subnqn '{}'",
        id.vid, id.sn, id.mn, id.fr, id.subnqn
    );
    println!(
        "{bdf}: CAP {:#018x} MDTS {} bytes, {} I/O queues, shadow doorbells {}",
        ctrl.cap().0,
        ctrl.max_transfer_bytes(),
        ctrl.io_queues(),
        if ctrl.uses_shadow_doorbells() {
            "on"
        } else {
            "off"
        }
    );
    if id.vid != 0x1b36 {
        return Err(format!("vendor {:#x} is not QEMU's 0x1b36", id.vid));
    }
    // QEMU's controller offers Doorbell Buffer Config (OACS bit 8, property `dbcs`):
    // every other case of this boot but `sizes prp` runs over shadow doorbells.
    if !id.dbbuf_supported() || !ctrl.uses_shadow_doorbells() {
        return Err(format!(
            "shadow doorbells not in use (OACS {:#x}): QEMU's controller offers Doorbell Buffer Config",
            id.oacs
        ));
    }
    let ns = ctrl.namespace(1).map_err(|e| e.to_string())?;
    println!(
        "{bdf}: namespace 1: {} blocks of {} bytes",
        ns.nsze, ns.block_size
    );
    if ns.nsze == 0 {
        return Err("namespace 1 is empty".into());
    }
    Ok(())
}

fn rw(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let bs = ctrl.namespace(1).map_err(|e| e.to_string())?.block_size as usize;
    let mut qp = ctrl
        .create_io_qpair(QpairOptions::default())
        .map_err(|e| e.to_string())?;
    let sizes = [
        512usize,
        4096,
        8192,
        12288,
        65536,
        131072 + 512,
        1 << 20,
        4 << 20,
    ];
    let offsets = [0usize, 512, 3584];
    let mut n = 0;
    for &size in &sizes {
        if size % bs != 0 {
            continue;
        }
        for &off in &offsets {
            let mut w = ctrl.alloc_buffer(size + off).map_err(|e| e.to_string())?;
            let r = ctrl.alloc_buffer(size + off).map_err(|e| e.to_string())?;
            fill(&mut w, n + 1)?;
            let slba = n * 16;
            let nlb = (size / bs) as u32;
            let st = sync_io(
                &mut qp,
                IoRequest::write(
                    1,
                    slba,
                    nlb,
                    w.slice(off, size).map_err(|e| e.to_string())?,
                    n,
                ),
            )?;
            if !st.is_success() {
                return Err(format!("write of {size} bytes at offset {off}: {st}"));
            }
            let st = sync_io(
                &mut qp,
                IoRequest::read(
                    1,
                    slba,
                    nlb,
                    r.slice(off, size).map_err(|e| e.to_string())?,
                    n,
                ),
            )?;
            if !st.is_success() {
                return Err(format!("read of {size} bytes at offset {off}: {st}"));
            }
            if bytes(&w)[off..] != bytes(&r)[off..] {
                return Err(format!(
                    "data read back differs: {size} bytes at buffer offset {off}, LBA {slba}"
                ));
            }
            n += 1;
        }
    }
    let st = qp.stats();
    println!(
        "rw: {n} write/read pairs verified; {} requests as {} commands; stray completions {}, malformed {}",
        st.submitted, st.commands, st.stray_completions, st.malformed_completions
    );
    if st.submitted != st.completed || st.stray_completions + st.malformed_completions != 0 {
        return Err(format!("counts do not add up: {st:?}"));
    }
    Ok(())
}

/// Every transfer size from 512 bytes to the largest command (MDTS) in 512-byte
/// steps, and past it (split), written and read back with data described by SGLs
/// (`mode` "sgl": the controller must take them) or PRPs ("prp": forced); the buffer
/// offset cycles through 0, 4, 512 and 4092 bytes into a page.
fn sizes(bdf: &str, mode: &str) -> R<()> {
    let sgl = match mode {
        "sgl" => true,
        "prp" => false,
        _ => return Err(format!("sizes: mode {mode:?} is neither sgl nor prp")),
    };
    // PRPs also go without shadow doorbells: the doorbell registers' path is
    // covered in this boot too.
    let ctrl = open_with(
        bdf,
        ControllerOptions {
            enable_sgl: sgl,
            shadow_doorbells: sgl,
            ..ControllerOptions::default()
        },
    )?;
    if ctrl.uses_shadow_doorbells() != sgl {
        return Err(format!(
            "sizes {mode}: shadow doorbells in use: {}",
            ctrl.uses_shadow_doorbells()
        ));
    }
    if ctrl.uses_sgl() != sgl {
        return Err(format!(
            "sizes {mode}: the driver uses SGLs: {} (SGLS {:#x})",
            ctrl.uses_sgl(),
            ctrl.identify().sgls
        ));
    }
    let bs = ctrl.namespace(1).map_err(|e| e.to_string())?.block_size as usize;
    let max = ctrl.max_transfer_bytes() as usize;
    let mut qp = ctrl
        .create_io_qpair(QpairOptions::default())
        .map_err(|e| e.to_string())?;
    let mut lens: Vec<usize> = (bs..=max).step_by(bs).collect();
    lens.extend([max + bs, 2 * max, 2 * max + 4096 + bs]);
    let offsets = [0usize, 4, 512, 4092];
    let room = lens[lens.len() - 1] + 4096;
    let mut w = ctrl.alloc_buffer(room).map_err(|e| e.to_string())?;
    let r = ctrl.alloc_buffer(room).map_err(|e| e.to_string())?;
    let blocks = ctrl.namespace(1).map_err(|e| e.to_string())?.nsze;
    // The pattern is written once; each transfer stamps its own number and the
    // block's into the first 8 bytes of every block, so a block that was not moved
    // (or came from another transfer) shows, without refilling megabytes per size
    // (the guest runs under TCG). Every 16th transfer is also compared whole.
    fill(&mut w, 7)?;
    let stamp = |i: usize, b: usize| ((i as u64) << 32 | b as u64).to_le_bytes();
    let mut slba = 0u64;
    for (i, &len) in lens.iter().enumerate() {
        let off = offsets[i % offsets.len()];
        let nlb = (len / bs) as u32;
        if slba + nlb as u64 > blocks {
            slba = 0;
        }
        for b in 0..nlb as usize {
            w.write_at(off + b * bs, &stamp(i, b))
                .map_err(|e| e.to_string())?;
        }
        let what = format!("{mode}: {len} bytes at buffer offset {off}, LBA {slba}");
        let slice = |b: &DmaBuf| b.slice(off, len).map_err(|e| e.to_string());
        let st = sync_io(&mut qp, IoRequest::write(1, slba, nlb, slice(&w)?, 0))?;
        if !st.is_success() {
            return Err(format!("write of {what}: {st}"));
        }
        let st = sync_io(&mut qp, IoRequest::read(1, slba, nlb, slice(&r)?, 1))?;
        if !st.is_success() {
            return Err(format!("read of {what}: {st}"));
        }
        let mut got = [0u8; 8];
        for b in 0..nlb as usize {
            r.read_at(off + b * bs, &mut got)
                .map_err(|e| e.to_string())?;
            if got != stamp(i, b) {
                return Err(format!("block {b} read back differs: {what}"));
            }
        }
        if i % 16 == 0 {
            let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
            w.read_at(off, &mut a).map_err(|e| e.to_string())?;
            r.read_at(off, &mut b).map_err(|e| e.to_string())?;
            if a != b {
                return Err(format!("data read back differs: {what}"));
            }
        }
        slba += nlb as u64;
    }
    let st = qp.stats();
    println!(
        "sizes-{mode}: {} sizes from {bs} to {} bytes (MDTS {max}) verified; {} requests as {} commands; stray completions {}, malformed {}",
        lens.len(),
        lens[lens.len() - 1],
        st.submitted,
        st.commands,
        st.stray_completions,
        st.malformed_completions
    );
    if st.submitted != st.completed
        || st.commands <= st.submitted
        || st.stray_completions + st.malformed_completions != 0
    {
        return Err(format!(
            "counts do not add up (or nothing was split): {st:?}"
        ));
    }
    Ok(())
}

/// What became of the requests of [`traffic`]. Every request accepted by `submit`
/// completes exactly once: `completions == accepted` and
/// `completions == succeeded + aborted + failed`; [`Tally::check`] says so or why not.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Requests accepted by `submit` (a resubmission is a new request).
    accepted: u64,
    /// Submits refused (only when failure is allowed: the controller is gone).
    refused: u64,
    /// Completions delivered.
    completions: u64,
    /// Completed with success.
    succeeded: u64,
    /// Completed with a path error while the queue pair was alive (a reset aborted
    /// them) and resubmitted.
    aborted: u64,
    /// Completed with an error and not resubmitted.
    failed: u64,
    /// The queue pair's count of completions that matched no command in flight, and
    /// of those with an impossible SQ head: both must be zero.
    stray: u64,
    malformed: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.completions += o.completions;
        self.succeeded += o.succeeded;
        self.aborted += o.aborted;
        self.failed += o.failed;
        self.stray += o.stray;
        self.malformed += o.malformed;
    }

    /// The line the host-side test parses.
    fn line(&self) -> String {
        format!(
            "accepted={} completions={} succeeded={} aborted={} failed={} refused={} stray={} malformed={}",
            self.accepted,
            self.completions,
            self.succeeded,
            self.aborted,
            self.failed,
            self.refused,
            self.stray,
            self.malformed
        )
    }

    /// Every accepted request completed once, the outcomes add up, nothing stray.
    fn check(&self) -> R<()> {
        if self.completions != self.accepted {
            return Err(format!(
                "{} requests accepted but {} completions: {}",
                self.accepted,
                self.completions,
                self.line()
            ));
        }
        if self.succeeded + self.aborted + self.failed != self.completions {
            return Err(format!(
                "outcomes do not add up to the completions: {}",
                self.line()
            ));
        }
        if self.stray != 0 || self.malformed != 0 {
            return Err(format!(
                "invalid completions from the device: {}",
                self.line()
            ));
        }
        Ok(())
    }
}

/// The context word of a request: a sequence number (unique per request), the slot,
/// and a read/write bit, so a completion is matched to exactly the request it ends.
fn ctx_word(seq: u64, slot: usize, write: bool) -> u64 {
    seq << 16 | (slot as u64) << 1 | write as u64
}

/// Issues the steps of [`traffic`]'s slots with fresh context words.
struct Submitter {
    base: u64,
    allow_failure: bool,
    seq: u64,
}

impl Submitter {
    /// Submits slot `s`'s write or read of `buf`; records the context word the slot
    /// now waits for. False if refused (only when failure is allowed).
    fn submit(
        &mut self,
        qp: &mut IoQpair,
        s: usize,
        write: bool,
        buf: &DmaBuf,
        waiting: &mut [u64],
        t: &mut Tally,
    ) -> R<bool> {
        self.seq += 1;
        let ctx = ctx_word(self.seq, s, write);
        let lba = self.base + 8 * s as u64;
        let req = if write {
            IoRequest::write(1, lba, 8, buf.whole(), ctx)
        } else {
            IoRequest::read(1, lba, 8, buf.whole(), ctx)
        };
        match qp.submit(req) {
            Ok(()) => {
                t.accepted += 1;
                waiting[s] = ctx;
                Ok(true)
            }
            Err(_) if self.allow_failure => {
                t.refused += 1;
                Ok(false)
            }
            Err((e, _)) => Err(e.to_string()),
        }
    }
}

/// Runs verified traffic on its own queue pair: `slots` requests in flight, each
/// owning 8 blocks at `base + 8 * slot`, writing then reading back. Requests aborted by
/// a reset are resubmitted. Fails on a completion that is not the one its slot waits
/// for (a duplicate or a stray), and when the counts do not add up.
fn traffic(
    ctrl: &Controller,
    base: u64,
    slots: usize,
    stop: &AtomicBool,
    allow_failure: bool,
) -> R<Tally> {
    let mut qp = ctrl
        .create_io_qpair(QpairOptions {
            entries: 64,
            pending_max: 1024,
            timeout_ms: 10_000,
        })
        .map_err(|e| e.to_string())?;
    let bs = ctrl.namespace(1).map_err(|e| e.to_string())?.block_size as usize;
    let len = 8 * bs;
    let mut wbufs = Vec::new();
    let mut rbufs = Vec::new();
    for _ in 0..slots {
        wbufs.push(ctrl.alloc_buffer(len).map_err(|e| e.to_string())?);
        rbufs.push(ctrl.alloc_buffer(len).map_err(|e| e.to_string())?);
    }
    // Per slot: 0 idle, 1 writing, 2 reading; the context word it waits for.
    let mut phase = vec![0u8; slots];
    let mut waiting = vec![u64::MAX; slots];
    let mut gen = vec![0u64; slots];
    let mut t = Tally::default();
    let mut sub = Submitter {
        base,
        allow_failure,
        seq: 0,
    };
    let mut done = Vec::with_capacity(1024);
    let start = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire) || qp.is_failed();
        for s in 0..slots {
            if phase[s] == 0 && !stopping {
                gen[s] += 1;
                fill(&mut wbufs[s], gen[s] * 1000 + s as u64 + base)?;
                if sub.submit(&mut qp, s, true, &wbufs[s], &mut waiting, &mut t)? {
                    phase[s] = 1;
                }
            }
        }
        done.clear();
        qp.poll(256, &mut |c| done.push(c));
        for c in &done {
            let s = (c.ctx >> 1 & 0x7fff) as usize;
            if s >= slots || phase[s] == 0 || c.ctx != waiting[s] {
                return Err(format!(
                    "completion with context {:#x} (sequence {}, slot {s}, write {}) is not \
                     one a slot waits for: a request completed twice, or a stray",
                    c.ctx,
                    c.ctx >> 16,
                    c.ctx & 1
                ));
            }
            if (c.ctx & 1 == 1) != (phase[s] == 1) {
                return Err(format!(
                    "slot {s}: the read/write bit of {:#x} is wrong",
                    c.ctx
                ));
            }
            waiting[s] = u64::MAX;
            t.completions += 1;
            let lba = base + 8 * s as u64;
            if c.status.is_success() {
                t.succeeded += 1;
                if phase[s] == 1 {
                    phase[s] = 2;
                    rbufs[s].fill(0);
                    if !sub.submit(&mut qp, s, false, &rbufs[s], &mut waiting, &mut t)? {
                        phase[s] = 0;
                    }
                } else {
                    if bytes(&wbufs[s]) != bytes(&rbufs[s]) {
                        return Err(format!(
                            "LBA {lba}: data read back differs from what was written"
                        ));
                    }
                    phase[s] = 0;
                }
            } else if c.status.is_path_error() && !qp.is_failed() {
                // Aborted by a reset: resubmit the same step.
                t.aborted += 1;
                let (write, buf) = if phase[s] == 1 {
                    (true, &wbufs[s])
                } else {
                    (false, &rbufs[s])
                };
                if !sub.submit(&mut qp, s, write, buf, &mut waiting, &mut t)? {
                    phase[s] = 0;
                }
            } else if allow_failure {
                t.failed += 1;
                phase[s] = 0;
            } else {
                return Err(format!("LBA {lba}: {}", c.status));
            }
        }
        if stopping && phase.iter().all(|&p| p == 0) {
            break;
        }
        if start.elapsed() > DEADLINE {
            let open: Vec<usize> = (0..slots).filter(|&s| phase[s] != 0).collect();
            return Err(format!(
                "traffic did not drain within {DEADLINE:?}: slots {open:?} outstanding, {:?}",
                qp.stats()
            ));
        }
    }
    if qp.outstanding() != 0 {
        return Err(format!("{} requests never completed", qp.outstanding()));
    }
    let st = qp.stats();
    t.stray = st.stray_completions;
    t.malformed = st.malformed_completions;
    if st.submitted != t.accepted || st.completed != t.completions {
        return Err(format!(
            "the queue pair counted {} submitted and {} completed, the caller {} and {}",
            st.submitted, st.completed, t.accepted, t.completions
        ));
    }
    t.check()?;
    Ok(t)
}

/// [`traffic`] on a thread of its own, with its own handle to the controller.
struct TrafficThread(std::thread::JoinHandle<R<Tally>>);

impl TrafficThread {
    fn spawn(
        ctrl: &Controller,
        base: u64,
        slots: usize,
        stop: &Arc<AtomicBool>,
        allow_failure: bool,
    ) -> Self {
        let (c, s) = (ctrl.clone(), stop.clone());
        TrafficThread(std::thread::spawn(move || {
            traffic(&c, base, slots, &s, allow_failure)
        }))
    }

    /// Waits for the thread and returns what [`traffic`] returned.
    fn join(self) -> R<Tally> {
        self.0
            .join()
            .map_err(|_| "traffic thread panicked".to_string())?
    }
}

fn threads(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<TrafficThread> = (0..2u64)
        .map(|t| TrafficThread::spawn(&ctrl, t * 100_000, 16, &stop, false))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Release);
    let mut all = Tally::default();
    for (t, h) in handles.into_iter().enumerate() {
        let tally = h.join()?;
        println!("threads: thread {t}: {}", tally.line());
        if tally.succeeded == 0 {
            return Err(format!("thread {t} completed nothing"));
        }
        if tally.aborted + tally.failed + tally.refused != 0 {
            return Err(format!(
                "thread {t}: errors without a reset: {}",
                tally.line()
            ));
        }
        all.add(&tally);
    }
    println!("threads: counts {}", all.line());
    all.check()
}

fn reset(bdf: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let stop = Arc::new(AtomicBool::new(false));
    let h = TrafficThread::spawn(&ctrl, 0, 32, &stop, false);
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        let t = Instant::now();
        ctrl.reset().map_err(|e| format!("reset {i}: {e}"))?;
        println!("reset: reset {i} took {} ms", t.elapsed().as_millis());
        if ctrl.state() != CtrlState::Live {
            return Err(format!("controller is {:?} after reset", ctrl.state()));
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Release);
    let t = h.join()?;
    println!("reset: counts {} resets={}", t.line(), ctrl.reset_count());
    println!(
        "reset: {} completions = {} succeeded + {} aborted by resets and resubmitted \
         + {} failed, of {} accepted; data verified",
        t.completions, t.succeeded, t.aborted, t.failed, t.accepted
    );
    t.check()?;
    if t.failed != 0 || t.refused != 0 {
        return Err(format!("requests failed across resets: {}", t.line()));
    }
    if ctrl.reset_count() != 3 {
        return Err(format!(
            "{} resets completed, 3 expected",
            ctrl.reset_count()
        ));
    }
    if t.succeeded == 0 {
        return Err("no request succeeded".into());
    }
    Ok(())
}

fn unplug(bdf: &str, id: &str) -> R<()> {
    let ctrl = open(bdf)?;
    let stop = Arc::new(AtomicBool::new(false));
    let h = TrafficThread::spawn(&ctrl, 0, 32, &stop, true);
    std::thread::sleep(Duration::from_secs(1));
    println!("{}", e2e::device_del_line(id));
    let start = Instant::now();
    while ctrl.process_admin() != CtrlState::Failed {
        if start.elapsed() > DEADLINE {
            stop.store(true, Ordering::Release);
            return Err(format!(
                "controller still {:?} {DEADLINE:?} after device_del",
                ctrl.state()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "unplug: controller failed after {} ms: {}",
        start.elapsed().as_millis(),
        ctrl.failure().unwrap_or_default()
    );
    stop.store(true, Ordering::Release);
    let t = h.join()?;
    println!("unplug: counts {}", t.line());
    println!(
        "unplug: {} completions of {} accepted: {} succeeded, {} aborted and resubmitted, \
         {} completed with an error; {} submits refused",
        t.completions, t.accepted, t.succeeded, t.aborted, t.failed, t.refused
    );
    t.check()?;
    if t.failed == 0 {
        return Err(format!(
            "no request in flight completed with an error: the unplug did not hit traffic: {}",
            t.line()
        ));
    }
    // The device is released: the kernel finishes the unplug.
    let path = format!("/sys/bus/pci/devices/{bdf}");
    let t = Instant::now();
    while std::path::Path::new(&path).exists() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{bdf} still present 30 s after release: the device was not let go"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "unplug: {bdf} left the PCI bus {} ms after release",
        t.elapsed().as_millis()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match a.as_slice() {
        ["identify", bdf] => identify(bdf),
        ["rw", bdf] => rw(bdf),
        ["sizes", bdf, mode] => sizes(bdf, mode),
        ["threads", bdf] => threads(bdf),
        ["reset", bdf] => reset(bdf),
        ["unplug", bdf, id] => unplug(bdf, id),
        _ => {
            eprintln!(
                "usage: nvme-e2e-driver identify|rw|threads|reset BDF | sizes BDF sgl|prp | unplug BDF QOM_ID"
            );
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => {
            println!("PASS {}", a[0]);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL {}: {e}", a[0]);
            ExitCode::FAILURE
        }
    }
}
