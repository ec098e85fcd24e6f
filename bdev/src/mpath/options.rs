// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Multipath knobs and their validation.

use crate::{Error, Result};

/// How a multipath bdev spreads I/O over its usable paths. Optimized paths are always
/// preferred to non-optimized ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// All I/O on the first usable path (in the order paths were added); the others
    /// stand by.
    #[default]
    ActivePassive,
    /// Each I/O on the next usable path in turn (per core).
    RoundRobin,
    /// Each I/O on the usable path with the fewest I/Os in flight from this core.
    LeastQueueDepth,
}

impl Policy {
    /// The policy's full name, as [`FromStr`](std::str::FromStr) accepts it:
    /// `active-passive`, `round-robin` or `least-queue-depth`.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::ActivePassive => "active-passive",
            Policy::RoundRobin => "round-robin",
            Policy::LeastQueueDepth => "least-queue-depth",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active-passive" | "ap" => Ok(Policy::ActivePassive),
            "round-robin" | "rr" => Ok(Policy::RoundRobin),
            "least-queue-depth" | "lqd" | "queue-depth" => Ok(Policy::LeastQueueDepth),
            _ => Err(Error::InvalidOption(format!(
                "unknown policy {s:?}; use active-passive, round-robin or least-queue-depth"
            ))),
        }
    }
}

/// Multipath behaviour. Times are in milliseconds; see [`MpathOptions::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpathOptions {
    /// Path selection policy.
    pub policy: Policy,
    /// Retries of an I/O that failed with a retryable, non-path error (path errors
    /// fail over without counting).
    pub retry_count: u32,
    /// Base unit of the command retry delay: a completion's CRD field `n` (1-3) delays
    /// the retry by `n * retry_delay_unit_ms` (the spec's CRDT unit is 100 ms).
    pub retry_delay_unit_ms: u64,
    /// How long I/O waits for a usable path before failing. 0 fails at once.
    pub fast_io_fail_timeout_ms: u64,
    /// Interval between attempts to reconnect a lost controller.
    pub reconnect_delay_ms: u64,
    /// How long a lost controller is retried before its paths are removed: -1 forever,
    /// 0 never reconnect (remove at once).
    pub ctrl_loss_timeout_ms: i64,
    /// I/Os one channel (one core) can track at once.
    pub channel_depth: usize,
}

impl Default for MpathOptions {
    fn default() -> Self {
        MpathOptions {
            policy: Policy::ActivePassive,
            retry_count: 3,
            retry_delay_unit_ms: 100,
            fast_io_fail_timeout_ms: 5_000,
            reconnect_delay_ms: 1_000,
            ctrl_loss_timeout_ms: 30_000,
            channel_depth: 4096,
        }
    }
}

impl MpathOptions {
    /// Checks the knobs: reconnect delay <= fast I/O fail timeout <= controller loss
    /// timeout (when the loss timeout is positive), a reconnect delay only when
    /// reconnecting and a positive one when reconnecting, and sane sizes.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOption(m));
        let (rd, ff, cl) = (
            self.reconnect_delay_ms,
            self.fast_io_fail_timeout_ms,
            self.ctrl_loss_timeout_ms,
        );
        if cl < -1 {
            return bad(format!(
                "ctrl_loss_timeout_ms {cl}: use -1 (retry forever), 0 (never reconnect) or a positive time"
            ));
        }
        if cl == 0 && rd != 0 {
            return bad(format!(
                "reconnect_delay_ms {rd} with ctrl_loss_timeout_ms 0: a controller that is never reconnected needs reconnect_delay_ms 0"
            ));
        }
        if cl != 0 && rd == 0 {
            return bad(format!(
                "reconnect_delay_ms 0 with ctrl_loss_timeout_ms {cl}: reconnecting needs a positive delay between attempts"
            ));
        }
        if cl != 0 && ff != 0 && rd > ff {
            return bad(format!(
                "reconnect_delay_ms {rd} is above fast_io_fail_timeout_ms {ff}: I/O would fail before the first reconnect attempt (need reconnect delay <= fast fail <= loss timeout)"
            ));
        }
        if cl > 0 && ff > cl as u64 {
            return bad(format!(
                "fast_io_fail_timeout_ms {ff} is above ctrl_loss_timeout_ms {cl} (need reconnect delay <= fast fail <= loss timeout)"
            ));
        }
        if cl > 0 && rd > cl as u64 {
            return bad(format!(
                "reconnect_delay_ms {rd} is above ctrl_loss_timeout_ms {cl} (need reconnect delay <= loss timeout)"
            ));
        }
        if self.retry_count > 255 {
            return bad(format!("retry_count {} is above 255", self.retry_count));
        }
        if self.channel_depth == 0 || self.channel_depth > 1 << 20 {
            return bad(format!(
                "channel_depth {} is outside 1..=1048576",
                self.channel_depth
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rules_hold() {
        MpathOptions::default().validate().unwrap();
        let o = |rd, ff, cl| MpathOptions {
            reconnect_delay_ms: rd,
            fast_io_fail_timeout_ms: ff,
            ctrl_loss_timeout_ms: cl,
            ..MpathOptions::default()
        };
        assert!(o(10, 20, 30).validate().is_ok());
        assert!(o(10, 20, -1).validate().is_ok());
        assert!(o(0, 20, 0).validate().is_ok());
        let e = o(30, 20, 40).validate().unwrap_err().to_string();
        assert!(
            e.contains("reconnect_delay_ms 30 is above fast_io_fail"),
            "{e}"
        );
        let e = o(10, 50, 40).validate().unwrap_err().to_string();
        assert!(
            e.contains("fast_io_fail_timeout_ms 50 is above ctrl_loss"),
            "{e}"
        );
        assert!(o(10, 20, 0).validate().is_err());
        assert!(o(0, 20, 30).validate().is_err());
        assert!(o(10, 20, -2).validate().is_err());
        assert_eq!("rr".parse::<Policy>().unwrap(), Policy::RoundRobin);
        assert!("fastest".parse::<Policy>().is_err());
    }

    #[test]
    fn policy_name_parses_back() {
        for p in [
            Policy::ActivePassive,
            Policy::RoundRobin,
            Policy::LeastQueueDepth,
        ] {
            assert_eq!(p.name().parse::<Policy>().unwrap(), p);
        }
    }
}
