// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The Fabrics command set (NVMe Base Specification 2.0, section 6; NVMe over Fabrics
//! 1.1, section 3): what a host sends before a fabric controller is usable, and in
//! place of register accesses. A queue of a fabric controller exists once a Connect
//! command on it succeeds (the admin queue first, with controller ID FFFFh: the
//! controller picks one and returns it; then each I/O queue with that ID). The
//! controller's properties (CAP, VS, CC, CSTS: the registers of a PCIe controller)
//! are read with Property Get and written with Property Set on the admin queue.
//!
//! The commands are [`Sqe`]s with opcode 7Fh and the Fabrics Command Type in byte 4;
//! how their data travels (an SGL descriptor in the data pointer) is the
//! transport's business: over NVMe/TCP the 1024-byte Connect data is in-capsule data
//! ([`crate::sgl::Descriptor::in_capsule`]).

use super::identify::{le16, need, ParseError};
use super::{sct, Cqe, Sqe, Status};

/// The opcode of every Fabrics command (section 6, figure "Fabrics Command Type").
pub const FABRICS_OPC: u8 = 0x7f;

/// Fabrics Command Types (FCTYPE, SQE byte 4).
pub mod fctype {
    /// Property Set (section 6.6).
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect (section 6.3).
    pub const CONNECT: u8 = 0x01;
    /// Property Get (section 6.5).
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send (section 6.2).
    pub const AUTHENTICATION_SEND: u8 = 0x05;
    /// Authentication Receive (section 6.1).
    pub const AUTHENTICATION_RECEIVE: u8 = 0x06;
    /// Disconnect (section 6.4).
    pub const DISCONNECT: u8 = 0x08;
}

/// Command specific status codes of the Fabrics commands (SCT 1; section 6.3,
/// "Connect Response", and figure "Fabrics Command Status Values").
pub mod status {
    /// Incompatible Format: the Connect data's format (RECFMT) is not supported.
    pub const INCOMPATIBLE_FORMAT: u8 = 0x80;
    /// Controller Busy: the controller cannot take this queue now.
    pub const CONTROLLER_BUSY: u8 = 0x81;
    /// Connect Invalid Parameters: dword 0 says which ([`super::InvalidParameter`]).
    pub const INVALID_PARAMETERS: u8 = 0x82;
    /// Connect Restart Discovery: the subsystem is not at this address any more.
    pub const RESTART_DISCOVERY: u8 = 0x83;
    /// Connect Invalid Host: the host NQN may not connect to this subsystem.
    pub const INVALID_HOST: u8 = 0x84;
    /// Discover Restart.
    pub const DISCOVER_RESTART: u8 = 0x90;
    /// Authentication Required.
    pub const AUTHENTICATION_REQUIRED: u8 = 0x91;
}

/// Size of the Connect command's data (section 6.3, figure "Connect Command Data").
pub const CONNECT_DATA_SIZE: usize = 1024;
/// Size of an NQN field in the Connect data (NUL terminated, UTF-8).
pub const NQN_FIELD_SIZE: usize = 256;
/// The longest NQN (section 4.5, "NVMe Qualified Names"): 223 bytes.
pub const NQN_MAX_LEN: usize = 223;
/// The controller ID a host asks for on the admin queue's Connect with the dynamic
/// controller model: "any", the controller picks one and returns it.
pub const CNTLID_DYNAMIC: u16 = 0xffff;
/// The well-known NQN of a discovery controller.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// The size of a property access (ATTRIB bits 2:0 of Property Get and Set). The
/// offsets are those of a PCIe controller's registers ([`crate::regs::CAP`] and the
/// rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertySize {
    /// 4 bytes (VS, CC, CSTS...).
    Four,
    /// 8 bytes (CAP).
    Eight,
}

impl PropertySize {
    const fn attrib(self) -> u32 {
        match self {
            PropertySize::Four => 0,
            PropertySize::Eight => 1,
        }
    }
}

fn fabrics_sqe(fctype: u8) -> Sqe {
    let mut sqe = Sqe::new(FABRICS_OPC);
    // FCTYPE is byte 4, the low byte of the dword that holds the NSID elsewhere.
    sqe.nsid = fctype as u32;
    sqe
}

/// The Fabrics Command Type of a Fabrics command (byte 4), or `None` for any other
/// command.
pub fn fabrics_type(sqe: &Sqe) -> Option<u8> {
    (sqe.opc() == FABRICS_OPC).then_some(sqe.nsid as u8)
}

/// Property Get (section 6.5): ATTRIB (byte 40) the size, OFST (bytes 47:44) the
/// property's offset. The value comes back in the completion's dwords 0 and 1
/// ([`property_value`]).
pub fn property_get(offset: u32, size: PropertySize) -> Sqe {
    let mut sqe = fabrics_sqe(fctype::PROPERTY_GET);
    sqe.cdw10 = size.attrib();
    sqe.cdw11 = offset;
    sqe
}

/// Property Set (section 6.6): ATTRIB, OFST as for Property Get, VALUE in bytes
/// 55:48 (a 4-byte property takes the low four).
pub fn property_set(offset: u32, size: PropertySize, value: u64) -> Sqe {
    let mut sqe = fabrics_sqe(fctype::PROPERTY_SET);
    sqe.cdw10 = size.attrib();
    sqe.cdw11 = offset;
    sqe.cdw12 = value as u32;
    sqe.cdw13 = match size {
        PropertySize::Four => 0,
        PropertySize::Eight => (value >> 32) as u32,
    };
    sqe
}

/// The value a Property Get returned (completion dwords 1:0).
pub fn property_value(cqe: &Cqe) -> u64 {
    cqe.dw0 as u64 | (cqe.dw1 as u64) << 32
}

/// Connect (section 6.3, figure "Connect Command - Submission Queue Entry"): RECFMT
/// 0 (bytes 41:40), QID (43:42), SQSIZE (45:44, zero based: `entries - 1`), CATTR
/// (byte 46), KATO (51:48, milliseconds; the admin queue's counts, 0 disables keep
/// alive). The data pointer is left to the transport.
pub fn connect(qid: u16, entries: u16, cattr: u8, kato_ms: u32) -> Sqe {
    let mut sqe = fabrics_sqe(fctype::CONNECT);
    sqe.cdw10 = (qid as u32) << 16;
    sqe.cdw11 = entries.saturating_sub(1) as u32 | (cattr as u32) << 16;
    sqe.cdw12 = kato_ms;
    sqe
}

/// Connect attributes (CATTR, byte 46).
pub mod cattr {
    /// SQ flow control disable: the controller need not report SQ head pointers
    /// (it may return FFFFh in SQHD), and the host does not wait for them.
    pub const DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;
}

/// The fields of a Connect command a target reads: queue, size, attributes and keep
/// alive timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCommand {
    /// Record format (RECFMT); only 0 exists.
    pub recfmt: u16,
    /// Queue identifier: 0 the admin queue.
    pub qid: u16,
    /// Submission queue entries (SQSIZE + 1).
    pub entries: u32,
    /// Connect attributes.
    pub cattr: u8,
    /// Keep Alive Timeout in milliseconds.
    pub kato_ms: u32,
}

impl ConnectCommand {
    /// The Connect fields of `sqe`, which must be a Connect command.
    pub fn parse(sqe: &Sqe) -> Result<Self, ParseError> {
        if fabrics_type(sqe) != Some(fctype::CONNECT) {
            return Err(ParseError {
                what: "Connect command",
                detail: format!(
                    "opcode {:#04x}, fctype {:#04x}: not a Connect command (7Fh, 01h)",
                    sqe.opc(),
                    sqe.nsid as u8
                ),
            });
        }
        Ok(ConnectCommand {
            recfmt: sqe.cdw10 as u16,
            qid: (sqe.cdw10 >> 16) as u16,
            entries: (sqe.cdw11 & 0xffff) + 1,
            cattr: (sqe.cdw11 >> 16) as u8,
            kato_ms: sqe.cdw12,
        })
    }
}

/// The Connect command's data (section 6.3, figure "Connect Command Data"): the host
/// identifier (bytes 15:0), the controller ID asked for (17:16), the subsystem NQN
/// (511:256) and the host NQN (767:512).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectData {
    /// Host Identifier: a 128-bit value, the same on every association of one host.
    pub hostid: [u8; 16],
    /// Controller ID: [`CNTLID_DYNAMIC`] on the admin queue of a dynamic controller;
    /// on an I/O queue, the ID the admin queue's Connect returned.
    pub cntlid: u16,
    /// NQN of the subsystem to connect to.
    pub subnqn: String,
    /// NQN of the host.
    pub hostnqn: String,
}

impl ConnectData {
    /// The 1024 bytes of the data. An NQN that does not fit (longer than
    /// [`NQN_MAX_LEN`] bytes), or is empty, is refused with its name.
    pub fn to_bytes(&self) -> Result<[u8; CONNECT_DATA_SIZE], ParseError> {
        let mut d = [0u8; CONNECT_DATA_SIZE];
        d[..16].copy_from_slice(&self.hostid);
        d[16..18].copy_from_slice(&self.cntlid.to_le_bytes());
        for (what, nqn, at) in [
            ("subsystem NQN", &self.subnqn, 256),
            ("host NQN", &self.hostnqn, 512),
        ] {
            check_nqn(what, nqn.as_bytes())?;
            d[at..at + nqn.len()].copy_from_slice(nqn.as_bytes());
        }
        Ok(d)
    }

    /// The data from the bytes a host sent: at least 1024 bytes, NQNs NUL
    /// terminated within their fields, UTF-8, not empty.
    pub fn parse(d: &[u8]) -> Result<Self, ParseError> {
        need("Connect data", d, CONNECT_DATA_SIZE)?;
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&d[..16]);
        let nqn = |what: &'static str, at: usize| -> Result<String, ParseError> {
            let field = &d[at..at + NQN_FIELD_SIZE];
            let len = field.iter().position(|&b| b == 0).ok_or(ParseError {
                what,
                detail: format!("not NUL terminated within its {NQN_FIELD_SIZE} bytes"),
            })?;
            check_nqn(what, &field[..len])?;
            String::from_utf8(field[..len].to_vec()).map_err(|_| ParseError {
                what,
                detail: "not UTF-8".into(),
            })
        };
        Ok(ConnectData {
            hostid,
            cntlid: le16(d, 16),
            subnqn: nqn("subsystem NQN", 256)?,
            hostnqn: nqn("host NQN", 512)?,
        })
    }
}

fn check_nqn(what: &'static str, nqn: &[u8]) -> Result<(), ParseError> {
    if nqn.is_empty() || nqn.len() > NQN_MAX_LEN || nqn.contains(&0) {
        return Err(ParseError {
            what,
            detail: format!(
                "{} bytes{}: an NQN is 1 to {NQN_MAX_LEN} bytes without NUL",
                nqn.len(),
                if nqn.contains(&0) { " with a NUL" } else { "" }
            ),
        });
    }
    Ok(())
}

/// What a successful Connect returned (section 6.3, figure "Connect Response"):
/// the controller ID (dword 0 bits 15:0) and whether authentication must follow
/// (AUTHREQ: bit 17 ATR, authentication required; bit 18 ASCR, authentication and a
/// secure channel required; the bits Linux's host and target use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    /// The controller ID of this association.
    pub cntlid: u16,
    /// AUTHREQ: authentication required (bit 0: ATR, bit 1: ASCR).
    pub authreq: u8,
}

impl ConnectResponse {
    /// The response of a Connect that completed with success.
    pub fn from_cqe(cqe: &Cqe) -> Self {
        ConnectResponse {
            cntlid: cqe.dw0 as u16,
            authreq: ((cqe.dw0 >> 17) & 3) as u8,
        }
    }

    /// Dword 0 of a successful response.
    pub fn to_dw0(self) -> u32 {
        self.cntlid as u32 | ((self.authreq as u32 & 3) << 17)
    }
}

/// Which Connect parameter was wrong, from dword 0 of a Connect Invalid Parameters
/// completion (SCT 1, SC 82h): IATTR (bit 16: 0 the command, 1 the data) and IPO
/// (bits 15:0, the byte offset of the field within it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidParameter {
    /// The field is in the Connect data (else in the command).
    pub in_data: bool,
    /// Its byte offset.
    pub offset: u16,
}

impl InvalidParameter {
    /// Dword 0 of the completion.
    pub fn from_dw0(dw0: u32) -> Self {
        InvalidParameter {
            in_data: dw0 >> 16 & 1 == 1,
            offset: dw0 as u16,
        }
    }

    /// Dword 0 of the completion.
    pub fn to_dw0(self) -> u32 {
        self.offset as u32 | (self.in_data as u32) << 16
    }

    /// The field's name, for the offsets of fields a host fills in.
    pub fn field(self) -> &'static str {
        match (self.in_data, self.offset) {
            (false, 40..=41) => "RECFMT",
            (false, 42..=43) => "QID",
            (false, 44..=45) => "SQSIZE",
            (false, 46) => "CATTR",
            (false, 48..=51) => "KATO",
            (true, 0..=15) => "HOSTID",
            (true, 16..=17) => "CNTLID",
            (true, 256..=511) => "SUBNQN",
            (true, 512..=767) => "HOSTNQN",
            _ => "a reserved field",
        }
    }
}

/// A Fabrics command's failure in words: the Fabrics status names for SCT 1 codes
/// 80h and up, with the field an Invalid Parameters status points at; the generic
/// text of [`Status`] otherwise.
pub fn describe_status(status: Status, dw0: u32) -> String {
    if status.sct() != sct::COMMAND_SPECIFIC {
        return status.to_string();
    }
    let name = match status.sc() {
        status::INCOMPATIBLE_FORMAT => "incompatible format",
        status::CONTROLLER_BUSY => "controller busy",
        status::INVALID_PARAMETERS => {
            let p = InvalidParameter::from_dw0(dw0);
            return format!(
                "connect invalid parameters: {} (offset {} in the {}) (sct 0x1, sc 0x82)",
                p.field(),
                p.offset,
                if p.in_data { "data" } else { "command" }
            );
        }
        status::RESTART_DISCOVERY => "connect restart discovery",
        status::INVALID_HOST => "connect invalid host: this host NQN may not connect",
        status::DISCOVER_RESTART => "discover restart",
        status::AUTHENTICATION_REQUIRED => "authentication required",
        _ => return status.to_string(),
    };
    format!("{name} (sct 0x1, sc {:#04x})", status.sc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs;

    #[test]
    fn property_get_and_set_lay_out_their_fields() {
        let get = property_get(regs::CAP as u32, PropertySize::Eight);
        let b = get.to_bytes();
        assert_eq!((b[0], b[4]), (0x7f, fctype::PROPERTY_GET));
        assert_eq!(b[40], 1, "ATTRIB: 8 bytes");
        assert_eq!(&b[44..48], &[0, 0, 0, 0], "OFST of CAP");
        assert_eq!(fabrics_type(&get), Some(fctype::PROPERTY_GET));

        let set = property_set(regs::CC as u32, PropertySize::Four, 0x46_0001);
        let b = set.to_bytes();
        assert_eq!((b[0], b[4], b[40]), (0x7f, fctype::PROPERTY_SET, 0));
        assert_eq!(&b[44..48], &0x14u32.to_le_bytes());
        assert_eq!(&b[48..56], &0x46_0001u64.to_le_bytes());
        let set8 = property_set(0x30, PropertySize::Eight, 0x1122_3344_5566_7788);
        assert_eq!(
            &set8.to_bytes()[48..56],
            &0x1122_3344_5566_7788u64.to_le_bytes()
        );

        let cqe = Cqe {
            dw0: 0x2018_200f,
            dw1: 0x0040,
            ..Cqe::default()
        };
        assert_eq!(property_value(&cqe), 0x0040_2018_200f);
        assert_eq!(fabrics_type(&Sqe::new(0x06)), None);
    }

    #[test]
    fn connect_command_round_trips() {
        let sqe = connect(3, 128, cattr::DISABLE_SQ_FLOW_CONTROL, 5000);
        let b = sqe.to_bytes();
        assert_eq!((b[0], b[4]), (0x7f, fctype::CONNECT));
        assert_eq!(&b[40..42], &[0, 0], "RECFMT");
        assert_eq!(&b[42..44], &3u16.to_le_bytes(), "QID");
        assert_eq!(&b[44..46], &127u16.to_le_bytes(), "SQSIZE is zero based");
        assert_eq!(b[46], 4, "CATTR");
        assert_eq!(&b[48..52], &5000u32.to_le_bytes(), "KATO");
        let c = ConnectCommand::parse(&sqe).unwrap();
        assert_eq!(
            c,
            ConnectCommand {
                recfmt: 0,
                qid: 3,
                entries: 128,
                cattr: 4,
                kato_ms: 5000
            }
        );
        let err = ConnectCommand::parse(&property_get(0, PropertySize::Four)).unwrap_err();
        assert!(err.detail.contains("fctype 0x04"), "{err}");
    }

    #[test]
    fn connect_data_round_trips_and_checks_nqns() {
        let data = ConnectData {
            hostid: [0xab; 16],
            cntlid: CNTLID_DYNAMIC,
            subnqn: "nqn.2026-12.io.example:sub".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:0000".into(),
        };
        let b = data.to_bytes().unwrap();
        assert_eq!(&b[16..18], &[0xff, 0xff]);
        assert_eq!(&b[256..259], b"nqn");
        assert_eq!(b[256 + data.subnqn.len()], 0);
        assert_eq!(&b[512..515], b"nqn");
        assert_eq!(ConnectData::parse(&b).unwrap(), data);

        let long = ConnectData {
            subnqn: "n".repeat(NQN_MAX_LEN + 1),
            ..data.clone()
        };
        let err = long.to_bytes().unwrap_err();
        assert_eq!(err.what, "subsystem NQN");
        assert!(err.detail.starts_with("224 bytes"), "{err}");
        let empty = ConnectData {
            hostnqn: String::new(),
            ..data.clone()
        };
        assert_eq!(empty.to_bytes().unwrap_err().what, "host NQN");

        let mut unterminated = b;
        unterminated[512..768].fill(b'x');
        let err = ConnectData::parse(&unterminated).unwrap_err();
        assert_eq!(err.what, "host NQN");
        assert!(err.detail.contains("NUL terminated"), "{err}");
        let mut bad_utf8 = b;
        bad_utf8[256] = 0xff;
        assert!(ConnectData::parse(&bad_utf8)
            .unwrap_err()
            .detail
            .contains("UTF-8"));
        assert!(ConnectData::parse(&b[..1023]).is_err());
    }

    #[test]
    fn connect_responses_decode() {
        let ok = Cqe {
            dw0: 0x0002_0007,
            ..Cqe::default()
        };
        let r = ConnectResponse::from_cqe(&ok);
        assert_eq!((r.cntlid, r.authreq), (7, 1), "ATR is bit 17");
        assert_eq!(r.to_dw0(), ok.dw0);

        let bad = InvalidParameter::from_dw0(0x0001_0200);
        assert!(bad.in_data);
        assert_eq!((bad.offset, bad.field()), (512, "HOSTNQN"));
        assert_eq!(InvalidParameter::from_dw0(bad.to_dw0()), bad);
        let st = Status::new(sct::COMMAND_SPECIFIC, status::INVALID_PARAMETERS, true);
        assert_eq!(
            describe_status(st, 0x0001_0100),
            "connect invalid parameters: SUBNQN (offset 256 in the data) (sct 0x1, sc 0x82)"
        );
        let st = Status::new(sct::COMMAND_SPECIFIC, status::INVALID_HOST, true);
        assert!(describe_status(st, 0).starts_with("connect invalid host"));
        let generic = Status::new(sct::GENERIC, 0x02, false);
        assert_eq!(describe_status(generic, 0), generic.to_string());
    }
}
