// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What a caller chooses when bringing up a controller, and what it learns of each
//! namespace.

use crate::spec::{IdentifyNamespace, NsIdentifiers};

/// Controller options.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// I/O queues to ask for (Number of Queues feature).
    pub io_queues: u16,
    /// Keep an eye on the device's removal request; fail and release on it.
    pub release_on_removal: bool,
    /// How long an admin command may take before it is given up with
    /// [`Error::Timeout`](crate::Error::Timeout) (its late completion, if any, is then
    /// ignored). The Delete I/O queue commands of a reset wait at most 1 s, or this if
    /// shorter.
    pub admin_timeout_ms: u64,
    /// Describe I/O data with SGLs when the controller supports them (Identify
    /// Controller SGLS); `false` forces PRPs, as a controller without SGLs gets. The
    /// admin queue always uses PRPs. SPDK's fio plugin calls its switch `enable_sgl`;
    /// nvme-perf's is `--no-sgl`.
    pub enable_sgl: bool,
    /// The least time [`Controller::shutdown`](crate::Controller::shutdown) waits for
    /// CSTS.SHST = 10b after CC.SHN = 01b; a longer RTD3E from Identify Controller
    /// extends it (up to 60 s). Linux's `shutdown_timeout` module parameter, 5 s.
    pub shutdown_timeout_ms: u64,
    /// [`Controller::shutdown`](crate::Controller::shutdown) leaves out the shutdown
    /// notification (and the flush before it): it only deletes the I/O queues and
    /// disables the controller (CC.EN = 0). SPDK's `no_shn_notification`, set by
    /// `spdk_nvme_perf -N`.
    pub no_shn_notification: bool,
    /// Use shadow doorbells when the controller offers Doorbell Buffer Config (OACS
    /// bit 8; emulated controllers such as QEMU's): I/O queues write their tails and
    /// heads to memory and the doorbell registers only when the controller asks
    /// (`crate::pcie` `shadow`). On by default, as in Linux and SPDK; off, every
    /// batch writes the SQ tail register.
    pub shadow_doorbells: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            io_queues: 64,
            release_on_removal: true,
            admin_timeout_ms: 10_000,
            enable_sgl: true,
            shutdown_timeout_ms: 5_000,
            no_shn_notification: false,
            shadow_doorbells: true,
        }
    }
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
