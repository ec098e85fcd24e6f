// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Finding and opening the controllers a tool was pointed at: the `-r` transport IDs,
//! or else every NVMe controller bound to vfio-pci (as spdk_nvme_perf probes every
//! controller it can).

use crate::trid::TransportId;
use crate::{usage, UsageError};
use nvme_driver::{Controller, ControllerOptions};
use std::sync::Arc;

/// A controller and the namespaces a tool should use on it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The controller.
    pub ctrl: Controller,
    /// Selected NSIDs, in order.
    pub nsids: Vec<u32>,
}

/// Controllers to open: PCI address and the namespaces asked for (`None`: all).
pub type Wanted = Vec<(String, Option<Vec<u32>>)>;

/// Merges transport IDs by controller, keeping the order they were given in. A
/// controller named once without `ns` gets every namespace.
pub fn merge_trids(trids: &[TransportId]) -> Wanted {
    let mut out: Wanted = Vec::new();
    for t in trids {
        let pos = match out.iter().position(|(a, _)| *a == t.traddr) {
            Some(p) => p,
            None => {
                out.push((t.traddr.clone(), Some(Vec::new())));
                out.len() - 1
            }
        };
        match (&mut out[pos].1, t.nsid) {
            (Some(list), Some(ns)) => {
                if !list.contains(&ns) {
                    list.push(ns)
                }
            }
            (slot, None) => *slot = None,
            (None, Some(_)) => {}
        }
    }
    out
}

/// What to open: the transport IDs given, or every NVMe controller bound to
/// vfio-pci. `note` receives a line saying which were chosen when none was named.
pub fn resolve(trids: &[TransportId], note: &mut dyn FnMut(String)) -> Result<Wanted, String> {
    if !trids.is_empty() {
        return Ok(merge_trids(trids));
    }
    let all = nvme_driver::vfio::list_nvme_controllers();
    let bound: Vec<_> = all
        .iter()
        .filter(|c| c.driver.as_deref() == Some("vfio-pci"))
        .collect();
    if bound.is_empty() {
        let others = if all.is_empty() {
            "no NVMe controller was found on the PCI bus".to_string()
        } else {
            format!(
                "found {}",
                all.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(format!(
            "no NVMe controller is bound to vfio-pci ({others}); bind one with `nvme-setup bind` or name one with -r"
        ));
    }
    note(format!(
        "No -r given: using every NVMe controller bound to vfio-pci: {}",
        bound
            .iter()
            .map(|c| c.bdf.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(bound.iter().map(|c| (c.bdf.clone(), None)).collect())
}

/// `-b`: keeps the controllers at the `allowed` PCI addresses (full form). With no
/// `-r`, the allowed controllers are the ones to open (every namespace); with `-r`,
/// a transport ID outside the list is dropped. Empty `allowed`: no filter.
pub fn allow(
    trids: &[TransportId],
    allowed: &[String],
    note: &mut dyn FnMut(String),
) -> Result<Wanted, String> {
    if allowed.is_empty() {
        return resolve(trids, note);
    }
    if trids.is_empty() {
        return Ok(allowed.iter().map(|a| (a.clone(), None)).collect());
    }
    let mut wanted = merge_trids(trids);
    for (bdf, _) in &wanted {
        if !allowed.contains(bdf) {
            note(format!("-r traddr:{bdf} is not allowed by -b: skipped"));
        }
    }
    wanted.retain(|(bdf, _)| allowed.contains(bdf));
    if wanted.is_empty() {
        return Err(format!(
            "no controller is left: -r names none of the -b addresses ({})",
            allowed.join(", ")
        ));
    }
    Ok(wanted)
}

/// Opens the controllers through VFIO and selects their namespaces. A namespace that
/// does not exist is a usage error; anything else the device or system refuses is a
/// device error.
pub fn open_pcie(wanted: &Wanted, opts: &ControllerOptions) -> Result<Vec<Target>, OpenError> {
    let mut out = Vec::new();
    for (bdf, nsids) in wanted {
        let bus =
            nvme_driver::vfio::VfioBus::open(bdf).map_err(|e| OpenError::Device(e.to_string()))?;
        let ctrl = Controller::init(bus as Arc<dyn nvme_driver::bus::Bus>, opts.clone())
            .map_err(|e| OpenError::Device(e.to_string()))?;
        out.push(select(ctrl, nsids.as_deref())?);
    }
    Ok(out)
}

/// Why controllers could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The user named something that does not exist (exit 2).
    Usage(UsageError),
    /// The device or the system failed (exit 1).
    Device(String),
}

impl From<UsageError> for OpenError {
    fn from(e: UsageError) -> Self {
        OpenError::Usage(e)
    }
}

/// Picks namespaces of an initialized controller: those named, or all active ones.
pub fn select(ctrl: Controller, nsids: Option<&[u32]>) -> Result<Target, UsageError> {
    let active: Vec<u32> = ctrl.namespaces().iter().map(|n| n.nsid).collect();
    let nsids = match nsids {
        None => active.clone(),
        Some(list) => {
            for ns in list {
                if !active.contains(ns) {
                    return Err(usage!(
                        "-r ... ns:{ns}: {} has no active namespace {ns} (active: {:?})",
                        ctrl.name(),
                        active
                    ));
                }
            }
            list.to_vec()
        }
    };
    Ok(Target { ctrl, nsids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trids_merge_by_controller() {
        let t = |s: &str| TransportId::parse(s).unwrap();
        let w = merge_trids(&[
            t("traddr:01:00.0 ns:2"),
            t("traddr:02:00.0"),
            t("traddr:01:00.0 ns:1"),
            t("traddr:01:00.0 ns:2"),
            t("traddr:02:00.0 ns:3"),
        ]);
        assert_eq!(
            w,
            vec![
                ("0000:01:00.0".to_string(), Some(vec![2, 1])),
                ("0000:02:00.0".to_string(), None),
            ]
        );
    }

    #[test]
    fn allowed_addresses_filter_or_choose() {
        let t = |s: &str| TransportId::parse(s).unwrap();
        let a = vec!["0000:02:00.0".to_string()];
        let mut notes = Vec::new();
        let w = allow(&[], &a, &mut |s| notes.push(s)).unwrap();
        assert_eq!(w, vec![("0000:02:00.0".to_string(), None)]);
        let w = allow(
            &[t("traddr:01:00.0"), t("traddr:02:00.0 ns:1")],
            &a,
            &mut |s| notes.push(s),
        )
        .unwrap();
        assert_eq!(w, vec![("0000:02:00.0".to_string(), Some(vec![1]))]);
        assert_eq!(
            notes,
            ["-r traddr:0000:01:00.0 is not allowed by -b: skipped"]
        );
        let e = allow(&[t("traddr:01:00.0")], &a, &mut |_| {}).unwrap_err();
        assert!(
            e.contains("-r names none of the -b addresses (0000:02:00.0)"),
            "{e}"
        );
    }
}
