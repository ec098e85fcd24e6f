// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Shadow doorbells: the Doorbell Buffer Config command (NVMe Base Specification 2.0,
//! section 5.11), meant for emulated controllers, where every doorbell register write
//! traps into the emulator.
//!
//! The host gives the controller two memory pages: the Shadow Doorbell buffer, where
//! it writes each new SQ tail and CQ head as it would write the doorbell register,
//! and the EventIdx buffer, where the controller writes, per doorbell, the value it
//! has seen. A doorbell's slots sit at `(2 * qid + cq) * (4 << CAP.DSTRD)` bytes, as
//! the registers do. After updating its shadow slot, the host writes the register
//! only when the new value passes the controller's EventIdx: otherwise the controller
//! is still working through the queue and reads the shadow slot again before it
//! stops. On QEMU's controller this lets one pass of its queue processing take the
//! commands of several host batches, with one register write for all of them.
//!
//! Only I/O queues use the shadow slots; the admin queue keeps writing its registers
//! (as Linux and SPDK do; QEMU copies admin register writes into the shadow itself).
//! A controller reset forgets the configuration: it is sent again after every enable,
//! before the I/O queues are created again, and each queue zeroes its own slots when
//! it is made and when it rewinds, so a queue starts at tail 0, head 0, EventIdx 0.

use crate::dma::{DmaBuf, DmaPool};
use crate::error::Result;
use crate::prp::PAGE_SIZE;
use crate::spec::{admin_opc, Sqe};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

/// The two pages a controller's I/O queues share.
#[derive(Debug)]
pub(crate) struct ShadowDoorbells {
    values: DmaBuf,
    event_idx: DmaBuf,
    /// Bytes between two doorbells' slots: 4 << CAP.DSTRD.
    stride: usize,
}

impl ShadowDoorbells {
    /// The pages for a controller with doorbell stride CAP.DSTRD `dstrd` whose I/O
    /// queue identifiers go up to `max_qid`; `None` when its slots would not fit in a
    /// page (the command takes one page each; such a controller keeps its registers).
    pub fn new(pool: &DmaPool, dstrd: u32, max_qid: u16) -> Result<Option<ShadowDoorbells>> {
        let stride = 4usize << dstrd;
        if (2 * max_qid as usize + 2) * stride > PAGE_SIZE as usize {
            return Ok(None);
        }
        Ok(Some(ShadowDoorbells {
            values: pool.alloc(PAGE_SIZE as usize)?,
            event_idx: pool.alloc(PAGE_SIZE as usize)?,
            stride,
        }))
    }

    /// The Doorbell Buffer Config command: PRP1 the Shadow Doorbell buffer, PRP2 the
    /// EventIdx buffer (section 5.11, figures "Doorbell Buffer Config - PRP Entry 1/2").
    pub fn config_command(&self) -> Sqe {
        let mut sqe = Sqe::new(admin_opc::DOORBELL_BUFFER_CONFIG);
        sqe.prp1 = self.values.iova().0;
        sqe.prp2 = self.event_idx.iova().0;
        sqe
    }

    /// The SQ tail and CQ head slots of I/O queue `qid`.
    pub fn slots(&self, qid: u16) -> (ShadowSlot, ShadowSlot) {
        debug_assert!(qid > 0, "the admin queue keeps its registers");
        let slot = |index: usize| {
            let off = index * self.stride;
            assert!(
                off + 4 <= PAGE_SIZE as usize,
                "queue {qid} has shadow slots"
            );
            ShadowSlot {
                value: NonNull::new(self.values.as_ptr().wrapping_add(off).cast()).unwrap(),
                event_idx: NonNull::new(self.event_idx.as_ptr().wrapping_add(off).cast()).unwrap(),
            }
        };
        (slot(2 * qid as usize), slot(2 * qid as usize + 1))
    }
}

/// One doorbell's shadow slot and EventIdx slot, used by the queue's owner only.
#[derive(Debug)]
pub(crate) struct ShadowSlot {
    value: NonNull<u32>,
    event_idx: NonNull<u32>,
}

// SAFETY: a slot points into pages of the controller, which outlive every queue of it
// (a queue pair holds the controller); each slot belongs to one queue, whose owner
// alone writes it, so moving the slot with its queue to another thread is sound.
unsafe impl Send for ShadowSlot {}

impl ShadowSlot {
    /// Writes `new` into the shadow slot (the last value written was `old`) and tells
    /// whether the doorbell register must be written too: when the controller's
    /// EventIdx lies in `[old, new)`, it has stopped looking at the slot (Linux's and
    /// SPDK's `need_event`, after virtio's).
    #[inline(always)]
    pub fn update(&mut self, new: u16, old: u16) -> bool {
        // SAFETY: both pointers are 4-byte aligned slots of live pages (see the type).
        let event_idx = unsafe {
            self.value.as_ptr().write_volatile(new as u32);
            // The shadow write must be visible before the EventIdx is read, or the
            // controller may stop after reading the old value while we read an old
            // EventIdx and skip the register write: a store-load order (mfence).
            fence(Ordering::SeqCst);
            self.event_idx.as_ptr().read_volatile() as u16
        };
        new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
    }

    /// Writes `value` into the shadow slot without asking for the register.
    #[inline(always)]
    pub fn store(&mut self, value: u16) {
        // SAFETY: as in `update`.
        unsafe { self.value.as_ptr().write_volatile(value as u32) }
    }

    /// Zeroes the slot and its EventIdx, for a queue the controller does not have
    /// (before it is created, or while the controller is disabled).
    pub fn clear(&mut self) {
        // SAFETY: as in `update`; the controller does not use the slots now.
        unsafe {
            self.value.as_ptr().write_volatile(0);
            self.event_idx.as_ptr().write_volatile(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(mem: &mut [u32; 2]) -> ShadowSlot {
        ShadowSlot {
            value: NonNull::from(&mut mem[0]),
            event_idx: NonNull::from(&mut mem[1]),
        }
    }

    #[test]
    fn register_written_only_when_the_value_passes_the_event_index() {
        let mut mem = [0u32; 2];
        let mut s = slot(&mut mem);
        // The controller saw 0 (idle at the start): 0 -> 3 passes it.
        assert!(s.update(3, 0));
        // It saw 3 and is still processing: 3 -> 5 passes 3, so it must be told...
        mem[1] = 3;
        let mut s = slot(&mut mem);
        assert!(s.update(5, 3));
        // ...but when it had only reached 2 (still before our last value), it reads
        // the slot again before it stops.
        mem[1] = 2;
        let mut s = slot(&mut mem);
        assert!(!s.update(7, 5));
        assert_eq!(mem[0], 7);
        // Wrapping at 16 bits.
        mem[1] = 65534;
        let mut s = slot(&mut mem);
        assert!(s.update(2, 65534));
        assert!(!slot(&mut [0, 65533]).update(2, 65534));
    }

    #[test]
    fn clear_zeroes_both_slots() {
        let mut mem = [9u32, 9];
        slot(&mut mem).clear();
        assert_eq!(mem, [0, 0]);
    }
}
