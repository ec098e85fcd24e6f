// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Orderly shutdown: the volatile write cache flushed, the I/O queues deleted, the
//! normal shutdown notification sent, and its completion waited for (NVMe Base
//! Specification 2.0, section 3.6.1 "Memory-based Controller Shutdown"; CC.SHN in
//! 3.1.3.5, CSTS.SHST in 3.1.3.6).
//!
//! Linux (`nvme_disable_ctrl` with `shutdown`) and SPDK (`nvme_ctrlr_shutdown_async`)
//! write CC.SHN = 01b and poll CSTS.SHST for 10b with a bound taken from RTD3E:
//! Linux clamps RTD3E (rounded down to seconds) between its `shutdown_timeout` module
//! parameter (5 s) and 60 s; SPDK waits max(RTD3E, 10 s). Both floor it because
//! devices under-report RTD3E. Neither sends a Flush first: Linux leaves that to the
//! block layer above (file systems and `sync` flush before power-off), and a
//! controller is expected to write its cache back during shutdown processing (QEMU's
//! does). This driver has no file system above it, so it flushes on the host's word
//! before the notification when Identify Controller reports a volatile write cache:
//! a controller that finishes shutdown processing without writing the cache back is
//! then still safe.

use super::{Controller, CtrlState};
use crate::qpair::{IoRequest, QpairOptions};
use crate::regs::{self, Cc};
use crate::Result;
use std::time::{Duration, Instant};

/// CC.SHN: normal shutdown notification (section 3.1.3.5).
const SHN_NORMAL: u32 = 0b01;
/// CSTS.SHST: shutdown processing complete (section 3.1.3.6).
const SHST_COMPLETE: u32 = 0b10;
/// The longest wait for CSTS.SHST, whatever RTD3E says (Linux's cap).
const SHUTDOWN_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// How often CSTS is read while shutdown processing runs.
const SHST_POLL: Duration = Duration::from_micros(100);

/// What [`Controller::shutdown`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// CC.SHN = 01b was written (not for a failed controller, nor with
    /// [`no_shn_notification`](super::ControllerOptions::no_shn_notification)).
    pub notified: bool,
    /// CSTS.SHST read 10b (shutdown processing complete) within `timeout`.
    pub complete: bool,
    /// Flush commands completed successfully before the notification: one per active
    /// namespace when the controller has a volatile write cache, none otherwise.
    pub flushed: u32,
    /// Flushes that failed, were not answered in time, or could not be sent.
    pub flush_failures: u32,
    /// From the notification to CSTS.SHST = 10b, or to giving up.
    pub waited: Duration,
    /// The bound of that wait: RTD3E or
    /// [`shutdown_timeout_ms`](super::ControllerOptions::shutdown_timeout_ms),
    /// whichever is longer, at most 60 s.
    pub timeout: Duration,
}

/// How long to wait for CSTS.SHST = 10b: RTD3E (microseconds, Identify Controller
/// bytes 91:88, section 5.17.2.1) when it is longer than `floor_ms`, at most 60 s.
pub(super) fn shutdown_timeout(rtd3e_us: u32, floor_ms: u64) -> Duration {
    Duration::from_micros(rtd3e_us as u64)
        .max(Duration::from_millis(floor_ms.max(1)))
        .min(SHUTDOWN_TIMEOUT_MAX)
}

impl Controller {
    /// Orderly shutdown (section 3.6.1). With a volatile write cache (Identify
    /// Controller VWC bit 0), each active namespace gets a Flush first, on a queue
    /// pair of its own; then every I/O queue is deleted (what is still in flight on
    /// queue pairs the caller kept completes once, with an error), CC.SHN = 01b is
    /// written and CSTS.SHST is polled for 10b, for at most
    /// [`ShutdownReport::timeout`]. The controller is failed afterwards (no more I/O;
    /// dropping it releases the device). A controller that failed already is left as
    /// it is. With [`no_shn_notification`](super::ControllerOptions::no_shn_notification)
    /// the queues are deleted and the controller disabled, without flush or
    /// notification (SPDK perf's `-N`).
    ///
    /// An admin command another thread is waiting on is cancelled
    /// ([`Controller::cancel_admin_waits`]) rather than waited out: the controller is
    /// going away, and its answer may never come.
    ///
    /// Drop queue pairs first: a flush needs a free I/O queue.
    pub fn shutdown(&self) -> Result<ShutdownReport> {
        let inner = &self.0;
        let mut report = ShutdownReport::default();
        if inner.state() == CtrlState::Failed {
            return Ok(report);
        }
        if inner.opts.no_shn_notification {
            log::debug!(
                "{}: disabled without shutdown notification (no_shn_notification)",
                inner.name
            );
            inner.fail("controller disabled without shutdown notification".into());
            return Ok(report);
        }
        if inner.ident.volatile_write_cache() {
            // The flush's queue pair is made over the admin queue: free it first.
            drop(inner.lock_admin_stopping());
            self.flush_for_shutdown(&mut report);
        }
        let mut aq = inner.lock_admin_stopping();
        // Section 3.6.1: I/O submission and completion queues are deleted before the
        // notification; queue pairs still alive lose theirs here (see `fail`).
        inner.delete_all_io_queues(&mut aq);
        let notify = inner.transport.get_property32(regs::CC).and_then(|cc| {
            let cc = Cc(cc).with_shn(SHN_NORMAL);
            inner.transport.set_property32(regs::CC, cc.0)
        });
        if let Err(e) = notify {
            // Over a fabric, a Property Get or Set that failed: the controller is
            // unreachable, and stops here as after a shutdown.
            drop(aq);
            inner.fail(format!("shutdown notification could not be sent: {e}"));
            return Err(e);
        }
        report.notified = true;
        report.timeout = shutdown_timeout(inner.ident.rtd3e, inner.opts.shutdown_timeout_ms);
        let start = Instant::now();
        loop {
            let csts = match inner.csts() {
                Ok(c) if !c.is_all_ones() => c,
                _ => break,
            };
            if csts.shst() == SHST_COMPLETE {
                report.complete = true;
                break;
            }
            if start.elapsed() >= report.timeout {
                break;
            }
            std::thread::sleep(SHST_POLL);
        }
        report.waited = start.elapsed();
        drop(aq);
        if report.complete {
            // Quiet, as SPDK's "shutdown complete in N milliseconds": the fio engines'
            // info messages go to fio's standard output, after its report.
            log::debug!(
                "{}: shutdown complete (CSTS.SHST=10b) in {} us{}",
                inner.name,
                report.waited.as_micros(),
                match report.flushed {
                    0 => String::new(),
                    n => format!(", after {n} flush{}", if n == 1 { "" } else { "es" }),
                }
            );
        } else {
            log::warn!(
                "{}: shutdown notification sent, but CSTS.SHST did not read 10b within {} ms \
                 (RTD3E {} us); the device may count an unsafe shutdown",
                inner.name,
                report.timeout.as_millis(),
                inner.ident.rtd3e
            );
        }
        inner.fail("controller shut down".into());
        Ok(report)
    }

    /// Sends a Flush to every active namespace on a queue pair made for it and waits
    /// for them, at most the admin timeout in all; counts the outcome in `report`.
    fn flush_for_shutdown(&self, report: &mut ShutdownReport) {
        let inner = &self.0;
        let nsids: Vec<u32> = inner.namespaces.iter().map(|n| n.nsid).collect();
        if nsids.is_empty() {
            return;
        }
        let opts = QpairOptions {
            entries: 2,
            pending_max: nsids.len(),
            timeout_ms: inner.opts.admin_timeout_ms,
        };
        let mut qp = match self.create_io_qpair(opts) {
            Ok(q) => q,
            Err(e) => {
                log::warn!(
                    "{}: no queue pair for the flush before shutdown ({e}); the volatile \
                     write cache is left to the controller's shutdown processing",
                    inner.name
                );
                report.flush_failures = nsids.len() as u32;
                return;
            }
        };
        for &nsid in &nsids {
            if let Err((e, _)) = qp.submit(IoRequest::flush(nsid, nsid as u64)) {
                log::warn!("{}: flush of namespace {nsid} refused: {e}", inner.name);
                report.flush_failures += 1;
            }
        }
        let deadline = Instant::now() + inner.admin_timeout();
        let (mut ok, mut failed) = (0u32, 0u32);
        while qp.outstanding() > 0 && Instant::now() < deadline {
            let n = qp.poll(nsids.len(), &mut |c| {
                if c.status.is_success() {
                    ok += 1;
                } else {
                    log::warn!(
                        "{}: flush of namespace {} failed: {}",
                        inner.name,
                        c.ctx,
                        c.status
                    );
                    failed += 1;
                }
            });
            if n == 0 {
                std::thread::sleep(SHST_POLL);
            }
        }
        let late = qp.outstanding() as u32;
        if late > 0 {
            log::warn!(
                "{}: {late} flush(es) before shutdown not answered within {} ms",
                inner.name,
                inner.admin_timeout().as_millis()
            );
        }
        report.flushed = ok;
        report.flush_failures += failed + late;
        // Dropping the queue pair deletes its queues; a late flush dies with them.
        drop(qp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_rtd3e_above_the_floor_and_at_most_60_s() {
        assert_eq!(shutdown_timeout(0, 5000), Duration::from_secs(5));
        assert_eq!(shutdown_timeout(2_000_000, 5000), Duration::from_secs(5));
        assert_eq!(shutdown_timeout(8_000_000, 5000), Duration::from_secs(8));
        assert_eq!(shutdown_timeout(u32::MAX, 5000), Duration::from_secs(60));
        assert_eq!(shutdown_timeout(0, 0), Duration::from_millis(1));
    }
}
