// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The seeded fault schedule: the same seed and length give the same faults, with the
//! same parameters, in the same order, planned at the same times.

use std::fmt;

/// The two controllers of qemu/run's `mpath` topology: QOM id, root port, PCI address.
pub const CONTROLLERS: [(&str, &str, &str); 2] =
    [("c0", "rp0", "0000:01:00.0"), ("c1", "rp1", "0000:02:00.0")];

/// Traffic runs this long after the last fault: both paths must carry I/O then.
pub const AFTER_MS: u64 = 8_000;

/// SplitMix64: small, seedable, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// QMP `device_del` of controller `ctrl`; once it has left the PCI bus, `down_ms`
    /// later, `device_add` on its root port and `nvme-setup bind`; done when the block
    /// layer has reconnected it and its path is usable.
    Unplug { ctrl: usize, down_ms: u64 },
    /// A controller reset through the block layer (`request_reset`).
    Reset { ctrl: usize },
    /// Every read of the namespace fails in QEMU's block layer (blkdebug, EIO: the
    /// device returns Unrecovered Read Error) for `ms`.
    ReadErrors { ms: u64 },
    /// Every write fails (the device returns Write Fault) for `ms`.
    WriteErrors { ms: u64 },
}

impl Fault {
    /// The kind, as the summary counts it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Unplug { .. } => "unplug+replug",
            Fault::Reset { .. } => "reset",
            Fault::ReadErrors { .. } => "read errors",
            Fault::WriteErrors { .. } => "write errors",
        }
    }

    /// A rough length, to plan the next fault's time.
    fn estimated_ms(&self) -> u64 {
        match *self {
            // ~5 s until the device leaves (attention button), then the plug and bind.
            Fault::Unplug { down_ms, .. } => 9_000 + down_ms,
            Fault::Reset { .. } => 500,
            Fault::ReadErrors { ms } | Fault::WriteErrors { ms } => ms + 500,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::Unplug { ctrl, down_ms } => {
                let (id, _, bdf) = CONTROLLERS[ctrl];
                write!(
                    f,
                    "unplug {id} ({bdf}), plug back {down_ms} ms after it left"
                )
            }
            Fault::Reset { ctrl } => {
                let (id, _, bdf) = CONTROLLERS[ctrl];
                write!(f, "reset {id} ({bdf}) through the block layer")
            }
            Fault::ReadErrors { ms } => write!(f, "media errors on every read for {ms} ms"),
            Fault::WriteErrors { ms } => write!(f, "media errors on every write for {ms} ms"),
        }
    }
}

/// A fault and when it is planned, in ms from the start of traffic. It starts then,
/// or when the fault before it is done, whichever is later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at_ms: u64,
    pub fault: Fault,
}

/// The faults of a run of `run_ms`: rounds of the four kinds in a seeded order (so a
/// short run still has each kind), 1 to 4 s apart, the last one planned to end
/// [`AFTER_MS`] before the run does. Without `media`, no media-error faults.
pub fn plan(seed: u64, run_ms: u64, media: bool) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut at = 2_000;
    'rounds: loop {
        let mut round = vec![
            Fault::Unplug {
                ctrl: rng.below(2) as usize,
                down_ms: rng.between(200, 3_000),
            },
            Fault::Reset {
                ctrl: rng.below(2) as usize,
            },
        ];
        if media {
            round.push(Fault::ReadErrors {
                ms: rng.between(300, 1_500),
            });
            round.push(Fault::WriteErrors {
                ms: rng.between(300, 1_500),
            });
        }
        // Fisher-Yates.
        for i in (1..round.len()).rev() {
            round.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for fault in round {
            if at + fault.estimated_ms() + AFTER_MS > run_ms {
                break 'rounds;
            }
            out.push(Planned { at_ms: at, fault });
            at += fault.estimated_ms() + rng.between(1_000, 4_000);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule_and_a_short_run_has_every_kind() {
        let a = plan(7, 120_000, true);
        assert_eq!(a, plan(7, 120_000, true));
        assert_ne!(a, plan(8, 120_000, true));
        for kind in ["unplug+replug", "reset", "read errors", "write errors"] {
            assert!(a.iter().any(|p| p.fault.kind() == kind), "{kind} in {a:?}");
        }
        assert!(a.last().unwrap().at_ms + AFTER_MS <= 120_000);
    }
}
