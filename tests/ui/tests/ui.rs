//! Compile-time behaviour of `#[webmesh::route]`, with trybuild: `correct/*.rs` must
//! compile and run; each `incorrect/*.rs` makes one mistake and must fail with the
//! committed `.stderr`.
//!
//! The `.stderr` files match rustc 1.95 (the toolchain of this project's machines). Compiler
//! wording drifts between releases, so on another toolchain this test fails and says so, rather
//! than pass without checking the messages. Regenerate the files for your toolchain with
//! `TRYBUILD=overwrite cargo test -p webmesh-ui-tests --test ui` and read the diff; or run only the
//! `correct` cases with `WEBMESH_UI_ANY_RUSTC=1`, which this test then reports as a partial run.
//! (No `rust-toolchain.toml`: it would make rustup download 1.95 on machines that cannot.)

const PINNED_MINOR: &str = "1.95.";

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn ui() {
    let version = rustc_version();
    let pinned = version.contains(&format!("rustc {PINNED_MINOR}"));
    let only_correct = std::env::var_os("WEBMESH_UI_ANY_RUSTC").is_some();
    assert!(
        pinned || only_correct,
        "tests/ui/incorrect/*.stderr match rustc {PINNED_MINOR}x, and this is {}: regenerate them \
         with TRYBUILD=overwrite (and read the diff), or set WEBMESH_UI_ANY_RUSTC=1 to run only \
         the cases that must compile",
        version.trim()
    );
    let t = trybuild::TestCases::new();
    t.pass("correct/*.rs");
    if pinned {
        t.compile_fail("incorrect/*.rs");
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "PARTIAL RUN: WEBMESH_UI_ANY_RUSTC is set and rustc is {}: the compile-fail cases \
                 were not checked",
                version.trim()
            );
        }
    }
}
