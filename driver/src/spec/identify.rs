// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Identify data (section 5.17): controller, namespace, the active namespace list and
//! namespace identification descriptors; the checked little-endian readers the parsers
//! share.

/// A device structure too short or inconsistent to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct ParseError {
    /// The structure.
    pub what: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

pub(super) fn need(what: &'static str, data: &[u8], len: usize) -> Result<(), ParseError> {
    if data.len() < len {
        return Err(ParseError {
            what,
            detail: format!("{} bytes, need at least {len}", data.len()),
        });
    }
    Ok(())
}

pub(super) fn le16(d: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([d[o], d[o + 1]])
}
pub(super) fn le32(d: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]])
}
pub(super) fn le64(d: &[u8], o: usize) -> u64 {
    le32(d, o) as u64 | (le32(d, o + 4) as u64) << 32
}
pub(super) fn le128(d: &[u8], o: usize) -> u128 {
    le64(d, o) as u128 | (le64(d, o + 8) as u128) << 64
}
pub(super) fn ascii(d: &[u8]) -> String {
    let s: String = d
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                ' '
            }
        })
        .collect();
    s.trim_end().to_string()
}

/// Identify Controller data structure (section 5.17.2.1, figure 275), the fields
/// this driver and its tools use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vid: u16,
    /// PCI Subsystem Vendor ID.
    pub ssvid: u16,
    /// Serial Number.
    pub sn: String,
    /// Model Number.
    pub mn: String,
    /// Firmware Revision.
    pub fr: String,
    /// Recommended Arbitration Burst.
    pub rab: u8,
    /// IEEE OUI Identifier.
    pub ieee: u32,
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: u8,
    /// Maximum Data Transfer Size, as a power of two of CAP.MPSMIN (0 = no limit).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Version.
    pub ver: u32,
    /// RTD3 Entry Latency, microseconds (bytes 91:88): the typical time from CC.SHN
    /// written to CSTS.SHST = 10b. Zero when not reported.
    pub rtd3e: u32,
    /// Optional Asynchronous Events Supported.
    pub oaes: u32,
    /// Controller Attributes.
    pub ctratt: u32,
    /// Optional Admin Command Support.
    pub oacs: u16,
    /// Abort Command Limit (zero based).
    pub acl: u8,
    /// Asynchronous Event Request Limit (zero based).
    pub aerl: u8,
    /// Log Page Attributes.
    pub lpa: u8,
    /// Error Log Page Entries (zero based).
    pub elpe: u8,
    /// Number of Power States Support (zero based).
    pub npss: u8,
    /// Warning Composite Temperature Threshold (kelvin).
    pub wctemp: u16,
    /// Critical Composite Temperature Threshold (kelvin).
    pub cctemp: u16,
    /// ANA Transition Time, seconds.
    pub anatt: u8,
    /// ANA Capabilities.
    pub anacap: u8,
    /// ANA Group Identifier Maximum.
    pub anagrpmax: u32,
    /// Number of ANA Group Identifiers.
    pub nanagrpid: u32,
    /// Submission Queue Entry Size (required and maximum, as shifts).
    pub sqes: u8,
    /// Completion Queue Entry Size.
    pub cqes: u8,
    /// Maximum Outstanding Commands.
    pub maxcmd: u16,
    /// Number of Namespaces (the largest valid NSID).
    pub nn: u32,
    /// Optional NVM Command Support.
    pub oncs: u16,
    /// Volatile Write Cache (bit 0: present; bits 2:1: Flush with NSID FFFFFFFFh).
    pub vwc: u8,
    /// SGL Support.
    pub sgls: u32,
    /// NVM Subsystem NVMe Qualified Name.
    pub subnqn: String,
}

/// Size of Identify data structures.
pub const IDENTIFY_SIZE: usize = 4096;

impl IdentifyController {
    /// Parses an Identify Controller data structure.
    pub fn parse(d: &[u8]) -> Result<Self, ParseError> {
        need("identify controller", d, IDENTIFY_SIZE)?;
        Ok(IdentifyController {
            vid: le16(d, 0),
            ssvid: le16(d, 2),
            sn: ascii(&d[4..24]),
            mn: ascii(&d[24..64]),
            fr: ascii(&d[64..72]),
            rab: d[72],
            ieee: u32::from_le_bytes([d[73], d[74], d[75], 0]),
            cmic: d[76],
            mdts: d[77],
            cntlid: le16(d, 78),
            ver: le32(d, 80),
            rtd3e: le32(d, 88),
            oaes: le32(d, 92),
            ctratt: le32(d, 96),
            oacs: le16(d, 256),
            acl: d[258],
            aerl: d[259],
            lpa: d[261],
            elpe: d[262],
            npss: d[263],
            wctemp: le16(d, 266),
            cctemp: le16(d, 268),
            anatt: d[342],
            anacap: d[343],
            anagrpmax: le32(d, 344),
            nanagrpid: le32(d, 348),
            sqes: d[512],
            cqes: d[513],
            maxcmd: le16(d, 514),
            nn: le32(d, 516),
            oncs: le16(d, 520),
            vwc: d[525],
            sgls: le32(d, 536),
            subnqn: ascii(&d[768..1024]),
        })
    }
    /// Maximum data transfer in bytes for a controller whose minimum page size is
    /// `1 << mps_shift`, or `None` when the controller sets no limit.
    pub fn max_transfer_bytes(&self, mps_shift: u32) -> Option<u64> {
        if self.mdts == 0 {
            None
        } else {
            Some(1u64 << (mps_shift + self.mdts.min(20) as u32))
        }
    }
    /// True when the controller reports Asymmetric Namespace Access (CMIC bit 3).
    pub fn ana_supported(&self) -> bool {
        self.cmic >> 3 & 1 == 1
    }
    /// True when Doorbell Buffer Config is supported (OACS bit 8).
    pub fn dbbuf_supported(&self) -> bool {
        self.oacs >> 8 & 1 == 1
    }
    /// True when Write Zeroes is supported (ONCS bit 3).
    pub fn write_zeroes_supported(&self) -> bool {
        self.oncs >> 3 & 1 == 1
    }
    /// True when the controller has a volatile write cache (VWC bit 0): what was
    /// written is durable only after a Flush (or a normal shutdown).
    pub fn volatile_write_cache(&self) -> bool {
        self.vwc & 1 == 1
    }
    /// True when Dataset Management is supported (ONCS bit 2).
    pub fn dsm_supported(&self) -> bool {
        self.oncs >> 2 & 1 == 1
    }
}

/// An LBA format (NVM Command Set Specification, figure 98).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbaFormat {
    /// Metadata size in bytes.
    pub ms: u16,
    /// LBA data size as a shift (9 = 512 bytes).
    pub lbads: u8,
    /// Relative performance.
    pub rp: u8,
}

/// Identify Namespace data structure (NVM Command Set Specification, section 4.1.5.1,
/// figure 97), the fields used here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifyNamespace {
    /// Namespace Size, in logical blocks.
    pub nsze: u64,
    /// Namespace Capacity.
    pub ncap: u64,
    /// Namespace Utilization.
    pub nuse: u64,
    /// Namespace Features.
    pub nsfeat: u8,
    /// Number of LBA Formats (zero based).
    pub nlbaf: u8,
    /// Formatted LBA Size.
    pub flbas: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// ANA Group Identifier.
    pub anagrpid: u32,
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBA formats.
    pub lbaf: Vec<LbaFormat>,
}

impl IdentifyNamespace {
    /// Parses an Identify Namespace data structure.
    pub fn parse(d: &[u8]) -> Result<Self, ParseError> {
        need("identify namespace", d, IDENTIFY_SIZE)?;
        let nlbaf = d[25];
        if nlbaf > 63 {
            return Err(ParseError {
                what: "identify namespace",
                detail: format!("NLBAF {nlbaf} exceeds 63"),
            });
        }
        let lbaf = (0..=nlbaf as usize)
            .map(|i| {
                let o = 128 + 4 * i;
                LbaFormat {
                    ms: le16(d, o),
                    lbads: d[o + 2],
                    rp: d[o + 3] & 3,
                }
            })
            .collect();
        let mut nguid = [0; 16];
        nguid.copy_from_slice(&d[104..120]);
        let mut eui64 = [0; 8];
        eui64.copy_from_slice(&d[120..128]);
        let ns = IdentifyNamespace {
            nsze: le64(d, 0),
            ncap: le64(d, 8),
            nuse: le64(d, 16),
            nsfeat: d[24],
            nlbaf,
            flbas: d[26],
            nmic: d[30],
            anagrpid: le32(d, 92),
            nguid,
            eui64,
            lbaf,
        };
        let f = ns.format_index();
        if f > ns.nlbaf as usize {
            return Err(ParseError {
                what: "identify namespace",
                detail: format!(
                    "FLBAS selects format {f}, but only {} exist",
                    ns.nlbaf as usize + 1
                ),
            });
        }
        let lbads = ns.lbaf[f].lbads;
        if !(9..=16).contains(&lbads) {
            return Err(ParseError {
                what: "identify namespace",
                detail: format!("LBA data size 2^{lbads} is outside 512 B to 64 KiB"),
            });
        }
        Ok(ns)
    }
    /// Index of the LBA format in use (FLBAS bits 3:0 and 6:5).
    pub fn format_index(&self) -> usize {
        (self.flbas & 0xf) as usize | ((self.flbas as usize >> 5) & 3) << 4
    }
    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.lbaf[self.format_index()].lbads
    }
    /// Metadata bytes per block in the format in use.
    pub fn metadata_size(&self) -> u16 {
        self.lbaf[self.format_index()].ms
    }
}

/// Parses an Active Namespace ID list (CNS 02h): NSIDs in increasing order, ended by 0.
pub fn parse_ns_list(d: &[u8]) -> Result<Vec<u32>, ParseError> {
    need("active namespace list", d, IDENTIFY_SIZE)?;
    let mut out = Vec::new();
    for i in 0..1024 {
        let id = le32(d, 4 * i);
        if id == 0 {
            break;
        }
        if out.last().is_some_and(|&l| id <= l) {
            return Err(ParseError {
                what: "active namespace list",
                detail: format!("NSID {id} does not increase"),
            });
        }
        out.push(id);
    }
    Ok(out)
}

/// Namespace identifiers from the Namespace Identification Descriptor list (CNS 03h,
/// section 5.17.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsIdentifiers {
    /// IEEE EUI-64, if reported.
    pub eui64: Option<[u8; 8]>,
    /// NGUID, if reported.
    pub nguid: Option<[u8; 16]>,
    /// UUID, if reported.
    pub uuid: Option<[u8; 16]>,
}

/// Parses a Namespace Identification Descriptor list.
pub fn parse_ns_descriptors(d: &[u8]) -> Result<NsIdentifiers, ParseError> {
    need("namespace identification descriptors", d, IDENTIFY_SIZE)?;
    let mut out = NsIdentifiers::default();
    let mut o = 0;
    while o + 4 <= IDENTIFY_SIZE {
        let (nidt, nidl) = (d[o], d[o + 1] as usize);
        if nidt == 0 {
            break;
        }
        let body = o + 4;
        if body + nidl > IDENTIFY_SIZE {
            return Err(ParseError {
                what: "namespace identification descriptors",
                detail: format!("descriptor at {o} runs past the end ({nidl} bytes)"),
            });
        }
        let v = &d[body..body + nidl];
        match (nidt, nidl) {
            (1, 8) => out.eui64 = v.try_into().ok(),
            (2, 16) => out.nguid = v.try_into().ok(),
            (3, 16) => out.uuid = v.try_into().ok(),
            (1..=3, _) => {
                return Err(ParseError {
                    what: "namespace identification descriptors",
                    detail: format!("type {nidt} with length {nidl}"),
                })
            }
            _ => {}
        }
        o = body + nidl;
    }
    Ok(out)
}
