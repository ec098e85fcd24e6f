// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Controller registers (NVMe Base Specification 2.0, section 3.1.3, "Controller
//! Properties"), and the doorbell layout (section 3.1.3.x, `SQyTDBL`/`CQyHDBL`).
//!
//! Registers are `Copy` newtypes with `const fn` getters; the offsets are checked at
//! compile time against a `#[repr(C)]` image of the register file.

// The controller logic reads and writes these through its transport's
// `get_property32`/`set_property32` (`crate::transport::CtrlTransport`): BAR0 on PCIe,
// Property Get and Set commands (same offsets and sizes) over a fabric.

/// Image of the start of BAR0, used only to check register offsets at compile time.
#[repr(C)]
#[allow(dead_code)]
struct Regs {
    cap: u64,
    vs: u32,
    intms: u32,
    intmc: u32,
    cc: u32,
    rsvd0: u32,
    csts: u32,
    nssr: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
}

/// Offset of CAP, Controller Capabilities (64 bit).
pub const CAP: usize = 0x00;
/// Offset of VS, Version.
pub const VS: usize = 0x08;
/// Offset of INTMS, Interrupt Mask Set.
pub const INTMS: usize = 0x0c;
/// Offset of CC, Controller Configuration.
pub const CC: usize = 0x14;
/// Offset of CSTS, Controller Status.
pub const CSTS: usize = 0x1c;
/// Offset of AQA, Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Offset of ASQ, Admin Submission Queue Base Address (64 bit).
pub const ASQ: usize = 0x28;
/// Offset of ACQ, Admin Completion Queue Base Address (64 bit).
pub const ACQ: usize = 0x30;
/// Offset of the first doorbell (SQ0TDBL).
pub const DOORBELL_BASE: usize = 0x1000;

const _: () = assert!(core::mem::offset_of!(Regs, cap) == CAP);
const _: () = assert!(core::mem::offset_of!(Regs, vs) == VS);
const _: () = assert!(core::mem::offset_of!(Regs, intms) == INTMS);
const _: () = assert!(core::mem::offset_of!(Regs, cc) == CC);
const _: () = assert!(core::mem::offset_of!(Regs, csts) == CSTS);
const _: () = assert!(core::mem::offset_of!(Regs, aqa) == AQA);
const _: () = assert!(core::mem::offset_of!(Regs, asq) == ASQ);
const _: () = assert!(core::mem::offset_of!(Regs, acq) == ACQ);

/// Offset of the submission queue tail doorbell of queue `qid` (section 3.1.3.23).
pub const fn sq_tail_doorbell(qid: u16, dstrd: u32) -> usize {
    DOORBELL_BASE + (2 * qid as usize) * (4usize << dstrd)
}

/// Offset of the completion queue head doorbell of queue `qid` (section 3.1.3.24).
pub const fn cq_head_doorbell(qid: u16, dstrd: u32) -> usize {
    DOORBELL_BASE + (2 * qid as usize + 1) * (4usize << dstrd)
}

/// CAP, Controller Capabilities (section 3.1.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Maximum Queue Entries Supported, as a count (the field is zero based).
    pub const fn mqes_entries(self) -> u32 {
        (self.0 & 0xffff) as u32 + 1
    }
    /// Contiguous Queues Required.
    pub const fn cqr(self) -> bool {
        self.0 >> 16 & 1 == 1
    }
    /// Timeout, in 500 ms units: the worst-case time to wait for CSTS.RDY to change.
    pub const fn to(self) -> u32 {
        (self.0 >> 24 & 0xff) as u32
    }
    /// Timeout in milliseconds.
    pub const fn timeout_ms(self) -> u64 {
        self.to() as u64 * 500
    }
    /// Doorbell Stride: doorbells are `4 << dstrd` bytes apart.
    pub const fn dstrd(self) -> u32 {
        (self.0 >> 32 & 0xf) as u32
    }
    /// NVM Subsystem Reset Supported.
    pub const fn nssrs(self) -> bool {
        self.0 >> 36 & 1 == 1
    }
    /// Command Sets Supported (bit 0 is the NVM command set).
    pub const fn css(self) -> u8 {
        (self.0 >> 37 & 0xff) as u8
    }
    /// Memory Page Size Minimum, as a shift (page size = 1 << shift).
    pub const fn mpsmin_shift(self) -> u32 {
        12 + (self.0 >> 48 & 0xf) as u32
    }
    /// Memory Page Size Maximum, as a shift.
    pub const fn mpsmax_shift(self) -> u32 {
        12 + (self.0 >> 52 & 0xf) as u32
    }
}

/// VS, Version (section 3.1.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vs(pub u32);

impl Vs {
    /// Major version.
    pub const fn major(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// Minor version.
    pub const fn minor(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Tertiary version.
    pub const fn tertiary(self) -> u8 {
        self.0 as u8
    }
}

/// CC, Controller Configuration (section 3.1.3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cc(pub u32);

impl Cc {
    /// Enable.
    pub const fn en(self) -> bool {
        self.0 & 1 == 1
    }
    /// Sets Enable.
    pub const fn with_en(self, en: bool) -> Self {
        Cc(self.0 & !1 | en as u32)
    }
    /// I/O Command Set Selected (0 = NVM command set).
    pub const fn css(self) -> u32 {
        self.0 >> 4 & 7
    }
    /// Memory Page Size as a shift (page size = 1 << shift); the field holds shift - 12.
    pub const fn mps_shift(self) -> u32 {
        12 + (self.0 >> 7 & 0xf)
    }
    /// Sets the memory page size, given as a shift (12 for 4 KiB).
    pub const fn with_mps_shift(self, shift: u32) -> Self {
        Cc(self.0 & !(0xf << 7) | ((shift - 12) & 0xf) << 7)
    }
    /// Arbitration Mechanism Selected.
    pub const fn ams(self) -> u32 {
        self.0 >> 11 & 7
    }
    /// Shutdown Notification (0 none, 1 normal, 2 abrupt).
    pub const fn shn(self) -> u32 {
        self.0 >> 14 & 3
    }
    /// Sets Shutdown Notification.
    pub const fn with_shn(self, shn: u32) -> Self {
        Cc(self.0 & !(3 << 14) | (shn & 3) << 14)
    }
    /// I/O Submission Queue Entry Size, as a shift (6 = 64 bytes).
    pub const fn iosqes(self) -> u32 {
        self.0 >> 16 & 0xf
    }
    /// I/O Completion Queue Entry Size, as a shift (4 = 16 bytes).
    pub const fn iocqes(self) -> u32 {
        self.0 >> 20 & 0xf
    }
    /// Sets IOSQES and IOCQES.
    pub const fn with_entry_sizes(self, sqes: u32, cqes: u32) -> Self {
        Cc(self.0 & !(0xff << 16) | (sqes & 0xf) << 16 | (cqes & 0xf) << 20)
    }
}

/// CSTS, Controller Status (section 3.1.3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Csts(pub u32);

impl Csts {
    /// Ready.
    pub const fn rdy(self) -> bool {
        self.0 & 1 == 1
    }
    /// Controller Fatal Status.
    pub const fn cfs(self) -> bool {
        self.0 >> 1 & 1 == 1
    }
    /// Shutdown Status (2 = shutdown processing complete).
    pub const fn shst(self) -> u32 {
        self.0 >> 2 & 3
    }
    /// A register read of all ones: the device is gone (surprise removal) or the link
    /// is down. SPDK and Linux both treat this as removal.
    pub const fn is_all_ones(self) -> bool {
        self.0 == u32::MAX
    }
}

/// AQA, Admin Queue Attributes (section 3.1.3.8): both sizes zero based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aqa(pub u32);

impl Aqa {
    /// AQA for an admin SQ and CQ of `sq_entries` and `cq_entries` entries.
    pub const fn new(sq_entries: u32, cq_entries: u32) -> Self {
        Aqa(((cq_entries - 1) & 0xfff) << 16 | ((sq_entries - 1) & 0xfff))
    }
    /// Admin Submission Queue Size, as a count.
    pub const fn asqs_entries(self) -> u32 {
        (self.0 & 0xfff) + 1
    }
    /// Admin Completion Queue Size, as a count.
    pub const fn acqs_entries(self) -> u32 {
        (self.0 >> 16 & 0xfff) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_cap_decodes() {
        // CAP as read back from QEMU 7.2's controller (TESTBED.md).
        let cap = Cap(0x004018200f0107ff);
        assert_eq!(cap.mqes_entries(), 2048);
        assert!(cap.cqr());
        assert_eq!(cap.to(), 15);
        assert_eq!(cap.timeout_ms(), 7500);
        assert_eq!(cap.dstrd(), 0);
        assert_eq!(cap.css() & 1, 1);
        assert_eq!(cap.mpsmin_shift(), 12);
        assert_eq!(cap.mpsmax_shift(), 16);
    }

    #[test]
    fn cc_round_trips() {
        let cc = Cc::default()
            .with_mps_shift(12)
            .with_entry_sizes(6, 4)
            .with_en(true);
        assert!(cc.en());
        assert_eq!(cc.mps_shift(), 12);
        assert_eq!(cc.iosqes(), 6);
        assert_eq!(cc.iocqes(), 4);
        assert_eq!(cc.0, 0x0046_0001);
        assert_eq!(cc.with_shn(1).shn(), 1);
        assert!(!cc.with_en(false).en());
    }

    #[test]
    fn doorbells_follow_stride() {
        assert_eq!(sq_tail_doorbell(0, 0), 0x1000);
        assert_eq!(cq_head_doorbell(0, 0), 0x1004);
        assert_eq!(sq_tail_doorbell(1, 0), 0x1008);
        assert_eq!(cq_head_doorbell(3, 2), 0x1000 + 7 * 16);
    }

    #[test]
    fn aqa_and_csts() {
        let aqa = Aqa::new(32, 32);
        assert_eq!(aqa.0, 0x001f_001f);
        assert_eq!(aqa.asqs_entries(), 32);
        assert_eq!(aqa.acqs_entries(), 32);
        assert!(Csts(u32::MAX).is_all_ones());
        assert!(Csts(3).cfs() && Csts(3).rdy());
        assert_eq!(Csts(8).shst(), 2);
    }
}
