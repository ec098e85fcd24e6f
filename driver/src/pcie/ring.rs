// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A submission queue and its completion queue in host memory, with their doorbells:
//! the ring protocol of NVMe over PCIe (NVMe Base Specification 2.0, section 3.3.1).
//! The admin queue and every I/O queue pair use this one implementation.
//!
//! - Submit: copy the 64-byte entry into the slot at the SQ tail, advance the tail
//!   (wrapping at the end), and later, once per batch, a release fence and the new
//!   tail into the SQ tail doorbell.
//! - Complete: read the phase tag of the entry at the CQ head; when it matches the
//!   expected phase, an acquire fence, then the rest of the entry; advance the head,
//!   flipping the expected phase when it wraps; write the new head into the CQ head
//!   doorbell, as lazily as the CQ's size allows.
//!
//! With shadow doorbells (an I/O queue of a controller that took the Doorbell Buffer
//! Config command, see [`super::shadow`]), each new tail and head goes to the queue's
//! shadow slot first, and the SQ tail register is written only when the controller's
//! EventIdx asks for it.
//!
//! The ring knows nothing of command identifiers or how many commands are in flight:
//! its owner never posts more than `sq_entries - 1` commands at once.

use super::shadow::ShadowSlot;
use crate::dma::DmaBuf;
use crate::error::{Error, Result};
use crate::mmio::{Doorbell, Mmio};
use crate::spec::{Sqe, CQE_SIZE, SQE_SIZE};
use crate::transport::CqeTail;
use std::sync::atomic::{fence, Ordering};

/// Where a ring's queues live and how large they are.
#[derive(Debug)]
pub(crate) struct RingConfig {
    /// Queue identifier (0 for the admin queue): selects the doorbells.
    pub qid: u16,
    /// SQ memory, `sq_entries * 64` bytes, page aligned.
    pub sq: DmaBuf,
    /// CQ memory, `cq_entries * 16` bytes, page aligned.
    pub cq: DmaBuf,
    pub sq_entries: u16,
    pub cq_entries: u16,
    /// Commands the owner may have in flight at most (at most `sq_entries - 1`).
    pub in_flight_max: usize,
    /// The SQ tail's and CQ head's shadow slots, when the controller uses shadow
    /// doorbells (I/O queues only).
    pub shadow: Option<(ShadowSlot, ShadowSlot)>,
}

/// One SQ/CQ pair and its doorbells, owned by one thread.
#[derive(Debug)]
pub(crate) struct Ring {
    sq: DmaBuf,
    cq: DmaBuf,
    sq_db: Doorbell,
    cq_db: Doorbell,
    sq_entries: u16,
    cq_entries: u16,
    sq_tail: u16,
    /// Entries were posted since the SQ tail doorbell was last written.
    sq_dirty: bool,
    /// The SQ tail last announced (written to the shadow slot or the register).
    sq_announced: u16,
    cq_head: u16,
    phase: bool,
    /// Completions consumed since the CQ head doorbell was last written.
    cq_unreported: usize,
    /// Write the CQ head doorbell once `cq_unreported` exceeds this.
    cq_db_threshold: usize,
    shadow: Option<(ShadowSlot, ShadowSlot)>,
}

/// A doorbell of queue `qid`, or the error that says the BAR is too small for it.
fn doorbell(bar: &Mmio, name: &str, off: usize) -> Result<Doorbell> {
    bar.doorbell(off).ok_or_else(|| Error::ControllerFailed {
        device: name.to_string(),
        reason: format!(
            "doorbell offset {off:#x} is outside BAR0 ({} bytes)",
            bar.len()
        ),
    })
}

impl Ring {
    /// A ring over `cfg`'s memory, with the doorbells of queue `cfg.qid` in `bar`
    /// (stride CAP.DSTRD `dstrd`). The memory must be zeroed (no phase tags set); the
    /// queue must not exist on the device yet (its shadow slots are zeroed).
    pub(crate) fn new(bar: &Mmio, name: &str, dstrd: u32, mut cfg: RingConfig) -> Result<Ring> {
        debug_assert!(cfg.sq.len() >= cfg.sq_entries as usize * SQE_SIZE);
        debug_assert!(cfg.cq.len() >= cfg.cq_entries as usize * CQE_SIZE);
        debug_assert!(cfg.in_flight_max < cfg.sq_entries as usize);
        debug_assert!(cfg.in_flight_max < cfg.cq_entries as usize);
        if let Some((sq, cq)) = &mut cfg.shadow {
            sq.clear();
            cq.clear();
        }
        Ok(Ring {
            sq_db: doorbell(bar, name, crate::regs::sq_tail_doorbell(cfg.qid, dstrd))?,
            cq_db: doorbell(bar, name, crate::regs::cq_head_doorbell(cfg.qid, dstrd))?,
            sq: cfg.sq,
            cq: cfg.cq,
            sq_entries: cfg.sq_entries,
            cq_entries: cfg.cq_entries,
            sq_tail: 0,
            sq_dirty: false,
            sq_announced: 0,
            cq_head: 0,
            phase: true,
            cq_unreported: 0,
            // The device can post at most `in_flight_max` completions we have not
            // seen; as long as those plus the ones we consumed but did not report
            // fit in the CQ, the device never finds it full (section 4.1: a full CQ
            // is head == tail + 1), so the doorbell write can wait.
            cq_db_threshold: cfg.cq_entries as usize - 1 - cfg.in_flight_max,
            shadow: cfg.shadow,
        })
    }

    /// Copies `sqe` into the slot at the SQ tail and advances the tail. The device
    /// sees it after the next [`ring_sq_doorbell`](Self::ring_sq_doorbell).
    #[inline(always)]
    pub(crate) fn push(&mut self, sqe: &Sqe) {
        debug_assert!(self.sq_tail < self.sq_entries);
        let slot = self
            .sq
            .as_ptr()
            .wrapping_add(self.sq_tail as usize * SQE_SIZE)
            .cast::<u64>();
        // `sq_tail < sq_entries` and the SQ buffer holds `sq_entries` 64-byte slots;
        // the slot is free because the owner keeps at most `sq_entries - 1` commands
        // in flight; the slot is 64-byte aligned (the queue is page aligned).
        // SAFETY: in bounds, free and aligned as above; an Sqe is 64 bytes of plain
        // integers, so it may be read as eight u64 words.
        unsafe {
            let words = (sqe as *const Sqe).cast::<[u64; 8]>().read();
            for (i, w) in words.iter().enumerate() {
                slot.add(i).write_volatile(*w);
            }
        }
        self.sq_tail += 1;
        if self.sq_tail == self.sq_entries {
            self.sq_tail = 0;
        }
        self.sq_dirty = true;
    }

    /// True when entries were pushed since the SQ tail doorbell was last written.
    #[inline(always)]
    pub(crate) fn sq_dirty(&self) -> bool {
        self.sq_dirty
    }

    /// Announces the entries pushed since the last call: the new tail goes to the
    /// shadow slot, if the queue has one, and to the SQ tail doorbell register unless
    /// the shadow slot's EventIdx says the controller will read it anyway. Returns
    /// true if it wrote the register.
    #[inline(always)]
    pub(crate) fn ring_sq_doorbell(&mut self) -> bool {
        if !self.sq_dirty {
            return false;
        }
        // The entries must be visible to the device before the doorbell.
        fence(Ordering::Release);
        let write = match &mut self.shadow {
            None => true,
            Some((sq, _)) => sq.update(self.sq_tail, self.sq_announced),
        };
        if write {
            self.sq_db.write(self.sq_tail as u32);
        }
        self.sq_announced = self.sq_tail;
        self.sq_dirty = false;
        write
    }

    /// Forgets entries pushed but not announced: the device never sees them.
    pub(crate) fn discard_unannounced(&mut self) {
        self.sq_dirty = false;
    }

    /// The address of the CQ entry at the head.
    #[inline(always)]
    fn head_entry(&self) -> *mut u8 {
        self.cq
            .as_ptr()
            .wrapping_add(self.cq_head as usize * CQE_SIZE)
    }

    /// The entry at the CQ head if it carries the expected phase tag (the device
    /// wrote it). Reads of the rest of the entry come after an acquire fence.
    #[inline(always)]
    fn head_ready(&self) -> Option<*mut u8> {
        let entry = self.head_entry();
        // SAFETY: `cq_head < cq_entries` and the CQ buffer holds that many entries;
        // the status word is the last 2 bytes of the 16-byte entry.
        let status = unsafe { entry.add(14).cast::<u16>().read_volatile() };
        if (status & 1 == 1) != self.phase {
            return None;
        }
        fence(Ordering::Acquire);
        Some(entry)
    }

    /// Dwords 2 and 3 of the completion at the CQ head, if the device wrote one; it
    /// stays at the head until [`pop`](Self::pop). Dwords 0 and 1 are command
    /// specific and I/O commands here do not use them (figure 90).
    #[inline(always)]
    pub(crate) fn peek_tail(&self) -> Option<CqeTail> {
        let entry = self.head_ready()?;
        // SAFETY: as in `head_ready`; the entry's 16 bytes are in bounds and 4-byte
        // aligned, and the device wrote them before the phase tag (fence above).
        let (dw2, dw3) = unsafe {
            (
                entry.add(8).cast::<u32>().read_volatile(),
                entry.add(12).cast::<u32>().read_volatile(),
            )
        };
        Some(CqeTail { dw2, dw3 })
    }

    /// Dword 0 of the completion at the CQ head (command specific: Get/Set Features,
    /// Async Event Request, Abort; figure 90). Only after `peek_tail` returned it.
    pub(crate) fn peek_dw0(&self) -> u32 {
        let entry = self.head_entry();
        debug_assert!(
            self.head_ready().is_some(),
            "dw0 of a completion not yet seen"
        );
        // SAFETY: as in `head_ready`; the caller saw the phase tag (and its acquire
        // fence) through `peek_tail`, so the device wrote dword 0 before.
        unsafe { entry.cast::<u32>().read_volatile() }
    }

    /// Consumes the completion at the CQ head (which `peek` returned).
    #[inline(always)]
    pub(crate) fn pop(&mut self) {
        self.cq_head += 1;
        if self.cq_head == self.cq_entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
    }

    /// Counts `popped` more completions consumed, and writes the CQ head doorbell if
    /// those since the last write could otherwise fill the device's view of the CQ;
    /// returns true if it wrote.
    #[inline(always)]
    pub(crate) fn release_cq(&mut self, popped: usize) -> bool {
        self.cq_unreported += popped;
        if self.cq_unreported <= self.cq_db_threshold {
            return false;
        }
        // A controller with shadow doorbells reads the CQ head from the shadow slot
        // when it posts (QEMU: `nvme_post_cqes`), even after a register write, so the
        // slot gets each head the register gets, first. Between writes it lags, as
        // the register does, within what the threshold allows.
        if let Some((_, cq)) = &mut self.shadow {
            cq.store(self.cq_head);
        }
        self.cq_db.write(self.cq_head as u32);
        self.cq_unreported = 0;
        true
    }

    /// Where the CQ head is, phase included: two calls return the same value only
    /// when no completion was consumed in between (modulo a whole lap of the queue
    /// twice).
    pub(crate) fn cq_position(&self) -> u32 {
        self.cq_head as u32 | (self.phase as u32) << 16
    }

    /// Empties both queues for a device that no longer touches them (disabled):
    /// zeroed CQ, head and tail at 0, expected phase 1.
    pub(crate) fn rewind(&mut self) {
        // SAFETY: the caller guarantees the device no longer accesses the queues (the
        // controller is disabled); both buffers are ours, `len()` bytes each.
        unsafe {
            std::ptr::write_bytes(self.cq.as_ptr(), 0, self.cq.len());
            std::ptr::write_bytes(self.sq.as_ptr(), 0, self.sq.len());
        }
        self.sq_tail = 0;
        self.sq_dirty = false;
        self.sq_announced = 0;
        self.cq_head = 0;
        self.phase = true;
        self.cq_unreported = 0;
        if let Some((sq, cq)) = &mut self.shadow {
            sq.clear();
            cq.clear();
        }
    }
}
