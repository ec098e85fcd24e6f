// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The software controller's SGL walk (NVMe Base Specification 2.0, section 4.1.2):
//! every SGL the driver builds walks back to the slices it was built from, and bad
//! descriptors are refused with the spec's status codes.

use super::*;
use crate::dma::{DmaBuf, DmaPool};
use crate::sgl::{self, kind, Descriptor, DESCRIPTOR_SIZE, SEGMENT_DESCRIPTORS};
use crate::spec::{io_opc, sc, sct, Sqe, Status};
use proptest::prelude::*;

/// A controller with `sgls` in Identify Controller SGLS, a pool on its mapper and
/// one page of descriptor memory.
fn setup(sgls: u32) -> (Arc<SoftController>, DmaPool, DmaBuf) {
    let ctrl = SoftController::start(SoftConfig {
        sgls,
        ..SoftConfig::default()
    });
    let pool = DmaPool::new(ctrl.name(), ctrl.mapper()).unwrap();
    let page = pool.alloc(4096).unwrap();
    (ctrl, pool, page)
}

/// Writes `ds` as a segment at the start of `page`; returns the page's IOVA.
fn write_segment(ctrl: &SoftController, page: &DmaBuf, ds: &[Descriptor]) -> u64 {
    let mut raw = Vec::new();
    for d in ds {
        raw.extend_from_slice(&d.address.to_le_bytes());
        raw.extend_from_slice(&d.word1.to_le_bytes());
    }
    ctrl.shared.mapper.write(page.iova().0, &raw).unwrap();
    page.iova().0
}

/// The pieces the controller finds for `len` bytes starting at `first`.
fn walk(
    ctrl: &SoftController,
    first: Descriptor,
    len: usize,
) -> std::result::Result<Vec<(u64, usize)>, Status> {
    let mut out = Vec::new();
    let dev = ctrl.device.lock().unwrap_or_else(|e| e.into_inner());
    dev.sgl_segments(first, len, &mut out).map(|()| out)
}

/// A descriptor of `kind` and `subtype` with `len` bytes at `address`.
fn raw(kind: u8, subtype: u8, address: u64, len: u32) -> Descriptor {
    Descriptor {
        address,
        word1: len as u64 | (kind as u64) << 60 | (subtype as u64) << 56,
    }
}

fn generic(code: u8) -> Status {
    Status::new(sct::GENERIC, code, true)
}

#[test]
fn driver_sgls_walk_back_to_their_slices() {
    let (ctrl, _pool, page) = setup(1);
    let check = |slices: &[(u64, u32)]| {
        // SAFETY: `page` is a 4 KiB DMA page no command uses.
        let first =
            unsafe { sgl::build(slices, false, page.as_ptr().cast(), page.iova().0).unwrap() };
        let total: usize = slices.iter().map(|&(_, l)| l as usize).sum();
        let want: Vec<(u64, usize)> = slices.iter().map(|&(a, l)| (a, l as usize)).collect();
        assert_eq!(walk(&ctrl, first, total).unwrap(), want);
    };
    check(&[(0x1_0000_0004, 128 << 10)]);
    check(&[(0x1000, 512), (0x8000, 4096), (0x20_0004, 1020)]);
    let full: Vec<(u64, u32)> = (0..SEGMENT_DESCRIPTORS as u64)
        .map(|i| (0x10_0000 + i * 8192, 4096))
        .collect();
    check(&full);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(
            &proptest::collection::vec((0u64..1 << 40, 1u32..(1 << 20)), 1..=SEGMENT_DESCRIPTORS),
            |slices| {
                let slices: Vec<(u64, u32)> =
                    slices.into_iter().map(|(a, l)| (a & !3, l)).collect();
                check(&slices);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn chained_segments_are_followed() {
    let (ctrl, pool, page) = setup(1);
    let page2 = pool.alloc(4096).unwrap();
    // Segment 1: two data blocks and a Last Segment descriptor to segment 2.
    let seg2 = write_segment(
        &ctrl,
        &page2,
        &[
            Descriptor::data_block(0x9000, 100),
            Descriptor::data_block(0xa000, 0), // zero length: skipped
            Descriptor::data_block(0xb000, 28),
        ],
    );
    let seg1 = write_segment(
        &ctrl,
        &page,
        &[
            Descriptor::data_block(0x1000, 512),
            Descriptor::data_block(0x3000, 512),
            Descriptor::last_segment(seg2, 3),
        ],
    );
    let first = raw(kind::SEGMENT, 0, seg1, 3 * DESCRIPTOR_SIZE as u32);
    assert_eq!(
        walk(&ctrl, first, 1152).unwrap(),
        vec![(0x1000, 512), (0x3000, 512), (0x9000, 100), (0xb000, 28)]
    );
}

#[test]
fn bad_sgls_are_refused_with_the_spec_status() {
    let (ctrl, _pool, page) = setup(1);
    let type_invalid = generic(0x11); // SGL Descriptor Type Invalid
    let segment_invalid = generic(0x0d); // Invalid SGL Segment Descriptor
    let count_invalid = generic(0x0e); // Invalid Number of SGL Descriptors
    let length_invalid = generic(0x0f); // Data SGL Length Invalid
    let page_iova = page.iova().0;
    let cases: Vec<(&str, Vec<Descriptor>, Descriptor, Status)> = vec![
        (
            "a Bit Bucket (SGLS bit 16 is clear)",
            vec![],
            raw(kind::BIT_BUCKET, 0, 0, 512),
            type_invalid,
        ),
        (
            "a Keyed Data Block (SGLS bit 2 is clear)",
            vec![],
            raw(4, 0, 0x1000, 512),
            type_invalid,
        ),
        (
            "a reserved type",
            vec![],
            raw(0xe, 0, 0x1000, 512),
            type_invalid,
        ),
        (
            "an offset subtype (SGLS bit 20 is clear)",
            vec![],
            raw(kind::DATA_BLOCK, 1, 0x1000, 512),
            type_invalid,
        ),
        (
            "a data block shorter than the transfer",
            vec![],
            Descriptor::data_block(0x1000, 511),
            length_invalid,
        ),
        (
            "a data block longer than the transfer (SGLS bit 18 is clear)",
            vec![],
            Descriptor::data_block(0x1000, 513),
            length_invalid,
        ),
        (
            "a data block that wraps the address space",
            vec![],
            Descriptor::data_block(u64::MAX - 100, 512),
            length_invalid,
        ),
        (
            "a segment of zero bytes",
            vec![],
            raw(kind::LAST_SEGMENT, 0, page_iova, 0),
            segment_invalid,
        ),
        (
            "a segment length not a multiple of 16",
            vec![],
            raw(kind::LAST_SEGMENT, 0, page_iova, 24),
            segment_invalid,
        ),
        (
            "a segment descriptor inside the last segment",
            vec![
                Descriptor::data_block(0x1000, 256),
                Descriptor::last_segment(page_iova, 2),
            ],
            Descriptor::last_segment(page_iova, 2),
            segment_invalid,
        ),
        (
            "a segment descriptor that is not the segment's last",
            vec![
                Descriptor::last_segment(page_iova + 64, 1),
                Descriptor::data_block(0x1000, 512),
            ],
            raw(kind::SEGMENT, 0, page_iova, 32),
            segment_invalid,
        ),
        (
            "a Segment whose last descriptor points nowhere",
            vec![
                Descriptor::data_block(0x1000, 256),
                Descriptor::data_block(0x2000, 256),
            ],
            raw(kind::SEGMENT, 0, page_iova, 32),
            segment_invalid,
        ),
        (
            "a segment chain that loops",
            vec![
                Descriptor::data_block(0x1000, 0),
                raw(kind::SEGMENT, 0, page_iova, 32),
            ],
            raw(kind::SEGMENT, 0, page_iova, 32),
            count_invalid,
        ),
        (
            "data descriptors adding up to less than the transfer",
            vec![
                Descriptor::data_block(0x1000, 256),
                Descriptor::data_block(0x2000, 128),
            ],
            Descriptor::last_segment(page_iova, 2),
            length_invalid,
        ),
        (
            "a segment in memory the device cannot reach",
            vec![],
            Descriptor::last_segment(0xdead_0000_0000, 2),
            generic(sc::DATA_TRANSFER_ERROR),
        ),
    ];
    let n = cases.len();
    for (what, segment, first, want) in cases {
        write_segment(&ctrl, &page, &segment);
        assert_eq!(walk(&ctrl, first, 512), Err(want), "{what}");
    }
    assert_eq!(n, 15, "every case ran");
}

#[test]
fn dword_rule_and_sgl_support_follow_sgls() {
    // SGLS 10b: Data Blocks must be dword aligned in address and length.
    let (ctrl, _pool, _page) = setup(2);
    assert_eq!(
        walk(&ctrl, Descriptor::data_block(0x1002, 512), 512),
        Err(generic(sc::INVALID_FIELD))
    );
    assert!(walk(&ctrl, Descriptor::data_block(0x1004, 512), 512).is_ok());

    // SGLS 00b: a command with PSDT 01b is an invalid field; PRPs still work.
    let (ctrl, pool, _page) = setup(0);
    let buf = pool.alloc(4096).unwrap();
    let mut sqe = Sqe::rw(io_opc::READ, 1, 0, 1);
    let d = Descriptor::data_block(buf.iova().0, 512);
    sqe.cdw0 |= sgl::PSDT_SGL;
    sqe.prp1 = d.address;
    sqe.prp2 = d.word1;
    let mut dev = ctrl.device.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(dev.io(&sqe), generic(sc::INVALID_FIELD));
    let mut sqe = Sqe::rw(io_opc::READ, 1, 0, 1);
    sqe.prp1 = buf.iova().0;
    assert_eq!(dev.io(&sqe), Status::SUCCESS);
    // PSDT 10b (SGL in MPTR: SGLS bit 19 is clear) and 11b (reserved) are refused
    // whatever SGLS says.
    drop(dev);
    let (ctrl, pool, _page) = setup(1);
    let buf = pool.alloc(4096).unwrap();
    let mut dev = ctrl.device.lock().unwrap_or_else(|e| e.into_inner());
    for psdt in [2u32, 3] {
        let mut sqe = Sqe::rw(io_opc::READ, 1, 0, 1);
        sqe.cdw0 |= psdt << 14;
        sqe.prp1 = buf.iova().0;
        sqe.prp2 = 512;
        assert_eq!(dev.io(&sqe), generic(sc::INVALID_FIELD), "PSDT {psdt:#b}");
    }
    // A read described by one Data Block descriptor succeeds and is counted.
    let before = ctrl.counters().sgl_transfers();
    let mut sqe = Sqe::rw(io_opc::READ, 1, 0, 8);
    let d = Descriptor::data_block(buf.iova().0, 4096);
    sqe.cdw0 |= sgl::PSDT_SGL;
    sqe.prp1 = d.address;
    sqe.prp2 = d.word1;
    assert_eq!(dev.io(&sqe), Status::SUCCESS);
    assert_eq!(ctrl.counters().sgl_transfers(), before + 1);
}
