#[webmesh::route("/len")]
fn len(s: &str) -> usize {
    s.len()
}

fn main() {}
