// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Poll groups: the channels one thread drives, sharing one I/O queue pair per
//! controller (SPDK's poll groups; the sharing itself is `crate::share`).

use super::{Bdev, Channel};
use crate::io::{BdevCompletion, BdevIo};
use crate::share::QueueGroup;
use crate::{Error, Result};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// The channels one thread (a reactor, or an embedder's thread) drives, for any
/// number of bdevs: every channel of the group that needs a path to controller C
/// uses the group's one I/O queue pair to C. The queue pair is made by the first
/// channel that needs it and dropped (by a controller thread) when the last one
/// lets go, so a layer needs one I/O queue per group and controller, whatever the
/// number of namespaces; a reset or failure of C reaches that queue pair once, and
/// every channel on it sees it.
///
/// The group owns its channels and hands out only shared references to them: the
/// channels of a group share queues without locks, so they move between threads
/// together (make the group and its channels off the reactors, then move the group to
/// its reactor) and are driven by one thread at a time (`Send`, not `Sync`).
///
/// Multipath bdevs share; a namespace bdev's channel keeps its own queue pair (its
/// completions carry the caller's whole context word).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nvme_bdev::{BdevIo, BlockLayer, LayerOptions};
/// use nvme_driver::softctrl::{Namespace, SoftConfig, SoftController};
/// use std::sync::Arc;
///
/// let ssd = SoftController::start(SoftConfig {
///     namespaces: (1..=4).map(|n| Arc::new(Namespace::new(n, 1024, 512).unwrap())).collect(),
///     ..SoftConfig::default()
/// });
/// let layer = BlockLayer::new(LayerOptions::default())?;
/// let names = layer.attach_bus("c0", ssd)?;
/// let mut group = layer.poll_group();
/// // The multipath bdev of each namespace (every second name).
/// let mut keys = Vec::new();
/// for name in names.iter().skip(1).step_by(2) {
///     keys.push(group.open(&layer.open(name)?)?);
/// }
/// assert_eq!(group.queue_pairs(), 1); // four bdevs, one queue pair to c0
/// let buf = layer.alloc_buffer(512)?;
/// for &k in &keys {
///     group.submit(k, BdevIo::read(0, 1, buf.whole(), k as u64)).map_err(|(e, _)| e)?;
/// }
/// let mut done = 0;
/// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
/// while done < keys.len() && std::time::Instant::now() < deadline {
///     done += group.poll_all(&mut |key, c| assert_eq!(c.ctx, key as u64));
/// }
/// assert_eq!(done, keys.len());
/// # drop(group);
/// # layer.shutdown();
/// # Ok(())
/// # }
/// ```
pub struct PollGroup {
    group: Arc<QueueGroup>,
    /// Open channels by key; a closed one leaves `None` (keys are not reused).
    channels: Vec<Option<Channel>>,
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for PollGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollGroup")
            .field("channels", &self.channels.iter().flatten().count())
            .field("queue_pairs", &self.queue_pairs())
            .finish()
    }
}

impl PollGroup {
    pub(super) fn new() -> Self {
        PollGroup {
            group: QueueGroup::shared(),
            channels: Vec::new(),
            _not_sync: PhantomData,
        }
    }

    /// Opens a channel to `bdev` in this group; returns its key. Set-up work (may make
    /// queue pairs, waiting for a controller's admin queue): off the reactors.
    pub fn open(&mut self, bdev: &Bdev) -> Result<usize> {
        let ch = match bdev {
            Bdev::Nvme(b) => Channel::Nvme(b.channel()?),
            Bdev::Mpath(m) => Channel::Mpath(m.channel_in(self.group.clone())?),
        };
        self.channels.push(Some(ch));
        Ok(self.channels.len() - 1)
    }

    #[inline(always)]
    fn get_mut(&mut self, key: usize) -> Option<&mut Channel> {
        self.channels.get_mut(key).and_then(Option::as_mut)
    }

    /// Submits an I/O on channel `key` (see [`Channel::submit`]); an unknown or closed
    /// key hands it back as [`Error::InvalidOption`] naming the key.
    #[inline]
    pub fn submit(&mut self, key: usize, io: BdevIo) -> std::result::Result<(), (Error, BdevIo)> {
        match self.get_mut(key) {
            Some(ch) => ch.submit(io),
            None => Err((no_channel(key), io)),
        }
    }

    /// Polls channel `key` (see [`Channel::poll`]); 0 for an unknown key. Whichever
    /// channel polls a shared queue pair, each completion reaches its own channel,
    /// once: another channel's wait for that channel's next poll.
    #[inline]
    pub fn poll(&mut self, key: usize, cb: &mut impl FnMut(BdevCompletion)) -> usize {
        match self.get_mut(key) {
            Some(ch) => ch.poll(cb),
            None => 0,
        }
    }

    /// Polls every open channel; `cb` gets each completion with its channel's key.
    pub fn poll_all(&mut self, cb: &mut impl FnMut(usize, BdevCompletion)) -> usize {
        let mut n = 0;
        for (key, ch) in self.channels.iter_mut().enumerate() {
            if let Some(ch) = ch {
                n += ch.poll(&mut |c| cb(key, c));
            }
        }
        n
    }

    /// Rings the doorbells for channel `key`'s I/O (see [`Channel::flush`]).
    #[inline]
    pub fn flush(&mut self, key: usize) {
        if let Some(ch) = self.get_mut(key) {
            ch.flush();
        }
    }

    /// Channel `key`, for its counters and state.
    pub fn channel(&self, key: usize) -> Option<&Channel> {
        self.channels.get(key).and_then(Option::as_ref)
    }

    /// Stop mode for channel `key` (see [`Channel::shutdown`]).
    pub fn shutdown(&mut self, key: usize) {
        if let Some(ch) = self.get_mut(key) {
            ch.shutdown();
        }
    }

    /// Closes channel `key` (poll it until `outstanding() == 0` first: I/O still in
    /// flight is dropped unanswered, as when a channel is dropped). Its queue pairs'
    /// memberships go back to the controller threads, which drop a queue pair once its
    /// last member is gone. False for an unknown or closed key.
    pub fn close(&mut self, key: usize) -> bool {
        self.channels.get_mut(key).and_then(Option::take).is_some()
    }

    /// Open channels.
    pub fn len(&self) -> usize {
        self.channels.iter().flatten().count()
    }

    /// True when no channel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shared I/O queue pairs the group holds now: one per controller some open
    /// channel (or one closed a moment ago, until its controller thread takes its
    /// membership back) has a path to.
    pub fn queue_pairs(&self) -> usize {
        self.group.queue_pairs()
    }

    /// Shared I/O queue pairs the group made so far.
    pub fn queue_pairs_made(&self) -> u64 {
        self.group.queue_pairs_made()
    }
}

fn no_channel(key: usize) -> Error {
    Error::InvalidOption(format!(
        "poll group has no open channel {key}: it was closed, or never opened"
    ))
}
