// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Log pages (section 5.16: SMART / health, error information, ANA) and async events
//! (section 5.2), with their parsers.

use super::identify::{le128, le16, le32, le64, need, ParseError};
use super::Status;

/// SMART / Health Information log page (section 5.16.1.3, figure 207).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmartLog {
    /// Critical Warning bits.
    pub critical_warning: u8,
    /// Composite Temperature, kelvin.
    pub temperature_k: u16,
    /// Available Spare, percent.
    pub available_spare: u8,
    /// Available Spare Threshold, percent.
    pub available_spare_threshold: u8,
    /// Percentage Used.
    pub percentage_used: u8,
    /// Data Units Read (thousands of 512-byte units).
    pub data_units_read: u128,
    /// Data Units Written.
    pub data_units_written: u128,
    /// Host Read Commands.
    pub host_read_commands: u128,
    /// Host Write Commands.
    pub host_write_commands: u128,
    /// Controller Busy Time, minutes.
    pub controller_busy_time: u128,
    /// Power Cycles.
    pub power_cycles: u128,
    /// Power On Hours.
    pub power_on_hours: u128,
    /// Unsafe Shutdowns.
    pub unsafe_shutdowns: u128,
    /// Media and Data Integrity Errors.
    pub media_errors: u128,
    /// Number of Error Information Log Entries.
    pub num_err_log_entries: u128,
}

/// Size of the SMART log page.
pub const SMART_LOG_SIZE: usize = 512;

impl SmartLog {
    /// Parses the SMART / Health Information log page.
    pub fn parse(d: &[u8]) -> Result<Self, ParseError> {
        need("SMART log", d, SMART_LOG_SIZE)?;
        Ok(SmartLog {
            critical_warning: d[0],
            temperature_k: le16(d, 1),
            available_spare: d[3],
            available_spare_threshold: d[4],
            percentage_used: d[5],
            data_units_read: le128(d, 32),
            data_units_written: le128(d, 48),
            host_read_commands: le128(d, 64),
            host_write_commands: le128(d, 80),
            controller_busy_time: le128(d, 96),
            power_cycles: le128(d, 112),
            power_on_hours: le128(d, 128),
            unsafe_shutdowns: le128(d, 144),
            media_errors: le128(d, 160),
            num_err_log_entries: le128(d, 176),
        })
    }
}

/// One Error Information log entry (section 5.16.1.2, figure 206).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorLogEntry {
    /// Error Count (0 = entry unused).
    pub error_count: u64,
    /// Submission Queue ID.
    pub sqid: u16,
    /// Command ID.
    pub cid: u16,
    /// Status field.
    pub status: Status,
    /// LBA.
    pub lba: u64,
    /// Namespace.
    pub nsid: u32,
}

/// Size of an error log entry.
pub const ERROR_LOG_ENTRY_SIZE: usize = 64;

/// Parses Error Information log entries, skipping unused ones (error count 0).
pub fn parse_error_log(d: &[u8]) -> Vec<ErrorLogEntry> {
    d.chunks_exact(ERROR_LOG_ENTRY_SIZE)
        .filter(|e| le64(e, 0) != 0)
        .map(|e| ErrorLogEntry {
            error_count: le64(e, 0),
            sqid: le16(e, 8),
            cid: le16(e, 10),
            status: Status::from_field(le16(e, 12) >> 1),
            lba: le64(e, 16),
            nsid: le32(e, 24),
        })
        .collect()
}

/// ANA states (section 8.20.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnaState {
    /// Optimized.
    Optimized,
    /// Non-optimized.
    NonOptimized,
    /// Inaccessible.
    Inaccessible,
    /// Persistent loss.
    PersistentLoss,
    /// Change (transitioning).
    Change,
}

impl AnaState {
    /// Decodes an ANA state value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v & 0xf {
            1 => AnaState::Optimized,
            2 => AnaState::NonOptimized,
            3 => AnaState::Inaccessible,
            4 => AnaState::PersistentLoss,
            0xf => AnaState::Change,
            _ => return None,
        })
    }
    /// The encoding of the state.
    pub fn to_u8(self) -> u8 {
        match self {
            AnaState::Optimized => 1,
            AnaState::NonOptimized => 2,
            AnaState::Inaccessible => 3,
            AnaState::PersistentLoss => 4,
            AnaState::Change => 0xf,
        }
    }
    /// I/O may be sent on a path in this state.
    pub fn is_usable(self) -> bool {
        matches!(self, AnaState::Optimized | AnaState::NonOptimized)
    }
}

/// One ANA group descriptor of the ANA log page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnaGroup {
    /// ANA Group ID.
    pub grpid: u32,
    /// Change count.
    pub change_count: u64,
    /// State.
    pub state: AnaState,
    /// Namespaces in the group.
    pub nsids: Vec<u32>,
}

/// The Asymmetric Namespace Access log page (section 5.16.1.13, figure 227).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnaLog {
    /// Change count.
    pub change_count: u64,
    /// Group descriptors.
    pub groups: Vec<AnaGroup>,
}

impl AnaLog {
    /// Parses an ANA log page, checking every descriptor against the buffer length.
    pub fn parse(d: &[u8]) -> Result<Self, ParseError> {
        const W: &str = "ANA log";
        need(W, d, 16)?;
        let change_count = le64(d, 0);
        let ndesc = le16(d, 8) as usize;
        let mut o = 16;
        let mut groups = Vec::with_capacity(ndesc.min(64));
        for i in 0..ndesc {
            if o + 32 > d.len() {
                return Err(ParseError {
                    what: W,
                    detail: format!(
                        "descriptor {i} of {ndesc} at offset {o} runs past {} bytes",
                        d.len()
                    ),
                });
            }
            let nnsid = le32(d, o + 4) as usize;
            let end = o + 32 + 4 * nnsid;
            if nnsid > 1 << 20 || end > d.len() {
                return Err(ParseError {
                    what: W,
                    detail: format!(
                        "descriptor {i} lists {nnsid} namespaces, past {} bytes",
                        d.len()
                    ),
                });
            }
            let state = AnaState::from_u8(d[o + 16]).ok_or_else(|| ParseError {
                what: W,
                detail: format!("descriptor {i} has invalid state {:#x}", d[o + 16]),
            })?;
            groups.push(AnaGroup {
                grpid: le32(d, o),
                change_count: le64(d, o + 8),
                state,
                nsids: (0..nnsid).map(|k| le32(d, o + 32 + 4 * k)).collect(),
            });
            o = end;
        }
        Ok(AnaLog {
            change_count,
            groups,
        })
    }
}

/// Asynchronous event information decoded from an AER completion's DW0 (section
/// 5.2, figure 150).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Asynchronous Event Type (0 error, 1 SMART/health, 2 notice, 6 I/O command set,
    /// 7 vendor).
    pub event_type: u8,
    /// Asynchronous Event Information.
    pub info: u8,
    /// Log page to read to clear the event.
    pub log_page: u8,
}

impl AsyncEvent {
    /// Notice type: ANA change.
    pub const NOTICE_ANA_CHANGE: u8 = 0x03;
    /// Notice type: namespace attribute changed.
    pub const NOTICE_NS_CHANGED: u8 = 0x00;

    /// Decodes an AER completion's DW0.
    pub const fn from_dw0(dw0: u32) -> Self {
        AsyncEvent {
            event_type: (dw0 & 7) as u8,
            info: (dw0 >> 8) as u8,
            log_page: (dw0 >> 16) as u8,
        }
    }
    /// Encodes DW0 (used by the software controller).
    pub const fn to_dw0(self) -> u32 {
        (self.event_type as u32 & 7) | (self.info as u32) << 8 | (self.log_page as u32) << 16
    }
    /// True for an ANA change notice.
    pub const fn is_ana_change(self) -> bool {
        self.event_type == 2 && self.info == Self::NOTICE_ANA_CHANGE
    }
    /// True for a Namespace Attribute Changed notice (type Notice, information 00h,
    /// log page 04h): the Identify Namespace data of the namespaces in the Changed
    /// Namespace List changed (their size, for example).
    pub const fn is_ns_changed(self) -> bool {
        self.event_type == 2 && self.info == Self::NOTICE_NS_CHANGED
    }
}

/// Size of the Changed Namespace List log page: 1024 NSIDs (section 5.16.1.5).
pub const CHANGED_NS_LIST_SIZE: usize = 4096;

/// The Changed Namespace List log page (section 5.16.1.5, log page 04h): which
/// namespaces' Identify Namespace data changed since the host last read the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangedNamespaces {
    /// These namespaces, in increasing order (empty when nothing changed).
    Listed(Vec<u32>),
    /// More than 1024 changed (the first entry is FFFFFFFFh): re-identify every one.
    All,
}

impl ChangedNamespaces {
    /// True if namespace `nsid` may have changed.
    pub fn contains(&self, nsid: u32) -> bool {
        match self {
            ChangedNamespaces::Listed(ids) => ids.contains(&nsid),
            ChangedNamespaces::All => true,
        }
    }

    /// Parses the page: NSIDs in increasing order, ended by 0 (or the 1024th entry);
    /// FFFFFFFFh only as the first entry, meaning "more than 1024".
    pub fn parse(d: &[u8]) -> Result<Self, ParseError> {
        const W: &str = "changed namespace list";
        need(W, d, CHANGED_NS_LIST_SIZE)?;
        if le32(d, 0) == u32::MAX {
            return Ok(ChangedNamespaces::All);
        }
        let mut ids: Vec<u32> = Vec::new();
        for i in 0..CHANGED_NS_LIST_SIZE / 4 {
            let id = le32(d, 4 * i);
            if id == 0 {
                break;
            }
            if id == u32::MAX || ids.last().is_some_and(|&l| id <= l) {
                return Err(ParseError {
                    what: W,
                    detail: format!("entry {i}, NSID {id:#x}, does not increase"),
                });
            }
            ids.push(id);
        }
        Ok(ChangedNamespaces::Listed(ids))
    }
}
