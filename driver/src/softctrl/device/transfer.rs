// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Data transfer: the host buffer a command describes, walked as PRPs (NVMe Base
//! Specification 2.0, section 4.1.1) or SGLs (section 4.1.2), and copied to or from.

use super::*;
use crate::sgl::{self, kind, Descriptor, DESCRIPTOR_SIZE};

/// Most descriptors one command's SGL may hold, segments included: far more than
/// any sane host builds, few enough that a looping chain ends quickly.
const SGL_DESCRIPTORS_MAX: usize = 4096;

impl Device {
    // ---- Data transfer -------------------------------------------------------------

    /// Splits a transfer of `len` bytes into (IOVA, length) pieces following the
    /// PRP rules of section 4.1.1: PRP1 may have a dword-aligned offset; a second
    /// page goes in PRP2; beyond that PRP2 points to a PRP list whose last entry in
    /// a full page chains to the next list page. Every data entry after the first
    /// and every chained list pointer must have offset 0.
    pub(super) fn prp_segments(
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

    /// Splits a transfer of `len` bytes into (IOVA, length) pieces following the SGL
    /// rules of section 4.1.2, starting from `first`, the descriptor in the command:
    /// a Data Block, or a (Last) Segment descriptor pointing to an array of
    /// descriptors in host memory, the last of which may point to the next segment
    /// (a Segment descriptor) or to the final one (Last Segment); a last segment holds
    /// data descriptors only. Refusals carry the spec's status: SGL Descriptor Type
    /// Invalid for a type or subtype this controller does not support, Invalid SGL
    /// Segment Descriptor for a malformed or misplaced segment descriptor, Data SGL
    /// Length Invalid when the data descriptors do not add up to `len`, Invalid Number
    /// of SGL Descriptors for a chain without end.
    pub(in crate::softctrl) fn sgl_segments(
        &self,
        first: Descriptor,
        len: usize,
        out: &mut Vec<(u64, usize)>,
    ) -> Result<(), Status> {
        out.clear();
        let dword_only = sgl::dword_aligned_only(self.sh.config.sgls);
        let mut left = len as u64;
        // One data descriptor: checked and added to `out`.
        let mut data = |d: &Descriptor, out: &mut Vec<(u64, usize)>| -> Result<(), Status> {
            if d.kind() != kind::DATA_BLOCK || d.subtype() != 0 {
                return Err(generic(csc::SGL_DESCRIPTOR_TYPE_INVALID));
            }
            let n = d.len() as u64;
            if n == 0 {
                return Ok(());
            }
            if dword_only && (d.address & 3 != 0 || n & 3 != 0) {
                return Err(generic(sc::INVALID_FIELD));
            }
            // More data than the command moves (SGLS bit 18 is clear), or a range
            // that wraps the address space.
            if n > left || d.address.checked_add(n).is_none() {
                return Err(generic(csc::DATA_SGL_LENGTH_INVALID));
            }
            out.push((d.address, n as usize));
            left -= n;
            Ok(())
        };
        let mut next = first;
        let mut seen = 0usize;
        let mut raw = [0u8; DESCRIPTOR_SIZE];
        loop {
            match next.kind() {
                kind::DATA_BLOCK if seen == 0 => {
                    data(&next, out)?;
                    break;
                }
                kind::SEGMENT | kind::LAST_SEGMENT => {}
                kind::DATA_BLOCK => return Err(generic(csc::INVALID_SGL_SEGMENT_DESCRIPTOR)),
                _ => return Err(generic(csc::SGL_DESCRIPTOR_TYPE_INVALID)),
            }
            if next.subtype() != 0 {
                return Err(generic(csc::SGL_DESCRIPTOR_TYPE_INVALID));
            }
            let seg_len = next.len() as usize;
            if seg_len == 0 || !seg_len.is_multiple_of(DESCRIPTOR_SIZE) {
                return Err(generic(csc::INVALID_SGL_SEGMENT_DESCRIPTOR));
            }
            let count = seg_len / DESCRIPTOR_SIZE;
            seen += count;
            if seen > SGL_DESCRIPTORS_MAX {
                return Err(generic(csc::INVALID_NUMBER_OF_SGL_DESCRIPTORS));
            }
            let last = next.kind() == kind::LAST_SEGMENT;
            let base = next.address;
            let mut chained = None;
            for i in 0..count {
                let at = base
                    .checked_add((i * DESCRIPTOR_SIZE) as u64)
                    .ok_or_else(dma_error)?;
                self.sh.mapper.read(at, &mut raw).map_err(|_| dma_error())?;
                let d = Descriptor::from_bytes(&raw);
                let is_segment = matches!(d.kind(), kind::SEGMENT | kind::LAST_SEGMENT);
                if is_segment {
                    // Only the last descriptor of a segment that is not the last
                    // one may point on.
                    if last || i + 1 != count {
                        return Err(generic(csc::INVALID_SGL_SEGMENT_DESCRIPTOR));
                    }
                    chained = Some(d);
                } else {
                    data(&d, out)?;
                }
            }
            match chained {
                Some(d) => next = d,
                // A Segment descriptor promises another segment.
                None if !last => return Err(generic(csc::INVALID_SGL_SEGMENT_DESCRIPTOR)),
                None => break,
            }
        }
        if left != 0 {
            return Err(generic(csc::DATA_SGL_LENGTH_INVALID));
        }
        Ok(())
    }

    /// Walks the host buffer of `len` bytes the command's data pointer describes
    /// (PRPs or an SGL, as CDW0's PSDT says): calls `xfer(mapper, iova, offset, n)`
    /// for each piece of `n` bytes at `iova`, which is `offset` bytes into the
    /// transfer. A failed piece is a Data Transfer Error.
    pub(super) fn transfer(
        &mut self,
        sqe: &Sqe,
        len: usize,
        mut xfer: impl FnMut(&SoftMapper, u64, usize, usize) -> Result<(), DmaFault>,
    ) -> Result<(), Status> {
        let mut segs = std::mem::take(&mut self.segs);
        let is_sgl = sqe.cdw0 & sgl::PSDT_MASK == sgl::PSDT_SGL;
        let described = if is_sgl {
            let first = Descriptor {
                address: sqe.prp1,
                word1: sqe.prp2,
            };
            if len == 0 {
                segs.clear();
                Ok(())
            } else {
                self.sgl_segments(first, len, &mut segs)
            }
        } else {
            self.prp_segments(sqe.prp1, sqe.prp2, len, &mut segs)
        };
        if described.is_ok() && len > 0 {
            let c = &self.sh.counters;
            let n = if is_sgl {
                &c.sgl_transfers
            } else {
                &c.prp_transfers
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
        let r = described.and_then(|()| {
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

    /// Copies `data` to the host buffer the command describes.
    pub(super) fn copy_to_host(&mut self, sqe: &Sqe, data: &[u8]) -> Result<(), Status> {
        self.transfer(sqe, data.len(), |m, iova, off, n| {
            m.write(iova, &data[off..off + n])
        })
    }

    /// Copies `buf.len()` bytes from the host buffer the command describes.
    pub(super) fn copy_from_host(&mut self, sqe: &Sqe, buf: &mut [u8]) -> Result<(), Status> {
        self.transfer(sqe, buf.len(), |m, iova, off, n| {
            m.read(iova, &mut buf[off..off + n])
        })
    }
}
