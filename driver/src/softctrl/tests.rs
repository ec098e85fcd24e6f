//! Tests of the software controller through raw registers and DMA memory, with a
//! tiny host that knows nothing of `ctrlr` or `qpair`.

use super::*;
use crate::dma::{DmaBuf, DmaPool, Iova};
use crate::regs;
use crate::regs::Cc;
use crate::regs::{Aqa, Cap, Csts};
use crate::spec::{
    admin_opc, cns, feature_id, io_opc, log_id, parse_error_log, parse_ns_descriptors,
    parse_ns_list, sc, sct, AnaLog, AnaState, AsyncEvent, Cqe, IdentifyController,
    IdentifyNamespace, SmartLog, Sqe,
};
use std::sync::atomic::fence;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for a completion that must not come.
const QUIET: Duration = Duration::from_millis(30);

fn sqe_bytes(s: &Sqe) -> [u8; 64] {
    let mut b = [0u8; 64];
    let dw = [s.cdw0, s.nsid, s.cdw2, s.cdw3];
    for (i, v) in dw.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    for (i, v) in [s.mptr, s.prp1, s.prp2].iter().enumerate() {
        b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    let dw = [s.cdw10, s.cdw11, s.cdw12, s.cdw13, s.cdw14, s.cdw15];
    for (i, v) in dw.iter().enumerate() {
        b[40 + 4 * i..44 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// One queue pair as the test host sees it.
struct Queue {
    qid: u16,
    /// Entries in the SQ: where the tail wraps.
    sq_entries: u16,
    /// Entries in the CQ: where the head wraps.
    cq_entries: u16,
    sq: DmaBuf,
    cq: DmaBuf,
    tail: u16,
    head: u16,
    phase: bool,
    next_cid: u16,
}

impl Queue {
    fn new(pool: &DmaPool, qid: u16, sq_entries: u16, cq_entries: u16) -> Self {
        Queue {
            qid,
            sq_entries,
            cq_entries,
            sq: pool.alloc(sq_entries as usize * 64).unwrap(),
            cq: pool.alloc(cq_entries as usize * 16).unwrap(),
            tail: 0,
            head: 0,
            phase: true,
            next_cid: 0,
        }
    }

    /// Places a command in the SQ without ringing; returns its CID.
    fn push(&mut self, mut sqe: Sqe) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        sqe.set_cid(cid);
        self.sq
            .write_at(self.tail as usize * 64, &sqe_bytes(&sqe))
            .unwrap();
        self.tail = (self.tail + 1) % self.sq_entries;
        cid
    }

    fn ring(&self, m: &Mmio) {
        fence(Ordering::Release);
        m.write32(regs::sq_tail_doorbell(self.qid, 0), self.tail as u32);
    }

    fn submit(&mut self, m: &Mmio, sqe: Sqe) -> u16 {
        let cid = self.push(sqe);
        self.ring(m);
        cid
    }

    /// The CQE at `slot`, read as a host does: phase dword first, then the rest.
    fn read_slot(&self, slot: u16) -> Cqe {
        let p = self.cq.as_ptr().cast::<u32>();
        let o = slot as usize * 4;
        // SAFETY: the CQ buffer holds `cq_entries` 16-byte entries and is 4 KiB aligned;
        // volatile because the device writes it concurrently.
        let dw3 = unsafe { p.add(o + 3).read_volatile() };
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let (dw0, dw1, dw2) = unsafe {
            (
                p.add(o).read_volatile(),
                p.add(o + 1).read_volatile(),
                p.add(o + 2).read_volatile(),
            )
        };
        Cqe {
            dw0,
            dw1,
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            status: (dw3 >> 16) as u16,
        }
    }

    fn poll(&mut self, m: &Mmio) -> Option<Cqe> {
        let cqe = self.read_slot(self.head);
        if cqe.phase() != self.phase {
            return None;
        }
        self.head += 1;
        if self.head == self.cq_entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        m.write32(regs::cq_head_doorbell(self.qid, 0), self.head as u32);
        Some(cqe)
    }

    fn wait_for(&mut self, m: &Mmio, within: Duration) -> Option<Cqe> {
        let end = Instant::now() + within;
        loop {
            if let Some(c) = self.poll(m) {
                return Some(c);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_micros(10));
        }
    }

    fn wait(&mut self, m: &Mmio) -> Cqe {
        self.wait_for(m, WAIT).expect("a completion within 5 s")
    }
}

/// Entries in the admin SQ and CQ.
const ADMIN_ENTRIES: u16 = 16;

struct Host {
    ctrl: Arc<SoftController>,
    pool: DmaPool,
    admin: Queue,
}

impl Host {
    fn enable(ctrl: Arc<SoftController>) -> Host {
        let pool = DmaPool::new(ctrl.name(), ctrl.mapper());
        let admin = Queue::new(&pool, 0, ADMIN_ENTRIES, ADMIN_ENTRIES);
        let h = Host { ctrl, pool, admin };
        h.program_admin();
        h
    }

    fn m(&self) -> &Mmio {
        self.ctrl.bar0()
    }

    fn csts(&self) -> Csts {
        Csts(self.m().read32(regs::CSTS))
    }

    fn wait_csts(&self, f: impl Fn(Csts) -> bool) -> bool {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if f(self.csts()) {
                return true;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        false
    }

    /// Gives the host a fresh admin queue and enables the controller again.
    fn start(&mut self) {
        self.admin = Queue::new(&self.pool, 0, ADMIN_ENTRIES, ADMIN_ENTRIES);
        self.program_admin();
    }

    /// Programs the admin queue and enables the controller.
    fn program_admin(&self) {
        let m = self.ctrl.bar0();
        let n = ADMIN_ENTRIES as u32;
        m.write32(regs::AQA, Aqa::new(n, n).0);
        m.write64(regs::ASQ, self.admin.sq.iova().0);
        m.write64(regs::ACQ, self.admin.cq.iova().0);
        let cc = Cc::default()
            .with_mps_shift(12)
            .with_entry_sizes(6, 4)
            .with_en(true);
        m.write32(regs::CC, cc.0);
        assert!(self.wait_csts(|c| c.rdy()), "controller never became ready");
    }

    fn disable(&self) {
        self.m().write32(regs::CC, 0);
        assert!(
            self.wait_csts(|c| !c.rdy()),
            "controller never became not ready"
        );
    }

    fn admin(&mut self, sqe: Sqe) -> Cqe {
        let m = self.ctrl.bar0();
        self.admin.submit(m, sqe);
        self.admin.wait(m)
    }

    fn io(&mut self, q: &mut Queue, sqe: Sqe) -> Cqe {
        let m = self.ctrl.bar0();
        q.submit(m, sqe);
        q.wait(m)
    }

    fn identify(&mut self, cns: u32, nsid: u32) -> (Cqe, Vec<u8>) {
        let buf = self.pool.alloc(4096).unwrap();
        let mut sqe = Sqe::new(admin_opc::IDENTIFY);
        sqe.nsid = nsid;
        sqe.cdw10 = cns;
        sqe.prp1 = buf.iova().0;
        let cqe = self.admin(sqe);
        let mut out = vec![0u8; 4096];
        buf.read_at(0, &mut out).unwrap();
        (cqe, out)
    }

    /// Get Log Page of `len` bytes (a multiple of 4) at `offset` into a fresh buffer
    /// filled with 0xAA, returned whole so tests can see what was not written.
    fn log_page(&mut self, lid: u8, offset: u64, len: usize, rae: bool) -> (Cqe, Vec<u8>) {
        let mut buf = self.pool.alloc(8192).unwrap();
        buf.fill(0xaa);
        let numd = (len / 4 - 1) as u32;
        let mut sqe = Sqe::new(admin_opc::GET_LOG_PAGE);
        sqe.nsid = u32::MAX;
        sqe.cdw10 = lid as u32 | (rae as u32) << 15 | (numd & 0xffff) << 16;
        sqe.cdw11 = numd >> 16;
        sqe.cdw12 = offset as u32;
        sqe.cdw13 = (offset >> 32) as u32;
        sqe.prp1 = buf.iova().0;
        sqe.prp2 = buf.iova().0 + 4096;
        let cqe = self.admin(sqe);
        let mut out = vec![0u8; 8192];
        buf.read_at(0, &mut out).unwrap();
        (cqe, out)
    }

    fn create_io(&mut self, qid: u16, entries: u16) -> Queue {
        self.create_io_sized(qid, entries, entries)
    }

    fn create_io_sized(&mut self, qid: u16, sq_entries: u16, cq_entries: u16) -> Queue {
        let q = Queue::new(&self.pool, qid, sq_entries, cq_entries);
        let sqe = create_cq_sqe(qid, cq_entries, q.cq.iova().0);
        assert!(self.admin(sqe).status().is_success());
        let sqe = create_sq_sqe(qid, sq_entries, qid, q.sq.iova().0);
        assert!(self.admin(sqe).status().is_success());
        q
    }
}

/// Create I/O Completion Queue `qid` of `entries` entries at `prp1`: physically
/// contiguous, interrupts off.
fn create_cq_sqe(qid: u16, entries: u16, prp1: u64) -> Sqe {
    let mut s = Sqe::new(admin_opc::CREATE_IO_CQ);
    s.cdw10 = qid as u32 | (entries as u32 - 1) << 16;
    s.cdw11 = 1;
    s.prp1 = prp1;
    s
}

/// Create I/O Submission Queue `qid` of `entries` entries at `prp1`: physically
/// contiguous, completing to CQ `cqid`.
fn create_sq_sqe(qid: u16, entries: u16, cqid: u16, prp1: u64) -> Sqe {
    let mut s = Sqe::new(admin_opc::CREATE_IO_SQ);
    s.cdw10 = qid as u32 | (entries as u32 - 1) << 16;
    s.cdw11 = 1 | (cqid as u32) << 16;
    s.prp1 = prp1;
    s
}

/// Delete I/O SQ or Delete I/O CQ (`opc`) of queue `qid`.
fn delete_sqe(opc: u8, qid: u16) -> Sqe {
    let mut s = Sqe::new(opc);
    s.cdw10 = qid as u32;
    s
}

/// Flush of namespace `nsid`.
fn flush_sqe(nsid: u32) -> Sqe {
    let mut s = Sqe::new(io_opc::FLUSH);
    s.nsid = nsid;
    s
}

/// PRP1 and PRP2 for `len` bytes at `iova`, writing PRP lists into `lists` starting
/// `first_off` bytes in, chaining full list pages per section 4.1.1.
fn build_prps(lists: &mut DmaBuf, first_off: usize, iova: u64, len: usize) -> (u64, u64) {
    const PAGE: u64 = 4096;
    let first = (PAGE - iova % PAGE).min(len as u64);
    let rem = len as u64 - first;
    if rem == 0 {
        return (iova, 0);
    }
    let pages: Vec<u64> = (0..rem.div_ceil(PAGE))
        .map(|i| iova + first + i * PAGE)
        .collect();
    if pages.len() == 1 {
        return (iova, pages[0]);
    }
    let base = lists.iova().0;
    let mut off = first_off;
    let mut idx = 0;
    loop {
        let slots = (4096 - off % 4096) / 8;
        let left = pages.len() - idx;
        let (data, chain) = if left <= slots {
            (left, false)
        } else {
            (slots - 1, true)
        };
        for k in 0..data {
            lists
                .write_at(off + 8 * k, &pages[idx + k].to_le_bytes())
                .unwrap();
        }
        idx += data;
        if !chain {
            break;
        }
        let next = (off / 4096 + 1) * 4096;
        lists
            .write_at(off + 8 * data, &(base + next as u64).to_le_bytes())
            .unwrap();
        off = next;
    }
    (iova, base + first_off as u64)
}

fn rw(opc: u8, nsid: u32, slba: u64, nlb: u32, prps: (u64, u64)) -> Sqe {
    let mut sqe = Sqe::rw(opc, nsid, slba, nlb);
    sqe.prp1 = prps.0;
    sqe.prp2 = prps.1;
    sqe
}

fn status_of(cqe: &Cqe) -> (u8, u8, bool) {
    let s = cqe.status();
    (s.sct(), s.sc(), s.dnr())
}

fn ns(nsid: u32, nblocks: u64, bs: u32) -> Arc<Namespace> {
    Arc::new(Namespace::new(nsid, nblocks, bs).unwrap())
}

#[test]
fn registers_and_identify() {
    let ctrl = SoftController::start(SoftConfig::default());
    let cap = Cap(ctrl.bar0().read64(regs::CAP));
    assert_eq!(cap.mqes_entries(), 1024);
    assert!(cap.cqr());
    assert_eq!(cap.to(), 2);
    assert_eq!(cap.dstrd(), 0);
    assert_eq!(cap.css() & 1, 1);
    assert_eq!(cap.mpsmin_shift(), 12);
    assert_eq!(ctrl.bar0().read32(regs::VS), 0x0001_0400);
    let mut h = Host::enable(ctrl.clone());

    let (cqe, d) = h.identify(cns::CONTROLLER, 0);
    assert!(cqe.status().is_success());
    assert_eq!(cqe.sq_head, 1);
    let id = IdentifyController::parse(&d).unwrap();
    assert_eq!(id.vid, 0x1b36);
    assert_eq!(id.sn, "SOFT0001");
    assert_eq!(id.mdts, 5);
    assert_eq!(id.max_transfer_bytes(12), Some(128 << 10));
    assert_eq!((id.sqes, id.cqes, id.aerl, id.nn), (0x66, 0x44, 3, 1));
    assert!(id.write_zeroes_supported() && id.dsm_supported());
    assert!(!id.ana_supported());
    assert_eq!(id.subnqn, "nqn.2024-01.org.nvme-driver:soft0");

    let (cqe, d) = h.identify(cns::NAMESPACE, 1);
    assert!(cqe.status().is_success());
    let nsid = IdentifyNamespace::parse(&d).unwrap();
    assert_eq!(nsid.nsze, 2 << 20);
    assert_eq!(nsid.block_size(), 512);
    assert_eq!(nsid.nguid, ctrl.namespaces()[0].nguid());
    let (cqe, _) = h.identify(cns::NAMESPACE, 2);
    assert_eq!(status_of(&cqe), (0, sc::INVALID_NAMESPACE, true));

    let (_, d) = h.identify(cns::ACTIVE_NS_LIST, 0);
    assert_eq!(parse_ns_list(&d).unwrap(), vec![1]);
    let (_, d) = h.identify(cns::NS_ID_DESCRIPTORS, 1);
    let ids = parse_ns_descriptors(&d).unwrap();
    assert_eq!(ids.nguid, Some(ctrl.namespaces()[0].nguid()));
    assert_eq!(ids.uuid, Some(ctrl.namespaces()[0].uuid()));
    let (cqe, _) = h.identify(0x55, 0);
    assert_eq!(status_of(&cqe), (0, sc::INVALID_FIELD, true));

    // The same data through PRP1 with an offset and PRP2 for the second page.
    let buf = h.pool.alloc(8192).unwrap();
    let mut sqe = Sqe::new(admin_opc::IDENTIFY);
    sqe.cdw10 = cns::CONTROLLER;
    sqe.prp1 = buf.iova().0 + 2048;
    sqe.prp2 = buf.iova().0 + 4096;
    assert!(h.admin(sqe).status().is_success());
    let mut again = vec![0u8; 4096];
    buf.read_at(2048, &mut again).unwrap();
    assert_eq!(IdentifyController::parse(&again).unwrap(), id);

    // Number of Queues: the configured maximum, then what was granted.
    let mut sqe = Sqe::new(admin_opc::GET_FEATURES);
    sqe.cdw10 = feature_id::NUMBER_OF_QUEUES as u32;
    assert_eq!(h.admin(sqe).dw0, 63 << 16 | 63);
    let mut sqe = Sqe::new(admin_opc::SET_FEATURES);
    sqe.cdw10 = feature_id::NUMBER_OF_QUEUES as u32;
    sqe.cdw11 = 3 << 16 | 200;
    assert_eq!(h.admin(sqe).dw0, 3 << 16 | 63);
    let mut sqe = Sqe::new(admin_opc::SET_FEATURES);
    sqe.cdw10 = feature_id::ARBITRATION as u32;
    sqe.cdw11 = 0x1234;
    assert!(h.admin(sqe).status().is_success());
    let mut sqe = Sqe::new(admin_opc::GET_FEATURES);
    sqe.cdw10 = feature_id::ARBITRATION as u32;
    assert_eq!(h.admin(sqe).dw0, 0x1234);

    let cqe = h.admin(Sqe::new(admin_opc::DOORBELL_BUFFER_CONFIG));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_OPCODE, true));

    let (cqe, d) = h.log_page(log_id::SMART, 0, 512, false);
    assert!(cqe.status().is_success());
    assert_eq!(SmartLog::parse(&d).unwrap().available_spare, 100);
    assert!(
        d[512..].iter().all(|&b| b == 0xaa),
        "wrote past the requested length"
    );
    assert_eq!(ctrl.counters().admin_fetched(admin_opc::IDENTIFY), 7);
}

#[test]
fn write_then_read_with_prp_lists() {
    let cfg = SoftConfig {
        mdts: 10,
        namespaces: vec![ns(1, 1 << 16, 512), ns(2, 4096, 4096)],
        ..SoftConfig::default()
    };
    let ctrl = SoftController::start(cfg);
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io(1, 32);
    let mut lists = h.pool.alloc(4 * 4096).unwrap();

    // 8 KiB from an offset of 512: PRP1 with an offset, then a two-entry list.
    let mut src = h.pool.alloc(3 * 4096).unwrap();
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    src.write_at(512, &pattern).unwrap();
    let prps = build_prps(&mut lists, 0, src.iova().0 + 512, 8192);
    let cqe = h.io(&mut q, rw(io_opc::WRITE, 1, 10, 16, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    let mut stored = vec![0u8; 8192];
    ctrl.namespaces()[0]
        .read_bytes(10 * 512, &mut stored)
        .unwrap();
    assert_eq!(stored, pattern);

    let dst = h.pool.alloc(3 * 4096).unwrap();
    // The list this time starts 16 bytes before the end of a page: one data entry,
    // then a pointer to the next list page.
    let prps = build_prps(&mut lists, 4096 - 16, dst.iova().0 + 1024, 8192);
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 10, 16, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    let mut back = vec![0u8; 8192];
    dst.read_at(1024, &mut back).unwrap();
    assert_eq!(back, pattern);

    // 3 MiB in 4 KiB blocks: 767 list entries, so the list chains to a second page.
    let len = 3 << 20;
    let mut big = h.pool.alloc(len).unwrap();
    let pattern: Vec<u8> = (0..len as u32).map(|i| (i >> 12 ^ i) as u8).collect();
    big.write_at(0, &pattern).unwrap();
    let prps = build_prps(&mut lists, 0, big.iova().0, len);
    let cqe = h.io(&mut q, rw(io_opc::WRITE, 2, 100, 768, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    big.fill(0);
    let prps = build_prps(&mut lists, 0, big.iova().0, len);
    let cqe = h.io(&mut q, rw(io_opc::READ, 2, 100, 768, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    let mut back = vec![0u8; len];
    big.read_at(0, &mut back).unwrap();
    assert!(back == pattern, "3 MiB read back differs");

    // Write Zeroes and Deallocate leave zeroes behind.
    let cqe = h.io(&mut q, Sqe::rw(io_opc::WRITE_ZEROES, 2, 100, 2));
    assert!(cqe.status().is_success());
    let mut r = vec![1u8; 3 * 4096];
    ctrl.namespaces()[1].read_bytes(100 * 4096, &mut r).unwrap();
    assert!(r[..8192].iter().all(|&b| b == 0));
    assert_eq!(&r[8192..], &pattern[8192..3 * 4096]);
    let mut range = h.pool.alloc(4096).unwrap();
    let mut desc = [0u8; 16];
    desc[4..8].copy_from_slice(&10u32.to_le_bytes());
    desc[8..16].copy_from_slice(&102u64.to_le_bytes());
    range.write_at(0, &desc).unwrap();
    let mut sqe = Sqe::new(io_opc::DATASET_MANAGEMENT);
    sqe.nsid = 2;
    sqe.cdw11 = 1 << 2;
    sqe.prp1 = range.iova().0;
    assert!(h.io(&mut q, sqe).status().is_success());
    ctrl.namespaces()[1].read_bytes(100 * 4096, &mut r).unwrap();
    assert!(r.iter().all(|&b| b == 0));
    assert!(h.io(&mut q, flush_sqe(1)).status().is_success());
    assert_eq!(ctrl.counters().io_fetched(io_opc::WRITE), 2);
    assert_eq!(ctrl.counters().io_fetched(io_opc::READ), 2);
}

#[test]
fn phase_flips_and_sq_head_follow_wraparound() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl);
    let mut q = h.create_io(1, 4);
    let mut phases = Vec::new();
    for i in 0..11u16 {
        let expect_phase = q.phase;
        let cqe = h.io(&mut q, flush_sqe(1));
        assert!(cqe.status().is_success());
        assert_eq!(cqe.cid, i);
        assert_eq!(cqe.sq_id, 1);
        assert_eq!(cqe.sq_head, (i + 1) % 4);
        assert_eq!(cqe.phase(), expect_phase);
        phases.push(cqe.phase());
    }
    let expect: Vec<bool> = (0..11).map(|i| (i / 4) % 2 == 0).collect();
    assert_eq!(phases, expect);
}

#[test]
fn completion_queue_is_never_overrun() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io_sized(1, 16, 4);
    for _ in 0..10 {
        q.push(flush_sqe(1));
    }
    q.ring(h.m());
    std::thread::sleep(QUIET);
    // Without a head doorbell write, only 3 of the 4 slots may be filled.
    let filled = (0..4).filter(|&s| q.read_slot(s).phase()).count();
    assert_eq!(filled, 3);
    let mut cids = Vec::new();
    let end = Instant::now() + WAIT;
    while cids.len() < 10 && Instant::now() < end {
        match q.poll(h.m()) {
            Some(c) => cids.push(c.cid),
            None => std::thread::sleep(Duration::from_micros(20)),
        }
    }
    assert_eq!(cids, (0..10).collect::<Vec<u16>>());
    assert_eq!(ctrl.counters().completions_posted(), 2 + 10);
}

#[test]
fn errors_complete_with_the_right_status() {
    let ctrl = SoftController::start(SoftConfig {
        namespaces: vec![ns(1, 1000, 512)],
        ..SoftConfig::default()
    });
    let mut h = Host::enable(ctrl);
    let mut q = h.create_io(1, 8);
    let buf = h.pool.alloc(256 << 10).unwrap();
    let p = buf.iova().0;

    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 999, 2, (p, 0)));
    assert_eq!(status_of(&cqe), (0, sc::LBA_OUT_OF_RANGE, true));
    let cqe = h.io(&mut q, Sqe::rw(io_opc::WRITE_ZEROES, 1, u64::MAX, 1));
    assert_eq!(status_of(&cqe), (0, sc::LBA_OUT_OF_RANGE, true));
    // 256 KiB is over MDTS (128 KiB).
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 512, (p, p + 4096)));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_FIELD, true));
    let cqe = h.io(&mut q, rw(io_opc::READ, 9, 0, 1, (p, 0)));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_NAMESPACE, true));
    // An IOVA nothing maps: Data Transfer Error, and nothing touched.
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (0x1000, 0)));
    assert_eq!(status_of(&cqe), (0, sc::DATA_TRANSFER_ERROR, true));
    // Only PRP1 may have an offset, and it must be dword aligned.
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 16, (p, p + 4096 + 8)));
    assert_eq!(status_of(&cqe), (0, 0x13, true));
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (p + 2, 0)));
    assert_eq!(status_of(&cqe), (0, 0x13, true));
    let cqe = h.io(&mut q, Sqe::new(0x7f));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_OPCODE, true));

    let cqe = h.admin(create_cq_sqe(0, 8, p));
    assert_eq!(status_of(&cqe), (1, 0x01, true));
    let cqe = h.admin(create_cq_sqe(1, 8, p));
    assert_eq!(status_of(&cqe), (1, 0x01, true), "CQ 1 already exists");
    let cqe = h.admin(create_cq_sqe(2, 1025, p));
    assert_eq!(status_of(&cqe), (1, 0x02, true));
    let cqe = h.admin(create_cq_sqe(2, 8, p + 64));
    assert_eq!(status_of(&cqe), (0, 0x13, true));
    let cqe = h.admin(create_sq_sqe(2, 8, 5, p));
    assert_eq!(status_of(&cqe), (1, 0x00, true));
    let del = delete_sqe(admin_opc::DELETE_IO_CQ, 1);
    assert_eq!(status_of(&h.admin(del)), (1, 0x0c, true));

    let (cqe, d) = h.log_page(log_id::ERROR, 0, 4096, false);
    assert!(cqe.status().is_success());
    let log = parse_error_log(&d[..4096]);
    assert_eq!(log.len(), 14);
    assert_eq!(log[0].status.sc(), 0x0c);
    assert_eq!(log.last().unwrap().status.sc(), sc::LBA_OUT_OF_RANGE);
    assert_eq!(log.last().unwrap().lba, 999);
    let (cqe, _) = h.log_page(0x7e, 0, 512, false);
    assert_eq!(status_of(&cqe), (1, 0x09, true));
}

fn ana_config(name: &str, cntlid: u16, namespaces: Vec<Arc<Namespace>>) -> SoftConfig {
    SoftConfig {
        name: name.into(),
        cntlid,
        ana: true,
        subnqn: "nqn.2024-01.org.nvme-driver:shared".into(),
        namespaces,
        ..SoftConfig::default()
    }
}

#[test]
fn ana_change_raises_an_event_and_path_errors() {
    let a = Arc::new(Namespace::new(1, 1024, 512).unwrap());
    let b = Arc::new(Namespace::new(2, 1024, 4096).unwrap().with_anagrpid(2));
    let ctrl = SoftController::start(ana_config("ana0", 1, vec![a, b]));
    let mut h = Host::enable(ctrl.clone());
    let (_, d) = h.identify(cns::CONTROLLER, 0);
    let id = IdentifyController::parse(&d).unwrap();
    assert!(id.ana_supported());
    assert_eq!((id.anagrpmax, id.nanagrpid, id.anatt), (2, 2, 10));
    assert_eq!(id.oaes >> 11 & 1, 1);
    let (_, d) = h.identify(cns::NAMESPACE, 2);
    let nsid = IdentifyNamespace::parse(&d).unwrap();
    assert_eq!((nsid.anagrpid, nsid.nmic), (2, 1));

    let (cqe, d) = h.log_page(log_id::ANA, 0, 4096, false);
    assert!(cqe.status().is_success());
    let log = AnaLog::parse(&d[..4096]).unwrap();
    assert_eq!(log.change_count, 0);
    assert_eq!(log.groups.len(), 2);
    assert_eq!(log.groups[1].nsids, vec![2]);
    assert!(log.groups.iter().all(|g| g.state == AnaState::Optimized));

    let m = ctrl.bar0();
    let aer = h.admin.submit(m, Sqe::new(admin_opc::ASYNC_EVENT_REQUEST));
    assert!(
        h.admin.wait_for(m, QUIET).is_none(),
        "AER completed with no event"
    );
    ctrl.set_ana_state(2, AnaState::Inaccessible).unwrap();
    let cqe = h.admin.wait(m);
    assert_eq!(cqe.cid, aer);
    let ev = AsyncEvent::from_dw0(cqe.dw0);
    assert!(ev.is_ana_change());
    assert_eq!(ev.log_page, log_id::ANA);

    let (_, d) = h.log_page(log_id::ANA, 0, 4096, false);
    let log = AnaLog::parse(&d[..4096]).unwrap();
    assert_eq!(log.change_count, 1);
    assert_eq!(log.groups[1].state, AnaState::Inaccessible);
    assert_eq!(log.groups[1].change_count, 1);

    let mut q = h.create_io(1, 8);
    let buf = h.pool.alloc(4096).unwrap();
    let cqe = h.io(&mut q, rw(io_opc::READ, 2, 0, 1, (buf.iova().0, 0)));
    assert_eq!(status_of(&cqe), (sct::PATH, sc::ANA_INACCESSIBLE, false));
    assert!(cqe.status().is_ana_error() && cqe.status().is_path_error());
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(cqe.status().is_success());

    // With no request outstanding the notice waits for one.
    ctrl.set_ana_state(2, AnaState::Change).unwrap();
    std::thread::sleep(QUIET);
    let aer = h.admin.submit(m, Sqe::new(admin_opc::ASYNC_EVENT_REQUEST));
    let cqe = h.admin.wait(m);
    assert_eq!(cqe.cid, aer);
    assert!(AsyncEvent::from_dw0(cqe.dw0).is_ana_change());
    let cqe = h.io(&mut q, rw(io_opc::READ, 2, 0, 1, (buf.iova().0, 0)));
    assert_eq!(status_of(&cqe), (sct::PATH, sc::ANA_TRANSITION, false));

    // Offset and length are honoured: the header alone, then a descriptor alone.
    let (_, d) = h.log_page(log_id::ANA, 0, 16, true);
    assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), 2);
    assert!(d[16..].iter().all(|&b| b == 0xaa));
    let (_, d) = h.log_page(log_id::ANA, 16 + 36, 36, true);
    assert_eq!(u32::from_le_bytes(d[..4].try_into().unwrap()), 2);
    assert_eq!(d[16], AnaState::Change.to_u8());
    assert_eq!(u32::from_le_bytes(d[32..36].try_into().unwrap()), 2);
    assert!(d[36..].iter().all(|&b| b == 0xaa));

    assert!(ctrl.set_ana_state(9, AnaState::Optimized).is_err());
    // AERL is 3: a fifth outstanding request is refused.
    for _ in 0..5 {
        h.admin.submit(m, Sqe::new(admin_opc::ASYNC_EVENT_REQUEST));
    }
    let cqe = h.admin.wait(m);
    assert_eq!(status_of(&cqe), (1, 0x05, true));
}

#[test]
fn two_controllers_are_two_paths_to_one_namespace() {
    let shared = ns(1, 4096, 512);
    let a = SoftController::start(ana_config("path-a", 1, vec![shared.clone()]));
    let b = SoftController::start(ana_config("path-b", 2, vec![shared.clone()]));
    let mut ha = Host::enable(a.clone());
    let mut hb = Host::enable(b.clone());
    let (_, da) = ha.identify(cns::CONTROLLER, 0);
    let (_, db) = hb.identify(cns::CONTROLLER, 0);
    let (ia, ib) = (
        IdentifyController::parse(&da).unwrap(),
        IdentifyController::parse(&db).unwrap(),
    );
    assert_eq!(ia.subnqn, ib.subnqn);
    assert_ne!(ia.cntlid, ib.cntlid);
    let (_, na) = ha.identify(cns::NAMESPACE, 1);
    let (_, nb) = hb.identify(cns::NAMESPACE, 1);
    assert_eq!(
        IdentifyNamespace::parse(&na).unwrap().nguid,
        IdentifyNamespace::parse(&nb).unwrap().nguid
    );

    let mut qa = ha.create_io(1, 8);
    let mut qb = hb.create_io(1, 8);
    let mut src = ha.pool.alloc(4096).unwrap();
    src.write_at(0, &[0x5a; 4096]).unwrap();
    assert!(ha
        .io(&mut qa, rw(io_opc::WRITE, 1, 8, 8, (src.iova().0, 0)))
        .status()
        .is_success());
    let dst = hb.pool.alloc(4096).unwrap();
    assert!(hb
        .io(&mut qb, rw(io_opc::READ, 1, 8, 8, (dst.iova().0, 0)))
        .status()
        .is_success());
    let mut out = vec![0u8; 4096];
    dst.read_at(0, &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 0x5a));

    // ANA state is per controller: path A inaccessible, path B still fine.
    a.set_ana_state(1, AnaState::Inaccessible).unwrap();
    let cqe = ha.io(&mut qa, rw(io_opc::READ, 1, 8, 8, (src.iova().0, 0)));
    assert_eq!(status_of(&cqe), (sct::PATH, sc::ANA_INACCESSIBLE, false));
    assert!(hb
        .io(&mut qb, rw(io_opc::READ, 1, 8, 8, (dst.iova().0, 0)))
        .status()
        .is_success());
}

#[test]
fn fatal_status_stops_the_controller_until_reset() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    ctrl.faults().set_fatal();
    assert!(h.wait_csts(|c| c.cfs()));
    let m = ctrl.bar0();
    h.admin.submit(m, Sqe::new(admin_opc::IDENTIFY));
    assert!(h.admin.wait_for(m, QUIET).is_none());
    h.disable();
    assert!(!h.csts().cfs());
    h.start();
    let (cqe, _) = h.identify(cns::CONTROLLER, 0);
    assert!(cqe.status().is_success());

    // A normal shutdown reports completion.
    m.write32(regs::CC, m.read32(regs::CC) | 1 << 14);
    assert!(h.wait_csts(|c| c.shst() == 2));
}

#[test]
fn removal_reads_all_ones() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    assert!(!ctrl.removal_requested());
    ctrl.faults().simulate_removal();
    assert!(h.wait_csts(|c| c.is_all_ones()));
    assert!(ctrl.removal_requested());
    assert_eq!(ctrl.bar0().read64(regs::CAP), u64::MAX);
    let m = ctrl.bar0();
    h.admin.submit(m, Sqe::new(admin_opc::IDENTIFY));
    assert!(h.admin.wait_for(m, QUIET).is_none());
}

#[test]
fn release_reads_all_ones_without_removal() {
    let ctrl = SoftController::start(SoftConfig::default());
    let h = Host::enable(ctrl.clone());
    ctrl.release();
    assert!(h.wait_csts(|c| c.is_all_ones()));
    assert!(!ctrl.removal_requested());
}

#[test]
fn dropped_completions_are_held_until_aborted() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io(1, 8);
    let m = ctrl.bar0();
    let buf = h.pool.alloc(4096).unwrap();
    ctrl.faults().drop_io_completions(2);
    let lost = q.submit(m, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    let lost2 = q.submit(m, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(q.wait_for(m, QUIET).is_none());
    assert_eq!(ctrl.counters().held_commands(), 2);

    let abort = |sqid: u16, cid: u16| {
        let mut s = Sqe::new(admin_opc::ABORT);
        s.cdw10 = sqid as u32 | (cid as u32) << 16;
        s
    };
    let cqe = h.admin(abort(1, lost));
    assert!(cqe.status().is_success());
    assert_eq!(cqe.dw0 & 1, 0, "the held command was aborted");
    let cqe = q.wait(m);
    assert_eq!(cqe.cid, lost);
    assert_eq!(status_of(&cqe), (0, sc::ABORT_REQUESTED, false));
    let cqe = h.admin(abort(1, lost));
    assert_eq!(cqe.dw0 & 1, 1, "nothing left to abort");

    // Deleting the SQ completes what it still holds.
    let del = delete_sqe(admin_opc::DELETE_IO_SQ, 1);
    assert!(h.admin(del).status().is_success());
    let cqe = q.wait(m);
    assert_eq!(cqe.cid, lost2);
    assert_eq!(cqe.status(), crate::spec::Status::ABORTED_SQ_DELETION);
    assert_eq!(ctrl.counters().held_commands(), 0);

    // A reset drops held commands without completing them.
    let del = delete_sqe(admin_opc::DELETE_IO_CQ, 1);
    assert!(h.admin(del).status().is_success());
    let mut q = h.create_io(1, 8);
    ctrl.faults().drop_io_completions(1);
    q.submit(m, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(q.wait_for(m, QUIET).is_none());
    h.disable();
    assert_eq!(ctrl.counters().held_commands(), 0);
    h.start();
    let mut q = h.create_io(1, 8);
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(cqe.status().is_success());
    assert_eq!(cqe.cid, 0);
}

#[test]
fn duplicated_bogus_reordered_and_late_completions() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io(1, 16);
    let m = ctrl.bar0();

    ctrl.faults().duplicate_next_completion();
    let cid = q.submit(m, flush_sqe(1));
    assert_eq!(q.wait(m).cid, cid);
    assert_eq!(q.wait(m).cid, cid);
    assert!(q.wait_for(m, QUIET).is_none());

    ctrl.faults().post_bogus_completion(1, 0xbeef);
    assert_eq!(q.wait(m).cid, 0xbeef);

    ctrl.faults().corrupt_next_sq_head(999);
    q.submit(m, flush_sqe(1));
    assert_eq!(q.wait(m).sq_head, 999);

    ctrl.faults().set_reorder(true);
    let cids: Vec<u16> = (0..4).map(|_| q.push(flush_sqe(1))).collect();
    q.ring(m);
    let got: Vec<u16> = (0..4).map(|_| q.wait(m).cid).collect();
    assert_eq!(got, cids.iter().rev().copied().collect::<Vec<_>>());
    ctrl.faults().set_reorder(false);

    ctrl.faults().set_completion_delay_us(20_000);
    let t = Instant::now();
    q.submit(m, flush_sqe(1));
    q.wait(m);
    assert!(t.elapsed() >= Duration::from_millis(20));
    ctrl.faults().clear();

    // A completion with the wrong phase is invisible to the host.
    ctrl.faults().corrupt_next_phase();
    q.submit(m, flush_sqe(1));
    assert!(q.wait_for(m, QUIET).is_none());
}

#[test]
fn small_mqes_limits_queues() {
    let ctrl = SoftController::start(SoftConfig {
        mqes: 3,
        ..SoftConfig::default()
    });
    assert_eq!(Cap(ctrl.bar0().read64(regs::CAP)).mqes_entries(), 4);
    let mut h = Host::enable(ctrl);
    let cq = h.pool.alloc(4096).unwrap();
    let s = create_cq_sqe(1, 5, cq.iova().0);
    assert_eq!(status_of(&h.admin(s)), (1, 0x02, true));
    let mut q = h.create_io(1, 4);
    assert!(h.io(&mut q, flush_sqe(1)).status().is_success());
}

#[test]
fn mapper_checks_ranges() {
    let m = SoftMapper::new("t");
    let mut a = vec![0u8; 8192];
    let mut b = vec![0u8; 4096];
    let pa = std::ptr::NonNull::new(a.as_mut_ptr()).unwrap();
    let pb = std::ptr::NonNull::new(b.as_mut_ptr()).unwrap();
    // SAFETY: the vectors outlive the mapper's use of them below.
    unsafe {
        m.map(pa, 8192, Iova(0x10000)).unwrap();
        assert!(m.map(pb, 4096, Iova(0x11000)).is_err());
        assert!(m.map(pb, 4096, Iova(0xf800)).is_err());
        m.map(pb, 4096, Iova(0x12000)).unwrap();
    }
    assert!(m.is_mapped(Iova(0x10000), 3 * 4096));
    assert!(!m.is_mapped(Iova(0x10000), 3 * 4096 + 1));
    assert!(!m.is_mapped(Iova(0xffff), 2));
    m.write(0x11ffe, &[1, 2, 3, 4]).unwrap();
    assert_eq!((a[8190], a[8191], b[0], b[1]), (1, 2, 3, 4));
    assert!(m.write(0x12ffe, &[9, 9, 9]).is_err());
    assert_eq!(b[4094], 0, "a failed access changes nothing");
    assert!(m.unmap(Iova(0x10000), 4096).is_err());
    m.unmap(Iova(0x10000), 8192).unwrap();
    assert!(!m.is_mapped(Iova(0x10000), 1));
    assert_eq!(m.mapped_bytes(), 4096);
}

#[test]
fn config_is_validated() {
    let dup = SoftConfig {
        namespaces: vec![ns(1, 8, 512), ns(1, 8, 512)],
        ..SoftConfig::default()
    };
    assert!(SoftController::try_start(dup).is_err());
    assert!(SoftController::try_start(SoftConfig {
        mqes: 0,
        ..SoftConfig::default()
    })
    .is_err());
    assert!(Namespace::new(1, 8, 1024).is_err());
    assert!(Namespace::new(0, 8, 512).is_err());
}
