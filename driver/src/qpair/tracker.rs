//! Trackers and command identifiers: one tracker per command a queue pair may have in
//! flight, and the stack of free trackers.
//!
//! A command identifier (CID) is the tracker's index in its low bits and, above them,
//! a count of the tracker's reuses (its generation), as Linux does since 5.16 (the
//! `genctr` of `nvme_cid`). A completion must name the CID exactly: one for a command
//! that ended already (a device posting a completion twice, or late, after the
//! tracker went to a new command) carries an old generation and is refused as a
//! stray, instead of ending the new command before the device executed it. SPDK
//! reuses the bare index and cannot tell.
//!
//! A CID is taken ([`Trackers::take`]) when a command is built, armed with the
//! caller's context when it is posted, and given back ([`Trackers::give_back`]) when
//! its completion (or a reset or failure) ends it. The two are paired: a CID taken
//! is not free and its tracker idle; a CID given back was in flight and is free
//! after, exactly once.

/// No split request: the command is a request of its own.
pub(super) const NO_PARENT: u16 = u16::MAX;

/// One command in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tracker {
    /// The command is in flight: a completion for [`Tracker::cid`] is expected.
    pub active: bool,
    /// The CID this tracker was last taken as (its index in the low bits).
    pub cid: u16,
    /// Its deadline passed once and an Abort was asked for.
    pub abort_sent: bool,
    /// The split request it belongs to, or [`NO_PARENT`].
    pub parent: u16,
    /// The caller's context (for a command that is a request of its own).
    pub ctx: u64,
    /// When it expires, in [`crate::clock`] ticks.
    pub deadline: u64,
}

const IDLE: Tracker = Tracker {
    active: false,
    cid: 0,
    abort_sent: false,
    parent: NO_PARENT,
    ctx: 0,
    deadline: 0,
};

/// The trackers of a queue pair and its free CIDs.
#[derive(Debug)]
pub(super) struct Trackers {
    trackers: Box<[Tracker]>,
    /// Free trackers' indexes, a stack: `free[..free_len]`.
    free: Box<[u16]>,
    free_len: usize,
    /// The index bits of a CID; the bits above are the generation.
    index_mask: u16,
    /// One generation: `index_mask + 1` (0 when the index takes all 16 bits).
    step: u16,
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
        let mut trackers = vec![IDLE; n].into_boxed_slice();
        for (i, t) in trackers.iter_mut().enumerate() {
            t.cid = i as u16;
        }
        Trackers {
            trackers,
            free: (0..n as u16).rev().collect(),
            free_len: n,
            index_mask,
            step: index_mask.wrapping_add(1),
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
        // SAFETY: `free_len <= free.len()` always (it starts there and `give_back`
        // asserts it never goes past), so after the decrement it is in bounds.
        let index = unsafe { *self.free.get_unchecked(self.free_len) };
        // SAFETY: the free stack holds only indexes of `trackers` (made as
        // `0..trackers.len()`, and `give_back` pushes back only masked CIDs it checked).
        let t = unsafe { self.trackers.get_unchecked_mut(index as usize) };
        debug_assert!(!t.active, "a free tracker has no command in flight");
        // The next generation: the index bits stay, the count above them moves on
        // (wrapping).
        let cid = t.cid.wrapping_add(self.step);
        t.cid = cid;
        Some(cid)
    }

    /// Arms the tracker of `cid` (taken, not yet in flight) for a command posted now.
    #[inline(always)]
    pub fn arm(&mut self, cid: u16, parent: u16, ctx: u64, deadline: u64) {
        let index = self.index(cid);
        // SAFETY: CIDs come from `take`, whose index bits name a tracker (the free
        // stack is made as `0..trackers.len()`).
        let t = unsafe { self.trackers.get_unchecked_mut(index) };
        debug_assert!(!t.active, "CID {cid} armed while in flight");
        debug_assert_eq!(t.cid, cid, "CID {cid} armed but not the one taken");
        *t = Tracker {
            active: true,
            cid,
            abort_sent: false,
            parent,
            ctx,
            deadline,
        };
    }

    /// True if `cid` names a command in flight, generation included (the device's
    /// word is checked here).
    #[inline(always)]
    pub fn in_flight(&self, cid: u16) -> bool {
        self.trackers
            .get(self.index(cid))
            .is_some_and(|t| t.active && t.cid == cid)
    }

    /// The CID of the command in flight on tracker `index`, if there is one.
    #[inline]
    pub fn in_flight_at(&self, index: usize) -> Option<u16> {
        self.trackers[index]
            .active
            .then(|| self.trackers[index].cid)
    }

    /// Ends the command of `cid` (in flight): its CID is free again. Returns what
    /// the tracker held (parent, context).
    #[inline(always)]
    pub fn give_back(&mut self, cid: u16) -> (u16, u64) {
        let index = self.index(cid);
        debug_assert!(index < self.trackers.len());
        // SAFETY: `cid` names a command in flight (checked by the caller with
        // `in_flight` or taken from `in_flight_at`), so its index is a tracker's.
        let t = unsafe { self.trackers.get_unchecked_mut(index) };
        debug_assert!(
            t.active && t.cid == cid,
            "CID {cid} given back while not in flight"
        );
        t.active = false;
        let held = (t.parent, t.ctx);
        debug_assert!(
            self.free_len < self.free.len(),
            "more CIDs given back than taken"
        );
        // Never more free CIDs than trackers: each given back was taken first.
        if let Some(slot) = self.free.get_mut(self.free_len) {
            *slot = index as u16;
            self.free_len += 1;
        }
        held
    }

    /// A tracker, by index (for the timeout scan).
    #[inline(always)]
    pub fn get_mut(&mut self, index: usize) -> &mut Tracker {
        &mut self.trackers[index]
    }

    /// True when no command is in flight: every CID is free.
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
