#[webmesh::route("echo")]
async fn echo(x: u8) -> u8 {
    x
}

fn main() {}
