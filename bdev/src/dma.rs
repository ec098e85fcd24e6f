// SPDX-License-Identifier: Apache-2.0 OR MIT
//! I/O buffers that every path can reach.
//!
//! Each controller has its own DMA address space (a VFIO container per device, or the
//! software controller's own translation table), and the driver's per-controller pools
//! all start at the same IOVA. A multipath I/O may go down any path, so its buffer
//! must be mapped, at one IOVA, into every path's address space. [`IoBufPool`] does
//! that: one DMA pool whose mapper fans each mapping out to every attached
//! controller, replaying existing mappings into a controller attached later. The
//! fan-out maps at the pool's IOVA plus [`IOVA_WINDOW`], a window well above what the
//! controllers' own pools use, so the two never overlap; [`IoBuf`] hands out slices
//! in that window.

use crate::sync::lock_std as lock;
use nvme_driver::dma::DmaMapper;
use nvme_driver::{DmaBuf, DmaPool, DmaSlice, Iova};
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Offset of the shared I/O buffer window from the driver's pool IOVAs: 128 GiB,
/// inside a 39-bit IOMMU address width, far above per-controller pools (which grow
/// from 4 GiB by 2 MiB chunks).
pub const IOVA_WINDOW: u64 = 1 << 37;

#[derive(Default)]
struct FanInner {
    mappers: Vec<(u64, Arc<dyn DmaMapper>)>,
    /// (host address, length, pool IOVA) of each live mapping.
    maps: Vec<(usize, usize, u64)>,
}

/// Maps into every attached address space at `iova + IOVA_WINDOW`.
#[derive(Default)]
pub(crate) struct FanoutMapper {
    inner: Mutex<FanInner>,
}

impl fmt::Debug for FanoutMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = lock(&self.inner);
        f.debug_struct("FanoutMapper")
            .field("spaces", &g.mappers.len())
            .field("mappings", &g.maps.len())
            .finish()
    }
}

impl FanoutMapper {
    /// Adds an address space (keyed by `id`) and maps every live buffer into it.
    pub(crate) fn attach(&self, id: u64, m: Arc<dyn DmaMapper>) -> crate::Result<()> {
        let mut g = lock(&self.inner);
        for (i, &(host, len, iova)) in g.maps.iter().enumerate() {
            let Some(p) = NonNull::new(host as *mut u8) else {
                continue;
            };
            // SAFETY: `host..host+len` is pool memory mapped through `map` below, whose
            // contract keeps it valid until `unmap` for this IOVA, which unmaps it from
            // every attached space including this one (or `detach` does).
            if let Err(e) = unsafe { m.map(p, len, Iova(iova + IOVA_WINDOW)) } {
                for &(_, l, io) in &g.maps[..i] {
                    let _ = m.unmap(Iova(io + IOVA_WINDOW), l);
                }
                return Err(e.into());
            }
        }
        g.mappers.push((id, m));
        Ok(())
    }

    /// Removes an address space, unmapping every buffer from it.
    pub(crate) fn detach(&self, id: u64) {
        let mut g = lock(&self.inner);
        if let Some(pos) = g.mappers.iter().position(|(i, _)| *i == id) {
            let (_, m) = g.mappers.remove(pos);
            for &(_, len, iova) in &g.maps {
                // The device may be gone already; nothing to do about a failed unmap.
                let _ = m.unmap(Iova(iova + IOVA_WINDOW), len);
            }
        }
    }
}

impl DmaMapper for FanoutMapper {
    unsafe fn map(&self, vaddr: NonNull<u8>, len: usize, iova: Iova) -> nvme_driver::Result<()> {
        let mut g = lock(&self.inner);
        for (k, (_, m)) in g.mappers.iter().enumerate() {
            // SAFETY: forwarded from our caller, who keeps the memory valid until
            // `unmap`, which we forward to every space.
            if let Err(e) = unsafe { m.map(vaddr, len, Iova(iova.0 + IOVA_WINDOW)) } {
                for (_, done) in &g.mappers[..k] {
                    let _ = done.unmap(Iova(iova.0 + IOVA_WINDOW), len);
                }
                return Err(e);
            }
        }
        g.maps.push((vaddr.as_ptr() as usize, len, iova.0));
        Ok(())
    }

    fn unmap(&self, iova: Iova, len: usize) -> nvme_driver::Result<()> {
        let mut g = lock(&self.inner);
        for (_, m) in &g.mappers {
            let _ = m.unmap(Iova(iova.0 + IOVA_WINDOW), len);
        }
        g.maps.retain(|&(_, l, io)| !(io == iova.0 && l == len));
        Ok(())
    }
}

/// Where caller memory registered with
/// [`BlockLayer::register_memory`](crate::BlockLayer::register_memory) sits in every
/// controller's address space: 256 GiB, above the shared buffer window, inside a 39-bit
/// IOMMU address width.
pub const REGISTERED_BASE: u64 = 1 << 38;
/// The size of that window: registered regions add up to at most 64 GiB.
pub const REGISTERED_MAX: u64 = 64 << 30;
/// Registered regions start and end on this boundary (the IOMMU's page).
pub const REGISTER_ALIGN: usize = 4096;

/// Which parts of the registration window are taken (first fit; set-up time only).
#[derive(Debug, Default)]
pub(crate) struct RegisteredSpace {
    /// (offset in the window, length) of each registered region, by offset.
    taken: Mutex<Vec<(u64, u64)>>,
}

impl RegisteredSpace {
    fn take(&self, len: u64) -> Option<u64> {
        let mut t = lock(&self.taken);
        let mut at = 0;
        let mut pos = t.len();
        for (i, &(off, l)) in t.iter().enumerate() {
            if off - at >= len {
                pos = i;
                break;
            }
            at = off + l;
        }
        if pos == t.len() && REGISTERED_MAX - at < len {
            return None;
        }
        t.insert(pos, (at, len));
        Some(at)
    }

    fn give_back(&self, off: u64) {
        lock(&self.taken).retain(|&(o, _)| o != off);
    }
}

/// Caller memory registered for DMA with every controller of a
/// [`BlockLayer`](crate::BlockLayer), now and attached later
/// ([`BlockLayer::register_memory`](crate::BlockLayer::register_memory), SPDK's
/// `spdk_mem_register`): I/O from it needs no copy. Dropping it unregisters the memory
/// from every controller; no I/O on it may be in flight then.
pub struct MemRegion {
    ptr: NonNull<u8>,
    len: usize,
    /// Offset in the registration window.
    offset: u64,
    fanout: Arc<FanoutMapper>,
    space: Arc<RegisteredSpace>,
}

// SAFETY: a MemRegion is a handle to memory its registrant keeps valid (the contract of
// `register_memory`); it touches it only through `DmaSlice`s the caller's I/O uses.
unsafe impl Send for MemRegion {}
// SAFETY: as for Send; its methods take `&self` and read only its own fields.
unsafe impl Sync for MemRegion {}

impl fmt::Debug for MemRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemRegion")
            .field("host", &self.ptr)
            .field("iova", &format_args!("{:#x}", self.iova()))
            .field("len", &self.len)
            .finish()
    }
}

impl MemRegion {
    /// Registers `len` bytes at `ptr` with every address space of `fanout`.
    ///
    /// # Safety
    /// As [`BlockLayer::register_memory`](crate::BlockLayer::register_memory).
    pub(crate) unsafe fn register(
        fanout: &Arc<FanoutMapper>,
        space: &Arc<RegisteredSpace>,
        ptr: *mut u8,
        len: usize,
    ) -> crate::Result<MemRegion> {
        let bad = |why: String| crate::Error::InvalidOption(format!("register_memory: {why}"));
        let Some(ptr) = NonNull::new(ptr) else {
            return Err(bad("the address is null".into()));
        };
        let aligned = (ptr.as_ptr() as usize).is_multiple_of(REGISTER_ALIGN)
            && len.is_multiple_of(REGISTER_ALIGN);
        if !aligned || len == 0 {
            return Err(bad(format!(
                "{:p} + {len} bytes: the start and the length must be non-zero multiples of \
                 {REGISTER_ALIGN} (the IOMMU maps whole pages); allocate with that alignment",
                ptr.as_ptr()
            )));
        }
        let Some(offset) = space.take(len as u64) else {
            return Err(crate::Error::Exhausted(format!(
                "register_memory: {len} more bytes do not fit the {} GiB registration \
                 window; unregister (drop) regions no longer used",
                REGISTERED_MAX >> 30
            )));
        };
        let pool_iova = fanout_iova(offset);
        // SAFETY: the caller keeps `ptr..ptr+len` valid until the region is dropped,
        // whose `Drop` unmaps it from every space.
        if let Err(e) = unsafe { fanout.map(ptr, len, pool_iova) } {
            space.give_back(offset);
            return Err(e.into());
        }
        Ok(MemRegion {
            ptr,
            len,
            offset,
            fanout: fanout.clone(),
            space: space.clone(),
        })
    }

    /// The region's first byte in every controller's address space.
    pub fn iova(&self) -> u64 {
        REGISTERED_BASE + self.offset
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Host address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// `len` bytes at `off`, for a request (a request's buffer is under 4 GiB).
    pub fn slice(&self, off: usize, len: usize) -> crate::Result<DmaSlice> {
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(crate::Error::InvalidIo(format!(
                "{off} + {len} bytes is outside the registered region of {} bytes",
                self.len
            )));
        }
        let Ok(len) = u32::try_from(len) else {
            return Err(crate::Error::InvalidIo(format!(
                "{len} bytes: a request's buffer is under 4 GiB"
            )));
        };
        Ok(DmaSlice {
            iova: Iova(self.iova() + off as u64),
            len,
        })
    }
}

/// The IOVA to give the fan-out mapper for offset `offset` of the registration window
/// (it adds [`IOVA_WINDOW`] to what it is given).
fn fanout_iova(offset: u64) -> Iova {
    Iova(REGISTERED_BASE - IOVA_WINDOW + offset)
}

impl Drop for MemRegion {
    fn drop(&mut self) {
        let _ = self.fanout.unmap(fanout_iova(self.offset), self.len);
        self.space.give_back(self.offset);
    }
}

/// The pool of I/O buffers shared by every controller of a [`BlockLayer`](crate::BlockLayer).
#[derive(Clone, Debug)]
pub struct IoBufPool {
    pool: DmaPool,
    pub(crate) fanout: Arc<FanoutMapper>,
}

impl IoBufPool {
    pub(crate) fn new() -> crate::Result<Self> {
        let fanout = Arc::new(FanoutMapper::default());
        Ok(IoBufPool {
            pool: DmaPool::new("bdev-io", fanout.clone())?,
            fanout,
        })
    }

    /// The IOVA window the buffers have in every controller's address space: register
    /// it with [`Controller::add_dma_window`](nvme_driver::Controller::add_dma_window) so
    /// the controller's queue pairs accept them.
    pub(crate) fn window(&self) -> (Iova, u64) {
        let (base, len) = self.pool.iova_range();
        (Iova(base.0 + IOVA_WINDOW), len)
    }

    /// A zeroed buffer of at least `len` bytes, reachable by every attached controller
    /// (now and attached later). Set-up time only: the pool takes a lock.
    pub fn alloc(&self, len: usize) -> crate::Result<IoBuf> {
        Ok(IoBuf {
            buf: self.pool.alloc(len)?,
        })
    }
}

/// A DMA buffer for bdev I/O. Take [`DmaSlice`]s for requests from it with
/// [`slice`](IoBuf::slice) or [`whole`](IoBuf::whole) (not from a driver `DmaBuf`:
/// those are only reachable by their own controller).
pub struct IoBuf {
    buf: DmaBuf,
}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuf")
            .field(
                "iova",
                &format_args!("{:#x}", self.buf.iova().0 + IOVA_WINDOW),
            )
            .field("len", &self.buf.len())
            .finish()
    }
}

impl IoBuf {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Never true.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// `len` bytes at `off`, for a request.
    pub fn slice(&self, off: usize, len: usize) -> crate::Result<DmaSlice> {
        let s = self.buf.slice(off, len)?;
        Ok(DmaSlice {
            iova: Iova(s.iova.0 + IOVA_WINDOW),
            len: s.len,
        })
    }
    /// The whole buffer, for a request.
    pub fn whole(&self) -> DmaSlice {
        let s = self.buf.whole();
        DmaSlice {
            iova: Iova(s.iova.0 + IOVA_WINDOW),
            len: s.len,
        }
    }
    /// Copies `src` in at `off`. Not while an I/O uses the range.
    pub fn write_at(&mut self, off: usize, src: &[u8]) -> crate::Result<()> {
        Ok(self.buf.write_at(off, src)?)
    }
    /// Copies out from `off` into `dst`.
    pub fn read_at(&self, off: usize, dst: &mut [u8]) -> crate::Result<()> {
        Ok(self.buf.read_at(off, dst)?)
    }
    /// Fills with `byte`.
    pub fn fill(&mut self, byte: u8) {
        self.buf.fill(byte)
    }
    /// Host address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.buf.as_ptr()
    }
    /// The contents, without copying (data paths that check what a read brought).
    ///
    /// # Safety
    /// No I/O that writes this buffer may be in flight while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller guarantees no device write is in flight.
        unsafe { self.buf.as_slice() }
    }
    /// The contents, mutable, without copying (data paths that fill write buffers).
    ///
    /// # Safety
    /// No I/O may be in flight on this buffer while the slice lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the caller guarantees no I/O is in flight.
        unsafe { self.buf.as_mut_slice() }
    }
}
