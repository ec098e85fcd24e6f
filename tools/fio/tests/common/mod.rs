// SPDX-License-Identifier: GPL-2.0-only
//! What the tests that run the real fio share.

use std::path::{Path, PathBuf};

/// The engine library: the one built with this test's profile (`target/<profile>/`,
/// next to its `deps/` folder), or else the release one that `tests/run` builds for
/// the guests (`cargo test` does not build a cdylib, so a profile of its own, such as
/// the suite's, has none).
pub fn engine() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let own = dir.join("libnvme_fio.so");
    let release = dir.with_file_name("release").join("libnvme_fio.so");
    if own.is_file() {
        return own;
    }
    assert!(
        release.is_file(),
        "neither {} nor {} exists: cargo build --release -p nvme-fio",
        own.display(),
        release.display()
    );
    release
}
