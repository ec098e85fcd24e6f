// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The reset handshake: how a controller tells its queue pairs that the device was
//! reset or failed, and how they answer. Its one home: the controller's state
//! ([`CtrlState`]) and the word each queue pair polls (`ControlWord`) are here.
//!
//! Three parties take part, each on its own thread: the controller's admin side
//! (whoever calls [`Controller::reset`](crate::Controller::reset) or
//! [`Controller::process_admin`](crate::Controller::process_admin): in the block
//! layer, the controller thread of `bdev/src/layer.rs`), the owner of each queue pair
//! (a poller: in the block layer, a multipath channel on a reactor), and the block
//! layer that chooses paths. They share no lock; the admin side writes one atomic
//! `ControlWord` per queue pair, and the owner answers in one atomic `ack`.
//!
//! A reset, step by step:
//! 1. *Block layer.* The controller thread takes the path out of the path set
//!    (`set_connected(false)`): new I/O is routed to other paths; what is already on
//!    this controller's queue pairs stays there.
//! 2. *Controller.* [`Controller::reset`](crate::Controller::reset) sets the
//!    controller's state to [`CtrlState::Resetting`], deletes the I/O queues on the
//!    device (best effort) and disables it (CC.EN = 0, wait for CSTS.RDY = 0). From
//!    here the device touches no queue memory.
//! 3. *Controller.* It bumps the controller's epoch to `e` and stores
//!    `Phase::Reset` at `e` into every queue pair's control word, then calls the
//!    queue-state notifier: the block layer bumps its QSBR epoch so that channels
//!    that skip idle queue pairs poll every one of them once.
//! 4. *Queue pair.* At its next poll the owner sees the word change: it completes
//!    every command in flight with "aborted: SQ deletion" (a path error, exactly
//!    once), rewinds its rings, holds new requests on its pending queue, and stores
//!    `e` into `ack`.
//! 5. *Block layer.* The multipath channel receives those completions as path
//!    errors and resubmits them on another usable path at once (or, with none,
//!    keeps them on its retry queue until a path comes back or the fast-fail
//!    timeout passes).
//! 6. *Controller.* Meanwhile it re-enables the device, sets the number of queues,
//!    and waits (at most 2 s) for each queue pair's `ack >= e`; for each one that
//!    acknowledged it recreates the I/O queues on the device and stores
//!    `Phase::Live` at `e`. A queue pair that did not acknowledge in time gets
//!    `Phase::Failed` instead. It notifies again, re-arms async events and sets
//!    the state back to [`CtrlState::Live`].
//! 7. *Queue pair.* At its next poll it sees `Live`: it releases the held requests,
//!    oldest first.
//! 8. *Block layer.* The controller thread sees `CtrlState::Live` after
//!    `process_admin` and puts the path back into the path set.
//!
//! Failure ([`Controller::fail`](crate::Controller::fail), a fatal status that a
//! reset cannot cure, surprise removal, or a queue pair that reported an impossible
//! completion): the state becomes [`CtrlState::Failed`] for good and every queue pair
//! gets `Phase::Failed`; at its next poll it completes everything, in flight and
//! pending, with "aborted by host" and refuses new requests. The block layer sees
//! `Failed`, marks the path disconnected and reconnects a new controller later.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// The state of a controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlState {
    /// Enabled and usable.
    Live,
    /// Being reset: queue pairs hold new requests.
    Resetting,
    /// Failed or removed: every request completes with an error.
    Failed,
}

impl CtrlState {
    const fn to_u8(self) -> u8 {
        match self {
            CtrlState::Live => 0,
            CtrlState::Resetting => 1,
            CtrlState::Failed => 2,
        }
    }

    fn from_u8(v: u8) -> CtrlState {
        match v {
            0 => CtrlState::Live,
            1 => CtrlState::Resetting,
            _ => {
                debug_assert_eq!(v, 2, "a controller state word holds only known states");
                CtrlState::Failed
            }
        }
    }
}

/// A controller's [`CtrlState`], readable from any thread.
#[derive(Debug)]
pub(crate) struct AtomicCtrlState(AtomicU8);

impl AtomicCtrlState {
    pub(crate) fn new(s: CtrlState) -> Self {
        AtomicCtrlState(AtomicU8::new(s.to_u8()))
    }
    pub(crate) fn load(&self) -> CtrlState {
        CtrlState::from_u8(self.0.load(Ordering::Acquire))
    }
    /// Moves from `from` to `to` (a reset starting or ending); false, and no change,
    /// when the state is no longer `from`: the controller failed meanwhile.
    pub(crate) fn transition(&self, from: CtrlState, to: CtrlState) -> bool {
        debug_assert!(
            matches!(
                (from, to),
                (CtrlState::Live, CtrlState::Resetting) | (CtrlState::Resetting, CtrlState::Live)
            ),
            "only a reset moves between Live and Resetting"
        );
        self.0
            .compare_exchange(
                from.to_u8(),
                to.to_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
    /// Failed, for good: no transition leaves it.
    pub(crate) fn fail(&self) {
        self.0.store(CtrlState::Failed.to_u8(), Ordering::Release);
    }
}

/// What the controller tells a queue pair (see the module's walk-through).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The queues exist on the device: requests flow.
    Live,
    /// The device is disabled: complete what is in flight, rewind, hold, acknowledge.
    Reset,
    /// The controller is gone: complete everything with an error, refuse new requests.
    Failed,
}

/// A phase and the controller epoch it was set at, as one value: a queue pair compares
/// the whole word to the last one it saw, so a reset that ends before the owner polls
/// (Reset at e, then Live at e) is still seen as a change from Live at e - 1.
///
/// The word also carries a namespace generation, which the controller moves when a
/// namespace changed size: the owner copies the new sizes at its next poll (see
/// `qpair/namespaces.rs`), so the poll's one load of this word covers both and the
/// submit path follows no shared pointer. Layout: phase in bits 1:0, namespace
/// generation in bits 17:2 (wrapping; only a change matters), epoch above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ControlWord(u64);

impl ControlWord {
    const PHASE_BITS: u32 = 2;
    const NS_GEN_BITS: u32 = 16;
    const NS_GEN_MASK: u64 = ((1 << Self::NS_GEN_BITS) - 1) << Self::PHASE_BITS;
    const EPOCH_SHIFT: u32 = Self::PHASE_BITS + Self::NS_GEN_BITS;

    pub(crate) const fn new(epoch: u64, phase: Phase) -> Self {
        let p = match phase {
            Phase::Live => 0,
            Phase::Reset => 1,
            Phase::Failed => 2,
        };
        ControlWord(epoch << Self::EPOCH_SHIFT | p)
    }

    /// The namespace generation: it changes each time the controller changed a
    /// namespace's size.
    pub(crate) const fn ns_gen(self) -> u64 {
        (self.0 & Self::NS_GEN_MASK) >> Self::PHASE_BITS
    }

    /// This word with the namespace generation of `other`.
    pub(crate) const fn with_ns_gen_of(self, other: ControlWord) -> Self {
        ControlWord(self.0 & !Self::NS_GEN_MASK | other.0 & Self::NS_GEN_MASK)
    }

    /// This word with the namespace generation moved on by one.
    const fn next_ns_gen(self) -> Self {
        let g = (self.ns_gen() + 1) << Self::PHASE_BITS & Self::NS_GEN_MASK;
        ControlWord(self.0 & !Self::NS_GEN_MASK | g)
    }

    /// The phase the controller set.
    pub(crate) fn phase(self) -> Phase {
        match self.0 & ((1 << Self::PHASE_BITS) - 1) {
            0 => Phase::Live,
            1 => Phase::Reset,
            p => {
                debug_assert_eq!(p, 2, "only the controller writes control words");
                Phase::Failed
            }
        }
    }

    /// The controller epoch it was set at; a queue pair acknowledges a reset with it.
    pub(crate) fn epoch(self) -> u64 {
        self.0 >> Self::EPOCH_SHIFT
    }
}

/// One queue pair's side of the handshake: `control`, written only by the controller;
/// `ack`, written only by the queue pair's owner.
#[derive(Debug)]
pub(crate) struct Handshake {
    control: AtomicU64,
    ack: AtomicU64,
}

impl Handshake {
    /// A queue pair created at `epoch`, live.
    pub(crate) fn new(epoch: u64) -> Self {
        Handshake {
            control: AtomicU64::new(ControlWord::new(epoch, Phase::Live).0),
            ack: AtomicU64::new(epoch),
        }
    }

    /// The controller's side: set `phase` at `epoch` (the namespace generation stays).
    /// A compare-and-swap loop, as a namespace change may move the generation at the
    /// same time from another thread; never on the data path.
    pub(crate) fn set(&self, epoch: u64, phase: Phase) {
        let _ = self
            .control
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(
                    ControlWord::new(epoch, phase)
                        .with_ns_gen_of(ControlWord(w))
                        .0,
                )
            });
    }

    /// The controller's side: a namespace changed size (the new sizes are stored
    /// before this call); the owner copies them at its next poll.
    pub(crate) fn namespaces_changed(&self) {
        let _ = self
            .control
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(ControlWord(w).next_ns_gen().0)
            });
    }

    /// The word, with everything the controller wrote before it visible.
    #[inline(always)]
    pub(crate) fn load(&self) -> ControlWord {
        ControlWord(self.control.load(Ordering::Acquire))
    }

    /// The word, when only a change matters (no data read after it).
    #[inline(always)]
    pub(crate) fn peek(&self) -> ControlWord {
        ControlWord(self.control.load(Ordering::Relaxed))
    }

    /// The owner's side: the reset (or failure) of `epoch` is dealt with; the device
    /// may have the queues back.
    pub(crate) fn acknowledge(&self, epoch: u64) {
        self.ack.store(epoch, Ordering::Release);
    }

    /// True once the owner acknowledged `epoch` (or a later one).
    pub(crate) fn acknowledged(&self, epoch: u64) -> bool {
        self.ack.load(Ordering::Acquire) >= epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips() {
        for phase in [Phase::Live, Phase::Reset, Phase::Failed] {
            let w = ControlWord::new(41, phase);
            assert_eq!((w.epoch(), w.phase()), (41, phase));
        }
        assert_ne!(
            ControlWord::new(1, Phase::Live),
            ControlWord::new(2, Phase::Live)
        );
    }

    #[test]
    fn namespace_generation_leaves_phase_and_epoch() {
        let h = Handshake::new(7);
        let before = h.load();
        h.namespaces_changed();
        let after = h.load();
        assert_ne!(after, before, "a namespace change is a change of the word");
        assert_eq!((after.epoch(), after.phase()), (7, Phase::Live));
        assert_ne!(after.ns_gen(), before.ns_gen());
        h.set(8, Phase::Reset);
        let w = h.load();
        assert_eq!(
            (w.epoch(), w.phase(), w.ns_gen()),
            (8, Phase::Reset, after.ns_gen())
        );
        // The generation wraps inside its bits without touching the epoch.
        for _ in 0..(1u32 << ControlWord::NS_GEN_BITS) {
            h.namespaces_changed();
        }
        assert_eq!(h.load(), w);
        assert_eq!(
            ControlWord::new(3, Phase::Live)
                .with_ns_gen_of(after)
                .ns_gen(),
            after.ns_gen()
        );
    }

    #[test]
    fn state_round_trips() {
        let a = AtomicCtrlState::new(CtrlState::Live);
        assert!(a.transition(CtrlState::Live, CtrlState::Resetting));
        assert_eq!(a.load(), CtrlState::Resetting);
        a.fail();
        assert!(!a.transition(CtrlState::Resetting, CtrlState::Live));
        assert_eq!(a.load(), CtrlState::Failed);
    }

    #[test]
    fn acknowledgement() {
        let h = Handshake::new(3);
        assert!(h.acknowledged(3) && !h.acknowledged(4));
        h.set(4, Phase::Reset);
        assert_eq!(h.load().phase(), Phase::Reset);
        h.acknowledge(4);
        assert!(h.acknowledged(4));
    }
}
