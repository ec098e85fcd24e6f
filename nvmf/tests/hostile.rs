// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The target's server on the host, over a software controller, against a scripted
//! NVMe/TCP host (the driver's codec on the host side): PDUs that break the protocol
//! end their own connection with a C2HTermReq and nothing else; a host not admitted is
//! refused; the admin queue's properties and Identify; writes in the capsule and after
//! an R2T read back through C2HData; the server stops cleanly.

use nvme_bdev::{BlockLayer, LayerOptions};
use nvme_driver::sgl::Descriptor;
use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
use nvme_driver::spec::fabrics::{self, ConnectData, PropertySize, CNTLID_DYNAMIC};
use nvme_driver::spec::{admin_opc, io_opc, Cqe, Sqe};
use nvme_driver::tcp::pdu::{fes, Codec, Decoded, H2CData, IcReq, Pdu, PFV_1_0};
use nvme_target::subsystem::{NsEntry, Subsystem};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NQN: &str = "nqn.2026-12.io.nvme-target:test";
const HOST: &str = "nqn.2026-12.io.nvme-target:host-a";

/// What the scripted host received.
#[derive(Debug)]
enum Got {
    Resp(Cqe),
    Data(u16, Vec<u8>),
    R2t(u16, u16, u32, u32),
    Term(u16),
    IcResp,
    Closed,
}

struct Host {
    sock: TcpStream,
    codec: Codec,
    rx: Vec<u8>,
}

impl Host {
    fn new(addr: SocketAddr) -> Host {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Host {
            sock,
            codec: Codec::host(1 << 20),
            rx: Vec::new(),
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    fn send(&mut self, pdu: &Pdu<'_>) {
        let mut b = vec![0; self.codec.encoded_len(pdu)];
        self.codec.encode(pdu, &mut b).unwrap();
        self.raw(&b);
    }

    fn recv(&mut self) -> Got {
        loop {
            match self
                .codec
                .decode(&self.rx)
                .expect("the target's PDU is valid")
            {
                Decoded::Pdu { pdu, len } => {
                    let got = match pdu {
                        Pdu::CapsuleResp(c) => Got::Resp(c),
                        Pdu::C2HData(h, d) => Got::Data(h.cccid, d.to_vec()),
                        Pdu::R2T(r) => Got::R2t(r.cccid, r.ttag, r.r2to, r.r2tl),
                        Pdu::C2HTermReq(t) => Got::Term(t.fes),
                        Pdu::IcResp(_) => Got::IcResp,
                        other => panic!("unexpected {other:?}"),
                    };
                    self.rx.drain(..len);
                    return got;
                }
                Decoded::Need(_) => {
                    let mut b = [0u8; 65536];
                    let n = self.sock.read(&mut b).expect("an answer within 10 s");
                    if n == 0 {
                        return Got::Closed;
                    }
                    self.rx.extend_from_slice(&b[..n]);
                }
                Decoded::DataDigestError { .. } => panic!("no digests asked"),
            }
        }
    }

    fn icreq(&mut self) {
        let req = IcReq {
            pfv: PFV_1_0,
            hpda: 0,
            header_digest: false,
            data_digest: false,
            maxr2t: 0,
        };
        self.send(&Pdu::IcReq(req));
        let mut b = [0u8; 128];
        self.sock.read_exact(&mut b).unwrap();
        let Ok(Decoded::Pdu {
            pdu: Pdu::IcResp(resp),
            ..
        }) = self.codec.decode(&b)
        else {
            panic!("no ICResp");
        };
        self.codec.accept_icresp(&req, &resp).unwrap();
    }

    /// A command; its in-capsule data if any, else a transport SGL of `len`.
    fn command(&mut self, mut sqe: Sqe, cid: u16, data: &[u8], len: u32) {
        sqe.set_cid(cid);
        let d = if data.is_empty() {
            Descriptor::transport_data_block(len)
        } else {
            Descriptor::in_capsule(0, data.len() as u32)
        };
        d.put_in(&mut sqe);
        self.send(&Pdu::CapsuleCmd(sqe, data));
    }

    fn connect(&mut self, qid: u16, cntlid: u16, hostnqn: &str) -> Cqe {
        let data = ConnectData {
            hostid: [7; 16],
            cntlid,
            subnqn: NQN.into(),
            hostnqn: hostnqn.into(),
        }
        .to_bytes()
        .unwrap();
        self.command(fabrics::connect(qid, 32, 0, 0), 1, &data, 0);
        match self.recv() {
            Got::Resp(c) => c,
            other => panic!("Connect answered {other:?}"),
        }
    }

    fn resp(&mut self) -> Cqe {
        match self.recv() {
            Got::Resp(c) => c,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

fn start(allow_any_host: bool) -> Server {
    let ns = Arc::new(Namespace::new(1, 1 << 14, 512).unwrap());
    let ctrl = SoftController::start(SoftConfig {
        name: "soft0".into(),
        subnqn: "nqn.2024-01.org.example:soft".into(),
        namespaces: vec![ns],
        ..SoftConfig::default()
    });
    let layer = BlockLayer::new(LayerOptions::default()).unwrap();
    let names = layer.attach_bus("soft0", ctrl).unwrap();
    let bdev = layer.open(&names[1]).unwrap();
    let sub = Arc::new(Subsystem::new(
        NQN.into(),
        "SN1".into(),
        "model".into(),
        allow_any_host,
        vec![HOST.into()],
        vec![NsEntry {
            nsid: 1,
            block_size: bdev.block_size(),
            bdev,
            bdev_name: "Soft0n1".into(),
            nguid: None,
            uuid: Some([9; 16]),
        }],
        true,
    ));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let r = nvme_target::server::run(&layer, vec![(l, vec![sub])], &[0], &flag);
        layer.shutdown();
        r
    });
    Server {
        addr,
        stop,
        thread: Some(thread),
    }
}

impl Server {
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let r = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("the server thread");
        assert_eq!(r, Ok(()), "the server stopped cleanly");
    }
}

#[test]
fn protocol_violations_end_only_their_connection() {
    let srv = start(true);
    // A CapsuleCmd before ICReq: PDU Sequence Error.
    let mut a = Host::new(srv.addr);
    let mut early = [0u8; 72];
    early[0] = 0x04;
    early[2] = 72;
    early[4] = 72;
    a.raw(&early);
    assert!(matches!(a.recv(), Got::Term(f) if f == fes::PDU_SEQUENCE_ERROR));
    assert!(matches!(a.recv(), Got::Closed));

    // A CapsuleCmd whose HLEN is wrong: Invalid Header Field.
    let mut b = Host::new(srv.addr);
    b.icreq();
    let mut bad = [0u8; 72];
    bad[0] = 0x04;
    bad[2] = 64;
    bad[4] = 72;
    b.raw(&bad);
    assert!(matches!(b.recv(), Got::Term(f) if f == fes::INVALID_HEADER_FIELD));
    assert!(matches!(b.recv(), Got::Closed));

    // H2CData that answers no R2T.
    let mut c = Host::new(srv.addr);
    c.icreq();
    let h = H2CData {
        cccid: 3,
        ttag: 5,
        datao: 0,
        last: true,
    };
    c.send(&Pdu::H2CData(h, &[0u8; 512]));
    assert!(matches!(c.recv(), Got::Term(_)));
    assert!(matches!(c.recv(), Got::Closed));

    // Meanwhile a well-behaved host is served: Connect, CAP, CC.EN -> CSTS.RDY.
    let mut d = Host::new(srv.addr);
    d.icreq();
    let cqe = d.connect(0, CNTLID_DYNAMIC, HOST);
    assert!(cqe.status().is_success(), "{cqe:?}");
    d.command(fabrics::property_get(0, PropertySize::Eight), 2, &[], 0);
    let cap = fabrics::property_value(&d.resp());
    assert_eq!(cap & 0xffff, 63, "CAP.MQES");
    d.command(
        fabrics::property_set(0x14, PropertySize::Four, 1),
        3,
        &[],
        0,
    );
    assert!(d.resp().status().is_success());
    d.command(fabrics::property_get(0x1c, PropertySize::Four), 4, &[], 0);
    assert_eq!(fabrics::property_value(&d.resp()), 1, "CSTS.RDY");
    drop(d);
    srv.stop();
}

#[test]
fn a_host_not_added_is_refused() {
    let srv = start(false);
    let mut h = Host::new(srv.addr);
    h.icreq();
    let cqe = h.connect(0, CNTLID_DYNAMIC, "nqn.2026-12.io.nvme-target:stranger");
    let st = cqe.status();
    assert_eq!(
        (st.sct(), st.sc()),
        (1, fabrics::status::INVALID_HOST),
        "{st:?}"
    );
    let mut ok = Host::new(srv.addr);
    ok.icreq();
    assert!(ok.connect(0, CNTLID_DYNAMIC, HOST).status().is_success());
    drop((h, ok));
    srv.stop();
}

#[test]
fn identify_and_writes_in_capsule_and_after_r2t_read_back() {
    let srv = start(true);
    let mut adm = Host::new(srv.addr);
    adm.icreq();
    let cntlid = adm.connect(0, CNTLID_DYNAMIC, HOST).dw0 as u16;
    adm.command(
        fabrics::property_set(0x14, PropertySize::Four, 1),
        2,
        &[],
        0,
    );
    assert!(adm.resp().status().is_success());
    let mut id = Sqe::new(admin_opc::IDENTIFY);
    id.cdw10 = 1;
    adm.command(id, 3, &[], 4096);
    let Got::Data(3, page) = adm.recv() else {
        panic!("no Identify data")
    };
    assert_eq!(&page[768..768 + NQN.len()], NQN.as_bytes(), "SUBNQN");
    assert_eq!(u16::from_le_bytes([page[78], page[79]]), cntlid, "CNTLID");
    assert!(adm.resp().status().is_success());
    let mut nq = Sqe::new(admin_opc::SET_FEATURES);
    nq.cdw10 = 7;
    nq.cdw11 = 0x0001_0001;
    adm.command(nq, 4, &[], 0);
    assert_eq!(adm.resp().dw0, 0x0001_0001, "two I/O queues granted");

    let mut io = Host::new(srv.addr);
    io.icreq();
    assert!(io.connect(1, cntlid, HOST).status().is_success());
    // 4 KiB in the capsule at LBA 0; 64 KiB after an R2T at LBA 64.
    let small: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    io.command(Sqe::rw(io_opc::WRITE, 1, 0, 8), 10, &small, 0);
    assert!(io.resp().status().is_success());
    let big: Vec<u8> = (0..65536u32).map(|i| (i * 13 + 1) as u8).collect();
    io.command(
        Sqe::rw(io_opc::WRITE, 1, 64, 128),
        11,
        &[],
        big.len() as u32,
    );
    let Got::R2t(11, ttag, 0, r2tl) = io.recv() else {
        panic!("no R2T")
    };
    assert_eq!(r2tl, big.len() as u32);
    for (k, chunk) in big.chunks(16384).enumerate() {
        let h = H2CData {
            cccid: 11,
            ttag,
            datao: (k * 16384) as u32,
            last: k == 3,
        };
        io.send(&Pdu::H2CData(h, chunk));
    }
    assert!(io.resp().status().is_success());
    for (cid, slba, want) in [(12u16, 0u64, &small), (13, 64, &big)] {
        let nlb = (want.len() / 512) as u32;
        io.command(
            Sqe::rw(io_opc::READ, 1, slba, nlb),
            cid,
            &[],
            want.len() as u32,
        );
        match io.recv() {
            Got::Data(c, d) => {
                assert_eq!(c, cid);
                assert!(d == *want, "read back differs at LBA {slba}");
            }
            other => panic!("read answered {other:?}"),
        }
        assert!(io.resp().status().is_success());
    }
    // Dataset Management, deallocate, 200 ranges in the capsule: more block layer
    // I/Os than a connection keeps in flight at once; all complete, once.
    let mut ranges = Vec::new();
    for r in 0..200u64 {
        ranges.extend_from_slice(&0u32.to_le_bytes());
        ranges.extend_from_slice(&1u32.to_le_bytes());
        ranges.extend_from_slice(&(1000 + r).to_le_bytes());
    }
    let mut dsm = Sqe::new(io_opc::DATASET_MANAGEMENT);
    dsm.nsid = 1;
    dsm.cdw10 = 199;
    dsm.cdw11 = 1 << 2;
    io.command(dsm, 14, &ranges, 0);
    let cqe = io.resp();
    assert!(cqe.status().is_success(), "{cqe:?}");
    assert_eq!(cqe.cid, 14);
    drop((adm, io));
    srv.stop();
}
