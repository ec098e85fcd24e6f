// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What the data-description tests (`sgl_io.rs`, `vectored_io.rs`) share: a software
//! controller brought up with or without SGLs, and one request run to its single
//! completion under a deadline.

use nvme_driver::bus::Bus;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, IoCompletion, IoQpair, IoRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A controller reporting `sgls` (Identify Controller SGLS) with one namespace of
/// `blocks` 512-byte blocks, brought up with `enable_sgl`.
pub fn soft(sgls: u32, blocks: u64, enable_sgl: bool) -> (Arc<SoftController>, Controller) {
    let dev = SoftController::start(SoftConfig {
        sgls,
        namespaces: vec![Arc::new(Namespace::new(1, blocks, 512).unwrap())],
        ..SoftConfig::default()
    });
    let opts = ControllerOptions {
        enable_sgl,
        ..ControllerOptions::default()
    };
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, opts).expect("controller comes up");
    (dev, ctrl)
}

/// Submits `req` and polls until it completes; fails the test unless it completes
/// exactly once, with success, within the deadline.
pub fn run_one(qp: &mut IoQpair, req: IoRequest, what: &str) {
    qp.submit(req).map_err(|(e, _)| e).unwrap();
    let mut done: Vec<IoCompletion> = Vec::new();
    let start = Instant::now();
    while done.is_empty() {
        qp.poll(64, &mut |c| done.push(c));
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: no completion within {DEADLINE:?}"
        );
    }
    // A late duplicate would show up here.
    qp.poll(64, &mut |c| done.push(c));
    assert_eq!(
        done.len(),
        1,
        "{what}: one request, one completion: {done:?}"
    );
    assert_eq!(done[0].ctx, req.ctx, "{what}");
    assert!(done[0].status.is_success(), "{what}: {}", done[0].status);
}
