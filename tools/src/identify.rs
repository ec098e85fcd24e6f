//! nvme-identify: what spdk_nvme_identify and `nvme id-ctrl` / `id-ns` show, from
//! one gathering pass into JSON ([`describe`]) and a text rendering of that JSON
//! ([`render`]), so both outputs always say the same thing.

use crate::attach::Target;
use crate::trid::{parse_bdf, TransportId};
use crate::{hex_bytes, usage, UsageError};
use nvme_driver::spec::feature_id;
use nvme_driver::Controller;
use serde_json::{json, Value};
use std::fmt::Write;

/// One-line usage.
pub const USAGE: &str = "usage: nvme-identify [-r TRID]... [BDF]... [--json]";

/// The option list, for `--help`.
pub const HELP: &str = "\
  -r, --transport TRID  'trtype:PCIe traddr:0000:01:00.0 [ns:1]' (repeatable)
  BDF                   a PCI address, 0000:01:00.0 or 01:00.0 (same as -r traddr:BDF)
                        default: every NVMe controller bound to vfio-pci
      --json            print one JSON document
  -h, --help            this text
";

/// nvme-identify's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyOptions {
    /// Controllers (and namespaces) to show; empty: every vfio-bound controller.
    pub trids: Vec<TransportId>,
    /// JSON output.
    pub json: bool,
}

/// Parses nvme-identify's arguments; `Ok(None)` asks for help.
pub fn parse_args<I, S>(args: I) -> Result<Option<IdentifyOptions>, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut o = IdentifyOptions {
        trids: Vec::new(),
        json: false,
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        i += 1;
        match a {
            "-h" | "--help" => return Ok(None),
            "--json" => o.json = true,
            "-r" | "--transport" => {
                let v = args
                    .get(i)
                    .ok_or_else(|| usage!("{a} needs a transport ID"))?;
                i += 1;
                o.trids.push(TransportId::parse(v)?);
            }
            _ if a.starts_with("--transport=") => o
                .trids
                .push(TransportId::parse(&a["--transport=".len()..])?),
            _ if a.starts_with("-r") && a.len() > 2 => o.trids.push(TransportId::parse(&a[2..])?),
            _ if a.starts_with('-') => return Err(usage!("unknown option {a}")),
            _ => {
                let traddr = parse_bdf(a).ok_or_else(|| {
                    usage!("'{a}' is not a PCI address; give DDDD:BB:DD.F like 0000:01:00.0")
                })?;
                o.trids.push(TransportId { traddr, nsid: None });
            }
        }
    }
    Ok(Some(o))
}

/// Optional admin commands, by OACS bit.
const OACS_NAMES: &[(u32, &str)] = &[
    (0, "security send/receive"),
    (1, "format NVM"),
    (2, "firmware download/commit"),
    (3, "namespace management"),
    (4, "device self-test"),
    (5, "directives"),
    (6, "NVMe-MI send/receive"),
    (7, "virtualization management"),
    (8, "doorbell buffer config"),
    (9, "get LBA status"),
];

/// Optional NVM commands and features, by ONCS bit.
const ONCS_NAMES: &[(u32, &str)] = &[
    (0, "compare"),
    (1, "write uncorrectable"),
    (2, "dataset management"),
    (3, "write zeroes"),
    (4, "save/select in features"),
    (5, "reservations"),
    (6, "timestamp"),
    (7, "verify"),
    (8, "copy"),
];

/// The names in `table` whose bit is set in `bits`, in table order.
fn bit_names(bits: u16, table: &[(u32, &'static str)]) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(b, _)| bits >> b & 1 == 1)
        .map(|(_, n)| *n)
        .collect()
}

/// What an optional piece the controller refused shows instead.
fn err_json(e: impl std::fmt::Display) -> Value {
    json!({ "error": e.to_string() })
}

/// Gathers everything about one controller and its selected namespaces. Optional
/// pieces (features, logs) that the controller refuses appear as `{"error": ...}`.
pub fn describe(t: &Target) -> Value {
    let c: &Controller = &t.ctrl;
    let id = c.identify();
    let cap = c.cap();
    let vs = c.version();
    let feature = |fid: u8| c.get_feature(fid, 0).map_err(err_json);
    let queues = match feature(feature_id::NUMBER_OF_QUEUES) {
        Ok(v) => json!({ "sq": (v & 0xffff) + 1, "cq": (v >> 16) + 1 }),
        Err(e) => e,
    };
    let vwc = if id.vwc & 1 == 1 {
        match feature(feature_id::VOLATILE_WRITE_CACHE) {
            Ok(v) => json!({ "present": true, "enabled": v & 1 == 1 }),
            Err(e) => e,
        }
    } else {
        json!({ "present": false })
    };
    let arbitration = match feature(feature_id::ARBITRATION) {
        Ok(v) => json!({
            "burst": if v & 7 == 7 { Value::from("unlimited") } else { Value::from(1u32 << (v & 7)) },
            "low_priority_weight": (v >> 8 & 0xff) + 1,
            "medium_priority_weight": (v >> 16 & 0xff) + 1,
            "high_priority_weight": (v >> 24 & 0xff) + 1,
        }),
        Err(e) => e,
    };
    let temp_threshold = match feature(feature_id::TEMPERATURE_THRESHOLD) {
        Ok(v) => json!({ "kelvin": v & 0xffff, "celsius": (v & 0xffff) as i64 - 273 }),
        Err(e) => e,
    };
    let health = match c.smart_log() {
        Ok(s) => json!({
            "critical_warning": s.critical_warning,
            "temperature_celsius": s.temperature_k as i64 - 273,
            "available_spare_percent": s.available_spare,
            "available_spare_threshold_percent": s.available_spare_threshold,
            "percentage_used": s.percentage_used,
            "data_units_read": s.data_units_read.to_string(),
            "data_units_written": s.data_units_written.to_string(),
            "host_read_commands": s.host_read_commands.to_string(),
            "host_write_commands": s.host_write_commands.to_string(),
            "controller_busy_minutes": s.controller_busy_time.to_string(),
            "power_cycles": s.power_cycles.to_string(),
            "power_on_hours": s.power_on_hours.to_string(),
            "unsafe_shutdowns": s.unsafe_shutdowns.to_string(),
            "media_errors": s.media_errors.to_string(),
            "error_log_entries": s.num_err_log_entries.to_string(),
        }),
        Err(e) => err_json(e),
    };
    let errors = match c.error_log() {
        Ok(list) => {
            let used: Vec<_> = list.iter().filter(|e| e.error_count != 0).collect();
            let latest = used.iter().max_by_key(|e| e.error_count).map(|e| {
                json!({
                    "error_count": e.error_count, "sqid": e.sqid, "cid": e.cid,
                    "status": e.status.to_string(), "lba": e.lba, "nsid": e.nsid,
                })
            });
            json!({ "entries_read": list.len(), "entries_used": used.len(), "latest": latest })
        }
        Err(e) => err_json(e),
    };
    let ana = if id.ana_supported() {
        match c.ana_log() {
            Some(log) => json!({
                "supported": true,
                "transition_time_s": id.anatt,
                "change_count": log.change_count,
                "groups": log.groups.iter().map(|g| json!({
                    "grpid": g.grpid,
                    "state": format!("{:?}", g.state),
                    "nsids": g.nsids,
                })).collect::<Vec<_>>(),
            }),
            None => json!({ "supported": true, "error": "no ANA log read" }),
        }
    } else {
        json!({ "supported": false })
    };
    let namespaces: Vec<Value> = t
        .nsids
        .iter()
        .filter_map(|&nsid| c.namespace(nsid).ok())
        .map(|n| {
            let cur = (n.id.flbas & 0xf) as usize;
            json!({
                "nsid": n.nsid,
                "size_blocks": n.nsze,
                "capacity_blocks": n.id.ncap,
                "utilization_blocks": n.id.nuse,
                "block_size": n.block_size,
                "size_bytes": n.nsze * n.block_size as u64,
                "formats": n.id.lbaf.iter().enumerate().map(|(i, f)| json!({
                    "index": i,
                    "data_size": if f.lbads >= 9 && f.lbads < 32 { 1u64 << f.lbads } else { 0 },
                    "metadata_size": f.ms,
                    "relative_performance": f.rp,
                    "in_use": i == cur,
                })).collect::<Vec<_>>(),
                "nguid": n.nguid().map(|g| hex_bytes(&g)),
                "eui64": n.eui64().map(|g| hex_bytes(&g)),
                "uuid": n.ids.uuid.filter(|u| u.iter().any(|&b| b != 0)).map(|u| hex_bytes(&u)),
                "shared": n.id.nmic & 1 == 1,
                "anagrpid": n.id.anagrpid,
            })
        })
        .collect();
    json!({
        "pci_address": c.name(),
        "identity": {
            "vid": format!("{:#06x}", id.vid),
            "ssvid": format!("{:#06x}", id.ssvid),
            "serial": id.sn,
            "model": id.mn,
            "firmware": id.fr,
            "subnqn": id.subnqn,
            "cntlid": id.cntlid,
            "ieee_oui": format!("{:06x}", id.ieee),
            "version": format!("{}.{}.{}", vs.major(), vs.minor(), vs.tertiary()),
            "multipath_capable": id.cmic & 1 == 1 || id.cmic >> 1 & 1 == 1,
        },
        "capabilities": {
            "cap": format!("{:#018x}", cap.0),
            "mqes_entries": cap.mqes_entries(),
            "contiguous_queues_required": cap.cqr(),
            "timeout_ms": cap.timeout_ms(),
            "doorbell_stride_bytes": 4u32 << cap.dstrd(),
            "nvm_subsystem_reset": cap.nssrs(),
            "mpsmin_bytes": 1u64 << cap.mpsmin_shift(),
            "mpsmax_bytes": 1u64 << cap.mpsmax_shift(),
        },
        "queues": {
            "io_queues_granted": c.io_queues(),
            "number_of_queues_feature": queues,
            "mdts": id.mdts,
            "max_transfer_bytes": c.max_transfer_bytes(),
            "max_outstanding_commands": id.maxcmd,
            "sqes": format!("{}..{}", 1u32 << (id.sqes & 0xf), 1u32 << (id.sqes >> 4)),
            "cqes": format!("{}..{}", 1u32 << (id.cqes & 0xf), 1u32 << (id.cqes >> 4)),
            "async_event_request_limit": id.aerl as u32 + 1,
            "abort_command_limit": id.acl as u32 + 1,
        },
        "admin_commands": bit_names(id.oacs, OACS_NAMES),
        "nvm_commands": bit_names(id.oncs, ONCS_NAMES),
        "features": {
            "volatile_write_cache": vwc,
            "arbitration": arbitration,
            "temperature_threshold": temp_threshold,
        },
        "namespace_count": id.nn,
        "health": health,
        "error_log": errors,
        "ana": ana,
        "namespaces": namespaces,
    })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
            if a.is_empty() {
                "none".into()
            } else {
                a.iter().map(scalar).collect::<Vec<_>>().join(", ")
            }
        }
        other => other.to_string(),
    }
}

fn label(key: &str) -> String {
    let mut s = key.replace('_', " ");
    if let Some(f) = s.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    s
}

fn render_object(out: &mut String, v: &Value, indent: usize) {
    let Value::Object(map) = v else {
        return;
    };
    for (k, val) in map {
        match val {
            Value::Object(_) => {
                let _ = writeln!(out, "{:indent$}{}:", "", label(k));
                render_object(out, val, indent + 2);
            }
            Value::Array(a) if a.iter().any(|x| x.is_object()) => {
                let _ = writeln!(out, "{:indent$}{}:", "", label(k));
                for item in a {
                    let line: Vec<String> = item
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k} {}", scalar(v)))
                                .collect()
                        })
                        .unwrap_or_default();
                    let _ = writeln!(out, "{:w$}- {}", "", line.join(", "), w = indent + 2);
                }
            }
            _ => {
                let w = 34usize.saturating_sub(indent);
                let _ = writeln!(
                    out,
                    "{:indent$}{:<w$} {}",
                    "",
                    format!("{}:", label(k)),
                    scalar(val)
                );
            }
        }
    }
}

/// The text form of [`describe`]'s output, in spdk_nvme_identify's spirit: a
/// section per topic, one `Name: value` line per field.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let rule = "=".repeat(60);
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "NVMe Controller at {}",
        v["pci_address"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "{rule}");
    if let Value::Object(map) = v {
        for (k, val) in map {
            if k == "pci_address" || k == "namespaces" {
                continue;
            }
            match val {
                Value::Object(_) => {
                    let _ = writeln!(out, "\n{}", label(k));
                    let _ = writeln!(out, "{}", "-".repeat(label(k).len()));
                    render_object(&mut out, val, 0);
                }
                _ => {
                    let _ = writeln!(out, "\n{:<34} {}", format!("{}:", label(k)), scalar(val));
                }
            }
        }
    }
    for ns in v["namespaces"].as_array().into_iter().flatten() {
        let head = format!("Namespace ID {}", ns["nsid"]);
        let _ = writeln!(out, "\n{head}\n{}", "-".repeat(head.len()));
        let mut ns = ns.clone();
        if let Some(m) = ns.as_object_mut() {
            m.shift_remove("nsid");
        }
        render_object(&mut out, &ns, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::select;
    use nvme_driver::softctrl::{SoftConfig, SoftController};
    use nvme_driver::ControllerOptions;

    #[test]
    fn arguments() {
        let o = parse_args([
            "01:00.0",
            "-r",
            "trtype:PCIe traddr:0000:02:00.0 ns:1",
            "--json",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.trids.len(), 2);
        assert_eq!(o.trids[0].traddr, "0000:01:00.0");
        assert!(o.json);
        assert_eq!(parse_args(["--help"]).unwrap(), None);
        assert!(parse_args(["xyz"])
            .unwrap_err()
            .0
            .contains("'xyz' is not a PCI address"));
        assert!(parse_args(["-r"])
            .unwrap_err()
            .0
            .contains("-r needs a transport ID"));
        assert!(parse_args(["-q"])
            .unwrap_err()
            .0
            .contains("unknown option -q"));
        assert!(parse_args(["-r", "trtype:PCIe"])
            .unwrap_err()
            .0
            .contains("traddr is missing"));
    }

    #[test]
    fn describes_the_software_controller() {
        let sc = SoftController::start(SoftConfig::default());
        let ctrl = Controller::init(sc.clone(), ControllerOptions::default()).unwrap();
        let t = select(ctrl, None).unwrap();
        let v = describe(&t);
        assert_eq!(v["identity"]["serial"], "SOFT0001");
        assert_eq!(v["capabilities"]["mqes_entries"], 1024);
        assert_eq!(v["queues"]["max_transfer_bytes"], 128 << 10);
        assert_eq!(v["namespaces"][0]["block_size"], 512);
        assert_eq!(v["namespaces"][0]["size_bytes"], 1u64 << 30);
        assert!(
            v["health"]["temperature_celsius"].is_i64(),
            "{}",
            v["health"]
        );
        let text = render(&v);
        assert!(text.contains("NVMe Controller at softnvme0"));
        assert!(text.contains("Serial:"), "{text}");
        assert!(
            text.contains("\nMqes entries:                      1024\n"),
            "{text}"
        );
        assert!(text.contains("Namespace ID 1"));
        assert!(text.contains("- index 0, data_size 512"), "{text}");
        t.ctrl.shutdown().unwrap();
        sc.stop();
    }
}
