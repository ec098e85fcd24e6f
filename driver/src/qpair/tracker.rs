//! Trackers and command identifiers: one tracker per command a queue pair may have in
//! flight, indexed by its command identifier (CID), and the stack of free CIDs.
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
    /// The command is in flight: a completion for this CID is expected.
    pub active: bool,
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
    abort_sent: false,
    parent: NO_PARENT,
    ctx: 0,
    deadline: 0,
};

/// The trackers of a queue pair and its free CIDs.
#[derive(Debug)]
pub(super) struct Trackers {
    trackers: Box<[Tracker]>,
    /// Free CIDs, a stack: `free[..free_len]`.
    free: Box<[u16]>,
    free_len: usize,
}

impl Trackers {
    /// `n` trackers, all free (CID 0 is taken first).
    pub fn new(n: usize) -> Trackers {
        assert!(
            n < NO_PARENT as usize,
            "CIDs are 16 bits and one value is reserved"
        );
        Trackers {
            trackers: vec![IDLE; n].into_boxed_slice(),
            free: (0..n as u16).rev().collect(),
            free_len: n,
        }
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
        let cid = unsafe { *self.free.get_unchecked(self.free_len) };
        debug_assert!(
            !self.trackers[cid as usize].active,
            "a free CID has no command in flight"
        );
        Some(cid)
    }

    /// Arms the tracker of `cid` (taken, not yet in flight) for a command posted now.
    #[inline(always)]
    pub fn arm(&mut self, cid: u16, parent: u16, ctx: u64, deadline: u64) {
        // SAFETY: CIDs come from `take`, which hands out only indexes of `trackers`
        // (the free stack is made as `0..trackers.len()`).
        let t = unsafe { self.trackers.get_unchecked_mut(cid as usize) };
        debug_assert!(!t.active, "CID {cid} armed while in flight");
        *t = Tracker {
            active: true,
            abort_sent: false,
            parent,
            ctx,
            deadline,
        };
    }

    /// True if `cid` names a command in flight (the device's word is checked here).
    #[inline(always)]
    pub fn in_flight(&self, cid: u16) -> bool {
        self.trackers.get(cid as usize).is_some_and(|t| t.active)
    }

    /// Ends the command of `cid` (in flight): its CID is free again. Returns what
    /// the tracker held (parent, context).
    #[inline(always)]
    pub fn give_back(&mut self, cid: u16) -> (u16, u64) {
        let t = &mut self.trackers[cid as usize];
        debug_assert!(t.active, "CID {cid} given back while not in flight");
        t.active = false;
        let held = (t.parent, t.ctx);
        debug_assert!(
            self.free_len < self.free.len(),
            "more CIDs given back than taken"
        );
        // Never more free CIDs than trackers: each given back was taken first.
        if let Some(slot) = self.free.get_mut(self.free_len) {
            *slot = cid;
            self.free_len += 1;
        }
        held
    }

    /// A tracker, by CID (for the timeout scan).
    #[inline(always)]
    pub fn get_mut(&mut self, cid: u16) -> &mut Tracker {
        &mut self.trackers[cid as usize]
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
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(t.take(), None);
        t.arm(b, NO_PARENT, 7, 0);
        assert!(t.in_flight(b) && !t.in_flight(a) && !t.in_flight(9));
        assert_eq!(t.give_back(b), (NO_PARENT, 7));
        assert!(!t.in_flight(b));
        assert_eq!(t.take(), Some(b));
    }
}
