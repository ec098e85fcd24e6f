// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Bring-up (section 3.5.1, "Controller Initialization"): the registers checked, the
//! admin queue programmed, the controller enabled, identified, and given its queues.

use super::admin::{AdminQueue, AdminSession};
use super::{Controller, ControllerOptions, CtrlInner, CtrlState, Namespace};
use crate::bus::Bus;
use crate::control::AtomicCtrlState;
use crate::dma::DmaPool;
use crate::error::{Error, Result};
use crate::lock;
use crate::prp::PAGE_SIZE;
use crate::regs::{self, Cap, Cc, Vs};
use crate::spec::{cns, IdentifyController, IdentifyNamespace, IDENTIFY_SIZE};
use crate::transport::{CtrlTransport, Enabled};
use crossbeam_queue::ArrayQueue;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

impl CtrlInner {
    pub(super) fn wait_rdy(&self, want: bool, what: &str) -> Result<()> {
        let timeout = Duration::from_millis(self.cap.timeout_ms().max(500));
        let start = Instant::now();
        loop {
            let csts = self.csts()?;
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

    pub(super) fn disable(&self) -> Result<()> {
        let cc = Cc(self.transport.get_property32(regs::CC)?);
        if cc.en() {
            self.transport
                .set_property32(regs::CC, cc.with_en(false).0)?;
        }
        self.wait_rdy(false, "CSTS.RDY to clear after disabling (CC.EN = 0)")
    }

    /// The transport's set-up after an enable that granted `io_queues` I/O queues
    /// (PCIe: shadow doorbells), on the admin queue.
    pub(super) fn after_enable(
        &self,
        aq: &mut AdminQueue,
        ident: &IdentifyController,
        io_queues: u16,
    ) -> Result<()> {
        let enabled = Enabled {
            cap: self.cap,
            io_queues,
            shadow_doorbells: self.opts.shadow_doorbells && ident.dbbuf_supported(),
        };
        let timeout = self.admin_timeout();
        let mut admin = AdminSession { ctrl: self, aq };
        self.transport
            .after_enable(&mut admin, &self.pool, &enabled, timeout)
    }

    /// Programs the admin queue and enables the controller (section 3.5.1, steps 1-7).
    pub(super) fn enable(&self, aq: &mut AdminQueue) -> Result<()> {
        // The controller is disabled, so the device does not access the admin queues.
        aq.rewind();
        self.transport.connect_admin_queue()?;
        let cc = Cc::default()
            .with_mps_shift(12)
            .with_entry_sizes(6, 4)
            .with_en(true);
        self.transport.set_property32(regs::CC, cc.0)?;
        self.wait_rdy(true, "CSTS.RDY after enabling (CC.EN = 1)")
    }
}

impl Controller {
    /// Brings up the PCIe controller on `bus` (VFIO, or the software controller):
    /// [`attach`](Self::attach) over [`crate::pcie::PcieCtrl`].
    pub fn init(bus: Arc<dyn Bus>, opts: ControllerOptions) -> Result<Controller> {
        Self::attach(crate::transport::pcie(bus), opts)
    }

    /// Brings up the controller `transport` reaches (section 3.5.1): disable, admin
    /// queue, enable, Identify Controller, the active namespaces, Number of Queues,
    /// async event configuration and requests, and the ANA log where supported.
    pub fn attach(
        transport: Arc<dyn CtrlTransport>,
        opts: ControllerOptions,
    ) -> Result<Controller> {
        let name = transport.name().to_string();
        let cap = Cap(transport.get_property64(regs::CAP)?);
        let vs = Vs(transport.get_property32(regs::VS)?);
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
        let pool = DmaPool::new(&name, transport.mapper())?;
        let admin_transport = transport.admin_queue(&pool, cap)?;
        // Two pages of data: identify data, log pages.
        let aq = AdminQueue::new(admin_transport, pool.alloc(2 * PAGE_SIZE as usize)?);
        let mut inner = CtrlInner {
            transport,
            name: name.clone(),
            pool,
            cap,
            vs,
            ident: IdentifyController::parse(&[0; IDENTIFY_SIZE])
                .map_err(|e| Error::Parse(e, name.clone()))?,
            namespaces: Vec::new(),
            ns_sizes: Box::default(),
            ns_rescan: AtomicBool::new(false),
            ns_changes: AtomicU64::new(0),
            max_xfer_bytes: 0,
            io_queues_granted: 0,
            state: AtomicCtrlState::new(CtrlState::Live),
            epoch: AtomicU64::new(0),
            failure: Mutex::new(None),
            failure_requested: Mutex::new(None),
            fail_flag: AtomicBool::new(false),
            reset_wanted: AtomicBool::new(false),
            admin_cancel: AtomicU64::new(0),
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
            inner.after_enable(&mut aq, &ident, granted)?;
            let max_xfer = inner.transport.max_transfer_bytes(mdts) as u32;
            (ident, namespaces, max_xfer, granted)
        };
        inner.ident = ident;
        inner.ns_sizes = namespaces.iter().map(|n| AtomicU64::new(n.nsze)).collect();
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
}
