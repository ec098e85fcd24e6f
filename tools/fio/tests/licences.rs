// SPDX-License-Identifier: GPL-2.0-only
//! `libnvme_fio.so` is GPL-2.0-only (it is built against fio's headers and runs inside
//! fio): every crate linked into it must offer a licence that GPL-2.0 code may link.
//! Apache-2.0 alone does not (the FSF counts its patent and indemnity terms as further
//! restrictions), so each linked crate's licence expression must allow one of the
//! permissive licences below, or be GPL-2.0 itself. Read from `cargo metadata` for the
//! workspace's locked dependency graph.

use std::process::Command;

/// Licences GPL-2.0-only code may link (SPDX identifiers).
const GPL2_COMPATIBLE: &[&str] = &[
    "MIT",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "Unlicense",
    "CC0-1.0",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "LGPL-2.1-or-later",
    "Unicode-3.0",
];

/// Whether an SPDX expression (as crates write them: `A OR B`, `A/B`, `(A OR B) AND C`)
/// allows linking into GPL-2.0 code: every AND-term has an alternative on the list.
fn gpl2_linkable(expr: &str) -> bool {
    expr.split(" AND ").all(|term| {
        term.trim_matches(['(', ')', ' '])
            .split(['/', ' '])
            .filter(|w| !w.is_empty() && *w != "OR")
            .any(|l| GPL2_COMPATIBLE.contains(&l.trim_matches(['(', ')'])))
    })
}

#[test]
fn the_expressions_are_read_as_meant() {
    assert!(gpl2_linkable("MIT OR Apache-2.0"));
    assert!(gpl2_linkable("Apache-2.0 OR MIT"));
    assert!(gpl2_linkable("MIT/Apache-2.0"));
    assert!(gpl2_linkable("Apache-2.0 OR BSD-3-Clause"));
    assert!(gpl2_linkable("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(!gpl2_linkable("Apache-2.0"));
    assert!(!gpl2_linkable("(MIT OR Apache-2.0) AND Apache-2.0"));
}

#[test]
fn every_crate_linked_into_the_gpl_engine_offers_a_gpl2_compatible_licence() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = doc["packages"].as_array().expect("packages");
    let nodes = doc["resolve"]["nodes"].as_array().expect("resolve nodes");
    let package = |id: &str| packages.iter().find(|p| p["id"] == id).expect("package");
    let root = packages
        .iter()
        .find(|p| p["name"] == "nvme-fio")
        .expect("nvme-fio in the workspace")["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The crates the library links: normal (not dev or build) dependencies, transitively.
    let (mut seen, mut todo) = (vec![root.clone()], vec![root]);
    while let Some(id) = todo.pop() {
        let node = nodes.iter().find(|n| n["id"] == id.as_str()).expect("node");
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap().to_string();
            if normal && !seen.contains(&dep_id) {
                seen.push(dep_id.clone());
                todo.push(dep_id);
            }
        }
    }
    let bad: Vec<String> = seen
        .iter()
        .map(|id| package(id))
        .filter(|p| !gpl2_linkable(p["license"].as_str().unwrap_or("")))
        .map(|p| format!("{} {} ({})", p["name"], p["version"], p["license"]))
        .collect();
    assert!(
        seen.len() > 10,
        "the walk found the library's dependencies: {seen:?}"
    );
    assert!(
        bad.is_empty(),
        "crates linked into the GPL-2.0-only engine without a GPL-2.0-compatible licence \
         (relicense ours as Apache-2.0 OR MIT; replace or ask about a dependency): {bad:?}"
    );
}
