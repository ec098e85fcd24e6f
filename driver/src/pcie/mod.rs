// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The PCIe transport: queues in host memory, doorbells in BAR0, data described by
//! an SGL Data Block descriptor when the controller takes SGLs, else by PRP entries
//! (NVMe Base Specification 2.0, sections 3.3.1, 4.1.1 and 4.1.2).
//!
//! `ring` is the submission/completion ring protocol; [`PcieQueue`] is the
//! [`Transport`] of the admin queue (queue 0, PRPs only) and of every I/O queue pair:
//! a ring plus descriptor pages (a PRP list, an SGL segment or a Dataset Management
//! range), one per tracker. [`PcieCtrl`] is the controller's
//! [`CtrlTransport`](crate::transport::CtrlTransport): BAR0 as the properties, and the
//! queues made and registered with the device (AQA/ASQ/ACQ, Create/Delete I/O CQ and
//! SQ).
//!
//! Nothing here knows the controller logic (`crate::ctrlr`) or the queue pairs
//! (`crate::qpair`): they reach this module through the two traits only.

mod ctrl;
pub(crate) mod ring;
pub(crate) mod shadow;

use crate::dma::{DmaBuf, DmaPool, DmaSlice};
use crate::error::Result;
use crate::iov;
use crate::prp::{self, PAGE_SIZE};
use crate::sgl;
use crate::spec::Sqe;
use crate::transport::{CqeTail, Transport};
pub use ctrl::PcieCtrl;
pub(crate) use ring::{Ring, RingConfig};

/// A queue pair's PCIe side (admin or I/O): its ring and its descriptor pages.
#[derive(Debug)]
pub struct PcieQueue {
    ring: Ring,
    /// One page per tracker: its PRP list, or its Dataset Management range.
    prp_mem: DmaBuf,
    depth_max: usize,
    /// Data is described with SGLs (the controller supports them for I/O and the
    /// controller options do not force PRPs).
    sgl: bool,
}

impl PcieQueue {
    /// A queue over `cfg`'s memory with the doorbells of queue `cfg.qid` in `bar`
    /// (stride CAP.DSTRD `dstrd`), `cfg.in_flight_max` trackers and a descriptor page
    /// for each of the first `pages` of them; data described with SGLs if `sgl`.
    fn new(
        bar: &crate::mmio::Mmio,
        name: &str,
        dstrd: u32,
        pool: &DmaPool,
        cfg: RingConfig,
        sgl: bool,
        pages: usize,
    ) -> Result<PcieQueue> {
        debug_assert!((1..=cfg.in_flight_max).contains(&pages));
        let depth_max = cfg.in_flight_max;
        let prp_mem = pool.alloc(pages * PAGE_SIZE as usize)?;
        let ring = Ring::new(bar, name, dstrd, cfg)?;
        Ok(PcieQueue {
            ring,
            prp_mem,
            depth_max,
            sgl,
        })
    }

    /// True when this queue describes data with SGLs rather than PRPs.
    pub fn uses_sgl(&self) -> bool {
        self.sgl
    }

    /// The page of the command on tracker `tag`: its address and its IOVA.
    #[inline(always)]
    fn page(&self, tag: u16) -> (*mut u64, u64) {
        debug_assert!((tag as usize) < self.depth_max);
        let off = tag as usize * PAGE_SIZE as usize;
        debug_assert!(
            off < self.prp_mem.len(),
            "tracker {tag} has a descriptor page"
        );
        (
            self.prp_mem.as_ptr().wrapping_add(off).cast::<u64>(),
            self.prp_mem.iova().0 + off as u64,
        )
    }
}

impl Transport for PcieQueue {
    #[inline(always)]
    fn depth_max(&self) -> usize {
        self.depth_max
    }

    #[inline(always)]
    fn describe_data(&mut self, tag: u16, sqe: &mut Sqe, iova: u64, len: u64) {
        if self.sgl {
            // Section 4.1.2: one Data Block descriptor covers a contiguous buffer of
            // any length (a command is at most MDTS, far below 4 GiB); PSDT 01b.
            let d = sgl::Descriptor::data_block(iova, len as u32);
            sqe.cdw0 |= sgl::PSDT_SGL;
            sqe.prp1 = d.address;
            sqe.prp2 = d.word1;
            return;
        }
        // Section 4.1.1: PRP2 is unused, the second page, or a list (this tag's page).
        // SAFETY: the caller checked alignment and length; the list page belongs to
        // this tag, whose command is not in flight, so the device is not reading it.
        match unsafe { prp::prp2(iova, len, || self.page(tag)) } {
            Some(p) => {
                sqe.prp1 = iova;
                sqe.prp2 = p;
            }
            // Unreachable: requests are split at MDTS and MAX_PRP_PAGES. A zero PRP1
            // makes the device fail the command rather than touch memory.
            None => {
                debug_assert!(false, "a command's data fits one PRP list page");
                sqe.prp1 = 0;
            }
        }
    }

    fn vector_limits(&self) -> iov::Limits {
        iov::Limits {
            max_pieces: if self.sgl {
                sgl::SEGMENT_DESCRIPTORS
            } else {
                usize::MAX
            },
            page_joins: !self.sgl,
        }
    }

    fn describe_vectored(
        &mut self,
        tag: u16,
        sqe: &mut Sqe,
        slices: &[DmaSlice],
        offset: u64,
        len: u64,
    ) {
        let (page, page_iova) = self.page(tag);
        if self.sgl {
            // Section 4.1.2: one Data Block per piece, behind a Last Segment in the
            // command when there are several.
            // SAFETY: the page is this tag's, whose command is not in flight; the
            // queue pair split the request at `vector_limits().max_pieces`.
            let d = unsafe { iov::describe_sgl(slices, offset, len, page, page_iova) };
            sqe.cdw0 |= sgl::PSDT_SGL;
            sqe.prp1 = d.address;
            sqe.prp2 = d.word1;
            return;
        }
        // Section 4.1.1: the slices join on page boundaries (checked at submission).
        // SAFETY: as above; the request was split at MDTS, so one list page is enough.
        match unsafe { iov::describe_prp(slices, offset, len, page, page_iova) } {
            Some((p1, p2)) => {
                sqe.prp1 = p1;
                sqe.prp2 = p2;
            }
            None => {
                debug_assert!(false, "a command's data fits one PRP list page");
                sqe.prp1 = 0;
            }
        }
    }

    fn describe_dsm_range(&mut self, tag: u16, sqe: &mut Sqe, slba: u64, nlb: u32) {
        let (list, list_iova) = self.page(tag);
        // One range (NVM Command Set, Dataset Management): context attributes, length
        // in blocks, starting LBA.
        // SAFETY: the page is this tag's, whose command is not in flight; 16 bytes fit.
        unsafe {
            list.cast::<u32>().write_volatile(0);
            list.cast::<u32>().add(1).write_volatile(nlb);
            list.add(1).write_volatile(slba);
        }
        sqe.prp1 = list_iova;
    }

    #[inline(always)]
    fn post(&mut self, sqe: &Sqe) {
        self.ring.push(sqe);
    }

    #[inline(always)]
    fn has_unannounced(&self) -> bool {
        self.ring.sq_dirty()
    }

    #[inline(always)]
    fn ring_doorbell(&mut self) -> bool {
        self.ring.ring_sq_doorbell()
    }

    fn discard_unannounced(&mut self) {
        self.ring.discard_unannounced();
    }

    #[inline(always)]
    fn peek_completion(&self) -> Option<CqeTail> {
        self.ring.peek_tail()
    }

    fn completion_dw0(&self) -> u32 {
        self.ring.peek_dw0()
    }

    #[inline(always)]
    fn pop_completion(&mut self) {
        self.ring.pop();
    }

    #[inline(always)]
    fn release_completions(&mut self, popped: usize) -> bool {
        self.ring.release_cq(popped)
    }

    fn position(&self) -> u32 {
        self.ring.cq_position()
    }

    fn rewind(&mut self) {
        self.ring.rewind();
    }
}
