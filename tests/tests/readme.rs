//! The README's contract/server/client trio is the inventory example, file for file: the code a
//! new user copies is the code this repository builds and runs. (`scripts/check-readme-trio.sh`,
//! run by `.ci/run`, builds the README's blocks, manifests included, in a fresh workspace.)

use std::collections::BTreeMap;

fn readme_files() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(webmesh_tests::repo_root().join("README.md")).unwrap();
    let mut files = BTreeMap::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- file: ") {
        rest = &rest[at + "<!-- file: ".len()..];
        let (path, after) = rest
            .split_once(" -->\n```")
            .expect("a fenced block after the marker");
        let body_start = after.find('\n').expect("a fence line") + 1;
        let body_end = after[body_start..].find("\n```").expect("a closing fence");
        files.insert(
            path.to_owned(),
            after[body_start..body_start + body_end].to_owned(),
        );
        rest = &after[body_start + body_end..];
    }
    files
}

#[test]
fn the_readme_trio_is_the_inventory_example() {
    let files = readme_files();
    let sources = ["contract/src/lib.rs", "server/src/main.rs", "client/src/main.rs"];
    for source in sources {
        let shown = files
            .get(&format!("inventory/{source}"))
            .unwrap_or_else(|| panic!("the README shows inventory/{source}"));
        let path = webmesh_tests::repo_root().join("examples/inventory").join(source);
        let real = std::fs::read_to_string(&path).unwrap();
        assert!(
            shown.trim_end() == real.trim_end(),
            "README.md's inventory/{source} differs from {}: run scripts/sync-readme-trio.py",
            path.display()
        );
    }
    for manifest in [
        "Cargo.toml",
        "contract/Cargo.toml",
        "server/Cargo.toml",
        "client/Cargo.toml",
    ] {
        assert!(
            files.contains_key(&format!("inventory/{manifest}")),
            "the README shows inventory/{manifest}"
        );
    }
}
