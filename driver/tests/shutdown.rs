// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `Controller::shutdown` against the software controller (issue 23, item 1): the
//! wait for CSTS.SHST = 10b is bounded by RTD3E when it is longer than
//! `shutdown_timeout_ms`, and by `shutdown_timeout_ms` otherwise; a device slower
//! than the bound is given up on (and counted as cut short by the device).

use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, CtrlState};
use std::sync::Arc;
use std::time::Duration;

fn up(shutdown_ms: u64, rtd3e_us: u32, floor_ms: u64) -> (Arc<SoftController>, Controller) {
    let dev = SoftController::start(SoftConfig {
        shutdown_ms,
        rtd3e_us,
        ..SoftConfig::default()
    });
    let opts = ControllerOptions {
        shutdown_timeout_ms: floor_ms,
        ..ControllerOptions::default()
    };
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, opts).expect("controller comes up");
    (dev, ctrl)
}

#[test]
fn rtd3e_longer_than_the_floor_is_waited_for() {
    // The device needs 150 ms; the floor alone (20 ms) would give up, RTD3E (400 ms)
    // covers it.
    let (dev, ctrl) = up(150, 400_000, 20);
    assert_eq!(ctrl.identify().rtd3e, 400_000);
    let r = ctrl.shutdown().unwrap();
    assert!(r.notified && r.complete, "{r:?}");
    assert_eq!(r.timeout, Duration::from_millis(400), "{r:?}");
    assert!(r.waited >= Duration::from_millis(150), "{r:?}");
    let c = dev.counters();
    assert_eq!(
        (
            c.shutdown_notifications(),
            c.shutdowns_completed(),
            c.shutdowns_abandoned()
        ),
        (1, 1, 0)
    );
    assert_eq!(ctrl.state(), CtrlState::Failed, "no I/O after a shutdown");
}

#[test]
fn a_device_slower_than_the_bound_is_given_up_on() {
    // No RTD3E: the floor (50 ms) bounds the wait; the device would take 10 s.
    let (dev, ctrl) = up(10_000, 0, 50);
    let r = ctrl.shutdown().unwrap();
    assert!(r.notified && !r.complete, "{r:?}");
    assert_eq!(r.timeout, Duration::from_millis(50), "{r:?}");
    assert!(
        r.waited >= Duration::from_millis(50) && r.waited < Duration::from_secs(2),
        "{r:?}"
    );
    // The disable that follows cuts the device's processing short.
    let start = std::time::Instant::now();
    while dev.counters().shutdowns_abandoned() == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let c = dev.counters();
    assert_eq!(
        (
            c.shutdown_notifications(),
            c.shutdowns_completed(),
            c.shutdowns_abandoned()
        ),
        (1, 0, 1)
    );
}
