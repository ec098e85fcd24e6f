// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The block layer's C ABI (`libnvmebdev.so`, `libnvmebdev.a`, header
//! `include/nvmebdev.h`), for C and C++ storage servers, over `nvme_bdev`'s public API
//! only.
//!
//! The shape is SPDK's bdev API, made smaller: a layer (`nvme_layer_create`) attaches
//! controllers by transport ID (`nvme_layer_attach`), a bdev is opened by name with an
//! event callback (`nvme_bdev_open`), each thread opens its own channel
//! (`nvme_channel_open`), submits reads, writes, write zeroes, unmaps and flushes with
//! a completion callback and its argument, and polls the channel, which calls the
//! callbacks on that thread. I/O data lives in memory from `nvme_dma_alloc` (or
//! registered with `nvme_mem_register`). A full
//! channel refuses with `-ENOMEM`; `nvme_bdev_queue_io_wait` calls back when there is
//! room.
//!
//! Every function returns 0 (or a count) or a negative errno, and keeps a message for
//! the calling thread (`nvme_last_error`); `nvme_strerror` explains each errno. NULL
//! pointers, closed handles, buffers that are not DMA memory of the layer and sizes
//! that are not a multiple of the block size are refused that way, never a crash.
//!
//! The caller's own memory can carry I/O once registered (`nvme_mem_register`), and
//! I/O statistics per bdev and per path (`nvme_bdev_get_iostat`) come from the block
//! layer's counters. Not wrapped yet: SMART and the error log, hot-plug.
//!
//! Modules: [`error`] (errnos and messages), `handle` (what a C handle is),
//! [`layer`], [`dma`] (buffers and the lock-free address table), [`bdev`] (open,
//! info, events), [`channel`] (I/O, poll, waiting for room), [`iostat`] (statistics).
#![deny(missing_docs)]
// The C names of the types (cbindgen writes them into the header as they are).
#![allow(non_camel_case_types)]

pub mod bdev;
pub mod channel;
pub mod dma;
pub mod error;
mod handle;
pub mod iostat;
pub mod layer;

pub use layer::attach_bus;
