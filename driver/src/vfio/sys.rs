// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The system calls behind [`super::VfioBus`] that `vfio-ioctls` does not make for us:
//! region info, config-space reads and writes that report errors, and the BAR0
//! mapping with its all-ones stand-in.

use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use vfio_bindings::bindings::vfio::{vfio_region_info, VFIO_BASE, VFIO_TYPE};

vmm_sys_util::ioctl_io_nr!(VFIO_DEVICE_GET_REGION_INFO, VFIO_TYPE as u32, VFIO_BASE + 8);

/// One region of a VFIO device: where it sits on the device file and what it allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub(crate) flags: u32,
    pub(crate) size: u64,
    pub(crate) offset: u64,
}

/// Asks the kernel about region `index` (a BAR, or the config space).
pub(crate) fn region_info(dev: &impl AsRawFd, index: u32) -> io::Result<Region> {
    let mut info = vfio_region_info {
        argsz: std::mem::size_of::<vfio_region_info>() as u32,
        index,
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_GET_REGION_INFO writes at most `argsz` bytes into `info`, a
    // live, exclusively borrowed `vfio_region_info` of exactly that size.
    let r = unsafe {
        vmm_sys_util::ioctl::ioctl_with_mut_ref(dev, VFIO_DEVICE_GET_REGION_INFO(), &mut info)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Region {
        flags: info.flags,
        size: info.size,
        offset: info.offset,
    })
}

/// Reads `buf.len()` bytes at `off` of the device file.
pub(crate) fn pread_exact(dev: &impl AsRawFd, buf: &mut [u8], off: u64) -> io::Result<()> {
    let off = libc::off_t::try_from(off).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `buf` is a valid, exclusively borrowed buffer of `buf.len()` bytes.
    let n = unsafe { libc::pread(dev.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize != buf.len() => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Writes `buf` at `off` of the device file.
pub(crate) fn pwrite_all(dev: &impl AsRawFd, buf: &[u8], off: u64) -> io::Result<()> {
    let off = libc::off_t::try_from(off).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `buf` is a valid buffer of `buf.len()` bytes that the kernel only reads.
    let n = unsafe { libc::pwrite(dev.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off) };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize != buf.len() => Err(io::ErrorKind::WriteZero.into()),
        _ => Ok(()),
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(4096)
}

/// Maps `len` bytes of the device file at `offset` shared and read-write: the BAR
/// itself, so loads and stores reach the device without a system call.
pub(crate) fn map_bar(dev: &impl AsRawFd, offset: u64, len: usize) -> io::Result<NonNull<u8>> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: a new shared mapping at an address of the kernel's choosing aliases no
    // existing memory; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            dev.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::ErrorKind::AddrNotAvailable.into())
}

/// Replaces the mapping at `addr..addr+len` (the BAR) with private anonymous memory
/// full of 0xff bytes: register reads then return all ones, as from a removed
/// device, writes land nowhere, and the mapping no longer holds the device file.
///
/// The 0xff pages are prepared elsewhere and moved in with `mremap`, so a thread
/// reading registers meanwhile sees either the device or all ones, never zeros.
///
/// # Safety
/// `addr..addr+len` must be a mapping the caller owns (the BAR mapping), page aligned,
/// to which no Rust reference exists.
pub(crate) unsafe fn replace_with_ones(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a new private anonymous mapping at an address of the kernel's choosing.
    let tmp = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, anon, -1, 0) };
    if tmp != libc::MAP_FAILED {
        // SAFETY: `tmp` is `len` bytes of fresh memory that only we know of.
        unsafe { std::ptr::write_bytes(tmp.cast::<u8>(), 0xff, len) };
        // SAFETY: moves our private pages over the caller's mapping, which the caller
        // owns (function contract); MREMAP_FIXED unmaps what was there atomically.
        let moved = unsafe {
            libc::mremap(
                tmp,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                addr.as_ptr().cast::<libc::c_void>(),
            )
        };
        if moved != libc::MAP_FAILED {
            return Ok(());
        }
        // SAFETY: `tmp` is still our own mapping since the move failed.
        unsafe { libc::munmap(tmp, len) };
    }
    // Fallback: map over the BAR in place, then fill. A reader may see zeros for a
    // moment; that is still not a live register.
    // SAFETY: MAP_FIXED replaces only the caller's own mapping (function contract).
    let p = unsafe {
        libc::mmap(
            addr.as_ptr().cast(),
            len,
            prot,
            anon | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fresh mapping is `len` bytes at `addr`, ours, with no references.
    unsafe { std::ptr::write_bytes(addr.as_ptr(), 0xff, len) };
    Ok(())
}

/// Unmaps `addr..addr+len`.
///
/// # Safety
/// The caller owns the mapping and nothing uses it any more.
pub(crate) unsafe fn unmap(addr: NonNull<u8>, len: usize) {
    // SAFETY: per the function contract.
    unsafe { libc::munmap(addr.as_ptr().cast(), len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_reads_all_ones_at_the_same_address() {
        let len = 2 * page_size();
        let f = std::fs::File::open("/dev/zero").unwrap();
        // A private mapping of /dev/zero stands in for the BAR.
        // SAFETY: a fresh mapping of the kernel's choosing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = NonNull::new(p.cast::<u8>()).unwrap();
        // SAFETY: `p` is our mapping of `len` bytes.
        unsafe {
            assert_eq!(p.as_ptr().cast::<u32>().read_volatile(), 0);
            replace_with_ones(p, len).unwrap();
            assert_eq!(p.as_ptr().cast::<u32>().read_volatile(), u32::MAX);
            let last = p.as_ptr().add(len - 4).cast::<u32>();
            assert_eq!(last.read_volatile(), u32::MAX);
            last.write_volatile(5);
            unmap(p, len);
        }
    }
}
