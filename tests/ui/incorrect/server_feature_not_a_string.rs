// `server_feature` takes the name of a feature of this crate, as a string.
#[webmesh::route("/a", server_feature = server)]
pub fn a(x: u8) -> u8 {
    x
}

fn main() {}
