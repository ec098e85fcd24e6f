// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Completion entries (NVMe base 2.0, 4.6): the driver's checks of what the device
//! writes in a completion queue. A software controller executes reads for a real
//! queue pair while the input stages what a device may do wrong: completions for any
//! command identifier (in flight, finished, never issued), duplicated completions,
//! wrong phase tags, any SQ head, any status. Whatever it does, every request
//! completes exactly once and nothing else is delivered.
//!
//! Input: a sequence of operations, one byte each plus its operands.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, CtrlState, IoRequest, QpairOptions, Status};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: usize = 512;
const MAX_REQUESTS: usize = 64;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
}

fuzz_target!(|data: &[u8]| {
    let dev = SoftController::start(SoftConfig {
        mqes: 15,
        namespaces: vec![Arc::new(Namespace::new(1, 64, BS as u32).unwrap())],
        ..SoftConfig::default()
    });
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, ControllerOptions::default())
        .expect("controller comes up");
    let mut qp = ctrl
        .create_io_qpair(QpairOptions {
            entries: 16,
            pending_max: MAX_REQUESTS,
            timeout_ms: 20,
        })
        .unwrap();
    let bufs: Vec<_> = (0..8).map(|_| ctrl.alloc_buffer(BS).unwrap()).collect();
    // Completions seen per request.
    let mut seen = vec![0u32; MAX_REQUESTS];
    let mut foreign = Vec::new();
    let mut submitted = 0;
    let mut record = |seen: &mut Vec<u32>, ctx: u64| match seen.get_mut(ctx as usize) {
        Some(k) => *k += 1,
        None => foreign.push(ctx),
    };
    dev.set_manual(true);
    let f = dev.faults();
    let mut input = Bytes(data);
    let mut got = Vec::new();
    while let Some(op) = input.u8() {
        match op % 8 {
            0 => {
                let n = 1 + (input.u8().unwrap_or(0) % 8) as usize;
                for _ in 0..n.min(MAX_REQUESTS - submitted) {
                    let seq = submitted;
                    let buf = bufs[seq % bufs.len()].whole();
                    let req = IoRequest::read(1, seq as u64 % 64, 1, buf, seq as u64);
                    if qp.submit(req).is_ok() {
                        submitted += 1;
                    }
                }
                qp.flush();
            }
            1 => {
                let (cqid, cid) = (input.u8().unwrap_or(1) as u16 % 3, input.u16().unwrap_or(0));
                f.post_bogus_completion(cqid, cid);
            }
            2 => f.duplicate_next_completion(),
            3 => f.corrupt_next_phase(),
            4 => f.corrupt_next_sq_head(input.u16().unwrap_or(0)),
            5 => f.fail_next_io(Status::from_field(input.u16().unwrap_or(0))),
            6 => {
                dev.step();
            }
            _ => {
                got.clear();
                qp.poll(64, &mut |c| got.push(c.ctx));
                for &ctx in &got {
                    record(&mut seen, ctx);
                }
            }
        }
    }
    // The device behaves from here on; what the driver recovers within a short
    // while is fine, and after that the controller is failed on purpose: either way
    // every request must complete.
    f.clear();
    dev.set_manual(false);
    let all_done = |seen: &[u32]| seen[..submitted].iter().all(|&k| k > 0);
    let start = Instant::now();
    let mut failed_on_purpose = false;
    while !all_done(&seen) {
        got.clear();
        qp.poll(64, &mut |c| got.push(c.ctx));
        for &ctx in &got {
            record(&mut seen, ctx);
        }
        if ctrl.process_admin() != CtrlState::Failed
            && start.elapsed() > Duration::from_millis(50)
            && !failed_on_purpose
        {
            ctrl.fail("fuzz: end of input");
            failed_on_purpose = true;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "requests never completed: {:?} of {submitted}, stats {:?}",
            seen[..submitted].iter().filter(|&&k| k == 0).count(),
            qp.stats()
        );
    }
    // A little more polling for a second completion of any of them to show.
    got.clear();
    for _ in 0..20 {
        qp.poll(64, &mut |c| got.push(c.ctx));
    }
    for &ctx in &got {
        record(&mut seen, ctx);
    }
    let twice: Vec<usize> = (0..submitted).filter(|&s| seen[s] > 1).collect();
    assert!(twice.is_empty(), "completed twice: {twice:?}");
    assert!(
        foreign.is_empty(),
        "unknown contexts delivered: {foreign:?}"
    );
    drop(qp);
    drop(bufs);
    drop(ctrl);
    dev.stop();
});
