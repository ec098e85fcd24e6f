// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Command and completion formats, status codes, and the admin data structures
//! (identify, log pages) of the NVMe Base Specification 2.0 and the NVM Command Set
//! Specification 1.0, as plain data with checked parsers.
//!
//! Everything here that comes from the device is untrusted: the parsers check lengths
//! and return [`ParseError`] instead of panicking or indexing out of bounds.
//!
//! Commands, completions and status are here; [`identify`] holds the Identify data
//! structures and [`log`] the log pages and async events, with their parsers;
//! [`fabrics`] the Fabrics commands (Connect, Property Get and Set).

pub mod fabrics;
pub mod identify;
pub mod log;

pub use identify::*;
pub use log::*;

/// Size of a submission queue entry (section 4.2).
pub const SQE_SIZE: usize = 64;
/// Size of a completion queue entry (section 4.6).
pub const CQE_SIZE: usize = 16;

/// Admin command opcodes (section 5, figure 28).
pub mod admin_opc {
    /// Delete I/O Submission Queue.
    pub const DELETE_IO_SQ: u8 = 0x00;
    /// Create I/O Submission Queue.
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Delete I/O Completion Queue.
    pub const DELETE_IO_CQ: u8 = 0x04;
    /// Create I/O Completion Queue.
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0a;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    /// Doorbell Buffer Config.
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
}

/// NVM command set I/O opcodes (NVM Command Set Specification, figure 17).
pub mod io_opc {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Identify CNS values (section 5.17.1, figure 273).
pub mod cns {
    /// Identify Namespace data structure for the NSID.
    pub const NAMESPACE: u32 = 0x00;
    /// Identify Controller data structure.
    pub const CONTROLLER: u32 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NS_LIST: u32 = 0x02;
    /// Namespace Identification Descriptor list.
    pub const NS_ID_DESCRIPTORS: u32 = 0x03;
}

/// Log page identifiers (section 5.16.1, figure 202).
pub mod log_id {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Changed Namespace List.
    pub const CHANGED_NS_LIST: u8 = 0x04;
    /// Asymmetric Namespace Access.
    pub const ANA: u8 = 0x0c;
}

/// Feature identifiers (section 5.27.1, figure 317).
pub mod feature_id {
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
}

/// A submission queue entry (section 4.2, figure 88), laid out as the device reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sqe {
    /// CDW0: opcode (bits 7:0), fused (9:8), PSDT (15:14), command identifier (31:16).
    pub cdw0: u32,
    /// Namespace identifier.
    pub nsid: u32,
    /// CDW2.
    pub cdw2: u32,
    /// CDW3.
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2 (or PRP list pointer).
    pub prp2: u64,
    /// CDW10.
    pub cdw10: u32,
    /// CDW11.
    pub cdw11: u32,
    /// CDW12.
    pub cdw12: u32,
    /// CDW13.
    pub cdw13: u32,
    /// CDW14.
    pub cdw14: u32,
    /// CDW15.
    pub cdw15: u32,
}

const _: () = assert!(core::mem::size_of::<Sqe>() == SQE_SIZE);
const _: () = assert!(core::mem::offset_of!(Sqe, prp1) == 24);
const _: () = assert!(core::mem::offset_of!(Sqe, cdw10) == 40);

impl Sqe {
    /// A command with `opc`, CID zero, and everything else zero.
    pub const fn new(opc: u8) -> Self {
        Sqe {
            cdw0: opc as u32,
            nsid: 0,
            cdw2: 0,
            cdw3: 0,
            mptr: 0,
            prp1: 0,
            prp2: 0,
            cdw10: 0,
            cdw11: 0,
            cdw12: 0,
            cdw13: 0,
            cdw14: 0,
            cdw15: 0,
        }
    }
    /// Opcode.
    pub const fn opc(&self) -> u8 {
        self.cdw0 as u8
    }
    /// Command identifier.
    pub const fn cid(&self) -> u16 {
        (self.cdw0 >> 16) as u16
    }
    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw0 = self.cdw0 & 0xffff | (cid as u32) << 16;
    }
    /// Starting LBA of a read, write or write zeroes (CDW10-11).
    pub const fn slba(&self) -> u64 {
        self.cdw10 as u64 | (self.cdw11 as u64) << 32
    }
    /// Number of logical blocks, as a count (CDW12 bits 15:0 are zero based).
    pub const fn nlb(&self) -> u32 {
        (self.cdw12 & 0xffff) + 1
    }
    /// A read, write or write zeroes of `nlb` blocks (a count, at least 1) at `slba`.
    pub fn rw(opc: u8, nsid: u32, slba: u64, nlb: u32) -> Self {
        let mut sqe = Sqe::new(opc);
        sqe.nsid = nsid;
        sqe.cdw10 = slba as u32;
        sqe.cdw11 = (slba >> 32) as u32;
        sqe.cdw12 = (nlb - 1) & 0xffff;
        sqe
    }
}

/// A completion queue entry (section 4.6, figure 92).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cqe {
    /// Command specific DW0.
    pub dw0: u32,
    /// Command specific DW1.
    pub dw1: u32,
    /// SQ head pointer.
    pub sq_head: u16,
    /// SQ identifier.
    pub sq_id: u16,
    /// Command identifier.
    pub cid: u16,
    /// Phase tag (bit 0) and status field (bits 15:1).
    pub status: u16,
}

const _: () = assert!(core::mem::size_of::<Cqe>() == CQE_SIZE);

impl Cqe {
    /// Phase tag.
    pub const fn phase(&self) -> bool {
        self.status & 1 == 1
    }
    /// Decoded status field.
    pub const fn status(&self) -> Status {
        Status::from_field(self.status >> 1)
    }
}

/// Commands and completions as bytes, little endian in the order of the structures:
/// how a fabric carries them (a command capsule starts with the SQE, a response
/// capsule is the CQE: NVMe Base 2.0, section 2.2, "Capsules").
impl Sqe {
    /// The 64 bytes of the command.
    pub fn to_bytes(&self) -> [u8; SQE_SIZE] {
        let mut b = [0u8; SQE_SIZE];
        let dwords = [
            self.cdw0,
            self.nsid,
            self.cdw2,
            self.cdw3,
            self.mptr as u32,
            (self.mptr >> 32) as u32,
            self.prp1 as u32,
            (self.prp1 >> 32) as u32,
            self.prp2 as u32,
            (self.prp2 >> 32) as u32,
            self.cdw10,
            self.cdw11,
            self.cdw12,
            self.cdw13,
            self.cdw14,
            self.cdw15,
        ];
        for (chunk, dw) in b.chunks_exact_mut(4).zip(dwords) {
            chunk.copy_from_slice(&dw.to_le_bytes());
        }
        b
    }

    /// The command from its 64 bytes.
    pub fn from_bytes(b: &[u8; SQE_SIZE]) -> Sqe {
        let dw =
            |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        let qw = |i: usize| dw(i) as u64 | (dw(i + 1) as u64) << 32;
        Sqe {
            cdw0: dw(0),
            nsid: dw(1),
            cdw2: dw(2),
            cdw3: dw(3),
            mptr: qw(4),
            prp1: qw(6),
            prp2: qw(8),
            cdw10: dw(10),
            cdw11: dw(11),
            cdw12: dw(12),
            cdw13: dw(13),
            cdw14: dw(14),
            cdw15: dw(15),
        }
    }
}

impl Cqe {
    /// The 16 bytes of the completion.
    pub fn to_bytes(&self) -> [u8; CQE_SIZE] {
        let mut b = [0u8; CQE_SIZE];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        b[10..12].copy_from_slice(&self.sq_id.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    /// The completion from its 16 bytes.
    pub fn from_bytes(b: &[u8; CQE_SIZE]) -> Cqe {
        let w = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Cqe {
            dw0: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            dw1: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            sq_head: w(8),
            sq_id: w(10),
            cid: w(12),
            status: w(14),
        }
    }
}

/// Status code types (section 4.6.1.2, figure 94).
pub mod sct {
    /// Generic Command Status.
    pub const GENERIC: u8 = 0;
    /// Command Specific Status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and Data Integrity Errors.
    pub const MEDIA: u8 = 2;
    /// Path Related Status.
    pub const PATH: u8 = 3;
    /// Vendor Specific.
    pub const VENDOR: u8 = 7;
}

/// Generic status codes (section 4.6.1.2.1, figure 95) that this driver uses.
pub mod sc {
    /// Successful Completion.
    pub const SUCCESS: u8 = 0x00;
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: u8 = 0x01;
    /// Invalid Field in Command.
    pub const INVALID_FIELD: u8 = 0x02;
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: u8 = 0x04;
    /// Internal Error.
    pub const INTERNAL_ERROR: u8 = 0x06;
    /// Command Abort Requested.
    pub const ABORT_REQUESTED: u8 = 0x07;
    /// Command Aborted due to SQ Deletion.
    pub const ABORTED_SQ_DELETION: u8 = 0x08;
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: u8 = 0x0b;
    /// LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: u8 = 0x80;
    /// Namespace Not Ready.
    pub const NAMESPACE_NOT_READY: u8 = 0x82;
    /// Path related: Internal Path Error.
    pub const PATH_INTERNAL: u8 = 0x00;
    /// Path related: Asymmetric Access Persistent Loss.
    pub const ANA_PERSISTENT_LOSS: u8 = 0x01;
    /// Path related: Asymmetric Access Inaccessible.
    pub const ANA_INACCESSIBLE: u8 = 0x02;
    /// Path related: Asymmetric Access Transition.
    pub const ANA_TRANSITION: u8 = 0x03;
    /// Path related (host): Controller Pathing Error.
    pub const CONTROLLER_PATHING_ERROR: u8 = 0x60;
    /// Path related (host): Host Pathing Error.
    pub const HOST_PATHING_ERROR: u8 = 0x70;
    /// Path related (host): Command Aborted By Host.
    pub const ABORTED_BY_HOST: u8 = 0x71;
}

/// A decoded completion status (section 4.6.1, figure 93). A status is data
/// delivered with a completion, not an `Err`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status(0);
    /// Aborted because its submission queue was deleted: what commands in flight
    /// across a controller reset complete with. May be retried, on this path once it
    /// is back or on another.
    pub const ABORTED_SQ_DELETION: Status =
        Status::new(sct::GENERIC, sc::ABORTED_SQ_DELETION, false);
    /// Aborted by the host: a request that never reached a controller that has since
    /// failed or been removed. A path error: retry it on another path.
    pub const ABORTED_BY_HOST: Status = Status::new(sct::PATH, sc::ABORTED_BY_HOST, false);
    /// Host pathing error: the controller failed (fatal status or removal).
    pub const HOST_PATHING_ERROR: Status = Status::new(sct::PATH, sc::HOST_PATHING_ERROR, false);
    /// Command abort requested: a command that timed out and was aborted.
    pub const ABORT_REQUESTED: Status = Status::new(sct::GENERIC, sc::ABORT_REQUESTED, false);

    /// Builds a status from its type, code and Do Not Retry bit.
    pub const fn new(sct: u8, sc: u8, dnr: bool) -> Self {
        Status((sc as u16) | ((sct as u16 & 7) << 8) | ((dnr as u16) << 14))
    }
    /// Decodes the 15-bit status field (the CQE's DW3 bits 31:17).
    pub const fn from_field(field: u16) -> Self {
        Status(field & 0x7fff)
    }
    /// Status Code.
    pub const fn sc(self) -> u8 {
        self.0 as u8
    }
    /// Status Code Type.
    pub const fn sct(self) -> u8 {
        (self.0 >> 8 & 7) as u8
    }
    /// Command Retry Delay index (0 means retry at once; 1-3 select CRDT1-3).
    pub const fn crd(self) -> u8 {
        (self.0 >> 11 & 3) as u8
    }
    /// More: the error log has more information.
    pub const fn more(self) -> bool {
        self.0 >> 13 & 1 == 1
    }
    /// Do Not Retry.
    pub const fn dnr(self) -> bool {
        self.0 >> 14 & 1 == 1
    }
    /// True for a successful completion.
    pub const fn is_success(self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }
    /// A path error: the command may succeed at once on another path (path related
    /// status, or aborted by a reset).
    pub const fn is_path_error(self) -> bool {
        self.sct() == sct::PATH
            || (self.sct() == sct::GENERIC && self.sc() == sc::ABORTED_SQ_DELETION)
    }
    /// An ANA status (inaccessible, persistent loss, transition): the host should
    /// re-read the ANA log page.
    pub const fn is_ana_error(self) -> bool {
        self.sct() == sct::PATH
            && (self.sc() == sc::ANA_PERSISTENT_LOSS
                || self.sc() == sc::ANA_INACCESSIBLE
                || self.sc() == sc::ANA_TRANSITION)
    }
    /// The command may be retried (on this or another path).
    pub const fn is_retryable(self) -> bool {
        !self.is_success() && (!self.dnr() || self.is_path_error())
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match (self.sct(), self.sc()) {
            (0, 0x00) => "success",
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x04) => "data transfer error",
            (0, 0x06) => "internal error",
            (0, 0x07) => "command abort requested",
            (0, 0x08) => "aborted: SQ deletion",
            (0, 0x0b) => "invalid namespace or format",
            (0, 0x80) => "LBA out of range",
            (0, 0x82) => "namespace not ready",
            (1, 0x00) => "completion queue invalid",
            (1, 0x01) => "invalid queue identifier",
            (1, 0x02) => "invalid queue size",
            (2, 0x81) => "unrecovered read error",
            (3, 0x00) => "internal path error",
            (3, 0x01) => "ANA persistent loss",
            (3, 0x02) => "ANA inaccessible",
            (3, 0x03) => "ANA transition",
            (3, 0x60) => "controller pathing error",
            (3, 0x70) => "host pathing error",
            (3, 0x71) => "command aborted by host",
            _ => "status",
        };
        write!(f, "{name} (sct {:#x}, sc {:#04x}", self.sct(), self.sc())?;
        if self.dnr() {
            write!(f, ", do not retry")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        let mut cqe = Cqe {
            status: (Status::ABORTED_SQ_DELETION.0 << 1) | 1,
            ..Default::default()
        };
        assert!(cqe.phase());
        assert_eq!(cqe.status().sc(), sc::ABORTED_SQ_DELETION);
        assert!(cqe.status().is_path_error());
        assert!(cqe.status().is_retryable());
        cqe.status = Status::new(sct::GENERIC, sc::LBA_OUT_OF_RANGE, true).0 << 1;
        let st = cqe.status();
        assert!(!cqe.phase());
        assert!(st.dnr() && !st.is_retryable() && !st.is_path_error());
        assert_eq!(
            st.to_string(),
            "LBA out of range (sct 0x0, sc 0x80, do not retry)"
        );
        let ana = Status::new(sct::PATH, sc::ANA_INACCESSIBLE, true);
        assert!(ana.is_ana_error() && ana.is_retryable());
        assert!(Status::SUCCESS.is_success() && !Status::SUCCESS.is_retryable());
        // CRD and More bits sit at 12:11 and 13 of the field.
        let s = Status::from_field(0b0111_1000_0000_0000);
        assert_eq!(s.crd(), 3);
        assert!(s.more() && s.dnr());
    }

    #[test]
    fn sqe_and_cqe_bytes_round_trip() {
        let mut sqe = Sqe::rw(io_opc::WRITE, 3, 0x1122_3344_5566, 9);
        sqe.set_cid(0xbeef);
        sqe.mptr = 0x0102_0304_0506_0708;
        sqe.prp1 = 0xa1a2_a3a4_a5a6_a7a8;
        sqe.prp2 = 0xb1b2_b3b4_b5b6_b7b8;
        sqe.cdw15 = 0xfeed_f00d;
        let b = sqe.to_bytes();
        assert_eq!(&b[0..4], &[io_opc::WRITE, 0, 0xef, 0xbe]);
        assert_eq!(b[24], 0xa8, "PRP1 starts at byte 24, little endian");
        assert_eq!(
            &b[40..44],
            &0x5566u32.wrapping_add(0x3344 << 16).to_le_bytes()
        );
        assert_eq!(Sqe::from_bytes(&b), sqe);
        let cqe = Cqe {
            dw0: 1,
            dw1: 2,
            sq_head: 3,
            sq_id: 4,
            cid: 5,
            status: 6,
        };
        let b = cqe.to_bytes();
        assert_eq!(b[12], 5, "CID at byte 12");
        assert_eq!(Cqe::from_bytes(&b), cqe);
    }

    #[test]
    fn rw_sqe_fields() {
        let mut sqe = Sqe::rw(io_opc::READ, 1, 0x1_0000_0002, 8);
        sqe.set_cid(0xabcd);
        assert_eq!(sqe.opc(), io_opc::READ);
        assert_eq!(sqe.cid(), 0xabcd);
        assert_eq!(sqe.slba(), 0x1_0000_0002);
        assert_eq!(sqe.nlb(), 8);
        assert_eq!(sqe.cdw12, 7);
    }

    #[test]
    fn identify_controller_parses() {
        let mut d = vec![0u8; 4096];
        d[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        d[4..8].copy_from_slice(b"abcd");
        d[24..28].copy_from_slice(b"QEMU");
        d[77] = 7;
        d[76] = 1 << 3;
        d[256..258].copy_from_slice(&(1u16 << 8).to_le_bytes());
        d[516..520].copy_from_slice(&256u32.to_le_bytes());
        d[768..775].copy_from_slice(b"nqn.foo");
        let id = IdentifyController::parse(&d).unwrap();
        assert_eq!(id.vid, 0x1b36);
        assert_eq!(id.sn, "abcd");
        assert_eq!(id.mn, "QEMU");
        assert_eq!(id.nn, 256);
        assert_eq!(id.subnqn, "nqn.foo");
        assert_eq!(id.max_transfer_bytes(12), Some(512 * 1024));
        assert!(id.ana_supported() && id.dbbuf_supported());
        assert!(IdentifyController::parse(&d[..100]).is_err());
    }

    #[test]
    fn identify_namespace_checks_format() {
        let mut d = vec![0u8; 4096];
        d[0..8].copy_from_slice(&1000u64.to_le_bytes());
        d[25] = 1;
        d[26] = 1;
        d[128 + 2] = 9;
        d[132 + 2] = 12;
        let ns = IdentifyNamespace::parse(&d).unwrap();
        assert_eq!(ns.nsze, 1000);
        assert_eq!(ns.block_size(), 4096);
        d[26] = 2; // selects a format that does not exist
        assert!(IdentifyNamespace::parse(&d).is_err());
        d[26] = 0;
        d[128 + 2] = 3; // 8-byte blocks are not real
        assert!(IdentifyNamespace::parse(&d).is_err());
    }

    #[test]
    fn ns_list_and_descriptors() {
        let mut d = vec![0u8; 4096];
        d[0..4].copy_from_slice(&1u32.to_le_bytes());
        d[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(parse_ns_list(&d).unwrap(), vec![1, 3]);
        d[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(parse_ns_list(&d).is_err());

        let mut d = vec![0u8; 4096];
        d[0] = 2;
        d[1] = 16;
        d[4..20].copy_from_slice(&[7; 16]);
        d[20] = 3;
        d[21] = 16;
        d[24..40].copy_from_slice(&[9; 16]);
        let ids = parse_ns_descriptors(&d).unwrap();
        assert_eq!(ids.nguid, Some([7; 16]));
        assert_eq!(ids.uuid, Some([9; 16]));
        assert_eq!(ids.eui64, None);
        // A descriptor that runs past the end of the page is rejected.
        let mut over = vec![0u8; 4096];
        over[0] = 4;
        over[1] = 255;
        let mut o = 0;
        while o + 4 + 255 <= 4096 {
            over[o] = 4;
            over[o + 1] = 255;
            o += 259;
        }
        over[o] = 4;
        over[o + 1] = 255;
        assert!(parse_ns_descriptors(&over).is_err());
    }

    #[test]
    fn ana_log_checks_lengths() {
        let mut d = vec![0u8; 16 + 32 + 8];
        d[0..8].copy_from_slice(&5u64.to_le_bytes());
        d[8..10].copy_from_slice(&1u16.to_le_bytes());
        d[16..20].copy_from_slice(&1u32.to_le_bytes());
        d[20..24].copy_from_slice(&2u32.to_le_bytes());
        d[32] = 3;
        d[48..52].copy_from_slice(&1u32.to_le_bytes());
        d[52..56].copy_from_slice(&2u32.to_le_bytes());
        let log = AnaLog::parse(&d).unwrap();
        assert_eq!(log.change_count, 5);
        assert_eq!(log.groups[0].state, AnaState::Inaccessible);
        assert_eq!(log.groups[0].nsids, vec![1, 2]);
        d[20..24].copy_from_slice(&3u32.to_le_bytes());
        assert!(AnaLog::parse(&d).is_err());
        d[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(AnaLog::parse(&d).is_err());
        d[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert!(AnaLog::parse(&d).is_err());
    }

    #[test]
    fn async_event_round_trip() {
        let ev = AsyncEvent {
            event_type: 2,
            info: AsyncEvent::NOTICE_ANA_CHANGE,
            log_page: log_id::ANA,
        };
        assert_eq!(AsyncEvent::from_dw0(ev.to_dw0()), ev);
        assert!(ev.is_ana_change());
    }
}
