// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Device misbehaviour shown to the real driver: each software-controller fault knob
//! against a real [`IoQpair`]. For each, what the driver must do: tolerate it (reordered
//! and late completions), or recover (a lost completion: timeout, abort, reset), or
//! fail the controller cleanly (a duplicated completion, an impossible SQ head); and
//! in every case complete each request exactly once and never deliver a completion
//! the device should not have posted.
//!
//! Every request carries a context word `seq << 1 | write`: a completion is counted
//! against its sequence number, and its read/write bit must match the request's, so a
//! duplicated write completion shows up as a duplicate, not as a data mismatch.
//! Writes go to block `seq`, reads come from block `READ_BASE + seq`, prefilled; the
//! data of every request that succeeded is checked.
//!
//! `reset_hold` holds a reset open (the device keeps an admin completion) to show
//! that a submit never waits for it.
//!
//! Not here: retry delays from a completion's CRD field. The driver does not retry
//! (it delivers the status, CRD included, to the caller); the block layer's
//! multipath channel honours the delay: bdev/tests/retry_delay.rs.

mod abort;
mod common;
mod reset_hold;

use common::*;
use nvme_driver::softctrl::SoftController;
use nvme_driver::{ControllerOptions, CtrlState, Error, Status};
use std::time::{Duration, Instant};

/// The device posts one completion twice. The second names a command that is no
/// longer in flight: it is counted as stray, never delivered, and the controller is
/// failed (the device broke the protocol); every request completes exactly once, the
/// duplicated one with its real status, the rest with success or a path error.
#[test]
fn duplicated_completion_is_counted_not_delivered_and_fails_the_controller() {
    let (dev, ctrl) = soft(63);
    let _admin = AdminThread::start(&ctrl);
    let mut qp = qpair(&ctrl, 64, 10_000);
    let mut b = Batch::new(&ctrl, 48);
    // Nothing is submitted after this batch, so no identifier is reused before the
    // duplicate arrives: it cannot pass for another command's completion.
    dev.faults().duplicate_next_completion();
    b.submit_all(&mut qp);
    wait_state(&ctrl, &mut qp, &mut b, CtrlState::Failed);
    b.poll_all(&mut qp, "duplicated completion");
    b.assert_exactly_once();
    let st = qp.stats();
    assert_eq!(
        st.stray_completions, 1,
        "the duplicate is counted once: {st:?}"
    );
    assert_eq!(st.malformed_completions, 0, "{st:?}");
    assert_eq!(st.completed, 48, "{st:?}");
    let failure = ctrl.failure().unwrap_or_default();
    assert!(failure.contains("duplicate"), "{failure}");
    // The first completion posted was delivered once, with success.
    assert_eq!(b.status[b.order[0]], Some(Status::SUCCESS));
    for seq in b.failed() {
        let st = b.status[seq].unwrap();
        assert!(st.is_path_error(), "request {seq}: {st}");
    }
    assert!(dev.counters().completions_posted() > 0);
    b.assert_data(&dev);
}

/// Commands fetched together complete in reverse order: tolerated. Every request
/// completes once with success, out of submission order (the premise), data intact,
/// the controller live.
#[test]
fn reordered_completions_are_tolerated() {
    let (dev, ctrl) = soft(63);
    let mut qp = qpair(&ctrl, 64, 10_000);
    dev.faults().set_reorder(true);
    let mut b = Batch::new(&ctrl, 48);
    b.submit_all(&mut qp);
    b.poll_all(&mut qp, "reordered completions");
    b.assert_exactly_once();
    assert!(b.failed().is_empty(), "statuses: {:?}", b.status);
    let inversions = b.order.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(
        inversions > 0,
        "the device did reorder: delivery order {:?}",
        b.order
    );
    assert_no_stray(&qp.stats());
    assert_eq!(ctrl.state(), CtrlState::Live);
    b.assert_data(&dev);
}

/// One completion is posted with the wrong phase tag: the host sees no new entry
/// there, so it and everything behind it look lost. The deadline fires, the abort
/// finds nothing to abort, the controller is reset, and every request comes back
/// exactly once ("aborted: SQ deletion", resubmitted) or with success; nothing is
/// delivered from the stale queue after the reset.
#[test]
fn wrong_phase_completion_is_recovered_by_timeout_and_reset() {
    let (dev, ctrl) = soft(63);
    let _admin = AdminThread::start(&ctrl);
    let mut qp = qpair(&ctrl, 64, 50);
    let mut b = Batch::new(&ctrl, 32);
    dev.faults().corrupt_next_phase();
    b.submit_all(&mut qp);
    b.poll_until(&mut qp, "lost completions aborted by a reset", |b, _| {
        b.completed() == b.len()
    });
    // The corrupted entry was the first posted, so the host saw none of them.
    let aborted = b.failed();
    assert_eq!(aborted.len(), b.len(), "statuses: {:?}", b.status);
    for &seq in &aborted {
        assert_eq!(
            b.status[seq],
            Some(Status::ABORTED_SQ_DELETION),
            "request {seq}"
        );
    }
    // The aborts were handed back when the reset disabled the controller; it then
    // recreates the queues and ends.
    b.poll_until(&mut qp, "the reset ends", |_, _| ctrl.reset_count() == 1);
    assert_eq!(ctrl.state(), CtrlState::Live);
    let st = qp.stats();
    assert!(st.timeouts >= aborted.len() as u64, "{st:?}");
    assert_eq!(st.reset_aborts, aborted.len() as u64, "{st:?}");
    // The caller retries what the reset aborted; the controller works again.
    for &seq in &aborted {
        b.status[seq] = None;
        b.seen[seq] = 0;
        b.submit(&mut qp, seq);
    }
    b.poll_all(&mut qp, "resubmitted after the reset");
    b.assert_exactly_once();
    assert!(b.failed().is_empty(), "statuses: {:?}", b.status);
    assert_no_stray(&qp.stats());
    b.assert_data(&dev);
}

/// A completion for a command in flight carries an SQ head past the end of the SQ:
/// counted as malformed, not delivered, the controller failed; every request completes
/// exactly once, with success or a path error.
#[test]
fn impossible_sq_head_fails_the_controller() {
    let (dev, ctrl) = soft(31);
    let _admin = AdminThread::start(&ctrl);
    let mut qp = qpair(&ctrl, 32, 10_000);
    let mut b = Batch::new(&ctrl, 24);
    dev.faults().corrupt_next_sq_head(999);
    b.submit_all(&mut qp);
    wait_state(&ctrl, &mut qp, &mut b, CtrlState::Failed);
    b.poll_all(&mut qp, "impossible SQ head");
    b.assert_exactly_once();
    let st = qp.stats();
    assert_eq!(
        (st.malformed_completions, st.stray_completions),
        (1, 0),
        "{st:?}"
    );
    let failure = ctrl.failure().unwrap_or_default();
    assert!(failure.contains("sq_head 999"), "{failure}");
    // The entry with the bad SQ head was the first posted: its request was not
    // delivered from it, and came back with a path error when the controller failed.
    let failed = b.failed();
    assert!(!failed.is_empty());
    for &seq in &failed {
        assert_eq!(
            b.status[seq],
            Some(Status::ABORTED_BY_HOST),
            "request {seq}"
        );
    }
    b.assert_data(&dev);
}

/// Completions 20 ms late, well inside the deadline: tolerated, each delivered once
/// with success, no timeouts, no reset.
#[test]
fn late_completions_within_the_deadline_are_tolerated() {
    let (dev, ctrl) = soft(63);
    let mut qp = qpair(&ctrl, 64, 5_000);
    dev.faults().set_completion_delay_us(20_000);
    let mut b = Batch::new(&ctrl, 32);
    let t0 = Instant::now();
    b.submit_all(&mut qp);
    b.poll_until(&mut qp, "late completions", |b, _| b.completed() > 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(20),
        "the first completion came after {:?}: the delay took effect",
        t0.elapsed()
    );
    b.poll_all(&mut qp, "late completions");
    b.assert_exactly_once();
    assert!(b.failed().is_empty(), "statuses: {:?}", b.status);
    let st = qp.stats();
    assert_eq!(st.timeouts, 0, "{st:?}");
    assert_no_stray(&st);
    assert_eq!(ctrl.reset_count(), 0);
    b.assert_data(&dev);
}

/// Completions later than the deadline (admin ones too: the knob delays every
/// completion). Each command times out and is aborted, the Abort answers late
/// ("not aborted"), and the late completions then arrive: each request is delivered
/// exactly once, from its own completion, with success. A driver that gave up on a
/// timed-out command by itself would see the late completion as stray.
#[test]
fn completions_later_than_the_deadline_are_delivered_once() {
    let (dev, ctrl) = soft(63);
    let _admin = AdminThread::start(&ctrl);
    let mut qp = qpair(&ctrl, 64, 30);
    dev.faults().set_completion_delay_us(300_000);
    let mut b = Batch::new(&ctrl, 16);
    b.submit_all(&mut qp);
    b.poll_until(&mut qp, "late completions", |b, _| b.completed() == b.len());
    dev.faults().set_completion_delay_us(0);
    // Past the reset the second expiry asked for (it finds nothing in flight).
    let c = ctrl.clone();
    b.poll_until(&mut qp, "quiet after the delay", move |_, _| {
        c.state() == CtrlState::Live && c.reset_count() > 0
    });
    b.assert_exactly_once();
    assert!(b.failed().is_empty(), "statuses: {:?}", b.status);
    let st = qp.stats();
    assert_eq!(st.timeouts, 16, "every command passed its deadline: {st:?}");
    assert!(
        dev.counters()
            .admin_fetched(nvme_driver::spec::admin_opc::ABORT)
            > 0,
        "the driver asked to abort"
    );
    assert_eq!(st.reset_aborts, 0, "{st:?}");
    assert_no_stray(&st);
    b.assert_data(&dev);
}

/// An admin command whose completion never comes is a clear timeout error naming
/// the command, after the configured admin timeout; the controller stays live and
/// I/O flows. A reset whose Delete I/O SQ goes unanswered gives up on it after the
/// timeout and still brings the controller and the queue pair back.
#[test]
fn admin_command_timeout_is_an_error_and_the_controller_lives_on() {
    let (dev, ctrl) = soft_with(
        63,
        ControllerOptions {
            admin_timeout_ms: 100,
            ..ControllerOptions::default()
        },
    );
    let mut qp = qpair(&ctrl, 64, 10_000);
    dev.faults().drop_admin_completions(1);
    let t0 = Instant::now();
    let err = ctrl
        .get_feature(nvme_driver::spec::feature_id::NUMBER_OF_QUEUES, 0)
        .unwrap_err();
    let took = t0.elapsed();
    let msg = err.to_string();
    assert!(matches!(err, Error::Timeout { .. }), "{msg}");
    assert!(msg.contains("get features"), "{msg}");
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "the wait follows admin_timeout_ms: {took:?}"
    );
    assert_eq!(ctrl.state(), CtrlState::Live);
    // The next admin command gets its own answer.
    assert!(ctrl
        .get_feature(nvme_driver::spec::feature_id::NUMBER_OF_QUEUES, 0)
        .is_ok());
    let mut b = Batch::new(&ctrl, 16);
    b.submit_all(&mut qp);
    b.poll_all(&mut qp, "I/O after an admin timeout");
    b.assert_exactly_once();
    assert!(b.failed().is_empty(), "statuses: {:?}", b.status);

    // A reset during which the device ignores Delete I/O SQ.
    dev.faults().drop_admin_completions(1);
    let resetter = {
        let c = ctrl.clone();
        std::thread::spawn(move || c.reset())
    };
    let mut idle = Batch::new(&ctrl, 0);
    idle.poll_until(&mut qp, "reset with an unanswered Delete I/O SQ", |_, _| {
        resetter.is_finished()
    });
    resetter.join().unwrap().expect("the reset succeeds");
    assert_eq!(ctrl.state(), CtrlState::Live);
    assert_eq!(ctrl.reset_count(), 1);
    let mut b = Batch::new(&ctrl, 16);
    b.submit_all(&mut qp);
    b.poll_all(&mut qp, "I/O after the reset");
    b.assert_exactly_once();
    assert!(b.failed().is_empty(), "statuses: {:?}", b.status);
    assert_no_stray(&qp.stats());
}

/// A device removed while the host waits on an admin command ends the wait at once
/// with an error that says so, not at the command's deadline: whatever waits on the
/// command (a reset, the failure path, the I/O they hand back to a multipath layer)
/// is not held for it. The device drops the command's completion, then is removed;
/// with a 5 s admin timeout, a driver that does not watch for the removal returns a
/// timeout instead.
#[test]
fn a_removal_ends_an_admin_wait_with_an_error_naming_it() {
    let (dev, ctrl) = soft_with(
        63,
        ControllerOptions {
            admin_timeout_ms: 5_000,
            ..ControllerOptions::default()
        },
    );
    dev.faults().drop_admin_completions(1);
    let remover = {
        let dev = dev.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            dev.faults().simulate_removal();
        })
    };
    let err = ctrl
        .get_feature(nvme_driver::spec::feature_id::NUMBER_OF_QUEUES, 0)
        .unwrap_err();
    remover.join().unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::ControllerFailed { .. }),
        "the wait ended on the removal, not the deadline: {msg}"
    );
    assert!(msg.contains("removed while waiting"), "{msg}");
    assert!(msg.contains("get features"), "{msg}");
}

/// `cancel_admin_waits` ends an admin wait in progress on another thread at once,
/// with an error that says so, not at the command's deadline (an owner that is
/// stopping must not sit out a lost completion); a wait that begins afterwards is
/// answered as usual, and no reset is asked for. With a 5 s admin timeout, a driver
/// that ignores the cancel returns a timeout after 5 s instead.
#[test]
fn cancel_admin_waits_ends_a_wait_on_a_lost_completion() {
    let (dev, ctrl) = soft_with(
        63,
        ControllerOptions {
            admin_timeout_ms: 5_000,
            ..ControllerOptions::default()
        },
    );
    dev.faults().drop_admin_completions(1);
    let waiter = {
        let c = ctrl.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = c.get_feature(nvme_driver::spec::feature_id::NUMBER_OF_QUEUES, 0);
            (r, t0.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let cancelled_at = Instant::now();
    ctrl.cancel_admin_waits();
    let (r, took) = waiter.join().unwrap();
    let after_cancel = cancelled_at.elapsed();
    let err = r.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::AdminCancelled { .. }),
        "the wait ended on the cancel, not the deadline (after {took:?}): {msg}"
    );
    assert!(
        msg.contains("get features") && msg.contains("stopping"),
        "{msg}"
    );
    assert!(
        after_cancel < Duration::from_secs(1),
        "ended {after_cancel:?} after the cancel"
    );
    // The next command is answered; the controller is live and no reset was wanted.
    assert!(ctrl
        .get_feature(nvme_driver::spec::feature_id::NUMBER_OF_QUEUES, 0)
        .is_ok());
    assert_eq!(ctrl.process_admin(), CtrlState::Live);
    assert_eq!(ctrl.reset_count(), 0);
}

/// The driver never clears CC.EN while I/O queues are alive on a controller that
/// could delete them (QEMU 7.2's controller crashed, rarely, when that happened with
/// I/O in flight): the software controller counts it, and the count stays zero
/// across resets under traffic, fatal status, a failure the device caused, a
/// detach, a shutdown, surprise removal and an orderly drop.
#[test]
fn never_disabled_with_io_queues_alive() {
    let disabled = |dev: &SoftController| dev.counters().disabled_with_io_queues();

    // Resets under traffic, then fatal status (a reset of a dead controller, which
    // cannot delete queues and is not counted), then a failure the device caused.
    let (dev, ctrl) = soft(63);
    let mut qp = qpair(&ctrl, 64, 10_000);
    for round in 0..3 {
        let mut b = Batch::new(&ctrl, 32);
        dev.faults().drop_io_completions(4);
        b.submit_all(&mut qp);
        // Four commands held in flight on the device when the reset starts.
        b.poll_until(&mut qp, "commands held", |_, _| {
            dev.counters().held_commands() == 4
        });
        let resetter = {
            let c = ctrl.clone();
            std::thread::spawn(move || c.reset())
        };
        b.poll_until(&mut qp, "reset under traffic", |_, _| {
            resetter.is_finished()
        });
        resetter.join().unwrap().expect("the reset succeeds");
        for seq in b.failed() {
            b.status[seq] = None;
            b.seen[seq] = 0;
            b.submit(&mut qp, seq);
        }
        b.poll_all(&mut qp, "I/O after a reset");
        b.assert_exactly_once();
        assert_eq!(disabled(&dev), 0, "after reset {round}");
    }
    assert_eq!(ctrl.reset_count(), 3);
    {
        let _admin = AdminThread::start(&ctrl);
        let mut b = Batch::new(&ctrl, 8);
        dev.faults().set_fatal();
        b.submit_all(&mut qp);
        b.poll_until(&mut qp, "reset after fatal status", |b, _| {
            b.completed() == b.len() && ctrl.reset_count() == 4
        });
        assert_eq!(disabled(&dev), 0, "after fatal status");
        let mut b = Batch::new(&ctrl, 8);
        dev.faults().post_bogus_completion(qp.qid(), 4000);
        b.submit_all(&mut qp);
        wait_state(&ctrl, &mut qp, &mut b, CtrlState::Failed);
        b.poll_all(&mut qp, "failure after a bogus completion");
        b.assert_exactly_once();
    }
    assert_eq!(disabled(&dev), 0, "after a failure the device caused");
    drop(qp);
    drop(ctrl);
    assert_eq!(disabled(&dev), 0);

    // Detach (fail on purpose) with I/O in flight.
    let (dev, ctrl) = soft(63);
    let mut qp = qpair(&ctrl, 64, 10_000);
    let mut b = Batch::new(&ctrl, 16);
    dev.faults().drop_io_completions(16);
    b.submit_all(&mut qp);
    b.poll_until(&mut qp, "commands held", |_, _| {
        dev.counters().held_commands() == 16
    });
    ctrl.fail("test: detach");
    b.poll_all(&mut qp, "detach");
    b.assert_exactly_once();
    for seq in 0..b.len() {
        assert!(b.status[seq].unwrap().is_path_error(), "request {seq}");
    }
    assert_eq!(disabled(&dev), 0, "after a detach");

    // Shutdown with a queue pair still alive.
    let (dev, ctrl) = soft(63);
    let qp = qpair(&ctrl, 64, 10_000);
    ctrl.shutdown().unwrap();
    drop(qp);
    assert_eq!(disabled(&dev), 0, "after a shutdown");

    // Surprise removal, then the orderly end of a healthy controller.
    let (dev, ctrl) = soft(63);
    let mut qp = qpair(&ctrl, 64, 10_000);
    let mut b = Batch::new(&ctrl, 8);
    dev.faults().simulate_removal();
    b.submit_all(&mut qp);
    assert_eq!(ctrl.process_admin(), CtrlState::Failed);
    b.poll_all(&mut qp, "removal");
    b.assert_exactly_once();
    assert_eq!(disabled(&dev), 0, "after removal");
    let (dev, ctrl) = soft(63);
    let qp = qpair(&ctrl, 64, 10_000);
    drop(qp);
    drop(ctrl);
    assert_eq!(disabled(&dev), 0, "after an orderly drop");
}
