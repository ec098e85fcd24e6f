// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Durability of acknowledged writes: a guest writes a log of records through the
//! driver, flushing every 256 records and printing what is durable; the host kills
//! QEMU with SIGKILL at a moment drawn from a seed (`qemu/run --kill-after`); the next
//! (counted from the guest's first `durable` line); the next
//! boot, on the same raw disk file (`--keep-disks`), reads every record the guest
//! called durable back and compares every byte (`nvme-e2e-durable`).
//!
//! What this proves, and what not: SIGKILL takes QEMU away without a shutdown, so
//! only what QEMU had written to the disk file is there after; the host's page cache
//! survives (the host does not crash), so a write the device completed is in the file
//! with or without the Flush. The check therefore catches a driver that reports a
//! write or a Flush complete before the device completed it (or a wrong block, or a
//! mixed-up completion), not a device that loses its volatile cache on power loss.
//!
//! Seed: `NVME_DURABLE_SEED` (printed on every run, so a failure can be replayed).

use e2e::{Guest, Topology};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BDF: &str = "0000:01:00.0";

/// The last `durable N NONCE` line the guest printed before it was killed.
fn last_durable(stdout: &str, nonce: &str) -> Option<u64> {
    stdout.lines().rev().find_map(|l| {
        let mut w = l.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("durable"), Some(n), Some(x)) if x == nonce => n.parse().ok(),
            _ => None,
        }
    })
}

#[test]
fn flushed_writes_survive_qemu_being_killed() {
    let seed: u64 = std::env::var("NVME_DURABLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    // 0.2 to 2.2 s after the first `durable` line (so a slow start on a busy host
    // does not leave nothing to check); the guest writes up to about 20,000 records a
    // second, so the 1 GiB namespace (262,144 records) is far from full.
    let kill_after = 0.2 + (seed % 2000) as f64 / 1000.0;
    let nonce = format!("{:#x}", seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8 | 1);
    eprintln!(
        "durability: NVME_DURABLE_SEED={seed}: kill {kill_after:.3} s after the first flush, nonce {nonce}"
    );
    let disks = std::env::temp_dir().join(format!("nvme-durable-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&disks);

    // 1 GiB (a sparse file): the log does not fill it before the kill.
    let guest = Guest::new(Topology::Single)
        .disk_size("1G")
        .keep_disks(&disks)
        .timeout(Duration::from_secs(120));
    let killed = guest
        .clone()
        .args([
            "--kill-after".to_string(),
            format!("{kill_after:.3}"),
            "--kill-from-line".to_string(),
            "durable ".to_string(),
        ])
        .run(&format!("nvme-e2e-durable write {BDF} {nonce}"));
    assert_eq!(
        killed.status, 137,
        "the writer was not killed as asked (seed {seed}):\n{killed}"
    );
    assert!(
        killed.stderr.contains("killed QEMU (SIGKILL)"),
        "no kill reported:\n{killed}"
    );
    assert!(
        !killed.stdout.contains("FAIL"),
        "the writer failed before the kill:\n{killed}"
    );
    let n = last_durable(&killed.stdout, &nonce).unwrap_or_else(|| {
        panic!("killed before the first Flush completed (seed {seed}): nothing to check:\n{killed}")
    });
    eprintln!("durability: {n} records durable at the kill");

    let checked = guest.run(&format!("nvme-e2e-durable check {BDF} {nonce} {n}"));
    let _ = std::fs::remove_dir_all(&disks);
    checked.assert_success();
    assert!(
        checked
            .stdout
            .contains(&format!("PASS durable {n} records")),
        "seed {seed}:\n{checked}"
    );
}
