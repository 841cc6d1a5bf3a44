struct Reply {
    text: String,
}

#[webmesh::route("/echo")]
fn echo(text: String) -> Reply {
    Reply { text }
}

fn main() {}
