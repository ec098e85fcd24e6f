// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What every fault test here uses: a software controller with a prefilled
//! namespace, queue pairs, an admin thread, and a batch of requests that records
//! what became of each one.

use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{
    Controller, ControllerOptions, CtrlState, DmaBuf, IoCompletion, IoQpair, IoRequest,
    QpairOptions, QpairStats, Status,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any wait here may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
pub(crate) const BS: usize = 512;
/// Reads come from blocks `READ_BASE..`, writes go to blocks `0..READ_BASE`.
pub(crate) const READ_BASE: u64 = 1024;

pub(crate) fn ctx(seq: usize, write: bool) -> u64 {
    (seq as u64) << 1 | write as u64
}

/// The byte pattern of block `lba` written by request `seq` (0 for the prefill).
pub(crate) fn block_pattern(lba: u64, seq: usize) -> Vec<u8> {
    (0..BS)
        .map(|i| (lba as usize * 31 + seq * 7 + i) as u8 ^ 0x5a)
        .collect()
}

pub(crate) fn soft(mqes: u16) -> (Arc<SoftController>, Controller) {
    soft_with(mqes, ControllerOptions::default())
}

pub(crate) fn soft_with(mqes: u16, opts: ControllerOptions) -> (Arc<SoftController>, Controller) {
    let dev = SoftController::start(SoftConfig {
        mqes,
        namespaces: vec![Arc::new(
            Namespace::new(1, 2 * READ_BASE, BS as u32).unwrap(),
        )],
        ..SoftConfig::default()
    });
    let ns = &dev.namespaces()[0];
    for b in READ_BASE..2 * READ_BASE {
        ns.write_bytes(b * BS as u64, &block_pattern(b, 0)).unwrap();
    }
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, opts).expect("controller comes up");
    (dev, ctrl)
}

pub(crate) fn qpair(ctrl: &Controller, entries: u16, timeout_ms: u64) -> IoQpair {
    ctrl.create_io_qpair(QpairOptions {
        entries,
        pending_max: 256,
        timeout_ms,
    })
    .unwrap()
}

/// `process_admin` every millisecond on a thread of its own, as an application's
/// admin thread would: aborts, resets and failures happen there while the test
/// thread polls (a reset waits for the queue pair's owner to acknowledge it).
pub(crate) struct AdminThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl AdminThread {
    pub(crate) fn start(ctrl: &Controller) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (ctrl.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                c.process_admin();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        AdminThread {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for AdminThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A set of requests and what became of them.
pub(crate) struct Batch {
    /// Per sequence number: write?, block, buffer.
    pub(crate) ios: Vec<(bool, u64, DmaBuf)>,
    /// Completions seen per sequence number.
    pub(crate) seen: Vec<u32>,
    /// The last status per sequence number.
    pub(crate) status: Vec<Option<Status>>,
    /// Sequence numbers in delivery order.
    pub(crate) order: Vec<usize>,
    /// Completions whose context word was not one we issued (unknown sequence number
    /// or the wrong read/write bit).
    pub(crate) foreign: Vec<u64>,
}

impl Batch {
    /// `n` requests alternating write (even) and read (odd).
    pub(crate) fn new(ctrl: &Controller, n: usize) -> Self {
        Self::with(ctrl, n, |seq| seq % 2 == 0)
    }

    /// `n` reads of the prefilled blocks.
    pub(crate) fn reads(ctrl: &Controller, n: usize) -> Self {
        Self::with(ctrl, n, |_| false)
    }

    fn with(ctrl: &Controller, n: usize, is_write: impl Fn(usize) -> bool) -> Self {
        let ios = (0..n)
            .map(|seq| {
                let write = is_write(seq);
                let lba = if write {
                    seq as u64
                } else {
                    READ_BASE + seq as u64
                };
                let mut buf = ctrl.alloc_buffer(BS).unwrap();
                if write {
                    buf.write_at(0, &block_pattern(lba, seq)).unwrap();
                }
                (write, lba, buf)
            })
            .collect();
        Batch {
            ios,
            seen: vec![0; n],
            status: vec![None; n],
            order: Vec::new(),
            foreign: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ios.len()
    }

    pub(crate) fn submit(&self, qp: &mut IoQpair, seq: usize) {
        let (write, lba, buf) = &self.ios[seq];
        let req = if *write {
            IoRequest::write(1, *lba, 1, buf.whole(), ctx(seq, true))
        } else {
            IoRequest::read(1, *lba, 1, buf.whole(), ctx(seq, false))
        };
        qp.submit(req).map_err(|(e, _)| e).unwrap();
    }

    pub(crate) fn submit_all(&self, qp: &mut IoQpair) {
        for seq in 0..self.len() {
            self.submit(qp, seq);
        }
        qp.flush();
    }

    pub(crate) fn record(&mut self, c: IoCompletion) {
        let seq = (c.ctx >> 1) as usize;
        match self.ios.get(seq) {
            Some((write, _, _)) if *write == (c.ctx & 1 == 1) => {
                self.seen[seq] += 1;
                self.status[seq] = Some(c.status);
                self.order.push(seq);
            }
            _ => self.foreign.push(c.ctx),
        }
    }

    /// Requests completed at least once.
    pub(crate) fn completed(&self) -> usize {
        self.seen.iter().filter(|&&k| k > 0).count()
    }

    /// Polls until `until` holds; fails the test at the deadline with `what`.
    pub(crate) fn poll_until(
        &mut self,
        qp: &mut IoQpair,
        what: &str,
        until: impl Fn(&Self, &IoQpair) -> bool,
    ) {
        let start = Instant::now();
        let mut done = Vec::with_capacity(64);
        while !until(self, qp) {
            done.clear();
            qp.poll(64, &mut |c| done.push(c));
            for c in done.drain(..) {
                self.record(c);
                let seq = (c.ctx >> 1) as usize;
                assert!(
                    self.seen.get(seq).is_none_or(|&k| k <= 1),
                    "{what}: request {seq} completed twice ({}, then {})",
                    self.status[seq].map_or("?".into(), |s| s.to_string()),
                    c.status
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: not within {DEADLINE:?}; {} of {} completed, stats {:?}",
                self.completed(),
                self.len(),
                qp.stats()
            );
        }
    }

    /// Polls until every request completed, then keeps polling a little to give a
    /// second completion of any of them the chance to show.
    pub(crate) fn poll_all(&mut self, qp: &mut IoQpair, what: &str) {
        self.poll_until(qp, what, |b, _| b.completed() == b.len());
        self.poll_until(qp, what, {
            let t = Instant::now();
            move |_, _| t.elapsed() > Duration::from_millis(20)
        });
    }

    /// Each request completed exactly once, and nothing else was delivered.
    pub(crate) fn assert_exactly_once(&self) {
        let twice: Vec<usize> = (0..self.len()).filter(|&s| self.seen[s] > 1).collect();
        let never: Vec<usize> = (0..self.len()).filter(|&s| self.seen[s] == 0).collect();
        assert!(
            twice.is_empty() && never.is_empty() && self.foreign.is_empty(),
            "completed twice: {twice:?}; never completed: {never:?}; unknown contexts: {:?}",
            self.foreign
        );
    }

    /// Sequence numbers whose status is not success.
    pub(crate) fn failed(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&s| self.status[s].is_some_and(|st| !st.is_success()))
            .collect()
    }

    /// Every request that succeeded moved its data: a write is on the medium, a read
    /// brought the prefilled block.
    pub(crate) fn assert_data(&self, dev: &SoftController) {
        let ns = &dev.namespaces()[0];
        for (seq, (write, lba, buf)) in self.ios.iter().enumerate() {
            if self.status[seq] != Some(Status::SUCCESS) {
                continue;
            }
            let got = if *write {
                let mut v = vec![0u8; BS];
                ns.read_bytes(lba * BS as u64, &mut v).unwrap();
                v
            } else {
                let mut v = vec![0u8; BS];
                buf.read_at(0, &mut v).unwrap();
                v
            };
            let want = block_pattern(*lba, if *write { seq } else { 0 });
            assert!(
                got == want,
                "request {seq} (write {write}, block {lba}): data differs"
            );
        }
    }
}

pub(crate) fn assert_no_stray(st: &QpairStats) {
    assert_eq!(
        (st.stray_completions, st.malformed_completions),
        (0, 0),
        "no invalid completions: {st:?}"
    );
}

/// Waits (bounded) for the controller to reach `state`, polling the queue pair.
pub(crate) fn wait_state(ctrl: &Controller, qp: &mut IoQpair, b: &mut Batch, state: CtrlState) {
    b.poll_until(qp, &format!("controller {state:?}"), |_, _| {
        ctrl.state() == state
    });
}
