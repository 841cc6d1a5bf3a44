#[webmesh::route("/n")]
fn n(x: u8) -> impl serde::Serialize {
    x
}

fn main() {}
