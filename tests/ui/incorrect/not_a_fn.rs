#[webmesh::route("/echo")]
struct Echo;

fn main() {}
