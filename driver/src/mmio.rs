// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Volatile access to device registers (BAR0) or to a software controller's register
//! file. The memory is never a Rust reference: the device changes it behind our back.

use std::ptr::NonNull;

/// A mapped register window.
#[derive(Debug)]
pub struct Mmio {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: `Mmio` only performs volatile reads and writes through a raw pointer to
// device memory that lives as long as the owner of the mapping (which keeps it alive
// for at least as long as this value); such accesses are valid from any thread.
unsafe impl Send for Mmio {}
// SAFETY: as for `Send`: volatile register accesses from several threads are what the
// hardware expects; no Rust reference to the memory is ever formed.
unsafe impl Sync for Mmio {}

impl Mmio {
    /// Wraps a register window.
    ///
    /// # Safety
    /// `base` must point to `len` bytes that stay mapped and valid for volatile 32-bit
    /// and 64-bit accesses for the life of this value, `base` aligned to 4 KiB.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Mmio { base, len }
    }

    /// Length of the window.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn in_bounds(&self, off: usize, size: usize) -> bool {
        off.is_multiple_of(size) && off.checked_add(size).is_some_and(|e| e <= self.len)
    }

    /// Reads a 32-bit register; an offset outside the window reads all ones, as a
    /// removed device would.
    pub fn read32(&self, off: usize) -> u32 {
        if !self.in_bounds(off, 4) {
            return u32::MAX;
        }
        // SAFETY: in bounds and aligned (checked above), valid per `new`'s contract.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    /// Writes a 32-bit register; an offset outside the window is ignored.
    pub fn write32(&self, off: usize, v: u32) {
        if !self.in_bounds(off, 4) {
            return;
        }
        // SAFETY: in bounds and aligned (checked above), valid per `new`'s contract.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().write_volatile(v) }
    }

    /// Reads a 64-bit register as two 32-bit reads, low half first (section 3.1.3:
    /// hosts may access 64-bit properties as two 32-bit accesses).
    pub fn read64(&self, off: usize) -> u64 {
        self.read32(off) as u64 | (self.read32(off + 4) as u64) << 32
    }

    /// Writes a 64-bit register as two 32-bit writes, low half first.
    pub fn write64(&self, off: usize, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }

    /// A doorbell handle for the hot path, or `None` if `off` is outside the window.
    pub fn doorbell(&self, off: usize) -> Option<Doorbell> {
        if !self.in_bounds(off, 4) {
            return None;
        }
        // SAFETY: in bounds (checked above), so the pointer stays inside the mapping.
        let p = unsafe { self.base.as_ptr().add(off) };
        NonNull::new(p.cast::<u32>()).map(Doorbell)
    }
}

/// One doorbell register, computed once from CAP.DSTRD. Valid while the register
/// window it came from is mapped; the owner of the window never unmaps it while
/// queue pairs exist (on release it is replaced with anonymous memory instead).
#[derive(Debug, Clone, Copy)]
pub struct Doorbell(NonNull<u32>);

// SAFETY: a doorbell is a pointer into a register window that outlives every queue
// pair; writing it from the thread that owns the queue pair is what the device expects.
unsafe impl Send for Doorbell {}

impl Doorbell {
    /// Writes the doorbell.
    #[inline(always)]
    pub fn write(self, v: u32) {
        // SAFETY: the pointer was bounds-checked at creation and the window stays
        // mapped (see the type's documentation).
        unsafe { self.0.as_ptr().write_volatile(v) }
    }

    /// Reads the doorbell (used by the software controller and tests).
    pub fn read(self) -> u32 {
        // SAFETY: as for `write`.
        unsafe { self.0.as_ptr().read_volatile() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let mut mem = vec![0u64; 1024];
        let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `mem` outlives `m` and is 8 KiB of aligned memory.
        let m = unsafe { Mmio::new(base, 8192) };
        m.write64(0x28, 0x1234_5678_9abc_def0);
        assert_eq!(m.read64(0x28), 0x1234_5678_9abc_def0);
        assert_eq!(m.read32(8192), u32::MAX);
        assert_eq!(m.read32(3), u32::MAX);
        m.write32(8190, 1);
        assert!(m.doorbell(8192).is_none());
        let db = m.doorbell(0x1000).unwrap();
        db.write(7);
        assert_eq!(m.read32(0x1000), 7);
        assert_eq!(db.read(), 7);
    }
}
