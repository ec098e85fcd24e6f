// SPDX-License-Identifier: GPL-2.0-only
//! Bad input to the engines, with the real fio on the host (no device is needed to be
//! refused): each is a clear message naming what to fix and a non-zero exit. And the
//! library's own check of the fio that loads it, through a stand-in loader that
//! exports another `fio_version_string`. (The guest tests, `tests/tests/fio.rs`, cover
//! the refusal that needs a device: one not bound to vfio-pci.)

mod common;

use common::engine;
use std::process::{Command, Output};

fn fio(args: &[&str]) -> Output {
    let out = Command::new("fio")
        .env("LD_PRELOAD", engine())
        .args(args)
        .output()
        .expect("fio is not installed (apt-get install fio): these tests run the real fio");
    out
}

/// fio fails and its stderr holds every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let out = fio(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "fio succeeded with {args:?}:\n{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing for {args:?}:\n{err}");
    }
}

const GOOD: &str = "--filename=trtype=PCIe traddr=0000.01.00.0 ns=1";

#[test]
fn thread_0_is_refused_as_spdk_does() {
    refused(
        &["--name=x", "--ioengine=spdk", GOOD, "--size=1m"],
        &["spdk: must set thread=1 when using spdk plugin"],
    );
    refused(
        &[
            "--name=x",
            "--ioengine=spdk_bdev",
            "--filename=Nvme0n1",
            "--size=1m",
        ],
        &["must set thread=1"],
    );
}

#[test]
fn a_malformed_filename_names_the_field() {
    refused(
        &[
            "--name=x",
            "--ioengine=spdk",
            "--thread=1",
            "--filename=trtype=PCIe traddr=0000.01.00 ns=1",
            "--size=1m",
        ],
        &[
            "traddr '0000.01.00' is not a PCI address",
            "the form is 'trtype=PCIe traddr=0000.01.00.0 ns=1'",
        ],
    );
    refused(
        &[
            "--name=x",
            "--ioengine=spdk",
            "--thread=1",
            "--filename=trtype=PCIe traddr=0000.01.00.0 ns=0",
            "--size=1m",
        ],
        &["ns '0' is not a namespace ID"],
    );
    refused(
        &[
            "--name=x",
            "--ioengine=spdk",
            "--thread=1",
            "--filename=trtype=RDMA traddr=0000.01.00.0",
            "--size=1m",
        ],
        &["trtype 'RDMA' is not supported"],
    );
}

#[test]
fn unsupported_spdk_options_are_refused_by_name() {
    for (opt, why) in [
        ("--enable_wrr=1", "weighted round robin"),
        ("--enable_sgl=1", "PRPs only"),
        (
            "--hostnqn=nqn.2014-08.org.nvmexpress:uuid:1",
            "PCIe transport",
        ),
        ("--pi_chk=GUARD", "protection information"),
        ("--zone_append=1", "zoned"),
    ] {
        let name = opt.trim_start_matches("--").split('=').next().unwrap();
        refused(
            &[
                "--name=x",
                "--ioengine=spdk",
                "--thread=1",
                GOOD,
                "--size=1m",
                opt,
            ],
            &[
                &format!("option {name} is not supported"),
                why,
                "remove it from the job",
            ],
        );
    }
}

#[test]
fn bdev_configs_asking_for_what_is_not_there_are_refused() {
    let dir = std::env::temp_dir().join(format!("nvme-fio-refusals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = |name: &str, entries: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(r#"{{"subsystems":[{{"subsystem":"bdev","config":[{entries}]}}]}}"#),
        )
        .unwrap();
        format!("--spdk_json_conf={}", p.display())
    };
    let run = |conf: &str, needles: &[&str]| {
        refused(
            &[
                "--name=x",
                "--ioengine=spdk_bdev",
                "--thread=1",
                "--filename=Nvme0n1",
                "--size=1m",
                conf,
            ],
            needles,
        )
    };
    run(
        &conf(
            "malloc.json",
            r#"{"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":256,"block_size":512}}"#,
        ),
        &["method 'bdev_malloc_create': not implemented"],
    );
    run(
        &conf(
            "tcp.json",
            r#"{"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0","trtype":"tcp","traddr":"127.0.0.1","trsvcid":"4420"}}"#,
        ),
        &[
            "bdev_nvme_attach_controller parameter 'trtype'",
            "only PCIe",
        ],
    );
    run(
        &conf(
            "digest.json",
            r#"{"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0","trtype":"PCIe","traddr":"0000:01:00.0","ddgst":true}}"#,
        ),
        &["bdev_nvme_attach_controller parameter 'ddgst'"],
    );
    run(
        "--spdk_json_conf=/nonexistent/bdev.json",
        &["cannot read spdk_json_conf=/nonexistent/bdev.json"],
    );
    refused(
        &[
            "--name=x",
            "--ioengine=spdk_bdev",
            "--thread=1",
            "--filename=Nvme0n1",
            "--size=1m",
        ],
        &["no spdk_json_conf given"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A stand-in for fio that exports `fio_version_string` = `version` and loads the
/// engine: the engine's constructor checks the version before anything else. It
/// defines the fio functions the engine uses (the library binds them at load).
fn load_under(version: &str) -> Output {
    let dir =
        std::env::temp_dir().join(format!("nvme-fio-loader-{}-{version}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("loader.c");
    std::fs::write(
        &src,
        format!(
            r#"#include <dlfcn.h>
#include <stdio.h>
const char fio_version_string[] = "{version}";
/* What the engine's constructor calls in fio once the version matches. */
void register_ioengine(void *ops) {{ (void)ops; puts("registered"); }}
void unregister_ioengine(void *ops) {{ (void)ops; }}
int log_err(const char *fmt, ...) {{ (void)fmt; return 0; }}
int log_info(const char *fmt, ...) {{ (void)fmt; return 0; }}
int add_file(void *td, const char *name, int numjob, int inc) {{ (void)td; (void)name; (void)numjob; (void)inc; return 0; }}
int main(int argc, char **argv) {{
    if (argc < 2 || !dlopen(argv[1], RTLD_LAZY)) {{ fprintf(stderr, "dlopen: %s\n", dlerror()); return 3; }}
    return 0;
}}
"#
        ),
    )
    .unwrap();
    let exe = dir.join("loader");
    let cc = Command::new("cc")
        .args(["-rdynamic", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("cc (gcc) is needed to build the stand-in loader");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&exe).arg(engine()).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    out
}

#[test]
fn a_fio_of_another_version_gets_both_versions_and_the_rebuild_command() {
    let out = load_under("fio-9.99");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        format!("built against {}", nvme_fio::BUILT_FIO_VERSION),
        format!(
            "ioengine interface version {}",
            nvme_fio::BUILT_IOOPS_VERSION
        ),
        "loaded by fio-9.99".to_string(),
        "cargo build --release -p nvme-fio".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} missing:\n{err}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("registered"));

    // The same loader with the version built against: the engines register.
    let out = load_under(nvme_fio::BUILT_FIO_VERSION);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("registered")
            .count(),
        2
    );
}
