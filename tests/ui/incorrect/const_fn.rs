#[webmesh::route("/n")]
const fn n(x: u8) -> u8 {
    x
}

fn main() {}
