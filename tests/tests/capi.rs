// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The C ABI against QEMU's NVMe controller: `capi/examples/hello_world.c` (attach by
//! transport ID, open, write, read back, compare, close) and `capi/examples/hello.cpp`
//! built here with the real `cc` and `c++` against the release `libnvmebdev.a`, then
//! run in one guest on the single topology. QEMU's trace shows each program's
//! nvme_layer_destroy() sent the shutdown notification (CC.SHN).

use e2e::{cases, ok, release_dir, repo_root, Guest, Topology, RUN_CASE};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// QEMU's trace event for a shutdown notification (CC.SHN written non-zero).
const SHUTDOWN_TRACE: &str = "pci_nvme_mmio_shutdown_set";

/// Builds `src` with `compiler` against the release static library into `out`.
fn build(compiler: &str, std: &str, src: &Path, out: &Path) {
    let lib = release_dir().join("libnvmebdev.a");
    assert!(
        lib.is_file(),
        "{} is missing: build it with `cargo build --release -p nvme-capi` (tests/run does)",
        lib.display()
    );
    let result = Command::new(compiler)
        .args(["-Wall", "-Wextra", "-Werror", std, "-O2"])
        .arg(format!("-I{}", repo_root().join("capi/include").display()))
        .arg(src)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e} (install build-essential and g++)"));
    assert!(
        result.status.success(),
        "{compiler} {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn c_hello_world_writes_reads_back_and_stops_the_controller_in_order() {
    let dir: PathBuf = release_dir().join("capi-examples");
    std::fs::create_dir_all(&dir).unwrap();
    let examples = repo_root().join("capi/examples");
    let (c, cpp) = (dir.join("hello_world"), dir.join("hello_cpp"));
    build("cc", "-std=c11", &examples.join("hello_world.c"), &c);
    build("c++", "-std=c++17", &examples.join("hello.cpp"), &cpp);

    let script = format!(
        r#"{RUN_CASE}
run_case hello_world hello_world 'trtype:PCIe traddr:0000:01:00.0'
run_case hello_cpp hello_cpp 'trtype:PCIe traddr:0000:01:00.0'
run_case no_device hello_world 'trtype:PCIe traddr:0000:09:00.0'
"#
    );
    let out = Guest::new(Topology::Single)
        .include(&c)
        .include(&cpp)
        .args(["--trace", SHUTDOWN_TRACE])
        .timeout(Duration::from_secs(240))
        .run(&script);
    out.assert_success();
    let cs = cases(&out);

    let hw = ok(&cs, "hello_world", &out);
    assert!(
        hw.out
            .contains("Attached to trtype:PCIe traddr:0000:01:00.0: 2 bdevs"),
        "{hw:#?}"
    );
    assert!(hw.out.contains("Opened Nvme0n1: "), "{hw:#?}");
    assert!(hw.out.contains("Read back: Hello world!"), "{hw:#?}");

    let names = ok(&cs, "hello_cpp", &out);
    let mut listed: Vec<&str> = names.out.lines().filter(|l| !l.is_empty()).collect();
    listed.sort();
    assert_eq!(listed.len(), 2, "{names:#?}");
    // The namespace bdev and the multipath bdev of its namespace.
    assert!(listed.contains(&"Nvme0n1"), "{names:#?}");

    let none = &cs["no_device"];
    assert_eq!(none.rc, 1, "{none:#?}");
    assert!(
        none.err.contains("nvme_layer_attach failed") && none.err.contains("0000:09:00.0"),
        "{none:#?}"
    );

    // Each program that attached destroyed its layer: one CC.SHN each.
    let notified = out
        .stderr
        .lines()
        .filter(|l| l.contains(SHUTDOWN_TRACE))
        .count();
    assert_eq!(
        notified, 2,
        "one shutdown notification per program that attached:\n{out}"
    );
}
