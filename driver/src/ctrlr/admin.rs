// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The admin queue (section 5, "Admin Command Set"): one command at a time under the
//! controller's admin lock, over the same [`Transport`] as the I/O queues (made by
//! the controller's [`CtrlTransport::admin_queue`](crate::transport::CtrlTransport::admin_queue)),
//! with Async Event Requests kept outstanding beside it.

use super::{Controller, CtrlInner};
use crate::dma::DmaBuf;
use crate::error::{Error, Result};
use crate::lock;
use crate::prp::PAGE_SIZE;
use crate::spec::{
    admin_opc, feature_id, log_id, AnaLog, AsyncEvent, Cqe, ErrorLogEntry, SmartLog, Sqe,
    IDENTIFY_SIZE,
};
use crate::transport::{AdminCommands, QueueTransport, Transport};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Async Event Requests kept outstanding, at most.
const AER_MAX: usize = 4;

/// The tracker whose descriptor page describes the admin data buffer: admin data
/// commands go one at a time.
const DATA_TAG: u16 = 0;

/// The admin queue: its transport, a data buffer for identify and log pages, and the
/// identifiers of its commands.
#[derive(Debug)]
pub(super) struct AdminQueue {
    transport: QueueTransport,
    /// Two pages of data (identify, log pages).
    data: DmaBuf,
    next_cid: u16,
    /// CIDs of outstanding Async Event Requests.
    pub aer_cids: Vec<u16>,
}

impl AdminQueue {
    pub(super) fn new(transport: QueueTransport, data: DmaBuf) -> AdminQueue {
        AdminQueue {
            transport,
            data,
            next_cid: 0,
            aer_cids: Vec::with_capacity(AER_MAX),
        }
    }

    /// Empties the queue for a controller being enabled: no command is outstanding.
    pub(super) fn rewind(&mut self) {
        self.transport.rewind();
        self.aer_cids.clear();
    }

    /// The next command identifier (15 bits, wrapping).
    pub(super) fn alloc_cid(&mut self) -> u16 {
        let cid = self.next_cid;
        self.next_cid = cid.wrapping_add(1) % 0x8000;
        cid
    }
}

/// The admin queue lent to the transport, with the admin lock held, for the commands
/// that connect and disconnect I/O queues (PCIe's Create and Delete I/O CQ/SQ).
pub(super) struct AdminSession<'a> {
    pub ctrl: &'a CtrlInner,
    pub aq: &'a mut AdminQueue,
}

impl AdminCommands for AdminSession<'_> {
    fn command(&mut self, sqe: Sqe, timeout: Duration) -> Result<Cqe> {
        self.ctrl.admin_cmd(self.aq, sqe, timeout)
    }
}

fn admin_name(opc: u8) -> &'static str {
    match opc {
        admin_opc::DELETE_IO_SQ => "delete I/O SQ",
        admin_opc::CREATE_IO_SQ => "create I/O SQ",
        admin_opc::GET_LOG_PAGE => "get log page",
        admin_opc::DELETE_IO_CQ => "delete I/O CQ",
        admin_opc::CREATE_IO_CQ => "create I/O CQ",
        admin_opc::IDENTIFY => "identify",
        admin_opc::ABORT => "abort",
        admin_opc::SET_FEATURES => "set features",
        admin_opc::GET_FEATURES => "get features",
        admin_opc::ASYNC_EVENT_REQUEST => "async event request",
        _ => "admin command",
    }
}

impl CtrlInner {
    /// The admin queue, for a caller that is stopping the controller (its orderly
    /// shutdown): an admin wait another thread is in holds the queue, and may be for
    /// a command the device never answers (a queue pair dropped by another thread,
    /// whose queue deletion was lost), so waits are cancelled
    /// ([`Controller::cancel_admin_waits`]) every millisecond until the queue is free,
    /// rather than waited out for the admin timeout.
    pub(super) fn lock_admin_stopping(&self) -> std::sync::MutexGuard<'_, AdminQueue> {
        loop {
            match self.admin.try_lock() {
                Ok(aq) => return aq,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    self.admin_cancel.fetch_add(1, Ordering::AcqRel);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Submits an admin command and waits for its completion, collecting async events
    /// that arrive meanwhile.
    pub(super) fn admin_cmd(
        &self,
        aq: &mut AdminQueue,
        mut sqe: Sqe,
        timeout: Duration,
    ) -> Result<Cqe> {
        let cid = aq.alloc_cid();
        sqe.set_cid(cid);
        self.admin_post(aq, sqe);
        let start = Instant::now();
        let cancel = self.admin_cancel.load(Ordering::Acquire);
        let mut spins = 0u32;
        loop {
            if let Some(cqe) = self.admin_reap(aq, Some(cid))? {
                let st = cqe.status();
                if !st.is_success() {
                    return Err(Error::AdminCommand {
                        device: self.name.clone(),
                        opc: sqe.opc(),
                        what: admin_name(sqe.opc()),
                        status: st,
                    });
                }
                debug_assert_eq!(cqe.cid, cid, "admin_reap returns the completion asked for");
                return Ok(cqe);
            }
            if start.elapsed() > timeout {
                // Its completion is lost or late, and the admin queue in doubt (a
                // completion queue entry the host cannot see blocks every later one):
                // the recovery is a controller reset, as Linux does for an admin
                // timeout. The owner's next `process_admin` does it.
                self.reset_wanted.store(true, Ordering::Release);
                return Err(Error::Timeout {
                    device: self.name.clone(),
                    what: format!(
                        "admin command {:#04x} ({})",
                        sqe.opc(),
                        admin_name(sqe.opc())
                    ),
                    waited_ms: start.elapsed().as_millis() as u64,
                    csts: self.csts().map_or(u32::MAX, |c| c.0),
                });
            }
            spins += 1;
            if spins > 100 {
                // The owner is stopping (`Controller::cancel_admin_waits`).
                if self.admin_cancel.load(Ordering::Acquire) != cancel {
                    return Err(Error::AdminCancelled {
                        device: self.name.clone(),
                        opc: sqe.opc(),
                        what: admin_name(sqe.opc()),
                        waited_ms: start.elapsed().as_millis() as u64,
                    });
                }
                // A device that is gone never answers: stop waiting once the transport
                // reports its removal or its registers read all ones (what reads of a
                // removed PCIe function return) or cannot be read (a fabric), as Linux's
                // remove callback cancels outstanding admin commands. Otherwise a
                // removal that comes just after the caller read CSTS would hold
                // whatever waits on this command (a reset, the failure path, the I/O
                // they hand back) for its whole deadline. Looked at every 20th sleep,
                // not every spin: under QEMU a register read traps to the emulator.
                if spins.is_multiple_of(20)
                    && (self.transport.removal_requested()
                        || self.csts().map_or(true, |c| c.is_all_ones()))
                {
                    return Err(Error::ControllerFailed {
                        device: self.name.clone(),
                        reason: format!(
                            "removed while waiting {} ms for admin command {:#04x} ({})",
                            start.elapsed().as_millis(),
                            sqe.opc(),
                            admin_name(sqe.opc())
                        ),
                    });
                }
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    pub(super) fn admin_post(&self, aq: &mut AdminQueue, sqe: Sqe) {
        // At most AER_MAX + 1 commands are outstanding, far fewer than the entries
        // (late completions of commands given up on are consumed as they come).
        debug_assert!(aq.aer_cids.len() <= AER_MAX);
        aq.transport.post(&sqe);
        aq.transport.ring_doorbell();
    }

    /// Consumes admin completions. Returns the one for `want` if it arrived; async
    /// event completions are queued as events and their requests reposted.
    pub(super) fn admin_reap(&self, aq: &mut AdminQueue, want: Option<u16>) -> Result<Option<Cqe>> {
        let mut found = None;
        let mut reposts = 0;
        let mut popped = 0;
        // The SQ holds one more entry than may be in flight (section 4.1).
        let sq_entries = aq.transport.depth_max() + 1;
        while let Some(tail) = aq.transport.peek_completion() {
            let cqe = tail.with_dw0(aq.transport.completion_dw0());
            aq.transport.pop_completion();
            popped += 1;
            if cqe.sq_head as usize >= sq_entries {
                // The device's word is wrong: the caller fails the controller.
                return Err(Error::ControllerFailed {
                    device: self.name.clone(),
                    reason: format!(
                        "admin completion with SQ head {} of {sq_entries}",
                        cqe.sq_head
                    ),
                });
            }
            if let Some(pos) = aq.aer_cids.iter().position(|&c| c == cqe.cid) {
                aq.aer_cids.swap_remove(pos);
                if cqe.status().is_success() {
                    let ev = AsyncEvent::from_dw0(cqe.dw0);
                    if ev.is_ns_changed() {
                        // Section 5.2: the housekeeping reads the Changed Namespace
                        // List and re-identifies (`rescan.rs`).
                        self.ns_rescan.store(true, Ordering::Release);
                    }
                    lock(&self.events).push_back(ev);
                    reposts += 1;
                }
                continue;
            }
            if Some(cqe.cid) == want {
                found = Some(cqe);
            }
            // Anything else is a stale completion of a command we gave up on.
        }
        // For the admin queue this tells the device at once (see `admin_queue`).
        aq.transport.release_completions(popped);
        for _ in 0..reposts {
            self.post_aer(aq);
        }
        Ok(found)
    }

    /// Async Event Configuration (section 5.27.1.9): SMART critical warnings,
    /// namespace attribute notices, and ANA change notices if supported; then Async
    /// Event Requests up to the controller's limit. A refused configuration is not
    /// fatal: the defaults still report critical warnings.
    pub(super) fn arm_events(&self, aq: &mut AdminQueue) {
        let ana = if self.ident.oaes >> 11 & 1 == 1 {
            1 << 11
        } else {
            0
        };
        let aec = 0xff | 1 << 8 | ana;
        let _ = self.feature(
            aq,
            admin_opc::SET_FEATURES,
            feature_id::ASYNC_EVENT_CONFIG,
            aec,
        );
        for _ in 0..AER_MAX {
            self.post_aer(aq);
        }
    }

    /// Get or Set Features (`opc`) of feature `fid`; returns completion DW0.
    pub(super) fn feature(&self, aq: &mut AdminQueue, opc: u8, fid: u8, cdw11: u32) -> Result<u32> {
        let mut sqe = Sqe::new(opc);
        sqe.cdw10 = fid as u32;
        sqe.cdw11 = cdw11;
        Ok(self.admin_cmd(aq, sqe, self.admin_timeout())?.dw0)
    }

    /// Posts one Async Event Request unless the controller's limit is reached.
    pub(super) fn post_aer(&self, aq: &mut AdminQueue) {
        let limit = (self.ident.aerl as usize + 1).min(AER_MAX);
        if aq.aer_cids.len() >= limit {
            return;
        }
        let cid = aq.alloc_cid();
        let mut sqe = Sqe::new(admin_opc::ASYNC_EVENT_REQUEST);
        sqe.set_cid(cid);
        debug_assert!(
            !aq.aer_cids.contains(&cid),
            "15-bit admin CIDs do not wrap onto an outstanding AER"
        );
        aq.aer_cids.push(cid);
        self.admin_post(aq, sqe);
    }

    /// A data-in admin command using the admin data page. Returns the data.
    pub(super) fn admin_read(
        &self,
        aq: &mut AdminQueue,
        mut sqe: Sqe,
        len: usize,
    ) -> Result<Vec<u8>> {
        let len = len.min(aq.data.len());
        // The transport describes it (PRPs on PCIe: section 4.1.2). No admin command
        // uses the data buffer or the descriptor page now: the admin lock is held and
        // commands are issued one at a time.
        let iova = aq.data.iova().0;
        aq.transport
            .describe_data(DATA_TAG, &mut sqe, iova, len as u64);
        self.admin_cmd(aq, sqe, self.admin_timeout())?;
        let mut out = vec![0u8; len];
        aq.data.read_at(0, &mut out)?;
        Ok(out)
    }

    pub(super) fn identify(&self, aq: &mut AdminQueue, cns: u32, nsid: u32) -> Result<Vec<u8>> {
        let mut sqe = Sqe::new(admin_opc::IDENTIFY);
        sqe.nsid = nsid;
        sqe.cdw10 = cns;
        self.admin_read(aq, sqe, IDENTIFY_SIZE)
    }

    pub(super) fn get_log(
        &self,
        aq: &mut AdminQueue,
        lid: u8,
        nsid: u32,
        len: usize,
    ) -> Result<Vec<u8>> {
        // Section 5.16: NUMD is a zero-based dword count split over CDW10 and CDW11.
        let numd = (len / 4).max(1) as u32 - 1;
        let mut sqe = Sqe::new(admin_opc::GET_LOG_PAGE);
        sqe.nsid = nsid;
        sqe.cdw10 = lid as u32 | (numd & 0xffff) << 16;
        sqe.cdw11 = numd >> 16;
        self.admin_read(aq, sqe, len)
    }

    pub(super) fn set_num_queues(&self, aq: &mut AdminQueue, n: u16) -> Result<u16> {
        let z = n.max(1) as u32 - 1;
        let dw0 = self.feature(
            aq,
            admin_opc::SET_FEATURES,
            feature_id::NUMBER_OF_QUEUES,
            z << 16 | z,
        )?;
        let nsq = (dw0 & 0xffff) as u16;
        let ncq = (dw0 >> 16) as u16;
        Ok(nsq.min(ncq).saturating_add(1).min(n))
    }

    pub(super) fn read_ana_log(&self, aq: &mut AdminQueue) -> Result<AnaLog> {
        // Header, one descriptor per group, one NSID per namespace.
        let groups = self.ident.nanagrpid.clamp(1, 64) as usize;
        let len =
            (16 + groups * 32 + self.ident.nn.min(1024) as usize * 4).min(2 * PAGE_SIZE as usize);
        let d = self.get_log(aq, log_id::ANA, 0, len)?;
        AnaLog::parse(&d).map_err(|e| Error::Parse(e, self.name.clone()))
    }
}

impl Controller {
    /// Ends every admin command wait in progress on this controller, on any thread,
    /// with [`Error::AdminCancelled`] within about a millisecond; waits that begin
    /// afterwards are not affected. For an owner that is stopping: a thread tending
    /// the controller may be waiting on a command the device never answers (a lost
    /// completion, a device about to be shut down), and would otherwise hold the stop
    /// for the whole admin timeout, as Linux's shutdown cancels the admin tag set
    /// instead of waiting it out. The command stays with the device; a late
    /// completion for it is consumed as stale. No reset is asked for.
    pub fn cancel_admin_waits(&self) {
        self.0.admin_cancel.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn read_ana_log_locked(&self) -> Result<AnaLog> {
        let mut aq = lock(&self.0.admin);
        self.0.read_ana_log(&mut aq)
    }

    /// Reads the ANA log page (section 5.16.1.13) and keeps it.
    pub fn refresh_ana(&self) -> Result<AnaLog> {
        let log = self.read_ana_log_locked()?;
        *lock(&self.0.ana) = Some(log.clone());
        Ok(log)
    }

    /// Issues Identify with `cns` for `nsid` and returns the 4096-byte data structure
    /// as the controller sent it, for tools that print the raw bytes or fields the
    /// driver does not parse (`nvme-identify -x`, nvme-cli's JSON keys).
    pub fn identify_raw(&self, cns: u32, nsid: u32) -> Result<Vec<u8>> {
        let mut aq = lock(&self.0.admin);
        self.0.identify(&mut aq, cns, nsid)
    }

    /// Reads the SMART / health log page.
    pub fn smart_log(&self) -> Result<SmartLog> {
        let mut aq = lock(&self.0.admin);
        let d = self.0.get_log(
            &mut aq,
            log_id::SMART,
            u32::MAX,
            crate::spec::SMART_LOG_SIZE,
        )?;
        SmartLog::parse(&d).map_err(|e| Error::Parse(e, self.0.name.clone()))
    }

    /// Reads the error information log page (as many entries as fit in 8 KiB).
    pub fn error_log(&self) -> Result<Vec<ErrorLogEntry>> {
        let entries = (self.0.ident.elpe as usize + 1).min(128);
        let mut aq = lock(&self.0.admin);
        let d = self.0.get_log(
            &mut aq,
            log_id::ERROR,
            0,
            entries * crate::spec::ERROR_LOG_ENTRY_SIZE,
        )?;
        Ok(crate::spec::parse_error_log(&d))
    }

    /// Get Features: returns completion DW0.
    pub fn get_feature(&self, fid: u8, cdw11: u32) -> Result<u32> {
        let mut aq = lock(&self.0.admin);
        self.0.feature(&mut aq, admin_opc::GET_FEATURES, fid, cdw11)
    }

    /// Set Features: returns completion DW0.
    pub fn set_feature(&self, fid: u8, cdw11: u32) -> Result<u32> {
        let mut aq = lock(&self.0.admin);
        self.0.feature(&mut aq, admin_opc::SET_FEATURES, fid, cdw11)
    }

    /// Asks the controller to abort command `cid` of queue `qid` (section 5.1).
    /// Returns true if the controller says it aborted it.
    pub fn abort(&self, qid: u16, cid: u16) -> Result<bool> {
        let mut sqe = Sqe::new(admin_opc::ABORT);
        sqe.cdw10 = (cid as u32) << 16 | qid as u32;
        let mut aq = lock(&self.0.admin);
        let cqe = self.0.admin_cmd(&mut aq, sqe, Duration::from_secs(2))?;
        Ok(cqe.dw0 & 1 == 0)
    }

    /// Takes the async events received so far.
    pub fn take_events(&self) -> Vec<AsyncEvent> {
        lock(&self.0.events).drain(..).collect()
    }
}
