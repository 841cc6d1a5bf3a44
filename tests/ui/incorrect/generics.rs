#[webmesh::route("/echo")]
fn echo<T: serde::Serialize>(x: T) -> T {
    x
}

fn main() {}
