// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `nvme-target`'s library: an NVMe/TCP target over the block layer (`nvme-bdev`),
//! built on the driver's NVMe/TCP PDU codec (`nvme_driver::tcp::pdu`) and Fabrics
//! commands (`nvme_driver::spec::fabrics`). The binary (`main.rs`) reads an SPDK JSON
//! config into [`subsystem::Subsystem`]s and listeners and calls [`server::run`];
//! tests do the same over software controllers.

#![deny(missing_docs)]

pub mod admin;
pub mod conn;
pub mod limits;
pub mod reactor;
pub mod server;
pub mod subsystem;
