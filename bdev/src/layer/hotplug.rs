// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Hot-plug: controllers that appear while the process runs (SPDK's
//! `bdev_nvme_set_hotplug`), opt-in per layer with
//! [`BlockLayer::enable_hotplug`](super::BlockLayer::enable_hotplug).
//!
//! A hot-plug thread (one per layer, `nvme-hotplug`; never a reactor) asks a
//! [`HotplugSource`] every `period_ms` which controllers are present. For VFIO
//! ([`VfioHotplug`]) that is a sysfs scan: one directory listing of
//! `/sys/bus/pci/devices` and a read of each function's `class`, a few reads more per
//! NVMe controller; no kernel event socket to keep, and nothing on the data path.
//! What the scan compares is the list of the previous scan: a name that was not in it
//! has *appeared* (a `device_add` at a new address, a device bound to vfio-pci later,
//! the same address coming back after it left). Controllers present when hot-plug is
//! enabled count as seen: the layer attaches what the caller asked for, and only what
//! arrives later on its own. An appeared name is then:
//! - unknown to the layer: attached with the layer's options, like its peers
//!   ([`attach`](super::attach::attach)); each namespace whose subsystem and
//!   identifiers match a multipath bdev joins it as a path. An attach that fails is
//!   tried again at the next scans, [`ATTACH_ATTEMPTS`] times in all, then left alone
//!   until the controller leaves and comes back.
//! - a controller whose link is `Lost` (the same address coming back while the layer
//!   still waits for it): its controller thread is asked to reconnect at once instead
//!   of at the next `reconnect_delay_ms`. As an address can leave and come back
//!   between two scans, this does not wait for an appearance: every scan asks each
//!   lost controller whose address is present for one attempt (so such a controller
//!   is tried once a period, or every `reconnect_delay_ms` if that is sooner). The reconnect makes a new controller
//!   instance with new path instances (new ids), named as before: a path of the old
//!   instance that still drains on some channel is never taken for the new one.
//! - a controller whose link is `Gone` (it stayed away longer than
//!   `ctrl_loss_timeout_ms`): the old record is detached and the controller attached
//!   anew under the same name.
//! - a controller still `Live` (the old instance has not noticed its removal yet): its
//!   next reconnect, once it does, is asked to happen at once.

use super::controller::{self, CtrlRecord, LinkKind};
use super::{attach, Connector, Inner};
use crate::sync::lock_std as lock;
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many times an appeared controller is tried before the hot-plug thread leaves it
/// alone (until it leaves and comes back).
pub const ATTACH_ATTEMPTS: u32 = 5;

/// The shortest scan period accepted, in ms.
pub const PERIOD_MIN_MS: u64 = 10;

/// Where the hot-plug thread learns which controllers are present, and how it reaches
/// one. VFIO's is [`VfioHotplug`]; tests hand out software controllers.
pub trait HotplugSource: Send + Sync {
    /// The names of the controllers present now that the layer may attach (for VFIO:
    /// the PCI addresses of the NVMe controllers bound to vfio-pci). Called on the
    /// hot-plug thread once per period.
    fn scan(&self) -> Vec<String>;
    /// The connector of controller `name` (used at attach and on every reconnect).
    fn connector(&self, name: &str) -> Connector;
}

/// NVMe controllers bound to vfio-pci, found by a sysfs scan, reached through VFIO.
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioHotplug;

impl HotplugSource for VfioHotplug {
    fn scan(&self) -> Vec<String> {
        nvme_driver::vfio::list_nvme_controllers()
            .into_iter()
            .filter(|c| c.driver.as_deref() == Some("vfio-pci"))
            .map(|c| c.bdf)
            .collect()
    }

    fn connector(&self, name: &str) -> Connector {
        vfio_connector(name)
    }
}

/// The connector of the controller at PCI address `bdf`: opens it through VFIO, at
/// attach and again on every reconnect.
pub fn vfio_connector(bdf: &str) -> Connector {
    let bdf = bdf.to_string();
    Arc::new(move || {
        nvme_driver::vfio::VfioBus::open(&bdf).map(|b| b as Arc<dyn nvme_driver::bus::Bus>)
    })
}

/// What the hot-plug thread did, since hot-plug was first enabled on the layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotplugStats {
    /// Scans made.
    pub scans: u64,
    /// Names that appeared (not in the previous scan).
    pub appeared: u64,
    /// Controllers attached that the layer did not know.
    pub attached: u64,
    /// Controllers attached anew after the loss timeout had removed them.
    pub reattached: u64,
    /// Lost controllers whose reconnect was brought forward.
    pub reconnects_prompted: u64,
    /// Attach attempts that failed.
    pub attach_failures: u64,
}

/// The counters behind [`HotplugStats`].
#[derive(Debug, Default)]
pub(super) struct HotplugCounters {
    scans: AtomicU64,
    appeared: AtomicU64,
    attached: AtomicU64,
    reattached: AtomicU64,
    reconnects_prompted: AtomicU64,
    attach_failures: AtomicU64,
}

impl HotplugCounters {
    pub(super) fn snapshot(&self) -> HotplugStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HotplugStats {
            scans: get(&self.scans),
            appeared: get(&self.appeared),
            attached: get(&self.attached),
            reattached: get(&self.reattached),
            reconnects_prompted: get(&self.reconnects_prompted),
            attach_failures: get(&self.attach_failures),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running hot-plug thread.
#[derive(Debug)]
pub(super) struct HotplugThread {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl HotplugThread {
    /// Starts the thread; its first scan (made here, before it returns) is the list of
    /// controllers already present.
    pub(super) fn start(
        inner: Arc<Inner>,
        source: Arc<dyn HotplugSource>,
        period_ms: u64,
    ) -> Result<Self> {
        if period_ms < PERIOD_MIN_MS {
            return Err(Error::InvalidOption(format!(
                "hot-plug period {period_ms} ms: at least {PERIOD_MIN_MS} ms (a scan lists \
                 every PCI function)"
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = source.scan();
        bump(&inner.hotplug.scans);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nvme-hotplug".into())
            .spawn(move || {
                let mut w = Watcher {
                    inner,
                    source,
                    seen,
                    waiting: Vec::new(),
                };
                let period = Duration::from_millis(period_ms);
                while !s.load(Ordering::Acquire) {
                    let t = Instant::now();
                    // Sleep in short steps so that stopping never waits a period.
                    while t.elapsed() < period && !s.load(Ordering::Acquire) {
                        std::thread::sleep(period.min(Duration::from_millis(10)));
                    }
                    if !s.load(Ordering::Acquire) {
                        w.turn();
                    }
                }
            })
            .map_err(|source| Error::Io {
                what: "spawning the hot-plug thread".into(),
                source,
            })?;
        Ok(HotplugThread { stop, thread })
    }

    /// Stops the thread (an attach in progress finishes first).
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            log::error!("the hot-plug thread panicked");
        }
    }
}

/// The hot-plug thread's state.
struct Watcher {
    inner: Arc<Inner>,
    source: Arc<dyn HotplugSource>,
    /// The previous scan.
    seen: Vec<String>,
    /// Appeared controllers still to attach, with the attempts made.
    waiting: Vec<(String, u32)>,
}

impl Watcher {
    /// One scan and what follows from it.
    fn turn(&mut self) {
        let now = self.source.scan();
        bump(&self.inner.hotplug.scans);
        for name in now.iter().filter(|n| !self.seen.contains(n)) {
            bump(&self.inner.hotplug.appeared);
            log::info!("hot-plug: {name} appeared");
            if !self.waiting.iter().any(|(w, _)| w == name) {
                self.waiting.push((name.clone(), 0));
            }
        }
        // A controller that left again before it could be attached is forgotten.
        self.waiting.retain(|(n, _)| now.contains(n));
        // A lost controller whose address is present (again): the address may have
        // left and come back between two scans (seen in the guest: gone for less than
        // 200 ms), so presence is enough to try a reconnect now, at most once a scan.
        let lost: Vec<Arc<CtrlRecord>> = lock(&self.inner.ctrls)
            .iter()
            .filter(|c| now.contains(&c.name) && c.link_kind() == LinkKind::Lost)
            .cloned()
            .collect();
        for record in lost {
            if !record.reconnect_now.swap(true, Ordering::AcqRel) {
                bump(&self.inner.hotplug.reconnects_prompted);
                log::info!("hot-plug: {} is present; reconnecting it now", record.name);
            }
        }
        self.seen = now;
        let waiting = std::mem::take(&mut self.waiting);
        for (name, attempts) in waiting {
            if let Some(attempts) = self.take_in(&name, attempts) {
                self.waiting.push((name, attempts));
            }
        }
    }

    /// Brings appeared controller `name` into the layer. Returns the attempts made if
    /// it is to be tried again at the next scan.
    fn take_in(&self, name: &str, attempts: u32) -> Option<u32> {
        let inner = &self.inner;
        let known: Option<Arc<CtrlRecord>> =
            lock(&inner.ctrls).iter().find(|c| c.name == name).cloned();
        if let Some(record) = &known {
            match record.link_kind() {
                LinkKind::Live | LinkKind::Lost => {
                    record.reconnect_now.store(true, Ordering::Release);
                    bump(&inner.hotplug.reconnects_prompted);
                    log::info!("hot-plug: {name} is back; reconnecting it now");
                    return None;
                }
                LinkKind::Gone => {
                    // Its paths are gone already; its record and namespace bdevs go
                    // now, and the controller comes back as a new one of that name.
                    lock(&inner.ctrls).retain(|c| !Arc::ptr_eq(c, record));
                    controller::stop(inner, record, controller::StopMode::Detach);
                }
            }
        }
        match attach::attach(inner, name, self.source.connector(name)) {
            Ok(bdevs) => {
                bump(if known.is_some() {
                    &inner.hotplug.reattached
                } else {
                    &inner.hotplug.attached
                });
                log::info!("hot-plug: attached {name}: {}", bdevs.join(", "));
                None
            }
            Err(e) => {
                bump(&inner.hotplug.attach_failures);
                let attempts = attempts + 1;
                if attempts >= ATTACH_ATTEMPTS {
                    log::warn!(
                        "hot-plug: {name} could not be attached ({attempts} attempts; left \
                         alone until it leaves and comes back): {e}"
                    );
                    None
                } else {
                    log::debug!("hot-plug: attaching {name} failed (attempt {attempts}): {e}");
                    Some(attempts)
                }
            }
        }
    }
}
