// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Vectored requests (several DMA slices per I/O, SPDK's readv/writev) through the
//! driver and the software controller: data written through one slice layout reads
//! back intact through another, with SGLs and with forced PRPs, in one command or
//! split (at MDTS, or at one page of SGL descriptors); each request completes exactly
//! once; layouts PRPs cannot describe are refused naming the slice and the rule.

mod common;

use common::{run_one, soft};
use nvme_driver::{Controller, DmaBuf, DmaSlice, DmaVec, IoQpair, IoRequest, QpairOptions};

/// Slice layouts: (name, PRPs can take it, piece lengths cycle, gap after each).
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// spdk_nvme_perf -O 4096: 4 KiB pieces on pages, a page apart.
    IoUnits,
    /// First slice ends a page at an offset, then runs of two pages, then a tail.
    PageJoined,
    /// Dword lengths and gaps anywhere (SGL only).
    Odd,
    /// 256-byte slices: a transfer of MDTS needs more than a page of descriptors.
    Tiny,
}

/// Slices of `buf` holding `total` bytes laid out as `layout`, and their offsets.
fn layout(buf: &DmaBuf, layout: Layout, total: usize) -> (Vec<DmaSlice>, Vec<(usize, usize)>) {
    let mut parts = Vec::new();
    let mut at = match layout {
        Layout::PageJoined => 0x204,
        Layout::Odd => 0x10c,
        _ => 0,
    };
    let mut left = total;
    let mut i = 0usize;
    while left > 0 {
        let (want, gap) = match layout {
            Layout::IoUnits => (4096, 4096),
            Layout::PageJoined if i == 0 => (4096 - 0x204, 4096),
            Layout::PageJoined => (8192, 4096),
            Layout::Odd => ([516, 4, 3080, 1024, 12][i % 5], 8 + 4 * (i % 3)),
            Layout::Tiny => (256, 64),
        };
        let len = want.min(left);
        parts.push((at, len));
        at += len + gap;
        left -= len;
        i += 1;
    }
    assert!(at <= buf.len(), "buffer large enough");
    let slices = parts
        .iter()
        .map(|&(o, l)| buf.slice(o, l).unwrap())
        .collect();
    (slices, parts)
}

/// Writes `total` bytes through `wl` and reads them back through `rl`.
fn round_trip(ctrl: &Controller, qp: &mut IoQpair, wl: Layout, rl: Layout, total: usize) {
    let what = format!("{total} bytes written as {wl:?}, read as {rl:?}");
    let space = 4 * total + (1 << 20);
    let mut wbuf = ctrl.alloc_buffer(space).unwrap();
    let mut rbuf = ctrl.alloc_buffer(space).unwrap();
    rbuf.fill(0xa5);
    let (ws, wparts) = layout(&wbuf, wl, total);
    let (rs, rparts) = layout(&rbuf, rl, total);
    let mut data = vec![0u8; total];
    let mut seed = total as u64 | 1;
    for b in data.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let mut k = 0;
    for &(o, l) in &wparts {
        wbuf.write_at(o, &data[k..k + l]).unwrap();
        k += l;
    }
    let nlb = (total / 512) as u32;
    let slba = 100;
    // SAFETY: `ws` and `rs` live until `run_one` has seen the completion.
    let (wv, rv) = unsafe { (DmaVec::new(&ws), DmaVec::new(&rs)) };
    run_one(qp, IoRequest::writev(1, slba, nlb, wv, 1), &what);
    run_one(qp, IoRequest::readv(1, slba, nlb, rv, 2), &what);
    let mut back = vec![0u8; total];
    let mut k = 0;
    for &(o, l) in &rparts {
        rbuf.read_at(o, &mut back[k..k + l]).unwrap();
        k += l;
    }
    assert!(
        back == data,
        "{what}: read back differs from what was written"
    );
    // The gaps between read slices were not touched.
    let mut end = 0;
    for &(o, l) in &rparts {
        let mut gap = vec![0u8; o - end];
        rbuf.read_at(end, &mut gap).unwrap();
        assert!(
            gap.iter().all(|&b| b == 0xa5),
            "{what}: bytes before {o} changed"
        );
        end = o + l;
    }
}

#[test]
fn vectored_round_trips_with_sgls_and_with_prps() {
    for enable_sgl in [true, false] {
        let (dev, ctrl) = soft(1, 1 << 16, enable_sgl);
        assert_eq!(ctrl.uses_sgl(), enable_sgl);
        let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
        let max = ctrl.max_transfer_bytes() as usize;
        let c = dev.counters();
        let (sgl0, prp0) = (c.sgl_transfers(), c.prp_transfers());
        let mut layouts = vec![Layout::IoUnits, Layout::PageJoined];
        if enable_sgl {
            layouts.extend([Layout::Odd, Layout::Tiny]);
        }
        for total in [512, 4096, 12800, 65536, max, max + 512, 3 * max] {
            for &wl in &layouts {
                for &rl in &layouts {
                    round_trip(&ctrl, &mut qp, wl, rl, total);
                }
            }
        }
        let (sgl, prp) = (c.sgl_transfers() - sgl0, c.prp_transfers() - prp0);
        if enable_sgl {
            assert_eq!(prp, 0, "with SGLs on, {prp} commands used PRPs");
        } else {
            assert_eq!(sgl, 0, "with PRPs forced, {sgl} commands used SGLs");
        }
        assert_eq!(qp.stats().submitted, qp.stats().completed);
    }
}

#[test]
fn layouts_prps_cannot_take_are_refused_by_slice_and_rule() {
    let (_dev, ctrl) = soft(1, 1 << 16, false);
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let buf = ctrl.alloc_buffer(1 << 16).unwrap();
    let cases: [(Vec<DmaSlice>, &str); 3] = [
        (
            vec![buf.slice(0, 4096).unwrap(), buf.slice(0x2200, 512).unwrap()],
            "slice 1 starts inside a 4 KiB page",
        ),
        (
            vec![
                buf.slice(0, 4096).unwrap(),
                buf.slice(0x2000, 512).unwrap(),
                buf.slice(0x4000, 512).unwrap(),
            ],
            "slice 1 ends inside a 4 KiB page",
        ),
        (
            vec![buf.slice(2, 4096).unwrap(), buf.slice(0x2000, 512).unwrap()],
            "slice 0 (4096 bytes at IOVA",
        ),
    ];
    for (slices, want) in cases {
        // SAFETY: `slices` outlives the (refused) request.
        let v = unsafe { DmaVec::new(&slices) };
        let total = v.total_bytes() as u32 / 512;
        let err = qp
            .submit(IoRequest::readv(1, 0, total, v, 7))
            .map(|_| ())
            .expect_err("refused")
            .0
            .to_string();
        assert!(err.contains(want), "{err:?} should say {want:?}");
    }
    // The same page-breaking layout is fine with SGLs.
    let (_dev, ctrl) = soft(1, 1 << 16, true);
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    round_trip(&ctrl, &mut qp, Layout::IoUnits, Layout::Odd, 8192);
    assert_eq!(qp.stats().completed, 2);
}
