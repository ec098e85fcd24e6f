// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The host driver against the software controller: data integrity, splitting, tag
//! exhaustion, resets under traffic, failure, removal, timeouts and bad input. Every
//! test checks that each request completes exactly once and bounds every wait.

use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::{sc, sct, Status};
use nvme_driver::{
    Controller, ControllerOptions, CtrlState, DmaBuf, Error, IoCompletion, IoOp, IoQpair,
    IoRequest, QpairOptions, Refused,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

fn soft(cfg: SoftConfig) -> (Arc<SoftController>, Controller) {
    let dev = SoftController::start(cfg);
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, ControllerOptions::default())
        .expect("controller comes up");
    (dev, ctrl)
}

/// The default configuration with one namespace (NSID 1) of `blocks` blocks of `bs`
/// bytes.
fn ns_config(blocks: u64, bs: u32) -> SoftConfig {
    SoftConfig {
        namespaces: vec![Arc::new(Namespace::new(1, blocks, bs).unwrap())],
        ..SoftConfig::default()
    }
}

/// [`soft`] with [`ns_config`].
fn soft_ns(blocks: u64, bs: u32) -> (Arc<SoftController>, Controller) {
    soft(ns_config(blocks, bs))
}

/// Queue pair options of `entries` entries, 64 pending requests at most, 10 s timeout.
fn qp_options(entries: u16) -> QpairOptions {
    QpairOptions {
        entries,
        pending_max: 64,
        timeout_ms: 10_000,
    }
}

/// Reads blocks `0..n` (512 bytes each) of namespace 1 and returns them; fails the
/// test unless the read completes once, with success.
fn read_blocks(ctrl: &Controller, qp: &mut IoQpair, n: usize) -> Vec<u8> {
    const CTX: u64 = 0x7ead;
    let rbuf = ctrl.alloc_buffer(n * 512).unwrap();
    qp.submit(IoRequest::read(1, 0, n as u32, rbuf.whole(), CTX))
        .unwrap();
    let mut done = Vec::new();
    wait_all(qp, 1, &mut done);
    assert_eq!(done.len(), 1, "one read, one completion: {done:?}");
    assert_eq!(done[0].ctx, CTX);
    assert!(
        done[0].status.is_success(),
        "read of blocks 0..{n}: {}",
        done[0].status
    );
    contents(&rbuf)
}

/// Polls until `want` requests completed; panics (failing the test) at the deadline.
fn wait_all(qp: &mut IoQpair, want: usize, done: &mut Vec<IoCompletion>) {
    let start = Instant::now();
    while done.len() < want {
        qp.poll(64, &mut |c| done.push(c));
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {want} completions within {DEADLINE:?}",
            done.len()
        );
    }
}

fn pattern(buf: &mut DmaBuf, seed: u64) {
    let mut v = vec![0u8; buf.len()];
    let mut x = seed | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    buf.write_at(0, &v).unwrap();
}

fn contents(buf: &DmaBuf) -> Vec<u8> {
    let mut v = vec![0u8; buf.len()];
    buf.read_at(0, &mut v).unwrap();
    v
}

#[test]
fn identify_and_namespaces() {
    let (_dev, ctrl) = soft(SoftConfig::default());
    assert_eq!(ctrl.identify().vid, 0x1b36);
    assert_eq!(ctrl.namespaces().len(), 1);
    let ns = ctrl.namespace(1).unwrap();
    assert_eq!(ns.block_size, 512);
    assert_eq!(ns.nsze, 2 << 20);
    assert_eq!(ctrl.max_transfer_bytes(), 128 << 10);
    assert!(ctrl.io_queues() >= 1);
    let err = ctrl.namespace(7).unwrap_err().to_string();
    assert!(
        err.contains("namespace 7 does not exist") && err.contains("[1]"),
        "{err}"
    );
    let smart = ctrl.smart_log().unwrap();
    assert!(smart.temperature_k > 0);
}

#[test]
fn write_read_back_every_size_and_offset() {
    let (_dev, ctrl) = soft_ns(1 << 16, 512);
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let mut done = Vec::new();
    // Sizes from one block to several MiB (split by MDTS = 128 KiB), at buffer
    // offsets that put the data across PRP list pages.
    let sizes = [
        512usize,
        4096,
        8192,
        12288,
        65536,
        131072,
        131584,
        1 << 20,
        3 << 20,
    ];
    let offsets = [0usize, 512, 3584, 4092];
    let mut ctx = 0;
    for &size in &sizes {
        for &off in &offsets {
            let mut wbuf = ctrl.alloc_buffer(size + off).unwrap();
            pattern(&mut wbuf, ctx + 1);
            let rbuf = ctrl.alloc_buffer(size + off).unwrap();
            let nlb = (size / 512) as u32;
            let slba = (ctx * 97) % (1 << 14);
            done.clear();
            qp.submit(IoRequest::write(
                1,
                slba,
                nlb,
                wbuf.slice(off, size).unwrap(),
                ctx,
            ))
            .unwrap();
            wait_all(&mut qp, 1, &mut done);
            assert!(
                done[0].status.is_success(),
                "write {size}@{off}: {}",
                done[0].status
            );
            done.clear();
            qp.submit(IoRequest::read(
                1,
                slba,
                nlb,
                rbuf.slice(off, size).unwrap(),
                ctx + 1000,
            ))
            .unwrap();
            wait_all(&mut qp, 1, &mut done);
            assert!(done[0].status.is_success());
            assert_eq!(done[0].ctx, ctx + 1000);
            assert!(
                contents(&wbuf)[off..] == contents(&rbuf)[off..],
                "data differs for {size} bytes at offset {off}"
            );
            ctx += 1;
        }
    }
    let st = qp.stats();
    assert_eq!(st.submitted, st.completed);
    assert!(
        st.commands > st.submitted,
        "large requests were split: {st:?}"
    );
}

#[test]
fn flush_write_zeroes_deallocate() {
    let (_dev, ctrl) = soft_ns(4096, 4096);
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let mut buf = ctrl.alloc_buffer(8 * 4096).unwrap();
    buf.fill(0xab);
    let mut done = Vec::new();
    qp.submit(IoRequest::write(1, 100, 8, buf.whole(), 1))
        .unwrap();
    qp.submit(IoRequest::flush(1, 2)).unwrap();
    wait_all(&mut qp, 2, &mut done);
    qp.submit(IoRequest::no_data(IoOp::WriteZeroes, 1, 100, 2, 3))
        .unwrap();
    qp.submit(IoRequest::no_data(IoOp::Deallocate, 1, 106, 2, 4))
        .unwrap();
    wait_all(&mut qp, 4, &mut done);
    assert!(done.iter().all(|c| c.status.is_success()), "{done:?}");
    qp.submit(IoRequest::read(1, 100, 8, buf.whole(), 5))
        .unwrap();
    wait_all(&mut qp, 5, &mut done);
    let data = contents(&buf);
    assert!(data[..2 * 4096].iter().all(|&b| b == 0));
    assert!(data[2 * 4096..6 * 4096].iter().all(|&b| b == 0xab));
    assert!(data[6 * 4096..].iter().all(|&b| b == 0));
}

#[test]
fn tag_exhaustion_uses_the_pending_ring_in_order() {
    let (_dev, ctrl) = soft(SoftConfig {
        mqes: 7,
        ..ns_config(1 << 12, 512)
    });
    let mut qp = ctrl.create_io_qpair(qp_options(8)).unwrap();
    assert_eq!(qp.depth_max(), 7);
    // Each request writes its index into its own block: 7 go to the device, 64 wait
    // on the pending ring, which is then full.
    let n = 7 + 64;
    let mut bufs: Vec<DmaBuf> = (0..n).map(|_| ctrl.alloc_buffer(512).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(i as u8);
    }
    for (i, b) in bufs.iter().enumerate() {
        qp.submit(IoRequest::write(1, i as u64, 1, b.whole(), i as u64))
            .unwrap();
    }
    assert_eq!(qp.pending_len(), 64);
    // The ring is full now: the next request is handed back, not dropped.
    let extra = ctrl.alloc_buffer(512).unwrap();
    let (err, back) = qp
        .submit(IoRequest::write(1, 0, 1, extra.whole(), 999))
        .unwrap_err();
    assert!(matches!(err, Error::Busy(64)), "{err}");
    assert!(
        err.to_string()
            .contains("poll for completions and resubmit"),
        "{err}"
    );
    assert_eq!(back.ctx, 999);
    // The compact form says the same, and counts the refusal the same way.
    let req = IoRequest::write(1, 0, 1, extra.whole(), 998);
    assert_eq!(qp.try_submit(&req), Err(Refused::Busy));
    assert!(matches!(qp.explain(Refused::Busy, req), Error::Busy(64)));
    assert_eq!(qp.stats().busy, 2);
    let mut done = Vec::new();
    wait_all(&mut qp, n, &mut done);
    let mut seen = HashMap::new();
    for c in &done {
        assert!(c.status.is_success());
        *seen.entry(c.ctx).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), n);
    assert!(seen.values().all(|&k| k == 1), "a request completed twice");
    let st = qp.stats();
    assert_eq!(st.pending_high_water, 64);
    assert_eq!(st.busy, 2);
    assert_eq!(st.commands, n as u64);
    // Pending requests leave the ring in submission order: each is issued as a
    // completion frees a tag, and this device completes commands in the order it
    // fetches them, so completions come back in submission order.
    let order: Vec<u64> = done.iter().map(|c| c.ctx).collect();
    assert_eq!(
        order,
        (0..n as u64).collect::<Vec<_>>(),
        "completion order differs from submission order"
    );
    for _ in 0..1000 {
        qp.poll(64, &mut |c| panic!("unexpected completion {c:?}"));
    }
    let data = read_blocks(&ctrl, &mut qp, n);
    for i in 0..n {
        assert!(
            data[i * 512..(i + 1) * 512].iter().all(|&b| b == i as u8),
            "block {i}"
        );
    }
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let (_dev, ctrl) = soft_ns(1000, 512);
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let buf = ctrl.alloc_buffer(8192).unwrap();
    let e = qp
        .submit(IoRequest::read(2, 0, 1, buf.whole(), 0))
        .unwrap_err()
        .0
        .to_string();
    assert!(e.contains("namespace 2 does not exist"), "{e}");
    let e = qp
        .submit(IoRequest::read(1, 999, 2, buf.whole(), 0))
        .unwrap_err()
        .0
        .to_string();
    assert!(e.contains("past its end (1000 blocks)"), "{e}");
    let e = qp
        .submit(IoRequest::read(1, 0, 32, buf.whole(), 0))
        .unwrap_err()
        .0
        .to_string();
    assert!(e.contains("need 16384 bytes"), "{e}");
    let e = qp
        .submit(IoRequest::read(1, 0, 1, buf.slice(2, 1024).unwrap(), 0))
        .unwrap_err()
        .0
        .to_string();
    assert!(e.contains("not 4-byte aligned"), "{e}");
    let e = ctrl
        .create_io_qpair(QpairOptions {
            entries: 1,
            ..QpairOptions::default()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("queue size 1 is outside"), "{e}");
    // The compact refusal, and its explanation on demand.
    let bad = IoRequest::read(1, 999, 2, buf.whole(), 0);
    assert_eq!(qp.try_submit(&bad), Err(Refused::Invalid));
    let e = qp.explain(Refused::Invalid, bad).to_string();
    assert!(e.contains("past its end (1000 blocks)"), "{e}");
    assert_eq!(qp.stats().submitted, 0);
}

/// Traffic on a thread of its own while the controller is reset over and over: every
/// request completes exactly once, aborted ones are resubmitted, and the data reads
/// back intact.
#[test]
fn reset_during_traffic_completes_everything_exactly_once() {
    let (_dev, ctrl) = soft(SoftConfig {
        mqes: 31,
        ..ns_config(1 << 12, 512)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let c2 = ctrl.clone();
    let s2 = stop.clone();
    let worker = std::thread::spawn(move || {
        let mut qp = c2
            .create_io_qpair(QpairOptions {
                entries: 32,
                pending_max: 1024,
                timeout_ms: 10_000,
            })
            .unwrap();
        // 128 writers, each owning block i, write generation numbers; an aborted
        // write is resubmitted with the same generation.
        let n = 128usize;
        let mut bufs: Vec<DmaBuf> = (0..n).map(|_| c2.alloc_buffer(512).unwrap()).collect();
        let mut gen = vec![0u8; n];
        let mut inflight = vec![false; n];
        let mut completions = vec![0u64; n];
        let mut aborted = 0u64;
        let mut done = Vec::with_capacity(256);
        let start = Instant::now();
        loop {
            let stopping = s2.load(Ordering::Acquire);
            for i in 0..n {
                if !inflight[i] && !stopping {
                    gen[i] = gen[i].wrapping_add(1);
                    bufs[i].fill(gen[i]);
                    qp.submit(IoRequest::write(1, i as u64, 1, bufs[i].whole(), i as u64))
                        .unwrap();
                    inflight[i] = true;
                }
            }
            done.clear();
            qp.poll(256, &mut |c| done.push(c));
            for c in &done {
                let i = c.ctx as usize;
                assert!(inflight[i], "request {i} completed twice");
                completions[i] += 1;
                if c.status == Status::ABORTED_SQ_DELETION {
                    aborted += 1;
                    qp.submit(IoRequest::write(1, i as u64, 1, bufs[i].whole(), i as u64))
                        .unwrap();
                } else {
                    assert!(c.status.is_success(), "{}", c.status);
                    inflight[i] = false;
                }
            }
            if stopping && !inflight.iter().any(|&f| f) {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "traffic did not drain");
        }
        let data = read_blocks(&c2, &mut qp, n);
        for i in 0..n {
            assert!(
                data[i * 512..(i + 1) * 512].iter().all(|&b| b == gen[i]),
                "block {i} lost its last write"
            );
        }
        (completions.iter().sum::<u64>(), aborted, qp.stats())
    });
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..5 {
        ctrl.reset().expect("reset succeeds");
        assert_eq!(ctrl.state(), CtrlState::Live);
        std::thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, Ordering::Release);
    let (completed, aborted, stats) = worker.join().expect("worker passes its checks");
    assert_eq!(ctrl.reset_count(), 5);
    assert!(completed > 0);
    assert_eq!(stats.submitted, stats.completed);
    eprintln!("reset test: {completed} completions, {aborted} aborted by resets, {stats:?}");
}

#[test]
fn removal_fails_everything_exactly_once() {
    let (dev, ctrl) = soft_ns(1 << 12, 512);
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let buf = ctrl.alloc_buffer(512).unwrap();
    // Hold completions so requests are in flight, and queue more than fit.
    dev.faults().drop_io_completions(1000);
    for i in 0..300u64 {
        qp.submit(IoRequest::read(1, i, 1, buf.whole(), i)).unwrap();
    }
    qp.flush();
    std::thread::sleep(Duration::from_millis(20));
    dev.faults().simulate_removal();
    assert_eq!(ctrl.process_admin(), CtrlState::Failed);
    let mut done = Vec::new();
    wait_all(&mut qp, 300, &mut done);
    let mut seen = vec![0u8; 300];
    for c in &done {
        assert_eq!(c.status, Status::ABORTED_BY_HOST);
        assert!(c.status.is_path_error());
        seen[c.ctx as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n == 1));
    let (e, _) = qp
        .submit(IoRequest::read(1, 0, 1, buf.whole(), 0))
        .unwrap_err();
    assert!(e.to_string().contains("removed"), "{e}");
    for _ in 0..100 {
        assert_eq!(qp.poll(64, &mut |c| panic!("late completion {c:?}")), 0);
    }
}

#[test]
fn bogus_completion_fails_the_controller() {
    let (dev, ctrl) = soft_ns(1 << 12, 512);
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let buf = ctrl.alloc_buffer(512).unwrap();
    dev.faults().post_bogus_completion(qp.qid(), 4000);
    let mut done = Vec::new();
    for i in 0..10 {
        qp.submit(IoRequest::read(1, i, 1, buf.whole(), i)).unwrap();
    }
    // The queue pair stops at the bogus entry and asks for the failure; polls before
    // the admin side acts find the same entry again.
    let start = Instant::now();
    while qp.stats().stray_completions == 0 {
        qp.poll(64, &mut |c| done.push(c));
        assert!(start.elapsed() < DEADLINE, "the bogus entry never showed");
    }
    for _ in 0..100 {
        qp.poll(64, &mut |c| done.push(c));
    }
    while ctrl.state() != CtrlState::Failed {
        qp.poll(64, &mut |c| done.push(c));
        ctrl.process_admin();
        assert!(start.elapsed() < DEADLINE);
    }
    let failure = ctrl.failure().unwrap();
    assert!(
        failure.contains("invalid completion (cid 4000") && failure.contains("duplicate"),
        "{failure}"
    );
    wait_all(&mut qp, 10, &mut done);
    let mut ctxs: Vec<u64> = done.iter().map(|c| c.ctx).collect();
    ctxs.sort();
    assert_eq!(ctxs, (0..10).collect::<Vec<_>>());
    // The bogus entry is counted once, however many polls found it before the
    // failure reached the queue pair, and was never delivered.
    let st = qp.stats();
    assert_eq!(
        (st.stray_completions, st.malformed_completions),
        (1, 0),
        "{st:?}"
    );
    assert_eq!(st.completed, 10);
}

#[test]
fn timed_out_command_is_aborted() {
    let (dev, ctrl) = soft_ns(1 << 12, 512);
    let mut qp = ctrl
        .create_io_qpair(QpairOptions {
            timeout_ms: 100,
            ..QpairOptions::default()
        })
        .unwrap();
    let buf = ctrl.alloc_buffer(512).unwrap();
    dev.faults().drop_io_completions(1);
    qp.submit(IoRequest::read(1, 0, 1, buf.whole(), 42))
        .unwrap();
    let mut done = Vec::new();
    let start = Instant::now();
    while done.is_empty() {
        qp.poll(64, &mut |c| done.push(c));
        ctrl.process_admin();
        assert!(
            start.elapsed() < DEADLINE,
            "the held command never came back"
        );
    }
    assert_eq!(done[0].ctx, 42);
    assert!(
        done[0].status == Status::new(sct::GENERIC, sc::ABORT_REQUESTED, false)
            || done[0].status == Status::ABORTED_SQ_DELETION,
        "{}",
        done[0].status
    );
    assert_eq!(qp.stats().timeouts, 1);
}

/// Controller Fatal Status with one read in flight: the admin side resets the
/// controller (once); the read in flight comes back exactly once with "aborted: SQ
/// deletion" (retryable), every other read succeeds, and afterwards the controller
/// is live, not failed, its fatal condition gone, and the queue pair carries I/O.
#[test]
fn fatal_status_resets_the_controller() {
    let (dev, ctrl) = soft_ns(1 << 12, 512);
    let c2 = ctrl.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // The owner keeps polling so it can acknowledge the reset; one read at a time.
    let worker = std::thread::spawn(move || {
        let mut qp = c2.create_io_qpair(QpairOptions::default()).unwrap();
        let buf = c2.alloc_buffer(512).unwrap();
        let mut n = 0u64;
        let mut done: Vec<IoCompletion> = Vec::new();
        let start = Instant::now();
        loop {
            let stopping = s2.load(Ordering::Acquire);
            if qp.outstanding() == 0 {
                if stopping {
                    break;
                }
                qp.submit(IoRequest::read(1, 0, 1, buf.whole(), n)).unwrap();
                n += 1;
            }
            qp.poll(8, &mut |c| done.push(c));
            assert!(start.elapsed() < DEADLINE, "the reads did not drain");
        }
        (n, done, qp.stats(), qp.is_failed())
    });
    std::thread::sleep(Duration::from_millis(30));
    dev.faults().set_fatal();
    let start = Instant::now();
    while ctrl.reset_count() == 0 && ctrl.state() != CtrlState::Failed {
        ctrl.process_admin();
        assert!(start.elapsed() < DEADLINE, "fatal status was not acted on");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Some I/O after the reset before stopping.
    std::thread::sleep(Duration::from_millis(30));
    stop.store(true, Ordering::Release);
    let (n, done, stats, qp_failed) = worker.join().expect("worker passes its checks");
    assert_eq!(ctrl.state(), CtrlState::Live, "{:?}", ctrl.failure());
    assert_eq!(ctrl.reset_count(), 1);
    assert_eq!(ctrl.failure(), None);
    assert!(
        !dev.faults().is_fatal(),
        "the reset cleared the fatal condition"
    );
    assert!(!qp_failed);
    // Every read completed exactly once, in order (one at a time).
    let ctxs: Vec<u64> = done.iter().map(|c| c.ctx).collect();
    assert_eq!(ctxs, (0..n).collect::<Vec<_>>());
    let aborted: Vec<u64> = done
        .iter()
        .filter(|c| !c.status.is_success())
        .map(|c| {
            assert_eq!(c.status, Status::ABORTED_SQ_DELETION, "read {}", c.ctx);
            c.ctx
        })
        .collect();
    assert_eq!(aborted.len(), 1, "the one read in flight: {aborted:?}");
    assert!(
        aborted[0] + 1 < n,
        "reads succeeded after the reset: {} of {n}",
        aborted[0]
    );
    assert_eq!(stats.reset_aborts, 1, "{stats:?}");
    assert_eq!(
        (stats.stray_completions, stats.malformed_completions),
        (0, 0)
    );
}

/// Requests that wait for a tag are issued in submission order: 40 writes of
/// different values to the same block through a queue of 4 tags leave the last value.
#[test]
fn pending_ring_preserves_submission_order() {
    let (dev, ctrl) = soft(SoftConfig {
        mqes: 4,
        ..ns_config(64, 512)
    });
    let mut qp = ctrl.create_io_qpair(qp_options(5)).unwrap();
    let mut bufs: Vec<DmaBuf> = (0..40).map(|_| ctrl.alloc_buffer(512).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(i as u8 + 1);
        qp.submit(IoRequest::write(1, 7, 1, b.whole(), i as u64))
            .unwrap();
    }
    let mut done = Vec::new();
    wait_all(&mut qp, 40, &mut done);
    let mut back = vec![0u8; 512];
    dev.namespaces()[0].read_bytes(7 * 512, &mut back).unwrap();
    assert!(
        back.iter().all(|&b| b == 40),
        "block 7 holds {} instead of the last write",
        back[0]
    );
    assert_eq!(qp.stats().pending_high_water, 36);
}

#[test]
fn a_controller_that_never_becomes_ready_is_a_clear_timeout() {
    let dev = SoftController::start(SoftConfig {
        cap_to: 1, // 500 ms
        ..SoftConfig::default()
    });
    // A device whose firmware stopped: registers stay, nothing answers CC.EN.
    dev.stop();
    let start = Instant::now();
    let err =
        Controller::init(dev.clone() as Arc<dyn Bus>, ControllerOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Timeout { .. }), "{msg}");
    assert!(
        msg.contains("softnvme0") && msg.contains("CSTS.RDY") && msg.contains("CSTS 0x"),
        "{msg}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the wait follows CAP.TO"
    );
}

mod random_io {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// Random sizes and buffer offsets through a small queue with a small MDTS:
        /// requests split, wait for tags, wrap the rings many times; the data always
        /// reads back and each request completes once.
        #[test]
        fn random_requests_read_back(reqs in proptest::collection::vec((1u32..300, 0usize..64, 0u64..4000), 1..24)) {
            let (_dev, ctrl) = soft(SoftConfig {
                mqes: 7,
                mdts: 2,
                ..ns_config(1 << 13, 512)
            });
            let mut qp = ctrl.create_io_qpair(qp_options(8)).unwrap();
            let mut bufs = Vec::new();
            for (i, &(nlb, off4, slba)) in reqs.iter().enumerate() {
                let off = off4 * 4;
                let len = nlb as usize * 512;
                let mut w = ctrl.alloc_buffer(len + off).unwrap();
                pattern(&mut w, i as u64 + 1);
                qp.submit(IoRequest::write(1, slba, nlb, w.slice(off, len).unwrap(), i as u64)).unwrap();
                bufs.push((w, off, len, slba, nlb));
                // Overlapping ranges written in one batch complete in any order; keep
                // one write in flight at a time so the last write of a block wins.
                let mut done = Vec::new();
                wait_all(&mut qp, 1, &mut done);
                prop_assert!(done[0].status.is_success());
            }
            // Read back each range and compare with what the last write to each
            // block put there.
            let mut image = vec![None; 1 << 13];
            for (i, (w, off, len, slba, _)) in bufs.iter().enumerate() {
                let data = contents(w);
                for b in 0..len / 512 {
                    image[*slba as usize + b] = Some((i, data[off + b * 512..off + (b + 1) * 512].to_vec()));
                }
            }
            let mut done = Vec::new();
            let mut reads = Vec::new();
            for (i, (_, off, len, slba, nlb)) in bufs.iter().enumerate() {
                let r = ctrl.alloc_buffer(len + off).unwrap();
                qp.submit(IoRequest::read(1, *slba, *nlb, r.slice(*off, *len).unwrap(), 1000 + i as u64)).unwrap();
                reads.push((r, *off, *slba, *len));
            }
            wait_all(&mut qp, reads.len(), &mut done);
            let mut ctxs: Vec<u64> = done.iter().map(|c| c.ctx).collect();
            ctxs.sort_unstable();
            prop_assert_eq!(ctxs, (1000..1000 + reads.len() as u64).collect::<Vec<_>>());
            for (r, off, slba, len) in &reads {
                let data = contents(r);
                for b in 0..len / 512 {
                    let want = &image[*slba as usize + b].as_ref().unwrap().1;
                    prop_assert_eq!(&data[off + b * 512..off + (b + 1) * 512], &want[..], "block {}", *slba as usize + b);
                }
            }
        }
    }
}

#[test]
fn a_buffer_from_another_controllers_pool_is_refused() {
    let (_dev_a, a) = soft(SoftConfig::default());
    let (_dev_b, b) = soft(SoftConfig {
        name: "softnvme1".into(),
        ..SoftConfig::default()
    });
    let mut qp = a.create_io_qpair(QpairOptions::default()).unwrap();
    let foreign = b.alloc_buffer(4096).unwrap();
    let (err, back) = qp
        .submit(IoRequest::read(1, 0, 8, foreign.whole(), 5))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("is not DMA memory of this device") && msg.contains("softnvme0"),
        "{msg}"
    );
    assert_eq!(back.ctx, 5);
    // Its own buffers are fine, and a registered window is accepted.
    let own = a.alloc_buffer(4096).unwrap();
    let mut done = Vec::new();
    qp.submit(IoRequest::read(1, 0, 8, own.whole(), 6)).unwrap();
    wait_all(&mut qp, 1, &mut done);
    assert!(done[0].status.is_success());
}

/// An owner that polls a queue pair with nothing in flight only when told: the
/// controller's queue-state notifier fires when a reset starts (so the owner
/// acknowledges it long before the 2 s limit), when it ends, and when the controller
/// fails; a second notifier is refused with an error that says so.
#[test]
fn queue_state_notifier_tells_an_idle_owner_to_poll() {
    let (_dev, ctrl) = soft_ns(1024, 512);
    let mut qp = ctrl.create_io_qpair(qp_options(16)).unwrap();
    let told = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t2 = told.clone();
    ctrl.on_queue_state_change(move || {
        t2.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let err = ctrl.on_queue_state_change(|| {}).unwrap_err();
    assert!(err.to_string().contains("already set"), "{err}");
    // A block with known contents, to read back after the reset.
    let mut wbuf = ctrl.alloc_buffer(512).unwrap();
    pattern(&mut wbuf, 0x51);
    let before_reset = contents(&wbuf);
    qp.submit(IoRequest::write(1, 0, 1, wbuf.whole(), 1))
        .unwrap();
    let mut done = Vec::new();
    wait_all(&mut qp, 1, &mut done);
    assert!(done[0].status.is_success(), "{}", done[0].status);
    let seen_before = told.load(Ordering::SeqCst);

    let resetter = {
        let c = ctrl.clone();
        std::thread::spawn(move || c.reset())
    };
    let t0 = Instant::now();
    let mut seen = seen_before;
    while !resetter.is_finished() {
        assert!(t0.elapsed() < DEADLINE, "reset never finished");
        let now = told.load(Ordering::SeqCst);
        if now != seen {
            seen = now;
            qp.poll(16, &mut |c| panic!("nothing was in flight: {c:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    resetter.join().unwrap().expect("reset succeeds");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the reset took {took:?}: the idle queue pair was not told to acknowledge it"
    );
    assert!(
        told.load(Ordering::SeqCst) >= seen_before + 2,
        "told when the reset started and ended"
    );
    // The queue pair came through the reset: what was written before it reads back.
    assert_eq!(read_blocks(&ctrl, &mut qp, 1), before_reset);
    assert!(!qp.is_failed());

    let before = told.load(Ordering::SeqCst);
    ctrl.fail("test: failed on purpose");
    assert!(
        told.load(Ordering::SeqCst) > before,
        "told when the controller failed"
    );
}

/// Admin completions carry dword 0 to the caller (Get/Set Features, section 5.27):
/// the admin queue reads it through its transport (`Transport::completion_dw0`), for
/// the controller's own value and for one the host set.
#[test]
fn admin_completion_dword_0_reaches_the_caller() {
    let (_dev, ctrl) = soft(SoftConfig {
        max_io_queues: 5,
        ..ns_config(1024, 512)
    });
    use nvme_driver::spec::feature_id;
    // Number of Queues: zero-based counts of SQs (15:0) and CQs (31:16) granted.
    let queues = ctrl.get_feature(feature_id::NUMBER_OF_QUEUES, 0).unwrap();
    assert_eq!(queues, 4 << 16 | 4, "{queues:#x}");
    ctrl.set_feature(feature_id::TEMPERATURE_THRESHOLD, 0x0000_0157)
        .unwrap();
    let temp = ctrl
        .get_feature(feature_id::TEMPERATURE_THRESHOLD, 0)
        .unwrap();
    assert_eq!(temp, 0x157, "{temp:#x}");
}
