// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Controllers that come back and controllers that arrive: QMP `device_add` of an
//! unplugged controller on its root port (bound to vfio-pci by hand with
//! `nvme-setup bind`, or by the kernel after `nvme-setup keep-vfio on`), and of a new
//! controller of the same subsystem on the spare root port `rp2` (0000:03:00.0).

use super::{wait_for, R};
use nvme_bdev::NvmeQueue;
use nvme_bdev::{BlockLayer, Multipath};
use std::time::{Duration, Instant};

/// Where the new controller of `--add` sits: the `mpath` topology's spare root port.
pub const ADDED_PORT: &str = "rp2";
/// Its PCI address.
pub const ADDED: &str = "0000:03:00.0";

/// Sends `device_add` for controller `id` on `port` until `bdf` appears (QEMU frees an
/// unplugged controller's id only once the old device is finalized; a device_add
/// sent before then is refused, and qemu/run logs the refusal). Returns the time from
/// the first device_add.
fn device_add(id: &str, port: &str, bdf: &str) -> R<Instant> {
    let add = e2e::qmp_line(&format!(
        r#"{{"execute":"device_add","arguments":{{"driver":"nvme","id":"{id}","bus":"{port}","serial":"mpath0","subsys":"subsys0"}}}}"#
    ));
    let dev = format!("/sys/bus/pci/devices/{bdf}");
    let t = Instant::now();
    for _ in 0..5 {
        println!("{add}");
        if wait_for("the device to appear", Duration::from_secs(5), || {
            std::path::Path::new(&dev).exists()
        })
        .is_ok()
        {
            return Ok(t);
        }
    }
    Err(format!("{bdf} did not appear within 25 s of device_add"))
}

/// Runs `nvme-setup ARGS`, which must succeed; returns what it printed.
pub fn nvme_setup(args: &[&str]) -> R<String> {
    let out = std::process::Command::new("nvme-setup")
        .args(args)
        .output()
        .map_err(|e| format!("running nvme-setup {}: {e}", args.join(" ")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("nvme-setup {} failed: {text}", args.join(" ")));
    }
    Ok(text)
}

/// The driver bound to `bdf`, if any.
fn driver_of(bdf: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Plugs controller `id` (QOM id) back on its root port with the arguments qemu/run's
/// `mpath` topology gave it and waits until the block layer has reconnected it and its
/// path is usable again. With `by_hand`, `nvme-setup bind` moves it to vfio-pci;
/// without, the kernel must have bound it (`keep-vfio on`) and the layer's hot-plug
/// scan noticed it.
pub fn plug_back(
    tag: &str,
    layer: &BlockLayer,
    mp: &Multipath<NvmeQueue>,
    id: &str,
    bdf: &str,
    by_hand: bool,
) -> R<()> {
    let (_, reconnects_before) = layer
        .controller_counts(bdf)
        .ok_or_else(|| format!("{bdf} is no longer known to the block layer"))?;
    let port = if id == "c0" { "rp0" } else { "rp1" };
    let t = device_add(id, port, bdf)?;
    println!(
        "{tag}: replug: {bdf} on the PCI bus {} ms after device_add",
        t.elapsed().as_millis()
    );
    if by_hand {
        nvme_setup(&["bind", bdf])?;
    } else {
        wait_for(
            &format!("the kernel to bind {bdf} to vfio-pci (keep-vfio on)"),
            Duration::from_secs(10),
            || driver_of(bdf).as_deref() == Some("vfio-pci"),
        )?;
        println!(
            "{tag}: replug: {bdf} bound to vfio-pci by the kernel {} ms after device_add",
            t.elapsed().as_millis()
        );
    }
    wait_for(
        &format!("the block layer to reconnect {bdf}"),
        Duration::from_secs(30),
        || {
            layer
                .controller_counts(bdf)
                .is_some_and(|c| c.1 > reconnects_before)
                && mp.paths().iter().any(|p| p.name == bdf && p.state.usable())
        },
    )?;
    println!(
        "{tag}: replug: path {bdf} usable again {} ms after device_add (reconnected)",
        t.elapsed().as_millis()
    );
    Ok(())
}

/// Adds a new controller `id` of the subsystem on the spare root port and waits until
/// the layer's hot-plug has attached it and its path in `mp` is usable.
pub fn add_new(tag: &str, mp: &Multipath<NvmeQueue>, id: &str) -> R<()> {
    let t = device_add(id, ADDED_PORT, ADDED)?;
    println!(
        "{tag}: hot-add: {ADDED} on the PCI bus {} ms after device_add",
        t.elapsed().as_millis()
    );
    wait_for(
        &format!("{ADDED} to join {}", mp.info().name),
        Duration::from_secs(30),
        || {
            mp.paths()
                .iter()
                .any(|p| p.name == ADDED && p.state.usable())
        },
    )
    .map_err(|e| format!("{e} (driver: {:?})", driver_of(ADDED)))?;
    println!(
        "{tag}: hot-add: path {ADDED} joined {} {} ms after device_add",
        mp.info().name,
        t.elapsed().as_millis()
    );
    Ok(())
}
