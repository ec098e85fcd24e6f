//! The device thread: it polls the register file, fetches commands through the
//! translation table, executes them and posts completions, the way a controller's
//! firmware does. Everything here runs on that one thread; tests reach it only
//! through [`super::Faults`], the namespaces and the registers.

use super::faults::AnaTable;
use super::mapper::{DmaFault, SoftMapper};
use super::{Namespace, Shared, REGS_SIZE};
use crate::dma::Iova;
use crate::regs::{self, Aqa, Cc};
use crate::spec::{
    admin_opc, cns, feature_id, io_opc, log_id, sc, sct, AnaState, AsyncEvent, Cqe, Sqe, Status,
    CQE_SIZE, ERROR_LOG_ENTRY_SIZE, IDENTIFY_SIZE, SMART_LOG_SIZE, SQE_SIZE,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Memory page size (CC.MPS 0; CAP.MPSMAX is 0 so no other is accepted).
const PAGE: u64 = 4096;
/// Commands fetched from one SQ per scan: bounds the work between CQ postings.
const FETCH_BUDGET: usize = 64;
/// How long the device keeps scanning without sleeping after it last found work.
const SPIN: Duration = Duration::from_micros(50);
/// Asynchronous Event Request Limit, zero based (Identify Controller AERL).
const AERL: u8 = 3;
/// Error Log Page Entries, zero based (Identify Controller ELPE).
const ELPE: u8 = 63;
/// Abort Command Limit, zero based.
const ACL: u8 = 3;
/// Largest log page transfer when MDTS sets no limit.
const LOG_MAX_BYTES: usize = 1 << 20;

const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 1 << 1;
const CSTS_SHST_MASK: u32 = 3 << 2;
const CSTS_SHST_COMPLETE: u32 = 2 << 2;

/// AEC bit 11: send ANA change notices.
const AEC_ANA_CHANGE: u32 = 1 << 11;

/// Command specific status codes (section 5, per command) and generic codes that
/// `spec::sc` does not name.
mod csc {
    /// Completion Queue Invalid (Create I/O SQ).
    pub const CQ_INVALID: u8 = 0x00;
    /// Invalid Queue Identifier.
    pub const INVALID_QID: u8 = 0x01;
    /// Invalid Queue Size.
    pub const INVALID_QSIZE: u8 = 0x02;
    /// Asynchronous Event Request Limit Exceeded.
    pub const AER_LIMIT: u8 = 0x05;
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: u8 = 0x09;
    /// Invalid Queue Deletion (Delete I/O CQ with SQs attached).
    pub const INVALID_QUEUE_DELETION: u8 = 0x0c;
    /// Generic: PRP Offset Invalid.
    pub const PRP_OFFSET_INVALID: u8 = 0x13;
}

fn generic(code: u8) -> Status {
    Status::new(sct::GENERIC, code, true)
}
fn specific(code: u8) -> Status {
    Status::new(sct::COMMAND_SPECIFIC, code, true)
}
fn dma_error() -> Status {
    generic(sc::DATA_TRANSFER_ERROR)
}

/// A completion on its way to a CQ.
#[derive(Clone, Copy, Debug)]
struct Completion {
    sqid: u16,
    cqid: u16,
    cid: u16,
    dw0: u32,
    status: Status,
    /// A copy made by the duplicate fault: not duplicated again.
    copy: bool,
}

#[derive(Debug)]
struct Sq {
    iova: u64,
    entries: u16,
    head: u16,
    cqid: u16,
    /// Last out-of-range tail seen, so each bad write is counted once.
    bad_tail: u32,
}

#[derive(Debug)]
struct Cq {
    iova: u64,
    entries: u16,
    tail: u16,
    head: u16,
    phase: bool,
    /// Completions waiting for a free slot, in posting order.
    pending: VecDeque<Completion>,
}

impl Cq {
    fn new(iova: u64, entries: u16) -> Self {
        Cq {
            iova,
            entries,
            tail: 0,
            head: 0,
            phase: true,
            pending: VecDeque::new(),
        }
    }
    fn full(&self) -> bool {
        (self.tail + 1) % self.entries == self.head
    }
}

/// Adds `c` to the pending list of its CQ, if that CQ exists.
fn enqueue(cqs: &mut [Option<Cq>], c: Completion) {
    if let Some(cq) = cqs[c.cqid as usize].as_mut() {
        cq.pending.push_back(c);
    }
}

#[derive(Clone, Copy, Debug)]
struct ErrorEntry {
    count: u64,
    sqid: u16,
    cid: u16,
    status: Status,
    lba: u64,
    nsid: u32,
}

#[derive(Debug, Default)]
struct Smart {
    bytes_read: u64,
    bytes_written: u64,
    reads: u64,
    writes: u64,
}

enum Outcome {
    /// Completed with DW0 and a status.
    Done(u32, Status),
    /// Kept by the device (an Asynchronous Event Request).
    Parked,
}

pub(super) struct Device {
    sh: Arc<Shared>,
    started: Instant,
    /// CC.EN as last seen, to find edges.
    last_en: bool,
    enabled: bool,
    /// Removed or released: state dropped, registers kept at all ones.
    gone: bool,
    csts: u32,
    cc: Cc,
    sqs: Vec<Option<Sq>>,
    cqs: Vec<Option<Cq>>,
    held: Vec<Completion>,
    delayed: VecDeque<(Instant, Completion)>,
    aers: Vec<u16>,
    features: BTreeMap<u8, u32>,
    batch: Vec<Completion>,
    scratch: Vec<u8>,
    segs: Vec<(u64, usize)>,
    errors: VecDeque<ErrorEntry>,
    error_count: u64,
    smart: Smart,
}

/// The device thread's loop: scan, and when idle for a while, sleep briefly. In
/// manual mode it stands aside and the test calls `step`.
pub(super) fn run(dev: &Mutex<Device>, sh: &Shared) {
    let sleep = Duration::from_micros(sh.config.idle_sleep_us);
    let mut last_work = Instant::now();
    while !sh.stop.load(Ordering::Acquire) {
        if sh.manual.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let worked = dev.lock().unwrap_or_else(|e| e.into_inner()).step();
        if worked {
            last_work = Instant::now();
        } else if last_work.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(sleep);
        }
    }
}

impl Device {
    pub(super) fn new(sh: Arc<Shared>) -> Self {
        let nq = sh.config.max_io_queues as usize + 1;
        let mut d = Device {
            sh,
            started: Instant::now(),
            last_en: false,
            enabled: false,
            gone: false,
            csts: 0,
            cc: Cc(0),
            sqs: (0..nq).map(|_| None).collect(),
            cqs: (0..nq).map(|_| None).collect(),
            held: Vec::new(),
            delayed: VecDeque::new(),
            aers: Vec::new(),
            features: BTreeMap::new(),
            batch: Vec::new(),
            scratch: Vec::new(),
            segs: Vec::new(),
            errors: VecDeque::new(),
            error_count: 0,
            smart: Smart::default(),
        };
        d.features = d.default_features();
        d.init_regs();
        d
    }

    /// One scan, for manual mode.
    pub(super) fn step(&mut self) -> bool {
        self.sh.counters.scans.fetch_add(1, Ordering::Relaxed);
        self.scan()
    }

    fn init_regs(&mut self) {
        let c = &self.sh.config;
        let cap: u64 = c.mqes as u64 // MQES
            | 1 << 16 // CQR: queues must be physically contiguous
            | (c.cap_to as u64) << 24 // TO
            | 1 << 37; // CSS: NVM command set; DSTRD, MPSMIN, MPSMAX all 0
        let m = &self.sh.regs.mmio;
        m.write64(regs::CAP, cap);
        m.write32(regs::VS, 0x0001_0400);
        m.write32(regs::CSTS, self.csts);
    }

    fn set_csts(&mut self, v: u32) {
        if v != self.csts {
            self.csts = v;
            self.sh.regs.mmio.write32(regs::CSTS, v);
        }
    }

    fn default_features(&self) -> BTreeMap<u8, u32> {
        let nq = self.sh.config.max_io_queues as u32 - 1;
        let mut f = BTreeMap::new();
        f.insert(feature_id::NUMBER_OF_QUEUES, nq << 16 | nq);
        f.insert(
            feature_id::ASYNC_EVENT_CONFIG,
            if self.sh.config.ana {
                AEC_ANA_CHANGE
            } else {
                0
            },
        );
        f.insert(feature_id::TEMPERATURE_THRESHOLD, 343);
        f
    }

    fn max_transfer(&self) -> Option<usize> {
        match self.sh.config.mdts {
            0 => None,
            m => Some((PAGE as usize) << m),
        }
    }

    /// One pass over the registers and queues; true if anything happened.
    fn scan(&mut self) -> bool {
        if self.sh.faults.is_removed() || self.sh.released.load(Ordering::Acquire) {
            if !self.gone {
                self.drop_state();
                self.gone = true;
            }
            let m = &self.sh.regs.mmio;
            for off in (0..REGS_SIZE).step_by(4) {
                m.write32(off, u32::MAX);
            }
            return false;
        }
        self.handle_cc();
        if self.sh.faults.is_fatal() {
            self.set_csts(self.csts | CSTS_CFS);
            return false;
        }
        if !self.enabled {
            return false;
        }
        let mut worked = self.fetch_all();
        worked |= self.deliver_events();
        worked |= self.post_all();
        worked
    }

    fn handle_cc(&mut self) {
        let cc = Cc(self.sh.regs.mmio.read32(regs::CC));
        if cc.en() && !self.last_en {
            self.last_en = true;
            self.enable(cc);
        } else if !cc.en() && self.last_en {
            self.last_en = false;
            let io_queues = self.sqs[1..].iter().any(|q| q.is_some())
                || self.cqs[1..].iter().any(|q| q.is_some());
            if io_queues && !self.sh.faults.is_fatal() {
                self.sh
                    .counters
                    .disabled_with_io_queues
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.reset();
        }
        let shst = if cc.shn() != 0 { CSTS_SHST_COMPLETE } else { 0 };
        self.set_csts(self.csts & !CSTS_SHST_MASK | shst);
    }

    fn enable(&mut self, cc: Cc) {
        if self.sh.faults.is_fatal() {
            return;
        }
        let m = &self.sh.regs.mmio;
        let aqa = Aqa(m.read32(regs::AQA));
        let (asq, acq) = (m.read64(regs::ASQ), m.read64(regs::ACQ));
        let (sqn, cqn) = (aqa.asqs_entries(), aqa.acqs_entries());
        let mapper = &self.sh.mapper;
        let ok = cc.mps_shift() == 12
            && cc.css() == 0
            && cc.iosqes() == 6
            && cc.iocqes() == 4
            && asq != 0
            && acq != 0
            && asq.is_multiple_of(PAGE)
            && acq.is_multiple_of(PAGE)
            && sqn >= 2
            && cqn >= 2
            && mapper.is_mapped(Iova(asq), sqn as usize * SQE_SIZE)
            && mapper.is_mapped(Iova(acq), cqn as usize * CQE_SIZE);
        if !ok {
            // A configuration the controller cannot run: report it as fatal status
            // rather than leave the host waiting for RDY until its deadline.
            log::error!(
                "{}: cannot enable: CC {:#x}, AQA {:#x}, ASQ {asq:#x}, ACQ {acq:#x} \
                 (need 4 KiB pages, NVM command set, IOSQES 6, IOCQES 4, mapped page-aligned queues)",
                self.sh.config.name, cc.0, aqa.0
            );
            self.sh.faults.set_fatal();
            return;
        }
        self.cc = cc;
        self.sqs[0] = Some(Sq {
            iova: asq,
            entries: sqn as u16,
            head: 0,
            cqid: 0,
            bad_tail: 0,
        });
        self.cqs[0] = Some(Cq::new(acq, cqn as u16));
        self.enabled = true;
        self.set_csts(self.csts | CSTS_RDY);
    }

    fn drop_state(&mut self) {
        self.sqs.iter_mut().for_each(|q| *q = None);
        self.cqs.iter_mut().for_each(|q| *q = None);
        self.held.clear();
        self.sync_held();
        self.delayed.clear();
        self.aers.clear();
        self.batch.clear();
        self.enabled = false;
    }

    /// Publishes the number of held commands to the counters.
    fn sync_held(&self) {
        self.sh
            .counters
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// Controller reset (CC.EN 1 to 0): queues and commands in flight are dropped
    /// without completions, as QEMU does; doorbells and features return to their
    /// defaults; fatal status clears.
    fn reset(&mut self) {
        self.drop_state();
        self.features = self.default_features();
        self.sh.faults.clear_fatal();
        self.sh.faults.ana().notice_masked = false;
        let m = &self.sh.regs.mmio;
        for off in (regs::DOORBELL_BASE..REGS_SIZE).step_by(4) {
            m.write32(off, 0);
        }
        // Doorbells are zero before RDY reads 0, so a quick re-enable sees them clean.
        fence(Ordering::SeqCst);
        self.set_csts(self.csts & CSTS_SHST_MASK);
    }

    fn fetch_all(&mut self) -> bool {
        let sh = self.sh.clone();
        let mut worked = false;
        for qid in 0..self.sqs.len() {
            let Some(sq) = self.sqs[qid].as_mut() else {
                continue;
            };
            let tail = sh.regs.mmio.read32(regs::sq_tail_doorbell(qid as u16, 0));
            if tail >= sq.entries as u32 {
                if tail != sq.bad_tail {
                    sq.bad_tail = tail;
                    sh.counters
                        .invalid_doorbell_writes
                        .fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            // The host wrote the entries before the doorbell (release); read them after.
            fence(Ordering::Acquire);
            let cqid = sq.cqid;
            let mut n = 0;
            while n < FETCH_BUDGET {
                let Some(sq) = self.sqs[qid].as_mut() else {
                    break;
                };
                if sq.head as u32 == tail {
                    break;
                }
                // Never take more work than the CQ can hold: the device must not
                // overrun a CQ, so it stops fetching instead.
                if self.cqs[cqid as usize]
                    .as_ref()
                    .is_none_or(|cq| cq.pending.len() >= cq.entries as usize)
                {
                    break;
                }
                let at = sq.iova + sq.head as u64 * SQE_SIZE as u64;
                sq.head = (sq.head + 1) % sq.entries;
                match sh.mapper.read_sqe(at) {
                    Ok(sqe) => self.execute(qid as u16, cqid, sqe),
                    Err(_) => {
                        // The host unmapped a live queue: a real device would see an
                        // IOMMU fault; report it as fatal status.
                        sh.faults.set_fatal();
                        return true;
                    }
                }
                n += 1;
            }
            if n > 0 {
                worked = true;
                self.flush_batch();
            }
        }
        worked
    }

    /// Moves the completions produced by one batch of commands to their CQs.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if self.batch.len() > 1 && self.sh.faults.state().reorder {
            self.batch.reverse();
        }
        for c in self.batch.drain(..) {
            enqueue(&mut self.cqs, c);
        }
    }

    fn execute(&mut self, sqid: u16, cqid: u16, sqe: Sqe) {
        let opc = sqe.opc();
        let base = Completion {
            sqid,
            cqid,
            cid: sqe.cid(),
            dw0: 0,
            status: Status::SUCCESS,
            copy: false,
        };
        let admin = sqid == 0;
        let outcome = if admin {
            self.sh.counters.admin[opc as usize].fetch_add(1, Ordering::Relaxed);
            self.admin(&sqe, base)
        } else {
            self.sh.counters.io[opc as usize].fetch_add(1, Ordering::Relaxed);
            Outcome::Done(0, self.io(&sqe))
        };
        let Outcome::Done(dw0, status) = outcome else {
            return;
        };
        let c = Completion {
            dw0,
            status,
            ..base
        };
        if !status.is_success() {
            self.log_error(&c, &sqe);
        }
        self.finish(c, admin, admin && opc == admin_opc::ABORT);
    }

    /// Applies the drop and delay faults, then queues the completion in the batch.
    fn finish(&mut self, c: Completion, admin: bool, exempt: bool) {
        let mut f = self.sh.faults.state();
        let hold = if admin {
            let d = !exempt && f.drop_admin > 0;
            f.drop_admin -= d as u32;
            d
        } else {
            let d = f.drop_io > 0;
            f.drop_io -= d as u32;
            d
        };
        let delay_us = f.delay_us;
        drop(f);
        if hold {
            self.held.push(c);
            self.sync_held();
        } else if delay_us > 0 {
            let due = Instant::now() + Duration::from_micros(delay_us);
            self.delayed.push_back((due, c));
        } else {
            self.batch.push(c);
        }
    }

    fn log_error(&mut self, c: &Completion, sqe: &Sqe) {
        self.error_count += 1;
        let lba = match sqe.opc() {
            io_opc::READ | io_opc::WRITE | io_opc::WRITE_ZEROES if c.sqid != 0 => sqe.slba(),
            _ => 0,
        };
        self.errors.push_front(ErrorEntry {
            count: self.error_count,
            sqid: c.sqid,
            cid: c.cid,
            status: c.status,
            lba,
            nsid: sqe.nsid,
        });
        self.errors.truncate(ELPE as usize + 1);
    }

    /// Completes one outstanding Asynchronous Event Request per pending event.
    fn deliver_events(&mut self) -> bool {
        if self.aers.is_empty() {
            return false;
        }
        let enabled = self.sh.config.ana
            && self
                .features
                .get(&feature_id::ASYNC_EVENT_CONFIG)
                .is_some_and(|v| v & AEC_ANA_CHANGE != 0);
        let mut ana = self.sh.faults.ana();
        if !ana.notice_pending {
            return false;
        }
        ana.notice_pending = false;
        if !enabled {
            return false;
        }
        ana.notice_masked = true;
        drop(ana);
        let cid = self.aers.remove(0);
        let ev = AsyncEvent {
            event_type: 2,
            info: AsyncEvent::NOTICE_ANA_CHANGE,
            log_page: log_id::ANA,
        };
        enqueue(
            &mut self.cqs,
            Completion {
                sqid: 0,
                cqid: 0,
                cid,
                dw0: ev.to_dw0(),
                status: Status::SUCCESS,
                copy: false,
            },
        );
        true
    }

    fn post_all(&mut self) -> bool {
        let sh = self.sh.clone();
        let mut worked = false;
        if !self.delayed.is_empty() {
            let now = Instant::now();
            while self.delayed.front().is_some_and(|(due, _)| *due <= now) {
                let Some((_, c)) = self.delayed.pop_front() else {
                    break;
                };
                enqueue(&mut self.cqs, c);
            }
        }
        {
            let mut f = sh.faults.state();
            while let Some((cqid, cid)) = f.bogus.pop_front() {
                let sqid = self
                    .sqs
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.cqid == cqid))
                    .unwrap_or(cqid as usize) as u16;
                if let Some(cq) = self.cqs.get_mut(cqid as usize).and_then(|c| c.as_mut()) {
                    cq.pending.push_front(Completion {
                        sqid,
                        cqid,
                        cid,
                        dw0: 0,
                        status: Status::SUCCESS,
                        copy: true,
                    });
                }
            }
        }
        for cqid in 0..self.cqs.len() {
            let Some(cq) = self.cqs[cqid].as_mut() else {
                continue;
            };
            let head = sh.regs.mmio.read32(regs::cq_head_doorbell(cqid as u16, 0));
            if head < cq.entries as u32 {
                cq.head = head as u16;
            } else {
                sh.counters
                    .invalid_doorbell_writes
                    .fetch_add(1, Ordering::Relaxed);
            }
            while !cq.full() {
                let Some(c) = cq.pending.pop_front() else {
                    break;
                };
                let mut f = sh.faults.state();
                let mut phase = cq.phase;
                if f.corrupt_phase > 0 {
                    f.corrupt_phase -= 1;
                    phase = !phase;
                }
                let sq_head = f.corrupt_sq_head.pop_front().unwrap_or_else(|| {
                    self.sqs
                        .get(c.sqid as usize)
                        .and_then(|s| s.as_ref())
                        .map_or(0, |s| s.head)
                });
                let duplicate = !c.copy && f.duplicate > 0;
                f.duplicate -= duplicate as u32;
                drop(f);
                let cqe = Cqe {
                    dw0: c.dw0,
                    dw1: 0,
                    sq_head,
                    sq_id: c.sqid,
                    cid: c.cid,
                    status: c.status.0 << 1 | phase as u16,
                };
                let at = cq.iova + cq.tail as u64 * CQE_SIZE as u64;
                if sh.mapper.write_cqe(at, &cqe).is_err() {
                    sh.faults.set_fatal();
                    return true;
                }
                cq.tail += 1;
                if cq.tail == cq.entries {
                    cq.tail = 0;
                    cq.phase = !cq.phase;
                }
                sh.counters
                    .completions_posted
                    .fetch_add(1, Ordering::Relaxed);
                worked = true;
                if duplicate {
                    cq.pending.push_front(Completion { copy: true, ..c });
                }
            }
        }
        worked
    }

    // ---- Data transfer -------------------------------------------------------------

    /// Splits a transfer of `len` bytes into (IOVA, length) pieces following the
    /// PRP rules of section 4.1.1: PRP1 may have a dword-aligned offset; a second
    /// page goes in PRP2; beyond that PRP2 points to a PRP list whose last entry in
    /// a full page chains to the next list page. Every data entry after the first
    /// and every chained list pointer must have offset 0.
    fn prp_segments(
        &self,
        prp1: u64,
        prp2: u64,
        len: usize,
        out: &mut Vec<(u64, usize)>,
    ) -> Result<(), Status> {
        out.clear();
        if len == 0 {
            return Ok(());
        }
        let bad_offset = generic(csc::PRP_OFFSET_INVALID);
        if prp1 & 3 != 0 {
            return Err(bad_offset);
        }
        let first = ((PAGE - prp1 % PAGE) as usize).min(len);
        out.push((prp1, first));
        let mut rem = len - first;
        if rem == 0 {
            return Ok(());
        }
        if rem as u64 <= PAGE {
            if !prp2.is_multiple_of(PAGE) {
                return Err(bad_offset);
            }
            out.push((prp2, rem));
            return Ok(());
        }
        let mut list = prp2;
        if list & 7 != 0 {
            return Err(bad_offset);
        }
        let mut raw = [0u8; PAGE as usize];
        // Each pass consumes at least one data page (chained list pages are page
        // aligned, so they hold 511 data entries), so this ends.
        while rem > 0 {
            let slots = ((PAGE - list % PAGE) / 8) as usize;
            let pages = rem.div_ceil(PAGE as usize);
            let (n, chain) = if pages > slots {
                (slots, true)
            } else {
                (pages, false)
            };
            self.sh
                .mapper
                .read(list, &mut raw[..n * 8])
                .map_err(|_| dma_error())?;
            let entry = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw[i * 8..i * 8 + 8]);
                u64::from_le_bytes(b)
            };
            let data = if chain { n - 1 } else { n };
            for i in 0..data {
                let e = entry(i);
                if !e.is_multiple_of(PAGE) {
                    return Err(bad_offset);
                }
                let take = rem.min(PAGE as usize);
                out.push((e, take));
                rem -= take;
            }
            if chain {
                list = entry(n - 1);
                if !list.is_multiple_of(PAGE) {
                    return Err(bad_offset);
                }
            }
        }
        Ok(())
    }

    /// Walks the host buffer of `len` bytes the command's PRPs describe: calls
    /// `xfer(mapper, iova, offset, n)` for each piece of `n` bytes at `iova`, which
    /// is `offset` bytes into the transfer. A failed piece is a Data Transfer Error.
    fn transfer(
        &mut self,
        sqe: &Sqe,
        len: usize,
        mut xfer: impl FnMut(&SoftMapper, u64, usize, usize) -> Result<(), DmaFault>,
    ) -> Result<(), Status> {
        let mut segs = std::mem::take(&mut self.segs);
        let r = self
            .prp_segments(sqe.prp1, sqe.prp2, len, &mut segs)
            .and_then(|()| {
                let mut off = 0;
                for &(iova, n) in &segs {
                    xfer(&self.sh.mapper, iova, off, n).map_err(|_| dma_error())?;
                    off += n;
                }
                Ok(())
            });
        self.segs = segs;
        r
    }

    /// Copies `data` to the host buffer the command's PRPs describe.
    fn copy_to_host(&mut self, sqe: &Sqe, data: &[u8]) -> Result<(), Status> {
        self.transfer(sqe, data.len(), |m, iova, off, n| {
            m.write(iova, &data[off..off + n])
        })
    }

    /// Copies `buf.len()` bytes from the host buffer the command's PRPs describe.
    fn copy_from_host(&mut self, sqe: &Sqe, buf: &mut [u8]) -> Result<(), Status> {
        self.transfer(sqe, buf.len(), |m, iova, off, n| {
            m.read(iova, &mut buf[off..off + n])
        })
    }

    // ---- Admin commands -----------------------------------------------------------

    fn admin(&mut self, sqe: &Sqe, base: Completion) -> Outcome {
        // Fused operations and SGLs (CDW0 bits 9:8 and 15:14) are not supported.
        if sqe.cdw0 & 0xc300 != 0 {
            return Outcome::Done(0, generic(sc::INVALID_FIELD));
        }
        let r = match sqe.opc() {
            admin_opc::IDENTIFY => self.identify(sqe),
            admin_opc::GET_LOG_PAGE => self.get_log_page(sqe),
            admin_opc::CREATE_IO_CQ => self.create_cq(sqe),
            admin_opc::CREATE_IO_SQ => self.create_sq(sqe),
            admin_opc::DELETE_IO_SQ => self.delete_sq(sqe),
            admin_opc::DELETE_IO_CQ => self.delete_cq(sqe),
            admin_opc::GET_FEATURES => self.get_features(sqe),
            admin_opc::SET_FEATURES => self.set_features(sqe),
            admin_opc::ABORT => Ok(self.abort(sqe)),
            admin_opc::ASYNC_EVENT_REQUEST => {
                if self.aers.len() > AERL as usize {
                    Err(specific(csc::AER_LIMIT))
                } else {
                    self.aers.push(base.cid);
                    return Outcome::Parked;
                }
            }
            _ => Err(generic(sc::INVALID_OPCODE)),
        };
        match r {
            Ok(dw0) => Outcome::Done(dw0, Status::SUCCESS),
            Err(st) => Outcome::Done(0, st),
        }
    }

    fn ns(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.sh
            .config
            .namespaces
            .iter()
            .find(|n| n.nsid() == nsid)
            .cloned()
    }

    /// Number of Namespaces: the largest NSID.
    fn nn(&self) -> u32 {
        self.sh
            .config
            .namespaces
            .iter()
            .map(|n| n.nsid())
            .max()
            .unwrap_or(0)
    }

    fn identify(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let invalid_ns = generic(sc::INVALID_NAMESPACE);
        let data = match sqe.cdw10 & 0xff {
            cns::NAMESPACE => match self.ns(sqe.nsid) {
                Some(ns) => self.identify_ns(Some(&ns)),
                None if sqe.nsid == u32::MAX => self.identify_ns(None),
                None if sqe.nsid != 0 && sqe.nsid <= self.nn() => vec![0; IDENTIFY_SIZE],
                None => return Err(invalid_ns),
            },
            cns::CONTROLLER => self.identify_ctrl(),
            cns::ACTIVE_NS_LIST => {
                if sqe.nsid >= 0xffff_fffe {
                    return Err(invalid_ns);
                }
                let mut ids: Vec<u32> = self
                    .sh
                    .config
                    .namespaces
                    .iter()
                    .map(|n| n.nsid())
                    .filter(|&id| id > sqe.nsid)
                    .collect();
                ids.sort_unstable();
                let mut d = vec![0u8; IDENTIFY_SIZE];
                for (i, id) in ids.iter().take(IDENTIFY_SIZE / 4).enumerate() {
                    put32(&mut d, 4 * i, *id);
                }
                d
            }
            cns::NS_ID_DESCRIPTORS => {
                let ns = self.ns(sqe.nsid).ok_or(invalid_ns)?;
                let mut d = vec![0u8; IDENTIFY_SIZE];
                d[0] = 2; // NGUID
                d[1] = 16;
                d[4..20].copy_from_slice(&ns.nguid());
                d[20] = 3; // UUID
                d[21] = 16;
                d[24..40].copy_from_slice(&ns.uuid());
                d
            }
            _ => return Err(generic(sc::INVALID_FIELD)),
        };
        self.copy_to_host(sqe, &data)?;
        Ok(0)
    }

    fn multi_controller(&self) -> bool {
        self.sh.config.ana || self.sh.config.multi_controller
    }

    /// Identify Controller (section 5.17.2.1, figure 275).
    fn identify_ctrl(&self) -> Vec<u8> {
        let c = &self.sh.config;
        let mut d = vec![0u8; IDENTIFY_SIZE];
        put16(&mut d, 0, 0x1b36); // VID
        put16(&mut d, 2, 0x1af4); // SSVID
        put_ascii(&mut d[4..24], &c.serial);
        put_ascii(&mut d[24..64], &c.model);
        put_ascii(&mut d[64..72], &c.firmware);
        d[72] = 6; // RAB
        d[73..76].copy_from_slice(&[0x00, 0x54, 0x52]); // IEEE OUI
        let mut cmic = 0u8;
        if self.multi_controller() {
            cmic |= 1 << 1; // may be one of several controllers of the subsystem
        }
        if c.ana {
            cmic |= 1 << 3; // ANA reporting
        }
        d[76] = cmic;
        d[77] = c.mdts;
        put16(&mut d, 78, c.cntlid);
        put32(&mut d, 80, 0x0001_0400); // VER
        put32(&mut d, 92, if c.ana { 1 << 11 } else { 0 }); // OAES: ANA change notices
        d[111] = 1; // CNTRLTYPE: I/O controller
        d[258] = ACL;
        d[259] = AERL;
        d[261] = 1 << 2; // LPA: extended data for Get Log Page (NUMDU, LPOL/LPOU)
        d[262] = ELPE;
        put16(&mut d, 266, 343); // WCTEMP
        put16(&mut d, 268, 373); // CCTEMP
        if c.ana {
            let max_grp = c.namespaces.iter().map(|n| n.anagrpid()).max().unwrap_or(1);
            d[342] = c.anatt_s; // ANATT, seconds
                                // ANACAP: all five states reported, group IDs do not change while
                                // attached, non-zero group IDs supported.
            d[343] = 0x1f | 1 << 6 | 1 << 7;
            put32(&mut d, 344, max_grp); // ANAGRPMAX
            put32(&mut d, 348, max_grp); // NANAGRPID
        }
        d[512] = 0x66; // SQES
        d[513] = 0x44; // CQES
        put32(&mut d, 516, self.nn()); // NN
        put16(&mut d, 520, 1 << 2 | 1 << 3); // ONCS: DSM, Write Zeroes
        let nqn = c.subnqn.as_bytes();
        let n = nqn.len().min(255);
        d[768..768 + n].copy_from_slice(&nqn[..n]);
        d
    }

    /// Identify Namespace (NVM Command Set Specification, figure 97). `None` is the
    /// capabilities common to all namespaces (NSID FFFFFFFFh).
    fn identify_ns(&self, ns: Option<&Namespace>) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_SIZE];
        d[25] = 1; // NLBAF: two formats, zero based
        d[33] = 1 << 3 | 1; // DLFEAT: deallocated blocks read zeroes; Write Zeroes may deallocate
        put16(&mut d, 128, 0);
        d[128 + 2] = 9; // LBAF0: 512-byte blocks
        d[132 + 2] = 12; // LBAF1: 4096-byte blocks
        if let Some(ns) = ns {
            put64(&mut d, 0, ns.nblocks()); // NSZE
            put64(&mut d, 8, ns.nblocks()); // NCAP
            put64(&mut d, 16, ns.nblocks()); // NUSE
            d[26] = (ns.block_shift() == 12) as u8; // FLBAS
            d[30] = self.multi_controller() as u8; // NMIC: may be shared
            if self.sh.config.ana {
                put32(&mut d, 92, ns.anagrpid());
            }
            d[104..120].copy_from_slice(&ns.nguid());
        }
        d
    }

    fn get_log_page(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let invalid = generic(sc::INVALID_FIELD);
        let lid = sqe.cdw10 as u8;
        let lsp = (sqe.cdw10 >> 8) & 0x7f;
        let rae = sqe.cdw10 >> 15 & 1 == 1;
        let numd = ((sqe.cdw11 & 0xffff) as u64) << 16 | (sqe.cdw10 >> 16) as u64;
        let len = (numd + 1) * 4;
        let offset = (sqe.cdw13 as u64) << 32 | sqe.cdw12 as u64;
        let max = self.max_transfer().unwrap_or(LOG_MAX_BYTES);
        if !offset.is_multiple_of(4) || len > max as u64 {
            return Err(invalid);
        }
        let image = match lid {
            log_id::ERROR => self.error_log(),
            log_id::SMART => self.smart_log(),
            log_id::ANA if self.sh.config.ana => self.ana_log(lsp & 1 == 1),
            _ => return Err(specific(csc::INVALID_LOG_PAGE)),
        };
        if offset > image.len() as u64 {
            return Err(invalid);
        }
        // Only what was asked for goes to the host: the page from the offset, then
        // zeroes if the host asked for more than the page holds.
        let mut out = vec![0u8; len as usize];
        let from = &image[offset as usize..];
        let n = from.len().min(out.len());
        out[..n].copy_from_slice(&from[..n]);
        self.copy_to_host(sqe, &out)?;
        if lid == log_id::ANA && !rae {
            self.sh.faults.ana().notice_masked = false;
        }
        Ok(0)
    }

    /// Error Information log (section 5.16.1.2): newest entry first.
    fn error_log(&self) -> Vec<u8> {
        let mut d = vec![0u8; (ELPE as usize + 1) * ERROR_LOG_ENTRY_SIZE];
        for (i, e) in self.errors.iter().enumerate() {
            let o = i * ERROR_LOG_ENTRY_SIZE;
            put64(&mut d, o, e.count);
            put16(&mut d, o + 8, e.sqid);
            put16(&mut d, o + 10, e.cid);
            put16(&mut d, o + 12, e.status.0 << 1);
            put16(&mut d, o + 14, 0xffff); // parameter error location: not reported
            put64(&mut d, o + 16, e.lba);
            put32(&mut d, o + 24, e.nsid);
        }
        d
    }

    /// SMART / Health Information log (section 5.16.1.3).
    fn smart_log(&self) -> Vec<u8> {
        let mut d = vec![0u8; SMART_LOG_SIZE];
        put16(&mut d, 1, 311); // composite temperature, kelvin
        d[3] = 100; // available spare
        d[4] = 10; // available spare threshold
        let units = |bytes: u64| (bytes / 512).div_ceil(1000) as u128;
        put128(&mut d, 32, units(self.smart.bytes_read));
        put128(&mut d, 48, units(self.smart.bytes_written));
        put128(&mut d, 64, self.smart.reads as u128);
        put128(&mut d, 80, self.smart.writes as u128);
        put128(&mut d, 112, 1); // power cycles
        put128(
            &mut d,
            128,
            (self.started.elapsed().as_secs() / 3600) as u128,
        );
        put128(&mut d, 176, self.error_count as u128);
        d
    }

    /// Asymmetric Namespace Access log (section 5.16.1.13). With `rgo` (Return
    /// Groups Only) the descriptors list no namespaces.
    fn ana_log(&self, rgo: bool) -> Vec<u8> {
        let ana = self.sh.faults.ana();
        let table: &AnaTable = &ana;
        let mut d = vec![0u8; 16];
        put64(&mut d, 0, table.change_count);
        put16(&mut d, 8, table.groups.len() as u16);
        for (&grpid, g) in &table.groups {
            let mut nsids: Vec<u32> = if rgo {
                Vec::new()
            } else {
                self.sh
                    .config
                    .namespaces
                    .iter()
                    .filter(|n| n.anagrpid() == grpid)
                    .map(|n| n.nsid())
                    .collect()
            };
            nsids.sort_unstable();
            let o = d.len();
            d.resize(o + 32 + 4 * nsids.len(), 0);
            put32(&mut d, o, grpid);
            put32(&mut d, o + 4, nsids.len() as u32);
            put64(&mut d, o + 8, g.change_count);
            d[o + 16] = g.state.to_u8();
            for (i, id) in nsids.iter().enumerate() {
                put32(&mut d, o + 32 + 4 * i, *id);
            }
        }
        d
    }

    /// The checks Create I/O CQ and SQ share (sections 5.4 and 5.5): the size within
    /// MQES, physically contiguous (CAP.CQR), a page-aligned base, mapped memory.
    fn check_queue_memory(&self, sqe: &Sqe, entries: u32, entry_size: usize) -> Result<(), Status> {
        if entries < 2 || entries > self.sh.config.mqes as u32 + 1 {
            return Err(specific(csc::INVALID_QSIZE));
        }
        if sqe.cdw11 & 1 == 0 {
            // CAP.CQR: queues must be physically contiguous.
            return Err(generic(sc::INVALID_FIELD));
        }
        if sqe.prp1 == 0 || !sqe.prp1.is_multiple_of(PAGE) {
            return Err(generic(csc::PRP_OFFSET_INVALID));
        }
        if !self
            .sh
            .mapper
            .is_mapped(Iova(sqe.prp1), entries as usize * entry_size)
        {
            return Err(generic(sc::INVALID_FIELD));
        }
        Ok(())
    }

    fn create_cq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let qid = sqe.cdw10 as u16;
        let entries = (sqe.cdw10 >> 16) + 1;
        if qid == 0 || self.cqs.get(qid as usize).is_none_or(|q| q.is_some()) {
            return Err(specific(csc::INVALID_QID));
        }
        self.check_queue_memory(sqe, entries, CQE_SIZE)?;
        // The doorbell starts at 0 for a new queue, whatever an earlier queue with
        // this ID left in it.
        self.sh.regs.mmio.write32(regs::cq_head_doorbell(qid, 0), 0);
        self.cqs[qid as usize] = Some(Cq::new(sqe.prp1, entries as u16));
        Ok(0)
    }

    fn create_sq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let qid = sqe.cdw10 as u16;
        let entries = (sqe.cdw10 >> 16) + 1;
        let cqid = (sqe.cdw11 >> 16) as u16;
        if qid == 0 || self.sqs.get(qid as usize).is_none_or(|q| q.is_some()) {
            return Err(specific(csc::INVALID_QID));
        }
        if cqid == 0 || self.cqs.get(cqid as usize).is_none_or(|q| q.is_none()) {
            return Err(specific(csc::CQ_INVALID));
        }
        self.check_queue_memory(sqe, entries, SQE_SIZE)?;
        self.sh.regs.mmio.write32(regs::sq_tail_doorbell(qid, 0), 0);
        self.sqs[qid as usize] = Some(Sq {
            iova: sqe.prp1,
            entries: entries as u16,
            head: 0,
            cqid,
            bad_tail: 0,
        });
        Ok(0)
    }

    fn delete_sq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let qid = sqe.cdw10 as u16;
        if qid == 0 || self.sqs.get(qid as usize).is_none_or(|q| q.is_none()) {
            return Err(specific(csc::INVALID_QID));
        }
        self.sqs[qid as usize] = None;
        // Commands the device was holding complete now, before the deletion does.
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].sqid == qid {
                let mut c = self.held.remove(i);
                c.status = Status::ABORTED_SQ_DELETION;
                c.dw0 = 0;
                self.batch.push(c);
            } else {
                i += 1;
            }
        }
        self.sync_held();
        Ok(0)
    }

    fn delete_cq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let qid = sqe.cdw10 as u16;
        if qid == 0 || self.cqs.get(qid as usize).is_none_or(|q| q.is_none()) {
            return Err(specific(csc::INVALID_QID));
        }
        if self.sqs.iter().flatten().any(|s| s.cqid == qid) {
            return Err(specific(csc::INVALID_QUEUE_DELETION));
        }
        self.cqs[qid as usize] = None;
        self.delayed.retain(|(_, c)| c.cqid != qid);
        Ok(0)
    }

    fn get_features(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let fid = sqe.cdw10 as u8;
        let sel = (sqe.cdw10 >> 8) & 7;
        let v = if sel == 1 {
            self.default_features().get(&fid).copied()
        } else {
            self.features.get(&fid).copied()
        };
        Ok(v.unwrap_or(0))
    }

    fn set_features(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let fid = sqe.cdw10 as u8;
        if fid == feature_id::NUMBER_OF_QUEUES {
            let (nsqr, ncqr) = (sqe.cdw11 & 0xffff, sqe.cdw11 >> 16);
            if nsqr == 0xffff || ncqr == 0xffff {
                return Err(generic(sc::INVALID_FIELD));
            }
            let max = self.sh.config.max_io_queues as u32 - 1;
            let v = ncqr.min(max) << 16 | nsqr.min(max);
            self.features.insert(fid, v);
            return Ok(v);
        }
        self.features.insert(fid, sqe.cdw11);
        Ok(0)
    }

    /// Abort (section 5.1): only commands the device holds can be aborted; DW0 bit 0
    /// is 0 when the command was aborted, 1 when it was not.
    fn abort(&mut self, sqe: &Sqe) -> u32 {
        let sqid = sqe.cdw10 as u16;
        let cid = (sqe.cdw10 >> 16) as u16;
        let mut aborted = Completion {
            sqid,
            cqid: 0,
            cid,
            dw0: 0,
            status: Status::ABORT_REQUESTED,
            copy: false,
        };
        if let Some(i) = self
            .held
            .iter()
            .position(|c| c.sqid == sqid && c.cid == cid)
        {
            aborted.cqid = self.held.remove(i).cqid;
            self.sync_held();
        } else if let Some(i) = self.aers.iter().position(|&c| sqid == 0 && c == cid) {
            self.aers.remove(i);
        } else {
            return 1;
        }
        self.batch.push(aborted);
        0
    }

    // ---- I/O commands -------------------------------------------------------------

    fn io(&mut self, sqe: &Sqe) -> Status {
        if sqe.cdw0 & 0xc300 != 0 {
            return generic(sc::INVALID_FIELD);
        }
        let opc = sqe.opc();
        if !matches!(
            opc,
            io_opc::READ
                | io_opc::WRITE
                | io_opc::FLUSH
                | io_opc::WRITE_ZEROES
                | io_opc::DATASET_MANAGEMENT
        ) {
            return generic(sc::INVALID_OPCODE);
        }
        if let Some(st) = self.sh.faults.state().fail_io.pop_front() {
            return st;
        }
        if opc == io_opc::FLUSH && sqe.nsid == u32::MAX {
            return Status::SUCCESS;
        }
        let Some(ns) = self.ns(sqe.nsid) else {
            return generic(sc::INVALID_NAMESPACE);
        };
        if let Some(st) = self.ana_error(ns.anagrpid()) {
            return st;
        }
        let r = match opc {
            io_opc::READ => self.read_write(sqe, &ns, false),
            io_opc::WRITE => self.read_write(sqe, &ns, true),
            io_opc::WRITE_ZEROES => self.write_zeroes(sqe, &ns),
            io_opc::DATASET_MANAGEMENT => self.dsm(sqe, &ns),
            _ => Ok(()),
        };
        r.err().unwrap_or(Status::SUCCESS)
    }

    /// The path status for I/O to a namespace in group `grpid`, if it is not
    /// accessible through this controller.
    fn ana_error(&self, grpid: u32) -> Option<Status> {
        if !self.sh.config.ana {
            return None;
        }
        let code = match self.sh.faults.ana().groups.get(&grpid)?.state {
            AnaState::Optimized | AnaState::NonOptimized => return None,
            AnaState::Inaccessible => sc::ANA_INACCESSIBLE,
            AnaState::PersistentLoss => sc::ANA_PERSISTENT_LOSS,
            AnaState::Change => sc::ANA_TRANSITION,
        };
        Some(Status::new(sct::PATH, code, false))
    }

    fn check_range(ns: &Namespace, slba: u64, nlb: u64) -> Result<(), Status> {
        if slba.checked_add(nlb).is_none_or(|end| end > ns.nblocks()) {
            return Err(generic(sc::LBA_OUT_OF_RANGE));
        }
        Ok(())
    }

    fn read_write(&mut self, sqe: &Sqe, ns: &Namespace, write: bool) -> Result<(), Status> {
        let (slba, nlb) = (sqe.slba(), sqe.nlb() as u64);
        Self::check_range(ns, slba, nlb)?;
        let len = (nlb << ns.block_shift()) as usize;
        if self.max_transfer().is_some_and(|max| len > max) {
            return Err(generic(sc::INVALID_FIELD));
        }
        let offset = slba << ns.block_shift();
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.resize(len, 0);
        let internal = |_| generic(sc::INTERNAL_ERROR);
        let r = if write {
            self.copy_from_host(sqe, &mut buf)
                .and_then(|()| ns.write_bytes(offset, &buf).map_err(internal))
        } else {
            ns.read_bytes(offset, &mut buf)
                .map_err(internal)
                .and_then(|()| self.copy_to_host(sqe, &buf))
        };
        // Keep a modest buffer for the next command, not the largest ever seen.
        if buf.capacity() <= 4 << 20 {
            self.scratch = buf;
        }
        if r.is_ok() {
            if write {
                self.smart.writes += 1;
                self.smart.bytes_written += len as u64;
            } else {
                self.smart.reads += 1;
                self.smart.bytes_read += len as u64;
            }
        }
        r
    }

    fn write_zeroes(&mut self, sqe: &Sqe, ns: &Namespace) -> Result<(), Status> {
        let (slba, nlb) = (sqe.slba(), sqe.nlb() as u64);
        Self::check_range(ns, slba, nlb)?;
        ns.zero_bytes(slba << ns.block_shift(), nlb << ns.block_shift())
            .map_err(|_| generic(sc::INTERNAL_ERROR))
    }

    /// Dataset Management: with the Deallocate attribute, every range reads zeroes
    /// afterwards; other attributes are hints and do nothing.
    fn dsm(&mut self, sqe: &Sqe, ns: &Namespace) -> Result<(), Status> {
        let nr = (sqe.cdw10 & 0xff) as usize + 1;
        let deallocate = sqe.cdw11 >> 2 & 1 == 1;
        let mut ranges = vec![0u8; nr * 16];
        self.copy_from_host(sqe, &mut ranges)?;
        if !deallocate {
            return Ok(());
        }
        let parsed: Vec<(u64, u64)> = ranges
            .chunks_exact(16)
            .map(|r| {
                let nlb = u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as u64;
                let mut s = [0u8; 8];
                s.copy_from_slice(&r[8..16]);
                (u64::from_le_bytes(s), nlb)
            })
            .collect();
        for &(slba, nlb) in &parsed {
            Self::check_range(ns, slba, nlb)?;
        }
        for (slba, nlb) in parsed {
            ns.zero_bytes(slba << ns.block_shift(), nlb << ns.block_shift())
                .map_err(|_| generic(sc::INTERNAL_ERROR))?;
        }
        Ok(())
    }
}

fn put16(d: &mut [u8], o: usize, v: u16) {
    d[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(d: &mut [u8], o: usize, v: u32) {
    d[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(d: &mut [u8], o: usize, v: u64) {
    d[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
fn put128(d: &mut [u8], o: usize, v: u128) {
    d[o..o + 16].copy_from_slice(&v.to_le_bytes());
}
/// ASCII, space padded, as Identify strings are.
fn put_ascii(d: &mut [u8], s: &str) {
    d.fill(b' ');
    for (o, b) in d
        .iter_mut()
        .zip(s.bytes().filter(|b| (0x20..0x7f).contains(b)))
    {
        *o = b;
    }
}
