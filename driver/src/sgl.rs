// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Scatter Gather Lists (NVMe Base Specification 2.0, section 4.1.2).
//!
//! An SGL describes a data buffer as 16-byte descriptors. The command's data pointer
//! (bytes 24 to 39 of the SQE, where PRP1 and PRP2 sit otherwise) holds the first
//! descriptor, and CDW0's PSDT field (bits 15:14) says the command uses SGLs:
//!
//! - one contiguous buffer: an SGL **Data Block** descriptor (type 0h, subtype 0h:
//!   address) in the command, whatever the length; the controller maps it in one
//!   piece where a PRP list names every memory page on its own;
//! - several buffers: a **Last Segment** descriptor (type 3h) in the command that
//!   points to one segment, an array of Data Block descriptors in host memory (here
//!   the command's descriptor page, the page that holds a PRP list otherwise). One
//!   page holds [`SEGMENT_DESCRIPTORS`] descriptors. A chain of **Segment**
//!   descriptors (type 2h) would allow more; this driver never builds one.
//!
//! Whether a controller takes SGLs for I/O is in Identify Controller SGLS bits 1:0
//! ([`supported`]); the admin queue always uses PRPs (on PCIe, admin commands take
//! PSDT 00b: section 4.2, Common Command Format).

/// Size of one SGL descriptor.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Descriptors in one segment page: the most slices one command carries.
pub const SEGMENT_DESCRIPTORS: usize = 4096 / DESCRIPTOR_SIZE;

/// CDW0 PSDT (bits 15:14) value 01b: the data pointer is an SGL, the metadata
/// pointer (unused here) the address of a contiguous buffer (section 4.2).
pub const PSDT_SGL: u32 = 1 << 14;
/// CDW0 PSDT mask.
pub const PSDT_MASK: u32 = 3 << 14;

/// SGL descriptor types: the high nibble of the SGL Identifier, byte 15 of a
/// descriptor (section 4.1.2.1).
pub mod kind {
    /// Data Block: `length` bytes at `address`.
    pub const DATA_BLOCK: u8 = 0x0;
    /// Bit Bucket: `length` bytes the controller discards (reads only).
    pub const BIT_BUCKET: u8 = 0x1;
    /// Segment: the next segment, `length` bytes at `address`, not the last one.
    pub const SEGMENT: u8 = 0x2;
    /// Last Segment: the last segment, holding Data Block (or Bit Bucket) descriptors.
    pub const LAST_SEGMENT: u8 = 0x3;
    /// Transport SGL Data Block: data the transport moves on its own (over NVMe/TCP,
    /// in C2HData and H2CData PDUs), with no host address.
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// SGL descriptor subtypes: the low nibble of the SGL Identifier (section 4.1.2.1).
pub mod subtype {
    /// Address: the descriptor's address is a memory address.
    pub const ADDRESS: u8 = 0x0;
    /// Offset: the address is an offset into the command capsule's data (in-capsule
    /// data on a fabric).
    pub const OFFSET: u8 = 0x1;
    /// Transport specific: the subtype NVMe/TCP gives its Transport SGL Data Blocks
    /// (Ah, NVMe/TCP Transport Specification 1.0).
    pub const TRANSPORT: u8 = 0xa;
}

/// Identify Controller SGLS bits 1:0 (section 5.17.2.1): 01b SGLs are
/// supported without alignment rule, 10b supported with Data Blocks dword aligned in
/// address and length; 00b not supported, 11b reserved.
#[inline]
pub fn supported(sgls: u32) -> bool {
    matches!(sgls & 3, 0b01 | 0b10)
}

/// Identify Controller SGLS bits 1:0 is 10b: Data Block addresses and lengths must
/// be dword multiples (this driver's buffers always are, see `valid_rw`).
#[inline]
pub fn dword_aligned_only(sgls: u32) -> bool {
    sgls & 3 == 0b10
}

/// One SGL descriptor, as the two little-endian quadwords it occupies in memory or
/// in the command's data pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Bytes 7:0: the address (of data, or of the next segment).
    pub address: u64,
    /// Bytes 11:8 the length, bytes 14:12 reserved, byte 15 the SGL Identifier
    /// (type in bits 7:4, subtype in bits 3:0; subtype 0h: address).
    pub word1: u64,
}

impl Descriptor {
    /// A Data Block descriptor: `len` bytes at `iova`.
    #[inline(always)]
    pub const fn data_block(iova: u64, len: u32) -> Descriptor {
        Descriptor {
            address: iova,
            word1: len as u64 | ((kind::DATA_BLOCK as u64) << 60),
        }
    }

    /// A Last Segment descriptor: the segment of `count` descriptors at `iova`.
    #[inline]
    pub const fn last_segment(iova: u64, count: usize) -> Descriptor {
        Descriptor {
            address: iova,
            word1: (count * DESCRIPTOR_SIZE) as u64 | ((kind::LAST_SEGMENT as u64) << 60),
        }
    }

    /// A Data Block descriptor for `len` bytes of in-capsule data at `offset` in
    /// the capsule's data (subtype Offset): a fabric command that carries its data.
    pub const fn in_capsule(offset: u64, len: u32) -> Descriptor {
        Descriptor {
            address: offset,
            word1: len as u64
                | ((kind::DATA_BLOCK as u64) << 60)
                | ((subtype::OFFSET as u64) << 56),
        }
    }

    /// A Transport SGL Data Block descriptor of `len` bytes (subtype transport
    /// specific): data a fabric moves apart from the capsule (NVMe/TCP: the
    /// controller sends it in C2HData PDUs, or asks for it with R2T PDUs). A command
    /// without data carries one of length 0.
    pub const fn transport_data_block(len: u32) -> Descriptor {
        Descriptor {
            address: 0,
            word1: len as u64
                | ((kind::TRANSPORT_DATA_BLOCK as u64) << 60)
                | ((subtype::TRANSPORT as u64) << 56),
        }
    }

    /// The descriptor in a command's data pointer (SQE bytes 39:24: PRP1 holds the
    /// address, PRP2 the rest).
    pub fn from_sqe(sqe: &crate::spec::Sqe) -> Descriptor {
        Descriptor {
            address: sqe.prp1,
            word1: sqe.prp2,
        }
    }

    /// Puts the descriptor in `sqe`'s data pointer and sets PSDT to SGL.
    pub fn put_in(&self, sqe: &mut crate::spec::Sqe) {
        sqe.prp1 = self.address;
        sqe.prp2 = self.word1;
        sqe.cdw0 = sqe.cdw0 & !PSDT_MASK | PSDT_SGL;
    }

    /// Bytes 11:8: the length.
    #[inline]
    pub const fn len(&self) -> u32 {
        self.word1 as u32
    }

    /// True for a zero length.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The descriptor type (high nibble of byte 15).
    #[inline]
    pub const fn kind(&self) -> u8 {
        (self.word1 >> 60) as u8
    }

    /// The descriptor subtype (low nibble of byte 15).
    #[inline]
    pub const fn subtype(&self) -> u8 {
        ((self.word1 >> 56) & 0xf) as u8
    }

    /// Bytes 14:12, reserved (zero in every descriptor this driver builds).
    #[inline]
    pub const fn reserved(&self) -> u32 {
        ((self.word1 >> 32) & 0xff_ffff) as u32
    }

    /// The descriptor from 16 bytes of host memory (little endian).
    pub fn from_bytes(b: &[u8; DESCRIPTOR_SIZE]) -> Descriptor {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        Descriptor {
            address: u64::from_le_bytes(lo),
            word1: u64::from_le_bytes(hi),
        }
    }
}

/// Why slices cannot be described by one SGL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SglError {
    /// No slice, or a slice of zero bytes.
    Empty,
    /// More slices than one segment page holds ([`SEGMENT_DESCRIPTORS`]).
    TooManySlices,
    /// A slice address or length is not a dword multiple while the controller
    /// requires it (SGLS bits 1:0 = 10b).
    Misaligned,
}

/// Builds the data pointer of a command whose data is the slices `(iova, len)` of
/// `slices`, in order: a Data Block descriptor for one slice, else a Last Segment
/// descriptor pointing to the slices' Data Block descriptors, written to `segment`
/// (the command's descriptor page, whose device address is `segment_iova`). Returns
/// the descriptor for the command's data pointer; the caller sets [`PSDT_SGL`].
///
/// # Safety
/// `segment` must point to a writable page of at least 4096 bytes, 8-byte aligned,
/// that the device is not reading (the command using it is not in flight).
pub unsafe fn build(
    slices: &[(u64, u32)],
    dword_only: bool,
    segment: *mut u64,
    segment_iova: u64,
) -> Result<Descriptor, SglError> {
    if slices.is_empty() || slices.iter().any(|&(_, len)| len == 0) {
        return Err(SglError::Empty);
    }
    if dword_only && slices.iter().any(|&(a, len)| a & 3 != 0 || len & 3 != 0) {
        return Err(SglError::Misaligned);
    }
    if let [(iova, len)] = *slices {
        return Ok(Descriptor::data_block(iova, len));
    }
    if slices.len() > SEGMENT_DESCRIPTORS {
        return Err(SglError::TooManySlices);
    }
    for (i, &(iova, len)) in slices.iter().enumerate() {
        let d = Descriptor::data_block(iova, len);
        // SAFETY: `i < SEGMENT_DESCRIPTORS`, so both words lie inside the page the
        // caller provides; volatile because the device reads the page later.
        unsafe {
            segment.add(2 * i).write_volatile(d.address.to_le());
            segment.add(2 * i + 1).write_volatile(d.word1.to_le());
        }
    }
    Ok(Descriptor::last_segment(segment_iova, slices.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEG_IOVA: u64 = 0xdead_0000;

    /// Walks an SGL the way a controller does (section 4.1.2): the descriptor in the
    /// command, then the segment it points to; returns the data ranges in order.
    fn walk(first: Descriptor, segment: &[u64]) -> Vec<(u64, u64)> {
        assert_eq!(first.reserved(), 0);
        assert_eq!(first.subtype(), 0, "address subtype");
        match first.kind() {
            kind::DATA_BLOCK => vec![(first.address, first.len() as u64)],
            kind::LAST_SEGMENT => {
                assert_eq!(first.address, SEG_IOVA, "the segment is the command's page");
                assert_eq!(first.len() as usize % DESCRIPTOR_SIZE, 0);
                let n = first.len() as usize / DESCRIPTOR_SIZE;
                assert!((2..=SEGMENT_DESCRIPTORS).contains(&n));
                (0..n)
                    .map(|i| {
                        let d = Descriptor {
                            address: u64::from_le(segment[2 * i]),
                            word1: u64::from_le(segment[2 * i + 1]),
                        };
                        // A last segment holds data descriptors only.
                        assert_eq!(d.kind(), kind::DATA_BLOCK);
                        assert_eq!((d.subtype(), d.reserved()), (0, 0));
                        (d.address, d.len() as u64)
                    })
                    .collect()
            }
            k => panic!("descriptor type {k:#x} in the command"),
        }
    }

    fn check(slices: &[(u64, u32)]) {
        let mut page = vec![0u64; 512];
        // SAFETY: `page` is 4096 bytes that nothing else reads.
        let r = unsafe { build(slices, false, page.as_mut_ptr(), SEG_IOVA) };
        if slices.len() > SEGMENT_DESCRIPTORS {
            assert_eq!(r, Err(SglError::TooManySlices));
            return;
        }
        let got = walk(r.unwrap(), &page);
        let want: Vec<(u64, u64)> = slices.iter().map(|&(a, l)| (a, l as u64)).collect();
        assert_eq!(got, want, "the SGL names every slice, in order, exactly");
    }

    #[test]
    fn one_slice_is_one_data_block_in_the_command() {
        let d = Descriptor::data_block(0x1_0000_0004, 128 << 10);
        assert_eq!(d.kind(), kind::DATA_BLOCK);
        assert_eq!(d.len(), 128 << 10);
        // Byte 15 is 00h: Data Block, address subtype.
        assert_eq!(d.word1 >> 56, 0);
        check(&[(0x1_0000_0004, 128 << 10)]);
        check(&[(0x1_0000_0000, u32::MAX)]);
    }

    #[test]
    fn several_slices_and_refusals() {
        check(&[(0x1000, 512), (0x9000, 4096), (0x20004, 12)]);
        let full: Vec<(u64, u32)> = (0..SEGMENT_DESCRIPTORS as u64)
            .map(|i| (i << 12, 4096))
            .collect();
        check(&full);
        let mut over = full.clone();
        over.push((1 << 30, 8));
        check(&over);
        let mut page = vec![0u64; 512];
        // SAFETY: as in `check`.
        unsafe {
            assert_eq!(
                build(&[], false, page.as_mut_ptr(), 0),
                Err(SglError::Empty)
            );
            assert_eq!(
                build(&[(0x1000, 8), (0x2000, 0)], false, page.as_mut_ptr(), 0),
                Err(SglError::Empty)
            );
            assert_eq!(
                build(&[(0x1002, 8)], true, page.as_mut_ptr(), 0),
                Err(SglError::Misaligned)
            );
            assert_eq!(
                build(&[(0x1000, 6)], true, page.as_mut_ptr(), 0),
                Err(SglError::Misaligned)
            );
            assert!(build(&[(0x1002, 6)], false, page.as_mut_ptr(), 0).is_ok());
        }
    }

    #[test]
    fn sgls_field() {
        assert!(!supported(0));
        assert!(supported(0x0008_0001)); // QEMU's
        assert!(supported(2) && dword_aligned_only(2));
        assert!(!supported(3), "11b is reserved");
    }

    proptest! {
        #[test]
        fn any_slices(slices in proptest::collection::vec((0u64..1 << 40, 1u32..(4 << 20)), 1..300)) {
            let slices: Vec<(u64, u32)> = slices.into_iter().map(|(a, l)| (a & !3, l)).collect();
            check(&slices);
        }
    }
}
