//! The controller: bring-up, the admin queue, I/O queue pair creation, async events,
//! timeouts, reset and failure (NVMe Base Specification 2.0, sections 3.5 "Controller
//! Initialization", 3.7 "Resets", 5 "Admin Command Set").
//!
//! The admin queue sits behind a mutex: it is not the data path. The data path (the
//! queue pairs) never takes that lock; it learns about resets and failure from one
//! atomic control word per queue pair, and asks the admin side for aborts and resets
//! through a lock-free queue and a flag.
//!
//! Somebody must call [`Controller::process_admin`] now and then (every few
//! milliseconds): it collects async events, aborts timed-out commands, notices fatal
//! status, surprise removal and hot-unplug requests, and performs requested resets.

use crate::bus::Bus;
use crate::dma::{DmaBuf, DmaPool};
use crate::error::{Error, Result};
use crate::lock;
use crate::prp::{self, PAGE_SIZE};
use crate::qpair::{IoQpair, QpairOptions, QpairShared, CTL_FAILED, CTL_LIVE, CTL_RESET};
use crate::regs::{self, Aqa, Cap, Cc, Csts, Vs};
use crate::spec::{
    admin_opc, cns, feature_id, log_id, AnaLog, AsyncEvent, Cqe, ErrorLogEntry, IdentifyController,
    IdentifyNamespace, NsIdentifiers, SmartLog, Sqe, CQE_SIZE, IDENTIFY_SIZE, SQE_SIZE,
};
use crossbeam_queue::ArrayQueue;
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Admin queue entries.
const ADMIN_ENTRIES: u16 = 32;
/// Async Event Requests kept outstanding, at most.
const AER_MAX: usize = 4;
/// Queue pairs get this long to acknowledge a reset before they are failed.
const RESET_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Controller options.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// I/O queues to ask for (Number of Queues feature).
    pub io_queues: u16,
    /// Keep an eye on the device's removal request; fail and release on it.
    pub release_on_removal: bool,
    /// How long an admin command may take before it is given up with
    /// [`Error::Timeout`] (its late completion, if any, is then ignored). The Delete
    /// I/O queue commands of a reset wait at most 1 s, or this if shorter.
    pub admin_timeout_ms: u64,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            io_queues: 64,
            release_on_removal: true,
            admin_timeout_ms: 10_000,
        }
    }
}

/// The state of a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlState {
    /// Enabled and usable.
    Live,
    /// Being reset: queue pairs hold new requests.
    Resetting,
    /// Failed or removed: every request completes with an error.
    Failed,
}

/// A namespace of the controller.
#[derive(Clone, Debug)]
pub struct Namespace {
    /// Namespace identifier.
    pub nsid: u32,
    /// Size in blocks.
    pub nsze: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// The Identify Namespace data.
    pub id: IdentifyNamespace,
    /// Identifiers from the descriptor list (CNS 03h), if the controller has it.
    pub ids: NsIdentifiers,
}

impl Namespace {
    /// The NGUID, from the descriptor list or Identify Namespace; `None` if all zero.
    pub fn nguid(&self) -> Option<[u8; 16]> {
        self.ids
            .nguid
            .or(Some(self.id.nguid))
            .filter(|g| g.iter().any(|&b| b != 0))
    }
    /// The EUI-64; `None` if all zero.
    pub fn eui64(&self) -> Option<[u8; 8]> {
        self.ids
            .eui64
            .or(Some(self.id.eui64))
            .filter(|g| g.iter().any(|&b| b != 0))
    }
}

struct AdminQueue {
    sq: DmaBuf,
    cq: DmaBuf,
    data: DmaBuf,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    next_cid: u16,
    /// CIDs of outstanding Async Event Requests.
    aer_cids: Vec<u16>,
}

impl AdminQueue {
    /// The next command identifier (15 bits, wrapping).
    fn alloc_cid(&mut self) -> u16 {
        let cid = self.next_cid;
        self.next_cid = cid.wrapping_add(1) % 0x8000;
        cid
    }
}

pub(crate) struct CtrlInner {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) name: String,
    pub(crate) pool: DmaPool,
    pub(crate) cap: Cap,
    pub(crate) vs: Vs,
    pub(crate) ident: IdentifyController,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) max_xfer_bytes: u32,
    io_queues_granted: u16,
    state: AtomicU8,
    epoch: AtomicU64,
    failure: Mutex<Option<String>>,
    failure_requested: Mutex<Option<String>>,
    fail_flag: AtomicBool,
    reset_wanted: AtomicBool,
    aborts: ArrayQueue<(u16, u16)>,
    admin: Mutex<AdminQueue>,
    qpairs: Mutex<Vec<Arc<QpairShared>>>,
    events: Mutex<VecDeque<AsyncEvent>>,
    ana: Mutex<Option<AnaLog>>,
    /// IOVA windows mapped for this device that I/O buffers may come from: the
    /// controller's own pool, and any registered with `add_dma_window`.
    pub(crate) dma_windows: Mutex<Vec<(u64, u64)>>,
    resets: AtomicU64,
    opts: ControllerOptions,
    /// Called after queue pairs' control words change (see
    /// [`Controller::on_queue_state_change`]).
    queue_notifier: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for CtrlInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("device", &self.name)
            .field("model", &self.ident.mn)
            .field("state", &self.state())
            .finish()
    }
}

const ST_LIVE: u8 = 0;
const ST_RESETTING: u8 = 1;
const ST_FAILED: u8 = 2;

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
    pub(crate) fn state(&self) -> CtrlState {
        match self.state.load(Ordering::Acquire) {
            ST_LIVE => CtrlState::Live,
            ST_RESETTING => CtrlState::Resetting,
            _ => CtrlState::Failed,
        }
    }

    fn admin_timeout(&self) -> Duration {
        Duration::from_millis(self.opts.admin_timeout_ms.max(1))
    }

    fn regs(&self) -> &crate::mmio::Mmio {
        self.bus.bar0()
    }

    fn csts(&self) -> Csts {
        Csts(self.regs().read32(regs::CSTS))
    }

    pub(crate) fn failure_reason(&self) -> String {
        lock(&self.failure)
            .clone()
            .unwrap_or_else(|| "controller failed".into())
    }

    /// The error for a request to this controller once it failed.
    pub(crate) fn failed_error(&self) -> Error {
        Error::ControllerFailed {
            device: self.name.clone(),
            reason: self.failure_reason(),
        }
    }

    /// The error for a namespace this controller does not have.
    pub(crate) fn no_such_namespace(&self, nsid: u32) -> Error {
        Error::NoSuchNamespace {
            device: self.name.clone(),
            nsid,
            available: self.namespaces.iter().map(|n| n.nsid).collect(),
        }
    }

    /// From the data path: a queue pair saw something impossible. The admin side
    /// fails the controller at its next `process_admin`; until then the qpair stops.
    pub(crate) fn request_failure(&self, reason: String) {
        let mut g = lock(&self.failure_requested);
        if g.is_none() {
            *g = Some(reason);
        }
        self.fail_flag.store(true, Ordering::Release);
    }

    pub(crate) fn request_abort(&self, qid: u16, cid: u16) {
        if self.aborts.push((qid, cid)).is_err() {
            // Too many timeouts at once: a reset deals with all of them.
            self.reset_wanted.store(true, Ordering::Release);
        }
    }

    pub(crate) fn request_reset(&self) {
        self.reset_wanted.store(true, Ordering::Release);
    }

    fn wait_rdy(&self, want: bool, what: &str) -> Result<()> {
        let timeout = Duration::from_millis(self.cap.timeout_ms().max(500));
        let start = Instant::now();
        loop {
            let csts = self.csts();
            if csts.is_all_ones() {
                return Err(Error::ControllerFailed {
                    device: self.name.clone(),
                    reason: format!(
                        "registers read all ones while waiting for {what}: the device is gone"
                    ),
                });
            }
            if csts.rdy() == want {
                return Ok(());
            }
            if want && csts.cfs() {
                return Err(Error::ControllerFailed {
                    device: self.name.clone(),
                    reason: format!(
                        "controller fatal status (CSTS {:#x}) while waiting for {what}",
                        csts.0
                    ),
                });
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    device: self.name.clone(),
                    what: what.into(),
                    waited_ms: start.elapsed().as_millis() as u64,
                    csts: csts.0,
                });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn disable(&self) -> Result<()> {
        let cc = Cc(self.regs().read32(regs::CC));
        if cc.en() {
            self.regs().write32(regs::CC, cc.with_en(false).0);
        }
        self.wait_rdy(false, "CSTS.RDY to clear after disabling (CC.EN = 0)")
    }

    /// Programs the admin queue and enables the controller (section 3.5.1, steps 1-7).
    fn enable(&self, aq: &mut AdminQueue) -> Result<()> {
        // SAFETY: the controller is disabled, so the device does not access the admin
        // queues; the buffers are ours.
        unsafe {
            std::ptr::write_bytes(aq.sq.as_ptr(), 0, aq.sq.len());
            std::ptr::write_bytes(aq.cq.as_ptr(), 0, aq.cq.len());
        }
        aq.sq_tail = 0;
        aq.cq_head = 0;
        aq.phase = true;
        aq.aer_cids.clear();
        let r = self.regs();
        r.write32(
            regs::AQA,
            Aqa::new(ADMIN_ENTRIES as u32, ADMIN_ENTRIES as u32).0,
        );
        r.write64(regs::ASQ, aq.sq.iova().0);
        r.write64(regs::ACQ, aq.cq.iova().0);
        let cc = Cc::default()
            .with_mps_shift(12)
            .with_entry_sizes(6, 4)
            .with_en(true);
        r.write32(regs::CC, cc.0);
        self.wait_rdy(true, "CSTS.RDY after enabling (CC.EN = 1)")
    }

    /// Submits an admin command and waits for its completion, collecting async events
    /// that arrive meanwhile.
    fn admin_cmd(&self, aq: &mut AdminQueue, mut sqe: Sqe, timeout: Duration) -> Result<Cqe> {
        let cid = aq.alloc_cid();
        sqe.set_cid(cid);
        self.admin_post(aq, sqe);
        let start = Instant::now();
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
                return Ok(cqe);
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    device: self.name.clone(),
                    what: format!(
                        "admin command {:#04x} ({})",
                        sqe.opc(),
                        admin_name(sqe.opc())
                    ),
                    waited_ms: start.elapsed().as_millis() as u64,
                    csts: self.csts().0,
                });
            }
            spins += 1;
            if spins > 100 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn admin_post(&self, aq: &mut AdminQueue, sqe: Sqe) {
        let slot = aq
            .sq
            .as_ptr()
            .wrapping_add(aq.sq_tail as usize * SQE_SIZE)
            .cast::<Sqe>();
        // SAFETY: `sq_tail < ADMIN_ENTRIES` and the admin SQ holds that many entries;
        // at most AER_MAX + 1 commands are outstanding, far fewer than the entries.
        unsafe { slot.write_volatile(sqe) };
        aq.sq_tail = (aq.sq_tail + 1) % ADMIN_ENTRIES;
        fence(Ordering::Release);
        self.regs().write32(
            regs::sq_tail_doorbell(0, self.cap.dstrd()),
            aq.sq_tail as u32,
        );
    }

    /// Consumes admin completions. Returns the one for `want` if it arrived; async
    /// event completions are queued as events and their requests reposted.
    fn admin_reap(&self, aq: &mut AdminQueue, want: Option<u16>) -> Result<Option<Cqe>> {
        let mut found = None;
        let mut reposts = 0;
        let mut consumed = false;
        loop {
            let entry = aq.cq.as_ptr().wrapping_add(aq.cq_head as usize * CQE_SIZE);
            // SAFETY: `cq_head < ADMIN_ENTRIES`, inside the admin CQ buffer.
            let status = unsafe { entry.add(14).cast::<u16>().read_volatile() };
            if (status & 1 == 1) != aq.phase {
                break;
            }
            fence(Ordering::Acquire);
            // SAFETY: as above.
            let cqe = unsafe { entry.cast::<Cqe>().read_volatile() };
            aq.cq_head += 1;
            if aq.cq_head == ADMIN_ENTRIES {
                aq.cq_head = 0;
                aq.phase = !aq.phase;
            }
            consumed = true;
            if cqe.sq_head >= ADMIN_ENTRIES {
                return Err(Error::ControllerFailed {
                    device: self.name.clone(),
                    reason: format!(
                        "admin completion with SQ head {} of {ADMIN_ENTRIES}",
                        cqe.sq_head
                    ),
                });
            }
            if let Some(pos) = aq.aer_cids.iter().position(|&c| c == cqe.cid) {
                aq.aer_cids.swap_remove(pos);
                if cqe.status().is_success() {
                    lock(&self.events).push_back(AsyncEvent::from_dw0(cqe.dw0));
                    reposts += 1;
                }
                continue;
            }
            if Some(cqe.cid) == want {
                found = Some(cqe);
            }
            // Anything else is a stale completion of a command we gave up on.
        }
        if consumed {
            self.regs().write32(
                regs::cq_head_doorbell(0, self.cap.dstrd()),
                aq.cq_head as u32,
            );
        }
        for _ in 0..reposts {
            self.post_aer(aq);
        }
        Ok(found)
    }

    /// Async Event Configuration (section 5.27.1.9): SMART critical warnings,
    /// namespace attribute notices, and ANA change notices if supported; then Async
    /// Event Requests up to the controller's limit. A refused configuration is not
    /// fatal: the defaults still report critical warnings.
    fn arm_events(&self, aq: &mut AdminQueue) {
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
    fn feature(&self, aq: &mut AdminQueue, opc: u8, fid: u8, cdw11: u32) -> Result<u32> {
        let mut sqe = Sqe::new(opc);
        sqe.cdw10 = fid as u32;
        sqe.cdw11 = cdw11;
        Ok(self.admin_cmd(aq, sqe, self.admin_timeout())?.dw0)
    }

    /// Posts one Async Event Request unless the controller's limit is reached.
    fn post_aer(&self, aq: &mut AdminQueue) {
        let limit = (self.ident.aerl as usize + 1).min(AER_MAX);
        if aq.aer_cids.len() >= limit {
            return;
        }
        let cid = aq.alloc_cid();
        let mut sqe = Sqe::new(admin_opc::ASYNC_EVENT_REQUEST);
        sqe.set_cid(cid);
        aq.aer_cids.push(cid);
        self.admin_post(aq, sqe);
    }

    /// A data-in admin command using the admin data page. Returns the data.
    fn admin_read(&self, aq: &mut AdminQueue, mut sqe: Sqe, len: usize) -> Result<Vec<u8>> {
        // The data page's last page is the PRP list for it, not data.
        let len = len.min(aq.data.len() - PAGE_SIZE as usize);
        // SAFETY: the data page is ours and no admin command is using it now (the
        // admin lock is held and commands are issued one at a time).
        let prps = unsafe {
            let list = aq
                .data
                .as_ptr()
                .wrapping_add(aq.data.len() - PAGE_SIZE as usize)
                .cast::<u64>();
            let list_iova = aq.data.iova().0 + aq.data.len() as u64 - PAGE_SIZE;
            prp::build(aq.data.iova().0, len as u32, list, list_iova)
        }
        .map_err(|e| Error::InvalidArgument(format!("admin data of {len} bytes: {e:?}")))?;
        sqe.prp1 = prps.prp1;
        sqe.prp2 = prps.prp2;
        self.admin_cmd(aq, sqe, self.admin_timeout())?;
        let mut out = vec![0u8; len];
        aq.data.read_at(0, &mut out)?;
        Ok(out)
    }

    fn identify(&self, aq: &mut AdminQueue, cns: u32, nsid: u32) -> Result<Vec<u8>> {
        let mut sqe = Sqe::new(admin_opc::IDENTIFY);
        sqe.nsid = nsid;
        sqe.cdw10 = cns;
        self.admin_read(aq, sqe, IDENTIFY_SIZE)
    }

    fn get_log(&self, aq: &mut AdminQueue, lid: u8, nsid: u32, len: usize) -> Result<Vec<u8>> {
        // Section 5.16: NUMD is a zero-based dword count split over CDW10 and CDW11.
        let numd = (len / 4).max(1) as u32 - 1;
        let mut sqe = Sqe::new(admin_opc::GET_LOG_PAGE);
        sqe.nsid = nsid;
        sqe.cdw10 = lid as u32 | (numd & 0xffff) << 16;
        sqe.cdw11 = numd >> 16;
        self.admin_read(aq, sqe, len)
    }

    fn create_io_queues(&self, aq: &mut AdminQueue, q: &QpairShared) -> Result<()> {
        // Create I/O Completion Queue (section 5.4): physically contiguous, no
        // interrupts (IEN = 0), as we poll.
        let mut sqe = Sqe::new(admin_opc::CREATE_IO_CQ);
        sqe.prp1 = q.cq_iova.0;
        sqe.cdw10 = (q.cq_entries as u32 - 1) << 16 | q.qid as u32;
        sqe.cdw11 = 1; // PC
        self.admin_cmd(aq, sqe, self.admin_timeout())?;
        // Create I/O Submission Queue (section 5.5), bound to the CQ of the same id.
        let mut sqe = Sqe::new(admin_opc::CREATE_IO_SQ);
        sqe.prp1 = q.sq_iova.0;
        sqe.cdw10 = (q.entries as u32 - 1) << 16 | q.qid as u32;
        sqe.cdw11 = (q.qid as u32) << 16 | 1; // CQID, PC
        self.admin_cmd(aq, sqe, self.admin_timeout())?;
        Ok(())
    }

    /// Deletes every queue pair's I/O queues on the device, best effort: 1 s per
    /// command at most (or the admin timeout if shorter), stopping at the first that
    /// fails (the device is not answering; the disable that follows stops it anyway).
    fn delete_all_io_queues(&self, aq: &mut AdminQueue) {
        let qids: Vec<u16> = lock(&self.qpairs).iter().map(|q| q.qid).collect();
        let within = self.admin_timeout().min(Duration::from_secs(1));
        for qid in qids {
            if self.delete_io_queues_within(aq, qid, within).is_err() {
                break;
            }
        }
    }

    fn delete_io_queues(&self, aq: &mut AdminQueue, qid: u16) -> Result<()> {
        self.delete_io_queues_within(aq, qid, self.admin_timeout())
    }

    fn delete_io_queues_within(
        &self,
        aq: &mut AdminQueue,
        qid: u16,
        timeout: Duration,
    ) -> Result<()> {
        let mut sqe = Sqe::new(admin_opc::DELETE_IO_SQ);
        sqe.cdw10 = qid as u32;
        self.admin_cmd(aq, sqe, timeout)?;
        let mut sqe = Sqe::new(admin_opc::DELETE_IO_CQ);
        sqe.cdw10 = qid as u32;
        self.admin_cmd(aq, sqe, timeout)?;
        Ok(())
    }

    fn set_num_queues(&self, aq: &mut AdminQueue, n: u16) -> Result<u16> {
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

    pub(crate) fn destroy_qpair(&self, shared: &Arc<QpairShared>) {
        // Take the admin lock first: a reset in progress must not recreate the
        // queues of a queue pair whose memory is about to be freed.
        let mut aq = lock(&self.admin);
        lock(&self.qpairs).retain(|q| !Arc::ptr_eq(q, shared));
        let ctl = shared.control.load(Ordering::Acquire);
        if self.state() == CtrlState::Live && ctl & 3 == CTL_LIVE {
            let _ = self.delete_io_queues(&mut aq, shared.qid);
        }
    }

    /// Fails the controller: every queue pair completes what it has with a path
    /// error, exactly once, and refuses new requests. Idempotent.
    fn fail(&self, reason: String) {
        {
            let mut f = lock(&self.failure);
            if f.is_some() {
                return;
            }
            *f = Some(reason);
        }
        // Stop the device touching memory before requests are handed back (best
        // effort: a removed device ignores it). A controller that still answers gets
        // its I/O queues deleted first, as in a reset (and as Linux's
        // nvme_dev_disable does): never disable a controller with I/O queues alive.
        // Skipped if another thread holds the admin queue (it may be stuck on this
        // very device); completions the deletion produces are path errors, and the
        // queue pairs deliver each request once either way.
        let csts = self.csts();
        if !csts.is_all_ones() {
            if csts.rdy() && !csts.cfs() && csts.shst() == 0 {
                if let Ok(mut aq) = self.admin.try_lock() {
                    self.delete_all_io_queues(&mut aq);
                }
            }
            let _ = self.disable();
        }
        self.state.store(ST_FAILED, Ordering::Release);
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        for q in lock(&self.qpairs).iter() {
            q.control.store(epoch << 2 | CTL_FAILED, Ordering::Release);
        }
        self.notify_queues();
    }

    /// Tells the owner of the queue pairs that their control words changed.
    fn notify_queues(&self) {
        if let Some(n) = self.queue_notifier.get() {
            n();
        }
    }
}

/// An NVMe controller driven by this process.
#[derive(Debug, Clone)]
pub struct Controller(Arc<CtrlInner>);

impl Controller {
    /// Brings up the controller on `bus` (section 3.5.1): disable, admin queue,
    /// enable, Identify Controller, the active namespaces, Number of Queues, async
    /// event configuration and requests, and the ANA log where supported.
    pub fn init(bus: Arc<dyn Bus>, opts: ControllerOptions) -> Result<Controller> {
        let name = bus.name().to_string();
        let r = bus.bar0();
        let cap = Cap(r.read64(regs::CAP));
        let vs = Vs(r.read32(regs::VS));
        if cap.0 == u64::MAX {
            return Err(Error::ControllerFailed {
                device: name,
                reason: "registers read all ones: the device is gone or not responding; check `lspci` and the binding".into(),
            });
        }
        if cap.css() & 1 == 0 {
            return Err(Error::ControllerFailed {
                device: name,
                reason: format!(
                    "controller does not support the NVM command set (CAP {:#x})",
                    cap.0
                ),
            });
        }
        if cap.mpsmin_shift() > 12 {
            return Err(Error::ControllerFailed {
                device: name,
                reason: format!(
                    "controller's minimum page size 2^{} is above 4 KiB",
                    cap.mpsmin_shift()
                ),
            });
        }
        let pool = DmaPool::new(&name, bus.mapper());
        let admin_bytes = ADMIN_ENTRIES as usize * SQE_SIZE;
        let aq = AdminQueue {
            sq: pool.alloc(admin_bytes)?,
            cq: pool.alloc(ADMIN_ENTRIES as usize * CQE_SIZE)?,
            // Two pages of data (identify, log pages) plus one for a PRP list.
            data: pool.alloc(3 * PAGE_SIZE as usize)?,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            next_cid: 0,
            aer_cids: Vec::new(),
        };
        let mut inner = CtrlInner {
            bus: bus.clone(),
            name: name.clone(),
            pool,
            cap,
            vs,
            ident: IdentifyController::parse(&[0; IDENTIFY_SIZE])
                .map_err(|e| Error::Parse(e, name.clone()))?,
            namespaces: Vec::new(),
            max_xfer_bytes: 0,
            io_queues_granted: 0,
            state: AtomicU8::new(ST_LIVE),
            epoch: AtomicU64::new(0),
            failure: Mutex::new(None),
            failure_requested: Mutex::new(None),
            fail_flag: AtomicBool::new(false),
            reset_wanted: AtomicBool::new(false),
            aborts: ArrayQueue::new(256),
            admin: Mutex::new(aq),
            qpairs: Mutex::new(Vec::new()),
            events: Mutex::new(VecDeque::new()),
            ana: Mutex::new(None),
            dma_windows: Mutex::new(Vec::new()),
            resets: AtomicU64::new(0),
            opts: opts.clone(),
            queue_notifier: OnceLock::new(),
        };
        // Bring-up runs on `&CtrlInner` with the admin queue locked (uncontended: the
        // controller is not shared yet). What it learns is kept in locals and stored
        // once the lock is released; AERs and the ANA log, which need the identify
        // data, follow in a second locked step.
        let (ident, namespaces, max_xfer_bytes, io_queues_granted) = {
            let mut aq = lock(&inner.admin);
            inner.disable()?;
            inner.enable(&mut aq)?;
            let d = inner.identify(&mut aq, cns::CONTROLLER, 0)?;
            let ident = IdentifyController::parse(&d).map_err(|e| Error::Parse(e, name.clone()))?;
            if ident.sqes & 0xf > 6 || ident.cqes & 0xf > 4 {
                return Err(Error::ControllerFailed {
                    device: name,
                    reason: format!(
                        "controller requires SQ/CQ entries of 2^{}/2^{} bytes; only 64/16 are supported",
                        ident.sqes & 0xf,
                        ident.cqes & 0xf
                    ),
                });
            }
            let mdts = ident.max_transfer_bytes(12).unwrap_or(u64::MAX);
            // One PRP list page per command: a transfer of MAX_PRP_PAGES - 1 pages
            // fits at any offset.
            let prp_max = (prp::MAX_PRP_PAGES - 1) * PAGE_SIZE;
            let nsids = if vs.0 >= 0x0001_0100 {
                let d = inner.identify(&mut aq, cns::ACTIVE_NS_LIST, 0)?;
                crate::spec::parse_ns_list(&d).map_err(|e| Error::Parse(e, name.clone()))?
            } else {
                (1..=ident.nn.min(1024)).collect()
            };
            let mut namespaces = Vec::new();
            for nsid in nsids {
                let d = inner.identify(&mut aq, cns::NAMESPACE, nsid)?;
                let id = IdentifyNamespace::parse(&d).map_err(|e| Error::Parse(e, name.clone()))?;
                if id.nsze == 0 {
                    continue;
                }
                let ids = inner
                    .identify(&mut aq, cns::NS_ID_DESCRIPTORS, nsid)
                    .ok()
                    .and_then(|d| crate::spec::parse_ns_descriptors(&d).ok())
                    .unwrap_or_default();
                namespaces.push(Namespace {
                    nsid,
                    nsze: id.nsze,
                    block_size: id.block_size(),
                    id,
                    ids,
                });
            }
            let granted = inner.set_num_queues(&mut aq, opts.io_queues)?;
            (ident, namespaces, mdts.min(prp_max) as u32, granted)
        };
        inner.ident = ident;
        inner.namespaces = namespaces;
        inner.max_xfer_bytes = max_xfer_bytes;
        inner.io_queues_granted = io_queues_granted;
        let ana = {
            let mut aq = lock(&inner.admin);
            inner.arm_events(&mut aq);
            if inner.ident.ana_supported() {
                Some(inner.read_ana_log(&mut aq)?)
            } else {
                None
            }
        };
        *inner.ana.get_mut().unwrap_or_else(|e| e.into_inner()) = ana;
        let (base, len) = inner.pool.iova_range();
        inner
            .dma_windows
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push((base.0, len));
        Ok(Controller(Arc::new(inner)))
    }

    /// The device's name (PCI address).
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.0.ident
    }
    /// Controller Capabilities.
    pub fn cap(&self) -> Cap {
        self.0.cap
    }
    /// Version.
    pub fn version(&self) -> Vs {
        self.0.vs
    }
    /// Active namespaces.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.0.namespaces
    }
    /// One namespace, or a clear error listing those that exist.
    pub fn namespace(&self, nsid: u32) -> Result<&Namespace> {
        self.0
            .namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .ok_or_else(|| self.0.no_such_namespace(nsid))
    }
    /// Largest transfer of one command in bytes (MDTS, capped by one PRP list page).
    pub fn max_transfer_bytes(&self) -> u32 {
        self.0.max_xfer_bytes
    }
    /// I/O queues the controller granted.
    pub fn io_queues(&self) -> u16 {
        self.0.io_queues_granted
    }
    /// Current state.
    pub fn state(&self) -> CtrlState {
        self.0.state()
    }
    /// Why the controller failed, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.0.failure).clone()
    }
    /// Completed resets.
    pub fn reset_count(&self) -> u64 {
        self.0.resets.load(Ordering::Relaxed)
    }
    /// The DMA pool for buffers this controller's queue pairs may use.
    pub fn dma_pool(&self) -> &DmaPool {
        &self.0.pool
    }
    /// Asks to be told, by a call of `f` on the thread making the change, whenever
    /// this controller changes the state of its queue pairs: a reset starts (each
    /// queue pair must then acknowledge it at its owner's next poll, or is failed after
    /// 2 s), a reset ends, or the controller fails. For owners that skip polling queue
    /// pairs with nothing in flight ([`IoQpair::needs_poll`](crate::IoQpair::needs_poll)
    /// false): `f` tells them to look again. `f` must not block. One per controller;
    /// a second call is refused with [`Error::InvalidArgument`].
    pub fn on_queue_state_change(&self, f: impl Fn() + Send + Sync + 'static) -> Result<()> {
        self.0.queue_notifier.set(Box::new(f)).map_err(|_| {
            Error::InvalidArgument(format!(
                "{}: a queue-state notifier is already set; set one per controller",
                self.0.name
            ))
        })
    }
    /// Registers another IOVA window mapped into this device's address space (by a
    /// mapper the caller drives, e.g. the block layer's buffers shared by all paths),
    /// so I/O buffers from it are accepted. Queue pairs created afterwards see it; at
    /// most four windows.
    pub fn add_dma_window(&self, base: crate::dma::Iova, len: u64) -> Result<()> {
        let mut w = lock(&self.0.dma_windows);
        if w.len() >= crate::qpair::MAX_DMA_WINDOWS {
            return Err(Error::InvalidArgument(format!(
                "{}: at most {} DMA windows",
                self.0.name,
                crate::qpair::MAX_DMA_WINDOWS
            )));
        }
        w.push((base.0, len));
        Ok(())
    }

    /// Allocates a DMA buffer for I/O on this controller.
    pub fn alloc_buffer(&self, len: usize) -> Result<DmaBuf> {
        self.0.pool.alloc(len)
    }
    /// The latest ANA log read, if the controller supports ANA.
    pub fn ana_log(&self) -> Option<AnaLog> {
        lock(&self.0.ana).clone()
    }

    /// Creates an I/O queue pair for the calling thread.
    pub fn create_io_qpair(&self, opts: QpairOptions) -> Result<IoQpair> {
        let inner = &self.0;
        if inner.state() == CtrlState::Failed {
            return Err(inner.failed_error());
        }
        let mqes = inner.cap.mqes_entries().min(u16::MAX as u32) as u16;
        if opts.entries < 2 || opts.entries > mqes {
            return Err(Error::InvalidArgument(format!(
                "{}: queue size {} is outside 2..={mqes} (CAP.MQES)",
                inner.name, opts.entries
            )));
        }
        let mut aq = lock(&inner.admin);
        let qid = {
            let qps = lock(&inner.qpairs);
            (1..=inner.io_queues_granted).find(|id| qps.iter().all(|q| q.qid != *id))
        }
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: all {} I/O queues the controller granted are in use",
                inner.name, inner.io_queues_granted
            ))
        })?;
        // A CQ twice the SQ's size (within MQES) lets the queue pair write the CQ head
        // doorbell once per many completions instead of once per poll.
        let cq_entries = (opts.entries as u32 * 2).min(mqes as u32) as u16;
        let sq_mem = inner.pool.alloc(opts.entries as usize * SQE_SIZE)?;
        let cq_mem = inner.pool.alloc(cq_entries as usize * CQE_SIZE)?;
        let epoch = inner.epoch.load(Ordering::Acquire);
        let shared = Arc::new(QpairShared {
            qid,
            entries: opts.entries,
            cq_entries,
            sq_iova: sq_mem.iova(),
            cq_iova: cq_mem.iova(),
            control: AtomicU64::new(epoch << 2 | CTL_LIVE),
            ack: AtomicU64::new(epoch),
        });
        inner.create_io_queues(&mut aq, &shared)?;
        lock(&inner.qpairs).push(shared.clone());
        drop(aq);
        IoQpair::new(inner.clone(), shared, sq_mem, cq_mem, &opts)
    }

    fn read_ana_log_locked(&self) -> Result<AnaLog> {
        let mut aq = lock(&self.0.admin);
        self.0.read_ana_log(&mut aq)
    }

    /// Reads the ANA log page (section 5.16.1.13) and keeps it.
    pub fn refresh_ana(&self) -> Result<AnaLog> {
        let log = self.read_ana_log_locked()?;
        *lock(&self.0.ana) = Some(log.clone());
        Ok(log)
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

    /// Resets the controller (section 3.7.2, controller level reset via CC.EN):
    /// disables it, has every queue pair complete its in-flight commands with
    /// "aborted: SQ deletion" (exactly once; requests not yet sent keep waiting),
    /// re-enables it, recreates the I/O queues and lets the held requests flow.
    /// On failure the controller is failed.
    ///
    /// This blocks the calling thread for the reset's duration (milliseconds), so call
    /// it from an admin or controller thread, never from a poller. Queue pair owners
    /// must keep polling meanwhile: the reset waits up to 2 s for each queue pair to
    /// acknowledge (at its next poll) before recreating its queues, and fails a queue
    /// pair that does not (it then completes everything with a path error).
    pub fn reset(&self) -> Result<()> {
        let inner = &self.0;
        let mut aq = lock(&inner.admin);
        if inner.state() == CtrlState::Failed {
            return Err(inner.failed_error());
        }
        match self.reset_locked(&mut aq) {
            Ok(()) => {
                inner.resets.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                drop(aq);
                inner.fail(format!("reset failed: {e}"));
                Err(e)
            }
        }
    }

    fn reset_locked(&self, aq: &mut AdminQueue) -> Result<()> {
        let inner = &self.0;
        inner.state.store(ST_RESETTING, Ordering::Release);
        // A responsive controller first gets its I/O queues deleted (section 5.6:
        // commands in flight are aborted by the controller), as Linux does before
        // disabling: the device then has nothing in flight when CC.EN drops, which
        // QEMU 7.2's emulation needs (it crashed, rarely, when disabled with I/O in
        // flight). Best effort with a short deadline; the disable follows regardless.
        let csts = inner.csts();
        if csts.rdy() && !csts.cfs() && !csts.is_all_ones() {
            inner.delete_all_io_queues(aq);
        }
        inner.disable()?;
        // The device no longer touches any queue: now queue pairs may hand back
        // what they had in flight.
        let epoch = inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        let qpairs: Vec<Arc<QpairShared>> = lock(&inner.qpairs).clone();
        for q in &qpairs {
            q.control.store(epoch << 2 | CTL_RESET, Ordering::Release);
        }
        // Owners that poll only busy queue pairs now look at the idle ones too.
        inner.notify_queues();
        inner.enable(aq)?;
        let granted = inner.set_num_queues(aq, inner.opts.io_queues)?;
        if granted < inner.io_queues_granted {
            return Err(Error::ControllerFailed {
                device: inner.name.clone(),
                reason: format!(
                    "after reset the controller grants {granted} I/O queues, was {}",
                    inner.io_queues_granted
                ),
            });
        }
        // Wait (bounded) for owners to rewind their rings, then recreate their queues.
        let start = Instant::now();
        let mut todo = qpairs;
        while !todo.is_empty() {
            let mut waiting = Vec::new();
            for q in todo {
                if q.ack.load(Ordering::Acquire) >= epoch {
                    inner.create_io_queues(aq, &q)?;
                    q.control.store(epoch << 2 | CTL_LIVE, Ordering::Release);
                } else {
                    waiting.push(q);
                }
            }
            todo = waiting;
            if !todo.is_empty() {
                if start.elapsed() > RESET_ACK_TIMEOUT {
                    // An owner that does not poll cannot be waited for: its queue pair
                    // is failed and completes everything when it next polls.
                    for q in &todo {
                        q.control.store(epoch << 2 | CTL_FAILED, Ordering::Release);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        inner.notify_queues();
        inner.arm_events(aq);
        inner.reset_wanted.store(false, Ordering::Release);
        while inner.aborts.pop().is_some() {}
        inner.state.store(ST_LIVE, Ordering::Release);
        Ok(())
    }

    /// Fails the controller on purpose (detach): every request completes with a
    /// path error. The device is released.
    pub fn fail(&self, reason: &str) {
        self.0.fail(reason.to_string());
        self.0.bus.release();
    }

    /// Housekeeping, to be called every few milliseconds from one thread: detects
    /// fatal status, surprise removal and removal requests (then fails the controller
    /// and releases the device), collects async events (re-reading the ANA log on an
    /// ANA change), aborts timed-out commands and performs requested resets. Returns
    /// the controller's state afterwards.
    pub fn process_admin(&self) -> CtrlState {
        let inner = &self.0;
        if inner.state() == CtrlState::Failed {
            return CtrlState::Failed;
        }
        if inner.opts.release_on_removal && inner.bus.removal_requested() {
            self.fail("the device is being removed (hot-unplug request)");
            return CtrlState::Failed;
        }
        let csts = inner.csts();
        if csts.is_all_ones() {
            self.fail("registers read all ones: the device was removed");
            return CtrlState::Failed;
        }
        if inner.fail_flag.load(Ordering::Acquire) {
            let reason = lock(&inner.failure_requested).take().unwrap_or_default();
            inner.fail(reason);
            return CtrlState::Failed;
        }
        if csts.cfs() {
            // Controller Fatal Status: a reset may bring it back (section 9.5).
            if self.reset().is_err() {
                return CtrlState::Failed;
            }
        }
        let ana_changed = {
            let Ok(mut aq) = inner.admin.try_lock() else {
                return inner.state();
            };
            if let Err(e) = inner.admin_reap(&mut aq, None) {
                drop(aq);
                inner.fail(e.to_string());
                return CtrlState::Failed;
            }
            lock(&inner.events).iter().any(|e| e.is_ana_change())
        };
        if ana_changed && inner.ident.ana_supported() {
            let _ = self.refresh_ana();
        }
        while let Some((qid, cid)) = inner.aborts.pop() {
            match self.abort(qid, cid) {
                Ok(true) => {}
                // Not aborted: it may still complete; if not, the qpair asks for a reset.
                Ok(false) => {}
                Err(_) => inner.reset_wanted.store(true, Ordering::Release),
            }
        }
        if inner.reset_wanted.swap(false, Ordering::AcqRel) {
            let _ = self.reset();
        }
        inner.state()
    }

    /// Orderly shutdown (CC.SHN normal, section 3.6.1). Queue pairs should be dropped
    /// first; any left are failed.
    pub fn shutdown(&self) -> Result<()> {
        let inner = &self.0;
        if inner.state() == CtrlState::Failed {
            return Ok(());
        }
        let mut aq = lock(&inner.admin);
        // Queue pairs still alive lose their queues first (see `fail`).
        inner.delete_all_io_queues(&mut aq);
        let cc = Cc(inner.regs().read32(regs::CC));
        inner.regs().write32(regs::CC, cc.with_shn(1).0);
        let start = Instant::now();
        let timeout = Duration::from_millis(inner.cap.timeout_ms().max(1000));
        loop {
            let csts = inner.csts();
            if csts.shst() == 2 || csts.is_all_ones() || start.elapsed() > timeout {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        drop(aq);
        inner.fail("controller shut down".into());
        Ok(())
    }
}

impl Drop for CtrlInner {
    fn drop(&mut self) {
        // The last queue pair is gone; stop the device before its queues' memory is
        // unmapped, so it cannot DMA into memory that is being reused.
        if self.state() != CtrlState::Failed && !self.csts().is_all_ones() {
            let _ = self.disable();
        }
    }
}

impl CtrlInner {
    fn read_ana_log(&self, aq: &mut AdminQueue) -> Result<AnaLog> {
        // Header, one descriptor per group, one NSID per namespace.
        let groups = self.ident.nanagrpid.clamp(1, 64) as usize;
        let len =
            (16 + groups * 32 + self.ident.nn.min(1024) as usize * 4).min(2 * PAGE_SIZE as usize);
        let d = self.get_log(aq, log_id::ANA, 0, len)?;
        AnaLog::parse(&d).map_err(|e| Error::Parse(e, self.name.clone()))
    }
}
