//! The contract-crate pattern: the client binary's dependency graph has neither webmesh's server
//! half nor the contract's server half or server-only dependency. (`.ci/run` also builds
//! `inventory-client` on its own, which compiles the contract without its handler bodies, and
//! `inventory-client` with `quickstart`, which turns on `webmesh/server`: the contract's split is
//! its own feature, so that mix builds too. `tests/ui/correct/server_half_off.rs` proves that a
//! route's body is not compiled without its `server_feature`.)

use std::process::Command;

fn cargo_tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--prefix", "none"])
        .args(args)
        .current_dir(webmesh_tests::repo_root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn client_graph_has_no_server_half() {
    let deps = cargo_tree(&["-p", "inventory-client", "-e", "normal"]);
    assert!(deps.contains("inventory-contract"), "{deps}");
    assert!(
        !deps.contains("parking_lot"),
        "the client links the server-only parking_lot:\n{deps}"
    );
    let features = cargo_tree(&["-p", "inventory-client", "-e", "features"]);
    assert!(
        !features.contains("webmesh feature \"server\""),
        "webmesh's server feature is on in the client:\n{features}"
    );
    assert!(
        !features.contains("inventory-contract feature \"server\""),
        "the contract's server half is on in the client:\n{features}"
    );
}

#[test]
fn server_graph_has_it() {
    let deps = cargo_tree(&["-p", "inventory-server", "-e", "normal"]);
    assert!(deps.contains("parking_lot"), "{deps}");
    let features = cargo_tree(&["-p", "inventory-server", "-e", "features"]);
    assert!(features.contains("webmesh feature \"server\""), "{features}");
}
