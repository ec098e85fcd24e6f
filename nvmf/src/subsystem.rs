// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What the target serves: NVM subsystems (NQN, serial, model, who may connect),
//! their namespaces (a bdev each) and the controllers hosts created in them.
//!
//! NVMe over Fabrics uses the dynamic controller model here (NVMe Base 2.0, section
//! 3.1.3): a host's Connect on an admin queue asks for controller ID FFFFh and the
//! target makes a controller, with an ID of its own, for that association; each I/O
//! queue's Connect then names that ID. A controller lives as long as its admin queue's
//! connection (and its keep alive): when that ends, its I/O queues end too.

use nvme_bdev::Bdev;
use nvme_driver::spec::fabrics::{status as fstatus, InvalidParameter};
use nvme_driver::spec::{sct, Status};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One namespace: the bdev that holds its data and the identifiers hosts see.
#[derive(Debug)]
pub struct NsEntry {
    /// Namespace ID.
    pub nsid: u32,
    /// The bdev (the multipath bdev of the config's `Nvme0n1`, typically).
    pub bdev: Bdev,
    /// SPDK's name of the bdev, for messages.
    pub bdev_name: String,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// NGUID: the config's, else the bdev's.
    pub nguid: Option<[u8; 16]>,
    /// UUID: the config's, else the bdev's.
    pub uuid: Option<[u8; 16]>,
}

/// A controller of a subsystem: what its admin queue set and its I/O queues check.
#[derive(Debug)]
pub struct CtrlShared {
    /// Controller ID.
    pub cntlid: u16,
    /// The host that made it (its I/O queues must come from the same host).
    pub hostnqn: String,
    /// Host Identifier from the admin queue's Connect data.
    pub hostid: [u8; 16],
    /// CC.EN is set (I/O queues may connect).
    pub enabled: AtomicBool,
    /// The admin queue is gone or its keep alive expired: I/O queues end.
    pub dead: AtomicBool,
    /// I/O queues granted by Set Features Number of Queues (0: not asked yet).
    pub io_queues: AtomicU16,
}

/// One NVM subsystem.
#[derive(Debug)]
pub struct Subsystem {
    /// Subsystem NQN.
    pub nqn: String,
    /// Serial number (Identify Controller SN).
    pub serial: String,
    /// Model number (Identify Controller MN).
    pub model: String,
    /// Any host may connect.
    pub allow_any_host: bool,
    /// Host NQNs allowed to connect (when not `allow_any_host`).
    pub hosts: Vec<String>,
    /// Namespaces, by ascending NSID.
    pub namespaces: Vec<NsEntry>,
    /// `c2h_success` of the TCP transport.
    pub c2h_success: bool,
    ctrls: Mutex<Vec<Arc<CtrlShared>>>,
    next_cntlid: AtomicU16,
}

/// The highest controller ID of the dynamic model (FFF0h and up are reserved).
const CNTLID_MAX: u16 = 0xffef;

/// Connect Invalid Parameters naming a field of the Connect data (section 6.3).
pub fn invalid_data_field(offset: u16) -> (Status, u32) {
    (
        Status::new(sct::COMMAND_SPECIFIC, fstatus::INVALID_PARAMETERS, true),
        InvalidParameter {
            in_data: true,
            offset,
        }
        .to_dw0(),
    )
}

/// Connect Invalid Parameters naming a field of the command.
pub fn invalid_cmd_field(offset: u16) -> (Status, u32) {
    (
        Status::new(sct::COMMAND_SPECIFIC, fstatus::INVALID_PARAMETERS, true),
        InvalidParameter {
            in_data: false,
            offset,
        }
        .to_dw0(),
    )
}

impl Subsystem {
    /// A subsystem with its namespaces sorted by NSID.
    pub fn new(
        nqn: String,
        serial: String,
        model: String,
        allow_any_host: bool,
        hosts: Vec<String>,
        mut namespaces: Vec<NsEntry>,
        c2h_success: bool,
    ) -> Subsystem {
        namespaces.sort_by_key(|n| n.nsid);
        Subsystem {
            nqn,
            serial,
            model,
            allow_any_host,
            hosts,
            namespaces,
            c2h_success,
            ctrls: Mutex::new(Vec::new()),
            next_cntlid: AtomicU16::new(1),
        }
    }

    /// The namespace `nsid`, and its index.
    pub fn ns(&self, nsid: u32) -> Option<(usize, &NsEntry)> {
        self.namespaces
            .iter()
            .enumerate()
            .find(|(_, n)| n.nsid == nsid)
    }

    /// The highest NSID (Identify Controller NN).
    pub fn nn(&self) -> u32 {
        self.namespaces.last().map_or(0, |n| n.nsid)
    }

    /// May `hostnqn` connect (section 6.3: Connect Invalid Host otherwise)?
    pub fn admits(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.iter().any(|h| h == hostnqn)
    }

    /// A new controller for `hostnqn` (an admin queue's Connect).
    pub fn create_ctrl(&self, hostnqn: &str, hostid: [u8; 16]) -> Option<Arc<CtrlShared>> {
        let mut ctrls = self.ctrls.lock().unwrap_or_else(|p| p.into_inner());
        ctrls.retain(|c| !c.dead.load(Ordering::Acquire));
        // The next ID not in use, wrapping within 1..=CNTLID_MAX.
        for _ in 0..CNTLID_MAX {
            let id = self.next_cntlid.fetch_add(1, Ordering::Relaxed);
            let id = (id.wrapping_sub(1) % CNTLID_MAX) + 1;
            if ctrls.iter().all(|c| c.cntlid != id) {
                let c = Arc::new(CtrlShared {
                    cntlid: id,
                    hostnqn: hostnqn.to_string(),
                    hostid,
                    enabled: AtomicBool::new(false),
                    dead: AtomicBool::new(false),
                    io_queues: AtomicU16::new(0),
                });
                ctrls.push(c.clone());
                return Some(c);
            }
        }
        None
    }

    /// The live controller `cntlid` (an I/O queue's Connect).
    pub fn find_ctrl(&self, cntlid: u16) -> Option<Arc<CtrlShared>> {
        let ctrls = self.ctrls.lock().unwrap_or_else(|p| p.into_inner());
        ctrls
            .iter()
            .find(|c| c.cntlid == cntlid && !c.dead.load(Ordering::Acquire))
            .cloned()
    }
}
