// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Guest-side probe of the driver's NVMe/TCP pieces against Linux's own target
//! (`qemu/run --nvmet-tcp PORTS`), before the TCP transport exists: the PDU codec
//! (`nvme_driver::tcp::pdu`) and the Fabrics commands (`nvme_driver::spec::fabrics`)
//! talking to nvmet-tcp.
//!
//! ```text
//! nvme-e2e-tcp probe ADDR NQN [--digests]   ICReq/ICResp, Connect (admin queue),
//!     Property Get CAP and VS, Property Set CC.EN = 1 and CSTS.RDY awaited, Identify
//!     Controller and the ANA log page (C2HData)
//! nvme-e2e-tcp rw ADDR NQN [--digests]      the same, then an I/O queue on a second
//!     connection: a write with in-capsule data, a write through R2T and H2CData, both
//!     read back through C2HData and compared
//! ```
//!
//! `--digests` asks for header and data digests. It prints one JSON object on stdout
//! and exits 0, or says what failed on stderr and exits 1. Every wait has a deadline.
//!
//! The sockets are blocking, with read and write timeouts: acceptable in this probe
//! only, which is not the data path. The TCP transport will own non-blocking sockets
//! read in its queue pairs' polls.

use nvme_driver::regs::{self, Cap, Cc, Csts, Vs};
use nvme_driver::sgl::Descriptor;
use nvme_driver::spec::fabrics::{
    self, ConnectData, ConnectResponse, PropertySize, CNTLID_DYNAMIC,
};
use nvme_driver::spec::{
    admin_opc, cns, io_opc, log_id, AnaLog, Cqe, IdentifyController, IdentifyNamespace, Sqe, Status,
};
use nvme_driver::tcp::pdu::{self, C2HData, Codec, Decoded, H2CData, IcReq, Pdu, R2T};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

type R<T> = Result<T, String>;

/// The whole probe's deadline.
const DEADLINE: Duration = Duration::from_secs(60);
/// The most data this host takes in one C2HData PDU.
const RX_DATA_MAX: u32 = 1 << 20;
/// The host NQN and host ID this probe connects with.
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6e766d65-7463-7072-6f62-650000000001";
const HOSTID: [u8; 16] = *b"nvme-tcp-probe-1";

/// What came from the controller, owned (the codec's PDUs borrow the receive buffer).
enum Msg {
    Resp(Cqe),
    Data(C2HData, Vec<u8>),
    R2T(R2T),
    IcResp(pdu::IcResp),
    Term(u16, u32),
}

/// Counts of what a command moved, for the report.
#[derive(Default)]
struct Moved {
    r2ts: u32,
    h2c_pdus: u32,
    c2h_pdus: u32,
}

/// One NVMe/TCP connection (one queue) from the host side.
struct Conn {
    sock: TcpStream,
    codec: Codec,
    /// Received bytes not consumed yet: `buf[..have]`.
    buf: Vec<u8>,
    have: usize,
    next_cid: u16,
    deadline: Instant,
    moved: Moved,
}

impl Conn {
    /// Connects and exchanges ICReq and ICResp.
    fn open(addr: SocketAddr, digests: bool, deadline: Instant) -> R<(Conn, pdu::IcResp)> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| {
            format!("connect to {addr}: {e} (is nvmet-tcp listening? qemu/run --nvmet-tcp)")
        })?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            sock,
            codec: Codec::host(RX_DATA_MAX),
            buf: vec![0; 64 * 1024],
            have: 0,
            next_cid: 1,
            deadline,
            moved: Moved::default(),
        };
        let req = IcReq {
            pfv: pdu::PFV_1_0,
            hpda: 0,
            header_digest: digests,
            data_digest: digests,
            maxr2t: 0,
        };
        conn.send(&Pdu::IcReq(req))?;
        let resp = match conn.recv()? {
            Msg::IcResp(resp) => resp,
            _ => return Err("the controller answered ICReq with another PDU".into()),
        };
        conn.codec
            .accept_icresp(&req, &resp)
            .map_err(|e| e.to_string())?;
        Ok((conn, resp))
    }

    fn send(&mut self, pdu: &Pdu<'_>) -> R<()> {
        let mut out = vec![0u8; self.codec.encoded_len(pdu)];
        self.codec
            .encode(pdu, &mut out)
            .map_err(|e| e.to_string())?;
        self.sock
            .write_all(&out)
            .map_err(|e| format!("send {}: {e}", pdu::pdu_name(pdu.pdu_type())))
    }

    /// The next PDU from the controller, read until whole (or the deadline).
    fn recv(&mut self) -> R<Msg> {
        loop {
            let (msg, len) = match self
                .codec
                .decode(&self.buf[..self.have])
                .map_err(|e| e.to_string())?
            {
                Decoded::Need(n) => {
                    self.read_more(n)?;
                    continue;
                }
                Decoded::DataDigestError {
                    received,
                    computed,
                    pdu,
                    ..
                } => {
                    return Err(format!(
                    "data digest of a {} PDU: received {received:#010x}, computed {computed:#010x}",
                    pdu::pdu_name(pdu.pdu_type())
                ))
                }
                Decoded::Pdu { pdu, len } => (
                    match pdu {
                        Pdu::CapsuleResp(cqe) => Msg::Resp(cqe),
                        Pdu::C2HData(h, data) => Msg::Data(h, data.to_vec()),
                        Pdu::R2T(r2t) => Msg::R2T(r2t),
                        Pdu::IcResp(resp) => Msg::IcResp(resp),
                        Pdu::C2HTermReq(t) => Msg::Term(t.fes, t.fei),
                        other => return Err(format!("unexpected {other:?}")),
                    },
                    len,
                ),
            };
            self.buf.copy_within(len..self.have, 0);
            self.have -= len;
            return Ok(msg);
        }
    }

    /// Receives at least `n` more bytes.
    fn read_more(&mut self, n: usize) -> R<()> {
        if self.buf.len() < self.have + n {
            self.buf.resize(self.have + n, 0);
        }
        let goal = self.have + n;
        while self.have < goal {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no PDU from the controller within {DEADLINE:?}"));
            }
            self.sock
                .set_read_timeout(Some(left.min(Duration::from_secs(1))))
                .map_err(|e| e.to_string())?;
            match self.sock.read(&mut self.buf[self.have..]) {
                Ok(0) => return Err("the controller closed the connection".into()),
                Ok(k) => self.have += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
        Ok(())
    }

    /// Sends `sqe` and serves it to its completion: in-capsule data (`icd`), data
    /// asked for by R2Ts (`write`), data received into `read` (C2HData, in order).
    /// Returns the completion.
    fn command(&mut self, mut sqe: Sqe, icd: &[u8], write: &[u8], read: &mut [u8]) -> R<Cqe> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        sqe.set_cid(cid);
        let sgl = if !icd.is_empty() {
            Descriptor::in_capsule(0, icd.len() as u32)
        } else {
            Descriptor::transport_data_block(write.len().max(read.len()) as u32)
        };
        sgl.put_in(&mut sqe);
        self.send(&Pdu::CapsuleCmd(sqe, icd))?;
        let mut received = 0u32;
        loop {
            match self.recv()? {
                Msg::Resp(cqe) => {
                    if cqe.cid != cid {
                        return Err(format!("completion for CID {}, expected {cid}", cqe.cid));
                    }
                    if cqe.status().is_success() && received as usize != read.len() {
                        return Err(format!("success after {received} of {} bytes", read.len()));
                    }
                    return Ok(cqe);
                }
                Msg::Data(h, data) => {
                    self.moved.c2h_pdus += 1;
                    if h.cccid != cid {
                        return Err(format!("C2HData for CID {}, expected {cid}", h.cccid));
                    }
                    self.codec
                        .check_data_range(
                            pdu::pdu_type::C2H_DATA,
                            h.datao,
                            data.len() as u32,
                            received,
                            read.len() as u32,
                        )
                        .map_err(|e| e.to_string())?;
                    read[h.datao as usize..h.datao as usize + data.len()].copy_from_slice(&data);
                    received += data.len() as u32;
                    if h.success {
                        // SUCCESS: no CapsuleResp follows (NVMe/TCP 1.0, C2HData).
                        if received as usize != read.len() {
                            return Err(format!(
                                "SUCCESS after {received} of {} bytes",
                                read.len()
                            ));
                        }
                        return Ok(Cqe {
                            cid,
                            ..Cqe::default()
                        });
                    }
                }
                Msg::R2T(r2t) => self.answer_r2t(cid, r2t, write)?,
                Msg::IcResp(_) => return Err("ICResp on an initialized connection".into()),
                Msg::Term(fes, fei) => {
                    return Err(format!(
                        "the controller ended the connection: {} (FEI {fei})",
                        pdu::fes_name(fes)
                    ))
                }
            }
        }
    }

    /// Sends the R2T's window of `write` in H2CData PDUs of at most MAXH2CDATA bytes.
    fn answer_r2t(&mut self, cid: u16, r2t: R2T, write: &[u8]) -> R<()> {
        self.moved.r2ts += 1;
        if r2t.cccid != cid {
            return Err(format!("R2T for CID {}, expected {cid}", r2t.cccid));
        }
        let end = r2t.r2to as usize + r2t.r2tl as usize;
        if end > write.len() {
            return Err(format!(
                "R2T for bytes {}..{end} of a {}-byte write",
                r2t.r2to,
                write.len()
            ));
        }
        let mut at = r2t.r2to as usize;
        while at < end {
            let n = (end - at).min(self.codec.maxh2cdata() as usize);
            let h = H2CData {
                cccid: cid,
                ttag: r2t.ttag,
                datao: at as u32,
                last: at + n == end,
            };
            self.send(&Pdu::H2CData(h, &write[at..at + n]))?;
            self.moved.h2c_pdus += 1;
            at += n;
        }
        Ok(())
    }

    /// A command without data, or reading `len` bytes, that must succeed.
    fn admin(&mut self, sqe: Sqe, what: &str, len: usize) -> R<(Cqe, Vec<u8>)> {
        let mut data = vec![0u8; len];
        let cqe = self.command(sqe, &[], &[], &mut data)?;
        check(&cqe, what)?;
        Ok((cqe, data))
    }

    /// Fabrics Connect of queue `qid`; returns the controller ID.
    fn connect(&mut self, qid: u16, cntlid: u16, nqn: &str) -> R<u16> {
        let data = ConnectData {
            hostid: HOSTID,
            cntlid,
            subnqn: nqn.to_string(),
            hostnqn: HOSTNQN.to_string(),
        }
        .to_bytes()
        .map_err(|e| e.to_string())?;
        // KATO 0: no keep alive for a probe that lasts seconds.
        let cqe = self.command(fabrics::connect(qid, 32, 0, 0), &data, &[], &mut [])?;
        if !cqe.status().is_success() {
            return Err(format!(
                "Connect of queue {qid} to {nqn}: {}",
                fabrics::describe_status(cqe.status(), cqe.dw0)
            ));
        }
        Ok(ConnectResponse::from_cqe(&cqe).cntlid)
    }

    fn property_get(&mut self, offset: usize, size: PropertySize) -> R<u64> {
        let (cqe, _) = self.admin(
            fabrics::property_get(offset as u32, size),
            "Property Get",
            0,
        )?;
        Ok(fabrics::property_value(&cqe))
    }
}

fn check(cqe: &Cqe, what: &str) -> R<()> {
    let st: Status = cqe.status();
    if st.is_success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            fabrics::describe_status(st, cqe.dw0)
        ))
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The admin queue's part: returns the JSON fields and what the I/O part needs.
struct Admin {
    conn: Conn,
    cntlid: u16,
    json: Vec<String>,
    ioccsz: u32,
}

fn admin_part(addr: SocketAddr, nqn: &str, digests: bool, deadline: Instant) -> R<Admin> {
    let (mut conn, icresp) = Conn::open(addr, digests, deadline)?;
    let mut json = vec![
        format!("\"digests\":{digests}"),
        format!(
            "\"icresp\":{{\"pfv\":{},\"cpda\":{},\"hdgst\":{},\"ddgst\":{},\"maxh2cdata\":{}}}",
            icresp.pfv, icresp.cpda, icresp.header_digest, icresp.data_digest, icresp.maxh2cdata
        ),
    ];
    let cntlid = conn.connect(0, CNTLID_DYNAMIC, nqn)?;
    json.push(format!("\"cntlid\":{cntlid}"));

    let cap = Cap(conn.property_get(regs::CAP, PropertySize::Eight)?);
    let vs = Vs(conn.property_get(regs::VS, PropertySize::Four)? as u32);
    json.push(format!("\"cap\":\"{:#x}\"", cap.0));
    json.push(format!(
        "\"vs\":{{\"major\":{},\"minor\":{},\"tertiary\":{}}}",
        vs.major(),
        vs.minor(),
        vs.tertiary()
    ));

    // Enable: 4 KiB pages, 64-byte SQEs, 16-byte CQEs, CC.EN = 1; then CSTS.RDY,
    // within CAP.TO (500 ms units) and the probe's own deadline.
    let cc = Cc(0)
        .with_mps_shift(12)
        .with_entry_sizes(6, 4)
        .with_en(true);
    conn.admin(
        fabrics::property_set(regs::CC as u32, PropertySize::Four, cc.0 as u64),
        "Property Set CC",
        0,
    )?;
    let t0 = Instant::now();
    let ready_by = t0 + Duration::from_millis(cap.timeout_ms().max(500));
    loop {
        let csts = Csts(conn.property_get(regs::CSTS, PropertySize::Four)? as u32);
        if csts.cfs() {
            return Err(format!("CSTS.CFS set after CC.EN = 1 (CSTS {:#x})", csts.0));
        }
        if csts.rdy() {
            break;
        }
        if Instant::now() > ready_by.min(deadline) {
            return Err(format!(
                "CSTS.RDY not set {} ms after CC.EN = 1 (CSTS {:#x})",
                t0.elapsed().as_millis(),
                csts.0
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    json.push(format!("\"ready_ms\":{}", t0.elapsed().as_millis()));

    let mut identify = Sqe::new(admin_opc::IDENTIFY);
    identify.cdw10 = cns::CONTROLLER;
    let (_, data) = conn.admin(identify, "Identify Controller", 4096)?;
    let id = IdentifyController::parse(&data).map_err(|e| e.to_string())?;
    // IOCCSZ (bytes 1795:1792): the I/O command capsule's size in 16-byte units.
    let ioccsz = u32::from_le_bytes([data[1792], data[1793], data[1794], data[1795]]);
    json.push(format!(
        "\"identify\":{{\"mn\":{},\"sn\":{},\"fr\":{},\"subnqn\":{},\"cntlid\":{},\"mdts\":{},\"ioccsz\":{},\"anacap\":{},\"nn\":{}}}",
        json_str(&id.mn),
        json_str(&id.sn),
        json_str(&id.fr),
        json_str(&id.subnqn),
        id.cntlid,
        id.mdts,
        ioccsz,
        id.anacap,
        id.nn
    ));

    // The ANA log (Get Log Page 0Ch, 4 KiB: NUMDL = dwords - 1).
    let mut get_log = Sqe::new(admin_opc::GET_LOG_PAGE);
    get_log.nsid = u32::MAX;
    get_log.cdw10 = log_id::ANA as u32 | (4096 / 4 - 1) << 16;
    let (_, data) = conn.admin(get_log, "Get Log Page (ANA)", 4096)?;
    let ana = AnaLog::parse(&data).map_err(|e| e.to_string())?;
    let groups: Vec<String> = ana
        .groups
        .iter()
        .map(|g| {
            format!(
                "{{\"grpid\":{},\"state\":\"{:?}\",\"nsids\":{:?}}}",
                g.grpid, g.state, g.nsids
            )
        })
        .collect();
    json.push(format!("\"ana\":[{}]", groups.join(",")));
    Ok(Admin {
        conn,
        cntlid,
        json,
        ioccsz,
    })
}

/// Bytes `len` of a pattern that differs per `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The I/O queue's part: a write in the capsule, a write through R2T, read back.
fn io_part(
    admin: &mut Admin,
    addr: SocketAddr,
    nqn: &str,
    digests: bool,
    deadline: Instant,
) -> R<String> {
    let mut id_ns = Sqe::new(admin_opc::IDENTIFY);
    id_ns.nsid = 1;
    id_ns.cdw10 = cns::NAMESPACE;
    let (_, data) = admin.conn.admin(id_ns, "Identify Namespace 1", 4096)?;
    let ns = IdentifyNamespace::parse(&data).map_err(|e| e.to_string())?;
    let bs = ns.block_size() as usize;

    let (mut io, _) = Conn::open(addr, digests, deadline)?;
    let cntlid = io.connect(1, admin.cntlid, nqn)?;
    if cntlid != admin.cntlid {
        return Err(format!(
            "I/O queue's Connect returned controller {cntlid}, the admin queue's is {}",
            admin.cntlid
        ));
    }
    // In-capsule: what fits in IOCCSZ * 16 bytes after the 64-byte SQE, at most 4 KiB.
    let icd_max = (admin.ioccsz as usize * 16).saturating_sub(64);
    let icd_len = icd_max.min(4096) / bs * bs;
    let r2t_len = 128 * 1024;
    let rw = |opc, slba: usize, len: usize| Sqe::rw(opc, 1, slba as u64, (len / bs) as u32);

    let mut json = vec![
        format!("\"block_size\":{bs}"),
        format!("\"in_capsule_bytes\":{icd_len}"),
    ];
    let small = pattern(icd_len, 1);
    if icd_len > 0 {
        let cqe = io.command(rw(io_opc::WRITE, 0, icd_len), &small, &[], &mut [])?;
        check(&cqe, "Write (in-capsule data)")?;
    }
    let r2ts_before = io.moved.r2ts;
    let big = pattern(r2t_len, 2);
    let big_lba = 64 * 1024 / bs;
    let cqe = io.command(rw(io_opc::WRITE, big_lba, r2t_len), &[], &big, &mut [])?;
    check(&cqe, "Write (R2T and H2CData)")?;
    json.push(format!("\"r2t_bytes\":{r2t_len}"));
    json.push(format!("\"r2ts\":{}", io.moved.r2ts - r2ts_before));
    json.push(format!("\"h2c_pdus\":{}", io.moved.h2c_pdus));

    let mut back = vec![0u8; icd_len];
    if icd_len > 0 {
        let cqe = io.command(rw(io_opc::READ, 0, icd_len), &[], &[], &mut back)?;
        check(&cqe, "Read of the in-capsule write")?;
    }
    let mut big_back = vec![0u8; r2t_len];
    let cqe = io.command(rw(io_opc::READ, big_lba, r2t_len), &[], &[], &mut big_back)?;
    check(&cqe, "Read of the R2T write")?;
    json.push(format!("\"c2h_pdus\":{}", io.moved.c2h_pdus));
    if back != small {
        return Err("the in-capsule write did not read back".into());
    }
    if big_back != big {
        let at = big_back
            .iter()
            .zip(&big)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "the R2T write did not read back: first difference at byte {at}"
        ));
    }
    json.push("\"verified\":true".into());
    Ok(format!("{{{}}}", json.join(",")))
}

fn run(args: &[String]) -> R<String> {
    let usage = "usage: nvme-e2e-tcp probe|rw ADDR:PORT NQN [--digests]";
    let (scenario, addr, nqn) = match args {
        [s, a, n, ..] => (s.as_str(), a, n),
        _ => return Err(usage.into()),
    };
    let digests = match args.get(3).map(String::as_str) {
        None => false,
        Some("--digests") => true,
        Some(other) => return Err(format!("unknown option {other:?}; {usage}")),
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("ADDR:PORT {addr:?}: {e}"))?;
    let deadline = Instant::now() + DEADLINE;
    let mut admin = admin_part(addr, nqn, digests, deadline)?;
    let mut json = vec![format!("\"scenario\":{}", json_str(scenario))];
    json.append(&mut admin.json);
    match scenario {
        "probe" => {}
        "rw" => json.push(format!(
            "\"io\":{}",
            io_part(&mut admin, addr, nqn, digests, deadline)?
        )),
        _ => return Err(format!("unknown scenario {scenario:?}; {usage}")),
    }
    Ok(format!("{{{}}}", json.join(",")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nvme-e2e-tcp: {e}");
            ExitCode::FAILURE
        }
    }
}
