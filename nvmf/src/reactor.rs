// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The connections of one reactor: a poller that owns them. The accepting thread
//! hands each new connection over through the reactor's inbox (a bounded lock-free
//! queue), and takes closed ones back through `retired`, so that their channels and
//! buffers are released off the reactors, as they were made.

use crate::conn::Conn;
use crossbeam_queue::ArrayQueue;
use nvme_bdev::reactor::{Poller, ReactorCtx};
use std::sync::Arc;

/// The queues between the accepting thread and one reactor.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// New connections for the reactor.
    pub inbox: Arc<ArrayQueue<Box<Conn>>>,
    /// Closed connections for the accepting thread to drop.
    pub retired: Arc<ArrayQueue<Box<Conn>>>,
}

impl Handoff {
    /// Queues for `capacity` connections each way.
    pub fn new(capacity: usize) -> Handoff {
        Handoff {
            inbox: Arc::new(ArrayQueue::new(capacity)),
            retired: Arc::new(ArrayQueue::new(capacity)),
        }
    }
}

/// The poller (module comment).
#[derive(Debug)]
pub struct Connections {
    handoff: Handoff,
    // Boxed: each moves between threads through the handoff queues as it is, with no
    // copy of the connection and no allocation on the reactor.
    #[allow(clippy::vec_box)]
    conns: Vec<Box<Conn>>,
}

impl Connections {
    /// The poller of one reactor, for at most `capacity` connections.
    pub fn new(handoff: Handoff, capacity: usize) -> Connections {
        Connections {
            handoff,
            conns: Vec::with_capacity(capacity),
        }
    }

    fn take_new(&mut self) {
        while self.conns.len() < self.conns.capacity() {
            match self.handoff.inbox.pop() {
                Some(c) => self.conns.push(c),
                None => break,
            }
        }
    }

    fn retire(&mut self, i: usize) {
        let c = self.conns.swap_remove(i);
        println!(
            "nvme-target: {} closed: {} ({} commands)",
            c.describe(),
            c.closed().unwrap_or("?"),
            c.commands
        );
        // A full queue (cannot happen: it holds every connection) drops it here.
        let _ = self.handoff.retired.push(c);
    }
}

impl Poller for Connections {
    fn poll(&mut self, _ctx: &mut ReactorCtx) -> usize {
        self.take_new();
        let mut work = 0;
        let mut i = 0;
        while i < self.conns.len() {
            work += self.conns[i].poll();
            if self.conns[i].closed().is_some() {
                self.retire(i);
            } else {
                i += 1;
            }
        }
        work
    }

    fn stop(&mut self, _ctx: &mut ReactorCtx) -> bool {
        self.take_new();
        let mut i = 0;
        while i < self.conns.len() {
            if self.conns[i].stop() {
                self.retire(i);
            } else {
                i += 1;
            }
        }
        self.conns.is_empty()
    }
}
