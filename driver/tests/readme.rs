// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The root README's embedding sample is a copy of driver/README.md's, which is a doc
//! test of this crate (src/lib.rs includes that page under `cfg(doctest)`): this test
//! fails when the copy drifts, so the root README's sample compiles too.

/// The first ```rust block of `md` after `after`, fences included.
fn rust_block<'a>(md: &'a str, after: &str) -> &'a str {
    let from = md.find(after).unwrap_or_else(|| panic!("no {after:?}"));
    let start = from + md[from..].find("```rust").expect("a rust block");
    let end = start + 8 + md[start + 8..].find("```\n").expect("the block's end");
    &md[start..end + 4]
}

#[test]
fn the_root_readme_embedding_sample_is_the_compiled_one() {
    let root = include_str!("../../README.md");
    let driver = include_str!("../README.md");
    assert!(
        rust_block(root, "## Embedding") == rust_block(driver, "## Using it"),
        "README.md's \"Embedding\" sample differs from driver/README.md's \"Using it\" \
         sample, which is the one the doc tests compile: copy it over again"
    );
}
