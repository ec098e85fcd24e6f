// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Attaching a controller: bring it up, give each namespace a namespace bdev and a
//! path in the multipath bdev of the same namespace (made if none exists yet), start
//! its controller thread. Called by [`BlockLayer::attach`](super::BlockLayer::attach)
//! and by the hot-plug thread (`hotplug.rs`), one attach at a time per layer.

use super::controller::{self, CtrlRecord};
use super::{ns_info, Bdev, Connector, Inner, NsBdev, NvmeQueue};
use crate::mpath::{BdevInfo, Multipath};
use crate::sync::lock_std as lock;
use crate::{Error, Result};
use nvme_driver::{Controller, Namespace};
use std::sync::Arc;

/// Brings up controller `name` through `connector`, creates its bdevs (or joins
/// existing multipath bdevs as a new path) and starts its controller thread. Returns
/// the bdev names involved: per namespace, the namespace bdev then the multipath bdev.
pub(super) fn attach(inner: &Arc<Inner>, name: &str, connector: Connector) -> Result<Vec<String>> {
    // One attach at a time: the name check below and the record's insertion at the
    // end would otherwise let two attaches of one name (the caller's and the hot-plug
    // thread's) both pass.
    let _one_at_a_time = lock(&inner.attaching);
    if lock(&inner.ctrls).iter().any(|c| c.name == name) {
        return Err(Error::DuplicateController(name.to_string()));
    }
    let (ctrl, space) = controller::connect(inner, &connector)?;
    let record = Arc::new(CtrlRecord::new(name, connector, ctrl.clone(), space));
    let mut names = Vec::new();
    let mut attach_namespaces = || -> Result<()> {
        for ns in &ctrl.namespaces() {
            let nsb = NsBdev {
                info: ns_info(&ctrl, ns, format!("{name}n{}", ns.nsid)),
                nsid: ns.nsid,
                ctrl: record.clone(),
                qpair: inner.opts.qpair,
                iostat: Default::default(),
                num_blocks: Arc::new(ns.nsze.into()),
            };
            names.push(nsb.info.name.clone());
            let mp = multipath_for(inner, &ctrl, ns)?;
            names.push(mp.info().name.clone());
            controller::add_path(inner, &record, &mp, &ctrl, ns.nsid)?;
            lock(&inner.bdevs).push(Bdev::Nvme(Arc::new(nsb)));
        }
        record.start_thread(inner.clone())
    };
    if let Err(e) = attach_namespaces() {
        // Nothing of it stays behind: its paths, its namespace bdevs, its mapping.
        controller::stop(inner, &record, controller::StopMode::Detach);
        return Err(e);
    }
    lock(&inner.ctrls).push(record);
    // Per namespace: the namespace bdev, then the multipath bdev.
    let (ns_bdevs, mp_bdevs) = names
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .unzip();
    inner.events.attached(name, ns_bdevs, mp_bdevs);
    Ok(names)
}

/// The multipath bdev of namespace `ns` through `ctrl`: an existing one of the same
/// namespace (same subsystem NQN and NGUID, EUI-64 or UUID; or, for a shared namespace
/// without identifiers, same subsystem NQN and NSID), or a new one.
fn multipath_for(
    inner: &Inner,
    ctrl: &Controller,
    ns: &Namespace,
) -> Result<Arc<Multipath<NvmeQueue>>> {
    let subnqn = &ctrl.identify().subnqn;
    let probe = ns_info(ctrl, ns, String::new());
    let has_id = probe.nguid.is_some() || probe.eui64.is_some() || probe.uuid.is_some();
    // A shared namespace (NMIC bit 0) without identifiers (QEMU's by default): in
    // one NVM subsystem an NSID names the same namespace through every
    // controller, so subsystem NQN and NSID identify it (as Linux does).
    let shared_name = (!has_id && ns.id.nmic & 1 == 1 && !subnqn.is_empty())
        .then(|| format!("{subnqn}:n{}", ns.nsid));
    let mut g = lock(&inner.bdevs);
    for b in g.iter() {
        if let Bdev::Mpath(m) = b {
            let same = m.info().same_namespace(&probe)
                || shared_name.as_deref().is_some_and(|n| {
                    n == m.info().name
                        && m.info().nguid.is_none()
                        && m.info().eui64.is_none()
                        && m.info().uuid.is_none()
                });
            if same {
                if m.info().block_size != probe.block_size || m.num_blocks() != probe.num_blocks {
                    return Err(Error::PathMismatch(format!(
                        "{}: namespace {} has {} blocks of {} bytes through {}, {} of {} elsewhere",
                        m.info().name,
                        ns.nsid,
                        probe.num_blocks,
                        probe.block_size,
                        ctrl.name(),
                        m.num_blocks(),
                        m.info().block_size
                    )));
                }
                return Ok(m.clone());
            }
        }
    }
    let name = if has_id {
        format!("{subnqn}:n{}", ns.nsid)
    } else if let Some(n) = shared_name {
        n
    } else {
        format!("{}n{}:mp", ctrl.name(), ns.nsid)
    };
    let mp = Multipath::new(
        BdevInfo { name, ..probe },
        inner.opts.mpath,
        ctrl.identify().anatt,
        inner.qsbr.clone(),
    )?;
    mp.set_events(inner.events.clone());
    g.push(Bdev::Mpath(mp.clone()));
    Ok(mp)
}
