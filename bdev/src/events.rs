// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Events for embedders: what happened to a bdev's paths and controllers (SPDK: the
//! `event_cb` of `spdk_bdev_open_ext`).
//!
//! The threads that see the changes (controller threads, the hot-plug thread, and
//! whoever attaches, detaches or shuts down) push a [`BdevEvent`] into a bounded queue
//! per subscriber; the embedder takes them from a thread of its own choosing with
//! [`EventReceiver::try_recv`] or [`EventReceiver::drain`]. Nothing runs on the
//! embedder's behalf anywhere else: no event is delivered inside a submit or a poll,
//! and a slow embedder never holds a controller thread up. A full queue drops the new
//! event and counts it; the count is delivered as [`BdevEvent::Dropped`] in the place
//! of the missing events (before any later one), and [`EventReceiver::dropped`] keeps
//! the total.
//!
//! Order: one lock serializes every producer, so a subscriber sees the events of a
//! bdev (and of all bdevs) in the order they were published. For one change the path
//! events come first: a controller that fails gives [`BdevEvent::PathDown`] for each
//! of its usable paths, then [`BdevEvent::ControllerRemoved`] for each of its bdevs;
//! one that reconnects (or is attached, by the caller or hot-plug) gives
//! [`BdevEvent::PathUp`] for each usable path, then [`BdevEvent::ControllerAdded`].
//! An ANA change gives [`BdevEvent::AnaChange`] before the `PathUp`/`PathDown` it
//! causes. A resize gives [`BdevEvent::Resized`] for the controller's namespace bdev,
//! then, if its size changed, the multipath bdev.

use crate::mpath::PathState;
use crate::sync::lock_std as lock;
use crate::{Error, Result};
use crossbeam_queue::ArrayQueue;
use nvme_driver::spec::AnaState;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One thing that happened to a bdev. More kinds may come: match with a `_` arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BdevEvent {
    /// A multipath path left the usable set (its controller failed, is resetting or
    /// was removed; its ANA state became inaccessible, persistent loss or change).
    PathDown {
        /// The multipath bdev.
        bdev: String,
        /// The path's controller.
        controller: String,
        /// The path's new state; `None` when the path left the bdev altogether.
        state: Option<PathState>,
    },
    /// A multipath path entered the usable set (a new path, a reconnect, a reset done,
    /// an ANA state optimized or non-optimized again).
    PathUp {
        /// The multipath bdev.
        bdev: String,
        /// The path's controller.
        controller: String,
        /// The path's new state.
        state: PathState,
    },
    /// The ANA state of a path changed, as its controller reports it.
    AnaChange {
        /// The multipath bdev.
        bdev: String,
        /// The path's controller.
        controller: String,
        /// The state before.
        old: AnaState,
        /// The state now.
        new: AnaState,
    },
    /// A controller behind the bdev went away: it failed (hot removal, a fatal
    /// error: the layer reconnects it until `ctrl_loss_timeout_ms`), or was detached
    /// or shut down.
    ControllerRemoved {
        /// The bdev (a namespace bdev of the controller, or a multipath bdev it is a
        /// path of).
        bdev: String,
        /// The controller.
        controller: String,
    },
    /// A controller behind the bdev came (back): attached (by the caller or by
    /// hot-plug) or reconnected.
    ControllerAdded {
        /// The bdev.
        bdev: String,
        /// The controller.
        controller: String,
    },
    /// The namespace changed size: its controller sent a Namespace Attribute Changed
    /// notice and the new size was read from Identify Namespace. Once per bdev and
    /// change: a namespace bdev when its controller saw it; a multipath bdev when its
    /// size, the smallest of its paths', changed (a grow once every path saw it, a
    /// shrink when the first one did). [`Bdev::num_blocks`](crate::Bdev::num_blocks)
    /// has the new size before the event is queued. After a grow, I/O past the old end
    /// works; after a shrink, I/O past the new end is refused with
    /// [`Error::InvalidIo`] naming the blocks and the size
    /// (from the channel's next poll on; one submitted before that is checked by the
    /// device, which fails it with LBA Out of Range). I/O in flight completes as usual.
    Resized {
        /// The bdev.
        bdev: String,
        /// Blocks before.
        old_blocks: u64,
        /// Blocks now.
        new_blocks: u64,
    },
    /// The bdev is gone (its controller was detached, shut down, or given up on and
    /// replaced): channels to it fail from now on; close them.
    BdevRemoved {
        /// The bdev.
        bdev: String,
    },
    /// `count` events were dropped here because the queue was full.
    Dropped {
        /// Events lost.
        count: u64,
    },
}

impl BdevEvent {
    /// The bdev the event is about (`None` for [`BdevEvent::Dropped`]).
    pub fn bdev(&self) -> Option<&str> {
        match self {
            BdevEvent::PathDown { bdev, .. }
            | BdevEvent::PathUp { bdev, .. }
            | BdevEvent::AnaChange { bdev, .. }
            | BdevEvent::ControllerRemoved { bdev, .. }
            | BdevEvent::ControllerAdded { bdev, .. }
            | BdevEvent::Resized { bdev, .. }
            | BdevEvent::BdevRemoved { bdev } => Some(bdev),
            BdevEvent::Dropped { .. } => None,
        }
    }
}

/// Events a subscriber's queue holds unless told otherwise
/// ([`BlockLayer::subscribe`](crate::BlockLayer::subscribe)).
pub const EVENT_QUEUE_DEFAULT: usize = 256;

/// One subscriber's queue.
#[derive(Debug)]
struct Subscriber {
    /// Only events of this bdev; `None`: every bdev.
    bdev: Option<String>,
    queue: ArrayQueue<BdevEvent>,
    /// Events dropped since the last [`BdevEvent::Dropped`] was queued. Held by a
    /// producer while it pushes, so the receiver can tell an empty queue with drops
    /// behind it from a push in progress.
    unreported: Mutex<u64>,
    /// Events dropped in all.
    dropped: AtomicU64,
    /// The receiver is gone.
    closed: AtomicBool,
}

impl Subscriber {
    /// Queues `ev`, or counts it dropped. Called with the hub's lock held: one
    /// producer at a time, so a length checked is still room when pushed.
    fn push(&self, ev: &BdevEvent) {
        let mut unreported = lock(&self.unreported);
        let cap = self.queue.capacity();
        if *unreported > 0 && self.queue.len() < cap {
            let _ = self.queue.push(BdevEvent::Dropped { count: *unreported });
            *unreported = 0;
        }
        if *unreported == 0 && self.queue.len() < cap {
            let _ = self.queue.push(ev.clone());
        } else {
            *unreported += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the layer keeps about one attached controller, for its events.
#[derive(Debug)]
struct CtrlBdevs {
    name: String,
    /// Its namespace bdevs (removed with it).
    ns_bdevs: Vec<String>,
    /// The multipath bdevs it is a path of.
    mp_bdevs: Vec<String>,
    /// Reported as added and not removed since.
    live: bool,
}

/// The layer's event fan-out: subscribers, and which bdevs each controller serves.
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    subs: Mutex<Vec<Arc<Subscriber>>>,
    ctrls: Mutex<Vec<CtrlBdevs>>,
}

impl EventHub {
    /// A new subscriber to `bdev`'s events (`None`: every bdev's).
    pub(crate) fn subscribe(&self, bdev: Option<&str>, capacity: usize) -> Result<EventReceiver> {
        if capacity == 0 {
            return Err(Error::InvalidOption(
                "event queue capacity must be positive".into(),
            ));
        }
        let sub = Arc::new(Subscriber {
            bdev: bdev.map(str::to_string),
            queue: ArrayQueue::new(capacity),
            unreported: Mutex::new(0),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let mut subs = lock(&self.subs);
        subs.retain(|s| !s.closed.load(Ordering::Acquire));
        subs.push(sub.clone());
        Ok(EventReceiver { sub })
    }

    /// Publishes `ev` to every subscriber that wants it.
    pub(crate) fn emit(&self, ev: BdevEvent) {
        let subs = lock(&self.subs);
        for s in subs.iter() {
            let wanted = match (&s.bdev, ev.bdev()) {
                (None, _) => true,
                (Some(want), Some(b)) => want == b,
                (Some(_), None) => false,
            };
            if wanted && !s.closed.load(Ordering::Acquire) {
                s.push(&ev);
            }
        }
    }

    /// A path of multipath bdev `bdev` through `controller` changed from `old` to `new`
    /// (`None`: not in the set). Called by the path-set writer under its lock, so
    /// these come in publication order.
    pub(crate) fn path_changed(
        &self,
        bdev: &str,
        controller: &str,
        old: Option<PathState>,
        new: Option<PathState>,
    ) {
        if let (Some(o), Some(n)) = (old, new) {
            // An ANA state read from a live controller: a failed controller's paths are
            // published inaccessible without anyone having said so.
            if o.ana != n.ana && n.connected {
                self.emit(BdevEvent::AnaChange {
                    bdev: bdev.to_string(),
                    controller: controller.to_string(),
                    old: o.ana,
                    new: n.ana,
                });
            }
        }
        let was = old.is_some_and(|s| s.usable());
        match (was, new) {
            (false, Some(n)) if n.usable() => self.emit(BdevEvent::PathUp {
                bdev: bdev.to_string(),
                controller: controller.to_string(),
                state: n,
            }),
            (true, n) if !n.is_some_and(|n| n.usable()) => self.emit(BdevEvent::PathDown {
                bdev: bdev.to_string(),
                controller: controller.to_string(),
                state: n,
            }),
            _ => {}
        }
    }

    /// Controller `name` was attached with these namespace and multipath bdevs:
    /// [`BdevEvent::ControllerAdded`] for each.
    pub(crate) fn attached(&self, name: &str, ns_bdevs: Vec<String>, mp_bdevs: Vec<String>) {
        let mut ctrls = lock(&self.ctrls);
        ctrls.retain(|c| c.name != name);
        ctrls.push(CtrlBdevs {
            name: name.to_string(),
            ns_bdevs,
            mp_bdevs,
            live: false,
        });
        Self::set_live(self, &mut ctrls, name, true);
    }

    /// Controller `name`'s link went live (`true`) or stopped being live.
    pub(crate) fn link(&self, name: &str, live: bool) {
        let mut ctrls = lock(&self.ctrls);
        Self::set_live(self, &mut ctrls, name, live);
    }

    /// Controller `name` was stopped (detach, shutdown, given up and replaced): its
    /// removal if not reported yet, then [`BdevEvent::BdevRemoved`] for its namespace
    /// bdevs; it is forgotten.
    pub(crate) fn stopped(&self, name: &str) {
        let mut ctrls = lock(&self.ctrls);
        Self::set_live(self, &mut ctrls, name, false);
        let Some(pos) = ctrls.iter().position(|c| c.name == name) else {
            return;
        };
        let c = ctrls.remove(pos);
        for b in c.ns_bdevs {
            self.emit(BdevEvent::BdevRemoved { bdev: b });
        }
    }

    fn set_live(&self, ctrls: &mut [CtrlBdevs], name: &str, live: bool) {
        let Some(c) = ctrls.iter_mut().find(|c| c.name == name) else {
            return;
        };
        if c.live == live {
            return;
        }
        c.live = live;
        for b in c.ns_bdevs.iter().chain(c.mp_bdevs.iter()) {
            let (bdev, controller) = (b.clone(), name.to_string());
            self.emit(if live {
                BdevEvent::ControllerAdded { bdev, controller }
            } else {
                BdevEvent::ControllerRemoved { bdev, controller }
            });
        }
    }
}

/// The receiving end of a subscription ([`BlockLayer::subscribe`](crate::BlockLayer::subscribe)):
/// take events from any thread, as often as suits; dropping it ends the subscription.
#[derive(Debug)]
pub struct EventReceiver {
    sub: Arc<Subscriber>,
}

impl EventReceiver {
    /// The next event, or `None` when there is none now. Never waits.
    pub fn try_recv(&self) -> Option<BdevEvent> {
        if let Some(ev) = self.sub.queue.pop() {
            return Some(ev);
        }
        // Empty: drops behind the last queued event are reported now rather than
        // with the next event, which may never come. Under the producers' lock, so a
        // push in progress is not overtaken.
        let mut unreported = lock(&self.sub.unreported);
        if *unreported > 0 && self.sub.queue.is_empty() {
            let count = std::mem::take(&mut *unreported);
            return Some(BdevEvent::Dropped { count });
        }
        drop(unreported);
        self.sub.queue.pop()
    }

    /// Hands every event queued now to `f`, on this thread, oldest first; returns how
    /// many. Bounded: at most the queue's capacity plus one (the drop count), so events
    /// that keep arriving wait for the next call.
    pub fn drain(&self, mut f: impl FnMut(BdevEvent)) -> usize {
        let mut n = 0;
        while n <= self.sub.queue.capacity() {
            let Some(ev) = self.try_recv() else {
                break;
            };
            f(ev);
            n += 1;
        }
        n
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.sub.dropped.load(Ordering::Relaxed)
    }

    /// Events the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.sub.queue.capacity()
    }

    /// The bdev subscribed to (`None`: every bdev).
    pub fn bdev(&self) -> Option<&str> {
        self.sub.bdev.as_deref()
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.sub.closed.store(true, Ordering::Release);
    }
}
