// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Namespace storage: sparse, zero until written, shareable between controllers, and
//! resizable while attached ([`Namespace::resize`]).

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Storage is allocated in pieces of this many bytes, on first write.
const PIECE: usize = 64 << 10;

static NEXT_NGUID: AtomicU64 = AtomicU64::new(1);

/// A namespace's identity and data. Wrap it in an `Arc` and hand it to two
/// controllers to make them two paths to the same namespace (same data, same
/// NGUID, same ANA group).
pub struct Namespace {
    nsid: u32,
    /// Size in blocks: changed by `resize` while controllers serve the namespace.
    nblocks: AtomicU64,
    /// Resizes so far: each controller compares it with the count it last saw, and
    /// reports a Namespace Attribute Changed notice when it moved.
    changes: AtomicU64,
    block_shift: u32,
    nguid: [u8; 16],
    anagrpid: u32,
    data: Mutex<HashMap<u64, Box<[u8]>>>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("nsid", &self.nsid)
            .field("nblocks", &self.nblocks())
            .field("block_size", &self.block_size())
            .field("anagrpid", &self.anagrpid)
            .finish()
    }
}

impl Namespace {
    /// A namespace `nsid` of `nblocks` blocks of `block_size` bytes (512 or 4096),
    /// all zero, in ANA group 1, with an NGUID unique in this process.
    pub fn new(nsid: u32, nblocks: u64, block_size: u32) -> Result<Self> {
        let block_shift = match block_size {
            512 => 9,
            4096 => 12,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "namespace {nsid}: block size {block_size} is not 512 or 4096"
                )))
            }
        };
        if nsid == 0 || nsid == u32::MAX {
            return Err(Error::InvalidArgument(format!(
                "NSID {nsid:#x} is reserved"
            )));
        }
        let serial = NEXT_NGUID.fetch_add(1, Ordering::Relaxed);
        let mut nguid = [0u8; 16];
        nguid[..4].copy_from_slice(b"SOFT");
        nguid[4..8].copy_from_slice(&nsid.to_be_bytes());
        nguid[8..].copy_from_slice(&serial.to_be_bytes());
        Self::check_size(nsid, nblocks, block_shift)?;
        Ok(Namespace {
            nsid,
            nblocks: AtomicU64::new(nblocks),
            changes: AtomicU64::new(0),
            block_shift,
            nguid,
            anagrpid: 1,
            data: Mutex::new(HashMap::new()),
        })
    }

    fn check_size(nsid: u32, nblocks: u64, block_shift: u32) -> Result<()> {
        if nblocks == 0
            || nblocks
                .checked_shl(block_shift)
                .is_none_or(|b| b >> block_shift != nblocks)
        {
            return Err(Error::InvalidArgument(format!(
                "namespace {nsid}: {nblocks} blocks is not a usable size"
            )));
        }
        Ok(())
    }

    /// Changes the size to `nblocks` blocks (grow or shrink), as a namespace
    /// management operation on a real subsystem would. Blocks past the old end read
    /// zeroes after a grow; a shrink discards the data past the new end. Every
    /// software controller serving the namespace then reports it as a controller does
    /// (NVMe Base 2.0, section 5.2): its Identify Namespace shows the new NSZE, NCAP
    /// and NUSE at once, its Changed Namespace List log page (04h) names the namespace,
    /// and a Namespace Attribute Changed notice (event type Notice, information 00h)
    /// completes an Asynchronous Event Request, if the host enabled those notices
    /// (Asynchronous Event Configuration bit 8) and has not yet read the log since the
    /// last one.
    pub fn resize(&self, nblocks: u64) -> Result<()> {
        Self::check_size(self.nsid, nblocks, self.block_shift)?;
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.nblocks.swap(nblocks, Ordering::AcqRel);
        if nblocks < old {
            // Pieces wholly past the new end go; the one it cuts is zeroed past it.
            let end = nblocks << self.block_shift;
            data.retain(|&key, _| key * (PIECE as u64) < end);
            let within = (end % PIECE as u64) as usize;
            if let Some(p) = data.get_mut(&(end / PIECE as u64)) {
                p[within..].fill(0);
            }
        }
        drop(data);
        if nblocks != old {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Resizes so far (see [`Namespace::resize`]).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Puts the namespace in ANA group `anagrpid` (at least 1).
    pub fn with_anagrpid(mut self, anagrpid: u32) -> Self {
        self.anagrpid = anagrpid.max(1);
        self
    }

    /// Sets the NGUID (and with it the UUID).
    pub fn with_nguid(mut self, nguid: [u8; 16]) -> Self {
        self.nguid = nguid;
        self
    }

    /// Namespace ID.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }
    /// Size in blocks.
    pub fn nblocks(&self) -> u64 {
        self.nblocks.load(Ordering::Acquire)
    }
    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.block_shift
    }
    /// Block size as a shift.
    pub fn block_shift(&self) -> u32 {
        self.block_shift
    }
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.nblocks() << self.block_shift
    }
    /// Namespace Globally Unique Identifier.
    pub fn nguid(&self) -> [u8; 16] {
        self.nguid
    }
    /// UUID reported in the namespace identification descriptors: the NGUID with
    /// RFC 4122 version 4 and variant bits.
    pub fn uuid(&self) -> [u8; 16] {
        let mut u = self.nguid;
        u[6] = u[6] & 0x0f | 0x40;
        u[8] = u[8] & 0x3f | 0x80;
        u
    }
    /// ANA group.
    pub fn anagrpid(&self) -> u32 {
        self.anagrpid
    }

    fn check(&self, offset: u64, len: usize) -> Result<()> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|e| e > self.size_bytes())
        {
            return Err(Error::InvalidArgument(format!(
                "namespace {}: bytes {offset}+{len} are past its end ({} bytes)",
                self.nsid,
                self.size_bytes()
            )));
        }
        Ok(())
    }

    fn pieces(offset: u64, len: usize, mut f: impl FnMut(u64, usize, usize, usize)) {
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let key = at / PIECE as u64;
            let within = (at % PIECE as u64) as usize;
            let n = (PIECE - within).min(len - done);
            f(key, within, done, n);
            done += n;
        }
    }

    /// Copies `dst.len()` bytes at byte `offset` out of the namespace.
    pub fn read_bytes(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        // Checked under the lock: a resize (which takes it) cannot cut in between.
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        self.check(offset, dst.len())?;
        Self::pieces(offset, dst.len(), |key, within, done, n| {
            let out = &mut dst[done..done + n];
            match data.get(&key) {
                Some(p) => out.copy_from_slice(&p[within..within + n]),
                None => out.fill(0),
            }
        });
        Ok(())
    }

    /// Copies `src` into the namespace at byte `offset`.
    pub fn write_bytes(&self, offset: u64, src: &[u8]) -> Result<()> {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        self.check(offset, src.len())?;
        Self::pieces(offset, src.len(), |key, within, done, n| {
            let p = data
                .entry(key)
                .or_insert_with(|| vec![0u8; PIECE].into_boxed_slice());
            p[within..within + n].copy_from_slice(&src[done..done + n]);
        });
        Ok(())
    }

    /// Zeroes `len` bytes at byte `offset`, releasing whole pieces.
    pub fn zero_bytes(&self, offset: u64, len: u64) -> Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| Error::InvalidArgument(format!("{len} bytes to zero")))?;
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        self.check(offset, len)?;
        Self::pieces(offset, len, |key, within, _, n| {
            if n == PIECE {
                data.remove(&key);
            } else if let Some(p) = data.get_mut(&key) {
                p[within..within + n].fill(0);
            }
        });
        Ok(())
    }

    /// Bytes of storage allocated (written pieces).
    pub fn allocated_bytes(&self) -> usize {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).len() * PIECE
    }
}
