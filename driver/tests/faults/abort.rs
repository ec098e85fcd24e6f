// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The Abort/CID race (#15 item 5): an Abort names its command by CID, so a CID
//! must not go to a new command while an Abort naming it is out, or the Abort could
//! end the new command. Each test stages one order of the three events on a queue
//! pair with one tracker (queue size 2), so the request that waits behind the
//! timed-out command can only go out on that command's tracker:
//! - the command's late completion, then the Abort's (the tracker waits, parked);
//! - the Abort's completion ("not aborted"), then the command's late completion;
//! - the Abort aborts a held command (its completion, then the Abort's, in one scan).
//!
//! The software controller stamps a completion's delay when it executes the
//! command, so changing the delay between the command and its Abort gives each its
//! own.

use crate::common::*;
use nvme_driver::spec::{admin_opc, io_opc};
use nvme_driver::{IoQpair, Status};
use std::time::Duration;

/// The timed-out command's deadline: its completion comes 1.5 deadlines late, after
/// the first expiry (which sends the Abort) and before the second (a reset).
const TIMEOUT_MS: u64 = 200;
const LATE_US: u64 = 300_000;

/// A queue pair with one tracker, and a batch of two: a write (the command that
/// times out) and a read (the request that waits for its tracker).
fn one_tracker(ctrl: &nvme_driver::Controller) -> (IoQpair, Batch) {
    let qp = qpair(ctrl, 2, TIMEOUT_MS);
    assert_eq!(
        qp.depth_max(),
        1,
        "queue size 2 keeps one command in flight"
    );
    (qp, Batch::new(ctrl, 2))
}

/// Submits the write with its completion `LATE_US` late and waits until the device
/// executed it (its delay is stamped), then sets the delay the Abort will get.
fn submit_late_write(
    dev: &nvme_driver::softctrl::SoftController,
    qp: &mut IoQpair,
    b: &mut Batch,
    abort_delay_us: u64,
) {
    dev.faults().set_completion_delay_us(LATE_US);
    b.submit(qp, 0);
    qp.flush();
    b.poll_until(qp, "the write fetched", |_, _| {
        dev.counters().io_fetched(io_opc::WRITE) == 1
    });
    // Fetched is counted just before the device executes and stamps it: give it
    // that moment, far inside the deadline (the Abort comes after TIMEOUT_MS).
    std::thread::sleep(Duration::from_millis(50));
    dev.faults().set_completion_delay_us(abort_delay_us);
}

/// What every order must end with: both requests completed exactly once, the read
/// with success and its data, one timeout, one Abort, no reset, no stray, and no
/// tracker held back.
fn assert_clean_end(
    dev: &nvme_driver::softctrl::SoftController,
    ctrl: &nvme_driver::Controller,
    qp: &IoQpair,
    b: &Batch,
) {
    b.assert_exactly_once();
    assert_eq!(
        b.status[1],
        Some(Status::SUCCESS),
        "the read: {:?}",
        b.status
    );
    let st = qp.stats();
    assert_eq!(st.timeouts, 1, "only the write passed its deadline: {st:?}");
    assert_eq!(dev.counters().admin_fetched(admin_opc::ABORT), 1);
    assert_eq!(ctrl.reset_count(), 0, "no reset was needed: {st:?}");
    assert_no_stray(&st);
    assert_eq!(qp.held_for_abort(), 0, "the tracker is free at the end");
    b.assert_data(dev);
}

/// The command's late completion comes first, while the Abort is out (its
/// completion 1 s late): the write is delivered at once, with success, but its
/// tracker is held; the read waits on the pending queue and reaches the device only
/// after the Abort's completion was posted.
#[test]
fn late_completion_first_the_cid_waits_for_the_abort() {
    let (dev, ctrl) = soft(63);
    let _admin = AdminThread::start(&ctrl);
    let (mut qp, mut b) = one_tracker(&ctrl);
    submit_late_write(&dev, &mut qp, &mut b, 1_000_000);
    b.poll_until(&mut qp, "the Abort fetched", |_, _| {
        dev.counters().admin_fetched(admin_opc::ABORT) == 1
    });
    dev.faults().set_completion_delay_us(0);
    b.poll_until(&mut qp, "the write's late completion", |b, _| {
        b.seen[0] == 1
    });
    assert_eq!(b.status[0], Some(Status::SUCCESS), "the write ran");
    // The write's completion is posted; the Abort's is not yet (it is 1 s late).
    let posted_before_abort = dev.counters().completions_posted();
    b.submit(&mut qp, 1);
    qp.flush();
    let checked_while_out = std::cell::Cell::new(0);
    b.poll_until(&mut qp, "the read after the Abort", |b, qp| {
        // Read in this order: if the Abort's completion is not posted at the second
        // read, it was not at the first either.
        let reads_fetched = dev.counters().io_fetched(io_opc::READ);
        let (pending, held) = (qp.pending_len(), qp.held_for_abort());
        if dev.counters().completions_posted() == posted_before_abort {
            assert_eq!(
                reads_fetched, 0,
                "a new command went out on the tracker of the timed-out write while \
                 the Abort naming its CID was out"
            );
            assert_eq!((pending, held), (1, 1), "the read waits, the CID is held");
            checked_while_out.set(checked_while_out.get() + 1);
        }
        b.seen[1] == 1
    });
    assert!(
        checked_while_out.get() > 0,
        "the window was seen (the Abort answered after the write's completion)"
    );
    assert_clean_end(&dev, &ctrl, &qp, &b);
}

/// The Abort's completion comes first ("not aborted": the device is still running
/// the command), then the command's late completion: the write is delivered once,
/// with success, and its tracker goes straight to the waiting read.
#[test]
fn abort_answer_first_the_late_completion_frees_the_cid() {
    let (dev, ctrl) = soft(63);
    let _admin = AdminThread::start(&ctrl);
    let (mut qp, mut b) = one_tracker(&ctrl);
    submit_late_write(&dev, &mut qp, &mut b, 0);
    b.submit(&mut qp, 1);
    assert_eq!(qp.pending_len(), 1, "the read waits for the only tracker");
    let posted = dev.counters().completions_posted();
    b.poll_until(&mut qp, "the Abort's completion", |_, _| {
        dev.counters().completions_posted() > posted
    });
    assert_eq!(dev.counters().admin_fetched(admin_opc::ABORT), 1);
    assert_eq!(
        b.seen[0], 0,
        "the write's completion comes after the Abort's"
    );
    b.poll_all(&mut qp, "the write, then the read");
    assert_eq!(b.status[0], Some(Status::SUCCESS), "the write ran");
    assert_clean_end(&dev, &ctrl, &qp, &b);
}

/// The Abort aborts the command (the device held it): the command completes with
/// Command Abort Requested, once, just before the Abort's own completion; the read
/// goes out on the freed tracker.
#[test]
fn aborted_command_completes_once_with_abort_requested() {
    let (dev, ctrl) = soft(63);
    let _admin = AdminThread::start(&ctrl);
    let (mut qp, mut b) = one_tracker(&ctrl);
    dev.faults().drop_io_completions(1);
    b.submit(&mut qp, 0);
    b.submit(&mut qp, 1);
    qp.flush();
    b.poll_all(&mut qp, "the aborted write, then the read");
    assert_eq!(
        b.status[0],
        Some(Status::ABORT_REQUESTED),
        "the write was aborted: {:?}",
        b.status
    );
    assert_eq!(dev.counters().held_commands(), 0);
    assert_clean_end(&dev, &ctrl, &qp, &b);
}
