// SPDX-License-Identifier: Apache-2.0 OR MIT
//! What a process without root needs from VFIO, and the errors that say which part
//! is missing and the command that gives it.
//!
//! Checked in the test guest: nothing else in the driver needs root. The container
//! node `/dev/vfio/vfio` is open to everyone (mode 0666); PCI config space is read
//! and written through the VFIO device file, not sysfs; huge pages are anonymous
//! `MAP_HUGETLB` mappings, which need no hugetlbfs mount and no privilege. What is
//! left is the group node `/dev/vfio/N`, mode 0600 and owned by root until
//! `nvme-setup config TARGET_USER=USER` gives it to the user, and the locked-memory
//! limit: the type1 IOMMU pins every mapped page and counts it against
//! `RLIMIT_MEMLOCK` of a process without CAP_IPC_LOCK (the kernel's `vfio_pin_pages_remote`),
//! so a mapping past the limit fails with ENOMEM.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The effective user of this process: its name from `/etc/passwd` (else `uid N`),
/// and its uid.
pub(crate) fn whoami() -> (String, u32) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid.to_string()).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"));
    (name, uid)
}

/// The command that gives `user` what the tools need, for controller `bdf`.
pub(crate) fn setup_command(user: &str, bdf: &str) -> String {
    format!("sudo nvme-setup config TARGET_USER={user} PCI_ALLOWED={bdf}")
}

/// Why opening `node` was refused: its owner and mode against this process's user.
pub(crate) fn node_refusal(node: &Path, bdf: &str) -> (String, String) {
    let (me, uid) = whoami();
    let owned = match std::fs::metadata(node) {
        Ok(m) => format!(
            "it belongs to uid {} with mode {:04o}, and this process runs as {me} (uid {uid})",
            m.uid(),
            m.mode() & 0o7777
        ),
        Err(_) => format!("this process runs as {me} (uid {uid})"),
    };
    let fix = format!(
        "give the VFIO group device to this user: `{}` (as setup.sh's TARGET_USER does), \
         or run as root",
        setup_command(&me, bdf)
    );
    (owned, fix)
}

/// The locked-memory limit of this process (soft), in bytes; `None` for unlimited.
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for getrlimit to fill.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    (rc == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// What to say when an IOMMU mapping of `len` bytes failed with ENOMEM after
/// `pinned` bytes were mapped by this controller: the limit, and how to raise it.
/// `None` when the limit cannot be the cause (unlimited, or root).
pub(crate) fn memlock_refusal(bdf: &str, len: usize, pinned: u64) -> Option<(String, String)> {
    let limit = memlock_limit()?;
    let (me, uid) = whoami();
    if uid == 0 {
        // Root has CAP_IPC_LOCK, which the limit does not bind: the memory is short.
        return None;
    }
    let detail = format!(
        "VFIO pins DMA memory against the locked-memory limit (`ulimit -l`), {} KiB for \
         this process; {} KiB were pinned for this controller already and this mapping \
         needs {} KiB more",
        limit >> 10,
        pinned >> 10,
        len >> 10
    );
    let fix = format!(
        "raise the limit: `{}` writes one to /etc/security/limits.d for the next login; \
         in a running shell, as root: `prlimit --memlock=unlimited --pid $$` (or run as \
         root)",
        setup_command(&me, bdf)
    );
    Some((detail, fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_command_names_the_user_and_the_controller() {
        assert_eq!(
            setup_command("alice", "0000:01:00.0"),
            "sudo nvme-setup config TARGET_USER=alice PCI_ALLOWED=0000:01:00.0"
        );
        let (name, uid) = whoami();
        assert!(!name.is_empty());
        let (owned, fix) = node_refusal(Path::new("/proc/self"), "0000:01:00.0");
        assert!(
            owned.contains(&format!("it belongs to uid {uid} with mode 0")),
            "{owned}"
        );
        assert!(fix.contains("TARGET_USER="), "{fix}");
    }
}
