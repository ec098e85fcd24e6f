// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Everything outside `bdev_nvme_*`: the subsystems `save_config` writes beside `bdev`
//! (scheduler, vmd, sock, iobuf, accel, scsi, nvmf, nbd, iscsi, ...) and
//! `bdev_set_options`. What cannot matter to the block layer is accepted with one note
//! per subsystem; what would change behaviour in a way not supported is refused.

use crate::params::Params;
use crate::Error;

/// Subsystems whose every method is accepted and ignored here, and why.
const IGNORED: &[(&str, &str)] = &[
    ("scheduler", "SPDK's reactor scheduler; the caller's own threads poll here (fio's jobs, a server's reactors) and nothing moves them between cores"),
    ("sock", "socket options for TCP and RDMA transports; every controller here is PCIe"),
    ("iobuf", "SPDK's shared data buffer pools; I/O buffers here come from the block layer's DMA memory"),
    ("accel", "SPDK's acceleration framework; nothing here offloads work to it"),
    ("nvmf", "an NVMe-oF target's configuration (transports, subsystems, namespaces, listeners, hosts); this reader configures the block layer only"),
];

/// Front ends that export bdevs: their global options are ignored, anything that would
/// create an export is refused.
const FRONT_ENDS: &[&str] = &[
    "scsi",
    "nbd",
    "iscsi",
    "vhost_blk",
    "vhost_scsi",
    "ublk",
    "vfu_tgt",
];

/// Methods refused outright, and why.
const REFUSED: &[(&str, &str)] = &[
    ("enable_vmd", "controllers behind an Intel VMD are not reachable here; remove it and attach controllers by their own PCI address"),
    ("vmd_enable", "controllers behind an Intel VMD are not reachable here; remove it and attach controllers by their own PCI address"),
];

/// One entry of subsystem `name` (not `bdev`): refused, or accepted to be ignored.
pub(crate) fn entry(name: &str, p: &Params) -> Result<(), Error> {
    if let Some((_, why)) = REFUSED.iter().find(|(m, _)| *m == p.method) {
        return Err(p.refuse(format!("not supported: {why}")));
    }
    if FRONT_ENDS.contains(&name) && !is_global_option(p.method) {
        return Err(p.refuse(format!(
            "not implemented: the {name} front end (exporting bdevs) does not exist here; remove the entry"
        )));
    }
    Ok(())
}

/// `iscsi_set_options`, `nvmf_set_config`, `ublk_..._set_options`: a front end's
/// global settings, which cannot matter where the front end does not run.
fn is_global_option(method: &str) -> bool {
    method.ends_with("_set_options") || method.ends_with("_set_config")
}

/// The note for a subsystem whose `methods` were accepted and ignored, if any were.
pub(crate) fn note(name: &str, methods: &[&str]) -> Option<String> {
    if methods.is_empty() {
        return None;
    }
    let why = IGNORED
        .iter()
        .find(|(s, _)| *s == name)
        .map(|(_, why)| why.to_string())
        .or_else(|| {
            FRONT_ENDS
                .contains(&name)
                .then(|| format!("global options of the {name} front end, which does not run here"))
        })
        .unwrap_or_else(|| {
            "a subsystem this reader does not know; only bdev configures the block layer".into()
        });
    let mut list: Vec<&str> = methods.to_vec();
    list.dedup();
    Some(format!(
        "subsystem '{name}' ignored ({}): {why}",
        list.join(", ")
    ))
}

/// `bdev_set_options`: SPDK's bdev_io pool and cache sizes and its examine switch.
/// The block layer preallocates each channel's I/O slots (`channel_depth`) and has
/// no examine modules (no GPT, no logical volumes), so none of it can matter.
pub(crate) fn bdev_set_options(p: &Params, notes: &mut Vec<String>) -> Result<(), Error> {
    p.check_rest(
        &[
            "bdev_io_pool_size",
            "bdev_io_cache_size",
            "bdev_auto_examine",
            "small_buf_pool_size",
            "large_buf_pool_size",
        ],
        &[],
    )?;
    notes.push(format!(
        "{}: bdev_set_options ignored: bdev_io pools and examine modules are SPDK's; the block layer preallocates each channel's I/O slots and has no examine modules",
        p.path()
    ));
    Ok(())
}
