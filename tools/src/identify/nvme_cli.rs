// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `nvme id-ctrl -o json` and `nvme id-ns -o json`: the Identify Controller and
//! Identify Namespace data structures under nvme-cli's key names, in nvme-cli's order,
//! so a script written for nvme-cli reads nvme-identify's `-o json` unchanged. Built
//! from the raw 4096-byte structures (not the driver's parsed subset) because
//! nvme-cli prints almost every field.
//!
//! Value types follow nvme-cli: every integer field is a JSON number (128-bit
//! capacities too, as a string only if one ever exceeds 64 bits), identifier strings
//! (`sn`, `mn`, `fr`, `subnqn`) are text with the space padding trimmed, `fguid` is a
//! UUID string, `eui64` and `nguid` are hex strings. nvme-cli omits `subnqn` when it
//! is empty, and prints `npwg` .. `nows` only when NSFEAT bit 4 says they are valid;
//! so does this.

use serde_json::{Map, Value};
use std::fmt::Write;

/// Bytes `o .. o + n` of `d` as a little-endian number (`n` <= 8).
fn le(d: &[u8], o: usize, n: usize) -> u64 {
    d[o..o + n]
        .iter()
        .rev()
        .fold(0u64, |acc, &b| acc << 8 | b as u64)
}

/// A 128-bit little-endian field: a number, or its decimal string beyond 64 bits.
fn le128(d: &[u8], o: usize) -> Value {
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[o..o + 16]);
    let v = u128::from_le_bytes(b);
    match u64::try_from(v) {
        Ok(small) => Value::from(small),
        Err(_) => Value::from(v.to_string()),
    }
}

/// An ASCII identifier field: up to the first NUL, trailing spaces trimmed.
fn text(d: &[u8]) -> String {
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).trim_end().to_string()
}

/// A 16-byte field as a UUID string (8-4-4-4-12 lower-case hex, bytes in order).
fn uuid(d: &[u8]) -> String {
    let mut s = String::new();
    for (i, b) in d.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `(key, offset, bytes)` of the Identify Controller fields nvme-cli prints as plain
/// numbers, in its order, from byte 0 to the end of `ocfs`. 16 bytes stands for a
/// 128-bit field; `fguid`, the strings and `subnqn` are placed by [`id_ctrl`].
const CTRL_FIELDS: &[(&str, usize, usize)] = &[
    ("vid", 0, 2),
    ("ssvid", 2, 2),
    ("sn", 4, 20),
    ("mn", 24, 40),
    ("fr", 64, 8),
    ("rab", 72, 1),
    ("ieee", 73, 3),
    ("cmic", 76, 1),
    ("mdts", 77, 1),
    ("cntlid", 78, 2),
    ("ver", 80, 4),
    ("rtd3r", 84, 4),
    ("rtd3e", 88, 4),
    ("oaes", 92, 4),
    ("ctratt", 96, 4),
    ("rrls", 100, 2),
    ("cntrltype", 111, 1),
    ("fguid", 112, 16),
    ("crdt1", 128, 2),
    ("crdt2", 130, 2),
    ("crdt3", 132, 2),
    ("nvmsr", 253, 1),
    ("vwci", 254, 1),
    ("mec", 255, 1),
    ("oacs", 256, 2),
    ("acl", 258, 1),
    ("aerl", 259, 1),
    ("frmw", 260, 1),
    ("lpa", 261, 1),
    ("elpe", 262, 1),
    ("npss", 263, 1),
    ("avscc", 264, 1),
    ("apsta", 265, 1),
    ("wctemp", 266, 2),
    ("cctemp", 268, 2),
    ("mtfa", 270, 2),
    ("hmpre", 272, 4),
    ("hmmin", 276, 4),
    ("tnvmcap", 280, 16),
    ("unvmcap", 296, 16),
    ("rpmbs", 312, 4),
    ("edstt", 316, 2),
    ("dsto", 318, 1),
    ("fwug", 319, 1),
    ("kas", 320, 2),
    ("hctma", 322, 2),
    ("mntmt", 324, 2),
    ("mxtmt", 326, 2),
    ("sanicap", 328, 4),
    ("hmminds", 332, 4),
    ("hmmaxd", 336, 2),
    ("nsetidmax", 338, 2),
    ("endgidmax", 340, 2),
    ("anatt", 342, 1),
    ("anacap", 343, 1),
    ("anagrpmax", 344, 4),
    ("nanagrpid", 348, 4),
    ("pels", 352, 4),
    ("domainid", 356, 2),
    ("megcap", 368, 16),
    ("sqes", 512, 1),
    ("cqes", 513, 1),
    ("maxcmd", 514, 2),
    ("nn", 516, 4),
    ("oncs", 520, 2),
    ("fuses", 522, 2),
    ("fna", 524, 1),
    ("vwc", 525, 1),
    ("awun", 526, 2),
    ("awupf", 528, 2),
    ("icsvscc", 530, 1),
    ("nwpc", 531, 1),
    ("acwu", 532, 2),
    ("ocfs", 534, 2),
    ("sgls", 536, 4),
    ("mnan", 540, 4),
    ("maxdna", 544, 16),
    ("maxcna", 560, 4),
    ("oaqd", 564, 4),
    ("subnqn", 768, 256),
    ("ioccsz", 1792, 4),
    ("iorcsz", 1796, 4),
    ("icdoff", 1800, 2),
    ("fcatt", 1802, 1),
    ("msdbd", 1803, 1),
    ("ofcs", 1804, 2),
];

/// Power state descriptors start here, 32 bytes each (section 5.17.2.1, figure 276).
const PSD_OFFSET: usize = 2048;

/// One power state descriptor under nvme-cli's keys.
fn psd(d: &[u8]) -> Value {
    let scale = |b: u8| (b >> 6 & 3) as u64;
    let mut m = Map::new();
    let mut put = |k: &str, v: u64| {
        m.insert(k.into(), Value::from(v));
    };
    put("max_power", le(d, 0, 2));
    put("max_power_scale", (d[3] & 1) as u64);
    put("non-operational_state", (d[3] >> 1 & 1) as u64);
    put("entry_lat", le(d, 4, 4));
    put("exit_lat", le(d, 8, 4));
    put("read_tput", d[12] as u64);
    put("read_lat", d[13] as u64);
    put("write_tput", d[14] as u64);
    put("write_lat", d[15] as u64);
    put("idle_power", le(d, 16, 2));
    put("idle_scale", scale(d[18]));
    put("active_power", le(d, 20, 2));
    put("active_power_work", (d[22] & 7) as u64);
    put("active_scale", scale(d[22]));
    Value::Object(m)
}

/// `nvme id-ctrl -o json` of a raw Identify Controller data structure (4096 bytes;
/// a shorter buffer is zero-extended, as the controller's reserved bytes are zero).
pub fn id_ctrl(raw: &[u8]) -> Value {
    let mut d = raw.to_vec();
    d.resize(d.len().max(4096), 0);
    let mut m = Map::new();
    for &(key, o, n) in CTRL_FIELDS {
        let v = match key {
            "sn" | "mn" | "fr" => Value::from(text(&d[o..o + n])),
            "subnqn" => {
                let nqn = text(&d[o..o + n]);
                if nqn.is_empty() {
                    continue;
                }
                Value::from(nqn)
            }
            "fguid" => Value::from(uuid(&d[o..o + n])),
            _ if n == 16 => le128(&d, o),
            _ => Value::from(le(&d, o, n)),
        };
        m.insert(key.into(), v);
    }
    // NPSS is zero based; 32 descriptors fit the structure.
    let count = (d[263] as usize + 1).min(32);
    let psds = (0..count)
        .map(|i| psd(&d[PSD_OFFSET + 32 * i..PSD_OFFSET + 32 * (i + 1)]))
        .collect();
    m.insert("psds".into(), Value::Array(psds));
    Value::Object(m)
}

/// `(key, offset, bytes)` of the Identify Namespace fields nvme-cli prints, in its
/// order; 16 bytes stands for `nvmcap`; `eui64`, `nguid` and `lbafs` follow them.
const NS_FIELDS: &[(&str, usize, usize)] = &[
    ("nsze", 0, 8),
    ("ncap", 8, 8),
    ("nuse", 16, 8),
    ("nsfeat", 24, 1),
    ("nlbaf", 25, 1),
    ("flbas", 26, 1),
    ("mc", 27, 1),
    ("dpc", 28, 1),
    ("dps", 29, 1),
    ("nmic", 30, 1),
    ("rescap", 31, 1),
    ("fpi", 32, 1),
    ("dlfeat", 33, 1),
    ("nawun", 34, 2),
    ("nawupf", 36, 2),
    ("nacwu", 38, 2),
    ("nabsn", 40, 2),
    ("nabo", 42, 2),
    ("nabspf", 44, 2),
    ("noiob", 46, 2),
    ("nvmcap", 48, 16),
    ("nsattr", 99, 1),
    ("nvmsetid", 100, 2),
    ("npwg", 64, 2),
    ("npwa", 66, 2),
    ("npdg", 68, 2),
    ("npda", 70, 2),
    ("nows", 72, 2),
    ("mssrl", 74, 2),
    ("mcl", 76, 4),
    ("msrc", 80, 1),
    ("nulbaf", 82, 1),
    ("anagrpid", 92, 4),
    ("endgid", 102, 2),
];

/// `nvme id-ns -o json` of a raw Identify Namespace data structure (4096 bytes, a
/// shorter buffer zero-extended). NLBAF is zero based; at most 64 formats exist.
pub fn id_ns(raw: &[u8]) -> Value {
    let mut d = raw.to_vec();
    d.resize(d.len().max(4096), 0);
    let optimal_io_valid = d[24] >> 4 & 1 == 1;
    let mut m = Map::new();
    for &(key, o, n) in NS_FIELDS {
        if matches!(key, "npwg" | "npwa" | "npdg" | "npda" | "nows") && !optimal_io_valid {
            continue;
        }
        let v = if n == 16 {
            le128(&d, o)
        } else {
            Value::from(le(&d, o, n))
        };
        m.insert(key.into(), v);
    }
    m.insert("eui64".into(), Value::from(crate::hex_bytes(&d[120..128])));
    m.insert("nguid".into(), Value::from(crate::hex_bytes(&d[104..120])));
    let count = (d[25] as usize + 1).min(64);
    let lbafs = (0..count)
        .map(|i| {
            let o = 128 + 4 * i;
            serde_json::json!({ "ms": le(&d, o, 2), "ds": d[o + 2], "rp": d[o + 3] })
        })
        .collect();
    m.insert("lbafs".into(), Value::Array(lbafs));
    Value::Object(m)
}

/// spdk_nvme_identify's `-x` dump: 16 bytes a line, an offset in hex, a `-` between
/// the two halves, then the printable ASCII (`.` for the rest).
pub fn hex_dump(data: &[u8]) -> String {
    let mut out = String::new();
    for (line, chunk) in data.chunks(16).enumerate() {
        let _ = write!(out, "{:08X}:", line * 16);
        for i in 0..16 {
            out.push(if i == 8 { '-' } else { ' ' });
            match chunk.get(i) {
                Some(b) => {
                    let _ = write!(out, "{b:02X}");
                }
                None => out.push_str("  "),
            }
        }
        out.push_str("  ");
        for &b in chunk {
            out.push(if b > 0x20 && b < 0x7f { b as char } else { '.' });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nvme-cli's `json_nvme_id_ctrl` keys, in its order (nvme-print-json.c).
    const ID_CTRL_KEYS: &[&str] = &[
        "vid",
        "ssvid",
        "sn",
        "mn",
        "fr",
        "rab",
        "ieee",
        "cmic",
        "mdts",
        "cntlid",
        "ver",
        "rtd3r",
        "rtd3e",
        "oaes",
        "ctratt",
        "rrls",
        "cntrltype",
        "fguid",
        "crdt1",
        "crdt2",
        "crdt3",
        "nvmsr",
        "vwci",
        "mec",
        "oacs",
        "acl",
        "aerl",
        "frmw",
        "lpa",
        "elpe",
        "npss",
        "avscc",
        "apsta",
        "wctemp",
        "cctemp",
        "mtfa",
        "hmpre",
        "hmmin",
        "tnvmcap",
        "unvmcap",
        "rpmbs",
        "edstt",
        "dsto",
        "fwug",
        "kas",
        "hctma",
        "mntmt",
        "mxtmt",
        "sanicap",
        "hmminds",
        "hmmaxd",
        "nsetidmax",
        "endgidmax",
        "anatt",
        "anacap",
        "anagrpmax",
        "nanagrpid",
        "pels",
        "domainid",
        "megcap",
        "sqes",
        "cqes",
        "maxcmd",
        "nn",
        "oncs",
        "fuses",
        "fna",
        "vwc",
        "awun",
        "awupf",
        "icsvscc",
        "nwpc",
        "acwu",
        "ocfs",
        "sgls",
        "mnan",
        "maxdna",
        "maxcna",
        "oaqd",
        "subnqn",
        "ioccsz",
        "iorcsz",
        "icdoff",
        "fcatt",
        "msdbd",
        "ofcs",
        "psds",
    ];

    /// nvme-cli's `json_nvme_id_ns` keys, in its order, NSFEAT bit 4 set.
    const ID_NS_KEYS: &[&str] = &[
        "nsze", "ncap", "nuse", "nsfeat", "nlbaf", "flbas", "mc", "dpc", "dps", "nmic", "rescap",
        "fpi", "dlfeat", "nawun", "nawupf", "nacwu", "nabsn", "nabo", "nabspf", "noiob", "nvmcap",
        "nsattr", "nvmsetid", "npwg", "npwa", "npdg", "npda", "nows", "mssrl", "mcl", "msrc",
        "nulbaf", "anagrpid", "endgid", "eui64", "nguid", "lbafs",
    ];

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn id_ctrl_has_nvme_clis_keys_offsets_and_types() {
        let mut d = vec![0u8; 4096];
        d[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        d[2..4].copy_from_slice(&0x1af4u16.to_le_bytes());
        d[4..24].copy_from_slice(b"SN42                ");
        d[24..64].fill(b' ');
        d[24..38].copy_from_slice(b"QEMU NVMe Ctrl");
        d[64..72].copy_from_slice(b"8.0.0   ");
        d[73..76].copy_from_slice(&[0x00, 0x54, 0x52]);
        d[77] = 7;
        d[80..84].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        d[112] = 0xab;
        d[256..258].copy_from_slice(&0x010au16.to_le_bytes());
        d[263] = 1; // two power states
        d[280] = 1; // tnvmcap 1
        d[280 + 8] = 1; // + 2^64: beyond u64
        d[342] = 10;
        d[512] = 0x66;
        d[516..520].copy_from_slice(&256u32.to_le_bytes());
        d[536..540].copy_from_slice(&0x0010_0001u32.to_le_bytes());
        d[768..783].copy_from_slice(b"nqn.2019-08.org");
        d[1804..1806].copy_from_slice(&3u16.to_le_bytes());
        let psd1 = PSD_OFFSET + 32;
        d[psd1..psd1 + 2].copy_from_slice(&2500u16.to_le_bytes());
        d[psd1 + 3] = 0b11;
        d[psd1 + 18] = 2 << 6;
        let v = id_ctrl(&d);
        assert_eq!(keys(&v), ID_CTRL_KEYS);
        assert_eq!(v["vid"], 0x1b36);
        assert_eq!(v["ssvid"], 0x1af4);
        assert_eq!(v["sn"], "SN42");
        assert_eq!(v["mn"], "QEMU NVMe Ctrl");
        assert_eq!(v["fr"], "8.0.0");
        assert_eq!(v["ieee"], 0x525400);
        assert_eq!(v["mdts"], 7);
        assert_eq!(v["ver"], 0x10400);
        assert_eq!(v["fguid"], "ab000000-0000-0000-0000-000000000000");
        assert_eq!(v["oacs"], 0x10a);
        assert_eq!(v["tnvmcap"], ((1u128 << 64) + 1).to_string());
        assert_eq!(v["unvmcap"], 0);
        assert_eq!(v["anatt"], 10);
        assert_eq!(v["sqes"], 0x66);
        assert_eq!(v["nn"], 256);
        assert_eq!(v["sgls"], 0x100001);
        assert_eq!(v["subnqn"], "nqn.2019-08.org");
        assert_eq!(v["ofcs"], 3);
        let psds = v["psds"].as_array().unwrap();
        assert_eq!(psds.len(), 2);
        assert_eq!(psds[1]["max_power"], 2500);
        assert_eq!(psds[1]["max_power_scale"], 1);
        assert_eq!(psds[1]["non-operational_state"], 1);
        assert_eq!(psds[1]["idle_scale"], 2);
        // nvme-cli leaves an empty subsystem NQN out.
        d[768..1024].fill(0);
        assert!(id_ctrl(&d).get("subnqn").is_none());
    }

    #[test]
    fn id_ns_has_nvme_clis_keys_offsets_and_types() {
        let mut d = vec![0u8; 4096];
        d[0..8].copy_from_slice(&65536u64.to_le_bytes());
        d[8..16].copy_from_slice(&65535u64.to_le_bytes());
        d[16..24].copy_from_slice(&4096u64.to_le_bytes());
        d[24] = 1 << 4;
        d[25] = 1;
        d[26] = 1;
        d[64..66].copy_from_slice(&8u16.to_le_bytes());
        d[82] = 5;
        d[92..96].copy_from_slice(&2u32.to_le_bytes());
        d[104] = 0x11;
        d[127] = 0xee;
        d[130] = 9;
        d[132..134].copy_from_slice(&8u16.to_le_bytes());
        d[134] = 12;
        d[135] = 2;
        let v = id_ns(&d);
        assert_eq!(keys(&v), ID_NS_KEYS);
        assert_eq!(v["nsze"], 65536);
        assert_eq!(v["ncap"], 65535);
        assert_eq!(v["nuse"], 4096);
        assert_eq!(v["flbas"], 1);
        assert_eq!(v["npwg"], 8);
        assert_eq!(v["nulbaf"], 5);
        assert_eq!(v["anagrpid"], 2);
        assert_eq!(v["nguid"], "11000000000000000000000000000000");
        assert_eq!(v["eui64"], "00000000000000ee");
        assert_eq!(
            v["lbafs"],
            serde_json::json!([{"ms": 0, "ds": 9, "rp": 0}, {"ms": 8, "ds": 12, "rp": 2}])
        );
        // Without NSFEAT bit 4 nvme-cli leaves out the optimal I/O fields.
        d[24] = 0;
        let v = id_ns(&d);
        for k in ["npwg", "npwa", "npdg", "npda", "nows"] {
            assert!(v.get(k).is_none(), "{k}");
        }
        assert_eq!(keys(&v).len(), ID_NS_KEYS.len() - 5);
    }

    #[test]
    fn hex_dump_is_spdks_layout() {
        let mut d: Vec<u8> = (0u8..20).collect();
        d[1] = b'A';
        let s = hex_dump(&d);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "00000000: 00 41 02 03 04 05 06 07-08 09 0A 0B 0C 0D 0E 0F  .A.............."
        );
        // SPDK prints the `-` even where the line has no ninth byte.
        let blank = |n: usize| " ".repeat(n);
        assert_eq!(
            lines[1],
            format!("00000010: 10 11 12 13{}-{}  ....", blank(12), blank(23))
        );
        assert_eq!(lines.len(), 2);
    }
}
