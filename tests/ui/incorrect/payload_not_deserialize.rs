#[derive(serde::Serialize)]
struct Msg {
    text: String,
}

#[webmesh::route("/echo")]
fn echo(m: Msg) -> String {
    m.text
}

fn main() {}
