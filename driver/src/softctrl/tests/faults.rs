// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The fault knobs seen from the host: ANA changes and events, two controllers as
//! two paths, fatal status, removal, dropped, duplicated, bogus, reordered and
//! late completions, kept admin completions.

use super::*;

fn ana_config(name: &str, cntlid: u16, namespaces: Vec<Arc<Namespace>>) -> SoftConfig {
    SoftConfig {
        name: name.into(),
        cntlid,
        ana: true,
        subnqn: "nqn.2024-01.org.nvme-driver:shared".into(),
        namespaces,
        ..SoftConfig::default()
    }
}

#[test]
fn ana_change_raises_an_event_and_path_errors() {
    let a = Arc::new(Namespace::new(1, 1024, 512).unwrap());
    let b = Arc::new(Namespace::new(2, 1024, 4096).unwrap().with_anagrpid(2));
    let ctrl = SoftController::start(ana_config("ana0", 1, vec![a, b]));
    let mut h = Host::enable(ctrl.clone());
    let (_, d) = h.identify(cns::CONTROLLER, 0);
    let id = IdentifyController::parse(&d).unwrap();
    assert!(id.ana_supported());
    assert_eq!((id.anagrpmax, id.nanagrpid, id.anatt), (2, 2, 10));
    assert_eq!(id.oaes >> 11 & 1, 1);
    let (_, d) = h.identify(cns::NAMESPACE, 2);
    let nsid = IdentifyNamespace::parse(&d).unwrap();
    assert_eq!((nsid.anagrpid, nsid.nmic), (2, 1));

    let (cqe, d) = h.log_page(log_id::ANA, 0, 4096, false);
    assert!(cqe.status().is_success());
    let log = AnaLog::parse(&d[..4096]).unwrap();
    assert_eq!(log.change_count, 0);
    assert_eq!(log.groups.len(), 2);
    assert_eq!(log.groups[1].nsids, vec![2]);
    assert!(log.groups.iter().all(|g| g.state == AnaState::Optimized));

    let m = ctrl.bar0();
    let aer = h.admin.submit(m, Sqe::new(admin_opc::ASYNC_EVENT_REQUEST));
    assert!(
        h.admin.wait_for(m, QUIET).is_none(),
        "AER completed with no event"
    );
    ctrl.set_ana_state(2, AnaState::Inaccessible).unwrap();
    let cqe = h.admin.wait(m);
    assert_eq!(cqe.cid, aer);
    let ev = AsyncEvent::from_dw0(cqe.dw0);
    assert!(ev.is_ana_change());
    assert_eq!(ev.log_page, log_id::ANA);

    let (_, d) = h.log_page(log_id::ANA, 0, 4096, false);
    let log = AnaLog::parse(&d[..4096]).unwrap();
    assert_eq!(log.change_count, 1);
    assert_eq!(log.groups[1].state, AnaState::Inaccessible);
    assert_eq!(log.groups[1].change_count, 1);

    let mut q = h.create_io(1, 8);
    let buf = h.pool.alloc(4096).unwrap();
    let cqe = h.io(&mut q, rw(io_opc::READ, 2, 0, 1, (buf.iova().0, 0)));
    assert_eq!(status_of(&cqe), (sct::PATH, sc::ANA_INACCESSIBLE, false));
    assert!(cqe.status().is_ana_error() && cqe.status().is_path_error());
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(cqe.status().is_success());

    // With no request outstanding the notice waits for one.
    ctrl.set_ana_state(2, AnaState::Change).unwrap();
    std::thread::sleep(QUIET);
    let aer = h.admin.submit(m, Sqe::new(admin_opc::ASYNC_EVENT_REQUEST));
    let cqe = h.admin.wait(m);
    assert_eq!(cqe.cid, aer);
    assert!(AsyncEvent::from_dw0(cqe.dw0).is_ana_change());
    let cqe = h.io(&mut q, rw(io_opc::READ, 2, 0, 1, (buf.iova().0, 0)));
    assert_eq!(status_of(&cqe), (sct::PATH, sc::ANA_TRANSITION, false));

    // Offset and length are honoured: the header alone, then a descriptor alone.
    let (_, d) = h.log_page(log_id::ANA, 0, 16, true);
    assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), 2);
    assert!(d[16..].iter().all(|&b| b == 0xaa));
    let (_, d) = h.log_page(log_id::ANA, 16 + 36, 36, true);
    assert_eq!(u32::from_le_bytes(d[..4].try_into().unwrap()), 2);
    assert_eq!(d[16], AnaState::Change.to_u8());
    assert_eq!(u32::from_le_bytes(d[32..36].try_into().unwrap()), 2);
    assert!(d[36..].iter().all(|&b| b == 0xaa));

    assert!(ctrl.set_ana_state(9, AnaState::Optimized).is_err());
    // AERL is 3: a fifth outstanding request is refused.
    for _ in 0..5 {
        h.admin.submit(m, Sqe::new(admin_opc::ASYNC_EVENT_REQUEST));
    }
    let cqe = h.admin.wait(m);
    assert_eq!(status_of(&cqe), (1, 0x05, true));
}

#[test]
fn two_controllers_are_two_paths_to_one_namespace() {
    let shared = ns(1, 4096, 512);
    let a = SoftController::start(ana_config("path-a", 1, vec![shared.clone()]));
    let b = SoftController::start(ana_config("path-b", 2, vec![shared.clone()]));
    let mut ha = Host::enable(a.clone());
    let mut hb = Host::enable(b.clone());
    let (_, da) = ha.identify(cns::CONTROLLER, 0);
    let (_, db) = hb.identify(cns::CONTROLLER, 0);
    let (ia, ib) = (
        IdentifyController::parse(&da).unwrap(),
        IdentifyController::parse(&db).unwrap(),
    );
    assert_eq!(ia.subnqn, ib.subnqn);
    assert_ne!(ia.cntlid, ib.cntlid);
    let (_, na) = ha.identify(cns::NAMESPACE, 1);
    let (_, nb) = hb.identify(cns::NAMESPACE, 1);
    assert_eq!(
        IdentifyNamespace::parse(&na).unwrap().nguid,
        IdentifyNamespace::parse(&nb).unwrap().nguid
    );

    let mut qa = ha.create_io(1, 8);
    let mut qb = hb.create_io(1, 8);
    let mut src = ha.pool.alloc(4096).unwrap();
    src.write_at(0, &[0x5a; 4096]).unwrap();
    assert!(ha
        .io(&mut qa, rw(io_opc::WRITE, 1, 8, 8, (src.iova().0, 0)))
        .status()
        .is_success());
    let dst = hb.pool.alloc(4096).unwrap();
    assert!(hb
        .io(&mut qb, rw(io_opc::READ, 1, 8, 8, (dst.iova().0, 0)))
        .status()
        .is_success());
    let mut out = vec![0u8; 4096];
    dst.read_at(0, &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 0x5a));

    // ANA state is per controller: path A inaccessible, path B still fine.
    a.set_ana_state(1, AnaState::Inaccessible).unwrap();
    let cqe = ha.io(&mut qa, rw(io_opc::READ, 1, 8, 8, (src.iova().0, 0)));
    assert_eq!(status_of(&cqe), (sct::PATH, sc::ANA_INACCESSIBLE, false));
    assert!(hb
        .io(&mut qb, rw(io_opc::READ, 1, 8, 8, (dst.iova().0, 0)))
        .status()
        .is_success());
}

#[test]
fn fatal_status_stops_the_controller_until_reset() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    ctrl.faults().set_fatal();
    assert!(h.wait_csts(|c| c.cfs()));
    let m = ctrl.bar0();
    h.admin.submit(m, Sqe::new(admin_opc::IDENTIFY));
    assert!(h.admin.wait_for(m, QUIET).is_none());
    h.disable();
    assert!(!h.csts().cfs());
    h.start();
    let (cqe, _) = h.identify(cns::CONTROLLER, 0);
    assert!(cqe.status().is_success());

    // A normal shutdown reports completion.
    m.write32(regs::CC, m.read32(regs::CC) | 1 << 14);
    assert!(h.wait_csts(|c| c.shst() == 2));
}

#[test]
fn removal_reads_all_ones() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    assert!(!ctrl.removal_requested());
    ctrl.faults().simulate_removal();
    assert!(h.wait_csts(|c| c.is_all_ones()));
    assert!(ctrl.removal_requested());
    assert_eq!(ctrl.bar0().read64(regs::CAP), u64::MAX);
    let m = ctrl.bar0();
    h.admin.submit(m, Sqe::new(admin_opc::IDENTIFY));
    assert!(h.admin.wait_for(m, QUIET).is_none());
}

#[test]
fn release_reads_all_ones_without_removal() {
    let ctrl = SoftController::start(SoftConfig::default());
    let h = Host::enable(ctrl.clone());
    ctrl.release();
    assert!(h.wait_csts(|c| c.is_all_ones()));
    assert!(!ctrl.removal_requested());
}

/// Kept admin completions: the command runs (its effect shows at once) but its
/// completion waits for the release, then comes with its own status; other opcodes
/// and Abort pass. A controller reset discards a kept completion.
#[test]
fn kept_admin_completions_wait_for_the_release() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    let m = ctrl.bar0();
    let set_temp = |kelvin: u32| {
        let mut s = Sqe::new(admin_opc::SET_FEATURES);
        s.cdw10 = feature_id::TEMPERATURE_THRESHOLD as u32;
        s.cdw11 = kelvin;
        s
    };
    let get_temp = || {
        let mut s = Sqe::new(admin_opc::GET_FEATURES);
        s.cdw10 = feature_id::TEMPERATURE_THRESHOLD as u32;
        s
    };
    ctrl.faults()
        .keep_admin_completions(admin_opc::SET_FEATURES);
    let kept = h.admin.submit(m, set_temp(350));
    assert!(
        h.admin.wait_for(m, QUIET).is_none(),
        "the completion is kept"
    );
    // Another opcode, and an Abort, pass; the kept command already ran.
    let cqe = h.admin(get_temp());
    assert_eq!(cqe.dw0, 350, "the kept command ran");
    let mut abort = Sqe::new(admin_opc::ABORT);
    abort.cdw10 = 1 << 16;
    assert!(h.admin(abort).status().is_success());
    ctrl.faults().release_admin_completions();
    let cqe = h.admin.wait(m);
    assert_eq!(cqe.cid, kept);
    assert!(cqe.status().is_success());

    // A controller reset (CC.EN 1 to 0) forgets a kept completion.
    ctrl.faults()
        .keep_admin_completions(admin_opc::SET_FEATURES);
    h.admin.submit(m, set_temp(351));
    assert!(h.admin.wait_for(m, QUIET).is_none());
    h.disable();
    ctrl.faults().release_admin_completions();
    h.start();
    let cqe = h.admin(get_temp());
    assert_eq!(
        cqe.cid, 0,
        "the first completion on the new admin queue is its own"
    );
    assert_eq!(cqe.dw0, 343, "the reset restored the default threshold");
    assert!(
        h.admin.wait_for(m, QUIET).is_none(),
        "nothing kept came back"
    );
}

#[test]
fn dropped_completions_are_held_until_aborted() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io(1, 8);
    let m = ctrl.bar0();
    let buf = h.pool.alloc(4096).unwrap();
    ctrl.faults().drop_io_completions(2);
    let lost = q.submit(m, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    let lost2 = q.submit(m, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(q.wait_for(m, QUIET).is_none());
    assert_eq!(ctrl.counters().held_commands(), 2);

    let abort = |sqid: u16, cid: u16| {
        let mut s = Sqe::new(admin_opc::ABORT);
        s.cdw10 = sqid as u32 | (cid as u32) << 16;
        s
    };
    let cqe = h.admin(abort(1, lost));
    assert!(cqe.status().is_success());
    assert_eq!(cqe.dw0 & 1, 0, "the held command was aborted");
    let cqe = q.wait(m);
    assert_eq!(cqe.cid, lost);
    assert_eq!(status_of(&cqe), (0, sc::ABORT_REQUESTED, false));
    let cqe = h.admin(abort(1, lost));
    assert_eq!(cqe.dw0 & 1, 1, "nothing left to abort");

    // Deleting the SQ completes what it still holds.
    let del = delete_sqe(admin_opc::DELETE_IO_SQ, 1);
    assert!(h.admin(del).status().is_success());
    let cqe = q.wait(m);
    assert_eq!(cqe.cid, lost2);
    assert_eq!(cqe.status(), crate::spec::Status::ABORTED_SQ_DELETION);
    assert_eq!(ctrl.counters().held_commands(), 0);

    // A reset drops held commands without completing them.
    let del = delete_sqe(admin_opc::DELETE_IO_CQ, 1);
    assert!(h.admin(del).status().is_success());
    let mut q = h.create_io(1, 8);
    ctrl.faults().drop_io_completions(1);
    q.submit(m, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(q.wait_for(m, QUIET).is_none());
    h.disable();
    assert_eq!(ctrl.counters().held_commands(), 0);
    h.start();
    let mut q = h.create_io(1, 8);
    let cqe = h.io(&mut q, rw(io_opc::READ, 1, 0, 1, (buf.iova().0, 0)));
    assert!(cqe.status().is_success());
    assert_eq!(cqe.cid, 0);
}

#[test]
fn duplicated_bogus_reordered_and_late_completions() {
    let ctrl = SoftController::start(SoftConfig::default());
    let mut h = Host::enable(ctrl.clone());
    let mut q = h.create_io(1, 16);
    let m = ctrl.bar0();

    ctrl.faults().duplicate_next_completion();
    let cid = q.submit(m, flush_sqe(1));
    assert_eq!(q.wait(m).cid, cid);
    assert_eq!(q.wait(m).cid, cid);
    assert!(q.wait_for(m, QUIET).is_none());

    ctrl.faults().post_bogus_completion(1, 0xbeef);
    assert_eq!(q.wait(m).cid, 0xbeef);

    ctrl.faults().corrupt_next_sq_head(999);
    q.submit(m, flush_sqe(1));
    assert_eq!(q.wait(m).sq_head, 999);

    ctrl.faults().set_reorder(true);
    let cids: Vec<u16> = (0..4).map(|_| q.push(flush_sqe(1))).collect();
    q.ring(m);
    let got: Vec<u16> = (0..4).map(|_| q.wait(m).cid).collect();
    assert_eq!(got, cids.iter().rev().copied().collect::<Vec<_>>());
    ctrl.faults().set_reorder(false);

    ctrl.faults().set_completion_delay_us(20_000);
    let t = Instant::now();
    q.submit(m, flush_sqe(1));
    q.wait(m);
    assert!(t.elapsed() >= Duration::from_millis(20));
    ctrl.faults().clear();

    // A completion with the wrong phase is invisible to the host.
    ctrl.faults().corrupt_next_phase();
    q.submit(m, flush_sqe(1));
    assert!(q.wait_for(m, QUIET).is_none());
}
