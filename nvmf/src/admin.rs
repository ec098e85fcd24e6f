// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What the target's controllers answer on the admin queue, as plain data: the
//! properties (CAP, VS, CC, CSTS: NVMe over Fabrics 1.1, section 3.4; NVMe Base 2.0,
//! section 3.1.4), Identify data (section 5.17.2), features (section 5.27.1) and
//! log pages (section 5.16.1). The connection (`conn.rs`) moves these bytes.

use crate::limits::{IN_CAPSULE_MAX, MAX_IO_QUEUES, MDTS, QUEUE_ENTRIES};
use crate::subsystem::{NsEntry, Subsystem};
use nvme_driver::spec::{sc, sct, Status};

/// The size of Identify data and of the buffer log pages are built in.
pub const PAGE: usize = 4096;

/// Status codes the target returns that the driver's spec module does not name.
pub mod status {
    use nvme_driver::spec::{sc, sct, Status};
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: Status = Status::new(sct::GENERIC, sc::INVALID_OPCODE, true);
    /// Invalid Field in Command.
    pub const INVALID_FIELD: Status = Status::new(sct::GENERIC, sc::INVALID_FIELD, true);
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: Status = Status::new(sct::GENERIC, sc::INVALID_NAMESPACE, true);
    /// Command Sequence Error (0Ch): a command before Connect, a second Connect.
    pub const COMMAND_SEQUENCE: Status = Status::new(sct::GENERIC, 0x0c, true);
    /// Data SGL Length Invalid (0Fh): the descriptor's length is not the command's.
    pub const SGL_LENGTH_INVALID: Status = Status::new(sct::GENERIC, 0x0f, true);
    /// SGL Descriptor Type Invalid (11h).
    pub const SGL_TYPE_INVALID: Status = Status::new(sct::GENERIC, 0x11, true);
    /// Transient Transport Error (22h): a data digest did not match (retryable).
    pub const TRANSIENT_TRANSPORT: Status = Status::new(sct::GENERIC, 0x22, false);
    /// LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: Status = Status::new(sct::GENERIC, sc::LBA_OUT_OF_RANGE, true);
    /// Internal Error: the block layer refused the I/O.
    pub const INTERNAL: Status = Status::new(sct::GENERIC, sc::INTERNAL_ERROR, false);
    /// Asynchronous Event Request Limit Exceeded (command specific 05h).
    pub const AER_LIMIT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x05, true);
    /// Invalid Log Page (command specific 09h).
    pub const INVALID_LOG_PAGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x09, true);
    /// Commands Aborted due to SQ Deletion: what I/O still waiting gets when the
    /// target stops.
    pub const ABORTED: Status = Status::ABORTED_SQ_DELETION;
}

/// Property offsets (the registers of a PCIe controller, section 3.1.4).
pub mod prop {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version.
    pub const VS: u32 = 0x08;
    /// Controller Configuration.
    pub const CC: u32 = 0x14;
    /// Controller Status.
    pub const CSTS: u32 = 0x1c;
}

/// The version the controllers report: NVMe 1.4.
pub const VERSION: u32 = 0x0001_0400;
/// The Keep Alive granularity, KAS (units of 100 ms).
pub const KAS: u16 = 1;
/// Asynchronous events outstanding at most (AERL is zero based).
pub const AERL: u8 = 3;

/// CAP (section 3.1.4.1): MQES the queue entries minus one, CQR (contiguous queues
/// required), TO 15 (7.5 s), CSS bit 37 (the NVM command set), MPSMIN 0 (4 KiB).
pub const CAP: u64 = (QUEUE_ENTRIES as u64 - 1) | 1 << 16 | 15 << 24 | 1 << 37;

/// The properties of one controller, kept by its admin queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Props {
    /// CC as the host last set it.
    pub cc: u32,
    /// CSTS: RDY (bit 0), SHST (bits 3:2).
    pub csts: u32,
}

/// What a Property Set of CC changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcChange {
    /// Nothing the target acts on.
    None,
    /// CC.EN went 0 -> 1: CSTS.RDY is 1.
    Enabled,
    /// CC.EN went 1 -> 0: a controller reset (CSTS.RDY is 0).
    Disabled,
    /// CC.SHN became non-zero: the host asks for a shutdown; CSTS.SHST is 01b
    /// (occurring) until [`Props::shutdown_complete`].
    Shutdown,
}

impl Props {
    /// Property Get (Fabrics 6.5): `Err` for an offset or size that is not a property.
    pub fn get(&self, offset: u32, eight: bool) -> Result<u64, Status> {
        match (offset, eight) {
            (prop::CAP, true) => Ok(CAP),
            (prop::VS, false) => Ok(VERSION as u64),
            (prop::CC, false) => Ok(self.cc as u64),
            (prop::CSTS, false) => Ok(self.csts as u64),
            _ => Err(status::INVALID_FIELD),
        }
    }

    /// Property Set (Fabrics 6.6): only CC is writable.
    pub fn set(&mut self, offset: u32, eight: bool, value: u64) -> Result<CcChange, Status> {
        if offset != prop::CC || eight {
            return Err(status::INVALID_FIELD);
        }
        let (old, new) = (self.cc, value as u32);
        self.cc = new;
        let shn = (new >> 14) & 3;
        if shn != 0 && (old >> 14) & 3 == 0 {
            self.csts = (self.csts & !(3 << 2)) | 1 << 2;
            return Ok(CcChange::Shutdown);
        }
        match (old & 1, new & 1) {
            (0, 1) => {
                self.csts = 1; // RDY, SHST 00b
                Ok(CcChange::Enabled)
            }
            (1, 0) => {
                self.csts = 0;
                Ok(CcChange::Disabled)
            }
            _ => Ok(CcChange::None),
        }
    }

    /// The shutdown the host asked for is done: CSTS.SHST 10b.
    pub fn shutdown_complete(&mut self) {
        self.csts = (self.csts & !(3 << 2)) | 2 << 2;
    }
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    b[at..at + bytes.len()].copy_from_slice(bytes);
}

/// An ASCII field padded with spaces (SN, MN, FR).
fn put_text(b: &mut [u8], at: usize, len: usize, s: &str) {
    let field = &mut b[at..at + len];
    field.fill(b' ');
    let n = s.len().min(len);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Identify Controller (CNS 01h; section 5.17.2.1, and Fabrics 1.1 section 4.1 for
/// bytes 1792 on: IOCCSZ, IORCSZ, ICDOFF, FCATT, MSDBD).
pub fn identify_ctrl(sub: &Subsystem, cntlid: u16, out: &mut [u8; PAGE]) {
    out.fill(0);
    put_text(out, 4, 20, &sub.serial);
    put_text(out, 24, 40, &sub.model);
    put_text(out, 64, 8, env!("CARGO_PKG_VERSION"));
    // CMIC: may have more than one port (bit 0) and more than one controller (bit
    // 1): every host association is a controller of its own.
    out[76] = 0b11;
    out[77] = MDTS;
    put(out, 78, &cntlid.to_le_bytes());
    put(out, 80, &VERSION.to_le_bytes());
    out[111] = 1; // CNTRLTYPE: I/O controller
    out[258] = 3; // ACL
    out[259] = AERL;
    out[262] = 0; // ELPE: one error log entry
    put(out, 320, &KAS.to_le_bytes());
    out[512] = 0x66; // SQES: 64 bytes
    out[513] = 0x44; // CQES: 16 bytes
    put(out, 514, &(QUEUE_ENTRIES as u16).to_le_bytes()); // MAXCMD
    put(out, 516, &sub.nn().to_le_bytes());
    // ONCS: Dataset Management (bit 2), Write Zeroes (bit 3).
    put(out, 520, &(1u16 << 2 | 1 << 3).to_le_bytes());
    // VWC: present (bit 0); Flush with NSID FFFFFFFFh supported (bits 2:1 = 11b).
    out[525] = 0b111;
    // SGLS: SGLs supported (bits 1:0 = 01b), Address field as an offset for
    // in-capsule data (bit 20), Transport SGL Data Block descriptors (bit 21).
    put(out, 536, &(1u32 | 1 << 20 | 1 << 21).to_le_bytes());
    put(out, 768, sub.nqn.as_bytes());
    // IOCCSZ: the command capsule in 16-byte units (SQE plus in-capsule data).
    let ioccsz = ((64 + IN_CAPSULE_MAX) / 16) as u32;
    put(out, 1792, &ioccsz.to_le_bytes());
    put(out, 1796, &1u32.to_le_bytes()); // IORCSZ: the CQE alone
                                         // ICDOFF 0, FCATT 0 (dynamic controller model), MSDBD 1.
    out[1803] = 1;
}

/// Identify Namespace (CNS 00h; section 5.17.2.1 of the NVM Command Set spec).
pub fn identify_ns(ns: &NsEntry, num_blocks: u64, out: &mut [u8; PAGE]) {
    out.fill(0);
    for at in [0, 8, 16] {
        put(out, at, &num_blocks.to_le_bytes()); // NSZE, NCAP, NUSE
    }
    out[25] = 0; // NLBAF: one format
    out[30] = 1; // NMIC: may be attached to more than one controller
    if let Some(nguid) = ns.nguid {
        put(out, 104, &nguid);
    }
    // LBAF0: no metadata, LBADS log2 of the block size.
    out[128 + 2] = ns.block_size.trailing_zeros() as u8;
}

/// Active Namespace ID list (CNS 02h): the active NSIDs above `after`, ascending.
pub fn active_ns_list(sub: &Subsystem, after: u32, out: &mut [u8; PAGE]) {
    out.fill(0);
    for (i, ns) in sub
        .namespaces
        .iter()
        .filter(|n| n.nsid > after)
        .take(PAGE / 4)
        .enumerate()
    {
        put(out, i * 4, &ns.nsid.to_le_bytes());
    }
}

/// Namespace Identification Descriptor list (CNS 03h; section 5.17.2.3): the NGUID
/// (type 2) and UUID (type 3) the namespace has.
pub fn ns_id_descriptors(ns: &NsEntry, out: &mut [u8; PAGE]) {
    out.fill(0);
    let mut at = 0;
    for (nidt, id) in [(2u8, ns.nguid), (3u8, ns.uuid)] {
        if let Some(id) = id {
            out[at] = nidt;
            out[at + 1] = 16;
            put(out, at + 4, &id);
            at += 20;
        }
    }
}

/// Number of Queues (Feature 07h): the I/O queues granted for `asked` (NSQR/NCQR
/// zero based in CDW11) and dword 0 of the completion.
pub fn number_of_queues(cdw11: u32) -> (u16, u32) {
    let want = (cdw11 & 0xffff).max(cdw11 >> 16) + 1;
    let n = want.min(MAX_IO_QUEUES as u32) as u16;
    let z = (n - 1) as u32;
    (n, z | z << 16)
}

/// SMART / Health Information (log 02h; section 5.16.1.3), as far as the target
/// knows it: available spare 100%, threshold 10%, a temperature of 300 K; the
/// counters are the backing controllers' business (`BlockLayer::smart_log`).
pub fn smart_log(out: &mut [u8; PAGE]) {
    out.fill(0);
    put(out, 1, &300u16.to_le_bytes()); // Composite Temperature, kelvin
    out[3] = 100; // Available Spare
    out[4] = 10; // Available Spare Threshold
}

/// Whether `lid` is a log page the target returns, and its length.
pub fn log_page(lid: u8, out: &mut [u8; PAGE]) -> Result<usize, Status> {
    match lid {
        // Error Information: one entry of 64 bytes, empty (no error recorded).
        0x01 => {
            out[..64].fill(0);
            Ok(64)
        }
        0x02 => {
            smart_log(out);
            Ok(512)
        }
        // Changed Namespace List: none changed.
        0x04 => {
            out.fill(0);
            Ok(PAGE)
        }
        _ => Err(status::INVALID_LOG_PAGE),
    }
}

/// True for the success status.
pub fn ok(s: Status) -> bool {
    s.sct() == sct::GENERIC && s.sc() == sc::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_then_shutdown_moves_csts() {
        let mut p = Props::default();
        assert_eq!(p.get(prop::CAP, true), Ok(CAP));
        assert_eq!(p.get(prop::CAP, false), Err(status::INVALID_FIELD));
        assert_eq!(p.set(prop::CC, false, 0x0046_0001), Ok(CcChange::Enabled));
        assert_eq!(p.get(prop::CSTS, false), Ok(1));
        assert_eq!(
            p.set(prop::CC, false, 0x0046_4001),
            Ok(CcChange::Shutdown),
            "SHN 01b"
        );
        assert_eq!(p.get(prop::CSTS, false), Ok(1 | 1 << 2), "SHST occurring");
        p.shutdown_complete();
        assert_eq!(p.get(prop::CSTS, false), Ok(1 | 2 << 2), "SHST complete");
        assert_eq!(p.set(prop::VS, false, 0), Err(status::INVALID_FIELD));
    }

    #[test]
    fn number_of_queues_is_bounded_and_zero_based() {
        assert_eq!(number_of_queues(0x0001_0001), (2, 0x0001_0001));
        let (n, dw0) = number_of_queues(0xffff_ffff);
        assert_eq!(n as usize, MAX_IO_QUEUES);
        assert_eq!(dw0 & 0xffff, MAX_IO_QUEUES as u32 - 1);
    }

    #[test]
    fn cap_says_queue_entries_and_nvm_command_set() {
        assert_eq!(CAP & 0xffff, QUEUE_ENTRIES as u64 - 1);
        assert_eq!(CAP >> 37 & 1, 1);
    }
}
