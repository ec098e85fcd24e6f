// SPDX-License-Identifier: Apache-2.0 OR MIT
//! A bounded multi-producer ring for messages between cores (Dmitry Vyukov's bounded
//! queue, the algorithm behind `crossbeam_queue::ArrayQueue`). It lives here, on the
//! crate's synchronization shim, so `loom` can check it; the reactors' inboxes and
//! the channels' mailboxes use it.
//!
//! Each slot carries a sequence number: `seq == pos` means free for the producer that
//! claims position `pos`, `seq == pos + 1` means full for the consumer at `pos`. A
//! producer claims a position with a CAS on `tail`, writes the value, then publishes
//! it with a release store of `seq`; a consumer does the mirror image on `head`.
//! Neither side ever waits: a full ring hands the value back, an empty one says so.

use crate::sync::{AtomicUsize, Cell, Ordering};
use std::fmt;
use std::mem::MaybeUninit;

struct Slot<T> {
    seq: AtomicUsize,
    value: Cell<MaybeUninit<T>>,
}

/// A bounded lock-free ring.
pub struct Ring<T> {
    slots: Box<[Slot<T>]>,
    mask: usize,
    head: AtomicUsize,
    tail: AtomicUsize,
}

// SAFETY: values move between threads through the ring (hence `T: Send`); each slot's
// value is accessed by exactly one thread at a time, as arbitrated by `seq`.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above: all shared access goes through atomics and the `seq` protocol.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl<T> Ring<T> {
    /// A ring of at least `capacity` slots (rounded up to a power of two, at least 2).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(2).next_power_of_two();
        Ring {
            slots: (0..n)
                .map(|i| Slot {
                    seq: AtomicUsize::new(i),
                    value: Cell::new(MaybeUninit::uninit()),
                })
                .collect(),
            mask: n - 1,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Slots.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Values in the ring (a snapshot; exact when nobody else is using it).
    pub fn len(&self) -> usize {
        let t = self.tail.load(Ordering::Acquire);
        let h = self.head.load(Ordering::Acquire);
        t.wrapping_sub(h).min(self.capacity())
    }

    /// True if the ring looks empty (a snapshot, as [`len`](Self::len); two loads and
    /// a compare, for consumers that check on every loop turn).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.tail.load(Ordering::Acquire) == self.head.load(Ordering::Acquire)
    }

    /// Adds `value`, or hands it back if the ring is full. Never waits.
    pub fn push(&self, value: T) -> Result<(), T> {
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                match self.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: winning the CAS for `pos` while `seq == pos` makes
                        // this producer the slot's only accessor until it stores
                        // `seq = pos + 1` below.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                // The slot still holds the value from one lap ago: full.
                return Err(value);
            } else {
                pos = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest value, if any. Never waits.
    pub fn pop(&self) -> Option<T> {
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as isize;
            if diff == 0 {
                match self.head.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: `seq == pos + 1` means the producer wrote the value
                        // and released it (acquired above); winning the CAS makes this
                        // consumer its only reader, and it is read once.
                        let v = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
                        slot.seq
                            .store(pos.wrapping_add(self.mask + 1), Ordering::Release);
                        return Some(v);
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.head.load(Ordering::Relaxed);
            }
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Far beyond what 40 000 pushes and pops take even on a loaded machine; only a
    /// ring that lost or withheld values gets near it.
    const DEADLINE: Duration = Duration::from_secs(60);

    #[test]
    fn fifo_bounded_and_wraps() {
        let r = Ring::new(3);
        assert_eq!(r.capacity(), 4);
        for round in 0..5 {
            for i in 0..4 {
                r.push(round * 10 + i).unwrap();
            }
            assert_eq!(r.push(99), Err(99));
            for i in 0..4 {
                assert_eq!(r.pop(), Some(round * 10 + i));
            }
            assert_eq!(r.pop(), None);
        }
    }

    #[test]
    fn many_producers_one_consumer_lose_nothing() {
        let r = Arc::new(Ring::new(64));
        let deadline = Instant::now() + DEADLINE;
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let mut v = p << 32 | i;
                        while let Err(back) = r.push(v) {
                            assert!(
                                Instant::now() < deadline,
                                "producer {p}: value {i} not taken within {DEADLINE:?}"
                            );
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u64; 4];
        let mut got = 0;
        while got < 40_000 {
            assert!(
                Instant::now() < deadline,
                "{got} of 40000 values popped within {DEADLINE:?}; next per producer {next:?}"
            );
            if let Some(v) = r.pop() {
                let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                assert_eq!(i, next[p], "per-producer order");
                next[p] += 1;
                got += 1;
            }
        }
        for p in producers {
            p.join().unwrap();
        }
    }

    #[test]
    fn drops_what_is_left() {
        let r = Ring::new(4);
        let v = Arc::new(());
        r.push(v.clone()).unwrap();
        r.push(v.clone()).unwrap();
        drop(r);
        assert_eq!(Arc::strong_count(&v), 1);
    }
}
