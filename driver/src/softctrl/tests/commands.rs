// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Registers, identify, I/O with PRP lists and its data, queue wrap-around and
//! full completion queues, and the status of commands that fail.

use super::*;

#[test]
fn registers_and_identify() {
    let ctrl = SoftController::start(SoftConfig::default());
    let cap = Cap(ctrl.bar0().read64(regs::CAP));
    assert_eq!(cap.mqes_entries(), 1024);
    assert!(cap.cqr());
    assert_eq!(cap.to(), 2);
    assert_eq!(cap.dstrd(), 0);
    assert_eq!(cap.css() & 1, 1);
    assert_eq!(cap.mpsmin_shift(), 12);
    assert_eq!(ctrl.bar0().read32(regs::VS), 0x0001_0400);
    let mut h = Host::enable(ctrl.clone());

    let (cqe, d) = h.identify(cns::CONTROLLER, 0);
    assert!(cqe.status().is_success());
    assert_eq!(cqe.sq_head, 1);
    let id = IdentifyController::parse(&d).unwrap();
    assert_eq!(id.vid, 0x1b36);
    assert_eq!(id.sn, "SOFT0001");
    assert_eq!(id.mdts, 5);
    assert_eq!(id.max_transfer_bytes(12), Some(128 << 10));
    assert_eq!((id.sqes, id.cqes, id.aerl, id.nn), (0x66, 0x44, 3, 1));
    assert!(id.write_zeroes_supported() && id.dsm_supported());
    assert!(!id.ana_supported());
    assert_eq!(id.subnqn, "nqn.2024-01.org.nvme-driver:soft0");

    let (cqe, d) = h.identify(cns::NAMESPACE, 1);
    assert!(cqe.status().is_success());
    let nsid = IdentifyNamespace::parse(&d).unwrap();
    assert_eq!(nsid.nsze, 2 << 20);
    assert_eq!(nsid.block_size(), 512);
    assert_eq!(nsid.nguid, ctrl.namespaces()[0].nguid());
    let (cqe, _) = h.identify(cns::NAMESPACE, 2);
    assert_eq!(status_of(&cqe), (0, sc::INVALID_NAMESPACE, true));

    let (_, d) = h.identify(cns::ACTIVE_NS_LIST, 0);
    assert_eq!(parse_ns_list(&d).unwrap(), vec![1]);
    let (_, d) = h.identify(cns::NS_ID_DESCRIPTORS, 1);
    let ids = parse_ns_descriptors(&d).unwrap();
    assert_eq!(ids.nguid, Some(ctrl.namespaces()[0].nguid()));
    assert_eq!(ids.uuid, Some(ctrl.namespaces()[0].uuid()));
    let (cqe, _) = h.identify(0x55, 0);
    assert_eq!(status_of(&cqe), (0, sc::INVALID_FIELD, true));

    // The same data through PRP1 with an offset and PRP2 for the second page.
    let buf = h.pool.alloc(8192).unwrap();
    let mut sqe = Sqe::new(admin_opc::IDENTIFY);
    sqe.cdw10 = cns::CONTROLLER;
    sqe.prp1 = buf.iova().0 + 2048;
    sqe.prp2 = buf.iova().0 + 4096;
    assert!(h.admin(sqe).status().is_success());
    let mut again = vec![0u8; 4096];
    buf.read_at(2048, &mut again).unwrap();
    assert_eq!(IdentifyController::parse(&again).unwrap(), id);

    // Number of Queues: the configured maximum, then what was granted.
    let mut sqe = Sqe::new(admin_opc::GET_FEATURES);
    sqe.cdw10 = feature_id::NUMBER_OF_QUEUES as u32;
    assert_eq!(h.admin(sqe).dw0, 63 << 16 | 63);
    let mut sqe = Sqe::new(admin_opc::SET_FEATURES);
    sqe.cdw10 = feature_id::NUMBER_OF_QUEUES as u32;
    sqe.cdw11 = 3 << 16 | 200;
    assert_eq!(h.admin(sqe).dw0, 3 << 16 | 63);
    let mut sqe = Sqe::new(admin_opc::SET_FEATURES);
    sqe.cdw10 = feature_id::ARBITRATION as u32;
    sqe.cdw11 = 0x1234;
    assert!(h.admin(sqe).status().is_success());
    let mut sqe = Sqe::new(admin_opc::GET_FEATURES);
    sqe.cdw10 = feature_id::ARBITRATION as u32;
    assert_eq!(h.admin(sqe).dw0, 0x1234);

    let cqe = h.admin(Sqe::new(admin_opc::DOORBELL_BUFFER_CONFIG));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_OPCODE, true));

    let (cqe, d) = h.log_page(log_id::SMART, 0, 512, false);
    assert!(cqe.status().is_success());
    assert_eq!(SmartLog::parse(&d).unwrap().available_spare, 100);
    assert!(
        d[512..].iter().all(|&b| b == 0xaa),
        "wrote past the requested length"
    );
    assert_eq!(ctrl.counters().admin_fetched(admin_opc::IDENTIFY), 7);
}

#[test]
fn write_then_read_with_prp_lists() {
    let cfg = SoftConfig {
        mdts: 10,
        namespaces: vec![ns(1, 1 << 16, 512), ns(2, 4096, 4096)],
        ..SoftConfig::default()
    };
    let ctrl = SoftController::start(cfg);
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io(1, 32);
    let mut lists = h.pool.alloc(4 * 4096).unwrap();

    // 8 KiB from an offset of 512: PRP1 with an offset, then a two-entry list.
    let mut src = h.pool.alloc(3 * 4096).unwrap();
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    src.write_at(512, &pattern).unwrap();
    let prps = build_prps(&mut lists, 0, src.iova().0 + 512, 8192);
    let cqe = h.io(&mut q, rw(io_opc::WRITE, 1, 10, 16, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    let mut stored = vec![0u8; 8192];
    ctrl.namespaces()[0]
        .read_bytes(10 * 512, &mut stored)
        .unwrap();
    assert_eq!(stored, pattern);

    let dst = h.pool.alloc(3 * 4096).unwrap();
    // The list this time starts 16 bytes before the end of a page: one data entry,
    // then a pointer to the next list page.
    let prps = build_prps(&mut lists, 4096 - 16, dst.iova().0 + 1024, 8192);
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 10, 16, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    let mut back = vec![0u8; 8192];
    dst.read_at(1024, &mut back).unwrap();
    assert_eq!(back, pattern);

    // 3 MiB in 4 KiB blocks: 767 list entries, so the list chains to a second page.
    let len = 3 << 20;
    let mut big = h.pool.alloc(len).unwrap();
    let pattern: Vec<u8> = (0..len as u32).map(|i| (i >> 12 ^ i) as u8).collect();
    big.write_at(0, &pattern).unwrap();
    let prps = build_prps(&mut lists, 0, big.iova().0, len);
    let cqe = h.io(&mut q, rw(io_opc::WRITE, 2, 100, 768, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    big.fill(0);
    let prps = build_prps(&mut lists, 0, big.iova().0, len);
    let cqe = h.io(&mut q, rw(io_opc::READ, 2, 100, 768, prps));
    assert!(cqe.status().is_success(), "{}", cqe.status());
    let mut back = vec![0u8; len];
    big.read_at(0, &mut back).unwrap();
    assert!(back == pattern, "3 MiB read back differs");

    // Write Zeroes and Deallocate leave zeroes behind.
    let cqe = h.io(&mut q, Sqe::rw(io_opc::WRITE_ZEROES, 2, 100, 2));
    assert!(cqe.status().is_success());
    let mut r = vec![1u8; 3 * 4096];
    ctrl.namespaces()[1].read_bytes(100 * 4096, &mut r).unwrap();
    assert!(r[..8192].iter().all(|&b| b == 0));
    assert_eq!(&r[8192..], &pattern[8192..3 * 4096]);
    let mut range = h.pool.alloc(4096).unwrap();
    let mut desc = [0u8; 16];
    desc[4..8].copy_from_slice(&10u32.to_le_bytes());
    desc[8..16].copy_from_slice(&102u64.to_le_bytes());
    range.write_at(0, &desc).unwrap();
    let mut sqe = Sqe::new(io_opc::DATASET_MANAGEMENT);
    sqe.nsid = 2;
    sqe.cdw11 = 1 << 2;
    sqe.prp1 = range.iova().0;
    assert!(h.io(&mut q, sqe).status().is_success());
    ctrl.namespaces()[1].read_bytes(100 * 4096, &mut r).unwrap();
    assert!(r.iter().all(|&b| b == 0));
    assert!(h.io(&mut q, flush_sqe(1)).status().is_success());
    assert_eq!(ctrl.counters().io_fetched(io_opc::WRITE), 2);
    assert_eq!(ctrl.counters().io_fetched(io_opc::READ), 2);
}

#[test]
fn phase_flips_and_sq_head_follow_wraparound() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl);
    let mut q = h.create_io(1, 4);
    let mut phases = Vec::new();
    for i in 0..11u16 {
        let expect_phase = q.phase;
        let cqe = h.io(&mut q, flush_sqe(1));
        assert!(cqe.status().is_success());
        assert_eq!(cqe.cid, i);
        assert_eq!(cqe.sq_id, 1);
        assert_eq!(cqe.sq_head, (i + 1) % 4);
        assert_eq!(cqe.phase(), expect_phase);
        phases.push(cqe.phase());
    }
    let expect: Vec<bool> = (0..11).map(|i| (i / 4) % 2 == 0).collect();
    assert_eq!(phases, expect);
}

#[test]
fn completion_queue_is_never_overrun() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io_sized(1, 16, 4);
    for _ in 0..10 {
        q.push(flush_sqe(1));
    }
    q.ring(h.m());
    std::thread::sleep(QUIET);
    // Without a head doorbell write, only 3 of the 4 slots may be filled.
    let filled = (0..4).filter(|&s| q.read_slot(s).phase()).count();
    assert_eq!(filled, 3);
    let mut cids = Vec::new();
    let end = Instant::now() + WAIT;
    while cids.len() < 10 && Instant::now() < end {
        match q.poll(h.m()) {
            Some(c) => cids.push(c.cid),
            None => std::thread::sleep(Duration::from_micros(20)),
        }
    }
    assert_eq!(cids, (0..10).collect::<Vec<u16>>());
    assert_eq!(ctrl.counters().completions_posted(), 2 + 10);
}

#[test]
fn errors_complete_with_the_right_status() {
    let ctrl = SoftController::start(SoftConfig {
        namespaces: vec![ns(1, 1000, 512)],
        ..SoftConfig::default()
    });
    let mut h = Host::enable(ctrl);
    let mut q = h.create_io(1, 8);
    let buf = h.pool.alloc(256 << 10).unwrap();
    let p = buf.iova().0;

    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 999, 2, (p, 0)));
    assert_eq!(status_of(&cqe), (0, sc::LBA_OUT_OF_RANGE, true));
    let cqe = h.io(&mut q, Sqe::rw(io_opc::WRITE_ZEROES, 1, u64::MAX, 1));
    assert_eq!(status_of(&cqe), (0, sc::LBA_OUT_OF_RANGE, true));
    // 256 KiB is over MDTS (128 KiB).
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 512, (p, p + 4096)));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_FIELD, true));
    let cqe = h.io(&mut q, rw(io_opc::READ, 9, 0, 1, (p, 0)));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_NAMESPACE, true));
    // An IOVA nothing maps: Data Transfer Error, and nothing touched.
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (0x1000, 0)));
    assert_eq!(status_of(&cqe), (0, sc::DATA_TRANSFER_ERROR, true));
    // Only PRP1 may have an offset, and it must be dword aligned.
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 16, (p, p + 4096 + 8)));
    assert_eq!(status_of(&cqe), (0, 0x13, true));
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (p + 2, 0)));
    assert_eq!(status_of(&cqe), (0, 0x13, true));
    let cqe = h.io(&mut q, Sqe::new(0x7f));
    assert_eq!(status_of(&cqe), (0, sc::INVALID_OPCODE, true));

    let cqe = h.admin(create_cq_sqe(0, 8, p));
    assert_eq!(status_of(&cqe), (1, 0x01, true));
    let cqe = h.admin(create_cq_sqe(1, 8, p));
    assert_eq!(status_of(&cqe), (1, 0x01, true), "CQ 1 already exists");
    let cqe = h.admin(create_cq_sqe(2, 1025, p));
    assert_eq!(status_of(&cqe), (1, 0x02, true));
    let cqe = h.admin(create_cq_sqe(2, 8, p + 64));
    assert_eq!(status_of(&cqe), (0, 0x13, true));
    let cqe = h.admin(create_sq_sqe(2, 8, 5, p));
    assert_eq!(status_of(&cqe), (1, 0x00, true));
    let del = delete_sqe(admin_opc::DELETE_IO_CQ, 1);
    assert_eq!(status_of(&h.admin(del)), (1, 0x0c, true));

    let (cqe, d) = h.log_page(log_id::ERROR, 0, 4096, false);
    assert!(cqe.status().is_success());
    let log = parse_error_log(&d[..4096]);
    assert_eq!(log.len(), 14);
    assert_eq!(log[0].status.sc(), 0x0c);
    assert_eq!(log.last().unwrap().status.sc(), sc::LBA_OUT_OF_RANGE);
    assert_eq!(log.last().unwrap().lba, 999);
    let (cqe, _) = h.log_page(0x7e, 0, 512, false);
    assert_eq!(status_of(&cqe), (1, 0x09, true));
}
