// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Shared code of the tools: `nvme-perf`, `nvme-identify` and `nvme-setup`.
//!
//! The tools imitate the ones SPDK and nvme-cli users know (spdk_nvme_perf,
//! spdk_nvme_identify, SPDK's setup.sh). Their argument parsing, transport ID and
//! core mask parsing, report formatting and sysfs logic live here, apart from the
//! binaries, so they can be unit tested without a device: the binaries only glue
//! them to real controllers.
//!
//! Usage errors are a [`UsageError`]: one line saying what to fix; the binaries
//! print it and exit with status 2, as getopt-based tools do.
#![deny(missing_docs)]

pub mod attach;
pub mod chart;
pub mod cores;
pub mod identify;
pub mod logger;
pub mod manual;
pub mod perf;
pub mod setup;
pub mod trid;

use std::fmt;

/// Exit status for usage errors (bad options, malformed arguments).
pub const EXIT_USAGE: i32 = 2;
/// Exit status for runtime failures (device errors, failed I/O, verify mismatch).
pub const EXIT_FAILURE: i32 = 1;

/// A command-line mistake: one line saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds a [`UsageError`] from format arguments.
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => { $crate::UsageError(format!($($arg)*)) };
}

/// Prints `prog: message` and a hint to stderr, then exits with status 2.
pub fn exit_usage(prog: &str, e: &UsageError) -> ! {
    eprintln!("{prog}: {e} (see {prog} --help)");
    std::process::exit(EXIT_USAGE)
}

/// Prints `prog: message` to stderr and exits with status 1.
pub fn exit_failure(prog: &str, msg: impl fmt::Display) -> ! {
    eprintln!("{prog}: {msg}");
    std::process::exit(EXIT_FAILURE)
}

/// True if standard output is an interactive terminal: a tty, and `TERM` set and not
/// `dumb` (a serial console, as in the QEMU guest, is a tty whose output is a log).
/// Progress lines are only printed then.
pub fn stdout_is_tty() -> bool {
    let term = std::env::var("TERM").unwrap_or_default();
    // SAFETY: isatty only inspects the descriptor number; any value is safe to pass.
    let tty = unsafe { libc::isatty(libc::STDOUT_FILENO) == 1 };
    tty && !term.is_empty() && term != "dumb"
}

/// Parses an unsigned count with an optional binary suffix (`4k`, `128K`, `1m`, `1g`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Formats bytes as hex pairs, as `nvme id-ns` prints NGUID and EUI-64.
pub fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("128K"), Some(128 << 10));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("-1"), None);
    }
}
