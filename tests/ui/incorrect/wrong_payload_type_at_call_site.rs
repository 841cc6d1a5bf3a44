// The stub has the handler's exact types: a wrong payload does not compile.
#[webmesh::route("/greet")]
pub async fn greet(name: String) -> String {
    name
}

async fn caller(client: &webmesh::Client) {
    let _ = greet::call(client, 42u32).await;
    let _ = client.call::<greet::Route>(vec![1u8]).await;
}

fn main() {
    let _ = caller;
}
