// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The PDU codec: every PDU type through encode and decode in both settings of the
//! digests, streams cut anywhere, and one test per rejection, each checking the
//! field, value and Fatal Error Status the error names.

use super::*;
use crate::spec::io_opc;

const RX_MAX: u32 = 64 * 1024;

/// A host and a controller that have exchanged ICReq and ICResp.
fn pair(header_digest: bool, data_digest: bool, hpda: u8, cpda: u8) -> (Codec, Codec) {
    let mut host = Codec::host(RX_MAX);
    let mut ctrl = Codec::controller(RX_MAX);
    let req = IcReq {
        pfv: 0,
        hpda,
        header_digest,
        data_digest,
        maxr2t: 0,
    };
    let offer = IcResp {
        pfv: 0,
        cpda,
        header_digest: true,
        data_digest: true,
        maxh2cdata: 8192,
    };
    let resp = ctrl.accept_icreq(&req, &offer).unwrap();
    host.accept_icresp(&req, &resp).unwrap();
    (host, ctrl)
}

fn encode(codec: &Codec, pdu: &Pdu<'_>) -> Vec<u8> {
    let mut out = vec![0xa5; codec.encoded_len(pdu)];
    let n = codec.encode(pdu, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

/// Decodes one whole PDU and checks it used all of `bytes`.
fn decode<'a>(codec: &Codec, bytes: &'a [u8]) -> Result<Pdu<'a>, PduError> {
    match codec.decode(bytes)? {
        Decoded::Pdu { pdu, len } => {
            assert_eq!(len, bytes.len());
            Ok(pdu)
        }
        other => panic!("expected a whole PDU, got {other:?}"),
    }
}

fn sqe() -> Sqe {
    let mut sqe = Sqe::rw(io_opc::WRITE, 1, 77, 2);
    sqe.set_cid(0x1234);
    sqe
}

/// Every PDU a host sends and every PDU a controller sends.
fn samples(data: &[u8]) -> (Vec<Pdu<'_>>, Vec<Pdu<'_>>) {
    let to_ctrl = vec![
        Pdu::CapsuleCmd(sqe(), &[]),
        Pdu::CapsuleCmd(sqe(), data),
        Pdu::H2CData(
            H2CData {
                cccid: 0x1234,
                ttag: 7,
                datao: 4096,
                last: true,
            },
            data,
        ),
        Pdu::H2CData(
            H2CData {
                cccid: 1,
                ttag: 0xffff,
                datao: 0,
                last: false,
            },
            data,
        ),
        Pdu::H2CTermReq(TermReq {
            fes: fes::INVALID_HEADER_FIELD,
            fei: 4,
            error_data: &[5, 0, 24, 0, 0xff, 0, 0, 0],
        }),
    ];
    let to_host = vec![
        Pdu::CapsuleResp(Cqe {
            dw0: 0xdead_beef,
            dw1: 1,
            sq_head: 2,
            sq_id: 3,
            cid: 0x1234,
            status: 0x8002,
        }),
        Pdu::C2HData(
            C2HData {
                cccid: 9,
                datao: 512,
                last: true,
                success: true,
            },
            data,
        ),
        Pdu::C2HData(
            C2HData {
                cccid: 9,
                datao: 0,
                last: false,
                success: false,
            },
            data,
        ),
        Pdu::R2T(R2T {
            cccid: 0x1234,
            ttag: 3,
            r2to: 8192,
            r2tl: 65536,
        }),
        Pdu::C2HTermReq(TermReq {
            fes: fes::HEADER_DIGEST_ERROR,
            fei: 0,
            error_data: &[],
        }),
    ];
    (to_ctrl, to_host)
}

#[test]
fn crc32c_is_the_castagnoli_crc() {
    // The check value of CRC-32C (iSCSI), as in RFC 3720's examples' parameters.
    assert_eq!(digest(b"123456789"), 0xe306_9283);
    assert_eq!(digest(&[0u8; 32]), 0x8a91_36aa);
}

#[test]
fn icreq_and_icresp_round_trip_and_settle_the_connection() {
    let mut host = Codec::host(RX_MAX);
    let mut ctrl = Codec::controller(RX_MAX);
    let req = IcReq {
        pfv: 0,
        hpda: 1,
        header_digest: true,
        data_digest: false,
        maxr2t: 3,
    };
    let wire = encode(&host, &Pdu::IcReq(req));
    // As Linux's host sends it: type 0, no flags, HLEN 128, PDO 0, PLEN 128, then
    // PFV 0, HPDA, DGST bit 0, MAXR2T.
    assert_eq!(
        &wire[..16],
        &[0, 0, 128, 0, 128, 0, 0, 0, 0, 0, 1, 1, 3, 0, 0, 0]
    );
    assert!(wire[16..].iter().all(|&b| b == 0));
    let Pdu::IcReq(got) = decode(&ctrl, &wire).unwrap() else {
        panic!("not an ICReq")
    };
    assert_eq!(got, req);
    let offer = IcResp {
        pfv: 0,
        cpda: 0,
        header_digest: true,
        data_digest: true,
        maxh2cdata: 0x40_0000,
    };
    let resp = ctrl.accept_icreq(&got, &offer).unwrap();
    assert!(
        resp.header_digest && !resp.data_digest,
        "only what the host asked for"
    );
    let wire = encode(&ctrl, &Pdu::IcResp(resp));
    assert_eq!(
        &wire[..16],
        &[1, 0, 128, 0, 128, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x40, 0]
    );
    let Pdu::IcResp(got) = decode(&host, &wire).unwrap() else {
        panic!("not an ICResp")
    };
    assert_eq!(got, resp);
    host.accept_icresp(&req, &got).unwrap();
    assert!(host.is_initialized() && ctrl.is_initialized());
    assert!(host.header_digest() && !host.data_digest());
    assert_eq!(host.maxh2cdata(), 0x40_0000);
}

#[test]
fn every_pdu_round_trips_with_and_without_digests_and_alignment() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    for (hd, dd, pda) in [
        (false, false, 0),
        (true, false, 0),
        (false, true, 0),
        (true, true, 0),
        (true, true, 3),
    ] {
        let (host, ctrl) = pair(hd, dd, pda, pda);
        let (to_ctrl, to_host) = samples(&data);
        for (from, to, pdus) in [(&host, &ctrl, to_ctrl), (&ctrl, &host, to_host)] {
            for pdu in pdus {
                let wire = encode(from, &pdu);
                let what = format!("{pdu:?} with hd {hd} dd {dd} pda {pda}");
                assert_eq!(decode(to, &wire).unwrap(), pdu, "{what}");
                let pdo = wire[3] as usize;
                if !pdu.data().is_empty() {
                    assert_eq!(pdo % ((pda as usize + 1) * 4), 0, "{what}");
                    assert_eq!(&wire[pdo..pdo + data.len()], &data[..], "{what}");
                    assert_eq!(wire[1] & flags::DDGSTF != 0, dd, "{what}");
                } else {
                    assert_eq!(pdo, 0, "{what}");
                    assert_eq!(wire[1] & flags::DDGSTF, 0, "{what}");
                }
                let term = matches!(pdu, Pdu::H2CTermReq(_) | Pdu::C2HTermReq(_));
                assert_eq!(wire[1] & flags::HDGSTF != 0, hd && !term, "{what}");
                assert_eq!(le32(&wire, 4) as usize, wire.len(), "PLEN: {what}");
            }
        }
    }
}

#[test]
fn encode_head_leaves_the_data_to_the_caller() {
    let (host, ctrl) = pair(true, true, 0, 0);
    let data = [0x5au8; 300];
    let pdu = Pdu::H2CData(
        H2CData {
            cccid: 4,
            ttag: 1,
            datao: 0,
            last: true,
        },
        &data,
    );
    let mut head = [0u8; 128];
    let n = host.encode_head(&pdu, &mut head).unwrap();
    assert_eq!(
        n, 28,
        "24-byte header, 4-byte header digest, no padding at PDA 0"
    );
    let mut wire = head[..n].to_vec();
    wire.extend_from_slice(&data);
    wire.extend_from_slice(&digest(&data).to_le_bytes());
    assert_eq!(wire, encode(&host, &pdu));
    assert_eq!(decode(&ctrl, &wire).unwrap(), pdu);
}

#[test]
fn a_stream_cut_anywhere_asks_for_exactly_the_rest() {
    let (host, ctrl) = pair(true, true, 1, 1);
    let data = [9u8; 100];
    let mut stream = Vec::new();
    let (_, to_host) = samples(&data);
    for pdu in &to_host {
        stream.extend_from_slice(&encode(&ctrl, pdu));
    }
    // Consume the stream the way a connection does: decode what is there, ask for
    // more when told, never more than the PDU's own length.
    let mut at = 0;
    let mut got = Vec::new();
    let mut have = 0;
    while at < stream.len() {
        match host.decode(&stream[at..at + have]).unwrap() {
            Decoded::Need(n) => {
                assert!(
                    n > 0 && at + have + n <= stream.len(),
                    "asked for {n} at {at}+{have}"
                );
                // Receive one byte at a time, the worst a socket can do.
                have += 1;
            }
            Decoded::Pdu { pdu, len } => {
                assert_eq!(len, have, "decoded as soon as the PDU was whole");
                got.push(pdu);
                at += len;
                have = 0;
            }
            Decoded::DataDigestError { .. } => panic!("digest error on a clean stream"),
        }
    }
    assert_eq!(got, to_host);
}

#[test]
fn a_wrong_data_digest_hands_back_the_pdu_and_its_length() {
    let (host, ctrl) = pair(false, true, 0, 0);
    let data = [1u8; 64];
    let pdu = Pdu::C2HData(
        C2HData {
            cccid: 2,
            datao: 0,
            last: true,
            success: false,
        },
        &data,
    );
    let mut wire = encode(&ctrl, &pdu);
    let at = wire[3] as usize + 5;
    wire[at] ^= 0x10;
    match host.decode(&wire).unwrap() {
        Decoded::DataDigestError {
            pdu: Pdu::C2HData(h, d),
            len,
            received,
            computed,
        } => {
            assert_eq!((h.cccid, len, d.len()), (2, wire.len(), 64));
            assert_eq!(received, digest(&data));
            assert_ne!(received, computed);
        }
        other => panic!("expected a data digest error, got {other:?}"),
    }
}

/// Decodes `wire` with `codec` and returns the error, which must be fatal.
fn rejected(codec: &Codec, wire: &[u8]) -> PduError {
    match codec.decode(wire) {
        Err(e) => e,
        Ok(Decoded::Need(n)) => panic!("accepted so far, asks for {n} more bytes"),
        Ok(Decoded::Pdu { pdu, len } | Decoded::DataDigestError { pdu, len, .. }) => {
            panic!("accepted a {} PDU of {len} bytes", pdu_name(pdu.pdu_type()))
        }
    }
}

fn assert_rejects(codec: &Codec, wire: &[u8], field: &str, value: u64, fes: u16) {
    let e = rejected(codec, wire);
    assert_eq!((e.field, e.value, e.fes), (field, value, fes), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{field} = {value} ")),
        "the message names the field and value: {text}"
    );
}

fn resp_wire(codec: &Codec) -> Vec<u8> {
    encode(codec, &Pdu::CapsuleResp(Cqe::default()))
}

#[test]
fn common_header_rejections() {
    let (host, ctrl) = pair(false, false, 0, 0);
    let resp = resp_wire(&ctrl);
    let ih = fes::INVALID_HEADER_FIELD;

    let mut w = resp.clone();
    w[0] = 0x08;
    assert_rejects(&host, &w, "PDU-TYPE", 8, ih);
    w[0] = 0x0a;
    assert_rejects(&host, &w, "PDU-TYPE", 10, ih);
    // A controller's PDU at the controller, a host's at the host.
    assert_rejects(&ctrl, &resp, "PDU-TYPE", 5, ih);
    let cmd = encode(&host, &Pdu::CapsuleCmd(sqe(), &[]));
    assert_rejects(&host, &cmd, "PDU-TYPE", 4, ih);

    let mut w = resp.clone();
    w[1] = flags::LAST_PDU;
    assert_rejects(&host, &w, "FLAGS", 4, ih);
    w[1] = flags::HDGSTF;
    assert_rejects(&host, &w, "FLAGS", 1, ih);
    let mut w = resp.clone();
    w[2] = 28;
    assert_rejects(&host, &w, "HLEN", 28, ih);
    let mut w = resp.clone();
    w[3] = 24;
    assert_rejects(&host, &w, "PDO", 24, ih);
    let mut w = resp.clone();
    w[4] = 28;
    assert_rejects(&host, &w, "PLEN", 28, ih);
    w[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_rejects(&host, &w, "PLEN", u32::MAX as u64, ih);

    let e = rejected(&host, &{
        let mut w = resp.clone();
        w[2] = 0;
        w
    });
    assert_eq!(e.fei, 2, "FEI is the offset of HLEN");
    assert_eq!(
        e.to_string(),
        "NVMe/TCP CapsuleResp PDU (0x05) received by the host: HLEN = 0 (0x0): expected 24; invalid PDU header field"
    );
}

#[test]
fn header_digest_rejections() {
    let (host, ctrl) = pair(true, false, 0, 0);
    let mut w = resp_wire(&ctrl);
    assert_eq!(w.len(), 28);
    w[12] ^= 1; // the CID, covered by the digest
    let e = rejected(&host, &w);
    assert_eq!(
        (e.field, e.fes, e.fei),
        ("HDGST", fes::HEADER_DIGEST_ERROR, 24),
        "{e}"
    );
    // HDGSTF missing while header digests are on.
    let (plain_host, plain_ctrl) = pair(false, false, 0, 0);
    assert_rejects(
        &host,
        &resp_wire(&plain_ctrl),
        "FLAGS",
        0,
        fes::INVALID_HEADER_FIELD,
    );
    let _ = plain_host;
}

#[test]
fn data_layout_rejections() {
    let (host, ctrl) = pair(false, false, 1, 1); // 8-byte data alignment
    let data = [3u8; 16];
    let c2h = encode(
        &ctrl,
        &Pdu::C2HData(
            C2HData {
                cccid: 1,
                datao: 0,
                last: true,
                success: false,
            },
            &data,
        ),
    );
    assert_eq!((c2h[3], c2h.len()), (24, 40));
    let ih = fes::INVALID_HEADER_FIELD;

    let mut w = c2h.clone();
    w[3] = 20; // before the end of the header
    assert_rejects(&host, &w, "PDO", 20, ih);
    let mut w = c2h.clone();
    w[3] = 28; // not a multiple of 8
    assert_rejects(&host, &w, "PDO", 28, ih);
    let mut w = c2h.clone();
    w[4] = 24; // PLEN = PDO: no data
    assert_rejects(&host, &w, "PLEN", 24, ih);
    let mut w = c2h.clone();
    w[3] = 0;
    w[4] = 24;
    assert_rejects(&host, &w, "PDO", 0, ih); // a data PDU must carry data
    let mut w = c2h.clone();
    w[16] = 15; // DATAL
    assert_rejects(&host, &w, "DATAL", 15, ih);
    let mut w = c2h.clone();
    w[12..16].copy_from_slice(&(u32::MAX - 4).to_le_bytes());
    assert_rejects(
        &host,
        &w,
        "DATAO",
        (u32::MAX - 4) as u64,
        fes::DATA_OUT_OF_RANGE,
    );
    let mut w = c2h.clone();
    w[1] = flags::SUCCESS;
    assert_rejects(&host, &w, "FLAGS", flags::SUCCESS as u64, ih);
    let mut w = c2h.clone();
    w[1] |= flags::DDGSTF;
    assert_rejects(
        &host,
        &w,
        "FLAGS",
        (flags::DDGSTF | flags::LAST_PDU) as u64,
        ih,
    );

    // More data than the receiver takes in one PDU.
    let small = Codec {
        rx_data_max: 15,
        ..host
    };
    assert_rejects(&small, &c2h, "PLEN", 40, fes::DATA_LIMIT_EXCEEDED);

    // A CapsuleResp or R2T never carries data.
    let mut w = resp_wire(&ctrl);
    w[4] = 32;
    w.extend_from_slice(&[0; 8]);
    assert_rejects(&host, &w, "PLEN", 32, ih);
}

#[test]
fn data_digest_flag_rejections() {
    let (host, ctrl) = pair(false, true, 0, 0);
    let data = [3u8; 16];
    let c2h = encode(
        &ctrl,
        &Pdu::C2HData(
            C2HData {
                cccid: 1,
                datao: 0,
                last: true,
                success: false,
            },
            &data,
        ),
    );
    // DDGSTF clear while data digests are on (and the digest left as data).
    let mut w = c2h.clone();
    w[1] &= !flags::DDGSTF;
    assert_rejects(
        &host,
        &w,
        "FLAGS",
        flags::LAST_PDU as u64,
        fes::INVALID_HEADER_FIELD,
    );
    // DDGSTF on a command capsule without data.
    let mut cmd = encode(&host, &Pdu::CapsuleCmd(sqe(), &[]));
    cmd[1] |= flags::DDGSTF;
    assert_rejects(
        &ctrl,
        &cmd,
        "FLAGS",
        flags::DDGSTF as u64,
        fes::INVALID_HEADER_FIELD,
    );
}

#[test]
fn sequence_rejections() {
    let fresh_host = Codec::host(RX_MAX);
    let fresh_ctrl = Codec::controller(RX_MAX);
    let (host, ctrl) = pair(false, false, 0, 0);
    // Nothing but ICReq/ICResp (or a termination request) before initialization.
    assert_rejects(
        &fresh_host,
        &resp_wire(&ctrl),
        "PDU-TYPE",
        5,
        fes::PDU_SEQUENCE_ERROR,
    );
    // No second ICReq.
    let icreq = encode(
        &fresh_host,
        &Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            header_digest: false,
            data_digest: false,
            maxr2t: 0,
        }),
    );
    assert!(decode(&fresh_ctrl, &icreq).is_ok());
    assert_rejects(&ctrl, &icreq, "PDU-TYPE", 0, fes::PDU_SEQUENCE_ERROR);
    // A termination request is taken at any time.
    let term = encode(
        &fresh_ctrl,
        &Pdu::C2HTermReq(TermReq {
            fes: fes::UNSUPPORTED_PARAMETER,
            fei: 10,
            error_data: &icreq[..24],
        }),
    );
    for h in [&fresh_host, &host] {
        match decode(h, &term).unwrap() {
            Pdu::C2HTermReq(t) => {
                assert_eq!((t.fes, t.fei), (fes::UNSUPPORTED_PARAMETER, 10));
                assert_eq!(t.error_data, &icreq[..24]);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ic_and_term_req_rejections() {
    let host = Codec::host(RX_MAX);
    let ctrl = Codec::controller(RX_MAX);
    let icresp = encode(
        &ctrl,
        &Pdu::IcResp(IcResp {
            pfv: 0,
            cpda: 0,
            header_digest: false,
            data_digest: false,
            maxh2cdata: 4096,
        }),
    );
    let mut w = icresp.clone();
    w[4] = 127;
    assert_rejects(&host, &w, "PLEN", 127, fes::INVALID_HEADER_FIELD);
    let mut w = icresp.clone();
    w[11] = 0x04;
    assert_rejects(&host, &w, "DGST", 4, fes::INVALID_HEADER_FIELD);
    let mut w = icresp.clone();
    w[1] = flags::HDGSTF;
    assert_rejects(&host, &w, "FLAGS", 1, fes::INVALID_HEADER_FIELD);

    let term = |plen: usize| {
        let mut w = vec![0u8; plen.max(24)];
        w[0] = pdu_type::C2H_TERM_REQ;
        w[2] = 24;
        w[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
        w
    };
    assert_rejects(&host, &term(20), "PLEN", 20, fes::INVALID_HEADER_FIELD);
    assert_rejects(&host, &term(153), "PLEN", 153, fes::INVALID_HEADER_FIELD);
    assert!(
        matches!(decode(&host, &term(152)), Ok(Pdu::C2HTermReq(t)) if t.error_data.len() == 128)
    );
    let long = [7u8; 200];
    let sent = encode(
        &ctrl,
        &Pdu::C2HTermReq(TermReq {
            fes: 1,
            fei: 0,
            error_data: &long,
        }),
    );
    assert_eq!(sent.len(), 152, "error data is cut at 128 bytes");
}

#[test]
fn an_h2c_data_larger_than_maxh2cdata_is_refused() {
    // pair() has the controller announce MAXH2CDATA 8192.
    let (host, ctrl) = pair(false, false, 0, 0);
    let data = vec![1u8; 8193];
    let h = H2CData {
        cccid: 1,
        ttag: 1,
        datao: 0,
        last: true,
    };
    let ok = encode(&host, &Pdu::H2CData(h, &data[..8192]));
    assert!(decode(&ctrl, &ok).is_ok());
    let over = encode(&host, &Pdu::H2CData(h, &data));
    let e = rejected(&ctrl, &over);
    assert_eq!(
        (e.field, e.value, e.rule, e.fes),
        (
            "PLEN",
            24 + 8193,
            Rule::AtMost(24 + 8192),
            fes::DATA_LIMIT_EXCEEDED
        ),
        "{e}"
    );
    // A command capsule may carry more in-capsule data than MAXH2CDATA.
    let cmd = encode(&host, &Pdu::CapsuleCmd(sqe(), &data));
    assert!(decode(&ctrl, &cmd).is_ok());
}

#[test]
fn r2t_rejections() {
    let (host, ctrl) = pair(false, false, 0, 0);
    let r2t = encode(
        &ctrl,
        &Pdu::R2T(R2T {
            cccid: 1,
            ttag: 2,
            r2to: 0,
            r2tl: 4096,
        }),
    );
    let mut w = r2t.clone();
    w[16..20].fill(0);
    assert_rejects(&host, &w, "R2TL", 0, fes::INVALID_HEADER_FIELD);
    let mut w = r2t.clone();
    w[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_rejects(&host, &w, "R2TO", u32::MAX as u64, fes::DATA_OUT_OF_RANGE);
}

#[test]
fn icresp_and_icreq_values_are_checked_against_what_was_asked() {
    let req = IcReq {
        pfv: 0,
        hpda: 0,
        header_digest: false,
        data_digest: true,
        maxr2t: 0,
    };
    let good = IcResp {
        pfv: 0,
        cpda: 0,
        header_digest: false,
        data_digest: true,
        maxh2cdata: 4096,
    };
    let up = fes::UNSUPPORTED_PARAMETER;
    for (resp, field, value) in [
        (IcResp { pfv: 1, ..good }, "PFV", 1),
        (IcResp { cpda: 32, ..good }, "CPDA", 32),
        (
            IcResp {
                header_digest: true,
                ..good
            },
            "DGST",
            3,
        ),
        (
            IcResp {
                maxh2cdata: 4092,
                ..good
            },
            "MAXH2CDATA",
            4092,
        ),
        (
            IcResp {
                maxh2cdata: 4098,
                ..good
            },
            "MAXH2CDATA",
            4098,
        ),
    ] {
        let e = Codec::host(RX_MAX).accept_icresp(&req, &resp).unwrap_err();
        assert_eq!((e.field, e.value, e.fes), (field, value, up), "{e}");
    }
    let mut host = Codec::host(RX_MAX);
    host.accept_icresp(&req, &good).unwrap();
    assert!(host.data_digest() && !host.header_digest());

    let offer = IcResp {
        header_digest: false,
        data_digest: false,
        ..good
    };
    for (r, field, value) in [
        (IcReq { pfv: 2, ..req }, "PFV", 2),
        (IcReq { hpda: 40, ..req }, "HPDA", 40),
    ] {
        let e = Codec::controller(RX_MAX)
            .accept_icreq(&r, &offer)
            .unwrap_err();
        assert_eq!((e.field, e.value, e.fes), (field, value, up), "{e}");
    }
    let mut ctrl = Codec::controller(RX_MAX);
    let resp = ctrl.accept_icreq(&req, &offer).unwrap();
    assert!(
        !resp.data_digest,
        "a digest the controller does not offer stays off"
    );
}

#[test]
fn data_ranges_are_checked_in_order_and_within_the_transfer() {
    let (host, _) = pair(false, false, 0, 0);
    let t = pdu_type::C2H_DATA;
    assert!(host.check_data_range(t, 0, 4096, 0, 8192).is_ok());
    assert!(host.check_data_range(t, 4096, 4096, 4096, 8192).is_ok());
    let e = host.check_data_range(t, 8192, 512, 4096, 8192).unwrap_err();
    assert_eq!((e.field, e.value, e.rule), ("DATAO", 8192, Rule::Eq(4096)));
    let e = host
        .check_data_range(t, 4096, 8192, 4096, 8192)
        .unwrap_err();
    assert_eq!(
        (e.field, e.value, e.rule, e.fes),
        ("DATAL", 8192, Rule::AtMost(4096), fes::DATA_OUT_OF_RANGE)
    );
}

#[test]
fn encoding_into_a_short_buffer_is_refused() {
    let (host, _) = pair(false, false, 0, 0);
    let data = [0u8; 100];
    let pdu = Pdu::CapsuleCmd(sqe(), &data);
    let mut out = [0u8; 100];
    let e = host.encode(&pdu, &mut out).unwrap_err();
    assert_eq!((e.need, e.have), (172, 100));
    assert!(e.to_string().contains("CapsuleCmd PDU of 172 bytes"), "{e}");
    let mut head = [0u8; 71];
    assert_eq!(host.encode_head(&pdu, &mut head).unwrap_err().need, 72);
}
