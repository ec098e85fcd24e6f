// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The block layer: reactors, bdevs and the multipath bdev that never blocks.
//!
//! The model (see `shared/DESIGN.md`, "Why it exists"): each core runs a reactor, a
//! run-to-completion loop that owns that core's NVMe queue pairs outright. A bdev is
//! opened by name; each core gets a channel to it, submits block I/O with a context
//! word and collects completions by polling. The multipath bdev spreads a
//! namespace's I/O over every controller that reaches it, and fails over between them
//! without ever blocking a submitter and without any path-state writer ever waiting
//! for submitters: the path set is an immutable snapshot behind an atomic pointer,
//! replaced with one swap and reclaimed by quiescent-state-based reclamation
//! ([`qsbr`]) once every reader moved on. Controller resets, ANA changes, reconnects
//! and removal happen on one controller thread per controller ([`BlockLayer`]).
//!
//! Modules: [`reactor`] (per-core loops, timers, messages), [`qsbr`] (snapshots and
//! reclamation), [`ring`] (the bounded lock-free ring between cores), [`mpath`] (the
//! multipath core and its per-core channel, generic over the path queue), [`layer`]
//! (controllers, bdev registry, namespace and multipath bdevs over the driver),
//! [`events`] (what happened to a bdev, for the embedder to take on its own thread),
//! [`room`] (being called back when a busy channel has room again), [`async_io`]
//! (block I/O as futures on a channel, for single-threaded executors).
//!
//! Model checks: `RUSTFLAGS="--cfg loom" cargo test -p nvme-bdev --release loom`.
#![deny(missing_docs)]

pub mod async_io;
mod dma;
mod error;
pub mod events;
mod io;
pub mod iostat;
pub mod layer;
pub mod mpath;
pub mod qsbr;
pub mod reactor;
pub mod ring;
pub mod room;
pub mod share;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

/// The README's complete samples, compiled (and those not marked `no_run` run) as doc
/// tests; its excerpts of `examples/` are checked by `tests/readme.rs`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use async_io::{AsyncChannel, AsyncStats, CmdFuture, IoBuffer, IoFuture};
pub use dma::{
    IoBuf, IoBufPool, MemRegion, IOVA_WINDOW, REGISTERED_BASE, REGISTERED_MAX, REGISTER_ALIGN,
};
pub use error::{Error, Result};
pub use events::{BdevEvent, EventReceiver, EVENT_QUEUE_DEFAULT};
pub use io::{BdevCompletion, BdevIo, PathQueue};
pub use iostat::{BdevIoStat, IoStat, LatencyHistogram, PathIoStat};
pub use layer::{
    vfio_connector, Bdev, BlockLayer, Channel, Connector, ControllerStats, LayerOptions, NvmeQueue,
    PollGroup,
};
pub use mpath::{BdevInfo, MpathChannel, MpathOptions, Multipath, PathState, Policy};
pub use nvme_driver::{IoOp, Status};
pub use reactor::{Poller, ReactorCtx, ReactorOptions, Reactors};
pub use room::{RoomWaiter, ROOM_WAITERS_MAX};
pub use share::{QueueGroup, QueueShare};
