// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Quiescent-state-based reclamation (QSBR) and the snapshot cell built on it.
//!
//! Readers (reactors and I/O channels) register a slot and announce a quiescent
//! state now and then: a point where they hold no reference into any snapshot (a
//! reactor at each loop turn, a channel at each poll). A writer replaces a snapshot
//! with one atomic swap and *retires* the old one, stamped with a fresh epoch. The old
//! snapshot is freed once every registered slot has announced that epoch or a later
//! one. Nobody ever waits for that: [`Qsbr::reclaim`] frees what is already safe and
//! leaves the rest for a later call, so a reader that stalls holds back memory, never
//! a writer (this is the difference from `synchronize_srcu()` in the Linux deadlock).
//!
//! Ordering: the swap, the epoch increment and the announcement are `SeqCst`. A
//! reader that announced epoch `e` read the global epoch after the increment to `e`,
//! which follows the swap, so every snapshot it loads afterwards is the new one or a
//! later one; the snapshot it loaded before announcing is no longer in use because
//! announcing is what a reader does when it holds nothing.

use crate::sync::{lock, AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering};
use std::fmt;
use std::sync::Arc;

/// Slot value of a reader that is not registered.
const OFFLINE: u64 = u64::MAX;

/// Readers a domain has room for unless told otherwise (each reactor and each
/// multipath channel is one): [`LayerOptions::readers`](crate::LayerOptions::readers).
pub const DEFAULT_READERS: usize = 128;
/// The most readers a domain can have: a grace period looks at every slot, on the
/// writer's side (a controller thread), never on a reader's.
pub const MAX_READERS: usize = 4096;

struct Retired {
    ptr: *mut (),
    free: unsafe fn(*mut ()),
    epoch: u64,
}

// SAFETY: a retired pointer is owned by the retire list alone (the cell swapped it
// out), and the values behind it are `Send` (checked by `QsbrCell<T: Send + Sync>`).
unsafe impl Send for Retired {}

/// A QSBR domain: the global epoch, the readers' slots and the retire list.
pub struct Qsbr {
    epoch: AtomicU64,
    slots: Box<[AtomicU64]>,
    used: Box<[AtomicBool]>,
    retired: Mutex<Vec<Retired>>,
    freed: AtomicU64,
}

impl fmt::Debug for Qsbr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qsbr")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .field("pending", &self.pending())
            .field("freed", &self.freed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Qsbr {
    /// A domain for up to `readers` readers (capped at [`MAX_READERS`]).
    pub fn new(readers: usize) -> Arc<Qsbr> {
        let n = readers.clamp(1, MAX_READERS);
        Arc::new(Qsbr {
            epoch: AtomicU64::new(1),
            slots: (0..n).map(|_| AtomicU64::new(OFFLINE)).collect(),
            used: (0..n).map(|_| AtomicBool::new(false)).collect(),
            retired: Mutex::new(Vec::new()),
            freed: AtomicU64::new(0),
        })
    }

    /// Registers a reader. It starts quiescent at the current epoch.
    pub fn register(self: &Arc<Self>) -> crate::Result<QsbrReader> {
        for (i, used) in self.used.iter().enumerate() {
            if used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                let e = self.epoch.load(Ordering::SeqCst);
                self.slots[i].store(e, Ordering::SeqCst);
                return Ok(QsbrReader {
                    domain: self.clone(),
                    idx: i,
                    last: e,
                });
            }
        }
        Err(crate::Error::Exhausted(format!(
            "all {n} QSBR reader slots are in use (each reactor and each multipath channel \
             takes one): close channels no longer used, or raise LayerOptions::readers \
             (now {n}, at most {MAX_READERS})",
            n = self.slots.len()
        )))
    }

    /// Retires `ptr`, to be freed by `free` once every reader passed a quiescent
    /// point after this call. Never waits.
    ///
    /// # Safety
    /// `ptr` must be unreachable for readers that announce after this call (swapped
    /// out of its cell before the call), and `free(ptr)` must be sound exactly once.
    pub unsafe fn retire(&self, ptr: *mut (), free: unsafe fn(*mut ())) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.retired).push(Retired { ptr, free, epoch });
    }

    /// The oldest epoch some registered reader may still be in.
    fn min_announced(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .min()
            .unwrap_or(OFFLINE)
    }

    /// Advances the epoch without retiring anything: readers that watch it
    /// ([`QsbrReader::changed`]) look at their inputs again at their next quiescent
    /// point. Writers call it after handing readers something outside a snapshot.
    pub fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Frees every retired object no reader can still see. Returns how many.
    /// Deferred work: call it from a non-reactor thread (the controller threads do).
    pub fn reclaim(&self) -> usize {
        let min = self.min_announced();
        let ready: Vec<Retired> = {
            let mut g = lock(&self.retired);
            let mut ready = Vec::new();
            let mut i = 0;
            while i < g.len() {
                if g[i].epoch <= min {
                    ready.push(g.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            ready
        };
        for r in &ready {
            // SAFETY: `retire`'s contract: the object left its cell before epoch
            // `r.epoch`, and every registered reader has since announced `>= r.epoch`,
            // so none holds a reference; each entry is freed once (removed above).
            unsafe { (r.free)(r.ptr) };
        }
        self.freed.fetch_add(ready.len() as u64, Ordering::Relaxed);
        ready.len()
    }

    /// Retired objects not yet freed.
    pub fn pending(&self) -> usize {
        lock(&self.retired).len()
    }

    /// Objects freed so far.
    pub fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }
}

impl Drop for Qsbr {
    fn drop(&mut self) {
        // Every reader holds an `Arc` to the domain, so none is left.
        let list = std::mem::take(&mut *lock(&self.retired));
        for r in list {
            // SAFETY: no reader exists any more (see above); each entry once.
            unsafe { (r.free)(r.ptr) };
        }
    }
}

/// A registered reader. Snapshots loaded through it stay valid until its next
/// [`quiescent`](QsbrReader::quiescent) call, which the borrow checker enforces:
/// loads borrow the reader, announcing needs it mutably.
pub struct QsbrReader {
    domain: Arc<Qsbr>,
    idx: usize,
    /// The epoch this reader last announced (its slot's value; only it writes the
    /// slot while registered).
    last: u64,
}

impl fmt::Debug for QsbrReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QsbrReader")
            .field("slot", &self.idx)
            .finish()
    }
}

impl QsbrReader {
    /// Announces that this reader holds no snapshot reference.
    #[inline]
    pub fn quiescent(&mut self) {
        let e = self.domain.epoch.load(Ordering::SeqCst);
        // Skip the store (a locked instruction on x86) when nothing changed.
        if e != self.last {
            self.domain.slots[self.idx].store(e, Ordering::SeqCst);
            self.last = e;
        }
    }

    /// True if the epoch moved since this reader last announced: something was
    /// published or retired in the domain (or [`Qsbr::bump`]ed), so the reader has
    /// news to look at and a quiescent state to announce. One load and a compare: a
    /// channel tests this on every poll and does its housekeeping only when it is
    /// true. Every write a writer made before the publication, retirement or bump is
    /// visible to a reader that saw this return true (the epoch moves with `SeqCst`
    /// read-modify-writes and is read with `SeqCst`).
    #[inline]
    pub fn changed(&self) -> bool {
        self.domain.epoch.load(Ordering::SeqCst) != self.last
    }

    /// The domain this reader belongs to.
    pub fn domain(&self) -> &Arc<Qsbr> {
        &self.domain
    }
}

impl Drop for QsbrReader {
    fn drop(&mut self) {
        self.domain.slots[self.idx].store(OFFLINE, Ordering::SeqCst);
        self.domain.used[self.idx].store(false, Ordering::Release);
    }
}

/// An immutable snapshot behind an atomic pointer: readers load it without locks or
/// reference counts; a writer publishes a new one with one swap.
pub struct QsbrCell<T: Send + Sync + 'static> {
    ptr: AtomicPtr<T>,
    domain: Arc<Qsbr>,
}

impl<T: Send + Sync + fmt::Debug + 'static> fmt::Debug for QsbrCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.ptr.load(Ordering::SeqCst);
        // SAFETY: the current value is never retired while it is current, and the
        // cell (which owns it) is borrowed for the duration.
        f.debug_tuple("QsbrCell").field(unsafe { &*p }).finish()
    }
}

unsafe fn free_box<T>(p: *mut ()) {
    // SAFETY: `p` came from `Box::into_raw::<T>` (see `publish`), freed once.
    drop(unsafe { Box::from_raw(p.cast::<T>()) });
}

impl<T: Send + Sync + 'static> QsbrCell<T> {
    /// A cell holding `value`, reclaimed through `domain`.
    pub fn new(value: T, domain: Arc<Qsbr>) -> Self {
        QsbrCell {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            domain,
        }
    }

    /// The current snapshot, valid while `reader` is not announced quiescent.
    #[inline]
    pub fn load<'r>(&'r self, reader: &'r QsbrReader) -> &'r T {
        debug_assert!(Arc::ptr_eq(&reader.domain, &self.domain));
        let p = self.ptr.load(Ordering::SeqCst);
        // SAFETY: `p` is the current value or was retired after `reader`'s last
        // announcement; it is freed only once `reader` announces again, which needs
        // `&mut reader`, impossible while the returned borrow lives.
        unsafe { &*p }
    }

    /// The current snapshot, for the writer side. `'static` borrows are not handed
    /// out: the closure runs while the caller guarantees no concurrent publish
    /// reclaims it (writers call this under their own lock).
    pub fn with_current<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let p = self.ptr.load(Ordering::SeqCst);
        // SAFETY: only `publish` retires values and the caller serializes publishes
        // with this call; a retired value is freed only by a later `reclaim`, after
        // readers moved on, and this borrow ends before the closure returns.
        f(unsafe { &*p })
    }

    /// Publishes `value` with one swap and retires the previous snapshot. Never waits
    /// for readers.
    pub fn publish(&self, value: T) {
        let new = Box::into_raw(Box::new(value));
        let old = self.ptr.swap(new, Ordering::SeqCst);
        // SAFETY: `old` was swapped out, so readers that announce from now on cannot
        // load it; it came from `Box::into_raw::<T>`.
        unsafe { self.domain.retire(old.cast(), free_box::<T>) };
    }

    /// The domain.
    pub fn domain(&self) -> &Arc<Qsbr> {
        &self.domain
    }
}

impl<T: Send + Sync + 'static> Drop for QsbrCell<T> {
    fn drop(&mut self) {
        let p = self.ptr.load(Ordering::SeqCst);
        // Readers hold the cell's owner alive while they read, so none is left; but a
        // reader of another cell in the same domain does not matter here. Retire
        // rather than free: the domain frees it when safe (or when dropped).
        // SAFETY: the value is unreachable once the cell is gone; from `Box::into_raw`.
        unsafe { self.domain.retire(p.cast(), free_box::<T>) };
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Counted(#[allow(dead_code)] u32);
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn reclaims_only_after_every_reader_announced() {
        let d = Qsbr::new(4);
        let mut r1 = d.register().unwrap();
        let mut r2 = d.register().unwrap();
        let cell = QsbrCell::new(Counted(1), d.clone());
        let before = DROPS.load(std::sync::atomic::Ordering::SeqCst);
        cell.publish(Counted(2));
        assert_eq!(d.reclaim(), 0, "nobody announced yet");
        r1.quiescent();
        assert_eq!(d.reclaim(), 0, "r2 has not announced");
        r2.quiescent();
        assert_eq!(d.reclaim(), 1);
        assert_eq!(DROPS.load(std::sync::atomic::Ordering::SeqCst), before + 1);
        // A reader that goes away does not hold reclamation back.
        cell.publish(Counted(3));
        drop(r2);
        r1.quiescent();
        assert_eq!(d.reclaim(), 1);
        assert_eq!(cell.load(&r1).0, 3);
    }

    #[test]
    fn slots_are_bounded_and_reused() {
        let d = Qsbr::new(2);
        let a = d.register().unwrap();
        let _b = d.register().unwrap();
        assert!(d.register().is_err());
        drop(a);
        assert!(d.register().is_ok());
    }
}
