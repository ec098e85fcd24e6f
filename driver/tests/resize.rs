// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A namespace resized while the driver has it, on the software controller: the
//! driver enables Namespace Attribute Notices, takes the notice, reads the Changed
//! Namespace List and re-identifies the namespace; `Controller::namespace` and
//! `namespace_changes` follow; a queue pair made before the resize takes the new size
//! at a poll, or at once when a request past its old end would otherwise be refused.
//! Every wait has a deadline.

// Its `soft` makes a one-namespace controller; these tests need two.
#[allow(dead_code)]
mod common;

use common::{run_one, DEADLINE};
use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::{admin_opc, feature_id, log_id, ChangedNamespaces};
use nvme_driver::{Controller, ControllerOptions, Error, IoRequest, QpairOptions};
use std::sync::Arc;
use std::time::Instant;

fn two_namespaces() -> (Arc<SoftController>, Controller) {
    let dev = SoftController::start(SoftConfig {
        namespaces: vec![
            Arc::new(Namespace::new(1, 1024, 512).unwrap()),
            Arc::new(Namespace::new(2, 4096, 512).unwrap()),
        ],
        ..SoftConfig::default()
    });
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, ControllerOptions::default())
        .expect("controller comes up");
    (dev, ctrl)
}

/// Runs the housekeeping until `namespace_changes` reaches `n`.
fn wait_changes(ctrl: &Controller, n: u64) {
    let start = Instant::now();
    while ctrl.namespace_changes() < n {
        ctrl.process_admin();
        assert!(
            start.elapsed() < DEADLINE,
            "namespace_changes is {} after {DEADLINE:?}, expected {n} (was the Namespace \
             Attribute Changed notice enabled and taken?)",
            ctrl.namespace_changes()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn notice_enabled_taken_and_the_namespace_re_identified() {
    let (dev, ctrl) = two_namespaces();
    // Asynchronous Event Configuration bit 8: Namespace Attribute Notices.
    let aec = ctrl.get_feature(feature_id::ASYNC_EVENT_CONFIG, 0).unwrap();
    assert_ne!(aec & 1 << 8, 0, "AEC {aec:#x} lacks bit 8");
    let logs_before = dev.counters().admin_fetched(admin_opc::GET_LOG_PAGE);
    dev.resize_namespace(1, 3000).unwrap();
    wait_changes(&ctrl, 1);
    assert_eq!(ctrl.namespace(1).unwrap().nsze, 3000);
    assert_eq!(
        ctrl.namespace(2).unwrap().nsze,
        4096,
        "only the listed one changes"
    );
    assert!(
        ctrl.take_events().iter().any(|e| e.is_ns_changed()),
        "the notice is among the async events"
    );
    assert!(dev.counters().admin_fetched(admin_opc::GET_LOG_PAGE) > logs_before);
    // The log was read (and so cleared): a second resize is a second notice.
    dev.resize_namespace(1, 500).unwrap();
    wait_changes(&ctrl, 2);
    assert_eq!(ctrl.namespaces()[0].nsze, 500);
}

#[test]
fn queue_pair_takes_the_new_size_without_a_lock() {
    let (dev, ctrl) = two_namespaces();
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let buf = ctrl.alloc_buffer(4096).unwrap();
    let past = IoRequest::read(1, 2000, 8, buf.whole(), 1);
    let refused = qp.submit(past).map_err(|(e, _)| e).unwrap_err();
    assert!(
        matches!(refused, Error::LbaOutOfRange { nsze: 1024, .. }),
        "{refused}"
    );
    dev.resize_namespace(1, 4000).unwrap();
    wait_changes(&ctrl, 1);
    // No poll since the resize: the refusal path looks at the control word once more.
    run_one(&mut qp, past, "read past the old end after a grow");
    // A shrink reaches the queue pair at its next poll; then the range is refused
    // naming the new size.
    dev.resize_namespace(1, 1500).unwrap();
    wait_changes(&ctrl, 2);
    qp.poll(8, &mut |_| {});
    let refused = qp.submit(past).map_err(|(e, _)| e).unwrap_err();
    assert!(
        matches!(refused, Error::LbaOutOfRange { nsze: 1500, .. }),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("blocks 2000..2008 are past its end (1500 blocks)"),
        "{refused}"
    );
    run_one(
        &mut qp,
        IoRequest::read(1, 1492, 8, buf.whole(), 2),
        "last blocks",
    );
}

#[test]
fn changed_namespace_list_parses_and_refuses_what_a_device_gets_wrong() {
    let mut page = vec![0u8; 4096];
    assert_eq!(
        ChangedNamespaces::parse(&page).unwrap(),
        ChangedNamespaces::Listed(vec![])
    );
    page[..4].copy_from_slice(&3u32.to_le_bytes());
    page[4..8].copy_from_slice(&9u32.to_le_bytes());
    let l = ChangedNamespaces::parse(&page).unwrap();
    assert_eq!(l, ChangedNamespaces::Listed(vec![3, 9]));
    assert!(l.contains(9) && !l.contains(4));
    page[8..12].copy_from_slice(&5u32.to_le_bytes());
    let e = ChangedNamespaces::parse(&page).unwrap_err().to_string();
    assert!(e.starts_with("changed namespace list: entry 2"), "{e}");
    page[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        ChangedNamespaces::parse(&page).unwrap(),
        ChangedNamespaces::All
    );
    assert!(
        ChangedNamespaces::parse(&page[..100]).is_err(),
        "short page"
    );
    assert_eq!(log_id::CHANGED_NS_LIST, 0x04);
}
