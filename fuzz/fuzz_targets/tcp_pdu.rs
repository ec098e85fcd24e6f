// SPDX-License-Identifier: Apache-2.0 OR MIT
//! NVMe/TCP PDUs (NVMe/TCP 1.0, section 3.6): the bytes a peer sends on a
//! connection, decoded the way a host or a target consumes its receive buffer. Whatever
//! they are, the decoder never panics or reads past them, asks for more only while no
//! field seen so far is wrong, consumes exactly PLEN bytes per PDU, and every PDU it
//! accepts encodes back (from the peer's side, same settings) into bytes it decodes
//! to the same PDU.
//!
//! Input: one byte of settings (bit 0: the receiver is a controller; bit 1: ICReq and
//! ICResp were exchanged; bits 2, 3: header and data digests; bits 5:4: the PDA both
//! sides asked for), then the stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvme_driver::tcp::pdu::{Codec, Decoded, IcReq, IcResp};

/// The receiver, and a sender with the same settings on the other side.
fn codecs(settings: u8) -> (Codec, Codec) {
    let controller = settings & 1 != 0;
    let (mut host, mut ctrl) = (Codec::host(1 << 16), Codec::controller(1 << 16));
    if settings & 2 != 0 {
        let pda = (settings >> 4) & 3;
        let req = IcReq {
            pfv: 0,
            hpda: pda,
            header_digest: settings & 4 != 0,
            data_digest: settings & 8 != 0,
            maxr2t: 0,
        };
        let offer = IcResp {
            pfv: 0,
            cpda: pda,
            header_digest: true,
            data_digest: true,
            maxh2cdata: 4096,
        };
        let resp = ctrl.accept_icreq(&req, &offer).expect("a valid ICReq");
        host.accept_icresp(&req, &resp)
            .expect("the controller's own answer");
    }
    if controller {
        (ctrl, host)
    } else {
        (host, ctrl)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&settings, mut stream)) = data.split_first() else {
        return;
    };
    let (rx, tx) = codecs(settings);
    let mut out = vec![0u8; 1 << 17];
    // Bounded: every decoded PDU consumes at least 8 bytes.
    while !stream.is_empty() {
        match rx.decode(stream) {
            Ok(Decoded::Need(n)) => {
                // The rest is the start of a PDU whose fields so far are fine.
                assert!(n > 0);
                break;
            }
            Ok(Decoded::Pdu { pdu, len }) | Ok(Decoded::DataDigestError { pdu, len, .. }) => {
                assert!(
                    len >= 8 && len <= stream.len(),
                    "len {len} of {}",
                    stream.len()
                );
                let n = tx
                    .encode(&pdu, &mut out)
                    .expect("room for any PDU of 64 KiB");
                match rx.decode(&out[..n]) {
                    Ok(Decoded::Pdu { pdu: again, len }) => {
                        assert_eq!(len, n);
                        assert_eq!(again, pdu);
                    }
                    other => panic!("{pdu:?} encoded into {:?} decodes as {other:?}", &out[..n]),
                }
                stream = &stream[len..];
            }
            Err(e) => {
                assert!(!e.field.is_empty());
                assert!(e.to_string().starts_with("NVMe/TCP "), "{e}");
                break;
            }
        }
    }
});
