// The reply type is checked too.
#[webmesh::route("/count")]
pub fn count(_: ()) -> u64 {
    1
}

async fn caller(client: &webmesh::Client) {
    let n: String = count::call(client, ()).await.unwrap();
    let _ = n;
}

fn main() {
    let _ = caller;
}
