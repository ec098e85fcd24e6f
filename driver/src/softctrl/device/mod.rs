// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The device thread: it polls the register file, fetches commands through the
//! translation table, executes them and posts completions, the way a controller's
//! firmware does. Everything here runs on that one thread; tests reach it only
//! through [`super::Faults`], the namespaces and the registers.

mod admin;
mod io;
mod queues;
mod transfer;

use super::faults::AnaTable;
use super::mapper::{DmaFault, SoftMapper};
use super::{Namespace, Shared, REGS_SIZE};
use crate::dma::Iova;
use crate::regs::{self, Aqa, Cc};
use crate::spec::{
    admin_opc, cns, feature_id, io_opc, log_id, sc, sct, AnaState, AsyncEvent, Cqe, Sqe, Status,
    CHANGED_NS_LIST_SIZE, CQE_SIZE, ERROR_LOG_ENTRY_SIZE, IDENTIFY_SIZE, SMART_LOG_SIZE, SQE_SIZE,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
const CSTS_SHST_OCCURRING: u32 = 1 << 2;
const CSTS_SHST_COMPLETE: u32 = 2 << 2;

/// AEC bit 11: send ANA change notices.
const AEC_ANA_CHANGE: u32 = 1 << 11;
/// AEC bit 8: send Namespace Attribute Changed notices.
const AEC_NS_ATTR: u32 = 1 << 8;

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
    /// Generic: Invalid SGL Segment Descriptor.
    pub const INVALID_SGL_SEGMENT_DESCRIPTOR: u8 = 0x0d;
    /// Generic: Invalid Number of SGL Descriptors.
    pub const INVALID_NUMBER_OF_SGL_DESCRIPTORS: u8 = 0x0e;
    /// Generic: Data SGL Length Invalid.
    pub const DATA_SGL_LENGTH_INVALID: u8 = 0x0f;
    /// Generic: SGL Descriptor Type Invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: u8 = 0x11;
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
    /// Admin completions kept by [`super::Faults::keep_admin_completions`], with their
    /// commands' opcodes.
    kept: Vec<(u8, Completion)>,
    delayed: VecDeque<(Instant, Completion)>,
    aers: Vec<u16>,
    features: BTreeMap<u8, u32>,
    batch: Vec<Completion>,
    scratch: Vec<u8>,
    segs: Vec<(u64, usize)>,
    errors: VecDeque<ErrorEntry>,
    error_count: u64,
    smart: Smart,
    /// CC.SHN was non-zero at the last scan, to find the notification's edge.
    last_shn: bool,
    /// While shutdown processing runs (CSTS.SHST 01b): when it completes.
    shutdown_due: Option<Instant>,
    /// Flushes completed since the last write command (see
    /// `Counters::flushes_before_shutdown`).
    flushes_since_write: u64,
    /// Namespace attribute changes (`queues.rs`, `note_namespace_changes`).
    ns_notices: NsNotices,
}

/// What the Changed Namespace List log page (04h) holds and the state of its notice
/// (NVMe Base 2.0, section 5.2: masked once reported until the host reads the page).
#[derive(Debug, Default)]
struct NsNotices {
    /// Each namespace's resize count when last looked at, in configuration order.
    seen: Vec<u64>,
    /// Namespaces changed since the host last read the page.
    changed: BTreeSet<u32>,
    /// A notice waits for an Asynchronous Event Request.
    pending: bool,
    /// A notice was reported and the host has not read the page since.
    masked: bool,
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
            kept: Vec::new(),
            delayed: VecDeque::new(),
            aers: Vec::new(),
            features: BTreeMap::new(),
            batch: Vec::new(),
            scratch: Vec::new(),
            segs: Vec::new(),
            errors: VecDeque::new(),
            error_count: 0,
            smart: Smart::default(),
            last_shn: false,
            shutdown_due: None,
            flushes_since_write: 0,
            ns_notices: NsNotices::default(),
        };
        d.ns_notices.seen = d.sh.config.namespaces.iter().map(|n| n.changes()).collect();
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
                self.abandon_shutdown();
                self.gone = true;
            }
            let m = &self.sh.regs.mmio;
            for off in (0..REGS_SIZE).step_by(4) {
                m.write32(off, u32::MAX);
            }
            return false;
        }
        self.handle_cc();
        self.note_namespace_changes();
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
        // The notification first: a host that writes CC.SHN and then clears CC.EN
        // between two scans cut the shutdown short (the disable below counts it).
        self.handle_shn(cc);
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
            self.abandon_shutdown();
            self.reset();
        }
    }

    /// CC.SHN and CSTS.SHST (NVMe Base 2.0, section 3.6.1): a notification starts
    /// shutdown processing (SHST 01b), which completes (10b) `shutdown_ms` later;
    /// clearing SHN clears SHST.
    fn handle_shn(&mut self, cc: Cc) {
        let shn = cc.shn() != 0;
        let sh = self.sh.clone();
        let c = &sh.counters;
        if shn && !self.last_shn {
            c.shutdown_notifications.fetch_add(1, Ordering::Relaxed);
            c.flushes_before_shutdown.fetch_add(
                std::mem::take(&mut self.flushes_since_write),
                Ordering::Relaxed,
            );
            self.shutdown_due =
                Some(Instant::now() + Duration::from_millis(self.sh.config.shutdown_ms));
            self.set_csts(self.csts & !CSTS_SHST_MASK | CSTS_SHST_OCCURRING);
        } else if !shn && self.last_shn {
            self.abandon_shutdown();
            self.set_csts(self.csts & !CSTS_SHST_MASK);
        }
        self.last_shn = shn;
        if self.shutdown_due.is_some_and(|due| Instant::now() >= due) {
            self.shutdown_due = None;
            c.shutdowns_completed.fetch_add(1, Ordering::Relaxed);
            self.set_csts(self.csts & !CSTS_SHST_MASK | CSTS_SHST_COMPLETE);
        }
    }

    /// The host cut shutdown processing short (a reset, SHN cleared, the device
    /// released): counted, and SHST goes back to 00b.
    fn abandon_shutdown(&mut self) {
        if self.shutdown_due.take().is_some() {
            self.sh
                .counters
                .shutdowns_abandoned
                .fetch_add(1, Ordering::Relaxed);
            self.set_csts(self.csts & !CSTS_SHST_MASK);
        }
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
        self.kept.clear();
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
        self.ns_notices.masked = false;
        let m = &self.sh.regs.mmio;
        for off in (regs::DOORBELL_BASE..REGS_SIZE).step_by(4) {
            m.write32(off, 0);
        }
        // Doorbells are zero before RDY reads 0, so a quick re-enable sees them clean.
        fence(Ordering::SeqCst);
        self.set_csts(self.csts & CSTS_SHST_MASK);
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
