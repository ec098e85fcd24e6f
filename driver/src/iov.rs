// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Vectored data: a request whose buffer is several DMA slices, in order (SPDK's SGL
//! payload, `spdk_nvme_ns_cmd_readv`/`writev`), and how one command's share of them is
//! described to the device (NVMe Base Specification 2.0, sections 4.1.1 and 4.1.2).
//!
//! The slices are the caller's array: a request refers to it ([`DmaVec`]) and copies
//! nothing, so the data path allocates nothing. As with SPDK's iovecs, the array must
//! stay alive and unchanged until the request's completion is delivered; the only way
//! to make a [`DmaVec`] is the `unsafe` [`DmaVec::new`], whose caller promises it.
//!
//! - With SGLs, each piece is one Data Block descriptor; several go into the command's
//!   descriptor page behind a Last Segment descriptor, at most
//!   [`sgl::SEGMENT_DESCRIPTORS`] per command (a larger request is split).
//! - With PRPs, the pieces must join on page boundaries: every slice but the first
//!   starts on a page, every slice but the last ends on one ([`page_rule`]).

use crate::dma::DmaSlice;
use crate::prp::{PAGE_SIZE, PRP_LIST_ENTRIES};
use crate::sgl;
use std::ptr::NonNull;

/// A caller-owned array of DMA slices that a vectored request refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaVec {
    ptr: NonNull<DmaSlice>,
    count: u32,
}

// SAFETY: a `DmaVec` only reads plain `Copy` data, and its maker promised (see `new`)
// that the array outlives the request and is not written while it is in flight, so
// reading it from the thread that owns the queue pair is sound.
unsafe impl Send for DmaVec {}
// SAFETY: as for `Send`: shared access only reads.
unsafe impl Sync for DmaVec {}

impl DmaVec {
    /// Refers to `slices` (at most `u32::MAX` of them).
    ///
    /// # Safety
    /// `slices` must stay alive and unchanged until the request carrying this vector
    /// completes (its completion is delivered by a poll, or the submission is refused
    /// and handed back), SPDK's iovec contract.
    pub unsafe fn new(slices: &[DmaSlice]) -> DmaVec {
        DmaVec {
            ptr: NonNull::from(slices).cast(),
            count: slices.len().min(u32::MAX as usize) as u32,
        }
    }

    /// The slices.
    #[inline]
    pub fn slices(&self) -> &[DmaSlice] {
        // SAFETY: `ptr` and `count` came from one slice that `new`'s caller keeps
        // alive and unchanged while the request lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.count as usize) }
    }

    /// Number of slices.
    #[inline]
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when there is no slice.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes in all slices.
    pub fn total_bytes(&self) -> u64 {
        self.slices().iter().map(|s| s.len as u64).sum()
    }
}

/// How a transport can describe a command's share of a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most pieces (descriptors) one command may carry.
    pub max_pieces: usize,
    /// Slices must join on page boundaries ([`page_rule`]): PRPs.
    pub page_joins: bool,
}

/// Which PRP rule (section 4.1.1) a slice breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRule {
    /// A slice other than the first does not start on a page boundary.
    StartNotAligned,
    /// A slice other than the last does not end on a page boundary.
    EndNotAligned,
}

/// The first slice that breaks the PRP rule (section 4.1.1: only PRP entry 1 may have
/// an offset in its page, and the data of a command is contiguous within and between
/// pages): every slice but the first starts page-aligned, every slice but the last
/// ends page-aligned.
pub fn page_rule(slices: &[DmaSlice]) -> Option<(usize, PageRule)> {
    let last = slices.len().saturating_sub(1);
    for (i, s) in slices.iter().enumerate() {
        if i > 0 && !s.iova.0.is_multiple_of(PAGE_SIZE) {
            return Some((i, PageRule::StartNotAligned));
        }
        if i < last && !(s.iova.0 + s.len as u64).is_multiple_of(PAGE_SIZE) {
            return Some((i, PageRule::EndNotAligned));
        }
    }
    None
}

/// Calls `f(iova, len)` for each piece of the `len` bytes at byte `offset` of the
/// vector, in order; returns the bytes covered (less than `len` if the slices end).
#[inline]
pub fn for_each_piece(
    slices: &[DmaSlice],
    offset: u64,
    len: u64,
    mut f: impl FnMut(u64, u64),
) -> u64 {
    let (mut skip, mut left) = (offset, len);
    for s in slices {
        if left == 0 {
            break;
        }
        let l = s.len as u64;
        if skip >= l {
            skip -= l;
            continue;
        }
        let take = (l - skip).min(left);
        f(s.iova.0 + skip, take);
        left -= take;
        skip = 0;
    }
    len - left
}

/// Blocks (of `1 << block_shift` bytes) from byte `offset` of the vector that one
/// command may carry: at most `max_blocks`, within `max_pieces` pieces, cut at a block
/// boundary. Zero when the next block alone spans more than `max_pieces` slices.
pub fn blocks_within(
    slices: &[DmaSlice],
    offset: u64,
    max_blocks: u32,
    block_shift: u32,
    max_pieces: usize,
) -> u32 {
    let want = (max_blocks as u64) << block_shift;
    let mut pieces = 0usize;
    let mut bytes = 0u64;
    for_each_piece(slices, offset, want, |_, l| {
        if pieces < max_pieces {
            pieces += 1;
            bytes += l;
        }
    });
    (bytes >> block_shift) as u32
}

/// Describes the `len` bytes at byte `offset` of the vector with SGLs: one Data
/// Block descriptor in the command for one piece, else a Last Segment descriptor to
/// the pieces' Data Block descriptors written to `page` (device address `page_iova`).
/// Returns the command's data pointer descriptor.
///
/// # Safety
/// `page` is a writable, 8-byte aligned page of 4096 bytes the device is not reading;
/// the bytes span at most [`sgl::SEGMENT_DESCRIPTORS`] pieces (see [`blocks_within`]).
pub unsafe fn describe_sgl(
    slices: &[DmaSlice],
    offset: u64,
    len: u64,
    page: *mut u64,
    page_iova: u64,
) -> sgl::Descriptor {
    let mut n = 0usize;
    let mut first = sgl::Descriptor::data_block(0, 0);
    for_each_piece(slices, offset, len, |iova, l| {
        let d = sgl::Descriptor::data_block(iova, l as u32);
        if n == 0 {
            first = d;
        }
        if n < sgl::SEGMENT_DESCRIPTORS {
            // SAFETY: `n` is below the descriptors one page holds, so both words lie
            // in the caller's page; volatile because the device reads it later.
            unsafe {
                page.add(2 * n).write_volatile(d.address.to_le());
                page.add(2 * n + 1).write_volatile(d.word1.to_le());
            }
        }
        n += 1;
    });
    debug_assert!(
        n <= sgl::SEGMENT_DESCRIPTORS,
        "split at the descriptor page"
    );
    if n == 1 {
        first
    } else {
        sgl::Descriptor::last_segment(page_iova, n.min(sgl::SEGMENT_DESCRIPTORS))
    }
}

/// Describes the `len` bytes at byte `offset` of the vector with PRPs: returns (PRP1,
/// PRP2), PRP2 zero, the second page or `page_iova` with the list written to `page`.
/// `None` if the pieces need more entries than one list page holds.
///
/// # Safety
/// As for [`describe_sgl`]; the slices keep [`page_rule`].
pub unsafe fn describe_prp(
    slices: &[DmaSlice],
    offset: u64,
    len: u64,
    page: *mut u64,
    page_iova: u64,
) -> Option<(u64, u64)> {
    let mut entries = 0usize;
    let (mut prp1, mut second) = (0u64, 0u64);
    let mut overflow = false;
    for_each_piece(slices, offset, len, |iova, l| {
        // The pages this piece touches: its own start, then each following page.
        let mut at = iova;
        let end = iova + l;
        while at < end {
            match entries {
                0 => prp1 = at,
                _ if entries - 1 < PRP_LIST_ENTRIES => {
                    if entries == 1 {
                        second = at;
                    }
                    // SAFETY: `entries - 1` is below the entries of one page.
                    unsafe { page.add(entries - 1).write_volatile(at.to_le()) };
                }
                _ => overflow = true,
            }
            entries += 1;
            at = (at & !(PAGE_SIZE - 1)) + PAGE_SIZE;
        }
    });
    match entries {
        _ if overflow => None,
        0 | 1 => Some((prp1, 0)),
        2 => Some((prp1, second)),
        _ => Some((prp1, page_iova)),
    }
}

#[cfg(test)]
mod tests;
