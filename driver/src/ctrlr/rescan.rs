// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Namespaces that change size while attached. A controller reports a change of
//! Identify Namespace data with a Namespace Attribute Changed notice (an Asynchronous
//! Event of type Notice, information 00h, section 5.2, enabled by bit 8 of the
//! Asynchronous Event Configuration feature that `admin.rs` sets) naming log page 04h,
//! the Changed Namespace List (section 5.16.1.5). The housekeeping reads that page
//! (which also clears the notice, so the controller can send the next one),
//! re-identifies the listed namespaces, and publishes new sizes to the queue pairs:
//! the sizes first (`CtrlInner::ns_sizes`), then a new namespace generation in every
//! queue pair's control word, which each owner sees at its next poll and answers by
//! copying the sizes on its own thread (`qpair/namespaces.rs`). The data path takes
//! no lock and follows no shared pointer for it.
//!
//! Only sizes are followed: a namespace that turns inactive, changes its block size
//! (a format) or appears is logged, not taken in.

use super::admin::AdminQueue;
use super::{Controller, CtrlInner};
use crate::error::{Error, Result};
use crate::lock;
use crate::spec::{cns, log_id, ChangedNamespaces, IdentifyNamespace, CHANGED_NS_LIST_SIZE};
use std::sync::atomic::Ordering;

impl Controller {
    /// Re-identifies the namespaces the Changed Namespace List names (every one when
    /// the page cannot be read) and publishes those whose size changed. Failures are
    /// logged: the next notice, or reset, tries again.
    pub(super) fn rescan_namespaces(&self) {
        let mut aq = lock(&self.0.admin);
        let r = self.0.rescan(&mut aq, false);
        self.0.log_rescan(r);
    }
}

impl CtrlInner {
    /// The rescan a reset ends with (under its admin lock, the device just enabled):
    /// every namespace, since the reset ended the Asynchronous Event Requests and with
    /// them any notice not yet delivered (section 5.2). Best effort, as the ANA log
    /// read beside it.
    pub(super) fn rescan_after_reset(&self, aq: &mut AdminQueue) {
        let r = self.rescan(aq, true);
        self.log_rescan(r);
    }

    fn log_rescan(&self, r: Result<Vec<u32>>) {
        match r {
            Ok(changed) if !changed.is_empty() => {
                log::info!("{}: namespaces {changed:?} changed size", self.name);
            }
            Ok(_) => {}
            Err(e) => log::warn!("{}: namespace rescan: {e}", self.name),
        }
    }

    /// Reads the Changed Namespace List (which also lets the controller send its next
    /// notice), re-identifies what it names (every namespace with `all`) and publishes
    /// new sizes; returns the NSIDs whose size changed.
    fn rescan(&self, aq: &mut AdminQueue, all: bool) -> Result<Vec<u32>> {
        // NSID FFFFFFFFh: the page is about the controller, not one namespace.
        let listed = self
            .get_log(aq, log_id::CHANGED_NS_LIST, u32::MAX, CHANGED_NS_LIST_SIZE)
            .and_then(|d| {
                ChangedNamespaces::parse(&d).map_err(|e| Error::Parse(e, self.name.clone()))
            });
        let changed_list = match listed {
            _ if all => ChangedNamespaces::All,
            Ok(l) => l,
            Err(e) => {
                log::warn!(
                    "{}: changed namespace list not read ({e}); re-identifying every namespace",
                    self.name
                );
                ChangedNamespaces::All
            }
        };
        let mut resized = Vec::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            if !changed_list.contains(ns.nsid) {
                continue;
            }
            let d = self.identify(aq, cns::NAMESPACE, ns.nsid)?;
            let id =
                IdentifyNamespace::parse(&d).map_err(|e| Error::Parse(e, self.name.clone()))?;
            if id.nsze == 0 {
                log::warn!(
                    "{}: namespace {} is no longer active; its I/O fails at the device",
                    self.name,
                    ns.nsid
                );
                continue;
            }
            if id.block_size() != ns.block_size {
                log::warn!(
                    "{}: namespace {} now has {}-byte blocks, was {}: not followed; detach \
                     and attach the controller again",
                    self.name,
                    ns.nsid,
                    id.block_size(),
                    ns.block_size
                );
                continue;
            }
            if self.ns_sizes[i].swap(id.nsze, Ordering::AcqRel) != id.nsze {
                resized.push(ns.nsid);
            }
        }
        if !resized.is_empty() {
            // Under the admin lock: a queue pair being created now is either in the
            // list (and told) or reads the new sizes when it is made.
            for q in lock(&self.qpairs).iter() {
                q.handshake.namespaces_changed();
            }
            self.ns_changes.fetch_add(1, Ordering::AcqRel);
            // Owners that poll only busy queue pairs look at the idle ones too.
            self.notify_queues();
        }
        Ok(resized)
    }
}
