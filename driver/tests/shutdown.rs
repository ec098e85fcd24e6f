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

/// The shutdown does not wait out another thread's admin command that the device
/// never answers (here a Get Features whose completion is dropped, with a 5 s admin
/// timeout; in the block layer, another controller thread deleting a dropped queue
/// pair's queues): that wait is cancelled, and the notification goes out at once. A
/// shutdown that takes the admin queue plainly waits the 5 s.
#[test]
fn shutdown_cancels_an_admin_wait_another_thread_holds() {
    let dev = SoftController::start(SoftConfig {
        shutdown_ms: 10,
        ..SoftConfig::default()
    });
    let opts = ControllerOptions {
        admin_timeout_ms: 5_000,
        ..ControllerOptions::default()
    };
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, opts).expect("controller comes up");
    dev.faults().drop_admin_completions(1);
    let waiter = {
        let c = ctrl.clone();
        std::thread::spawn(move || {
            c.get_feature(nvme_driver::spec::feature_id::NUMBER_OF_QUEUES, 0)
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let start = std::time::Instant::now();
    let r = ctrl.shutdown().unwrap();
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "shutdown took {took:?}: it waited for the other thread's admin command"
    );
    assert!(r.notified && r.complete, "{r:?}");
    let e = waiter.join().unwrap().unwrap_err().to_string();
    assert!(
        e.contains("stopping"),
        "the other thread's wait ends cancelled: {e}"
    );
    assert_eq!(dev.counters().shutdown_notifications(), 1);
}
