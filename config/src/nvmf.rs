// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The `nvmf` subsystem of SPDK's JSON config (what `nvmf_tgt` reads and `rpc.py
//! save_config` writes for it): the NVMe-oF transport, subsystems, their namespaces,
//! listeners and hosts, for `nvme-target`. Methods and parameters are SPDK
//! v23.01.1's; what the target cannot honour is refused by name.

use crate::params::Params;
use crate::Error;
use serde_json::{Map, Value};

/// What the `nvmf` subsystem of a config asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NvmfConfig {
    /// `nvmf_create_transport`: the transports (only TCP is taken).
    pub transports: Vec<NvmfTransport>,
    /// `nvmf_create_subsystem` and what was added to each, in the config's order.
    pub subsystems: Vec<NvmfSubsystem>,
}

/// One `nvmf_create_transport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmfTransport {
    /// `trtype`, upper case (`TCP`).
    pub trtype: String,
    /// `c2h_success`: a read's last C2HData may carry the SUCCESS flag (and no
    /// response capsule follows) when the host disabled SQ flow control. SPDK's
    /// default: true.
    pub c2h_success: bool,
}

/// One `nvmf_create_subsystem`, with its namespaces, listeners and hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmfSubsystem {
    /// `nqn`.
    pub nqn: String,
    /// `allow_any_host`: any host NQN may connect (else only `hosts`).
    pub allow_any_host: bool,
    /// `serial_number` (SPDK's default `00000000000000000000`).
    pub serial_number: String,
    /// `model_number` (SPDK's default `SPDK bdev Controller`).
    pub model_number: String,
    /// `nvmf_subsystem_add_ns`.
    pub namespaces: Vec<NvmfNamespace>,
    /// `nvmf_subsystem_add_listener`.
    pub listeners: Vec<NvmfListener>,
    /// `nvmf_subsystem_add_host`: host NQNs allowed to connect.
    pub hosts: Vec<String>,
}

/// One `nvmf_subsystem_add_ns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmfNamespace {
    /// `bdev_name` (SPDK's name, e.g. `Nvme0n1`).
    pub bdev_name: String,
    /// `nsid`; `None`: the lowest free one.
    pub nsid: Option<u32>,
    /// `nguid` (32 hex digits); `None`: the bdev's own, if it has one.
    pub nguid: Option<[u8; 16]>,
    /// `uuid`; `None`: the bdev's own, if it has one.
    pub uuid: Option<[u8; 16]>,
}

/// One `nvmf_subsystem_add_listener`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmfListener {
    /// `listen_address.traddr` (an IPv4 address).
    pub traddr: String,
    /// `listen_address.trsvcid`, the TCP port.
    pub trsvcid: u16,
}

/// The `nvmf` methods read here.
pub(crate) const NVMF_METHODS: &str = "nvmf_set_config, nvmf_set_max_subsystems, nvmf_set_crdt, \
    nvmf_create_transport, nvmf_create_subsystem, nvmf_subsystem_add_ns, \
    nvmf_subsystem_add_listener and nvmf_subsystem_add_host";

impl NvmfConfig {
    /// Takes one entry of the `nvmf` subsystem.
    pub(crate) fn entry(&mut self, p: &Params, notes: &mut Vec<String>) -> Result<(), Error> {
        match p.method {
            "nvmf_set_config" | "nvmf_set_max_subsystems" | "nvmf_set_crdt" => {
                notes.push(format!(
                    "{}: {} ignored: the target's global limits are fixed (nvme-target's README)",
                    p.path(),
                    p.method
                ));
                Ok(())
            }
            "nvmf_create_transport" => self.transport(p, notes),
            "nvmf_create_subsystem" => self.subsystem(p),
            "nvmf_subsystem_add_ns" => self.namespace(p),
            "nvmf_subsystem_add_listener" => self.listener(p),
            "nvmf_subsystem_add_host" => self.host(p),
            _ => Err(p.refuse(format!(
                "not implemented by nvme-target; the nvmf methods read here are {NVMF_METHODS}"
            ))),
        }
    }

    fn transport(&mut self, p: &Params, notes: &mut Vec<String>) -> Result<(), Error> {
        let trtype = p.required("trtype")?.to_ascii_uppercase();
        if trtype != "TCP" {
            return Err(p.err(
                "trtype",
                format!(
                    "'{trtype}' is not implemented; nvme-target serves NVMe/TCP only (trtype TCP)"
                ),
            ));
        }
        if self.transports.iter().any(|t| t.trtype == trtype) {
            return Err(p.err("trtype", "a TCP transport was already created"));
        }
        let c2h_success = p.bool("c2h_success")?.unwrap_or(true);
        // SPDK's sizing knobs: the target sizes its per-connection buffers itself
        // (queue depth, in-capsule size, largest transfer; README), so any value is
        // taken and named in a note.
        const SIZING: &[&str] = &[
            "max_queue_depth",
            "max_io_qpairs_per_ctrlr",
            "in_capsule_data_size",
            "max_io_size",
            "io_unit_size",
            "max_aq_depth",
            "num_shared_buffers",
            "buf_cache_size",
            "sock_priority",
            "abort_timeout_sec",
            "ack_timeout",
            "data_wr_pool_size",
        ];
        let mut known = vec!["trtype", "c2h_success"];
        known.extend_from_slice(SIZING);
        p.check_rest(
            &known,
            &[
                (
                    "dif_insert_or_strip",
                    Value::Bool(false),
                    "the target has no protection information",
                ),
                (
                    "zcopy",
                    Value::Bool(false),
                    "the target has no zero-copy path",
                ),
            ],
        )?;
        let given: Vec<&str> = SIZING
            .iter()
            .copied()
            .filter(|k| p.value(k).is_some())
            .collect();
        if !given.is_empty() {
            notes.push(format!(
                "{}: nvmf_create_transport: {} ignored: the target sizes each connection's buffers itself",
                p.path(),
                given.join(", ")
            ));
        }
        self.transports.push(NvmfTransport {
            trtype,
            c2h_success,
        });
        Ok(())
    }

    fn subsystem(&mut self, p: &Params) -> Result<(), Error> {
        let nqn = p.required("nqn")?;
        if nqn.is_empty() || nqn.len() > 223 {
            return Err(p.err("nqn", "an NQN is 1 to 223 bytes"));
        }
        if self.subsystems.iter().any(|s| s.nqn == nqn) {
            return Err(p.err("nqn", format!("subsystem {nqn} already exists")));
        }
        let text = |key: &str, default: &str, max: usize| -> Result<String, Error> {
            let v = p.str(key)?.unwrap_or(default);
            if v.len() > max || !v.is_ascii() {
                return Err(p.err(key, format!("'{v}' is not ASCII of at most {max} bytes")));
            }
            Ok(v.to_string())
        };
        let sub = NvmfSubsystem {
            nqn: nqn.to_string(),
            allow_any_host: p.bool("allow_any_host")?.unwrap_or(false),
            serial_number: text("serial_number", "00000000000000000000", 20)?,
            model_number: text("model_number", "SPDK bdev Controller", 40)?,
            namespaces: Vec::new(),
            listeners: Vec::new(),
            hosts: Vec::new(),
        };
        p.check_rest(
            &[
                "nqn",
                "allow_any_host",
                "serial_number",
                "model_number",
                "max_namespaces",
                "min_cntlid",
                "max_cntlid",
            ],
            &[(
                "ana_reporting",
                Value::Bool(false),
                "ANA reporting is a later item of nvme-target",
            )],
        )?;
        self.subsystems.push(sub);
        Ok(())
    }

    fn find(&mut self, p: &Params) -> Result<&mut NvmfSubsystem, Error> {
        let nqn = p.required("nqn")?;
        self.subsystems
            .iter_mut()
            .find(|s| s.nqn == nqn)
            .ok_or_else(|| {
                p.err(
                    "nqn",
                    format!("no subsystem {nqn}: create it first (nvmf_create_subsystem)"),
                )
            })
    }

    fn namespace(&mut self, p: &Params) -> Result<(), Error> {
        let ns = object(p, "namespace")?;
        let bdev_name = match ns.get("bdev_name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(p.err("namespace.bdev_name", "missing (it is required)")),
        };
        let nsid = match ns.get("nsid") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..0xffff_ffff).contains(&n) => Some(n as u32),
                _ => return Err(p.err("namespace.nsid", format!("{v} is not a namespace ID"))),
            },
        };
        let id = |key: &str| -> Result<Option<[u8; 16]>, Error> {
            match ns.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => hex16(s).map(Some).ok_or_else(|| {
                    p.err(
                        &format!("namespace.{key}"),
                        format!("'{s}' is not 32 hex digits (dashes allowed)"),
                    )
                }),
                Some(v) => Err(p.err(&format!("namespace.{key}"), format!("{v} is not a string"))),
            }
        };
        let (nguid, uuid) = (id("nguid")?, id("uuid")?);
        for k in ns.keys() {
            if ![
                "bdev_name",
                "nsid",
                "nguid",
                "uuid",
                "ptpl_file",
                "anagrpid",
                "eui64",
            ]
            .contains(&k.as_str())
            {
                return Err(p.err(&format!("namespace.{k}"), "not read here; remove it"));
            }
        }
        for k in ["eui64", "ptpl_file", "anagrpid"] {
            if ns.get(k).is_some_and(|v| !v.is_null()) {
                return Err(p.err(
                    &format!("namespace.{k}"),
                    "not implemented by nvme-target; remove it",
                ));
            }
        }
        p.check_rest(&["nqn", "namespace"], &[])?;
        let sub = self.find(p)?;
        if let Some(n) = nsid {
            if sub.namespaces.iter().any(|x| x.nsid == Some(n)) {
                return Err(p.err("namespace.nsid", format!("namespace {n} already exists")));
            }
        }
        sub.namespaces.push(NvmfNamespace {
            bdev_name,
            nsid,
            nguid,
            uuid,
        });
        Ok(())
    }

    fn listener(&mut self, p: &Params) -> Result<(), Error> {
        let la = object(p, "listen_address")?;
        let field = |key: &str| -> Result<&str, Error> {
            la.get(key).and_then(Value::as_str).ok_or_else(|| {
                p.err(
                    &format!("listen_address.{key}"),
                    "missing or not a string (it is required)",
                )
            })
        };
        let trtype = field("trtype")?;
        if !trtype.eq_ignore_ascii_case("tcp") {
            return Err(p.err(
                "listen_address.trtype",
                format!("'{trtype}' is not implemented; give TCP"),
            ));
        }
        if let Some(a) = la.get("adrfam").and_then(Value::as_str) {
            if !a.eq_ignore_ascii_case("ipv4") {
                return Err(p.err(
                    "listen_address.adrfam",
                    format!("'{a}' is not implemented; give IPv4"),
                ));
            }
        }
        let traddr = field("traddr")?;
        if traddr.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(p.err(
                "listen_address.traddr",
                format!("'{traddr}' is not an IPv4 address"),
            ));
        }
        let raw = field("trsvcid")?;
        let trsvcid = raw.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
            p.err(
                "listen_address.trsvcid",
                format!("'{raw}' is not a TCP port"),
            )
        })?;
        p.check_rest(
            &["nqn", "listen_address"],
            &[(
                "secure_channel",
                Value::Bool(false),
                "TLS is not implemented",
            )],
        )?;
        let sub = self.find(p)?;
        sub.listeners.push(NvmfListener {
            traddr: traddr.to_string(),
            trsvcid,
        });
        Ok(())
    }

    fn host(&mut self, p: &Params) -> Result<(), Error> {
        let host = p.required("host")?.to_string();
        for k in ["psk", "dhchap_key", "dhchap_ctrlr_key"] {
            if p.str(k)?.is_some() {
                return Err(p.err(
                    k,
                    "not implemented: nvme-target has no TLS or DH-HMAC-CHAP yet; remove it",
                ));
            }
        }
        p.check_rest(&["nqn", "host"], &[])?;
        let sub = self.find(p)?;
        if !sub.hosts.contains(&host) {
            sub.hosts.push(host);
        }
        Ok(())
    }
}

fn object<'a>(p: &Params<'a>, key: &str) -> Result<&'a Map<String, Value>, Error> {
    match p.value(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(v) => Err(p.err(key, format!("{v} is not an object"))),
        None => Err(p.err(key, "missing (it is required)")),
    }
}

/// 16 bytes from 32 hex digits, dashes ignored (a UUID or an NGUID as SPDK writes them).
fn hex16(s: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi << 4 | lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::parse_target;
    use serde_json::{json, Value};

    fn fixture() -> String {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/spdk-v23.01.1/multi-nvmf-tcp.json"
        );
        std::fs::read_to_string(p).expect("the fixture SPDK wrote")
    }

    #[test]
    fn the_config_spdk_saved_is_read_whole() {
        let c = parse_target(&fixture(), "multi-nvmf-tcp.json").unwrap();
        assert_eq!(c.nvmf.transports.len(), 1);
        assert!(c.nvmf.transports[0].c2h_success);
        let s = &c.nvmf.subsystems[0];
        assert_eq!(s.nqn, "nqn.2016-06.io.spdk:cnode1");
        assert!(!s.allow_any_host);
        assert_eq!(s.serial_number, "SPDK00000000000001");
        assert_eq!(s.model_number, "SPDK bdev Controller");
        assert_eq!(s.hosts.len(), 1);
        assert_eq!(s.namespaces[0].bdev_name, "Nvme0n1");
        assert_eq!(s.namespaces[0].nsid, Some(1));
        assert_eq!(s.listeners[0].traddr, "127.0.0.1");
        assert_eq!(s.listeners[0].trsvcid, 4420);
        assert!(
            c.bdev
                .notes
                .iter()
                .all(|n| !n.contains("subsystem 'nvmf' ignored")),
            "the target reads nvmf: {:?}",
            c.bdev.notes
        );
    }

    /// The fixture's `nvmf` entry of `method` changed by `edit` must be refused with
    /// `want` in the message.
    fn refused(method: &str, edit: impl Fn(&mut Value), want: &str) {
        let mut v: Value = serde_json::from_str(&fixture()).unwrap();
        let subs = v["subsystems"].as_array_mut().unwrap();
        let nvmf = subs.iter_mut().find(|s| s["subsystem"] == "nvmf").unwrap();
        let entry = nvmf["config"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["method"] == method)
            .unwrap_or_else(|| panic!("no {method} in the fixture"));
        edit(entry);
        let e = parse_target(&v.to_string(), "x.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{want:?} not in: {e}");
    }

    #[test]
    fn what_the_target_cannot_honour_is_refused_by_name() {
        refused(
            "nvmf_set_crdt",
            |e| e["method"] = json!("nvmf_subsystem_listener_set_ana_state"),
            "method 'nvmf_subsystem_listener_set_ana_state': not implemented by nvme-target",
        );
        refused(
            "nvmf_create_transport",
            |e| e["params"]["trtype"] = json!("RDMA"),
            "nvmf_create_transport parameter 'trtype': 'RDMA' is not implemented",
        );
        refused(
            "nvmf_subsystem_add_listener",
            |e| e["params"]["listen_address"]["trsvcid"] = json!("http"),
            "parameter 'listen_address.trsvcid': 'http' is not a TCP port",
        );
        refused(
            "nvmf_create_subsystem",
            |e| e["params"]["ana_reporting"] = json!(true),
            "parameter 'ana_reporting'",
        );
        refused(
            "nvmf_subsystem_add_ns",
            |e| e["params"]["namespace"]["nguid"] = json!("12"),
            "parameter 'namespace.nguid': '12' is not 32 hex digits",
        );
        refused(
            "nvmf_subsystem_add_ns",
            |e| e["params"]["nqn"] = json!("nqn.nobody"),
            "no subsystem nqn.nobody",
        );
        refused(
            "nvmf_subsystem_add_host",
            |e| e["params"]["dhchap_key"] = json!("key0"),
            "parameter 'dhchap_key': not implemented",
        );
    }
}
