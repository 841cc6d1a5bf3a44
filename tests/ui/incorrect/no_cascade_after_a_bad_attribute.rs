// Issue 9: a mistake in the attribute is reported once; the route's stubs and marker still exist,
// so the code that uses them adds no secondary errors.
#[webmesh::route("greet", retries = 3)]
pub async fn greet(name: String) -> String {
    name
}

async fn caller(client: &webmesh::Client) {
    let _: Result<String, _> = greet::call(client, "Ada".to_owned()).await;
    let _ = client.call::<greet::Route>("Ada".to_owned()).await;
    let _ = greet::PATH;
}

fn main() {
    let _ = caller;
}
