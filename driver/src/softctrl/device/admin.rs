// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Admin commands (NVMe Base Specification 2.0, section 5): identify, log pages,
//! features, abort, asynchronous events. Queue creation and deletion are in
//! `queues`.

use super::*;

impl Device {
    // ---- Admin commands -----------------------------------------------------------

    pub(super) fn admin(&mut self, sqe: &Sqe, base: Completion) -> Outcome {
        // Fused operations (CDW0 bits 9:8) are not supported; admin commands use
        // PRPs on PCIe (PSDT, bits 15:14, is 00b: section 4.2).
        if sqe.cdw0 & 0xc300 != 0 {
            return Outcome::Done(0, generic(sc::INVALID_FIELD));
        }
        let r = match sqe.opc() {
            admin_opc::IDENTIFY => self.identify(sqe),
            admin_opc::GET_LOG_PAGE => self.get_log_page(sqe),
            admin_opc::CREATE_IO_CQ => self.create_cq(sqe),
            admin_opc::CREATE_IO_SQ => self.create_sq(sqe),
            admin_opc::DELETE_IO_SQ => self.delete_sq(sqe),
            admin_opc::DELETE_IO_CQ => self.delete_cq(sqe),
            admin_opc::GET_FEATURES => self.get_features(sqe),
            admin_opc::SET_FEATURES => self.set_features(sqe),
            admin_opc::ABORT => Ok(self.abort(sqe)),
            admin_opc::ASYNC_EVENT_REQUEST => {
                if self.aers.len() > AERL as usize {
                    Err(specific(csc::AER_LIMIT))
                } else {
                    self.aers.push(base.cid);
                    return Outcome::Parked;
                }
            }
            _ => Err(generic(sc::INVALID_OPCODE)),
        };
        match r {
            Ok(dw0) => Outcome::Done(dw0, Status::SUCCESS),
            Err(st) => Outcome::Done(0, st),
        }
    }

    pub(super) fn ns(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.sh
            .config
            .namespaces
            .iter()
            .find(|n| n.nsid() == nsid)
            .cloned()
    }

    /// Number of Namespaces: the largest NSID.
    pub(super) fn nn(&self) -> u32 {
        self.sh
            .config
            .namespaces
            .iter()
            .map(|n| n.nsid())
            .max()
            .unwrap_or(0)
    }

    pub(super) fn identify(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let invalid_ns = generic(sc::INVALID_NAMESPACE);
        let data = match sqe.cdw10 & 0xff {
            cns::NAMESPACE => match self.ns(sqe.nsid) {
                Some(ns) => self.identify_ns(Some(&ns)),
                None if sqe.nsid == u32::MAX => self.identify_ns(None),
                None if sqe.nsid != 0 && sqe.nsid <= self.nn() => vec![0; IDENTIFY_SIZE],
                None => return Err(invalid_ns),
            },
            cns::CONTROLLER => self.identify_ctrl(),
            cns::ACTIVE_NS_LIST => {
                if sqe.nsid >= 0xffff_fffe {
                    return Err(invalid_ns);
                }
                let mut ids: Vec<u32> = self
                    .sh
                    .config
                    .namespaces
                    .iter()
                    .map(|n| n.nsid())
                    .filter(|&id| id > sqe.nsid)
                    .collect();
                ids.sort_unstable();
                let mut d = vec![0u8; IDENTIFY_SIZE];
                for (i, id) in ids.iter().take(IDENTIFY_SIZE / 4).enumerate() {
                    put32(&mut d, 4 * i, *id);
                }
                d
            }
            cns::NS_ID_DESCRIPTORS => {
                let ns = self.ns(sqe.nsid).ok_or(invalid_ns)?;
                let mut d = vec![0u8; IDENTIFY_SIZE];
                d[0] = 2; // NGUID
                d[1] = 16;
                d[4..20].copy_from_slice(&ns.nguid());
                d[20] = 3; // UUID
                d[21] = 16;
                d[24..40].copy_from_slice(&ns.uuid());
                d
            }
            _ => return Err(generic(sc::INVALID_FIELD)),
        };
        self.copy_to_host(sqe, &data)?;
        Ok(0)
    }

    pub(super) fn multi_controller(&self) -> bool {
        self.sh.config.ana || self.sh.config.multi_controller
    }

    /// Identify Controller (section 5.17.2.1, figure 275).
    pub(super) fn identify_ctrl(&self) -> Vec<u8> {
        let c = &self.sh.config;
        let mut d = vec![0u8; IDENTIFY_SIZE];
        put16(&mut d, 0, 0x1b36); // VID
        put16(&mut d, 2, 0x1af4); // SSVID
        put_ascii(&mut d[4..24], &c.serial);
        put_ascii(&mut d[24..64], &c.model);
        put_ascii(&mut d[64..72], &c.firmware);
        d[72] = 6; // RAB
        d[73..76].copy_from_slice(&[0x00, 0x54, 0x52]); // IEEE OUI
        let mut cmic = 0u8;
        if self.multi_controller() {
            cmic |= 1 << 1; // may be one of several controllers of the subsystem
        }
        if c.ana {
            cmic |= 1 << 3; // ANA reporting
        }
        d[76] = cmic;
        d[77] = c.mdts;
        put16(&mut d, 78, c.cntlid);
        put32(&mut d, 80, 0x0001_0400); // VER
        put32(&mut d, 88, c.rtd3e_us); // RTD3E, microseconds
                                       // OAES: Namespace Attribute Notices (bit 8), ANA change notices (bit 11).
        put32(&mut d, 92, 1 << 8 | if c.ana { 1 << 11 } else { 0 });
        d[111] = 1; // CNTRLTYPE: I/O controller
        d[258] = ACL;
        d[259] = AERL;
        d[261] = 1 << 2; // LPA: extended data for Get Log Page (NUMDU, LPOL/LPOU)
        d[262] = ELPE;
        put16(&mut d, 266, 343); // WCTEMP
        put16(&mut d, 268, 373); // CCTEMP
        if c.ana {
            let max_grp = c.namespaces.iter().map(|n| n.anagrpid()).max().unwrap_or(1);
            d[342] = c.anatt_s; // ANATT, seconds
                                // ANACAP: all five states reported, group IDs do not change while
                                // attached, non-zero group IDs supported.
            d[343] = 0x1f | 1 << 6 | 1 << 7;
            put32(&mut d, 344, max_grp); // ANAGRPMAX
            put32(&mut d, 348, max_grp); // NANAGRPID
        }
        d[512] = 0x66; // SQES
        d[513] = 0x44; // CQES
        put32(&mut d, 516, self.nn()); // NN
        put16(&mut d, 520, 1 << 2 | 1 << 3); // ONCS: DSM, Write Zeroes
        d[525] = c.vwc as u8; // VWC: bit 0, a volatile write cache
        put32(&mut d, 536, c.sgls); // SGLS
        let nqn = c.subnqn.as_bytes();
        let n = nqn.len().min(255);
        d[768..768 + n].copy_from_slice(&nqn[..n]);
        d
    }

    /// Identify Namespace (NVM Command Set Specification, figure 97). `None` is the
    /// capabilities common to all namespaces (NSID FFFFFFFFh).
    pub(super) fn identify_ns(&self, ns: Option<&Namespace>) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_SIZE];
        d[25] = 1; // NLBAF: two formats, zero based
        d[33] = 1 << 3 | 1; // DLFEAT: deallocated blocks read zeroes; Write Zeroes may deallocate
        put16(&mut d, 128, 0);
        d[128 + 2] = 9; // LBAF0: 512-byte blocks
        d[132 + 2] = 12; // LBAF1: 4096-byte blocks
        if let Some(ns) = ns {
            put64(&mut d, 0, ns.nblocks()); // NSZE
            put64(&mut d, 8, ns.nblocks()); // NCAP
            put64(&mut d, 16, ns.nblocks()); // NUSE
            d[26] = (ns.block_shift() == 12) as u8; // FLBAS
            d[30] = self.multi_controller() as u8; // NMIC: may be shared
            if self.sh.config.ana {
                put32(&mut d, 92, ns.anagrpid());
            }
            d[104..120].copy_from_slice(&ns.nguid());
        }
        d
    }

    pub(super) fn get_log_page(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let invalid = generic(sc::INVALID_FIELD);
        let lid = sqe.cdw10 as u8;
        let lsp = (sqe.cdw10 >> 8) & 0x7f;
        let rae = sqe.cdw10 >> 15 & 1 == 1;
        let numd = ((sqe.cdw11 & 0xffff) as u64) << 16 | (sqe.cdw10 >> 16) as u64;
        let len = (numd + 1) * 4;
        let offset = (sqe.cdw13 as u64) << 32 | sqe.cdw12 as u64;
        let max = self.max_transfer().unwrap_or(LOG_MAX_BYTES);
        if !offset.is_multiple_of(4) || len > max as u64 {
            return Err(invalid);
        }
        let image = match lid {
            log_id::ERROR => self.error_log(),
            log_id::SMART => self.smart_log(),
            log_id::ANA if self.sh.config.ana => self.ana_log(lsp & 1 == 1),
            log_id::CHANGED_NS_LIST => self.changed_ns_log(),
            _ => return Err(specific(csc::INVALID_LOG_PAGE)),
        };
        if offset > image.len() as u64 {
            return Err(invalid);
        }
        // Only what was asked for goes to the host: the page from the offset, then
        // zeroes if the host asked for more than the page holds.
        let mut out = vec![0u8; len as usize];
        let from = &image[offset as usize..];
        let n = from.len().min(out.len());
        out[..n].copy_from_slice(&from[..n]);
        self.copy_to_host(sqe, &out)?;
        if lid == log_id::ANA && !rae {
            self.sh.faults.ana().notice_masked = false;
        }
        if lid == log_id::CHANGED_NS_LIST && !rae {
            self.changed_ns_log_read();
        }
        Ok(0)
    }

    /// Error Information log (section 5.16.1.2): newest entry first.
    pub(super) fn error_log(&self) -> Vec<u8> {
        let mut d = vec![0u8; (ELPE as usize + 1) * ERROR_LOG_ENTRY_SIZE];
        for (i, e) in self.errors.iter().enumerate() {
            let o = i * ERROR_LOG_ENTRY_SIZE;
            put64(&mut d, o, e.count);
            put16(&mut d, o + 8, e.sqid);
            put16(&mut d, o + 10, e.cid);
            put16(&mut d, o + 12, e.status.0 << 1);
            put16(&mut d, o + 14, 0xffff); // parameter error location: not reported
            put64(&mut d, o + 16, e.lba);
            put32(&mut d, o + 24, e.nsid);
        }
        d
    }

    /// SMART / Health Information log (section 5.16.1.3).
    pub(super) fn smart_log(&self) -> Vec<u8> {
        let mut d = vec![0u8; SMART_LOG_SIZE];
        put16(&mut d, 1, 311); // composite temperature, kelvin
        d[3] = 100; // available spare
        d[4] = 10; // available spare threshold
        let units = |bytes: u64| (bytes / 512).div_ceil(1000) as u128;
        put128(&mut d, 32, units(self.smart.bytes_read));
        put128(&mut d, 48, units(self.smart.bytes_written));
        put128(&mut d, 64, self.smart.reads as u128);
        put128(&mut d, 80, self.smart.writes as u128);
        put128(&mut d, 112, 1); // power cycles
        put128(
            &mut d,
            128,
            (self.started.elapsed().as_secs() / 3600) as u128,
        );
        put128(&mut d, 176, self.error_count as u128);
        d
    }

    /// Asymmetric Namespace Access log (section 5.16.1.13). With `rgo` (Return
    /// Groups Only) the descriptors list no namespaces.
    pub(super) fn ana_log(&self, rgo: bool) -> Vec<u8> {
        let ana = self.sh.faults.ana();
        let table: &AnaTable = &ana;
        let mut d = vec![0u8; 16];
        put64(&mut d, 0, table.change_count);
        put16(&mut d, 8, table.groups.len() as u16);
        for (&grpid, g) in &table.groups {
            let mut nsids: Vec<u32> = if rgo {
                Vec::new()
            } else {
                self.sh
                    .config
                    .namespaces
                    .iter()
                    .filter(|n| n.anagrpid() == grpid)
                    .map(|n| n.nsid())
                    .collect()
            };
            nsids.sort_unstable();
            let o = d.len();
            d.resize(o + 32 + 4 * nsids.len(), 0);
            put32(&mut d, o, grpid);
            put32(&mut d, o + 4, nsids.len() as u32);
            put64(&mut d, o + 8, g.change_count);
            d[o + 16] = g.state.to_u8();
            for (i, id) in nsids.iter().enumerate() {
                put32(&mut d, o + 32 + 4 * i, *id);
            }
        }
        d
    }

    pub(super) fn get_features(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let fid = sqe.cdw10 as u8;
        let sel = (sqe.cdw10 >> 8) & 7;
        let v = if sel == 1 {
            self.default_features().get(&fid).copied()
        } else {
            self.features.get(&fid).copied()
        };
        Ok(v.unwrap_or(0))
    }

    pub(super) fn set_features(&mut self, sqe: &Sqe) -> Result<u32, Status> {
        let fid = sqe.cdw10 as u8;
        if fid == feature_id::NUMBER_OF_QUEUES {
            let (nsqr, ncqr) = (sqe.cdw11 & 0xffff, sqe.cdw11 >> 16);
            if nsqr == 0xffff || ncqr == 0xffff {
                return Err(generic(sc::INVALID_FIELD));
            }
            let max = self.sh.config.max_io_queues as u32 - 1;
            let v = ncqr.min(max) << 16 | nsqr.min(max);
            self.features.insert(fid, v);
            return Ok(v);
        }
        self.features.insert(fid, sqe.cdw11);
        Ok(0)
    }

    /// Abort (section 5.1): only commands the device holds can be aborted; DW0 bit 0
    /// is 0 when the command was aborted, 1 when it was not.
    pub(super) fn abort(&mut self, sqe: &Sqe) -> u32 {
        let sqid = sqe.cdw10 as u16;
        let cid = (sqe.cdw10 >> 16) as u16;
        let mut aborted = Completion {
            sqid,
            cqid: 0,
            cid,
            dw0: 0,
            status: Status::ABORT_REQUESTED,
            copy: false,
        };
        if let Some(i) = self
            .held
            .iter()
            .position(|c| c.sqid == sqid && c.cid == cid)
        {
            aborted.cqid = self.held.remove(i).cqid;
            self.sync_held();
        } else if let Some(i) = self.aers.iter().position(|&c| sqid == 0 && c == cid) {
            self.aers.remove(i);
        } else {
            return 1;
        }
        self.batch.push(aborted);
        0
    }
}
