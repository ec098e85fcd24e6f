// SPDX-License-Identifier: Apache-2.0 OR MIT
//! I/O commands of the NVM command set: read, write, write zeroes, dataset
//! management, flush; with the ANA path status a namespace's group gives.

use super::*;

impl Device {
    // ---- I/O commands -------------------------------------------------------------

    pub(in crate::softctrl) fn io(&mut self, sqe: &Sqe) -> Status {
        // Fused operations (CDW0 bits 9:8) are not supported; PSDT (bits 15:14) may
        // be 01b, an SGL in the data pointer, when SGLS says SGLs are supported (10b,
        // an SGL in MPTR too, needs SGLS bit 19, which is never reported).
        let psdt = sqe.cdw0 & crate::sgl::PSDT_MASK;
        let sgl_ok = psdt == crate::sgl::PSDT_SGL && crate::sgl::supported(self.sh.config.sgls);
        if sqe.cdw0 & 0x0300 != 0 || (psdt != 0 && !sgl_ok) {
            return generic(sc::INVALID_FIELD);
        }
        let opc = sqe.opc();
        if !matches!(
            opc,
            io_opc::READ
                | io_opc::WRITE
                | io_opc::FLUSH
                | io_opc::WRITE_ZEROES
                | io_opc::DATASET_MANAGEMENT
        ) {
            return generic(sc::INVALID_OPCODE);
        }
        if let Some(st) = self.sh.faults.state().fail_io.pop_front() {
            return st;
        }
        if opc == io_opc::FLUSH && sqe.nsid == u32::MAX {
            self.flushes_since_write += 1;
            return Status::SUCCESS;
        }
        let Some(ns) = self.ns(sqe.nsid) else {
            return generic(sc::INVALID_NAMESPACE);
        };
        if let Some(st) = self.ana_error(ns.anagrpid()) {
            self.sh.counters.ana_errors.fetch_add(1, Ordering::Relaxed);
            return st;
        }
        let r = match opc {
            io_opc::READ => self.read_write(sqe, &ns, false),
            io_opc::WRITE => self.read_write(sqe, &ns, true),
            io_opc::WRITE_ZEROES => self.write_zeroes(sqe, &ns),
            io_opc::DATASET_MANAGEMENT => self.dsm(sqe, &ns),
            _ => Ok(()),
        };
        match opc {
            io_opc::FLUSH => self.flushes_since_write += 1,
            io_opc::WRITE | io_opc::WRITE_ZEROES | io_opc::DATASET_MANAGEMENT => {
                self.flushes_since_write = 0
            }
            _ => {}
        }
        r.err().unwrap_or(Status::SUCCESS)
    }

    /// The path status for I/O to a namespace in group `grpid`, if it is not
    /// accessible through this controller.
    pub(super) fn ana_error(&self, grpid: u32) -> Option<Status> {
        if !self.sh.config.ana {
            return None;
        }
        let code = match self.sh.faults.ana().groups.get(&grpid)?.state {
            AnaState::Optimized | AnaState::NonOptimized => return None,
            AnaState::Inaccessible => sc::ANA_INACCESSIBLE,
            AnaState::PersistentLoss => sc::ANA_PERSISTENT_LOSS,
            AnaState::Change => sc::ANA_TRANSITION,
        };
        Some(Status::new(sct::PATH, code, false))
    }

    pub(super) fn check_range(ns: &Namespace, slba: u64, nlb: u64) -> Result<(), Status> {
        if slba.checked_add(nlb).is_none_or(|end| end > ns.nblocks()) {
            return Err(generic(sc::LBA_OUT_OF_RANGE));
        }
        Ok(())
    }

    pub(super) fn read_write(
        &mut self,
        sqe: &Sqe,
        ns: &Namespace,
        write: bool,
    ) -> Result<(), Status> {
        let (slba, nlb) = (sqe.slba(), sqe.nlb() as u64);
        Self::check_range(ns, slba, nlb)?;
        let len = (nlb << ns.block_shift()) as usize;
        if self.max_transfer().is_some_and(|max| len > max) {
            return Err(generic(sc::INVALID_FIELD));
        }
        let offset = slba << ns.block_shift();
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.resize(len, 0);
        let internal = |_| generic(sc::INTERNAL_ERROR);
        let r = if write {
            self.copy_from_host(sqe, &mut buf)
                .and_then(|()| ns.write_bytes(offset, &buf).map_err(internal))
        } else {
            ns.read_bytes(offset, &mut buf)
                .map_err(internal)
                .and_then(|()| self.copy_to_host(sqe, &buf))
        };
        // Keep a modest buffer for the next command, not the largest ever seen.
        if buf.capacity() <= 4 << 20 {
            self.scratch = buf;
        }
        if r.is_ok() {
            if write {
                self.smart.writes += 1;
                self.smart.bytes_written += len as u64;
            } else {
                self.smart.reads += 1;
                self.smart.bytes_read += len as u64;
            }
        }
        r
    }

    pub(super) fn write_zeroes(&mut self, sqe: &Sqe, ns: &Namespace) -> Result<(), Status> {
        let (slba, nlb) = (sqe.slba(), sqe.nlb() as u64);
        Self::check_range(ns, slba, nlb)?;
        ns.zero_bytes(slba << ns.block_shift(), nlb << ns.block_shift())
            .map_err(|_| generic(sc::INTERNAL_ERROR))
    }

    /// Dataset Management: with the Deallocate attribute, every range reads zeroes
    /// afterwards; other attributes are hints and do nothing.
    pub(super) fn dsm(&mut self, sqe: &Sqe, ns: &Namespace) -> Result<(), Status> {
        let nr = (sqe.cdw10 & 0xff) as usize + 1;
        let deallocate = sqe.cdw11 >> 2 & 1 == 1;
        let mut ranges = vec![0u8; nr * 16];
        self.copy_from_host(sqe, &mut ranges)?;
        if !deallocate {
            return Ok(());
        }
        let parsed: Vec<(u64, u64)> = ranges
            .chunks_exact(16)
            .map(|r| {
                let nlb = u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as u64;
                let mut s = [0u8; 8];
                s.copy_from_slice(&r[8..16]);
                (u64::from_le_bytes(s), nlb)
            })
            .collect();
        for &(slba, nlb) in &parsed {
            Self::check_range(ns, slba, nlb)?;
        }
        for (slba, nlb) in parsed {
            ns.zero_bytes(slba << ns.block_shift(), nlb << ns.block_shift())
                .map_err(|_| generic(sc::INTERNAL_ERROR))?;
        }
        Ok(())
    }
}
