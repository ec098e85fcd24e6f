// SPDX-License-Identifier: Apache-2.0 OR MIT
//! DMA buffers for C: `nvme_dma_alloc` hands out memory from the layer's I/O buffer
//! pool (mapped into every controller of the layer), and each I/O call finds the
//! device address of the pointer it is given in a table of those buffers.
//!
//! The table is read on the data path without a lock: a sorted array of (host
//! address, length, IOVA) under a sequence counter (a seqlock). Allocation and free
//! (set-up time) take a mutex, make the counter odd, shift the array and make it even
//! again; a reader searches it (binary search) between two reads of the counter and
//! tries again if the counter moved; after 1000 disturbed tries in a row it takes the
//! writers' lock (only allocations churning on another thread get it there). A pointer
//! that is in no entry is refused: that is how memory not from `nvme_dma_alloc` is told
//! apart.
//!
//! Memory the caller already has (SPDK's `spdk_mem_register`) joins the same table
//! through `nvme_mem_register`, which registers it with every controller of the layer
//! (`BlockLayer::register_memory`); I/O from it needs no copy.

use crate::error::{bdev_fail, fail, Fail};
use crate::layer::{layer_state, nvme_layer};
use ::nvme_bdev::{BlockLayer, IoBuf, MemRegion};
use nvme_driver::{DmaSlice, Iova};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// DMA buffers (nvme_dma_alloc()) and registered regions (nvme_mem_register()) one
/// layer can have at once.
pub const NVME_DMA_BUFFERS_MAX: usize = 4096;

/// Alignment of the start and length of a region for nvme_mem_register().
pub const NVME_MEM_REGISTER_ALIGN: usize = 4096;
const _: () = assert!(NVME_MEM_REGISTER_ALIGN == ::nvme_bdev::REGISTER_ALIGN);

/// What the table keeps alive for an entry.
enum Owned {
    /// From `nvme_dma_alloc`: the memory goes back to the pool when dropped.
    Buf(IoBuf),
    /// From `nvme_mem_register`: unregistered from every controller when dropped.
    Region(MemRegion),
}

impl Owned {
    fn addr(&self) -> usize {
        match self {
            Owned::Buf(b) => b.as_ptr() as usize,
            Owned::Region(r) => r.as_ptr() as usize,
        }
    }
}

/// Lock-free reads a lookup tries while allocations move the table under it, before
/// it takes the writers' lock.
const READ_ATTEMPTS: usize = 1000;

/// The last buffer a channel's lookup found, and the table version it was found at
/// (a version the table never has, until the first lookup).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DmaCache {
    start: usize,
    len: usize,
    iova: u64,
    seq: u64,
}

impl Default for DmaCache {
    fn default() -> Self {
        // An odd version: the table's is odd only while a writer works, and a reader
        // never caches then.
        DmaCache {
            start: 0,
            len: 0,
            iova: 0,
            seq: 1,
        }
    }
}

#[derive(Default)]
struct Entry {
    addr: AtomicUsize,
    len: AtomicUsize,
    iova: AtomicU64,
}

/// The buffers of one layer, by host address.
pub(crate) struct DmaTable {
    /// Even: stable; odd: a writer is moving entries.
    seq: AtomicU64,
    count: AtomicUsize,
    entries: Box<[Entry]>,
    /// The buffers and regions themselves; writers hold this lock.
    bufs: Mutex<Vec<Owned>>,
}

impl std::fmt::Debug for DmaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaTable")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl DmaTable {
    pub(crate) fn new() -> Self {
        DmaTable {
            seq: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            entries: (0..NVME_DMA_BUFFERS_MAX)
                .map(|_| Entry::default())
                .collect(),
            bufs: Mutex::new(Vec::new()),
        }
    }

    /// Runs `edit` on the entries as a writer (the bufs lock held by the caller).
    fn write(&self, edit: impl FnOnce(&[Entry], usize) -> usize) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let n = edit(&self.entries, self.count.load(Ordering::Relaxed));
        self.count.store(n, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    fn copy(from: &Entry, to: &Entry) {
        to.addr
            .store(from.addr.load(Ordering::Relaxed), Ordering::Relaxed);
        to.len
            .store(from.len.load(Ordering::Relaxed), Ordering::Relaxed);
        to.iova
            .store(from.iova.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Enters (addr, len, iova) in sorted position (the writers' lock held).
    fn insert(&self, addr: usize, len: usize, iova: u64) {
        self.write(|e, n| {
            let pos = (0..n)
                .find(|&i| e[i].addr.load(Ordering::Relaxed) > addr)
                .unwrap_or(n);
            for i in (pos..n).rev() {
                Self::copy(&e[i], &e[i + 1]);
            }
            e[pos].addr.store(addr, Ordering::Relaxed);
            e[pos].len.store(len, Ordering::Relaxed);
            e[pos].iova.store(iova, Ordering::Relaxed);
            n + 1
        });
    }

    /// Takes the entry starting at `addr` out (the writers' lock held).
    fn remove(&self, addr: usize) {
        self.write(|e, n| {
            let pos = (0..n)
                .find(|&i| e[i].addr.load(Ordering::Relaxed) == addr)
                .expect("every buffer and region in `bufs` has its entry");
            for i in pos..n - 1 {
                Self::copy(&e[i + 1], &e[i]);
            }
            n - 1
        });
    }

    fn full(what: &str) -> Fail {
        fail!(
            libc::ENOSPC,
            "{what}: {NVME_DMA_BUFFERS_MAX} buffers and regions are in use on this layer \
             (NVME_DMA_BUFFERS_MAX); free some, or use fewer, larger ones and parts of them"
        )
    }

    /// A new buffer of `size` bytes from `layer`'s pool, entered in the table.
    pub(crate) fn alloc(&self, layer: &BlockLayer, size: usize) -> Result<*mut u8, Fail> {
        if size == 0 {
            return Err(fail!(libc::EINVAL, "nvme_dma_alloc: size is 0"));
        }
        if size > u32::MAX as usize {
            return Err(fail!(
                libc::EINVAL,
                "nvme_dma_alloc: {size} bytes is more than one I/O can carry (4 GiB - 1)"
            ));
        }
        let mut bufs = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        if bufs.len() >= NVME_DMA_BUFFERS_MAX {
            return Err(Self::full("nvme_dma_alloc"));
        }
        let buf = layer
            .alloc_buffer(size)
            .map_err(|e| bdev_fail("nvme_dma_alloc", &e))?;
        let addr = buf.as_ptr() as usize;
        self.insert(addr, size, buf.whole().iova.0);
        bufs.push(Owned::Buf(buf));
        Ok(addr as *mut u8)
    }

    /// Takes the buffer starting at `p` out of the table and gives its memory back.
    pub(crate) fn free(&self, p: *mut c_void) -> Result<(), Fail> {
        let addr = p as usize;
        let mut bufs = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        match bufs.iter().position(|b| b.addr() == addr) {
            Some(k) if matches!(bufs[k], Owned::Buf(_)) => {
                self.remove(addr);
                bufs.swap_remove(k);
                Ok(())
            }
            Some(_) => Err(fail!(
                libc::EINVAL,
                "nvme_dma_free: {p:p} was registered with nvme_mem_register(); unregister it \
                 with nvme_mem_unregister()"
            )),
            None => Err(fail!(
                libc::EINVAL,
                "nvme_dma_free: {p:p} is not the start of a buffer that nvme_dma_alloc() \
                 gave on this layer (or it was freed already)"
            )),
        }
    }

    /// Registers the caller's `len` bytes at `p` with every controller of `layer` and
    /// enters them in the table.
    ///
    /// # Safety
    /// As `BlockLayer::register_memory`: the memory stays allocated and unmapped-again
    /// until it is unregistered, and no I/O is in flight on it then.
    pub(crate) unsafe fn register(
        &self,
        layer: &BlockLayer,
        p: *mut c_void,
        len: usize,
    ) -> Result<(), Fail> {
        let addr = p as usize;
        if p.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_mem_register: addr is NULL"));
        }
        let mut bufs = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        if bufs.len() >= NVME_DMA_BUFFERS_MAX {
            return Err(Self::full("nvme_mem_register"));
        }
        let n = self.count.load(Ordering::Relaxed);
        if let Some(e) = self.entries[..n].iter().find(|e| {
            let (a, l) = (
                e.addr.load(Ordering::Relaxed),
                e.len.load(Ordering::Relaxed),
            );
            a < addr.saturating_add(len) && addr < a + l
        }) {
            return Err(fail!(
                libc::EINVAL,
                "nvme_mem_register: {p:p} + {len} bytes overlaps DMA memory this layer has \
                 already ({} bytes at {:#x}); register each range once",
                e.len.load(Ordering::Relaxed),
                e.addr.load(Ordering::Relaxed)
            ));
        }
        // SAFETY: forwarded from our caller.
        let region = unsafe { layer.register_memory(p.cast(), len) }
            .map_err(|e| bdev_fail("nvme_mem_register", &e))?;
        self.insert(addr, len, region.iova());
        bufs.push(Owned::Region(region));
        Ok(())
    }

    /// Takes the region starting at `p` out of the table and unregisters it from every
    /// controller.
    pub(crate) fn unregister(&self, p: *mut c_void) -> Result<(), Fail> {
        let addr = p as usize;
        let mut bufs = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        match bufs.iter().position(|b| b.addr() == addr) {
            Some(k) if matches!(bufs[k], Owned::Region(_)) => {
                self.remove(addr);
                bufs.swap_remove(k);
                Ok(())
            }
            Some(_) => Err(fail!(
                libc::EINVAL,
                "nvme_mem_unregister: {p:p} came from nvme_dma_alloc(); free it with \
                 nvme_dma_free()"
            )),
            None => Err(fail!(
                libc::EINVAL,
                "nvme_mem_unregister: {p:p} is not the start of a region registered on this \
                 layer with nvme_mem_register() (or it was unregistered already)"
            )),
        }
    }

    /// The entry holding `addr` (the last one starting at or below it), as read now:
    /// consistent only if the sequence counter did not move meanwhile, or under the
    /// writers' lock.
    #[inline]
    fn search(&self, addr: usize) -> Option<(usize, usize, u64)> {
        let n = self.count.load(Ordering::Relaxed).min(self.entries.len());
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entries[mid].addr.load(Ordering::Relaxed) <= addr {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| {
            let e = &self.entries[i];
            (
                e.addr.load(Ordering::Relaxed),
                e.len.load(Ordering::Relaxed),
                e.iova.load(Ordering::Relaxed),
            )
        })
    }

    /// The entry holding `addr` and the table version it was read at, read
    /// consistently: without a lock while the table holds still (the usual case:
    /// allocations happen at set-up time), under the writers' lock after READ_ATTEMPTS
    /// reads that allocations on other threads disturbed in a row.
    #[inline]
    fn find(&self, addr: usize) -> (Option<(usize, usize, u64)>, u64) {
        for _ in 0..READ_ATTEMPTS {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let found = self.search(addr);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (found, s1);
            }
        }
        self.find_locked(addr)
    }

    #[cold]
    #[inline(never)]
    fn find_locked(&self, addr: usize) -> (Option<(usize, usize, u64)>, u64) {
        let _writers = self.bufs.lock().unwrap_or_else(|p| p.into_inner());
        (self.search(addr), self.seq.load(Ordering::Relaxed))
    }

    /// The device address of `len` bytes at `p`, which must lie inside one buffer.
    /// Allocates nothing; takes no lock unless allocations keep moving the table. The
    /// channel's `cache` remembers the last buffer found: while the table's version is
    /// the one it was found at, a pointer inside it needs no search.
    #[inline]
    pub(crate) fn translate(
        &self,
        p: *const c_void,
        len: u32,
        what: &str,
        cache: &mut DmaCache,
    ) -> Result<DmaSlice, Fail> {
        let addr = p as usize;
        let hit = addr.wrapping_sub(cache.start) < cache.len
            && self.seq.load(Ordering::Acquire) == cache.seq;
        let found = if hit {
            Some((cache.start, cache.len, cache.iova))
        } else {
            let (found, seq) = self.find(addr);
            if let Some((start, len, iova)) = found {
                *cache = DmaCache {
                    start,
                    len,
                    iova,
                    seq,
                };
            }
            found
        };
        match found {
            Some((start, blen, iova)) if addr - start < blen => {
                let off = addr - start;
                if len as usize > blen - off {
                    return Err(fail!(
                        libc::EINVAL,
                        "{what}: buffer {p:p}: {len} bytes run past the end of its DMA buffer \
                         ({blen} bytes at {start:#x}, this I/O starts {off} bytes in)"
                    ));
                }
                Ok(DmaSlice {
                    iova: Iova(iova + off as u64),
                    len,
                })
            }
            _ if p.is_null() => Err(fail!(libc::EINVAL, "{what}: buf is NULL")),
            _ => Err(fail!(
                libc::EINVAL,
                "{what}: buffer {p:p} is not DMA memory of this layer: allocate I/O buffers \
                 with nvme_dma_alloc() on the layer the bdev belongs to"
            )),
        }
    }
}

/// Allocates `size` bytes of DMA memory that every controller of `layer` reaches
/// (also controllers attached later), zeroed, aligned to 4 KiB, and stores its address
/// in `*buf`. Only memory from here can carry I/O data. Set-up time: it takes a lock.
///
/// Returns 0, or -EINVAL (NULL argument, size 0 or above 4 GiB - 1), -EBADF (closed
/// layer), -ENOSPC (NVME_DMA_BUFFERS_MAX buffers allocated), -ENOMEM (no memory).
///
/// # Safety
/// `layer` is NULL or a handle from nvme_layer_create(); `buf` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nvme_dma_alloc(
    layer: *mut nvme_layer,
    size: usize,
    buf: *mut *mut c_void,
) -> c_int {
    crate::error::call(|| {
        if buf.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_dma_alloc: buf is NULL"));
        }
        // SAFETY: the caller passes a layer handle or NULL.
        let p = unsafe { layer_state(layer, "nvme_dma_alloc: layer") }?
            .with("nvme_dma_alloc: layer", |l| l.dma.alloc(&l.layer, size))?;
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *buf = p.cast() };
        Ok(0)
    })
}

/// Frees a buffer from nvme_dma_alloc(). No I/O may be using it. Returns 0, or
/// -EINVAL (NULL, or not the start of a buffer of this layer), -EBADF (closed layer).
///
/// # Safety
/// `layer` is NULL or a handle from nvme_layer_create().
#[no_mangle]
pub unsafe extern "C" fn nvme_dma_free(layer: *mut nvme_layer, buf: *mut c_void) -> c_int {
    crate::error::call(|| {
        if buf.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_dma_free: buf is NULL"));
        }
        // SAFETY: the caller passes a layer handle or NULL.
        unsafe { layer_state(layer, "nvme_dma_free: layer") }?
            .with("nvme_dma_free: layer", |l| l.dma.free(buf))?;
        Ok(0)
    })
}

/// Registers `len` bytes of the caller's own memory at `addr` (a server's buffer pool,
/// huge pages or not) for DMA with every controller of `layer`, also ones attached
/// later (SPDK's spdk_mem_register): I/O calls then accept pointers into it, with no
/// copy. `addr` and `len` are multiples of NVME_MEM_REGISTER_ALIGN (4096); all
/// regions together at most 64 GiB; VFIO pins the pages and counts them against the
/// locked-memory limit (ulimit -l). Set-up time. Returns 0, or -EINVAL (NULL,
/// misaligned, overlapping memory already registered or allocated), -EBADF, -ENOSPC
/// (the registration window or NVME_DMA_BUFFERS_MAX is full), -EIO (a mapping failed).
///
/// # Safety
/// `layer` is NULL or a layer handle; the memory stays allocated (and is not
/// remapped) until nvme_mem_unregister(), and no I/O is in flight on it then.
#[no_mangle]
pub unsafe extern "C" fn nvme_mem_register(
    layer: *mut nvme_layer,
    addr: *mut c_void,
    len: usize,
) -> c_int {
    crate::error::call(|| {
        // SAFETY: the caller passes a layer handle or NULL.
        unsafe { layer_state(layer, "nvme_mem_register: layer") }?.with(
            "nvme_mem_register: layer",
            // SAFETY: the caller's contract on the memory, forwarded.
            |l| unsafe { l.dma.register(&l.layer, addr, len) },
        )?;
        Ok(0)
    })
}

/// Unregisters the region that nvme_mem_register() registered at `addr`. No I/O may
/// be in flight on it. Returns 0, or -EINVAL (NULL, or not the start of a registered
/// region), -EBADF.
///
/// # Safety
/// `layer` is NULL or a layer handle.
#[no_mangle]
pub unsafe extern "C" fn nvme_mem_unregister(layer: *mut nvme_layer, addr: *mut c_void) -> c_int {
    crate::error::call(|| {
        if addr.is_null() {
            return Err(fail!(libc::EINVAL, "nvme_mem_unregister: addr is NULL"));
        }
        // SAFETY: the caller passes a layer handle or NULL.
        unsafe { layer_state(layer, "nvme_mem_unregister: layer") }?
            .with("nvme_mem_unregister: layer", |l| l.dma.unregister(addr))?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::nvme_bdev::LayerOptions;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// While another thread allocates and frees buffers (moving the table's entries
    /// both ways around the fixed one), every lookup inside a fixed buffer finds its
    /// own IOVA and a pointer outside every buffer is refused: a torn read of the table
    /// is never used.
    #[test]
    fn lookups_stay_exact_while_other_buffers_come_and_go() {
        let layer = Arc::new(BlockLayer::new(LayerOptions::default()).unwrap());
        let table = Arc::new(DmaTable::new());
        // Space below the fixed buffer too: the churn's entries land on both sides of
        // it, so its index moves.
        let below: Vec<_> = (0..16)
            .map(|_| table.alloc(&layer, 4096).unwrap())
            .collect();
        let fixed = table.alloc(&layer, 64 << 10).unwrap() as usize;
        for p in below {
            table.free(p.cast()).unwrap();
        }
        let iova = {
            let bufs = table.bufs.lock().unwrap();
            match bufs.iter().find(|b| b.addr() == fixed).unwrap() {
                Owned::Buf(b) => b.whole().iova.0,
                Owned::Region(_) => unreachable!("allocated, not registered"),
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (layer, table, stop) = (layer.clone(), table.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ps: Vec<_> = (0..16)
                        .map(|_| table.alloc(&layer, 4096).unwrap())
                        .collect();
                    for p in ps.into_iter().rev() {
                        table.free(p.cast()).unwrap();
                    }
                    n += 1;
                }
                n
            })
        };
        let outside = [0u8; 8];
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut lookups = 0u64;
        // The channel's cache, as the I/O calls use it: a hit must be as exact.
        let mut cache = DmaCache::default();
        while Instant::now() < deadline {
            for off in [0usize, 4096, 65535, 12345] {
                let s = table
                    .translate((fixed + off) as *const c_void, 1, "t", &mut cache)
                    .unwrap_or_else(|_| {
                        panic!(
                            "a lookup {off} bytes into a live buffer was refused while other \
                             buffers came and went (a torn read of the table)"
                        )
                    });
                assert_eq!(s.iova.0, iova + off as u64, "offset {off}");
                lookups += 1;
            }
            assert!(table
                .translate(outside.as_ptr().cast(), 1, "t", &mut cache)
                .is_err());
        }
        stop.store(true, Ordering::Relaxed);
        let rounds = churn.join().unwrap();
        assert!(
            rounds > 0 && lookups > 0,
            "both sides ran: {rounds} rounds, {lookups} lookups"
        );
        table.free(fixed as *mut c_void).unwrap();
        assert_eq!(table.count.load(Ordering::Relaxed), 0);
    }
}
