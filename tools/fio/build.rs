// SPDX-License-Identifier: GPL-2.0-only
//! Compiles the engine's C glue against a configured fio source tree of the same
//! version as the fio on this machine (fio installs no headers; every out-of-tree
//! engine, SPDK's included, builds this way). `tools/fio/fio-source` finds or fetches
//! that tree (`FIO_SOURCE_DIR`, or Debian's fio source package) and prints its path.
//! The fio version and `FIO_IOOPS_VERSION` it was built against are recorded in the
//! library, which refuses to run inside another fio with a message naming both.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = manifest.join("fio-source");
    println!("cargo:rerun-if-changed=glue.c");
    println!("cargo:rerun-if-changed=fio-source");
    println!("cargo:rerun-if-env-changed=FIO_SOURCE_DIR");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!(
            "no fio source tree to build the fio engine against (see the message above): \
             install fio (apt-get install fio) and run {} as root once, or set FIO_SOURCE_DIR \
             to a configured source tree of the installed fio's version",
            script.display()
        );
    }
    let tree = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    println!(
        "cargo:rerun-if-changed={}",
        tree.join("config-host.h").display()
    );
    let fio_version = read_fio_version(&tree);
    let ioops = read_ioops_version(&tree);
    println!("cargo:rustc-env=NVME_FIO_BUILT_FIO_VERSION={fio_version}");
    println!("cargo:rustc-env=NVME_FIO_BUILT_IOOPS_VERSION={ioops}");
    println!("cargo:rustc-env=NVME_FIO_SOURCE_TREE={}", tree.display());

    cc::Build::new()
        .file("glue.c")
        .include(&tree)
        .define("_GNU_SOURCE", None)
        .define("_LARGEFILE_SOURCE", None)
        .define("_FILE_OFFSET_BITS", "64")
        .define("FIO_INTERNAL", None)
        .define(
            "NVME_FIO_BUILT_VERSION",
            format!("\"{fio_version}\"").as_str(),
        )
        .flag("-include")
        .flag(tree.join("config-host.h").to_str().unwrap())
        .flag("-std=gnu99")
        .flag("-fPIC")
        .warnings(false)
        // Linked into the cdylib only (below): the unit tests link the rlib without
        // fio, whose symbols the glue uses.
        .cargo_metadata(false)
        .compile("nvme_fio_glue");
    // The glue's constructor and the `ioengine` symbol must survive into the cdylib.
    println!("cargo:rustc-link-arg-cdylib=-Wl,--whole-archive");
    println!(
        "cargo:rustc-link-arg-cdylib={}",
        PathBuf::from(std::env::var("OUT_DIR").unwrap())
            .join("libnvme_fio_glue.a")
            .display()
    );
    println!("cargo:rustc-link-arg-cdylib=-Wl,--no-whole-archive");
}

fn read_fio_version(tree: &Path) -> String {
    // FIO-VERSION-FILE: "FIO_VERSION = fio-3.33"
    let text = std::fs::read_to_string(tree.join("FIO-VERSION-FILE")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run ./FIO-VERSION-GEN in the fio tree",
            tree.join("FIO-VERSION-FILE").display()
        )
    });
    text.split('=')
        .nth(1)
        .map(|v| v.trim().to_string())
        .filter(|v| v.starts_with("fio-"))
        .unwrap_or_else(|| panic!("cannot read the fio version from {text:?}"))
}

fn read_ioops_version(tree: &Path) -> u32 {
    let text = std::fs::read_to_string(tree.join("ioengines.h"))
        .unwrap_or_else(|e| panic!("{}: {e}", tree.join("ioengines.h").display()));
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("#define FIO_IOOPS_VERSION")?;
            rest.trim().parse().ok()
        })
        .expect("FIO_IOOPS_VERSION not found in ioengines.h")
}
