#[webmesh::route("/echo", timeout = 5)]
fn echo(x: u8) -> u8 {
    x
}

fn main() {}
