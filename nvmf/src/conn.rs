// SPDX-License-Identifier: Apache-2.0 OR MIT
//! One NVMe/TCP connection: one queue (the admin queue or an I/O queue) of a
//! controller, owned and polled by one reactor.
//!
//! A poll reads what the socket has (non-blocking), decodes whole PDUs with the
//! driver's codec (every field checked as it arrives), runs the commands, polls the
//! bdev channels for completions and writes what is ready back. Each command takes a
//! slot: its share of the connection's DMA buffer (the largest transfer), made when
//! the connection was accepted, so a command allocates nothing. Reads go to the bdev
//! into the slot's buffer and come back as C2HData; writes arrive in the capsule or,
//! after an R2T, in H2CData PDUs, into the slot's buffer, then go to the bdev. A
//! channel that is busy keeps the command on the connection's pending queue (in
//! order); a path outage is the multipath channel's to wait out. A PDU that breaks
//! the protocol ends this connection with a C2HTermReq and a log line.

use crate::admin::{self, status, CcChange, Props, PAGE};
use crate::limits::*;
use crate::subsystem::{invalid_cmd_field, invalid_data_field, CtrlShared, Subsystem};
use nvme_bdev::{BdevIo, Channel, Error as BdevError, IoBuf};
use nvme_driver::sgl::{kind, subtype, Descriptor};
use nvme_driver::spec::fabrics::{
    self, fctype, ConnectCommand, ConnectData, ConnectResponse, CNTLID_DYNAMIC, CONNECT_DATA_SIZE,
};
use nvme_driver::spec::{admin_opc, cns, feature_id, io_opc, Cqe, Sqe, Status};
use nvme_driver::tcp::pdu::{
    fes, pdu_type, C2HData, Codec, Decoded, IcResp, Pdu, PduError, TermReq, CH_SIZE, DATA_HLEN,
    DIGEST_SIZE, PFV_1_0, R2T, TERM_REQ_DATA_MAX,
};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keep Alive opcode (section 5.25).
const KEEP_ALIVE: u8 = 0x18;
/// Keep Alive Timer feature.
const FEATURE_KATO: u8 = 0x0f;
/// Identify CNS 06h: I/O command set specific Identify Controller (all zero here:
/// no limits beyond MDTS).
const CNS_CS_CTRL: u32 = 0x06;
/// The ctx of a flush the admin queue sends for a shutdown notification.
const SHUTDOWN_CTX: u64 = u64::MAX;

/// A read-only stand-in for a PDU's data when only its length matters
/// (`Codec::encode_head` lays out the header from the length; the data is copied
/// from the slot's DMA buffer after it).
static LENGTH_ONLY: [u8; MAX_TRANSFER] = [0; MAX_TRANSFER];

/// Where a command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Free,
    /// Waiting for its data in H2CData PDUs (after an R2T).
    AwaitData,
    /// Its bdev I/Os are being submitted or are in flight.
    Bdev,
    /// Held until an event (an Async Event Request).
    Held,
    /// Its C2HData, then its response, are queued.
    Reply,
}

/// One command in the target.
#[derive(Clone, Copy, Debug)]
struct Slot {
    step: Step,
    sqe: Sqe,
    /// Bytes the command moves (its SGL's length).
    len: u32,
    /// Bytes of host data received so far.
    got: u32,
    /// A data digest failed: the command fails with Transient Transport Error.
    bad_digest: bool,
    /// Bytes of C2HData to send before the response.
    reply_len: u32,
    /// Sub-I/Os (ranges, namespaces) in all, submitted, and in flight.
    total: u32,
    next: u32,
    inflight: u32,
    status: Status,
    dw0: u32,
    dw1: u32,
}

impl Slot {
    const FREE: Slot = Slot {
        step: Step::Free,
        sqe: Sqe::new(0),
        len: 0,
        got: 0,
        bad_digest: false,
        reply_len: 0,
        total: 0,
        next: 0,
        inflight: 0,
        status: Status::SUCCESS,
        dw0: 0,
        dw1: 0,
    };
}

/// What goes out next, in order.
#[derive(Clone, Copy, Debug)]
enum Out {
    /// C2HData of the slot's reply (then its response, unless SUCCESS was set).
    Data(u16),
    /// The slot's response capsule (frees the slot).
    Resp(u16),
    /// An R2T for the slot's data.
    R2t(u16),
}

/// The admin queue's part of a controller.
#[derive(Debug)]
struct AdminState {
    props: Props,
    kato: Option<Duration>,
    last_keep_alive: Instant,
    aec: u32,
    held_aers: usize,
    shutdown_flushes: u32,
}

/// The queue this connection is, once connected.
#[derive(Debug)]
struct Queue {
    qid: u16,
    entries: u16,
    sq_flow_off: bool,
    sub: usize,
    ctrl: Arc<CtrlShared>,
}

/// One connection (module comment).
pub struct Conn {
    /// A number for log lines.
    pub id: u64,
    peer: SocketAddr,
    sock: TcpStream,
    codec: Codec,
    /// The subsystems served on the listener it came from, each with a channel per
    /// namespace (made when the connection was accepted, off the reactors).
    subs: Vec<(Arc<Subsystem>, Vec<Channel>)>,
    queue: Option<Queue>,
    admin: Option<AdminState>,
    sqhd: u16,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    tx: Vec<u8>,
    tx_len: usize,
    tx_sent: usize,
    out: VecDeque<Out>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    pending: VecDeque<u16>,
    /// Block layer I/Os in flight on this connection's channels.
    bdev_inflight: usize,
    buf: IoBuf,
    /// Scratch for admin data (Identify, log pages, Connect data).
    page: Box<[u8; PAGE]>,
    closed: Option<String>,
    stopping: bool,
    /// Commands completed (for the drain line).
    pub commands: u64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish()
    }
}

/// The bytes one received PDU may take: a header with its digest and padding, the
/// most data, its digest.
const RX_SIZE: usize = 256 + MAX_TRANSFER + DIGEST_SIZE;
/// Room for the largest PDU sent plus responses behind it.
const TX_SIZE: usize = 2 * (256 + MAX_TRANSFER);

impl Conn {
    /// A connection just accepted, with its buffers and channels.
    pub fn new(
        id: u64,
        sock: TcpStream,
        peer: SocketAddr,
        subs: Vec<(Arc<Subsystem>, Vec<Channel>)>,
        buf: IoBuf,
    ) -> Conn {
        debug_assert!(buf.len() >= QUEUE_ENTRIES * MAX_TRANSFER);
        Conn {
            id,
            peer,
            sock,
            codec: Codec::controller(MAXH2CDATA.max(IN_CAPSULE_MAX as u32)),
            subs,
            queue: None,
            admin: None,
            sqhd: 0,
            rx: vec![0; RX_SIZE],
            rx_start: 0,
            rx_end: 0,
            tx: vec![0; TX_SIZE],
            tx_len: 0,
            tx_sent: 0,
            out: VecDeque::with_capacity(QUEUE_ENTRIES * 3),
            slots: vec![Slot::FREE; QUEUE_ENTRIES],
            free: (0..QUEUE_ENTRIES as u16).rev().collect(),
            pending: VecDeque::with_capacity(QUEUE_ENTRIES),
            bdev_inflight: 0,
            buf,
            page: Box::new([0; PAGE]),
            closed: None,
            stopping: false,
            commands: 0,
        }
    }

    /// The reason it closed, once it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// What this connection is, for log lines.
    pub fn describe(&self) -> String {
        match &self.queue {
            Some(q) => format!(
                "connection {} ({}, controller {} queue {})",
                self.id, self.peer, q.ctrl.cntlid, q.qid
            ),
            None => format!("connection {} ({})", self.id, self.peer),
        }
    }

    fn close(&mut self, why: String) {
        if self.closed.is_some() {
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Both);
        if let Some(q) = &self.queue {
            if q.qid == 0 {
                // The admin queue's end is its controller's end.
                q.ctrl.dead.store(true, Ordering::Release);
            }
        }
        self.closed = Some(why);
    }

    /// One poll: receive, run, complete, send. Returns the work done.
    pub fn poll(&mut self) -> usize {
        if self.closed.is_some() {
            return 0;
        }
        let mut work = 0;
        if !self.stopping {
            work += self.receive();
        }
        work += self.poll_channels();
        work += self.run_pending();
        self.fill_tx();
        work += self.send();
        self.check_liveness();
        work
    }

    /// Called while the target stops: take no new commands, finish those in flight
    /// in the block layer, send what is queued. True once nothing is left.
    pub fn stop(&mut self) -> bool {
        if !self.stopping {
            self.stopping = true;
            // Commands waiting for room will not get it in time: fail them.
            while let Some(i) = self.pending.pop_front() {
                let s = &mut self.slots[i as usize];
                s.total = s.next;
                if s.inflight == 0 {
                    self.finish(i, status::ABORTED);
                }
            }
        }
        self.poll();
        let in_bdev = self
            .subs
            .iter()
            .any(|(_, chans)| chans.iter().any(|c| c.outstanding() > 0));
        let done = self.closed.is_some() || (!in_bdev && self.out.is_empty() && self.tx_len == 0);
        if done {
            self.close("the target stopped".into());
        }
        done
    }

    fn check_liveness(&mut self) {
        let Some(q) = &self.queue else { return };
        if q.qid != 0 {
            if q.ctrl.dead.load(Ordering::Acquire) {
                let id = q.ctrl.cntlid;
                self.close(format!("controller {id} ended (its admin queue closed)"));
            }
            return;
        }
        if let Some(a) = &self.admin {
            if let Some(kato) = a.kato {
                // Keep Alive Timeout (section 3.9): no Keep Alive within KATO ends the
                // association. Half a KATO of slack: a host sends one every KATO/2,
                // and a loaded machine (a TCG guest) can delay one that much.
                if a.last_keep_alive.elapsed() > kato + kato / 2 {
                    let ms = kato.as_millis();
                    self.close(format!(
                        "keep alive timeout: no Keep Alive within KATO {ms} ms"
                    ));
                }
            }
        }
    }

    // ---------------------------------------------------------------- receiving

    fn receive(&mut self) -> usize {
        if self.rx_end == self.rx.len() && self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.rx_end < self.rx.len() {
            match self.sock.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => {
                    self.close("the host closed the connection".into());
                    return 0;
                }
                Ok(n) => self.rx_end += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(format!("socket read: {e}"));
                    return 0;
                }
            }
        }
        let mut done = 0;
        // The receive buffer moves out while its PDUs are handled (they borrow it).
        let rx = std::mem::take(&mut self.rx);
        while done < PDUS_PER_POLL && self.closed.is_none() {
            let bytes = &rx[self.rx_start..self.rx_end];
            match self.codec.decode(bytes) {
                Ok(Decoded::Need(_)) => break,
                Ok(Decoded::Pdu { pdu, len }) => {
                    self.rx_start += len;
                    self.on_pdu(pdu, false, &rx[self.rx_start - len..self.rx_start]);
                }
                Ok(Decoded::DataDigestError { pdu, len, .. }) => {
                    self.rx_start += len;
                    self.on_pdu(pdu, true, &rx[self.rx_start - len..self.rx_start]);
                }
                Err(e) => {
                    let head = &bytes[..bytes.len().min(TERM_REQ_DATA_MAX)];
                    self.fatal(e, head);
                }
            }
            done += 1;
        }
        self.rx = rx;
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        }
        done
    }

    /// Ends the connection for a protocol error: a C2HTermReq naming the field (NVMe/TCP
    /// 1.0, section 3.6.2.5), then the socket closes.
    fn fatal(&mut self, e: PduError, head: &[u8]) {
        let term = Pdu::C2HTermReq(TermReq {
            fes: e.fes,
            fei: e.fei,
            error_data: head,
        });
        let mut b = [0u8; CH_SIZE + 16 + TERM_REQ_DATA_MAX];
        if let Ok(n) = self.codec.encode(&term, &mut b) {
            // Best effort, after what was already queued.
            let _ = self.sock.set_nonblocking(false);
            let _ = self
                .sock
                .set_write_timeout(Some(Duration::from_millis(100)));
            let _ = self.sock.write_all(&self.tx[self.tx_sent..self.tx_len]);
            let _ = self.sock.write_all(&b[..n]);
        }
        let what = self.describe();
        eprintln!("nvme-target: {what}: {e}; sent C2HTermReq and closed the connection");
        self.close(format!("protocol error: {e}"));
    }

    fn protocol(&mut self, pdu: u8, field: &'static str, value: u64, why: &'static str) {
        self.fatal(
            PduError {
                pdu_type: pdu,
                receiver: self.codec.role(),
                field,
                value,
                rule: nvme_driver::tcp::pdu::Rule::Says(why),
                fes: fes::INVALID_HEADER_FIELD,
                fei: 0,
            },
            &[],
        );
    }

    fn on_pdu(&mut self, pdu: Pdu<'_>, bad_digest: bool, _raw: &[u8]) {
        match pdu {
            Pdu::IcReq(req) => {
                let offer = IcResp {
                    pfv: PFV_1_0,
                    cpda: 0,
                    header_digest: true,
                    data_digest: true,
                    maxh2cdata: MAXH2CDATA,
                };
                match self.codec.accept_icreq(&req, &offer) {
                    Ok(resp) => {
                        let n = self
                            .codec
                            .encode(&Pdu::IcResp(resp), &mut self.tx[self.tx_len..])
                            .expect("an empty transmit buffer holds an ICResp");
                        self.tx_len += n;
                    }
                    Err(e) => self.fatal(e, &[]),
                }
            }
            Pdu::H2CTermReq(t) => {
                let why = format!(
                    "the host ended it (H2CTermReq: {}, FEI {})",
                    nvme_driver::tcp::pdu::fes_name(t.fes),
                    t.fei
                );
                eprintln!("nvme-target: {}: {why}", self.describe());
                self.close(why);
            }
            Pdu::CapsuleCmd(sqe, data) => self.on_command(sqe, data, bad_digest),
            Pdu::H2CData(h, data) => {
                let i = h.ttag as usize;
                let ok = self
                    .slots
                    .get(i)
                    .is_some_and(|s| s.step == Step::AwaitData && s.sqe.cid() == h.cccid);
                if !ok {
                    return self.protocol(
                        pdu_type::H2C_DATA,
                        "TTAG",
                        h.ttag as u64,
                        "no R2T of this command is outstanding with this tag",
                    );
                }
                let s = self.slots[i];
                if let Err(e) = self.codec.check_data_range(
                    pdu_type::H2C_DATA,
                    h.datao,
                    data.len() as u32,
                    s.got,
                    s.len,
                ) {
                    return self.fatal(e, &[]);
                }
                let _ = self.buf.write_at(i * MAX_TRANSFER + h.datao as usize, data);
                let s = &mut self.slots[i];
                s.got += data.len() as u32;
                s.bad_digest |= bad_digest;
                if s.got == s.len {
                    self.data_ready(i as u16);
                }
            }
            // The codec lets only host-to-controller PDUs through to a controller.
            _ => self.protocol(
                pdu.pdu_type(),
                "PDU-TYPE",
                pdu.pdu_type() as u64,
                "unexpected",
            ),
        }
    }

    // ----------------------------------------------------------------- commands

    fn on_command(&mut self, sqe: Sqe, data: &[u8], bad_digest: bool) {
        let Some(i) = self.free.pop() else {
            return self.protocol(
                pdu_type::CAPSULE_CMD,
                "CID",
                sqe.cid() as u64,
                "more commands outstanding than the queue has entries",
            );
        };
        let entries = self
            .queue
            .as_ref()
            .map_or(QUEUE_ENTRIES as u16, |q| q.entries);
        self.sqhd = (self.sqhd + 1) % entries.max(1);
        self.slots[i as usize] = Slot {
            step: Step::Bdev,
            sqe,
            ..Slot::FREE
        };
        // The data: in the capsule (SGL Data Block, subtype Offset) or, for a
        // transfer apart from it, a Transport SGL Data Block (NVMe/TCP 1.0,
        // section 3.3.2).
        let to_host = match fabrics::fabrics_type(&sqe) {
            Some(t) => t & 3 == 2,
            None => sqe.opc() & 3 == 2,
        };
        let from_host = match fabrics::fabrics_type(&sqe) {
            Some(t) => t & 3 == 1,
            None => sqe.opc() & 3 == 1,
        };
        let d = Descriptor::from_sqe(&sqe);
        let in_capsule = d.kind() == kind::DATA_BLOCK && d.subtype() == subtype::OFFSET;
        let transport = d.kind() == kind::TRANSPORT_DATA_BLOCK && d.subtype() == subtype::TRANSPORT;
        let len = d.len();
        if !data.is_empty() && (!in_capsule || !from_host) {
            return self.finish(i, status::SGL_TYPE_INVALID);
        }
        if (to_host || from_host) && len > 0 {
            if !(in_capsule || transport) {
                return self.finish(i, status::SGL_TYPE_INVALID);
            }
            if len as usize > MAX_TRANSFER {
                return self.finish(i, status::SGL_LENGTH_INVALID);
            }
        }
        self.slots[i as usize].len = if to_host || from_host { len } else { 0 };
        if bad_digest {
            return self.finish(i, status::TRANSIENT_TRANSPORT);
        }
        if from_host && len > 0 {
            if in_capsule {
                let off = d.address as usize;
                if off + len as usize > data.len() {
                    return self.finish(i, status::SGL_LENGTH_INVALID);
                }
                let _ = self
                    .buf
                    .write_at(i as usize * MAX_TRANSFER, &data[off..off + len as usize]);
                self.slots[i as usize].got = len;
            } else {
                self.slots[i as usize].step = Step::AwaitData;
                self.out.push_back(Out::R2t(i));
                return;
            }
        }
        self.data_ready(i);
    }

    /// The command's data from the host is all here (or it has none): run it.
    fn data_ready(&mut self, i: u16) {
        let s = self.slots[i as usize];
        self.slots[i as usize].step = Step::Bdev;
        if s.bad_digest {
            return self.finish(i, status::TRANSIENT_TRANSPORT);
        }
        if let Some(t) = fabrics::fabrics_type(&s.sqe) {
            return self.fabrics(i, t);
        }
        match &self.queue {
            None => self.finish(i, status::COMMAND_SEQUENCE),
            Some(q) if q.qid == 0 => self.admin_command(i),
            Some(_) => self.io_command(i),
        }
    }

    fn fabrics(&mut self, i: u16, t: u8) {
        let s = self.slots[i as usize];
        match t {
            fctype::CONNECT => self.connect(i),
            fctype::PROPERTY_GET | fctype::PROPERTY_SET => {
                let Some(a) = self.admin.as_mut() else {
                    return self.finish(i, status::COMMAND_SEQUENCE);
                };
                let eight = s.sqe.cdw10 & 7 == 1;
                let offset = s.sqe.cdw11;
                if t == fctype::PROPERTY_GET {
                    match a.props.get(offset, eight) {
                        Ok(v) => {
                            self.slots[i as usize].dw0 = v as u32;
                            // Dword 1 of the response: the high half of CAP.
                            let hi = (v >> 32) as u32;
                            self.finish_dw(i, Status::SUCCESS, v as u32, hi)
                        }
                        Err(st) => self.finish(i, st),
                    }
                } else {
                    let value = s.sqe.cdw12 as u64 | (s.sqe.cdw13 as u64) << 32;
                    match a.props.set(offset, eight, value) {
                        Ok(change) => {
                            self.cc_changed(change);
                            self.finish(i, Status::SUCCESS)
                        }
                        Err(st) => self.finish(i, st),
                    }
                }
            }
            _ => self.finish(i, status::INVALID_OPCODE),
        }
    }

    fn cc_changed(&mut self, change: CcChange) {
        let Some(q) = &self.queue else { return };
        match change {
            CcChange::Enabled => q.ctrl.enabled.store(true, Ordering::Release),
            CcChange::Disabled => q.ctrl.enabled.store(false, Ordering::Release),
            CcChange::Shutdown => {
                // Shutdown notification (section 3.6.1): flush every namespace's
                // volatile cache, then CSTS.SHST says complete.
                let sub = q.sub;
                let mut sent = 0;
                for ch in self.subs[sub].1.iter_mut() {
                    if self.bdev_inflight < BDEV_INFLIGHT_MAX
                        && ch.submit(BdevIo::flush(SHUTDOWN_CTX)).is_ok()
                    {
                        self.bdev_inflight += 1;
                        sent += 1;
                    }
                }
                let a = self.admin.as_mut().expect("the admin queue has its state");
                a.shutdown_flushes = sent;
                if sent == 0 {
                    a.props.shutdown_complete();
                }
                q.ctrl.enabled.store(false, Ordering::Release);
            }
            CcChange::None => {}
        }
    }

    fn connect(&mut self, i: u16) {
        if self.queue.is_some() {
            return self.finish(i, status::COMMAND_SEQUENCE);
        }
        let s = self.slots[i as usize];
        let cmd = match ConnectCommand::parse(&s.sqe) {
            Ok(c) => c,
            Err(_) => return self.finish(i, status::INVALID_FIELD),
        };
        if cmd.recfmt != 0 {
            return self.finish(
                i,
                Status::new(1, fabrics::status::INCOMPATIBLE_FORMAT, true),
            );
        }
        if s.len as usize != CONNECT_DATA_SIZE || s.got != s.len {
            return self.finish(i, status::SGL_LENGTH_INVALID);
        }
        let _ = self.buf.read_at(
            i as usize * MAX_TRANSFER,
            &mut self.page[..CONNECT_DATA_SIZE],
        );
        let data = match ConnectData::parse(&self.page[..CONNECT_DATA_SIZE]) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "nvme-target: {}: Connect data refused: {e}",
                    self.describe()
                );
                let (st, dw0) = invalid_data_field(if e.what == "host NQN" { 512 } else { 256 });
                return self.finish_dw(i, st, dw0, 0);
            }
        };
        let Some(sub) = self.subs.iter().position(|(s, _)| s.nqn == data.subnqn) else {
            eprintln!(
                "nvme-target: {}: Connect to subsystem {} refused: not served on this listener",
                self.describe(),
                data.subnqn
            );
            let (st, dw0) = invalid_data_field(256);
            return self.finish_dw(i, st, dw0, 0);
        };
        let subsystem = self.subs[sub].0.clone();
        if !subsystem.admits(&data.hostnqn) {
            eprintln!(
                "nvme-target: {}: host {} refused: not a host of {} (nvmf_subsystem_add_host, or allow_any_host)",
                self.describe(),
                data.hostnqn,
                subsystem.nqn
            );
            return self.finish(i, Status::new(1, fabrics::status::INVALID_HOST, true));
        }
        if cmd.entries < 2 || cmd.entries as usize > QUEUE_ENTRIES {
            let (st, dw0) = invalid_cmd_field(44);
            return self.finish_dw(i, st, dw0, 0);
        }
        let ctrl = if cmd.qid == 0 {
            if data.cntlid != CNTLID_DYNAMIC {
                let (st, dw0) = invalid_data_field(16);
                return self.finish_dw(i, st, dw0, 0);
            }
            let Some(c) = subsystem.create_ctrl(&data.hostnqn, data.hostid) else {
                return self.finish(i, Status::new(1, fabrics::status::CONTROLLER_BUSY, false));
            };
            self.admin = Some(AdminState {
                props: Props::default(),
                kato: (cmd.kato_ms > 0).then(|| Duration::from_millis(cmd.kato_ms as u64)),
                last_keep_alive: Instant::now(),
                aec: 0,
                held_aers: 0,
                shutdown_flushes: 0,
            });
            c
        } else {
            let c = match subsystem.find_ctrl(data.cntlid) {
                Some(c) if c.hostnqn == data.hostnqn && c.hostid == data.hostid => c,
                _ => {
                    let (st, dw0) = invalid_data_field(16);
                    return self.finish_dw(i, st, dw0, 0);
                }
            };
            if !c.enabled.load(Ordering::Acquire) || cmd.qid > c.io_queues.load(Ordering::Acquire) {
                let (st, dw0) = invalid_cmd_field(42);
                return self.finish_dw(i, st, dw0, 0);
            }
            c
        };
        println!(
            "nvme-target: connection {} ({}): host {} connected queue {} of controller {} in {}",
            self.id, self.peer, data.hostnqn, cmd.qid, ctrl.cntlid, subsystem.nqn
        );
        let cntlid = ctrl.cntlid;
        self.queue = Some(Queue {
            qid: cmd.qid,
            entries: cmd.entries as u16,
            sq_flow_off: cmd.cattr & fabrics::cattr::DISABLE_SQ_FLOW_CONTROL != 0,
            sub,
            ctrl,
        });
        self.sqhd %= cmd.entries as u16;
        let dw0 = ConnectResponse { cntlid, authreq: 0 }.to_dw0();
        self.finish_dw(i, Status::SUCCESS, dw0, 0);
    }

    fn sub(&self) -> &Arc<Subsystem> {
        let q = self.queue.as_ref().expect("connected");
        &self.subs[q.sub].0
    }

    /// Puts `n` bytes of `self.page` in the slot's buffer as its reply data.
    fn reply_page(&mut self, i: u16, n: usize) {
        let s = self.slots[i as usize];
        let n = n.min(s.len as usize);
        let _ = self
            .buf
            .write_at(i as usize * MAX_TRANSFER, &self.page[..n]);
        self.slots[i as usize].reply_len = n as u32;
        self.finish(i, Status::SUCCESS);
    }

    fn admin_command(&mut self, i: u16) {
        let sqe = self.slots[i as usize].sqe;
        let sub = self.sub().clone();
        let cntlid = self.queue.as_ref().map_or(0, |q| q.ctrl.cntlid);
        match sqe.opc() {
            admin_opc::IDENTIFY => {
                let cns_v = sqe.cdw10 & 0xff;
                match cns_v {
                    cns::CONTROLLER => admin::identify_ctrl(&sub, cntlid, &mut self.page),
                    cns::NAMESPACE => match sub.ns(sqe.nsid) {
                        Some((_, ns)) => {
                            admin::identify_ns(ns, ns.bdev.num_blocks(), &mut self.page)
                        }
                        None => return self.finish(i, status::INVALID_NAMESPACE),
                    },
                    cns::ACTIVE_NS_LIST => admin::active_ns_list(&sub, sqe.nsid, &mut self.page),
                    cns::NS_ID_DESCRIPTORS => match sub.ns(sqe.nsid) {
                        Some((_, ns)) => admin::ns_id_descriptors(ns, &mut self.page),
                        None => return self.finish(i, status::INVALID_NAMESPACE),
                    },
                    CNS_CS_CTRL if sqe.cdw11 >> 24 == 0 => self.page.fill(0),
                    _ => return self.finish(i, status::INVALID_FIELD),
                }
                self.reply_page(i, PAGE);
            }
            admin_opc::SET_FEATURES | admin_opc::GET_FEATURES => {
                let set = sqe.opc() == admin_opc::SET_FEATURES;
                let fid = sqe.cdw10 as u8;
                let q = self.queue.as_ref().expect("connected");
                let a = self.admin.as_mut().expect("admin queue");
                let dw0 = match fid {
                    feature_id::NUMBER_OF_QUEUES => {
                        if set {
                            let (n, dw0) = admin::number_of_queues(sqe.cdw11);
                            q.ctrl.io_queues.store(n, Ordering::Release);
                            dw0
                        } else {
                            let n = q.ctrl.io_queues.load(Ordering::Acquire).max(1) as u32 - 1;
                            n | n << 16
                        }
                    }
                    feature_id::ASYNC_EVENT_CONFIG => {
                        if set {
                            a.aec = sqe.cdw11;
                        }
                        a.aec
                    }
                    FEATURE_KATO => {
                        if set {
                            a.kato =
                                (sqe.cdw11 > 0).then(|| Duration::from_millis(sqe.cdw11 as u64));
                            a.last_keep_alive = Instant::now();
                        }
                        a.kato.map_or(0, |k| k.as_millis() as u32)
                    }
                    feature_id::VOLATILE_WRITE_CACHE if !set => 1,
                    _ => return self.finish(i, status::INVALID_FIELD),
                };
                self.finish_dw(i, Status::SUCCESS, dw0, 0);
            }
            admin_opc::ASYNC_EVENT_REQUEST => {
                let a = self.admin.as_mut().expect("admin queue");
                if a.held_aers > admin::AERL as usize {
                    return self.finish(i, status::AER_LIMIT);
                }
                // Held until an event; this version raises none (no ANA, no
                // namespace changes), so they end with the connection.
                a.held_aers += 1;
                self.slots[i as usize].step = Step::Held;
            }
            KEEP_ALIVE => {
                if let Some(a) = self.admin.as_mut() {
                    a.last_keep_alive = Instant::now();
                }
                self.finish(i, Status::SUCCESS);
            }
            admin_opc::GET_LOG_PAGE => {
                let lid = sqe.cdw10 as u8;
                let dwords = ((sqe.cdw11 & 0xffff) << 16 | sqe.cdw10 >> 16) as usize + 1;
                let offset = sqe.cdw12 as u64 | (sqe.cdw13 as u64) << 32;
                match admin::log_page(lid, &mut self.page) {
                    Ok(size) => {
                        let offset = offset.min(size as u64) as usize;
                        let n = (dwords * 4).min(size - offset);
                        self.page.copy_within(offset..offset + n, 0);
                        self.page[n..].fill(0);
                        self.reply_page(i, (dwords * 4).min(PAGE));
                    }
                    Err(st) => self.finish(i, st),
                }
            }
            // Abort (section 5.1): the command was not aborted (dword 0 bit 0).
            admin_opc::ABORT => self.finish_dw(i, Status::SUCCESS, 1, 0),
            _ => self.finish(i, status::INVALID_OPCODE),
        }
    }

    fn io_command(&mut self, i: u16) {
        let sqe = self.slots[i as usize].sqe;
        let sub = self.sub().clone();
        let total = match sqe.opc() {
            io_opc::FLUSH if sqe.nsid == 0xffff_ffff => sub.namespaces.len() as u32,
            io_opc::DATASET_MANAGEMENT if sqe.cdw11 & 1 << 2 != 0 => (sqe.cdw10 & 0xff) + 1,
            io_opc::DATASET_MANAGEMENT => 0, // no deallocate: attributes only, nothing to do
            io_opc::READ | io_opc::WRITE | io_opc::WRITE_ZEROES | io_opc::FLUSH => 1,
            _ => return self.finish(i, status::INVALID_OPCODE),
        };
        if !(sqe.opc() == io_opc::FLUSH && sqe.nsid == 0xffff_ffff) {
            let Some((_, ns)) = sub.ns(sqe.nsid) else {
                return self.finish(i, status::INVALID_NAMESPACE);
            };
            if matches!(sqe.opc(), io_opc::READ | io_opc::WRITE) {
                let bytes = sqe.nlb() as u64 * ns.block_size as u64;
                if bytes as usize > MAX_TRANSFER {
                    return self.finish(i, status::INVALID_FIELD);
                }
                if bytes != self.slots[i as usize].len as u64 {
                    return self.finish(i, status::SGL_LENGTH_INVALID);
                }
            }
            if sqe.opc() == io_opc::DATASET_MANAGEMENT && self.slots[i as usize].len < total * 16 {
                return self.finish(i, status::SGL_LENGTH_INVALID);
            }
        }
        let s = &mut self.slots[i as usize];
        s.total = total;
        s.next = 0;
        s.inflight = 0;
        if total == 0 {
            return self.finish(i, Status::SUCCESS);
        }
        if self.pending.is_empty() {
            self.submit(i);
        } else {
            // Behind what already waits, in order.
            self.pending.push_back(i);
        }
    }

    /// The `k`th bdev I/O of slot `i`, and the namespace index it goes to.
    fn sub_io(&self, i: u16, k: u32) -> Option<(usize, BdevIo)> {
        let s = &self.slots[i as usize];
        let sqe = s.sqe;
        let ctx = i as u64;
        let sub = &self.subs[self.queue.as_ref()?.sub].0;
        if sqe.opc() == io_opc::FLUSH && sqe.nsid == 0xffff_ffff {
            return Some((k as usize, BdevIo::flush(ctx)));
        }
        let (idx, _) = sub.ns(sqe.nsid)?;
        let base = i as usize * MAX_TRANSFER;
        let io = match sqe.opc() {
            io_opc::READ => BdevIo::read(
                sqe.slba(),
                sqe.nlb(),
                self.buf.slice(base, s.len as usize).ok()?,
                ctx,
            ),
            io_opc::WRITE => BdevIo::write(
                sqe.slba(),
                sqe.nlb(),
                self.buf.slice(base, s.len as usize).ok()?,
                ctx,
            ),
            io_opc::WRITE_ZEROES => BdevIo::write_zeroes(sqe.slba(), sqe.nlb(), ctx),
            io_opc::FLUSH => BdevIo::flush(ctx),
            io_opc::DATASET_MANAGEMENT => {
                // Range k (section 3.2.3 of the NVM Command Set spec): context
                // attributes (4 bytes), length in blocks (4), starting LBA (8).
                let mut r = [0u8; 16];
                self.buf.read_at(base + k as usize * 16, &mut r).ok()?;
                let nlb = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
                let slba =
                    u64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
                if nlb == 0 {
                    return Some((idx, BdevIo::unmap(slba, 0, ctx)));
                }
                BdevIo::unmap(slba, nlb, ctx)
            }
            _ => return None,
        };
        Some((idx, io))
    }

    /// Submits what slot `i` has left; a busy channel puts it on the pending queue.
    /// True if it went in whole (or ended).
    fn submit(&mut self, i: u16) -> bool {
        let sub = self.queue.as_ref().map_or(0, |q| q.sub);
        loop {
            let s = self.slots[i as usize];
            if s.next >= s.total {
                if s.inflight == 0 {
                    self.finish(i, s.status);
                }
                return true;
            }
            let Some((idx, io)) = self.sub_io(i, s.next) else {
                self.slots[i as usize].total = s.next;
                self.slots[i as usize].status = status::INVALID_FIELD;
                continue;
            };
            if io.op == nvme_driver::IoOp::Deallocate && io.nlb == 0 {
                self.slots[i as usize].next += 1; // an empty range
                continue;
            }
            if self.bdev_inflight >= BDEV_INFLIGHT_MAX {
                // Waits like a busy channel: the completions of a poll must fit.
                self.pending.push_front(i);
                return false;
            }
            match self.subs[sub].1[idx].submit(io) {
                Ok(()) => {
                    self.bdev_inflight += 1;
                    let s = &mut self.slots[i as usize];
                    s.next += 1;
                    s.inflight += 1;
                }
                Err((BdevError::Busy(_), _)) => {
                    self.pending.push_front(i);
                    return false;
                }
                Err((e, _)) => {
                    let st = match e {
                        BdevError::InvalidIo(_) => status::LBA_OUT_OF_RANGE,
                        BdevError::Stopped(_) => status::ABORTED,
                        _ => status::INTERNAL,
                    };
                    let s = &mut self.slots[i as usize];
                    s.status = st;
                    s.total = s.next;
                }
            }
        }
    }

    fn run_pending(&mut self) -> usize {
        let mut n = 0;
        while let Some(i) = self.pending.pop_front() {
            n += 1;
            if !self.submit(i) {
                break;
            }
        }
        n
    }

    fn poll_channels(&mut self) -> usize {
        let mut work = 0;
        let mut done = [(0u64, Status::SUCCESS); BDEV_INFLIGHT_MAX];
        for s in 0..self.subs.len() {
            for c in 0..self.subs[s].1.len() {
                let mut n = 0;
                work += self.subs[s].1[c].poll(&mut |cpl| {
                    if n < done.len() {
                        done[n] = (cpl.ctx, cpl.status);
                        n += 1;
                    }
                });
                for &(ctx, st) in &done[..n] {
                    self.on_completion(ctx, st);
                }
            }
        }
        work
    }

    fn on_completion(&mut self, ctx: u64, st: Status) {
        self.bdev_inflight = self.bdev_inflight.saturating_sub(1);
        if ctx == SHUTDOWN_CTX {
            if let Some(a) = self.admin.as_mut() {
                a.shutdown_flushes = a.shutdown_flushes.saturating_sub(1);
                if a.shutdown_flushes == 0 {
                    a.props.shutdown_complete();
                }
            }
            return;
        }
        let i = ctx as u16;
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        if s.step != Step::Bdev || s.inflight == 0 {
            return;
        }
        s.inflight -= 1;
        if !admin::ok(st) && admin::ok(s.status) {
            s.status = st;
        }
        if s.inflight == 0 && s.next >= s.total {
            if admin::ok(s.status)
                && s.sqe.opc() == io_opc::READ
                && self.queue.as_ref().is_some_and(|q| q.qid != 0)
            {
                s.reply_len = s.len;
            }
            let st = s.status;
            self.finish(i, st);
        }
    }

    fn finish(&mut self, i: u16, st: Status) {
        let dw0 = self.slots[i as usize].dw0;
        self.finish_dw(i, st, dw0, 0);
    }

    /// Slot `i` is done with status `st`: its data (a read's, on success) and its
    /// response go out.
    fn finish_dw(&mut self, i: u16, st: Status, dw0: u32, dw1: u32) {
        let s = &mut self.slots[i as usize];
        s.status = st;
        s.dw0 = dw0;
        s.dw1 = dw1;
        s.step = Step::Reply;
        if admin::ok(st) && s.reply_len > 0 {
            self.out.push_back(Out::Data(i));
        } else {
            self.out.push_back(Out::Resp(i));
        }
    }

    // ------------------------------------------------------------------ sending

    fn fill_tx(&mut self) {
        while let Some(&o) = self.out.front() {
            if self.tx_len == 0 {
                self.tx_sent = 0;
            }
            let room = self.tx.len() - self.tx_len;
            match o {
                Out::Resp(i) => {
                    let s = self.slots[i as usize];
                    let qid = self.queue.as_ref().map_or(0, |q| q.qid);
                    let cqe = Cqe {
                        dw0: s.dw0,
                        dw1: s.dw1,
                        sq_head: self.sqhd,
                        sq_id: qid,
                        cid: s.sqe.cid(),
                        status: s.status.0 << 1,
                    };
                    let Ok(n) = self
                        .codec
                        .encode(&Pdu::CapsuleResp(cqe), &mut self.tx[self.tx_len..])
                    else {
                        return;
                    };
                    self.tx_len += n;
                    self.out.pop_front();
                    self.release(i);
                }
                Out::R2t(i) => {
                    let s = self.slots[i as usize];
                    let r2t = Pdu::R2T(R2T {
                        cccid: s.sqe.cid(),
                        ttag: i,
                        r2to: s.got,
                        r2tl: s.len - s.got,
                    });
                    let Ok(n) = self.codec.encode(&r2t, &mut self.tx[self.tx_len..]) else {
                        return;
                    };
                    self.tx_len += n;
                    self.out.pop_front();
                }
                Out::Data(i) => {
                    let s = self.slots[i as usize];
                    let len = s.reply_len as usize;
                    // SUCCESS on the last C2HData (NVMe/TCP 1.0, section 3.6.2.9) stands
                    // for the response only when the host gave up SQ head reports
                    // (SQ flow control disabled), as Linux's target does.
                    let success = self.subs.first().is_some_and(|(s, _)| s.c2h_success)
                        && self.queue.as_ref().is_some_and(|q| q.sq_flow_off);
                    let pdu = Pdu::C2HData(
                        C2HData {
                            cccid: s.sqe.cid(),
                            datao: 0,
                            last: true,
                            success,
                        },
                        &LENGTH_ONLY[..len],
                    );
                    let plen = self.codec.encoded_len(&pdu);
                    if plen > room {
                        return;
                    }
                    let at = self.tx_len;
                    let pdo = self
                        .codec
                        .encode_head(&pdu, &mut self.tx[at..])
                        .expect("room checked");
                    let data = &mut self.tx[at + pdo..at + pdo + len];
                    let _ = self.buf.read_at(i as usize * MAX_TRANSFER, data);
                    if self.codec.data_digest() {
                        let d = nvme_driver::tcp::pdu::digest(&self.tx[at + pdo..at + pdo + len]);
                        self.tx[at + pdo + len..at + plen].copy_from_slice(&d.to_le_bytes());
                    }
                    self.tx_len += plen;
                    self.out.pop_front();
                    if success {
                        self.release(i);
                    } else {
                        self.out.push_front(Out::Resp(i));
                    }
                }
            }
        }
    }

    fn release(&mut self, i: u16) {
        self.slots[i as usize] = Slot::FREE;
        self.free.push(i);
        self.commands += 1;
    }

    fn send(&mut self) -> usize {
        if self.tx_sent == self.tx_len {
            return 0;
        }
        match self.sock.write(&self.tx[self.tx_sent..self.tx_len]) {
            Ok(n) => {
                self.tx_sent += n;
                if self.tx_sent == self.tx_len {
                    self.tx_sent = 0;
                    self.tx_len = 0;
                } else if self.tx_sent > self.tx.len() / 2 {
                    self.tx.copy_within(self.tx_sent..self.tx_len, 0);
                    self.tx_len -= self.tx_sent;
                    self.tx_sent = 0;
                }
                n
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => {
                self.close(format!("socket write: {e}"));
                0
            }
        }
    }
}

const _: () = assert!(DATA_HLEN + 2 * DIGEST_SIZE + 128 < 256);
