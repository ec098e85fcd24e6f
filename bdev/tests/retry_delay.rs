// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Retries of errors that are not path errors, as the multipath channel makes them:
//! a completion's Command Retry Delay (CRD, NVMe base 2.0 figure 95: 0 retry at once,
//! 1-3 after CRDT1-3, counted here in `retry_delay_unit_ms`), its Do Not Retry bit,
//! and the retry budget (`retry_count`). One software controller, one path; the device
//! fails chosen commands with a chosen status (`Faults::fail_next_io`) and counts the
//! commands it fetched, so every assertion is on what the device saw.
//!
//! Time enters only as lower bounds (a delayed retry cannot come early) and as a unit
//! far longer than any deadline (a retry at once cannot have waited 10 s).

use nvme_bdev::mpath::ChannelStats;
use nvme_bdev::{BdevIo, BlockLayer, Channel, IoBuf, LayerOptions, MpathOptions, Policy, Status};
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::{io_opc, sc, sct};
use nvme_driver::QpairOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(5);

/// Namespace Not Ready: generic, retryable unless DNR; CRD in bits 12:11.
fn not_ready(crd: u8, dnr: bool) -> Status {
    Status(Status::new(sct::GENERIC, sc::NAMESPACE_NOT_READY, dnr).0 | u16::from(crd) << 11)
}

struct Rig {
    layer: BlockLayer,
    dev: Arc<SoftController>,
    ch: Channel,
    buf: IoBuf,
}

fn rig(unit_ms: u64, retry_count: u32) -> Rig {
    let ns = Arc::new(Namespace::new(1, 1 << 12, 512).unwrap());
    let dev = SoftController::start(SoftConfig {
        name: "retry".into(),
        subnqn: "nqn.2024-01.org.nvme-bdev:retry".into(),
        cntlid: 1,
        namespaces: vec![ns],
        ana: true,
        ..SoftConfig::default()
    });
    let layer = BlockLayer::new(LayerOptions {
        mpath: MpathOptions {
            policy: Policy::ActivePassive,
            retry_delay_unit_ms: unit_ms,
            retry_count,
            ..MpathOptions::default()
        },
        qpair: QpairOptions::default(),
        admin_poll_us: 500,
        ..LayerOptions::default()
    })
    .unwrap();
    let names = layer.attach_bus("retry", dev.clone()).unwrap();
    let mp = names.iter().find(|n| n.starts_with("nqn.")).unwrap();
    let bdev = layer.open(mp).unwrap();
    let ch = bdev.channel().unwrap();
    let buf = layer.alloc_buffer(4096).unwrap();
    Rig {
        layer,
        dev,
        ch,
        buf,
    }
}

impl Rig {
    fn writes_fetched(&self) -> u64 {
        self.dev.counters().io_fetched(io_opc::WRITE)
    }

    /// One write of 8 blocks at LBA 0; returns its status and how long it took.
    fn write(&mut self) -> (Status, Duration) {
        self.buf.fill(0x5a);
        let t0 = Instant::now();
        self.ch
            .submit(BdevIo::write(0, 8, self.buf.whole(), 7))
            .map_err(|(e, _)| e)
            .unwrap();
        self.ch.flush();
        let mut done = None;
        while done.is_none() {
            assert!(t0.elapsed() < LIMIT * 3, "the write never completed");
            self.ch.poll(&mut |c| {
                assert_eq!(c.ctx, 7);
                assert!(done.is_none(), "completed twice");
                done = Some(c.status);
            });
        }
        (done.unwrap(), t0.elapsed())
    }

    fn stats(&self) -> ChannelStats {
        match &self.ch {
            Channel::Mpath(c) => c.stats(),
            Channel::Nvme(_) => unreachable!("a multipath bdev"),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.layer.shutdown();
    }
}

#[test]
fn crd_delays_the_retry_by_its_unit() {
    let mut r = rig(150, 3);
    let before = r.writes_fetched();
    r.dev.faults().fail_next_io(not_ready(1, false));
    let (st, took) = r.write();
    assert!(st.is_success(), "{st}");
    assert_eq!(r.writes_fetched() - before, 2, "failed once, retried once");
    assert_eq!(r.stats().retries, 1, "{:?}", r.stats());
    assert!(
        took >= Duration::from_millis(150),
        "CRD 1 with a 150 ms unit: retried after {took:?}"
    );
    // CRD 2: twice the unit.
    r.dev.faults().fail_next_io(not_ready(2, false));
    let (st, took) = r.write();
    assert!(st.is_success(), "{st}");
    assert!(
        took >= Duration::from_millis(300),
        "CRD 2 with a 150 ms unit: retried after {took:?}"
    );
    assert_eq!(r.stats().retries, 2);
}

#[test]
fn crd_zero_retries_at_once() {
    // A 10 s unit: a retry that waited any unit at all would miss the deadline.
    let mut r = rig(10_000, 3);
    let before = r.writes_fetched();
    r.dev.faults().fail_next_io(not_ready(0, false));
    let (st, took) = r.write();
    assert!(st.is_success(), "{st}");
    assert!(took < Duration::from_secs(10), "waited {took:?}");
    assert_eq!(r.writes_fetched() - before, 2);
    assert_eq!(r.stats().retries, 1);
}

#[test]
fn do_not_retry_is_delivered_as_it_is() {
    let mut r = rig(10, 3);
    let before = r.writes_fetched();
    let dnr = not_ready(0, true);
    r.dev.faults().fail_next_io(dnr);
    let (st, _) = r.write();
    assert_eq!(st, dnr, "the device's status, untouched");
    assert_eq!(r.writes_fetched() - before, 1, "not retried");
    assert_eq!(r.stats().retries, 0);
    assert_eq!(r.stats().failed, 1);
}

#[test]
fn retries_stop_at_retry_count() {
    let mut r = rig(1, 2);
    let before = r.writes_fetched();
    for _ in 0..3 {
        r.dev.faults().fail_next_io(not_ready(1, false));
    }
    let (st, _) = r.write();
    assert_eq!(st.sc(), sc::NAMESPACE_NOT_READY, "{st}");
    assert_eq!(
        r.writes_fetched() - before,
        3,
        "the first try and 2 retries"
    );
    assert_eq!(r.stats().retries, 2);
    // The budget is per I/O: the next write starts from zero and succeeds.
    let (st, _) = r.write();
    assert!(st.is_success(), "{st}");
}
