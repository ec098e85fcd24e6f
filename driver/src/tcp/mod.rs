// SPDX-License-Identifier: Apache-2.0 OR MIT
//! NVMe over TCP (NVMe/TCP Transport Specification 1.0).
//!
//! The transport model: each queue (the admin queue and every I/O queue) is one TCP
//! connection. A connection starts with an ICReq from the host and an ICResp from the
//! controller, which settle digests and data alignment. Then commands travel as
//! command capsules (CapsuleCmd PDUs: the 64-byte SQE, and for a small write its
//! data in the same PDU), completions as response capsules (CapsuleResp: the
//! 16-byte CQE). A read's data comes in C2HData PDUs; a write's data that is not in
//! the capsule goes in H2CData PDUs, each answering the controller's Ready to
//! Transfer (R2T). Either side ends a broken connection with a termination request
//! (H2CTermReq, C2HTermReq) naming the field in error.
//!
//! [`pdu`] encodes and decodes those PDUs, for a host and for a target alike; the
//! Fabrics commands that run over them (Connect, Property Get and Set) are in
//! [`crate::spec::fabrics`].

pub mod pdu;
