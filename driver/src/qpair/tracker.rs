// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Trackers and command identifiers: one tracker per command a queue pair may have in
//! flight, and the stack of free command identifiers.
//!
//! A command identifier (CID) is the tracker's index in its low bits and, above them,
//! a count of the tracker's reuses (its generation), as Linux does since 5.16 (the
//! `genctr` of `nvme_cid`). A completion must name the CID exactly: one for a command
//! that ended already (a device posting a completion twice, or late, after the
//! tracker went to a new command) carries an old generation and is refused as a
//! stray, instead of ending the new command before the device executed it. SPDK
//! reuses the bare index and cannot tell.
//!
//! The shape keeps that check to one compare on the data path: the free stack holds
//! whole CIDs (the next generation of each free tracker, stepped once, when the
//! tracker is given back), and each tracker holds the one word a completion must
//! match ([`Tracker::expect`]): its CID while its command is in flight, a value no
//! CID has otherwise.
//!
//! A CID is taken ([`Trackers::take`]) when a command is built, armed with the
//! caller's context when it is posted, and given back ([`Trackers::give_back`]) when
//! its completion (or a reset or failure) ends it. The two are paired: a CID taken
//! is not free and its tracker idle; a CID given back was in flight and is free
//! after, exactly once.
//!
//! A command whose deadline passed gets an Abort (NVMe Base 2.0, section 5.1), which
//! names it by CID. Its tracker is not given back while that Abort is out, even when
//! the command's completion comes first: reused, the CID could name a new command
//! that the Abort would then end (SPDK has this gap). The tracker is parked instead
//! ([`Trackers::end_aborted`]) and freed when the admin side reports the Abort ended
//! ([`Trackers::abort_ended`]), or at a reset.

/// No split request: the command is a request of its own.
pub(super) const NO_PARENT: u16 = u16::MAX;

/// [`Tracker::expect`] of a free tracker: no CID (16 bits) equals it.
const IDLE: u32 = u32::MAX;
/// [`Tracker::expect`] bits above the CID, for a command an Abort was asked for.
/// Any of them set, a completion no longer matches on the data path's one compare
/// and goes to [`Trackers::end_aborted`].
const ABORT_SENT: u32 = 1 << 16;
/// The Abort ended (the command may still complete).
const ABORT_ENDED: u32 = 1 << 17;
/// The command ended while its Abort was out: the tracker is parked.
const COMMAND_ENDED: u32 = 1 << 18;

/// One command in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tracker {
    /// What ends this command: its CID while in flight (bits 15:0), with
    /// [`ABORT_SENT`] and the bits after it once an Abort was asked for; [`IDLE`]
    /// when free. A completion whose CID equals it is this command's.
    pub expect: u32,
    /// The split request it belongs to, or [`NO_PARENT`].
    pub parent: u16,
    /// The caller's context (for a command that is a request of its own).
    pub ctx: u64,
    /// When it expires, in [`crate::clock`] ticks.
    pub deadline: u64,
}

impl Tracker {
    /// The command is in flight: the device still owes its completion.
    #[inline]
    pub fn active(&self) -> bool {
        self.expect != IDLE && self.expect & COMMAND_ENDED == 0
    }

    /// An Abort was asked for this command.
    #[inline]
    pub fn abort_sent(&self) -> bool {
        self.active() && self.expect & ABORT_SENT != 0
    }

    /// The command's CID (meaningful when not free).
    #[inline]
    pub fn cid(&self) -> u16 {
        self.expect as u16
    }
}

const FREE: Tracker = Tracker {
    expect: IDLE,
    parent: NO_PARENT,
    ctx: 0,
    deadline: 0,
};

/// The trackers of a queue pair and its free CIDs.
#[derive(Debug)]
pub(super) struct Trackers {
    trackers: Box<[Tracker]>,
    /// Free CIDs, a stack: `free[..free_len]`. Each is the next CID of its tracker.
    free: Box<[u16]>,
    free_len: usize,
    /// The index bits of a CID; the bits above are the generation.
    index_mask: u16,
    /// One generation: `index_mask + 1` (0 when the index takes all 16 bits).
    step: u16,
    /// Trackers parked: their command ended, their Abort is still out.
    parked: usize,
}

impl Trackers {
    /// `n` trackers, all free (tracker 0 is taken first).
    pub fn new(n: usize) -> Trackers {
        assert!(
            n < NO_PARENT as usize,
            "CIDs are 16 bits and one value is reserved"
        );
        // One index more than needed: the all-ones index is never used, so no CID is
        // FFFFh (NVMe base 2.0, 4.2: it means "no command" in the error log and in
        // Abort results).
        let index_bits = (n + 1).next_power_of_two().trailing_zeros();
        let index_mask = ((1u32 << index_bits) - 1) as u16;
        let step = index_mask.wrapping_add(1);
        Trackers {
            trackers: vec![FREE; n].into_boxed_slice(),
            // Generation 1 first: a CID 0 from a device that zeroed its entry is stray.
            free: (0..n as u16).rev().map(|i| i.wrapping_add(step)).collect(),
            free_len: n,
            index_mask,
            step,
            parked: 0,
        }
    }

    /// The tracker index a CID names.
    #[inline(always)]
    pub fn index(&self, cid: u16) -> usize {
        (cid & self.index_mask) as usize
    }

    /// Commands that may be in flight at once.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.trackers.len()
    }

    /// True when a CID is free.
    #[inline(always)]
    pub fn any_free(&self) -> bool {
        self.free_len > 0
    }

    /// Takes a free CID, if there is one.
    #[inline(always)]
    pub fn take(&mut self) -> Option<u16> {
        if self.free_len == 0 {
            return None;
        }
        self.free_len -= 1;
        // SAFETY: `free_len <= free.len()` always (it starts there and `release`
        // never pushes past), so after the decrement it is in bounds.
        let cid = unsafe { *self.free.get_unchecked(self.free_len) };
        debug_assert!(
            self.trackers[self.index(cid)].expect == IDLE,
            "a free tracker has no command"
        );
        Some(cid)
    }

    /// Arms the tracker of `cid` (taken, not yet in flight) for a command posted now.
    #[inline(always)]
    pub fn arm(&mut self, cid: u16, parent: u16, ctx: u64, deadline: u64) {
        let index = self.index(cid);
        // SAFETY: CIDs come from `take`, whose index bits name a tracker (the free
        // stack holds only CIDs of `0..trackers.len()`).
        let t = unsafe { self.trackers.get_unchecked_mut(index) };
        debug_assert!(t.expect == IDLE, "CID {cid} armed while not free");
        *t = Tracker {
            expect: cid as u32,
            parent,
            ctx,
            deadline,
        };
    }

    /// True if `cid` names a command in flight, generation included, with no Abort
    /// asked for it (the device's word is checked here; a command with an Abort is
    /// [`end_aborted`](Self::end_aborted)'s).
    #[inline(always)]
    pub fn in_flight(&self, cid: u16) -> bool {
        self.trackers
            .get(self.index(cid))
            .is_some_and(|t| t.expect == cid as u32)
    }

    /// True if `cid` names a command in flight, an Abort asked for it or not.
    pub fn names_command(&self, cid: u16) -> bool {
        self.trackers
            .get(self.index(cid))
            .is_some_and(|t| t.active() && t.cid() == cid)
    }

    /// True if tracker `index` has a command in flight (an Abort asked for it or not).
    pub fn active_at(&self, index: usize) -> bool {
        self.trackers[index].active()
    }

    /// Ends the command of `cid` (in flight, [`in_flight`](Self::in_flight)): its
    /// CID is free again. Returns what the tracker held (parent, context).
    #[inline(always)]
    pub fn give_back(&mut self, cid: u16) -> (u16, u64) {
        let index = self.index(cid);
        debug_assert!(index < self.trackers.len());
        // SAFETY: `cid` names a command in flight (checked by the caller with
        // `in_flight`), so its index is a tracker's.
        let t = unsafe { self.trackers.get_unchecked_mut(index) };
        debug_assert!(
            t.expect == cid as u32,
            "CID {cid} given back while not in flight"
        );
        t.expect = IDLE;
        let held = (t.parent, t.ctx);
        self.release(cid);
        held
    }

    /// Pushes the next CID of `cid`'s tracker (now free) on the free stack.
    #[inline(always)]
    fn release(&mut self, cid: u16) {
        debug_assert!(
            self.free_len < self.free.len(),
            "more CIDs given back than taken"
        );
        // Never more free CIDs than trackers: each given back was taken first. The
        // generation steps here, once per use; the index bits stay.
        if let Some(slot) = self.free.get_mut(self.free_len) {
            *slot = cid.wrapping_add(self.step);
            self.free_len += 1;
        }
    }

    /// Marks the command on tracker `index` (in flight) as having an Abort asked for
    /// it. Returns its CID.
    pub fn abort_sent(&mut self, index: usize) -> u16 {
        let t = &mut self.trackers[index];
        debug_assert!(t.active() && !t.abort_sent());
        t.expect |= ABORT_SENT;
        t.cid()
    }

    /// The completion of `cid`, a command with an Abort asked for: what the tracker
    /// held (parent, context), or `None` if `cid` names no such command in flight.
    /// The tracker is given back if the Abort ended already, else parked until it
    /// does.
    #[cold]
    pub fn end_aborted(&mut self, cid: u16) -> Option<(u16, u64)> {
        let index = self.index(cid);
        let t = self.trackers.get_mut(index)?;
        if t.expect & !ABORT_ENDED != cid as u32 | ABORT_SENT {
            return None;
        }
        let held = (t.parent, t.ctx);
        if t.expect & ABORT_ENDED != 0 {
            t.expect = IDLE;
            self.release(cid);
        } else {
            t.expect |= COMMAND_ENDED;
            self.parked += 1;
        }
        Some(held)
    }

    /// The admin side reports the Abort of `cid` ended: a parked tracker is given
    /// back; a command still in flight completes as usual. A report for a command
    /// that is gone (a reset ended it) is ignored. Returns true if a tracker was
    /// given back.
    #[cold]
    pub fn abort_ended(&mut self, cid: u16) -> bool {
        let index = self.index(cid);
        let Some(t) = self.trackers.get_mut(index) else {
            return false;
        };
        if t.expect == cid as u32 | ABORT_SENT | COMMAND_ENDED {
            t.expect = IDLE;
            self.parked -= 1;
            self.release(cid);
            return true;
        }
        if t.expect == cid as u32 | ABORT_SENT {
            t.expect |= ABORT_ENDED;
        }
        false
    }

    /// Gives back every parked tracker (a reset or failure: the device forgot every
    /// command, an Abort can no longer end a new one).
    #[cold]
    pub fn release_parked(&mut self) {
        for index in 0..self.trackers.len() {
            let t = &mut self.trackers[index];
            if t.expect != IDLE && t.expect & COMMAND_ENDED != 0 {
                let cid = t.cid();
                t.expect = IDLE;
                self.parked -= 1;
                self.release(cid);
            }
        }
        debug_assert_eq!(self.parked, 0);
    }

    /// Ends the command on tracker `index` (in flight, with or without an Abort)
    /// whatever its Abort does: a reset or failure completes it. Returns what it held.
    #[cold]
    pub fn give_back_at(&mut self, index: usize) -> (u16, u64) {
        let t = &mut self.trackers[index];
        debug_assert!(t.active(), "tracker {index} given back while not in flight");
        let cid = t.cid();
        t.expect = IDLE;
        let held = (t.parent, t.ctx);
        self.release(cid);
        held
    }

    /// Trackers parked (command ended, Abort out).
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// A tracker, by index (for the timeout scan).
    #[inline(always)]
    pub fn get_mut(&mut self, index: usize) -> &mut Tracker {
        &mut self.trackers[index]
    }

    /// True when no command is in flight and none is parked: every CID is free.
    pub fn all_free(&self) -> bool {
        self.free_len == self.free.len()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_give_back_pair() {
        let mut t = Trackers::new(3);
        let a = t.take().unwrap();
        let b = t.take().unwrap();
        let c = t.take().unwrap();
        // Three trackers: two index bits (index 3 unused), generation 1 above them.
        assert_eq!((a, b, c), (4, 5, 6));
        assert_eq!(t.take(), None);
        t.arm(b, NO_PARENT, 7, 0);
        assert!(t.in_flight(b) && !t.in_flight(a) && !t.in_flight(9));
        assert_eq!(t.give_back(b), (NO_PARENT, 7));
        assert!(!t.in_flight(b));
        // The same tracker, the next generation: the old CID is not in flight.
        let b2 = t.take().unwrap();
        assert_eq!((b2 & 3, b2), (1, 9));
        t.arm(b2, NO_PARENT, 8, 0);
        assert!(t.in_flight(b2) && !t.in_flight(b), "a stale CID is refused");
    }

    #[test]
    fn generations_wrap_and_skip_ffff() {
        // 3 trackers: 2 index bits (index 3, whose CIDs could reach FFFFh, unused),
        // 14 generation bits.
        let mut t = Trackers::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(1 << 15) {
            let cids: Vec<u16> = (0..3).map(|_| t.take().unwrap()).collect();
            for &cid in &cids {
                assert_ne!(cid, u16::MAX);
                assert_eq!(t.index(cid), (cid & 3) as usize);
                seen.insert(cid);
                t.arm(cid, NO_PARENT, 0, 0);
            }
            for cid in cids {
                t.give_back(cid);
            }
        }
        // Every 16-bit value with index bits 0, 1 or 2 was used: 3 of every 4.
        assert_eq!(seen.len(), 3 << 14);
    }

    #[test]
    fn the_largest_queue_has_no_generation_bits() {
        let mut t = Trackers::new(40_000);
        let cid = t.take().unwrap();
        assert_eq!(cid, 0, "16 index bits: the CID is the index");
    }
}
