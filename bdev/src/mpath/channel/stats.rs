// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The counters a channel keeps: per channel and per path, read by tools and tests.

/// Per-path counters of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathIoStats {
    /// Path instance identifier.
    pub id: u64,
    /// I/Os dispatched on the path (its queue's count of requests accepted).
    pub submitted: u64,
    /// I/Os in flight on it from this core.
    pub inflight: u64,
    /// Path errors it returned (each one a failover: the I/O is dispatched again).
    pub path_errors: u64,
    /// Of those, ANA errors (inaccessible, persistent loss, transition).
    pub ana_errors: u64,
    /// Commands on the path's queue that passed their deadline (each then gets an
    /// Abort), from its queue's counters.
    pub timeouts: u64,
    /// Commands the path's queue handed back because its controller was reset or
    /// failed, from its queue's counters.
    pub reset_aborts: u64,
    /// The path's queue holds new I/O for a controller reset (when sampled).
    pub resetting: bool,
    /// The path's controller failed for good (when sampled).
    pub failed: bool,
    /// I/Os that waited in the path queue's own pending queue (the driver's, when
    /// this core's I/Os on the path outnumber its command slots).
    pub pended: u64,
}

/// Counters of one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// I/Os accepted.
    pub submitted: u64,
    /// I/Os completed (successfully or not).
    pub completed: u64,
    /// Completed with an error status.
    pub failed: u64,
    /// Re-dispatches after a path error.
    pub failovers: u64,
    /// Retries after other retryable errors.
    pub retries: u64,
    /// Times an I/O went onto the pending queue (to wait for a path, for room in a
    /// path's queue, or for its retry time).
    pub queued: u64,
    /// Most I/Os on the pending queue at once.
    pub queued_high_water: u64,
    /// I/Os failed for lack of a usable path (fast I/O fail).
    pub fast_failed: u64,
    /// Path-set generations seen.
    pub path_set_changes: u64,
    /// Paths this channel could not take because its table of local paths was full
    /// (paths being removed whose I/O never drains hold their entries).
    pub paths_refused: u64,
    /// Completions a path queue delivered that match no I/O in flight on that path
    /// (a second completion of one I/O, or a context that is not a slot): dropped, so
    /// nothing is delivered twice, and counted, so a test sees them in any build. A
    /// correct queue never delivers one.
    pub stray_completions: u64,
}

impl ChannelStats {
    /// The counts since `before` (an earlier snapshot of the same channel); the
    /// high-water mark stays the current one.
    pub fn since(&self, before: &ChannelStats) -> ChannelStats {
        ChannelStats {
            submitted: self.submitted - before.submitted,
            completed: self.completed - before.completed,
            failed: self.failed - before.failed,
            failovers: self.failovers - before.failovers,
            retries: self.retries - before.retries,
            queued: self.queued - before.queued,
            queued_high_water: self.queued_high_water,
            fast_failed: self.fast_failed - before.fast_failed,
            path_set_changes: self.path_set_changes - before.path_set_changes,
            paths_refused: self.paths_refused - before.paths_refused,
            stray_completions: self.stray_completions - before.stray_completions,
        }
    }
}
