// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Subscribing to bdev events (see [`crate::events`]): the embedder's side of what the
//! controller threads, the hot-plug thread and attach/detach report.

use super::BlockLayer;
use crate::events::EventReceiver;
use crate::sync::lock_std as lock;
use crate::{Error, Result};

impl BlockLayer {
    /// Subscribes to the events of bdev `name` (SPDK: the `event_cb` of
    /// `spdk_bdev_open_ext`): path down and up, ANA changes, its controllers removed
    /// and added, resize, its removal. Up to `capacity` events wait for the receiver
    /// ([`EVENT_QUEUE_DEFAULT`](crate::EVENT_QUEUE_DEFAULT) is a fair size); beyond
    /// that they are dropped and counted, never waited for. Take them with
    /// [`EventReceiver::try_recv`] or [`EventReceiver::drain`] on any thread: nothing
    /// is delivered on the layer's threads or inside a submit.
    ///
    /// ```no_run
    /// # fn f(layer: &nvme_bdev::BlockLayer) -> nvme_bdev::Result<()> {
    /// use nvme_bdev::{BdevEvent, EVENT_QUEUE_DEFAULT};
    /// let events = layer.subscribe("nqn.2014-08.org.example:n1", EVENT_QUEUE_DEFAULT)?;
    /// // Later, on the embedder's own thread (a management loop, a reactor's timer):
    /// events.drain(|ev| match ev {
    ///     BdevEvent::PathDown { controller, .. } => eprintln!("path via {controller} down"),
    ///     BdevEvent::BdevRemoved { bdev } => eprintln!("{bdev} is gone"),
    ///     other => eprintln!("{other:?}"),
    /// });
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, name: &str, capacity: usize) -> Result<EventReceiver> {
        {
            let g = lock(&self.inner.bdevs);
            if !g.iter().any(|b| b.name() == name) {
                return Err(Error::NoSuchBdev {
                    name: name.to_string(),
                    known: g.iter().map(|b| b.name().to_string()).collect(),
                });
            }
        }
        self.inner.events.subscribe(Some(name), capacity)
    }

    /// Subscribes to the events of every bdev, present and future (a hot-added
    /// controller's bdevs announce themselves with
    /// [`BdevEvent::ControllerAdded`](crate::BdevEvent::ControllerAdded)); as
    /// [`subscribe`](Self::subscribe) otherwise.
    pub fn subscribe_all(&self, capacity: usize) -> Result<EventReceiver> {
        self.inner.events.subscribe(None, capacity)
    }
}
