// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What the driver needs from the thing that carries its controller: a register
//! window, a way to map DMA memory, and word of removal. VFIO provides one
//! ([`crate::vfio::VfioBus`]); the software controller provides another.

use crate::dma::DmaMapper;
use crate::mmio::Mmio;
use std::fmt;
use std::sync::Arc;

/// The device side of a controller, as the driver sees it.
pub trait Bus: Send + Sync + fmt::Debug {
    /// The device's name in messages: its PCI address, or the software controller's name.
    fn name(&self) -> &str;
    /// BAR0, the controller's registers and doorbells.
    fn bar0(&self) -> &Mmio;
    /// The mapper for this device's DMA address space.
    fn mapper(&self) -> Arc<dyn DmaMapper>;
    /// True once the platform asked for the device back (VFIO's device request
    /// interrupt, raised on hot-unplug). The controller then fails and releases it.
    fn removal_requested(&self) -> bool;
    /// Lets the device go: afterwards register writes go nowhere and reads return
    /// all ones, the device file is closed. Pointers into BAR0 stay valid (the BAR
    /// mapping is replaced, not removed), so queue pairs still running are safe.
    /// Idempotent.
    fn release(&self);
}
