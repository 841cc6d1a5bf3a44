//! Compile-time behaviour of `#[webmesh::route]`, with trybuild: `tests/ui/correct/*.rs` must
//! compile; each `tests/ui/incorrect/*.rs` makes one mistake and must fail with the committed
//! `.stderr`.
//!
//! The `.stderr` files match rustc 1.95 (the toolchain of this project's machines). Compiler
//! wording drifts between releases, so on another toolchain only the `correct` cases run, and
//! this test says so. Regenerate with `TRYBUILD=overwrite cargo test -p webmesh-tests --test ui`
//! and read the diff.

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
    let t = trybuild::TestCases::new();
    t.pass("ui/correct/*.rs");
    let version = rustc_version();
    if version.contains(&format!("rustc {PINNED_MINOR}")) {
        t.compile_fail("ui/incorrect/*.rs");
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "note: tests/ui/incorrect skipped: its .stderr files match rustc {PINNED_MINOR}x, this is {}",
                version.trim()
            );
        }
    }
}
