// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Fault injection knobs and the per-controller ANA state, set by tests while the
//! device runs.

use super::SoftConfig;
use crate::error::{Error, Result};
use crate::spec::{AnaState, Status};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Knobs consumed by the device when it completes commands.
#[derive(Debug, Default)]
pub(super) struct FaultState {
    pub delay_us: u64,
    pub reorder: bool,
    pub drop_io: u32,
    pub drop_admin: u32,
    pub duplicate: u32,
    pub bogus: VecDeque<(u16, u16)>,
    pub corrupt_phase: u32,
    pub corrupt_sq_head: VecDeque<u16>,
    pub fail_io: VecDeque<Status>,
    /// Admin opcode whose completions are kept until released.
    pub keep_admin: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct GroupState {
    pub state: AnaState,
    pub change_count: u64,
}

/// ANA groups as this controller reports them, and the state of the ANA change
/// notice (section 5.2: an event is masked once reported until the host reads its
/// log page).
#[derive(Debug, Default)]
pub(super) struct AnaTable {
    pub change_count: u64,
    pub groups: BTreeMap<u32, GroupState>,
    /// A notice waits for an Asynchronous Event Request.
    pub notice_pending: bool,
    /// A notice was reported and the host has not read the ANA log since.
    pub notice_masked: bool,
}

/// Fault injection for one software controller. Every knob takes effect at the
/// device's next scan; counts are consumed one command (or completion) at a time.
pub struct Faults {
    state: Mutex<FaultState>,
    ana: Mutex<AnaTable>,
    fatal: AtomicBool,
    removed: AtomicBool,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("state", &*self.state())
            .field("fatal", &self.is_fatal())
            .field("removed", &self.is_removed())
            .finish()
    }
}

impl Faults {
    pub(super) fn new(config: &SoftConfig) -> Self {
        let mut ana = AnaTable::default();
        for ns in &config.namespaces {
            ana.groups.entry(ns.anagrpid()).or_insert(GroupState {
                state: AnaState::Optimized,
                change_count: 0,
            });
        }
        Faults {
            state: Mutex::new(FaultState::default()),
            ana: Mutex::new(ana),
            fatal: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn ana(&self) -> MutexGuard<'_, AnaTable> {
        self.ana.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds every completion for `us` microseconds before posting it (0 turns
    /// this off). Asynchronous Event Requests are not delayed.
    pub fn set_completion_delay_us(&self, us: u64) {
        self.state().delay_us = us;
    }

    /// Posts the completions the device produces in one scan in reverse order
    /// (commands fetched together complete out of order).
    pub fn set_reorder(&self, on: bool) {
        self.state().reorder = on;
    }

    /// Executes the next `count` I/O commands but holds their completions forever,
    /// so host timeouts fire. A held command completes with Command Abort Requested
    /// when the host aborts it, with Aborted SQ Deletion when its SQ is deleted, and
    /// never when the controller is reset (as QEMU does).
    pub fn drop_io_completions(&self, count: u32) {
        self.state().drop_io = count;
    }

    /// As [`Faults::drop_io_completions`], for admin commands other than Abort and
    /// Asynchronous Event Request.
    pub fn drop_admin_completions(&self, count: u32) {
        self.state().drop_admin = count;
    }

    /// Executes admin commands with opcode `opc` but keeps their completions until
    /// [`Faults::release_admin_completions`], which posts them in order: an admin wait
    /// held open for as long as a test needs, then answered (unlike
    /// [`Faults::drop_admin_completions`], whose commands end only by an Abort, a
    /// queue deletion or a timeout). For example, a controller reset parked on its Set
    /// Features (Number of Queues, section 5.27.1.5) after it disabled the device,
    /// while its queue pairs are held. One opcode at a time; Abort and Asynchronous
    /// Event Request are never kept. A controller reset (CC.EN 1 to 0) discards kept
    /// completions without posting them, as it does every command in flight.
    pub fn keep_admin_completions(&self, opc: u8) {
        self.state().keep_admin = Some(opc);
    }

    /// Ends [`Faults::keep_admin_completions`]: the kept completions are posted at the
    /// device's next scan, in the order their commands ran.
    pub fn release_admin_completions(&self) {
        self.state().keep_admin = None;
    }

    /// Posts the next completion twice.
    pub fn duplicate_next_completion(&self) {
        self.state().duplicate += 1;
    }

    /// Posts a completion for command identifier `cid` on completion queue `cqid`
    /// at the next scan, for a command that was never submitted (or is not in
    /// flight). Ignored if the queue does not exist.
    pub fn post_bogus_completion(&self, cqid: u16, cid: u16) {
        self.state().bogus.push_back((cqid, cid));
    }

    /// Posts the next completion with the wrong phase tag: the host sees no new
    /// entry there until the queue wraps, as if the completion were lost.
    pub fn corrupt_next_phase(&self) {
        self.state().corrupt_phase += 1;
    }

    /// Posts the next completion with `sq_head` as its SQ head pointer.
    pub fn corrupt_next_sq_head(&self, sq_head: u16) {
        self.state().corrupt_sq_head.push_back(sq_head);
    }

    /// Completes the next I/O command (read, write, flush, write zeroes, dataset
    /// management) with `status` instead of executing it; queued, one command each.
    /// For a status with a Command Retry Delay, set its CRD bits (12:11) in `status`.
    pub fn fail_next_io(&self, status: Status) {
        self.state().fail_io.push_back(status);
    }

    /// Turns every knob above off. Commands already held stay held; kept admin
    /// completions are released.
    pub fn clear(&self) {
        *self.state() = FaultState::default();
    }

    /// Sets CSTS.CFS: the controller stops processing commands until the host
    /// resets it (CC.EN 1 to 0 clears the condition).
    pub fn set_fatal(&self) {
        self.fatal.store(true, Ordering::Release);
    }

    /// True while the fatal condition holds.
    pub fn is_fatal(&self) -> bool {
        self.fatal.load(Ordering::Acquire)
    }

    pub(super) fn clear_fatal(&self) {
        self.fatal.store(false, Ordering::Release);
    }

    /// Surprise removal: from the next scan every register reads all ones, the device
    /// stops touching memory, and [`crate::bus::Bus::removal_requested`] is true.
    /// There is no way back.
    pub fn simulate_removal(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// True once removal was simulated.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Sets the state of ANA group `grpid` on this controller (groups are the
    /// namespaces' ANA group IDs; all start Optimized). Bumps the change counts of the
    /// ANA log and raises an ANA change notice (event type 2, information 03h, log
    /// page 0Ch): at once if an Asynchronous Event Request is outstanding, else when
    /// the host posts one. Notices are masked from the moment one is reported until
    /// the host reads the ANA log page, as the specification says.
    pub fn set_ana_state(&self, grpid: u32, state: AnaState) -> Result<()> {
        let mut ana = self.ana();
        let known: Vec<u32> = ana.groups.keys().copied().collect();
        let Some(g) = ana.groups.get_mut(&grpid) else {
            return Err(Error::InvalidArgument(format!(
                "ANA group {grpid} has no namespace on this controller; groups: {known:?}"
            )));
        };
        g.state = state;
        g.change_count += 1;
        ana.change_count += 1;
        if !ana.notice_masked {
            ana.notice_pending = true;
        }
        Ok(())
    }

    /// The state of ANA group `grpid` on this controller.
    pub fn ana_state(&self, grpid: u32) -> Option<AnaState> {
        self.ana().groups.get(&grpid).map(|g| g.state)
    }
}
