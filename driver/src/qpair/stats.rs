// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The counters a queue pair keeps: they explain performance and, for the device's
//! misbehaviour, correctness.

/// Counters that explain performance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QpairStats {
    /// Requests accepted by `submit`.
    pub submitted: u64,
    /// Requests completed (delivered to the caller).
    pub completed: u64,
    /// NVMe commands issued (more than requests when requests are split).
    pub commands: u64,
    /// Calls to `poll`.
    pub polls: u64,
    /// Polls that found no completion.
    pub idle_polls: u64,
    /// SQ tail doorbell writes.
    pub sq_doorbell_writes: u64,
    /// CQ head doorbell writes.
    pub cq_doorbell_writes: u64,
    /// Requests that went through the pending ring.
    pub pended: u64,
    /// Most requests ever waiting on the pending ring at once.
    pub pending_high_water: u64,
    /// Requests refused because the pending ring was full.
    pub busy: u64,
    /// Commands that passed their deadline.
    pub timeouts: u64,
    /// Commands aborted by controller resets.
    pub reset_aborts: u64,
    /// Completions whose command identifier matched no command in flight: out of
    /// range, never issued, or already completed (a duplicate). Each is counted once
    /// and never delivered; the controller is failed, as the device misbehaved.
    /// Zero on a healthy device: tests assert it, in release builds too.
    pub stray_completions: u64,
    /// Completions for a command in flight that carried an SQ head or SQ identifier
    /// out of range. Counted once each, not delivered (the command completes when the
    /// controller is failed); zero on a healthy device.
    pub malformed_completions: u64,
}

impl QpairStats {
    /// The counts since `before` (an earlier snapshot of the same queue pair); the
    /// high-water mark stays the current one.
    pub fn since(&self, before: &QpairStats) -> QpairStats {
        QpairStats {
            submitted: self.submitted - before.submitted,
            completed: self.completed - before.completed,
            commands: self.commands - before.commands,
            polls: self.polls - before.polls,
            idle_polls: self.idle_polls - before.idle_polls,
            sq_doorbell_writes: self.sq_doorbell_writes - before.sq_doorbell_writes,
            cq_doorbell_writes: self.cq_doorbell_writes - before.cq_doorbell_writes,
            pended: self.pended - before.pended,
            pending_high_water: self.pending_high_water,
            busy: self.busy - before.busy,
            timeouts: self.timeouts - before.timeouts,
            reset_aborts: self.reset_aborts - before.reset_aborts,
            stray_completions: self.stray_completions - before.stray_completions,
            malformed_completions: self.malformed_completions - before.malformed_completions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_every_count() {
        let before = QpairStats {
            completed: 5,
            stray_completions: 1,
            malformed_completions: 2,
            pending_high_water: 9,
            ..QpairStats::default()
        };
        let now = QpairStats {
            completed: 8,
            stray_completions: 4,
            malformed_completions: 2,
            pending_high_water: 3,
            ..QpairStats::default()
        };
        let d = now.since(&before);
        assert_eq!(
            (d.completed, d.stray_completions, d.malformed_completions),
            (3, 3, 0)
        );
        assert_eq!(d.pending_high_water, 3, "the high-water mark stays current");
    }
}
