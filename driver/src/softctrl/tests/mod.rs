// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Tests of the software controller through raw registers and DMA memory, with a
//! tiny host that knows nothing of `ctrlr` or `qpair`. This file holds that host;
//! the tests are by concern: [`commands`] (registers, identify, I/O and its data,
//! queue wrap-around, error statuses), [`faults`] (ANA, fatal status, removal,
//! dropped, duplicated, bogus, reordered and late completions), [`limits`] (queue
//! size limits, the IOVA mapper, configuration checks).

mod commands;
mod faults;
mod limits;

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
        let pool = DmaPool::new(ctrl.name(), ctrl.mapper()).unwrap();
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
