// SPDX-License-Identifier: Apache-2.0 OR MIT
//! `tools/install-docs PREFIX BINDIR`, as a user runs it: the man pages and bash
//! completions of the four tools land under PREFIX, are what the binaries print,
//! render without warnings (`man -l`), and load in bash.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOOLS: [(&str, &str); 4] = [
    ("nvme-perf", env!("CARGO_BIN_EXE_nvme-perf")),
    ("nvme-identify", env!("CARGO_BIN_EXE_nvme-identify")),
    ("nvme-setup", env!("CARGO_BIN_EXE_nvme-setup")),
    ("nvme-bench-chart", env!("CARGO_BIN_EXE_nvme-bench-chart")),
];

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (CI installs man-db and bash)"));
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    out
}

#[test]
fn install_docs_puts_pages_and_completions_under_the_prefix() {
    let prefix: PathBuf =
        std::env::temp_dir().join(format!("nvme-install-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let bindir = Path::new(TOOLS[0].1)
        .parent()
        .expect("the binaries' folder");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install-docs");
    let out = run(Command::new(&script).arg(&prefix).arg(bindir));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 8, "{listed}");
    for (name, exe) in TOOLS {
        let page = prefix.join(format!("share/man/man1/{name}.1"));
        let completion = prefix.join(format!("share/bash-completion/completions/{name}"));
        for f in [&page, &completion] {
            assert!(
                listed.contains(&f.display().to_string()),
                "{} not listed:\n{listed}",
                f.display()
            );
        }
        let printed = run(Command::new(exe).arg("--print-man")).stdout;
        assert_eq!(std::fs::read(&page).unwrap(), printed, "{name}'s man page");
        let rendered = run(Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80"));
        assert!(
            rendered.stderr.is_empty(),
            "man -l warns about {name}.1:\n{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("SYNOPSIS"), "{name}.1 rendered:\n{text}");
        let spec = run(Command::new("bash").args([
            "--norc",
            "-c",
            &format!("source '{}' && complete -p {name}", completion.display()),
        ]));
        assert_eq!(
            String::from_utf8_lossy(&spec.stdout).trim(),
            format!("complete -F _{} {name}", name.replace('-', "_"))
        );
    }
    std::fs::remove_dir_all(&prefix).unwrap();
}
