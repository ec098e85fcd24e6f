// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Limits and checks: queue sizes within MQES, the IOVA mapper's ranges, and
//! configurations refused with a clear error.

use super::*;

#[test]
fn small_mqes_limits_queues() {
    let ctrl = SoftController::start(SoftConfig {
        mqes: 3,
        ..SoftConfig::default()
    });
    assert_eq!(Cap(ctrl.bar0().read64(regs::CAP)).mqes_entries(), 4);
    let mut h = Host::enable(ctrl);
    let cq = h.pool.alloc(4096).unwrap();
    let s = create_cq_sqe(1, 5, cq.iova().0);
    assert_eq!(status_of(&h.admin(s)), (1, 0x02, true));
    let mut q = h.create_io(1, 4);
    assert!(h.io(&mut q, flush_sqe(1)).status().is_success());
}

#[test]
fn mapper_checks_ranges() {
    let m = SoftMapper::new("t");
    let mut a = vec![0u8; 8192];
    let mut b = vec![0u8; 4096];
    let pa = std::ptr::NonNull::new(a.as_mut_ptr()).unwrap();
    let pb = std::ptr::NonNull::new(b.as_mut_ptr()).unwrap();
    // SAFETY: the vectors outlive the mapper's use of them below.
    unsafe {
        m.map(pa, 8192, Iova(0x10000)).unwrap();
        assert!(m.map(pb, 4096, Iova(0x11000)).is_err());
        assert!(m.map(pb, 4096, Iova(0xf800)).is_err());
        m.map(pb, 4096, Iova(0x12000)).unwrap();
    }
    assert!(m.is_mapped(Iova(0x10000), 3 * 4096));
    assert!(!m.is_mapped(Iova(0x10000), 3 * 4096 + 1));
    assert!(!m.is_mapped(Iova(0xffff), 2));
    m.write(0x11ffe, &[1, 2, 3, 4]).unwrap();
    assert_eq!((a[8190], a[8191], b[0], b[1]), (1, 2, 3, 4));
    assert!(m.write(0x12ffe, &[9, 9, 9]).is_err());
    assert_eq!(b[4094], 0, "a failed access changes nothing");
    assert!(m.unmap(Iova(0x10000), 4096).is_err());
    m.unmap(Iova(0x10000), 8192).unwrap();
    assert!(!m.is_mapped(Iova(0x10000), 1));
    assert_eq!(m.mapped_bytes(), 4096);
}

#[test]
fn config_is_validated() {
    let dup = SoftConfig {
        namespaces: vec![ns(1, 8, 512), ns(1, 8, 512)],
        ..SoftConfig::default()
    };
    assert!(SoftController::try_start(dup).is_err());
    assert!(SoftController::try_start(SoftConfig {
        mqes: 0,
        ..SoftConfig::default()
    })
    .is_err());
    assert!(Namespace::new(1, 8, 1024).is_err());
    assert!(Namespace::new(0, 8, 512).is_err());
}
