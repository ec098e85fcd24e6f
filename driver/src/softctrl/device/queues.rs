// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Queues: fetching commands from the SQs, executing them, posting completions to
//! the CQs (NVMe Base Specification 2.0, section 3.3), and the admin commands that
//! create and delete I/O queues (sections 5.4 to 5.7).

use super::*;

impl Device {
    pub(super) fn fetch_all(&mut self) -> bool {
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
    pub(super) fn flush_batch(&mut self) {
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

    pub(super) fn execute(&mut self, sqid: u16, cqid: u16, sqe: Sqe) {
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
        self.finish(c, admin, opc);
    }

    /// Applies the keep, drop and delay faults, then queues the completion in the
    /// batch. Abort is exempt from the admin faults.
    pub(super) fn finish(&mut self, c: Completion, admin: bool, opc: u8) {
        let exempt = admin && opc == admin_opc::ABORT;
        let mut f = self.sh.faults.state();
        if !exempt && admin && f.keep_admin == Some(opc) {
            drop(f);
            self.kept.push((opc, c));
            return;
        }
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

    pub(super) fn log_error(&mut self, c: &Completion, sqe: &Sqe) {
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

    /// Puts namespaces resized since the last scan into the Changed Namespace List
    /// and raises its notice unless masked ([`Namespace::resize`]).
    pub(super) fn note_namespace_changes(&mut self) {
        let sh = self.sh.clone();
        let n = &mut self.ns_notices;
        for (ns, seen) in sh.config.namespaces.iter().zip(n.seen.iter_mut()) {
            let now = ns.changes();
            if now != *seen {
                *seen = now;
                n.changed.insert(ns.nsid());
                if !n.masked {
                    n.pending = true;
                }
            }
        }
    }

    /// The Changed Namespace List log page (section 5.16.1.5): the NSIDs in
    /// increasing order, or FFFFFFFFh alone when more than 1024 changed.
    pub(super) fn changed_ns_log(&self) -> Vec<u8> {
        let mut d = vec![0u8; CHANGED_NS_LIST_SIZE];
        let changed = &self.ns_notices.changed;
        if changed.len() > CHANGED_NS_LIST_SIZE / 4 {
            put32(&mut d, 0, u32::MAX);
        } else {
            for (i, id) in changed.iter().enumerate() {
                put32(&mut d, 4 * i, *id);
            }
        }
        d
    }

    /// The host read the Changed Namespace List without Retain Asynchronous Event:
    /// the list starts again and the notice is unmasked.
    pub(super) fn changed_ns_log_read(&mut self) {
        self.ns_notices.changed.clear();
        self.ns_notices.masked = false;
    }

    /// Completes one outstanding Asynchronous Event Request per pending event.
    pub(super) fn deliver_events(&mut self) -> bool {
        let mut worked = false;
        while !self.aers.is_empty() {
            let Some(ev) = self.next_notice() else {
                break;
            };
            let cid = self.aers.remove(0);
            self.post_event(cid, ev);
            worked = true;
        }
        worked
    }

    /// The next notice to report, if one is pending and enabled in the Asynchronous
    /// Event Configuration; a pending notice that is not enabled is dropped.
    fn next_notice(&mut self) -> Option<AsyncEvent> {
        let aec = self
            .features
            .get(&feature_id::ASYNC_EVENT_CONFIG)
            .copied()
            .unwrap_or(0);
        if std::mem::take(&mut self.ns_notices.pending) && aec & AEC_NS_ATTR != 0 {
            self.ns_notices.masked = true;
            return Some(AsyncEvent {
                event_type: 2,
                info: AsyncEvent::NOTICE_NS_CHANGED,
                log_page: log_id::CHANGED_NS_LIST,
            });
        }
        let mut ana = self.sh.faults.ana();
        // Taken either way: a notice that is not enabled is dropped, not kept.
        let pending = std::mem::take(&mut ana.notice_pending);
        if !(pending && self.sh.config.ana && aec & AEC_ANA_CHANGE != 0) {
            return None;
        }
        ana.notice_masked = true;
        Some(AsyncEvent {
            event_type: 2,
            info: AsyncEvent::NOTICE_ANA_CHANGE,
            log_page: log_id::ANA,
        })
    }

    /// Completes Asynchronous Event Request `cid` with `ev`.
    fn post_event(&mut self, cid: u16, ev: AsyncEvent) {
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
    }

    pub(super) fn post_all(&mut self) -> bool {
        let sh = self.sh.clone();
        let mut worked = false;
        if !self.kept.is_empty() {
            // Kept admin completions whose opcode is no longer kept, in order.
            let keep = sh.faults.state().keep_admin;
            let mut i = 0;
            while i < self.kept.len() {
                if Some(self.kept[i].0) == keep {
                    i += 1;
                } else {
                    let (_, c) = self.kept.remove(i);
                    enqueue(&mut self.cqs, c);
                    worked = true;
                }
            }
        }
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

    /// The checks Create I/O CQ and SQ share (sections 5.4 and 5.5): the size within
    /// MQES, physically contiguous (CAP.CQR), a page-aligned base, mapped memory.
    pub(super) fn check_queue_memory(
        &self,
        sqe: &Sqe,
        entries: u32,
        entry_size: usize,
    ) -> Result<(), Status> {
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

    pub(super) fn create_cq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
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

    pub(super) fn create_sq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
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

    pub(super) fn delete_sq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
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
                self.sh
                    .counters
                    .sq_deletion_aborts
                    .fetch_add(1, Ordering::Relaxed);
                self.batch.push(c);
            } else {
                i += 1;
            }
        }
        self.sync_held();
        Ok(0)
    }

    pub(super) fn delete_cq(&mut self, sqe: &Sqe) -> Result<u32, Status> {
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
}
