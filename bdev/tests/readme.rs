// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The README's samples cannot rot. Complete ones (`rust` / `rust,no_run`) are doc
//! tests of the crate (`src/lib.rs` includes the README under `cfg(doctest)`). The
//! excerpts (`rust,ignore`) must each be the text of a marked region of an example,
//! `// [name]` ... `// [name]`, which `tests/examples.rs` runs: this test fails when
//! one is not.

use std::path::Path;

const README: &str = include_str!("../README.md");

/// Each fenced block's info string, first line number and text, its fence's
/// indentation removed.
fn blocks(md: &str) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, usize, String)> = None;
    for (n, line) in md.lines().enumerate() {
        let trimmed = line.trim_start();
        let ind = line.len() - trimmed.len();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.to_string(), n + 1, ind, String::new())),
            (Some(_), Some("")) => {
                let (info, at, _, text) = open.take().expect("a block is open");
                out.push((info, at, text));
            }
            (Some((_, _, ind, text)), _) => {
                text.push_str(line.get(*ind..).unwrap_or(line.trim_start()));
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md: a code block is not closed");
    out
}

/// The text between the two `// [name]` markers of each region of `src`, dedented.
fn regions(src: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in src.lines() {
        let t = line.trim();
        let marker = t
            .strip_prefix("// [")
            .and_then(|r| r.strip_suffix(']'))
            .filter(|n| !n.is_empty() && !n.contains(' '));
        match (marker, &mut open) {
            (Some(name), None) => open = Some((name.to_string(), Vec::new())),
            (Some(name), Some((open_name, lines))) if name == open_name => {
                let ind = lines
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.len() - l.trim_start().len())
                    .min()
                    .unwrap_or(0);
                let text: String = lines
                    .iter()
                    .map(|l| format!("{}\n", l.get(ind..).unwrap_or("")))
                    .collect();
                out.push((open_name.clone(), text));
                open = None;
            }
            (_, Some((_, lines))) => lines.push(line),
            (_, None) => {}
        }
    }
    out
}

#[test]
fn every_excerpt_in_the_readme_is_the_text_of_an_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&path).unwrap();
            for (name, text) in regions(&src) {
                examples.push((format!("{} [{name}]", path.display()), text));
            }
        }
    }
    let mut excerpts = 0;
    for (info, line, text) in blocks(README) {
        if !info.starts_with("rust") {
            continue;
        }
        if info.split(',').any(|a| a == "ignore") {
            excerpts += 1;
            assert!(
                examples.iter().any(|(_, t)| *t == text),
                "bdev/README.md line {line}: this `rust,ignore` sample is not the text of \
                 any marked region of examples/*.rs (`// [name]` ... `// [name]`): copy it \
                 from its example again (regions: {:?})",
                examples.iter().map(|(n, _)| n).collect::<Vec<_>>()
            );
        }
    }
    assert!(
        excerpts >= 3,
        "only {excerpts} excerpts found in the README"
    );
}
