// SPDX-License-Identifier: Apache-2.0 OR MIT
//! DMA pools' IOVA windows in one process (#15 item 5): many controllers at once
//! each get a window of their own (foreign-buffer detection stays exact), and the
//! pool one too many is refused with an error that names the problem and the fix,
//! never placed in a shared window. One test: the windows are process-wide.

use nvme_driver::bus::Bus;
use nvme_driver::dma::{DmaMapper, DmaPool, Iova};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::{Controller, ControllerOptions, Error, IoRequest, QpairOptions};
use std::ptr::NonNull;
use std::sync::Arc;

/// A mapper that maps nothing: the pools here only take windows.
#[derive(Debug)]
struct NoMapper;

impl DmaMapper for NoMapper {
    unsafe fn map(&self, _vaddr: NonNull<u8>, _len: usize, _iova: Iova) -> nvme_driver::Result<()> {
        Ok(())
    }
    fn unmap(&self, _iova: Iova, _len: usize) -> nvme_driver::Result<()> {
        Ok(())
    }
}

fn soft_controller(i: usize) -> (Arc<SoftController>, Controller) {
    let dev = SoftController::start(SoftConfig {
        name: format!("soft{i}"),
        namespaces: vec![Arc::new(Namespace::new(1, 64, 512).unwrap())],
        ..SoftConfig::default()
    });
    let ctrl = Controller::init(dev.clone() as Arc<dyn Bus>, ControllerOptions::default())
        .expect("controller comes up");
    (dev, ctrl)
}

#[test]
fn many_controllers_get_their_own_windows_and_one_too_many_is_refused() {
    // A server's worth of controllers, each with a queue pair: every pool has its
    // own window, and a buffer of one controller is refused by the next one.
    let ctrls: Vec<_> = (0..12).map(soft_controller).collect();
    for (i, (_, ctrl)) in ctrls.iter().enumerate() {
        let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
        let (_, next) = &ctrls[(i + 1) % ctrls.len()];
        let foreign = next.alloc_buffer(4096).unwrap();
        let err = qp
            .submit(IoRequest::read(1, 0, 1, foreign.whole(), 0))
            .map(|_| ())
            .map_err(|(e, _)| e)
            .expect_err("a buffer of another controller is refused");
        assert!(
            err.to_string().contains("DMA"),
            "controller {i}: the refusal names the buffer's problem: {err}"
        );
    }
    // Disjoint windows: no two controllers' buffers share a window.
    let mut seen = std::collections::HashSet::new();
    for (_, ctrl) in &ctrls {
        let b = ctrl.alloc_buffer(4096).unwrap();
        assert!(
            seen.insert(b.iova().0),
            "two pools handed out IOVA {:#x}",
            b.iova().0
        );
    }

    // Fill the remaining windows with bare pools, then one more.
    let mut pools = Vec::new();
    let err = loop {
        match DmaPool::new("extra", Arc::new(NoMapper)) {
            Ok(p) => pools.push(p),
            Err(e) => break e,
        }
        assert!(pools.len() <= 64, "at most 64 windows");
    };
    let msg = err.to_string();
    assert!(matches!(err, Error::DmaExhausted(_)), "{msg}");
    for want in [
        "extra: no IOVA window is free for another DMA pool",
        "held by live pools in this process",
        "Drop the controllers",
        "NVME_DMA_WINDOW_GIB=",
    ] {
        assert!(msg.contains(want), "{want:?} missing: {msg}");
    }
    let (w0, size) = pools[0].iova_range();
    for p in &pools[1..] {
        let (b, _) = p.iova_range();
        assert!(b.0 >= w0.0 + size || b.0 + size <= w0.0, "windows overlap");
    }
    // A window comes back when its pool is dropped, and a controller can take it.
    drop(pools.pop());
    let (_, ctrl) = soft_controller(99);
    assert!(ctrl.alloc_buffer(4096).is_ok());
    // And again refused, with the same clear error, at controller bring-up.
    let err = Controller::init(
        SoftController::start(SoftConfig::default()) as Arc<dyn Bus>,
        ControllerOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no IOVA window is free"),
        "bring-up names the problem: {err}"
    );
}
