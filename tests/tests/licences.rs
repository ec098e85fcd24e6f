// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Every source file says its licence in an SPDX line near its top (issue 23, item
//! 10): `GPL-2.0-only` in the fio engine (`tools/fio`, built against fio's headers),
//! `Apache-2.0 OR MIT` everywhere else, as the crates' manifests say. Rust, C and C++
//! sources and headers, and executable scripts (a `#!` first line). A file without
//! the line, or with the other licence, is named with the line to add.

use e2e::repo_root;
use std::path::{Path, PathBuf};

/// Folders that hold no sources of ours: build output, fetched trees, fuzz data.
const SKIP: &[&str] = &["target", ".git", "corpus", "artifacts", "seeds"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !SKIP.contains(&name.as_str()) {
                sources(&p, out);
            }
            continue;
        }
        let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
        let code = matches!(ext, "rs" | "c" | "cpp" | "h");
        let script = matches!(ext, "" | "sh" | "py")
            && std::fs::read(&p).is_ok_and(|b| b.starts_with(b"#!"));
        if code || script {
            out.push(p);
        }
    }
}

#[test]
fn every_source_file_has_its_spdx_line() {
    let root = repo_root();
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 100, "found only {} source files", files.len());
    let mut wrong = Vec::new();
    for p in &files {
        let rel = p.strip_prefix(&root).unwrap();
        let want = if rel.starts_with("tools/fio") {
            "GPL-2.0-only"
        } else {
            "Apache-2.0 OR MIT"
        };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let head: String = text.lines().take(3).collect::<Vec<_>>().join("\n");
        let ok = head.lines().any(|l| {
            l.split_once("SPDX-License-Identifier: ")
                .is_some_and(|(_, id)| id.trim_end_matches(" */").trim() == want)
        });
        if !ok {
            wrong.push(format!(
                "{}: {} (add `SPDX-License-Identifier: {want}` in its first lines)",
                rel.display(),
                if head.contains("SPDX-License-Identifier") {
                    "another licence"
                } else {
                    "no SPDX line"
                }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} file(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
