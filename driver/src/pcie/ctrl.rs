// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The controller's transport over PCIe ([`PcieCtrl`], a [`CtrlTransport`]): the
//! properties are BAR0, the queues live in host memory and are registered with the
//! device through registers (the admin queue: AQA, ASQ, ACQ) and admin commands (the
//! I/O queues: Create and Delete I/O CQ/SQ). What NVMe/TCP does instead at each step
//! is in [`CtrlTransport`]'s documentation.

use super::shadow::ShadowDoorbells;
use super::{PcieQueue, RingConfig};
use crate::bus::Bus;
use crate::dma::{DmaMapper, DmaPool, Iova};
use crate::error::{Error, Result};
use crate::lock;
use crate::prp::{self, PAGE_SIZE};
use crate::regs::{self, Aqa, Cap};
use crate::spec::{admin_opc, Sqe, CQE_SIZE, SQE_SIZE};
use crate::transport::{AdminCommands, CtrlTransport, Enabled, IoQueueSpec, QueueTransport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Admin queue entries, SQ and CQ alike.
const ADMIN_ENTRIES: u16 = 32;

/// Where a queue lives for the device: what AQA/ASQ/ACQ or Create I/O CQ/SQ need,
/// kept so the queue can be registered again after each reset.
#[derive(Debug, Clone, Copy)]
struct QueueSite {
    sq_entries: u16,
    /// Completion queue entries: larger than the SQ when the controller allows, so
    /// the CQ head doorbell can be written lazily (see [`super::ring`]).
    cq_entries: u16,
    sq_iova: Iova,
    cq_iova: Iova,
}

/// Shadow doorbells (`super::shadow`) for a controller's I/O queues.
#[derive(Debug)]
enum Shadow {
    /// Not decided: the controller was not enabled yet.
    Undecided,
    /// The controller took Doorbell Buffer Config with these pages.
    Taken(ShadowDoorbells),
    /// Not wanted, not offered, or refused: the I/O queues write their registers.
    Unused,
}

/// A controller on a PCIe function (VFIO, or the software controller): its
/// registers in BAR0, its queues in host memory.
#[derive(Debug)]
pub struct PcieCtrl {
    bus: Arc<dyn Bus>,
    /// The queues made so far, by queue identifier (0: the admin queue). A queue
    /// identifier made again (a new queue pair after a dropped one) replaces its
    /// record; the controller connects only queues of live queue pairs.
    sites: Mutex<HashMap<u16, QueueSite>>,
    shadow: Mutex<Shadow>,
}

impl PcieCtrl {
    /// The controller on `bus`.
    pub fn new(bus: Arc<dyn Bus>) -> PcieCtrl {
        PcieCtrl {
            bus,
            sites: Mutex::new(HashMap::new()),
            shadow: Mutex::new(Shadow::Undecided),
        }
    }

    fn site(&self, qid: u16) -> Result<QueueSite> {
        lock(&self.sites).get(&qid).copied().ok_or_else(|| {
            Error::InvalidArgument(format!("{}: queue {qid} was never made", self.bus.name()))
        })
    }

    /// A queue over `cfg`'s memory, recorded for registering it with the device.
    fn queue(
        &self,
        pool: &DmaPool,
        cap: Cap,
        cfg: RingConfig,
        sgl: bool,
        pages: usize,
    ) -> Result<QueueTransport> {
        let (qid, site) = (
            cfg.qid,
            QueueSite {
                sq_entries: cfg.sq_entries,
                cq_entries: cfg.cq_entries,
                sq_iova: cfg.sq.iova(),
                cq_iova: cfg.cq.iova(),
            },
        );
        let queue = PcieQueue::new(
            self.bus.bar0(),
            self.bus.name(),
            cap.dstrd(),
            pool,
            cfg,
            sgl,
            pages,
        )?;
        lock(&self.sites).insert(qid, site);
        Ok(QueueTransport::Pcie(queue))
    }
}

impl CtrlTransport for PcieCtrl {
    fn name(&self) -> &str {
        self.bus.name()
    }

    fn mapper(&self) -> Arc<dyn DmaMapper> {
        self.bus.mapper()
    }

    fn get_property32(&self, off: usize) -> Result<u32> {
        Ok(self.bus.bar0().read32(off))
    }

    fn get_property64(&self, off: usize) -> Result<u64> {
        Ok(self.bus.bar0().read64(off))
    }

    fn set_property32(&self, off: usize, v: u32) -> Result<()> {
        self.bus.bar0().write32(off, v);
        Ok(())
    }

    /// Its data is described with PRPs; one descriptor page serves the one data
    /// command the admin queue has at a time (tracker 0).
    fn admin_queue(&self, pool: &DmaPool, cap: Cap) -> Result<QueueTransport> {
        let cfg = RingConfig {
            qid: 0,
            sq: pool.alloc(ADMIN_ENTRIES as usize * SQE_SIZE)?,
            cq: pool.alloc(ADMIN_ENTRIES as usize * CQE_SIZE)?,
            sq_entries: ADMIN_ENTRIES,
            cq_entries: ADMIN_ENTRIES,
            // Any number of late completions may come: with this bound the CQ head
            // doorbell is written whenever one was consumed.
            in_flight_max: ADMIN_ENTRIES as usize - 1,
            // The admin queue keeps its registers (see `super::shadow`).
            shadow: None,
        };
        self.queue(pool, cap, cfg, false, 1)
    }

    fn after_enable(
        &self,
        admin: &mut dyn AdminCommands,
        pool: &DmaPool,
        enabled: &Enabled,
        timeout: Duration,
    ) -> Result<()> {
        let mut shadow = lock(&self.shadow);
        match &*shadow {
            Shadow::Undecided => {
                let pages = if enabled.shadow_doorbells {
                    ShadowDoorbells::new(pool, enabled.cap.dstrd(), enabled.io_queues)?
                } else {
                    None
                };
                // A controller that refuses the command keeps its registers.
                *shadow = match pages.filter(|p| admin.command(p.config_command(), timeout).is_ok())
                {
                    Some(p) => Shadow::Taken(p),
                    None => Shadow::Unused,
                };
            }
            // A reset forgets the configuration. A controller that took it before and
            // refuses it now fails: its I/O queues would wait on EventIdx values
            // nobody writes.
            Shadow::Taken(p) => {
                admin.command(p.config_command(), timeout)?;
            }
            Shadow::Unused => {}
        }
        Ok(())
    }

    fn uses_shadow_doorbells(&self) -> bool {
        matches!(*lock(&self.shadow), Shadow::Taken(_))
    }

    fn connect_admin_queue(&self) -> Result<()> {
        let s = self.site(0)?;
        let bar = self.bus.bar0();
        bar.write32(
            regs::AQA,
            Aqa::new(s.sq_entries as u32, s.cq_entries as u32).0,
        );
        bar.write64(regs::ASQ, s.sq_iova.0);
        bar.write64(regs::ACQ, s.cq_iova.0);
        Ok(())
    }

    fn io_queue(&self, pool: &DmaPool, spec: &IoQueueSpec) -> Result<QueueTransport> {
        let mqes = spec.cap.mqes_entries().min(u16::MAX as u32);
        debug_assert!((2..=mqes).contains(&(spec.entries as u32)));
        // A CQ twice the SQ's size (within MQES) lets the queue pair write the CQ head
        // doorbell once per many completions instead of once per poll.
        let cq_entries = (spec.entries as u32 * 2).min(mqes) as u16;
        let cfg = RingConfig {
            qid: spec.qid,
            sq: pool.alloc(spec.entries as usize * SQE_SIZE)?,
            cq: pool.alloc(cq_entries as usize * CQE_SIZE)?,
            sq_entries: spec.entries,
            cq_entries,
            // One slot stays empty: a full SQ is tail + 1 == head (section 4.1).
            in_flight_max: spec.entries as usize - 1,
            shadow: match &*lock(&self.shadow) {
                Shadow::Taken(p) => Some(p.slots(spec.qid)),
                _ => None,
            },
        };
        let pages = cfg.in_flight_max;
        self.queue(pool, spec.cap, cfg, spec.sgl, pages)
    }

    fn connect_io_queue(
        &self,
        admin: &mut dyn AdminCommands,
        qid: u16,
        timeout: Duration,
    ) -> Result<()> {
        let s = self.site(qid)?;
        // Create I/O Completion Queue (section 5.4): physically contiguous, no
        // interrupts (IEN = 0), as we poll.
        let mut cq = Sqe::new(admin_opc::CREATE_IO_CQ);
        cq.prp1 = s.cq_iova.0;
        cq.cdw10 = (s.cq_entries as u32 - 1) << 16 | qid as u32;
        cq.cdw11 = 1; // PC
        admin.command(cq, timeout)?;
        // Create I/O Submission Queue (section 5.5), bound to the CQ of the same id.
        let mut sq = Sqe::new(admin_opc::CREATE_IO_SQ);
        sq.prp1 = s.sq_iova.0;
        sq.cdw10 = (s.sq_entries as u32 - 1) << 16 | qid as u32;
        sq.cdw11 = (qid as u32) << 16 | 1; // CQID, PC
        admin.command(sq, timeout)?;
        Ok(())
    }

    fn disconnect_io_queue(
        &self,
        admin: &mut dyn AdminCommands,
        qid: u16,
        timeout: Duration,
    ) -> Result<()> {
        // An SQ goes before its CQ (sections 5.6 and 5.7).
        let mut sq = Sqe::new(admin_opc::DELETE_IO_SQ);
        sq.cdw10 = qid as u32;
        admin.command(sq, timeout)?;
        let mut cq = Sqe::new(admin_opc::DELETE_IO_CQ);
        cq.cdw10 = qid as u32;
        admin.command(cq, timeout)?;
        Ok(())
    }

    /// One PRP list page per command, so `MAX_PRP_PAGES - 1` pages fit at any offset
    /// (section 4.1.1).
    fn max_transfer_bytes(&self, mdts: u64) -> u64 {
        mdts.min((prp::MAX_PRP_PAGES - 1) * PAGE_SIZE)
    }

    fn removal_requested(&self) -> bool {
        self.bus.removal_requested()
    }

    fn release(&self) {
        self.bus.release();
    }
}
