// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Physical Region Page entries (NVMe Base Specification 2.0, section 4.1.1).
//!
//! A data buffer is described by PRP1 and PRP2. PRP1 may start anywhere dword
//! aligned inside a memory page; every later entry addresses the start of a page.
//! When the transfer fits in the first page PRP2 is unused; when it spans exactly two
//! pages PRP2 is the second page; otherwise PRP2 points to a PRP list, an array of page
//! addresses in host memory. This driver gives each command one list page, so one
//! command covers at most [`MAX_PRP_PAGES`] pages; longer requests are split.

/// Memory page size this driver configures (CC.MPS = 0).
pub const PAGE_SIZE: u64 = 4096;
/// Entries in one PRP list page.
pub const PRP_LIST_ENTRIES: usize = (PAGE_SIZE / 8) as usize;
/// Pages one command may touch with a single list page: PRP1's page plus a full list.
/// A transfer of this many pages is always describable whatever its offset, since
/// `PRP_LIST_ENTRIES` entries cover the pages after the first.
pub const MAX_PRP_PAGES: u64 = PRP_LIST_ENTRIES as u64;

/// Why a buffer cannot be described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrpError {
    /// PRP1 must be dword aligned (section 4.1.1).
    Misaligned,
    /// Zero-length transfer.
    Empty,
    /// More pages than one list page can describe.
    TooLong,
}

/// The PRP entries of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prps {
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2: zero, the second page, or the list page's address.
    pub prp2: u64,
    /// Entries written to the list page (0 when no list is used).
    pub list_len: usize,
}

/// Number of memory pages a transfer of `len` bytes at `iova` touches.
#[inline]
pub fn pages_touched(iova: u64, len: u64) -> u64 {
    let first = iova & !(PAGE_SIZE - 1);
    let end = iova + len;
    (end - first).div_ceil(PAGE_SIZE)
}

/// Builds PRP entries for `len` bytes at `iova`. When a list is needed, its entries
/// are written through `list` (a pointer to the command's list page, whose device
/// address is `list_iova`).
///
/// # Safety
/// `list` must point to a writable page of at least `PAGE_SIZE` bytes that the device
/// is not reading (the command using it is not in flight).
#[inline]
pub unsafe fn build(iova: u64, len: u32, list: *mut u64, list_iova: u64) -> Result<Prps, PrpError> {
    if iova & 3 != 0 {
        return Err(PrpError::Misaligned);
    }
    if len == 0 {
        return Err(PrpError::Empty);
    }
    let pages = pages_touched(iova, len as u64);
    // SAFETY: forwarded from the caller; `iova` is aligned and `len` is not zero.
    let prp2 = unsafe { prp2(iova, len as u64, || (list, list_iova)) }.ok_or(PrpError::TooLong)?;
    Ok(Prps {
        prp1: iova,
        prp2,
        list_len: if pages > 2 { pages as usize - 1 } else { 0 },
    })
}

/// PRP2 for `len` bytes at `iova` (PRP1 is `iova`): zero when the transfer stays in
/// its first page, the second page when it spans two, else the list page's address
/// after writing the list; `None` past [`MAX_PRP_PAGES`]. `list` gives the list page
/// and its device address, asked for only when a list is needed. The data path's
/// version of [`build`]: no checks the caller already made.
///
/// # Safety
/// `iova` must be dword aligned and `len` not zero; the page `list` returns must be
/// as for [`build`].
#[inline(always)]
pub unsafe fn prp2(iova: u64, len: u64, list: impl FnOnce() -> (*mut u64, u64)) -> Option<u64> {
    let end_in_page = (iova & (PAGE_SIZE - 1)) + len;
    if end_in_page <= PAGE_SIZE {
        return Some(0);
    }
    if end_in_page <= 2 * PAGE_SIZE {
        return Some((iova & !(PAGE_SIZE - 1)) + PAGE_SIZE);
    }
    let pages = end_in_page.div_ceil(PAGE_SIZE);
    if pages > MAX_PRP_PAGES {
        return None;
    }
    let (list, list_iova) = list();
    // SAFETY: forwarded from the caller; 3 <= pages <= MAX_PRP_PAGES.
    unsafe { write_list(iova, pages, list) };
    Some(list_iova)
}

/// Writes the PRP list for a transfer of `n` (3 to `MAX_PRP_PAGES`) pages: the
/// addresses of the pages after the first.
///
/// # Safety
/// As for [`build`].
#[inline(never)]
unsafe fn write_list(iova: u64, n: u64, list: *mut u64) {
    let first_page = iova & !(PAGE_SIZE - 1);
    for i in 0..(n - 1) as usize {
        // SAFETY: `i < n - 1 <= PRP_LIST_ENTRIES - 1`, inside the page the caller
        // provides; volatile because the device reads the page later.
        unsafe {
            list.add(i)
                .write_volatile(first_page + (i as u64 + 1) * PAGE_SIZE)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Walks PRPs the way a controller does and returns the byte ranges covered.
    fn walk(p: &Prps, list: &[u64], len: u64) -> Vec<(u64, u64)> {
        let mut out = vec![];
        let first = (PAGE_SIZE - (p.prp1 & (PAGE_SIZE - 1))).min(len);
        out.push((p.prp1, first));
        let mut left = len - first;
        if left == 0 {
            assert_eq!(p.prp2, 0);
            return out;
        }
        if left <= PAGE_SIZE {
            assert_eq!(p.prp2 % PAGE_SIZE, 0);
            out.push((p.prp2, left));
            return out;
        }
        for &e in &list[..p.list_len] {
            assert_eq!(e % PAGE_SIZE, 0, "list entries address whole pages");
            let n = left.min(PAGE_SIZE);
            out.push((e, n));
            left -= n;
        }
        assert_eq!(left, 0);
        out
    }

    fn check(iova: u64, len: u32) {
        let mut list = vec![0u64; PRP_LIST_ENTRIES];
        // SAFETY: `list` is a page of entries that nothing else reads.
        let r = unsafe { build(iova, len, list.as_mut_ptr(), 0xdead_0000) };
        let pages = pages_touched(iova, len as u64);
        if pages > MAX_PRP_PAGES {
            assert_eq!(r, Err(PrpError::TooLong));
            return;
        }
        let p = r.unwrap();
        if pages > 2 {
            assert_eq!(p.prp2, 0xdead_0000);
        }
        // The covered ranges are contiguous and exactly [iova, iova + len).
        let mut at = iova;
        for (a, n) in walk(&p, &list, len as u64) {
            assert_eq!(a, at);
            at += n;
        }
        assert_eq!(at, iova + len as u64);
    }

    #[test]
    fn every_length_class() {
        let base = 0x1_0000_0000u64;
        for off in [0u64, 4, 512, 2048, 4092] {
            for len in [
                4u32,
                512,
                4096 - off as u32,
                4096,
                4097,
                8192,
                8196,
                12288,
                64 << 10,
                2 << 20,
            ] {
                check(base + off, len);
            }
        }
        // The largest transfer that fits is exactly 512 pages, aligned or not.
        check(base, (MAX_PRP_PAGES * PAGE_SIZE) as u32);
        check(base + 4, (MAX_PRP_PAGES * PAGE_SIZE) as u32 - 4);
        let mut list = vec![0u64; PRP_LIST_ENTRIES];
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                build(base + 2, 8, list.as_mut_ptr(), 0),
                Err(PrpError::Misaligned)
            );
            assert_eq!(build(base, 0, list.as_mut_ptr(), 0), Err(PrpError::Empty));
            assert_eq!(
                build(
                    base + 4,
                    (MAX_PRP_PAGES * PAGE_SIZE) as u32,
                    list.as_mut_ptr(),
                    0
                ),
                Err(PrpError::TooLong)
            );
        }
    }

    proptest! {
        #[test]
        fn any_offset_and_length(page in 0u64..1_000_000, off in 0u64..1024, len in 1u32..(3 << 20)) {
            check(0x1_0000_0000 + page * PAGE_SIZE + off * 4, len);
        }
    }
}
