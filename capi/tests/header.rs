// SPDX-License-Identifier: Apache-2.0 OR MIT
//! include/nvmebdev.h is what cbindgen makes of src/ today: regenerated here and
//! compared. After changing the C API, write the new header with
//! `NVME_CAPI_BLESS=1 cargo test -p nvme-capi --test header` and commit it.

use std::path::Path;

#[test]
fn header_matches_the_sources() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("capi/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header from capi/src");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = dir.join("include/nvmebdev.h");
    if std::env::var_os("NVME_CAPI_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/nvmebdev.h");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    if checked_in != fresh {
        let (a, b) = (
            String::from_utf8_lossy(&checked_in),
            String::from_utf8_lossy(&fresh),
        );
        let first = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(a.lines().count().min(b.lines().count()));
        panic!(
            "capi/include/nvmebdev.h is not what cbindgen makes of capi/src (first difference \
             at line {}: checked in {:?}, generated {:?}); regenerate it with \
             `NVME_CAPI_BLESS=1 cargo test -p nvme-capi --test header` and commit it",
            first + 1,
            a.lines().nth(first).unwrap_or("<end of file>"),
            b.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
