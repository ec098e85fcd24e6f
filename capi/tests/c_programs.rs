// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The C and C++ programs built with the real compilers (`cc`, `c++`) against
//! `libnvmebdev.a` and `include/nvmebdev.h`, warnings as errors: the examples
//! (`examples/hello_world.c`, `examples/hello.cpp`) and `tests/c/bad_input.c`, which
//! runs here and checks the errnos and messages C sees. The guest test
//! (tests/tests/capi.rs in the workspace) runs hello_world against QEMU's controller.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The static library cargo built with this test (next to the test binary).
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let lib = exe.parent().expect("deps/").join("libnvmebdev.a");
    assert!(
        lib.is_file(),
        "{} is missing: cargo builds it with the crate",
        lib.display()
    );
    lib
}

/// Compiles `src` with `compiler` into `out`, or fails with the compiler's output.
fn compile(compiler: &str, std: &str, src: &Path, out: &Path) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = Command::new(compiler)
        .args(["-Wall", "-Wextra", "-Werror", std, "-O2"])
        .arg(format!("-I{}", dir.join("include").display()))
        .arg(src)
        .arg(staticlib())
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

/// A folder of this test's own (the tests run in parallel).
fn out_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nvme-capi-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_c_and_cpp_examples_compile_and_link() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = out_dir("examples");
    compile(
        "cc",
        "-std=c11",
        &dir.join("examples/hello_world.c"),
        &out.join("hello_world"),
    );
    compile(
        "c++",
        "-std=c++17",
        &dir.join("examples/hello.cpp"),
        &out.join("hello_cpp"),
    );
    // Without a controller at that address hello_world says so and fails.
    let run = Command::new(out.join("hello_world"))
        .arg("trtype:PCIe traddr:0000:7f:1f.7")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nvme_layer_attach failed") && stderr.contains("0000:7f:1f.7"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_input_from_c_gives_errnos_and_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = out_dir("bad_input");
    let exe = out.join("bad_input");
    compile("cc", "-std=c11", &dir.join("tests/c/bad_input.c"), &exe);
    let run = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bad_input.c:\n{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
    std::fs::remove_dir_all(&out).ok();
}

/// The top README's C excerpt (the `c` block under "### From C") is hello_world.c's
/// own text, so the README shows what the suite compiles and runs.
#[test]
fn the_readme_shows_hello_world_as_it_is() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("../README.md")).unwrap();
    let example = std::fs::read_to_string(dir.join("examples/hello_world.c")).unwrap();
    let section = readme
        .split_once("### From C")
        .expect("README.md has a \"### From C\" section")
        .1;
    let block = section
        .split_once("```c\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the section has a ```c block")
        .0;
    assert!(
        block.lines().count() > 20 && example.contains(block),
        "README.md's C excerpt is not a part of capi/examples/hello_world.c as it is: \
         copy the lines from the file again"
    );
}
