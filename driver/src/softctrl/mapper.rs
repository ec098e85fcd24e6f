// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The software controller's IOMMU: a table from IOVA ranges to host memory.
//!
//! Every device access goes through [`SoftMapper`] and is checked against the table
//! under its lock, so an unmap (which takes the same lock) cannot pull memory out
//! from under a copy in progress, and an access to an IOVA nothing maps fails
//! instead of touching memory.

use crate::dma::{DmaMapper, Iova};
use crate::error::{Error, Result};
use crate::spec::{Cqe, Sqe, CQE_SIZE, SQE_SIZE};
use std::collections::BTreeMap;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use std::sync::Mutex;

/// A device access to an IOVA range that is not (entirely) mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaFault {
    /// First address of the failed access.
    pub iova: u64,
    /// Its length.
    pub len: usize,
}

#[derive(Clone, Copy)]
struct Mapping {
    /// Host address, kept as an integer: the table only describes memory, the
    /// `map` caller owns it.
    host: usize,
    len: usize,
}

/// Translation table from IOVAs to host memory, filled by a [`crate::dma::DmaPool`]
/// through [`DmaMapper`].
pub struct SoftMapper {
    name: String,
    table: Mutex<BTreeMap<u64, Mapping>>,
}

impl fmt::Debug for SoftMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftMapper")
            .field("name", &self.name)
            .field("mapped_bytes", &self.mapped_bytes())
            .finish()
    }
}

/// The piece of a mapping that holds `iova`: host pointer and bytes left in it.
fn lookup(t: &BTreeMap<u64, Mapping>, iova: u64) -> Option<(*mut u8, usize)> {
    let (&start, m) = t.range(..=iova).next_back()?;
    let off = iova - start;
    if off >= m.len as u64 {
        return None;
    }
    Some(((m.host + off as usize) as *mut u8, m.len - off as usize))
}

/// Calls `f(host, offset_in_access, n)` for each contiguous host piece of
/// `iova..iova+len`, after checking the whole range is mapped.
fn for_each_piece(
    t: &BTreeMap<u64, Mapping>,
    iova: u64,
    len: usize,
    mut f: impl FnMut(*mut u8, usize, usize),
) -> std::result::Result<(), DmaFault> {
    let fault = DmaFault { iova, len };
    if iova.checked_add(len as u64).is_none() {
        return Err(fault);
    }
    // Check first so a failed access changes nothing.
    let mut done = 0;
    while done < len {
        let (_, avail) = lookup(t, iova + done as u64).ok_or(fault)?;
        done += avail.min(len - done);
    }
    let mut done = 0;
    while done < len {
        let (host, avail) = lookup(t, iova + done as u64).ok_or(fault)?;
        let n = avail.min(len - done);
        f(host, done, n);
        done += n;
    }
    Ok(())
}

impl SoftMapper {
    pub(super) fn new(name: &str) -> Self {
        SoftMapper {
            name: name.to_string(),
            table: Mutex::new(BTreeMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Mapping>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if every byte of `iova..iova+len` is mapped.
    pub fn is_mapped(&self, iova: Iova, len: usize) -> bool {
        for_each_piece(&self.table(), iova.0, len, |_, _, _| {}).is_ok()
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.table().values().map(|m| m.len).sum()
    }

    /// Copies device memory at `iova` into `dst`.
    pub(super) fn read(&self, iova: u64, dst: &mut [u8]) -> std::result::Result<(), DmaFault> {
        let t = self.table();
        for_each_piece(&t, iova, dst.len(), |host, off, n| {
            // SAFETY: `host..host+n` lies inside a live mapping (the table lock keeps
            // it mapped: `DmaMapper::map`'s contract), `dst[off..off+n]` is in bounds,
            // and the two cannot overlap since `dst` is the device's own buffer.
            unsafe { std::ptr::copy_nonoverlapping(host, dst.as_mut_ptr().add(off), n) }
        })
    }

    /// Copies `src` into device memory at `iova`.
    pub(super) fn write(&self, iova: u64, src: &[u8]) -> std::result::Result<(), DmaFault> {
        let t = self.table();
        for_each_piece(&t, iova, src.len(), |host, off, n| {
            // SAFETY: as in `read`, with the roles of the buffers swapped.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(off), host, n) }
        })
    }

    /// Fetches a submission queue entry.
    pub(super) fn read_sqe(&self, iova: u64) -> std::result::Result<Sqe, DmaFault> {
        let mut b = [0u8; SQE_SIZE];
        self.read(iova, &mut b)?;
        let mut sqe = Sqe::default();
        // SAFETY: `Sqe` is `repr(C)`, exactly SQE_SIZE bytes of integers with no
        // padding, so any byte pattern is a valid value.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut sqe as *mut Sqe).cast::<u8>(), SQE_SIZE)
        };
        Ok(sqe)
    }

    /// Writes a completion queue entry the way hardware does for a polling host: the
    /// first three dwords, a release fence, then the dword holding the phase tag, so
    /// the host never sees a new phase with an old entry.
    pub(super) fn write_cqe(&self, iova: u64, cqe: &Cqe) -> std::result::Result<(), DmaFault> {
        let fault = DmaFault {
            iova,
            len: CQE_SIZE,
        };
        let t = self.table();
        let (host, avail) = lookup(&t, iova).ok_or(fault)?;
        if avail < CQE_SIZE || !(host as usize).is_multiple_of(4) {
            return Err(fault);
        }
        let dw = [
            cqe.dw0,
            cqe.dw1,
            cqe.sq_head as u32 | (cqe.sq_id as u32) << 16,
            cqe.cid as u32 | (cqe.status as u32) << 16,
        ];
        let p = host.cast::<u32>();
        // SAFETY: 16 bytes at `host` are inside one live mapping (checked above, kept
        // mapped by the table lock) and 4-byte aligned; volatile because the host
        // polls this memory concurrently.
        unsafe {
            p.write_volatile(dw[0]);
            p.add(1).write_volatile(dw[1]);
            p.add(2).write_volatile(dw[2]);
            fence(Ordering::Release);
            p.add(3).write_volatile(dw[3]);
        }
        Ok(())
    }
}

impl DmaMapper for SoftMapper {
    unsafe fn map(&self, vaddr: NonNull<u8>, len: usize, iova: Iova) -> Result<()> {
        let bad = |what: &str| {
            Err(Error::InvalidArgument(format!(
                "{}: cannot map {len} bytes at IOVA {:#x}: {what}",
                self.name, iova.0
            )))
        };
        if len == 0 || iova.0.checked_add(len as u64).is_none() {
            return bad("empty or wrapping range");
        }
        let mut t = self.table();
        if let Some((&start, m)) = t.range(..=iova.0).next_back() {
            if start + m.len as u64 > iova.0 {
                return bad("overlaps an existing mapping");
            }
        }
        if let Some((&start, _)) = t.range(iova.0..).next() {
            if start < iova.0 + len as u64 {
                return bad("overlaps an existing mapping");
            }
        }
        t.insert(
            iova.0,
            Mapping {
                host: vaddr.as_ptr() as usize,
                len,
            },
        );
        Ok(())
    }

    fn unmap(&self, iova: Iova, len: usize) -> Result<()> {
        let mut t = self.table();
        match t.get(&iova.0) {
            Some(m) if m.len == len => {
                t.remove(&iova.0);
                Ok(())
            }
            _ => Err(Error::InvalidArgument(format!(
                "{}: no mapping of {len} bytes at IOVA {:#x} to unmap",
                self.name, iova.0
            ))),
        }
    }
}
