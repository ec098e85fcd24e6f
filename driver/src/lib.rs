// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A polled userspace NVMe driver for PCIe controllers reached through VFIO.
//!
//! The hardware model: an NVMe controller exposes registers in BAR0 (capabilities,
//! configuration, status, and one pair of doorbells per queue). The host places
//! queues in its own memory: 64-byte commands in submission queues (SQs), 16-byte
//! completions in completion queues (CQs). The host writes a command into an SQ slot
//! and the new tail into the SQ's doorbell; the device fetches the command by DMA,
//! moves data to or from host buffers described by PRP entries, then writes a
//! completion into the CQ with a phase bit that flips each time the CQ wraps. The host
//! polls the phase bit, consumes completions, and writes the new head into the CQ's
//! doorbell. No interrupts are used: each queue pair is owned and polled by one thread.
//!
//! Under VFIO the device sees I/O virtual addresses (IOVAs) that the IOMMU
//! translates, so every buffer the device touches comes from a [`dma::DmaPool`]
//! mapped into the device's IOMMU domain.
//!
//! Modules: [`regs`] and [`spec`] are the specification as data; [`mmio`] and
//! [`dma`] the memory the device shares; [`bus`] what carries a controller,
//! implemented by [`vfio`] and by the software controller in `softctrl` (feature
//! `soft-controller`); [`ctrlr`] the controller: bring-up, admin queue, state machine;
//! [`control`] the reset handshake between controller and queue pairs; [`qpair`] the
//! I/O queue pairs of the data path, their NVMe logic written once over a
//! [`transport::Transport`]; [`transport`] the seam between that core and the wire
//! (one trait per queue, one per controller, [`transport::CtrlTransport`]), of which
//! [`pcie`] is the PCIe side (rings, doorbells, PRPs, BAR0, queue creation).
//! [`tcp`] holds the NVMe/TCP PDUs, for the TCP transport to come.
//! `driver/README.md` maps each piece to its file and walks one I/O through them.
#![deny(missing_docs)]

pub mod bus;
pub mod control;
pub mod dma;
pub mod error;
pub mod mmio;
pub mod regs;
#[cfg(feature = "soft-controller")]
pub mod softctrl;
pub mod spec;
pub mod vfio;

pub use error::{Error, Result};

/// Locks a mutex, ignoring poisoning: the driver's locks guard state that every
/// update leaves consistent, so a panicking holder does not make it unusable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
pub mod clock;
pub mod ctrlr;
pub mod iov;
pub mod pcie;
pub mod prp;
pub mod qpair;
pub mod sgl;
pub mod tcp;
pub mod transport;

pub use ctrlr::{Controller, ControllerOptions, CtrlState, Namespace, ShutdownReport};
pub use dma::{DmaBuf, DmaPool, DmaSlice, Iova};
pub use iov::DmaVec;
pub use pcie::{PcieCtrl, PcieQueue};
pub use qpair::{IoCompletion, IoOp, IoRequest, Qpair, QpairOptions, QpairStats, Refused};
pub use spec::Status;
pub use transport::{CtrlTransport, IoQpair, QueueTransport, Transport};

/// The README's samples, compiled as doc tests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
