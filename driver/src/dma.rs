// SPDX-License-Identifier: Apache-2.0 OR MIT
//! DMA memory: a pool of pinned memory mapped into the device's IOMMU domain at IOVAs
//! the pool chooses.
//!
//! Memory comes in 2 MiB chunks, backed by a huge page when the system has them
//! (`MAP_HUGETLB`), else by normal pages locked in memory (the pool says so once).
//! Each chunk is mapped once through a [`DmaMapper`] (VFIO's type1 IOMMU, or the
//! software controller's translation table) and carved up with a buddy allocator in
//! 4 KiB to 2 MiB blocks; larger buffers get chunks of their own. Allocation happens
//! at set-up time, never per I/O, so the pool takes a lock.
//!
//! Device-visible memory is never handed out as a Rust reference: [`DmaBuf`] offers
//! copies in and out through raw pointers.

use crate::error::{Error, Result};
use crate::lock;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// An I/O virtual address: what the device puts on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Iova(pub u64);

/// Maps host memory for device access.
pub trait DmaMapper: Send + Sync + fmt::Debug {
    /// Maps `len` bytes at `vaddr` so the device reaches them at `iova`.
    ///
    /// # Safety
    /// `vaddr..vaddr+len` must stay valid, pinned memory until `unmap` is called for
    /// the same range; the device may read and write it at any time until then.
    unsafe fn map(&self, vaddr: NonNull<u8>, len: usize, iova: Iova) -> Result<()>;
    /// Removes a mapping made by `map`.
    fn unmap(&self, iova: Iova, len: usize) -> Result<()>;
}

/// Size of one pool chunk, and of a huge page.
pub const CHUNK_SIZE: usize = 2 << 20;
/// Smallest block the pool hands out.
pub const MIN_BLOCK: usize = 4096;
const ORDERS: usize = 10; // 4 KiB << 9 = 2 MiB
/// First IOVA the pool uses: above the low 4 GiB, away from the MSI window at
/// 0xfee00000 that VFIO reserves, and well inside a 39-bit IOMMU address width.
pub const IOVA_BASE: u64 = 1 << 32;
mod windows;
pub use windows::{WINDOW_ENV, WINDOW_MAX};

static SAID_NO_HUGEPAGES: AtomicBool = AtomicBool::new(false);

struct Chunk {
    ptr: NonNull<u8>,
    len: usize,
    iova: Iova,
    huge: bool,
    /// Free lists per order (block offsets within the chunk); empty for a dedicated
    /// chunk larger than 2 MiB.
    free: [Vec<usize>; ORDERS],
}

// SAFETY: a chunk owns its mapping outright; the pointer is only dereferenced by the
// holders of the blocks carved from it, and bookkeeping happens under the pool lock.
unsafe impl Send for Chunk {}

struct PoolInner {
    chunks: Vec<Chunk>,
    next_iova: u64,
    mapped_bytes: usize,
    in_use_bytes: usize,
}

/// Statistics of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaStats {
    /// Bytes mapped for the device.
    pub mapped_bytes: usize,
    /// Bytes handed out and not yet returned.
    pub in_use_bytes: usize,
    /// Chunks backed by huge pages.
    pub huge_chunks: usize,
    /// All chunks.
    pub chunks: usize,
}

struct PoolShared {
    name: String,
    /// The IOVA window this pool holds alone (given back on drop): base and size.
    iova_base: u64,
    window_size: u64,
    mapper: Arc<dyn DmaMapper>,
    use_huge: bool,
    inner: Mutex<PoolInner>,
}

/// A pool of DMA memory for one device (one IOMMU domain).
#[derive(Clone)]
pub struct DmaPool(Arc<PoolShared>);

impl fmt::Debug for DmaPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaPool")
            .field("name", &self.0.name)
            .field("stats", &self.stats())
            .finish()
    }
}

fn order_of(len: usize) -> usize {
    let blocks = len.div_ceil(MIN_BLOCK).next_power_of_two();
    blocks.trailing_zeros() as usize
}

fn mmap_anon(len: usize, huge: bool) -> Option<NonNull<u8>> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
    if huge {
        flags |= libc::MAP_HUGETLB;
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing
    // aliases nothing; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast::<u8>())
}

impl DmaPool {
    /// A pool named `name` (the device it serves) mapping through `mapper`, in an
    /// IOVA window of its own (`windows`). Huge pages are used when
    /// `/proc/sys/vm/nr_hugepages` shows some and a mapping succeeds. Refused with
    /// [`Error::DmaExhausted`] when every window is held by a live pool.
    pub fn new(name: &str, mapper: Arc<dyn DmaMapper>) -> Result<Self> {
        let use_huge = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
        let windows = windows::windows()?;
        let iova_base = windows.take(name)?;
        Ok(DmaPool(Arc::new(PoolShared {
            name: name.to_string(),
            iova_base,
            window_size: windows.size(),
            mapper,
            use_huge,
            inner: Mutex::new(PoolInner {
                chunks: Vec::new(),
                next_iova: iova_base,
                mapped_bytes: 0,
                in_use_bytes: 0,
            }),
        })))
    }

    /// The IOVA window this pool allocates from: (base, length).
    pub fn iova_range(&self) -> (Iova, u64) {
        (Iova(self.0.iova_base), self.0.window_size)
    }

    /// The device this pool serves.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Current statistics.
    pub fn stats(&self) -> DmaStats {
        let g = lock(&self.0.inner);
        DmaStats {
            mapped_bytes: g.mapped_bytes,
            in_use_bytes: g.in_use_bytes,
            huge_chunks: g.chunks.iter().filter(|c| c.huge).count(),
            chunks: g.chunks.len(),
        }
    }

    fn new_chunk(&self, inner: &mut PoolInner, len: usize, dedicated: bool) -> Result<usize> {
        let len = len.div_ceil(CHUNK_SIZE) * CHUNK_SIZE;
        // Before mapping anything, so a full window leaks no memory.
        let iova = Iova(inner.next_iova);
        if inner.next_iova + len as u64 > self.0.iova_base + self.0.window_size {
            return Err(Error::DmaExhausted(format!(
                "{}: the pool's {} GiB IOVA window is used up (its size: {WINDOW_ENV})",
                self.0.name,
                self.0.window_size >> 30
            )));
        }
        let (ptr, huge) = match self.0.use_huge.then(|| mmap_anon(len, true)).flatten() {
            Some(p) => (p, true),
            None => {
                let p = mmap_anon(len, false).ok_or_else(|| {
                    Error::DmaExhausted(format!(
                        "{}: cannot map {} KiB of memory: {}",
                        self.0.name,
                        len >> 10,
                        std::io::Error::last_os_error()
                    ))
                })?;
                if !SAID_NO_HUGEPAGES.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "nvme-driver: no huge pages available, DMA memory uses 4 KiB pages \
                         (run `nvme-setup hugepages 64` for 2 MiB pages)"
                    );
                }
                (p, false)
            }
        };
        // SAFETY: `ptr..ptr+len` is a fresh private mapping owned by this chunk, which
        // unmaps the IOVA range before unmapping the memory (in `Drop`).
        if let Err(e) = unsafe { self.0.mapper.map(ptr, len, iova) } {
            // SAFETY: the mapping was made above and nothing else refers to it.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
            return Err(e);
        }
        inner.next_iova += len as u64;
        inner.mapped_bytes += len;
        let mut free: [Vec<usize>; ORDERS] = Default::default();
        if !dedicated {
            free[ORDERS - 1].push(0);
        }
        inner.chunks.push(Chunk {
            ptr,
            len,
            iova,
            huge,
            free,
        });
        Ok(inner.chunks.len() - 1)
    }

    /// Allocates a zeroed buffer of at least `len` bytes, aligned to 4 KiB (the
    /// memory page size this driver configures, CC.MPS = 0).
    pub fn alloc(&self, len: usize) -> Result<DmaBuf> {
        if len == 0 {
            return Err(Error::InvalidArgument("DMA buffer of 0 bytes".into()));
        }
        let mut g = lock(&self.0.inner);
        if len > CHUNK_SIZE {
            let idx = self.new_chunk(&mut g, len, true)?;
            let c = &g.chunks[idx];
            let (ptr, iova, clen) = (c.ptr, c.iova, c.len);
            g.in_use_bytes += clen;
            return Ok(DmaBuf {
                ptr,
                iova,
                len,
                block: Block {
                    chunk: idx,
                    offset: 0,
                    order: usize::MAX,
                },
                pool: self.clone(),
            });
        }
        let order = order_of(len);
        let found = g.chunks.iter().enumerate().find_map(|(i, c)| {
            (order..ORDERS)
                .find(|&o| !c.free[o].is_empty())
                .map(|o| (i, o))
        });
        let (ci, mut o) = match found {
            Some(f) => f,
            None => (self.new_chunk(&mut g, CHUNK_SIZE, false)?, ORDERS - 1),
        };
        let chunk = &mut g.chunks[ci];
        let off = chunk.free[o]
            .pop()
            .expect("order chosen because its list is non-empty");
        while o > order {
            o -= 1;
            chunk.free[o].push(off + (MIN_BLOCK << o));
        }
        let block_len = MIN_BLOCK << order;
        // SAFETY: `off + block_len <= chunk.len`, so the pointer stays inside the chunk.
        let ptr = unsafe { NonNull::new_unchecked(chunk.ptr.as_ptr().add(off)) };
        // SAFETY: the block is inside the chunk and is exclusively ours now.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, block_len) };
        let iova = Iova(chunk.iova.0 + off as u64);
        g.in_use_bytes += block_len;
        Ok(DmaBuf {
            ptr,
            iova,
            len,
            block: Block {
                chunk: ci,
                offset: off,
                order,
            },
            pool: self.clone(),
        })
    }

    fn free(&self, b: Block) {
        let mut g = lock(&self.0.inner);
        if b.order == usize::MAX {
            let len = g.chunks[b.chunk].len;
            g.in_use_bytes -= len;
            // Dedicated chunks are kept for reuse by nothing: release them now.
            let c = &mut g.chunks[b.chunk];
            if c.len > 0 {
                let _ = self.0.mapper.unmap(c.iova, c.len);
                // SAFETY: the IOVA mapping is gone and the only block is being freed.
                unsafe { libc::munmap(c.ptr.as_ptr().cast(), c.len) };
                g.mapped_bytes -= len;
                g.chunks[b.chunk].len = 0;
            }
            return;
        }
        g.in_use_bytes -= MIN_BLOCK << b.order;
        let chunk = &mut g.chunks[b.chunk];
        let (mut off, mut o) = (b.offset, b.order);
        // Coalesce with free buddies.
        while o < ORDERS - 1 {
            let buddy = off ^ (MIN_BLOCK << o);
            match chunk.free[o].iter().position(|&x| x == buddy) {
                Some(pos) => {
                    chunk.free[o].swap_remove(pos);
                    off = off.min(buddy);
                    o += 1;
                }
                None => break,
            }
        }
        chunk.free[o].push(off);
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        for c in g.chunks.drain(..) {
            if c.len == 0 {
                continue;
            }
            let _ = self.mapper.unmap(c.iova, c.len);
            // SAFETY: every buffer holds a pool reference, so none is alive now, and
            // the device mapping was removed above.
            unsafe { libc::munmap(c.ptr.as_ptr().cast(), c.len) };
        }
        // Unmapped above: the window is free for the next pool.
        if let Ok(windows) = windows::windows() {
            windows.give_back(self.iova_base);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Block {
    chunk: usize,
    offset: usize,
    order: usize,
}

/// A buffer of DMA memory: host pointer plus IOVA. Returned to its pool on drop.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    iova: Iova,
    len: usize,
    block: Block,
    pool: DmaPool,
}

// SAFETY: a `DmaBuf` owns its block exclusively; moving it to another thread moves
// that ownership. It is not `Sync`: concurrent copies would race.
unsafe impl Send for DmaBuf {}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf")
            .field("iova", &format_args!("{:#x}", self.iova.0))
            .field("len", &self.len)
            .finish()
    }
}

impl DmaBuf {
    /// The address the device uses.
    pub fn iova(&self) -> Iova {
        self.iova
    }
    /// Length asked for.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never true: buffers have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Host address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// The name of the pool (device) the buffer belongs to.
    pub fn pool_name(&self) -> &str {
        self.pool.name()
    }
    /// True if this buffer came from `pool`.
    pub fn is_from(&self, pool: &DmaPool) -> bool {
        Arc::ptr_eq(&self.pool.0, &pool.0)
    }

    fn check(&self, off: usize, n: usize) -> Result<()> {
        if off.checked_add(n).is_none_or(|e| e > self.len) {
            return Err(Error::BadBuffer(format!(
                "range {off}+{n} is past the end of a {}-byte buffer",
                self.len
            )));
        }
        Ok(())
    }

    /// Copies `src` into the buffer at `off`. Do not call while the device may be
    /// reading this range.
    pub fn write_at(&mut self, off: usize, src: &[u8]) -> Result<()> {
        self.check(off, src.len())?;
        // SAFETY: in bounds (checked); the buffer is exclusively ours (`&mut self`).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        };
        Ok(())
    }

    /// Copies the buffer at `off` into `dst`.
    pub fn read_at(&self, off: usize, dst: &mut [u8]) -> Result<()> {
        self.check(off, dst.len())?;
        // SAFETY: in bounds (checked); `dst` is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    /// Fills the buffer with `byte`.
    pub fn fill(&mut self, byte: u8) {
        // SAFETY: the whole buffer is ours.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), byte, self.len) };
    }

    /// The buffer as a byte slice, for checking data after an I/O completed.
    ///
    /// # Safety
    /// No I/O may be in flight on this buffer while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller promises the device is not writing the buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer as a mutable byte slice, for filling data before an I/O.
    ///
    /// # Safety
    /// No I/O may be in flight on this buffer while the slice lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the caller promises the device is not touching the buffer.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// A view of `len` bytes at `off`, for building a command.
    pub fn slice(&self, off: usize, len: usize) -> Result<DmaSlice> {
        self.check(off, len)?;
        Ok(DmaSlice {
            iova: Iova(self.iova.0 + off as u64),
            len: len as u32,
        })
    }

    /// The whole buffer as a [`DmaSlice`].
    pub fn whole(&self) -> DmaSlice {
        DmaSlice {
            iova: self.iova,
            len: self.len.min(u32::MAX as usize) as u32,
        }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        self.pool.free(self.block);
    }
}

/// A device-visible range of a [`DmaBuf`]: what an I/O request carries. It can
/// only be made from a `DmaBuf`, so it always lies in mapped memory; the caller keeps
/// the buffer alive until the I/O completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DmaSlice {
    /// Start address for the device.
    pub iova: Iova,
    /// Length in bytes.
    pub len: u32,
}

/// A mapper that maps nothing: for pools whose memory the device reaches by host
/// address (tests of the pool itself).
#[derive(Debug, Default)]
pub struct NullMapper;

impl DmaMapper for NullMapper {
    unsafe fn map(&self, _vaddr: NonNull<u8>, _len: usize, _iova: Iova) -> Result<()> {
        Ok(())
    }
    fn unmap(&self, _iova: Iova, _len: usize) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buddy_allocates_and_coalesces() {
        let pool = DmaPool::new("test", Arc::new(NullMapper)).unwrap();
        let a = pool.alloc(100).unwrap();
        let b = pool.alloc(4096).unwrap();
        let c = pool.alloc(64 << 10).unwrap();
        assert_eq!(a.iova().0 % 4096, 0);
        assert_eq!(c.iova().0 % (64 << 10), 0);
        assert_ne!(a.iova(), b.iova());
        assert_eq!(pool.stats().chunks, 1);
        assert_eq!(pool.stats().in_use_bytes, 4096 + 4096 + (64 << 10));
        drop((a, b, c));
        assert_eq!(pool.stats().in_use_bytes, 0);
        // Everything coalesced back: a full 2 MiB block fits in the same chunk.
        let d = pool.alloc(CHUNK_SIZE).unwrap();
        assert_eq!(pool.stats().chunks, 1);
        assert_eq!(d.iova(), pool.iova_range().0);
        let e = pool.alloc(3 << 20).unwrap();
        assert_eq!(pool.stats().chunks, 2);
        assert_eq!(e.iova().0 % CHUNK_SIZE as u64, 0);
        drop(e);
        assert_eq!(pool.stats().mapped_bytes, CHUNK_SIZE);
    }

    #[test]
    fn copies_are_bounds_checked() {
        let pool = DmaPool::new("test", Arc::new(NullMapper)).unwrap();
        let mut b = pool.alloc(8192).unwrap();
        b.write_at(4000, &[1, 2, 3]).unwrap();
        let mut out = [0u8; 3];
        b.read_at(4000, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        assert!(b.write_at(8190, &[0; 3]).is_err());
        assert!(b.slice(8000, 200).is_err());
        assert_eq!(b.slice(512, 512).unwrap().iova.0, b.iova().0 + 512);
        let other = DmaPool::new("other", Arc::new(NullMapper)).unwrap();
        assert!(b.is_from(&pool) && !b.is_from(&other));
        assert_ne!(
            pool.iova_range().0,
            other.iova_range().0,
            "pools get their own IOVA windows"
        );
    }
}
