// SPDX-License-Identifier: GPL-2.0-only
//! fio ioengines over the driver and the block layer, drop-ins for SPDK's fio plugins.
//!
//! - `spdk` (SPDK's `app/fio/nvme`): each file is an NVMe namespace named by an SPDK
//!   transport ID, `trtype=PCIe traddr=0000.01.00.0 ns=1`; each fio thread gets one
//!   queue pair per file (a namespace bdev channel), polled in `getevents`.
//! - `spdk_bdev` (SPDK's `app/fio/bdev`): each file is a bdev of an SPDK-style JSON
//!   config (`spdk_json_conf`), `Nvme0n1` for controller `Nvme0`; I/O goes through the
//!   multipath bdev, so fio drives failover.
//!
//! Both share one [`nvme_bdev::BlockLayer`] per process: controllers are attached once,
//! keyed by their transport ID or config name, and its controller threads do the admin
//! work (async events, timeouts, hot-remove, reconnects). I/O buffers come from the
//! layer (`iomem_alloc`), so they are mapped into every controller a job touches.
//!
//! fio's side (its structs, options and hooks) is C in `glue.c`, compiled against the
//! fio source tree of the fio that loads the library; [`ffi`] is what it calls.

mod engine;
pub mod ffi;
pub mod filename;
mod log;

pub use engine::{attach_bus, Kind, Thread};

/// The fio version and ioengine interface version this library was built against.
pub const BUILT_FIO_VERSION: &str = env!("NVME_FIO_BUILT_FIO_VERSION");
/// `FIO_IOOPS_VERSION` of the fio source tree the glue was compiled against.
pub const BUILT_IOOPS_VERSION: &str = env!("NVME_FIO_BUILT_IOOPS_VERSION");

/// The message for a fio of another version than the one built against, or `None`
/// when `running` (the loading fio's `fio_version_string`) matches.
pub fn loader_mismatch(running: Option<&str>) -> Option<String> {
    let running = running?;
    if running == BUILT_FIO_VERSION {
        return None;
    }
    Some(format!(
        "nvme-fio: this engine was built against {BUILT_FIO_VERSION} (ioengine interface version \
         {BUILT_IOOPS_VERSION}) but is loaded by {running}; the two do not share struct layouts. \
         Rebuild it against the running fio's source: FIO_SOURCE_DIR=/path/to/{running}-source \
         cargo build --release -p nvme-fio (without FIO_SOURCE_DIR the build fetches the \
         installed Debian fio's source with tools/fio/fio-source)"
    ))
}
