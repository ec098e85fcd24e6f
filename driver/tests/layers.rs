// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The transport seam in the source tree (issue 26): the transport-neutral core (the
//! controller, `src/ctrlr/`, and the queue pairs, `src/qpair/`) names no transport
//! module, and the transports (`src/pcie/`, `src/tcp/`) name neither the controller nor
//! the queue pairs. They meet only in `src/transport.rs` and `src/transport/`.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Lines of code (comments left out) under `src/<dir>` that name any of `modules`.
fn offending(dir: &str, modules: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let files = sources(&root);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for m in modules {
                if code.contains(&format!("crate::{m}")) || code.contains(&format!("super::{m}")) {
                    found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn the_core_names_no_transport() {
    for dir in ["ctrlr", "qpair"] {
        let bad = offending(dir, &["pcie", "tcp", "vfio"]);
        assert!(
            bad.is_empty(),
            "src/{dir} reaches a transport directly; go through crate::transport \
             (CtrlTransport, IoQpair, QueueTransport) instead:\n{}",
            bad.join("\n")
        );
    }
}

#[test]
fn the_transports_name_no_core() {
    for dir in ["pcie", "tcp"] {
        let bad = offending(dir, &["ctrlr", "qpair"]);
        assert!(
            bad.is_empty(),
            "src/{dir} reaches the controller or the queue pairs; a transport sees only \
             what crate::transport hands it:\n{}",
            bad.join("\n")
        );
    }
}

#[test]
fn queue_pairs_do_not_reach_into_the_controller() {
    let bad = offending("qpair", &["ctrlr"]);
    assert!(
        bad.is_empty(),
        "src/qpair reaches into the controller; ask it through the AdminSide trait:\n{}",
        bad.join("\n")
    );
}
