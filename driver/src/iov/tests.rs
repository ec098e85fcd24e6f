// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Every description of a vector is walked the way a controller walks it (sections
//! 4.1.1 and 4.1.2) and must name exactly the bytes the vector holds there, in order.

use super::*;
use crate::dma::Iova;
use crate::sgl::{kind, Descriptor, DESCRIPTOR_SIZE};
use proptest::prelude::*;

const PAGE_IOVA: u64 = 0xdead_0000;

fn s(iova: u64, len: u32) -> DmaSlice {
    DmaSlice {
        iova: Iova(iova),
        len,
    }
}

/// Adjacent ranges merged: two descriptions of the same bytes compare equal.
fn merged(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, l) in ranges {
        match out.last_mut() {
            Some((b, m)) if *b + *m == a => *m += l,
            _ => out.push((a, l)),
        }
    }
    out
}

/// The bytes `len` at `offset` of the vector, as the vector holds them.
fn expected(slices: &[DmaSlice], offset: u64, len: u64) -> Vec<(u64, u64)> {
    let mut bytes = Vec::new();
    let mut skip = offset;
    let mut left = len;
    for sl in slices {
        let l = sl.len as u64;
        if skip >= l {
            skip -= l;
            continue;
        }
        let take = (l - skip).min(left);
        if take > 0 {
            bytes.push((sl.iova.0 + skip, take));
        }
        left -= take;
        skip = 0;
    }
    assert_eq!(left, 0, "the test asks for bytes the vector holds");
    merged(bytes)
}

/// Walks an SGL as a controller does: the command's descriptor, then its segment.
fn walk_sgl(first: Descriptor, page: &[u64]) -> Vec<(u64, u64)> {
    assert_eq!((first.subtype(), first.reserved()), (0, 0));
    match first.kind() {
        kind::DATA_BLOCK => vec![(first.address, first.len() as u64)],
        kind::LAST_SEGMENT => {
            assert_eq!(
                first.address, PAGE_IOVA,
                "the segment is the command's page"
            );
            let n = first.len() as usize / DESCRIPTOR_SIZE;
            assert_eq!(first.len() as usize % DESCRIPTOR_SIZE, 0);
            assert!(
                (2..=sgl::SEGMENT_DESCRIPTORS).contains(&n),
                "{n} descriptors"
            );
            (0..n)
                .map(|i| {
                    let d = Descriptor {
                        address: u64::from_le(page[2 * i]),
                        word1: u64::from_le(page[2 * i + 1]),
                    };
                    assert_eq!(d.kind(), kind::DATA_BLOCK, "a last segment holds data");
                    assert_eq!((d.subtype(), d.reserved()), (0, 0));
                    assert!(!d.is_empty(), "no empty descriptor");
                    (d.address, d.len() as u64)
                })
                .collect()
        }
        k => panic!("descriptor type {k:#x} in the command"),
    }
}

/// Walks PRPs as a controller does for `len` bytes (section 4.1.1): PRP1 with any
/// dword offset, then whole pages from PRP2 or the list PRP2 points to.
fn walk_prp(prp1: u64, prp2: u64, len: u64, page: &[u64]) -> Vec<(u64, u64)> {
    assert_eq!(prp1 & 3, 0, "PRP1 dword aligned");
    let first = (PAGE_SIZE - prp1 % PAGE_SIZE).min(len);
    let mut out = vec![(prp1, first)];
    let mut left = len - first;
    let pages = left.div_ceil(PAGE_SIZE);
    let entries: Vec<u64> = match pages {
        0 => vec![],
        1 => vec![prp2],
        n => {
            assert_eq!(prp2, PAGE_IOVA, "PRP2 points to the command's list page");
            (0..n as usize).map(|i| u64::from_le(page[i])).collect()
        }
    };
    for e in entries {
        assert_eq!(e % PAGE_SIZE, 0, "entries after PRP1 have no offset");
        let l = left.min(PAGE_SIZE);
        out.push((e, l));
        left -= l;
    }
    merged(out)
}

fn check_sgl(slices: &[DmaSlice], offset: u64, len: u64) {
    let mut page = vec![0u64; 512];
    // SAFETY: `page` is 4096 bytes nothing else reads.
    let d = unsafe { describe_sgl(slices, offset, len, page.as_mut_ptr(), PAGE_IOVA) };
    assert_eq!(merged(walk_sgl(d, &page)), expected(slices, offset, len));
}

fn check_prp(slices: &[DmaSlice], offset: u64, len: u64) {
    let mut page = vec![0u64; 512];
    // SAFETY: as in `check_sgl`.
    let (p1, p2) = unsafe { describe_prp(slices, offset, len, page.as_mut_ptr(), PAGE_IOVA) }
        .expect("fits one list page");
    assert_eq!(walk_prp(p1, p2, len, &page), expected(slices, offset, len));
}

#[test]
fn page_rule_names_the_slice() {
    let ok = [s(0x1204, 0xdfc), s(0x8000, 0x2000), s(0x20000, 12)];
    assert_eq!(page_rule(&ok), None);
    let bad_start = [s(0x1000, 0x1000), s(0x8200, 0x200)];
    assert_eq!(page_rule(&bad_start), Some((1, PageRule::StartNotAligned)));
    let bad_end = [s(0x1000, 0x1000), s(0x8000, 0x200), s(0x9000, 0x1000)];
    assert_eq!(page_rule(&bad_end), Some((1, PageRule::EndNotAligned)));
    assert_eq!(page_rule(&[s(0x1004, 8)]), None, "one slice is one buffer");
}

#[test]
fn cuts_at_blocks_within_descriptors() {
    // 512-byte blocks over 256-byte slices: two slices per block.
    let v: Vec<DmaSlice> = (0..600).map(|i| s(0x10_0000 + i * 0x1000, 256)).collect();
    assert_eq!(blocks_within(&v, 0, 1000, 9, 256), 128);
    assert_eq!(
        blocks_within(&v, 0, 1000, 9, 255),
        127,
        "a block is not cut"
    );
    assert_eq!(blocks_within(&v, 0, 10, 9, 256), 10, "MDTS first");
    assert_eq!(blocks_within(&v, 512 * 299, 1000, 9, usize::MAX), 1);
    // 4 KiB blocks over 8-byte slices: one block spans 512 slices.
    let tiny: Vec<DmaSlice> = (0..1024).map(|i| s(i * 64, 8)).collect();
    assert_eq!(blocks_within(&tiny, 0, 2, 12, 256), 0);
}

#[test]
fn one_piece_is_a_data_block_several_a_last_segment() {
    check_sgl(&[s(0x1000, 0x4000)], 0x200, 0x1000);
    check_sgl(&[s(0x1000, 0x200), s(0x9004, 0x400)], 0, 0x600);
    check_prp(
        &[s(0x1204, 0xdfc), s(0x8000, 0x2000), s(0x20000, 12)],
        0,
        0x2e08,
    );
    check_prp(&[s(0x1000, 0x1000), s(0x8000, 0x1000)], 0, 0x2000);
    check_prp(&[s(0x1000, 0x1000), s(0x8000, 0x1000)], 0x800, 0x1000);
}

/// Slices of 4..=16 KiB dword lengths anywhere (SGL), a cut of them.
fn any_vector() -> impl Strategy<Value = (Vec<DmaSlice>, u64, u64)> {
    proptest::collection::vec((0u64..1 << 30, 1u32..4096), 1..300).prop_flat_map(|raw| {
        let v: Vec<DmaSlice> = raw
            .iter()
            .enumerate()
            .map(|(i, &(a, l))| s(((i as u64) << 32) | (a & !3), l * 4))
            .collect();
        let total: u64 = v.iter().map(|x| x.len as u64).sum();
        (Just(v), 0..total)
            .prop_flat_map(move |(v, off)| (Just(v), Just(off), 1..=(total - off).min(1 << 20)))
    })
}

/// Page-joined slices (PRP rule): first with an offset, middles whole pages, last any
/// length; a cut of at most 2 MiB (one list page).
fn page_joined() -> impl Strategy<Value = (Vec<DmaSlice>, u64, u64)> {
    (
        0u64..1024,
        proptest::collection::vec((1u64..1 << 20, 1u32..8), 0..60),
        1u32..1024,
    )
        .prop_flat_map(|(first_off, middle, last_dw)| {
            let mut v = vec![s(0x7000_0000 + first_off * 4, 4096 - first_off as u32 * 4)];
            v.extend(middle.iter().map(|&(p, n)| s(p << 12, n << 12)));
            v.push(s(0x9000_0000, last_dw * 4));
            let total: u64 = v.iter().map(|x| x.len as u64).sum();
            (Just(v), 0..total).prop_flat_map(move |(v, off)| {
                let off = off & !3;
                (Just(v), Just(off), 1..=((total - off) / 4).min(1 << 19))
            })
        })
        .prop_map(|(v, off, dw)| (v, off, dw * 4))
}

proptest! {
    #[test]
    fn sgl_names_the_vectors_bytes((v, off, len) in any_vector()) {
        // What the queue pair sends in one command: at most a page of descriptors.
        let mut n = 0;
        let mut cut = 0;
        for_each_piece(&v, off, len, |_, l| {
            if n < sgl::SEGMENT_DESCRIPTORS {
                n += 1;
                cut += l;
            }
        });
        check_sgl(&v, off, cut);
    }

    #[test]
    fn prp_names_the_vectors_bytes((v, off, len) in page_joined()) {
        prop_assert_eq!(page_rule(&v), None);
        check_prp(&v, off, len);
    }
}
