// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A submit never waits for a controller reset (DESIGN.md: "No submitter ever
//! blocks"): while its queue pair is held for a reset, a request goes onto the pending
//! queue and the submit returns at once. On the software controller a reset is over in
//! well under a millisecond, too soon to tell a submit that returns from one that
//! waits for the reset; on real hardware the CC.EN transitions alone can take hundreds
//! of milliseconds. So the device keeps the completion of the reset's Set Features
//! (Number of Queues), which the reset sends after it disabled the device and told the
//! queue pairs (the order is walked through in `nvme_driver::control`): the reset stays
//! open, the queue pair held, until the test releases it.

use crate::common::*;
use nvme_driver::spec::{admin_opc, io_opc};
use nvme_driver::{ControllerOptions, CtrlState};
use std::time::{Duration, Instant};

/// Requests submitted while the reset is held.
const READS: usize = 8;
/// The longest one submit may take. A submit that pends costs a few microseconds; this
/// leaves room for a preempted thread on a busy machine and is far below any wait for
/// the reset, which lasts as long as the test holds it.
const SUBMIT_MAX: Duration = Duration::from_millis(5);

/// While a reset is held open after the queue pair acknowledged it, each of 8 reads
/// returns from `submit` within `SUBMIT_MAX` and waits on the pending queue (nothing
/// reaches the device); once the reset ends, all 8 go out and complete exactly once,
/// with success and their data.
#[test]
fn submits_during_a_held_reset_return_at_once_onto_the_pending_queue() {
    // The admin timeout bounds the hold should the test fail before releasing it: the
    // reset then fails, and the controller with it, well within `DEADLINE`.
    let (dev, ctrl) = soft_with(
        63,
        ControllerOptions {
            admin_timeout_ms: 3_000,
            ..ControllerOptions::default()
        },
    );
    let mut qp = qpair(&ctrl, 64, 10_000);
    let mut b = Batch::reads(&ctrl, READS);
    let reads_fetched = || dev.counters().io_fetched(io_opc::READ);
    let set_features = || dev.counters().admin_fetched(admin_opc::SET_FEATURES);
    let set_features_before = set_features();

    dev.faults().keep_admin_completions(admin_opc::SET_FEATURES);
    let resetter = {
        let c = ctrl.clone();
        std::thread::spawn(move || c.reset())
    };
    // The queue pair sees the reset at a poll, hands back what it had in flight (here
    // nothing), acknowledges and holds; the reset, past the disable, waits on its Set
    // Features.
    b.poll_until(&mut qp, "the queue pair holds for the reset", |_, qp| {
        qp.is_resetting() && set_features() > set_features_before
    });

    let before = qp.stats();
    let mut took = [Duration::ZERO; READS];
    for (seq, took) in took.iter_mut().enumerate() {
        let t0 = Instant::now();
        b.submit(&mut qp, seq);
        *took = t0.elapsed();
    }
    qp.flush();
    // Seen while the reset is still held, then the hold is released before any
    // assertion, so that a failing run does not leave the reset to its timeout.
    let held = (
        qp.is_resetting(),
        ctrl.state(),
        resetter.is_finished(),
        qp.pending_len(),
        qp.stats().since(&before),
        reads_fetched(),
    );
    dev.faults().release_admin_completions();
    let (resetting, state, reset_over, pending, st, fetched) = held;

    // A submit takes microseconds; one descheduled on a busy machine can take longer
    // than the limit, so two of the eight may. A submit that waits for the reset
    // is over the limit every time.
    let slow = took.iter().filter(|t| **t >= SUBMIT_MAX).count();
    let slowest = took.iter().max().copied().unwrap_or_default();
    assert!(
        slow <= 2,
        "a submit waited while its queue pair was held for a reset: {slow} of {READS} \
         took {SUBMIT_MAX:?} or more, slowest {slowest:?}, each: {took:?}"
    );
    assert!(
        resetting && state == CtrlState::Resetting && !reset_over,
        "the reset was held throughout the submits: resetting {resetting}, {state:?}, \
         reset over {reset_over}"
    );
    assert_eq!(
        pending, READS,
        "all {READS} wait on the pending queue: {st:?}"
    );
    assert_eq!(
        (st.submitted, st.pended, st.commands, st.completed),
        (READS as u64, READS as u64, 0, 0),
        "accepted, pended, none issued or completed: {st:?}"
    );
    assert_eq!(fetched, 0, "no read reached the device during the reset");

    // The reset ends; the held reads go out, oldest first, and complete.
    b.poll_until(
        &mut qp,
        "the reset ends and the held reads complete",
        |b, _| b.completed() == READS && resetter.is_finished(),
    );
    resetter
        .join()
        .expect("the reset thread does not panic")
        .expect("the reset succeeds once its Set Features is answered");
    b.poll_all(&mut qp, "the held reads");
    b.assert_exactly_once();
    assert!(b.failed().is_empty(), "statuses: {:?}", b.status);
    b.assert_data(&dev);
    let st = qp.stats().since(&before);
    assert_eq!(
        (st.commands, st.reset_aborts),
        (READS as u64, 0),
        "each read was issued once, after the reset: {st:?}"
    );
    assert_eq!(reads_fetched(), READS as u64);
    assert_eq!(qp.pending_len(), 0);
    assert_no_stray(&qp.stats());
    assert_eq!((ctrl.state(), ctrl.reset_count()), (CtrlState::Live, 1));
}
