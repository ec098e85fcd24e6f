// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The target's fixed sizes: each connection's buffers are made from these when it
//! is accepted, so nothing is allocated per command.

/// Entries of every queue (CAP.MQES + 1, and MAXCMD): command slots per connection.
pub const QUEUE_ENTRIES: usize = 64;
/// MDTS: the largest transfer is 2^MDTS pages of 4 KiB (CAP.MPSMIN 0).
pub const MDTS: u8 = 5;
/// The largest transfer in bytes (128 KiB): each slot's share of the connection's
/// DMA buffer.
pub const MAX_TRANSFER: usize = 4096 << MDTS;
/// In-capsule data a command may carry (IOCCSZ is this plus the 64-byte SQE).
/// Linux's host sends up to 8 KiB in-capsule on the admin queue whatever IOCCSZ
/// says, so every queue takes that much.
pub const IN_CAPSULE_MAX: usize = 8192;
/// MAXH2CDATA announced in ICResp: one H2CData may carry a whole transfer.
pub const MAXH2CDATA: u32 = MAX_TRANSFER as u32;
/// I/O queues a controller grants (Number of Queues).
pub const MAX_IO_QUEUES: usize = 8;
/// Connections served at once, in all.
pub const MAX_CONNECTIONS: usize = 64;
/// PDUs one poll of a connection takes in at most.
pub const PDUS_PER_POLL: usize = 64;
/// Block layer I/Os a connection keeps in flight at most (a Dataset Management
/// command is one per range, up to 256): what a poll of its channels can hand back,
/// so the completions fit the poll's fixed array.
pub const BDEV_INFLIGHT_MAX: usize = 256;
