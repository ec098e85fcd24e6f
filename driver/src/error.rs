// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The driver's errors. Each names the device and says what to do about it.

use crate::spec::{ParseError, Status};

/// The driver's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors from setting up and driving a controller. NVMe command failures on the
/// data path are not errors: they are a [`Status`] delivered with the completion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A VFIO or PCI setup step failed; `fix` says what the user can do.
    #[error("{device}: {detail}; {fix}")]
    Vfio {
        /// PCI address or device name.
        device: String,
        /// What went wrong.
        detail: String,
        /// What to do about it.
        fix: String,
    },
    /// A system call failed.
    #[error("{device}: {what}: {source}")]
    Io {
        /// PCI address or device name.
        device: String,
        /// The operation.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A wait on the controller passed its deadline.
    #[error("{device}: timed out after {waited_ms} ms waiting for {what} (CSTS {csts:#x}); check the device is present and not failed, or reset it")]
    Timeout {
        /// Device name.
        device: String,
        /// What was awaited.
        what: String,
        /// How long.
        waited_ms: u64,
        /// CSTS at the deadline.
        csts: u32,
    },
    /// The controller has failed (fatal status, removal, or a protocol violation)
    /// and must be recreated.
    #[error("{device}: controller failed: {reason}")]
    ControllerFailed {
        /// Device name.
        device: String,
        /// Why.
        reason: String,
    },
    /// An admin command's wait was ended by [`crate::Controller::cancel_admin_waits`]
    /// (its owner is stopping); the command stays with the device, and a late
    /// completion for it is consumed as stale.
    #[error("{device}: gave up waiting for admin command {opc:#04x} ({what}) after {waited_ms} ms: the controller's owner is stopping")]
    AdminCancelled {
        /// Device name.
        device: String,
        /// Opcode.
        opc: u8,
        /// Command name.
        what: &'static str,
        /// How long it was waited for.
        waited_ms: u64,
    },
    /// An admin command completed with an error status.
    #[error("{device}: admin command {opc:#04x} ({what}) failed: {status}")]
    AdminCommand {
        /// Device name.
        device: String,
        /// Opcode.
        opc: u8,
        /// Command name.
        what: &'static str,
        /// Completion status.
        status: Status,
    },
    /// A namespace that the controller does not have.
    #[error("{device}: namespace {nsid} does not exist; active namespaces: {available:?}")]
    NoSuchNamespace {
        /// Device name.
        device: String,
        /// Requested NSID.
        nsid: u32,
        /// Active NSIDs.
        available: Vec<u32>,
    },
    /// An LBA range beyond the end of the namespace.
    #[error("namespace {nsid}: blocks {slba}..{end} are past its end ({nsze} blocks)", end = slba + *nlb as u64)]
    LbaOutOfRange {
        /// Namespace.
        nsid: u32,
        /// Start.
        slba: u64,
        /// Count.
        nlb: u32,
        /// Namespace size in blocks.
        nsze: u64,
    },
    /// A buffer unusable for DMA (not from the pool, misaligned, too short).
    #[error("bad buffer: {0}")]
    BadBuffer(String),
    /// The queue pair's pending ring is full: retry after polling for completions.
    #[error(
        "queue pair busy: pending ring full ({0} requests); poll for completions and resubmit"
    )]
    Busy(usize),
    /// The DMA pool could not provide memory.
    #[error("DMA memory exhausted: {0}")]
    DmaExhausted(String),
    /// A device data structure failed to parse.
    #[error("{device}: malformed {0}", device = .1)]
    Parse(ParseError, String),
    /// An argument that is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
