// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Data described with SGLs and with PRPs (NVMe Base Specification 2.0, sections
//! 4.1.1 and 4.1.2) through the driver and the software controller: the driver uses
//! SGLs when Identify Controller SGLS says the controller takes them and
//! `ControllerOptions::enable_sgl` is set, PRPs otherwise; either way every size from
//! 512 bytes to past the largest command (split) at every buffer offset class reads
//! back what was written, and each request completes exactly once.

mod common;

use common::{run_one, soft};
use nvme_driver::{Controller, IoRequest, QpairOptions};

/// Writes a pattern of every size class at every offset class through `ctrl` and
/// reads it back into a clean buffer; returns the number of transfers.
fn write_read_every_size(ctrl: &Controller) -> u64 {
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let max = ctrl.max_transfer_bytes() as usize;
    let sizes = [
        512,
        1024,
        3584,
        4096,
        4608,
        8192,
        12800,
        65536,
        max - 512,
        max,
        max + 512,
        3 * max,
    ];
    let offsets = [0usize, 4, 512, 4092];
    let mut wbuf = ctrl.alloc_buffer(4 * max + 8192).unwrap();
    let rbuf_len = 4 * max + 8192;
    let mut n = 0;
    let mut seed = 1u64;
    for &len in &sizes {
        for &off in &offsets {
            let what = format!("{len} bytes at buffer offset {off}");
            let mut data = vec![0u8; len];
            for b in data.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            wbuf.write_at(off, &data).unwrap();
            let nlb = (len / 512) as u32;
            let slba = (off as u64) * 3 % 1024;
            run_one(
                &mut qp,
                IoRequest::write(1, slba, nlb, wbuf.slice(off, len).unwrap(), 1),
                &what,
            );
            let mut rbuf = ctrl.alloc_buffer(rbuf_len).unwrap();
            rbuf.fill(0xa5);
            run_one(
                &mut qp,
                IoRequest::read(1, slba, nlb, rbuf.slice(off, len).unwrap(), 2),
                &what,
            );
            let mut back = vec![0u8; len];
            rbuf.read_at(off, &mut back).unwrap();
            assert!(
                back == data,
                "{what}: read back differs from what was written"
            );
            // Nothing outside the slice was touched.
            let mut before = vec![0u8; off];
            rbuf.read_at(0, &mut before).unwrap();
            assert!(
                before.iter().all(|&b| b == 0xa5),
                "{what}: bytes before the buffer changed"
            );
            let mut after = vec![0u8; 64];
            rbuf.read_at(off + len, &mut after).unwrap();
            assert!(
                after.iter().all(|&b| b == 0xa5),
                "{what}: bytes after the buffer changed"
            );
            n += 2;
        }
    }
    n
}

#[test]
fn sgls_when_supported_prps_when_forced_or_not() {
    for (sgls, enable, want_sgl) in [
        (1, true, true),
        (2, true, true),
        (1, false, false),
        (0, true, false),
    ] {
        let (dev, ctrl) = soft(sgls, 8192, enable);
        assert_eq!(
            ctrl.uses_sgl(),
            want_sgl,
            "SGLS {sgls:#x}, enable_sgl {enable}: SGLs for I/O is {want_sgl}"
        );
        let c = dev.counters();
        let (sgl0, prp0) = (c.sgl_transfers(), c.prp_transfers());
        let ios = write_read_every_size(&ctrl);
        let (sgl, prp) = (c.sgl_transfers() - sgl0, c.prp_transfers() - prp0);
        // Split requests make more commands than requests; every command went one way.
        assert!(
            sgl + prp >= ios,
            "SGLS {sgls:#x}, enable_sgl {enable}: {sgl} + {prp} commands for {ios} requests"
        );
        if want_sgl {
            assert_eq!(
                prp, 0,
                "SGLS {sgls:#x}, enable_sgl {enable}: {prp} I/O commands used PRPs"
            );
        } else {
            assert_eq!(
                sgl, 0,
                "SGLS {sgls:#x}, enable_sgl {enable}: {sgl} I/O commands used SGLs"
            );
        }
    }
}
