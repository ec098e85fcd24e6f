// SPDX-License-Identifier: Apache-2.0 OR MIT
//! NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0, section 3.6): one codec for
//! both ends of a connection.
//!
//! Every PDU starts with an 8-byte common header (CH: type, flags, HLEN, PDO, PLEN),
//! then a PDU-specific header (PSH) that ends at HLEN, then the header digest
//! (CRC32C of the first HLEN bytes) when header digests are on, padding up to the
//! data offset PDO, the data, and the data digest (CRC32C of the data) when data
//! digests are on. PLEN is the whole PDU.
//!
//! [`Codec::decode`] takes the bytes received so far on a connection and returns
//! one PDU that borrows its data from them, or how many more bytes it needs
//! ([`Decoded::Need`]); it allocates nothing. It checks every field as soon as the
//! bytes holding it have arrived, against the PDU's type and the direction (a host
//! receives only what a controller sends, and the other way round), the digests and
//! alignment settled by the ICReq/ICResp exchange, and the data size the receiver
//! accepts; a violation is a [`PduError`] naming the field, its value and the rule,
//! with the Fatal Error Status and Field Index for the termination request that
//! should follow. A wrong data digest is not fatal (the command fails, the
//! connection stays): [`Decoded::DataDigestError`] hands the PDU back with both
//! digests.
//!
//! [`Codec::encode`] writes a PDU into a caller's buffer, with the flags, offsets,
//! lengths and digests the connection's settings call for; [`Codec::encode_head`]
//! writes everything before the data, so that data can be sent from where it lies.
//!
//! CRC32C comes from the `crc32c` crate: the SSE 4.2 (or ARMv8) CRC instruction when
//! the CPU has it, a table otherwise, and no unsafe code of ours.

use crate::spec::{Cqe, Sqe, CQE_SIZE, SQE_SIZE};
use core::fmt;

/// PDU types (CH byte 0; section 3.6.2.1). Even types travel from host to
/// controller, odd types from controller to host.
pub mod pdu_type {
    /// Initialize Connection Request (host to controller).
    pub const IC_REQ: u8 = 0x00;
    /// Initialize Connection Response (controller to host).
    pub const IC_RESP: u8 = 0x01;
    /// Host to Controller Terminate Connection Request.
    pub const H2C_TERM_REQ: u8 = 0x02;
    /// Controller to Host Terminate Connection Request.
    pub const C2H_TERM_REQ: u8 = 0x03;
    /// Command Capsule.
    pub const CAPSULE_CMD: u8 = 0x04;
    /// Response Capsule.
    pub const CAPSULE_RESP: u8 = 0x05;
    /// Host to Controller Data.
    pub const H2C_DATA: u8 = 0x06;
    /// Controller to Host Data.
    pub const C2H_DATA: u8 = 0x07;
    /// Ready to Transfer.
    pub const R2T: u8 = 0x09;
}

/// CH flags (byte 1; section 3.6.2.1, and each PDU's section for bits 2 and 3).
pub mod flags {
    /// HDGSTF: a header digest follows the PSH.
    pub const HDGSTF: u8 = 1 << 0;
    /// DDGSTF: a data digest follows the data.
    pub const DDGSTF: u8 = 1 << 1;
    /// LAST_PDU (H2CData, C2HData): the last data PDU of the transfer.
    pub const LAST_PDU: u8 = 1 << 2;
    /// SUCCESS (C2HData): the command completed with success and no CapsuleResp
    /// follows; only with LAST_PDU.
    pub const SUCCESS: u8 = 1 << 3;
}

/// Fatal Error Status of a termination request (H2CTermReq, C2HTermReq;
/// sections 3.6.2.4 and 3.6.2.5).
pub mod fes {
    /// Invalid PDU Header Field: FEI is the byte offset of the field.
    pub const INVALID_HEADER_FIELD: u16 = 0x01;
    /// PDU Sequence Error: a PDU that may not come now.
    pub const PDU_SEQUENCE_ERROR: u16 = 0x02;
    /// Header Digest Error.
    pub const HEADER_DIGEST_ERROR: u16 = 0x03;
    /// Data Transfer Out of Range: data outside the command's transfer.
    pub const DATA_OUT_OF_RANGE: u16 = 0x04;
    /// Data Transfer Limit Exceeded (C2HTermReq: R2T Limit Exceeded).
    pub const DATA_LIMIT_EXCEEDED: u16 = 0x05;
    /// Unsupported Parameter (an ICReq or ICResp value the receiver cannot serve).
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

/// Size of the common header.
pub const CH_SIZE: usize = 8;
/// Size of a header or data digest.
pub const DIGEST_SIZE: usize = 4;
/// HLEN and PLEN of ICReq and ICResp.
pub const IC_PDU_SIZE: usize = 128;
/// HLEN of H2CTermReq and C2HTermReq.
pub const TERM_REQ_HLEN: usize = 24;
/// The most error data a termination request carries: the header of the PDU in
/// error, up to 128 bytes (PLEN at most 152).
pub const TERM_REQ_DATA_MAX: usize = 128;
/// HLEN of CapsuleCmd: the CH and the SQE.
pub const CAPSULE_CMD_HLEN: usize = CH_SIZE + SQE_SIZE;
/// HLEN of CapsuleResp: the CH and the CQE.
pub const CAPSULE_RESP_HLEN: usize = CH_SIZE + CQE_SIZE;
/// HLEN of H2CData, C2HData and R2T.
pub const DATA_HLEN: usize = 24;
/// The smallest MAXH2CDATA an ICResp may announce (section 3.6.2.3).
pub const MAXH2CDATA_MIN: u32 = 4096;
/// The largest HPDA and CPDA: alignment (PDA + 1) * 4 bytes, at most 128.
pub const PDA_MAX: u8 = 31;
/// The only PDU Format Version: 0, NVMe/TCP 1.0.
pub const PFV_1_0: u16 = 0;

/// Which end of the connection a [`Codec`] serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The host: receives ICResp, C2HTermReq, CapsuleResp, C2HData, R2T.
    Host,
    /// The controller (a target): receives ICReq, H2CTermReq, CapsuleCmd, H2CData.
    Controller,
}

/// ICReq (section 3.6.2.2): what the host asks of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcReq {
    /// PDU Format Version (bytes 9:8); [`PFV_1_0`].
    pub pfv: u16,
    /// Host PDU Data Alignment (byte 10): the controller's data PDUs put their data
    /// at a multiple of (HPDA + 1) * 4 bytes.
    pub hpda: u8,
    /// DGST bit 0: the host asks for header digests.
    pub header_digest: bool,
    /// DGST bit 1: the host asks for data digests.
    pub data_digest: bool,
    /// MAXR2T (bytes 15:12): most outstanding R2Ts per command, zero based.
    pub maxr2t: u32,
}

/// ICResp (section 3.6.2.3): what the controller grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcResp {
    /// PDU Format Version; [`PFV_1_0`].
    pub pfv: u16,
    /// Controller PDU Data Alignment (byte 10): the host's data PDUs put their data
    /// at a multiple of (CPDA + 1) * 4 bytes.
    pub cpda: u8,
    /// DGST bit 0: header digests are on.
    pub header_digest: bool,
    /// DGST bit 1: data digests are on.
    pub data_digest: bool,
    /// MAXH2CDATA (bytes 15:12): most data bytes in one H2CData PDU.
    pub maxh2cdata: u32,
}

/// H2CTermReq or C2HTermReq (sections 3.6.2.4, 3.6.2.5): why the sender ends the
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermReq<'a> {
    /// Fatal Error Status ([`fes`]).
    pub fes: u16,
    /// Fatal Error Information (bytes 13:10): for an invalid header field, its byte
    /// offset.
    pub fei: u32,
    /// The header of the PDU in error (up to [`TERM_REQ_DATA_MAX`] bytes; the
    /// encoder sends the first [`TERM_REQ_DATA_MAX`] of a longer one).
    pub error_data: &'a [u8],
}

/// H2CData's header (section 3.6.2.8): data for a command, answering an R2T. DATAL
/// is the length of the data that travels with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2CData {
    /// Command Capsule CID (bytes 9:8).
    pub cccid: u16,
    /// Transfer Tag (bytes 11:10): the R2T's.
    pub ttag: u16,
    /// Data Offset (bytes 15:12) within the command's data.
    pub datao: u32,
    /// LAST_PDU: the last H2CData of this R2T.
    pub last: bool,
}

/// C2HData's header (section 3.6.2.9): data of a command for the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct C2HData {
    /// Command Capsule CID (bytes 9:8).
    pub cccid: u16,
    /// Data Offset (bytes 15:12) within the command's data.
    pub datao: u32,
    /// LAST_PDU: the last C2HData of the command.
    pub last: bool,
    /// SUCCESS: the command succeeded and no CapsuleResp follows (only with `last`).
    pub success: bool,
}

/// R2T (section 3.6.2.10): the controller is ready for `r2tl` bytes of a command's
/// data from `r2to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct R2T {
    /// Command Capsule CID (bytes 9:8).
    pub cccid: u16,
    /// Transfer Tag (bytes 11:10), which the H2CData PDUs carry back.
    pub ttag: u16,
    /// R2T Offset (bytes 15:12).
    pub r2to: u32,
    /// R2T Length (bytes 19:16), at least 1.
    pub r2tl: u32,
}

/// One PDU. Data and error data borrow from the buffer it was decoded from (or that
/// will be encoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pdu<'a> {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2CTermReq(TermReq<'a>),
    /// C2HTermReq.
    C2HTermReq(TermReq<'a>),
    /// CapsuleCmd: the command and its in-capsule data (empty when none).
    CapsuleCmd(Sqe, &'a [u8]),
    /// CapsuleResp: the completion.
    CapsuleResp(Cqe),
    /// H2CData and its data.
    H2CData(H2CData, &'a [u8]),
    /// C2HData and its data.
    C2HData(C2HData, &'a [u8]),
    /// R2T.
    R2T(R2T),
}

impl Pdu<'_> {
    /// The PDU type (CH byte 0).
    pub fn pdu_type(&self) -> u8 {
        match self {
            Pdu::IcReq(_) => pdu_type::IC_REQ,
            Pdu::IcResp(_) => pdu_type::IC_RESP,
            Pdu::H2CTermReq(_) => pdu_type::H2C_TERM_REQ,
            Pdu::C2HTermReq(_) => pdu_type::C2H_TERM_REQ,
            Pdu::CapsuleCmd(..) => pdu_type::CAPSULE_CMD,
            Pdu::CapsuleResp(_) => pdu_type::CAPSULE_RESP,
            Pdu::H2CData(..) => pdu_type::H2C_DATA,
            Pdu::C2HData(..) => pdu_type::C2H_DATA,
            Pdu::R2T(_) => pdu_type::R2T,
        }
    }

    /// The data the PDU carries (in-capsule or transfer data; empty for the others).
    pub fn data(&self) -> &[u8] {
        match self {
            Pdu::CapsuleCmd(_, d) | Pdu::H2CData(_, d) | Pdu::C2HData(_, d) => d,
            _ => &[],
        }
    }
}

/// The name of a PDU type, as the specification writes it.
pub fn pdu_name(pdu_type: u8) -> &'static str {
    match pdu_type {
        pdu_type::IC_REQ => "ICReq",
        pdu_type::IC_RESP => "ICResp",
        pdu_type::H2C_TERM_REQ => "H2CTermReq",
        pdu_type::C2H_TERM_REQ => "C2HTermReq",
        pdu_type::CAPSULE_CMD => "CapsuleCmd",
        pdu_type::CAPSULE_RESP => "CapsuleResp",
        pdu_type::H2C_DATA => "H2CData",
        pdu_type::C2H_DATA => "C2HData",
        pdu_type::R2T => "R2T",
        _ => "unknown",
    }
}

/// The name of a Fatal Error Status.
pub fn fes_name(status: u16) -> &'static str {
    match status {
        fes::INVALID_HEADER_FIELD => "invalid PDU header field",
        fes::PDU_SEQUENCE_ERROR => "PDU sequence error",
        fes::HEADER_DIGEST_ERROR => "header digest error",
        fes::DATA_OUT_OF_RANGE => "data transfer out of range",
        fes::DATA_LIMIT_EXCEEDED => "data transfer limit exceeded",
        fes::UNSUPPORTED_PARAMETER => "unsupported parameter",
        _ => "unknown fatal error status",
    }
}

/// What a field should have held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Exactly this value.
    Eq(u64),
    /// At least this value.
    AtLeast(u64),
    /// At most this value.
    AtMost(u64),
    /// A multiple of this value.
    MultipleOf(u64),
    /// A rule in words.
    Says(&'static str),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Eq(v) => write!(f, "expected {v}"),
            Rule::AtLeast(v) => write!(f, "expected at least {v}"),
            Rule::AtMost(v) => write!(f, "expected at most {v}"),
            Rule::MultipleOf(v) => write!(f, "expected a multiple of {v}"),
            Rule::Says(s) => f.write_str(s),
        }
    }
}

/// A PDU from the peer that breaks the protocol: which PDU, which field, its value,
/// the rule, and the Fatal Error Status and Information for the termination request
/// to send before closing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("NVMe/TCP {name} PDU ({pdu_type:#04x}) received by the {receiver}: {field} = {value} ({value:#x}): {rule}; {status}", name = pdu_name(*.pdu_type), receiver = match .receiver { Role::Host => "host", Role::Controller => "controller" }, status = fes_name(*.fes))]
pub struct PduError {
    /// The PDU's type (CH byte 0, as received).
    pub pdu_type: u8,
    /// Who received it.
    pub receiver: Role,
    /// The field, named as the specification names it (`PLEN`, `HDGST`, `DATAL`...).
    pub field: &'static str,
    /// The value received.
    pub value: u64,
    /// What it should have been.
    pub rule: Rule,
    /// Fatal Error Status for the termination request ([`fes`]).
    pub fes: u16,
    /// Fatal Error Information: the field's byte offset in the PDU.
    pub fei: u32,
}

/// A PDU that does not fit where the caller asked it to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("NVMe/TCP {name} PDU of {need} bytes does not fit: {have} bytes of room (PLEN holds at most {max})", name = pdu_name(*.pdu_type), max = u32::MAX)]
pub struct EncodeError {
    /// The PDU's type.
    pub pdu_type: u8,
    /// Its length.
    pub need: usize,
    /// The room the caller gave.
    pub have: usize,
}

/// What [`Codec::decode`] found at the start of the bytes received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Not a whole PDU yet: at least this many more bytes are needed (every field
    /// that has arrived is already checked).
    Need(usize),
    /// One PDU, the first `len` bytes.
    Pdu {
        /// The PDU.
        pdu: Pdu<'a>,
        /// Its length (PLEN): the bytes to consume.
        len: usize,
    },
    /// A PDU whose data digest does not match its data. Not fatal: the command it
    /// belongs to fails (Transient Transport Error), the connection goes on after
    /// `len` bytes.
    DataDigestError {
        /// The PDU, with its (corrupt) data.
        pdu: Pdu<'a>,
        /// Its length.
        len: usize,
        /// The digest received.
        received: u32,
        /// The digest of the data received.
        computed: u32,
    },
}

/// The CRC32C that header and data digests hold, as it travels (little endian).
pub fn digest(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// One end of a connection: its role, and what the ICReq/ICResp exchange settled.
/// Before the exchange only ICReq, ICResp and termination requests pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    role: Role,
    initialized: bool,
    header_digest: bool,
    data_digest: bool,
    /// Alignment of the data in PDUs received, bytes ((PDA + 1) * 4).
    rx_align: u32,
    /// Alignment of the data in PDUs sent.
    tx_align: u32,
    /// The most data bytes one received PDU may carry.
    rx_data_max: u32,
    /// The most data bytes one H2CData may carry (MAXH2CDATA).
    maxh2cdata: u32,
}

/// The fixed shape of each PDU type: who receives it, its HLEN, the flags it may
/// carry, whether it has a header digest and data.
struct Shape {
    receiver: Role,
    hlen: usize,
    valid_flags: u8,
    has_digests: bool,
    has_data: bool,
}

fn shape(t: u8) -> Option<Shape> {
    use flags::*;
    let (receiver, hlen, valid_flags, has_digests, has_data) = match t {
        pdu_type::IC_REQ => (Role::Controller, IC_PDU_SIZE, 0, false, false),
        pdu_type::IC_RESP => (Role::Host, IC_PDU_SIZE, 0, false, false),
        pdu_type::H2C_TERM_REQ => (Role::Controller, TERM_REQ_HLEN, 0, false, false),
        pdu_type::C2H_TERM_REQ => (Role::Host, TERM_REQ_HLEN, 0, false, false),
        pdu_type::CAPSULE_CMD => (
            Role::Controller,
            CAPSULE_CMD_HLEN,
            HDGSTF | DDGSTF,
            true,
            true,
        ),
        pdu_type::CAPSULE_RESP => (Role::Host, CAPSULE_RESP_HLEN, HDGSTF, true, false),
        pdu_type::H2C_DATA => (
            Role::Controller,
            DATA_HLEN,
            HDGSTF | DDGSTF | LAST_PDU,
            true,
            true,
        ),
        pdu_type::C2H_DATA => (
            Role::Host,
            DATA_HLEN,
            HDGSTF | DDGSTF | LAST_PDU | SUCCESS,
            true,
            true,
        ),
        pdu_type::R2T => (Role::Host, DATA_HLEN, HDGSTF, true, false),
        _ => return None,
    };
    Some(Shape {
        receiver,
        hlen,
        valid_flags,
        has_digests,
        has_data,
    })
}

fn is_term_req(t: u8) -> bool {
    t == pdu_type::H2C_TERM_REQ || t == pdu_type::C2H_TERM_REQ
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn align_up(v: usize, align: u32) -> usize {
    v.div_ceil(align as usize) * align as usize
}

impl Codec {
    /// A host's end of a new connection, before ICReq. `rx_data_max` is the most
    /// data it takes in one C2HData (at least its largest read).
    pub fn host(rx_data_max: u32) -> Codec {
        Codec::new(Role::Host, rx_data_max)
    }

    /// A controller's end of a new connection, before ICReq. `rx_data_max` is the
    /// most data it takes in one PDU: the larger of its in-capsule data size and the
    /// MAXH2CDATA it will announce.
    pub fn controller(rx_data_max: u32) -> Codec {
        Codec::new(Role::Controller, rx_data_max)
    }

    fn new(role: Role, rx_data_max: u32) -> Codec {
        Codec {
            role,
            initialized: false,
            header_digest: false,
            data_digest: false,
            rx_align: 4,
            tx_align: 4,
            rx_data_max,
            maxh2cdata: MAXH2CDATA_MIN,
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once ICReq and ICResp have been exchanged.
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// Header digests are on.
    pub fn header_digest(&self) -> bool {
        self.header_digest
    }

    /// Data digests are on.
    pub fn data_digest(&self) -> bool {
        self.data_digest
    }

    /// The most data one H2CData may carry (the controller's MAXH2CDATA).
    pub fn maxh2cdata(&self) -> u32 {
        self.maxh2cdata
    }

    /// Host: takes the controller's ICResp to the ICReq `asked`, and with it the
    /// connection's settings. Refuses (Unsupported Parameter) a PDU format version
    /// other than 1.0, a CPDA above 31, a MAXH2CDATA below 4096 or not a dword
    /// multiple, and a digest the host did not ask for.
    pub fn accept_icresp(&mut self, asked: &IcReq, resp: &IcResp) -> Result<(), PduError> {
        let bad = |field, fei, value: u64, rule| PduError {
            pdu_type: pdu_type::IC_RESP,
            receiver: Role::Host,
            field,
            value,
            rule,
            fes: fes::UNSUPPORTED_PARAMETER,
            fei,
        };
        if resp.pfv != PFV_1_0 {
            return Err(bad("PFV", 8, resp.pfv as u64, Rule::Eq(PFV_1_0 as u64)));
        }
        if resp.cpda > PDA_MAX {
            return Err(bad(
                "CPDA",
                10,
                resp.cpda as u64,
                Rule::AtMost(PDA_MAX as u64),
            ));
        }
        if (resp.header_digest && !asked.header_digest) || (resp.data_digest && !asked.data_digest)
        {
            return Err(bad(
                "DGST",
                11,
                dgst(resp.header_digest, resp.data_digest) as u64,
                Rule::Says("a digest the host did not ask for"),
            ));
        }
        if resp.maxh2cdata < MAXH2CDATA_MIN || !resp.maxh2cdata.is_multiple_of(4) {
            return Err(bad(
                "MAXH2CDATA",
                12,
                resp.maxh2cdata as u64,
                Rule::Says("expected a multiple of 4, at least 4096"),
            ));
        }
        self.settle(resp.header_digest, resp.data_digest, asked.hpda, resp.cpda);
        self.maxh2cdata = resp.maxh2cdata;
        Ok(())
    }

    /// Controller: takes the host's ICReq and returns the ICResp to send: the
    /// digests the host asked for that `offer` allows, `offer`'s CPDA and
    /// MAXH2CDATA. Refuses (Unsupported Parameter) a format version other than 1.0
    /// and an HPDA above 31.
    pub fn accept_icreq(&mut self, req: &IcReq, offer: &IcResp) -> Result<IcResp, PduError> {
        let bad = |field, fei, value: u64, rule| PduError {
            pdu_type: pdu_type::IC_REQ,
            receiver: Role::Controller,
            field,
            value,
            rule,
            fes: fes::UNSUPPORTED_PARAMETER,
            fei,
        };
        if req.pfv != PFV_1_0 {
            return Err(bad("PFV", 8, req.pfv as u64, Rule::Eq(PFV_1_0 as u64)));
        }
        if req.hpda > PDA_MAX {
            return Err(bad(
                "HPDA",
                10,
                req.hpda as u64,
                Rule::AtMost(PDA_MAX as u64),
            ));
        }
        let resp = IcResp {
            pfv: PFV_1_0,
            cpda: offer.cpda.min(PDA_MAX),
            header_digest: req.header_digest && offer.header_digest,
            data_digest: req.data_digest && offer.data_digest,
            maxh2cdata: offer.maxh2cdata,
        };
        self.settle(resp.header_digest, resp.data_digest, resp.cpda, req.hpda);
        self.maxh2cdata = resp.maxh2cdata;
        Ok(resp)
    }

    /// Digests and alignments; `rx_pda` the PDA of PDUs this end receives.
    fn settle(&mut self, header_digest: bool, data_digest: bool, rx_pda: u8, tx_pda: u8) {
        self.initialized = true;
        self.header_digest = header_digest;
        self.data_digest = data_digest;
        self.rx_align = (rx_pda.min(PDA_MAX) as u32 + 1) * 4;
        self.tx_align = (tx_pda.min(PDA_MAX) as u32 + 1) * 4;
    }

    // ----------------------------------------------------------------- decoding

    /// Decodes the PDU at the start of `buf` (the bytes received so far on this
    /// connection), checking every field (module comment). Consume `len` bytes of a
    /// decoded PDU; on [`Decoded::Need`] receive more and call again with the same
    /// start. An `Err` is fatal to the connection.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Decoded<'a>, PduError> {
        if buf.len() < CH_SIZE {
            return Ok(Decoded::Need(CH_SIZE - buf.len()));
        }
        let (t, fl, hlen, pdo, plen) = (
            buf[0],
            buf[1],
            buf[2] as usize,
            buf[3] as usize,
            le32(buf, 4),
        );
        let err = |field, fei: u32, value: u64, rule, fes| PduError {
            pdu_type: t,
            receiver: self.role,
            field,
            value,
            rule,
            fes,
            fei,
        };
        let header_field =
            |field, fei, value: u64, rule| err(field, fei, value, rule, fes::INVALID_HEADER_FIELD);

        // PDU-TYPE: known, in this direction, in sequence (ICReq/ICResp first and
        // only then; a termination request at any time).
        let Some(sh) = shape(t) else {
            return Err(header_field(
                "PDU-TYPE",
                0,
                t as u64,
                Rule::Says("not a PDU type of NVMe/TCP 1.0 (00h-07h, 09h)"),
            ));
        };
        if sh.receiver != self.role {
            return Err(header_field(
                "PDU-TYPE",
                0,
                t as u64,
                Rule::Says(match self.role {
                    Role::Host => "a PDU only a host sends",
                    Role::Controller => "a PDU only a controller sends",
                }),
            ));
        }
        let is_ic = t == pdu_type::IC_REQ || t == pdu_type::IC_RESP;
        if !is_term_req(t) && is_ic == self.initialized {
            return Err(err(
                "PDU-TYPE",
                0,
                t as u64,
                Rule::Says(if is_ic {
                    "connection initialization is over"
                } else {
                    "the connection is not initialized (ICReq/ICResp first)"
                }),
                fes::PDU_SEQUENCE_ERROR,
            ));
        }

        // FLAGS: only this type's bits; HDGSTF exactly when header digests are on;
        // DDGSTF never when data digests are off; SUCCESS only with LAST_PDU.
        if fl & !sh.valid_flags != 0 {
            return Err(header_field(
                "FLAGS",
                1,
                fl as u64,
                Rule::Says("a flag this PDU type does not have"),
            ));
        }
        if sh.has_digests && (fl & flags::HDGSTF != 0) != self.header_digest {
            return Err(header_field(
                "FLAGS",
                1,
                fl as u64,
                Rule::Says(if self.header_digest {
                    "HDGSTF clear while header digests are on"
                } else {
                    "HDGSTF set while header digests are off"
                }),
            ));
        }
        if fl & flags::DDGSTF != 0 && !self.data_digest {
            return Err(header_field(
                "FLAGS",
                1,
                fl as u64,
                Rule::Says("DDGSTF set while data digests are off"),
            ));
        }
        if fl & (flags::SUCCESS | flags::LAST_PDU) == flags::SUCCESS {
            return Err(header_field(
                "FLAGS",
                1,
                fl as u64,
                Rule::Says("SUCCESS without LAST_PDU"),
            ));
        }

        // HLEN: fixed per type.
        if hlen != sh.hlen {
            return Err(header_field(
                "HLEN",
                2,
                hlen as u64,
                Rule::Eq(sh.hlen as u64),
            ));
        }

        // PDO: 0 without data; with data after the header (and its digest), aligned
        // as the receiver asked.
        let header_end = hlen
            + if fl & flags::HDGSTF != 0 {
                DIGEST_SIZE
            } else {
                0
            };
        if !sh.has_data && pdo != 0 {
            return Err(header_field("PDO", 3, pdo as u64, Rule::Eq(0)));
        }
        if pdo != 0 && pdo < header_end {
            return Err(header_field(
                "PDO",
                3,
                pdo as u64,
                Rule::AtLeast(header_end as u64),
            ));
        }
        if !pdo.is_multiple_of(self.rx_align as usize) {
            return Err(header_field(
                "PDO",
                3,
                pdo as u64,
                Rule::MultipleOf(self.rx_align as u64),
            ));
        }

        // PLEN: the whole PDU, consistent with the above; data within the limit.
        let plen_u = plen as usize;
        let ddgst = if fl & flags::DDGSTF != 0 {
            DIGEST_SIZE
        } else {
            0
        };
        if is_ic {
            if plen_u != IC_PDU_SIZE {
                return Err(header_field(
                    "PLEN",
                    4,
                    plen as u64,
                    Rule::Eq(IC_PDU_SIZE as u64),
                ));
            }
        } else if is_term_req(t) {
            if plen_u < TERM_REQ_HLEN {
                return Err(header_field(
                    "PLEN",
                    4,
                    plen as u64,
                    Rule::AtLeast(TERM_REQ_HLEN as u64),
                ));
            }
            if plen_u > TERM_REQ_HLEN + TERM_REQ_DATA_MAX {
                return Err(header_field(
                    "PLEN",
                    4,
                    plen as u64,
                    Rule::AtMost((TERM_REQ_HLEN + TERM_REQ_DATA_MAX) as u64),
                ));
            }
        } else if pdo == 0 {
            if plen_u != header_end {
                return Err(header_field(
                    "PLEN",
                    4,
                    plen as u64,
                    if sh.has_data {
                        Rule::Says("not HLEN plus header digest while PDO is 0 (no data)")
                    } else {
                        Rule::Eq(header_end as u64)
                    },
                ));
            }
            if ddgst != 0 {
                return Err(header_field(
                    "FLAGS",
                    1,
                    fl as u64,
                    Rule::Says("DDGSTF set on a PDU without data"),
                ));
            }
            if t == pdu_type::H2C_DATA || t == pdu_type::C2H_DATA {
                return Err(header_field(
                    "PDO",
                    3,
                    0,
                    Rule::Says("a data PDU without data"),
                ));
            }
        } else {
            if plen_u <= pdo + ddgst {
                return Err(header_field(
                    "PLEN",
                    4,
                    plen as u64,
                    Rule::AtLeast((pdo + ddgst + 1) as u64),
                ));
            }
            if self.data_digest && ddgst == 0 {
                return Err(header_field(
                    "FLAGS",
                    1,
                    fl as u64,
                    Rule::Says("DDGSTF clear on data while data digests are on"),
                ));
            }
            // An H2CData carries at most the MAXH2CDATA this controller announced.
            let data_max = if t == pdu_type::H2C_DATA {
                self.rx_data_max.min(self.maxh2cdata)
            } else {
                self.rx_data_max
            };
            let data_len = plen_u - pdo - ddgst;
            if data_len > data_max as usize {
                return Err(err(
                    "PLEN",
                    4,
                    plen as u64,
                    Rule::AtMost((pdo + ddgst) as u64 + data_max as u64),
                    fes::DATA_LIMIT_EXCEEDED,
                ));
            }
        }
        if buf.len() < plen_u {
            return Ok(Decoded::Need(plen_u - buf.len()));
        }
        let pdu_bytes = &buf[..plen_u];

        // HDGST: the CRC32C of the first HLEN bytes.
        if header_end > hlen {
            let (received, computed) = (le32(pdu_bytes, hlen), digest(&pdu_bytes[..hlen]));
            if received != computed {
                return Err(err(
                    "HDGST",
                    hlen as u32,
                    received as u64,
                    Rule::Eq(computed as u64),
                    fes::HEADER_DIGEST_ERROR,
                ));
            }
        }

        let data = if pdo == 0 {
            &[][..]
        } else {
            &pdu_bytes[pdo..plen_u - ddgst]
        };
        let pdu = self.psh(t, fl, pdu_bytes, data)?;
        if ddgst != 0 {
            let (received, computed) = (le32(pdu_bytes, plen_u - DIGEST_SIZE), digest(data));
            if received != computed {
                return Ok(Decoded::DataDigestError {
                    pdu,
                    len: plen_u,
                    received,
                    computed,
                });
            }
        }
        Ok(Decoded::Pdu { pdu, len: plen_u })
    }

    /// The PDU-specific header of a PDU whose common header checked out.
    fn psh<'a>(&self, t: u8, fl: u8, b: &'a [u8], data: &'a [u8]) -> Result<Pdu<'a>, PduError> {
        let err = |field, fei: u32, value: u64, rule, fes| PduError {
            pdu_type: t,
            receiver: self.role,
            field,
            value,
            rule,
            fes,
            fei,
        };
        let dgst_bits = |b: &[u8]| -> Result<(bool, bool), PduError> {
            if b[11] & !3 != 0 {
                return Err(err(
                    "DGST",
                    11,
                    b[11] as u64,
                    Rule::Says("reserved bits 7:2 set"),
                    fes::INVALID_HEADER_FIELD,
                ));
            }
            Ok((b[11] & 1 != 0, b[11] & 2 != 0))
        };
        // DATAL (bytes 19:16) of a data PDU is the length of the data it carries, and
        // the data must not run past 4 GiB of the command's data.
        let datal = |b: &[u8]| -> Result<(), PduError> {
            let datal = le32(b, 16);
            if datal as usize != data.len() {
                return Err(err(
                    "DATAL",
                    16,
                    datal as u64,
                    Rule::Eq(data.len() as u64),
                    fes::INVALID_HEADER_FIELD,
                ));
            }
            if le32(b, 12).checked_add(datal).is_none() {
                return Err(err(
                    "DATAO",
                    12,
                    le32(b, 12) as u64,
                    Rule::AtMost((u32::MAX - datal) as u64),
                    fes::DATA_OUT_OF_RANGE,
                ));
            }
            Ok(())
        };
        Ok(match t {
            pdu_type::IC_REQ => {
                let (header_digest, data_digest) = dgst_bits(b)?;
                Pdu::IcReq(IcReq {
                    pfv: le16(b, 8),
                    hpda: b[10],
                    header_digest,
                    data_digest,
                    maxr2t: le32(b, 12),
                })
            }
            pdu_type::IC_RESP => {
                let (header_digest, data_digest) = dgst_bits(b)?;
                Pdu::IcResp(IcResp {
                    pfv: le16(b, 8),
                    cpda: b[10],
                    header_digest,
                    data_digest,
                    maxh2cdata: le32(b, 12),
                })
            }
            // A termination request is decoded whatever its FES says: the peer is
            // closing the connection either way, and its reason is worth reporting.
            pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => {
                let term = TermReq {
                    fes: le16(b, 8),
                    fei: le32(b, 10),
                    error_data: &b[TERM_REQ_HLEN..],
                };
                if t == pdu_type::H2C_TERM_REQ {
                    Pdu::H2CTermReq(term)
                } else {
                    Pdu::C2HTermReq(term)
                }
            }
            pdu_type::CAPSULE_CMD => {
                let sqe: &[u8; SQE_SIZE] = b[CH_SIZE..CAPSULE_CMD_HLEN]
                    .try_into()
                    .expect("HLEN checked: 72 bytes");
                Pdu::CapsuleCmd(Sqe::from_bytes(sqe), data)
            }
            pdu_type::CAPSULE_RESP => {
                let cqe: &[u8; CQE_SIZE] = b[CH_SIZE..CAPSULE_RESP_HLEN]
                    .try_into()
                    .expect("HLEN checked: 24 bytes");
                Pdu::CapsuleResp(Cqe::from_bytes(cqe))
            }
            pdu_type::H2C_DATA => {
                datal(b)?;
                Pdu::H2CData(
                    H2CData {
                        cccid: le16(b, 8),
                        ttag: le16(b, 10),
                        datao: le32(b, 12),
                        last: fl & flags::LAST_PDU != 0,
                    },
                    data,
                )
            }
            pdu_type::C2H_DATA => {
                datal(b)?;
                Pdu::C2HData(
                    C2HData {
                        cccid: le16(b, 8),
                        datao: le32(b, 12),
                        last: fl & flags::LAST_PDU != 0,
                        success: fl & flags::SUCCESS != 0,
                    },
                    data,
                )
            }
            pdu_type::R2T => {
                let (r2to, r2tl) = (le32(b, 12), le32(b, 16));
                if r2tl == 0 {
                    return Err(err(
                        "R2TL",
                        16,
                        0,
                        Rule::AtLeast(1),
                        fes::INVALID_HEADER_FIELD,
                    ));
                }
                if r2to.checked_add(r2tl).is_none() {
                    return Err(err(
                        "R2TO",
                        12,
                        r2to as u64,
                        Rule::AtMost((u32::MAX - r2tl) as u64),
                        fes::DATA_OUT_OF_RANGE,
                    ));
                }
                Pdu::R2T(R2T {
                    cccid: le16(b, 8),
                    ttag: le16(b, 10),
                    r2to,
                    r2tl,
                })
            }
            _ => unreachable!("shape() knows only the types above"),
        })
    }

    /// Checks a data PDU's place in its command's transfer: its data (`datao`,
    /// `datal` bytes) must start at `expected` (data arrives in order) and end by
    /// `end` (the command's length, or the end of the R2T's window). Data Transfer
    /// Out of Range otherwise.
    pub fn check_data_range(
        &self,
        pdu_type: u8,
        datao: u32,
        datal: u32,
        expected: u32,
        end: u32,
    ) -> Result<(), PduError> {
        let err = |field, fei, value: u64, rule| PduError {
            pdu_type,
            receiver: self.role,
            field,
            value,
            rule,
            fes: fes::DATA_OUT_OF_RANGE,
            fei,
        };
        if datao != expected {
            return Err(err("DATAO", 12, datao as u64, Rule::Eq(expected as u64)));
        }
        if datao as u64 + datal as u64 > end as u64 {
            return Err(err(
                "DATAL",
                16,
                datal as u64,
                Rule::AtMost(end.saturating_sub(datao) as u64),
            ));
        }
        Ok(())
    }

    // ----------------------------------------------------------------- encoding

    /// PDO and PLEN of `pdu` as this end sends it.
    fn layout(&self, pdu: &Pdu<'_>) -> (usize, usize) {
        let t = pdu.pdu_type();
        let sh = shape(t).expect("every Pdu variant has a shape");
        let header_end = sh.hlen
            + if sh.has_digests && self.header_digest {
                DIGEST_SIZE
            } else {
                0
            };
        match pdu {
            Pdu::H2CTermReq(term) | Pdu::C2HTermReq(term) => (
                0,
                TERM_REQ_HLEN + term.error_data.len().min(TERM_REQ_DATA_MAX),
            ),
            _ if pdu.data().is_empty() => (0, header_end),
            _ => {
                let pdo = align_up(header_end, self.tx_align);
                let ddgst = if self.data_digest { DIGEST_SIZE } else { 0 };
                (pdo, pdo + pdu.data().len() + ddgst)
            }
        }
    }

    /// The bytes `pdu` takes on the wire from this end (its PLEN).
    pub fn encoded_len(&self, pdu: &Pdu<'_>) -> usize {
        self.layout(pdu).1
    }

    /// Writes all of `pdu` into `out`: [`Codec::encode_head`], the data, the data
    /// digest. Returns its length.
    pub fn encode(&self, pdu: &Pdu<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (pdo, plen) = self.layout(pdu);
        if out.len() < plen {
            return Err(EncodeError {
                pdu_type: pdu.pdu_type(),
                need: plen,
                have: out.len(),
            });
        }
        self.encode_head(pdu, out)?;
        let data = pdu.data();
        if !data.is_empty() {
            out[pdo..pdo + data.len()].copy_from_slice(data);
            if self.data_digest {
                out[plen - DIGEST_SIZE..plen].copy_from_slice(&digest(data).to_le_bytes());
            }
        }
        Ok(plen)
    }

    /// Writes what comes before `pdu`'s data into `out` (the common header, the
    /// PSH, the header digest, zero padding up to PDO) and returns its length: PDO
    /// for a PDU with data, which the caller then sends from where it lies, followed
    /// by its data digest (`digest(data)`, little endian) when data digests are on;
    /// PLEN for the others (a termination request's error data included).
    pub fn encode_head(&self, pdu: &Pdu<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
        let t = pdu.pdu_type();
        let sh = shape(t).expect("every Pdu variant has a shape");
        let (pdo, plen) = self.layout(pdu);
        let head = if pdo == 0 { plen } else { pdo };
        if out.len() < head || plen > u32::MAX as usize {
            return Err(EncodeError {
                pdu_type: t,
                need: if plen > u32::MAX as usize { plen } else { head },
                have: out.len(),
            });
        }
        let out = &mut out[..head];
        out.fill(0);
        let has_data = !pdu.data().is_empty();
        let mut fl = 0;
        if sh.has_digests && self.header_digest {
            fl |= flags::HDGSTF;
        }
        if has_data && self.data_digest {
            fl |= flags::DDGSTF;
        }
        match pdu {
            Pdu::IcReq(r) => {
                out[8..10].copy_from_slice(&r.pfv.to_le_bytes());
                out[10] = r.hpda;
                out[11] = dgst(r.header_digest, r.data_digest);
                out[12..16].copy_from_slice(&r.maxr2t.to_le_bytes());
            }
            Pdu::IcResp(r) => {
                out[8..10].copy_from_slice(&r.pfv.to_le_bytes());
                out[10] = r.cpda;
                out[11] = dgst(r.header_digest, r.data_digest);
                out[12..16].copy_from_slice(&r.maxh2cdata.to_le_bytes());
            }
            Pdu::H2CTermReq(term) | Pdu::C2HTermReq(term) => {
                out[8..10].copy_from_slice(&term.fes.to_le_bytes());
                out[10..14].copy_from_slice(&term.fei.to_le_bytes());
                let n = out.len() - TERM_REQ_HLEN;
                out[TERM_REQ_HLEN..].copy_from_slice(&term.error_data[..n]);
            }
            Pdu::CapsuleCmd(sqe, _) => {
                out[CH_SIZE..CAPSULE_CMD_HLEN].copy_from_slice(&sqe.to_bytes())
            }
            Pdu::CapsuleResp(cqe) => {
                out[CH_SIZE..CAPSULE_RESP_HLEN].copy_from_slice(&cqe.to_bytes())
            }
            Pdu::H2CData(h, data) => {
                if h.last {
                    fl |= flags::LAST_PDU;
                }
                out[8..10].copy_from_slice(&h.cccid.to_le_bytes());
                out[10..12].copy_from_slice(&h.ttag.to_le_bytes());
                out[12..16].copy_from_slice(&h.datao.to_le_bytes());
                out[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
            }
            Pdu::C2HData(h, data) => {
                if h.last {
                    fl |= flags::LAST_PDU;
                }
                if h.success {
                    fl |= flags::SUCCESS;
                }
                out[8..10].copy_from_slice(&h.cccid.to_le_bytes());
                out[12..16].copy_from_slice(&h.datao.to_le_bytes());
                out[16..20].copy_from_slice(&(data.len() as u32).to_le_bytes());
            }
            Pdu::R2T(r) => {
                out[8..10].copy_from_slice(&r.cccid.to_le_bytes());
                out[10..12].copy_from_slice(&r.ttag.to_le_bytes());
                out[12..16].copy_from_slice(&r.r2to.to_le_bytes());
                out[16..20].copy_from_slice(&r.r2tl.to_le_bytes());
            }
        }
        out[0] = t;
        out[1] = fl;
        out[2] = sh.hlen as u8;
        out[3] = pdo as u8;
        out[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
        if fl & flags::HDGSTF != 0 {
            let d = digest(&out[..sh.hlen]);
            out[sh.hlen..sh.hlen + DIGEST_SIZE].copy_from_slice(&d.to_le_bytes());
        }
        Ok(head)
    }
}

/// The DGST byte of ICReq and ICResp.
fn dgst(header: bool, data: bool) -> u8 {
    header as u8 | (data as u8) << 1
}

#[cfg(test)]
mod tests;
