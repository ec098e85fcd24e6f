// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The controller's transport seam (`CtrlTransport`): a controller brought up with
//! `Controller::attach` over a transport of the test's own (PCIe's, wrapped), and
//! what the controller does when a property read fails, as a Property Get over a
//! fabric can: bring-up stops with the transport's error, and a live controller is
//! failed with a message naming the register and the cause, every request in flight
//! completing exactly once.

use nvme_driver::dma::{DmaMapper, DmaPool};
use nvme_driver::regs::Cap;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::transport::{AdminCommands, Enabled, IoQueueSpec};
use nvme_driver::{
    Controller, ControllerOptions, CtrlState, CtrlTransport, Error, IoCompletion, IoRequest,
    PcieCtrl, QpairOptions, QueueTransport, Result,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

/// PCIe's controller transport, whose property reads fail while `unreachable` is set
/// (what a lost admin connection does to Property Get).
#[derive(Debug)]
struct Unreliable {
    pcie: PcieCtrl,
    unreachable: AtomicBool,
}

impl Unreliable {
    fn check(&self) -> Result<()> {
        if self.unreachable.load(Ordering::Acquire) {
            return Err(Error::InvalidArgument(
                "property get: the admin connection is closed (test)".into(),
            ));
        }
        Ok(())
    }
}

impl CtrlTransport for Unreliable {
    fn name(&self) -> &str {
        self.pcie.name()
    }
    fn mapper(&self) -> Arc<dyn DmaMapper> {
        self.pcie.mapper()
    }
    fn get_property32(&self, off: usize) -> Result<u32> {
        self.check()?;
        self.pcie.get_property32(off)
    }
    fn get_property64(&self, off: usize) -> Result<u64> {
        self.check()?;
        self.pcie.get_property64(off)
    }
    fn set_property32(&self, off: usize, v: u32) -> Result<()> {
        self.pcie.set_property32(off, v)
    }
    fn admin_queue(&self, pool: &DmaPool, cap: Cap) -> Result<QueueTransport> {
        self.pcie.admin_queue(pool, cap)
    }
    fn connect_admin_queue(&self) -> Result<()> {
        self.pcie.connect_admin_queue()
    }
    fn after_enable(
        &self,
        admin: &mut dyn AdminCommands,
        pool: &DmaPool,
        enabled: &Enabled,
        timeout: Duration,
    ) -> Result<()> {
        self.pcie.after_enable(admin, pool, enabled, timeout)
    }
    fn uses_shadow_doorbells(&self) -> bool {
        self.pcie.uses_shadow_doorbells()
    }
    fn io_queue(&self, pool: &DmaPool, spec: &IoQueueSpec) -> Result<QueueTransport> {
        self.pcie.io_queue(pool, spec)
    }
    fn connect_io_queue(
        &self,
        admin: &mut dyn AdminCommands,
        qid: u16,
        timeout: Duration,
    ) -> Result<()> {
        self.pcie.connect_io_queue(admin, qid, timeout)
    }
    fn disconnect_io_queue(
        &self,
        admin: &mut dyn AdminCommands,
        qid: u16,
        timeout: Duration,
    ) -> Result<()> {
        self.pcie.disconnect_io_queue(admin, qid, timeout)
    }
    fn max_transfer_bytes(&self, mdts: u64) -> u64 {
        self.pcie.max_transfer_bytes(mdts)
    }
    fn removal_requested(&self) -> bool {
        self.pcie.removal_requested()
    }
    fn release(&self) {
        self.pcie.release()
    }
}

fn device() -> Arc<SoftController> {
    SoftController::start(SoftConfig {
        namespaces: vec![Arc::new(Namespace::new(1, 4096, 512).unwrap())],
        ..SoftConfig::default()
    })
}

fn unreliable(dev: &Arc<SoftController>, unreachable: bool) -> Arc<Unreliable> {
    Arc::new(Unreliable {
        pcie: PcieCtrl::new(dev.clone()),
        unreachable: AtomicBool::new(unreachable),
    })
}

#[test]
fn attach_stops_at_a_property_read_that_fails() {
    let dev = device();
    let t = unreliable(&dev, true);
    let err = Controller::attach(t, ControllerOptions::default())
        .expect_err("no controller without its capabilities");
    assert!(
        err.to_string().contains("admin connection is closed"),
        "the transport's error reaches the caller: {err}"
    );
}

#[test]
fn a_failed_status_read_fails_the_controller_and_completes_io_once() {
    let dev = device();
    let t = unreliable(&dev, false);
    let ctrl = Controller::attach(t.clone(), ControllerOptions::default())
        .expect("controller comes up over the wrapped transport");
    let mut qp = ctrl.create_io_qpair(QpairOptions::default()).unwrap();
    let buf = ctrl.alloc_buffer(4096).unwrap();

    // One read completes normally over the attached transport.
    qp.submit(IoRequest::read(1, 0, 8, buf.whole(), 1))
        .map_err(|(e, _)| e)
        .unwrap();
    let mut done: Vec<IoCompletion> = Vec::new();
    let start = Instant::now();
    while done.is_empty() {
        qp.poll(8, &mut |c| done.push(c));
        assert!(
            start.elapsed() < DEADLINE,
            "no completion within {DEADLINE:?}"
        );
    }
    assert!(done[0].ctx == 1 && done[0].status.is_success(), "{done:?}");

    // Two more stay in flight: the device drops their completions.
    dev.faults().drop_io_completions(2);
    for ctx in [2, 3] {
        qp.submit(IoRequest::read(1, 0, 8, buf.whole(), ctx))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    qp.flush();

    // The transport loses its way to the properties: housekeeping fails the
    // controller, saying which register could not be read and why.
    t.unreachable.store(true, Ordering::Release);
    assert_eq!(
        ctrl.process_admin(),
        CtrlState::Failed,
        "a controller whose status (CSTS) cannot be read is failed"
    );
    let why = ctrl.failure().expect("a failed controller says why");
    assert!(
        why.contains("CSTS") && why.contains("admin connection is closed"),
        "the failure names the register and the transport's error: {why}"
    );

    // Each request in flight completes exactly once, with an error.
    done.clear();
    let start = Instant::now();
    while done.len() < 2 {
        qp.poll(8, &mut |c| done.push(c));
        assert!(
            start.elapsed() < DEADLINE,
            "in flight requests not completed within {DEADLINE:?}: {done:?}"
        );
    }
    qp.poll(8, &mut |c| done.push(c));
    let mut ctxs: Vec<u64> = done.iter().map(|c| c.ctx).collect();
    ctxs.sort_unstable();
    assert_eq!(ctxs, [2, 3], "each request once: {done:?}");
    assert!(done.iter().all(|c| !c.status.is_success()), "{done:?}");
    assert_eq!(qp.outstanding(), 0);
}
