//! `crate = ..` points the expansion at webmesh under another path.
mod deps {
    pub use ::webmesh as mesh;
}

#[webmesh::route("/renamed", crate = "crate::deps::mesh")]
pub fn renamed(x: u8) -> u8 {
    x
}

#[webmesh::route("/renamed2", crate = crate::deps::mesh)]
pub fn renamed2(x: u8) -> u8 {
    x
}

fn main() {
    let _ = <renamed::Route as deps::mesh::Route>::PATH;
    let _ = renamed2::PATH;
}
